/* test_sampler.c: engine/exec/sampler.c against direct double-precision computations in
 * this file: greedy, seeding, sample frequencies, the exact kept sets of top-k / top-p /
 * min-p, penalty formulas, logprobs, the GPU-argmax fast path and every error path.
 *
 * Random inputs come from test_rng with the seed in the messages; the sampler's own RNG is
 * seeded too, so the statistical tests are deterministic (they cannot flake) while still
 * checking frequencies against the softmax within 5 sigma. Logprob bounds: 2e-5 absolute
 * (f32 logits, the sampler sums in double). */
// links: exec
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/test_util.h"
#include "exec/sampler.h"

/* ---------------------------------------------------------- helpers */

static sampler_workspace *ws;

static void setup(void) {
    cr_assert_eq(sampler_workspace_create(262144, &ws), VKLLM_OK, "%s", vkllm_last_error());
}
static void teardown(void) {
    sampler_workspace_free(ws);
    ws = NULL;
}

TestSuite(sampler, .init = setup, .fini = teardown);

static sampler_result sample_ok(const sampler_params *p, sampler_state *st, const float *logits,
                                uint32_t n, const int32_t *hist, size_t n_hist, size_t n_prompt) {
    sampler_result r;
    vkllm_status s = sampler_sample(p, st, ws, logits, n, hist, n_hist, n_prompt, &r);
    cr_assert_eq(s, VKLLM_OK, "sampler_sample: %s (%s)", vkllm_status_name(s), vkllm_last_error());
    cr_assert(r.token >= 0 && (uint32_t)r.token < n, "token %d out of [0, %u)", r.token, n);
    return r;
}

static float *random_logits(uint64_t seed, uint32_t n, float lo, float hi) {
    test_rng rng = test_rng_seeded(seed);
    float *x = malloc(n * sizeof(float));
    cr_assert(x);
    test_fill_uniform(&rng, x, n, lo, hi);
    return x;
}

/* Direct reference of the kept set (sampler.h order): ids sorted by z desc (ties lower id),
 * top-k, top-p over the renormalized top-k mass, min-p vs the max. Returns the count and
 * the kept ids in `kept`, their probabilities (renormalized over kept) in `prob`. */
