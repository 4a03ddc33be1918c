/* test_sched_lifecycle.c: request life cycle in the engine core (engine/sched/) on
 * lavapipe: prefix sharing, cancellation, rejection of requests that can never fit,
 * the running-sequence limit and FCFS order, n > 1 samples sharing the prompt, and
 * streamed text with stop strings. */
// links: sched exec kv model gpu common
#include "test_sched_fixture.h"

TestSuite(sched_life, .fini = test_gpu_check_validation, .timeout = 600);

static exec_options opts(uint32_t num_blocks, uint32_t max_tokens) {
    return (exec_options){
        .num_blocks = num_blocks, .max_tokens = max_tokens, .max_seqs = 16, .max_context = 512};
}

/* B shares a 200-token prefix with A: after A finished, B hits floor(200/16)*16 = 192
 * cached tokens, runs only the rest through the forward pass, and generates exactly
 * what it generates with the prefix cache off. */
Test(sched_life, prefix_sharing_skips_cached_prefill) {
    sf f;
    sf_open(&f, opts(128, 256), NULL);
    enum { PREFIX = 200, LEN_A = 210, LEN_B = 230, NEW = 12 };
    int32_t a[LEN_A], b[LEN_B];
    sf_random_prompt(a, LEN_A, f.cfg.n_vocab, 21);
    memcpy(b, a, PREFIX * sizeof *a);
    sf_random_prompt(b + PREFIX, LEN_B - PREFIX, f.cfg.n_vocab, 22);
    b[PREFIX] = (a[PREFIX] + 1) % (int32_t)f.cfg.n_vocab; /* diverge right after the prefix */

    sched_request ra = sf_greedy_request(&f, 0, a, LEN_A, NEW);
    sf_add(&f, &ra);
    sf_run(&f, 50);
    sched_stats s0 = sf_stats(&f);
    cr_assert_eq(s0.kv.prefix_cache_hits, 0);
    sched_request rb = sf_greedy_request(&f, 1, b, LEN_B, NEW);
    sf_add(&f, &rb);
    sf_run(&f, 50);
    sched_stats s1 = sf_stats(&f);
    uint64_t expect_hits = (PREFIX / 16) * 16;
    cr_assert_eq(s1.kv.prefix_cache_hits - s0.kv.prefix_cache_hits, expect_hits,
                 "prefix hits %llu, expected %llu",
                 (unsigned long long)(s1.kv.prefix_cache_hits - s0.kv.prefix_cache_hits),
                 (unsigned long long)expect_hits);
    cr_assert_eq(s1.api.prefix_cache_hits, s1.kv.prefix_cache_hits);
    cr_assert_eq(f.rec[1].cached_prompt_tokens, expect_hits);
    uint64_t prefill = s1.prefill_tokens_total - s0.prefill_tokens_total;
    cr_assert_eq(prefill, LEN_B - expect_hits, "B ran %llu prompt tokens, expected %llu",
                 (unsigned long long)prefill, (unsigned long long)(LEN_B - expect_hits));
    cr_assert_eq(s1.forward_tokens_total - s0.forward_tokens_total,
                 LEN_B - expect_hits + (NEW - 1));
    int32_t with_cache[NEW];
    cr_assert_eq(f.rec[1].n_tokens[0], NEW);
    memcpy(with_cache, f.rec[1].tokens[0], sizeof with_cache);

    sched_config nocache;
    sched_config_default(&nocache);
    nocache.enable_prefix_caching = false;
    sf_reset_engine(&f, &nocache);
    sf_add(&f, &ra);
    sf_run(&f, 50);
    sf_add(&f, &rb);
    sf_run(&f, 50);
    sched_stats s2 = sf_stats(&f);
    cr_assert_eq(s2.kv.prefix_cache_hits, 0);
    cr_assert_eq(s2.prefill_tokens_total, LEN_A + LEN_B);
    for (int t = 0; t < NEW; t++)
        cr_assert_eq(f.rec[1].tokens[0][t], with_cache[t],
                     "token %d: %d with the prefix cache, %d without", t, with_cache[t],
                     f.rec[1].tokens[0][t]);
    sf_close(&f);
}

static void assert_all_blocks_free(sf *f, const char *what) {
    sched_stats s = sf_stats(f);
    cr_assert_eq(s.kv.blocks_used, 0, "%s: %u blocks still used", what, s.kv.blocks_used);
    cr_assert_eq(s.kv.blocks_free, s.kv.blocks_total, "%s: %u of %u blocks free", what,
                 s.kv.blocks_free, s.kv.blocks_total);
}

