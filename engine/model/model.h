/* model.h: the architecture of a GGUF model: hyperparameters (model_config) and the
 * tensors of every layer (model_weights), read and validated once so that a forward
 * pass (the Vulkan one in exec/, the CPU reference in ref/) never looks at metadata.
 *
 * Supported: general.architecture = llama, qwen2, qwen3, gemma3 (conventions of
 * docs gguf-and-models.md §4-§5). Anything else is VKLLM_ERR_UNSUPPORTED naming the
 * architecture. A missing required tensor, or a tensor whose dims differ from what the
 * config implies, is VKLLM_ERR_FORMAT naming the tensor, the expected and actual dims.
 *
 * Invariants after a successful model_load():
 * - every non-NULL tensor pointer in model_weights points into the gguf_file (lives as
 *   long as it) and has exactly the dims listed below for it;
 * - weights.output is never NULL: it is token_embd when the file has no output.weight
 *   (config.tied_output = true);
 * - optional tensors are NULL exactly when the matching config flag is false
 *   (bq/bk/bv <-> has_qkv_bias, q_norm/k_norm <-> has_qk_norm,
 *   post_attn_norm/post_ffw_norm <-> has_post_norms, rope_freqs <-> has_rope_freqs);
 * - all weight matrices have types with a known block geometry and ne0 a multiple of
 *   the block size (gguf_open checked that).
 *
 * Tensor dims (ggml order, ne0 first; a linear layer is [n_in, n_out]):
 *   token_embd [n_embd, n_vocab]; output [n_embd, n_vocab]; output_norm [n_embd];
 *   rope_freqs [n_rot/2];
 *   per layer: attn_norm [n_embd]; wq [n_embd, n_embd_q]; wk [n_embd, n_embd_k];
 *   wv [n_embd, n_embd_v]; bq [n_embd_q]; bk [n_embd_k]; bv [n_embd_v];
 *   q_norm, k_norm [head_dim]; wo [n_head*head_dim_v, n_embd]; post_attn_norm [n_embd];
 *   ffn_norm [n_embd]; ffn_gate, ffn_up [n_embd, n_ff]; ffn_down [n_ff, n_embd];
 *   post_ffw_norm [n_embd].
 *
 * The forward pass every architecture shares (x = residual stream of n_embd floats):
 *   x = token_embd[t] * embed_scale
 *   per layer il:
 *     a = rmsnorm(x) * attn_norm
 *     q = wq a (+bq), k = wk a (+bk), v = wv a (+bv)        heads of head_dim / head_dim_v
 *     if has_qk_norm: each q head = rmsnorm(q head) * q_norm, same for k with k_norm
 *     rope(q, k) at position p: rope_neox pairing, n_rot dims,
 *        base model_rope_base(cfg, il), scale model_rope_scale(cfg, il),
 *        theta_i = p * scale * base^(-2i/n_rot) / rope_freqs[i] (if has_rope_freqs)
 *     q *= attn_scale
 *     s = q.k (+ tanh softcap if attn_logit_softcap > 0: c*tanh(s/c))
 *     causal mask; if is_sliding[il]: also mask keys with p - p_k >= sliding_window
 *     query head h reads kv head h / (n_head / n_head_kv)
 *     o = wo concat(softmax(s) v)
 *     x += has_post_norms ? rmsnorm(o) * post_attn_norm : o
 *     f = rmsnorm(x) * ffn_norm
 *     g = act(ffn_gate f) * (ffn_up f)        act = SiLU or GELU(tanh approximation)
 *     d = ffn_down g
 *     x += has_post_norms ? rmsnorm(d) * post_ffw_norm : d
 *   logits = output (rmsnorm(x) * output_norm)
 *     (+ final softcap if final_logit_softcap > 0: c*tanh(l/c))
 * rmsnorm uses rms_eps everywhere. Gemma's "+1" is already inside the GGUF norm weights.
 *
 * Module prefix: model_. */
#ifndef VKL_MODEL_H
#define VKL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "model/gguf.h"

#define MODEL_MAX_LAYERS 512

typedef enum model_arch {
    MODEL_ARCH_LLAMA,
    MODEL_ARCH_QWEN2,
    MODEL_ARCH_QWEN3,
    MODEL_ARCH_GEMMA3,
    MODEL_ARCH_COUNT,
} model_arch;

typedef enum model_activation {
    MODEL_ACT_SILU,      /* z / (1 + exp(-z)) */
    MODEL_ACT_GELU_TANH, /* 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) */
} model_activation;