static const double *g_z;
static int cmp_desc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_z[x] != g_z[y]) return g_z[x] > g_z[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static uint32_t reference_kept(const float *w, uint32_t n, float temp, int32_t top_k, float top_p,
                               float min_p, int32_t *kept, double *prob) {
    double *z = malloc(n * sizeof(double));
    int32_t *order = malloc(n * sizeof(int32_t));
    cr_assert(z && order);
    uint32_t n_finite = 0;
    for (uint32_t i = 0; i < n; i++) {
        z[i] = (double)w[i] / (double)temp;
        if (isfinite(w[i])) order[n_finite++] = (int32_t)i;
    }
    g_z = z;
    qsort(order, n_finite, sizeof(int32_t), cmp_desc);
    uint32_t m = n_finite;
    if (top_k > 0 && (uint32_t)top_k < m) m = (uint32_t)top_k;
    double zmax = z[order[0]], mass = 0.0;
    for (uint32_t j = 0; j < m; j++)
        mass += exp(z[order[j]] - zmax);
    if (top_p < 1.0f) {
        double before = 0.0;
        uint32_t j = 0;
        while (j < m && before < (double)top_p * mass)
            before += exp(z[order[j++]] - zmax);
        m = j;
    }
    if (min_p > 0.0f)
        while (m > 1 && z[order[m - 1]] < zmax + log((double)min_p))
            m--;
    double total = 0.0;
    for (uint32_t j = 0; j < m; j++)
        total += exp(z[order[j]] - zmax);
    for (uint32_t j = 0; j < m; j++) {
        kept[j] = order[j];
        if (prob) prob[j] = exp(z[order[j]] - zmax) / total;
    }
    free(z);
    free(order);
    return m;
}

static double log_sum_exp_d(const float *x, uint32_t n) {
    double m = -INFINITY, s = 0.0;
    for (uint32_t i = 0; i < n; i++)
        if (x[i] > m) m = x[i];
    for (uint32_t i = 0; i < n; i++)
        if (isfinite(x[i])) s += exp((double)x[i] - m);
    return m + log(s);
}

/* ---------------------------------------------------------- greedy */

Test(sampler, greedy_picks_the_max) {
    for (uint64_t seed = 1; seed <= 20; seed++) {
        uint32_t n = 1 + (uint32_t)(seed * 977 % 5000);
        float *x = random_logits(seed, n, -20, 20);
        uint32_t want = 0;
        for (uint32_t i = 1; i < n; i++)
            if (x[i] > x[want]) want = i;
        sampler_params p = sampler_params_default();
        p.temperature = 0.0f;
        sampler_state st;
        sampler_state_init(&st, seed);
        sampler_result r = sample_ok(&p, &st, x, n, NULL, 0, 0);
        cr_assert_eq(r.token, (int32_t)want, "seed %llu n %u: got %d want %u",
                     (unsigned long long)seed, n, r.token, want);
        cr_assert_eq(st.draws, 0, "greedy consumes no random draw");
        p.temperature = 1.0f;
        p.top_k = 1; /* top-k 1 is greedy too */
        r = sample_ok(&p, &st, x, n, NULL, 0, 0);
        cr_assert_eq(r.token, (int32_t)want, "top_k 1, seed %llu", (unsigned long long)seed);
        free(x);
    }
}

Test(sampler, greedy_ties_and_nan) {
    float x[6] = {1.0f, NAN, 3.0f, -INFINITY, 3.0f, 2.0f};
    sampler_params p = sampler_params_default();
    p.temperature = 0.0f;
    sampler_state st;
    sampler_state_init(&st, 0);
    cr_assert_eq(sample_ok(&p, &st, x, 6, NULL, 0, 0).token, 2, "tie goes to the lower id");
    x[2] = NAN;
    cr_assert_eq(sample_ok(&p, &st, x, 6, NULL, 0, 0).token, 4, "NaN counts as -inf");
    /* NaN and -inf are never sampled at temperature 1 either */
    p.temperature = 1.0f;
    for (int i = 0; i < 2000; i++) {
        int32_t t = sample_ok(&p, &st, x, 6, NULL, 0, 0).token;
        cr_assert(t != 1 && t != 2 && t != 3, "sampled masked token %d", t);
    }
}

/* ---------------------------------------------------------- seeding */

static void run_stream(uint64_t seed, int32_t *out, int steps) {
    sampler_params p = sampler_params_default();
    p.temperature = 0.9f;
    p.top_p = 0.95f;
    sampler_state st;
    sampler_state_init(&st, seed);
    int32_t hist[64];
    for (int s = 0; s < steps; s++) {
        float *x = random_logits(1000 + (uint64_t)s, 4096, -2, 2);
        out[s] = sample_ok(&p, &st, x, 4096, hist, (size_t)s, 0).token;
        hist[s] = out[s];
        free(x);
    }
}

Test(sampler, same_seed_same_output_different_seed_differs) {
    int32_t a[64], b[64], c[64];
    run_stream(42, a, 64);
    run_stream(42, b, 64);
    run_stream(43, c, 64);
    cr_assert_arr_eq(a, b, sizeof a, "same seed 42 gave different streams");
    int differ = 0;
    for (int i = 0; i < 64; i++)
        differ += a[i] != c[i];
    cr_assert_gt(differ, 32, "seeds 42 and 43 agree on %d of 64 near-uniform draws", 64 - differ);
}

Test(sampler, child_seeds_are_distinct_and_deterministic) {
    uint64_t seen[64];
    for (uint32_t i = 0; i < 64; i++) {
        seen[i] = sampler_child_seed(7, i);
        cr_assert_eq(seen[i], sampler_child_seed(7, i), "child %u not deterministic", i);
        cr_assert_neq(seen[i], 7, "child %u equals the parent seed", i);
        for (uint32_t j = 0; j < i; j++)
            cr_assert_neq(seen[i], seen[j], "children %u, %u", i, j);
    }
    cr_assert_neq(sampler_child_seed(7, 0), sampler_child_seed(8, 0), "parent seed ignored");
    /* the streams of two children differ */
    sampler_state s0, s1;
    sampler_state_init(&s0, seen[0]);
    sampler_state_init(&s1, seen[1]);
    int same = 0;
    for (int i = 0; i < 100; i++)
        same += sampler_rng_next(&s0) == sampler_rng_next(&s1);
    cr_assert_eq(same, 0, "child streams collide %d times", same);
}

Test(sampler, rng_uniform_range_and_mean) {
    sampler_state st;
    sampler_state_init(&st, 123);
    double sum = 0.0;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        double u = sampler_rng_uniform(&st);
        cr_assert(u >= 0.0 && u < 1.0, "uniform %g out of [0, 1)", u);
        sum += u;
    }
    double mean = sum / n, sigma = sqrt(1.0 / 12.0 / n);
    cr_assert(fabs(mean - 0.5) < 5 * sigma, "mean %g, 5 sigma %g", mean, 5 * sigma);
}

