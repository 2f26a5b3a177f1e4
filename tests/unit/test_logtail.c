/*
 * Unit tests of the log tail reader (gateway/src/logtail.h): the offset
 * arithmetic over buffers, then real files read backwards in blocks.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logtail.h"

/* ---- gw_tail_offset ----------------------------------------------------- */

static size_t off(const char *text, unsigned nlines)
{
    return gw_tail_offset(text, strlen(text), nlines);
}

Test(tail_offset, empty_text)
{
    cr_assert_eq(gw_tail_offset("", 0, 0), 0);
    cr_assert_eq(gw_tail_offset("", 0, 1), 0);
    cr_assert_eq(gw_tail_offset("", 0, 20), 0);
    cr_assert_eq(gw_tail_offset(NULL, 0, 3), 0);
}

Test(tail_offset, zero_lines_is_the_end)
{
    cr_assert_eq(off("a\nb\nc\n", 0), 6);
    cr_assert_eq(off("a\nb\nc", 0), 5);
    cr_assert_eq(off("\n", 0), 1);
}

Test(tail_offset, trailing_newline)
{
    const char *t = "a\nb\nc\n";
    cr_assert_eq(off(t, 1), 4, "\"c\\n\"");
    cr_assert_eq(off(t, 2), 2, "\"b\\nc\\n\"");
    cr_assert_eq(off(t, 3), 0, "exactly three lines: all");
    cr_assert_eq(off(t, 4), 0, "fewer lines than asked: all");
    cr_assert_eq(off(t, 1000), 0);
}

Test(tail_offset, no_trailing_newline)
{
    const char *t = "a\nb\nc";
    cr_assert_eq(off(t, 1), 4, "the partial last line counts as a line");
    cr_assert_eq(off(t, 2), 2);
    cr_assert_eq(off(t, 3), 0);
    cr_assert_eq(off(t, 4), 0);
}

Test(tail_offset, single_line)
{
    cr_assert_eq(off("abc", 1), 0);
    cr_assert_eq(off("abc\n", 1), 0);
    cr_assert_eq(off("abc\n", 2), 0);
    cr_assert_eq(off("\n", 1), 0);
}

Test(tail_offset, empty_lines)
{
    cr_assert_eq(off("\n\n\n", 1), 2);
    cr_assert_eq(off("\n\n\n", 2), 1);
    cr_assert_eq(off("\n\n\n", 3), 0);
    cr_assert_eq(off("a\n\nb\n", 2), 2, "\"\\nb\\n\"");
    cr_assert_eq(off("a\n\n", 1), 2, "the empty last line");
    cr_assert_eq(off("a\n\n", 2), 0);
}

Test(tail_offset, long_lines)
{
    char buf[3 * 1001 + 1];
    for (int i = 0; i < 3; i++) {
        memset(buf + i * 1001, 'a' + i, 1000);
        buf[i * 1001 + 1000] = '\n';
    }
    buf[3 * 1001] = '\0';
    cr_assert_eq(off(buf, 1), 2002);
    cr_assert_eq(off(buf, 2), 1001);
}

Test(tail_offset, uses_len_not_nul)
{
    const char *t = "a\nb\nc\nd\n";
    cr_assert_eq(gw_tail_offset(t, 4, 1), 2, "only \"a\\nb\\n\" is the text");
    cr_assert_eq(gw_tail_offset(t, 3, 1), 2, "\"a\\nb\": partial last line");
}

/* ---- gw_log_tail on files ----------------------------------------------- */

static char Dir[256];
static char Path[300];
/* Buffers of the running test, freed by teardown even when an assertion
 * ends the test early (so that a failure does not also report a leak). */
static char *Text, *Out;

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(Dir, sizeof(Dir), "%s/mg_logtail_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    cr_assert_not_null(mkdtemp(Dir), "mkdtemp %s: %s", Dir, strerror(errno));
    snprintf(Path, sizeof(Path), "%s/test.log", Dir);
}

static void teardown(void)
{
    free(Text);
    free(Out);
    Text = Out = NULL;
    unlink(Path);
    rmdir(Dir);
}

TestSuite(log_tail, .init = setup, .fini = teardown);

