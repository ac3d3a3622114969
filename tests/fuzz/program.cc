// See program.h.
#include "tests/fuzz/program.h"

namespace bkp::fuzz {
namespace {

std::string component(Input& in, const std::string& outside) {
  switch (in.byte() % 14) {
    case 0: return "a";
    case 1: return "b";
    case 2: return "..";
    case 3: return ".";
    case 4: return "";
    case 5: return "link-out";
    case 6: return "victim";
    case 7: return "ids";
    case 8: return "tree";
    case 9: return outside;
    case 10: return std::string(300, 'n');
    case 11: return "dir";
    case 12: return in.raw(12);
    default: return "c";
  }
}

std::string path(Input& in, const std::string& outside) {
  std::string p;
  for (int n = 1 + in.byte() % 4; n > 0; --n) {
    if (!p.empty() || in.byte() % 8 == 0) p += '/';
    p += component(in, outside);
  }
  return p;
}

std::string xattr_name(Input& in) {
  switch (in.byte() % 6) {
    case 0: return "user.a";
    case 1: return "security.capability";
    case 2: return "trusted.t";
    case 3: return "system.posix_acl_access";
    case 4: return "user." + std::string(300, 'x');
    default: return in.raw(24);
  }
}

}  // namespace

wire::Op op(Input& in, const std::string& outside) {
  wire::Op o;
  o.kind = static_cast<wire::OpKind>(1 + in.byte() % static_cast<uint8_t>(wire::kLastOpKind));
  o.path = path(in, outside);
  o.target = path(in, outside);
  o.id = in.byte() % 4 == 0 ? in.bits(8) : in.byte() % 6;
  o.mode = static_cast<uint32_t>(in.bits(4));
  o.uid = static_cast<uint32_t>(in.byte() % 3 == 0 ? in.bits(4) : in.byte() % 3);
  o.gid = static_cast<uint32_t>(in.byte() % 3 == 0 ? in.bits(4) : in.byte() % 3);
  o.rdev = in.bits(2);
  o.flags = static_cast<uint32_t>(in.bits(1) | (in.bits(1) << 4));
  o.size = in.bits(3) % (4u << 20);
  o.offset = in.bits(3) % (4u << 20);
  o.atime_ns = static_cast<int64_t>(in.bits(8));
  o.mtime_ns = static_cast<int64_t>(in.bits(8));
  o.name = xattr_name(in);
  o.value = in.raw(40);
  return o;
}

wire::Write write(Input& in) {
  wire::Write w;
  w.id = in.byte() % 6;
  w.offset = in.bits(3) % (4u << 20);
  std::string bytes = in.raw(200);
  w.inflated.assign(bytes.begin(), bytes.end());
  w.data = w.inflated;
  return w;
}

}  // namespace bkp::fuzz
