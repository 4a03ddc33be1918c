/* k_ops.h: host-side launchers of the small transformer ops (shaders/rms_norm.comp,
 * softmax.comp, rope.comp, glu.comp, eltwise.comp).
 *
 * Each launcher checks its sizes, picks the shader variant (shared-memory or
 * subgroup reduction, workgroup size), fills the push constants and records one
 * dispatch into `cmd`; nothing runs until gpu_cmd_submit. Errors found here
 * (bad sizes, a binding too small for the tensor) are returned at once with a
 * message naming the op and the argument; the command buffer is left as it was.
 *
 * Conventions shared by every launcher:
 *   - all tensors are f32 (positions int32), contiguous, row-major, starting at
 *     the binding's offset; "[rows][n]" means row r is at floats r*n .. r*n+n-1;
 *   - a binding's range 0 means "to the end of the buffer"; it must cover the
 *     tensor (checked);
 *   - outputs get writable = true here, whatever the caller set;
 *   - in place is allowed where stated: pass the same binding (same buffer,
 *     offset and range) as input and output; other partial overlaps are not;
 *   - a zero-sized op (rows == 0 or n == 0) records nothing and returns OK.
 * CPU references with the same contracts: engine/ref/ref_ops.h.
 * Module prefix for launchers: k_. */
#ifndef VKL_K_OPS_H
#define VKL_K_OPS_H

#include <stdint.h>

#include "gpu/gpu.h"

/* How a workgroup reduction is done. AUTO picks SUBGROUP when the device
 * reports subgroup arithmetic in compute shaders, else SHARED; the explicit
 * values exist so tests and benchmarks can run both paths on one device. */
typedef enum k_reduce_path {
    K_REDUCE_AUTO = 0,
    K_REDUCE_SHARED,   /* shared-memory tree: Vulkan 1.1 core only */
    K_REDUCE_SUBGROUP, /* subgroupAdd/subgroupMax + shared memory across subgroups */
} k_reduce_path;

/* ---------------------------------------------------------- elementwise */

/* out[i] = a[i] + b[i], i < n. a, b, out: [n]. In place: out = a or out = b. */
vkllm_status k_add(gpu_context *ctx, gpu_cmd *cmd, gpu_binding a, gpu_binding b, gpu_binding out,
                   uint32_t n);

/* out[i] = x[i] * scale, then, if softcap > 0, softcap * tanh(out[i] / softcap).
 * x, out: [n]. In place: out = x. */
vkllm_status k_scale_softcap(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding out,
                             uint32_t n, float scale, float softcap);
/* Shorthands: out = x * scale; out = cap * tanh(x / cap) (cap > 0). */
vkllm_status k_scale(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding out, uint32_t n,
                     float scale);
vkllm_status k_softcap(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding out, uint32_t n,
                       float cap);

typedef enum k_glu_kind {
    K_GLU_SILU,      /* out = silu(g) * u, silu(z) = z / (1 + e^-z)  (llama, qwen) */
    K_GLU_GELU_TANH, /* out = gelu_tanh(g) * u                        (gemma)  */
} k_glu_kind;

/* Gated linear unit: out[r*n + i] = act(g[r*g_stride + i]) * u[r*u_stride + i].
 * Strides in floats, >= n. Separate buffers: g, u [rows][n], strides n. One
 * fused gate|up buffer gu [rows][2n]: g = gu, u = gu at byte offset +4n (must
 * meet min_storage_offset_alignment) or use k_glu_fused. out: [rows][n]. */
vkllm_status k_glu(gpu_context *ctx, gpu_cmd *cmd, k_glu_kind kind, gpu_binding g, gpu_binding u,
                   gpu_binding out, uint32_t rows, uint32_t n, uint32_t g_stride,
                   uint32_t u_stride);
/* gu: [rows][2n], gate in the first half of each row, up in the second. */
vkllm_status k_glu_fused(gpu_context *ctx, gpu_cmd *cmd, k_glu_kind kind, gpu_binding gu,
                         gpu_binding out, uint32_t rows, uint32_t n);

/* ---------------------------------------------------------- row reductions */

/* out[r][i] = x[r][i] / sqrt(mean_j x[r][j]^2 + eps) * weight[i].
 * x, out: [rows][n]; weight: [n] shared by all rows. In place: out = x.
 * Per-head q/k norm (Qwen3, Gemma 3): rows = n_tokens * n_heads, n = head_dim. */
vkllm_status k_rms_norm(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding weight,
                        gpu_binding out, uint32_t rows, uint32_t n, float eps);

/* Fused post-norm residual (Gemma 3): residual[r][i] += rmsnorm(x[r])[i] * weight[i].
 * x, residual: [rows][n] (must not overlap); weight: [n]. */
