/* kv_hash_map.c: open-addressing hash -> block id index (see kv_hash_map.h).
 * Invariant: every entry lies on the probe run that starts at its home slot, with no
 * empty slot between home and entry; backward-shift deletion preserves this. */
#include "kv_hash_map.h"

#include <stdlib.h>

/* Block hashes are already well mixed; the low bits pick the home slot. */
static uint32_t kv_home_slot(const kv_hash_map *map, uint64_t key) {
    return (uint32_t)(key ^ (key >> 32)) & map->mask;
}

vkllm_status kv_hash_map_init(kv_hash_map *map, uint32_t max_entries) {
    *map = (kv_hash_map){0};
    uint64_t capacity = 16;
    while (capacity < 2 * (uint64_t)max_entries)
        capacity *= 2;
    if (capacity > (UINT64_C(1) << 31))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv hash map: %u entries is too many",
                        max_entries);
    map->keys = calloc(capacity, sizeof *map->keys);
    map->values = malloc(capacity * sizeof *map->values);
    if (!map->keys || !map->values) {
        kv_hash_map_destroy(map);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv hash map: %llu slots",
                        (unsigned long long)capacity);
    }
    for (uint64_t i = 0; i < capacity; i++)
        map->values[i] = -1;
    map->mask = (uint32_t)(capacity - 1);
    map->max_entries = max_entries;
    return VKLLM_OK;
}

void kv_hash_map_destroy(kv_hash_map *map) {
    free(map->keys);
    free(map->values);
    *map = (kv_hash_map){0};
}

int32_t kv_hash_map_get(const kv_hash_map *map, uint64_t key) {
    for (uint32_t i = kv_home_slot(map, key);; i = (i + 1) & map->mask) {
        if (map->values[i] < 0) return -1;
        if (map->keys[i] == key) return map->values[i];
    }
}

bool kv_hash_map_insert(kv_hash_map *map, uint64_t key, int32_t value) {
    if (map->count >= map->max_entries || value < 0) return false;
    uint32_t i = kv_home_slot(map, key);
    for (; map->values[i] >= 0; i = (i + 1) & map->mask)
        if (map->keys[i] == key) return false;
    map->keys[i] = key;
    map->values[i] = value;
    map->count++;
    return true;
}

bool kv_hash_map_remove(kv_hash_map *map, uint64_t key) {
    uint32_t hole = kv_home_slot(map, key);
    for (;; hole = (hole + 1) & map->mask) {
        if (map->values[hole] < 0) return false;
        if (map->keys[hole] == key) break;
    }
    /* Backward shift: move later entries of the run into the hole when the hole lies
     * on their probe path (between their home slot and their current slot). */
    for (uint32_t next = (hole + 1) & map->mask; map->values[next] >= 0;
         next = (next + 1) & map->mask) {
        uint32_t home = kv_home_slot(map, map->keys[next]);
        uint32_t dist_next = (next - home) & map->mask;
        uint32_t dist_hole = (hole - home) & map->mask;
        if (dist_hole <= dist_next) {
            map->keys[hole] = map->keys[next];
            map->values[hole] = map->values[next];
            hole = next;
        }
    }
    map->values[hole] = -1;
    map->count--;
    return true;
}
