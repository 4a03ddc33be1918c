/* kv_block_pool.h: a pool of fixed-size KV blocks with reference counts, one free
 * queue with LRU eviction, and the prefix-cache index (hash -> block).
 *
 * Used twice by the manager: for device blocks (prefix caching on) and for host
 * blocks that hold swapped-out sequences (caching off).
 *
 * Invariants (checked by tests/test_kv_property.c after every operation):
 * - ref_count of a block == number of block-table entries that name it;
 * - the free queue holds exactly the blocks with ref_count 0, each once;
 * - a block is `cached` iff the hash map has an entry hash -> this block; cached
 *   blocks are full and immutable; a cached block may be in use or free;
 * - a block freed with a hash goes to the TAIL of the queue (kept as long as
 *   possible); a block freed without one goes to the HEAD (it holds nothing
 *   reusable, so it is the cheapest to hand out); allocation takes the HEAD and
 *   drops the hash of what it takes (evicting the least recently freed entry);
 * - a prefix-cache hit on a free block takes it out of the queue (count 0 -> 1);
 * - `fill` of a referenced block is the number of its slots holding a token, equal
 *   for every sequence that references it. */
#ifndef VKL_KV_BLOCK_POOL_H
#define VKL_KV_BLOCK_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "kv/kv_hash_map.h"

typedef struct kv_block {
    uint32_t ref_count;
    uint32_t fill;     /* token slots in use, 0..block_size */
    int32_t prev_free; /* free-queue links, -1 at the ends; meaningful only when free */
    int32_t next_free;
    bool cached;          /* indexed in the hash map under `hash` */
    uint64_t hash;        /* valid when cached */
    uint64_t parent_hash; /* valid when cached: compared on every hit */
    uint64_t extra_key;   /* valid when cached: compared on every hit */
} kv_block;

typedef struct kv_block_pool {
    uint32_t num_blocks;
    uint32_t block_size;
    bool caching;
    kv_block *blocks;
    int32_t *tokens; /* [num_blocks][block_size] token ids of cached blocks (caching only) */
    int32_t free_head;
    int32_t free_tail;
    uint32_t num_free;
    uint32_t num_cached; /* blocks with an index entry, in use or free */
    kv_hash_map map;
    uint64_t evictions; /* cached blocks whose hash was dropped to reuse them */
} kv_block_pool;

vkllm_status kv_block_pool_init(kv_block_pool *pool, uint32_t num_blocks, uint32_t block_size,
                                bool caching);
void kv_block_pool_destroy(kv_block_pool *pool);

/* Takes the head of the free queue (evicting its hash) with ref_count 1 and fill 0;
 * returns its id, or -1 when no block is free. */
int32_t kv_block_pool_alloc(kv_block_pool *pool);

/* One more reference; a free block leaves the queue (prefix-cache hit). */
void kv_block_pool_retain(kv_block_pool *pool, int32_t id);

/* One reference less; at 0 the block joins the queue (tail if cached, else head).
 * Returns false if the block had no reference (a caller bug; nothing changes). */
bool kv_block_pool_release(kv_block_pool *pool, int32_t id);

/* The cached block holding exactly these contents (hash, parent hash, tokens and
 * extra key all equal), or -1. Does not take a reference. */
int32_t kv_block_pool_lookup(const kv_block_pool *pool, uint64_t hash, uint64_t parent_hash,
                             const int32_t *tokens, uint64_t extra_key);

/* Indexes a full, referenced block under `hash`; false (no change) if caching is off,
 * the block is already cached, or another block holds this hash. */
bool kv_block_pool_cache(kv_block_pool *pool, int32_t id, uint64_t hash, uint64_t parent_hash,
                         const int32_t *tokens, uint64_t extra_key);

static inline bool kv_block_pool_is_free(const kv_block_pool *pool, int32_t id) {
    return pool->blocks[id].ref_count == 0;
}

#endif
