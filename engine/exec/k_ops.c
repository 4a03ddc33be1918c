/* k_ops.c: launchers of the small ops (contracts in k_ops.h).
 *
 * Each launcher: validates sizes and bindings (so a wrong call fails here with
 * a message, not on the device), picks the variant and workgroup size, and
 * records one dispatch. The push-constant structs below mirror the
 * PushConstants blocks of the shaders named in their comments, member for
 * member (all 32-bit, so std430 and C agree without padding).
 *
 * Geometry: row ops use one workgroup per row, rows spread over x and y
 * (row = wg.x + wg.y * groups_x) so more rows than maxComputeWorkGroupCount[0]
 * fit; elementwise ops use a capped number of workgroups and a grid-stride
 * loop, which needs element counts below 2^31 so the loop index cannot wrap. */
#include "k_ops.h"

#include <math.h>
#include <stddef.h>

/* Workgroup sizes are powers of two (the shared-memory tree needs it). */
#define K_OPS_MAX_BLOCK 256u
#define K_OPS_MIN_ROW_BLOCK 32u
#define K_OPS_MAX_ELEMENTS 0x7fffffffu

typedef struct k_pc_rows { /* rms_norm.comp */
    uint32_t rows, n;
    float eps;
    uint32_t group, x_stride, x_offset, out_stride, out_offset, w_split;
} k_pc_rows;

typedef struct k_pc_softmax { /* softmax.comp */
    uint32_t rows, n;
    float scale, softcap;
} k_pc_softmax;

typedef struct k_pc_add { /* eltwise.comp, OP_ADD */
    uint32_t n;
} k_pc_add;

typedef struct k_pc_scale_softcap { /* eltwise.comp, OP_SCALE_SOFTCAP */
    uint32_t n;
    float scale, softcap;
} k_pc_scale_softcap;

typedef struct k_pc_glu { /* glu.comp */
    uint32_t rows, n, g_stride, u_stride, u_offset;
} k_pc_glu;

typedef struct k_pc_rope { /* rope.comp */
    uint32_t n_tokens, n_heads, head_dim, n_rot;
    float log2_base_step, freq_scale;
    uint32_t x_stride, x_offset, out_stride, out_offset;
} k_pc_rope;

/* The largest power of two <= limit (limit >= 1). */
static uint32_t floor_pow2(uint32_t limit) {
    uint32_t p = 1;
    while (p <= limit / 2)
        p *= 2;
    return p;
}

/* Largest workgroup size this device allows, capped at K_OPS_MAX_BLOCK. */
static uint32_t max_block(const gpu_features *f) {
    uint32_t limit = K_OPS_MAX_BLOCK;
    if (f->max_workgroup_invocations && f->max_workgroup_invocations < limit)
        limit = f->max_workgroup_invocations;
    if (f->max_workgroup_size[0] && f->max_workgroup_size[0] < limit)
        limit = f->max_workgroup_size[0];
    return floor_pow2(limit);
}

/* Row ops: enough invocations to cover a short row in one sweep, at least
 * K_OPS_MIN_ROW_BLOCK so the reduction is not mostly idle lanes. */
static uint32_t row_block(const gpu_features *f, uint32_t n) {
    uint32_t block = K_OPS_MIN_ROW_BLOCK;
    while (block < n && block < K_OPS_MAX_BLOCK)
        block *= 2;
    uint32_t limit = max_block(f);
    return block < limit ? block : limit;
}

static uint32_t max_groups_x(const gpu_features *f) {
    uint32_t limit = f->max_workgroup_count[0];
    return limit ? limit : 65535u; /* the Vulkan minimum */
}

/* Checks that `b` names a buffer and covers `bytes` from its offset. */
static vkllm_status check_binding(const char *op, const char *arg, gpu_binding b, uint64_t bytes) {
    if (!b.buffer || !b.buffer->handle)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: binding %s has no buffer", op, arg);
    if (b.offset > b.buffer->size)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: binding %s offset %llu is past the end of its %llu-byte buffer", op,
                        arg, (unsigned long long)b.offset, (unsigned long long)b.buffer->size);
    uint64_t available = b.buffer->size - b.offset;
    if (b.range != 0) {
        if (b.range > available)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "%s: binding %s range %llu at offset %llu exceeds its %llu-byte buffer",
                            op, arg, (unsigned long long)b.range, (unsigned long long)b.offset,
                            (unsigned long long)b.buffer->size);
        available = b.range;
    }
    if (available < bytes)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: binding %s covers %llu bytes but the op needs %llu", op, arg,
                        (unsigned long long)available, (unsigned long long)bytes);
    return VKLLM_OK;
}

