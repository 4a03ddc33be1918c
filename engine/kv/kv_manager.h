/* kv_manager.h: the paged KV block manager: which blocks each sequence uses.
 *
 * Pure CPU bookkeeping. It hands out block ids and slots, and reports the device
 * work the caller must do (kv_ops: copy-on-write copies, swap-out/in copies) BEFORE
 * the step that depends on them. One thread (the engine loop) owns a manager.
 *
 * Sequence life cycle, as the scheduler and runner drive it:
 *   kv_manager_can_allocate -> kv_manager_allocate(prompt)  => seq id, num_computed
 *   runner computes prompt tokens [num_computed, len) (slots from kv_manager_slots),
 *     possibly in chunks; after each step: kv_manager_commit(seq, tokens now written)
 *   decode: kv_manager_append(seq, sampled token) => slot (+ ops) ; step ; commit
 *   kv_manager_fork (n > 1, beam search) ; kv_manager_free when finished/preempted
 *   kv_manager_swap_out / kv_manager_swap_in (preemption by swap), per group.
 *
 * Rules:
 * - Prefix caching: only FULL blocks are cached. A block enters the cache at commit,
 *   i.e. once the caller says its K/V is written, so a hit never reads unwritten K/V.
 * - The last prompt token is always recomputed: a prompt looks up at most
 *   floor((len - 1) / block_size) blocks, so num_computed <= len - 1 and is a whole
 *   number of blocks. The step needs the last token's hidden state for its logits
 *   (this may recompute up to a whole block, as in vLLM, because new tokens always
 *   start a fresh block: a cached block is never written).
 * - A block is written only when its ref_count is 1: appending into a shared,
 *   partly filled last block first copies it (KV_OP_COPY) into a fresh block.
 * - Freed blocks return in reverse order, so a sequence's tail is evicted first.
 * - Watermark: a new prompt is admitted only if watermark_blocks stay free after
 *   it; appends and swap-ins of running work may use them.
 * - "Not enough free blocks now" is VKLLM_ERR_BUSY (try later, or preempt);
 *   "can never fit" is VKLLM_ERR_TOO_LONG with the sizes in the message.
 * - Sequence ids are small integers reused after kv_manager_free.
 * - Not thread-safe, queries included (some use internal scratch maps): one thread,
 *   the engine loop, owns a manager. */
#ifndef VKL_KV_MANAGER_H
#define VKL_KV_MANAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kv/kv_block_pool.h"
#include "kv/kv_ops.h"
#include "kv/kv_stats.h"

typedef int32_t kv_seq_id;

typedef struct kv_config {
    uint32_t block_size;        /* tokens per block (16 is the usual choice) */
    uint32_t num_device_blocks; /* blocks of the device KV pool */
    uint32_t num_host_blocks;   /* blocks of host memory for swapping; 0 disables swap */
    uint32_t watermark_blocks;  /* blocks a new prompt must leave free (< num_device_blocks) */
    uint64_t model_key;         /* model identity, folded into every block hash */
    bool enable_prefix_caching;
} kv_config;

typedef enum kv_alloc_status {
    KV_ALLOC_OK = 0, /* fits now */
    KV_ALLOC_LATER,  /* does not fit now; may after others free blocks */
    KV_ALLOC_NEVER,  /* can never fit this pool (reject the request) */
} kv_alloc_status;

typedef struct kv_manager kv_manager;

vkllm_status kv_manager_create(const kv_config *config, kv_manager **out);
void kv_manager_destroy(kv_manager *manager);

/* ---- prompts */

/* Whether a prompt fits now, counting prefix-cache hits (a hit on a block in use
 * costs nothing; a hit on a free block costs one free block, like a fresh one). */
kv_alloc_status kv_manager_can_allocate(const kv_manager *manager, const int32_t *tokens,
                                        size_t num_tokens, uint64_t cache_salt);

/* Creates a sequence holding the prompt: reuses cached blocks for its longest cached
 * prefix of whole blocks (never the last token), allocates fresh blocks for the rest.
 * *num_computed: prompt tokens whose K/V is already in place (multiple of block_size,
 * <= num_tokens - 1); the caller computes tokens [*num_computed, num_tokens).
 * cache_salt: requests with different salts never share blocks (0 = no salt).
 * Errors: TOO_LONG (never fits), BUSY (not now), INVALID_ARGUMENT (empty prompt). */
vkllm_status kv_manager_allocate(kv_manager *manager, const int32_t *tokens, size_t num_tokens,
                                 uint64_t cache_salt, kv_seq_id *seq, size_t *num_computed);

