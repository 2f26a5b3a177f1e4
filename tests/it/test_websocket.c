/* WebSocket tunnelled through the gateway to echo's /echo/ws (SPEC §4, §7). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(websocket, .timeout = 60);

/* RFC 6455 §1.3's example: this key must be answered with this accept. */
#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

struct ws {
    int fd;
    char buf[1 << 20];
    size_t len;
    size_t hl; /* header length of the last frame received (2, 4 or 10) */
};

static bool readable(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, ms) > 0;
}

/* Reads more bytes into the buffer; false at EOF or after `ms`. */
static bool more(struct ws *w, int ms)
{
    if (!readable(w->fd, ms))
        return false;
    ssize_t n = read(w->fd, w->buf + w->len, sizeof(w->buf) - w->len);
    if (n <= 0)
        return false;
    w->len += (size_t)n;
    return true;
}

/* Connects to 127.0.0.1:port, sends `req` (len bytes: a handshake, maybe
 * with frames behind it) and returns the answer's head (static buffer);
 * what follows the head stays in w->buf. A rcvbuf > 0 shrinks the
 * client's receive buffer (a slow reader). */
static const char *ws_open_req(struct ws *w, int port, const char *req, size_t len, int rcvbuf)
{
    w->fd = test_connect(port, NULL, rcvbuf);
    w->len = 0;
    cr_assert_geq(w->fd, 0);
    cr_assert_eq(write(w->fd, req, len), (ssize_t)len);
    static char head[4096];
    char *end = NULL;
    while ((end = memmem(w->buf, w->len, "\r\n\r\n", 4)) == NULL)
        cr_assert(more(w, 5000), "no handshake answer: %.*s", (int)w->len, w->buf);
    size_t hl = (size_t)(end - w->buf) + 4;
    cr_assert_lt(hl, sizeof(head));
    memcpy(head, w->buf, hl);
    head[hl] = '\0';
    memmove(w->buf, w->buf + hl, w->len - hl);
    w->len -= hl;
    return head;
}

/* A handshake for `path` with `headers` ("Name: value\r\n" lines) after
 * Upgrade and Connection; returns the answer's head as ws_open_req. */
static const char *ws_open_with(struct ws *w, int port, const char *path, const char *headers)
{
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                     "Connection: keep-alive, Upgrade\r\n%s\r\n",
                     path, headers);
    cr_assert_lt(n, (int)sizeof(req));
    return ws_open_req(w, port, req, (size_t)n, 0);
}

#define GOOD_HEADERS                                                                               \
    "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\nX-Request-Id: ws-1\r\n"

/* Opens a session with a good handshake; returns the answer's head. */
static const char *ws_open_rcvbuf(struct ws *w, int port, const char *path, int rcvbuf)
{
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                     "Connection: keep-alive, Upgrade\r\n" GOOD_HEADERS "\r\n",
                     path);
    return ws_open_req(w, port, req, (size_t)n, rcvbuf);
}

static const char *ws_open(struct ws *w, int port, const char *path)
{
    return ws_open_rcvbuf(w, port, path, 0);
}

/* True if the head has exactly one Connection header and its value is the
 * single token "Upgrade" (libmicrohttpd merges a second one given for an
 * upgrade response into "Upgrade, Upgrade"). */
static bool one_connection_upgrade(const char *head)
{
    int count = 0;
    bool single = false;
    for (const char *line = strstr(head, "\r\n"); line != NULL && line[2] != '\0';
         line = strstr(line + 2, "\r\n")) {
        const char *name = line + 2;
        if (strncasecmp(name, "Connection:", 11) != 0)
            continue;
        count++;
        const char *v = name + 11, *end = strstr(v, "\r\n");
        while (*v == ' ' || *v == '\t')
            v++;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        single = end - v == 7 && strncasecmp(v, "Upgrade", 7) == 0;
    }
    return count == 1 && single;
}

/* One frame as a client would send it: `b0` is the first byte (FIN, RSV,
 * opcode), the payload masked unless `masked` is false (a broken client).
 * Caller frees; *flen gets the frame's length. */
static unsigned char *ws_frame(int b0, bool masked, const void *data, size_t len, size_t *flen)
{
    unsigned char h[14];
    size_t hl = 2;
    unsigned char m = masked ? 0x80 : 0;
    h[0] = (unsigned char)b0;
    if (len < 126) {
        h[1] = (unsigned char)(m | len);
    } else if (len < 65536) {
        h[1] = m | 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        hl = 4;
    } else {
        h[1] = m | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    unsigned char mask[4] = { 0x12, 0x34, 0x56, 0x78 };
    if (masked) {
        memcpy(h + hl, mask, 4);
        hl += 4;
    }
    unsigned char *frame = malloc(hl + len);
    cr_assert_not_null(frame);
    memcpy(frame, h, hl);
    for (size_t i = 0; i < len; i++)
        frame[hl + i] = ((const unsigned char *)data)[i] ^ (masked ? mask[i & 3] : 0);
    *flen = hl + len;
    return frame;
}

static void ws_write(struct ws *w, const void *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(w->fd, (const char *)data + off, len - off);
        cr_assert_gt(n, 0);
        off += (size_t)n;
    }
}

/* Sends one masked frame whose first byte is `b0` (FIN, RSV, opcode). */
static void ws_send_frame(struct ws *w, int b0, const void *data, size_t len)
{
    size_t flen;
    unsigned char *frame = ws_frame(b0, true, data, len, &flen);
    ws_write(w, frame, flen);
    free(frame);
}

/* Sends one whole message (FIN set); `b0` is the opcode, maybe with RSV bits. */
static void ws_send(struct ws *w, int b0, const void *data, size_t len)
{
    ws_send_frame(w, 0x80 | b0, data, len);
}

/* Receives one frame into out (room for it is the caller's; the frame
 * need not fit in w->buf) and returns its opcode. The server neither
 * masks nor fragments, and sets no RSV bit (no extension is agreed). */
