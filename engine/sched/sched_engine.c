/* sched_engine.c: the engine core (see sched_engine.h): request admission, one step
 * (schedule -> kv ops -> forward pass -> commit -> sample / fork -> stop checks ->
 * events), cancellation and statistics.
 *
 * Lifetime rule: a group that finishes during a step is unqueued at once (its KV is
 * released at once) but its memory is freed only at the end of the step, because the
 * step's entries and callbacks may still point at it. A cancel asked for from inside a
 * callback is deferred the same way (the group is marked and cancelled after the
 * callbacks of the step). */
#include "sched/sched_engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/splitmix.h"
#include "exec/k_sample.h"
#include "sched/sched_group.h"
#include "sched/sched_plan.h"
#include "sched/sched_queue.h"
#include "sched/sched_scheduler.h"

struct sched_engine {
    exec_model *model;
    const model_config *cfg;
    const tok_tokenizer *tok;
    sched_scheduler sched; /* owns the kv_manager and the queues */
    sched_batch batch;
    sched_plan plan;
    sampler_workspace *ws;
    float *logits; /* [max_seqs][n_vocab], allocated on first need */
    int32_t *argmax;
    /* Per logits row of a step: how it is sampled, its full-row flag for the runner and
     * 1 / T for k_topk; the candidates [max_seqs][cand_k] and their stats [max_seqs][4]. */
    uint8_t *row_mode; /* sched_row_mode */
    bool *row_full;
    float *inv_temp;
    int32_t *cand_ids;
    float *cand_values, *cand_stats;
    uint32_t cand_k;
    sched_queue done; /* finished this step, freed at its end */
    char *text;       /* event text scratch */
    size_t text_cap;
    vkllm_token_logprob logprobs[SAMPLER_MAX_LOGPROBS + 1];
    int32_t *eog_ids; /* the tokenizer's end-of-generation ids (beam search EOS set) */
    size_t n_eog;
    bool eog_listed;
    uint64_t arrival;
    uint64_t seed_state;
    bool in_step;
    bool cancel_pending;
    /* counters */
    uint64_t requests_finished, requests_cancelled, requests_failed, requests_rejected;
    uint64_t prompt_tokens_total, generation_tokens_total, steps_total;
    uint64_t forward_tokens, prefill_tokens, decode_tokens;
    uint32_t last_step_tokens, last_step_seqs;
    uint64_t rows_argmax, rows_candidates, rows_full, rows_fallback;
    uint64_t readback_bytes, last_step_readback_bytes;
};

/* How one logits row of a step is sampled (see run_batch). */
typedef enum sched_row_mode {
    SCHED_ROW_ARGMAX,     /* greedy without logits: the GPU argmax id only */
    SCHED_ROW_CANDIDATES, /* the GPU top-k candidates; the full row on demand */
    SCHED_ROW_FULL,       /* the whole row read back with the step */
} sched_row_mode;

void sched_config_default(sched_config *c) {
    memset(c, 0, sizeof *c);
    c->preempt_mode = SCHED_PREEMPT_RECOMPUTE;
    c->watermark_blocks = SCHED_WATERMARK_AUTO;
    c->enable_prefix_caching = true;
}

static uint32_t min_u32(uint32_t a, uint32_t b) {
    return a < b ? a : b;
}

vkllm_status sched_engine_create(exec_model *model, const model_config *cfg,
                                 const tok_tokenizer *tok, const sched_config *config,
                                 sched_engine **out) {
    *out = NULL;
    if (!model || !cfg || !config)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sched engine: model, cfg and config needed");
    const exec_options *o = exec_model_options(model);
    sched_config c = *config;
    c.max_step_tokens =
        c.max_step_tokens ? min_u32(c.max_step_tokens, o->max_tokens) : o->max_tokens;
    c.max_running_seqs =
        c.max_running_seqs ? min_u32(c.max_running_seqs, o->max_seqs) : o->max_seqs;
    /* every running sequence must be able to decode in one step */
    c.max_running_seqs = min_u32(c.max_running_seqs, c.max_step_tokens);
    c.max_context = c.max_context ? min_u32(c.max_context, o->max_context) : o->max_context;
    if (c.watermark_blocks == SCHED_WATERMARK_AUTO) c.watermark_blocks = o->num_blocks / 100;
    if (c.watermark_blocks >= o->num_blocks)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sched engine: watermark_blocks %u must be below the %u KV blocks",
                        c.watermark_blocks, o->num_blocks);
    if (c.preempt_mode != SCHED_PREEMPT_RECOMPUTE && c.preempt_mode != SCHED_PREEMPT_SWAP)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sched engine: preempt_mode %d unknown",
                        (int)c.preempt_mode);

    sched_engine *e = calloc(1, sizeof *e);
    if (!e) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched engine");
    e->model = model;
    e->cfg = cfg;
    e->tok = tok;
    e->sched.config = c;
    e->seed_state = c.seed;
    kv_config kc = {.block_size = o->block_size,
                    .num_device_blocks = o->num_blocks,
                    .num_host_blocks = o->num_host_blocks,
                    .watermark_blocks = c.watermark_blocks,
                    .model_key = c.model_key,
                    .enable_prefix_caching = c.enable_prefix_caching};
    vkllm_status st = kv_manager_create(&kc, &e->sched.kv);
    if (st == VKLLM_OK) st = sampler_workspace_create(cfg->n_vocab, &e->ws);
    /* k of the GPU candidates: 256 at most (k_topk), and few enough against the
     * vocabulary that k ids + k values read back less than the row. */
    uint32_t k = c.sample_candidates ? c.sample_candidates : cfg->n_vocab / 4;
    if (k > K_TOPK_MAX) k = K_TOPK_MAX;
    if (k > cfg->n_vocab) k = cfg->n_vocab;
    e->cand_k = k ? k : 1;
    if (st == VKLLM_OK) {
        size_t S = o->max_seqs;
        e->argmax = malloc(S * sizeof *e->argmax);
        e->row_mode = malloc(S * sizeof *e->row_mode);
        e->row_full = malloc(S * sizeof *e->row_full);
        e->inv_temp = malloc(S * sizeof *e->inv_temp);
        e->cand_ids = malloc(S * e->cand_k * sizeof *e->cand_ids);
        e->cand_values = malloc(S * e->cand_k * sizeof *e->cand_values);
        e->cand_stats = malloc(S * 4 * sizeof *e->cand_stats);
        if (!e->argmax || !e->row_mode || !e->row_full || !e->inv_temp || !e->cand_ids ||
            !e->cand_values || !e->cand_stats)
            st = vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY,
                          "sched engine: per-row sampling arrays for %zu rows", S);
    }
    if (st != VKLLM_OK) {
        sched_engine_destroy(e);
        return st;
    }
    *out = e;
    return VKLLM_OK;
}

