/* sched_scheduler.c: the step scheduling policy; see sched_scheduler.h for the order of
 * the passes and why. Invariant kept between calls: the running queue is sorted by
 * arrival, so "the latest-arrived running request" is its last item and every request
 * ahead of the one being planned has been planned already. */
#include "sched/sched_scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sched_batch_reset(sched_batch *b) {
    b->count = 0;
    b->n_tokens = 0;
    kv_ops_clear(&b->ops);
    b->n_pool_full = 0;
    b->n_rejected = 0;
    b->n_preempted = 0;
}

void sched_batch_destroy(sched_batch *b) {
    free(b->entries);
    kv_ops_destroy(&b->ops);
    free(b->pool_full);
    free(b->rejected);
    memset(b, 0, sizeof *b);
}

static vkllm_status grow(void **items, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return VKLLM_OK;
    size_t n = *cap ? *cap * 2 : 32;
    while (n < need)
        n *= 2;
    void *p = realloc(*items, n * size);
    if (!p) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched batch of %zu", n);
    *items = p;
    *cap = n;
    return VKLLM_OK;
}

static vkllm_status batch_add(sched_batch *b, sched_seq *seq, uint32_t n_new) {
    VKL_TRY(grow((void **)&b->entries, &b->capacity, b->count + 1, sizeof *b->entries));
    b->entries[b->count++] = (sched_entry){
        .seq = seq, .n_new = n_new, .need_logits = seq->n_computed + n_new == seq->n_tokens};
    b->n_tokens += n_new;
    return VKLLM_OK;
}

uint32_t sched_running_seqs(const sched_scheduler *s) {
    uint32_t n = 0;
    for (size_t i = 0; i < s->running.count; i++)
        n += sched_group_seqs_to_run(s->running.items[i]);
    return n;
}

void sched_release_group_kv(kv_manager *kv, sched_group *g) {
    for (uint32_t i = 0; i < g->n_seqs; i++) {
        sched_seq *q = &g->seqs[i];
        if (q->kv >= 0) kv_manager_free(kv, q->kv);
        q->kv = -1;
        q->n_computed = 0;
    }
}

void sched_unqueue(sched_scheduler *s, sched_group *g) {
    if (!sched_queue_remove(&s->running, g) && !sched_queue_remove(&s->waiting, g))
        sched_queue_remove(&s->swapped, g);
}

/* KV ids of the group's sequences that hold KV; returns the count. */
static size_t group_kv_ids(const sched_group *g, kv_seq_id *ids) {
    size_t n = 0;
    for (uint32_t i = 0; i < g->n_seqs; i++)
        if (g->seqs[i].kv >= 0) ids[n++] = g->seqs[i].kv;
    return n;
}

static vkllm_status preempt(sched_scheduler *s, sched_group *victim, sched_batch *b) {
    sched_queue_remove(&s->running, victim);
    b->n_preempted++;
    kv_seq_id ids_small[16];
    kv_seq_id *ids = victim->n_seqs <= 16 ? ids_small : malloc(victim->n_seqs * sizeof *ids);
    if (!ids) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched preempt");
    size_t n = group_kv_ids(victim, ids);
    bool swapped = false;
    if (s->config.preempt_mode == SCHED_PREEMPT_SWAP && n > 0 &&
        kv_manager_can_swap_out(s->kv, ids, n)) {
        vkllm_status st = kv_manager_swap_out(s->kv, ids, n, &b->ops);
        swapped = st == VKLLM_OK;
    }
    if (ids != ids_small) free(ids);
    if (swapped) {
        victim->state = SCHED_GROUP_SWAPPED;
        s->preemptions_swap++;
        return sched_queue_insert_by_arrival(&s->swapped, victim);
    }
    /* Recompute: the tokens stay on the host; the K/V is rebuilt by a later prefill
     * (full blocks that stay cached come back as prefix hits). */
    sched_release_group_kv(s->kv, victim);
    victim->state = SCHED_GROUP_WAITING;
    s->preemptions_recompute++;
    return sched_queue_push_front(&s->waiting, victim);
}

