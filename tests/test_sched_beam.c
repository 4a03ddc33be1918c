/* test_sched_beam.c: beam search requests in the engine core (engine/sched/sched_beam.c)
 * on lavapipe, with a tiny synthetic llama (n_vocab 48, no tokenizer, token-id prompts).
 *
 * The oracle is a beam search written again here, directly from the rule in exec/beam.h
 * (each live beam's 2W best raw log-softmax tokens; candidates ranked by sum; EOS
 * candidates join the pool wherever they rank; the best W others live on; HF's heuristic
 * early stop), run on logits of the CPU reference model (engine/ref/) recomputed from
 * scratch for every beam. It shares nothing with the engine path: not the GPU forward
 * pass, not the paged KV cache with its forks and copy-on-write, not sampler_top_logprobs
 * nor exec/beam.c. A wrong parent's KV, a missed copy-on-write or a wrong rearrangement of
 * the beams changes logits and so the hypotheses. Every hypothesis' sum is also
 * recomputed by one full-sequence reference pass. The GPU's fp16 K/V makes its sums
 * differ from the reference by up to ~6e-4 here (lavapipe); cases are only used when every
 * decision of the reference search (ranks, top-2W cut, pool entry, early stop) wins by
 * more than DECISION_MARGIN, so the comparison is exact for tokens and within SUM_TOL
 * for sums. (Enumerating every output is not an oracle for beam search, which is not
 * exhaustive; 48^4 outputs would also be too many.) */
// links: sched exec kv model ref gpu common
#include <math.h>

#include "ref/ref_forward.h"
#include "test_sched_fixture.h"

TestSuite(sched_beam, .fini = test_gpu_check_validation, .timeout = 600);

#define VOCAB 48
#define MAXT 8
#define MAXW 4
#define DECISION_MARGIN 5e-3
#define SUM_TOL 2e-3

/* ------------------------------------------------------------------ fixture */

static double ev_cum[SF_MAX_REQ][SF_MAX_SAMPLES], ev_score[SF_MAX_REQ][SF_MAX_SAMPLES];

static void on_event(const sched_event *ev, void *user) {
    sf_on_event(ev, user);
    if (ev->event.finish != VKLLM_FINISH_NONE) {
        ev_cum[ev->event.request][ev->event.index] = ev->cumulative_logprob;
        ev_score[ev->event.request][ev->event.index] = ev->beam_score;
    }
}

static ref_model *ref;

