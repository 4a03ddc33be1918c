/* test_ref_forward.c: the CPU reference forward pass (engine/ref/ref_forward.h).
 *
 * - naive_double_*: tiny F32 synthetic models of each architecture against a separate,
 *   deliberately naive implementation written here in double precision straight from
 *   docs gguf-and-models.md §4.3-§5.4 (whole sequence per layer, no KV cache, its own
 *   rmsnorm/rope/softmax/activations, weights read from the GGUF mapping by name).
 *   Bound: relative error of all logits <= 1e-5 (fp32 vs double; observed ~1e-7).
 * - incremental: a prompt processed at once == token by token == in two chunks
 *   (rel err <= 1e-4; the per-token arithmetic is identical, so observed 0), for every
 *   architecture and several weight types.
 * - rewind, greedy generation, thread-count independence, argument errors. */
// links: ref model common
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "model/synth.h"
#include "ref/ref_forward.h"

typedef struct built {
    void *image;
    gguf_file *file;
    ref_model *model;
} built;

static void build(const synth_params *p, built *b) {
    uint64_t size;
    cr_assert_eq(synth_write_memory(p, &b->image, &size), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(gguf_open_memory(b->image, size, "synthetic", &b->file), VKLLM_OK, "%s",
                 vkllm_last_error());
    cr_assert_eq(ref_model_create(b->file, &b->model), VKLLM_OK, "%s", vkllm_last_error());
}

static void unbuild(built *b) {
    ref_model_destroy(b->model);
    gguf_close(b->file);
    free(b->image);
}

static void random_tokens(uint64_t seed, int32_t *t, uint32_t n, uint32_t n_vocab) {
    test_rng rng = test_rng_seeded(seed);
    for (uint32_t i = 0; i < n; i++)
        t[i] = (int32_t)test_rng_below(&rng, n_vocab);
}

/* ------------------------------------------------------------------ naive double model */

static const float *W(const gguf_file *f, const char *fmt, int il) {
    char name[96];
    snprintf(name, sizeof name, fmt, il);
    const gguf_tensor *t = gguf_find_tensor(f, name);
    cr_assert(t, "tensor %s missing", name);
    cr_assert_eq(t->type, GGML_TYPE_F32, "tensor %s not F32", name);
    return (const float *)t->data;
}

static void d_rmsnorm(double *x, const float *w, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        x[i] = x[i] * inv * w[i];
}

/* y[r] = sum_i W[r][i] x[i], W stored [n_out][n_in]. */
static void d_linear(const float *w, const double *x, double *y, int n_in, int n_out) {
    for (int r = 0; r < n_out; r++) {
        double s = 0;
        for (int i = 0; i < n_in; i++)
            s += (double)w[(size_t)r * n_in + i] * x[i];
        y[r] = s;
    }
}

static void d_rope(double *v, int pos, int n_rot, double base, bool neox) {
    for (int i = 0; i < n_rot / 2; i++) {
        double theta = pos * pow(base, -2.0 * i / n_rot);
        int a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
        double x0 = v[a], x1 = v[b];
        v[a] = x0 * cos(theta) - x1 * sin(theta);
        v[b] = x0 * sin(theta) + x1 * cos(theta);
    }
}

/* All-position logits [n][n_vocab] of tokens under the doc's rules for `arch`. */
static void naive_forward(const gguf_file *f, const synth_params *p, const int32_t *tok, int n,
                          double *logits) {
    model_arch arch = p->arch;
    bool gemma = arch == MODEL_ARCH_GEMMA3, neox = arch != MODEL_ARCH_LLAMA;
    int E = (int)p->n_embd, H = (int)p->n_head, HKV = (int)p->n_head_kv;
    int D = (int)(p->head_dim ? p->head_dim : p->n_embd / p->n_head), FF = (int)p->n_ff;
    const gguf_tensor *emb_t = gguf_find_tensor(f, "token_embd.weight");
    int V = (int)emb_t->ne[1];
    const float *emb = (const float *)emb_t->data;
    const gguf_tensor *out_t = gguf_find_tensor(f, "output.weight");
    const float *out = out_t ? (const float *)out_t->data : emb;
    double eps = arch == MODEL_ARCH_LLAMA ? 1e-5 : 1e-6;
    eps = (double)(float)eps; /* the file stores float32 */
    double base_global = arch == MODEL_ARCH_LLAMA ? 500000.0 : 1000000.0;

    double *x = calloc((size_t)n * E, sizeof(double));
    double *q = calloc((size_t)n * H * D, sizeof(double));
    double *k = calloc((size_t)n * HKV * D, sizeof(double));
    double *v = calloc((size_t)n * HKV * D, sizeof(double));
    double *att = calloc((size_t)n * H * D, sizeof(double));
    double *tmp = calloc((size_t)(E > H * D ? E : H * D) + 2 * FF + 16, sizeof(double));
    double *sc = calloc((size_t)n, sizeof(double));
    for (int t = 0; t < n; t++)
        for (int i = 0; i < E; i++)
            x[(size_t)t * E + i] = emb[(size_t)tok[t] * E + i] * (gemma ? sqrt((double)E) : 1.0);
    for (int il = 0; il < (int)p->n_layer; il++) {
        bool local = gemma && p->sliding_window > 0 && il % 6 < 5;
        double base = local ? 10000.0 : base_global;
        for (int t = 0; t < n; t++) {
            double *a = tmp;
            memcpy(a, x + (size_t)t * E, E * sizeof(double));
            d_rmsnorm(a, W(f, "blk.%d.attn_norm.weight", il), E, eps);
            double *qt = q + (size_t)t * H * D, *kt = k + (size_t)t * HKV * D,
                   *vt = v + (size_t)t * HKV * D;
            d_linear(W(f, "blk.%d.attn_q.weight", il), a, qt, E, H * D);
            d_linear(W(f, "blk.%d.attn_k.weight", il), a, kt, E, HKV * D);
            d_linear(W(f, "blk.%d.attn_v.weight", il), a, vt, E, HKV * D);
            if (arch == MODEL_ARCH_QWEN2) {
                const float *bq = W(f, "blk.%d.attn_q.bias", il),
                            *bk = W(f, "blk.%d.attn_k.bias", il),
                            *bv = W(f, "blk.%d.attn_v.bias", il);
                for (int i = 0; i < H * D; i++)
                    qt[i] += bq[i];
                for (int i = 0; i < HKV * D; i++)
                    kt[i] += bk[i], vt[i] += bv[i];
            }
            for (int h = 0; h < H; h++) {
                if (arch == MODEL_ARCH_QWEN3 || gemma)
                    d_rmsnorm(qt + h * D, W(f, "blk.%d.attn_q_norm.weight", il), D, eps);
                d_rope(qt + h * D, t, D, base, neox);
                for (int i = 0; i < D; i++)
                    qt[h * D + i] /= sqrt((double)D);
            }
            for (int h = 0; h < HKV; h++) {
                if (arch == MODEL_ARCH_QWEN3 || gemma)
                    d_rmsnorm(kt + h * D, W(f, "blk.%d.attn_k_norm.weight", il), D, eps);
                d_rope(kt + h * D, t, D, base, neox);
            }
        }
        for (int t = 0; t < n; t++)
            for (int h = 0; h < H; h++) {
                int g = h / (H / HKV);
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    bool visible = !local || t - j < (int)p->sliding_window;
                    double s = 0;
                    for (int i = 0; i < D; i++)
                        s += q[((size_t)t * H + h) * D + i] * k[((size_t)j * HKV + g) * D + i];
                    sc[j] = visible ? s : -INFINITY;
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int j = 0; j <= t; j++)
                    sum += sc[j] = exp(sc[j] - mx);
                for (int i = 0; i < D; i++) {
                    double o = 0;
                    for (int j = 0; j <= t; j++)
                        o += sc[j] / sum * v[((size_t)j * HKV + g) * D + i];
                    att[((size_t)t * H + h) * D + i] = o;
                }
            }
        for (int t = 0; t < n; t++) {
            double *o = tmp, *xt = x + (size_t)t * E;
            d_linear(W(f, "blk.%d.attn_output.weight", il), att + (size_t)t * H * D, o, H * D, E);
            if (gemma) d_rmsnorm(o, W(f, "blk.%d.post_attention_norm.weight", il), E, eps);
            for (int i = 0; i < E; i++)
                xt[i] += o[i];
            double *m = tmp, *gt = tmp + E, *up = tmp + E + FF;
            memcpy(m, xt, E * sizeof(double));
            d_rmsnorm(m, W(f, "blk.%d.ffn_norm.weight", il), E, eps);
            d_linear(W(f, "blk.%d.ffn_gate.weight", il), m, gt, E, FF);
            d_linear(W(f, "blk.%d.ffn_up.weight", il), m, up, E, FF);
            for (int i = 0; i < FF; i++) {
                double z = gt[i];
                double act = gemma
                                 ? 0.5 * z * (1 + tanh(sqrt(2 / M_PI) * (z + 0.044715 * z * z * z)))
                                 : z / (1 + exp(-z));
                gt[i] = act * up[i];
            }
            d_linear(W(f, "blk.%d.ffn_down.weight", il), gt, m, FF, E);
            if (gemma) d_rmsnorm(m, W(f, "blk.%d.post_ffw_norm.weight", il), E, eps);
            for (int i = 0; i < E; i++)
                xt[i] += m[i];
        }
    }
    for (int t = 0; t < n; t++) {
        double *h = tmp;
        memcpy(h, x + (size_t)t * E, E * sizeof(double));
        d_rmsnorm(h, W(f, "output_norm.weight", 0), E, eps);
        d_linear(out, h, logits + (size_t)t * V, E, V);
    }
    free(x), free(q), free(k), free(v), free(att), free(tmp), free(sc);
}

