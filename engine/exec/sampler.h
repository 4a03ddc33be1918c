/* sampler.h: turns one row of logits into one token (CPU), with the request's sampling
 * parameters and a per-sequence seeded RNG. Owns: sampler_params (mirrored by the public
 * API), the per-sequence RNG state, the per-thread workspace, and the logprob outputs.
 *
 * Order of the transformations (vLLM's order; llama.cpp applies temperature last):
 *   1. penalties on the logits, in this order for each token t:
 *        repetition (HF / llama.cpp / vLLM): if t occurs in the last repetition_window
 *          history tokens (prompt + output; window 0 = the whole history):
 *          logit > 0 ? logit / r : logit * r;
 *        frequency and presence (OpenAI): logit -= frequency * c[t] + presence * (c[t] > 0),
 *          c[t] = occurrences of t among the generated tokens only (history[n_prompt..]);
 *   2. greedy when temperature <= SAMPLER_GREEDY_EPS (or top_k == 1): the argmax of the
 *      penalized logits, ties to the lowest id (as shaders/argmax.comp); no RNG draw;
 *   3. temperature: z = logit / T;
 *   4. top-k: keep the k largest z (ties: lower id first);
 *   5. top-p over the distribution renormalized after top-k: sort descending, keep a token
 *      while the mass strictly before it is < top_p (the smallest prefix whose mass
 *      reaches top_p; at least one token);
 *   6. min-p: keep tokens with p >= min_p * p_max (as z >= z_max + log(min_p)); the
 *      threshold is relative to the top token, so it is the same before or after 4-5;
 *   7. one uniform draw u in [0,1) from the sequence's RNG, inverse CDF over the kept
 *      tokens in descending order when top-k or top-p sorted them, in id order when
 *      only min-p filtered or nothing truncates.
 * NaN logits count as -inf; a +inf logit is chosen with certainty (the first one). A row
 * with no finite logit is VKLLM_ERR_INVALID_ARGUMENT. exp() is a vectorizable polynomial
 * (relative error ~3e-7), sums are accumulated in double.
 *
 * Cost on a 262144-token row: one copy + the penalty tokens + one pass. top-k uses a
 * k-element heap (no sort of the vocabulary); top-p without top-k takes a bounded
 * candidate set (the best 256 by a heap pass) and grows it x8 only while the kept mass
 * has not reached top_p; a full sort happens only if the candidates reach the vocabulary.
 *
 * GPU paths: greedy rows with no penalty and no logprobs need only the runner's GPU argmax
 * (sampler_argmax_suffices + sampler_accept_argmax); other rows without penalties can
 * sample from the k best logits found on the GPU by k_topk (exec/k_sample.h) with
 * sampler_sample_candidates, falling back to the full row when the kept set does not
 * close inside the candidates.
 *
 * Logprobs (SAMPLER_LOGPROBS_RAW is the default, as vLLM's default "raw_logprobs"):
 *   RAW:       log-softmax of the logits as given (before penalties, temperature and
 *              truncation), in double precision accumulation;
 *   PROCESSED: log-softmax of the final distribution that was sampled from (after every
 *              step above): tokens outside the kept set have -inf and are never listed,
 *              so fewer than `logprobs` entries may come back. Greedy: the distribution
 *              of the penalized logits at temperature 1.
 * out->logprob is always the sampled token's logprob in the chosen mode.
 *
 * Seeds: one sampler_state per sequence (xoshiro256** seeded by splitmix64), so a
 * sequence's tokens depend only on its seed and its own logits, never on the batch.
 * Children of a request with n > 1 use sampler_child_seed(seed, i), i = 0..n-1.
 *
 * Thread safety: a sampler_workspace belongs to one thread at a time; params are
 * read-only; each sampler_state belongs to one sequence. Module prefix: sampler_. */
#ifndef VKL_SAMPLER_H
#define VKL_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define SAMPLER_MAX_LOGPROBS 20      /* most top-N logprobs per token (OpenAI's limit) */
#define SAMPLER_GREEDY_EPS 1e-5f     /* temperatures at or below are greedy (vLLM's eps) */
#define SAMPLER_TOP_P_CANDIDATES 256 /* first candidate set of top-p without top-k */

