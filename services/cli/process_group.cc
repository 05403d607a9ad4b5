#include "services/cli/process_group.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace xpd::cli {

ProcessGroup::~ProcessGroup() { Stop(); }

absl::StatusOr<int> ProcessGroup::Spawn(const std::string& name,
                                        const std::vector<std::string>& argv) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);  // the parent died before prctl
    // The parent blocks SIGINT/SIGTERM for sigwait; children must not inherit that.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    setpgid(0, 0);  // Ctrl-C reaches `xpd up` only; it stops the children in order
    dup2(pipe_fds[1], STDOUT_FILENO);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  children_.push_back({.name = name, .pid = pid, .stdout_fd = pipe_fds[0]});
  return static_cast<int>(children_.size()) - 1;
}

absl::StatusOr<std::string> ProcessGroup::ReadLine(int index, absl::Duration timeout) {
  Child& child = children_[index];
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (size_t newline = child.buffer.find('\n'); newline != std::string::npos) {
      std::string line = child.buffer.substr(0, newline);
      child.buffer.erase(0, newline + 1);
      return line;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrCat(child.name, " did not report ready within ", absl::FormatDuration(timeout)));
    }
    pollfd fd{.fd = child.stdout_fd, .events = POLLIN, .revents = 0};
    const int ready = poll(&fd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (ready < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    }
    if (ready <= 0) continue;
    char data[4096];
    const ssize_t n = read(child.stdout_fd, data, sizeof(data));
    if (n > 0) {
      child.buffer.append(data, n);
      continue;
    }
    int status = 0;
    waitpid(child.pid, &status, 0);
    child.exited = true;
    child.status = status;
    return absl::FailedPreconditionError(
        absl::StrCat(child.name, " exited before it was ready (",
                     WIFEXITED(status) ? absl::StrCat("exit status ", WEXITSTATUS(status))
                                       : absl::StrCat("signal ", WTERMSIG(status)),
                     ")"));
  }
}

std::string ProcessGroup::ExitedChild() {
  for (Child& child : children_) {
    if (child.exited) continue;
    int status = 0;
    if (waitpid(child.pid, &status, WNOHANG) == child.pid) {
      child.exited = true;
      child.status = status;
      return child.name;
    }
  }
  return "";
}

void ProcessGroup::Stop(absl::Duration grace) {
  // Routers first, controller last, so nothing reports a vanished peer.
  for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
    if (!it->exited) kill(it->pid, SIGTERM);
  }
  const absl::Time deadline = absl::Now() + grace;
  for (Child& child : children_) {
    while (!child.exited) {
      int status = 0;
      const pid_t done = waitpid(child.pid, &status, WNOHANG);
      if (done == child.pid || done < 0) {
        child.exited = true;
        child.status = status;
        break;
      }
      if (absl::Now() > deadline) {
        kill(child.pid, SIGKILL);
        waitpid(child.pid, &status, 0);
        child.exited = true;
        child.status = status;
        break;
      }
      pollfd none{.fd = -1, .events = 0, .revents = 0};
      poll(&none, 0, 20);  // wait for the child to exit; no pidfd in this kernel API set
    }
    if (child.stdout_fd >= 0) close(child.stdout_fd);
    child.stdout_fd = -1;
  }
}

void ProcessGroup::Signal(int child, int signal) {
  if (!children_[child].exited) kill(children_[child].pid, signal);
}

std::vector<std::string> ProcessGroup::UncleanExits() const {
  std::vector<std::string> unclean;
  for (const Child& child : children_) {
    if (!child.exited) {
      unclean.push_back(child.name + ": still running");
    } else if (WIFSIGNALED(child.status)) {
      unclean.push_back(absl::StrCat(child.name, ": killed by signal ", WTERMSIG(child.status)));
    } else if (WEXITSTATUS(child.status) != 0) {
      unclean.push_back(absl::StrCat(child.name, ": exit status ", WEXITSTATUS(child.status)));
    }
  }
  return unclean;
}

}  // namespace xpd::cli
