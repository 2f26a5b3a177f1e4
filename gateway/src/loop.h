/*
 * An event loop: one thread that owns one libmicrohttpd daemon (external
 * epoll mode) on the shared public listen socket and one curl multi handle
 * (socket-action mode). The gateway runs one loop per core. A request is
 * accepted, forwarded and answered on one loop, without locks, queues or
 * thread hand-offs; other threads talk to a loop only through its eventfd.
 */
#ifndef GW_LOOP_H
#define GW_LOOP_H

#include <curl/curl.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "curl_epoll.h"
#include "gw.h"
#include "list.h"
#include "util.h"

/* GW_CMD_PING: answer by advancing `heartbeat` (the watchdog's proof that
 * the loop still turns). */
enum { GW_CMD_DEATH = 1, GW_CMD_DRAIN = 2, GW_CMD_PING = 4 };

/* Idle curl handles kept per loop: enough for the usual concurrency, not a
 * burst's worth (each holds a receive buffer). */
#define GW_EASY_POOL_MAX 256

struct gw_loop {
    struct gateway *gw;
    unsigned index;
    pthread_t thread;
    bool started;
    int epfd;
    int wakefd;                 /* eventfd: other threads' commands */
    atomic_uint commands;       /* GW_CMD_* bits */
    atomic_uint_fast64_t heartbeat;
    struct MHD_Daemon *mhd;
    int mhd_fd;
    CURLM *multi;
    struct gw_curl_watch curl_watch; /* curl's sockets in epfd */
    CURLU *module_url;          /* every transfer's URL, parsed once */
    int64_t curl_deadline_ms;   /* -1: curl wants no timeout */
    bool resumed;               /* MHD must run before the loop blocks: a connection was resumed, or closed */

    struct gw_link lines;         /* connections whose first request line is due (client_conn.c) */
    struct gw_link kept_lines;    /* kept-alive connections awaiting their next request line */
    unsigned nconns, conn_share;  /* client connections; this loop's share of max_connections */
    uint64_t reclaim_check_ms;    /* when the listen queue may next be looked at (client_conn.c) */
    struct gw_link requests;      /* every live request */
    struct gw_link heads;         /* request line in, the rest of the head not yet; oldest first */
    struct gw_link hups;          /* clients that hung up before their request was whole */
    struct gw_link header_waiters;/* forwarded, no response headers yet; oldest first */
    struct gw_link idle_streams;  /* streaming responses, least recently active first */
    struct gw_link death_waiters; /* upstream broke; waiting to learn how the module died */
    struct gw_link unpauses;      /* transfers to unpause after MHD_run */
    size_t nrequests;
    size_t peak_requests;       /* since the last malloc_trim */
    uint64_t trimmed_at_ms;     /* when that was */

    void **by_fd;               /* client socket -> its current request */
    size_t nby_fd;

    CURL *easy_pool[GW_EASY_POOL_MAX]; /* idle easy handles, reused */
    size_t mhd_pool;               /* libmicrohttpd's memory per connection */
    size_t neasy;

    struct mg_buf access_buf;   /* access-log lines not yet written */
    uint64_t access_since_ms;   /* when the oldest of them was added */
    struct mg_ts_cache ts_cache;
    uint64_t rng[2];

    bool draining;
    uint64_t drain_deadline_ms;
};

/* Creates loop `index` on the gateway's listen socket; NULL with err set. */
struct gw_loop *gw_loop_new(struct gateway *gw, unsigned index, char *err, size_t errlen);
int gw_loop_start(struct gw_loop *l);
/* Asks the loop (from any thread) to act on GW_CMD_* bits. */
void gw_loop_command(struct gw_loop *l, unsigned cmd);
/* Stops accepting, finishes in-flight requests until `deadline_ms`
 * (monotonic), then ends the thread. */
void gw_loop_drain(struct gw_loop *l, uint64_t deadline_ms);
void gw_loop_join_free(struct gw_loop *l);

/* For proxy.c: flushes buffered access-log lines. */
void gw_loop_flush_access_log(struct gw_loop *l);
/* What a descriptor in the loop's epoll set is, besides libmicrohttpd's and
 * curl's own. */
enum gw_fd_kind {
    GW_FD_CLIENT_HUP = 4,  /* a client socket, watched only for hang-up */
    GW_FD_TUNNEL_MODULE,   /* a WebSocket tunnel's module socket */
    GW_FD_TUNNEL_CLIENT,   /* a WebSocket tunnel's client socket */
};

/* Runs curl's timeout action if it is due (a transfer just added asks for
 * one at once). */
void gw_loop_run_curl_timeout(struct gw_loop *l, uint64_t now);

/* Adds or changes `fd` in the loop's epoll set and maps it to `owner` (the
 * request). 0 or -errno. */
int gw_loop_watch(struct gw_loop *l, int fd, enum gw_fd_kind kind, uint32_t events, void *owner,
                  bool add);
/* Removes `fd` from the epoll set and the map. */
void gw_loop_unwatch(struct gw_loop *l, int fd);
/* The owner mapped to `fd`, or NULL. */
void *gw_loop_owner(struct gw_loop *l, int fd);
/* Maps `fd` to `owner` without touching the epoll set. */
void gw_loop_set_owner(struct gw_loop *l, int fd, void *owner);

#endif
