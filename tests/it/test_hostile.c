/*
 * Supervision against hostile or badly written modules (SPEC §3, §5, §8):
 * a module that ignores signals, forks processes that outlive it, floods
 * its log, breaks its readiness pipe, crashes, exits, leaks memory or stops
 * accepting harms only itself. The gateway keeps serving the others (hello),
 * tells the truth in /-/modules, leaks nothing, stops cleanly within its
 * stop timeouts, and leaves no process of the module behind.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(hostile, .timeout = 120);

/* Short timeouts so that every case is quick; `hostile_extra` goes into
 * the hostile module's object (",\"env\": {...}" and the like), `restart`
 * replaces the restart policy. */
static void start(struct gwp *g, const char *hostile_extra, const char *restart)
{
    char cfg[2048];
    snprintf(cfg, sizeof(cfg),
             "{\"modules\": {\"hostile\": {\"ready_timeout_ms\": 3000, \"stop_timeout_ms\": 500%s}},"
             " \"health\": {\"period_ms\": 200, \"probe_timeout_ms\": 300, \"unhealthy_after\": 3,"
             " \"log_tail_lines\": 5},"
             " \"restart\": %s}",
             hostile_extra ? hostile_extra : "",
             restart ? restart : "{\"backoff_initial_ms\": 50, \"backoff_max_ms\": 200}");
    cr_assert_eq(gwp_start_bin(g, MODGATE_HOSTILEGW, cfg, NULL), 0, "gateway did not start: %s",
                 g->out);
}

/* The module's last_exit (caller frees). */
static char *last_exit(const struct gwp *g, const char *name)
{
    json_t *j = gwp_module_info(g, name);
    const char *s = json_string_value(json_object_get(j, "last_exit"));
    char *copy = strdup(s ? s : "");
    json_decref(j);
    return copy;
}

static void admin_restart(const struct gwp *g, const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "/-/modules/%s/restart", name);
    struct http_req q = { .method = "POST", .url = gwp_admin_url(g, path) };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 202, "%s", r.body);
    http_free(&r);
}

/* Waits until the module serves from a process other than `old`. */
static pid_t wait_new_incarnation(const struct gwp *g, pid_t old, int ms)
{
    long deadline = ms_now() + ms;
    while (ms_now() < deadline) {
        struct http_resp r;
        if (http_get(gwp_url(g, "/hostile/ok"), &r) == 0 && r.status == 200) {
            pid_t p = (pid_t)atoi(r.body + 3);
            http_free(&r);
            if (p != old)
                return p;
        } else {
            http_free(&r);
        }
        usleep(20 * 1000);
    }
    cr_assert_fail("hostile did not come back in a new process within %d ms", ms);
    return 0;
}

static bool wait_dead(pid_t pid, int ms)
{
    long deadline = ms_now() + ms;
    while (!process_dead(pid) && ms_now() < deadline)
        usleep(10 * 1000);
    return process_dead(pid);
}

/* True while `pid` is a live process of the hostile module's image (a pid
 * reused by something else does not count). */
static bool hostile_alive(pid_t pid)
{
    if (process_dead(pid))
        return false;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    size_t len = 0;
    char *cmd = read_file(path, &len);
    bool ours = false;
    for (size_t i = 0; cmd != NULL && i + 7 <= len; i++)
        ours |= memcmp(cmd + i, "hostile", 7) == 0;
    free(cmd);
    return ours;
}

/* Whatever a failed expectation left running is ended here. */
static void kill_leftover(pid_t pid)
{
    if (pid > 0 && hostile_alive(pid))
        kill(pid, SIGKILL);
}

/* SIGTERM to the gateway; expects exit 0 within `ms`. */
static void stop_within(struct gwp *g, int ms)
{
    long t0 = ms_now();
    int status = gwp_stop(g);
    long took = ms_now() - t0;
    cr_expect_eq(status, 0, "gateway exit status %d", status);
    cr_expect_lt(took, ms, "the gateway took %ld ms to stop", took);
}

/* Sanitizer reports in the hostile module's log (the harness checks the
 * others). */
