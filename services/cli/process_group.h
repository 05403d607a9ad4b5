// The child processes of `xpd up`: each started with its stdout on a pipe
// (to read its "listening ..." line) and stderr passed through, all stopped
// together. Children die with their parent (PR_SET_PDEATHSIG) so a crashed
// `xpd up` leaves nothing behind.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace xpd::cli {

class ProcessGroup {
 public:
  ProcessGroup() = default;
  ~ProcessGroup();  // Stop()
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  // Starts argv[0] (a path) with argv; returns the child's index.
  absl::StatusOr<int> Spawn(const std::string& name, const std::vector<std::string>& argv);
  // Reads one line of the child's stdout; DEADLINE_EXCEEDED after `timeout`,
  // FAILED_PRECONDITION naming the child if it exits first.
  absl::StatusOr<std::string> ReadLine(int child, absl::Duration timeout);
  // Name of a child that has exited (with its status), or empty.
  std::string ExitedChild();
  // SIGTERM to every child, SIGKILL to those still running after `grace`.
  void Stop(absl::Duration grace = absl::Seconds(10));
  // Sends `signal` to one child (tests kill ranks with it).
  void Signal(int child, int signal);
  // After Stop: "name: how it ended" for every child that did not exit 0.
  std::vector<std::string> UncleanExits() const;

 private:
  struct Child {
    std::string name;
    pid_t pid = -1;
    int stdout_fd = -1;
    std::string buffer;
    bool exited = false;
    int status = 0;
  };
  std::vector<Child> children_;
};

}  // namespace xpd::cli
