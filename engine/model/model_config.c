/* model_config.c: reads a GGUF file's hyperparameters into model_config (model.h).
 *
 * Defaults and per-architecture rules follow docs gguf-and-models.md §4.1, §4.4, §5.2:
 * key_length/value_length default to n_embd/n_head, rope.dimension_count to key_length,
 * rope.freq_base to 10000, head_count_kv to head_count; llama uses NORM RoPE, the others
 * NEOX; gemma3 has local layers (il % pattern < pattern-1, pattern 6) with base 10000.
 * Integer keys that are per-layer arrays are accepted when every layer has the same
 * value (vkllm has one n_ff / n_head_kv per model). Errors name the file and the key. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const arch_names[MODEL_ARCH_COUNT] = {
    [MODEL_ARCH_LLAMA] = "llama",
    [MODEL_ARCH_QWEN2] = "qwen2",
    [MODEL_ARCH_QWEN3] = "qwen3",
    [MODEL_ARCH_GEMMA3] = "gemma3",
};

const char *model_arch_name(model_arch arch) {
    return (unsigned)arch < MODEL_ARCH_COUNT ? arch_names[arch] : "unknown";
}

bool model_arch_from_name(const char *name, model_arch *out) {
    for (int a = 0; a < MODEL_ARCH_COUNT; a++)
        if (!strcmp(name, arch_names[a])) {
            *out = (model_arch)a;
            return true;
        }
    return false;
}

/* "<arch>.<suffix>" into buf. */
static const char *arch_key(char *buf, size_t size, model_arch arch, const char *suffix) {
    snprintf(buf, size, "%s.%s", arch_names[arch], suffix);
    return buf;
}

static bool is_integer_type(uint32_t t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_INT8 || t == GGUF_TYPE_UINT16 ||
           t == GGUF_TYPE_INT16 || t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
}

/* An integer hyperparameter that may also be a per-layer array of equal values.
 * Absent: *out = dflt when !required, else VKLLM_ERR_FORMAT. */
static vkllm_status get_layer_u32(const gguf_file *f, const char *key, bool required, uint32_t dflt,
                                  uint32_t *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) {
        if (required)
            return vkl_fail(VKLLM_ERR_FORMAT, "%s: required key '%s' is missing", f->path, key);
        *out = dflt;
        return VKLLM_OK;
    }
    if (kv->value.type != GGUF_TYPE_ARRAY) return gguf_get_u32(f, key, out);
    if (!is_integer_type(kv->value.array.elem_type) || kv->value.array.count == 0)
        return vkl_fail(VKLLM_ERR_FORMAT,
                        "%s: key '%s' (at offset %llu) is an array of %s with %llu elements, "
                        "expected integers",
                        f->path, key, (unsigned long long)kv->file_offset,
                        gguf_value_type_name(kv->value.array.elem_type),
                        (unsigned long long)kv->value.array.count);
    int64_t first = gguf_array_int(kv, 0);
    for (uint64_t i = 1; i < kv->value.array.count; i++)
        if (gguf_array_int(kv, i) != first)
            return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                            "%s: key '%s' differs between layers (layer 0: %lld, layer %llu: "
                            "%lld); per-layer sizes are not supported",
                            f->path, key, (long long)first, (unsigned long long)i,
                            (long long)gguf_array_int(kv, i));
    if (first < 0 || first > (int64_t)UINT32_MAX)
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: key '%s' = %lld out of range", f->path, key,
                        (long long)first);
    *out = (uint32_t)first;
    return VKLLM_OK;
}

static vkllm_status get_f32_opt(const gguf_file *f, const char *key, float dflt, float *out) {
    if (!gguf_find_kv(f, key)) {
        *out = dflt;
        return VKLLM_OK;
    }
    return gguf_get_f32(f, key, out);
}

static vkllm_status read_architecture(const gguf_file *f, model_arch *arch) {
    gguf_str s;
    vkllm_status st = gguf_get_str(f, "general.architecture", &s);
    if (st == VKLLM_ERR_NOT_FOUND)
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: key 'general.architecture' is missing", f->path);
    if (st != VKLLM_OK) return st;
    char name[64];
    size_t n = s.len < sizeof name - 1 ? (size_t)s.len : sizeof name - 1;
    memcpy(name, s.ptr, n);
    name[n] = 0;
    if (s.len >= sizeof name || !model_arch_from_name(name, arch))
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: architecture '%.*s' is not supported (supported: llama, qwen2, "
                        "qwen3, gemma3)",
                        f->path, (int)(s.len > 64 ? 64 : s.len), s.ptr);
    return VKLLM_OK;
}

