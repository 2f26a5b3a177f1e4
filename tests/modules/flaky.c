/*
 * flaky: a test module whose start-up hook misbehaves on request, through
 * its environment: FLAKY_MODE=fail (the hook fails), =slow (the hook
 * sleeps FLAKY_SLEEP_MS, default 10 s), anything else starts normally;
 * FLAKY_FAIL_IF_EXISTS=PATH fails the start while PATH exists (so a test
 * can make a later incarnation fail).
 *   GET /flaky/ok -> "ok\n" (and its pid, to tell incarnations apart)
 */
#include <modgate/module.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int init(void)
{
    const char *gate = getenv("FLAKY_FAIL_IF_EXISTS");
    if (gate != NULL && access(gate, F_OK) == 0) {
        mg_log(MG_LOG_ERROR, "flaky: refusing to start (%s exists)", gate);
        return -1;
    }
    const char *mode = getenv("FLAKY_MODE");
    if (mode != NULL && strcmp(mode, "fail") == 0) {
        mg_log(MG_LOG_ERROR, "flaky: refusing to start (FLAKY_MODE=fail)");
        return -1;
    }
    if (mode != NULL && strcmp(mode, "slow") == 0) {
        const char *ms = getenv("FLAKY_SLEEP_MS");
        mg_log(MG_LOG_INFO, "flaky: starting slowly");
        usleep((useconds_t)(ms ? atoi(ms) : 10000) * 1000);
    }
    return 0;
}

static int ok(mg_req *req, mg_res *res)
{
    (void)req;
    return mg_res_printf(res, 200, "text/plain", "ok %d\n", (int)getpid());
}

MG_MODULE(flaky, MG_INIT(init), MG_GET("/flaky/ok", ok));
