/* bench_latency.c: `vkllm bench latency`: single-stream prefill and decode speed in
 * tokens/s, as llama-bench's pp512 / tg128, and aggregate decode speed of N sequences
 * decoding together (--batch), as llama-batched-bench's TG figure.
 *
 * It drives the runner directly (exec_step), so only model steps are timed: no
 * tokenizer, no scheduler, no HTTP. Each sequence owns a fixed run of KV blocks.
 *   pp: one step of the whole P-token prompt (one sequence, empty cache) producing the
 *       logits (and greedy token) of its last position; tokens/s = P / step wall time.
 *   tg: N steps of one token each, from an empty cache (positions 0..N-1, as
 *       llama-bench's tg), each step's greedy token fed to the next; tokens/s = N / total.
 *   --batch B: B sequences are prefilled with a 128-token prompt (untimed, packed into
 *       steps of at most max_tokens), then N steps decode all B at once (timed);
 *       tokens/s = B * N / total.
 * Timings are wall time around exec_step (submit + wait + the small readback of the
 * greedy tokens), i.e. what a caller of the engine sees. One untimed warm-up repetition
 * runs first (pipeline creation), then `reps` timed ones: mean and sample standard
 * deviation of the per-repetition tokens/s. The GPU time of the step command buffers
 * (timestamps) is reported beside it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define LAT_MAX_BATCHES 16

typedef struct lat_run {
    bench_model *m;
    uint32_t per_seq_blocks;
    int32_t *tables; /* [max_seqs][per_seq_blocks] */
    uint64_t rng;
    bench_profile *prof; /* non-null: timed steps add to it (--profile) */
} lat_run;

static uint32_t lat_rand(lat_run *r, uint32_t below) {
    r->rng ^= r->rng << 13, r->rng ^= r->rng >> 7, r->rng ^= r->rng << 17;
    return (uint32_t)(r->rng % below);
}

typedef struct lat_step {
    uint32_t n_tokens, n_seqs;
    int32_t *tokens, *positions, *slots, *argmax;
    exec_seq_plan *seqs;
} lat_step;

static bool lat_step_alloc(lat_step *s, uint32_t max_tokens, uint32_t max_seqs) {
    memset(s, 0, sizeof *s);
    s->tokens = malloc((size_t)max_tokens * 4);
    s->positions = malloc((size_t)max_tokens * 4);
    s->slots = malloc((size_t)max_tokens * 4);
    s->argmax = malloc((size_t)max_seqs * 4);
    s->seqs = malloc((size_t)max_seqs * sizeof *s->seqs);
    return s->tokens && s->positions && s->slots && s->argmax && s->seqs;
}

static void lat_step_free(lat_step *s) {
    free(s->tokens);
    free(s->positions);
    free(s->slots);
    free(s->argmax);
    free(s->seqs);
}

/* Appends n tokens of sequence `seq` (whose cache already holds `ctx` tokens). */
static void lat_add(lat_run *r, lat_step *s, uint32_t seq, uint32_t ctx, const int32_t *tokens,
                    uint32_t n) {
    uint32_t bs = exec_model_options(r->m->exec)->block_size;
    const int32_t *table = r->tables + (size_t)seq * r->per_seq_blocks;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t pos = ctx + i, t = s->n_tokens + i;
        s->tokens[t] = tokens[i];
        s->positions[t] = (int32_t)pos;
        s->slots[t] = table[pos / bs] * (int32_t)bs + (int32_t)(pos % bs);
    }
    s->seqs[s->n_seqs++] = (exec_seq_plan){.first_token = s->n_tokens,
                                           .n_new = n,
                                           .context_len = ctx + n,
                                           .block_table = table,
                                           .n_blocks = r->per_seq_blocks,
                                           .need_logits = true};
    s->n_tokens += n;
}

