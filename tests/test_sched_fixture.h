/* test_sched_fixture.h: shared by the tests/test_sched_*.c executables (included by each,
 * static functions only): a tiny synthetic llama on the GPU runner, a sched_engine on
 * top of it, and a recorder of every request's events. */
#ifndef VKL_TEST_SCHED_FIXTURE_H
#define VKL_TEST_SCHED_FIXTURE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/runner.h"
#include "model/synth.h"
#include "sched/sched_engine.h"
#include "common/test_gpu.h"
#include "common/test_util.h"

#define SF_MAX_REQ 64
#define SF_MAX_OUT 128
#define SF_MAX_SAMPLES 4

typedef struct sf_record {
    int32_t tokens[SF_MAX_SAMPLES][SF_MAX_OUT];
    uint32_t n_tokens[SF_MAX_SAMPLES];
    vkllm_finish_reason finish[SF_MAX_SAMPLES];
    bool done; /* request_finished seen */
    uint32_t n_done_events;
    long first_token_step; /* step count when its first token arrived (-1: none) */
    vkllm_status error;
    char error_message[512];
    uint32_t cached_prompt_tokens;
    char text[SF_MAX_SAMPLES][2048];
    size_t text_len[SF_MAX_SAMPLES];
} sf_record;

typedef struct sf {
    void *file_data;
    gguf_file *gguf;
    model_config cfg;
    model_weights weights;
    exec_model *gpu;
    sched_engine *eng;
    sf_record rec[SF_MAX_REQ];
    long steps;
    uint32_t max_seqs_seen, max_step_tokens_seen;
} sf;

static void sf_on_event(const sched_event *ev, void *user) {
    sf *f = user;
    const vkllm_event *e = &ev->event;
    cr_assert(e->request < SF_MAX_REQ, "event for unknown request %llu",
              (unsigned long long)e->request);
    sf_record *r = &f->rec[e->request];
    cr_assert(!r->done, "event for request %llu after request_finished",
              (unsigned long long)e->request);
    cr_assert(e->index < SF_MAX_SAMPLES);
    for (size_t i = 0; i < e->n_tokens; i++) {
        cr_assert(r->n_tokens[e->index] < SF_MAX_OUT);
        r->tokens[e->index][r->n_tokens[e->index]++] = e->tokens[i];
        if (r->first_token_step < 0) r->first_token_step = f->steps;
    }
    cr_assert(r->text_len[e->index] + e->text_len < sizeof r->text[0]);
    memcpy(r->text[e->index] + r->text_len[e->index], e->text, e->text_len);
    r->text_len[e->index] += e->text_len;
    if (e->finish != VKLLM_FINISH_NONE) {
        cr_assert_eq(r->finish[e->index], VKLLM_FINISH_NONE,
                     "request %llu sample %u finished twice", (unsigned long long)e->request,
                     e->index);
        r->finish[e->index] = e->finish;
        r->n_done_events++;
        if (e->finish == VKLLM_FINISH_ERROR) {
            r->error = e->error;
            snprintf(r->error_message, sizeof r->error_message, "%s",
                     e->error_message ? e->error_message : "");
        }
    }
    r->cached_prompt_tokens = ev->cached_prompt_tokens;
    if (ev->request_finished) r->done = true;
}

static tok_tokenizer *sf_tok; /* loaded by sf_open_impl when given a tokenizer */

