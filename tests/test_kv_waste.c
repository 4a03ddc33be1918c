/* test_kv_waste.c: KV memory waste of the paged block manager against the pre-vLLM
 * contiguous reservation, under a long-tailed (ShareGPT-like) workload.
 *
 * Workload: prompt and output lengths drawn from log-normal distributions with
 * ShareGPT's means (prompt 161, output 338 tokens; sigma 1.0), filtered as vLLM's
 * benchmarks do (drop pairs under 4 tokens, prompts over 1024, prompt + output over
 * 2048). Each admitted request is observed at a random point of its generation
 * (prompt plus a uniform share of its output already in the cache). Requests are
 * admitted in order into the same KV memory until the first refusal:
 *  - paged: the prompt is allocated block by block, generated tokens appended;
 *  - contiguous: each request reserves the longest sequence it may become (the
 *    2048-token context), as a server must when the output length is unknown.
 * The paged cache must waste under 4% of its allocated slots (only the tail of each
 * sequence's last block); the reservation wastes most of its memory. */
// links: kv common
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "common/test_util.h"
#include "kv/kv_contig.h"
#include "kv/kv_manager.h"

enum { CAPACITY_SLOTS = 65536, BLOCK_SIZE = 16, MAX_CONTEXT = 2048, N_REQUESTS = 2000 };

typedef struct request_len {
    uint32_t prompt, generated;
} request_len;

static double standard_normal(test_rng *rng) { /* Box-Muller */
    double u1 = test_rng_uniform(rng, 1e-12f, 1.0f), u2 = test_rng_uniform(rng, 0.0f, 1.0f);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* A log-normal length with the given mean and sigma (mu = ln(mean) - sigma^2 / 2). */
static uint32_t lognormal_len(test_rng *rng, double mean, double sigma) {
    double mu = log(mean) - sigma * sigma / 2;
    return (uint32_t)llround(exp(mu + sigma * standard_normal(rng)));
}

static size_t draw_workload(request_len *out, size_t n, uint64_t seed) {
    test_rng rng = test_rng_seeded(seed);
    size_t kept = 0;
    while (kept < n) {
        uint32_t prompt = lognormal_len(&rng, 161, 1.0), output = lognormal_len(&rng, 338, 1.0);
        if (prompt < 4 || output < 4 || prompt > 1024 || prompt + output > MAX_CONTEXT) continue;
        out[kept].prompt = prompt;
        out[kept].generated = test_rng_below(&rng, output + 1);
        kept++;
    }
    return kept;
}

Test(kv_waste, paged_under_4_percent_on_long_tailed_workload) {
    const uint64_t seeds[] = {1, 2, 3};
    for (size_t si = 0; si < sizeof seeds / sizeof seeds[0]; si++) {
        request_len *reqs = malloc(N_REQUESTS * sizeof *reqs);
        draw_workload(reqs, N_REQUESTS, seeds[si]);

        kv_config config = {.block_size = BLOCK_SIZE,
                            .num_device_blocks = CAPACITY_SLOTS / BLOCK_SIZE};
        kv_manager *paged;
        cr_assert_eq(kv_manager_create(&config, &paged), VKLLM_OK, "%s", vkllm_last_error());
        int32_t *tokens = malloc(MAX_CONTEXT * sizeof *tokens);
        kv_ops ops = {0};
        uint32_t fit_paged = 0;
        for (; fit_paged < N_REQUESTS; fit_paged++) {
            const request_len *r = &reqs[fit_paged];
            uint32_t total = r->prompt + r->generated;
            for (uint32_t t = 0; t < total; t++)
                tokens[t] = (int32_t)(fit_paged * 4096 + t);
            if (kv_manager_can_allocate(paged, tokens, r->prompt, 0) != KV_ALLOC_OK) break;
            kv_seq_id seq;
            size_t computed;
            if (kv_manager_allocate(paged, tokens, r->prompt, 0, &seq, &computed) != VKLLM_OK)
                break;
            if (!kv_manager_can_append(paged, seq, r->generated)) {
                kv_manager_free(paged, seq);
                break;
            }
            cr_assert_eq(
                kv_manager_append(paged, seq, tokens + r->prompt, r->generated, &ops, NULL),
                VKLLM_OK, "%s", vkllm_last_error());
        }
        kv_stats paged_stats;
        kv_manager_stats(paged, &paged_stats);

        kv_contig *contig;
        cr_assert_eq(kv_contig_create(CAPACITY_SLOTS, &contig), VKLLM_OK);
        uint32_t fit_contig = 0;
        for (; fit_contig < N_REQUESTS; fit_contig++) {
            const request_len *r = &reqs[fit_contig];
            kv_seq_id seq;
            if (kv_contig_allocate(contig, MAX_CONTEXT, r->prompt, &seq) != VKLLM_OK) break;
            if (r->generated)
                cr_assert_eq(kv_contig_append(contig, seq, r->generated), VKLLM_OK, "%s",
                             vkllm_last_error());
        }
        kv_stats contig_stats;
        kv_contig_stats(contig, &contig_stats);

        cr_log_info("seed %llu: %u KV slots; paged holds %u sequences, waste %.2f%%; "
                    "contiguous reservation holds %u, waste %.1f%%",
                    (unsigned long long)seeds[si], CAPACITY_SLOTS, fit_paged,
                    100 * paged_stats.waste, fit_contig, 100 * contig_stats.waste);
        cr_assert(fit_paged < N_REQUESTS, "the workload must fill the KV memory");
        cr_assert(paged_stats.waste < 0.04, "seed %llu: paged waste %.4f",
                  (unsigned long long)seeds[si], paged_stats.waste);
        cr_assert(contig_stats.waste > 0.5, "seed %llu: contiguous waste %.4f",
                  (unsigned long long)seeds[si], contig_stats.waste);
        cr_assert(fit_paged > 2 * fit_contig, "paged %u vs contiguous %u sequences", fit_paged,
                  fit_contig);

        kv_ops_destroy(&ops);
        kv_contig_destroy(contig);
        kv_manager_destroy(paged);
        free(tokens);
        free(reqs);
    }
}
