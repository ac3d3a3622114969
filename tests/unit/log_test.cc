// The log's one decision about its shape that a unit can check: whether $JOURNAL_STREAM names
// stderr (then lines carry the syslog prefix journald reads; nowhere else).
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
