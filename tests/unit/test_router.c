/*
 * Unit tests of the route table (common/src/router.h): literals, captures,
 * the trailing wildcard, priorities, methods, 404 vs 405 with Allow,
 * duplicate detection and pattern validation.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

static struct mg_router *R;
static struct mg_route_match M;
static char Allow[256];
/* The routes' data: their own "METHOD PATTERN", freed after each test. */
static char *Tags[512];
static size_t NTags;

static void setup(void)
{
    R = mg_router_new();
    cr_assert_not_null(R, "mg_router_new");
    memset(&M, 0, sizeof(M));
    Allow[0] = '\0';
}

static void teardown(void)
{
    mg_router_free(R);
    R = NULL;
    for (size_t i = 0; i < NTags; i++)
        free(Tags[i]);
    NTags = 0;
}

TestSuite(router, .init = setup, .fini = teardown);

/* Adds a route whose data is its own description "METHOD PATTERN". */
static const char *add_ok(const char *method, const char *pattern)
{
    char *tag = NULL;
    cr_assert_lt(NTags, sizeof(Tags) / sizeof(Tags[0]));
    cr_assert_geq(asprintf(&tag, "%s %s", method, pattern), 0);
    Tags[NTags++] = tag;
    char err[256] = "";
    void *dup = NULL;
    int rc = mg_router_add(R, method, pattern, tag, &dup, err, sizeof(err));
    cr_assert_eq(rc, 0, "adding %s %s: rc %d, err \"%s\"", method, pattern, rc, err);
    return tag;
}

static enum mg_route_result match(const char *method, const char *path)
{
    memset(&M, 0xA5, sizeof(M));
    memset(Allow, 'Z', sizeof(Allow));
    return mg_router_match(R, method, path, strlen(path), &M, Allow, sizeof(Allow));
}

/* Asserts that METHOD PATH finds the route whose tag is `tag`. */
static void expect_found(const char *method, const char *path, const char *tag)
{
    enum mg_route_result res = match(method, path);
    cr_assert_eq(res, MG_ROUTE_FOUND, "%s %s: result %d, expected FOUND (%s)", method, path,
                 (int)res, tag);
    cr_assert_str_eq((const char *)M.data, tag, "%s %s: matched \"%s\", expected \"%s\"", method,
                     path, (const char *)M.data, tag);
    const char *space = strchr(tag, ' ');
    cr_assert_str_eq(M.pattern, space + 1, "%s %s: pattern", method, path);
}

static void expect_no_path(const char *method, const char *path)
{
    enum mg_route_result res = match(method, path);
    cr_assert_eq(res, MG_ROUTE_NO_PATH, "%s %s: result %d, expected NO_PATH", method, path,
                 (int)res);
}

static void expect_no_method(const char *method, const char *path, const char *allow)
{
    enum mg_route_result res = match(method, path);
    cr_assert_eq(res, MG_ROUTE_NO_METHOD, "%s %s: result %d, expected NO_METHOD", method, path,
                 (int)res);
    cr_assert_str_eq(Allow, allow, "%s %s: Allow", method, path);
}

/* Asserts capture i of the last match: its name and its text in `path`. */
static void expect_capture(const char *path, size_t i, const char *name, const char *value)
{
    cr_assert_lt(i, M.ncaptures, "capture %zu of %zu", i, M.ncaptures);
    cr_assert_str_eq(M.captures[i].name, name, "capture %zu name", i);
    size_t plen = strlen(path);
    cr_assert_leq(M.captures[i].off, plen, "capture %s offset", name);
    cr_assert_leq(M.captures[i].off + M.captures[i].len, plen, "capture %s end", name);
    cr_assert_eq(M.captures[i].len, strlen(value), "capture %s: length %zu, expected \"%s\"",
                 name, M.captures[i].len, value);
    cr_assert_eq(memcmp(path + M.captures[i].off, value, M.captures[i].len), 0,
                 "capture %s: got \"%.*s\", expected \"%s\"", name, (int)M.captures[i].len,
                 path + M.captures[i].off, value);
}

