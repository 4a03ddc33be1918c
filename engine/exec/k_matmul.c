/* k_matmul.c: host side of the weight kernels (see k_matmul.h): the module's public
 * entry and what its launchers share.
 *
 * Owns: argument checks, the choice of kernel and of its spec constants from the
 * device's features, and the split of large weights into row ranges whose
 * bindings fit max_storage_buffer_range; the launchers of matvec.comp, matmul.comp
 * (tiled, and its first-cut cooperative-matrix build) and get_rows.comp. The other
 * launchers live beside it: matvec_fast.comp in k_matmul_fast.c, matvec_dp4a.comp (and
 * the RMSNorm and GLU prologues) in k_matmul_dp4a.c, matmul_coopmat.comp and split-K in
 * k_matmul_coopmat.c; k_matmul_internal.h declares what they share. Invariants kept by
 * every launcher for the shaders
 * (dequant.glsl, matvec.comp, matvec_fast.comp, matvec_dp4a.comp, matmul.comp,
 * matmul_coopmat.comp, get_rows.comp):
 *   - every weight binding starts at a multiple of min_storage_offset_alignment and
 *     ends at the range's last row rounded up to 4 bytes; skew = bytes from the
 *     binding start to the range's row 0 (even, < alignment; a multiple of 4 for
 *     types whose block size is, as the weight offset must be a multiple of 4);
 *   - byte offsets inside a binding fit in 32 bits (bindings are capped below 4 GiB);
 *   - x_offset, x_stride and cols are multiples of 4 floats (vec4 reads of X);
 *   - the push constant structs (mm_push and mv_push in k_matmul_internal.h, gr_push
 *     below, rd_push in k_matmul_coopmat.c) match the shaders' `Push` blocks field by
 *     field. */
#include "exec/k_matmul_internal.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- types */

typedef struct mm_type {
    ggml_type type;
    const char *suffix; /* shader variant suffix */
} mm_type;

static const mm_type mm_types[] = {
    {GGML_TYPE_F32, "f32"},   {GGML_TYPE_F16, "f16"},   {GGML_TYPE_Q4_0, "q4_0"},
    {GGML_TYPE_Q4_1, "q4_1"}, {GGML_TYPE_Q5_0, "q5_0"}, {GGML_TYPE_Q5_1, "q5_1"},
    {GGML_TYPE_Q8_0, "q8_0"}, {GGML_TYPE_Q2_K, "q2_k"}, {GGML_TYPE_Q3_K, "q3_k"},
    {GGML_TYPE_Q4_K, "q4_k"}, {GGML_TYPE_Q5_K, "q5_k"}, {GGML_TYPE_Q6_K, "q6_k"},
};

const char *mm_suffix(ggml_type type) {
    for (size_t i = 0; i < sizeof mm_types / sizeof mm_types[0]; i++)
        if (mm_types[i].type == type) return mm_types[i].suffix;
    return NULL;
}

bool k_matmul_type_supported(ggml_type type) {
    return mm_suffix(type) != NULL;
}

/* ---------------------------------------------------------------- push constants */

typedef struct gr_push { /* get_rows.comp */
    uint32_t rows, cols, row_bytes, skew;
    uint32_t row_base, total_rows, n_ids, out_stride, write_invalid;
} gr_push;

/* ---------------------------------------------------------------- weight checks and ranges */

uint64_t mm_binding_limit(const gpu_features *f, uint64_t max_binding_bytes) {
    uint64_t limit = f->max_storage_buffer_range;
    if (max_binding_bytes && max_binding_bytes < limit) limit = max_binding_bytes;
    if (limit > 0xfffff000ull) limit = 0xfffff000ull; /* 32-bit byte offsets in the shaders */
    return limit;
}

