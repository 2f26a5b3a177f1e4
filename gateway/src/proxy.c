/*
 * The request path: public listener -> route -> module, and back.
 *
 * One request lives on one loop. libmicrohttpd calls on_request several
 * times: first with the headers (we route and start the curl transfer at
 * once, so a body can stream), then with pieces of the body, then a last
 * time with none. Whenever the answer is not ready, the connection is
 * suspended; whatever makes it ready (curl's header callback, the end of
 * the transfer, a timer, the module's death) resumes it, and the next call
 * queues the response.
 *
 * Bodies flow through two bounded buffers, each paused at its high-water
 * mark: `up` (client -> module; libmicrohttpd is suspended when it is full,
 * curl's read callback pauses when it is empty) and `down` (module ->
 * client; curl's write callback pauses when it is full, the content reader
 * suspends when it is empty). A slow side therefore slows the other down
 * instead of growing memory.
 *
 * Responses with a small Content-Length are collected whole and answered
 * from one buffer (the common unary case: one resume, no reader calls);
 * every other response streams.
 */
#include "proxy.h"
#include "request.h"
#include "tunnel.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "accesslog.h"
#include "admin.h"
#include "client_conn.h"
#include "errors.h"
#include "head_check.h"
#include "headers.h"
#include "logfile.h"
#include "loop.h"

/* ---- small helpers ----------------------------------------------------- */

int gw_bytes_append(struct bytes *b, const void *data, size_t len, size_t max)
{
    if (len > max - b->len)
        return -1;
    if (b->off > 0 && b->off + b->len + len > b->cap) {
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
    }
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + len)
            cap *= 2;
        if (cap > max)
            cap = max;
        char *p = realloc(b->data, cap);
        if (p == NULL)
            return -1;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->off + b->len, data, len);
    b->len += len;
    return 0;
}

size_t gw_bytes_take(struct bytes *b, char *out, size_t max)
{
    size_t n = b->len < max ? b->len : max;
    memcpy(out, b->data + b->off, n);
    b->off += n;
    b->len -= n;
    if (b->len == 0) {
        b->off = 0;
        if (b->cap > 64 * 1024) { /* give back what a burst made us grow */
            free(b->data);
            b->data = NULL;
            b->cap = 0;
        }
    }
    return n;
}

