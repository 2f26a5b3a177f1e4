/*
 * A gateway killed with SIGKILL cannot remove its socket directory, and its
 * modules die with it (PR_SET_PDEATHSIG) without removing their sockets.
 * The directory's name carries the pid of the gateway that made it, so the
 * next gateway to start can tell a directory whose owner is gone and
 * remove it, as supervisord removes a stale socket file before binding.
 */
#include "rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "logfile.h"

#define PREFIX "modgate-"

/* The pid in "modgate-PID-XXXXXX", or 0 for any other name. */
static pid_t owner_pid(const char *name)
{
    if (strncmp(name, PREFIX, strlen(PREFIX)) != 0)
        return 0;
    const char *p = name + strlen(PREFIX);
    char *end;
    errno = 0;
    long pid = strtol(p, &end, 10);
    if (errno != 0 || end == p || *end != '-' || pid <= 0 || strlen(end + 1) != 6)
        return 0;
    return (pid_t)pid;
}

static bool gone(pid_t pid)
{
    return kill(pid, 0) != 0 && errno == ESRCH;
}

/* A socket directory as a gateway makes it: a directory of this user that
 * only this user can enter (mode 0700). */
static bool private_dir(const struct stat *st)
{
    return S_ISDIR(st->st_mode) && st->st_uid == geteuid() && (st->st_mode & 07777) == 0700;
}

/* Removes the sockets in the directory, then the directory if that
 * emptied it. */
static bool remove_dir_of_sockets(int parent, const char *name)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    if (fstat(fd, &st) != 0 || !private_dir(&st)) {
        close(fd);
        return false;
    }
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return false;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode))
            unlinkat(fd, e->d_name, 0);
    }
    closedir(d);
    return unlinkat(parent, name, AT_REMOVEDIR) == 0;
}

unsigned gw_run_dir_remove_stale(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    unsigned removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        pid_t pid = owner_pid(e->d_name);
        if (pid == 0 || pid == getpid() || !gone(pid))
            continue;
        if (remove_dir_of_sockets(dirfd(d), e->d_name)) {
            gw_log(GW_INFO, "removed %s/%s, left by gateway %d, which is gone", dir, e->d_name,
                   (int)pid);
            removed++;
        }
    }
    closedir(d);
    return removed;
}

char *gw_run_dir_create(const char *dir, char *err, size_t errlen)
{
    gw_run_dir_remove_stale(dir);
    size_t len = strlen(dir) + sizeof("/" PREFIX "-XXXXXX") + 3 * sizeof(pid_t);
    char *path = malloc(len);
    if (path == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(path, len, "%s/" PREFIX "%d-XXXXXX", dir, (int)getpid());
    /* mkdtemp makes it 0700: only the gateway's user reaches the sockets. */
    if (mkdtemp(path) == NULL) {
        snprintf(err, errlen, "cannot create the socket directory %s: %s", path, strerror(errno));
        free(path);
        return NULL;
    }
    return path;
}

int gw_run_dir_ensure(const char *path)
{
    int made = 0;
    if (mkdir(path, 0700) == 0)
        made = 1;
    else if (errno != EEXIST)
        return -errno;
    /* Whoever made it, it must be our own private directory: otherwise
     * someone else could reach, or stand in for, the modules' sockets. */
    struct stat st;
    if (lstat(path, &st) != 0)
        return -errno;
    if (!private_dir(&st))
        return -EPERM;
    return made;
}
