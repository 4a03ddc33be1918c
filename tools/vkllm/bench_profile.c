/* bench_profile.c: where a step's GPU time goes, per dispatch kind (`bench latency
 * --profile`).
 *
 * With gpu_set_profiling on, every dispatch of a step is followed by a timestamp whose
 * label names the shader, its first push-constant word and its grid (gpu.h). The gap
 * between timestamp i-1 and i is charged to label i: the dispatch's run time plus the
 * barrier and launch in front of it, which is what it costs the dependent chain of a
 * step. Steps add into one table per test (pp, tg, B=8 ...); dispatches with the same
 * label (the same kernel on the same shape in every layer) share a row.
 * Invariant: the rows' times sum to the profiled steps' GPU time between their first and
 * last timestamps (nothing is dropped; labels past BENCH_PROFILE_ROWS go to "(other)"). */
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static int row_index(bench_profile *p, const char *label) {
    for (int i = 0; i < p->n_rows; i++)
        if (!strcmp(p->rows[i].label, label)) return i;
    bench_profile_row *next = &p->rows[p->n_rows];
    if (p->n_rows < BENCH_PROFILE_ROWS - 1) {
        snprintf(next->label, sizeof next->label, "%s", label);
        return p->n_rows++;
    }
    if (p->n_rows == BENCH_PROFILE_ROWS - 1) { /* full: the last row collects the rest */
        snprintf(next->label, sizeof next->label, "%s", "(other)");
        p->n_rows++;
    }
    return BENCH_PROFILE_ROWS - 1;
}

void bench_profile_add_step(bench_profile *p, const gpu_context *ctx, double record_ms) {
    const char **labels;
    const double *ms;
    uint32_t n = gpu_last_timestamps(ctx, &labels, &ms);
    if (n < 2) return;
    for (uint32_t i = 1; i < n; i++) {
        int r = row_index(p, labels[i]);
        p->rows[r].ms += ms[i] - ms[i - 1];
        p->rows[r].calls++;
    }
    p->total_ms += ms[n - 1] - ms[0];
    p->record_ms += record_ms;
    p->steps++;
}

static int by_time_desc(const void *a, const void *b) {
    double x = ((const bench_profile_row *)a)->ms, y = ((const bench_profile_row *)b)->ms;
    return (x < y) - (x > y);
}

void bench_profile_report(bench_profile *p, const char *test, bench_json *json) {
    if (!p->steps) return;
    qsort(p->rows, (size_t)p->n_rows, sizeof p->rows[0], by_time_desc);
    double per_step = p->total_ms / p->steps;
    printf("\nprofile of %s: %u steps, %.3f ms of GPU time per step (profiled; the timestamps "
           "serialise), host recording %.3f ms per step\n",
           test, p->steps, per_step, p->record_ms / p->steps);
    printf("  %-52s %8s %11s %7s\n", "dispatch (shader p0=push[0] g=grid)", "calls", "us/step",
           "share");
    bench_json_object(json, NULL);
    bench_json_str(json, "test", test);
    bench_json_int(json, "steps", p->steps);
    bench_json_num(json, "gpu_ms_per_step", per_step);
    bench_json_num(json, "record_ms_per_step", p->record_ms / p->steps);
    bench_json_array(json, "rows");
    for (int i = 0; i < p->n_rows; i++) {
        const bench_profile_row *r = &p->rows[i];
        double us = r->ms * 1e3 / p->steps;
        printf("  %-52s %8.1f %11.1f %6.1f%%\n", r->label, (double)r->calls / p->steps, us,
               p->total_ms > 0 ? 100.0 * r->ms / p->total_ms : 0.0);
        bench_json_object(json, NULL);
        bench_json_str(json, "label", r->label);
        bench_json_num(json, "calls_per_step", (double)r->calls / p->steps);
        bench_json_num(json, "us_per_step", us);
        bench_json_end_object(json);
    }
    bench_json_end_array(json);
    bench_json_end_object(json);
}
