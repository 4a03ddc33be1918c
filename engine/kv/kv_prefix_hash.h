/* kv_prefix_hash.h: the content hash of one full KV block (automatic prefix caching).
 *
 * A full block's hash chains its parent's: hash(parent block hash, the block's
 * block_size token ids, extra key). Two sequences get the same hash for block i
 * only if (with 64-bit collision odds) they agree on every token of blocks 0..i and
 * on the extra key, so equal hashes mean equal K/V contents. The extra key folds in
 * whatever else changes K/V for the same tokens: model identity, a per-request
 * cache salt, an adapter id. The first block's parent is KV_HASH_ROOT.
 *
 * The hash is our own: every 64-bit word of input is xor-ed into the state and then
 * fully mixed (a multiply/xor-shift avalanche), so changing any single input bit
 * flips about half of the output bits. It is not cryptographic; the block pool
 * still compares stored token ids, parent hash and extra key on every hit. */
#ifndef VKL_KV_PREFIX_HASH_H
#define VKL_KV_PREFIX_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Parent hash of a sequence's first block. */
#define KV_HASH_ROOT UINT64_C(0x6b766c6c6d2d6b76)

/* Hash of one block holding `num_tokens` token ids (block_size for a full block),
 * chained to `parent_hash`, keyed by `extra_key`. */
uint64_t kv_block_hash(uint64_t parent_hash, const int32_t *tokens, size_t num_tokens,
                       uint64_t extra_key);

/* Fills hashes[i] for the full blocks i = 0 .. num_blocks-1 of a token sequence
 * (tokens[i*block_size .. (i+1)*block_size)), chaining from KV_HASH_ROOT. */
void kv_chain_hashes(const int32_t *tokens, uint32_t block_size, size_t num_blocks,
                     uint64_t extra_key, uint64_t *hashes);

#endif
