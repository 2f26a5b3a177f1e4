/*
 * chaos: a module that misbehaves on request, to test supervision.
 *   GET /chaos/crash            abort()
 *   GET /chaos/exit?code=C      exit(C)
 *   GET /chaos/hang             the module stops serving requests and probes
 *   GET /chaos/slow?ms=N        "slept N\n" after N ms
 *   GET /chaos/error?status=S&msg=M   a handler error
 *   GET /chaos/log?lines=N      N lines "chaos line i" to the log, then 200
 *
 * Hanging is a deadlock on `world`: the hang handler takes it and never
 * gives it back, and every other handler and the health check wait for it,
 * as a real module stuck on a global lock would.
 */
#include <modgate/module.h>

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t world = PTHREAD_MUTEX_INITIALIZER;

/* Every handler passes through the world lock first. */
static void enter(void)
{
    pthread_mutex_lock(&world);
    pthread_mutex_unlock(&world);
}

static long arg_long(mg_req *req, const char *name, long dflt, long min, long max, int *ok)
{
    const char *s = mg_req_query(req, name);
    if (s == NULL)
        return dflt;
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min || v > max)
        *ok = 0;
    return v;
}

static int crash(mg_req *req, mg_res *res)
{
    (void)req, (void)res;
    enter();
    mg_log(MG_LOG_ERROR, "crashing on request");
    abort();
}

static int do_exit(mg_req *req, mg_res *res)
{
    int ok = 1;
    long code = arg_long(req, "code", 1, 0, 255, &ok);
    if (!ok)
        return mg_res_error(res, 400, "code must be from 0 to 255");
    enter();
    mg_log(MG_LOG_ERROR, "exiting with code %ld on request", code);
    _exit((int)code);
}

static int hang(mg_req *req, mg_res *res)
{
    (void)req, (void)res;
    mg_log(MG_LOG_WARN, "hanging on request");
    pthread_mutex_lock(&world);
    for (;;)
        pause();
    return 0;
}

static int slow(mg_req *req, mg_res *res)
{
    int ok = 1;
    long ms = arg_long(req, "ms", 1000, 0, 3600 * 1000, &ok);
    if (!ok)
        return mg_res_error(res, 400, "ms must be from 0 to 3600000");
    enter();
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
    return mg_res_printf(res, 200, "text/plain; charset=utf-8", "slept %ld\n", ms);
}

static int error(mg_req *req, mg_res *res)
{
    int ok = 1;
    long status = arg_long(req, "status", 500, 400, 599, &ok);
    if (!ok)
        return mg_res_error(res, 400, "status must be from 400 to 599");
    enter();
    const char *msg = mg_req_query(req, "msg");
    return mg_res_error(res, (int)status, "%s", msg ? msg : "chaos error");
}

static int log_lines(mg_req *req, mg_res *res)
{
    int ok = 1;
    long lines = arg_long(req, "lines", 10, 0, 1000000, &ok);
    if (!ok)
        return mg_res_error(res, 400, "lines must be from 0 to 1000000");
    enter();
    for (long i = 0; i < lines; i++)
        mg_log(MG_LOG_INFO, "chaos line %ld", i);
    return mg_res_printf(res, 200, "text/plain; charset=utf-8", "logged %ld\n", lines);
}

static int health(mg_req *req, mg_res *res)
{
    (void)req, (void)res;
    enter();
    return 0;
}

MG_MODULE(chaos,
          MG_GET("/chaos/crash", crash),
          MG_GET("/chaos/exit", do_exit),
          MG_GET("/chaos/hang", hang),
          MG_GET("/chaos/slow", slow),
          MG_GET("/chaos/error", error),
          MG_GET("/chaos/log", log_lines),
          MG_HEALTH(health));
