/* step_plan.h: the plan of one model step, as plain data.
 *
 * The scheduler decides which sequences run and how many of their tokens; the KV
 * manager decides where each new token's K/V goes (its slot) and which blocks a
 * sequence reads (its block table). The plan carries exactly that to the runner,
 * which records the whole step into one command buffer.
 *
 * Invariants (checked by exec_plan_validate):
 *  - sequences with n_new == 1 ("decode" sequences) come first, then sequences
 *    with n_new > 1 ("prefill" chunks), so the decode queries form one block;
 *  - the new tokens of sequence s are tokens[seqs[s].first_token ..
 *    first_token + n_new - 1], in order, and sequences' ranges tile [0, n_tokens);
 *  - positions of those tokens are context_len - n_new .. context_len - 1;
 *  - slots[i] is the KV slot (block_id * block_size + offset) of token i, and it
 *    lies in the block that seqs[s].block_table maps its position to;
 *  - block_table has at least ceil(context_len / block_size) entries. */
#ifndef VKL_STEP_PLAN_H
#define VKL_STEP_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

typedef struct exec_seq_plan {
    uint32_t first_token;       /* index of its first new token in the step's tokens */
    uint32_t n_new;             /* new tokens in this step: 1 for decode, a chunk for prefill */
    uint32_t context_len;       /* tokens in the cache once this step has run */
    const int32_t *block_table; /* physical block of each logical block */
    uint32_t n_blocks;          /* entries in block_table */
    bool need_logits;           /* logits of its last new token are wanted */
} exec_seq_plan;

typedef struct exec_step_plan {
    uint32_t n_tokens;
    const int32_t *tokens;    /* [n_tokens] token ids */
    const int32_t *positions; /* [n_tokens] */
    const int32_t *slots;     /* [n_tokens] KV slots */
    uint32_t n_seqs;
    const exec_seq_plan *seqs; /* [n_seqs], decode sequences first */
} exec_step_plan;

/* Checks the invariants above for a cache of `num_blocks` blocks of
 * `block_size` tokens; the message names the first broken one. */
vkllm_status exec_plan_validate(const exec_step_plan *plan, uint32_t block_size,
                                uint32_t num_blocks);

/* Number of decode sequences (the leading run of n_new == 1) and of rows that
 * need logits. */
uint32_t exec_plan_decode_count(const exec_step_plan *plan);
uint32_t exec_plan_logit_rows(const exec_step_plan *plan);

#endif
