/* ref_forward.c: the reference forward pass (the math listed in model/model.h) for one
 * sequence, batch of n tokens at consecutive positions, and greedy generation.
 *
 * Attention reads keys/values of positions [0, p] from the contiguous cache, so a
 * prompt evaluated at once and token by token performs the same per-token arithmetic
 * (up to the order of nothing: every dot product and softmax is per query), which is
 * what the incremental-decode tests rely on. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref/ref_internal.h"
#include "ref/ref_ops.h"

typedef struct scratch {
    float *x, *a, *q, *k, *v, *attn, *o, *gate, *up, *scores;
    int32_t *pos;
} scratch;

static void scratch_free(scratch *s) {
    free(s->x);
    free(s->a);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->attn);
    free(s->o);
    free(s->gate);
    free(s->up);
    free(s->scores);
    free(s->pos);
}

static vkllm_status scratch_alloc(const model_config *c, uint32_t n, uint32_t n_ctx, scratch *s) {
    memset(s, 0, sizeof *s);
    size_t wide = c->n_embd > c->n_embd_q ? c->n_embd : c->n_embd_q;
    s->x = malloc((size_t)n * c->n_embd * sizeof(float));
    s->a = malloc((size_t)n * wide * sizeof(float));
    s->q = malloc((size_t)n * c->n_embd_q * sizeof(float));
    s->k = malloc((size_t)n * c->n_embd_k * sizeof(float));
    s->v = malloc((size_t)n * c->n_embd_v * sizeof(float));
    s->attn = malloc((size_t)n * c->n_head * c->head_dim_v * sizeof(float));
    s->o = malloc((size_t)n * c->n_embd * sizeof(float));
    s->gate = malloc((size_t)n * c->n_ff * sizeof(float));
    s->up = malloc((size_t)n * c->n_ff * sizeof(float));
    s->scores = malloc((size_t)n_ctx * sizeof(float));
    s->pos = malloc((size_t)n * sizeof(int32_t));
    if (!s->x || !s->a || !s->q || !s->k || !s->v || !s->attn || !s->o || !s->gate || !s->up ||
        !s->scores || !s->pos) {
        scratch_free(s);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "ref_forward: no memory for %u tokens", n);
    }
    return VKLLM_OK;
}

/* Attention of the n new tokens (queries in s->q, already normed, rotated and scaled)
 * over cache positions [0, pos] of each; output heads concatenated in s->attn. */
static void attention(const ref_model *m, uint32_t il, uint32_t start_pos, uint32_t n, scratch *s) {
    const model_config *c = &m->cfg;
    const ref_layer *L = &m->layers[il];
    uint32_t group = c->n_head / c->n_head_kv;
    for (uint32_t t = 0; t < n; t++) {
        uint32_t p = start_pos + t;
        for (uint32_t h = 0; h < c->n_head; h++) {
            const float *q = s->q + ((size_t)t * c->n_head + h) * c->head_dim;
            uint32_t kvh = h / group;
            for (uint32_t j = 0; j <= p; j++) {
                bool outside = c->is_sliding[il] && p - j >= c->sliding_window;
                if (outside) {
                    s->scores[j] = -INFINITY;
                    continue;
                }
                const float *k = L->k_cache + (size_t)j * c->n_embd_k + (size_t)kvh * c->head_dim;
                double dot = 0.0;
                for (uint32_t d = 0; d < c->head_dim; d++)
                    dot += (double)q[d] * k[d];
                s->scores[j] = (float)dot;
            }
            ref_softmax(s->scores, s->scores, 1, p + 1, 1.0f, c->attn_logit_softcap);
            float *out = s->attn + ((size_t)t * c->n_head + h) * c->head_dim_v;
            for (uint32_t d = 0; d < c->head_dim_v; d++) {
                double acc = 0.0;
                for (uint32_t j = 0; j <= p; j++) {
                    if (s->scores[j] == 0.0f) continue;
                    acc += (double)s->scores[j] *
                           L->v_cache[(size_t)j * c->n_embd_v + (size_t)kvh * c->head_dim_v + d];
                }
                out[d] = (float)acc;
            }
        }
    }
}

