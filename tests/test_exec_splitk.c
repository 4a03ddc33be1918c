/* test_exec_splitk.c: the forward pass (engine/exec/runner.c) with the cooperative-matrix
 * products split along K (k_matmul_coopmat.c, "split-K across workgroups"), end to end.
 *
 * VKLLM_MATMUL=emulate makes every product of > 8 tokens run matmul_coopmat.comp's
 * emulated build (lavapipe); VKLLM_MATMUL_SPLITK=2 splits every one of them (the
 * synthetic model's K of 64-128 is below the automatic choice's minimum slice), so the
 * runner's split scratch, the slices, the reduce with bias and the residual
 * accumulation in the reduce (wo and ffn_down: no k_add) all run. A synthetic Llama
 * (Q8_0) takes a prompt of 40 tokens and then a chunk of 24; the last token's logits
 * are compared with the CPU reference (relative L2 <= 5e-3: fp16 matmul operands and
 * fp16 K/V) and with the same model run without split (VKLLM_MATMUL_SPLITK=0: the same
 * fp16 inputs, only f32 summation order differs: <= 1e-4). The split run records two
 * barriers more per layer than the unsplit one (the reduces of the qkv and gate|up
 * products; wo and ffn_down go through the reduce in both). */
// links: exec ref model gpu common
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "exec/runner.h"
#include "model/synth.h"
#include "ref/ref_forward.h"
#include "common/test_gpu.h"
#include "common/test_util.h"

#define REF_BOUND 5e-3
#define SPLIT_VS_WHOLE 1e-4

typedef struct run_result {
    float logits[2][256];
    uint32_t barriers[2];
    uint32_t n_layer;
} run_result;

/* Creates the model under VKLLM_MATMUL_SPLITK = splitk (the runner sizes its scratch at
 * creation), runs 40 then 24 tokens of one sequence, keeps the last token's logits of
 * each step; compares them with the reference. */
static void run_model(const char *splitk, run_result *out) {
    cr_assert(setenv("VKLLM_MATMUL", "emulate", 1) == 0);
    cr_assert(setenv("VKLLM_MATMUL_SPLITK", splitk, 1) == 0);
    synth_params p;
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    p.quant = SYNTH_Q8_0;
    p.n_ctx = 256;
    p.seed = 71;
    void *data;
    uint64_t size;
    gguf_file *gguf;
    model_config cfg;
    model_weights weights;
    ref_model *ref;
    exec_model *gpu;
    cr_assert(synth_write_memory(&p, &data, &size) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(gguf_open_memory(data, size, "synthetic", &gguf) == VKLLM_OK, "%s",
              vkllm_last_error());
    cr_assert(model_load(gguf, &cfg, &weights) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(ref_model_create(gguf, &ref) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(cfg.n_vocab <= 256, "vocabulary %u", cfg.n_vocab);
    exec_options o = {
        .block_size = 16, .num_blocks = 8, .max_tokens = 64, .max_seqs = 4, .max_context = 128};
    cr_assert(exec_model_create(test_gpu(), gguf, &cfg, &weights, &o, &gpu) == VKLLM_OK, "%s",
              vkllm_last_error());
    out->n_layer = cfg.n_layer;

    int32_t table[8] = {5, 2, 7, 0, 3, 6, 1, 4};
    int32_t tokens[64], positions[64], slots[64];
    test_rng rng = test_rng_seeded(4242);
    for (uint32_t i = 0; i < 64; i++)
        tokens[i] = (int32_t)test_rng_below(&rng, cfg.n_vocab);
    float ref_logits[256];
    static const uint32_t chunks[2][2] = {{0, 40}, {40, 24}};
    for (int c = 0; c < 2; c++) {
        uint32_t first = chunks[c][0], n = chunks[c][1];
        for (uint32_t i = 0; i < n; i++) {
            uint32_t pos = first + i;
            positions[i] = (int32_t)pos;
            slots[i] = table[pos / 16] * 16 + (int32_t)(pos % 16);
        }
        exec_seq_plan sp = {.first_token = 0,
                            .n_new = n,
                            .context_len = first + n,
                            .block_table = table,
                            .n_blocks = 8,
                            .need_logits = true};
        exec_step_plan plan = {.n_tokens = n,
                               .tokens = tokens + first,
                               .positions = positions,
                               .slots = slots,
                               .n_seqs = 1,
                               .seqs = &sp};
        test_poison(out->logits[c], cfg.n_vocab);
        cr_assert(exec_step(gpu, &plan, out->logits[c], NULL) == VKLLM_OK, "SPLITK=%s: %s", splitk,
                  vkllm_last_error());
        out->barriers[c] = exec_last_step_barriers(gpu);
        cr_assert(ref_forward(ref, tokens + first, n, first, false, ref_logits) == VKLLM_OK, "%s",
                  vkllm_last_error());
        double err = test_rel_error(out->logits[c], ref_logits, cfg.n_vocab);
        cr_log_info("SPLITK=%s step %d (%u tokens): logits vs reference %.3g, %u barriers", splitk,
                    c, n, err, out->barriers[c]);
        cr_assert(err <= REF_BOUND, "SPLITK=%s step %d: logits rel error %.3g > %.3g", splitk, c,
                  err, REF_BOUND);
    }
    exec_model_destroy(gpu);
    ref_model_destroy(ref);
    model_weights_free(&weights);
    gguf_close(gguf);
    free(data);
}

Test(exec_splitk, emulated_split_products_match_reference_and_unsplit,
     .fini = test_gpu_check_validation, .timeout = 300) {
    if (!gpu_context_features(test_gpu())->fp16_arithmetic)
        cr_skip("device has no shaderFloat16 (the emulated coopmat kernel needs it)");
    static run_result split, whole;
    run_model("2", &split);
    run_model("0", &whole);
    for (int c = 0; c < 2; c++) {
        double diff = test_rel_error(split.logits[c], whole.logits[c], 256);
        cr_assert(diff <= SPLIT_VS_WHOLE, "step %d: split vs unsplit logits differ by %.3g > %.3g",
                  c, diff, SPLIT_VS_WHOLE);
        cr_assert(split.barriers[c] == whole.barriers[c] + 2 * split.n_layer,
                  "step %d: %u barriers split, %u unsplit: expected one more per layer for each "
                  "of the qkv and gate|up reduces",
                  c, split.barriers[c], whole.barriers[c]);
    }
}
