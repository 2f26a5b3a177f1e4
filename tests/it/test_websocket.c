/* WebSocket tunnelled through the gateway to echo's /echo/ws (SPEC §4, §7). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
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

/* Opens a session; returns the handshake answer's head (static buffer).
 * A rcvbuf > 0 shrinks the client's receive buffer (a slow reader). */
static const char *ws_open_rcvbuf(struct ws *w, int port, const char *path, int rcvbuf)
{
    w->fd = socket(AF_INET, SOCK_STREAM, 0);
    w->len = 0;
    if (rcvbuf > 0)
        cr_assert_eq(setsockopt(w->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert_eq(connect(w->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                     "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\nX-Request-Id: ws-1\r\n\r\n",
                     path);
    cr_assert_eq(write(w->fd, req, (size_t)n), n);
    static char head[4096];
    char *end = NULL;
    while ((end = memmem(w->buf, w->len, "\r\n\r\n", 4)) == NULL)
        cr_assert(more(w, 5000), "no handshake answer: %.*s", (int)w->len, w->buf);
    size_t hl = (size_t)(end - w->buf) + 4;
    memcpy(head, w->buf, hl);
    head[hl] = '\0';
    memmove(w->buf, w->buf + hl, w->len - hl);
    w->len -= hl;
    return head;
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

static void ws_send(struct ws *w, int opcode, const void *data, size_t len)
{
    unsigned char h[14];
    size_t hl = 2;
    h[0] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        h[1] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        h[1] = 0x80 | 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        hl = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    unsigned char mask[4] = { 0x12, 0x34, 0x56, 0x78 };
    memcpy(h + hl, mask, 4);
    hl += 4;
    unsigned char *frame = malloc(hl + len);
    memcpy(frame, h, hl);
    for (size_t i = 0; i < len; i++)
        frame[hl + i] = ((const unsigned char *)data)[i] ^ mask[i & 3];
    size_t off = 0;
    while (off < hl + len) {
        ssize_t n = write(w->fd, frame + off, hl + len - off);
        cr_assert_gt(n, 0);
        off += (size_t)n;
    }
    free(frame);
}

/* Receives one frame (the server does not mask); returns its opcode. */
static int ws_recv(struct ws *w, char *out, size_t *outlen)
{
    while (w->len < 2)
        cr_assert(more(w, 5000), "no frame");
    unsigned char *b = (unsigned char *)w->buf;
    int opcode = b[0] & 0x0F;
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
    while (w->len < hl + len)
        cr_assert(more(w, 5000), "short frame");
    memcpy(out, w->buf + hl, (size_t)len);
    *outlen = (size_t)len;
    memmove(w->buf, w->buf + hl + len, w->len - hl - len);
    w->len -= hl + (size_t)len;
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
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], 1);
        close(p[0]);
        execl(MODGATE_BIN, MODGATE_BIN, "--module", "echo", "--listen", "127.0.0.1:0", NULL);
        _exit(127);
    }
    close(p[1]);
    char buf[512] = "";
    size_t len = 0;
    while (strstr(buf, "ready on 127.0.0.1:") == NULL || strchr(buf, '\n') == NULL) {
        cr_assert(readable(p[0], 10000) && len < sizeof(buf) - 1, "no ready line: %s", buf);
        ssize_t n = read(p[0], buf + len, sizeof(buf) - 1 - len);
        cr_assert_gt(n, 0, "no ready line: %s", buf);
        len += (size_t)n;
        buf[len] = '\0';
    }
    int port = atoi(strstr(buf, "ready on 127.0.0.1:") + strlen("ready on 127.0.0.1:"));
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
    close(p[0]);
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
