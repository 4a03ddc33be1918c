/* srv_response.h: OpenAI-style response bodies built with jansson.
 *
 * Non-streaming bodies (text_completion / chat.completion), streaming chunks
 * (text_completion / chat.completion.chunk), usage, logprobs in both of OpenAI's
 * shapes, error objects, the model list and vLLM's tokenizer replies. Every string
 * put into JSON goes through srv_json_text, which replaces invalid UTF-8 with U+FFFD
 * (a token can end inside a multi-byte character). Non-finite logprobs become
 * -9999.0 as in vLLM. Token strings for logprobs come from a callback so these
 * builders need no engine. */
#ifndef SRV_RESPONSE_H
#define SRV_RESPONSE_H

#include <jansson.h>

#include "server/srv_request.h"

/* The text of one token id (malloc'ed). */
typedef bool (*srv_token_text_fn)(void *ctx, int32_t token, char **text, size_t *len);

/* What builders need to know about the request. */
typedef struct srv_response_ctx {
    srv_endpoint endpoint;
    const char *id; /* "cmpl-..." / "chatcmpl-..." */
    long long created;
    const char *model;
    bool want_logprobs;
    uint32_t top_logprobs;
    uint32_t logprob_cols; /* stride of the logprob arrays (engine logprobs + 1) */
    srv_token_text_fn token_text;
    void *token_text_ctx;
} srv_response_ctx;

typedef struct srv_usage {
    uint64_t prompt_tokens, completion_tokens, cached_tokens;
} srv_usage;

/* The generated part of one choice, as accumulated from events. */
typedef struct srv_choice_result {
    const char *text; /* the whole choice text (echoed prompt included) */
    size_t text_len;
    size_t echo_len; /* leading bytes of text that are the echoed prompt */
    const int32_t *tokens;
    size_t n_tokens;
    const vkllm_token_logprob *logprobs; /* n_tokens * logprob_cols, or NULL */
    vkllm_finish_reason finish;
} srv_choice_result;

json_t *srv_json_text(const char *s, size_t len);
const char *srv_finish_reason_name(vkllm_finish_reason finish);

/* {"error": {"message", "type", "param", "code"}} */
json_t *srv_error_json(const srv_error *err);
json_t *srv_usage_json(const srv_usage *usage);

/* Logprobs of tokens [0, n) in the endpoint's shape: completions
 * {"tokens", "token_logprobs", "top_logprobs", "text_offset"} with offsets from
 * text_offset; chat {"content": [{"token", "logprob", "bytes", "top_logprobs"}]}. */
json_t *srv_logprobs_json(const srv_response_ctx *rc, const int32_t *tokens, size_t n,
                          const vkllm_token_logprob *logprobs, size_t text_offset);

/* The complete non-streaming body. */
json_t *srv_build_response(const srv_response_ctx *rc, const srv_choice_result *choices,
                           size_t n_choices, const srv_usage *usage);

/* One streaming chunk for one choice. role_chunk: chat's opening chunk
 * (delta.role = "assistant"). usage_null: stream_options.include_usage asks every
 * chunk to carry "usage": null. */
json_t *srv_build_chunk(const srv_response_ctx *rc, uint32_t choice, const char *text,
                        size_t text_len, bool role_chunk, const int32_t *tokens, size_t n_tokens,
                        const vkllm_token_logprob *logprobs, size_t text_offset,
                        vkllm_finish_reason finish, bool usage_null);
/* The final usage chunk: "choices": [] and "usage". */
json_t *srv_build_usage_chunk(const srv_response_ctx *rc, const srv_usage *usage);

/* GET /v1/models */
json_t *srv_build_models(const char *model, long long created, uint32_t max_model_len);

/* Serializes compactly and frees the value; NULL when out of memory. */
char *srv_json_dump_free(json_t *value);

#endif
