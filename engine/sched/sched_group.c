/* sched_group.c: creation and release of requests (sequence groups); see sched_group.h. */
#include "sched/sched_group.h"

#include <stdlib.h>
#include <string.h>

vkllm_status sched_seq_push_token(sched_seq *seq, int32_t token) {
    if (seq->n_tokens == seq->capacity) {
        size_t cap = seq->capacity ? seq->capacity * 2 : 64;
        int32_t *t = realloc(seq->tokens, cap * sizeof *t);
        if (!t) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched: %zu tokens", cap);
        seq->tokens = t;
        seq->capacity = cap;
    }
    seq->tokens[seq->n_tokens++] = token;
    return VKLLM_OK;
}

static vkllm_status sched_seq_init(sched_seq *seq, sched_group *g, uint32_t index,
                                   const sched_request *req, const tok_tokenizer *tok,
                                   uint64_t seed) {
    seq->group = g;
    seq->index = index;
    seq->kv = -1;
    seq->forked = index == 0;
    seq->capacity = req->n_prompt + 16;
    seq->tokens = malloc(seq->capacity * sizeof *seq->tokens);
    if (!seq->tokens)
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched request %llu: prompt of %zu tokens",
                        (unsigned long long)req->id, req->n_prompt);
    memcpy(seq->tokens, req->prompt, req->n_prompt * sizeof *seq->tokens);
    seq->n_tokens = req->n_prompt;
    /* sampler.h: children of an n > 1 request use sampler_child_seed(seed, i). */
    sampler_state_init(&seq->rng, req->sampling.n > 1 ? sampler_child_seed(seed, index) : seed);
    VKL_TRY(stop_seq_create(&req->sampling, &seq->stop));
    if (tok) VKL_TRY(tok_decoder_new(tok, false, &seq->dec));
    return VKLLM_OK;
}

vkllm_status sched_group_create(const sched_request *req, const tok_tokenizer *tok, uint64_t seed,
                                uint64_t arrival, sched_group **out) {
    *out = NULL;
    sched_group *g = calloc(1, sizeof *g);
    if (!g) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched request");
    g->id = req->id;
    g->arrival = arrival;
    g->state = SCHED_GROUP_WAITING;
    g->params = req->sampling;
    /* The stop_seqs copy stop ids and strings; the sampler never reads them. */
    g->params.stop_token_ids = NULL;
    g->params.n_stop_token_ids = 0;
    g->params.stop_strings = NULL;
    g->params.n_stop_strings = 0;
    g->cache_salt = req->cache_salt;
    g->on_event = req->on_event;
    g->user = req->user;
    g->n_prompt = req->n_prompt;
    uint32_t n_seqs =
        sched_request_is_beam(req) ? (req->beam_width ? req->beam_width : 1) : req->sampling.n;
    g->n_seqs = n_seqs;
    g->n_unfinished = g->n_seqs;
    g->seqs = calloc(g->n_seqs, sizeof *g->seqs);
    if (!g->seqs) {
        free(g);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched request: %u sequences", n_seqs);
    }
    for (uint32_t i = 0; i < g->n_seqs; i++) {
        vkllm_status st = sched_seq_init(&g->seqs[i], g, i, req, tok, seed);
        if (st != VKLLM_OK) {
            sched_group_free(g);
            return st;
        }
    }
    *out = g;
    return VKLLM_OK;
}

void sched_group_free(sched_group *g) {
    if (!g) return;
    for (uint32_t i = 0; g->seqs && i < g->n_seqs; i++) {
        sched_seq *s = &g->seqs[i];
        free(s->tokens);
        if (s->stop) stop_seq_free(s->stop);
        if (s->dec) tok_decoder_free(s->dec);
    }
    free(g->seqs);
    sched_beam_free(g->beam);
    free(g);
}

bool sched_group_forked(const sched_group *g) {
    return g->n_seqs == 1 || g->seqs[1].forked;
}

uint32_t sched_group_seqs_to_run(const sched_group *g) {
    if (g->beam) return g->n_seqs; /* seats for the widest step */
    return g->n_unfinished;
}
