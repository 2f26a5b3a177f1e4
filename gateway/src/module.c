#include "module.h"

#include <stdlib.h>
#include <string.h>

const char *gw_state_name(enum gw_state s)
{
    static const char *const names[] = {
        [GW_STARTING] = "starting", [GW_READY] = "ready",       [GW_UNHEALTHY] = "unhealthy",
        [GW_RESTARTING] = "restarting", [GW_FAILED] = "failed", [GW_STOPPING] = "stopping",
        [GW_STOPPED] = "stopped",
    };
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

struct gw_incarnation *gw_module_acquire(struct gw_module *m, enum gw_state *state,
                                         unsigned *incarnation, uint64_t *retry_at_ms)
{
    pthread_mutex_lock(&m->mu);
    struct gw_incarnation *inc = m->serving;
    if (inc != NULL)
        atomic_fetch_add_explicit(&inc->refs, 1, memory_order_relaxed);
    *state = m->state;
    *incarnation = m->incarnations;
    *retry_at_ms = m->retry_at_ms;
    pthread_mutex_unlock(&m->mu);
    return inc;
}

void gw_incarnation_release(struct gw_incarnation *inc)
{
    if (inc == NULL)
        return;
    if (atomic_fetch_sub_explicit(&inc->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(inc->socket_path);
    free(inc);
}

struct gw_incarnation *gw_incarnation_new(struct gw_module *m, unsigned number,
                                          const char *socket_path)
{
    struct gw_incarnation *inc = calloc(1, sizeof(*inc));
    if (inc == NULL)
        return NULL;
    inc->socket_path = strdup(socket_path);
    if (inc->socket_path == NULL) {
        free(inc);
        return NULL;
    }
    atomic_init(&inc->refs, 1);
    atomic_init(&inc->dead, false);
    inc->mod = m;
    inc->number = number;
    inc->pidfd = -1;
    inc->ready_fd = -1;
    return inc;
}
