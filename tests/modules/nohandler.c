/* nohandler: a test module with a route that has no handler, which no
 * compiler catches: the gateway must refuse it at startup, not crash the
 * module at the first request. */
#include <stddef.h>

#include <modgate/module.h>

MG_MODULE(nohandler, MG_GET("/nohandler", NULL));
