// `--placement-configmap`: the controller's placement document (see
// placement_store.h) in a Kubernetes ConfigMap, so that in a cluster a
// restarted controller pod, wherever it is scheduled, comes back to the
// placement the ranks serve. Deploy tools own the key seed.json (the state
// to start from); the controller owns placement.json:
//   Load: GET the ConfigMap; placement.json when present, else seed.json when
//         not blank, else an empty state.
//   Save: a JSON merge patch (application/merge-patch+json) that sets only
//         data["placement.json"], so seed.json and other keys stay as the
//         deploy tool wrote them and `helm upgrade` / `kubectl apply` (three-
//         way merges) leave placement.json alone.
// It needs get and patch on that one ConfigMap (helm/xpd's Role). It talks to
// the API server over HTTPS (libcurl) with the pod's ServiceAccount
// credentials; every path and the URL can be overridden (tests use a fake
// API server over plain http).
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/controller/placement_store.h"

namespace xpd::controller {

inline constexpr char kInClusterTokenFile[] = "/var/run/secrets/kubernetes.io/serviceaccount/token";
inline constexpr char kInClusterCaFile[] = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
inline constexpr char kInClusterNamespaceFile[] =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

struct KubeApiOptions {
  // http(s)://HOST[:PORT] of the API server; "" = in-cluster:
  // https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
  std::string api_url;
  // Bearer token, read again for every request because projected
  // ServiceAccount tokens rotate (about hourly); "" = no Authorization.
  std::string token_file = kInClusterTokenFile;
  // CA bundle that verifies an https API server; "" = the system's CAs.
  std::string ca_file = kInClusterCaFile;
  // Bounds each request. Saves run under the placement manager's lock, so
  // an API server that hangs must not stall placement RPCs for long.
  absl::Duration timeout = absl::Seconds(10);
};

struct ConfigMapRef {
  std::string ns;
  std::string name;
  std::string ToString() const { return ns + "/" + name; }
};

// "NAMESPACE/NAME", or "NAME" in the pod's own namespace (read from
// `namespace_file`). INVALID_ARGUMENT when a part is not a valid Kubernetes
// name or the namespace file cannot be read.
absl::StatusOr<ConfigMapRef> ParseConfigMapRef(
    const std::string& text, const std::string& namespace_file = kInClusterNamespaceFile);

class ConfigMapPlacementStore final : public PlacementStore {
 public:
  // INVALID_ARGUMENT for a URL that is not http(s)://, or without api_url
  // outside a cluster (KUBERNETES_SERVICE_HOST/PORT unset). Sends nothing.
  static absl::StatusOr<std::unique_ptr<ConfigMapPlacementStore>> Create(ConfigMapRef ref,
                                                                         KubeApiOptions options);

  // Errors are FAILED_PRECONDITION naming the ConfigMap and, for an HTTP
  // error, the status and the API server's reason (401/403: credentials or
  // RBAC; 404: the ConfigMap does not exist); also for a key that is not a
  // valid placement document.
  absl::StatusOr<StoredGroups> Load() override;
  // UNAVAILABLE naming the ConfigMap, the HTTP status and the reason.
  absl::Status Save(const StoredGroups& groups) override;

  // The ConfigMap's API URL (.../api/v1/namespaces/NS/configmaps/NAME).
  const std::string& url() const { return url_; }

 private:
  struct Response {
    long status = 0;
    std::string body;
  };

  ConfigMapPlacementStore(ConfigMapRef ref, KubeApiOptions options, std::string url);
  // Transport failures (connection, TLS, timeout, unreadable token) are
  // UNAVAILABLE with the reason; any HTTP status is a Response.
  absl::StatusOr<Response> Send(const char* method, const std::string* patch) const;
  std::string Describe() const;

  const ConfigMapRef ref_;
  const KubeApiOptions options_;
  const std::string url_;
};

}  // namespace xpd::controller
