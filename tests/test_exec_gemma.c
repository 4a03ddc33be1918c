/* test_exec_gemma.c: the real default model (Gemma 3 270M, Q4_K_M) on the Vulkan path
 * against the CPU reference: for five fixed prompts, 16 greedy tokens must be
 * identical, and the first step's logits must agree within GEMMA_LOGIT_REL_BOUND.
 * Skipped when models/gemma-3-270m-q4_k_m.gguf is absent (tools/fetch_model.sh). */
// links: exec ref model gpu common
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/test_gpu.h"
#include "common/test_util.h"
#include "exec/runner.h"
#include "model/tokenizer.h"
#include "ref/ref_forward.h"

#define GEMMA_PATH VKLLM_SOURCE_DIR "/models/gemma-3-270m-q4_k_m.gguf"
#define N_GENERATE 16
/* Both paths dequantize the same weights; the GPU keeps K/V in fp16. */
#define GEMMA_LOGIT_REL_BOUND 2e-2

/* Identical greedy text needs the f32-activation matvec: the int8 one (matvec_dp4a,
 * chosen by default where int8 dot products are accelerated) follows the reference for
 * ~15 tokens and then may take a near-tied branch. An explicit VKLLM_MATVEC wins. */
static void exact_matvec(void) {
    setenv("VKLLM_MATVEC", "fast", 0);
}

TestSuite(exec_gemma, .init = exact_matvec, .fini = test_gpu_check_validation, .timeout = 1200);

static const char *prompts[] = {
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Water boils at a temperature of",
};

Test(exec_gemma, greedy_text_matches_cpu_reference) {
    if (access(GEMMA_PATH, R_OK) != 0) cr_skip("%s not present", GEMMA_PATH);
    gguf_file *gguf;
    cr_assert(gguf_open(GEMMA_PATH, &gguf) == VKLLM_OK, "%s", vkllm_last_error());
    model_config cfg;
    model_weights weights;
    cr_assert(model_load(gguf, &cfg, &weights) == VKLLM_OK, "%s", vkllm_last_error());
    tok_tokenizer *tok;
    cr_assert(tok_load(gguf, &tok) == VKLLM_OK, "%s", vkllm_last_error());
    ref_model *ref;
    cr_assert(ref_model_create(gguf, &ref) == VKLLM_OK, "%s", vkllm_last_error());
    const uint32_t block_size = 16, num_blocks = 8;
    exec_options options = {.block_size = block_size,
                            .num_blocks = num_blocks,
                            .max_tokens = 64,
                            .max_seqs = 1,
                            .max_context = block_size * num_blocks};
    exec_model *gpu;
    cr_assert(exec_model_create(test_gpu(), gguf, &cfg, &weights, &options, &gpu) == VKLLM_OK, "%s",
              vkllm_last_error());
    float *logits = malloc((size_t)cfg.n_vocab * 4), *ref_logits = malloc((size_t)cfg.n_vocab * 4);
    /* Blocks in reverse order, so the table is not the identity. */
    int32_t table[8];
    for (uint32_t b = 0; b < num_blocks; b++)
        table[b] = (int32_t)(num_blocks - 1 - b);

    for (size_t p = 0; p < sizeof prompts / sizeof prompts[0]; p++) {
        int32_t *ids;
        size_t n_ids;
        cr_assert(tok_encode(tok, prompts[p], strlen(prompts[p]), true, false, &ids, &n_ids) ==
                  VKLLM_OK);
        int32_t ref_out[N_GENERATE], gpu_out[N_GENERATE];
        uint32_t n_ref = 0;
        ref_reset(ref);
        cr_assert(ref_generate_greedy(ref, ids, (uint32_t)n_ids, N_GENERATE, NULL, 0, ref_out,
                                      &n_ref) == VKLLM_OK,
                  "%s", vkllm_last_error());
        cr_assert_eq(n_ref, N_GENERATE);

        /* GPU: the prompt as one prefill step, then one token per step. */
        int32_t tokens[64], positions[64], slots[64];
        uint32_t len = 0;
        for (uint32_t step = 0; step < N_GENERATE; step++) {
            uint32_t n_new = step == 0 ? (uint32_t)n_ids : 1;
            for (uint32_t i = 0; i < n_new; i++) {
                uint32_t pos = len + i;
                tokens[i] = step == 0 ? ids[i] : gpu_out[step - 1];
                positions[i] = (int32_t)pos;
                slots[i] =
                    table[pos / block_size] * (int32_t)block_size + (int32_t)(pos % block_size);
            }
            len += n_new;
            exec_seq_plan sp = {.first_token = 0,
                                .n_new = n_new,
                                .context_len = len,
                                .block_table = table,
                                .n_blocks = num_blocks,
                                .need_logits = true};
            exec_step_plan plan = {.n_tokens = n_new,
                                   .tokens = tokens,
                                   .positions = positions,
                                   .slots = slots,
                                   .n_seqs = 1,
                                   .seqs = &sp};
            test_poison(logits, cfg.n_vocab);
            cr_assert(exec_step(gpu, &plan, logits, &gpu_out[step]) == VKLLM_OK, "%s",
                      vkllm_last_error());
            if (step == 0) {
                ref_reset(ref);
                cr_assert(ref_forward(ref, ids, (uint32_t)n_ids, 0, false, ref_logits) == VKLLM_OK);
                double err = test_rel_error(logits, ref_logits, cfg.n_vocab);
                cr_log_info("prompt %zu: first-step logits rel error %.3g", p, err);
                cr_assert(err <= GEMMA_LOGIT_REL_BOUND, "prompt %zu: logits rel error %.3g", p,
                          err);
            }
        }
        char *ref_text, *gpu_text;
        size_t ref_len, gpu_len;
        cr_assert(tok_decode(tok, ref_out, N_GENERATE, false, &ref_text, &ref_len) == VKLLM_OK);
        cr_assert(tok_decode(tok, gpu_out, N_GENERATE, false, &gpu_text, &gpu_len) == VKLLM_OK);
        cr_log_info("prompt \"%s\": GPU \"%s\" | CPU \"%s\"", prompts[p], gpu_text, ref_text);
        cr_assert(memcmp(ref_out, gpu_out, sizeof ref_out) == 0,
                  "prompt \"%s\": GPU greedy \"%s\" differs from CPU \"%s\"", prompts[p], gpu_text,
                  ref_text);
        free(ref_text);
        free(gpu_text);
        free(ids);
    }
    free(logits);
    free(ref_logits);
    exec_model_destroy(gpu);
    ref_model_destroy(ref);
    tok_free(tok);
    model_weights_free(&weights);
    gguf_close(gguf);
}