static void check_hostile_log(const struct gwp *g)
{
    char *log = gwp_log(g, "hostile.log");
    const char *hit = strstr(log, "AddressSanitizer");
    if (hit == NULL)
        hit = strstr(log, "LeakSanitizer");
    if (hit == NULL)
        hit = strstr(log, "runtime error:");
    cr_expect_null(hit, "sanitizer report in hostile.log: %.400s", hit);
    free(log);
}

static void finish(struct gwp *g)
{
    stop_within(g, 10000);
    check_hostile_log(g);
    gwp_cleanup(g);
}

/* ---- signals ----------------------------------------------------------- */

static void signals_case(const char *mode)
{
    char extra[128];
    snprintf(extra, sizeof(extra), ", \"env\": {\"HOSTILE_SIGNALS\": \"%s\"}", mode);
    struct gwp g;
    start(&g, extra, NULL);
    cr_assert(gwp_wait_log(&g, "hostile.log", "every signal", 2000));
    pid_t pid1 = gwp_module_pid(&g, "hostile");
    /* An admin restart: the old process is asked to stop and, whatever it
     * does with SIGTERM, is gone after stop_timeout_ms (500). */
    admin_restart(&g, "hostile");
    pid_t pid2 = wait_new_incarnation(&g, pid1, 5000);
    cr_expect(wait_dead(pid1, 3000), "the replaced process %d still runs", (int)pid1);
    cr_expect_eq(gwp_module_int(&g, "hostile", "pid"), pid2);
    cr_expect_eq(http_status(gwp_url(&g, "/hello/x")), 200);
    cr_expect_eq(count_zombies(g.pid), 0);
    /* The gateway's own stop: exit 0, within its stop timeout and a margin. */
    stop_within(&g, 4000);
    cr_expect(wait_dead(pid2, 1000), "pid %d outlived the gateway", (int)pid2);
    kill_leftover(pid1);
    kill_leftover(pid2);
    check_hostile_log(&g);
    gwp_cleanup(&g);
}

Test(hostile, a_module_ignoring_sigterm_is_killed_after_its_stop_timeout)
{
    signals_case("ignore");
}

Test(hostile, a_module_swallowing_every_signal_is_stopped_in_time)
{
    signals_case("block");
}

/* A stopped process (SIGSTOP) acts on no signal but SIGKILL: the probes
 * find it hung, and the gateway's stop still ends it. */
Test(hostile, a_frozen_module_is_found_hung_and_a_stop_still_ends_it)
{
    struct gwp g;
    start(&g, NULL, NULL);
    pid_t pid1 = gwp_module_pid(&g, "hostile");
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/freeze")), 200);
    pid_t pid2 = wait_new_incarnation(&g, pid1, 8000);
    cr_expect(wait_dead(pid1, 2000));
    cr_expect(gwp_wait_log(&g, "gateway.log", "missed health probes (hung)", 2000));
    cr_expect_eq(http_status(gwp_url(&g, "/hello/x")), 200);
    /* Frozen again, then the gateway stops before the probes notice. */
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/freeze")), 200);
    usleep(200 * 1000);
    stop_within(&g, 4000);
    cr_expect(wait_dead(pid2, 1000), "pid %d outlived the gateway", (int)pid2);
    kill_leftover(pid1);
    if (pid2 > 0 && !process_dead(pid2) && hostile_alive(pid2))
        kill(pid2, SIGKILL);
    check_hostile_log(&g);
    gwp_cleanup(&g);
}

/* ---- processes a module leaves behind ------------------------------------ */

enum { NFORKS = 5 };
static const char *const fork_paths[NFORKS] = {
    "/hostile/fork",
    "/hostile/fork?keepfds=1",
    "/hostile/fork?setsid=1",
    "/hostile/fork?setsid=1&keepfds=1",
    "/hostile/fork?setsid=1&double=1&keepfds=1",
};

/* Forks each kind of lingering process from the module; their pids. */
static void fork_all(const struct gwp *g, pid_t pids[NFORKS])
{
    for (int i = 0; i < NFORKS; i++) {
        struct http_resp r;
        cr_assert_eq(http_get(gwp_url(g, fork_paths[i]), &r), 0);
        cr_assert_eq(r.status, 200, "%s: %s", fork_paths[i], r.body);
        pids[i] = (pid_t)atoi(r.body);
        http_free(&r);
        cr_assert_gt(pids[i], 0, "%s", fork_paths[i]);
        cr_assert(hostile_alive(pids[i]), "%s", fork_paths[i]);
    }
}

