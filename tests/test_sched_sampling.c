/* test_sched_sampling.c: sampling from GPU top-k candidates in the engine core
 * (sched_engine.c + exec_step_ex + k_topk) on lavapipe, against the full-row path
 * (sched_config.full_row_sampling) as the reference.
 *
 * The synthetic llama has 256 tokens, so the engine takes k = 64 candidates per row.
 * With fixed seeds, the tokens of seeded sampled requests must be identical either way:
 *   - temperature 0.8, top_k 40, top_p 0.95 (the kept set always closes inside the
 *     candidates: no fallback; the readback is k ids + k values + 4 stats per row);
 *   - temperature 3, top_p 0.99 (flat: some rows do not close inside the candidates and
 *     fetch their full row after the step; the stats must show such fallbacks), with an
 *     n = 2 request sharing one fetched row;
 *   - a repetition penalty (never candidates: the full row with the step).
 * The readback counter must equal the bytes the row modes imply, exactly. */
// links: sched exec kv model gpu common
#include "test_sched_fixture.h"

TestSuite(sched_sampling, .fini = test_gpu_check_validation, .timeout = 300);

#define N_REQ 6
#define MAX_NEW 12
#define PROMPT_SEED 777
#define K_EXPECTED 64u /* n_vocab 256 / 4 */

typedef struct sampling_case {
    float temperature, top_p, repetition_penalty;
    int32_t top_k;
    uint32_t n; /* samples of request 0 */
} sampling_case;

/* Runs N_REQ seeded requests (request 5 greedy, for argmax rows in the same steps) and
 * keeps their records and the stats. */
static void run_case(sf *f, const sampling_case *c, bool full_rows, sf_record *out,
                     sched_stats *stats) {
    sched_config config;
    sched_config_default(&config);
    config.full_row_sampling = full_rows;
    sf_reset_engine(f, &config);
    int32_t prompts[N_REQ][24];
    for (uint32_t i = 0; i < N_REQ; i++) {
        sf_random_prompt(prompts[i], 5 + 3 * i, f->cfg.n_vocab, PROMPT_SEED + i);
        sched_request r = sf_greedy_request(f, i, prompts[i], 5 + 3 * i, MAX_NEW);
        if (i + 1 < N_REQ) {
            r.sampling.temperature = c->temperature;
            r.sampling.top_k = c->top_k;
            r.sampling.top_p = c->top_p;
            r.sampling.repetition_penalty = c->repetition_penalty;
            r.sampling.has_seed = true;
            r.sampling.seed = 1000 + i;
            if (i == 0) r.sampling.n = c->n;
        }
        sf_add(f, &r);
    }
    sf_run(f, 200);
    memcpy(out, f->rec, N_REQ * sizeof *out);
    *stats = sf_stats(f);
}