typedef enum sampler_logprobs_mode {
    SAMPLER_LOGPROBS_RAW = 0,   /* log-softmax of the model's logits (default) */
    SAMPLER_LOGPROBS_PROCESSED, /* log-softmax of the distribution actually sampled */
} sampler_logprobs_mode;

/* Parameters of one request. Fields the sampler does not use itself (n, max_tokens,
 * ignore_eos, stop ids and strings) live here so the public API mirrors one struct;
 * stop.h and the scheduler read them. Pointers are borrowed: the caller keeps them
 * alive as long as the params (stop_seq_create copies what it needs). */
typedef struct sampler_params {
    float temperature;          /* >= 0; <= SAMPLER_GREEDY_EPS is greedy (default 1) */
    int32_t top_k;              /* <= 0: off (0 and -1 both accepted) */
    float top_p;                /* (0, 1]; 1: off */
    float min_p;                /* [0, 1]; 0: off */
    float repetition_penalty;   /* > 0; 1: off */
    uint32_t repetition_window; /* last N history tokens considered; 0: all of them */
    float presence_penalty;     /* [-2, 2] */
    float frequency_penalty;    /* [-2, 2] */
    bool has_seed;              /* false: the engine picks a seed for the request */
    uint64_t seed;
    int32_t logprobs; /* top-N logprobs per token, 0..SAMPLER_MAX_LOGPROBS; -1: none
                         (0: only the sampled token's logprob) */
    sampler_logprobs_mode logprobs_mode;
    uint32_t n;          /* >= 1 independent completions (forks; child seeds) */
    bool ignore_eos;     /* do not stop at end-of-generation tokens */
    uint32_t max_tokens; /* >= 1 generated tokens at most (default 16, as vLLM) */
    const int32_t *stop_token_ids;
    size_t n_stop_token_ids;
    const char *const *stop_strings; /* NUL-terminated, valid UTF-8, non-empty */
    size_t n_stop_strings;
    bool include_stop_str; /* emit the matched stop string (vLLM include_stop_str_in_output) */
} sampler_params;

/* Defaults: temperature 1, top_k 0, top_p 1, min_p 0, penalties off, no seed,
 * logprobs -1 (RAW mode), n 1, max_tokens 16, no stops. */
sampler_params sampler_params_default(void);

/* Checks every field's range; the message names the field and its value. */
vkllm_status sampler_params_validate(const sampler_params *params);

/* True when sampling is greedy (temperature <= SAMPLER_GREEDY_EPS or top_k == 1). */
bool sampler_is_greedy(const sampler_params *params);

/* True when the GPU argmax of the raw logits IS the token this sampler would pick and no
 * logits are needed for logprobs: greedy, no penalty active, logprobs == -1. Then the
 * runner can be asked for argmax ids only (exec_step with logits NULL) and
 * sampler_accept_argmax used instead of sampler_sample. */
bool sampler_argmax_suffices(const sampler_params *params);

/* ---------------------------------------------------------------- RNG state */

typedef struct sampler_state {
    uint64_t s[4]; /* xoshiro256** state; never all zero */
    uint64_t seed; /* the seed it started from (for logs and forks) */
    uint64_t draws;
} sampler_state;

void sampler_state_init(sampler_state *state, uint64_t seed);
/* The seed of child `index` of a request seeded `seed` (n > 1): a splitmix64 mix of both,
 * so children differ from each other and from the parent, deterministically. */
uint64_t sampler_child_seed(uint64_t seed, uint32_t index);
/* Next 64 random bits / a double uniform in [0, 1) (53 bits). */
uint64_t sampler_rng_next(sampler_state *state);
double sampler_rng_uniform(sampler_state *state);

/* ---------------------------------------------------------------- workspace */

/* Scratch for one thread: 21 bytes per vocabulary entry (5.5 MB at 262144). */
typedef struct sampler_workspace sampler_workspace;

