/* api_params.c: request parameters: public defaults, validation with the offending
 * field named, and the prompt turned into token ids on the caller's thread.
 *
 * Everything that can be decided without the engine thread is decided here, so that
 * vkllm_submit reports bad input synchronously: at most one prompt source, sampling
 * ranges, stop strings, token ids inside the vocabulary, and prompts that can never fit
 * (VKLLM_ERR_TOO_LONG: the prompt plus one generated token exceeds max_context, or its
 * blocks exceed the whole KV pool). */
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "exec/stop.h"

#define DEFAULT_MAX_TOKENS 256

void vkllm_request_params_default(vkllm_request_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->add_special = true;
    vkllm_sampling *s = &p->sampling;
    s->temperature = 1.0f;
    s->top_p = 1.0f;
    s->repetition_penalty = 1.0f;
    s->max_tokens = DEFAULT_MAX_TOKENS;
    s->n = 1;
    s->beam_width = 1;
    s->length_penalty = 1.0f;
}

static bool finite_in(float v, float lo, float hi) {
    return v >= lo && v <= hi;
}

vkllm_status api_sampling_convert(const vkllm_sampling *in, sampler_params *out) {
    if (!(in->temperature >= 0.0f) || in->temperature > 1e30f)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling.temperature %g must be finite and >= 0 (0 is greedy)",
                        (double)in->temperature);
    if (!(in->top_p > 0.0f && in->top_p <= 1.0f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling.top_p %g must be in (0, 1]",
                        (double)in->top_p);
    if (!finite_in(in->min_p, 0.0f, 1.0f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling.min_p %g must be in [0, 1]",
                        (double)in->min_p);
    if (!(in->repetition_penalty > 0.0f) || in->repetition_penalty > 1e30f)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling.repetition_penalty %g must be finite and > 0 (1 is off)",
                        (double)in->repetition_penalty);
    if (!finite_in(in->presence_penalty, -2.0f, 2.0f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling.presence_penalty %g must be in [-2, 2]",
                        (double)in->presence_penalty);
    if (!finite_in(in->frequency_penalty, -2.0f, 2.0f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling.frequency_penalty %g must be in [-2, 2]",
                        (double)in->frequency_penalty);
    if (in->max_tokens == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling.max_tokens must be >= 1");
    if (in->n == 0) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling.n must be >= 1");
    if (in->n > 64)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling.n %u must be <= 64", in->n);
    if (in->beam_width > 64)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling.beam_width %u must be <= 64",
                        in->beam_width);
    if (in->beam_width > 1 && !(in->length_penalty > -1e30f && in->length_penalty < 1e30f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling.length_penalty %g must be finite",
                        (double)in->length_penalty);
    if (in->logprobs > SAMPLER_MAX_LOGPROBS)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling.logprobs %u must be <= %d",
                        in->logprobs, SAMPLER_MAX_LOGPROBS);
    if (in->n_stop && !in->stop)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling.stop is NULL with n_stop %u",
                        in->n_stop);
    if (in->n_stop_token_ids && !in->stop_token_ids)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling.stop_token_ids is NULL with n_stop_token_ids %u",
                        in->n_stop_token_ids);

    sampler_params p = sampler_params_default();
    p.temperature = in->temperature;
    p.top_k = in->top_k;
    p.top_p = in->top_p;
    p.min_p = in->min_p;
    p.repetition_penalty = in->repetition_penalty;
    p.presence_penalty = in->presence_penalty;
    p.frequency_penalty = in->frequency_penalty;
    p.has_seed = in->has_seed;
    p.seed = in->seed;
    /* Public logprobs counts the top-N alternatives and 0 means none; the sampler's
     * -1 is none and 0 is "the chosen token only". */
    p.logprobs = in->logprobs ? (int32_t)in->logprobs : -1;
    p.n = in->n;
    p.ignore_eos = in->ignore_eos;
    p.max_tokens = in->max_tokens;
    p.stop_token_ids = in->stop_token_ids;
    p.n_stop_token_ids = in->n_stop_token_ids;
    p.stop_strings = in->stop;
    p.n_stop_strings = in->n_stop;
    vkllm_status s = sampler_params_validate(&p);
    if (s != VKLLM_OK) return s;
    /* Stop strings must be non-empty valid UTF-8: let the matcher say which is not. */
    if (p.n_stop_strings) {
        stop_matcher *m = NULL;
        s = stop_matcher_create(p.stop_strings, p.n_stop_strings, false, &m);
        stop_matcher_free(m);
        if (s != VKLLM_OK) return vkl_fail_wrap(s, "sampling.stop: ");
    }
    *out = p;
    return VKLLM_OK;
}

void api_command_free(api_command *cmd) {
    if (!cmd) return;
    free(cmd->prompt);
    if (cmd->stop_strings)
        for (size_t i = 0; i < cmd->sampling.n_stop_strings; i++)
            free(cmd->stop_strings[i]);
    free(cmd->stop_strings);
    free(cmd->stop_ids);
    free(cmd);
}

/* Gives the command its own copies of the stop strings and ids. */
static vkllm_status copy_stops(api_command *cmd) {
    sampler_params *p = &cmd->sampling;
    if (p->n_stop_token_ids) {
        cmd->stop_ids = malloc(p->n_stop_token_ids * sizeof(int32_t));
        if (!cmd->stop_ids) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "stop token ids");
        memcpy(cmd->stop_ids, p->stop_token_ids, p->n_stop_token_ids * sizeof(int32_t));
    }
    p->stop_token_ids = cmd->stop_ids;
    if (p->n_stop_strings) {
        cmd->stop_strings = calloc(p->n_stop_strings, sizeof(char *));
        if (!cmd->stop_strings) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "stop strings");
        for (size_t i = 0; i < p->n_stop_strings; i++) {
            cmd->stop_strings[i] = strdup(p->stop_strings[i]);
            if (!cmd->stop_strings[i])
                return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "stop strings");
        }
    }
    p->stop_strings = (const char *const *)cmd->stop_strings;
    return VKLLM_OK;
}