/* ---------------------------------------------------------- statistics */

/* 20000 samples: every token's count within 5 sigma of N * p (deterministic seed). */
static void check_frequencies(const sampler_params *p, const float *x, uint32_t n, uint64_t seed) {
    int32_t kept[64];
    double prob[64];
    uint32_t m = reference_kept(x, n, p->temperature, p->top_k, p->top_p, p->min_p, kept, prob);
    double want[64] = {0};
    for (uint32_t j = 0; j < m; j++)
        want[kept[j]] = prob[j];
    int counts[64] = {0};
    const int N = 20000;
    sampler_state st;
    sampler_state_init(&st, seed);
    for (int i = 0; i < N; i++) {
        sampler_result r = sample_ok(p, &st, x, n, NULL, 0, 0);
        cr_assert_eq(r.n_kept, m, "n_kept %u, reference %u", r.n_kept, m);
        counts[r.token]++;
    }
    for (uint32_t t = 0; t < n; t++) {
        double mean = N * want[t], sigma = sqrt(N * want[t] * (1.0 - want[t]));
        if (want[t] == 0.0) {
            cr_assert_eq(counts[t], 0, "token %u outside the kept set drawn %d times", t,
                         counts[t]);
        } else {
            cr_assert(fabs(counts[t] - mean) <= 5.0 * sigma + 1e-9,
                      "T %g k %d p %g min_p %g: token %u drawn %d times, expected %.1f +- %.1f "
                      "(5 sigma), seed %llu",
                      (double)p->temperature, p->top_k, (double)p->top_p, (double)p->min_p, t,
                      counts[t], mean, 5 * sigma, (unsigned long long)seed);
        }
    }
}

Test(sampler, frequencies_match_softmax) {
    const float x[8] = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f, 2.5f, -0.5f};
    sampler_params p = sampler_params_default();
    check_frequencies(&p, x, 8, 11); /* T = 1, nothing truncated */
    p.temperature = 0.6f;
    check_frequencies(&p, x, 8, 12);
    p.temperature = 2.0f;
    check_frequencies(&p, x, 8, 13);
    p.temperature = 1.0f;
    p.top_k = 3;
    check_frequencies(&p, x, 8, 14);
    p.top_k = 0;
    p.top_p = 0.8f;
    check_frequencies(&p, x, 8, 15);
    p.top_p = 1.0f;
    p.min_p = 0.2f;
    check_frequencies(&p, x, 8, 16);
    p.top_k = 5;
    p.top_p = 0.9f;
    p.min_p = 0.1f;
    p.temperature = 0.8f;
    check_frequencies(&p, x, 8, 17);
}

/* ---------------------------------------------------------- kept sets */

/* Support of many samples is inside the reference kept set, n_kept matches it exactly, and
 * (kept sets of at most 40 with probabilities >= 0.5%) every kept token is drawn. */
static void check_support(const sampler_params *p, const float *x, uint32_t n, uint64_t seed) {
    int32_t *kept = malloc(n * sizeof(int32_t));
    double *prob = malloc(n * sizeof(double));
    uint8_t *in = calloc(n, 1), *drawn = calloc(n, 1);
    cr_assert(kept && prob && in && drawn);
    uint32_t m = reference_kept(x, n, p->temperature, p->top_k, p->top_p, p->min_p, kept, prob);
    for (uint32_t j = 0; j < m; j++)
        in[kept[j]] = 1;
    sampler_state st;
    sampler_state_init(&st, seed);
    for (int i = 0; i < 1500; i++) {
        sampler_result r = sample_ok(p, &st, x, n, NULL, 0, 0);
        cr_assert_eq(r.n_kept, m, "seed %llu T %g k %d p %g min_p %g: n_kept %u, reference %u",
                     (unsigned long long)seed, (double)p->temperature, p->top_k, (double)p->top_p,
                     (double)p->min_p, r.n_kept, m);
        cr_assert(in[r.token], "seed %llu: token %d is outside the kept set",
                  (unsigned long long)seed, r.token);
        drawn[r.token] = 1;
    }
    if (m <= 40 && prob[m - 1] >= 0.005)
        for (uint32_t j = 0; j < m; j++)
            cr_assert(drawn[kept[j]], "seed %llu: kept token %d (p %g) never drawn",
                      (unsigned long long)seed, kept[j], prob[j]);
    free(kept);
    free(prob);
    free(in);
    free(drawn);
}

