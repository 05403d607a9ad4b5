// ConfigMapPlacementStore against a fake Kubernetes API server on loopback:
// where a load comes from (placement.json, seed.json, nothing), the merge
// patch a save sends, errors naming the ConfigMap and the HTTP status, a
// restart reading back what was saved, and the token read on every call.
#include "services/controller/configmap_placement_store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/controller/fake_kube_api.h"

namespace xpd::controller {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kNamespace[] = "serving";
constexpr char kName[] = "xpd-placement";
constexpr char kToken[] = "token-1";

std::string TempPath(const std::string& name) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "configmap_placement_store_test";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

StoredGroups Sample(int64_t epoch = 7) {
  StoredGroup group{.placement = placement::InitialPlacement(2, 4, 2, {1, 3}),
                    .expert_bytes = 4096,
                    .last_rollout = absl::FromUnixMillis(1'700'000'000'123)};
  group.placement.epoch = epoch;
  group.placement.phy2log[1] = {3, 2, 1, 0, 3, 3};
  xpd::v1::RebalanceRecord record;
  record.set_epoch(epoch);
  record.set_outcome("committed");
  record.set_reason("forced");
  record.set_unix_ms(1'700'000'000'123);
  group.last_rebalance = record;
  return {{"decode", group}};
}

class ConfigMapPlacementStoreTest : public ::testing::Test {
 protected:
  // One server for all tests: stopping civetweb waits out its poll quantum.
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<FakeKubeApi>> api =
        FakeKubeApi::Start(kNamespace, kName, kToken);
    ASSERT_TRUE(api.ok()) << api.status();
    api_ = std::move(api).value().release();
  }
  static void TearDownTestSuite() {
    delete api_;
    api_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(api_, nullptr);
    api_->Reset(kToken);
    token_file_ = TempPath(
        absl::StrCat(::testing::UnitTest::GetInstance()->current_test_info()->name(), ".token"));
    // A trailing newline, as `kubectl create token > file` leaves it.
    WriteFile(token_file_, absl::StrCat(kToken, "\n"));
  }

  // A new store, as a newly started controller creates it.
  std::unique_ptr<ConfigMapPlacementStore> NewStore() {
    absl::StatusOr<std::unique_ptr<ConfigMapPlacementStore>> store =
        ConfigMapPlacementStore::Create({.ns = kNamespace, .name = kName},
                                        {.api_url = api_->url(), .token_file = token_file_});
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  static FakeKubeApi* api_;
  std::string token_file_;
};

FakeKubeApi* ConfigMapPlacementStoreTest::api_ = nullptr;

TEST_F(ConfigMapPlacementStoreTest, LoadsTheSeedWhenNoPlacementWasSaved) {
  api_->SetData(FakeKubeApi::Data{{"seed.json", StoredGroupsToJson(Sample(3))}});
  absl::StatusOr<StoredGroups> loaded = NewStore()->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(StoredGroupsToJson(*loaded), StoredGroupsToJson(Sample(3)));

  const std::vector<FakeKubeApi::Request> requests = api_->requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].method, "GET");
  EXPECT_EQ(requests[0].path, "/api/v1/namespaces/serving/configmaps/xpd-placement");
  EXPECT_EQ(requests[0].authorization, "Bearer token-1");
}

TEST_F(ConfigMapPlacementStoreTest, PlacementJsonWinsOverTheSeed) {
  api_->SetData(FakeKubeApi::Data{{"seed.json", StoredGroupsToJson(Sample(3))},
                                  {"placement.json", StoredGroupsToJson(Sample(9))}});
  absl::StatusOr<StoredGroups> loaded = NewStore()->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->at("decode").placement.epoch, 9);
  EXPECT_EQ(StoredGroupsToJson(*loaded), StoredGroupsToJson(Sample(9)));
}

TEST_F(ConfigMapPlacementStoreTest, NoDataOrABlankSeedIsAnEmptyState) {
  for (const FakeKubeApi::Data& data : {FakeKubeApi::Data{}, FakeKubeApi::Data{{"seed.json", ""}},
                                        FakeKubeApi::Data{{"seed.json", " \n"}, {"other", "x"}}}) {
    api_->SetData(data);
    absl::StatusOr<StoredGroups> loaded = NewStore()->Load();
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(loaded->empty());
  }
  // The chart's default seed: a document without groups.
  api_->SetData(FakeKubeApi::Data{{"seed.json", "{\"version\": 1, \"groups\": {}}\n"}});
  absl::StatusOr<StoredGroups> loaded = NewStore()->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->empty());
}

