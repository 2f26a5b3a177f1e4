/* Supervision and the admin API (SPEC §5, §6; issue 4), driven by chaos. */
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

TestSuite(supervision, .timeout = 120);

static long jint(json_t *o, const char *key)
{
    return (long)json_integer_value(json_object_get(o, key));
}

/* Crashes chaos and waits until it serves again; returns the new pid. */
static pid_t crash_and_wait(struct gwp *g)
{
    long s = http_status(gwp_url(g, "/chaos/crash"));
    cr_assert_eq(s, 502, "crash answered %ld", s);
    long deadline = ms_now() + 10000;
    while (ms_now() < deadline) {
        if (http_status(gwp_url(g, "/chaos/slow?ms=0")) == 200)
            return gwp_module_pid(g, "chaos");
        usleep(2000);
    }
    cr_assert_fail("chaos did not come back");
    return 0;
}

Test(supervision, crash_comes_back_with_a_new_pid_and_incarnation)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}}}");
    json_t *before = gwp_module_info(&g, "chaos");
    cr_expect_str_eq(json_string_value(json_object_get(before, "state")), "ready");
    cr_expect_eq(jint(before, "incarnation"), 1);
    cr_expect_eq(jint(before, "restarts"), 0);
    pid_t pid1 = (pid_t)jint(before, "pid");
    pid_t pid2 = crash_and_wait(&g);
    json_t *after = gwp_module_info(&g, "chaos");
    cr_expect_neq(pid2, pid1);
    cr_expect_eq(jint(after, "incarnation"), 2);
    cr_expect_eq(jint(after, "restarts"), 1);
    cr_expect_not_null(strstr(json_string_value(json_object_get(after, "last_exit")), "SIGABRT"));
    cr_expect(process_dead(pid1));
    json_decref(before);
    json_decref(after);
    cr_expect(gwp_wait_log(&g, "chaos.log", "incarnation 2 started", 2000));
    gwp_finish(&g);
}

Test(supervision, a_hung_module_is_detected_and_restarted)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}},"
              " \"restart\": {\"backoff_initial_ms\": 1500},"
              " \"health\": {\"period_ms\": 100, \"probe_timeout_ms\": 100, \"unhealthy_after\": 3}}");
    pid_t pid1 = gwp_module_pid(&g, "chaos");
    struct http_req q = { .url = gwp_url(&g, "/chaos/hang"), .timeout_ms = 10000 };
    struct http_resp r;
    long t0 = ms_now();
    cr_assert_eq(http_do(&q, &r), 0);
    long took = ms_now() - t0;
    cr_expect_eq(r.status, 502, "%s", r.body);
    cr_expect_not_null(strstr(http_header(&r, "X-Modgate-Error"), "cause=hung"));
    cr_expect_not_null(strstr(r.body, "missed health probes"), "%s", r.body);
    cr_expect_lt(took, 3000, "hang noticed after %ld ms", took);
    http_free(&r);
    /* Killed for the hang, it waits out its backoff like any dead module:
     * no process, state restarting, and last_exit says why. */
    cr_expect(gwp_wait_state(&g, "chaos", "restarting", 500), "state restarting after the hang");
    json_t *info = gwp_module_info(&g, "chaos");
    cr_assert_not_null(info);
    cr_expect(json_is_null(json_object_get(info, "pid")), "no pid while it waits");
    const char *last = json_string_value(json_object_get(info, "last_exit"));
    cr_expect(last != NULL && strstr(last, "missed health probes") != NULL, "last_exit: %s",
              last ? last : "(none)");
    json_decref(info);
    cr_assert(gwp_wait_state(&g, "chaos", "ready", 5000));
    cr_expect_neq(gwp_module_pid(&g, "chaos"), pid1);
    cr_expect(process_dead(pid1));
    char *log = gwp_log(&g, "gateway.log");
    cr_expect_not_null(strstr(log, "health probe failed"), "%s", log);
    cr_expect_not_null(strstr(log, "is unhealthy after 3 missed probes"), "%s", log);
    cr_expect_not_null(strstr(log, "hanging on request"), "the log tail is shown: %s", log);
    free(log);
    /* Other modules were not disturbed. */
    cr_expect_eq(http_status(gwp_url(&g, "/hello/fine")), 200);
    gwp_finish(&g);
}

Test(supervision, backoff_doubles_and_resets_after_the_window)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}},"
              " \"restart\": {\"backoff_initial_ms\": 50, \"backoff_max_ms\": 300,"
              " \"max_restarts\": 100, \"window_s\": 2}}");
    for (int i = 0; i < 4; i++)
        crash_and_wait(&g);
    char *log = gwp_log(&g, "gateway.log");
    const char *p = log;
    const char *want[] = { "restarting in 50 ms", "restarting in 100 ms", "restarting in 200 ms",
                           "restarting in 300 ms" };
    for (int i = 0; i < 4; i++) {
        p = strstr(p, want[i]);
        cr_assert_not_null(p, "want \"%s\" in order: %s", want[i], log);
    }
    free(log);
    sleep(3); /* ready for longer than window_s */
    crash_and_wait(&g);
    log = gwp_log(&g, "gateway.log");
    const char *last = NULL;
    for (const char *q = log; (q = strstr(q, "restarting in")) != NULL; q++)
        last = q;
    cr_expect(last != NULL && strncmp(last, "restarting in 50 ms", 19) == 0, "reset: %s", last);
    free(log);
    gwp_finish(&g);
}

Test(supervision, failed_state_and_an_admin_restart_out_of_it)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}},"
              " \"restart\": {\"max_restarts\": 1, \"backoff_initial_ms\": 10}}");
    crash_and_wait(&g);
    cr_expect_eq(http_status(gwp_url(&g, "/chaos/crash")), 502);
    cr_assert(gwp_wait_state(&g, "chaos", "failed", 3000));
    cr_expect(gwp_wait_log(&g, "gateway.log", "giving up after 1 restarts", 1000));
    json_t *j = gwp_module_info(&g, "chaos");
    long inc = jint(j, "incarnation"), restarts = jint(j, "restarts");
    json_decref(j);
    cr_expect_eq(http_status(gwp_url(&g, "/chaos/slow?ms=0")), 503);

    struct http_req q = { .method = "POST", .url = gwp_admin_url(&g, "/-/modules/chaos/restart") };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 202, "%s", r.body);
    http_free(&r);
    cr_assert(gwp_wait_state(&g, "chaos", "ready", 5000));
    cr_expect_eq(http_status(gwp_url(&g, "/chaos/slow?ms=0")), 200);
    j = gwp_module_info(&g, "chaos");
    cr_expect_eq(jint(j, "incarnation"), inc + 1);
    cr_expect_eq(jint(j, "restarts"), restarts, "an admin restart is not a failure restart");
    json_decref(j);
    gwp_finish(&g);
}