vkllm_status mm_check_weight(const char *op, const gpu_features *f, const k_weight *w,
                             uint64_t max_binding_bytes, uint32_t max_rows_per_range,
                             mm_layout *out) {
    if (!w || !w->buffer) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: weight is NULL", op);
    ggml_type_info info = ggml_type_get_info(w->type);
    out->suffix = mm_suffix(w->type);
    if (!out->suffix)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED, "%s: weight type %s (%u) has no kernel", op,
                        info.name, (unsigned)w->type);
    if (w->rows == 0 || w->cols == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: weight shape %u x %u is empty", op,
                        w->rows, w->cols);
    if (w->cols % info.block_elems != 0 || w->cols % 8 != 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: weight cols %u is not a multiple of %u (type %s)", op, w->cols,
                        info.block_elems > 8 ? info.block_elems : 8, info.name);
    if (w->offset % 4 != 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: weight offset %llu is not a multiple of 4 bytes", op,
                        (unsigned long long)w->offset);
    out->row_bytes = ggml_row_bytes(w->type, w->cols);
    uint64_t end = w->offset + out->row_bytes * w->rows;
    uint64_t end4 = (end + 3) & ~3ull;
    if (end4 > w->buffer->size)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: weight %u x %u %s at offset %llu needs bytes up to %llu (tensor end "
                        "rounded up to 4) but the buffer has %llu",
                        op, w->rows, w->cols, info.name, (unsigned long long)w->offset,
                        (unsigned long long)end4, (unsigned long long)w->buffer->size);
    out->align = f->min_storage_offset_alignment > 4 ? f->min_storage_offset_alignment : 4;
    uint64_t limit = mm_binding_limit(f, max_binding_bytes);
    /* a range binding holds the skew (< align), its rows and at most 2 bytes of rounding */
    uint64_t usable = limit > out->align + 4 ? limit - out->align - 4 : 0;
    uint64_t per_range = usable / out->row_bytes;
    if (per_range == 0)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: one weight row of %llu bytes does not fit a binding of %llu bytes", op,
                        (unsigned long long)out->row_bytes, (unsigned long long)limit);
    if (per_range > max_rows_per_range) per_range = max_rows_per_range;
    out->rows_per_range = (uint32_t)per_range;
    return VKLLM_OK;
}

/* The binding of rows [r0, r0 + n) and the skew of row r0 inside it. */
gpu_binding mm_range_binding(const k_weight *w, const mm_layout *l, uint32_t r0, uint32_t n,
                             uint32_t *skew) {
    uint64_t start = w->offset + (uint64_t)r0 * l->row_bytes;
    uint64_t aligned = start - start % l->align;
    uint64_t end4 = (start + (uint64_t)n * l->row_bytes + 3) & ~3ull;
    *skew = (uint32_t)(start - aligned);
    return (gpu_binding){w->buffer, aligned, end4 - aligned, false};
}

/* Bytes a binding can show to a shader (range 0 = to the end, clamped to the limit). */
uint64_t mm_binding_bytes(const gpu_features *f, gpu_binding b) {
    if (!b.buffer || b.offset > b.buffer->size) return 0;
    uint64_t bytes = b.range ? b.range : b.buffer->size - b.offset;
    if (b.offset + bytes > b.buffer->size) return 0;
    if (bytes > f->max_storage_buffer_range) bytes = f->max_storage_buffer_range;
    return bytes;
}

vkllm_status mm_check_binding(const char *op, const char *name, const gpu_features *f,
                              gpu_binding b, uint64_t floats_needed) {
    if (!b.buffer) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: %s has no buffer", op, name);
    if (b.offset % (f->min_storage_offset_alignment ? f->min_storage_offset_alignment : 4))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: %s offset %llu is not a multiple of the storage alignment %llu", op,
                        name, (unsigned long long)b.offset,
                        (unsigned long long)f->min_storage_offset_alignment);
    uint64_t have = mm_binding_bytes(f, b);
    if (have < floats_needed * 4)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: %s binding has %llu bytes but needs %llu (%llu floats)", op, name,
                        (unsigned long long)have, (unsigned long long)(floats_needed * 4),
                        (unsigned long long)floats_needed);
    return VKLLM_OK;
}

/* Splits n workgroups over x and y so neither exceeds the device's count limits. */
void mm_grid(const gpu_features *f, uint64_t n, uint32_t *gx, uint32_t *gy) {
    uint64_t max_x = f->max_workgroup_count[0] ? f->max_workgroup_count[0] : 65535;
    if (n <= max_x) {
        *gx = (uint32_t)n;
        *gy = 1;
    } else {
        *gx = (uint32_t)max_x;
        *gy = (uint32_t)((n + max_x - 1) / max_x);
    }
}

