// Prometheus text exposition (format 0.0.4): what each daemon's /metrics returns.
//
// Samples are added in any order; text() groups them by metric family, each family once with
// its HELP and TYPE lines, as the format requires. Names follow Prometheus conventions (base
// units: _seconds, _bytes; counters end in _total); label values are escaped. The process
// metrics every exporter has (resident memory, open descriptors, CPU time, start time) come
// from add_process_metrics.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bkp::metrics {

enum class Type { kGauge, kCounter };

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  // One sample of family name. The first sample of a family fixes its type and help.
  void add(std::string_view name, Type type, std::string_view help, const Labels& labels,
           double value);
  void gauge(std::string_view name, std::string_view help, const Labels& labels, double value) {
    add(name, Type::kGauge, help, labels, value);
  }
  void counter(std::string_view name, std::string_view help, const Labels& labels, double value) {
    add(name, Type::kCounter, help, labels, value);
  }
  std::string text() const;

 private:
  struct Family {
    std::string name;
    Type type;
    std::string help;
    std::vector<std::string> samples;  // "name{labels} value"
  };
  std::vector<Family> families_;
};

// process_resident_memory_bytes, process_open_fds, process_cpu_seconds_total,
// process_start_time_seconds, from /proc/self.
void add_process_metrics(Exposition& out);

// PREFIX_filesystem_size_bytes and PREFIX_filesystem_avail_bytes (what a writer without root's
// reserve may still write) of the filesystem holding path, described as holding `what`; nothing
// if statvfs fails.
void add_filesystem_metrics(Exposition& out, std::string_view prefix, const std::string& path,
                            std::string_view what);

// The content type of text().
constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace bkp::metrics