static void expect_add_einval(const char *method, const char *pattern)
{
    char err[256] = "";
    void *dup = (void *)&dup;
    int rc = mg_router_add(R, method, pattern, (void *)"x", &dup, err, sizeof(err));
    cr_assert_eq(rc, -EINVAL, "adding %s %s: rc %d, expected -EINVAL", method ? method : "(null)",
                 pattern ? pattern : "(null)", rc);
    cr_assert_neq(err[0], '\0', "adding %s %s: err left empty", method ? method : "(null)",
                  pattern ? pattern : "(null)");
}

static void expect_pattern_einval(const char *pattern)
{
    char err[256] = "";
    int rc = mg_router_check_pattern(pattern, err, sizeof(err));
    cr_assert_eq(rc, -EINVAL, "check \"%s\": rc %d", pattern ? pattern : "(null)", rc);
    cr_assert_neq(err[0], '\0', "check \"%s\": err left empty", pattern ? pattern : "(null)");
    expect_add_einval("GET", pattern);
}

/* ---- literal ------------------------------------------------------------ */

Test(router, empty_table_has_no_path)
{
    expect_no_path("GET", "/");
    expect_no_path("GET", "/anything");
}

Test(router, literal_match)
{
    const char *hw = add_ok("GET", "/hello/world");
    const char *abc = add_ok("GET", "/a/b/c");
    const char *root = add_ok("GET", "/");
    expect_found("GET", "/hello/world", hw);
    cr_assert_eq(M.ncaptures, 0);
    expect_found("GET", "/a/b/c", abc);
    expect_found("GET", "/", root);
    expect_no_path("GET", "/hello");
    expect_no_path("GET", "/hello/worl");
    expect_no_path("GET", "/hello/worlds");
    expect_no_path("GET", "/hello/world/");
    expect_no_path("GET", "/hello/world/x");
    expect_no_path("GET", "/Hello/world");
    expect_no_path("GET", "/a/b");
    expect_no_path("GET", "//");
}

Test(router, match_uses_pathlen_not_nul)
{
    const char *t = add_ok("GET", "/users/{id}");
    const char *path = "/users/42?x=1";
    memset(&M, 0, sizeof(M));
    enum mg_route_result res =
        mg_router_match(R, "GET", path, strlen("/users/42"), &M, Allow, sizeof(Allow));
    cr_assert_eq(res, MG_ROUTE_FOUND);
    cr_assert_str_eq((const char *)M.data, t);
    cr_assert_eq(M.ncaptures, 1);
    cr_assert_eq(M.captures[0].off, 7);
    cr_assert_eq(M.captures[0].len, 2);
    /* A path cut in the middle of a literal does not match it. */
    add_ok("GET", "/abcdef");
    res = mg_router_match(R, "GET", "/abcdef", 4, &M, NULL, 0);
    cr_assert_eq(res, MG_ROUTE_NO_PATH);
}

/* ---- captures ----------------------------------------------------------- */

Test(router, captures_values_offsets_names)
{
    const char *t = add_ok("GET", "/users/{id}/posts/{post_id}");
    const char *path = "/users/42/posts/abc_9";
    expect_found("GET", path, t);
    cr_assert_eq(M.ncaptures, 2);
    expect_capture(path, 0, "id", "42");
    expect_capture(path, 1, "post_id", "abc_9");
    cr_assert_eq(M.captures[0].off, 7);
    cr_assert_eq(M.captures[1].off, 16);
    cr_assert_eq(M.captures[1].len, 5);
}

Test(router, capture_does_not_match_empty_or_missing_segment)
{
    add_ok("GET", "/users/{id}/posts/{post_id}");
    expect_no_path("GET", "/users//posts/x");
    expect_no_path("GET", "/users/1/posts/");
    expect_no_path("GET", "/users/1/posts");
    expect_no_path("GET", "/users/1/posts/2/3");
    expect_no_path("GET", "/users/1/comments/2");
}

Test(router, capture_matches_any_segment_text)
{
    const char *t = add_ok("GET", "/hello/{name}");
    const char *paths[] = { "/hello/bob", "/hello/x", "/hello/a.b-c~d", "/hello/%E2%82%AC",
                            "/hello/{name}", "/hello/*" };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        expect_found("GET", paths[i], t);
        cr_assert_eq(M.ncaptures, 1);
        expect_capture(paths[i], 0, "name", paths[i] + 7);
    }
}

