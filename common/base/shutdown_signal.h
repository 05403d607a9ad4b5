// Clean shutdown on SIGINT/SIGTERM for long-running processes: block the
// signals before any thread starts (threads inherit the mask), then wait for
// one synchronously instead of running code in a signal handler.
#pragma once

namespace xpd::base {

void BlockShutdownSignals();  // call first thing in main
int WaitForShutdownSignal();  // returns SIGINT or SIGTERM

}  // namespace xpd::base