/* ---------------------------------------------------------------- kernel choice */

#define MM_MATVEC_ROWS 2 /* rows per workgroup */
#define MM_CM_TILE 64    /* matmul.comp's CM_BM and CM_BN */

/* VkComponentTypeNV values */
#define MM_COMPONENT_FLOAT16 0u
#define MM_COMPONENT_FLOAT32 1u

bool k_matmul_coopmat_available(const gpu_features *f) {
    if (!f->coopmat_nv || !f->fp16_arithmetic || !f->vulkan_memory_model) return false;
    bool size32 =
        f->subgroup_size == 32 ||
        (f->subgroup_size_control && f->subgroup_min_size <= 32 && f->subgroup_max_size >= 32);
    if (!size32 || f->max_shared_memory < 24 * 1024) return false;
    for (uint32_t i = 0; i < f->num_coopmat_nv_shapes; i++) {
        const gpu_coopmat_shape *s = &f->coopmat_nv_shapes[i];
        if (s->m == 16 && s->n == 8 && s->k == 16 && s->a_type == MM_COMPONENT_FLOAT16 &&
            s->b_type == MM_COMPONENT_FLOAT16 && s->c_type == MM_COMPONENT_FLOAT32 &&
            s->result_type == MM_COMPONENT_FLOAT32)
            return true;
    }
    return false;
}

/* VKLLM_MATMUL=emulate (tests): COOPMAT runs matmul_coopmat.comp's CM_EMULATE build,
 * and AUTO picks COOPMAT for > 8 tokens on a device with shaderFloat16, so the engine
 * runs its cooperative-matrix path (tiles, split-K, reduce) end to end on lavapipe. */
bool mm_env_is(const char *value) {
    const char *env = getenv("VKLLM_MATMUL");
    return env && !strcasecmp(env, value);
}

k_matmul_kernel k_matmul_auto_kernel(const gpu_features *f, uint32_t n_tokens) {
    if (n_tokens <= MM_MATVEC_MAX_TOKENS) return K_MATMUL_MATVEC;
    if (k_matmul_coopmat_available(f) || (f->fp16_arithmetic && mm_env_is("emulate")))
        return K_MATMUL_COOPMAT;
    return K_MATMUL_TILED;
}

/* Tile configuration of the portable matmul (spec constants 0..5). */
typedef struct mm_tiles {
    uint32_t wg, bm, bn, bk, tm, tn;
} mm_tiles;

static mm_tiles mm_choose_tiles(const gpu_features *f) {
    mm_tiles t = {256, 64, 64, 32, 4, 4};
    if (f->max_workgroup_invocations < 256) t = (mm_tiles){64, 32, 32, 32, 4, 4};
    while (t.bk > 8 && (t.bm + t.bn) * t.bk * 4 > f->max_shared_memory)
        t.bk /= 2;
    return t;
}

/* MATVEC's shader for this product before the fast kernel's own fallback (basic, fast
 * or dp4a; *dp filled for dp4a): VKLLM_MATVEC=basic|fast|dp4a overrides; by default dp4a
 * where the device's int8 dot products are accelerated and every token fits one pass. */
static k_matmul_kernel mm_matvec_choice(const gpu_features *f, const k_matmul_args *a,
                                        dp_config *dp) {
    const char *env = getenv("VKLLM_MATVEC");
    bool force_dp4a = env && !strcasecmp(env, "dp4a");
    if (env && !strcasecmp(env, "basic")) return K_MATMUL_MATVEC_BASIC;
    if ((force_dp4a || (f->integer_dot_accelerated && !(env && !strcasecmp(env, "fast")))) &&
        dp_configure(f, a, dp) && (force_dp4a || a->n_tokens <= dp->max_tokens))
        return K_MATMUL_MATVEC_DP4A;
    return K_MATMUL_MATVEC_FAST;
}

k_matmul_kernel k_matmul_matvec_choice(const gpu_features *f, const k_matmul_args *a) {
    if (!f || !a || !a->w || !a->w->buffer) return K_MATMUL_MATVEC_BASIC;
    dp_config dp;
    k_matmul_kernel k = mm_matvec_choice(f, a, &dp);
    bool fast_ok = k_matmul_matvec_fast_applies(f, a);
    if (k == K_MATMUL_MATVEC_FAST && !fast_ok) k = K_MATMUL_MATVEC_BASIC;
    return k;
}

