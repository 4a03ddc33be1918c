/* synth.c: synthetic GGUF models (synth.h): metadata per architecture, tensor list with
 * per-tensor types (incl. the Q4_K_M mixture of docs §3.5), random legal blocks produced
 * by fill callbacks while the gguf_writer streams the file.
 *
 * Invariant: a tensor's bytes depend only on (seed, tensor name, dims, type), never on
 * the order tensors are generated in, so files are reproducible byte for byte. */
#include "model/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/splitmix.h"
#include "model/gguf_write.h"
#include "model/quant.h"

/* ---------------------------------------------------------------- random numbers */

typedef struct synth_rng {
    uint64_t state;
} synth_rng;

/* splitmix64: one 64-bit state, good statistical quality, fast enough for GBs. */
static uint64_t rng_next(synth_rng *r) {
    return vkl_splitmix64(&r->state);
}

static float rng_unit(synth_rng *r) {
    return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f);
}
static float rng_range(synth_rng *r, float lo, float hi) {
    return lo + (hi - lo) * rng_unit(r);
}
static uint32_t rng_int(synth_rng *r, uint32_t lo, uint32_t hi) { /* [lo, hi] */
    return lo + (uint32_t)((rng_next(r) >> 32) % (uint64_t)(hi - lo + 1));
}

static void rng_bytes(synth_rng *r, uint8_t *dst, size_t n) {
    while (n >= 8) {
        uint64_t v = rng_next(r);
        memcpy(dst, &v, 8);
        dst += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = rng_next(r);
        memcpy(dst, &v, n);
    }
}

static synth_rng rng_for_tensor(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a of the name */
    for (const char *c = name; *c; c++)
        h = (h ^ (uint8_t)*c) * 0x100000001b3ull;
    synth_rng r = {seed * 0x9e3779b97f4a7c15ull ^ h};
    rng_next(&r);
    return r;
}

/* ---------------------------------------------------------------- names and types */

static const struct {
    const char *name;
    ggml_type type;     /* uniform type (unused for Q4_K_M) */
    uint32_t file_type; /* general.file_type (informational) */
} quant_table[SYNTH_QUANT_COUNT] = {
    [SYNTH_F32] = {"F32", GGML_TYPE_F32, 0},         [SYNTH_F16] = {"F16", GGML_TYPE_F16, 1},
    [SYNTH_Q4_0] = {"Q4_0", GGML_TYPE_Q4_0, 2},      [SYNTH_Q4_1] = {"Q4_1", GGML_TYPE_Q4_1, 3},
    [SYNTH_Q5_0] = {"Q5_0", GGML_TYPE_Q5_0, 8},      [SYNTH_Q5_1] = {"Q5_1", GGML_TYPE_Q5_1, 9},
    [SYNTH_Q8_0] = {"Q8_0", GGML_TYPE_Q8_0, 7},      [SYNTH_Q4_K] = {"Q4_K", GGML_TYPE_Q4_K, 14},
    [SYNTH_Q5_K] = {"Q5_K", GGML_TYPE_Q5_K, 16},     [SYNTH_Q6_K] = {"Q6_K", GGML_TYPE_Q6_K, 18},
    [SYNTH_Q4_K_M] = {"Q4_K_M", GGML_TYPE_Q4_K, 15},
};

bool synth_quant_from_name(const char *name, synth_quant *out) {
    for (int q = 0; q < SYNTH_QUANT_COUNT; q++)
        if (!strcasecmp(name, quant_table[q].name)) {
            *out = (synth_quant)q;
            return true;
        }
    return false;
}

const char *synth_quant_name(synth_quant q) {
    return (unsigned)q < SYNTH_QUANT_COUNT ? quant_table[q].name : "unknown";
}

/* llama.cpp's use_more_bits(i, n). */
static bool more_bits(uint32_t i, uint32_t n) {
    return i < n / 8 || i >= 7 * n / 8 || (i >= n / 8 && (i - n / 8) % 3 == 2);
}

