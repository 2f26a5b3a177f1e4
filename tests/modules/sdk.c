/*
 * sdk: a test module that uses each promise of the module SDK (SPEC §2,
 * modgate/module.h) the way a module author would, so that
 * tests/it/test_sdk.c can check them over HTTP. Answers are plain text of
 * a fixed shape; "[...]" brackets a value, so that "" and a missing value
 * ("(null)") read apart.
 *   GET  /sdk/cap/{a}/{b}       captures, percent-decoded
 *   GET  /sdk/cap/fixed/{b}     a literal segment beats a capture
 *   ANY  /sdk/wild/(anything)   method, raw path, raw query, the wildcard capture
 *   GET  /sdk/query             query arguments in order, and first values
 *   GET  /sdk/headers           the request headers named X-Sdk-*
 *   POST /sdk/body              mg_req_body and mg_req_read agree
 *   POST /sdk/upload            MG_UPLOAD: the body read as it arrives
 *   GET  /sdk/res               status, repeated headers, a replaced body
 *   GET  /sdk/printf?width=N    mg_res_printf, called twice
 *   GET  /sdk/status?code=N     mg_res_status with the given code
 *   GET  /sdk/header?name=N&value=V[&count=C]   mg_res_header with any name and
 *                               value (C times, for a head of any size)
 *   GET  /sdk/error?status=S    mg_res_error
 *   GET  /sdk/fail              returns -1 without setting an error
 *   GET  /sdk/stream/head       stream status and headers, before and after the first write
 *   GET  /sdk/stream/status?code=N&write=W     mg_stream_status with the given code, W writes
 *   GET  /sdk/stream/header?name=N&value=V     mg_stream_header with any name and value
 *   GET  /sdk/stream/fail?when=early|late&how=error|return[&then=write]
 *                               (then=write: a write after the error, its result logged)
 *   GET  /sdk/stream/forever    writes until the client goes away, and logs it
 *   GET  /sdk/stream/tiny       writes 1-byte chunks until the client goes away
 *   GET  /sdk/stream/linger?ms=N   one chunk, then waits for the client to go
 *                               away and cleans up for N ms after it
 *   POST /sdk/upload/linger?ms=N   MG_UPLOAD: reads until the upload breaks off,
 *                               then cleans up for N ms
 *   GET  /sdk/log?msg=M         mg_log lines
 *   GET  /sdk/stdout?msg=M      a printf line on stdout (the module's log too)
 *   GET  /sdk/ctype             Content-Type set twice with mg_res_header
 *   GET  /sdk/bare?status=S     returns S, with no message
 *   GET  /sdk/id                mg_req_id
 *   GET  /sdk/ws/forwarded      WebSocket: sends the X-Forwarded-For it got, as text
 *   GET  /sdk/ws/close_first    WebSocket: closes first, then reads until the session ends
 */
#include <modgate/module.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* "[value]" into buf, or "(null)". */
static const char *show(const char *v, char *buf, size_t len)
{
    if (v == NULL)
        return "(null)";
    snprintf(buf, len, "[%s]", v);
    return buf;
}

