/* test_sched_batch.c: batch invariance of the engine core (engine/sched/) on lavapipe.
 *
 * 32 greedy requests with prompts of 1..200 tokens run together with continuous
 * batching and chunked prefill (token budget 64) must produce exactly the tokens each
 * produces when it runs alone on a fresh engine. The same holds when a tiny KV pool
 * forces preemption, by recompute and by swap (the stats must show preemptions of the
 * chosen kind). Seeds are fixed and printed in messages. */
// links: sched exec kv model gpu common
#include "test_sched_fixture.h"

TestSuite(sched_batch, .fini = test_gpu_check_validation, .timeout = 600);

#define N_REQ 32
#define MAX_NEW 24
#define BUDGET 64
#define PROMPT_SEED 1234

typedef struct workload {
    int32_t prompts[N_REQ][200];
    uint32_t lens[N_REQ];
} workload;

static void make_workload(workload *w, uint32_t vocab) {
    test_rng rng = test_rng_seeded(PROMPT_SEED);
    for (uint32_t i = 0; i < N_REQ; i++) {
        w->lens[i] = i == 0 ? 1 : i == 1 ? 200 : 1 + test_rng_below(&rng, 200);
        sf_random_prompt(w->prompts[i], w->lens[i], vocab, PROMPT_SEED + i);
    }
}

static exec_options options(uint32_t num_blocks, uint32_t host_blocks) {
    return (exec_options){.num_blocks = num_blocks,
                          .max_tokens = BUDGET,
                          .max_seqs = N_REQ,
                          .max_context = 256,
                          .num_host_blocks = host_blocks};
}

/* Each request alone on a fresh engine: the expected outputs. */
static void run_alone(sf *f, const workload *w, int32_t out[N_REQ][MAX_NEW]) {
    for (uint32_t i = 0; i < N_REQ; i++) {
        sf_reset_engine(f, NULL);
        sched_request r = sf_greedy_request(f, i, w->prompts[i], w->lens[i], MAX_NEW);
        sf_add(f, &r);
        sf_run(f, 100);
        cr_assert_eq(f->rec[i].n_tokens[0], MAX_NEW, "alone %u: %u tokens", i,
                     f->rec[i].n_tokens[0]);
        memcpy(out[i], f->rec[i].tokens[0], sizeof out[i]);
    }
}

static void run_together_and_compare(sf *f, const workload *w, int32_t alone[N_REQ][MAX_NEW],
                                     const sched_config *config, const char *what,
                                     uint32_t min_seqs_per_step) {
    sf_reset_engine(f, config);
    for (uint32_t i = 0; i < N_REQ; i++) {
        sched_request r = sf_greedy_request(f, i, w->prompts[i], w->lens[i], MAX_NEW);
        sf_add(f, &r);
    }
    sf_run(f, 2000);
    for (uint32_t i = 0; i < N_REQ; i++) {
        const sf_record *r = &f->rec[i];
        cr_assert(r->done, "%s: request %u never finished", what, i);
        cr_assert_eq(r->finish[0], VKLLM_FINISH_LENGTH, "%s: request %u finish %d (%s)", what, i,
                     r->finish[0], r->error_message);
        cr_assert_eq(r->n_tokens[0], MAX_NEW, "%s: request %u got %u tokens", what, i,
                     r->n_tokens[0]);
        for (uint32_t t = 0; t < MAX_NEW; t++)
            cr_assert_eq(r->tokens[0][t], alone[i][t],
                         "%s: request %u (prompt %u tokens, seed %d) token %u is %d batched, %d "
                         "alone",
                         what, i, w->lens[i], PROMPT_SEED + (int)i, t, r->tokens[0][t],
                         alone[i][t]);
    }
    /* Continuous batching really happened: many sequences and full budgets per step. */
    cr_assert(f->max_seqs_seen >= min_seqs_per_step, "%s: at most %u sequences per step", what,
              f->max_seqs_seen);
    cr_assert_eq(f->max_step_tokens_seen, BUDGET, "%s: largest step %u tokens", what,
                 f->max_step_tokens_seen);
    sched_stats s = sf_stats(f);
    cr_assert_eq(s.kv.blocks_used, 0, "%s: %u blocks still used", what, s.kv.blocks_used);
    cr_assert_eq(s.api.requests_finished, N_REQ);
    cr_assert_eq(s.api.generation_tokens_total, (uint64_t)N_REQ * MAX_NEW);
}

Test(sched_batch, continuous_batching_matches_alone) {
    static workload w;
    static int32_t alone[N_REQ][MAX_NEW];
    sf f;
    sf_open(&f, options(512, 0), NULL);
    make_workload(&w, f.cfg.n_vocab);
    run_alone(&f, &w, alone);
    run_together_and_compare(&f, &w, alone, NULL, "no pressure", 16);
    sched_stats s = sf_stats(&f);
    cr_assert_eq(s.api.preemptions_total, 0, "preempted %llu times with a large pool",
                 (unsigned long long)s.api.preemptions_total);
    sf_close(&f);
}

Test(sched_batch, preemption_by_recompute_and_swap_matches_alone) {
    static workload w;
    static int32_t alone[N_REQ][MAX_NEW];
    sf f;
    /* 40 blocks of 16 tokens hold ~3 of the longest requests: constant pressure. */
    sf_open(&f, options(40, 256), NULL);
    make_workload(&w, f.cfg.n_vocab);
    run_alone(&f, &w, alone);

    sched_config c;
    sched_config_default(&c);
    run_together_and_compare(&f, &w, alone, &c, "recompute", 3);
    sched_stats s = sf_stats(&f);
    cr_assert(s.preemptions_recompute > 0, "no preemption by recompute happened");
    cr_assert_eq(s.preemptions_swap, 0);

    c.preempt_mode = SCHED_PREEMPT_SWAP;
    run_together_and_compare(&f, &w, alone, &c, "swap", 3);
    s = sf_stats(&f);
    cr_assert(s.preemptions_swap > 0, "no preemption by swap happened");
    cr_assert(s.kv.swapped_out_blocks > 0 && s.kv.swapped_in_blocks > 0,
              "swap: %llu blocks out, %llu in", (unsigned long long)s.kv.swapped_out_blocks,
              (unsigned long long)s.kv.swapped_in_blocks);
    cr_assert_eq(s.kv.host_blocks_used, 0);
    sf_close(&f);
}