static void free_queue_groups(sched_engine *e, sched_queue *q) {
    for (size_t i = 0; i < q->count; i++) {
        sched_release_group_kv(e->sched.kv, q->items[i]);
        sched_group_free(q->items[i]);
    }
    sched_queue_destroy(q);
}

void sched_engine_destroy(sched_engine *e) {
    if (!e) return;
    if (e->sched.kv) {
        free_queue_groups(e, &e->sched.running);
        free_queue_groups(e, &e->sched.waiting);
        free_queue_groups(e, &e->sched.swapped);
        free_queue_groups(e, &e->done);
        kv_manager_destroy(e->sched.kv);
    }
    sched_batch_destroy(&e->batch);
    sched_plan_destroy(&e->plan);
    sampler_workspace_free(e->ws);
    free(e->logits);
    free(e->argmax);
    free(e->row_mode);
    free(e->row_full);
    free(e->inv_temp);
    free(e->cand_ids);
    free(e->cand_values);
    free(e->cand_stats);
    free(e->text);
    free(e->eog_ids);
    free(e);
}

const kv_manager *sched_engine_kv(const sched_engine *e) {
    return e->sched.kv;
}

const sched_config *sched_engine_config(const sched_engine *e) {
    return &e->sched.config;
}

static sched_group *find_live(const sched_engine *e, vkllm_request_id id) {
    sched_group *g = sched_queue_find(&e->sched.running, id);
    if (!g) g = sched_queue_find(&e->sched.waiting, id);
    if (!g) g = sched_queue_find(&e->sched.swapped, id);
    return g;
}

bool sched_engine_has_request(const sched_engine *e, vkllm_request_id id) {
    const sched_group *g = find_live(e, id);
    return g && !g->cancel_pending;
}

bool sched_engine_has_work(const sched_engine *e) {
    return e->sched.running.count || e->sched.waiting.count || e->sched.swapped.count;
}

/* ------------------------------------------------------------------ admission */

static uint32_t beam_width_of(const sched_request *req) {
    return req->beam_width ? req->beam_width : 1;
}

/* What a beam request may not ask for (sched_beam.h); the message names the field. */
static vkllm_status check_beam_request(const sched_engine *e, const sched_request *req) {
    unsigned long long id = (unsigned long long)req->id;
    uint32_t w = beam_width_of(req);
    if (w > e->sched.config.max_running_seqs)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "request %llu: beam_width %u exceeds max_running_seqs %u", id, w,
                        e->sched.config.max_running_seqs);
    if (req->sampling.n > w)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "request %llu: sampling.n %u exceeds beam_width %u (beam search returns "
                        "at most beam_width hypotheses)",
                        id, req->sampling.n, w);
    if (!isfinite(req->length_penalty))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "request %llu: length_penalty %g not finite",
                        id, (double)req->length_penalty);
    if (req->sampling.n_stop_strings)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "request %llu: stop strings are not supported with beam search "
                        "(beam_width %u); use stop_token_ids",
                        id, w);
    if (req->sampling.logprobs >= 0)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "request %llu: logprobs %d are not supported with beam search (beam_width "
                        "%u); results carry cumulative_logprob and beam_score",
                        id, req->sampling.logprobs, w);
    return VKLLM_OK;
}