Test(router, sixteen_captures_match)
{
    char pattern[512] = "", path[512] = "", want[16][8];
    for (int i = 0; i < 16; i++) {
        snprintf(pattern + strlen(pattern), sizeof(pattern) - strlen(pattern), "/{c%d}", i);
        snprintf(path + strlen(path), sizeof(path) - strlen(path), "/v%d", i);
        snprintf(want[i], sizeof(want[i]), "v%d", i);
    }
    const char *t = add_ok("GET", pattern);
    expect_found("GET", path, t);
    cr_assert_eq(M.ncaptures, 16);
    for (int i = 0; i < 16; i++) {
        char name[8];
        snprintf(name, sizeof(name), "c%d", i);
        expect_capture(path, (size_t)i, name, want[i]);
    }
}

/* ---- wildcard ----------------------------------------------------------- */

Test(router, wildcard_matches_one_or_more_segments)
{
    const char *t = add_ok("*", "/echo/*");
    const char *path;

    path = "/echo/";
    expect_found("GET", path, t);
    cr_assert_eq(M.ncaptures, 1);
    expect_capture(path, 0, "*", "");
    cr_assert_eq(M.captures[0].off, 6);

    path = "/echo/a";
    expect_found("GET", path, t);
    expect_capture(path, 0, "*", "a");

    path = "/echo/a/b";
    expect_found("POST", path, t);
    expect_capture(path, 0, "*", "a/b");

    path = "/echo/a/b/c/";
    expect_found("DELETE", path, t);
    expect_capture(path, 0, "*", "a/b/c/");

    expect_no_path("GET", "/echo");
    expect_no_path("GET", "/echoes/a");
    expect_no_path("GET", "/ech/a");
    expect_no_path("GET", "/");
}

Test(router, wildcard_at_root)
{
    const char *t = add_ok("GET", "/*");
    expect_found("GET", "/", t);
    expect_capture("/", 0, "*", "");
    expect_found("GET", "/a/b", t);
    expect_capture("/a/b", 0, "*", "a/b");
}

Test(router, wildcard_after_capture)
{
    const char *t = add_ok("GET", "/files/{bucket}/*");
    const char *path = "/files/b1/x/y.txt";
    expect_found("GET", path, t);
    cr_assert_eq(M.ncaptures, 2);
    expect_capture(path, 0, "bucket", "b1");
    expect_capture(path, 1, "*", "x/y.txt");
    expect_no_path("GET", "/files/b1");
    expect_no_path("GET", "/files//x");
}

Test(router, fifteen_captures_and_wildcard)
{
    char pattern[512] = "", path[512] = "";
    for (int i = 0; i < 15; i++) {
        snprintf(pattern + strlen(pattern), sizeof(pattern) - strlen(pattern), "/{c%d}", i);
        snprintf(path + strlen(path), sizeof(path) - strlen(path), "/v%d", i);
    }
    strcat(pattern, "/*");
    strcat(path, "/rest/of/it");
    const char *t = add_ok("GET", pattern);
    expect_found("GET", path, t);
    cr_assert_eq(M.ncaptures, 16);
    expect_capture(path, 14, "c14", "v14");
    expect_capture(path, 15, "*", "rest/of/it");
}

/* ---- priorities --------------------------------------------------------- */

static void check_hello(const char *ticks, const char *name)
{
    expect_found("GET", "/hello/ticks", ticks);
    cr_assert_eq(M.ncaptures, 0);
    expect_found("GET", "/hello/bob", name);
    expect_capture("/hello/bob", 0, "name", "bob");
    expect_found("GET", "/hello/tick", name);
    expect_found("GET", "/hello/tickss", name);
}

Test(router, literal_beats_capture_capture_declared_first)
{
    const char *name = add_ok("GET", "/hello/{name}");
    const char *ticks = add_ok("GET", "/hello/ticks");
    check_hello(ticks, name);
}

Test(router, literal_beats_capture_literal_declared_first)
{
    const char *ticks = add_ok("GET", "/hello/ticks");
    const char *name = add_ok("GET", "/hello/{name}");
    check_hello(ticks, name);
}

Test(router, capture_beats_wildcard)
{
    const char *wild = add_ok("GET", "/a/*");
    const char *cap = add_ok("GET", "/a/{x}");
    expect_found("GET", "/a/b", cap);
    expect_capture("/a/b", 0, "x", "b");
    expect_found("GET", "/a/b/c", wild);
    expect_capture("/a/b/c", 0, "*", "b/c");
    /* The capture cannot take an empty segment; the wildcard can. */
    expect_found("GET", "/a/", wild);
}