static vkllm_status check_elements(const char *op, uint64_t count, const char *what) {
    if (count > K_OPS_MAX_ELEMENTS)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: %s = %llu elements exceeds the limit of %u per dispatch", op, what,
                        (unsigned long long)count, K_OPS_MAX_ELEMENTS);
    return VKLLM_OK;
}

static gpu_binding as_output(gpu_binding b) {
    b.writable = true;
    return b;
}

static gpu_binding as_input(gpu_binding b) {
    b.writable = false;
    return b;
}

static vkllm_status get_pipeline(gpu_context *ctx, const char *shader, uint32_t num_bindings,
                                 uint32_t push_size, uint32_t block, gpu_pipeline **out) {
    gpu_pipeline_desc desc = {.shader = shader,
                              .num_bindings = num_bindings,
                              .push_constant_size = push_size,
                              .num_spec_constants = 1,
                              .spec_constants = {block}};
    return gpu_pipeline_get(ctx, &desc, out);
}

/* Records an elementwise dispatch over `count` elements with a grid-stride loop. */
static vkllm_status dispatch_elements(gpu_context *ctx, gpu_cmd *cmd, const char *shader,
                                      const gpu_binding *bindings, uint32_t num_bindings,
                                      const void *push, uint32_t push_size, uint64_t count) {
    const gpu_features *f = gpu_context_features(ctx);
    uint32_t block = max_block(f);
    gpu_pipeline *pipeline;
    VKL_TRY(get_pipeline(ctx, shader, num_bindings, push_size, block, &pipeline));
    uint64_t groups = (count + block - 1) / block;
    if (groups > max_groups_x(f)) groups = max_groups_x(f);
    gpu_cmd_dispatch(cmd, pipeline, bindings, num_bindings, push, push_size, (uint32_t)groups, 1,
                     1);
    return VKLLM_OK;
}

/* Records a one-workgroup-per-row dispatch. */
static vkllm_status dispatch_rows(gpu_context *ctx, gpu_cmd *cmd, const char *shader,
                                  uint32_t block, const gpu_binding *bindings,
                                  uint32_t num_bindings, const void *push, uint32_t push_size,
                                  uint32_t rows) {
    const gpu_features *f = gpu_context_features(ctx);
    gpu_pipeline *pipeline;
    VKL_TRY(get_pipeline(ctx, shader, num_bindings, push_size, block, &pipeline));
    uint32_t groups_x = rows < max_groups_x(f) ? rows : max_groups_x(f);
    uint32_t groups_y = (rows + groups_x - 1) / groups_x;
    uint32_t limit_y = f->max_workgroup_count[1] ? f->max_workgroup_count[1] : 65535u;
    if (groups_y > limit_y)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: %u rows need %u x %u workgroups, beyond the device limit", shader,
                        rows, groups_x, groups_y);
    gpu_cmd_dispatch(cmd, pipeline, bindings, num_bindings, push, push_size, groups_x, groups_y, 1);
    return VKLLM_OK;
}

static vkllm_status resolve_path(gpu_context *ctx, const char *op, k_reduce_path path,
                                 bool *use_subgroup) {
    const gpu_features *f = gpu_context_features(ctx);
    bool available = f->subgroup_basic && f->subgroup_arithmetic;
    switch (path) {
    case K_REDUCE_AUTO:
        *use_subgroup = available;
        return VKLLM_OK;
    case K_REDUCE_SHARED:
        *use_subgroup = false;
        return VKLLM_OK;
    case K_REDUCE_SUBGROUP:
        if (!available)
            return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                            "%s: subgroup reduction requested but device %s has no subgroup "
                            "arithmetic in compute shaders",
                            op, f->name);
        *use_subgroup = true;
        return VKLLM_OK;
    }
    return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: unknown reduction path %d", op, (int)path);
}

/* ---------------------------------------------------------- elementwise */

vkllm_status k_add(gpu_context *ctx, gpu_cmd *cmd, gpu_binding a, gpu_binding b, gpu_binding out,
                   uint32_t n) {
    if (n == 0) return VKLLM_OK;
    VKL_TRY(check_elements("k_add", n, "n"));
    uint64_t bytes = (uint64_t)n * 4;
    VKL_TRY(check_binding("k_add", "a", a, bytes));
    VKL_TRY(check_binding("k_add", "b", b, bytes));
    VKL_TRY(check_binding("k_add", "out", out, bytes));
    gpu_binding bindings[3] = {as_input(a), as_input(b), as_output(out)};
    k_pc_add pc = {.n = n};
    return dispatch_elements(ctx, cmd, "add", bindings, 3, &pc, sizeof pc, n);
}

