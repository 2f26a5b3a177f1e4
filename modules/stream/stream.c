/*
 * stream: streaming responses, the fixtures for pass-through, SSE,
 * backpressure and mid-stream failures.
 *   GET /stream/count?n=N&interval_ms=M   N lines "line i\n", one chunk each, M ms apart
 *   GET /stream/sse?n=N&interval_ms=M     N events "data: i\n\n" (text/event-stream)
 *   GET /stream/fail?after=K              K lines, then a handler error
 *   GET /stream/bytes?n=N                 N bytes in 64 KiB chunks; byte i is i % 251
 * Each handler ends by logging "NAME: ended after K of N chunks", plus
 * " (client gone)" when a write failed.
 */
#include <modgate/module.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BYTES_CHUNK (64 * 1024)

/* Reads query argument `name` as an integer in [min, max]; 0 or -1. */
static int arg(mg_req *req, const char *name, long dflt, long min, long max, long *out)
{
    const char *s = mg_req_query(req, name);
    *out = dflt;
    if (s == NULL)
        return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int ended(const char *name, long k, long n, int gone)
{
    mg_log(MG_LOG_INFO, "%s: ended after %ld of %ld chunks%s", name, k, n,
           gone ? " (client gone)" : "");
    return gone ? -1 : 0;
}

static int count(mg_req *req, mg_stream *s)
{
    long n, ms;
    if (arg(req, "n", 10, 0, 10000000, &n) != 0 || arg(req, "interval_ms", 0, 0, 3600000, &ms) != 0)
        return mg_stream_error(s, 400, "n and interval_ms must be non-negative integers");
    long i;
    for (i = 0; i < n; i++) {
        if (i > 0 && ms > 0 && mg_stream_sleep(s, (unsigned)ms) != 0)
            return ended("count", i, n, 1);
        if (mg_stream_printf(s, "line %ld\n", i) != 0)
            return ended("count", i, n, 1);
    }
    return ended("count", i, n, 0);
}

static int sse(mg_req *req, mg_stream *s)
{
    long n, ms;
    if (arg(req, "n", 10, 0, 10000000, &n) != 0 || arg(req, "interval_ms", 0, 0, 3600000, &ms) != 0)
        return mg_stream_error(s, 400, "n and interval_ms must be non-negative integers");
    mg_stream_header(s, "Content-Type", "text/event-stream");
    mg_stream_header(s, "Cache-Control", "no-cache");
    long i;
    for (i = 0; i < n; i++) {
        if (i > 0 && ms > 0 && mg_stream_sleep(s, (unsigned)ms) != 0)
            return ended("sse", i, n, 1);
        if (mg_stream_printf(s, "data: %ld\n\n", i) != 0)
            return ended("sse", i, n, 1);
    }
    return ended("sse", i, n, 0);
}

static int fail(mg_req *req, mg_stream *s)
{
    long k;
    if (arg(req, "after", 3, 0, 10000000, &k) != 0)
        return mg_stream_error(s, 400, "after must be a non-negative integer");
    for (long i = 0; i < k; i++)
        if (mg_stream_printf(s, "line %ld\n", i) != 0)
            return ended("fail", i, k, 1);
    ended("fail", k, k, 0);
    return mg_stream_error(s, 500, "failed on purpose after %ld lines", k);
}

static unsigned char pattern[BYTES_CHUNK + 251];
static pthread_once_t pattern_once = PTHREAD_ONCE_INIT;

static void fill_pattern(void)
{
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (unsigned char)(i % 251);
}

static int bytes(mg_req *req, mg_stream *s)
{
    long n;
    if (arg(req, "n", BYTES_CHUNK, 0, 1L << 40, &n) != 0)
        return mg_stream_error(s, 400, "n must be a non-negative integer");
    pthread_once(&pattern_once, fill_pattern);
    mg_stream_header(s, "Content-Type", "application/octet-stream");
    long chunks = (n + BYTES_CHUNK - 1) / BYTES_CHUNK;
    long sent = 0, k = 0;
    while (sent < n) {
        long len = n - sent < BYTES_CHUNK ? n - sent : BYTES_CHUNK;
        if (mg_stream_write(s, pattern + sent % 251, (size_t)len) != 0)
            return ended("bytes", k, chunks, 1);
        sent += len;
        k++;
    }
    return ended("bytes", k, chunks, 0);
}

MG_MODULE(stream,
          MG_STREAM_GET("/stream/count", count),
          MG_STREAM_GET("/stream/sse", sse),
          MG_STREAM_GET("/stream/fail", fail),
          MG_STREAM_GET("/stream/bytes", bytes));