/* The tokenizer's end-of-generation ids, listed once (a scan of the vocabulary). */
static vkllm_status list_eog(sched_engine *e) {
    if (e->eog_listed || !e->tok) return VKLLM_OK;
    size_t n = 0;
    for (uint32_t t = 0; t < e->cfg->n_vocab; t++)
        n += tok_is_eog(e->tok, (int32_t)t);
    e->eog_ids = malloc((n ? n : 1) * sizeof *e->eog_ids);
    if (!e->eog_ids) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched: %zu EOG ids", n);
    for (uint32_t t = 0; t < e->cfg->n_vocab; t++)
        if (tok_is_eog(e->tok, (int32_t)t)) e->eog_ids[e->n_eog++] = (int32_t)t;
    e->eog_listed = true;
    return VKLLM_OK;
}

/* The beam state of a new group: EOS set = EOG ids (unless ignore_eos) + stop ids;
 * max_tokens clamped so prompt + output fit max_context (at least one token, as for
 * sampled requests). */
static vkllm_status attach_beam(sched_engine *e, const sched_request *req, sched_group *g) {
    VKL_TRY(list_eog(e));
    const sampler_params *sp = &req->sampling;
    size_t n_eog = sp->ignore_eos ? 0 : e->n_eog;
    size_t n_eos = n_eog + sp->n_stop_token_ids;
    int32_t *eos = malloc((n_eos ? n_eos : 1) * sizeof *eos);
    if (!eos) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched: beam EOS set");
    if (n_eog) memcpy(eos, e->eog_ids, n_eog * sizeof *eos);
    if (sp->n_stop_token_ids)
        memcpy(eos + n_eog, sp->stop_token_ids, sp->n_stop_token_ids * sizeof *eos);
    uint32_t max_context = e->sched.config.max_context;
    uint32_t room = req->n_prompt < max_context ? max_context - (uint32_t)req->n_prompt : 1;
    uint32_t max_tokens = sp->max_tokens < room ? sp->max_tokens : room;
    vkllm_status st = sched_beam_create(beam_width_of(req), req->length_penalty,
                                        req->early_stopping, max_tokens, eos, n_eos, &g->beam);
    free(eos);
    if (st != VKLLM_OK) return vkl_fail_wrap(st, "request %llu: ", (unsigned long long)req->id);
    g->n_results = sp->n;
    return VKLLM_OK;
}

vkllm_status sched_engine_add(sched_engine *e, const sched_request *req) {
    const sched_config *c = &e->sched.config;
    if (!req) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sched add: NULL request");
    unsigned long long id = (unsigned long long)req->id;
    if (find_live(e, req->id))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "request %llu: id is already in use", id);
    if (!req->prompt || req->n_prompt == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "request %llu: empty prompt", id);
    for (size_t i = 0; i < req->n_prompt; i++)
        if (req->prompt[i] < 0 || (uint32_t)req->prompt[i] >= e->cfg->n_vocab)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "request %llu: prompt token %zu has id %d outside the vocabulary "
                            "[0, %u)",
                            id, i, req->prompt[i], e->cfg->n_vocab);
    vkllm_status st = sampler_params_validate(&req->sampling);
    if (st != VKLLM_OK) return vkl_fail_wrap(st, "request %llu: ", id);
    bool beam = sched_request_is_beam(req);
    if (beam) VKL_TRY(check_beam_request(e, req));
    if (req->sampling.n > c->max_running_seqs)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "request %llu: sampling.n %u exceeds max_running_seqs %u", id,
                        req->sampling.n, c->max_running_seqs);
    if (req->n_prompt > c->max_context)
        return vkl_fail(VKLLM_ERR_TOO_LONG,
                        "request %llu: prompt of %zu tokens exceeds max_context %u", id,
                        req->n_prompt, c->max_context);
    if (kv_manager_can_allocate(e->sched.kv, req->prompt, req->n_prompt, req->cache_salt) ==
        KV_ALLOC_NEVER) {
        kv_stats ks;
        kv_manager_stats(e->sched.kv, &ks);
        return vkl_fail(VKLLM_ERR_TOO_LONG,
                        "request %llu: prompt of %zu tokens can never fit the KV cache (%u "
                        "blocks of %u tokens, %u kept free as watermark)",
                        id, req->n_prompt, ks.blocks_total, ks.block_size, c->watermark_blocks);
    }
    if (c->max_waiting && e->sched.waiting.count >= c->max_waiting)
        return vkl_fail(VKLLM_ERR_BUSY, "request %llu: %zu requests already wait (max_waiting %u)",
                        id, e->sched.waiting.count, c->max_waiting);
    uint64_t seed = req->sampling.has_seed ? req->sampling.seed : vkl_splitmix64(&e->seed_state);
    sched_group *g;
    VKL_TRY(sched_group_create(req, e->tok, seed, e->arrival, &g));
    st = beam ? attach_beam(e, req, g) : VKLLM_OK;
    if (st == VKLLM_OK) st = sched_queue_push_back(&e->sched.waiting, g);
    if (st != VKLLM_OK) {
        sched_group_free(g);
        return st;
    }
    e->arrival++;
    e->prompt_tokens_total += req->n_prompt;
    return VKLLM_OK;
}

/* ------------------------------------------------------------------ events */

