/*
 * The systemd notification protocol (sd_notify(3)), without libsystemd:
 * one datagram per message to $NOTIFY_SOCKET. Everything is a no-op when
 * the variable is not set.
 */
#ifndef GW_NOTIFY_H
#define GW_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC once; true if a manager listens. */
bool gw_notify_init(void);
/* Sends one message ("READY=1", "STATUS=...", ...); 0 or -errno. */
int gw_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The watchdog interval to keep (half of WATCHDOG_USEC), in ms; 0 if none. */
uint64_t gw_notify_watchdog_ms(void);
void gw_notify_close(void);

#endif
