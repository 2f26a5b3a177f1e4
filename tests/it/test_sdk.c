/*
 * The module SDK's contract (SPEC §2, modgate/module.h), checked over HTTP
 * through the gateway with the sdk test module (tests/modules/sdk.c), the
 * way a module author relies on it.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <ctype.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct gwp g;

static void start(void)
{
    cr_assert_eq(gwp_start_bin(&g, MODGATE_SDKGW,
                               "{\"limits\": {\"max_body_bytes\": 67108864}}", NULL),
                 0, "gateway did not start: %s", g.out);
}

static void stop(void)
{
    gwp_finish(&g); /* a clean exit, and no sanitizer report in the logs */
}

TestSuite(sdk, .init = start, .fini = stop, .timeout = 120);

/* GET path with optional headers; fails the test if no response came. */
static void get(const char *path, const char *const *headers, struct http_resp *r)
{
    struct http_req q = { .url = gwp_url(&g, path), .headers = headers };
    cr_assert_eq(http_do(&q, r), 0, "GET %s: %s", path, curl_easy_strerror(r->rc));
}

/* GET path and expect status and exactly `body`. */
static void expect_text(const char *path, long status, const char *body)
{
    struct http_resp r;
    get(path, NULL, &r);
    cr_expect_eq(r.status, status, "GET %s: %ld %s", path, r.status, r.body);
    cr_expect_str_eq(r.body, body, "GET %s", path);
    http_free(&r);
}

/* The JSON error body of `r`, checked for its shape: Content-Type, the
 * module's name, and the message `msg` (when not NULL). Caller decrefs. */
static json_t *expect_json_error(const struct http_resp *r, const char *msg)
{
    const char *ct = http_header(r, "Content-Type");
    cr_expect(ct != NULL && strcmp(ct, "application/json") == 0, "Content-Type %s",
              ct ? ct : "(none)");
    json_t *j = json_loads(r->body, 0, NULL);
    cr_assert_not_null(j, "not JSON: %s", r->body);
    cr_expect_str_eq(json_string_value(json_object_get(j, "module")), "sdk");
    const char *err = json_string_value(json_object_get(j, "error"));
    cr_assert_not_null(err, "no \"error\": %s", r->body);
    if (msg != NULL)
        cr_expect_str_eq(err, msg);
    return j;
}

/* GET path into *r, which must be the SDK's JSON error `msg` with `status`
 * (r is left for more checks; caller frees). */
static void get_error(const char *path, long status, const char *msg, struct http_resp *r)
{
    get(path, NULL, r);
    cr_expect_eq(r->status, status, "GET %s: %ld %s", path, r->status, r->body);
    json_decref(expect_json_error(r, msg));
}

