/* test_exec_forward.c: the Vulkan forward pass (engine/exec/runner.c) against the CPU
 * reference (engine/ref/) on synthetic models of every architecture.
 *
 * For each model: prompts of 1, 17 and 300 tokens (whole, and in prefill chunks),
 * then 64 greedy decode steps; the logits of every step must match the reference
 * within LOGIT_REL_BOUND and the greedy tokens must be identical. K/V live in a paged
 * cache whose block table is a random permutation of the pool, so blocks are scattered
 * and out of order; contexts end mid-block. A mixed step (decode tokens of some
 * sequences with a prefill chunk of another) must give each sequence the logits it
 * gets alone.
 * Weight fusion (runner.c): the default runs stack wq|wk|wv and gate|up into one product
 * each; the `unfused` cases force the separate products (each writing its columns of
 * the fused activation) and Q4_K_M has layers where attn_v's type differs from wq/wk,
 * so one model runs both paths. */
// links: exec ref model gpu common
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "exec/runner.h"
#include "model/synth.h"
#include "ref/ref_forward.h"
#include "common/test_gpu.h"
#include "common/test_util.h"

/* fp16 K/V in the cache (the reference keeps f32) bounds the agreement. */
#define LOGIT_REL_BOUND 5e-3
/* matvec_dp4a (int8 activations, per block of 32) adds ~4e-3 per product. */
#define DP4A_LOGIT_REL_BOUND 3e-2

/* The exact-agreement tests run the f32-activation matvec even where the engine would
 * pick matvec_dp4a (devices with accelerated int8 dot products); an explicit
 * VKLLM_MATVEC in the environment still wins. `int8_activations` covers dp4a. */
static void exact_matvec(void) {
    setenv("VKLLM_MATVEC", "fast", 0);
}

TestSuite(exec_forward, .init = exact_matvec, .fini = test_gpu_check_validation, .timeout = 600);

/* check_sequence's bound, and whether greedy tokens must equal the reference's (each
 * Test runs in its own process, so a test may change them). */
static double logit_bound = LOGIT_REL_BOUND;
static bool greedy_must_match = true;

typedef struct fixture {
    void *file_data;
    gguf_file *gguf;
    model_config cfg;
    model_weights weights;
    ref_model *ref;
    exec_model *gpu;
    uint32_t block_size, num_blocks;
} fixture;

/* exec_options.no_fusion and partition_size of the next fixture_open (each Test runs in
 * its own process). */
static uint32_t fixture_no_fusion = 0;
static uint32_t fixture_partition = 0;
static int32_t fixture_flush_layers = 0; /* exec_options.flush_layers */
static uint32_t fixture_n_layer = 0;     /* 0: the synthetic model's default */

