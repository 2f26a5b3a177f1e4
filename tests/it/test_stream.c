/* Streaming both ways through the gateway (SPEC §2, §4; issue 3). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <pthread.h>
#include <jansson.h>
#include <nettle/sha2.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

TestSuite(stream, .timeout = 120);

/* Records when each piece of the body arrived. */
struct arrivals {
    long start;
    long at[64];
    size_t sizes[64];
    size_t n;
    char body[8192];
    size_t len;
};

static size_t on_piece(char *p, size_t size, size_t n, void *userp)
{
    struct arrivals *a = userp;
    size_t len = size * n;
    if (a->n < 64) {
        a->at[a->n] = ms_now() - a->start;
        a->sizes[a->n] = len;
        a->n++;
    }
    size_t room = sizeof(a->body) - 1 - a->len;
    memcpy(a->body + a->len, p, len < room ? len : room);
    a->len += len < room ? len : room;
    a->body[a->len] = '\0';
    return len;
}

static CURLcode get_pieces(const char *url, struct arrivals *a, long *status)
{
    memset(a, 0, sizeof(*a));
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_piece);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
    a->start = ms_now();
    CURLcode rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(e);
    return rc;
}

Test(stream, chunks_arrive_as_they_are_written)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    struct arrivals a;
    long status;
    cr_assert_eq(get_pieces(gwp_url(&g, "/stream/count?n=5&interval_ms=250"), &a, &status),
                 CURLE_OK);
    cr_expect_eq(status, 200);
    cr_expect_str_eq(a.body, "line 0\nline 1\nline 2\nline 3\nline 4\n");
    cr_assert_geq(a.n, 5, "one piece per chunk, got %zu", a.n);
    cr_expect_lt(a.at[0], 200, "the first line came at %ld ms, not at the end", a.at[0]);
    cr_expect_geq(a.at[a.n - 1] - a.at[0], 800, "spread: %ld ms", a.at[a.n - 1] - a.at[0]);
    for (size_t i = 1; i < a.n; i++)
        cr_expect_geq(a.at[i] - a.at[i - 1], 150, "gap %zu: %ld ms", i, a.at[i] - a.at[i - 1]);
    gwp_finish(&g);
}

Test(stream, server_sent_events_one_by_one)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    struct arrivals a;
    long status;
    struct http_resp r;
    cr_assert_eq(get_pieces(gwp_url(&g, "/stream/sse?n=3&interval_ms=300"), &a, &status), CURLE_OK);
    cr_expect_eq(status, 200);
    cr_expect_str_eq(a.body, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
    cr_assert_eq(a.n, 3, "one piece per event, got %zu", a.n);
    for (size_t i = 0; i < 3; i++)
        cr_expect_eq(a.sizes[i], strlen("data: 0\n\n"));
    cr_expect_geq(a.at[2] - a.at[0], 500);
    cr_assert_eq(http_get(gwp_url(&g, "/stream/sse?n=1"), &r), 0);
    cr_expect_str_eq(http_header(&r, "Content-Type"), "text/event-stream");
    cr_expect_eq(http_header_count(&r, "Content-Type"), 1);
    http_free(&r);
    gwp_finish(&g);
}

/* Each chunk the module writes leaves the gateway as one chunk of its own,
 * even when several arrive together (SPEC §4 and §7: one chunk each). */
Test(stream, chunks_keep_their_boundaries)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    struct arrivals a;
    long status;
    cr_assert_eq(get_pieces(gwp_url(&g, "/hello/ticks"), &a, &status), CURLE_OK);
    cr_expect_eq(status, 200);
    cr_expect_str_eq(a.body, "tick 0\ntick 1\ntick 2\ntick 3\ntick 4\n");

    static const struct {
        const char *path, *body;
    } cases[] = {
        { "/hello/ticks?n=3", "7\r\ntick 0\n\r\n7\r\ntick 1\n\r\n7\r\ntick 2\n\r\n0\r\n\r\n" },
        { "/stream/count?n=3&interval_ms=0",
          "7\r\nline 0\n\r\n7\r\nline 1\n\r\n7\r\nline 2\n\r\n0\r\n\r\n" },
        { "/stream/fail?after=2", "7\r\nline 0\n\r\n7\r\nline 1\n\r\n27\r\n"
                                  "error: failed on purpose after 2 lines\n\r\n0\r\n\r\n" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = raw_get(g.port, cases[i].path);
        const char *body = strstr(out, "\r\n\r\n");
        cr_assert_not_null(body, "%s", out);
        cr_expect_str_eq(body + 4, cases[i].body, "%s", cases[i].path);
        free(out);
    }
    gwp_finish(&g);
}

