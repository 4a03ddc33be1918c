/* k_matmul_coopmat.c: the launcher of matmul_coopmat.comp (GL_NV_cooperative_matrix,
 * fp16 operands, f32 accumulation; > 8 tokens where the device has it, or its
 * CM_EMULATE build under VKLLM_MATMUL=emulate) and of split_k_reduce.comp.
 *
 * Owns: the tile shape (cm_* shapes, VKLLM_MATMUL_TUNE), the split-K plan
 * (VKLLM_MATMUL_SPLITK) and its scratch size (k_matmul_split_scratch_bytes), the
 * reduce dispatch, and whether AUTO can accumulate (k_matmul_accumulate_supported: the
 * += epilogue of this kernel is the reduce's). Invariants, besides those of k_matmul.c:
 * a shape's shared memory and subgroups fit the device (cm_configure, else k_matmul.c
 * runs the first-cut kernel); split-K slices start at whole blocks, write disjoint
 * aligned slices of split_scratch that overlap neither X, Y nor bias, and are summed in
 * slice order by one reduce. */
#include "exec/k_matmul_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
bool cm_configure(const gpu_features *f, uint32_t rows, uint32_t n_tokens, cm_shape *out) {
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

vkllm_status cm_run(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a, const mm_layout *l,
                    const cm_shape *s, bool emulate, uint32_t x_stride, uint32_t y_stride) {
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
