/* srv_request.h: OpenAI-style request bodies parsed and validated into engine
 * parameters.
 *
 * srv_parse_generation() turns the JSON body of POST /v1/completions or
 * /v1/chat/completions into a srv_gen_request whose sampling fields are ready for
 * vkllm_submit. Validation follows the OpenAI API: a field of the wrong type or out
 * of range fills a srv_error naming the parameter (HTTP 400); unknown fields are
 * ignored; JSON null counts as absent. The request owns every string and array it
 * points to; srv_gen_request_free releases them. The parser needs no engine: limits
 * that depend on the model (vocabulary, context) are checked by the caller. */
#ifndef SRV_REQUEST_H
#define SRV_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vkllm.h"

/* An OpenAI-style error: HTTP status and the fields of {"error": {...}}. */
typedef struct srv_error {
    int http_status;
    char message[512];
    char type[48];  /* "invalid_request_error", ... */
    char param[64]; /* "" -> null */
    char code[48];  /* "" -> null */
} srv_error;

/* Fills err and returns false, so a validator can `return srv_error_set(...)`. */
bool srv_error_set(srv_error *err, int http_status, const char *param, const char *code,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

typedef enum srv_endpoint {
    SRV_ENDPOINT_COMPLETIONS,
    SRV_ENDPOINT_CHAT,
} srv_endpoint;

/* One prompt of a completions request: text or token ids. */
typedef struct srv_prompt {
    char *text; /* NULL when tokens are given */
    size_t text_len;
    int32_t *tokens;
    size_t n_tokens;
} srv_prompt;

/* Most prompts one completions request may batch. */
#define SRV_MAX_PROMPTS 64
/* Most parallel samples (n) and stop strings per request. */
#define SRV_MAX_N 128
#define SRV_MAX_STOP 64
#define SRV_MAX_LOGPROBS 20

typedef struct srv_gen_request {
    srv_endpoint endpoint;
    char *model; /* NULL: not given */
    char *user;

    /* completions: one or more prompts (each becomes its own engine request) */
    srv_prompt *prompts;
    size_t n_prompts;
    bool echo;

    /* chat */
    vkllm_chat_message *messages; /* role and content strings owned here */
    size_t n_messages;

    /* sampling; stop points into stop_strings. max_tokens_given tells whether the
     * client chose a limit (the server picks a default otherwise). */
    vkllm_sampling sampling;
    bool max_tokens_given;
    char **stop_strings;
    int32_t *stop_token_ids;

    /* logprobs: want_logprobs (completions: logprobs given; chat: logprobs true) and
     * top_logprobs alternatives per token (0..SRV_MAX_LOGPROBS). */
    bool want_logprobs;
    uint32_t top_logprobs;

    bool stream;
    bool include_usage; /* stream_options.include_usage */
} srv_gen_request;

/* Parses body (len bytes, need not be NUL-terminated). On failure returns false with
 * err filled (400 for malformed JSON and invalid parameters) and out freed. */
bool srv_parse_generation(srv_endpoint endpoint, const char *body, size_t len, srv_gen_request *out,
                          srv_error *err);
void srv_gen_request_free(srv_gen_request *req);

/* POST /tokenize: {"prompt": str} or {"messages": [...]}, vLLM's shape. */
typedef struct srv_tokenize_request {
    char *prompt; /* exactly one of prompt and messages */
    size_t prompt_len;
    vkllm_chat_message *messages;
    size_t n_messages;
    bool add_special_tokens;    /* default: true for prompt, false for messages */
    bool add_generation_prompt; /* messages only, default true */
    bool return_token_strs;
} srv_tokenize_request;

bool srv_parse_tokenize(const char *body, size_t len, srv_tokenize_request *out, srv_error *err);
void srv_tokenize_request_free(srv_tokenize_request *req);

/* POST /detokenize: {"tokens": [int, ...]}. */
bool srv_parse_detokenize(const char *body, size_t len, int32_t **tokens, size_t *n_tokens,
                          srv_error *err);

/* The error for a token id outside [0, n_vocab) in an already-parsed list, or true. */
bool srv_check_token_ids(const int32_t *tokens, size_t n, uint32_t n_vocab, const char *param,
                         srv_error *err);

#endif
