/* test_server_metrics.c: the Prometheus exposition of srv_metrics.c: every sample line
 * is well-formed text format 0.0.4, histogram buckets are cumulative and match the
 * observations, gauges and counters carry the vkllm_stats values, labels are escaped.
 * Also checks that the embedded chat page is byte-identical to chat_page.html. */
// links: server common
#include <criterion/criterion.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_chat_page.h"
#include "server/srv_metrics.h"

/* The value of the sample line whose name+labels part is exactly `series`. */
static double sample(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        if (!end) end = line + strlen(line);
        if ((size_t)(end - line) > n && !strncmp(line, series, n) && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = *end ? end + 1 : end;
    }
    cr_assert_fail("no sample '%s' in:\n%s", series, text);
    return 0;
}

static void check_well_formed(const char *text) {
    regex_t re;
    cr_assert_eq(
        regcomp(&re,
                "^(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+|"
                "[a-zA-Z_:][a-zA-Z0-9_:]*(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\""
                ",?)*\\})? -?[0-9.e+-]+)$",
                REG_EXTENDED | REG_NOSUB),
        0);
    char *copy = strdup(text);
    size_t lines = 0;
    for (char *save, *line = strtok_r(copy, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        cr_assert_eq(regexec(&re, line, 0, NULL, 0), 0, "malformed line: '%s'", line);
        lines++;
    }
    cr_assert_gt(lines, 50);
    cr_assert_eq(text[strlen(text) - 1], '\n', "the exposition ends with a newline");
    free(copy);
    regfree(&re);
}

Test(server_metrics, histograms_are_cumulative_and_exact) {
    srv_metrics m;
    srv_metrics_init(&m);
    /* TTFT bounds start 0.001, 0.005, 0.01, 0.02, ... */
    srv_metrics_observe(&m, SRV_HIST_TTFT, 0.0005, 1); /* <= 0.001 */
    srv_metrics_observe(&m, SRV_HIST_TTFT, 0.001, 1);  /* == bound counts in it */
    srv_metrics_observe(&m, SRV_HIST_TTFT, 0.007, 2);  /* (0.005, 0.01] twice */
    srv_metrics_observe(&m, SRV_HIST_TTFT, 5000, 1);   /* beyond every bound */
    srv_metrics_observe(&m, SRV_HIST_ITL, 0.03, 4);
    char *t = srv_metrics_format(&m, NULL, "tiny");
    cr_assert(t);
    check_well_formed(t);
    const char *h = "vkllm:time_to_first_token_seconds";
    char series[256];
    snprintf(series, sizeof series, "%s_bucket{model_name=\"tiny\",le=\"0.001\"}", h);
    cr_assert_float_eq(sample(t, series), 2, 0);
    snprintf(series, sizeof series, "%s_bucket{model_name=\"tiny\",le=\"0.005\"}", h);
    cr_assert_float_eq(sample(t, series), 2, 0);
    snprintf(series, sizeof series, "%s_bucket{model_name=\"tiny\",le=\"0.01\"}", h);
    cr_assert_float_eq(sample(t, series), 4, 0);
    snprintf(series, sizeof series, "%s_bucket{model_name=\"tiny\",le=\"2560\"}", h);
    cr_assert_float_eq(sample(t, series), 4, 0);
    snprintf(series, sizeof series, "%s_bucket{model_name=\"tiny\",le=\"+Inf\"}", h);
    cr_assert_float_eq(sample(t, series), 5, 0);
    snprintf(series, sizeof series, "%s_count{model_name=\"tiny\"}", h);
    cr_assert_float_eq(sample(t, series), 5, 0);
    snprintf(series, sizeof series, "%s_sum{model_name=\"tiny\"}", h);
    cr_assert_float_eq(sample(t, series), 0.0005 + 0.001 + 0.014 + 5000, 1e-9);
    cr_assert_float_eq(
        sample(t, "vkllm:inter_token_latency_seconds_bucket{model_name=\"tiny\",le=\"0.025\"}"), 0,
        0);
    cr_assert_float_eq(
        sample(t, "vkllm:inter_token_latency_seconds_bucket{model_name=\"tiny\",le=\"0.05\"}"), 4,
        0);
    cr_assert_null(strstr(t, "kv_cache_usage_perc"), "no engine gauges without stats");
    free(t);
    srv_metrics_destroy(&m);
}

Test(server_metrics, engine_stats_and_request_counters) {
    srv_metrics m;
    srv_metrics_init(&m);
    srv_metrics_finished(&m, VKLLM_FINISH_STOP);
    srv_metrics_finished(&m, VKLLM_FINISH_STOP);
    srv_metrics_finished(&m, VKLLM_FINISH_LENGTH);
    srv_metrics_finished(&m, VKLLM_FINISH_CANCELLED);
    srv_metrics_finished(&m, VKLLM_FINISH_ERROR);
    srv_metrics_http(&m, 200);
    srv_metrics_http(&m, 413);
    srv_metrics_http(&m, 418);
    srv_metrics_busy(&m);
    vkllm_stats s = {.requests_running = 3,
                     .requests_waiting = 2,
                     .kv_usage = 0.375,
                     .prompt_tokens_total = 1234,
                     .generation_tokens_total = 99,
                     .prefix_cache_queries = 640,
                     .prefix_cache_hits = 320,
                     .preemptions_total = 5,
                     .kv_blocks_total = 64,
                     .kv_blocks_used = 24};
    char *t = srv_metrics_format(&m, &s, "a \"quoted\" \\ name");
    cr_assert(t);
    check_well_formed(t);
#define L "{model_name=\"a \\\"quoted\\\" \\\\ name\"}"
    cr_assert_float_eq(sample(t, "vkllm:num_requests_running" L), 3, 0);
    cr_assert_float_eq(sample(t, "vkllm:num_requests_waiting" L), 2, 0);
    cr_assert_float_eq(sample(t, "vkllm:kv_cache_usage_perc" L), 0.375, 0);
    cr_assert_float_eq(sample(t, "vkllm:prompt_tokens_total" L), 1234, 0);
    cr_assert_float_eq(sample(t, "vkllm:generation_tokens_total" L), 99, 0);
    cr_assert_float_eq(sample(t, "vkllm:prefix_cache_queries_total" L), 640, 0);
    cr_assert_float_eq(sample(t, "vkllm:prefix_cache_hits_total" L), 320, 0);
    cr_assert_float_eq(sample(t, "vkllm:num_preemptions_total" L), 5, 0);
    cr_assert_float_eq(sample(t, "vkllm:request_failure_total" L), 1, 0);
    cr_assert_float_eq(sample(t, "vkllm:request_rejected_busy_total" L), 1, 0);
#undef L
#define L(x) "{model_name=\"a \\\"quoted\\\" \\\\ name\"," x "}"
    cr_assert_float_eq(sample(t, "vkllm:request_success_total" L("finished_reason=\"stop\"")), 2,
                       0);
    cr_assert_float_eq(sample(t, "vkllm:request_success_total" L("finished_reason=\"length\"")), 1,
                       0);
    cr_assert_float_eq(sample(t, "vkllm:request_success_total" L("finished_reason=\"abort\"")), 1,
                       0);
    cr_assert_float_eq(sample(t, "vkllm:http_requests_total" L("code=\"200\"")), 1, 0);
    cr_assert_float_eq(sample(t, "vkllm:http_requests_total" L("code=\"413\"")), 1, 0);
    cr_assert_float_eq(sample(t, "vkllm:http_requests_total" L("code=\"other\"")), 1, 0);
    cr_assert_float_eq(sample(t, "vkllm:http_requests_total" L("code=\"400\"")), 0, 0);
#undef L
    cr_assert(strstr(t, "# TYPE vkllm:kv_cache_usage_perc gauge\n"));
    cr_assert(strstr(t, "# TYPE vkllm:prompt_tokens_total counter\n"));
    cr_assert(strstr(t, "# TYPE vkllm:e2e_request_latency_seconds histogram\n"));
    free(t);
    srv_metrics_destroy(&m);
}

Test(server_page, embedded_page_matches_the_html_file) {
    const char *path = VKLLM_SOURCE_DIR "/engine/server/chat_page.html";
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)size);
    cr_assert_eq(fread(data, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    cr_assert_eq(srv_chat_page_html_len, (size_t)size,
                 "srv_chat_page.c is stale: run tools/embed_chat_page.sh");
    cr_assert(!memcmp(srv_chat_page_html, data, (size_t)size),
              "srv_chat_page.c is stale: run tools/embed_chat_page.sh");
    cr_assert_eq(srv_chat_page_html[size], 0);
    cr_assert(strstr((const char *)srv_chat_page_html, "/v1/chat/completions"));
    free(data);
}
