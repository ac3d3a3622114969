// What every ArchiveStore (server/archive_store.h) must do, as parameterized tests: the local
// directory store runs them in bkp_unit_tests, the S3 store against a real radosgw in
// bkp_s3_tests. Each binary instantiates ArchiveStoreContract with a maker of fresh, empty
// stores (one per test).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "server/archive_store.h"

namespace bkp::server {

struct StoreMaker {
  std::string name;  // the instantiation's suffix
  // A new, empty store; null (with *why set) if none can be made here: the test is skipped.
  std::function<std::unique_ptr<ArchiveStore>(std::string* why)> make;
};

// Test names show the maker's name, not its bytes.
inline void PrintTo(const StoreMaker& maker, std::ostream* os) { *os << maker.name; }

class ArchiveStoreContract : public testing::TestWithParam<StoreMaker> {
 protected:
  void SetUp() override;
  std::unique_ptr<ArchiveStore> store_;
};

}  // namespace bkp::server