/* Pass S: swapped requests back in, FCFS. */
static vkllm_status pass_swap_in(sched_scheduler *s, sched_batch *b, uint32_t *running_seqs) {
    while (s->swapped.count) {
        sched_group *g = s->swapped.items[0];
        uint32_t need = sched_group_seqs_to_run(g);
        if (*running_seqs + need > s->config.max_running_seqs) break;
        kv_seq_id ids[g->n_seqs];
        size_t n = group_kv_ids(g, ids);
        if (kv_manager_can_swap_in(s->kv, ids, n) != KV_ALLOC_OK) break;
        if (s->running.count) {
            /* Leave room for one decode block per running sequence, so the request just
             * brought back is not preempted again at once (sum of table sizes: an upper
             * bound of its distinct blocks). */
            size_t blocks = 0;
            for (size_t i = 0; i < n; i++) {
                size_t c;
                kv_manager_block_table(s->kv, ids[i], &c);
                blocks += c;
            }
            if (blocks + *running_seqs + need > kv_manager_num_free_blocks(s->kv)) break;
        }
        VKL_TRY(kv_manager_swap_in(s->kv, ids, n, &b->ops));
        sched_queue_remove(&s->swapped, g);
        g->state = SCHED_GROUP_RUNNING;
        VKL_TRY(sched_queue_insert_by_arrival(&s->running, g));
        *running_seqs += need;
    }
    return VKLLM_OK;
}

static vkllm_status mark_pool_full(sched_scheduler *s, sched_batch *b, sched_seq *q) {
    VKL_TRY(
        grow((void **)&b->pool_full, &b->cap_pool_full, b->n_pool_full + 1, sizeof *b->pool_full));
    kv_manager_free(s->kv, q->kv);
    q->kv = -1;
    b->pool_full[b->n_pool_full++] = q;
    return VKLLM_OK;
}

/* Pass A: KV slots for sampled tokens (preempting when short), then decode entries. */
static vkllm_status pass_decode(sched_scheduler *s, sched_batch *b, uint32_t *budget) {
    for (size_t i = 0; i < s->running.count; i++) {
        sched_group *g = s->running.items[i];
        size_t mark = b->count;
        uint32_t mark_tokens = b->n_tokens, mark_budget = *budget;
        bool gone = false;
        for (uint32_t k = 0; k < g->n_seqs && !gone; k++) {
            sched_seq *q = &g->seqs[k];
            if (q->kv < 0) continue;
            size_t in_kv = kv_manager_seq_num_tokens(s->kv, q->kv);
            size_t pending = q->n_tokens - in_kv;
            if (pending) {
                bool full = false;
                while (!kv_manager_can_append(s->kv, q->kv, pending)) {
                    sched_group *victim = s->running.items[s->running.count - 1];
                    if (victim != g) {
                        VKL_TRY(preempt(s, victim, b));
                        continue;
                    }
                    if (s->running.count == 1) {
                        full = true; /* nothing else to take blocks from */
                    } else {
                        b->count = mark;
                        b->n_tokens = mark_tokens;
                        *budget = mark_budget;
                        VKL_TRY(preempt(s, g, b));
                        gone = true;
                    }
                    break;
                }
                if (gone) break;
                if (full) {
                    VKL_TRY(mark_pool_full(s, b, q));
                    continue;
                }
                VKL_TRY(kv_manager_append(s->kv, q->kv, q->tokens + in_kv, pending, &b->ops, NULL));
            }
            if (q->n_tokens - q->n_computed == 1 && *budget > 0) {
                VKL_TRY(batch_add(b, q, 1));
                (*budget)--;
            }
        }
        if (gone) break; /* g was the last running request */
    }
    return VKLLM_OK;
}

/* Pass B: prefill chunks of running sequences. */
static vkllm_status pass_prefill_running(sched_scheduler *s, sched_batch *b, uint32_t *budget) {
    for (size_t i = 0; i<s->running.count && * budget> 0; i++) {
        sched_group *g = s->running.items[i];
        for (uint32_t k = 0; k<g->n_seqs && * budget> 0; k++) {
            sched_seq *q = &g->seqs[k];
            if (q->kv < 0) continue;
            size_t left = q->n_tokens - q->n_computed;
            if (left <= 1) continue;
            uint32_t chunk = left < *budget ? (uint32_t)left : *budget;
            VKL_TRY(batch_add(b, q, chunk));
            *budget -= chunk;
        }
    }
    return VKLLM_OK;
}

static vkllm_status reject(sched_scheduler *s, sched_batch *b, sched_group *g, vkllm_status status,
                           const char *message) {
    VKL_TRY(grow((void **)&b->rejected, &b->cap_rejected, b->n_rejected + 1, sizeof *b->rejected));
    sched_release_group_kv(s->kv, g);
    sched_queue_remove(&s->waiting, g);
    sched_rejection *r = &b->rejected[b->n_rejected++];
    r->group = g;
    r->status = status;
    snprintf(r->message, sizeof r->message, "request %llu: %s", (unsigned long long)g->id, message);
    return VKLLM_OK;
}

/* Allocates KV for every sequence of g that runs now: all unfinished ones once forked,
 * else sequence 0. On LATER/NEVER, releases what it took and says which. */
