/*
 * Config loading. Each section is a table of keys with their type, range
 * and place in struct gw_config, so that validation and error messages
 * come from one description instead of hand-written checks per key.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "listen.h"

#define DAY_MS (24u * 3600u * 1000u)

enum kind { K_UINT, K_U64, K_STRING, K_NULLABLE_STRING, K_HOSTPORT };

struct key {
    const char *name;
    enum kind kind;
    size_t off;
    uint64_t min, max;
};

#define U(sec, field, lo, hi) { #field, K_UINT, offsetof(struct gw_config, sec.field), lo, hi }

static const struct key top_keys[] = {
    { "listen", K_HOSTPORT, offsetof(struct gw_config, listen), 0, 0 },
    { "admin_listen", K_HOSTPORT, offsetof(struct gw_config, admin_listen), 0, 0 },
    { "log_dir", K_STRING, offsetof(struct gw_config, log_dir), 0, 0 },
    { "admin_token", K_NULLABLE_STRING, offsetof(struct gw_config, admin_token), 0, 0 },
    { NULL, 0, 0, 0, 0 },
};

static const struct key limits_keys[] = {
    { "max_body_bytes", K_U64, offsetof(struct gw_config, limits.max_body_bytes), 0,
      (uint64_t)1 << 50 },
    U(limits, max_header_bytes, 1024, 1024 * 1024),
    U(limits, request_timeout_ms, 1, DAY_MS),
    U(limits, stream_idle_timeout_ms, 0, DAY_MS),
    U(limits, max_connections, 1, 1000000),
    { NULL, 0, 0, 0, 0 },
};

static const struct key health_keys[] = {
    U(health, period_ms, 10, DAY_MS),
    U(health, probe_timeout_ms, 1, DAY_MS),
    U(health, unhealthy_after, 1, 1000),
    U(health, log_tail_lines, 0, 10000),
    { NULL, 0, 0, 0, 0 },
};

static const struct key restart_keys[] = {
    U(restart, backoff_initial_ms, 1, DAY_MS),
    U(restart, backoff_max_ms, 1, DAY_MS),
    U(restart, max_restarts, 0, 1000000),
    U(restart, window_s, 1, 7 * 24 * 3600),
    { NULL, 0, 0, 0, 0 },
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

int gw_config_set_string(char **field, const char *value)
{
    char *copy = NULL;
    if (value != NULL && (copy = strdup(value)) == NULL)
        return -ENOMEM;
    free(*field);
    *field = copy;
    return 0;
}

int gw_config_defaults(struct gw_config *c, const char *const *names, size_t n)
{
    memset(c, 0, sizeof(*c));
    if (gw_config_set_string(&c->listen, "127.0.0.1:8080") != 0 ||
        gw_config_set_string(&c->admin_listen, "127.0.0.1:9901") != 0 ||
        gw_config_set_string(&c->log_dir, "logs") != 0)
        goto nomem;
    c->limits.max_body_bytes = 10u * 1024 * 1024;
    c->limits.max_header_bytes = 16384;
    c->limits.request_timeout_ms = 30000;
    c->limits.stream_idle_timeout_ms = 300000;
    c->limits.max_connections = 10000;
    c->health.period_ms = 1000;
    c->health.probe_timeout_ms = 1000;
    c->health.unhealthy_after = 3;
    c->health.log_tail_lines = 20;
    c->restart.backoff_initial_ms = 100;
    c->restart.backoff_max_ms = 10000;
    c->restart.max_restarts = 10;
    c->restart.window_s = 60;
    c->modules = calloc(n ? n : 1, sizeof(*c->modules));
    if (c->modules == NULL)
        goto nomem;
    c->nmodules = n;
    for (size_t i = 0; i < n; i++) {
        struct gw_module_conf *m = &c->modules[i];
        if ((m->name = strdup(names[i])) == NULL)
            goto nomem;
        m->enabled = strcmp(names[i], "chaos") != 0;
        m->ready_timeout_ms = 5000;
        m->stop_timeout_ms = 5000;
    }
    return 0;
nomem:
    gw_config_free(c);
    return -ENOMEM;
}

static int apply_key(struct gw_config *c, const struct key *k, const char *path, json_t *v,
                     char *err, size_t errlen)
{
    char *base = (char *)c + k->off;
    switch (k->kind) {
    case K_UINT:
    case K_U64: {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            (uint64_t)json_integer_value(v) < k->min || (uint64_t)json_integer_value(v) > k->max)
            return fail(err, errlen, "%s: expected an integer from %llu to %llu", path,
                        (unsigned long long)k->min, (unsigned long long)k->max);
        if (k->kind == K_UINT)
            *(unsigned *)base = (unsigned)json_integer_value(v);
        else
            *(uint64_t *)base = (uint64_t)json_integer_value(v);
        return 0;
    }
    case K_NULLABLE_STRING:
        if (json_is_null(v))
            return gw_config_set_string((char **)base, NULL);
        /* fall through */
    case K_STRING:
    case K_HOSTPORT:
        if (!json_is_string(v) || json_string_length(v) == 0)
            return fail(err, errlen, "%s: expected a non-empty string%s", path,
                        k->kind == K_NULLABLE_STRING ? " or null" : "");
        if (strlen(json_string_value(v)) != json_string_length(v))
            return fail(err, errlen, "%s: contains a NUL byte", path);
        if (k->kind == K_HOSTPORT && mg__check_host_port(json_string_value(v)) != 0)
            return fail(err, errlen, "%s: expected \"HOST:PORT\" with a port from 0 to 65535",
                        path);
        return gw_config_set_string((char **)base, json_string_value(v));
    }
    return fail(err, errlen, "%s: internal error", path);
}

