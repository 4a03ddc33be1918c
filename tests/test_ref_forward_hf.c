/* test_ref_forward_hf.c: the CPU reference forward pass against Hugging Face transformers
 * on synthetic models of all four architectures (F32 and Q4_K_M mixtures).
 *
 * tests/fixtures/model/hf_synth.txt was written by tools/fixtures/compare_transformers.py
 * synth: for each case the `vkllm synth` arguments, then per position of a fixed 12-token
 * input HF's top-1/top-2 ids and HF logits at ~50 ids (the top 4 plus a stride). This
 * test rebuilds the same model in memory with synth (deterministic: same bytes), runs
 * ref_forward over the same tokens and requires
 *   - relative error of our logits at those ids <= 1e-4 per position (both fp32 over the
 *     same dequantized weights; observed ~1e-6),
 *   - our argmax == HF top-1 at every position (or HF's top-2 when HF's own margin is
 *     below 1e-4, a tie in fp32).
 * The tiny gemma3 input (12 tokens) is longer than its sliding window (8), so the window
 * and the local/global rope bases are exercised; llama checks NORM rope against HF's
 * un-permuted rotate_half, qwen2 the biases, qwen3 the q/k norms with head_dim != n_embd/n_head.
 * With VKLLM_REF_DUMP_DIR set, full logits go to <dir>/<case>.f32 for
 * `compare_transformers.py check`. */
// links: ref model common
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/synth.h"
#include "ref/ref_forward.h"

#define FIXTURE VKLLM_SOURCE_DIR "/tests/fixtures/model/hf_synth.txt"
#define TOKENIZER_DIR VKLLM_SOURCE_DIR "/tests/fixtures/tokenizer/"
#define MAX_TOKENS 64

static const int32_t synth_tokens[] = {1, 17, 450, 1999, 3, 1024, 77, 5, 640, 1200, 9, 300};
#define N_TOKENS (sizeof synth_tokens / sizeof synth_tokens[0])

/* Applies `vkllm synth` arguments (the subset the fixture uses) the way cmd_synth does. */
static void params_from_args(char *args, synth_params *p) {
    char *argv[32];
    int argc = 0;
    for (char *t = strtok(args, " \n"); t && argc < 32; t = strtok(NULL, " \n"))
        argv[argc++] = t;
    const char *preset = NULL;
    for (int i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--preset")) preset = argv[i + 1];
    cr_assert(preset, "fixture case without --preset");
    synth_params_default(MODEL_ARCH_LLAMA, p);
    cr_assert_eq(synth_apply_preset(preset, p), VKLLM_OK, "%s", vkllm_last_error());
    synth_params_default(p->arch, p);
    cr_assert_eq(synth_apply_preset(preset, p), VKLLM_OK);
    for (int i = 0; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--seed"))
            p->seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--type"))
            cr_assert(synth_quant_from_name(v, &p->quant), "type %s", v);
        else if (!strcmp(a, "--n-embd"))
            p->n_embd = (uint32_t)atoi(v);
        else if (!strcmp(a, "--n-ff"))
            p->n_ff = (uint32_t)atoi(v);
        else if (!strcmp(a, "--head-dim"))
            p->head_dim = (uint32_t)atoi(v);
        else
            cr_assert(!strcmp(a, "--preset"), "fixture uses unhandled option %s", a);
    }
    p->tokenizer_path = p->arch == MODEL_ARCH_GEMMA3 ? TOKENIZER_DIR "spm-tiny.gguf"
                                                     : TOKENIZER_DIR "llama3-bpe-tiny.gguf";
}

typedef struct case_state {
    char name[64];
    ref_model *model;
    gguf_file *file;
    void *image;
    float *logits; /* N_TOKENS x n_vocab */
    uint32_t n_vocab;
    int positions_checked;
} case_state;

static void case_finish(case_state *c) {
    if (!c->model) return;
    cr_assert_eq(c->positions_checked, (int)N_TOKENS, "case %s: %d positions in the fixture",
                 c->name, c->positions_checked);
    const char *dump = getenv("VKLLM_REF_DUMP_DIR");
    if (dump && *dump) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.f32", dump, c->name);
        FILE *f = fopen(path, "wb");
        cr_assert(f, "cannot write %s", path);
        fwrite(c->logits, sizeof(float), (size_t)N_TOKENS * c->n_vocab, f);
        fclose(f);
    }
    ref_model_destroy(c->model);
    gguf_close(c->file);
    free(c->image);
    free(c->logits);
    memset(c, 0, sizeof *c);
}

