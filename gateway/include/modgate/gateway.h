/*
 * modgate gateway entry point, for programs that bring their own modules.
 *
 *   #include <modgate/gateway.h>
 *   int main(int argc, char **argv) { return mg_gateway_main(argc, argv); }
 *
 * Every module registered with MG_MODULE in the program is available;
 * the command line and config file are those of `modgate --help`. The
 * same executable also runs one module (`--module NAME ...`), which is
 * how the gateway starts its children.
 */
#ifndef MODGATE_GATEWAY_H
#define MODGATE_GATEWAY_H

#ifdef __cplusplus
extern "C" {
#endif

/* Runs the gateway until SIGTERM/SIGINT; returns the exit code
 * (0 clean stop, 2 bad command line or config, 1 other startup error). */
int mg_gateway_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif

#endif
