/*
 * Health probes: GET /-/probe to a module process over its socket, through
 * the same handler path as requests (the module runs its MG_HEALTH check,
 * if it has one). The supervisor drives them: one curl multi handle whose
 * sockets live in the supervisor's epoll set, one probe at a time per
 * process, each bounded by a timeout.
 */
#ifndef GW_PROBER_H
#define GW_PROBER_H

#include <stdbool.h>
#include <stdint.h>

struct gw_prober;
struct gw_incarnation;

/* How a finished probe went: `ok` with its round trip, or a miss with why. */
typedef void (*gw_probe_done_fn)(void *ctx, struct gw_incarnation *inc, bool ok, uint64_t rtt_us,
                                 const char *why);

/* The prober registers curl's sockets in `epfd` with tags made by
 * gw_prober_tag(fd); the caller passes their events back. */
struct gw_prober *gw_prober_new(int epfd, gw_probe_done_fn done, void *ctx);
void gw_prober_free(struct gw_prober *p);

/* Starts a probe of `inc` (holding a reference on it until it finishes or
 * is cancelled). 0 or -1. */
int gw_prober_start(struct gw_prober *p, struct gw_incarnation *inc, unsigned timeout_ms);
/* Drops the probe of `inc`, if any, without calling `done`. */
void gw_prober_cancel(struct gw_prober *p, struct gw_incarnation *inc);

/* epoll tags of the prober's sockets: low 3 bits GW_PROBER_TAG. */
#define GW_PROBER_TAG 4u
bool gw_prober_owns(uint64_t tag);
void gw_prober_event(struct gw_prober *p, uint64_t tag, uint32_t events);
/* Runs curl's timeout if due and reports finished probes; returns the next
 * deadline (monotonic ms) or UINT64_MAX. */
uint64_t gw_prober_run(struct gw_prober *p, uint64_t now_ms);

#endif