typedef struct model_config {
    model_arch arch;
    uint32_t n_vocab;     /* rows of token_embd = width of the logits */
    uint32_t n_embd;      /* residual width */
    uint32_t n_layer;     /* <= MODEL_MAX_LAYERS */
    uint32_t n_head;      /* query heads */
    uint32_t n_head_kv;   /* key/value heads; n_head % n_head_kv == 0 */
    uint32_t head_dim;    /* key_length: q and k head size */
    uint32_t head_dim_v;  /* value_length: v head size */
    uint32_t n_embd_q;    /* n_head * head_dim */
    uint32_t n_embd_k;    /* n_head_kv * head_dim (one token's K in one layer) */
    uint32_t n_embd_v;    /* n_head_kv * head_dim_v (one token's V in one layer) */
    uint32_t n_ff;        /* feed-forward width */
    uint32_t n_ctx_train; /* <arch>.context_length */
    float rms_eps;

    /* RoPE (docs §4.4, §5.2) */
    uint32_t n_rot;              /* rotated dims per head, <= head_dim, even */
    bool rope_neox;              /* true: pairs (i, i + n_rot/2); false: (2i, 2i+1) */
    float rope_freq_base;        /* global layers (all layers except gemma3 local ones) */
    float rope_freq_scale;       /* 1 / rope.scaling.factor; 1 when absent */
    float rope_freq_base_local;  /* sliding layers: 10000 for gemma3 */
    float rope_freq_scale_local; /* sliding layers: 1 for gemma3 */
    bool has_rope_freqs;         /* rope_freqs.weight present (divisors per pair) */

    /* attention */
    uint32_t sliding_window;           /* 0 = none */
    bool is_sliding[MODEL_MAX_LAYERS]; /* per layer: local (windowed) attention */
    float attn_scale;                  /* multiplies q before q.k */
    float attn_logit_softcap;          /* 0 = none */
    bool has_qkv_bias;                 /* qwen2 (optional on llama) */
    bool has_qk_norm;                  /* qwen3, gemma3 */

    /* residual / FFN / output */
    bool has_post_norms;       /* gemma3 post_attention_norm and post_ffw_norm */
    float embed_scale;         /* sqrt(n_embd) for gemma3, else 1 */
    model_activation act;      /* gate activation */
    float final_logit_softcap; /* 0 = none */
    bool tied_output;          /* no output.weight: the LM head is token_embd */
} model_config;

typedef struct model_layer_weights {
    const gguf_tensor *attn_norm;
    const gguf_tensor *wq, *wk, *wv;
    const gguf_tensor *bq, *bk, *bv;    /* NULL unless has_qkv_bias */
    const gguf_tensor *q_norm, *k_norm; /* NULL unless has_qk_norm */
    const gguf_tensor *wo;
    const gguf_tensor *post_attn_norm; /* NULL unless has_post_norms */
    const gguf_tensor *ffn_norm;
    const gguf_tensor *ffn_gate, *ffn_up, *ffn_down;
    const gguf_tensor *post_ffw_norm; /* NULL unless has_post_norms */
} model_layer_weights;

typedef struct model_weights {
    const gguf_tensor *token_embd;
    const gguf_tensor *output_norm;
    const gguf_tensor *output;     /* == token_embd when tied */
    const gguf_tensor *rope_freqs; /* NULL unless has_rope_freqs */
    uint32_t n_layer;
    model_layer_weights *layers; /* n_layer entries, owned (model_weights_free) */
} model_weights;

/* Reads the hyperparameters of `file` into `cfg` (and checks them for consistency:
 * non-zero sizes, n_head % n_head_kv, n_rot <= head_dim, ...). n_vocab comes from
 * token_embd.weight's ne1. Unknown architecture -> VKLLM_ERR_UNSUPPORTED. */
vkllm_status model_load_config(const gguf_file *file, model_config *cfg);

/* Finds every tensor the config needs and checks its dims. On failure nothing is
 * allocated. Free with model_weights_free. */
vkllm_status model_bind_weights(const gguf_file *file, const model_config *cfg,
                                model_weights *weights);

/* model_load_config + model_bind_weights. */
vkllm_status model_load(const gguf_file *file, model_config *cfg, model_weights *weights);

void model_weights_free(model_weights *weights);

/* "llama", "qwen2", "qwen3", "gemma3". */
const char *model_arch_name(model_arch arch);
/* Parses a general.architecture value; false when unsupported. */
bool model_arch_from_name(const char *name, model_arch *out);

/* RoPE base and scale used by layer `il` (local layers of gemma3 differ). */
static inline float model_rope_base(const model_config *cfg, uint32_t il) {
    return cfg->is_sliding[il] ? cfg->rope_freq_base_local : cfg->rope_freq_base;
}
static inline float model_rope_scale(const model_config *cfg, uint32_t il) {
    return cfg->is_sliding[il] ? cfg->rope_freq_scale_local : cfg->rope_freq_scale;
}

#endif
