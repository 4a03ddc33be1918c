/* k_rope_kv.h: RoPE fused with the KV-cache write (shaders/rope_kv.comp): one dispatch
 * that rotates the Q and K heads of fused QKV rows in place and stores the rotated K and
 * the V of every token at its slot of the paged cache. It replaces k_rope_ex over the
 * Q and K heads followed by k_attn_kv_write (same results: the angle code is shared with
 * rope.comp through rope.glsl, and the cache gets the fp16 of the same rotated values).
 *
 * Row of token t: x_offset + t * x_stride floats into `qkv`, holding n_head Q heads, then
 * kv->n_head_kv K heads, then kv->n_head_kv V heads, each kv->head_dim floats (the runner's
 * fused activation; head_dim_v must equal head_dim, as the paged cache requires anyway).
 * Slots (int32 [n_tokens]) < 0 or past num_blocks * block_size skip the cache writes;
 * the Q/K rotation happens for every token. Contract of the rotation: k_rope_ex in
 * exec/k_ops.h (modes, freq_factors, n_rot <= head_dim, dims past n_rot unchanged).
 * Errors (VKLLM_ERR_INVALID_ARGUMENT, message naming the field): bad layout or rope
 * parameters, bindings too small, a grid beyond the device limits.
 * Module prefix: k_. */
#ifndef VKL_K_ROPE_KV_H
#define VKL_K_ROPE_KV_H

#include <stdint.h>

#include "exec/k_attention.h"
#include "exec/k_ops.h"
#include "gpu/gpu.h"

typedef struct k_rope_kv_args {
    gpu_binding qkv; /* f32 rows (read and written) */
    uint32_t n_tokens;
    uint32_t n_head;              /* Q heads of a row (rotated, not cached) */
    uint32_t x_stride, x_offset;  /* floats; stride 0 = (n_head + 2 n_head_kv) * head_dim */
    gpu_binding positions;        /* int32 [n_tokens] */
    gpu_binding freq_factors;     /* f32 [n_rot / 2], or buffer NULL for none */
    gpu_binding slots;            /* int32 [n_tokens] */
    gpu_binding k_cache, v_cache; /* this layer's K and V arrays (written) */
    uint32_t n_rot;
    float freq_base, freq_scale;
    k_rope_mode mode;
} k_rope_kv_args;

vkllm_status k_rope_kv_write(gpu_context *ctx, gpu_cmd *cmd, const k_attn_kv_layout *kv,
                             const k_rope_kv_args *args);

#endif