static void check_naive(model_arch arch, uint32_t n_layer, uint32_t head_dim, uint32_t window) {
    synth_params p;
    synth_params_default(arch, &p);
    p.n_layer = n_layer;
    p.head_dim = head_dim;
    p.sliding_window = window;
    p.seed = 1234 + arch;
    built b;
    build(&p, &b);
    enum { N = 11 };
    int32_t tok[N];
    random_tokens(99 + arch, tok, N, p.n_vocab);
    uint32_t V = p.n_vocab;
    float *ours = malloc(sizeof(float) * N * V);
    double *ref = malloc(sizeof(double) * N * V);
    float *reff = malloc(sizeof(float) * N * V);
    cr_assert_eq(ref_forward(b.model, tok, N, 0, true, ours), VKLLM_OK, "%s", vkllm_last_error());
    naive_forward(b.file, &p, tok, N, ref);
    for (size_t i = 0; i < (size_t)N * V; i++)
        reff[i] = (float)ref[i];
    double err = test_rel_error(ours, reff, (size_t)N * V);
    cr_assert(err <= 1e-5,
              "%s (%u layers, head_dim %u, window %u, seed %llu): relative error "
              "%.3g vs naive double > 1e-5",
              model_arch_name(arch), n_layer, head_dim, window, (unsigned long long)p.seed, err);
    free(ours), free(ref), free(reff);
    unbuild(&b);
}

