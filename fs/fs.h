// Fs: the FUSE low-level operations of backupfs — a passthrough to the real directory that
// records every change into the volume's ChangeLog before replying.
//
// Contract of every callback: noexcept, replies exactly once, never holds a lock across a
// fuse_reply_* call. Namespace operations hold the log's namespace lock shared from the real
// syscall until the change is recorded (so a baseline scan sees the tree at one point of the
// log), and compute paths and record under the inode table's lock (so a recorded path is the
// path at that point of the log, whatever renames run concurrently). Nothing here does network
// I/O; the node session ships what is recorded.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <optional>
#include <string>

#include "common/result.h"
#include "common/wire/messages.h"
#include "common/changes/change_log.h"
#include "fs/inode_table.h"
#include "fs/kernel_channel.h"
#include "fs/orphans.h"
#include "fs/takeover.h"

namespace bkp::fs {

// Entries and attributes may be cached by the kernel this long: every change goes through us,
// and the kernel invalidates what it changes itself.
constexpr double kCacheTimeout = 86400.0;

// File capabilities: the kernel drops them on write and chown, as it drops set-id bits.
constexpr char kCapabilityXattr[] = "security.capability";

class Fs {
 public:
  // files: the shared fh table (takeover.h); generation: this worker's (SessionStore); orphans:
  // the open files with no name left, told of every open file fh the table holds already.
  Fs(InodeTable& table, changes::ChangeLog& log, std::unique_ptr<SharedRecords> files,
     uint32_t generation, Orphans& orphans);

  // The operation table; userdata passed to fuse_session_new must be this Fs.
  static const fuse_lowlevel_ops& ops();
  // The transport (this Fs's KernelChannel) for fuse_session_custom_io on a session whose
  // userdata is this Fs.
  static const fuse_custom_io& custom_io();
  KernelChannel& channel() { return channel_; }
  // BACKUPFS_FAILPOINT (namespace_ops.cc): SIGKILL now if name is listed and the request being
  // served is not a resend.
  static void die_after_if_asked(const char* name);
  struct DirHandle;  // an open directory's stream (dir_ops.cc)