static void fixture_open_ex(fixture *f, model_arch arch, synth_quant quant, uint32_t block_size,
                            uint32_t max_tokens, bool no_weight_fusion) {
    memset(f, 0, sizeof *f);
    synth_params p;
    synth_params_default(arch, &p);
    p.quant = quant;
    p.n_ctx = 1024;
    p.seed = 7 + (uint64_t)arch;
    if (fixture_n_layer) p.n_layer = fixture_n_layer;
    uint64_t size;
    cr_assert(synth_write_memory(&p, &f->file_data, &size) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(gguf_open_memory(f->file_data, size, "synthetic", &f->gguf) == VKLLM_OK, "%s",
              vkllm_last_error());
    cr_assert(model_load(f->gguf, &f->cfg, &f->weights) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(ref_model_create(f->gguf, &f->ref) == VKLLM_OK, "%s", vkllm_last_error());
    f->block_size = block_size;
    f->num_blocks = 64;
    exec_options o = {.block_size = block_size,
                      .num_blocks = f->num_blocks,
                      .max_tokens = max_tokens,
                      .max_seqs = 8,
                      .max_context = 512,
                      .no_weight_fusion = no_weight_fusion,
                      .no_fusion = fixture_no_fusion,
                      .partition_size = fixture_partition,
                      .flush_layers = fixture_flush_layers};
    cr_assert(exec_model_create(test_gpu(), f->gguf, &f->cfg, &f->weights, &o, &f->gpu) == VKLLM_OK,
              "%s", vkllm_last_error());
}

static void fixture_open(fixture *f, model_arch arch, synth_quant quant, uint32_t block_size,
                         uint32_t max_tokens) {
    fixture_open_ex(f, arch, quant, block_size, max_tokens, false);
}

static void fixture_close(fixture *f) {
    exec_model_destroy(f->gpu);
    ref_model_destroy(f->ref);
    model_weights_free(&f->weights);
    gguf_close(f->gguf);
    free(f->file_data);
}

/* One sequence's view of the paged cache. */
typedef struct seq {
    int32_t table[64];
    uint32_t n_blocks;
    uint32_t len; /* tokens already in the cache */
} seq;

/* Gives `s` blocks[first .. first+count) of a shuffled pool. */
static void seq_init(seq *s, const int32_t *pool, uint32_t first, uint32_t count) {
    memset(s, 0, sizeof *s);
    memcpy(s->table, pool + first, count * sizeof(int32_t));
    s->n_blocks = count;
}

static void shuffled_pool(int32_t *pool, uint32_t n, uint64_t seed) {
    test_rng rng = test_rng_seeded(seed);
    for (uint32_t i = 0; i < n; i++)
        pool[i] = (int32_t)i;
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = test_rng_below(&rng, i + 1);
        int32_t t = pool[i];
        pool[i] = pool[j];
        pool[j] = t;
    }
}

/* Fills the plan rows of `n` new tokens of `s` starting at token index `first`. */
static exec_seq_plan plan_seq(const fixture *f, seq *s, const int32_t *new_tokens, uint32_t n,
                              uint32_t first, int32_t *tokens, int32_t *positions, int32_t *slots) {
    for (uint32_t i = 0; i < n; i++) {
        uint32_t pos = s->len + i;
        tokens[first + i] = new_tokens[i];
        positions[first + i] = (int32_t)pos;
        slots[first + i] =
            s->table[pos / f->block_size] * (int32_t)f->block_size + (int32_t)(pos % f->block_size);
    }
    s->len += n;
    return (exec_seq_plan){.first_token = first,
                           .n_new = n,
                           .context_len = s->len,
                           .block_table = s->table,
                           .n_blocks = s->n_blocks,
                           .need_logits = true};
}

/* Runs `n` tokens of one sequence as one step; logits of its last token. */
static void gpu_step_one(fixture *f, seq *s, const int32_t *new_tokens, uint32_t n, float *logits,
                         int32_t *argmax) {
    int32_t *tokens = malloc(n * 4), *positions = malloc(n * 4), *slots = malloc(n * 4);
    exec_seq_plan sp = plan_seq(f, s, new_tokens, n, 0, tokens, positions, slots);
    exec_step_plan plan = {.n_tokens = n,
                           .tokens = tokens,
                           .positions = positions,
                           .slots = slots,
                           .n_seqs = 1,
                           .seqs = &sp};
    vkllm_status st = exec_step(f->gpu, &plan, logits, argmax);
    cr_assert(st == VKLLM_OK, "exec_step: %s", vkllm_last_error());
    free(tokens);
    free(positions);
    free(slots);
}

static void random_prompt(int32_t *tokens, uint32_t n, uint32_t vocab, uint64_t seed) {
    test_rng rng = test_rng_seeded(seed);
    for (uint32_t i = 0; i < n; i++)
        tokens[i] = (int32_t)test_rng_below(&rng, vocab);
}

/* Prompt of n_prompt tokens in chunks of `chunk`, then n_decode greedy steps; every
 * step's logits compared with the reference. */
static void check_sequence(fixture *f, uint32_t n_prompt, uint32_t chunk, uint32_t n_decode,
                           uint64_t seed) {
    uint32_t V = f->cfg.n_vocab;
    int32_t *prompt = malloc(n_prompt * 4);
    random_prompt(prompt, n_prompt, V, seed);
    float *ref_logits = malloc(V * 4), *gpu_logits = malloc(V * 4);
    int32_t pool[64];
    shuffled_pool(pool, f->num_blocks, seed);
    seq s;
    seq_init(&s, pool, 0, f->num_blocks);

    ref_reset(f->ref);
    cr_assert(ref_forward(f->ref, prompt, n_prompt, 0, false, ref_logits) == VKLLM_OK, "%s",
              vkllm_last_error());
    for (uint32_t done = 0; done < n_prompt; done += chunk) {
        uint32_t n = n_prompt - done < chunk ? n_prompt - done : chunk;
        test_poison(gpu_logits, V);
        int32_t argmax = -1;
        gpu_step_one(f, &s, prompt + done, n, gpu_logits, &argmax);
        if (done + n == n_prompt) {
            double err = test_rel_error(gpu_logits, ref_logits, V);
            cr_assert(err <= logit_bound,
                      "%s prompt %u (chunks of %u): logits rel error %.3g > %.3g",
                      model_arch_name(f->cfg.arch), n_prompt, chunk, err, logit_bound);
            cr_assert_eq(argmax, ref_argmax(gpu_logits, V), "GPU argmax disagrees with its logits");
        }
    }
    int32_t next = ref_argmax(ref_logits, V);
    for (uint32_t step = 0; step < n_decode; step++) {
        if (greedy_must_match)
            cr_assert_eq(ref_argmax(gpu_logits, V), next,
                         "%s prompt %u: greedy token differs at decode step %u",
                         model_arch_name(f->cfg.arch), n_prompt, step);
        cr_assert(ref_forward(f->ref, &next, 1, n_prompt + step, false, ref_logits) == VKLLM_OK,
                  "%s", vkllm_last_error());
        test_poison(gpu_logits, V);
        gpu_step_one(f, &s, &next, 1, gpu_logits, NULL);
        double err = test_rel_error(gpu_logits, ref_logits, V);
        cr_assert(err <= logit_bound, "%s prompt %u: decode step %u logits rel error %.3g > %.3g",
                  model_arch_name(f->cfg.arch), n_prompt, step, err, logit_bound);
        next = ref_argmax(ref_logits, V);
    }
    free(prompt);
    free(ref_logits);
    free(gpu_logits);
}

static void check_arch_ex(model_arch arch, synth_quant quant, uint32_t block_size, bool unfused) {
    fixture f;
    fixture_open_ex(&f, arch, quant, block_size, 512, unfused);
    check_sequence(&f, 1, 512, 8, 11);
    check_sequence(&f, 17, 512, 64, 12);
    check_sequence(&f, 300, 512, 8, 13);
    check_sequence(&f, 300, 128, 4, 14); /* chunked prefill over earlier paged chunks */
    fixture_close(&f);
}

static void check_arch(model_arch arch, synth_quant quant, uint32_t block_size) {
    check_arch_ex(arch, quant, block_size, false);
}

Test(exec_forward, llama) {
    check_arch(MODEL_ARCH_LLAMA, SYNTH_F32, 16);
}
Test(exec_forward, qwen2) {
    check_arch(MODEL_ARCH_QWEN2, SYNTH_Q8_0, 16);
}
Test(exec_forward, qwen3) {
    check_arch(MODEL_ARCH_QWEN3, SYNTH_F16, 8);
}
Test(exec_forward, gemma3) {
    check_arch(MODEL_ARCH_GEMMA3, SYNTH_Q4_0, 32);
}

/* int8 activations (matvec_dp4a, forced; lavapipe runs it without acceleration): the
 * decode products of the supported types quantize X, so logits agree within a looser
 * bound and near-tied greedy tokens may differ (the reference's tokens are fed on). */
Test(exec_forward, int8_activations) {
    setenv("VKLLM_MATVEC", "dp4a", 1);
    logit_bound = DP4A_LOGIT_REL_BOUND;
    greedy_must_match = false;
    check_arch(MODEL_ARCH_GEMMA3, SYNTH_Q4_0, 32);
    check_arch(MODEL_ARCH_LLAMA, SYNTH_Q4_K_M, 16);
    check_arch(MODEL_ARCH_QWEN2, SYNTH_Q8_0, 16);
}

/* The same with every fusion on, including the GLU prologue that is off by default
 * (EXEC_FUSE_DEFAULT_OFF): SiLU (llama) and GELU (gemma3) through the down product. */
Test(exec_forward, int8_activations_every_fusion) {
    setenv("VKLLM_MATVEC", "dp4a", 1);
    setenv("VKLLM_FUSE", "all", 1);
    logit_bound = DP4A_LOGIT_REL_BOUND;
    greedy_must_match = false;
    check_arch(MODEL_ARCH_GEMMA3, SYNTH_Q4_0, 32);
    check_arch(MODEL_ARCH_LLAMA, SYNTH_Q4_K_M, 16);
}

/* Separate weight products (the path taken when the parts' types differ). */
Test(exec_forward, llama_unfused) {
    check_arch_ex(MODEL_ARCH_LLAMA, SYNTH_F32, 16, true);
}
Test(exec_forward, qwen2_unfused) { /* Q/K/V biases */
    check_arch_ex(MODEL_ARCH_QWEN2, SYNTH_F16, 16, true);
}
Test(exec_forward, qwen3_unfused) { /* Q/K norms */
    check_arch_ex(MODEL_ARCH_QWEN3, SYNTH_Q4_0, 8, true);
}
Test(exec_forward, gemma3_unfused) {
    check_arch_ex(MODEL_ARCH_GEMMA3, SYNTH_F32, 16, true);
}

/* Q4_K_M on this shape: attn_v is Q8_0 (Q6_K's shape fallback) in layer 1 and Q5_0 like
 * wq/wk in layer 0, so layer 0 runs the stacked QKV product and layer 1 the separate
 * ones. The test checks that premise through synth_tensor_type. */
Test(exec_forward, q4_k_m_mixed_types) {
    synth_params p;
    synth_params_default(MODEL_ARCH_QWEN2, &p);
    p.quant = SYNTH_Q4_K_M;
    cr_assert_eq(synth_tensor_type(&p, "attn_q.weight", 0, p.n_embd),
                 synth_tensor_type(&p, "attn_v.weight", 0, p.n_embd), "layer 0 should fuse");
    cr_assert_neq(synth_tensor_type(&p, "attn_q.weight", 1, p.n_embd),
                  synth_tensor_type(&p, "attn_v.weight", 1, p.n_embd), "layer 1 should not fuse");
    check_arch(MODEL_ARCH_QWEN2, SYNTH_Q4_K_M, 16);
    check_arch(MODEL_ARCH_LLAMA, SYNTH_Q4_K_M, 16);
}

/* Dispatches (counted through per-dispatch profiling timestamps) and barriers of one
 * decode step of the 2-layer synthetic llama, printed for docs/notes-fusion.md:
 *   - stacked vs separate weight products: the same barriers (disjoint output ranges);
 *   - each dispatch fusion (runner.h, EXEC_FUSE_*) removes what it claims per layer:
 *     RoPE + KV write one dispatch and one barrier; the decode merge one more when the
 *     context spans several partitions (prompt 100, partitions of 32); the RMSNorm
 *     prologues of matvec_dp4a (VKLLM_MATVEC=dp4a) two more, the GLU prologue of the down
 *     product one more (int8 path: 11 -> 6 dispatches and barriers per layer), and the
 *     output norm folds into the LM head (one per step). */
typedef struct step_counts {
    uint32_t barriers, dispatches;
} step_counts;

static step_counts decode_counts(bool separate_products, uint32_t no_fusion, uint32_t prompt_len,
                                 uint32_t partition) {
    fixture_no_fusion = no_fusion;
    fixture_partition = partition;
    fixture f;
    fixture_open_ex(&f, MODEL_ARCH_LLAMA, SYNTH_Q4_0, 16, 64, separate_products);
    int32_t pool[64];
    shuffled_pool(pool, f.num_blocks, 5);
    seq s;
    seq_init(&s, pool, 0, 16);
    int32_t prompt[128];
    random_prompt(prompt, prompt_len, f.cfg.n_vocab, 21);
    float *logits = malloc(f.cfg.n_vocab * 4);
    for (uint32_t done = 0; done < prompt_len; done += 64)
        gpu_step_one(&f, &s, prompt + done, prompt_len - done < 64 ? prompt_len - done : 64, logits,
                     NULL);
    step_counts c = {0};
    gpu_step_one(&f, &s, prompt, 1, logits, NULL);
    c.barriers = exec_last_step_barriers(f.gpu);
    gpu_set_profiling(test_gpu(), true);
    gpu_step_one(&f, &s, prompt, 1, logits, NULL);
    gpu_set_profiling(test_gpu(), false);
    const char **labels;
    const double *ms;
    uint32_t n = gpu_last_timestamps(test_gpu(), &labels, &ms);
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(labels[i], "step begin") && strcmp(labels[i], "step end") && labels[i][0] != '(')
            c.dispatches++;
    cr_log_info("decode step, %u layers, context %u, partitions of %u, %s products, no_fusion "
                "0x%x, VKLLM_MATVEC=%s: %u dispatches, %u barriers",
                f.cfg.n_layer, prompt_len + 2, partition ? partition : 512,
                separate_products ? "separate" : "stacked", no_fusion, getenv("VKLLM_MATVEC"),
                c.dispatches, c.barriers);
    free(logits);
    fixture_close(&f);
    return c;
}

