/* test_synth.c: synthetic GGUF models (engine/model/synth.h).
 *
 * - determinism: same params -> identical bytes (memory and streamed file alike);
 *   another seed -> different weights, same metadata;
 * - tensor statistics: every weight type decodes (quant_dequantize) to finite values of
 *   mean ~0 and standard deviation within [0.5, 2] x 1/sqrt(fan_in); fp16 scales are
 *   never subnormal; norms in [0.9, 1.1];
 * - the Q4_K_M mixture rules of docs §3.5 on the 32-layer example;
 * - tokenizer embedding: keys copied, vocabulary padded with <|reserved_N|> control
 *   tokens, qwen pre-tokenizer, and the result loads with tok_load and encodes as the
 *   source tokenizer does;
 * - refusals (bad shapes, vocabulary smaller than the tokenizer, unknown preset). */
// links: model common
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model.h"
#include "model/quant.h"
#include "model/synth.h"
#include "model/tokenizer.h"

#define TOK_BPE VKLLM_SOURCE_DIR "/tests/fixtures/tokenizer/llama3-bpe-tiny.gguf"
#define TOK_SPM VKLLM_SOURCE_DIR "/tests/fixtures/tokenizer/spm-tiny.gguf"

static void *write_mem(const synth_params *p, uint64_t *size) {
    void *data;
    cr_assert_eq(synth_write_memory(p, &data, size), VKLLM_OK, "%s", vkllm_last_error());
    return data;
}

Test(synth, same_seed_same_bytes_file_and_memory) {
    for (int a = 0; a < MODEL_ARCH_COUNT; a++) {
        synth_params p;
        synth_params_default((model_arch)a, &p);
        p.quant = SYNTH_Q4_K_M;
        p.n_embd = 256;
        p.seed = 42;
        uint64_t n1, n2;
        void *d1 = write_mem(&p, &n1), *d2 = write_mem(&p, &n2);
        cr_assert_eq(n1, n2);
        cr_assert(!memcmp(d1, d2, n1), "%s: two writes differ", model_arch_name((model_arch)a));
        char path[] = "/tmp/vkllm_test_synth_XXXXXX";
        int fd = mkstemp(path);
        cr_assert(fd >= 0);
        close(fd);
        cr_assert_eq(synth_write(&p, path), VKLLM_OK, "%s", vkllm_last_error());
        FILE *f = fopen(path, "rb");
        void *d3 = malloc(n1 + 1);
        size_t got = fread(d3, 1, n1 + 1, f);
        fclose(f);
        remove(path);
        cr_assert_eq(got, n1, "file size %zu, memory image %llu", got, (unsigned long long)n1);
        cr_assert(!memcmp(d1, d3, n1), "streamed file differs from the memory image");
        p.seed = 43;
        uint64_t n4;
        void *d4 = write_mem(&p, &n4);
        cr_assert_eq(n4, n1);
        cr_assert(memcmp(d1, d4, n1), "seed 43 gives the same bytes as seed 42");
        free(d1), free(d2), free(d3), free(d4);
    }
}

static void check_stats(const gguf_tensor *t, const char *quant) {
    char name[96];
    snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
    float *v = malloc(t->n_elements * sizeof(float));
    cr_assert_eq(quant_dequantize(t->type, t->data, v, t->n_elements), VKLLM_OK, "%s",
                 vkllm_last_error());
    double sum = 0, sq = 0;
    for (uint64_t i = 0; i < t->n_elements; i++) {
        cr_assert(isfinite(v[i]), "%s %s: element %llu not finite", quant, name,
                  (unsigned long long)i);
        sum += v[i];
        sq += (double)v[i] * v[i];
    }
    double mean = sum / t->n_elements, sd = sqrt(sq / t->n_elements - mean * mean);
    bool norm = strstr(name, "norm") != NULL, bias = strstr(name, ".bias") != NULL;
    if (norm && strcmp(name, "output_norm.weight")) {
        cr_assert(fabs(mean - 1.0) < 0.05 && sd < 0.1, "%s: norm mean %g sd %g", name, mean, sd);
    } else if (!norm && !bias && t->n_dims == 2 && strcmp(name, "token_embd.weight") &&
               strcmp(name, "output.weight")) {
        double want = 1.0 / sqrt((double)t->ne[0]);
        cr_assert(sd > 0.5 * want && sd < 2 * want, "%s %s (%s): sd %g, want ~%g", quant, name,
                  ggml_type_get_info(t->type).name, sd, want);
        cr_assert(fabs(mean) < 0.2 * want, "%s %s: mean %g (sd %g)", quant, name, mean, sd);
    }
    free(v);
    /* fp16 scales of the blocks: normal numbers (GPUs may flush subnormals). */
    ggml_type_info info = ggml_type_get_info(t->type);
    uint32_t offset = t->type == GGML_TYPE_Q6_K ? 208 : 0;
    if (info.block_elems > 1)
        for (uint64_t b = 0; b < t->n_bytes / info.block_bytes; b++) {
            uint16_t h;
            memcpy(&h, t->data + b * info.block_bytes + offset, 2);
            cr_assert((h & 0x7c00) != 0, "%s block %llu: subnormal scale 0x%04x", name,
                      (unsigned long long)b, h);
        }
}