vkllm_status sampler_workspace_create(uint32_t max_vocab, sampler_workspace **out);
void sampler_workspace_free(sampler_workspace *ws);

/* ---------------------------------------------------------------- sampling */

typedef struct sampler_result {
    int32_t token;
    float logprob;  /* of `token`, in params->logprobs_mode; 0 when logprobs == -1 */
    uint32_t n_top; /* entries filled below (<= params->logprobs) */
    int32_t top_ids[SAMPLER_MAX_LOGPROBS];
    float top_logprobs[SAMPLER_MAX_LOGPROBS]; /* descending; ties: lower id first */
    uint32_t n_kept;                          /* tokens left after truncation (1 for greedy) */
} sampler_result;

/* Samples one token from `logits` [n_vocab]. history[0..n_history) are the sequence's
 * tokens so far (prompt then generated); history[0..n_prompt) is the prompt. Nothing in
 * `logits` is modified. Errors: n_vocab 0 or above the workspace's max_vocab, a history
 * id out of range (named with its position), invalid params, no finite logit. */
vkllm_status sampler_sample(const sampler_params *params, sampler_state *state,
                            sampler_workspace *ws, const float *logits, uint32_t n_vocab,
                            const int32_t *history, size_t n_history, size_t n_prompt,
                            sampler_result *out);

/* Greedy fast path: fills `out` from a GPU argmax id (valid only when
 * sampler_argmax_suffices(params)); checks 0 <= token < n_vocab. */
vkllm_status sampler_accept_argmax(const sampler_params *params, int32_t token, uint32_t n_vocab,
                                   sampler_result *out);

/* ---------------------------------------------------------------- from GPU candidates */

/* One row's output of k_topk (exec/k_sample.h): the k best logits, sorted, and the row
 * statistics. sum_exp_temp must have been computed with this request's temperature
 * (inv_temperature = 1 / temperature; any finite value for greedy rows). */
typedef struct sampler_candidates {
    const int32_t *ids;  /* [k], value descending, ties lower id first; -1 past the row */
    const float *values; /* [k] */
    uint32_t k;
    float row_max;      /* stats[0] */
    float sum_exp;      /* stats[1]: sum exp(x - max) */
    float sum_exp_temp; /* stats[2]: sum exp((x - max) / T) */
} sampler_candidates;

/* True when candidates may be enough for these params: no penalty active (penalties
 * change logits the candidates were not chosen by), logprobs <= k, top_k <= k. Whether
 * they are enough for one row is only known while sampling: see below. */
bool sampler_candidates_usable(const sampler_params *params, uint32_t k);

/* Samples from the candidates of one row with the same rules as sampler_sample. The kept
 * set must lie inside the candidates: greedy, top_k <= k, or top-p / min-p closing inside
 * them; with nothing truncating, the draw must land inside the candidates' mass (the
 * normalizer is the row's sum_exp_temp). When that fails, *complete = false, `state` is
 * unchanged (no draw is consumed) and the caller samples the full row with sampler_sample
 * (so the same seed gives the same stream either way). The token is then the same as
 * sampler_sample's for closed kept sets; for open ones the distribution is the same but
 * the walk order (sorted here, by id there) differs. Raw logprobs use
 * lse = row_max + log(sum_exp). n_kept is n_vocab when nothing truncates and the
 * candidates do not hold the whole row. Errors: no finite candidate, ids out of range. */
vkllm_status sampler_sample_candidates(const sampler_params *params, sampler_state *state,
                                       const sampler_candidates *candidates, uint32_t n_vocab,
                                       sampler_result *out, bool *complete);

/* The k largest raw log-softmax values of `logits` (beam search feeds these to beam.h):
 * ids[0..*n_out) and logprobs, descending, ties lower id first; *n_out = min(k, finite
 * logits). No workspace: the output arrays are the heap. */
vkllm_status sampler_top_logprobs(const float *logits, uint32_t n_vocab, uint32_t k, int32_t *ids,
                                  float *logprobs, uint32_t *n_out);

#endif
