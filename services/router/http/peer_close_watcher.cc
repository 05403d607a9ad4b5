#include "services/router/http/peer_close_watcher.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace xpd::router::http {
namespace {

// Port of an AF_INET/AF_INET6 address; -1 for other families.
int PortOf(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
  }
  if (address.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port);
  }
  return -1;
}

bool SameHost(const sockaddr_storage& address, const std::string& host) {
  if (address.ss_family == AF_INET) {
    in_addr want{};
    return inet_pton(AF_INET, host.c_str(), &want) == 1 &&
           std::memcmp(&reinterpret_cast<const sockaddr_in&>(address).sin_addr, &want,
                       sizeof(want)) == 0;
  }
  if (address.ss_family == AF_INET6) {
    in6_addr want{};
    return inet_pton(AF_INET6, host.c_str(), &want) == 1 &&
           std::memcmp(&reinterpret_cast<const sockaddr_in6&>(address).sin6_addr, &want,
                       sizeof(want)) == 0;
  }
  return false;
}

}  // namespace

int FindAcceptedSocket(const std::string& remote_addr, int remote_port, int local_port) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    struct stat st {};
    if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage peer{}, local{};
    socklen_t peer_size = sizeof(peer), local_size = sizeof(local);
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_size) != 0 ||
        getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_size) != 0) {
      continue;
    }
    // A connection's address pair is unique while it is open, and civetweb
    // keeps the connection open while a handler runs.
    if (PortOf(peer) == remote_port && PortOf(local) == local_port && SameHost(peer, remote_addr)) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

PeerCloseWatcher::PeerCloseWatcher(int fd, std::function<void()> on_closed) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) return;  // no watching (the request still completes normally)
  thread_ = std::thread([this, fd, on_closed = std::move(on_closed)] { Watch(fd, on_closed); });
}

PeerCloseWatcher::~PeerCloseWatcher() {
  if (wake_fd_ < 0) return;
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  thread_.join();
  close(wake_fd_);
}

void PeerCloseWatcher::Watch(int fd, const std::function<void()>& on_closed) {
  // POLLRDHUP only, not POLLIN: data a keep-alive client sends early (its
  // next request) must neither count as a close nor make poll spin.
  // POLLHUP and POLLERR are always reported.
  pollfd fds[2] = {{.fd = fd, .events = POLLRDHUP, .revents = 0},
                   {.fd = wake_fd_, .events = POLLIN, .revents = 0}};
  while (true) {
    const int ready = poll(fds, 2, -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;  // the watcher is being destroyed
    if (fds[0].revents & POLLNVAL) return;
    if (fds[0].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
      closed_.store(true);
      on_closed();
      return;
    }
  }
}

}  // namespace xpd::router::http