static void expect_all_gone(pid_t pids[NFORKS], const char *after)
{
    for (int i = 0; i < NFORKS; i++) {
        cr_expect(wait_dead(pids[i], 2000), "after %s, the process forked by %s (pid %d) still runs",
                  after, fork_paths[i], (int)pids[i]);
        kill_leftover(pids[i]);
    }
}

Test(hostile, processes_a_module_forked_die_with_it_when_it_crashes)
{
    struct gwp g;
    start(&g, NULL, NULL);
    pid_t pid1 = gwp_module_pid(&g, "hostile");
    pid_t pids[NFORKS];
    fork_all(&g, pids);
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/crash")), 502);
    wait_new_incarnation(&g, pid1, 5000);
    expect_all_gone(pids, "a crash");
    cr_expect_eq(count_zombies(g.pid), 0);
    finish(&g);
}

Test(hostile, processes_a_module_forked_die_with_it_on_an_admin_restart)
{
    struct gwp g;
    start(&g, NULL, NULL);
    pid_t pid1 = gwp_module_pid(&g, "hostile");
    pid_t pids[NFORKS];
    fork_all(&g, pids);
    admin_restart(&g, "hostile");
    wait_new_incarnation(&g, pid1, 5000);
    cr_expect(wait_dead(pid1, 3000));
    expect_all_gone(pids, "an admin restart");
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/ok")), 200);
    cr_expect_eq(count_zombies(g.pid), 0);
    finish(&g);
}

Test(hostile, processes_a_module_forked_die_when_the_gateway_stops)
{
    struct gwp g;
    start(&g, NULL, NULL);
    pid_t pids[NFORKS];
    fork_all(&g, pids);
    stop_within(&g, 4000);
    expect_all_gone(pids, "the gateway's stop");
    check_hostile_log(&g);
    gwp_cleanup(&g);
}

/* After a SIGKILL of the gateway its module processes die
 * (PR_SET_DEATHSIG), but what they forked does not: with the gateway gone
 * nobody is left to end it, and no signal reaches it. That needs a
 * containment the kernel enforces (a PID namespace or a cgroup per
 * module); until then, this checks the module process alone and ends the
 * rest itself. */
Test(hostile, a_module_process_dies_when_the_gateway_is_killed)
{
    struct gwp g;
    start(&g, NULL, NULL);
    pid_t pid = gwp_module_pid(&g, "hostile");
    pid_t pids[NFORKS];
    fork_all(&g, pids);
    kill(g.pid, SIGKILL);
    waitpid(g.pid, NULL, 0);
    g.pid = 0;
    cr_expect(wait_dead(pid, 2000), "the module outlived the gateway");
    kill_leftover(pid);
    for (int i = 0; i < NFORKS; i++)
        kill_leftover(pids[i]);
    gwp_cleanup(&g);
}

/* ---- log floods ------------------------------------------------------------ */

struct load {
    char url[256]; /* a copy: gwp_url's buffers are reused */
    atomic_bool stop;
    atomic_long ok, bad, worst_ms, last_bad;
};

static void *load_thread(void *arg)
{
    struct load *l = arg;
    while (!atomic_load(&l->stop)) {
        long t0 = ms_now();
        long s = http_status(l->url);
        long took = ms_now() - t0;
        if (took > atomic_load(&l->worst_ms))
            atomic_store(&l->worst_ms, took);
        atomic_fetch_add(s == 200 ? &l->ok : &l->bad, 1);
        if (s != 200)
            atomic_store(&l->last_bad, s);
        usleep(5 * 1000);
    }
    return NULL;
}

/* How many "  | " lines follow the last crash report of the module. */
static int quoted_lines_after(const char *log, const char *needle, size_t *bytes)
{
    const char *last = NULL;
    for (const char *p = log; (p = strstr(p, needle)) != NULL; p++)
        last = p;
    if (last == NULL)
        return -1;
    const char *line = strchr(last, '\n');
    int n = 0;
    *bytes = 0;
    while (line != NULL && strncmp(line + 1, "  | ", 4) == 0) {
        const char *nl = strchr(line + 1, '\n');
        *bytes += nl ? (size_t)(nl - line) : strlen(line);
        n++;
        line = nl;
    }
    return n;
}