Test(router, literal_beats_wildcard)
{
    const char *wild = add_ok("*", "/echo/*");
    const char *lit = add_ok("GET", "/echo/raw");
    expect_found("GET", "/echo/raw", lit);
    expect_found("GET", "/echo/raw2", wild);
    expect_found("GET", "/echo/raw/x", wild);
}

Test(router, priority_is_segment_by_segment_from_the_left)
{
    /* The literal first segment wins even though the other route is
     * literal further right. */
    const char *lit_then_cap = add_ok("GET", "/a/{x}");
    add_ok("GET", "/{y}/b");
    expect_found("GET", "/a/b", lit_then_cap);
}

Test(router, backtracks_from_literal_to_capture)
{
    const char *lit = add_ok("GET", "/a/b/c");
    const char *cap = add_ok("GET", "/a/{x}/d");
    expect_found("GET", "/a/b/c", lit);
    expect_found("GET", "/a/b/d", cap);
    cr_assert_eq(M.ncaptures, 1);
    expect_capture("/a/b/d", 0, "x", "b");
}

Test(router, backtracks_from_capture_to_wildcard_and_drops_its_capture)
{
    const char *cap = add_ok("GET", "/a/{x}/c");
    const char *wild = add_ok("GET", "/a/*");
    expect_found("GET", "/a/b/c", cap);
    expect_capture("/a/b/c", 0, "x", "b");
    expect_found("GET", "/a/b/z", wild);
    cr_assert_eq(M.ncaptures, 1, "the abandoned capture must not be reported");
    expect_capture("/a/b/z", 0, "*", "b/z");
}

Test(router, deeper_wildcard_beats_shallower)
{
    const char *shallow = add_ok("GET", "/*");
    const char *deep = add_ok("GET", "/api/*");
    expect_found("GET", "/api/v1/x", deep);
    expect_capture("/api/v1/x", 0, "*", "v1/x");
    expect_found("GET", "/other/x", shallow);
    expect_found("GET", "/api", shallow);
}

/* ---- methods ------------------------------------------------------------ */

Test(router, method_fall_through_to_less_specific_route)
{
    const char *raw = add_ok("POST", "/echo/raw");
    const char *wild = add_ok("*", "/echo/*");
    expect_found("POST", "/echo/raw", raw);
    expect_found("GET", "/echo/raw", wild);
    expect_capture("/echo/raw", 0, "*", "raw");
    expect_found("PUT", "/echo/raw", wild);
}

Test(router, method_fall_through_from_literal_to_capture)
{
    const char *post = add_ok("POST", "/hello/ticks");
    const char *get = add_ok("GET", "/hello/{name}");
    expect_found("GET", "/hello/ticks", get);
    expect_capture("/hello/ticks", 0, "name", "ticks");
    expect_found("POST", "/hello/ticks", post);
    expect_no_method("POST", "/hello/bob", "GET, HEAD");
}

Test(router, method_star_matches_every_method)
{
    const char *t = add_ok("*", "/any");
    const char *methods[] = { "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
                              "PROPFIND", "M-SEARCH" };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        expect_found(methods[i], "/any", t);
}

/* Literal segments compare as URIs do (RFC 3986 §6.2.2): a
 * percent-encoded unreserved character is that character; an encoded
 * slash or other reserved character is not. */
Test(router, percent_encoded_unreserved_characters_match_literals)
{
    const char *ticks = add_ok("GET", "/hello/ticks");
    const char *name = add_ok("GET", "/hello/{name}");
    const char *ab = add_ok("GET", "/a/b");
    expect_found("GET", "/hello/%74icks", ticks);
    expect_found("GET", "/hello/ti%63%6Bs", ticks);
    expect_found("GET", "/hello/ti%63%6bs", ticks);
    expect_found("GET", "/%68ello/ticks", ticks);
    expect_found("GET", "/hello/%54icks", name); /* "T": case counts */
    expect_found("GET", "/hello/ticks%2F", name);
    expect_no_path("GET", "/a%2Fb");
    expect_found("GET", "/a/%62", ab);
}

Test(router, method_is_case_sensitive)
{
    add_ok("GET", "/x");
    expect_no_method("get", "/x", "GET, HEAD");
}

