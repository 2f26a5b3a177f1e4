/*
 * The proxy's header rules, in one place (RFC 9110 §7.6.1, RFC 9112).
 */
#ifndef GW_HEADERS_H
#define GW_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True for the hop-by-hop headers a proxy must not forward in either
 * direction: Connection, Keep-Alive, TE, Trailer, Transfer-Encoding,
 * Upgrade, Proxy-* (RFC 9110 §7.6.1). */
bool gw_header_is_hop_by_hop(const char *name, size_t len);

/* True if `name` is one of the comma-separated tokens of a Connection
 * header value (those headers are hop-by-hop too). */
bool gw_header_in_connection(const char *connection, const char *name, size_t len);

/* True for a client request header that is not passed on to the module
 * as it came: a hop-by-hop one (or one `connection` names), one the
 * gateway sets itself (X-Forwarded-For, X-Forwarded-Proto, X-Request-Id),
 * the body's framing and Expect (the way to the module frames and answers
 * them itself), and Host when an absolute-form target's authority
 * replaces it. Shared by forwarded requests and WebSocket handshakes. */
bool gw_header_not_forwarded(const char *name, size_t len, const char *connection,
                             bool has_authority);

/* True for an acceptable client-supplied X-Request-Id: 1 to 128 visible
 * ASCII characters other than '"' and '\\' (it is echoed into JSON and
 * logs). */
bool gw_request_id_valid(const char *id);

/* Room for a request id and its NUL (the longest a client may send). */
#define GW_REQUEST_ID_SIZE 132

/* The id of a request: the client's X-Request-Id (`given`, may be NULL)
 * if it is valid, else a new one of 32 hex digits drawn from `rng`, an
 * xorshift128+ state (ids need uniqueness, not secrecy; one state per
 * thread). */
void gw_request_id_pick(const char *given, uint64_t rng[2], char id[GW_REQUEST_ID_SIZE]);
/* Seeds such a state (getrandom, else the clock and `salt`). */
void gw_request_id_seed(uint64_t rng[2], const void *salt);

/* True for a request target without bytes a request line cannot carry
 * (controls, space, DEL; RFC 9112 §3.2): anything else is a 400. */
bool gw_http_target_ok(const char *s);

/* True if `value` is exactly the "chunked" transfer coding (RFC 9112 §7),
 * the only one the gateway (and libmicrohttpd) decodes. */
bool gw_te_is_chunked(const char *value);

#endif