Test(exec_forward, decode_barriers) {
    step_counts stacked = decode_counts(false, 0, 5, 0), separate = decode_counts(true, 0, 5, 0);
    cr_assert(stacked.barriers > 0 && stacked.dispatches > 0);
    cr_assert_eq(stacked.barriers, separate.barriers,
                 "separate products of one token write disjoint "
                 "ranges and should share the barrier");
    const uint32_t layers = 2;
    step_counts off = decode_counts(false, EXEC_FUSE_ALL, 5, 0);
    cr_assert_eq(off.dispatches - stacked.dispatches, layers, "RoPE + KV write: 1 per layer");
    cr_assert_eq(off.barriers - stacked.barriers, layers, "RoPE + KV write: 1 barrier per layer");
    /* several partitions: the merge (attn_reduce) too */
    step_counts long_on = decode_counts(false, 0, 100, 32);
    step_counts long_off = decode_counts(false, EXEC_FUSE_ALL, 100, 32);
    cr_assert_eq(long_off.dispatches - long_on.dispatches, 2 * layers);
    cr_assert_eq(long_off.barriers - long_on.barriers, 2 * layers);
    /* int8 activations: the two RMSNorms fold into the QKV and gate|up products, the GLU
     * into the down product */
    setenv("VKLLM_MATVEC", "dp4a", 1);
    setenv("VKLLM_FUSE", "all", 1); /* the GLU prologue is off unless asked for */
    step_counts dp_on = decode_counts(false, 0, 100, 32);
    step_counts dp_off = decode_counts(false, EXEC_FUSE_ALL, 100, 32);
    step_counts dp_glu_off = decode_counts(false, EXEC_FUSE_GLU_MATVEC, 100, 32);
    unsetenv("VKLLM_FUSE");
    step_counts dp_default = decode_counts(false, 0, 100, 32);
    setenv("VKLLM_MATVEC", "fast", 1);
    cr_assert_eq(dp_default.dispatches, dp_glu_off.dispatches, "GLU prologue off by default");
    /* + 1: the output norm folds into the LM head the same way */
    cr_assert_eq(dp_off.dispatches - dp_on.dispatches, 5 * layers + 1);
    cr_assert_eq(dp_off.barriers - dp_on.barriers, 5 * layers + 1);
    cr_assert_eq(dp_glu_off.dispatches - dp_on.dispatches, layers, "GLU prologue: 1 per layer");
    cr_assert_eq(dp_glu_off.barriers - dp_on.barriers, layers, "GLU prologue: 1 barrier per layer");
    /* whole step: embedding and the LM head (its norm folded) are 2 dispatches and 3
     * barriers */
    cr_assert_eq(dp_on.dispatches, 2 + 6 * layers, "int8 path, every fusion: 6 per layer");
    cr_assert_eq(dp_on.barriers, 3 + 6 * layers, "int8 path, every fusion: 6 barriers per layer");
    cr_assert_eq(dp_default.dispatches, 2 + 7 * layers, "int8 path, defaults: 7 per layer");
}

