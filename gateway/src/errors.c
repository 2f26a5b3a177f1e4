#include "errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void gw_error_header_value(char *buf, size_t len, const char *module, unsigned incarnation,
                           const char *cause)
{
    if (module != NULL && incarnation > 0)
        snprintf(buf, len, "module=%s; incarnation=%u; cause=%s", module, incarnation,
                 cause ? cause : "error");
    else if (module != NULL)
        snprintf(buf, len, "module=%s; cause=%s", module, cause ? cause : "error");
    else
        snprintf(buf, len, "cause=%s", cause ? cause : "error");
}

/* The JSON error body alone (caller frees); NULL on ENOMEM. */
static char *error_json(const char *msg, const char *module, const char *request_id, size_t *len)
{
    struct mg_buf b;
    mg__buf_init(&b, 1u << 20);
    int rc = mg__buf_append(&b, "{\"error\": ", 10);
    rc |= mg__buf_json_string(&b, msg, strlen(msg));
    rc |= mg__buf_append(&b, ", \"module\": ", 12);
    if (module != NULL)
        rc |= mg__buf_json_string(&b, module, strlen(module));
    else
        rc |= mg__buf_append(&b, "null", 4);
    rc |= mg__buf_append(&b, ", \"request_id\": ", 16);
    rc |= mg__buf_json_string(&b, request_id, strlen(request_id));
    rc |= mg__buf_append(&b, "}\n", 2);
    if (rc != 0) {
        mg__buf_free(&b);
        return NULL;
    }
    return mg__buf_steal(&b, len);
}

struct MHD_Response *gw_error_response(const char *msg, const char *module,
                                       unsigned incarnation, const char *cause,
                                       const char *request_id, uint64_t *body_len)
{
    size_t len;
    char *body = error_json(msg, module, request_id, &len);
    if (body == NULL)
        return NULL;
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    if (r == NULL) {
        free(body);
        return NULL;
    }
    char hv[256];
    gw_error_header_value(hv, sizeof(hv), module, incarnation, cause);
    if (MHD_add_response_header(r, "Content-Type", "application/json") != MHD_YES ||
        MHD_add_response_header(r, GW_ERROR_HEADER, hv) != MHD_YES ||
        MHD_add_response_header(r, "X-Request-Id", request_id) != MHD_YES) {
        MHD_destroy_response(r);
        return NULL;
    }
    *body_len = len;
    return r;
}

char *gw_error_message(int status, const char *msg, const char *module, unsigned incarnation,
                       const char *cause, const char *request_id, size_t *len,
                       uint64_t *body_len)
{
    size_t blen;
    char *body = error_json(msg, module, request_id, &blen);
    if (body == NULL)
        return NULL;
    char hv[256], date[64];
    gw_error_header_value(hv, sizeof(hv), module, incarnation, cause);
    mg__http_date(date);
    char *out = NULL;
    int n = asprintf(&out,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\n" GW_ERROR_HEADER ": %s\r\n"
                     "X-Request-Id: %s\r\nContent-Length: %zu\r\n\r\n%s",
                     status, mg__reason(status), date, hv, request_id, blen, body);
    free(body);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    *body_len = blen;
    return out;
}

struct MHD_Response *gw_local_response(const char *body, const char *content_type,
                                       const char *request_id, uint64_t *body_len)
{
    size_t len = strlen(body);
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, body, len + 1);
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, copy, free);
    if (r == NULL) {
        free(copy);
        return NULL;
    }
    if (MHD_add_response_header(r, "Content-Type", content_type) != MHD_YES ||
        (request_id != NULL && MHD_add_response_header(r, "X-Request-Id", request_id) != MHD_YES)) {
        MHD_destroy_response(r);
        return NULL;
    }
    *body_len = len;
    return r;
}