void gw_bytes_free(struct bytes *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

void gw_req_suspend(struct request *r)
{
    if (!r->suspended) {
        MHD_suspend_connection(r->conn);
        r->suspended = true;
    }
}

void gw_req_resume(struct request *r)
{
    if (r->suspended) {
        MHD_resume_connection(r->conn);
        r->suspended = false;
        r->reader_waiting = false;
        r->loop->resumed = true;
    }
}

void gw_req_unref(struct request *r)
{
    if (--r->refs > 0)
        return;
    free(r->target);
    free(r->local_body);
    free(r->extra_value);
    free(r->connection_joined);
    free(r->authority);
    free(r->tail);
    mg__buf_free(&r->resp_hdrs);
    gw_bytes_free(&r->up);
    gw_bytes_free(&r->down);
    free(r);
}

/* ---- the transfer ------------------------------------------------------ */

static CURL *easy_get(struct gw_loop *l);
static void easy_put(struct gw_loop *l, CURL *e);

/* Ends the curl side of a request (done, cancelled or failed). */
void gw_req_transfer_end(struct request *r)
{
    if (r->mfd >= 0 || r->urh != NULL)
        gw_tunnel_close(r);
    if (r->easy != NULL) {
        curl_multi_remove_handle(r->loop->multi, r->easy);
        easy_put(r->loop, r->easy);
        r->easy = NULL;
    }
    free(r->hdrs); /* one block, see build_headers */
    r->hdrs = NULL;
    gw_list_remove(&r->link_unpause);
    if (r->counted_active) {
        atomic_fetch_sub(&r->mod->active, 1);
        r->counted_active = false;
    }
}

/* The answer is the gateway's own `body` (taken over: freed with r). */
static void set_local(struct request *r, int status, const char *ctype, char *body)
{
    free(r->local_body);
    r->local_body = body;
    r->local_status = status;
    r->local_ctype = ctype;
}

void gw_req_set_error(struct request *r, int status, const char *cause, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    free(r->local_body);
    r->local_body = msg;
    r->local_status = status;
    r->local_ctype = NULL;
    r->cause = cause;
}

/* Writes the error answer set on r to the socket past libmicrohttpd and
 * shuts the write side; false (and nothing sent) if bytes are still
 * queued on the socket or the kernel takes none. */
static bool answer_on_socket(struct request *r)
{
    int unsent;
    if (ioctl(r->fd, SIOCOUTQ, &unsent) != 0 || unsent != 0)
        return false;
    size_t len;
    uint64_t body_len;
    char *answer = gw_error_message(r->local_status, r->local_body ? r->local_body : "error",
                                    r->mod ? r->mod->name : NULL, r->incarnation, r->cause,
                                    r->id, &len, &body_len);
    if (answer == NULL)
        return false;
    ssize_t n = send(r->fd, answer, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    free(answer);
    if (n <= 0)
        return false; /* nothing went: the usual answer after the body */
    r->answered_raw = true;
    r->final_status = r->local_status;
    r->bytes_out = (size_t)n == len ? body_len : 0; /* a cut answer: the close ends it */
    shutdown(r->fd, SHUT_WR);
    return true;
}

/* libmicrohttpd 0.9.75 takes no answer while a body is coming in, so a
 * body refused half-way (413), or whose module died or timed out under it
 * (502, 504), or that stopped coming (408), would be read to its end (or
 * to DISCARD_MAX, and then cut without a word) before the client heard
 * why. As nginx does, the answer goes at once, written to the socket past
 * libmicrohttpd, when nothing is queued on it (so the kernel takes it
 * whole, and it is the next thing the client expects); then the write
 * side is shut, and the rest of the body is read and dropped (see
 * gw_proxy_on_request) so that closing does not reset the answer away
 * before the client has read it. With bytes still queued it waits for the
 * end of the body, as before. */
static void answer_mid_body(struct request *r)
{
    if (!r->first_call_done || !r->has_body || r->up_done || r->queued || r->answered_raw)
        return; /* no body coming in: libmicrohttpd takes the answer */
    answer_on_socket(r);
}

/* Something the next handler call can answer with is ready. */
void gw_req_answer_ready(struct request *r)
{
    r->resp_ready = true;
    gw_req_resume(r);
}

/* The transfer broke. Say how, once we know whether the module died. */
void gw_req_finish_failure(struct request *r)
{
    gw_list_remove(&r->link_timer);
    r->failure_known = true;
    char msg[320];
    const char *cause;
    struct gw_incarnation *inc = r->inc;
    if (r->cause != NULL) {
        /* A timeout already named the cause. */
        cause = r->cause;
        snprintf(msg, sizeof(msg), "%s", r->local_body ? r->local_body : "module error");
    } else if (inc != NULL && atomic_load_explicit(&inc->dead, memory_order_acquire)) {
        cause = inc->cause;
        snprintf(msg, sizeof(msg), "module %s %s", r->mod->name, inc->death);
    } else if (r->os_errno == EMFILE || r->os_errno == ENFILE) {
        /* Our own limit, not the module's fault: say so (503, retry). */
        cause = "overloaded";
        snprintf(msg, sizeof(msg), "the gateway is out of file descriptors");
        r->local_status = 503;
    } else if (r->result == CURLE_COULDNT_CONNECT) {
        cause = "refused";
        snprintf(msg, sizeof(msg), "module %s refused the connection", r->mod->name);
    } else {
        cause = "reset";
        snprintf(msg, sizeof(msg), "module %s broke the connection: %s", r->mod->name,
                 curl_easy_strerror(r->result));
    }
    r->cause = cause;
    if (!r->queued || !r->stream_mode) {
        /* Nothing sent yet: a clean 502 (or the timeout's status). */
        int status = r->local_status >= 500 || r->local_status == 408 ? r->local_status : 502;
        gw_req_set_error(r, status, cause, "%s", msg);
        answer_mid_body(r);
        gw_req_answer_ready(r);
        return;
    }
    /* Mid-stream: the client already has the status. End the body with
     * the error text (chunked) or cut it (Content-Length). */
    free(r->tail);
    r->tail = NULL;
    int n = asprintf(&r->tail, "\nmodgate: %s\n", msg);
    r->tail_len = n > 0 ? (size_t)n : 0;
    r->tail_off = 0;
    if (r->stream_response != NULL) {
        char hv[256];
        gw_error_header_value(hv, sizeof(hv), r->mod ? r->mod->name : NULL, r->incarnation,
                              cause);
        MHD_add_response_footer(r->stream_response, GW_ERROR_HEADER, hv);
    }
    gw_req_resume(r);
}

/* Ends the transfer and answers at once with how it broke. */
static void fail_now(struct request *r)
{
    r->upstream_failed = true;
    gw_req_transfer_end(r);
    gw_req_finish_failure(r);
}

void gw_req_transfer_failed(struct request *r)
{
    r->upstream_failed = true;
    gw_req_transfer_end(r);
    gw_list_remove(&r->link_timer);
    if (r->cause != NULL ||
        (r->inc != NULL && atomic_load_explicit(&r->inc->dead, memory_order_acquire))) {
        gw_req_finish_failure(r);
        return;
    }
    /* The socket usually closes a moment before the supervisor reaps the
     * process; wait a little to tell "crashed" from "closed". */
    gw_req_timer_start(r, &r->loop->death_waiters);
}

size_t gw_req_on_header(char *buf, size_t size, size_t n, void *userp)
{
    struct request *r = userp;
    size_t len = size * n;
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        const char *sp = memchr(buf, ' ', len);
        r->status = 0;
        if (sp != NULL && (size_t)(sp - buf) + 4 <= len && isdigit((unsigned char)sp[1]) &&
            isdigit((unsigned char)sp[2]) && isdigit((unsigned char)sp[3]))
            r->status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
        r->resp_hdrs.len = 0;
        r->resp_hdr_count = 0;
        r->resp_len = -1;
        return len;
    }
    if (len <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
        if (r->status >= 100 && r->status < 200)
            return len; /* 100 Continue and friends: the real answer follows */
        if (r->status < 200 || r->status > 599) {
            gw_req_set_error(r, 502, "bad_response", "module %s answered with status %d, which "
                             "is not an HTTP status", r->mod->name, r->status);
            return 0; /* fail the transfer */
        }
        r->headers_done = true;
        gw_list_remove(&r->link_timer);
        bool nobody = strcmp(r->method, "HEAD") == 0 || r->status == 204 || r->status == 304;
        if (nobody || (r->resp_len >= 0 && r->resp_len <= BUFFERED_MAX)) {
            /* Collected whole, answered at the end of the transfer. */
            return len;
        }
        r->stream_mode = true;
        gw_req_idle_restart(r);
        gw_req_answer_ready(r);
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (colon == NULL)
        return len;
    size_t nlen = (size_t)(colon - buf);
    if (!mg__http_token(buf, nlen)) {
        /* libmicrohttpd would refuse it, and with it the whole answer. */
        gw_req_set_error(r, 502, "bad_response", "module %s answered with a header name that is "
                         "not a token", r->mod->name);
        return 0;
    }
    const char *v = colon + 1, *end = buf + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (nlen == 14 && strncasecmp(buf, "Content-Length", 14) == 0) {
        r->resp_len = strtoll(v, NULL, 10);
        return len;
    }
    /* Stored whole; hop-by-hop ones are dropped when the response is made,
     * once the module's own Connection header is known. */
    if (mg__buf_append(&r->resp_hdrs, buf, nlen) != 0 ||
        mg__buf_append(&r->resp_hdrs, "", 1) != 0 ||
        mg__buf_append(&r->resp_hdrs, v, (size_t)(end - v)) != 0 ||
        mg__buf_append(&r->resp_hdrs, "", 1) != 0)
        return 0; /* over the header limit: fail the transfer */
    r->resp_hdr_count++;
    return len;
}

void gw_req_timer_start(struct request *r, struct gw_link *list)
{
    r->timer_at_ms = mg__now_ms();
    gw_list_push_back(list, &r->link_timer);
}

void gw_req_idle_restart(struct request *r)
{
    if (r->loop->gw->cfg.limits.stream_idle_timeout_ms > 0)
        gw_req_timer_start(r, &r->loop->idle_streams);
}

/* The wait for the module's answer counts from the request's last byte:
 * while the body moves (from the client, or on to the module) the clock
 * starts again, so a long upload is not cut at request_timeout_ms. */
static void upload_progress(struct request *r)
{
    if (r->easy != NULL && !r->headers_done && gw_linked(&r->link_timer))
        gw_req_timer_start(r, &r->loop->header_waiters);
}

static size_t on_write(char *data, size_t size, size_t n, void *userp)
{
    struct request *r = userp;
    size_t len = size * n;
    if (!r->stream_mode) {
        /* Collected whole (a body of Content-Length <= BUFFERED_MAX, see
         * gw_req_on_header): capped at its length, a small body gets a
         * buffer of just its size. */
        size_t max = r->resp_len >= 0 ? (size_t)r->resp_len : BUFFERED_MAX;
        if (gw_bytes_append(&r->down, data, len, max) != 0)
            return 0; /* more than its Content-Length said: fail the transfer */
        return len;
    }
    if (r->down.len > 0 && r->down.len + len > HIGH_WATER) {
        /* Never past HIGH_WATER (curl keeps what it could not hand over,
         * one read at most, so a stalled client holds a bounded few
         * buffers). The client is slow, not the module: while we hold the module
         * back its silence is ours, and the idle timeout does not run
         * (as nginx's proxy_read_timeout; a client that stops reading is
         * cut by the connection timeout instead). */
        r->write_paused = true;
        gw_list_remove(&r->link_timer);
        return CURL_WRITEFUNC_PAUSE;
    }
    if (gw_bytes_append(&r->down, data, len, SIZE_MAX) != 0)
        return 0;
    /* curl calls us once per chunk of a chunked answer (or per piece of
     * one that a read split). */
    if (r->resp_len < 0 && len > 0) {
        if (r->piece_count == GW_PIECES_MAX) {
            r->piece[(r->piece_first + r->piece_count - 1) % GW_PIECES_MAX] += (uint32_t)len;
        } else {
            r->piece[(r->piece_first + r->piece_count) % GW_PIECES_MAX] = (uint32_t)len;
            r->piece_count++;
        }
    }
    if (r->stream_mode)
        gw_req_idle_restart(r); /* the module is not silent */
    if (r->reader_waiting)
        gw_req_resume(r);
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *userp)
{
    struct request *r = userp;
    if (r->up.len > 0) {
        size_t got = gw_bytes_take(&r->up, buf, size * n);
        if (r->suspended && !r->up_done && r->up.len < LOW_WATER)
            gw_req_resume(r); /* libmicrohttpd has more of the body for us */
        upload_progress(r);
        return got;
    }
    if (r->up_done)
        return 0;
    r->read_paused = true;
    return CURL_READFUNC_PAUSE;
}

static void schedule_unpause(struct request *r)
{
    if (r->easy != NULL)
        gw_list_push_back(&r->loop->unpauses, &r->link_unpause);
}

void gw_proxy_run_unpauses(struct gw_loop *l)
{
    while (!gw_list_empty(&l->unpauses)) {
        struct request *r = gw_container_of(l->unpauses.next, struct request, link_unpause);
        gw_list_remove(&r->link_unpause);
        if (r->easy == NULL)
            continue;
        if (r->read_paused && (r->up.len > 0 || r->up_done))
            r->read_paused = false;
        if (r->write_paused && r->down.len < LOW_WATER) {
            r->write_paused = false;
            gw_req_idle_restart(r); /* waiting on the module again */
        }
        int mask = (r->read_paused ? CURLPAUSE_SEND : 0) | (r->write_paused ? CURLPAUSE_RECV : 0);
        curl_easy_pause(r->easy, mask);
    }
}

static CURL *easy_get(struct gw_loop *l)
{
    if (l->neasy > 0)
        return l->easy_pool[--l->neasy];
    CURL *e = curl_easy_init();
    if (e == NULL)
        return NULL;
    /* Settings every transfer shares, set once per handle. */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    /* curl's own default: curl hands over at most 16 KiB a call anyway,
     * and a bigger buffer (plus the read it keeps while paused) only
     * weighed on a stalled client: 64 KiB made it 245 KiB of gateway
     * memory a stream, 16 KiB 147 KiB, with no loss of throughput. */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 16L * 1024);
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 64L * 1024);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    /* A module connection unused this long is not reused (closed at the
     * next transfer): the module closes its own after 120 s (runtime.c). */
    curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, 60L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, gw_req_on_header);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    /* Only the host part matters (the Host header is the client's own);
     * the path is CURLOPT_REQUEST_TARGET. Given parsed, it is not parsed
     * again for every transfer. */
    curl_easy_setopt(e, CURLOPT_CURLU, l->module_url);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 0L);
    gw_curl_open_cloexec(e, &l->curl_watch);
    return e;
}

