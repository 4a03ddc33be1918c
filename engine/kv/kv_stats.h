/* kv_stats.h: KV memory figures shared by the paged manager and the contiguous
 * baseline, so the two can be compared with one interface.
 *
 * Waste is the share of reserved token slots that hold no token:
 *     waste = (allocated_slots - live_tokens) / allocated_slots   (0 when nothing is allocated)
 * A slot shared by several sequences (fork, prefix hit) is one slot and one token.
 * Paged: allocated_slots = blocks in use * block_size, so the waste is the unfilled
 * tails of last blocks. Contiguous: allocated_slots = the max_len reservations.
 *
 * Prefix-cache counters are in TOKENS (as vLLM's prefix_cache_queries / _hits):
 * each prompt allocation queries its prompt length and hits the number of prompt
 * tokens whose K/V was found cached. */
#ifndef VKL_KV_STATS_H
#define VKL_KV_STATS_H

#include <stdint.h>

typedef struct kv_stats {
    /* common to both allocators */
    uint64_t capacity_slots;     /* token slots the KV memory holds */
    uint64_t allocated_slots;    /* slots reserved by live sequences */
    uint64_t live_tokens;        /* reserved slots holding a token */
    double waste;                /* (allocated - live) / allocated */
    double usage;                /* allocated / capacity: kv_cache_usage_perc */
    uint32_t num_seqs;           /* live sequences resident in device memory */
    uint64_t failed_allocations; /* allocate calls refused for lack of room now */

    /* paged manager */
    uint32_t block_size;
    uint32_t blocks_total;
    uint32_t blocks_used;        /* ref_count > 0 */
    uint32_t blocks_free;        /* ref_count == 0 (in the free queue) */
    uint32_t blocks_cached_free; /* free but still holding a hash: reusable by a prefix hit */
    uint32_t blocks_cached;      /* indexed in the prefix cache, used or free */
    uint32_t host_blocks_total;
    uint32_t host_blocks_used;
    uint32_t num_swapped_seqs;
    uint64_t prefix_cache_queries; /* prompt tokens looked up */
    uint64_t prefix_cache_hits;    /* prompt tokens found cached */
    uint64_t evictions;            /* cached blocks whose hash was dropped for reuse */
    uint64_t cow_copies;
    uint64_t swapped_out_blocks;
    uint64_t swapped_in_blocks;

    /* contiguous baseline */
    uint64_t largest_free_extent; /* longest run of free slots */
} kv_stats;

/* (allocated - live) / allocated, 0 when allocated is 0. */
double kv_stats_waste(uint64_t allocated_slots, uint64_t live_tokens);

#endif
