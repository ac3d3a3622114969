// The replica trees and which session writes each (trees.h).
//
// A slot per volume is made on first use and never removed (a few strings and a mutex, as many
// as the volumes backupd ever selected, like the Monitor's counters), so a session keeps a plain
// pointer to its selected slot and the map lock is held only to find one. Opening, closing and
// purging a tree happen under the tree's own lock, so a purge of one volume never stalls the
// sessions writing the others.
#include "replicator/trees.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include <fmt/format.h>

#include "common/files.h"
#include "common/log.h"
#include "common/path.h"

namespace bkp::replicator {

Trees::Slot& Trees::slot(const std::string& host, const std::string& path) {
  std::lock_guard lock(mu_);
  auto& s = slots_[host + ":" + path];
  if (!s) s = std::make_unique<Slot>(host, path);
  return *s;
}

Result<Trees::Selected> Trees::select(const std::string& host, const std::string& path,
                                      uint64_t session, const std::string& server) {
  Slot& s = slot(host, path);
  std::lock_guard lock(s.mu);
  if (!s.tree) s.tree = BKP_TRY(open(host, path, server));
  if (s.session != 0 && s.session != session) {
    log::warn("volume {}:{} moved: {} selected it while the session with {} still held it; the "
              "tree is {}'s now",
              host, path, server, s.server, server);
  } else if (s.tree->server != server) {
    log::info("volume {}:{} moved: {} selects it now (it was {})", host, path, server,
              s.tree->server);
  }
  s.session = session;
  s.server = server;
  if (s.tree->server != server) {  // a new stream into the tree: its own progress
    s.tree->server = server;
    s.tree->meter = meter(host, path, server);
    s.tree->progress = changes::ReceiveProgress(s.tree->meter);
  }
  return &s;
}

Result<Trees::Use> Trees::use(Selected selected, uint64_t session) {
  Slot& s = *selected;
  std::unique_lock lock(s.mu);
  // The session names the volume in front of these (session.cc).
  if (!s.tree) return fail(ESTALE, "it was dropped");
  if (s.session != session) {
    return fail(ESTALE, fmt::format("moved: the session with {} selected it since, so this "
                                    "session no longer writes it",
                                    s.server));
  }
  return Use(std::move(lock), s.tree.get());
}

void Trees::release(uint64_t session) {
  std::vector<Slot*> all;
  {
    std::lock_guard lock(mu_);
    for (auto& [key, s] : slots_) all.push_back(s.get());
  }
  for (Slot* s : all) {
    std::lock_guard lock(s->mu);
    if (s->session != session) continue;
    s->session = 0;
    if (s->tree) s->tree->progress.interrupted();
  }
}

std::shared_ptr<progress::Meter> Trees::meter(const std::string& host, const std::string& path,
                                              const std::string& server) {
  auto m = std::make_shared<progress::Meter>(fmt::format("{}:{} from {}", host, path, server));
  if (display_) display_->add(m);
  return m;
}

Result<std::unique_ptr<Tree>> Trees::open(const std::string& host, const std::string& path,
                                          const std::string& server) {
  const std::string key = host + ":" + path;
  // One directory per volume, its path escaped, so nested volumes (/srv and /srv/app) never
  // share a directory: a tree a peer writes can hold no other volume's tree.
  std::string tree = fmt::format("{}/{}", host, escape_path(path));
  std::string ids = fmt::format(".ids/{}/{}", host, escape_path(path));
  std::string state = fmt::format("{}/.state/{}/{}", root_, host, escape_path(path));
  auto open_error = [&](Error e) { return e.wrap("open replica of " + key); };
  struct stat st{};
  bool fresh = ::lstat((root_ + "/" + tree).c_str(), &st) != 0;
  auto applier = changes::Applier::open(root_, tree, ids);
  if (!applier) return tl::unexpected(open_error(applier.error()));
  BKP_TRY_VOID(make_dirs(state).map_error(open_error));
  if (fresh) {  // a position for a tree that is not there would vouch for nothing: start over
    for (const char* f : {"/state", "/position"}) {
      if (::unlink((state + f).c_str()) != 0 && errno != ENOENT) {
        return tl::unexpected(open_error(Error{errno, "reset " + state + f}));
      }
    }
  }
  auto receiver = stream::Receiver::open(state, **applier);
  if (!receiver) return tl::unexpected(open_error(receiver.error()));
  log::info("volume {} -> {}/{} (selected by {})", key, root_, tree, server);
  auto shown = meter(host, path, server);
  TreeCounters& counters = monitor_.tree(host, path);
  // `state` is rewritten at each commit only: its mtime is when the last batch became durable.
  const bool has_commit =
      (*receiver)->instance() != 0 && ::stat((state + "/state").c_str(), &st) == 0;
  counters.opened((*receiver)->committed(), has_commit ? wire::to_ns(st.st_mtim) / 1'000'000 : 0);
  return std::make_unique<Tree>(Tree{std::move(*applier), std::move(*receiver), server, shown,
                                     changes::ReceiveProgress(shown), &counters});
}

Result<void> Trees::drop(const wire::Drop& drop) {
  Slot& s = slot(drop.host, drop.path);
  std::lock_guard lock(s.mu);
  s.tree.reset();  // closes its descriptors
  s.session = 0;
  if (drop.purge == 0) return {};
  UniqueFd root(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return fail_errno("open " + root_);
  for (const char* base : {".state", ".ids", ".snapshots", ""}) {
    BKP_TRY_VOID(remove_beneath(root.get(), base, drop.host, drop.path));
  }
  return {};
}

Result<void> Trees::remove_beneath(int root_fd, const std::string& base, const std::string& host,
                                   const std::string& path) {
  const std::string host_rel = base.empty() ? host : base + "/" + host;
  auto parent = open_dir_beneath(root_fd, base, nullptr, Missing::kFail);
  auto host_dir = parent ? open_dir_beneath(parent->get(), host, nullptr, Missing::kFail)
                         : Result<UniqueFd>(tl::unexpected(parent.error()));
  if (!host_dir) {
    if (host_dir.error().code == ENOENT) return {};  // nothing of this host there
    return tl::unexpected(host_dir.error().wrap(root_));
  }
  BKP_TRY_VOID(remove_tree_at(host_dir->get(), escape_path(path),
                              fmt::format("{}/{}/{}", root_, host_rel, escape_path(path))));
  host_dir->reset();
  // The host's last volume here: its directory goes too (another volume keeps it: ENOTEMPTY).
  (void)::unlinkat(parent->get(), host.c_str(), AT_REMOVEDIR);
  return {};
}

}  // namespace bkp::replicator
