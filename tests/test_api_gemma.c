/* test_api_gemma.c: the real default model (models/gemma-3-270m-q4_k_m.gguf, fetched by
 * tools/fetch_model.sh) through the public API: greedy tokens equal Hugging Face
 * transformers' (fixture), and a few-shot factual prompt is answered "Paris".
 * Skipped when the model file is absent. */
// links: api sched exec kv model gpu common
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vkllm.h"

#include "api/api_internal.h"

#define GEMMA_PATH VKLLM_SOURCE_DIR "/models/gemma-3-270m-q4_k_m.gguf"

TestSuite(api_gemma, .timeout = 600);

static vkllm_engine *open_gemma(void) {
    if (access(GEMMA_PATH, R_OK) != 0)
        cr_skip_test("%s not present (tools/fetch_model.sh)", GEMMA_PATH);
    vkllm_engine_options o;
    vkllm_engine_options_default(&o);
    o.kv_blocks = 64;
    o.max_context = 1024;
    o.max_running_seqs = 4;
    o.max_step_tokens = 256;
    vkllm_engine *e;
    vkllm_status s = vkllm_engine_create(GEMMA_PATH, &o, &e);
    cr_assert(s == VKLLM_OK, "%s: %s", vkllm_status_name(s), vkllm_last_error());
    return e;
}

static void close_gemma(vkllm_engine *e) {
    uint32_t errors = gpu_validation_errors(e->model.gpu);
    vkllm_engine_destroy(e);
    cr_assert_eq(errors, 0, "%u Vulkan validation errors", errors);
}

/* The model is the base (not instruction-tuned) Gemma 3 270M: greedy "The capital of
 * France is" continues " the capital of the country of France. ..." (as Hugging Face
 * transformers does, checked below), so the factual check uses a few-shot prompt. */
Test(api_gemma, greedy_few_shot_answers_paris) {
    vkllm_engine *e = open_gemma();
    vkllm_model_info info;
    vkllm_engine_model_info(e, &info);
    cr_assert_str_eq(info.architecture, "gemma3");
    vkllm_request_params p;
    vkllm_request_params_default(&p);
    p.prompt =
        "Q: What is the capital of Germany?\nA: Berlin\nQ: What is the capital of France?\nA:";
    p.sampling.temperature = 0;
    p.sampling.max_tokens = 3;
    vkllm_request_id id;
    cr_assert_eq(vkllm_submit(e, &p, &id), VKLLM_OK, "%s", vkllm_last_error());
    vkllm_request_result res;
    cr_assert_eq(vkllm_wait(e, id, &res), VKLLM_OK);
    cr_assert(strncmp(res.text, " Paris", 6) == 0, "greedy text: '%s'", res.text);
    vkllm_request_result_free(&res);
    close_gemma(e);
}

typedef struct collected {
    int32_t tokens[64];
    size_t n;
} collected;

static void collect(const vkllm_event *ev, void *user) {
    collected *c = user;
    for (size_t i = 0; i < ev->n_tokens && c->n < 64; i++)
        c->tokens[c->n++] = ev->tokens[i];
}

/* Greedy "The capital of France is" through the API gives transformers' greedy tokens
 * (the G line of tests/fixtures/model/gemma3_top1.txt), and its text. */
Test(api_gemma, greedy_matches_transformers) {
    FILE *f = fopen(VKLLM_SOURCE_DIR "/tests/fixtures/model/gemma3_top1.txt", "r");
    cr_assert_not_null(f);
    char line[4096];
    int32_t prompt[64], expect[64];
    size_t n_prompt = 0, n_expect = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] != 'G') continue;
        char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
        cr_assert(a && b, "malformed G line");
        *b = '\0';
        for (char *t = strtok(a + 1, " \n"); t; t = strtok(NULL, " \n"))
            prompt[n_prompt++] = (int32_t)atoi(t);
        for (char *t = strtok(b + 1, " \n"); t; t = strtok(NULL, " \n"))
            expect[n_expect++] = (int32_t)atoi(t);
        break;
    }
    fclose(f);
    cr_assert(n_prompt > 0 && n_expect >= 12);
    vkllm_engine *e = open_gemma();
    collected got = {0};
    vkllm_request_params p;
    vkllm_request_params_default(&p);
    p.prompt = "The capital of France is";
    p.sampling.temperature = 0;
    p.sampling.max_tokens = 12;
    p.on_event = collect;
    p.user = &got;
    vkllm_request_id id;
    cr_assert_eq(vkllm_submit(e, &p, &id), VKLLM_OK, "%s", vkllm_last_error());
    vkllm_request_result res;
    cr_assert_eq(vkllm_wait(e, id, &res), VKLLM_OK);
    int32_t *ids;
    size_t n_ids;
    cr_assert_eq(vkllm_tokenize(e, p.prompt, strlen(p.prompt), true, true, &ids, &n_ids), VKLLM_OK);
    cr_assert_eq(n_ids, n_prompt);
    cr_assert(memcmp(ids, prompt, n_prompt * sizeof *ids) == 0, "prompt ids differ from HF's");
    free(ids);
    cr_assert_eq(res.prompt_tokens, n_prompt);
    cr_assert_eq(got.n, 12);
    for (size_t i = 0; i < 12; i++)
        cr_assert_eq(got.tokens[i], expect[i], "token %zu: %d, transformers %d", i, got.tokens[i],
                     expect[i]);
    cr_assert(strncmp(res.text, " the capital of the country of France.", 38) == 0, "'%s'",
              res.text);
    vkllm_request_result_free(&res);
    close_gemma(e);
}
