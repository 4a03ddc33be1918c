/* main.c: `vkllm <command> [options]`: finds the subcommand and hands over. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const cli_command commands[] = {
    {"devices", "list Vulkan devices and their features", cmd_devices},
    {"synth", "write a synthetic GGUF model with seeded random weights", cmd_synth},
    {"run", "generate a completion of a prompt, streamed, with prefill/decode speeds", cmd_run},
    {"chat", "talk with a model through its chat template", cmd_chat},
    {"bench", "benchmarks: kernels, latency, throughput, serve (docs/benchmarks.md)", cmd_bench},
    {"serve", "OpenAI-compatible HTTP server with a chat page", cmd_serve},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out) {
    fprintf(out, "usage: vkllm <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`vkllm <command> --help` describes each command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "vkllm: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
