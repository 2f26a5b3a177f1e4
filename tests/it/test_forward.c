/* Forwarding fidelity (SPEC §4), checked through the echo and hello modules. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nettle/sha2.h>

#include "harness.h"

static struct gwp g;

static void start(void)
{
    const char *cfg = "{\"modules\": {\"chaos\": {\"enabled\": true},"
                      " \"echo\": {\"env\": {\"GREETING\": \"hi there\"}}}}";
    cr_assert_eq(gwp_start(&g, cfg, NULL), 0, "gateway did not start: %s", g.out);
}

static void stop(void)
{
    gwp_stop(&g);
    gwp_cleanup(&g);
}

TestSuite(forward, .init = start, .fini = stop, .timeout = 60);

static json_t *echo(const struct http_req *q, struct http_resp *r)
{
    cr_assert_eq(http_do(q, r), 0, "request failed: %s", curl_easy_strerror(r->rc));
    cr_assert_eq(r->status, 200, "status %ld: %s", r->status, r->body);
    json_error_t je;
    json_t *j = json_loads(r->body, 0, &je);
    cr_assert_not_null(j, "not JSON: %s", r->body);
    return j;
}

static const char *jstr(json_t *o, const char *path1, const char *path2)
{
    json_t *v = json_object_get(o, path1);
    if (path2 != NULL)
        v = json_object_get(v, path2);
    return json_string_value(v);
}

Test(forward, hello_world)
{
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/hello/world"), &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "hello world\n");
    cr_expect_str_eq(http_header(&r, "Content-Type"), "text/plain; charset=utf-8");
    cr_expect_not_null(http_header(&r, "X-Request-Id"));
    cr_expect_null(http_header(&r, "X-Modgate-Error"), "a module response is not an error");
    http_free(&r);
}

Test(forward, literal_segment_beats_capture)
{
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/hello/ticks?n=3"), &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "tick 0\ntick 1\ntick 2\n");
    http_free(&r);
}

Test(forward, method_path_query_headers_reach_the_module)
{
    const char *hdrs[] = { "X-Custom: some value", "X-Empty;", "Accept: text/x-test", NULL };
    struct http_req q = { .url = gwp_url(&g, "/echo/a/b%20c?x=1&y=two%20words&z"),
                          .headers = hdrs };
    struct http_resp r;
    json_t *j = echo(&q, &r);
    cr_expect_str_eq(jstr(j, "method", NULL), "GET");
    cr_expect_str_eq(jstr(j, "path", NULL), "/echo/a/b%20c");
    cr_expect_str_eq(jstr(j, "query", "x"), "1");
    cr_expect_str_eq(jstr(j, "query", "y"), "two words");
    cr_expect_str_eq(jstr(j, "query", "z"), "");
    cr_expect_str_eq(jstr(j, "headers", "x-custom"), "some value");
    cr_expect_str_eq(jstr(j, "headers", "x-empty"), "");
    cr_expect_str_eq(jstr(j, "headers", "accept"), "text/x-test");
    cr_expect_str_eq(jstr(j, "headers", "host"), strstr(gwp_url(&g, ""), "127.0.0.1"));
    cr_expect_null(json_object_get(json_object_get(j, "headers"), "content-type"),
                   "no header the client did not send");
    json_decref(j);
    http_free(&r);
}

Test(forward, hop_by_hop_headers_are_dropped)
{
    const char *hdrs[] = { "Connection: keep-alive, X-Hop", "X-Hop: secret", "Keep-Alive: 5",
                           "TE: trailers", "Proxy-Authorization: Basic eA==", "Upgrade: h2c",
                           "X-Kept: yes", NULL };
    struct http_req q = { .url = gwp_url(&g, "/echo/hop"), .headers = hdrs };
    struct http_resp r;
    json_t *j = echo(&q, &r);
    json_t *h = json_object_get(j, "headers");
    cr_expect_null(json_object_get(h, "x-hop"), "named in Connection");
    cr_expect_null(json_object_get(h, "keep-alive"));
    cr_expect_null(json_object_get(h, "te"));
    cr_expect_null(json_object_get(h, "proxy-authorization"));
    cr_expect_null(json_object_get(h, "upgrade"));
    cr_expect_str_eq(jstr(j, "headers", "x-kept"), "yes");
    const char *conn = jstr(j, "headers", "connection");
    cr_expect(conn == NULL || strstr(conn, "X-Hop") == NULL);
    json_decref(j);
    http_free(&r);
}

Test(forward, forwarding_headers_are_added)
{
    struct http_req q = { .url = gwp_url(&g, "/echo/fwd") };
    struct http_resp r;
    json_t *j = echo(&q, &r);
    cr_expect_str_eq(jstr(j, "headers", "x-forwarded-for"), "127.0.0.1");
    cr_expect_str_eq(jstr(j, "headers", "x-forwarded-proto"), "http");
    const char *rid = jstr(j, "headers", "x-request-id");
    cr_assert_not_null(rid);
    cr_expect_geq(strlen(rid), 16);
    cr_expect_str_eq(http_header(&r, "X-Request-Id"), rid, "the response carries the same id");
    json_decref(j);
    http_free(&r);
}

Test(forward, client_request_id_and_forwarded_for_are_kept)
{
    const char *hdrs[] = { "X-Request-Id: my-trace-42", "X-Forwarded-For: 10.1.2.3", NULL };
    struct http_req q = { .url = gwp_url(&g, "/echo/id"), .headers = hdrs };
    struct http_resp r;
    json_t *j = echo(&q, &r);
    cr_expect_str_eq(jstr(j, "headers", "x-request-id"), "my-trace-42");
    cr_expect_str_eq(jstr(j, "headers", "x-forwarded-for"), "10.1.2.3, 127.0.0.1");
    cr_expect_str_eq(http_header(&r, "X-Request-Id"), "my-trace-42");
    cr_expect_eq(http_header_count(&r, "X-Request-Id"), 1);
    json_decref(j);
    http_free(&r);
}

/* Several X-Forwarded-For lines are one list, kept in order (RFC 9110
 * §5.3), and the client is added at its end. */
