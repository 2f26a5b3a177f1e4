/*
 * Streaming responses in the module runtime.
 *
 * A streaming handler is a plain loop of blocking writes. It runs on the
 * connection's own thread (libmicrohttpd runs one per connection, see
 * runtime.c), inside the request's last access-handler call, and writes
 * its response to the connection's socket itself: the head at the first
 * write, then each write as one HTTP/1.1 chunk, sent before the write
 * returns. So a stream costs one thread, not two, holds no queue (a
 * client that stops reading blocks the write in the kernel's socket
 * buffer, which is the backpressure), and each chunk is copied once, by
 * the kernel.
 *
 * libmicrohttpd 0.9.75 can only send a response it was given whole, or
 * pull one from a content reader on its own schedule, which a handler
 * that holds the thread cannot feed. So once a stream has begun, the
 * connection is the stream's: its head says `Connection: close`, and
 * after the last chunk the access handler returns MHD_NO, which closes
 * it. The gateway opens a new connection to the module for the next
 * stream (a connect on a Unix socket; the thread it gets is the one a
 * stream handler thread used to cost). A handler that fails or returns
 * before its first write answers through libmicrohttpd like a unary
 * handler, and the connection stays open.
 *
 * Client gone: the client closing its end (POLLRDHUP, POLLHUP) or an
 * error on the socket fails the write in progress and every later one.
 * A HEAD, 204 or 304 answer is its head alone: the writes after it fail
 * too, so that the handler stops.
 */
#include <errno.h>
#include <stdarg.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "runtime.h"

struct mg_stream {
    struct mg_req *req;
    struct mg_res head;   /* status, headers, and an error set before start */
    int fd;               /* the connection's socket; -1 if unknown */
    bool started;         /* the head has been sent (or tried) */
    bool chunked;         /* the body goes in chunks; else it ends at the close */
    bool bodyless;        /* HEAD, 204, 304: a head and no body */
    bool bad_status;      /* the status set is not one to send: 500 instead */
    bool gone;            /* the client left, or nobody reads the body */
    bool failed;          /* mg_stream_error was called: no more writes */
};

/* A peer that closed its end, or an error on the socket, means the client
 * is gone. Waits up to timeout_ms (-1: for ever) for that or, with `out`,
 * for room to write. */
static void poll_client(struct mg_stream *s, bool out, int timeout_ms)
{
    if (s->gone || s->fd < 0)
        return;
    struct pollfd p = { .fd = s->fd, .events = POLLRDHUP | (out ? POLLOUT : 0) };
    int n;
    do
        n = poll(&p, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n < 0 || (n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))))
        s->gone = true;
}

/* Sends the iovecs whole, waiting while the socket is full; false if the
 * client went away first. */
