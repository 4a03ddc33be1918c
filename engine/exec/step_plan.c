/* step_plan.c: validation and small queries of an exec_step_plan (see step_plan.h). */
#include "step_plan.h"

vkllm_status exec_plan_validate(const exec_step_plan *plan, uint32_t block_size,
                                uint32_t num_blocks) {
    if (plan->n_tokens == 0 || plan->n_seqs == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "step plan: empty (%u tokens, %u sequences)",
                        plan->n_tokens, plan->n_seqs);
    uint32_t next_token = 0;
    bool seen_prefill = false;
    for (uint32_t s = 0; s < plan->n_seqs; s++) {
        const exec_seq_plan *seq = &plan->seqs[s];
        if (seq->n_new == 0 || seq->first_token != next_token)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "step plan: sequence %u covers tokens [%u, +%u) but %u was expected "
                            "next",
                            s, seq->first_token, seq->n_new, next_token);
        if (seq->n_new > 1)
            seen_prefill = true;
        else if (seen_prefill)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "step plan: decode sequence %u follows a prefill chunk", s);
        if (seq->context_len < seq->n_new)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "step plan: sequence %u has context %u < %u new tokens", s,
                            seq->context_len, seq->n_new);
        uint64_t blocks_needed = ((uint64_t)seq->context_len + block_size - 1) / block_size;
        if (seq->n_blocks < blocks_needed)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "step plan: sequence %u needs %llu blocks for %u tokens, table has %u",
                            s, (unsigned long long)blocks_needed, seq->context_len, seq->n_blocks);
        for (uint64_t b = 0; b < blocks_needed; b++)
            if (seq->block_table[b] < 0 || (uint32_t)seq->block_table[b] >= num_blocks)
                return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                                "step plan: sequence %u block_table[%llu] = %d outside [0, %u)", s,
                                (unsigned long long)b, seq->block_table[b], num_blocks);
        for (uint32_t i = 0; i < seq->n_new; i++) {
            uint32_t t = seq->first_token + i;
            int32_t pos = (int32_t)(seq->context_len - seq->n_new + i);
            if (plan->positions[t] != pos)
                return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                                "step plan: token %u of sequence %u has position %d, expected %d",
                                t, s, plan->positions[t], pos);
            int64_t expected_slot =
                (int64_t)seq->block_table[pos / (int32_t)block_size] * block_size +
                pos % (int32_t)block_size;
            if (plan->slots[t] != expected_slot)
                return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                                "step plan: token %u of sequence %u has slot %d, its block table "
                                "says %lld",
                                t, s, plan->slots[t], (long long)expected_slot);
        }
        next_token += seq->n_new;
    }
    if (next_token != plan->n_tokens)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "step plan: sequences cover %u tokens, plan has %u", next_token,
                        plan->n_tokens);
    return VKLLM_OK;
}

uint32_t exec_plan_decode_count(const exec_step_plan *plan) {
    uint32_t n = 0;
    while (n < plan->n_seqs && plan->seqs[n].n_new == 1)
        n++;
    return n;
}

uint32_t exec_plan_logit_rows(const exec_step_plan *plan) {
    uint32_t n = 0;
    for (uint32_t s = 0; s < plan->n_seqs; s++)
        n += plan->seqs[s].need_logits;
    return n;
}