/* The model and runner; options as given (block size 16 unless set). */
static void sf_open_impl(sf *f, exec_options o, const sched_config *config, const char *tok_path) {
    memset(f, 0, sizeof *f);
    for (int i = 0; i < SF_MAX_REQ; i++)
        f->rec[i].first_token_step = -1;
    synth_params p;
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    p.n_ctx = 1024;
    p.seed = 5;
    p.tokenizer_path = tok_path;
    if (tok_path) p.n_vocab = 0; /* the tokenizer's vocabulary */
    uint64_t size;
    cr_assert(synth_write_memory(&p, &f->file_data, &size) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(gguf_open_memory(f->file_data, size, "synthetic", &f->gguf) == VKLLM_OK, "%s",
              vkllm_last_error());
    cr_assert(model_load(f->gguf, &f->cfg, &f->weights) == VKLLM_OK, "%s", vkllm_last_error());
    if (!o.block_size) o.block_size = 16;
    cr_assert(exec_model_create(test_gpu(), f->gguf, &f->cfg, &f->weights, &o, &f->gpu) == VKLLM_OK,
              "%s", vkllm_last_error());
    sched_config c;
    if (config)
        c = *config;
    else
        sched_config_default(&c);
    sf_tok = NULL;
    if (tok_path) cr_assert(tok_load(f->gguf, &sf_tok) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(sched_engine_create(f->gpu, &f->cfg, sf_tok, &c, &f->eng) == VKLLM_OK, "%s",
              vkllm_last_error());
}

static void sf_open(sf *f, exec_options o, const sched_config *config) {
    sf_open_impl(f, o, config, NULL);
}

static void sf_close(sf *f) {
    if (sf_tok) tok_free(sf_tok);
    sf_tok = NULL;
    sched_engine_destroy(f->eng);
    exec_model_destroy(f->gpu);
    model_weights_free(&f->weights);
    gguf_close(f->gguf);
    free(f->file_data);
}

/* A new engine on the same runner (fresh KV state and records). */
static void sf_reset_engine(sf *f, const sched_config *config) {
    sched_engine_destroy(f->eng);
    for (int i = 0; i < SF_MAX_REQ; i++) {
        memset(&f->rec[i], 0, sizeof f->rec[i]);
        f->rec[i].first_token_step = -1;
    }
    f->steps = 0;
    f->max_seqs_seen = f->max_step_tokens_seen = 0;
    sched_config c;
    if (config)
        c = *config;
    else
        sched_config_default(&c);
    cr_assert(sched_engine_create(f->gpu, &f->cfg, sf_tok, &c, &f->eng) == VKLLM_OK, "%s",
              vkllm_last_error());
}

static void sf_random_prompt(int32_t *tokens, uint32_t n, uint32_t vocab, uint64_t seed) {
    test_rng rng = test_rng_seeded(seed);
    for (uint32_t i = 0; i < n; i++)
        tokens[i] = (int32_t)test_rng_below(&rng, vocab);
}

static sched_request sf_greedy_request(sf *f, uint64_t id, const int32_t *prompt, size_t n,
                                       uint32_t max_tokens) {
    sched_request r = {
        .id = id, .prompt = prompt, .n_prompt = n, .on_event = sf_on_event, .user = f};
    r.sampling = sampler_params_default();
    r.sampling.temperature = 0;
    r.sampling.max_tokens = max_tokens;
    r.sampling.ignore_eos = true;
    return r;
}

static void sf_add(sf *f, const sched_request *r) {
    vkllm_status st = sched_engine_add(f->eng, r);
    cr_assert(st == VKLLM_OK, "add request %llu: %s", (unsigned long long)r->id,
              vkllm_last_error());
}

static void sf_step(sf *f) {
    f->steps++;
    vkllm_status st = sched_engine_step(f->eng);
    cr_assert(st == VKLLM_OK, "step %ld: %s", f->steps, vkllm_last_error());
    sched_stats s;
    sched_engine_stats(f->eng, &s);
    if (s.last_step_seqs > f->max_seqs_seen) f->max_seqs_seen = s.last_step_seqs;
    if (s.last_step_tokens > f->max_step_tokens_seen) f->max_step_tokens_seen = s.last_step_tokens;
}

static void sf_run(sf *f, long max_steps) {
    long start = f->steps;
    while (sched_engine_has_work(f->eng)) {
        cr_assert(f->steps - start < max_steps, "engine still busy after %ld steps", max_steps);
        sf_step(f);
    }
}

static sched_stats sf_stats(const sf *f) {
    sched_stats s;
    sched_engine_stats(f->eng, &s);
    return s;
}

#endif