/* Shape fallback of llama-quant.cpp when ne0 does not fit the block (docs §3.5). */
static ggml_type shape_fallback(ggml_type t, uint64_t ne0) {
    ggml_type_info info = ggml_type_get_info(t);
    if (ne0 % info.block_elems == 0) return t;
    switch (t) {
    case GGML_TYPE_Q4_K:
        t = GGML_TYPE_Q5_0;
        break;
    case GGML_TYPE_Q5_K:
        t = GGML_TYPE_Q5_1;
        break;
    case GGML_TYPE_Q6_K:
        t = GGML_TYPE_Q8_0;
        break;
    case GGML_TYPE_Q2_K:
    case GGML_TYPE_Q3_K:
        t = GGML_TYPE_Q4_0;
        break;
    default:
        return GGML_TYPE_F16;
    }
    return ne0 % 32 == 0 ? t : GGML_TYPE_F16;
}

ggml_type synth_tensor_type(const synth_params *p, const char *kind, uint32_t il, uint64_t ne0) {
    ggml_type t = quant_table[p->quant].type;
    if (p->quant == SYNTH_Q4_K_M) {
        bool tied = p->tied_output || p->arch == MODEL_ARCH_GEMMA3;
        if (!strcmp(kind, "output.weight") || (tied && !strcmp(kind, "token_embd.weight")))
            t = GGML_TYPE_Q6_K;
        else if (!strcmp(kind, "attn_v.weight") || !strcmp(kind, "ffn_down.weight"))
            t = more_bits(il, p->n_layer) ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_K;
        else
            t = GGML_TYPE_Q4_K;
    }
    return shape_fallback(t, ne0);
}

/* ---------------------------------------------------------------- defaults, presets */

void synth_params_default(model_arch arch, synth_params *p) {
    memset(p, 0, sizeof *p);
    p->arch = arch;
    p->n_embd = 64;
    p->n_layer = 2;
    p->n_head = 4;
    p->n_head_kv = 2;
    p->n_ff = 128;
    p->n_vocab = 256;
    p->n_ctx = 256;
    p->quant = SYNTH_F32;
    p->seed = 1;
    p->tied_output = arch == MODEL_ARCH_GEMMA3;
    p->sliding_window = arch == MODEL_ARCH_GEMMA3 ? 16 : 0;
}

typedef struct preset {
    const char *name;
    model_arch arch;
    uint32_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx;
    bool tied, rope_freqs;
    uint32_t window;
    float freq_base;
} preset;

static const preset presets[] = {
    {"llama3-8b", MODEL_ARCH_LLAMA, 4096, 32, 32, 8, 128, 14336, 128256, 8192, false, false, 0,
     500000.0f},
    {"llama3.2-1b", MODEL_ARCH_LLAMA, 2048, 16, 32, 8, 64, 8192, 128256, 131072, true, true, 0,
     500000.0f},
    {"qwen2.5-0.5b", MODEL_ARCH_QWEN2, 896, 24, 14, 2, 64, 4864, 151936, 32768, true, false, 0,
     1000000.0f},
    {"qwen3-0.6b", MODEL_ARCH_QWEN3, 1024, 28, 16, 8, 128, 3072, 151936, 40960, true, false, 0,
     1000000.0f},
    {"gemma3-270m", MODEL_ARCH_GEMMA3, 640, 18, 4, 1, 256, 2048, 262144, 32768, true, false, 512,
     1000000.0f},
    {"tiny-llama", MODEL_ARCH_LLAMA, 64, 2, 4, 2, 16, 128, 0, 256, false, false, 0, 0.0f},
    {"tiny-qwen2", MODEL_ARCH_QWEN2, 64, 2, 4, 2, 16, 128, 0, 256, true, false, 0, 0.0f},
    {"tiny-qwen3", MODEL_ARCH_QWEN3, 64, 2, 4, 2, 128, 128, 0, 256, true, false, 0, 0.0f},
    {"tiny-gemma3", MODEL_ARCH_GEMMA3, 64, 6, 2, 1, 32, 128, 0, 256, true, false, 8, 0.0f},
};

vkllm_status synth_apply_preset(const char *name, synth_params *p) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        const preset *s = &presets[i];
        if (strcmp(name, s->name)) continue;
        p->arch = s->arch;
        p->n_embd = s->n_embd;
        p->n_layer = s->n_layer;
        p->n_head = s->n_head;
        p->n_head_kv = s->n_head_kv;
        p->head_dim = s->head_dim;
        p->n_ff = s->n_ff;
        p->n_vocab = s->n_vocab;
        p->n_ctx = s->n_ctx;
        p->tied_output = s->tied;
        p->rope_freqs = s->rope_freqs;
        p->sliding_window = s->window;
        p->rope_freq_base = s->freq_base;
        return VKLLM_OK;
    }
    return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                    "unknown preset '%s' (known: llama3-8b, llama3.2-1b, qwen2.5-0.5b, "
                    "qwen3-0.6b, gemma3-270m, tiny-llama, tiny-qwen2, tiny-qwen3, tiny-gemma3)",
                    name);
}

