// Prometheus text exposition (metrics.h).
#include "common/metrics.h"

#include <dirent.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <iterator>
#include <sstream>

#include <fmt/format.h>

namespace bkp::metrics {
namespace {

// Backslash and newline escaped, and the double quote too in a label value (the format's rules
// for label values and HELP text).
std::string escape(std::string_view v, bool quote) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || (quote && c == '"')) {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

}  // namespace

void Exposition::add(std::string_view name, Type type, std::string_view help,
                     const Labels& labels, double value) {
  auto it = std::find_if(families_.begin(), families_.end(),
                         [&](const Family& f) { return f.name == name; });
  if (it == families_.end()) {
    families_.push_back(Family{std::string(name), type, std::string(help), {}});
    it = families_.end() - 1;
  }
  std::string sample(name);
  if (!labels.empty()) {
    sample += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i > 0) sample += ',';
      sample += labels[i].first + "=\"" + escape(labels[i].second, true) + '"';
    }
    sample += '}';
  }
  it->samples.push_back(sample + ' ' + format_value(value));
}

std::string Exposition::text() const {
  std::string out;
  for (const Family& f : families_) {
    out += "# HELP " + f.name + ' ' + escape(f.help, false) + '\n';
    out += "# TYPE " + f.name + (f.type == Type::kCounter ? " counter\n" : " gauge\n");
    for (const auto& s : f.samples) out += s + '\n';
  }
  return out;
}

void add_filesystem_metrics(Exposition& out, std::string_view prefix, const std::string& path,
                            std::string_view what) {
  struct statvfs fs{};
  if (::statvfs(path.c_str(), &fs) != 0) return;
  const auto unit = static_cast<double>(fs.f_frsize);
  out.gauge(fmt::format("{}_filesystem_size_bytes", prefix),
            fmt::format("Size of the filesystem that holds {}.", what), {},
            static_cast<double>(fs.f_blocks) * unit);
  out.gauge(fmt::format("{}_filesystem_avail_bytes", prefix),
            fmt::format("Bytes that can still be written on the filesystem that holds {}.", what),
            {}, static_cast<double>(fs.f_bavail) * unit);
}

void add_process_metrics(Exposition& out) {
  const long page = ::sysconf(_SC_PAGESIZE);
  const long ticks = ::sysconf(_SC_CLK_TCK);
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  if (statm >> size >> resident) {
    out.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", {},
              static_cast<double>(resident) * static_cast<double>(page));
  }
  size_t fds = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) fds += e->d_name[0] != '.';
    ::closedir(d);
    out.gauge("process_open_fds", "Number of open file descriptors.", {},
              static_cast<double>(fds > 0 ? fds - 1 : 0));  // minus the one listing them
  }
  // /proc/self/stat: fields after the command name (which may hold spaces) from ") ".
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  size_t close = stat.rfind(')');
  std::ifstream uptime_file("/proc/uptime");
  double uptime = 0;
  if (close != std::string::npos && (uptime_file >> uptime)) {
    std::istringstream fields(stat.substr(close + 2));
    std::vector<std::string> f((std::istream_iterator<std::string>(fields)),
                               std::istream_iterator<std::string>());
    // Fields 14, 15 (utime, stime) and 22 (starttime) of stat(5), counted from field 3 here.
    if (f.size() > 19) {
      const double cpu = (std::stod(f[11]) + std::stod(f[12])) / static_cast<double>(ticks);
      out.counter("process_cpu_seconds_total", "Total user and system CPU time in seconds.", {},
                  cpu);
      const double started_ago = uptime - std::stod(f[19]) / static_cast<double>(ticks);
      out.gauge("process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.", {},
                std::floor(static_cast<double>(::time(nullptr)) - started_ago));
    }
  }
}

}  // namespace bkp::metrics
