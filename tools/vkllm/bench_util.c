/* bench_util.c: the helpers every `vkllm bench` subcommand shares (see bench.h):
 * wall clock, sample statistics, the JSON writer, option parsing and model loading.
 * Invariant of the JSON writer: it only ever emits well-formed JSON (keys and strings
 * escaped, non-finite numbers as null), whatever order of calls a bench makes within
 * the nesting limit. */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- time and statistics */

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_percentile_sorted(const double *sorted, size_t n, double q) {
    if (n == 0) return NAN;
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)pos;
    if (lo + 1 >= n) return sorted[n - 1];
    double frac = pos - (double)lo;
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac;
}

bench_summary bench_summarize(double *values, size_t n) {
    bench_summary s = {.n = n};
    if (n == 0) {
        s.mean = s.sd = s.min = s.max = s.p50 = s.p90 = s.p99 = NAN;
        return s;
    }
    qsort(values, n, sizeof *values, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += values[i];
    s.mean = sum / (double)n;
    double var = 0;
    for (size_t i = 0; i < n; i++)
        var += (values[i] - s.mean) * (values[i] - s.mean);
    s.sd = n > 1 ? sqrt(var / (double)(n - 1)) : 0;
    s.min = values[0];
    s.max = values[n - 1];
    s.p50 = bench_percentile_sorted(values, n, 0.50);
    s.p90 = bench_percentile_sorted(values, n, 0.90);
    s.p99 = bench_percentile_sorted(values, n, 0.99);
    return s;
}

/* ---------------------------------------------------------------- JSON output */

bool bench_json_open(bench_json *j, const char *path) {
    memset(j, 0, sizeof *j);
    if (!path) return true;
    j->f = fopen(path, "w");
    if (!j->f) {
        fprintf(stderr, "vkllm bench: cannot write %s: %s\n", path, strerror(errno));
        return false;
    }
    fputc('{', j->f);
    j->depth = 1;
    j->first[1] = true;
    return true;
}

bool bench_json_close(bench_json *j) {
    if (!j->f) return true;
    while (j->depth > 1) /* close anything a bench left open */
        bench_json_end_object(j);
    fputs("}\n", j->f);
    bool ok = !ferror(j->f);
    ok = fclose(j->f) == 0 && ok;
    j->f = NULL;
    return ok;
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void json_key(bench_json *j, const char *key) {
    if (!j->first[j->depth]) fputc(',', j->f);
    j->first[j->depth] = false;
    if (key) {
        json_string(j->f, key);
        fputc(':', j->f);
    }
}

static void json_open(bench_json *j, const char *key, char c) {
    if (!j->f) return;
    json_key(j, key);
    fputc(c, j->f);
    if (j->depth + 1 < BENCH_JSON_DEPTH) j->depth++;
    j->first[j->depth] = true;
}

static void json_close(bench_json *j, char c) {
    if (!j->f || j->depth <= 1) return;
    fputc(c, j->f);
    j->depth--;
}

void bench_json_object(bench_json *j, const char *key) {
    json_open(j, key, '{');
}
void bench_json_array(bench_json *j, const char *key) {
    json_open(j, key, '[');
}
void bench_json_end_object(bench_json *j) {
    json_close(j, '}');
}
void bench_json_end_array(bench_json *j) {
    json_close(j, ']');
}

void bench_json_num(bench_json *j, const char *key, double v) {
    if (!j->f) return;
    json_key(j, key);
    if (isfinite(v))
        fprintf(j->f, "%.9g", v);
    else
        fputs("null", j->f);
}

void bench_json_int(bench_json *j, const char *key, long long v) {
    if (!j->f) return;
    json_key(j, key);
    fprintf(j->f, "%lld", v);
}

void bench_json_str(bench_json *j, const char *key, const char *s) {
    if (!j->f) return;
    json_key(j, key);
    json_string(j->f, s);
}

void bench_json_bool(bench_json *j, const char *key, bool v) {
    if (!j->f) return;
    json_key(j, key);
    fputs(v ? "true" : "false", j->f);
}

/* ---------------------------------------------------------------- options */

bool bench_parse_u64(const char *cmd, const char *opt, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || *s == '-') {
        fprintf(stderr, "vkllm bench %s: %s needs a non-negative integer, got '%s'\n", cmd, opt, s);
        return false;
    }
    *out = v;
    return true;
}

bool bench_parse_u32(const char *cmd, const char *opt, const char *s, uint32_t *out) {
    uint64_t v;
    if (!bench_parse_u64(cmd, opt, s, &v)) return false;
    if (v > 0xffffffffu) {
        fprintf(stderr, "vkllm bench %s: %s is too large: '%s'\n", cmd, opt, s);
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

bool bench_parse_f64(const char *cmd, const char *opt, const char *s, double *out) {
    if (!strcmp(s, "inf")) {
        *out = INFINITY;
        return true;
    }
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v)) {
        fprintf(stderr, "vkllm bench %s: %s needs a number, got '%s'\n", cmd, opt, s);
        return false;
    }
    *out = v;
    return true;
}

bool bench_parse_bytes(const char *cmd, const char *opt, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mult = 1;
    if (*end == 'K' || *end == 'k')
        mult = 1ull << 10, end++;
    else if (*end == 'M' || *end == 'm')
        mult = 1ull << 20, end++;
    else if (*end == 'G' || *end == 'g')
        mult = 1ull << 30, end++;
    if (*end == 'i') end++;
    if (*end == 'B') end++;
    if (!*s || *s == '-' || *end || errno || v > UINT64_MAX / mult) {
        fprintf(stderr, "vkllm bench %s: %s needs a byte size such as 512M or 2G, got '%s'\n", cmd,
                opt, s);
        return false;
    }
    *out = v * mult;
    return true;
}

/* One parsed entry of a comma-separated list: stores tok as element i of out. */
typedef bool (*list_entry_parser)(const char *cmd, const char *opt, const char *tok, void *out,
                                  size_t i);

static bool parse_u32_entry(const char *cmd, const char *opt, const char *tok, void *out,
                            size_t i) {
    return bench_parse_u32(cmd, opt, tok, &((uint32_t *)out)[i]);
}

static bool parse_f64_entry(const char *cmd, const char *opt, const char *tok, void *out,
                            size_t i) {
    return bench_parse_f64(cmd, opt, tok, &((double *)out)[i]);
}

static bool parse_list(const char *cmd, const char *opt, const char *s, list_entry_parser parse,
                       void *out, size_t max, size_t *n) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (*n >= max) {
            fprintf(stderr, "vkllm bench %s: %s takes at most %zu values\n", cmd, opt, max);
            return false;
        }
        if (!parse(cmd, opt, tok, out, *n)) return false;
        (*n)++;
    }
    if (*n == 0) {
        fprintf(stderr, "vkllm bench %s: %s needs at least one value\n", cmd, opt);
        return false;
    }
    return true;
}

