/* test_bench_smoke.c: every `vkllm bench` command runs on the CPU device with a tiny
 * synthetic model and the JSON it writes passes sanity checks: numbers finite and
 * positive, counts equal to the configurations asked for, totals consistent.
 *
 * The built `vkllm` executable (VKLLM_BINARY_DIR/vkllm) is run as a child process, as
 * a user would. `bench serve` runs against a mock OpenAI-compatible server in this
 * process that streams a known number of tokens with known delays (first token after
 * MOCK_TTFT_MS, then one every MOCK_ITL_MS), so the measured TTFT/ITL/TPOT must lie
 * within stated bounds of those delays and the token count must equal what was sent.
 * JSON is read with a small parser below (the tests link no JSON library). */
// links: common
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define VKLLM_EXE VKLLM_BINARY_DIR "/vkllm"
#define MOCK_TTFT_MS 40
#define MOCK_ITL_MS 10
/* Measured latencies may exceed the mock's delays by scheduling noise on a loaded CI
 * machine, never undercut them (beyond clock granularity). */
#define LATENCY_SLACK_MS 1000.0

TestSuite(bench_smoke, .timeout = 600);

/* ---------------------------------------------------------------- a minimal JSON tree */

typedef enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;
typedef struct jval {
    jtype type;
    double num;
    char *str;          /* J_STR */
    struct jval **kids; /* J_ARR / J_OBJ */
    char **keys;        /* J_OBJ */
    size_t n;
} jval;

static void jskip(const char **p) {
    while (**p == ' ' || **p == '\n' || **p == '\r' || **p == '\t')
        (*p)++;
}

static jval *jparse(const char **p);

static char *jstring(const char **p) {
    (*p)++; /* opening quote */
    size_t cap = 64, n = 0;
    char *s = malloc(cap);
    while (**p && **p != '"') {
        char c = *(*p)++;
        if (c == '\\') {
            c = *(*p)++;
            if (c == 'u') { /* \u00XX only (what the writer emits) */
                c = (char)strtol((char[]){(*p)[2], (*p)[3], 0}, NULL, 16);
                *p += 4;
            } else if (c == 'n') {
                c = '\n';
            }
        }
        if (n + 2 > cap) s = realloc(s, cap *= 2);
        s[n++] = c;
    }
    cr_assert(**p == '"', "JSON: unterminated string");
    (*p)++;
    s[n] = 0;
    return s;
}

static jval *jparse(const char **p) {
    jskip(p);
    jval *v = calloc(1, sizeof *v);
    char c = **p;
    if (c == '{' || c == '[') {
        v->type = c == '{' ? J_OBJ : J_ARR;
        (*p)++;
        jskip(p);
        char close = c == '{' ? '}' : ']';
        while (**p != close) {
            v->kids = realloc(v->kids, (v->n + 1) * sizeof *v->kids);
            v->keys = realloc(v->keys, (v->n + 1) * sizeof *v->keys);
            v->keys[v->n] = NULL;
            if (v->type == J_OBJ) {
                jskip(p);
                cr_assert(**p == '"', "JSON: expected a key at '%.20s'", *p);
                v->keys[v->n] = jstring(p);
                jskip(p);
                cr_assert(**p == ':', "JSON: expected ':' at '%.20s'", *p);
                (*p)++;
            }
            v->kids[v->n++] = jparse(p);
            jskip(p);
            if (**p == ',')
                (*p)++, jskip(p);
            else
                cr_assert(**p == close, "JSON: expected ',' or '%c' at '%.20s'", close, *p);
        }
        (*p)++;
    } else if (c == '"') {
        v->type = J_STR;
        v->str = jstring(p);
    } else if (!strncmp(*p, "null", 4)) {
        v->type = J_NULL, *p += 4;
    } else if (!strncmp(*p, "true", 4) || !strncmp(*p, "false", 5)) {
        v->type = J_BOOL, v->num = c == 't', *p += c == 't' ? 4 : 5;
    } else {
        char *end;
        v->type = J_NUM;
        v->num = strtod(*p, &end);
        cr_assert(end != *p, "JSON: bad value at '%.20s'", *p);
        *p = end;
    }
    return v;
}

static jval *jget(const jval *o, const char *key) {
    cr_assert(o && o->type == J_OBJ, "JSON: not an object looking for '%s'", key);
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->keys[i], key)) return o->kids[i];
    cr_assert_fail("JSON: key '%s' missing", key);
    return NULL;
}

