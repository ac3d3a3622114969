// Presenting a verify (see verify_report.h): one line per copy checked, the differences under
// it (capped, with a count of the rest), then the summary backupd recorded in the history.
#include "tools/verify_report.h"

#include <fmt/format.h>

#include "tools/format.h"
#include "tools/views.h"

namespace bkp::tools {
namespace {

std::string copy_label(const Json& copy) {
  std::string kind = field_text(copy, "kind");
  return kind == "mirror" ? "mirror" : kind + " " + field_text(copy, "name");
}

std::string shown_path(const Json& difference) {
  std::string path = field_text(difference, "path");
  return path.empty() || path == "-" ? "(root)" : path;
}

}  // namespace

Report present_verify(const Json& request, const Json& response) {
  Report r{response, "", {}, {}};
  const std::string result = field_text(response, "result");
  std::string out = fmt::format(
      "verify {} ({}): {} in {}\n",
      volume_name(field_text(response, "host"), request.value("path", "")),
      field_text(response, "checked"), result,
      human_duration_ms(field_u64(response, "duration_ms")));
  auto copies = response.find("copies");
  for (const Json& c : copies != response.end() && copies->is_array() ? *copies : Json::array()) {
    const uint64_t total = field_u64(c, "differences_total");
    std::string state;
    if (c.value("checked", false)) {
      state = total == 0 ? "same" : counted(total, "difference", "differences");
    } else {
      state = "not checked: " + field_text(c, "error");
    }
    std::string counts = counted(field_u64(c, "entries"), "entry", "entries");
    if (uint64_t changed = field_u64(c, "changed_during"); changed > 0) {
      counts += fmt::format(", {} changed during the verify", changed);
    }
    out += fmt::format("  {}: {} ({})\n", copy_label(c), state, counts);
    size_t shown = 0;
    auto list = c.find("differences");
    for (const Json& d : list != c.end() && list->is_array() ? *list : Json::array()) {
      if (shown++ == kMaxPrintedDifferences) break;
      out += fmt::format("    {}: {}: {}\n", shown_path(d), field_text(d, "what"),
                         field_text(d, "detail"));
    }
    if (total > kMaxPrintedDifferences) {
      out += fmt::format("    ... and {} more (--json lists up to 200)\n",
                         total - kMaxPrintedDifferences);
    }
  }
  out += field_text(response, "summary") + "\n";
  r.table = std::move(out);
  r.exit = result == "clean" ? Exit::kOk : result == "differs" ? Exit::kDiffers : Exit::kFailure;
  return r;
}

}  // namespace bkp::tools
