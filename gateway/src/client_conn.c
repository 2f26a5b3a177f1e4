#include "client_conn.h"

#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "gw.h"
#include "loop.h"
#include "util.h"

struct client_conn {
    struct gw_link link; /* on l->lines or l->kept_lines, oldest first */
    uint64_t since_ms;
    int fd;
    bool first;          /* no request line yet: on l->lines */
};

static struct client_conn *of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci != NULL ? ci->socket_context : NULL;
}

void gw_client_conn_started(struct gw_loop *l, int fd, void **socket_context)
{
    struct client_conn *c = calloc(1, sizeof(*c));
    *socket_context = c;
    if (c == NULL)
        return; /* untimed, as before: libmicrohttpd's idle timeout still runs */
    c->fd = fd;
    c->since_ms = mg__now_ms();
    c->first = true;
    gw_list_push_back(&l->lines, &c->link);
    l->nconns++;
}

void gw_client_conn_closed(struct gw_loop *l, void **socket_context)
{
    struct client_conn *c = *socket_context;
    *socket_context = NULL;
    if (c == NULL)
        return;
    l->nconns--;
    gw_list_remove(&c->link);
    free(c);
}

uint64_t gw_client_conn_line_done(struct MHD_Connection *conn)
{
    struct client_conn *c = of(conn);
    if (c == NULL)
        return 0;
    /* A first request's head counts from the accept, as its line did; a
     * kept-alive connection's idle time before it does not count. */
    uint64_t since = c->first ? c->since_ms : 0;
    c->first = false;
    gw_list_remove(&c->link);
    return since;
}

void gw_client_conn_request_done(struct gw_loop *l, struct MHD_Connection *conn, uint64_t now_ms)
{
    struct client_conn *c = of(conn);
    if (c == NULL)
        return;
    gw_list_remove(&c->link);
    c->since_ms = now_ms;
    gw_list_push_back(&l->kept_lines, &c->link);
}

/* Runs one list whose entries all wait `timeout` ms from since_ms. */
static uint64_t expire(struct gw_link *list, uint64_t timeout, uint64_t now)
{
    while (!gw_list_empty(list)) {
        struct client_conn *c = gw_container_of(list->next, struct client_conn, link);
        uint64_t due = c->since_ms + timeout;
        if (due > now)
            return due;
        gw_list_remove(&c->link);
        /* libmicrohttpd sees the end at its next read and closes the
         * connection (no answer: there is no request to answer yet). */
        shutdown(c->fd, SHUT_RDWR);
    }
    return UINT64_MAX;
}

/* At its share of max_connections a loop stops accepting, and a new client
 * waits in the listen queue. Idle kept-alive connections are the ones to
 * give way (as nginx reuses them when out of connections): while one
 * waits, the longest idle goes, after RECLAIM_IDLE_MS at least, so that a
 * request just sent on it is not cut. The queue is looked at every
 * RECLAIM_CHECK_MS while the loop is full. */
#define RECLAIM_IDLE_MS 200
#define RECLAIM_CHECK_MS 50

static uint64_t reclaim(struct gw_loop *l, uint64_t now)
{
    if (l->nconns < l->conn_share || gw_list_empty(&l->kept_lines))
        return UINT64_MAX;
    struct client_conn *c = gw_container_of(l->kept_lines.next, struct client_conn, link);
    uint64_t ripe = c->since_ms + RECLAIM_IDLE_MS;
    if (ripe > now)
        return ripe;
    if (now < l->reclaim_check_ms)
        return l->reclaim_check_ms;
    l->reclaim_check_ms = now + RECLAIM_CHECK_MS;
    /* Another loop with room takes the client itself. */
    if (atomic_load_explicit(&l->gw->connections, memory_order_relaxed) <
        l->gw->cfg.limits.max_connections)
        return l->reclaim_check_ms;
    struct pollfd p = { .fd = l->gw->listen_fd, .events = POLLIN };
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) {
        gw_list_remove(&c->link);
        shutdown(c->fd, SHUT_RDWR);
    }
    return l->reclaim_check_ms;
}

uint64_t gw_client_conn_run_timers(struct gw_loop *l, uint64_t now)
{
    uint64_t timeout = l->gw->cfg.limits.request_timeout_ms;
    uint64_t a = expire(&l->lines, timeout, now);
    uint64_t b = expire(&l->kept_lines, (uint64_t)GW_CLIENT_IDLE_S * 1000 + timeout, now);
    uint64_t c = reclaim(l, now);
    return a < b ? (a < c ? a : c) : (b < c ? b : c);
}