static int ws_recv(struct ws *w, char *out, size_t *outlen)
{
    while (w->len < 2)
        cr_assert(more(w, 5000), "no frame");
    unsigned char *b = (unsigned char *)w->buf;
    int opcode = b[0] & 0x0F;
    cr_assert_eq(b[0] & 0xF0, 0x80, "FIN set, no RSV bit: %#x", b[0]);
    cr_assert_eq(b[1] & 0x80, 0, "server frames are not masked");
    uint64_t len = b[1] & 0x7F;
    size_t hl = len == 126 ? 4 : len == 127 ? 10 : 2;
    while (w->len < hl)
        cr_assert(more(w, 5000));
    b = (unsigned char *)w->buf;
    if (len == 126)
        len = (uint64_t)b[2] << 8 | b[3];
    else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | b[2 + i];
    }
    w->hl = hl;
    /* The payload: what w->buf holds, then straight from the socket. */
    size_t have = w->len - hl < len ? w->len - hl : (size_t)len;
    memcpy(out, w->buf + hl, have);
    memmove(w->buf, w->buf + hl + have, w->len - hl - have);
    w->len -= hl + have;
    while (have < len) {
        cr_assert(readable(w->fd, 5000), "short frame: %zu of %zu bytes", have, (size_t)len);
        ssize_t n = read(w->fd, out + have, (size_t)len - have);
        cr_assert_gt(n, 0, "short frame: %zu of %zu bytes", have, (size_t)len);
        have += (size_t)n;
    }
    *outlen = (size_t)len;
    return opcode;
}

/* Reads until the peer closes (30 s at most), `bite` bytes at a time with
 * `pause_us` between reads (a slow reader); the bytes go to out (if not
 * NULL, up to cap), after what w->buf already holds. Returns how many came. */
static size_t read_until_closed(struct ws *w, unsigned char *out, size_t cap, size_t bite,
                                useconds_t pause_us)
{
    static unsigned char scratch[65536];
    size_t got = w->len;
    if (out != NULL)
        memcpy(out, w->buf, w->len < cap ? w->len : cap);
    long t0 = ms_now();
    for (;;) {
        cr_assert_lt(ms_now() - t0, 30000, "the tunnel did not end (%zu bytes in)", got);
        if (!readable(w->fd, 1000))
            continue;
        unsigned char *to = out != NULL ? out + got : scratch;
        size_t room = out != NULL ? (cap > got ? cap - got : 0) : sizeof(scratch);
        size_t want = room < bite ? room : bite;
        ssize_t n = want > 0 ? read(w->fd, to, want) : 0;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (pause_us > 0)
            usleep(pause_us);
    }
    return got;
}

static bool closed_by_peer(struct ws *w, int ms)
{
    char tmp[256];
    if (!readable(w->fd, ms))
        return false;
    return read(w->fd, tmp, sizeof(tmp)) <= 0;
}

/* The handshake's forwarding headers are those of any request: every
 * X-Forwarded-For line the client sent, in order, then the client. */
Test(websocket, the_handshake_keeps_every_forwarded_for_line)
{
    struct gwp g;
    cr_assert_eq(gwp_start_bin(&g, MODGATE_SDKGW, NULL, NULL), 0, "%s", g.out);
    static struct ws w;
    const char *head = ws_open_with(&w, g.port, "/sdk/ws/forwarded",
                                    GOOD_HEADERS "X-Forwarded-For: 1.1.1.1\r\n"
                                                 "X-Forwarded-For: 2.2.2.2\r\n");
    cr_assert_eq(strncmp(head, "HTTP/1.1 101", 12), 0, "%s", head);
    static char got[256];
    size_t n;
    cr_expect_eq(ws_recv(&w, got, &n), 1);
    got[n < sizeof(got) ? n : sizeof(got) - 1] = '\0';
    cr_expect_str_eq(got, "1.1.1.1, 2.2.2.2, 127.0.0.1");
    close(w.fd);
    gwp_finish(&g);
}

Test(websocket, echo_round_trip_through_the_gateway)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    static struct ws w;
    const char *head = ws_open(&w, g.port, "/echo/ws");
    cr_assert_eq(strncmp(head, "HTTP/1.1 101", 12), 0, "%s", head);
    cr_expect_not_null(strcasestr(head, "Upgrade: websocket"), "%s", head);
    cr_expect(one_connection_upgrade(head), "one Connection: Upgrade expected:\n%s", head);
    cr_expect_not_null(strstr(head, "Sec-WebSocket-Accept: " ACCEPT), "%s", head);
    cr_expect_not_null(strstr(head, "X-Request-Id: ws-1"), "%s", head);

    static char got[300000];
    size_t n;
    ws_send(&w, 1, "hello through the gateway", 25);
    cr_expect_eq(ws_recv(&w, got, &n), 1);
    cr_expect(n == 25 && memcmp(got, "hello through the gateway", 25) == 0);

    static unsigned char big[200000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * 13);
    ws_send(&w, 2, big, sizeof(big));
    cr_expect_eq(ws_recv(&w, got, &n), 2);
    cr_expect(n == sizeof(big) && memcmp(got, big, n) == 0, "binary message of %zu", n);

    ws_send(&w, 9, "are you there", 13); /* ping */
    cr_expect_eq(ws_recv(&w, got, &n), 10);
    cr_expect(n == 13 && memcmp(got, "are you there", 13) == 0);

    unsigned char close_frame[2] = { 0x03, 0xE8 }; /* 1000 */
    ws_send(&w, 8, close_frame, 2);
    cr_expect_eq(ws_recv(&w, got, &n), 8, "the close is answered");
    cr_expect(closed_by_peer(&w, 3000), "then both sides close");
    close(w.fd);
    cr_expect(gwp_wait_log(&g, "echo.log", "ws: session closed", 3000));
    cr_expect(gwp_wait_log(&g, "access.log", "ws-1 127.0.0.1 GET /echo/ws echo 1 101 ", 3000));
    gwp_finish(&g);
}

Test(websocket, client_going_away_closes_the_module_side)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    static struct ws w;
    const char *head = ws_open(&w, g.port, "/echo/ws");
    cr_assert_eq(strncmp(head, "HTTP/1.1 101", 12), 0, "%s", head);
    char got[64];
    size_t n;
    ws_send(&w, 1, "x", 1);
    cr_assert_eq(ws_recv(&w, got, &n), 1);
    close(w.fd); /* no close frame: the TCP connection just ends */
    cr_expect(gwp_wait_log(&g, "echo.log", "ws: session closed", 3000));
    gwp_finish(&g);
}

Test(websocket, module_going_away_closes_the_client_side)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    static struct ws w;
    const char *head = ws_open(&w, g.port, "/echo/ws");
    cr_assert_eq(strncmp(head, "HTTP/1.1 101", 12), 0, "%s", head);
    kill(gwp_module_pid(&g, "echo"), SIGKILL);
    char got[256];
    size_t n;
    cr_expect_eq(ws_recv(&w, got, &n), 8, "the gateway's close frame (1011) first");
    cr_expect(closed_by_peer(&w, 3000), "the client's connection ends too");
    close(w.fd);
    gwp_finish(&g);
}