/* ---------------------------------------------------------------- row-range dispatch and
 * the matvec.comp and matmul.comp launchers */

/* One dispatch per row range of W over columns [c0, c0 + nc) of every row (the whole
 * row for all kernels but the split-K slices of matmul_coopmat.comp): the shader sees
 * rows of nc columns that start c0's byte later (skew) and keep row_bytes apart, and X
 * from column c0 (c0 is a multiple of the block size and of 8). */
vkllm_status mm_dispatch_cols(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
                              const mm_layout *l, gpu_pipeline *pipeline, bool matvec,
                              uint32_t tile_m, uint32_t tile_n, uint32_t t0, uint32_t nt,
                              uint32_t x_stride, uint32_t y_stride, uint32_t c0, uint32_t nc) {
    const gpu_features *f = gpu_context_features(ctx);
    uint32_t c0_bytes = (uint32_t)ggml_row_bytes(a->w->type, c0);
    const k_weight *w = a->w;
    gpu_binding x = a->x, y = a->y;
    x.writable = false;
    y.writable = true;
    gpu_binding bias = a->bias.buffer ? a->bias : x;
    bias.writable = false;
    for (uint32_t r0 = 0; r0 < w->rows; r0 += l->rows_per_range) {
        uint32_t n = w->rows - r0 < l->rows_per_range ? w->rows - r0 : l->rows_per_range;
        mm_push push = {0};
        gpu_binding bindings[4];
        bindings[0] = mm_range_binding(w, l, r0, n, &push.skew);
        bindings[1] = x;
        bindings[2] = y;
        bindings[3] = bias;
        push.skew += c0_bytes;
        push.rows = n;
        push.cols = nc;
        push.row_bytes = (uint32_t)l->row_bytes;
        push.x_stride = x_stride;
        push.y_stride = y_stride;
        push.y_offset = a->y_col + r0 + t0 * y_stride;
        push.bias_offset = r0;
        push.n_tokens = nt;
        push.x_offset = t0 * x_stride + c0;
        uint32_t gx, gy;
        if (matvec) {
            mm_grid(f, (n + tile_m - 1) / tile_m, &gx, &gy);
        } else {
            gx = (n + tile_m - 1) / tile_m;
            gy = (nt + tile_n - 1) / tile_n;
        }
        gpu_cmd_dispatch(cmd, pipeline, bindings, 4, &push, sizeof push, gx, gy, 1);
    }
    return VKLLM_OK;
}

/* mm_dispatch_cols over whole rows. */
vkllm_status mm_dispatch_ranges(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
                                const mm_layout *l, gpu_pipeline *pipeline, bool matvec,
                                uint32_t tile_m, uint32_t tile_n, uint32_t t0, uint32_t nt,
                                uint32_t x_stride, uint32_t y_stride) {
    return mm_dispatch_cols(ctx, cmd, a, l, pipeline, matvec, tile_m, tile_n, t0, nt, x_stride,
                            y_stride, 0, a->w->cols);
}

static vkllm_status mm_run_matvec(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
                                  const mm_layout *l, uint32_t x_stride, uint32_t y_stride) {
    const gpu_features *f = gpu_context_features(ctx);
    k_reduce_path reduce = a->reduce;
    if (reduce == K_REDUCE_AUTO)
        reduce = f->subgroup_arithmetic ? K_REDUCE_SUBGROUP : K_REDUCE_SHARED;
    if (reduce == K_REDUCE_SUBGROUP && !f->subgroup_arithmetic)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "k_matmul: subgroup reduction requested but the device has no subgroup "
                        "arithmetic");
    uint32_t wg = f->kind == GPU_KIND_CPU ? 64 : (a->w->cols / 8 >= 512 ? 128 : 64);
    if (wg > f->max_workgroup_invocations) wg = f->max_workgroup_invocations;
    uint32_t sg_min = mv_sg_min(f);
    if (sg_min > wg) sg_min = wg;
    char name[64];
    snprintf(name, sizeof name, "matvec_%s%s", l->suffix,
             reduce == K_REDUCE_SUBGROUP ? "" : "_portable");
    for (uint32_t t0 = 0; t0 < a->n_tokens; t0 += MM_MATVEC_MAX_TOKENS) {
        uint32_t nt = a->n_tokens - t0;
        if (nt > MM_MATVEC_MAX_TOKENS) nt = MM_MATVEC_MAX_TOKENS;
        gpu_pipeline_desc desc = {.shader = name,
                                  .num_bindings = 4,
                                  .push_constant_size = sizeof(mm_push),
                                  .num_spec_constants = 6,
                                  .spec_constants = {wg, MM_MATVEC_ROWS, nt, sg_min,
                                                     a->bias.buffer != NULL, a->accumulate}};
        gpu_pipeline *pipeline;
        VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
        VKL_TRY(mm_dispatch_ranges(ctx, cmd, a, l, pipeline, true, MM_MATVEC_ROWS, 1, t0, nt,
                                   x_stride, y_stride));
    }
    return VKLLM_OK;
}