/* A number that must be finite and > 0 (the writer emits null for non-finite). */
static double jpos(const jval *o, const char *key) {
    jval *v = jget(o, key);
    cr_assert(v->type == J_NUM, "JSON: '%s' is not a number (null = non-finite)", key);
    cr_assert(isfinite(v->num) && v->num > 0, "JSON: '%s' = %g, expected finite > 0", key, v->num);
    return v->num;
}

static double jnum(const jval *o, const char *key) {
    jval *v = jget(o, key);
    cr_assert(v->type == J_NUM, "JSON: '%s' is not a number", key);
    return v->num;
}

static const jval *jarr(const jval *o, const char *key, size_t expect_n) {
    jval *v = jget(o, key);
    cr_assert(v->type == J_ARR, "JSON: '%s' is not an array", key);
    if (expect_n != (size_t)-1)
        cr_assert_eq(v->n, expect_n, "JSON: '%s' has %zu entries, expected %zu", key, v->n,
                     expect_n);
    return v;
}

static void jfree(jval *v) {
    for (size_t i = 0; i < v->n; i++) {
        jfree(v->kids[i]);
        free(v->keys[i]);
    }
    free(v->kids);
    free(v->keys);
    free(v->str);
    free(v);
}

static jval *jload(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    cr_assert(fread(text, 1, (size_t)n, f) == (size_t)n);
    text[n] = 0;
    fclose(f);
    const char *p = text;
    jval *v = jparse(&p);
    jskip(&p);
    cr_assert(*p == 0, "%s: trailing text after the JSON object", path);
    free(text);
    return v;
}

/* ---------------------------------------------------------------- running vkllm */

static char tmpdir[256];

static void make_tmpdir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vkllm-bench-smoke-XXXXXX");
    cr_assert(mkdtemp(tmpdir), "mkdtemp failed");
}

static void rm_tmpdir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert(system(cmd) == 0);
}

/* Runs vkllm with argv (NULL-terminated, argv[0] ignored); returns its exit code. */
static int run_vkllm(const char **argv) {
    argv[0] = VKLLM_EXE;
    struct stat st;
    cr_assert(stat(VKLLM_EXE, &st) == 0, "%s is not built (ninja vkllm_cli)", VKLLM_EXE);
    pid_t pid;
    cr_assert(posix_spawn(&pid, VKLLM_EXE, NULL, NULL, (char **)argv, environ) == 0);
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid);
    cr_assert(WIFEXITED(status), "vkllm %s died by a signal", argv[1]);
    return WEXITSTATUS(status);
}

static void path_in_tmp(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static void synth_tiny(char *model, size_t n) {
    path_in_tmp(model, n, "tiny.gguf");
    const char *argv[] = {NULL,   "synth", "--preset", "tiny-llama", "--ctx",
                          "4096", "-o",    model,      NULL};
    cr_assert_eq(run_vkllm(argv), 0, "vkllm synth failed");
}

static void assert_png(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "plot %s was not written", path);
    unsigned char sig[8] = {0};
    cr_assert(fread(sig, 1, 8, f) == 8);
    fclose(f);
    cr_assert(!memcmp(sig, "\x89PNG\r\n\x1a\n", 8), "%s is not a PNG", path);
}

/* ---------------------------------------------------------------- kernels */

