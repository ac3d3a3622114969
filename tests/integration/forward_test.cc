// Fan-out as the node sent it (server/forward_cache.h): backupd forwards each chunk of the
// node's stream to every replica as it arrived — zstd-compressed where the node compressed it,
// raw where the node found it incompressible — instead of reading its mirror back and
// compressing again, and the replicas still end byte-identical to the source. A replica that
// stops reading holds up neither the mirror nor the other replica.
#include <signal.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

constexpr uint64_t kFileBytes = 6 * kMiB;

class ForwardTest : public ClusterTest {};

void write_file(const std::string& path, bool compressible, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::string data(kFileBytes, '\0');
  for (size_t i = 0; i < data.size(); i += 8) {
    uint64_t v = compressible ? (i / 4096) % 7 : rng();
    std::memcpy(data.data() + i, &v, 8);
  }
  std::ofstream(path, std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
}

// The replicator whose --root is root (the fixture starts it; its pid is not exposed).
pid_t replicator_pid(const std::string& root) {
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::ifstream in(e.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find("replicator") != std::string::npos &&
        cmdline.find(std::string("--root") + '\0' + root + '\0') != std::string::npos) {
      return static_cast<pid_t>(std::stoi(e.path().filename().string()));
    }
  }
  return -1;
}

uint64_t stat_of(const std::optional<std::map<std::string, uint64_t>>& stats, const char* key) {
  if (!stats) return 0;
  auto it = stats->find(key);
  return it == stats->end() ? 0 : it->second;
}

TEST_F(ForwardTest, ReplicasGetTheNodesChunksAsSentAndApplyThemExactly) {
  // In the tree before the mount, so the node's baseline ships each file as one range and the
  // replicas' logs cut it into the same 1 MiB chunks.
  write_file(src("text.log"), true, 1);
  write_file(src("noise.bin"), false, 2);
  ASSERT_TRUE(start_all());
  ASSERT_EQ(wait_converged(), "");

  // The stats file is written at the node's commits: one more makes it count every take so far.
  std::ofstream(src("marker")) << "x";
  ASSERT_EQ(wait_converged(), "");
  auto stats = server_stats();
  // The node compressed the text: fewer bytes came in than were applied.
  EXPECT_LT(stat_of(stats, "wire_bytes"), stat_of(stats, "data_bytes"));
  // Every chunk of both files went to both replicas as it came (and the marker's, to one or
  // both by the time of its commit), none was read back.
  EXPECT_GE(stat_of(stats, "forwarded_bytes"), 2 * 2 * kFileBytes);
  EXPECT_EQ(stat_of(stats, "reread_bytes"), 0u);
}

TEST_F(ForwardTest, AStoppedReplicaHoldsUpNeitherTheMirrorNorTheOtherReplica) {
  ASSERT_TRUE(start_all());
  ASSERT_EQ(wait_converged(), "");
  pid_t stopped = replicator_pid(replica_root(1));
  ASSERT_GT(stopped, 0);
  ASSERT_EQ(kill(stopped, SIGSTOP), 0);
  // More than the socket buffers and the forward cache's protected window can hold for it.
  for (int i = 0; i < 8; ++i) write_file(src("f" + std::to_string(i)), false, 10 + i);
  testutil::CompareOptions options;
  std::string diff;
  bool caught_up = testutil::wait_until(
      [&] {
        diff = compare_trees(src(), mirror(), options);
        if (diff.empty()) diff = compare_trees(src(), replica(0), options);
        return diff.empty() || expired();
      },
      90s);
  ASSERT_EQ(kill(stopped, SIGCONT), 0);
  ASSERT_TRUE(caught_up && diff.empty()) << "while replica 2 was stopped: " << diff;
  EXPECT_EQ(wait_converged(), "");
}

}  // namespace
}  // namespace bkp::it