/* The module answers a large message and the close, then hangs up, while
 * the client reads slowly: what the gateway still holds for the client at
 * the hang-up must reach it, close frame included. */
Test(websocket, a_slow_client_gets_all_the_module_sent_before_it_closed)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    static struct ws w;
    const char *head = ws_open_rcvbuf(&w, g.port, "/echo/ws", 4096);
    cr_assert_eq(strncmp(head, "HTTP/1.1 101", 12), 0, "%s", head);
    const size_t len = 8u << 20;
    unsigned char *msg = malloc(len);
    cr_assert_not_null(msg);
    for (size_t i = 0; i < len; i++)
        msg[i] = (unsigned char)(i * 7 + (i >> 12));
    ws_send(&w, 2, msg, len);
    unsigned char close_frame[2] = { 0x03, 0xE8 }; /* 1000 */
    ws_send(&w, 8, close_frame, 2);

    /* Read in small bites until the gateway hangs up. */
    size_t cap = len + 64;
    unsigned char *in = malloc(cap);
    cr_assert_not_null(in);
    size_t got = read_until_closed(&w, in, cap, 4096, 500);
    close(w.fd);
    /* The echo: one 8 MiB binary frame (127-length form), then the close. */
    cr_assert_geq(got, 10, "got %zu bytes", got);
    cr_expect_eq(in[0], 0x82);
    cr_expect_eq(in[1], 127);
    uint64_t flen = 0;
    for (int i = 0; i < 8; i++)
        flen = flen << 8 | in[2 + i];
    cr_assert_eq(flen, len);
    cr_assert_eq(got, 10 + len + 4, "all of the echo and its close frame (got %zu of %zu bytes)",
                 got, 10 + len + 4);
    cr_expect(memcmp(in + 10, msg, len) == 0, "the echo is byte-exact");
    cr_expect_eq(in[10 + len], 0x88, "the close frame comes last");
    cr_expect_eq(in[10 + len + 1], 2);
    free(in);
    free(msg);
    gwp_finish(&g);
}

/* The module dies while the gateway holds echoed bytes for a client that
 * is not reading: the hang-up is acted on once (no spinning on it while
 * the client sleeps), and what the module sent still reaches the client
 * before the tunnel ends. */
Test(websocket, a_module_dying_towards_a_stalled_client_costs_no_cpu)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    static struct ws w;
    const char *head = ws_open_rcvbuf(&w, g.port, "/echo/ws", 4096);
    cr_assert_eq(strncmp(head, "HTTP/1.1 101", 12), 0, "%s", head);
    const size_t len = 8u << 20;
    unsigned char *msg = calloc(1, len);
    cr_assert_not_null(msg);
    ws_send(&w, 2, msg, len); /* the echo fills every buffer on the way back */
    free(msg);
    usleep(300 * 1000);
    kill(gwp_module_pid(&g, "echo"), SIGKILL);
    usleep(300 * 1000);
    long before = cpu_ms(g.pid);
    usleep(1000 * 1000);
    long used = cpu_ms(g.pid) - before;
    cr_expect(used < 200, "the gateway used %ld ms of CPU in 1 s", used);

    /* Now read: part of the echo, then the end of the tunnel. */
    size_t got = read_until_closed(&w, NULL, 0, 65536, 0);
    close(w.fd);
    cr_expect_gt(got, 64 * 1024, "what the module sent before dying arrives (%zu bytes)", got);
    gwp_finish(&g);
}

Test(websocket, a_silent_tunnel_is_closed_after_the_idle_timeout)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"limits\": {\"stream_idle_timeout_ms\": 300}}");
    static struct ws w;
    const char *head = ws_open(&w, g.port, "/echo/ws");
    cr_assert_eq(strncmp(head, "HTTP/1.1 101", 12), 0, "%s", head);
    char got[64];
    size_t n;
    for (int i = 0; i < 4; i++) { /* traffic keeps it open */
        usleep(150 * 1000);
        ws_send(&w, 1, "k", 1);
        cr_assert_eq(ws_recv(&w, got, &n), 1);
    }
    cr_expect_eq(ws_recv(&w, got, &n), 8, "the gateway's close frame (1001) first");
    cr_expect(closed_by_peer(&w, 3000), "closed once silent");
    close(w.fd);
    gwp_finish(&g);
}

Test(websocket, a_handshake_on_a_plain_route_gets_its_normal_answer)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    static struct ws w;
    const char *head = ws_open(&w, g.port, "/hello/ws");
    cr_expect_eq(strncmp(head, "HTTP/1.1 200", 12), 0, "%s", head);
    close(w.fd);
    head = ws_open(&w, g.port, "/nowhere");
    cr_expect_eq(strncmp(head, "HTTP/1.1 404", 12), 0, "%s", head);
    close(w.fd);
    gwp_finish(&g);
}

/* The echo module run alone (SPEC §7) answers the handshake itself, with
 * the same head: one Connection header, one Upgrade token. */
Test(websocket, a_module_run_alone_answers_with_one_connection_upgrade)
{
    int port = 0;
    pid_t pid = module_alone(MODGATE_BIN, "echo", "127.0.0.1:0", &port);
    cr_assert_gt(port, 0);
    static struct ws w;
    const char *head = ws_open(&w, port, "/echo/ws");
    cr_assert_eq(strncmp(head, "HTTP/1.1 101", 12), 0, "%s", head);
    cr_expect(one_connection_upgrade(head), "one Connection: Upgrade expected:\n%s", head);
    cr_expect_not_null(strstr(head, "Sec-WebSocket-Accept: " ACCEPT), "%s", head);
    char got[64];
    size_t n;
    ws_send(&w, 1, "alone", 5);
    cr_expect_eq(ws_recv(&w, got, &n), 1);
    cr_expect(n == 5 && memcmp(got, "alone", 5) == 0);
    close(w.fd);
    kill(pid, SIGTERM);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
}

/* A handshake on a route that is not a WebSocket one is the plain request
 * it also is: a streaming answer comes through whole (it was wrapped in a
 * second chunked framing, then cut as a broken connection). */
Test(websocket, a_handshake_on_a_streaming_route_gets_its_stream)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    const char *req = "GET /hello/ticks?n=3 HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade, close\r\nSec-WebSocket-Key: " KEY "\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n";
    size_t n;
    char *out = raw_exchange(g.port, NULL, req, strlen(req), 3000, &n);
    cr_expect_eq(strncmp(out, "HTTP/1.1 200 ", 13), 0, "%s", out);
    const char *body = strstr(out, "\r\n\r\n");
    cr_assert_not_null(body, "%s", out);
    cr_expect_str_eq(body + 4, "7\r\ntick 0\n\r\n7\r\ntick 1\n\r\n7\r\ntick 2\n\r\n0\r\n\r\n");
    free(out);
    gwp_finish(&g);
}

