// Parallel fetch of a snapshot's parts with failover (part_fetch.h).
//
// One mutex guards the parts and the tallies; each source thread holds it only to choose parts
// and to hand one over, never while it waits on the network. The extractor's thread waits on
// the condition variable for the part it needs; source threads wait on it for room in the
// window, and wake every kRecheck to see whether a part elsewhere has become late enough to
// hedge.
#include "tools/part_fetch.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/log.h"
#include "common/wire/frame.h"
#include "tools/format.h"

namespace bkp::tools {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kRecheck = std::chrono::milliseconds(250);
// A part is hedged once in flight this long, or four times as long as parts usually take.
constexpr auto kMinHedge = std::chrono::seconds(2);
constexpr std::string_view kDamaged = "its copy is damaged (the part does not match its digest)";

}  // namespace

PartFetcher::PartFetcher(FetchPlan plan, std::vector<FetchSource> sources, progress::Meter& meter)
    : plan_(std::move(plan)), sources_(std::move(sources)), meter_(meter),
      window_(sources_.size() * kPartsInFlight + 2) {
  const size_t count = static_cast<size_t>(part_count(plan_.bytes, plan_.part_size));
  parts_.resize(count);
  for (auto& p : parts_) {
    p.asked.assign(sources_.size(), false);
    p.failed.assign(sources_.size(), false);
  }
  for (const auto& s : sources_) tallies_.push_back(SourceTally{.name = s.name});
  meter_.begin("restore");
  meter_.update({0, plan_.bytes, 0, 0});
  for (size_t i = 0; i < sources_.size(); ++i) threads_.emplace_back([this, i] { run_source(i); });
}

PartFetcher::~PartFetcher() { stop(); }

void PartFetcher::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& s : sources_) s.client->abort();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

std::vector<SourceTally> PartFetcher::tallies() {
  std::lock_guard lock(mu_);
  return tallies_;
}

uint64_t PartFetcher::part_length(size_t part) const {
  return std::min(plan_.part_size, plan_.bytes - part * plan_.part_size);
}

bool PartFetcher::finished() const { return stopping_ || failure_ || done_ == parts_.size(); }

Clock::duration PartFetcher::hedge_after() const {
  return std::max<Clock::duration>(kMinHedge, part_time_ * 4);
}

std::vector<size_t> PartFetcher::pick(size_t source) {
  std::vector<size_t> out;
  const size_t end = std::min(parts_.size(), next_ + window_);
  for (size_t i = next_; i < end && out.size() < kPartsInFlight; ++i) {
    Part& p = parts_[i];
    if (p.state == State::kWaiting && !p.failed[source]) out.push_back(i);
  }
  if (out.empty()) {
    // Nothing new for this source: help with the oldest part that is late elsewhere.
    const auto now = Clock::now();
    for (size_t i = next_; i < end; ++i) {
      Part& p = parts_[i];
      if (p.state == State::kInFlight && !p.asked[source] && !p.failed[source] &&
          now - p.since > hedge_after()) {
        log::info("part {} of snapshot {} is late; asking {} too", i, plan_.snapshot_id,
                  sources_[source].name);
        out.push_back(i);
        break;
      }
    }
  }
  for (size_t i : out) {
    Part& p = parts_[i];
    if (p.state == State::kWaiting) p.since = Clock::now();
    p.state = State::kInFlight;
    p.asked[source] = true;
    ++p.holders;
  }
  return out;
}

void PartFetcher::run_source(size_t source) {
  ControlClient& client = *sources_[source].client;
  std::vector<size_t> outstanding;  // asked for, answers not read yet, oldest first
  while (true) {
    std::vector<size_t> picked;
    {
      std::unique_lock lock(mu_);
      while (true) {
        if (finished()) {
          lock.unlock();
          if (!outstanding.empty()) lose(source, outstanding, "");
          return;
        }
        if (outstanding.size() < kPartsInFlight) picked = pick(source);
        if (!picked.empty() || !outstanding.empty()) break;
        cv_.wait_for(lock, kRecheck);
      }
    }
    for (size_t part : picked) {
      Json request = plan_.request;
      request["offset"] = part * plan_.part_size;
      request["length"] = part_length(part);
      request["digests"] = false;
      outstanding.push_back(part);
      if (auto sent = client.send(request); !sent) {
        lose(source, outstanding, sent.error().message);
        return;
      }
    }
    const size_t part = outstanding.front();
    const auto asked = Clock::now();
    auto data = fetch_answer(client, part);
    if (!data) {
      lose(source, outstanding, data.error().message);
      return;
    }
    outstanding.erase(outstanding.begin());
    const bool good = plan_.digests.empty() || [&] {
      PartHasher hasher;
      hasher.feed(std::span<const char>(reinterpret_cast<const char*>(data->data()), data->size()));
      return hasher.finish().front() == plan_.digests[part];
    }();
    if (!good) {
      std::lock_guard lock(mu_);
      ++tallies_[source].bad_parts;
      refused(source, part, std::string(kDamaged));
      continue;
    }
    {
      std::lock_guard lock(mu_);
      const auto took = Clock::now() - asked;
      part_time_ = part_time_ == Clock::duration{} ? took : part_time_ + (took - part_time_) / 4;
    }
    delivered(source, part, std::move(*data));
  }
}