Test(sched_life, cancel_frees_blocks_at_once) {
    sf f;
    sf_open(&f, opts(64, 64), NULL);
    int32_t p[200];
    sf_random_prompt(p, 200, f.cfg.n_vocab, 31);
    assert_all_blocks_free(&f, "start");

    /* mid-prefill: one 64-token chunk of 200 ran */
    sched_request r0 = sf_greedy_request(&f, 0, p, 200, 50);
    sf_add(&f, &r0);
    sf_step(&f);
    cr_assert(sf_stats(&f).kv.blocks_used >= 13, "prompt blocks not allocated");
    cr_assert_eq(f.rec[0].n_tokens[0], 0);
    cr_assert_eq(sched_engine_cancel(f.eng, 0), VKLLM_OK, "%s", vkllm_last_error());
    assert_all_blocks_free(&f, "cancel mid-prefill");
    cr_assert(f.rec[0].done);
    cr_assert_eq(f.rec[0].finish[0], VKLLM_FINISH_CANCELLED);
    cr_assert(!sched_engine_has_work(f.eng));
    cr_assert_eq(sched_engine_cancel(f.eng, 0), VKLLM_ERR_NOT_FOUND);

    /* mid-decode */
    sched_request r1 = sf_greedy_request(&f, 1, p, 50, 50);
    sf_add(&f, &r1);
    while (f.rec[1].n_tokens[0] < 3)
        sf_step(&f);
    cr_assert(sf_stats(&f).kv.blocks_used > 0);
    cr_assert_eq(sched_engine_cancel(f.eng, 1), VKLLM_OK, "%s", vkllm_last_error());
    assert_all_blocks_free(&f, "cancel mid-decode");
    cr_assert_eq(f.rec[1].finish[0], VKLLM_FINISH_CANCELLED);

    /* still waiting, and the others go on */
    sched_request r2 = sf_greedy_request(&f, 2, p, 30, 4);
    sched_request r3 = sf_greedy_request(&f, 3, p + 1, 30, 4);
    sf_add(&f, &r2);
    sf_add(&f, &r3);
    cr_assert_eq(sched_engine_cancel(f.eng, 3), VKLLM_OK);
    cr_assert_eq(f.rec[3].finish[0], VKLLM_FINISH_CANCELLED);
    sf_run(&f, 20);
    cr_assert_eq(f.rec[2].finish[0], VKLLM_FINISH_LENGTH);
    cr_assert_eq(f.rec[2].n_tokens[0], 4);
    cr_assert_eq(f.rec[3].n_tokens[0], 0);
    assert_all_blocks_free(&f, "after the rest finished");
    sched_stats s = sf_stats(&f);
    cr_assert_eq(s.api.requests_cancelled, 3);
    cr_assert_eq(s.api.requests_finished, 1);
    sf_close(&f);
}

/* A callback may cancel a request (its own included) while the step runs. */
static void cancel_on_first_token(const sched_event *ev, void *user) {
    sf *f = user;
    sf_on_event(ev, user);
    if (ev->event.n_tokens && !ev->request_finished && ev->event.request == 0)
        cr_assert_eq(sched_engine_cancel(f->eng, 0), VKLLM_OK, "%s", vkllm_last_error());
}

Test(sched_life, cancel_from_callback) {
    sf f;
    sf_open(&f, opts(64, 64), NULL);
    int32_t p[40];
    sf_random_prompt(p, 40, f.cfg.n_vocab, 33);
    sched_request r0 = sf_greedy_request(&f, 0, p, 40, 20);
    r0.on_event = cancel_on_first_token;
    sched_request r1 = sf_greedy_request(&f, 1, p, 20, 5);
    sf_add(&f, &r0);
    sf_add(&f, &r1);
    sf_step(&f);
    cr_assert(f.rec[0].done);
    cr_assert_eq(f.rec[0].finish[0], VKLLM_FINISH_CANCELLED);
    cr_assert_eq(f.rec[0].n_tokens[0], 1);
    sf_run(&f, 20);
    cr_assert_eq(f.rec[1].n_tokens[0], 5);
    assert_all_blocks_free(&f, "end");
    sf_close(&f);
}

