/*
 * The module runtime under concurrency (common/src/runtime.c, stream.c,
 * upload.c): bounded memory per stream, a graceful stop that waits for the
 * handlers still running, and bursts of concurrent streams. Through the
 * gateway, with the sdk test module (tests/modules/sdk.c) and the example
 * modules.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(runtime, .timeout = 180);

/* A client socket to 127.0.0.1:port with a small receive buffer, so that
 * a client that stops reading stops the stream soon. */
static int connect_small(int port)
{
    int fd = test_connect(port, NULL, 16 * 1024);
    cr_assert_geq(fd, 0, "connect to %d", port);
    return fd;
}

/* Reads until `needle` has come (up to 10 s); the bytes are dropped. */
static void skip_until(int fd, const char *needle)
{
    char buf[4096 + 1];
    size_t keep = 0;
    long deadline = ms_now() + 10000;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        long left = deadline - ms_now();
        cr_assert(left > 0 && poll(&p, 1, (int)left) == 1, "no \"%s\" within 10 s", needle);
        ssize_t n = read(fd, buf + keep, sizeof(buf) - 1 - keep);
        cr_assert_gt(n, 0, "the stream ended before \"%s\"", needle);
        buf[keep + (size_t)n] = '\0';
        if (strstr(buf, needle) != NULL)
            return;
        /* Keep a tail, in case the needle straddles two reads. */
        size_t have = keep + (size_t)n, tail = strlen(needle);
        keep = have < tail ? have : tail;
        memmove(buf, buf + have - keep, keep);
    }
}

/* ---- memory per stream ---------------------------------------------------- */

/* A handler that writes one byte at a time to a client that stops reading
 * is held back without growing the module: when the stream queued its
 * chunks, 64 KiB of one-byte chunks cost far more than 64 KiB (each an
 * allocation of its own) and every such stream held about 2 MiB; now
 * each write goes to the socket, and the socket's buffer holds it back. */
Test(runtime, a_stream_of_tiny_writes_to_a_stalled_client_holds_little_memory)
{
    /* Under AddressSanitizer, freed chunks would sit in its quarantine
     * and count in the RSS; the module keeps none (elsewhere harmless). */
    char cfg[1024];
    const char *asan = getenv("ASAN_OPTIONS");
    snprintf(cfg, sizeof(cfg),
             "{\"modules\": {\"sdk\": {\"env\": {\"ASAN_OPTIONS\": \"%s%s"
             "quarantine_size_mb=0:thread_local_quarantine_size_kb=0\"}}}}",
             asan ? asan : "", asan && asan[0] ? ":" : "");
    struct gwp g;
    cr_assert_eq(gwp_start_bin(&g, MODGATE_SDKGW, cfg, NULL), 0, "gateway did not start: %s",
                 g.out);
    pid_t mod = gwp_module_pid(&g, "sdk");
    cr_assert_gt(mod, 0);
    long before = rss_kb(mod);

    enum { N = 16 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = connect_small(g.port);
        char req[128];
        int len = snprintf(req, sizeof(req),
                           "GET /sdk/stream/tiny HTTP/1.1\r\nHost: x\r\nX-Request-Id: tiny-%d\r\n\r\n",
                           i);
        send_all(fds[i], req, (size_t)len);
        skip_until(fds[i], "\r\n\r\n"); /* the stream has begun; no more reading */
    }
    /* Every handler is now blocked on its full socket: wait until the
     * module stops growing (bounded). */
    long prev = -1, now = rss_kb(mod);
    for (int i = 0; i < 40 && now != prev; i++) {
        usleep(250 * 1000);
        prev = now;
        now = rss_kb(mod);
    }
    long grown = now - before;
    cr_expect_lt(grown, N * 512L, "%d stalled streams of one-byte writes grew the module by %ld KiB",
                 N, grown);

    for (int i = 0; i < N; i++)
        close(fds[i]);
    int ended = 0;
    for (long t0 = ms_now(); ended < N && ms_now() - t0 < 10000; usleep(50 * 1000))
        ended = gwp_log_count(&g, "sdk.log", ": write failed after");
    cr_expect_eq(ended, N, "%d of %d handlers saw their client go", ended, N);
    gwp_finish(&g);
}

