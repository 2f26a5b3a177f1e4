/*
 * Counters for GET /-/metrics (Prometheus text format). Writers are the
 * loops (requests) and the supervisor (restarts, probes); the admin thread
 * reads. Every field is a relaxed atomic: counters need no ordering. A
 * histogram's count is the sum of its buckets as one scrape reads them,
 * so that its +Inf bucket and count always agree; its sum may be a request
 * ahead or behind, which is harmless.
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "util.h"

#define GW_LATENCY_BUCKETS 15
#define GW_STATUS_MAX 600

enum gw_restart_reason {
    GW_RESTART_EXITED,
    GW_RESTART_SIGNALED,
    GW_RESTART_HUNG,
    GW_RESTART_START_FAILED,
    GW_RESTART_START_TIMEOUT,
    GW_RESTART_ADMIN,
    GW_RESTART_REASONS,
};

struct gw_histogram {
    atomic_uint_fast64_t buckets[GW_LATENCY_BUCKETS]; /* cumulative on output */
    atomic_uint_fast64_t sum_us;
};

struct gw_module_metrics {
    atomic_uint_fast64_t by_status[GW_STATUS_MAX];
    struct gw_histogram latency;
    struct gw_histogram probe;
    atomic_uint_fast64_t restarts[GW_RESTART_REASONS];
};

void gw_histogram_observe(struct gw_histogram *h, uint64_t us);
void gw_metrics_request(struct gw_module_metrics *m, int status, uint64_t duration_us);

struct gateway;
/* Writes the whole exposition into b. 0 or -1 (ENOMEM). */
int gw_metrics_render(struct gateway *gw, struct mg_buf *b);

const char *gw_restart_reason_name(enum gw_restart_reason r);

#endif
