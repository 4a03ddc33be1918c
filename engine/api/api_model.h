/* api_model.h: everything an engine loads once before its thread starts: the
 * tokenizer, the chat template, the Vulkan context and the model on the device.
 *
 * api_model_load reads the GGUF file (memory-mapped), builds the tokenizer, picks the
 * chat template, creates the gpu_context and uploads the weights (exec_model_create).
 * The GGUF mapping is closed again before it returns: the tokenizer copies what it
 * needs and the weights live on the device, so nothing keeps the file's pages.
 *
 * After a successful load every field is immutable except `gpu` and `exec`, which
 * belong to the engine thread alone (gpu.h: one thread at a time). The tokenizer and
 * the chat template may be used from any thread (tokenizer.h: immutable after load).
 * Module prefix: api_. */
#ifndef VKL_API_MODEL_H
#define VKL_API_MODEL_H

#include "vkllm.h"

#include "exec/runner.h"
#include "gpu/gpu.h"
#include "model/chat.h"
#include "model/model.h"
#include "model/tokenizer.h"

typedef struct api_model {
    model_config cfg;
    tok_tokenizer *tok;
    chat_template chat;
    gpu_context *gpu;
    exec_model *exec;
    vkllm_model_info info;
    uint64_t model_key; /* identity of the model for prefix-cache hashes */
} api_model;

/* Loads `path` with `options` (defaults already filled in by api_options_resolve).
 * On failure nothing stays allocated and the message names the stage and the file. */
vkllm_status api_model_load(const char *path, const vkllm_engine_options *options, api_model *out);
void api_model_unload(api_model *model);

/* Engine options with every 0/NULL field replaced by its default; checks ranges (the
 * message names the field). */
vkllm_status api_options_resolve(const vkllm_engine_options *in, vkllm_engine_options *out);

#endif
