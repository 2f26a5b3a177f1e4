/*
 * Listening sockets from "HOST:PORT" ("[v6]:PORT", port 0 = any free port)
 * or "unix:PATH" specs. Shared by the gateway's listeners and the module
 * runtime.
 */
#ifndef MG_LISTEN_H
#define MG_LISTEN_H

#include <stddef.h>

/* Returns a listening, non-blocking, close-on-exec socket, or -1 with err
 * filled. A stale Unix socket file at PATH is replaced. */
int mg__listen(const char *spec, char *err, size_t errlen);

/* Writes the socket's bound address as "HOST:PORT" ("[v6]:PORT") or
 * "unix:PATH"; 0 or -1. */
int mg__listen_address(int fd, char *buf, size_t len);

/* Parses "HOST:PORT" without resolving: 0 if well-formed with a port from
 * 0 to 65535, else -1. */
int mg__check_host_port(const char *spec);

#endif