Test(hostile, a_log_flood_stalls_nothing_and_the_crash_report_stays_short)
{
    struct gwp g;
    start(&g, NULL, NULL);
    pid_t pid1 = gwp_module_pid(&g, "hostile");
    struct load l = { .ok = 0 };
    snprintf(l.url, sizeof(l.url), "%s", gwp_url(&g, "/hello/steady"));
    pthread_t t;
    pthread_create(&t, NULL, load_thread, &l);
    /* Megabytes a second from a thread and from a handler at once. */
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/flood_thread?mb=64")), 200);
    struct http_req q = { .url = gwp_url(&g, "/hostile/flood?mb=32"), .timeout_ms = 60000 };
    struct http_resp r;
    cr_expect_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 200, "%s", r.body);
    http_free(&r);
    /* The gateway's own log keeps up: an admin action shows at once. */
    admin_restart(&g, "hello");
    cr_expect(gwp_wait_log(&g, "gateway.log", "module hello: admin restart", 2000));
    /* Crash it while the thread may still flood. */
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/crash")), 502);
    wait_new_incarnation(&g, pid1, 5000);
    atomic_store(&l.stop, true);
    pthread_join(t, NULL);
    cr_expect_gt(atomic_load(&l.ok), 10);
    cr_expect_eq(atomic_load(&l.bad), 0, "hello failed %ld times (last status %ld)",
                 atomic_load(&l.bad), atomic_load(&l.last_bad));
    cr_expect_lt(atomic_load(&l.worst_ms), 2000, "hello took %ld ms", atomic_load(&l.worst_ms));
    cr_assert(gwp_wait_log(&g, "gateway.log", "SIGABRT", 2000));
    char *log = gwp_log(&g, "gateway.log");
    size_t bytes = 0;
    int n = quoted_lines_after(log, "was killed by signal 6 (SIGABRT)", &bytes);
    cr_expect(n >= 1 && n <= 5, "%d lines of the module's log quoted", n);
    cr_expect_lt(bytes, 16 * 1024, "%zu bytes quoted", bytes);
    free(log);
    finish(&g);
}

/* ---- start-up misbehaviour ------------------------------------------------ */

Test(hostile, garbage_on_stdout_and_stderr_before_ready_is_harmless)
{
    struct gwp g;
    start(&g, ", \"env\": {\"HOSTILE_STARTUP_MB\": \"8\"}", NULL);
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/ok")), 200);
    pid_t pid1 = gwp_module_pid(&g, "hostile");
    struct stat before;
    char path[400];
    snprintf(path, sizeof(path), "%s/gateway.log", g.logdir);
    cr_assert_eq(stat(path, &before), 0);
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/crash")), 502);
    wait_new_incarnation(&g, pid1, 10000);
    cr_assert(gwp_wait_log(&g, "gateway.log", "SIGABRT", 2000));
    struct stat after;
    cr_assert_eq(stat(path, &after), 0);
    /* Five short lines quoted, never the 16 MiB line of garbage. */
    cr_expect_lt(after.st_size - before.st_size, 64 * 1024, "gateway.log grew by %ld bytes",
                 (long)(after.st_size - before.st_size));
    cr_expect_eq(http_status(gwp_url(&g, "/hello/x")), 200);
    finish(&g);
}

Test(hostile, a_module_that_duplicates_fd_3_starts_normally)
{
    struct gwp g;
    start(&g, ", \"env\": {\"HOSTILE_FD3\": \"dup\"}", NULL);
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/ok")), 200);
    json_t *j = gwp_module_info(&g, "hostile");
    cr_expect_str_eq(json_string_value(json_object_get(j, "state")), "ready");
    json_decref(j);
    finish(&g);
}

/* Never ready (its readiness pipe closed, or a hook that never returns):
 * killed after ready_timeout_ms, reported with its log tail, while hello
 * serves throughout. */
