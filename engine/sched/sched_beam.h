/* sched_beam.h: beam search requests in the engine core (vLLM-style). Owns the beam
 * state of one request (exec/beam.h's bookkeeping plus each live beam's candidates of
 * the current step) and the rearrangement of the request's sequences between steps.
 *
 * A beam request of width W is a group of W sequence slots (sched_group.h). Slot i holds
 * live beam i (beam.h's order) while i < live beams; the other slots are idle: finished,
 * no KV, their token buffers kept for later forks. The group keeps W scheduler seats for
 * its whole life (sched_group_seqs_to_run), so the live count may vary without ever
 * exceeding max_running_seqs.
 *
 * Flow: slot 0 prefills the prompt like any request. Each time a live beam's logits row
 * arrives, its top 2W raw log-softmax candidates (sampler_top_logprobs) are kept; once
 * every live beam has its candidates (beams of one request may run in different steps
 * when the step's token budget runs out), one beam_search_step ranks them and the slots
 * are rearranged: the first child of a parent takes over the parent's KV sequence,
 * further children kv_manager_fork it (the shared partly filled last block is copied on
 * the next append, as for n > 1), parents without children are freed, and each new beam
 * gets its chosen token (its KV slot is appended when the next step is planned).
 *
 * Scores and stopping are beam.h's (sum of logprobs / len ^ length_penalty; early
 * stopping per sched_request.early_stopping). Ranking uses the raw logits: temperature,
 * top-k/p, min-p, penalties and the seed do not apply. The end-of-sequence set is the
 * tokenizer's end-of-generation tokens (unless ignore_eos) plus stop_token_ids.
 * Module prefix: sched_. */
#ifndef VKL_SCHED_BEAM_H
#define VKL_SCHED_BEAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "exec/beam.h"
#include "kv/kv_manager.h"

typedef struct sched_group sched_group;
typedef struct sched_beam sched_beam;

/* width >= 1; max_tokens already clamped to the context; eos ids copied. */
vkllm_status sched_beam_create(uint32_t width, float length_penalty,
                               beam_early_stopping early_stopping, uint32_t max_tokens,
                               const int32_t *eos_ids, size_t n_eos, sched_beam **out);
void sched_beam_free(sched_beam *beam);

/* Live beams now (1 before the first step: the prompt in slot 0). */
uint32_t sched_beam_live(const sched_beam *beam);

/* The logits row of live beam `slot` (its last token's): keeps its candidates. Sets
 * *ready when every live beam now has its candidates for this step. */
vkllm_status sched_beam_take_row(sched_beam *beam, uint32_t slot, const float *row,
                                 uint32_t n_vocab, bool *ready);

/* Runs the step (all live beams ready) and rearranges g's slots and KV sequences as
 * described above. On *done, every slot's KV is released and the search results are
 * final. On error, g's slots and KV are as before the call. */
vkllm_status sched_beam_advance(sched_beam *beam, sched_group *g, kv_manager *kv, bool *done);

/* The best hypotheses, best first, at most `max` (the request's n). With include_live
 * (the search was cut short: KV pool full), the live beams join as unfinished
 * hypotheses scored at their current length. Valid until the beam is freed. */
uint32_t sched_beam_results(sched_beam *beam, bool include_live, uint32_t max,
                            const beam_hypothesis **out);

#endif
