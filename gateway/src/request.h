/*
 * One forwarded request, as proxy.c and tunnel.c share it. Everything here
 * runs on the request's loop thread.
 */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H

#include <curl/curl.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "headers.h"
#include "list.h"
#include "loop.h"
#include "module.h"
#include "util.h"
#include "ws_frames.h"

#define BUFFERED_MAX (64 * 1024)   /* answer from one buffer up to this size */
#define HIGH_WATER (64 * 1024)     /* pause the producer above this */
#define LOW_WATER (16 * 1024)      /* resume it below this */
#define DEATH_WAIT_MS 250          /* how long a broken transfer waits to learn why */
#define DISCARD_MAX (16u << 20)    /* body bytes read and dropped before an early answer */
/* Of a connection's memory pool, what a request head must leave for the
 * answer's: the gateway's own, or the module's with the gateway's lines
 * (module_head_fits in proxy.c: 512 bytes and the module's lines); and at
 * the module, whose pool is the same size, the lines the gateway adds to
 * the request (X-Forwarded-For, -Proto, X-Request-Id: some 300 bytes with
 * their records). A module answer of a few hundred bytes of headers fits
 * beside any head let through; a larger one beside a head near the limit
 * is the module's 502 bad_response, which says so. */
#define GW_ANSWER_ROOM 1024

struct bytes {
    char *data;
    size_t off, len, cap;
};

#define GW_PIECES_MAX 32

struct request {
    struct gw_loop *loop;
    struct MHD_Connection *conn;
    struct gw_link link_all, link_timer, link_unpause;
    struct gw_link link_hup;       /* on loop->hups: the client hung up mid-request */
    int refs;                      /* the MHD connection, and a streaming response */

    char *target;                  /* request target as sent: path?query */
    size_t pathlen;
    const char *method;            /* MHD's, valid while the connection lives */
    const char *connection;        /* the Connection tokens, all headers' (or NULL) */
    char *connection_joined;       /* their storage when several headers had them */
    char *authority;               /* of an absolute-form target: the Host to send */
    bool has_host;
    size_t head_cost;              /* the pool the request head takes (mg__mhd_head_cost) */
    unsigned forwarded_fors;       /* X-Forwarded-For lines among them */
    bool body_framed;              /* the client sent Content-Length or Transfer-Encoding */
    bool body_expected;            /* ... announcing a body of one byte or more */
    uint64_t start_us;
    uint64_t timer_at_ms;          /* start of the current timer list entry */
    char id[GW_REQUEST_ID_SIZE];
    char client[48];

    struct gw_module *mod;
    const char *route_pattern;     /* the matched route's, borrowed from the route table */
    struct gw_incarnation *inc;
    unsigned incarnation;          /* inc's number, or the module's latest */

    bool first_call_done;
    bool client_gone;              /* the client hung up while we waited */
    int fd;                        /* the client socket */
    bool suspended;
    bool reader_waiting;           /* suspended inside the content reader */
    bool queued;
    bool answered_raw;             /* answered on the socket, past MHD (408, or mid-body) */
    bool counted_active;

    /* A gateway-made answer: a local endpoint or an error. */
    int local_status;
    const char *cause;             /* X-Modgate-Error cause, for errors */
    char *local_body;              /* error message or local body */
    const char *local_ctype;
    const char *extra_name;        /* Allow / Retry-After */
    char *extra_value;

    /* The transfer to the module. */
    CURL *easy;
    struct curl_slist *hdrs;
    bool has_body;
    uint64_t body_seen;
    uint64_t discarded;
    struct bytes up;
    bool up_done, read_paused;

    int status;
    struct mg_buf resp_hdrs;       /* "name\0value\0" pairs */
    unsigned resp_hdr_count;       /* ... how many */
    int64_t resp_len;              /* Content-Length, -1 if none */
    bool headers_done, stream_mode, resp_ready;
    struct bytes down;
    /* Where the module's chunks end in `down` (a chunked stream), so that
     * each leaves as one chunk of its own (SPEC §4: chunk by chunk). Past
     * GW_PIECES_MAX waiting chunks, newer ones are merged into the last. */
    uint32_t piece[GW_PIECES_MAX];
    unsigned piece_first, piece_count;
    bool write_paused;
    bool upstream_done, upstream_failed, failure_known;
    CURLcode result;
    int os_errno;                  /* errno behind a failed transfer, if any */
    char *tail;                    /* error text ending a cut stream */
    size_t tail_len, tail_off;
    struct MHD_Response *stream_response; /* kept to add the error trailer */

    /* A WebSocket tunnel (tunnel.c): `up` carries client -> module bytes,
     * `down` module -> client. */
    bool ws;                       /* an Upgrade: websocket request */
    bool ws_open;                  /* the 101 went out: relaying bytes */
    bool hs_sent;                  /* the handshake is written to the module */
    bool client_eof;               /* the client ended its side of the tunnel */
    bool ws_awaiting_death;        /* the module's side ended: did the module die? */
    int mfd;                       /* our socket to the module, -1 if none */
    int cfd;                       /* the client socket, once upgraded */
    struct bytes hs;               /* handshake out, then the module's answer head */
    struct MHD_UpgradeResponseHandle *urh;
    uint32_t cmask, mmask;         /* epoll events registered for cfd and mfd */
    struct gw_ws_track ws_down;    /* the module's frames, as they go to the client */

    int final_status;
    uint64_t bytes_out;
};


/* Bounded byte queues: append fails with -1 past `max` or on ENOMEM. */
int gw_bytes_append(struct bytes *b, const void *data, size_t len, size_t max);
size_t gw_bytes_take(struct bytes *b, char *out, size_t max);
void gw_bytes_free(struct bytes *b);

/* (Re)starts the request's one timer: link_timer goes to the back of
 * `list`, timed from now (each timer list is in the order of its times). */
void gw_req_timer_start(struct request *r, struct gw_link *list);

/* (Re)starts the stream_idle_timeout_ms clock of a stream or tunnel
 * (link_timer on idle_streams); nothing when that timeout is off. */
void gw_req_idle_restart(struct request *r);

/* The client's own X-Forwarded-For list in *xff, every line of it in
 * order (RFC 9110 §5.3: several lines are one list), NULL if it sent none;
 * the gateway adds the client after it. *joined is what to free (set when
 * several lines had to be joined). -1 on ENOMEM. */
int gw_req_client_forwarded_for(struct request *r, const char **xff, char **joined);

/* Suspends the client connection until gw_req_resume. */
void gw_req_suspend(struct request *r);
void gw_req_resume(struct request *r);
void gw_req_unref(struct request *r);
/* Sets a gateway-made error answer (JSON body, X-Modgate-Error cause). */
void gw_req_set_error(struct request *r, int status, const char *cause, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The answer can be queued: resume the connection to queue it. */
void gw_req_answer_ready(struct request *r);
/* Ends the curl side of the request, if any. */
void gw_req_transfer_end(struct request *r);
/* Answers a request whose module connection broke (502 or a cut stream). */
void gw_req_finish_failure(struct request *r);
/* Takes one response header line from the module (curl's header callback). */
size_t gw_req_on_header(char *buf, size_t size, size_t n, void *userp);
/* The connection to the module broke: wait to learn why, then answer. */
void gw_req_transfer_failed(struct request *r);
/* Adds the module's response headers, less hop-by-hop ones, plus ours. */
bool gw_req_add_module_headers(struct request *r, struct MHD_Response *resp);

#endif