static kv_alloc_status allocate_group(sched_scheduler *s, sched_group *g, char *why,
                                      size_t why_len) {
    bool forked = sched_group_forked(g);
    for (uint32_t k = 0; k < g->n_seqs; k++) {
        sched_seq *q = &g->seqs[k];
        if (q->finished || !q->forked || (!forked && k > 0)) continue;
        kv_alloc_status a = kv_manager_can_allocate(s->kv, q->tokens, q->n_tokens, g->cache_salt);
        size_t computed = 0;
        if (a == KV_ALLOC_OK) {
            vkllm_status st = kv_manager_allocate(s->kv, q->tokens, q->n_tokens, g->cache_salt,
                                                  &q->kv, &computed);
            if (st == VKLLM_ERR_TOO_LONG)
                a = KV_ALLOC_NEVER;
            else if (st != VKLLM_OK)
                a = KV_ALLOC_LATER;
        }
        if (a != KV_ALLOC_OK) {
            if (a == KV_ALLOC_NEVER) {
                kv_stats ks;
                kv_manager_stats(s->kv, &ks);
                snprintf(why, why_len,
                         "sequence of %zu tokens can never fit the KV cache (%u blocks of %u "
                         "tokens, %u kept free as watermark)",
                         q->n_tokens, ks.blocks_total, ks.block_size,
                         kv_manager_watermark_blocks(s->kv));
            }
            q->kv = -1;
            sched_release_group_kv(s->kv, g);
            return a;
        }
        q->n_computed = computed;
        if (k == 0 && !g->admitted_once) g->cached_prompt_tokens = (uint32_t)computed;
    }
    g->admitted_once = true;
    return KV_ALLOC_OK;
}

/* Pass C: admit waiting requests in FCFS order. */
static vkllm_status pass_admit(sched_scheduler *s, sched_batch *b, uint32_t *budget,
                               uint32_t running_seqs) {
    while (s->waiting.count && *budget > 0) {
        sched_group *g = s->waiting.items[0];
        uint32_t need = sched_group_seqs_to_run(g);
        if (running_seqs + need > s->config.max_running_seqs) {
            if (s->running.count == 0 && s->swapped.count == 0) {
                /* n larger than the sequence limit: it can never be admitted */
                char msg[160];
                snprintf(msg, sizeof msg, "%u parallel sequences exceed max_running_seqs %u", need,
                         s->config.max_running_seqs);
                VKL_TRY(reject(s, b, g, VKLLM_ERR_TOO_LONG, msg));
                continue;
            }
            break;
        }
        char why[200] = "";
        kv_alloc_status a = allocate_group(s, g, why, sizeof why);
        if (a == KV_ALLOC_LATER && s->running.count == 0 && s->swapped.count == 0) {
            /* Every device block is free (or cached) and it still does not fit. */
            snprintf(why, sizeof why,
                     "%u sequence(s) of %zu tokens need more KV blocks than the %u free blocks "
                     "of an idle pool (%u kept free as watermark)",
                     need, g->seqs[0].n_tokens, kv_manager_num_free_blocks(s->kv),
                     kv_manager_watermark_blocks(s->kv));
            a = KV_ALLOC_NEVER;
        }
        if (a == KV_ALLOC_NEVER) {
            VKL_TRY(reject(s, b, g, VKLLM_ERR_TOO_LONG, why));
            continue;
        }
        if (a == KV_ALLOC_LATER) break;
        sched_queue_remove(&s->waiting, g);
        g->state = SCHED_GROUP_RUNNING;
        VKL_TRY(sched_queue_insert_by_arrival(&s->running, g));
        running_seqs += need;
        for (uint32_t k = 0; k<g->n_seqs && * budget> 0; k++) {
            sched_seq *q = &g->seqs[k];
            if (q->kv < 0) continue;
            size_t left = q->n_tokens - q->n_computed;
            uint32_t chunk = left < *budget ? (uint32_t)left : *budget;
            VKL_TRY(batch_add(b, q, chunk));
            *budget -= chunk;
        }
    }
    return VKLLM_OK;
}

vkllm_status sched_schedule(sched_scheduler *s, sched_batch *b) {
    sched_batch_reset(b);
    uint32_t budget = s->config.max_step_tokens;
    uint32_t running_seqs = sched_running_seqs(s);
    if (s->swapped.count) VKL_TRY(pass_swap_in(s, b, &running_seqs));
    VKL_TRY(pass_decode(s, b, &budget));
    VKL_TRY(pass_prefill_running(s, b, &budget));
    if (b->n_preempted == 0 && s->swapped.count == 0)
        VKL_TRY(pass_admit(s, b, &budget, sched_running_seqs(s)));
    return VKLLM_OK;
}
