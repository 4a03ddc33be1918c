/* k_matmul_internal.h: what the files of the k_matmul module share. Internal to the module
 * (k_matmul.c, k_matmul_fast.c, k_matmul_dp4a.c, k_matmul_coopmat.c): nothing else
 * includes it; callers use exec/k_matmul.h.
 *
 * The module's files:
 *   k_matmul.c          the public entry (k_matmul_ex), argument checks, kernel choice,
 *                       weight layouts and row ranges, the matvec.comp, matmul.comp and
 *                       get_rows.comp launchers, and the helpers declared below;
 *   k_matmul_fast.c     matvec_fast.comp's launcher;
 *   k_matmul_dp4a.c     matvec_dp4a.comp's launcher and its RMSNorm and GLU prologues;
 *   k_matmul_coopmat.c  matmul_coopmat.comp's launcher, split-K and split_k_reduce.comp.
 * Prefixes: mm_ the shared weight and dispatch helpers, mv_ the matvec helpers (and
 * matvec_fast's launcher), dp_ matvec_dp4a, cm_ matmul_coopmat.
 *
 * Invariants: the binding rules of k_matmul.c's opening comment hold for every
 * launcher; the push constant structs below match the shaders' `Push` blocks field by
 * field. */
#ifndef VKL_K_MATMUL_INTERNAL_H
#define VKL_K_MATMUL_INTERNAL_H

#include "exec/k_matmul.h"

#define MM_MATVEC_MAX_TOKENS 8 /* most tokens of one matvec pass */
#define MV_FEW_ROWS                                                                                \
    2048 /* weights of at most this many rows (K/V projections) get                                \
            half-size matvec workgroups, so more of them */

/* ---------------------------------------------------------------- push constants */

typedef struct mm_push { /* matvec.comp and matmul.comp */
    uint32_t rows, cols, row_bytes, skew;
    uint32_t x_stride, y_stride, y_offset, bias_offset;
    uint32_t n_tokens, x_offset;
} mm_push;

typedef struct mv_push { /* matvec_fast.comp */
    uint32_t rows, cols, row_bytes, skew;
    uint32_t x_stride, y_stride, y_offset, bias_offset;
    uint32_t chunk_blocks, x_offset;
} mv_push;

/* ---------------------------------------------------------------- k_matmul.c: weights, ranges */

/* Checked geometry of a weight, and how its rows are split over bindings. */
typedef struct mm_layout {
    const char *suffix;
    uint64_t row_bytes;
    uint32_t rows_per_range;
    uint64_t align;
} mm_layout;

/* The shader variant suffix of a weight type ("q4_k"); NULL when it has no kernel. */
const char *mm_suffix(ggml_type type);
/* True when the variable VKLLM_MATMUL equals `value` (case-insensitive). */
bool mm_env_is(const char *value);
/* Bytes one weight binding may span: the device limit, max_binding_bytes when smaller,
 * and below 4 GiB (32-bit byte offsets in the shaders). */
uint64_t mm_binding_limit(const gpu_features *f, uint64_t max_binding_bytes);
/* Checks weight w for operation `op` and fills its layout, rows per range capped at
 * max_rows_per_range; the message names the argument. */
vkllm_status mm_check_weight(const char *op, const gpu_features *f, const k_weight *w,
                             uint64_t max_binding_bytes, uint32_t max_rows_per_range,
                             mm_layout *out);
/* The binding of rows [r0, r0 + n) and the skew of row r0 inside it. */
gpu_binding mm_range_binding(const k_weight *w, const mm_layout *l, uint32_t r0, uint32_t n,
                             uint32_t *skew);
/* Bytes a binding can show to a shader (range 0 = to the end, clamped to the limit). */
uint64_t mm_binding_bytes(const gpu_features *f, gpu_binding b);
/* Checks that binding `name` is aligned and holds floats_needed floats. */
vkllm_status mm_check_binding(const char *op, const char *name, const gpu_features *f,
                              gpu_binding b, uint64_t floats_needed);
/* Splits n workgroups over x and y so neither exceeds the device's count limits. */
void mm_grid(const gpu_features *f, uint64_t n, uint32_t *gx, uint32_t *gy);
/* One dispatch per row range of W over columns [c0, c0 + nc) (see k_matmul.c). */
vkllm_status mm_dispatch_cols(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
                              const mm_layout *l, gpu_pipeline *pipeline, bool matvec,
                              uint32_t tile_m, uint32_t tile_n, uint32_t t0, uint32_t nt,
                              uint32_t x_stride, uint32_t y_stride, uint32_t c0, uint32_t nc);
