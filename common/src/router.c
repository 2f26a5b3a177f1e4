/*
 * Route table as a segment trie. Each node holds its literal children, one
 * capture child and two endpoint lists: routes that end at the node and
 * routes whose trailing `*` starts after it. Matching is a depth-first walk
 * in priority order (literal, capture, wildcard), so the first endpoint
 * whose method fits is the most specific route; endpoints passed over on
 * the way give the Allow list of a 405.
 */
#include "router.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct endpoint {
    char *method;
    char *pattern;
    void *data;
    char **capnames; /* in pattern order; a trailing wildcard is "*" */
    size_t ncap;
    struct endpoint *next;
};

struct node {
    char *lit;
    size_t litlen;
    struct node **lits;
    size_t nlits;
    struct node *cap;
    struct endpoint *ends;
    struct endpoint *wilds;
};

struct mg_router {
    struct node root;
    size_t allow_max;
};

struct mg_router *mg_router_new(void)
{
    struct mg_router *r = calloc(1, sizeof(*r));
    if (r != NULL)
        r->allow_max = 1;
    return r;
}

static void endpoints_free(struct endpoint *e)
{
    while (e != NULL) {
        struct endpoint *next = e->next;
        for (size_t i = 0; i < e->ncap; i++)
            free(e->capnames[i]);
        free(e->capnames);
        free(e->method);
        free(e->pattern);
        free(e);
        e = next;
    }
}

static void node_clear(struct node *n)
{
    for (size_t i = 0; i < n->nlits; i++) {
        node_clear(n->lits[i]);
        free(n->lits[i]);
    }
    free(n->lits);
    if (n->cap != NULL) {
        node_clear(n->cap);
        free(n->cap);
    }
    endpoints_free(n->ends);
    endpoints_free(n->wilds);
    free(n->lit);
}

void mg_router_free(struct mg_router *r)
{
    if (r == NULL)
        return;
    node_clear(&r->root);
    free(r);
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_';
}

static int fail(char *err, size_t errlen, const char *fmt, const char *what)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, fmt, what);
    return -EINVAL;
}

static int check_method(const char *method, char *err, size_t errlen)
{
    if (method == NULL || method[0] == '\0')
        return fail(err, errlen, "empty method%s", "");
    if (strcmp(method, "*") == 0)
        return 0;
    for (const char *p = method; *p != '\0'; p++)
        if (!(*p >= 'A' && *p <= 'Z') && *p != '-')
            return fail(err, errlen, "bad method \"%s\": use upper-case letters or \"*\"",
                        method);
    return 0;
}

int mg_router_check_pattern(const char *pattern, char *err, size_t errlen)
{
    if (pattern == NULL || pattern[0] != '/')
        return fail(err, errlen, "pattern \"%s\" must start with '/'", pattern ? pattern : "");
    size_t ncap = 0;
    const char *seg = pattern + 1;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 1 && seg[0] == '*') {
            if (end != NULL)
                return fail(err, errlen, "pattern \"%s\": '*' must be the last segment",
                            pattern);
            ncap++;
        } else if (len >= 2 && seg[0] == '{' && seg[len - 1] == '}') {
            if (len == 2)
                return fail(err, errlen, "pattern \"%s\": empty capture name", pattern);
            for (size_t i = 1; i + 1 < len; i++)
                if (!is_name_char(seg[i]))
                    return fail(err, errlen,
                                "pattern \"%s\": capture names are letters, digits and '_'",
                                pattern);
            /* Names must be unique within the pattern. */
            for (const char *q = pattern; q < seg; q++)
                if (*q == '{' && strncmp(q, seg, len) == 0)
                    return fail(err, errlen, "pattern \"%s\": capture name used twice",
                                pattern);
            ncap++;
        } else {
            for (size_t i = 0; i < len; i++)
                if (strchr("{}*?# \t\r\n", seg[i]) != NULL)
                    return fail(err, errlen,
                                "pattern \"%s\": a segment is a literal, {name} or a final *",
                                pattern);
        }
        if (ncap > MG_ROUTER_MAX_CAPTURES)
            return fail(err, errlen, "pattern \"%s\": more than 16 captures", pattern);
        if (end == NULL)
            break;
        seg = end + 1;
    }
    return 0;
}

static struct node *literal_child(struct node *n, const char *seg, size_t len, bool create)
{
    for (size_t i = 0; i < n->nlits; i++)
        if (n->lits[i]->litlen == len && memcmp(n->lits[i]->lit, seg, len) == 0)
            return n->lits[i];
    if (!create)
        return NULL;
    struct node **lits = realloc(n->lits, (n->nlits + 1) * sizeof(*lits));
    if (lits == NULL)
        return NULL;
    n->lits = lits;
    struct node *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->lit = strndup(seg, len);
    if (c->lit == NULL) {
        free(c);
        return NULL;
    }
    c->litlen = len;
    n->lits[n->nlits++] = c;
    return c;
}

