/*
 * Integration-test harness: starts the real build/bin/modgate on port 0
 * in a temporary directory and speaks HTTP to it with libcurl, the way a
 * user with curl would.
 */
#ifndef MG_TEST_HARNESS_H
#define MG_TEST_HARNESS_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct gwp {
    pid_t pid;
    int port, admin_port;
    char dir[256];      /* temporary directory of this gateway */
    char logdir[320];   /* dir/logs */
    char *out;          /* stdout up to and including the ready line */
    int out_fd;         /* the rest of stdout */
};

/* Starts a gateway. `config_json` (may be NULL) is written to a config
 * file; `extra` (NULL-terminated, may be NULL) are more arguments.
 * Returns 0 once the ready line is read; -1 otherwise (g->out holds what
 * was printed). */
int gwp_start(struct gwp *g, const char *config_json, const char *const *extra);
/* Same with another gateway executable (tests with their own modules). */
int gwp_start_bin(struct gwp *g, const char *bin, const char *config_json,
                  const char *const *extra);
/* gwp_start with a config, failing the test if the gateway does not start. */
void gwp_start_ok(struct gwp *g, const char *config_json);
/* Stops the gateway, expects a clean exit (status 0), cleans up. */
void gwp_finish(struct gwp *g);
/* SIGTERM and wait (up to 20 s); returns the exit status as from waitpid,
 * or -1 if it did not exit. */
int gwp_stop(struct gwp *g);
/* Removes the temporary directory and frees g. */
void gwp_cleanup(struct gwp *g);

/* Runs `module` alone (`bin --module MODULE --listen LISTEN`), dying with
 * the test process, and returns its pid once it printed its ready line;
 * for a TCP listen address *port gets the port it listens on. Its stderr
 * goes to /dev/null. The caller stops it (kill, waitpid). */
pid_t module_alone(const char *bin, const char *module, const char *listen, int *port);

/* "http://127.0.0.1:PORT" + path, in a buffer valid until the 8th next call. */
const char *gwp_url(const struct gwp *g, const char *path);
const char *gwp_admin_url(const struct gwp *g, const char *path);
/* The content of DIR/logs/NAME (caller frees), "" if missing. */
char *gwp_log(const struct gwp *g, const char *name);
/* How many times `needle` occurs in the log dir's file `name`. */
int gwp_log_count(const struct gwp *g, const char *name, const char *needle);
/* GET /-/modules/NAME on the admin listener, as JSON (caller decrefs);
 * fails the test unless it answers 200 with JSON. */
json_t *gwp_module_info(const struct gwp *g, const char *name);
/* One integer field of it (0 if missing or not an integer). */
long gwp_module_int(const struct gwp *g, const char *name, const char *key);
/* Polls until `name` in the log dir contains `needle` (up to ms). */
bool gwp_wait_log(const struct gwp *g, const char *name, const char *needle, int ms);
/* The pid of a module's live process, from the admin API; 0 if none. */
pid_t gwp_module_pid(const struct gwp *g, const char *module);
/* Polls the admin API until the module is in `state` (up to ms). */
bool gwp_wait_state(const struct gwp *g, const char *module, const char *state, int ms);

struct http_resp {
    long status;
    char *body;
    size_t len;
    struct curl_slist *headers; /* "Name: value" lines of the final response */
    CURLcode rc;
};

struct http_req {
    const char *method;            /* default GET */
    const char *url;
    const char *const *headers;    /* NULL-terminated "Name: value" */
    const void *body;
    size_t body_len;
    long timeout_ms;               /* default 10000 */
};

/* Performs one request; 0 if a response came back (any status). */
int http_do(const struct http_req *req, struct http_resp *resp);
/* GET shortcut. */
int http_get(const char *url, struct http_resp *resp);
/* The status of a GET of url, -1 if no answer came. */
long http_status(const char *url);
/* POSTs to url a body of unknown length (Transfer-Encoding: chunked)
 * that `read` produces from `arg`, with the extra `header` if not NULL;
 * the answer lands in *resp (100 s at most). */
CURLcode http_post_chunked(const char *url, curl_read_callback read, void *arg,
                           const char *header, struct http_resp *resp);
/* A CURLOPT_WRITEFUNCTION that appends to the http_resp given as
 * CURLOPT_WRITEDATA (body NUL-terminated, len counted). */
size_t http_collect(char *p, size_t size, size_t n, void *userp);
/* A GET run on a thread of its own: pthread_create(&t, NULL,
 * http_get_thread, &call), then pthread_join and call.r. */
struct http_call {
    const char *url;
    struct http_resp r;
};
void *http_get_thread(void *call);
/* The first value of header `name` (case-insensitive), or NULL. */
const char *http_header(const struct http_resp *r, const char *name);
size_t http_header_count(const struct http_resp *r, const char *name);
void http_free(struct http_resp *r);

/* A connection (close-on-exec) to 127.0.0.1:port, or to the Unix socket
 * `unix_path` if port is 0; rcvbuf > 0 sets SO_RCVBUF first (a small one
 * makes a client that stops reading stall the sender soon). -1 if the
 * connection is refused. */
int test_connect(int port, const char *unix_path, int rcvbuf);
/* Sends all `len` bytes, failing the test if the connection breaks. */
void send_all(int fd, const void *data, size_t len);

/* Sends `req` (len bytes) as is on a new connection to 127.0.0.1:port, or
 * to the Unix socket `unix_path` if port is 0, and returns every byte that
 * comes back until the peer closes or stays silent for `quiet_ms` (caller
 * frees; *outlen gets the length). For requests curl cannot make. */
char *raw_exchange(int port, const char *unix_path, const char *req, size_t len, int quiet_ms,
                   size_t *outlen);
/* GET `path` on a new connection (Connection: close) to 127.0.0.1:port,
 * as raw_exchange: the whole answer, head and body as sent (caller frees). */
char *raw_get(int port, const char *path);
/* Every byte that comes in on fd until the peer closes or stays silent for
 * `quiet_ms` (caller frees; *outlen gets the length). */
char *read_answer(int fd, int quiet_ms, size_t *outlen);
/* What comes in on fd until `want` is among it, the peer closes, or `ms`
 * pass (caller frees; "" if nothing came). */
char *read_until(int fd, const char *want, int ms);
/* A connection to 127.0.0.1:port on which `req` was sent and answered
 * (`want` came back, within 5 s): kept open, for tests that hold
 * keep-alive connections. */
int held_connection(int port, const char *req, const char *want);

/* Monotonic milliseconds. */
long ms_now(void);
/* VmRSS of a process in KiB, -1 if unknown. */
long rss_kb(pid_t pid);
/* Threads of pid (/proc status), -1 if it is gone. */
long thread_count(pid_t pid);
/* CPU time (user + system) the process has used so far, in ms; -1 if gone. */
long cpu_ms(pid_t pid);
/* The number of open descriptors of a process, -1 if it is gone. */
int count_fds(pid_t pid);
/* The same without sockets: files, pipes, pidfds, eventfds, whose number does not
 * depend on which connections a client or a pool happens to hold. */
int count_nonsocket_fds(pid_t pid);
/* "fd->target " for each descriptor of pid, for failure messages; free() it. */
char *fd_targets(pid_t pid);
/* The number of zombie children of `parent`. */
int count_zombies(pid_t parent);
/* True if process `pid` is gone or a zombie. */
bool process_dead(pid_t pid);
/* Reads a whole file (caller frees), NULL if missing. */
char *read_file(const char *path, size_t *len);

#endif
