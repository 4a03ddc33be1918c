/* api_model.c: loading a model for an engine (see api_model.h) and resolving engine
 * options to their defaults.
 *
 * Progress: the stages reported to options->on_progress are, in order, "reading"
 * (pages of the file brought into memory, fraction grows with them), "tokenizer",
 * "device" (Vulkan context), "weights" (upload and KV cache allocation) and "ready"
 * (fraction 1). Fractions are of the whole load and never decrease. */
#include "api/api_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"

/* Share of the progress bar each stage ends at. Reading the file dominates a cold
 * load; the upload reads the same pages again from the page cache. */
#define PROGRESS_READ_END 0.70
#define PROGRESS_TOKENIZER_END 0.75
#define PROGRESS_DEVICE_END 0.80

#define DEFAULT_KV_FRACTION 0.9f
#define DEFAULT_BLOCK_SIZE 16
#define DEFAULT_MAX_RUNNING 64
#define DEFAULT_MAX_STEP_TOKENS 512
#define DEFAULT_MAX_WAITING 256
#define MAX_CONTEXT_CAP 8192

void vkllm_engine_options_default(vkllm_engine_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->kv_memory_fraction = DEFAULT_KV_FRACTION;
    o->block_size = DEFAULT_BLOCK_SIZE;
    o->max_running_seqs = DEFAULT_MAX_RUNNING;
    o->max_step_tokens = DEFAULT_MAX_STEP_TOKENS;
    o->max_waiting = DEFAULT_MAX_WAITING;
    o->enable_prefix_caching = true;
}

vkllm_status api_options_resolve(const vkllm_engine_options *in, vkllm_engine_options *out) {
    if (in)
        *out = *in;
    else
        vkllm_engine_options_default(out);
    if (out->kv_memory_fraction == 0.0f) out->kv_memory_fraction = DEFAULT_KV_FRACTION;
    if (!(out->kv_memory_fraction > 0.0f && out->kv_memory_fraction <= 1.0f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "engine options: kv_memory_fraction %g must be in (0, 1]",
                        (double)out->kv_memory_fraction);
    if (out->block_size == 0) out->block_size = DEFAULT_BLOCK_SIZE;
    if (out->block_size > 1024 || (out->block_size & (out->block_size - 1)))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "engine options: block_size %u must be a power of two <= 1024",
                        out->block_size);
    if (out->max_running_seqs == 0) out->max_running_seqs = DEFAULT_MAX_RUNNING;
    if (out->max_step_tokens == 0) out->max_step_tokens = DEFAULT_MAX_STEP_TOKENS;
    if (out->max_step_tokens < out->max_running_seqs)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "engine options: max_step_tokens %u must be >= max_running_seqs %u (every "
                        "running sequence decodes one token per step)",
                        out->max_step_tokens, out->max_running_seqs);
    if (out->max_waiting == 0) out->max_waiting = DEFAULT_MAX_WAITING;
    return VKLLM_OK;
}

static void report(const vkllm_engine_options *o, const char *stage, double fraction) {
    if (o->on_progress) o->on_progress(stage, fraction, o->progress_user);
}

/* Brings the mapping's pages in, reporting progress about every 1% (the first touch
 * of a cold file is where loading spends its time). */
static void read_pages(const gguf_file *file, const vkllm_engine_options *o) {
    const size_t page = 4096;
    const volatile uint8_t *base = file->base;
    uint64_t step = file->size / 100 + 1;
    uint64_t next_report = step;
    uint8_t sink = 0;
    for (uint64_t off = 0; off < file->size; off += page) {
        sink ^= base[off];
        if (off >= next_report) {
            report(o, "reading", PROGRESS_READ_END * (double)off / (double)file->size);
            next_report += step;
        }
    }
    (void)sink;
    report(o, "reading", PROGRESS_READ_END);
}

