#include "harness.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

long ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int test_connect(int port, const char *unix_path, int rcvbuf)
{
    int fd = socket(port > 0 ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    if (rcvbuf > 0)
        cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    int rc;
    if (port > 0) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    } else {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", unix_path);
        rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    }
    if (rc != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void send_all(int fd, const void *data, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, (const char *)data + off, len - off, MSG_NOSIGNAL);
        cr_assert_gt(n, 0, "send: %s", strerror(errno));
        off += (size_t)n;
    }
}

char *raw_exchange(int port, const char *unix_path, const char *req, size_t len, int quiet_ms,
                   size_t *outlen)
{
    int fd = test_connect(port, unix_path, 0);
    cr_assert_geq(fd, 0, "connect to port %d or %s", port, unix_path ? unix_path : "-");
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the peer may answer and close before reading it all */
        off += (size_t)n;
    }
    char *out = read_answer(fd, quiet_ms, outlen);
    close(fd);
    return out;
}

char *raw_get(int port, const char *path)
{
    char *req = NULL;
    int len = asprintf(&req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    cr_assert_geq(len, 0);
    size_t n;
    char *out = raw_exchange(port, NULL, req, (size_t)len, 3000, &n);
    free(req);
    return out;
}

char *read_answer(int fd, int quiet_ms, size_t *outlen)
{
    size_t n = 0, cap = 65536;
    char *out = malloc(cap + 1);
    cr_assert_not_null(out);
    struct pollfd p = { .fd = fd, .events = POLLIN };
    while (poll(&p, 1, quiet_ms) > 0) {
        if (n == cap) {
            cap *= 2;
            out = realloc(out, cap + 1);
            cr_assert_not_null(out);
        }
        ssize_t got = recv(fd, out + n, cap - n, 0);
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    out[n] = '\0';
    *outlen = n;
    return out;
}

char *read_until(int fd, const char *want, int ms)
{
    size_t n = 0, cap = 16384;
    char *out = calloc(1, cap);
    cr_assert_not_null(out);
    for (long end = ms_now() + ms; strstr(out, want) == NULL && ms_now() < end && n + 1 < cap;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, (int)(end - ms_now())) <= 0)
            break;
        ssize_t got = recv(fd, out + n, cap - n - 1, 0);
        if (got <= 0)
            break;
        n += (size_t)got;
        out[n] = '\0';
    }
    return out;
}

int held_connection(int port, const char *req, const char *want)
{
    int fd = test_connect(port, NULL, 0);
    cr_assert_geq(fd, 0);
    send_all(fd, req, strlen(req));
    char *out = read_until(fd, want, 5000);
    cr_assert_not_null(strstr(out, want), "%s", out);
    free(out);
    return fd;
}

/* Counts pid's descriptors; with `skip_sockets`, only those that are not sockets. */
static int count_descriptors(pid_t pid, bool skip_sockets)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    int n = 0;
    if (d == NULL)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (skip_sockets) {
            char link[320], target[64];
            snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
            ssize_t len = readlink(link, target, sizeof(target) - 1);
            target[len > 0 ? len : 0] = '\0';
            if (strncmp(target, "socket:", 7) == 0)
                continue;
        }
        n++;
    }
    closedir(d);
    return n;
}

int count_fds(pid_t pid)
{
    return count_descriptors(pid, false);
}

int count_nonsocket_fds(pid_t pid)
{
    return count_descriptors(pid, true);
}

char *fd_targets(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    size_t cap = 4096, len = 0;
    char *out = calloc(1, cap);
    if (d == NULL || out == NULL) {
        if (d != NULL)
            closedir(d);
        return out;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char link[320], target[256];
        snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        target[n > 0 ? n : 0] = '\0';
        if (len + strlen(e->d_name) + strlen(target) + 8 >= cap) {
            char *bigger = realloc(out, cap * 2);
            if (bigger == NULL)
                break;
            out = bigger;
            cap *= 2;
        }
        len += (size_t)snprintf(out + len, cap - len, "%s->%s ", e->d_name, target);
    }
    closedir(d);
    return out;
}

/* The number after `field` ("VmRSS:") in /proc/PID/status, -1 if none. */
static long status_field(pid_t pid, const char *field)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    char *s = read_file(path, NULL);
    const char *v = s ? strstr(s, field) : NULL;
    long n = v ? atol(v + strlen(field)) : -1;
    free(s);
    return n;
}

long rss_kb(pid_t pid)
{
    return status_field(pid, "VmRSS:");
}

