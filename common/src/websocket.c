/*
 * WebSocket endpoints in the module runtime (RFC 6455): the handshake
 * (Sec-WebSocket-Accept = base64(SHA-1(key + GUID))), then frames on the
 * socket libmicrohttpd hands over after the 101 response.
 *
 * The runtime is thread-per-connection, so the handler runs inside the
 * upgrade callback on the connection's own thread and uses blocking I/O
 * (poll around the non-blocking socket MHD gave us).
 */
#include <errno.h>
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "runtime.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MAX_MESSAGE (16u << 20) /* larger messages close the session (1009) */
#define CLOSE_WAIT_MS 5000       /* for the peer's close frame, after ours */

/* Sec-WebSocket-Accept for `key` (RFC 6455 §4.2.2). */
#define WS_ACCEPT_LEN BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)

static void ws_accept(const char *key, char out[WS_ACCEPT_LEN + 1])
{
    struct sha1_ctx ctx;
    uint8_t digest[SHA1_DIGEST_SIZE];
    sha1_init(&ctx);
    sha1_update(&ctx, strlen(key), (const uint8_t *)key);
    sha1_update(&ctx, strlen(WS_GUID), (const uint8_t *)WS_GUID);
    sha1_digest(&ctx, sizeof(digest), digest);
    base64_encode_raw(out, sizeof(digest), digest);
    out[WS_ACCEPT_LEN] = '\0';
}

/* RFC 6455 §4.1: the key is the base64 of 16 bytes (24 characters); any
 * other value is refused, not answered with an accept a client would take. */
static bool ws_key_valid(const char *key)
{
    struct base64_decode_ctx ctx;
    uint8_t raw[BASE64_DECODE_LENGTH(24)];
    size_t n = sizeof(raw);
    if (strlen(key) != 24)
        return false;
    base64_decode_init(&ctx);
    return base64_decode_update(&ctx, &n, raw, 24, key) && base64_decode_final(&ctx) && n == 16;
}

/* True if s[0..n) is UTF-8 as RFC 3629 has it (RFC 6455 §8.1: text frames
 * and close reasons must be): no overlong form, no surrogate, nothing over
 * U+10FFFF, no sequence cut short. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t more;
        unsigned char lo = 0x80, hi = 0xBF; /* the range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* over U+10FFFF */
        } else {
            return false;
        }
        if (n - i - 1 < more || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t j = 2; j <= more; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
        i += more + 1;
    }
    return true;
}

/* RFC 6455 §7.4: the codes a peer may send. 1005, 1006 and 1015 only
 * report a close that had no code; 1012-1014 are registered since (IANA);
 * 3000-4999 belong to libraries and applications. */
static bool close_code_valid(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* ---- the session ---------------------------------------------------------- */

struct mg_ws {
    int fd;
    bool closed;          /* we sent a close frame, or the peer is gone */
    bool peer_closed;
    char *in;             /* bytes read but not yet parsed */
    size_t in_off, in_len, in_cap;
    char *msg;            /* the message being assembled */
    size_t msg_len, msg_cap;
};

/* Waits for `events` on fd, up to timeout_ms (-1: no limit); 0, or -1 on
 * an error or at the timeout. */
static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = events };
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n > 0)
            return (p.revents & (POLLERR | POLLNVAL)) ? -1 : 0;
        if (n == 0 || errno != EINTR)
            return -1;
    }
}

static int send_all(mg_ws *ws, const struct iovec *iov, int n)
{
    struct iovec v[2];
    memcpy(v, iov, (size_t)n * sizeof(*v));
    int i = 0;
    while (i < n) {
        struct msghdr mh = { .msg_iov = v + i, .msg_iovlen = (size_t)(n - i) };
        ssize_t w = sendmsg(ws->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(ws->fd, POLLOUT, -1) == 0)
                continue;
            return -1;
        }
        size_t left = (size_t)w;
        while (i < n && left >= v[i].iov_len)
            left -= v[i++].iov_len;
        if (i < n) {
            v[i].iov_base = (char *)v[i].iov_base + left;
            v[i].iov_len -= left;
        }
    }
    return 0;
}

