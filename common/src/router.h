/*
 * Route table: method + path pattern -> caller's data.
 *
 * Patterns are '/'-separated segments: a literal, a capture `{name}`, or a
 * final `*` that matches one or more remaining segments. When several
 * patterns match a path, a literal segment beats a capture, which beats
 * the wildcard, segment by segment from the left. Method "*" matches any
 * method; a GET route also answers HEAD.
 *
 * Shared by the gateway (one table over all modules, to pick the module)
 * and the module runtime (one table per module, to pick the handler).
 * Not thread-safe for writes; concurrent matches on a finished table are.
 */
#ifndef MG_ROUTER_H
#define MG_ROUTER_H

#include <stddef.h>

#define MG_ROUTER_MAX_CAPTURES 16

struct mg_router;

struct mg_route_capture {
    const char *name;  /* borrowed from the table */
    size_t off, len;   /* into the matched path, still percent-encoded */
};

struct mg_route_match {
    void *data;
    const char *pattern; /* the matched route's pattern, borrowed */
    size_t ncaptures;
    struct mg_route_capture captures[MG_ROUTER_MAX_CAPTURES];
};

enum mg_route_result { MG_ROUTE_FOUND, MG_ROUTE_NO_PATH, MG_ROUTE_NO_METHOD };

struct mg_router *mg_router_new(void);
void mg_router_free(struct mg_router *r);

/* Adds a route. Returns 0; -EINVAL for a bad pattern or method (err says
 * why); -EEXIST when a route with the same method and pattern shape is
 * there already (*dup_data, if not NULL, is set to its data); -ENOMEM. */
int mg_router_add(struct mg_router *r, const char *method, const char *pattern,
                  void *data, void **dup_data, char *err, size_t errlen);

/* Matches `path` (up to `pathlen` bytes, no query string). On
 * MG_ROUTE_NO_METHOD, `allow` (if not NULL) receives the comma-separated
 * methods the path accepts, truncated to allowlen (which is sized by the
 * caller from mg_router_allow_max). */
enum mg_route_result mg_router_match(const struct mg_router *r, const char *method,
                                     const char *path, size_t pathlen,
                                     struct mg_route_match *m, char *allow, size_t allowlen);

/* The longest Allow value mg_router_match can produce, plus its NUL. */
size_t mg_router_allow_max(const struct mg_router *r);

/* Checks a pattern without adding it; 0 or -EINVAL with err filled. */
int mg_router_check_pattern(const char *pattern, char *err, size_t errlen);

#endif
