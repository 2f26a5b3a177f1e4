/*
 * Module supervision as an explicit state machine (SPEC §5):
 *
 *   (spawn) -> starting --ready byte--> ready
 *   starting --exit / ready timeout--> restarting (after backoff) | failed
 *   ready --exit--> restarting | failed
 *   ready --probes missed unhealthy_after times--> unhealthy --SIGKILL, exit--> restarting
 *   restarting --backoff over--> starting
 *   failed --admin restart--> starting
 *   ready --admin restart--> ready (a new incarnation starts beside the old
 *         one, takes over once ready; the old one drains and stops)
 *   any --gateway stop--> stopping --exit--> stopped
 *
 * Every transition happens here, on the main thread, and is published to
 * the event loops under the module's mutex (which incarnation serves, the
 * state, when a restart is due).
 */
#include "supervisor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw.h"
#include "logfile.h"
#include "logtail.h"
#include "loop.h"
#include "notify.h"
#include "prober.h"
#include "rundir.h"
#include "spawner.h"

extern char **environ;

enum { W_SIGNAL = 1, W_WAKE = 2 }; /* small tags; incarnations are pointer | kind */
enum { W_PID = 1, W_READY = 2 };

struct gw_supervisor {
    struct gateway *gw;
    int epfd, sigfd, wakefd;
    char exe_name[256];          /* argv[0] of children */
    char child_exe[4200];        /* what children run */
    char ***envs;                /* per module: the child's environment */
    unsigned *numbers;           /* per module: the last incarnation number given out */
    bool stop_requested;
    struct gw_incarnation *live; /* every process not yet reaped */
    struct gw_prober *prober;
    /* systemd */
    bool ready_sent;
    bool systemd;                /* NOTIFY_SOCKET was set */
    char *status;                /* the last STATUS= sent */
    uint64_t next_watchdog_ms;
    uint64_t *heartbeats;        /* per loop, at the last ping */
};

static void on_probe(void *ctx, struct gw_incarnation *inc, bool ok, uint64_t rtt_us,
                     const char *why);

static uint64_t watch_tag(struct gw_incarnation *inc, int kind)
{
    return (uint64_t)(uintptr_t)inc | (uint64_t)kind;
}

static int watch(struct gw_supervisor *s, int fd, uint64_t tag)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };
    return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void unwatch_close(struct gw_supervisor *s, int *fd)
{
    if (*fd >= 0) {
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, *fd, NULL);
        close(*fd);
        *fd = -1;
    }
}

void gw_supervisor_wake(struct gw_supervisor *s)
{
    uint64_t one = 1;
    ssize_t n = write(s->wakefd, &one, sizeof(one));
    (void)n;
}

/* The child's environment: ours, minus what belongs to our own service
 * manager, with the module's configured variables on top. */
static char **build_env(const struct gw_module_conf *conf)
{
    static const char *const drop[] = { "NOTIFY_SOCKET=", "WATCHDOG_PID=", "WATCHDOG_USEC=",
                                        "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=" };
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **env = calloc(n + conf->nenv + 1, sizeof(char *));
    if (env == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = environ[i];
        bool skip = false;
        for (size_t d = 0; d < sizeof(drop) / sizeof(drop[0]) && !skip; d++)
            skip = strncmp(e, drop[d], strlen(drop[d])) == 0;
        const char *eq = strchr(e, '=');
        for (size_t j = 0; j < conf->nenv && !skip && eq; j++)
            skip = strncmp(e, conf->env[j], (size_t)(eq - e) + 1) == 0;
        if (!skip)
            env[k++] = (char *)e;
    }
    for (size_t j = 0; j < conf->nenv; j++)
        env[k++] = conf->env[j];
    return env;
}

