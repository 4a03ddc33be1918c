/* test_kv_pool.c: the building blocks of the KV block manager, without a GPU:
 * the chained block hash, the hash -> block index (against a naive reference under
 * random operations), and the block pool's free queue (LRU order, cached blocks at
 * the tail, hashless at the head, eviction drops the hash, hits leave the queue). */
// links: kv common
#include <criterion/criterion.h>
#include <string.h>

#include "common/test_util.h"
#include "kv/kv_block_pool.h"
#include "kv/kv_hash_map.h"
#include "kv/kv_prefix_hash.h"

static int popcount64(uint64_t x) {
    return __builtin_popcountll(x);
}

Test(kv_hash, depends_on_every_input) {
    int32_t tokens[16];
    for (int i = 0; i < 16; i++)
        tokens[i] = i * 7 + 1;
    uint64_t base = kv_block_hash(KV_HASH_ROOT, tokens, 16, 42);
    cr_assert_eq(base, kv_block_hash(KV_HASH_ROOT, tokens, 16, 42), "hash must be deterministic");
    cr_assert_neq(base, kv_block_hash(KV_HASH_ROOT + 1, tokens, 16, 42), "parent ignored");
    cr_assert_neq(base, kv_block_hash(KV_HASH_ROOT, tokens, 16, 43), "extra key ignored");
    cr_assert_neq(base, kv_block_hash(KV_HASH_ROOT, tokens, 15, 42), "length ignored");
    for (int i = 0; i < 16; i++) {
        int32_t changed[16];
        memcpy(changed, tokens, sizeof tokens);
        changed[i] ^= 1;
        cr_assert_neq(base, kv_block_hash(KV_HASH_ROOT, changed, 16, 42), "token %d ignored", i);
    }
    /* swapping two tokens changes the hash: order matters */
    int32_t swapped[16];
    memcpy(swapped, tokens, sizeof tokens);
    swapped[3] = tokens[4];
    swapped[4] = tokens[3];
    cr_assert_neq(base, kv_block_hash(KV_HASH_ROOT, swapped, 16, 42), "order ignored");
}

Test(kv_hash, avalanche) {
    /* Flipping one random input bit must flip close to half of the 64 output bits
     * on average (a weak mix would leave long runs unchanged). Bound: mean in [28, 36]
     * over 4000 trials; the standard error of the mean is ~0.06 bits. */
    const uint64_t seed = 0x5eed0001;
    test_rng rng = test_rng_seeded(seed);
    double total = 0;
    int trials = 4000, min_flips = 64;
    for (int t = 0; t < trials; t++) {
        int32_t tokens[16];
        for (int i = 0; i < 16; i++)
            tokens[i] = (int32_t)test_rng_below(&rng, 256);
        uint64_t parent = test_rng_next(&rng), extra = test_rng_below(&rng, 4);
        uint64_t h0 = kv_block_hash(parent, tokens, 16, extra);
        uint32_t which = test_rng_below(&rng, 16 * 32 + 64);
        if (which < 16 * 32)
            tokens[which / 32] ^= (int32_t)(1u << (which % 32));
        else
            parent ^= UINT64_C(1) << (which - 16 * 32);
        int flips = popcount64(h0 ^ kv_block_hash(parent, tokens, 16, extra));
        total += flips;
        if (flips < min_flips) min_flips = flips;
    }
    double mean = total / trials;
    cr_assert(mean > 28 && mean < 36, "seed %llx: mean flipped bits %.2f not near 32",
              (unsigned long long)seed, mean);
    cr_assert(min_flips > 8, "seed %llx: a flip changed only %d output bits",
              (unsigned long long)seed, min_flips);
}

