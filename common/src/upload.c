/*
 * Streaming uploads in the module runtime. The handler runs on a thread of
 * its own from the moment the headers are in; the connection thread hands
 * it the body through a bounded ring (blocking while the ring is full, so
 * a slow handler slows the client down instead of growing memory) and,
 * once the body is complete, waits for the handler's answer and queues it.
 *
 * Lifetime: the upload owns the request once started; the handler thread
 * and the MHD connection each hold a reference.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

#define RING (256 * 1024)

struct mg_upload {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    struct mg_req *req;
    mg_handler_fn fn;
    struct mg_res res;
    int rc;
    bool done;          /* the handler returned */
    bool eof;           /* the whole body was handed over */
    bool broken;        /* the client left, or the body went over the limit */
    char *ring;
    size_t head, len;
    size_t total, max;
};

static void upload_unref(struct mg_upload *u)
{
    pthread_mutex_lock(&u->mu);
    int left = --u->refs;
    pthread_mutex_unlock(&u->mu);
    if (left > 0)
        return;
    mg__res_clear(&u->res);
    free(u->ring);
    mg__req_free(u->req);
    pthread_cond_destroy(&u->cv);
    pthread_mutex_destroy(&u->mu);
    free(u);
}

static void *upload_thread(void *arg)
{
    struct mg_upload *u = arg;
    int rc = u->fn(u->req, &u->res);
    pthread_mutex_lock(&u->mu);
    u->rc = rc;
    u->done = true;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    upload_unref(u);
    mg__handler_thread_done();
    return NULL;
}

int mg__upload_start(struct mg_req *req, mg_handler_fn fn, size_t max_body)
{
    struct mg_upload *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return -1;
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    mg__res_init(&u->res);
    u->req = req;
    u->fn = fn;
    u->max = max_body;
    u->refs = 2;
    req->upload = u;

    int err = mg__start_handler_thread(upload_thread, u);
    if (err != 0) {
        req->upload = NULL;
        u->req = NULL;
        u->refs = 1;
        upload_unref(u);
        return -1;
    }
    return 0;
}

void mg__upload_feed(struct mg_upload *u, const char *data, size_t len)
{
    pthread_mutex_lock(&u->mu);
    u->total += len;
    /* The ring comes with the first bytes: most requests to an upload
     * route (echo answers every method there) have no body. */
    if (u->total > u->max || (len > 0 && u->ring == NULL && (u->ring = malloc(RING)) == NULL)) {
        u->broken = true;
        pthread_cond_broadcast(&u->cv);
    }
    while (len > 0 && !u->done && !u->broken) {
        while (u->len == RING && !u->done && !u->broken)
            pthread_cond_wait(&u->cv, &u->mu);
        if (u->done || u->broken)
            break;
        size_t tail = (u->head + u->len) % RING;
        size_t room = RING - u->len;
        size_t run = RING - tail < room ? RING - tail : room;
        size_t take = len < run ? len : run;
        memcpy(u->ring + tail, data, take);
        u->len += take;
        data += take;
        len -= take;
        pthread_cond_broadcast(&u->cv);
    }
    /* What the handler no longer wants is dropped. */
    pthread_mutex_unlock(&u->mu);
}

long mg__upload_read(struct mg_upload *u, void *buf, size_t len)
{
    pthread_mutex_lock(&u->mu);
    while (u->len == 0 && !u->eof && !u->broken)
        pthread_cond_wait(&u->cv, &u->mu);
    long n;
    if (u->broken) {
        n = -1;
    } else if (u->len == 0) {
        n = 0;
    } else {
        size_t run = RING - u->head < u->len ? RING - u->head : u->len;
        size_t take = len < run ? len : run;
        memcpy(buf, u->ring + u->head, take);
        u->head = (u->head + take) % RING;
        u->len -= take;
        n = (long)take;
        pthread_cond_broadcast(&u->cv);
    }
    pthread_mutex_unlock(&u->mu);
    return n;
}

enum MHD_Result mg__upload_finish(struct mg_req *req)
{
    struct mg_upload *u = req->upload;
    pthread_mutex_lock(&u->mu);
    u->eof = true;
    pthread_cond_broadcast(&u->cv);
    while (!u->done)
        pthread_cond_wait(&u->cv, &u->mu);
    bool too_large = u->total > u->max;
    pthread_mutex_unlock(&u->mu);

    struct MHD_Response *r;
    int status;
    if (too_large) {
        status = 413;
        r = mg__error_response("request body too large", req);
    } else {
        r = mg__res_to_mhd(&u->res, u->rc, req);
        status = u->res.status;
    }
    return mg__queue(req->conn, status, r);
}

void mg__upload_connection_closed(struct mg_upload *u)
{
    pthread_mutex_lock(&u->mu);
    if (!u->eof)
        u->broken = true; /* the body will never be complete */
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    upload_unref(u);
}
