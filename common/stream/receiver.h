// Receiver: the receiving end of one stream — applies its frames to a tree (through an Applier)
// and keeps, durably, how far it got, so every reconnect resumes exactly there (sender.h).
//
// Two files in the receiver's state directory:
//   state     "key value" lines, rewritten atomically (fdatasync) at each commit, after the
//             tree itself was synced: instance (the sender's stream), committed (the last batch
//             applied durably), syncing (1 while a baseline is unfinished), plus the owner's own
//             counters (counters()).
//   position  56 bytes, overwritten after every applied Op frame and before the first Write
//             frame of a batch: instance, batch, Op frames applied of that batch, flags
//             (syncing; Write frames of the batch reached the tree; an exchange under way; the
//             batch committed; a clean stop), the inodes of an exchange's two names, and the
//             boot of the machine that wrote it. It survives a crash of the process (the page
//             cache keeps it) and says which operations of an unfinished batch the tree already
//             has, so none is applied twice. After a crash between applying an operation and
//             noting it, that one operation is sent again; each operation tolerates exactly its
//             own earlier effect (applier.h), except RENAME_EXCHANGE (done twice, it swaps
//             back): its inodes are noted before it, and a resent exchange that finds them
//             swapped is not applied again. The Write flag only serves at_commit(): data is
//             idempotent, so resuming never needs it, but a tree holding part of a batch's data
//             is not exactly its last commit.
//             A restart of the machine keeps only what was flushed, of the tree and of this
//             record alike, so the record is flushed where it must be believed afterwards: with
//             the tree at each commit (written just before the tree's sync), at a clean stop
//             (after it), and before the first change of a batch reaches the tree (one
//             fdatasync per batch, so that a batch's changes are never on disk under a record
//             saying the tree is at its commit). A record of an earlier boot that is neither
//             the commit `state` names nor a clean stop's is not believed: the receiver asks
//             for a baseline, and forgets the source ctimes (applier.h), which may vouch for
//             bytes that were lost, so that baseline compares every file's content.
// A baseline's list of named entries lives in memory only: a receiver that restarts inside a
// baseline asks for a new one.
//
// Not thread-safe: the owner serializes calls (backupd holds the volume's mutex).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "common/changes/applier.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "common/wire/messages.h"

namespace bkp::stream {

class Receiver {
 public:
  // Reads (or starts) the record in dir, which must exist. applier must outlive the Receiver.
  static Result<std::unique_ptr<Receiver>> open(const std::string& dir, changes::Applier& applier);
  // A clean stop: syncs the tree and notes so in `position`.
  ~Receiver();
  // Makes the destructor a plain close, as if the process were killed: no sync, nothing noted
  // (tests of crashes, which need the descriptors back).
  void abandon() { position_fd_.reset(); }
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  // Where this receiver stands for a sender whose stream is `instance`: a stream it does not
  // know (or instance 0) gets need_baseline and numbering from 1, and becomes the recorded
  // stream at its first commit.
  wire::Position position(uint64_t instance);
  // Apply one frame of the batch in progress. After a position() that asked for a baseline,
  // anything before its kSyncBegin (an Op, a Write, a Commit) fails with EPROTO: a sender that
  // ignored the request would otherwise leave the tree incomplete under a committed stream.
  Result<void> apply(const wire::Op& op);
  Result<void> write(const wire::Write& w);
  // Commit{batch}: must be the next batch (EPROTO otherwise); syncs the tree, then the record.
  // Returns the batch number to acknowledge.
  Result<uint64_t> commit(const wire::Commit& c);

  // The owner is about to change the tree outside the stream (backupd seeding a mirror from a
  // snapshot): noted durably, as before a batch's first change, so that a restart of the
  // machine before the next commit asks for a baseline that compares every file.
  Result<void> before_outside_change() { return note_change_coming(); }

  // The owner's counters, saved with every commit and by save().
  std::map<std::string, uint64_t>& counters() { return counters_; }
  // Rewrites `state` durably now (the owner changed its counters).
  Result<void> save();

  uint64_t instance() const { return instance_; }
  uint64_t committed() const { return committed_; }
  // True from the first Op or Write after a commit until the next commit.
  bool in_batch() const { return in_batch_; }
  // True if the tree held exactly the last commit when this receiver was opened (no frame of a
  // later batch in it, no baseline unfinished or due) and nothing was applied since; after a
  // restart of the machine too (`position` above).
  bool at_commit() const { return at_commit_; }

 private:
  // An exchange noted as under way: Op frame `applied + 1` swaps the entries whose inodes are
  // path_ino (at its path) and target_ino (at its target).
  struct Exchanging {
    uint64_t applied = 0;
    uint64_t path_ino = 0;
    uint64_t target_ino = 0;
  };

  Receiver(std::string dir, changes::Applier& applier) : dir_(std::move(dir)), applier_(applier) {}
  // Notes where the batch stands, with `flags` (kCommitted) and an exchange about to
  // be applied, if given. Not flushed.
  Result<void> note_position(uint64_t flags = 0, const Exchanging* exchanging = nullptr);
  Result<void> sync_position();
  // Notes where the batch stands before a change reaches the tree, flushed if this is the
  // first change since the last commit (or since open); fails if it cannot be.
  Result<void> note_change_coming();

  const std::string dir_;
  changes::Applier& applier_;
  UniqueFd position_fd_;
  std::map<std::string, uint64_t> counters_;
  uint64_t instance_ = 0;   // recorded stream (0: none yet)
  uint64_t committed_ = 0;  // of instance_
  uint64_t session_instance_ = 0;   // the stream being received (differs before its 1st commit)
  uint64_t session_committed_ = 0;
  uint64_t applied_ = 0;     // Op frames of batch session_committed_ + 1 applied
  bool written_ = false;     // Write frames of that batch applied (noted in `position`)
  // Only a baseline can repair the tree: restarted inside one (its named entries are gone), or
  // another stream applied part of a batch to it. Cleared by the next kSyncBegin.
  bool need_baseline_ = false;
  // The last position() asked for a baseline and no kSyncBegin has come since.
  bool baseline_due_ = false;
  bool in_batch_ = false;
  bool at_commit_ = false;
  // What `position` said was under way when this receiver was opened: checked by the first
  // operation applied after that.
  std::optional<Exchanging> exchanging_;
  uint64_t boot_ = 0;  // boot_id()
  // `position` on disk says, flushed, that the tree may hold more than the last commit.
  bool begun_durably_ = false;
};

}  // namespace bkp::stream