Test(stream, error_before_the_first_chunk_is_a_normal_error)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/stream/fail?after=0"), &r), 0);
    cr_expect_eq(r.status, 500);
    json_t *j = json_loads(r.body, 0, NULL);
    cr_assert_not_null(j, "%s", r.body);
    cr_expect_str_eq(json_string_value(json_object_get(j, "module")), "stream");
    cr_expect_not_null(strstr(json_string_value(json_object_get(j, "error")), "after 0"));
    json_decref(j);
    http_free(&r);
    gwp_finish(&g);
}

Test(stream, error_after_the_first_chunk_ends_the_stream_cleanly)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    struct http_resp r;
    /* http_get returns 0 only for a well-formed (fully terminated) body. */
    cr_assert_eq(http_get(gwp_url(&g, "/stream/fail?after=3"), &r), 0, "curl: %s",
                 curl_easy_strerror(r.rc));
    cr_expect_eq(r.status, 200);
    cr_expect_eq(strncmp(r.body, "line 0\nline 1\nline 2\n", 21), 0, "%s", r.body);
    cr_expect_not_null(strstr(r.body + 21, "failed on purpose after 3 lines"), "%s", r.body);
    http_free(&r);
    cr_expect(gwp_wait_log(&g, "stream.log", "fail: ended after 3 of 3 chunks", 3000));
    gwp_finish(&g);
}

Test(stream, module_death_mid_stream_ends_the_stream_cleanly)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    pid_t pid = gwp_module_pid(&g, "stream");
    cr_assert_gt(pid, 0);
    struct arrivals a;
    memset(&a, 0, sizeof(a));
    CURLM *m = curl_multi_init();
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, gwp_url(&g, "/stream/count?n=100&interval_ms=100"));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_piece);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &a);
    curl_multi_add_handle(m, e);
    int running = 1;
    bool killed = false;
    long deadline = ms_now() + 20000;
    while (running && ms_now() < deadline) {
        curl_multi_perform(m, &running);
        if (!killed && a.len >= 14) { /* two lines in */
            kill(pid, SIGKILL);
            killed = true;
        }
        curl_multi_poll(m, NULL, 0, 50, NULL);
    }
    CURLMsg *msg;
    int left;
    CURLcode rc = CURLE_RECV_ERROR;
    while ((msg = curl_multi_info_read(m, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE)
            rc = msg->data.result;
    curl_multi_remove_handle(m, e);
    curl_easy_cleanup(e);
    curl_multi_cleanup(m);
    cr_assert(killed);
    cr_expect_eq(rc, CURLE_OK, "the chunked body ended cleanly: %s", curl_easy_strerror(rc));
    cr_expect_eq(strncmp(a.body, "line 0\nline 1\n", 14), 0, "%s", a.body);
    cr_expect_not_null(strstr(a.body, "killed by signal 9"), "the error is the last chunk: %s",
                       a.body);
    cr_expect_null(strstr(a.body, "line 99"));
    gwp_finish(&g);
}

struct pattern_check {
    uint64_t pos;
    bool ok;
};

/* /stream/bytes sends byte i as i % 251: checked as the bytes arrive. */
static size_t verify_pattern(char *p, size_t size, size_t n, void *userp)
{
    struct pattern_check *c = userp;
    size_t len = size * n;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)p[i] != (c->pos + i) % 251)
            c->ok = false;
    c->pos += len;
    return len;
}

Test(stream, large_response_byte_exact)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    struct pattern_check c = { 0, true };
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, gwp_url(&g, "/stream/bytes?n=209715200"));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, verify_pattern);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &c);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 100L);
    CURLcode rc = curl_easy_perform(e);
    curl_easy_cleanup(e);
    cr_expect_eq(rc, CURLE_OK, "%s", curl_easy_strerror(rc));
    cr_expect(c.ok, "a byte differs");
    cr_expect_eq(c.pos, 209715200ull, "got %llu bytes", (unsigned long long)c.pos);
    gwp_finish(&g);
}

