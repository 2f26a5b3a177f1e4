/*
 * Admin endpoints. The admin server is a separate libmicrohttpd daemon
 * with one internal thread: it is low traffic, and keeping it apart means
 * a flood on the public port never locks operators out.
 */
#include "admin.h"

#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accesslog.h"
#include "errors.h"
#include "gw.h"
#include "head_check.h"
#include "headers.h"
#include "logfile.h"
#include "logtail.h"
#include "metrics.h"
#include "registry.h"

struct gw_admin {
    struct gateway *gw;
    struct MHD_Daemon *mhd;
};

/* Request ids of admin errors, drawn on the admin daemon's one thread
 * (one admin listener per process). */
static uint64_t id_rng[2];

static bool path_is(const char *target, size_t pathlen, const char *path)
{
    return strlen(path) == pathlen && memcmp(target, path, pathlen) == 0;
}

/* readyz: ok when every enabled module is ready, and never once shutdown
 * has begun, so that a load balancer stops sending before the listener
 * closes. *body: caller frees. */
static int readyz(struct gateway *gw, const char **body)
{
    if (atomic_load(&gw->stopping)) {
        *body = strdup("stopping: the gateway is draining\n");
        return *body ? 503 : 500;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return 500;
    bool all = true;
    for (size_t i = 0; i < gw->nmodules; i++) {
        struct gw_module *m = &gw->modules[i];
        pthread_mutex_lock(&m->mu);
        enum gw_state st = m->state;
        bool serving = m->serving != NULL;
        pthread_mutex_unlock(&m->mu);
        if (!serving || st != GW_READY) {
            fprintf(f, "%s%s (%s)", all ? "not ready: " : ", ", m->name, gw_state_name(st));
            all = false;
        }
    }
    if (all)
        fputs("ok\n", f);
    else
        fputs("\n", f);
    fclose(f);
    *body = text;
    return all ? 200 : 503;
}

static bool is_read(const char *method)
{
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
}

int gw_admin_public(struct gateway *gw, const char *method, const char *target, size_t pathlen,
                    const char **body, const char **ctype)
{
    *body = NULL; /* also on 500: out of memory, and on 405 */
    *ctype = NULL;
    if (pathlen < 3 || memcmp(target, "/-/", 3) != 0)
        return 0;
    if (!path_is(target, pathlen, "/-/healthz") && !path_is(target, pathlen, "/-/readyz"))
        return 0;
    if (!is_read(method))
        return 405;
    *ctype = "text/plain; charset=utf-8";
    if (path_is(target, pathlen, "/-/healthz")) {
        *body = strdup("ok\n");
        return *body ? 200 : 500;
    }
    return readyz(gw, body);
}

static json_t *module_json(struct gw_module *m)
{
    pthread_mutex_lock(&m->mu);
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(m->name));
    json_object_set_new(o, "state", json_string(gw_state_name(m->state)));
    json_object_set_new(o, "pid", m->pid > 0 ? json_integer(m->pid) : json_null());
    json_object_set_new(o, "incarnation", json_integer(m->incarnations));
    json_object_set_new(o, "restarts", json_integer(m->restarts));
    if (m->started_at > 0) {
        char ts[32];
        struct tm tm;
        gmtime_r(&m->started_at, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_set_new(o, "started_at", json_string(ts));
    } else {
        json_object_set_new(o, "started_at", json_null());
    }
    json_object_set_new(o, "last_exit", m->last_exit[0] ? json_string(m->last_exit) : json_null());
    json_object_set_new(o, "last_restart_error",
                        m->last_restart_error[0] ? json_string(m->last_restart_error) : json_null());
    json_object_set_new(o, "last_probe_rtt_ms",
                        m->last_probe_rtt_us >= 0 ? json_real((double)m->last_probe_rtt_us / 1000.0)
                                                  : json_null());
    pthread_mutex_unlock(&m->mu);
    json_object_set_new(o, "active_requests", json_integer(atomic_load(&m->active)));
    json_object_set_new(o, "log_file", json_string(m->log_path));
    json_t *routes = json_array();
    for (size_t i = 0; i < m->desc->nroutes; i++) {
        const mg_route *r = &m->desc->routes[i];
        if (r->kind == MG_ROUTE_HEALTH || r->kind == MG_ROUTE_INIT)
            continue;
        json_array_append_new(routes, json_sprintf("%s %s", r->method[0] == '*' ? "ANY"
                                                                              : r->method,
                                                   r->pattern));
    }
    json_object_set_new(o, "routes", routes);
    return o;
}

static struct gw_module *find_module(struct gateway *gw, const char *name, size_t len)
{
    for (size_t i = 0; i < gw->nmodules; i++)
        if (strlen(gw->modules[i].name) == len && memcmp(gw->modules[i].name, name, len) == 0)
            return &gw->modules[i];
    return NULL;
}

static enum MHD_Result send_text(struct MHD_Connection *c, int status, const char *ctype,
                                 char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

/* Reals are printed with 12 significant digits: enough for every
 * millisecond value with microseconds (probe RTTs are at most a day), and
 * few enough that 1.751 does not come out as 1.7509999999999999. */
static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(12));
    json_decref(j);
    if (text == NULL)
        return MHD_NO;
    size_t len = strlen(text);
    char *body = realloc(text, len + 2);
    if (body == NULL) {
        free(text);
        return MHD_NO;
    }
    body[len] = '\n';
    body[len + 1] = '\0';
    return send_text(c, status, "application/json", body, len + 1);
}

