#include "notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int sock = -1;
static struct sockaddr_un addr;
static socklen_t addrlen;
static uint64_t watchdog_ms;

bool gw_notify_init(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(addr.sun_path))
        return false;
    if (path[0] != '/' && path[0] != '@')
        return false;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    size_t len = strlen(path);
    memcpy(addr.sun_path, path, len);
    if (path[0] == '@')
        addr.sun_path[0] = '\0'; /* the abstract namespace */
    addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return false;
    const char *wd = getenv("WATCHDOG_USEC");
    const char *wpid = getenv("WATCHDOG_PID");
    if (wd != NULL && (wpid == NULL || atol(wpid) == (long)getpid())) {
        unsigned long long usec = strtoull(wd, NULL, 10);
        watchdog_ms = usec / 2000; /* ping twice per period, as systemd advises */
        if (usec > 0 && watchdog_ms == 0)
            watchdog_ms = 1;
    }
    return true;
}

int gw_notify(const char *fmt, ...)
{
    if (sock < 0)
        return 0;
    /* Whole, however many modules STATUS= lists (rare: no fixed buffer). */
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -ENOMEM;
    ssize_t w = sendto(sock, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&addr, addrlen);
    int rc = w < 0 ? -errno : 0;
    free(msg);
    return rc;
}

uint64_t gw_notify_watchdog_ms(void)
{
    return watchdog_ms;
}

void gw_notify_close(void)
{
    if (sock >= 0)
        close(sock);
    sock = -1;
}