/* A step submitted in parts of 1, 2, 4, ... layers (at most flush_layers): the parts
 * counted for an 8-layer model, and the logits bit for bit those of one submission. */
Test(exec_forward, step_parts_grow) {
    fixture_n_layer = 8;
    static const int32_t every[] = {-1, 1, 2, 4, 8};
    static const uint32_t parts[] = {0, 7, 4, 3, 3}; /* after layers 0,2,4,6 / 0,2,6 */
    float *first = NULL;
    for (size_t i = 0; i < sizeof every / sizeof every[0]; i++) {
        fixture_flush_layers = every[i];
        fixture f;
        fixture_open(&f, MODEL_ARCH_LLAMA, SYNTH_Q4_0, 16, 64);
        cr_assert_eq(f.cfg.n_layer, 8);
        int32_t pool[64];
        shuffled_pool(pool, f.num_blocks, 5);
        seq s;
        seq_init(&s, pool, 0, 16);
        int32_t prompt[9];
        random_prompt(prompt, 9, f.cfg.n_vocab, 23);
        float *logits = malloc(f.cfg.n_vocab * 4);
        gpu_step_one(&f, &s, prompt, 9, logits, NULL);
        cr_assert_eq(exec_last_step_flushes(f.gpu), parts[i], "flush_layers %d: %u parts", every[i],
                     exec_last_step_flushes(f.gpu));
        if (!first)
            first = logits;
        else {
            cr_assert(!memcmp(first, logits, f.cfg.n_vocab * 4),
                      "flush_layers %d changed the logits", every[i]);
            free(logits);
        }
        fixture_close(&f);
    }
    free(first);
}

