/* bench_workload.c: the request mix of the throughput and serve benchmarks: prompt and
 * output lengths resembling ShareGPT conversations, drawn from a seeded generator.
 *
 * Lengths are independent log-normal draws whose means are ShareGPT's reported averages
 * (prompt 161 tokens, output 338: the vLLM paper's dataset statistics) with sigma 1.0,
 * which gives the long tail (median prompt ~98, p99 ~1000). Pairs are then filtered as
 * vLLM's benchmark filters ShareGPT: prompt or output under 4 tokens, prompt over 1024
 * or prompt + output over 2048 are redrawn. `scale` multiplies the means and the upper
 * limits alike (small models on lavapipe); the lower limit stays 4. The same seed gives
 * the same lengths on every machine (splitmix64 + Box-Muller, no libc rand). */
#include <math.h>

#include "bench.h"
#include "common/splitmix.h"

#define WL_PROMPT_MEAN 161.0
#define WL_OUTPUT_MEAN 338.0
#define WL_SIGMA 1.0

uint64_t bench_rng_next(bench_rng *r) {
    return vkl_splitmix64(&r->s);
}

double bench_rng_uniform(bench_rng *r) {
    return ((double)(bench_rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double lognormal(bench_rng *r, double mean, double sigma) {
    double mu = log(mean) - 0.5 * sigma * sigma; /* so that E[X] = mean */
    double z = sqrt(-2.0 * log(bench_rng_uniform(r))) * cos(2.0 * M_PI * bench_rng_uniform(r));
    return exp(mu + sigma * z);
}

void bench_workload_lengths(uint32_t n, uint64_t seed, double scale, uint32_t *prompt,
                            uint32_t *output) {
    bench_rng r = {seed};
    double max_prompt = fmax(4, 1024 * scale), max_total = fmax(8, 2048 * scale);
    for (uint32_t i = 0; i < n; i++) {
        double p = 0, o = 0;
        for (int tries = 0; tries < 10000; tries++) {
            p = round(lognormal(&r, WL_PROMPT_MEAN * scale, WL_SIGMA));
            o = round(lognormal(&r, WL_OUTPUT_MEAN * scale, WL_SIGMA));
            if (p >= 4 && o >= 4 && p <= max_prompt && p + o <= max_total) break;
        }
        /* Only reached on absurd scales: clamp into the limits. */
        p = fmin(fmax(p, 4), max_prompt);
        o = fmin(fmax(o, 4), fmax(4, max_total - p));
        prompt[i] = (uint32_t)p;
        output[i] = (uint32_t)o;
    }
}

double bench_rng_exponential(bench_rng *r, double rate) {
    return -log(bench_rng_uniform(r)) / rate;
}