struct load {
    const char *url;
    atomic_bool stop;
    atomic_long ok, bad;
    long last_bad;
};

static void *load_thread(void *arg)
{
    struct load *l = arg;
    CURL *e = curl_easy_init();
    FILE *devnull = fopen("/dev/null", "w");
    curl_easy_setopt(e, CURLOPT_URL, l->url);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, devnull);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 10L);
    while (!atomic_load(&l->stop)) {
        long code = 0;
        if (curl_easy_perform(e) == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        if (code == 200) {
            atomic_fetch_add(&l->ok, 1);
        } else {
            atomic_fetch_add(&l->bad, 1);
            l->last_bad = code;
        }
    }
    fclose(devnull);
    curl_easy_cleanup(e);
    return NULL;
}

Test(supervision, zero_downtime_admin_restart_under_load)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}}}");
    struct load l = { .url = gwp_url(&g, "/chaos/slow?ms=30") };
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, load_thread, &l);
    usleep(200 * 1000);
    for (int round = 0; round < 3; round++) {
        pid_t old = gwp_module_pid(&g, "chaos");
        struct http_req q = { .method = "POST",
                              .url = gwp_admin_url(&g, "/-/modules/chaos/restart") };
        struct http_resp r;
        cr_assert_eq(http_do(&q, &r), 0);
        cr_expect_eq(r.status, 202);
        http_free(&r);
        long deadline = ms_now() + 5000;
        while (gwp_module_pid(&g, "chaos") == old && ms_now() < deadline)
            usleep(10000);
        cr_expect_neq(gwp_module_pid(&g, "chaos"), old);
        /* The old process drains, then stops. */
        while (!process_dead(old) && ms_now() < deadline + 5000)
            usleep(10000);
        cr_expect(process_dead(old), "incarnation with pid %d still alive", (int)old);
        usleep(100 * 1000);
    }
    atomic_store(&l.stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cr_expect_gt(atomic_load(&l.ok), 20);
    cr_expect_eq(atomic_load(&l.bad), 0, "%ld failed (last status %ld) of %ld",
                 atomic_load(&l.bad), l.last_bad, atomic_load(&l.ok));
    json_t *j = gwp_module_info(&g, "chaos");
    cr_expect_eq(jint(j, "incarnation"), 4);
    cr_expect_eq(jint(j, "restarts"), 0);
    json_decref(j);
    gwp_finish(&g);
}

Test(supervision, idle_module_connections_that_close_cost_no_cpu)
{
    /* The gateway keeps its idle keep-alive connections to a module in its
     * epoll set while curl is not watching them. When the module goes away
     * they all become readable (EOF): the gateway must drop them, not spin
     * on them. */
    struct gwp g;
    gwp_start_ok(&g, NULL);
    struct load l = { .url = gwp_url(&g, "/hello/idle") };
    pthread_t t[6];
    for (int i = 0; i < 6; i++)
        pthread_create(&t[i], NULL, load_thread, &l);
    usleep(300 * 1000);
    atomic_store(&l.stop, true);
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    cr_expect_eq(atomic_load(&l.bad), 0);

    pid_t old = gwp_module_pid(&g, "hello");
    struct http_req q = { .method = "POST", .url = gwp_admin_url(&g, "/-/modules/hello/restart") };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 202);
    http_free(&r);
    long deadline = ms_now() + 10000;
    while (!process_dead(old) && ms_now() < deadline)
        usleep(10000);
    cr_assert(process_dead(old), "the old hello (pid %d) did not stop", (int)old);

    usleep(200 * 1000);
    long before = cpu_ms(g.pid);
    usleep(1000 * 1000);
    long used = cpu_ms(g.pid) - before;
    cr_expect(used < 200, "an idle gateway used %ld ms of CPU in 1 s", used);
    cr_expect_eq(http_status(gwp_url(&g, "/hello/again")), 200);
    gwp_finish(&g);
}

/* Children of `parent` whose command line mentions `what`. */
static int count_children(pid_t parent, const char *what)
{
    int count = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        char path[300];
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        char *stat = read_file(path, NULL);
        const char *p = stat ? strrchr(stat, ')') : NULL;
        int ppid = 0;
        if (p == NULL || sscanf(p + 2, "%*c %d", &ppid) != 1 || ppid != (int)parent) {
            free(stat);
            continue;
        }
        free(stat);
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        size_t len = 0;
        char *cmd = read_file(path, &len);
        for (size_t i = 0; cmd != NULL && i + 1 < len; i++)
            if (cmd[i] == '\0')
                cmd[i] = ' ';
        if (cmd != NULL && strstr(cmd, what) != NULL)
            count++;
        free(cmd);
    }
    if (d != NULL)
        closedir(d);
    return count;
}

Test(supervision, a_crash_during_an_admin_restart_leaves_one_process)
{
    /* The old process dies while the admin restart's new one is still
     * starting: the new one is the restart, and no second one is spawned
     * (which would leave one of them running unsupervised). */
    struct gwp g;
    cr_assert_eq(gwp_start_bin(&g, MODGATE_TESTGW,
                               "{\"modules\": {\"flaky\": {\"env\": {\"FLAKY_MODE\": \"slow\","
                               " \"FLAKY_SLEEP_MS\": \"800\"}}},"
                               " \"restart\": {\"backoff_initial_ms\": 50}}",
                               NULL),
                 0, "%s", g.out);
    pid_t old = gwp_module_pid(&g, "flaky");
    struct http_req q = { .method = "POST", .url = gwp_admin_url(&g, "/-/modules/flaky/restart") };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 202);
    http_free(&r);
    usleep(200 * 1000);
    kill(old, SIGKILL);
    long deadline = ms_now() + 10000;
    while (http_status(gwp_url(&g, "/flaky/ok")) != 200 && ms_now() < deadline)
        usleep(20 * 1000);
    cr_assert_eq(http_status(gwp_url(&g, "/flaky/ok")), 200);
    pid_t now = gwp_module_pid(&g, "flaky");
    cr_expect_neq(now, old);
    usleep(1500 * 1000); /* past any backoff and a slow start */
    cr_expect_eq(gwp_module_pid(&g, "flaky"), now);
    cr_expect_eq(count_children(g.pid, "flaky"), 1, "flaky processes running");
    json_t *j = gwp_module_info(&g, "flaky");
    cr_expect_eq(jint(j, "incarnation"), 2);
    cr_expect_str_eq(json_string_value(json_object_get(j, "state")), "ready");
    json_decref(j);
    gwp_finish(&g);
}

