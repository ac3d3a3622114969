// `bkptool status` against a real backupd, node and replicators (docs/PROTOCOL.md "Control",
// the status request):
//
// - `--json status` and `--json status HOST PATH` carry the documented STATUS object with the
//   right types: the node connected, both replicators listed by name, any TRANSFER seen while
//   a big file ships well-formed, and every lag back to zero once the copies have converged;
// - last_snapshot is null until a run writes one, then it is the newest snapshot listed;
// - an unknown volume exits 4, HOST without PATH exits 2;
// - `status --watch --count 2` prints two blocks (two documents with --json) and exits 0.
#include <string>
#include <vector>

#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

class StatusTest : public ControlTest {
 protected:
  // The one volume of `bkptool --json status ARGS...`, checked to be this volume.
  std::optional<Json> status(const std::vector<std::string>& args, std::string* why) {
    std::vector<std::string> argv{"status"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto doc = bkptool_json(argv, why);
    if (!doc) return std::nullopt;
    const Json& volumes = (*doc)["volumes"];
    if (!volumes.is_array() || volumes.size() != 1 || !volumes[0].is_object()) {
      if (why) *why = "expected exactly one volume: " + doc->dump();
      return std::nullopt;
    }
    return volumes[0];
  }

  // Whether every lag of a STATUS is zero and nothing is in transfer.
  static bool settled(const Json& s) {
    auto null = [](const Json& o, const char* key) {
      auto it = o.find(key);
      return it != o.end() && it->is_null();
    };
    auto zero = [&](const Json& o) {
      return o.value("lag_ops", 1) == 0 && o.value("lag_bytes", 1) == 0 &&
             o.value("lag_files", 1) == 0 && o.value("lag_seconds", 1.0) == 0.0 &&
             null(o, "transfer");
    };
    if (!zero(s) || !null(s, "current_file")) return false;
    for (const auto& r : s.value("replicas", Json::array())) {
      if (!zero(r)) return false;
    }
    return true;
  }

  // The names in a STATUS "replicas" array.
  static std::vector<std::string> replica_names(const Json& s) {
    std::vector<std::string> names;
    for (const auto& r : s.value("replicas", Json::array())) names.push_back(r.value("name", "?"));
    return names;
  }
};

void expect_transfer(const Json& t) {
  SCOPED_TRACE(t.dump());
  if (t.is_null()) return;
  ASSERT_TRUE(t.is_object());
  EXPECT_TRUE(t["phase"].is_string());
  ASSERT_TRUE(t["percent"].is_number_integer());
  EXPECT_GE(t["percent"].get<int>(), 0);
  EXPECT_LE(t["percent"].get<int>(), 100);
  EXPECT_TRUE(t["done_bytes"].is_number_integer());
  EXPECT_TRUE(t["total_bytes"].is_number_integer());
  EXPECT_LE(t["done_bytes"].get<uint64_t>(), t["total_bytes"].get<uint64_t>());
  EXPECT_TRUE(t["files_left"].is_number_integer());
  EXPECT_TRUE(t["file"].is_null() || t["file"].is_string());
  EXPECT_TRUE(t["rate_bytes_per_second"].is_number());
  EXPECT_TRUE(t["elapsed_seconds"].is_number());
}

// Every field of docs/PROTOCOL.md's STATUS, with its type.
void expect_status_shape(const Json& s) {
  SCOPED_TRACE(s.dump());
  for (const char* key : {"port", "every_seconds", "lag_ops", "lag_bytes", "lag_files"}) {
    EXPECT_TRUE(s[key].is_number_integer()) << key;
  }
  for (const char* key : {"host", "path", "registered_at"}) EXPECT_TRUE(s[key].is_string()) << key;
  EXPECT_TRUE(s["connected"].is_boolean());
  EXPECT_TRUE(s["lag_seconds"].is_number());
  for (const char* key : {"last_error", "lag_updated_at", "next_run", "current_file"}) {
    ASSERT_TRUE(s.contains(key)) << key;
    EXPECT_TRUE(s[key].is_null() || s[key].is_string()) << key;
  }
  for (const char* key : {"last_run", "transfer", "last_snapshot"}) {
    ASSERT_TRUE(s.contains(key)) << key;
    EXPECT_TRUE(s[key].is_null() || s[key].is_object()) << key;
  }
  expect_transfer(s["transfer"]);
  ASSERT_TRUE(s["replicas"].is_array());
  for (const auto& r : s["replicas"]) {
    SCOPED_TRACE(r.dump());
    EXPECT_TRUE(r["name"].is_string());
    EXPECT_TRUE(r["connected"].is_boolean());
    for (const char* key : {"lag_ops", "lag_bytes", "lag_files"}) {
      EXPECT_TRUE(r[key].is_number_integer()) << key;
    }
    EXPECT_TRUE(r["lag_seconds"].is_number());
    ASSERT_TRUE(r.contains("transfer"));
    expect_transfer(r["transfer"]);
  }
}

TEST_F(StatusTest, ShowsTheNodeItsReplicasAndLagReturningToZero) {
  ASSERT_TRUE(start_all("1h"));
  std::string why;
  ASSERT_TRUE(wait_connected(30s, &why)) << why;

  // Both replicators are listed once they have connected to backupd.
  std::optional<Json> s;
  ASSERT_TRUE(testutil::wait_until(
      [&] {
        s = status({kHost, src()}, &why);
        return expired() || (s && replica_names(*s) == std::vector<std::string>{"r1", "r2"});
      },
      30s, 200ms))
      << why << " " << (s ? s->dump(2) : "");
  ASSERT_FALSE(expired());
  expect_status_shape(*s);
  EXPECT_EQ(s->value("host", ""), kHost);
  EXPECT_EQ(s->value("path", ""), src());
  EXPECT_EQ(s->value("port", 0), node_port());
  EXPECT_EQ(s->value("every_seconds", 0), 3600);
  EXPECT_EQ(s->value("connected", false), true);
  EXPECT_TRUE((*s)["last_error"].is_null());
  EXPECT_TRUE((*s)["last_run"].is_null());
  EXPECT_TRUE((*s)["last_snapshot"].is_null()) << "no run yet, so no snapshot";

  // Without HOST PATH: every volume, here the same one.
  auto all = bkptool_json({"status"}, &why);
  ASSERT_TRUE(all) << why;
  ASSERT_EQ((*all)["volumes"].size(), 1u) << all->dump(2);
  EXPECT_EQ((*all)["volumes"][0].value("path", ""), src());
  expect_status_shape((*all)["volumes"][0]);

  // Ship something big; whatever transfer shows up meanwhile is well-formed, and once the
  // copies equal the source, every lag returns to zero.
  write_big_file(src("big.bin"), 64u << 20, 7);
  apply_mix(src(), 20);
  testutil::wait_until(
      [&] {
        auto now = status({kHost, src()}, &why);
        if (now) expect_status_shape(*now);
        return expired() || HasFailure() || (now && settled(*now));
      },
      10s, 100ms);
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(wait_converged(), "");
  bool zero = testutil::wait_until(
      [&] {
        s = status({kHost, src()}, &why);
        return expired() || (s && settled(*s));
      },
      20s, 250ms);
  EXPECT_TRUE(zero && !expired()) << "lag did not return to zero: " << why << " "
                                  << (s ? s->dump(2) : "");

  // The human block says the same.
  auto human = bkptool({"status", kHost, src()});
  ASSERT_EQ(human.exit_code(), 0) << human.output;
  EXPECT_EQ(human.out.rfind(std::string(kHost) + ":" + src() + "\n", 0), 0u) << human.out;
  EXPECT_NE(human.out.find("connected to 127.0.0.1:" + std::to_string(node_port())),
            std::string::npos)
      << human.out;
  EXPECT_NE(human.out.find("replica r1"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("replica r2"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("last snapshot  none yet"), std::string::npos) << human.out;
}

TEST_F(StatusTest, ErrorsWatchAndLastSnapshot) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  std::string why;

  auto unknown = bkptool({"--json", "status", kHost, "/no/such/volume"});
  EXPECT_EQ(unknown.exit_code(), 4) << unknown.output;
  EXPECT_EQ(Json::parse(unknown.out, nullptr, false).value("code", ""), "unknown_volume")
      << unknown.out;
  auto half = bkptool({"status", kHost});
  EXPECT_EQ(half.exit_code(), 2) << half.output;
  EXPECT_NE(half.err.find("HOST and PATH together"), std::string::npos) << half.err;

  // Not a terminal: one block per redraw, separated by a blank line.
  const std::string header = std::string(kHost) + ":" + src() + "\n";
  auto watch = bkptool({"status", "--watch", "--count", "2", "--interval", "0.2"}, 20s);
  ASSERT_EQ(watch.exit_code(), 0) << watch.output;
  EXPECT_EQ(watch.out.rfind(header, 0), 0u) << watch.out;
  size_t second = watch.out.find("\n\n" + header);
  ASSERT_NE(second, std::string::npos) << watch.out;
  EXPECT_EQ(watch.out.find("\n\n" + header, second + 1), std::string::npos) << watch.out;
  EXPECT_EQ(watch.out.find("\x1b["), std::string::npos) << "escape codes outside a terminal";
  // With --json: one document per redraw (each ends with "}" alone on its line).
  auto watch_json = bkptool({"--json", "status", "--watch", "--count", "2", "--interval", "0.2",
                             kHost, src()},
                            20s);
  ASSERT_EQ(watch_json.exit_code(), 0) << watch_json.output;
  std::vector<Json> documents;
  for (size_t at = 0, end; (end = watch_json.out.find("\n}\n", at)) != std::string::npos;
       at = end + 3) {
    documents.push_back(Json::parse(watch_json.out.substr(at, end + 2 - at), nullptr, false));
  }
  ASSERT_EQ(documents.size(), 2u) << watch_json.out;
  for (const auto& doc : documents) {
    EXPECT_EQ(doc.value("ok", false), true) << watch_json.out;
    EXPECT_EQ(doc.value("volumes", Json::array()).size(), 1u) << watch_json.out;
  }

  // A change, a written run: last_snapshot is now the newest snapshot on disk.
  auto fresh = runs_after_change([&] { put(src("file.txt"), std::string(50000, 's')); }, &why);
  ASSERT_TRUE(fresh) << why;
  ASSERT_GE(count_status(*fresh, "written"), 1u) << Json(*fresh).dump(2);
  auto snaps = snapshots(&why);
  ASSERT_TRUE(snaps) << why;
  ASSERT_FALSE(snaps->empty());
  auto s = status({kHost, src()}, &why);
  ASSERT_TRUE(s) << why;
  expect_status_shape(*s);
  ASSERT_TRUE((*s)["last_snapshot"].is_object()) << s->dump(2);
  EXPECT_EQ((*s)["last_snapshot"], (*snaps)[0]) << "nothing changed since, so no newer one";
  EXPECT_TRUE((*s)["last_run"].is_object());
  EXPECT_TRUE((*s)["replicas"].empty()) << "no replicator ever connected";
}

}  // namespace
}  // namespace bkp::it