/* A client that closes halfway through its upload cancels the request at
 * once: nothing of it stays in the gateway (its socket, the connection to
 * the module) until a timeout, and the access log says 499. */
Test(stream, an_upload_abandoned_halfway_is_cancelled_at_once)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    int fds0 = count_fds(g.pid);
    static char half[512 * 1024];
    memset(half, 'a', sizeof(half));
    const char *head = "POST /echo/raw HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n";
    const int rounds = 20;
    for (int i = 0; i < rounds; i++) {
        int fd = test_connect(g.port, NULL, 64 * 1024);
        cr_assert_geq(fd, 0);
        cr_assert_eq(send(fd, head, strlen(head), MSG_NOSIGNAL), (ssize_t)strlen(head));
        for (size_t off = 0; off < sizeof(half);) {
            ssize_t n = send(fd, half + off, sizeof(half) - off, MSG_NOSIGNAL);
            cr_assert_gt(n, 0);
            off += (size_t)n;
        }
        close(fd);
    }
    int fds = -1;
    for (long t0 = ms_now(); ms_now() - t0 < 3000; usleep(50 * 1000))
        if ((fds = count_fds(g.pid)) <= fds0 + 2)
            break;
    cr_expect_leq(fds, fds0 + 2, "descriptors: %d before, %d after", fds0, fds);
    /* Access-log lines are written in batches: wait for all of them. */
    int n499 = 0;
    for (long t0 = ms_now(); n499 < rounds && ms_now() - t0 < 3000; usleep(50 * 1000)) {
        char *access = gwp_log(&g, "access.log");
        n499 = 0;
        for (const char *p = access; (p = strstr(p, "POST /echo/raw echo 1 499 ")) != NULL; p++)
            n499++;
        free(access);
    }
    cr_expect_eq(n499, rounds, "%d of the %d abandoned uploads logged 499", n499, rounds);
    gwp_finish(&g);
}

Test(stream, a_client_that_stops_reading_keeps_memory_flat)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    int fd = test_connect(g.port, NULL, 64 * 1024);
    cr_assert_geq(fd, 0);
    const char *req = "GET /stream/bytes?n=4294967296 HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    char buf[65536];
    size_t got = 0;
    while (got < 4 * 1024 * 1024) {
        ssize_t n = read(fd, buf, sizeof(buf));
        cr_assert_gt(n, 0);
        got += (size_t)n;
    }
    sleep(1); /* buffers fill up */
    long before = rss_kb(g.pid);
    sleep(3); /* not reading */
    long after = rss_kb(g.pid);
    cr_expect_lt(after - before, 8 * 1024, "gateway RSS grew from %ld to %ld KiB", before, after);
    /* The module was slowed down, not buffered into memory. */
    pid_t mod = gwp_module_pid(&g, "stream");
    cr_expect_lt(rss_kb(mod), 64 * 1024, "module RSS %ld KiB", rss_kb(mod));
    /* Reading again resumes the stream. */
    ssize_t n = read(fd, buf, sizeof(buf));
    cr_expect_gt(n, 0);
    close(fd);
    cr_expect(gwp_wait_log(&g, "stream.log", "(client gone)", 5000));
    gwp_finish(&g);
}

/* Many clients that stop reading a bulk stream: each holds a bounded few
 * buffers of gateway memory (147 KiB measured; nginx's proxy buffers are
 * of that order), not a growing queue nor several reads' worth. */
Test(stream, stalled_clients_hold_a_bounded_amount_of_memory_each)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    enum { N = 100 };
    int fds[N];
    long before = rss_kb(g.pid);
    const char *req = "GET /stream/bytes?n=4294967296 HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < N; i++) {
        fds[i] = test_connect(g.port, NULL, 64 * 1024);
        cr_assert_geq(fds[i], 0);
        send_all(fds[i], req, strlen(req));
    }
    /* Every stream gets under way and stops: the memory stops moving. */
    long after = rss_kb(g.pid), last = -1;
    for (int i = 0; i < 50 && after != last; i++) {
        usleep(200 * 1000);
        last = after;
        after = rss_kb(g.pid);
    }
#if !defined(__SANITIZE_ADDRESS__)
    cr_expect_lt((after - before) / N, 224, "%ld KiB of gateway memory per stalled client",
                 (after - before) / N);
#else
    (void)before; /* under AddressSanitizer, memory says little */
