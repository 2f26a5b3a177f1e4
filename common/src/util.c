#include "util.h"

#include <microhttpd.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void mg__timestamp_cached(struct mg_ts_cache *c, char buf[32])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != c->sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(c->prefix, sizeof(c->prefix), "%Y-%m-%dT%H:%M:%S", &tm);
        c->sec = ts.tv_sec;
    }
    int ms = (int)(ts.tv_nsec / 1000000L);
    size_t n = strlen(c->prefix);
    memcpy(buf, c->prefix, n);
    buf[n] = '.';
    buf[n + 1] = (char)('0' + ms / 100);
    buf[n + 2] = (char)('0' + ms / 10 % 10);
    buf[n + 3] = (char)('0' + ms % 10);
    buf[n + 4] = 'Z';
    buf[n + 5] = '\0';
}

uint64_t mg__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t mg__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void mg__timestamp(char buf[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03dZ", (int)(ts.tv_nsec / 1000000L));
}

void mg__http_date(char buf[64])
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(buf, 64, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void mg__buf_init(struct mg_buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

int mg__buf_reserve(struct mg_buf *b, size_t extra)
{
    if (extra > b->max - b->len)
        return -1;
    size_t need = b->len + extra + 1; /* room for a NUL */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int mg__buf_append(struct mg_buf *b, const void *data, size_t len)
{
    if (mg__buf_reserve(b, len) != 0)
        return -1;
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int mg__buf_printf(struct mg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || mg__buf_reserve(b, (size_t)n) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

size_t mg__utf8_seq_len(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range (RFC 3629 §4) */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* no overlong forms */
        else if (c == 0xed)
            hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f; /* nothing past U+10FFFF */
    } else
        return 0;
    if (left < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

int mg__buf_json_string(struct mg_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (mg__buf_append(b, "\"", 1) != 0)
        return -1;
    size_t run = 0; /* bytes that need no escaping, copied in one go */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        size_t seq = c < 0x80 ? 1 : mg__utf8_seq_len((const unsigned char *)s + i, len - i);
        if (seq > 1) {
            run += seq;
            i += seq - 1;
            continue;
        }
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        if (mg__buf_append(b, s + i - run, run) != 0)
            return -1;
        run = 0;
        if (seq == 0) {
            /* Not UTF-8 (a percent-decoded path byte, say): JSON text must
             * be (RFC 8259 §8.1), so it becomes U+FFFD, as a decoder would. */
            if (mg__buf_append(b, "\\ufffd", 6) != 0)
                return -1;
            continue;
        }
        char esc[7] = { '\\', 0 };
        size_t n = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        if (mg__buf_append(b, esc, n) != 0)
            return -1;
    }
    if (mg__buf_append(b, s + len - run, run) != 0)
        return -1;
    return mg__buf_append(b, "\"", 1);
}

void mg__buf_free(struct mg_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *mg__buf_steal(struct mg_buf *b, size_t *len)
{
    char *p = b->data;
    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

int mg__hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *mg__percent_decode(const char *src, size_t len, bool plus)
{
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (src[i] == '%' && i + 2 < len && (hi = mg__hex_value(src[i + 1])) >= 0 && (lo = mg__hex_value(src[i + 2])) >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (plus && src[i] == '+') {
            out[o++] = ' ';
        } else {
            out[o++] = src[i];
        }
    }
    out[o] = '\0';
    return out;
}

const char *mg__reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return MHD_get_reason_phrase_for((unsigned)status); /* "Unknown" for others */
    }
}

int mg__parse_ulong(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    /* Digits only: strtoull would also take blanks, a sign and "-1". */
    if (s[0] < '0' || s[0] > '9' || errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

bool mg__http_token(const char *s, size_t n)
{
    /* tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
     *         "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
    static const char delimiters[] = "\"(),/:;<=>?@[\\]{}";
    if (n == 0)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; p < (const unsigned char *)s + n; p++)
        if (*p <= ' ' || *p >= 127 || strchr(delimiters, *p) != NULL)
            return false;
    return true;
}

int mg__head_without_length(struct MHD_Response *r, const char *method)
{
    if (strcmp(method, "HEAD") != 0)
        return 0;
    return MHD_set_response_options(r, MHD_RF_HTTP_1_0_COMPATIBLE_STRICT, MHD_RO_END) == MHD_YES
               ? 0
               : -1;
}

void mg__std_fds_open(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            continue;
        /* The lowest free descriptor: this one. */
        int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        if (n >= 0 && n != fd)
            close(n); /* cannot happen: fd was the lowest free one */
    }
}

bool mg__mhd_message_is_routine(const char *msg)
{
    static const char *const routine[] = {
        "closed by remote peer",
        "closed by remote side with incomplete request",
        "socket is closed when reading request",
        "no longer available for sending",
        "application error generating response",
        "Application reported internal error",
    };
    for (size_t i = 0; i < sizeof(routine) / sizeof(routine[0]); i++)
        if (strstr(msg, routine[i]) != NULL)
            return true;
    return false;
}

void mg__mhd_skip_query_records(const char *uri)
{
#if MHD_VERSION == 0x00097500
    char *q = strchr((char *)uri, '?');
    if (q != NULL)
        q[1] = '\0';
#else
    (void)uri;
#endif
}

size_t mg__mhd_head_cost(struct MHD_Connection *c, size_t text, size_t fields, size_t cookie_len)
{
    size_t records = fields;
    if (cookie_len > 0) {
        int cookies = MHD_get_connection_values(c, MHD_COOKIE_KIND, NULL, NULL);
        records += cookies > 0 ? (size_t)cookies : 0;
        text += (cookie_len + 1 + 15) & ~(size_t)15;
    }
    return text + 64 * records;
}

bool mg__add_header_value(struct MHD_Response *r, const char *name, const char *value)
{
    /* libmicrohttpd refuses an empty value; a space is the same empty value
     * on the wire (RFC 9112 §5: whitespace around a value is not part of
     * it). */
    return MHD_add_response_header(r, name, value[0] != '\0' ? value : " ") == MHD_YES;
}

bool mg__percent_holds_nul(const char *s, size_t len)
{
    for (size_t i = 0; i + 3 <= len; i++)
        if (s[i] == '%' && s[i + 1] == '0' && s[i + 2] == '0')
            return true;
    return false;
}
