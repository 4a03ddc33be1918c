/* synth.h: synthetic GGUF models with seeded random weights, for tests and benchmarks.
 *
 * synth_write() produces a file that model_load() accepts for any of the supported
 * architectures at any shape, with the metadata keys and tensor names of real
 * conversions (docs gguf-and-models.md §4-§5). Weights are random but numerically sane:
 * a weight matrix with fan-in n has values of standard deviation ~1/sqrt(n), norm
 * weights lie in [0.9, 1.1], biases in [-0.1, 0.1], so activations stay bounded through
 * many layers. Quantized tensors are random *legal blocks* (random quants plus fp16
 * scales of a magnitude giving the same standard deviation; K-quant 6-bit scales/mins
 * random with the mins matching the scales so each sub-block is centred on zero).
 *
 * Determinism: every tensor draws from its own PRNG seeded by (seed, tensor name), so
 * the same params give byte-identical files. Tensors are produced one at a time while
 * the file is written (gguf_writer fill callbacks): an 8B model never sits in memory,
 * only its largest tensor does.
 *
 * Tokenizer: all `tokenizer.*` keys are copied from a tokenizer GGUF (e.g.
 * tests/fixtures/tokenizer/llama3-bpe-tiny.gguf). When n_vocab exceeds its vocabulary,
 * filler control tokens "<|reserved_N|>" are appended (scores 0, type 3) so the
 * vocabulary matches token_embd; a smaller n_vocab is refused. For qwen2/qwen3 the
 * pre-tokenizer is written as "qwen2". Without a tokenizer file no tokenizer keys are
 * written (the model still loads; n_vocab must then be given).
 *
 * Module prefix: synth_. */
#ifndef VKL_SYNTH_H
#define VKL_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "model/gguf.h"
#include "model/model.h"

/* How weight matrices are stored. Norms, biases and rope_freqs are always F32. */
typedef enum synth_quant {
    SYNTH_F32,
    SYNTH_F16,
    SYNTH_Q4_0,
    SYNTH_Q4_1,
    SYNTH_Q5_0,
    SYNTH_Q5_1,
    SYNTH_Q8_0,
    SYNTH_Q4_K,
    SYNTH_Q5_K,
    SYNTH_Q6_K,
    SYNTH_Q4_K_M, /* llama.cpp's Q4_K_M mixture (docs §3.5), with its shape fallbacks */
    SYNTH_QUANT_COUNT,
} synth_quant;

typedef struct synth_params {
    model_arch arch;
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim; /* 0: n_embd / n_head */
    uint32_t n_ff;
    uint32_t n_vocab; /* 0: the tokenizer's vocabulary size */
    uint32_t n_ctx;   /* context_length key */
    synth_quant quant;
    uint64_t seed;
    bool tied_output;           /* no output.weight (gemma3 always ties) */
    bool rope_freqs;            /* write a llama3-style rope_freqs.weight (llama only) */
    uint32_t sliding_window;    /* gemma3 only; 0 = none */
    float rope_freq_base;       /* 0: architecture default (llama 500000, qwen 1e6, gemma3 1e6) */
    float rms_eps;              /* 0: architecture default (llama 1e-5, others 1e-6) */
    const char *tokenizer_path; /* GGUF to copy tokenizer.* keys from; NULL: none */
    const char *name;           /* general.name; NULL: "synthetic <arch>" */
} synth_params;

/* Small defaults for `arch` (n_embd 64, 2 layers, 4 heads, 2 kv heads, n_ff 128, ctx 256,
 * F32, seed 1, gemma3 window 16, tied for gemma3) with no tokenizer and n_vocab 256. */
void synth_params_default(model_arch arch, synth_params *p);

/* Named shapes of real models: "llama3-8b", "llama3.2-1b", "qwen2.5-0.5b", "qwen3-0.6b",
 * "gemma3-270m", "tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-gemma3".
 * Overwrites arch and sizes; leaves quant, seed and tokenizer_path alone. */
vkllm_status synth_apply_preset(const char *name, synth_params *p);

/* Parses "F32", "Q4_K_M", ... (case-insensitive). */
bool synth_quant_from_name(const char *name, synth_quant *out);
const char *synth_quant_name(synth_quant q);

/* The type a matrix gets under `q` (Q4_K_M rules and shape fallbacks included):
 * `kind` is the tensor name without "blk.N." ("attn_v.weight", "output.weight", ...),
 * il its layer (ignored for non-layer tensors), ne0 its row length. */
ggml_type synth_tensor_type(const synth_params *p, const char *kind, uint32_t il, uint64_t ne0);

/* Writes the model to `path`, streaming tensor by tensor. */
vkllm_status synth_write(const synth_params *p, const char *path);
/* The same file in memory (malloc'd; caller frees). For small models. */
vkllm_status synth_write_memory(const synth_params *p, void **data, uint64_t *size);

#endif