static void case_start(case_state *c, char *line) {
    char *name = strtok(line + 2, " ");
    cr_assert(name);
    snprintf(c->name, sizeof c->name, "%s", name);
    char *args = name + strlen(name) + 1;
    synth_params p;
    params_from_args(args, &p);
    uint64_t size;
    cr_assert_eq(synth_write_memory(&p, &c->image, &size), VKLLM_OK, "case %s: %s", c->name,
                 vkllm_last_error());
    cr_assert_eq(gguf_open_memory(c->image, size, c->name, &c->file), VKLLM_OK, "%s",
                 vkllm_last_error());
    cr_assert_eq(ref_model_create(c->file, &c->model), VKLLM_OK, "case %s: %s", c->name,
                 vkllm_last_error());
    c->n_vocab = ref_model_config(c->model)->n_vocab;
    c->logits = malloc(sizeof(float) * N_TOKENS * c->n_vocab);
    cr_assert(c->logits);
    cr_assert_eq(ref_forward(c->model, synth_tokens, N_TOKENS, 0, true, c->logits), VKLLM_OK,
                 "case %s: %s", c->name, vkllm_last_error());
}

/* "L <pos> <top1> <top2> : id=logit ..." */
static void check_position(case_state *c, char *line, double *worst) {
    int pos, top1, top2, used;
    cr_assert_eq(sscanf(line, "L %d %d %d :%n", &pos, &top1, &top2, &used), 3, "bad line %s", line);
    cr_assert(pos >= 0 && pos < (int)N_TOKENS);
    const float *ours = c->logits + (size_t)pos * c->n_vocab;
    double num = 0, den = 0, hf_top1 = NAN, hf_top2 = NAN;
    char *s = line + used;
    int id, n;
    float hf;
    while (sscanf(s, " %d=%f%n", &id, &hf, &n) == 2) {
        cr_assert(id >= 0 && (uint32_t)id < c->n_vocab, "case %s: id %d", c->name, id);
        num += ((double)ours[id] - hf) * ((double)ours[id] - hf);
        den += (double)hf * hf;
        if (id == top1) hf_top1 = hf;
        if (id == top2) hf_top2 = hf;
        s += n;
    }
    double rel = sqrt(num / (den > 0 ? den : 1e-30));
    if (rel > *worst) *worst = rel;
    cr_assert(rel <= 1e-4, "case %s position %d: relative error %.3g vs transformers > 1e-4",
              c->name, pos, rel);
    int32_t mine = ref_argmax(ours, c->n_vocab);
    bool tie = fabs(hf_top1 - hf_top2) < 1e-4;
    cr_assert(mine == top1 || (tie && mine == top2),
              "case %s position %d: our top-1 %d, transformers %d (margin %.3g)", c->name, pos,
              mine, top1, hf_top1 - hf_top2);
    c->positions_checked++;
}

Test(ref_forward_hf, synthetic_models_match_transformers) {
    FILE *f = fopen(FIXTURE, "r");
    cr_assert(f, "missing %s", FIXTURE);
    static char line[1 << 16];
    case_state c = {0};
    int cases = 0;
    double worst = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == 'C') {
            case_finish(&c);
            case_start(&c, line);
            cases++;
        } else if (line[0] == 'L') {
            cr_assert(c.model, "position line before any case");
            check_position(&c, line, &worst);
        }
    }
    case_finish(&c);
    fclose(f);
    cr_assert_eq(cases, 8, "expected 8 cases (4 architectures x F32/Q4_K_M), got %d", cases);
    cr_log_info("8 synthetic models x %zu positions: worst relative error vs transformers %.3g",
                N_TOKENS, worst);
}
