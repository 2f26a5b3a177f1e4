/* mg_res: building a unary response, and turning it into an MHD one. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime.h"

void mg__res_init(struct mg_res *res)
{
    memset(res, 0, sizeof(*res));
    res->status = 200;
    mg__buf_init(&res->body, SIZE_MAX - 1);
}

void mg__res_clear(struct mg_res *res)
{
    for (size_t i = 0; i < res->nheaders; i++) {
        free((char *)res->headers[i].name);
        free((char *)res->headers[i].value);
    }
    free(res->headers);
    mg__buf_free(&res->body);
    free(res->err_msg);
    memset(res, 0, sizeof(*res));
}

int mg__res_add_header(struct mg_res *res, const char *name, const char *value)
{
    /* RFC 9110 §5.1: a field name is a token. libmicrohttpd would take some
     * other names (with '(' or '@'), refuse others (with a space or a tab)
     * and so fail the whole answer: one rule, checked when it is added. */
    if (name == NULL || value == NULL || !mg__http_token(name, strlen(name)) ||
        strpbrk(value, "\r\n") != NULL)
        return -1;
    if (res->nheaders == res->capheaders) {
        size_t cap = res->capheaders ? res->capheaders * 2 : 8;
        struct mg_kv *h = realloc(res->headers, cap * sizeof(*h));
        if (h == NULL)
            return -1;
        res->headers = h;
        res->capheaders = cap;
    }
    char *n = strdup(name), *v = strdup(value);
    if (n == NULL || v == NULL) {
        free(n);
        free(v);
        return -1;
    }
    res->headers[res->nheaders].name = n;
    res->headers[res->nheaders].value = v;
    res->nheaders++;
    return 0;
}

int mg__res_set_error(struct mg_res *res, int status, const char *fmt, va_list ap)
{
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    free(res->err_msg);
    res->err_msg = msg;
    res->err_status = (status >= 400 && status <= 599) ? status : 500;
    return -1;
}

/* Removes every header `name` (any case) but the last header of all,
 * keeping the others in order. */
static void remove_older(struct mg_res *res, const char *name)
{
    size_t kept = 0, n = res->nheaders;
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(res->headers[i].name, name) == 0 && i + 1 < n) {
            free((char *)res->headers[i].name);
            free((char *)res->headers[i].value);
        } else {
            res->headers[kept++] = res->headers[i];
        }
    }
    res->nheaders = kept;
}

void mg_res_status(mg_res *res, int status)
{
    res->status = status;
}

int mg_res_header(mg_res *res, const char *name, const char *value)
{
    /* Content-Type has one value (RFC 9110 §8.3): setting it again
     * replaces it rather than sending two; one that is refused leaves the
     * one before. */
    int rc = mg__res_add_header(res, name, value);
    if (rc == 0 && strcasecmp(name, "Content-Type") == 0)
        remove_older(res, "Content-Type");
    return rc;
}

int mg_res_body(mg_res *res, const void *data, size_t len)
{
    res->body.len = 0;
    return mg__buf_append(&res->body, data, len);
}

int mg_res_printf(mg_res *res, int status, const char *content_type, const char *fmt, ...)
{
    res->status = status;
    /* Sets it: a Content-Type added before, by this call or another, goes. */
    if (content_type != NULL && mg_res_header(res, "Content-Type", content_type) != 0)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    int rc = mg_res_body(res, s, (size_t)n);
    free(s);
    return rc;
}

int mg_res_error(mg_res *res, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mg__res_set_error(res, status, fmt, ap);
    va_end(ap);
    return -1;
}

