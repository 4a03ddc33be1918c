/* test_sampler_gpu.c: the GPU top-k kernel (shaders/topk.comp through k_topk in
 * engine/exec/k_sample.c) against a CPU reference written here, and the sampler's
 * candidate path (sampler_sample_candidates) fed by it against sampler_sample on the full
 * row.
 *
 * Inputs: seeded random rows (seed in messages) with -inf, NaN, +-0 and, in the "ties"
 * cases, values quantized to 1/4 so that many equal values straddle the k-th place (this
 * exercises the id passes). Sizes are not multiples of 256; rows use a stride > n_cols;
 * outputs start poisoned. Bounds: ids and values exact; max exact; the two exp sums
 * relative 1e-4 (GPU exp and summation order differ from the double reference). */
// links: exec gpu
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_gpu.h"
#include "common/test_util.h"
#include "exec/k_sample.h"
#include "exec/sampler.h"

TestSuite(sampler_gpu, .fini = test_gpu_check_validation);

static gpu_binding bind(const gpu_buffer *b) {
    return (gpu_binding){.buffer = b, .offset = 0, .range = 0};
}

/* Reference order: value descending, NaN last, equal values (+0 == -0) lower id first. */
static const float *g_row;
static int ref_cmp(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    float vx = g_row[x], vy = g_row[y];
    bool nx = isnan(vx), ny = isnan(vy);
    if (nx != ny) return nx ? 1 : -1;
    if (!nx && vx != vy) return vx > vy ? -1 : 1;
    return (x > y) - (x < y);
}

typedef struct topk_out {
    int32_t *ids;
    float *values, *stats;
} topk_out;

static topk_out run_topk(const float *logits, const float *inv_t, uint32_t rows, uint32_t n,
                         uint32_t stride, uint32_t k) {
    gpu_buffer in = test_gpu_buffer_from(logits, (uint64_t)rows * stride * 4);
    gpu_buffer temps = test_gpu_buffer_from(inv_t, (uint64_t)rows * 4);
    gpu_buffer ids = test_gpu_buffer_poisoned((uint64_t)rows * k * 4);
    gpu_buffer vals = test_gpu_buffer_poisoned((uint64_t)rows * k * 4);
    gpu_buffer stats = test_gpu_buffer_poisoned((uint64_t)rows * 16);
    gpu_cmd *cmd = NULL;
    cr_assert_eq(gpu_cmd_begin(test_gpu(), &cmd), VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status s = k_topk(test_gpu(), cmd, bind(&in), bind(&temps), bind(&ids), bind(&vals),
                            bind(&stats), rows, n, stride, k);
    cr_assert_eq(s, VKLLM_OK, "k_topk: %s", vkllm_last_error());
    cr_assert_eq(gpu_cmd_submit(cmd), VKLLM_OK, "%s", vkllm_last_error());
    topk_out o = {malloc((size_t)rows * k * 4), malloc((size_t)rows * k * 4),
                  malloc((size_t)rows * 16)};
    test_gpu_read(&ids, o.ids, (uint64_t)rows * k * 4);
    test_gpu_read(&vals, o.values, (uint64_t)rows * k * 4);
    test_gpu_read(&stats, o.stats, (uint64_t)rows * 16);
    test_gpu_free(&in);
    test_gpu_free(&temps);
    test_gpu_free(&ids);
    test_gpu_free(&vals);
    test_gpu_free(&stats);
    return o;
}

static void free_out(topk_out *o) {
    free(o->ids);
    free(o->values);
    free(o->stats);
}

static float *make_rows(uint64_t seed, uint32_t rows, uint32_t n, uint32_t stride, bool ties) {
    test_rng rng = test_rng_seeded(seed);
    float *x = malloc((size_t)rows * stride * 4);
    cr_assert(x);
    for (size_t i = 0; i < (size_t)rows * stride; i++) {
        float v = test_rng_uniform(&rng, -8.0f, 8.0f);
        if (ties) v = roundf(v * 0.5f) * 0.25f; /* 33 levels in [-2, 2] */
        uint32_t r = test_rng_below(&rng, 100);
        if (r == 0) v = -INFINITY;
        if (r == 1) v = NAN;
        if (r == 2) v = -0.0f;
        if (r == 3) v = 0.0f;
        x[i] = v;
    }
    return x;
}

static float test_value_head(uint32_t i) {
    return 14.0f + 0.4f * (float)i;
}

static void check_case(uint64_t seed, uint32_t rows, uint32_t n, uint32_t k, bool ties) {
    uint32_t stride = n + 3;
    float *x = make_rows(seed, rows, n, stride, ties);
    float inv_t[4] = {1.0f, 2.0f, 0.5f, 1.3f};
    topk_out o = run_topk(x, inv_t, rows, n, stride, k);
    int32_t *order = malloc(n * sizeof(int32_t));
    for (uint32_t r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * stride;
        for (uint32_t i = 0; i < n; i++)
            order[i] = (int32_t)i;
        g_row = row;
        qsort(order, n, sizeof(int32_t), ref_cmp);
        for (uint32_t j = 0; j < k; j++) {
            int32_t want = j < n ? order[j] : -1;
            int32_t got = o.ids[r * k + j];
            cr_assert_eq(got, want, "seed %llu n %u k %u ties %d row %u rank %u: id %d want %d",
                         (unsigned long long)seed, n, k, ties, r, j, got, want);
            float gv = o.values[r * k + j], wv = j < n ? row[want] : -INFINITY;
            cr_assert(memcmp(&gv, &wv, 4) == 0 || (isnan(gv) && isnan(wv)),
                      "seed %llu row %u rank %u: value %g want %g", (unsigned long long)seed, r, j,
                      (double)gv, (double)wv);
        }
        double m = -INFINITY, s1 = 0.0, s2 = 0.0;
        for (uint32_t i = 0; i < n; i++)
            if (!isnan(row[i]) && row[i] > m) m = row[i];
        for (uint32_t i = 0; i < n; i++) {
            if (isnan(row[i]) || m == -INFINITY) continue;
            s1 += exp((double)row[i] - m);
            s2 += exp(((double)row[i] - m) * inv_t[r]);
        }
        const float *st = o.stats + r * 4;
        cr_assert_eq(st[0], (float)m, "seed %llu row %u: max %g want %g", (unsigned long long)seed,
                     r, (double)st[0], m);
        cr_assert(fabs(st[1] - s1) <= 1e-4 * s1, "seed %llu row %u: sum %.7g want %.7g",
                  (unsigned long long)seed, r, (double)st[1], s1);
        cr_assert(fabs(st[2] - s2) <= 1e-4 * s2, "seed %llu row %u: tempered sum %.7g want %.7g",
                  (unsigned long long)seed, r, (double)st[2], s2);
        cr_assert_eq(st[3], 0.0f);
    }
    free(order);
    free_out(&o);
    free(x);
}

Test(sampler_gpu, topk_matches_cpu_reference) {
    const uint32_t sizes[] = {1, 7, 300, 4099, 70001};
    const uint32_t ks[] = {1, 5, 64, 256};
    uint64_t seed = 1;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
        for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
            check_case(seed++, 3, sizes[a], ks[b], false);
            check_case(seed++, 3, sizes[a], ks[b], true);
        }
}