Test(supervision, a_failed_admin_restart_leaves_the_old_incarnation_serving)
{
    char gate[] = "/tmp/mgt-gate-XXXXXX";
    int fd = mkstemp(gate);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(gate); /* absent: the first start succeeds */
    char cfg[512];
    snprintf(cfg, sizeof(cfg), "{\"modules\": {\"flaky\": {\"env\": {\"FLAKY_FAIL_IF_EXISTS\": \"%s\"}}}}",
             gate);
    struct gwp g;
    cr_assert_eq(gwp_start_bin(&g, MODGATE_TESTGW, cfg, NULL), 0, "%s", g.out);
    pid_t pid = gwp_module_pid(&g, "flaky");
    fd = open(gate, O_CREAT | O_WRONLY, 0600); /* from now on, starts fail */
    close(fd);
    struct http_req q = { .method = "POST", .url = gwp_admin_url(&g, "/-/modules/flaky/restart") };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 202);
    http_free(&r);
    json_t *before = gwp_module_info(&g, "flaky");
    cr_expect(gwp_wait_log(&g, "gateway.log", "the admin restart failed", 5000));
    cr_expect_eq(gwp_module_pid(&g, "flaky"), pid);
    cr_assert_eq(http_get(gwp_url(&g, "/flaky/ok"), &r), 0);
    cr_expect_eq(r.status, 200);
    char want[32];
    snprintf(want, sizeof(want), "ok %d\n", (int)pid);
    cr_expect_str_eq(r.body, want);
    http_free(&r);
    json_t *j = gwp_module_info(&g, "flaky");
    cr_expect_str_eq(json_string_value(json_object_get(j, "state")), "ready");
    /* pid, incarnation and started_at describe the process that serves. */
    cr_expect_eq(jint(j, "pid"), pid);
    cr_expect_eq(jint(j, "incarnation"), 1, "incarnation %ld shown with the pid of 1",
                 jint(j, "incarnation"));
    cr_expect_str_eq(json_string_value(json_object_get(j, "started_at")),
                     json_string_value(json_object_get(before, "started_at")));
    /* ... and the admin API says the restart failed, and why. */
    cr_expect(json_is_null(json_object_get(before, "last_restart_error")));
    const char *why = json_string_value(json_object_get(j, "last_restart_error"));
    cr_expect(why != NULL && strstr(why, "the admin restart failed") != NULL &&
              strstr(why, "exited with code") != NULL, "%s", why ? why : "(null)");
    json_decref(j);
    json_decref(before);
    cr_assert_eq(http_get(gwp_admin_url(&g, "/-/metrics"), &r), 0);
    cr_expect_not_null(strstr(r.body, "modgate_module_incarnation{module=\"flaky\"} 1\n"), "%s",
                       r.body);
    http_free(&r);
    /* The next start that works takes the next number: 2 went to the one
     * that failed. */
    unlink(gate);
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 202);
    http_free(&r);
    long deadline = ms_now() + 5000;
    while (gwp_module_pid(&g, "flaky") == pid && ms_now() < deadline)
        usleep(10 * 1000);
    j = gwp_module_info(&g, "flaky");
    cr_expect_neq(jint(j, "pid"), pid);
    cr_expect_eq(jint(j, "incarnation"), 3);
    cr_expect(json_is_null(json_object_get(j, "last_restart_error")), "a restart worked since");
    json_decref(j);
    char *log = gwp_log(&g, "flaky.log");
    cr_expect_not_null(strstr(log, "incarnation 2 started"), "%s", log);
    cr_expect_not_null(strstr(log, "incarnation 3 started"), "%s", log);
    free(log);
    gwp_finish(&g);
}

Test(supervision, other_modules_answer_during_a_crash_loop)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}},"
              " \"restart\": {\"backoff_initial_ms\": 5, \"backoff_max_ms\": 20,"
              " \"max_restarts\": 100000, \"window_s\": 1}}");
    struct load l = { .url = gwp_url(&g, "/hello/steady") };
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, load_thread, &l);
    long end = ms_now() + 3000;
    int crashes = 0;
    while (ms_now() < end) {
        if (http_status(gwp_url(&g, "/chaos/crash")) == 502)
            crashes++;
        usleep(50 * 1000);
    }
    atomic_store(&l.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    cr_expect_gt(crashes, 10);
    cr_expect_gt(atomic_load(&l.ok), 100);
    cr_expect_eq(atomic_load(&l.bad), 0, "hello failed %ld times during %d crashes",
                 atomic_load(&l.bad), crashes);
    gwp_finish(&g);
}

Test(supervision, nothing_leaks_over_a_thousand_restarts, .timeout = 600)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}},"
              " \"restart\": {\"backoff_initial_ms\": 1, \"backoff_max_ms\": 1,"
              " \"max_restarts\": 1000000, \"window_s\": 1}}");
    for (int i = 0; i < 30; i++) /* warm up: caches, pools, logs */
        crash_and_wait(&g);
    int fds0 = count_fds(g.pid), files0 = count_nonsocket_fds(g.pid);
    long rss0 = rss_kb(g.pid);
    for (int i = 0; i < 1000; i++)
        crash_and_wait(&g);
    int fds1 = count_fds(g.pid), files1 = count_nonsocket_fds(g.pid);
    long rss1 = rss_kb(g.pid);
    cr_expect_leq(fds1, fds0 + 2, "descriptors: %d before, %d after", fds0, fds1);
    for (int i = 0; i < 20 && files1 > files0; i++) { /* one open for a moment */
        usleep(50 * 1000);
        files1 = count_nonsocket_fds(g.pid);
    }
    cr_expect_leq(files1, files0, "pipes, pidfds, files: %d before, %d after", files0, files1);
    cr_expect_eq(count_zombies(g.pid), 0);
#if !defined(__SANITIZE_ADDRESS__)
    /* (Under AddressSanitizer freed memory sits in quarantine.) */
    cr_expect_lt(rss1 - rss0, 4 * 1024, "RSS: %ld KiB before, %ld KiB after", rss0, rss1);
#else
    (void)rss0, (void)rss1;
#endif
    json_t *j = gwp_module_info(&g, "chaos");
    cr_expect_eq(jint(j, "restarts"), 1030);
    json_decref(j);
    gwp_finish(&g);
}

/* Finds `name{labels}` in a Prometheus exposition; its value, or -1. */
static double metric(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            return atof(line + n + 1);
    return -1;
}