static void layer_forward(ref_model *m, uint32_t il, uint32_t start_pos, uint32_t n, scratch *s) {
    const model_config *c = &m->cfg;
    ref_layer *L = &m->layers[il];
    uint32_t T = m->n_threads;

    ref_rms_norm(s->x, L->attn_norm, s->a, n, c->n_embd, c->rms_eps);
    ref_matmul(L->wq, L->bq, s->a, s->q, n, c->n_embd, c->n_embd_q, T);
    ref_matmul(L->wk, L->bk, s->a, s->k, n, c->n_embd, c->n_embd_k, T);
    ref_matmul(L->wv, L->bv, s->a, s->v, n, c->n_embd, c->n_embd_v, T);
    if (c->has_qk_norm) {
        ref_rms_norm(s->q, L->q_norm, s->q, (size_t)n * c->n_head, c->head_dim, c->rms_eps);
        ref_rms_norm(s->k, L->k_norm, s->k, (size_t)n * c->n_head_kv, c->head_dim, c->rms_eps);
    }
    ref_rope_mode mode = c->rope_neox ? REF_ROPE_NEOX : REF_ROPE_NORM;
    float base = model_rope_base(c, il), scale = model_rope_scale(c, il);
    ref_rope(s->q, s->pos, m->rope_freqs, s->q, n, c->n_head, c->head_dim, c->n_rot, base, scale,
             mode);
    ref_rope(s->k, s->pos, m->rope_freqs, s->k, n, c->n_head_kv, c->head_dim, c->n_rot, base, scale,
             mode);
    ref_scale(s->q, s->q, (size_t)n * c->n_embd_q, c->attn_scale);
    memcpy(L->k_cache + (size_t)start_pos * c->n_embd_k, s->k, (size_t)n * c->n_embd_k * 4);
    memcpy(L->v_cache + (size_t)start_pos * c->n_embd_v, s->v, (size_t)n * c->n_embd_v * 4);

    attention(m, il, start_pos, n, s);
    ref_matmul(L->wo, NULL, s->attn, s->o, n, c->n_head * c->head_dim_v, c->n_embd, T);
    if (c->has_post_norms)
        ref_rms_norm_add(s->o, L->post_attn_norm, s->x, n, c->n_embd, c->rms_eps);
    else
        ref_add(s->x, s->o, s->x, (size_t)n * c->n_embd);

    ref_rms_norm(s->x, L->ffn_norm, s->a, n, c->n_embd, c->rms_eps);
    ref_matmul(L->ffn_gate, NULL, s->a, s->gate, n, c->n_embd, c->n_ff, T);
    ref_matmul(L->ffn_up, NULL, s->a, s->up, n, c->n_embd, c->n_ff, T);
    ref_glu(c->act == MODEL_ACT_GELU_TANH ? REF_GLU_GELU_TANH : REF_GLU_SILU, s->gate, c->n_ff,
            s->up, c->n_ff, s->gate, n, c->n_ff);
    ref_matmul(L->ffn_down, NULL, s->gate, s->o, n, c->n_ff, c->n_embd, T);
    if (c->has_post_norms)
        ref_rms_norm_add(s->o, L->post_ffw_norm, s->x, n, c->n_embd, c->rms_eps);
    else
        ref_add(s->x, s->o, s->x, (size_t)n * c->n_embd);
}

vkllm_status ref_forward(ref_model *m, const int32_t *tokens, uint32_t n, uint32_t start_pos,
                         bool all_logits, float *logits) {
    const model_config *c = &m->cfg;
    if (n == 0) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "ref_forward: no tokens");
    if (start_pos > m->n_past)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "ref_forward: start_pos %u is past the %u cached tokens", start_pos,
                        m->n_past);
    if ((uint64_t)start_pos + n > INT32_MAX)
        return vkl_fail(VKLLM_ERR_TOO_LONG, "ref_forward: position %llu too large",
                        (unsigned long long)start_pos + n);
    for (uint32_t t = 0; t < n; t++)
        if (tokens[t] < 0 || (uint32_t)tokens[t] >= c->n_vocab)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "ref_forward: token %u is %d, outside the vocabulary [0, %u)", t,
                            tokens[t], c->n_vocab);
    VKL_TRY(ref_kv_reserve(m, start_pos + n));
    scratch s;
    VKL_TRY(scratch_alloc(c, n, start_pos + n, &s));
    m->n_past = start_pos; /* drop a rewound suffix */

    for (uint32_t t = 0; t < n; t++) {
        s.pos[t] = (int32_t)(start_pos + t);
        ref_scale(m->token_embd + (size_t)tokens[t] * c->n_embd, s.x + (size_t)t * c->n_embd,
                  c->n_embd, c->embed_scale);
    }
    for (uint32_t il = 0; il < c->n_layer; il++)
        layer_forward(m, il, start_pos, n, &s);
    m->n_past = start_pos + n;

    uint32_t first = all_logits ? 0 : n - 1, rows = n - first;
    ref_rms_norm(s.x + (size_t)first * c->n_embd, m->output_norm, s.a, rows, c->n_embd, c->rms_eps);
    ref_matmul(m->output, NULL, s.a, logits, rows, c->n_embd, c->n_vocab, m->n_threads);
    if (c->final_logit_softcap > 0.0f)
        ref_softcap(logits, logits, (size_t)rows * c->n_vocab, c->final_logit_softcap);
    scratch_free(&s);
    return VKLLM_OK;
}

int32_t ref_argmax(const float *values, uint32_t n) {
    int32_t best = -1;
    for (uint32_t i = 0; i < n; i++)
        if (values[i] == values[i] && (best < 0 || values[i] > values[best])) best = (int32_t)i;
    return best < 0 ? 0 : best;
}

vkllm_status ref_generate_greedy(ref_model *m, const int32_t *prompt, uint32_t n_prompt,
                                 uint32_t n_new, const int32_t *stop, uint32_t n_stop, int32_t *out,
                                 uint32_t *n_out) {
    *n_out = 0;
    float *logits = malloc((size_t)m->cfg.n_vocab * sizeof(float));
    if (!logits) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "ref_generate_greedy: no memory");
    ref_reset(m);
    vkllm_status st = n_new ? ref_forward(m, prompt, n_prompt, 0, false, logits) : VKLLM_OK;
    for (uint32_t i = 0; st == VKLLM_OK && i < n_new; i++) {
        int32_t next = ref_argmax(logits, m->cfg.n_vocab);
        out[(*n_out)++] = next;
        bool stopped = false;
        for (uint32_t j = 0; j < n_stop; j++)
            stopped |= stop[j] == next;
        if (stopped || i + 1 == n_new) break;
        st = ref_forward(m, &next, 1, m->n_past, false, logits);
    }
    free(logits);
    return st;
}
