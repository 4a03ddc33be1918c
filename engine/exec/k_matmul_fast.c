/* k_matmul_fast.c: the launcher of matvec_fast.comp, the default 1-8 token kernel where
 * it applies (k_matmul_matvec_fast_applies; else matvec.comp, see k_matmul.c's choice).
 *
 * Owns: the kernel's configuration (rows per subgroup, loads per lane, subgroups per
 * workgroup, chunk length) and its row ranges. Invariants, besides those of k_matmul.c:
 * its weight bindings start at a multiple of 16 bytes and of the device's alignment and
 * end at the range's last row rounded up to 16 (the shader reads whole uvec4), so the
 * weight's buffer must reach the tensor end rounded up to 16 (else the kernel does not
 * apply); a chunk of chunk_blocks blocks fits the loads of one pass. */
#include "exec/k_matmul_internal.h"

#include <stdio.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- matvec_fast
 * See matvec_fast.comp. Tuning (defaults measured against nothing yet; see
 * docs/perf-notes.md): MV_ROWS rows per subgroup, MV_LOADS uvec4 loads per lane per row
 * and chunk, MV_SUBGROUPS subgroups per workgroup (halved for weights of <= 2048 rows so
 * that K/V projections still give a few hundred workgroups). VKLLM_MATVEC_TUNE="R,L,S"
 * overrides the three for experiments. */

#define MV_ROWS 2
#define MV_LOADS 4 /* 2 for many rows on 32-lane subgroups, see mv_configure */
#define MV_SUBGROUPS 4
#define MV_WINDOW_SLACK 30 /* a chunk's 16-byte window exceeds its bytes by < 2*15 */

/* Bytes and elements of one shader "block" (F32/F16 rows are read in groups of 8). */
static void mv_shader_block(ggml_type type, uint32_t *elems, uint32_t *bytes) {
    ggml_type_info info = ggml_type_get_info(type);
    *elems = info.block_elems < 8 ? 8 : info.block_elems;
    *bytes = info.block_elems < 8 ? 8 * info.block_bytes : info.block_bytes;
}

/* Fills *c for weight w (checked layout l); false when the fast kernel cannot run it. */
bool mv_configure(const gpu_features *f, const k_matmul_args *a, const mm_layout *l, mv_config *c) {
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

vkllm_status mv_run_fast(gpu_context *ctx, gpu_cmd *cmd, const k_matmul_args *a, const mm_layout *l,
                         const mv_config *c, uint32_t x_stride, uint32_t y_stride) {
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