Test(sampler, top_k_top_p_min_p_keep_exactly_the_reference_set) {
    const uint32_t n = 3001;
    for (uint64_t seed = 100; seed < 103; seed++) {
        float *x = random_logits(seed, n, -4, 4);
        for (uint32_t i = 0; i < 25; i++)
            x[(i * 131 + seed) % n] += 6.0f; /* a head of 25 */
        sampler_params p = sampler_params_default();
        p.top_k = 10;
        check_support(&p, x, n, seed);
        p.top_k = 0;
        p.top_p = 0.7f;
        check_support(&p, x, n, seed);
        p.top_p = 1.0f;
        p.min_p = 0.05f;
        check_support(&p, x, n, seed);
        p.top_k = 20;
        p.top_p = 0.9f;
        p.min_p = 0.02f;
        p.temperature = 0.7f;
        check_support(&p, x, n, seed);
        p.top_k = 0;
        p.min_p = 0.0f;
        p.top_p = 0.95f; /* most of the tail: candidates must grow past 256 */
        p.temperature = 3.0f;
        check_support(&p, x, n, seed);
        free(x);
    }
}

Test(sampler, large_vocabulary_top_p_without_top_k) {
    const uint32_t n = 262144;
    float *x = random_logits(7, n, -3, 3);
    sampler_params p = sampler_params_default();
    p.top_p = 0.9f;
    int32_t *kept = malloc(n * sizeof(int32_t));
    cr_assert(kept);
    uint32_t m = reference_kept(x, n, 1.0f, 0, 0.9f, 0.0f, kept, NULL);
    cr_assert_gt(m, 50000, "flat logits keep most of the vocabulary (m %u)", m);
    sampler_state st;
    sampler_state_init(&st, 7);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 3; i++) {
        sampler_result r = sample_ok(&p, &st, x, n, NULL, 0, 0);
        cr_assert_eq(r.n_kept, m, "n_kept %u, reference %u", r.n_kept, m);
    }
    /* a peaked row (the usual case): a bounded candidate set, no growth */
    for (uint32_t i = 0; i < 50; i++)
        x[i * 5003] += 12.0f;
    m = reference_kept(x, n, 1.0f, 0, 0.9f, 0.0f, kept, NULL);
    for (int i = 0; i < 20; i++) {
        sampler_result r = sample_ok(&p, &st, x, n, NULL, 0, 0);
        cr_assert_eq(r.n_kept, m, "peaked: n_kept %u, reference %u", r.n_kept, m);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    cr_log_info("23 samples over 262144 tokens with top_p: %.1f ms each", 1e3 * s / 23);
    cr_assert_lt(s, 10.0, "23 samples took %.2f s", s); /* generous: sanitizer builds */
    free(kept);
    free(x);
}

/* ---------------------------------------------------------- penalties */

/* Processed logprobs at T = 1 with no truncation are w - logsumexp(w): they reveal the
 * penalized logits w exactly (up to f32), which are compared with the formulas. */
static void expect_penalized(const sampler_params *p0, const float *x, uint32_t n,
                             const int32_t *hist, size_t n_hist, size_t n_prompt,
                             const float *want_w) {
    sampler_params p = *p0;
    p.logprobs = (int32_t)n;
    p.logprobs_mode = SAMPLER_LOGPROBS_PROCESSED;
    sampler_state st;
    sampler_state_init(&st, 1);
    sampler_result r = sample_ok(&p, &st, x, n, hist, n_hist, n_prompt);
    cr_assert_eq(r.n_top, n, "n_top %u", r.n_top);
    double lse = log_sum_exp_d(want_w, n);
    for (uint32_t j = 0; j < n; j++) {
        int32_t t = r.top_ids[j];
        double want = (double)want_w[t] - lse;
        cr_assert(fabs(r.top_logprobs[j] - want) < 2e-5, "token %d: logprob %.7f, want %.7f", t,
                  (double)r.top_logprobs[j], want);
        if (j) cr_assert(r.top_logprobs[j] <= r.top_logprobs[j - 1], "not descending at %u", j);
    }
}

