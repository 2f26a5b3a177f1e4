/*
 * Gateway configuration: embedded defaults, then the JSON file, then the
 * command-line flags. Every key is optional; an unknown key, a wrong type
 * or a bad value is an error naming the key.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_module_conf {
    char *name;
    bool enabled;
    char **env;            /* "NAME=VALUE" strings */
    size_t nenv;
    unsigned ready_timeout_ms;
    unsigned stop_timeout_ms;
};

struct gw_config {
    char *listen;
    char *admin_listen;
    char *log_dir;
    char *admin_token;     /* NULL: admin endpoints need no token */
    struct {
        uint64_t max_body_bytes;
        unsigned max_header_bytes;
        unsigned request_timeout_ms;
        unsigned stream_idle_timeout_ms; /* 0: never */
        unsigned max_connections;
    } limits;
    struct {
        unsigned period_ms;
        unsigned probe_timeout_ms;
        unsigned unhealthy_after;
        unsigned log_tail_lines;
    } health;
    struct {
        unsigned backoff_initial_ms;
        unsigned backoff_max_ms;
        unsigned max_restarts;
        unsigned window_s;
    } restart;
    struct gw_module_conf *modules; /* one per known module, in name order */
    size_t nmodules;
};

/* Fills `c` with the embedded defaults for the given module names (every
 * module enabled except "chaos"). 0 or -ENOMEM. */
int gw_config_defaults(struct gw_config *c, const char *const *module_names, size_t n);

/* Applies a JSON document on top of `c`. 0, or -EINVAL with err naming the
 * key ("limits.max_body_bytes: expected an integer from 0 to ..."). */
int gw_config_apply_json(struct gw_config *c, const char *text, char *err, size_t errlen);

/* Reads and applies the file at `path`; errors start with the path. */
int gw_config_apply_file(struct gw_config *c, const char *path, char *err, size_t errlen);

/* Replaces a string setting (for command-line overrides); 0 or -ENOMEM. */
int gw_config_set_string(char **field, const char *value);

const struct gw_module_conf *gw_config_module(const struct gw_config *c, const char *name);

/* The largest stop_timeout_ms of the enabled modules. */
unsigned gw_config_max_stop_timeout(const struct gw_config *c);

void gw_config_free(struct gw_config *c);

#endif
