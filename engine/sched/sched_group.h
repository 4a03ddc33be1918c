/* sched_group.h: one request (a sequence group) and its sequences, as the scheduler
 * and the engine core see them.
 *
 * A group holds `n_seqs` sequences from the start (n parallel samples): sequence 0
 * prefills the prompt; the others wait unforked (kv == -1, forked == false) until the
 * prompt's logits exist, then share sequence 0's blocks through kv_manager_fork.
 *
 * Invariants of a sequence with KV (kv >= 0):
 *  - tokens[0 .. n_tokens) is the prompt then the generated tokens;
 *  - n_computed <= kv tokens <= n_tokens, with n_tokens - kv tokens <= 1 (the token
 *    just sampled is appended to the KV manager when the next step is planned);
 *  - tokens [n_computed, n_tokens) still need the forward pass.
 * A sequence without KV (waiting for its first or a recompute prefill) has
 * n_computed == 0. A finished sequence has no KV.
 *
 * A beam search request (beam != NULL) has beam width sequence slots instead of n:
 * slot 0 prefills the prompt, then slot i holds live beam i and the other slots are
 * idle (finished, no KV); n_unfinished counts the live beams, and the group keeps
 * `width` scheduler seats throughout (sched_beam.h).
 * Module prefix: sched_. */
#ifndef VKL_SCHED_GROUP_H
#define VKL_SCHED_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exec/sampler.h"
#include "exec/stop.h"
#include "kv/kv_manager.h"
#include "model/tokenizer.h"
#include "sched/sched_beam.h"
#include "sched/sched_engine.h"

typedef enum sched_group_state {
    SCHED_GROUP_WAITING = 0,
    SCHED_GROUP_RUNNING,
    SCHED_GROUP_SWAPPED,
    SCHED_GROUP_DONE,
} sched_group_state;

typedef struct sched_group sched_group;

typedef struct sched_seq {
    sched_group *group;
    uint32_t index; /* sample index in the request (vkllm_event.index) */
    kv_seq_id kv;   /* -1: no KV blocks */
    int32_t *tokens;
    size_t n_tokens, capacity;
    size_t n_computed;
    bool forked; /* has (had) its own sequence: always true for index 0 */
    bool finished;
    vkllm_finish_reason finish;
    uint32_t generated;
    sampler_state rng;
    stop_seq *stop;
    tok_decoder *dec; /* NULL without a tokenizer */
} sched_seq;

struct sched_group {
    vkllm_request_id id;
    uint64_t arrival; /* FCFS rank: smaller arrived earlier */
    sched_group_state state;
    sampler_params params; /* stop strings/ids cleared: the stop_seqs own copies */
    uint64_t cache_salt;
    sched_event_fn on_event;
    void *user;
    size_t n_prompt;
    uint32_t cached_prompt_tokens;
    bool admitted_once;
    bool cancel_pending; /* cancel asked for from inside a callback */
    uint32_t n_seqs;
    uint32_t n_unfinished;
    sched_seq *seqs;    /* [n_seqs] */
    sched_beam *beam;   /* beam search state; NULL for sampling requests */
    uint32_t n_results; /* beam search: hypotheses to return (the request's n) */
    bool beam_results;  /* beam search over: slots 0 .. n_results - 1 are the results */
};

/* Copies the prompt and the params into a new group of params.n sequences (beam_width
 * slots for a beam request; the caller attaches the beam state), each with its stop
 * state, streaming decoder (tok may be NULL) and RNG (seed: the request's). */
vkllm_status sched_group_create(const sched_request *req, const tok_tokenizer *tok, uint64_t seed,
                                uint64_t arrival, sched_group **out);
/* Frees host memory only: the caller has released every sequence's KV first. */
void sched_group_free(sched_group *group);

/* Appends one token to a sequence's token list (host memory only). */
vkllm_status sched_seq_push_token(sched_seq *seq, int32_t token);

/* Sequences that will run when the group runs: unfinished ones (all n before the fork;
 * the beam width for beam search). */
uint32_t sched_group_seqs_to_run(const sched_group *group);
/* Whether sequence 0 has forked its siblings (or n == 1). */
bool sched_group_forked(const sched_group *group);

#endif
