// Small file helpers for tests: whole-file read/write, page-cache residency, the daemons' port and stats files, the
// scale-out servers' env files, and
// deterministic pseudo-random data (incompressible, so zstd cannot hide bytes on the wire).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bkp::testutil {

// Whole file, or nullopt if it cannot be read.
std::optional<std::string> read_file(const std::string& path);
// Creates or truncates path and writes data. Throws std::system_error on failure.
void write_file(const std::string& path, std::string_view data, int mode = 0644);

// The port a daemon wrote with --port-file: decimal digits, optionally followed by whitespace,
// 1..65535. nullopt while the file is missing, empty or partly written.
std::optional<uint16_t> read_port_file(const std::string& path);

// "KEY=VALUE" lines (the env files tests/scale/*.sh write) as a map; nullopt if unreadable.
std::optional<std::map<std::string, std::string>> read_env_file(const std::string& path);
// "key N" lines (backupd's per-volume stats file) as a map; nullopt if unreadable.
std::optional<std::map<std::string, uint64_t>> read_stats(const std::string& path);

// Flips one bit of the byte at offset in place (to damage an archive); false if it cannot.
bool flip_byte(const std::string& path, uint64_t offset);

// n bytes of splitmix64 output for seed: the same seed gives the same bytes.
std::vector<uint8_t> random_bytes(size_t n, uint64_t seed);

// How many pages of fd's first `size` bytes are in the page cache (mincore); SIZE_MAX if it
// cannot tell.
size_t cached_pages(int fd, size_t size);

}  // namespace bkp::testutil
