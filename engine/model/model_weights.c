/* model_weights.c: finds every tensor a model_config needs and checks its dims and
 * type (model.h lists the expected dims). A failure names the tensor with the expected
 * and the actual dims; nothing stays allocated after a failure. */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Types the forward passes can read (dequantizable). */
static bool weight_type_supported(ggml_type t) {
    switch (t) {
    case GGML_TYPE_F32:
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16:
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1:
    case GGML_TYPE_Q5_0:
    case GGML_TYPE_Q5_1:
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q2_K:
    case GGML_TYPE_Q3_K:
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K:
    case GGML_TYPE_Q6_K:
        return true;
    default:
        return false;
    }
}

static void format_dims(char *buf, size_t size, const uint64_t *ne, uint32_t n) {
    size_t at = (size_t)snprintf(buf, size, "[");
    for (uint32_t i = 0; i < n && at < size; i++)
        at += (size_t)snprintf(buf + at, size - at, "%s%llu", i ? ", " : "",
                               (unsigned long long)ne[i]);
    if (at < size) snprintf(buf + at, size - at, "]");
}

/* Looks up `name`; checks dims (ne1 == 0 means a 1-D tensor [ne0]). Missing: error
 * when required, else *out = NULL. */
static vkllm_status bind(const gguf_file *f, const char *name, bool required, uint64_t ne0,
                         uint64_t ne1, const gguf_tensor **out) {
    const gguf_tensor *t = gguf_find_tensor(f, name);
    *out = t;
    if (!t) {
        if (!required) return VKLLM_OK;
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: required tensor '%s' is missing", f->path, name);
    }
    uint64_t want[GGUF_MAX_DIMS] = {ne0, ne1 ? ne1 : 1, 1, 1};
    uint32_t want_dims = ne1 ? 2 : 1;
    bool same = true;
    for (int i = 0; i < GGUF_MAX_DIMS; i++)
        same = same && t->ne[i] == want[i];
    if (!same) {
        char a[96], e[96];
        format_dims(a, sizeof a, t->ne, t->n_dims ? t->n_dims : 1);
        format_dims(e, sizeof e, want, want_dims);
        return vkl_fail(VKLLM_ERR_FORMAT,
                        "%s: tensor '%s' has dims %s, expected %s (tensor info at offset %llu)",
                        f->path, name, a, e, (unsigned long long)t->info_offset);
    }
    if (!weight_type_supported(t->type))
        return vkl_fail(VKLLM_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s (%u), not supported",
                        f->path, name, ggml_type_get_info(t->type).name, (unsigned)t->type);
    return VKLLM_OK;
}

static vkllm_status bind_layer(const gguf_file *f, const model_config *c, uint32_t il,
                               model_layer_weights *L) {
    char name[96];
#define B(field, suffix, req, ne0, ne1)                                                            \
    do {                                                                                           \
        snprintf(name, sizeof name, "blk.%u.%s", il, suffix);                                      \
        VKL_TRY(bind(f, name, (req), (ne0), (ne1), &L->field));                                    \
    } while (0)
    B(attn_norm, "attn_norm.weight", true, c->n_embd, 0);
    B(wq, "attn_q.weight", true, c->n_embd, c->n_embd_q);
    B(wk, "attn_k.weight", true, c->n_embd, c->n_embd_k);
    B(wv, "attn_v.weight", true, c->n_embd, c->n_embd_v);
    if (c->has_qkv_bias) {
        B(bq, "attn_q.bias", true, c->n_embd_q, 0);
        B(bk, "attn_k.bias", true, c->n_embd_k, 0);
        B(bv, "attn_v.bias", true, c->n_embd_v, 0);
    }
    if (c->has_qk_norm) {
        B(q_norm, "attn_q_norm.weight", true, c->head_dim, 0);
        B(k_norm, "attn_k_norm.weight", true, c->head_dim, 0);
    }
    B(wo, "attn_output.weight", true, (uint64_t)c->n_head * c->head_dim_v, c->n_embd);
    if (c->has_post_norms) B(post_attn_norm, "post_attention_norm.weight", true, c->n_embd, 0);
    B(ffn_norm, "ffn_norm.weight", true, c->n_embd, 0);
    B(ffn_gate, "ffn_gate.weight", true, c->n_embd, c->n_ff);
    B(ffn_up, "ffn_up.weight", true, c->n_embd, c->n_ff);
    B(ffn_down, "ffn_down.weight", true, c->n_ff, c->n_embd);
    if (c->has_post_norms) B(post_ffw_norm, "post_ffw_norm.weight", true, c->n_embd, 0);
#undef B
    return VKLLM_OK;
}

vkllm_status model_bind_weights(const gguf_file *f, const model_config *c, model_weights *w) {
    memset(w, 0, sizeof *w);
    model_weights tmp = {0};
    VKL_TRY(bind(f, "token_embd.weight", true, c->n_embd, c->n_vocab, &tmp.token_embd));
    VKL_TRY(bind(f, "output_norm.weight", true, c->n_embd, 0, &tmp.output_norm));
    VKL_TRY(bind(f, "output.weight", !c->tied_output, c->n_embd, c->n_vocab, &tmp.output));
    if (c->tied_output) tmp.output = tmp.token_embd;
    VKL_TRY(bind(f, "rope_freqs.weight", c->has_rope_freqs, c->n_rot / 2, 0, &tmp.rope_freqs));
    tmp.n_layer = c->n_layer;
    tmp.layers = calloc(c->n_layer, sizeof *tmp.layers);
    if (!tmp.layers)
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "%s: no memory for %u layer descriptors",
                        f->path, c->n_layer);
    for (uint32_t il = 0; il < c->n_layer; il++) {
        vkllm_status st = bind_layer(f, c, il, &tmp.layers[il]);
        if (st != VKLLM_OK) {
            free(tmp.layers);
            return st;
        }
    }
    *w = tmp;
    return VKLLM_OK;
}

vkllm_status model_load(const gguf_file *file, model_config *cfg, model_weights *weights) {
    memset(weights, 0, sizeof *weights);
    VKL_TRY(model_load_config(file, cfg));
    return model_bind_weights(file, cfg, weights);
}

void model_weights_free(model_weights *weights) {
    if (!weights) return;
    free(weights->layers);
    weights->layers = NULL;
    weights->n_layer = 0;
}
