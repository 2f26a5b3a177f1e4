/*
 * echo: shows a request exactly as the module received it; the fixture
 * for the gateway's forwarding fidelity.
 *   ANY  /echo/(anything)   -> JSON {method, path, query, headers, body_len, body_sha256};
 *                              the body is read as it arrives, so it may be of any size
 *   POST /echo/raw          -> the body back, same Content-Type
 *   GET  /echo/env/{name}   -> the environment variable, 404 if unset
 *   GET  /echo/respond?status=S&header=Name:Value...
 *                           -> empty response with that status and headers
 *   GET  /echo/ws           -> WebSocket: every message sent back
 */
#include <modgate/module.h>

#include <ctype.h>
#include <jansson.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A JSON string of s; bytes that are not UTF-8 (a raw target may carry
 * any) come out as '?', JSON has no other way to hold them. */
static json_t *text(const char *s)
{
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    char *copy = strdup(s);
    if (copy == NULL)
        return NULL;
    for (unsigned char *p = (unsigned char *)copy; *p; p++)
        if (*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static int describe(mg_req *req, mg_res *res)
{
    json_t *query = json_object(), *headers = json_object();
    size_t n = mg_req_query_count(req);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        mg_req_query_at(req, i, &k, &v);
        if (json_object_get(query, k) == NULL)
            json_object_set_new(query, k, text(v));
    }
    n = mg_req_header_count(req);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        mg_req_header_at(req, i, &k, &v);
        char *lower = strdup(k);
        if (lower == NULL)
            continue;
        for (char *p = lower; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        json_t *old = json_object_get(headers, lower);
        if (old != NULL) {
            /* Repeated headers are one list, as HTTP defines them. */
            char *joined = NULL;
            if (asprintf(&joined, "%s, %s", json_string_value(old), v) >= 0) {
                json_object_set_new(headers, lower, text(joined));
                free(joined);
            }
        } else {
            json_object_set_new(headers, lower, text(v));
        }
        free(lower);
    }
    /* The body is hashed as it arrives: any size passes through. */
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    size_t blen = 0;
    char buf[64 * 1024];
    long got;
    while ((got = mg_req_read(req, buf, sizeof(buf))) > 0) {
        sha256_update(&ctx, (size_t)got, (const uint8_t *)buf);
        blen += (size_t)got;
    }
    if (got < 0) {
        json_decref(query);
        json_decref(headers);
        return mg_res_error(res, 400, "the request body broke off");
    }
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_digest(&ctx, sizeof(digest), digest);
    char hex[2 * SHA256_DIGEST_SIZE + 1];
    for (size_t i = 0; i < sizeof(digest); i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    json_t *o = json_pack("{s:o, s:o, s:o, s:o, s:I, s:s}", "method", text(mg_req_method(req)),
                          "path", text(mg_req_path(req)), "query", query, "headers", headers,
                          "body_len", (json_int_t)blen, "body_sha256", hex);
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(o);
    if (text == NULL)
        return mg_res_error(res, 500, "out of memory");
    int rc = mg_res_printf(res, 200, "application/json", "%s\n", text);
    free(text);
    return rc;
}

static int raw(mg_req *req, mg_res *res)
{
    size_t len;
    const void *body = mg_req_body(req, &len);
    const char *ctype = mg_req_header(req, "Content-Type");
    if (ctype != NULL && mg_res_header(res, "Content-Type", ctype) != 0)
        return -1;
    return mg_res_body(res, body, len);
}

static int env(mg_req *req, mg_res *res)
{
    const char *name = mg_req_param(req, "name");
    const char *value = getenv(name);
    if (value == NULL)
        return mg_res_error(res, 404, "%s is not set", name);
    return mg_res_printf(res, 200, "text/plain; charset=utf-8", "%s", value);
}

static int respond(mg_req *req, mg_res *res)
{
    const char *s = mg_req_query(req, "status");
    char *end = NULL;
    long status = s ? strtol(s, &end, 10) : 200;
    if (s != NULL && (*s == '\0' || *end != '\0' || status < 200 || status > 599))
        return mg_res_error(res, 400, "status must be from 200 to 599");
    mg_res_status(res, (int)status);
    size_t n = mg_req_query_count(req);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        mg_req_query_at(req, i, &k, &v);
        if (strcmp(k, "header") != 0)
            continue;
        const char *colon = strchr(v, ':');
        if (colon == NULL || colon == v)
            return mg_res_error(res, 400, "header must be Name:Value");
        char *name = strndup(v, (size_t)(colon - v));
        const char *value = colon + 1;
        while (*value == ' ')
            value++;
        int rc = name ? mg_res_header(res, name, value) : -1;
        free(name);
        if (rc != 0)
            return mg_res_error(res, 400, "bad header %s", v);
    }
    return 0;
}

static int ws_echo(mg_req *req, mg_ws *ws)
{
    (void)req;
    const void *data;
    int type;
    long n;
    while ((n = mg_ws_recv(ws, &data, &type)) >= 0)
        if (mg_ws_send(ws, data, (size_t)n, type) != 0)
            break;
    mg_log(MG_LOG_INFO, "ws: session closed");
    return 0;
}

MG_MODULE(echo,
          MG_WS("/echo/ws", ws_echo),
          MG_POST("/echo/raw", raw),
          MG_GET("/echo/env/{name}", env),
          MG_GET("/echo/respond", respond),
          MG_UPLOAD("*", "/echo/*", describe));