static bool methods_overlap(const char *a, const char *b)
{
    return strcmp(a, "*") == 0 || strcmp(b, "*") == 0 || strcmp(a, b) == 0;
}

int mg_router_add(struct mg_router *r, const char *method, const char *pattern, void *data,
                  void **dup_data, char *err, size_t errlen)
{
    int rc = check_method(method, err, errlen);
    if (rc == 0)
        rc = mg_router_check_pattern(pattern, err, errlen);
    if (rc != 0)
        return rc;

    struct endpoint *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    e->capnames = calloc(MG_ROUTER_MAX_CAPTURES, sizeof(char *));
    e->method = strdup(method);
    e->pattern = strdup(pattern);
    e->data = data;
    if (e->capnames == NULL || e->method == NULL || e->pattern == NULL)
        goto nomem;

    struct node *n = &r->root;
    struct endpoint **list = NULL;
    const char *seg = pattern + 1;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 1 && seg[0] == '*') {
            if ((e->capnames[e->ncap++] = strdup("*")) == NULL)
                goto nomem;
            list = &n->wilds;
            break;
        }
        if (seg[0] == '{' && len >= 2 && seg[len - 1] == '}') {
            if ((e->capnames[e->ncap++] = strndup(seg + 1, len - 2)) == NULL)
                goto nomem;
            if (n->cap == NULL && (n->cap = calloc(1, sizeof(*n->cap))) == NULL)
                goto nomem;
            n = n->cap;
        } else if ((n = literal_child(n, seg, len, true)) == NULL) {
            goto nomem;
        }
        if (end == NULL) {
            list = &n->ends;
            break;
        }
        seg = end + 1;
    }

    for (struct endpoint *o = *list; o != NULL; o = o->next) {
        if (methods_overlap(o->method, method)) {
            if (dup_data != NULL)
                *dup_data = o->data;
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "%s %s conflicts with %s %s", method, pattern, o->method,
                         o->pattern);
            endpoints_free(e);
            return -EEXIST;
        }
    }
    /* Append, so that routes keep their declaration order in Allow. */
    while (*list != NULL)
        list = &(*list)->next;
    *list = e;
    r->allow_max += strlen(method) + 2 + (strcmp(method, "GET") == 0 ? strlen("HEAD") + 2 : 0);
    return 0;

nomem:
    endpoints_free(e);
    return -ENOMEM;
}

size_t mg_router_allow_max(const struct mg_router *r)
{
    return r->allow_max;
}

struct walk {
    const char *method;
    const char *path;
    size_t len;
    struct mg_route_match *m;
    size_t capoff[MG_ROUTER_MAX_CAPTURES], caplen[MG_ROUTER_MAX_CAPTURES];
    size_t ncap;
    bool path_matched;
    char *allow;
    size_t allowlen, allowpos;
};