Test(sampler_gpu, topk_gemma_sized_rows) {
    check_case(77, 2, 262144, 64, false);
    check_case(78, 2, 262144, 256, true);
}

Test(sampler_gpu, topk_rejects_bad_arguments) {
    gpu_buffer small = test_gpu_buffer_poisoned(64);
    gpu_buffer big = test_gpu_buffer_poisoned(4096);
    gpu_cmd *cmd = NULL;
    cr_assert_eq(gpu_cmd_begin(test_gpu(), &cmd), VKLLM_OK);
    gpu_binding b = bind(&big), s = bind(&small);
    cr_assert_eq(k_topk(test_gpu(), cmd, b, b, b, b, b, 1, 10, 10, 0), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "k 0 must be in 1..256"), "%s", vkllm_last_error());
    cr_assert_eq(k_topk(test_gpu(), cmd, b, b, b, b, b, 1, 10, 10, 257),
                 VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(k_topk(test_gpu(), cmd, b, b, b, b, b, 2, 10, 9, 4), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "row_stride 9 < n_cols 10"), "%s", vkllm_last_error());
    cr_assert_eq(k_topk(test_gpu(), cmd, s, b, b, b, b, 2, 10, 10, 4), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "binding logits covers 64 bytes but the op needs 80"),
              "%s", vkllm_last_error());
    cr_assert_eq(k_topk(test_gpu(), cmd, b, b, b, b, s, 5, 10, 10, 4), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "binding stats"), "%s", vkllm_last_error());
    cr_assert_eq(k_topk(test_gpu(), cmd, b, b, b, b, b, 0, 10, 10, 4), VKLLM_OK, "0 rows: no-op");
    cr_assert_eq(gpu_cmd_submit(cmd), VKLLM_OK);
    test_gpu_free(&small);
    test_gpu_free(&big);
}

/* ---------------------------------------------------------- the candidate path */

static sampler_candidates row_candidates(const topk_out *o, uint32_t r, uint32_t k) {
    return (sampler_candidates){.ids = o->ids + r * k,
                                .values = o->values + r * k,
                                .k = k,
                                .row_max = o->stats[r * 4],
                                .sum_exp = o->stats[r * 4 + 1],
                                .sum_exp_temp = o->stats[r * 4 + 2]};
}