Test(sched_life, requests_that_can_never_fit_are_rejected) {
    sf f;
    sf_open(&f, opts(8, 64), NULL); /* 8 blocks of 16: 128 tokens */
    int32_t p[600];
    sf_random_prompt(p, 600, f.cfg.n_vocab, 41);
    sched_request r = sf_greedy_request(&f, 0, p, 513, 4);
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_TOO_LONG);
    cr_assert(strstr(vkllm_last_error(), "max_context") != NULL, "%s", vkllm_last_error());
    r.n_prompt = 200;
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_TOO_LONG);
    cr_assert(strstr(vkllm_last_error(), "never fit the KV cache") != NULL, "%s",
              vkllm_last_error());
    cr_assert(!sched_engine_has_work(f.eng), "a rejected request was queued");

    /* bad arguments, named */
    r.n_prompt = 10;
    r.sampling.n = 17;
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "max_running_seqs") != NULL, "%s", vkllm_last_error());
    r.sampling.n = 1;
    p[3] = (int32_t)f.cfg.n_vocab;
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "prompt token 3") != NULL, "%s", vkllm_last_error());
    p[3] = 0;
    r.sampling.top_p = 0;
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "top_p") != NULL, "%s", vkllm_last_error());
    r.sampling.top_p = 1;
    r.n_prompt = 0;
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_INVALID_ARGUMENT);
    r.n_prompt = 10;
    sf_add(&f, &r);
    cr_assert_eq(sched_engine_add(f.eng, &r), VKLLM_ERR_INVALID_ARGUMENT, "duplicate id accepted");
    sf_run(&f, 20);

    /* a request that outgrows the whole pool ends with "length" when the pool is full:
     * 100 prompt tokens + 28 generated fill 128 slots; the 29th token is sampled but
     * never gets a slot. The engine keeps serving. */
    sched_request big = sf_greedy_request(&f, 1, p, 100, 100);
    sf_add(&f, &big);
    sf_run(&f, 200);
    cr_assert_eq(f.rec[1].finish[0], VKLLM_FINISH_LENGTH);
    cr_assert_eq(f.rec[1].n_tokens[0], 29, "%u tokens", f.rec[1].n_tokens[0]);
    assert_all_blocks_free(&f, "after the pool-full request");
    sched_request small = sf_greedy_request(&f, 2, p, 10, 3);
    sf_add(&f, &small);
    sf_run(&f, 20);
    cr_assert_eq(f.rec[2].n_tokens[0], 3);
    sf_close(&f);
}

/* Ten identical-length requests under max_running_seqs = 4: never more than 4 run,
 * and they start in arrival order. */
Test(sched_life, running_limit_and_fcfs) {
    sched_config c;
    sched_config_default(&c);
    c.max_running_seqs = 4;
    sf f;
    sf_open(&f, opts(128, 64), &c);
    int32_t p[10][20];
    for (int i = 0; i < 10; i++) {
        sf_random_prompt(p[i], 20, f.cfg.n_vocab, 50 + (uint64_t)i);
        sched_request r = sf_greedy_request(&f, (uint64_t)i, p[i], 20, 6);
        sf_add(&f, &r);
    }
    while (sched_engine_has_work(f.eng)) {
        cr_assert(f.steps < 100);
        sf_step(&f);
        sched_stats s = sf_stats(&f);
        cr_assert(s.seqs_running <= 4, "%u sequences running", s.seqs_running);
        cr_assert(s.last_step_seqs <= 4, "%u sequences in a step", s.last_step_seqs);
    }
    cr_assert_eq(f.max_seqs_seen, 4);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(f.rec[i].n_tokens[0], 6);
        if (i)
            cr_assert(f.rec[i].first_token_step >= f.rec[i - 1].first_token_step,
                      "request %d started (step %ld) before request %d (step %ld)", i,
                      f.rec[i].first_token_step, i - 1, f.rec[i - 1].first_token_step);
    }
    cr_assert(f.rec[4].first_token_step > f.rec[3].first_token_step,
              "a fifth request ran alongside the first four");
    sf_close(&f);
}

/* n = 4 greedy samples: identical outputs, equal to n = 1, sharing the prompt's blocks
 * (two full blocks shared, the partly filled one copied on write three times). */
Test(sched_life, parallel_greedy_samples_share_prompt) {
    sf f;
    sf_open(&f, opts(64, 64), NULL);
    int32_t p[40];
    sf_random_prompt(p, 40, f.cfg.n_vocab, 61);
    sched_request one = sf_greedy_request(&f, 0, p, 40, 10);
    sf_add(&f, &one);
    sf_run(&f, 30);
    cr_assert_eq(f.rec[0].n_tokens[0], 10);
    int32_t want[10];
    memcpy(want, f.rec[0].tokens[0], sizeof want);

    sf_reset_engine(&f, NULL);
    sched_request four = sf_greedy_request(&f, 1, p, 40, 10);
    four.sampling.n = 4;
    sf_add(&f, &four);
    sf_step(&f); /* prompt + fork */
    sf_step(&f); /* first decode: copy-on-write of the shared last block */
    sched_stats s = sf_stats(&f);
    cr_assert_eq(s.seqs_running, 4);
    cr_assert_eq(s.kv.cow_copies, 3, "%llu copies", (unsigned long long)s.kv.cow_copies);
    cr_assert_eq(s.kv.blocks_used, 6, "%u blocks used (unshared would be 12)", s.kv.blocks_used);
    sf_run(&f, 30);
    cr_assert(f.rec[1].done);
    for (int k = 0; k < 4; k++) {
        cr_assert_eq(f.rec[1].n_tokens[k], 10, "sample %d: %u tokens", k, f.rec[1].n_tokens[k]);
        cr_assert_eq(f.rec[1].finish[k], VKLLM_FINISH_LENGTH);
        cr_assert(memcmp(f.rec[1].tokens[k], want, sizeof want) == 0,
                  "greedy sample %d differs from n = 1", k);
    }
    assert_all_blocks_free(&f, "end");
    sf_close(&f);
}

