/* sched_plan.h: turns a sched_batch into the runner's exec_step_plan (plain data).
 *
 * The batch's entries are reordered in place so that one-token entries (decode) come
 * first, as step_plan.h requires, keeping the scheduler's order within each part; the
 * logits rows of exec_step then follow the entries with need_logits in that order.
 * Slots and block tables come from the KV manager AFTER every change of this step
 * (appends, allocations, swaps), and block tables are copied, so the plan stays valid
 * while the manager changes later. Module prefix: sched_. */
#ifndef VKL_SCHED_PLAN_H
#define VKL_SCHED_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "exec/step_plan.h"
#include "kv/kv_manager.h"
#include "sched/sched_scheduler.h"

typedef struct sched_plan {
    exec_step_plan plan;
    int32_t *tokens, *positions, *slots;
    size_t cap_tokens;
    exec_seq_plan *seqs;
    int32_t *tables; /* [n_seqs][max_blocks] */
    size_t cap_seqs, cap_tables;
    uint32_t n_logit_rows;
} sched_plan;

vkllm_status sched_plan_build(sched_plan *p, sched_batch *batch, const kv_manager *kv);
void sched_plan_destroy(sched_plan *p);

#endif