Test(forward, every_forwarded_for_line_is_kept)
{
    const char *hdrs[] = { "X-Forwarded-For: 1.1.1.1", "X-Forwarded-For: 2.2.2.2, 3.3.3.3", NULL };
    struct http_req q = { .url = gwp_url(&g, "/echo/xff"), .headers = hdrs };
    struct http_resp r;
    json_t *j = echo(&q, &r);
    cr_expect_str_eq(jstr(j, "headers", "x-forwarded-for"), "1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1");
    json_decref(j);
    http_free(&r);
}

/* A long query (1200 arguments, 14 KB) reaches the module whole: it is not
 * the gateway's to parse (libmicrohttpd's own parse of it ran out of
 * memory at some 500 and left the connection hanging). */
Test(forward, a_query_of_1200_arguments_is_forwarded)
{
    char *url = malloc(1200 * 12 + 64); /* longer than gwp_url's buffer */
    cr_assert_not_null(url);
    size_t n = (size_t)sprintf(url, "http://127.0.0.1:%d/echo/q?", g.port);
    for (int i = 0; i < 1200; i++)
        n += (size_t)sprintf(url + n, "%sa%d=%d", i ? "&" : "", i, i);
    struct http_req q = { .url = url, .timeout_ms = 5000 };
    struct http_resp r;
    json_t *j = echo(&q, &r);
    json_t *query = json_object_get(j, "query");
    cr_expect_eq(json_object_size(query), 1200);
    cr_expect_str_eq(json_string_value(json_object_get(query, "a1199")), "1199");
    json_decref(j);
    http_free(&r);
    free(url);
}

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (unsigned char)(seed >> 16);
    }
}

static void body_roundtrip(const char *method, size_t len)
{
    unsigned char *body = calloc(1, len ? len : 1);
    fill(body, len, (unsigned)len);
    struct sha256_ctx sha;
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_init(&sha);
    sha256_update(&sha, len, body);
    sha256_digest(&sha, sizeof(d), d);
    char hex[2 * SHA256_DIGEST_SIZE + 1];
    for (size_t i = 0; i < sizeof(d); i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    const char *hdrs[] = { "Content-Type: application/x-test", NULL };
    struct http_req q = { .method = method, .url = gwp_url(&g, "/echo/body"), .headers = hdrs,
                          .body = body, .body_len = len };
    struct http_resp r;
    json_t *j = echo(&q, &r);
    cr_expect_str_eq(jstr(j, "method", NULL), method);
    cr_expect_eq(json_integer_value(json_object_get(j, "body_len")), (json_int_t)len);
    cr_expect_str_eq(jstr(j, "body_sha256", NULL), hex);
    cr_expect_str_eq(jstr(j, "headers", "content-type"), "application/x-test");
    json_decref(j);
    http_free(&r);
    free(body);
}

Test(forward, bodies_reach_the_module_intact)
{
    body_roundtrip("POST", 0);
    body_roundtrip("POST", 13);
    body_roundtrip("POST", 100 * 1024);
    body_roundtrip("PUT", 3 * 1024 * 1024 + 7);
    body_roundtrip("PATCH", 70000);
    body_roundtrip("DELETE", 5);
}

Test(forward, methods_without_body)
{
    const char *methods[] = { "GET", "DELETE", "OPTIONS", "PUT" };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        struct http_req q = { .method = methods[i], .url = gwp_url(&g, "/echo/m") };
        struct http_resp r;
        json_t *j = echo(&q, &r);
        cr_expect_str_eq(jstr(j, "method", NULL), methods[i]);
        cr_expect_eq(json_integer_value(json_object_get(j, "body_len")), 0);
        json_decref(j);
        http_free(&r);
    }
}