static void easy_put(struct gw_loop *l, CURL *e)
{
    if (l->neasy == GW_EASY_POOL_MAX)
        curl_easy_cleanup(e);
    else
        l->easy_pool[l->neasy++] = e;
}

/* The module request's headers (RFC 9110 §7.6.1 for what is dropped; RFC
 * 7239 style X-Forwarded-For/-Proto; X-Request-Id). curl only reads a
 * curl_slist, so the nodes and their strings are built in one block,
 * counted in a first pass and filled in a second: one allocation per
 * request instead of one per header. */
struct hdr_pass {
    const char *connection;
    const char *authority;
    bool has_accept, has_ctype;
    bool filling;
    size_t count, bytes;       /* first pass */
    struct curl_slist *nodes;  /* second pass */
    char *text;
    size_t i, pos;
};

/* Adds the line a b c d (any may be ""). */
static void emit(struct hdr_pass *p, const char *a, const char *b, const char *c, const char *d)
{
    const char *parts[4] = { a, b, c, d };
    size_t lens[4], total = 0;
    for (int k = 0; k < 4; k++)
        total += lens[k] = strlen(parts[k]);
    if (!p->filling) {
        p->count++;
        p->bytes += total + 1;
        return;
    }
    char *line = p->text + p->pos;
    for (int k = 0, at = 0; k < 4; at += (int)lens[k], k++)
        memcpy(line + at, parts[k], lens[k]);
    line[total] = '\0';
    p->pos += total + 1;
    p->nodes[p->i].data = line;
    p->nodes[p->i].next = NULL;
    if (p->i > 0)
        p->nodes[p->i - 1].next = &p->nodes[p->i];
    p->i++;
}

static enum MHD_Result add_request_header(void *cls, enum MHD_ValueKind kind, const char *name,
                                          const char *value)
{
    (void)kind;
    struct hdr_pass *p = cls;
    if (gw_header_not_forwarded(name, strlen(name), p->connection, p->authority != NULL))
        return MHD_YES;
    if (strcasecmp(name, "Accept") == 0)
        p->has_accept = true;
    if (strcasecmp(name, "Content-Type") == 0)
        p->has_ctype = true;
    /* "Name;" is curl's way of sending a header with an empty value. */
    if (value == NULL || value[0] == '\0')
        emit(p, name, ";", "", "");
    else
        emit(p, name, ": ", value, "");
    return MHD_YES;
}

static void forwarding_headers(struct hdr_pass *p, struct request *r, const char *xff)
{
    if (xff != NULL && xff[0] != '\0')
        emit(p, "X-Forwarded-For: ", xff, ", ", r->client);
    else
        emit(p, "X-Forwarded-For: ", r->client, "", "");
    emit(p, "X-Forwarded-Proto: http", "", "", "");
    emit(p, "X-Request-Id: ", r->id, "", "");
    /* Stop curl from adding headers the client did not send (it adds
     * Expect only to requests with a body). */
    if (r->has_body)
        emit(p, "Expect:", "", "", "");
    if (!p->has_accept)
        emit(p, "Accept:", "", "", "");
    if (!p->has_ctype && r->body_framed)
        emit(p, "Content-Type:", "", "", "");
    if (r->authority != NULL)
        emit(p, "Host: ", r->authority, "", "");
    else if (!r->has_host) /* HTTP/1.0: curl would add one */
        emit(p, "Host:", "", "", "");
}

static enum MHD_Result join_forwarded_for(void *cls, enum MHD_ValueKind kind, const char *k,
                                          const char *v)
{
    (void)kind;
    struct mg_buf *b = cls;
    if (strcasecmp(k, "X-Forwarded-For") != 0 || v == NULL || v[0] == '\0')
        return MHD_YES;
    if ((b->len > 0 && mg__buf_append(b, ", ", 2) != 0) || mg__buf_append(b, v, strlen(v)) != 0)
        return MHD_NO;
    return MHD_YES;
}

int gw_req_client_forwarded_for(struct request *r, const char **xff, char **joined)
{
    *joined = NULL;
    if (r->forwarded_fors <= 1) { /* the usual case: no copy */
        *xff = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Forwarded-For");
        return 0;
    }
    struct mg_buf b;
    mg__buf_init(&b, (size_t)r->loop->gw->cfg.limits.max_header_bytes + 1);
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, join_forwarded_for, &b);
    if (mg__buf_append(&b, "", 1) != 0) {
        mg__buf_free(&b);
        return -1;
    }
    size_t len;
    *xff = *joined = mg__buf_steal(&b, &len);
    return 0;
}

/* Returns the header list (free() it), or NULL on ENOMEM. */
static struct curl_slist *build_headers(struct request *r, const char *connection)
{
    struct hdr_pass p = { .connection = connection, .authority = r->authority };
    const char *xff;
    char *joined;
    if (gw_req_client_forwarded_for(r, &xff, &joined) != 0)
        return NULL;
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, add_request_header, &p);
    forwarding_headers(&p, r, xff);
    size_t nodes = p.count * sizeof(struct curl_slist);
    char *block = malloc(nodes + p.bytes);
    if (block == NULL) {
        free(joined);
        return NULL;
    }
    struct hdr_pass fill = { .connection = connection, .authority = r->authority, .filling = true,
                             .nodes = (struct curl_slist *)block, .text = block + nodes };
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, add_request_header, &fill);
    forwarding_headers(&fill, r, xff);
    free(joined);
    return fill.nodes;
}

