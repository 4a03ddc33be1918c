/* k_matmul.c: host side of the weight kernels (see k_matmul.h).
 *
 * Owns: argument checks, the choice of kernel and of its spec constants from the
 * device's features, and the split of large weights into row ranges whose
 * bindings fit max_storage_buffer_range. Invariants kept for the shaders
 * (dequant.glsl, matvec.comp, matvec_fast.comp, matvec_dp4a.comp, matmul.comp,
 * matmul_coopmat.comp, get_rows.comp):
 *   - every weight binding starts at a multiple of min_storage_offset_alignment and
 *     ends at the range's last row rounded up to 4 bytes; skew = bytes from the
 *     binding start to the range's row 0 (even, < alignment; a multiple of 4 for
 *     types whose block size is, as the weight offset must be a multiple of 4);
 *   - byte offsets inside a binding fit in 32 bits (bindings are capped below 4 GiB);
 *   - x_offset, x_stride and cols are multiples of 4 floats (vec4 reads of X);
 *   - the push constant structs below match the shaders' `Push` blocks field by field. */
#include "exec/k_matmul.h"

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

static const char *mm_suffix(ggml_type type) {
    for (size_t i = 0; i < sizeof mm_types / sizeof mm_types[0]; i++)
        if (mm_types[i].type == type) return mm_types[i].suffix;
    return NULL;
}

bool k_matmul_type_supported(ggml_type type) {
    return mm_suffix(type) != NULL;
}

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

typedef struct gr_push { /* get_rows.comp */
    uint32_t rows, cols, row_bytes, skew;
    uint32_t row_base, total_rows, n_ids, out_stride, write_invalid;
} gr_push;

/* ---------------------------------------------------------------- weight checks and ranges */

/* Checked geometry of a weight, and how its rows are split over bindings. */
typedef struct mm_layout {
    const char *suffix;
    uint64_t row_bytes;
    uint32_t rows_per_range;
    uint64_t align;
} mm_layout;

static uint64_t mm_binding_limit(const gpu_features *f, uint64_t max_binding_bytes) {
    uint64_t limit = f->max_storage_buffer_range;
    if (max_binding_bytes && max_binding_bytes < limit) limit = max_binding_bytes;
    if (limit > 0xfffff000ull) limit = 0xfffff000ull; /* 32-bit byte offsets in the shaders */
    return limit;
}

