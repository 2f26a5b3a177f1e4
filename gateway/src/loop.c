/*
 * One event loop thread: epoll over libmicrohttpd's epoll fd, curl's
 * sockets and an eventfd for commands from other threads.
 *
 * The order inside one iteration matters (see MHD-CURL-FACTS.md):
 * libmicrohttpd without an internal thread has no way to wake itself when
 * a connection is resumed, so `resumed` makes the next epoll_wait return
 * at once; and a transfer added during MHD_run can complete inside the
 * curl call that follows it, so curl's messages are read after that call
 * too.
 */
#include "loop.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_conn.h"
#include "curl_epoll.h"
#include "headers.h"
#include "logfile.h"
#include "proxy.h"
#include "supervisor.h"

enum { TAG_MHD = 1, TAG_WAKE = 2, TAG_CURL = 3 }; /* then enum gw_fd_kind */

/* A loop that held this many requests at once trims the heap when idle. */
#define TRIM_AFTER_REQUESTS 32

/* How long an access-log line may wait in memory. */
#define ACCESS_LOG_DELAY_MS 100

#define TAG(kind, fd) (((uint64_t)(kind) << 32) | (uint32_t)(fd))

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy, (void)socketp;
    struct gw_loop *l = userp;
    if (gw_curl_watch_socket(&l->curl_watch, s, what, TAG(TAG_CURL, s)) != 0) {
        gw_log(GW_ERROR, "loop %u: epoll_ctl for a module connection: %s", l->index,
               strerror(errno));
        return -1;
    }
    return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct gw_loop *l = userp;
    l->curl_deadline_ms = timeout_ms < 0 ? -1 : (int64_t)(mg__now_ms() + (uint64_t)timeout_ms);
    return 0;
}

static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addr, (void)addrlen;
    struct gateway *gw = cls;
    return atomic_load_explicit(&gw->connections, memory_order_relaxed) <
                   gw->cfg.limits.max_connections
               ? MHD_YES
               : MHD_NO;
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    struct gw_loop *l = cls;
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        return;
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    /* Logged with its cause (499 in access.log, or the module's death). */
    bool routine = mg__mhd_message_is_routine(msg);
    gw_log(routine ? GW_INFO : GW_WARN, "loop %u: libmicrohttpd: %s", l->index, msg);
    free(msg);
}

