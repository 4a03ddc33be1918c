/* kv_prefix_hash.c: the chained 64-bit content hash of full KV blocks (see
 * kv_prefix_hash.h). Invariant: the result depends on every input bit, on the
 * order of tokens and on their count. */
#include "kv_prefix_hash.h"

/* A full 64-bit avalanche: two rounds of xor-shift and multiply by odd constants
 * with well-spread bits (the "Stafford mix 13" parameters, a widely published
 * finalizer). Each input bit affects every output bit. */
static uint64_t kv_mix64(uint64_t x) {
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

/* Absorbs one 64-bit word. Adding an odd step constant before mixing keeps a
 * run of zero words from leaving the state unchanged. */
static uint64_t kv_absorb(uint64_t state, uint64_t word) {
    return kv_mix64((state ^ word) + UINT64_C(0x9e3779b97f4a7c15));
}

uint64_t kv_block_hash(uint64_t parent_hash, const int32_t *tokens, size_t num_tokens,
                       uint64_t extra_key) {
    uint64_t state = kv_absorb(UINT64_C(0x243f6a8885a308d3), parent_hash);
    state = kv_absorb(state, extra_key);
    state = kv_absorb(state, (uint64_t)num_tokens);
    size_t i = 0;
    for (; i + 1 < num_tokens; i += 2) {
        uint64_t pair = (uint64_t)(uint32_t)tokens[i] | ((uint64_t)(uint32_t)tokens[i + 1] << 32);
        state = kv_absorb(state, pair);
    }
    if (i < num_tokens) state = kv_absorb(state, (uint64_t)(uint32_t)tokens[i]);
    return state;
}

void kv_chain_hashes(const int32_t *tokens, uint32_t block_size, size_t num_blocks,
                     uint64_t extra_key, uint64_t *hashes) {
    uint64_t parent = KV_HASH_ROOT;
    for (size_t i = 0; i < num_blocks; i++) {
        parent = kv_block_hash(parent, tokens + i * block_size, block_size, extra_key);
        hashes[i] = parent;
    }
}
