/* test_api.c: the public C API (include/vkllm.h) end to end on a small synthetic llama
 * model (engine/model/synth.h, tokenizer tests/fixtures/tokenizer/llama3-bpe-tiny.gguf).
 *
 * Oracles: greedy tokens from the CPU reference forward pass (engine/ref) for the same
 * file; the tokenizer's own decode for the text; the same request run alone (results
 * must not depend on what else is batched or on which thread submitted); request counts
 * and token sums computed by the test for the statistics. Every engine is checked for
 * Vulkan validation errors before it is destroyed. */
// links: api sched exec kv ref model gpu common
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vkllm.h"

#include "api/api_internal.h"
#include "model/synth.h"
#include "ref/ref_forward.h"
#include "common/test_util.h"

#define N_BLOCKS 64
#define BLOCK 16
#define MAX_CONTEXT 256

static char model_path[256];

static void write_model(void) {
    synth_params p;
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    p.tokenizer_path = VKLLM_SOURCE_DIR "/tests/fixtures/tokenizer/llama3-bpe-tiny.gguf";
    p.n_vocab = 0; /* the tokenizer's */
    p.n_ctx = 1024;
    p.seed = 5;
    p.name = "api-test";
    snprintf(model_path, sizeof model_path, "/tmp/vkllm_test_api_%d.gguf", (int)getpid());
    cr_assert(synth_write(&p, model_path) == VKLLM_OK, "%s", vkllm_last_error());
}

static void remove_model(void) {
    unlink(model_path);
}

TestSuite(api, .init = write_model, .fini = remove_model, .timeout = 300);

static vkllm_engine_options small_options(void) {
    vkllm_engine_options o;
    vkllm_engine_options_default(&o);
    o.kv_blocks = N_BLOCKS;
    o.block_size = BLOCK;
    o.max_context = MAX_CONTEXT;
    o.max_running_seqs = 8;
    o.max_step_tokens = 128;
    return o;
}

static vkllm_engine *open_engine_with(const vkllm_engine_options *o) {
    vkllm_engine *e = NULL;
    vkllm_status s = vkllm_engine_create(model_path, o, &e);
    cr_assert(s == VKLLM_OK, "vkllm_engine_create: %s: %s", vkllm_status_name(s),
              vkllm_last_error());
    return e;
}

static vkllm_engine *open_engine(void) {
    vkllm_engine_options o = small_options();
    return open_engine_with(&o);
}

static void close_engine(vkllm_engine *e) {
    uint32_t errors = gpu_validation_errors(e->model.gpu);
    vkllm_engine_destroy(e);
    cr_assert_eq(errors, 0, "%u Vulkan validation errors", errors);
}

