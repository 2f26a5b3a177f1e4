/*
 * Glue between a curl multi handle in socket-action mode and an epoll set,
 * shared by the event loops and the prober.
 */
#ifndef GW_CURL_EPOLL_H
#define GW_CURL_EPOLL_H

#include <curl/curl.h>
#include <stdint.h>

/* For CURLMOPT_SOCKETFUNCTION: puts curl's interest `what` in socket `s`
 * into `epfd` under `tag`, and tells curl it is known (socketp). 0 or -1. */
int gw_curl_epoll_socket(CURLM *multi, int epfd, curl_socket_t s, int what, void *socketp,
                         uint64_t tag);

/* The CURL_CSELECT_* flags for epoll events. */
int gw_curl_epoll_flags(uint32_t events);

#endif