Test(router, head_matches_get_routes)
{
    const char *get = add_ok("GET", "/x");
    const char *post = add_ok("POST", "/y");
    expect_found("HEAD", "/x", get);
    expect_no_method("HEAD", "/y", "POST");
    cr_assert_eq(match("GET", "/y"), MG_ROUTE_NO_METHOD);
    (void)post;
}

Test(router, head_route_alongside_get_route)
{
    const char *head = add_ok("HEAD", "/z");
    const char *get = add_ok("GET", "/z");
    expect_found("HEAD", "/z", head);
    expect_found("GET", "/z", get);
}

Test(router, get_does_not_match_head_route)
{
    add_ok("HEAD", "/z");
    expect_no_method("GET", "/z", "HEAD");
}

Test(router, good_methods_accepted)
{
    add_ok("M-SEARCH", "/ssdp");
    add_ok("PROPFIND", "/dav");
    add_ok("*", "/all");
    expect_found("M-SEARCH", "/ssdp", "M-SEARCH /ssdp");
}

Test(router, bad_methods_rejected)
{
    expect_add_einval("", "/a");
    expect_add_einval(NULL, "/a");
    expect_add_einval("get", "/a");
    expect_add_einval("Get", "/a");
    expect_add_einval("GE T", "/a");
    expect_add_einval("GET*", "/a");
    expect_add_einval("**", "/a");
    expect_add_einval("G1", "/a");
    expect_add_einval("GET,POST", "/a");
    expect_no_path("GET", "/a");
}

/* ---- 404 vs 405 and Allow ----------------------------------------------- */

Test(router, no_path_vs_no_method_with_allow)
{
    add_ok("GET", "/a");
    add_ok("POST", "/a");
    expect_no_method("DELETE", "/a", "GET, HEAD, POST");
    expect_no_method("PUT", "/a", "GET, HEAD, POST");
    expect_no_path("DELETE", "/b");
    cr_assert_str_eq(Allow, "", "Allow is emptied on NO_PATH");
}

Test(router, allow_is_deduplicated_across_routes)
{
    add_ok("GET", "/b/{x}");
    add_ok("POST", "/b/{x}");
    add_ok("GET", "/b/*");
    add_ok("POST", "/b/*");
    add_ok("PUT", "/b/lit");
    expect_no_method("DELETE", "/b/c", "GET, HEAD, POST");
    expect_no_method("DELETE", "/b/c/d", "GET, HEAD, POST");
    expect_no_method("DELETE", "/b/lit", "PUT, GET, HEAD, POST");
}

Test(router, allow_fits_in_allow_max)
{
    const char *methods[] = { "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS" };
    for (size_t i = 0; i < 6; i++) {
        add_ok(methods[i], "/m/{x}");
        if (i < 3)
            add_ok(methods[i], "/m/*");
    }
    const char *full = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";
    size_t max = mg_router_allow_max(R);
    cr_assert_geq(max, strlen(full) + 1);
    char *allow = malloc(max);
    cr_assert_not_null(allow);
    enum mg_route_result res = mg_router_match(R, "TRACE", "/m/q", 4, &M, allow, max);
    cr_assert_eq(res, MG_ROUTE_NO_METHOD);
    cr_assert_str_eq(allow, full);
    free(allow);
}

Test(router, allow_truncated_to_allowlen)
{
    add_ok("GET", "/a");
    add_ok("POST", "/a");
    char small[6];
    memset(small, 'Z', sizeof(small));
    enum mg_route_result res = mg_router_match(R, "PUT", "/a", 2, &M, small, sizeof(small));
    cr_assert_eq(res, MG_ROUTE_NO_METHOD);
    cr_assert_lt(strnlen(small, sizeof(small)), sizeof(small), "Allow must stay NUL-terminated");
    cr_assert_str_eq(small, "GET");
}

Test(router, allow_may_be_null)
{
    add_ok("GET", "/a");
    enum mg_route_result res = mg_router_match(R, "PUT", "/a", 2, &M, NULL, 0);
    cr_assert_eq(res, MG_ROUTE_NO_METHOD);
}

Test(router, method_star_never_gives_405)
{
    add_ok("*", "/s/*");
    add_ok("GET", "/s/x");
    expect_found("POST", "/s/x", "* /s/*");
}