struct gw_supervisor *gw_supervisor_new(struct gateway *gw, char *err, size_t errlen)
{
    struct gw_supervisor *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->sigfd = -1;
    s->gw = gw;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* What a module forks and leaves behind (setsid or not) comes to us
     * instead of init when its parent dies, so that it can be ended. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    s->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (s->epfd < 0 || s->wakefd < 0 || s->sigfd < 0 || watch(s, s->sigfd, W_SIGNAL) != 0 ||
        watch(s, s->wakefd, W_WAKE) != 0) {
        snprintf(err, errlen, "supervisor setup: %s", strerror(errno));
        gw_supervisor_free(s);
        return NULL;
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    /* Children run the module runner built beside the gateway (the same
     * modules without libcurl), else the gateway itself with --module. */
    snprintf(s->child_exe, sizeof(s->child_exe), "%s-module", self);
    if (n <= 0 || access(s->child_exe, X_OK) != 0)
        snprintf(s->child_exe, sizeof(s->child_exe), "/proc/self/exe");
    const char *runner = strcmp(s->child_exe, "/proc/self/exe") == 0 ? self : s->child_exe;
    const char *base = strrchr(runner, '/');
    snprintf(s->exe_name, sizeof(s->exe_name), "%s", base ? base + 1 : "modgate");
    gw_log(GW_INFO, "module processes run %s", s->child_exe);
    s->envs = calloc(gw->nmodules ? gw->nmodules : 1, sizeof(char **));
    s->numbers = calloc(gw->nmodules ? gw->nmodules : 1, sizeof(*s->numbers));
    if (s->envs == NULL || s->numbers == NULL) {
        snprintf(err, errlen, "out of memory");
        gw_supervisor_free(s);
        return NULL;
    }
    for (size_t i = 0; i < gw->nmodules; i++) {
        if ((s->envs[i] = build_env(gw->modules[i].conf)) == NULL) {
            snprintf(err, errlen, "out of memory");
            gw_supervisor_free(s);
            return NULL;
        }
    }
    s->prober = gw_prober_new(s->epfd, on_probe, s);
    if (s->prober == NULL) {
        snprintf(err, errlen, "cannot set up health probes");
        gw_supervisor_free(s);
        return NULL;
    }
    s->systemd = gw_notify_init();
    return s;
}

static void set_state(struct gw_module *m, enum gw_state st)
{
    pthread_mutex_lock(&m->mu);
    m->state = st;
    pthread_mutex_unlock(&m->mu);
}

static void log_failure(struct gw_supervisor *s, struct gw_module *m, const char *what)
{
    unsigned lines = s->gw->cfg.health.log_tail_lines;
    char *tail = NULL;
    size_t len = 0;
    int rc = lines ? gw_log_tail(m->log_path, lines, 1u << 20, &tail, &len) : 0;
    if (rc != 0)
        gw_log(GW_ERROR, "module %s %s; log %s (unreadable: %s)", m->name, what, m->log_path,
               strerror(-rc));
    else if (lines == 0)
        gw_log(GW_ERROR, "module %s %s; log %s", m->name, what, m->log_path);
    else if (len == 0)
        gw_log(GW_ERROR, "module %s %s; log %s (empty)", m->name, what, m->log_path);
    else
        gw_log(GW_ERROR, "module %s %s; log %s, last %u lines:", m->name, what, m->log_path,
               lines);
    /* Quoted, each line behind "  | ": they are the module's lines (their
     * own times and levels), not the gateway's, and whoever reads or
     * parses gateway.log must be able to tell. */
    struct mg_buf quoted;
    mg__buf_init(&quoted, 2 * len + 4 * (size_t)lines + 64);
    for (size_t at = 0; tail != NULL && at < len;) {
        const char *nl = memchr(tail + at, '\n', len - at);
        size_t n = nl ? (size_t)(nl - (tail + at)) : len - at;
        if (mg__buf_append(&quoted, "  | ", 4) != 0 ||
            mg__buf_append(&quoted, tail + at, n) != 0 || mg__buf_append(&quoted, "\n", 1) != 0)
            break;
        at += n + 1;
    }
    if (quoted.len > 0)
        gw_log_raw(quoted.data, quoted.len);
    mg__buf_free(&quoted);
    free(tail);
}

static void spawn_incarnation(struct gw_supervisor *s, struct gw_module *m, bool replacement);

static enum gw_restart_reason reason_of(const struct gw_incarnation *inc)
{
    if (inc->cause != NULL && strcmp(inc->cause, "hung") == 0)
        return GW_RESTART_HUNG;
    if (inc->cause != NULL && strcmp(inc->cause, "start_timeout") == 0)
        return GW_RESTART_START_TIMEOUT;
    if (!inc->ready)
        return GW_RESTART_START_FAILED;
    return inc->cause != NULL && strcmp(inc->cause, "exited") == 0 ? GW_RESTART_EXITED
                                                                   : GW_RESTART_SIGNALED;
}

/* A start failed or a process died: restart after backoff, or give up. */
static void schedule_restart(struct gw_supervisor *s, struct gw_module *m, uint64_t now,
                             enum gw_restart_reason why)
{
    const struct gw_config *c = &s->gw->cfg;
    if (s->stop_requested) {
        /* The gateway is on its way out: nothing restarts now. */
        m->restart_due_ms = 0;
        pthread_mutex_lock(&m->mu);
        m->state = GW_STOPPED;
        m->retry_at_ms = 0;
        pthread_mutex_unlock(&m->mu);
        gw_log(GW_INFO, "module %s: not restarted, the gateway is stopping", m->name);
        return;
    }
    uint64_t window = (uint64_t)c->restart.window_s * 1000;
    /* Stayed ready for a whole window: the earlier failures are forgiven. */
    if (m->ready_since_ms != 0 && now - m->ready_since_ms >= window) {
        m->backoff_ms = c->restart.backoff_initial_ms;
        m->nrestart_times = 0;
    }
    m->ready_since_ms = 0;
    size_t recent = 0;
    for (size_t i = 0; i < m->nrestart_times; i++)
        if (now - m->restart_times[i] < window)
            m->restart_times[recent++] = m->restart_times[i];
    m->nrestart_times = recent;
    if (recent >= c->restart.max_restarts) {
        pthread_mutex_lock(&m->mu);
        m->state = GW_FAILED;
        m->retry_at_ms = 0;
        pthread_mutex_unlock(&m->mu);
        m->restart_due_ms = 0;
        gw_log(GW_ERROR, "module %s: giving up after %zu restarts within %u s; state failed "
               "until an admin restart", m->name, recent, c->restart.window_s);
        return;
    }
    /* Counted when it happens: an admin restart during the backoff
     * replaces it (and is counted as admin). */
    m->restart_why = (int)why;
    unsigned delay = m->backoff_ms;
    m->backoff_ms = m->backoff_ms > c->restart.backoff_max_ms / 2 ? c->restart.backoff_max_ms
                                                                    : m->backoff_ms * 2;
    m->restart_due_ms = now + delay;
    pthread_mutex_lock(&m->mu);
    /* Whatever it died of (last_exit says: a hang too), no process is
     * left: it waits out its backoff, as its 503s say (cause=restarting). */
    m->state = GW_RESTARTING;
    m->retry_at_ms = m->restart_due_ms;
    pthread_mutex_unlock(&m->mu);
    gw_log(GW_INFO, "module %s: restarting in %u ms", m->name, delay);
}

static void describe_exit(struct gw_incarnation *inc, const siginfo_t *si)
{
    const char *before = inc->ready ? "" : " before ready";
    if (si->si_code == CLD_EXITED) {
        if (inc->cause == NULL)
            inc->cause = "exited";
        snprintf(inc->death, sizeof(inc->death), "exited with code %d%s", si->si_status, before);
        return;
    }
    const char *abbrev = sigabbrev_np(si->si_status);
    if (inc->cause == NULL)
        inc->cause = "signaled";
    char why[96] = "";
    if (inc->kill_sent && strcmp(inc->cause, "start_timeout") == 0) {
        snprintf(why, sizeof(why), " after not being ready within %u ms",
                 inc->mod->conf->ready_timeout_ms);
        before = ""; /* said already */
    }
    else if (inc->kill_sent && strcmp(inc->cause, "hung") == 0)
        snprintf(why, sizeof(why), " after %u missed health probes (hung)", inc->probe_misses);
    else if (inc->kill_sent && strcmp(inc->cause, "stopped") == 0)
        snprintf(why, sizeof(why), " after not stopping within %u ms of SIGTERM",
                 inc->mod->conf->stop_timeout_ms);
    snprintf(inc->death, sizeof(inc->death), "was killed by signal %d (SIG%s)%s%s",
             si->si_status, abbrev ? abbrev : "?", why, before);
}

static void unlink_live(struct gw_supervisor *s, struct gw_incarnation *inc)
{
    for (struct gw_incarnation **p = &s->live; *p != NULL; p = &(*p)->next_live)
        if (*p == inc) {
            *p = inc->next_live;
            return;
        }
}

static bool is_live_pid(const struct gw_supervisor *s, pid_t pid)
{
    for (const struct gw_incarnation *inc = s->live; inc != NULL; inc = inc->next_live)
        if (inc->pid == pid)
            return true;
    return false;
}

/* Ends and reaps every child of ours that is not a module process we
 * started: what a module forked and left behind (it died or was replaced,
 * or it double-forked them away), which the kernel hands to us, the
 * subreaper, rather than to init. Nobody else would end them or wait for
 * them. Children in our own process group are spared: modules run in
 * groups of their own, and a program embedding the gateway may have
 * children of its own. Called at every child's exit (an orphan killed here
 * may leave children of its own to us), so it stays cheap: one read of
 * each thread's children list. */
static void end_orphans(struct gw_supervisor *s)
{
    DIR *tasks = opendir("/proc/self/task");
    struct dirent *t;
    struct mg_buf list;
    mg__buf_init(&list, 16u << 20);
    while (tasks != NULL && (t = readdir(tasks)) != NULL) {
        if (t->d_name[0] < '0' || t->d_name[0] > '9')
            continue;
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/task/%.16s/children", t->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        /* The whole list, then a NUL; none at all rather than a cut one
         * (a cut number is another pid). */
        list.len = 0;
        ssize_t n = 0;
        while (mg__buf_reserve(&list, 4096) == 0 &&
               (n = read(fd, list.data + list.len, 4096)) > 0)
            list.len += (size_t)n;
        close(fd);
        if (n != 0 || mg__buf_append(&list, "", 1) != 0)
            continue;
        for (char *p = list.data, *next; *p != '\0'; p = next) {
            long pid = strtol(p, &next, 10);
            if (next == p)
                break;
            if (pid <= 0 || is_live_pid(s, (pid_t)pid) || getpgid((pid_t)pid) == getpgrp())
                continue;
            siginfo_t si = { 0 };
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG) == 0 && si.si_pid != 0)
                continue; /* was already dead: reaped */
            if (kill((pid_t)pid, SIGKILL) == 0)
                gw_log(GW_WARN, "pid %ld, left behind by a module, killed", pid);
            /* Reaped at its exit's SIGCHLD, if not now. */
            waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG);
        }
    }
    mg__buf_free(&list);
    if (tasks != NULL)
        closedir(tasks);
}


