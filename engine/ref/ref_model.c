/* ref_model.c: building a ref_model: config via model_load, every weight dequantized once
 * into its own float array, and the growable contiguous KV cache.
 *
 * Invariant: after ref_model_create every tensor bound by model_bind_weights has a float
 * copy here (the gguf_file is no longer needed); k_cache/v_cache hold kv_cap rows and
 * rows [0, n_past) are valid. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/quant.h"
#include "ref/ref_internal.h"

/* Dequantizes `t` into a new float array of t->n_elements values. */
static vkllm_status load_tensor(const gguf_file *file, const gguf_tensor *t, float **out) {
    *out = NULL;
    if (!t) return VKLLM_OK;
    float *data = malloc(t->n_elements * sizeof *data);
    if (!data)
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY,
                        "%s: no memory for tensor '%.*s' (%llu floats)", file->path,
                        (int)t->name.len, t->name.ptr, (unsigned long long)t->n_elements);
    vkllm_status st = quant_dequantize(t->type, t->data, data, t->n_elements);
    if (st != VKLLM_OK) {
        free(data);
        return vkl_fail_wrap(st, "%s: tensor '%.*s': ", file->path, (int)t->name.len, t->name.ptr);
    }
    *out = data;
    return VKLLM_OK;
}

static uint32_t default_threads(void) {
    const char *env = getenv("VKLLM_REF_THREADS");
    if (env && *env) {
        long n = strtol(env, NULL, 10);
        if (n >= 1 && n <= 64) return (uint32_t)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    return n > 8 ? 8 : (uint32_t)n;
}

vkllm_status ref_model_create(const gguf_file *file, ref_model **out) {
    *out = NULL;
    ref_model *m = calloc(1, sizeof *m);
    if (!m) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "ref_model_create: no memory");
    model_weights w;
    vkllm_status st = model_load(file, &m->cfg, &w);
    if (st != VKLLM_OK) {
        free(m);
        return st;
    }
    m->n_threads = default_threads();
    m->layers = calloc(m->cfg.n_layer, sizeof *m->layers);
    if (!m->layers) st = vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "ref_model_create: no memory");
#define LOAD(dst, tensor)                                                                          \
    if (st == VKLLM_OK) st = load_tensor(file, (tensor), &(dst))
    LOAD(m->token_embd, w.token_embd);
    if (m->cfg.tied_output)
        m->output = m->token_embd;
    else
        LOAD(m->output, w.output);
    LOAD(m->output_norm, w.output_norm);
    LOAD(m->rope_freqs, w.rope_freqs);
    for (uint32_t il = 0; st == VKLLM_OK && il < m->cfg.n_layer; il++) {
        ref_layer *L = &m->layers[il];
        const model_layer_weights *T = &w.layers[il];
        LOAD(L->attn_norm, T->attn_norm);
        LOAD(L->wq, T->wq);
        LOAD(L->wk, T->wk);
        LOAD(L->wv, T->wv);
        LOAD(L->bq, T->bq);
        LOAD(L->bk, T->bk);
        LOAD(L->bv, T->bv);
        LOAD(L->q_norm, T->q_norm);
        LOAD(L->k_norm, T->k_norm);
        LOAD(L->wo, T->wo);
        LOAD(L->post_attn_norm, T->post_attn_norm);
        LOAD(L->ffn_norm, T->ffn_norm);
        LOAD(L->ffn_gate, T->ffn_gate);
        LOAD(L->ffn_up, T->ffn_up);
        LOAD(L->ffn_down, T->ffn_down);
        LOAD(L->post_ffw_norm, T->post_ffw_norm);
    }
#undef LOAD
    model_weights_free(&w);
    if (st != VKLLM_OK) {
        ref_model_destroy(m);
        return st;
    }
    *out = m;
    return VKLLM_OK;
}

void ref_model_destroy(ref_model *m) {
    if (!m) return;
    if (m->output != m->token_embd) free(m->output);
    free(m->token_embd);
    free(m->output_norm);
    free(m->rope_freqs);
    for (uint32_t il = 0; m->layers && il < m->cfg.n_layer; il++) {
        ref_layer *L = &m->layers[il];
        float *all[] = {L->attn_norm,
                        L->wq,
                        L->wk,
                        L->wv,
                        L->bq,
                        L->bk,
                        L->bv,
                        L->q_norm,
                        L->k_norm,
                        L->wo,
                        L->post_attn_norm,
                        L->ffn_norm,
                        L->ffn_gate,
                        L->ffn_up,
                        L->ffn_down,
                        L->post_ffw_norm,
                        L->k_cache,
                        L->v_cache};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            free(all[i]);
    }
    free(m->layers);
    free(m);
}

const model_config *ref_model_config(const ref_model *m) {
    return &m->cfg;
}
uint32_t ref_model_n_past(const ref_model *m) {
    return m->n_past;
}
void ref_reset(ref_model *m) {
    m->n_past = 0;
}

vkllm_status ref_kv_reserve(ref_model *m, uint32_t n_tokens) {
    if (n_tokens <= m->kv_cap) return VKLLM_OK;
    uint32_t cap = m->kv_cap ? m->kv_cap : 64;
    while (cap < n_tokens)
        cap = cap > UINT32_MAX / 2 ? n_tokens : cap * 2;
    for (uint32_t il = 0; il < m->cfg.n_layer; il++) {
        ref_layer *L = &m->layers[il];
        float *k = realloc(L->k_cache, (size_t)cap * m->cfg.n_embd_k * sizeof(float));
        if (k) L->k_cache = k;
        float *v = k ? realloc(L->v_cache, (size_t)cap * m->cfg.n_embd_v * sizeof(float)) : NULL;
        if (v) L->v_cache = v;
        /* A failed realloc leaves the old (still valid, smaller) buffers in place; kv_cap
         * is only raised once every layer has grown, so nothing is lost. */
        if (!k || !v)
            return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "ref KV cache: no memory for %u tokens",
                            cap);
    }
    m->kv_cap = cap;
    return VKLLM_OK;
}
