/*
 * One access.log line per request:
 *   time request-id client method target module incarnation status bytes ms cause
 * formatted by hand: it is written for every request, and printf-family
 * formatting (twice, to measure then write) cost ~10k instructions a line.
 * In every text field, bytes below 0x21 (space included), 0x7f and above,
 * '"' and '\\' are written as \xHH (nginx's escaping, plus the space that
 * separates fields), so a client's bytes can neither split a field nor
 * reach a terminal as a control sequence.
 */
#ifndef GW_ACCESSLOG_H
#define GW_ACCESSLOG_H

#include <stdint.h>

#include "util.h"

struct gw_access_entry {
    const char *time;       /* mg__timestamp's form */
    const char *id, *client, *method, *target, *module, *cause; /* NULL or "": "-" */
    unsigned incarnation;   /* 0: "-" */
    int status;
    uint64_t bytes;
    uint64_t duration_us;   /* written in ms with three decimals */
};

/* Appends the line, newline included. 0, or -1 if the buffer is at its cap. */
int gw_access_format(struct mg_buf *b, const struct gw_access_entry *e);

/* Decimal digits of v at p; returns the end (no NUL). p needs 20 bytes. */
char *gw_fmt_u64(char *p, uint64_t v);
/* 16 lower-case hex digits of v at p (no NUL). */
void gw_fmt_hex64(char *p, uint64_t v);

#endif
