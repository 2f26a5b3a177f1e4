/*
 * posix_spawn does the fork+exec with only async-signal-safe steps in the
 * child (glibc uses clone(CLONE_VM|CLONE_VFORK)) and returns exec's errno
 * to the parent, which is what a hand-written fork+exec would need a
 * close-on-exec pipe for.
 */
#include "spawner.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

/* Moves fd above 3 so that the dup2 steps cannot overwrite each other. */
static int lift(int fd, int *owned)
{
    *owned = -1;
    if (fd < 0 || fd > 3)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    if (nfd >= 0)
        *owned = nfd;
    return nfd;
}

int gw_spawn(const struct gw_spawn *s, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int out_owned, notify_owned;
    int out = lift(s->out_fd, &out_owned);
    int notify = lift(s->notify_fd, &notify_owned);
    int rc = 0;
    if ((s->out_fd >= 0 && out < 0) || (s->notify_fd >= 0 && notify < 0)) {
        rc = errno;
        goto close_lifted;
    }
    if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
        goto close_lifted;
    if ((rc = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        goto close_lifted;
    }
    rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (rc == 0 && out >= 0)
        rc = posix_spawn_file_actions_adddup2(&fa, out, 1);
    if (rc == 0 && out >= 0)
        rc = posix_spawn_file_actions_adddup2(&fa, out, 2);
    if (rc == 0 && notify >= 0)
        rc = posix_spawn_file_actions_adddup2(&fa, notify, 3);
    /* Whatever else is open goes: our descriptors are close-on-exec, but
     * libraries' (curl's sockets) and our own parent's may not be. */
    if (rc == 0)
        rc = posix_spawn_file_actions_addclosefrom_np(&fa, notify >= 0 ? 4 : 3);

    /* SIGHUP (reopen your log) starts blocked: it may come at any time,
     * also before the module's runtime is up to take it (its default
     * action would kill a module that is starting); it waits, pending,
     * for the runtime's sigwait. Every other signal starts as new. */
    sigset_t hup, all;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    if (rc == 0)
        rc = posix_spawnattr_setsigmask(&attr, &hup);
    if (rc == 0)
        rc = posix_spawnattr_setsigdefault(&attr, &all);
    if (rc == 0)
        rc = posix_spawnattr_setpgroup(&attr, 0);
    if (rc == 0)
        rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                                 POSIX_SPAWN_SETPGROUP);
    if (rc == 0)
        rc = posix_spawn(pid, s->path, &fa, &attr, s->argv, s->envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
close_lifted:
    if (out_owned >= 0)
        close(out_owned);
    if (notify_owned >= 0)
        close(notify_owned);
    return -rc;
}
