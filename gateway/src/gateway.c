/*
 * mg_gateway_main: command line, startup and shutdown of the gateway.
 *
 * Startup order matters: signals are blocked (by the supervisor) before any
 * thread exists, so every thread inherits the mask and only the
 * supervisor's signalfd sees them; modules are started and waited for
 * before the loops accept requests; the ready line is printed last.
 */
#include <modgate/gateway.h>

#include <curl/curl.h>
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.h"
#include "config.h"
#include "gw.h"
#include "listen.h"
#include "logfile.h"
#include "loop.h"
#include "registry.h"
#include "rundir.h"
#include "supervisor.h"
#include "util.h"

#ifndef MODGATE_VERSION
#define MODGATE_VERSION "0.0.0"
#endif

void gw_notify_module_died(struct gateway *gw)
{
    for (unsigned i = 0; i < gw->nloops; i++)
        gw_loop_command(gw->loops[i], GW_CMD_DEATH);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: modgate [--config FILE] [--listen HOST:PORT] [--admin-listen HOST:PORT]\n"
            "               [--log-dir DIR] [--help] [--version]\n"
            "       modgate --module NAME --listen HOST:PORT|unix:PATH\n"
            "\n"
            "Runs the modgate gateway: every enabled module in its own process, behind one\n"
            "HTTP listener. Flags override the config file; the config file overrides the\n"
            "embedded defaults (listen 127.0.0.1:8080, admin 127.0.0.1:9901, log dir ./logs).\n"
            "Port 0 picks a free port. Options with a value also take --option=VALUE.\n"
            "With --module, runs one module alone.\n"
            "\n"
            "modules:");
    size_t n;
    const mg_module *const *mods = mg__modules(&n);
    for (size_t i = 0; i < n; i++)
        fprintf(f, " %s", mods[i]->name);
    fprintf(f, "\n");
}

/* A value that cannot be used, named as the user gave it: a flag, or a
 * key of the config file (with the file's name, as other config errors). */
static void value_error(const char *config_path, const char *key, const char *why)
{
    if (key[0] == '-')
        fprintf(stderr, "modgate: %s: %s\n", key, why);
    else
        fprintf(stderr, "modgate: config error: %s%s%s: %s\n", config_path ? config_path : "",
                config_path ? ": " : "", key, why);
}

static int mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (p == NULL)
        return -ENOMEM;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            return -e;
        }
        *s = '/';
    }
    int rc = mkdir(p, 0755) != 0 && errno != EEXIST ? -errno : 0;
    free(p);
    return rc;
}

/* Raises the descriptor limit to what max_connections needs (a client
 * socket and a module connection each, plus a margin), and lowers
 * max_connections where the system will not allow that many: refusing a
 * connection beats accepting one we cannot forward. */
static void fit_fd_limit(struct gw_config *c)
{
    const rlim_t margin = 1024;
    rlim_t want = (rlim_t)c->limits.max_connections * 2 + margin;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
        struct rlimit more = { want, want }; /* where we may raise the hard limit */
        if (setrlimit(RLIMIT_NOFILE, &more) == 0)
            return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        unsigned fit = rl.rlim_cur > 2 * margin ? (unsigned)((rl.rlim_cur - margin) / 2) : 64;
        fprintf(stderr, "modgate: warning: the descriptor limit (%llu) allows %u connections, "
                "not limits.max_connections %u; using %u\n", (unsigned long long)rl.rlim_cur,
                fit, c->limits.max_connections, fit);
        c->limits.max_connections = fit;
    }
}

static char *path_join(const char *dir, const char *name)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* Builds the route table; two modules declaring the same method and path
 * is an error naming both. */
static int build_routes(struct gateway *gw, char *err, size_t errlen)
{
    gw->routes = mg_router_new();
    if (gw->routes == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < gw->nmodules; i++) {
        struct gw_module *m = &gw->modules[i];
        for (size_t j = 0; j < m->desc->nroutes; j++) {
            const mg_route *r = &m->desc->routes[j];
            if (r->kind == MG_ROUTE_HEALTH || r->kind == MG_ROUTE_INIT)
                continue;
            void *dup = NULL;
            char why[512];
            int rc = mg_router_add(gw->routes, r->method, r->pattern, m, &dup, why, sizeof(why));
            if (rc == -EEXIST) {
                /* why: "NEW conflicts with OLD" */
                struct gw_module *other = dup;
                const char *old = strstr(why, " conflicts with ");
                snprintf(err, errlen, "route conflict: module %s declares %s %s, which module %s "
                         "already serves as %s", m->name, r->method[0] == '*' ? "ANY" : r->method,
                         r->pattern, other->name, old ? old + 16 : "a route of its own");
                return rc;
            }
            if (rc != 0) {
                snprintf(err, errlen, "module %s: %s", m->name, rc == -ENOMEM ? "out of memory" : why);
                return rc;
            }
        }
    }
    return 0;
}