/* ---- RFC 6455 through the gateway, as a client library relies on it ---- */

/* The status code a close frame's payload carries; -1 if none. */
static int close_code(const char *p, size_t n)
{
    return n >= 2 ? ((unsigned char)p[0] << 8 | (unsigned char)p[1]) : -1;
}

/* Expects the server's close frame with `code` (-1: an empty one), then the
 * end of the connection, which it closes. */
static void expect_close(struct ws *w, int code, const char *what)
{
    static char got[1 << 16];
    size_t n;
    int op = ws_recv(w, got, &n);
    cr_expect_eq(op, 8, "%s: a close frame expected, got opcode %d (%zu bytes)", what, op, n);
    if (op == 8) {
        cr_expect_eq(close_code(got, n), code, "%s: close code %d, %d expected", what,
                     close_code(got, n), code);
        cr_expect(closed_by_peer(w, 5000), "%s: then the connection ends", what);
    }
    close(w->fd);
}

/* Opens a session on echo, sends `len` bytes of frames as they are, and
 * expects the session to be closed with `code`. */
static void expect_failure(int port, const void *frames, size_t len, int code, const char *what)
{
    static struct ws w;
    const char *head = ws_open(&w, port, "/echo/ws");
    cr_assert_eq(strncmp(head, "HTTP/1.1 101", 12), 0, "%s", head);
    ws_write(&w, frames, len);
    expect_close(&w, code, what);
}

/* Same with one frame. */
static void expect_frame_failure(int port, int b0, bool masked, const void *data, size_t len,
                                 int code, const char *what)
{
    size_t flen;
    unsigned char *f = ws_frame(b0, masked, data, len, &flen);
    expect_failure(port, f, flen, code, what);
    free(f);
}

/* The status of an answer head, 0 if it has none. */
static int head_status(const char *head)
{
    return strncmp(head, "HTTP/1.1 ", 9) == 0 ? atoi(head + 9) : 0;
}

/* Starts a gateway with the default modules and opens a session on echo. */
static void open_echo_session(struct gwp *g, struct ws *w)
{
    gwp_start_ok(g, NULL);
    const char *head = ws_open(w, g->port, "/echo/ws");
    cr_assert_eq(head_status(head), 101, "%s", head);
}

/* Waits (10 s at most) until echo's handler ended `sessions` times and
 * both the gateway and the module hold no more descriptors than before. */
static void expect_released(const struct gwp *g, pid_t echo, int sessions, int gw_fds,
                            int echo_fds, const char *what)
{
    int ended = 0, gf = 0, ef = 0;
    for (int i = 0; i < 200; i++) {
        ended = gwp_log_count(g, "echo.log", "ws: session closed");
        gf = count_fds(g->pid);
        ef = count_fds(echo);
        if (ended >= sessions && gf <= gw_fds && ef <= echo_fds)
            break;
        usleep(50 * 1000);
    }
    cr_expect_geq(ended, sessions, "%s: %d of %d handlers ended", what, ended, sessions);
    cr_expect_leq(gf, gw_fds, "%s: the gateway holds %d descriptors, %d before", what, gf, gw_fds);
    cr_expect_leq(ef, echo_fds, "%s: the module holds %d descriptors, %d before", what, ef,
                  echo_fds);
}

/* Runs one session to its close, so that what the gateway and the module
 * keep open anyway is open, and reads their descriptor counts then;
 * returns the echo module's pid. */
static pid_t settle(const struct gwp *g, int *gw_fds, int *echo_fds)
{
    pid_t echo = gwp_module_pid(g, "echo");
    cr_assert_gt(echo, 0);
    static struct ws w;
    const char *head = ws_open(&w, g->port, "/echo/ws");
    cr_assert_eq(head_status(head), 101, "%s", head);
    ws_send(&w, 8, "\x03\xe8", 2);
    expect_close(&w, 1000, "the first session");
    expect_released(g, echo, 1, INT32_MAX, INT32_MAX, "the first session");
    *gw_fds = count_fds(g->pid);
    *echo_fds = count_fds(echo);
    return echo;
}

Test(websocket, the_handshake_agrees_to_no_extension_and_no_subprotocol)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    static struct ws w;
    const char *head = ws_open_with(&w, g.port, "/echo/ws",
                                    GOOD_HEADERS "Sec-WebSocket-Protocol: chat, superchat\r\n"
                                    "Sec-WebSocket-Extensions: permessage-deflate; "
                                    "client_max_window_bits, x-webkit-deflate-frame\r\n");
    cr_assert_eq(head_status(head), 101, "%s", head);
    cr_expect_not_null(strstr(head, "Sec-WebSocket-Accept: " ACCEPT "\r\n"), "%s", head);
    cr_expect_null(strcasestr(head, "Sec-WebSocket-Extensions"), "no extension is agreed:\n%s",
                   head);
    cr_expect_null(strcasestr(head, "Sec-WebSocket-Protocol"), "no subprotocol is chosen:\n%s",
                   head);
    static char got[256];
    size_t n;
    ws_send(&w, 1, "plain", 5);
    cr_expect_eq(ws_recv(&w, got, &n), 1);
    cr_expect(n == 5 && memcmp(got, "plain", 5) == 0);
    /* A message compressed as permessage-deflate would send it (RSV1) is
     * a protocol error, since the extension was not agreed. */
    ws_send(&w, 0x40 | 1, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7);
    expect_close(&w, 1002, "RSV1 without an extension");
    gwp_finish(&g);
}

/* RFC 6455 §4.2.1-2: a handshake that is missing a field or has a bad one
 * gets 400 (426 with the versions understood, for a version), as a plain
 * answer: no upgrade, no hang. */
