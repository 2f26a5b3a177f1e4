#include "curl_epoll.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

int gw_curl_epoll_socket(CURLM *multi, int epfd, curl_socket_t s, int what, void *socketp,
                         uint64_t tag)
{
    if (what == CURL_POLL_REMOVE) {
        /* The socket may be closed already, which removed it; ignore. */
        epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event ev = {
        .events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u),
        .data.u64 = tag,
    };
    /* A descriptor number curl reuses may still be registered (or not). */
    int op = socketp == NULL ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(epfd, op, s, &ev) != 0 &&
        epoll_ctl(epfd, op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) != 0)
        return -1;
    if (socketp == NULL)
        curl_multi_assign(multi, s, (void *)1);
    return 0;
}

int gw_curl_epoll_flags(uint32_t events)
{
    int flags = 0;
    if (events & EPOLLIN)
        flags |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        flags |= CURL_CSELECT_OUT;
    if (events & (EPOLLERR | EPOLLHUP))
        flags |= CURL_CSELECT_ERR;
    return flags;
}

/* gw_curl_watch state bits: the events the descriptor is registered for
 * (none: not in the set), and whether curl currently watches it. */
enum { W_IN = 1, W_OUT = 2, W_REGISTERED = 4, W_WANTED = 8 };

static int grow(struct gw_curl_watch *w, int fd)
{
    if ((size_t)fd < w->n)
        return 0;
    size_t n = w->n ? w->n : 1024;
    while (n <= (size_t)fd)
        n *= 2;
    uint8_t *grown = realloc(w->state, n);
    if (grown == NULL)
        return -1;
    memset(grown + w->n, 0, n - w->n);
    w->state = grown;
    w->n = n;
    return 0;
}

int gw_curl_watch_socket(struct gw_curl_watch *w, curl_socket_t s, int what, uint64_t tag)
{
    if (s < 0 || grow(w, s) != 0) {
        errno = s < 0 ? EBADF : ENOMEM;
        return -1;
    }
    uint8_t *st = &w->state[s];
    if (what == CURL_POLL_REMOVE) {
        *st &= (uint8_t)~W_WANTED; /* left in the set: see the header */
        return 0;
    }
    uint8_t want = (uint8_t)(((what & CURL_POLL_IN) ? W_IN : 0) | ((what & CURL_POLL_OUT) ? W_OUT : 0));
    if ((*st & W_REGISTERED) && (*st & (W_IN | W_OUT)) == want) {
        *st |= W_WANTED;
        return 0;
    }
    struct epoll_event ev = {
        .events = ((want & W_IN) ? EPOLLIN : 0u) | ((want & W_OUT) ? EPOLLOUT : 0u),
        .data.u64 = tag,
    };
    int op = (*st & W_REGISTERED) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(w->epfd, op, s, &ev) != 0 &&
        epoll_ctl(w->epfd, op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) != 0) {
        *st = 0;
        return -1;
    }
    *st = (uint8_t)(want | W_REGISTERED | W_WANTED);
    return 0;
}

bool gw_curl_watch_event(struct gw_curl_watch *w, curl_socket_t s)
{
    if (s < 0 || (size_t)s >= w->n)
        return true;
    uint8_t *st = &w->state[s];
    if (*st & W_WANTED)
        return true;
    /* An idle keep-alive connection stirred: the module closed it or wrote
     * out of turn. curl checks a connection before reusing it, so only the
     * level-triggered registration needs to go. */
    if (*st & W_REGISTERED)
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, s, NULL);
    *st = 0;
    return false;
}

static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    (void)purpose;
    struct gw_curl_watch *w = clientp;
    int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    /* Any state left for this number belonged to a socket that is closed
     * (which took it out of the epoll set). */
    if (w != NULL && (size_t)fd < w->n)
        w->state[fd] = 0;
    return fd;
}

void gw_curl_open_cloexec(CURL *easy, struct gw_curl_watch *w)
{
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, w);
}

/* The open descriptors, as a bitmap of `*n` bits (caller frees). */
static uint8_t *open_fds(size_t *n)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return NULL;
    size_t cap = 1024;
    uint8_t *bits = calloc(cap / 8, 1);
    struct dirent *e;
    while (bits != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        size_t fd = strtoul(e->d_name, NULL, 10);
        if ((int)fd == dirfd(d))
            continue; /* closed below, and then free for curl */
        if (fd >= cap) {
            size_t grown = cap;
            while (grown <= fd)
                grown *= 2;
            uint8_t *p = realloc(bits, grown / 8);
            if (p == NULL) {
                free(bits);
                bits = NULL;
                break;
            }
            memset(p + cap / 8, 0, (grown - cap) / 8);
            bits = p;
            cap = grown;
        }
        bits[fd / 8] |= (uint8_t)(1u << (fd % 8));
    }
    closedir(d);
    *n = cap;
    return bits;
}

CURLM *gw_curl_multi_new(void)
{
    size_t nbefore = 0, nafter = 0;
    uint8_t *before = open_fds(&nbefore);
    CURLM *m = curl_multi_init();
    uint8_t *after = m != NULL && before != NULL ? open_fds(&nafter) : NULL;
    for (size_t fd = 3; after != NULL && fd < nafter; fd++) {
        bool was = fd < nbefore && (before[fd / 8] & (1u << (fd % 8)));
        if ((after[fd / 8] & (1u << (fd % 8))) && !was) {
            int flags = fcntl((int)fd, F_GETFD);
            if (flags >= 0)
                fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC);
        }
    }
    free(before);
    free(after);
    return m;
}

void gw_curl_watch_free(struct gw_curl_watch *w)
{
    free(w->state);
    w->state = NULL;
    w->n = 0;
}