Test(bench_smoke, kernels) {
    make_tmpdir();
    char json[300];
    path_in_tmp(json, sizeof json, "kernels.json");
    const char *argv[] = {NULL,     "bench", "kernels", "--small", "--types", "F16,Q4_0,Q4_K",
                          "--reps", "3",     "--batch", "1,9",     "--json",  json,
                          NULL};
    cr_assert_eq(run_vkllm(argv), 0, "bench kernels failed");
    jval *root = jload(json);
    jpos(jget(root, "copy"), "gbps");
    cr_assert_eq(jnum(root, "failures"), 0);
    /* 1 and 16 workgroups, without and with a timestamp after each dispatch */
    const jval *floor = jarr(root, "dispatch_floor", 4);
    for (size_t i = 0; i < floor->n; i++) {
        jpos(floor->kids[i], "us_per_dispatch");
        cr_assert_eq(jnum(floor->kids[i], "workgroups"), i < 2 ? 1 : 16);
        cr_assert_eq(jnum(floor->kids[i], "timestamp_after_each"), i % 2);
    }
    /* 3 types x 4 shapes x 2 batches x (matvec, tiled) (+ coopmat where the device has it) */
    bool coopmat = jget(jget(root, "device"), "coopmat_nv")->num != 0;
    const jval *mm = jarr(root, "matmul", (size_t)-1);
    size_t want = 3 * 4 * 2 * 2, got_cm = 0;
    for (size_t i = 0; i < mm->n; i++) {
        const jval *e = mm->kids[i];
        jpos(e, "ms");
        jpos(e, "gbps");
        jpos(e, "tflops");
        jpos(e, "frac_copy_bw");
        double flops = jpos(e, "flops");
        cr_assert_float_eq(flops, 2.0 * jnum(e, "rows") * jnum(e, "cols") * jnum(e, "batch"),
                           1e-6 * flops, "flops of entry %zu", i);
        got_cm += !strcmp(jget(e, "kernel")->str, "coopmat");
    }
    cr_assert_eq(mm->n - got_cm, want, "matmul entries: %zu (+%zu coopmat), expected %zu",
                 mm->n - got_cm, got_cm, want);
    if (!coopmat) cr_assert_eq(got_cm, 0);
    const jval *att = jarr(root, "attention", 5); /* 2 contexts x 2 batches decode + prefill */
    for (size_t i = 0; i < att->n; i++) {
        jpos(att->kids[i], "ms");
        jpos(att->kids[i], "gbps");
        jpos(att->kids[i], "tflops");
    }
    jfree(root);
    rm_tmpdir();
}

/* ---------------------------------------------------------------- latency */

Test(bench_smoke, latency) {
    make_tmpdir();
    char model[300], json[300], png[300];
    synth_tiny(model, sizeof model);
    path_in_tmp(json, sizeof json, "latency.json");
    path_in_tmp(png, sizeof png, "latency.png");
    const char *argv[] = {NULL, "bench",  "latency", "-m",    model,     "-p",  "40",
                          "-n", "6",      "-r",      "2",     "--batch", "2,5", "--batch-prompt",
                          "20", "--json", json,      "--png", png,       NULL};
    cr_assert_eq(run_vkllm(argv), 0, "bench latency failed");
    jval *root = jload(json);
    const jval *pp = jget(root, "pp"), *tg = jget(root, "tg");
    cr_assert_eq(jnum(pp, "n_prompt"), 40);
    jpos(pp, "tps_mean");
    jpos(pp, "wall_ms_mean");
    cr_assert(jnum(pp, "tps_sd") >= 0);
    /* tokens/s and time per repetition agree: 40 tokens / wall time. */
    cr_assert_float_eq(jnum(pp, "tps_mean"), 40 / (jnum(pp, "wall_ms_mean") * 1e-3),
                       0.5 * jnum(pp, "tps_mean"), "pp tokens/s vs wall time");
    cr_assert_eq(jnum(tg, "n_gen"), 6);
    jpos(tg, "tps_mean");
    const jval *b = jarr(root, "batch", 2);
    cr_assert_eq(jnum(b->kids[0], "n_seqs"), 2);
    cr_assert_eq(jnum(b->kids[1], "n_seqs"), 5);
    for (size_t i = 0; i < 2; i++) {
        jpos(b->kids[i], "tps_mean");
        jpos(b->kids[i], "ms_per_step");
    }
    assert_png(png);
    jfree(root);
    rm_tmpdir();
}

/* --profile: one table per test whose rows add up to the step's GPU time, with the
 * kernels a decode step must run. */
