/* Reading the last lines of a log file, for failure reports and the admin
 * API. */
#ifndef GW_LOGTAIL_H
#define GW_LOGTAIL_H

#include <stddef.h>

/* Sets *out to the last `nlines` lines of the file at `path` (a partial
 * last line counts as a line), NUL-terminated, caller frees. Reads
 * backwards in blocks, so the cost follows the tail, not the file.
 * At most `max_bytes` are returned (the oldest lines are dropped first;
 * a last line longer than that is given by its end).
 * 0 or -errno. */
int gw_log_tail(const char *path, unsigned nlines, size_t max_bytes, char **out, size_t *len);

/* The same over a buffer (for tests and callers that hold the text). */
size_t gw_tail_offset(const char *text, size_t len, unsigned nlines);

#endif
