/* srv_metrics.c: histograms and the Prometheus text exposition (format 0.0.4). */
#include "server/srv_metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bucket bounds as vLLM chooses them, so dashboards built for it read well. */
static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                     0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0,
                                     20.0,  40.0,  80.0, 160., 640., 2560.};
static const double itl_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                    0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
static const double e2e_bounds[] = {0.3,  0.5,  0.8,   1.0,   1.5,   2.0,   2.5,
                                    5.0,  10.0, 15.0,  20.0,  30.0,  40.0,  50.0,
                                    60.0, 120., 240.0, 480.0, 960.0, 1920., 7680.};
static const double token_bounds[] = {1,   2,    5,    10,   20,    50,    100,   200,
                                      500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};

#define N_OF(a) (uint32_t)(sizeof(a) / sizeof((a)[0]))

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    static const struct {
        const char *name, *help;
        const double *bounds;
        uint32_t n;
    } defs[SRV_HIST_COUNT] = {
        [SRV_HIST_TTFT] = {"time_to_first_token_seconds",
                           "Histogram of time to first token in seconds.", ttft_bounds,
                           N_OF(ttft_bounds)},
        [SRV_HIST_ITL] = {"inter_token_latency_seconds",
                          "Histogram of inter-token latency (time per output token) in seconds.",
                          itl_bounds, N_OF(itl_bounds)},
        [SRV_HIST_E2E] = {"e2e_request_latency_seconds",
                          "Histogram of end-to-end request latency in seconds.", e2e_bounds,
                          N_OF(e2e_bounds)},
        [SRV_HIST_DECODE] = {"request_decode_time_seconds",
                             "Histogram of time in the decode phase (after the first token) in "
                             "seconds.",
                             e2e_bounds, N_OF(e2e_bounds)},
        [SRV_HIST_PROMPT_TOKENS] = {"request_prompt_tokens",
                                    "Number of prefill tokens processed per request.", token_bounds,
                                    N_OF(token_bounds)},
        [SRV_HIST_GENERATION_TOKENS] = {"request_generation_tokens",
                                        "Number of generation tokens processed per request.",
                                        token_bounds, N_OF(token_bounds)},
    };
    for (int i = 0; i < SRV_HIST_COUNT; i++) {
        m->hist[i].name = defs[i].name;
        m->hist[i].help = defs[i].help;
        m->hist[i].bounds = defs[i].bounds;
        m->hist[i].n_bounds = defs[i].n;
    }
}

void srv_metrics_destroy(srv_metrics *m) {
    pthread_mutex_destroy(&m->lock);
}

void srv_metrics_observe(srv_metrics *m, srv_hist_id id, double value, uint64_t times) {
    if (id < 0 || id >= SRV_HIST_COUNT || times == 0) return;
    pthread_mutex_lock(&m->lock);
    srv_histogram *h = &m->hist[id];
    uint32_t b = 0;
    while (b < h->n_bounds && value > h->bounds[b])
        b++;
    if (b < h->n_bounds) h->buckets[b] += times; /* else only the +Inf bucket (count) */
    h->count += times;
    h->sum += value * (double)times;
    pthread_mutex_unlock(&m->lock);
}

void srv_metrics_finished(srv_metrics *m, vkllm_finish_reason finish) {
    if ((unsigned)finish >= 5) return;
    pthread_mutex_lock(&m->lock);
    m->finished[finish]++;
    pthread_mutex_unlock(&m->lock);
}

static const int http_codes[SRV_HTTP_CODES] = {200, 400, 401, 404, 405, 413, 500, 503, 0};

void srv_metrics_http(srv_metrics *m, int status) {
    int slot = SRV_HTTP_CODES - 1; /* "other" */
    for (int i = 0; http_codes[i]; i++)
        if (http_codes[i] == status) slot = i;
    pthread_mutex_lock(&m->lock);
    m->http_count[slot]++;
    pthread_mutex_unlock(&m->lock);
}

void srv_metrics_busy(srv_metrics *m) {
    pthread_mutex_lock(&m->lock);
    m->requests_rejected_busy++;
    pthread_mutex_unlock(&m->lock);
}

/* ---------------------------------------------------------------- exposition */

typedef struct text_buf {
    char *data;
    size_t len, cap;
    bool failed;
} text_buf;

static void put(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text_buf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->failed = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
}

/* A label value with \ " and newline escaped, as the text format requires. */
static void escape_label(const char *in, char *out, size_t cap) {
    size_t w = 0;
    for (; *in && w + 3 < cap; in++) {
        if (*in == '\\' || *in == '"')
            out[w++] = '\\', out[w++] = *in;
        else if (*in == '\n')
            out[w++] = '\\', out[w++] = 'n';
        else
            out[w++] = *in;
    }
    out[w] = 0;
}