/* An admin restart whose new process did not make it (the old one keeps
 * serving): said in the admin API until a restart works. */
static void set_restart_error(struct gw_module *m, const char *what)
{
    pthread_mutex_lock(&m->mu);
    snprintf(m->last_restart_error, sizeof(m->last_restart_error), "%.*s",
             (int)sizeof(m->last_restart_error) - 1, what); /* cut if it must be */
    pthread_mutex_unlock(&m->mu);
}

/* Reaps `inc` if it has exited: through its pidfd where the kernel has
 * them, else by pid (SIGCHLD tells us when to look); true if it did
 * (`inc` may be freed). */
static bool on_exit_(struct gw_supervisor *s, struct gw_incarnation *inc)
{
    siginfo_t si = { 0 };
    idtype_t idtype = inc->pidfd >= 0 ? P_PIDFD : P_PID;
    id_t id = inc->pidfd >= 0 ? (id_t)inc->pidfd : (id_t)inc->pid;
    int rc = waitid(idtype, id, &si, WEXITED | WNOHANG | WNOWAIT);
    if (rc != 0 || si.si_pid == 0)
        return false; /* not yet (spurious wake-up) */
    /* What the module forked goes with it (a crash, an exit, a hang or a
     * stop alike): its process group is killed while the unreaped leader
     * still holds the group's id, which no new process can take then.
     * Those that left the group (setsid) came to us as their subreaper:
     * end_orphans. */
    kill(-inc->pid, SIGKILL);
    waitid(idtype, id, &si, WEXITED | WNOHANG);
    end_orphans(s);
    struct gw_module *m = inc->mod;
    gw_prober_cancel(s->prober, inc);
    describe_exit(inc, &si);
    atomic_store_explicit(&inc->dead, true, memory_order_release);
    unwatch_close(s, &inc->pidfd);
    unwatch_close(s, &inc->ready_fd);
    unlink(inc->socket_path);
    unlink_live(s, inc);

    bool was_current = m->current == inc;
    pthread_mutex_lock(&m->mu);
    if (m->serving == inc)
        m->serving = NULL;
    enum gw_state st = m->state;
    if (was_current) {
        m->pid = 0;
        m->last_probe_rtt_us = -1; /* it was the dead process's */
        snprintf(m->last_exit, sizeof(m->last_exit), "%s", inc->death);
        /* No process serves it now. schedule_restart says what comes next
         * once the log tail is read and logged (up to 1 MiB of reading):
         * meanwhile the admin API and readyz must not call it ready. */
        if (st != GW_STOPPING && m->replacing == NULL) {
            m->state = GW_RESTARTING;
            m->retry_at_ms = 0;
        }
    }
    pthread_mutex_unlock(&m->mu);
    /* Requests still on this process are answered now, with how it died. */
    gw_notify_module_died(s->gw);

    char what[320];
    snprintf(what, sizeof(what), "(incarnation %u, pid %d) %s", inc->number, (int)inc->pid,
             inc->death);
    if (inc == m->replacing && s->stop_requested) {
        /* Stopped with the rest of the gateway before it was ready: not a
         * failed restart. */
        m->replacing = NULL;
        gw_log(GW_INFO, "module %s (incarnation %u, pid %d) stopped before ready, the gateway "
               "stopping: %s", m->name, inc->number, (int)inc->pid, inc->death);
    } else if (inc == m->replacing) {
        /* An admin restart whose new process did not make it: the old one
         * never stopped serving. */
        m->replacing = NULL;
        char failed[400];
        snprintf(failed, sizeof(failed), "%s: the admin restart failed, incarnation %u keeps "
                 "serving", what, m->current ? m->current->number : 0);
        set_restart_error(m, failed);
        log_failure(s, m, failed);
    } else if (was_current) {
        m->current = NULL;
        if (st == GW_STOPPING) {
            set_state(m, GW_STOPPED);
            gw_log(GW_INFO, "module %s (incarnation %u, pid %d) stopped: %s", m->name,
                   inc->number, (int)inc->pid, inc->death);
        } else if (m->replacing != NULL) {
            /* An admin restart's new process is starting: it is the
             * restart. Scheduling another would start a second process
             * that one of the two then overwrites, orphaned. */
            log_failure(s, m, what);
            m->current = m->replacing;
            m->replacing = NULL;
            pthread_mutex_lock(&m->mu);
            m->state = GW_STARTING;
            m->incarnations = m->current->number;
            m->pid = m->current->pid;
            m->started_at = m->current->started_at;
            pthread_mutex_unlock(&m->mu);
        } else {
            log_failure(s, m, what);
            schedule_restart(s, m, mg__now_ms(), reason_of(inc));
        }
    } else {
        gw_log(GW_INFO, "module %s (incarnation %u, pid %d) stopped after being replaced: %s",
               m->name, inc->number, (int)inc->pid, inc->death);
    }
    gw_incarnation_release(inc);
    return true;
}

