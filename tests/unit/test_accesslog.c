/*
 * Unit tests of the access-log line (gateway/src/accesslog.h): the fields
 * in order, "-" for what is missing, the duration in ms with three decimals
 * exactly as printf's "%.3f" would write it.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "accesslog.h"

static char *line(const struct gw_access_entry *e)
{
    static struct mg_buf b;
    mg__buf_free(&b);
    mg__buf_init(&b, 1 << 16);
    cr_assert_eq(gw_access_format(&b, e), 0);
    return b.data;
}

Test(accesslog, all_fields_in_order)
{
    struct gw_access_entry e = {
        .time = "2026-11-22T18:13:27.123Z", .id = "abc", .client = "127.0.0.1",
        .method = "GET", .target = "/hello/x?y=1", .module = "hello", .cause = NULL,
        .incarnation = 3, .status = 200, .bytes = 8, .duration_us = 1234567,
    };
    cr_expect_str_eq(line(&e), "2026-11-22T18:13:27.123Z abc 127.0.0.1 GET /hello/x?y=1 hello 3 "
                               "200 8 1234.567 -\n");
}

Test(accesslog, missing_fields_are_dashes)
{
    struct gw_access_entry e = { .time = "T", .id = "", .status = 404, .cause = "no_route" };
    cr_expect_str_eq(line(&e), "T - - - - - - 404 0 0.000 no_route\n");
}

Test(accesslog, duration_matches_printf)
{
    const uint64_t cases[] = { 0, 1, 9, 10, 99, 100, 999, 1000, 1001, 12345, 999999,
                               1000000, UINT64_MAX / 2 };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gw_access_entry e = { .time = "T", .status = 200, .duration_us = cases[i] };
        char want[128];
        snprintf(want, sizeof(want), "T - - - - - - 200 0 %" PRIu64 ".%03u -\n", cases[i] / 1000,
                 (unsigned)(cases[i] % 1000));
        cr_expect_str_eq(line(&e), want, "duration %" PRIu64 " us", cases[i]);
    }
}

Test(accesslog, numbers_and_hex)
{
    char buf[32];
    *gw_fmt_u64(buf, 0) = '\0';
    cr_expect_str_eq(buf, "0");
    *gw_fmt_u64(buf, UINT64_MAX) = '\0';
    cr_expect_str_eq(buf, "18446744073709551615");
    gw_fmt_hex64(buf, 0x0123456789abcdefull);
    buf[16] = '\0';
    cr_expect_str_eq(buf, "0123456789abcdef");
}

Test(accesslog, refuses_past_the_cap)
{
    struct mg_buf b;
    mg__buf_init(&b, 16);
    struct gw_access_entry e = { .time = "2026-11-22T18:13:27.123Z", .status = 200 };
    cr_expect_eq(gw_access_format(&b, &e), -1);
    cr_expect_eq(b.len, 0);
    mg__buf_free(&b);
}

/* A target with a space, an ESC sequence or non-ASCII bytes must stay one
 * field and reach the file without a control byte (nginx's \xHH escaping,
 * plus the space that separates the fields). */
Test(accesslog, client_bytes_are_escaped)
{
    struct gw_access_entry e = {
        .time = "T", .id = "abc", .client = "127.0.0.1", .method = "G\x1b" "ET",
        .target = "/echo/a b\x1b[31mRED\"q\\\x7f\x80\xc3\xa9\t\r\n", .module = "echo",
        .incarnation = 1, .status = 200, .bytes = 2, .duration_us = 1000,
    };
    const char *got = line(&e);
    cr_expect_str_eq(got, "T abc 127.0.0.1 G\\x1BET "
                          "/echo/a\\x20b\\x1B[31mRED\\x22q\\x5C\\x7F\\x80\\xC3\\xA9\\x09\\x0D\\x0A "
                          "echo 1 200 2 1.000 -\n");
    /* Eleven fields, one newline, and nothing below 0x20 or above 0x7e. */
    size_t spaces = 0;
    for (const unsigned char *p = (const unsigned char *)got; *p != '\0'; p++) {
        spaces += *p == ' ';
        if (p[1] != '\0')
            cr_expect(*p >= 0x20 && *p < 0x7f, "raw byte 0x%02x in the line", *p);
    }
    cr_expect_eq(spaces, 10);
}

/* Every byte value from 1 to 255, in each text field: the escapes are
 * reversible and the line's size was reserved exactly (ASan catches an
 * overrun of the reservation). */
Test(accesslog, every_byte_round_trips)
{
    char all[256];
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    struct gw_access_entry e = {
        .time = "T", .id = all, .client = all, .method = all, .target = all,
        .module = all, .cause = all, .status = 200,
    };
    struct mg_buf b;
    mg__buf_init(&b, 1 << 16);
    cr_assert_eq(gw_access_format(&b, &e), 0);
    cr_assert(b.len > 0 && b.data[b.len - 1] == '\n');
    /* Decode the first field after the time, the id, back to the bytes. */
    const char *p = b.data + 2;
    char back[256];
    size_t n = 0;
    while (*p != ' ') {
        if (*p == '\\') {
            cr_assert_eq(p[1], 'x');
            unsigned v;
            cr_assert_eq(sscanf(p + 2, "%2X", &v), 1);
            back[n++] = (char)v;
            p += 4;
        } else {
            back[n++] = *p++;
        }
        cr_assert(n < sizeof(back));
    }
    back[n] = '\0';
    cr_expect_str_eq(back, all);
    /* 0x21..0x7e less '"' and '\\' are 92 bytes written as they are; the
     * other 163 take four; six such fields, plus the rest of the line. */
    cr_expect_eq(b.len, strlen("T ") + 6 * (92 + 163 * 4 + 1) + strlen("- 200 0 0.000 "));
    mg__buf_free(&b);
}
