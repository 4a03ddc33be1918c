/* cmd_chat.c: `vkllm chat`: an interactive conversation with the model through its chat
 * template, each answer streamed to stdout as it is generated.
 *
 * Every turn sends the whole conversation (system, user, assistant, ..., user) as
 * messages; the prefix cache finds the earlier turns' K/V, so only the new turn is
 * computed. A turn ends at the model's end-of-turn token (end-of-generation set of
 * tokenizer.h), at -n tokens, or on Ctrl-C (the partial answer is kept).
 * Input is read line by line, so stdin may be a pipe: each line is one user message,
 * and stdout then carries exactly one answer line per message. Commands: /reset forgets
 * the conversation (the system message stays), /exit (or end of input) quits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_common.h"

#define CHAT_DEFAULT_MAX_TOKENS 1024

static void chat_usage(FILE *out) {
    fprintf(out,
            "usage: vkllm chat [-m MODEL] [--system TEXT] [sampling flags]\n"
            "  Talks with the model; each line of input is one message. Commands:\n"
            "  /reset clears the conversation, /exit quits (so does end of input).\n"
            "  --system TEXT   system message\n"
            "  -v, --verbose   per-turn token counts and time on stderr\n"
            "  -n is the most tokens per answer (default %d).\n\n",
            CHAT_DEFAULT_MAX_TOKENS);
    cli_common_usage(out);
}

typedef struct conversation {
    vkllm_chat_message *msgs;
    char **owned;              /* the strings of msgs, owned */
    size_t n, cap, first_kept; /* first_kept: 1 with a system message, else 0 */
} conversation;

static bool conv_push(conversation *c, const char *role, const char *content) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        vkllm_chat_message *m = realloc(c->msgs, cap * sizeof *m);
        if (!m) return false;
        c->msgs = m;
        char **o = realloc(c->owned, cap * sizeof *o);
        if (!o) return false;
        c->owned = o;
        c->cap = cap;
    }
    char *copy = strdup(content);
    if (!copy) return false;
    c->owned[c->n] = copy;
    c->msgs[c->n] = (vkllm_chat_message){role, copy};
    c->n++;
    return true;
}

static void conv_truncate(conversation *c, size_t n) {
    while (c->n > n)
        free(c->owned[--c->n]);
}

static void conv_free(conversation *c) {
    conv_truncate(c, 0);
    free(c->msgs);
    free(c->owned);
}

static void trim_line(char *line) {
    size_t len = strlen(line);
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
}

static bool blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t') return false;
    return true;
}

/* One turn: the user's line in, the streamed answer out. Returns false on an error that
 * should end the session. */
static bool chat_turn(vkllm_engine *engine, conversation *conv, const cli_common *c,
                      const char *line, bool verbose, unsigned turn) {
    size_t before = conv->n;
    if (!conv_push(conv, "user", line)) return false;
    vkllm_request_params rp;
    vkllm_request_params_default(&rp);
    rp.sampling = c->sampling;
    rp.messages = conv->msgs;
    rp.n_messages = conv->n;
    rp.on_event = cli_stream_to_stdout;
    vkllm_request_id id;
    cli_interrupt_arm(engine);
    vkllm_status s = vkllm_submit(engine, &rp, &id);
    if (s != VKLLM_OK) {
        cli_interrupt_disarm();
        conv_truncate(conv, before);
        fprintf(stderr, "vkllm chat: %s: %s\n", vkllm_status_name(s), vkllm_last_error());
        if (s == VKLLM_ERR_TOO_LONG) fprintf(stderr, "vkllm chat: /reset starts over\n");
        return s == VKLLM_ERR_TOO_LONG || s == VKLLM_ERR_INVALID_ARGUMENT;
    }
    vkllm_request_result res;
    s = vkllm_wait(engine, id, &res);
    cli_interrupt_disarm();
    fputc('\n', stdout);
    fflush(stdout);
    if (s != VKLLM_OK) {
        conv_truncate(conv, before);
        fprintf(stderr, "vkllm chat: %s\n", vkllm_last_error());
        return false;
    }
    if (verbose)
        fprintf(stderr, "[turn %u: prompt %u tokens (%u cached), answer %u tokens, %s, %.2f s]\n",
                turn, res.prompt_tokens, res.cached_prompt_tokens, res.completion_tokens,
                cli_finish_name(res.finish), res.total_time_s);
    bool ok = true;
    if (res.finish == VKLLM_FINISH_ERROR)
        conv_truncate(conv, before);
    else
        ok = conv_push(conv, "assistant", res.text);
    vkllm_request_result_free(&res);
    return ok;
}

int cmd_chat(int argc, char **argv) {
    cli_common c;
    cli_common_init(&c, CHAT_DEFAULT_MAX_TOKENS);
    const char *system = NULL;
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_parse(&c, "chat", argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i];
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose"))
            verbose = true;
        else if (!strcmp(a, "--system") && i + 1 < argc)
            system = argv[++i];
        else {
            fprintf(stderr, "vkllm chat: unknown option or missing value: '%s'\n\n", a);
            chat_usage(stderr);
            return 2;
        }
    }
    if (c.help) {
        chat_usage(stdout);
        return 0;
    }
    char path[4096];
    if (!cli_find_model(&c, "chat", path, sizeof path)) return 1;
    vkllm_engine *engine = cli_load_engine(&c, "chat", path);
    if (!engine) return 1;

    bool interactive = isatty(fileno(stdin));
    if (interactive) {
        vkllm_model_info info;
        vkllm_engine_model_info(engine, &info);
        fprintf(stderr, "%s on %s (chat template %s). /reset clears, /exit quits.\n", info.name,
                info.device, info.chat_template);
    }
    conversation conv = {0};
    int code = 0;
    if (system) {
        if (!conv_push(&conv, "system", system)) code = 1;
        conv.first_kept = 1;
    }
    char *line = NULL;
    size_t line_cap = 0;
    unsigned turn = 0;
    while (code == 0) {
        if (interactive) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        if (getline(&line, &line_cap, stdin) < 0) break;
        trim_line(line);
        if (blank(line)) continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            conv_truncate(&conv, conv.first_kept);
            if (interactive || verbose) fprintf(stderr, "[conversation cleared]\n");
            continue;
        }
        if (line[0] == '/' && !strchr(line, ' ')) {
            fprintf(stderr, "vkllm chat: unknown command %s (/reset, /exit)\n", line);
            continue;
        }
        if (!chat_turn(engine, &conv, &c, line, verbose, ++turn)) code = 1;
    }
    free(line);
    conv_free(&conv);
    vkllm_engine_destroy(engine);
    return code;
}