/* Every dispatch fusion off (the separate ops of before): logits as the reference's. */
Test(exec_forward, fusions_off) {
    fixture_no_fusion = EXEC_FUSE_ALL;
    check_arch(MODEL_ARCH_LLAMA, SYNTH_F32, 16);
    check_arch(MODEL_ARCH_QWEN3, SYNTH_F16, 8);
}

/* Several partitions per decode (partitions of 32 keys): the fused merge runs in every
 * layer of every decode step past 32 tokens. */
Test(exec_forward, decode_partitions_merged_in_dispatch) {
    fixture_partition = 32;
    check_arch(MODEL_ARCH_QWEN2, SYNTH_Q8_0, 16);
}

/* int8 activations with every fusion off: the separate rms_norm + product path of dp4a. */
Test(exec_forward, int8_activations_fusions_off) {
    setenv("VKLLM_MATVEC", "dp4a", 1);
    logit_bound = DP4A_LOGIT_REL_BOUND;
    greedy_must_match = false;
    fixture_no_fusion = EXEC_FUSE_ALL;
    check_arch(MODEL_ARCH_LLAMA, SYNTH_Q4_K_M, 16);
}

/* Decode tokens of two sequences and a prefill chunk of a third in one step give each
 * the logits the reference computes for it alone. */