/* An admin error: the JSON body, and one more header when `hname` is set
 * (WWW-Authenticate for a 401, Allow for a 405). */
static enum MHD_Result send_error_with(struct MHD_Connection *c, int status, const char *cause,
                                       const char *msg, const char *module, const char *hname,
                                       const char *hvalue)
{
    uint64_t len;
    char id[GW_REQUEST_ID_SIZE];
    gw_request_id_pick(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id"), id_rng,
                       id);
    struct MHD_Response *r = gw_error_response(msg, module, 0, cause, id, &len);
    if (r == NULL)
        return MHD_NO;
    if (hname != NULL && MHD_add_response_header(r, hname, hvalue) != MHD_YES) {
        MHD_destroy_response(r);
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *cause,
                                  const char *msg, const char *module)
{
    return send_error_with(c, status, cause, msg, module, NULL, NULL);
}

/* The largest request body the admin listener reads (and drops). */
#define ADMIN_BODY_MAX (1024 * 1024ULL)

/* The most lines /-/modules/NAME/log returns; a larger count is read as
 * this one (it means "all", within reason), not refused. */
#define LOG_LINES_MAX 100000UL

/* Reads the query argument `name` as a count: decimal digits only, no
 * sign, blanks or base prefix, clamped to `max`. Returns 1 and *out if it
 * is there, 0 if it is absent, -1 if it is there but not such a number
 * ("lines=", "lines", "lines=-1", "lines=3x"). */
static int query_count(struct MHD_Connection *c, const char *name, unsigned long max,
                       unsigned long *out)
{
    const char *v = NULL;
    size_t len = 0;
    if (MHD_lookup_connection_value_n(c, MHD_GET_ARGUMENT_KIND, name, strlen(name), &v, &len) !=
        MHD_YES)
        return 0;
    if (v == NULL || len == 0)
        return -1;
    unsigned long n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        if (n <= max) /* stops growing past max: no overflow */
            n = n * 10 + (unsigned long)(v[i] - '0');
    }
    *out = n > max ? max : n;
    return 1;
}

/* 405 for a path that exists, with the methods it takes in Allow (RFC 9110
 * §15.5.6 makes the header a must). */
