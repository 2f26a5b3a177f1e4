/* The gateway's socket directory: where the modules' Unix sockets live,
 * 0700 so that only the gateway's user can reach a module directly. */
#ifndef GW_RUNDIR_H
#define GW_RUNDIR_H

#include <stddef.h>

/* Creates DIR/modgate-PID-XXXXXX (0700) and returns its path (caller
 * frees), or NULL with a message in err. First removes the directories
 * that gateways of this user left in DIR when they were killed. */
char *gw_run_dir_create(const char *dir, char *err, size_t errlen);

/* Makes sure `path` (made by gw_run_dir_create) is still there, ours and
 * 0700: tmp cleaners (systemd-tmpfiles, tmpreaper) remove old entries
 * under /tmp. Made again if it is gone: 1; 0 if it was there; -errno if
 * it cannot be made, or -EPERM if what is there now is not ours. */
int gw_run_dir_ensure(const char *path);

/* Removes the socket directories in `dir` whose gateway is gone: owned by
 * this user, mode 0700, named modgate-PID-*, PID not running. Only their
 * sockets are removed, so a directory holding anything else stays.
 * Returns how many were removed. */
unsigned gw_run_dir_remove_stale(const char *dir);

#endif
