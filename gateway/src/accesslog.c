#include "accesslog.h"

#include <stdbool.h>
#include <string.h>

char *gw_fmt_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

void gw_fmt_hex64(char *p, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4)
        p[i] = digits[v & 15];
}

/*
 * The bytes a field cannot hold as they are, written as \xHH (upper-case
 * hex) the way nginx's access log writes them: control bytes, DEL and
 * everything above (so no byte of a client's target reaches a terminal or
 * a log reader as a control sequence or as part of a character), '"' and
 * '\\' (so the escapes themselves stay unambiguous), and the space that
 * separates the fields (so a target with spaces stays one field).
 */
static const unsigned char escaped[256] = {
    [0 ... ' '] = 1, ['"'] = 1, ['\\'] = 1, [0x7f ... 0xff] = 1,
};

static inline bool must_escape(unsigned char c)
{
    return escaped[c] != 0;
}

/* The bytes s takes in the line, escapes and the separator included.
 * (Every line is measured: one table load a byte, no branch.) */
static size_t field_len(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return 2;
    size_t n = 1;
    for (const unsigned char *q = (const unsigned char *)s; *q != '\0'; q++)
        n += 1 + 3u * escaped[*q];
    return n;
}

/* Writes s (or "-") and a space at p; returns the end. The runs of bytes
 * that need no escape, which is every byte of an ordinary request, are
 * copied whole. */
static char *put_field(char *p, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    if (s == NULL || s[0] == '\0')
        s = "-";
    for (;;) {
        const char *run = s;
        while (*s != '\0' && !must_escape((unsigned char)*s))
            s++;
        memcpy(p, run, (size_t)(s - run));
        p += s - run;
        if (*s == '\0')
            break;
        unsigned char c = (unsigned char)*s++;
        p[0] = '\\';
        p[1] = 'x';
        p[2] = hex[c >> 4];
        p[3] = hex[c & 15];
        p += 4;
    }
    *p++ = ' ';
    return p;
}

int gw_access_format(struct mg_buf *b, const struct gw_access_entry *e)
{
    /* Text fields, then room for incarnation, status, bytes and the
     * duration as numbers (20 digits each at most) and their separators. */
    const char *text[] = { e->time, e->id, e->client, e->method, e->target, e->module, e->cause };
    size_t max = 4 * 21 + 4, bound = max;
    for (size_t i = 0; i < sizeof(text) / sizeof(text[0]); i++)
        bound += 4 * (text[i] ? strlen(text[i]) : 0) + 2;
    /* Room for every byte escaped is cheap to compute (strlen) and almost
     * always at hand; the exact size is needed only for a huge target. */
    if (mg__buf_reserve(b, bound) != 0) {
        for (size_t i = 0; i < sizeof(text) / sizeof(text[0]); i++)
            max += field_len(text[i]);
        if (mg__buf_reserve(b, max) != 0)
            return -1;
    }
    char *p = b->data + b->len;
    p = put_field(p, e->time);
    p = put_field(p, e->id);
    p = put_field(p, e->client);
    p = put_field(p, e->method);
    p = put_field(p, e->target);
    p = put_field(p, e->module);
    if (e->incarnation > 0)
        p = gw_fmt_u64(p, e->incarnation);
    else
        *p++ = '-';
    *p++ = ' ';
    p = gw_fmt_u64(p, e->status > 0 ? (uint64_t)e->status : 0);
    *p++ = ' ';
    p = gw_fmt_u64(p, e->bytes);
    *p++ = ' ';
    p = gw_fmt_u64(p, e->duration_us / 1000);
    *p++ = '.';
    unsigned frac = (unsigned)(e->duration_us % 1000);
    *p++ = (char)('0' + frac / 100);
    *p++ = (char)('0' + frac / 10 % 10);
    *p++ = (char)('0' + frac % 10);
    *p++ = ' ';
    p = put_field(p, e->cause);
    p[-1] = '\n';
    b->len = (size_t)(p - b->data);
    b->data[b->len] = '\0';
    return 0;
}
