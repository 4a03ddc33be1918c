/* ref_internal.h: the ref_model structure shared by ref_model.c (loading, KV cache) and
 * ref_forward.c (the math), and the threaded matrix product of ref_matmul.c.
 * Not part of the module's API. */
#ifndef VKL_REF_INTERNAL_H
#define VKL_REF_INTERNAL_H

#include "ref/ref_forward.h"

/* One layer's weights as float arrays (NULL where the model has no such tensor) and its
 * KV cache rows [kv_cap][n_embd_k] / [kv_cap][n_embd_v]. Matrices are row-major
 * [n_out][n_in] exactly as in the GGUF (row r produces output r). */
typedef struct ref_layer {
    float *attn_norm, *wq, *wk, *wv, *bq, *bk, *bv, *q_norm, *k_norm, *wo, *post_attn_norm;
    float *ffn_norm, *ffn_gate, *ffn_up, *ffn_down, *post_ffw_norm;
    float *k_cache, *v_cache;
} ref_layer;

struct ref_model {
    model_config cfg;
    float *token_embd;  /* [n_vocab][n_embd] */
    float *output;      /* == token_embd when tied */
    float *output_norm; /* [n_embd] */
    float *rope_freqs;  /* [n_rot/2] or NULL */
    ref_layer *layers;
    uint32_t n_past; /* tokens in the KV cache */
    uint32_t kv_cap; /* rows allocated per layer */
    uint32_t n_threads;
};

/* Makes room for `n_tokens` cached tokens in every layer (amortized doubling). */
vkllm_status ref_kv_reserve(ref_model *m, uint32_t n_tokens);

/* y[t][r] = sum_i w[r][i] x[t][i] (+ bias[r]) for t < n_tok, r < n_out; w is [n_out][n_in].
 * Splits rows over up to n_threads threads when the product is large. */
void ref_matmul(const float *w, const float *bias, const float *x, float *y, uint32_t n_tok,
                uint32_t n_in, uint32_t n_out, uint32_t n_threads);

#endif