static int setup_modules(struct gateway *gw, char *err, size_t errlen)
{
    const struct gw_config *c = &gw->cfg;
    gw->modules = calloc(c->nmodules ? c->nmodules : 1, sizeof(*gw->modules));
    if (gw->modules == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < c->nmodules; i++) {
        if (!c->modules[i].enabled)
            continue;
        struct gw_module *m = &gw->modules[gw->nmodules++];
        m->conf = &c->modules[i];
        m->name = c->modules[i].name;
        m->desc = mg__module_find(m->name);
        m->log_fd = -1;
        m->last_probe_rtt_us = -1;
        pthread_mutex_init(&m->mu, NULL);
        char file[300];
        snprintf(file, sizeof(file), "%s.log", m->name);
        m->log_path = path_join(c->log_dir, file);
        if (m->log_path == NULL)
            return -ENOMEM;
        m->log_fd = gw_open_log(m->log_path);
        if (m->log_fd < 0) {
            snprintf(err, errlen, "cannot open %s: %s", m->log_path, strerror(-m->log_fd));
            return m->log_fd;
        }
    }
    return 0;
}

static int make_run_dir(struct gateway *gw, char *err, size_t errlen)
{
    const char *tmp = getenv("TMPDIR");
    char *tmpl = gw_run_dir_create(tmp && tmp[0] ? tmp : "/tmp", err, errlen);
    if (tmpl == NULL)
        return -1;
    gw->run_dir = tmpl;
    size_t limit = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    for (size_t i = 0; i < gw->nmodules; i++) {
        size_t need = strlen(tmpl) + 1 + strlen(gw->modules[i].name) + strlen(".4294967295.sock");
        if (need > limit) {
            snprintf(err, errlen,
                     "socket path for module %s would be %zu bytes (%s/%s.N.sock), longer than "
                     "the system's limit of %zu; set TMPDIR to a shorter directory",
                     gw->modules[i].name, need, tmpl, gw->modules[i].name, limit);
            return -ENAMETOOLONG;
        }
    }
    return 0;
}

static void print_modules(struct gateway *gw)
{
    for (size_t i = 0; i < gw->nmodules; i++) {
        struct gw_module *m = &gw->modules[i];
        pthread_mutex_lock(&m->mu);
        enum gw_state st = m->state;
        pid_t pid = m->pid;
        char sock[4096] = "-";
        if (m->serving != NULL)
            snprintf(sock, sizeof(sock), "%s", m->serving->socket_path);
        char last[192];
        snprintf(last, sizeof(last), "%s", m->last_exit);
        pthread_mutex_unlock(&m->mu);
        if (st == GW_READY) {
            printf("modgate: module %s ready: pid %d, socket %s, routes", m->name, (int)pid, sock);
            const char *sep = " ";
            for (size_t j = 0; j < m->desc->nroutes; j++) {
                const mg_route *r = &m->desc->routes[j];
                if (r->kind == MG_ROUTE_HEALTH || r->kind == MG_ROUTE_INIT)
                    continue;
                printf("%s%s %s", sep, r->method[0] == '*' ? "ANY" : r->method, r->pattern);
                sep = ", ";
            }
            printf("\n");
        } else {
            printf("modgate: module %s not ready (%s): %s; see %s\n", m->name, gw_state_name(st),
                   last[0] ? last : "start failed", m->log_path);
        }
    }
}

/* A listen value can be well-formed and still name nothing we can listen
 * on: a host that does not resolve (999.1.1.1, no-such-host.invalid) or an
 * address that is not this machine's. Both are bad values, a startup error
 * naming the key (SPEC §3, exit 2), found here by resolving the host the
 * way mg__listen does and binding its first address to port 0. A port in
 * use is not the value's fault and is left to mg__listen (exit 1). */