static vkllm_status text_reserve(sched_engine *e, size_t need) {
    if (need <= e->text_cap) return VKLLM_OK;
    size_t cap = e->text_cap ? e->text_cap : 256;
    while (cap < need)
        cap *= 2;
    char *t = realloc(e->text, cap);
    if (!t) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched: event text of %zu bytes", cap);
    e->text = t;
    e->text_cap = cap;
    return VKLLM_OK;
}

static void emit_hyp(sched_engine *e, sched_group *g, const sched_seq *q, const int32_t *tokens,
                     size_t n_tokens, const char *text, size_t text_len,
                     const vkllm_token_logprob *logprobs, vkllm_finish_reason finish,
                     vkllm_status error, const char *error_message, const beam_hypothesis *hyp) {
    if (!g->on_event) return;
    sched_event ev = {
        .event = {.request = g->id,
                  .index = q->index,
                  .text = text ? text : "",
                  .text_len = text ? text_len : 0,
                  .tokens = tokens,
                  .n_tokens = n_tokens,
                  .logprobs = logprobs,
                  .finish = finish,
                  .error = error,
                  .error_message = error_message},
        .request_finished = g->state == SCHED_GROUP_DONE,
        .prompt_tokens = (uint32_t)g->n_prompt,
        .cached_prompt_tokens = g->cached_prompt_tokens,
        .completion_tokens = q->generated,
        .cumulative_logprob = hyp ? hyp->sum_logprob : 0.0,
        .beam_score = hyp ? hyp->score : 0.0,
    };
    g->on_event(&ev, g->user);
}

static void emit(sched_engine *e, sched_group *g, const sched_seq *q, const int32_t *tokens,
                 size_t n_tokens, const char *text, size_t text_len,
                 const vkllm_token_logprob *logprobs, vkllm_finish_reason finish,
                 vkllm_status error, const char *error_message) {
    emit_hyp(e, g, q, tokens, n_tokens, text, text_len, logprobs, finish, error, error_message,
             NULL);
}

/* Marks q finished and releases its KV; the group is done (unqueued, queued for
 * freeing) when it was the last unfinished sequence. Returns whether it was. */
static bool finish_seq(sched_engine *e, sched_seq *q, vkllm_finish_reason reason) {
    sched_group *g = q->group;
    if (q->kv >= 0) kv_manager_free(e->sched.kv, q->kv);
    q->kv = -1;
    q->finished = true;
    q->finish = reason;
    g->n_unfinished--;
    if (g->n_unfinished) return false;
    sched_unqueue(&e->sched, g);
    g->state = SCHED_GROUP_DONE;
    /* Failing to queue for freeing would leak the group, not corrupt anything. */
    (void)sched_queue_push_back(&e->done, g);
    if (reason == VKLLM_FINISH_STOP || reason == VKLLM_FINISH_LENGTH)
        e->requests_finished++;
    else if (reason == VKLLM_FINISH_CANCELLED)
        e->requests_cancelled++;
    else
        e->requests_failed++;
    return true;
}

/* A beam group's slots become its result samples: 0 .. n_results - 1 unfinished (once:
 * results may already be partly emitted). Its KV is released. */
static void beam_to_results(sched_group *g) {
    if (g->beam_results) return;
    g->beam_results = true;
    for (uint32_t i = 0; i < g->n_seqs; i++)
        g->seqs[i].finished = i >= g->n_results;
    g->n_unfinished = g->n_results;
}

/* Ends every unfinished sequence of g with `reason` (cancel, error), one event each. */
static void end_group(sched_engine *e, sched_group *g, vkllm_finish_reason reason,
                      vkllm_status error, const char *message) {
    /* Release all KV first, so the blocks are free whatever the callbacks do. */
    sched_release_group_kv(e->sched.kv, g);
    if (g->beam) beam_to_results(g);
    for (uint32_t i = 0; i < g->n_seqs; i++) {
        sched_seq *q = &g->seqs[i];
        if (q->finished) continue;
        finish_seq(e, q, reason);
        emit(e, g, q, NULL, 0, NULL, 0, NULL, reason, error, message);
    }
}

static void free_done(sched_engine *e) {
    for (size_t i = 0; i < e->done.count; i++)
        sched_group_free(e->done.items[i]);
    e->done.count = 0;
}

static void run_pending_cancels(sched_engine *e) {
    if (!e->cancel_pending) return;
    e->cancel_pending = false;
    sched_queue *queues[3] = {&e->sched.running, &e->sched.waiting, &e->sched.swapped};
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < queues[k]->count;) {
            sched_group *g = queues[k]->items[i];
            if (g->cancel_pending)
                end_group(e, g, VKLLM_FINISH_CANCELLED, VKLLM_OK, NULL);
            else
                i++;
        }
}

vkllm_status sched_engine_cancel(sched_engine *e, vkllm_request_id id) {
    sched_group *g = find_live(e, id);
    if (!g || g->cancel_pending)
        return vkl_fail(VKLLM_ERR_NOT_FOUND, "cancel: request %llu is not live",
                        (unsigned long long)id);
    if (e->in_step) {
        /* From a callback: the step's batch still points at g's sequences; it is
         * finished (and its blocks freed) right after the step's callbacks. */
        g->cancel_pending = true;
        e->cancel_pending = true;
        return VKLLM_OK;
    }
    end_group(e, g, VKLLM_FINISH_CANCELLED, VKLLM_OK, NULL);
    free_done(e);
    return VKLLM_OK;
}

