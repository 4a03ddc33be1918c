/* ref_attention.h: CPU reference of paged attention, the oracle for the attention kernels.
 *
 * It reads K and V in the layout documented in engine/exec/k_attention.h (fp16
 * [num_blocks][n_head_kv][block_size][head_dim], slot = block * block_size + offset)
 * through a block table, and computes softmax attention in double precision with a
 * plain two-pass softmax (max, then sum), independent of the kernels' online softmax
 * and partitioning. Scores: s = (q . k) * scale; with softcap > 0, s = softcap *
 * tanh(s / softcap); keys at positions p_k <= p, and p - p_k < window when window > 0. */
#ifndef VKL_REF_ATTENTION_H
#define VKL_REF_ATTENTION_H

#include <stdint.h>

typedef struct ref_attn_cache {
    const uint16_t *k, *v; /* fp16 bits in the documented layout */
    uint32_t num_blocks, block_size, n_head_kv, head_dim;
} ref_attn_cache;

/* Index (in fp16 elements) of element 0 of the row of `slot` for KV head `kv_head`. */
uint64_t ref_attn_row_index(const ref_attn_cache *c, uint32_t slot, uint32_t kv_head);

/* Attention of one query head (q: head_dim floats) at position `pos` over the keys at
 * positions 0..pos of one sequence (block_table maps position / block_size to a block),
 * using KV head `kv_head`. Writes head_dim floats to out (zeros if no key is visible). */
void ref_attention_row(const ref_attn_cache *c, const int32_t *block_table, uint32_t kv_head,
                       const float *q, uint32_t pos, uint32_t window, double scale, double softcap,
                       float *out);

#endif