static void open_tiny(sf *f, uint32_t num_blocks, uint32_t max_tokens) {
    memset(f, 0, sizeof *f);
    memset(ev_cum, 0, sizeof ev_cum);
    memset(ev_score, 0, sizeof ev_score);
    for (int i = 0; i < SF_MAX_REQ; i++)
        f->rec[i].first_token_step = -1;
    synth_params p;
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    p.n_ctx = 512;
    p.n_vocab = VOCAB;
    p.seed = 11;
    uint64_t size;
    cr_assert(synth_write_memory(&p, &f->file_data, &size) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(gguf_open_memory(f->file_data, size, "synthetic", &f->gguf) == VKLLM_OK, "%s",
              vkllm_last_error());
    cr_assert(model_load(f->gguf, &f->cfg, &f->weights) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(ref_model_create(f->gguf, &ref) == VKLLM_OK, "%s", vkllm_last_error());
    exec_options o = {.block_size = 16,
                      .num_blocks = num_blocks,
                      .max_tokens = max_tokens,
                      .max_seqs = 16,
                      .max_context = 256};
    cr_assert(exec_model_create(test_gpu(), f->gguf, &f->cfg, &f->weights, &o, &f->gpu) == VKLLM_OK,
              "%s", vkllm_last_error());
    sched_config c;
    sched_config_default(&c);
    sf_tok = NULL;
    cr_assert(sched_engine_create(f->gpu, &f->cfg, NULL, &c, &f->eng) == VKLLM_OK, "%s",
              vkllm_last_error());
}

static void close_tiny(sf *f) {
    (void)sf_open; /* the shared fixture's opener; this file needs its own vocabulary */
    ref_model_destroy(ref);
    ref = NULL;
    sf_close(f);
}

static void reset(sf *f) {
    memset(ev_cum, 0, sizeof ev_cum);
    memset(ev_score, 0, sizeof ev_score);
    sf_reset_engine(f, NULL);
}

static void assert_all_blocks_free(sf *f, const char *what) {
    sched_stats s = sf_stats(f);
    cr_assert_eq(s.kv.blocks_used, 0, "%s: %u blocks still used", what, s.kv.blocks_used);
    cr_assert_eq(s.kv.blocks_free, s.kv.blocks_total, "%s: %u of %u blocks free", what,
                 s.kv.blocks_free, s.kv.blocks_total);
}

/* The EOS set of the tests: stop token ids 0 .. N_EOS-1 (no tokenizer, so no EOG ids). */
#define N_EOS 10
static const int32_t eos_ids[N_EOS] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};

static sched_request beam_request(sf *f, uint64_t id, const int32_t *prompt, size_t n,
                                  uint32_t width, uint32_t n_results, uint32_t max_tokens,
                                  float alpha, bool with_eos) {
    sched_request r = sf_greedy_request(f, id, prompt, n, max_tokens);
    r.on_event = on_event;
    r.beam_width = width;
    r.beam_search = true;
    r.length_penalty = alpha;
    r.sampling.n = n_results;
    r.sampling.ignore_eos = false;
    if (with_eos) {
        r.sampling.stop_token_ids = eos_ids;
        r.sampling.n_stop_token_ids = N_EOS;
    }
    return r;
}

/* ------------------------------------------------------------------ the oracle */

typedef struct rhyp {
    int32_t tokens[MAXT];
    uint32_t len;
    double sum, score;
    bool eos;
} rhyp;

typedef struct rcand {
    double sum;
    uint32_t parent;
    int32_t token;
} rcand;

static bool is_eos(int32_t t, bool with_eos) {
    return with_eos && t >= 0 && t < N_EOS;
}

static void margin_of(double *margin, double a, double b) {
    double d = fabs(a - b);
    if (d < *margin) *margin = d;
}

/* log-softmax (double) of the reference logits after prompt + prefix. */
static void ref_logprobs(const int32_t *prompt, uint32_t n_prompt, const int32_t *prefix,
                         uint32_t len, double *lp) {
    int32_t seq[64];
    cr_assert(n_prompt + len <= 64);
    memcpy(seq, prompt, n_prompt * sizeof *seq);
    memcpy(seq + n_prompt, prefix, len * sizeof *seq);
    float logits[VOCAB];
    cr_assert(ref_forward(ref, seq, n_prompt + len, 0, false, logits) == VKLLM_OK, "%s",
              vkllm_last_error());
    double m = -INFINITY, s = 0.0;
    for (int t = 0; t < VOCAB; t++)
        m = logits[t] > m ? logits[t] : m;
    for (int t = 0; t < VOCAB; t++)
        s += exp((double)logits[t] - m);
    for (int t = 0; t < VOCAB; t++)
        lp[t] = (double)logits[t] - m - log(s);
}

static int rcand_cmp(const void *x, const void *y) {
    const rcand *a = x, *b = y;
    if (a->sum != b->sum) return a->sum > b->sum ? -1 : 1;
    if (a->parent != b->parent) return a->parent < b->parent ? -1 : 1;
    return (a->token > b->token) - (a->token < b->token);
}

static double score_of(double sum, uint32_t len, float alpha) {
    return sum / pow((double)len, (double)alpha);
}

/* Keeps the best w by score, sorted; a newcomer must beat the worst strictly. */
static void pool_add(rhyp *pool, uint32_t *n, uint32_t w, const rhyp *h, double *margin) {
    if (*n == w) {
        margin_of(margin, h->score, pool[w - 1].score);
        if (!(h->score > pool[w - 1].score)) return;
        (*n)--;
    }
    uint32_t pos = *n;
    while (pos > 0 && pool[pos - 1].score < h->score) {
        pool[pos] = pool[pos - 1];
        pos--;
    }
    pool[pos] = *h;
    (*n)++;
}

/* The reference beam search (heuristic early stopping). Returns the pool (best first)
 * and the smallest margin by which any of its decisions was taken. */
static uint32_t ref_beam_search(const int32_t *prompt, uint32_t n_prompt, uint32_t w,
                                uint32_t max_tokens, float alpha, bool with_eos, rhyp *pool,
                                double *margin) {
    *margin = INFINITY;
    rhyp live[MAXW], next[MAXW];
    uint32_t n_live = 1, n_pool = 0, k = 2 * w;
    memset(live, 0, sizeof live);
    for (uint32_t len = 0; n_live > 0; len++) {
        rcand cands[MAXW * 2 * MAXW];
        uint32_t nc = 0;
        for (uint32_t b = 0; b < n_live; b++) {
            double lp[VOCAB];
            ref_logprobs(prompt, n_prompt, live[b].tokens, len, lp);
            bool taken[VOCAB] = {false};
            for (uint32_t j = 0; j <= k; j++) { /* the k best, then the first left out */
                int best = -1;
                for (int t = 0; t < VOCAB; t++)
                    if (!taken[t] && (best < 0 || lp[t] > lp[best])) best = t;
                taken[best] = true;
                if (j == k) {
                    margin_of(margin, lp[best], cands[nc - 1].sum - live[b].sum);
                    break;
                }
                cands[nc++] = (rcand){.sum = live[b].sum + lp[best], .parent = b, .token = best};
            }
        }
        qsort(cands, nc, sizeof *cands, rcand_cmp);
        for (uint32_t c = 1; c < nc; c++)
            margin_of(margin, cands[c - 1].sum, cands[c].sum);
        uint32_t n_next = 0;
        for (uint32_t c = 0; c < nc; c++) {
            rhyp h = live[cands[c].parent];
            h.tokens[len] = cands[c].token;
            h.len = len + 1;
            h.sum = cands[c].sum;
            if (is_eos(cands[c].token, with_eos)) {
                h.eos = true;
                h.score = score_of(h.sum, h.len, alpha);
                pool_add(pool, &n_pool, w, &h, margin);
            } else if (n_next < w) {
                next[n_next++] = h;
            }
        }
        memcpy(live, next, sizeof live);
        n_live = n_next;
        if (n_live && len + 1 >= max_tokens) {
            for (uint32_t i = 0; i < n_live; i++) {
                live[i].eos = false;
                live[i].score = score_of(live[i].sum, live[i].len, alpha);
                pool_add(pool, &n_pool, w, &live[i], margin);
            }
            break;
        }
        if (n_live && n_pool == w) {
            double bound = score_of(live[0].sum, len + 1, alpha);
            margin_of(margin, pool[w - 1].score, bound);
            if (pool[w - 1].score >= bound) break;
        }
    }
    for (uint32_t i = 1; i < n_pool; i++)
        margin_of(margin, pool[i - 1].score, pool[i].score);
    return n_pool;
}

/* Sum of the reference logprobs of `tokens` after the prompt, from one pass. */
static double ref_sum(const int32_t *prompt, uint32_t n_prompt, const int32_t *tokens,
                      uint32_t len) {
    int32_t seq[64];
    memcpy(seq, prompt, n_prompt * sizeof *seq);
    memcpy(seq + n_prompt, tokens, len * sizeof *seq);
    uint32_t n = n_prompt + len;
    float *logits = malloc((size_t)n * VOCAB * sizeof *logits);
    cr_assert(ref_forward(ref, seq, n, 0, true, logits) == VKLLM_OK, "%s", vkllm_last_error());
    double sum = 0.0;
    for (uint32_t i = 0; i < len; i++) {
        const float *row = logits + (size_t)(n_prompt - 1 + i) * VOCAB;
        double m = -INFINITY, s = 0.0;
        for (int t = 0; t < VOCAB; t++)
            m = row[t] > m ? row[t] : m;
        for (int t = 0; t < VOCAB; t++)
            s += exp((double)row[t] - m);
        sum += (double)row[tokens[i]] - m - log(s);
    }
    free(logits);
    return sum;
}

/* A prompt (from seeds start, start+1, ...) whose reference search is unambiguous. */
static uint64_t find_clear_case(int32_t *prompt, uint32_t n_prompt, uint32_t w, uint32_t max_tokens,
                                float alpha, bool with_eos, rhyp *pool, uint32_t *n_pool,
                                uint64_t start) {
    for (uint64_t seed = start; seed < start + 200; seed++) {
        sf_random_prompt(prompt, n_prompt, VOCAB, seed);
        double margin;
        *n_pool = ref_beam_search(prompt, n_prompt, w, max_tokens, alpha, with_eos, pool, &margin);
        if (margin > DECISION_MARGIN) return seed;
    }
    cr_assert_fail("no prompt with decision margins above %g in 200 seeds from %llu",
                   DECISION_MARGIN, (unsigned long long)start);
    return 0;
}

/* The engine's results of request `id` against the oracle's pool. */
static void check_results(sf *f, uint64_t id, const int32_t *prompt, uint32_t n_prompt,
                          const rhyp *pool, uint32_t n_results, float alpha, const char *what) {
    const sf_record *r = &f->rec[id];
    cr_assert(r->done, "%s: request not finished", what);
    cr_assert_eq(r->n_done_events, n_results, "%s: %u samples finished, expected %u", what,
                 r->n_done_events, n_results);
    for (uint32_t i = 0; i < n_results; i++) {
        const rhyp *h = &pool[i];
        cr_assert_eq(r->n_tokens[i], h->len, "%s: hypothesis %u has %u tokens, reference %u", what,
                     i, r->n_tokens[i], h->len);
        for (uint32_t t = 0; t < h->len; t++)
            cr_assert_eq(r->tokens[i][t], h->tokens[t],
                         "%s: hypothesis %u token %u is %d, reference %d", what, i, t,
                         r->tokens[i][t], h->tokens[t]);
        cr_assert_eq(r->finish[i], h->eos ? VKLLM_FINISH_STOP : VKLLM_FINISH_LENGTH,
                     "%s: hypothesis %u finish %d", what, i, r->finish[i]);
        double cum = ev_cum[id][i];
        cr_assert(fabs(cum - h->sum) < SUM_TOL, "%s: hypothesis %u sum %.6f, reference %.6f", what,
                  i, cum, h->sum);
        double full = ref_sum(prompt, n_prompt, h->tokens, h->len);
        cr_assert(fabs(full - h->sum) < 1e-4, "%s: reference sums disagree: %.6f vs %.6f", what,
                  full, h->sum);
        double expect = cum / pow((double)h->len, (double)alpha);
        cr_assert(fabs(ev_score[id][i] - expect) <= 1e-9 * (1 + fabs(expect)),
                  "%s: hypothesis %u score %.9f, sum/len^alpha = %.9f", what, i, ev_score[id][i],
                  expect);
    }
}

/* ------------------------------------------------------------------ tests */

/* Width 1 through the beam path is greedy decoding (2 candidates, the best lives on). */
Test(sched_beam, width_1_is_greedy) {
    sf f;
    open_tiny(&f, 64, 64);
    int32_t prompt[13];
    sf_random_prompt(prompt, 13, VOCAB, 3);
    sched_request g = sf_greedy_request(&f, 0, prompt, 13, 7);
    sched_request b = beam_request(&f, 1, prompt, 13, 1, 1, 7, 1.0f, false);
    b.sampling.ignore_eos = true;
    sf_add(&f, &g);
    sf_run(&f, 30);
    sf_add(&f, &b);
    sf_run(&f, 30);
    cr_assert_eq(f.rec[1].n_tokens[0], 7);
    for (int t = 0; t < 7; t++)
        cr_assert_eq(f.rec[1].tokens[0][t], f.rec[0].tokens[0][t],
                     "token %d: beam width 1 gave %d, greedy %d", t, f.rec[1].tokens[0][t],
                     f.rec[0].tokens[0][t]);
    cr_assert_eq(f.rec[1].finish[0], VKLLM_FINISH_LENGTH);
    double ref = ref_sum(prompt, 13, f.rec[0].tokens[0], 7);
    cr_assert(fabs(ev_cum[1][0] - ref) < SUM_TOL, "sum %.6f, reference %.6f", ev_cum[1][0], ref);
    assert_all_blocks_free(&f, "after width 1");
    close_tiny(&f);
}

/* W = 2 and 3, max_tokens 3 and 4, EOS ids 0..9: every hypothesis (n = W) equals the
 * oracle's, with its sum and score. Prompts of 14 tokens end mid-block, so children of
 * one parent share a partly filled block (copy-on-write) and cross a block boundary. */
Test(sched_beam, matches_reference_search) {
    sf f;
    open_tiny(&f, 64, 64);
    const uint32_t widths[] = {2, 3, 3}, maxes[] = {3, 4, 3}, lens[] = {14, 14, 5};
    for (int c = 0; c < 3; c++) {
        int32_t prompt[14];
        rhyp pool[MAXW];
        uint32_t n_pool;
        uint64_t seed = find_clear_case(prompt, lens[c], widths[c], maxes[c], 1.0f, true, pool,
                                        &n_pool, 100 + 1000 * (uint64_t)c);
        cr_assert_eq(n_pool, widths[c]);
        reset(&f);
        sched_request r =
            beam_request(&f, 0, prompt, lens[c], widths[c], widths[c], maxes[c], 1.0f, true);
        sf_add(&f, &r);
        sf_run(&f, 40);
        char what[96];
        snprintf(what, sizeof what, "W=%u max_tokens=%u prompt seed %llu", widths[c], maxes[c],
                 (unsigned long long)seed);
        check_results(&f, 0, prompt, lens[c], pool, widths[c], 1.0f, what);
        assert_all_blocks_free(&f, what);
        sched_stats s = sf_stats(&f);
        cr_assert_eq(s.api.requests_finished, 1);
        cr_assert(s.kv.cow_copies > 0 || lens[c] % 16 == 0, "%s: no copy-on-write", what);
    }
    close_tiny(&f);
}

/* The length penalty changes which hypothesis wins: a case where alpha 0 (plain sum:
 * short wins) and alpha 2 (long favoured) pick different best hypotheses, the alpha 2
 * one longer; both runs equal the oracle, scores follow sum / len^alpha. */
Test(sched_beam, length_penalty_changes_choice) {
    sf f;
    open_tiny(&f, 64, 64);
    int32_t prompt[9];
    rhyp p0[MAXW], p2[MAXW];
    uint32_t n0 = 0, n2 = 0;
    uint64_t seed = 0;
    double m0 = 0, m2 = 0;
    for (seed = 500; seed < 800; seed++) {
        sf_random_prompt(prompt, 9, VOCAB, seed);
        n0 = ref_beam_search(prompt, 9, 3, 4, 0.0f, true, p0, &m0);
        n2 = ref_beam_search(prompt, 9, 3, 4, 2.0f, true, p2, &m2);
        if (m0 > DECISION_MARGIN && m2 > DECISION_MARGIN && n0 && n2 && p2[0].len > p0[0].len)
            break;
    }
    cr_assert(seed < 800, "no prompt where the length penalty matters");
    sched_request r0 = beam_request(&f, 0, prompt, 9, 3, n0, 4, 0.0f, true);
    sched_request r2 = beam_request(&f, 1, prompt, 9, 3, n2, 4, 2.0f, true);
    sf_add(&f, &r0);
    sf_add(&f, &r2);
    sf_run(&f, 40);
    check_results(&f, 0, prompt, 9, p0, n0, 0.0f, "alpha 0");
    check_results(&f, 1, prompt, 9, p2, n2, 2.0f, "alpha 2");
    cr_assert(f.rec[1].n_tokens[0] > f.rec[0].n_tokens[0],
              "alpha 2 best has %u tokens, alpha 0 best %u (prompt seed %llu)",
              f.rec[1].n_tokens[0], f.rec[0].n_tokens[0], (unsigned long long)seed);
    assert_all_blocks_free(&f, "after both");
    close_tiny(&f);
}

/* Cancel mid-search: every beam's blocks are free at once, n cancel events, stats. */
Test(sched_beam, cancel_frees_all_beams) {
    sf f;
    open_tiny(&f, 64, 64);
    int32_t prompt[20];
    sf_random_prompt(prompt, 20, VOCAB, 8);
    sched_request r = beam_request(&f, 0, prompt, 20, 3, 2, 40, 1.0f, false);
    r.sampling.ignore_eos = true;
    sf_add(&f, &r);
    for (int i = 0; i < 4; i++)
        sf_step(&f);
    sched_stats s = sf_stats(&f);
    cr_assert_eq(s.seqs_running, 3, "%u beams running", s.seqs_running);
    cr_assert(s.kv.blocks_used >= 3, "%u blocks for 3 beams", s.kv.blocks_used);
    cr_assert_eq(f.rec[0].n_done_events, 0);
    cr_assert_eq(sched_engine_cancel(f.eng, 0), VKLLM_OK, "%s", vkllm_last_error());
    assert_all_blocks_free(&f, "cancel mid-search");
    cr_assert(f.rec[0].done);
    cr_assert_eq(f.rec[0].n_done_events, 2);
    cr_assert_eq(f.rec[0].finish[0], VKLLM_FINISH_CANCELLED);
    cr_assert_eq(f.rec[0].finish[1], VKLLM_FINISH_CANCELLED);
    cr_assert(!sched_engine_has_work(f.eng));
    s = sf_stats(&f);
    cr_assert_eq(s.api.requests_cancelled, 1);

    /* cancelled while waiting, and a finished search frees everything too */
    sched_request w = beam_request(&f, 1, prompt, 20, 2, 1, 5, 1.0f, false);
    sf_add(&f, &w);
    cr_assert_eq(sched_engine_cancel(f.eng, 1), VKLLM_OK);
    cr_assert_eq(f.rec[1].finish[0], VKLLM_FINISH_CANCELLED);
    sched_request d = beam_request(&f, 2, prompt, 20, 3, 3, 6, 1.0f, true);
    sf_add(&f, &d);
    sf_run(&f, 40);
    cr_assert(f.rec[2].done);
    assert_all_blocks_free(&f, "after a finished search");
    s = sf_stats(&f);
    cr_assert_eq(s.api.requests_cancelled, 2);
    cr_assert_eq(s.api.requests_finished, 1);
    close_tiny(&f);
}

/* A beam request batched with ordinary requests leaves their outputs unchanged, and its
 * own results equal those it gets alone. */
Test(sched_beam, batched_with_sampling_requests) {
    sf f;
    open_tiny(&f, 64, 64);
    int32_t pa[17], pb[6], pc[11];
    sf_random_prompt(pa, 17, VOCAB, 41);
    sf_random_prompt(pb, 6, VOCAB, 42);
    sf_random_prompt(pc, 11, VOCAB, 43);
    sched_request a = sf_greedy_request(&f, 0, pa, 17, 8);
    sched_request b = sf_greedy_request(&f, 1, pb, 6, 5);
    sched_request beam = beam_request(&f, 2, pc, 11, 3, 3, 6, 1.0f, true);
    sf_add(&f, &a);
    sf_run(&f, 30);
    sf_add(&f, &b);
    sf_run(&f, 30);
    sf_add(&f, &beam);
    sf_run(&f, 30);
    sf_record alone[3];
    memcpy(alone, f.rec, sizeof alone);
    double cum_alone[SF_MAX_SAMPLES];
    memcpy(cum_alone, ev_cum[2], sizeof cum_alone);

    reset(&f);
    a.sampling.n = 2; /* n > 1 forks next to the beams' forks */
    a.sampling.temperature = 0;
    sf_add(&f, &a);
    sf_add(&f, &beam);
    sf_add(&f, &b);
    sf_run(&f, 40);
    cr_assert_eq(f.max_seqs_seen >= 5, true, "never ran together (%u seqs at most)",
                 f.max_seqs_seen);
    for (int s = 0; s < 2; s++) {
        cr_assert_eq(f.rec[0].n_tokens[s], 8);
        for (int t = 0; t < 8; t++)
            cr_assert_eq(f.rec[0].tokens[s][t], alone[0].tokens[0][t], "A sample %d token %d", s,
                         t);
    }
    cr_assert_eq(f.rec[1].n_tokens[0], 5);
    for (int t = 0; t < 5; t++)
        cr_assert_eq(f.rec[1].tokens[0][t], alone[1].tokens[0][t], "B token %d", t);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(f.rec[2].n_tokens[i], alone[2].n_tokens[i], "beam %d length", i);
        for (uint32_t t = 0; t < alone[2].n_tokens[i]; t++)
            cr_assert_eq(f.rec[2].tokens[i][t], alone[2].tokens[i][t], "beam %d token %u", i, t);
        cr_assert(fabs(ev_cum[2][i] - cum_alone[i]) < 1e-3);
    }
    assert_all_blocks_free(&f, "after the batch");
    close_tiny(&f);
}