void sched_engine_cancel_all(sched_engine *e) {
    sched_queue *queues[3] = {&e->sched.running, &e->sched.waiting, &e->sched.swapped};
    for (int k = 0; k < 3; k++)
        while (queues[k]->count)
            end_group(e, queues[k]->items[0], VKLLM_FINISH_CANCELLED, VKLLM_OK, NULL);
    if (!e->in_step) free_done(e);
}

/* ------------------------------------------------------------------ sampling */

static vkllm_finish_reason finish_of(stop_reason r) {
    switch (r) {
    case STOP_NONE:
        return VKLLM_FINISH_NONE;
    case STOP_LENGTH:
        return VKLLM_FINISH_LENGTH;
    default:
        return VKLLM_FINISH_STOP;
    }
}

/* A sequence that ends for a reason outside its sampler (context or pool full):
 * flushes held text into one final event. */
static void end_seq_length(sched_engine *e, sched_seq *q) {
    stop_event sev = {0};
    vkllm_finish_reason reason = VKLLM_FINISH_LENGTH;
    if (stop_seq_finish(q->stop, q->dec, &sev) == VKLLM_OK && sev.reason != STOP_NONE &&
        sev.reason != STOP_LENGTH)
        reason = finish_of(sev.reason);
    size_t len = 0;
    if (sev.len && text_reserve(e, sev.len) == VKLLM_OK) {
        memcpy(e->text, sev.text, sev.len);
        len = sev.len;
    }
    finish_seq(e, q, reason);
    emit(e, q->group, q, NULL, 0, e->text, len, NULL, reason, VKLLM_OK, NULL);
}

/* Accepts one sampled token for q: stop checks, text, event, finish. */
static vkllm_status accept_token(sched_engine *e, sched_seq *q, const sampler_result *r) {
    sched_group *g = q->group;
    VKL_TRY(sched_seq_push_token(q, r->token));
    q->generated++;
    e->generation_tokens_total++;
    bool is_eog = e->tok && tok_is_eog(e->tok, r->token);
    stop_event sev;
    VKL_TRY(stop_seq_push(q->stop, q->dec, r->token, is_eog, &sev));
    VKL_TRY(text_reserve(e, sev.len + 1));
    memcpy(e->text, sev.text, sev.len);
    size_t len = sev.len;
    vkllm_finish_reason reason = finish_of(sev.reason);
    if (reason == VKLLM_FINISH_NONE && q->n_tokens >= e->sched.config.max_context) {
        stop_event fin;
        VKL_TRY(stop_seq_finish(q->stop, q->dec, &fin));
        VKL_TRY(text_reserve(e, len + fin.len + 1));
        memcpy(e->text + len, fin.text, fin.len);
        len += fin.len;
        reason = fin.reason == STOP_NONE ? VKLLM_FINISH_LENGTH : finish_of(fin.reason);
    }
    const vkllm_token_logprob *lp = NULL;
    if (g->params.logprobs >= 0) {
        e->logprobs[0] = (vkllm_token_logprob){r->token, r->logprob};
        for (int32_t i = 0; i < g->params.logprobs; i++)
            e->logprobs[1 + i] = (uint32_t)i < r->n_top
                                     ? (vkllm_token_logprob){r->top_ids[i], r->top_logprobs[i]}
                                     : (vkllm_token_logprob){-1, -INFINITY};
        lp = e->logprobs;
    }
    if (reason != VKLLM_FINISH_NONE) finish_seq(e, q, reason);
    emit(e, g, q, &q->tokens[q->n_tokens - 1], 1, e->text, len, lp, reason, VKLLM_OK, NULL);
    return VKLLM_OK;
}

/* What the step returned for one logits row. */
typedef struct sched_row {
    uint32_t index; /* logits row of the step */
    sched_row_mode mode;
    const float *full; /* the row's logits: read with the step, or fetched on demand */
    int32_t argmax;
} sched_row;

static vkllm_status ensure_logits(sched_engine *e) {
    if (e->logits) return VKLLM_OK;
    const exec_options *o = exec_model_options(e->model);
    e->logits = malloc((size_t)o->max_seqs * e->cfg->n_vocab * sizeof *e->logits);
    if (!e->logits)
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched: logits of %u rows", o->max_seqs);
    return VKLLM_OK;
}