static vkllm_status mm_check_weight(const char *op, const gpu_features *f, const k_weight *w,
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
static gpu_binding mm_range_binding(const k_weight *w, const mm_layout *l, uint32_t r0, uint32_t n,
                                    uint32_t *skew) {
    uint64_t start = w->offset + (uint64_t)r0 * l->row_bytes;
    uint64_t aligned = start - start % l->align;
    uint64_t end4 = (start + (uint64_t)n * l->row_bytes + 3) & ~3ull;
    *skew = (uint32_t)(start - aligned);
    return (gpu_binding){w->buffer, aligned, end4 - aligned, false};
}

/* Bytes a binding can show to a shader (range 0 = to the end, clamped to the limit). */
static uint64_t mm_binding_bytes(const gpu_features *f, gpu_binding b) {
    if (!b.buffer || b.offset > b.buffer->size) return 0;
    uint64_t bytes = b.range ? b.range : b.buffer->size - b.offset;
    if (b.offset + bytes > b.buffer->size) return 0;
    if (bytes > f->max_storage_buffer_range) bytes = f->max_storage_buffer_range;
    return bytes;
}

static vkllm_status mm_check_binding(const char *op, const char *name, const gpu_features *f,
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
static void mm_grid(const gpu_features *f, uint64_t n, uint32_t *gx, uint32_t *gy) {
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

#define MM_MATVEC_MAX_TOKENS 8
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
static bool mm_env_is(const char *value) {
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

/* ---------------------------------------------------------------- k_matmul */

/* One dispatch per row range of W over columns [c0, c0 + nc) of every row (the whole
 * row for all kernels but the split-K slices of matmul_coopmat.comp): the shader sees
 * rows of nc columns that start c0's byte later (skew) and keep row_bytes apart, and X
 * from column c0 (c0 is a multiple of the block size and of 8). */
static vkllm_status mm_dispatch_cols(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
                                     const mm_layout *l, gpu_pipeline *pipeline, bool matvec,
                                     uint32_t tile_m, uint32_t tile_n, uint32_t t0, uint32_t nt,
                                     uint32_t x_stride, uint32_t y_stride, uint32_t c0,
                                     uint32_t nc) {
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
static vkllm_status mm_dispatch_ranges(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
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
    uint32_t sg_min =
        f->subgroup_size_control && f->subgroup_min_size ? f->subgroup_min_size : f->subgroup_size;
    if (sg_min == 0 || sg_min > wg) sg_min = wg;
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

/* ---------------------------------------------------------------- matvec_fast
 * See matvec_fast.comp. Tuning (defaults measured against nothing yet; see
 * docs/perf-notes.md): MV_ROWS rows per subgroup, MV_LOADS uvec4 loads per lane per row
 * and chunk, MV_SUBGROUPS subgroups per workgroup (halved for weights of <= 2048 rows so
 * that K/V projections still give a few hundred workgroups). VKLLM_MATVEC_TUNE="R,L,S"
 * overrides the three for experiments. */

#define MV_ROWS 2
#define MV_LOADS 4 /* 2 for many rows on 32-lane subgroups, see mv_configure */
#define MV_SUBGROUPS 4
#define MV_FEW_ROWS 2048
#define MV_WINDOW_SLACK 30 /* a chunk's 16-byte window exceeds its bytes by < 2*15 */

typedef struct mv_config {
    uint32_t wg, rows, loads, rows_per_wg;
    uint32_t chunk_blocks;
    uint32_t rows_per_range;
    uint64_t align; /* binding offsets: multiple of 16 and of the device's alignment */
} mv_config;

/* Bytes and elements of one shader "block" (F32/F16 rows are read in groups of 8). */
static void mv_shader_block(ggml_type type, uint32_t *elems, uint32_t *bytes) {
    ggml_type_info info = ggml_type_get_info(type);
    *elems = info.block_elems < 8 ? 8 : info.block_elems;
    *bytes = info.block_elems < 8 ? 8 * info.block_bytes : info.block_bytes;
}

static uint32_t mv_sg_min(const gpu_features *f) {
    uint32_t m =
        f->subgroup_size_control && f->subgroup_min_size ? f->subgroup_min_size : f->subgroup_size;
    return m ? m : 1;
}

/* The widest subgroup the driver may give a matvec pipeline (never below the default). */
static uint32_t mv_sg_max(const gpu_features *f) {
    uint32_t m =
        f->subgroup_size_control && f->subgroup_max_size ? f->subgroup_max_size : f->subgroup_size;
    if (m < f->subgroup_size) m = f->subgroup_size;
    return m ? m : 1;
}

/* Invocations of a workgroup of *sgs full subgroups of any size the driver may pick (a
 * multiple of the largest), halving *sgs until it fits the device; 0 if even one does
 * not. */
static uint32_t mv_workgroup_size(const gpu_features *f, uint32_t *sgs) {
    uint32_t wg = *sgs * mv_sg_max(f);
    while (wg > f->max_workgroup_invocations && *sgs > 1) {
        *sgs /= 2;
        wg = *sgs * mv_sg_max(f);
    }
    return wg > f->max_workgroup_invocations ? 0 : wg;
}

/* Fills *c for weight w (checked layout l); false when the fast kernel cannot run it. */
static bool mv_configure(const gpu_features *f, const k_matmul_args *a, const mm_layout *l,
                         mv_config *c) {
    const k_weight *w = a->w;
    if (!f->subgroup_arithmetic || a->reduce == K_REDUCE_SHARED) return false;
    uint32_t rows = MV_ROWS, loads = MV_LOADS, sgs = MV_SUBGROUPS;
    const char *tune = getenv("VKLLM_MATVEC_TUNE");
    if (tune && *tune) {
        unsigned r, ld, s;
        if (sscanf(tune, "%u,%u,%u", &r, &ld, &s) == 3 && r >= 1 && r <= 4 && ld >= 1 && ld <= 16 &&
            s >= 1 && s <= 16) {
            rows = r;
            loads = ld;
            sgs = s;
        }
    } else {
        /* 32-lane subgroups: 2 loads per lane and row (1 KiB per row and chunk) are enough
         * bytes in flight at full occupancy and leave L1 room for X; few rows (K/V
         * projections) get half-size workgroups (more of them) and 4 loads per lane.
         * Smaller subgroups (lavapipe's 8) keep 4 so a chunk holds a Q6_K block. */
        bool few = w->rows <= MV_FEW_ROWS;
        if (few && sgs > 1) sgs /= 2;
        if (mv_sg_min(f) >= 32 && !few) loads = 2;
    }
    uint32_t sg = f->subgroup_size ? f->subgroup_size : 1;
    uint32_t wg = mv_workgroup_size(f, &sgs);
    if (wg == 0) return false;
    while ((uint64_t)rows * loads * wg * 16 > f->max_shared_memory && loads > 1)
        loads /= 2;
    if ((uint64_t)rows * loads * wg * 16 > f->max_shared_memory) return false;
    uint32_t be, bb;
    mv_shader_block(w->type, &be, &bb);
    uint32_t cap = loads * mv_sg_min(f) * 16;
    if (cap <= MV_WINDOW_SLACK + bb) return false;
    uint32_t cb_max = (cap - MV_WINDOW_SLACK) / bb;
    uint32_t n_blocks = w->cols / be;
    uint32_t n_chunks = (n_blocks + cb_max - 1) / cb_max;
    c->chunk_blocks = (n_blocks + n_chunks - 1) / n_chunks; /* even chunks */
    /* uvec4 reads: the binding must reach the tensor end rounded up to 16 */
    uint64_t end16 = (w->offset + l->row_bytes * w->rows + 15) & ~15ull;
    if (end16 > w->buffer->size) return false;
    c->align = l->align < 16 ? 16 : l->align;
    if (c->align % 16) c->align *= 16; /* a power of two in practice; keep both multiples */
    uint64_t limit = mm_binding_limit(f, a->max_binding_bytes);
    uint64_t usable = limit > c->align + 16 ? limit - c->align - 16 : 0;
    uint64_t per_range = usable / l->row_bytes;
    if (per_range == 0) return false;
    if (per_range > l->rows_per_range) per_range = l->rows_per_range;
    c->rows_per_range = (uint32_t)per_range;
    c->wg = wg;
    c->rows = rows;
    c->loads = loads;
    c->rows_per_wg = rows * (wg / sg);
    return true;
}

bool k_matmul_matvec_fast_applies(const gpu_features *f, const k_matmul_args *a) {
    if (!f || !a || !a->w || !a->w->buffer) return false;
    mm_layout l;
    if (mm_check_weight("k_matmul", f, a->w, a->max_binding_bytes, UINT32_MAX, &l) != VKLLM_OK)
        return false;
    mv_config c;
    return mv_configure(f, a, &l, &c);
}

/* The matvec kernels' X, Y and bias bindings (X stands in for an absent bias: the
 * shaders read it only when HAS_BIAS). */
static void mv_bindings(const k_matmul_args *a, gpu_binding *x, gpu_binding *y, gpu_binding *bias) {
    *x = a->x;
    *y = a->y;
    x->writable = false;
    y->writable = true;
    *bias = a->bias.buffer ? a->bias : *x;
    bias->writable = false;
}

static vkllm_status mv_run_fast(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
                                const mm_layout *l, const mv_config *c, uint32_t x_stride,
                                uint32_t y_stride) {
    const gpu_features *f = gpu_context_features(ctx);
    const k_weight *w = a->w;
    char name[64];
    snprintf(name, sizeof name, "matvec_fast_%s", l->suffix);
    gpu_binding x, y, bias;
    mv_bindings(a, &x, &y, &bias);
    for (uint32_t t0 = 0; t0 < a->n_tokens; t0 += MM_MATVEC_MAX_TOKENS) {
        uint32_t nt = a->n_tokens - t0;
        if (nt > MM_MATVEC_MAX_TOKENS) nt = MM_MATVEC_MAX_TOKENS;
        gpu_pipeline_desc desc = {.shader = name,
                                  .num_bindings = 4,
                                  .push_constant_size = sizeof(mv_push),
                                  .num_spec_constants = 7,
                                  .spec_constants = {c->wg, c->rows, nt, c->loads,
                                                     a->bias.buffer != NULL, c->rows_per_wg,
                                                     a->accumulate}};
        gpu_pipeline *pipeline;
        VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
        for (uint32_t r0 = 0; r0 < w->rows; r0 += c->rows_per_range) {
            uint32_t n = w->rows - r0 < c->rows_per_range ? w->rows - r0 : c->rows_per_range;
            uint64_t start = w->offset + (uint64_t)r0 * l->row_bytes;
            uint64_t aligned = start - start % c->align;
            uint64_t end16 = (start + (uint64_t)n * l->row_bytes + 15) & ~15ull;
            mv_push push = {.rows = n,
                            .cols = w->cols,
                            .row_bytes = (uint32_t)l->row_bytes,
                            .skew = (uint32_t)(start - aligned),
                            .x_stride = x_stride,
                            .y_stride = y_stride,
                            .y_offset = a->y_col + r0 + t0 * y_stride,
                            .bias_offset = r0,
                            .chunk_blocks = c->chunk_blocks,
                            .x_offset = t0 * x_stride};
            gpu_binding bindings[4] = {{w->buffer, aligned, end16 - aligned, false}, x, y, bias};
            uint32_t gx, gy;
            mm_grid(f, (n + c->rows_per_wg - 1) / c->rows_per_wg, &gx, &gy);
            gpu_cmd_dispatch(cmd, pipeline, bindings, 4, &push, sizeof push, gx, gy, 1);
        }
    }
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- matvec_dp4a
 * See matvec_dp4a.comp and docs/notes-dp4a.md. Workgroups of DP_SUBGROUPS subgroups (half
 * for weights of <= MV_FEW_ROWS rows), rows per subgroup and units per lane below,
 * persistent over row groups: at most DP_MAX_WG workgroups (about 2 per SM on an H100),
 * each quantizing X once for all its groups, the groups spread evenly. Tokens per pass: as
 * many as the quantized X (1.5 bytes per element and token) fits shared memory, at most 8.
 * VKLLM_MATVEC_DP4A_TUNE="R,S,W[,U[,L]]" overrides rows per subgroup, subgroups, the
 * workgroup cap, units per lane in flight (loop 2) and the main loop (L = 1: the first
 * version); VKLLM_MATVEC_DP4A_LOOP=1 picks the first version with its own defaults. */

/* Loop 2: 2 rows per subgroup (X read once per token for both), fewer where the weight has
 * too few rows for DP_MIN_GROUPS row groups (K/V projections: 1); 2 units per lane in
 * flight for 4-bit weights at 1 token (bytes in flight), else 1 (registers: a Q8_0 unit
 * holds 12 loaded words, Q6_K 19, Q4_0/Q4_K 8; Q8_0's 34 bytes per unit are enough in
 * flight). From DP_MANY_TOKENS tokens on: DP_MANY_TOKENS_ROWS rows per subgroup and the
 * full DP_SUBGROUPS for every weight (each X word read from shared memory then serves 4
 * rows: at 8 tokens shared-memory reads, not W, bound the kernel; H100, 8 tokens, Q4_0:
 * q/o 36.6 -> 22.8 µs, k/v 27.8 -> 20.0, gate/up 85.1 -> 61.9, down 133.5 -> 88.6; at 4
 * tokens it lost on 3 of 4 shapes; docs/perf-notes.md, "third speed pass"). Loop 1 (first
 * version): 1 row per subgroup, measured best on the H100 (docs/perf-notes.md, "outcomes
 * of the second speed pass"). */
#define DP_ROWS 2
#define DP_MANY_TOKENS 6
#define DP_MANY_TOKENS_ROWS 4
#define DP_V1_ROWS 1
#define DP_MIN_GROUPS 256
#define DP_SUBGROUPS 8
#define DP_MAX_WG 264

typedef struct dp_config {
    uint32_t wg, rows, max_wg, max_tokens;
    uint32_t units;     /* loop 2: units (32 weights) per lane and row in flight */
    uint32_t col_chunk; /* columns per dispatch (w->cols unless split, see dp_configure) */
    uint32_t loop;      /* 2: default main loop; 1: the first version */
} dp_config;

static bool dp_type_supported(ggml_type type) {
    return type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_K ||
           type == GGML_TYPE_Q6_K;
}

/* Shared memory of the quantized X of n_tokens (matvec_dp4a.comp's xq and xds: int8 X and
 * one vec4 per block of 32, each rounded up to 128 bytes). */
static uint64_t dp_shared_bytes(uint32_t cols, uint32_t n_tokens) {
    uint64_t q = ((uint64_t)n_tokens * cols + 127) & ~127ull;
    uint64_t blocks = ((uint64_t)n_tokens * (cols / 32) + 7) & ~7ull;
    return q + 16 * blocks;
}

/* Fills *c for weight w; false when matvec_dp4a cannot run it. */
static bool dp_configure(const gpu_features *f, const k_matmul_args *a, dp_config *c) {
    const k_weight *w = a->w;
    if (!f->integer_dot_product || !f->subgroup_arithmetic || !f->subgroup_shuffle ||
        a->reduce == K_REDUCE_SHARED || !dp_type_supported(w->type))
        return false;
    const char *loop_env = getenv("VKLLM_MATVEC_DP4A_LOOP");
    uint32_t loop = loop_env && !strcmp(loop_env, "1") ? 1 : 2;
    bool many_tokens = loop == 2 && a->n_tokens >= DP_MANY_TOKENS;
    uint32_t rows = loop == 1 ? DP_V1_ROWS : many_tokens ? DP_MANY_TOKENS_ROWS : DP_ROWS;
    uint32_t sgs = DP_SUBGROUPS, max_wg = DP_MAX_WG;
    uint32_t units =
        a->n_tokens <= 1 && (w->type == GGML_TYPE_Q4_0 || w->type == GGML_TYPE_Q4_K) ? 2 : 1;
    const char *tune = getenv("VKLLM_MATVEC_DP4A_TUNE");
    unsigned tr, ts, tw, tu = units, tl = loop == 1;
    int n = tune && *tune ? sscanf(tune, "%u,%u,%u,%u,%u", &tr, &ts, &tw, &tu, &tl) : 0;
    if (n >= 3 && tr >= 1 && tr <= 8 && ts >= 1 && ts <= 32 && tw >= 1 && tu >= 1 && tu <= 4 &&
        tl <= 1) {
        rows = tr;
        sgs = ts;
        max_wg = tw;
        units = tu;
        loop = tl ? 1 : 2;
    } else if (!many_tokens) {
        if (w->rows <= MV_FEW_ROWS) sgs /= 2;
        while (loop == 2 && rows > 1 && w->rows / (sgs * rows) < DP_MIN_GROUPS)
            rows /= 2;
    }
    uint32_t wg = mv_workgroup_size(f, &sgs);
    if (wg == 0) return false;
    /* Column chunks: loop 2 splits rows whose quantized X of all the tokens (at most 8)
     * would not fit shared memory into chunks of whole blocks that do, one dispatch each
     * (later chunks accumulate), so W is read once instead of once per token pass. Not
     * with the RMSNorm prologue (its 1/rms needs the whole row). */
    uint32_t want = a->n_tokens > MM_MATVEC_MAX_TOKENS ? MM_MATVEC_MAX_TOKENS : a->n_tokens;
    if (want == 0) want = 1;
    uint32_t be = ggml_type_get_info(w->type).block_elems, nb = w->cols / be;
    c->col_chunk = w->cols;
    if (loop == 2 && !a->norm_weight.buffer)
        for (uint32_t k = 1; k <= nb; k++) {
            uint32_t cc = (nb + k - 1) / k * be;
            uint32_t cc1024 = (cc + 1023) / 1024 * 1024; /* constant X offsets per token */
            if (cc1024 < w->cols && dp_shared_bytes(cc1024, want) <= f->max_shared_memory)
                cc = cc1024;
            if (dp_shared_bytes(cc, want) <= f->max_shared_memory) {
                c->col_chunk = cc;
                break;
            }
        }
    c->max_tokens = 0;
    while (c->max_tokens < MM_MATVEC_MAX_TOKENS &&
           dp_shared_bytes(c->col_chunk, c->max_tokens + 1) <= f->max_shared_memory)
        c->max_tokens++;
    if (c->max_tokens == 0) return false;
    c->wg = wg;
    c->rows = rows;
    c->max_wg = max_wg;
    c->units = units;
    c->loop = loop;
    return true;
}

/* Loop 2's weight binding: 16-byte loads need its start at a multiple of 16 and its end
 * at the tensor's end rounded up to 16 (inside the buffer), Q4_K also 16-byte aligned
 * blocks; otherwise word loads on mm_range_binding's binding. Sets *vec, *align (binding
 * offsets) and *rows_per_range. */
static void dp_binding_plan(const gpu_features *f, const k_matmul_args *a, const mm_layout *l,
                            const dp_config *c, bool *vec, uint64_t *align,
                            uint32_t *rows_per_range) {
    const k_weight *w = a->w;
    uint64_t a16 = l->align < 16 ? 16 : l->align;
    if (a16 % 16) a16 *= 16; /* a power of two in practice; keep both multiples */
    uint64_t end16 = (w->offset + l->row_bytes * w->rows + 15) & ~15ull;
    uint64_t limit = mm_binding_limit(f, a->max_binding_bytes);
    uint64_t usable = limit > a16 + 16 ? limit - a16 - 16 : 0;
    uint64_t per_range = usable / l->row_bytes;
    if (per_range > l->rows_per_range) per_range = l->rows_per_range;
    *vec = c->loop == 2 && end16 <= w->buffer->size && per_range > 0 &&
           (w->type != GGML_TYPE_Q4_K || w->offset % 16 == 0);
    *align = *vec ? a16 : l->align;
    *rows_per_range = *vec ? (uint32_t)per_range : l->rows_per_range;
}

bool k_matmul_matvec_dp4a_applies(const gpu_features *f, const k_matmul_args *a,
                                  uint32_t *max_tokens) {
    if (!f || !a || !a->w || !a->w->buffer) return false;
    mm_layout l;
    if (mm_check_weight("k_matmul", f, a->w, a->max_binding_bytes, UINT32_MAX, &l) != VKLLM_OK)
        return false;
    dp_config c;
    if (!dp_configure(f, a, &c)) return false;
    if (max_tokens) *max_tokens = c.max_tokens;
    return true;
}

/* MATVEC's shader for this product before the fast kernel's own fallback (basic, fast
 * or dp4a; *dp filled for dp4a): VKLLM_MATVEC=basic|fast|dp4a overrides; by default dp4a
 * where the device's int8 dot products are accelerated and every token fits one pass. */
static k_matmul_kernel dp_matvec_choice(const gpu_features *f, const k_matmul_args *a,
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
    k_matmul_kernel k = dp_matvec_choice(f, a, &dp);
    bool fast_ok = k_matmul_matvec_fast_applies(f, a);
    if (k == K_MATMUL_MATVEC_FAST && !fast_ok) k = K_MATMUL_MATVEC_BASIC;
    return k;
}

static vkllm_status mv_run_dp4a(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
                                const mm_layout *l, const dp_config *c, uint32_t x_stride,
                                uint32_t y_stride) {
    const gpu_features *f = gpu_context_features(ctx);
    const k_weight *w = a->w;
    char name[64];
    snprintf(name, sizeof name, "matvec_dp4a_%s", l->suffix);
    gpu_binding x, y, bias;
    mv_bindings(a, &x, &y, &bias);
    /* fewest rows a workgroup's pass covers (subgroups of the largest size) */
    uint32_t group_rows = c->rows * (c->wg / mv_sg_max(f));
    if (group_rows == 0) group_rows = c->rows;
    bool vec;
    uint64_t align;
    uint32_t rows_per_range;
    dp_binding_plan(f, a, l, c, &vec, &align, &rows_per_range);
    ggml_type_info info = ggml_type_get_info(w->type);
    /* constants 7, 8: the RMSNorm prologue and its eps (bits of the float); 9, 10: the GLU
     * prologue (k_glu_kind + 1) and the gate-to-up distance (the whole row's cols, also
     * when the row runs in column chunks); 12-14: units per lane, main loop (1: first
     * version), 16-byte loads */
    uint32_t glu_x = a->glu ? (uint32_t)a->glu_kind + 1 : 0, glu_up = a->glu ? w->cols : 0;
    uint32_t eps_bits;
    memcpy(&eps_bits, &a->norm_eps, 4);
    for (uint32_t t0 = 0; t0 < a->n_tokens; t0 += c->max_tokens) {
        uint32_t nt = a->n_tokens - t0;
        if (nt > c->max_tokens) nt = c->max_tokens;
        /* column chunks (dp_configure): the first one adds the bias, later ones accumulate */
        for (uint32_t c0 = 0; c0 < w->cols; c0 += c->col_chunk) {
            uint32_t nc = w->cols - c0 < c->col_chunk ? w->cols - c0 : c->col_chunk;
            bool first = c0 == 0;
            gpu_pipeline_desc desc = {
                .shader = name,
                .num_bindings = 5,
                .push_constant_size = sizeof(mv_push),
                .num_spec_constants = 15,
                .spec_constants = {c->wg, c->rows, nt, nc, first && a->bias.buffer != NULL, 0,
                                   a->accumulate || !first, a->norm_weight.buffer != NULL,
                                   a->norm_weight.buffer ? eps_bits : 0, glu_x, glu_up, 0, c->units,
                                   c->loop == 1, vec}};
            gpu_pipeline *pipeline;
            VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
            uint32_t chunk_skew = c0 / info.block_elems * info.block_bytes;
            for (uint32_t r0 = 0; r0 < w->rows; r0 += rows_per_range) {
                uint32_t n = w->rows - r0 < rows_per_range ? w->rows - r0 : rows_per_range;
                mv_push push = {.rows = n,
                                .cols = nc,
                                .row_bytes = (uint32_t)l->row_bytes,
                                .x_stride = x_stride,
                                .y_stride = y_stride,
                                .y_offset = a->y_col + r0 + t0 * y_stride,
                                .bias_offset = r0,
                                .x_offset = t0 * x_stride + c0};
                gpu_binding wb = mm_range_binding(w, l, r0, n, &push.skew);
                if (vec) { /* 16-byte aligned start, end rounded up to 16 */
                    uint64_t start = w->offset + (uint64_t)r0 * l->row_bytes;
                    uint64_t aligned = start - start % align;
                    uint64_t end16 = (start + (uint64_t)n * l->row_bytes + 15) & ~15ull;
                    push.skew = (uint32_t)(start - aligned);
                    wb = (gpu_binding){w->buffer, aligned, end16 - aligned, false};
                }
                push.skew += chunk_skew; /* the chunk's first block in each row */
                gpu_binding norm = a->norm_weight.buffer ? a->norm_weight : x; /* x: unused */
                norm.writable = false;
                gpu_binding bindings[5] = {wb, x, y, bias, norm};
                /* loop 2 balances rows over subgroups whatever the count: the cap; loop 1
                 * gives every workgroup the same number of groups */
                uint64_t groups = (n + group_rows - 1) / group_rows;
                uint64_t passes = (groups + c->max_wg - 1) / c->max_wg;
                uint64_t n_wg = groups < c->max_wg ? groups : c->max_wg;
                if (c->loop == 1) n_wg = (groups + passes - 1) / passes;
                uint32_t gx, gy;
                mm_grid(f, n_wg, &gx, &gy);
                gpu_cmd_dispatch(cmd, pipeline, bindings, 5, &push, sizeof push, gx, gy, 1);
            }
        }
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

/* ---------------------------------------------------------------- matmul_coopmat.comp
 * Tile shape (spec constants 0-5, 8, 9; see the shader header): subgroups SG_M x SG_N x
 * SG_K, accumulators FM x FN of 16x8 per subgroup; BM = SG_M*FM*16 rows, BN = SG_N*FN*8
 * tokens, K step 16*KSUB*SG_K, PAD 16-byte chunks of padding per shared row, PREFETCH
 * (next step's loads before or after the products). Chosen by n_tokens and rows
 * (docs/perf-notes.md, "coopmat"):
 *   <= 16 / <= 32 tokens: 32 x BN tiles (BN = 16 / 32), K split over 4 subgroups (8
 *     subgroups in all): rows/32 workgroups, each streaming its rows of W once for all
 *     tokens; weights of >= 8192 rows use 64 x BN tiles with K split over 2 (every
 *     workgroup re-reads all of X: 64-row tiles halve that traffic and still give
 *     >= 128 workgroups);
 *   <= 64 tokens: 32 x 64 (64 x 64 for >= 8192 rows), K split over 2;
 *   more: 128 x 128 (2 x 4 subgroups of 4 x 4 accumulators) when that gives >= 128
 *     workgroups, else 128 x 64, else 64 x 64 with K split over 2.
 * Every automatic shape uses KSUB 2 (32 columns per K slice and step), PAD 1 and
 * PREFETCH 1. VKLLM_MATMUL_TUNE="SG_M,FM,SG_N,FN,SG_K[,KSUB[,PAD[,PREFETCH]]]" forces a
 * shape (tests, experiments; defaults 2, 1, 1; docs/perf-notes.md, "coopmat, second pass"). A shape
 * whose shared memory exceeds the device limit halves SG_K, then KSUB, then falls back
 * to the first-cut kernel. */

#define CM_MIN_TILES 128 /* about the SM count of the GPUs this is tuned for (H100: 132) */
#define CM_BIG_ROWS 8192

typedef struct cm_shape {
    uint32_t sg_m, fm, sg_n, fn, sg_k;
    uint32_t ksub;     /* 16-column products per K slice and step */
    uint32_t pad;      /* 16-byte chunks of padding per shared tile row */
    uint32_t prefetch; /* 1: next step's loads before the products, 0: after */
} cm_shape;

static uint32_t cm_bm(cm_shape s) {
    return s.sg_m * s.fm * 16;
}
static uint32_t cm_bn(cm_shape s) {
    return s.sg_n * s.fn * 8;
}
static uint32_t cm_subgroups(cm_shape s) {
    return s.sg_m * s.sg_n * s.sg_k;
}

static uint64_t cm_shared_bytes(cm_shape s) {
    uint64_t row_chunks = 2ull * s.ksub * s.sg_k + s.pad; /* 16-byte chunks per tile row */
    return 2ull * (cm_bm(s) + cm_bn(s)) * row_chunks * 16 + 512ull * cm_subgroups(s);
}

static uint64_t cm_tiles(cm_shape s, uint32_t rows, uint32_t n_tokens) {
    return (uint64_t)((rows + cm_bm(s) - 1) / cm_bm(s)) * ((n_tokens + cm_bn(s) - 1) / cm_bn(s));
}

static bool cm_shape_valid(cm_shape s) {
    /* rows tiles of >= 32 keep gl_WorkGroupID.x within the launcher's row-range cap */
    return s.sg_m && s.fm && s.sg_n && s.fn && s.sg_k && cm_bm(s) >= 32 && cm_bm(s) <= 512 &&
           cm_bn(s) <= 512 && s.fm * s.fn <= 32 && cm_subgroups(s) <= 32 && s.sg_k <= 8 &&
           s.ksub >= 1 && s.ksub <= 8 && s.pad <= 8 && s.prefetch <= 1;
}

/* The automatic shapes (ksub, pad and prefetch are set by the caller). */
static cm_shape cm_choose_auto_shape(uint32_t rows, uint32_t n_tokens) {
    bool many_rows = rows >= CM_BIG_ROWS;
    if (n_tokens <= 16) return many_rows ? (cm_shape){4, 1, 1, 2, 2} : (cm_shape){2, 1, 1, 2, 4};
    if (n_tokens <= 32) return many_rows ? (cm_shape){4, 1, 1, 4, 2} : (cm_shape){2, 1, 1, 4, 4};
    if (n_tokens <= 64) return many_rows ? (cm_shape){4, 1, 2, 4, 2} : (cm_shape){2, 1, 2, 4, 2};
    cm_shape big = {2, 4, 4, 4, 1}, mid = {2, 4, 2, 4, 1}, small = {2, 2, 2, 4, 2};
    if (cm_tiles(big, rows, n_tokens) >= CM_MIN_TILES) return big;
    if (cm_tiles(mid, rows, n_tokens) >= CM_MIN_TILES) return mid;
    return small;
}

static cm_shape cm_choose_shape(uint32_t rows, uint32_t n_tokens) {
    const char *tune = getenv("VKLLM_MATMUL_TUNE");
    if (tune && *tune) {
        unsigned v[8] = {0, 0, 0, 0, 0, 2, 1, 1};
        int n = sscanf(tune, "%u,%u,%u,%u,%u,%u,%u,%u", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                       &v[6], &v[7]);
        if (n >= 5) {
            cm_shape s = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
            if (cm_shape_valid(s)) return s;
        }
    }
    cm_shape s = cm_choose_auto_shape(rows, n_tokens);
    s.ksub = 2;
    s.pad = 1;
    s.prefetch = 1;
    return s;
}

/* The shape matmul_coopmat.comp runs for this product, fitted to the shared memory; false
 * when none fits (the caller runs the first-cut kernel). */
static bool cm_configure(const gpu_features *f, uint32_t rows, uint32_t n_tokens, cm_shape *out) {
    cm_shape s = cm_choose_shape(rows, n_tokens);
    while (cm_shared_bytes(s) > f->max_shared_memory && s.sg_k > 1)
        s.sg_k /= 2;
    while (cm_shared_bytes(s) > f->max_shared_memory && s.ksub > 1)
        s.ksub /= 2;
    if (cm_shared_bytes(s) > f->max_shared_memory) return false;
    if (32 * cm_subgroups(s) > f->max_workgroup_invocations) return false;
    *out = s;
    return true;
}

/* ---------------------------------------------------------------- split-K across workgroups
 * A product whose tiles give fewer than ~2 workgroups per SM leaves the GPU latency-bound
 * (H100, Llama-3-8B at 64 tokens: ffn_down and wo run 128 workgroups at half the
 * FLOP rate of gate|up's 448; docs/notes-splitk.md). Then K is cut into S slices: S
 * dispatches of the unchanged matmul_coopmat.comp, slice s seeing rows of its columns
 * only (cols = slice length, weight skew moved to the slice's first block, x_offset to
 * its first column) and writing its partial Y to slice s of k_matmul_args.split_scratch
 * ([S][n_tokens][rows] f32, slices `slice_floats` apart so each has its own aligned
 * binding). The slices write disjoint bindings and read the same inputs, so the
 * automatic barriers let them run concurrently; split_k_reduce.comp then writes
 * Y = (accumulate ? Y : 0) + Σ_s partial_s + bias (one barrier). With accumulate and no
 * split, the product runs as one slice through the reduce (its += epilogue).
 * Automatic S: 1 (no split). Splitting the products that give few workgroups (S so that
 * tiles * S >= 384) was measured on the H100 as a loss at 64 and at 512 tokens (wo and
 * ffn_down 11.4 -> 13.0 ms per 64-token step, 36.5 -> 39.7 ms per 512-token prefill,
 * plus the reduces; docs/perf-notes.md, "split-K"): this kernel is not starved of
 * workgroups. Slices are multiples of the K step (16*KSUB*SG_K) and the block (256 for
 * K-quants) where that keeps S slices, else of the block; the last is shorter.
 * VKLLM_MATMUL_SPLITK (A/B timing, tests): 0 (or 1, unset, auto) = no split, N = 2..8
 * slices for every product where K has that many blocks. A scratch too small for the
 * chosen S halves S (no split below 2). */

#define CM_SPLIT_MAX 8
#define CM_REDUCE_WG 256
#define CM_REDUCE_MAX_GROUPS 8192 /* grid-stride loop beyond */

typedef struct rd_push { /* split_k_reduce.comp */
    uint32_t rows, n_tokens, n_slices, slice_stride;
    uint32_t y_stride, y_offset, bias_offset;
} rd_push;

typedef struct cm_split {
    uint32_t slices;       /* partial products; 0: no scratch, Y written by the kernel */
    uint32_t slice_cols;   /* columns per slice; the last has cols - (slices-1) * slice_cols */
    uint64_t slice_floats; /* floats between slices in the scratch */
    uint64_t bytes;        /* scratch bytes used */
} cm_split;

/* VKLLM_MATMUL_SPLITK: 0 off (unset, empty, "auto": the automatic choice is no split),
 * else slices (<= 8). */
static int cm_split_env(void) {
    const char *env = getenv("VKLLM_MATMUL_SPLITK");
    if (!env || !*env || !strcasecmp(env, "auto")) return 0;
    long v = strtol(env, NULL, 10);
    if (v <= 1) return 0;
    return v > CM_SPLIT_MAX ? CM_SPLIT_MAX : (int)v;
}

static uint32_t cm_gcd(uint32_t a, uint32_t b) {
    while (b) {
        uint32_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static uint32_t cm_round_up(uint32_t v, uint32_t unit) {
    return (v + unit - 1) / unit * unit;
}

/* Slice length for about `want` slices of cols: a multiple of `step` (K step and block)
 * when that still gives `want` slices, else of `block`. */
static uint32_t cm_slice_cols(uint32_t cols, uint32_t want, uint32_t block, uint32_t step) {
    uint32_t per = (cols + want - 1) / want;
    uint32_t len = cm_round_up(per, step);
    if ((uint64_t)(want - 1) * len >= cols) len = cm_round_up(per, block);
    return len;
}

/* How this product uses the scratch: `have` bytes available (UINT64_MAX when sizing). */
static void cm_plan_split(const gpu_features *f, const k_weight *w, uint32_t n_tokens,
                          const cm_shape *s, bool accumulate, uint64_t have, cm_split *out) {
    *out = (cm_split){0};
    uint64_t align = f->min_storage_offset_alignment > 4 ? f->min_storage_offset_alignment : 4;
    uint64_t limit = mm_binding_limit(f, 0);
    uint64_t outputs = (uint64_t)n_tokens * w->rows;
    uint64_t slice_floats = (outputs * 4 + align - 1) / align * align / 4;
    uint32_t block = ggml_type_get_info(w->type).block_elems;
    if (block < 8) block = 8; /* F32/F16: groups of 8 */
    uint32_t bk = 16 * s->ksub * s->sg_k;
    uint32_t step = block / cm_gcd(block, bk) * bk;
    uint32_t want = (uint32_t)cm_split_env(); /* 0: no split */
    if (want > w->cols / block) want = w->cols / block;
    for (; want >= 2; want /= 2) {
        uint32_t len = cm_slice_cols(w->cols, want, block, step);
        uint32_t slices = (w->cols + len - 1) / len;
        uint64_t bytes = ((slices - 1) * slice_floats + outputs) * 4;
        if (slices < 2 || slices * slice_floats > UINT32_MAX || bytes > limit || bytes > have)
            continue;
        *out = (cm_split){slices, len, slice_floats, bytes};
        return;
    }
    if (accumulate) *out = (cm_split){1, w->cols, slice_floats, outputs * 4};
}

static bool cm_ranges_overlap(gpu_binding a, uint64_t a_bytes, gpu_binding b, uint64_t b_bytes) {
    return a.buffer == b.buffer && a.offset < b.offset + b_bytes && b.offset < a.offset + a_bytes;
}

/* Y (= or +=) Σ partial slices (+ bias). */
static vkllm_status cm_reduce(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
                              const cm_split *sp, uint32_t y_stride) {
    const gpu_features *f = gpu_context_features(ctx);
    gpu_binding partial = {a->split_scratch.buffer, a->split_scratch.offset, sp->bytes, false};
    gpu_binding y = a->y;
    y.writable = true;
    gpu_binding bias = a->bias.buffer ? a->bias : partial;
    bias.writable = false;
    gpu_pipeline_desc desc = {
        .shader = "split_k_reduce",
        .num_bindings = 3,
        .push_constant_size = sizeof(rd_push),
        .num_spec_constants = 3,
        .spec_constants = {CM_REDUCE_WG, a->bias.buffer != NULL, a->accumulate}};
    gpu_pipeline *pipeline;
    VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    rd_push push = {.rows = a->w->rows,
                    .n_tokens = a->n_tokens,
                    .n_slices = sp->slices,
                    .slice_stride = (uint32_t)sp->slice_floats,
                    .y_stride = y_stride,
                    .y_offset = a->y_col,
                    .bias_offset = 0};
    uint64_t groups = ((uint64_t)a->n_tokens * a->w->rows + CM_REDUCE_WG - 1) / CM_REDUCE_WG;
    if (groups > CM_REDUCE_MAX_GROUPS) groups = CM_REDUCE_MAX_GROUPS;
    uint32_t gx, gy;
    mm_grid(f, groups, &gx, &gy);
    gpu_binding bindings[3] = {partial, y, bias};
    gpu_cmd_dispatch(cmd, pipeline, bindings, 3, &push, sizeof push, gx, gy, 1);
    return VKLLM_OK;
}

static vkllm_status mm_run_coopmat(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a,
                                   const mm_layout *l, const cm_shape *s, bool emulate,
                                   uint32_t x_stride, uint32_t y_stride) {
    static const char op[] = "k_matmul";
    const gpu_features *f = gpu_context_features(ctx);
    const k_weight *w = a->w;
    uint64_t have = a->split_scratch.buffer ? mm_binding_bytes(f, a->split_scratch) : 0;
    cm_split sp;
    cm_plan_split(f, w, a->n_tokens, s, a->accumulate, have, &sp);
    if (a->accumulate && sp.bytes > have)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: accumulate with the cooperative-matrix kernel goes through the "
                        "split-K reduce: split_scratch has %llu bytes but needs %llu",
                        op, (unsigned long long)have, (unsigned long long)sp.bytes);
    if (sp.slices) {
        VKL_TRY(mm_check_binding(op, "split_scratch", f, a->split_scratch, sp.bytes / 4));
        uint64_t x_bytes = ((uint64_t)(a->n_tokens - 1) * x_stride + w->cols) * 4;
        uint64_t y_bytes = ((uint64_t)(a->n_tokens - 1) * y_stride + a->y_col + w->rows) * 4;
        bool overlap = cm_ranges_overlap(a->split_scratch, sp.bytes, a->x, x_bytes) ||
                       cm_ranges_overlap(a->split_scratch, sp.bytes, a->y, y_bytes) ||
                       (a->bias.buffer &&
                        cm_ranges_overlap(a->split_scratch, sp.bytes, a->bias, 4ull * w->rows));
        if (overlap)
            return vkl_fail(
                VKLLM_ERR_INVALID_ARGUMENT, "%s: split_scratch [%llu, +%llu) overlaps x, y or bias",
                op, (unsigned long long)a->split_scratch.offset, (unsigned long long)sp.bytes);
    }
    char name[64];
    snprintf(name, sizeof name, "matmul_cm_%s%s", emulate ? "emu_" : "", l->suffix);
    gpu_pipeline_desc desc = {.shader = name,
                              .num_bindings = 4,
                              .push_constant_size = sizeof(mm_push),
                              .num_spec_constants = 10,
                              .spec_constants = {s->sg_m, s->sg_n, s->sg_k, s->fm, s->fn, s->ksub,
                                                 a->bias.buffer != NULL && !sp.slices,
                                                 32 * cm_subgroups(*s), s->pad, s->prefetch},
                              .required_subgroup_size = emulate || f->subgroup_size == 32 ? 0 : 32};
    uint32_t bn = cm_bn(*s);
    if ((a->n_tokens + bn - 1) / bn >
        (f->max_workgroup_count[1] ? f->max_workgroup_count[1] : 65535))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: n_tokens %u is too large", op,
                        a->n_tokens);
    gpu_pipeline *pipeline;
    VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    if (!sp.slices)
        return mm_dispatch_ranges(ctx, cmd, a, l, pipeline, false, cm_bm(*s), bn, 0, a->n_tokens,
                                  x_stride, y_stride);
    /* slice sl: partial [n_tokens][rows] in its own binding; bias and accumulate wait for
     * the reduce */
    k_matmul_args slice = *a;
    slice.bias = (gpu_binding){0};
    slice.accumulate = false;
    slice.y_col = 0;
    uint64_t outputs = (uint64_t)a->n_tokens * w->rows;
    for (uint32_t sl = 0; sl < sp.slices; sl++) {
        uint32_t c0 = sl * sp.slice_cols;
        uint32_t nc = w->cols - c0 < sp.slice_cols ? w->cols - c0 : sp.slice_cols;
        slice.y =
            (gpu_binding){a->split_scratch.buffer,
                          a->split_scratch.offset + sl * sp.slice_floats * 4, outputs * 4, true};
        VKL_TRY(mm_dispatch_cols(ctx, cmd, &slice, l, pipeline, false, cm_bm(*s), bn, 0,
                                 a->n_tokens, x_stride, w->rows, c0, nc));
    }
    return cm_reduce(ctx, cmd, a, &sp, y_stride);
}

bool k_matmul_accumulate_supported(const gpu_features *f, uint32_t n_tokens) {
    k_matmul_kernel kernel = k_matmul_auto_kernel(f, n_tokens);
    if (kernel == K_MATMUL_MATVEC) return true;
    if (kernel != K_MATMUL_COOPMAT || mm_env_is("old")) return false;
    /* COOPMAT falls back to the first-cut kernel (no reduce) where no shape fits */
    cm_shape s;
    return cm_configure(f, 1, n_tokens, &s) && cm_configure(f, CM_BIG_ROWS, n_tokens, &s);
}

uint64_t k_matmul_split_scratch_bytes(const gpu_features *f, const k_weight *w, uint32_t n_tokens,
                                      bool accumulate) {
    if (!f || !w || !n_tokens || !w->rows || !w->cols || !mm_suffix(w->type)) return 0;
    if (k_matmul_auto_kernel(f, n_tokens) != K_MATMUL_COOPMAT || mm_env_is("old")) return 0;
    cm_shape s;
    if (!cm_configure(f, w->rows, n_tokens, &s)) return 0;
    cm_split sp;
    cm_plan_split(f, w, n_tokens, &s, accumulate, UINT64_MAX, &sp);
    return sp.bytes;
}

/* RMSNorm prologue (k_matmul_args.norm_weight): matvec_dp4a only, whose quantize_x sums
 * Σx² across subgroups through its shared X array: one word per (token, subgroup) fits
 * when cols >= 4 x the subgroups a workgroup can have (the array holds cols/4 words per
 * token). */
static bool norm_prologue_fits(const gpu_features *f, const k_matmul_args *a, const dp_config *dp) {
    uint32_t sg_min =
        f->subgroup_size_control && f->subgroup_min_size ? f->subgroup_min_size : f->subgroup_size;
    uint32_t subgroups = dp->wg / (sg_min ? sg_min : 1u);
    return (uint64_t)a->w->cols >= 4ull * (subgroups ? subgroups : 1u);
}

/* True when the product with these args runs matvec_dp4a (kernel AUTO, MATVEC or
 * MATVEC_DP4A). */
static bool runs_dp4a(const gpu_features *f, const k_matmul_args *a) {
    if (a->kernel != K_MATMUL_AUTO && a->kernel != K_MATMUL_MATVEC &&
        a->kernel != K_MATMUL_MATVEC_DP4A)
        return false;
    if (a->kernel == K_MATMUL_AUTO && k_matmul_auto_kernel(f, a->n_tokens) != K_MATMUL_MATVEC)
        return false;
    return a->kernel == K_MATMUL_MATVEC_DP4A ? k_matmul_matvec_dp4a_applies(f, a, NULL)
                                             : k_matmul_matvec_choice(f, a) == K_MATMUL_MATVEC_DP4A;
}

bool k_matmul_norm_prologue_applies(const gpu_features *f, const k_matmul_args *a) {
    if (!f || !a || !a->w || !a->w->buffer || a->glu) return false;
    if (!runs_dp4a(f, a)) return false;
    dp_config dp;
    return dp_configure(f, a, &dp) && norm_prologue_fits(f, a, &dp);
}

static vkllm_status norm_prologue_check(const char *op, const gpu_features *f,
                                        const k_matmul_args *a, k_matmul_kernel kernel,
                                        const dp_config *dp) {
    if (kernel != K_MATMUL_MATVEC_DP4A)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: the RMSNorm prologue (norm_weight) runs in matvec_dp4a only; %u "
                        "tokens chose kernel %d",
                        op, a->n_tokens, (int)kernel);
    if (!norm_prologue_fits(f, a, dp))
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: the RMSNorm prologue needs cols (%u) >= 4 x the subgroups of a "
                        "workgroup (%u invocations)",
                        op, a->w->cols, dp->wg);
    if (!(a->norm_eps >= 0 && a->norm_eps < 1e30f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: norm_eps %g must be finite and >= 0", op,
                        (double)a->norm_eps);
    return mm_check_binding(op, "norm_weight", f, a->norm_weight, a->w->cols);
}

/* GLU prologue (k_matmul_args.glu): matvec_dp4a only, whose quantize_x forms act(gate)·up
 * per element from the gate|up row; it needs nothing beyond the kernel itself (column
 * chunks keep the gate-to-up distance, spec constant GLU_UP). */
static bool glu_kind_valid(k_glu_kind kind) {
    return kind == K_GLU_SILU || kind == K_GLU_GELU_TANH;
}

bool k_matmul_glu_prologue_applies(const gpu_features *f, const k_matmul_args *a) {
    if (!f || !a || !a->w || !a->w->buffer || a->norm_weight.buffer) return false;
    return glu_kind_valid(a->glu_kind) && runs_dp4a(f, a);
}

static vkllm_status glu_prologue_check(const char *op, const k_matmul_args *a,
                                       k_matmul_kernel kernel) {
    if (kernel != K_MATMUL_MATVEC_DP4A)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: the GLU prologue (glu) runs in matvec_dp4a only; %u tokens chose "
                        "kernel %d",
                        op, a->n_tokens, (int)kernel);
    return VKLLM_OK;
}

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
    if (a->glu && !glu_kind_valid(a->glu_kind))
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
        kernel = dp_matvec_choice(f, a, &dp4a);
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
    if (a->norm_weight.buffer) VKL_TRY(norm_prologue_check(op, f, a, kernel, &dp4a));
    if (a->glu) VKL_TRY(glu_prologue_check(op, a, kernel));
    switch (kernel) {
    case K_MATMUL_COOPMAT:
        return mm_run_coopmat(ctx, cmd, a, &l, &shape, emulate, x_stride, y_stride);
    case K_MATMUL_MATVEC_FAST:
        return mv_run_fast(ctx, cmd, a, &l, &fast, x_stride, y_stride);
    case K_MATMUL_MATVEC_DP4A:
        return mv_run_dp4a(ctx, cmd, a, &l, &dp4a, x_stride, y_stride);
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