static void never_ready_case(const char *env, const char *in_tail)
{
    char extra[256];
    snprintf(extra, sizeof(extra), ", \"ready_timeout_ms\": 600, \"env\": {%s}", env);
    char cfg[2048];
    snprintf(cfg, sizeof(cfg),
             "{\"modules\": {\"hostile\": {\"stop_timeout_ms\": 500%s}},"
             " \"health\": {\"log_tail_lines\": 5},"
             " \"restart\": {\"backoff_initial_ms\": 50, \"backoff_max_ms\": 100,"
             " \"max_restarts\": 2, \"window_s\": 60}}", extra);
    struct gwp g;
    cr_assert_eq(gwp_start_bin(&g, MODGATE_HOSTILEGW, cfg, NULL), 0, "%s", g.out);
    cr_expect_eq(http_status(gwp_url(&g, "/hello/x")), 200);
    cr_expect(gwp_wait_state(&g, "hostile", "failed", 10000));
    char *why = last_exit(&g, "hostile");
    cr_expect_not_null(strstr(why, "after not being ready within 600 ms"), "%s", why);
    free(why);
    char *log = gwp_log(&g, "gateway.log");
    cr_expect_not_null(strstr(log, in_tail), "log tail with \"%s\": %s", in_tail, log);
    free(log);
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/hostile/ok"), &r), 0);
    cr_expect_eq(r.status, 503);
    cr_expect_not_null(http_header(&r, "Retry-After"));
    http_free(&r);
    cr_expect_eq(http_status(gwp_url(&g, "/hello/x")), 200);
    cr_expect_eq(count_zombies(g.pid), 0);
    finish(&g);
}

Test(hostile, a_module_that_closes_fd_3_is_killed_at_its_ready_timeout)
{
    never_ready_case("\"HOSTILE_FD3\": \"close\"", "hostile: closed fd 3");
}

Test(hostile, a_start_up_hook_that_never_returns_is_killed_at_the_ready_timeout)
{
    never_ready_case("\"HOSTILE_INIT\": \"hang\", \"HOSTILE_SIGNALS\": \"ignore\"",
                     "start-up hook misbehaves: hang");
}

/* ---- crash loops -------------------------------------------------------------- */

static void expect_503_failed(const struct gwp *g)
{
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(g, "/hostile/ok"), &r), 0);
    cr_expect_eq(r.status, 503, "%s", r.body);
    const char *ra = http_header(&r, "Retry-After");
    cr_expect(ra != NULL && atoi(ra) >= 1, "Retry-After: %s", ra ? ra : "(none)");
    const char *err = http_header(&r, "X-Modgate-Error");
    cr_expect(err != NULL && strstr(err, "cause=failed") != NULL, "%s", err ? err : "(none)");
    http_free(&r);
}

Test(hostile, a_start_up_hook_crash_loop_ends_failed_and_an_admin_restart_brings_it_back)
{
    char gate[] = "/tmp/mgt-hgate-XXXXXX";
    int fd = mkstemp(gate);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(gate); /* the first start works */
    char extra[512];
    snprintf(extra, sizeof(extra),
             ", \"env\": {\"HOSTILE_INIT\": \"crash\", \"HOSTILE_INIT_IF_EXISTS\": \"%s\"}", gate);
    struct gwp g;
    start(&g, extra, "{\"backoff_initial_ms\": 50, \"backoff_max_ms\": 400,"
                     " \"max_restarts\": 3, \"window_s\": 60}");
    fd = open(gate, O_CREAT | O_WRONLY, 0600); /* from now on every start crashes */
    close(fd);
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/crash")), 502);
    cr_assert(gwp_wait_state(&g, "hostile", "failed", 10000));
    char *log = gwp_log(&g, "gateway.log");
    const char *p = log;
    const char *want[] = { "restarting in 50 ms", "restarting in 100 ms", "restarting in 200 ms",
                           "giving up after 3 restarts" };
    for (int i = 0; i < 4; i++) {
        p = strstr(p, want[i]);
        cr_expect_not_null(p, "want \"%s\" in order: %s", want[i], log);
        if (p == NULL)
            break;
    }
    cr_expect_not_null(strstr(log, "start-up hook misbehaves: crash"), "tail: %s", log);
    free(log);
    cr_expect_eq(gwp_module_int(&g, "hostile", "restarts"), 3);
    cr_expect_eq(gwp_module_int(&g, "hostile", "pid"), 0);
    expect_503_failed(&g);
    cr_expect_eq(http_status(gwp_url(&g, "/hello/x")), 200);
    unlink(gate);
    admin_restart(&g, "hostile");
    cr_assert(gwp_wait_state(&g, "hostile", "ready", 5000));
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/ok")), 200);
    cr_expect_eq(gwp_module_int(&g, "hostile", "restarts"), 3, "an admin restart is not counted");
    cr_expect_eq(count_zombies(g.pid), 0);
    finish(&g);
}

