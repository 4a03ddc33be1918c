/* test_beam.c: engine/exec/beam.c on hand-built toy models: a fixed table of next-token
 * logprobs per prefix (derived from a seeded hash of the prefix). The expected best
 * hypotheses come from brute-force enumeration of every possible output; when the beam
 * is wide enough to hold every live prefix and early stopping is NEVER, beam search must
 * return exactly the brute-force top W, for length penalties 0, 1 and -0.5. Also: parent
 * / token bookkeeping against the stored beams, beam beating greedy, the early-stopping
 * modes, ignore_eos and the error paths. */
// links: exec
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "exec/beam.h"

#define V 3 /* tokens 0, 1 and EOS = 2 */
#define EOS 2
#define MAXL 8

/* log-softmax of 3 seeded logits for a prefix (the toy model). */
static void toy_logprobs(uint64_t model_seed, const int32_t *prefix, uint32_t len, float *lp) {
    uint64_t h = model_seed * 0x9e3779b97f4a7c15ull + len;
    for (uint32_t i = 0; i < len; i++)
        h = (h ^ (uint64_t)(prefix[i] + 1)) * 0x100000001b3ull;
    test_rng rng = test_rng_seeded(h);
    double x[V], m = -INFINITY, s = 0.0;
    for (int t = 0; t < V; t++) {
        x[t] = test_rng_uniform(&rng, -2.0f, 2.0f);
        if (x[t] > m) m = x[t];
    }
    for (int t = 0; t < V; t++)
        s += exp(x[t] - m);
    for (int t = 0; t < V; t++)
        lp[t] = (float)(x[t] - m - log(s));
}

typedef struct hyp {
    int32_t tokens[MAXL];
    uint32_t len;
    double sum, score;
} hyp;

static hyp all_hyps[1 << 12];

/* The score written down independently of beam_score(): sum / len^alpha. */
static double ref_score(double sum, uint32_t len, float alpha) {
    return sum / pow((double)len, (double)alpha);
}
static size_t n_all;

/* Every finished output: non-EOS prefixes then EOS (len <= max), or max non-EOS tokens. */
static void enumerate(uint64_t seed, int32_t *prefix, uint32_t len, double sum, uint32_t max,
                      float alpha) {
    float lp[V];
    toy_logprobs(seed, prefix, len, lp);
    for (int t = 0; t < V; t++) {
        prefix[len] = t;
        double s = sum + lp[t];
        if (t == EOS || len + 1 == max) {
            hyp *h = &all_hyps[n_all++];
            memcpy(h->tokens, prefix, (len + 1) * sizeof(int32_t));
            h->len = len + 1;
            h->sum = s;
            h->score = ref_score(s, len + 1, alpha);
        } else {
            enumerate(seed, prefix, len + 1, s, max, alpha);
        }
    }
}

static int by_score(const void *a, const void *b) {
    const hyp *x = a, *y = b;
    return (x->score < y->score) - (x->score > y->score);
}

static beam_search *create(uint32_t w, float alpha, beam_early_stopping es, uint32_t max,
                           bool ignore_eos) {
    static const int32_t eos[1] = {EOS};
    beam_params p = {.width = w,
                     .length_penalty = alpha,
                     .early_stopping = es,
                     .max_tokens = max,
                     .ignore_eos = ignore_eos,
                     .eos_ids = eos,
                     .n_eos = 1};
    beam_search *bs = NULL;
    cr_assert_eq(beam_search_create(&p, &bs), VKLLM_OK, "%s", vkllm_last_error());
    return bs;
}

/* Runs the search on the toy model, checking the bookkeeping of every step. */
static void run_toy(beam_search *bs, uint64_t seed, uint32_t *steps) {
    int32_t prev[64][MAXL];
    double prev_sum[64];
    *steps = 0;
    while (!beam_search_done(bs)) {
        uint32_t n = beam_search_live(bs);
        int32_t tokens[64 * V];
        float lps[64 * V];
        for (uint32_t b = 0; b < n; b++) {
            uint32_t len;
            const int32_t *t = beam_search_beam_tokens(bs, b, &len);
            cr_assert_eq(len, *steps);
            memcpy(prev[b], t, len * sizeof(int32_t));
            prev_sum[b] = beam_search_beam_sum(bs, b);
            toy_logprobs(seed, t, len, &lps[b * V]);
            for (int j = 0; j < V; j++)
                tokens[b * V + j] = j;
        }
        beam_step st;
        cr_assert_eq(beam_search_step(bs, tokens, lps, V, &st), VKLLM_OK, "%s", vkllm_last_error());
        (*steps)++;
        cr_assert_eq(st.done, beam_search_done(bs));
        for (uint32_t i = 0; i < st.n_live; i++) {
            uint32_t len;
            const int32_t *t = beam_search_beam_tokens(bs, i, &len);
            cr_assert_lt(st.parent[i], n, "parent %u of %u", st.parent[i], n);
            cr_assert_eq(len, *steps);
            cr_assert(memcmp(t, prev[st.parent[i]], (len - 1) * sizeof(int32_t)) == 0,
                      "beam %u does not extend its parent %u", i, st.parent[i]);
            cr_assert_eq(t[len - 1], st.token[i]);
            cr_assert_neq(st.token[i], EOS, "an EOS child stays live");
            double want = prev_sum[st.parent[i]] + lps[st.parent[i] * V + st.token[i]];
            cr_assert_eq(beam_search_beam_sum(bs, i), want, "beam %u sum", i);
            if (i) cr_assert_geq(beam_search_beam_sum(bs, i - 1), beam_search_beam_sum(bs, i));
        }
    }
}

