/* k_sample.h: host-side launchers of the GPU sampling kernels. shaders/topk.comp: per row the
 * k largest logits (sorted, ids and values) and the statistics that let the CPU sampler
 * finish the job from those k candidates (sampler_sample_candidates in sampler.h), so a
 * step reads back k values per row instead of the whole vocabulary.
 *
 * Contract (as k_ops.h: f32, row-major, a binding's range 0 means "to the end", outputs
 * are made writable here, a zero-sized op records nothing):
 *   logits          [rows][row_stride] f32, n_cols used per row (readonly);
 *   inv_temperature [rows] f32, finite (1 / T of the row; pass 1 for greedy rows);
 *   ids             [rows][k] int32: sorted by value descending, equal values lower id
 *                   first, NaN below -inf, -0.0 == +0.0; -1 past n_cols;
 *   values          [rows][k] f32: the logits of those ids; -inf past n_cols;
 *   stats           [rows][4] f32: {max, sum exp(x - max), sum exp((x - max) * inv_t), 0}
 *                   over the non-NaN logits of the row.
 * 1 <= k <= K_TOPK_MAX. One workgroup per row; about 5 reads of the row (4 radix passes
 * and a gather), 4 more when ties straddle the k-th value. Module prefix: k_. */
#ifndef VKL_K_SAMPLE_H
#define VKL_K_SAMPLE_H

#include <stdint.h>

#include "gpu/gpu.h"

#define K_TOPK_MAX 256u

vkllm_status k_topk(gpu_context *ctx, gpu_cmd *cmd, gpu_binding logits, gpu_binding inv_temperature,
                    gpu_binding ids, gpu_binding values, gpu_binding stats, uint32_t rows,
                    uint32_t n_cols, uint32_t row_stride, uint32_t k);

/* Greedy sampling (shaders/argmax.comp): result[r] = the index of row r's largest value
 * (lowest index among equals, NaN never wins, -1 when every value is NaN).
 *   logits   [rows][row_stride] f32, n_cols used per row (readonly);
 *   result   [rows] int32.
 * With scratch (partials of k_argmax_partials_bytes(rows, n_cols) bytes and counters of
 * rows * 4 bytes, zero before the first call and left zero by every call), rows of more
 * than K_ARGMAX_CHUNK values are cut into chunks read by one workgroup each, the last
 * one to finish merging them (one dispatch); without (bindings with no buffer), one
 * workgroup walks each row. */
#define K_ARGMAX_CHUNK 1024u
uint64_t k_argmax_partials_bytes(uint32_t rows, uint32_t n_cols);
vkllm_status k_argmax(gpu_context *ctx, gpu_cmd *cmd, gpu_binding logits, gpu_binding result,
                      gpu_binding partials, gpu_binding counters, uint32_t rows, uint32_t n_cols,
                      uint32_t row_stride);

#endif
