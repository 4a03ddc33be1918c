/* k_rope_kv.c: launcher of shaders/rope_kv.comp (contract in k_rope_kv.h).
 *
 * Grid: x = head of the row (n_head Q, n_head_kv K, n_head_kv V), y = tokens, capped at
 * the device's y limit (the shader loops over the rest). The push constants mirror the
 * shader's PushConstants block member for member (all 32-bit). */
#include "k_rope_kv.h"

#include <math.h>

#define ROPE_KV_MAX_DIM 256u /* ROPE_KV_MAX_DIM in rope_kv.comp (shared row buffer) */

typedef struct rope_kv_push {
    uint32_t n_tokens, n_head, n_head_kv, head_dim, n_rot;
    float log2_base_step, freq_scale;
    uint32_t x_stride, x_offset, block_size, num_slots;
} rope_kv_push;

/* Bytes the binding covers from its offset (0 when it has no buffer or starts past it). */
static uint64_t binding_bytes(gpu_binding b) {
    if (!b.buffer || !b.buffer->handle || b.offset > b.buffer->size) return 0;
    uint64_t available = b.buffer->size - b.offset;
    return b.range && b.range < available ? b.range : available;
}

static vkllm_status check_covers(const char *arg, gpu_binding b, uint64_t bytes) {
    if (!b.buffer || !b.buffer->handle)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "k_rope_kv_write: binding %s has no buffer",
                        arg);
    if (b.range && b.offset + b.range > b.buffer->size)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_rope_kv_write: binding %s range %llu at offset %llu exceeds its "
                        "%llu-byte buffer",
                        arg, (unsigned long long)b.range, (unsigned long long)b.offset,
                        (unsigned long long)b.buffer->size);
    uint64_t have = binding_bytes(b);
    if (have < bytes)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_rope_kv_write: binding %s covers %llu bytes but the op needs %llu", arg,
                        (unsigned long long)have, (unsigned long long)bytes);
    return VKLLM_OK;
}

vkllm_status k_rope_kv_write(gpu_context *ctx, gpu_cmd *cmd, const k_attn_kv_layout *kv,
                             const k_rope_kv_args *a) {
    VKL_TRY(k_attn_check_layout(kv));
    if (a->n_tokens == 0) return VKLLM_OK;
    uint32_t head_dim = kv->head_dim, n_rot = a->n_rot;
    if (a->mode != K_ROPE_NORM && a->mode != K_ROPE_NEOX)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "k_rope_kv_write: unknown mode %d",
                        (int)a->mode);
    if (head_dim > ROPE_KV_MAX_DIM || n_rot == 0 || n_rot % 2 || n_rot > head_dim)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_rope_kv_write: head_dim %u (at most %u) and n_rot %u must be even with "
                        "0 < n_rot <= head_dim",
                        head_dim, ROPE_KV_MAX_DIM, n_rot);
    if (!(a->freq_base > 0) || !isfinite(a->freq_base) || !(a->freq_scale > 0) ||
        !isfinite(a->freq_scale))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_rope_kv_write: freq_base %g and freq_scale %g must be finite and > 0",
                        (double)a->freq_base, (double)a->freq_scale);
    uint64_t heads = (uint64_t)a->n_head + 2u * kv->n_head_kv;
    uint64_t width = heads * head_dim;
    uint64_t stride = a->x_stride ? a->x_stride : width;
    if (stride < width)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_rope_kv_write: x_stride %llu floats is below the row width %llu "
                        "((n_head %u + 2 x n_head_kv %u) x head_dim %u)",
                        (unsigned long long)stride, (unsigned long long)width, a->n_head,
                        kv->n_head_kv, head_dim);
    uint64_t extent = a->x_offset + (uint64_t)(a->n_tokens - 1) * stride + width;
    if (extent > 0xffffffffull)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_rope_kv_write: %llu floats of qkv exceed 32-bit indices",
                        (unsigned long long)extent);
    VKL_TRY(check_covers("qkv", a->qkv, extent * 4));
    VKL_TRY(check_covers("positions", a->positions, (uint64_t)a->n_tokens * 4));
    VKL_TRY(check_covers("slots", a->slots, (uint64_t)a->n_tokens * 4));
    VKL_TRY(check_covers("k_cache", a->k_cache, k_attn_layer_bytes(kv)));
    VKL_TRY(check_covers("v_cache", a->v_cache, k_attn_layer_bytes(kv)));
    bool has_factors = a->freq_factors.buffer != NULL;
    if (has_factors)
        VKL_TRY(check_covers("freq_factors", a->freq_factors, (uint64_t)n_rot / 2 * 4));

    const gpu_features *f = gpu_context_features(ctx);
    uint32_t limit_x = f->max_workgroup_count[0] ? f->max_workgroup_count[0] : 65535u;
    uint32_t limit_y = f->max_workgroup_count[1] ? f->max_workgroup_count[1] : 65535u;
    if (heads > limit_x)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_rope_kv_write: %llu heads exceed the device's %u workgroups in x",
                        (unsigned long long)heads, limit_x);
    uint32_t groups_y = a->n_tokens < limit_y ? a->n_tokens : limit_y;

    rope_kv_push push = {
        .n_tokens = a->n_tokens,
        .n_head = a->n_head,
        .n_head_kv = kv->n_head_kv,
        .head_dim = head_dim,
        .n_rot = n_rot,
        .log2_base_step = (float)(-2.0 * log2((double)a->freq_base) / (double)n_rot),
        .freq_scale = a->freq_scale,
        .x_stride = (uint32_t)stride,
        .x_offset = a->x_offset,
        .block_size = kv->block_size,
        .num_slots = (uint32_t)((uint64_t)kv->num_blocks * kv->block_size > 0xffffffffull
                                    ? 0xffffffffu
                                    : (uint64_t)kv->num_blocks * kv->block_size),
    };
    static const char *const shaders[2][2] = {{"rope_kv_norm", "rope_kv_norm_ff"},
                                              {"rope_kv_neox", "rope_kv_neox_ff"}};
    gpu_pipeline_desc desc = {.shader = shaders[a->mode == K_ROPE_NEOX][has_factors],
                              .num_bindings = has_factors ? 6 : 5,
                              .push_constant_size = sizeof push};
    gpu_pipeline *pipeline;
    VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    gpu_binding b[6] = {a->qkv, a->positions, a->slots, a->k_cache, a->v_cache, a->freq_factors};
    for (int i = 0; i < 6; i++)
        b[i].writable = false;
    b[0].writable = b[3].writable = b[4].writable = true;
    gpu_cmd_dispatch(cmd, pipeline, b, desc.num_bindings, &push, sizeof push, (uint32_t)heads,
                     groups_y, 1);
    return VKLLM_OK;
}