/* `inc` serves from now on; what the admin API shows (incarnation, pid,
 * started_at) describes it, always as one set. */
static void publish(struct gw_module *m, struct gw_incarnation *inc)
{
    pthread_mutex_lock(&m->mu);
    m->last_restart_error[0] = '\0'; /* whatever failed before, this one works */
    m->serving = inc;
    m->state = GW_READY;
    m->retry_at_ms = 0;
    m->incarnations = inc->number;
    m->pid = inc->pid;
    m->started_at = inc->started_at;
    pthread_mutex_unlock(&m->mu);
}

static void on_ready(struct gw_supervisor *s, struct gw_incarnation *inc)
{
    char b;
    ssize_t n = read(inc->ready_fd, &b, 1);
    if (n < 0 && errno == EINTR)
        return;
    unwatch_close(s, &inc->ready_fd);
    struct gw_module *m = inc->mod;
    if (n != 1 || (inc != m->current && inc != m->replacing))
        return; /* closed without a word: the exit will tell why */
    /* Already SIGKILLed for its ready timeout (or asked to stop): its
     * byte may have reached the pipe before the deadline was checked, but
     * it is dead or about to be, so it must not be published, nor
     * announced ready at startup. Its exit restarts it. */
    if (inc->kill_sent || inc->stop_sent)
        return;
    uint64_t now = mg__now_ms();
    inc->ready = true;
    inc->deadline_ms = 0;
    inc->next_probe_ms = now + s->gw->cfg.health.period_ms;
    m->ready_since_ms = now;
    struct gw_incarnation *old = NULL;
    if (inc == m->replacing) {
        old = m->current;
        m->current = inc;
        m->replacing = NULL;
    }
    publish(m, inc);
    gw_log(GW_INFO, "module %s ready (incarnation %u, pid %d, socket %s)", m->name, inc->number,
           (int)inc->pid, inc->socket_path);
    if (old != NULL) {
        /* Zero-downtime restart: new requests already go to the new
         * process; the old one finishes what it has, then stops. */
        gw_prober_cancel(s->prober, old);
        old->draining = true;
        old->deadline_ms = now + m->conf->stop_timeout_ms;
        gw_log(GW_INFO, "module %s: incarnation %u (pid %d) replaced, draining", m->name,
               old->number, (int)old->pid);
    }
}

/* Signals the process group of a module process (a module's own children
 * go too), or the process alone if it left its group. */
static void signal_module(pid_t pid, int pidfd, int sig)
{
    if (kill(-pid, sig) == 0)
        return;
    if (pidfd < 0 || pidfd_send_signal(pidfd, sig, NULL, 0) != 0)
        kill(pid, sig);
}

/* Starts a process for `m`. Every attempt takes the next incarnation
 * number (SPEC §5), but the number shown in m->incarnations changes only
 * with the pid and start time it belongs to: at once for a plain start, at
 * takeover for a replacement (an admin restart), never for a replacement
 * that fails while the old process keeps serving. */