static int check_listen_address(const char *spec, char *why, size_t whylen)
{
    const char *colon = strrchr(spec, ':');
    if (colon == NULL)
        return 0; /* mg__check_host_port has refused it already */
    size_t hl = (size_t)(colon - spec);
    if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') {
        spec++;
        hl -= 2;
    }
    char *host = strndup(spec, hl);
    if (host == NULL) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
    int gai = getaddrinfo(host[0] ? host : NULL, "0", &hints, &ai);
    int rc = 0;
    if (gai != 0) {
        snprintf(why, whylen, "cannot resolve \"%s\": %s", host,
                 gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
        rc = -EINVAL;
    } else {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 &&
            (errno == EADDRNOTAVAIL || errno == EAFNOSUPPORT)) {
            snprintf(why, whylen, "\"%s\" is not an address of this machine: %s", host,
                     strerror(errno));
            rc = -EINVAL;
        }
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
    }
    free(host);
    return rc;
}

/* True if the two HOST:PORT specs would take the same port on the same
 * address: the two listeners cannot share one (port 0 picks two). */
static bool same_listen_address(const char *a, const char *b)
{
    const char *ca = strrchr(a, ':'), *cb = strrchr(b, ':');
    if (ca == NULL || cb == NULL || strcmp(ca + 1, cb + 1) != 0 || strcmp(ca + 1, "0") == 0)
        return false;
    size_t la = (size_t)(ca - a), lb = (size_t)(cb - b);
    static const char *const any[] = { "", "0.0.0.0", "[::]", "*" };
    for (size_t i = 0; i < sizeof(any) / sizeof(any[0]); i++)
        if ((la == strlen(any[i]) && strncmp(a, any[i], la) == 0) ||
            (lb == strlen(any[i]) && strncmp(b, any[i], lb) == 0))
            return true;
    return la == lb && strncasecmp(a, b, la) == 0;
}

/* Finds the value of option `name` ("--listen") in argv[*i], given as
 * "--listen VALUE" or "--listen=VALUE"; NULL if argv[*i] is another option.
 * Sets *missing when the option is there without a value. */
static const char *option_value(int argc, char **argv, int *i, const char *name, bool *missing)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

/* One event loop per CPU, or MODGATE_LOOPS of them (1 to 64); a value
 * that is not such a number is said so and ignored, not read as 1. */
static unsigned loop_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    const char *env = getenv("MODGATE_LOOPS");
    if (env != NULL) {
        unsigned long long v;
        if (mg__parse_ulong(env, 64, &v) == 0 && v >= 1)
            n = (long)v;
        else
            fprintf(stderr, "modgate: warning: MODGATE_LOOPS=%s is not a number from 1 to 64; "
                    "using %ld\n", env, n < 1 ? 1 : n > 64 ? 64 : n);
    }
    if (n < 1)
        n = 1;
    if (n > 64)
        n = 64;
    return (unsigned)n;
}

static void gateway_free(struct gateway *gw)
{
    for (unsigned i = 0; i < gw->nloops; i++)
        gw_loop_join_free(gw->loops[i]);
    free(gw->loops);
    gw->loops = NULL;
    gw->nloops = 0;
    gw_admin_stop(gw->admin);
    gw_supervisor_free(gw->supervisor);
    if (gw->listen_fd >= 0)
        close(gw->listen_fd);
    if (gw->admin == NULL && gw->admin_fd >= 0)
        close(gw->admin_fd);
    if (gw->run_dir != NULL)
        rmdir(gw->run_dir);
    free(gw->run_dir);
    for (size_t i = 0; i < gw->nmodules; i++) {
        struct gw_module *m = &gw->modules[i];
        if (m->log_fd >= 0)
            close(m->log_fd);
        free(m->log_path);
        free(m->restart_times);
        pthread_mutex_destroy(&m->mu);
    }
    free(gw->modules);
    mg_router_free(gw->routes);
    if (gw->access_fd >= 0)
        close(gw->access_fd);
    free(gw->access_path);
    gw_log_close();
    gw_config_free(&gw->cfg);
}

