// Applies stop strings to streamed text: text is released as soon as it can
// no longer be the start of a stop string; when a stop string appears, the
// text before it is released and the stream ends (the stop string itself is
// not returned, as OpenAI-compatible servers do).
#pragma once

#include <string>
#include <vector>

namespace xpd::router {

class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);

  // Adds newly decoded text; returns the text that is safe to emit now.
  std::string Add(const std::string& text);
  // The text held back, at the end of the stream (no stop string matched).
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace xpd::router
