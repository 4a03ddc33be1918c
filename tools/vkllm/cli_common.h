/* cli_common.h: what the generating subcommands (run, chat, ...) share: the model,
 * sampling and engine flags, finding the default model, loading with a progress bar,
 * and streaming a request's text to stdout.
 *
 * Sampling defaults follow llama.cpp's llama-cli (temperature 0.8, top-k 40, top-p
 * 0.95, min-p 0.05, a random seed); --temperature 0 is greedy. Only include/vkllm.h is
 * used: the command line is a client of the public API like any other. */
#ifndef VKLLM_CLI_COMMON_H
#define VKLLM_CLI_COMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vkllm.h"

#define CLI_DEFAULT_MODEL_FILE "gemma-3-270m-q4_k_m.gguf"

typedef struct cli_common {
    const char *model; /* -m; NULL: the default model */
    vkllm_sampling sampling;
    bool max_tokens_given;
    vkllm_engine_options engine;
    bool help;
} cli_common;

/* Defaults as above; max_tokens = default_max_tokens. */
void cli_common_init(cli_common *c, uint32_t default_max_tokens);

/* Tries argv[*i] as a common flag (consuming its value, advancing *i). Returns 1 when
 * consumed, 0 when not a common flag, -1 after printing an error naming the flag. */
int cli_common_parse(cli_common *c, const char *cmd, int argc, char **argv, int *i);

/* Usage lines of the common flags. */
void cli_common_usage(FILE *out);

/* The directory holding the running executable (from /proc/self/exe) into dir; false when
 * it cannot be read. Defaults that live in the source tree are also looked for from it. */
bool cli_exe_dir(char *dir, size_t cap);

/* The model path: -m if given, else $VKLLM_MODEL, ./models/<default>, then
 * <dir of the executable>/../models/<default>. Prints an error (naming the places looked
 * at and tools/fetch_model.sh) and returns false when none exists. */
bool cli_find_model(const cli_common *c, const char *cmd, char *path, size_t cap);

/* Creates the engine, with a progress bar on stderr when stderr is a terminal. Prints the
 * error and returns NULL on failure. */
vkllm_engine *cli_load_engine(const cli_common *c, const char *cmd, const char *path);

/* Ctrl-C while generating cancels the current request instead of killing the process. */
void cli_interrupt_arm(vkllm_engine *engine);
void cli_interrupt_disarm(void);
bool cli_interrupted(void);

/* Stream callback for vkllm_request_params.on_event: writes text to stdout (user unused)
 * and cancels the request on Ctrl-C. */
void cli_stream_to_stdout(const vkllm_event *event, void *user);

/* The finish reason in words ("stop", "length", "cancelled", "error"). */
const char *cli_finish_name(vkllm_finish_reason finish);

#endif