Test(kv_hash, chain_matches_block_by_block) {
    int32_t tokens[40];
    for (int i = 0; i < 40; i++)
        tokens[i] = i % 3;
    uint64_t chain[5];
    kv_chain_hashes(tokens, 8, 5, 9, chain);
    uint64_t parent = KV_HASH_ROOT;
    for (int b = 0; b < 5; b++) {
        parent = kv_block_hash(parent, tokens + 8 * b, 8, 9);
        cr_assert_eq(chain[b], parent, "block %d", b);
    }
    /* blocks 0 and 3 hold the same tokens (period 3 vs 8: not equal in general), but
     * even equal token blocks at different depths differ through the parent */
    int32_t same[16] = {0};
    uint64_t two[2];
    kv_chain_hashes(same, 8, 2, 0, two);
    cr_assert_neq(two[0], two[1], "identical blocks at depth 0 and 1 must hash apart");
}

Test(kv_hash_map, random_ops_match_reference) {
    /* Keys share their low bits in small groups so probe runs collide and wrap, and
     * backward-shift deletion is exercised. Reference: a plain array of pairs. */
    const uint64_t seed = 0x5eed0002;
    test_rng rng = test_rng_seeded(seed);
    enum { MAX = 200, UNIVERSE = 400 };
    kv_hash_map map;
    cr_assert_eq(kv_hash_map_init(&map, MAX), VKLLM_OK);
    uint64_t keys[UNIVERSE];
    for (int i = 0; i < UNIVERSE; i++)
        keys[i] = ((uint64_t)test_rng_next(&rng) << 12) | (uint64_t)(i % 7) << 3;
    int32_t ref[UNIVERSE];
    for (int i = 0; i < UNIVERSE; i++)
        ref[i] = -1;
    uint32_t ref_count = 0;
    for (int op = 0; op < 20000; op++) {
        int k = (int)test_rng_below(&rng, UNIVERSE);
        if (test_rng_below(&rng, 2)) {
            int32_t value = (int32_t)test_rng_below(&rng, 1000);
            bool ok = kv_hash_map_insert(&map, keys[k], value);
            bool expect = ref[k] < 0 && ref_count < MAX;
            cr_assert_eq(ok, expect, "seed %llx op %d: insert key %d", (unsigned long long)seed, op,
                         k);
            if (ok) {
                ref[k] = value;
                ref_count++;
            }
        } else {
            bool ok = kv_hash_map_remove(&map, keys[k]);
            cr_assert_eq(ok, ref[k] >= 0, "seed %llx op %d: remove key %d",
                         (unsigned long long)seed, op, k);
            if (ok) {
                ref[k] = -1;
                ref_count--;
            }
        }
        cr_assert_eq(map.count, ref_count);
        if (op % 97 == 0)
            for (int i = 0; i < UNIVERSE; i++)
                cr_assert_eq(kv_hash_map_get(&map, keys[i]), ref[i], "seed %llx op %d key %d",
                             (unsigned long long)seed, op, i);
    }
    kv_hash_map_destroy(&map);
}

/* The free queue from head to tail. */
static int queue_order(const kv_block_pool *pool, int32_t *out, int max) {
    int n = 0;
    for (int32_t id = pool->free_head; id >= 0 && n < max; id = pool->blocks[id].next_free)
        out[n++] = id;
    return n;
}

static const int32_t block_tokens[4][4] = {{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 9, 9, 9}, {0, 0, 1, 1}};

