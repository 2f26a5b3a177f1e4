#include "prober.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "curl_epoll.h"
#include "module.h"
#include "util.h"

struct gw_prober {
    int epfd;
    CURLM *multi;
    int64_t deadline_ms; /* curl's timer, -1 for none */
    gw_probe_done_fn done;
    void *ctx;
};

struct probe {
    struct gw_incarnation *inc;
    CURL *easy;
    uint64_t started_us;
    char errbuf[CURL_ERROR_SIZE];
};

static uint64_t tag_of(curl_socket_t s)
{
    return ((uint64_t)(uint32_t)s << 8) | GW_PROBER_TAG;
}

bool gw_prober_owns(uint64_t tag)
{
    return (tag & 7) == GW_PROBER_TAG;
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)e;
    struct gw_prober *p = userp;
    return gw_curl_epoll_socket(p->multi, p->epfd, s, what, socketp, tag_of(s));
}

static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    struct gw_prober *p = userp;
    p->deadline_ms = timeout_ms < 0 ? -1 : (int64_t)(mg__now_ms() + (uint64_t)timeout_ms);
    return 0;
}

static size_t discard(char *d, size_t size, size_t n, void *u)
{
    (void)d, (void)u;
    return size * n;
}

struct gw_prober *gw_prober_new(int epfd, gw_probe_done_fn done, void *ctx)
{
    struct gw_prober *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->epfd = epfd;
    p->deadline_ms = -1;
    p->done = done;
    p->ctx = ctx;
    p->multi = gw_curl_multi_new();
    if (p->multi == NULL) {
        free(p);
        return NULL;
    }
    curl_multi_setopt(p->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(p->multi, CURLMOPT_SOCKETDATA, p);
    curl_multi_setopt(p->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(p->multi, CURLMOPT_TIMERDATA, p);
    return p;
}

static void probe_free(struct gw_prober *p, struct probe *pr)
{
    curl_multi_remove_handle(p->multi, pr->easy);
    curl_easy_cleanup(pr->easy);
    pr->inc->probe = NULL;
    gw_incarnation_release(pr->inc);
    free(pr);
}

int gw_prober_start(struct gw_prober *p, struct gw_incarnation *inc, unsigned timeout_ms)
{
    if (inc->probe != NULL)
        return 0; /* one at a time */
    struct probe *pr = calloc(1, sizeof(*pr));
    if (pr == NULL)
        return -1;
    pr->easy = curl_easy_init();
    if (pr->easy == NULL) {
        free(pr);
        return -1;
    }
    CURL *e = pr->easy;
    /* A fresh connection each time: a probe must reach the module's
     * accept path too, as a new client's request would. */
    curl_easy_setopt(e, CURLOPT_URL, "http://module/-/probe");
    curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, inc->socket_path);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, pr->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, pr);
    gw_curl_open_cloexec(e, NULL);
    pr->inc = inc;
    atomic_fetch_add(&inc->refs, 1);
    inc->probe = pr;
    pr->started_us = mg__now_us();
    if (curl_multi_add_handle(p->multi, e) != CURLM_OK) {
        inc->probe = NULL;
        gw_incarnation_release(inc);
        curl_easy_cleanup(e);
        free(pr);
        return -1;
    }
    return 0;
}

void gw_prober_cancel(struct gw_prober *p, struct gw_incarnation *inc)
{
    if (inc->probe != NULL)
        probe_free(p, inc->probe);
}

void gw_prober_event(struct gw_prober *p, uint64_t tag, uint32_t events)
{
    int running;
    curl_multi_socket_action(p->multi, (curl_socket_t)(tag >> 8), gw_curl_epoll_flags(events),
                             &running);
}

uint64_t gw_prober_run(struct gw_prober *p, uint64_t now_ms)
{
    if (p->deadline_ms >= 0 && (uint64_t)p->deadline_ms <= now_ms) {
        int running;
        p->deadline_ms = -1;
        curl_multi_socket_action(p->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(p->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct probe *pr = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&pr);
        long status = 0;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        CURLcode rc = msg->data.result;
        uint64_t rtt = mg__now_us() - pr->started_us;
        char why[CURL_ERROR_SIZE + 32];
        bool ok = rc == CURLE_OK && status == 200;
        if (rc == CURLE_OPERATION_TIMEDOUT)
            snprintf(why, sizeof(why), "no answer within %llu ms",
                     (unsigned long long)(rtt / 1000));
        else if (rc != CURLE_OK)
            snprintf(why, sizeof(why), "%s", pr->errbuf[0] ? pr->errbuf : curl_easy_strerror(rc));
        else
            snprintf(why, sizeof(why), "health check answered %ld", status);
        struct gw_incarnation *inc = pr->inc;
        atomic_fetch_add(&inc->refs, 1); /* survives probe_free for the callback */
        probe_free(p, pr);
        p->done(p->ctx, inc, ok, rtt, why);
        gw_incarnation_release(inc);
    }
    return p->deadline_ms >= 0 ? (uint64_t)p->deadline_ms : UINT64_MAX;
}

void gw_prober_free(struct gw_prober *p)
{
    if (p == NULL)
        return;
    curl_multi_cleanup(p->multi);
    free(p);
}