#define FNV_INIT 0xcbf29ce484222325ull
static uint64_t fnv(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Byte i of a test body: every value, NUL included. */
static unsigned char pattern(uint64_t i)
{
    return (unsigned char)(i * 7 % 253);
}

/* ---- request side -------------------------------------------------------- */

/* A module answer whose head is too large for libmicrohttpd to send
 * (it builds heads in the connection's memory pool, sized by
 * limits.max_header_bytes in the module as in the gateway) is a 500 from
 * the module that says so, not a connection closed without a word; a
 * large one that fits goes out whole. */
Test(sdk, a_module_answer_head_too_large_to_send_is_a_502)
{
    char path[512], value[201];
    memset(value, 'v', 200);
    value[200] = '\0';
    struct http_resp r;
    snprintf(path, sizeof(path), "/sdk/header?name=X-Big&value=%s&count=50", value);
    get(path, NULL, &r);
    cr_expect_eq(r.status, 200, "%ld %s", r.status, r.body);
    cr_expect_eq(http_header_count(&r, "X-Big"), 50);
    http_free(&r);
    snprintf(path, sizeof(path), "/sdk/header?name=X-Big&value=%s&count=300", value);
    get(path, NULL, &r);
    cr_expect_eq(r.status, 500, "%ld %s", r.status, r.body);
    cr_expect_not_null(strstr(r.body ? r.body : "", "bytes of headers"), "%s", r.body);
    cr_expect_not_null(strstr(r.body ? r.body : "", "\"module\": \"sdk\""), "%s", r.body);
    http_free(&r);
    /* A stream's head the module writes itself, whatever its size: the
     * gateway, whose pool it must fit too, measures it and says so. */
    snprintf(path, sizeof(path), "/sdk/stream/header?name=X-Big&value=%s&count=300", value);
    get(path, NULL, &r);
    cr_expect_eq(r.status, 502, "%ld %s", r.status, r.body);
    const char *err = http_header(&r, "X-Modgate-Error");
    cr_expect(err != NULL && strstr(err, "cause=bad_response") != NULL, "%s", err ? err : "(none)");
    cr_expect_not_null(strstr(r.body ? r.body : "", "bytes of headers"), "%s", r.body);
    http_free(&r);
}

Test(sdk, captures_are_percent_decoded)
{
    expect_text("/sdk/cap/x%20y/%2Fslash%3F", 200, "a=[x y] b=[/slash?] none=(null)\n");
    /* '+' is a space only in a query, not in a path. */
    expect_text("/sdk/cap/a+b/%41%62", 200, "a=[a+b] b=[Ab] none=(null)\n");
    /* Malformed escapes are kept as they are. */
    expect_text("/sdk/cap/100%25%/%zz%4", 200, "a=[100%%] b=[%zz%4] none=(null)\n");
}

/* A NUL would hide the rest of a capture from a handler reading a C
 * string ("/files/a%00.txt" opening "a"): refused, as nginx does. */
Test(sdk, a_capture_with_an_encoded_nul_is_a_400)
{
    struct http_resp r;
    get_error("/sdk/cap/adm%00junk/x", 400, "the path holds an encoded NUL (%00)", &r);
    json_t *j = json_loads(r.body, 0, NULL);
    const char *rid = json_string_value(json_object_get(j, "request_id"));
    cr_expect(rid != NULL && strcmp(rid, http_header(&r, "X-Request-Id")) == 0,
              "the request id, as in every error: %s", r.body);
    json_decref(j);
    http_free(&r);
    get_error("/sdk/wild/a/b%00c", 400, "the path holds an encoded NUL (%00)", &r);
    http_free(&r);
}

Test(sdk, a_literal_segment_beats_a_capture)
{
    /* /sdk/cap/fixed/{b} is declared after /sdk/cap/{a}/{b}. */
    expect_text("/sdk/cap/fixed/q", 200, "fixed b=[q] a=(null)\n");
    expect_text("/sdk/cap/fixedx/q", 200, "a=[fixedx] b=[q] none=(null)\n");
}

Test(sdk, the_wildcard_is_capture_star)
{
    expect_text("/sdk/wild/one", 200, "GET /sdk/wild/one ? *=[one]\n");
    struct http_req q = { .method = "PUT", .url = gwp_url(&g, "/sdk/wild/a%20b/c/?x=1&y") };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 200);
    /* Method as sent, the path still encoded, the raw query, "*" decoded. */
    cr_expect_str_eq(r.body, "PUT /sdk/wild/a%20b/c/ ?x=1&y *=[a b/c/]\n");
    http_free(&r);
}

Test(sdk, query_arguments_in_order_with_repeats_and_decoding)
{
    expect_text("/sdk/query?a=1&a=2&flag&sp+ace=x%2By+z&pct=%41%zz%4&=empty&&e=&a=3", 200,
                "count=8\n"
                "0: [a]=[1]\n"
                "1: [a]=[2]\n"
                "2: [flag]=[]\n"
                "3: [sp ace]=[x+y z]\n"
                "4: [pct]=[A%zz%4]\n"
                "5: []=[empty]\n"
                "6: [e]=[]\n"
                "7: [a]=[3]\n"
                "past end=-1\n"
                "first a=[1]\n"
                "first flag=[]\n"
                "first sp ace=[x+y z]\n"
                "first none=(null)\n");
    expect_text("/sdk/query", 200,
                "count=0\npast end=-1\nfirst a=(null)\nfirst flag=(null)\n"
                "first sp ace=(null)\nfirst none=(null)\n");
}

Test(sdk, headers_case_insensitive_first_value_and_in_order)
{
    const char *hdrs[] = { "X-Sdk-One: one value", "x-sdk-rep: first", "X-SDK-Rep: second",
                           "X-Sdk-Empty;", NULL };
    struct http_resp r;
    get("/sdk/headers", hdrs, &r);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "x-sdk-one=[one value]\n"
                             "X-SDK-REP=[first]\n"
                             "x-sdk-none=(null)\n"
                             "at: X-Sdk-One=[one value]\n"
                             "at: x-sdk-rep=[first]\n"
                             "at: X-SDK-Rep=[second]\n"
                             "at: X-Sdk-Empty=[]\n"
                             "past end=-1\n");
    http_free(&r);
}

