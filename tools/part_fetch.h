// A snapshot fetched in parts from several sources at once (issue 13: parallel restore with
// failover), handed to the extractor in order.
//
// Each source (backupd, or a replicator serving its copies) has one connection and one thread
// that keeps up to kPartsInFlight ranged restore requests outstanding (docs/PROTOCOL.md,
// "Control", restore with "offset"/"length"). A thread takes the lowest part nobody has yet, so
// a faster source simply comes back for more sooner and ends up serving more of the archive.
// Every part is checked against its SHA-256 before the extractor sees a byte of it:
//   - a part that does not match is asked of another source (never again of that one);
//   - a source whose connection breaks, or that answers with an error, serves nothing more,
//     and the parts it had in flight go to the others;
//   - a part in flight on one source much longer than parts usually take is also asked of an
//     idle source (hedging), whichever answer comes first is kept: a source that stalls
//     without closing delays the restore by a few seconds, not by the response timeout.
// The restore fails only when some part could not be had from any source; the failure names
// the part and what each source did.
//
// Memory: parts are held from arrival until the extractor takes them, and no part more than
// a window (a few per source) ahead of the extractor is asked for.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/part_digests.h"
#include "common/progress.h"
#include "tools/client.h"
#include "tools/extract.h"

namespace bkp::tools {

constexpr size_t kPartsInFlight = 2;  // requests outstanding per source

// What is fetched: the request every part repeats (cmd, host, path and the explicit snapshot
// id), the archive's size, the size of a part and the digest of each (empty: none known, parts
// are not checked).
struct FetchPlan {
  Json request;
  std::string snapshot_id;
  uint64_t bytes = 0;
  uint64_t part_size = kPartSize;
  std::vector<PartDigest> digests;
};

// One source, connected, with the name the progress line and the report use.
struct FetchSource {
  std::string name;
  std::unique_ptr<ControlClient> client;
};

// What one source did, for the report.
struct SourceTally {
  std::string name;
  uint64_t parts = 0;  // parts it supplied that were used
  uint64_t bytes = 0;
  uint64_t bad_parts = 0;  // parts it sent that did not match their digest
  std::string lost;        // why it stopped serving ("" if it served to the end)
};

class PartFetcher : public ByteSource {
 public:
  PartFetcher(FetchPlan plan, std::vector<FetchSource> sources, progress::Meter& meter);
  ~PartFetcher() override;  // stop()
  PartFetcher(const PartFetcher&) = delete;
  PartFetcher& operator=(const PartFetcher&) = delete;

  // The next part in order, checked; empty after the last. An error when a part could not be
  // had from any source (failure() says why).
  Result<std::span<const uint8_t>> next() override;

  // Breaks every connection and joins the source threads (idempotent).
  void stop();

  const std::optional<Failure>& failure() const { return failure_; }
  std::vector<SourceTally> tallies();

 private:
  enum class State { kWaiting, kInFlight, kDone };
  struct Part {
    State state = State::kWaiting;
    size_t holders = 0;             // sources it is in flight on
    std::vector<bool> asked;        // by source: in flight there now, or answered
    std::vector<bool> failed;       // by source: a bad digest, or the source was lost with it
    std::chrono::steady_clock::time_point since{};  // when it was last asked for
    std::vector<uint8_t> data;      // kDone, until the extractor takes it
  };

  void run_source(size_t source);
  // Picks up to kPartsInFlight parts for source (mu_ held): the lowest waiting ones in the
  // window, else one in flight elsewhere for too long.
  std::vector<size_t> pick(size_t source);
  Outcome<std::vector<uint8_t>> fetch_answer(ControlClient& client, size_t part);
  void delivered(size_t source, size_t part, std::vector<uint8_t> data);
  void refused(size_t source, size_t part, std::string why);  // mu_ held
  void lose(size_t source, const std::vector<size_t>& outstanding, std::string why);
  void check_supply();  // mu_ held: fails the fetch when some part has no source left
  bool finished() const;  // mu_ held
  uint64_t part_length(size_t part) const;
  std::chrono::steady_clock::duration hedge_after() const;  // mu_ held

  const FetchPlan plan_;
  std::vector<FetchSource> sources_;
  progress::Meter& meter_;
  const size_t window_;

  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  std::vector<Part> parts_;
  std::vector<SourceTally> tallies_;
  size_t next_ = 0;  // the part the extractor takes next
  size_t done_ = 0;
  uint64_t received_ = 0;
  bool stopping_ = false;
  std::optional<Failure> failure_;  // set once, then read by the extractor's thread only
  std::chrono::steady_clock::duration part_time_{};  // smoothed time of a part's answer
  std::vector<uint8_t> current_;  // the span next() returned last

  std::vector<std::thread> threads_;  // last: started once the rest is set
};

}  // namespace bkp::tools