/* tmp cleaners remove old entries under /tmp: a socket directory that
 * went away is made again at the next start, and the module comes back. */
/* A probe time belongs to a process: a dead one's is not shown. */
/* Between a module's death and the decision what comes next, the gateway
 * reads and logs the tail of its log (up to 1 MiB): all that time the
 * admin API said "ready" with no pid, and a client waiting for the
 * restart (or readyz) took the dead incarnation for the new one. */
Test(supervision, a_dead_module_is_never_shown_ready)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}},"
              " \"health\": {\"log_tail_lines\": 10000},"
              " \"restart\": {\"backoff_initial_ms\": 50}}");
    cr_assert_eq(http_status(gwp_url(&g, "/chaos/log?lines=60000")), 200);
    for (int round = 0; round < 3; round++) {
        pid_t pid = gwp_module_pid(&g, "chaos");
        cr_assert_gt(pid, 0);
        long inc = gwp_module_int(&g, "chaos", "incarnation");
        cr_assert_eq(kill(pid, SIGKILL), 0);
        int looks = 0, wrong = 0;
        char seen[64] = "";
        for (long t0 = ms_now(); ms_now() - t0 < 10000; looks++) {
            json_t *j = gwp_module_info(&g, "chaos");
            const char *st = json_string_value(json_object_get(j, "state"));
            long now_inc = jint(j, "incarnation");
            bool ready = st != NULL && strcmp(st, "ready") == 0;
            if (ready && now_inc == inc && !json_is_integer(json_object_get(j, "pid")) &&
                wrong++ == 0)
                snprintf(seen, sizeof(seen), "ready, incarnation %ld, pid null", now_inc);
            json_decref(j);
            if (ready && now_inc > inc)
                break;
        }
        cr_expect_eq(wrong, 0, "round %d: %d of %d looks said \"%s\"", round, wrong, looks, seen);
        cr_assert_eq(gwp_module_int(&g, "chaos", "incarnation"), inc + 1);
    }
    gwp_finish(&g);
}

Test(supervision, the_probe_rtt_of_a_dead_process_is_not_shown)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}},"
              " \"health\": {\"period_ms\": 50},"
              " \"restart\": {\"backoff_initial_ms\": 60000, \"backoff_max_ms\": 60000}}");
    json_t *j = NULL;
    for (long t0 = ms_now(); ms_now() - t0 < 3000; usleep(20 * 1000)) {
        json_decref(j);
        j = gwp_module_info(&g, "chaos");
        if (json_is_number(json_object_get(j, "last_probe_rtt_ms")))
            break;
    }
    cr_assert(json_is_number(json_object_get(j, "last_probe_rtt_ms")));
    json_decref(j);
    cr_expect_eq(http_status(gwp_url(&g, "/chaos/crash")), 502);
    cr_assert(gwp_wait_state(&g, "chaos", "restarting", 3000));
    j = gwp_module_info(&g, "chaos");
    cr_expect(json_is_null(json_object_get(j, "pid")));
    cr_expect(json_is_null(json_object_get(j, "last_probe_rtt_ms")));
    json_decref(j);
    gwp_finish(&g);
}

Test(supervision, a_removed_socket_directory_is_made_again)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}}}");
    const char *sock = strstr(g.out, "module chaos ready: pid ");
    cr_assert_not_null(sock, "%s", g.out);
    sock = strstr(sock, "socket ");
    cr_assert_not_null(sock);
    char dir[512];
    snprintf(dir, sizeof(dir), "%.*s", (int)strcspn(sock + 7, ","), sock + 7);
    char *slash = strrchr(dir, '/');
    cr_assert_not_null(slash);
    *slash = '\0';
    cr_assert_not_null(strstr(dir, "/modgate-"), "%s", dir);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    crash_and_wait(&g);
    cr_expect(gwp_wait_log(&g, "gateway.log", "had been removed (a tmp cleaner?): made again", 3000));
    struct stat st;
    cr_assert_eq(stat(dir, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0700);
    cr_expect_eq(http_status(gwp_url(&g, "/chaos/slow?ms=1")), 200);
    gwp_finish(&g);
}

Test(supervision, metrics_are_prometheus_text_and_count)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}},"
              " \"health\": {\"period_ms\": 100}}");
    for (int i = 0; i < 3; i++)
        cr_expect_eq(http_status(gwp_url(&g, "/hello/m")), 200);
    cr_expect_eq(http_status(gwp_url(&g, "/nothing")), 404);
    crash_and_wait(&g);
    usleep(300 * 1000); /* a few probes */
    struct http_resp r;
    cr_assert_eq(http_get(gwp_admin_url(&g, "/-/metrics"), &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_not_null(strstr(http_header(&r, "Content-Type"), "text/plain"));
    /* Every line is a comment or "name{labels} value", and the samples of a
     * family follow its TYPE line, all together. */
    char *copy = strdup(r.body);
    char family[128] = "";
    for (char *save, *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            cr_expect(strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0,
                      "%s", line);
            if (strncmp(line, "# TYPE ", 7) == 0)
                sscanf(line + 7, "%127s", family);
            continue;
        }
        /* name, optional {labels}, one space, a number */
        size_t nl = strspn(line, "abcdefghijklmnopqrstuvwxyz_");
        cr_expect_gt(nl, 0, "bad line: %s", line);
        size_t fl = strlen(family);
        const char *suffix = line + fl;
        cr_expect(fl > 0 && fl <= nl && strncmp(line, family, fl) == 0 &&
                      (suffix == line + nl || strncmp(suffix, "_bucket", 7) == 0 ||
                       strncmp(suffix, "_sum", 4) == 0 || strncmp(suffix, "_count", 6) == 0),
                  "%.*s is outside its family (%s)", (int)nl, line, family);
        const char *rest = line + nl;
        if (*rest == '{') {
            rest = strchr(rest, '}');
            cr_assert_not_null(rest, "bad labels: %s", line);
            rest++;
        }
        cr_expect_eq(*rest, ' ', "bad line: %s", line);
        char *end;
        strtod(rest + 1, &end);
        cr_expect(end != rest + 1 && *end == '\0', "value of %s", line);
    }
    free(copy);
    cr_expect_eq(metric(r.body, "modgate_requests_total{module=\"hello\",status=\"200\"}"), 3);
    cr_expect_eq(metric(r.body, "modgate_requests_total{module=\"\",status=\"404\"}"), 1);
    cr_expect_eq(metric(r.body, "modgate_module_restarts_total{module=\"chaos\",reason=\"signaled\"}"),
                 1);
    cr_expect_eq(metric(r.body, "modgate_module_up{module=\"chaos\"}"), 1);
    cr_expect_geq(metric(r.body, "modgate_request_duration_seconds_count{module=\"hello\"}"), 3);
    cr_expect_eq(metric(r.body, "modgate_request_duration_seconds_bucket{module=\"hello\",le=\"+Inf\"}"),
                 metric(r.body, "modgate_request_duration_seconds_count{module=\"hello\"}"));
    cr_expect_gt(metric(r.body, "modgate_probe_duration_seconds_count{module=\"hello\"}"), 0);
    cr_expect_geq(metric(r.body, "modgate_requests_in_flight{module=\"hello\"}"), 0);
    /* Requests no module took have their latency too. */
    cr_expect_eq(metric(r.body, "modgate_request_duration_seconds_count{module=\"\"}"), 1);
    http_free(&r);
    gwp_finish(&g);
}