  void init(fuse_conn_info* conn) noexcept;
  // entry_ops.cc
  void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
  void forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) noexcept;
  void forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) noexcept;
  void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
  void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
               fuse_file_info* fi) noexcept;
  void readlink(fuse_req_t req, fuse_ino_t ino) noexcept;
  void statfs(fuse_req_t req, fuse_ino_t ino) noexcept;
  // namespace_ops.cc
  void mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) noexcept;
  void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) noexcept;
  void symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) noexcept;
  void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) noexcept;
  void unlink(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
  void rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
  int remove_entry(fuse_ino_t parent, const char* name, int flags, wire::OpKind kind) noexcept;
  void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags) noexcept;
  // file_ops.cc
  void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) noexcept;
  void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
  void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept;
  void write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in_buf, off_t off,
                 fuse_file_info* fi) noexcept;
  void copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                       fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                       int flags) noexcept;
  void flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
  void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
  void fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) noexcept;
  void fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                 fuse_file_info* fi) noexcept;
  void lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) noexcept;
  // dir_ops.cc
  void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
  void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
               bool plus) noexcept;
  void releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
  void fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) noexcept;
  // xattr_ops.cc
  void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) noexcept;
  void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept;
  void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept;
  void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) noexcept;

 private:
  // A node just created (as root) in a directory with attributes dir_st: give it to the
  // caller. fd/name/at_flags name the node as for fchownat. Updates st.
  int give_to_caller(int fd, const char* name, int at_flags, const fuse_ctx& ctx,
                     const struct stat& dir_st, struct stat& st);
  // mkdir, mknod and symlink: create, give to the caller, record, fill the entry.
  int make_node(fuse_req_t req, Inode& dir, const char* name, mode_t mode, dev_t rdev,
                const char* link, fuse_entry_param* e);
  // Opens inode for fi->flags and stores the descriptor in fi->fh; kill: the kernel asked to
  // drop set-id bits if the open truncates (kill_requested of the OPEN or CREATE).
  int open_file(fuse_req_t req, Inode& inode, fuse_file_info* fi, bool kill);
  // Looks up name in dir (fstatat + name_to_handle_at) and fills the entry; counts a lookup.
  int lookup_entry(Inode& dir, int dir_fd, const char* name, fuse_entry_param* e);
  // Fills e for an inode we already hold in the table (one lookup counted).
  void fill_entry(Inode& inode, const struct stat& st, fuse_entry_param* e);

  // kill_privileges.cc
  // Whether the request being served (opcode on node ino) carries the kernel's kill flag.
  bool kill_requested(uint32_t opcode, fuse_ino_t ino) const;
  // What the VFS does when a caller without CAP_FSETID writes or truncates a regular file
  // (KillCause::kWrite), and when anyone changes the owner of a non-directory (kChown): clear
  // S_ISUID, and S_ISGID if group-executable or the caller is outside the file's group; drop
  // security.capability (unless the inode is known to have none, Inode::no_capability). fd is
  // any descriptor of inode (O_PATH too). Records the xattr removal; sets *mode_changed if it
  // changed the mode, which the caller records (attrs). Returns 0 or an errno. Non-regular
  // inodes need the namespace lock held shared.
  enum class KillCause { kWrite, kChown };
  int kill_privileges(fuse_req_t req, Inode& inode, int fd, KillCause cause, bool* mode_changed);
  // kill_privileges(kWrite) for a flagged WRITE or truncating OPEN/CREATE: records the mode
  // change and tells the kernel its cached attributes are stale. fd: the open file.
  int kill_for_write(fuse_req_t req, Inode& inode, int fd);
  // SETATTR's own kill requests: a truncate the kernel flagged, and a SETATTR of no attribute at
  // all from a caller other than root, which is what the kernel sends under KILLPRIV_V2 when it
  // removes privileges itself (before copy_file_range or fallocate: it strips the mode it
  // computed and leaves the rest to us). Chown's is applied inside apply_setattr.
  // fh: the open file's descriptor if the kernel named one, else -1.
  int kill_for_setattr(fuse_req_t req, Inode& inode, fuse_ino_t ino, int valid, int fh,
                       bool* mode_changed);
  // Before a backing write that no kill was asked for (a caller with CAP_FSETID, a page written
  // back from a mapping): the backing call drops the file's security.capability whoever makes
  // it, silently; removed and recorded here first instead, unless the inode is known to have
  // none. was_there: the caller saw one before a backing call that dropped it (a truncating
  // open): recorded although it is gone now. (A truncate, copy_file_range or fallocate needs
  // none: the kernel removes it through the mount first, a REMOVEXATTR we record.) fd: any
  // descriptor of it. 0 or an errno.
  int drop_capability(Inode& inode, int fd, bool was_there = false);

  // Open files (file_ops.cc, dir_ops.cc). An fh is an OpenFiles entry, so it keeps its meaning
  // for a successor; the descriptor or directory stream behind it is this worker's own.
  // Registers local (an fd or a DirHandle*) of inode as fi->fh. 0 or an errno.
  int add_open(fuse_file_info* fi, const Inode& inode, OpenKind kind, uint64_t local);
  // Frees a regular file's fh and closes its descriptor (release, an interrupted open).
  void release_file(const fuse_file_info* fi);
  // Before a request that may take the last name of the known entry (dir, name): its node and a
  // descriptor of it if it is an open regular file, for Orphans::hold_if_nameless after.
  std::optional<std::pair<uint64_t, UniqueFd>> grab_if_open(Inode& dir, int dir_fd,
                                                             const char* name);
  // The descriptor of an open regular file / the stream of an open directory, reopened by
  // handle on first use after a takeover.
  Result<int> file_fd(const fuse_file_info* fi);
  Result<DirHandle*> dir_handle(const fuse_file_info* fi);
  // OpenFiles' way to reopen a predecessor's fh.
  Result<uint64_t> reopen_open(uint64_t node, int flags, OpenKind kind);
  Result<uint64_t> reopen_dir(Inode& inode);
  // Frees the fh of an open whose reply found the request interrupted (no release will come).
  void close_interrupted(fuse_file_info* fi);

  // namespace_ops.cc: resent requests and the tests' failpoint.
  // Whether the request being served was resent and its syscall failed with the errno its own
  // earlier success would cause (err == expected).
  bool resent_and_done(int err, int expected) const;
  // linkat(fd, "", dir_fd, name), or 0 if a resent link finds it done. 0 or an errno.
  int link_entry(int fd, int dir_fd, const char* name) const;
  // setxattr(path, ...), or 0 if a resent XATTR_CREATE finds its value there (xattr_ops.cc).
  int set_xattr(const std::string& path, const char* name, std::string_view value, int flags);

  // Recording; the *_locked ones need an InodeTable::Lock.
  void record(wire::Op op);
  void record_write(const Inode& inode, uint64_t offset, uint64_t length);
  void record_truncate(const Inode& inode, uint64_t size);
  void record_attrs(const Inode& inode);
  void record_attr_locked(const std::string& path, const struct stat& st);
  // kAttr of inode by path (directory, symlink, special file); namespace lock held shared.
  void record_path_attr(Inode& inode, const struct stat& st);
  // An xattr op (kSetXattr, kRemoveXattr with name and value) on inode: by FileId for a regular
  // file, by path otherwise (namespace lock held shared).
  void record_xattr(Inode& inode, wire::Op op);

  InodeTable& table_;
  changes::ChangeLog& log_;
  KernelChannel channel_;
  OpenFiles files_;
  Orphans& orphans_;
};

// Volume-relative op with the stat fields filled: mode (permission bits), owner, times.
// "/proc/self/fd/N": the way to reach the object of an O_PATH descriptor with calls that take
// no descriptor (chmod, *xattr).
std::string proc_path(int fd);
// One-line description of an op for debug logs.
std::string describe(const wire::Op& op);

}  // namespace bkp::fs
