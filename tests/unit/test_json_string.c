/*
 * Unit tests of the JSON string writer every error body goes through
 * (common/src/util.h): whatever bytes a message holds (a percent-decoded
 * path, a module's text), the body must stay valid JSON (RFC 8259 §8.1).
 */
#include <criterion/criterion.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* s written as a JSON string literal, NUL-terminated; caller frees. */
static char *quoted(const char *s, size_t len)
{
    struct mg_buf b;
    mg__buf_init(&b, 1 << 20);
    cr_assert_eq(mg__buf_json_string(&b, s, len), 0);
    cr_assert_eq(mg__buf_append(&b, "", 1), 0);
    return mg__buf_steal(&b, NULL);
}

/* The literal parses (jansson refuses text that is not UTF-8) back to `want`. */
static void expect_parses_to(const char *s, size_t len, const char *want)
{
    char *lit = quoted(s, len);
    json_error_t err;
    json_t *j = json_loads(lit, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    cr_assert_not_null(j, "%s does not parse: %s", lit, err.text);
    cr_assert(json_is_string(j));
    cr_expect_eq(json_string_length(j), strlen(want), "%s", lit);
    cr_expect_eq(memcmp(json_string_value(j), want, strlen(want)), 0, "%s", lit);
    json_decref(j);
    free(lit);
}

Test(json_string, ascii_and_escapes)
{
    const char *s = "a\"b\\c\nd\te\x01";
    char *lit = quoted(s, strlen(s));
    cr_expect_str_eq(lit, "\"a\\\"b\\\\c\\nd\\te\\u0001\"");
    free(lit);
    expect_parses_to(s, strlen(s), s);
}

Test(json_string, well_formed_utf8_is_kept_as_is)
{
    const char *s = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf \xf4\x8f\xbf\xbf";
    char *lit = quoted(s, strlen(s));
    cr_expect_eq(strlen(lit), strlen(s) + 2, "copied, not escaped: %s", lit);
    free(lit);
    expect_parses_to(s, strlen(s), s);
}

Test(json_string, bytes_that_are_not_utf8_become_the_replacement_character)
{
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        { "\xff\xfe is not set", "\xef\xbf\xbd\xef\xbf\xbd is not set" }, /* /echo/env/%FF%FE */
        { "\x80", "\xef\xbf\xbd" },                       /* a lone continuation byte */
        { "a\xc3", "a\xef\xbf\xbd" },                     /* cut short at the end */
        { "\xc3(", "\xef\xbf\xbd(" },                     /* cut short in the middle */
        { "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd" },       /* overlong '/' */
        { "\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* overlong, 3 bytes */
        { "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* a surrogate */
        { "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* > U+10FFFF */
        { "\xf5", "\xef\xbf\xbd" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_parses_to(cases[i].in, strlen(cases[i].in), cases[i].want);
}

Test(json_string, utf8_sequence_lengths)
{
    cr_expect_eq(mg__utf8_seq_len((const unsigned char *)"a", 1), 1);
    cr_expect_eq(mg__utf8_seq_len((const unsigned char *)"\xc2\x80", 2), 2);
    cr_expect_eq(mg__utf8_seq_len((const unsigned char *)"\xc2\x80", 1), 0);
    cr_expect_eq(mg__utf8_seq_len((const unsigned char *)"\xe0\xa0\x80", 3), 3);
    cr_expect_eq(mg__utf8_seq_len((const unsigned char *)"\xed\x9f\xbf", 3), 3);
    cr_expect_eq(mg__utf8_seq_len((const unsigned char *)"\xf0\x90\x80\x80", 4), 4);
    cr_expect_eq(mg__utf8_seq_len((const unsigned char *)"\xf0\x8f\xbf\xbf", 4), 0);
    cr_expect_eq(mg__utf8_seq_len((const unsigned char *)"\xc1\xbf", 2), 0);
}
