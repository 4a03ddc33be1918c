/* cmd_run.c: `vkllm run -p PROMPT`: generates one completion, streamed to stdout, then
 * prints the prompt size, prefill and decode speeds and the device to stderr.
 *
 * Speeds come from the engine's step statistics (vkllm_stats): prefill tokens/s is the
 * prompt tokens computed over the wall time of the steps that computed them, decode
 * tokens/s the one-token steps over theirs; GPU time (timestamps) is shown beside when
 * the device has it. Loading, tokenization and queueing are outside both figures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"

#define RUN_DEFAULT_MAX_TOKENS 256

static void run_usage(FILE *out) {
    fprintf(out,
            "usage: vkllm run [-m MODEL] -p PROMPT [-n N] [sampling flags] [--chat]\n"
            "  Generates a completion of PROMPT and streams it to stdout; speeds go to\n"
            "  stderr.\n"
            "  -p, --prompt TEXT      the prompt ('-' reads it from stdin)\n"
            "  --chat                 send PROMPT as a user message through the model's\n"
            "                         chat template (stops at the end of the turn)\n"
            "  --system TEXT          system message (with --chat)\n"
            "  --ignore-eos           keep generating past end-of-generation tokens\n"
            "  -n defaults to %d here.\n\n",
            RUN_DEFAULT_MAX_TOKENS);
    cli_common_usage(out);
}

static char *read_all(FILE *in) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, in)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                return NULL;
            }
            buf = grown;
            cap *= 2;
        }
    }
    buf[len] = '\0';
    return buf;
}

static double per_second(uint64_t tokens, double seconds) {
    return seconds > 0 ? (double)tokens / seconds : 0.0;
}

static void print_speeds(vkllm_engine *engine, const vkllm_request_result *res) {
    vkllm_stats st;
    vkllm_model_info info;
    vkllm_get_stats(engine, &st);
    vkllm_engine_model_info(engine, &info);
    fprintf(stderr, "\n--\nprompt: %u tokens | generated: %u tokens (%s)\n", res->prompt_tokens,
            res->completion_tokens, cli_finish_name(res->finish));
    fprintf(stderr, "prefill: %llu tokens in %.3f s = %.1f tokens/s",
            (unsigned long long)st.prefill_tokens_computed, st.prefill_time_s,
            per_second(st.prefill_tokens_computed, st.prefill_time_s));
    if (st.prefill_gpu_time_s > 0)
        fprintf(stderr, " (GPU %.3f s = %.1f tokens/s)", st.prefill_gpu_time_s,
                per_second(st.prefill_tokens_computed, st.prefill_gpu_time_s));
    fprintf(stderr, "\ndecode: %llu tokens in %.3f s = %.1f tokens/s",
            (unsigned long long)st.decode_tokens_computed, st.decode_time_s,
            per_second(st.decode_tokens_computed, st.decode_time_s));
    if (st.decode_gpu_time_s > 0)
        fprintf(stderr, " (GPU %.3f s = %.1f tokens/s)", st.decode_gpu_time_s,
                per_second(st.decode_tokens_computed, st.decode_gpu_time_s));
    fprintf(stderr, "\nmodel: %s (%s) | device: %s\n", info.name, info.architecture, info.device);
}

int cmd_run(int argc, char **argv) {
    cli_common c;
    cli_common_init(&c, RUN_DEFAULT_MAX_TOKENS);
    const char *prompt = NULL, *system = NULL;
    bool chat = false;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_parse(&c, "run", argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--chat"))
            chat = true;
        else if (!strcmp(a, "--ignore-eos"))
            c.sampling.ignore_eos = true;
        else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt") || !strcmp(a, "--system")) &&
                 i + 1 < argc) {
            if (!strcmp(a, "--system"))
                system = argv[++i];
            else
                prompt = argv[++i];
        } else {
            fprintf(stderr, "vkllm run: unknown option or missing value: '%s'\n\n", a);
            run_usage(stderr);
            return 2;
        }
    }
    if (c.help) {
        run_usage(stdout);
        return 0;
    }
    if (!prompt) {
        fprintf(stderr, "vkllm run: -p PROMPT is required\n\n");
        run_usage(stderr);
        return 2;
    }
    if (system && !chat) {
        fprintf(stderr, "vkllm run: --system needs --chat\n");
        return 2;
    }
    char *stdin_prompt = NULL;
    if (!strcmp(prompt, "-")) {
        stdin_prompt = read_all(stdin);
        if (!stdin_prompt) {
            fprintf(stderr, "vkllm run: cannot read the prompt from stdin\n");
            return 1;
        }
        prompt = stdin_prompt;
    }
    char path[4096];
    if (!cli_find_model(&c, "run", path, sizeof path)) {
        free(stdin_prompt);
        return 1;
    }
    vkllm_engine *engine = cli_load_engine(&c, "run", path);
    if (!engine) {
        free(stdin_prompt);
        return 1;
    }

    vkllm_request_params rp;
    vkllm_request_params_default(&rp);
    rp.sampling = c.sampling;
    vkllm_chat_message msgs[2];
    size_t n_msgs = 0;
    if (chat) {
        if (system) msgs[n_msgs++] = (vkllm_chat_message){"system", system};
        msgs[n_msgs++] = (vkllm_chat_message){"user", prompt};
        rp.messages = msgs;
        rp.n_messages = n_msgs;
    } else {
        rp.prompt = prompt;
    }
    rp.on_event = cli_stream_to_stdout;

    int code = 0;
    vkllm_request_id id;
    cli_interrupt_arm(engine);
    vkllm_status s = vkllm_submit(engine, &rp, &id);
    if (s != VKLLM_OK) {
        fprintf(stderr, "vkllm run: %s: %s\n", vkllm_status_name(s), vkllm_last_error());
        code = 1;
    } else {
        vkllm_request_result res;
        s = vkllm_wait(engine, id, &res);
        if (s == VKLLM_OK) {
            if (res.text_len && res.text[res.text_len - 1] != '\n') fputc('\n', stdout);
            fflush(stdout);
            print_speeds(engine, &res);
            if (res.finish == VKLLM_FINISH_ERROR) code = 1;
            vkllm_request_result_free(&res);
        } else {
            fprintf(stderr, "vkllm run: %s\n", vkllm_last_error());
            code = 1;
        }
    }
    cli_interrupt_disarm();
    vkllm_engine_destroy(engine);
    free(stdin_prompt);
    return code;
}