Test(exec_forward, mixed_step_matches_each_alone) {
    fixture f;
    fixture_open(&f, MODEL_ARCH_LLAMA, SYNTH_F32, 16, 512);
    uint32_t V = f.cfg.n_vocab;
    int32_t pool[64];
    shuffled_pool(pool, f.num_blocks, 99);
    seq s[3];
    for (int i = 0; i < 3; i++)
        seq_init(&s[i], pool, (uint32_t)i * 20, 20);
    int32_t prompts[3][40];
    uint32_t lens[3] = {23, 9, 37};
    for (int i = 0; i < 3; i++)
        random_prompt(prompts[i], lens[i], V, 100 + (uint64_t)i);
    /* Sequences 0 and 1 are prefilled first (their own steps) except their last token. */
    float *logits = malloc(3 * V * 4), *ref_logits = malloc(V * 4);
    for (int i = 0; i < 2; i++)
        gpu_step_one(&f, &s[i], prompts[i], lens[i] - 1, logits, NULL);
    int32_t tokens[64], positions[64], slots[64];
    exec_seq_plan sp[3];
    sp[0] = plan_seq(&f, &s[0], &prompts[0][lens[0] - 1], 1, 0, tokens, positions, slots);
    sp[1] = plan_seq(&f, &s[1], &prompts[1][lens[1] - 1], 1, 1, tokens, positions, slots);
    sp[2] = plan_seq(&f, &s[2], prompts[2], lens[2], 2, tokens, positions, slots);
    exec_step_plan plan = {.n_tokens = 2 + lens[2],
                           .tokens = tokens,
                           .positions = positions,
                           .slots = slots,
                           .n_seqs = 3,
                           .seqs = sp};
    test_poison(logits, 3 * V);
    cr_assert(exec_step(f.gpu, &plan, logits, NULL) == VKLLM_OK, "%s", vkllm_last_error());
    for (int i = 0; i < 3; i++) {
        ref_reset(f.ref);
        cr_assert(ref_forward(f.ref, prompts[i], lens[i], 0, false, ref_logits) == VKLLM_OK, "%s",
                  vkllm_last_error());
        double err = test_rel_error(logits + (size_t)i * V, ref_logits, V);
        cr_assert(err <= LOGIT_REL_BOUND, "sequence %d: rel error %.3g", i, err);
    }
    free(logits);
    free(ref_logits);
    fixture_close(&f);
}

