/* srv_backend.h: the engine as the server sees it, a table of functions.
 *
 * The server reaches the engine only through this table, whose default
 * (srv_backend_vkllm, in srv_backend_vkllm.c) forwards each entry to the public API
 * in include/vkllm.h. Tests of the HTTP layer pass a scripted fake instead, so they
 * run without a GPU or a model. The entries keep the vkllm.h contracts: on_event
 * callbacks arrive on another thread, submit/cancel may be called from any thread,
 * wait collects a finished request. */
#ifndef SRV_BACKEND_H
#define SRV_BACKEND_H

#include "vkllm.h"

typedef struct srv_backend {
    /* Engine defaults for the fields the server does not set (may be NULL: zeros). */
    void (*params_default)(vkllm_request_params *params);
    vkllm_status (*model_info)(void *ctx, vkllm_model_info *out);
    vkllm_status (*submit)(void *ctx, const vkllm_request_params *params, vkllm_request_id *id);
    vkllm_status (*cancel)(void *ctx, vkllm_request_id id);
    vkllm_status (*wait)(void *ctx, vkllm_request_id id, vkllm_request_result *out);
    vkllm_status (*tokenize)(void *ctx, const char *text, size_t len, bool add_special,
                             bool parse_special, int32_t **tokens, size_t *n_tokens);
    vkllm_status (*detokenize)(void *ctx, const int32_t *tokens, size_t n_tokens, char **text,
                               size_t *len);
    vkllm_status (*apply_chat_template)(void *ctx, const vkllm_chat_message *messages,
                                        size_t n_messages, bool add_generation_prompt, char **text);
    vkllm_status (*get_stats)(void *ctx, vkllm_stats *out);
    /* The message of the calling thread's last failure. */
    const char *(*last_error)(void *ctx);
} srv_backend;

/* Forwards to include/vkllm.h; ctx is the vkllm_engine *. */
extern const srv_backend srv_backend_vkllm;

#endif
