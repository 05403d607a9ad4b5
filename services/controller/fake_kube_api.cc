#include "services/controller/fake_kube_api.h"

#include <utility>

#include "CivetServer.h"
#include "absl/strings/str_cat.h"

namespace xpd::controller {
namespace {

// What the API server answers errors with: a Status object.
std::string StatusBody(int code, const std::string& reason, const std::string& message) {
  return nlohmann::json{{"kind", "Status"},   {"apiVersion", "v1"}, {"status", "Failure"},
                        {"message", message}, {"reason", reason},   {"code", code}}
      .dump();
}

}  // namespace

class FakeKubeApi::Handler : public CivetHandler {
 public:
  explicit Handler(FakeKubeApi* api) : api_(api) {}
  bool handleGet(CivetServer*, mg_connection* conn) override { return Handle(conn); }
  bool handlePatch(CivetServer*, mg_connection* conn) override { return Handle(conn); }
  bool handlePut(CivetServer*, mg_connection* conn) override { return Handle(conn); }
  bool handlePost(CivetServer*, mg_connection* conn) override { return Handle(conn); }

 private:
  bool Handle(mg_connection* conn) {
    const mg_request_info* info = mg_get_request_info(conn);
    Request request{.method = info->request_method, .path = info->local_uri};
    const char* authorization = mg_get_header(conn, "Authorization");
    const char* content_type = mg_get_header(conn, "Content-Type");
    if (authorization != nullptr) request.authorization = authorization;
    if (content_type != nullptr) request.content_type = content_type;
    char buffer[4096];
    int n;
    while ((n = mg_read(conn, buffer, sizeof(buffer))) > 0) request.body.append(buffer, n);
    const auto [status, body] = api_->Serve(request);
    mg_response_header_start(conn, status);
    mg_response_header_add(conn, "Content-Type", "application/json", -1);
    mg_response_header_add(conn, "Content-Length", std::to_string(body.size()).c_str(), -1);
    mg_response_header_send(conn);
    mg_write(conn, body.data(), body.size());
    return true;
  }

  FakeKubeApi* const api_;
};

FakeKubeApi::FakeKubeApi(std::string ns, std::string name, std::string token)
    : ns_(std::move(ns)),
      name_(std::move(name)),
      path_(absl::StrCat("/api/v1/namespaces/", ns_, "/configmaps/", name_)),
      token_(std::move(token)) {}

absl::StatusOr<std::unique_ptr<FakeKubeApi>> FakeKubeApi::Start(std::string ns, std::string name,
                                                                std::string token) {
  std::unique_ptr<FakeKubeApi> api(
      new FakeKubeApi(std::move(ns), std::move(name), std::move(token)));
  api->handler_ = std::make_unique<Handler>(api.get());
  try {
    api->server_ = std::make_unique<CivetServer>(
        std::vector<std::string>{"listening_ports", "127.0.0.1:0", "num_threads", "2"});
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("fake Kubernetes API: ", e.what()));
  }
  api->server_->addHandler("/", api->handler_.get());
  const std::vector<int> ports = api->server_->getListeningPorts();
  if (ports.empty()) return absl::UnavailableError("fake Kubernetes API: not listening");
  api->url_ = absl::StrCat("http://127.0.0.1:", ports[0]);
  return api;
}

FakeKubeApi::~FakeKubeApi() {
  // Stops the server threads before the state they use goes away.
  if (server_) server_->close();
}

void FakeKubeApi::SetToken(std::string token) {
  absl::MutexLock lock(&mu_);
  token_ = std::move(token);
}

void FakeKubeApi::SetData(std::optional<Data> data) {
  absl::MutexLock lock(&mu_);
  if (!data) {
    configmap_.reset();
    return;
  }
  configmap_ =
      nlohmann::json{{"apiVersion", "v1"},
                     {"kind", "ConfigMap"},
                     {"metadata", {{"name", name_}, {"namespace", ns_}, {"resourceVersion", "1"}}},
                     {"data", *data}};
}

std::optional<FakeKubeApi::Data> FakeKubeApi::data() {
  absl::MutexLock lock(&mu_);
  if (!configmap_) return std::nullopt;
  if (!configmap_->contains("data")) return Data{};
  return (*configmap_)["data"].get<Data>();
}

void FakeKubeApi::FailWith(int status, std::string body) {
  absl::MutexLock lock(&mu_);
  fail_status_ = status;
  fail_body_ = std::move(body);
}

void FakeKubeApi::AnswerGetWith(std::string body) {
  absl::MutexLock lock(&mu_);
  get_body_ = std::move(body);
}

std::vector<FakeKubeApi::Request> FakeKubeApi::requests() {
  absl::MutexLock lock(&mu_);
  return requests_;
}

void FakeKubeApi::Reset(std::string token) {
  absl::MutexLock lock(&mu_);
  token_ = std::move(token);
  configmap_.reset();
  fail_status_ = 0;
  fail_body_.clear();
  get_body_.reset();
  requests_.clear();
}

std::pair<int, std::string> FakeKubeApi::Serve(const Request& request) {
  absl::MutexLock lock(&mu_);
  requests_.push_back(request);
  if (request.authorization != absl::StrCat("Bearer ", token_)) {
    return {401, StatusBody(401, "Unauthorized", "Unauthorized")};
  }
  if (fail_status_ != 0) return {fail_status_, fail_body_};
  const std::string what = absl::StrCat("configmaps \"", name_, "\"");
  if (request.path != path_ || (request.method != "GET" && request.method != "PATCH")) {
    return {405, StatusBody(405, "MethodNotAllowed",
                            absl::StrCat(request.method, " ", request.path, " is not served"))};
  }
  if (!configmap_) return {404, StatusBody(404, "NotFound", absl::StrCat(what, " not found"))};
  if (request.method == "GET") {
    if (get_body_) return {200, *get_body_};
    return {200, configmap_->dump()};
  }
  if (request.content_type != "application/merge-patch+json") {
    return {415, StatusBody(415, "UnsupportedMediaType",
                            absl::StrCat("the body of the request was in an unknown format - "
                                         "accepted media types include: "
                                         "application/merge-patch+json; got ",
                                         request.content_type))};
  }
  const nlohmann::json patch =
      nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (!patch.is_object()) return {400, StatusBody(400, "BadRequest", "invalid JSON patch")};
  nlohmann::json patched = *configmap_;
  patched.merge_patch(patch);
  if (patched.contains("data")) {
    for (const auto& [key, value] : patched["data"].items()) {
      if (!value.is_string()) {
        return {422,
                StatusBody(422, "Invalid",
                           absl::StrCat(what, " is invalid: data[", key, "] is not a string"))};
      }
    }
  }
  configmap_ = std::move(patched);
  return {200, configmap_->dump()};
}

}  // namespace xpd::controller