long thread_count(pid_t pid)
{
    return status_field(pid, "Threads:");
}

long cpu_ms(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    char *s = read_file(path, NULL);
    /* The fields after the command name, which may hold spaces: state is
     * field 3, utime and stime fields 14 and 15. */
    const char *p = s ? strrchr(s, ')') : NULL;
    unsigned long ut = 0, st = 0;
    int got = p ? sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st)
                : 0;
    free(s);
    if (got != 2)
        return -1;
    return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return NULL;
    char *data = NULL;
    size_t n = 0, cap = 0;
    char buf[65536];
    size_t got;
    while ((got = fread(buf, 1, sizeof(buf), f)) > 0) {
        if (n + got + 1 > cap) {
            cap = (n + got + 1) * 2;
            data = realloc(data, cap);
        }
        memcpy(data + n, buf, got);
        n += got;
    }
    fclose(f);
    if (data == NULL)
        data = calloc(1, 1);
    data[n] = '\0';
    if (len)
        *len = n;
    return data;
}

int gwp_start_bin(struct gwp *g, const char *bin, const char *config_json,
                  const char *const *extra)
{
    memset(g, 0, sizeof(*g));
    g->out_fd = -1;
    snprintf(g->dir, sizeof(g->dir), "/tmp/mgt-XXXXXX");
    if (mkdtemp(g->dir) == NULL)
        return -1;
    snprintf(g->logdir, sizeof(g->logdir), "%s/logs", g->dir);
    char cfg[300];
    snprintf(cfg, sizeof(cfg), "%s/config.json", g->dir);
    if (config_json != NULL) {
        FILE *f = fopen(cfg, "w");
        if (f == NULL)
            return -1;
        fputs(config_json, f);
        fclose(f);
    }
    const char *argv[64] = { bin, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                             "--log-dir", g->logdir };
    int argc = 7;
    if (config_json != NULL) {
        argv[argc++] = "--config";
        argv[argc++] = cfg;
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL && argc < 62; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;

    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0)
        return -1;
    char errpath[300];
    snprintf(errpath, sizeof(errpath), "%s/stderr.txt", g->dir);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* A test that fails an assertion exits at once: take the gateway
         * (and so its modules) with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int err = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        dup2(out[1], 1);
        if (err >= 0)
            dup2(err, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    g->pid = pid;
    g->out_fd = out[0];

    size_t len = 0, cap = 4096;
    g->out = calloc(1, cap);
    long deadline = ms_now() + 20000;
    for (;;) {
        char *ready = strstr(g->out, "modgate: ready on http://127.0.0.1:");
        if (ready != NULL && strchr(ready, '\n') != NULL) {
            sscanf(ready, "modgate: ready on http://127.0.0.1:%d (admin http://127.0.0.1:%d)",
                   &g->port, &g->admin_port);
            return g->port > 0 ? 0 : -1;
        }
        long left = deadline - ms_now();
        if (left <= 0)
            return -1;
        struct pollfd p = { .fd = out[0], .events = POLLIN };
        if (poll(&p, 1, (int)left) <= 0)
            return -1;
        if (len + 1024 >= cap) {
            cap *= 2;
            g->out = realloc(g->out, cap);
        }
        ssize_t n = read(out[0], g->out + len, cap - len - 1);
        if (n <= 0)
            return -1; /* exited before ready */
        len += (size_t)n;
        g->out[len] = '\0';
    }
}

int gwp_start(struct gwp *g, const char *config_json, const char *const *extra)
{
    return gwp_start_bin(g, MODGATE_BIN, config_json, extra);
}

void gwp_start_ok(struct gwp *g, const char *config_json)
{
    cr_assert_eq(gwp_start(g, config_json, NULL), 0, "gateway did not start: %s", g->out);
}

void gwp_finish(struct gwp *g)
{
    int status = gwp_stop(g);
    cr_expect_eq(status, 0, "gateway exit status %d", status);
    gwp_cleanup(g);
}

int gwp_stop(struct gwp *g)
{
    if (g->pid <= 0)
        return -1;
    kill(g->pid, SIGTERM);
    long deadline = ms_now() + 20000;
    int status;
    while (ms_now() < deadline) {
        pid_t r = waitpid(g->pid, &status, WNOHANG);
        if (r == g->pid) {
            g->pid = 0;
            return status;
        }
        usleep(10000);
    }
    kill(g->pid, SIGKILL);
    waitpid(g->pid, &status, 0);
    g->pid = 0;
    return -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Sanitizer reports land in the gateway's stderr and in the module logs
 * (a module's stderr): any of them fails the test. */
static void check_no_sanitizer_reports(const struct gwp *g)
{
    static const char *const files[] = { "stderr.txt", "logs/gateway.log", "logs/hello.log",
                                         "logs/echo.log", "logs/chaos.log", "logs/flaky.log",
                                         "logs/sdk.log" };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[400];
        snprintf(path, sizeof(path), "%s/%s", g->dir, files[i]);
        char *text = read_file(path, NULL);
        if (text == NULL)
            continue;
        const char *hit = strstr(text, "AddressSanitizer");
        if (hit == NULL)
            hit = strstr(text, "LeakSanitizer");
        if (hit == NULL)
            hit = strstr(text, "runtime error:");
        cr_expect_null(hit, "sanitizer report in %s: %.400s", files[i], hit);
        free(text);
    }
}

void gwp_cleanup(struct gwp *g)
{
    if (g->pid > 0) {
        kill(g->pid, SIGKILL);
        waitpid(g->pid, NULL, 0);
        g->pid = 0;
    }
    if (g->dir[0] != '\0')
        check_no_sanitizer_reports(g);
    if (g->out_fd >= 0)
        close(g->out_fd);
    g->out_fd = -1;
    free(g->out);
    g->out = NULL;
    if (g->dir[0] != '\0' && getenv("MG_TEST_KEEP") == NULL)
        nftw(g->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *fmt_url(int port, const char *path)
{
    static __thread char bufs[8][4096];
    static __thread unsigned next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "http://127.0.0.1:%d%s", port, path);
    return b;
}

const char *gwp_url(const struct gwp *g, const char *path)
{
    return fmt_url(g->port, path);
}

const char *gwp_admin_url(const struct gwp *g, const char *path)
{
    return fmt_url(g->admin_port, path);
}

char *gwp_log(const struct gwp *g, const char *name)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", g->logdir, name);
    char *s = read_file(path, NULL);
    return s ? s : strdup("");
}

bool gwp_wait_log(const struct gwp *g, const char *name, const char *needle, int ms)
{
    long deadline = ms_now() + ms;
    do {
        char *s = gwp_log(g, name);
        bool found = strstr(s, needle) != NULL;
        free(s);
        if (found)
            return true;
        usleep(20000);
    } while (ms_now() < deadline);
    return false;
}

static json_t *module_info(const struct gwp *g, const char *module)
{
    char path[256];
    snprintf(path, sizeof(path), "/-/modules/%s", module);
    struct http_resp r;
    if (http_get(gwp_admin_url(g, path), &r) != 0 || r.status != 200) {
        http_free(&r);
        return NULL;
    }
    json_t *j = json_loads(r.body, 0, NULL);
    http_free(&r);
    return j;
}

pid_t gwp_module_pid(const struct gwp *g, const char *module)
{
    json_t *j = module_info(g, module);
    pid_t pid = j ? (pid_t)json_integer_value(json_object_get(j, "pid")) : 0;
    json_decref(j);
    return pid;
}

bool gwp_wait_state(const struct gwp *g, const char *module, const char *state, int ms)
{
    long deadline = ms_now() + ms;
    do {
        json_t *j = module_info(g, module);
        const char *st = j ? json_string_value(json_object_get(j, "state")) : NULL;
        bool ok = st != NULL && strcmp(st, state) == 0;
        json_decref(j);
        if (ok)
            return true;
        usleep(20000);
    } while (ms_now() < deadline);
    return false;
}

size_t http_collect(char *p, size_t size, size_t n, void *userp)
{
    struct http_resp *r = userp;
    size_t len = size * n;
    char *b = realloc(r->body, r->len + len + 1);
    if (b == NULL)
        return 0;
    r->body = b;
    memcpy(r->body + r->len, p, len);
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *userp)
{
    struct http_resp *r = userp;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        curl_slist_free_all(r->headers); /* a new (final) response starts */
        r->headers = NULL;
        return len;
    }
    char line[8192];
    size_t l = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
    memcpy(line, p, l);
    while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == '\n'))
        l--;
    line[l] = '\0';
    if (l > 0)
        r->headers = curl_slist_append(r->headers, line);
    return len;
}

