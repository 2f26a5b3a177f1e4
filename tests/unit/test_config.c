/*
 * Unit tests of the gateway configuration (gateway/src/config.h).
 *
 * Data-driven part: every tests/data/config/NAME.json is applied on top of
 * the defaults for the modules {chaos, echo, hello}; NAME.expect says what
 * must happen. Its first line is `ok` or `error: SUBSTRING` (the error
 * message must contain SUBSTRING); after `ok`, lines `key=value` are
 * checked against the resulting struct (see actual() for the keys).
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static const char *const Names[] = { "chaos", "echo", "hello" };
#define NNAMES (sizeof(Names) / sizeof(Names[0]))

/* ---- helpers ------------------------------------------------------------ */

/* MG_TEST_DATA, or tests/data next to this source file when the binary is
 * run by hand. */
static void data_dir(char *buf, size_t len)
{
    const char *env = getenv("MG_TEST_DATA");
    if (env != NULL && env[0] != '\0') {
        snprintf(buf, len, "%s", env);
        return;
    }
    const char *file = __FILE__;
    const char *slash = strrchr(file, '/');
    cr_assert_not_null(slash, "MG_TEST_DATA is not set and __FILE__ has no directory");
    snprintf(buf, len, "%.*s/../data", (int)(slash - file), file);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "re");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    cr_assert_not_null(m);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        cr_assert_eq(fwrite(buf, 1, n, m), n);
    cr_assert(!ferror(f), "%s: read error", path);
    fclose(f);
    cr_assert_eq(fclose(m), 0);
    return text;
}

static void load_defaults(struct gw_config *c)
{
    cr_assert_eq(gw_config_defaults(c, Names, NNAMES), 0);
}

/* Writes the value of `key` in `c` as text into buf; false for a key the
 * checker does not know. */
static bool actual(const struct gw_config *c, const char *key, char *buf, size_t len)
{
#define STR(field) \
    if (strcmp(key, #field) == 0) { \
        snprintf(buf, len, "%s", c->field ? c->field : "null"); \
        return true; \
    }
#define NUM(field) \
    if (strcmp(key, #field) == 0) { \
        snprintf(buf, len, "%" PRIu64, (uint64_t)c->field); \
        return true; \
    }
    STR(listen) STR(admin_listen) STR(log_dir) STR(admin_token)
    NUM(limits.max_body_bytes) NUM(limits.max_header_bytes) NUM(limits.request_timeout_ms)
    NUM(limits.stream_idle_timeout_ms) NUM(limits.max_connections)
    NUM(health.period_ms) NUM(health.probe_timeout_ms) NUM(health.unhealthy_after)
    NUM(health.log_tail_lines)
    NUM(restart.backoff_initial_ms) NUM(restart.backoff_max_ms) NUM(restart.max_restarts)
    NUM(restart.window_s)
#undef STR
#undef NUM
    /* modules.NAME.FIELD; env is "A=1,B=2" in file order. */
    if (strncmp(key, "modules.", 8) != 0)
        return false;
    const char *mname = key + 8, *dot = strchr(mname, '.');
    if (dot == NULL)
        return false;
    char name[64];
    snprintf(name, sizeof(name), "%.*s", (int)(dot - mname), mname);
    const struct gw_module_conf *m = gw_config_module(c, name);
    if (m == NULL)
        return false;
    const char *field = dot + 1;
    if (strcmp(field, "enabled") == 0)
        snprintf(buf, len, "%s", m->enabled ? "true" : "false");
    else if (strcmp(field, "ready_timeout_ms") == 0)
        snprintf(buf, len, "%u", m->ready_timeout_ms);
    else if (strcmp(field, "stop_timeout_ms") == 0)
        snprintf(buf, len, "%u", m->stop_timeout_ms);
    else if (strcmp(field, "env") == 0) {
        buf[0] = '\0';
        for (size_t i = 0; i < m->nenv; i++)
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", i ? "," : "", m->env[i]);
    } else
        return false;
    return true;
}

/* Runs one case; returns the number of failed checks (0 = pass). */
static int run_case(const char *dir, const char *base)
{
    char *path;
    cr_assert_geq(asprintf(&path, "%s/%s.json", dir, base), 0);
    char *json = read_text(path);
    free(path);
    cr_assert_geq(asprintf(&path, "%s/%s.expect", dir, base), 0);
    char *expect = read_text(path);
    free(path);

    struct gw_config c;
    load_defaults(&c);
    char err[512];
    memset(err, 0, sizeof(err));
    int rc = gw_config_apply_json(&c, json, err, sizeof(err));

    int failures = 0;
    char *save = NULL;
    char *line = strtok_r(expect, "\n", &save);
    cr_assert_not_null(line, "%s: empty .expect", base);
    if (strncmp(line, "error:", 6) == 0) {
        const char *sub = line + 6;
        while (*sub == ' ')
            sub++;
        cr_assert_neq(*sub, '\0', "%s: `error:` needs a substring", base);
        if (rc != -EINVAL) {
            cr_log_error("%s: expected an error containing \"%s\", got rc %d", base, sub, rc);
            failures++;
        } else if (strstr(err, sub) == NULL) {
            cr_log_error("%s: error \"%s\" does not contain \"%s\"", base, err, sub);
            failures++;
        }
    } else {
        cr_assert_str_eq(line, "ok", "%s: first line must be `ok` or `error: ...`", base);
        if (rc != 0) {
            cr_log_error("%s: expected ok, got rc %d: %s", base, rc, err);
            failures++;
        } else {
            while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
                if (line[0] == '\0' || line[0] == '#')
                    continue;
                char *eq = strchr(line, '=');
                cr_assert_not_null(eq, "%s: check line \"%s\" is not key=value", base, line);
                *eq = '\0';
                char got[1024];
                cr_assert(actual(&c, line, got, sizeof(got)), "%s: unknown check key \"%s\"",
                          base, line);
                if (strcmp(got, eq + 1) != 0) {
                    cr_log_error("%s: %s is \"%s\", expected \"%s\"", base, line, got, eq + 1);
                    failures++;
                }
            }
        }
    }
    gw_config_free(&c);
    free(json);
    free(expect);
    return failures;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- data-driven cases -------------------------------------------------- */

Test(config, data_cases)
{
    char root[900], dir[1024];
    data_dir(root, sizeof(root));
    snprintf(dir, sizeof(dir), "%s/config", root);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "opendir %s: %s", dir, strerror(errno));
    char *names[512];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > 5 && strcmp(de->d_name + l - 5, ".json") == 0) {
            cr_assert_lt(n, sizeof(names) / sizeof(names[0]));
            names[n] = strndup(de->d_name, l - 5);
            cr_assert_not_null(names[n]);
            n++;
        }
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), by_name);
    cr_assert_geq(n, 25, "only %zu cases in %s", n, dir);

    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        int f = run_case(dir, names[i]);
        if (f != 0) {
            failed++;
            cr_log_error("case %s FAILED", names[i]);
        }
        free(names[i]);
    }
    cr_assert_eq(failed, 0, "%zu of %zu config cases failed (see the log above)", failed, n);
}