Test(kv_block_pool, free_queue_lru_and_hashless_at_head) {
    kv_block_pool pool;
    cr_assert_eq(kv_block_pool_init(&pool, 6, 4, true), VKLLM_OK);
    int32_t a = kv_block_pool_alloc(&pool), b = kv_block_pool_alloc(&pool);
    int32_t c = kv_block_pool_alloc(&pool), d = kv_block_pool_alloc(&pool);
    cr_assert(a == 0 && b == 1 && c == 2 && d == 3, "fresh pool hands out ids in order");
    cr_assert_eq(pool.num_free, 2);
    cr_assert(kv_block_pool_cache(&pool, a, 100, KV_HASH_ROOT, block_tokens[0], 0));
    cr_assert(kv_block_pool_cache(&pool, b, 101, 100, block_tokens[1], 0));
    cr_assert(kv_block_pool_cache(&pool, c, 102, 101, block_tokens[2], 0));
    cr_assert(!kv_block_pool_cache(&pool, d, 100, KV_HASH_ROOT, block_tokens[0], 0),
              "a second block with a cached hash is not indexed");
    /* release order a, b, d(uncached), c */
    kv_block_pool_release(&pool, a);
    kv_block_pool_release(&pool, b);
    kv_block_pool_release(&pool, d);
    kv_block_pool_release(&pool, c);
    int32_t order[6];
    int n = queue_order(&pool, order, 6);
    int32_t expect[6] = {d, 4, 5, a, b, c};
    cr_assert_eq(n, 6);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(order[i], expect[i], "queue position %d: %d, expected %d", i, order[i],
                     expect[i]);
    /* a hit on a free cached block takes it out of the queue */
    cr_assert_eq(kv_block_pool_lookup(&pool, 101, 100, block_tokens[1], 0), b);
    kv_block_pool_retain(&pool, b);
    cr_assert_eq(pool.num_free, 5);
    cr_assert_eq(pool.blocks[b].ref_count, 1u);
    /* allocation: d, 4, 5 (hashless) then a (LRU cached: evicted, hash dropped) */
    for (int i = 0; i < 3; i++)
        kv_block_pool_alloc(&pool);
    uint64_t evictions = pool.evictions;
    cr_assert_eq(kv_block_pool_alloc(&pool), a);
    cr_assert_eq(pool.evictions, evictions + 1);
    cr_assert(!pool.blocks[a].cached);
    cr_assert_eq(kv_block_pool_lookup(&pool, 100, KV_HASH_ROOT, block_tokens[0], 0), -1,
                 "the evicted block's hash must be gone");
    cr_assert_eq(kv_block_pool_lookup(&pool, 102, 101, block_tokens[2], 0), c, "c is still cached");
    /* releasing b again puts it at the tail, after c: most recently used */
    kv_block_pool_release(&pool, b);
    n = queue_order(&pool, order, 6);
    cr_assert_eq(n, 2);
    cr_assert(order[0] == c && order[1] == b);
    cr_assert(!kv_block_pool_release(&pool, c), "releasing a free block is refused");
    kv_block_pool_destroy(&pool);
}

Test(kv_block_pool, lookup_checks_contents_not_just_hash) {
    kv_block_pool pool;
    cr_assert_eq(kv_block_pool_init(&pool, 2, 4, true), VKLLM_OK);
    int32_t a = kv_block_pool_alloc(&pool);
    cr_assert(kv_block_pool_cache(&pool, a, 777, KV_HASH_ROOT, block_tokens[0], 5));
    cr_assert_eq(kv_block_pool_lookup(&pool, 777, KV_HASH_ROOT, block_tokens[0], 5), a);
    /* a forged collision: same hash, different tokens / parent / extra key */
    cr_assert_eq(kv_block_pool_lookup(&pool, 777, KV_HASH_ROOT, block_tokens[3], 5), -1);
    cr_assert_eq(kv_block_pool_lookup(&pool, 777, 1, block_tokens[0], 5), -1);
    cr_assert_eq(kv_block_pool_lookup(&pool, 777, KV_HASH_ROOT, block_tokens[0], 6), -1);
    kv_block_pool_destroy(&pool);
}

Test(kv_block_pool, empty_and_uncached_pools) {
    kv_block_pool pool;
    cr_assert_eq(kv_block_pool_init(&pool, 1, 4, false), VKLLM_OK);
    int32_t a = kv_block_pool_alloc(&pool);
    cr_assert_eq(a, 0);
    cr_assert_eq(kv_block_pool_alloc(&pool), -1, "an empty queue gives -1");
    cr_assert(!kv_block_pool_cache(&pool, a, 1, 2, block_tokens[0], 0), "caching is off");
    kv_block_pool_destroy(&pool);
    cr_assert_eq(kv_block_pool_init(&pool, 4, 0, true), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "block_size 0"), "message: %s", vkllm_last_error());
}