Test(sampler, penalties_follow_the_formulas) {
    const float x[10] = {2.0f, -1.5f, 0.7f, 0.0f, 3.1f, -0.2f, 1.1f, -3.0f, 0.4f, 1.9f};
    /* prompt: 0 1 2 ; generated: 4 4 1 5 5 5 */
    const int32_t hist[9] = {0, 1, 2, 4, 4, 1, 5, 5, 5};
    sampler_params p = sampler_params_default();
    float w[10];

    /* repetition 1.3 over the whole history: tokens 0 1 2 4 5 */
    p.repetition_penalty = 1.3f;
    memcpy(w, x, sizeof w);
    const int rep_all[] = {0, 1, 2, 4, 5};
    for (int i = 0; i < 5; i++) {
        int t = rep_all[i];
        w[t] = x[t] > 0 ? x[t] / 1.3f : x[t] * 1.3f;
    }
    expect_penalized(&p, x, 10, hist, 9, 3, w);

    /* window of the last 4 tokens: 1 5 5 5 only */
    p.repetition_window = 4;
    memcpy(w, x, sizeof w);
    w[1] = x[1] * 1.3f;
    w[5] = x[5] * 1.3f;
    expect_penalized(&p, x, 10, hist, 9, 3, w);

    /* presence 0.5, frequency 0.25: generated tokens only (4 x2, 1 x1, 5 x3) */
    p = sampler_params_default();
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    memcpy(w, x, sizeof w);
    w[4] = x[4] - 0.25f * 2 - 0.5f;
    w[1] = x[1] - 0.25f * 1 - 0.5f;
    w[5] = x[5] - 0.25f * 3 - 0.5f;
    expect_penalized(&p, x, 10, hist, 9, 3, w);

    /* all three, negative presence (encourages) */
    p.repetition_penalty = 0.8f;
    p.presence_penalty = -1.0f;
    memcpy(w, x, sizeof w);
    for (int i = 0; i < 5; i++) {
        int t = rep_all[i];
        w[t] = x[t] > 0 ? x[t] / 0.8f : x[t] * 0.8f;
    }
    w[4] += -0.25f * 2 + 1.0f;
    w[1] += -0.25f * 1 + 1.0f;
    w[5] += -0.25f * 3 + 1.0f;
    expect_penalized(&p, x, 10, hist, 9, 3, w);

    /* the workspace is clean afterwards: no penalty without history */
    p = sampler_params_default();
    p.repetition_penalty = 1.3f;
    expect_penalized(&p, x, 10, NULL, 0, 0, x);
}

Test(sampler, repetition_penalty_changes_the_greedy_choice) {
    const float x[4] = {2.0f, 1.9f, -1.0f, 0.5f};
    const int32_t hist[2] = {0, 0};
    sampler_params p = sampler_params_default();
    p.temperature = 0.0f;
    sampler_state st;
    sampler_state_init(&st, 0);
    cr_assert_eq(sample_ok(&p, &st, x, 4, hist, 2, 2).token, 0);
    p.repetition_penalty = 1.1f; /* 2.0 / 1.1 = 1.82 < 1.9 */
    cr_assert_eq(sample_ok(&p, &st, x, 4, hist, 2, 2).token, 1);
    p.repetition_penalty = 1.0f;
    p.frequency_penalty = 0.06f; /* prompt tokens do not count: 0 stays best */
    cr_assert_eq(sample_ok(&p, &st, x, 4, hist, 2, 2).token, 0);
    cr_assert_eq(sample_ok(&p, &st, x, 4, hist, 2, 1).token, 0, "2.0 - 0.06 > 1.9");
    cr_assert_eq(sample_ok(&p, &st, x, 4, hist, 2, 0).token, 1, "2.0 - 0.12 < 1.9");
    cr_assert(!sampler_argmax_suffices(&p), "penalties need logits");
}

/* ---------------------------------------------------------- logprobs */