Test(synth, tensor_statistics_every_type) {
    for (int q = 0; q < SYNTH_QUANT_COUNT; q++)
        for (int a = 0; a < MODEL_ARCH_COUNT; a++) {
            synth_params p;
            synth_params_default((model_arch)a, &p);
            p.quant = (synth_quant)q;
            p.n_embd = 256, p.n_ff = 512, p.n_head = 4, p.n_head_kv = 2;
            uint64_t n;
            void *d = write_mem(&p, &n);
            gguf_file *f;
            cr_assert_eq(gguf_open_memory(d, n, "synth", &f), VKLLM_OK, "%s", vkllm_last_error());
            model_config c;
            model_weights w;
            cr_assert_eq(model_load(f, &c, &w), VKLLM_OK, "%s", vkllm_last_error());
            for (uint64_t i = 0; i < f->n_tensors; i++)
                check_stats(&f->tensors[i], synth_quant_name((synth_quant)q));
            if (q != SYNTH_Q4_K_M && q != SYNTH_F32) /* uniform types apply to every matrix */
                cr_assert_str_eq(ggml_type_get_info(w.layers[1].ffn_down->type).name,
                                 synth_quant_name((synth_quant)q));
            model_weights_free(&w);
            gguf_close(f);
            free(d);
        }
}

Test(synth, q4_k_m_mixture_rules) {
    synth_params p;
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    cr_assert_eq(synth_apply_preset("llama3-8b", &p), VKLLM_OK);
    p.quant = SYNTH_Q4_K_M;
    /* docs §3.5: 32 layers -> Q6_K attn_v/ffn_down in layers 0-3, 6, 9, ..., 27, 28-31. */
    const int q6[] = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};
    for (uint32_t il = 0; il < 32; il++) {
        bool more = false;
        for (size_t i = 0; i < sizeof q6 / sizeof q6[0]; i++)
            more |= q6[i] == (int)il;
        ggml_type want = more ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_K;
        cr_assert_eq(synth_tensor_type(&p, "attn_v.weight", il, 4096), want, "attn_v layer %u", il);
        cr_assert_eq(synth_tensor_type(&p, "ffn_down.weight", il, 14336), want, "down %u", il);
        cr_assert_eq(synth_tensor_type(&p, "attn_q.weight", il, 4096), GGML_TYPE_Q4_K);
    }
    cr_assert_eq(synth_tensor_type(&p, "output.weight", 0, 4096), GGML_TYPE_Q6_K);
    cr_assert_eq(synth_tensor_type(&p, "token_embd.weight", 0, 4096), GGML_TYPE_Q4_K);
    p.tied_output = true; /* tied: the embedding is the LM head */
    cr_assert_eq(synth_tensor_type(&p, "token_embd.weight", 0, 4096), GGML_TYPE_Q6_K);
    /* shape fallbacks: ne0 % 256 != 0 */
    cr_assert_eq(synth_tensor_type(&p, "attn_q.weight", 0, 640), GGML_TYPE_Q5_0);
    cr_assert_eq(synth_tensor_type(&p, "attn_v.weight", 0, 640), GGML_TYPE_Q8_0);
    cr_assert_eq(synth_tensor_type(&p, "attn_q.weight", 0, 48), GGML_TYPE_F16);
    p.quant = SYNTH_Q5_K;
    cr_assert_eq(synth_tensor_type(&p, "attn_q.weight", 0, 640), GGML_TYPE_Q5_1);
    p.quant = SYNTH_Q8_0;
    cr_assert_eq(synth_tensor_type(&p, "attn_q.weight", 0, 48), GGML_TYPE_F16);
}

static void expect_same_encoding(const tok_tokenizer *a, const tok_tokenizer *b, const char *text) {
    int32_t *ia, *ib;
    size_t na, nb;
    cr_assert_eq(tok_encode(a, text, strlen(text), true, false, &ia, &na), VKLLM_OK);
    cr_assert_eq(tok_encode(b, text, strlen(text), true, false, &ib, &nb), VKLLM_OK);
    cr_assert_eq(na, nb, "'%s': %zu vs %zu tokens", text, na, nb);
    cr_assert(na == 0 || !memcmp(ia, ib, na * sizeof *ia), "'%s' encodes differently", text);
    free(ia);
    free(ib);
}