static void check_exact(uint64_t seed, float alpha, uint32_t max) {
    const uint32_t w = 1u << (max - 1); /* holds every live prefix: exhaustive */
    int32_t prefix[MAXL];
    n_all = 0;
    enumerate(seed, prefix, 0, 0.0, max, alpha);
    qsort(all_hyps, n_all, sizeof(hyp), by_score);
    beam_search *bs = create(w, alpha, BEAM_EARLY_NEVER, max, false);
    uint32_t steps;
    run_toy(bs, seed, &steps);
    const beam_hypothesis *res;
    uint32_t n = beam_search_results(bs, &res);
    cr_assert_eq(n, w, "seed %llu alpha %g: %u results", (unsigned long long)seed, (double)alpha,
                 n);
    for (uint32_t i = 0; i < n; i++) {
        const hyp *h = &all_hyps[i];
        cr_assert(fabs(res[i].score - h->score) < 1e-12,
                  "seed %llu alpha %g rank %u: score %.9f, brute force %.9f",
                  (unsigned long long)seed, (double)alpha, i, res[i].score, h->score);
        cr_assert_eq(res[i].len, h->len, "seed %llu alpha %g rank %u", (unsigned long long)seed,
                     (double)alpha, i);
        cr_assert(memcmp(res[i].tokens, h->tokens, h->len * sizeof(int32_t)) == 0,
                  "seed %llu alpha %g rank %u: tokens differ", (unsigned long long)seed,
                  (double)alpha, i);
        cr_assert_eq(res[i].eos, h->tokens[h->len - 1] == EOS);
        cr_assert(fabs(res[i].sum_logprob - h->sum) < 1e-12);
    }
    beam_search_free(bs);
}

Test(beam, exhaustive_width_matches_brute_force) {
    for (uint64_t seed = 1; seed <= 40; seed++) {
        check_exact(seed, 0.0f, 4);
        check_exact(seed, 1.0f, 4);
        check_exact(seed, -0.5f, 4);
        check_exact(seed, 1.0f, 6);
    }
}

/* ---------------------------------------------------------- hand-built table */

/* Step 1: A (id 0) p=.6, B (id 1) p=.35, EOS .05. After A: everything flat (1/3). After B:
 * EOS with p=.95. Greedy takes A then anything (score ln .6 + ln 1/3 = -1.61); the best
 * finished output is B EOS (ln .35 + ln .95 = -1.10), which width 2 finds. */
static void hand_logprobs(const int32_t *prefix, uint32_t len, float *lp) {
    if (len == 0) {
        lp[0] = logf(0.6f), lp[1] = logf(0.35f), lp[2] = logf(0.05f);
    } else if (prefix[0] == 1) {
        lp[0] = logf(0.025f), lp[1] = logf(0.025f), lp[2] = logf(0.95f);
    } else {
        lp[0] = lp[1] = lp[2] = logf(1.0f / 3.0f);
    }
}

static const beam_hypothesis *run_hand(beam_search *bs, uint32_t *n) {
    while (!beam_search_done(bs)) {
        uint32_t live = beam_search_live(bs);
        int32_t tokens[16 * V];
        float lps[16 * V];
        for (uint32_t b = 0; b < live; b++) {
            uint32_t len;
            const int32_t *t = beam_search_beam_tokens(bs, b, &len);
            hand_logprobs(t, len, &lps[b * V]);
            for (int j = 0; j < V; j++)
                tokens[b * V + j] = j;
        }
        beam_step st;
        cr_assert_eq(beam_search_step(bs, tokens, lps, V, &st), VKLLM_OK, "%s", vkllm_last_error());
    }
    const beam_hypothesis *res;
    *n = beam_search_results(bs, &res);
    return res;
}

Test(beam, width_two_beats_greedy) {
    uint32_t n;
    beam_search *bs = create(1, 0.0f, BEAM_EARLY_NEVER, 3, false);
    const beam_hypothesis *r = run_hand(bs, &n);
    cr_assert_eq(n, 1);
    cr_assert_eq(r[0].tokens[0], 0, "width 1 is greedy: starts with A");
    beam_search_free(bs);

    bs = create(2, 0.0f, BEAM_EARLY_NEVER, 3, false);
    r = run_hand(bs, &n);
    cr_assert_eq(n, 2);
    cr_assert_eq(r[0].len, 2);
    cr_assert(r[0].tokens[0] == 1 && r[0].tokens[1] == EOS && r[0].eos, "best is B EOS");
    cr_assert(fabs(r[0].score - (log(0.35) + log(0.95))) < 1e-6, "score %g", r[0].score);
    beam_search_free(bs);
}

