/* kv_hash_map.h: the prefix cache's index, block hash -> block id.
 *
 * Open addressing with linear probing over a power-of-two table at most half full
 * (capacity fixed at creation: one entry per block at most), deletion by backward
 * shift so no tombstones accumulate. Keys are full 64-bit block hashes; values are
 * block ids. One entry per hash: a second block with the same contents is simply
 * not indexed. */
#ifndef VKL_KV_HASH_MAP_H
#define VKL_KV_HASH_MAP_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

typedef struct kv_hash_map {
    uint64_t *keys;
    int32_t *values; /* -1 marks an empty slot */
    uint32_t mask;   /* capacity - 1 */
    uint32_t count;
    uint32_t max_entries;
} kv_hash_map;

/* A map that holds up to max_entries entries. */
vkllm_status kv_hash_map_init(kv_hash_map *map, uint32_t max_entries);
void kv_hash_map_destroy(kv_hash_map *map);

/* Block id stored under `key`, or -1. */
int32_t kv_hash_map_get(const kv_hash_map *map, uint64_t key);

/* Inserts key -> value; false (and no change) if the key is present or the map holds
 * max_entries already. */
bool kv_hash_map_insert(kv_hash_map *map, uint64_t key, int32_t value);

/* Removes key; false if it was absent. */
bool kv_hash_map_remove(kv_hash_map *map, uint64_t key);

/* Iteration for checkers: slot i below the capacity holds an entry when values[i] >= 0.
 * 0 for a map never initialized (prefix caching off). */
static inline uint32_t kv_hash_map_capacity(const kv_hash_map *map) {
    return map->values ? map->mask + 1 : 0;
}

#endif
