/* beam.h: beam search bookkeeping (pure CPU, plain data in and out). The model runs
 * the live beams as sequences; each step the caller hands in, for every live beam, its
 * best candidate next tokens with their log-probabilities (sampler_top_logprobs with
 * k = 2 * width: enough that `width` non-EOS children exist even if every beam's best
 * tokens are EOS), and gets back the next live beams, each naming its parent, so the KV
 * manager forks the parent's blocks for every child and frees parents without children.
 *
 * Scores (Hugging Face / vLLM): score = sum of token logprobs / len ^ length_penalty,
 * len = generated tokens of the hypothesis, its EOS token included (so len >= 1).
 * Live beams of one step all have the same length, so they are ranked by their sum.
 *
 * One step:
 *   - every candidate (parent b, token t, sum_b + logprob) of every live beam is ranked
 *     by sum, descending (ties: lower parent, then lower token);
 *   - an EOS candidate (token in eos_ids, ignore_eos off) becomes a finished hypothesis,
 *     wherever it ranks (vLLM's rule; HF only takes those in the first `width` ranks);
 *   - the best `width` non-EOS candidates become the next live beams, in rank order;
 *   - the pool of finished hypotheses keeps the best `width` by score (a new one enters
 *     only with a strictly better score than the worst kept).
 * The search is done when no live beam is left, when the live beams reach max_tokens
 * (they then join the pool as unfinished hypotheses), or by the early-stopping rule,
 * checked once the pool holds `width` hypotheses (Hugging Face's three modes):
 *   BEAM_EARLY_TRUE      stop at once (as soon as `width` hypotheses finished);
 *   BEAM_EARLY_HEURISTIC HF early_stopping=False: stop when the worst kept score >=
 *                        best live sum / current_len ^ length_penalty (may stop early
 *                        while a longer hypothesis could still win when penalty > 0);
 *   BEAM_EARLY_NEVER     stop only when no continuation can beat the worst kept score:
 *                        the bound is best live sum / max_tokens ^ lp for lp > 0, and
 *                        best live sum / (current_len + 1) ^ lp for lp <= 0 (logprobs are
 *                        <= 0, so sums only fall); the result is then exact for the
 *                        candidates given.
 * When stopped early, live beams are not added to the pool (as HF).
 * Module prefix: beam_. */
#ifndef VKL_BEAM_H
#define VKL_BEAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef enum beam_early_stopping {
    BEAM_EARLY_HEURISTIC = 0, /* HF early_stopping=False (the HF default) */
    BEAM_EARLY_TRUE,
    BEAM_EARLY_NEVER,
} beam_early_stopping;

typedef struct beam_params {
    uint32_t width;       /* W >= 1 */
    float length_penalty; /* alpha, finite; 1 in HF/vLLM by default */
    beam_early_stopping early_stopping;
    uint32_t max_tokens; /* >= 1 generated tokens per hypothesis */
    bool ignore_eos;
    const int32_t *eos_ids; /* copied at create */
    size_t n_eos;
} beam_params;

typedef struct beam_search beam_search;

vkllm_status beam_search_create(const beam_params *params, beam_search **out);
void beam_search_free(beam_search *bs);

/* Live beams now (1 before the first step: the prompt). */
uint32_t beam_search_live(const beam_search *bs);
/* Generated tokens of live beam i (valid until the next step) and their count. */
const int32_t *beam_search_beam_tokens(const beam_search *bs, uint32_t i, uint32_t *len);
double beam_search_beam_sum(const beam_search *bs, uint32_t i);
bool beam_search_done(const beam_search *bs);

typedef struct beam_step {
    uint32_t n_live;        /* live beams after this step (0 when done) */
    const uint32_t *parent; /* [n_live]: index of the previous live beam it extends */
    const int32_t *token;   /* [n_live]: the token it appended */
    bool done;
} beam_step;

/* One step. tokens/logprobs: [beam_search_live()][k], row b for live beam b; entries
 * with a negative token or a non-finite logprob are ignored (padding). The arrays in
 * *out stay valid until the next step. Errors: called after done, k == 0, NULL arrays. */
vkllm_status beam_search_step(beam_search *bs, const int32_t *tokens, const float *logprobs,
                              uint32_t k, beam_step *out);

typedef struct beam_hypothesis {
    const int32_t *tokens; /* generated tokens, the EOS token last when eos */
    uint32_t len;
    double sum_logprob;
    double score;
    bool eos; /* finished by EOS (false: reached max_tokens) */
} beam_hypothesis;

/* The kept hypotheses, best score first (ties: the earlier finished first), at most W.
 * Meaningful once beam_search_done(); valid until the search is freed. */
uint32_t beam_search_results(const beam_search *bs, const beam_hypothesis **out);

/* The score formula above, shared with callers that rank hypotheses themselves. */
double beam_score(double sum_logprob, uint32_t len, float length_penalty);

#endif