Test(bench_smoke, latency_profile) {
    make_tmpdir();
    char model[300], json[300];
    synth_tiny(model, sizeof model);
    path_in_tmp(json, sizeof json, "profile.json");
    const char *argv[] = {NULL, "bench",     "latency", "-m", model,     "-p", "24",
                          "-n", "3",         "-r",      "1",  "--batch", "2",  "--batch-prompt",
                          "8",  "--profile", "--json",  json, NULL};
    cr_assert_eq(run_vkllm(argv), 0, "bench latency --profile failed");
    jval *root = jload(json);
    const jval *prof = jarr(root, "profile", 3); /* pp24, tg3, B=2 */
    const char *tests[] = {"pp24", "tg3", "decode B=2 (pp8+tg3)"};
    for (size_t t = 0; t < 3; t++) {
        const jval *p = prof->kids[t];
        const jval *name = jget(p, "test");
        cr_assert(name->type == J_STR && !strcmp(name->str, tests[t]), "test %zu: %s", t,
                  name->type == J_STR ? name->str : "?");
        cr_assert_eq(jnum(p, "steps"), t == 0 ? 1 : 3);
        double step_us = jpos(p, "gpu_ms_per_step") * 1e3, sum = 0;
        const jval *rows = jarr(p, "rows", (size_t)-1);
        bool matvec = false, attention = false;
        for (size_t i = 0; i < rows->n; i++) {
            const jval *label = jget(rows->kids[i], "label");
            cr_assert(label->type == J_STR);
            matvec |= strstr(label->str, "matvec") != NULL || strstr(label->str, "matmul") != NULL;
            attention |= strstr(label->str, "attn_") != NULL;
            cr_assert(jnum(rows->kids[i], "us_per_step") >= 0);
            cr_assert(jpos(rows->kids[i], "calls_per_step") > 0);
            sum += jnum(rows->kids[i], "us_per_step");
        }
        cr_assert(matvec && attention, "%s: products and attention appear", tests[t]);
        cr_assert_float_eq(sum, step_us, 1e-6 * step_us + 1e-3, "%s: rows add up to the step",
                           tests[t]);
    }
    jfree(root);
    rm_tmpdir();
}

/* ---------------------------------------------------------------- throughput */

Test(bench_smoke, throughput_all_modes) {
    make_tmpdir();
    char model[300], json[300], png[300];
    synth_tiny(model, sizeof model);
    path_in_tmp(json, sizeof json, "tp.json");
    path_in_tmp(png, sizeof png, "tp.png");
    /* 24 requests at 1/20 of ShareGPT lengths; a KV cache of 25 blocks of the tiny model
     * (4 KiB each: 2 layers x 2 KV heads x 16 tokens x (16+16) dims x 2 bytes) forces
     * queueing (contiguous reservations fill it). */
    const char *argv[] = {
        NULL,   "bench",       "throughput", "-m",         model,  "--requests",
        "24",   "--len-scale", "0.05",       "--mode",     "both", "--kv",
        "both", "--kv-memory", "100K",       "--max-seqs", "8",    "--max-batch-tokens",
        "64",   "--seed",      "3",          "--json",     json,   "--png",
        png,    NULL};
    cr_assert_eq(run_vkllm(argv), 0, "bench throughput failed");
    jval *root = jload(json);
    const jval *runs = jarr(root, "runs", 4);
    double kv_bytes = jpos(root, "kv_bytes");
    double prompt_tokens = -1, output_tokens = -1;
    for (size_t i = 0; i < runs->n; i++) {
        const jval *r = runs->kids[i];
        cr_assert_eq(jnum(r, "completed"), 24, "run %zu completed %g of 24", i,
                     jnum(r, "completed"));
        cr_assert_eq(jnum(r, "rejected"), 0);
        double el = jpos(r, "elapsed_s");
        double rps = jpos(r, "requests_per_s");
        cr_assert_float_eq(rps * el, 24, 1e-6 * 24, "requests/s x elapsed");
        double out = jpos(r, "output_tokens"), prompt = jpos(r, "prompt_tokens");
        cr_assert_float_eq(jpos(r, "output_tokens_per_s") * el, out, 1e-6 * out);
        cr_assert_float_eq(jpos(r, "total_tokens_per_s") * el, out + prompt, 1e-6 * out);
        /* Same workload in every run. */
        if (prompt_tokens < 0) prompt_tokens = prompt, output_tokens = out;
        cr_assert_eq(prompt, prompt_tokens);
        cr_assert_eq(out, output_tokens);
        /* Every prompt and output token went through the forward pass at least once. */
        cr_assert_geq(jnum(r, "forward_tokens"), prompt + out - 24);
        jpos(r, "steps");
        jpos(r, "ttft_mean_s");
        double usage = jpos(r, "peak_kv_usage");
        cr_assert(usage <= 1.0 + 1e-9, "peak KV usage %g > 1", usage);
        const jval *tl = jarr(r, "kv_timeline", (size_t)-1);
        cr_assert_gt(tl->n, 0);
        for (size_t s = 0; s < tl->n; s++) {
            const jval *p = tl->kids[s];
            cr_assert_eq(p->n, 4);
            cr_assert(p->kids[1]->num >= p->kids[2]->num, "live bytes above allocated");
            cr_assert(p->kids[1]->num <= kv_bytes * (1 + 1e-9), "allocated above capacity");
        }
    }
    assert_png(png);
    jfree(root);
    rm_tmpdir();
}

