/* srv_http.c: the libmicrohttpd daemon: request bodies, limits, authentication,
 * routing, and the endpoints that need no generation (models, health, metrics,
 * tokenizer, chat page). Generation lives in srv_stream.c.
 *
 * The daemon runs one thread per connection, so handlers may block. A request's
 * body is collected into its per-request context (up to max_body; beyond it the
 * rest is read and dropped, then 413 is answered, so clients that send the whole
 * body before reading still see the status). */
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/splitmix.h"
#include "server/srv_chat_page.h"
#include "server/srv_internal.h"
#include "server/srv_job.h"
#include "server/srv_response.h"

/* Bodies larger than this many times max_body are not even drained: the connection
 * is answered at once and closed. */
#define SRV_DRAIN_FACTOR 8

void srv_config_default(srv_config *config) {
    memset(config, 0, sizeof *config);
    config->host = "127.0.0.1";
    config->port = 8000;
    config->max_waiting = 256;
    config->max_body = 8u << 20;
    config->max_connections = 1024;
}

/* ---------------------------------------------------------------- helpers */

void srv_make_id(const char *prefix, char *out, size_t size) {
    static atomic_uint_fast64_t counter;
    static uint64_t salt;
    if (!salt) { /* racy first use is harmless: any value is an acceptable salt */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        salt = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^
               ((uint64_t)getpid() << 40) ^ 1;
    }
    uint64_t x = atomic_fetch_add(&counter, 1) + salt;
    /* splitmix64: distinct counters give distinct, scrambled ids */
    uint64_t z = vkl_splitmix64(&x);
    snprintf(out, size, "%s%016llx%08llx", prefix, (unsigned long long)z,
             (unsigned long long)(x & 0xffffffffu));
}

bool srv_client_gone(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

enum MHD_Result srv_respond(srv_server *s, struct MHD_Connection *conn, int status,
                            const char *content_type, char *body, size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, body ? body : "", body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    if (content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    if (status == 503) MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (atomic_load(&s->shutting_down))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    srv_metrics_http(&s->metrics, status);
    enum MHD_Result r = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return r;
}

enum MHD_Result srv_respond_json(srv_server *s, struct MHD_Connection *conn, int status,
                                 json_t *value) {
    char *body = srv_json_dump_free(value);
    if (!body) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                  "\"server_error\",\"param\":null,\"code\":null}}";
        return srv_respond(s, conn, 500, "application/json", strdup(oom), sizeof oom - 1);
    }
    return srv_respond(s, conn, status, "application/json", body, strlen(body));
}

enum MHD_Result srv_respond_error(srv_server *s, struct MHD_Connection *conn,
                                  const srv_error *err) {
    if (s->config.log_requests)
        fprintf(stderr, "vkllm serve: %d %s\n", err->http_status, err->message);
    return srv_respond_json(s, conn, err->http_status, srv_error_json(err));
}

/* ---------------------------------------------------------------- simple endpoints */

static enum MHD_Result handle_models(srv_server *s, struct MHD_Connection *conn) {
    return srv_respond_json(s, conn, 200,
                            srv_build_models(s->model_name, s->started_unix, s->info.n_ctx));
}

static enum MHD_Result handle_health(srv_server *s, struct MHD_Connection *conn) {
    if (atomic_load(&s->shutting_down)) {
        srv_error err;
        srv_error_set(&err, 503, NULL, "shutting_down", "the server is shutting down");
        return srv_respond_error(s, conn, &err);
    }
    return srv_respond(s, conn, 200, NULL, NULL, 0);
}

static enum MHD_Result handle_metrics(srv_server *s, struct MHD_Connection *conn) {
    vkllm_stats stats;
    bool have = s->backend->get_stats(s->backend_ctx, &stats) == VKLLM_OK;
    char *text = srv_metrics_format(&s->metrics, have ? &stats : NULL, s->model_name);
    if (!text) {
        srv_error err;
        srv_error_set(&err, 500, NULL, NULL, "out of memory");
        return srv_respond_error(s, conn, &err);
    }
    return srv_respond(s, conn, 200, "text/plain; version=0.0.4; charset=utf-8", text,
                       strlen(text));
}

static enum MHD_Result handle_page(srv_server *s, struct MHD_Connection *conn) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        srv_chat_page_html_len, (void *)srv_chat_page_html, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    srv_metrics_http(&s->metrics, 200);
    enum MHD_Result r = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result backend_error(srv_server *s, struct MHD_Connection *conn, const char *what,
                                     const char *param) {
    srv_error err;
    srv_error_set(&err, 400, param, NULL, "%s: %s", what, s->backend->last_error(s->backend_ctx));
    return srv_respond_error(s, conn, &err);
}

static enum MHD_Result handle_tokenize(srv_server *s, struct MHD_Connection *conn, const char *body,
                                       size_t len) {
    srv_tokenize_request req;
    srv_error err;
    if (!srv_parse_tokenize(body, len, &req, &err)) return srv_respond_error(s, conn, &err);
    char *templated = NULL;
    const char *text = req.prompt;
    size_t text_len = req.prompt_len;
    if (req.messages) {
        if (s->backend->apply_chat_template(s->backend_ctx, req.messages, req.n_messages,
                                            req.add_generation_prompt, &templated) != VKLLM_OK) {
            srv_tokenize_request_free(&req);
            return backend_error(s, conn, "cannot apply the chat template", "messages");
        }
        text = templated;
        text_len = strlen(templated);
    }
    int32_t *tokens = NULL;
    size_t n = 0;
    vkllm_status st = s->backend->tokenize(s->backend_ctx, text, text_len, req.add_special_tokens,
                                           true, &tokens, &n);
    free(templated);
    if (st != VKLLM_OK) {
        srv_tokenize_request_free(&req);
        return backend_error(s, conn, "cannot tokenize", req.messages ? "messages" : "prompt");
    }
    json_t *arr = json_array(), *strs = req.return_token_strs ? json_array() : json_null();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, json_integer(tokens[i]));
        if (req.return_token_strs) {
            char *t = NULL;
            size_t tl = 0;
            if (s->backend->detokenize(s->backend_ctx, &tokens[i], 1, &t, &tl) != VKLLM_OK)
                t = NULL, tl = 0;
            json_array_append_new(strs, srv_json_text(t ? t : "", tl));
            free(t);
        }
    }
    free(tokens);
    srv_tokenize_request_free(&req);
    return srv_respond_json(s, conn, 200,
                            json_pack("{s:I,s:I,s:o,s:o}", "count", (json_int_t)n, "max_model_len",
                                      (json_int_t)s->info.n_ctx, "tokens", arr, "token_strs",
                                      strs));
}