static void check_tokenizer(model_arch arch, const char *tok_path, uint32_t n_vocab,
                            const char *want_pre) {
    synth_params p;
    synth_params_default(arch, &p);
    p.tokenizer_path = tok_path;
    p.n_vocab = n_vocab;
    uint64_t n;
    void *d = write_mem(&p, &n);
    gguf_file *f, *src;
    cr_assert_eq(gguf_open_memory(d, n, "synth", &f), VKLLM_OK);
    cr_assert_eq(gguf_open(tok_path, &src), VKLLM_OK);
    tok_tokenizer *tok, *orig;
    cr_assert_eq(tok_load(f, &tok), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(tok_load(src, &orig), VKLLM_OK, "%s", vkllm_last_error());
    size_t n_orig = tok_vocab_size(orig);
    uint32_t want_vocab = n_vocab ? n_vocab : (uint32_t)n_orig;
    cr_assert_eq(tok_vocab_size(tok), want_vocab);
    model_config c;
    cr_assert_eq(model_load_config(f, &c), VKLLM_OK);
    cr_assert_eq(c.n_vocab, want_vocab, "token_embd rows follow the vocabulary");
    if (want_pre) {
        gguf_str pre;
        cr_assert_eq(gguf_get_str(f, "tokenizer.ggml.pre", &pre), VKLLM_OK);
        cr_assert(gguf_str_eq(pre, want_pre), "pre is '%.*s'", (int)pre.len, pre.ptr);
    }
    if (want_vocab > n_orig) {
        char text[32];
        snprintf(text, sizeof text, "<|reserved_%u|>", want_vocab - 1);
        cr_assert_eq(tok_find(tok, text), (int32_t)want_vocab - 1);
        cr_assert_eq(tok_token_type(tok, (int32_t)want_vocab - 1), TOK_TYPE_CONTROL);
    }
    cr_assert_eq(tok_bos(tok), tok_bos(orig));
    cr_assert_eq(tok_eos(tok), tok_eos(orig));
    if (!want_pre || !strcmp(want_pre, "llama-bpe")) /* same pre-tokenizer: same ids */
        expect_same_encoding(tok, orig, "Hello world, the quick brown fox! 123");
    tok_free(tok);
    tok_free(orig);
    gguf_close(f);
    gguf_close(src);
    free(d);
}

Test(synth, tokenizer_copied_and_padded) {
    check_tokenizer(MODEL_ARCH_LLAMA, TOK_BPE, 0, "llama-bpe");
    check_tokenizer(MODEL_ARCH_LLAMA, TOK_BPE, 4000, "llama-bpe");
    check_tokenizer(MODEL_ARCH_QWEN2, TOK_BPE, 3100, "qwen2");
    check_tokenizer(MODEL_ARCH_QWEN3, TOK_BPE, 0, "qwen2");
    check_tokenizer(MODEL_ARCH_GEMMA3, TOK_SPM, 2100, NULL);
}

Test(synth, refusals) {
    synth_params p;
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    void *d;
    uint64_t n;
    p.tokenizer_path = TOK_BPE;
    p.n_vocab = 100;
    cr_assert_eq(synth_write_memory(&p, &d, &n), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "n_vocab 100 is smaller than the 3005 tokens"), "%s",
              vkllm_last_error());
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    p.n_head_kv = 3;
    cr_assert_eq(synth_write_memory(&p, &d, &n), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "n_head 4 not a multiple of n_head_kv 3"), "%s",
              vkllm_last_error());
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    p.n_vocab = 0;
    cr_assert_eq(synth_write_memory(&p, &d, &n), VKLLM_ERR_INVALID_ARGUMENT);
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    p.tokenizer_path = "/nonexistent/tok.gguf";
    cr_assert_neq(synth_write_memory(&p, &d, &n), VKLLM_OK);
    cr_assert(strstr(vkllm_last_error(), "/nonexistent/tok.gguf"), "%s", vkllm_last_error());
    cr_assert_eq(synth_apply_preset("llama9-900b", &p), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "llama9-900b"));
    synth_quant q;
    cr_assert(synth_quant_from_name("q4_k_m", &q) && q == SYNTH_Q4_K_M);
    cr_assert(!synth_quant_from_name("IQ2_XS", &q));
}

Test(synth, presets_have_real_shapes) {
    synth_params p;
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    cr_assert_eq(synth_apply_preset("llama3-8b", &p), VKLLM_OK);
    cr_assert(p.arch == MODEL_ARCH_LLAMA && p.n_embd == 4096 && p.n_layer == 32 && p.n_head == 32 &&
              p.n_head_kv == 8 && p.n_ff == 14336 && p.n_vocab == 128256);
    cr_assert_eq(synth_apply_preset("gemma3-270m", &p), VKLLM_OK);
    cr_assert(p.arch == MODEL_ARCH_GEMMA3 && p.n_embd == 640 && p.head_dim == 256 &&
              p.sliding_window == 512 && p.n_vocab == 262144);
}
