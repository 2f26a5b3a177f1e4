/*
 * WebSocket tunnels (SPEC §4): a request with `Upgrade: websocket` on a
 * module's route is sent to the module as an HTTP/1.1 handshake on a
 * connection of its own; if the module answers 101, the client gets the
 * 101 and from then on bytes are relayed both ways, frames and close
 * included, until either side closes or the tunnel is silent for
 * stream_idle_timeout_ms.
 *
 * libcurl 7.88 as built by Debian has no WebSocket support, and a tunnel
 * is a byte relay rather than an HTTP exchange, so the gateway speaks to
 * the module's Unix socket directly here. Everything runs on the loop.
 */
#ifndef GW_TUNNEL_H
#define GW_TUNNEL_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>

struct request;
struct gw_loop;

/* True for a WebSocket handshake request. */
bool gw_tunnel_wanted(struct MHD_Connection *conn, const char *method, const char *connection);

/* Connects to the module and sends the handshake; the answer arrives
 * through gw_tunnel_module_event. 0, or -1 with an error answer set. */
int gw_tunnel_start(struct request *r);

/* The response to queue once the module said 101 (NULL on ENOMEM). */
struct MHD_Response *gw_tunnel_response(struct request *r);

/* Socket events on the module side (mfd) and, once upgraded, the client
 * side (cfd). */
void gw_tunnel_module_event(struct request *r, uint32_t events);
void gw_tunnel_client_event(struct request *r, uint32_t events);

/* Ends the tunnel or the handshake at once (idle, shutdown, completion). */
void gw_tunnel_close(struct request *r);

#endif
