/* srv_metrics.h: the server's Prometheus metrics (GET /metrics).
 *
 * Names follow vLLM's under the prefix `vkllm:` (docs serving-conventions.md):
 * gauges and engine-wide counters come from vkllm_stats at scrape time; request
 * latency histograms and per-finish-reason counts are observed here as requests end.
 * All observations take the metrics mutex, so any connection thread may record.
 * Histogram buckets are stored per bucket and written cumulatively, with the
 * implicit +Inf bucket equal to the count, as the text format requires. */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

#include <pthread.h>
#include <stdint.h>

#include "vkllm.h"

#define SRV_HIST_MAX_BUCKETS 32

typedef struct srv_histogram {
    const char *name; /* without the vkllm: prefix */
    const char *help;
    const double *bounds; /* ascending upper bounds */
    uint32_t n_bounds;
    uint64_t buckets[SRV_HIST_MAX_BUCKETS]; /* observations with bounds[i-1] < v <= bounds[i] */
    uint64_t count;
    double sum;
} srv_histogram;

typedef enum srv_hist_id {
    SRV_HIST_TTFT,
    SRV_HIST_ITL,
    SRV_HIST_E2E,
    SRV_HIST_DECODE,
    SRV_HIST_PROMPT_TOKENS,
    SRV_HIST_GENERATION_TOKENS,
    SRV_HIST_COUNT
} srv_hist_id;

/* HTTP status classes counted by vkllm:http_requests_total{code=...}. */
#define SRV_HTTP_CODES 10

typedef struct srv_metrics {
    pthread_mutex_t lock;
    srv_histogram hist[SRV_HIST_COUNT];
    uint64_t finished[5]; /* by vkllm_finish_reason (NONE unused) */
    uint64_t http_count[SRV_HTTP_CODES];
    uint64_t requests_rejected_busy;
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_destroy(srv_metrics *m);

void srv_metrics_observe(srv_metrics *m, srv_hist_id id, double value, uint64_t times);
/* One engine request ended: its finish reason (counted per sequence sample 0). */
void srv_metrics_finished(srv_metrics *m, vkllm_finish_reason finish);
void srv_metrics_http(srv_metrics *m, int status);
void srv_metrics_busy(srv_metrics *m);

/* The whole exposition text (malloc'ed), labelled model_name=<model>. stats may be
 * NULL when the engine could not report (its gauges are then left out). */
char *srv_metrics_format(srv_metrics *m, const vkllm_stats *stats, const char *model);

#endif
