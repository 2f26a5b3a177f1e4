/*
 * modgate module SDK: what a module author includes.
 *
 * A module declares its routes with MG_MODULE and writes handlers; it never
 * touches sockets, processes or curl. The gateway runs each module in its
 * own child process; the same code runs standalone with
 * `modgate --module NAME --listen HOST:PORT|unix:PATH`.
 *
 * Threading: every request runs its handler on a thread of its own, so a
 * handler may block (sleep, wait on a database) without holding up other
 * requests. Handlers of one module share the process: guard shared state.
 *
 * Error convention: functions that can fail return 0 on success and -1 on
 * failure (out of memory, client gone); none of them aborts.
 */
#ifndef MODGATE_MODULE_H
#define MODGATE_MODULE_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MG_PRINTF(fmt_idx, arg_idx) __attribute__((format(printf, fmt_idx, arg_idx)))
#else
#define MG_PRINTF(fmt_idx, arg_idx)
#endif

/* A request as the module received it. Borrowed: valid until the handler
 * returns, as is every string an accessor returns. */
typedef struct mg_req mg_req;
/* A unary response being built; sent when the handler returns. */
typedef struct mg_res mg_res;
/* A streaming response; the first write sends status and headers. It is
 * valid until the handler returns, for one thread at a time. */
typedef struct mg_stream mg_stream;

typedef int (*mg_handler_fn)(mg_req *req, mg_res *res);
typedef int (*mg_stream_fn)(mg_req *req, mg_stream *stream);

/* ---- request accessors -------------------------------------------------- */

const char *mg_req_method(const mg_req *req);
/* The path as sent, without the query string (still percent-encoded). */
const char *mg_req_path(const mg_req *req);
/* The raw query string without '?', "" when there is none. */
const char *mg_req_query_string(const mg_req *req);
/* The value of capture `{name}` (percent-decoded), or NULL. The trailing
 * wildcard is available as capture "*". Decoded, a capture may hold '/'
 * and "..": check it before using it as a file name. One with an encoded
 * NUL (%00) never reaches a handler: the request gets a 400. */
const char *mg_req_param(const mg_req *req, const char *name);
/* The first value of query argument `name` (decoded), or NULL. */
const char *mg_req_query(const mg_req *req, const char *name);
/* Query arguments in order, repeats kept: returns 0 and sets *name and
 * *value for index i < count, -1 past the end. A key without '=' has "". */
size_t mg_req_query_count(const mg_req *req);
int mg_req_query_at(const mg_req *req, size_t i, const char **name, const char **value);
/* The first value of header `name` (case-insensitive), or NULL. */
const char *mg_req_header(const mg_req *req, const char *name);
size_t mg_req_header_count(const mg_req *req);
int mg_req_header_at(const mg_req *req, size_t i, const char **name, const char **value);
/* The whole request body (not NUL-terminated; *len may be 0). On a
 * streaming-upload route (MG_UPLOAD) the body is not collected: use
 * mg_req_read there. */
const void *mg_req_body(const mg_req *req, size_t *len);
/* Reads the next bytes of the body into buf; returns how many (0 at the
 * end), or -1 if the upload broke off or went over the size limit. On an
 * MG_UPLOAD route it blocks until bytes arrive, so a handler can process a
 * body larger than memory; elsewhere it reads the collected body. */
long mg_req_read(mg_req *req, void *buf, size_t len);
/* The request id the gateway assigned (X-Request-Id), or "". */
const char *mg_req_id(const mg_req *req);

/* ---- unary responses ---------------------------------------------------- */

/* Status defaults to 200 with an empty body. A status that is not a final
 * HTTP status (200 to 599) makes the answer a 500 error. */
void mg_res_status(mg_res *res, int status);
/* Adds a header; repeats are kept in order (several Set-Cookie), but a
 * Content-Type replaces the one set before. Copies. Fails for a name that
 * is not an HTTP token or a value with CR or LF. */
int mg_res_header(mg_res *res, const char *name, const char *value);
/* Replaces the body with a copy of `len` bytes. */
int mg_res_body(mg_res *res, const void *data, size_t len);
/* Sets status, Content-Type (replacing any set before) and a formatted
 * body in one call. */
