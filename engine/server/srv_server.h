/* srv_server.h: the OpenAI-compatible HTTP server of `vkllm serve`.
 *
 * One libmicrohttpd daemon, one thread per connection: a connection thread parses
 * its request, submits to the engine through the srv_backend table and then either
 * waits for the whole answer or streams server-sent events from a response callback
 * fed by the job's event queue (srv_job.h). The engine thread only enqueues.
 *
 * Endpoints: POST /v1/completions, /v1/chat/completions, /tokenize, /detokenize;
 * GET /v1/models, /health, /metrics, / (the chat page). With an api_key, the /v1
 * endpoints, /tokenize and /detokenize need "Authorization: Bearer <key>" (else 401).
 *
 * Shutdown (srv_server_shutdown): stop accepting connections, answer new requests on
 * open connections with 503, let running requests finish until the deadline, then
 * cancel the rest and wait for their streams to close. */
#ifndef SRV_SERVER_H
#define SRV_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/srv_backend.h"

typedef struct srv_config {
    const char *host; /* numeric address or name; default "127.0.0.1" */
    uint16_t port;    /* 0: any free port (see srv_server_port) */
    const char *api_key;
    const char *served_model_name; /* NULL: the model's name */
    uint32_t max_waiting;          /* 503 when the engine has this many waiting (0: no limit) */
    size_t max_body;               /* bytes; larger bodies get 413 */
    uint32_t max_connections;
    bool log_requests; /* one line per request on stderr */
} srv_config;

void srv_config_default(srv_config *config);

typedef struct srv_server srv_server;

/* Starts listening. On failure returns the status with vkllm's per-thread message
 * set (backend failures) or a message in errbuf. */
vkllm_status srv_server_start(const srv_config *config, const srv_backend *backend,
                              void *backend_ctx, srv_server **out, char *errbuf,
                              size_t errbuf_size);
uint16_t srv_server_port(const srv_server *server);
/* Requests (streams included) still in flight. */
uint32_t srv_server_active(srv_server *server);
/* Graceful stop: see the file comment; waits at most deadline_s for running requests
 * before cancelling them. Returns the number of requests it had to cancel. */
uint32_t srv_server_shutdown(srv_server *server, double deadline_s);
/* Stops (shutting down first with a zero deadline if needed) and frees. */
void srv_server_destroy(srv_server *server);

#endif
