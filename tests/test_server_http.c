/* test_server_http.c: the HTTP layer (srv_http.c, srv_stream.c) against a scripted fake
 * backend, so the engine's failure paths can be forced: submit refusing with TOO_LONG,
 * INVALID_ARGUMENT or BUSY, and a request failing mid-answer (FINISH_ERROR), streamed
 * and not. The fake emits its events from a thread of its own, as the engine does.
 * A raw-socket client checks status lines, headers and exact bodies. */
// links: server common
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/srv_server.h"

/* ---------------------------------------------------------------- fake backend */

typedef struct fake_request {
    vkllm_request_params params;
    const char *script; /* "ok" or "fail" */
    vkllm_request_id id;
} fake_request;

static int cancels;
static char fake_error[256];

static void *fake_run(void *arg) {
    fake_request *r = arg;
    static const int32_t toks[] = {11, 12};
    vkllm_event ev = {
        .request = r->id, .text = "Hel", .text_len = 3, .tokens = toks, .n_tokens = 1};
    r->params.on_event(&ev, r->params.user);
    if (!strcmp(r->script, "fail")) {
        ev = (vkllm_event){.request = r->id,
                           .text = "",
                           .finish = VKLLM_FINISH_ERROR,
                           .error = VKLLM_ERR_DEVICE_LOST,
                           .error_message = "device lost"};
    } else {
        ev = (vkllm_event){.request = r->id,
                           .text = "lo",
                           .text_len = 2,
                           .tokens = toks + 1,
                           .n_tokens = 1,
                           .finish = VKLLM_FINISH_STOP};
    }
    r->params.on_event(&ev, r->params.user);
    free(r);
    return NULL;
}

static vkllm_status fake_model_info(void *ctx, vkllm_model_info *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "fake");
    out->n_vocab = 100;
    out->n_ctx = 64;
    return VKLLM_OK;
}

static vkllm_status fake_submit(void *ctx, const vkllm_request_params *p, vkllm_request_id *id) {
    static vkllm_request_id next = 1;
    const char *prompt = p->prompt ? p->prompt : "ok";
    if (!strcmp(prompt, "toolong")) {
        snprintf(fake_error, sizeof fake_error, "prompt of 99 tokens exceeds 64");
        return VKLLM_ERR_TOO_LONG;
    }
    if (!strcmp(prompt, "invalid")) {
        snprintf(fake_error, sizeof fake_error, "sampling.top_k: out of range");
        return VKLLM_ERR_INVALID_ARGUMENT;
    }
    if (!strcmp(prompt, "busy")) {
        snprintf(fake_error, sizeof fake_error, "queue full");
        return VKLLM_ERR_BUSY;
    }
    fake_request *r = calloc(1, sizeof *r);
    r->params = *p;
    r->script = !strcmp(prompt, "fail") ? "fail" : "ok";
    r->id = *id = next++;
    pthread_t t;
    pthread_create(&t, NULL, fake_run, r);
    pthread_detach(t);
    return VKLLM_OK;
}

static vkllm_status fake_cancel(void *ctx, vkllm_request_id id) {
    __atomic_add_fetch(&cancels, 1, __ATOMIC_SEQ_CST);
    return VKLLM_ERR_NOT_FOUND; /* the scripted requests always finish on their own */
}

static vkllm_status fake_wait(void *ctx, vkllm_request_id id, vkllm_request_result *out) {
    memset(out, 0, sizeof *out);
    out->prompt_tokens = 3;
    return VKLLM_OK;
}

static vkllm_status fake_detokenize(void *ctx, const int32_t *t, size_t n, char **text,
                                    size_t *len) {
    *text = strdup("x");
    *len = 1;
    return VKLLM_OK;
}

static vkllm_status fake_stats(void *ctx, vkllm_stats *out) {
    memset(out, 0, sizeof *out);
    return VKLLM_OK;
}

static const char *fake_last_error(void *ctx) {
    return fake_error;
}

static const srv_backend fake_backend = {
    .model_info = fake_model_info,
    .submit = fake_submit,
    .cancel = fake_cancel,
    .wait = fake_wait,
    .detokenize = fake_detokenize,
    .get_stats = fake_stats,
    .last_error = fake_last_error,
};

/* ---------------------------------------------------------------- client */

static srv_server *server;

static void start(void) {
    srv_config cfg;
    srv_config_default(&cfg);
    cfg.port = 0;
    char err[256];
    cr_assert_eq(srv_server_start(&cfg, &fake_backend, NULL, &server, err, sizeof err), VKLLM_OK,
                 "%s", err);
}

static void stop(void) {
    srv_server_destroy(server);
    server = NULL;
}