int mg_res_printf(mg_res *res, int status, const char *content_type,
                  const char *fmt, ...) MG_PRINTF(4, 5);
/* Marks the response as failed: the client gets `status` and the JSON body
 * {"error": MSG, "module": NAME}. Returns -1 so a handler can
 * `return mg_res_error(res, 404, "no such thing");`. */
int mg_res_error(mg_res *res, int status, const char *fmt, ...) MG_PRINTF(3, 4);

/* ---- streaming responses ------------------------------------------------ */

/* Status and headers may be set until the first write (default 200,
 * Content-Type text/plain; charset=utf-8), as for a unary response. */
void mg_stream_status(mg_stream *s, int status);
int mg_stream_header(mg_stream *s, const char *name, const char *value);
/* Sends one chunk. Blocks while the client is not reading (backpressure).
 * Returns -1 once the client has gone away: the handler should stop. An
 * answer to HEAD, or with status 204 or 304, is its head alone: the first
 * write sends it, and the writes after it return -1 too. */
int mg_stream_write(mg_stream *s, const void *data, size_t len);
int mg_stream_printf(mg_stream *s, const char *fmt, ...) MG_PRINTF(2, 3);
/* Fails the stream. Before the first write the client gets `status` and the
 * JSON error body, as for a unary handler; after it the message becomes the
 * last chunk and the stream ends cleanly. Writes after it fail, and a
 * second error does not replace the first. Returns -1. */
int mg_stream_error(mg_stream *s, int status, const char *fmt, ...) MG_PRINTF(3, 4);
/* 1 once the client has gone away, else 0. */
int mg_stream_client_gone(mg_stream *s);
/* Sleeps up to `ms` milliseconds; returns early with -1 if the client goes
 * away meanwhile, else 0. For handlers that pace their output. */
int mg_stream_sleep(mg_stream *s, unsigned ms);

/* ---- logging ------------------------------------------------------------ */

enum mg_log_level { MG_LOG_DEBUG, MG_LOG_INFO, MG_LOG_WARN, MG_LOG_ERROR };

/* Writes one timestamped line to the module's log (its stderr). One call is
 * one line: line breaks and other control characters in the message are
 * written escaped (\n, \r, \xHH; a backslash as \\, a byte that is not
 * UTF-8 as \xHH), so request data cannot forge lines. */
void mg_log(enum mg_log_level level, const char *fmt, ...) MG_PRINTF(2, 3);
void mg_vlog(enum mg_log_level level, const char *fmt, va_list ap);

/* ---- WebSocket ----------------------------------------------------------- */

/* A WebSocket session (RFC 6455) after the handshake, which the runtime
 * does. Use it from the handler's thread. */
typedef struct mg_ws mg_ws;
typedef int (*mg_ws_fn)(mg_req *req, mg_ws *ws);

enum { MG_WS_TEXT = 1, MG_WS_BINARY = 2 };

/* Waits for the next whole message; sets *data (valid until the next call)
 * and *type (MG_WS_TEXT or MG_WS_BINARY) and returns its length, or -1
 * once the peer closed the session or broke the protocol. Pings are
 * answered by the runtime. */
long mg_ws_recv(mg_ws *ws, const void **data, int *type);
/* Sends one message; 0, or -1 once the session is closed. */
int mg_ws_send(mg_ws *ws, const void *data, size_t len, int type);
/* Starts the closing handshake with a status code (1000 = normal). */
int mg_ws_close(mg_ws *ws, int code, const char *reason);

/* ---- declaring a module ------------------------------------------------- */

enum { MG_ROUTE_UNARY, MG_ROUTE_STREAM, MG_ROUTE_HEALTH, MG_ROUTE_INIT, MG_ROUTE_UPLOAD,
       MG_ROUTE_WS };

/* A module's start-up hook: runs once in the module's process before it
 * accepts requests (open files, connect to a database). Non-zero fails the
 * start: the process exits and the gateway reports it with the log tail. */
