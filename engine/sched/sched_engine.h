/* sched_engine.h: the engine core: requests in, streamed tokens and text out, one
 * model step at a time. Single-threaded: the api layer calls it from its engine thread
 * only (callbacks run inside sched_engine_step / _cancel / _add on that thread).
 *
 * It owns the KV block manager (created from the runner's options), the scheduler
 * queues (waiting, running, swapped; first-come-first-served), every request's
 * sampling RNG, stop checks and streaming decoder. It borrows the runner (exec_model)
 * and the tokenizer, which must outlive it.
 *
 * One sched_engine_step():
 *   1. schedule: decode tokens of running sequences first (appending a KV slot each,
 *      preempting the latest-arrived running request when blocks run out), swapped
 *      requests back in when room returns, then prefill chunks of partly prefilled and
 *      waiting requests (FCFS) up to max_step_tokens and max_running_seqs; cached
 *      prompt blocks (prefix cache) are skipped;
 *   2. run the block manager's device ops (copy-on-write, swap), then exec_step;
 *   3. commit written K/V (full blocks enter the prefix cache), sample each sequence
 *      whose prompt/last token was just computed, fork n > 1 samples after their
 *      shared prompt, detokenize incrementally, check stops, emit events, and free
 *      finished sequences (their full blocks stay cached).
 *
 * Events: one sched_event per sample and step that produced something (token, text,
 * finish). event.event is exactly the public vkllm_event (valid during the call only).
 * The last event of a sample has event.finish != VKLLM_FINISH_NONE; the last event of
 * the whole request also has request_finished = true, after which the engine forgets
 * the id. Every accepted request gets exactly one request_finished event (finish,
 * cancel, error or rejection while waiting).
 *
 * Beam search (sched_request_is_beam; sched_beam.h): the request's `n` best hypotheses
 * come as samples 0 .. n-1 at the end only, one event each with all its tokens, its text,
 * finish STOP (end-of-sequence token) or LENGTH, cumulative_logprob and beam_score: beams
 * cannot stream, since a beam's tokens may be replaced by another beam's until the search
 * ends. Cancel and errors end samples 0 .. n-1 as for sampling requests. Not supported
 * with beam search (refused at add): stop strings, logprobs >= 0, n > beam_width.
 * usage: completion_tokens of a sample is its hypothesis' length; generation_tokens_total
 * adds the returned hypotheses' tokens.
 *
 * Errors: sched_engine_add refuses bad requests at once (INVALID_ARGUMENT naming the
 * field; TOO_LONG when the prompt can never fit max_context or the KV pool; BUSY when
 * max_waiting requests already wait). A failure inside one request (e.g. sampling)
 * finishes that request with VKLLM_FINISH_ERROR; the others go on. A failure of the
 * step itself (device) finishes the requests of that step with an error and is
 * returned by sched_engine_step.
 *
 * Module prefix: sched_. */
#ifndef VKL_SCHED_ENGINE_H
#define VKL_SCHED_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "exec/beam.h"
#include "exec/runner.h"
#include "exec/sampler.h"
#include "kv/kv_manager.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "vkllm.h"

typedef enum sched_preempt_mode {
    SCHED_PREEMPT_RECOMPUTE = 0, /* free the blocks, requeue at the front, re-prefill later */
    SCHED_PREEMPT_SWAP,          /* copy the blocks to host memory; recompute if it is full */
} sched_preempt_mode;

#define SCHED_WATERMARK_AUTO UINT32_MAX /* 1% of the KV blocks (vLLM's default) */

typedef struct sched_config {
    uint32_t max_step_tokens;  /* token budget of one step; 0: the runner's max_tokens */
    uint32_t max_running_seqs; /* sequences running at once; 0: the runner's max_seqs */
    uint32_t max_context;      /* prompt + output tokens; 0: the runner's max_context */
    uint32_t max_waiting;      /* waiting requests before add returns BUSY; 0: no limit */
    sched_preempt_mode preempt_mode;
    uint32_t watermark_blocks; /* blocks a new prompt leaves free; SCHED_WATERMARK_AUTO */
    bool enable_prefix_caching;
    uint64_t model_key; /* model identity folded into block hashes */
    uint64_t seed;      /* draws the seeds of requests without has_seed */
    /* Sampled rows whose parameters allow it (sampler_candidates_usable) read back only
     * the k best logits found on the GPU (exec/k_sample.h), the full row only when the
     * candidates do not settle the draw. sample_candidates is k (0: automatic, 256 or
     * n_vocab / 4 when smaller); full_row_sampling turns the path off (every sampled row
     * reads its whole row back; A/B tests). */
    uint32_t sample_candidates;
    bool full_row_sampling;
} sched_config;

