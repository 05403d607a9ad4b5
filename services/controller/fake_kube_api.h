// Tests only: a fake Kubernetes API server (civetweb, plain http on
// 127.0.0.1, a free port) that serves GET and JSON merge PATCH for one
// ConfigMap, as ConfigMapPlacementStore uses the real one. It checks the
// bearer token (401 otherwise) and the PATCH content type (415), answers
// errors with Kubernetes Status objects, and records every request.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

class CivetServer;

namespace xpd::controller {

class FakeKubeApi {
 public:
  using Data = std::map<std::string, std::string>;
  struct Request {
    std::string method;
    std::string path;
    std::string authorization;
    std::string content_type;
    std::string body;
  };

  // Serves /api/v1/namespaces/NS/configmaps/NAME; expects "Bearer TOKEN".
  static absl::StatusOr<std::unique_ptr<FakeKubeApi>> Start(std::string ns, std::string name,
                                                            std::string token);
  ~FakeKubeApi();

  // http://127.0.0.1:PORT, for --kube-api-url.
  const std::string& url() const { return url_; }
  void SetToken(std::string token);
  // The ConfigMap's data; nullopt: the ConfigMap does not exist (404).
  void SetData(std::optional<Data> data);
  std::optional<Data> data();
  // Every later request is answered with this status and body (0: normal).
  void FailWith(int status, std::string body);
  // GETs are answered 200 with this body instead of the ConfigMap.
  void AnswerGetWith(std::string body);
  std::vector<Request> requests();
  // Back to a fresh server's state (no ConfigMap, no failures, no requests)
  // with `token`: stopping civetweb takes its 2 s poll quantum, so tests
  // share one server.
  void Reset(std::string token);

  class Handler;

 private:
  FakeKubeApi(std::string ns, std::string name, std::string token);
  // The status and body to answer `request` with.
  std::pair<int, std::string> Serve(const Request& request);

  const std::string ns_;
  const std::string name_;
  const std::string path_;
  std::string url_;
  std::unique_ptr<Handler> handler_;
  std::unique_ptr<CivetServer> server_;

  absl::Mutex mu_;
  std::string token_ ABSL_GUARDED_BY(mu_);
  std::optional<nlohmann::json> configmap_ ABSL_GUARDED_BY(mu_);
  int fail_status_ ABSL_GUARDED_BY(mu_) = 0;
  std::string fail_body_ ABSL_GUARDED_BY(mu_);
  std::optional<std::string> get_body_ ABSL_GUARDED_BY(mu_);
  std::vector<Request> requests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xpd::controller
