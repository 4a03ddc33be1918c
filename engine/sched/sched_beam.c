/* sched_beam.c: beam search requests in the engine core; see sched_beam.h.
 *
 * Invariants: cand_ids/cand_lp hold [width][k] entries, row i valid when has_cands[i];
 * rows past a beam's finite logits are padded with token -1 (beam.h ignores them).
 * Every slot of the group owns one token buffer at all times (slots are rearranged by
 * moving buffers, never by dropping one), so sched_group_free frees each exactly once. */
#include "sched/sched_beam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exec/sampler.h"
#include "sched/sched_group.h"

struct sched_beam {
    beam_search *bs;
    uint32_t width, k;
    float length_penalty;
    int32_t *cand_ids;        /* [width][k] */
    float *cand_lp;           /* [width][k] */
    bool *has_cands;          /* [width] */
    beam_hypothesis *results; /* [2 * width] */
};

vkllm_status sched_beam_create(uint32_t width, float length_penalty,
                               beam_early_stopping early_stopping, uint32_t max_tokens,
                               const int32_t *eos_ids, size_t n_eos, sched_beam **out) {
    *out = NULL;
    sched_beam *b = calloc(1, sizeof *b);
    if (!b) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "beam request");
    beam_params p = {.width = width,
                     .length_penalty = length_penalty,
                     .early_stopping = early_stopping,
                     .max_tokens = max_tokens,
                     .ignore_eos = false, /* the caller left EOG ids out instead */
                     .eos_ids = eos_ids,
                     .n_eos = n_eos};
    vkllm_status st = beam_search_create(&p, &b->bs);
    if (st != VKLLM_OK) {
        free(b);
        return st;
    }
    b->width = width;
    b->length_penalty = length_penalty;
    /* beam.h: 2W candidates per beam leave W non-EOS children even if every beam's best
     * tokens are EOS. */
    b->k = 2 * width;
    b->cand_ids = malloc((size_t)width * b->k * sizeof *b->cand_ids);
    b->cand_lp = malloc((size_t)width * b->k * sizeof *b->cand_lp);
    b->has_cands = calloc(width, sizeof *b->has_cands);
    b->results = calloc(2 * (size_t)width, sizeof *b->results);
    if (!b->cand_ids || !b->cand_lp || !b->has_cands || !b->results) {
        sched_beam_free(b);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "beam request of width %u", width);
    }
    *out = b;
    return VKLLM_OK;
}

void sched_beam_free(sched_beam *b) {
    if (!b) return;
    beam_search_free(b->bs);
    free(b->cand_ids);
    free(b->cand_lp);
    free(b->has_cands);
    free(b->results);
    free(b);
}

uint32_t sched_beam_live(const sched_beam *b) {
    return beam_search_live(b->bs);
}

vkllm_status sched_beam_take_row(sched_beam *b, uint32_t slot, const float *row, uint32_t n_vocab,
                                 bool *ready) {
    *ready = false;
    uint32_t live = beam_search_live(b->bs);
    if (slot >= live)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "beam search: logits for slot %u, but only %u beams are live", slot, live);
    int32_t *ids = b->cand_ids + (size_t)slot * b->k;
    float *lp = b->cand_lp + (size_t)slot * b->k;
    uint32_t k = b->k < n_vocab ? b->k : n_vocab, n = 0;
    VKL_TRY(sampler_top_logprobs(row, n_vocab, k, ids, lp, &n));
    for (uint32_t j = n; j < b->k; j++) {
        ids[j] = -1;
        lp[j] = -INFINITY;
    }
    b->has_cands[slot] = true;
    for (uint32_t i = 0; i < live; i++)
        if (!b->has_cands[i]) return VKLLM_OK;
    *ready = true;
    return VKLLM_OK;
}

/* The part of a slot that moves with its beam. */
typedef struct beam_payload {
    kv_seq_id kv;
    int32_t *tokens;
    size_t n_tokens, capacity, n_computed;
    uint32_t generated;
} beam_payload;

static beam_payload take_payload(const sched_seq *q) {
    return (beam_payload){.kv = q->kv,
                          .tokens = q->tokens,
                          .n_tokens = q->n_tokens,
                          .capacity = q->capacity,
                          .n_computed = q->n_computed,
                          .generated = q->generated};
}

static void put_payload(sched_seq *q, const beam_payload *p) {
    q->kv = p->kv;
    q->tokens = p->tokens;
    q->n_tokens = p->n_tokens;
    q->capacity = p->capacity;
    q->n_computed = p->n_computed;
    q->generated = p->generated;
}

/* Grows a payload's buffer to hold `need` tokens (on failure it is unchanged). */
static vkllm_status reserve(beam_payload *p, size_t need) {
    if (p->capacity >= need) return VKLLM_OK;
    size_t cap = p->capacity ? p->capacity : 64;
    while (cap < need)
        cap *= 2;
    int32_t *t = realloc(p->tokens, cap * sizeof *t);
    if (!t) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "beam search: %zu tokens", cap);
    p->tokens = t;
    p->capacity = cap;
    return VKLLM_OK;
}

/* Error path: gives every slot back its own buffer and KV sequence (spare[] lists the
 * idle and childless slots' payloads in slot order; their buffers may have grown). */
static void restore(sched_group *g, uint32_t n_old, const bool *used, const beam_payload *old,
                    const beam_payload *spare) {
    for (uint32_t i = 0, s = 0; i < g->n_seqs; i++) {
        if (i < n_old && used[i]) {
            put_payload(&g->seqs[i], &old[i]);
        } else {
            beam_payload p = spare[s++];
            p.kv = old[i].kv;
            put_payload(&g->seqs[i], &p);
        }
    }
}