#endif
    for (int i = 0; i < N; i++)
        close(fds[i]);
    cr_expect(gwp_wait_log(&g, "stream.log", "(client gone)", 5000));
#if !defined(__SANITIZE_ADDRESS__)
    /* Once they are gone, the memory goes back too (glibc keeps a freed
     * heap's pages until malloc_trim). */
    long now = rss_kb(g.pid);
    for (int i = 0; i < 40 && now > before + 6 * 1024; i++) {
        usleep(100 * 1000);
        now = rss_kb(g.pid);
    }
    cr_expect_leq(now, before + 6 * 1024, "RSS %ld KiB before, %ld KiB while stalled, %ld after",
                  before, after, now);
#endif
    gwp_finish(&g);
}

struct upload {
    uint64_t left;
    uint64_t pos;
    struct sha256_ctx sha;
};

static size_t on_upload(char *p, size_t size, size_t n, void *userp)
{
    struct upload *u = userp;
    size_t len = size * n;
    if (len > u->left)
        len = (size_t)u->left;
    for (size_t i = 0; i < len; i++)
        p[i] = (char)((u->pos + i) * 7 % 253);
    sha256_update(&u->sha, len, (const uint8_t *)p);
    u->pos += len;
    u->left -= len;
    return len;
}

static CURLcode chunked_upload(const char *url, uint64_t total, struct upload *u,
                               struct http_resp *r)
{
    memset(u, 0, sizeof(*u));
    u->left = total;
    sha256_init(&u->sha);
    return http_post_chunked(url, on_upload, u, NULL, r);
}


Test(stream, chunked_upload_of_50_mib_is_streamed_intact)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"limits\": {\"max_body_bytes\": 104857600}}");
    struct upload u;
    struct http_resp r;
    uint64_t total = 50ull << 20;
    cr_assert_eq(chunked_upload(gwp_url(&g, "/echo/upload"), total, &u, &r), CURLE_OK);
    cr_expect_eq(r.status, 200, "%s", r.body);
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_digest(&u.sha, sizeof(d), d);
    char hex[2 * SHA256_DIGEST_SIZE + 1];
    for (size_t i = 0; i < sizeof(d); i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    json_t *j = json_loads(r.body, 0, NULL);
    cr_assert_not_null(j, "%s", r.body);
    cr_expect_eq(json_integer_value(json_object_get(j, "body_len")), (json_int_t)total);
    cr_expect_str_eq(json_string_value(json_object_get(j, "body_sha256")), hex);
    const char *te = json_string_value(
        json_object_get(json_object_get(j, "headers"), "transfer-encoding"));
    cr_expect(te != NULL && strcmp(te, "chunked") == 0, "streamed to the module, not buffered");
    json_decref(j);
    http_free(&r);
    /* Neither side held the body: both stay far below 50 MiB. */
    cr_expect_lt(rss_kb(g.pid), 40 * 1024, "gateway RSS %ld KiB", rss_kb(g.pid));
    cr_expect_lt(rss_kb(gwp_module_pid(&g, "echo")), 40 * 1024);
    gwp_finish(&g);
}

Test(stream, upload_over_the_limit_gets_413_mid_way)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"limits\": {\"max_body_bytes\": 1048576}}");
    struct upload u;
    struct http_resp r;
    CURLcode rc = chunked_upload(gwp_url(&g, "/echo/upload"), 8ull << 20, &u, &r);
    cr_expect_eq(rc, CURLE_OK, "%s", curl_easy_strerror(rc));
    cr_expect_eq(r.status, 413, "%ld %s", r.status, r.body);
    cr_expect_not_null(strstr(r.body, "over the limit"), "%s", r.body);
    http_free(&r);
    gwp_finish(&g);
}

/* Starts a chunked POST to /echo/upload on a new connection: its head and
 * a first chunk of `n` bytes, and (unless `end`) no last chunk, so that
 * the body is still coming in. `extra` is added to the head. */
static int start_chunked_post(const struct gwp *g, size_t n, bool end, const char *extra)
{
    int fd = test_connect(g->port, NULL, 0);
    cr_assert_geq(fd, 0);
    char head[256];
    int h = snprintf(head, sizeof(head), "POST /echo/upload HTTP/1.1\r\nHost: x\r\n%s"
                     "Transfer-Encoding: chunked\r\n\r\n%zx\r\n", extra, n);
    send_all(fd, head, (size_t)h);
    char *chunk = malloc(n + 2);
    cr_assert_not_null(chunk);
    memset(chunk, 'a', n);
    memcpy(chunk + n, "\r\n", 2);
    send_all(fd, chunk, n + 2);
    free(chunk);
    if (end)
        send_all(fd, "0\r\n\r\n", 5);
    return fd;
}

