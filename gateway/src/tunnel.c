/*
 * WebSocket tunnels, see tunnel.h. Two phases on one request:
 *
 * handshake: the gateway connects to the module's socket, writes the
 *   client's request (headers rewritten as for any request, but keeping
 *   Upgrade and Connection: Upgrade) and reads the module's answer head.
 *   A 101 is answered to the client with libmicrohttpd's upgrade response;
 *   anything else (an error from the module) is answered as it came.
 * relay: libmicrohttpd hands us the client socket; bytes go both ways
 *   through the request's `up` and `down` buffers, level-triggered epoll
 *   interest following what each side can take, so that a slow reader
 *   slows the writer down. Either side closing ends both.
 */
#include "tunnel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "headers.h"
#include "logfile.h"
#include "request.h"

#define HEAD_MAX (64 * 1024) /* the module's answer head, at most */

static bool has_token(const char *value, const char *token)
{
    return value != NULL && gw_header_in_connection(value, token, strlen(token));
}

bool gw_tunnel_wanted(struct MHD_Connection *conn, const char *method, const char *connection)
{
    if (strcmp(method, "GET") != 0)
        return false;
    const char *up = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Upgrade");
    return up != NULL && has_token(up, "websocket") && has_token(connection, "upgrade");
}

struct head_ctx {
    struct mg_buf *b;
    const char *connection;
    const char *authority;
    bool failed;
};

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *name,
                                  const char *value)
{
    (void)kind;
    struct head_ctx *h = cls;
    /* Upgrade and Connection belong to the handshake itself (set below);
     * the other hop-by-hop headers stay here, as for any request. */
    if (gw_header_not_forwarded(name, strlen(name), h->connection, h->authority != NULL))
        return MHD_YES;
    if (mg__buf_printf(h->b, "%s: %s\r\n", name, value ? value : "") != 0)
        h->failed = true;
    return h->failed ? MHD_NO : MHD_YES;
}

static int build_handshake(struct request *r, struct mg_buf *b)
{
    const char *connection = r->connection;
    const char *upgrade = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Upgrade");
    const char *xff;
    char *joined;
    if (gw_req_client_forwarded_for(r, &xff, &joined) != 0)
        return -1;
    struct head_ctx h = { .b = b, .connection = connection, .authority = r->authority };
    int rc = mg__buf_printf(b, "GET %s HTTP/1.1\r\n", r->target);
    if (rc == 0 && r->authority != NULL)
        rc = mg__buf_printf(b, "Host: %s\r\n", r->authority);
    if (rc == 0) {
        MHD_get_connection_values(r->conn, MHD_HEADER_KIND, add_header, &h);
        rc = h.failed ? -1 : 0;
    }
    rc |= mg__buf_printf(b, "Upgrade: %s\r\nConnection: Upgrade\r\n", upgrade);
    if (xff != NULL && xff[0] != '\0')
        rc |= mg__buf_printf(b, "X-Forwarded-For: %s, %s\r\n", xff, r->client);
    else
        rc |= mg__buf_printf(b, "X-Forwarded-For: %s\r\n", r->client);
    rc |= mg__buf_printf(b, "X-Forwarded-Proto: http\r\nX-Request-Id: %s\r\n\r\n", r->id);
    free(joined);
    return rc;
}

static void set_interest(struct request *r, int fd, uint32_t *mask, uint32_t want,
                         enum gw_fd_kind kind)
{
    if (fd < 0 || *mask == want)
        return;
    if (gw_loop_watch(r->loop, fd, kind, want, r, false) == 0)
        *mask = want;
}

int gw_tunnel_start(struct request *r)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", r->inc->socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        r->os_errno = errno;
        if (fd >= 0)
            close(fd);
        /* A module that is gone refuses; say how it died if it did. */
        r->mfd = -1;
        r->result = CURLE_COULDNT_CONNECT;
        gw_req_transfer_failed(r);
        return -1;
    }
    struct mg_buf hs;
    mg__buf_init(&hs, (size_t)HEAD_MAX * 4);
    if (build_handshake(r, &hs) != 0) {
        mg__buf_free(&hs);
        close(fd);
        gw_req_set_error(r, 431, "headers_too_large", "WebSocket handshake too large");
        return -1;
    }
    /* The handshake goes out from `hs` itself: hand its bytes over. */
    r->hs.len = hs.len;
    r->hs.cap = hs.cap;
    r->hs.data = mg__buf_steal(&hs, NULL);
    r->mfd = fd;
    r->mmask = EPOLLOUT | EPOLLIN;
    if (gw_loop_watch(r->loop, fd, GW_FD_TUNNEL_MODULE, r->mmask, r, true) != 0) {
        close(fd);
        r->mfd = -1;
        gw_req_set_error(r, 500, "internal", "cannot watch the module connection");
        return -1;
    }
    atomic_fetch_add(&r->mod->active, 1);
    r->counted_active = true;
    gw_req_timer_start(r, &r->loop->header_waiters);
    return 0;
}