struct gw_loop *gw_loop_new(struct gateway *gw, unsigned index, char *err, size_t errlen)
{
    struct gw_loop *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->gw = gw;
    l->index = index;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    l->curl_watch.epfd = l->epfd;
    l->curl_deadline_ms = -1;
    gw_list_init(&l->requests);
    gw_list_init(&l->heads);
    gw_list_init(&l->lines);
    gw_list_init(&l->kept_lines);
    gw_list_init(&l->hups);
    gw_list_init(&l->header_waiters);
    gw_list_init(&l->idle_streams);
    gw_list_init(&l->death_waiters);
    gw_list_init(&l->unpauses);
    mg__buf_init(&l->access_buf, 1u << 20);
    gw_request_id_seed(l->rng, l);
    if (l->epfd < 0 || l->wakefd < 0) {
        snprintf(err, errlen, "epoll/eventfd: %s", strerror(errno));
        goto fail;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG(TAG_WAKE, l->wakefd) };
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev) != 0) {
        snprintf(err, errlen, "epoll_ctl: %s", strerror(errno));
        goto fail;
    }

    l->multi = gw_curl_multi_new();
    l->module_url = curl_url();
    if (l->multi == NULL || l->module_url == NULL ||
        curl_url_set(l->module_url, CURLUPART_URL, "http://module/", 0) != CURLUE_OK) {
        snprintf(err, errlen, "curl_multi_init failed");
        goto fail;
    }
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
    /* Keep-alive connections to the modules, above the usual concurrency. */
    curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, 512L);

    const struct gw_config *c = &gw->cfg;
    /* The connection's memory pool holds the request head; libmicrohttpd
     * zeroes all of it for every keep-alive request, so it is no bigger
     * than max_header_bytes needs. */
    size_t pool = (size_t)c->limits.max_header_bytes + 16 * 1024;
    if (pool < 32 * 1024)
        pool = 32 * 1024;
    l->mhd_pool = pool;
    /* Each daemon takes its share of max_connections: at its share it
     * stops accepting, so that a client over the limit waits in the
     * listen queue until a connection closes (as at nginx's
     * worker_connections), rather than being reset; a connection its
     * client has closed counts until the loop has read that close, and a
     * reset would have hit clients that were never over the limit. A
     * loop at its share leaves the listen socket to the others, so the
     * loops fill unevenly without the total falling short; accept_policy
     * resets the few the rounded-up shares allow over the total. */
    unsigned share = (c->limits.max_connections + gw->nloops - 1) / gw->nloops;
    l->conn_share = share;
    l->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG, 0,
        accept_policy, gw,
        gw_proxy_on_request, l,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, l,
        MHD_OPTION_LISTEN_SOCKET, gw->listen_fd,
        MHD_OPTION_URI_LOG_CALLBACK, gw_proxy_on_uri, l,
        MHD_OPTION_NOTIFY_COMPLETED, gw_proxy_on_completed, l,
        MHD_OPTION_NOTIFY_CONNECTION, gw_proxy_on_connection, l,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
        MHD_OPTION_CONNECTION_LIMIT, share,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)GW_CLIENT_IDLE_S,
        MHD_OPTION_END);
    if (l->mhd == NULL) {
        snprintf(err, errlen, "cannot start the HTTP server of loop %u", index);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(l->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    l->mhd_fd = info ? info->epoll_fd : -1;
    ev.events = EPOLLIN;
    ev.data.u64 = TAG(TAG_MHD, l->mhd_fd);
    if (l->mhd_fd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->mhd_fd, &ev) != 0) {
        snprintf(err, errlen, "cannot watch the HTTP server of loop %u", index);
        goto fail;
    }
    return l;
fail:
    gw_loop_join_free(l);
    return NULL;
}

void gw_loop_command(struct gw_loop *l, unsigned cmd)
{
    atomic_fetch_or(&l->commands, cmd);
    uint64_t one = 1;
    ssize_t n = write(l->wakefd, &one, sizeof(one));
    (void)n; /* EAGAIN: the counter is saturated, so a wake-up is pending anyway */
}

void gw_loop_drain(struct gw_loop *l, uint64_t deadline_ms)
{
    l->drain_deadline_ms = deadline_ms;
    gw_loop_command(l, GW_CMD_DRAIN);
}

static int map_fd(struct gw_loop *l, int fd, void *owner)
{
    if (fd < 0)
        return -EBADF;
    if ((size_t)fd >= l->nby_fd) {
        size_t n = l->nby_fd ? l->nby_fd : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        void **grown = realloc(l->by_fd, n * sizeof(*grown));
        if (grown == NULL)
            return -ENOMEM;
        memset(grown + l->nby_fd, 0, (n - l->nby_fd) * sizeof(*grown));
        l->by_fd = grown;
        l->nby_fd = n;
    }
    l->by_fd[fd] = owner;
    return 0;
}

int gw_loop_watch(struct gw_loop *l, int fd, enum gw_fd_kind kind, uint32_t events, void *owner,
                  bool add)
{
    int rc = map_fd(l, fd, owner);
    if (rc != 0)
        return rc;
    struct epoll_event ev = { .events = events, .data.u64 = TAG(kind, fd) };
    return epoll_ctl(l->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) == 0 ? 0 : -errno;
}

void gw_loop_unwatch(struct gw_loop *l, int fd)
{
    if (fd < 0)
        return;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
    if ((size_t)fd < l->nby_fd)
        l->by_fd[fd] = NULL;
}

void *gw_loop_owner(struct gw_loop *l, int fd)
{
    return fd >= 0 && (size_t)fd < l->nby_fd ? l->by_fd[fd] : NULL;
}

void gw_loop_set_owner(struct gw_loop *l, int fd, void *owner)
{
    if (fd >= 0 && (size_t)fd < l->nby_fd)
        l->by_fd[fd] = owner;
}

