/* k_matmul_dp4a.c: the launcher of matvec_dp4a.comp (1-8 tokens, X quantized to int8 in
 * shared memory, packed int8 dot products) and of its two prologues, the RMSNorm
 * (k_matmul_args.norm_weight) and the GLU (k_matmul_args.glu). k_matmul.c decides when
 * it runs (VKLLM_MATVEC, k_matmul_matvec_choice); this file says whether it can.
 *
 * Owns: the kernel's configuration (dp_configure: rows per subgroup, subgroups, the
 * workgroup cap, units in flight, main loop, tokens per pass, column chunks;
 * VKLLM_MATVEC_DP4A_TUNE and VKLLM_MATVEC_DP4A_LOOP), its weight bindings and the checks
 * of the prologues. Invariants, besides those of k_matmul.c: the quantized X of the
 * tokens of one pass and one column chunk fits shared memory (dp_shared_bytes); with
 * 16-byte loads the weight binding starts at a multiple of 16 and ends at the range's
 * last row rounded up to 16 inside the buffer; the RMSNorm prologue never runs in
 * column chunks (its 1/rms needs the whole row). */
#include "exec/k_matmul_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static bool dp_type_supported(ggml_type type) {
    return type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_K ||
           type == GGML_TYPE_Q6_K;
}

/* Shared memory of the quantized X of n_tokens (matvec_dp4a.comp's xq and xds: int8 X and
 * one vec4 per block of 32, each rounded up to 128 bytes). */
uint64_t dp_shared_bytes(uint32_t cols, uint32_t n_tokens) {
    uint64_t q = ((uint64_t)n_tokens * cols + 127) & ~127ull;
    uint64_t blocks = ((uint64_t)n_tokens * (cols / 32) + 7) & ~7ull;
    return q + 16 * blocks;
}

/* Fills *c for weight w; false when matvec_dp4a cannot run it. */
bool dp_configure(const gpu_features *f, const k_matmul_args *a, dp_config *c) {
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

vkllm_status dp_run(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a, const mm_layout *l,
                    const dp_config *c, uint32_t x_stride, uint32_t y_stride) {
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

/* ---------------------------------------------------------------- prologues */

/* RMSNorm prologue (k_matmul_args.norm_weight): matvec_dp4a only, whose quantize_x sums
 * Σx² across subgroups through its shared X array: one word per (token, subgroup) fits
 * when cols >= 4 x the subgroups a workgroup can have (the array holds cols/4 words per
 * token). */
static bool dp_norm_prologue_fits(const gpu_features *f, const k_matmul_args *a,
                                  const dp_config *dp) {
    uint32_t subgroups = dp->wg / mv_sg_min(f); /* mv_sg_min is >= 1 */
    return (uint64_t)a->w->cols >= 4ull * (subgroups ? subgroups : 1u);
}

/* True when the product with these args runs matvec_dp4a (kernel AUTO, MATVEC or
 * MATVEC_DP4A). */
static bool dp_will_run(const gpu_features *f, const k_matmul_args *a) {
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
    if (!dp_will_run(f, a)) return false;
    dp_config dp;
    return dp_configure(f, a, &dp) && dp_norm_prologue_fits(f, a, &dp);
}

vkllm_status dp_norm_prologue_check(const char *op, const gpu_features *f, const k_matmul_args *a,
                                    k_matmul_kernel kernel, const dp_config *dp) {
    if (kernel != K_MATMUL_MATVEC_DP4A)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: the RMSNorm prologue (norm_weight) runs in matvec_dp4a only; %u "
                        "tokens chose kernel %d",
                        op, a->n_tokens, (int)kernel);
    if (!dp_norm_prologue_fits(f, a, dp))
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
bool dp_glu_kind_valid(k_glu_kind kind) {
    return kind == K_GLU_SILU || kind == K_GLU_GELU_TANH;
}

bool k_matmul_glu_prologue_applies(const gpu_features *f, const k_matmul_args *a) {
    if (!f || !a || !a->w || !a->w->buffer || a->norm_weight.buffer) return false;
    return dp_glu_kind_valid(a->glu_kind) && dp_will_run(f, a);
}

vkllm_status dp_glu_prologue_check(const char *op, const k_matmul_args *a, k_matmul_kernel kernel) {
    if (kernel != K_MATMUL_MATVEC_DP4A)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: the GLU prologue (glu) runs in matvec_dp4a only; %u tokens chose "
                        "kernel %d",
                        op, a->n_tokens, (int)kernel);
    return VKLLM_OK;
}