static int start_transfer(struct request *r, int64_t content_length)
{
    struct gw_loop *l = r->loop;
    r->hdrs = build_headers(r, r->connection);
    if (r->hdrs == NULL)
        return -1;
    r->easy = easy_get(l);
    if (r->easy == NULL)
        return -1;
    CURL *e = r->easy;
    /* The client's request target goes out as it came, byte for byte:
     * curl neither parses nor normalizes it (the URL is a constant). */
    curl_easy_setopt(e, CURLOPT_REQUEST_TARGET, r->target);
    curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, r->inc->socket_path);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_READDATA, r);
    /* HTTPGET resets whatever method the handle did last. */
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (r->body_framed) {
        /* The body framed as the client framed it: its Content-Length
         * (0 included), or chunked (-1). */
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)content_length);
        if (!r->has_body)
            r->up_done = true;
        if (strcmp(r->method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
    } else if (strcmp(r->method, "GET") != 0) {
        /* No body and no framing headers, as the client sent it (curl's
         * POST mode would add Content-Length: 0). */
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
    }
    if (curl_multi_add_handle(l->multi, e) != CURLM_OK)
        return -1;
    atomic_fetch_add(&r->mod->active, 1);
    r->counted_active = true;
    gw_req_timer_start(r, &l->header_waiters);
    /* curl starts a new transfer at its next timeout call; made now, the
     * request is on its way to the module while libmicrohttpd finishes
     * with the connection (its last handler call, the suspend), instead
     * of after: 4 us off the median at one connection (86.5 against 90.8
     * us, 4 interleaved runs), no cost at 64. */
    gw_loop_run_curl_timeout(l, mg__now_ms());
    return 0;
}

void gw_proxy_transfer_done(struct gw_loop *l, CURL *easy, CURLcode result)
{
    (void)l;
    struct request *r = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
    if (r == NULL)
        return;
    r->result = result;
    if (result != CURLE_OK) {
        long os_errno = 0;
        curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
        r->os_errno = (int)os_errno;
    }
    if (result != CURLE_OK || !r->headers_done) {
        if (result == CURLE_OK)
            r->result = CURLE_GOT_NOTHING;
        gw_req_transfer_failed(r);
        return;
    }
    r->upstream_done = true;
    gw_req_transfer_end(r);
    gw_list_remove(&r->link_timer);
    if (!r->stream_mode)
        gw_req_answer_ready(r);
    else if (r->reader_waiting)
        gw_req_resume(r);
}

/* ---- answering the client ---------------------------------------------- */

/* Up to this much waiting for the client, the module's chunks keep their
 * boundaries (see stream_reader). */
#define PIECES_EXACT_MAX (16 * 1024)

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct request *r = cls;
    if (r->client_gone)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (r->down.len > 0) {
        /* One chunk of the module's per chunk of ours while little is
         * waiting (events, lines); a bulk transfer that has piled up goes
         * in chunks as large as libmicrohttpd takes, boundaries or not
         * (they cost it a tenth of its throughput). */
        if (r->piece_count > 0 && r->down.len <= PIECES_EXACT_MAX &&
            r->piece[r->piece_first] < max)
            max = r->piece[r->piece_first];
        size_t n = gw_bytes_take(&r->down, buf, max);
        for (size_t left = n; left > 0 && r->piece_count > 0;) {
            uint32_t *p = &r->piece[r->piece_first];
            size_t used = left < *p ? left : *p;
            *p -= (uint32_t)used;
            left -= used;
            if (*p == 0) {
                r->piece_first = (r->piece_first + 1) % GW_PIECES_MAX;
                r->piece_count--;
            }
        }
        r->bytes_out += n;
        if (r->write_paused && r->down.len < LOW_WATER)
            schedule_unpause(r);
        return (ssize_t)n;
    }
    if (r->upstream_done)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (r->upstream_failed && r->failure_known) {
        if (r->resp_len >= 0)
            return MHD_CONTENT_READER_END_WITH_ERROR; /* cannot end a sized body early */
        if (r->tail_off < r->tail_len) {
            size_t n = r->tail_len - r->tail_off < max ? r->tail_len - r->tail_off : max;
            memcpy(buf, r->tail + r->tail_off, n);
            r->tail_off += n;
            return (ssize_t)n;
        }
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (r->write_paused)
        schedule_unpause(r);
    /* Nothing yet: wait without spinning (MHD-CURL-FACTS pitfall 2). */
    r->reader_waiting = true;
    gw_req_suspend(r);
    return 0;
}

static ssize_t no_body_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls, (void)pos, (void)buf, (void)max;
    return MHD_CONTENT_READER_END_OF_STREAM;
}

static void stream_response_freed(void *cls)
{
    struct request *r = cls;
    r->stream_response = NULL;
    gw_req_unref(r);
}

/* True if `name` is listed in any of the module's Connection headers. */
static bool named_in_module_connection(const char *p, const char *end, const char *name,
                                       size_t nlen)
{
    while (p < end) {
        const char *k = p, *v = p + strlen(p) + 1;
        p = v + strlen(v) + 1;
        if (strcasecmp(k, "Connection") == 0 && gw_header_in_connection(v, name, nlen))
            return true;
    }
    return false;
}

bool gw_req_add_module_headers(struct request *r, struct MHD_Response *resp)
{
    const char *p = r->resp_hdrs.data, *end = p + r->resp_hdrs.len;
    bool has_connection = false;
    for (const char *q = p; q < end && !has_connection;) {
        const char *name = q, *value = q + strlen(q) + 1;
        has_connection = strcasecmp(name, "Connection") == 0;
        q = value + strlen(value) + 1;
    }
    while (p < end) {
        const char *name = p, *value = p + strlen(p) + 1;
        size_t nlen = strlen(name);
        p = value + strlen(value) + 1;
        /* X-Modgate-Error and X-Request-Id are the gateway's to say. */
        if (gw_header_is_hop_by_hop(name, nlen) ||
            (has_connection &&
             named_in_module_connection(r->resp_hdrs.data, end, name, nlen)) ||
            strcasecmp(name, "X-Request-Id") == 0 || strcasecmp(name, "X-Modgate-Error") == 0)
            continue;
        if (!mg__add_header_value(resp, name, value))
            return false;
    }
    return MHD_add_response_header(resp, "X-Request-Id", r->id) == MHD_YES;
}

/* libmicrohttpd builds an answer's head in the connection's memory pool,
 * beside the request's head; one that does not fit closes the connection
 * without a word. The module's headers are measured first, generously:
 * what the request's head takes, the module's lines, and room for the
 * status line and the headers the gateway adds. */
static bool module_head_fits(const struct request *r)
{
    size_t need = r->head_cost + r->resp_hdrs.len + 4 * (size_t)r->resp_hdr_count + 512;
    return need <= r->loop->mhd_pool;
}