Test(websocket, a_bad_handshake_gets_an_error_answer)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    int gw_fds, echo_fds;
    pid_t echo = settle(&g, &gw_fds, &echo_fds);
    static const struct {
        const char *headers, *what;
        int status;
    } cases[] = {
        { "Sec-WebSocket-Version: 13\r\n", "no key", 400 },
        { "Sec-WebSocket-Key: \r\nSec-WebSocket-Version: 13\r\n", "an empty key", 400 },
        { "Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n", "a short key", 400 },
        { "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\nSec-WebSocket-Version: 13\r\n",
          "a key that is not base64", 400 },
        { "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\nSec-WebSocket-Version: 13\r\n",
          "a key of 20 bytes", 400 },
        { "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 8\r\n", "version 8", 426 },
        { "Sec-WebSocket-Key: " KEY "\r\n", "no version", 426 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        static struct ws w;
        const char *head = ws_open_with(&w, g.port, "/echo/ws", cases[i].headers);
        cr_expect_eq(head_status(head), cases[i].status, "%s: %s", cases[i].what, head);
        cr_expect_null(strcasestr(head, "Sec-WebSocket-Accept"), "%s: %s", cases[i].what, head);
        if (cases[i].status == 426)
            cr_expect_not_null(strstr(head, "Sec-WebSocket-Version: 13\r\n"), "%s: %s",
                               cases[i].what, head);
        /* The error body comes whole, as its Content-Length says. */
        const char *cl = strcasestr(head, "Content-Length:");
        cr_assert_not_null(cl, "%s: %s", cases[i].what, head);
        size_t want = strtoul(cl + 15, NULL, 10);
        while (w.len < want)
            cr_assert(more(&w, 5000), "%s: the body ends short", cases[i].what);
        cr_expect_not_null(memmem(w.buf, w.len, "\"error\"", 7), "%s: %.*s", cases[i].what,
                           (int)w.len, w.buf);
        close(w.fd);
    }
    /* None of them left a descriptor open on either side. */
    expect_released(&g, echo, 1, gw_fds, echo_fds, "after the bad handshakes");
    /* Without Upgrade at all it is a plain request, refused the same way. */
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/echo/ws"), &r), 0);
    cr_expect_eq(r.status, 400);
    http_free(&r);
    /* And a good handshake still gets its session. */
    static struct ws w;
    cr_expect_eq(head_status(ws_open(&w, g.port, "/echo/ws")), 101);
    close(w.fd);
    gwp_finish(&g);
}

/* Every length form (7-bit, 16-bit, 64-bit) both ways, up to the module's
 * limit (16 MiB), text and binary. */
Test(websocket, messages_of_every_length_form_come_back_whole)
{
    struct gwp g;
    static struct ws w;
    open_echo_session(&g, &w);
    const size_t sizes[] = { 0, 1, 125, 126, 127, 65535, 65536, 65537, (5u << 20) + 3, 16u << 20 };
    const size_t max = 16u << 20;
    unsigned char *msg = malloc(max), *got = malloc(max);
    cr_assert(msg != NULL && got != NULL);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        for (int type = 1; type <= 2; type++) {
            size_t len = sizes[s];
            /* Text: ASCII; binary: every byte value. */
            for (size_t i = 0; i < len; i++)
                msg[i] = type == 1 ? (unsigned char)('a' + i % 26)
                                   : (unsigned char)(i * 131 + (i >> 8));
            ws_send(&w, type, msg, len);
            size_t n = 0;
            cr_assert_eq(ws_recv(&w, (char *)got, &n), type, "type %d, %zu bytes", type, len);
            cr_assert_eq(n, len, "type %d: %zu bytes sent, %zu came back", type, len, n);
            cr_expect(memcmp(got, msg, len) == 0, "type %d, %zu bytes: byte-exact", type, len);
            size_t hl = len < 126 ? 2 : len < 65536 ? 4 : 10;
            cr_expect_eq(w.hl, hl, "%zu bytes: the shortest length form", len);
        }
    }
    free(msg);
    free(got);
    ws_send(&w, 8, "\x03\xe8", 2);
    expect_close(&w, 1000, "after the sizes");
    gwp_finish(&g);
}

/* RFC 6455 §5.4-5.5: a fragmented message comes back as one; control
 * frames may come between its fragments and are answered at once; a
 * character may be split between fragments. */
Test(websocket, fragments_come_back_as_one_message_with_control_frames_between)
{
    struct gwp g;
    static struct ws w;
    open_echo_session(&g, &w);
    static char got[300000];
    size_t n;
    ws_send_frame(&w, 0x01, "Hel", 3); /* text, not FIN */
    ws_send(&w, 9, "p1", 2);
    ws_send_frame(&w, 0x00, "lo w\xc3", 5); /* half of an ö */
    ws_send(&w, 10, "unsolicited", 11);
    ws_send_frame(&w, 0x00, "", 0);
    ws_send_frame(&w, 0x80, "\xb6rld", 4);
    cr_expect_eq(ws_recv(&w, got, &n), 10, "the ping is answered first");
    cr_expect(n == 2 && memcmp(got, "p1", 2) == 0);
    cr_expect_eq(ws_recv(&w, got, &n), 1, "then the message, and no answer to the pong");
    cr_expect(n == 12 && memcmp(got, "Hello w\xc3\xb6rld", 12) == 0, "%.*s", (int)n, got);

    /* Binary, three fragments of the 64-bit length form. */
    static unsigned char big[3 * 70000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * 7 + (i >> 9));
    for (int i = 0; i < 3; i++)
        ws_send_frame(&w, (i == 2 ? 0x80 : 0) | (i == 0 ? 2 : 0), big + i * 70000, 70000);
    cr_expect_eq(ws_recv(&w, got, &n), 2);
    cr_expect(n == sizeof(big) && memcmp(got, big, n) == 0, "%zu bytes", n);

    /* Empty fragments make an empty message. */
    ws_send_frame(&w, 0x01, "", 0);
    ws_send_frame(&w, 0x80, "", 0);
    cr_expect_eq(ws_recv(&w, got, &n), 1);
    cr_expect_eq(n, 0);
    ws_send(&w, 8, "\x03\xe8", 2);
    expect_close(&w, 1000, "after the fragments");
    gwp_finish(&g);
}

/* RFC 6455 §5.5.2-3: a ping gets a pong with its payload; a pong nobody
 * asked for is ignored. */
Test(websocket, a_ping_gets_its_payload_back_and_a_pong_is_ignored)
{
    struct gwp g;
    static struct ws w;
    open_echo_session(&g, &w);
    static char got[256];
    size_t n;
    ws_send(&w, 9, "", 0);
    cr_expect_eq(ws_recv(&w, got, &n), 10);
    cr_expect_eq(n, 0);
    unsigned char p125[125];
    for (size_t i = 0; i < sizeof(p125); i++)
        p125[i] = (unsigned char)(255 - i);
    ws_send(&w, 9, p125, sizeof(p125));
    cr_expect_eq(ws_recv(&w, got, &n), 10);
    cr_expect(n == 125 && memcmp(got, p125, 125) == 0);
    ws_send(&w, 10, "x", 1);
    ws_send(&w, 10, "", 0);
    ws_send(&w, 1, "after", 5);
    cr_expect_eq(ws_recv(&w, got, &n), 1, "the pongs got no answer");
    cr_expect(n == 5 && memcmp(got, "after", 5) == 0);
    ws_send(&w, 8, "", 0);
    expect_close(&w, -1, "an empty close gets an empty close");
    gwp_finish(&g);
}

