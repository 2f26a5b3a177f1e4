/*
 * hello: the smallest useful module, and the one the benchmarks use.
 *   GET /hello/{name}      -> "hello NAME\n"
 *   GET /hello/ticks?n=N   -> N lines "tick i\n", one chunk each (default 5)
 */
#include <modgate/module.h>

#include <stdlib.h>

static int hello(mg_req *req, mg_res *res)
{
    return mg_res_printf(res, 200, "text/plain; charset=utf-8", "hello %s\n",
                         mg_req_param(req, "name"));
}

static int ticks(mg_req *req, mg_stream *s)
{
    const char *arg = mg_req_query(req, "n");
    char *end = NULL;
    long n = arg ? strtol(arg, &end, 10) : 5;
    if (arg != NULL && (*arg == '\0' || *end != '\0' || n < 0 || n > 1000000))
        return mg_stream_error(s, 400, "n must be an integer from 0 to 1000000");
    for (long i = 0; i < n; i++)
        if (mg_stream_printf(s, "tick %ld\n", i) < 0)
            return -1; /* client gone */
    return 0;
}

MG_MODULE(hello,
          MG_GET("/hello/{name}", hello),
          MG_STREAM_GET("/hello/ticks", ticks));