static enum MHD_Result queue_answer(struct request *r)
{
    struct MHD_Response *resp;
    int status;
    if (r->local_status == 0 && !r->ws && !module_head_fits(r)) {
        gw_req_transfer_end(r);
        gw_list_remove(&r->link_timer);
        gw_req_set_error(r, 502, "bad_response", "module %s answered with %zu bytes of headers "
                         "(%u lines): more than fit beside this request's %zu "
                         "(limits.max_header_bytes sets the room)", r->mod->name,
                         r->resp_hdrs.len, r->resp_hdr_count, r->head_cost);
    }
    if (r->local_status != 0) {
        status = r->local_status;
        if (r->local_ctype != NULL) {
            resp = gw_local_response(r->local_body, r->local_ctype, r->id, &r->bytes_out);
        } else {
            resp = gw_error_response(r->local_body ? r->local_body : mg__reason(status),
                                     r->mod ? r->mod->name : NULL,
                                     r->incarnation, r->cause, r->id,
                                     &r->bytes_out);
        }
        if (resp != NULL && r->extra_name != NULL &&
            MHD_add_response_header(resp, r->extra_name, r->extra_value) != MHD_YES) {
            MHD_destroy_response(resp);
            resp = NULL;
        }
    } else if (r->ws && r->status == 101) {
        status = 101;
        resp = gw_tunnel_response(r);
    } else if (!r->stream_mode) {
        status = r->status;
        if (strcmp(r->method, "HEAD") == 0 && r->resp_len != 0) {
            /* Keep the module's framing (its Content-Length, or none for a
             * stream): MHD sends only the headers of a HEAD answer. */
            resp = MHD_create_response_from_callback(
                r->resp_len > 0 ? (uint64_t)r->resp_len : MHD_SIZE_UNKNOWN, 64, no_body_reader,
                NULL, NULL);
            if (resp != NULL && r->resp_len < 0 &&
                mg__head_without_length(resp, r->method) != 0) {
                MHD_destroy_response(resp);
                resp = NULL;
            }
        } else {
            size_t len = r->down.len;
            char *body = r->down.data;
            if (r->down.off > 0)
                memmove(body, body + r->down.off, len);
            r->down.data = NULL;
            r->down.len = r->down.cap = r->down.off = 0;
            resp = MHD_create_response_from_buffer_with_free_callback(
                len, body ? body : (char *)"", body ? free : NULL);
            if (resp == NULL)
                free(body);
            else
                r->bytes_out = len;
        }
        if (resp != NULL && !gw_req_add_module_headers(r, resp)) {
            MHD_destroy_response(resp);
            resp = NULL;
        }
    } else {
        status = r->status;
        uint64_t size = r->resp_len >= 0 ? (uint64_t)r->resp_len : MHD_SIZE_UNKNOWN;
        /* libmicrohttpd allocates (and zeroes) block_size bytes with the
         * response, but fills chunked bodies straight into the connection's
         * buffer: only a sized body needs a real block. */
        resp = MHD_create_response_from_callback(size, r->resp_len >= 0 ? HIGH_WATER : 64,
                                                 stream_reader, r, stream_response_freed);
        if (resp != NULL) {
            r->refs++;
            r->stream_response = resp;
            if (!gw_req_add_module_headers(r, resp)) {
                MHD_destroy_response(resp);
                resp = NULL;
            }
        }
    }
    /* Stopping: the connection closes after this answer (nginx turns
     * keep-alive off while it shuts down), so that the drain ends. */
    if (resp != NULL && r->loop->draining && status != 101 &&
        MHD_add_response_header(resp, "Connection", "close") != MHD_YES) {
        MHD_destroy_response(resp);
        resp = NULL;
    }
    if (resp == NULL)
        return MHD_NO;
    r->queued = true;
    r->final_status = status;
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ok;
}

/* ---- the MHD side ------------------------------------------------------- */

void *gw_proxy_on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct gw_loop *l = cls;
    uint64_t head_since = gw_client_conn_line_done(conn);
    struct request *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->target = strdup(uri);
    if (r->target == NULL) {
        free(r);
        return NULL;
    }
    const char *q = strchr(r->target, '?');
    r->pathlen = q ? (size_t)(q - r->target) : strlen(r->target);
    mg__mhd_skip_query_records(uri); /* after the copy: see util.h */
    r->loop = l;
    r->conn = conn;
    r->refs = 1;
    r->mfd = -1;
    r->cfd = -1;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;
    gw_loop_set_owner(l, r->fd, r);
    r->resp_len = -1;
    r->start_us = mg__now_us();
    mg__buf_init(&r->resp_hdrs, (size_t)l->gw->cfg.limits.max_header_bytes * 4 + 65536);
    gw_list_push_back(&l->requests, &r->link_all);
    /* One timeout for the whole head, request line included (nginx's
     * client_header_timeout), not one for each. */
    r->timer_at_ms = head_since != 0 ? head_since : r->start_us / 1000;
    /* In deadline order (an earlier start goes before later ones): the
     * list's first entry is always the next to expire. */
    struct gw_link *after = l->heads.prev;
    while (after != &l->heads &&
           gw_container_of(after, struct request, link_timer)->timer_at_ms > r->timer_at_ms)
        after = after->prev;
    gw_list_push_back(after->next, &r->link_timer);
    l->nrequests++;
    return r;
}

static void client_address(struct request *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    strcpy(r->client, "-");
    if (ci == NULL || ci->client_addr == NULL)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        /* By hand: inet_ntop goes through sprintf, for every request. */
        const unsigned char *a =
            (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        char *p = r->client;
        for (int i = 0; i < 4; i++) {
            p = gw_fmt_u64(p, a[i]);
            *p++ = i < 3 ? '.' : '\0';
        }
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->client,
                  sizeof(r->client));
    }
}

/* Several Connection headers: their values joined with commas. */
static enum MHD_Result join_connection(void *cls, enum MHD_ValueKind kind, const char *k,
                                       const char *v)
{
    (void)kind;
    char *out = cls;
    if (v != NULL && strcasecmp(k, "Connection") == 0) {
        size_t at = strlen(out);
        if (at > 0)
            out[at++] = ',';
        strcpy(out + at, v);
    }
    return MHD_YES;
}

/* An absolute-form target (RFC 9112 §3.2.2, "GET http://host/path"):
 * servers must accept it. The request is routed and forwarded in origin
 * form, and its authority replaces the Host header (the client's own is
 * ignored). Returns false if the authority is empty. */
static bool take_absolute_form(struct request *r)
{
    const char *t = r->target;
    size_t skip = strncasecmp(t, "http://", 7) == 0 ? 7 : strncasecmp(t, "https://", 8) == 0 ? 8 : 0;
    if (skip == 0)
        return true;
    const char *auth = t + skip;
    size_t alen = strcspn(auth, "/?#");
    const char *rest = auth + alen;
    if (alen == 0)
        return false;
    /* userinfo@ is not host information (RFC 9110 §4.2.4): not passed on. */
    const char *at = memchr(auth, '@', alen);
    if (at != NULL) {
        alen -= (size_t)(at + 1 - auth);
        auth = at + 1;
    }
    if (alen == 0)
        return false;
    char *authority = strndup(auth, alen);
    char *target = malloc(strlen(rest) + 2);
    if (authority == NULL || target == NULL) {
        free(authority);
        free(target);
        return false;
    }
    snprintf(target, strlen(rest) + 2, "%s%s", rest[0] == '/' ? "" : "/", rest);
    free(r->target);
    r->target = target;
    r->authority = authority;
    const char *q = strchr(target, '?');
    r->pathlen = q ? (size_t)(q - target) : strlen(target);
    return true;
}

/* The method and target, then the head's framing (head_check.c).
 * Returns the status (400, 501) and sets the answer, or 0. */
static int check_head(struct request *r, const char *version, const struct gw_head_scan *h)
{
    const char *why = NULL, *cause = "bad_request";
    int status = 400;
    if (!mg__http_token(r->method, strlen(r->method))) {
        why = "the method is not a token";
    } else if (strcmp(r->method, "CONNECT") == 0 || strcmp(r->method, "TRACE") == 0) {
        /* Not for any resource (RFC 9110 §15.6.2): the gateway is no
         * forward proxy, and a module's catch-all route would answer a
         * CONNECT with a 2xx that the client takes for a tunnel; TRACE
         * echoes credentials back (nginx refuses both). */
        why = "the method is not supported by the gateway";
        status = 501;
        cause = "not_implemented";
    } else if (!take_absolute_form(r))
        why = "the request target has no authority, or memory ran out";
    else if (!gw_http_target_ok(r->target))
        why = "the request target has spaces or control characters";
    else
        why = gw_head_problem(h, version, r->authority != NULL, &status, &cause);
    if (why == NULL)
        return 0;
    gw_req_set_error(r, status, cause, "%s", why);
    return status;
}