/* ---- threads and framing of streams --------------------------------------- */

/* A stream handler runs on its connection's thread and writes to the
 * socket itself: an open stream costs the module one thread. It used to
 * cost two (the connection's, and one for the handler), so 5000 SSE
 * clients made 10,000 threads, past systemd's default TasksMax. */
Test(runtime, an_open_stream_costs_the_module_one_thread)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    pid_t mod = gwp_module_pid(&g, "stream");
    cr_assert_gt(mod, 0);
    long before = thread_count(mod);

    enum { N = 24 };
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = held_connection(g.port,
                                 "GET /stream/sse?n=3&interval_ms=2000 HTTP/1.1\r\nHost: x\r\n\r\n",
                                 "data: 0\n\n");
    long during = thread_count(mod);
    cr_expect_leq(during - before, N + 2,
                  "%d open streams took %ld more threads in the module (%ld before)", N,
                  during - before, before);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    gwp_finish(&g);
}

/* The module writes a stream's head and chunks itself: what a client
 * alone gets must be what libmicrohttpd would have sent. HTTP/1.1: chunked,
 * a Date, the default Content-Type, the connection closed after the last
 * chunk; HTTP/1.0: no chunks, the body ends with the connection; HEAD:
 * the head alone. */
Test(runtime, a_module_alone_frames_its_streams_for_each_client)
{
    int port = 0;
    pid_t pid = module_alone(MODGATE_BIN, "hello", "127.0.0.1:0", &port);
    cr_assert_gt(port, 0);
    static const struct {
        const char *req, *want;
    } cases[] = {
        { "GET /hello/ticks?n=2 HTTP/1.1\r\nHost: x\r\n\r\n",
          "Content-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\n"
          "Connection: close\r\n\r\n7\r\ntick 0\n\r\n7\r\ntick 1\n\r\n0\r\n\r\n" },
        { "GET /hello/ticks?n=2 HTTP/1.0\r\n\r\n",
          "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
          "tick 0\ntick 1\n" },
        { "HEAD /hello/ticks?n=2 HTTP/1.1\r\nHost: x\r\n\r\n",
          "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n;
        /* raw_exchange reads until the connection closes (or 3 s of quiet). */
        char *out = raw_exchange(port, NULL, cases[i].req, strlen(cases[i].req), 3000, &n);
        cr_assert_not_null(out);
        static const char start[] = "HTTP/1.1 200 OK\r\nDate: ";
        cr_expect(strncmp(out, start, strlen(start)) == 0, "case %zu: %s", i, out);
        /* "Date: Sun, 22 Nov 2026 18:13:27 GMT" (RFC 9110 §5.6.7) */
        const char *date = strstr(out, "Date: ");
        cr_expect(date != NULL && strlen(date) > 35 && date[9] == ',' && date[32] == 'G' &&
                      date[35] == '\r',
                  "case %zu: the Date is not an HTTP date: %s", i, out);
        size_t wl = strlen(cases[i].want);
        cr_expect(n >= wl && memcmp(out + n - wl, cases[i].want, wl) == 0,
                  "case %zu: the answer does not end with\n%s\ngot:\n%s", i, cases[i].want, out);
        free(out);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

/* A client that pipelines its next request behind a stream gets the
 * stream whole: the connection then closes (its head said so), and a TCP
 * socket closed with those bytes unread is reset, which threw away the
 * end of the answer still in flight (113 KB of 1 MB arrived). */
Test(runtime, a_stream_ends_whole_when_the_client_sends_more)
{
    int port = 0;
    pid_t pid = module_alone(MODGATE_BIN, "stream", "127.0.0.1:0", &port);
    cr_assert_gt(port, 0);
    int fd = test_connect(port, NULL, 0);
    cr_assert_geq(fd, 0);
    const char *first = "GET /stream/bytes?n=1000000 HTTP/1.1\r\nHost: x\r\n\r\n";
    const char *next = "GET /stream/count?n=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, first, strlen(first));
    usleep(50 * 1000);
    send_all(fd, next, strlen(next));
    usleep(500 * 1000); /* the client reads late: the answer waits in the sockets */
    size_t n;
    char *out = read_answer(fd, 3000, &n);
    close(fd);
    cr_expect(n > 1000000 && memcmp(out + n - 5, "0\r\n\r\n", 5) == 0,
              "%zu bytes, the stream %s", n, n >= 5 && memcmp(out + n - 5, "0\r\n\r\n", 5) == 0
                                                 ? "ended" : "cut short");
    free(out);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

/* Answers a module alone makes with a head too large for its memory pool
 * (a long target counts too), and a stream's status without a phrase of
 * ours. */
Test(runtime, a_module_alone_answers_large_heads_and_any_status_in_words)
{
    int port = 0;
    pid_t pid = module_alone(MODGATE_SDKGW, "sdk", "127.0.0.1:0", &port);
    cr_assert_gt(port, 0);
    /* A 26 KB target and a 14 KB answer header: more than the 32 KiB
     * pool holds; libmicrohttpd closed the connection without a word. */
    enum { PAD = 18000, VAL = 14000 };
    char *req = malloc(PAD + VAL + 256);
    cr_assert_not_null(req);
    int len = sprintf(req, "GET /sdk/header?name=X-A&value=");
    memset(req + len, 'a', VAL);
    len += VAL;
    len += sprintf(req + len, "&pad=");
    memset(req + len, 'p', PAD);
    len += PAD;
    len += sprintf(req + len, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    size_t n;
    char *out = raw_exchange(port, NULL, req, (size_t)len, 3000, &n);
    cr_expect(strncmp(out, "HTTP/1.1 500 ", 13) == 0 && strstr(out, "bytes of headers") != NULL,
              "%.300s", out);
    free(out);
    free(req);

    out = raw_get(port, "/sdk/stream/head");
    static const char line[] = "HTTP/1.1 203 Non-Authoritative Information\r\n";
    cr_expect(strncmp(out, line, strlen(line)) == 0, "%.200s", out);
    free(out);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

/* ---- graceful stop -------------------------------------------------------- */

/* Waits for `needle` in the sdk module's log, then SIGTERMs the module and
 * expects `done` in its log and the process gone, both within 5 s. */
static void sigterm_after(struct gwp *g, const char *needle, const char *done)
{
    cr_assert(gwp_wait_log(g, "sdk.log", needle, 10000), "no \"%s\" in the log", needle);
    pid_t mod = gwp_module_pid(g, "sdk");
    cr_assert_gt(mod, 0);
    cr_assert_eq(kill(mod, SIGTERM), 0);
    cr_expect(gwp_wait_log(g, "sdk.log", done, 5000),
              "the module stopped without letting its handler finish (no \"%s\")", done);
    bool dead = false;
    for (long t0 = ms_now(); !dead && ms_now() - t0 < 5000; usleep(20 * 1000))
        dead = process_dead(mod);
    cr_expect(dead, "the module did not exit within 5 s of SIGTERM");
}

/* A stream handler whose client left is still at work (it closes a file,
 * ends a transaction): SIGTERM lets it finish before the module exits.
 * The module used to count only requests whose connection was still open,
 * and exited under the handler. */
/* A module alone takes a query of 1500 arguments (its own parse; the
 * one libmicrohttpd made of it ran out of memory, left the request
 * counted as running forever, and the first SIGTERM then waited for it). */
/* A second module alone on the unix socket path of a live one must not take
 * it over: the first would keep running unreachable, its path deleted when
 * either exits. A stale socket (nothing accepting) is still replaced. */
Test(runtime, a_live_unix_socket_is_not_taken_over)
{
    char path[64], listen[80];
    snprintf(path, sizeof(path), "/tmp/mgt-takeover-%d.sock", (int)getpid());
    snprintf(listen, sizeof(listen), "unix:%s", path);
    unlink(path);
    pid_t first = module_alone(MODGATE_BIN, "hello", listen, NULL);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s --module hello --listen %s 2>&1", MODGATE_BIN, listen);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char out[1024] = "";
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 111, "status %d: %s", status, out);
    cr_expect_not_null(strstr(out, "a server is accepting on it"), "%s", out);
    size_t len;
    const char *req = "GET /hello/still HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *answer = raw_exchange(0, path, req, strlen(req), 3000, &len);
    cr_expect_not_null(strstr(answer, "hello still"), "the first one still serves: %s", answer);
    free(answer);
    kill(first, SIGKILL); /* leaves its socket behind: stale */
    waitpid(first, NULL, 0);
    pid_t again = module_alone(MODGATE_BIN, "hello", listen, NULL);
    answer = raw_exchange(0, path, req, strlen(req), 3000, &len);
    cr_expect_not_null(strstr(answer, "hello still"), "a stale socket is replaced: %s", answer);
    free(answer);
    kill(again, SIGTERM);
    waitpid(again, NULL, 0);
    unlink(path);
}

Test(runtime, a_long_query_is_answered_and_a_sigterm_then_stops_at_once)
{
    int port = 0;
    pid_t pid = module_alone(MODGATE_BIN, "echo", "127.0.0.1:0", &port);
    cr_assert_gt(port, 0);
    char *url = malloc(1500 * 12 + 64);
    cr_assert_not_null(url);
    size_t n = (size_t)sprintf(url, "http://127.0.0.1:%d/echo/q?", port);
    for (int i = 0; i < 1500; i++)
        n += (size_t)sprintf(url + n, "%sa%d=%d", i ? "&" : "", i, i);
    struct http_req q = { .url = url, .timeout_ms = 5000 };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 200, "%ld %.200s", r.status, r.body);
    cr_expect_not_null(strstr(r.body ? r.body : "", "\"a1499\":\"1499\""), "%.200s", r.body);
    http_free(&r);
    free(url);
    long t0 = ms_now();
    kill(pid, SIGTERM);
    int status = -1;
    while (waitpid(pid, &status, WNOHANG) == 0 && ms_now() - t0 < 5000)
        usleep(10 * 1000);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    cr_expect_lt(ms_now() - t0, 3000, "the first SIGTERM waited");
    if (status == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}

Test(runtime, sigterm_lets_a_stream_handler_finish_after_its_client_left)
{
    struct gwp g;
    cr_assert_eq(gwp_start_bin(&g, MODGATE_SDKGW, NULL, NULL), 0, "%s", g.out);
    int fd = connect_small(g.port);
    const char *req = "GET /sdk/stream/linger?ms=1500 HTTP/1.1\r\nHost: x\r\n"
                      "X-Request-Id: linger-1\r\n\r\n";
    send_all(fd, req, strlen(req));
    skip_until(fd, "here\n");
    close(fd);
    sigterm_after(&g, "linger linger-1: cleaning up", "linger linger-1: cleaned up");
    gwp_finish(&g);
}

/* The same for a streaming upload whose client broke off. */
Test(runtime, sigterm_lets_an_upload_handler_finish_after_its_client_left)
{
    struct gwp g;
    cr_assert_eq(gwp_start_bin(&g, MODGATE_SDKGW, NULL, NULL), 0, "%s", g.out);
    int fd = connect_small(g.port);
    const char *head = "POST /sdk/upload/linger?ms=1500 HTTP/1.1\r\nHost: x\r\n"
                       "X-Request-Id: linger-2\r\nContent-Length: 1000000\r\n\r\n";
    send_all(fd, head, strlen(head));
    static char part[64 * 1024];
    memset(part, 'u', sizeof(part));
    send_all(fd, part, sizeof(part));
    cr_assert(gwp_wait_log(&g, "sdk.log", "upload linger linger-2: first bytes in", 10000));
    close(fd);
    sigterm_after(&g, "upload linger linger-2: cleaning up", "upload linger linger-2: cleaned up");
    gwp_finish(&g);
}

/* ---- many concurrent streams ---------------------------------------------- */

/* net.core.somaxconn: the kernel's cap on a listen backlog. */
static long somaxconn(void)
{
    size_t len;
    char *s = read_file("/proc/sys/net/core/somaxconn", &len);
    long v = s ? strtol(s, NULL, 10) : -1;
    free(s);
    return v;
}

struct burst_client {
    int fd;
    char head[16];  /* the start of the answer */
    char tail[8];   /* its last bytes */
    size_t len;
};

/* A burst of concurrent streams, as many as the system lets a listener
 * queue (up to 3000), is served whole: the gateway opens one connection to
 * the module per request at once, and a Unix socket refuses a connection
 * (EAGAIN) as soon as its backlog is full, where TCP would retry. The
 * module listened with a backlog of 1024, so such a burst got 502
 * "refused" for the connections past it. Once the burst is over, the
 * module gives back most of the memory it took: glibc kept what the
 * connection threads freed (3000 streams left 24 of 59 MiB). */
Test(runtime, a_burst_of_thousands_of_concurrent_streams_is_all_served)
{
    long cap = somaxconn();
    if (cap < 1500)
        cr_skip_test("net.core.somaxconn is %ld", cap);
    int n = cap - 200 < 3000 ? (int)cap - 200 : 3000;
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)n + 100) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)n + 100)
            cr_skip_test("the descriptor limit is %llu", (unsigned long long)rl.rlim_cur);
    }

    struct gwp g;
    gwp_start_ok(&g, NULL);
    pid_t mod = gwp_module_pid(&g, "stream");
    cr_assert_gt(mod, 0);
    long before = rss_kb(mod), peak = before;
    struct burst_client *c = calloc((size_t)n, sizeof(*c));
    struct pollfd *p = calloc((size_t)n, sizeof(*p));
    cr_assert(c != NULL && p != NULL);
    const char *req = "GET /stream/sse?n=2&interval_ms=1000 HTTP/1.1\r\nHost: x\r\n"
                      "Connection: close\r\n\r\n";
    for (int i = 0; i < n; i++) {
        c[i].fd = test_connect(g.port, NULL, 0);
        cr_assert_geq(c[i].fd, 0);
        send_all(c[i].fd, req, strlen(req));
    }
    int open = n;
    long deadline = ms_now() + 120000;
    while (open > 0 && ms_now() < deadline) {
        for (int i = 0; i < n; i++)
            p[i] = (struct pollfd){ .fd = c[i].fd, .events = POLLIN };
        poll(p, (nfds_t)n, 1000);
        long rss = rss_kb(mod);
        peak = rss > peak ? rss : peak;
        for (int i = 0; i < n; i++) {
            if (c[i].fd < 0 || p[i].revents == 0)
                continue;
            char buf[4096];
            ssize_t got = read(c[i].fd, buf, sizeof(buf));
            if (got <= 0) {
                close(c[i].fd);
                c[i].fd = -1;
                open--;
                continue;
            }
            for (ssize_t j = 0; j < got; j++, c[i].len++) {
                if (c[i].len < sizeof(c[i].head) - 1)
                    c[i].head[c[i].len] = buf[j];
                memmove(c[i].tail, c[i].tail + 1, sizeof(c[i].tail) - 2);
                c[i].tail[sizeof(c[i].tail) - 2] = buf[j];
            }
        }
    }
    int served = 0, refused = 0;
    for (int i = 0; i < n; i++) {
        if (c[i].fd >= 0)
            close(c[i].fd);
        if (strncmp(c[i].head, "HTTP/1.1 200 ", 13) == 0 &&
            memcmp(c[i].tail + sizeof(c[i].tail) - 1 - 5, "0\r\n\r\n", 5) == 0)
            served++;
        else if (strncmp(c[i].head, "HTTP/1.1 502 ", 13) == 0)
            refused++;
    }
    free(c);
    free(p);
    cr_expect_eq(served, n, "%d of %d concurrent streams served whole, %d got 502", served, n,
                 refused);
    cr_expect_eq(gwp_log_count(&g, "access.log", " refused"), 0, "module connections refused");
#ifndef __SANITIZE_ADDRESS__ /* AddressSanitizer's allocator keeps freed memory its own way */
    long now = rss_kb(mod);
    for (long t0 = ms_now(); now > before + (peak - before) / 4 && ms_now() - t0 < 3000;
         usleep(100 * 1000))
        now = rss_kb(mod);
    cr_expect_leq(now, before + (peak - before) / 4,
                  "module RSS %ld KiB before the burst, %ld at its peak, %ld after it", before,
                  peak, now);
#endif
    gwp_finish(&g);
}
