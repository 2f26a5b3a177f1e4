/*
 * Unit tests of the WebSocket frame tracking a tunnel uses to know where
 * it may put a close frame of its own (gateway/src/ws_frames.h).
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "ws_frames.h"

/* A frame with `len` payload bytes (masked if asked) appended at out+*at. */
static void frame(uint8_t *out, size_t *at, int b0, bool masked, uint64_t len)
{
    out[(*at)++] = (uint8_t)b0;
    uint8_t m = masked ? 0x80 : 0;
    if (len < 126) {
        out[(*at)++] = (uint8_t)(m | len);
    } else if (len < 65536) {
        out[(*at)++] = m | 126;
        out[(*at)++] = (uint8_t)(len >> 8);
        out[(*at)++] = (uint8_t)len;
    } else {
        out[(*at)++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[(*at)++] = (uint8_t)(len >> (8 * i));
    }
    if (masked)
        for (int i = 0; i < 4; i++)
            out[(*at)++] = (uint8_t)(0x11 * (i + 1));
    memset(out + *at, 'p', len);
    *at += len;
}

Test(ws_track, boundaries_with_every_length_form_fed_in_any_pieces)
{
    static uint8_t s[200000];
    size_t n = 0, ends[8], k = 0;
    frame(s, &n, 0x81, false, 5), ends[k++] = n;
    frame(s, &n, 0x82, false, 300), ends[k++] = n;
    frame(s, &n, 0x02, true, 70000), ends[k++] = n;
    frame(s, &n, 0x89, false, 0), ends[k++] = n;
    frame(s, &n, 0x80, true, 125), ends[k++] = n;
    const size_t pieces[] = { 1, 2, 3, 7, 4096, 65536, sizeof(s) };
    for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++) {
        struct gw_ws_track t = { 0 };
        size_t next_end = 0;
        for (size_t off = 0; off < n;) {
            size_t take = pieces[p] < n - off ? pieces[p] : n - off;
            gw_ws_track_feed(&t, s + off, take);
            off += take;
            while (next_end < k && ends[next_end] < off)
                next_end++;
            bool at_end = next_end < k && ends[next_end] == off;
            cr_assert_eq(gw_ws_track_at_boundary(&t), at_end, "piece %zu, offset %zu", pieces[p],
                         off);
        }
        cr_expect(!t.close_seen);
    }
}

Test(ws_track, a_close_frame_is_seen)
{
    uint8_t s[64];
    size_t n = 0;
    frame(s, &n, 0x81, false, 3);
    frame(s, &n, 0x88, false, 2);
    struct gw_ws_track t = { 0 };
    gw_ws_track_feed(&t, s, 5);
    cr_expect(!t.close_seen);
    gw_ws_track_feed(&t, s + 5, n - 5);
    cr_expect(t.close_seen);
    cr_expect(gw_ws_track_at_boundary(&t));
}

Test(ws_close_frame, code_and_reason_cut_at_a_character)
{
    uint8_t f[GW_WS_CLOSE_MAX];
    size_t n = gw_ws_close_frame(f, 1011, "module echo died");
    cr_expect_eq(n, 4 + 16);
    cr_expect_eq(f[0], 0x88);
    cr_expect_eq(f[1], 2 + 16);
    cr_expect_eq(f[2] << 8 | f[3], 1011);
    cr_expect_eq(memcmp(f + 4, "module echo died", 16), 0);

    char long_reason[300];
    memset(long_reason, 'a', 122);
    strcpy(long_reason + 122, "\xc3\xa9 and more"); /* a 2-byte character across byte 123 */
    n = gw_ws_close_frame(f, 1001, long_reason);
    cr_expect_eq(n, 4 + 122, "cut before the character, not inside it");
    cr_expect(f[1] <= 125, "a control frame's payload is 125 bytes at most");
}