/* The answer on fd, read until the gateway closes or is silent for 5 s
 * (fd is closed; caller frees), checked for its status line and for
 * `needle` (NULL: none). */
static char *answer_with(int fd, const char *status_line, const char *needle)
{
    size_t len;
    char *out = read_answer(fd, 5000, &len);
    close(fd);
    cr_expect(strncmp(out, status_line, strlen(status_line)) == 0, "%s", out);
    if (needle != NULL)
        cr_expect_not_null(strstr(out, needle), "%s", out);
    return out;
}

/* libmicrohttpd takes no answer while a body comes in; the gateway does
 * not wait for the body's end (which may never come) to say why it is
 * refused. */
Test(stream, a_body_over_the_limit_is_refused_before_its_end)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"limits\": {\"max_body_bytes\": 4096}}");
    int fd = start_chunked_post(&g, 8192, false, "");
    char *out = answer_with(fd, "HTTP/1.1 413 ",
                            "X-Modgate-Error: module=echo; incarnation=1; cause=too_large\r\n");
    cr_expect_not_null(strstr(out, "\"module\": \"echo\""), "%s", out);
    cr_expect_not_null(strstr(out, "Connection: close\r\n"), "%s", out);
    free(out);
    cr_expect(gwp_wait_log(&g, "access.log", " POST /echo/upload echo 1 413 ", 3000));
    gwp_finish(&g);
}

Test(stream, a_module_that_dies_under_an_upload_is_answered_at_once)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    pid_t echo = gwp_module_pid(&g, "echo");
    cr_assert_gt(echo, 0);
    int fd = start_chunked_post(&g, 1024, false, "");
    usleep(200 * 1000); /* forwarded to the module by now */
    cr_assert_eq(kill(echo, SIGKILL), 0);
    char *out = answer_with(fd, "HTTP/1.1 502 ", "cause=signaled\r\n");
    cr_expect_not_null(strstr(out, "killed by signal 9"), "%s", out);
    free(out);
    gwp_finish(&g);
}

/* request_timeout_ms is how long the module may take to answer once it has
 * the request: a body still on its way does not count against it. */
Test(stream, a_slow_upload_outlasts_the_request_timeout)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"limits\": {\"request_timeout_ms\": 300}}");
    int fd = start_chunked_post(&g, 1024, false, "Connection: close\r\n");
    char chunk[1024 + 8];
    int n = snprintf(chunk, sizeof(chunk), "400\r\n");
    memset(chunk + n, 'a', 1024);
    memcpy(chunk + n + 1024, "\r\n", 2);
    for (int i = 0; i < 9; i++) { /* 1 s in all, a chunk every 100 ms */
        usleep(100 * 1000);
        send_all(fd, chunk, (size_t)n + 1024 + 2);
    }
    send_all(fd, "0\r\n\r\n", 5);
    free(answer_with(fd, "HTTP/1.1 200 ", "\"body_len\":10240"));
    gwp_finish(&g);
}

/* ... but a client that stops sending its body is not waited for forever:
 * 408, as nginx's client_body_timeout. */
Test(stream, a_stalled_upload_gets_408)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"limits\": {\"request_timeout_ms\": 300}}");
    int fd = start_chunked_post(&g, 1024, false, "");
    free(answer_with(fd, "HTTP/1.1 408 ",
                     "X-Modgate-Error: module=echo; incarnation=1; cause=timeout_body\r\n"));
    cr_expect(gwp_wait_log(&g, "access.log", " POST /echo/upload echo 1 408 ", 3000));
    gwp_finish(&g);
}

