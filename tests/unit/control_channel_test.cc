// The serving side of a restore (common/net/control_channel.h) over a real socket pair: a
// ranged request gets exactly its bytes with a header that repeats the range, the digests only
// when asked, and a range beyond the archive is a bad_request answer, not a broken session.
#include "common/net/control_channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "tests/testutil/stream_ends.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::net {
namespace {

using json = nlohmann::json;

class ControlChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pair = testutil::conn_pair();
    ASSERT_TRUE(pair) << pair.error().message;
    server_ = std::move(pair->a);
    client_ = std::move(pair->b);
    archive_.assign(3 * kPartSize / 2, '\0');
    for (size_t i = 0; i < archive_.size(); ++i) archive_[i] = static_cast<char>(i * 7 % 251);
    const std::string path = dir_.sub("a.tgz");
    UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_EQ(::write(out.get(), archive_.data(), archive_.size()),
              static_cast<ssize_t>(archive_.size()));
    file_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    digests_ = {PartDigest{}, PartDigest{}};
    digests_[1][0] = 1;
  }

  // Serves one request shaped like `request`; returns the header and the Data bytes read.
  json serve(const json& request, std::string* data) {
    auto range = archive_range(request);
    EXPECT_TRUE(range) << range.error();
    std::thread server([&] {
      ControlChannel channel(*server_);
      FileSource source(file_.get(), archive_.size(), "a");
      auto sent = channel.stream(ArchiveStream{.source = &source,
                                               .bytes = archive_.size(),
                                               .id = "a",
                                               .snapshot = json{{"id", "a"}},
                                               .part_size = kPartSize,
                                               .digests = digests_,
                                               .range = *range});
      EXPECT_TRUE(sent) << sent.error().message;
    });
    auto frame = client_->recv(10000);
    EXPECT_TRUE(frame);
    json header = json::parse(frame->payload.begin(), frame->payload.end());
    data->clear();
    while (header.value("ok", false)) {
      auto next = client_->recv(10000);
      EXPECT_TRUE(next);
      if (next->type == wire::MsgType::kResponse) {
        EXPECT_EQ(json::parse(next->payload.begin(), next->payload.end())["done"], true);
        break;
      }
      data->append(next->payload.begin(), next->payload.end());
    }
    server.join();
    return header;
  }

  testutil::TempDir dir_{"bkp-channel"};
  std::unique_ptr<Conn> server_, client_;
  std::string archive_;
  UniqueFd file_;
  std::vector<PartDigest> digests_;
};

TEST_F(ControlChannelTest, TheWholeArchiveComesWithItsDigests) {
  std::string data;
  json header = serve(json{{"cmd", "restore"}}, &data);
  EXPECT_EQ(header["bytes"], archive_.size());
  EXPECT_FALSE(header.contains("offset"));
  EXPECT_EQ(header["digests"].get<std::string>().size(), 128u);
  EXPECT_EQ(data, archive_);
}

TEST_F(ControlChannelTest, ARangeGetsExactlyItsBytesAndDigestsOnlyWhenAsked) {
  std::string data;
  json header = serve(json{{"offset", kPartSize}, {"length", 1000}, {"digests", false}}, &data);
  EXPECT_EQ(header["bytes"], archive_.size());
  EXPECT_EQ(header["offset"], kPartSize);
  EXPECT_EQ(header["length"], 1000);
  EXPECT_FALSE(header.contains("digests"));
  EXPECT_EQ(data, archive_.substr(kPartSize, 1000));

  header = serve(json{{"offset", 0}, {"length", 0}}, &data);
  EXPECT_EQ(header["length"], 0);
  EXPECT_TRUE(header.contains("digests")) << "a plan: the header alone, with the digests";
  EXPECT_EQ(data, "");

  header = serve(json{{"offset", archive_.size() - 10}}, &data);
  EXPECT_EQ(header["length"], 10) << "no length: to the end";
  EXPECT_EQ(data, archive_.substr(archive_.size() - 10));
}

TEST_F(ControlChannelTest, ARangeBeyondTheArchiveIsABadRequest) {
  std::string data;
  for (const json& request : {json{{"offset", archive_.size() + 1}},
                              json{{"offset", 10}, {"length", archive_.size()}}}) {
    json answer = serve(request, &data);
    EXPECT_EQ(answer["ok"], false) << request.dump();
    EXPECT_EQ(answer["code"], "bad_request");
    EXPECT_NE(answer["error"].get<std::string>().find("beyond snapshot a"), std::string::npos);
  }
  EXPECT_FALSE(archive_range(json{{"offset", -1}}));
  EXPECT_FALSE(archive_range(json{{"length", "8"}}));
  EXPECT_FALSE(archive_range(json{{"digests", 1}}));
}

}  // namespace
}  // namespace bkp::net
