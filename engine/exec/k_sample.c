/* k_sample.c: launchers of shaders/topk.comp and shaders/argmax.comp (contracts in
 * k_sample.h). */
#include "exec/k_sample.h"

typedef struct k_pc_topk { /* topk.comp */
    uint32_t n_cols, row_stride, k;
} k_pc_topk;

static vkllm_status sample_check(const char *op, const char *arg, gpu_binding b, uint64_t bytes) {
    if (!b.buffer || !b.buffer->handle)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: binding %s has no buffer", op, arg);
    if (b.offset > b.buffer->size)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: binding %s offset %llu is past the end of its %llu-byte buffer", op,
                        arg, (unsigned long long)b.offset, (unsigned long long)b.buffer->size);
    uint64_t available = b.buffer->size - b.offset;
    if (b.range != 0 && b.range < available) available = b.range;
    if (b.range > b.buffer->size - b.offset)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: binding %s range %llu at offset %llu exceeds its %llu-byte buffer", op,
                        arg, (unsigned long long)b.range, (unsigned long long)b.offset,
                        (unsigned long long)b.buffer->size);
    if (available < bytes)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: binding %s covers %llu bytes but the op needs %llu", op, arg,
                        (unsigned long long)available, (unsigned long long)bytes);
    return VKLLM_OK;
}

vkllm_status k_topk(gpu_context *ctx, gpu_cmd *cmd, gpu_binding logits, gpu_binding inv_temperature,
                    gpu_binding ids, gpu_binding values, gpu_binding stats, uint32_t rows,
                    uint32_t n_cols, uint32_t row_stride, uint32_t k) {
    if (rows == 0 || n_cols == 0) return VKLLM_OK;
    if (k < 1 || k > K_TOPK_MAX)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "k_topk: k %u must be in 1..%u", k, K_TOPK_MAX);
    if (row_stride < n_cols)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "k_topk: row_stride %u < n_cols %u", row_stride,
                        n_cols);
    uint64_t last = (uint64_t)(rows - 1) * row_stride + n_cols;
    if (last > 0xffffffffull || (uint64_t)rows * k > 0x7fffffffull)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_topk: %u rows of stride %u (k %u) exceed 32-bit indexing", rows,
                        row_stride, k);
    const gpu_features *f = gpu_context_features(ctx);
    if (f->max_workgroup_count[0] && rows > f->max_workgroup_count[0])
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "k_topk: %u rows exceed the device's %u workgroups per dispatch", rows,
                        f->max_workgroup_count[0]);
    VKL_TRY(sample_check("k_topk", "logits", logits, last * 4));
    VKL_TRY(sample_check("k_topk", "inv_temperature", inv_temperature, (uint64_t)rows * 4));
    VKL_TRY(sample_check("k_topk", "ids", ids, (uint64_t)rows * k * 4));
    VKL_TRY(sample_check("k_topk", "values", values, (uint64_t)rows * k * 4));
    VKL_TRY(sample_check("k_topk", "stats", stats, (uint64_t)rows * 16));

    gpu_pipeline *pipeline;
    gpu_pipeline_desc desc = {
        .shader = "topk_f32", .num_bindings = 5, .push_constant_size = sizeof(k_pc_topk)};
    VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    logits.writable = false;
    inv_temperature.writable = false;
    ids.writable = true;
    values.writable = true;
    stats.writable = true;
    gpu_binding bindings[5] = {logits, ids, values, stats, inv_temperature};
    k_pc_topk pc = {.n_cols = n_cols, .row_stride = row_stride, .k = k};
    gpu_cmd_dispatch(cmd, pipeline, bindings, 5, &pc, sizeof pc, rows, 1, 1);
    return VKLLM_OK;
}

static uint32_t argmax_chunks(uint32_t n_cols) {
    return (n_cols + K_ARGMAX_CHUNK - 1) / K_ARGMAX_CHUNK;
}

uint64_t k_argmax_partials_bytes(uint32_t rows, uint32_t n_cols) {
    return (uint64_t)rows * argmax_chunks(n_cols) * 8;
}

vkllm_status k_argmax(gpu_context *ctx, gpu_cmd *cmd, gpu_binding logits, gpu_binding result,
                      gpu_binding partials, gpu_binding counters, uint32_t rows, uint32_t n_cols,
                      uint32_t row_stride) {
    static const char op[] = "k_argmax";
    if (rows == 0 || n_cols == 0) return VKLLM_OK;
    if (row_stride < n_cols)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: row_stride %u < n_cols %u", op, row_stride,
                        n_cols);
    uint64_t last = (uint64_t)(rows - 1) * row_stride + n_cols;
    if (last > 0xffffffffull)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: %u rows of stride %u exceed 32-bit indexing", op, rows, row_stride);
    VKL_TRY(sample_check(op, "logits", logits, last * 4));
    VKL_TRY(sample_check(op, "result", result, (uint64_t)rows * 4));
    const gpu_features *f = gpu_context_features(ctx);
    bool split = partials.buffer && argmax_chunks(n_cols) > 1;
    uint32_t grid_limit = f->max_workgroup_count[split ? 1 : 0];
    if (grid_limit && rows > grid_limit)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: %u rows exceed the device's %u workgroups per dispatch", op, rows,
                        grid_limit);
    if (split) {
        VKL_TRY(sample_check(op, "partials", partials, k_argmax_partials_bytes(rows, n_cols)));
        VKL_TRY(sample_check(op, "counters", counters, (uint64_t)rows * 4));
    }
    gpu_pipeline *pipeline;
    gpu_pipeline_desc desc = {.shader = split ? "argmax_f32_split" : "argmax_f32",
                              .num_bindings = split ? 4 : 2,
                              .push_constant_size = 8,
                              .num_spec_constants = 1,
                              .spec_constants = {K_ARGMAX_CHUNK}};
    VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    logits.writable = false;
    result.writable = true;
    partials.writable = counters.writable = true;
    gpu_binding bindings[4] = {logits, result, partials, counters};
    uint32_t push[2] = {n_cols, row_stride};
    if (split)
        gpu_cmd_dispatch(cmd, pipeline, bindings, 4, push, sizeof push, argmax_chunks(n_cols), rows,
                         1);
    else
        gpu_cmd_dispatch(cmd, pipeline, bindings, 2, push, sizeof push, rows, 1, 1);
    return VKLLM_OK;
}
