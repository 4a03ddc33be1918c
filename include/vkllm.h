/* vkllm.h: the public C API of vkllm, an LLM inference and serving engine on Vulkan.
 *
 * An engine loads one GGUF model onto one Vulkan device and serves any number of
 * requests at once (continuous batching over a paged KV cache). Typical use:
 *
 *     vkllm_engine_options opts;
 *     vkllm_engine_options_default(&opts);
 *     vkllm_engine *engine;
 *     if (vkllm_engine_create("model.gguf", &opts, &engine) != VKLLM_OK)
 *         fprintf(stderr, "%s\n", vkllm_last_error());
 *
 *     vkllm_request_params req;
 *     vkllm_request_params_default(&req);
 *     req.prompt = "The capital of France is";
 *     req.sampling.max_tokens = 32;
 *     req.on_event = my_callback;          // streamed text, called on the engine thread
 *     vkllm_request_id id;
 *     vkllm_submit(engine, &req, &id);
 *     vkllm_wait(engine, id, NULL);         // or poll, or cancel
 *     vkllm_engine_destroy(engine);
 *
 * Threads: the engine runs its own loop thread, which alone touches the GPU. Every
 * function here may be called from any thread, concurrently, except that
 * vkllm_engine_destroy must not race with other calls on the same engine. Callbacks
 * run on the engine thread: keep them short and never call vkllm_engine_destroy or
 * vkllm_wait from inside one (submit and cancel are fine).
 *
 * Errors: every fallible call returns a vkllm_status; vkllm_last_error() gives the
 * message of the calling thread's last failure. A failing request never stops the
 * engine or the other requests. */
#ifndef VKLLM_H
#define VKLLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vkllm_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "0.1.0" */
VKLLM_API const char *vkllm_version(void);

/* ---------------------------------------------------------------- engine */

typedef struct vkllm_engine vkllm_engine;

/* A zero field takes its default (so a zeroed struct works too); strings and the
 * progress callback are used during vkllm_engine_create only. */
typedef struct vkllm_engine_options {
    const char *device;        /* index or name substring; NULL: VKLLM_DEVICE or the best */
    float kv_memory_fraction;  /* of the device memory left after weights (default 0.9) */
    uint32_t kv_blocks;        /* explicit KV block count; 0: from kv_memory_fraction */
    uint32_t block_size;       /* tokens per KV block (default 16) */
    uint32_t max_running_seqs; /* sequences in one step (default 64) */
    uint32_t max_step_tokens;  /* token budget of one step (default 512) */
    uint32_t max_context;      /* longest sequence, prompt + output (default: model, capped 8192) */
    uint32_t max_waiting; /* queued requests before submit returns VKLLM_ERR_BUSY (default 256) */
    uint32_t swap_blocks; /* host blocks for preemption by swap (0: recompute only) */
    bool enable_prefix_caching; /* default true */
    const char *chat_template;  /* NULL: from the model; "gemma", "llama3", "chatml", ... */
    bool validation;            /* Vulkan validation layer (debugging) */
    /* Model loading progress, on the creating thread: stages "reading", "tokenizer",
     * "device", "weights", "ready"; fraction of the whole load in [0, 1], never
     * decreasing, 1 at "ready". */
    void (*on_progress)(const char *stage, double fraction, void *user);
    void *progress_user;
} vkllm_engine_options;

VKLLM_API void vkllm_engine_options_default(vkllm_engine_options *options);

/* Loads the model and starts the engine thread. */
VKLLM_API vkllm_status vkllm_engine_create(const char *model_path,
                                           const vkllm_engine_options *options, vkllm_engine **out);
/* Cancels every request (their callbacks get VKLLM_FINISH_CANCELLED), stops the
 * thread and frees everything. */
VKLLM_API void vkllm_engine_destroy(vkllm_engine *engine);