static bool method_fits(const char *route_method, const char *method)
{
    if (route_method[0] == '*' || strcmp(route_method, method) == 0)
        return true;
    return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

static void allow_add(struct walk *w, const char *method)
{
    if (w->allow == NULL || w->allowlen == 0)
        return;
    size_t mlen = strlen(method);
    /* Skip methods already listed. */
    for (const char *p = w->allow; p < w->allow + w->allowpos;) {
        const char *comma = strchr(p, ',');
        size_t tl = comma ? (size_t)(comma - p) : strlen(p);
        if (tl == mlen && memcmp(p, method, mlen) == 0)
            return;
        p += tl + (comma ? 2 : 0);
        if (comma == NULL)
            break;
    }
    size_t need = (w->allowpos ? 2 : 0) + mlen;
    if (w->allowpos + need + 1 > w->allowlen)
        return;
    if (w->allowpos) {
        memcpy(w->allow + w->allowpos, ", ", 2);
        w->allowpos += 2;
    }
    memcpy(w->allow + w->allowpos, method, mlen);
    w->allowpos += mlen;
    w->allow[w->allowpos] = '\0';
}

static bool try_endpoints(struct walk *w, const struct endpoint *list)
{
    /* An endpoint for exactly this method wins over "*" and over GET
     * answering HEAD, whatever the declaration order. */
    const struct endpoint *e = list, *fallback = NULL;
    for (; e != NULL; e = e->next) {
        w->path_matched = true;
        if (strcmp(e->method, w->method) == 0)
            break;
        if (fallback == NULL && method_fits(e->method, w->method))
            fallback = e;
        else if (!method_fits(e->method, w->method)) {
            allow_add(w, e->method);
            if (strcmp(e->method, "GET") == 0)
                allow_add(w, "HEAD"); /* a GET route answers HEAD too */
        }
    }
    if (e == NULL)
        e = fallback;
    if (e != NULL) {
        struct mg_route_match *m = w->m;
        m->data = e->data;
        m->pattern = e->pattern;
        m->ncaptures = e->ncap;
        for (size_t i = 0; i < e->ncap; i++) {
            m->captures[i].name = e->capnames[i];
            m->captures[i].off = w->capoff[i];
            m->captures[i].len = w->caplen[i];
        }
        return true;
    }
    return false;
}

/* The next character of a path segment as RFC 3986 §6.2.2 compares them:
 * a percent-encoded unreserved character is that character ("%74" is
 * "t"); another escape stays an escape, whatever the case of its digits
 * ("%2f" is "%2F", never "/"). Returns the bytes it took; *c gets the
 * character, or 256 + the escaped byte. */
static size_t segment_char(const char *s, size_t left, int *c)
{
    int hi, lo;
    if (left >= 3 && s[0] == '%' && (hi = mg__hex_value(s[1])) >= 0 && (lo = mg__hex_value(s[2])) >= 0) {
        int v = hi * 16 + lo;
        bool unreserved = (v >= 'a' && v <= 'z') || (v >= 'A' && v <= 'Z') ||
                          (v >= '0' && v <= '9') || v == '-' || v == '.' || v == '_' || v == '~';
        *c = unreserved ? v : 256 + v;
        return 3;
    }
    *c = (unsigned char)s[0];
    return 1;
}

/* A literal segment of a pattern against a segment of a request path,
 * equal as URIs are (nginx decodes before it matches, too): /hello/%74icks
 * is /hello/ticks. */
static bool segment_is(const char *lit, size_t litlen, const char *seg, size_t seglen)
{
    if (litlen == seglen && memcmp(lit, seg, seglen) == 0)
        return true;
    if (memchr(seg, '%', seglen) == NULL && memchr(lit, '%', litlen) == NULL)
        return false;
    size_t i = 0, j = 0;
    while (i < litlen && j < seglen) {
        int a, b;
        i += segment_char(lit + i, litlen - i, &a);
        j += segment_char(seg + j, seglen - j, &b);
        if (a != b)
            return false;
    }
    return i == litlen && j == seglen;
}

/* `pos` is where the next segment starts; `more` says whether there is one
 * (the path "/a" has one segment "a", the path "/a/" two: "a" and ""). */
static bool walk(struct walk *w, const struct node *n, size_t pos, bool more)
{
    if (!more)
        return try_endpoints(w, n->ends);

    const char *seg = w->path + pos;
    const char *slash = memchr(seg, '/', w->len - pos);
    size_t seglen = slash ? (size_t)(slash - seg) : w->len - pos;
    size_t next = pos + seglen + 1;
    bool next_more = slash != NULL;

    for (size_t i = 0; i < n->nlits; i++) {
        const struct node *c = n->lits[i];
        if (segment_is(c->lit, c->litlen, seg, seglen)) {
            if (walk(w, c, next, next_more))
                return true;
            break;
        }
    }
    if (n->cap != NULL && seglen > 0 && w->ncap < MG_ROUTER_MAX_CAPTURES) {
        w->capoff[w->ncap] = pos;
        w->caplen[w->ncap] = seglen;
        w->ncap++;
        if (walk(w, n->cap, next, next_more))
            return true;
        w->ncap--;
    }
    if (n->wilds != NULL && w->ncap < MG_ROUTER_MAX_CAPTURES) {
        w->capoff[w->ncap] = pos;
        w->caplen[w->ncap] = w->len - pos;
        w->ncap++;
        if (try_endpoints(w, n->wilds))
            return true;
        w->ncap--;
    }
    return false;
}

enum mg_route_result mg_router_match(const struct mg_router *r, const char *method,
                                     const char *path, size_t pathlen,
                                     struct mg_route_match *m, char *allow, size_t allowlen)
{
    struct walk w = {
        .method = method, .path = path, .len = pathlen, .m = m,
        .allow = allow, .allowlen = allowlen,
    };
    if (allow != NULL && allowlen > 0)
        allow[0] = '\0';
    if (pathlen == 0 || path[0] != '/')
        return MG_ROUTE_NO_PATH;
    if (walk(&w, &r->root, 1, true))
        return MG_ROUTE_FOUND;
    return w.path_matched ? MG_ROUTE_NO_METHOD : MG_ROUTE_NO_PATH;
}