Test(hostile, a_module_crashing_on_every_request_ends_failed_and_comes_back)
{
    struct gwp g;
    start(&g, NULL, "{\"backoff_initial_ms\": 20, \"backoff_max_ms\": 100,"
                    " \"max_restarts\": 3, \"window_s\": 60}");
    int fds0 = 0, files0 = 0;
    char *before = NULL;
    for (int round = 0; round < 3; round++) {
        long deadline = ms_now() + 10000;
        int crashes = 0;
        while (ms_now() < deadline) {
            long s = http_status(gwp_url(&g, "/hostile/crash"));
            if (s == 502)
                crashes++;
            if (s == 503 && gwp_wait_state(&g, "hostile", "failed", 0))
                break;
            usleep(10 * 1000);
        }
        cr_expect_eq(crashes, 4, "%d crashes before failed", crashes);
        cr_assert(gwp_wait_state(&g, "hostile", "failed", 1000));
        expect_503_failed(&g);
        cr_expect_eq(http_status(gwp_url(&g, "/hello/x")), 200);
        admin_restart(&g, "hostile");
        cr_assert(gwp_wait_state(&g, "hostile", "ready", 5000));
        cr_expect_eq(http_status(gwp_url(&g, "/hostile/ok")), 200);
        cr_expect_eq(count_zombies(g.pid), 0);
        /* After the first round every loop has its connections made. */
        if (round == 0) {
            /* Settled: the supervisor opens files for a moment (a log
             * tail, /proc), which must not count. */
            files0 = count_nonsocket_fds(g.pid);
            for (int i = 0, prev = -1; i < 20 && files0 != prev; i++) {
                usleep(50 * 1000);
                prev = files0;
                files0 = count_nonsocket_fds(g.pid);
            }
            fds0 = count_fds(g.pid);
            before = fd_targets(g.pid);
        }
    }
    /* Pipes, pidfds and log files must come back to no more than before. Sockets vary:
     * a client's connection the gateway has yet to see closed, the pool connection
     * of the other loop to the module's last incarnation, which libcurl drops when
     * it next connects. */
    int files = count_nonsocket_fds(g.pid), fds = count_fds(g.pid);
    for (long t0 = ms_now(); ms_now() - t0 < 2000 && (files > files0 || fds > fds0 + 4);
         usleep(50 * 1000)) {
        files = count_nonsocket_fds(g.pid);
        fds = count_fds(g.pid);
    }
    char *after = fd_targets(g.pid);
    cr_expect_leq(files, files0, "non-socket descriptors: %d before, %d after\n%s\n%s", files0,
                  files, before, after);
    cr_expect_leq(fds, fds0 + 4, "descriptors: %d before, %d after\n%s\n%s", fds0, fds, before,
                  after);
    free(before);
    free(after);
    finish(&g);
}

/* ---- quiet exits, memory, deafness --------------------------------------------- */

Test(hostile, a_module_exiting_0_while_idle_is_restarted_and_counted)
{
    struct gwp g;
    start(&g, NULL, NULL);
    pid_t pid1 = gwp_module_pid(&g, "hostile");
    cr_expect_eq(http_status(gwp_url(&g, "/hostile/exit_later?ms=300&code=0")), 200);
    cr_assert(wait_dead(pid1, 3000));
    pid_t pid2 = wait_new_incarnation(&g, pid1, 5000);
    cr_expect_neq(pid2, pid1);
    cr_expect_eq(gwp_module_int(&g, "hostile", "restarts"), 1);
    cr_expect_eq(gwp_module_int(&g, "hostile", "incarnation"), 2);
    char *why = last_exit(&g, "hostile");
    cr_expect_str_eq(why, "exited with code 0");
    free(why);
    struct http_resp r;
    cr_assert_eq(http_get(gwp_admin_url(&g, "/-/metrics"), &r), 0);
    cr_expect_not_null(
        strstr(r.body, "modgate_module_restarts_total{module=\"hostile\",reason=\"exited\"} 1\n"),
        "%s", r.body);
    http_free(&r);
    finish(&g);
}