/* A pool too small for an ordinary request and the beams together (12 blocks of 16; the
 * other request holds 8 to 10, the beams need 4 after their first step and 3 more a few
 * tokens later): the beam request, arrived last, is preempted (recompute) and brought
 * back; its results equal those of a run alone. */
Test(sched_beam, preempted_search_resumes) {
    sf f;
    open_tiny(&f, 12, 64);
    int32_t prompt[30], other[120];
    sf_random_prompt(prompt, 30, VOCAB, 61);
    sf_random_prompt(other, 120, VOCAB, 62);
    sched_config c;
    sched_config_default(&c);
    c.watermark_blocks = 0;
    sf_reset_engine(&f, &c);
    sched_request beam = beam_request(&f, 0, prompt, 30, 3, 3, 20, 1.0f, false);
    beam.sampling.ignore_eos = true;
    sf_add(&f, &beam);
    sf_run(&f, 60);
    sf_record alone = f.rec[0];
    cr_assert_eq(alone.n_done_events, 3);

    sf_reset_engine(&f, &c);
    sched_request hog = sf_greedy_request(&f, 1, other, 120, 40);
    sf_add(&f, &hog);
    sf_step(&f);
    sf_add(&f, &beam);
    sf_run(&f, 400);
    sched_stats s = sf_stats(&f);
    cr_assert(s.preemptions_recompute > 0, "the beams were never preempted");
    cr_assert_eq(f.rec[1].n_tokens[0], 40);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(f.rec[0].n_tokens[i], alone.n_tokens[i]);
        for (uint32_t t = 0; t < alone.n_tokens[i]; t++)
            cr_assert_eq(f.rec[0].tokens[i][t], alone.tokens[i][t], "beam %d token %u", i, t);
    }
    assert_all_blocks_free(&f, "after preemption");
    close_tiny(&f);
}

