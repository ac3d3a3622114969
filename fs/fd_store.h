// systemd's file descriptor store, for the keeper (keeper.h) when systemd runs it: the keeper
// stores the FUSE connection, the volume directory, the listening socket and the takeover
// memfds there (FDSTORE=1, FileDescriptorStoreMax= in the unit), so a keeper that crashes or is
// restarted (`systemctl restart`, Restart=on-failure) gets them back (LISTEN_FDS/LISTEN_FDNAMES) and
// its worker takes the connection over instead of mounting again. systemd 252 (Debian 12) keeps
// the store while the unit restarts and empties it when the unit stops; the keeper tells the two
// apart by the type of the unit's job, asked over D-Bus, because both arrive as SIGTERM.
// Outside systemd (no $NOTIFY_SOCKET) nothing is stored and nothing comes back.
#pragma once

#include <map>
#include <string>

#include "common/result.h"

namespace bkp::fs {

// Whether systemd's notify socket is there to store descriptors in.
bool fd_store_available();
// The descriptors systemd passed back, by name (taken out of the environment; CLOEXEC set).
std::map<std::string, int> take_stored_fds();
// FDSTORE=1 of fd under name.
Result<void> store_fd(const std::string& name, int fd);
// FDSTOREREMOVE=1 of name.
void remove_stored_fd(const std::string& name);
// Whether the unit this process runs in is being restarted rather than stopped: its pending job
// is a restart (systemd's Unit.Job and Job.JobType properties). False when it cannot tell.
bool unit_restarting();

}  // namespace bkp::fs
