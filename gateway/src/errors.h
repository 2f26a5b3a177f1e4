/*
 * Responses the gateway makes itself. Errors carry a JSON body
 * {"error", "module", "request_id"} and X-Modgate-Error: module=M;
 * incarnation=N; cause=C (module and incarnation left out when none).
 */
#ifndef GW_ERRORS_H
#define GW_ERRORS_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

#define GW_ERROR_HEADER "X-Modgate-Error"

/* `module` may be NULL and `incarnation` 0 when no module is involved.
 * *body_len receives the body's size. NULL on ENOMEM. */
struct MHD_Response *gw_error_response(const char *msg, const char *module,
                                       unsigned incarnation, const char *cause,
                                       const char *request_id, uint64_t *body_len);

/* The same error as a whole HTTP/1.1 message, head and body, closing the
 * connection, for an answer written to the socket past libmicrohttpd
 * (caller frees; *len is its size, *body_len the body's). NULL on ENOMEM. */
char *gw_error_message(int status, const char *msg, const char *module, unsigned incarnation,
                       const char *cause, const char *request_id, size_t *len,
                       uint64_t *body_len);

/* A plain answer of the gateway's own (healthz, readyz). */
struct MHD_Response *gw_local_response(const char *body, const char *content_type,
                                       const char *request_id, uint64_t *body_len);

/* Formats the X-Modgate-Error value. */
void gw_error_header_value(char *buf, size_t len, const char *module, unsigned incarnation,
                           const char *cause);

#endif