/* An admin restart while a crashed module waits for its backoff replaces
 * the pending restart: one process starts, counted once, as admin (it was
 * counted as a crash restart too), and /-/modules agrees. */
Test(supervision, an_admin_restart_during_the_backoff_is_counted_once)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}},"
              " \"restart\": {\"backoff_initial_ms\": 3000}}");
    struct http_resp r;
    http_get(gwp_url(&g, "/chaos/crash"), &r);
    http_free(&r);
    cr_assert(gwp_wait_state(&g, "chaos", "restarting", 2000));
    cr_assert_eq(http_do(&(struct http_req){ .method = "POST",
                                              .url = gwp_admin_url(&g, "/-/modules/chaos/restart") },
                         &r), 0);
    cr_expect_eq(r.status, 202);
    http_free(&r);
    cr_assert(gwp_wait_state(&g, "chaos", "ready", 2000));
    usleep(3500 * 1000); /* past the backoff: no second start */
    cr_assert_eq(http_get(gwp_admin_url(&g, "/-/metrics"), &r), 0);
    double signaled =
        metric(r.body, "modgate_module_restarts_total{module=\"chaos\",reason=\"signaled\"}");
    double admin = metric(r.body, "modgate_module_restarts_total{module=\"chaos\",reason=\"admin\"}");
    cr_expect_eq(signaled + admin, 1, "signaled %g + admin %g", signaled, admin);
    cr_expect_eq(admin, 1);
    cr_expect_eq(metric(r.body, "modgate_module_incarnation{module=\"chaos\"}"), 2);
    http_free(&r);
    cr_assert_eq(http_get(gwp_admin_url(&g, "/-/modules/chaos"), &r), 0);
    json_t *j = json_loads(r.body, 0, NULL);
    cr_assert_not_null(j, "%s", r.body);
    cr_expect_eq(json_integer_value(json_object_get(j, "restarts")), 0);
    cr_expect_eq(json_integer_value(json_object_get(j, "incarnation")), 2);
    json_decref(j);
    http_free(&r);
    gwp_finish(&g);
}

/* A module built in but not enabled is not "no such module". */
Test(supervision, admin_api_tells_a_disabled_module_from_an_unknown_one)
{
    struct gwp g;
    gwp_start_ok(&g, NULL); /* chaos is off by default */
    struct http_resp r;
    cr_assert_eq(http_get(gwp_admin_url(&g, "/-/modules/chaos"), &r), 0);
    cr_expect_eq(r.status, 404);
    cr_expect_not_null(strstr(r.body, "module chaos is not enabled"), "%s", r.body);
    http_free(&r);
    cr_assert_eq(http_get(gwp_admin_url(&g, "/-/modules/nosuch"), &r), 0);
    cr_expect_eq(r.status, 404);
    cr_expect_not_null(strstr(r.body, "no such module"), "%s", r.body);
    http_free(&r);
    gwp_finish(&g);
}

Test(supervision, admin_api_modules_log_and_token)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"admin_token\": \"s3cret\", \"modules\": {\"chaos\": {\"enabled\": true}}}");
    struct http_resp r;
    cr_assert_eq(http_get(gwp_admin_url(&g, "/-/modules"), &r), 0);
    cr_expect_eq(r.status, 401);
    const char *challenge = http_header(&r, "WWW-Authenticate");
    cr_expect(challenge != NULL && strncmp(challenge, "Bearer ", 7) == 0, "a 401 says how: %s",
              challenge ? challenge : "(none)");
    /* An admin error has a request id, as on the public listener. */
    const char *rid = http_header(&r, "X-Request-Id");
    cr_expect(rid != NULL && strlen(rid) == 32, "%s", rid ? rid : "(none)");
    cr_expect_not_null(strstr(r.body, rid ? rid : "?"), "%s", r.body);
    http_free(&r);
    cr_expect_eq(http_status(gwp_admin_url(&g, "/-/healthz")), 200, "healthz needs no token");
    cr_expect_eq(http_status(gwp_admin_url(&g, "/-/readyz")), 200);
    const char *bad[] = { "Authorization: Bearer wrong", NULL };
    struct http_req q = { .url = gwp_admin_url(&g, "/-/modules"), .headers = bad };
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 401);
    /* A wrong token is told apart from a missing one (RFC 6750 §3.1). */
    challenge = http_header(&r, "WWW-Authenticate");
    cr_expect(challenge != NULL && strstr(challenge, "error=\"invalid_token\"") != NULL, "%s",
              challenge ? challenge : "(none)");
    cr_expect_not_null(strstr(r.body, "admin token rejected"), "%s", r.body);
    http_free(&r);
    const char *good[] = { "Authorization: Bearer s3cret", NULL };
    q.headers = good;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 200);
    json_t *arr = json_loads(r.body, 0, NULL);
    cr_assert(json_is_array(arr), "%s", r.body);
    /* The example modules enabled here (a user's own modules built into
     * the same binary may come too, disabled or not). */
    const char *want[] = { "echo", "hello", "stream", "chaos" };
    for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
        bool found = false;
        for (size_t i = 0; i < json_array_size(arr); i++)
            found |= strcmp(json_string_value(json_object_get(json_array_get(arr, i), "name")),
                            want[w]) == 0;
        cr_expect(found, "module %s listed: %s", want[w], r.body);
    }
    json_t *m = json_array_get(arr, 0);
    const char *keys[] = { "name", "state", "pid", "incarnation", "restarts", "started_at",
                           "last_exit", "last_probe_rtt_ms", "active_requests", "log_file",
                           "routes" };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        cr_expect_not_null(json_object_get(m, keys[i]), "key %s", keys[i]);
    json_decref(arr);
    http_free(&r);

    q.url = gwp_admin_url(&g, "/-/modules/nope");
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 404);
    http_free(&r);

    cr_expect_eq(http_status(gwp_url(&g, "/chaos/log?lines=10")), 200);
    cr_assert(gwp_wait_log(&g, "chaos.log", "chaos line 9", 2000));
    q.url = gwp_admin_url(&g, "/-/modules/chaos/log?lines=3");
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 200);
    const char *l7 = strstr(r.body, "chaos line 7"), *l8 = strstr(r.body, "chaos line 8"),
               *l9 = strstr(r.body, "chaos line 9");
    cr_expect(l7 && l8 && l9 && l7 < l8 && l8 < l9, "%s", r.body);
    cr_expect_null(strstr(r.body, "chaos line 6"), "%s", r.body);
    http_free(&r);
    gwp_finish(&g);
}

