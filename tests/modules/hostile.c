/*
 * hostile: a test module that misbehaves the ways a badly written module
 * does, to check that it harms only itself (tests/it/test_hostile.c).
 *
 * Through its environment, at start (in its start-up hook):
 *   HOSTILE_SIGNALS=ignore  every catchable signal ignored (SIGTERM does nothing)
 *   HOSTILE_SIGNALS=block   every signal blocked, and a thread of its own
 *                           takes them (sigwaitinfo) and throws them away
 *   HOSTILE_INIT=crash      the hook aborts; =fail it returns an error;
 *                           =hang it never returns (never ready)
 *   HOSTILE_INIT_IF_EXISTS=PATH  HOSTILE_INIT applies only while PATH exists
 *   HOSTILE_STARTUP_MB=N    N MiB of garbage (no newlines, NUL bytes) to
 *                           stdout and N to stderr before it is ready
 *   HOSTILE_FD3=close       closes the readiness pipe; =dup keeps a copy of it
 * Routes:
 *   GET /hostile/ok            "ok PID\n"
 *   GET /hostile/crash         abort()
 *   GET /hostile/exit_later?ms=M&code=C  answers, then exits with C after M ms
 *   GET /hostile/fork?setsid=0|1&keepfds=0|1&double=0|1
 *       forks a process that ignores SIGTERM/SIGHUP/SIGINT and runs for ever
 *       (double=1: forks twice, the middle one exits, so it is orphaned at
 *       once); keepfds=1 keeps every descriptor (log, listening socket),
 *       else only /dev/null on 0-2. Answers "PID\n" of that process.
 *   GET /hostile/flood?mb=N    writes N MiB of log lines before answering
 *   GET /hostile/flood_thread?mb=N  the same from a thread, answering at once
 *   GET /hostile/alloc?mb=N    allocates and touches N MiB, kept for ever
 *   GET /hostile/freeze        answers, then the process stops itself (SIGSTOP)
 *   GET /hostile/deaf          stops accepting connections, its backlog full
 */
