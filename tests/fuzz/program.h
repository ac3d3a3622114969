// Programs for the fuzz targets that drive an Applier (applier_ops.cc, receiver.cc): the input
// read as operations and writes a hostile sender could choose, with offsets and sizes kept
// below 4 MiB so a run never fills the disk.
#pragma once

#include <cstdint>
#include <string>

#include "common/wire/messages.h"
#include "tests/fuzz/fuzz.h"

namespace bkp::fuzz {

// An operation of any kind: paths made of components such as "..", ".", "" and names of what
// lies outside (`outside`, an absolute directory no stream may touch), symlink targets out of
// the tree, small ids (so operations meet the same files) or any id, modes, flags, xattrs.
wire::Op op(Input& in, const std::string& outside);
// A Write of up to 200 bytes to one of the small ids, below 4 MiB.
wire::Write write(Input& in);

}  // namespace bkp::fuzz