static enum MHD_Result send_405(struct MHD_Connection *c, const char *method, const char *url,
                                const char *allow, const char *module)
{
    char *msg = NULL;
    if (asprintf(&msg, "%s is not allowed on %s (allowed: %s)", method, url, allow) < 0)
        return MHD_NO;
    enum MHD_Result ok =
        send_error_with(c, 405, "method_not_allowed", msg, module, "Allow", allow);
    free(msg);
    return ok;
}

enum auth { AUTH_OK, AUTH_MISSING, AUTH_WRONG };

static enum auth authorized(struct gateway *gw, struct MHD_Connection *c)
{
    const char *token = gw->cfg.admin_token;
    if (token == NULL)
        return AUTH_OK;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return AUTH_MISSING;
    const char *given = h + 7;
    size_t a = strlen(given), b = strlen(token);
    /* Compare in constant time over the token's length. */
    unsigned char diff = a != b;
    for (size_t i = 0; i < b; i++)
        diff |= (unsigned char)(token[i] ^ (i < a ? given[i] : 0));
    return diff == 0 ? AUTH_OK : AUTH_WRONG;
}

static enum MHD_Result handle(struct gw_admin *a, struct MHD_Connection *c, const char *url,
                              const char *method)
{
    struct gateway *gw = a->gw;
    size_t ulen = strlen(url);
    const char *body, *ctype;
    int status = gw_admin_public(gw, method, url, ulen, &body, &ctype);
    if (status == 405)
        return send_405(c, method, url, GW_ADMIN_PUBLIC_ALLOW, NULL);
    if (status != 0 && body == NULL)
        return send_error(c, 500, "internal", "out of memory", NULL);
    if (status != 0)
        return send_text(c, status, ctype, (char *)body, strlen(body));
    enum auth auth = authorized(gw, c);
    if (auth == AUTH_MISSING)
        return send_error_with(c, 401, "unauthorized", "admin token required", NULL,
                               "WWW-Authenticate", "Bearer realm=\"modgate admin\"");
    if (auth == AUTH_WRONG) /* RFC 6750 §3.1 */
        return send_error_with(c, 401, "unauthorized", "admin token rejected", NULL,
                               "WWW-Authenticate",
                               "Bearer realm=\"modgate admin\", error=\"invalid_token\"");

    bool get = is_read(method);
    if (strcmp(url, "/-/modules") == 0) {
        if (!get)
            return send_405(c, method, url, "GET, HEAD", NULL);
        json_t *arr = json_array();
        for (size_t i = 0; i < gw->nmodules; i++)
            json_array_append_new(arr, module_json(&gw->modules[i]));
        return send_json(c, 200, arr);
    }
    if (strcmp(url, "/-/metrics") == 0) {
        if (!get)
            return send_405(c, method, url, "GET, HEAD", NULL);
        struct mg_buf b;
        mg__buf_init(&b, 64u << 20);
        if (gw_metrics_render(gw, &b) != 0) {
            mg__buf_free(&b);
            return MHD_NO;
        }
        size_t len;
        char *text = mg__buf_steal(&b, &len);
        return send_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", text ? text : strdup(""),
                         len);
    }
    if (strncmp(url, "/-/modules/", 11) == 0) {
        const char *name = url + 11;
        const char *slash = strchr(name, '/');
        size_t nlen = slash ? (size_t)(slash - name) : strlen(name);
        struct gw_module *m = find_module(gw, name, nlen);
        if (m == NULL) {
            /* Built in but not enabled: say so, it is not a typo. */
            char known[128], msg[400];
            snprintf(known, sizeof(known), "%.*s", (int)(nlen < 127 ? nlen : 127), name);
            if (nlen < 127 && strlen(known) == nlen && mg__module_find(known) != NULL) {
                snprintf(msg, sizeof(msg), "module %s is not enabled (modules.%s.enabled in the "
                         "config)", known, known);
                return send_error(c, 404, "no_module", msg, NULL);
            }
            return send_error(c, 404, "no_module", "no such module", NULL);
        }
        if (slash == NULL) {
            if (!get)
                return send_405(c, method, url, "GET, HEAD", m->name);
            return send_json(c, 200, module_json(m));
        }
        if (strcmp(slash, "/restart") == 0) {
            if (strcmp(method, "POST") != 0)
                return send_405(c, method, url, "POST", m->name);
            if (atomic_load(&gw->stopping))
                return send_error(c, 503, "stopping", "the gateway is stopping", m->name);
            gw_request_restart(gw, m);
            json_t *j = json_pack("{s:s, s:s}", "module", m->name, "status", "restarting");
            return send_json(c, 202, j);
        }
        if (strcmp(slash, "/log") == 0) {
            if (!get)
                return send_405(c, method, url, "GET, HEAD", m->name);
            unsigned long n = gw->cfg.health.log_tail_lines;
            if (query_count(c, "lines", LOG_LINES_MAX, &n) < 0) {
                char msg[128];
                snprintf(msg, sizeof(msg), "lines: expected a whole number of lines, 0 or more "
                         "(counts over %lu read as %lu)", LOG_LINES_MAX, LOG_LINES_MAX);
                return send_error(c, 400, "bad_request", msg, m->name);
            }
            char *text;
            size_t len;
            int rc = gw_log_tail(m->log_path, (unsigned)n, 16u << 20, &text, &len);
            if (rc != 0)
                return send_error(c, 500, "log_unreadable", "cannot read the module's log",
                                  m->name);
            return send_text(c, 200, "text/plain; charset=utf-8", text, len);
        }
    }
    return send_error(c, 404, "no_route", "no such admin endpoint", NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)upload_data;
    /* An absolute-form target (RFC 9112 §3.2.2: a server must take it,
     * as the public listener does) names its path after the authority,
     * which stands in for Host. */
    size_t skip = strncasecmp(url, "http://", 7) == 0 ? 7 : strncasecmp(url, "https://", 8) == 0 ? 8 : 0;
    if (*con_cls == NULL) {
        *con_cls = (void *)1;
        /* The same framing rules as the public listener: a request whose
         * body could be framed two ways is refused at once (an answer
         * queued now closes the connection), so that no part of it is
         * read as a request of its own. A well-framed body (a client
         * that always sends "{}") is read and dropped: no admin request
         * uses one, and one announced over ADMIN_BODY_MAX is refused. */
        struct gw_head_scan h = { 0 };
        gw_head_scan(c, &h);
        int status;
        const char *cause;
        const char *why = gw_head_problem(&h, version, skip > 0, &status, &cause);
        if (why == NULL && h.lengths > 0 && strtoull(h.length, NULL, 10) > ADMIN_BODY_MAX) {
            why = "an admin request body is 1 MiB at most";
            status = 413;
            cause = "too_large";
        }
        if (why != NULL)
            return send_error(c, status, cause, why, NULL);
        return MHD_YES; /* answer on a later call: keeps keep-alive */
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (skip > 0) {
        const char *path = strchr(url + skip, '/');
        url = path != NULL ? path : "/";
    }
    return handle(cls, c, url, method);
}

struct gw_admin *gw_admin_start(struct gateway *gw, char *err, size_t errlen)
{
    struct gw_admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->gw = gw;
    gw_request_id_seed(id_rng, a);
    a->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
                                  MHD_USE_ERROR_LOG,
                              0, NULL, NULL, on_request, a,
                              MHD_OPTION_LISTEN_SOCKET, gw->admin_fd,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                              MHD_OPTION_END);
    if (a->mhd == NULL) {
        snprintf(err, errlen, "cannot start the admin server");
        free(a);
        return NULL;
    }
    return a;
}

void gw_admin_stop(struct gw_admin *a)
{
    if (a == NULL)
        return;
    MHD_stop_daemon(a->mhd);
    free(a);
}