static void post_body(size_t len)
{
    unsigned char *data = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        data[i] = pattern(i);
    struct http_req q = { .method = "POST", .url = gwp_url(&g, "/sdk/body"), .body = data,
                          .body_len = len };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    char want[256];
    unsigned long long h = fnv(FNV_INIT, data, len);
    snprintf(want, sizeof(want),
             "len=%zu fnv=%016llx read=%zu read_fnv=%016llx last=0 again=0\n", len, h, len, h);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, want);
    http_free(&r);
    free(data);
}

Test(sdk, body_whole_and_read_in_pieces_agree)
{
    post_body(0);
    post_body(1);
    post_body(100000);
    post_body(3 * 1024 * 1024 + 5);
}

/* ---- streaming uploads --------------------------------------------------- */


/* Reads until the peer closes (or 10 s of silence); caller frees. */
/* The upload handler runs, and reads, while the body is still on its way:
 * the test sends the rest only once the module has logged its first bytes. */
Test(sdk, an_upload_is_read_as_it_arrives)
{
    const size_t total = 2 * 1024 * 1024, first = 64 * 1024;
    unsigned char *data = malloc(total);
    for (size_t i = 0; i < total; i++)
        data[i] = pattern(i);
    int fd = test_connect(g.port, NULL, 0);
    cr_assert_geq(fd, 0);
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "POST /sdk/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      "X-Request-Id: sdk-early-1\r\nContent-Length: %zu\r\n\r\n", total);
    send_all(fd, head, (size_t)hl);
    send_all(fd, data, first);
    cr_assert(gwp_wait_log(&g, "sdk.log", "upload sdk-early-1: first bytes in", 10000),
              "the handler saw no bytes before the whole body was sent");
    send_all(fd, data + first, total - first);
    size_t outlen;
    char *out = read_answer(fd, 10000, &outlen);
    close(fd);
    char want[128];
    snprintf(want, sizeof(want), "\r\n\r\nlen=%zu fnv=%016llx body_len=0\n", total,
             (unsigned long long)fnv(FNV_INIT, data, total));
    cr_expect_eq(strncmp(out, "HTTP/1.1 200 ", 13), 0, "%.200s", out);
    cr_expect_not_null(strstr(out, want), "%s", out);
    free(out);
    free(data);
}

/* A client that leaves halfway through its upload: the handler's next
 * read fails instead of waiting for bytes that will never come. */
Test(sdk, an_upload_that_breaks_off_fails_the_read)
{
    static char part[64 * 1024];
    memset(part, 'p', sizeof(part));
    int fd = test_connect(g.port, NULL, 0);
    cr_assert_geq(fd, 0);
    const char *head = "POST /sdk/upload HTTP/1.1\r\nHost: x\r\nX-Request-Id: sdk-broken-1\r\n"
                       "Content-Length: 1048576\r\n\r\n";
    send_all(fd, head, strlen(head));
    send_all(fd, part, sizeof(part));
    cr_assert(gwp_wait_log(&g, "sdk.log", "upload sdk-broken-1: first bytes in", 10000));
    close(fd);
    cr_expect(gwp_wait_log(&g, "sdk.log", "upload sdk-broken-1: read failed after", 10000),
              "the handler's read did not fail");
}

struct producer {
    uint64_t pos, left, h;
};

static size_t produce(char *p, size_t size, size_t n, void *userp)
{
    struct producer *u = userp;
    size_t len = size * n < u->left ? size * n : (size_t)u->left;
    for (size_t i = 0; i < len; i++)
        p[i] = (char)pattern(u->pos + i);
    u->h = fnv(u->h, p, len);
    u->pos += len;
    u->left -= len;
    return len;
}

/* POSTs `total` pattern bytes to `url`, chunked. */
static CURLcode upload(const char *url, uint64_t total, struct producer *u, struct http_resp *r)
{
    *u = (struct producer){ .left = total, .h = FNV_INIT };
    return http_post_chunked(url, produce, u, "X-Request-Id: sdk-upload-big", r);
}

/* 48 MiB through a handler that holds 4 KiB at a time: intact, and the
 * module never held it (its RSS stays far below the body's size). */
Test(sdk, a_large_upload_is_never_held_whole)
{
    struct producer u;
    struct http_resp r;
    uint64_t total = 48ull << 20;
    cr_assert_eq(upload(gwp_url(&g, "/sdk/upload"), total, &u, &r), CURLE_OK);
    char want[128];
    snprintf(want, sizeof(want), "len=%llu fnv=%016llx body_len=0\n",
             (unsigned long long)total, (unsigned long long)u.h);
    cr_expect_eq(r.status, 200, "%s", r.body);
    cr_expect_str_eq(r.body, want);
    http_free(&r);
    long rss = rss_kb(gwp_module_pid(&g, "sdk"));
    cr_expect_lt(rss, 40 * 1024, "module RSS %ld KiB", rss);
}

