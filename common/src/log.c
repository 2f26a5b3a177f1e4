/*
 * mg_log: one timestamped line per call, written with a single write(2) to
 * stderr, which the gateway points at the module's log file (O_APPEND), so
 * lines from concurrent handlers never interleave. One call is one line:
 * line breaks and other control characters in the message are written
 * escaped (\n, \r, \xHH), so that text from a request cannot forge lines
 * that a reader, or the gateway's crash report, would take for real ones.
 */
#include <modgate/module.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"
#include "util.h"

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };

/* Control characters but tab: what could end a line or fool a terminal. */
static bool is_escaped(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* Copies line[0, len) to out, the message part (from `from`) with its
 * control characters escaped; the new length. out has room for 3 more
 * bytes per control character. */
static size_t escape_controls(char *out, const char *line, size_t from, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, line, from);
    size_t o = from;
    for (size_t i = from; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (!is_escaped(c)) {
            out[o++] = (char)c;
        } else if (c == '\n' || c == '\r') {
            out[o++] = '\\';
            out[o++] = c == '\n' ? 'n' : 'r';
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    return o;
}

void mg__log_start_on_new_line(void)
{
    struct stat st;
    char last;
    /* stderr is write-only: the same file, opened again to be read. */
    int fd = open("/proc/self/fd/2", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    bool unfinished = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
                      pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n';
    close(fd);
    if (unfinished) {
        ssize_t n;
        do
            n = write(STDERR_FILENO, "\n", 1);
        while (n < 0 && errno == EINTR);
    }
}

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
    /* A line break ending the message is the line's own. */
    while (len > (size_t)head && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    size_t controls = 0;
    for (size_t i = (size_t)head; i < len; i++)
        controls += is_escaped((unsigned char)line[i]);
    if (controls > 0) {
        char *escaped = malloc(len + 3 * controls + 2);
        if (escaped == NULL) {
            if (line != small)
                free(line);
            return;
        }
        size_t out = escape_controls(escaped, line, (size_t)head, len);
        if (line != small)
            free(line);
        line = escaped;
        len = out;
    }
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
