/*
 * The module runtime's internals: request, response and stream objects and
 * the server that drives them. See runtime.c for the threading model.
 */
#ifndef MG_RUNTIME_H
#define MG_RUNTIME_H

#include <modgate/module.h>

#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include "router.h"
#include "util.h"

struct mg_kv {
    const char *name;
    const char *value;
};

/* One request. Made by the URI-log callback, freed when MHD reports it
 * complete or, for a stream, when the handler thread is done too. */
struct mg_req {
    struct MHD_Connection *conn;
    const mg_module *module;
    char *method;
    size_t pathlen;
    char *path;              /* the raw target up to '?', NUL-terminated ... */
    const char *query;       /* ... and after it in the same block, or "" */
    struct mg_kv *args;      /* decoded query arguments (owned strings) */
    size_t nargs;
    struct mg_kv *headers;   /* owned copies */
    size_t nheaders;
    struct mg_kv caps[MG_ROUTER_MAX_CAPTURES]; /* decoded captures (owned values) */
    size_t ncaps;
    struct mg_buf body;
    size_t body_pos;          /* mg_req_read's cursor over `body` */
    bool body_too_large;
    bool dispatched;
    bool is_probe;
    bool http10;              /* an HTTP/1.0 request: a stream is not chunked */
    const mg_route *route;    /* matched at the first call; NULL: probe or error */
    int route_error;          /* 404 or 405 when no route fits, 400 for a NUL in a capture */
    char *allow;              /* Allow value of a 405 */
    struct mg_upload *upload; /* set for a streaming-upload route */
};

struct mg_res {
    int status;
    struct mg_kv *headers;   /* owned copies */
    size_t nheaders, capheaders;
    struct mg_buf body;
    int err_status;          /* != 0 once mg_res_error was called */
    char *err_msg;
};

/* Builders shared by unary and streaming responses. */
void mg__res_init(struct mg_res *res);
void mg__res_clear(struct mg_res *res);
int mg__res_add_header(struct mg_res *res, const char *name, const char *value);
int mg__res_set_error(struct mg_res *res, int status, const char *fmt, va_list ap);
/* A status a module sets must be a final HTTP status, 200 to 599:
 * libmicrohttpd refuses one outside 100..999 (the connection breaks), sends
 * a 1xx as an interim answer (the client waits on for the final one), and
 * the gateway refuses 600..999 (RFC 9110 §15 leaves them undefined). For
 * any other status, fills msg with the error the client gets (a 500) and
 * returns true. */
bool mg__bad_status(int status, char *msg, size_t len);
/* The MHD response for a handler's outcome: `rc` is its return value.
 * Consumes res's body. NULL on ENOMEM. */
struct MHD_Response *mg__res_to_mhd(struct mg_res *res, int rc, const mg_req *req);
/* A JSON error body {"error", "module", "request_id"}; the caller queues it
 * with its status. */
struct MHD_Response *mg__error_response(const char *msg, const mg_req *req);
/* Queues `r` (NULL: fails the connection) and drops our reference. */
enum MHD_Result mg__queue(struct MHD_Connection *conn, int status, struct MHD_Response *r);
/* Answers with the JSON error body, plus one header when `header` is set. */
enum MHD_Result mg__answer_error(struct mg_req *req, int status, const char *msg,
                                 const char *header, const char *value);
int mg__add_headers(struct MHD_Response *r, const struct mg_res *res);

/* Requests. */
struct mg_req *mg__req_new(const mg_module *module, const char *target, size_t max_body);
void mg__req_free(struct mg_req *req);
/* Fills headers, query arguments and captures; 0 or -1 on ENOMEM. */
int mg__req_prepare(struct mg_req *req, const struct mg_route_match *m);

/* Starts a detached thread for a handler that outlives the MHD callback
 * (streaming uploads); 0 or an errno value. On success the thread must call
 * mg__handler_thread_done() as its last act: a graceful stop waits for it. */
int mg__start_handler_thread(void *(*fn)(void *), void *arg);
void mg__handler_thread_done(void);

/* Streams: runs `fn` on this (the connection's) thread; it writes the
 * answer to the socket itself once it has begun, and the connection then
 * closes (MHD_NO). A handler that ends before its first write is
 * answered through libmicrohttpd, as a unary one. */
enum MHD_Result mg__stream_start(struct mg_req *req, mg_stream_fn fn);

/* Streaming uploads: the handler starts on its own thread when the headers
 * are in and reads the body with mg_req_read while the connection thread
 * feeds it. Start returns -1 if no thread could be made. */
int mg__upload_start(struct mg_req *req, mg_handler_fn fn, size_t max_body);
/* Hands body bytes over; blocks while the handler is behind. */
void mg__upload_feed(struct mg_upload *u, const char *data, size_t len);
/* The body is complete: waits for the handler and queues its answer. */
enum MHD_Result mg__upload_finish(struct mg_req *req);
long mg__upload_read(struct mg_upload *u, void *buf, size_t len);
void mg__upload_connection_closed(struct mg_upload *u);

/* WebSocket routes: checks the handshake and queues the 101 response; the
 * route's handler then runs on the upgraded connection. */
enum MHD_Result mg__ws_start(struct mg_req *req);

const char *mg__current_module_name(void);
/* The size of a connection's memory pool in libmicrohttpd (mg__serve). */
size_t mg__connection_pool_size(void);
/* If the log (stderr) is a file whose last line is unfinished (a process
 * died halfway through writing it), ends that line. */
void mg__log_start_on_new_line(void);

struct mg_serve_opts {
    const char *listen;      /* "HOST:PORT" or "unix:PATH" */
    int ready_fd;            /* -1: none; else write one byte once listening */
    pid_t parent_pid;        /* 0: standalone; else die with this parent */
    const char *log_path;    /* reopened onto stdout/stderr at SIGHUP */
    size_t max_body;
    size_t max_header;       /* the gateway's max_header_bytes: sizes the connection pool */
    unsigned keepalive_s;    /* an idle keep-alive connection is closed after it */
};

/* Serves `module` until SIGTERM/SIGINT; returns the process exit code. */
int mg__serve(const mg_module *module, const struct mg_serve_opts *opts);

#endif