Outcome<std::vector<uint8_t>> PartFetcher::fetch_answer(ControlClient& client, size_t part) {
  const uint64_t offset = part * plan_.part_size;
  const uint64_t length = part_length(part);
  auto protocol = [&](std::string message) {
    return fail_with(Exit::kFailure, kCodeProtocol,
                     fmt::format("part {} from {}: {}", part, client.server_text(), message));
  };
  Json header = BKP_TRY(client.next_response());
  auto field = [&](const char* key) -> std::optional<uint64_t> {
    auto it = header.find(key);
    if (it == header.end() || !it->is_number_unsigned()) return std::nullopt;
    return it->get<uint64_t>();
  };
  if (field("bytes") != plan_.bytes || field("offset") != offset || field("length") != length) {
    return protocol(fmt::format("the answer is not bytes {}..{} of the {} byte archive", offset,
                                offset + length, plan_.bytes));
  }
  std::vector<uint8_t> data;
  data.reserve(length);
  while (data.size() < length) {
    wire::Frame frame = BKP_TRY(client.next_frame());
    if (frame.type != wire::MsgType::kData) {
      return protocol(fmt::format("expected Data, got {} after {} of {} bytes",
                                  wire::type_name(frame.type), data.size(), length));
    }
    if (frame.payload.size() > length - data.size()) {
      return protocol(fmt::format("more than the {} bytes asked for", length));
    }
    data.insert(data.end(), frame.payload.begin(), frame.payload.end());
  }
  Json done = BKP_TRY(client.next_response());
  if (auto it = done.find("done"); it == done.end() || !it->is_boolean() || !it->get<bool>()) {
    return protocol("the final Response lacks \"done\": true");
  }
  return data;
}

void PartFetcher::delivered(size_t source, size_t part, std::vector<uint8_t> data) {
  {
    std::lock_guard lock(mu_);
    Part& p = parts_[part];
    --p.holders;
    if (p.state == State::kDone || stopping_) return;  // another source was faster (hedged)
    p.state = State::kDone;
    p.data = std::move(data);
    ++done_;
    received_ += part_length(part);
    ++tallies_[source].parts;
    tallies_[source].bytes += part_length(part);
    meter_.update({received_, plan_.bytes - received_, 0, 0});
  }
  cv_.notify_all();
}

void PartFetcher::refused(size_t source, size_t part, std::string why) {
  Part& p = parts_[part];
  --p.holders;
  p.failed[source] = true;
  if (p.state == State::kInFlight && p.holders == 0) p.state = State::kWaiting;
  if (!why.empty()) {
    log::warn("part {} of snapshot {} from {}: {}; fetching it elsewhere", part,
              plan_.snapshot_id, sources_[source].name, why);
  }
  check_supply();
  cv_.notify_all();
}

void PartFetcher::lose(size_t source, const std::vector<size_t>& outstanding, std::string why) {
  std::lock_guard lock(mu_);
  if (!why.empty() && !stopping_ && !failure_) {
    tallies_[source].lost = why;
    log::warn("{} stopped serving: {}; its parts go to the other sources",
              sources_[source].name, why);
  }
  for (size_t part : outstanding) refused(source, part, "");
  // Nothing more is asked of it: every part counts as failed there.
  for (auto& p : parts_) p.failed[source] = true;
  check_supply();
  cv_.notify_all();
}

void PartFetcher::check_supply() {
  if (failure_ || stopping_) return;
  for (size_t i = next_; i < parts_.size(); ++i) {
    const Part& p = parts_[i];
    if (p.state != State::kWaiting) continue;
    if (std::find(p.failed.begin(), p.failed.end(), false) != p.failed.end()) continue;
    std::string what;
    bool damaged = false;
    for (const SourceTally& t : tallies_) {
      damaged = damaged || t.lost.empty();
      what += fmt::format("{}{}: {}", what.empty() ? "" : "; ", t.name,
                          t.lost.empty() ? kDamaged : t.lost);
    }
    failure_ = Failure{Exit::kFailure, damaged ? "damaged" : std::string(kCodeProtocol),
                       fmt::format("part {} of snapshot {} could not be had from any source ({}); "
                                   "nothing of that part was restored",
                                   i, plan_.snapshot_id, what)};
    meter_.interrupt();
    return;
  }
}

Result<std::span<const uint8_t>> PartFetcher::next() {
  std::unique_lock lock(mu_);
  if (next_ == parts_.size()) return std::span<const uint8_t>();
  cv_.wait(lock, [&] { return failure_ || parts_[next_].state == State::kDone; });
  if (failure_) return tl::unexpected(Error{EIO, failure_->message});
  current_ = std::move(parts_[next_].data);
  ++next_;
  lock.unlock();
  cv_.notify_all();  // the window moved
  return std::span<const uint8_t>(current_);
}

}  // namespace bkp::tools
