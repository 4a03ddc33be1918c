/* k_matmul.h: launchers of the weight kernels: Y = X·Wᵀ (+ bias) for every weight type
 * vkllm reads, and the embedding gather. Shaders: shaders/matvec.comp (1-8 tokens),
 * shaders/matmul.comp (tiled; GL_NV_cooperative_matrix variant), shaders/get_rows.comp,
 * all dequantizing through shaders/dequant.glsl. Design notes: docs/kernels-matmul.md.
 *
 * shaders/matvec_fast.comp is the default 1-8 token kernel where it applies.
 *
 * Operands:
 *   - W (k_weight): `rows` rows of `cols` elements of a ggml type, in file layout (row r =
 *     the weights of output r, quantized blocks along the row), starting at byte
 *     `offset` of `buffer`. Types: F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K,
 *     Q4_K, Q5_K, Q6_K. cols must be a multiple of the type's block (32 or 256) and of
 *     8 (F32/F16). offset must be a multiple of 4, and the buffer must extend to the
 *     tensor's end rounded up to 4 bytes (the shaders read whole words).
 *   - X: f32, element (t, c) at float t*x_stride + c of the binding.
 *   - Y: f32, element (t, r) at float t*y_stride + y_col + r of the binding.
 *   - bias (optional): f32 [rows], added to every token's row r (Qwen2 QKV biases).
 * Weights of any size: one binding may not exceed max_storage_buffer_range (128 MiB on
 * lavapipe), so the launchers split W into row ranges whose bindings fit, each bound
 * from an aligned offset at or below its first row with the byte skew passed to the
 * shader; one dispatch per range.
 *
 * Launchers only record into `cmd` (barriers are automatic). Sizes are checked first:
 * VKLLM_ERR_UNSUPPORTED for a type without a kernel, VKLLM_ERR_INVALID_ARGUMENT for a
 * bad shape, stride, alignment or a binding too small; the message names the argument.
 * n_tokens == 0 / n_ids == 0 records nothing. Module prefix: k_. */
#ifndef VKL_K_MATMUL_H
#define VKL_K_MATMUL_H

#include <stdbool.h>
#include <stdint.h>

#include "exec/k_ops.h" /* k_reduce_path, k_glu_kind */
#include "gpu/gpu.h"
#include "model/gguf.h" /* ggml_type */

typedef struct k_weight {
    const gpu_buffer *buffer;
    uint64_t offset; /* byte offset of row 0 in buffer; multiple of 4 */
    ggml_type type;
    uint32_t rows, cols;
} k_weight;

/* Which kernel computes the product. AUTO: MATVEC for n_tokens <= 8, else COOPMAT when
 * the device has it (k_matmul_coopmat_available) or VKLLM_MATMUL=emulate asks for its
 * emulated build (tests; needs shaderFloat16), else TILED. The explicit values let
 * tests and benchmarks run every path on one device; MATVEC with more than 8 tokens
 * runs in chunks of 8, COOPMAT on a device without it fails with UNSUPPORTED. */
typedef enum k_matmul_kernel {
    K_MATMUL_AUTO = 0,
    K_MATMUL_MATVEC,  /* one pass over W for up to 8 tokens; subgroup or shared reduction */
    K_MATMUL_TILED,   /* shared-memory tiles, f32 */
    K_MATMUL_COOPMAT, /* GL_NV_cooperative_matrix, fp16 operands, f32 accumulation */
    /* Added: the two matvec shaders by name. MATVEC (and AUTO for <= 8 tokens) picks
     * MATVEC_FAST where it applies (k_matmul_matvec_fast_applies), else MATVEC_BASIC;
     * the environment variable VKLLM_MATVEC=basic (or =fast) overrides that choice for
     * MATVEC/AUTO, so benchmarks can compare the two in one build. */
    K_MATMUL_MATVEC_BASIC, /* matvec.comp: 2 rows per workgroup, 8-element groups */
    K_MATMUL_MATVEC_FAST,  /* matvec_fast.comp: rows per subgroup, 16-byte staged loads */
    /* The first-cut cooperative-matrix kernel (matmul.comp COOPMAT: 64x64 tiles, K step
     * 32, single-buffered). COOPMAT (and AUTO) run matmul_coopmat.comp, whose tile shape
     * follows n_tokens and rows; VKLLM_MATMUL=old sends COOPMAT/AUTO to this one, so
     * benchmarks can compare both in one build. */
    K_MATMUL_COOPMAT_BASIC,
    /* matvec_dp4a.comp: X quantized to int8 blocks in shared memory, packed int8 dot
     * products (VK_KHR_shader_integer_dot_product); Q4_0, Q8_0, Q4_K and Q6_K weights
     * (other types keep MATVEC_FAST under MATVEC/AUTO and the variable). MATVEC/AUTO
     * pick it where the device's int8 dot products are accelerated
     * (gpu_features.integer_dot_accelerated) and all tokens fit one pass
     * (k_matmul_matvec_dp4a_applies); VKLLM_MATVEC=dp4a forces it for those types
     * (UNSUPPORTED on a device without integer dot products), VKLLM_MATVEC=fast keeps
     * matvec_fast.comp. Explicitly requested, an unsupported product fails. */
    K_MATMUL_MATVEC_DP4A,
} k_matmul_kernel;

