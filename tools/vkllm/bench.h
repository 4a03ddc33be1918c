/* bench.h: what the `vkllm bench` subcommands share: statistics over samples, a
 * streaming JSON writer, wall-clock time, option parsing helpers, loading a GGUF model
 * onto the GPU for the runner, and the PNG line plots (bench_plot.c).
 *
 * Each subcommand lives in bench_<name>.c (kernels, latency, throughput, serve) and is
 * dispatched by cmd_bench.c. Every subcommand prints a human table on stdout and, with
 * --json FILE, writes the same figures as one JSON object whose numbers are finite
 * (a non-finite value is written as null so that a checker notices). */
#ifndef VKLLM_BENCH_H
#define VKLLM_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "exec/runner.h"
#include "gpu/gpu.h"
#include "model/gguf.h"
#include "model/model.h"

int bench_kernels(int argc, char **argv);
int bench_latency(int argc, char **argv);
int bench_throughput(int argc, char **argv);
int bench_serve(int argc, char **argv);

/* ---------------------------------------------------------------- time and statistics */

/* Monotonic wall clock in seconds. */
double bench_now(void);

/* Summary of n samples (the array is sorted in place). Percentiles interpolate
 * linearly between order statistics; sd is the sample standard deviation (0 for n<2). */
typedef struct bench_summary {
    size_t n;
    double mean, sd, min, max, p50, p90, p99;
} bench_summary;
bench_summary bench_summarize(double *values, size_t n);
double bench_percentile_sorted(const double *sorted, size_t n, double q);

/* ---------------------------------------------------------------- JSON output */

#define BENCH_JSON_DEPTH 16
typedef struct bench_json {
    FILE *f;
    int depth;
    bool first[BENCH_JSON_DEPTH];
} bench_json;

/* Opens `path` and starts the top-level object. NULL path: a writer that writes nothing. */
bool bench_json_open(bench_json *j, const char *path);
/* Ends the top-level object and closes; false if writing failed. */
bool bench_json_close(bench_json *j);
/* key may be NULL inside arrays. */
void bench_json_object(bench_json *j, const char *key);
void bench_json_array(bench_json *j, const char *key);
void bench_json_end_object(bench_json *j);
void bench_json_end_array(bench_json *j);
void bench_json_num(bench_json *j, const char *key, double v);
void bench_json_int(bench_json *j, const char *key, long long v);
void bench_json_str(bench_json *j, const char *key, const char *s);
void bench_json_bool(bench_json *j, const char *key, bool v);

/* ---------------------------------------------------------------- options */

/* Strict parsers; print "vkllm bench <cmd>: <opt> ..." and return false on bad input. */
bool bench_parse_u32(const char *cmd, const char *opt, const char *s, uint32_t *out);
bool bench_parse_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);
bool bench_parse_f64(const char *cmd, const char *opt, const char *s, double *out);
/* Byte sizes with an optional K/M/G suffix (binary units): "512M", "2G", "1048576". */
bool bench_parse_bytes(const char *cmd, const char *opt, const char *s, uint64_t *out);
/* Comma-separated lists: "1,8,32,64"; at most max entries. "inf" is allowed in
 * f64 lists (INFINITY). */
bool bench_parse_u32_list(const char *cmd, const char *opt, const char *s, uint32_t *out,
                          size_t max, size_t *n);
bool bench_parse_f64_list(const char *cmd, const char *opt, const char *s, double *out, size_t max,
                          size_t *n);

/* ---------------------------------------------------------------- per-dispatch profile */

#define BENCH_PROFILE_ROWS 64
typedef struct bench_profile_row {
    char label[64];
    double ms;
    uint32_t calls;
} bench_profile_row;
typedef struct bench_profile {
    bench_profile_row rows[BENCH_PROFILE_ROWS];
    int n_rows;
    uint32_t steps;
    double total_ms, record_ms;
} bench_profile;
/* Adds the timestamps of the context's last submitted step (gpu_set_profiling on) and
 * the host time that step spent recording (exec_last_step_record_ms). */
void bench_profile_add_step(bench_profile *p, const gpu_context *ctx, double record_ms);
/* Prints the table (sorted by time) and appends it to a JSON array as one object. */
void bench_profile_report(bench_profile *p, const char *test, bench_json *json);

/* Prints the device line every report starts with. */
void bench_print_device(const gpu_features *f);
void bench_json_device(bench_json *j, const gpu_features *f);

/* ---------------------------------------------------------------- model on the GPU */

typedef struct bench_model {
    gguf_file *gguf;
    model_config cfg;
    model_weights weights;
    gpu_context *gpu;
    exec_model *exec;
    uint64_t weight_bytes, kv_bytes, scratch_bytes;
    uint64_t kv_bytes_per_block; /* all layers, K and V */
    double load_s;
} bench_model;

/* Opens the GGUF file, reads its config, creates the Vulkan context (device from
 * `device` or VKLLM_DEVICE) and the runner with `options` (num_blocks must be set, or
 * kv_bytes > 0 to size the cache from a byte budget). */
bool bench_model_open(const char *cmd, const char *path, const char *device, exec_options *options,
                      uint64_t kv_bytes, bench_model *m);
void bench_model_close(bench_model *m);
/* K+V bytes of one block over all layers (fp16 cache). */
uint64_t bench_kv_block_bytes(const model_config *cfg, uint32_t block_size);

/* ---------------------------------------------------------------- workload (bench_workload.c) */

/* Seeded generator (splitmix64): same seed, same sequence on every machine. */
typedef struct bench_rng {
    uint64_t s;
} bench_rng;
uint64_t bench_rng_next(bench_rng *r);
double bench_rng_uniform(bench_rng *r);                  /* in (0, 1) */
double bench_rng_exponential(bench_rng *r, double rate); /* Poisson gaps, mean 1/rate */

/* Prompt and output lengths of n requests resembling ShareGPT (see bench_workload.c). */
void bench_workload_lengths(uint32_t n, uint64_t seed, double scale, uint32_t *prompt,
                            uint32_t *output);

/* ---------------------------------------------------------------- plots (bench_plot.c) */

#define BENCH_PLOT_MAX_SERIES 8
typedef struct bench_series {
    const char *label;
    const double *x, *y;
    size_t n;
} bench_series;

typedef struct bench_plot {
    const char *title, *x_label, *y_label;
    bool log_x; /* log2 x axis (batch sizes) */
    size_t n_series;
    bench_series series[BENCH_PLOT_MAX_SERIES];
} bench_plot;

/* Renders the line plot to a PNG of width x height pixels (0: 800x500). */
bool bench_plot_png(const bench_plot *plot, const char *path, int width, int height);

#endif