Test(sampler, raw_logprobs_match_double_log_softmax) {
    for (uint64_t seed = 300; seed < 305; seed++) {
        const uint32_t n = 5003;
        float *x = random_logits(seed, n, -15, 15);
        double lse = log_sum_exp_d(x, n);
        int32_t *order = malloc(n * sizeof(int32_t));
        double *z = malloc(n * sizeof(double));
        for (uint32_t i = 0; i < n; i++)
            order[i] = (int32_t)i, z[i] = x[i];
        g_z = z;
        qsort(order, n, sizeof(int32_t), cmp_desc);
        sampler_params p = sampler_params_default();
        p.logprobs = 20;
        p.temperature = 0.7f;
        p.top_k = 50;
        p.repetition_penalty = 1.5f; /* raw mode ignores all processing */
        int32_t hist[1] = {order[0]};
        sampler_state st;
        sampler_state_init(&st, seed);
        sampler_result r = sample_ok(&p, &st, x, n, hist, 1, 0);
        cr_assert_eq(r.n_top, 20);
        for (uint32_t j = 0; j < 20; j++) {
            cr_assert_eq(r.top_ids[j], order[j], "seed %llu rank %u: id %d want %d",
                         (unsigned long long)seed, j, r.top_ids[j], order[j]);
            cr_assert(fabs(r.top_logprobs[j] - (x[order[j]] - lse)) < 2e-5, "rank %u", j);
        }
        cr_assert(fabs(r.logprob - (x[r.token] - lse)) < 2e-5, "sampled token's logprob");
        /* sampler_top_logprobs: the same numbers without a workspace */
        int32_t ids[40];
        float lps[40];
        uint32_t got;
        cr_assert_eq(sampler_top_logprobs(x, n, 40, ids, lps, &got), VKLLM_OK);
        cr_assert_eq(got, 40);
        for (uint32_t j = 0; j < 40; j++) {
            cr_assert_eq(ids[j], order[j], "top_logprobs rank %u", j);
            cr_assert(fabs(lps[j] - (x[order[j]] - lse)) < 2e-5, "top_logprobs rank %u", j);
        }
        /* logprobs 0: only the sampled token's */
        p.logprobs = 0;
        r = sample_ok(&p, &st, x, n, hist, 1, 0);
        cr_assert_eq(r.n_top, 0);
        cr_assert(fabs(r.logprob - (x[r.token] - lse)) < 2e-5);
        free(order);
        free(z);
        free(x);
    }
}

Test(sampler, processed_logprobs_are_the_sampled_distribution) {
    const uint32_t n = 1000;
    float *x = random_logits(400, n, -5, 5);
    sampler_params p = sampler_params_default();
    p.temperature = 0.5f;
    p.top_k = 5;
    p.logprobs = 20;
    p.logprobs_mode = SAMPLER_LOGPROBS_PROCESSED;
    int32_t kept[5];
    double prob[5];
    cr_assert_eq(reference_kept(x, n, 0.5f, 5, 1.0f, 0.0f, kept, prob), 5);
    sampler_state st;
    sampler_state_init(&st, 400);
    sampler_result r = sample_ok(&p, &st, x, n, NULL, 0, 0);
    cr_assert_eq(r.n_top, 5, "only the 5 kept tokens have finite logprobs (n_top %u)", r.n_top);
    for (uint32_t j = 0; j < 5; j++) {
        cr_assert_eq(r.top_ids[j], kept[j]);
        cr_assert(fabs(r.top_logprobs[j] - log(prob[j])) < 2e-5, "rank %u: %g want %g", j,
                  (double)r.top_logprobs[j], log(prob[j]));
        if (r.top_ids[j] == r.token)
            cr_assert(fabs(r.logprob - log(prob[j])) < 2e-5, "sampled token's logprob");
    }
    /* min-p only (an unsorted kept set): top-N still sorted and normalized over it */
    p.top_k = 0;
    p.min_p = 0.3f;
    p.temperature = 1.0f;
    int32_t *k2 = malloc(n * sizeof(int32_t));
    double *p2 = malloc(n * sizeof(double));
    uint32_t m = reference_kept(x, n, 1.0f, 0, 1.0f, 0.3f, k2, p2);
    r = sample_ok(&p, &st, x, n, NULL, 0, 0);
    cr_assert_eq(r.n_kept, m);
    cr_assert_eq(r.n_top, m < 20 ? m : 20);
    for (uint32_t j = 0; j < r.n_top; j++) {
        cr_assert_eq(r.top_ids[j], k2[j]);
        cr_assert(fabs(r.top_logprobs[j] - log(p2[j])) < 2e-5, "min-p rank %u", j);
    }
    free(k2);
    free(p2);
    free(x);
}