static enum MHD_Result handle_detokenize(srv_server *s, struct MHD_Connection *conn,
                                         const char *body, size_t len) {
    int32_t *tokens;
    size_t n;
    srv_error err;
    if (!srv_parse_detokenize(body, len, &tokens, &n, &err) ||
        !srv_check_token_ids(tokens, n, s->info.n_vocab, "tokens", &err)) {
        free(tokens);
        return srv_respond_error(s, conn, &err);
    }
    char *text = NULL;
    size_t text_len = 0;
    vkllm_status st =
        n ? s->backend->detokenize(s->backend_ctx, tokens, n, &text, &text_len) : VKLLM_OK;
    free(tokens);
    if (st != VKLLM_OK) return backend_error(s, conn, "cannot detokenize", "tokens");
    json_t *v = json_pack("{s:o}", "prompt", srv_json_text(text ? text : "", text_len));
    free(text);
    return srv_respond_json(s, conn, 200, v);
}

/* ---------------------------------------------------------------- routing */

typedef enum srv_route {
    ROUTE_NONE,
    ROUTE_COMPLETIONS,
    ROUTE_CHAT,
    ROUTE_MODELS,
    ROUTE_TOKENIZE,
    ROUTE_DETOKENIZE,
    ROUTE_HEALTH,
    ROUTE_METRICS,
    ROUTE_PAGE,
} srv_route;

static const struct {
    const char *path, *method;
    srv_route route;
    bool needs_key;
} routes[] = {
    {"/v1/completions", "POST", ROUTE_COMPLETIONS, true},
    {"/v1/chat/completions", "POST", ROUTE_CHAT, true},
    {"/v1/models", "GET", ROUTE_MODELS, true},
    {"/tokenize", "POST", ROUTE_TOKENIZE, true},
    {"/detokenize", "POST", ROUTE_DETOKENIZE, true},
    {"/health", "GET", ROUTE_HEALTH, false},
    {"/metrics", "GET", ROUTE_METRICS, false},
    {"/", "GET", ROUTE_PAGE, false},
    {"/index.html", "GET", ROUTE_PAGE, false},
};

