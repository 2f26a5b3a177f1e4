#include "metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "gw.h"

/* Bucket bounds in microseconds: 0.5 ms to 10 s. */
static const uint64_t bounds_us[GW_LATENCY_BUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000, UINT64_MAX,
};

void gw_histogram_observe(struct gw_histogram *h, uint64_t us)
{
    size_t i = 0;
    while (i < GW_LATENCY_BUCKETS - 1 && us > bounds_us[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

void gw_metrics_request(struct gw_module_metrics *m, int status, uint64_t duration_us)
{
    if (status > 0 && status < GW_STATUS_MAX)
        atomic_fetch_add_explicit(&m->by_status[status], 1, memory_order_relaxed);
    gw_histogram_observe(&m->latency, duration_us);
}

const char *gw_restart_reason_name(enum gw_restart_reason r)
{
    static const char *const names[] = {
        [GW_RESTART_EXITED] = "exited",       [GW_RESTART_SIGNALED] = "signaled",
        [GW_RESTART_HUNG] = "hung",           [GW_RESTART_START_FAILED] = "start_failed",
        [GW_RESTART_START_TIMEOUT] = "start_timeout", [GW_RESTART_ADMIN] = "admin",
    };
    return (unsigned)r < GW_RESTART_REASONS ? names[r] : "unknown";
}

static uint64_t load(atomic_uint_fast64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static int histogram(struct mg_buf *b, const char *name, const char *module,
                     struct gw_histogram *h)
{
    int rc = 0;
    uint64_t cum = 0;
    for (size_t i = 0; i < GW_LATENCY_BUCKETS; i++) {
        cum += load(&h->buckets[i]);
        if (bounds_us[i] == UINT64_MAX)
            rc |= mg__buf_printf(b, "%s_bucket{module=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name,
                                 module, cum);
        else
            rc |= mg__buf_printf(b, "%s_bucket{module=\"%s\",le=\"%g\"} %" PRIu64 "\n", name,
                                 module, (double)bounds_us[i] / 1e6, cum);
    }
    rc |= mg__buf_printf(b, "%s_sum{module=\"%s\"} %.6f\n", name, module,
                         (double)load(&h->sum_us) / 1e6);
    /* The count is the +Inf bucket as read above: a request observed
     * while this runs must not make them differ (Prometheus wants them
     * equal). */
    rc |= mg__buf_printf(b, "%s_count{module=\"%s\"} %" PRIu64 "\n", name, module, cum);
    return rc;
}

static int requests(struct mg_buf *b, const char *module, struct gw_module_metrics *m)
{
    int rc = 0;
    for (int s = 100; s < GW_STATUS_MAX; s++) {
        uint64_t v = load(&m->by_status[s]);
        if (v > 0)
            rc |= mg__buf_printf(b, "modgate_requests_total{module=\"%s\",status=\"%d\"} %" PRIu64
                                 "\n", module, s, v);
    }
    return rc;
}

int gw_metrics_render(struct gateway *gw, struct mg_buf *b)
{
    int rc = 0;
    rc |= mg__buf_printf(b, "# HELP modgate_requests_total Requests answered, by module and status "
                            "(module \"\" for requests no module took).\n"
                            "# TYPE modgate_requests_total counter\n");
    for (size_t i = 0; i < gw->nmodules; i++)
        rc |= requests(b, gw->modules[i].name, &gw->modules[i].metrics);
    rc |= requests(b, "", &gw->unrouted);

    rc |= mg__buf_printf(b, "# HELP modgate_request_duration_seconds Time from the request to the "
                            "end of its answer.\n"
                            "# TYPE modgate_request_duration_seconds histogram\n");
    for (size_t i = 0; i < gw->nmodules; i++)
        rc |= histogram(b, "modgate_request_duration_seconds", gw->modules[i].name,
                        &gw->modules[i].metrics.latency);
    rc |= histogram(b, "modgate_request_duration_seconds", "", &gw->unrouted.latency);

    rc |= mg__buf_printf(b, "# HELP modgate_requests_in_flight Requests being forwarded now.\n"
                            "# TYPE modgate_requests_in_flight gauge\n");
    for (size_t i = 0; i < gw->nmodules; i++)
        rc |= mg__buf_printf(b, "modgate_requests_in_flight{module=\"%s\"} %ld\n",
                             gw->modules[i].name, atomic_load(&gw->modules[i].active));

    rc |= mg__buf_printf(b, "# HELP modgate_module_restarts_total Module restarts, by reason.\n"
                            "# TYPE modgate_module_restarts_total counter\n");
    for (size_t i = 0; i < gw->nmodules; i++)
        for (int r = 0; r < GW_RESTART_REASONS; r++)
            rc |= mg__buf_printf(b, "modgate_module_restarts_total{module=\"%s\",reason=\"%s\"} %"
                                 PRIu64 "\n", gw->modules[i].name,
                                 gw_restart_reason_name((enum gw_restart_reason)r),
                                 load(&gw->modules[i].metrics.restarts[r]));

    rc |= mg__buf_printf(b, "# HELP modgate_probe_duration_seconds Round trip of health probes "
                            "that answered.\n"
                            "# TYPE modgate_probe_duration_seconds histogram\n");
    for (size_t i = 0; i < gw->nmodules; i++)
        rc |= histogram(b, "modgate_probe_duration_seconds", gw->modules[i].name,
                        &gw->modules[i].metrics.probe);

    rc |= mg__buf_printf(b, "# HELP modgate_module_up 1 while the module is ready.\n"
                            "# TYPE modgate_module_up gauge\n");
    for (size_t i = 0; i < gw->nmodules; i++) {
        struct gw_module *m = &gw->modules[i];
        pthread_mutex_lock(&m->mu);
        int up = m->state == GW_READY && m->serving != NULL;
        pthread_mutex_unlock(&m->mu);
        rc |= mg__buf_printf(b, "modgate_module_up{module=\"%s\"} %d\n", m->name, up);
    }
    /* Its own group: the text format wants each family's lines together. */
    rc |= mg__buf_printf(b, "# HELP modgate_module_incarnation Incarnation number of the module's "
                            "process (the one /-/modules shows).\n"
                            "# TYPE modgate_module_incarnation gauge\n");
    for (size_t i = 0; i < gw->nmodules; i++) {
        struct gw_module *m = &gw->modules[i];
        pthread_mutex_lock(&m->mu);
        unsigned inc = m->incarnations;
        pthread_mutex_unlock(&m->mu);
        rc |= mg__buf_printf(b, "modgate_module_incarnation{module=\"%s\"} %u\n", m->name, inc);
    }
    rc |= mg__buf_printf(b, "# HELP modgate_connections Open client connections.\n"
                            "# TYPE modgate_connections gauge\n"
                            "modgate_connections %u\n", atomic_load(&gw->connections));
    return rc;
}
