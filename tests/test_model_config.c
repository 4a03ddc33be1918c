/* test_model_config.c: model_load (engine/model/model.h) on synthetic files of every
 * architecture (values round-trip from synth's parameters; per-arch rules of docs §4-§5),
 * on the real Gemma 3 270M (skipped when absent; values of docs §5.1), and its refusals:
 * unknown architecture, missing keys/tensors, wrong shapes, unsupported rope scaling,
 * per-layer arrays, inconsistent head counts. Refusals are produced by rewriting a valid
 * synthetic file with one change, and every message must name the culprit. */
// links: model common
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf_write.h"
#include "model/model.h"
#include "model/synth.h"

#define MODEL_PATH VKLLM_SOURCE_DIR "/models/gemma-3-270m-q4_k_m.gguf"

static gguf_file *open_synth(const synth_params *p, void **image) {
    uint64_t size;
    cr_assert_eq(synth_write_memory(p, image, &size), VKLLM_OK, "%s", vkllm_last_error());
    gguf_file *f;
    cr_assert_eq(gguf_open_memory(*image, size, "synthetic", &f), VKLLM_OK, "%s",
                 vkllm_last_error());
    return f;
}

Test(model_config, roundtrip_every_architecture) {
    for (int a = 0; a < MODEL_ARCH_COUNT; a++) {
        synth_params p;
        synth_params_default((model_arch)a, &p);
        p.n_embd = 96, p.n_layer = a == MODEL_ARCH_GEMMA3 ? 13 : 3, p.n_head = 6, p.n_head_kv = 2;
        p.head_dim = 24, p.n_ff = 160, p.n_ctx = 512, p.rope_freq_base = 12345.0f;
        p.rms_eps = 3e-6f, p.sliding_window = 7, p.tied_output = a != MODEL_ARCH_LLAMA;
        p.rope_freqs = a == MODEL_ARCH_LLAMA;
        void *image;
        gguf_file *f = open_synth(&p, &image);
        model_config c;
        model_weights w;
        cr_assert_eq(model_load(f, &c, &w), VKLLM_OK, "%s", vkllm_last_error());
        const char *name = model_arch_name((model_arch)a);
        cr_assert_eq(c.arch, (model_arch)a, "%s", name);
        cr_assert_eq(c.n_vocab, 256u);
        cr_assert_eq(c.n_embd, 96u);
        cr_assert_eq(c.n_layer, p.n_layer);
        cr_assert_eq(c.n_head, 6u);
        cr_assert_eq(c.n_head_kv, 2u);
        cr_assert_eq(c.head_dim, 24u);
        cr_assert_eq(c.head_dim_v, 24u);
        cr_assert_eq(c.n_embd_q, 144u);
        cr_assert_eq(c.n_embd_k, 48u);
        cr_assert_eq(c.n_embd_v, 48u);
        cr_assert_eq(c.n_ff, 160u);
        cr_assert_eq(c.n_ctx_train, 512u);
        cr_assert_float_eq(c.rms_eps, 3e-6f, 1e-12);
        cr_assert_eq(c.n_rot, 24u);
        cr_assert_eq(c.rope_neox, a != MODEL_ARCH_LLAMA, "%s rope pairing", name);
        cr_assert_eq(c.rope_freq_base, 12345.0f);
        cr_assert_eq(c.rope_freq_scale, 1.0f);
        cr_assert_float_eq(c.attn_scale, 1.0f / sqrtf(24.0f), 1e-7);
        cr_assert_eq(c.has_qkv_bias, a == MODEL_ARCH_QWEN2, "%s", name);
        cr_assert_eq(c.has_qk_norm, a == MODEL_ARCH_QWEN3 || a == MODEL_ARCH_GEMMA3, "%s", name);
        cr_assert_eq(c.has_post_norms, a == MODEL_ARCH_GEMMA3, "%s", name);
        cr_assert_eq(c.act, a == MODEL_ARCH_GEMMA3 ? MODEL_ACT_GELU_TANH : MODEL_ACT_SILU);
        cr_assert_float_eq(c.embed_scale, a == MODEL_ARCH_GEMMA3 ? sqrtf(96.0f) : 1.0f, 1e-6);
        cr_assert_eq(c.tied_output, a != MODEL_ARCH_LLAMA);
        cr_assert_eq(c.has_rope_freqs, a == MODEL_ARCH_LLAMA);
        cr_assert_eq(c.final_logit_softcap, 0.0f);
        cr_assert_eq(c.attn_logit_softcap, 0.0f);
        for (uint32_t il = 0; il < c.n_layer; il++) {
            bool local = a == MODEL_ARCH_GEMMA3 && il % 6 < 5;
            cr_assert_eq(c.is_sliding[il], local, "%s layer %u", name, il);
            cr_assert_eq(model_rope_base(&c, il), local ? 10000.0f : 12345.0f);
            const model_layer_weights *L = &w.layers[il];
            cr_assert(L->attn_norm && L->wq && L->wk && L->wv && L->wo && L->ffn_norm &&
                      L->ffn_gate && L->ffn_up && L->ffn_down);
            cr_assert_eq(L->bq != NULL, c.has_qkv_bias);
            cr_assert_eq(L->bv != NULL, c.has_qkv_bias);
            cr_assert_eq(L->q_norm != NULL, c.has_qk_norm);
            cr_assert_eq(L->k_norm != NULL, c.has_qk_norm);
            cr_assert_eq(L->post_attn_norm != NULL, c.has_post_norms);
            cr_assert_eq(L->post_ffw_norm != NULL, c.has_post_norms);
            cr_assert_eq(L->wq->ne[0], 96u);
            cr_assert_eq(L->wq->ne[1], 144u);
            cr_assert_eq(L->wo->ne[0], 144u);
        }
        cr_assert_eq(c.sliding_window, a == MODEL_ARCH_GEMMA3 ? 7u : 0u);
        cr_assert_eq(w.output == w.token_embd, c.tied_output);
        cr_assert_eq(w.rope_freqs != NULL, c.has_rope_freqs);
        cr_assert_eq(w.n_layer, c.n_layer);
        model_weights_free(&w);
        gguf_close(f);
        free(image);
    }
}

