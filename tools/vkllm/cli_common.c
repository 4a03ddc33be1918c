/* cli_common.c: flags, model lookup, progress bar and streaming shared by the
 * generating subcommands (see cli_common.h). */
#include "cli_common.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cli_common_init(cli_common *c, uint32_t default_max_tokens) {
    memset(c, 0, sizeof *c);
    vkllm_request_params rp;
    vkllm_request_params_default(&rp);
    c->sampling = rp.sampling;
    /* llama.cpp's llama-cli defaults */
    c->sampling.temperature = 0.8f;
    c->sampling.top_k = 40;
    c->sampling.top_p = 0.95f;
    c->sampling.min_p = 0.05f;
    c->sampling.max_tokens = default_max_tokens;
    vkllm_engine_options_default(&c->engine);
}

void cli_common_usage(FILE *out) {
    fprintf(out, "model and engine:\n"
                 "  -m, --model PATH       GGUF model (default: $VKLLM_MODEL, else\n"
                 "                         models/" CLI_DEFAULT_MODEL_FILE "\n"
                 "                         in . or next to the executable's ../models)\n"
                 "  --device D             Vulkan device index or name substring (default:\n"
                 "                         $VKLLM_DEVICE, else the best one)\n"
                 "  --block-size N         tokens per KV block (default 16)\n"
                 "  --kv-blocks N          KV blocks (default: 90%% of free device memory)\n"
                 "  -c, --ctx-size N       longest sequence (default: the model's, at most 8192)\n"
                 "  --chat-template NAME   gemma, llama3, chatml, llama2, plain (default: the\n"
                 "                         model's)\n"
                 "sampling (defaults as llama.cpp's llama-cli):\n"
                 "  -n, --max-tokens N     tokens to generate at most\n"
                 "  --temperature T        0 is greedy (default 0.8)\n"
                 "  --top-k K              0 is off (default 40)\n"
                 "  --top-p P              1 is off (default 0.95)\n"
                 "  --min-p P              0 is off (default 0.05)\n"
                 "  --repeat-penalty R     1 is off (default 1)\n"
                 "  --seed S               RNG seed (default: random)\n"
                 "  -h, --help             this text\n");
}

static int bad_value(const char *cmd, const char *flag, const char *value, const char *want) {
    fprintf(stderr, "vkllm %s: %s needs %s, got '%s'\n", cmd, flag, want, value);
    return -1;
}

static bool parse_u64(const char *s, uint64_t *out) {
    if (!*s || *s == '-') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno) return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (!*s || *end || errno) return false;
    *out = v;
    return true;
}

static bool parse_u32(const char *s, uint32_t *out) {
    uint64_t v;
    if (!parse_u64(s, &v) || v > UINT32_MAX) return false;
    *out = (uint32_t)v;
    return true;
}

int cli_common_parse(cli_common *c, const char *cmd, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
        c->help = true;
        return 1;
    }
    static const char *const valued[] = {
        "-m",         "--model",         "--device", "--block-size",     "--kv-blocks",   "-c",
        "--ctx-size", "--chat-template", "-n",       "--max-tokens",     "--temperature", "--temp",
        "--top-k",    "--top-p",         "--min-p",  "--repeat-penalty", "--seed"};
    bool known = false;
    for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
        if (!strcmp(a, valued[k])) known = true;
    if (!known) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "vkllm %s: %s needs a value\n", cmd, a);
        return -1;
    }
    const char *v = argv[++*i];
    vkllm_sampling *s = &c->sampling;
    if (!strcmp(a, "-m") || !strcmp(a, "--model"))
        c->model = v;
    else if (!strcmp(a, "--device"))
        c->engine.device = v;
    else if (!strcmp(a, "--chat-template"))
        c->engine.chat_template = v;
    else if (!strcmp(a, "--block-size")) {
        if (!parse_u32(v, &c->engine.block_size) || !c->engine.block_size)
            return bad_value(cmd, a, v, "a positive integer");
    } else if (!strcmp(a, "--kv-blocks")) {
        if (!parse_u32(v, &c->engine.kv_blocks)) return bad_value(cmd, a, v, "an integer");
    } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
        if (!parse_u32(v, &c->engine.max_context)) return bad_value(cmd, a, v, "an integer");
    } else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
        if (!parse_u32(v, &s->max_tokens) || !s->max_tokens)
            return bad_value(cmd, a, v, "a positive integer");
        c->max_tokens_given = true;
    } else if (!strcmp(a, "--temperature") || !strcmp(a, "--temp")) {
        if (!parse_float(v, &s->temperature) || !(s->temperature >= 0))
            return bad_value(cmd, a, v, "a number >= 0");
    } else if (!strcmp(a, "--top-k")) {
        uint32_t k;
        if (!parse_u32(v, &k) || k > INT32_MAX) return bad_value(cmd, a, v, "an integer >= 0");
        s->top_k = (int32_t)k;
    } else if (!strcmp(a, "--top-p")) {
        if (!parse_float(v, &s->top_p) || !(s->top_p > 0 && s->top_p <= 1))
            return bad_value(cmd, a, v, "a number in (0, 1]");
    } else if (!strcmp(a, "--min-p")) {
        if (!parse_float(v, &s->min_p) || !(s->min_p >= 0 && s->min_p <= 1))
            return bad_value(cmd, a, v, "a number in [0, 1]");
    } else if (!strcmp(a, "--repeat-penalty")) {
        if (!parse_float(v, &s->repetition_penalty) || !(s->repetition_penalty > 0))
            return bad_value(cmd, a, v, "a number > 0");
    } else if (!strcmp(a, "--seed")) {
        if (!parse_u64(v, &s->seed)) return bad_value(cmd, a, v, "a non-negative integer");
        s->has_seed = true;
    }
    return 1;
}

