/* dup: a test module that declares a route hello already has, to check
 * that the gateway refuses to start with both. */
#include <modgate/module.h>

static int other(mg_req *req, mg_res *res)
{
    (void)req;
    return mg_res_printf(res, 200, "text/plain", "dup\n");
}

MG_MODULE(dup, MG_GET("/hello/{who}", other));
