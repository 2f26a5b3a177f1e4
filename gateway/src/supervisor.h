/*
 * The supervisor: the gateway's main thread. It starts, watches and
 * restarts the module processes and turns signals into actions.
 *
 * Everything it reacts to is a descriptor in one epoll set: a signalfd
 * (SIGTERM, SIGINT, SIGHUP), an eventfd other threads write to, and per
 * process a pidfd (readable at exit, so an exit is noticed at once) and
 * the read end of its readiness pipe (the child writes one byte once it
 * listens: readiness is the child's word, not a timer). Deadlines (ready
 * timeouts, restart backoff, stop timeouts) set the epoll timeout.
 */
#ifndef GW_SUPERVISOR_H
#define GW_SUPERVISOR_H

#include <stdbool.h>
#include <stddef.h>

struct gateway;
struct gw_supervisor;

/* Blocks the signals it handles in the calling thread (call before any
 * other thread is created, so that they inherit the mask). */
struct gw_supervisor *gw_supervisor_new(struct gateway *gw, char *err, size_t errlen);

/* Starts every enabled module and returns once each is ready or has
 * failed to start (it will be retried with backoff): true; false if a
 * stop was asked for meanwhile (gw_supervisor_run then stops them). */
bool gw_supervisor_start_modules(struct gw_supervisor *s);

/* Supervises until SIGTERM or SIGINT, then drains the loops, stops the
 * modules and returns the process exit code. */
int gw_supervisor_run(struct gw_supervisor *s);

/* Wakes the supervisor from another thread. */
void gw_supervisor_wake(struct gw_supervisor *s);

void gw_supervisor_free(struct gw_supervisor *s);

#endif
