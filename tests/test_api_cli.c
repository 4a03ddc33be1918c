/* test_api_cli.c: `vkllm run` and `vkllm chat` (tools/vkllm/cmd_run.c, cmd_chat.c) as a
 * user runs them, on a small synthetic llama model, and tools/examples/embed.c (the
 * program that embeds libvkllm.so through include/vkllm.h only).
 *
 * Oracle: greedy text of the same prompt or conversation computed in-process through the
 * public API; the command's stdout must be exactly that text (bytes). Errors: the exit
 * code and a message naming the bad flag or the missing model. */
// links: api sched exec kv model gpu common
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vkllm.h"

#include "model/synth.h"

#define VKLLM_EXE VKLLM_BINARY_DIR "/vkllm"
#define EMBED_EXE VKLLM_BINARY_DIR "/tools/examples/vkllm_embed"
#define ENGINE_FLAGS "--kv-blocks 64 -c 256"

static char model_path[512], tmp_dir[256];

static void setup(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/vkllm_test_api_cli_%d", (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tmp_dir);
    cr_assert_eq(system(cmd), 0);
    synth_params p;
    synth_params_default(MODEL_ARCH_LLAMA, &p);
    p.tokenizer_path = VKLLM_SOURCE_DIR "/tests/fixtures/tokenizer/llama3-bpe-tiny.gguf";
    p.n_vocab = 0;
    p.n_ctx = 1024;
    p.seed = 9;
    snprintf(model_path, sizeof model_path, "%s/model.gguf", tmp_dir);
    cr_assert(synth_write(&p, model_path) == VKLLM_OK, "%s", vkllm_last_error());
}

static void teardown(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    (void)system(cmd);
}

TestSuite(api_cli, .init = setup, .fini = teardown, .timeout = 300);

typedef struct output {
    char *out, *err;
    size_t out_len;
    int code;
} output;

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
    fclose(f);
    if (len) *len = got;
    return buf;
}