/* Over the limit, mg_req_read fails (the handler can stop) and the client
 * gets 413. */
Test(sdk, an_upload_over_the_limit_fails_the_read)
{
    struct gwp small;
    cr_assert_eq(gwp_start_bin(&small, MODGATE_SDKGW, "{\"limits\": {\"max_body_bytes\": 1048576}}",
                               NULL),
                 0, "%s", small.out);
    struct producer u;
    struct http_resp r;
    CURLcode rc = upload(gwp_url(&small, "/sdk/upload"), 4ull << 20, &u, &r);
    cr_expect_eq(rc, CURLE_OK, "%s", curl_easy_strerror(rc));
    cr_expect_eq(r.status, 413, "%ld %s", r.status, r.body);
    http_free(&r);
    cr_expect(gwp_wait_log(&small, "sdk.log", "upload sdk-upload-big: read failed after", 10000));
    gwp_finish(&small);
}

/* ---- unary responses ----------------------------------------------------- */

Test(sdk, response_status_repeated_headers_and_a_replaced_body)
{
    struct http_resp r;
    get("/sdk/res", NULL, &r);
    cr_expect_eq(r.status, 201);
    cr_expect_eq(r.len, 8);
    cr_expect(r.len == 8 && memcmp(r.body, "sec\0ond\n", 8) == 0, "body: %s", r.body);
    const char *cookies[2] = { NULL, NULL };
    size_t n = 0;
    for (struct curl_slist *h = r.headers; h != NULL; h = h->next)
        if (strncasecmp(h->data, "Set-Cookie: ", 12) == 0 && n < 2)
            cookies[n++] = h->data + 12;
    cr_expect_eq(http_header_count(&r, "Set-Cookie"), 2);
    cr_expect(n == 2 && strcmp(cookies[0], "a=1") == 0 && strcmp(cookies[1], "b=2") == 0,
              "in order");
    cr_expect_str_eq(http_header(&r, "X-Bad-Header-Rc"), "-1", "a name with ':' is refused");
    cr_expect_null(http_header(&r, "Bad"));
    cr_expect_eq(http_header_count(&r, "Content-Type"), 1);
    cr_expect_str_eq(http_header(&r, "Content-Type"), "application/octet-stream");
    http_free(&r);
}

Test(sdk, printf_sets_status_content_type_and_body)
{
    struct http_resp r;
    get("/sdk/printf", NULL, &r);
    cr_expect_eq(r.status, 202);
    cr_expect_str_eq(r.body, "n=42\n");
    cr_expect_eq(http_header_count(&r, "Content-Type"), 1, "a second call replaces it");
    cr_expect_str_eq(http_header(&r, "Content-Type"), "text/x-second");
    http_free(&r);

    get("/sdk/printf?width=100000", NULL, &r);
    cr_expect_eq(r.status, 202);
    cr_expect_eq(r.len, 100003, "not truncated: %zu bytes", r.len);
    cr_expect(r.len == 100003 && strcmp(r.body + 100000 - 2, "0042\n") == 0);
    http_free(&r);
}

Test(sdk, any_status_a_module_sets_reaches_the_client)
{
    expect_text("/sdk/status?code=299", 299, "status set\n");
    expect_text("/sdk/status?code=404", 404, "status set\n");
}

/* A status that is not a final HTTP status (200 to 599) is the module's
 * mistake: the client still gets a proper 500 with the JSON error, not a
 * broken connection (502) or an interim 1xx after which it waits for ever.
 * The same for a stream, whose writes then fail so that its handler stops
 * (it writes more than the stream's queue holds, then waits). */
