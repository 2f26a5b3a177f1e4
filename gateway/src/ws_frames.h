/*
 * Just enough of WebSocket framing (RFC 6455 §5.2) for a tunnel that
 * passes frames through untouched: where the frames a side sends begin
 * and end, so that the gateway may close a tunnel with a close frame of
 * its own (§5.5.1) without cutting into one, and whether that side sent
 * its own close frame already.
 */
#ifndef GW_WS_FRAMES_H
#define GW_WS_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_ws_track {
    uint8_t head[14];   /* the header of the frame being read, so far */
    uint8_t have;       /* its bytes in head */
    uint64_t left;      /* payload bytes of the current frame still to come */
    bool close_seen;    /* a close frame went by */
};

/* Follows `n` more bytes of the stream. */
void gw_ws_track_feed(struct gw_ws_track *t, const void *data, size_t n);
/* True between frames: a frame of our own may be sent now. */
bool gw_ws_track_at_boundary(const struct gw_ws_track *t);

/* The largest close frame gw_ws_close_frame makes. */
#define GW_WS_CLOSE_MAX (2 + 2 + 123)

/* A server's close frame (unmasked) with `code` and `reason` (cut to the
 * 123 bytes a control frame's payload leaves, at a UTF-8 boundary) into
 * out; its length. */
size_t gw_ws_close_frame(uint8_t out[GW_WS_CLOSE_MAX], unsigned code, const char *reason);

#endif