static int send_frame(mg_ws *ws, int opcode, const void *data, size_t len)
{
    unsigned char head[10];
    size_t hl = 2;
    head[0] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        head[1] = (unsigned char)len;
    } else if (len <= 0xFFFF) {
        head[1] = 126;
        head[2] = (unsigned char)(len >> 8);
        head[3] = (unsigned char)len;
        hl = 4;
    } else {
        head[1] = 127;
        for (int i = 0; i < 8; i++)
            head[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    struct iovec iov[2] = { { head, hl }, { (void *)data, len } };
    /* One thread per session (module.h): no lock around the frame. */
    return ws->closed && opcode != 8 ? -1 : send_all(ws, iov, len ? 2 : 1);
}

/* Makes `n` bytes available at ws->in + ws->in_off; 0 or -1 (peer gone). */
static int need(mg_ws *ws, size_t n)
{
    if (ws->in_len >= n)
        return 0;
    if (ws->in_off > 0) {
        memmove(ws->in, ws->in + ws->in_off, ws->in_len);
        ws->in_off = 0;
    }
    if (n > ws->in_cap) {
        size_t cap = ws->in_cap ? ws->in_cap : 4096;
        while (cap < n)
            cap *= 2;
        char *p = realloc(ws->in, cap);
        if (p == NULL)
            return -1;
        ws->in = p;
        ws->in_cap = cap;
    }
    while (ws->in_len < n) {
        ssize_t r = recv(ws->fd, ws->in + ws->in_len, ws->in_cap - ws->in_len, 0);
        if (r > 0) {
            ws->in_len += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        /* Once our close frame is out, the peer's answer is waited for
         * CLOSE_WAIT_MS at most (RFC 6455 §7.1.1: then the connection
         * is closed), not for as long as the tunnel may idle. */
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
            wait_fd(ws->fd, POLLIN, ws->closed ? CLOSE_WAIT_MS : -1) == 0)
            continue;
        return -1;
    }
    return 0;
}

static void consume(mg_ws *ws, size_t n)
{
    ws->in_off += n;
    ws->in_len -= n;
}

static long fail_session(mg_ws *ws, int code)
{
    unsigned char c[2] = { (unsigned char)(code >> 8), (unsigned char)code };
    if (!ws->closed) {
        send_frame(ws, 8, c, 2);
        ws->closed = true;
    }
    ws->peer_closed = true;
    return -1;
}

long mg_ws_recv(mg_ws *ws, const void **data, int *type)
{
    if (ws->peer_closed)
        return -1;
    ws->msg_len = 0;
    int msg_type = 0;
    for (;;) {
        if (need(ws, 2) != 0) {
            ws->peer_closed = true;
            return -1;
        }
        unsigned char *h = (unsigned char *)ws->in + ws->in_off;
        bool fin = h[0] & 0x80;
        int opcode = h[0] & 0x0F;
        bool masked = h[1] & 0x80;
        uint64_t len = h[1] & 0x7F;
        size_t hl = 2;
        if (h[0] & 0x70)
            return fail_session(ws, 1002); /* no extensions were agreed */
        if (!masked)
            return fail_session(ws, 1002); /* clients must mask */
        if (len == 126)
            hl = 4;
        else if (len == 127)
            hl = 10;
        if (need(ws, hl + 4) != 0) {
            ws->peer_closed = true;
            return -1;
        }
        h = (unsigned char *)ws->in + ws->in_off;
        if (hl == 4)
            len = (uint64_t)h[2] << 8 | h[3];
        if (hl == 10) {
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | h[2 + i];
        }
        bool control = opcode & 0x8;
        if (control && (len > 125 || !fin))
            return fail_session(ws, 1002);
        if (len > MAX_MESSAGE || (!control && ws->msg_len + len > MAX_MESSAGE))
            return fail_session(ws, 1009);
        unsigned char mask[4];
        memcpy(mask, h + hl, 4);
        if (need(ws, hl + 4 + (size_t)len) != 0) {
            ws->peer_closed = true;
            return -1;
        }
        unsigned char *payload = (unsigned char *)ws->in + ws->in_off + hl + 4;
        for (uint64_t i = 0; i < len; i++)
            payload[i] ^= mask[i & 3];

        if (opcode == 8) { /* close: answer it, then the session is over */
            /* Answering a code that may not be sent would send it ourselves
             * (RFC 6455 §5.5.1: an empty close, or a code and a reason). */
            if (len == 1 || (len >= 2 && !close_code_valid(payload[0] << 8 | payload[1])))
                return fail_session(ws, 1002);
            if (len > 2 && !utf8_valid(payload + 2, (size_t)len - 2))
                return fail_session(ws, 1007);
            if (!ws->closed)
                send_frame(ws, 8, payload, len >= 2 ? 2 : 0);
            ws->closed = true;
            ws->peer_closed = true;
            consume(ws, hl + 4 + (size_t)len);
            return -1;
        }
        if (opcode == 9) { /* ping */
            send_frame(ws, 10, payload, (size_t)len);
            consume(ws, hl + 4 + (size_t)len);
            continue;
        }
        if (opcode == 10) { /* pong */
            consume(ws, hl + 4 + (size_t)len);
            continue;
        }
        if (opcode == 1 || opcode == 2) {
            if (msg_type != 0)
                return fail_session(ws, 1002); /* a new message inside a fragmented one */
            msg_type = opcode;
        } else if (opcode != 0 || msg_type == 0) {
            return fail_session(ws, 1002);
        }
        if (ws->msg_len + len + 1 > ws->msg_cap) {
            size_t cap = ws->msg_cap ? ws->msg_cap : 4096;
            while (cap < ws->msg_len + len + 1)
                cap *= 2;
            char *p = realloc(ws->msg, cap);
            if (p == NULL)
                return fail_session(ws, 1011);
            ws->msg = p;
            ws->msg_cap = cap;
        }
        memcpy(ws->msg + ws->msg_len, payload, (size_t)len);
        ws->msg_len += (size_t)len;
        ws->msg[ws->msg_len] = '\0';
        consume(ws, hl + 4 + (size_t)len);
        if (fin) {
            /* A handler is promised text, and a client echoed to would fail
             * on it otherwise. */
            if (msg_type == 1 && !utf8_valid((unsigned char *)ws->msg, ws->msg_len))
                return fail_session(ws, 1007);
            *data = ws->msg ? ws->msg : "";
            *type = msg_type == 1 ? MG_WS_TEXT : MG_WS_BINARY;
            return (long)ws->msg_len;
        }
    }
}

int mg_ws_send(mg_ws *ws, const void *data, size_t len, int type)
{
    return send_frame(ws, type == MG_WS_TEXT ? 1 : 2, data, len);
}

int mg_ws_close(mg_ws *ws, int code, const char *reason)
{
    char buf[125];
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > sizeof(buf) - 2)
        rl = sizeof(buf) - 2;
    buf[0] = (char)(code >> 8);
    buf[1] = (char)code;
    if (rl)
        memcpy(buf + 2, reason, rl);
    if (ws->closed)
        return 0;
    int rc = send_frame(ws, 8, buf, 2 + rl);
    ws->closed = true;
    return rc;
}

