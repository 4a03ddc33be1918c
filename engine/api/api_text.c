/* api_text.c: tokenize, detokenize and chat-template rendering of the public API.
 *
 * These run on the caller's thread without going through the engine thread: the
 * tokenizer and the chat template are immutable after creation (tokenizer.h), so
 * concurrent calls are safe and never wait behind a model step. */
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"

vkllm_status vkllm_tokenize(vkllm_engine *e, const char *text, size_t len, bool add_special,
                            bool parse_special, int32_t **tokens, size_t *n_tokens) {
    if (!e || !tokens || !n_tokens)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_tokenize: %s is NULL",
                        !e        ? "engine"
                        : !tokens ? "tokens"
                                  : "n_tokens");
    *tokens = NULL;
    *n_tokens = 0;
    if (!text && len)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_tokenize: text is NULL with len %zu",
                        len);
    return tok_encode(e->model.tok, text ? text : "", len, add_special, parse_special, tokens,
                      n_tokens);
}

vkllm_status vkllm_detokenize(vkllm_engine *e, const int32_t *tokens, size_t n_tokens, char **text,
                              size_t *len) {
    if (!e || !text)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_detokenize: %s is NULL",
                        !e ? "engine" : "text");
    *text = NULL;
    if (len) *len = 0;
    if (!tokens && n_tokens)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "vkllm_detokenize: tokens is NULL with n_tokens %zu", n_tokens);
    size_t vocab = tok_vocab_size(e->model.tok);
    for (size_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || (size_t)tokens[i] >= vocab)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "vkllm_detokenize: tokens[%zu] = %d is outside the vocabulary [0, %zu)",
                            i, tokens[i], vocab);
    size_t out_len = 0;
    /* Special tokens (BOS, turn markers) are not rendered, as the streamed text. */
    vkllm_status s = tok_decode(e->model.tok, tokens, n_tokens, false, text, &out_len);
    if (s == VKLLM_OK && len) *len = out_len;
    return s;
}

vkllm_status vkllm_apply_chat_template(vkllm_engine *e, const vkllm_chat_message *messages,
                                       size_t n_messages, bool add_generation_prompt, char **text) {
    if (!e || !text)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_apply_chat_template: %s is NULL",
                        !e ? "engine" : "text");
    *text = NULL;
    if (!messages && n_messages)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "vkllm_apply_chat_template: messages is NULL with n_messages %zu",
                        n_messages);
    chat_message *msgs = calloc(n_messages ? n_messages : 1, sizeof *msgs);
    if (!msgs) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "vkllm_apply_chat_template");
    for (size_t i = 0; i < n_messages; i++) {
        if (!messages[i].role || !messages[i].content) {
            free(msgs);
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "vkllm_apply_chat_template: messages[%zu].%s is NULL", i,
                            messages[i].role ? "content" : "role");
        }
        msgs[i].role = messages[i].role;
        msgs[i].content = messages[i].content;
    }
    vkllm_status s = chat_render(&e->model.chat, msgs, n_messages, add_generation_prompt, text);
    free(msgs);
    return s;
}
