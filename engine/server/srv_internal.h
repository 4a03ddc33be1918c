/* srv_internal.h: the server object shared by srv_http.c (daemon, routing, simple
 * endpoints) and srv_stream.c (generation endpoints, streamed or not).
 *
 * Invariants: `active` counts generation requests between submission and the end of
 * their answer; each is on the `gens` list while counted, and leaves it (under
 * `lock`) only after its engine requests are drained, so shutdown can cancel any
 * listed one safely. */
#ifndef SRV_INTERNAL_H
#define SRV_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "server/srv_metrics.h"
#include "server/srv_request.h"
#include "server/srv_server.h"

typedef struct srv_gen srv_gen;

struct srv_server {
    srv_config config;
    char *host, *api_key; /* owned copies of the config strings */
    char model_name[256];
    const srv_backend *backend;
    void *backend_ctx;
    vkllm_model_info info;
    long long started_unix;
    struct MHD_Daemon *daemon;
    uint16_t port;
    srv_metrics metrics;

    pthread_mutex_t lock;
    pthread_cond_t idle; /* signalled when `active` drops */
    uint32_t active;
    srv_gen *gens;
    atomic_bool shutting_down;
    bool stopped;
};

/* Queues a response with body (malloc'ed; ownership passes), adding CORS and, while
 * shutting down, Connection: close. */
enum MHD_Result srv_respond(srv_server *server, struct MHD_Connection *conn, int status,
                            const char *content_type, char *body, size_t len);
/* The OpenAI error object with its status (503 adds Retry-After, 401
 * WWW-Authenticate). */
enum MHD_Result srv_respond_error(srv_server *server, struct MHD_Connection *conn,
                                  const srv_error *err);
enum MHD_Result srv_respond_json(srv_server *server, struct MHD_Connection *conn, int status,
                                 json_t *value);

/* POST /v1/completions and /v1/chat/completions with the complete body. */
enum MHD_Result srv_handle_generation(srv_server *server, struct MHD_Connection *conn,
                                      srv_endpoint endpoint, const char *body, size_t len);

/* Cancels every listed generation request; returns how many. */
uint32_t srv_cancel_all(srv_server *server);

/* Whether the peer of conn has closed its end (checked without blocking). */
bool srv_client_gone(struct MHD_Connection *conn);

/* "cmpl-<hex>" etc.: unique within the process, unpredictable across runs. */
void srv_make_id(const char *prefix, char *out, size_t size);

#endif