int mg_gateway_main(int argc, char **argv)
{
    mg__std_fds_open();
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--module") == 0 || strncmp(argv[i], "--module=", 9) == 0)
            return mg_module_main(argc, argv);

    const char *config_path = NULL, *listen = NULL, *admin_listen = NULL, *log_dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("modgate %s\n", MODGATE_VERSION);
            return 0;
        }
        static const char *const names[] = { "--config", "--listen", "--admin-listen",
                                             "--log-dir" };
        const char **slots[] = { &config_path, &listen, &admin_listen, &log_dir };
        const char *value = NULL;
        bool missing = false;
        size_t k = 0;
        for (; k < sizeof(names) / sizeof(names[0]); k++)
            if ((value = option_value(argc, argv, &i, names[k], &missing)) != NULL || missing)
                break;
        if (value == NULL || value[0] == '\0') {
            if (k < sizeof(names) / sizeof(names[0]))
                fprintf(stderr, "modgate: %s: %s\n", names[k],
                        missing ? "missing value" : "empty value");
            else
                fprintf(stderr, "modgate: unknown argument: %s\n", a);
            usage(stderr);
            return 2;
        }
        *slots[k] = value;
    }

    struct gateway gw = { .listen_fd = -1, .admin_fd = -1, .access_fd = -1 };
    char err[1024];
    if (mg__registry_check(err, sizeof(err)) != 0) {
        fprintf(stderr, "modgate: %s\n", err);
        return 2;
    }
    size_t nmods;
    const mg_module *const *mods = mg__modules(&nmods);
    const char **names = calloc(nmods ? nmods : 1, sizeof(char *));
    if (names == NULL)
        return 1;
    for (size_t i = 0; i < nmods; i++)
        names[i] = mods[i]->name;
    int rc = gw_config_defaults(&gw.cfg, names, nmods);
    free(names);
    if (rc != 0)
        return 1;
    if (config_path != NULL && gw_config_apply_file(&gw.cfg, config_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "modgate: config error: %s\n", err);
        gw_config_free(&gw.cfg);
        return 2;
    }
    const char *bad = NULL;
    if (listen != NULL && mg__check_host_port(listen) != 0)
        bad = "--listen";
    else if (admin_listen != NULL && mg__check_host_port(admin_listen) != 0)
        bad = "--admin-listen";
    if (bad != NULL) {
        fprintf(stderr, "modgate: %s: expected HOST:PORT with a port from 0 to 65535\n", bad);
        gw_config_free(&gw.cfg);
        return 2;
    }
    if ((listen && gw_config_set_string(&gw.cfg.listen, listen) != 0) ||
        (admin_listen && gw_config_set_string(&gw.cfg.admin_listen, admin_listen) != 0) ||
        (log_dir && gw_config_set_string(&gw.cfg.log_dir, log_dir) != 0)) {
        gw_config_free(&gw.cfg);
        return 1;
    }
    /* Named as the user gave them: the flag, else the config key. */
    const char *listen_key = listen ? "--listen" : "listen";
    const char *admin_key = admin_listen ? "--admin-listen" : "admin_listen";
    const char *log_key = log_dir ? "--log-dir" : "log_dir";
    char why[512];
    bad = check_listen_address(gw.cfg.listen, why, sizeof(why)) != 0        ? listen_key
          : check_listen_address(gw.cfg.admin_listen, why, sizeof(why)) != 0 ? admin_key
                                                                            : NULL;
    if (bad == NULL && same_listen_address(gw.cfg.listen, gw.cfg.admin_listen)) {
        snprintf(why, sizeof(why), "%s is the public listener's address too (%s)",
                 gw.cfg.admin_listen, listen_key);
        bad = admin_key;
    }
    if (bad != NULL) {
        value_error(config_path, bad, why);
        gw_config_free(&gw.cfg);
        return 2;
    }

    fit_fd_limit(&gw.cfg);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* A log directory that cannot be made or written is a bad value of
     * log_dir, as an unusable listen address is one of listen. */
    int exit_code = 2;
    if ((rc = mkdir_p(gw.cfg.log_dir)) != 0) {
        snprintf(why, sizeof(why), "cannot create %s: %s", gw.cfg.log_dir, strerror(-rc));
        value_error(config_path, log_key, why);
        goto out;
    }
    /* Absolute, so that the paths we report (log tails, the admin API)
     * can be opened from anywhere. */
    char *abs_log_dir = realpath(gw.cfg.log_dir, NULL);
    if (abs_log_dir != NULL) {
        free(gw.cfg.log_dir);
        gw.cfg.log_dir = abs_log_dir;
    }
    char *gwlog = path_join(gw.cfg.log_dir, "gateway.log");
    rc = gwlog ? gw_log_open(gwlog) : -ENOMEM;
    if (rc != 0) {
        snprintf(why, sizeof(why), "cannot open %s: %s", gwlog ? gwlog : "gateway.log",
                 strerror(-rc));
        value_error(config_path, log_key, why);
    }
    free(gwlog);
    if (rc != 0)
        goto out;
    gw.access_path = path_join(gw.cfg.log_dir, "access.log");
    gw.access_fd = gw.access_path ? gw_open_log(gw.access_path) : -ENOMEM;
    if (gw.access_fd < 0) {
        snprintf(why, sizeof(why), "cannot open %s: %s", gw.access_path ? gw.access_path
                 : "access.log", strerror(-gw.access_fd));
        value_error(config_path, log_key, why);
        gw_log(GW_ERROR, "%s: %s", log_key, why);
        goto out;
    }
    exit_code = 1;
    if (setup_modules(&gw, err, sizeof(err)) != 0) {
        gw_log(GW_ERROR, "%s", err);
        goto out;
    }
    if (build_routes(&gw, err, sizeof(err)) != 0) {
        gw_log(GW_ERROR, "%s", err);
        exit_code = 2;
        goto out;
    }
    if (make_run_dir(&gw, err, sizeof(err)) != 0) {
        gw_log(GW_ERROR, "%s", err);
        goto out;
    }
    snprintf(err, sizeof(err), "cannot read the bound address");
    gw.listen_fd = mg__listen(gw.cfg.listen, err, sizeof(err));
    if (gw.listen_fd < 0 || mg__listen_address(gw.listen_fd, gw.listen_addr,
                                               sizeof(gw.listen_addr)) != 0) {
        gw_log(GW_ERROR, "%s: %s", listen_key, err);
        goto out;
    }
    snprintf(err, sizeof(err), "cannot read the bound address");
    gw.admin_fd = mg__listen(gw.cfg.admin_listen, err, sizeof(err));
    if (gw.admin_fd < 0 || mg__listen_address(gw.admin_fd, gw.admin_addr,
                                              sizeof(gw.admin_addr)) != 0) {
        gw_log(GW_ERROR, "%s: %s", admin_key, err);
        goto out;
    }
    gw_log(GW_INFO, "modgate %s starting: listen %s, admin %s, %zu modules", MODGATE_VERSION,
           gw.listen_addr, gw.admin_addr, gw.nmodules);

    gw.supervisor = gw_supervisor_new(&gw, err, sizeof(err));
    if (gw.supervisor == NULL) {
        gw_log(GW_ERROR, "%s", err);
        goto out;
    }
    if (!gw_supervisor_start_modules(gw.supervisor)) {
        /* Stopped while starting: no ready line, since nothing will be
         * served; the modules that came up are stopped as usual. */
        exit_code = gw_supervisor_run(gw.supervisor);
        gw_log(GW_INFO, "stopped");
        goto out;
    }
    print_modules(&gw);

    gw.nloops = 0;
    unsigned want = loop_count();
    gw.loops = calloc(want, sizeof(*gw.loops));
    if (gw.loops == NULL)
        goto out;
    for (unsigned i = 0; i < want; i++) {
        /* nloops is read by gw_loop_new for the per-loop connection limit. */
        gw.nloops = want;
        struct gw_loop *l = gw_loop_new(&gw, i, err, sizeof(err));
        gw.nloops = i;
        if (l == NULL) {
            gw_log(GW_ERROR, "%s", err);
            goto out;
        }
        gw.loops[gw.nloops++] = l;
    }
    for (unsigned i = 0; i < gw.nloops; i++)
        if ((rc = gw_loop_start(gw.loops[i])) != 0) {
            gw_log(GW_ERROR, "cannot start loop %u: %s", i, strerror(-rc));
            goto out;
        }
    gw.admin = gw_admin_start(&gw, err, sizeof(err));
    if (gw.admin == NULL) {
        gw_log(GW_ERROR, "%s", err);
        goto out;
    }
    printf("modgate: ready on http://%s (admin http://%s)\n", gw.listen_addr, gw.admin_addr);
    fflush(stdout);
    gw_log(GW_INFO, "ready on http://%s (admin http://%s)", gw.listen_addr, gw.admin_addr);

    exit_code = gw_supervisor_run(gw.supervisor);
    gw_log(GW_INFO, "stopped");
out:
    if (exit_code != 0 && gw.supervisor != NULL && gw.nloops > 0) {
        /* Startup failed after the loops started: stop them first. */
        for (unsigned i = 0; i < gw.nloops; i++)
            gw_loop_drain(gw.loops[i], 0);
    }
    gateway_free(&gw);
    curl_global_cleanup();
    return exit_code;
}