/* mm_dispatch_cols over whole rows. */
vkllm_status mm_dispatch_ranges(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
                                const mm_layout *l, gpu_pipeline *pipeline, bool matvec,
                                uint32_t tile_m, uint32_t tile_n, uint32_t t0, uint32_t nt,
                                uint32_t x_stride, uint32_t y_stride);

/* ---------------------------------------------------------------- k_matmul.c: matvec helpers */

/* The narrowest and the widest subgroup the driver may give a matvec pipeline (the
 * widest never below the default; both at least 1). */
uint32_t mv_sg_min(const gpu_features *f);
uint32_t mv_sg_max(const gpu_features *f);
/* Invocations of a workgroup of *sgs full subgroups of any size the driver may pick,
 * halving *sgs until it fits the device; 0 if even one does not. */
uint32_t mv_workgroup_size(const gpu_features *f, uint32_t *sgs);
/* The matvec kernels' X, Y and bias bindings (X stands in for an absent bias). */
void mv_bindings(const k_matmul_args *a, gpu_binding *x, gpu_binding *y, gpu_binding *bias);

/* ---------------------------------------------------------------- k_matmul_fast.c */

typedef struct mv_config {
    uint32_t wg, rows, loads, rows_per_wg;
    uint32_t chunk_blocks;
    uint32_t rows_per_range;
    uint64_t align; /* binding offsets: multiple of 16 and of the device's alignment */
} mv_config;

/* Fills *c for weight w (checked layout l); false when the fast kernel cannot run it. */
bool mv_configure(const gpu_features *f, const k_matmul_args *a, const mm_layout *l, mv_config *c);
vkllm_status mv_run_fast(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a, const mm_layout *l,
                         const mv_config *c, uint32_t x_stride, uint32_t y_stride);

/* ---------------------------------------------------------------- k_matmul_dp4a.c */

typedef struct dp_config {
    uint32_t wg, rows, max_wg, max_tokens;
    uint32_t units;     /* loop 2: units (32 weights) per lane and row in flight */
    uint32_t col_chunk; /* columns per dispatch (w->cols unless split, see dp_configure) */
    uint32_t loop;      /* 2: default main loop; 1: the first version */
} dp_config;

/* Fills *c for weight w; false when matvec_dp4a cannot run it. */
bool dp_configure(const gpu_features *f, const k_matmul_args *a, dp_config *c);
/* Shared memory of the quantized X of n_tokens rows of cols columns. */
uint64_t dp_shared_bytes(uint32_t cols, uint32_t n_tokens);
vkllm_status dp_run(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a, const mm_layout *l,
                    const dp_config *c, uint32_t x_stride, uint32_t y_stride);
/* True for the activations the GLU prologue computes (SiLU, GELU-tanh). */
bool dp_glu_kind_valid(k_glu_kind kind);
/* UNSUPPORTED / INVALID_ARGUMENT unless `kernel` (the one k_matmul_ex chose) can run the
 * RMSNorm prologue of `a` (dp: its matvec_dp4a configuration). */
vkllm_status dp_norm_prologue_check(const char *op, const gpu_features *f, const k_matmul_args *a,
                                    k_matmul_kernel kernel, const dp_config *dp);
/* UNSUPPORTED unless `kernel` can run the GLU prologue. */
vkllm_status dp_glu_prologue_check(const char *op, const k_matmul_args *a, k_matmul_kernel kernel);

/* ---------------------------------------------------------------- k_matmul_coopmat.c */

typedef struct cm_shape {
    uint32_t sg_m, fm, sg_n, fn, sg_k;
    uint32_t ksub;     /* 16-column products per K slice and step */
    uint32_t pad;      /* 16-byte chunks of padding per shared tile row */
    uint32_t prefetch; /* 1: next step's loads before the products, 0: after */
} cm_shape;

/* The shape matmul_coopmat.comp runs for this product, fitted to the shared memory; false
 * when none fits (the caller runs the first-cut kernel). */
bool cm_configure(const gpu_features *f, uint32_t rows, uint32_t n_tokens, cm_shape *out);
/* Records the product with shape s (split-K and its reduce where planned); emulate: the
 * CM_EMULATE build (VKLLM_MATMUL=emulate). */
vkllm_status cm_run(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a, const mm_layout *l,
                    const cm_shape *s, bool emulate, uint32_t x_stride, uint32_t y_stride);

#endif
