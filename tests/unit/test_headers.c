/*
 * Unit tests of the proxy's header rules (gateway/src/headers.h).
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "headers.h"
#include "util.h"

static bool hop(const char *name)
{
    return gw_header_is_hop_by_hop(name, strlen(name));
}

Test(hop_by_hop, standard_names_any_case)
{
    const char *names[] = {
        "Connection", "connection", "CONNECTION", "cOnNeCtIoN",
        "Keep-Alive", "keep-alive", "KEEP-ALIVE",
        "TE", "te", "Te",
        "Trailer", "trailer", "TRAILER",
        "Transfer-Encoding", "transfer-encoding", "TRANSFER-ENCODING",
        "Upgrade", "upgrade", "UPGRADE",
        "Proxy-Authorization", "proxy-authorization", "Proxy-Authenticate",
        "Proxy-Connection", "Proxy-Foo", "PROXY-FOO", "proxy-x",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        cr_expect(hop(names[i]), "%s must be hop-by-hop", names[i]);
}

Test(hop_by_hop, end_to_end_names)
{
    const char *names[] = {
        "Content-Type", "Content-Length", "X-Te", "Tea", "T", "TEE", "Trailers",
        "X-Connection", "Connections", "Connectio", "Keep-Alive2", "Upgrade-Insecure-Requests",
        "Proxy", "Proxyfoo", "X-Proxy-Foo", "Authorization", "Host", "Set-Cookie",
        "X-Forwarded-For", "Transfer-Encodings", "",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        cr_expect(!hop(names[i]), "\"%s\" must not be hop-by-hop", names[i]);
}

Test(hop_by_hop, uses_len_not_nul)
{
    /* The name comes from a buffer without its own NUL. */
    const char *buf = "Content-Type: text/plain";
    cr_assert(!gw_header_is_hop_by_hop(buf, 12));
    const char *buf2 = "TE: trailers";
    cr_assert(gw_header_is_hop_by_hop(buf2, 2));
    const char *buf3 = "Teapot";
    cr_assert(gw_header_is_hop_by_hop(buf3, 2), "first two bytes \"Te\" are TE");
    cr_assert(!gw_header_is_hop_by_hop(buf3, 3));
    const char *buf4 = "Upgrade-Insecure-Requests";
    cr_assert(gw_header_is_hop_by_hop(buf4, 7));
    cr_assert(!gw_header_is_hop_by_hop(buf4, strlen(buf4)));
}

static bool in_conn(const char *conn, const char *name)
{
    return gw_header_in_connection(conn, name, strlen(name));
}

Test(connection_tokens, single_and_listed_tokens)
{
    cr_expect(in_conn("close", "close"));
    cr_expect(in_conn("X-Foo", "X-Foo"));
    cr_expect(in_conn("keep-alive, X-Foo", "X-Foo"));
    cr_expect(in_conn("keep-alive, X-Foo", "keep-alive"));
    cr_expect(in_conn("keep-alive,X-Foo,X-Bar", "X-Bar"));
    cr_expect(in_conn("a, b, c", "b"));
    cr_expect(!in_conn("a, b, c", "d"));
    cr_expect(!in_conn("close", "clos"));
    cr_expect(!in_conn("close", "closed"));
    cr_expect(!in_conn("X-Foo-Bar", "X-Foo"));
    cr_expect(!in_conn("X-Foo", "X-Foo-Bar"));
    cr_expect(!in_conn("X-FooX, Y", "X-Foo"));
}

Test(connection_tokens, case_insensitive)
{
    cr_expect(in_conn("X-FOO", "x-foo"));
    cr_expect(in_conn("x-foo", "X-Foo"));
    cr_expect(in_conn("Keep-Alive, Upgrade", "upgrade"));
}

Test(connection_tokens, spaces_tabs_and_commas)
{
    cr_expect(in_conn("   X-Foo   ", "X-Foo"));
    cr_expect(in_conn("\tX-Foo\t", "X-Foo"));
    cr_expect(in_conn(",,, X-Foo ,,,", "X-Foo"));
    cr_expect(in_conn("a ,X-Foo , b", "X-Foo"));
    cr_expect(in_conn("a,\t X-Foo", "X-Foo"));
    cr_expect(in_conn(" , ,b", "b"));
    cr_expect(!in_conn("", "X-Foo"));
    cr_expect(!in_conn(" , , ", "X-Foo"));
}

Test(connection_tokens, empty_name_and_null_value)
{
    cr_expect(!gw_header_in_connection("a, , b", "", 0));
    cr_expect(!gw_header_in_connection("", "", 0));
    cr_expect(!gw_header_in_connection(NULL, "X-Foo", 5));
}