static float effective_base(const synth_params *p) {
    if (p->rope_freq_base > 0) return p->rope_freq_base;
    return p->arch == MODEL_ARCH_LLAMA ? 500000.0f : 1000000.0f;
}

/* ---------------------------------------------------------------- tensor contents */

typedef enum tensor_role {
    ROLE_MATRIX,     /* random values of standard deviation `std` */
    ROLE_NORM,       /* std * (1 + U(-0.1, 0.1)): std is the gain, 1 except output_norm */
    ROLE_BIAS,       /* U(-0.1, 0.1) */
    ROLE_ROPE_FREQS, /* llama3 rope divisors, deterministic */
} tensor_role;

typedef struct tensor_spec {
    char name[64];
    uint32_t n_dims;
    uint64_t ne[2];
    ggml_type type;
    tensor_role role;
    float std;
    const synth_params *params;
} tensor_spec;

/* Scales below the smallest normal fp16 would be subnormal, which GPUs may flush. */
#define MIN_SCALE 6.2e-5f

static void put_f16(uint8_t *dst, float v) {
    uint16_t h = quant_f32_to_f16(v);
    memcpy(dst, &h, 2);
}

static float scale_for(synth_rng *r, float std, float q_std) {
    float d = std / q_std * rng_range(r, 0.8f, 1.2f);
    return d < MIN_SCALE ? MIN_SCALE : d;
}

