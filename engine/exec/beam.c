/* beam.c: beam search bookkeeping (see beam.h for the rules).
 *
 * Invariants: live beams all have cur_len tokens, stored in rows of `live_tokens`
 * ([width][max_tokens]); the pool is sorted by score descending (ties by insertion
 * order) and each of its hypotheses owns one row of `pool_tokens`. */
#include "exec/beam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct beam_candidate {
    double sum;
    uint32_t parent;
    int32_t token;
} beam_candidate;

struct beam_search {
    beam_params p;
    int32_t *eos;
    uint32_t n_live, cur_len;
    int32_t *live_tokens, *next_tokens; /* [width][max_tokens] */
    double *live_sum, *next_sum;        /* [width] */
    uint32_t *parent;                   /* [width] */
    int32_t *token;                     /* [width] */
    beam_candidate *cands;
    size_t cand_cap;
    beam_hypothesis *pool; /* [width], sorted */
    int32_t *pool_tokens;  /* [width][max_tokens] */
    uint32_t n_pool;
    bool done;
};

double beam_score(double sum_logprob, uint32_t len, float length_penalty) {
    if (length_penalty == 0.0f) return sum_logprob;
    return sum_logprob / pow((double)(len ? len : 1), (double)length_penalty);
}

vkllm_status beam_search_create(const beam_params *p, beam_search **out) {
    *out = NULL;
    if (!p) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "beam search: NULL params");
    if (p->width < 1) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "beam search: width is 0");
    if (p->max_tokens < 1)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "beam search: max_tokens is 0");
    if (!isfinite(p->length_penalty))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "beam search: length_penalty %g not finite",
                        (double)p->length_penalty);
    if (p->early_stopping != BEAM_EARLY_HEURISTIC && p->early_stopping != BEAM_EARLY_TRUE &&
        p->early_stopping != BEAM_EARLY_NEVER)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "beam search: early_stopping %d unknown",
                        (int)p->early_stopping);
    if (p->n_eos && !p->eos_ids)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "beam search: eos_ids NULL with n_eos %zu",
                        p->n_eos);
    if ((uint64_t)p->width * p->max_tokens > (1ull << 28))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "beam search: width %u x max_tokens %u is too large", p->width,
                        p->max_tokens);
    beam_search *bs = calloc(1, sizeof *bs);
    if (!bs) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "beam search");
    bs->p = *p;
    size_t w = p->width, cells = w * p->max_tokens;
    bs->eos = malloc((p->n_eos ? p->n_eos : 1) * sizeof(int32_t));
    bs->live_tokens = malloc(cells * sizeof(int32_t));
    bs->next_tokens = malloc(cells * sizeof(int32_t));
    bs->pool_tokens = malloc(cells * sizeof(int32_t));
    bs->live_sum = calloc(w, sizeof(double));
    bs->next_sum = calloc(w, sizeof(double));
    bs->parent = calloc(w, sizeof(uint32_t));
    bs->token = calloc(w, sizeof(int32_t));
    bs->pool = calloc(w, sizeof(beam_hypothesis));
    if (!bs->eos || !bs->live_tokens || !bs->next_tokens || !bs->pool_tokens || !bs->live_sum ||
        !bs->next_sum || !bs->parent || !bs->token || !bs->pool) {
        beam_search_free(bs);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "beam search: width %u, max_tokens %u",
                        p->width, p->max_tokens);
    }
    if (p->n_eos) memcpy(bs->eos, p->eos_ids, p->n_eos * sizeof(int32_t));
    bs->p.eos_ids = bs->eos;
    bs->n_live = 1; /* the prompt */
    *out = bs;
    return VKLLM_OK;
}

void beam_search_free(beam_search *bs) {
    if (!bs) return;
    free(bs->eos);
    free(bs->live_tokens);
    free(bs->next_tokens);
    free(bs->pool_tokens);
    free(bs->live_sum);
    free(bs->next_sum);
    free(bs->parent);
    free(bs->token);
    free(bs->cands);
    free(bs->pool);
    free(bs);
}

uint32_t beam_search_live(const beam_search *bs) {
    return bs->done ? 0 : bs->n_live;
}
bool beam_search_done(const beam_search *bs) {
    return bs->done;
}

const int32_t *beam_search_beam_tokens(const beam_search *bs, uint32_t i, uint32_t *len) {
    *len = 0;
    if (i >= bs->n_live) return NULL;
    *len = bs->cur_len;
    return bs->live_tokens + (size_t)i * bs->p.max_tokens;
}

double beam_search_beam_sum(const beam_search *bs, uint32_t i) {
    return i < bs->n_live ? bs->live_sum[i] : -INFINITY;
}

static bool is_eos(const beam_search *bs, int32_t token) {
    if (bs->p.ignore_eos) return false;
    for (size_t i = 0; i < bs->p.n_eos; i++)
        if (bs->eos[i] == token) return true;
    return false;
}

static int compare_candidates(const void *a, const void *b) {
    const beam_candidate *x = a, *y = b;
    if (x->sum != y->sum) return x->sum > y->sum ? -1 : 1;
    if (x->parent != y->parent) return x->parent < y->parent ? -1 : 1;
    return (x->token > y->token) - (x->token < y->token);
}