/* ---- duplicates --------------------------------------------------------- */

static void expect_dup(const char *method, const char *pattern, const char *first_tag)
{
    char err[256] = "";
    void *dup = NULL;
    int rc = mg_router_add(R, method, pattern, (void *)"second", &dup, err, sizeof(err));
    cr_assert_eq(rc, -EEXIST, "adding %s %s: rc %d, expected -EEXIST", method, pattern, rc);
    cr_assert_eq(dup, first_tag, "dup_data must be the first route's data");
    const char *fpat = strchr(first_tag, ' ') + 1;
    cr_assert_not_null(strstr(err, pattern), "err \"%s\" must name %s", err, pattern);
    cr_assert_not_null(strstr(err, fpat), "err \"%s\" must name %s", err, fpat);
    cr_assert_not_null(strstr(err, method), "err \"%s\" must name %s", err, method);
}

Test(router, duplicate_same_shape_different_capture_names)
{
    const char *first = add_ok("GET", "/a/{x}");
    expect_dup("GET", "/a/{y}", first);
    /* The table is unchanged. */
    expect_found("GET", "/a/5", first);
    expect_capture("/a/5", 0, "x", "5");
}

Test(router, duplicate_exact)
{
    const char *first = add_ok("GET", "/a/b");
    expect_dup("GET", "/a/b", first);
    const char *w = add_ok("PUT", "/w/*");
    expect_dup("PUT", "/w/*", w);
}

Test(router, duplicate_star_method_conflicts_with_get)
{
    const char *star = add_ok("*", "/b");
    expect_dup("GET", "/b", star);
    const char *get = add_ok("GET", "/c/{id}");
    expect_dup("*", "/c/{other}", get);
}

Test(router, duplicate_with_null_dup_data)
{
    add_ok("GET", "/a");
    char err[128] = "";
    cr_assert_eq(mg_router_add(R, "GET", "/a", NULL, NULL, err, sizeof(err)), -EEXIST);
    cr_assert_neq(err[0], '\0');
    cr_assert_eq(mg_router_add(R, "GET", "/a", NULL, NULL, NULL, 0), -EEXIST);
}

Test(router, not_duplicates)
{
    add_ok("GET", "/a/{x}");
    add_ok("POST", "/a/{y}");
    add_ok("GET", "/a/lit");
    add_ok("GET", "/a/*");
    add_ok("GET", "/a");
    add_ok("GET", "/a/");
    add_ok("GET", "/a/{x}/*");
    add_ok("HEAD", "/a/{z}");
    add_ok("GET", "/{a}/{x}");
    expect_found("GET", "/a/", "GET /a/");
    expect_found("GET", "/a", "GET /a");
    expect_found("GET", "/a/1/2", "GET /a/{x}/*");
    expect_found("GET", "/q/1", "GET /{a}/{x}");
}

Test(router, many_routes)
{
    char pat[64];
    for (int i = 0; i < 300; i++) {
        snprintf(pat, sizeof(pat), "/r%d/{id}", i);
        add_ok("GET", pat);
    }
    for (int i = 0; i < 300; i += 7) {
        char path[64], tag[80];
        snprintf(path, sizeof(path), "/r%d/xyz", i);
        snprintf(tag, sizeof(tag), "GET /r%d/{id}", i);
        expect_found("GET", path, tag);
        expect_capture(path, 0, "id", "xyz");
    }
    expect_no_path("GET", "/r300/xyz");
}

/* ---- bad patterns ------------------------------------------------------- */

Test(router, bad_patterns_rejected)
{
    expect_pattern_einval("");
    expect_pattern_einval("noslash");
    expect_pattern_einval("a/b");
    expect_pattern_einval("*");
    expect_pattern_einval("{x}");
    expect_pattern_einval("/a/*/b");
    expect_pattern_einval("/*/");
    expect_pattern_einval("/a/**");
    expect_pattern_einval("/a/b*");
    expect_pattern_einval("/a/{}");
    expect_pattern_einval("/a/{a-b}");
    expect_pattern_einval("/a/{a b}");
    expect_pattern_einval("/a/{a.b}");
    expect_pattern_einval("/a/{x");
    expect_pattern_einval("/a/x}");
    expect_pattern_einval("/a{b}");
    expect_pattern_einval("/a/{b}c");
    expect_pattern_einval("/a/{{b}}");
    expect_pattern_einval("/a/{x}/{x}");
    expect_pattern_einval("/{id}/a/{id}/*");
    expect_pattern_einval("/a?b");
    expect_pattern_einval("/a#b");
    expect_pattern_einval("/a b");
    /* Nothing was added. */
    expect_no_path("GET", "/a/b");
    expect_no_path("GET", "/a/x");
}

