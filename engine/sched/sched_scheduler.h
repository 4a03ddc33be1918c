/* sched_scheduler.h: iteration-level scheduling policy: which sequences run in the next
 * step and how many of their tokens, under a token budget, a limit on running
 * sequences and the free KV blocks. Pure CPU: it drives the KV manager and produces a
 * sched_batch (entries + the kv ops to run before the step); sched_plan.h turns a batch
 * into an exec_step_plan.
 *
 * One call of sched_schedule, in this order:
 *   S. swapped requests come back (FCFS) when their blocks and one decode block per
 *      running sequence fit, and no request waits ahead of them;
 *   A. running requests (arrival order): each sequence's just-sampled token gets a KV
 *      slot (kv_manager_append); when blocks run out the latest-arrived running request
 *      is preempted (recompute: blocks freed, requeued at the waiting front; swap:
 *      blocks copied to host, recompute when host blocks run short). A request alone
 *      in the running queue that still cannot grow has filled the pool: that sequence
 *      ends (length). Then one decode token per sequence with one token left;
 *   B. prefill chunks of running sequences with more than one token left;
 *   C. waiting requests in FCFS order, only when nothing was preempted this step and
 *      nothing is swapped out: allocated (prefix-cache hits skip their tokens) and
 *      given prefill chunks until the budget, the sequence limit or the blocks run out.
 *      The queue head blocks the rest (no overtaking). A request that can never fit
 *      (KV_ALLOC_NEVER, or no room with nothing else holding blocks) is rejected.
 * Module prefix: sched_. */
#ifndef VKL_SCHED_SCHEDULER_H
#define VKL_SCHED_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/kv_manager.h"
#include "sched/sched_engine.h"
#include "sched/sched_group.h"
#include "sched/sched_queue.h"

typedef struct sched_entry {
    sched_seq *seq;
    uint32_t n_new;   /* tokens [seq->n_computed, + n_new) run this step */
    bool need_logits; /* the chunk ends at seq->n_tokens: sample after it */
} sched_entry;

typedef struct sched_rejection {
    sched_group *group; /* removed from every queue, KV released */
    vkllm_status status;
    char message[256];
} sched_rejection;

typedef struct sched_batch {
    sched_entry *entries;
    size_t count, capacity;
    uint32_t n_tokens;
    kv_ops ops;            /* device work to run, in order, before the step */
    sched_seq **pool_full; /* sequences that cannot grow (KV released): end them */
    size_t n_pool_full, cap_pool_full;
    sched_rejection *rejected;
    size_t n_rejected, cap_rejected;
    uint32_t n_preempted;
} sched_batch;

typedef struct sched_scheduler {
    kv_manager *kv;
    sched_config config; /* resolved: no zeros left */
    sched_queue waiting, running, swapped;
    uint64_t preemptions_recompute, preemptions_swap;
} sched_scheduler;

void sched_batch_reset(sched_batch *batch);
void sched_batch_destroy(sched_batch *batch);

vkllm_status sched_schedule(sched_scheduler *s, sched_batch *batch);

/* Sequences of the running queue (unfinished; all n of an unforked group). */
uint32_t sched_running_seqs(const sched_scheduler *s);

/* Releases every KV sequence of the group (device or host) and marks them without KV. */
void sched_release_group_kv(kv_manager *kv, sched_group *g);

/* Removes the group from whichever queue holds it. */
void sched_unqueue(sched_scheduler *s, sched_group *g);

#endif