/* RFC 6455 §5.5.1, §7.4: a close is answered with its status code (an
 * empty one with an empty one), then the server ends the connection. */
Test(websocket, a_close_is_answered_with_its_code)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    const int codes[] = { 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000,
                          4999 };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        char frame[32] = { (char)(codes[i] >> 8), (char)codes[i] };
        int len = 2 + snprintf(frame + 2, sizeof(frame) - 2, "bye \xc3\xb6 %d", codes[i]);
        char what[32];
        snprintf(what, sizeof(what), "close %d", codes[i]);
        static struct ws w;
        const char *head = ws_open(&w, g.port, "/echo/ws");
        cr_assert_eq(head_status(head), 101, "%s", head);
        ws_send(&w, 8, frame, (size_t)len);
        expect_close(&w, codes[i], what);
    }
    cr_expect(gwp_wait_log(&g, "access.log", "ws-1 127.0.0.1 GET /echo/ws echo 1 101 ", 3000));
    gwp_finish(&g);
}

/* A tunnel the gateway ends on its own, it ends as an endpoint does (RFC
 * 6455 §7.1.2), with a close frame between the module's frames: 1011 when
 * the module died, 1001 when the tunnel was idle or the gateway stops. */
Test(websocket, the_gateway_ends_a_tunnel_with_a_close_frame_of_its_own)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"limits\": {\"stream_idle_timeout_ms\": 400},"
                 " \"modules\": {\"echo\": {\"stop_timeout_ms\": 300}}}");
    static struct ws w;
    char got[256];
    size_t n;

    const char *head = ws_open(&w, g.port, "/echo/ws");
    cr_assert_eq(head_status(head), 101, "%s", head);
    ws_send(&w, 1, "hi", 2);
    cr_assert_eq(ws_recv(&w, got, &n), 1);
    pid_t echo = gwp_module_pid(&g, "echo");
    kill(echo, SIGKILL);
    cr_assert_eq(ws_recv(&w, got, &n), 8, "a close frame when the module died");
    cr_expect_eq(close_code(got, n), 1011);
    cr_expect(n > 2 && memmem(got + 2, n - 2, "module echo was killed by signal 9", 34) != NULL, "%.*s",
              (int)(n > 2 ? n - 2 : 0), got + 2);
    cr_expect(closed_by_peer(&w, 5000));
    close(w.fd);

    for (long t0 = ms_now(); ms_now() - t0 < 5000 && gwp_module_pid(&g, "echo") == echo;)
        usleep(20 * 1000);
    cr_assert(gwp_wait_state(&g, "echo", "ready", 5000));
    head = ws_open(&w, g.port, "/echo/ws");
    cr_assert_eq(head_status(head), 101, "%s", head);
    expect_close(&w, 1001, "idle");

    head = ws_open(&w, g.port, "/echo/ws");
    cr_assert_eq(head_status(head), 101, "%s", head);
    ws_send(&w, 1, "hi", 2);
    cr_assert_eq(ws_recv(&w, got, &n), 1);
    cr_assert_eq(kill(g.pid, SIGTERM), 0);
    expect_close(&w, 1001, "the gateway stopping");
    gwp_finish(&g);
}

/* A module that closes first waits for the client's close frame a few
 * seconds (RFC 6455 §7.1.1), not for as long as the tunnel may idle: a
 * client that never answers does not hold the session, nor its threads. */
Test(websocket, a_close_the_client_never_answers_ends_the_session_soon)
{
    struct gwp g;
    cr_assert_eq(gwp_start_bin(&g, MODGATE_SDKGW, NULL, NULL), 0, "%s", g.out);
    static struct ws w;
    const char *head = ws_open_with(&w, g.port, "/sdk/ws/close_first", GOOD_HEADERS);
    cr_assert_eq(head_status(head), 101, "%s", head);
    static char got[256];
    size_t n;
    long t0 = ms_now();
    cr_assert_eq(ws_recv(&w, got, &n), 8, "the module's close");
    cr_expect_eq(close_code(got, n), 1000);
    /* No answer from us: the module gives up after its wait. */
    cr_expect(closed_by_peer(&w, 15000), "the session did not end");
    long took = ms_now() - t0;
    cr_expect_lt(took, 12000, "ended after %ld ms", took);
    close(w.fd);
    bool logged = gwp_wait_log(&g, "sdk.log", "ws close_first ws-1: the session ended", 3000);
    char *log = gwp_log(&g, "sdk.log");
    cr_expect(logged, "%s", log);
    free(log);
    gwp_finish(&g);
}

/* RFC 6455 §5.5, §7.4.1: a close whose code may not be sent (1005, 1006,
 * 1015, unassigned ones), or with a 1-byte payload, or over 125 bytes, is
 * a protocol error (1002); a reason that is not UTF-8 is 1007. */
Test(websocket, a_close_with_a_bad_code_or_payload_fails_the_session)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    const int bad[] = { 0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535 };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char p[2] = { (char)(bad[i] >> 8), (char)bad[i] };
        char what[32];
        snprintf(what, sizeof(what), "close %d", bad[i]);
        expect_frame_failure(g.port, 0x88, true, p, 2, 1002, what);
    }
    expect_frame_failure(g.port, 0x88, true, "\x03", 1, 1002, "a 1-byte close");
    static char long_close[126] = "\x03\xe8";
    memset(long_close + 2, 'r', sizeof(long_close) - 2);
    expect_frame_failure(g.port, 0x88, true, long_close, sizeof(long_close), 1002,
                         "a close of 126 bytes");
    expect_frame_failure(g.port, 0x88, true, "\x03\xe8\xce\xba\xff", 5, 1007,
                         "a reason that is not UTF-8");
    gwp_finish(&g);
}

/* RFC 6455 §5.1-5.4, §5.6, §8.1: what a server must fail the connection
 * for, with the code of §7.4.1. */