vkllm_status k_rms_norm_add(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding weight,
                            gpu_binding residual, uint32_t rows, uint32_t n, float eps);

/* Softmax per row: y = x * scale; if softcap > 0, y = softcap * tanh(y / softcap);
 * out = exp(y - max y) / sum exp(y - max y). x, out: [rows][n]. In place: out = x.
 * -inf inputs are masked: 0 whatever scale and softcap (the mask applies after
 * capping); a row of only -inf gives all 0. */
vkllm_status k_softmax(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding out,
                       uint32_t rows, uint32_t n, float scale, float softcap);

/* RMSNorm over a strided view of per-token rows, for per-head Q/K norms read and
 * written in place inside a fused QKV activation [n_tokens][n_q + n_k + n_v]:
 * row (t, h) for t < n_tokens, h < heads is the n floats starting at
 * x_offset + t * x_stride + h * n of x (out_offset + t * out_stride + h * n of out).
 * Strides in floats, 0 meaning heads * n (dense), else >= heads * n. Offsets in floats
 * from the binding's start. weight: [n], or with w_split > 0 [2][n]: heads h >= w_split
 * use row 1 (stacked q_norm | k_norm: Q and K heads of a token in one dispatch).
 * In place: the same binding, offset and stride for x and out. fused_add: out is the
 * residual (out += normed), which must not overlap x. */
typedef struct k_rms_norm_args {
    gpu_binding x, weight, out;
    uint32_t n_tokens;
    uint32_t heads; /* rows per token; 0 means 1 */
    uint32_t n;     /* floats per row */
    uint32_t x_stride, x_offset, out_stride, out_offset;
    uint32_t w_split; /* 0: every head uses weight[0 .. n) */
    float eps;
    bool fused_add;
    k_reduce_path path;
} k_rms_norm_args;
vkllm_status k_rms_norm_ex(gpu_context *ctx, gpu_cmd *cmd, const k_rms_norm_args *args);

/* The same with an explicit reduction path (tests run both on one device). */
vkllm_status k_rms_norm_path(gpu_context *ctx, gpu_cmd *cmd, k_reduce_path path, bool fused_add,
                             gpu_binding x, gpu_binding weight, gpu_binding out, uint32_t rows,
                             uint32_t n, float eps);
vkllm_status k_softmax_path(gpu_context *ctx, gpu_cmd *cmd, k_reduce_path path, gpu_binding x,
                            gpu_binding out, uint32_t rows, uint32_t n, float scale, float softcap);

/* ---------------------------------------------------------- RoPE */

typedef enum k_rope_mode {
    K_ROPE_NORM, /* pairs (x[2i], x[2i+1]): llama (GGUF-permuted Q/K) */
    K_ROPE_NEOX, /* pairs (x[i], x[i + n_rot/2]): qwen2/3, gemma */
} k_rope_mode;

/* Rotary embedding (docs/gguf-and-models.md §4.4) of x: [n_tokens][n_heads][head_dim]
 * into out (same shape; in place: out = x). positions: int32 [n_tokens].
 * freq_factors: f32 [n_rot/2] (rope_freqs.weight), or a binding with
 * buffer == NULL for none. theta_i = pos * freq_scale * freq_base^(-2i/n_rot) / ff_i.
 * Requires head_dim even, n_rot even, 0 < n_rot <= head_dim; dims >= n_rot copied. */
vkllm_status k_rope(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding positions,
                    gpu_binding freq_factors, gpu_binding out, uint32_t n_tokens, uint32_t n_heads,
                    uint32_t head_dim, uint32_t n_rot, float freq_base, float freq_scale,
                    k_rope_mode mode);

/* k_rope over a strided view: head h of token t starts at float
 * x_offset + t * x_stride + h * head_dim of x (out_offset + t * out_stride + h * head_dim
 * of out). Strides in floats, 0 meaning n_heads * head_dim, else >= n_heads * head_dim;
 * offsets in floats from the binding's start. With a fused QKV row (Q heads, then K
 * heads, then V), n_heads = n_head + n_head_kv, offset 0 and stride n_q + n_k + n_v
 * rotates Q and K in one dispatch. In place: the same binding, offset and stride. */
typedef struct k_rope_args {
    gpu_binding x, positions, freq_factors, out; /* freq_factors.buffer NULL: none */
    uint32_t n_tokens, n_heads, head_dim, n_rot;
    uint32_t x_stride, x_offset, out_stride, out_offset;
    float freq_base, freq_scale;
    k_rope_mode mode;
} k_rope_args;
vkllm_status k_rope_ex(gpu_context *ctx, gpu_cmd *cmd, const k_rope_args *args);

#endif
