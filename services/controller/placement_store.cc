#include "services/controller/placement_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/placement/placement_proto.h"
#include "nlohmann/json.hpp"

namespace xpd::controller {
namespace {

constexpr int kVersion = 1;

absl::StatusOr<StoredGroup> GroupFromJson(const nlohmann::json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  if (!j.contains("placement")) return absl::InvalidArgumentError("missing field \"placement\"");
  absl::StatusOr<placement::ExpertPlacement> p =
      placement::PlacementFromJson(j["placement"].dump());
  if (!p.ok()) return p.status();
  StoredGroup group{.placement = *std::move(p)};
  if (j.contains("expert_bytes")) {
    if (!j["expert_bytes"].is_number_integer() || j["expert_bytes"].get<int64_t>() < 0) {
      return absl::InvalidArgumentError("field \"expert_bytes\" must be an integer >= 0");
    }
    group.expert_bytes = j["expert_bytes"].get<int64_t>();
  }
  if (j.contains("last_rollout_unix_ms")) {
    if (!j["last_rollout_unix_ms"].is_number_integer()) {
      return absl::InvalidArgumentError("field \"last_rollout_unix_ms\" must be an integer");
    }
    group.last_rollout = absl::FromUnixMillis(j["last_rollout_unix_ms"].get<int64_t>());
  }
  if (j.contains("last_rebalance")) {
    absl::StatusOr<xpd::v1::RebalanceRecord> record =
        placement::RebalanceRecordFromJson(j["last_rebalance"]);
    if (!record.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"last_rebalance\": ", record.status().message()));
    }
    group.last_rebalance = *std::move(record);
  }
  return group;
}

std::string ErrnoText() { return std::strerror(errno); }

}  // namespace

std::string StoredGroupsToJson(const StoredGroups& groups) {
  nlohmann::json out = {{"version", kVersion}, {"groups", nlohmann::json::object()}};
  for (const auto& [name, group] : groups) {
    nlohmann::json g = {{"placement", nlohmann::json::parse(PlacementToJson(group.placement))},
                        {"expert_bytes", group.expert_bytes}};
    if (group.last_rollout) g["last_rollout_unix_ms"] = absl::ToUnixMillis(*group.last_rollout);
    if (group.last_rebalance)
      g["last_rebalance"] = placement::RebalanceRecordToJson(*group.last_rebalance);
    out["groups"][name] = std::move(g);
  }
  return out.dump(1);
}

absl::StatusOr<StoredGroups> StoredGroupsFromJson(const std::string& json) {
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  if (j.contains("version") && j["version"] != kVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported version ", j["version"].dump(), " (expected ", kVersion, ")"));
  }
  if (!j.contains("groups") || !j["groups"].is_object()) {
    return absl::InvalidArgumentError("missing object \"groups\"");
  }
  StoredGroups groups;
  for (const auto& [name, value] : j["groups"].items()) {
    absl::StatusOr<StoredGroup> group = GroupFromJson(value);
    if (!group.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("groups[\"", name, "\"]: ", group.status().message()));
    }
    groups.emplace(name, *std::move(group));
  }
  return groups;
}

absl::StatusOr<StoredGroups> LoadPlacementFile(const std::string& path) {
  std::error_code missing;
  if (!std::filesystem::exists(path, missing) && !missing) return StoredGroups{};
  std::ifstream file(path);
  if (!file) {
    return absl::FailedPreconditionError(
        absl::StrCat("placement file ", path, ": cannot read: ", ErrnoText()));
  }
  std::stringstream text;
  text << file.rdbuf();
  if (file.bad()) {
    return absl::FailedPreconditionError(absl::StrCat("placement file ", path, ": read failed"));
  }
  absl::StatusOr<StoredGroups> groups = StoredGroupsFromJson(text.str());
  if (!groups.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("placement file ", path, ": ", groups.status().message()));
  }
  return groups;
}

absl::Status SavePlacementFile(const std::string& path, const StoredGroups& groups) {
  const std::string text = StoredGroupsToJson(groups);
  const std::string temp = absl::StrCat(path, ".tmp.", getpid());
  const auto fail = [&](const std::string& what) {
    const std::string reason = ErrnoText();
    unlink(temp.c_str());
    return absl::UnavailableError(absl::StrCat("placement file ", path, ": ", what, ": ", reason));
  };
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail(absl::StrCat("cannot create ", temp));
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(fd);
      return fail("write failed");
    }
    written += static_cast<size_t>(n);
  }
  // Durable before the rename makes it visible: otherwise a crash could
  // leave an empty file under the real name.
  if (fsync(fd) != 0) {
    close(fd);
    return fail("fsync failed");
  }
  if (close(fd) != 0) return fail("close failed");
  if (rename(temp.c_str(), path.c_str()) != 0) return fail("rename failed");
  return absl::OkStatus();
}

}  // namespace xpd::controller