Test(stream, client_disconnect_is_seen_by_the_module)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    int fd = test_connect(g.port, NULL, 64 * 1024);
    cr_assert_geq(fd, 0);
    const char *req = "GET /stream/count?n=1000&interval_ms=100 HTTP/1.1\r\nHost: x\r\n"
                      "X-Request-Id: gone-1\r\n\r\n";
    cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    char buf[4096];
    size_t got = 0;
    while (got < 200) { /* headers and a line or two */
        ssize_t n = read(fd, buf, sizeof(buf));
        cr_assert_gt(n, 0);
        got += (size_t)n;
    }
    long t0 = ms_now();
    close(fd);
    cr_expect(gwp_wait_log(&g, "stream.log", "of 1000 chunks (client gone)", 5000));
    cr_expect_lt(ms_now() - t0, 2000, "the module learned it in %ld ms", ms_now() - t0);
    cr_expect(gwp_wait_log(&g, "access.log", " 499 ", 3000));
    char *log = gwp_log(&g, "access.log");
    const char *line = strstr(log, "gone-1");
    cr_expect(line != NULL && strstr(line, " 499 ") != NULL, "%s", log);
    free(log);
    /* A client leaving is routine: no warning of libmicrohttpd's in the
     * module's log (it would crowd the tail a crash report shows). */
    usleep(200 * 1000);
    log = gwp_log(&g, "stream.log");
    cr_expect_null(strstr(log, "libmicrohttpd"), "%s", log);
    free(log);
    gwp_finish(&g);
}

Test(stream, idle_stream_is_ended_after_the_timeout)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"limits\": {\"stream_idle_timeout_ms\": 300}}");
    struct arrivals a;
    long status;
    long t0 = ms_now();
    cr_assert_eq(get_pieces(gwp_url(&g, "/stream/count?n=3&interval_ms=3000"), &a, &status),
                 CURLE_OK);
    cr_expect_eq(status, 200);
    cr_expect_lt(ms_now() - t0, 2500);
    cr_expect_eq(strncmp(a.body, "line 0\n", 7), 0, "%s", a.body);
    cr_expect_not_null(strstr(a.body, "idle"), "%s", a.body);
    cr_expect(gwp_wait_log(&g, "access.log", "timeout_idle", 3000));
    gwp_finish(&g);
}

static size_t count_bytes(char *p, size_t size, size_t n, void *userp)
{
    (void)p;
    *(size_t *)userp += size * n;
    return size * n;
}

/* A client reading slowly holds the module back (backpressure), but the
 * stream moves: it is not "silent", and stream_idle_timeout_ms must not
 * cut it. */
Test(stream, a_slow_reader_is_not_an_idle_stream)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"limits\": {\"stream_idle_timeout_ms\": 500}}");
    const size_t total = 8u << 20;
    char path[64];
    snprintf(path, sizeof(path), "/stream/bytes?n=%zu", total);
    CURL *c = curl_easy_init();
    size_t got = 0;
    curl_easy_setopt(c, CURLOPT_URL, gwp_url(&g, path));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, count_bytes);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &got);
    /* About 4 s for 8 MiB: more than the socket buffers on the way hold,
     * so the module waits on this client for longer than the timeout. */
    curl_easy_setopt(c, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)(2 << 20));
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    cr_expect_eq(rc, CURLE_OK, "%s", curl_easy_strerror(rc));
    cr_expect_eq(got, total, "the whole stream came (%zu of %zu bytes)", got, total);
    cr_expect(gwp_wait_log(&g, "access.log", "GET /stream/bytes", 3000));
    char *access = gwp_log(&g, "access.log");
    cr_expect_null(strstr(access, "timeout_idle"), "%s", access);
    free(access);
    gwp_finish(&g);
}

/* The module closes keep-alive connections the gateway leaves idle
 * (MODGATE_KEEPALIVE_S, 1 s here), and only those: a stream quieter than
 * that, or a handler slower, is served whole (it was cut with "module
 * broke the connection"), and once the burst is over the connections and
 * the threads they held are gone. */