/* ---- the runtime's side ---------------------------------------------------- */

static void on_upgrade(void *cls, struct MHD_Connection *conn, void *con_cls,
                       const char *extra_in, size_t extra_in_size, MHD_socket sock,
                       struct MHD_UpgradeResponseHandle *urh)
{
    (void)conn, (void)con_cls;
    struct mg_req *req = cls;
    mg_ws ws = { .fd = sock };
    int rc = -1;
    if (extra_in_size > 0) {
        /* Frames the client sent right behind the handshake. */
        if ((ws.in = malloc(extra_in_size)) == NULL) {
            ws.peer_closed = ws.closed = true; /* cannot go on with frames missing */
        } else {
            memcpy(ws.in, extra_in, extra_in_size);
            ws.in_len = ws.in_cap = extra_in_size;
        }
    }
    if (ws.in != NULL || extra_in_size == 0)
        rc = req->route->ws(req, &ws);
    if (!ws.closed)
        mg_ws_close(&ws, rc == 0 ? 1000 : 1011, rc == 0 ? "" : "handler failed");
    /* Give the peer's close frame a moment, so that it is not answered by
     * a reset. */
    if (!ws.peer_closed) {
        struct pollfd p = { .fd = sock, .events = POLLIN };
        poll(&p, 1, 1000);
    }
    free(ws.in);
    free(ws.msg);
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
}

static bool has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = value; p && *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0)
            return true;
    }
    return false;
}

enum MHD_Result mg__ws_start(struct mg_req *req)
{
    const char *upgrade = mg_req_header(req, "Upgrade");
    const char *connection = mg_req_header(req, "Connection");
    const char *key = mg_req_header(req, "Sec-WebSocket-Key");
    const char *version = mg_req_header(req, "Sec-WebSocket-Version");
    struct MHD_Response *r;
    if (upgrade == NULL || !has_token(upgrade, "websocket") || connection == NULL ||
        !has_token(connection, "upgrade") || key == NULL || !ws_key_valid(key)) {
        return mg__answer_error(req, 400, "a WebSocket handshake is expected here", NULL, NULL);
    }
    if (version == NULL || strcmp(version, "13") != 0)
        return mg__answer_error(req, 426, "unsupported WebSocket version",
                                "Sec-WebSocket-Version", "13");
    char accept[WS_ACCEPT_LEN + 1];
    ws_accept(key, accept);

    /* The request lives until the connection closes, after the session.
     * libmicrohttpd's upgrade response already holds "Connection: Upgrade"
     * (and refuses to queue one without it); adding it again would merge
     * into "Connection: Upgrade, Upgrade". */
    r = MHD_create_response_for_upgrade(on_upgrade, req);
    if (r == NULL)
        return MHD_NO;
    if (MHD_add_response_header(r, "Upgrade", "websocket") != MHD_YES ||
        MHD_add_response_header(r, "Sec-WebSocket-Accept", accept) != MHD_YES) {
        MHD_destroy_response(r);
        return MHD_NO;
    }
    return mg__queue(req->conn, 101, r);
}