/* ---- defaults ----------------------------------------------------------- */

Test(config, defaults)
{
    struct gw_config c;
    load_defaults(&c);
    cr_assert_str_eq(c.listen, "127.0.0.1:8080");
    cr_assert_str_eq(c.admin_listen, "127.0.0.1:9901");
    cr_assert_str_eq(c.log_dir, "logs");
    cr_assert_null(c.admin_token);
    cr_assert_eq(c.limits.max_body_bytes, 10485760);
    cr_assert_eq(c.limits.max_header_bytes, 16384);
    cr_assert_eq(c.limits.request_timeout_ms, 30000);
    cr_assert_eq(c.limits.stream_idle_timeout_ms, 300000);
    cr_assert_eq(c.limits.max_connections, 10000);
    cr_assert_eq(c.health.period_ms, 1000);
    cr_assert_eq(c.health.probe_timeout_ms, 1000);
    cr_assert_eq(c.health.unhealthy_after, 3);
    cr_assert_eq(c.health.log_tail_lines, 20);
    cr_assert_eq(c.restart.backoff_initial_ms, 100);
    cr_assert_eq(c.restart.backoff_max_ms, 10000);
    cr_assert_eq(c.restart.max_restarts, 10);
    cr_assert_eq(c.restart.window_s, 60);
    cr_assert_eq(c.nmodules, 3);
    for (size_t i = 0; i < NNAMES; i++) {
        const struct gw_module_conf *m = gw_config_module(&c, Names[i]);
        cr_assert_not_null(m, "module %s", Names[i]);
        cr_assert_str_eq(m->name, Names[i]);
        cr_assert_eq(m->enabled, strcmp(Names[i], "chaos") != 0, "%s enabled", Names[i]);
        cr_assert_eq(m->ready_timeout_ms, 5000, "%s ready_timeout_ms", Names[i]);
        cr_assert_eq(m->stop_timeout_ms, 5000, "%s stop_timeout_ms", Names[i]);
        cr_assert_eq(m->nenv, 0);
    }
    cr_assert_null(gw_config_module(&c, "stream"));
    cr_assert_null(gw_config_module(&c, ""));
    gw_config_free(&c);
}

Test(config, defaults_without_modules)
{
    struct gw_config c;
    cr_assert_eq(gw_config_defaults(&c, NULL, 0), 0);
    cr_assert_eq(c.nmodules, 0);
    cr_assert_str_eq(c.listen, "127.0.0.1:8080");
    cr_assert_eq(gw_config_max_stop_timeout(&c), 0);
    char err[256] = "";
    cr_assert_eq(gw_config_apply_json(&c, "{\"modules\": {\"echo\": {}}}", err, sizeof(err)),
                 -EINVAL);
    cr_assert_not_null(strstr(err, "modules.echo"), "%s", err);
    gw_config_free(&c);
}