static vkllm_status read_rope_scaling(const gguf_file *f, model_arch arch, float *freq_scale) {
    char key[128];
    *freq_scale = 1.0f;
    gguf_str type = {"linear", 6};
    const char *type_key = arch_key(key, sizeof key, arch, "rope.scaling.type");
    if (gguf_find_kv(f, type_key)) VKL_TRY(gguf_get_str(f, type_key, &type));
    if (gguf_str_eq(type, "none")) return VKLLM_OK;
    if (!gguf_str_eq(type, "linear"))
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: rope scaling type '%.*s' (key '%s') is not supported (only none "
                        "and linear)",
                        f->path, (int)(type.len > 32 ? 32 : type.len), type.ptr, type_key);
    float factor = 0.0f;
    VKL_TRY(get_f32_opt(f, arch_key(key, sizeof key, arch, "rope.scaling.factor"), 0.0f, &factor));
    if (factor == 0.0f)
        VKL_TRY(
            get_f32_opt(f, arch_key(key, sizeof key, arch, "rope.scale_linear"), 0.0f, &factor));
    if (factor < 0.0f || !isfinite(factor))
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: rope scaling factor %g is invalid", f->path,
                        (double)factor);
    if (factor > 0.0f) *freq_scale = 1.0f / factor;
    return VKLLM_OK;
}

