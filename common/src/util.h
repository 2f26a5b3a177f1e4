/*
 * Small helpers shared by the module runtime and the gateway: clocks,
 * timestamps, JSON string escaping, percent-decoding, HEAD answers. Internal (mg__ prefix),
 * not installed.
 */
#ifndef MG_UTIL_H
#define MG_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct MHD_Connection;
struct MHD_Response;

/* Monotonic clock in milliseconds / microseconds. */
uint64_t mg__now_ms(void);
uint64_t mg__now_us(void);

/* Writes "2026-11-22T18:13:27.123Z" (24 chars + NUL) into buf[32]. */
void mg__timestamp(char buf[32]);

/* Writes the HTTP date of now, "Sun, 22 Nov 2026 18:13:27 GMT" (RFC 9110
 * §5.6.7, in English whatever the locale), into buf[64]. */
void mg__http_date(char buf[64]);

/* The same, formatting the date and time only when the second changes
 * (for per-request lines). The cache belongs to one thread. */
struct mg_ts_cache {
    long sec;
    char prefix[24]; /* "2026-11-22T18:13:27" */
};
void mg__timestamp_cached(struct mg_ts_cache *c, char buf[32]);

/* A growable byte buffer that refuses to grow past `max` (curl's dynbuf
 * shape): appends fail with -1 instead of truncating. */
struct mg_buf {
    char *data;
    size_t len, cap, max;
};
void mg__buf_init(struct mg_buf *b, size_t max);
int mg__buf_append(struct mg_buf *b, const void *data, size_t len);
/* Makes room for `extra` more bytes (and a NUL) past len; 0, or -1 past
 * the cap or on ENOMEM. */
int mg__buf_reserve(struct mg_buf *b, size_t extra);
int mg__buf_printf(struct mg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True for what libmicrohttpd logs when a client leaves mid-request or
 * mid-response, or when a response is cut on purpose (a content reader's
 * END_WITH_ERROR): routine for a server, no warning. */
bool mg__mhd_message_is_routine(const char *msg);
/* Appends `s` as a JSON string literal, quotes included; bytes that are not
 * UTF-8 become U+FFFD, so the result is always valid JSON. */
int mg__buf_json_string(struct mg_buf *b, const char *s, size_t len);
/* The length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, surrogates or code points past U+10FFFF), 0 if there is none. */
size_t mg__utf8_seq_len(const unsigned char *p, size_t left);
void mg__buf_free(struct mg_buf *b);
/* Hands the bytes to the caller (caller frees), leaving b empty. */
char *mg__buf_steal(struct mg_buf *b, size_t *len);

/* Decodes %XX (and '+' as space when `plus` is set) from src[0..len) into a
 * new NUL-terminated string (caller frees); NULL on ENOMEM. Malformed
 * escapes are kept as they are. */
char *mg__percent_decode(const char *src, size_t len, bool plus);
/* True if decoding s[0, len) would give a NUL byte ("%00"). */
bool mg__percent_holds_nul(const char *s, size_t len);
/* The value of a hex digit, or -1. */
int mg__hex_value(char c);

/* MHD_add_response_header for a header passed on as it came, an empty
 * value included (libmicrohttpd refuses "", so it goes as " "); false if
 * libmicrohttpd refused it. */
bool mg__add_header_value(struct MHD_Response *r, const char *name, const char *value);

/* A number given on a command line or in the environment: decimal digits
 * only (no blank, sign or "-1"), at most `max`. 0 and *out, or -1. */
int mg__parse_ulong(const char *s, unsigned long long max, unsigned long long *out);

/* For libmicrohttpd's URI-log callback, which gets the request target
 * just before libmicrohttpd 0.9.75 parses its query into a record per
 * argument in the connection's memory pool: a query of some 500
 * arguments (3 KB) runs the pool out, and the connection then hangs,
 * unanswered, with no completion callback. The gateway and the module
 * runtime take the raw target in that callback and parse the query
 * themselves, so this ends the query in libmicrohttpd's copy of the line
 * (its read buffer, where it writes a NUL at the '?' next anyway).
 * Written against 0.9.75's parse_initial_message_line; with another
 * version it does nothing. */
void mg__mhd_skip_query_records(const char *uri);

/* Bytes of a connection's memory pool that libmicrohttpd 0.9.75 keeps for
 * a request head: its `text` (the request line and header lines as read;
 * it parses them in place), a record for each of its `fields` header
 * fields and for each cookie (56 bytes, 64 once aligned), and the copy of
 * the Cookie header (`cookie_len` bytes, 0 for none) that it parses the
 * cookies out of. An answer's head is built in what is left. A head of
 * many short fields fills a pool sized for max_header_bytes of text long
 * before its text gets there: 460 lines of "a: v" (2.8 KB) take 32 KB. */
size_t mg__mhd_head_cost(struct MHD_Connection *c, size_t text, size_t fields, size_t cookie_len);

/* Opens /dev/null on whichever of descriptors 0, 1 and 2 is closed, so
 * that files opened later do not take their place (a daemon started with
 * `>&- 2>&-` would write its stderr lines into its access log). */
void mg__std_fds_open(void);

/* Whether the n bytes at s are an HTTP token (RFC 9110 §5.6.2), as a
 * method or a header name must be. */
bool mg__http_token(const char *s, size_t n);

/* The standard reason phrase of an HTTP status (ours for the common ones,
 * libmicrohttpd's for the rest), "Unknown" for others. */
const char *mg__reason(int status);

/* A HEAD answer whose length is unknown: libmicrohttpd 0.9.75 would frame
 * it chunked and send the last chunk (5 bytes of body a HEAD must not
 * have, read by the client as the start of the next answer), so it goes
 * out without framing and closes the connection. 0, or -1. */
int mg__head_without_length(struct MHD_Response *r, const char *method);

#endif