/* Runs the step; adds its wall and GPU time. */
static bool lat_run_step(lat_run *r, lat_step *s, double *wall_s, double *gpu_ms) {
    exec_step_plan plan = {.n_tokens = s->n_tokens,
                           .tokens = s->tokens,
                           .positions = s->positions,
                           .slots = s->slots,
                           .n_seqs = s->n_seqs,
                           .seqs = s->seqs};
    double t0 = bench_now();
    vkllm_status st = exec_step(r->m->exec, &plan, NULL, s->argmax);
    *wall_s += bench_now() - t0;
    *gpu_ms += exec_last_step_gpu_ms(r->m->exec);
    s->n_tokens = s->n_seqs = 0;
    if (st != VKLLM_OK) {
        fprintf(stderr, "vkllm bench latency: step failed: %s\n", vkllm_last_error());
        return false;
    }
    return true;
}

typedef struct lat_result {
    double tps_mean, tps_sd, wall_ms_mean, gpu_ms_mean; /* gpu/wall per repetition */
} lat_result;

static lat_result lat_summarize(double *tps, double *wall_ms, double *gpu_ms, uint32_t reps) {
    lat_result out;
    bench_summary s = bench_summarize(tps, reps);
    out.tps_mean = s.mean;
    out.tps_sd = s.sd;
    out.wall_ms_mean = bench_summarize(wall_ms, reps).mean;
    out.gpu_ms_mean = bench_summarize(gpu_ms, reps).mean;
    return out;
}

/* pp: one prompt of n_prompt tokens as one step. */
static bool lat_prefill(lat_run *r, lat_step *s, uint32_t n_prompt, uint32_t reps,
                        lat_result *out) {
    uint32_t V = r->m->cfg.n_vocab;
    int32_t *prompt = malloc((size_t)n_prompt * 4);
    double tps[64], wall[64], gpu[64];
    bool ok = prompt != NULL;
    for (uint32_t rep = 0; ok && rep <= reps; rep++) { /* rep 0: warm-up */
        for (uint32_t i = 0; i < n_prompt; i++)
            prompt[i] = (int32_t)lat_rand(r, V);
        double w = 0, g = 0;
        lat_add(r, s, 0, 0, prompt, n_prompt);
        ok = lat_run_step(r, s, &w, &g);
        if (ok && rep > 0 && r->prof)
            bench_profile_add_step(r->prof, r->m->gpu, exec_last_step_record_ms(r->m->exec));
        if (rep > 0) {
            tps[rep - 1] = n_prompt / w;
            wall[rep - 1] = w * 1e3;
            gpu[rep - 1] = g;
        }
    }
    free(prompt);
    if (ok) *out = lat_summarize(tps, wall, gpu, reps);
    return ok;
}

/* tg (n_seqs == 1) or batched decode: n_seqs sequences, each with an n_prompt-token
 * prompt (0: empty cache), then n_gen decode steps of all of them together. */
static bool lat_decode(lat_run *r, lat_step *s, uint32_t n_seqs, uint32_t n_prompt, uint32_t n_gen,
                       uint32_t reps, lat_result *out) {
    const exec_options *o = exec_model_options(r->m->exec);
    uint32_t V = r->m->cfg.n_vocab;
    int32_t *prompt = malloc((size_t)(n_prompt ? n_prompt : 1) * 4);
    int32_t *next = malloc((size_t)n_seqs * 4);
    double tps[64], wall[64], gpu[64];
    bool ok = prompt && next;
    for (uint32_t rep = 0; ok && rep <= reps; rep++) {
        double w = 0, g = 0;
        /* Prefill (untimed), packed into steps of at most max_tokens / max_seqs. */
        for (uint32_t q = 0; ok && q < n_seqs; q++) {
            if (!n_prompt) {
                next[q] = (int32_t)lat_rand(r, V);
                continue;
            }
            if (s->n_tokens + n_prompt > o->max_tokens || s->n_seqs == o->max_seqs) {
                double w2 = 0, g2 = 0;
                uint32_t first = q - s->n_seqs;
                ok = lat_run_step(r, s, &w2, &g2);
                for (uint32_t j = first; ok && j < q; j++)
                    next[j] = s->argmax[j - first];
            }
            for (uint32_t i = 0; i < n_prompt; i++)
                prompt[i] = (int32_t)lat_rand(r, V);
            lat_add(r, s, q, 0, prompt, n_prompt);
        }
        if (ok && s->n_seqs) {
            double w2 = 0, g2 = 0;
            uint32_t first = n_seqs - s->n_seqs;
            ok = lat_run_step(r, s, &w2, &g2);
            for (uint32_t j = first; ok && j < n_seqs; j++)
                next[j] = s->argmax[j - first];
        }
        /* Decode (timed): every sequence advances one token per step. */
        for (uint32_t step = 0; ok && step < n_gen; step++) {
            for (uint32_t q = 0; q < n_seqs; q++)
                lat_add(r, s, q, n_prompt + step, &next[q], 1);
            ok = lat_run_step(r, s, &w, &g);
            if (ok && rep > 0 && r->prof)
                bench_profile_add_step(r->prof, r->m->gpu, exec_last_step_record_ms(r->m->exec));
            for (uint32_t q = 0; ok && q < n_seqs; q++)
                next[q] = s->argmax[q];
        }
        if (ok && rep > 0) {
            tps[rep - 1] = (double)n_seqs * n_gen / w;
            wall[rep - 1] = w * 1e3;
            gpu[rep - 1] = g;
        }
    }
    free(prompt);
    free(next);
    if (ok) *out = lat_summarize(tps, wall, gpu, reps);
    return ok;
}

