/*
 * The module runtime: one module served by libmicrohttpd, in a gateway
 * child or standalone.
 *
 * Threads: MHD runs one thread per connection. Handlers are plain blocking
 * C functions, so a slow or stuck handler holds only its own connection;
 * the gateway keeps a pool of keep-alive connections to the child, so the
 * thread count follows the gateway's concurrency, not its clients. A
 * streaming handler runs on its connection's thread too, and writes to
 * the socket itself (stream.c); a streaming-upload handler gets a thread
 * of its own (upload.c).
 *
 * The main thread only waits for signals: SIGTERM/SIGINT stop the server
 * after in-flight requests finish, SIGHUP reopens the log file.
 *
 * The gateway's probe, GET /-/probe, is dispatched exactly like a request:
 * it runs the module's MG_HEALTH handler (if any) on a connection thread.
 *
 * Timeouts: the gateway times requests and streams (request_timeout_ms,
 * stream_idle_timeout_ms, 0 = never). libmicrohttpd's connection timeout
 * here only closes keep-alive connections left idle (after a burst, each
 * holds a thread): it is off while a request is being served, or it would
 * cut a stream quieter than it, or a handler slower than it.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "listen.h"
#include "registry.h"
#include "runtime.h"

#define PROBE_PATH "/-/probe"

static const char *module_name = "modgate";
static atomic_long active_requests;
/* The most requests in flight at once since the heap was last trimmed,
 * and when that was (mg__now_ms). */
static atomic_long peak_requests;
static atomic_ullong trimmed_at_ms;

/* After a burst (5000 streams left some 40 MiB behind), the heap is given
 * back once nothing is in flight, at most once a second: glibc keeps what
 * the connection threads freed in their arenas. The gateway's loops do
 * the same (gateway/src/loop.c). */
static void trim_after_burst(void)
{
    long peak = atomic_load(&peak_requests);
    uint64_t now = mg__now_ms();
    if (peak < 32 || now < atomic_load(&trimmed_at_ms) + 1000 ||
        !atomic_compare_exchange_strong(&peak_requests, &peak, 0))
        return;
    atomic_store(&trimmed_at_ms, now);
    malloc_trim(0);
}
/* Streaming-upload handlers still running, on threads of their own. One
 * outlives its request when the client leaves: it learns so at its next
 * read, and may then still have work to do (close a file, end a
 * transaction) that a stop must not cut short, nor free the router under.
 * (A stream handler runs inside its request, counted in active_requests.) */
static atomic_long active_handlers;
/* Seconds an idle keep-alive connection is kept (mg_serve_opts). */
static unsigned keepalive_s;

const char *mg__current_module_name(void)
{
    return module_name;
}

static size_t connection_pool = 32 * 1024;

size_t mg__connection_pool_size(void)
{
    return connection_pool;
}

struct server {
    const mg_module *module;
    struct mg_router *router;
    const mg_route *health;
    size_t max_body;
};

int mg__start_handler_thread(void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    pthread_t tid;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1024 * 1024); /* like MHD's connection threads */
    atomic_fetch_add(&active_handlers, 1);
    int err = pthread_create(&tid, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (err != 0)
        atomic_fetch_sub(&active_handlers, 1);
    return err;
}

void mg__handler_thread_done(void)
{
    atomic_fetch_sub(&active_handlers, 1);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct server *srv = cls;
    struct mg_req *req = mg__req_new(srv->module, uri, srv->max_body);
    mg__mhd_skip_query_records(uri); /* parsed above already: see util.h */
    if (req != NULL) {
        req->conn = conn;
        long n = atomic_fetch_add(&active_requests, 1) + 1;
        long peak = atomic_load(&peak_requests);
        while (n > peak && !atomic_compare_exchange_weak(&peak_requests, &peak, n))
            ;
    }
    return req;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)toe;
    struct mg_req *req = *con_cls;
    *con_cls = NULL;
    if (req == NULL)
        return;
    bool last = atomic_fetch_sub(&active_requests, 1) == 1;
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, keepalive_s);
    if (req->upload != NULL)
        mg__upload_connection_closed(req->upload);
    else
        mg__req_free(req);
    if (last)
        trim_after_burst();
}