static vkllm_status mm_run_tiled(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
                                 const mm_layout *l, bool coopmat, uint32_t x_stride,
                                 uint32_t y_stride) {
    const gpu_features *f = gpu_context_features(ctx);
    char name[64];
    gpu_pipeline_desc desc = {.num_bindings = 4, .push_constant_size = sizeof(mm_push)};
    uint32_t tile_m, tile_n;
    if (coopmat) {
        snprintf(name, sizeof name, "matmul_coopmat_%s", l->suffix);
        desc.num_spec_constants = 7; /* only constant 6 (HAS_BIAS) is used */
        desc.spec_constants[6] = a->bias.buffer != NULL;
        desc.required_subgroup_size = f->subgroup_size == 32 ? 0 : 32;
        tile_m = tile_n = MM_CM_TILE;
    } else {
        snprintf(name, sizeof name, "matmul_%s", l->suffix);
        mm_tiles t = mm_choose_tiles(f);
        desc.num_spec_constants = 7;
        uint32_t spec[7] = {t.wg, t.bm, t.bn, t.bk, t.tm, t.tn, a->bias.buffer != NULL};
        memcpy(desc.spec_constants, spec, sizeof spec);
        tile_m = t.bm;
        tile_n = t.bn;
    }
    desc.shader = name;
    if ((a->n_tokens + tile_n - 1) / tile_n >
        (f->max_workgroup_count[1] ? f->max_workgroup_count[1] : 65535))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "k_matmul: n_tokens %u is too large",
                        a->n_tokens);
    gpu_pipeline *pipeline;
    VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    return mm_dispatch_ranges(ctx, cmd, a, l, pipeline, false, tile_m, tile_n, 0, a->n_tokens,
                              x_stride, y_stride);
}

/* ---------------------------------------------------------------- matvec helpers
 * Shared by the matvec_fast and matvec_dp4a launchers. */

uint32_t mv_sg_min(const gpu_features *f) {
    uint32_t m =
        f->subgroup_size_control && f->subgroup_min_size ? f->subgroup_min_size : f->subgroup_size;
    return m ? m : 1;
}

/* The widest subgroup the driver may give a matvec pipeline (never below the default). */
uint32_t mv_sg_max(const gpu_features *f) {
    uint32_t m =
        f->subgroup_size_control && f->subgroup_max_size ? f->subgroup_max_size : f->subgroup_size;
    if (m < f->subgroup_size) m = f->subgroup_size;
    return m ? m : 1;
}

/* Invocations of a workgroup of *sgs full subgroups of any size the driver may pick (a
 * multiple of the largest), halving *sgs until it fits the device; 0 if even one does
 * not. */
uint32_t mv_workgroup_size(const gpu_features *f, uint32_t *sgs) {
    uint32_t wg = *sgs * mv_sg_max(f);
    while (wg > f->max_workgroup_invocations && *sgs > 1) {
        *sgs /= 2;
        wg = *sgs * mv_sg_max(f);
    }
    return wg > f->max_workgroup_invocations ? 0 : wg;
}

/* The matvec kernels' X, Y and bias bindings (X stands in for an absent bias: the
 * shaders read it only when HAS_BIAS). */