#include <modgate/module.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long qnum(mg_req *req, const char *name, long def)
{
    const char *v = mg_req_query(req, name);
    return v != NULL && v[0] != '\0' ? atol(v) : def;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void *swallow_signals(void *arg)
{
    sigset_t *all = arg;
    for (;;)
        sigwaitinfo(all, NULL);
    return NULL;
}

static int init(void)
{
    const char *sigs = getenv("HOSTILE_SIGNALS");
    if (sigs != NULL && strcmp(sigs, "ignore") == 0) {
        for (int s = 1; s < NSIG; s++)
            if (s != SIGKILL && s != SIGSTOP && s != SIGCHLD)
                signal(s, SIG_IGN);
        mg_log(MG_LOG_INFO, "ignoring every signal");
    } else if (sigs != NULL && strcmp(sigs, "block") == 0) {
        static sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        pthread_t t;
        pthread_create(&t, NULL, swallow_signals, &all);
        pthread_detach(t);
        mg_log(MG_LOG_INFO, "blocking every signal");
    }
    const char *mb = getenv("HOSTILE_STARTUP_MB");
    if (mb != NULL) {
        char junk[65536];
        for (size_t i = 0; i < sizeof(junk); i++)
            junk[i] = (char)(i % 7 == 0 ? 0 : 'A' + (int)(i % 26)); /* no newline */
        for (long i = 0; i < atol(mb) * 16; i++) {
            write_all(STDOUT_FILENO, junk, sizeof(junk));
            write_all(STDERR_FILENO, junk, sizeof(junk));
        }
        write_all(STDERR_FILENO, "\nhostile: garbage written\n", 26);
    }
    const char *fd3 = getenv("HOSTILE_FD3");
    if (fd3 != NULL && strcmp(fd3, "close") == 0) {
        close(3);
        mg_log(MG_LOG_INFO, "closed fd 3");
    } else if (fd3 != NULL && strcmp(fd3, "dup") == 0) {
        int keep = dup(3);
        mg_log(MG_LOG_INFO, "fd 3 duplicated as %d", keep);
    }
    const char *gate = getenv("HOSTILE_INIT_IF_EXISTS");
    const char *what = getenv("HOSTILE_INIT");
    if (what != NULL && (gate == NULL || access(gate, F_OK) == 0)) {
        mg_log(MG_LOG_ERROR, "start-up hook misbehaves: %s", what);
        if (strcmp(what, "crash") == 0)
            abort();
        if (strcmp(what, "fail") == 0)
            return -1;
        if (strcmp(what, "hang") == 0)
            for (;;)
                pause();
    }
    return 0;
}

static int ok(mg_req *req, mg_res *res)
{
    (void)req;
    return mg_res_printf(res, 200, "text/plain", "ok %d\n", (int)getpid());
}

static int crash(mg_req *req, mg_res *res)
{
    (void)req, (void)res;
    mg_log(MG_LOG_ERROR, "crashing on request");
    abort();
}

struct exit_later {
    long ms;
    int code;
};

static void *exit_thread(void *arg)
{
    struct exit_later e = *(struct exit_later *)arg;
    free(arg);
    struct timespec ts = { e.ms / 1000, (e.ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
    mg_log(MG_LOG_INFO, "exiting with code %d while idle", e.code);
    _exit(e.code);
}

static int exit_later(mg_req *req, mg_res *res)
{
    struct exit_later *e = malloc(sizeof(*e));
    if (e == NULL)
        return 500;
    e->ms = qnum(req, "ms", 300);
    e->code = (int)qnum(req, "code", 0);
    pthread_t t;
    if (pthread_create(&t, NULL, exit_thread, e) != 0) {
        free(e);
        return 500;
    }
    pthread_detach(t);
    return mg_res_printf(res, 200, "text/plain", "exiting in %ld ms\n", e->ms);
}

/* Runs in a fork of a threaded process: async-signal-safe calls only. */
static void linger(bool keepfds)
{
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    if (!keepfds) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        syscall(SYS_close_range, 3u, ~0u, 0u);
    }
    for (;;)
        pause();
}

static int fork_child(mg_req *req, mg_res *res)
{
    bool setsid_ = qnum(req, "setsid", 0) != 0, keepfds = qnum(req, "keepfds", 0) != 0,
         twice = qnum(req, "double", 0) != 0;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return 500;
    pid_t pid = fork();
    if (pid == 0) {
        if (setsid_)
            setsid();
        if (twice) {
            pid_t gc = fork();
            if (gc != 0) {
                write(p[1], &gc, sizeof(gc));
                _exit(0);
            }
        } else {
            pid_t self = getpid();
            write(p[1], &self, sizeof(self));
        }
        close(p[0]);
        close(p[1]);
        linger(keepfds);
    }
    close(p[1]);
    pid_t got = 0;
    if (pid < 0 || read(p[0], &got, sizeof(got)) != sizeof(got))
        got = -1;
    close(p[0]);
    if (twice && pid > 0) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    mg_log(MG_LOG_INFO, "forked %d (setsid %d, keepfds %d, double %d)", (int)got,
           setsid_, keepfds, twice);
    return mg_res_printf(res, 200, "text/plain", "%d\n", (int)got);
}

static void flood(long mb)
{
    char line[1024];
    memset(line, 'x', sizeof(line));
    for (long i = 0; i < mb * 1024; i++)
        mg_log(MG_LOG_INFO, "flood %ld %.*s", i, 990, line);
}

static int flood_handler(mg_req *req, mg_res *res)
{
    long mb = qnum(req, "mb", 10);
    flood(mb);
    return mg_res_printf(res, 200, "text/plain", "flooded %ld MiB\n", mb);
}

static void *flood_thread(void *arg)
{
    flood((long)(intptr_t)arg);
    mg_log(MG_LOG_INFO, "flood over");
    return NULL;
}

static int flood_thread_handler(mg_req *req, mg_res *res)
{
    pthread_t t;
    if (pthread_create(&t, NULL, flood_thread, (void *)(intptr_t)qnum(req, "mb", 10)) != 0)
        return 500;
    pthread_detach(t);
    return mg_res_printf(res, 200, "text/plain", "flooding\n");
}

/* Kept for ever, but reachable, so that LeakSanitizer has nothing to say
 * when the module stops. */
static void *hoard;
static pthread_mutex_t hoard_mu = PTHREAD_MUTEX_INITIALIZER;

static int alloc(mg_req *req, mg_res *res)
{
    long mb = qnum(req, "mb", 100);
    for (long i = 0; i < mb; i++) {
        void **p = malloc(1 << 20);
        if (p == NULL)
            return mg_res_error(res, 507, "out of memory after %ld MiB", i);
        memset(p, (int)i + 1, 1 << 20);
        pthread_mutex_lock(&hoard_mu);
        p[0] = hoard;
        hoard = p;
        pthread_mutex_unlock(&hoard_mu);
    }
    return mg_res_printf(res, 200, "text/plain", "allocated %ld MiB\n", mb);
}

static void *freeze_thread(void *arg)
{
    (void)arg;
    usleep(100 * 1000); /* the answer goes out first */
    mg_log(MG_LOG_INFO, "stopping myself");
    kill(getpid(), SIGSTOP);
    return NULL;
}

static int freeze(mg_req *req, mg_res *res)
{
    (void)req;
    pthread_t t;
    pthread_create(&t, NULL, freeze_thread, NULL);
    pthread_detach(t);
    return mg_res_printf(res, 200, "text/plain", "freezing\n");
}

/* Stops accepting: the listening socket's descriptor number now names a
 * pipe that never becomes readable (so libmicrohttpd polls that), while the
 * socket itself stays open with its backlog filled, so new connections
 * are neither accepted nor refused. Connections already open still work. */
static int deaf(mg_req *req, mg_res *res)
{
    (void)req;
    int lfd = -1;
    for (int fd = 0; fd < 4096 && lfd < 0; fd++) {
        int on = 0;
        socklen_t len = sizeof(on);
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on)
            lfd = fd;
    }
    struct sockaddr_un sa;
    socklen_t salen = sizeof(sa);
    if (lfd < 0 || getsockname(lfd, (struct sockaddr *)&sa, &salen) != 0)
        return mg_res_error(res, 500, "no listening socket");
    int keep = fcntl(lfd, F_DUPFD_CLOEXEC, 10);
    int p[2];
    if (keep < 0 || pipe2(p, O_CLOEXEC) != 0 || listen(keep, 0) != 0 ||
        dup3(p[0], lfd, O_CLOEXEC) < 0)
        return mg_res_error(res, 500, "cannot go deaf: %s", strerror(errno));
    int filled = 0;
    for (int i = 0; i < 64; i++) {
        int c = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (connect(c, (struct sockaddr *)&sa, salen) != 0) {
            close(c);
            break;
        }
        filled++; /* left open, in the backlog for ever */
    }
    mg_log(MG_LOG_INFO, "deaf, %d connections left in the backlog", filled);
    return mg_res_printf(res, 200, "text/plain", "deaf %d\n", filled);
}

MG_MODULE(hostile, MG_INIT(init), MG_GET("/hostile/ok", ok), MG_GET("/hostile/crash", crash),
          MG_GET("/hostile/exit_later", exit_later), MG_GET("/hostile/fork", fork_child),
          MG_GET("/hostile/flood", flood_handler),
          MG_GET("/hostile/flood_thread", flood_thread_handler),
          MG_GET("/hostile/alloc", alloc), MG_GET("/hostile/freeze", freeze),
          MG_GET("/hostile/deaf", deaf));
