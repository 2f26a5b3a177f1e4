/*
 * Client connections of a loop, timed while a request line is due: the
 * head's own timeout (request_timeout_ms, a 408) starts only once
 * libmicrohttpd has the whole request line, and its idle timeout restarts
 * at every byte, so a line sent a byte at a time would hold a connection
 * slot forever (slowloris). As nginx's client_header_timeout, a
 * connection that has not completed its request line in time is closed:
 * request_timeout_ms from accept, or, on a kept-alive connection, the
 * keep-alive idle time plus request_timeout_ms from its last answer.
 * And when a loop is at its share of max_connections, an idle kept-alive
 * connection gives way to a client waiting to connect.
 */
#ifndef GW_CLIENT_CONN_H
#define GW_CLIENT_CONN_H

#include <microhttpd.h>
#include <stdint.h>

struct gw_loop;

/* libmicrohttpd's connection notifications (NOTIFY_CONNECTION). */
void gw_client_conn_started(struct gw_loop *l, int fd, void **socket_context);
void gw_client_conn_closed(struct gw_loop *l, void **socket_context);
/* A request line has come whole (the URI callback). Returns when the
 * connection's first request began (its accept, in ms) for the head's own
 * timeout to count from, or 0 for a later request (count from now). */
uint64_t gw_client_conn_line_done(struct MHD_Connection *conn);
/* A request has ended (at now_ms); the connection may wait for another. */
void gw_client_conn_request_done(struct gw_loop *l, struct MHD_Connection *conn, uint64_t now_ms);
/* Closes connections past their deadline; the next deadline (ms), or
 * UINT64_MAX. */
uint64_t gw_client_conn_run_timers(struct gw_loop *l, uint64_t now);

/* libmicrohttpd's idle timeout of a client connection, in seconds. */
#define GW_CLIENT_IDLE_S 90

#endif