enum MHD_Result mg__queue(struct MHD_Connection *conn, int status, struct MHD_Response *r)
{
    if (r == NULL)
        return MHD_NO;
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

enum MHD_Result mg__answer_error(struct mg_req *req, int status, const char *msg,
                                 const char *header, const char *value)
{
    struct MHD_Response *r = mg__error_response(msg, req);
    if (r != NULL && header != NULL && MHD_add_response_header(r, header, value) != MHD_YES) {
        MHD_destroy_response(r);
        r = NULL;
    }
    return mg__queue(req->conn, status, r);
}

static enum MHD_Result run_unary(struct mg_req *req, mg_handler_fn fn)
{
    struct mg_res res;
    mg__res_init(&res);
    int rc = fn(req, &res);
    struct MHD_Response *r = mg__res_to_mhd(&res, rc, req);
    int status = res.status;
    mg__res_clear(&res);
    return mg__queue(req->conn, status, r);
}

/* First call: routes the request, so that a streaming-upload handler can
 * start before the body. Errors are remembered and answered at the last
 * call (answering now would cost the keep-alive connection). */
static enum MHD_Result route(struct server *srv, struct mg_req *req)
{
    if (strcmp(req->path, PROBE_PATH) == 0) {
        req->is_probe = true;
        return mg__req_prepare(req, NULL) == 0 ? MHD_YES : MHD_NO;
    }
    struct mg_route_match m;
    enum mg_route_result found =
        mg_router_match(srv->router, req->method, req->path, req->pathlen, &m, NULL, 0);
    if (found == MG_ROUTE_NO_PATH) {
        req->route_error = 404;
        return MHD_YES;
    }
    if (found == MG_ROUTE_NO_METHOD) {
        /* Rare: only now is the Allow list worth building. */
        size_t allowlen = mg_router_allow_max(srv->router);
        if ((req->allow = malloc(allowlen)) == NULL)
            return MHD_NO;
        mg_router_match(srv->router, req->method, req->path, req->pathlen, &m, req->allow,
                        allowlen);
        req->route_error = 405;
        return MHD_YES;
    }
    if (mg__req_prepare(req, &m) != 0)
        return MHD_NO;
    /* A capture must not hide part of itself from a handler that reads it
     * as a C string: "/files/a%00.txt" would open "a" (nginx refuses an
     * encoded NUL in the path too). Checked after mg__req_prepare, so that
     * the error carries the request id like any other. */
    for (size_t i = 0; i < m.ncaptures; i++)
        if (mg__percent_holds_nul(req->path + m.captures[i].off, m.captures[i].len)) {
            req->route_error = 400;
            return MHD_YES;
        }
    req->route = m.data;
    if (req->route->kind == MG_ROUTE_UPLOAD &&
        mg__upload_start(req, req->route->unary, srv->max_body) != 0) {
        mg_log(MG_LOG_ERROR, "cannot start an upload handler thread");
        req->route = NULL;
        req->route_error = 503;
    }
    return MHD_YES;
}

/* Last call: the body is in; run the handler and queue its answer. */
static enum MHD_Result dispatch(struct server *srv, struct mg_req *req)
{
    if (req->upload != NULL)
        return mg__upload_finish(req);
    if (req->route_error == 404)
        return mg__answer_error(req, 404, "no route", NULL, NULL);
    if (req->route_error == 405)
        return mg__answer_error(req, 405, "method not allowed", "Allow", req->allow);
    if (req->route_error == 400)
        return mg__answer_error(req, 400, "the path holds an encoded NUL (%00)", NULL, NULL);
    if (req->route_error != 0)
        return mg__answer_error(req, req->route_error, mg__reason(req->route_error), NULL, NULL);
    if (req->body_too_large)
        return mg__answer_error(req, 413, "request body too large", NULL, NULL);
    if (req->is_probe) {
        if (srv->health == NULL)
            return mg__queue(req->conn, 200,
                         MHD_create_response_from_buffer(3, (void *)"ok\n", MHD_RESPMEM_PERSISTENT));
        return run_unary(req, srv->health->unary);
    }
    if (req->route->kind == MG_ROUTE_WS)
        return mg__ws_start(req);
    return req->route->kind == MG_ROUTE_STREAM ? mg__stream_start(req, req->route->stream)
                                               : run_unary(req, req->route->unary);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)url;
    struct server *srv = cls;
    struct mg_req *req = *con_cls;
    if (req == NULL)
        return MHD_NO;
    if (req->method == NULL) {
        if ((req->method = strdup(method)) == NULL)
            return MHD_NO;
        req->http10 = strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
        return route(srv, req);
    }
    if (*upload_data_size > 0) {
        if (req->upload != NULL)
            mg__upload_feed(req->upload, upload_data, *upload_data_size);
        else if (!req->body_too_large && req->route != NULL &&
                 mg__buf_append(&req->body, upload_data, *upload_data_size) != 0)
            req->body_too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->dispatched)
        return MHD_YES;
    req->dispatched = true;
    return dispatch(srv, req);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        return;
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    /* A client that left is no warning: a stream handler logs it itself
     * ("(client gone)"), and these lines would crowd the tail a crash
     * report shows. */
    if (!mg__mhd_message_is_routine(msg))
        mg_log(MG_LOG_WARN, "libmicrohttpd: %s", msg);
    free(msg);
}

static void reopen_log(const char *path)
{
    if (path == NULL)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        mg_log(MG_LOG_ERROR, "cannot reopen log %s: %s", path, strerror(errno));
        return;
    }
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* Waits for one of `set` (for ever when timeout is NULL): SIGHUP reopens
 * the log; returns SIGTERM or SIGINT when one came, else 0. */
static int stop_signal(const sigset_t *set, const struct timespec *timeout, const char *log_path)
{
    int sig = timeout ? sigtimedwait(set, NULL, timeout) : sigwaitinfo(set, NULL);
    if (sig == SIGHUP)
        reopen_log(log_path);
    return sig == SIGTERM || sig == SIGINT ? sig : 0;
}