TEST_F(ConfigMapPlacementStoreTest, SaveSendsAMergePatchOfPlacementJsonOnly) {
  const std::string seed = "{\"version\": 1, \"groups\": {}}";
  api_->SetData(FakeKubeApi::Data{{"seed.json", seed}});
  ASSERT_TRUE(NewStore()->Save(Sample()).ok());

  const std::vector<FakeKubeApi::Request> requests = api_->requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].method, "PATCH");
  EXPECT_EQ(requests[0].content_type, "application/merge-patch+json");
  EXPECT_EQ(requests[0].authorization, "Bearer token-1");
  EXPECT_EQ(nlohmann::json::parse(requests[0].body),
            (nlohmann::json{{"data", {{"placement.json", StoredGroupsToJson(Sample())}}}}));
  // The same document the file store writes; the deploy tool's seed is kept.
  EXPECT_EQ(api_->data(), (FakeKubeApi::Data{{"placement.json", StoredGroupsToJson(Sample())},
                                             {"seed.json", seed}}));
}

TEST_F(ConfigMapPlacementStoreTest, ARestartedControllerGetsTheSavedPlacementBack) {
  api_->SetData(FakeKubeApi::Data{{"seed.json", StoredGroupsToJson(Sample(1))}});
  {
    std::unique_ptr<ConfigMapPlacementStore> first = NewStore();
    absl::StatusOr<StoredGroups> loaded = first->Load();
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->at("decode").placement.epoch, 1);
    ASSERT_TRUE(first->Save(Sample(5)).ok());
    ASSERT_TRUE(first->Save(Sample(6)).ok());
  }
  absl::StatusOr<StoredGroups> loaded = NewStore()->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(StoredGroupsToJson(*loaded), StoredGroupsToJson(Sample(6)));
}

TEST_F(ConfigMapPlacementStoreTest, ForbiddenNamesTheConfigMapStatusAndReason) {
  api_->SetData(FakeKubeApi::Data{});
  api_->FailWith(403, nlohmann::json{{"kind", "Status"},
                                     {"status", "Failure"},
                                     {"reason", "Forbidden"},
                                     {"code", 403},
                                     {"message",
                                      "configmaps \"xpd-placement\" is forbidden: User "
                                      "\"system:serviceaccount:serving:default\" cannot get "
                                      "resource \"configmaps\""}}
                          .dump());
  std::unique_ptr<ConfigMapPlacementStore> store = NewStore();
  absl::StatusOr<StoredGroups> loaded = store->Load();
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(loaded.status().message(),
              AllOf(HasSubstr("placement ConfigMap serving/xpd-placement"), HasSubstr(store->url()),
                    HasSubstr("HTTP 403 Forbidden"), HasSubstr("cannot get resource"),
                    HasSubstr("get and patch")));

  const absl::Status saved = store->Save(Sample());
  EXPECT_EQ(saved.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(saved.message(), AllOf(HasSubstr("placement ConfigMap serving/xpd-placement: PATCH"),
                                     HasSubstr("HTTP 403 Forbidden")));
}

TEST_F(ConfigMapPlacementStoreTest, MissingConfigMapOrWrongTokenStopTheLoad) {
  api_->SetData(std::nullopt);
  absl::StatusOr<StoredGroups> loaded = NewStore()->Load();
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(),
              AllOf(HasSubstr("placement ConfigMap serving/xpd-placement"),
                    HasSubstr("HTTP 404 NotFound: configmaps \"xpd-placement\" not found")));

  api_->SetData(FakeKubeApi::Data{});
  api_->SetToken("another");
  loaded = NewStore()->Load();
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("HTTP 401 Unauthorized"));

  // A server error without a Status body: the standard phrase, the body quoted.
  api_->SetToken(kToken);
  api_->FailWith(503, "upstream connect error");
  loaded = NewStore()->Load();
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("HTTP 503 Service Unavailable: upstream connect error"));
}

