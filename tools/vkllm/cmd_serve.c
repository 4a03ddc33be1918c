/* cmd_serve.c: `vkllm serve`: the OpenAI-compatible HTTP server (engine/server).
 *
 * Loads the model, starts the server and waits for SIGINT or SIGTERM, then shuts
 * down gracefully: no new connections, running requests get --shutdown-timeout
 * seconds to finish, the rest are cancelled, and the process exits 0. The signals are
 * blocked in every thread (the mask is set before any thread starts) and taken by
 * sigwait here, so no handler runs inside the engine or the HTTP threads.
 * The first stdout line is "vkllm serve: listening on http://HOST:PORT" (the real
 * port when --port 0 asks for any free one), which scripts wait for. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"
#include "server/srv_server.h"

static void serve_usage(FILE *out) {
    fprintf(out, "usage: vkllm serve [-m MODEL] [options]\n"
                 "  OpenAI-compatible HTTP server: /v1/completions, /v1/chat/completions,\n"
                 "  /v1/models, /tokenize, /detokenize, /health, /metrics, and a chat page at /.\n"
                 "server:\n"
                 "  --host ADDR            address to listen on (default 127.0.0.1)\n"
                 "  --port N               port (default 8000; 0: any free port, printed)\n"
                 "  --api-key KEY          require 'Authorization: Bearer KEY' (default:\n"
                 "                         $VKLLM_API_KEY, else none)\n"
                 "  --served-model-name N  model id clients use (default: the model's name)\n"
                 "  --max-waiting N        queued requests before HTTP 503 (default 256)\n"
                 "  --max-body BYTES       largest request body, else HTTP 413 (default 8 MiB)\n"
                 "  --max-connections N    open connections at most (default 1024)\n"
                 "  --shutdown-timeout S   seconds running requests get on SIGTERM (default 10)\n"
                 "  --log-requests         one line per failed request on stderr\n"
                 "engine:\n"
                 "  --max-running-seqs N   sequences batched in one step (default 64)\n"
                 "  --max-step-tokens N    token budget of one step (default 512)\n"
                 "  --kv-memory-fraction F share of free device memory for the KV cache (0.9)\n"
                 "  --swap-blocks N        host KV blocks for preemption by swap (default 0)\n"
                 "  --no-prefix-caching    turn the prefix cache off\n");
    cli_common_usage(out);
}

static bool parse_number(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

/* Sampling is chosen per request by the clients; the shared sampling flags would
 * silently do nothing here, so they are refused. */
static bool is_sampling_flag(const char *a) {
    static const char *const flags[] = {"-n",      "--max-tokens",     "--temperature",
                                        "--temp",  "--top-k",          "--top-p",
                                        "--min-p", "--repeat-penalty", "--seed"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (!strcmp(a, flags[i])) return true;
    return false;
}

int cmd_serve(int argc, char **argv) {
    cli_common common;
    cli_common_init(&common, 16);
    srv_config cfg;
    srv_config_default(&cfg);
    cfg.api_key = getenv("VKLLM_API_KEY");
    double shutdown_timeout = 10.0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (is_sampling_flag(a)) {
            fprintf(stderr,
                    "vkllm serve: %s is a per-request parameter; clients set it in "
                    "their requests\n",
                    a);
            return 2;
        }
        int r = cli_common_parse(&common, "serve", argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "--no-prefix-caching")) {
            common.engine.enable_prefix_caching = false;
            continue;
        }
        if (!strcmp(a, "--log-requests")) {
            cfg.log_requests = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "vkllm serve: unknown option '%s' (or it needs a value)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        double d;
        if (!strcmp(a, "--host"))
            cfg.host = v;
        else if (!strcmp(a, "--api-key"))
            cfg.api_key = v;
        else if (!strcmp(a, "--served-model-name"))
            cfg.served_model_name = v;
        else if (!strcmp(a, "--port") && parse_number(v, 0, 65535, &d))
            cfg.port = (uint16_t)d;
        else if (!strcmp(a, "--max-waiting") && parse_number(v, 1, 1e9, &d))
            cfg.max_waiting = common.engine.max_waiting = (uint32_t)d;
        else if (!strcmp(a, "--max-body") && parse_number(v, 1, 1e12, &d))
            cfg.max_body = (size_t)d;
        else if (!strcmp(a, "--max-connections") && parse_number(v, 1, 1e6, &d))
            cfg.max_connections = (uint32_t)d;
        else if (!strcmp(a, "--shutdown-timeout") && parse_number(v, 0, 86400, &d))
            shutdown_timeout = d;
        else if (!strcmp(a, "--max-running-seqs") && parse_number(v, 1, 1e6, &d))
            common.engine.max_running_seqs = (uint32_t)d;
        else if (!strcmp(a, "--max-step-tokens") && parse_number(v, 1, 1e9, &d))
            common.engine.max_step_tokens = (uint32_t)d;
        else if (!strcmp(a, "--kv-memory-fraction") && parse_number(v, 0.01, 1, &d))
            common.engine.kv_memory_fraction = (float)d;
        else if (!strcmp(a, "--swap-blocks") && parse_number(v, 0, 1e9, &d))
            common.engine.swap_blocks = (uint32_t)d;
        else {
            fprintf(stderr, "vkllm serve: bad option or value: %s %s\n", a, v);
            return 2;
        }
    }
    if (common.help) {
        serve_usage(stdout);
        return 0;
    }
    char path[4096];
    if (!cli_find_model(&common, "serve", path, sizeof path)) return 2;

    /* Block the stop signals before any thread exists, so every thread inherits the
     * mask and only sigwait below receives them. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    vkllm_engine *engine = cli_load_engine(&common, "serve", path);
    if (!engine) return 1;
    srv_server *server;
    char err[512] = "";
    vkllm_status st = srv_server_start(&cfg, &srv_backend_vkllm, engine, &server, err, sizeof err);
    if (st != VKLLM_OK) {
        fprintf(stderr, "vkllm serve: %s\n", err[0] ? err : vkllm_last_error());
        vkllm_engine_destroy(engine);
        return 1;
    }
    vkllm_model_info info;
    if (vkllm_engine_model_info(engine, &info) == VKLLM_OK)
        fprintf(stderr, "vkllm serve: %s (%s) on %s, %u KV blocks of %u tokens\n", info.name,
                info.architecture, info.device, info.kv_blocks, info.block_size);
    bool v6 = strchr(cfg.host, ':') != NULL;
    printf("vkllm serve: listening on http://%s%s%s:%u\n", v6 ? "[" : "", cfg.host, v6 ? "]" : "",
           srv_server_port(server));
    fflush(stdout);

    int sig = 0;
    sigwait(&stop_signals, &sig);
    fprintf(stderr, "vkllm serve: %s: stopping (running requests get %.0f s)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", shutdown_timeout);
    uint32_t cancelled = srv_server_shutdown(server, shutdown_timeout);
    if (cancelled) fprintf(stderr, "vkllm serve: cancelled %u unfinished requests\n", cancelled);
    srv_server_destroy(server);
    vkllm_engine_destroy(engine);
    fprintf(stderr, "vkllm serve: stopped\n");
    return 0;
}