/* Sends what `b` holds to fd; -1 when the peer is gone. */
static int flush(int fd, struct bytes *b)
{
    while (b->len > 0) {
        ssize_t n = send(fd, b->data + b->off, b->len, MSG_NOSIGNAL);
        if (n > 0) {
            b->off += (size_t)n;
            b->len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        return -1;
    }
    if (b->len == 0)
        b->off = 0;
    return 0;
}

/* Reads from fd into `b` while it holds less than `limit`; 0, or -1 at
 * EOF or error. The frames read are followed in `track` if given. */
static int fill(int fd, struct bytes *b, size_t limit, uint64_t *counter,
                struct gw_ws_track *track)
{
    char tmp[16384];
    while (b->len < limit) {
        ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
        if (n > 0) {
            if (gw_bytes_append(b, tmp, (size_t)n, SIZE_MAX) != 0)
                return -1;
            if (counter)
                *counter += (uint64_t)n;
            if (track)
                gw_ws_track_feed(track, tmp, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return -1;
    }
    return 0;
}

/* The module's answer head is in: 101 opens the tunnel; anything else is
 * answered to the client as the module sent it. */
static void head_received(struct request *r, size_t head_len)
{
    char *p = r->hs.data + r->hs.off;
    char *end = p + head_len;
    r->status = 0;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        if (len <= 2 && r->status == 101)
            break; /* the 101 is final here, unlike other 1xx */
        gw_req_on_header(p, 1, len, r);
        p += len;
    }
    /* Bytes after the head belong to the body (an error) or the tunnel. */
    size_t rest = r->hs.len - head_len;
    if (rest > 0 && gw_bytes_append(&r->down, r->hs.data + r->hs.off + head_len, rest,
                                    SIZE_MAX) != 0) {
        r->result = CURLE_OUT_OF_MEMORY;
        gw_req_transfer_failed(r);
        return;
    }
    gw_bytes_free(&r->hs);
    gw_list_remove(&r->link_timer);
    if (r->status == 101) {
        if (rest > 0) /* the module's first frames came with its 101 */
            gw_ws_track_feed(&r->ws_down, r->down.data + r->down.off, r->down.len);
        r->headers_done = true;
        set_interest(r, r->mfd, &r->mmask, 0, GW_FD_TUNNEL_MODULE); /* until upgraded */
        gw_req_answer_ready(r);
        return;
    }
    if (!r->headers_done || r->resp_len > 65536 ||
        (r->resp_len < 0 && strcmp(r->method, "HEAD") != 0 && r->status != 204 &&
         r->status != 304)) {
        r->result = CURLE_WEIRD_SERVER_REPLY;
        gw_req_transfer_failed(r);
        return;
    }
    if ((int64_t)r->down.len >= r->resp_len || r->resp_len <= 0) {
        gw_req_transfer_end(r);
        gw_req_answer_ready(r);
    }
    /* else the rest of the error body follows (module events). */
}

static void relay(struct request *r, uint32_t module_events, uint32_t client_events);

void gw_tunnel_module_event(struct request *r, uint32_t events)
{
    if (r->ws_open) {
        relay(r, events, 0);
        return;
    }
    /* Handshake phase: first our request goes out, then its answer comes. */
    if (!r->hs_sent) {
        if (flush(r->mfd, &r->hs) != 0) {
            r->result = CURLE_SEND_ERROR;
            gw_req_transfer_failed(r);
            return;
        }
        if (r->hs.len > 0)
            return;
        r->hs_sent = true;
        set_interest(r, r->mfd, &r->mmask, EPOLLIN, GW_FD_TUNNEL_MODULE);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)))
        return;
    if (r->headers_done) {
        /* The body of a non-101 answer. */
        int rc = fill(r->mfd, &r->down, 65536 + 1, NULL, NULL);
        if ((int64_t)r->down.len >= r->resp_len) {
            gw_req_transfer_end(r);
            gw_req_answer_ready(r);
        } else if (rc != 0) {
            r->result = CURLE_PARTIAL_FILE;
            gw_req_transfer_failed(r);
        }
        return;
    }
    int rc = fill(r->mfd, &r->hs, HEAD_MAX, NULL, NULL);
    const char *start = r->hs.data ? r->hs.data + r->hs.off : "";
    const char *eoh = r->hs.len ? memmem(start, r->hs.len, "\r\n\r\n", 4) : NULL;
    if (eoh != NULL) {
        head_received(r, (size_t)(eoh - start) + 4);
        return;
    }
    if (rc != 0 || r->hs.len >= HEAD_MAX) {
        r->result = rc != 0 ? CURLE_GOT_NOTHING : CURLE_WEIRD_SERVER_REPLY;
        gw_req_transfer_failed(r);
    }
}