/* Per-request state kept across MHD's calls for one request. */
typedef struct srv_request_ctx {
    srv_route route;
    char *body;
    size_t len, cap;
    bool too_large;
} srv_request_ctx;

/* Constant-time comparison so response timing does not reveal the key. */
static bool key_matches(const char *given, const char *key) {
    size_t gl = strlen(given), kl = strlen(key);
    unsigned diff = (unsigned)(gl ^ kl);
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned char)(key[i] ^ given[i < gl ? i : 0]);
    return diff == 0 && gl == kl;
}

static bool authorized(srv_server *s, struct MHD_Connection *conn) {
    if (!s->api_key) return true;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    while (*h == ' ')
        h++;
    return key_matches(h, s->api_key);
}

static enum MHD_Result simple_error(srv_server *s, struct MHD_Connection *conn, int status,
                                    const char *code, const char *fmt, const char *arg) {
    srv_error err;
    srv_error_set(&err, status, NULL, code, fmt, arg);
    if (status == 401) snprintf(err.code, sizeof err.code, "invalid_api_key");
    return srv_respond_error(s, conn, &err);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    srv_server *s = cls;
    srv_request_ctx *rq = *con_cls;
    if (!rq) {                            /* first call: headers only */
        if (!strcmp(method, "OPTIONS")) { /* CORS preflight */
            struct MHD_Response *resp =
                MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, "*");
            MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
            MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                    "Authorization, Content-Type");
            enum MHD_Result r = MHD_queue_response(conn, MHD_HTTP_NO_CONTENT, resp);
            MHD_destroy_response(resp);
            return r;
        }
        int found = -1;
        bool path_known = false;
        for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
            if (!strcmp(url, routes[i].path)) {
                path_known = true;
                if (!strcmp(method, routes[i].method)) found = (int)i;
            }
        if (found < 0) {
            if (path_known)
                return simple_error(s, conn, 405, NULL, "method %s is not allowed here", method);
            return simple_error(s, conn, 404, NULL, "no such endpoint: %s", url);
        }
        if (routes[found].needs_key && !authorized(s, conn))
            return simple_error(s, conn, 401, NULL, "%s",
                                "invalid or missing API key (Authorization: Bearer <key>)");
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl &&
            strtoull(cl, NULL, 10) > (unsigned long long)s->config.max_body * SRV_DRAIN_FACTOR)
            return simple_error(s, conn, 413, NULL, "request body of %s bytes is too large", cl);
        rq = calloc(1, sizeof *rq);
        if (!rq) return MHD_NO;
        rq->route = routes[found].route;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_data_size) { /* a piece of the body */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (rq->too_large || rq->len + n > s->config.max_body) {
            rq->too_large = true;
            rq->len += n; /* counted, not kept */
            if (rq->len > s->config.max_body * SRV_DRAIN_FACTOR) return MHD_NO;
            return MHD_YES;
        }
        if (rq->len + n + 1 > rq->cap) {
            size_t cap = rq->cap ? rq->cap : 4096;
            while (cap < rq->len + n + 1)
                cap *= 2;
            char *b = realloc(rq->body, cap);
            if (!b) return MHD_NO;
            rq->body = b;
            rq->cap = cap;
        }
        memcpy(rq->body + rq->len, upload_data, n);
        rq->len += n;
        rq->body[rq->len] = 0;
        return MHD_YES;
    }
    /* the whole request is in */
    if (rq->too_large) {
        char size[32];
        snprintf(size, sizeof size, "%zu", rq->len);
        srv_error err;
        srv_error_set(&err, 413, NULL, NULL, "request body of %s bytes exceeds the limit of %zu",
                      size, s->config.max_body);
        return srv_respond_error(s, conn, &err);
    }
    const char *body = rq->body ? rq->body : "";
    switch (rq->route) {
    case ROUTE_COMPLETIONS:
        return srv_handle_generation(s, conn, SRV_ENDPOINT_COMPLETIONS, body, rq->len);
    case ROUTE_CHAT:
        return srv_handle_generation(s, conn, SRV_ENDPOINT_CHAT, body, rq->len);
    case ROUTE_MODELS:
        return handle_models(s, conn);
    case ROUTE_TOKENIZE:
        return handle_tokenize(s, conn, body, rq->len);
    case ROUTE_DETOKENIZE:
        return handle_detokenize(s, conn, body, rq->len);
    case ROUTE_HEALTH:
        return handle_health(s, conn);
    case ROUTE_METRICS:
        return handle_metrics(s, conn);
    case ROUTE_PAGE:
        return handle_page(s, conn);
    default:
        return MHD_NO;
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    srv_request_ctx *rq = *con_cls;
    if (rq) {
        free(rq->body);
        free(rq);
    }
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    srv_server *s = cls;
    if (!s->config.log_requests) return;
    fprintf(stderr, "vkllm serve (microhttpd): ");
    vfprintf(stderr, fmt, ap);
}