Test(stream, the_module_closes_idle_connections_only)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"limits\": {\"stream_idle_timeout_ms\": 0},"
                     " \"modules\": {\"chaos\": {\"enabled\": true,"
                     "                         \"env\": {\"MODGATE_KEEPALIVE_S\": \"1\"}},"
                     "             \"stream\": {\"env\": {\"MODGATE_KEEPALIVE_S\": \"1\"}}}}");
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/stream/count?n=3&interval_ms=1600"), &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "line 0\nline 1\nline 2\n");
    http_free(&r);
    cr_assert_eq(http_get(gwp_url(&g, "/chaos/slow?ms=1600"), &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "slept 1600\n");
    http_free(&r);

    pid_t chaos = gwp_module_pid(&g, "chaos");
    cr_assert_gt(chaos, 0);
    int idle_fds = count_fds(chaos);
    struct http_call calls[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        calls[i].url = gwp_url(&g, "/chaos/slow?ms=300");
        pthread_create(&t[i], NULL, http_get_thread, &calls[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        cr_expect_eq(calls[i].r.status, 200);
        http_free(&calls[i].r);
    }
    cr_expect_gt(count_fds(chaos), idle_fds, "the burst opened connections");
    int fds = -1;
    for (int i = 0; i < 100 && (fds = count_fds(chaos)) > idle_fds; i++)
        usleep(50 * 1000);
    cr_expect_leq(fds, idle_fds, "idle connections still open after 5 s");
    gwp_finish(&g);
}

Test(stream, content_length_is_kept_for_large_unary_responses)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    size_t len = 700 * 1024;
    char *body = malloc(len);
    memset(body, 'z', len);
    struct http_req q = { .method = "POST", .url = gwp_url(&g, "/echo/raw"), .body = body,
                          .body_len = len };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 200);
    char want[32];
    snprintf(want, sizeof(want), "%zu", len);
    cr_expect_str_eq(http_header(&r, "Content-Length"), want);
    cr_expect_null(http_header(&r, "Transfer-Encoding"));
    cr_expect_eq(r.len, len);
    http_free(&r);
    free(body);
    gwp_finish(&g);
}

Test(stream, head_on_a_stream_does_not_claim_an_empty_body)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    struct http_req q = { .method = "HEAD", .url = gwp_url(&g, "/stream/count?n=3") };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_null(http_header(&r, "Content-Length"), "%s", http_header(&r, "Content-Length"));
    cr_expect_eq(r.len, 0);
    http_free(&r);
    gwp_finish(&g);
}

Test(stream, head_on_a_large_stream_ends_its_handler)
{
    /* libmicrohttpd sends no body for HEAD and never reads the stream's
     * queue: the handler's writes must fail, not block when it is full. */
    struct gwp g;
    gwp_start_ok(&g, NULL);
    struct http_req q = { .method = "HEAD", .url = gwp_url(&g, "/stream/bytes?n=10000000") };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 200);
    http_free(&r);
    cr_expect(gwp_wait_log(&g, "stream.log", "bytes: ended after", 5000),
              "the handler of a HEAD request never ended");
    gwp_finish(&g);
}

/* ---- many concurrent streams ------------------------------------------- */

struct sse_client {
    char buf[256];
    size_t len;
};

static size_t on_sse(char *p, size_t size, size_t n, void *userp)
{
    struct sse_client *c = userp;
    size_t len = size * n;
    size_t room = sizeof(c->buf) - 1 - c->len;
    memcpy(c->buf + c->len, p, len < room ? len : room);
    c->len += len < room ? len : room;
    c->buf[c->len] = '\0';
    return len;
}

Test(stream, a_thousand_concurrent_sse_clients_are_all_served, .timeout = 180)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    enum { N = 1000 };
    static struct sse_client clients[N];
    memset(clients, 0, sizeof(clients));
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
    CURL *easies[N];
    for (int i = 0; i < N; i++) {
        easies[i] = curl_easy_init();
        curl_easy_setopt(easies[i], CURLOPT_URL, gwp_url(&g, "/stream/sse?n=5&interval_ms=500"));
        curl_easy_setopt(easies[i], CURLOPT_WRITEFUNCTION, on_sse);
        curl_easy_setopt(easies[i], CURLOPT_WRITEDATA, &clients[i]);
        curl_easy_setopt(easies[i], CURLOPT_TIMEOUT, 120L);
        curl_easy_setopt(easies[i], CURLOPT_FORBID_REUSE, 1L);
        curl_multi_add_handle(m, easies[i]);
    }
    int running = 1;
    long deadline = ms_now() + 150000;
    while (running && ms_now() < deadline) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    int ok = 0;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE && msg->data.result == CURLE_OK)
            ok++;
    int complete = 0;
    for (int i = 0; i < N; i++) {
        if (strcmp(clients[i].buf, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n") == 0)
            complete++;
        curl_multi_remove_handle(m, easies[i]);
        curl_easy_cleanup(easies[i]);
    }
    curl_multi_cleanup(m);
    cr_expect_eq(ok, N, "%d transfers ended well", ok);
    cr_expect_eq(complete, N, "%d clients got every event", complete);
    gwp_finish(&g);
}