struct MHD_Response *mg__error_response(const char *msg, const mg_req *req)
{
    struct mg_buf b;
    mg__buf_init(&b, SIZE_MAX - 1);
    const char *module = mg__current_module_name();
    const char *rid = req ? mg_req_id(req) : "";
    int rc = mg__buf_append(&b, "{\"error\": ", 10);
    rc |= mg__buf_json_string(&b, msg, strlen(msg));
    rc |= mg__buf_append(&b, ", \"module\": ", 12);
    rc |= mg__buf_json_string(&b, module, strlen(module));
    if (rid[0] != '\0') {
        rc |= mg__buf_append(&b, ", \"request_id\": ", 16);
        rc |= mg__buf_json_string(&b, rid, strlen(rid));
    }
    rc |= mg__buf_append(&b, "}\n", 2);
    if (rc != 0) {
        mg__buf_free(&b);
        return NULL;
    }
    size_t len;
    char *body = mg__buf_steal(&b, &len);
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    if (r == NULL) {
        free(body);
        return NULL;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    return r;
}

int mg__add_headers(struct MHD_Response *r, const struct mg_res *res)
{
    for (size_t i = 0; i < res->nheaders; i++) {
        const char *name = res->headers[i].name, *value = res->headers[i].value;
        /* MHD frames the body itself and refuses these two. */
        if (strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Transfer-Encoding") == 0)
            continue;
        if (mg__add_header_value(r, name, value))
            continue;
        /* Connection is MHD's own: it drops keep-alive tokens (its call)
         * and refuses a value with no other token. Nothing is lost. */
        if (strcasecmp(name, "Connection") == 0)
            continue;
        return -1;
    }
    return 0;
}

bool mg__bad_status(int status, char *msg, size_t len)
{
    if (status >= 200 && status <= 599)
        return false;
    snprintf(msg, len, "handler set status %d, which is not a final HTTP status", status);
    return true;
}

/* libmicrohttpd 0.9.75 builds an answer's head in the connection's memory
 * pool, beside the request's head: one that does not fit closes the
 * connection without a word (the gateway could then only say that the
 * module broke it). So it is measured first, as closely as 0.9.75 fills
 * the pool: what the request's head takes (mg__mhd_head_cost), then the
 * answer's status line and header lines, and libmicrohttpd's own (Date,
 * Content-Length, Connection: 128 bytes at most). Not closer than that:
 * the pool is the gateway's size, and a request the gateway took, with
 * the few headers it adds, must still get its answer. */
static bool head_fits(const struct mg_res *res, const mg_req *req, size_t *bytes)
{
    size_t need = 32 + 128, have = 0;
    if (req != NULL) {
        size_t text = strlen(req->method) + req->pathlen + 1 + strlen(req->query) + 16;
        size_t cookie_len = 0;
        for (size_t i = 0; i < req->nheaders; i++) {
            const char *name = req->headers[i].name, *value = req->headers[i].value;
            text += strlen(name) + strlen(value) + 4;
            if (cookie_len == 0 && strcasecmp(name, "Cookie") == 0)
                cookie_len = strlen(value);
        }
        need += mg__mhd_head_cost(req->conn, text, req->nheaders, cookie_len);
    }
    for (size_t i = 0; i < res->nheaders; i++)
        have += strlen(res->headers[i].name) + strlen(res->headers[i].value) + 4;
    *bytes = have;
    return need + have <= mg__connection_pool_size();
}

struct MHD_Response *mg__res_to_mhd(struct mg_res *res, int rc, const mg_req *req)
{
    size_t head_bytes;
    if (res->err_status == 0 && rc == 0 && !head_fits(res, req, &head_bytes)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "handler answered with %zu bytes of headers (%zu lines): more "
                 "than fit beside the request's (limits.max_header_bytes sets the room)",
                 head_bytes, res->nheaders);
        mg_log(MG_LOG_ERROR, "%s", msg);
        res->status = 500;
        return mg__error_response(msg, req);
    }
    char bad[96];
    bool bad_status =
        res->err_status == 0 && rc == 0 && mg__bad_status(res->status, bad, sizeof(bad));
    if (res->err_status != 0 || rc != 0 || bad_status) {
        int status = res->err_status;
        if (status == 0)
            status = (rc >= 400 && rc <= 599) ? rc : 500;
        res->status = status;
        const char *msg = res->err_msg ? res->err_msg : mg__reason(status);
        char code[32];
        if (res->err_msg == NULL && strcmp(msg, "Unknown") == 0) {
            /* A status without a standard reason (418, 499): its number says more. */
            snprintf(code, sizeof(code), "error %d", status);
            msg = code;
        }
        if (res->err_msg == NULL && status == 500)
            msg = bad_status ? bad : "handler failed";
        return mg__error_response(msg, req);
    }
    size_t len;
    char *body = mg__buf_steal(&res->body, &len);
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(
        len, body ? body : (char *)"", body ? free : NULL);
    if (r == NULL) {
        free(body);
        return NULL;
    }
    if (mg__add_headers(r, res) != 0) {
        MHD_destroy_response(r);
        return NULL;
    }
    return r;
}