static void on_upgrade(void *cls, struct MHD_Connection *conn, void *con_cls,
                       const char *extra_in, size_t extra_in_size, MHD_socket sock,
                       struct MHD_UpgradeResponseHandle *urh)
{
    (void)conn, (void)con_cls;
    struct request *r = cls;
    r->urh = urh;
    r->cfd = sock;
    r->ws_open = true;
    if (extra_in_size > 0 && gw_bytes_append(&r->up, extra_in, extra_in_size, SIZE_MAX) != 0) {
        gw_tunnel_close(r);
        return;
    }
    /* The client socket was watched for hang-ups only; now it is ours. */
    r->cmask = 0;
    if (gw_loop_watch(r->loop, sock, GW_FD_TUNNEL_CLIENT, EPOLLIN, r, false) == 0)
        r->cmask = EPOLLIN;
    gw_req_idle_restart(r);
    relay(r, 0, 0);
}

struct MHD_Response *gw_tunnel_response(struct request *r)
{
    struct MHD_Response *resp = MHD_create_response_for_upgrade(on_upgrade, r);
    if (resp == NULL)
        return NULL;
    /* The response already holds libmicrohttpd's own "Connection: Upgrade"
     * (it refuses to queue a 101 without one); a second would be merged
     * into "Connection: Upgrade, Upgrade". The module's Connection and
     * Upgrade are hop-by-hop, so not copied. */
    if (MHD_add_response_header(resp, "Upgrade", "websocket") != MHD_YES ||
        !gw_req_add_module_headers(r, resp)) {
        MHD_destroy_response(resp);
        return NULL;
    }
    return resp;
}

void gw_tunnel_client_event(struct request *r, uint32_t events)
{
    relay(r, 0, events);
}

/* One round of relaying. A side that ends its input (EOF) still gets what
 * the other side sent before: the tunnel ends once the bytes read from the
 * side that closed are delivered (as nginx ends an upgraded connection),
 * or at once when a side can no longer be written to. A client that stops
 * reading while we drain is bounded by stream_idle_timeout_ms.
 *
 * Hang-ups are reported whatever interest is set, so one is acted on at
 * once rather than left to fire on every round: a module that hung up is
 * read to its end (what its socket still holds is bounded by the kernel's
 * buffer), a client that did is gone. */
