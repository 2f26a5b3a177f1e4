#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* The gateway opens a connection to a module per concurrent request, so a
 * burst of thousands arrives at once; a Unix socket refuses a connection
 * (EAGAIN, no retry as with TCP) once its backlog is full. As long as the
 * system allows: the kernel lowers it to net.core.somaxconn. */
#define BACKLOG 65535

static int split_host_port(const char *spec, char *host, size_t hostlen, const char **port)
{
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || colon[1] == '\0')
        return -1;
    size_t hl = (size_t)(colon - spec);
    if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') {
        spec++;
        hl -= 2;
    } else if (memchr(spec, ':', hl) != NULL) {
        return -1; /* a v6 address needs brackets */
    }
    if (hl >= hostlen)
        return -1;
    memcpy(host, spec, hl);
    host[hl] = '\0';
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    if (strlen(colon + 1) > 5 || atoi(colon + 1) > 65535)
        return -1;
    *port = colon + 1;
    return 0;
}

int mg__check_host_port(const char *spec)
{
    char host[256];
    const char *port;
    return split_host_port(spec, host, sizeof(host), &port);
}

static int make_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int listen_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (path[0] == '\0') {
        snprintf(err, errlen, "listen address unix: needs a path");
        return -1;
    }
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "socket path %s is %zu bytes, longer than the system's limit of %zu",
                 path, strlen(path), sizeof(sa.sun_path) - 1);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        /* A stale socket of an earlier run is replaced; one a live server
         * still accepts on is not taken from it (its clients would be
         * cut off, and its path deleted when either of us exits). */
        /* Non-blocking: a live server whose listen queue is full refuses
         * at once (EAGAIN) instead of holding us; live all the same. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        bool live = probe >= 0 && (connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0 ||
                                   errno == EAGAIN);
        if (probe >= 0)
            close(probe);
        if (live) {
            snprintf(err, errlen, "listen on unix:%s: %s (a server is accepting on it)", path,
                     strerror(EADDRINUSE));
            close(fd);
            return -1;
        }
        unlink(path);
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, BACKLOG) != 0) {
        snprintf(err, errlen, "listen on unix:%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int mg__listen(const char *spec, char *err, size_t errlen)
{
    if (strncmp(spec, "unix:", 5) == 0)
        return listen_unix(spec + 5, err, errlen);
    char host[256];
    const char *port;
    if (split_host_port(spec, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "listen address \"%s\" is not HOST:PORT or unix:PATH", spec);
        return -1;
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
    int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "listen address %s: %s", spec, gai_strerror(gai));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    /* SO_REUSEADDR only: SO_REUSEPORT would let a stale server share the
     * port and silently take half the connections. */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, BACKLOG) != 0 ||
        make_nonblocking(fd) != 0) {
        snprintf(err, errlen, "listen on %s: %s", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

int mg__listen_address(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    char host[INET6_ADDRSTRLEN];
    int n;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        n = snprintf(buf, len, "%s:%u", host, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        n = snprintf(buf, len, "[%s]:%u", host, ntohs(a->sin6_port));
    } else if (ss.ss_family == AF_UNIX) {
        n = snprintf(buf, len, "unix:%s", ((struct sockaddr_un *)&ss)->sun_path);
    } else {
        return -1;
    }
    return n < 0 || (size_t)n >= len ? -1 : 0;
}