typedef struct vkllm_model_info {
    char name[128];                           /* general.name or the file name */
    char architecture[32];                    /* "llama", "qwen2", "qwen3", "gemma3" */
    char device[256];                         /* the Vulkan device in use */
    uint32_t n_vocab, n_ctx, n_layer, n_embd; /* n_ctx: max_context in effect */
    uint64_t weight_bytes, kv_bytes;
    uint32_t kv_blocks, block_size;
    char chat_template[16]; /* the chat format in use: "gemma", "llama3", "chatml", ... */
} vkllm_model_info;
VKLLM_API vkllm_status vkllm_engine_model_info(vkllm_engine *engine, vkllm_model_info *out);

/* ---------------------------------------------------------------- requests */

typedef uint64_t vkllm_request_id;

typedef struct vkllm_sampling {
    float temperature;        /* 0: greedy (default 1) */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off */
    float presence_penalty;   /* 0: off */
    float frequency_penalty;  /* 0: off */
    uint64_t seed;            /* used when has_seed */
    bool has_seed;            /* false: a seed is drawn per request */
    uint32_t max_tokens;      /* default 256 */
    bool ignore_eos;
    const char *const *stop; /* stop strings, n_stop of them; not included in the output */
    uint32_t n_stop;
    const int32_t *stop_token_ids;
    uint32_t n_stop_token_ids;
    uint32_t logprobs;    /* top-N log-probabilities per token (0: none) */
    uint32_t n;           /* parallel samples (default 1) */
    uint32_t beam_width;  /* > 1: beam search instead of sampling */
    float length_penalty; /* beam search (default 1) */
} vkllm_sampling;

typedef enum vkllm_finish_reason {
    VKLLM_FINISH_NONE = 0,  /* still running */
    VKLLM_FINISH_STOP,      /* EOS/end-of-turn token, stop string or stop token id */
    VKLLM_FINISH_LENGTH,    /* max_tokens or the context limit */
    VKLLM_FINISH_CANCELLED, /* vkllm_cancel or engine shutdown */
    VKLLM_FINISH_ERROR,     /* see vkllm_event.error */
} vkllm_finish_reason;

typedef struct vkllm_token_logprob {
    int32_t token;
    float logprob;
} vkllm_token_logprob;

/* One event of a request's stream. */
typedef struct vkllm_event {
    vkllm_request_id request;
    uint32_t index;   /* which of the n samples / beams */
    const char *text; /* new text (valid UTF-8, possibly empty); valid during the call */
    size_t text_len;
    const int32_t *tokens; /* the token ids this event covers */
    size_t n_tokens;
    const vkllm_token_logprob *logprobs; /* n_tokens * (logprobs + 1): chosen token first */
    vkllm_finish_reason finish;          /* non-NONE on the last event of this sample */
    vkllm_status error;                  /* with VKLLM_FINISH_ERROR */
    const char *error_message;
} vkllm_event;

typedef void (*vkllm_event_fn)(const vkllm_event *event, void *user);

typedef struct vkllm_chat_message {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} vkllm_chat_message;

typedef struct vkllm_request_params {
    /* exactly one of: */
    const char *prompt;           /* text, tokenized with the model's tokenizer */
    const int32_t *prompt_tokens; /* token ids */
    size_t n_prompt_tokens;
    const vkllm_chat_message *messages; /* rendered with the chat template */
    size_t n_messages;

    bool add_special; /* BOS etc. for text prompts (default true; chat: template decides) */
    vkllm_sampling sampling;
    vkllm_event_fn on_event; /* may be NULL: poll instead */
    void *user;
    uint64_t cache_salt; /* prefix-cache isolation key (0: shared) */
} vkllm_request_params;

VKLLM_API void vkllm_request_params_default(vkllm_request_params *params);

/* Queues a request. VKLLM_ERR_BUSY: max_waiting requests already wait; VKLLM_ERR_TOO_LONG:
 * the prompt can never fit (longer than max_context, or more blocks than the KV cache
 * less its 1% watermark); VKLLM_ERR_INVALID_ARGUMENT: a parameter out of range (named,
 * e.g. "sampling.top_p"; also n > max_running_seqs). A failure found later (on the engine
 * thread) finishes the request with VKLLM_FINISH_ERROR and a message. Text prompts are tokenized
 * with control tokens written in the text parsed (as llama.cpp and Hugging Face do); messages are
 * rendered with the chat template and a generation prompt. Everything params points to is copied
 * before submit returns. An accepted request always ends with exactly one last event per
 * sample (finish != VKLLM_FINISH_NONE). */
