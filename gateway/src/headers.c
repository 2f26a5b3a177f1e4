#include "headers.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "accesslog.h"
#include "util.h"

bool gw_header_is_hop_by_hop(const char *name, size_t len)
{
    /* RFC 9110 §7.6.1 names Connection and the headers it lists, plus the
     * legacy hop-by-hop set of RFC 2616 §13.5.1. */
    static const struct { const char *name; size_t len; } hop[] = {
        { "connection", 10 }, { "keep-alive", 10 }, { "te", 2 }, { "trailer", 7 },
        { "transfer-encoding", 17 }, { "upgrade", 7 },
    };
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (len == hop[i].len && strncasecmp(name, hop[i].name, len) == 0)
            return true;
    return len >= 6 && strncasecmp(name, "proxy-", 6) == 0;
}

bool gw_header_not_forwarded(const char *name, size_t len, const char *connection,
                             bool has_authority)
{
    bool host = len == 4 && strncasecmp(name, "host", 4) == 0;
    if (host)
        /* End to end and required (RFC 9112 §3.2): a Connection header
         * naming it does not make it hop-by-hop (nginx ignores that too). */
        return has_authority;
    if (gw_header_is_hop_by_hop(name, len) || gw_header_in_connection(connection, name, len))
        return true;
    static const struct { const char *name; size_t len; } replaced[] = {
        { "content-length", 14 }, { "expect", 6 }, { "x-forwarded-for", 15 },
        { "x-forwarded-proto", 17 }, { "x-request-id", 12 },
    };
    for (size_t i = 0; i < sizeof(replaced) / sizeof(replaced[0]); i++)
        if (len == replaced[i].len && strncasecmp(name, replaced[i].name, len) == 0)
            return true;
    return false;
}

bool gw_header_in_connection(const char *connection, const char *name, size_t len)
{
    if (connection == NULL)
        return false;
    const char *p = connection;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p != '\0' && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if ((size_t)(p - start) == len && len > 0 && strncasecmp(start, name, len) == 0)
            return true;
    }
    return false;
}

bool gw_request_id_valid(const char *id)
{
    size_t n = 0;
    for (const char *p = id; *p != '\0'; p++, n++)
        if (*p <= ' ' || *p >= 127 || *p == '"' || *p == '\\')
            return false;
    return n >= 1 && n <= 128;
}

bool gw_http_target_ok(const char *s)
{
    if (*s == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p <= ' ' || *p == 127)
            return false;
    return true;
}

bool gw_te_is_chunked(const char *value)
{
    while (*value == ' ' || *value == '\t')
        value++;
    if (strncasecmp(value, "chunked", 7) != 0)
        return false;
    for (value += 7; *value == ' ' || *value == '\t'; value++)
        ;
    return *value == '\0';
}

static uint64_t rng_next(uint64_t s[2])
{
    uint64_t x = s[0], y = s[1];
    s[0] = y;
    x ^= x << 23;
    s[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return s[1] + y;
}

void gw_request_id_pick(const char *given, uint64_t rng[2], char id[GW_REQUEST_ID_SIZE])
{
    if (given != NULL && gw_request_id_valid(given)) {
        snprintf(id, GW_REQUEST_ID_SIZE, "%s", given);
        return;
    }
    gw_fmt_hex64(id, rng_next(rng));
    gw_fmt_hex64(id + 16, rng_next(rng));
    id[32] = '\0';
}

void gw_request_id_seed(uint64_t rng[2], const void *salt)
{
    if (getrandom(rng, 2 * sizeof(*rng), 0) != (ssize_t)(2 * sizeof(*rng))) {
        rng[0] = mg__now_us() ^ (uint64_t)(uintptr_t)salt;
        rng[1] = 0x9e3779b97f4a7c15ull;
    }
}
