/*
 * Forwarding one request from the public listener to its module, on the
 * loop that accepted it. The loop calls these; everything runs on the
 * loop's thread.
 */
#ifndef GW_PROXY_H
#define GW_PROXY_H

#include <curl/curl.h>
#include <microhttpd.h>
#include <stdint.h>

struct gw_loop;

/* MHD callbacks (cls = the loop). */
void *gw_proxy_on_uri(void *cls, const char *uri, struct MHD_Connection *conn);
enum MHD_Result gw_proxy_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls);
void gw_proxy_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe);
void gw_proxy_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe);

/* An event on a descriptor the proxy watches (enum gw_fd_kind). */
void gw_proxy_fd_event(struct gw_loop *l, int fd, int kind, uint32_t events);

/* A transfer finished (CURLMSG_DONE). */
void gw_proxy_transfer_done(struct gw_loop *l, CURL *easy, CURLcode result);
/* Resumes transfers whose buffers drained during MHD_run. */
void gw_proxy_run_unpauses(struct gw_loop *l);
/* Clients that hung up before their request was whole, once libmicrohttpd
 * has read what they sent: see client_hangup. */
void gw_proxy_check_hangups(struct gw_loop *l);
/* Fires due timers; returns the next deadline (monotonic ms) or UINT64_MAX. */
uint64_t gw_proxy_run_timers(struct gw_loop *l, uint64_t now_ms);
/* A module process died: answers every request still waiting on it. */
void gw_proxy_module_died(struct gw_loop *l);
/* Shutdown deadline: ends every request at once. */
void gw_proxy_abort_all(struct gw_loop *l);

#endif