TEST_F(ConfigMapPlacementStoreTest, MalformedDocumentsStopTheLoadNamingTheKey) {
  api_->SetData(FakeKubeApi::Data{{"seed.json", "{\"version\": 1, \"groups\": {}}"},
                                  {"placement.json", "{\"groups\": ["}});
  absl::StatusOr<StoredGroups> loaded = NewStore()->Load();
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("placement ConfigMap serving/xpd-placement: key placement.json: not a "
                        "JSON object"));

  // The old chart's placeholder seed is not a placement document.
  api_->SetData(FakeKubeApi::Data{{"seed.json", "{\"epoch\": 0, \"experts\": []}"}});
  loaded = NewStore()->Load();
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("key seed.json: missing object \"groups\""));

  // An answer that is not JSON at all.
  api_->AnswerGetWith("<html>proxy error</html>");
  loaded = NewStore()->Load();
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("the answer is not a JSON object"));
}

TEST_F(ConfigMapPlacementStoreTest, TheTokenIsReadAgainForEveryRequest) {
  api_->SetData(FakeKubeApi::Data{});
  std::unique_ptr<ConfigMapPlacementStore> store = NewStore();
  ASSERT_TRUE(store->Load().ok());
  // The kubelet rotated the projected token.
  WriteFile(token_file_, "token-2");
  api_->SetToken("token-2");
  EXPECT_TRUE(store->Save(Sample()).ok());

  std::filesystem::remove(token_file_);
  const absl::Status saved = store->Save(Sample());
  EXPECT_EQ(saved.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(saved.message(), HasSubstr(absl::StrCat("token: cannot read ", token_file_)));
}

TEST_F(ConfigMapPlacementStoreTest, AnUnreachableServerIsUnavailable) {
  // A port that is bound but not listening refuses connections.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string url = absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port));
  absl::StatusOr<std::unique_ptr<ConfigMapPlacementStore>> store = ConfigMapPlacementStore::Create(
      {.ns = kNamespace, .name = kName}, {.api_url = url, .token_file = token_file_});
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<StoredGroups> loaded = (*store)->Load();
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(loaded.status().message(),
              AllOf(HasSubstr("placement ConfigMap serving/xpd-placement: GET"), HasSubstr(url)));
  EXPECT_EQ((*store)->Save(Sample()).code(), absl::StatusCode::kUnavailable);
  close(fd);
}

TEST(ConfigMapRefTest, ParsesNamespaceAndName) {
  absl::StatusOr<ConfigMapRef> ref = ParseConfigMapRef("serving/xpd-placement");
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->ns, "serving");
  EXPECT_EQ(ref->name, "xpd-placement");
  EXPECT_EQ(ref->ToString(), "serving/xpd-placement");

  // NAME alone: the pod's namespace, from the ServiceAccount's namespace file.
  const std::string ns_file = TempPath("namespace");
  WriteFile(ns_file, "team-a");
  ref = ParseConfigMapRef("xpd.placement", ns_file);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->ToString(), "team-a/xpd.placement");

  ref = ParseConfigMapRef("xpd-placement", TempPath("absent-namespace"));
  ASSERT_FALSE(ref.ok());
  EXPECT_EQ(ref.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ref.status().message(), HasSubstr("give NAMESPACE/NAME"));

  for (const char* bad : {"Serving/x", "a.b/x", "ns/", "/x", "ns/X", "ns/x/y", "ns/-x", "ns/x?y"}) {
    EXPECT_EQ(ParseConfigMapRef(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ConfigMapStoreCreateTest, InClusterUrlFromTheServiceEnvironment) {
  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  absl::StatusOr<std::unique_ptr<ConfigMapPlacementStore>> store =
      ConfigMapPlacementStore::Create({.ns = "xpd", .name = "xpd-placement"}, {});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->url(),
            "https://10.96.0.1:443/api/v1/namespaces/xpd/configmaps/xpd-placement");

  setenv("KUBERNETES_SERVICE_HOST", "fd00:10:96::1", 1);
  store = ConfigMapPlacementStore::Create({.ns = "xpd", .name = "p"}, {});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->url(), "https://[fd00:10:96::1]:443/api/v1/namespaces/xpd/configmaps/p");

  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  store = ConfigMapPlacementStore::Create({.ns = "xpd", .name = "p"}, {});
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr("--kube-api-url"));

  store =
      ConfigMapPlacementStore::Create({.ns = "xpd", .name = "p"}, {.api_url = "ftp://example/"});
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr("must start with https:// or http://"));

  // A trailing slash is dropped.
  store = ConfigMapPlacementStore::Create({.ns = "xpd", .name = "p"},
                                          {.api_url = "https://api.example:6443/"});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->url(), "https://api.example:6443/api/v1/namespaces/xpd/configmaps/p");
}

}  // namespace
}  // namespace xpd::controller