Test(supervision, sighup_reopens_log_files)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}}}");
    char from[400], to[400];
    const char *names[] = { "gateway.log", "access.log", "chaos.log" };
    for (int i = 0; i < 3; i++) {
        snprintf(from, sizeof(from), "%s/%s", g.logdir, names[i]);
        snprintf(to, sizeof(to), "%s/%s.1", g.logdir, names[i]);
        cr_assert_eq(rename(from, to), 0);
    }
    kill(g.pid, SIGHUP);
    cr_expect(gwp_wait_log(&g, "gateway.log", "log files reopened", 3000));
    usleep(200 * 1000); /* the children reopen theirs */
    cr_expect_eq(http_status(gwp_url(&g, "/chaos/log?lines=1")), 200);
    cr_expect(gwp_wait_log(&g, "chaos.log", "chaos line 0", 3000));
    cr_expect(gwp_wait_log(&g, "access.log", "/chaos/log?lines=1", 3000));
    gwp_finish(&g);
}

/* A log that cannot be reopened (its directory gone) is said so, each
 * file tried on its own, and not reported reopened. */
Test(supervision, sighup_says_which_logs_it_could_not_reopen)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    char moved[400];
    snprintf(moved, sizeof(moved), "%s.moved", g.logdir);
    cr_assert_eq(rename(g.logdir, moved), 0);
    kill(g.pid, SIGHUP);
    char path[450];
    snprintf(path, sizeof(path), "%s/gateway.log", moved);
    char *log = NULL;
    for (long t0 = ms_now(); ms_now() - t0 < 3000; usleep(20 * 1000)) {
        free(log);
        log = read_file(path, NULL);
        if (log != NULL && strstr(log, "could not be reopened") != NULL)
            break;
    }
    cr_assert_not_null(log);
    cr_expect_not_null(strstr(log, "SIGHUP: cannot reopen gateway.log"), "%s", log);
    cr_expect_not_null(strstr(log, "/access.log: No such file or directory"), "%s", log);
    cr_expect_not_null(strstr(log, "/hello.log: No such file or directory"), "%s", log);
    cr_expect_not_null(strstr(log, "could not be reopened"), "%s", log);
    cr_expect_null(strstr(log, "log files reopened"), "%s", log);
    free(log);
    cr_assert_eq(rename(moved, g.logdir), 0);
    gwp_finish(&g);
}

struct hup_spam {
    pid_t pid;
    atomic_bool stop;
};

static void *hup_spam(void *arg)
{
    struct hup_spam *h = arg;
    while (!atomic_load(&h->stop)) {
        kill(h->pid, SIGHUP);
        usleep(1000);
    }
    return NULL;
}

/* SIGHUP (logrotate's postrotate) may come while a module is starting:
 * it must reopen logs, never kill the module. With a SIGHUP every
 * millisecond during twenty admin restarts, each start meets several. */
Test(supervision, sighup_while_modules_start_kills_none)
{
    struct gwp g;
    gwp_start_ok(&g, NULL);
    struct hup_spam h = { .pid = g.pid };
    pthread_t t;
    pthread_create(&t, NULL, hup_spam, &h);
    char url[256]; /* gwp_admin_url's buffer is reused below */
    snprintf(url, sizeof(url), "%s", gwp_admin_url(&g, "/-/modules/hello/restart"));
    struct http_req q = { .method = "POST", .url = url };
    for (int i = 0; i < 20; i++) {
        struct http_resp r;
        cr_expect_eq(http_do(&q, &r), 0);
        cr_expect_eq(r.status, 202, "%ld %s", r.status, r.body);
        http_free(&r);
        /* the next restart once this one is through */
        for (long t0 = ms_now(); ms_now() - t0 < 5000; usleep(10 * 1000)) {
            json_t *j = gwp_module_info(&g, "hello");
            long inc = jint(j, "incarnation");
            json_decref(j);
            if (inc >= i + 2)
                break;
        }
    }
    atomic_store(&h.stop, true);
    pthread_join(t, NULL);
    json_t *j = gwp_module_info(&g, "hello");
    cr_expect_eq(jint(j, "incarnation"), 21);
    json_decref(j);
    char *log = gwp_log(&g, "gateway.log");
    cr_expect_null(strstr(log, "SIGHUP)"), "%s", log);
    cr_expect_null(strstr(log, "admin restart failed"), "%s", log);
    free(log);
    cr_expect_eq(http_status(gwp_url(&g, "/hello/x")), 200);
    gwp_finish(&g);
}

Test(supervision, systemd_notifications)
{
    char path[] = "/tmp/mgt-notify-XXXXXX";
    int tmp = mkstemp(path);
    close(tmp);
    unlink(path);
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, path);
    cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setenv("NOTIFY_SOCKET", path, 1);
    setenv("WATCHDOG_USEC", "200000", 1);
    struct gwp g;
    gwp_start_ok(&g, NULL);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    bool ready = false, status = false, watchdog = false, stopping = false;
    long deadline = ms_now() + 3000;
    char msg[1024];
    while (!(ready && status && watchdog) && ms_now() < deadline) {
        struct timeval tv = { 0, 100000 };
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        ssize_t n = recv(s, msg, sizeof(msg) - 1, 0);
        if (n <= 0)
            continue;
        msg[n] = '\0';
        ready |= strcmp(msg, "READY=1") == 0;
        status |= strncmp(msg, "STATUS=", 7) == 0 && strstr(msg, "hello ready") != NULL;
        watchdog |= strcmp(msg, "WATCHDOG=1") == 0;
    }
    cr_expect(ready && status && watchdog, "ready %d status %d watchdog %d", ready, status,
              watchdog);
    /* The modules must not see the gateway's manager. */
    pid_t child = gwp_module_pid(&g, "hello");
    char envpath[64];
    snprintf(envpath, sizeof(envpath), "/proc/%d/environ", (int)child);
    size_t elen;
    char *env = read_file(envpath, &elen);
    bool leaked = false;
    for (size_t off = 0; env && off < elen; off += strlen(env + off) + 1)
        leaked |= strncmp(env + off, "NOTIFY_SOCKET=", 14) == 0;
    cr_expect(!leaked, "NOTIFY_SOCKET was passed to a module");
    free(env);
    kill(g.pid, SIGTERM);
    deadline = ms_now() + 5000;
    while (!stopping && ms_now() < deadline) {
        ssize_t n = recv(s, msg, sizeof(msg) - 1, 0);
        if (n > 0) {
            msg[n] = '\0';
            stopping |= strcmp(msg, "STOPPING=1") == 0;
        }
    }
    cr_expect(stopping);
    cr_expect_eq(gwp_stop(&g), 0);
    gwp_cleanup(&g);
    close(s);
    unlink(path);
}

