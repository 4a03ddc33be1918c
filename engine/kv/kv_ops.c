/* kv_ops.c: the growable list of block copies for the runner (see kv_ops.h).
 * Invariant: count <= capacity; items[0..count) are the ops in execution order. */
#include "kv_ops.h"

#include <stdlib.h>

void kv_ops_clear(kv_ops *ops) {
    ops->count = 0;
}

void kv_ops_destroy(kv_ops *ops) {
    free(ops->items);
    *ops = (kv_ops){0};
}

vkllm_status kv_ops_reserve(kv_ops *ops, size_t extra) {
    if (ops->count + extra <= ops->capacity) return VKLLM_OK;
    size_t capacity = ops->capacity ? ops->capacity : 16;
    while (capacity < ops->count + extra)
        capacity *= 2;
    kv_op *items = realloc(ops->items, capacity * sizeof *items);
    if (!items) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv ops list: %zu ops", capacity);
    ops->items = items;
    ops->capacity = capacity;
    return VKLLM_OK;
}

vkllm_status kv_ops_push(kv_ops *ops, kv_op_kind kind, int32_t src, int32_t dst) {
    VKL_TRY(kv_ops_reserve(ops, 1));
    ops->items[ops->count++] = (kv_op){.kind = kind, .src = src, .dst = dst};
    return VKLLM_OK;
}

const char *kv_op_kind_name(kv_op_kind kind) {
    switch (kind) {
    case KV_OP_COPY:
        return "copy";
    case KV_OP_SWAP_OUT:
        return "swap_out";
    case KV_OP_SWAP_IN:
        return "swap_in";
    }
    return "unknown";
}
