/*
 * Module handles: what the gateway knows of one module and of each of its
 * processes (incarnations).
 *
 * The supervisor (main thread) owns the processes and is the only writer.
 * Event loops read the handle to route requests: under the handle's mutex
 * they take a reference on the incarnation that is serving, which keeps it
 * allocated (not alive) while their request runs. The supervisor holds a
 * reference for as long as the process exists; whoever drops the last one
 * frees the incarnation.
 */
#ifndef GW_MODULE_H
#define GW_MODULE_H

#include <modgate/module.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "config.h"
#include "metrics.h"

enum gw_state {
    GW_STARTING,
    GW_READY,
    GW_UNHEALTHY,
    GW_RESTARTING,
    GW_FAILED,
    GW_STOPPING,
    GW_STOPPED,
};

const char *gw_state_name(enum gw_state s);

struct gw_module;
struct probe;

struct gw_incarnation {
    atomic_int refs;
    struct gw_module *mod;
    unsigned number;
    pid_t pid;
    char *socket_path;
    time_t started_at;          /* wall clock, for the admin API */
    /* How it ended: written by the supervisor before `dead` is set. */
    atomic_bool dead;
    const char *cause;          /* "exited", "signaled", "hung", "start_timeout", ... */
    char death[192];            /* "exited with code 3", "killed by signal 6 (SIGABRT)" */

    /* Supervisor only. */
    int pidfd;
    int ready_fd;
    struct probe *probe;        /* the probe in flight, if any */
    unsigned probe_misses;      /* in a row */
    uint64_t next_probe_ms;
    bool draining;              /* replaced: stop once its requests are done */
    bool ready;
    bool kill_sent;             /* we SIGKILLed it; `cause` says why */
    bool stop_sent;             /* we asked it to stop (gateway shutdown) */
    uint64_t deadline_ms;       /* ready or stop deadline, 0 = none */
    struct gw_incarnation *next_live;
};

struct gw_module {
    char *name;
    const mg_module *desc;
    const struct gw_module_conf *conf;
    char *log_path;
    int log_fd;                 /* supervisor's, O_APPEND; given to children */
    atomic_long active;         /* requests in flight */
    struct gw_module_metrics metrics;

    pthread_mutex_t mu;         /* guards the fields below */
    struct gw_incarnation *serving; /* takes new requests; NULL when none */
    enum gw_state state;
    uint64_t retry_at_ms;       /* monotonic: when the next start is due */
    unsigned restarts;
    unsigned incarnations;
    char last_exit[192];
    char last_restart_error[400]; /* why the last admin restart failed; "" once one works */
    pid_t pid;                  /* of the live process, 0 if none */
    time_t started_at;
    int64_t last_probe_rtt_us;  /* -1: no probe answered yet */

    /* Supervisor only. */
    struct gw_incarnation *current; /* the live process, serving or starting */
    unsigned backoff_ms;
    uint64_t restart_due_ms;    /* 0: no restart scheduled */
    int restart_why;            /* its enum gw_restart_reason, counted when it happens */
    uint64_t ready_since_ms;
    uint64_t *restart_times;    /* ring of recent restart times (ms) */
    size_t nrestart_times;
    struct gw_incarnation *replacing; /* an admin restart's new process, starting */
    atomic_bool restart_requested;    /* set by the admin thread */
};

/* Takes a reference on the serving incarnation, or returns NULL and tells
 * the module's state, its latest incarnation number and when it may be back
 * (for 503 + Retry-After). */
struct gw_incarnation *gw_module_acquire(struct gw_module *m, enum gw_state *state,
                                         unsigned *incarnation, uint64_t *retry_at_ms);
void gw_incarnation_release(struct gw_incarnation *inc);

/* Allocates an incarnation holding one reference (the supervisor's). */
struct gw_incarnation *gw_incarnation_new(struct gw_module *m, unsigned number,
                                          const char *socket_path);

#endif