bool bench_parse_u32_list(const char *cmd, const char *opt, const char *s, uint32_t *out,
                          size_t max, size_t *n) {
    return parse_list(cmd, opt, s, parse_u32_entry, out, max, n);
}

bool bench_parse_f64_list(const char *cmd, const char *opt, const char *s, double *out, size_t max,
                          size_t *n) {
    return parse_list(cmd, opt, s, parse_f64_entry, out, max, n);
}

void bench_print_device(const gpu_features *f) {
    printf("device: %s (%s), subgroup %u, coopmat_nv %s\n", f->name, f->driver, f->subgroup_size,
           f->coopmat_nv ? "yes" : "no");
}

void bench_json_device(bench_json *j, const gpu_features *f) {
    bench_json_object(j, "device");
    bench_json_str(j, "name", f->name);
    bench_json_str(j, "driver", f->driver);
    bench_json_int(j, "subgroup_size", f->subgroup_size);
    bench_json_bool(j, "coopmat_nv", f->coopmat_nv);
    bench_json_int(j, "device_local_bytes", (long long)f->device_local_bytes);
    bench_json_end_object(j);
}

/* ---------------------------------------------------------------- model on the GPU */

uint64_t bench_kv_block_bytes(const model_config *cfg, uint32_t block_size) {
    return (uint64_t)cfg->n_layer * cfg->n_head_kv * block_size *
           ((uint64_t)cfg->head_dim + cfg->head_dim_v) * 2;
}

bool bench_model_open(const char *cmd, const char *path, const char *device, exec_options *options,
                      uint64_t kv_bytes, bench_model *m) {
    memset(m, 0, sizeof *m);
    double t0 = bench_now();
    vkllm_status st = gguf_open(path, &m->gguf);
    if (st == VKLLM_OK) st = model_load(m->gguf, &m->cfg, &m->weights);
    if (st != VKLLM_OK) {
        fprintf(stderr, "vkllm bench %s: %s\n", cmd, vkllm_last_error());
        bench_model_close(m);
        return false;
    }
    if (!options->block_size) options->block_size = 16;
    m->kv_bytes_per_block = bench_kv_block_bytes(&m->cfg, options->block_size);
    if (kv_bytes) {
        uint64_t blocks = kv_bytes / m->kv_bytes_per_block;
        if (blocks == 0 || blocks > 0x7fffffffu) {
            fprintf(stderr,
                    "vkllm bench %s: --kv-memory %llu bytes gives %llu blocks of %llu bytes\n", cmd,
                    (unsigned long long)kv_bytes, (unsigned long long)blocks,
                    (unsigned long long)m->kv_bytes_per_block);
            bench_model_close(m);
            return false;
        }
        options->num_blocks = (uint32_t)blocks;
    }
    gpu_context_options go = {.device = device};
    st = gpu_context_create(&go, &m->gpu);
    if (st == VKLLM_OK)
        st = exec_model_create(m->gpu, m->gguf, &m->cfg, &m->weights, options, &m->exec);
    if (st != VKLLM_OK) {
        fprintf(stderr, "vkllm bench %s: %s\n", cmd, vkllm_last_error());
        bench_model_close(m);
        return false;
    }
    exec_model_memory(m->exec, &m->weight_bytes, &m->kv_bytes, &m->scratch_bytes);
    m->load_s = bench_now() - t0;
    return true;
}

void bench_model_close(bench_model *m) {
    if (m->exec) exec_model_destroy(m->exec);
    if (m->gpu) gpu_context_destroy(m->gpu);
    if (m->weights.layers) model_weights_free(&m->weights);
    if (m->gguf) gguf_close(m->gguf);
    memset(m, 0, sizeof *m);
}
