/* cmd_synth.c: `vkllm synth`: writes a synthetic GGUF model with seeded random weights
 * (engine/model/synth.h) for tests and benchmarks. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_common.h"
#include "model/synth.h"

#ifndef VKLLM_DEFAULT_TOKENIZER_DIR
#define VKLLM_DEFAULT_TOKENIZER_DIR "tests/fixtures/tokenizer"
#endif

static void synth_usage(FILE *out) {
    fprintf(out,
            "usage: vkllm synth -o PATH [options]\n"
            "  --arch llama|qwen2|qwen3|gemma3   architecture (default llama)\n"
            "  --preset NAME      llama3-8b, llama3.2-1b, qwen2.5-0.5b, qwen3-0.6b, gemma3-270m,\n"
            "                     tiny-llama, tiny-qwen2, tiny-qwen3, tiny-gemma3\n"
            "  --n-embd N --n-layer N --n-head N --n-head-kv N --head-dim N --n-ff N\n"
            "  --vocab N          vocabulary size (default: the tokenizer's; larger pads with\n"
            "                     <|reserved_N|> tokens)\n"
            "  --ctx N            context_length (default 256)\n"
            "  --type T           F32 F16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K Q4_K_M\n"
            "  --seed N           PRNG seed (default 1); same options + seed = same bytes\n"
            "  --tied / --untied  LM head tied to token_embd (gemma3 is always tied)\n"
            "  --rope-freqs       write a llama3-style rope_freqs.weight (llama)\n"
            "  --window N         gemma3 sliding window (default 16; presets set their own)\n"
            "  --rope-base F      rope.freq_base\n"
            "  --tokenizer PATH   GGUF whose tokenizer.* keys are copied (default\n"
            "                     %s/llama3-bpe-tiny.gguf, spm-tiny.gguf for gemma3,\n"
            "                     also looked for in <dir of vkllm>/../%s);\n"
            "                     'none' writes no tokenizer (then --vocab is required)\n",
            VKLLM_DEFAULT_TOKENIZER_DIR, VKLLM_DEFAULT_TOKENIZER_DIR);
}

/* The default tokenizer `file`: VKLLM_DEFAULT_TOKENIZER_DIR relative to the current directory
 * (the repository root), then relative to the executable's parent (a build tree inside the
 * repository). Prints an error naming both places and --tokenizer when neither exists. */
static bool find_default_tokenizer(const char *file, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", VKLLM_DEFAULT_TOKENIZER_DIR, file);
    if (access(path, R_OK) == 0) return true;
    char exe[PATH_MAX];
    char beside[PATH_MAX + 128] = "";
    if (cli_exe_dir(exe, sizeof exe)) {
        snprintf(beside, sizeof beside, "%s/../%s/%s", exe, VKLLM_DEFAULT_TOKENIZER_DIR, file);
        if (access(beside, R_OK) == 0) {
            snprintf(path, cap, "%s", beside);
            return true;
        }
    }
    fprintf(stderr,
            "vkllm synth: the default tokenizer %s was not found.\n"
            "  looked for: ./%s/%s%s%s\n"
            "  pass --tokenizer PATH.gguf (a GGUF with tokenizer.* keys), or --tokenizer none "
            "with --vocab N\n",
            file, VKLLM_DEFAULT_TOKENIZER_DIR, file, beside[0] ? ", " : "", beside);
    return false;
}

static int parse_u32(const char *opt, const char *s, uint32_t *out) {
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v > 0xffffffffu) {
        fprintf(stderr, "vkllm synth: %s needs a non-negative integer, got '%s'\n", opt, s);
        return 0;
    }
    *out = (uint32_t)v;
    return 1;
}

