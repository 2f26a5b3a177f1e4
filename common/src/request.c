/* mg_req: the request a handler sees, built from MHD's view of it. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime.h"

struct mg_req *mg__req_new(const mg_module *module, const char *target, size_t max_body)
{
    struct mg_req *req = calloc(1, sizeof(*req));
    if (req == NULL)
        return NULL;
    req->module = module;
    /* One copy of the target, split in place: "path\0query". */
    req->path = strdup(target);
    if (req->path == NULL) {
        free(req);
        return NULL;
    }
    char *q = strchr(req->path, '?');
    if (q != NULL)
        *q = '\0';
    req->pathlen = q ? (size_t)(q - req->path) : strlen(req->path);
    req->query = q ? q + 1 : "";
    mg__buf_init(&req->body, max_body);
    return req;
}

void mg__req_free(struct mg_req *req)
{
    if (req == NULL)
        return;
    for (size_t i = 0; i < req->nargs; i++) {
        free((char *)req->args[i].name);
        free((char *)req->args[i].value);
    }
    free(req->args);
    for (size_t i = 0; i < req->ncaps; i++)
        free((char *)req->caps[i].value);
    for (size_t i = 0; i < req->nheaders; i++) {
        free((char *)req->headers[i].name);
        free((char *)req->headers[i].value);
    }
    free(req->headers);
    free(req->method);
    free(req->allow);
    mg__buf_free(&req->body);
    free(req->path);
    free(req);
}

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *k,
                                    const char *v)
{
    (void)kind, (void)k, (void)v;
    (*(size_t *)cls)++;
    return MHD_YES;
}

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *k,
                                      const char *v)
{
    (void)kind;
    struct mg_req *req = cls;
    /* Copies: a stream handler may outlive MHD's connection. */
    char *name = strdup(k), *value = strdup(v ? v : "");
    if (name == NULL || value == NULL) {
        free(name);
        free(value);
        return MHD_NO;
    }
    req->headers[req->nheaders].name = name;
    req->headers[req->nheaders].value = value;
    req->nheaders++;
    return MHD_YES;
}

static int parse_query(struct mg_req *req)
{
    const char *q = req->query;
    if (*q == '\0')
        return 0;
    size_t n = 1;
    for (const char *p = q; *p; p++)
        n += *p == '&';
    req->args = calloc(n, sizeof(*req->args));
    if (req->args == NULL)
        return -1;
    while (*q != '\0') {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > 0) {
            const char *eq = memchr(q, '=', len);
            size_t klen = eq ? (size_t)(eq - q) : len;
            char *k = mg__percent_decode(q, klen, true);
            char *v = eq ? mg__percent_decode(eq + 1, len - klen - 1, true) : strdup("");
            if (k == NULL || v == NULL) {
                free(k);
                free(v);
                return -1;
            }
            req->args[req->nargs].name = k;
            req->args[req->nargs].value = v;
            req->nargs++;
        }
        if (amp == NULL)
            break;
        q = amp + 1;
    }
    return 0;
}

int mg__req_prepare(struct mg_req *req, const struct mg_route_match *m)
{
    size_t n = 0;
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, count_header, &n);
    if (n > 0) {
        req->headers = calloc(n, sizeof(*req->headers));
        if (req->headers == NULL)
            return -1;
        MHD_get_connection_values(req->conn, MHD_HEADER_KIND, collect_header, req);
        if (req->nheaders < n)
            return -1;
    }
    if (parse_query(req) != 0)
        return -1;
    for (size_t i = 0; m != NULL && i < m->ncaptures; i++) {
        char *v = mg__percent_decode(req->path + m->captures[i].off, m->captures[i].len,
                                     false);
        if (v == NULL)
            return -1;
        req->caps[i].name = m->captures[i].name;
        req->caps[i].value = v;
        req->ncaps++;
    }
    return 0;
}

const char *mg_req_method(const mg_req *req)
{
    return req->method;
}

const char *mg_req_path(const mg_req *req)
{
    return req->path;
}

const char *mg_req_query_string(const mg_req *req)
{
    return req->query;
}

const char *mg_req_param(const mg_req *req, const char *name)
{
    for (size_t i = 0; i < req->ncaps; i++)
        if (strcmp(req->caps[i].name, name) == 0)
            return req->caps[i].value;
    return NULL;
}

const char *mg_req_query(const mg_req *req, const char *name)
{
    for (size_t i = 0; i < req->nargs; i++)
        if (strcmp(req->args[i].name, name) == 0)
            return req->args[i].value;
    return NULL;
}

size_t mg_req_query_count(const mg_req *req)
{
    return req->nargs;
}

int mg_req_query_at(const mg_req *req, size_t i, const char **name, const char **value)
{
    if (i >= req->nargs)
        return -1;
    *name = req->args[i].name;
    *value = req->args[i].value;
    return 0;
}

const char *mg_req_header(const mg_req *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

size_t mg_req_header_count(const mg_req *req)
{
    return req->nheaders;
}

int mg_req_header_at(const mg_req *req, size_t i, const char **name, const char **value)
{
    if (i >= req->nheaders)
        return -1;
    *name = req->headers[i].name;
    *value = req->headers[i].value;
    return 0;
}

const void *mg_req_body(const mg_req *req, size_t *len)
{
    *len = req->body.len;
    return req->body.data ? req->body.data : "";
}

long mg_req_read(mg_req *req, void *buf, size_t len)
{
    if (req->upload != NULL)
        return mg__upload_read(req->upload, buf, len);
    size_t left = req->body.len - req->body_pos;
    size_t n = len < left ? len : left;
    if (n > 0)
        memcpy(buf, req->body.data + req->body_pos, n);
    req->body_pos += n;
    return (long)n;
}

const char *mg_req_id(const mg_req *req)
{
    const char *id = mg_req_header(req, "X-Request-Id");
    return id ? id : "";
}