/* ---------------------------------------------------------------- model lookup */

static bool file_exists(const char *path) {
    return access(path, R_OK) == 0;
}

bool cli_exe_dir(char *dir, size_t cap) {
    if (cap < 2) return false;
    ssize_t n = readlink("/proc/self/exe", dir, cap - 1);
    if (n <= 0) return false;
    dir[n] = '\0';
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    return true;
}

bool cli_find_model(const cli_common *c, const char *cmd, char *path, size_t cap) {
    if (c->model) {
        if (!file_exists(c->model)) {
            fprintf(stderr, "vkllm %s: cannot read model '%s'\n", cmd, c->model);
            return false;
        }
        snprintf(path, cap, "%s", c->model);
        return true;
    }
    const char *env = getenv("VKLLM_MODEL");
    if (env && env[0]) {
        if (!file_exists(env)) {
            fprintf(stderr, "vkllm %s: cannot read $VKLLM_MODEL '%s'\n", cmd, env);
            return false;
        }
        snprintf(path, cap, "%s", env);
        return true;
    }
    snprintf(path, cap, "models/%s", CLI_DEFAULT_MODEL_FILE);
    if (file_exists(path)) return true;
    char exe[PATH_MAX];
    char beside[PATH_MAX + 64] = "";
    if (cli_exe_dir(exe, sizeof exe)) {
        snprintf(beside, sizeof beside, "%s/../models/%s", exe, CLI_DEFAULT_MODEL_FILE);
        if (file_exists(beside)) {
            snprintf(path, cap, "%s", beside);
            return true;
        }
    }
    fprintf(stderr,
            "vkllm %s: no model given and the default model was not found.\n"
            "  looked for: $VKLLM_MODEL (unset), ./models/%s%s%s\n"
            "  fetch it with tools/fetch_model.sh, or pass -m MODEL.gguf\n",
            cmd, CLI_DEFAULT_MODEL_FILE, beside[0] ? ", " : "", beside);
    return false;
}

/* ---------------------------------------------------------------- loading */

typedef struct progress_bar {
    int last_percent;
    const char *last_stage;
} progress_bar;

static void draw_progress(const char *stage, double fraction, void *user) {
    progress_bar *bar = user;
    int percent = (int)(fraction * 100.0 + 0.5);
    if (percent == bar->last_percent && bar->last_stage == stage) return;
    bar->last_percent = percent;
    bar->last_stage = stage;
    enum { WIDTH = 30 };
    char cells[WIDTH + 1];
    int filled = percent * WIDTH / 100;
    for (int k = 0; k < WIDTH; k++)
        cells[k] = k < filled ? '#' : '.';
    cells[WIDTH] = '\0';
    fprintf(stderr, "\rloading [%s] %3d%% %-10s", cells, percent, stage);
    fflush(stderr);
}

vkllm_engine *cli_load_engine(const cli_common *c, const char *cmd, const char *path) {
    vkllm_engine_options o = c->engine;
    progress_bar bar = {.last_percent = -1};
    bool tty = isatty(fileno(stderr));
    if (tty) {
        o.on_progress = draw_progress;
        o.progress_user = &bar;
    }
    vkllm_engine *engine = NULL;
    vkllm_status s = vkllm_engine_create(path, &o, &engine);
    if (tty) fprintf(stderr, "\r%60s\r", "");
    if (s != VKLLM_OK) {
        fprintf(stderr, "vkllm %s: %s: %s\n", cmd, vkllm_status_name(s), vkllm_last_error());
        return NULL;
    }
    return engine;
}

/* ---------------------------------------------------------------- streaming */

static vkllm_engine *volatile interrupt_engine;
static volatile sig_atomic_t interrupt_flag;

static void on_sigint(int sig) {
    (void)sig;
    interrupt_flag = 1;
}

void cli_interrupt_arm(vkllm_engine *engine) {
    interrupt_engine = engine;
    interrupt_flag = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

void cli_interrupt_disarm(void) {
    signal(SIGINT, SIG_DFL);
    interrupt_engine = NULL;
}

bool cli_interrupted(void) {
    return interrupt_flag != 0;
}

void cli_stream_to_stdout(const vkllm_event *event, void *user) {
    (void)user;
    if (event->text_len) {
        fwrite(event->text, 1, event->text_len, stdout);
        fflush(stdout);
    }
    if (event->finish == VKLLM_FINISH_ERROR)
        fprintf(stderr, "\nvkllm: the request failed: %s: %s\n", vkllm_status_name(event->error),
                event->error_message ? event->error_message : "");
    /* The next event after Ctrl-C stops the request (callbacks may cancel). */
    if (interrupt_flag && interrupt_engine && event->finish == VKLLM_FINISH_NONE)
        vkllm_cancel(interrupt_engine, event->request);
}

const char *cli_finish_name(vkllm_finish_reason finish) {
    switch (finish) {
    case VKLLM_FINISH_NONE:
        return "running";
    case VKLLM_FINISH_STOP:
        return "stop";
    case VKLLM_FINISH_LENGTH:
        return "length";
    case VKLLM_FINISH_CANCELLED:
        return "cancelled";
    case VKLLM_FINISH_ERROR:
        return "error";
    }
    return "unknown";
}