/* Q4_K/Q5_K 12-byte packing of eight 6-bit scales and mins (docs §3.3). */
static void pack_k_scales(uint8_t *dst, const uint8_t *sc, const uint8_t *mn) {
    for (int j = 0; j < 4; j++) {
        dst[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        dst[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        dst[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
}

/* One block of a quantized type with values of standard deviation ~std, centred on 0.
 * q_std below: standard deviation of the integer code (uniform over its range). */
static void random_block(synth_rng *r, ggml_type type, float std, uint8_t *b) {
    switch (type) {
    case GGML_TYPE_Q4_0: /* d (q - 8), q uniform 0..15 */
        put_f16(b, scale_for(r, std, 4.61f));
        rng_bytes(r, b + 2, 16);
        break;
    case GGML_TYPE_Q4_1: { /* d q + m, m = -7.5 d */
        float d = scale_for(r, std, 4.61f);
        put_f16(b, d);
        put_f16(b + 2, -7.5f * quant_f16_to_f32(quant_f32_to_f16(d)));
        rng_bytes(r, b + 4, 16);
        break;
    }
    case GGML_TYPE_Q5_0:
        put_f16(b, scale_for(r, std, 9.23f));
        rng_bytes(r, b + 2, 20);
        break;
    case GGML_TYPE_Q5_1: {
        float d = scale_for(r, std, 9.23f);
        put_f16(b, d);
        put_f16(b + 2, -15.5f * quant_f16_to_f32(quant_f32_to_f16(d)));
        rng_bytes(r, b + 4, 20);
        break;
    }
    case GGML_TYPE_Q8_0:
        put_f16(b, scale_for(r, std, 73.9f));
        rng_bytes(r, b + 2, 32);
        break;
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K: {
        /* value = d sc q - dmin mn; mn ~ sc and dmin = centre d keep sub-blocks centred. */
        bool five = type == GGML_TYPE_Q5_K;
        float centre = five ? 15.5f : 7.5f;
        uint8_t sc[8], mn[8];
        for (int j = 0; j < 8; j++) {
            sc[j] = (uint8_t)(five ? rng_int(r, 4, 11) : rng_int(r, 8, 23));
            int m = (int)sc[j] + (int)rng_int(r, 0, 2) - 1;
            mn[j] = (uint8_t)(m < 0 ? 0 : m > 63 ? 63 : m);
        }
        float d = scale_for(r, std, (five ? 9.23f : 4.61f) * (five ? 7.5f : 15.5f));
        put_f16(b, d);
        float dmin = centre * quant_f16_to_f32(quant_f32_to_f16(d));
        put_f16(b + 2, dmin < MIN_SCALE ? MIN_SCALE : dmin);
        pack_k_scales(b + 4, sc, mn);
        rng_bytes(r, b + 16, five ? 160 : 128); /* Q5_K: qh[32] + qs[128] */
        break;
    }
    case GGML_TYPE_Q6_K: {    /* d sc (q - 32), q uniform 0..63, sc signed 3..9 */
        rng_bytes(r, b, 192); /* ql[128], qh[64] */
        for (int j = 0; j < 16; j++) {
            int s = (int)rng_int(r, 3, 9);
            b[192 + j] = (uint8_t)(int8_t)((rng_next(r) & 1) ? s : -s);
        }
        put_f16(b + 208, scale_for(r, std, 18.47f * 6.0f));
        break;
    }
    default:
        break;
    }
}

/* llama3 rope scaling divisors (docs §4.4), llama 3.2 constants. */
static float llama3_rope_divisor(uint32_t i, uint32_t n_rot, float base) {
    const double factor = 32.0, low = 1.0, high = 4.0, orig_ctx = 8192.0;
    double freq = pow((double)base, -2.0 * i / n_rot);
    double wavelen = 2.0 * M_PI / freq;
    if (wavelen < orig_ctx / high) return 1.0f;
    if (wavelen > orig_ctx / low) return (float)factor;
    double s = (orig_ctx / wavelen - low) / (high - low);
    return (float)(1.0 / ((1.0 - s) / factor + s));
}

static vkllm_status fill_tensor(void *user, const gguf_writer_tensor_desc *desc, uint8_t *dst) {
    const tensor_spec *t = user;
    synth_rng r = rng_for_tensor(t->params->seed, t->name);
    uint64_t n = t->ne[0] * (t->n_dims > 1 ? t->ne[1] : 1);
    switch (t->role) {
    case ROLE_NORM:
    case ROLE_BIAS:
        for (uint64_t i = 0; i < n; i++) {
            float v = t->role == ROLE_NORM ? t->std * (1.0f + rng_range(&r, -0.1f, 0.1f))
                                           : rng_range(&r, -0.1f, 0.1f);
            memcpy(dst + 4 * i, &v, 4);
        }
        return VKLLM_OK;
    case ROLE_ROPE_FREQS: {
        for (uint64_t i = 0; i < n; i++) {
            /* t->std carries the rope base for this role */
            float v = llama3_rope_divisor((uint32_t)i, (uint32_t)(2 * n), t->std);
            memcpy(dst + 4 * i, &v, 4);
        }
        return VKLLM_OK;
    }
    case ROLE_MATRIX:
        break;
    }
    ggml_type_info info = ggml_type_get_info(t->type);
    if (t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16) {
        float a = t->std * 1.7320508f; /* uniform(-a, a) has std a/sqrt(3) */
        for (uint64_t i = 0; i < n; i++) {
            float v = rng_range(&r, -a, a);
            if (t->type == GGML_TYPE_F32)
                memcpy(dst + 4 * i, &v, 4);
            else
                put_f16(dst + 2 * i, v);
        }
        return VKLLM_OK;
    }
    uint64_t n_blocks = n / info.block_elems;
    for (uint64_t i = 0; i < n_blocks; i++)
        random_block(&r, t->type, t->std, dst + i * info.block_bytes);
    if (n_blocks * info.block_bytes != desc->n_bytes)
        return vkl_fail(VKLLM_ERR_INTERNAL, "synth: tensor '%s' size %llu != %llu", t->name,
                        (unsigned long long)(n_blocks * info.block_bytes),
                        (unsigned long long)desc->n_bytes);
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- the tensor list */

typedef struct tensor_list {
    tensor_spec *items;
    size_t count, cap;
} tensor_list;

static vkllm_status add_spec(tensor_list *l, const synth_params *p, const char *name,
                             tensor_role role, uint64_t ne0, uint64_t ne1, ggml_type type,
                             float std) {
    if (l->count == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        tensor_spec *items = realloc(l->items, cap * sizeof *items);
        if (!items) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "synth: tensor list");
        l->items = items;
        l->cap = cap;
    }
    tensor_spec *t = &l->items[l->count++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = ne1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 ? ne1 : 1;
    t->type = ne1 ? type : GGML_TYPE_F32;
    t->role = role;
    t->std = std;
    t->params = p;
    return VKLLM_OK;
}

static vkllm_status build_tensor_list(const synth_params *p, uint32_t n_vocab, tensor_list *l) {
    bool tied = p->tied_output || p->arch == MODEL_ARCH_GEMMA3;
    uint32_t hd = p->head_dim ? p->head_dim : p->n_embd / p->n_head;
    uint64_t nq = (uint64_t)p->n_head * hd, nkv = (uint64_t)p->n_head_kv * hd;
    float inv_embd = 1.0f / sqrtf((float)p->n_embd);
    /* Embedding rows: rms ~1 in the residual stream for untied llama/qwen. With a tied LM
     * head, rows of rms ~1 make each token dominate its own logit (|e|^2 against e.e' ~
     * noise), so random models would just repeat their input: tied embeddings get rows of
     * rms 0.3/sqrt(n_embd) (gemma3 multiplies them by sqrt(n_embd) again) and
     * output_norm a gain of 4, which keeps the logits' spread near 1. */
    float embd_std = tied ? 0.3f * inv_embd : 1.0f;
    char name[64];
#define MAT(nm, kind, il, ne0, ne1, std)                                                           \
    VKL_TRY(add_spec(l, p, nm, ROLE_MATRIX, ne0, ne1, synth_tensor_type(p, kind, il, ne0), std))

    MAT("token_embd.weight", "token_embd.weight", 0, p->n_embd, n_vocab, embd_std);
    VKL_TRY(add_spec(l, p, "output_norm.weight", ROLE_NORM, p->n_embd, 0, GGML_TYPE_F32,
                     tied ? 4.0f : 1.0f));
    if (!tied) MAT("output.weight", "output.weight", 0, p->n_embd, n_vocab, 2.0f * inv_embd);
    if (p->rope_freqs && p->arch == MODEL_ARCH_LLAMA) {
        VKL_TRY(add_spec(l, p, "rope_freqs.weight", ROLE_ROPE_FREQS, hd / 2, 0, GGML_TYPE_F32,
                         effective_base(p)));
    }
    for (uint32_t il = 0; il < p->n_layer; il++) {
#define LNAME(suffix) (snprintf(name, sizeof name, "blk.%u.%s", il, suffix), name)
#define VEC(suffix, role, n) VKL_TRY(add_spec(l, p, LNAME(suffix), role, n, 0, GGML_TYPE_F32, 1))
#define LMAT(suffix, ne0, ne1) MAT(LNAME(suffix), suffix, il, ne0, ne1, 1.0f / sqrtf((float)(ne0)))
        VEC("attn_norm.weight", ROLE_NORM, p->n_embd);
        LMAT("attn_q.weight", p->n_embd, nq);
        LMAT("attn_k.weight", p->n_embd, nkv);
        LMAT("attn_v.weight", p->n_embd, nkv);
        if (p->arch == MODEL_ARCH_QWEN2) {
            VEC("attn_q.bias", ROLE_BIAS, nq);
            VEC("attn_k.bias", ROLE_BIAS, nkv);
            VEC("attn_v.bias", ROLE_BIAS, nkv);
        }
        if (p->arch == MODEL_ARCH_QWEN3 || p->arch == MODEL_ARCH_GEMMA3) {
            VEC("attn_q_norm.weight", ROLE_NORM, hd);
            VEC("attn_k_norm.weight", ROLE_NORM, hd);
        }
        LMAT("attn_output.weight", nq, p->n_embd);
        if (p->arch == MODEL_ARCH_GEMMA3) VEC("post_attention_norm.weight", ROLE_NORM, p->n_embd);
        VEC("ffn_norm.weight", ROLE_NORM, p->n_embd);
        LMAT("ffn_gate.weight", p->n_embd, p->n_ff);
        LMAT("ffn_up.weight", p->n_embd, p->n_ff);
        LMAT("ffn_down.weight", p->n_ff, p->n_embd);
        if (p->arch == MODEL_ARCH_GEMMA3) VEC("post_ffw_norm.weight", ROLE_NORM, p->n_embd);
#undef LMAT
#undef VEC
#undef LNAME
    }
#undef MAT
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- metadata */

static vkllm_status copy_kv(gguf_writer *w, const gguf_kv *kv, const char *key) {
    const gguf_value *v = &kv->value;
    switch (v->type) {
    case GGUF_TYPE_UINT8:
        return gguf_writer_add_u8(w, key, (uint8_t)v->u64);
    case GGUF_TYPE_INT8:
        return gguf_writer_add_i8(w, key, (int8_t)v->i64);
    case GGUF_TYPE_UINT16:
        return gguf_writer_add_u16(w, key, (uint16_t)v->u64);
    case GGUF_TYPE_INT16:
        return gguf_writer_add_i16(w, key, (int16_t)v->i64);
    case GGUF_TYPE_UINT32:
        return gguf_writer_add_u32(w, key, (uint32_t)v->u64);
    case GGUF_TYPE_INT32:
        return gguf_writer_add_i32(w, key, (int32_t)v->i64);
    case GGUF_TYPE_UINT64:
        return gguf_writer_add_u64(w, key, v->u64);
    case GGUF_TYPE_INT64:
        return gguf_writer_add_i64(w, key, v->i64);
    case GGUF_TYPE_FLOAT32:
        return gguf_writer_add_f32(w, key, (float)v->f64);
    case GGUF_TYPE_FLOAT64:
        return gguf_writer_add_f64(w, key, v->f64);
    case GGUF_TYPE_BOOL:
        return gguf_writer_add_bool(w, key, v->u64 != 0);
    case GGUF_TYPE_STRING:
        return gguf_writer_add_str_n(w, key, v->str.ptr, v->str.len);
    case GGUF_TYPE_ARRAY:
        if (v->array.elem_type == GGUF_TYPE_STRING)
            return gguf_writer_add_str_array_n(w, key, v->array.strs, v->array.count);
        /* Fixed-size elements are stored packed little-endian, as the writer wants. */
        return gguf_writer_add_array(w, key, v->array.elem_type, v->array.data, v->array.count);
    }
    return vkl_fail(VKLLM_ERR_FORMAT, "synth: key '%s' has unknown type %u", key,
                    (unsigned)v->type);
}

/* tokenizer.* keys of `tok`, padded to n_vocab with "<|reserved_ID|>" control tokens. */
static vkllm_status copy_tokenizer(gguf_writer *w, const gguf_file *tok, const synth_params *p,
                                   uint32_t n_vocab) {
    const gguf_kv *tokens = gguf_find_kv(tok, "tokenizer.ggml.tokens");
    uint64_t n_tok = tokens->value.array.count;
    uint64_t n_pad = n_vocab - n_tok;
    vkllm_status st = VKLLM_OK;
    gguf_str *strs = NULL;
    char *pad_text = NULL;
    void *arr = NULL;
    for (uint64_t i = 0; i < tok->n_kv && st == VKLLM_OK; i++) {
        const gguf_kv *kv = &tok->kv[i];
        char key[256];
        if (kv->key.len < 10 || kv->key.len >= sizeof key || memcmp(kv->key.ptr, "tokenizer.", 10))
            continue;
        memcpy(key, kv->key.ptr, kv->key.len);
        key[kv->key.len] = 0;
        bool qwen = p->arch == MODEL_ARCH_QWEN2 || p->arch == MODEL_ARCH_QWEN3;
        if (qwen && !strcmp(key, "tokenizer.ggml.pre")) {
            st = gguf_writer_add_str(w, key, "qwen2");
            continue;
        }
        bool is_tokens = !strcmp(key, "tokenizer.ggml.tokens");
        bool is_scores = !strcmp(key, "tokenizer.ggml.scores");
        bool is_types = !strcmp(key, "tokenizer.ggml.token_type");
        if (n_pad == 0 || !(is_tokens || is_scores || is_types)) {
            st = copy_kv(w, kv, key);
            continue;
        }
        const gguf_value *v = &kv->value;
        if (v->type != GGUF_TYPE_ARRAY || v->array.count != n_tok) {
            st = vkl_fail(VKLLM_ERR_FORMAT, "%s: key '%s' is not an array of %llu elements",
                          tok->path, key, (unsigned long long)n_tok);
            break;
        }
        if (is_tokens) {
            strs = malloc(n_vocab * sizeof *strs);
            pad_text = malloc(n_pad * 24);
            if (!strs || !pad_text) {
                st = vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "synth: vocabulary of %u", n_vocab);
                break;
            }
            for (uint64_t t = 0; t < n_tok; t++)
                strs[t] = v->array.strs[t];
            for (uint64_t t = 0; t < n_pad; t++) {
                char *s = pad_text + 24 * t;
                int len = snprintf(s, 24, "<|reserved_%llu|>", (unsigned long long)(n_tok + t));
                strs[n_tok + t] = (gguf_str){s, (uint64_t)len};
            }
            st = gguf_writer_add_str_array_n(w, key, strs, n_vocab);
            free(strs);
            free(pad_text);
            strs = NULL;
            pad_text = NULL;
        } else {
            uint32_t size = gguf_value_type_size(v->array.elem_type);
            bool ok = is_scores ? v->array.elem_type == GGUF_TYPE_FLOAT32
                                : v->array.elem_type == GGUF_TYPE_INT32 ||
                                      v->array.elem_type == GGUF_TYPE_UINT32;
            if (!ok) {
                st = vkl_fail(VKLLM_ERR_FORMAT, "%s: key '%s' has element type %s", tok->path, key,
                              gguf_value_type_name(v->array.elem_type));
                break;
            }
            arr = malloc((size_t)n_vocab * size);
            if (!arr) {
                st = vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "synth: vocabulary of %u", n_vocab);
                break;
            }
            memcpy(arr, v->array.data, n_tok * size);
            for (uint64_t t = n_tok; t < n_vocab; t++) {
                if (is_scores) {
                    float zero = 0.0f;
                    memcpy((uint8_t *)arr + t * 4, &zero, 4);
                } else {
                    int32_t control = 3;
                    memcpy((uint8_t *)arr + t * 4, &control, 4);
                }
            }
            st = gguf_writer_add_array(w, key, v->array.elem_type, arr, n_vocab);
            free(arr);
            arr = NULL;
        }
    }
    return st;
}

static vkllm_status add_metadata(gguf_writer *w, const synth_params *p, uint32_t hd) {
    const char *arch = model_arch_name(p->arch);
    char key[128], name[96];
#define K(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    VKL_TRY(gguf_writer_add_str(w, "general.architecture", arch));
    snprintf(name, sizeof name, "synthetic %s", arch);
    VKL_TRY(gguf_writer_add_str(w, "general.name", p->name ? p->name : name));
    VKL_TRY(gguf_writer_add_u32(w, "general.file_type", quant_table[p->quant].file_type));
    if (p->quant != SYNTH_F32 && p->quant != SYNTH_F16)
        VKL_TRY(gguf_writer_add_u32(w, "general.quantization_version", 2));
    VKL_TRY(gguf_writer_add_u64(w, "general.seed", p->seed));
    VKL_TRY(gguf_writer_add_u32(w, K("context_length"), p->n_ctx));
    VKL_TRY(gguf_writer_add_u32(w, K("embedding_length"), p->n_embd));
    VKL_TRY(gguf_writer_add_u32(w, K("block_count"), p->n_layer));
    VKL_TRY(gguf_writer_add_u32(w, K("feed_forward_length"), p->n_ff));
    VKL_TRY(gguf_writer_add_u32(w, K("attention.head_count"), p->n_head));
    VKL_TRY(gguf_writer_add_u32(w, K("attention.head_count_kv"), p->n_head_kv));
    VKL_TRY(gguf_writer_add_u32(w, K("attention.key_length"), hd));
    VKL_TRY(gguf_writer_add_u32(w, K("attention.value_length"), hd));
    float eps = p->rms_eps > 0 ? p->rms_eps : p->arch == MODEL_ARCH_LLAMA ? 1e-5f : 1e-6f;
    VKL_TRY(gguf_writer_add_f32(w, K("attention.layer_norm_rms_epsilon"), eps));
    VKL_TRY(gguf_writer_add_f32(w, K("rope.freq_base"), effective_base(p)));
    if (p->arch == MODEL_ARCH_LLAMA) VKL_TRY(gguf_writer_add_u32(w, K("rope.dimension_count"), hd));
    if (p->arch == MODEL_ARCH_GEMMA3 && p->sliding_window)
        VKL_TRY(gguf_writer_add_u32(w, K("attention.sliding_window"), p->sliding_window));
#undef K
    return VKLLM_OK;
}

static vkllm_status check_params(const synth_params *p) {
    if ((unsigned)p->arch >= MODEL_ARCH_COUNT || (unsigned)p->quant >= SYNTH_QUANT_COUNT)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "synth: bad architecture or type");
    if (!p->n_embd || !p->n_layer || !p->n_head || !p->n_head_kv || !p->n_ff || !p->n_ctx)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "synth: zero size (n_embd %u, n_layer %u, n_head %u, n_head_kv %u, "
                        "n_ff %u, n_ctx %u)",
                        p->n_embd, p->n_layer, p->n_head, p->n_head_kv, p->n_ff, p->n_ctx);
    if (p->n_head % p->n_head_kv)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "synth: n_head %u not a multiple of n_head_kv %u", p->n_head, p->n_head_kv);
    uint32_t hd = p->head_dim ? p->head_dim : p->n_embd / p->n_head;
    if (hd == 0 || hd % 2)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "synth: head_dim %u must be even and > 0", hd);
    if (p->n_layer > MODEL_MAX_LAYERS)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "synth: n_layer %u > %u", p->n_layer,
                        MODEL_MAX_LAYERS);
    return VKLLM_OK;
}