static void spawn_incarnation(struct gw_supervisor *s, struct gw_module *m, bool replacement)
{
    struct gateway *gw = s->gw;
    unsigned number = ++s->numbers[m - gw->modules];
    char sock[4096];
    snprintf(sock, sizeof(sock), "%s/%s.%u.sock", gw->run_dir, m->name, number);
    struct gw_incarnation *inc = gw_incarnation_new(m, number, sock);
    int pipefd[2] = { -1, -1 };
    const char *fail = NULL;
    int err = 0;
    int dir = gw_run_dir_ensure(gw->run_dir);
    if (dir > 0)
        gw_log(GW_WARN, "socket directory %s had been removed (a tmp cleaner?): made again",
               gw->run_dir);
    if (inc == NULL) {
        fail = "out of memory";
    } else if (dir < 0) {
        err = -dir;
        fail = "socket directory";
    } else if (pipe2(pipefd, O_CLOEXEC) != 0) {
        err = errno;
        fail = "pipe";
    }
    pid_t pid = 0;
    char *exec_failed = NULL;
    /* Every process writes to the file the config names, as supervisord's
     * children do: one deleted or moved away since (without a SIGHUP) is
     * made again rather than written into unseen. */
    int moved = gw_reopen_if_moved(m->log_fd, m->log_path);
    if (moved > 0)
        gw_log(GW_WARN, "module %s: log file %s was deleted or moved: opened anew", m->name,
               m->log_path);
    else if (moved < 0)
        gw_log(GW_ERROR, "module %s: log file %s was deleted or moved and cannot be made again "
               "(%s): the old one is kept", m->name, m->log_path, strerror(-moved));
    if (fail == NULL) {
        char listen[4200], ppid[32], maxbody[32], maxheader[32], incno[16];
        snprintf(listen, sizeof(listen), "unix:%s", sock);
        snprintf(ppid, sizeof(ppid), "%d", (int)getpid());
        snprintf(maxbody, sizeof(maxbody), "%" PRIu64, gw->cfg.limits.max_body_bytes);
        snprintf(maxheader, sizeof(maxheader), "%u", gw->cfg.limits.max_header_bytes);
        snprintf(incno, sizeof(incno), "%u", number);
        /* The child writes "incarnation N started, pid P" to its log as
         * its first line (module_main.c), so that nothing of its own can
         * come before it. */
        char *argv[] = { s->exe_name, "--module", m->name, "--listen", listen, "--ready-fd", "3",
                         "--parent-pid", ppid, "--log-file", m->log_path, "--max-body-bytes",
                         maxbody, "--max-header-bytes", maxheader, "--incarnation", incno, NULL };
        struct gw_spawn sp = { .path = s->child_exe, .argv = argv,
                               .envp = s->envs[m - gw->modules], .out_fd = m->log_fd,
                               .notify_fd = pipefd[1] };
        int rc = gw_spawn(&sp, &pid);
        if (rc != 0) {
            err = -rc;
            if (asprintf(&exec_failed, "exec of %s failed", s->child_exe) < 0)
                exec_failed = NULL;
            fail = exec_failed ? exec_failed : "exec failed";
        }
    }
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    uint64_t now = mg__now_ms();
    if (!replacement) {
        pthread_mutex_lock(&m->mu);
        m->incarnations = number;
        m->pid = 0;
        m->started_at = 0;
        m->state = GW_STARTING;
        /* No backoff left (SPEC §4: Retry-After is the remaining backoff):
         * a start takes milliseconds, so "1", not the ready timeout. */
        m->retry_at_ms = 0;
        pthread_mutex_unlock(&m->mu);
    }
    if (fail != NULL) {
        if (pipefd[0] >= 0)
            close(pipefd[0]);
        char what[640];
        snprintf(what, sizeof(what), "(incarnation %u) failed to start: %s%s%s%s", number, fail,
                 err ? ": " : "", err ? strerror(err) : "",
                 replacement ? "; the admin restart failed, the old incarnation keeps serving" : "");
        if (!replacement) {
            pthread_mutex_lock(&m->mu);
            snprintf(m->last_exit, sizeof(m->last_exit), "%s%s%s", fail, err ? ": " : "",
                     err ? strerror(err) : "");
            pthread_mutex_unlock(&m->mu);
        } else {
            set_restart_error(m, what);
        }
        log_failure(s, m, what);
        free(exec_failed);
        gw_incarnation_release(inc);
        if (!replacement)
            schedule_restart(s, m, now, GW_RESTART_START_FAILED);
        return;
    }
    inc->pid = pid;
    inc->ready_fd = pipefd[0];
    inc->started_at = time(NULL);
    inc->deadline_ms = now + m->conf->ready_timeout_ms;
    /* A pidfd makes the exit an event of its own; without one (kernels
     * before 5.3, valgrind) SIGCHLD does the job. */
    inc->pidfd = pidfd_open(pid, 0);
    if ((inc->pidfd >= 0 && watch(s, inc->pidfd, watch_tag(inc, W_PID)) != 0) ||
        watch(s, inc->ready_fd, watch_tag(inc, W_READY)) != 0) {
        /* Without a pidfd we cannot watch it: do not leave it running. */
        gw_log(GW_ERROR, "module %s: cannot watch pid %d: %s", m->name, (int)pid, strerror(errno));
        signal_module(pid, inc->pidfd, SIGKILL);
        waitpid(pid, NULL, 0);
        unwatch_close(s, &inc->pidfd);
        unwatch_close(s, &inc->ready_fd);
        gw_incarnation_release(inc);
        if (!replacement)
            schedule_restart(s, m, now, GW_RESTART_START_FAILED);
        return;
    }
    inc->next_live = s->live;
    s->live = inc;
    if (replacement) {
        m->replacing = inc;
    } else {
        m->current = inc;
        pthread_mutex_lock(&m->mu);
        m->pid = pid;
        m->started_at = inc->started_at;
        pthread_mutex_unlock(&m->mu);
    }
}