Test(hostile, memory_a_module_hoards_is_not_the_gateway_s)
{
    struct gwp g;
    start(&g, NULL, NULL);
    cr_expect_eq(http_status(gwp_url(&g, "/hello/warm")), 200);
    long rss0 = rss_kb(g.pid);
    struct load l = { .ok = 0 };
    snprintf(l.url, sizeof(l.url), "%s", gwp_url(&g, "/hello/steady"));
    pthread_t t;
    pthread_create(&t, NULL, load_thread, &l);
    for (int i = 0; i < 3; i++) {
        struct http_req q = { .url = gwp_url(&g, "/hostile/alloc?mb=100"), .timeout_ms = 30000 };
        struct http_resp r;
        cr_expect_eq(http_do(&q, &r), 0);
        cr_expect_eq(r.status, 200, "%s", r.body);
        http_free(&r);
    }
    atomic_store(&l.stop, true);
    pthread_join(t, NULL);
    long mod = rss_kb(gwp_module_pid(&g, "hostile"));
    cr_expect_gt(mod, 250 * 1024, "the module holds %ld KiB", mod);
    long rss1 = rss_kb(g.pid);
    cr_expect_lt(rss1 - rss0, 16 * 1024, "gateway RSS %ld KiB before, %ld KiB after", rss0, rss1);
    cr_expect_gt(atomic_load(&l.ok), 5);
    cr_expect_eq(atomic_load(&l.bad), 0, "hello failed %ld times (last status %ld)",
                 atomic_load(&l.bad), atomic_load(&l.last_bad));
    finish(&g);
}

Test(hostile, a_module_that_stops_accepting_is_found_hung_and_restarted)
{
    struct gwp g;
    start(&g, NULL, NULL);
    pid_t pid1 = gwp_module_pid(&g, "hostile");
    struct load l = { .ok = 0 };
    snprintf(l.url, sizeof(l.url), "%s", gwp_url(&g, "/hello/steady"));
    pthread_t t;
    pthread_create(&t, NULL, load_thread, &l);
    for (int i = 0; i < 4; i++) /* the loops' connections to both modules are open */
        cr_expect_eq(http_status(gwp_url(&g, "/hostile/ok")), 200);
    usleep(100 * 1000);
    int fds0 = count_fds(g.pid);
    struct http_resp r;
    cr_assert_eq(http_get(gwp_url(&g, "/hostile/deaf"), &r), 0);
    cr_expect_eq(r.status, 200, "%s", r.body);
    http_free(&r);
    wait_new_incarnation(&g, pid1, 8000);
    cr_expect(wait_dead(pid1, 2000));
    atomic_store(&l.stop, true);
    pthread_join(t, NULL);
    cr_expect(gwp_wait_log(&g, "gateway.log", "missed health probes (hung)", 2000));
    cr_expect_gt(atomic_load(&l.ok), 10);
    cr_expect_eq(atomic_load(&l.bad), 0, "hello failed %ld times (last status %ld)",
                 atomic_load(&l.bad), atomic_load(&l.last_bad));
    cr_expect_lt(atomic_load(&l.worst_ms), 2000, "hello took %ld ms", atomic_load(&l.worst_ms));
    for (int i = 0; i < 4; i++)
        cr_expect_eq(http_status(gwp_url(&g, "/hostile/ok")), 200);
    usleep(300 * 1000);
    cr_expect_leq(count_fds(g.pid), fds0 + 2, "descriptors: %d before, %d after", fds0,
                  count_fds(g.pid));
    cr_expect_eq(count_zombies(g.pid), 0);
    finish(&g);
}