/* POSTs body to path; returns the whole response (malloc'ed) and its status. */
static char *post(const char *path, const char *body, int *status) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(srv_server_port(server))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char head[512];
    snprintf(head, sizeof head,
             "POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: "
             "application/json\r\nContent-Length: %zu\r\n\r\n",
             path, strlen(body));
    cr_assert(write(fd, head, strlen(head)) > 0 && write(fd, body, strlen(body)) > 0);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t n;
    while ((n = read(fd, buf + len, cap - len - 1)) > 0)
        len += (size_t)n;
    buf[len] = 0;
    close(fd);
    cr_assert_eq(sscanf(buf, "HTTP/1.1 %d", status), 1, "no status line: %s", buf);
    return buf;
}

static json_t *body_json(const char *response) {
    const char *b = strstr(response, "\r\n\r\n");
    cr_assert(b);
    json_t *j = json_loads(b + 4, 0, NULL);
    cr_assert(j, "body is not JSON: %s", b + 4);
    return j;
}

static const char *error_field(json_t *j, const char *key) {
    json_t *v = json_object_get(json_object_get(j, "error"), key);
    return json_is_string(v) ? json_string_value(v) : "";
}

/* ---------------------------------------------------------------- tests */

Test(server_http, whole_answer_from_engine_events, .init = start, .fini = stop) {
    int status;
    char *r = post("/v1/completions", "{\"prompt\": \"ok\", \"max_tokens\": 2}", &status);
    cr_assert_eq(status, 200, "%s", r);
    json_t *j = body_json(r);
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(c, "text")), "Hello");
    cr_assert_str_eq(json_string_value(json_object_get(c, "finish_reason")), "stop");
    json_t *u = json_object_get(j, "usage");
    cr_assert_eq(json_integer_value(json_object_get(u, "prompt_tokens")), 3);
    cr_assert_eq(json_integer_value(json_object_get(u, "completion_tokens")), 2);
    json_decref(j);
    free(r);
}

Test(server_http, stream_is_exact_sse, .init = start, .fini = stop) {
    int status;
    char *r = post("/v1/chat/completions",
                   "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"stream\": true}",
                   &status);
    cr_assert_eq(status, 200);
    cr_assert(strstr(r, "Content-Type: text/event-stream"), "%s", r);
    const char *role = strstr(r, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}");
    const char *hel = strstr(r, "\"delta\":{\"content\":\"Hel\"}");
    const char *lo = strstr(r, "\"delta\":{\"content\":\"lo\"},\"logprobs\":null,"
                               "\"finish_reason\":\"stop\"");
    const char *done = strstr(r, "data: [DONE]\n\n");
    cr_assert(role && hel && lo && done, "%s", r);
    cr_assert(role < hel && hel < lo && lo < done, "events out of order: %s", r);
    free(r);
}

Test(server_http, submit_refusals_map_to_statuses, .init = start, .fini = stop) {
    int status;
    char *r = post("/v1/completions", "{\"prompt\": \"toolong\"}", &status);
    json_t *j = body_json(r);
    cr_assert_eq(status, 400);
    cr_assert_str_eq(error_field(j, "code"), "context_length_exceeded");
    cr_assert_str_eq(error_field(j, "param"), "prompt");
    cr_assert(strstr(error_field(j, "message"), "exceeds 64"), "%s", error_field(j, "message"));
    json_decref(j);
    free(r);

    r = post("/v1/completions", "{\"prompt\": \"invalid\"}", &status);
    j = body_json(r);
    cr_assert_eq(status, 400);
    cr_assert(strstr(error_field(j, "message"), "top_k"));
    json_decref(j);
    free(r);

    r = post("/v1/completions", "{\"prompt\": \"busy\"}", &status);
    cr_assert_eq(status, 503);
    cr_assert(strstr(r, "Retry-After: 1\r\n"), "%s", r);
    free(r);

    r = post("/v1/completions", "{\"prompt\": [5, 100]}", &status);
    j = body_json(r);
    cr_assert_eq(status, 400, "token 100 is outside the fake's vocabulary of 100");
    cr_assert_str_eq(error_field(j, "param"), "prompt");
    json_decref(j);
    free(r);
}

Test(server_http, engine_failure_mid_answer, .init = start, .fini = stop) {
    int status;
    char *r = post("/v1/completions", "{\"prompt\": \"fail\"}", &status);
    json_t *j = body_json(r);
    cr_assert_eq(status, 500);
    cr_assert_str_eq(error_field(j, "type"), "server_error");
    cr_assert(strstr(error_field(j, "message"), "device lost"));
    json_decref(j);
    free(r);

    r = post("/v1/completions", "{\"prompt\": \"fail\", \"stream\": true}", &status);
    cr_assert_eq(status, 200, "a stream has already started when the failure comes");
    const char *fin = strstr(r, "\"finish_reason\":\"error\"");
    const char *err = strstr(r, "data: {\"error\":{\"message\":\"choice 0 failed: device lost\"");
    const char *done = strstr(r, "data: [DONE]");
    cr_assert(fin && err && done && fin < err && err < done, "%s", r);
    free(r);
    cr_assert_eq(cancels, 0, "finished requests are never cancelled");
}
