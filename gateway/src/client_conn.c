#include "client_conn.h"

#include <stdlib.h>
#include <sys/socket.h>

#include "gw.h"
#include "loop.h"
#include "util.h"

struct client_conn {
    struct gw_link link; /* on l->lines or l->kept_lines, oldest first */
    uint64_t since_ms;
    int fd;
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
    gw_list_push_back(&l->lines, &c->link);
}

void gw_client_conn_closed(struct gw_loop *l, void **socket_context)
{
    (void)l;
    struct client_conn *c = *socket_context;
    *socket_context = NULL;
    if (c == NULL)
        return;
    gw_list_remove(&c->link);
    free(c);
}

void gw_client_conn_line_done(struct gw_loop *l, struct MHD_Connection *conn)
{
    (void)l;
    struct client_conn *c = of(conn);
    if (c != NULL)
        gw_list_remove(&c->link);
}

void gw_client_conn_request_done(struct gw_loop *l, struct MHD_Connection *conn)
{
    struct client_conn *c = of(conn);
    if (c == NULL)
        return;
    gw_list_remove(&c->link);
    c->since_ms = mg__now_ms();
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

uint64_t gw_client_conn_run_timers(struct gw_loop *l, uint64_t now)
{
    uint64_t timeout = l->gw->cfg.limits.request_timeout_ms;
    uint64_t a = expire(&l->lines, timeout, now);
    uint64_t b = expire(&l->kept_lines, (uint64_t)GW_CLIENT_IDLE_S * 1000 + timeout, now);
    return a < b ? a : b;
}