/* Runs `command` through sh with stdin from `input` (NULL: /dev/null). */
static output run_shell(const char *command, const char *input) {
    char in_path[300], out_path[300], err_path[300], full[4096];
    snprintf(in_path, sizeof in_path, "%s/stdin", tmp_dir);
    snprintf(out_path, sizeof out_path, "%s/stdout", tmp_dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", tmp_dir);
    FILE *f = fopen(in_path, "wb");
    if (input) fputs(input, f);
    fclose(f);
    snprintf(full, sizeof full, "%s <%s >%s 2>%s", command, in_path, out_path, err_path);
    int status = system(full);
    output o;
    o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    o.out = slurp(out_path, &o.out_len);
    o.err = slurp(err_path, NULL);
    return o;
}

static void output_free(output *o) {
    free(o->out);
    free(o->err);
}

/* Greedy text through the API: a prompt, or one user message when chat is set. */
static uint32_t last_prompt_tokens; /* of the last api_greedy call */

static char *api_greedy(const char *prompt, bool chat, uint32_t n, bool ignore_eos, size_t *len) {
    vkllm_engine_options o;
    vkllm_engine_options_default(&o);
    o.kv_blocks = 64;
    o.max_context = 256;
    vkllm_engine *e;
    cr_assert_eq(vkllm_engine_create(model_path, &o, &e), VKLLM_OK, "%s", vkllm_last_error());
    vkllm_request_params p;
    vkllm_request_params_default(&p);
    vkllm_chat_message msg = {"user", prompt};
    if (chat) {
        p.messages = &msg;
        p.n_messages = 1;
    } else {
        p.prompt = prompt;
    }
    p.sampling.temperature = 0;
    p.sampling.max_tokens = n;
    p.sampling.ignore_eos = ignore_eos;
    vkllm_request_id id;
    cr_assert_eq(vkllm_submit(e, &p, &id), VKLLM_OK, "%s", vkllm_last_error());
    vkllm_request_result res;
    cr_assert_eq(vkllm_wait(e, id, &res), VKLLM_OK);
    vkllm_engine_destroy(e);
    last_prompt_tokens = res.prompt_tokens;
    *len = res.text_len;
    return res.text;
}

static void expect_bytes(const output *o, const char *want, size_t want_len, const char *what) {
    cr_assert(o->out_len >= want_len && memcmp(o->out, want, want_len) == 0,
              "%s: stdout (%zu bytes) does not start with the API's text (%zu bytes)\nstdout: "
              "%s\nstderr: %s",
              what, o->out_len, want_len, o->out, o->err);
}

Test(api_cli, run_streams_the_greedy_text_and_reports_speeds) {
    size_t len;
    char *want = api_greedy("Hello there", false, 12, true, &len);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s run -m %s -p 'Hello there' -n 12 --temperature 0 --ignore-eos " ENGINE_FLAGS,
             VKLLM_EXE, model_path);
    output o = run_shell(cmd, NULL);
    cr_assert_eq(o.code, 0, "exit %d: %s", o.code, o.err);
    expect_bytes(&o, want, len, "run");
    size_t expect_len = len + (len && want[len - 1] == '\n' ? 0 : 1);
    cr_assert_eq(o.out_len, expect_len, "stdout is the text and a final newline");
    char prompt_line[64], prefill_line[64];
    snprintf(prompt_line, sizeof prompt_line, "prompt: %u tokens", last_prompt_tokens);
    snprintf(prefill_line, sizeof prefill_line, "prefill: %u tokens in", last_prompt_tokens);
    const char *needles[] = {prompt_line,  "generated: 12 tokens (length)",
                             prefill_line, "decode: 11 tokens in",
                             "tokens/s",   "device: "};
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        cr_assert(strstr(o.err, needles[i]) != NULL, "stderr lacks '%s':\n%s", needles[i], o.err);
    output_free(&o);
    free(want);

    /* --chat: the prompt goes through the chat template as one user message. */
    want = api_greedy("Hello there", true, 8, false, &len);
    snprintf(cmd, sizeof cmd, "%s run -m %s -p 'Hello there' --chat -n 8 --temp 0 " ENGINE_FLAGS,
             VKLLM_EXE, model_path);
    o = run_shell(cmd, NULL);
    cr_assert_eq(o.code, 0, "exit %d: %s", o.code, o.err);
    expect_bytes(&o, want, len, "run --chat");
    output_free(&o);
    free(want);
}

Test(api_cli, run_refuses_bad_flags_and_missing_models) {
    struct {
        const char *args;
        int code;
        const char *named;
    } cases[] = {
        {"run", 2, "-p PROMPT is required"},
        {"run -p x --temperature -1", 2, "--temperature"},
        {"run -p x --top-p 2", 2, "--top-p"},
        {"run -p x -n 0", 2, "-n"},
        {"run -p x --seed abc", 2, "--seed"},
        {"run -p x --bogus", 2, "--bogus"},
        {"run -p x -m /nonexistent.gguf", 1, "/nonexistent.gguf"},
        {"run -p x --system s", 2, "--chat"},
        {"chat --frobnicate", 2, "--frobnicate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s %s", VKLLM_EXE, cases[i].args);
        output o = run_shell(cmd, NULL);
        cr_assert_eq(o.code, cases[i].code, "'%s': exit %d: %s", cases[i].args, o.code, o.err);
        cr_assert(strstr(o.err, cases[i].named) != NULL, "'%s': stderr does not name '%s': %s",
                  cases[i].args, cases[i].named, o.err);
        output_free(&o);
    }
    /* No -m, VKLLM_MODEL pointing nowhere. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "VKLLM_MODEL=/nowhere/m.gguf %s run -p x", VKLLM_EXE);
    output o = run_shell(cmd, NULL);
    cr_assert_eq(o.code, 1);
    cr_assert(strstr(o.err, "VKLLM_MODEL") && strstr(o.err, "/nowhere/m.gguf"), "%s", o.err);
    output_free(&o);
    /* No model anywhere: a copy of the binary away from the repository's models/. */
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/bin && cp %s %s/bin/vkllm && cd %s && env -u VKLLM_MODEL bin/vkllm run "
             "-p x",
             tmp_dir, VKLLM_EXE, tmp_dir, tmp_dir);
    o = run_shell(cmd, NULL);
    cr_assert_eq(o.code, 1, "%s", o.err);
    cr_assert(strstr(o.err, "tools/fetch_model.sh") != NULL, "%s", o.err);
    cr_assert(strstr(o.err, "gemma-3-270m-q4_k_m.gguf") != NULL, "%s", o.err);
    output_free(&o);
    o = run_shell(VKLLM_EXE " run --help", NULL);
    cr_assert_eq(o.code, 0);
    cr_assert(strstr(o.out, "--temperature") && strstr(o.out, "--kv-blocks"), "%s", o.out);
    output_free(&o);
}