/* --profile: each test once more (after its own warm-up) with per-dispatch timestamps. */
static bool lat_profile(lat_run *r, lat_step *s, uint32_t n_prompt, uint32_t n_gen,
                        const uint32_t *batches, size_t n_batches, uint32_t batch_prompt,
                        uint32_t batch_gen, bench_json *json) {
    bench_profile *prof = malloc(sizeof *prof);
    if (!prof) return false;
    gpu_set_profiling(r->m->gpu, true);
    r->prof = prof;
    bench_json_array(json, "profile");
    lat_result res;
    bool ok = true;
    if (n_prompt) {
        memset(prof, 0, sizeof *prof);
        char name[32];
        snprintf(name, sizeof name, "pp%u", n_prompt);
        ok = lat_prefill(r, s, n_prompt, 1, &res);
        if (ok) bench_profile_report(prof, name, json);
    }
    if (ok && n_gen) {
        memset(prof, 0, sizeof *prof);
        char name[32];
        snprintf(name, sizeof name, "tg%u", n_gen);
        ok = lat_decode(r, s, 1, 0, n_gen, 1, &res);
        if (ok) bench_profile_report(prof, name, json);
    }
    for (size_t b = 0; ok && b < n_batches; b++) {
        memset(prof, 0, sizeof *prof);
        char name[48];
        snprintf(name, sizeof name, "decode B=%u (pp%u+tg%u)", batches[b], batch_prompt, batch_gen);
        ok = lat_decode(r, s, batches[b], batch_prompt, batch_gen, 1, &res);
        if (ok) bench_profile_report(prof, name, json);
    }
    bench_json_end_array(json);
    gpu_set_profiling(r->m->gpu, false);
    r->prof = NULL;
    free(prof);
    return ok;
}

static void usage(FILE *out) {
    fprintf(out, "usage: vkllm bench latency -m MODEL [options]\n"
                 "  -p N              prompt tokens of the prefill test (default 512; 0 skips it)\n"
                 "  -n N              decoded tokens (default 128; 0 skips decode tests)\n"
                 "  -r N              timed repetitions (default 5; one warm-up runs first)\n"
                 "  --batch LIST      also decode B sequences together for each B, e.g. 8,32,64\n"
                 "  --batch-prompt N  prompt tokens of each batched sequence (default 128)\n"
                 "  --no-single       skip pp/tg (only the --batch figures)\n"
                 "  --profile         then run each test once more with a timestamp after every\n"
                 "                    dispatch and print where the GPU time goes\n"
                 "  --json FILE       write the results as JSON\n"
                 "  --png FILE        plot decode tokens/s against batch size\n"
                 "  --device D        Vulkan device index or name substring\n"
                 "  --seed S          seed of the random prompt tokens (default 1)\n");
}

