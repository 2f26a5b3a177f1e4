/*
 * The command line of a module process:
 *   modgate --module NAME --listen HOST:PORT|unix:PATH
 * plus the flags the gateway adds when it spawns a child (--ready-fd,
 * --parent-pid, --log-file, --max-body-bytes, --max-header-bytes,
 * --incarnation).
 * Exit codes follow s6: 100 usage, 111 system error.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "listen.h"
#include "registry.h"
#include "runtime.h"
#include "util.h"

/* True if the option name a[0..alen) is `opt`. */
static bool is_opt(const char *a, size_t alen, const char *opt)
{
    return strlen(opt) == alen && memcmp(a, opt, alen) == 0;
}

/* The usage text, after `msg` if there is one: on stderr with exit code
 * 100 for a usage error, on stdout with 0 for --help. */
static int usage(const char *msg, const char *arg)
{
    FILE *out = msg ? stderr : stdout;
    if (msg != NULL)
        fprintf(out, "modgate: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    fprintf(out, "usage: modgate --module NAME --listen HOST:PORT|unix:PATH\n");
    size_t n;
    const mg_module *const *mods = mg__modules(&n);
    fprintf(out, "modules:");
    for (size_t i = 0; i < n; i++)
        fprintf(out, " %s", mods[i]->name);
    fprintf(out, "\n");
    return msg ? 100 : 0;
}

int mg_module_main(int argc, char **argv)
{
    mg__std_fds_open();
    /* stdout is the module's log file: a printf line goes there when it is
     * written, as stderr's do, not when a block fills or at exit (never,
     * if the module crashes, and the crash's log tail would miss it). */
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *name = NULL;
    /* An idle connection is kept longer than the gateway keeps one unused
     * before it stops reusing it (60 s), so that the gateway never sends a
     * request on a connection being closed here. */
    struct mg_serve_opts o = { .ready_fd = -1, .max_body = 10u * 1024 * 1024,
                               .max_header = 16 * 1024, .keepalive_s = 120 };
    unsigned long long incarnation = 0;
    const char *bad = NULL, *why = NULL;
    for (int i = 1; i < argc && bad == NULL; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return usage(NULL, NULL);
        /* "--opt VALUE" or "--opt=VALUE", for every option. */
        const char *a = argv[i];
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t alen = eq ? (size_t)(eq - a) : strlen(a);
        enum { MODULE, LISTEN, LOG_FILE, READY_FD, PARENT_PID, MAX_BODY, MAX_HEADER, INCARNATION,
               NOPTS };
        static const char *const names[NOPTS] = { "--module", "--listen", "--log-file",
                                                  "--ready-fd", "--parent-pid",
                                                  "--max-body-bytes", "--max-header-bytes",
                                                  "--incarnation" };
        int opt = 0;
        while (opt < NOPTS && !is_opt(a, alen, names[opt]))
            opt++;
        if (opt == NOPTS) {
            bad = a;
            why = "unknown argument";
            break;
        }
        const char *v = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        unsigned long long n = 0;
        if (v == NULL || v[0] == '\0') {
            bad = a;
            why = v == NULL ? "missing value after" : "empty value for";
            break;
        }
        /* The largest value of each numeric option (0: not a number). */
        static const unsigned long long max[NOPTS] = {
            [READY_FD] = 1 << 20, [PARENT_PID] = 1u << 30, [MAX_BODY] = SIZE_MAX / 2,
            [MAX_HEADER] = 1u << 20, [INCARNATION] = UINT32_MAX,
        };
        if (max[opt] > 0 && mg__parse_ulong(v, max[opt], &n) != 0) {
            bad = a;
            why = "bad argument";
            break;
        }
        switch (opt) {
        case MODULE: name = v; break;
        case LISTEN: o.listen = v; break;
        case LOG_FILE: o.log_path = v; break;
        case READY_FD: o.ready_fd = (int)n; break;
        case PARENT_PID: o.parent_pid = (pid_t)n; break;
        case MAX_BODY: o.max_body = (size_t)n; break;
        case MAX_HEADER: o.max_header = (size_t)n; break;
        case INCARNATION: incarnation = n; break;
        }
    }
    /* SPEC §5: the module's log names each new incarnation and its pid
     * before anything else of it. The process writes that line itself,
     * first thing, into the log its stdout and stderr already are: a line
     * the gateway wrote after the spawn would race with the child's own. */
    if (incarnation > 0) {
        /* Its own line, even after a process that died halfway through one. */
        mg__log_start_on_new_line();
        mg_log(MG_LOG_INFO, "incarnation %llu started, pid %d", incarnation, (int)getpid());
    }
    if (bad != NULL)
        return usage(why, bad);
    const char *ka = getenv("MODGATE_KEEPALIVE_S");
    unsigned long long n;
    if (ka != NULL && mg__parse_ulong(ka, 86400, &n) == 0 && n > 0)
        o.keepalive_s = (unsigned)n;
    else if (ka != NULL)
        mg_log(MG_LOG_WARN, "MODGATE_KEEPALIVE_S=%s is not a number of seconds from 1 to 86400; "
               "using %u", ka, o.keepalive_s);
    if (o.keepalive_s <= 60 && o.parent_pid > 0)
        mg_log(MG_LOG_WARN, "MODGATE_KEEPALIVE_S=%u: the gateway reuses a connection idle for up "
               "to 60 s, so a request may meet one being closed here (502)", o.keepalive_s);
    if (name == NULL || o.listen == NULL)
        return usage("--module and --listen are required", NULL);
    /* A malformed address is a usage error (exit 100), not a failure to
     * listen (111) on an address that could be right. */
    if (strncmp(o.listen, "unix:", 5) != 0 && mg__check_host_port(o.listen) != 0)
        return usage("--listen: expected HOST:PORT (port 0 to 65535) or unix:PATH", o.listen);
    const mg_module *m = mg__module_find(name);
    if (m == NULL)
        return usage("no such module", name);
    char err[512];
    if (mg__registry_check(err, sizeof(err)) != 0) {
        mg_log(MG_LOG_ERROR, "%s", err);
        return 100;
    }
    return mg__serve(m, &o);
}