static vkllm_status sample_seq(sched_engine *e, sched_seq *q, sched_row *row, sampler_result *r) {
    const sched_group *g = q->group;
    uint32_t n_vocab = e->cfg->n_vocab;
    if (row->mode == SCHED_ROW_ARGMAX)
        return sampler_accept_argmax(&g->params, row->argmax, n_vocab, r);
    if (!row->full) { /* SCHED_ROW_CANDIDATES, the row not fetched yet */
        size_t at = (size_t)row->index * e->cand_k;
        const float *stats = e->cand_stats + (size_t)row->index * 4;
        sampler_candidates c = {.ids = e->cand_ids + at,
                                .values = e->cand_values + at,
                                .k = e->cand_k,
                                .row_max = stats[0],
                                .sum_exp = stats[1],
                                .sum_exp_temp = stats[2]};
        bool complete;
        VKL_TRY(sampler_sample_candidates(&g->params, &q->rng, &c, n_vocab, r, &complete));
        if (complete) return VKLLM_OK;
        /* The kept set or the draw reaches past the candidates: the full row, from the
         * device (the runner keeps the step's logits); the RNG has not moved. */
        VKL_TRY(ensure_logits(e));
        float *dst = e->logits + (size_t)row->index * n_vocab;
        VKL_TRY(exec_read_logits_row(e->model, row->index, dst));
        row->full = dst;
        e->rows_fallback++;
    }
    return sampler_sample(&g->params, &q->rng, e->ws, row->full, n_vocab, q->tokens, q->n_tokens,
                          g->n_prompt, r);
}

/* The prompt of an n > 1 request is computed: every sample shares its blocks. */
static vkllm_status fork_children(sched_engine *e, sched_group *g) {
    sched_seq *parent = &g->seqs[0];
    for (uint32_t k = 1; k < g->n_seqs; k++) {
        sched_seq *c = &g->seqs[k];
        VKL_TRY(kv_manager_fork(e->sched.kv, parent->kv, &c->kv));
        c->forked = true;
        c->n_tokens = 0;
        for (size_t i = 0; i < parent->n_tokens; i++)
            VKL_TRY(sched_seq_push_token(c, parent->tokens[i]));
        c->n_computed = parent->n_computed;
    }
    return VKLLM_OK;
}

/* ------------------------------------------------------------------ beam search */

/* The search is over (or cut short: KV pool full): the best n hypotheses become samples
 * 0 .. n-1, one event each carrying all its tokens and text (beams cannot stream: a
 * beam's tokens may still be replaced by another's until the end). Text goes through
 * each sample's stop state and decoder, as streamed tokens would. */
static vkllm_status finish_beam(sched_engine *e, sched_group *g, bool cut_short) {
    const beam_hypothesis *hyps;
    uint32_t n = sched_beam_results(g->beam, cut_short, g->n_results, &hyps);
    if (n == 0)
        return vkl_fail(VKLLM_ERR_INTERNAL,
                        "request %llu: beam search ended without a hypothesis (no finite "
                        "logits)",
                        (unsigned long long)g->id);
    g->n_results = n;
    sched_release_group_kv(e->sched.kv, g);
    beam_to_results(g);
    for (uint32_t i = 0; i < n; i++) {
        sched_seq *q = &g->seqs[i];
        const beam_hypothesis *h = &hyps[i];
        size_t len = 0;
        stop_event sev = {0};
        for (uint32_t t = 0; t < h->len && sev.reason == STOP_NONE; t++) {
            bool is_eog = e->tok && tok_is_eog(e->tok, h->tokens[t]);
            VKL_TRY(stop_seq_push(q->stop, q->dec, h->tokens[t], is_eog, &sev));
            VKL_TRY(text_reserve(e, len + sev.len + 1));
            memcpy(e->text + len, sev.text, sev.len);
            len += sev.len;
        }
        if (sev.reason == STOP_NONE) {
            VKL_TRY(stop_seq_finish(q->stop, q->dec, &sev));
            VKL_TRY(text_reserve(e, len + sev.len + 1));
            memcpy(e->text + len, sev.text, sev.len);
            len += sev.len;
        }
        q->generated = h->len;
        e->generation_tokens_total += h->len;
        vkllm_finish_reason reason = h->eos ? VKLLM_FINISH_STOP : VKLLM_FINISH_LENGTH;
        finish_seq(e, q, reason);
        emit_hyp(e, g, q, h->tokens, h->len, e->text, len, NULL, reason, VKLLM_OK, NULL, h);
    }
    return VKLLM_OK;
}

/* A live beam's logits row: the step runs once every live beam has its row. */
static void process_beam_row(sched_engine *e, sched_seq *q, const float *row) {
    sched_group *g = q->group;
    bool ready = false, done = false;
    vkllm_status st =
        sched_beam_take_row(g->beam, (uint32_t)(q - g->seqs), row, e->cfg->n_vocab, &ready);
    if (st == VKLLM_OK && ready) st = sched_beam_advance(g->beam, g, e->sched.kv, &done);
    if (st == VKLLM_OK && done) st = finish_beam(e, g, false);
    if (st != VKLLM_OK && g->state != SCHED_GROUP_DONE)
        end_group(e, g, VKLLM_FINISH_ERROR, st, vkllm_last_error());
}

/* A beam group that cannot grow (KV pool full) ends with its best hypotheses so far;
 * its entries leave the step's batch (their KV is gone). */
static void cut_beam_short(sched_engine *e, sched_group *g) {
    vkllm_status st = finish_beam(e, g, true);
    if (st != VKLLM_OK && g->state != SCHED_GROUP_DONE)
        end_group(e, g, VKLLM_FINISH_ERROR, st, vkllm_last_error());
    sched_batch *b = &e->batch;
    size_t kept = 0;
    b->n_tokens = 0;
    for (size_t i = 0; i < b->count; i++) {
        if (b->entries[i].seq->group == g) continue;
        b->n_tokens += b->entries[i].n_new;
        b->entries[kept++] = b->entries[i];
    }
    b->count = kept;
}