Test(supervision, admin_log_lines_must_be_a_number)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}}}");
    cr_expect_eq(http_status(gwp_url(&g, "/chaos/log?lines=10")), 200);
    cr_assert(gwp_wait_log(&g, "chaos.log", "chaos line 9", 2000));
    const char *bad[] = { "-1", "abc", "", "3x", "+3", " 3", "0x10", "1e3", "-0" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char path[128];
        snprintf(path, sizeof(path), "/-/modules/chaos/log?lines=%s", bad[i]);
        /* Spaces and '+' must reach the server as such. */
        if (strcmp(bad[i], " 3") == 0)
            snprintf(path, sizeof(path), "/-/modules/chaos/log?lines=%%203");
        else if (strcmp(bad[i], "+3") == 0)
            snprintf(path, sizeof(path), "/-/modules/chaos/log?lines=%%2B3");
        struct http_resp r;
        cr_assert_eq(http_get(gwp_admin_url(&g, path), &r), 0);
        cr_expect_eq(r.status, 400, "lines=%s: %ld %s", bad[i], r.status, r.body);
        json_t *j = json_loads(r.body ? r.body : "", 0, NULL);
        cr_expect(json_is_string(json_object_get(j, "error")), "lines=%s: %s", bad[i], r.body);
        cr_expect_not_null(strstr(r.body ? r.body : "", "lines"), "names the parameter: %s",
                           r.body);
        json_decref(j);
        http_free(&r);
    }
    /* A number too large to be meant is capped, not refused. */
    struct http_resp r;
    cr_assert_eq(http_get(gwp_admin_url(&g, "/-/modules/chaos/log?lines=99999999999999999999999"),
                          &r), 0);
    cr_expect_eq(r.status, 200, "%s", r.body);
    cr_expect_not_null(strstr(r.body, "chaos line 0"), "%s", r.body);
    http_free(&r);
    cr_assert_eq(http_get(gwp_admin_url(&g, "/-/modules/chaos/log?lines=2"), &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_null(strstr(r.body, "chaos line 7"), "%s", r.body);
    cr_expect_not_null(strstr(r.body, "chaos line 9"), "%s", r.body);
    http_free(&r);
    cr_assert_eq(http_get(gwp_admin_url(&g, "/-/modules/chaos/log?lines=0"), &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_eq(r.len, 0, "%s", r.body);
    http_free(&r);
    gwp_finish(&g);
}

static void expect_405(const char *url, const char *method, const char *allow)
{
    struct http_req q = { .method = method, .url = url };
    struct http_resp r;
    cr_assert_eq(http_do(&q, &r), 0);
    cr_expect_eq(r.status, 405, "%s %s: %ld %s", method, url, r.status, r.body);
    const char *a = http_header(&r, "Allow");
    cr_expect_str_eq(a ? a : "(none)", allow, "%s %s", method, url);
    json_t *j = json_loads(r.body ? r.body : "", 0, NULL);
    cr_expect(json_is_string(json_object_get(j, "error")), "%s %s: %s", method, url, r.body);
    json_decref(j);
    http_free(&r);
}

Test(supervision, admin_paths_answer_405_with_allow_for_a_wrong_method)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}}}");
    const char *reads[] = { "/-/healthz", "/-/readyz", "/-/modules", "/-/metrics",
                            "/-/modules/chaos", "/-/modules/chaos/log" };
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        expect_405(gwp_admin_url(&g, reads[i]), "POST", "GET, HEAD");
        expect_405(gwp_admin_url(&g, reads[i]), "DELETE", "GET, HEAD");
    }
    expect_405(gwp_admin_url(&g, "/-/modules/chaos/restart"), "GET", "POST");
    expect_405(gwp_admin_url(&g, "/-/modules/chaos/restart"), "PUT", "POST");
    /* The two also served on the public listener. */
    expect_405(gwp_url(&g, "/-/healthz"), "POST", "GET, HEAD");
    expect_405(gwp_url(&g, "/-/readyz"), "PUT", "GET, HEAD");
    /* Paths that do not exist stay 404. */
    cr_expect_eq(http_status(gwp_admin_url(&g, "/-/modules/chaos/nope")), 404);
    cr_expect_eq(http_status(gwp_admin_url(&g, "/-/nope")), 404);
    gwp_finish(&g);
}

/* SPEC §5: the line naming the new incarnation and pid comes before
 * anything the process itself writes to the module's log. */
Test(supervision, the_incarnation_line_comes_before_the_process_own_lines)
{
    struct gwp g;
    cr_assert_eq(gwp_start_bin(&g, MODGATE_TESTGW,
                               "{\"modules\": {\"flaky\": {\"env\": {\"FLAKY_MODE\": \"slow\","
                               " \"FLAKY_SLEEP_MS\": \"0\"}}}}", NULL), 0, "%s", g.out);
    for (int i = 0; i < 20; i++) {
        pid_t pid = gwp_module_pid(&g, "flaky");
        struct http_req q = { .method = "POST",
                              .url = gwp_admin_url(&g, "/-/modules/flaky/restart") };
        struct http_resp r;
        cr_assert_eq(http_do(&q, &r), 0);
        http_free(&r);
        long deadline = ms_now() + 5000;
        while (gwp_module_pid(&g, "flaky") == pid && ms_now() < deadline)
            usleep(2000);
    }
    char *log = gwp_log(&g, "flaky.log");
    int starts = 0;
    unsigned want = 1;
    const char *prev = NULL;
    for (const char *line = log; *line != '\0';) {
        const char *nl = strchr(line, '\n');
        if (strstr(line, "flaky: starting slowly") != NULL &&
            strstr(line, "flaky: starting slowly") < (nl ? nl : line + strlen(line))) {
            char head[64];
            snprintf(head, sizeof(head), "INFO modgate: incarnation %u started, pid ", want);
            const char *h = prev ? strstr(prev, head) : NULL;
            cr_expect(h != NULL && h < line, "start %u: the line before its own is not \"%s\":\n%s",
                      want, head, log);
            starts++;
            want++;
        }
        prev = line;
        if (nl == NULL)
            break;
        line = nl + 1;
    }
    cr_expect_eq(starts, 21, "%s", log);
    free(log);
    gwp_finish(&g);
}