static bool send_all(struct mg_stream *s, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0 && !s->gone) {
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
        ssize_t n = sendmsg(s->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                poll_client(s, true, -1);
            else if (errno != EINTR)
                s->gone = true;
            continue;
        }
        size_t left = (size_t)n;
        while (iovcnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return !s->gone;
}

/* The head libmicrohttpd would have sent, framing ours: the handler's
 * headers in order, but not those that frame the body or the connection,
 * which are this file's to say. */
static int build_head(struct mg_stream *s, struct mg_buf *b)
{
    const struct mg_res *h = &s->head;
    bool has_date = false, has_type = false;
    for (size_t i = 0; i < h->nheaders; i++) {
        has_date |= strcasecmp(h->headers[i].name, "Date") == 0;
        has_type |= strcasecmp(h->headers[i].name, "Content-Type") == 0;
    }
    int rc = mg__buf_printf(b, "HTTP/1.1 %d %s\r\n", h->status, mg__reason(h->status));
    if (rc == 0 && !has_date) {
        char date[64];
        mg__http_date(date);
        rc = mg__buf_printf(b, "Date: %s\r\n", date);
    }
    for (size_t i = 0; i < h->nheaders && rc == 0; i++) {
        const char *name = h->headers[i].name;
        if (strcasecmp(name, "Content-Length") != 0 && strcasecmp(name, "Transfer-Encoding") != 0 &&
            strcasecmp(name, "Connection") != 0)
            rc = mg__buf_printf(b, "%s: %s\r\n", name, h->headers[i].value);
    }
    if (rc == 0 && !has_type && h->status != 204 && h->status != 304)
        rc = mg__buf_printf(b, "Content-Type: text/plain; charset=utf-8\r\n");
    if (rc == 0 && s->chunked)
        rc = mg__buf_printf(b, "Transfer-Encoding: chunked\r\n");
    if (rc == 0)
        rc = mg__buf_printf(b, "Connection: close\r\n\r\n");
    return rc;
}

/* Sends `data` as the next piece of the body (a chunk, when chunked),
 * the head first if it has not gone yet. */
static int send_piece(struct mg_stream *s, const void *data, size_t len)
{
    struct mg_buf head;
    mg__buf_init(&head, SIZE_MAX - 1);
    struct iovec iov[4];
    int n = 0;
    if (!s->started) {
        s->started = true;
        char why[96];
        if (mg__bad_status(s->head.status, why, sizeof(why))) {
            /* Nothing has gone out: the answer becomes a 500 (see
             * mg__stream_start), and nobody reads what the handler writes. */
            s->bad_status = true;
            s->gone = true;
            return -1;
        }
        s->bodyless = strcmp(s->req->method, "HEAD") == 0 || s->head.status == 204 ||
                      s->head.status == 304;
        s->chunked = !s->bodyless && !s->req->http10;
        if (build_head(s, &head) != 0) {
            s->gone = true;
            return -1;
        }
        iov[n++] = (struct iovec){ head.data, head.len };
    }
    char size[24];
    if (!s->bodyless && len > 0) {
        if (s->chunked) {
            int k = snprintf(size, sizeof(size), "%zx\r\n", len);
            iov[n++] = (struct iovec){ size, (size_t)k };
        }
        iov[n++] = (struct iovec){ (void *)data, len };
        if (s->chunked)
            iov[n++] = (struct iovec){ (void *)"\r\n", 2 };
    }
    bool sent = n == 0 || send_all(s, iov, n);
    mg__buf_free(&head);
    if (s->bodyless)
        s->gone = true; /* nothing may follow the head */
    return sent ? 0 : -1;
}

void mg_stream_status(mg_stream *s, int status)
{
    if (!s->started)
        s->head.status = status;
}

int mg_stream_header(mg_stream *s, const char *name, const char *value)
{
    return s->started ? -1 : mg_res_header(&s->head, name, value);
}

int mg_stream_write(mg_stream *s, const void *data, size_t len)
{
    if (s->failed)
        return -1;
    if (s->started) {
        poll_client(s, false, 0);
        if (s->gone)
            return -1;
    }
    return send_piece(s, data, len);
}

int mg_stream_printf(mg_stream *s, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof(small))
        return mg_stream_write(s, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (big == NULL)
        return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = mg_stream_write(s, big, (size_t)n);
    free(big);
    return rc;
}

int mg_stream_error(mg_stream *s, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    /* The first error is the one that ends the stream (as for a unary
     * response); what the handler writes after it is refused, so that
     * the error stays the status, or the last chunk. */
    if (!s->failed)
        mg__res_set_error(&s->head, status, fmt, ap);
    s->failed = true;
    va_end(ap);
    return -1;
}

int mg_stream_client_gone(mg_stream *s)
{
    poll_client(s, false, 0);
    return s->gone;
}

int mg_stream_sleep(mg_stream *s, unsigned ms)
{
    uint64_t deadline = mg__now_ms() + ms;
    for (;;) {
        uint64_t now = mg__now_ms();
        if (now >= deadline || s->gone)
            return mg_stream_client_gone(s) ? -1 : 0;
        if (s->fd < 0) {
            struct timespec t = { (time_t)((deadline - now) / 1000),
                                  (long)((deadline - now) % 1000) * 1000000L };
            nanosleep(&t, NULL);
            continue;
        }
        poll_client(s, false, (int)(deadline - now));
    }
}

/* After the handler: the error text as the last chunk if it failed, then
 * the end of the body. */
static void finish(struct mg_stream *s, int rc)
{
    if (s->gone)
        return;
    if (rc != 0 || s->head.err_status != 0) {
        const char *msg = s->head.err_msg ? s->head.err_msg : "handler failed";
        char *tail = NULL;
        int n = asprintf(&tail, "error: %s\n", msg);
        if (n > 0)
            send_piece(s, tail, (size_t)n);
        free(tail);
    }
    if (s->chunked && !s->gone)
        send_all(s, &(struct iovec){ (void *)"0\r\n\r\n", 5 }, 1);
}

/* Before the connection closes: a TCP socket closed with bytes unread
 * (a client that pipelined its next request, which this connection will
 * not answer) is reset, and the reset throws away the end of the answer
 * still on its way. So the answer is ended first (FIN), and what the
 * client sends is read and dropped until it closes too, for 2 s and
 * 1 MiB at most, as nginx's lingering close. A Unix socket (the gateway)
 * keeps what was sent whatever is left unread. */
static void linger(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0 || ss.ss_family == AF_UNIX ||
        shutdown(fd, SHUT_WR) != 0)
        return;
    uint64_t deadline = mg__now_ms() + 2000;
    char buf[16 * 1024];
    for (size_t dropped = 0; dropped < 1024 * 1024;) {
        uint64_t now = mg__now_ms();
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0)
            return;
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return;
        dropped += n > 0 ? (size_t)n : 0;
    }
}

enum MHD_Result mg__stream_start(struct mg_req *req, mg_stream_fn fn)
{
    struct mg_stream s = { .req = req, .fd = -1 };
    mg__res_init(&s.head);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci != NULL)
        s.fd = ci->connect_fd;

    int rc = fn(req, &s);

    enum MHD_Result ok;
    if (s.bad_status) {
        char why[96];
        mg__bad_status(s.head.status, why, sizeof(why));
        ok = mg__answer_error(req, 500, why, NULL, NULL);
    } else if (!s.started) {
        /* Returned before its first write: answered as a unary handler. */
        struct MHD_Response *r = mg__res_to_mhd(&s.head, rc, req);
        ok = mg__queue(req->conn, s.head.status, r);
    } else {
        finish(&s, rc);
        if (!s.gone)
            linger(s.fd);
        /* The connection carried our own answer: libmicrohttpd must not
         * send anything more on it, so it is closed (see the top). */
        ok = MHD_NO;
    }
    mg__res_clear(&s.head);
    return ok;
}