vkllm_status k_scale_softcap(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding out,
                             uint32_t n, float scale, float softcap) {
    if (n == 0) return VKLLM_OK;
    VKL_TRY(check_elements("k_scale_softcap", n, "n"));
    if (!isfinite(scale) || !isfinite(softcap))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_scale_softcap: scale %g and softcap %g must be finite", (double)scale,
                        (double)softcap);
    uint64_t bytes = (uint64_t)n * 4;
    VKL_TRY(check_binding("k_scale_softcap", "x", x, bytes));
    VKL_TRY(check_binding("k_scale_softcap", "out", out, bytes));
    gpu_binding bindings[2] = {as_input(x), as_output(out)};
    k_pc_scale_softcap pc = {.n = n, .scale = scale, .softcap = softcap};
    return dispatch_elements(ctx, cmd, "scale_softcap", bindings, 2, &pc, sizeof pc, n);
}

vkllm_status k_scale(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding out, uint32_t n,
                     float scale) {
    return k_scale_softcap(ctx, cmd, x, out, n, scale, 0.0f);
}

vkllm_status k_softcap(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding out, uint32_t n,
                       float cap) {
    if (!(cap > 0))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "k_softcap: cap %g must be > 0", (double)cap);
    return k_scale_softcap(ctx, cmd, x, out, n, 1.0f, cap);
}

static vkllm_status glu_record(gpu_context *ctx, gpu_cmd *cmd, const char *op, k_glu_kind kind,
                               gpu_binding g, gpu_binding u, gpu_binding out, uint32_t rows,
                               uint32_t n, uint32_t g_stride, uint32_t u_stride,
                               uint32_t u_offset) {
    if (rows == 0 || n == 0) return VKLLM_OK;
    if (kind != K_GLU_SILU && kind != K_GLU_GELU_TANH)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: unknown activation %d", op, (int)kind);
    if (g_stride < n || u_stride < n)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: strides g %u and u %u must be at least n = %u", op, g_stride, u_stride,
                        n);
    VKL_TRY(check_elements(op, (uint64_t)rows * n, "rows * n"));
    VKL_TRY(check_elements(op, (uint64_t)(rows - 1) * g_stride + n, "g extent"));
    VKL_TRY(
        check_elements(op, (uint64_t)u_offset + (uint64_t)(rows - 1) * u_stride + n, "u extent"));
    VKL_TRY(check_binding(op, "g", g, ((uint64_t)(rows - 1) * g_stride + n) * 4));
    VKL_TRY(
        check_binding(op, "u", u, ((uint64_t)u_offset + (uint64_t)(rows - 1) * u_stride + n) * 4));
    VKL_TRY(check_binding(op, "out", out, (uint64_t)rows * n * 4));
    gpu_binding bindings[3] = {as_input(g), as_input(u), as_output(out)};
    k_pc_glu pc = {
        .rows = rows, .n = n, .g_stride = g_stride, .u_stride = u_stride, .u_offset = u_offset};
    const char *shader = kind == K_GLU_SILU ? "glu_silu" : "glu_gelu_tanh";
    return dispatch_elements(ctx, cmd, shader, bindings, 3, &pc, sizeof pc, (uint64_t)rows * n);
}

vkllm_status k_glu(gpu_context *ctx, gpu_cmd *cmd, k_glu_kind kind, gpu_binding g, gpu_binding u,
                   gpu_binding out, uint32_t rows, uint32_t n, uint32_t g_stride,
                   uint32_t u_stride) {
    return glu_record(ctx, cmd, "k_glu", kind, g, u, out, rows, n, g_stride, u_stride, 0);
}

vkllm_status k_glu_fused(gpu_context *ctx, gpu_cmd *cmd, k_glu_kind kind, gpu_binding gu,
                         gpu_binding out, uint32_t rows, uint32_t n) {
    if ((uint64_t)n * 2 > K_OPS_MAX_ELEMENTS)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "k_glu_fused: n = %u too large", n);
    return glu_record(ctx, cmd, "k_glu_fused", kind, gu, gu, out, rows, n, 2 * n, 2 * n, n);
}

/* ---------------------------------------------------------- row reductions */

/* Checks a strided view of n_tokens rows of `width` floats (stride >= width, 0 = width)
 * against its binding; *stride gets the effective stride. */
static vkllm_status check_view(const char *op, const char *arg, gpu_binding b, uint32_t n_tokens,
                               uint32_t width, uint32_t offset, uint32_t *stride) {
    if (*stride == 0) *stride = width;
    if (*stride < width)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: %s stride %u floats is below the row width %u", op, arg, *stride,
                        width);
    uint64_t extent = (uint64_t)offset + (uint64_t)(n_tokens - 1) * *stride + width;
    VKL_TRY(check_elements(op, extent, arg));
    return check_binding(op, arg, b, extent * 4);
}