static void route(struct request *r)
{
    struct gateway *gw = r->loop->gw;
    struct mg_route_match m;
    enum mg_route_result found =
        mg_router_match(gw->routes, r->method, r->target, r->pathlen, &m, NULL, 0);
    if (found == MG_ROUTE_NO_PATH) {
        gw_req_set_error(r, 404, "no_route", "no route for %.*s", (int)r->pathlen, r->target);
        return;
    }
    if (found == MG_ROUTE_NO_METHOD) {
        gw_req_set_error(r, 405, "method_not_allowed", "%s is not allowed on %.*s", r->method,
                         (int)r->pathlen, r->target);
        /* Rare: only now is the Allow list worth building. */
        size_t len = mg_router_allow_max(gw->routes);
        if ((r->extra_value = malloc(len)) != NULL) {
            mg_router_match(gw->routes, r->method, r->target, r->pathlen, &m, r->extra_value,
                            len);
            r->extra_name = "Allow";
        }
        return;
    }
    r->mod = m.data;
    r->route_pattern = m.pattern;
    enum gw_state state;
    uint64_t retry_at;
    r->inc = gw_module_acquire(r->mod, &state, &r->incarnation, &retry_at);
    if (r->inc != NULL) {
        r->incarnation = r->inc->number;
        return;
    }
    uint64_t now = mg__now_ms();
    uint64_t secs = retry_at > now ? (retry_at - now + 999) / 1000 : 1;
    if (state == GW_FAILED)
        secs = (gw->cfg.restart.backoff_max_ms + 999) / 1000;
    const char *cause = state == GW_FAILED ? "failed"
                        : state == GW_STARTING ? "starting"
                        : state == GW_STOPPING || state == GW_STOPPED ? "stopping"
                                                                      : "restarting";
    gw_req_set_error(r, 503, cause, "module %s is %s", r->mod->name,
                     state == GW_FAILED ? "failed (given up on until an admin restart)"
                                        : gw_state_name(state));
    if (asprintf(&r->extra_value, "%" PRIu64, secs) >= 0)
        r->extra_name = "Retry-After";
    else
        r->extra_value = NULL;
}

/* A request answered before the handler saw it (a head too slow, one
 * libmicrohttpd refused): what its access-log line needs, method "-". */
static void name_unhandled(struct request *r)
{
    r->method = "-";
    gw_request_id_pick(NULL, r->loop->rng, r->id);
    client_address(r);
}

/* True if the route the request matched is a WebSocket one (MG_WS). A
 * handshake on any other route is forwarded as the plain request it also
 * is (Upgrade and Connection are hop-by-hop), and answered as such: the
 * tunnel's own reader knows only a 101 or a short sized answer. */
static bool ws_route(const struct request *r)
{
    const mg_module *desc = r->mod->desc;
    for (size_t i = 0; i < desc->nroutes; i++)
        if (desc->routes[i].kind == MG_ROUTE_WS && r->route_pattern != NULL &&
            strcmp(desc->routes[i].pattern, r->route_pattern) == 0)
            return true;
    return false;
}

static enum MHD_Result first_call(struct request *r, const char *method, const char *version)
{
    struct gw_loop *l = r->loop;
    const struct gw_config *c = &l->gw->cfg;
    gw_list_remove(&r->link_timer); /* off l->heads: the head is in */
    r->method = method;
    client_address(r);
    gw_request_id_pick(MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-Id"),
                       l->rng, r->id);

    struct gw_head_scan h = { .bytes = strlen(r->target) + strlen(method) + 12 };
    gw_head_scan(r->conn, &h);
    if (h.bytes > c->limits.max_header_bytes) {
        gw_req_set_error(r, 431, "headers_too_large", "request headers are %zu bytes, over the limit of %u",
                  h.bytes, c->limits.max_header_bytes);
        /* libmicrohttpd builds an answer's head in the pool the request's
         * head filled: beside a head this large it may find no room, and
         * then closes the connection without a word. So this one goes on
         * the socket (and the connection closes after it, as nginx's). */
        answer_on_socket(r);
        return MHD_YES;
    }
    r->head_cost = mg__mhd_head_cost(r->conn, h.bytes, h.lines, h.cookie_len);
    if (r->head_cost + GW_ANSWER_ROOM > l->mhd_pool) {
        /* Within max_header_bytes, but so many fields (or cookies) that
         * their records leave no room for an answer, here or in the
         * module, which gets the same head and a few more lines. Refused
         * as a head too large, as Envoy refuses over 100 fields and Apache
         * over 100 lines; not passed on to fail as the module's fault. */
        gw_req_set_error(r, 431, "headers_too_large",
                         "request head takes %zu bytes of the connection's buffer: %zu of "
                         "text and 64 for each of its %u header fields and %d cookies; %zu "
                         "fit beside an answer (limits.max_header_bytes sets the room)",
                         r->head_cost, h.bytes, h.lines,
                         MHD_get_connection_values(r->conn, MHD_COOKIE_KIND, NULL, NULL),
                         l->mhd_pool - GW_ANSWER_ROOM);
        answer_on_socket(r);
        return MHD_YES;
    }
    r->forwarded_fors = h.forwarded_fors;
    if (check_head(r, version, &h) != 0)
        return queue_answer(r); /* and close: where this request ends is unclear */
    r->body_expected = gw_head_has_body(&h);
    r->has_host = h.hosts > 0 || r->authority != NULL;
    r->connection = h.connection;
    if (h.connections > 1) {
        /* Rare: several Connection headers; their tokens all count. */
        r->connection_joined = calloc(1, h.connection_bytes + 1);
        if (r->connection_joined == NULL) {
            gw_req_set_error(r, 500, "internal", "out of memory");
            return MHD_YES;
        }
        MHD_get_connection_values(r->conn, MHD_HEADER_KIND, join_connection,
                                  r->connection_joined);
        r->connection = r->connection_joined;
    }
    const char *body;
    const char *ctype;
    int status = gw_admin_public(l->gw, method, r->target, r->pathlen, &body, &ctype);
    if (status == 405) {
        gw_req_set_error(r, 405, "method_not_allowed", "%s is not allowed on %.*s", method,
                         (int)r->pathlen, r->target);
        if ((r->extra_value = strdup(GW_ADMIN_PUBLIC_ALLOW)) != NULL)
            r->extra_name = "Allow";
        return MHD_YES;
    }
    if (status != 0 && body == NULL) {
        gw_req_set_error(r, 500, "internal", "out of memory");
        return MHD_YES;
    }
    if (status != 0) {
        set_local(r, status, ctype, (char *)body);
        return MHD_YES;
    }
    route(r);
    if (r->local_status != 0)
        return MHD_YES;

    if (gw_tunnel_wanted(r->conn, method, r->connection) && ws_route(r)) {
        r->ws = true;
        gw_tunnel_start(r); /* on failure an answer (or the wait for one) is set */
        return MHD_YES;
    }
    int64_t content_length = -1;
    r->body_framed = h.lengths > 0 || h.codings > 0;
    if (h.lengths > 0) {
        errno = 0;
        unsigned long long v = strtoull(h.length, NULL, 10);
        if (errno == ERANGE)
            v = ULLONG_MAX;
        content_length = v > INT64_MAX ? INT64_MAX : (int64_t)v;
        if (v > c->limits.max_body_bytes) {
            gw_req_set_error(r, 413, "too_large", "request body of %llu bytes is over the limit of %" PRIu64,
                      v, c->limits.max_body_bytes);
            /* Answer now: reading a body we refuse would be wasted. */
            return queue_answer(r);
        }
        r->has_body = v > 0;
    } else if (h.codings > 0) {
        r->has_body = true;
    }
    if (start_transfer(r, content_length) != 0) {
        gw_req_transfer_end(r);
        gw_list_remove(&r->link_timer);
        gw_req_set_error(r, 500, "internal", "cannot start the transfer to module %s", r->mod->name);
    }
    return MHD_YES;
}

