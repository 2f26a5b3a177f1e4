#include <modgate/module.h>

static int greet(mg_req *req, mg_res *res)
{
    mg_log(MG_LOG_INFO, "greeting %s", mg_req_param(req, "who"));
    return mg_res_printf(res, 200, "text/plain", "greetings, %s\n", mg_req_param(req, "who"));
}

MG_MODULE(greet, MG_GET("/greet/{who}", greet));