Test(sdk, a_status_that_is_not_final_is_a_500)
{
    static const char *const codes[] = { "42", "100", "102", "199", "600", "1000", "-1" };
    static const char *const paths[] = { "/sdk/status?code=%s",
                                         "/sdk/stream/status?code=%s&write=0",
                                         "/sdk/stream/status?code=%s&write=100000" };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        for (size_t k = 0; k < sizeof(paths) / sizeof(paths[0]); k++) {
            char path[128], hdr[64];
            snprintf(path, sizeof(path), paths[k], codes[i]);
            snprintf(hdr, sizeof(hdr), "X-Request-Id: sdk-status-%zu-%zu", i, k);
            const char *hdrs[] = { hdr, NULL };
            struct http_req q = { .url = gwp_url(&g, path), .headers = hdrs, .timeout_ms = 5000 };
            struct http_resp r;
            cr_assert_eq(http_do(&q, &r), 0, "%s: %s", path, curl_easy_strerror(r.rc));
            cr_expect_eq(r.status, 500, "%s: %ld %s", path, r.status, r.body);
            cr_expect_null(http_header(&r, "X-Modgate-Error"), "%s: cut by the gateway: %s",
                           path, http_header(&r, "X-Modgate-Error"));
            json_t *j = expect_json_error(&r, NULL);
            const char *err = json_string_value(json_object_get(j, "error"));
            cr_expect(strstr(err, codes[i]) != NULL, "%s: the error names the status: %s", path,
                      err);
            json_decref(j);
            http_free(&r);
            if (k == 2) {
                char line[128];
                snprintf(line, sizeof(line), "stream status sdk-status-%zu-%zu: a write failed", i,
                         k);
                cr_expect(gwp_wait_log(&g, "sdk.log", line, 5000), "%s", line);
            }
        }
    expect_text("/sdk/stream/status?code=299&write=1", 299, "written\n");
    expect_text("/sdk/stream/status?code=404&write=0", 404, "");
}

/* Whatever name and value a handler passes to mg_res_header or
 * mg_stream_header, the client gets a well-formed answer: a name that is
 * not an HTTP token is refused (-1); a Connection header of keep-alive
 * only (libmicrohttpd's own business) is taken and does no harm. */
Test(sdk, any_header_a_handler_adds_gives_a_well_formed_answer)
{
    static const struct {
        const char *query, *rc, *name, *value;
    } cases[] = {
        { "name=X-Plain&value=v", "0", "X-Plain", "v" },
        { "name=X-Empty&value=", "0", "X-Empty", "" },
        { "name=X%20Space&value=v", "-1", NULL, NULL },
        { "name=X%09Tab&value=v", "-1", NULL, NULL },
        { "name=X(y)&value=v", "-1", NULL, NULL },
        { "name=&value=v", "-1", NULL, NULL },
        { "name=X-Crlf&value=a%0D%0Ab", "-1", NULL, NULL },
        { "name=Connection&value=keep-alive", "0", NULL, NULL },
        { "name=Connection&value=close", "0", NULL, NULL },
    };
    static const char *const routes[] = { "/sdk/header?", "/sdk/stream/header?" };
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            char path[256], body[32];
            snprintf(path, sizeof(path), "%s%s", routes[k], cases[i].query);
            snprintf(body, sizeof(body), "rc=%s\n", cases[i].rc);
            struct http_resp r;
            get(path, NULL, &r);
            cr_expect_eq(r.status, 200, "%s: %ld %s", path, r.status, r.body);
            cr_expect_str_eq(r.body, body, "%s", path);
            if (cases[i].name != NULL) {
                const char *v = http_header(&r, cases[i].name);
                cr_expect(v != NULL && strcmp(v, cases[i].value) == 0, "%s: %s: [%s]", path,
                          cases[i].name, v ? v : "(null)");
            }
            http_free(&r);
        }
}

/* An empty header value is sent, empty, by the module run alone too (the
 * gateway's side is in any_header_a_handler_adds_gives_a_well_formed_answer). */
