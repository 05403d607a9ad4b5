// Noticing that an HTTP client went away while its request is still being
// computed. civetweb (1.15) has no "is the client still connected" call and
// does not hand out a connection's socket, so the socket is found by its
// addresses, then polled for the peer's FIN (POLLRDHUP) or an error.
//
// A peer that half-closes (shutdown(SHUT_WR)) and still waits for the answer
// counts as gone, as with Go's net/http; HTTP clients do not do that.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

namespace xpd::router::http {

// The descriptor of this process's TCP socket whose peer is
// remote_addr:remote_port (a numeric IPv4 or IPv6 address) and whose local
// port is local_port; -1 when there is none.
int FindAcceptedSocket(const std::string& remote_addr, int remote_port, int local_port);

// Calls on_closed once, from its own thread, when the peer of `fd` closes its
// side of the connection or the connection fails. Watching stops (and the
// thread is joined) when the watcher is destroyed; `fd` stays open and must
// outlive the watcher.
class PeerCloseWatcher {
 public:
  PeerCloseWatcher(int fd, std::function<void()> on_closed);
  ~PeerCloseWatcher();
  PeerCloseWatcher(const PeerCloseWatcher&) = delete;
  PeerCloseWatcher& operator=(const PeerCloseWatcher&) = delete;

  // True once on_closed has been called.
  bool closed() const { return closed_.load(); }

 private:
  void Watch(int fd, const std::function<void()>& on_closed);

  int wake_fd_ = -1;  // an eventfd: written by the destructor to stop the thread
  std::atomic<bool> closed_{false};
  std::thread thread_;
};

}  // namespace xpd::router::http