int bench_latency(int argc, char **argv) {
    const char *model_path = NULL, *json_path = NULL, *png_path = NULL, *device = NULL;
    uint32_t n_prompt = 512, n_gen = 128, reps = 5, batch_prompt = 128;
    uint32_t batches[LAT_MAX_BATCHES];
    size_t n_batches = 0;
    uint64_t seed = 1;
    bool single = true, profile = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool ok = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-single")) {
            single = false;
        } else if (!strcmp(a, "--profile")) {
            profile = true;
        } else if (i + 1 >= argc) {
            fprintf(stderr, "vkllm bench latency: unknown option or missing value '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model_path = argv[++i];
        } else if (!strcmp(a, "--json")) {
            json_path = argv[++i];
        } else if (!strcmp(a, "--png")) {
            png_path = argv[++i];
        } else if (!strcmp(a, "--device")) {
            device = argv[++i];
        } else if (!strcmp(a, "-p")) {
            ok = bench_parse_u32("latency", a, argv[++i], &n_prompt);
        } else if (!strcmp(a, "-n")) {
            ok = bench_parse_u32("latency", a, argv[++i], &n_gen);
        } else if (!strcmp(a, "-r")) {
            ok = bench_parse_u32("latency", a, argv[++i], &reps);
            if (ok && (reps < 1 || reps > 63)) {
                fprintf(stderr, "vkllm bench latency: -r must be 1..63\n");
                ok = false;
            }
        } else if (!strcmp(a, "--batch-prompt")) {
            ok = bench_parse_u32("latency", a, argv[++i], &batch_prompt);
        } else if (!strcmp(a, "--seed")) {
            ok = bench_parse_u64("latency", a, argv[++i], &seed);
        } else if (!strcmp(a, "--batch")) {
            ok =
                bench_parse_u32_list("latency", a, argv[++i], batches, LAT_MAX_BATCHES, &n_batches);
            for (size_t b = 0; ok && b < n_batches; b++)
                if (!batches[b]) {
                    fprintf(stderr, "vkllm bench latency: --batch values must be >= 1\n");
                    ok = false;
                }
        } else {
            fprintf(stderr, "vkllm bench latency: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) return 2;
    }
    if (!model_path) {
        fprintf(stderr, "vkllm bench latency: -m MODEL is required\n\n");
        usage(stderr);
        return 2;
    }
    uint32_t max_batch = 1;
    for (size_t b = 0; b < n_batches; b++)
        if (batches[b] > max_batch) max_batch = batches[b];
    uint32_t bs = 16;
    uint32_t longest = n_prompt > batch_prompt ? n_prompt : batch_prompt;
    if (n_gen > longest) longest = n_gen;
    longest += n_gen + 1;
    uint32_t per_seq = (longest + bs - 1) / bs;
    exec_options o = {.block_size = bs,
                      .num_blocks = per_seq * max_batch,
                      .max_tokens = n_prompt > 512 ? n_prompt : 512,
                      .max_seqs = max_batch,
                      .max_context = per_seq * bs};
    if (batch_prompt > o.max_tokens) o.max_tokens = batch_prompt;
    if (o.max_seqs > o.max_tokens) o.max_tokens = o.max_seqs;
    bench_model m;
    if (!bench_model_open("latency", model_path, device, &o, 0, &m)) return 1;
    const gpu_features *f = gpu_context_features(m.gpu);
    lat_run r = {.m = &m, .per_seq_blocks = per_seq, .rng = seed * 0x9E3779B97F4A7C15ull + 7};
    r.tables = malloc((size_t)per_seq * max_batch * 4);
    lat_step s;
    memset(&s, 0, sizeof s);
    bool ok = r.tables && lat_step_alloc(&s, o.max_tokens, o.max_seqs);
    for (uint32_t i = 0; ok && i < per_seq * max_batch; i++)
        r.tables[i] = (int32_t)i;
    bench_print_device(f);
    printf("model: %s (%s, %u layers, n_embd %u), weights %.2f GiB, load %.1f s\n", model_path,
           model_arch_name(m.cfg.arch), m.cfg.n_layer, m.cfg.n_embd, m.weight_bytes / 1073741824.0,
           m.load_s);
    bench_json json;
    ok = ok && bench_json_open(&json, json_path);
    bench_json_str(&json, "bench", "latency");
    bench_json_device(&json, f);
    bench_json_str(&json, "model", model_path);
    bench_json_int(&json, "weight_bytes", (long long)m.weight_bytes);
    bench_json_int(&json, "reps", reps);
    printf("%-24s %12s %10s %12s %12s\n", "test", "tokens/s", "+-sd", "wall ms/rep", "gpu ms/rep");
    lat_result res;
    if (ok && single && n_prompt) {
        ok = lat_prefill(&r, &s, n_prompt, reps, &res);
        if (ok) {
            printf("pp%-22u %12.1f %10.1f %12.2f %12.2f\n", n_prompt, res.tps_mean, res.tps_sd,
                   res.wall_ms_mean, res.gpu_ms_mean);
            bench_json_object(&json, "pp");
            bench_json_int(&json, "n_prompt", n_prompt);
            bench_json_num(&json, "tps_mean", res.tps_mean);
            bench_json_num(&json, "tps_sd", res.tps_sd);
            bench_json_num(&json, "wall_ms_mean", res.wall_ms_mean);
            bench_json_num(&json, "gpu_ms_mean", res.gpu_ms_mean);
            bench_json_end_object(&json);
        }
    }
    if (ok && single && n_gen) {
        ok = lat_decode(&r, &s, 1, 0, n_gen, reps, &res);
        if (ok) {
            printf("tg%-22u %12.1f %10.1f %12.2f %12.2f\n", n_gen, res.tps_mean, res.tps_sd,
                   res.wall_ms_mean, res.gpu_ms_mean);
            bench_json_object(&json, "tg");
            bench_json_int(&json, "n_gen", n_gen);
            bench_json_num(&json, "tps_mean", res.tps_mean);
            bench_json_num(&json, "tps_sd", res.tps_sd);
            bench_json_num(&json, "wall_ms_mean", res.wall_ms_mean);
            bench_json_num(&json, "gpu_ms_mean", res.gpu_ms_mean);
            bench_json_end_object(&json);
        }
    }
    double bx[LAT_MAX_BATCHES], by[LAT_MAX_BATCHES];
    size_t nb = 0;
    if (ok && n_batches && n_gen) {
        bench_json_array(&json, "batch");
        for (size_t b = 0; ok && b < n_batches; b++) {
            ok = lat_decode(&r, &s, batches[b], batch_prompt, n_gen, reps, &res);
            if (!ok) break;
            char name[48];
            snprintf(name, sizeof name, "decode B=%u (pp%u+tg%u)", batches[b], batch_prompt, n_gen);
            printf("%-24s %12.1f %10.1f %12.2f %12.2f\n", name, res.tps_mean, res.tps_sd,
                   res.wall_ms_mean, res.gpu_ms_mean);
            bench_json_object(&json, NULL);
            bench_json_int(&json, "n_seqs", batches[b]);
            bench_json_int(&json, "n_prompt", batch_prompt);
            bench_json_int(&json, "n_gen", n_gen);
            bench_json_num(&json, "tps_mean", res.tps_mean);
            bench_json_num(&json, "tps_sd", res.tps_sd);
            bench_json_num(&json, "ms_per_step", res.wall_ms_mean / n_gen);
            bench_json_num(&json, "gpu_ms_mean", res.gpu_ms_mean);
            bench_json_end_object(&json);
            bx[nb] = batches[b], by[nb] = res.tps_mean, nb++;
        }
        bench_json_end_array(&json);
    }
    if (ok && profile)
        ok = lat_profile(&r, &s, single ? n_prompt : 0, single ? n_gen : 0, batches,
                         n_gen ? n_batches : 0, batch_prompt, n_gen, &json);
    if (ok && png_path && nb) {
        bench_plot plot = {.title = "Decode throughput against batch size",
                           .x_label = "sequences decoding together",
                           .y_label = "tokens/s (all sequences)",
                           .log_x = true,
                           .n_series = 1,
                           .series = {{.label = model_path, .x = bx, .y = by, .n = nb}}};
        ok = bench_plot_png(&plot, png_path, 0, 0);
    }
    if (!bench_json_close(&json)) ok = false;
    lat_step_free(&s);
    free(r.tables);
    bench_model_close(&m);
    return ok ? 0 : 1;
}