/* ---------------------------------------------------------------- serve, mock server */

typedef struct mock_server {
    int listen_fd;
    int port;
    atomic_long tokens_sent;
    atomic_int requests;
    pthread_t thread;
} mock_server;

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void send_all(int fd, const char *s, size_t n) {
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        s += w, n -= (size_t)w;
    }
}

static void send_chunk(int fd, const char *data) {
    char head[32];
    int hl = snprintf(head, sizeof head, "%zx\r\n", strlen(data));
    send_all(fd, head, (size_t)hl);
    send_all(fd, data, strlen(data));
    send_all(fd, "\r\n", 2);
}

typedef struct mock_conn {
    mock_server *srv;
    int fd;
} mock_conn;

static void *mock_conn_main(void *arg) {
    mock_conn *c = arg;
    char buf[65536];
    size_t have = 0;
    char *body = NULL;
    long content_length = -1;
    for (;;) { /* headers, then the Content-Length body */
        ssize_t r = recv(c->fd, buf + have, sizeof buf - 1 - have, 0);
        if (r <= 0) break;
        have += (size_t)r;
        buf[have] = 0;
        if (!body && (body = strstr(buf, "\r\n\r\n"))) {
            body += 4;
            char *cl = strcasestr(buf, "Content-Length:");
            content_length = cl ? strtol(cl + 15, NULL, 10) : 0;
        }
        if (body && (long)(have - (size_t)(body - buf)) >= content_length) break;
    }
    char *mt = body ? strstr(body, "\"max_tokens\":") : NULL;
    long n = mt ? strtol(mt + 13, NULL, 10) : 0;
    atomic_fetch_add(&c->srv->requests, 1);
    const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                       "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    send_all(c->fd, head, strlen(head));
    sleep_ms(MOCK_TTFT_MS);
    for (long i = 0; i < n; i++) {
        if (i) sleep_ms(MOCK_ITL_MS);
        send_chunk(c->fd, "data: {\"object\":\"text_completion\",\"choices\":[{\"index\":0,"
                          "\"text\":\" tok\",\"finish_reason\":null}]}\n\n");
        atomic_fetch_add(&c->srv->tokens_sent, 1);
    }
    send_chunk(c->fd, "data: [DONE]\n\n");
    send_all(c->fd, "0\r\n\r\n", 5);
    close(c->fd);
    free(c);
    return NULL;
}

static void *mock_accept_main(void *arg) {
    mock_server *srv = arg;
    for (;;) {
        int fd = accept(srv->listen_fd, NULL, NULL);
        if (fd < 0) return NULL; /* listening socket shut down */
        mock_conn *c = malloc(sizeof *c);
        c->srv = srv, c->fd = fd;
        pthread_t t;
        pthread_create(&t, NULL, mock_conn_main, c);
        pthread_detach(t);
    }
}