Test(forward, raw_body_comes_back_byte_for_byte)
{
    size_t sizes[] = { 1, 1000, 65536, 65537, 700 * 1024 };
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t len = sizes[k];
        unsigned char *body = malloc(len);
        fill(body, len, 7);
        body[0] = 0; /* NUL bytes too */
        const char *hdrs[] = { "Content-Type: application/x-raw", NULL };
        struct http_req q = { .method = "POST", .url = gwp_url(&g, "/echo/raw"),
                              .headers = hdrs, .body = body, .body_len = len };
        struct http_resp r;
        cr_assert_eq(http_do(&q, &r), 0);
        cr_expect_eq(r.status, 200);
        cr_expect_eq(r.len, len, "size %zu came back as %zu", len, r.len);
        cr_expect(r.len == len && memcmp(r.body, body, len) == 0, "bytes differ at size %zu", len);
        cr_expect_str_eq(http_header(&r, "Content-Type"), "application/x-raw");
        http_free(&r);
        free(body);
    }
}

Test(forward, redirects_are_passed_back_not_followed)
{
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/echo/respond?status=302&header=Location:/elsewhere"), &r),
                 0);
    cr_expect_eq(r.status, 302);
    cr_expect_str_eq(http_header(&r, "Location"), "/elsewhere");
    http_free(&r);
}

Test(forward, repeated_response_headers_stay_separate)
{
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/echo/respond?status=201&header=Set-Cookie:a=1"
                                       "&header=Set-Cookie:b=2&header=X-One:1"),
                          &r),
                 0);
    cr_expect_eq(r.status, 201);
    cr_expect_eq(http_header_count(&r, "Set-Cookie"), 2);
    size_t seen = 0;
    for (struct curl_slist *h = r.headers; h; h = h->next)
        if (strcmp(h->data, "Set-Cookie: a=1") == 0 || strcmp(h->data, "Set-Cookie: b=2") == 0)
            seen++;
    cr_expect_eq(seen, 2);
    cr_expect_str_eq(http_header(&r, "X-One"), "1");
    http_free(&r);
}

Test(forward, head_keeps_the_content_length)
{
    struct http_req q = { .method = "HEAD", .url = gwp_url(&g, "/hello/world") };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_eq(r.len, 0);
    cr_expect_str_eq(http_header(&r, "Content-Length"), "12");
    http_free(&r);
}

Test(forward, module_environment_from_config)
{
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/echo/env/GREETING"), &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "hi there");
    http_free(&r);
    cr_assert_eq(http_get(gwp_url(&g, "/echo/env/MODGATE_SURELY_UNSET"), &r), 0);
    cr_expect_eq(r.status, 404);
    json_t *j = json_loads(r.body, 0, NULL);
    cr_assert_not_null(j, "module errors are JSON: %s", r.body);
    cr_expect_str_eq(jstr(j, "module", NULL), "echo");
    cr_expect_not_null(strstr(jstr(j, "error", NULL), "MODGATE_SURELY_UNSET"));
    json_decref(j);
    http_free(&r);
}

Test(forward, handler_errors_become_status_and_json)
{
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/chaos/error?status=418&msg=short%20and%20stout"), &r), 0);
    cr_expect_eq(r.status, 418);
    cr_expect_str_eq(http_header(&r, "Content-Type"), "application/json");
    json_t *j = json_loads(r.body, 0, NULL);
    cr_assert_not_null(j, "%s", r.body);
    cr_expect_str_eq(jstr(j, "error", NULL), "short and stout");
    cr_expect_str_eq(jstr(j, "module", NULL), "chaos");
    json_decref(j);
    http_free(&r);
}

Test(forward, many_keepalive_requests_on_one_connection)
{
    CURL *e = curl_easy_init();
    char *url = strdup(gwp_url(&g, "/hello/k"));
    FILE *devnull = fopen("/dev/null", "w");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, devnull);
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(curl_easy_perform(e), CURLE_OK);
        long code;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        cr_assert_eq(code, 200);
    }
    long connects = 0;
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
    cr_expect_eq(connects, 0, "the last request reused the connection");
    fclose(devnull);
    free(url);
    curl_easy_cleanup(e);
}

/* The echo of a raw request: its JSON, from the answer's body. */
static json_t *raw_echo(const char *req)
{
    size_t n;
    char *out = raw_exchange(g.port, NULL, req, strlen(req), 3000, &n);
    cr_assert_eq(strncmp(out, "HTTP/1.1 200 ", 13), 0, "%s", out);
    const char *body = strstr(out, "\r\n\r\n");
    cr_assert_not_null(body, "%s", out);
    json_t *j = json_loads(body + 4, 0, NULL);
    cr_assert_not_null(j, "not JSON: %s", out);
    free(out);
    return j;
}

