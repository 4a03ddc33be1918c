/* kv_contig.h: the pre-vLLM baseline: each sequence reserves one contiguous region of
 * max_len token slots up front, chosen first-fit over a single slot range.
 *
 * It exists to measure what paging buys: it reports the same kv_stats (waste =
 * reserved but empty slots / reserved slots; how many sequences fit) for the same
 * capacity. It suffers all three classic losses: slots reserved for tokens not yet
 * generated, over-provisioning to max_len, and external fragmentation (a request
 * can be refused while the total free space would hold it: see largest_free_extent).
 * CPU bookkeeping only. */
#ifndef VKL_KV_CONTIG_H
#define VKL_KV_CONTIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kv/kv_manager.h"
#include "kv/kv_stats.h"

typedef struct kv_contig kv_contig;

/* An allocator over slots [0, capacity_slots); capacity_slots <= INT32_MAX. */
vkllm_status kv_contig_create(uint64_t capacity_slots, kv_contig **out);
void kv_contig_destroy(kv_contig *contig);

/* Reserves max_len slots at the lowest address where they fit and places the prompt's
 * prompt_len tokens at its start. TOO_LONG if max_len exceeds the capacity; BUSY (no
 * change) if no free region is long enough now; INVALID_ARGUMENT if prompt_len is 0
 * or exceeds max_len. */
vkllm_status kv_contig_allocate(kv_contig *contig, size_t max_len, size_t prompt_len,
                                kv_seq_id *seq);

/* Adds num_tokens tokens inside the reservation; TOO_LONG (no change) past max_len. */
vkllm_status kv_contig_append(kv_contig *contig, kv_seq_id seq, size_t num_tokens);

/* Returns the reservation to the free range (merged with free neighbours). */
vkllm_status kv_contig_free(kv_contig *contig, kv_seq_id seq);

/* First slot of the sequence's region, or -1 for a dead id. */
int32_t kv_contig_base_slot(const kv_contig *contig, kv_seq_id seq);

void kv_contig_stats(const kv_contig *contig, kv_stats *stats);

#endif