static void sleep_ms(int ms) {
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Statistics once the engine thread has published a state with nothing in flight. */
static vkllm_stats settled_stats(vkllm_engine *e) {
    vkllm_stats st;
    for (int i = 0; i < 5000; i++) {
        vkllm_get_stats(e, &st);
        if (st.requests_running == 0 && st.requests_waiting == 0 && st.kv_blocks_used == 0)
            return st;
        sleep_ms(1);
    }
    cr_assert_fail("engine did not settle: %u running, %u waiting, %u blocks used",
                   st.requests_running, st.requests_waiting, st.kv_blocks_used);
    return st;
}

/* Generated text as bytes: random weights may produce any byte, NUL included. */
typedef struct blob {
    char data[4096];
    size_t len;
} blob;

static void blob_set(blob *b, const char *data, size_t len) {
    b->len = len < sizeof b->data ? len : sizeof b->data;
    memcpy(b->data, data, b->len);
}

static bool blob_eq(const blob *a, const blob *b) {
    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

/* ---------------------------------------------------------------- event recorder */

typedef struct recorder {
    pthread_mutex_t mu;
    vkllm_request_id id;
    int32_t tokens[1024];
    size_t n_tokens;
    char text[16384];
    size_t text_len;
    uint32_t last_events[8]; /* per sample index */
    vkllm_finish_reason finish[8];
    uint32_t events;
    bool bad_request_id;
} recorder;

static void recorder_init(recorder *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
}

static void record(const vkllm_event *ev, void *user) {
    recorder *r = user;
    pthread_mutex_lock(&r->mu);
    r->events++;
    if (r->id && ev->request != r->id) r->bad_request_id = true;
    if (ev->index < 8) {
        if (ev->index == 0) {
            for (size_t i = 0; i < ev->n_tokens && r->n_tokens < 1024; i++)
                r->tokens[r->n_tokens++] = ev->tokens[i];
            if (r->text_len + ev->text_len < sizeof r->text) {
                memcpy(r->text + r->text_len, ev->text, ev->text_len);
                r->text_len += ev->text_len;
            }
        }
        if (ev->finish != VKLLM_FINISH_NONE) {
            r->last_events[ev->index]++;
            r->finish[ev->index] = ev->finish;
        }
    }
    pthread_mutex_unlock(&r->mu);
}

static vkllm_request_params greedy_params(uint32_t max_tokens) {
    vkllm_request_params p;
    vkllm_request_params_default(&p);
    p.sampling.temperature = 0;
    p.sampling.max_tokens = max_tokens;
    p.sampling.ignore_eos = true;
    return p;
}

static void random_prompt(int32_t *tokens, size_t n, uint32_t vocab, uint64_t seed) {
    test_rng rng = test_rng_seeded(seed);
    for (size_t i = 0; i < n; i++)
        tokens[i] = (int32_t)test_rng_below(&rng, vocab);
}

/* Submits, waits, returns the result (caller frees). */
static vkllm_request_result run_request(vkllm_engine *e, const vkllm_request_params *p) {
    vkllm_request_id id;
    vkllm_status s = vkllm_submit(e, p, &id);
    cr_assert(s == VKLLM_OK, "submit: %s: %s", vkllm_status_name(s), vkllm_last_error());
    vkllm_request_result res;
    s = vkllm_wait(e, id, &res);
    cr_assert(s == VKLLM_OK, "wait: %s", vkllm_last_error());
    return res;
}

/* ---------------------------------------------------------------- tests */

Test(api, version_and_model_info) {
    cr_assert_str_eq(vkllm_version(), "0.1.0");
    vkllm_engine *e = open_engine();
    vkllm_model_info info;
    cr_assert_eq(vkllm_engine_model_info(e, &info), VKLLM_OK);
    cr_assert_str_eq(info.name, "api-test");
    cr_assert_str_eq(info.architecture, "llama");
    cr_assert_str_eq(info.chat_template, "llama3", "detected from the vocabulary");
    cr_assert(info.device[0] != '\0');
    cr_assert_eq(info.n_layer, 2);
    cr_assert_eq(info.n_embd, 64);
    cr_assert_eq(info.kv_blocks, N_BLOCKS);
    cr_assert_eq(info.block_size, BLOCK);
    cr_assert_eq(info.n_ctx, MAX_CONTEXT);
    cr_assert(info.weight_bytes > 0 && info.kv_bytes > 0);
    vkllm_stats st;
    cr_assert_eq(vkllm_get_stats(e, &st), VKLLM_OK);
    cr_assert_eq(st.kv_blocks_total, N_BLOCKS);
    cr_assert_eq(st.requests_finished, 0);
    close_engine(e);
}

/* Greedy tokens through the API equal the CPU reference's; the streamed text equals
 * the tokenizer's decode of those tokens; a text prompt equals its own token ids. */
Test(api, greedy_matches_cpu_reference) {
    const uint32_t n_new = 24;
    vkllm_engine *e = open_engine();
    const char *prompt = "Hello world, this is a test of the engine";
    int32_t *ids;
    size_t n_ids;
    cr_assert_eq(vkllm_tokenize(e, prompt, strlen(prompt), true, true, &ids, &n_ids), VKLLM_OK);
    cr_assert(n_ids > 4);

    gguf_file *file;
    ref_model *ref;
    cr_assert_eq(gguf_open(model_path, &file), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(ref_model_create(file, &ref), VKLLM_OK, "%s", vkllm_last_error());
    int32_t expect[64];
    uint32_t n_expect;
    cr_assert_eq(ref_generate_greedy(ref, ids, (uint32_t)n_ids, n_new, NULL, 0, expect, &n_expect),
                 VKLLM_OK);
    cr_assert_eq(n_expect, n_new);
    ref_model_destroy(ref);
    gguf_close(file);

    recorder rec;
    recorder_init(&rec);
    vkllm_request_params p = greedy_params(n_new);
    p.prompt_tokens = ids;
    p.n_prompt_tokens = n_ids;
    p.on_event = record;
    p.user = &rec;
    vkllm_request_result res = run_request(e, &p);
    cr_assert_eq(res.finish, VKLLM_FINISH_LENGTH);
    cr_assert_eq(res.completion_tokens, n_new);
    cr_assert_eq(res.prompt_tokens, n_ids);
    cr_assert_eq(rec.n_tokens, n_new);
    for (uint32_t i = 0; i < n_new; i++)
        cr_assert_eq(rec.tokens[i], expect[i], "token %u: API %d, CPU reference %d", i,
                     rec.tokens[i], expect[i]);
    cr_assert_eq(rec.last_events[0], 1, "exactly one last event");
    cr_assert(!rec.bad_request_id);

    char *decoded;
    size_t decoded_len;
    cr_assert_eq(vkllm_detokenize(e, rec.tokens, rec.n_tokens, &decoded, &decoded_len), VKLLM_OK);
    cr_assert_eq(res.text_len, decoded_len);
    cr_assert(memcmp(res.text, decoded, decoded_len) == 0, "result '%s' vs decode '%s'", res.text,
              decoded);
    cr_assert_eq(rec.text_len, decoded_len, "streamed text = decoded text");
    cr_assert(memcmp(rec.text, decoded, decoded_len) == 0);
    cr_assert(res.time_to_first_token_s > 0 && res.total_time_s >= res.time_to_first_token_s);

    /* The same prompt as text. */
    vkllm_request_params q = greedy_params(n_new);
    q.prompt = prompt;
    vkllm_request_result res2 = run_request(e, &q);
    cr_assert(res2.text_len == res.text_len && !memcmp(res2.text, res.text, res.text_len));
    cr_assert_eq(res2.cached_prompt_tokens, (n_ids - 1) / BLOCK * BLOCK,
                 "prefix cache: whole blocks of the same prompt are reused");
    free(decoded);
    free(ids);
    vkllm_request_result_free(&res);
    vkllm_request_result_free(&res2);
    close_engine(e);
}

/* ---- several threads submitting at once */

#define N_THREADS 4
#define PER_THREAD 3

typedef struct submitter {
    vkllm_engine *engine;
    int thread;
    blob texts[PER_THREAD];
    vkllm_status status;
} submitter;

static vkllm_request_params prompt_params(int32_t *buf, size_t n, uint64_t seed, uint32_t vocab) {
    random_prompt(buf, n, vocab, seed);
    vkllm_request_params p = greedy_params(10 + (uint32_t)(seed % 7));
    p.prompt_tokens = buf;
    p.n_prompt_tokens = n;
    return p;
}

static void *submit_thread(void *arg) {
    submitter *s = arg;
    vkllm_model_info info;
    vkllm_engine_model_info(s->engine, &info);
    int32_t prompts[PER_THREAD][40];
    vkllm_request_id ids[PER_THREAD];
    for (int k = 0; k < PER_THREAD; k++) {
        int idx = s->thread * PER_THREAD + k;
        vkllm_request_params p =
            prompt_params(prompts[k], 5 + (size_t)idx * 3, 1000 + (uint64_t)idx, info.n_vocab);
        s->status = vkllm_submit(s->engine, &p, &ids[k]);
        if (s->status != VKLLM_OK) return NULL;
    }
    for (int k = 0; k < PER_THREAD; k++) {
        vkllm_request_result res;
        s->status = vkllm_wait(s->engine, ids[k], &res);
        if (s->status != VKLLM_OK) return NULL;
        blob_set(&s->texts[k], res.text, res.text_len);
        vkllm_request_result_free(&res);
    }
    return NULL;
}

Test(api, concurrent_submitters_get_their_own_results) {
    vkllm_engine *e = open_engine();
    vkllm_model_info info;
    vkllm_engine_model_info(e, &info);
    /* Each prompt alone first. */
    static blob alone[N_THREADS * PER_THREAD];
    for (int idx = 0; idx < N_THREADS * PER_THREAD; idx++) {
        int32_t buf[40];
        vkllm_request_params p =
            prompt_params(buf, 5 + (size_t)idx * 3, 1000 + (uint64_t)idx, info.n_vocab);
        vkllm_request_result res = run_request(e, &p);
        blob_set(&alone[idx], res.text, res.text_len);
        vkllm_request_result_free(&res);
    }
    submitter subs[N_THREADS];
    pthread_t threads[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        memset(&subs[t], 0, sizeof subs[t]);
        subs[t].engine = e;
        subs[t].thread = t;
        pthread_create(&threads[t], NULL, submit_thread, &subs[t]);
    }
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(threads[t], NULL);
    for (int t = 0; t < N_THREADS; t++) {
        cr_assert_eq(subs[t].status, VKLLM_OK, "thread %d: %s", t,
                     vkllm_status_name(subs[t].status));
        for (int k = 0; k < PER_THREAD; k++)
            cr_assert(blob_eq(&subs[t].texts[k], &alone[t * PER_THREAD + k]),
                      "thread %d request %d: batched result differs from alone", t, k);
    }
    vkllm_stats st = settled_stats(e);
    cr_assert_eq(st.requests_finished, 2 * N_THREADS * PER_THREAD);
    close_engine(e);
}

/* ---- cancel from another thread */

typedef struct canceller {
    vkllm_engine *engine;
    vkllm_request_id id;
    vkllm_status status;
    uint32_t tokens_seen;
} canceller;

static void *cancel_thread(void *arg) {
    canceller *c = arg;
    for (int i = 0; i < 60000; i++) {
        vkllm_request_result res;
        if (vkllm_poll(c->engine, c->id, &res) != VKLLM_OK) break;
        uint32_t n = res.completion_tokens;
        vkllm_request_result_free(&res);
        if (n >= 2) {
            c->tokens_seen = n;
            break;
        }
        sleep_ms(1);
    }
    c->status = vkllm_cancel(c->engine, c->id);
    return NULL;
}

Test(api, cancel_from_another_thread_frees_blocks) {
    vkllm_engine *e = open_engine();
    recorder rec;
    recorder_init(&rec);
    vkllm_request_params p = greedy_params(MAX_CONTEXT - 20);
    p.prompt = "Cancel me while I am still talking";
    p.on_event = record;
    p.user = &rec;
    vkllm_request_id id;
    cr_assert_eq(vkllm_submit(e, &p, &id), VKLLM_OK, "%s", vkllm_last_error());
    canceller c = {.engine = e, .id = id};
    pthread_t t;
    pthread_create(&t, NULL, cancel_thread, &c);
    vkllm_request_result res;
    cr_assert_eq(vkllm_wait(e, id, &res), VKLLM_OK);
    pthread_join(t, NULL);
    cr_assert_eq(c.status, VKLLM_OK, "cancel: %s", vkllm_last_error());
    cr_assert(c.tokens_seen >= 2, "the request was seen running");
    cr_assert_eq(res.finish, VKLLM_FINISH_CANCELLED);
    cr_assert(res.completion_tokens < p.sampling.max_tokens);
    cr_assert_eq(rec.last_events[0], 1);
    cr_assert_eq(rec.finish[0], VKLLM_FINISH_CANCELLED);
    vkllm_request_result_free(&res);
    vkllm_stats st = settled_stats(e);
    cr_assert_eq(st.kv_blocks_used, 0, "a cancelled request's blocks are freed");
    cr_assert_eq(st.requests_cancelled, 1);
    cr_assert_eq(vkllm_cancel(e, id), VKLLM_ERR_NOT_FOUND, "collected by wait");
    cr_assert_eq(vkllm_cancel(e, 987654), VKLLM_ERR_NOT_FOUND);
    cr_assert(strstr(vkllm_last_error(), "987654") != NULL, "%s", vkllm_last_error());
    close_engine(e);
}

/* ---- polling */

Test(api, poll_shows_growing_text_then_wait_collects) {
    vkllm_engine *e = open_engine();
    vkllm_request_params p = greedy_params(40);
    p.prompt = "Poll me";
    vkllm_request_id id;
    cr_assert_eq(vkllm_submit(e, &p, &id), VKLLM_OK);
    static blob previous;
    previous.len = 0;
    int polls = 0;
    for (;;) {
        vkllm_request_result res;
        cr_assert_eq(vkllm_poll(e, id, &res), VKLLM_OK, "%s", vkllm_last_error());
        cr_assert(res.text_len >= previous.len && !memcmp(res.text, previous.data, previous.len),
                  "poll text must only grow: %zu bytes then %zu", previous.len, res.text_len);
        blob_set(&previous, res.text, res.text_len);
        vkllm_finish_reason f = res.finish;
        vkllm_request_result_free(&res);
        polls++;
        if (f != VKLLM_FINISH_NONE) {
            cr_assert_eq(f, VKLLM_FINISH_LENGTH);
            break;
        }
        sleep_ms(1);
    }
    vkllm_request_result res;
    cr_assert_eq(vkllm_wait(e, id, &res), VKLLM_OK);
    blob final;
    blob_set(&final, res.text, res.text_len);
    cr_assert(blob_eq(&final, &previous));
    cr_assert_eq(res.completion_tokens, 40);
    vkllm_request_result_free(&res);
    vkllm_request_result after;
    cr_assert_eq(vkllm_poll(e, id, &after), VKLLM_ERR_NOT_FOUND);
    cr_assert_eq(vkllm_wait(e, id, NULL), VKLLM_ERR_NOT_FOUND);
    close_engine(e);
}

/* ---- statistics */

Test(api, stats_add_up) {
    vkllm_engine *e = open_engine();
    vkllm_model_info info;
    vkllm_engine_model_info(e, &info);
    uint64_t prompt_sum = 0, completion_sum = 0;
    vkllm_request_id ids[5];
    int32_t prompts[5][60];
    for (int i = 0; i < 5; i++) {
        size_t n = 3 + (size_t)i * 11;
        random_prompt(prompts[i], n, info.n_vocab, 77 + (uint64_t)i);
        vkllm_request_params p = greedy_params(4 + (uint32_t)i * 5);
        p.prompt_tokens = prompts[i];
        p.n_prompt_tokens = n;
        cr_assert_eq(vkllm_submit(e, &p, &ids[i]), VKLLM_OK, "%s", vkllm_last_error());
        prompt_sum += n;
    }
    for (int i = 0; i < 5; i++) {
        vkllm_request_result res;
        cr_assert_eq(vkllm_wait(e, ids[i], &res), VKLLM_OK);
        cr_assert_eq(res.finish, VKLLM_FINISH_LENGTH);
        cr_assert_eq(res.completion_tokens, 4 + (uint32_t)i * 5);
        completion_sum += res.completion_tokens;
        vkllm_request_result_free(&res);
    }
    /* Once wait returned, the statistics include every step of the request. */
    vkllm_stats st;
    cr_assert_eq(vkllm_get_stats(e, &st), VKLLM_OK);
    cr_assert_eq(st.requests_finished, 5);
    cr_assert_eq(st.requests_cancelled, 0);
    cr_assert_eq(st.requests_failed, 0);
    cr_assert_eq(st.prompt_tokens_total, prompt_sum);
    cr_assert_eq(st.generation_tokens_total, completion_sum);
    cr_assert_eq(st.requests_running + st.requests_waiting + st.requests_swapped, 0);
    cr_assert_eq(st.kv_blocks_total, N_BLOCKS);
    cr_assert_eq(st.kv_blocks_used + st.kv_blocks_free, st.kv_blocks_total);
    cr_assert(st.kv_usage == 0.0, "kv_usage %g with nothing running", st.kv_usage);
    cr_assert(st.steps_total > 0);
    /* Every prompt token was computed once (no shared prefixes among random prompts);
     * each request's first token comes from its prefill step, the rest from decode. */
    cr_assert_eq(st.prefill_tokens_computed + st.decode_tokens_computed,
                 prompt_sum + completion_sum - 5, "prefill %llu + decode %llu",
                 (unsigned long long)st.prefill_tokens_computed,
                 (unsigned long long)st.decode_tokens_computed);
    cr_assert(st.prefill_time_s > 0 && st.decode_time_s > 0);
    close_engine(e);
}

/* ---- bad parameters: refused at submit, the parameter named */

typedef struct bad_case {
    const char *what;
    vkllm_status status;
    const char *named;
} bad_case;

static void expect_refused(vkllm_engine *e, const vkllm_request_params *p, bad_case c) {
    vkllm_request_id id = 99;
    vkl_clear_error();
    vkllm_status s = vkllm_submit(e, p, &id);
    cr_assert_eq(s, c.status, "%s: got %s (%s)", c.what, vkllm_status_name(s), vkllm_last_error());
    cr_assert(strstr(vkllm_last_error(), c.named) != NULL, "%s: message '%s' does not name '%s'",
              c.what, vkllm_last_error(), c.named);
    cr_assert_eq(id, 0, "%s: no id handed out", c.what);
}

Test(api, bad_parameters_are_named) {
    vkllm_engine *e = open_engine();
    const vkllm_status INVALID = VKLLM_ERR_INVALID_ARGUMENT;
    vkllm_request_params p;
#define CASE(mutation, status, named)                                                              \
    do {                                                                                           \
        p = greedy_params(8);                                                                      \
        p.prompt = "ok";                                                                           \
        mutation;                                                                                  \
        expect_refused(e, &p, (bad_case){#mutation, status, named});                               \
    } while (0)
    CASE(p.sampling.temperature = -0.5f, INVALID, "temperature");
    CASE(p.sampling.temperature = NAN, INVALID, "temperature");
    CASE(p.sampling.top_p = 1.5f, INVALID, "top_p");
    CASE(p.sampling.top_p = 0.0f, INVALID, "top_p");
    CASE(p.sampling.min_p = -0.1f, INVALID, "min_p");
    CASE(p.sampling.n = 0, INVALID, "sampling.n");
    CASE(p.sampling.n = 9, INVALID, "max_running_seqs");
    CASE(p.sampling.max_tokens = 0, INVALID, "max_tokens");
    CASE(p.sampling.presence_penalty = 3.0f, INVALID, "presence_penalty");
    CASE(p.sampling.frequency_penalty = -2.5f, INVALID, "frequency_penalty");
    CASE(p.sampling.repetition_penalty = 0.0f, INVALID, "repetition_penalty");
    CASE(p.sampling.logprobs = 50, INVALID, "logprobs");
    CASE(p.sampling.n_stop = 1, INVALID, "sampling.stop");
    const char *empty_stop[] = {""};
    CASE((p.sampling.stop = empty_stop, p.sampling.n_stop = 1), INVALID, "stop");
    const char *bad_utf8_stop[] = {"\xff\xfe"};
    CASE((p.sampling.stop = bad_utf8_stop, p.sampling.n_stop = 1), INVALID, "stop");
    vkllm_chat_message msgs[1] = {{"user", "hi"}};
    CASE((p.messages = msgs, p.n_messages = 1), INVALID, "exactly one");
    CASE(p.prompt = NULL, INVALID, "exactly one");
    int32_t ids[2] = {1, 1 << 30};
    CASE((p.prompt = NULL, p.prompt_tokens = ids, p.n_prompt_tokens = 2), INVALID,
         "prompt_tokens[1]");
    CASE((p.prompt = NULL, p.prompt_tokens = ids, p.n_prompt_tokens = 0), INVALID,
         "n_prompt_tokens");
    vkllm_chat_message null_content[1] = {{"user", NULL}};
    CASE((p.prompt = NULL, p.messages = null_content, p.n_messages = 1), INVALID, "messages[0]");
    CASE((p.prompt = "", p.add_special = false), INVALID, "no tokens");
#undef CASE
    vkllm_request_id id;
    p = greedy_params(4);
    p.prompt = "ok";
    cr_assert_eq(vkllm_submit(NULL, &p, &id), INVALID);
    cr_assert(strstr(vkllm_last_error(), "engine") != NULL);
    cr_assert_eq(vkllm_submit(e, NULL, &id), INVALID);
    cr_assert(strstr(vkllm_last_error(), "params") != NULL);
    cr_assert_eq(vkllm_submit(e, &p, NULL), INVALID);
    cr_assert(strstr(vkllm_last_error(), "id") != NULL);
    /* The engine still serves, and nothing refused was counted. */
    vkllm_request_result res = run_request(e, &p);
    cr_assert_eq(res.finish, VKLLM_FINISH_LENGTH);
    vkllm_request_result_free(&res);
    vkllm_stats st = settled_stats(e);
    cr_assert_eq(st.requests_finished, 1);
    cr_assert_eq(st.requests_failed, 0);
    close_engine(e);
}

Test(api, too_long_prompts_are_refused) {
    vkllm_engine_options o = small_options();
    o.max_context = 64;
    vkllm_engine *e = open_engine_with(&o);
    int32_t ids[80];
    random_prompt(ids, 80, 200, 3);
    vkllm_request_params p = greedy_params(8);
    p.prompt_tokens = ids;
    p.n_prompt_tokens = 65;
    vkllm_request_id id;
    cr_assert_eq(vkllm_submit(e, &p, &id), VKLLM_ERR_TOO_LONG);
    cr_assert(strstr(vkllm_last_error(), "max_context 64") != NULL, "%s", vkllm_last_error());
    /* Exactly max_context fits and ends at the context limit. */
    p.n_prompt_tokens = 64;
    vkllm_request_result res = run_request(e, &p);
    cr_assert_eq(res.finish, VKLLM_FINISH_LENGTH);
    cr_assert(res.completion_tokens <= 1, "%u tokens past a full context", res.completion_tokens);
    vkllm_request_result_free(&res);
    close_engine(e);

    /* A prompt larger than the whole KV cache. */
    o = small_options();
    o.kv_blocks = 4;
    e = open_engine_with(&o);
    p.n_prompt_tokens = 65; /* 5 blocks of 16 */
    cr_assert_eq(vkllm_submit(e, &p, &id), VKLLM_ERR_TOO_LONG);
    cr_assert(strstr(vkllm_last_error(), "KV blocks") != NULL, "%s", vkllm_last_error());
    p.n_prompt_tokens = 60;
    p.sampling.max_tokens = 2;
    res = run_request(e, &p);
    cr_assert_eq(res.finish, VKLLM_FINISH_LENGTH);
    vkllm_request_result_free(&res);
    close_engine(e);
}

Test(api, more_waiting_than_max_waiting_is_busy) {
    vkllm_engine_options o = small_options();
    o.max_waiting = 3;
    vkllm_engine *e = open_engine_with(&o);
    api_engine_pause(e, true); /* nothing leaves the waiting queue */
    vkllm_request_params p = greedy_params(3);
    p.prompt = "wait";
    vkllm_request_id ids[3], extra;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(vkllm_submit(e, &p, &ids[i]), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(vkllm_submit(e, &p, &extra), VKLLM_ERR_BUSY);
    cr_assert(strstr(vkllm_last_error(), "max_waiting 3") != NULL, "%s", vkllm_last_error());
    vkllm_stats st;
    vkllm_get_stats(e, &st);
    cr_assert_eq(st.requests_waiting, 3);
    api_engine_pause(e, false);
    for (int i = 0; i < 3; i++) {
        vkllm_request_result res;
        cr_assert_eq(vkllm_wait(e, ids[i], &res), VKLLM_OK);
        cr_assert_eq(res.finish, VKLLM_FINISH_LENGTH);
        vkllm_request_result_free(&res);
    }
    settled_stats(e);
    cr_assert_eq(vkllm_submit(e, &p, &extra), VKLLM_OK, "room again: %s", vkllm_last_error());
    cr_assert_eq(vkllm_wait(e, extra, NULL), VKLLM_OK);
    close_engine(e);
}

/* Destroy with requests running and waiting: each gets exactly one last event, CANCELLED. */
Test(api, destroy_cancels_requests_in_flight) {
    vkllm_engine_options o = small_options();
    o.max_running_seqs = 2;
    vkllm_engine *e = open_engine_with(&o);
    enum { N = 5 };
    recorder recs[N];
    for (int i = 0; i < N; i++) {
        recorder_init(&recs[i]);
        vkllm_request_params p = greedy_params(MAX_CONTEXT - 16);
        p.prompt = "Keep going until the engine stops";
        p.on_event = record;
        p.user = &recs[i];
        vkllm_request_id id;
        cr_assert_eq(vkllm_submit(e, &p, &id), VKLLM_OK, "%s", vkllm_last_error());
    }
    /* Destroy once something is generating (the first two run, three wait). */
    for (int i = 0; i < 60000; i++) {
        pthread_mutex_lock(&recs[0].mu);
        size_t n = recs[0].n_tokens;
        pthread_mutex_unlock(&recs[0].mu);
        if (n) break;
        sleep_ms(1);
    }
    cr_assert(recs[0].n_tokens > 0);
    close_engine(e);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(recs[i].last_events[0], 1, "request %d: %u last events", i,
                     recs[i].last_events[0]);
        cr_assert_eq(recs[i].finish[0], VKLLM_FINISH_CANCELLED, "request %d", i);
    }
}

Test(api, destroy_while_paused_cancels_queued_requests) {
    vkllm_engine *e = open_engine();
    api_engine_pause(e, true);
    recorder recs[3];
    for (int i = 0; i < 3; i++) {
        recorder_init(&recs[i]);
        vkllm_request_params p = greedy_params(5);
        p.prompt = "never runs";
        p.on_event = record;
        p.user = &recs[i];
        vkllm_request_id id;
        cr_assert_eq(vkllm_submit(e, &p, &id), VKLLM_OK);
    }
    close_engine(e);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(recs[i].last_events[0], 1);
        cr_assert_eq(recs[i].finish[0], VKLLM_FINISH_CANCELLED);
        cr_assert_eq(recs[i].n_tokens, 0);
    }
}

/* ---- callbacks may submit and cancel (they run on the engine thread) */

typedef struct chain {
    vkllm_engine *engine;
    vkllm_request_id first, second;
    vkllm_status submit_status, cancel_status;
    bool done;
    int32_t prompt[4];
} chain;

static void chain_event(const vkllm_event *ev, void *user) {
    chain *c = user;
    if (c->done || ev->n_tokens == 0) return;
    c->done = true;
    vkllm_request_params p = greedy_params(3);
    p.prompt_tokens = c->prompt;
    p.n_prompt_tokens = 4;
    c->submit_status = vkllm_submit(c->engine, &p, &c->second);
    c->cancel_status = vkllm_cancel(c->engine, ev->request);
}

Test(api, callbacks_can_submit_and_cancel) {
    vkllm_engine *e = open_engine();
    chain c = {.engine = e, .prompt = {5, 6, 7, 8}};
    vkllm_request_params p = greedy_params(100);
    p.prompt = "chain";
    p.on_event = chain_event;
    p.user = &c;
    cr_assert_eq(vkllm_submit(e, &p, &c.first), VKLLM_OK);
    vkllm_request_result res;
    cr_assert_eq(vkllm_wait(e, c.first, &res), VKLLM_OK);
    cr_assert_eq(res.finish, VKLLM_FINISH_CANCELLED);
    vkllm_request_result_free(&res);
    cr_assert_eq(c.submit_status, VKLLM_OK);
    cr_assert_eq(c.cancel_status, VKLLM_OK);
    cr_assert_eq(vkllm_wait(e, c.second, &res), VKLLM_OK);
    cr_assert_eq(res.finish, VKLLM_FINISH_LENGTH);
    cr_assert_eq(res.completion_tokens, 3);
    vkllm_request_result_free(&res);
    close_engine(e);
}

/* ---- stop strings: the caller's array may be gone right after submit */

Test(api, stop_strings_are_copied_and_cut_the_text) {
    vkllm_engine *e = open_engine();
    vkllm_request_params p = greedy_params(30);
    p.prompt = "Say something";
    vkllm_request_result full = run_request(e, &p);
    cr_assert(full.text_len > 8, "'%s'", full.text);
    /* A stop string from the middle of the text whose first occurrence is there. */
    size_t at = 0;
    char stop[4] = {0};
    for (size_t pos = full.text_len / 2; pos + 3 <= full.text_len; pos++) {
        memcpy(stop, full.text + pos, 3);
        /* Random weights may produce any byte, NUL included: search bytes. */
        bool ascii = true;
        for (int k = 0; k < 3; k++)
            if (stop[k] == 0 || (unsigned char)stop[k] >= 0x80) ascii = false;
        if (ascii && memmem(full.text, full.text_len, stop, 3) == full.text + pos) {
            at = pos;
            break;
        }
    }
    cr_assert(at > 0, "no usable stop string in '%s' (%zu bytes, strlen %zu)", full.text,
              full.text_len, strlen(full.text));
    char *stop_copy = strdup(stop);
    const char **stops = malloc(sizeof *stops);
    stops[0] = stop_copy;
    p.sampling.stop = stops;
    p.sampling.n_stop = 1;
    vkllm_request_id id;
    cr_assert_eq(vkllm_submit(e, &p, &id), VKLLM_OK, "%s", vkllm_last_error());
    memset(stop_copy, 'z', 3); /* the engine must have its own copy */
    free(stop_copy);
    free(stops);
    vkllm_request_result cut;
    cr_assert_eq(vkllm_wait(e, id, &cut), VKLLM_OK);
    cr_assert_eq(cut.finish, VKLLM_FINISH_STOP);
    cr_assert_eq(cut.text_len, at, "'%s' cut at '%s' -> '%s'", full.text, stop, cut.text);
    cr_assert(memcmp(cut.text, full.text, at) == 0);
    vkllm_request_result_free(&full);
    vkllm_request_result_free(&cut);
    close_engine(e);
}

/* ---- n > 1 samples */

Test(api, parallel_samples_each_finish_once_and_seeds_repeat) {
    vkllm_engine *e = open_engine();
    static blob first_run;
    for (int run = 0; run < 2; run++) {
        recorder rec;
        recorder_init(&rec);
        vkllm_request_params p;
        vkllm_request_params_default(&p);
        p.prompt = "Many answers";
        p.sampling.n = 3;
        p.sampling.max_tokens = 12;
        p.sampling.ignore_eos = true;
        p.sampling.seed = 42;
        p.sampling.has_seed = true;
        p.on_event = record;
        p.user = &rec;
        vkllm_request_result res = run_request(e, &p);
        for (int i = 0; i < 3; i++) {
            cr_assert_eq(rec.last_events[i], 1, "sample %d: %u last events", i, rec.last_events[i]);
            cr_assert_eq(rec.finish[i], VKLLM_FINISH_LENGTH);
        }
        cr_assert_eq(res.completion_tokens, 12);
        cr_assert_eq(res.text_len, rec.text_len, "result text is sample 0's");
        blob b;
        blob_set(&b, res.text, res.text_len);
        if (run == 0)
            first_run = b;
        else
            cr_assert(blob_eq(&b, &first_run), "same seed, same sample 0");
        vkllm_request_result_free(&res);
    }
    close_engine(e);
}

/* ---- tokenizer and chat template */

Test(api, tokenize_detokenize_and_chat_template) {
    vkllm_engine_options o = small_options();
    o.chat_template = "chatml";
    vkllm_engine *e = open_engine_with(&o);
    vkllm_model_info info;
    vkllm_engine_model_info(e, &info);
    cr_assert_str_eq(info.chat_template, "chatml");
    const char *text = "Hello world, 123!";
    int32_t *ids;
    size_t n;
    cr_assert_eq(vkllm_tokenize(e, text, strlen(text), false, false, &ids, &n), VKLLM_OK);
    cr_assert(n > 0);
    char *back;
    size_t back_len;
    cr_assert_eq(vkllm_detokenize(e, ids, n, &back, &back_len), VKLLM_OK);
    cr_assert_str_eq(back, text);
    cr_assert_eq(back_len, strlen(text));
    free(back);
    int32_t bad[2] = {ids[0], -3};
    cr_assert_eq(vkllm_detokenize(e, bad, 2, &back, NULL), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "tokens[1]") != NULL, "%s", vkllm_last_error());
    free(ids);
    cr_assert_eq(vkllm_tokenize(e, NULL, 3, false, false, &ids, &n), VKLLM_ERR_INVALID_ARGUMENT);

    vkllm_chat_message msgs[2] = {{"system", "Be brief."}, {"user", "Hi there"}};
    char *rendered;
    cr_assert_eq(vkllm_apply_chat_template(e, msgs, 2, true, &rendered), VKLLM_OK);
    cr_assert_str_eq(rendered, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi "
                               "there<|im_end|>\n<|im_start|>assistant\n");
    free(rendered);
    vkllm_chat_message no_role[1] = {{NULL, "x"}};
    cr_assert_eq(vkllm_apply_chat_template(e, no_role, 1, true, &rendered),
                 VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "messages[0].role") != NULL, "%s", vkllm_last_error());

    /* A chat request's prompt is the rendered template's tokens. */
    vkllm_request_params p = greedy_params(2);
    p.messages = msgs;
    p.n_messages = 2;
    vkllm_request_result res = run_request(e, &p);
    cr_assert_eq(vkllm_apply_chat_template(e, msgs, 2, true, &rendered), VKLLM_OK);
    cr_assert_eq(vkllm_tokenize(e, rendered, strlen(rendered), false, true, &ids, &n), VKLLM_OK);
    cr_assert_eq(res.prompt_tokens, n);
    free(ids);
    free(rendered);
    vkllm_request_result_free(&res);
    close_engine(e);
}

/* ---- engine creation errors */

Test(api, engine_creation_errors_are_named) {
    vkllm_engine *e = (vkllm_engine *)1;
    cr_assert_eq(vkllm_engine_create("/nonexistent/model.gguf", NULL, &e), VKLLM_ERR_IO);
    cr_assert_null(e);
    cr_assert(strstr(vkllm_last_error(), "/nonexistent/model.gguf") != NULL, "%s",
              vkllm_last_error());
    vkllm_engine_options o = small_options();
    o.kv_memory_fraction = 1.5f;
    cr_assert_eq(vkllm_engine_create(model_path, &o, &e), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "kv_memory_fraction") != NULL, "%s", vkllm_last_error());
    o = small_options();
    o.max_running_seqs = 600;
    cr_assert_eq(vkllm_engine_create(model_path, &o, &e), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "max_step_tokens") != NULL, "%s", vkllm_last_error());
    o = small_options();
    o.block_size = 12;
    cr_assert_eq(vkllm_engine_create(model_path, &o, &e), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "block_size") != NULL, "%s", vkllm_last_error());
    o = small_options();
    o.chat_template = "jinja-nonsense";
    cr_assert_eq(vkllm_engine_create(model_path, &o, &e), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "chat_template") != NULL, "%s", vkllm_last_error());
    cr_assert_eq(vkllm_engine_create(model_path, NULL, NULL), VKLLM_ERR_INVALID_ARGUMENT);
    /* A file that is not GGUF. */
    char junk[256];
    snprintf(junk, sizeof junk, "/tmp/vkllm_test_api_junk_%d.gguf", (int)getpid());
    FILE *f = fopen(junk, "wb");
    fputs("this is not a model", f);
    fclose(f);
    cr_assert_eq(vkllm_engine_create(junk, NULL, &e), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), junk) != NULL, "%s", vkllm_last_error());
    unlink(junk);
}

/* ---- progress reports */

typedef struct progress_log {
    int calls;
    double last;
    bool decreased;
    char last_stage[32];
} progress_log;

static void log_progress(const char *stage, double fraction, void *user) {
    progress_log *l = user;
    if (fraction < l->last) l->decreased = true;
    l->last = fraction;
    l->calls++;
    snprintf(l->last_stage, sizeof l->last_stage, "%s", stage);
}

Test(api, loading_reports_progress) {
    progress_log log = {0};
    vkllm_engine_options o = small_options();
    o.on_progress = log_progress;
    o.progress_user = &log;
    vkllm_engine *e = open_engine_with(&o);
    cr_assert(log.calls >= 5, "%d progress calls", log.calls);
    cr_assert(!log.decreased);
    cr_assert_float_eq(log.last, 1.0, 1e-12);
    cr_assert_str_eq(log.last_stage, "ready");
    close_engine(e);
}
