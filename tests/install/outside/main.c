/* A gateway main of one's own, built with pkg-config alone. */
#include <modgate/gateway.h>

int main(int argc, char **argv)
{
    return mg_gateway_main(argc, argv);
}