/* Defaults: everything from the runner, no waiting limit, recompute, watermark auto,
 * prefix caching on, model_key 0, seed 0. */
void sched_config_default(sched_config *config);

typedef struct sched_event {
    vkllm_event event;             /* the public event, 1:1 */
    bool request_finished;         /* the request's last event: every sample has finished */
    uint32_t prompt_tokens;        /* of the request */
    uint32_t cached_prompt_tokens; /* prompt tokens found in the prefix cache (first run) */
    uint32_t completion_tokens;    /* generated so far by this sample (event.index) */
    /* Beam search results only (0 otherwise): the hypothesis' sum of token logprobs and
     * its score, sum / len ^ length_penalty (exec/beam.h). */
    double cumulative_logprob;
    double beam_score;
} sched_event;

typedef void (*sched_event_fn)(const sched_event *event, void *user);

typedef struct sched_request {
    vkllm_request_id id;                /* chosen by the caller; unique among live requests */
    const int32_t *prompt;              /* copied */
    size_t n_prompt;                    /* >= 1 */
    sampler_params sampling;            /* copied (stop strings and ids too); validated */
    uint32_t beam_width;                /* > 1: beam search (exec/beam.h) instead of sampling */
    float length_penalty;               /* beam search score exponent (1 as in vLLM / HF) */
    beam_early_stopping early_stopping; /* beam search; 0 = HEURISTIC (vLLM / HF default) */
    bool beam_search;        /* beam search even at beam_width <= 1 (width 1: greedy by the beam
                                path; tests) */
    uint64_t cache_salt;     /* prefix-cache isolation (0: shared) */
    sched_event_fn on_event; /* may be NULL */
    void *user;
} sched_request;

/* Whether the request runs as a beam search (sched_beam.h). */
static inline bool sched_request_is_beam(const sched_request *r) {
    return r->beam_width > 1 || r->beam_search;
}

typedef struct sched_stats {
    vkllm_stats api; /* the public figures (requests, tokens, KV, prefix cache, preemptions) */
    uint32_t seqs_running, seqs_waiting, seqs_swapped;
    uint64_t forward_tokens_total; /* tokens run through the forward pass (all steps) */
    uint64_t prefill_tokens_total; /* of them, prompt / recompute tokens */
    uint64_t decode_tokens_total;  /* of them, one-token decode steps */
    uint64_t preemptions_recompute, preemptions_swap;
    uint64_t requests_rejected; /* refused after being queued (can never fit) */
    uint32_t last_step_tokens, last_step_seqs;
    /* Logits rows by how they were sampled: GPU argmax, GPU candidates, the full row read
     * back with the step, and candidate rows that then needed their full row (fallback,
     * also counted in rows_candidates_total). */
    uint64_t rows_argmax_total, rows_candidates_total, rows_full_total, rows_fallback_total;
    uint64_t readback_bytes_total;     /* device -> host bytes of every step's outputs */
    uint64_t last_step_readback_bytes; /* of the last step (fallback rows included) */
    kv_stats kv;
} sched_stats;

typedef struct sched_engine sched_engine;

/* model, cfg and tok are borrowed (tok may be NULL: no text, no end-of-generation
 * tokens; events carry token ids only). The KV manager takes block_size, num_blocks and
 * num_host_blocks from exec_model_options(model). */
vkllm_status sched_engine_create(exec_model *model, const model_config *cfg,
                                 const tok_tokenizer *tok, const sched_config *config,
                                 sched_engine **out);
/* Frees everything without events (call sched_engine_cancel_all first for those). */
void sched_engine_destroy(sched_engine *engine);

/* Queues a request (it runs from the next step on). */
vkllm_status sched_engine_add(sched_engine *engine, const sched_request *request);

/* Finishes the request now with VKLLM_FINISH_CANCELLED (one event per unfinished sample,
 * the last with request_finished) and frees its KV blocks before returning.
 * NOT_FOUND if the id is not live. */
vkllm_status sched_engine_cancel(sched_engine *engine, vkllm_request_id id);
void sched_engine_cancel_all(sched_engine *engine);

/* Runs one step (nothing when there is no work). */
vkllm_status sched_engine_step(sched_engine *engine);

/* Requests waiting, running or swapped. */
bool sched_engine_has_work(const sched_engine *engine);
bool sched_engine_has_request(const sched_engine *engine, vkllm_request_id id);

void sched_engine_stats(const sched_engine *engine, sched_stats *out);

/* Read-only views for tests and metrics. */
const kv_manager *sched_engine_kv(const sched_engine *engine);
const sched_config *sched_engine_config(const sched_engine *engine); /* defaults resolved */

#endif
