#include "services/controller/configmap_placement_store.h"

#include <curl/curl.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace xpd::controller {
namespace {

constexpr char kPlacementKey[] = "placement.json";
constexpr char kSeedKey[] = "seed.json";
// Enough of a non-JSON error body to recognize it (a proxy's HTML page).
constexpr size_t kMaxBodyInError = 200;

bool IsAlnumLower(char c) { return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'z'); }

// RFC 1123 label (namespaces) or subdomain (ConfigMap names): what the API
// server accepts, and nothing that would need escaping in the URL path.
bool IsDnsName(const std::string& s, bool allow_dots, size_t max_len) {
  if (s.empty() || s.size() > max_len || !IsAlnumLower(s.front()) || !IsAlnumLower(s.back())) {
    return false;
  }
  for (const char c : s) {
    if (!IsAlnumLower(c) && c != '-' && !(allow_dots && c == '.')) return false;
  }
  return true;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << file.rdbuf();
  if (file.bad()) return absl::DataLossError(absl::StrCat("read of ", path, " failed"));
  return text.str();
}

const char* ReasonPhrase(long status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 409:
      return "Conflict";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "";
  }
}

// "HTTP 403 Forbidden: <the API server's message> (<what to check>)".
// Kubernetes answers errors with a Status object whose `reason` and
// `message` say why; anything else is quoted, shortened.
std::string HttpError(long status, const std::string& body) {
  std::string reason = ReasonPhrase(status);
  std::string message;
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("message") && j["message"].is_string()) {
    message = j["message"].get<std::string>();
    if (j.contains("reason") && j["reason"].is_string() &&
        !j["reason"].get<std::string>().empty()) {
      reason = j["reason"].get<std::string>();
    }
  } else if (!body.empty()) {
    message =
        body.size() > kMaxBodyInError ? absl::StrCat(body.substr(0, kMaxBodyInError), "...") : body;
    absl::StripAsciiWhitespace(&message);
  }
  std::string text = absl::StrCat("HTTP ", status);
  if (!reason.empty()) absl::StrAppend(&text, " ", reason);
  if (!message.empty()) absl::StrAppend(&text, ": ", message);
  if (status == 401) {
    absl::StrAppend(&text, " (check the ServiceAccount token)");
  } else if (status == 403) {
    absl::StrAppend(&text, " (the controller's Role needs get and patch on this ConfigMap)");
  } else if (status == 404) {
    absl::StrAppend(&text, " (create it first: helm/xpd and deploy/k8s do)");
  }
  return text;
}

absl::StatusOr<StoredGroups> ParseKey(const nlohmann::json& data, const char* key) {
  if (!data[key].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("key ", key, " is not a string"));
  }
  absl::StatusOr<StoredGroups> groups = StoredGroupsFromJson(data[key].get<std::string>());
  if (!groups.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("key ", key, ": ", groups.status().message()));
  }
  return groups;
}

size_t AppendToString(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

// curl_global_init is not thread-safe: once, before any handle.
void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

absl::StatusOr<ConfigMapRef> ParseConfigMapRef(const std::string& text,
                                               const std::string& namespace_file) {
  ConfigMapRef ref;
  const size_t slash = text.find('/');
  if (slash == std::string::npos) {
    ref.name = text;
    absl::StatusOr<std::string> ns = ReadFile(namespace_file);
    if (!ns.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--placement-configmap ", text, " has no namespace and ",
                       ns.status().message(), " (not in a pod?): give NAMESPACE/NAME"));
    }
    ref.ns = std::string(absl::StripAsciiWhitespace(*ns));
  } else {
    ref.ns = text.substr(0, slash);
    ref.name = text.substr(slash + 1);
  }
  if (!IsDnsName(ref.ns, /*allow_dots=*/false, 63)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--placement-configmap ", text, ": namespace '", ref.ns,
                     "' is not a Kubernetes name (lowercase letters, digits, '-')"));
  }
  if (!IsDnsName(ref.name, /*allow_dots=*/true, 253)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--placement-configmap ", text, ": '", ref.name,
                     "' is not a Kubernetes name (lowercase letters, digits, '-', '.')"));
  }
  return ref;
}

absl::StatusOr<std::unique_ptr<ConfigMapPlacementStore>> ConfigMapPlacementStore::Create(
    ConfigMapRef ref, KubeApiOptions options) {
  std::string base = options.api_url;
  if (base.empty()) {
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (host == nullptr || *host == '\0' || port == nullptr || *port == '\0') {
      return absl::InvalidArgumentError(
          "placement ConfigMap: KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are unset (not "
          "in a pod?): give --kube-api-url");
    }
    const std::string h = host;
    // An IPv6 service address needs brackets in a URL.
    base =
        absl::StrCat("https://", h.find(':') != std::string::npos ? "[" + h + "]" : h, ":", port);
  }
  if (!absl::StartsWith(base, "https://") && !absl::StartsWith(base, "http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kube-api-url ", base, " must start with https:// or http://"));
  }
  while (absl::EndsWith(base, "/")) base.pop_back();
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("Kubernetes API timeout must be > 0");
  }
  InitCurlOnce();
  std::string url = absl::StrCat(base, "/api/v1/namespaces/", ref.ns, "/configmaps/", ref.name);
  return std::unique_ptr<ConfigMapPlacementStore>(
      new ConfigMapPlacementStore(std::move(ref), std::move(options), std::move(url)));
}