/* Run alone, the module removes the Unix socket it made; under the
 * gateway, the gateway does. */
static void remove_own_socket(const struct mg_serve_opts *opts)
{
    if (strncmp(opts->listen, "unix:", 5) == 0 && opts->parent_pid == 0)
        unlink(opts->listen + 5);
}

int mg__serve(const mg_module *module, const struct mg_serve_opts *opts)
{
    char err[512];
    struct server srv = { .module = module, .max_body = opts->max_body };
    module_name = module->name;
    keepalive_s = opts->keepalive_s;

    if (opts->parent_pid > 0) {
        /* Die with the gateway, even if it is SIGKILLed; the check after
         * prctl closes the window where the parent died first. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != opts->parent_pid)
            return 111;
    }

    /* Signals are taken by sigwait in this thread only; every MHD thread
     * inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    mg_init_fn init = NULL;
    srv.router = mg_router_new();
    if (srv.router == NULL)
        return 111;
    for (size_t i = 0; i < module->nroutes; i++) {
        const mg_route *r = &module->routes[i];
        if (r->kind == MG_ROUTE_HEALTH) {
            srv.health = r;
            continue;
        }
        if (r->kind == MG_ROUTE_INIT) {
            init = r->init;
            continue;
        }
        int rc = mg_router_add(srv.router, r->method, r->pattern, (void *)r, NULL, err,
                               sizeof(err));
        if (rc != 0) {
            mg_log(MG_LOG_ERROR, "bad route: %s", err);
            mg_router_free(srv.router);
            return 100;
        }
    }
    if (init != NULL && init() != 0) {
        mg_log(MG_LOG_ERROR, "start-up hook failed");
        mg_router_free(srv.router);
        return 1;
    }

    int lfd = mg__listen(opts->listen, err, sizeof(err));
    if (lfd < 0) {
        mg_log(MG_LOG_ERROR, "%s", err);
        mg_router_free(srv.router);
        return 111;
    }

    /* A connection's memory pool holds the request head the gateway
     * forwards (at most max_header_bytes and the few headers it adds) and
     * the answer's head, sized as the gateway's own (gateway/src/loop.c).
     * At 32 KiB or less libmicrohttpd takes it from malloc; a larger one
     * is an mmap and munmap of its own, and page faults, for every
     * connection: with a connection per stream, a third of a short
     * stream's cost. */
    size_t pool = opts->max_header + 16 * 1024;
    if (pool < 32 * 1024)
        pool = 32 * 1024;
    connection_pool = pool;
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_USE_ITC | MHD_ALLOW_UPGRADE |
            MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, &srv,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
        MHD_OPTION_LISTEN_SOCKET, lfd,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, &srv,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, &srv,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
        MHD_OPTION_CONNECTION_TIMEOUT, keepalive_s,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(1024 * 1024),
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)100000,
        MHD_OPTION_END);
    if (d == NULL) {
        mg_log(MG_LOG_ERROR, "cannot start the HTTP server on %s", opts->listen);
        close(lfd);
        mg_router_free(srv.router);
        return 111;
    }

    if (opts->ready_fd >= 0) {
        ssize_t w;
        do
            w = write(opts->ready_fd, "R", 1);
        while (w < 0 && errno == EINTR);
        close(opts->ready_fd);
    } else {
        char where[256];
        if (mg__listen_address(lfd, where, sizeof(where)) != 0)
            snprintf(where, sizeof(where), "%s", opts->listen);
        printf("modgate: module %s ready on %s\n", module->name, where);
        fflush(stdout);
    }

    while (stop_signal(&set, NULL, opts->log_path) == 0)
        ;

    /* Stop accepting, then let in-flight requests and handlers finish;
     * the gateway SIGKILLs us if that takes longer than its stop timeout. */
    int qfd = MHD_quiesce_daemon(d);
    /* Refuse new connections at once rather than leave them queued until
     * the end; the socket itself is closed only after MHD_stop_daemon, as
     * its listening thread may still be using it. */
    if (qfd >= 0)
        shutdown(qfd, SHUT_RDWR);
    /* A second SIGTERM or SIGINT (Ctrl-C twice when run alone) stops at
     * once, as the gateway's SIGKILL does after its stop timeout. */
    const struct timespec tick = { .tv_nsec = 10 * 1000 * 1000 };
    while (atomic_load(&active_requests) > 0 || atomic_load(&active_handlers) > 0) {
        if (stop_signal(&set, &tick, opts->log_path) != 0) {
            mg_log(MG_LOG_WARN, "stopping now: %ld requests and %ld handlers not finished",
                   (long)atomic_load(&active_requests), (long)atomic_load(&active_handlers));
            remove_own_socket(opts);
            _exit(1);
        }
    }
    MHD_stop_daemon(d);
    if (qfd >= 0)
        close(qfd);
    mg_router_free(srv.router);
    remove_own_socket(opts);
    return 0;
}