void mv_bindings(const k_matmul_args *a, gpu_binding *x, gpu_binding *y, gpu_binding *bias) {
    *x = a->x;
    *y = a->y;
    x->writable = false;
    y->writable = true;
    *bias = a->bias.buffer ? a->bias : *x;
    bias->writable = false;
}

/* ---------------------------------------------------------------- k_matmul */

vkllm_status k_matmul_ex(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a) {
    static const char op[] = "k_matmul";
    if (!ctx || !cmd || !a) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: NULL argument", op);
    const gpu_features *f = gpu_context_features(ctx);
    const k_weight *w = a->w;
    k_matmul_kernel kernel =
        a->kernel == K_MATMUL_AUTO ? k_matmul_auto_kernel(f, a->n_tokens) : a->kernel;
    /* VKLLM_MATMUL=emulate: COOPMAT runs matmul_coopmat.comp with emulated fragment
     * operations (tests of its tiling on devices without cooperative matrices). */
    const char *mm_env = getenv("VKLLM_MATMUL");
    bool emulate = kernel == K_MATMUL_COOPMAT && mm_env && !strcasecmp(mm_env, "emulate");
    if (emulate && !f->fp16_arithmetic)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: VKLLM_MATMUL=emulate needs shaderFloat16 (device '%s')", op, f->name);
    if ((kernel == K_MATMUL_COOPMAT || kernel == K_MATMUL_COOPMAT_BASIC) && !emulate &&
        !k_matmul_coopmat_available(f))
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: the cooperative-matrix kernel needs VK_NV_cooperative_matrix (16x8x16 "
                        "fp16), shaderFloat16, the Vulkan memory model and subgroup size 32; "
                        "device '%s' lacks them",
                        op, f->name);
    if (kernel < K_MATMUL_AUTO || kernel > K_MATMUL_MATVEC_DP4A)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: unknown kernel %d", op, (int)kernel);
    if (a->accumulate && kernel != K_MATMUL_MATVEC && kernel != K_MATMUL_MATVEC_BASIC &&
        kernel != K_MATMUL_MATVEC_FAST && kernel != K_MATMUL_MATVEC_DP4A &&
        kernel != K_MATMUL_COOPMAT)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: accumulate (Y += X W^T) is implemented by the matvec kernels and "
                        "the cooperative-matrix kernel's split-K reduce only; %u tokens chose "
                        "kernel %d (tiled or first-cut cooperative-matrix)",
                        op, a->n_tokens, (int)kernel);
    /* the tiled kernels index row tiles (32 or 64 rows) with gl_WorkGroupID.x */
    uint32_t max_x = f->max_workgroup_count[0] ? f->max_workgroup_count[0] : 65535;
    uint32_t max_rows = max_x > UINT32_MAX / 32 ? UINT32_MAX : max_x * 32u;
    mm_layout l;
    VKL_TRY(mm_check_weight(op, f, w, a->max_binding_bytes, max_rows, &l));
    if (a->glu && a->norm_weight.buffer)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: the GLU prologue (glu) and the RMSNorm prologue (norm_weight) "
                        "cannot run on the same product",
                        op);
    if (a->glu && !dp_glu_kind_valid(a->glu_kind))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: glu_kind %d is not a GLU activation", op,
                        (int)a->glu_kind);
    if (a->n_tokens == 0) return VKLLM_OK;
    /* with the GLU prologue a token's X row is gate|up: 2 cols floats */
    uint64_t x_width = a->glu ? 2ull * w->cols : w->cols;
    if (x_width > UINT32_MAX)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: gate|up rows of 2 x %u floats", op,
                        w->cols);
    uint32_t x_stride = a->x_stride ? a->x_stride : (uint32_t)x_width;
    if (x_stride % 4 != 0 || x_stride < x_width)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: x_stride %u must be a multiple of 4 and >= %s %llu", op, x_stride,
                        a->glu ? "2 x cols (gate|up rows)" : "cols", (unsigned long long)x_width);
    uint64_t y_min = (uint64_t)a->y_col + w->rows;
    uint32_t y_stride = a->y_stride ? a->y_stride : (uint32_t)y_min;
    if (y_stride < y_min)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: y_stride %u < y_col %u + rows %u", op,
                        y_stride, a->y_col, w->rows);
    uint64_t x_floats = (uint64_t)(a->n_tokens - 1) * x_stride + x_width;
    uint64_t y_floats = (uint64_t)(a->n_tokens - 1) * y_stride + y_min;
    if (x_floats > UINT32_MAX || y_floats > UINT32_MAX)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: activations of %u tokens exceed 2^32 floats", op, a->n_tokens);
    VKL_TRY(mm_check_binding(op, "x", f, a->x, x_floats));
    VKL_TRY(mm_check_binding(op, "y", f, a->y, y_floats));
    if (a->bias.buffer) VKL_TRY(mm_check_binding(op, "bias", f, a->bias, w->rows));
    dp_config dp4a = {0};
    if (kernel == K_MATMUL_MATVEC) {
        /* VKLLM_MATVEC=basic|fast|dp4a overrides; by default dp4a where the device's int8
         * dot products are accelerated and every token fits one pass, else fast */
        const char *env = getenv("VKLLM_MATVEC");
        bool force_dp4a = env && !strcasecmp(env, "dp4a");
        if (force_dp4a && !f->integer_dot_product)
            return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                            "%s: VKLLM_MATVEC=dp4a needs integer dot products "
                            "(VK_KHR_shader_integer_dot_product); device '%s' lacks them",
                            op, f->name);
        kernel = mm_matvec_choice(f, a, &dp4a);
    } else if (kernel == K_MATMUL_MATVEC_DP4A && !dp_configure(f, a, &dp4a)) {
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: the dp4a matvec needs integer dot products (device '%s': %s), "
                        "subgroup arithmetic (%s), a subgroup reduction (requested: %d), a Q4_0, "
                        "Q8_0, Q4_K or Q6_K weight (got %s) and %u bytes of shared memory for one "
                        "token's quantized X (device: %u)",
                        op, f->name, f->integer_dot_product ? "yes" : "no",
                        f->subgroup_arithmetic ? "yes" : "no", (int)a->reduce,
                        ggml_type_get_info(w->type).name, (unsigned)dp_shared_bytes(w->cols, 1),
                        f->max_shared_memory);
    }
    mv_config fast;
    if (kernel == K_MATMUL_MATVEC_FAST && !mv_configure(f, a, &l, &fast)) {
        if (a->kernel == K_MATMUL_MATVEC_FAST)
            return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                            "%s: the fast matvec needs subgroup arithmetic (device '%s': %s), a "
                            "subgroup reduction (requested: %d) and a weight buffer reaching the "
                            "tensor end rounded up to 16 bytes",
                            op, f->name, f->subgroup_arithmetic ? "yes" : "no", (int)a->reduce);
        kernel = K_MATMUL_MATVEC_BASIC;
    }
    cm_shape shape = {0};
    if (kernel == K_MATMUL_COOPMAT) {
        /* matmul_coopmat.comp at every size: measured on the H100 (docs/perf-notes.md,
         * "outcomes of the second speed pass") 1.6-2.1x the 64x64 kernel at 512 tokens,
         * 3-4x at 16-64. VKLLM_MATMUL=old sends COOPMAT/AUTO back to the 64x64 kernel (A/B timing).
         */
        bool old = mm_env && !strcasecmp(mm_env, "old");
        if (!old && !cm_configure(f, w->rows, a->n_tokens, &shape)) {
            if (emulate)
                return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                                "%s: no matmul_coopmat shape fits %u bytes of shared memory", op,
                                f->max_shared_memory);
            old = true;
        }
        if (old) kernel = K_MATMUL_COOPMAT_BASIC;
        if (old && a->accumulate)
            return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                            "%s: accumulate needs matmul_coopmat.comp's split-K reduce; the "
                            "first-cut kernel (VKLLM_MATMUL=old or no shape fitting %u bytes of "
                            "shared memory) has none",
                            op, f->max_shared_memory);
    }
    if (a->norm_weight.buffer) VKL_TRY(dp_norm_prologue_check(op, f, a, kernel, &dp4a));
    if (a->glu) VKL_TRY(dp_glu_prologue_check(op, a, kernel));
    switch (kernel) {
    case K_MATMUL_COOPMAT:
        return cm_run(ctx, cmd, a, &l, &shape, emulate, x_stride, y_stride);
    case K_MATMUL_MATVEC_FAST:
        return mv_run_fast(ctx, cmd, a, &l, &fast, x_stride, y_stride);
    case K_MATMUL_MATVEC_DP4A:
        return dp_run(ctx, cmd, a, &l, &dp4a, x_stride, y_stride);
    case K_MATMUL_MATVEC_BASIC:
        return mm_run_matvec(ctx, cmd, a, &l, x_stride, y_stride);
    case K_MATMUL_TILED:
        return mm_run_tiled(ctx, cmd, a, &l, false, x_stride, y_stride);
    default:
        return mm_run_tiled(ctx, cmd, a, &l, true, x_stride, y_stride);
    }
}

