/* kv_block_table.c: growable int32 block-id array (see kv_block_table.h).
 * Invariant: count <= capacity. */
#include "kv_block_table.h"

#include <stdlib.h>
#include <string.h>

void kv_block_table_destroy(kv_block_table *table) {
    free(table->ids);
    *table = (kv_block_table){0};
}

vkllm_status kv_block_table_reserve(kv_block_table *table, size_t extra) {
    if (table->count + extra <= table->capacity) return VKLLM_OK;
    size_t capacity = table->capacity ? table->capacity : 8;
    while (capacity < table->count + extra)
        capacity *= 2;
    int32_t *ids = realloc(table->ids, capacity * sizeof *ids);
    if (!ids)
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv block table: %zu entries", capacity);
    table->ids = ids;
    table->capacity = capacity;
    return VKLLM_OK;
}

vkllm_status kv_block_table_append(kv_block_table *table, int32_t id) {
    VKL_TRY(kv_block_table_reserve(table, 1));
    table->ids[table->count++] = id;
    return VKLLM_OK;
}

vkllm_status kv_block_table_copy(kv_block_table *dst, const kv_block_table *src) {
    dst->count = 0;
    VKL_TRY(kv_block_table_reserve(dst, src->count));
    if (src->count) memcpy(dst->ids, src->ids, src->count * sizeof *dst->ids);
    dst->count = src->count;
    return VKLLM_OK;
}