vkllm_status k_rms_norm_ex(gpu_context *ctx, gpu_cmd *cmd, const k_rms_norm_args *a) {
    const char *op = a->fused_add ? "k_rms_norm_add" : "k_rms_norm";
    uint32_t heads = a->heads ? a->heads : 1, n = a->n;
    if (a->n_tokens == 0 || n == 0) return VKLLM_OK;
    if (!(a->eps >= 0) || !isfinite(a->eps))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: eps %g must be finite and >= 0", op,
                        (double)a->eps);
    uint64_t rows = (uint64_t)a->n_tokens * heads;
    VKL_TRY(check_elements(op, rows * n, "rows * n"));
    if (a->w_split >= heads && a->w_split != 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: w_split %u must be below heads %u", op,
                        a->w_split, heads);
    uint64_t width = (uint64_t)heads * n;
    if (width > K_OPS_MAX_ELEMENTS)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: heads * n = %llu is too large", op,
                        (unsigned long long)width);
    uint32_t x_stride = a->x_stride, out_stride = a->out_stride;
    VKL_TRY(check_view(op, "x", a->x, a->n_tokens, (uint32_t)width, a->x_offset, &x_stride));
    VKL_TRY(check_binding(op, "weight", a->weight, (uint64_t)n * (a->w_split ? 2 : 1) * 4));
    VKL_TRY(check_view(op, a->fused_add ? "residual" : "out", a->out, a->n_tokens, (uint32_t)width,
                       a->out_offset, &out_stride));
    bool subgroup = false;
    VKL_TRY(resolve_path(ctx, op, a->path, &subgroup));
    static const char *const shaders[2][2] = {{"rms_norm", "rms_norm_sg"},
                                              {"rms_norm_add", "rms_norm_add_sg"}};
    gpu_binding bindings[3] = {as_input(a->x), as_input(a->weight), as_output(a->out)};
    k_pc_rows pc = {.rows = (uint32_t)rows,
                    .n = n,
                    .eps = a->eps,
                    .group = heads,
                    .x_stride = x_stride,
                    .x_offset = a->x_offset,
                    .out_stride = out_stride,
                    .out_offset = a->out_offset,
                    .w_split = a->w_split ? a->w_split : UINT32_MAX};
    uint32_t block = row_block(gpu_context_features(ctx), n);
    return dispatch_rows(ctx, cmd, shaders[a->fused_add][subgroup], block, bindings, 3, &pc,
                         sizeof pc, (uint32_t)rows);
}

vkllm_status k_rms_norm_path(gpu_context *ctx, gpu_cmd *cmd, k_reduce_path path, bool fused_add,
                             gpu_binding x, gpu_binding weight, gpu_binding out, uint32_t rows,
                             uint32_t n, float eps) {
    /* rows of n floats, dense: one "head" per token */
    k_rms_norm_args a = {.x = x,
                         .weight = weight,
                         .out = out,
                         .n_tokens = rows,
                         .heads = 1,
                         .n = n,
                         .eps = eps,
                         .fused_add = fused_add,
                         .path = path};
    return k_rms_norm_ex(ctx, cmd, &a);
}

vkllm_status k_rms_norm(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding weight,
                        gpu_binding out, uint32_t rows, uint32_t n, float eps) {
    return k_rms_norm_path(ctx, cmd, K_REDUCE_AUTO, false, x, weight, out, rows, n, eps);
}

vkllm_status k_rms_norm_add(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding weight,
                            gpu_binding residual, uint32_t rows, uint32_t n, float eps) {
    return k_rms_norm_path(ctx, cmd, K_REDUCE_AUTO, true, x, weight, residual, rows, n, eps);
}

vkllm_status k_softmax_path(gpu_context *ctx, gpu_cmd *cmd, k_reduce_path path, gpu_binding x,
                            gpu_binding out, uint32_t rows, uint32_t n, float scale,
                            float softcap) {
    if (rows == 0 || n == 0) return VKLLM_OK;
    if (!isfinite(scale) || !isfinite(softcap))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_softmax: scale %g and softcap %g must be finite", (double)scale,
                        (double)softcap);
    VKL_TRY(check_elements("k_softmax", (uint64_t)rows * n, "rows * n"));
    uint64_t bytes = (uint64_t)rows * n * 4;
    VKL_TRY(check_binding("k_softmax", "x", x, bytes));
    VKL_TRY(check_binding("k_softmax", "out", out, bytes));
    bool subgroup = false;
    VKL_TRY(resolve_path(ctx, "k_softmax", path, &subgroup));
    gpu_binding bindings[2] = {as_input(x), as_output(out)};
    k_pc_softmax pc = {.rows = rows, .n = n, .scale = scale, .softcap = softcap};
    uint32_t block = row_block(gpu_context_features(ctx), n);
    return dispatch_rows(ctx, cmd, subgroup ? "softmax_sg" : "softmax", block, bindings, 2, &pc,
                         sizeof pc, rows);
}