static int apply_section(struct gw_config *c, const struct key *keys, const char *prefix,
                         json_t *obj, char *err, size_t errlen)
{
    if (!json_is_object(obj))
        return fail(err, errlen, "%s: expected an object", prefix);
    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v) {
        char path[256];
        snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", name);
        const struct key *k = keys;
        while (k->name != NULL && strcmp(k->name, name) != 0)
            k++;
        if (k->name == NULL)
            return fail(err, errlen, "%s: unknown key", path);
        int rc = apply_key(c, k, path, v, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int apply_env(struct gw_module_conf *m, const char *prefix, json_t *env, char *err,
                     size_t errlen)
{
    if (!json_is_object(env))
        return fail(err, errlen, "%s: expected an object of strings", prefix);
    const char *name;
    json_t *v;
    json_object_foreach(env, name, v) {
        if (name[0] == '\0' || strchr(name, '=') != NULL)
            return fail(err, errlen, "%s.%s: not a valid environment variable name", prefix,
                        name);
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return fail(err, errlen, "%s.%s: expected a string", prefix, name);
        char **grown = realloc(m->env, (m->nenv + 1) * sizeof(*grown));
        if (grown == NULL)
            return -ENOMEM;
        m->env = grown;
        if (asprintf(&m->env[m->nenv], "%s=%s", name, json_string_value(v)) < 0)
            return -ENOMEM;
        m->nenv++;
    }
    return 0;
}

static int apply_module(struct gw_config *c, const char *mname, json_t *obj, char *err,
                        size_t errlen)
{
    struct gw_module_conf *m = (struct gw_module_conf *)gw_config_module(c, mname);
    if (m == NULL) {
        char known[512] = "";
        size_t pos = 0;
        for (size_t i = 0; i < c->nmodules && pos < sizeof(known); i++)
            pos += (size_t)snprintf(known + pos, sizeof(known) - pos, "%s%s", i ? ", " : "",
                                    c->modules[i].name);
        return fail(err, errlen, "modules.%s: unknown module (known: %s)", mname, known);
    }
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "modules.%s", mname);
    if (!json_is_object(obj))
        return fail(err, errlen, "%s: expected an object", prefix);
    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v) {
        char path[300];
        snprintf(path, sizeof(path), "%s.%s", prefix, name);
        if (strcmp(name, "enabled") == 0) {
            if (!json_is_boolean(v))
                return fail(err, errlen, "%s: expected true or false", path);
            m->enabled = json_is_true(v);
        } else if (strcmp(name, "env") == 0) {
            int rc = apply_env(m, path, v, err, errlen);
            if (rc != 0)
                return rc;
        } else if (strcmp(name, "ready_timeout_ms") == 0 || strcmp(name, "stop_timeout_ms") == 0) {
            uint64_t lo = name[0] == 'r' ? 1 : 0;
            if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)lo ||
                json_integer_value(v) > (json_int_t)DAY_MS)
                return fail(err, errlen, "%s: expected an integer from %llu to %u", path,
                            (unsigned long long)lo, DAY_MS);
            if (name[0] == 'r')
                m->ready_timeout_ms = (unsigned)json_integer_value(v);
            else
                m->stop_timeout_ms = (unsigned)json_integer_value(v);
        } else {
            return fail(err, errlen, "%s: unknown key", path);
        }
    }
    return 0;
}