static void mock_start(mock_server *srv) {
    memset(srv, 0, sizeof *srv);
    srv->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(srv->listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(bind(srv->listen_fd, (struct sockaddr *)&a, sizeof a) == 0);
    cr_assert(listen(srv->listen_fd, 64) == 0);
    socklen_t len = sizeof a;
    getsockname(srv->listen_fd, (struct sockaddr *)&a, &len);
    srv->port = ntohs(a.sin_port);
    pthread_create(&srv->thread, NULL, mock_accept_main, srv);
}

static void mock_stop(mock_server *srv) {
    shutdown(srv->listen_fd, SHUT_RDWR);
    close(srv->listen_fd);
    pthread_join(srv->thread, NULL);
}

Test(bench_smoke, serve_against_mock_server) {
    make_tmpdir();
    mock_server srv;
    mock_start(&srv);
    char url[64], json[300], png[300];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", srv.port);
    path_in_tmp(json, sizeof json, "serve.json");
    path_in_tmp(png, sizeof png, "serve.png");
    const char *argv[] = {
        NULL,     "bench",         "serve",       "--url",  url,      "--requests", "6",
        "--rate", "50,inf",        "--len-scale", "0.03",   "--seed", "5",          "--slo-ttft-ms",
        "10000",  "--slo-tpot-ms", "10000",       "--json", json,     "--png",      png,
        NULL};
    cr_assert_eq(run_vkllm(argv), 0, "bench serve failed");
    mock_stop(&srv);
    cr_assert_eq(atomic_load(&srv.requests), 12);
    jval *root = jload(json);
    const jval *runs = jarr(root, "runs", 2);
    double tokens = 0;
    for (size_t i = 0; i < runs->n; i++) {
        const jval *r = runs->kids[i];
        cr_assert_eq(jnum(r, "completed"), 6);
        cr_assert_eq(jnum(r, "failed"), 0);
        double d = jpos(r, "duration_s");
        tokens += jpos(r, "output_tokens_per_s") * d;
        /* Generous SLOs: every request is good. */
        cr_assert_float_eq(jpos(r, "goodput"), jpos(r, "requests_per_s"), 1e-9);
        const jval *ttft = jget(r, "ttft_ms"), *itl = jget(r, "itl_ms"), *tpot = jget(r, "tpot_ms");
        double f50 = jpos(ttft, "p50"), f99 = jpos(ttft, "p99");
        cr_assert(f50 >= MOCK_TTFT_MS - 1 && f99 <= MOCK_TTFT_MS + LATENCY_SLACK_MS,
                  "TTFT p50 %g / p99 %g ms vs the mock's %d ms", f50, f99, MOCK_TTFT_MS);
        cr_assert(f50 <= f99 + 1e-9);
        double i50 = jpos(itl, "p50");
        cr_assert(i50 >= MOCK_ITL_MS - 1 && i50 <= MOCK_ITL_MS + LATENCY_SLACK_MS,
                  "ITL p50 %g ms vs the mock's %d ms", i50, MOCK_ITL_MS);
        double t50 = jpos(tpot, "p50");
        cr_assert(t50 >= MOCK_ITL_MS - 1, "TPOT p50 %g ms below the mock's %d", t50, MOCK_ITL_MS);
        double e2e = jpos(jget(r, "e2e_ms"), "mean");
        cr_assert(e2e >= jnum(ttft, "mean"), "E2E below TTFT");
    }
    cr_assert_float_eq(tokens, (double)atomic_load(&srv.tokens_sent), 1e-6 * tokens,
                       "tokens counted %g vs sent %ld", tokens, atomic_load(&srv.tokens_sent));
    assert_png(png);
    jfree(root);
    rm_tmpdir();
}

/* A server that is not there: every request fails, the command says so (exit 1) and
 * the JSON counts the failures with the reason. */
Test(bench_smoke, serve_unreachable_server_fails_cleanly) {
    make_tmpdir();
    /* A port that was free a moment ago: bind, read it, close. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    char url[64], json[300];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    path_in_tmp(json, sizeof json, "fail.json");
    const char *argv[] = {NULL,         "bench", "serve",  "--url", url,
                          "--requests", "3",     "--json", json,    NULL};
    cr_assert_eq(run_vkllm(argv), 1);
    jval *root = jload(json);
    const jval *r = jarr(root, "runs", 1)->kids[0];
    cr_assert_eq(jnum(r, "failed"), 3);
    cr_assert_eq(jnum(r, "completed"), 0);
    cr_assert(strstr(jget(r, "first_error")->str, "connect") != NULL, "%s",
              jget(r, "first_error")->str);
    jfree(root);
    rm_tmpdir();
}

/* Bad command lines are refused with exit code 2 before anything runs. */
Test(bench_smoke, bad_options_are_refused) {
    const char *a1[] = {NULL, "bench", "throughput", "--requests", "5", NULL}; /* no -m */
    cr_assert_eq(run_vkllm(a1), 2);
    const char *a2[] = {NULL, "bench", "latency", "-m", "x.gguf", "-r", "0", NULL};
    cr_assert_eq(run_vkllm(a2), 2);
    const char *a3[] = {NULL, "bench", "kernels", "--types", "Q9_9", NULL};
    cr_assert_eq(run_vkllm(a3), 2);
    const char *a4[] = {NULL, "bench", "serve", "--url", "https://example.com", NULL};
    cr_assert_eq(run_vkllm(a4), 2);
    const char *a5[] = {NULL, "bench", "nosuch", NULL};
    cr_assert_eq(run_vkllm(a5), 2);
    const char *a6[] = {NULL, "bench", "throughput", "-m", "x.gguf", "--kv-memory", "lots", NULL};
    cr_assert_eq(run_vkllm(a6), 2);
}
