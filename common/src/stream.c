/*
 * Streaming responses in the module runtime.
 *
 * A streaming handler is a plain loop of writes, so it runs on a thread of
 * its own. Its writes go into a small queue of chunks; MHD's connection
 * thread (one per connection, see runtime.c) takes them out in the
 * response's content reader, blocking while the queue is empty. The
 * writer blocks while the queue holds HIGH_WATER bytes or more, so a
 * client that stops reading stops the handler instead of growing memory.
 * The bytes counted are the chunks' allocations, not only their data: a
 * handler writing a byte at a time would otherwise queue 64 Ki chunks,
 * some 2 MiB, per stream.
 *
 * Lifetime: the stream (which then owns the request) is shared by the
 * handler thread, the MHD connection and, once queued, the MHD response;
 * each holds a reference and the last one frees it.
 *
 * Client gone: the stream keeps its own dup of the connection's socket, so
 * a write (or mg_stream_sleep) can poll it for the peer's hang-up at any
 * time without racing MHD's close and a reuse of the descriptor number.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

#define HIGH_WATER (64 * 1024)

struct chunk {
    struct chunk *next;
    size_t len, off;
    char data[];
};

struct mg_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    struct mg_req *req;
    mg_stream_fn fn;
    struct mg_res head;   /* status, headers, and an error set before start */
    int rc;               /* the handler's return value */
    struct chunk *first, *last;
    size_t queued;        /* bytes the queued chunks hold, headers included */
    bool started, done, gone;
    bool failed;          /* mg_stream_error was called: no more writes */
    char *tail;           /* error text sent as the last chunk */
    size_t tail_len, tail_off;
    int fd;               /* our dup of the client socket, -1 if none */
};