typedef struct k_matmul_args {
    const k_weight *w;
    gpu_binding x;    /* f32 [n_tokens][x_stride] */
    gpu_binding y;    /* f32 [n_tokens][y_stride]; written from column y_col */
    gpu_binding bias; /* f32 [rows]; bias.buffer == NULL: no bias */
    uint32_t n_tokens;
    uint32_t x_stride; /* floats between tokens of X; 0 means cols. Multiple of 4, >= cols */
    uint32_t y_stride; /* floats between tokens of Y; 0 means y_col + rows. >= y_col + rows */
    uint32_t y_col;    /* Y column of row 0 (fused QKV: Q at 0, K at n_q, V at n_q + n_k) */
    bool accumulate;   /* Y += X·Wᵀ (+ bias) instead of Y =: a residual joins in the
                          epilogue. Matvec kernels, and COOPMAT with a split_scratch of
                          k_matmul_split_scratch_bytes (k_matmul_accumulate_supported);
                          Y must not overlap X */
    /* RMSNorm prologue (matvec_dp4a only; k_matmul_norm_prologue_applies): with
     * norm_weight.buffer set (f32 [cols]), Y = rmsnorm(X)·Wᵀ (+ bias), rmsnorm(x) =
     * x / sqrt(mean(x²) + norm_eps) ∘ norm_weight per token: X is the raw row, so the
     * separate k_rms_norm dispatch goes away. Other kernels fail with UNSUPPORTED. */
    gpu_binding norm_weight;
    float norm_eps;
    /* GLU prologue (matvec_dp4a only; k_matmul_glu_prologue_applies): with glu set, X is the
     * FFN's fused gate|up activation, each token's row holding gate at columns [0, cols) and
     * up at [cols, 2 cols) (x_stride: 0 means 2 cols, else a multiple of 4 >= 2 cols), and
     * Y = (act(gate) ∘ up)·Wᵀ (+ bias), act = glu_kind's function as k_glu computes it: the
     * separate k_glu_fused dispatch goes away. Not with norm_weight (INVALID_ARGUMENT);
     * other kernels fail with UNSUPPORTED. */
    bool glu;
    k_glu_kind glu_kind;
    k_matmul_kernel kernel;     /* AUTO in the engine */
    k_reduce_path reduce;       /* MATVEC reduction; AUTO: subgroup when the device has it */
    uint64_t max_binding_bytes; /* 0: the device limit; tests set small values to split W */
    /* Split-K scratch of the COOPMAT kernel (buffer NULL: none): f32, aligned offset, not
     * overlapping X, Y or bias. When a product would give too few workgroups, K is cut
     * into S slices run as S concurrent dispatches writing partial products here, then
     * a reduce dispatch writes Y (+ bias, += with accumulate). Needs
     * k_matmul_split_scratch_bytes bytes; with less, fewer slices or no split.
     * VKLLM_MATMUL_SPLITK=0 turns the split off, =N forces N slices (2..8). */
    gpu_binding split_scratch;
} k_matmul_args;

/* Y[t][r] = Σ_c X[t][c]·W[r][c] for t < n_tokens, r < rows, with default strides
 * (x: [n_tokens][cols], y: [n_tokens][rows]) and no bias. */
vkllm_status k_matmul(gpu_context *ctx, gpu_cmd *cmd, const k_weight *w, gpu_binding x,
                      gpu_binding y, uint32_t n_tokens);
/* The same with strides, output column, bias and path choice. */
vkllm_status k_matmul_ex(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *args);

/* out[i][c] = W[ids[i]][c] dequantized to f32, i < n_ids, c < cols. ids: int32 [n_ids];
 * out: f32 [n_ids][cols]. Ids outside [0, rows) give rows of zeros (the GPU cannot
 * report them; the caller validates token ids). */
