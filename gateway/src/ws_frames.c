#include "ws_frames.h"

#include <string.h>

#include "util.h"

/* Header length once its first two bytes are known. */
static size_t head_len(const uint8_t *h)
{
    size_t len7 = h[1] & 0x7f;
    return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0);
}

void gw_ws_track_feed(struct gw_ws_track *t, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n > 0) {
        if (t->left > 0) {
            size_t take = t->left < n ? (size_t)t->left : n;
            t->left -= take;
            p += take;
            n -= take;
            continue;
        }
        t->head[t->have++] = *p++;
        n--;
        if (t->have < 2 || t->have < head_len(t->head))
            continue;
        /* The header is whole: its payload length follows. */
        size_t len7 = t->head[1] & 0x7f;
        uint64_t len = len7;
        if (len7 == 126)
            len = (uint64_t)t->head[2] << 8 | t->head[3];
        else if (len7 == 127) {
            len = 0;
            for (int i = 2; i < 10; i++)
                len = len << 8 | t->head[i];
        }
        if ((t->head[0] & 0x0f) == 0x8)
            t->close_seen = true;
        t->left = len;
        t->have = 0;
    }
}

bool gw_ws_track_at_boundary(const struct gw_ws_track *t)
{
    return t->have == 0 && t->left == 0;
}

size_t gw_ws_close_frame(uint8_t out[GW_WS_CLOSE_MAX], unsigned code, const char *reason)
{
    size_t len = strlen(reason), rlen = len;
    if (len > 123) {
        /* Whole characters only: the reason must be UTF-8 (§5.5.1). */
        rlen = 0;
        for (;;) {
            size_t seq = mg__utf8_seq_len((const unsigned char *)reason + rlen, len - rlen);
            if (seq == 0 || rlen + seq > 123)
                break;
            rlen += seq;
        }
    }
    out[0] = 0x88; /* FIN, close */
    out[1] = (uint8_t)(2 + rlen);
    out[2] = (uint8_t)(code >> 8);
    out[3] = (uint8_t)code;
    memcpy(out + 4, reason, rlen);
    return 4 + rlen;
}