static void stream_unref(struct mg_stream *s)
{
    pthread_mutex_lock(&s->mu);
    int left = --s->refs;
    pthread_mutex_unlock(&s->mu);
    if (left > 0)
        return;
    while (s->first != NULL) {
        struct chunk *c = s->first;
        s->first = c->next;
        free(c);
    }
    mg__res_clear(&s->head);
    free(s->tail);
    if (s->fd >= 0)
        close(s->fd);
    mg__req_free(s->req);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Called with s->mu held. A peer that closed its end, or an error on the
 * socket, means the client is gone. */
static bool peer_hung_up(struct mg_stream *s, int timeout_ms)
{
    if (s->gone)
        return true;
    if (s->fd < 0)
        return false;
    struct pollfd p = { .fd = s->fd, .events = POLLRDHUP };
    if (poll(&p, 1, timeout_ms) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
        s->gone = true;
    return s->gone;
}

void mg_stream_status(mg_stream *s, int status)
{
    pthread_mutex_lock(&s->mu);
    if (!s->started)
        s->head.status = status;
    pthread_mutex_unlock(&s->mu);
}

int mg_stream_header(mg_stream *s, const char *name, const char *value)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->started ? -1 : mg__res_add_header(&s->head, name, value);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int mg_stream_write(mg_stream *s, const void *data, size_t len)
{
    struct chunk *c = malloc(sizeof(*c) + len);
    if (c == NULL)
        return -1;
    c->next = NULL;
    c->len = len;
    c->off = 0;
    memcpy(c->data, data, len);

    pthread_mutex_lock(&s->mu);
    while (!s->failed && !peer_hung_up(s, 0) && s->queued >= HIGH_WATER)
        pthread_cond_wait(&s->cv, &s->mu);
    if (s->gone || s->failed) {
        pthread_mutex_unlock(&s->mu);
        free(c);
        return -1;
    }
    if (len > 0) {
        if (s->last != NULL)
            s->last->next = c;
        else
            s->first = c;
        s->last = c;
        s->queued += sizeof(*c) + len;
        c = NULL;
    }
    s->started = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(c);
    return 0;
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
    pthread_mutex_lock(&s->mu);
    /* The first error is the one that ends the stream (as for a unary
     * response); what the handler writes after it is refused, so that
     * the error stays the status, or the last chunk. */
    if (!s->failed)
        mg__res_set_error(&s->head, status, fmt, ap);
    s->failed = true;
    pthread_mutex_unlock(&s->mu);
    va_end(ap);
    return -1;
}

int mg_stream_client_gone(mg_stream *s)
{
    pthread_mutex_lock(&s->mu);
    bool gone = peer_hung_up(s, 0);
    pthread_mutex_unlock(&s->mu);
    return gone;
}

int mg_stream_sleep(mg_stream *s, unsigned ms)
{
    uint64_t deadline = mg__now_ms() + ms;
    for (;;) {
        uint64_t now = mg__now_ms();
        if (now >= deadline)
            return mg_stream_client_gone(s) ? -1 : 0;
        /* Poll the socket without the lock held; the descriptor is ours. */
        struct pollfd p = { .fd = s->fd, .events = POLLRDHUP };
        int n = poll(&p, s->fd >= 0 ? 1 : 0, (int)(deadline - now));
        if (n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            pthread_mutex_lock(&s->mu);
            s->gone = true;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            return -1;
        }
    }
}

static void *handler_thread(void *arg)
{
    struct mg_stream *s = arg;
    int rc = s->fn(s->req, s);

    pthread_mutex_lock(&s->mu);
    s->rc = rc;
    s->done = true;
    if (s->started && !s->gone && (rc != 0 || s->head.err_status != 0)) {
        const char *msg = s->head.err_msg ? s->head.err_msg : "handler failed";
        int n = asprintf(&s->tail, "error: %s\n", msg);
        s->tail_len = n > 0 ? (size_t)n : 0;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
    mg__handler_thread_done();
    return NULL;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct mg_stream *s = cls;
    ssize_t n;
    pthread_mutex_lock(&s->mu);
    while (s->first == NULL && !s->done && !s->gone)
        pthread_cond_wait(&s->cv, &s->mu);
    if (s->first != NULL) {
        struct chunk *c = s->first;
        size_t take = c->len - c->off < max ? c->len - c->off : max;
        memcpy(buf, c->data + c->off, take);
        c->off += take;
        s->queued -= take;
        if (c->off == c->len) {
            s->first = c->next;
            if (s->first == NULL)
                s->last = NULL;
            s->queued -= sizeof(*c);
            free(c);
        }
        pthread_cond_broadcast(&s->cv);
        n = (ssize_t)take;
    } else if (s->gone) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (s->tail_off < s->tail_len) {
        size_t take = s->tail_len - s->tail_off < max ? s->tail_len - s->tail_off : max;
        memcpy(buf, s->tail + s->tail_off, take);
        s->tail_off += take;
        n = (ssize_t)take;
    } else {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void stream_response_freed(void *cls)
{
    stream_unref(cls);
}

void mg__stream_connection_closed(struct mg_stream *s)
{
    /* Nobody reads the queue any more, whether the client left, the body
     * ended, or there was none to send (HEAD, 204, 304: libmicrohttpd
     * never calls the reader). A handler still writing must stop. */
    pthread_mutex_lock(&s->mu);
    s->gone = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
}

enum MHD_Result mg__stream_start(struct mg_req *req, mg_stream_fn fn)
{
    struct MHD_Connection *conn = req->conn;
    struct mg_stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return MHD_NO;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    mg__res_init(&s->head);
    s->req = req;
    s->fn = fn;
    s->refs = 2; /* handler thread + connection */
    s->fd = -1;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci != NULL)
        s->fd = fcntl(ci->connect_fd, F_DUPFD_CLOEXEC, 3);
    req->stream = s;

    int err = mg__start_handler_thread(handler_thread, s);
    if (err != 0) {
        s->refs = 1;
        mg_log(MG_LOG_ERROR, "cannot start a stream handler thread: %s", strerror(err));
        return mg__answer_error(req, 503, "no thread for the stream", NULL, NULL);
    }

    pthread_mutex_lock(&s->mu);
    while (!s->started && !s->done)
        pthread_cond_wait(&s->cv, &s->mu);
    bool started = s->started;
    pthread_mutex_unlock(&s->mu);

    struct MHD_Response *r;
    int status;
    char bad[96];
    if (!started) {
        /* Returned before its first chunk: answer as a unary handler. */
        r = mg__res_to_mhd(&s->head, s->rc, req);
        status = s->head.status;
    } else if (mg__bad_status(s->head.status, bad, sizeof(bad))) {
        /* Nothing has gone out yet: answer with the error instead, and
         * fail the handler's writes, which nobody will read. */
        pthread_mutex_lock(&s->mu);
        s->gone = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        status = 500;
        r = mg__error_response(bad, req);
    } else {
        /* The handler no longer touches head once it has started. */
        status = s->head.status;
        pthread_mutex_lock(&s->mu);
        s->refs++;
        pthread_mutex_unlock(&s->mu);
        /* Chunked: MHD fills the connection's own buffer, so the response's
         * block (allocated and zeroed per response) can be tiny. */
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64, stream_reader, s,
                                              stream_response_freed);
        if (r == NULL)
            stream_unref(s);
        else if (mg__head_without_length(r, req->method) != 0 ||
                 mg__add_headers(r, &s->head) != 0 ||
                 (MHD_get_response_header(r, "Content-Type") == NULL &&
                  MHD_add_response_header(r, "Content-Type", "text/plain; charset=utf-8") !=
                      MHD_YES)) {
            MHD_destroy_response(r);
            r = NULL;
        }
    }
    return mg__queue(conn, status, r);
}