vkllm_status model_load_config(const gguf_file *f, model_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    model_arch arch = MODEL_ARCH_LLAMA;
    VKL_TRY(read_architecture(f, &arch));
    cfg->arch = arch;
    char key[128];
#define KEY(suffix) arch_key(key, sizeof key, arch, suffix)

    VKL_TRY(get_layer_u32(f, KEY("embedding_length"), true, 0, &cfg->n_embd));
    VKL_TRY(get_layer_u32(f, KEY("block_count"), true, 0, &cfg->n_layer));
    VKL_TRY(get_layer_u32(f, KEY("feed_forward_length"), true, 0, &cfg->n_ff));
    VKL_TRY(get_layer_u32(f, KEY("attention.head_count"), true, 0, &cfg->n_head));
    VKL_TRY(get_layer_u32(f, KEY("context_length"), false, 0, &cfg->n_ctx_train));
    if (cfg->n_embd == 0 || cfg->n_layer == 0 || cfg->n_ff == 0 || cfg->n_head == 0)
        return vkl_fail(VKLLM_ERR_FORMAT,
                        "%s: zero size (embedding_length %u, block_count %u, "
                        "feed_forward_length %u, attention.head_count %u)",
                        f->path, cfg->n_embd, cfg->n_layer, cfg->n_ff, cfg->n_head);
    if (cfg->n_layer > MODEL_MAX_LAYERS)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED, "%s: %s.block_count = %u exceeds the limit %u",
                        f->path, arch_names[arch], cfg->n_layer, MODEL_MAX_LAYERS);
    VKL_TRY(get_layer_u32(f, KEY("attention.head_count_kv"), false, cfg->n_head, &cfg->n_head_kv));
    if (cfg->n_head_kv == 0 || cfg->n_head % cfg->n_head_kv != 0)
        return vkl_fail(VKLLM_ERR_FORMAT,
                        "%s: attention.head_count %u is not a multiple of head_count_kv %u",
                        f->path, cfg->n_head, cfg->n_head_kv);
    VKL_TRY(get_layer_u32(f, KEY("attention.key_length"), false, cfg->n_embd / cfg->n_head,
                          &cfg->head_dim));
    VKL_TRY(
        get_layer_u32(f, KEY("attention.value_length"), false, cfg->head_dim, &cfg->head_dim_v));
    if (cfg->head_dim == 0 || cfg->head_dim_v == 0)
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: head size is zero (key_length %u, value_length %u)",
                        f->path, cfg->head_dim, cfg->head_dim_v);
    cfg->n_embd_q = cfg->n_head * cfg->head_dim;
    cfg->n_embd_k = cfg->n_head_kv * cfg->head_dim;
    cfg->n_embd_v = cfg->n_head_kv * cfg->head_dim_v;

    const char *eps_key = KEY("attention.layer_norm_rms_epsilon");
    vkllm_status st = gguf_get_f32(f, eps_key, &cfg->rms_eps);
    if (st == VKLLM_ERR_NOT_FOUND)
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: required key '%s' is missing", f->path, eps_key);
    VKL_TRY(st);
    if (!(cfg->rms_eps >= 0.0f) || !isfinite(cfg->rms_eps))
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: %s = %g is invalid", f->path, eps_key,
                        (double)cfg->rms_eps);

    /* RoPE */
    VKL_TRY(get_layer_u32(f, KEY("rope.dimension_count"), false, cfg->head_dim, &cfg->n_rot));
    if (cfg->n_rot == 0 || cfg->n_rot % 2 || cfg->n_rot > cfg->head_dim)
        return vkl_fail(VKLLM_ERR_FORMAT,
                        "%s: rope.dimension_count %u must be even and in (0, key_length %u]",
                        f->path, cfg->n_rot, cfg->head_dim);
    cfg->rope_neox = arch != MODEL_ARCH_LLAMA;
    VKL_TRY(get_f32_opt(f, KEY("rope.freq_base"), 10000.0f, &cfg->rope_freq_base));
    if (!(cfg->rope_freq_base > 0.0f) || !isfinite(cfg->rope_freq_base))
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: rope.freq_base %g is invalid", f->path,
                        (double)cfg->rope_freq_base);
    VKL_TRY(read_rope_scaling(f, arch, &cfg->rope_freq_scale));
    cfg->rope_freq_base_local = cfg->rope_freq_base;
    cfg->rope_freq_scale_local = cfg->rope_freq_scale;
    cfg->has_rope_freqs = gguf_find_tensor(f, "rope_freqs.weight") != NULL;

    /* attention */
    cfg->attn_scale = 1.0f / sqrtf((float)cfg->head_dim);
    if (arch == MODEL_ARCH_GEMMA3) {
        /* llama.cpp: the 27B (62 layers) scales by 1/sqrt(n_embd/n_head) instead. */
        if (cfg->n_layer == 62) cfg->attn_scale = 1.0f / sqrtf((float)(cfg->n_embd / cfg->n_head));
        VKL_TRY(get_layer_u32(f, KEY("attention.sliding_window"), false, 0, &cfg->sliding_window));
        uint32_t pattern = 6;
        VKL_TRY(get_layer_u32(f, KEY("attention.sliding_window_pattern"), false, 6, &pattern));
        if (cfg->sliding_window > 0 && pattern > 0)
            for (uint32_t il = 0; il < cfg->n_layer; il++)
                cfg->is_sliding[il] = il % pattern < pattern - 1;
        cfg->rope_freq_base_local = 10000.0f;
        cfg->rope_freq_scale_local = 1.0f;
    }
    VKL_TRY(get_f32_opt(f, KEY("attention.scale"), cfg->attn_scale, &cfg->attn_scale));
    VKL_TRY(get_f32_opt(f, KEY("attn_logit_softcapping"), 0.0f, &cfg->attn_logit_softcap));
    VKL_TRY(get_f32_opt(f, KEY("final_logit_softcapping"), 0.0f, &cfg->final_logit_softcap));
    if (cfg->attn_logit_softcap < 0.0f || cfg->final_logit_softcap < 0.0f)
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: negative logit softcapping (attn %g, final %g)",
                        f->path, (double)cfg->attn_logit_softcap, (double)cfg->final_logit_softcap);

    cfg->has_qkv_bias = arch == MODEL_ARCH_QWEN2 ||
                        (arch == MODEL_ARCH_LLAMA && gguf_find_tensor(f, "blk.0.attn_q.bias"));
    cfg->has_qk_norm = arch == MODEL_ARCH_QWEN3 || arch == MODEL_ARCH_GEMMA3;
    cfg->has_post_norms = arch == MODEL_ARCH_GEMMA3;
    cfg->embed_scale = arch == MODEL_ARCH_GEMMA3 ? sqrtf((float)cfg->n_embd) : 1.0f;
    cfg->act = arch == MODEL_ARCH_GEMMA3 ? MODEL_ACT_GELU_TANH : MODEL_ACT_SILU;
    cfg->tied_output = gguf_find_tensor(f, "output.weight") == NULL;

    const gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd)
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: required tensor 'token_embd.weight' is missing",
                        f->path);
    if (embd->ne[1] == 0 || embd->ne[1] > INT32_MAX)
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: tensor 'token_embd.weight' has %llu rows", f->path,
                        (unsigned long long)embd->ne[1]);
    cfg->n_vocab = (uint32_t)embd->ne[1];
#undef KEY
    return VKLLM_OK;
}