static enum MHD_Result take_upload(struct request *r, const char *data, size_t *size)
{
    const struct gw_config *c = &r->loop->gw->cfg;
    if (r->body_seen + *size > c->limits.max_body_bytes) {
        gw_req_transfer_end(r);
        gw_list_remove(&r->link_timer);
        gw_req_set_error(r, 413, "too_large", "request body is over the limit of %" PRIu64 " bytes",
                  c->limits.max_body_bytes);
        r->discarded = *size;
        *size = 0;
        answer_mid_body(r); /* or, if it cannot, after the body: gw_proxy_on_request */
        return MHD_YES;
    }
    size_t room = r->up.len < HIGH_WATER ? HIGH_WATER - r->up.len : 0;
    size_t take = *size < room ? *size : room;
    if (take > 0 && gw_bytes_append(&r->up, data, take, SIZE_MAX) != 0)
        return MHD_NO;
    r->body_seen += take; /* the rest is offered again */
    *size -= take;
    if (take > 0)
        upload_progress(r);
    if (r->read_paused)
        schedule_unpause(r);
    if (*size > 0)
        gw_req_suspend(r); /* full: the read callback resumes us when it drains */
    return MHD_YES;
}

enum MHD_Result gw_proxy_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    (void)cls, (void)conn, (void)url;
    struct request *r = *con_cls;
    if (r == NULL)
        return MHD_NO;
    if (r->client_gone)
        return MHD_NO; /* close: nobody is listening */
    if (!r->first_call_done) {
        r->first_call_done = true;
        /* Answering in this first call costs the keep-alive connection
         * (PERF.md), so it waits for the last call, unless a body is
         * coming that nobody will read: then the answer goes now, before
         * the body (and before any 100 Continue), and the connection
         * closes, as nginx does. */
        enum MHD_Result rc = first_call(r, method, version);
        if (rc == MHD_YES && r->local_status != 0 && !r->queued && !r->answered_raw &&
            r->body_expected)
            return queue_answer(r);
        return rc;
    }
    if (r->queued) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->answered_raw) {
        /* Answered on the socket (answer_mid_body): drop the rest of the
         * body, within reason, then close. */
        if (*upload_data_size == 0)
            return MHD_NO;
        r->discarded += *upload_data_size;
        *upload_data_size = 0;
        return r->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (r->local_status != 0 || (r->resp_ready && !r->stream_mode)) {
        /* The answer is known (a gateway error, or a module that answered
         * before reading the whole body). libmicrohttpd queues responses
         * only before or after the body, so drop the rest of it, within
         * reason, and answer at the last call. */
        if (*upload_data_size > 0) {
            r->discarded += *upload_data_size;
            *upload_data_size = 0;
            return r->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        return queue_answer(r);
    }
    if (r->resp_ready && *upload_data_size == 0)
        return queue_answer(r);
    if (*upload_data_size > 0)
        return take_upload(r, upload_data, upload_data_size);
    if (!r->up_done) {
        r->up_done = true;
        if (r->read_paused)
            schedule_unpause(r);
    }
    gw_req_suspend(r);
    return MHD_YES;
}

static void access_log(struct request *r, bool completed, uint64_t now_us)
{
    struct gw_loop *l = r->loop;
    char ts[32];
    mg__timestamp_cached(&l->ts_cache, ts);
    struct gw_access_entry e = {
        .time = ts, .id = r->id, .client = r->client, .method = r->method,
        .target = r->target, .module = r->mod ? r->mod->name : NULL, .cause = r->cause,
        .incarnation = r->incarnation, .status = r->final_status, .bytes = r->bytes_out,
        .duration_us = now_us - r->start_us,
    };
    if (!completed && !r->answered_raw) {
        e.status = 499; /* the client went away before the end */
        if (e.cause == NULL)
            e.cause = "client_gone";
    }
    gw_metrics_request(r->mod ? &r->mod->metrics : &l->gw->unrouted, e.status, e.duration_us);
    /* Written out well before the buffer's cap, so no line is dropped
     * however many requests end in one round. */
    if (l->access_buf.len > 64 * 1024)
        gw_loop_flush_access_log(l);
    if (l->access_buf.len == 0)
        l->access_since_ms = now_us / 1000;
    if (gw_access_format(&l->access_buf, &e) != 0)
        gw_log(GW_WARN, "loop %u: out of memory for an access-log line", l->index);
}

/* libmicrohttpd answers some broken requests itself, with a page of its
 * own, and closes: a request line or chunked body it cannot parse, a head
 * larger than its memory pool, a Content-Length it cannot represent. Such
 * a request is still logged and counted, with the status it got, as nginx
 * logs its own 400s. Returns false if libmicrohttpd queued nothing. */
static bool answered_by_mhd(struct request *r, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS);
    if (ci == NULL || ci->http_status == 0)
        return false;
    if (r->method == NULL) /* it never reached the handler */
        name_unhandled(r);
    r->final_status = (int)ci->http_status;
    switch (r->final_status) {
    case MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE: r->cause = "headers_too_large"; break;
    case MHD_HTTP_URI_TOO_LONG: r->cause = "uri_too_long"; break;
    case MHD_HTTP_CONTENT_TOO_LARGE: r->cause = "too_large"; break;
    case MHD_HTTP_HTTP_VERSION_NOT_SUPPORTED: r->cause = "bad_version"; break;
    default: r->cause = "bad_request"; break;
    }
    r->bytes_out = 0; /* its page's length is not told */
    return true;
}

void gw_proxy_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    struct request *r = *con_cls;
    *con_cls = NULL;
    if (r == NULL)
        return;
    struct gw_loop *l = r->loop;
    uint64_t now_us = mg__now_us(); /* one reading of the clock for all below */
    /* A client that leaves cancels its transfer: the module's next write
     * fails. An upgraded connection is being cleaned up by MHD itself. */
    r->urh = NULL;
    gw_req_transfer_end(r);
    gw_list_remove(&r->link_timer);
    gw_list_remove(&r->link_hup);
    gw_list_remove(&r->link_all);
    l->nrequests--;
    if (gw_loop_owner(l, r->fd) == r)
        gw_loop_set_owner(l, r->fd, NULL);
    if (!r->ws_open && r->cfd < 0)
        gw_client_conn_request_done(l, conn, now_us / 1000); /* its next request line is due */
    bool completed = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && r->queued;
    /* After an answer of its own, libmicrohttpd ends the request "with
     * error" even when the answer went out whole: logged as answered. */
    if (!r->queued && !r->answered_raw && answered_by_mhd(r, conn))
        completed = true;
    if (r->method != NULL)
        access_log(r, completed, now_us);
    gw_incarnation_release(r->inc);
    r->inc = NULL;
    r->conn = NULL;
    r->suspended = false;
    gw_req_unref(r);
}

void gw_proxy_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe)
{
    struct gw_loop *l = cls;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci == NULL)
        return;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add_explicit(&l->gw->connections, 1, memory_order_relaxed);
        gw_client_conn_started(l, ci->connect_fd, socket_context);
        /* Watched for the peer's hang-up only (edge-triggered: one event),
         * so that a request we hold notices a client that left;
         * libmicrohttpd does not watch suspended connections. */
        if (gw_loop_watch(l, ci->connect_fd, GW_FD_CLIENT_HUP, EPOLLRDHUP | EPOLLET, NULL,
                          true) != 0)
            gw_log(GW_WARN, "loop %u: cannot watch a client connection", l->index);
    } else {
        atomic_fetch_sub_explicit(&l->gw->connections, 1, memory_order_relaxed);
        gw_client_conn_closed(l, socket_context);
        gw_loop_unwatch(l, ci->connect_fd);
        /* A daemon at its share of max_connections takes its listen socket
         * back only in its next run: have one before the loop blocks. */
        l->resumed = true;
    }
}

