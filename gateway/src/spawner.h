/*
 * Starting a child process the way libuv and s6 do: by exec, in its own
 * process group, with default signal dispositions and an empty signal
 * mask, stdin on /dev/null, and only the descriptors we name inherited
 * (every other one is closed in the child, close-on-exec or not).
 */
#ifndef GW_SPAWN_H
#define GW_SPAWN_H

#include <sys/types.h>

struct gw_spawn {
    const char *path;       /* the executable */
    char *const *argv;
    char *const *envp;
    int out_fd;             /* becomes the child's stdout and stderr */
    int notify_fd;          /* becomes the child's fd 3, -1 for none */
};

/* Returns 0 and the child's pid, or -errno (an exec failure included:
 * posix_spawn reports it, so there is no half-started child). */
int gw_spawn(const struct gw_spawn *s, pid_t *pid);

#endif
