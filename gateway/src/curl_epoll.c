#include "curl_epoll.h"

#include <sys/epoll.h>

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
