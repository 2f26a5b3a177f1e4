#include "headers.h"

#include <string.h>
#include <strings.h>

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
    if (gw_header_is_hop_by_hop(name, len) || gw_header_in_connection(connection, name, len))
        return true;
    static const struct { const char *name; size_t len; } replaced[] = {
        { "content-length", 14 }, { "expect", 6 }, { "x-forwarded-for", 15 },
        { "x-forwarded-proto", 17 }, { "x-request-id", 12 },
    };
    for (size_t i = 0; i < sizeof(replaced) / sizeof(replaced[0]); i++)
        if (len == replaced[i].len && strncasecmp(name, replaced[i].name, len) == 0)
            return true;
    return has_authority && len == 4 && strncasecmp(name, "host", 4) == 0;
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