/* Requests beam search cannot serve are refused with the field named. */
Test(sched_beam, refuses_unsupported_requests) {
    sf f;
    open_tiny(&f, 64, 64);
    int32_t prompt[4] = {1, 2, 3, 4};
    sched_request r = beam_request(&f, 0, prompt, 4, 2, 3, 4, 1.0f, false);
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "exceeds beam_width"), "%s", vkllm_last_error());
    r = beam_request(&f, 0, prompt, 4, 17, 1, 4, 1.0f, false);
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "max_running_seqs"), "%s", vkllm_last_error());
    r = beam_request(&f, 0, prompt, 4, 2, 1, 4, 1.0f, false);
    r.sampling.logprobs = 2;
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_UNSUPPORTED);
    cr_assert(strstr(vkllm_last_error(), "logprobs"), "%s", vkllm_last_error());
    const char *stops[1] = {"x"};
    r = beam_request(&f, 0, prompt, 4, 2, 1, 4, 1.0f, false);
    r.sampling.stop_strings = stops;
    r.sampling.n_stop_strings = 1;
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_UNSUPPORTED);
    cr_assert(strstr(vkllm_last_error(), "stop strings"), "%s", vkllm_last_error());
    r = beam_request(&f, 0, prompt, 4, 2, 1, 4, NAN, false);
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "length_penalty"), "%s", vkllm_last_error());
    cr_assert(!sched_engine_has_work(f.eng));
    close_tiny(&f);
}