/* n = 4 sampled at temperature 1 with a seed: children differ, and each child's tokens
 * depend only on the seed (same alone, twice, or batched with other requests). */
Test(sched_life, parallel_sampling_seeded_children) {
    sf f;
    sf_open(&f, opts(128, 64), NULL);
    int32_t p[30], q[70];
    sf_random_prompt(p, 30, f.cfg.n_vocab, 71);
    sf_random_prompt(q, 70, f.cfg.n_vocab, 72);
    sched_request r = sf_greedy_request(&f, 0, p, 30, 12);
    r.sampling.temperature = 1.0f;
    r.sampling.n = 4;
    r.sampling.has_seed = true;
    r.sampling.seed = 42;
    sf_add(&f, &r);
    sf_run(&f, 40);
    int32_t first[4][12];
    for (int k = 0; k < 4; k++) {
        cr_assert_eq(f.rec[0].n_tokens[k], 12);
        memcpy(first[k], f.rec[0].tokens[k], sizeof first[k]);
    }
    int distinct = 0;
    for (int k = 1; k < 4; k++)
        distinct += memcmp(first[k], first[0], sizeof first[0]) != 0;
    cr_assert(distinct > 0, "all 4 sampled children are identical");

    sf_reset_engine(&f, NULL);
    sched_request other = sf_greedy_request(&f, 1, q, 70, 20);
    other.sampling.temperature = 0.8f;
    sf_add(&f, &other);
    sf_step(&f);
    r.id = 2;
    sf_add(&f, &r);
    sf_run(&f, 60);
    for (int k = 0; k < 4; k++)
        cr_assert(memcmp(f.rec[2].tokens[k], first[k], sizeof first[k]) == 0,
                  "seeded child %d differs when batched with another request", k);
    sf_close(&f);
}

/* With a tokenizer: the streamed text is the detokenized output, and a stop string
 * cuts it (finish "stop", the stop string not emitted). */
Test(sched_life, streamed_text_and_stop_string) {
    sf f;
    sf_open_impl(&f, opts(64, 64), NULL,
                 VKLLM_SOURCE_DIR "/tests/fixtures/tokenizer/llama3-bpe-tiny.gguf");
    int32_t *p;
    size_t n;
    cr_assert(tok_encode(sf_tok, "The quick brown fox", 19, true, false, &p, &n) == VKLLM_OK);
    sched_request r = sf_greedy_request(&f, 0, p, n, 24);
    sf_add(&f, &r);
    sf_run(&f, 40);
    char *want;
    size_t want_len;
    cr_assert(tok_decode(sf_tok, f.rec[0].tokens[0], f.rec[0].n_tokens[0], false, &want,
                         &want_len) == VKLLM_OK);
    cr_assert_eq(f.rec[0].text_len[0], want_len, "streamed %zu bytes, decode gives %zu",
                 f.rec[0].text_len[0], want_len);
    cr_assert(memcmp(f.rec[0].text[0], want, want_len) == 0);
    cr_assert(want_len > 8, "too little text (%zu bytes) to cut a stop string from", want_len);

    /* stop at a 3-byte piece from the middle of that text */
    char stop[4];
    size_t at = want_len / 2;
    memcpy(stop, want + at, 3);
    stop[3] = 0;
    const char *first = strstr(want, stop);
    size_t cut = (size_t)(first - want);
    const char *stops[1] = {stop};
    r.id = 1;
    r.sampling.stop_strings = stops;
    r.sampling.n_stop_strings = 1;
    sf_add(&f, &r);
    sf_run(&f, 40);
    cr_assert_eq(f.rec[1].finish[0], VKLLM_FINISH_STOP);
    cr_assert_eq(f.rec[1].text_len[0], cut, "text of %zu bytes, the stop string starts at %zu",
                 f.rec[1].text_len[0], cut);
    cr_assert(memcmp(f.rec[1].text[0], want, cut) == 0);
    free(want);
    free(p);
    sf_close(&f);
}
