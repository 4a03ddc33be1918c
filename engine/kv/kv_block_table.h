/* kv_block_table.h: one sequence's logical -> physical block map.
 *
 * Entry i is the id of the block holding the sequence's tokens
 * [i*block_size, (i+1)*block_size). The ids are int32 because the runner uploads the
 * table as-is (int32 [num_seqs][max_blocks_per_seq]). A table only grows, except that
 * a copy-on-write replaces its last entry and a swap rewrites every entry (device
 * ids <-> host ids). */
#ifndef VKL_KV_BLOCK_TABLE_H
#define VKL_KV_BLOCK_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct kv_block_table {
    int32_t *ids;
    size_t count;
    size_t capacity;
} kv_block_table;

/* An empty table needs no init: kv_block_table t = {0}. */
void kv_block_table_destroy(kv_block_table *table);

/* Makes room for `extra` more entries so later appends cannot fail. */
vkllm_status kv_block_table_reserve(kv_block_table *table, size_t extra);

/* Appends one id; callers reserve first so this never fails mid-operation. */
vkllm_status kv_block_table_append(kv_block_table *table, int32_t id);

/* Copies `src` into `dst` (dst's old contents are dropped). */
vkllm_status kv_block_table_copy(kv_block_table *dst, const kv_block_table *src);

#endif
