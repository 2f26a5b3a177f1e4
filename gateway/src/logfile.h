/*
 * The gateway's own log, LOG_DIR/gateway.log: one timestamped line per
 * event, written whole with one write(2). Warnings and errors also go to
 * stderr, for whoever runs the gateway in a terminal. Process-wide, like
 * syslog, because every part of the gateway reports into it.
 */
#ifndef GW_LOGFILE_H
#define GW_LOGFILE_H

#include <stdarg.h>
#include <stddef.h>

enum gw_log_level { GW_INFO, GW_WARN, GW_ERROR };

/* Opens (appends to) `path`; 0 or -errno. Until then lines go to stderr. */
int gw_log_open(const char *path);
void gw_log(enum gw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The line gw_log writes, "TIME LEVEL [who: ]message\n", formatted once and
 * whole (caller frees; *len without the NUL); NULL on ENOMEM. */
char *gw_log_vline(enum gw_log_level level, const char *who, size_t *len, const char *fmt,
                   va_list ap);
/* Writes a block of text (a log tail) as-is, after the line before it. */
void gw_log_raw(const char *text, size_t len);
/* Reopens gateway.log in place (SIGHUP); 0 or -errno. */
int gw_log_reopen(void);
void gw_log_close(void);

/* Reopens a log file onto the same descriptor number (for SIGHUP and
 * logrotate), so that threads writing to `fd` never see it closed. */
int gw_reopen_onto(int fd, const char *path);
/* Reopens `fd` onto `path` only if `path` no longer names the file `fd`
 * writes to (deleted, or moved away without a SIGHUP): 1 if it did, 0 if
 * there was no need, -errno. */
int gw_reopen_if_moved(int fd, const char *path);
/* Opens a log file for appending, close-on-exec; the fd or -errno. */
int gw_open_log(const char *path);

#endif
