/* srv_backend_vkllm.c: the server's backend table bound to the public vkllm API.
 * Each entry forwards its arguments unchanged; ctx is the vkllm_engine *. Kept in
 * its own file so tests that use a fake backend never link the engine. */
#include "server/srv_backend.h"

static vkllm_status be_model_info(void *ctx, vkllm_model_info *out) {
    return vkllm_engine_model_info(ctx, out);
}
static vkllm_status be_submit(void *ctx, const vkllm_request_params *params, vkllm_request_id *id) {
    return vkllm_submit(ctx, params, id);
}
static vkllm_status be_cancel(void *ctx, vkllm_request_id id) {
    return vkllm_cancel(ctx, id);
}
static vkllm_status be_wait(void *ctx, vkllm_request_id id, vkllm_request_result *out) {
    return vkllm_wait(ctx, id, out);
}
static vkllm_status be_tokenize(void *ctx, const char *text, size_t len, bool add_special,
                                bool parse_special, int32_t **tokens, size_t *n_tokens) {
    return vkllm_tokenize(ctx, text, len, add_special, parse_special, tokens, n_tokens);
}
static vkllm_status be_detokenize(void *ctx, const int32_t *tokens, size_t n_tokens, char **text,
                                  size_t *len) {
    return vkllm_detokenize(ctx, tokens, n_tokens, text, len);
}
static vkllm_status be_apply_chat_template(void *ctx, const vkllm_chat_message *messages,
                                           size_t n_messages, bool add_generation_prompt,
                                           char **text) {
    return vkllm_apply_chat_template(ctx, messages, n_messages, add_generation_prompt, text);
}
static vkllm_status be_get_stats(void *ctx, vkllm_stats *out) {
    return vkllm_get_stats(ctx, out);
}
static const char *be_last_error(void *ctx) {
    return vkllm_last_error();
}

const srv_backend srv_backend_vkllm = {
    .params_default = vkllm_request_params_default,
    .model_info = be_model_info,
    .submit = be_submit,
    .cancel = be_cancel,
    .wait = be_wait,
    .tokenize = be_tokenize,
    .detokenize = be_detokenize,
    .apply_chat_template = be_apply_chat_template,
    .get_stats = be_get_stats,
    .last_error = be_last_error,
};