static vkllm_status render_messages(vkllm_engine *e, const vkllm_request_params *params,
                                    char **text) {
    chat_message *msgs = calloc(params->n_messages, sizeof *msgs);
    if (!msgs) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "chat messages");
    for (size_t i = 0; i < params->n_messages; i++) {
        if (!params->messages[i].role || !params->messages[i].content) {
            free(msgs);
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "messages[%zu]: %s is NULL", i,
                            params->messages[i].role ? "content" : "role");
        }
        msgs[i].role = params->messages[i].role;
        msgs[i].content = params->messages[i].content;
    }
    vkllm_status s = chat_render(&e->model.chat, msgs, params->n_messages, true, text);
    free(msgs);
    return s;
}

/* The prompt as token ids (malloc'ed into cmd->prompt). */
static vkllm_status prompt_tokens(vkllm_engine *e, const vkllm_request_params *params,
                                  api_command *cmd) {
    bool has_text = params->prompt != NULL;
    bool has_ids = params->prompt_tokens != NULL || params->n_prompt_tokens > 0;
    bool has_messages = params->messages != NULL || params->n_messages > 0;
    int sources = (int)has_text + (int)has_ids + (int)has_messages;
    if (sources != 1)
        return vkl_fail(
            VKLLM_ERR_INVALID_ARGUMENT,
            "request: give exactly one of prompt, prompt_tokens, messages (got %s%s%s%s)",
            sources == 0 ? "none" : "", has_text ? "prompt " : "", has_ids ? "prompt_tokens " : "",
            has_messages ? "messages" : "");
    const tok_tokenizer *tok = e->model.tok;
    if (has_ids) {
        if (!params->prompt_tokens || !params->n_prompt_tokens)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "request: prompt_tokens is %s with n_prompt_tokens %zu",
                            params->prompt_tokens ? "set" : "NULL", params->n_prompt_tokens);
        for (size_t i = 0; i < params->n_prompt_tokens; i++)
            if (params->prompt_tokens[i] < 0 ||
                (uint32_t)params->prompt_tokens[i] >= e->model.cfg.n_vocab)
                return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                                "request: prompt_tokens[%zu] = %d is outside the vocabulary "
                                "[0, %u)",
                                i, params->prompt_tokens[i], e->model.cfg.n_vocab);
        cmd->prompt = malloc(params->n_prompt_tokens * sizeof(int32_t));
        if (!cmd->prompt) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "prompt tokens");
        memcpy(cmd->prompt, params->prompt_tokens, params->n_prompt_tokens * sizeof(int32_t));
        cmd->n_prompt = params->n_prompt_tokens;
        return VKLLM_OK;
    }
    if (has_messages) {
        if (!params->messages || !params->n_messages)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "request: messages is %s with n_messages %zu",
                            params->messages ? "set" : "NULL", params->n_messages);
        char *text = NULL;
        VKL_TRY(render_messages(e, params, &text));
        /* The rendered template writes BOS and turn markers itself. */
        vkllm_status s =
            tok_encode(tok, text, strlen(text), false, true, &cmd->prompt, &cmd->n_prompt);
        free(text);
        return s;
    }
    /* Text prompts: control tokens written in the text become their ids, as in
     * llama.cpp's llama-cli and Hugging Face tokenizers. */
    return tok_encode(tok, params->prompt, strlen(params->prompt), params->add_special, true,
                      &cmd->prompt, &cmd->n_prompt);
}

/* The scheduler's own admission rules (sched_engine_add, kv_manager_can_allocate),
 * applied here so that submit answers synchronously. */
static vkllm_status check_fits(vkllm_engine *e, const api_command *cmd) {
    const sched_config *lim = &e->sched_limits;
    const vkllm_model_info *info = &e->model.info;
    size_t n_prompt = cmd->n_prompt;
    if (n_prompt == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "request: the prompt has no tokens");
    if (cmd->sampling.n > lim->max_running_seqs)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling.n %u exceeds the engine's max_running_seqs %u", cmd->sampling.n,
                        lim->max_running_seqs);
    if (n_prompt > lim->max_context)
        return vkl_fail(VKLLM_ERR_TOO_LONG, "request: prompt of %zu tokens exceeds max_context %u",
                        n_prompt, lim->max_context);
    uint64_t blocks = (n_prompt + info->block_size - 1) / info->block_size;
    uint64_t usable = info->kv_blocks - lim->watermark_blocks;
    if (blocks > usable)
        return vkl_fail(VKLLM_ERR_TOO_LONG,
                        "request: prompt of %zu tokens needs %llu KV blocks of %u tokens; the "
                        "cache has %u (%u kept free as watermark)",
                        n_prompt, (unsigned long long)blocks, info->block_size, info->kv_blocks,
                        lim->watermark_blocks);
    return VKLLM_OK;
}

vkllm_status api_command_prepare(vkllm_engine *e, const vkllm_request_params *params,
                                 api_command *cmd) {
    cmd->kind = API_CMD_ADD;
    VKL_TRY(api_sampling_convert(&params->sampling, &cmd->sampling));
    VKL_TRY(copy_stops(cmd));
    VKL_TRY(prompt_tokens(e, params, cmd));
    cmd->beam_width = params->sampling.beam_width;
    cmd->length_penalty = params->sampling.length_penalty;
    VKL_TRY(check_fits(e, cmd));
    cmd->cache_salt = params->cache_salt;
    return VKLLM_OK;
}