/* ---------------------------------------------------------------- lifecycle */

vkllm_status srv_server_start(const srv_config *config, const srv_backend *backend,
                              void *backend_ctx, srv_server **out, char *errbuf,
                              size_t errbuf_size) {
    *out = NULL;
    srv_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return VKLLM_ERR_OUT_OF_HOST_MEMORY;
    }
    s->config = *config;
    s->host = strdup(config->host ? config->host : "127.0.0.1");
    s->api_key = config->api_key && *config->api_key ? strdup(config->api_key) : NULL;
    s->config.host = s->host;
    s->config.api_key = s->api_key;
    s->config.served_model_name = NULL;
    s->backend = backend;
    s->backend_ctx = backend_ctx;
    s->started_unix = (long long)time(NULL);
    srv_metrics_init(&s->metrics);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    atomic_init(&s->shutting_down, false);

    vkllm_status st = backend->model_info(backend_ctx, &s->info);
    if (st != VKLLM_OK) {
        snprintf(errbuf, errbuf_size, "cannot read the model information: %s",
                 backend->last_error(backend_ctx));
        srv_server_destroy(s);
        return st;
    }
    snprintf(s->model_name, sizeof s->model_name, "%s",
             config->served_model_name && *config->served_model_name ? config->served_model_name
                                                                     : s->info.name);

    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", config->port);
    int gai = getaddrinfo(s->host, port, &hints, &ai);
    if (gai) {
        snprintf(errbuf, errbuf_size, "cannot resolve host '%s': %s", s->host, gai_strerror(gai));
        srv_server_destroy(s);
        return VKLLM_ERR_INVALID_ARGUMENT;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, config->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(config->max_connections ? config->max_connections : 1024),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_LISTENING_ADDRESS_REUSE,
        (unsigned)1, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        snprintf(errbuf, errbuf_size, "cannot listen on %s:%u (address in use or not allowed?)",
                 s->host, config->port);
        srv_server_destroy(s);
        return VKLLM_ERR_IO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : config->port;
    *out = s;
    return VKLLM_OK;
}

uint16_t srv_server_port(const srv_server *s) {
    return s->port;
}

uint32_t srv_server_active(srv_server *s) {
    pthread_mutex_lock(&s->lock);
    uint32_t n = s->active;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static bool wait_idle(srv_server *s, double seconds) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    double whole = (double)(long long)seconds;
    deadline.tv_sec += (time_t)whole;
    deadline.tv_nsec += (long)((seconds - whole) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&s->lock);
    while (s->active > 0)
        if (pthread_cond_timedwait(&s->idle, &s->lock, &deadline)) break;
    bool idle = s->active == 0;
    pthread_mutex_unlock(&s->lock);
    return idle;
}

uint32_t srv_server_shutdown(srv_server *s, double deadline_s) {
    if (atomic_exchange(&s->shutting_down, true) || !s->daemon) return 0;
    MHD_socket listen_fd = MHD_quiesce_daemon(s->daemon);
    if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
    if (wait_idle(s, deadline_s)) return 0;
    uint32_t cancelled = srv_cancel_all(s);
    wait_idle(s, 10.0);
    return cancelled;
}

void srv_server_destroy(srv_server *s) {
    if (!s) return;
    if (s->daemon) {
        srv_server_shutdown(s, 0);
        MHD_stop_daemon(s->daemon);
    }
    srv_metrics_destroy(&s->metrics);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    free(s->host);
    free(s->api_key);
    free(s);
}