static void header(text_buf *b, const char *name, const char *type, const char *help) {
    put(b, "# HELP vkllm:%s %s\n# TYPE vkllm:%s %s\n", name, help, name, type);
}

static void gauge(text_buf *b, const char *label, const char *name, const char *help,
                  double value) {
    header(b, name, "gauge", help);
    put(b, "vkllm:%s{%s} %.17g\n", name, label, value);
}

static void counter(text_buf *b, const char *label, const char *name, const char *help,
                    uint64_t value) {
    header(b, name, "counter", help);
    put(b, "vkllm:%s{%s} %llu\n", name, label, (unsigned long long)value);
}

char *srv_metrics_format(srv_metrics *m, const vkllm_stats *stats, const char *model) {
    char esc[512], label[600];
    escape_label(model ? model : "", esc, sizeof esc);
    snprintf(label, sizeof label, "model_name=\"%s\"", esc);
    text_buf b = {.data = malloc(16384), .cap = 16384};
    if (!b.data) return NULL;
    b.data[0] = 0;
    if (stats) {
        gauge(&b, label, "num_requests_running", "Number of requests in model execution batches.",
              stats->requests_running);
        gauge(&b, label, "num_requests_waiting", "Number of requests waiting to be processed.",
              stats->requests_waiting);
        gauge(&b, label, "num_requests_swapped", "Number of requests swapped to host memory.",
              stats->requests_swapped);
        gauge(&b, label, "kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
              stats->kv_usage);
        gauge(&b, label, "kv_cache_blocks_total", "KV-cache blocks in the pool.",
              stats->kv_blocks_total);
        gauge(&b, label, "kv_cache_blocks_used", "KV-cache blocks held by requests.",
              stats->kv_blocks_used);
        counter(&b, label, "prompt_tokens_total", "Number of prefill tokens processed.",
                stats->prompt_tokens_total);
        counter(&b, label, "generation_tokens_total", "Number of generation tokens processed.",
                stats->generation_tokens_total);
        counter(&b, label, "prefix_cache_queries_total",
                "Prefix-cache queries, in terms of number of queried tokens.",
                stats->prefix_cache_queries);
        counter(&b, label, "prefix_cache_hits_total",
                "Prefix-cache hits, in terms of number of cached tokens.",
                stats->prefix_cache_hits);
        counter(&b, label, "num_preemptions_total", "Cumulative number of preemptions.",
                stats->preemptions_total);
        counter(&b, label, "engine_steps_total", "Engine steps executed.", stats->steps_total);
    }
    pthread_mutex_lock(&m->lock);
    header(&b, "request_success_total", "counter",
           "Count of successfully processed requests, by finish reason.");
    static const struct {
        vkllm_finish_reason reason;
        const char *name;
    } reasons[] = {{VKLLM_FINISH_STOP, "stop"},
                   {VKLLM_FINISH_LENGTH, "length"},
                   {VKLLM_FINISH_CANCELLED, "abort"}};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        put(&b, "vkllm:request_success_total{%s,finished_reason=\"%s\"} %llu\n", label,
            reasons[i].name, (unsigned long long)m->finished[reasons[i].reason]);
    counter(&b, label, "request_failure_total", "Count of requests that ended in an error.",
            m->finished[VKLLM_FINISH_ERROR]);
    counter(&b, label, "request_rejected_busy_total",
            "Requests refused with HTTP 503 because too many were waiting.",
            m->requests_rejected_busy);
    header(&b, "http_requests_total", "counter", "HTTP requests answered, by status code.");
    for (int i = 0; i < SRV_HTTP_CODES; i++) {
        if (i < SRV_HTTP_CODES - 1 && !http_codes[i]) continue;
        char code[16];
        if (http_codes[i])
            snprintf(code, sizeof code, "%d", http_codes[i]);
        else
            snprintf(code, sizeof code, "other");
        put(&b, "vkllm:http_requests_total{%s,code=\"%s\"} %llu\n", label, code,
            (unsigned long long)m->http_count[i]);
    }
    for (int i = 0; i < SRV_HIST_COUNT; i++) {
        const srv_histogram *h = &m->hist[i];
        header(&b, h->name, "histogram", h->help);
        uint64_t cumulative = 0;
        for (uint32_t k = 0; k < h->n_bounds; k++) {
            cumulative += h->buckets[k];
            put(&b, "vkllm:%s_bucket{%s,le=\"%g\"} %llu\n", h->name, label, h->bounds[k],
                (unsigned long long)cumulative);
        }
        put(&b, "vkllm:%s_bucket{%s,le=\"+Inf\"} %llu\n", h->name, label,
            (unsigned long long)h->count);
        put(&b, "vkllm:%s_sum{%s} %.17g\n", h->name, label, h->sum);
        put(&b, "vkllm:%s_count{%s} %llu\n", h->name, label, (unsigned long long)h->count);
    }
    pthread_mutex_unlock(&m->lock);
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}