/* Samples after an entry whose last token's logits `row` describes. */
static void process_row(sched_engine *e, sched_seq *q, sched_row *row) {
    sched_group *g = q->group;
    if (g->state == SCHED_GROUP_DONE || g->cancel_pending || q->finished) return;
    if (g->beam) {
        process_beam_row(e, q, row->full);
        return;
    }
    vkllm_status st = VKLLM_OK;
    if (q->index == 0 && !sched_group_forked(g)) {
        st = fork_children(e, g);
        for (uint32_t k = 0; st == VKLLM_OK && k < g->n_seqs; k++) {
            sampler_result r;
            st = sample_seq(e, &g->seqs[k], row, &r);
            if (st == VKLLM_OK) st = accept_token(e, &g->seqs[k], &r);
        }
    } else {
        sampler_result r;
        st = sample_seq(e, q, row, &r);
        if (st == VKLLM_OK) st = accept_token(e, q, &r);
    }
    if (st != VKLLM_OK && g->state != SCHED_GROUP_DONE)
        end_group(e, g, VKLLM_FINISH_ERROR, st, vkllm_last_error());
}

/* ------------------------------------------------------------------ the step */

static void fail_batch(sched_engine *e, vkllm_status st) {
    char message[VKL_ERROR_MAX];
    snprintf(message, sizeof message, "%s", vkllm_last_error());
    for (size_t i = 0; i < e->batch.count; i++) {
        sched_group *g = e->batch.entries[i].seq->group;
        if (g->state != SCHED_GROUP_DONE) end_group(e, g, VKLLM_FINISH_ERROR, st, message);
    }
}

/* Beams read whole rows (they rank every token); greedy rows need only the argmax;
 * other rows the candidates when their parameters allow, else the whole row. */
static sched_row_mode row_mode_of(const sched_engine *e, const sched_group *g) {
    if (g->beam) return SCHED_ROW_FULL;
    if (sampler_argmax_suffices(&g->params)) return SCHED_ROW_ARGMAX;
    if (!e->sched.config.full_row_sampling && sampler_candidates_usable(&g->params, e->cand_k))
        return SCHED_ROW_CANDIDATES;
    return SCHED_ROW_FULL;
}

/* Fills the per-row arrays of the step and the runner's outputs. */
static vkllm_status plan_outputs(sched_engine *e, exec_step_outputs *o) {
    memset(o, 0, sizeof *o);
    bool any_full = false, any_argmax = false, any_candidates = false;
    uint32_t row = 0;
    for (size_t i = 0; i < e->batch.count; i++) {
        const sched_entry *en = &e->batch.entries[i];
        if (!en->need_logits) continue;
        const sched_group *g = en->seq->group;
        sched_row_mode mode = row_mode_of(e, g);
        e->row_mode[row] = (uint8_t)mode;
        e->row_full[row] = mode == SCHED_ROW_FULL;
        bool greedy = sampler_is_greedy(&g->params);
        e->inv_temp[row] =
            mode == SCHED_ROW_CANDIDATES && !greedy ? 1.0f / g->params.temperature : 1.0f;
        any_full |= mode == SCHED_ROW_FULL;
        any_argmax |= mode == SCHED_ROW_ARGMAX;
        any_candidates |= mode == SCHED_ROW_CANDIDATES;
        row++;
    }
    if (any_full) {
        VKL_TRY(ensure_logits(e));
        o->logits = e->logits;
        o->logits_rows = e->row_full;
    }
    if (any_argmax) o->argmax = e->argmax;
    if (any_candidates) {
        o->topk_k = e->cand_k;
        o->inv_temperature = e->inv_temp;
        o->topk_ids = e->cand_ids;
        o->topk_values = e->cand_values;
        o->topk_stats = e->cand_stats;
    }
    return VKLLM_OK;
}

static vkllm_status run_batch(sched_engine *e) {
    sched_batch *b = &e->batch;
    if (b->ops.count) VKL_TRY(exec_apply_kv_ops(e->model, b->ops.items, b->ops.count));
    kv_ops_clear(&b->ops);
    if (b->count == 0) return VKLLM_OK;
    VKL_TRY(sched_plan_build(&e->plan, b, e->sched.kv));
    exec_step_outputs outputs;
    VKL_TRY(plan_outputs(e, &outputs));
    VKL_TRY(exec_step_ex(e->model, &e->plan.plan, &outputs));

    e->steps_total++;
    e->last_step_tokens = e->plan.plan.n_tokens;
    e->last_step_seqs = e->plan.plan.n_seqs;
    e->forward_tokens += e->plan.plan.n_tokens;
    for (size_t i = 0; i < b->count; i++) {
        sched_entry *en = &b->entries[i];
        sched_seq *q = en->seq;
        if (en->n_new == 1 && en->need_logits && q->generated > 0)
            e->decode_tokens++;
        else
            e->prefill_tokens += en->n_new;
        q->n_computed += en->n_new;
        VKL_TRY(kv_manager_commit(e->sched.kv, q->kv, q->n_computed));
    }
    uint32_t row = 0;
    for (size_t i = 0; i < b->count; i++) {
        sched_entry *en = &b->entries[i];
        if (!en->need_logits) continue;
        sched_row r = {.index = row, .mode = (sched_row_mode)e->row_mode[row]};
        if (r.mode == SCHED_ROW_FULL) r.full = e->logits + (size_t)row * e->cfg->n_vocab;
        if (r.mode == SCHED_ROW_ARGMAX) r.argmax = e->argmax[row];
        e->rows_argmax += r.mode == SCHED_ROW_ARGMAX;
        e->rows_candidates += r.mode == SCHED_ROW_CANDIDATES;
        e->rows_full += r.mode == SCHED_ROW_FULL;
        process_row(e, en->seq, &r);
        row++;
    }
    /* after the rows: fallback reads of this step's logits count too */
    e->last_step_readback_bytes = exec_last_step_readback_bytes(e->model);
    e->readback_bytes += e->last_step_readback_bytes;
    return VKLLM_OK;
}

