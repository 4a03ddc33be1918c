/* ref_ops.h: CPU reference implementations of the small transformer ops.
 *
 * These are the oracle for the GPU kernels of engine/exec/k_ops.c and the
 * building blocks of the CPU forward pass. They follow the math of
 * docs/gguf-and-models.md (§4.3, §4.4, §5.4) literally, in plain C, with
 * double accumulation for reductions (sums of squares, softmax sums) and
 * double evaluation of transcendental functions, so that they are a more
 * accurate reference than any f32 kernel.
 *
 * Layout conventions (all tensors f32, row-major, contiguous):
 *   - "rows x n": row r occupies x[r*n .. r*n + n - 1];
 *   - RoPE input: [n_tokens][n_heads][head_dim], positions: int32 [n_tokens].
 * Every function accepts out == input (in place) where it says so; other
 * partial overlaps are not allowed. Nothing here allocates or fails. */
#ifndef VKL_REF_OPS_H
#define VKL_REF_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------- scalar functions */

/* silu(z) = z / (1 + e^-z), evaluated in double. */
float ref_silu(float z);

/* gelu_tanh(z) = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))), in double. */
float ref_gelu_tanh(float z);

/* ---------------------------------------------------------- elementwise */

/* out[i] = a[i] + b[i] for i < n. out may be a or b. */
void ref_add(const float *a, const float *b, float *out, size_t n);

/* out[i] = x[i] * s. out may be x. */
void ref_scale(const float *x, float *out, size_t n, float s);

/* Logit soft-capping: out[i] = cap * tanh(x[i] / cap); cap > 0. out may be x. */
void ref_softcap(const float *x, float *out, size_t n, float cap);

typedef enum ref_glu_kind {
    REF_GLU_SILU,      /* out = silu(g) * u      (llama, qwen: SwiGLU) */
    REF_GLU_GELU_TANH, /* out = gelu_tanh(g) * u (gemma: GeGLU) */
} ref_glu_kind;

/* Gated linear unit over `rows` rows of `n` values:
 *   out[r*n + i] = act(g[r*g_stride + i]) * u[r*u_stride + i].
 * Strides are in floats; with g_stride = u_stride = n the inputs are plain
 * [rows][n] buffers; with g = gu, u = gu + n and strides 2n they are the two
 * halves of each row of a fused [rows][2n] gate|up buffer. out may be g or u
 * only when that input's stride is n. */
void ref_glu(ref_glu_kind kind, const float *g, size_t g_stride, const float *u, size_t u_stride,
             float *out, size_t rows, size_t n);

/* ---------------------------------------------------------- row reductions */

/* RMSNorm with weight, per row: out[r][i] = x[r][i] / sqrt(mean_j x[r][j]^2 + eps) * w[i].
 * w has n values shared by all rows. Used per head too: rows = n_tokens *
 * n_heads, n = head_dim (Qwen3/Gemma 3 q/k norms). out may be x. */
void ref_rms_norm(const float *x, const float *w, float *out, size_t rows, size_t n, float eps);

/* Fused post-norm residual (Gemma 3): residual[r][i] += rmsnorm(x[r])[i] * w[i].
 * x and residual must not overlap. */
void ref_rms_norm_add(const float *x, const float *w, float *residual, size_t rows, size_t n,
                      float eps);

/* Softmax per row with optional scale and soft-cap, in this order:
 *   y = x * scale;  if (softcap > 0) y = softcap * tanh(y / softcap);
 *   out[r][i] = exp(y_i - max_j y_j) / sum_j exp(y_j - max_j y_j).
 * -INFINITY inputs are masked and give 0 whatever scale and softcap are (the
 * mask applies after capping); a row that is entirely masked gives 0s.
 * out may be x. */
void ref_softmax(const float *x, float *out, size_t rows, size_t n, float scale, float softcap);

/* ---------------------------------------------------------- RoPE */

typedef enum ref_rope_mode {
    REF_ROPE_NORM, /* pairs (x[2i], x[2i+1]): llama (GGUF-permuted Q/K) */
    REF_ROPE_NEOX, /* pairs (x[i], x[i + n_rot/2]): qwen2/3, gemma 1/2/3 */
} ref_rope_mode;

/* Rotary position embedding of [n_tokens][n_heads][head_dim] (doc §4.4):
 * for token t at position p = pos[t] and pair i < n_rot/2,
 *   theta = p * freq_scale * freq_base^(-2i/n_rot) / ff_i,
 * with ff_i = freq_factors[i] if freq_factors != NULL (rope_freqs.weight,
 * n_rot/2 values) else 1; (a, b) -> (a cos - b sin, a sin + b cos).
 * Dims >= n_rot are copied unchanged. Requires n_rot even, n_rot <= head_dim.
 * out may be x. */
void ref_rope(const float *x, const int32_t *pos, const float *freq_factors, float *out,
              size_t n_tokens, size_t n_heads, size_t head_dim, size_t n_rot, float freq_base,
              float freq_scale, ref_rope_mode mode);

#endif