Test(sdk, an_empty_header_value_is_sent_empty)
{
    char sock[300], listen[320];
    snprintf(sock, sizeof(sock), "%s/sdk.sock", g.dir);
    snprintf(listen, sizeof(listen), "unix:%s", sock);
    pid_t pid = module_alone(MODGATE_SDKGW, "sdk", listen, NULL);
    static const char *const paths[] = { "/sdk/header", "/sdk/stream/header" };
    for (size_t k = 0; k < 2; k++) {
        char req[256];
        int len = snprintf(req, sizeof(req),
                           "GET %s?name=X-Empty&value= HTTP/1.1\r\nHost: x\r\n"
                           "Connection: close\r\n\r\n", paths[k]);
        size_t n;
        char *out = raw_exchange(0, sock, req, (size_t)len, 3000, &n);
        cr_expect_eq(strncmp(out, "HTTP/1.1 200 ", 13), 0, "%s: %s", paths[k], out);
        const char *h = strstr(out, "\r\nX-Empty:");
        cr_expect_not_null(h, "%s: %s", paths[k], out);
        if (h != NULL) {
            h += strlen("\r\nX-Empty:");
            cr_expect_eq(strspn(h, " \t"), strcspn(h, "\r"), "an empty value: %s", out);
        }
        cr_expect_not_null(strstr(out, "rc=0\n"), "%s", out);
        free(out);
    }
    /* Run alone, nobody assigns a request id: mg_req_id is "". */
    const char *req = "GET /sdk/id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    size_t n;
    char *out = raw_exchange(0, sock, req, strlen(req), 3000, &n);
    const char *body = strstr(out, "\r\n\r\n");
    cr_expect(body != NULL && strcmp(body + 4, "\n") == 0, "%s", out);
    free(out);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

Test(sdk, an_error_gives_its_status_and_a_json_body)
{
    const char *hdrs[] = { "X-Request-Id: sdk-err-1", NULL };
    struct http_resp r;
    get("/sdk/error?status=418", hdrs, &r);
    cr_expect_eq(r.status, 418);
    json_t *j = expect_json_error(&r, "no \"tea\"\there\n7");
    cr_expect_str_eq(json_string_value(json_object_get(j, "request_id")), "sdk-err-1");
    json_decref(j);
    cr_expect_null(http_header(&r, "X-Before-Error"), "what was built before is dropped");
    cr_expect_null(http_header(&r, "X-Modgate-Error"), "the module's answer, not the gateway's");
    http_free(&r);

    /* A module's 503 is its own answer, passed through as it is. */
    get_error("/sdk/error?status=503", 503, "no \"tea\"\there\n7", &r);
    cr_expect_null(http_header(&r, "X-Modgate-Error"));
    http_free(&r);

    /* Not an error status: the SDK makes it a 500. */
    get_error("/sdk/error?status=200", 500, "no \"tea\"\there\n7", &r);
    http_free(&r);
}

Test(sdk, a_handler_that_fails_without_an_error_gets_a_500_json)
{
    struct http_resp r;
    get_error("/sdk/fail", 500, "handler failed", &r);
    cr_expect_null(strstr(r.body, "not this"));
    cr_expect_not_null(http_header(&r, "X-Request-Id"));
    cr_expect_null(http_header(&r, "X-Modgate-Error"));
    http_free(&r);
}

/* ---- streaming responses ------------------------------------------------- */

Test(sdk, stream_status_and_headers_before_the_first_write)
{
    struct http_resp r;
    get("/sdk/stream/head", NULL, &r);
    cr_expect_eq(r.status, 203);
    cr_expect_str_eq(r.body, "one\nlate header rc=-1\ntwo\n");
    cr_expect_eq(http_header_count(&r, "Content-Type"), 1);
    cr_expect_str_eq(http_header(&r, "Content-Type"), "application/x-ndjson");
    cr_expect_eq(http_header_count(&r, "X-Sdk-Rep"), 2);
    cr_expect_null(http_header(&r, "X-Late"));
    http_free(&r);
}

Test(sdk, a_stream_failing_before_its_first_chunk_answers_like_a_unary_handler)
{
    struct http_resp r;
    get_error("/sdk/stream/fail?when=early&how=error", 409, "stopped early", &r);
    cr_expect_null(http_header(&r, "X-Before-Error"));
    http_free(&r);

    get_error("/sdk/stream/fail?when=early&how=return", 500, "handler failed", &r);
    http_free(&r);

    /* A write after the error fails, and does not turn it into a 200. */
    const char *hdrs[] = { "X-Request-Id: sdk-fail-early", NULL };
    struct http_req q = { .url = gwp_url(&g, "/sdk/stream/fail?when=early&how=error&then=write"),
                          .headers = hdrs };
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 409, "%s", r.body);
    cr_expect_not_null(strstr(r.body, "\"error\": \"stopped early\""), "%s", r.body);
    http_free(&r);
    cr_expect(gwp_wait_log(&g, "sdk.log", "stream fail sdk-fail-early: write after the error: -1",
                           3000));
}

/* The status cannot change any more: the error text is the last chunk and
 * the chunked body ends properly (0\r\n\r\n), on a connection that stays
 * usable. */