Test(model_config, real_gemma3_270m) {
    FILE *probe = fopen(MODEL_PATH, "rb");
    if (!probe) cr_skip_test("%s absent (tools/fetch_model.sh fetches it)", MODEL_PATH);
    fclose(probe);
    gguf_file *f;
    cr_assert_eq(gguf_open(MODEL_PATH, &f), VKLLM_OK, "%s", vkllm_last_error());
    model_config c;
    model_weights w;
    cr_assert_eq(model_load(f, &c, &w), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(c.arch, MODEL_ARCH_GEMMA3);
    cr_assert_eq(c.n_vocab, 262144u);
    cr_assert_eq(c.n_embd, 640u);
    cr_assert_eq(c.n_layer, 18u);
    cr_assert_eq(c.n_head, 4u);
    cr_assert_eq(c.n_head_kv, 1u);
    cr_assert_eq(c.head_dim, 256u);
    cr_assert_eq(c.n_ff, 2048u);
    cr_assert_eq(c.n_rot, 256u);
    cr_assert_eq(c.sliding_window, 512u);
    cr_assert_eq(c.rope_freq_base, 1e6f);
    cr_assert_eq(c.rope_freq_base_local, 1e4f);
    cr_assert_float_eq(c.attn_scale, 0.0625f, 1e-9);
    cr_assert_float_eq(c.embed_scale, 25.298221f, 1e-5);
    cr_assert(c.tied_output && c.rope_neox && c.has_qk_norm && c.has_post_norms);
    for (uint32_t il = 0; il < 18; il++)
        cr_assert_eq(c.is_sliding[il], il != 5 && il != 11 && il != 17, "layer %u", il);
    /* Q4_K_M mixture of docs §3.5 reproduced by synth's type rule for every matrix. */
    synth_params p;
    synth_params_default(MODEL_ARCH_GEMMA3, &p);
    cr_assert_eq(synth_apply_preset("gemma3-270m", &p), VKLLM_OK);
    p.quant = SYNTH_Q4_K_M;
    int matrices = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (t->n_dims < 2) continue;
        char name[80];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        const char *kind = name;
        uint32_t il = 0;
        if (!strncmp(name, "blk.", 4)) {
            il = (uint32_t)atoi(name + 4);
            kind = strchr(name + 4, '.') + 1;
        }
        ggml_type want = synth_tensor_type(&p, kind, il, t->ne[0]);
        cr_assert_eq(t->type, want, "%s: file %s, synth rule %s", name,
                     ggml_type_get_info(t->type).name, ggml_type_get_info(want).name);
        matrices++;
    }
    cr_assert_eq(matrices, 127);
    model_weights_free(&w);
    gguf_close(f);
}

/* ------------------------------------------------------------------ refusals */

typedef struct rewrite {
    const char *drop_key;
    const char *drop_tensor;
    const char *swap_tensor; /* give this tensor the dims and bytes of swap_source */
    const char *swap_source;
    const char *set_str_key, *set_str_value;
    const char *array_key; /* replace with a u32 array of n_layer values */
    const uint32_t *array_values;
    uint32_t array_count;
} rewrite;