int gw_config_apply_json(struct gw_config *c, const char *text, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL)
        return fail(err, errlen, "line %d column %d: %s", je.line, je.column, je.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = fail(err, errlen, "expected a JSON object at the top level");
        goto out;
    }
    const char *name;
    json_t *v;
    json_object_foreach(root, name, v) {
        if (strcmp(name, "limits") == 0)
            rc = apply_section(c, limits_keys, "limits", v, err, errlen);
        else if (strcmp(name, "health") == 0)
            rc = apply_section(c, health_keys, "health", v, err, errlen);
        else if (strcmp(name, "restart") == 0)
            rc = apply_section(c, restart_keys, "restart", v, err, errlen);
        else if (strcmp(name, "modules") == 0) {
            if (!json_is_object(v)) {
                rc = fail(err, errlen, "modules: expected an object");
                goto out;
            }
            const char *mname;
            json_t *mv;
            json_object_foreach(v, mname, mv) {
                if ((rc = apply_module(c, mname, mv, err, errlen)) != 0)
                    goto out;
            }
        } else {
            json_t *one = json_object();
            json_object_set(one, name, v);
            rc = apply_section(c, top_keys, "", one, err, errlen);
            json_decref(one);
        }
        if (rc != 0)
            goto out;
    }
    if (c->restart.backoff_max_ms < c->restart.backoff_initial_ms)
        rc = fail(err, errlen, "restart.backoff_max_ms: must not be below backoff_initial_ms (%u)",
                  c->restart.backoff_initial_ms);
out:
    json_decref(root);
    return rc;
}

int gw_config_apply_file(struct gw_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return fail(err, errlen, "%s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    char buf[8192];
    size_t n;
    int rc = 0;
    if (mem == NULL)
        rc = -ENOMEM;
    while (rc == 0 && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        if (fwrite(buf, 1, n, mem) != n)
            rc = -ENOMEM;
    if (rc == 0 && ferror(f))
        rc = fail(err, errlen, "%s: %s", path, strerror(errno));
    fclose(f);
    if (mem != NULL)
        fclose(mem);
    if (rc == 0) {
        char inner[512];
        rc = gw_config_apply_json(c, text, inner, sizeof(inner));
        if (rc != 0)
            fail(err, errlen, "%s: %s", path, inner);
    }
    free(text);
    return rc;
}

const struct gw_module_conf *gw_config_module(const struct gw_config *c, const char *name)
{
    for (size_t i = 0; i < c->nmodules; i++)
        if (strcmp(c->modules[i].name, name) == 0)
            return &c->modules[i];
    return NULL;
}

unsigned gw_config_max_stop_timeout(const struct gw_config *c)
{
    unsigned max = 0;
    for (size_t i = 0; i < c->nmodules; i++)
        if (c->modules[i].enabled && c->modules[i].stop_timeout_ms > max)
            max = c->modules[i].stop_timeout_ms;
    return max;
}

void gw_config_free(struct gw_config *c)
{
    free(c->listen);
    free(c->admin_listen);
    free(c->log_dir);
    free(c->admin_token);
    for (size_t i = 0; i < c->nmodules; i++) {
        for (size_t j = 0; j < c->modules[i].nenv; j++)
            free(c->modules[i].env[j]);
        free(c->modules[i].env);
        free(c->modules[i].name);
    }
    free(c->modules);
    memset(c, 0, sizeof(*c));
}