/* ---------------------------------------------------------- GPU argmax fast path */

Test(sampler, argmax_fast_path) {
    sampler_params p = sampler_params_default();
    cr_assert(!sampler_argmax_suffices(&p), "temperature 1 samples");
    p.temperature = 0.0f;
    cr_assert(sampler_argmax_suffices(&p));
    sampler_result r;
    cr_assert_eq(sampler_accept_argmax(&p, 17, 100, &r), VKLLM_OK);
    cr_assert_eq(r.token, 17);
    cr_assert_eq(sampler_accept_argmax(&p, 100, 100, &r), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "100") != NULL, "%s", vkllm_last_error());
    p.logprobs = 0;
    cr_assert(!sampler_argmax_suffices(&p), "logprobs need logits");
    cr_assert_eq(sampler_accept_argmax(&p, 1, 100, &r), VKLLM_ERR_INVALID_ARGUMENT);
    p.logprobs = -1;
    p.presence_penalty = 0.1f;
    cr_assert(!sampler_argmax_suffices(&p), "penalties need logits");
}

/* ---------------------------------------------------------- errors */

static void expect_invalid(const sampler_params *p, const char *needle) {
    float x[4] = {0, 1, 2, 3};
    sampler_state st;
    sampler_state_init(&st, 0);
    sampler_result r;
    vkl_clear_error();
    vkllm_status s = sampler_sample(p, &st, ws, x, 4, NULL, 0, 0, &r);
    cr_assert_eq(s, VKLLM_ERR_INVALID_ARGUMENT, "%s accepted", needle);
    cr_assert(strstr(vkllm_last_error(), needle) != NULL, "message '%s' lacks '%s'",
              vkllm_last_error(), needle);
    cr_assert_eq(r.token, -1);
}

Test(sampler, invalid_params_are_named) {
    sampler_params p;
#define BAD(field, value)                                                                          \
    do {                                                                                           \
        p = sampler_params_default();                                                              \
        p.field = value;                                                                           \
        expect_invalid(&p, #field);                                                                \
    } while (0)
    BAD(temperature, -0.1f);
    BAD(temperature, NAN);
    BAD(top_p, 0.0f);
    BAD(top_p, 1.5f);
    BAD(min_p, -0.1f);
    BAD(min_p, 1.1f);
    BAD(repetition_penalty, 0.0f);
    BAD(presence_penalty, 2.5f);
    BAD(frequency_penalty, -2.5f);
    BAD(logprobs, 21);
    BAD(logprobs, -2);
    BAD(n, 0);
    BAD(max_tokens, 0);
    BAD(logprobs_mode, (sampler_logprobs_mode)7);
    p = sampler_params_default();
    p.n_stop_token_ids = 2;
    expect_invalid(&p, "stop_token_ids");
    const char *stops[2] = {"a", ""};
    p = sampler_params_default();
    p.stop_strings = stops;
    p.n_stop_strings = 2;
    expect_invalid(&p, "stop_strings[1]");
#undef BAD
}

Test(sampler, invalid_inputs_are_named) {
    sampler_params p = sampler_params_default();
    p.repetition_penalty = 1.2f;
    sampler_state st;
    sampler_state_init(&st, 0);
    sampler_result r;
    float x[4] = {0, 1, 2, 3};
    int32_t hist[3] = {1, 9, 2};
    cr_assert_eq(sampler_sample(&p, &st, ws, x, 4, hist, 3, 0, &r), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "history[1] = 9") != NULL, "%s", vkllm_last_error());
    hist[1] = 3; /* the failed call left the workspace clean: no stale counts */
    int32_t none[1] = {0};
    p.logprobs = 4;
    p.logprobs_mode = SAMPLER_LOGPROBS_PROCESSED;
    r = sample_ok(&p, &st, x, 4, none, 0, 0);
    cr_assert(fabs(r.top_logprobs[0] - (3.0 - log_sum_exp_d(x, 4))) < 2e-5, "stale penalty");
    cr_assert_eq(sampler_sample(&p, &st, ws, x, 4, hist, 2, 3, &r), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "n_prompt 3 > n_history 2") != NULL, "%s",
              vkllm_last_error());
    float dead[3] = {-INFINITY, NAN, -INFINITY};
    cr_assert_eq(sampler_sample(&p, &st, ws, dead, 3, NULL, 0, 0, &r), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "no finite logit") != NULL, "%s", vkllm_last_error());
    cr_assert_eq(sampler_sample(&p, &st, ws, x, 262145, NULL, 0, 0, &r),
                 VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "n_vocab 262145") != NULL, "%s", vkllm_last_error());
    cr_assert_eq(sampler_top_logprobs(dead, 3, 2, (int32_t[2]){0}, (float[2]){0}, &(uint32_t){0}),
                 VKLLM_ERR_INVALID_ARGUMENT);
    sampler_workspace *w2 = NULL;
    cr_assert_eq(sampler_workspace_create(0, &w2), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_null(w2);
}