Test(ref_forward, naive_double_llama) {
    check_naive(MODEL_ARCH_LLAMA, 1, 0, 0);
}
Test(ref_forward, naive_double_llama_2layers) {
    check_naive(MODEL_ARCH_LLAMA, 2, 0, 0);
}
Test(ref_forward, naive_double_qwen2) {
    check_naive(MODEL_ARCH_QWEN2, 2, 0, 0);
}
Test(ref_forward, naive_double_qwen3) {
    check_naive(MODEL_ARCH_QWEN3, 2, 32, 0);
}
/* 6 layers: 0-4 local (window 4 < 11 tokens, base 10000), 5 global (base 1e6). */
Test(ref_forward, naive_double_gemma3) {
    check_naive(MODEL_ARCH_GEMMA3, 6, 24, 4);
}

/* ------------------------------------------------------------------ incremental decode */

static void check_incremental(model_arch arch, synth_quant quant) {
    synth_params p;
    synth_params_default(arch, &p);
    p.quant = quant;
    p.n_layer = arch == MODEL_ARCH_GEMMA3 ? 6 : 2;
    p.sliding_window = arch == MODEL_ARCH_GEMMA3 ? 5 : 0;
    if (quant >= SYNTH_Q4_K) p.n_embd = 256, p.n_ff = 512;
    p.seed = 77 + arch * 16 + quant;
    built b;
    build(&p, &b);
    enum { N = 13 };
    int32_t tok[N];
    random_tokens(p.seed, tok, N, p.n_vocab);
    uint32_t V = p.n_vocab;
    float *all = malloc(sizeof(float) * N * V), *inc = malloc(sizeof(float) * N * V);
    float *chunk = malloc(sizeof(float) * N * V);
    test_poison(inc, (size_t)N * V);
    test_poison(chunk, (size_t)N * V);
    cr_assert_eq(ref_forward(b.model, tok, N, 0, true, all), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(ref_model_n_past(b.model), (uint32_t)N);
    ref_reset(b.model);
    for (uint32_t i = 0; i < N; i++)
        cr_assert_eq(ref_forward(b.model, tok + i, 1, i, false, inc + (size_t)i * V), VKLLM_OK);
    ref_reset(b.model);
    cr_assert_eq(ref_forward(b.model, tok, 5, 0, true, chunk), VKLLM_OK);
    cr_assert_eq(ref_forward(b.model, tok + 5, N - 5, 5, true, chunk + 5 * V), VKLLM_OK);
    const char *what = synth_quant_name(quant);
    double e1 = test_rel_error(inc, all, (size_t)N * V),
           e2 = test_rel_error(chunk, all, (size_t)N * V);
    cr_assert(e1 <= 1e-4, "%s %s seed %llu: token-by-token vs batch rel err %.3g",
              model_arch_name(arch), what, (unsigned long long)p.seed, e1);
    cr_assert(e2 <= 1e-4, "%s %s seed %llu: chunked vs batch rel err %.3g", model_arch_name(arch),
              what, (unsigned long long)p.seed, e2);
    /* Logits must depend on the context: position 12 with a different first token differs. */
    int32_t alt[N];
    memcpy(alt, tok, sizeof alt);
    alt[0] = (tok[0] + 1) % (int32_t)V;
    float *last = malloc(sizeof(float) * V);
    cr_assert_eq(ref_forward(b.model, alt, N, 0, false, last), VKLLM_OK);
    double diff = test_rel_error(last, all + (size_t)(N - 1) * V, V);
    if (arch != MODEL_ARCH_GEMMA3) /* gemma3's window hides token 0 from local layers only */
        cr_assert(diff > 1e-6, "%s: last logits ignore the first token", model_arch_name(arch));
    free(all), free(inc), free(chunk), free(last);
    unbuild(&b);
}

Test(ref_forward, incremental_all_architectures_and_types) {
    const synth_quant quants[] = {SYNTH_F32, SYNTH_F16, SYNTH_Q4_0, SYNTH_Q8_0, SYNTH_Q4_K_M};
    for (int a = 0; a < MODEL_ARCH_COUNT; a++)
        for (size_t q = 0; q < sizeof quants / sizeof quants[0]; q++)
            check_incremental((model_arch)a, quants[q]);
}

/* ------------------------------------------------------------------ rewind, greedy, errors */

Test(ref_forward, rewind_equals_fresh_run) {
    synth_params p;
    synth_params_default(MODEL_ARCH_QWEN3, &p);
    built b;
    build(&p, &b);
    enum { N = 10 };
    int32_t a[N], c[N];
    random_tokens(5, a, N, p.n_vocab);
    random_tokens(6, c, N, p.n_vocab);
    memcpy(c, a, 6 * sizeof(int32_t)); /* same first 6 tokens */
    uint32_t V = p.n_vocab;
    float *x = malloc(sizeof(float) * V), *y = malloc(sizeof(float) * V);
    cr_assert_eq(ref_forward(b.model, a, N, 0, false, x), VKLLM_OK);
    cr_assert_eq(ref_forward(b.model, c + 6, N - 6, 6, false, x), VKLLM_OK, "%s",
                 vkllm_last_error());
    cr_assert_eq(ref_model_n_past(b.model), (uint32_t)N);
    ref_reset(b.model);
    cr_assert_eq(ref_forward(b.model, c, N, 0, false, y), VKLLM_OK);
    cr_assert(test_rel_error(x, y, V) == 0.0, "rewound run differs from a fresh one");
    free(x), free(y);
    unbuild(&b);
}

Test(ref_forward, greedy_matches_manual_loop_and_stops) {
    synth_params p;
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    built b;
    build(&p, &b);
    int32_t prompt[4] = {3, 14, 15, 92}, got[12], manual[12];
    uint32_t n_got;
    cr_assert_eq(ref_generate_greedy(b.model, prompt, 4, 12, NULL, 0, got, &n_got), VKLLM_OK);
    cr_assert_eq(n_got, 12u);
    float *l = malloc(sizeof(float) * p.n_vocab);
    ref_reset(b.model);
    cr_assert_eq(ref_forward(b.model, prompt, 4, 0, false, l), VKLLM_OK);
    for (int i = 0; i < 12; i++) {
        manual[i] = ref_argmax(l, p.n_vocab);
        cr_assert_eq(got[i], manual[i], "greedy token %d", i);
        if (i < 11) cr_assert_eq(ref_forward(b.model, &manual[i], 1, 4 + i, false, l), VKLLM_OK);
    }
    /* Stopping: the stop token is written and ends generation. */
    int32_t stop = got[3];
    int first = 0;
    while (got[first] != stop)
        first++;
    cr_assert_eq(ref_generate_greedy(b.model, prompt, 4, 12, &stop, 1, got, &n_got), VKLLM_OK);
    cr_assert_eq(n_got, (uint32_t)first + 1);
    cr_assert_eq(got[first], stop);
    free(l);
    unbuild(&b);
}

Test(ref_forward, result_independent_of_thread_count) {
    synth_params p;
    synth_params_default(MODEL_ARCH_GEMMA3, &p);
    p.n_embd = 256, p.n_ff = 1024, p.n_vocab = 4096; /* products above the threading cut-off */
    uint64_t size;
    void *image;
    cr_assert_eq(synth_write_memory(&p, &image, &size), VKLLM_OK);
    gguf_file *f;
    cr_assert_eq(gguf_open_memory(image, size, "threads", &f), VKLLM_OK);
    ref_model *one, *three;
    setenv("VKLLM_REF_THREADS", "1", 1);
    cr_assert_eq(ref_model_create(f, &one), VKLLM_OK);
    setenv("VKLLM_REF_THREADS", "3", 1);
    cr_assert_eq(ref_model_create(f, &three), VKLLM_OK);
    unsetenv("VKLLM_REF_THREADS");
    int32_t tok[9];
    random_tokens(3, tok, 9, p.n_vocab);
    float *a = malloc(sizeof(float) * 9 * p.n_vocab), *c = malloc(sizeof(float) * 9 * p.n_vocab);
    cr_assert_eq(ref_forward(one, tok, 9, 0, true, a), VKLLM_OK);
    cr_assert_eq(ref_forward(three, tok, 9, 0, true, c), VKLLM_OK);
    cr_assert(!memcmp(a, c, sizeof(float) * 9 * p.n_vocab), "1 and 3 threads differ");
    free(a), free(c);
    ref_model_destroy(one);
    ref_model_destroy(three);
    gguf_close(f);
    free(image);
}

Test(ref_forward, argument_errors_leave_cache_alone) {
    synth_params p;
    synth_params_default(MODEL_ARCH_QWEN2, &p);
    built b;
    build(&p, &b);
    float *l = malloc(sizeof(float) * p.n_vocab);
    int32_t ok[3] = {1, 2, 3}, bad[2] = {4, (int32_t)p.n_vocab}, neg = -1;
    cr_assert_eq(ref_forward(b.model, ok, 3, 0, false, l), VKLLM_OK);
    cr_assert_eq(ref_forward(b.model, bad, 2, 3, false, l), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "token 1 is 256"), "%s", vkllm_last_error());
    cr_assert_eq(ref_forward(b.model, &neg, 1, 3, false, l), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(ref_forward(b.model, ok, 1, 4, false, l), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "start_pos 4 is past the 3 cached"), "%s",
              vkllm_last_error());
    cr_assert_eq(ref_forward(b.model, ok, 0, 3, false, l), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(ref_model_n_past(b.model), 3u);
    free(l);
    unbuild(&b);
}

Test(ref_forward, argmax_ties_and_nan) {
    float v[5] = {1, 3, NAN, 3, 2};
    cr_assert_eq(ref_argmax(v, 5), 1);
    float w[2] = {NAN, -1};
    cr_assert_eq(ref_argmax(w, 2), 1);
}