Test(connection_tokens, uses_len_not_nul)
{
    const char *hdr = "X-Foo: 1";
    cr_expect(gw_header_in_connection("close, x-foo", hdr, 5));
    cr_expect(!gw_header_in_connection("close, x-foo", hdr, 4));
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    cr_assert_not_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

Test(request_id, valid_ids)
{
    cr_expect(gw_request_id_valid("a"));
    cr_expect(gw_request_id_valid("abc-123"));
    cr_expect(gw_request_id_valid("0f8fad5b-d9cb-469f-a165-70867728950e"));
    cr_expect(gw_request_id_valid("!#$%&'()*+,-./:;<=>?@[]^_`{|}~"));
    char *s128 = repeat('x', 128);
    cr_expect(gw_request_id_valid(s128), "128 characters is the limit");
    free(s128);
}

Test(request_id, invalid_ids)
{
    cr_expect(!gw_request_id_valid(""), "empty");
    char *s129 = repeat('x', 129);
    cr_expect(!gw_request_id_valid(s129), "129 characters");
    free(s129);
    char *s4096 = repeat('y', 4096);
    cr_expect(!gw_request_id_valid(s4096), "4096 characters");
    free(s4096);
    cr_expect(!gw_request_id_valid("a b"), "space");
    cr_expect(!gw_request_id_valid(" ab"), "leading space");
    cr_expect(!gw_request_id_valid("ab "), "trailing space");
    cr_expect(!gw_request_id_valid("a\"b"), "double quote");
    cr_expect(!gw_request_id_valid("\""), "lone quote");
    cr_expect(!gw_request_id_valid("a\\b"), "backslash");
    cr_expect(!gw_request_id_valid("a\tb"), "tab");
    cr_expect(!gw_request_id_valid("a\nb"), "newline");
    cr_expect(!gw_request_id_valid("a\rb"), "carriage return");
    cr_expect(!gw_request_id_valid("a\x01" "b"), "control 0x01");
    cr_expect(!gw_request_id_valid("a\x1f" "b"), "control 0x1f");
    cr_expect(!gw_request_id_valid("a\x7f" "b"), "DEL");
    cr_expect(!gw_request_id_valid("caf\xc3\xa9"), "UTF-8 e-acute");
    cr_expect(!gw_request_id_valid("\x80"), "byte 0x80");
    cr_expect(!gw_request_id_valid("a\xff"), "byte 0xff");
}

Test(request_id, every_byte)
{
    for (int c = 1; c < 256; c++) {
        char s[4] = { 'a', (char)c, 'b', '\0' };
        bool want = c > 0x20 && c < 0x7f && c != '"' && c != '\\';
        cr_expect_eq(gw_request_id_valid(s), want, "byte 0x%02x: expected %s", c,
                     want ? "valid" : "invalid");
    }
}

Test(syntax, tokens)
{
    const char *good[] = { "GET", "POST", "M-SEARCH", "X-Foo_Bar", "a.b", "!#$%&'*+-.^_`|~09AZaz" };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_expect(mg__http_token(good[i], strlen(good[i])), "\"%s\" is a token", good[i]);
    const char *bad[] = { "", "G@T", "Bad Header", "a:b", "x\ty", "(x)", "a,b", "a/b", "q?",
                          "{x}", "\x7f", "\xc3\xa9", "\"q\"", "a\\b", "a[1]", "a=b", "<x>" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect(!mg__http_token(bad[i], strlen(bad[i])), "\"%s\" is not a token", bad[i]);
}

Test(syntax, request_targets)
{
    cr_expect(gw_http_target_ok("/"));
    cr_expect(gw_http_target_ok("/echo/a%20b?x=1&y=%2F#frag"));
    cr_expect(gw_http_target_ok("*"));
    cr_expect(gw_http_target_ok("/caf\xc3\xa9")); /* raw UTF-8 is passed on as is */
    cr_expect(!gw_http_target_ok(""));
    cr_expect(!gw_http_target_ok("/a b"));
    cr_expect(!gw_http_target_ok("/a\x1b[31m"));
    cr_expect(!gw_http_target_ok("/a\x7f"));
    cr_expect(!gw_http_target_ok("/a\tb"));
    cr_expect(!gw_http_target_ok("/a\rb"));
}

Test(syntax, only_chunked_is_decoded)
{
    cr_expect(gw_te_is_chunked("chunked"));
    cr_expect(gw_te_is_chunked("Chunked"));
    cr_expect(gw_te_is_chunked(" chunked\t"));
    cr_expect(!gw_te_is_chunked("gzip, chunked"));
    cr_expect(!gw_te_is_chunked("chunked, gzip"));
    cr_expect(!gw_te_is_chunked("identity"));
    cr_expect(!gw_te_is_chunked("chunkedx"));
    cr_expect(!gw_te_is_chunked(""));
}

Test(syntax, numbers_from_the_command_line_are_digits_only)
{
    unsigned long long v = 7;
    cr_expect_eq(mg__parse_ulong("0", 10, &v), 0);
    cr_expect_eq(v, 0);
    cr_expect_eq(mg__parse_ulong("64", 64, &v), 0);
    cr_expect_eq(v, 64);
    const char *bad[] = { "", "65", "-1", "+5", " 5", "5 ", "2x", "abc", "0x10",
                          "99999999999999999999999" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(mg__parse_ulong(bad[i], 64, &v), -1, "\"%s\" was taken", bad[i]);
}

Test(hop_by_hop, what_a_request_does_not_forward)
{
    const char *dropped[] = { "Connection", "keep-alive", "TE", "Upgrade", "Proxy-Authorization",
                              "Content-Length", "expect", "X-Forwarded-For", "x-forwarded-proto",
                              "X-Request-Id", "X-Named" };
    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
        cr_expect(gw_header_not_forwarded(dropped[i], strlen(dropped[i]), "close, x-named", false),
                  "%s was forwarded", dropped[i]);
    const char *kept[] = { "Host", "Accept", "Content-Type", "X-Forwarded-Host", "Cookie" };
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        cr_expect(!gw_header_not_forwarded(kept[i], strlen(kept[i]), "close, x-named", false),
                  "%s was dropped", kept[i]);
    cr_expect(gw_header_not_forwarded("host", 4, NULL, true), "an authority replaces Host");
    /* Host is end to end whatever Connection says: the module must not get
     * curl's own "Host: module" instead of the client's. */
    cr_expect(!gw_header_not_forwarded("Host", 4, "close, host", false),
              "Connection: host dropped Host");
}