/* Moves old live beams into the new order (see sched_beam.h). Phases: reserve host
 * memory (may fail: nothing changed), fork KV (may fail: forks undone), then commit
 * (cannot fail). */
static vkllm_status rearrange(sched_beam *b, sched_group *g, kv_manager *kv, uint32_t n_old,
                              const beam_step *step) {
    const uint32_t w = b->width;
    beam_payload old[w], next[w], spare[w];
    bool used[w], forked[w];
    uint32_t n_spare = 0;
    memset(used, 0, sizeof used);
    memset(forked, 0, sizeof forked);
    for (uint32_t i = 0; i < w; i++)
        old[i] = take_payload(&g->seqs[i]);
    for (uint32_t j = 0; j < step->n_live; j++)
        used[step->parent[j]] = true;
    for (uint32_t i = 0; i < w; i++)
        if (i >= n_old || !used[i]) spare[n_spare++] = old[i];

    /* 1. host memory: taken-over buffers and fork targets get room for one more token */
    uint32_t next_spare = 0;
    bool taken[w];
    memset(taken, 0, sizeof taken);
    vkllm_status st = VKLLM_OK;
    for (uint32_t j = 0; j < step->n_live && st == VKLLM_OK; j++) {
        uint32_t p = step->parent[j];
        if (!taken[p]) {
            taken[p] = true;
            next[j] = old[p];
        } else {
            forked[j] = true;
            next[j] = spare[next_spare++];
            next[j].kv = -1;
        }
        st = reserve(&next[j], old[p].n_tokens + 1);
        /* reserve may have moved a buffer: write it back where the group owns it */
        if (!forked[j])
            old[p] = next[j];
        else
            spare[next_spare - 1] = next[j];
    }
    if (st != VKLLM_OK) {
        restore(g, n_old, used, old, spare);
        return st;
    }
    /* 2. KV forks */
    for (uint32_t j = 0; j < step->n_live; j++) {
        if (!forked[j]) continue;
        st = kv_manager_fork(kv, old[step->parent[j]].kv, &next[j].kv);
        if (st != VKLLM_OK) {
            for (uint32_t i = 0; i < j; i++)
                if (forked[i]) kv_manager_free(kv, next[i].kv);
            restore(g, n_old, used, old, spare);
            return st;
        }
        const beam_payload *par = &old[step->parent[j]];
        memcpy(next[j].tokens, par->tokens, par->n_tokens * sizeof *par->tokens);
        next[j].n_tokens = par->n_tokens;
        next[j].n_computed = par->n_computed;
        next[j].generated = par->generated;
    }
    /* 3. commit: free childless parents, place the new beams, then the idle buffers */
    for (uint32_t i = 0; i < n_old; i++)
        if (!used[i] && old[i].kv >= 0) kv_manager_free(kv, old[i].kv);
    uint32_t s = next_spare;
    for (uint32_t i = 0; i < w; i++) {
        sched_seq *q = &g->seqs[i];
        q->forked = true;
        if (i < step->n_live) {
            put_payload(q, &next[i]);
            q->tokens[q->n_tokens++] = step->token[i]; /* room reserved above */
            q->generated++;
            q->finished = false;
        } else {
            beam_payload idle = spare[s++];
            idle.kv = -1;
            idle.n_tokens = idle.n_computed = 0;
            idle.generated = 0;
            put_payload(q, &idle);
            q->finished = true;
        }
    }
    g->n_unfinished = step->n_live;
    return VKLLM_OK;
}

vkllm_status sched_beam_advance(sched_beam *b, sched_group *g, kv_manager *kv, bool *done) {
    *done = false;
    uint32_t n_old = beam_search_live(b->bs);
    beam_step step;
    VKL_TRY(beam_search_step(b->bs, b->cand_ids, b->cand_lp, b->k, &step));
    memset(b->has_cands, 0, b->width * sizeof *b->has_cands);
    if (step.done) {
        for (uint32_t i = 0; i < g->n_seqs; i++) {
            sched_seq *q = &g->seqs[i];
            if (q->kv >= 0) kv_manager_free(kv, q->kv);
            q->kv = -1;
            q->n_computed = 0;
        }
        *done = true;
        return VKLLM_OK;
    }
    return rearrange(b, g, kv, n_old, &step);
}

static int by_score(const void *x, const void *y) {
    const beam_hypothesis *a = x, *b = y;
    return (a->score < b->score) - (a->score > b->score);
}

uint32_t sched_beam_results(sched_beam *b, bool include_live, uint32_t max,
                            const beam_hypothesis **out) {
    const beam_hypothesis *pool;
    uint32_t n = beam_search_results(b->bs, &pool);
    memcpy(b->results, pool, n * sizeof *pool);
    if (include_live && !beam_search_done(b->bs)) {
        for (uint32_t i = 0; i < beam_search_live(b->bs); i++) {
            uint32_t len;
            const int32_t *tokens = beam_search_beam_tokens(b->bs, i, &len);
            if (len == 0) continue; /* still the prompt: nothing generated */
            double sum = beam_search_beam_sum(b->bs, i);
            b->results[n++] = (beam_hypothesis){.tokens = tokens,
                                                .len = len,
                                                .sum_logprob = sum,
                                                .score = beam_score(sum, len, b->length_penalty),
                                                .eos = false};
        }
        /* stable enough: qsort's order among equal scores is unspecified, but equal
         * scores of distinct hypotheses only happen on exact ties */
        qsort(b->results, n, sizeof *b->results, by_score);
    }
    *out = b->results;
    return n < max ? n : max;
}