typedef int (*mg_init_fn)(void);

/* One entry of a module's table. Build it with the macros below. */
typedef struct mg_route {
    const char *method;   /* "GET", ..., or "*" for any method */
    const char *pattern;  /* e.g. "/hello/{name}", or "/echo/" followed by a final star */
    mg_handler_fn unary;
    mg_stream_fn stream;
    int kind;             /* MG_ROUTE_* */
    mg_init_fn init;
    mg_ws_fn ws;
} mg_route;

typedef struct mg_module {
    const char *name;
    const mg_route *routes;
    size_t nroutes;
} mg_module;

/* Every field, in order: valid C and C++ alike, and quiet under -Wextra
 * (which warns of fields a C++ initializer leaves out). */
#define MG__ROUTE(m, p, unary, stream, kind, init, ws) \
    { (m), (p), (unary), (stream), (kind), (init), (ws) }
#define MG_ROUTE(m, p, fn)    MG__ROUTE(m, p, fn, NULL, MG_ROUTE_UNARY, NULL, NULL)
#define MG_GET(p, fn)         MG_ROUTE("GET", p, fn)
#define MG_POST(p, fn)        MG_ROUTE("POST", p, fn)
#define MG_PUT(p, fn)         MG_ROUTE("PUT", p, fn)
#define MG_DELETE(p, fn)      MG_ROUTE("DELETE", p, fn)
#define MG_ANY(p, fn)         MG_ROUTE("*", p, fn)
#define MG_STREAM(m, p, fn)   MG__ROUTE(m, p, NULL, fn, MG_ROUTE_STREAM, NULL, NULL)
#define MG_STREAM_GET(p, fn)  MG_STREAM("GET", p, fn)
#define MG_STREAM_POST(p, fn) MG_STREAM("POST", p, fn)
/* A unary handler that reads its request body as it arrives (mg_req_read),
 * started as soon as the headers are in. */
#define MG_UPLOAD(m, p, fn)   MG__ROUTE(m, p, fn, NULL, MG_ROUTE_UPLOAD, NULL, NULL)
/* A WebSocket endpoint (GET with Upgrade: websocket). */
#define MG_WS(p, fn)          MG__ROUTE("GET", p, NULL, NULL, MG_ROUTE_WS, NULL, fn)
/* An optional health check run by the gateway's periodic probe, on the same
 * path as requests: return 0 when healthy. A module without one is healthy
 * whenever it answers. */
#define MG_HEALTH(fn)         MG__ROUTE(NULL, NULL, fn, NULL, MG_ROUTE_HEALTH, NULL, NULL)
/* Declares the module's start-up hook (see mg_init_fn). */
#define MG_INIT(fn)           MG__ROUTE(NULL, NULL, NULL, NULL, MG_ROUTE_INIT, fn, NULL)

/* Adds a module to the program's registry (called by MG_MODULE before main;
 * `module` must outlive the program). */
void mg_module_register(const mg_module *module);

/* Runs one registered module as a server, for `--module NAME --listen
 * HOST:PORT|unix:PATH` command lines; returns the process exit code. */
int mg_module_main(int argc, char **argv);

/* Declares the module `name_` with its routes, once per module, at file
 * scope, as a declaration: `MG_MODULE(hello, MG_GET(...), ...);`, the ';'
 * included (it is required: the form without it no longer compiles). */
#define MG_MODULE(name_, ...)                                                  \
    static const mg_route mg__routes_##name_[] = { __VA_ARGS__ };             \
    static const mg_module mg__module_##name_ = {                             \
        #name_, mg__routes_##name_,                                           \
        sizeof(mg__routes_##name_) / sizeof(mg__routes_##name_[0]) };         \
    __attribute__((constructor)) static void mg__register_##name_(void)        \
    {                                                                          \
        mg_module_register(&mg__module_##name_);                              \
    }                                                                          \
    /* takes the ';' after MG_MODULE(...) (pedantic C has no empty one) */     \
    extern int mg__module_end_##name_

#ifdef __cplusplus
}
#endif

#endif