static vkllm_status copy_value(gguf_writer *w, const char *key, const gguf_value *v) {
    switch (v->type) {
    case GGUF_TYPE_UINT32:
        return gguf_writer_add_u32(w, key, (uint32_t)v->u64);
    case GGUF_TYPE_UINT64:
        return gguf_writer_add_u64(w, key, v->u64);
    case GGUF_TYPE_INT32:
        return gguf_writer_add_i32(w, key, (int32_t)v->i64);
    case GGUF_TYPE_FLOAT32:
        return gguf_writer_add_f32(w, key, (float)v->f64);
    case GGUF_TYPE_BOOL:
        return gguf_writer_add_bool(w, key, v->u64 != 0);
    case GGUF_TYPE_STRING:
        return gguf_writer_add_str_n(w, key, v->str.ptr, v->str.len);
    case GGUF_TYPE_ARRAY:
        if (v->array.elem_type == GGUF_TYPE_STRING)
            return gguf_writer_add_str_array_n(w, key, v->array.strs, v->array.count);
        return gguf_writer_add_array(w, key, v->array.elem_type, v->array.data, v->array.count);
    default:
        cr_assert_fail("unexpected value type %d for %s", v->type, key);
    }
    return VKLLM_ERR_INTERNAL;
}

/* A synthetic `arch` model rewritten with one change; returns model_load's status. */
static vkllm_status load_rewritten(model_arch arch, const rewrite *r) {
    synth_params p;
    synth_params_default(arch, &p);
    void *image;
    gguf_file *src = open_synth(&p, &image);
    gguf_writer *w;
    cr_assert_eq(gguf_writer_create(&w), VKLLM_OK);
    for (uint64_t i = 0; i < src->n_kv; i++) {
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)src->kv[i].key.len, src->kv[i].key.ptr);
        if (r->drop_key && !strcmp(key, r->drop_key)) continue;
        if (r->set_str_key && !strcmp(key, r->set_str_key)) continue;
        if (r->array_key && !strcmp(key, r->array_key)) continue;
        cr_assert_eq(copy_value(w, key, &src->kv[i].value), VKLLM_OK, "%s", vkllm_last_error());
    }
    if (r->set_str_key)
        cr_assert_eq(gguf_writer_add_str(w, r->set_str_key, r->set_str_value), VKLLM_OK);
    if (r->array_key)
        cr_assert_eq(gguf_writer_add_array(w, r->array_key, GGUF_TYPE_UINT32, r->array_values,
                                           r->array_count),
                     VKLLM_OK);
    for (uint64_t i = 0; i < src->n_tensors; i++) {
        const gguf_tensor *t = &src->tensors[i];
        char name[96];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        if (r->drop_tensor && !strcmp(name, r->drop_tensor)) continue;
        if (r->swap_tensor && !strcmp(name, r->swap_tensor))
            t = gguf_find_tensor(src, r->swap_source);
        cr_assert_eq(gguf_writer_add_tensor(w, name, t->n_dims, t->ne, t->type, t->data), VKLLM_OK);
    }
    void *out;
    uint64_t size;
    cr_assert_eq(gguf_writer_write_memory(w, &out, &size), VKLLM_OK, "%s", vkllm_last_error());
    gguf_writer_destroy(w);
    gguf_file *f;
    cr_assert_eq(gguf_open_memory(out, size, "rewritten.gguf", &f), VKLLM_OK, "%s",
                 vkllm_last_error());
    model_config c;
    model_weights wt;
    vkllm_status st = model_load(f, &c, &wt);
    if (st == VKLLM_OK) model_weights_free(&wt);
    gguf_close(f);
    gguf_close(src);
    free(out);
    free(image);
    return st;
}

#define assert_message(...)                                                                        \
    do {                                                                                           \
        const char *needles_[] = {__VA_ARGS__};                                                    \
        for (size_t i_ = 0; i_ < sizeof needles_ / sizeof needles_[0]; i_++)                       \
            cr_assert(strstr(vkllm_last_error(), needles_[i_]), "message '%s' lacks '%s'",         \
                      vkllm_last_error(), needles_[i_]);                                           \
    } while (0)

Test(model_config, rewrite_without_change_loads) {
    rewrite r = {0};
    for (int a = 0; a < MODEL_ARCH_COUNT; a++)
        cr_assert_eq(load_rewritten((model_arch)a, &r), VKLLM_OK, "%s", vkllm_last_error());
}

Test(model_config, unknown_architecture_is_unsupported) {
    rewrite r = {.set_str_key = "general.architecture", .set_str_value = "mamba"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_LLAMA, &r), VKLLM_ERR_UNSUPPORTED);
    assert_message("rewritten.gguf", "architecture 'mamba'", "not supported");
}

Test(model_config, missing_architecture_key) {
    rewrite r = {.drop_key = "general.architecture"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_LLAMA, &r), VKLLM_ERR_FORMAT);
    assert_message("general.architecture", "missing");
}