Test(websocket, protocol_errors_fail_the_session_with_their_code)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    expect_frame_failure(g.port, 0x81, false, "unmasked", 8, 1002, "an unmasked frame");
    expect_frame_failure(g.port, 0xC1, true, "rsv1", 4, 1002, "RSV1");
    expect_frame_failure(g.port, 0xA1, true, "rsv2", 4, 1002, "RSV2");
    expect_frame_failure(g.port, 0x91, true, "rsv3", 4, 1002, "RSV3");
    expect_frame_failure(g.port, 0xC9, true, "", 0, 1002, "RSV1 on a ping");
    const int opcodes[] = { 3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF };
    for (size_t i = 0; i < sizeof(opcodes) / sizeof(opcodes[0]); i++) {
        char what[32];
        snprintf(what, sizeof(what), "opcode %#x", opcodes[i]);
        expect_frame_failure(g.port, 0x80 | opcodes[i], true, "x", 1, 1002, what);
    }
    expect_frame_failure(g.port, 0x80, true, "x", 1, 1002, "a continuation of nothing");
    expect_frame_failure(g.port, 0x09, true, "x", 1, 1002, "a fragmented ping");
    static char p126[126];
    expect_frame_failure(g.port, 0x89, true, p126, sizeof(p126), 1002, "a ping of 126 bytes");
    /* A new message inside a fragmented one. */
    size_t l1, l2;
    unsigned char *a = ws_frame(0x01, true, "start", 5, &l1);
    unsigned char *b = ws_frame(0x81, true, "again", 5, &l2);
    unsigned char both[64];
    memcpy(both, a, l1);
    memcpy(both + l1, b, l2);
    expect_failure(g.port, both, l1 + l2, 1002, "a text frame inside a fragmented message");
    free(a), free(b);

    /* §8.1: text must be UTF-8. */
    static const char *const invalid[] = {
        "\xff", "abc\x80", "\xc0\xaf" /* overlong / */, "\xe0\x80\xaf",
        "\xed\xa0\x80" /* surrogate */, "\xf4\x90\x80\x80" /* over U+10FFFF */,
        "\xf8\x88\x80\x80\x80", "\xe2\x82" /* cut */,
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80" "edited",
    };
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        char what[48];
        snprintf(what, sizeof(what), "text that is not UTF-8 (#%zu)", i);
        expect_frame_failure(g.port, 0x81, true, invalid[i], strlen(invalid[i]), 1007, what);
    }
    /* Fragments valid on their own whose join is not. */
    a = ws_frame(0x01, true, "\xc3", 1, &l1);
    b = ws_frame(0x80, true, "(", 1, &l2);
    memcpy(both, a, l1);
    memcpy(both + l1, b, l2);
    expect_failure(g.port, both, l1 + l2, 1007, "a split character that does not join");
    free(a), free(b);

    /* The edges of UTF-8 pass. */
    static struct ws w;
    const char *head = ws_open(&w, g.port, "/echo/ws");
    cr_assert_eq(head_status(head), 101, "%s", head);
    static const char *const valid[] = {
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", "\x7f", "\xc2\x80", "\xdf\xbf",
        "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbf", "\xf0\x90\x80\x80",
        "\xf4\x8f\xbf\xbf",
    };
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        static char got[64];
        size_t n;
        ws_send(&w, 1, valid[i], strlen(valid[i]));
        cr_expect_eq(ws_recv(&w, got, &n), 1, "valid UTF-8 #%zu", i);
        cr_expect(n == strlen(valid[i]) && memcmp(got, valid[i], n) == 0, "valid UTF-8 #%zu", i);
    }
    ws_send(&w, 8, "\x03\xe8", 2);
    expect_close(&w, 1000, "after valid UTF-8");
    gwp_finish(&g);
}

/* The echo module takes messages up to 16 MiB; a longer one is refused
 * with 1009 as soon as its length is known (the frame's, or the sum of the
 * fragments'), before its payload is read. */
Test(websocket, a_message_over_the_module_limit_fails_with_1009)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    const uint64_t over = (16u << 20) + 1;
    unsigned char h[14] = { 0x82, 0x80 | 127 };
    for (int i = 0; i < 8; i++)
        h[2 + i] = (unsigned char)(over >> (56 - 8 * i));
    memset(h + 10, 0x5a, 4);
    expect_failure(g.port, h, sizeof(h), 1009, "one frame of 16 MiB + 1");

    size_t fl;
    static unsigned char mib[1u << 20];
    unsigned char *f = ws_frame(0x02, true, mib, sizeof(mib), &fl);
    uint64_t rest = over - sizeof(mib);
    h[0] = 0x00; /* the continuation, not FIN */
    for (int i = 0; i < 8; i++)
        h[2 + i] = (unsigned char)(rest >> (56 - 8 * i));
    unsigned char *both = malloc(fl + sizeof(h));
    cr_assert_not_null(both);
    memcpy(both, f, fl);
    memcpy(both + fl, h, sizeof(h));
    expect_failure(g.port, both, fl + sizeof(h), 1009, "fragments of 16 MiB + 1 in all");
    free(both);
    free(f);
    gwp_finish(&g);
}

/* TCP keeps no frame boundaries: many frames in one write, one frame in
 * many writes, and frames sent along with the handshake all count. */
Test(websocket, frames_are_read_whatever_the_writes)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    static struct ws w;
    /* The handshake and two frames in one write. */
    static char req[4096];
    int rl = snprintf(req, sizeof(req),
                      "GET /echo/ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\n" GOOD_HEADERS "\r\n");
    size_t fl;
    unsigned char *f = ws_frame(0x81, true, "early", 5, &fl);
    memcpy(req + rl, f, fl), rl += (int)fl, free(f);
    f = ws_frame(0x89, true, "early ping", 10, &fl);
    memcpy(req + rl, f, fl), rl += (int)fl, free(f);
    const char *head = ws_open_req(&w, g.port, req, (size_t)rl, 0);
    cr_assert_eq(head_status(head), 101, "%s", head);
    static char got[4096];
    size_t n;
    cr_expect_eq(ws_recv(&w, got, &n), 1);
    cr_expect(n == 5 && memcmp(got, "early", 5) == 0);
    cr_expect_eq(ws_recv(&w, got, &n), 10);
    cr_expect(n == 10 && memcmp(got, "early ping", 10) == 0);

    /* 200 messages and a ping in one write. */
    static unsigned char many[200 * 32];
    size_t ml = 0;
    for (int i = 0; i < 200; i++) {
        char m[16];
        int len = snprintf(m, sizeof(m), "m%d", i);
        f = ws_frame(i % 2 ? 0x82 : 0x81, true, m, (size_t)len, &fl);
        memcpy(many + ml, f, fl), ml += fl, free(f);
    }
    f = ws_frame(0x89, true, "last", 4, &fl);
    memcpy(many + ml, f, fl), ml += fl, free(f);
    ws_write(&w, many, ml);
    for (int i = 0; i < 200; i++) {
        char m[16];
        int len = snprintf(m, sizeof(m), "m%d", i);
        cr_assert_eq(ws_recv(&w, got, &n), i % 2 ? 2 : 1, "message %d", i);
        cr_assert(n == (size_t)len && memcmp(got, m, n) == 0, "message %d: %.*s", i, (int)n, got);
    }
    cr_expect_eq(ws_recv(&w, got, &n), 10);
    cr_expect(n == 4 && memcmp(got, "last", 4) == 0);

    /* One 16-bit-length frame, a byte per write. */
    int one = 1;
    setsockopt(w.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    static char text[300];
    for (size_t i = 0; i < sizeof(text); i++)
        text[i] = (char)('A' + i % 26);
    f = ws_frame(0x81, true, text, sizeof(text), &fl);
    for (size_t i = 0; i < fl; i++) {
        ws_write(&w, f + i, 1);
        if (i % 16 == 0)
            usleep(1000); /* let some of them go out alone */
    }
    free(f);
    cr_expect_eq(ws_recv(&w, got, &n), 1);
    cr_expect(n == sizeof(text) && memcmp(got, text, n) == 0);
    ws_send(&w, 8, "\x03\xe8", 2);
    expect_close(&w, 1000, "after the writes");
    gwp_finish(&g);
}