static void relay(struct request *r, uint32_t module_events, uint32_t client_events)
{
    const uint32_t hup = EPOLLHUP | EPOLLERR;
    size_t limit = 64 * 1024;
    bool gone = (client_events & hup) != 0;
    bool module_done = (module_events & hup) != 0;
    /* client -> module */
    if (!gone && !r->client_eof && fill(r->cfd, &r->up, limit, NULL, NULL) != 0)
        r->client_eof = true;
    if (r->mfd >= 0 && flush(r->mfd, &r->up) != 0)
        module_done = true;
    /* module -> client */
    if (r->mfd >= 0 &&
        (fill(r->mfd, &r->down, module_done ? SIZE_MAX : limit, &r->bytes_out, &r->ws_down) != 0 ||
         module_done)) {
        /* The module is done: what it sent still goes to the client,
         * nothing more can go to it. */
        gw_loop_unwatch(r->loop, r->mfd);
        close(r->mfd);
        r->mfd = -1;
        r->mmask = 0;
        gw_bytes_free(&r->up);
    }
    if (!gone && flush(r->cfd, &r->down) != 0)
        gone = true;
    if (gone || (r->client_eof && r->up.len == 0)) {
        gw_tunnel_close(r);
        return;
    }
    if (r->mfd < 0 && r->down.len == 0) {
        /* The module's side ended without a close frame (it died, or
         * dropped the connection): the client is told so in one (1011, an
         * unexpected condition) rather than by a bare end of TCP. Its
         * socket often ends before the gateway has reaped it: as for a
         * broken transfer, a moment is given to learn whether and how it
         * died (gw_proxy_module_died, or DEATH_WAIT_MS). */
        if (r->ws_awaiting_death)
            return;
        if (r->cause == NULL) {
            r->cause = "module_closed";
            if (r->inc != NULL && !atomic_load(&r->inc->dead)) {
                r->ws_awaiting_death = true;
                set_interest(r, r->cfd, &r->cmask, 0, GW_FD_TUNNEL_CLIENT);
                gw_req_timer_start(r, &r->loop->death_waiters);
                return;
            }
        }
        gw_tunnel_close(r);
        return;
    }
    gw_req_idle_restart(r);
    uint32_t cw = (!r->client_eof && r->up.len < limit ? EPOLLIN : 0u) |
                  (r->down.len > 0 ? EPOLLOUT : 0u);
    uint32_t mw = (r->down.len < limit ? EPOLLIN : 0u) | (r->up.len > 0 ? EPOLLOUT : 0u);
    set_interest(r, r->cfd, &r->cmask, cw, GW_FD_TUNNEL_CLIENT);
    set_interest(r, r->mfd, &r->mmask, mw, GW_FD_TUNNEL_MODULE);
}

/* Ends the tunnel with a close frame of ours (RFC 6455 §7.1.2: an
 * endpoint closes with one) where the client still reads and one can go
 * in now: everything the module sent is delivered, between two frames,
 * and the module did not send its own close frame. Best effort: the
 * client socket is not waited for. */
static void send_close_frame(struct request *r)
{
    if (r->cfd < 0 || r->urh == NULL || r->down.len > 0 || !gw_ws_track_at_boundary(&r->ws_down) ||
        r->ws_down.close_seen || r->cause == NULL)
        return;
    unsigned code;
    char reason[320]; /* cut to what a close frame carries by gw_ws_close_frame */
    if (strcmp(r->cause, "timeout_idle") == 0) {
        code = 1001; /* going away */
        snprintf(reason, sizeof(reason), "idle for %u ms",
                 r->loop->gw->cfg.limits.stream_idle_timeout_ms);
    } else if (strcmp(r->cause, "shutdown") == 0) {
        code = 1001;
        snprintf(reason, sizeof(reason), "the gateway is stopping");
    } else if (strcmp(r->cause, "module_closed") == 0) {
        code = 1011; /* an unexpected condition */
        bool died = r->inc != NULL && atomic_load(&r->inc->dead);
        snprintf(reason, sizeof(reason), "module %s %s", r->mod->name,
                 died ? r->inc->death : "closed the connection");
    } else {
        return;
    }
    uint8_t frame[GW_WS_CLOSE_MAX];
    size_t len = gw_ws_close_frame(frame, code, reason);
    if (send(r->cfd, frame, len, MSG_NOSIGNAL | MSG_DONTWAIT) > 0)
        r->bytes_out += len;
}

void gw_tunnel_close(struct request *r)
{
    if (r->ws_open)
        send_close_frame(r);
    gw_list_remove(&r->link_timer);
    if (r->mfd >= 0) {
        gw_loop_unwatch(r->loop, r->mfd);
        close(r->mfd);
        r->mfd = -1;
    }
    if (r->counted_active) {
        atomic_fetch_sub(&r->mod->active, 1);
        r->counted_active = false;
    }
    if (r->urh != NULL) {
        /* libmicrohttpd closes the client socket and resumes the connection
         * to clean it up, which needs an MHD_run. */
        gw_loop_unwatch(r->loop, r->cfd);
        MHD_upgrade_action(r->urh, MHD_UPGRADE_ACTION_CLOSE);
        r->urh = NULL;
        r->loop->resumed = true;
    }
    gw_bytes_free(&r->hs);
}
