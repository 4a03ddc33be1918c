/* sched_plan.c: a sched_batch as an exec_step_plan; see sched_plan.h. */
#include "sched/sched_plan.h"

#include <stdlib.h>
#include <string.h>

static vkllm_status ensure(void **items, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return VKLLM_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*items, n * size);
    if (!q) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched plan: %zu entries", n);
    *items = q;
    *cap = n;
    return VKLLM_OK;
}

/* Stable partition: n_new == 1 first. */
static vkllm_status decode_first(sched_batch *b) {
    sched_entry small[64];
    sched_entry *tmp = b->count <= 64 ? small : malloc(b->count * sizeof *tmp);
    if (!tmp) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched plan: reorder");
    size_t n = 0;
    for (size_t i = 0; i < b->count; i++)
        if (b->entries[i].n_new == 1) tmp[n++] = b->entries[i];
    for (size_t i = 0; i < b->count; i++)
        if (b->entries[i].n_new != 1) tmp[n++] = b->entries[i];
    memcpy(b->entries, tmp, b->count * sizeof *tmp);
    if (tmp != small) free(tmp);
    return VKLLM_OK;
}

vkllm_status sched_plan_build(sched_plan *p, sched_batch *b, const kv_manager *kv) {
    VKL_TRY(decode_first(b));
    size_t cap_tokens = p->cap_tokens, cap_t2 = p->cap_tokens, cap_t3 = p->cap_tokens;
    VKL_TRY(ensure((void **)&p->tokens, &cap_tokens, b->n_tokens, sizeof(int32_t)));
    VKL_TRY(ensure((void **)&p->positions, &cap_t2, b->n_tokens, sizeof(int32_t)));
    VKL_TRY(ensure((void **)&p->slots, &cap_t3, b->n_tokens, sizeof(int32_t)));
    p->cap_tokens = cap_tokens;
    VKL_TRY(ensure((void **)&p->seqs, &p->cap_seqs, b->count, sizeof *p->seqs));
    size_t n_table = 0;
    for (size_t i = 0; i < b->count; i++) {
        size_t c;
        kv_manager_block_table(kv, b->entries[i].seq->kv, &c);
        n_table += c;
    }
    VKL_TRY(ensure((void **)&p->tables, &p->cap_tables, n_table ? n_table : 1, sizeof(int32_t)));

    uint32_t t = 0;
    size_t table_at = 0;
    p->n_logit_rows = 0;
    for (size_t i = 0; i < b->count; i++) {
        const sched_entry *e = &b->entries[i];
        const sched_seq *q = e->seq;
        for (uint32_t j = 0; j < e->n_new; j++) {
            p->tokens[t + j] = q->tokens[q->n_computed + j];
            p->positions[t + j] = (int32_t)(q->n_computed + j);
        }
        VKL_TRY(kv_manager_slots(kv, q->kv, q->n_computed, e->n_new, p->slots + t));
        size_t c;
        const int32_t *table = kv_manager_block_table(kv, q->kv, &c);
        memcpy(p->tables + table_at, table, c * sizeof(int32_t));
        p->seqs[i] = (exec_seq_plan){.first_token = t,
                                     .n_new = e->n_new,
                                     .context_len = (uint32_t)(q->n_computed + e->n_new),
                                     .block_table = p->tables + table_at,
                                     .n_blocks = (uint32_t)c,
                                     .need_logits = e->need_logits};
        table_at += c;
        t += e->n_new;
        p->n_logit_rows += e->need_logits;
    }
    p->plan = (exec_step_plan){.n_tokens = t,
                               .tokens = p->tokens,
                               .positions = p->positions,
                               .slots = p->slots,
                               .n_seqs = (uint32_t)b->count,
                               .seqs = p->seqs};
    return VKLLM_OK;
}

void sched_plan_destroy(sched_plan *p) {
    free(p->tokens);
    free(p->positions);
    free(p->slots);
    free(p->seqs);
    free(p->tables);
    memset(p, 0, sizeof *p);
}