/* Builds the writer (metadata + tensor specs); `specs` must outlive the write. */
static vkllm_status build(const synth_params *p, gguf_writer **out_w, tensor_list *specs) {
    VKL_TRY(check_params(p));
    gguf_file *tok = NULL;
    uint32_t n_vocab = p->n_vocab;
    if (p->tokenizer_path) {
        VKL_TRY(gguf_open(p->tokenizer_path, &tok));
        const gguf_kv *tokens = gguf_find_kv(tok, "tokenizer.ggml.tokens");
        if (!tokens || tokens->value.type != GGUF_TYPE_ARRAY ||
            tokens->value.array.elem_type != GGUF_TYPE_STRING) {
            gguf_close(tok);
            return vkl_fail(VKLLM_ERR_FORMAT, "%s: no string array 'tokenizer.ggml.tokens'",
                            p->tokenizer_path);
        }
        uint64_t n_tok = tokens->value.array.count;
        if (n_vocab == 0) n_vocab = (uint32_t)n_tok;
        if (n_vocab < n_tok) {
            gguf_close(tok);
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "synth: n_vocab %u is smaller than the %llu tokens of %s", n_vocab,
                            (unsigned long long)n_tok, p->tokenizer_path);
        }
    }
    if (n_vocab == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "synth: n_vocab is 0 and no tokenizer given");
    uint32_t hd = p->head_dim ? p->head_dim : p->n_embd / p->n_head;
    gguf_writer *w = NULL;
    vkllm_status st = gguf_writer_create(&w);
    if (st == VKLLM_OK) st = add_metadata(w, p, hd);
    if (st == VKLLM_OK && tok) st = copy_tokenizer(w, tok, p, n_vocab);
    if (st == VKLLM_OK) st = build_tensor_list(p, n_vocab, specs);
    for (size_t i = 0; st == VKLLM_OK && i < specs->count; i++) {
        tensor_spec *t = &specs->items[i];
        st = gguf_writer_add_tensor_fill(w, t->name, t->n_dims, t->ne, t->type, fill_tensor, t);
    }
    gguf_close(tok);
    if (st != VKLLM_OK) {
        gguf_writer_destroy(w);
        return st;
    }
    *out_w = w;
    return VKLLM_OK;
}

vkllm_status synth_write(const synth_params *p, const char *path) {
    gguf_writer *w = NULL;
    tensor_list specs = {0};
    vkllm_status st = build(p, &w, &specs);
    if (st == VKLLM_OK) st = gguf_writer_write_file(w, path);
    gguf_writer_destroy(w);
    free(specs.items);
    return st;
}

vkllm_status synth_write_memory(const synth_params *p, void **data, uint64_t *size) {
    gguf_writer *w = NULL;
    tensor_list specs = {0};
    vkllm_status st = build(p, &w, &specs);
    if (st == VKLLM_OK) st = gguf_writer_write_memory(w, data, size);
    gguf_writer_destroy(w);
    free(specs.items);
    return st;
}