Test(sdk, a_stream_failing_after_its_first_chunk_ends_cleanly)
{
    static const struct {
        const char *path, *body;
    } cases[] = {
        { "/sdk/stream/fail?when=late&how=error",
          "2\r\na\n\r\n2\r\nb\n\r\n14\r\nerror: stopped late\n\r\n0\r\n\r\n" },
        { "/sdk/stream/fail?when=late&how=return",
          "2\r\na\n\r\n2\r\nb\n\r\n16\r\nerror: handler failed\n\r\n0\r\n\r\n" },
        /* A write after the error is refused: the error stays the last
         * chunk, and a second error does not replace the first. */
        { "/sdk/stream/fail?when=late&how=error&then=write",
          "2\r\na\n\r\n2\r\nb\n\r\n14\r\nerror: stopped late\n\r\n0\r\n\r\n" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http_resp r;
        get(cases[i].path, NULL, &r); /* 0 only for a well-formed body */
        cr_expect_eq(r.status, 200);
        http_free(&r);

        char *out = raw_get(g.port, cases[i].path);
        cr_expect_eq(strncmp(out, "HTTP/1.1 200 ", 13), 0, "%s", out);
        const char *body = strstr(out, "\r\n\r\n");
        cr_assert_not_null(body, "%s", out);
        cr_expect_str_eq(body + 4, cases[i].body, "%s", cases[i].path);
        free(out);
    }
}

/* A client that goes away makes the handler's next write fail, and the
 * handler says so in its log. */
Test(sdk, a_write_to_a_client_that_went_away_fails)
{
    int fd = test_connect(g.port, NULL, 0);
    cr_assert_geq(fd, 0);
    const char *req = "GET /sdk/stream/forever HTTP/1.1\r\nHost: x\r\n"
                      "X-Request-Id: sdk-gone-1\r\n\r\n";
    send_all(fd, req, strlen(req));
    char buf[4096];
    size_t got = 0;
    while (got < 8192) {
        ssize_t n = read(fd, buf, sizeof(buf));
        cr_assert_gt(n, 0);
        got += (size_t)n;
    }
    close(fd);
    cr_expect(gwp_wait_log(&g, "sdk.log", "forever sdk-gone-1: write failed after", 10000),
              "the handler's writes did not fail");
    cr_expect(gwp_wait_log(&g, "sdk.log", "(client_gone=1)", 3000));
}

/* ---- logging and request id --------------------------------------------- */

/* "2026-11-22T18:13:27.123Z LEVEL sdk: " at the start of `line`. */
static bool timestamped(const char *line, const char *level)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ ";
    for (size_t i = 0; shape[i] != '\0'; i++)
        if (shape[i] == 'd' ? !isdigit((unsigned char)line[i]) : line[i] != shape[i])
            return false;
    line += strlen(shape);
    size_t n = strlen(level);
    return strncmp(line, level, n) == 0 && strncmp(line + n, " sdk: ", 6) == 0;
}

/* The whole line of `log` that contains `needle`, or NULL; caller frees. */
static char *line_with(const char *log, const char *needle)
{
    const char *hit = strstr(log, needle);
    if (hit == NULL)
        return NULL;
    const char *start = hit;
    while (start > log && start[-1] != '\n')
        start--;
    const char *end = strchr(hit, '\n');
    return strndup(start, end ? (size_t)(end - start) : strlen(start));
}

Test(sdk, log_lines_are_timestamped_in_the_module_log)
{
    const char *hdrs[] = { "X-Request-Id: sdk-log-1", NULL };
    struct http_resp r;
    get("/sdk/log?msg=hello%20there", hdrs, &r);
    cr_expect_eq(r.status, 200);
    http_free(&r);
    cr_assert(gwp_wait_log(&g, "sdk.log", "log sdk-log-1: long", 5000));
    char *log = gwp_log(&g, "sdk.log");
    static const struct {
        const char *needle, *level;
    } lines[] = {
        { "log sdk-log-1: debug hello there", "DEBUG" },
        { "log sdk-log-1: info hello there", "INFO" },
        { "log sdk-log-1: warn hello there", "WARN" },
        { "log sdk-log-1: error hello there", "ERROR" },
        { "log sdk-log-1: long ", "INFO" },
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        char *line = line_with(log, lines[i].needle);
        cr_expect_not_null(line, "no line %s in %s", lines[i].needle, log);
        if (line != NULL)
            cr_expect(timestamped(line, lines[i].level), "%s", line);
        free(line);
    }
    /* A message with its own newline is not followed by an empty line. */
    cr_expect_not_null(strstr(log, "error hello there\n2"), "%s", log);
    /* A long message is one line, not truncated. */
    char *line = line_with(log, "log sdk-log-1: long ");
    const char *x = line ? strstr(line, "long ") + 5 : "";
    size_t n = strspn(x, "x");
    cr_expect_eq(n, 5000, "%zu x", n);
    cr_expect_str_eq(x + n, ".");
    free(line);
    free(log);
}

