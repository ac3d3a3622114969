// File helpers for tests (see files.h).
#include "tests/testutil/files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include <cerrno>
#include <charconv>
#include <fstream>
#include <sstream>
#include <system_error>

namespace bkp::testutil {

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return ss.str();
}

void write_file(const std::string& path, std::string_view data, int mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      throw std::system_error(e, std::generic_category(), "write " + path);
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) throw std::system_error(errno, std::generic_category(), "close " + path);
}

std::optional<uint16_t> read_port_file(const std::string& path) {
  auto text = read_file(path);
  if (!text || text->empty()) return std::nullopt;
  const char* begin = text->data();
  const char* end = begin + text->size();
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr == begin) return std::nullopt;
  for (const char* p = ptr; p < end; ++p) {
    if (*p != '\n' && *p != ' ' && *p != '\r' && *p != '\t') return std::nullopt;
  }
  if (value == 0 || value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

std::optional<std::map<std::string, std::string>> read_env_file(const std::string& path) {
  auto text = read_file(path);
  if (!text) return std::nullopt;
  std::map<std::string, std::string> out;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) {
    if (auto eq = line.find('='); eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

std::optional<std::map<std::string, uint64_t>> read_stats(const std::string& path) {
  auto text = read_file(path);
  if (!text) return std::nullopt;
  std::map<std::string, uint64_t> out;
  std::istringstream in(*text);
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value) out[key] = value;
  return out;
}

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  uint64_t x = seed;
  for (size_t i = 0; i < n; i += 8) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    for (size_t j = 0; j < 8 && i + j < n; ++j) out[i + j] = static_cast<uint8_t>(z >> (8 * j));
  }
  return out;
}

bool flip_byte(const std::string& path, uint64_t offset) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  char c = 0;
  bool ok = ::pread(fd, &c, 1, static_cast<off_t>(offset)) == 1;
  c = static_cast<char>(c ^ 0x40);
  ok = ok && ::pwrite(fd, &c, 1, static_cast<off_t>(offset)) == 1;
  ::close(fd);
  return ok;
}

size_t cached_pages(int fd, size_t size) {
  void* map = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return SIZE_MAX;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in_core((size + page - 1) / page);
  size_t cached = SIZE_MAX;
  if (mincore(map, size, in_core.data()) == 0) {
    cached = static_cast<size_t>(
        std::count_if(in_core.begin(), in_core.end(), [](unsigned char c) { return c & 1; }));
  }
  munmap(map, size);
  return cached;
}

}  // namespace bkp::testutil