/* The request has not come whole yet: its head, or a body still due. */
static bool request_incomplete(const struct request *r)
{
    return !r->first_call_done || (r->has_body && !r->up_done);
}

static void client_hangup(struct request *r)
{
    if (r->suspended) {
        /* libmicrohttpd does not watch a suspended connection. As nginx,
         * a client that ends its side while we wait is gone. */
        r->client_gone = true;
        gw_req_transfer_end(r);
        gw_list_remove(&r->link_timer);
        gw_req_resume(r);
        return;
    }
    /* The client ended its side, perhaps right after the last bytes of its
     * request, which libmicrohttpd has not read yet: decided once it has
     * (gw_proxy_check_hangups, after its next run). */
    if (request_incomplete(r))
        gw_list_push_back(&r->loop->hups, &r->link_hup);
}

void gw_proxy_check_hangups(struct gw_loop *l)
{
    for (struct gw_link *p = l->hups.next; p != &l->hups;) {
        struct request *r = gw_container_of(p, struct request, link_hup);
        p = p->next;
        if (!request_incomplete(r) || r->client_gone) {
            gw_list_remove(&r->link_hup); /* whole, or already given up */
            continue;
        }
        if (r->suspended)
            continue; /* libmicrohttpd reads on once the module takes more */
        char c;
        ssize_t n = recv(r->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0)
            continue; /* bytes libmicrohttpd has still to read: next time */
        gw_list_remove(&r->link_hup);
        if (n < 0)
            continue;
        /* At its end with the request not whole: it can never complete.
         * libmicrohttpd 0.9.75 may not notice: a read shorter than its
         * buffer clears its "readable" mark, and with edge-triggered epoll
         * the end of file that came with those last bytes brings no
         * further event (aborted uploads sat for its 90 s timeout, holding
         * the module connection). Shutting the socket down gives it one. */
        r->client_gone = true;
        gw_req_transfer_end(r);
        gw_list_remove(&r->link_timer);
        shutdown(r->fd, SHUT_RDWR);
    }
}

void gw_proxy_fd_event(struct gw_loop *l, int fd, int kind, uint32_t events)
{
    struct request *r = gw_loop_owner(l, fd);
    if (r == NULL)
        return;
    if (kind == GW_FD_CLIENT_HUP)
        client_hangup(r);
    else if (kind == GW_FD_TUNNEL_MODULE)
        gw_tunnel_module_event(r, events);
    else if (kind == GW_FD_TUNNEL_CLIENT)
        gw_tunnel_client_event(r, events);
}

/* ---- timers and events -------------------------------------------------- */

/* A client that has not sent its whole request head within
 * request_timeout_ms (one header line every few seconds keeps
 * libmicrohttpd's idle timeout from firing): it gets a 408, written
 * straight to the socket since libmicrohttpd has not handed us the request
 * yet (nothing else is being sent on the connection: it is between
 * requests), and the connection is shut down, which libmicrohttpd then
 * closes. As nginx's client_header_timeout. */
static void head_timed_out(struct request *r, unsigned timeout_ms)
{
    name_unhandled(r);
    r->cause = "timeout_head";
    r->final_status = 408;
    r->answered_raw = true;
    char msg[96];
    snprintf(msg, sizeof(msg), "the request head did not arrive within %u ms", timeout_ms);
    size_t len;
    char *answer = gw_error_message(408, msg, NULL, 0, r->cause, r->id, &len, &r->bytes_out);
    if (answer != NULL && send(r->fd, answer, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        r->bytes_out = 0;
    free(answer);
    shutdown(r->fd, SHUT_RDWR);
}

uint64_t gw_proxy_run_timers(struct gw_loop *l, uint64_t now)
{
    const struct gw_config *c = &l->gw->cfg;
    uint64_t next = gw_client_conn_run_timers(l, now);

    while (!gw_list_empty(&l->heads)) {
        struct request *r = gw_container_of(l->heads.next, struct request, link_timer);
        uint64_t due = r->timer_at_ms + c->limits.request_timeout_ms;
        if (due > now) {
            if (due < next)
                next = due;
            break;
        }
        gw_list_remove(&r->link_timer);
        head_timed_out(r, c->limits.request_timeout_ms);
    }

    while (!gw_list_empty(&l->header_waiters)) {
        struct request *r = gw_container_of(l->header_waiters.next, struct request, link_timer);
        uint64_t due = r->timer_at_ms + c->limits.request_timeout_ms;
        if (due > now) {
            if (due < next)
                next = due;
            break;
        }
        if (r->has_body && !r->up_done && r->up.len == 0)
            /* Nothing for the module to read: the client stopped sending
             * its body (nginx: client_body_timeout). */
            gw_req_set_error(r, 408, "timeout_body", "the request body stalled: no bytes for %u ms",
                             c->limits.request_timeout_ms);
        else
            gw_req_set_error(r, 504, "timeout_headers", "module %s sent no response headers "
                             "within %u ms", r->mod->name, c->limits.request_timeout_ms);
        fail_now(r);
    }
    unsigned idle = c->limits.stream_idle_timeout_ms;
    while (idle > 0 && !gw_list_empty(&l->idle_streams)) {
        struct request *r = gw_container_of(l->idle_streams.next, struct request, link_timer);
        uint64_t due = r->timer_at_ms + idle;
        if (due > now) {
            if (due < next)
                next = due;
            break;
        }
        if (r->ws_open) {
            r->cause = "timeout_idle";
            gw_tunnel_close(r);
            continue;
        }
        gw_req_set_error(r, 502, "timeout_idle", "stream from module %s was idle for %u ms",
                         r->mod->name, idle);
        fail_now(r);
    }
    while (!gw_list_empty(&l->death_waiters)) {
        struct request *r = gw_container_of(l->death_waiters.next, struct request, link_timer);
        uint64_t due = r->timer_at_ms + DEATH_WAIT_MS;
        if (due > now) {
            if (due < next)
                next = due;
            break;
        }
        if (r->ws_awaiting_death)
            gw_tunnel_close(r); /* alive: it only closed the connection */
        else
            gw_req_finish_failure(r);
    }
    return next;
}

void gw_proxy_module_died(struct gw_loop *l)
{
    for (struct gw_link *p = l->requests.next; p != &l->requests;) {
        struct request *r = gw_container_of(p, struct request, link_all);
        p = p->next;
        if (r->inc == NULL || !atomic_load_explicit(&r->inc->dead, memory_order_acquire))
            continue;
        if (r->ws_awaiting_death)
            gw_tunnel_close(r); /* now its close frame can say how */
        else if (r->easy != NULL || (r->mfd >= 0 && !r->ws_open))
            fail_now(r);
        else if (r->upstream_failed && !r->failure_known)
            gw_req_finish_failure(r); /* it was waiting to learn this */
    }
}


void gw_proxy_abort_all(struct gw_loop *l)
{
    for (struct gw_link *p = l->requests.next; p != &l->requests;) {
        struct request *r = gw_container_of(p, struct request, link_all);
        p = p->next;
        if (r->ws_open) {
            r->cause = "shutdown";
            gw_tunnel_close(r);
            continue;
        }
        if (r->easy != NULL || r->mfd >= 0 || (r->upstream_failed && !r->failure_known)) {
            if (r->cause == NULL)
                gw_req_set_error(r, 503, "shutdown", "the gateway is shutting down");
            fail_now(r);
        }
        gw_req_resume(r);
    }
}
