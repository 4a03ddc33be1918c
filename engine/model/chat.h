/* chat.h: rendering a conversation into a model's prompt text (its chat template).
 *
 * vkllm does not run Jinja. It knows the formats below and renders them exactly as their
 * official templates do (tests compare against jinja2 renderings of those templates):
 *   gemma  -- <bos><start_of_turn>user\n...<end_of_turn>\n, assistant written "model",
 *             text trimmed, a system message prefixed (+ "\n\n") to the first user turn;
 *   llama3 -- <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\ntext<|eot_id|>,
 *             text trimmed (Meta-Llama-3-Instruct's template);
 *   chatml -- <|im_start|>role\ntext<|im_end|>\n (the generic ChatML template; Qwen's
 *             default system prompt is not injected);
 *   llama2 -- <s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] answer </s> (Llama 2 chat /
 *             Mistral); it has no generation prompt: the prompt already ends in [/INST];
 *   plain  -- vkllm's own fallback: "role: text\n" per message, generation prompt
 *             "assistant:"; used for unknown templates.
 * The rendered text contains the BOS text itself where the template writes it: tokenize it
 * with tok_encode(..., add_special=false, parse_special=true).
 * Module prefix: chat_. */
#ifndef VKL_CHAT_H
#define VKL_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"
#include "model/tokenizer.h"

typedef enum chat_format {
    CHAT_FORMAT_PLAIN = 0,
    CHAT_FORMAT_GEMMA,
    CHAT_FORMAT_LLAMA3,
    CHAT_FORMAT_CHATML,
    CHAT_FORMAT_LLAMA2,
} chat_format;

typedef struct chat_template {
    chat_format format;
    /* Non-empty when detection fell back to plain (the caller decides whether to print it). */
    char warning[256];
} chat_template;

typedef struct chat_message {
    const char *role; /* "system", "user", "assistant" (other roles pass through as text) */
    const char *content;
} chat_message;

/* Name of a format: "gemma", "llama3", "chatml", "llama2", "plain". */
const char *chat_format_name(chat_format format);

/* Detects the format from the Jinja text of tokenizer.chat_template (may be NULL) by
 * distinctive substrings ("<start_of_turn>", "<|start_header_id|>", "<|im_start|>",
 * "[INST]"); when that is absent or unrecognised, from special tokens in the vocabulary
 * (tok may be NULL); else plain with a warning. Never fails. */
chat_template chat_template_detect(const char *jinja, const tok_tokenizer *tok);

/* Convenience: detection from a GGUF's tokenizer.chat_template and its vocabulary. */
chat_template chat_template_from_gguf(const gguf_file *gguf, const tok_tokenizer *tok);

/* The format named `name` (the --chat-template flag): one of the names above.
 * An unknown name is VKLLM_ERR_INVALID_ARGUMENT with a message listing the valid names. */
vkllm_status chat_template_by_name(const char *name, chat_template *out);

/* Renders msgs[0..n). *out is malloc'd, NUL-terminated; the caller frees it.
 * Gemma and llama2 require user/assistant alternation after an optional leading system
 * message (VKLLM_ERR_INVALID_ARGUMENT naming the message otherwise), as their templates do. */
vkllm_status chat_render(const chat_template *tmpl, const chat_message *msgs, size_t n,
                         bool add_generation_prompt, char **out);

#endif
