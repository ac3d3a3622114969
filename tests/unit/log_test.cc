// What a unit can check of the log's shape: whether $JOURNAL_STREAM names stderr (then lines
// carry the syslog prefix journald reads; nowhere else), and that a message stays one bounded
// line whatever it quotes (printable).
#include "common/log.h"

#include <gtest/gtest.h>

namespace bkp::log {
namespace {

TEST(JournalStreamTest, OnlyTheNamedFileIsTheJournal) {
  EXPECT_TRUE(is_journal_stream("8:12345", 8, 12345));
  EXPECT_TRUE(is_journal_stream("64769:18446744073709551615", 64769, 18446744073709551615ull));
  EXPECT_FALSE(is_journal_stream("8:12345", 8, 12346)) << "stderr is another file (a pipe)";
  EXPECT_FALSE(is_journal_stream("8:12345", 9, 12345));
}

TEST(JournalStreamTest, MalformedValuesAreNotTheJournal) {
  for (const char* bad : {"", ":", "8", "8:", ":12345", "8:12345:1", "x:1", "8:12345 ", " 8:12345",
                          "-8:12345", "8:99999999999999999999999"}) {
    EXPECT_FALSE(is_journal_stream(bad, 8, 12345)) << "'" << bad << "'";
  }
}

}  // namespace
}  // namespace bkp::log

namespace bkp::log {
namespace {

// A file name a peer sent is quoted in a log line: it must not start a forged line of its own,
// carry a terminal escape sequence, or make one line of a megabyte.
TEST(PrintableTest, ControlCharactersAreEscapedAndOtherTextKept) {
  EXPECT_EQ(printable("volume web1: apply mkdir nope\nbackupd error: FAKE\x1b[31m/x"),
            "volume web1: apply mkdir nope\\x0abackupd error: FAKE\\x1b[31m/x");
  EXPECT_EQ(printable(std::string("a\0b\x7f\tc", 6)), "a\\x00b\\x7f\\x09c");
  EXPECT_EQ(printable("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac"), "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac");
}

TEST(PrintableTest, ALongMessageIsCutWithTheCountOfWhatWasLeftOut) {
  std::string huge(kMaxMessage + 1000, 'p');
  std::string out = printable(huge);
  EXPECT_EQ(out, std::string(kMaxMessage, 'p') + "... (1000 more bytes)");
  EXPECT_EQ(printable(std::string(kMaxMessage, 'q')), std::string(kMaxMessage, 'q'));
}

}  // namespace
}  // namespace bkp::log