Test(model_config, missing_hyperparameter_key) {
    rewrite r = {.drop_key = "qwen3.block_count"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_QWEN3, &r), VKLLM_ERR_FORMAT);
    assert_message("qwen3.block_count", "missing");
    rewrite e = {.drop_key = "gemma3.attention.layer_norm_rms_epsilon"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_GEMMA3, &e), VKLLM_ERR_FORMAT);
    assert_message("gemma3.attention.layer_norm_rms_epsilon");
}

Test(model_config, missing_tensors_are_named) {
    rewrite r = {.drop_tensor = "blk.1.ffn_up.weight"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_LLAMA, &r), VKLLM_ERR_FORMAT);
    assert_message("rewritten.gguf", "'blk.1.ffn_up.weight'", "missing");
    rewrite b = {.drop_tensor = "blk.0.attn_k.bias"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_QWEN2, &b), VKLLM_ERR_FORMAT);
    assert_message("'blk.0.attn_k.bias'", "missing");
    rewrite n = {.drop_tensor = "blk.1.attn_q_norm.weight"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_QWEN3, &n), VKLLM_ERR_FORMAT);
    assert_message("'blk.1.attn_q_norm.weight'");
    rewrite g = {.drop_tensor = "blk.0.post_ffw_norm.weight"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_GEMMA3, &g), VKLLM_ERR_FORMAT);
    assert_message("'blk.0.post_ffw_norm.weight'");
    rewrite e = {.drop_tensor = "token_embd.weight"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_GEMMA3, &e), VKLLM_ERR_FORMAT);
    assert_message("'token_embd.weight'");
    rewrite o = {.drop_tensor = "output_norm.weight"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_LLAMA, &o), VKLLM_ERR_FORMAT);
    assert_message("'output_norm.weight'");
}

Test(model_config, wrong_shapes_name_expected_and_actual) {
    /* default shapes: n_embd 64, 4 heads x 16, 2 kv heads -> attn_k [64, 32], attn_q [64, 64] */
    rewrite r = {.swap_tensor = "blk.0.attn_k.weight", .swap_source = "blk.0.attn_q.weight"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_LLAMA, &r), VKLLM_ERR_FORMAT);
    assert_message("'blk.0.attn_k.weight'", "dims [64, 64]", "expected [64, 32]");
    rewrite n = {.swap_tensor = "blk.1.ffn_norm.weight", .swap_source = "blk.1.attn_q_norm.weight"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_GEMMA3, &n), VKLLM_ERR_FORMAT);
    assert_message("'blk.1.ffn_norm.weight'", "dims [16]", "expected [64]");
    rewrite d = {.swap_tensor = "blk.1.ffn_down.weight", .swap_source = "blk.1.ffn_up.weight"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_QWEN2, &d), VKLLM_ERR_FORMAT);
    assert_message("'blk.1.ffn_down.weight'", "dims [64, 128]", "expected [128, 64]");
}

Test(model_config, per_layer_arrays) {
    const uint32_t same[2] = {2, 2}, differ[2] = {2, 1};
    rewrite r = {
        .array_key = "llama.attention.head_count_kv", .array_values = same, .array_count = 2};
    cr_assert_eq(load_rewritten(MODEL_ARCH_LLAMA, &r), VKLLM_OK, "%s", vkllm_last_error());
    rewrite d = {
        .array_key = "llama.attention.head_count_kv", .array_values = differ, .array_count = 2};
    cr_assert_eq(load_rewritten(MODEL_ARCH_LLAMA, &d), VKLLM_ERR_UNSUPPORTED);
    assert_message("llama.attention.head_count_kv", "differs between layers");
}

Test(model_config, head_counts_must_divide) {
    const uint32_t three[1] = {3};
    rewrite r = {
        .array_key = "qwen3.attention.head_count_kv", .array_values = three, .array_count = 1};
    cr_assert_eq(load_rewritten(MODEL_ARCH_QWEN3, &r), VKLLM_ERR_FORMAT);
    assert_message("head_count 4", "head_count_kv 3");
}

Test(model_config, rope_scaling_types) {
    rewrite y = {.set_str_key = "llama.rope.scaling.type", .set_str_value = "yarn"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_LLAMA, &y), VKLLM_ERR_UNSUPPORTED);
    assert_message("'yarn'", "llama.rope.scaling.type");
    rewrite n = {.set_str_key = "llama.rope.scaling.type", .set_str_value = "none"};
    cr_assert_eq(load_rewritten(MODEL_ARCH_LLAMA, &n), VKLLM_OK, "%s", vkllm_last_error());
}

Test(model_config, arch_names) {
    model_arch a;
    cr_assert(model_arch_from_name("qwen2", &a) && a == MODEL_ARCH_QWEN2);
    cr_assert(!model_arch_from_name("gemma2", &a));
    cr_assert_str_eq(model_arch_name(MODEL_ARCH_GEMMA3), "gemma3");
    cr_assert_str_eq(model_arch_name((model_arch)99), "unknown");
}
