/* samename: a test module that takes the name of another (hello), to
 * check that the gateway refuses to start with two modules of one name. */
#include <modgate/module.h>

static int other(mg_req *req, mg_res *res)
{
    (void)req;
    return mg_res_printf(res, 200, "text/plain", "the other hello\n");
}

MG_MODULE(hello, MG_GET("/samename", other));
