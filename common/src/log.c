/*
 * mg_log: one timestamped line per call, written with a single write(2) to
 * stderr, which the gateway points at the module's log file (O_APPEND), so
 * lines from concurrent handlers never interleave. One call is one line:
 * line breaks and other control characters in the message are written
 * escaped (\n, \r, \xHH; a backslash as \\, a byte that is not UTF-8 as
 * \xHH), so that text from a request cannot forge lines that a reader, or
 * the gateway's crash report, would take for real ones.
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

/* Writes line[from, len) to out (if not NULL) with what could end a line,
 * fool a terminal or be read as an escape escaped: control characters
 * but tab (\n, \r, \xHH), the backslash (\\), and bytes that are not
 * UTF-8 (\xHH, so that the log stays text). Returns the length written. */
static size_t escape_message(char *out, const char *line, size_t from, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = from; i < len;) {
        unsigned char c = (unsigned char)line[i];
        size_t seq = c < 0x80 ? 1 : mg__utf8_seq_len((const unsigned char *)line + i, len - i);
        char esc[4];
        size_t n;
        if (seq > 1) {
            if (out != NULL)
                memcpy(out + o, line + i, seq);
            o += seq;
            i += seq;
            continue;
        }
        if (seq == 1 && c >= 0x20 && c != 0x7f && c != '\\') {
            esc[0] = (char)c;
            n = 1;
        } else if (c == '\t') {
            esc[0] = '\t';
            n = 1;
        } else if (c == '\n' || c == '\r' || c == '\\') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
            n = 2;
        } else {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[c >> 4];
            esc[3] = hex[c & 15];
            n = 4;
        }
        if (out != NULL)
            memcpy(out + o, esc, n);
        o += n;
        i++;
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
    size_t message = escape_message(NULL, line, (size_t)head, len);
    if (message != len - (size_t)head) {
        char *escaped = malloc((size_t)head + message + 2);
        if (escaped == NULL) {
            if (line != small)
                free(line);
            return;
        }
        memcpy(escaped, line, (size_t)head);
        escape_message(escaped + head, line, (size_t)head, len);
        if (line != small)
            free(line);
        line = escaped;
        len = (size_t)head + message;
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
