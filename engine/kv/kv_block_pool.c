/* kv_block_pool.c: reference counts, the LRU free queue and the prefix-cache index
 * of a block pool (see kv_block_pool.h for the invariants). */
#include "kv_block_pool.h"

#include <stdlib.h>
#include <string.h>

vkllm_status kv_block_pool_init(kv_block_pool *pool, uint32_t num_blocks, uint32_t block_size,
                                bool caching) {
    *pool = (kv_block_pool){.num_blocks = num_blocks,
                            .block_size = block_size,
                            .caching = caching,
                            .free_head = -1,
                            .free_tail = -1};
    if (num_blocks > (uint32_t)INT32_MAX / 2 || block_size == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "kv block pool: num_blocks %u / block_size %u out of range", num_blocks,
                        block_size);
    pool->blocks = calloc(num_blocks ? num_blocks : 1, sizeof *pool->blocks);
    if (!pool->blocks)
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv block pool: %u blocks", num_blocks);
    if (caching) {
        pool->tokens =
            malloc(((size_t)num_blocks ? num_blocks : 1) * block_size * sizeof *pool->tokens);
        vkllm_status status = pool->tokens
                                  ? kv_hash_map_init(&pool->map, num_blocks)
                                  : vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY,
                                             "kv block pool: token ids of %u blocks", num_blocks);
        if (status != VKLLM_OK) {
            kv_block_pool_destroy(pool);
            return status;
        }
    }
    /* Every block starts free, in id order (block 0 handed out first). */
    for (uint32_t i = 0; i < num_blocks; i++) {
        kv_block *block = &pool->blocks[i];
        block->prev_free = (int32_t)i - 1;
        block->next_free = i + 1 < num_blocks ? (int32_t)i + 1 : -1;
    }
    if (num_blocks) {
        pool->free_head = 0;
        pool->free_tail = (int32_t)num_blocks - 1;
    }
    pool->num_free = num_blocks;
    return VKLLM_OK;
}

void kv_block_pool_destroy(kv_block_pool *pool) {
    free(pool->blocks);
    free(pool->tokens);
    kv_hash_map_destroy(&pool->map);
    *pool = (kv_block_pool){.free_head = -1, .free_tail = -1};
}

static void kv_queue_unlink(kv_block_pool *pool, int32_t id) {
    kv_block *block = &pool->blocks[id];
    if (block->prev_free >= 0)
        pool->blocks[block->prev_free].next_free = block->next_free;
    else
        pool->free_head = block->next_free;
    if (block->next_free >= 0)
        pool->blocks[block->next_free].prev_free = block->prev_free;
    else
        pool->free_tail = block->prev_free;
    block->prev_free = block->next_free = -1;
    pool->num_free--;
}

static void kv_queue_push_tail(kv_block_pool *pool, int32_t id) {
    kv_block *block = &pool->blocks[id];
    block->prev_free = pool->free_tail;
    block->next_free = -1;
    if (pool->free_tail >= 0)
        pool->blocks[pool->free_tail].next_free = id;
    else
        pool->free_head = id;
    pool->free_tail = id;
    pool->num_free++;
}

static void kv_queue_push_head(kv_block_pool *pool, int32_t id) {
    kv_block *block = &pool->blocks[id];
    block->next_free = pool->free_head;
    block->prev_free = -1;
    if (pool->free_head >= 0)
        pool->blocks[pool->free_head].prev_free = id;
    else
        pool->free_tail = id;
    pool->free_head = id;
    pool->num_free++;
}

static void kv_uncache(kv_block_pool *pool, int32_t id) {
    kv_block *block = &pool->blocks[id];
    if (!block->cached) return;
    kv_hash_map_remove(&pool->map, block->hash);
    block->cached = false;
    pool->num_cached--;
}

int32_t kv_block_pool_alloc(kv_block_pool *pool) {
    int32_t id = pool->free_head;
    if (id < 0) return -1;
    kv_queue_unlink(pool, id);
    kv_block *block = &pool->blocks[id];
    if (block->cached) {
        kv_uncache(pool, id);
        pool->evictions++;
    }
    block->ref_count = 1;
    block->fill = 0;
    return id;
}

void kv_block_pool_retain(kv_block_pool *pool, int32_t id) {
    kv_block *block = &pool->blocks[id];
    if (block->ref_count == 0) kv_queue_unlink(pool, id);
    block->ref_count++;
}

bool kv_block_pool_release(kv_block_pool *pool, int32_t id) {
    kv_block *block = &pool->blocks[id];
    if (block->ref_count == 0) return false;
    if (--block->ref_count > 0) return true;
    if (block->cached)
        kv_queue_push_tail(pool, id);
    else
        kv_queue_push_head(pool, id);
    return true;
}

int32_t kv_block_pool_lookup(const kv_block_pool *pool, uint64_t hash, uint64_t parent_hash,
                             const int32_t *tokens, uint64_t extra_key) {
    if (!pool->caching) return -1;
    int32_t id = kv_hash_map_get(&pool->map, hash);
    if (id < 0) return -1;
    const kv_block *block = &pool->blocks[id];
    /* A 64-bit collision is unlikely but would silently attend to another prompt's
     * K/V; comparing what the hash summarizes makes a false hit need a collision in
     * the parent chain itself. */
    if (block->parent_hash != parent_hash || block->extra_key != extra_key) return -1;
    if (memcmp(pool->tokens + (size_t)id * pool->block_size, tokens,
               pool->block_size * sizeof *tokens) != 0)
        return -1;
    return id;
}

bool kv_block_pool_cache(kv_block_pool *pool, int32_t id, uint64_t hash, uint64_t parent_hash,
                         const int32_t *tokens, uint64_t extra_key) {
    kv_block *block = &pool->blocks[id];
    if (!pool->caching || block->cached) return false;
    if (!kv_hash_map_insert(&pool->map, hash, id)) return false;
    block->cached = true;
    block->hash = hash;
    block->parent_hash = parent_hash;
    block->extra_key = extra_key;
    memcpy(pool->tokens + (size_t)id * pool->block_size, tokens, pool->block_size * sizeof *tokens);
    pool->num_cached++;
    return true;
}