vkllm_status sched_engine_step(sched_engine *e) {
    if (e->in_step)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sched step: called from inside a callback");
    e->in_step = true;
    sched_batch *b = &e->batch;
    vkllm_status st = sched_schedule(&e->sched, b);
    if (st == VKLLM_OK) {
        for (size_t i = 0; i < b->n_rejected; i++) {
            sched_group *g = b->rejected[i].group;
            e->requests_rejected++;
            end_group(e, g, VKLLM_FINISH_ERROR, b->rejected[i].status, b->rejected[i].message);
        }
        for (size_t i = 0; i < b->n_pool_full; i++) {
            sched_seq *q = b->pool_full[i];
            if (q->group->beam) {
                if (q->group->state != SCHED_GROUP_DONE) cut_beam_short(e, q->group);
            } else if (!q->finished) {
                end_seq_length(e, q);
            }
        }
        st = run_batch(e);
        if (st != VKLLM_OK) fail_batch(e, st);
    }
    e->in_step = false;
    run_pending_cancels(e);
    free_done(e);
    return st;
}

/* ------------------------------------------------------------------ statistics */

void sched_engine_stats(const sched_engine *e, sched_stats *out) {
    memset(out, 0, sizeof *out);
    const sched_scheduler *s = &e->sched;
    kv_manager_stats(s->kv, &out->kv);
    vkllm_stats *a = &out->api;
    a->requests_running = (uint32_t)s->running.count;
    a->requests_waiting = (uint32_t)s->waiting.count;
    a->requests_swapped = (uint32_t)s->swapped.count;
    a->requests_finished = e->requests_finished;
    a->requests_cancelled = e->requests_cancelled;
    a->requests_failed = e->requests_failed;
    a->prompt_tokens_total = e->prompt_tokens_total;
    a->generation_tokens_total = e->generation_tokens_total;
    const sched_queue *queues[3] = {&s->running, &s->waiting, &s->swapped};
    uint32_t *seq_counts[3] = {&out->seqs_running, &out->seqs_waiting, &out->seqs_swapped};
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < queues[k]->count; i++) {
            const sched_group *g = queues[k]->items[i];
            bool forked = sched_group_forked(g);
            for (uint32_t j = 0; j < g->n_seqs; j++) {
                const sched_seq *q = &g->seqs[j];
                if (q->finished || (!forked && j > 0)) continue;
                *seq_counts[k] += 1;
                if (k == 1)
                    a->tokens_waiting += (uint32_t)(q->n_tokens - q->n_computed);
                else if (k == 0)
                    a->tokens_running += (uint32_t)q->n_tokens;
            }
        }
    a->kv_blocks_total = out->kv.blocks_total;
    a->kv_blocks_used = out->kv.blocks_used;
    a->kv_blocks_free = out->kv.blocks_free;
    a->kv_blocks_cached = out->kv.blocks_cached;
    a->kv_usage = out->kv.blocks_total ? (double)out->kv.blocks_used / out->kv.blocks_total : 0;
    a->kv_waste = out->kv.waste;
    a->prefix_cache_queries = out->kv.prefix_cache_queries;
    a->prefix_cache_hits = out->kv.prefix_cache_hits;
    a->preemptions_total = s->preemptions_recompute + s->preemptions_swap;
    a->steps_total = e->steps_total;
    out->forward_tokens_total = e->forward_tokens;
    out->prefill_tokens_total = e->prefill_tokens;
    out->decode_tokens_total = e->decode_tokens;
    out->preemptions_recompute = s->preemptions_recompute;
    out->preemptions_swap = s->preemptions_swap;
    out->requests_rejected = e->requests_rejected;
    out->last_step_tokens = e->last_step_tokens;
    out->last_step_seqs = e->last_step_seqs;
    out->rows_argmax_total = e->rows_argmax;
    out->rows_candidates_total = e->rows_candidates;
    out->rows_full_total = e->rows_full;
    out->rows_fallback_total = e->rows_fallback;
    out->readback_bytes_total = e->readback_bytes;
    out->last_step_readback_bytes = e->last_step_readback_bytes;
}
