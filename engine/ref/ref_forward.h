/* ref_forward.h: the CPU reference forward pass (fp32) of the model architectures in
 * model/model.h, used as the oracle for the Vulkan forward pass and the engine's
 * generations.
 *
 * ref_model_create() dequantizes every weight once (quant_dequantize) into float arrays;
 * the forward pass follows the math written in model.h literally, built from the small
 * ops of ref_ops.h. It keeps one sequence's keys and values in a contiguous cache that
 * grows as tokens are appended. Memory: 4 bytes per weight (the real Gemma 3 270M takes
 * ~1.1 GB) plus 4 * n_layer * (n_embd_k + n_embd_v) bytes per cached token.
 *
 * Threads: matrix products are split over output rows with pthreads when they are large
 * (env VKLLM_REF_THREADS sets the count; default: online CPUs, at most 8). Results do not
 * depend on the thread count (each output element is one thread's fixed-order sum).
 *
 * Not thread-safe: one ref_model is used by one thread at a time. Module prefix: ref_. */
#ifndef VKL_REF_FORWARD_H
#define VKL_REF_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "model/gguf.h"
#include "model/model.h"

typedef struct ref_model ref_model;

/* Loads config and weights (model_load + dequantization). `file` may be closed after
 * this returns: the ref_model keeps its own float copies. */
vkllm_status ref_model_create(const gguf_file *file, ref_model **out);
void ref_model_destroy(ref_model *model);

const model_config *ref_model_config(const ref_model *model);
/* Tokens currently in the KV cache (the next position to be written). */
uint32_t ref_model_n_past(const ref_model *model);

/* Empties the KV cache (n_past = 0). */
void ref_reset(ref_model *model);

/* Runs `n` tokens at positions start_pos .. start_pos+n-1 and appends them to the KV
 * cache. start_pos must be <= n_past: a smaller start_pos first drops the cached tokens
 * from start_pos on (rewind), so re-evaluating a suffix is allowed.
 * logits: all_logits ? n x n_vocab (row t for token t) : n_vocab (the last token only).
 * Errors: n == 0, a token id outside [0, n_vocab), start_pos > n_past ->
 * VKLLM_ERR_INVALID_ARGUMENT (the cache is unchanged). */
vkllm_status ref_forward(ref_model *model, const int32_t *tokens, uint32_t n, uint32_t start_pos,
                         bool all_logits, float *logits);

/* Greedy decoding: resets, runs the prompt, then appends up to n_new argmax tokens to
 * out (stopping after a token that is in stop[0..n_stop), which is written too).
 * *n_out = tokens written. Ties in argmax go to the lowest id. */
vkllm_status ref_generate_greedy(ref_model *model, const int32_t *prompt, uint32_t n_prompt,
                                 uint32_t n_new, const int32_t *stop, uint32_t n_stop, int32_t *out,
                                 uint32_t *n_out);

/* Index of the largest value (lowest index on ties; NaNs are never chosen). */
int32_t ref_argmax(const float *values, uint32_t n);

#endif