VKLLM_API vkllm_status vkllm_submit(vkllm_engine *engine, const vkllm_request_params *params,
                                    vkllm_request_id *id);

/* Cancels a request at any time; its KV blocks are freed at once (before the next
 * step). VKLLM_ERR_NOT_FOUND if it has already finished and been collected. */
VKLLM_API vkllm_status vkllm_cancel(vkllm_engine *engine, vkllm_request_id id);

/* The state of a request so far: all text produced (sample 0), token counts and the
 * finish reason. `text` is malloc'ed (caller frees) when text != NULL. */
typedef struct vkllm_request_result {
    vkllm_finish_reason finish;
    uint32_t prompt_tokens, completion_tokens, cached_prompt_tokens;
    double time_to_first_token_s, total_time_s;
    char *text;
    size_t text_len;
} vkllm_request_result;

/* Non-blocking: the current state. */
VKLLM_API vkllm_status vkllm_poll(vkllm_engine *engine, vkllm_request_id id,
                                  vkllm_request_result *out);
/* Blocks until the request finishes; then forgets it (a later poll is NOT_FOUND).
 * out may be NULL. When it returns, no callback of this request runs or will run.
 * Finished requests are kept for poll/wait until collected, but at most the 1024 most
 * recently finished uncollected ones: callers that only use callbacks need not wait. */
VKLLM_API vkllm_status vkllm_wait(vkllm_engine *engine, vkllm_request_id id,
                                  vkllm_request_result *out);
VKLLM_API void vkllm_request_result_free(vkllm_request_result *result);

/* ---------------------------------------------------------------- tokenizer */

/* Token ids of `len` bytes of text (malloc'ed, caller frees; NULL when none).
 * add_special: BOS/EOS as the model's tokenizer says; parse_special: control tokens
 * written in the text become their ids. */
VKLLM_API vkllm_status vkllm_tokenize(vkllm_engine *engine, const char *text, size_t len,
                                      bool add_special, bool parse_special, int32_t **tokens,
                                      size_t *n_tokens);
/* Text of token ids (malloc'ed, NUL-terminated, caller frees); special tokens are not
 * rendered. len may be NULL. */
VKLLM_API vkllm_status vkllm_detokenize(vkllm_engine *engine, const int32_t *tokens,
                                        size_t n_tokens, char **text, size_t *len);
/* Chat messages rendered with the model's template (malloc'ed, caller frees). */
VKLLM_API vkllm_status vkllm_apply_chat_template(vkllm_engine *engine,
                                                 const vkllm_chat_message *messages,
                                                 size_t n_messages, bool add_generation_prompt,
                                                 char **text);

/* ---------------------------------------------------------------- statistics */

typedef struct vkllm_stats {
    uint32_t requests_running, requests_waiting, requests_swapped;
    uint64_t requests_finished, requests_cancelled, requests_failed;
    uint64_t prompt_tokens_total, generation_tokens_total;
    uint32_t tokens_waiting, tokens_running;
    uint32_t kv_blocks_total, kv_blocks_used, kv_blocks_free, kv_blocks_cached;
    double kv_usage; /* used / total, 0..1 */
    double kv_waste; /* (allocated slots - live tokens) / allocated slots */
    uint64_t prefix_cache_queries, prefix_cache_hits; /* in tokens */
    uint64_t preemptions_total;
    uint64_t steps_total;
    /* Forward passes: tokens computed and time spent, by step kind. A step that computed
     * any prompt tokens counts as prefill (exact for one stream), else as decode. Wall
     * time is measured around each step; GPU time from timestamps (0 if unavailable). */
    uint64_t prefill_tokens_computed, decode_tokens_computed;
    double prefill_time_s, decode_time_s;
    double prefill_gpu_time_s, decode_gpu_time_s;
} vkllm_stats;

VKLLM_API vkllm_status vkllm_get_stats(vkllm_engine *engine, vkllm_stats *out);

#ifdef __cplusplus
}
#endif
#endif
