/* embed.c: the smallest program embedding vkllm through its public header only.
 *
 *     vkllm_embed MODEL.gguf "PROMPT" [MAX_TOKENS]
 *
 * Loads the model, streams a greedy completion of PROMPT to stdout from the engine's
 * callback, waits for it, and prints the model, the device and the token counts to
 * stderr. Build: against an installed vkllm, `cc embed.c $(pkg-config --cflags --libs
 * vkllm)` or find_package(vkllm) in CMake; see tools/examples/CMakeLists.txt and
 * tools/examples/Makefile. */
#include <stdio.h>
#include <stdlib.h>

#include "vkllm.h"

/* Called on the engine thread for each piece of generated text. */
static void on_event(const vkllm_event *event, void *user) {
    (void)user;
    fwrite(event->text, 1, event->text_len, stdout);
    fflush(stdout);
    if (event->finish == VKLLM_FINISH_ERROR)
        fprintf(stderr, "\nrequest failed: %s\n", event->error_message);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT [MAX_TOKENS]   (vkllm %s)\n", argv[0],
                vkllm_version());
        return 2;
    }
    vkllm_engine_options options;
    vkllm_engine_options_default(&options);
    vkllm_engine *engine;
    if (vkllm_engine_create(argv[1], &options, &engine) != VKLLM_OK) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], vkllm_last_error());
        return 1;
    }
    vkllm_model_info info;
    vkllm_engine_model_info(engine, &info);
    fprintf(stderr, "%s (%s, %u layers) on %s\n", info.name, info.architecture, info.n_layer,
            info.device);

    vkllm_request_params request;
    vkllm_request_params_default(&request);
    request.prompt = argv[2];
    request.sampling.temperature = 0; /* greedy: the same text every run */
    request.sampling.max_tokens = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 10) : 32;
    request.on_event = on_event;

    vkllm_request_id id;
    vkllm_request_result result;
    int code = 0;
    if (vkllm_submit(engine, &request, &id) != VKLLM_OK) {
        fprintf(stderr, "submit: %s\n", vkllm_last_error());
        code = 1;
    } else if (vkllm_wait(engine, id, &result) != VKLLM_OK) {
        fprintf(stderr, "wait: %s\n", vkllm_last_error());
        code = 1;
    } else {
        printf("\n");
        fprintf(stderr, "prompt %u tokens, generated %u tokens in %.3f s\n", result.prompt_tokens,
                result.completion_tokens, result.total_time_s);
        if (result.finish == VKLLM_FINISH_ERROR) code = 1;
        vkllm_request_result_free(&result);
    }
    vkllm_engine_destroy(engine);
    return code;
}