void gw_loop_flush_access_log(struct gw_loop *l)
{
    size_t off = 0;
    while (off < l->access_buf.len) {
        ssize_t n = write(l->gw->access_fd, l->access_buf.data + off, l->access_buf.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    l->access_buf.len = 0;
}

void gw_loop_run_curl_timeout(struct gw_loop *l, uint64_t now)
{
    if (l->curl_deadline_ms >= 0 && (uint64_t)l->curl_deadline_ms <= now) {
        int running;
        l->curl_deadline_ms = -1;
        curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
}

static void read_curl_messages(struct gw_loop *l)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(l->multi, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE)
            gw_proxy_transfer_done(l, msg->easy_handle, msg->data.result);
}

static int compute_timeout(struct gw_loop *l, uint64_t now, uint64_t timers_at,
                           uint64_t *mhd_at)
{
    *mhd_at = UINT64_MAX;
    if (l->resumed)
        return 0;
    uint64_t at = timers_at;
    if (l->curl_deadline_ms >= 0 && (uint64_t)l->curl_deadline_ms < at)
        at = (uint64_t)l->curl_deadline_ms;
    MHD_UNSIGNED_LONG_LONG mt;
    if (MHD_get_timeout(l->mhd, &mt) == MHD_YES) {
        *mhd_at = now + mt;
        if (*mhd_at < at)
            at = *mhd_at;
    }
    if (l->draining && l->drain_deadline_ms < at)
        at = l->drain_deadline_ms;
    if (at == UINT64_MAX)
        return -1;
    return at <= now ? 0 : (at - now > 60000 ? 60000 : (int)(at - now));
}

static void start_drain(struct gw_loop *l)
{
    l->draining = true;
    /* The listen socket is the gateway's: take it back from MHD so that
     * stopping the daemon later does not close it under the other loops. */
    MHD_quiesce_daemon(l->mhd);
    /* Once no loop accepts, new clients are refused at once (as nginx
     * closes its listening sockets) rather than left queued, unanswered,
     * until the gateway exits. */
    if (atomic_fetch_add(&l->gw->loops_draining, 1) + 1 == l->gw->nloops)
        shutdown(l->gw->listen_fd, SHUT_RDWR);
}

static void *loop_main(void *arg)
{
    struct gw_loop *l = arg;
    struct epoll_event evs[256];
    unsigned final_rounds = 0;
    for (;;) {
        uint64_t now = mg__now_ms();
        unsigned cmds = atomic_exchange(&l->commands, 0);
        if ((cmds & GW_CMD_DRAIN) && !l->draining)
            start_drain(l);
        if (cmds & GW_CMD_DEATH)
            gw_proxy_module_died(l);
        if (cmds & GW_CMD_PING)
            atomic_fetch_add(&l->heartbeat, 1);
        /* After a burst (streams, stalled clients), give the memory back
         * once the loop is idle: glibc keeps a freed heap's pages. At most
         * once a second, so that a busy loop that empties now and then
         * does not pay for it on every request. */
        if (l->nrequests > l->peak_requests)
            l->peak_requests = l->nrequests;
        if (l->nrequests == 0 && l->peak_requests >= TRIM_AFTER_REQUESTS &&
            now >= l->trimmed_at_ms + 1000) {
            malloc_trim(0);
            l->peak_requests = 0;
            l->trimmed_at_ms = now;
        }
        if (l->draining) {
            if (l->nrequests == 0) {
                /* Its idle keep-alive connections close now, as nginx's do,
                 * not when the other loops are done: a request sent on one
                 * meanwhile would wait for nothing and be dropped. */
                MHD_stop_daemon(l->mhd);
                l->mhd = NULL;
                break;
            }
            if (now >= l->drain_deadline_ms) {
                gw_proxy_abort_all(l);
                /* A few rounds let MHD take the resumed connections back. */
                if (++final_rounds > 20)
                    break;
            }
        }
        uint64_t timers_at = gw_proxy_run_timers(l, now);
        /* Access-log lines go out in batches, at most ACCESS_LOG_DELAY_MS
         * after they were added (nginx's "buffer= flush=" in small). */
        if (l->access_buf.len > 0) {
            uint64_t due = l->access_since_ms + ACCESS_LOG_DELAY_MS;
            if (now >= due || l->access_buf.len > 32 * 1024)
                gw_loop_flush_access_log(l);
            else if (due < timers_at)
                timers_at = due;
        }
        uint64_t mhd_at;
        int timeout = compute_timeout(l, now, timers_at, &mhd_at);
        if (final_rounds > 0 && (timeout < 0 || timeout > 10))
            timeout = 10;

        int n = epoll_wait(l->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout);
        if (n < 0 && errno != EINTR) {
            gw_log(GW_ERROR, "loop %u: epoll_wait: %s", l->index, strerror(errno));
            break;
        }
        bool mhd_ready = false;
        for (int i = 0; i < n; i++) {
            unsigned kind = (unsigned)(evs[i].data.u64 >> 32);
            int fd = (int)(uint32_t)evs[i].data.u64;
            if (kind == TAG_MHD) {
                mhd_ready = true;
            } else if (kind >= GW_FD_CLIENT_HUP) {
                gw_proxy_fd_event(l, fd, (enum gw_fd_kind)kind, evs[i].events);
            } else if (kind == TAG_WAKE) {
                uint64_t v;
                ssize_t r = read(l->wakefd, &v, sizeof(v));
                (void)r;
            } else if (gw_curl_watch_event(&l->curl_watch, fd)) {
                int running;
                curl_multi_socket_action(l->multi, fd, gw_curl_epoll_flags(evs[i].events),
                                         &running);
            }
        }
        now = mg__now_ms();
        gw_loop_run_curl_timeout(l, now);
        read_curl_messages(l);
        bool run_mhd = mhd_ready || l->resumed || now >= mhd_at || n == 0;
        /* libmicrohttpd often has more to do at once: a connection that
         * has just been answered goes back to reading in the next run, and
         * a transfer that completes inside curl's call below resumes one.
         * Running it again here saves a trip through epoll_wait; a few
         * rounds at most, so that the other descriptors are not kept
         * waiting. */
        for (unsigned round = 1;; round++) {
            if (run_mhd) {
                l->resumed = false;
                MHD_run(l->mhd);
            }
            gw_proxy_check_hangups(l);
            gw_proxy_run_unpauses(l);
            /* Transfers added during MHD_run asked for an immediate timeout. */
            gw_loop_run_curl_timeout(l, mg__now_ms());
            read_curl_messages(l);
            MHD_UNSIGNED_LONG_LONG mt;
            run_mhd = l->resumed || (MHD_get_timeout(l->mhd, &mt) == MHD_YES && mt == 0);
            if (!run_mhd || round == 3)
                break;
        }
    }
    gw_loop_flush_access_log(l);
    atomic_fetch_sub(&l->gw->loops_running, 1);
    gw_supervisor_wake(l->gw->supervisor);
    return NULL;
}

int gw_loop_start(struct gw_loop *l)
{
    atomic_fetch_add(&l->gw->loops_running, 1);
    int err = pthread_create(&l->thread, NULL, loop_main, l);
    if (err != 0) {
        atomic_fetch_sub(&l->gw->loops_running, 1);
        return -err;
    }
    l->started = true;
    return 0;
}

void gw_loop_join_free(struct gw_loop *l)
{
    if (l == NULL)
        return;
    if (l->started)
        pthread_join(l->thread, NULL);
    if (l->mhd != NULL) {
        if (!l->draining)
            MHD_quiesce_daemon(l->mhd);
        MHD_stop_daemon(l->mhd);
    }
    gw_loop_flush_access_log(l);
    for (size_t i = 0; i < l->neasy; i++)
        curl_easy_cleanup(l->easy_pool[i]);
    free(l->by_fd);
    if (l->multi != NULL)
        curl_multi_cleanup(l->multi);
    gw_curl_watch_free(&l->curl_watch);
    curl_url_cleanup(l->module_url);
    mg__buf_free(&l->access_buf);
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->wakefd >= 0)
        close(l->wakefd);
    free(l);
}