/* The K/V of the sequence's first `num_tokens` tokens is now written on the device:
 * its full blocks among them enter the prefix cache. Values below an earlier commit
 * are ignored; above the sequence length: INVALID_ARGUMENT. */
vkllm_status kv_manager_commit(kv_manager *manager, kv_seq_id seq, size_t num_tokens);

/* ---- decode */

/* Free blocks that appending `num_tokens` tokens needs (new blocks + a copy-on-write
 * of a shared last block). For a group sharing a last block, the sum over its
 * sequences is an upper bound (the last writer finds the block unshared). */
uint32_t kv_manager_blocks_to_append(const kv_manager *manager, kv_seq_id seq, size_t num_tokens);
bool kv_manager_can_append(const kv_manager *manager, kv_seq_id seq, size_t num_tokens);

/* Appends tokens (usually the one just sampled) and gives each a slot
 * (block_id * block_size + offset) in slots[0..num_tokens) (slots may be NULL).
 * Pushes a KV_OP_COPY to `ops` if the last block was shared. BUSY (no change) if
 * free blocks are short: preempt someone and retry. */
vkllm_status kv_manager_append(kv_manager *manager, kv_seq_id seq, const int32_t *tokens,
                               size_t num_tokens, kv_ops *ops, int32_t *slots);

/* ---- sharing and release */

/* A new sequence sharing all of `parent`'s blocks (counts + 1), tokens and commit. */
vkllm_status kv_manager_fork(kv_manager *manager, kv_seq_id parent, kv_seq_id *child);

/* Releases the sequence's blocks (device or host) in reverse order; the id is reused. */
vkllm_status kv_manager_free(kv_manager *manager, kv_seq_id seq);

/* ---- swapping (a group: the sequences of one request, sharing blocks) */

/* Whether the group's distinct device blocks fit in the free host blocks (false also
 * for an invalid group: dead, swapped or repeated ids). */
bool kv_manager_can_swap_out(const kv_manager *manager, const kv_seq_id *group, size_t count);

/* Whether the group can come back now: OK if its distinct host blocks, less those
 * still cached on the device and in use, fit the free device blocks (no watermark:
 * swapped work goes before new prompts); NEVER if the group is invalid or larger
 * than the pool; LATER otherwise. */
kv_alloc_status kv_manager_can_swap_in(const kv_manager *manager, const kv_seq_id *group,
                                       size_t count);

/* Copies every distinct device block of the group to a host block (KV_OP_SWAP_OUT
 * ops, sharing preserved) and releases the device blocks. BUSY (no change) when host
 * blocks run short; INVALID_ARGUMENT if a sequence is not on the device or repeats. */
vkllm_status kv_manager_swap_out(kv_manager *manager, const kv_seq_id *group, size_t count,
                                 kv_ops *ops);

/* Brings the group back: each distinct host block gets a device block, found in the
 * prefix cache when its committed contents are cached (no copy), else fresh with a
 * KV_OP_SWAP_IN op; host blocks are released. BUSY (no change) when short. */
vkllm_status kv_manager_swap_in(kv_manager *manager, const kv_seq_id *group, size_t count,
                                kv_ops *ops);

/* ---- queries */

uint32_t kv_manager_block_size(const kv_manager *manager);
uint32_t kv_manager_num_free_blocks(const kv_manager *manager);
uint32_t kv_manager_num_free_host_blocks(const kv_manager *manager);
uint32_t kv_manager_watermark_blocks(const kv_manager *manager);
bool kv_manager_seq_is_live(const kv_manager *manager, kv_seq_id seq);
bool kv_manager_seq_is_swapped(const kv_manager *manager, kv_seq_id seq);
size_t kv_manager_seq_num_tokens(const kv_manager *manager, kv_seq_id seq);
size_t kv_manager_seq_num_committed(const kv_manager *manager, kv_seq_id seq);
const int32_t *kv_manager_seq_tokens(const kv_manager *manager, kv_seq_id seq);

/* The sequence's block table (device ids, or host ids while swapped); valid until the
 * next call that changes this manager. NULL and *count = 0 for a dead id. */
const int32_t *kv_manager_block_table(const kv_manager *manager, kv_seq_id seq, size_t *count);

/* Slots of positions [first, first + count) of a device sequence; INVALID_ARGUMENT
 * if out of range or swapped. */
vkllm_status kv_manager_slots(const kv_manager *manager, kv_seq_id seq, size_t first, size_t count,
                              int32_t *slots);

void kv_manager_stats(const kv_manager *manager, kv_stats *stats);

/* The pools, read-only, for checkers and metrics. */
const kv_block_pool *kv_manager_device_pool(const kv_manager *manager);
const kv_block_pool *kv_manager_host_pool(const kv_manager *manager);

#endif