Test(beam, early_stopping_modes) {
    /* TRUE: done at the first step whose pool holds W hypotheses. Width 1 on the hand
     * table: step 1 puts A live (A EOS ranks below) and EOS p .05 into the pool -> done. */
    uint32_t n;
    beam_search *bs = create(1, 1.0f, BEAM_EARLY_TRUE, 5, false);
    const beam_hypothesis *r = run_hand(bs, &n);
    cr_assert_eq(n, 1);
    cr_assert(r[0].len == 1 && r[0].tokens[0] == EOS, "TRUE stops with the first finished one");
    beam_search_free(bs);

    /* HEURISTIC: worst kept (ln .05 = -3.0) < best live / 1 (ln .6): continues; after step
     * 2 the pool has A-EOS (-1.61/2 = -0.80 with alpha 1) >= best live (-1.61 / 2): done. */
    bs = create(1, 1.0f, BEAM_EARLY_HEURISTIC, 5, false);
    r = run_hand(bs, &n);
    cr_assert_eq(n, 1);
    cr_assert(r[0].len == 2 && r[0].tokens[0] == 0 && r[0].tokens[1] == EOS, "len %u", r[0].len);
    beam_search_free(bs);

    /* NEVER with alpha 1 must keep going (longer outputs divide by more) up to max_tokens */
    bs = create(1, 1.0f, BEAM_EARLY_NEVER, 5, false);
    uint32_t steps = 0;
    while (!beam_search_done(bs)) {
        uint32_t len;
        const int32_t *t = beam_search_beam_tokens(bs, 0, &len);
        float lp[V];
        hand_logprobs(t, len, lp);
        int32_t tokens[V] = {0, 1, 2};
        beam_step st;
        cr_assert_eq(beam_search_step(bs, tokens, lp, V, &st), VKLLM_OK);
        steps++;
    }
    cr_assert_eq(steps, 5, "NEVER with alpha > 0 ran %u steps", steps);
    beam_search_free(bs);
}

Test(beam, ignore_eos_and_padding) {
    beam_search *bs = create(2, 0.0f, BEAM_EARLY_TRUE, 3, true);
    uint32_t n;
    const beam_hypothesis *r = run_hand(bs, &n);
    cr_assert_eq(n, 2);
    for (uint32_t i = 0; i < n; i++) {
        cr_assert(!r[i].eos && r[i].len == 3, "ignore_eos: only max-length outputs");
        if (i) cr_assert_geq(r[i - 1].score, r[i].score);
    }
    beam_search_free(bs);

    /* padding entries (token -1 or -inf) are skipped: one real candidate -> one live beam */
    bs = create(4, 0.0f, BEAM_EARLY_NEVER, 4, false);
    int32_t tokens[3] = {5, -1, 6};
    float lps[3] = {-0.1f, -0.2f, -INFINITY};
    beam_step st;
    cr_assert_eq(beam_search_step(bs, tokens, lps, 3, &st), VKLLM_OK);
    cr_assert_eq(st.n_live, 1);
    cr_assert(st.parent[0] == 0 && st.token[0] == 5);
    beam_search_free(bs);
}

Test(beam, errors) {
    beam_search *bs = (beam_search *)1;
    beam_params p = {.width = 0, .max_tokens = 4};
    cr_assert_eq(beam_search_create(&p, &bs), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_null(bs);
    cr_assert(strstr(vkllm_last_error(), "width is 0"), "%s", vkllm_last_error());
    p.width = 2;
    p.max_tokens = 0;
    cr_assert_eq(beam_search_create(&p, &bs), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "max_tokens is 0"), "%s", vkllm_last_error());
    p.max_tokens = 4;
    p.length_penalty = NAN;
    cr_assert_eq(beam_search_create(&p, &bs), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "length_penalty"), "%s", vkllm_last_error());
    p.length_penalty = 1.0f;
    p.n_eos = 1;
    cr_assert_eq(beam_search_create(&p, &bs), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "eos_ids NULL"), "%s", vkllm_last_error());

    bs = create(1, 0.0f, BEAM_EARLY_NEVER, 1, false);
    int32_t t[1] = {0};
    float lp[1] = {-0.5f};
    beam_step st;
    cr_assert_eq(beam_search_step(bs, t, lp, 0, &st), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(beam_search_step(bs, t, lp, 1, &st), VKLLM_OK);
    cr_assert(st.done, "max_tokens 1: done after one step");
    cr_assert_eq(beam_search_step(bs, t, lp, 1, &st), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "after done"), "%s", vkllm_last_error());
    beam_search_free(bs);
}