/* Adds a hypothesis: prefix (len - 1 tokens, or len when last < 0) + last. */
static void pool_add(beam_search *bs, const int32_t *prefix, uint32_t prefix_len, int32_t last,
                     double sum, bool eos) {
    uint32_t len = prefix_len + (last >= 0 ? 1 : 0);
    double score = beam_score(sum, len, bs->p.length_penalty);
    uint32_t w = bs->p.width;
    int32_t *row;
    if (bs->n_pool < w) {
        row = bs->pool_tokens + (size_t)bs->n_pool * bs->p.max_tokens;
        bs->n_pool++;
    } else {
        if (!(score > bs->pool[w - 1].score)) return;
        row = (int32_t *)bs->pool[w - 1].tokens; /* the worst's row is reused */
    }
    memcpy(row, prefix, prefix_len * sizeof(int32_t));
    if (last >= 0) row[prefix_len] = last;
    /* insert before the first strictly worse; the slot at n_pool - 1 is free */
    uint32_t pos = bs->n_pool - 1;
    while (pos > 0 && bs->pool[pos - 1].score < score) {
        bs->pool[pos] = bs->pool[pos - 1];
        pos--;
    }
    bs->pool[pos] = (beam_hypothesis){
        .tokens = row, .len = len, .sum_logprob = sum, .score = score, .eos = eos};
}

static bool early_stop(const beam_search *bs, uint32_t new_len) {
    if (bs->n_pool < bs->p.width) return false;
    double worst = bs->pool[bs->n_pool - 1].score;
    double best_sum = bs->next_sum[0]; /* live beams are in rank order */
    double lp = bs->p.length_penalty;
    switch (bs->p.early_stopping) {
    case BEAM_EARLY_TRUE:
        return true;
    case BEAM_EARLY_HEURISTIC:
        return worst >= beam_score(best_sum, new_len, (float)lp);
    case BEAM_EARLY_NEVER: {
        uint32_t len = lp > 0.0 ? bs->p.max_tokens : new_len + 1;
        return worst >= beam_score(best_sum, len, (float)lp);
    }
    }
    return false;
}

vkllm_status beam_search_step(beam_search *bs, const int32_t *tokens, const float *logprobs,
                              uint32_t k, beam_step *out) {
    *out = (beam_step){.n_live = 0, .parent = bs->parent, .token = bs->token, .done = bs->done};
    if (bs->done) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "beam search: step after done");
    if (k == 0 || !tokens || !logprobs)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "beam search: step needs k >= 1 candidates per beam and both arrays");
    size_t n = (size_t)bs->n_live * k;
    if (n > bs->cand_cap) {
        beam_candidate *c = realloc(bs->cands, n * sizeof *c);
        if (!c) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "beam search: %zu candidates", n);
        bs->cands = c;
        bs->cand_cap = n;
    }
    size_t nc = 0;
    for (uint32_t b = 0; b < bs->n_live; b++) {
        for (uint32_t j = 0; j < k; j++) {
            int32_t t = tokens[(size_t)b * k + j];
            float lp = logprobs[(size_t)b * k + j];
            if (t < 0 || !isfinite(lp)) continue;
            bs->cands[nc++] =
                (beam_candidate){.sum = bs->live_sum[b] + lp, .parent = b, .token = t};
        }
    }
    qsort(bs->cands, nc, sizeof *bs->cands, compare_candidates);

    const uint32_t w = bs->p.width, max = bs->p.max_tokens, new_len = bs->cur_len + 1;
    uint32_t n_next = 0;
    for (size_t c = 0; c < nc; c++) {
        const beam_candidate *cand = &bs->cands[c];
        const int32_t *prefix = bs->live_tokens + (size_t)cand->parent * max;
        if (is_eos(bs, cand->token)) {
            pool_add(bs, prefix, bs->cur_len, cand->token, cand->sum, true);
        } else if (n_next < w) {
            int32_t *row = bs->next_tokens + (size_t)n_next * max;
            memcpy(row, prefix, bs->cur_len * sizeof(int32_t));
            row[bs->cur_len] = cand->token;
            bs->next_sum[n_next] = cand->sum;
            bs->parent[n_next] = cand->parent;
            bs->token[n_next] = cand->token;
            n_next++;
        }
    }

    bool done = n_next == 0;
    if (!done && new_len >= max) {
        for (uint32_t i = 0; i < n_next; i++)
            pool_add(bs, bs->next_tokens + (size_t)i * max, new_len, -1, bs->next_sum[i], false);
        done = true;
    }
    if (!done) done = early_stop(bs, new_len);

    int32_t *t = bs->live_tokens;
    bs->live_tokens = bs->next_tokens;
    bs->next_tokens = t;
    double *s = bs->live_sum;
    bs->live_sum = bs->next_sum;
    bs->next_sum = s;
    bs->n_live = done ? 0 : n_next;
    bs->cur_len = new_len;
    bs->done = done;
    *out =
        (beam_step){.n_live = bs->n_live, .parent = bs->parent, .token = bs->token, .done = done};
    return VKLLM_OK;
}

uint32_t beam_search_results(const beam_search *bs, const beam_hypothesis **out) {
    *out = bs->pool;
    return bs->n_pool;
}