/* A client that goes away without a close frame (between frames, in the
 * middle of one, or while its echo is on the way) ends the module's
 * handler, and neither the gateway nor the module keeps a descriptor. */
Test(websocket, a_client_vanishing_releases_the_tunnel_and_the_handler)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    int gw_fds, echo_fds;
    pid_t echo = settle(&g, &gw_fds, &echo_fds);
    static struct ws w;
    const char *head;

    static char got[64];
    size_t n;
    head = ws_open(&w, g.port, "/echo/ws");
    cr_assert_eq(head_status(head), 101, "%s", head);
    ws_send(&w, 1, "x", 1);
    cr_assert_eq(ws_recv(&w, got, &n), 1);
    close(w.fd);
    expect_released(&g, echo, 2, gw_fds, echo_fds, "gone between frames");

    head = ws_open(&w, g.port, "/echo/ws");
    cr_assert_eq(head_status(head), 101, "%s", head);
    size_t fl;
    unsigned char *f = ws_frame(0x82, true, got, 60, &fl);
    ws_write(&w, f, fl / 2);
    free(f);
    close(w.fd);
    expect_released(&g, echo, 3, gw_fds, echo_fds, "gone in the middle of a frame");

    /* Gone right after the handshake (and a frame), before its answer:
     * the module may have started the session or not, so only the
     * descriptors count here. */
    for (int i = 0; i < 20; i++) {
        static char req[1024];
        int rl = snprintf(req, sizeof(req),
                          "GET /echo/ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\n" GOOD_HEADERS "\r\n");
        if (i % 2) {
            f = ws_frame(0x81, true, "x", 1, &fl);
            memcpy(req + rl, f, fl), rl += (int)fl, free(f);
        }
        int fd = test_connect(g.port, NULL, 0);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, req, (size_t)rl), rl);
        if (i >= 10)
            usleep(20 * 1000); /* later in the handshake */
        close(fd);
    }
    expect_released(&g, echo, 3, gw_fds, echo_fds, "gone during the handshake");
    int before = gwp_log_count(&g, "echo.log", "ws: session closed");

    /* 8 MiB echoed to a client that reads none of it, then leaves. */
    head = ws_open_rcvbuf(&w, g.port, "/echo/ws", 4096);
    cr_assert_eq(head_status(head), 101, "%s", head);
    const size_t len = 8u << 20;
    unsigned char *msg = calloc(1, len);
    cr_assert_not_null(msg);
    ws_send(&w, 2, msg, len);
    free(msg);
    cr_assert(readable(w.fd, 5000), "the echo begins");
    close(w.fd);
    expect_released(&g, echo, before + 1, gw_fds, echo_fds, "gone with its echo on the way");
    gwp_finish(&g);
}

/* Many sessions at once, each with its own echo; then half of them close
 * and the other half vanish, and everything is released. */
Test(websocket, many_concurrent_sessions_each_get_their_own_echo)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    enum { N = 64 };
    static struct ws w[N];
    int gw_fds, echo_fds;
    pid_t echo = settle(&g, &gw_fds, &echo_fds);
    const char *head;

    for (int i = 0; i < N; i++) {
        head = ws_open(&w[i], g.port, "/echo/ws");
        cr_assert_eq(head_status(head), 101, "session %d: %s", i, head);
    }
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            char m[32];
            int len = snprintf(m, sizeof(m), "session %d round %d", i, round);
            ws_send(&w[i], 1, m, (size_t)len);
        }
        for (int i = N - 1; i >= 0; i--) {
            char m[32], got[64];
            size_t n;
            int len = snprintf(m, sizeof(m), "session %d round %d", i, round);
            cr_assert_eq(ws_recv(&w[i], got, &n), 1);
            cr_assert(n == (size_t)len && memcmp(got, m, n) == 0, "%s: %.*s", m, (int)n, got);
        }
    }
    for (int i = 0; i < N; i++) {
        if (i % 2 == 0) {
            ws_send(&w[i], 8, "\x03\xe9", 2);
            expect_close(&w[i], 1001, "a session closing");
        } else {
            close(w[i].fd);
        }
    }
    expect_released(&g, echo, 1 + N, gw_fds, echo_fds, "after the sessions");
    gwp_finish(&g);
}

/* A session open when the gateway stops ends with it (the handler too),
 * and the gateway still exits cleanly. */
Test(websocket, a_session_open_at_shutdown_ends_with_the_gateway)
{
    struct gwp g;
    static struct ws w;
    open_echo_session(&g, &w);
    static char got[64];
    size_t n;
    ws_send(&w, 1, "x", 1);
    cr_assert_eq(ws_recv(&w, got, &n), 1);
    cr_assert_eq(gwp_stop(&g), 0, "the gateway exits 0");
    cr_expect_eq(ws_recv(&w, got, &n), 8, "the gateway's close frame (1001) first");
    cr_expect(closed_by_peer(&w, 3000), "the client's connection ended");
    close(w.fd);
    char *log = gwp_log(&g, "echo.log");
    cr_expect_not_null(strstr(log, "ws: session closed"), "the handler ended:\n%s", log);
    free(log);
    gwp_cleanup(&g);
}
