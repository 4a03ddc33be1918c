// attention.glsl: what the paged-attention kernels (kv_write, attn_decode, attn_reduce,
// attn_prefill, block_copy) share: the KV cache addressing, the score transform
// (scale, logit softcap), the masked-score sentinel, and the packed fp16 helpers.
//
// KV cache layout (the host side documents the same layout in engine/exec/k_attention.h):
// per layer, K and V are two arrays of fp16 values, each
//     [num_blocks][n_head_kv][block_size][head_dim]
// stored as packed 32-bit words (two fp16 per word, element 2j in the low half), so one
// row (one token of one KV head) is head_dim/2 consecutive words. The slot of a token is
// block_id * block_size + offset_in_block.
//
// Invariants: head_dim is even; masked scores are ATTN_MASKED (a finite sentinel, never
// -inf, so that exp(m_old - m_new) cannot become NaN when a row has seen no key yet).

#ifndef ATTENTION_GLSL
#define ATTENTION_GLSL

#define ATTN_MASKED (-1.0e30)
// Any score at or below this is treated as masked (probability exactly 0).
#define ATTN_MASKED_LIMIT (-1.0e29)

// First word of the row holding token `offset` of block `block` for KV head `kv_head`.
uint attn_kv_row_word(uint block, uint kv_head, uint offset, uint n_head_kv, uint block_size,
                      uint head_dim) {
    return ((block * n_head_kv + kv_head) * block_size + offset) * (head_dim / 2u);
}

// tanh that stays finite for large |x| (a naive (e^2x-1)/(e^2x+1) overflows to NaN).
float attn_tanh(float x) {
    float t = exp(-2.0 * abs(x));
    float r = (1.0 - t) / (1.0 + t);
    return x < 0.0 ? -r : r;
}

// score = q.k * scale, then softcap * tanh(score / softcap) when softcap > 0.
float attn_score(float dot_qk, float scale, float softcap) {
    float s = dot_qk * scale;
    if (softcap > 0.0) s = softcap * attn_tanh(s / softcap);
    return s;
}

// exp(s - m) for a score that may be masked.
float attn_prob(float s, float m) { return s <= ATTN_MASKED_LIMIT ? 0.0 : exp(s - m); }

#endif