/* The same tokens with candidates on and off; the readback bytes as the modes imply. */
static void check_case(const sampling_case *c, const char *name, bool expect_fallback) {
    sf f;
    sf_open(&f, (exec_options){.max_seqs = 8}, NULL);
    static sf_record gpu_rec[N_REQ], full_rec[N_REQ];
    sched_stats gs, fs;
    run_case(&f, c, false, gpu_rec, &gs);
    run_case(&f, c, true, full_rec, &fs);
    for (uint32_t i = 0; i < N_REQ; i++) {
        uint32_t samples = i == 0 ? c->n : 1;
        for (uint32_t s = 0; s < samples; s++) {
            cr_assert_eq(gpu_rec[i].n_tokens[s], MAX_NEW, "%s: request %u sample %u: %u tokens",
                         name, i, s, gpu_rec[i].n_tokens[s]);
            cr_assert_eq(full_rec[i].n_tokens[s], MAX_NEW);
            for (uint32_t t = 0; t < MAX_NEW; t++)
                cr_assert_eq(gpu_rec[i].tokens[s][t], full_rec[i].tokens[s][t],
                             "%s: request %u (seed %u) sample %u token %u: %d from candidates, "
                             "%d from full rows",
                             name, i, 1000 + i, s, t, gpu_rec[i].tokens[s][t],
                             full_rec[i].tokens[s][t]);
        }
    }
    uint64_t row_bytes = (uint64_t)f.cfg.n_vocab * 4, cand_bytes = 2 * K_EXPECTED * 4 + 16;
    /* full-row reference: no candidates, every sampled row read whole; the rest is the
     * argmax ids (4 bytes per logits row of each step that has a greedy row) */
    cr_assert_eq(fs.rows_candidates_total, 0);
    cr_assert_eq(fs.rows_fallback_total, 0);
    cr_assert(fs.rows_argmax_total > 0, "%s: the greedy request used no argmax row", name);
    uint64_t all_rows = fs.rows_argmax_total + fs.rows_full_total;
    cr_assert(fs.readback_bytes_total >= fs.rows_full_total * row_bytes);
    uint64_t argmax_bytes = fs.readback_bytes_total - fs.rows_full_total * row_bytes;
    cr_assert(argmax_bytes >= fs.rows_argmax_total * 4 && argmax_bytes <= all_rows * 4 &&
                  argmax_bytes % 4 == 0,
              "%s: full-row readback %llu bytes: %llu left for argmax ids of %llu rows", name,
              (unsigned long long)fs.readback_bytes_total, (unsigned long long)argmax_bytes,
              (unsigned long long)all_rows);
    /* candidates: k candidates per row, the full row only for fallbacks (same steps, so
     * the same argmax bytes) */
    cr_assert_eq(gs.rows_argmax_total, fs.rows_argmax_total);
    cr_assert_eq(gs.rows_candidates_total + gs.rows_full_total, fs.rows_full_total);
    /* k_topk runs over every logits row of a step that has candidate rows: the greedy
     * request decodes in the same steps as the sampled ones (all admitted at once, same
     * max_tokens), so its rows carry candidates too */
    uint64_t cand_rows = gs.rows_candidates_total;
    if (cand_rows) cand_rows += gs.rows_argmax_total;
    uint64_t expect = cand_rows * cand_bytes + argmax_bytes +
                      (gs.rows_full_total + gs.rows_fallback_total) * row_bytes;
    cr_assert_eq(gs.readback_bytes_total, expect,
                 "%s: candidate readback %llu bytes, expected %llu (%llu candidate rows, %llu "
                 "fallbacks, %llu full rows)",
                 name, (unsigned long long)gs.readback_bytes_total, (unsigned long long)expect,
                 (unsigned long long)gs.rows_candidates_total,
                 (unsigned long long)gs.rows_fallback_total,
                 (unsigned long long)gs.rows_full_total);
    if (c->repetition_penalty == 1.0f) {
        cr_assert_eq(gs.rows_full_total, 0, "%s: rows read whole without penalties", name);
        if (!expect_fallback) cr_assert(gs.readback_bytes_total < fs.readback_bytes_total);
    } else {
        cr_assert_eq(gs.rows_candidates_total, 0, "%s: penalties need the full row", name);
    }
    if (expect_fallback)
        cr_assert(gs.rows_fallback_total > 0 && gs.rows_fallback_total < gs.rows_candidates_total,
                  "%s: %llu fallbacks of %llu candidate rows (expected some, not all)", name,
                  (unsigned long long)gs.rows_fallback_total,
                  (unsigned long long)gs.rows_candidates_total);
    else
        cr_assert_eq(gs.rows_fallback_total, 0, "%s: %llu fallbacks", name,
                     (unsigned long long)gs.rows_fallback_total);
    sf_close(&f);
}

Test(sched_sampling, top_k_top_p_candidates_match_full_rows) {
    sampling_case c = {
        .temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .repetition_penalty = 1, .n = 1};
    check_case(&c, "T 0.8 top_k 40 top_p 0.95", false);
}

Test(sched_sampling, flat_top_p_falls_back_to_full_rows) {
    sampling_case c = {.temperature = 1.0f, .top_p = 0.9f, .repetition_penalty = 1, .n = 2};
    check_case(&c, "T 1 top_p 0.9 n 2", true);
}

Test(sched_sampling, penalties_read_full_rows) {
    sampling_case c = {
        .temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .repetition_penalty = 1.3f, .n = 1};
    check_case(&c, "repetition penalty 1.3", false);
}

Test(sched_sampling, read_logits_row_checks_the_row) {
    sf f;
    sf_open(&f, (exec_options){0}, NULL);
    float row[256];
    cr_assert_eq(exec_read_logits_row(f.gpu, 0, row), VKLLM_ERR_INVALID_ARGUMENT,
                 "no step ran yet");
    int32_t prompt[4] = {1, 2, 3, 4};
    sched_request r = sf_greedy_request(&f, 0, prompt, 4, 1);
    sf_add(&f, &r);
    sf_run(&f, 10);
    cr_assert_eq(f.cfg.n_vocab, 256);
    cr_assert_eq(exec_read_logits_row(f.gpu, 0, row), VKLLM_OK, "%s", vkllm_last_error());
    uint32_t best = 0; /* the greedy token came from the GPU argmax of this very row */
    for (uint32_t t = 1; t < 256; t++)
        if (row[t] > row[best]) best = t;
    cr_assert_eq(f.rec[0].tokens[0][0], (int32_t)best, "argmax %d, row's best %u",
                 f.rec[0].tokens[0][0], best);
    cr_assert_eq(exec_read_logits_row(f.gpu, 1, row), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "row 1 beyond"), "message: %s", vkllm_last_error());
    sf_close(&f);
}
