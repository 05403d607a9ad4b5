// A STREAM-style triad (a[i] = b[i] + s * c[i]) to measure the memory
// bandwidth available right now, so benchmarks can report the fraction of the
// bandwidth bound they reach. This machine's bandwidth drifts between runs:
// always measure it in the same run as the thing it bounds.
#pragma once

#include <cstdint>

namespace xpd::base {

// Best of `repeats` triads over three arrays of `bytes_per_array` each, split
// across `threads` threads. Counts 3 arrays of traffic per pass, as STREAM does.
double MeasureTriadBandwidth(int threads, int64_t bytes_per_array = int64_t{256} << 20,
                             int repeats = 5);

// Peak resident set size of this process, in bytes.
int64_t PeakRssBytes();

}  // namespace xpd::base