vkllm_status k_softmax(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding out,
                       uint32_t rows, uint32_t n, float scale, float softcap) {
    return k_softmax_path(ctx, cmd, K_REDUCE_AUTO, x, out, rows, n, scale, softcap);
}

/* ---------------------------------------------------------- RoPE */

vkllm_status k_rope(gpu_context *ctx, gpu_cmd *cmd, gpu_binding x, gpu_binding positions,
                    gpu_binding freq_factors, gpu_binding out, uint32_t n_tokens, uint32_t n_heads,
                    uint32_t head_dim, uint32_t n_rot, float freq_base, float freq_scale,
                    k_rope_mode mode) {
    k_rope_args a = {.x = x,
                     .positions = positions,
                     .freq_factors = freq_factors,
                     .out = out,
                     .n_tokens = n_tokens,
                     .n_heads = n_heads,
                     .head_dim = head_dim,
                     .n_rot = n_rot,
                     .freq_base = freq_base,
                     .freq_scale = freq_scale,
                     .mode = mode};
    return k_rope_ex(ctx, cmd, &a);
}

vkllm_status k_rope_ex(gpu_context *ctx, gpu_cmd *cmd, const k_rope_args *a) {
    uint32_t n_tokens = a->n_tokens, n_heads = a->n_heads, head_dim = a->head_dim, n_rot = a->n_rot;
    float freq_base = a->freq_base, freq_scale = a->freq_scale;
    if (n_tokens == 0 || n_heads == 0) return VKLLM_OK;
    if (a->mode != K_ROPE_NORM && a->mode != K_ROPE_NEOX)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "k_rope: unknown mode %d", (int)a->mode);
    if (head_dim == 0 || head_dim % 2 || n_rot == 0 || n_rot % 2 || n_rot > head_dim)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_rope: head_dim %u and n_rot %u must be even with 0 < n_rot <= head_dim",
                        head_dim, n_rot);
    if (!(freq_base > 0) || !isfinite(freq_base) || !(freq_scale > 0) || !isfinite(freq_scale))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_rope: freq_base %g and freq_scale %g must be finite and > 0",
                        (double)freq_base, (double)freq_scale);
    uint64_t elements = (uint64_t)n_tokens * n_heads * head_dim;
    VKL_TRY(check_elements("k_rope", elements, "n_tokens * n_heads * head_dim"));
    uint64_t width = (uint64_t)n_heads * head_dim;
    uint32_t x_stride = a->x_stride, out_stride = a->out_stride;
    VKL_TRY(check_view("k_rope", "x", a->x, n_tokens, (uint32_t)width, a->x_offset, &x_stride));
    VKL_TRY(check_binding("k_rope", "positions", a->positions, (uint64_t)n_tokens * 4));
    VKL_TRY(
        check_view("k_rope", "out", a->out, n_tokens, (uint32_t)width, a->out_offset, &out_stride));
    bool has_factors = a->freq_factors.buffer != NULL;
    if (has_factors)
        VKL_TRY(check_binding("k_rope", "freq_factors", a->freq_factors, (uint64_t)n_rot / 2 * 4));

    gpu_binding bindings[4] = {as_input(a->x), as_input(a->positions), as_output(a->out),
                               as_input(a->freq_factors)};
    k_pc_rope pc = {.n_tokens = n_tokens,
                    .n_heads = n_heads,
                    .head_dim = head_dim,
                    .n_rot = n_rot,
                    .log2_base_step = (float)(-2.0 * log2((double)freq_base) / (double)n_rot),
                    .freq_scale = freq_scale,
                    .x_stride = x_stride,
                    .x_offset = a->x_offset,
                    .out_stride = out_stride,
                    .out_offset = a->out_offset};
    static const char *const shaders[2][2] = {{"rope_norm", "rope_norm_ff"},
                                              {"rope_neox", "rope_neox_ff"}};
    const char *shader = shaders[a->mode == K_ROPE_NEOX][has_factors];
    return dispatch_elements(ctx, cmd, shader, bindings, has_factors ? 4 : 3, &pc, sizeof pc,
                             elements / 2);
}