vkllm_status k_get_rows(gpu_context *ctx, gpu_cmd *cmd, const k_weight *w, gpu_binding ids,
                        gpu_binding out, uint32_t n_ids);
/* The same with an output row stride (floats, multiple of 4, >= cols; 0 means cols) and
 * a binding limit for tests (0: the device limit). */
vkllm_status k_get_rows_ex(gpu_context *ctx, gpu_cmd *cmd, const k_weight *w, gpu_binding ids,
                           gpu_binding out, uint32_t n_ids, uint32_t out_stride,
                           uint64_t max_binding_bytes);

/* True when the weight kernels handle `type`. */
bool k_matmul_type_supported(ggml_type type);
/* True when k_matmul_ex with kernel AUTO can take accumulate = true for n_tokens: the
 * matvec kernels (n_tokens <= 8), and the cooperative-matrix kernel given a split_scratch
 * of k_matmul_split_scratch_bytes(..., accumulate = true) bytes (its split-K reduce
 * adds Y; without the scratch it fails with VKLLM_ERR_UNSUPPORTED). The tiled kernels
 * have no accumulating epilogue. */
bool k_matmul_accumulate_supported(const gpu_features *features, uint32_t n_tokens);
/* Bytes of k_matmul_args.split_scratch that k_matmul_ex (kernel AUTO, default strides)
 * uses for W at n_tokens on this device: the split-K partial products (and, with
 * accumulate, one slice when the product does not split); 0 when it uses none. Reads
 * VKLLM_MATMUL and VKLLM_MATMUL_SPLITK like k_matmul_ex. A caller sizing one buffer
 * for many products takes the maximum over them and their token counts. */
uint64_t k_matmul_split_scratch_bytes(const gpu_features *features, const k_weight *w,
                                      uint32_t n_tokens, bool accumulate);
/* True when the device can run the cooperative-matrix kernel: VK_NV_cooperative_matrix
 * with a 16x8x16 fp16 x fp16 -> fp32 subgroup shape, shaderFloat16, the Vulkan memory
 * model and subgroup size 32. */
bool k_matmul_coopmat_available(const gpu_features *features);
/* The kernel AUTO picks for n_tokens on this device. */
k_matmul_kernel k_matmul_auto_kernel(const gpu_features *features, uint32_t n_tokens);
/* True when MATVEC_FAST can run this product: subgroup arithmetic, a reduction that is
 * not forced to K_REDUCE_SHARED, and a weight buffer that extends to the tensor's end
 * rounded up to 16 bytes (the shader reads whole uvec4). */
bool k_matmul_matvec_fast_applies(const gpu_features *features, const k_matmul_args *args);
/* True when MATVEC_DP4A can run this product: integer dot products and subgroup
 * arithmetic and shuffle on the device, a Q4_0, Q8_0, Q4_K or Q6_K weight, and the quantized
 * X of at least one token fitting shared memory (1.5 bytes per column and token; rows too
 * wide for args->n_tokens are split into column chunks, one dispatch each); *max_tokens (may
 * be NULL) receives how many tokens one pass takes (at most 8). */
bool k_matmul_matvec_dp4a_applies(const gpu_features *features, const k_matmul_args *args,
                                  uint32_t *max_tokens);
/* The shader kernel MATVEC (and AUTO for <= 8 tokens) runs for this product on this
 * device: MATVEC_BASIC, MATVEC_FAST or MATVEC_DP4A, VKLLM_MATVEC included (tests pick
 * their error bound from it: dp4a quantizes X to int8). */
k_matmul_kernel k_matmul_matvec_choice(const gpu_features *features, const k_matmul_args *args);
/* True when k_matmul_ex can run `args` (kernel AUTO, MATVEC or MATVEC_DP4A, n_tokens as
 * given) with the RMSNorm prologue: the kernel is MATVEC_DP4A (k_matmul_matvec_choice)
 * and cols >= 4 x the subgroups of its workgroup (at most 32: cols >= 128 always fits). */
bool k_matmul_norm_prologue_applies(const gpu_features *features, const k_matmul_args *args);
/* True when k_matmul_ex can run `args` (kernel AUTO, MATVEC or MATVEC_DP4A, n_tokens as
 * given) with the GLU prologue (args->glu and glu_kind are read; norm_weight must be unset):
 * the kernel is MATVEC_DP4A (k_matmul_matvec_choice) and glu_kind is SiLU or GELU-tanh. */
bool k_matmul_glu_prologue_applies(const gpu_features *features, const k_matmul_args *args);

#endif
