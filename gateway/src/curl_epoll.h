/*
 * Glue between a curl multi handle in socket-action mode and an epoll set.
 *
 * gw_curl_epoll_socket is the plain form (the prober's: one connection per
 * probe). struct gw_curl_watch is the loops' form, for keep-alive
 * connections: curl stops watching a connection's socket after every
 * transfer and watches it again at the next one, which would cost an
 * epoll_ctl DEL and ADD per request. The watch leaves the socket in the set
 * while curl has no interest in it and removes it only if an event comes
 * (the module closed the idle connection) or curl closes it.
 */
#ifndef GW_CURL_EPOLL_H
#define GW_CURL_EPOLL_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

/* For CURLMOPT_SOCKETFUNCTION: puts curl's interest `what` in socket `s`
 * into `epfd` under `tag`, and tells curl it is known (socketp). 0 or -1. */
int gw_curl_epoll_socket(CURLM *multi, int epfd, curl_socket_t s, int what, void *socketp,
                         uint64_t tag);

/* The CURL_CSELECT_* flags for epoll events. */
int gw_curl_epoll_flags(uint32_t events);

struct gw_curl_watch {
    int epfd;
    uint8_t *state; /* per descriptor: what it is registered for, and whether curl wants it */
    size_t n;
};

/* For CURLMOPT_SOCKETFUNCTION. 0, or -1 with errno set. */
int gw_curl_watch_socket(struct gw_curl_watch *w, curl_socket_t s, int what, uint64_t tag);
/* An event came for curl socket `s`: true if curl is watching it (pass the
 * event on); false if not, and then `s` has been taken out of the set. */
bool gw_curl_watch_event(struct gw_curl_watch *w, curl_socket_t s);
void gw_curl_watch_free(struct gw_curl_watch *w);

/* Installs an open-socket callback on `easy` that creates curl's sockets
 * O_CLOEXEC (curl 7.88 does not) and, given a watch, tells it that the
 * descriptor number is a new socket. `w` may be NULL. */
void gw_curl_open_cloexec(CURL *easy, struct gw_curl_watch *w);

/* curl_multi_init, with the descriptors it opens (curl 7.88: the
 * socketpair behind curl_multi_wakeup) made close-on-exec. Only while no
 * other thread opens descriptors (startup). NULL on failure. */
CURLM *gw_curl_multi_new(void);

#endif
