/* cmd_bench.c: `vkllm bench <kernels|latency|throughput|serve>`: finds the benchmark and
 * hands over (each lives in bench_<name>.c; shared helpers in bench_util.c and the PNG
 * plots in bench_plot.c). Method and reproduction: docs/benchmarks.md. */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "cli.h"

typedef struct bench_command {
    const char *name, *summary;
    int (*run)(int argc, char **argv);
} bench_command;

static const bench_command bench_commands[] = {
    {"kernels", "GPU time of matmul/attention kernels at Llama-3-8B shapes vs copy bandwidth",
     bench_kernels},
    {"latency", "single-stream prefill (pp512) and decode (tg128) tokens/s; --batch N decode",
     bench_latency},
    {"throughput", "offline run of N ShareGPT-like requests: continuous/static, paged/contiguous",
     bench_throughput},
    {"serve", "load generator for an OpenAI-compatible server: TTFT, TPOT, ITL, goodput",
     bench_serve},
};
#define N_BENCH (sizeof bench_commands / sizeof bench_commands[0])

static void bench_usage(FILE *out) {
    fprintf(out, "usage: vkllm bench <benchmark> [options]\n\nbenchmarks:\n");
    for (size_t i = 0; i < N_BENCH; i++)
        fprintf(out, "  %-11s %s\n", bench_commands[i].name, bench_commands[i].summary);
    fprintf(out, "\n`vkllm bench <benchmark> --help` lists its options.\n");
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        bench_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < N_BENCH; i++)
        if (!strcmp(argv[1], bench_commands[i].name)) {
            setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows up in logs as it happens */
            return bench_commands[i].run(argc - 1, argv + 1);
        }
    fprintf(stderr, "vkllm bench: unknown benchmark '%s'\n\n", argv[1]);
    bench_usage(stderr);
    return 2;
}