static void kill_incarnation(struct gw_incarnation *inc, int sig, const char *cause)
{
    if (atomic_load(&inc->dead))
        return;
    if (sig == SIGKILL) {
        inc->kill_sent = true;
        if (cause != NULL)
            inc->cause = cause;
    }
    signal_module(inc->pid, inc->pidfd, sig);
}

static void on_probe(void *ctx, struct gw_incarnation *inc, bool ok, uint64_t rtt_us,
                     const char *why)
{
    struct gw_supervisor *s = ctx;
    struct gw_module *m = inc->mod;
    if (inc != m->current || inc->kill_sent || inc->stop_sent ||
        atomic_load(&inc->dead))
        return;
    if (ok) {
        inc->probe_misses = 0;
        gw_histogram_observe(&m->metrics.probe, rtt_us);
        pthread_mutex_lock(&m->mu);
        m->last_probe_rtt_us = (int64_t)rtt_us;
        pthread_mutex_unlock(&m->mu);
        return;
    }
    unsigned limit = s->gw->cfg.health.unhealthy_after;
    inc->probe_misses++;
    gw_log(GW_WARN, "module %s (incarnation %u, pid %d): health probe failed: %s (%u of %u)",
           m->name, inc->number, (int)inc->pid, why, inc->probe_misses, limit);
    if (inc->probe_misses < limit)
        return;
    /* Hung: stop sending it requests, and kill it; its exit restarts it. */
    pthread_mutex_lock(&m->mu);
    m->state = GW_UNHEALTHY;
    if (m->serving == inc)
        m->serving = NULL;
    m->retry_at_ms = mg__now_ms() + m->backoff_ms;
    pthread_mutex_unlock(&m->mu);
    gw_log(GW_ERROR, "module %s (incarnation %u, pid %d) is unhealthy after %u missed probes; "
           "killing it", m->name, inc->number, (int)inc->pid, inc->probe_misses);
    kill_incarnation(inc, SIGKILL, "hung");
}

static void admin_restart(struct gw_supervisor *s, struct gw_module *m)
{
    if (s->stop_requested || m->replacing != NULL)
        return; /* stopping, or a restart is already on its way */
    gw_log(GW_INFO, "module %s: admin restart", m->name);
    atomic_fetch_add(&m->metrics.restarts[GW_RESTART_ADMIN], 1);
    if (m->current != NULL) {
        spawn_incarnation(s, m, true);
        return;
    }
    /* Nothing running (failed, or waiting for its backoff): start afresh,
     * with the failure history forgotten. */
    m->restart_due_ms = 0;
    m->nrestart_times = 0;
    m->backoff_ms = s->gw->cfg.restart.backoff_initial_ms;
    spawn_incarnation(s, m, false);
}

void gw_request_restart(struct gateway *gw, struct gw_module *m)
{
    atomic_store(&m->restart_requested, true);
    gw_supervisor_wake(gw->supervisor);
}

/* Runs due deadlines; returns the next one (monotonic ms) or UINT64_MAX. */
static uint64_t run_deadlines(struct gw_supervisor *s, uint64_t now)
{
    const struct gw_config *c = &s->gw->cfg;
    uint64_t next = UINT64_MAX;
    for (struct gw_incarnation *inc = s->live; inc != NULL; inc = inc->next_live) {
        struct gw_module *m = inc->mod;
        if (inc->draining && !inc->stop_sent) {
            /* Replaced: stop once no request of ours is left on it. */
            if (atomic_load(&inc->refs) <= 1 || now >= inc->deadline_ms) {
                inc->stop_sent = true;
                inc->deadline_ms = now + m->conf->stop_timeout_ms;
                kill_incarnation(inc, SIGTERM, NULL);
            } else if (now + 10 < next) {
                next = now + 10;
            }
        }
        if (inc->ready && inc == m->current && !inc->stop_sent && !inc->kill_sent &&
            !s->stop_requested) {
            if (inc->probe == NULL && now >= inc->next_probe_ms) {
                gw_prober_start(s->prober, inc, c->health.probe_timeout_ms);
                inc->next_probe_ms = now + c->health.period_ms;
            }
            if (inc->next_probe_ms < next)
                next = inc->next_probe_ms;
        }
        if (inc->deadline_ms == 0 || inc->kill_sent || (inc->draining && !inc->stop_sent))
            continue;
        if (inc->deadline_ms <= now) {
            if (!inc->stop_sent) {
                gw_log(GW_WARN, "module %s (incarnation %u, pid %d) not ready within %u ms; "
                       "killing it", m->name, inc->number, (int)inc->pid,
                       m->conf->ready_timeout_ms);
                kill_incarnation(inc, SIGKILL, "start_timeout");
            } else {
                gw_log(GW_WARN, "module %s (pid %d) did not stop within %u ms of SIGTERM; killing it",
                       m->name, (int)inc->pid, m->conf->stop_timeout_ms);
                kill_incarnation(inc, SIGKILL, "stopped");
            }
        } else if (inc->deadline_ms < next) {
            next = inc->deadline_ms;
        }
    }
    if (s->stop_requested)
        return next;
    for (size_t i = 0; i < s->gw->nmodules; i++) {
        struct gw_module *m = &s->gw->modules[i];
        if (atomic_exchange(&m->restart_requested, false))
            admin_restart(s, m);
        if (m->restart_due_ms == 0)
            continue;
        if (m->restart_due_ms <= now) {
            m->restart_due_ms = 0;
            uint64_t *times = realloc(m->restart_times,
                                      (m->nrestart_times + 1) * sizeof(*m->restart_times));
            if (times != NULL) {
                m->restart_times = times;
                m->restart_times[m->nrestart_times++] = now;
            }
            pthread_mutex_lock(&m->mu);
            m->restarts++;
            pthread_mutex_unlock(&m->mu);
            atomic_fetch_add(&m->metrics.restarts[m->restart_why], 1);
            spawn_incarnation(s, m, false);
        } else if (m->restart_due_ms < next) {
            next = m->restart_due_ms;
        }
    }
    return next;
}

