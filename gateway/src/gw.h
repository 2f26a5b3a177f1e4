/*
 * The gateway as a whole: configuration, module handles, the route table
 * and the listeners, shared (read-only after startup) by every thread.
 */
#ifndef GW_GW_H
#define GW_GW_H

#include <stdatomic.h>
#include <stdbool.h>

#include "config.h"
#include "metrics.h"
#include "module.h"
#include "router.h"

struct gw_loop;
struct gw_admin;
struct gw_supervisor;

struct gateway {
    struct gw_config cfg;
    struct gw_module *modules;  /* enabled modules, in name order */
    size_t nmodules;
    struct mg_router *routes;   /* data: struct gw_module * */
    char *run_dir;              /* 0700 directory of the module sockets */
    int listen_fd;
    char listen_addr[128];
    int admin_fd;
    char admin_addr[128];
    int access_fd;              /* LOG_DIR/access.log, O_APPEND */
    char *access_path;
    struct gw_loop **loops;
    unsigned nloops;
    struct gw_admin *admin;
    struct gw_supervisor *supervisor;
    atomic_uint loops_running;  /* loop threads not yet finished */
    atomic_uint loops_draining; /* loops that no longer accept */
    atomic_uint connections;    /* open client connections, all loops */
    struct gw_module_metrics unrouted; /* requests no module took */
    atomic_bool stopping;
};

/* Wakes every loop to look at requests whose module process died. */
void gw_notify_module_died(struct gateway *gw);
/* Asks the supervisor for a zero-downtime restart of `m` (admin API). */
void gw_request_restart(struct gateway *gw, struct gw_module *m);

#endif
