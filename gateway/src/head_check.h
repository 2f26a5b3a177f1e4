/*
 * A request head against RFC 9112's framing rules, for both listeners: a
 * message whose framing is ambiguous (Content-Length and
 * Transfer-Encoding, differing lengths, a folded line) is refused rather
 * than acted on, since whatever reads it next may frame it otherwise and
 * take the rest for another request (request smuggling).
 */
#ifndef GW_HEAD_CHECK_H
#define GW_HEAD_CHECK_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

/* What one pass over the headers found. */
struct gw_head_scan {
    size_t bytes;              /* name + value + 4 per line, plus the start given */
    unsigned lines, hosts, lengths, codings, connections, forwarded_fors;
    bool lengths_differ, bad_name, bad_value, folded;
    const char *length, *coding, *connection; /* the first of each */
    size_t connection_bytes;   /* every Connection value, +1 each */
    size_t cookie_len;         /* the first Cookie value's (the one libmicrohttpd parses) */
};

/* Scans the connection's request headers into *h (zeroed but for `bytes`,
 * which may start at the request line's size). */
void gw_head_scan(struct MHD_Connection *c, struct gw_head_scan *h);

/* What is wrong with the head, or NULL: a reason for the client, with the
 * status to answer (400, 501) and the X-Modgate-Error cause.
 * `has_authority`: an absolute-form target stands in for Host. */
const char *gw_head_problem(const struct gw_head_scan *h, const char *version, bool has_authority,
                            int *status, const char **cause);

/* True if the head announces a body (a chunked one, or a length not 0). */
bool gw_head_has_body(const struct gw_head_scan *h);

#endif
