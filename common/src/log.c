/*
 * mg_log: one timestamped line per call, written with a single write(2) to
 * stderr, which the gateway points at the module's log file (O_APPEND), so
 * lines from concurrent handlers never interleave.
 */
#include <modgate/module.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"
#include "util.h"

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };

void mg_vlog(enum mg_log_level level, const char *fmt, va_list ap)
{
    char ts[32];
    char small[512];
    mg__timestamp(ts);
    if ((unsigned)level > MG_LOG_ERROR)
        level = MG_LOG_ERROR;
    const char *name = mg__current_module_name();

    va_list ap2;
    va_copy(ap2, ap);
    int head = snprintf(small, sizeof(small), "%s %s %s: ", ts, level_names[level], name);
    int body = vsnprintf(small + head, sizeof(small) - (size_t)head, fmt, ap);
    char *line = small;
    size_t len;
    if (body < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)head + (size_t)body + 2 > sizeof(small)) {
        /* Long lines are written whole, never truncated. */
        line = malloc((size_t)head + (size_t)body + 2);
        if (line == NULL) {
            va_end(ap2);
            return;
        }
        memcpy(line, small, (size_t)head);
        vsnprintf(line + head, (size_t)body + 1, fmt, ap2);
    }
    va_end(ap2);
    len = (size_t)head + (size_t)body;
    if (len > 0 && line[len - 1] != '\n')
        line[len++] = '\n';
    for (size_t off = 0; off < len;) {
        ssize_t n = write(STDERR_FILENO, line + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (line != small)
        free(line);
}

void mg_log(enum mg_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mg_vlog(level, fmt, ap);
    va_end(ap);
}