int cmd_synth(int argc, char **argv) {
    synth_params p;
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    const char *out_path = NULL, *tokenizer = NULL, *preset = NULL;
    bool arch_given = false, tied_given = false, tied = false, vocab_given = false;
    model_arch arch = MODEL_ARCH_LLAMA;
    /* The preset and the architecture are applied first, so explicit sizes override them. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[i + 1];
        if (!strcmp(argv[i], "--arch") && i + 1 < argc) {
            if (!model_arch_from_name(argv[i + 1], &arch)) {
                fprintf(stderr, "vkllm synth: unknown architecture '%s'\n", argv[i + 1]);
                return 2;
            }
            arch_given = true;
        }
    }
    synth_params_default(arch, &p);
    if (preset && synth_apply_preset(preset, &p) != VKLLM_OK) {
        fprintf(stderr, "vkllm synth: %s\n", vkllm_last_error());
        return 2;
    }
    if (arch_given && preset && p.arch != arch) {
        fprintf(stderr, "vkllm synth: --arch %s contradicts preset %s\n", model_arch_name(arch),
                preset);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            synth_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--tied") || !strcmp(a, "--untied")) {
            tied_given = true;
            tied = !strcmp(a, "--tied");
            continue;
        }
        if (!strcmp(a, "--rope-freqs")) {
            p.rope_freqs = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "vkllm synth: unknown option or missing value: '%s'\n\n", a);
            synth_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        int ok = 1;
        if (!strcmp(a, "-o"))
            out_path = v;
        else if (!strcmp(a, "--arch") || !strcmp(a, "--preset"))
            continue;
        else if (!strcmp(a, "--n-embd"))
            ok = parse_u32(a, v, &p.n_embd);
        else if (!strcmp(a, "--n-layer"))
            ok = parse_u32(a, v, &p.n_layer);
        else if (!strcmp(a, "--n-head"))
            ok = parse_u32(a, v, &p.n_head);
        else if (!strcmp(a, "--n-head-kv"))
            ok = parse_u32(a, v, &p.n_head_kv);
        else if (!strcmp(a, "--head-dim"))
            ok = parse_u32(a, v, &p.head_dim);
        else if (!strcmp(a, "--n-ff"))
            ok = parse_u32(a, v, &p.n_ff);
        else if (!strcmp(a, "--vocab")) {
            ok = parse_u32(a, v, &p.n_vocab);
            vocab_given = true;
        } else if (!strcmp(a, "--ctx"))
            ok = parse_u32(a, v, &p.n_ctx);
        else if (!strcmp(a, "--window"))
            ok = parse_u32(a, v, &p.sliding_window);
        else if (!strcmp(a, "--tokenizer"))
            tokenizer = v;
        else if (!strcmp(a, "--rope-base"))
            p.rope_freq_base = strtof(v, NULL);
        else if (!strcmp(a, "--seed")) {
            char *end;
            p.seed = strtoull(v, &end, 10);
            ok = *v && !*end;
            if (!ok) fprintf(stderr, "vkllm synth: --seed needs an integer, got '%s'\n", v);
        } else if (!strcmp(a, "--type")) {
            ok = synth_quant_from_name(v, &p.quant);
            if (!ok) fprintf(stderr, "vkllm synth: unknown type '%s'\n", v);
        } else {
            fprintf(stderr, "vkllm synth: unknown option '%s'\n\n", a);
            synth_usage(stderr);
            return 2;
        }
        if (!ok) return 2;
    }
    if (!out_path) {
        fprintf(stderr, "vkllm synth: -o PATH is required\n\n");
        synth_usage(stderr);
        return 2;
    }
    if (tied_given) p.tied_output = tied;
    char default_tok[PATH_MAX + 128];
    if (!tokenizer) {
        const char *file = p.arch == MODEL_ARCH_GEMMA3 ? "spm-tiny.gguf" : "llama3-bpe-tiny.gguf";
        if (!find_default_tokenizer(file, default_tok, sizeof default_tok)) return 1;
        tokenizer = default_tok;
    }
    if (strcmp(tokenizer, "none")) p.tokenizer_path = tokenizer;
    /* Presets carry the real vocabulary size; tiny shapes take the tokenizer's. */
    if (p.tokenizer_path && !preset && !vocab_given) p.n_vocab = 0;
    vkllm_status st = synth_write(&p, out_path);
    if (st != VKLLM_OK) {
        fprintf(stderr, "vkllm synth: %s\n", vkllm_last_error());
        return 1;
    }
    printf("wrote %s: %s %s, n_embd %u, %u layers, %u/%u heads, n_ff %u, seed %llu\n", out_path,
           model_arch_name(p.arch), synth_quant_name(p.quant), p.n_embd, p.n_layer, p.n_head,
           p.n_head_kv, p.n_ff, (unsigned long long)p.seed);
    return 0;
}
