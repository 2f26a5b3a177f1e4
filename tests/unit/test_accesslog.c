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