Test(sampler, infinite_logit_is_certain) {
    const float x[4] = {0.0f, INFINITY, 1.0f, INFINITY};
    sampler_params p = sampler_params_default();
    p.logprobs = 3;
    sampler_state st;
    sampler_state_init(&st, 5);
    for (int i = 0; i < 20; i++) {
        sampler_result r = sample_ok(&p, &st, x, 4, NULL, 0, 0);
        cr_assert_eq(r.token, 1, "the first +inf logit is certain");
        cr_assert_eq(r.logprob, 0.0f);
        cr_assert_eq(r.n_top, 3);
        cr_assert(r.top_ids[0] == 1 && r.top_ids[1] == 3 && r.top_ids[2] == 2);
        cr_assert(isinf(r.top_logprobs[2]) && r.top_logprobs[2] < 0, "finite ones get -inf");
    }
}

/* sampler_sample_candidates without a GPU: candidates built here from a sorted row. */
Test(sampler, candidates_incomplete_and_errors) {
    const uint32_t n = 500, k = 8;
    float *x = random_logits(600, n, -1, 1); /* flat: 8 candidates hold little mass */
    int32_t order[500];
    double z[500];
    for (uint32_t i = 0; i < n; i++)
        order[i] = (int32_t)i, z[i] = x[i];
    g_z = z;
    qsort(order, n, sizeof(int32_t), cmp_desc);
    int32_t ids[8];
    float vals[8];
    for (uint32_t j = 0; j < k; j++)
        ids[j] = order[j], vals[j] = x[order[j]];
    double s = 0.0;
    for (uint32_t i = 0; i < n; i++)
        s += exp((double)x[i] - vals[0]);
    sampler_candidates c = {.ids = ids,
                            .values = vals,
                            .k = k,
                            .row_max = vals[0],
                            .sum_exp = (float)s,
                            .sum_exp_temp = (float)s};
    sampler_params p = sampler_params_default();
    p.top_p = 0.9f; /* needs far more than 8 tokens */
    sampler_state st;
    sampler_state_init(&st, 3);
    sampler_result r;
    bool complete = true;
    cr_assert_eq(sampler_sample_candidates(&p, &st, &c, n, &r, &complete), VKLLM_OK);
    cr_assert(!complete, "top_p 0.9 over a flat row cannot close in 8 candidates");
    cr_assert_eq(st.draws, 0, "no draw consumed");
    p.top_p = 1.0f;
    p.top_k = 4;
    cr_assert_eq(sampler_sample_candidates(&p, &st, &c, n, &r, &complete), VKLLM_OK);
    cr_assert(complete && r.n_kept == 4 && st.draws == 1);
    bool in_top4 = false;
    for (int j = 0; j < 4; j++)
        in_top4 |= r.token == ids[j];
    cr_assert(in_top4, "token %d outside the top 4", r.token);
    p.top_k = 9;
    cr_assert(!sampler_candidates_usable(&p, k));
    cr_assert_eq(sampler_sample_candidates(&p, &st, &c, n, &r, &complete), VKLLM_OK);
    cr_assert(!complete, "top_k 9 > 8 candidates");
    /* errors */
    p.top_k = 4;
    ids[0] = (int32_t)n;
    cr_assert_eq(sampler_sample_candidates(&p, &st, &c, n, &r, &complete),
                 VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "candidate 0 has id 500"), "%s", vkllm_last_error());
    ids[0] = order[0];
    float dead[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                     -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    c.values = dead;
    cr_assert_eq(sampler_sample_candidates(&p, &st, &c, n, &r, &complete),
                 VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "no finite candidate"), "%s", vkllm_last_error());
    cr_assert_eq(sampler_sample_candidates(&p, &st, NULL, n, &r, &complete),
                 VKLLM_ERR_INVALID_ARGUMENT);
    free(x);
}
