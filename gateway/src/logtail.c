#include "logtail.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

size_t gw_tail_offset(const char *text, size_t len, unsigned nlines)
{
    if (nlines == 0)
        return len;
    size_t end = len;
    /* A final newline ends the last line; it does not start another. */
    if (end > 0 && text[end - 1] == '\n')
        end--;
    unsigned seen = 0;
    for (size_t i = end; i > 0; i--) {
        if (text[i - 1] == '\n' && ++seen == nlines)
            return i;
    }
    return 0;
}

int gw_log_tail(const char *path, unsigned nlines, size_t max_bytes, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    size_t size = (size_t)st.st_size;
    size_t want = 8192;
    char *buf = NULL;
    size_t have = 0;
    for (;;) {
        if (want > size)
            want = size;
        if (want > max_bytes + 1)
            want = max_bytes + 1;
        char *nb = realloc(buf, want + 1);
        if (nb == NULL) {
            free(buf);
            close(fd);
            return -ENOMEM;
        }
        buf = nb;
        have = 0;
        while (have < want) {
            ssize_t n = pread(fd, buf + have, want - have, (off_t)(size - want + have));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            have += (size_t)n;
        }
        size_t off = gw_tail_offset(buf, have, nlines);
        /* Enough lines found, the whole file read, or the cap reached. */
        if (off > 0 || want >= size || want > max_bytes) {
            if (have - off > max_bytes) {
                /* Over the cap: start at the first whole line that fits;
                 * if the last line alone is longer, at its last bytes
                 * (a crash message at the end of a huge line still shows). */
                size_t from = have - max_bytes;
                const char *nl = memchr(buf + from - 1, '\n', have - from + 1);
                off = nl != NULL ? (size_t)(nl - buf) + 1 : have;
                if (off >= have)
                    off = from;
            }
            memmove(buf, buf + off, have - off);
            *len = have - off;
            buf[*len] = '\0';
            *out = buf;
            close(fd);
            return 0;
        }
        want *= 4;
    }
}
