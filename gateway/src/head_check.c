#include "head_check.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "headers.h"
#include "util.h"

/* libmicrohttpd 0.9.75 takes an obs-fold continuation line (RFC 9112
 * §5.2: a line starting with a space or tab) as more of the header's
 * *name*, which it copies out of the request's buffer to grow it:
 * "Content-Length:\r\n 38" becomes a header "Content-Length38" with an
 * empty value, and the body it framed is read as the next request. The
 * name of a header that was not folded sits just before its value on the
 * same line, with only the colon (now a NUL) and blanks between; a name
 * grown this way lives elsewhere. The RFC lets a server refuse obs-fold,
 * as nginx does. Other versions: nothing to detect. */
static bool folded_into(const char *name, size_t nlen, const char *value)
{
#if MHD_VERSION == 0x00097500
    if (value == NULL || value < name + nlen + 1 ||
        (size_t)(value - name) > nlen + 1 + 64 * 1024 || name[nlen] != '\0')
        return true;
    for (const char *p = name + nlen + 1; p < value; p++)
        if (*p != ' ' && *p != '\t')
            return true;
    return false;
#else
    (void)name, (void)nlen, (void)value;
    return false;
#endif
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *k,
                                   size_t klen, const char *v, size_t vlen)
{
    (void)kind;
    struct gw_head_scan *h = cls;
    if (folded_into(k, klen, v))
        h->folded = true;
    if (v == NULL) {
        v = "";
        vlen = 0;
    }
    h->bytes += klen + vlen + 4;
    h->lines++;
    if (!mg__http_token(k, klen))
        h->bad_name = true;
    /* libmicrohttpd ends lines at CRLF or LF only: a bare CR stays in the
     * value, and a module (or a parser behind it) may end the line there
     * and read what follows as a header of its own. */
    if (memchr(v, '\r', vlen) != NULL)
        h->bad_value = true;
    switch (k[0] | 0x20) {
    case 'h':
        if (klen == 4 && strcasecmp(k, "Host") == 0)
            h->hosts++;
        break;
    case 'x':
        if (klen == 15 && strcasecmp(k, "X-Forwarded-For") == 0)
            h->forwarded_fors++;
        break;
    case 'c':
        if (klen == 14 && strcasecmp(k, "Content-Length") == 0) {
            if (h->lengths++ > 0 && strcmp(h->length, v) != 0)
                h->lengths_differ = true;
            h->length = v;
        } else if (klen == 10 && strcasecmp(k, "Connection") == 0) {
            if (h->connections++ == 0)
                h->connection = v;
            h->connection_bytes += vlen + 1;
        } else if (klen == 6 && h->cookie_len == 0 && strcasecmp(k, "Cookie") == 0) {
            h->cookie_len = vlen;
        }
        break;
    case 't':
        if (klen == 17 && strcasecmp(k, "Transfer-Encoding") == 0) {
            h->codings++;
            h->coding = v;
        }
        break;
    }
    return MHD_YES;
}

void gw_head_scan(struct MHD_Connection *c, struct gw_head_scan *h)
{
    MHD_get_connection_values_n(c, MHD_HEADER_KIND, scan_header, h);
}

const char *gw_head_problem(const struct gw_head_scan *h, const char *version, bool has_authority,
                            int *status, const char **cause)
{
    *status = 400;
    *cause = "bad_request";
    bool http10 = strcmp(version, "HTTP/1.0") == 0;
    if (h->folded)
        return "a header line is folded onto the next (obs-fold, RFC 9112 §5.2)";
    if (h->bad_name)
        return "a header name is not a token";
    if (h->bad_value)
        return "a header value has a carriage return";
    if (h->hosts > 1)
        return "more than one Host header";
    if (h->hosts == 0 && !has_authority && !http10)
        return "an HTTP/1.1 request needs a Host header";
    if (h->codings > 0 && h->lengths > 0)
        return "both Transfer-Encoding and Content-Length";
    /* RFC 9112 §6.1: HTTP/1.0 has no chunked coding; such a message's
     * framing is faulty whatever it says (nginx refuses it too). */
    if (h->codings > 0 && http10)
        return "Transfer-Encoding in an HTTP/1.0 request";
    if (h->lengths_differ)
        return "Content-Length headers that differ";
    if (h->lengths > 0 && (h->length[0] < '0' || h->length[0] > '9' ||
                           h->length[strspn(h->length, "0123456789")] != '\0'))
        return "Content-Length is not a number";
    if (h->codings > 1 || (h->codings == 1 && !gw_te_is_chunked(h->coding))) {
        *status = 501;
        *cause = "not_implemented";
        return "only the chunked transfer coding is supported";
    }
    return NULL;
}

bool gw_head_has_body(const struct gw_head_scan *h)
{
    return h->codings > 0 || (h->lengths > 0 && strspn(h->length, "0") != strlen(h->length));
}