int http_do(const struct http_req *q, struct http_resp *r)
{
    memset(r, 0, sizeof(*r));
    r->body = calloc(1, 1);
    CURL *e = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    for (size_t i = 0; q->headers != NULL && q->headers[i] != NULL; i++)
        hdrs = curl_slist_append(hdrs, q->headers[i]);
    curl_easy_setopt(e, CURLOPT_URL, q->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, q->timeout_ms ? q->timeout_ms : 10000L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    const char *method = q->method ? q->method : "GET";
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (q->body != NULL) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    r->rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(e);
    curl_slist_free_all(hdrs);
    return r->rc == CURLE_OK ? 0 : -1;
}

int http_get(const char *url, struct http_resp *r)
{
    struct http_req q = { .url = url };
    return http_do(&q, r);
}

CURLcode http_post_chunked(const char *url, curl_read_callback read, void *arg,
                           const char *header, struct http_resp *r)
{
    memset(r, 0, sizeof(*r));
    r->body = calloc(1, 1);
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Transfer-Encoding: chunked");
    if (header != NULL)
        h = curl_slist_append(h, header);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, read);
    curl_easy_setopt(e, CURLOPT_READDATA, arg);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 100L);
    CURLcode rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    return rc;
}

pid_t module_alone(const char *bin, const char *module, const char *listen, int *port)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        dup2(p[1], STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        execl(bin, bin, "--module", module, "--listen", listen, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char buf[512] = "";
    size_t len = 0;
    while (strchr(buf, '\n') == NULL && len < sizeof(buf) - 1) {
        struct pollfd pf = { .fd = p[0], .events = POLLIN };
        if (poll(&pf, 1, 10000) <= 0)
            break;
        ssize_t n = read(p[0], buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
    }
    close(p[0]);
    const char *at = strstr(buf, " ready on ");
    cr_assert_not_null(at, "module %s alone printed no ready line: %s", module, buf);
    const char *tcp = strstr(at, "127.0.0.1:");
    if (port != NULL)
        *port = tcp ? atoi(tcp + strlen("127.0.0.1:")) : 0;
    return pid;
}

long http_status(const char *url)
{
    struct http_resp r;
    long s = http_get(url, &r) == 0 ? r.status : -1;
    http_free(&r);
    return s;
}

json_t *gwp_module_info(const struct gwp *g, const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "/-/modules/%s", name);
    struct http_resp r;
    cr_assert_eq(http_get(gwp_admin_url(g, path), &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    cr_assert_not_null(j, "%s", r.body);
    http_free(&r);
    return j;
}

long gwp_module_int(const struct gwp *g, const char *name, const char *key)
{
    json_t *j = gwp_module_info(g, name);
    long v = (long)json_integer_value(json_object_get(j, key));
    json_decref(j);
    return v;
}

int gwp_log_count(const struct gwp *g, const char *name, const char *needle)
{
    char *s = gwp_log(g, name);
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    free(s);
    return n;
}

int count_zombies(pid_t parent)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300];
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        char *s = read_file(path, NULL);
        const char *p = s ? strrchr(s, ')') : NULL;
        char state = 0;
        int ppid = 0;
        if (p != NULL && sscanf(p + 2, "%c %d", &state, &ppid) == 2 && ppid == parent &&
            state == 'Z')
            n++;
        free(s);
    }
    if (d != NULL)
        closedir(d);
    return n;
}

void *http_get_thread(void *arg)
{
    struct http_call *c = arg;
    http_get(c->url, &c->r);
    return NULL;
}

const char *http_header(const struct http_resp *r, const char *name)
{
    size_t n = strlen(name);
    for (struct curl_slist *h = r->headers; h != NULL; h = h->next)
        if (strncasecmp(h->data, name, n) == 0 && h->data[n] == ':') {
            const char *v = h->data + n + 1;
            while (*v == ' ')
                v++;
            return v;
        }
    return NULL;
}

size_t http_header_count(const struct http_resp *r, const char *name)
{
    size_t n = strlen(name), count = 0;
    for (struct curl_slist *h = r->headers; h != NULL; h = h->next)
        if (strncasecmp(h->data, name, n) == 0 && h->data[n] == ':')
            count++;
    return count;
}

void http_free(struct http_resp *r)
{
    free(r->body);
    curl_slist_free_all(r->headers);
    memset(r, 0, sizeof(*r));
}

bool process_dead(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    char *s = read_file(path, NULL);
    if (s == NULL)
        return true;
    const char *paren = strrchr(s, ')');
    bool zombie = paren != NULL && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
    free(s);
    return zombie;
}