static void reopen_logs(struct gw_supervisor *s)
{
    struct gateway *gw = s->gw;
    /* Each file on its own: one that cannot be reopened (its directory
     * gone) keeps its old descriptor and does not stop the others. */
    unsigned failed = 0;
    int rc = gw_log_reopen();
    if (rc != 0) {
        failed++;
        gw_log(GW_ERROR, "SIGHUP: cannot reopen gateway.log: %s", strerror(-rc));
    }
    if ((rc = gw_reopen_onto(gw->access_fd, gw->access_path)) != 0) {
        failed++;
        gw_log(GW_ERROR, "SIGHUP: cannot reopen %s: %s", gw->access_path, strerror(-rc));
    }
    for (size_t i = 0; i < gw->nmodules; i++)
        if ((rc = gw_reopen_onto(gw->modules[i].log_fd, gw->modules[i].log_path)) != 0) {
            failed++;
            gw_log(GW_ERROR, "SIGHUP: cannot reopen %s: %s", gw->modules[i].log_path,
                   strerror(-rc));
        }
    /* Children hold their own descriptors of the module logs. */
    for (struct gw_incarnation *inc = s->live; inc != NULL; inc = inc->next_live)
        kill_incarnation(inc, SIGHUP, NULL);
    if (failed == 0)
        gw_log(GW_INFO, "SIGHUP: log files reopened");
    else
        gw_log(GW_WARN, "SIGHUP: %u log file(s) could not be reopened and keep being written "
               "where they were", failed);
}

/* Tells systemd (if it listens) how things are: READY=1 once every module
 * is ready, STATUS= whenever the summary changes, WATCHDOG=1 while every
 * loop still answers pings. */
static void tell_systemd(struct gw_supervisor *s, uint64_t now)
{
    struct gateway *gw = s->gw;
    if (!s->systemd)
        return;
    struct mg_buf status;
    mg__buf_init(&status, 1u << 16);
    size_t ready = 0;
    int rc = mg__buf_append(&status, "", 0);
    for (size_t i = 0; i < gw->nmodules; i++) {
        struct gw_module *m = &gw->modules[i];
        pthread_mutex_lock(&m->mu);
        enum gw_state st = m->state;
        pthread_mutex_unlock(&m->mu);
        ready += st == GW_READY;
        rc |= mg__buf_printf(&status, "%s%s %s", i ? ", " : "", m->name, gw_state_name(st));
    }
    if (rc == 0 && (s->status == NULL || strcmp(status.data, s->status) != 0)) {
        gw_notify("STATUS=%zu/%zu modules ready: %s", ready, gw->nmodules, status.data);
        free(s->status);
        s->status = mg__buf_steal(&status, NULL);
    }
    mg__buf_free(&status);
    /* Never READY=1 once stopping (a module may come up during the drain). */
    if (!s->ready_sent && !s->stop_requested && ready == gw->nmodules && gw->nloops > 0) {
        gw_notify("READY=1");
        s->ready_sent = true;
    }
    uint64_t every = gw_notify_watchdog_ms();
    if (every > 0 && gw->nloops > 0 && now >= s->next_watchdog_ms) {
        bool alive = true;
        for (unsigned i = 0; i < gw->nloops; i++) {
            uint64_t hb = atomic_load(&gw->loops[i]->heartbeat);
            if (s->heartbeats != NULL && hb == s->heartbeats[i] && s->next_watchdog_ms != 0)
                alive = false;
            if (s->heartbeats != NULL)
                s->heartbeats[i] = hb;
            gw_loop_command(gw->loops[i], GW_CMD_PING);
        }
        if (alive)
            gw_notify("WATCHDOG=1");
        else
            gw_log(GW_ERROR, "an event loop stopped answering; not feeding the watchdog");
        s->next_watchdog_ms = now + every;
    }
}

/* An incarnation was reaped (and maybe freed), and with it the tags of its
 * descriptors: drop its later events of the same round. unwatch_close took
 * them out of the epoll set, so no new ones come; a ready pipe that was
 * skipped while the process lives is level-triggered and comes again. */
static void forget_events(struct epoll_event *evs, int from, int n, uint64_t base)
{
    for (int j = from; j < n; j++)
        if (!gw_prober_owns(evs[j].data.u64) && (evs[j].data.u64 & ~(uint64_t)7) == base)
            evs[j].data.u64 = W_WAKE;
}