/* The mechanism of the test above, without its race: the process writes
 * the line itself, first thing, with its own pid. */
Test(supervision, a_module_process_names_its_incarnation_first)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    char sock[] = "/tmp/mgt-inc-XXXXXX";
    cr_assert_not_null(mkdtemp(sock));
    char listen[128];
    snprintf(listen, sizeof(listen), "unix:%s/s.sock", sock);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        execl(MODGATE_BIN, MODGATE_BIN, "--module", "hello", "--listen", listen, "--incarnation",
              "7", NULL);
        _exit(127);
    }
    close(p[1]);
    char buf[512] = "";
    size_t len = 0;
    long deadline = ms_now() + 10000;
    while (strchr(buf, '\n') == NULL && len < sizeof(buf) - 1 && ms_now() < deadline) {
        ssize_t n = read(p[0], buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
    }
    char want[64];
    snprintf(want, sizeof(want), " INFO modgate: incarnation 7 started, pid %d\n", (int)pid);
    const char *at = strstr(buf, want);
    cr_expect(at != NULL && strchr(buf, '\n') == at + strlen(want) - 1, "first line: %s", buf);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    close(p[0]);
    char path[160];
    snprintf(path, sizeof(path), "%s/s.sock", sock);
    unlink(path);
    rmdir(sock);
}

Test(supervision, probe_rtt_is_printed_to_the_microsecond)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"health\": {\"period_ms\": 10}}");
    int seen = 0;
    long deadline = ms_now() + 3000;
    while (seen < 20 && ms_now() < deadline) {
        struct http_resp r;
        cr_assert_eq(http_get(gwp_admin_url(&g, "/-/modules"), &r), 0);
        for (const char *p = r.body; (p = strstr(p, "\"last_probe_rtt_ms\": ")) != NULL;) {
            p += strlen("\"last_probe_rtt_ms\": ");
            size_t n = strspn(p, "0123456789.eE-+");
            if (n == 0)
                continue; /* null: no probe yet */
            const char *dot = memchr(p, '.', n);
            size_t decimals = dot ? n - (size_t)(dot - p) - 1 : 0;
            cr_expect_leq(decimals, 3, "%.*s", (int)n, p);
            cr_expect_null(memchr(p, 'e', n), "%.*s", (int)n, p);
            seen++;
        }
        http_free(&r);
        usleep(20 * 1000);
    }
    cr_expect_geq(seen, 20);
    gwp_finish(&g);
}

/* What a module left of a line when it died stays its own line: the next
 * incarnation's first line starts on a line of its own. And a log file
 * deleted (or moved away without a SIGHUP) is made again at the next
 * start, not written into unseen. */
Test(supervision, a_restart_starts_its_log_on_a_new_line_and_in_a_file_that_exists)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}},"
              " \"restart\": {\"backoff_initial_ms\": 300, \"backoff_max_ms\": 300}}");
    char path[400];
    snprintf(path, sizeof(path), "%s/chaos.log", g.logdir);
    /* Dead (its 502 is out), and the next start 300 ms away: what it
     * "wrote last" is half a line. */
    cr_assert_eq(http_status(gwp_url(&g, "/chaos/crash")), 502);
    FILE *f = fopen(path, "a");
    cr_assert_not_null(f);
    fputs("a line the module did not finish", f);
    fclose(f);
    cr_assert(gwp_wait_log(&g, "chaos.log", "incarnation 2 started", 5000));
    /* Its first line comes before it is ready: the next crash needs it ready. */
    cr_assert(gwp_wait_state(&g, "chaos", "ready", 5000));
    char *log = gwp_log(&g, "chaos.log");
    cr_expect_not_null(strstr(log, "did not finish\n"), "%s", log);
    const char *inc = strstr(log, "incarnation 2 started");
    cr_expect(inc != NULL && strstr(log, "did not finish\n") < inc, "%s", log);
    free(log);

    cr_assert_eq(unlink(path), 0);
    crash_and_wait(&g);
    cr_expect(gwp_wait_log(&g, "chaos.log", "incarnation 3 started", 3000),
              "the new incarnation writes to a chaos.log that exists");
    cr_expect(gwp_wait_log(&g, "gateway.log", "chaos.log was deleted or moved: opened anew", 3000));
    cr_expect_eq(http_status(gwp_url(&g, "/chaos/log?lines=2")), 200);
    cr_expect(gwp_wait_log(&g, "chaos.log", "chaos line 1", 3000));
    gwp_finish(&g);
}

/* A module that dies while the gateway drains its last requests is not
 * restarted, and the log does not say it will be. */
static void *slow_get(void *arg)
{
    return (void *)(intptr_t)http_status(arg);
}

Test(supervision, a_module_dying_during_the_drain_is_not_said_to_restart)
{
    struct gwp g;
    gwp_start_ok(&g, "{\"modules\": {\"chaos\": {\"enabled\": true}}}");
    pid_t hello = gwp_module_pid(&g, "hello");
    char url[256];
    snprintf(url, sizeof(url), "%s", gwp_url(&g, "/chaos/slow?ms=1500"));
    pthread_t t;
    pthread_create(&t, NULL, slow_get, url);
    usleep(300 * 1000);
    cr_assert_eq(kill(g.pid, SIGTERM), 0);
    cr_expect(gwp_wait_log(&g, "gateway.log", "TERM received: stopping", 3000));
    cr_assert_eq(kill(hello, SIGKILL), 0);
    cr_expect(gwp_wait_log(&g, "gateway.log", "module hello: not restarted, the gateway is stopping",
                           3000));
    void *status;
    pthread_join(t, &status);
    cr_expect_eq((intptr_t)status, 200, "the request in flight finished");
    char *log = gwp_log(&g, "gateway.log");
    cr_expect_null(strstr(log, "module hello: restarting in"), "%s", log);
    free(log);
    gwp_finish(&g);
}