ConfigMapPlacementStore::ConfigMapPlacementStore(ConfigMapRef ref, KubeApiOptions options,
                                                 std::string url)
    : ref_(std::move(ref)), options_(std::move(options)), url_(std::move(url)) {}

std::string ConfigMapPlacementStore::Describe() const {
  return absl::StrCat("placement ConfigMap ", ref_.ToString());
}

absl::StatusOr<ConfigMapPlacementStore::Response> ConfigMapPlacementStore::Send(
    const char* method, const std::string* patch) const {
  std::string authorization;
  if (!options_.token_file.empty()) {
    absl::StatusOr<std::string> token = ReadFile(options_.token_file);
    if (!token.ok()) {
      return absl::UnavailableError(absl::StrCat("token: ", token.status().message()));
    }
    authorization = absl::StrCat("Authorization: Bearer ", absl::StripAsciiWhitespace(*token));
  }

  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return absl::UnavailableError("curl_easy_init failed");
  curl_slist* headers = nullptr;
  const auto add_header = [&](const std::string& header) {
    headers = curl_slist_append(headers, header.c_str());
  };
  add_header("Accept: application/json");
  if (!authorization.empty()) add_header(authorization);
  if (patch != nullptr) add_header("Content-Type: application/merge-patch+json");
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(headers,
                                                                          curl_slist_free_all);

  Response response;
  char error[CURL_ERROR_SIZE] = {0};
  CURL* h = curl.get();
  curl_easy_setopt(h, CURLOPT_URL, url_.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  // Several threads use curl; without this a timeout would use signals.
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(options_.timeout)));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, AppendToString);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
  if (!options_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str());
  if (patch != nullptr) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, patch->data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(patch->size()));
  }
  const CURLcode code = curl_easy_perform(h);
  if (code != CURLE_OK) {
    return absl::UnavailableError(error[0] != '\0' ? error : curl_easy_strerror(code));
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

absl::StatusOr<StoredGroups> ConfigMapPlacementStore::Load() {
  const auto fail = [&](const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat(Describe(), ": ", what));
  };
  absl::StatusOr<Response> response = Send("GET", nullptr);
  if (!response.ok()) return fail(absl::StrCat("GET ", url_, ": ", response.status().message()));
  if (response->status != 200) {
    return fail(absl::StrCat("GET ", url_, ": ", HttpError(response->status, response->body)));
  }
  const nlohmann::json configmap =
      nlohmann::json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  if (!configmap.is_object()) {
    return fail(absl::StrCat("GET ", url_, ": the answer is not a JSON object"));
  }
  // A ConfigMap without data (or with null data) holds nothing yet.
  if (!configmap.contains("data") || configmap["data"].is_null()) return StoredGroups{};
  const nlohmann::json& data = configmap["data"];
  if (!data.is_object()) return fail("\"data\" is not an object");
  absl::StatusOr<StoredGroups> groups = StoredGroups{};
  if (data.contains(kPlacementKey)) {
    groups = ParseKey(data, kPlacementKey);
  } else if (data.contains(kSeedKey) &&
             !(data[kSeedKey].is_string() &&
               absl::StripAsciiWhitespace(data[kSeedKey].get<std::string>()).empty())) {
    groups = ParseKey(data, kSeedKey);
  }
  if (!groups.ok()) return fail(std::string(groups.status().message()));
  return groups;
}

absl::Status ConfigMapPlacementStore::Save(const StoredGroups& groups) {
  // Only data["placement.json"]: a merge patch leaves every other key (the
  // deploy tool's seed.json) and the metadata as they are.
  const std::string patch =
      nlohmann::json{{"data", {{kPlacementKey, StoredGroupsToJson(groups)}}}}.dump();
  absl::StatusOr<Response> response = Send("PATCH", &patch);
  if (!response.ok()) {
    return absl::UnavailableError(
        absl::StrCat(Describe(), ": PATCH ", url_, ": ", response.status().message()));
  }
  if (response->status < 200 || response->status > 299) {
    return absl::UnavailableError(absl::StrCat(Describe(), ": PATCH ", url_, ": ",
                                               HttpError(response->status, response->body)));
  }
  return absl::OkStatus();
}

}  // namespace xpd::controller