/* One round of waiting and dispatching. */
static void run_once(struct gw_supervisor *s, int max_wait_ms)
{
    uint64_t now = mg__now_ms();
    uint64_t next = run_deadlines(s, now);
    uint64_t pnext = gw_prober_run(s->prober, now);
    if (pnext < next)
        next = pnext;
    tell_systemd(s, now);
    if (gw_notify_watchdog_ms() > 0 && s->next_watchdog_ms < next)
        next = s->next_watchdog_ms;
    int timeout = max_wait_ms;
    if (next != UINT64_MAX) {
        uint64_t d = next > now ? next - now : 0;
        if (timeout < 0 || d < (uint64_t)timeout)
            timeout = (int)d;
    }
    struct epoll_event evs[64];
    int n = epoll_wait(s->epfd, evs, 64, timeout);
    for (int i = 0; i < n; i++) {
        uint64_t tag = evs[i].data.u64;
        if (gw_prober_owns(tag)) {
            gw_prober_event(s->prober, tag, evs[i].events);
        } else if (tag == W_SIGNAL) {
            struct signalfd_siginfo si;
            while (read(s->sigfd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo == SIGHUP) {
                    reopen_logs(s);
                } else if (si.ssi_signo == SIGCHLD) {
                    /* Signals merge: look at every process without a
                     * pidfd (those with one get their own event). */
                    for (struct gw_incarnation *inc = s->live, *nx; inc != NULL; inc = nx) {
                        nx = inc->next_live;
                        uint64_t base = watch_tag(inc, 0);
                        if (inc->pidfd < 0 && on_exit_(s, inc))
                            forget_events(evs, i + 1, n, base);
                    }
                    end_orphans(s);
                } else if (!s->stop_requested) {
                    gw_log(GW_INFO, "%s received: stopping", sigabbrev_np((int)si.ssi_signo));
                    s->stop_requested = true;
                    /* From now on readyz says so, also during startup. */
                    atomic_store(&s->gw->stopping, true);
                }
            }
        } else if (tag == W_WAKE) {
            uint64_t v;
            ssize_t r = read(s->wakefd, &v, sizeof(v));
            (void)r;
        } else {
            struct gw_incarnation *inc = (struct gw_incarnation *)(uintptr_t)(tag & ~(uint64_t)7);
            if ((tag & 7) == W_PID) {
                if (on_exit_(s, inc))
                    forget_events(evs, i + 1, n, tag & ~(uint64_t)7);
            } else {
                on_ready(s, inc);
            }
        }
    }
    /* Finished probes are told now, before the next round's deadlines
     * would start new ones. */
    gw_prober_run(s->prober, mg__now_ms());
}

static bool settled(struct gw_module *m)
{
    pthread_mutex_lock(&m->mu);
    bool done = m->state != GW_STARTING;
    pthread_mutex_unlock(&m->mu);
    return done;
}

bool gw_supervisor_start_modules(struct gw_supervisor *s)
{
    struct gateway *gw = s->gw;
    for (size_t i = 0; i < gw->nmodules; i++) {
        gw->modules[i].backoff_ms = gw->cfg.restart.backoff_initial_ms;
        spawn_incarnation(s, &gw->modules[i], false);
    }
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < gw->nmodules && all; i++)
            all = settled(&gw->modules[i]);
        if (all || s->stop_requested)
            return !s->stop_requested;
        run_once(s, 100);
    }
}

static void stop_modules(struct gw_supervisor *s)
{
    uint64_t now = mg__now_ms();
    for (size_t i = 0; i < s->gw->nmodules; i++) {
        struct gw_module *m = &s->gw->modules[i];
        m->restart_due_ms = 0;
        set_state(m, m->current ? GW_STOPPING : GW_STOPPED);
    }
    for (struct gw_incarnation *inc = s->live; inc != NULL; inc = inc->next_live) {
        gw_prober_cancel(s->prober, inc);
        if (inc->stop_sent)
            continue;
        inc->deadline_ms = now + inc->mod->conf->stop_timeout_ms;
        inc->stop_sent = true; /* the deadline now means "stop", not "ready" */
        inc->draining = false;
        kill_incarnation(inc, SIGTERM, NULL);
    }
    while (s->live != NULL)
        run_once(s, 100);
}

int gw_supervisor_run(struct gw_supervisor *s)
{
    struct gateway *gw = s->gw;
    s->heartbeats = calloc(gw->nloops ? gw->nloops : 1, sizeof(*s->heartbeats));
    while (!s->stop_requested)
        run_once(s, -1);

    gw_notify("STOPPING=1");
    /* Stop accepting; let in-flight requests finish up to the largest stop
     * timeout, with the modules still running to answer them. */
    atomic_store(&gw->stopping, true);
    uint64_t deadline = mg__now_ms() + gw_config_max_stop_timeout(&gw->cfg);
    for (unsigned i = 0; i < gw->nloops; i++)
        gw_loop_drain(gw->loops[i], deadline);
    while (atomic_load(&gw->loops_running) > 0)
        run_once(s, 50);
    stop_modules(s);
    return 0;
}

void gw_supervisor_free(struct gw_supervisor *s)
{
    if (s == NULL)
        return;
    /* Never leave a child behind, whatever path led here. */
    while (s->live != NULL) {
        struct gw_incarnation *inc = s->live;
        s->live = inc->next_live;
        if (s->prober != NULL)
            gw_prober_cancel(s->prober, inc);
        signal_module(inc->pid, inc->pidfd, SIGKILL);
        siginfo_t si;
        waitid(P_PID, (id_t)inc->pid, &si, WEXITED);
        if (inc->pidfd >= 0)
            close(inc->pidfd);
        if (inc->ready_fd >= 0)
            close(inc->ready_fd);
        unlink(inc->socket_path);
        if (inc->mod->current == inc)
            inc->mod->current = NULL;
        if (inc->mod->replacing == inc)
            inc->mod->replacing = NULL;
        pthread_mutex_lock(&inc->mod->mu);
        if (inc->mod->serving == inc)
            inc->mod->serving = NULL;
        pthread_mutex_unlock(&inc->mod->mu);
        atomic_store(&inc->dead, true);
        gw_incarnation_release(inc);
    }
    gw_prober_free(s->prober);
    gw_notify_close();
    if (s->envs != NULL)
        for (size_t i = 0; i < s->gw->nmodules; i++)
            free(s->envs[i]);
    free(s->envs);
    free(s->numbers);
    free(s->heartbeats);
    free(s->status);
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->sigfd >= 0)
        close(s->sigfd);
    if (s->wakefd >= 0)
        close(s->wakefd);
    free(s);
}
