#include "logfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

const char *gw_log_path(void)
{
    return log_path;
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

void gw_log(enum gw_log_level level, const char *fmt, ...)
{
    static const char *const names[] = { "INFO", "WARN", "ERROR" };
    char ts[32];
    mg__timestamp(ts);
    struct mg_buf b;
    mg__buf_init(&b, 1u << 20);
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    if (msg == NULL || mg__buf_printf(&b, "%s %s %s\n", ts, names[level], msg) != 0) {
        free(msg);
        mg__buf_free(&b);
        return;
    }
    free(msg);
    if (log_fd >= 0)
        write_all(log_fd, b.data, b.len);
    if (log_fd < 0 || level >= GW_WARN)
        write_all(STDERR_FILENO, b.data, b.len);
    mg__buf_free(&b);
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