/* One call, one line: text from a request cannot forge log lines. */
Test(sdk, a_log_message_with_line_breaks_stays_one_line)
{
    const char *hdrs[] = { "X-Request-Id: sdk-log-2", NULL };
    struct http_resp r;
    get("/sdk/log?msg=one%0Atwo%0D%0A2026-01-01T00:00:00.000Z%20ERROR%20sdk:%20forged"
        "%1B%5Cn%FF%C3%A9",
        hdrs, &r);
    cr_expect_eq(r.status, 200);
    http_free(&r);
    cr_assert(gwp_wait_log(&g, "sdk.log", "log sdk-log-2: long", 5000));
    char *log = gwp_log(&g, "sdk.log");
    char *line = line_with(log, "log sdk-log-2: info ");
    cr_expect_not_null(line, "%s", log);
    if (line != NULL)
        cr_expect_not_null(strstr(line, "info one\\ntwo\\r\\n2026-01-01T00:00:00.000Z ERROR "
                                        "sdk: forged\\x1b\\\\n\\xff\xc3\xa9"),
                           "%s", line);
    free(line);
    cr_expect_null(strstr(log, "\n2026-01-01T00:00:00.000Z ERROR sdk: forged"), "%s", log);
    free(log);
}

/* stdout is line-buffered: a printf line is in the log while the module
 * runs (a crash would otherwise lose it, and its log tail miss it). */
Test(sdk, a_printf_line_reaches_the_log_at_once)
{
    const char *hdrs[] = { "X-Request-Id: sdk-stdout-1", NULL };
    struct http_resp r;
    get("/sdk/stdout?msg=hi", hdrs, &r);
    cr_expect_eq(r.status, 200);
    http_free(&r);
    cr_expect(gwp_wait_log(&g, "sdk.log", "stdout sdk-stdout-1: hi\n", 3000));
}

Test(sdk, content_type_set_twice_is_sent_once)
{
    struct http_resp r;
    get("/sdk/ctype", NULL, &r);
    cr_expect_eq(r.status, 200);
    cr_expect_eq(http_header_count(&r, "Content-Type"), 1);
    cr_expect_str_eq(http_header(&r, "Content-Type"), "c/d");
    http_free(&r);
}

/* A status with no standard reason phrase is named by its number, not
 * "Unknown". */
Test(sdk, a_bare_nonstandard_status_names_itself)
{
    struct http_resp r;
    get_error("/sdk/bare?status=418", 418, "error 418", &r);
    http_free(&r);
    get_error("/sdk/bare?status=404", 404, "Not Found", &r);
    http_free(&r);
}

Test(sdk, the_request_id_is_the_one_the_client_sent)
{
    const char *hdrs[] = { "X-Request-Id: sdk-trace-7", NULL };
    struct http_resp r;
    get("/sdk/id", hdrs, &r);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "sdk-trace-7\n");
    cr_expect_str_eq(http_header(&r, "X-Request-Id"), "sdk-trace-7");
    http_free(&r);

    /* Without one, the id the gateway made up and answers with. */
    get("/sdk/id", NULL, &r);
    cr_expect_eq(r.status, 200);
    const char *id = http_header(&r, "X-Request-Id");
    cr_assert_not_null(id);
    char want[256];
    snprintf(want, sizeof(want), "%s\n", id);
    cr_expect_str_eq(r.body, want);
    cr_expect_gt(strlen(id), 0);
    http_free(&r);
}

/* Each handler sees its own request: many at once, each answers with the
 * id its client sent. */
Test(sdk, concurrent_requests_each_see_their_own)
{
    enum { N = 64 };
    static struct http_resp resp[N];
    CURLM *m = curl_multi_init();
    CURL *e[N];
    struct curl_slist *h[N];
    for (int i = 0; i < N; i++) {
        char id[64];
        snprintf(id, sizeof(id), "X-Request-Id: sdk-many-%d", i);
        memset(&resp[i], 0, sizeof(resp[i]));
        resp[i].body = calloc(1, 1);
        h[i] = curl_slist_append(NULL, id);
        e[i] = curl_easy_init();
        curl_easy_setopt(e[i], CURLOPT_URL, gwp_url(&g, "/sdk/id"));
        curl_easy_setopt(e[i], CURLOPT_HTTPHEADER, h[i]);
        curl_easy_setopt(e[i], CURLOPT_WRITEFUNCTION, http_collect);
        curl_easy_setopt(e[i], CURLOPT_WRITEDATA, &resp[i]);
        curl_easy_setopt(e[i], CURLOPT_TIMEOUT, 30L);
        curl_multi_add_handle(m, e[i]);
    }
    int running = 1;
    for (long deadline = ms_now() + 40000; running && ms_now() < deadline;) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < N; i++) {
        char want[64];
        snprintf(want, sizeof(want), "sdk-many-%d\n", i);
        cr_expect_str_eq(resp[i].body, want);
        curl_multi_remove_handle(m, e[i]);
        curl_easy_cleanup(e[i]);
        curl_slist_free_all(h[i]);
        http_free(&resp[i]);
    }
    curl_multi_cleanup(m);
}