static void write_file(const char *text, size_t len)
{
    FILE *f = fopen(Path, "w");
    cr_assert_not_null(f, "fopen %s: %s", Path, strerror(errno));
    cr_assert_eq(fwrite(text, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

/* "line 0\nline 1\n...": returns the text, caller frees. */
static char *numbered_lines(unsigned n, size_t *len)
{
    char *text = NULL;
    FILE *m = open_memstream(&text, len);
    cr_assert_not_null(m);
    for (unsigned i = 0; i < n; i++)
        fprintf(m, "line %u\n", i);
    cr_assert_eq(fclose(m), 0);
    return text;
}

/* Lines of varied lengths (0 to 200 bytes), so that lines straddle the
 * reader's block boundaries in every possible way. */
static char *varied_lines(unsigned n, bool final_newline, size_t *len)
{
    char *text = NULL;
    FILE *m = open_memstream(&text, len);
    cr_assert_not_null(m);
    unsigned x = 12345;
    for (unsigned i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        unsigned l = (x >> 16) % 201;
        fprintf(m, "%u:", i);
        for (unsigned j = 0; j < l; j++)
            fputc('a' + (int)((i + j) % 26), m);
        if (i + 1 < n || final_newline)
            fputc('\n', m);
    }
    cr_assert_eq(fclose(m), 0);
    return text;
}

/* The correct answer, computed naively from the whole text: the last
 * `nlines` lines; if longer than max_bytes, the longest suffix of those
 * that starts at a line start and fits, or if none does (the last line
 * alone is longer), the last max_bytes bytes. Returns the offset into text. */
static size_t reference_tail(const char *text, size_t len, unsigned nlines, size_t max_bytes)
{
    size_t start = len;
    if (nlines > 0) {
        /* Walk back over nlines line starts. */
        size_t end = len;
        if (end > 0 && text[end - 1] == '\n')
            end--;
        unsigned seen = 0;
        start = 0;
        for (size_t i = end; i > 0; i--) {
            if (text[i - 1] == '\n' && ++seen == nlines) {
                start = i;
                break;
            }
        }
    }
    if (len - start > max_bytes) {
        size_t s = len - max_bytes;
        while (s < len && text[s - 1] != '\n')
            s++;
        start = s < len ? s : len - max_bytes;
    }
    return start;
}

static void expect_tail(const char *text, size_t len, unsigned nlines, size_t max_bytes)
{
    size_t want = reference_tail(text, len, nlines, max_bytes);
    char *out = (char *)"untouched";
    size_t olen = 12345;
    int rc = gw_log_tail(Path, nlines, max_bytes, &out, &olen);
    Out = rc == 0 ? out : NULL;
    cr_assert_eq(rc, 0, "gw_log_tail(%u lines, max %zu) = %d", nlines, max_bytes, rc);
    cr_assert_not_null(out);
    cr_assert_eq(out[olen], '\0', "NUL-terminated");
    cr_assert_leq(olen, max_bytes, "file of %zu bytes, %u lines, max %zu: got %zu bytes", len,
                  nlines, max_bytes, olen);
    cr_assert_eq(olen, len - want,
                 "file of %zu bytes, %u lines, max %zu: got %zu bytes, expected %zu", len,
                 nlines, max_bytes, olen, len - want);
    cr_assert_eq(memcmp(out, text + want, olen), 0,
                 "file of %zu bytes, %u lines, max %zu: wrong text", len, nlines, max_bytes);
    free(out);
    Out = NULL;
}

Test(log_tail, last_20_of_100000_lines)
{
    size_t len;
    char *text = Text = numbered_lines(100000, &len);
    write_file(text, len);
    char *out = NULL;
    size_t olen = 0;
    int rc = gw_log_tail(Path, 20, 1 << 20, &out, &olen);
    Out = out;
    cr_assert_eq(rc, 0);
    cr_assert_not_null(out);
    char want[512] = "";
    for (unsigned i = 99980; i < 100000; i++)
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "line %u\n", i);
    cr_assert_eq(olen, strlen(want));
    cr_assert_str_eq(out, want);
    free(out);
    Out = NULL;
}

Test(log_tail, many_lines_across_blocks)
{
    size_t len;
    char *text = Text = numbered_lines(100000, &len);
    write_file(text, len);
    const unsigned counts[] = { 1, 2, 100, 700, 743, 744, 745, 1000, 5000, 20000, 99999,
                                100000, 100001, 1000000 };
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
        expect_tail(text, len, counts[i], (size_t)1 << 30);
}

Test(log_tail, varied_line_lengths)
{
    for (int fin = 0; fin < 2; fin++) {
        size_t len;
        char *text = Text = varied_lines(3000, fin, &len);
        write_file(text, len);
        for (unsigned n = 0; n < 3100; n += (n < 120 ? 1 : 37))
            expect_tail(text, len, n, (size_t)1 << 30);
        free(Text);
        Text = NULL;
    }
}

Test(log_tail, zero_lines_is_empty)
{
    size_t len;
    char *text = Text = numbered_lines(100, &len);
    write_file(text, len);
    char *out = NULL;
    size_t olen = 99;
    int rc = gw_log_tail(Path, 0, 4096, &out, &olen);
    Out = out;
    cr_assert_eq(rc, 0);
    cr_assert_not_null(out);
    cr_assert_eq(olen, 0);
    cr_assert_str_eq(out, "");
    free(out);
    Out = NULL;
}

Test(log_tail, fewer_lines_than_asked_gives_the_whole_file)
{
    const char *text = "one\ntwo\nthree\n";
    write_file(text, strlen(text));
    char *out = NULL;
    size_t olen = 0;
    int rc = gw_log_tail(Path, 20, 4096, &out, &olen);
    Out = out;
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(out, text);
    cr_assert_eq(olen, strlen(text));
    free(out);
    Out = NULL;
}

Test(log_tail, partial_last_line_counts)
{
    const char *text = "one\ntwo\nthree";
    write_file(text, strlen(text));
    char *out = NULL;
    size_t olen = 0;
    int rc = gw_log_tail(Path, 2, 4096, &out, &olen);
    Out = out;
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(out, "two\nthree");
    cr_assert_eq(olen, 9);
    free(out);
    Out = NULL;
}

Test(log_tail, empty_file)
{
    write_file("", 0);
    char *out = NULL;
    size_t olen = 7;
    int rc = gw_log_tail(Path, 20, 4096, &out, &olen);
    Out = out;
    cr_assert_eq(rc, 0);
    cr_assert_not_null(out);
    cr_assert_eq(olen, 0);
    cr_assert_str_eq(out, "");
    free(out);
    Out = NULL;
}

Test(log_tail, missing_file_is_enoent)
{
    char *out = (char *)"untouched";
    size_t olen = 5;
    char missing[400];
    snprintf(missing, sizeof(missing), "%s/no-such.log", Dir);
    cr_assert_eq(gw_log_tail(missing, 20, 4096, &out, &olen), -ENOENT);
    cr_assert_null(out);
    cr_assert_eq(olen, 0);
}

Test(log_tail, max_bytes_drops_oldest_lines_at_a_line_boundary)
{
    size_t len;
    char *text = Text = numbered_lines(100000, &len);
    write_file(text, len);
    char *out = NULL;
    size_t olen = 0;
    int rc = gw_log_tail(Path, 1000, 1000, &out, &olen);
    Out = out;
    cr_assert_eq(rc, 0);
    cr_assert_leq(olen, 1000);
    cr_assert_gt(olen, 1000 - 12, "only what does not fit is dropped");
    /* A suffix of the file, starting right after a newline. */
    cr_assert_eq(memcmp(out, text + len - olen, olen), 0);
    cr_assert_eq(text[len - olen - 1], '\n');
    cr_assert_eq(strncmp(out, "line ", 5), 0);
    cr_assert_eq(strcmp(out + olen - 11, "line 99999\n"), 0);
    free(out);
    Out = NULL;
}

Test(log_tail, max_bytes_exact_sizes)
{
    /* 11 lines of 10 bytes: 110 bytes. */
    char text[111];
    for (int i = 0; i < 11; i++)
        snprintf(text + i * 10, sizeof(text) - (size_t)i * 10, "line %03d.\n", i);
    write_file(text, 110);
    expect_tail(text, 110, 20, 1000);
    expect_tail(text, 110, 20, 110);
    expect_tail(text, 110, 20, 100);
    expect_tail(text, 110, 20, 99);
    expect_tail(text, 110, 20, 10);
    expect_tail(text, 110, 20, 9);
    expect_tail(text, 110, 20, 0);
    expect_tail(text, 110, 3, 25);
}

Test(log_tail, max_bytes_one_below_file_size)
{
    /* The whole file is one byte over the cap: the oldest line must go. */
    char text[111];
    for (int i = 0; i < 11; i++)
        snprintf(text + i * 10, sizeof(text) - (size_t)i * 10, "line %03d.\n", i);
    write_file(text, 110);
    char *out = NULL;
    size_t olen = 0;
    int rc = gw_log_tail(Path, 20, 109, &out, &olen);
    Out = out;
    cr_assert_eq(rc, 0);
    cr_assert_leq(olen, 109, "max_bytes 109 on a 110-byte file: got %zu bytes", olen);
    cr_assert_eq(olen, 100);
    cr_assert_str_eq(out, text + 10);
    free(out);
    Out = NULL;
}

/* A module that dumps a huge blob without a newline, then dies saying why
 * on the same line: the end of that line is what matters. */
Test(log_tail, max_bytes_with_a_line_longer_than_the_cap)
{
    for (int fin = 0; fin < 2; fin++) {
        char text[80];
        size_t len = (size_t)snprintf(text, sizeof(text), "first\n%.50s died%s",
                                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                                      fin ? "\n" : "");
        write_file(text, len);
        char *out = NULL;
        size_t olen = 0;
        int rc = gw_log_tail(Path, 5, 10, &out, &olen);
        Out = out;
        cr_assert_eq(rc, 0);
        cr_assert_eq(olen, 10, "max_bytes 10, a 55-byte last line: got %zu bytes", olen);
        cr_assert_str_eq(out, fin ? "xxxxx died\n" + 1 : "xxxxx died", "got \"%s\"", out);
        free(out);
        Out = NULL;
        expect_tail(text, len, 5, 10);
        expect_tail(text, len, 1, 3);
    }
}

Test(log_tail, max_bytes_property)
{
    size_t len;
    char *text = Text = varied_lines(400, true, &len);
    write_file(text, len);
    const size_t caps[] = { 0, 1, 2, 50, 101, 1000, 8191, 8192, 8193, 20000, len - 1, len,
                            len + 1 };
    const unsigned counts[] = { 1, 3, 50, 399, 400, 401 };
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
        for (size_t j = 0; j < sizeof(counts) / sizeof(counts[0]); j++)
            expect_tail(text, len, counts[j], caps[i]);
}