/* FNV-1a, 64 bits: a checksum the test computes too. */
#define FNV_INIT 0xcbf29ce484222325ull
static uint64_t fnv(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static long number(mg_req *req, const char *name, long dflt)
{
    const char *s = mg_req_query(req, name);
    return s ? strtol(s, NULL, 10) : dflt;
}

static int is(const char *a, const char *b)
{
    return a != NULL && strcmp(a, b) == 0;
}

/* A text answer built line by line (open_memstream), sent as the body. */
struct text {
    FILE *f;
    char *buf;
    size_t len;
};

static int text_send(mg_res *res, struct text *t)
{
    if (t->f == NULL || fclose(t->f) != 0)
        return mg_res_error(res, 500, "out of memory");
    mg_res_header(res, "Content-Type", "text/plain");
    int rc = mg_res_body(res, t->buf, t->len);
    free(t->buf);
    return rc;
}

/* Captures are percent-decoded ('+' stays '+' in a path); a name that the
 * pattern does not have is NULL. */
static int cap(mg_req *req, mg_res *res)
{
    char a[256], b[256];
    return mg_res_printf(res, 200, "text/plain", "a=%s b=%s none=%s\n",
                         show(mg_req_param(req, "a"), a, sizeof(a)),
                         show(mg_req_param(req, "b"), b, sizeof(b)),
                         mg_req_param(req, "none") ? "set" : "(null)");
}

/* Declared after /sdk/cap/{a}/{b}, and still the one for /sdk/cap/fixed/X. */
static int cap_fixed(mg_req *req, mg_res *res)
{
    char b[256];
    return mg_res_printf(res, 200, "text/plain", "fixed b=%s a=%s\n",
                         show(mg_req_param(req, "b"), b, sizeof(b)),
                         mg_req_param(req, "a") ? "set" : "(null)");
}

/* The request as the module sees it: method, path still encoded, the raw
 * query string, and the wildcard's capture "*" decoded. */
static int wild(mg_req *req, mg_res *res)
{
    char w[1024];
    return mg_res_printf(res, 200, "text/plain", "%s %s ?%s *=%s\n", mg_req_method(req),
                         mg_req_path(req), mg_req_query_string(req),
                         show(mg_req_param(req, "*"), w, sizeof(w)));
}

/* Every query argument in order (repeats kept, a key without '=' has the
 * value ""), what mg_req_query_at says past the end, and the first value
 * of a few names. */
static int query(mg_req *req, mg_res *res)
{
    struct text t = { 0 };
    t.f = open_memstream(&t.buf, &t.len);
    if (t.f == NULL)
        return -1;
    const char *k, *v;
    size_t n = mg_req_query_count(req);
    fprintf(t.f, "count=%zu\n", n);
    for (size_t i = 0; i < n && mg_req_query_at(req, i, &k, &v) == 0; i++)
        fprintf(t.f, "%zu: [%s]=[%s]\n", i, k, v);
    fprintf(t.f, "past end=%d\n", mg_req_query_at(req, n, &k, &v));
    static const char *const names[] = { "a", "flag", "sp ace", "none" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char buf[512];
        fprintf(t.f, "first %s=%s\n", names[i], show(mg_req_query(req, names[i]), buf, sizeof(buf)));
    }
    return text_send(res, &t);
}

/* Headers: looked up by any case (the first of repeats), and listed in
 * order (only X-Sdk-*: the gateway adds others). */
static int headers(mg_req *req, mg_res *res)
{
    struct text t = { 0 };
    t.f = open_memstream(&t.buf, &t.len);
    if (t.f == NULL)
        return -1;
    char buf[512];
    fprintf(t.f, "x-sdk-one=%s\n", show(mg_req_header(req, "x-sdk-one"), buf, sizeof(buf)));
    fprintf(t.f, "X-SDK-REP=%s\n", show(mg_req_header(req, "X-SDK-REP"), buf, sizeof(buf)));
    fprintf(t.f, "x-sdk-none=%s\n", show(mg_req_header(req, "x-sdk-none"), buf, sizeof(buf)));
    const char *k, *v;
    size_t n = mg_req_header_count(req);
    for (size_t i = 0; i < n && mg_req_header_at(req, i, &k, &v) == 0; i++)
        if (strncasecmp(k, "X-Sdk-", 6) == 0)
            fprintf(t.f, "at: %s=[%s]\n", k, v);
    fprintf(t.f, "past end=%d\n", mg_req_header_at(req, n, &k, &v));
    return text_send(res, &t);
}

/* A collected body: mg_req_body holds it whole, and mg_req_read hands out
 * the same bytes in pieces (7 at a time here) and then 0. */
static int body(mg_req *req, mg_res *res)
{
    size_t len;
    const void *data = mg_req_body(req, &len);
    uint64_t whole = fnv(FNV_INIT, data, len), pieces = FNV_INIT;
    size_t total = 0;
    char buf[7];
    long got;
    while ((got = mg_req_read(req, buf, sizeof(buf))) > 0) {
        pieces = fnv(pieces, buf, (size_t)got);
        total += (size_t)got;
    }
    long again = mg_req_read(req, buf, sizeof(buf));
    return mg_res_printf(res, 200, "text/plain",
                         "len=%zu fnv=%016llx read=%zu read_fnv=%016llx last=%ld again=%ld\n", len,
                         (unsigned long long)whole, total, (unsigned long long)pieces, got, again);
}

/* A streaming upload: the handler runs as soon as the headers are in and
 * reads the body as it arrives, 4 KiB at a time, so it never holds more
 * than that. It logs when the first bytes are in (the test waits for that
 * line before it sends the rest) and when a read fails (an upload over
 * the limit, or one that broke off). mg_req_body has nothing here. */
static int upload(mg_req *req, mg_res *res)
{
    size_t body_len;
    mg_req_body(req, &body_len);
    char buf[4096];
    uint64_t h = FNV_INIT;
    size_t total = 0;
    long got;
    while ((got = mg_req_read(req, buf, sizeof(buf))) > 0) {
        if (total == 0)
            mg_log(MG_LOG_INFO, "upload %s: first bytes in", mg_req_id(req));
        h = fnv(h, buf, (size_t)got);
        total += (size_t)got;
    }
    if (got < 0) {
        mg_log(MG_LOG_INFO, "upload %s: read failed after %zu bytes", mg_req_id(req), total);
        return mg_res_error(res, 400, "the upload broke off after %zu bytes", total);
    }
    return mg_res_printf(res, 200, "text/plain", "len=%zu fnv=%016llx body_len=%zu\n", total,
                         (unsigned long long)h, body_len);
}

/* A unary response: status, a header twice (both kept, in order), a bad
 * header name refused, a body that replaces an earlier one and holds a
 * NUL byte. */
static int response(mg_req *req, mg_res *res)
{
    (void)req;
    mg_res_status(res, 201);
    mg_res_header(res, "Set-Cookie", "a=1");
    mg_res_header(res, "Set-Cookie", "b=2");
    char rc[16];
    snprintf(rc, sizeof(rc), "%d", mg_res_header(res, "Bad:Name", "x"));
    mg_res_header(res, "X-Bad-Header-Rc", rc);
    mg_res_header(res, "Content-Type", "application/octet-stream");
    mg_res_body(res, "first body", 10);
    return mg_res_body(res, "sec\0ond\n", 8);
}

/* mg_res_printf sets status, Content-Type and body: a second call
 * replaces what the first set. `width` pads the number (a long body). */
static int printf_twice(mg_req *req, mg_res *res)
{
    mg_res_printf(res, 200, "text/x-first", "first\n");
    return mg_res_printf(res, 202, "text/x-second", "n=%0*d\n", (int)number(req, "width", 1), 42);
}

/* Any status a module sets. */
static int status(mg_req *req, mg_res *res)
{
    mg_res_status(res, (int)number(req, "code", 200));
    return mg_res_body(res, "status set\n", 11);
}

/* Any header a module adds: the answer says what mg_res_header returned.
 * Whatever it was, the client gets a well-formed answer. */
static int header(mg_req *req, mg_res *res)
{
    const char *name = mg_req_query(req, "name"), *value = mg_req_query(req, "value");
    long count = number(req, "count", 1);
    int rc = 0;
    for (long i = 0; i < count && rc == 0; i++)
        rc = mg_res_header(res, name ? name : "", value ? value : "");
    return mg_res_printf(res, 200, "text/plain", "rc=%d\n", rc);
}

/* mg_res_error: the client gets the status and the JSON error body, not
 * the headers and body set before. The message needs JSON escaping. */
static int error(mg_req *req, mg_res *res)
{
    mg_res_header(res, "X-Before-Error", "dropped");
    mg_res_body(res, "dropped\n", 8);
    return mg_res_error(res, (int)number(req, "status", 418), "no \"tea\"\there\n%d", 7);
}

/* A handler that fails without saying why: the client still gets a
 * well-formed 500 with a JSON error body, not what it had built. */
static int fail(mg_req *req, mg_res *res)
{
    (void)req;
    mg_res_printf(res, 200, "text/plain", "not this\n");
    return -1;
}

/* Status and headers of a stream may be set until the first write (a
 * header twice is kept twice; Content-Type replaces the default); after
 * it, a header is refused and a status ignored. */
static int stream_head(mg_req *req, mg_stream *s)
{
    (void)req;
    mg_stream_status(s, 203);
    mg_stream_header(s, "content-type", "application/x-ndjson"); /* any case */
    mg_stream_header(s, "X-Sdk-Rep", "1");
    mg_stream_header(s, "X-Sdk-Rep", "2");
    if (mg_stream_write(s, "one\n", 4) != 0)
        return -1;
    int late = mg_stream_header(s, "X-Late", "1");
    mg_stream_status(s, 500);
    if (mg_stream_printf(s, "late header rc=%d\n", late) != 0)
        return -1;
    return mg_stream_write(s, "two\n", 4);
}

/* Any status a stream sets, then `write` writes of "written\n" (0: none),
 * up to the first that fails; the log says how it ended. */
static int stream_status(mg_req *req, mg_stream *s)
{
    mg_stream_status(s, (int)number(req, "code", 200));
    long n = number(req, "write", 1), i;
    for (i = 0; i < n; i++)
        if (mg_stream_write(s, "written\n", 8) != 0)
            break;
    mg_log(MG_LOG_INFO, "stream status %s: %s after %ld of %ld writes", mg_req_id(req),
           i < n ? "a write failed" : "all written", i, n);
    return i < n ? -1 : 0;
}

/* Any header a stream adds, as for /sdk/header. */
static int stream_header(mg_req *req, mg_stream *s)
{
    const char *name = mg_req_query(req, "name"), *value = mg_req_query(req, "value");
    long count = number(req, "count", 1);
    int rc = 0;
    for (long i = 0; i < count && rc == 0; i++)
        rc = mg_stream_header(s, name ? name : "", value ? value : "");
    return mg_stream_printf(s, "rc=%d\n", rc);
}

/* A stream that fails `when`=early (before its first chunk: the client
 * gets the status and JSON error, not the header set before) or late
 * (after two chunks: the error text is the last chunk), by mg_stream_error
 * (`how`=error) or by returning -1 (`how`=return). */
static int stream_fail(mg_req *req, mg_stream *s)
{
    bool late = is(mg_req_query(req, "when"), "late");
    bool by_error = is(mg_req_query(req, "how"), "error");
    mg_stream_header(s, "X-Before-Error", "dropped when early");
    if (late && (mg_stream_write(s, "a\n", 2) != 0 || mg_stream_write(s, "b\n", 2) != 0))
        return -1;
    if (by_error) {
        mg_stream_error(s, 409, "stopped %s", late ? "late" : "early");
        if (is(mg_req_query(req, "then"), "write")) {
            /* Refused: the error stays the status, or the last chunk. */
            int rc = mg_stream_write(s, "after\n", 6);
            mg_stream_error(s, 418, "a second error is ignored");
            mg_log(MG_LOG_INFO, "stream fail %s: write after the error: %d", mg_req_id(req), rc);
            return 0;
        }
        return -1;
    }
    return -1;
}

/* Writes 1 KiB chunks until a write fails because the client went away
 * (at most 1 GiB), then logs how it ended. */
static int stream_forever(mg_req *req, mg_stream *s)
{
    char chunk[1024];
    memset(chunk, 'f', sizeof(chunk));
    long i;
    for (i = 0; i < 1024 * 1024; i++)
        if (mg_stream_write(s, chunk, sizeof(chunk)) != 0)
            break;
    mg_log(MG_LOG_INFO, "forever %s: %s after %ld chunks (client_gone=%d)", mg_req_id(req),
           i < 1024 * 1024 ? "write failed" : "all written", i, mg_stream_client_gone(s));
    return i < 1024 * 1024 ? -1 : 0;
}

/* One byte per write, as a handler sending small events does, until a
 * write fails (at most 1 GiB): what it queues for a client that does not
 * read is bounded in memory, not only in bytes of data. */
static int stream_tiny(mg_req *req, mg_stream *s)
{
    long i;
    for (i = 0; i < 1024L * 1024 * 1024; i++)
        if (mg_stream_write(s, "t", 1) != 0)
            break;
    mg_log(MG_LOG_INFO, "tiny %s: write failed after %ld writes", mg_req_id(req), i);
    return -1;
}

/* Work a handler does after its client left (closing a file, a database
 * transaction): `ms` of it, then a line saying it is done. */
static void linger_cleanup(mg_req *req, const char *what)
{
    long ms = number(req, "ms", 1000);
    mg_log(MG_LOG_INFO, "%s %s: cleaning up for %ld ms", what, mg_req_id(req), ms);
    struct timespec ts = { ms / 1000, ms % 1000 * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
    mg_log(MG_LOG_INFO, "%s %s: cleaned up", what, mg_req_id(req));
}

/* One chunk, then waits (up to 60 s) for the client to go away, and
 * cleans up after it. */
static int stream_linger(mg_req *req, mg_stream *s)
{
    if (mg_stream_write(s, "here\n", 5) != 0)
        return -1;
    for (int i = 0; i < 600 && mg_stream_sleep(s, 100) == 0; i++)
        ;
    mg_log(MG_LOG_INFO, "linger %s: client gone=%d", mg_req_id(req), mg_stream_client_gone(s));
    linger_cleanup(req, "linger");
    return -1;
}

/* Reads the upload until it ends or breaks off, then cleans up. */
static int upload_linger(mg_req *req, mg_res *res)
{
    char buf[4096];
    size_t total = 0;
    long got;
    while ((got = mg_req_read(req, buf, sizeof(buf))) > 0) {
        if (total == 0)
            mg_log(MG_LOG_INFO, "upload linger %s: first bytes in", mg_req_id(req));
        total += (size_t)got;
    }
    mg_log(MG_LOG_INFO, "upload linger %s: read returned %ld after %zu bytes", mg_req_id(req),
           got, total);
    linger_cleanup(req, "upload linger");
    return mg_res_printf(res, 200, "text/plain", "len=%zu\n", total);
}

/* mg_log: one timestamped line per call, at each level, however long. */
static int log_lines(mg_req *req, mg_res *res)
{
    const char *msg = mg_req_query(req, "msg");
    const char *id = mg_req_id(req);
    mg_log(MG_LOG_DEBUG, "log %s: debug %s", id, msg ? msg : "");
    mg_log(MG_LOG_INFO, "log %s: info %s", id, msg ? msg : "");
    mg_log(MG_LOG_WARN, "log %s: warn %s", id, msg ? msg : "");
    mg_log(MG_LOG_ERROR, "log %s: error %s\n", id, msg ? msg : ""); /* own newline */
    char *big = malloc(5001);
    if (big == NULL)
        return -1;
    memset(big, 'x', 5000);
    big[5000] = '\0';
    mg_log(MG_LOG_INFO, "log %s: long %s.", id, big);
    free(big);
    return mg_res_printf(res, 200, "text/plain", "logged\n");
}

/* printf to stdout, which the gateway points at the module's log: the line
 * must be there at once, not when a buffer fills or the module exits. */
static int stdout_line(mg_req *req, mg_res *res)
{
    const char *msg = mg_req_query(req, "msg");
    printf("stdout %s: %s\n", mg_req_id(req), msg ? msg : "");
    return mg_res_printf(res, 200, "text/plain", "printed\n");
}

/* Content-Type has one value: the second mg_res_header replaces the first. */
static int ctype(mg_req *req, mg_res *res)
{
    (void)req;
    mg_res_header(res, "Content-Type", "a/b");
    mg_res_header(res, "content-type", "c/d");
    mg_res_body(res, "typed\n", 6);
    return 0;
}

/* A status returned without a message. */
static int bare(mg_req *req, mg_res *res)
{
    (void)res;
    return (int)number(req, "status", 418);
}

/* mg_req_id: the request id the gateway forwarded. */
static int id(mg_req *req, mg_res *res)
{
    return mg_res_printf(res, 200, "text/plain", "%s\n", mg_req_id(req));
}

/* The X-Forwarded-For a WebSocket handshake brought, as the first message. */
/* Closes first, then waits for the client's close frame, which may never
 * come: the wait must end by itself. */
static int ws_close_first(mg_req *req, mg_ws *ws)
{
    uint64_t t0 = monotonic_ms();
    mg_ws_close(ws, 1000, "bye");
    const void *data;
    int type;
    while (mg_ws_recv(ws, &data, &type) >= 0)
        ;
    mg_log(MG_LOG_INFO, "ws close_first %s: the session ended after %llu ms", mg_req_id(req),
           (unsigned long long)(monotonic_ms() - t0));
    return 0;
}

static int ws_forwarded(mg_req *req, mg_ws *ws)
{
    const char *xff = mg_req_header(req, "X-Forwarded-For");
    return mg_ws_send(ws, xff ? xff : "(none)", strlen(xff ? xff : "(none)"), MG_WS_TEXT);
}

MG_MODULE(sdk,
          MG_GET("/sdk/cap/{a}/{b}", cap),
          MG_GET("/sdk/cap/fixed/{b}", cap_fixed),
          MG_ANY("/sdk/wild/*", wild),
          MG_GET("/sdk/query", query),
          MG_GET("/sdk/headers", headers),
          MG_POST("/sdk/body", body),
          MG_UPLOAD("POST", "/sdk/upload", upload),
          MG_GET("/sdk/res", response),
          MG_GET("/sdk/printf", printf_twice),
          MG_GET("/sdk/status", status),
          MG_GET("/sdk/header", header),
          MG_GET("/sdk/error", error),
          MG_GET("/sdk/fail", fail),
          MG_STREAM_GET("/sdk/stream/head", stream_head),
          MG_STREAM_GET("/sdk/stream/status", stream_status),
          MG_STREAM_GET("/sdk/stream/header", stream_header),
          MG_STREAM_GET("/sdk/stream/fail", stream_fail),
          MG_STREAM_GET("/sdk/stream/forever", stream_forever),
          MG_STREAM_GET("/sdk/stream/tiny", stream_tiny),
          MG_STREAM_GET("/sdk/stream/linger", stream_linger),
          MG_UPLOAD("POST", "/sdk/upload/linger", upload_linger),
          MG_GET("/sdk/log", log_lines),
          MG_GET("/sdk/stdout", stdout_line),
          MG_GET("/sdk/ctype", ctype),
          MG_GET("/sdk/bare", bare),
          MG_GET("/sdk/id", id),
          MG_WS("/sdk/ws/forwarded", ws_forwarded),
          MG_WS("/sdk/ws/close_first", ws_close_first));