Test(router, null_pattern_rejected)
{
    char err[128] = "";
    cr_assert_eq(mg_router_check_pattern(NULL, err, sizeof(err)), -EINVAL);
    cr_assert_neq(err[0], '\0');
}

Test(router, bad_pattern_err_may_be_null)
{
    cr_assert_eq(mg_router_check_pattern("x", NULL, 0), -EINVAL);
    cr_assert_eq(mg_router_add(R, "GET", "x", NULL, NULL, NULL, 0), -EINVAL);
}

Test(router, good_patterns_accepted)
{
    const char *good[] = { "/", "/a", "/a/", "/a/b/c", "/{x}", "/{X_1}/{y2}", "/*", "/a/*",
                           "/{ab}/{a}", "/{a}/{ab}", "/a%20b", "/a-b.c~d_e", "/a//b",
                           "/:colon", "/a/{x}/*" };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char err[128] = "";
        cr_assert_eq(mg_router_check_pattern(good[i], err, sizeof(err)), 0,
                     "\"%s\" rejected: %s", good[i], err);
        /* Some of these share a shape, so each gets its own table. */
        mg_router_free(R);
        R = mg_router_new();
        cr_assert_not_null(R);
        add_ok("GET", good[i]);
    }
}

Test(router, more_than_sixteen_captures_rejected)
{
    char pattern[512] = "";
    for (int i = 0; i < 17; i++)
        snprintf(pattern + strlen(pattern), sizeof(pattern) - strlen(pattern), "/{c%d}", i);
    expect_pattern_einval(pattern);

    /* 16 captures plus the wildcard no longer fit in a match either. */
    char pattern2[512] = "";
    for (int i = 0; i < 16; i++)
        snprintf(pattern2 + strlen(pattern2), sizeof(pattern2) - strlen(pattern2), "/{c%d}", i);
    strcat(pattern2, "/*");
    expect_pattern_einval(pattern2);
}

Test(router, short_err_buffer_is_terminated)
{
    char err[8];
    memset(err, 'Z', sizeof(err));
    cr_assert_eq(mg_router_check_pattern("/a/{}", err, sizeof(err)), -EINVAL);
    cr_assert_lt(strnlen(err, sizeof(err)), sizeof(err));
}

/* ---- paths -------------------------------------------------------------- */

Test(router, path_without_leading_slash_is_no_path)
{
    add_ok("*", "/*");
    add_ok("GET", "/hello");
    expect_no_path("GET", "hello");
    expect_no_path("GET", "*");
    expect_no_path("GET", "");
    cr_assert_eq(mg_router_match(R, "GET", "/hello", 0, &M, Allow, sizeof(Allow)),
                 MG_ROUTE_NO_PATH);
}

Test(router, percent_encoded_segments_matched_raw)
{
    const char *lit = add_ok("GET", "/a%20b");
    const char *cap = add_ok("GET", "/f/{name}");
    expect_found("GET", "/a%20b", lit);
    expect_no_path("GET", "/a b");
    expect_no_path("GET", "/a%2520b");
    expect_no_path("GET", "/a%20B");

    expect_found("GET", "/f/x%2Fy", cap);
    expect_capture("/f/x%2Fy", 0, "name", "x%2Fy");
    expect_no_path("GET", "/f/x/y");
    /* %2F does not make a literal segment boundary either. */
    expect_no_path("GET", "%2Ff%2Fx");
}

Test(router, trailing_slash_is_an_empty_segment)
{
    const char *a = add_ok("GET", "/a");
    const char *cap = add_ok("GET", "/a/{x}");
    expect_found("GET", "/a", a);
    expect_no_path("GET", "/a/");
    expect_found("GET", "/a/b", cap);
}

Test(router, free_null_is_harmless)
{
    mg_router_free(NULL);
    add_ok("GET", "/still/works");
    expect_found("GET", "/still/works", "GET /still/works");
}
