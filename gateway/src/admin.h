/*
 * The admin listener (loopback by default) and the two admin endpoints
 * also served on the public listener (/-/healthz, /-/readyz).
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <stddef.h>

struct gateway;
struct gw_admin;

/* Starts the admin HTTP server on gw->admin_fd (its own thread). */
struct gw_admin *gw_admin_start(struct gateway *gw, char *err, size_t errlen);
void gw_admin_stop(struct gw_admin *a);

/* The methods /-/healthz and /-/readyz take. */
#define GW_ADMIN_PUBLIC_ALLOW "GET, HEAD"

/* For the public listener: if `path` is /-/healthz or /-/readyz, returns
 * the status and sets *body (caller frees) and *ctype; else 0. For another
 * method than GW_ADMIN_PUBLIC_ALLOW's it returns 405 with *body NULL (the
 * caller answers with its error body and Allow); otherwise a NULL *body
 * with a status means out of memory. */
int gw_admin_public(struct gateway *gw, const char *method, const char *target, size_t pathlen,
                    const char **body, const char **ctype);

#endif