vkllm_status k_matmul(gpu_context *ctx, gpu_cmd *cmd, const k_weight *w, gpu_binding x,
                      gpu_binding y, uint32_t n_tokens) {
    k_matmul_args a = {.w = w, .x = x, .y = y, .n_tokens = n_tokens};
    return k_matmul_ex(ctx, cmd, &a);
}

/* ---------------------------------------------------------------- k_get_rows */

#define GR_WG 64

vkllm_status k_get_rows_ex(gpu_context *ctx, gpu_cmd *cmd, const k_weight *w, gpu_binding ids,
                           gpu_binding out, uint32_t n_ids, uint32_t out_stride,
                           uint64_t max_binding_bytes) {
    static const char op[] = "k_get_rows";
    if (!ctx || !cmd) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: NULL argument", op);
    const gpu_features *f = gpu_context_features(ctx);
    mm_layout l;
    VKL_TRY(mm_check_weight(op, f, w, max_binding_bytes, UINT32_MAX, &l));
    if (n_ids == 0) return VKLLM_OK;
    if (out_stride == 0) out_stride = w->cols;
    if (out_stride % 4 != 0 || out_stride < w->cols)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: out_stride %u must be a multiple of 4 and >= cols %u", op, out_stride,
                        w->cols);
    uint64_t out_floats = (uint64_t)(n_ids - 1) * out_stride + w->cols;
    uint64_t invocations = (uint64_t)n_ids * (w->cols / 8);
    if (out_floats > UINT32_MAX || invocations > UINT32_MAX - GR_WG)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: %u ids of %u columns are too many", op,
                        n_ids, w->cols);
    if (!ids.buffer) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: ids has no buffer", op);
    VKL_TRY(mm_check_binding(op, "ids", f, ids, n_ids)); /* int32: 4 bytes each, like floats */
    VKL_TRY(mm_check_binding(op, "out", f, out, out_floats));
    ids.writable = false;
    out.writable = true;
    char name[64];
    snprintf(name, sizeof name, "get_rows_%s", l.suffix);
    gpu_pipeline_desc desc = {.shader = name,
                              .num_bindings = 3,
                              .push_constant_size = sizeof(gr_push),
                              .num_spec_constants = 1,
                              .spec_constants = {GR_WG}};
    gpu_pipeline *pipeline;
    VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    uint32_t gx, gy;
    mm_grid(f, (invocations + GR_WG - 1) / GR_WG, &gx, &gy);
    for (uint32_t r0 = 0; r0 < w->rows; r0 += l.rows_per_range) {
        uint32_t n = w->rows - r0 < l.rows_per_range ? w->rows - r0 : l.rows_per_range;
        gr_push push = {.rows = n,
                        .cols = w->cols,
                        .row_bytes = (uint32_t)l.row_bytes,
                        .row_base = r0,
                        .total_rows = w->rows,
                        .n_ids = n_ids,
                        .out_stride = out_stride,
                        .write_invalid = r0 == 0};
        gpu_binding bindings[3] = {mm_range_binding(w, &l, r0, n, &push.skew), ids, out};
        gpu_cmd_dispatch(cmd, pipeline, bindings, 3, &push, sizeof push, gx, gy, 1);
    }
    return VKLLM_OK;
}

vkllm_status k_get_rows(gpu_context *ctx, gpu_cmd *cmd, const k_weight *w, gpu_binding ids,
                        gpu_binding out, uint32_t n_ids) {
    return k_get_rows_ex(ctx, cmd, w, ids, out, n_ids, 0, 0);
}