Test(config, empty_object_keeps_defaults)
{
    struct gw_config c;
    load_defaults(&c);
    char err[256] = "";
    cr_assert_eq(gw_config_apply_json(&c, "{}", err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.listen, "127.0.0.1:8080");
    cr_assert_eq(c.limits.max_body_bytes, 10485760);
    cr_assert(!gw_config_module(&c, "chaos")->enabled);
    gw_config_free(&c);
}

/* ---- gw_config_max_stop_timeout ----------------------------------------- */

static void apply_ok(struct gw_config *c, const char *json)
{
    char err[512] = "";
    cr_assert_eq(gw_config_apply_json(c, json, err, sizeof(err)), 0, "%s: %s", json, err);
}

Test(config, max_stop_timeout)
{
    struct gw_config c;
    load_defaults(&c);
    cr_assert_eq(gw_config_max_stop_timeout(&c), 5000);

    apply_ok(&c, "{\"modules\": {\"echo\": {\"stop_timeout_ms\": 9000}}}");
    cr_assert_eq(gw_config_max_stop_timeout(&c), 9000);

    /* A disabled module does not count. */
    apply_ok(&c, "{\"modules\": {\"chaos\": {\"stop_timeout_ms\": 30000}}}");
    cr_assert_eq(gw_config_max_stop_timeout(&c), 9000);
    apply_ok(&c, "{\"modules\": {\"chaos\": {\"enabled\": true}}}");
    cr_assert_eq(gw_config_max_stop_timeout(&c), 30000);

    apply_ok(&c, "{\"modules\": {\"chaos\": {\"enabled\": false},"
                 " \"echo\": {\"enabled\": false}}}");
    cr_assert_eq(gw_config_max_stop_timeout(&c), 5000, "only hello is left");

    apply_ok(&c, "{\"modules\": {\"hello\": {\"stop_timeout_ms\": 0}}}");
    cr_assert_eq(gw_config_max_stop_timeout(&c), 0);

    apply_ok(&c, "{\"modules\": {\"hello\": {\"enabled\": false, \"stop_timeout_ms\": 7000}}}");
    cr_assert_eq(gw_config_max_stop_timeout(&c), 0, "nothing enabled");
    gw_config_free(&c);
}

/* ---- other entry points ------------------------------------------------- */

Test(config, apply_file)
{
    char path[] = "/tmp/mg_config_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char *json = "{\"log_dir\": \"/var/log/mg\", \"limits\": {\"max_connections\": 7}}";
    cr_assert_eq(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);

    struct gw_config c;
    load_defaults(&c);
    char err[512] = "";
    cr_assert_eq(gw_config_apply_file(&c, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.log_dir, "/var/log/mg");
    cr_assert_eq(c.limits.max_connections, 7);

    /* Errors start with the path and still name the key. */
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\"limits\": {\"max_connections\": 0}}", f);
    fclose(f);
    cr_assert_eq(gw_config_apply_file(&c, path, err, sizeof(err)), -EINVAL);
    cr_assert_eq(strncmp(err, path, strlen(path)), 0, "%s", err);
    cr_assert_not_null(strstr(err, "limits.max_connections"), "%s", err);
    unlink(path);

    cr_assert_neq(gw_config_apply_file(&c, path, err, sizeof(err)), 0, "missing file");
    cr_assert_eq(strncmp(err, path, strlen(path)), 0, "%s", err);
    gw_config_free(&c);
}

Test(config, set_string)
{
    char *s = NULL;
    cr_assert_eq(gw_config_set_string(&s, "abc"), 0);
    cr_assert_str_eq(s, "abc");
    cr_assert_eq(gw_config_set_string(&s, "0.0.0.0:0"), 0);
    cr_assert_str_eq(s, "0.0.0.0:0");
    cr_assert_eq(gw_config_set_string(&s, NULL), 0);
    cr_assert_null(s);
}

Test(config, env_accumulates_in_order)
{
    struct gw_config c;
    load_defaults(&c);
    apply_ok(&c, "{\"modules\": {\"echo\": {\"env\": {\"A\": \"1\", \"B\": \"x=y\", \"C\": \"\"}}}}");
    const struct gw_module_conf *m = gw_config_module(&c, "echo");
    cr_assert_eq(m->nenv, 3);
    cr_assert_str_eq(m->env[0], "A=1");
    cr_assert_str_eq(m->env[1], "B=x=y");
    cr_assert_str_eq(m->env[2], "C=");
    cr_assert_eq(gw_config_module(&c, "hello")->nenv, 0);
    gw_config_free(&c);
}

Test(config, error_fits_small_buffer)
{
    struct gw_config c;
    load_defaults(&c);
    char err[16];
    memset(err, 'Z', sizeof(err));
    cr_assert_eq(gw_config_apply_json(&c, "{\"limits\": {\"max_connections\": -1}}", err,
                                      sizeof(err)),
                 -EINVAL);
    cr_assert_lt(strnlen(err, sizeof(err)), sizeof(err));
    cr_assert_eq(strncmp(err, "limits.max_conn", 15), 0, "%s", err);
    gw_config_free(&c);
}