Test(sampler_gpu, candidates_sample_like_the_full_row) {
    const uint32_t n = 50021, k = 64;
    float *x = make_rows(500, 1, n, n, false);
    for (uint32_t i = 0; i < n; i++)
        if (isnan(x[i])) x[i] = -INFINITY; /* the full-row sampler reads NaN as -inf too */
    for (uint32_t i = 0; i < 20; i++)
        x[i * 2477] = test_value_head(i); /* a head of 20 */
    sampler_workspace *ws = NULL;
    cr_assert_eq(sampler_workspace_create(n, &ws), VKLLM_OK);

    typedef struct cfg {
        float temperature, top_p, min_p;
        int32_t top_k, logprobs;
        bool closed; /* kept set decided inside the candidates: same token as full row */
    } cfg;
    const cfg cfgs[] = {
        {0.0f, 1.0f, 0.0f, 0, 5, true},    {0.8f, 1.0f, 0.0f, 40, 5, true},
        {1.0f, 0.9f, 0.0f, 50, -1, true},  {0.7f, 0.8f, 0.0f, 0, 3, true},
        {1.0f, 1.0f, 0.05f, 0, -1, true},  {1.0f, 1.0f, 0.0f, 0, -1, false},
        {1.5f, 0.95f, 0.02f, 64, 2, true},
    };
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        float inv_t = cfgs[c].temperature > 0 ? 1.0f / cfgs[c].temperature : 1.0f;
        topk_out o = run_topk(x, &inv_t, 1, n, n, k);
        sampler_candidates cand = row_candidates(&o, 0, k);
        sampler_params p = sampler_params_default();
        p.temperature = cfgs[c].temperature;
        p.top_p = cfgs[c].top_p;
        p.min_p = cfgs[c].min_p;
        p.top_k = cfgs[c].top_k;
        p.logprobs = cfgs[c].logprobs;
        cr_assert(sampler_candidates_usable(&p, k), "cfg %zu", c);
        sampler_state a, b;
        sampler_state_init(&a, 900 + c);
        sampler_state_init(&b, 900 + c);
        int complete_count = 0;
        for (int i = 0; i < 300; i++) {
            sampler_result rc, rf;
            bool complete;
            cr_assert_eq(sampler_sample_candidates(&p, &a, &cand, n, &rc, &complete), VKLLM_OK,
                         "%s", vkllm_last_error());
            if (!complete) {
                cr_assert(!cfgs[c].closed, "cfg %zu: closed kept set reported incomplete", c);
                cr_assert_eq(a.draws, b.draws, "an incomplete call consumed a draw");
                cr_assert_eq(sampler_sample(&p, &a, ws, x, n, NULL, 0, 0, &rc), VKLLM_OK);
            } else {
                complete_count++;
            }
            cr_assert_eq(sampler_sample(&p, &b, ws, x, n, NULL, 0, 0, &rf), VKLLM_OK);
            cr_assert_eq(a.draws, b.draws, "cfg %zu draw %d: streams out of step", c, i);
            if (cfgs[c].closed) {
                cr_assert_eq(rc.token, rf.token, "cfg %zu draw %d: token %d, full row %d", c, i,
                             rc.token, rf.token);
                cr_assert_eq(rc.n_kept, rf.n_kept, "cfg %zu: n_kept %u, full row %u", c, rc.n_kept,
                             rf.n_kept);
            }
            cr_assert_eq(rc.n_top, rf.n_top, "cfg %zu", c);
            if (complete)
                for (uint32_t j = 0; j < rc.n_top; j++) {
                    cr_assert_eq(rc.top_ids[j], rf.top_ids[j], "cfg %zu rank %u", c, j);
                    cr_assert(fabs(rc.top_logprobs[j] - rf.top_logprobs[j]) < 1e-4,
                              "cfg %zu rank %u: %g vs %g", c, j, (double)rc.top_logprobs[j],
                              (double)rf.top_logprobs[j]);
                }
        }
        if (cfgs[c].closed)
            cr_assert_eq(complete_count, 300, "cfg %zu", c);
        else
            cr_assert(complete_count > 200,
                      "cfg %zu: head of 20 holds most of the mass, "
                      "%d of 300 complete",
                      c, complete_count);
        free_out(&o);
    }
    /* penalties cannot use candidates */
    sampler_params p = sampler_params_default();
    p.repetition_penalty = 1.2f;
    cr_assert(!sampler_candidates_usable(&p, k));
    p = sampler_params_default();
    p.top_k = 65;
    cr_assert(!sampler_candidates_usable(&p, k), "top_k beyond the candidates");
    sampler_workspace_free(ws);
    free(x);
}