static void copy_gguf_str(char *dst, size_t cap, gguf_str s) {
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

static void file_base_name(char *dst, size_t cap, const char *path) {
    const char *slash = strrchr(path, '/');
    snprintf(dst, cap, "%s", slash ? slash + 1 : path);
}

/* FNV-1a over what identifies the weights: size, tensor count and the head of the
 * file (header, metadata). Engines never share caches, so this only has to keep two
 * different models apart if they ever did. */
static uint64_t model_identity(const gguf_file *file) {
    uint64_t h = 1469598103934665603ull;
    uint64_t words[2] = {file->size, file->n_tensors};
    const uint8_t *w = (const uint8_t *)words;
    for (size_t i = 0; i < sizeof words; i++)
        h = (h ^ w[i]) * 1099511628211ull;
    uint64_t head = file->size < 4096 ? file->size : 4096;
    for (uint64_t i = 0; i < head; i++)
        h = (h ^ file->base[i]) * 1099511628211ull;
    return h;
}

static void fill_info(api_model *m, const gguf_file *file, const char *path) {
    vkllm_model_info *info = &m->info;
    memset(info, 0, sizeof *info);
    gguf_str name;
    if (gguf_get_str(file, "general.name", &name) == VKLLM_OK && name.len)
        copy_gguf_str(info->name, sizeof info->name, name);
    else
        file_base_name(info->name, sizeof info->name, path);
    vkl_clear_error();
    snprintf(info->architecture, sizeof info->architecture, "%s", model_arch_name(m->cfg.arch));
    snprintf(info->device, sizeof info->device, "%s", gpu_context_features(m->gpu)->name);
    const exec_options *eo = exec_model_options(m->exec);
    info->n_vocab = m->cfg.n_vocab;
    info->n_ctx = eo->max_context;
    info->n_layer = m->cfg.n_layer;
    info->n_embd = m->cfg.n_embd;
    exec_model_memory(m->exec, &info->weight_bytes, &info->kv_bytes, NULL);
    info->kv_blocks = eo->num_blocks;
    info->block_size = eo->block_size;
    snprintf(info->chat_template, sizeof info->chat_template, "%s",
             chat_format_name(m->chat.format));
}

static vkllm_status load_chat_template(api_model *m, const gguf_file *file,
                                       const vkllm_engine_options *o) {
    if (o->chat_template && o->chat_template[0]) {
        vkllm_status s = chat_template_by_name(o->chat_template, &m->chat);
        if (s != VKLLM_OK) return vkl_fail_wrap(s, "engine options: chat_template: ");
        return VKLLM_OK;
    }
    m->chat = chat_template_from_gguf(file, m->tok);
    return VKLLM_OK;
}

vkllm_status api_model_load(const char *path, const vkllm_engine_options *o, api_model *out) {
    memset(out, 0, sizeof *out);
    if (!path || !path[0]) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "model path is empty");
    gguf_file *file = NULL;
    model_weights weights = {0};
    bool weights_bound = false;
    vkllm_status s = gguf_open(path, &file);
    if (s != VKLLM_OK) return s;
    read_pages(file, o);

    s = model_load(file, &out->cfg, &weights);
    if (s != VKLLM_OK) goto fail;
    weights_bound = true;
    s = tok_load(file, &out->tok);
    if (s != VKLLM_OK) {
        vkl_fail_wrap(s, "%s: tokenizer: ", path);
        goto fail;
    }
    if (tok_vocab_size(out->tok) > out->cfg.n_vocab) {
        s = vkl_fail(VKLLM_ERR_FORMAT,
                     "%s: the tokenizer has %zu tokens but token_embd.weight only %u rows", path,
                     tok_vocab_size(out->tok), out->cfg.n_vocab);
        goto fail;
    }
    s = load_chat_template(out, file, o);
    if (s != VKLLM_OK) goto fail;
    report(o, "tokenizer", PROGRESS_TOKENIZER_END);

    gpu_context_options go = {.device = o->device, .validation = o->validation};
    s = gpu_context_create(&go, &out->gpu);
    if (s != VKLLM_OK) goto fail;
    report(o, "device", PROGRESS_DEVICE_END);

    exec_options eo = {.block_size = o->block_size,
                       .num_blocks = o->kv_blocks,
                       .kv_memory_fraction = o->kv_memory_fraction,
                       .max_tokens = o->max_step_tokens,
                       .max_seqs = o->max_running_seqs,
                       .max_context = o->max_context,
                       .num_host_blocks = o->swap_blocks};
    report(o, "weights", PROGRESS_DEVICE_END);
    s = exec_model_create(out->gpu, file, &out->cfg, &weights, &eo, &out->exec);
    if (s != VKLLM_OK) {
        vkl_fail_wrap(s, "%s: loading onto %s: ", path, gpu_context_features(out->gpu)->name);
        goto fail;
    }
    out->model_key = model_identity(file);
    fill_info(out, file, path);
    model_weights_free(&weights);
    gguf_close(file);
    report(o, "ready", 1.0);
    return VKLLM_OK;

fail:
    if (weights_bound) model_weights_free(&weights);
    gguf_close(file);
    api_model_unload(out);
    return s;
}

void api_model_unload(api_model *m) {
    exec_model_destroy(m->exec);
    if (m->gpu) gpu_context_destroy(m->gpu);
    tok_free(m->tok);
    memset(m, 0, sizeof *m);
}