/* Parses "[turn N: prompt P tokens (C cached), answer A tokens" lines of chat -v. */
static int parse_turns(const char *err, unsigned prompt[8], unsigned cached[8],
                       unsigned answer[8]) {
    int n = 0;
    for (const char *p = err; (p = strstr(p, "[turn ")) && n < 8; p++) {
        unsigned t;
        cr_assert_eq(sscanf(p, "[turn %u: prompt %u tokens (%u cached), answer %u tokens", &t,
                            &prompt[n], &cached[n], &answer[n]),
                     4, "bad turn line: %.80s", p);
        cr_assert_eq(t, (unsigned)n + 1);
        n++;
    }
    return n;
}

Test(api_cli, chat_keeps_the_conversation_and_resets) {
    size_t len;
    char *first = api_greedy("Hello", true, 6, false, &len);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s chat -m %s -v -n 6 --temperature 0 " ENGINE_FLAGS, VKLLM_EXE,
             model_path);
    output o = run_shell(cmd, "Hello\n\nHello again\n/reset\nHello\n/exit\nnot read\n");
    cr_assert_eq(o.code, 0, "exit %d: %s", o.code, o.err);
    unsigned prompt[8], cached[8], answer[8];
    int turns = parse_turns(o.err, prompt, cached, answer);
    cr_assert_eq(turns, 3, "three turns (blank line skipped, nothing after /exit):\n%s", o.err);
    cr_assert(prompt[1] > prompt[0] + answer[0],
              "turn 2 carries turn 1 (prompt %u, then %u with a %u-token answer)", prompt[0],
              prompt[1], answer[0]);
    cr_assert_eq(prompt[2], prompt[0], "after /reset the conversation starts over");
    cr_assert(cached[2] > 0, "the first turn's blocks are found in the prefix cache");
    cr_assert(strstr(o.err, "[conversation cleared]") != NULL, "%s", o.err);
    /* stdout: answer 1, answer 2, answer 3 (= answer 1), each ending in a newline. */
    expect_bytes(&o, first, len, "chat turn 1");
    cr_assert(o.out_len >= 2 * (len + 1));
    cr_assert(memcmp(o.out + o.out_len - (len + 1), first, len) == 0 &&
                  o.out[o.out_len - 1] == '\n',
              "turn 3 repeats turn 1's answer:\n%s", o.out);
    output_free(&o);
    free(first);
}

/* tools/examples/embed.c, built against libvkllm.so. */
Test(api_cli, embed_example_prints_the_greedy_text) {
    cr_assert(access(EMBED_EXE, X_OK) == 0,
              "%s is not built: tools/examples/CMakeLists.txt must be added to the build",
              EMBED_EXE);
    size_t len;
    char *want = api_greedy("Embedded engines", false, 10, false, &len);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s 'Embedded engines' 10", EMBED_EXE, model_path);
    output o = run_shell(cmd, NULL);
    cr_assert_eq(o.code, 0, "exit %d: %s", o.code, o.err);
    cr_assert_eq(o.out_len, len + 1, "the text and a newline:\n%s", o.out);
    expect_bytes(&o, want, len, "embed");
    cr_assert(strstr(o.err, "llama") && strstr(o.err, "generated"), "%s", o.err);
    output_free(&o);
    o = run_shell(EMBED_EXE, NULL);
    cr_assert_eq(o.code, 2);
    cr_assert(strstr(o.err, "usage") && strstr(o.err, "0.1.0"), "%s", o.err);
    output_free(&o);
    free(want);
}