Test(forward, every_connection_header_counts)
{
    json_t *j = raw_echo("GET /echo/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         "Connection: X-A\r\nX-A: 1\r\nX-B: 2\r\n\r\n");
    json_t *h = json_object_get(j, "headers");
    cr_expect_null(json_object_get(h, "x-a"), "X-A is named by the second Connection header");
    cr_expect_str_eq(jstr(j, "headers", "x-b"), "2");
    json_decref(j);
}

/* Only what the client sent: no Content-Length, Content-Type or Host made
 * up along the way. */
Test(forward, no_framing_or_host_headers_are_invented)
{
    json_t *j = raw_echo("POST /echo/p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    json_t *h = json_object_get(j, "headers");
    cr_expect_str_eq(jstr(j, "method", NULL), "POST");
    cr_expect_null(json_object_get(h, "content-length"));
    cr_expect_null(json_object_get(h, "content-type"));
    json_decref(j);

    j = raw_echo("POST /echo/p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    h = json_object_get(j, "headers");
    cr_expect_str_eq(jstr(j, "headers", "content-length"), "0");
    cr_expect_null(json_object_get(h, "content-type"));
    json_decref(j);

    j = raw_echo("GET /echo/old HTTP/1.0\r\n\r\n");
    h = json_object_get(j, "headers");
    cr_expect_null(json_object_get(h, "host"), "an HTTP/1.0 request without Host stays so");
    json_decref(j);
}

Test(forward, a_module_cannot_speak_for_the_gateway)
{
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/echo/respond?status=200&header=X-Modgate-Error:fake"
                                      "&header=X-Other:kept"), &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_null(http_header(&r, "X-Modgate-Error"), "X-Modgate-Error is the gateway's own");
    cr_expect_str_eq(http_header(&r, "X-Other"), "kept");
    http_free(&r);
}

/* libmicrohttpd frames an answer of unknown length chunked, and for a HEAD
 * sent the last chunk anyway: 5 bytes the client reads as the start of
 * its next answer. The module run alone, and the gateway, send none. */
Test(forward, head_on_a_streaming_route_has_no_body)
{
    const char *req = "HEAD /hello/ticks?n=3 HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t n;
    char *out = raw_exchange(g.port, NULL, req, strlen(req), 3000, &n);
    cr_assert_eq(strncmp(out, "HTTP/1.1 200 ", 13), 0, "%s", out);
    char *end = strstr(out, "\r\n\r\n");
    cr_assert_not_null(end);
    cr_expect_eq((size_t)(end + 4 - out), n, "bytes after the HEAD answer's head: %s", end + 4);
    free(out);

    char sock[300], listen[320];
    snprintf(sock, sizeof(sock), "%s/hello.sock", g.dir);
    snprintf(listen, sizeof(listen), "unix:%s", sock);
    pid_t pid = module_alone(MODGATE_BIN, "hello", listen, NULL);
    out = raw_exchange(0, sock, req, strlen(req), 3000, &n);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    cr_assert_eq(strncmp(out, "HTTP/1.1 200 ", 13), 0, "%s", out);
    end = strstr(out, "\r\n\r\n");
    cr_assert_not_null(end);
    cr_expect_eq((size_t)(end + 4 - out), n, "the module alone: bytes after the head: %s", end + 4);
    free(out);
}

/* RFC 9112 §3.2.2: a server must accept an absolute-form target. It is
 * routed and forwarded in origin form, and its authority is the Host. */
Test(forward, an_absolute_form_target_is_accepted)
{
    json_t *j = raw_echo("GET http://Example.org:8080/echo/abs?x=1 HTTP/1.1\r\nHost: other\r\n"
                         "Connection: close\r\n\r\n");
    cr_expect_str_eq(jstr(j, "path", NULL), "/echo/abs");
    cr_expect_str_eq(jstr(j, "query", "x"), "1");
    cr_expect_str_eq(jstr(j, "headers", "host"), "Example.org:8080");
    json_decref(j);
    /* userinfo is not host information: it does not reach the module. */
    j = raw_echo("GET http://user:secret@h.example/echo/abs HTTP/1.1\r\nConnection: close\r\n\r\n");
    cr_expect_str_eq(jstr(j, "headers", "host"), "h.example");
    json_decref(j);
}

/* A target need not be UTF-8; echo's JSON still is, and says so. */
Test(forward, echo_describes_a_target_that_is_not_utf8)
{
    json_t *j = raw_echo("GET /echo/caf\xc3\xa9/\xff?q=\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    cr_expect_str_eq(jstr(j, "path", NULL), "/echo/caf?" "?/?");
    cr_expect_str_eq(jstr(j, "query", "q"), "?");
    json_decref(j);
}
