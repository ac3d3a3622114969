// Result<T>: the one error type of the project.
//
// Every recoverable failure is a value, not an exception: an errno-style code plus a sentence of
// context ("open volumes/web1/srv-app: No such file or directory"). FUSE callbacks turn the code
// into their reply; daemons log the text. BKP_TRY propagates an error out of the calling
// function (GCC/Clang statement expression, as in ccache's TRY).
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include <tl/expected.hpp>

namespace bkp {

struct Error {
  int code = EIO;       // errno value; EPROTO for protocol violations, EINVAL for bad input
  std::string message;  // full sentence with context, ready for a log line

  // Adds outer context: "apply rename a -> b: " + message.
  Error wrap(const std::string& context) const { return {code, context + ": " + message}; }
};

template <class T>
using Result = tl::expected<T, Error>;

inline tl::unexpected<Error> fail(int code, std::string message) {
  return tl::unexpected<Error>(Error{code, std::move(message)});
}

// Reads errno now: call directly after the failing syscall.
inline tl::unexpected<Error> fail_errno(const std::string& context) {
  int e = errno;
  return fail(e, context + ": " + std::strerror(e));
}

// For -errno style returns (liburing, some syscalls wrappers).
inline tl::unexpected<Error> fail_neg(int neg_errno, const std::string& context) {
  return fail(-neg_errno, context + ": " + std::strerror(-neg_errno));
}

}  // namespace bkp

#define BKP_TRY(expr)                                   \
  ({                                                    \
    auto bkp_try_result_ = (expr);                      \
    if (!bkp_try_result_) {                             \
      return ::tl::unexpected(bkp_try_result_.error()); \
    }                                                   \
    std::move(*bkp_try_result_);                        \
  })

#define BKP_TRY_VOID(expr)                              \
  do {                                                  \
    auto bkp_try_result_ = (expr);                      \
    if (!bkp_try_result_) {                             \
      return ::tl::unexpected(bkp_try_result_.error()); \
    }                                                   \
  } while (0)
