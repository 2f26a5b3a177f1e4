#include "logfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static int log_fd = -1;
static char *log_path;

int gw_open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return fd < 0 ? -errno : fd;
}

int gw_reopen_onto(int fd, const char *path)
{
    int nfd = gw_open_log(path);
    if (nfd < 0)
        return nfd;
    int rc = dup3(nfd, fd, O_CLOEXEC) < 0 ? -errno : 0;
    close(nfd);
    return rc;
}

int gw_reopen_if_moved(int fd, const char *path)
{
    struct stat at_path, open_one;
    if (fstat(fd, &open_one) != 0)
        return -errno;
    if (stat(path, &at_path) == 0 && at_path.st_dev == open_one.st_dev &&
        at_path.st_ino == open_one.st_ino)
        return 0;
    int rc = gw_reopen_onto(fd, path);
    return rc < 0 ? rc : 1;
}

int gw_log_open(const char *path)
{
    int fd = gw_open_log(path);
    if (fd < 0)
        return fd;
    char *p = strdup(path);
    if (p == NULL) {
        close(fd);
        return -ENOMEM;
    }
    free(log_path);
    log_path = p;
    if (log_fd >= 0)
        close(log_fd);
    log_fd = fd;
    return 0;
}

static void write_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

char *gw_log_vline(enum gw_log_level level, const char *who, size_t *len, const char *fmt,
                   va_list ap)
{
    static const char *const names[] = { "INFO", "WARN", "ERROR" };
    char ts[32], prefix[96];
    mg__timestamp(ts);
    int p = snprintf(prefix, sizeof(prefix), "%s %s %s%s", ts, names[level], who ? who : "",
                     who ? ": " : "");
    va_list measure;
    va_copy(measure, ap);
    int n = vsnprintf(NULL, 0, fmt, measure);
    va_end(measure);
    if (p < 0 || (size_t)p >= sizeof(prefix) || n < 0)
        return NULL;
    char *line = malloc((size_t)p + (size_t)n + 2);
    if (line == NULL)
        return NULL;
    memcpy(line, prefix, (size_t)p);
    vsnprintf(line + p, (size_t)n + 1, fmt, ap);
    line[p + n] = '\n';
    line[p + n + 1] = '\0';
    *len = (size_t)p + (size_t)n + 1;
    return line;
}

void gw_log(enum gw_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t len = 0;
    char *line = gw_log_vline(level, NULL, &len, fmt, ap);
    va_end(ap);
    if (line == NULL)
        return;
    if (log_fd >= 0)
        write_all(log_fd, line, len);
    if (log_fd < 0 || level >= GW_WARN)
        write_all(STDERR_FILENO, line, len);
    free(line);
}

void gw_log_raw(const char *text, size_t len)
{
    if (log_fd >= 0)
        write_all(log_fd, text, len);
    write_all(STDERR_FILENO, text, len);
}

int gw_log_reopen(void)
{
    return log_fd < 0 ? 0 : gw_reopen_onto(log_fd, log_path);
}

void gw_log_close(void)
{
    if (log_fd >= 0)
        close(log_fd);
    log_fd = -1;
    free(log_path);
    log_path = NULL;
}