/* Plans that break the invariants are refused before anything runs. */
Test(exec_forward, bad_plans_are_refused) {
    fixture f;
    fixture_open(&f, MODEL_ARCH_LLAMA, SYNTH_F32, 16, 64);
    int32_t table[4] = {0, 1, 2, 3};
    int32_t tokens[2] = {1, 2}, positions[2] = {0, 1}, slots[2] = {0, 1};
    exec_seq_plan sp = {.first_token = 0,
                        .n_new = 2,
                        .context_len = 2,
                        .block_table = table,
                        .n_blocks = 4,
                        .need_logits = true};
    exec_step_plan plan = {.n_tokens = 2,
                           .tokens = tokens,
                           .positions = positions,
                           .slots = slots,
                           .n_seqs = 1,
                           .seqs = &sp};
    slots[1] = 5;
    cr_assert_eq(exec_step(f.gpu, &plan, NULL, NULL), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "slot") != NULL, "%s", vkllm_last_error());
    slots[1] = 1;
    tokens[1] = (int32_t)f.cfg.n_vocab;
    cr_assert_eq(exec_step(f.gpu, &plan, NULL, NULL), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "vocabulary") != NULL, "%s", vkllm_last_error());
    tokens[1] = 2;
    table[0] = 64; /* outside the 64-block pool */
    cr_assert_eq(exec_step(f.gpu, &plan, NULL, NULL), VKLLM_ERR_INVALID_ARGUMENT);
    table[0] = 0;
    cr_assert_eq(exec_step(f.gpu, &plan, NULL, NULL), VKLLM_OK, "%s", vkllm_last_error());
    fixture_close(&f);
}
