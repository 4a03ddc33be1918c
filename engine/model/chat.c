/* chat.c: the chat formats of chat.h, rendered by hand to match the official Jinja
 * templates byte for byte (trim = Python's str.strip(), the whitespace set below).
 * Invariant: chat_render either returns VKLLM_OK with a complete NUL-terminated string or
 * frees everything it allocated. */
#include "model/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const chat_names[] = {"plain", "gemma", "llama3", "chatml", "llama2"};

const char *chat_format_name(chat_format format) {
    if ((unsigned)format < sizeof chat_names / sizeof *chat_names) return chat_names[format];
    return "unknown";
}

chat_template chat_template_detect(const char *jinja, const tok_tokenizer *tok) {
    chat_template t = {.format = CHAT_FORMAT_PLAIN};
    /* Order matters: a llama3 template may mention [INST] in a comment, never the reverse. */
    static const struct {
        const char *marker;
        chat_format format;
    } markers[] = {
        {"<start_of_turn>", CHAT_FORMAT_GEMMA},
        {"<|start_header_id|>", CHAT_FORMAT_LLAMA3},
        {"<|im_start|>", CHAT_FORMAT_CHATML},
        {"[INST]", CHAT_FORMAT_LLAMA2},
    };
    size_t n_markers = sizeof markers / sizeof *markers;
    if (jinja)
        for (size_t i = 0; i < n_markers; i++)
            if (strstr(jinja, markers[i].marker)) {
                t.format = markers[i].format;
                return t;
            }
    if (tok)
        for (size_t i = 0; i < n_markers; i++)
            if (tok_find(tok, markers[i].marker) >= 0) {
                t.format = markers[i].format;
                return t;
            }
    snprintf(t.warning, sizeof t.warning,
             "%s; using the plain chat format (choose one with --chat-template "
             "gemma|llama3|chatml|llama2|plain)",
             jinja ? "chat template not recognised" : "no chat template in the model");
    return t;
}

chat_template chat_template_from_gguf(const gguf_file *gguf, const tok_tokenizer *tok) {
    gguf_str s = {0};
    char *jinja = NULL;
    if (gguf && gguf_get_str(gguf, "tokenizer.chat_template", &s) == VKLLM_OK) {
        jinja = malloc(s.len + 1);
        if (jinja) {
            memcpy(jinja, s.ptr, s.len);
            jinja[s.len] = '\0';
        }
    }
    chat_template t = chat_template_detect(jinja, tok);
    free(jinja);
    return t;
}

vkllm_status chat_template_by_name(const char *name, chat_template *out) {
    for (size_t i = 0; i < sizeof chat_names / sizeof *chat_names; i++)
        if (name && strcmp(name, chat_names[i]) == 0) {
            *out = (chat_template){.format = (chat_format)i};
            return VKLLM_OK;
        }
    /* Common aliases. */
    if (name && (strcmp(name, "qwen") == 0 || strcmp(name, "qwen2") == 0)) {
        *out = (chat_template){.format = CHAT_FORMAT_CHATML};
        return VKLLM_OK;
    }
    if (name && (strcmp(name, "mistral") == 0 || strcmp(name, "gemma3") == 0)) {
        *out = (chat_template){.format = name[0] == 'm' ? CHAT_FORMAT_LLAMA2 : CHAT_FORMAT_GEMMA};
        return VKLLM_OK;
    }
    return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                    "unknown chat template '%s' (known: gemma, llama3, chatml, llama2, plain)",
                    name ? name : "(null)");
}

/* ---------------------------------------------------------------- text building */

typedef struct chat_buf {
    char *s;
    size_t n, cap;
    bool failed;
} chat_buf;

static void chat_put(chat_buf *b, const char *s, size_t len) {
    if (b->failed) return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = (b->n + len + 1) * 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, len);
    b->n += len;
    b->s[b->n] = '\0';
}

static void chat_puts(chat_buf *b, const char *s) {
    chat_put(b, s, strlen(s));
}

/* Length of the whitespace character (Python str.isspace) at s, or 0. */
static size_t chat_space_at(const unsigned char *s, size_t n) {
    if (n >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0D) || (s[0] >= 0x1C && s[0] <= 0x20))) return 1;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n >= 3) {
        unsigned cp = ((s[0] & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        if ((s[0] & 0xF0) == 0xE0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 &&
            (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
             cp == 0x202F || cp == 0x205F || cp == 0x3000))
            return 3;
    }
    return 0;
}

/* Whitespace-trimmed [*start, *start + *len) of s. */
static void chat_trim(const char *s, const char **start, size_t *len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), a = 0, z = n;
    size_t k;
    while (a < z && (k = chat_space_at(u + a, z - a)) > 0)
        a += k;
    /* From the end: step back over whole characters that are whitespace. */
    for (;;) {
        size_t found = 0;
        for (size_t w = 1; w <= 3 && w <= z - a; w++)
            if (chat_space_at(u + z - w, w) == w) {
                found = w;
                break;
            }
        if (!found) break;
        z -= found;
    }
    *start = s + a;
    *len = z - a;
}

static void chat_put_trimmed(chat_buf *b, const char *s) {
    const char *t;
    size_t len;
    chat_trim(s, &t, &len);
    chat_put(b, t, len);
}

static bool chat_is(const char *role, const char *name) {
    return role && strcmp(role, name) == 0;
}

/* The alternation rule of the gemma and llama2 templates over msgs[first..n). */
static vkllm_status chat_check_alternation(const chat_message *msgs, size_t first, size_t n,
                                           const char *format) {
    for (size_t i = first; i < n; i++)
        if (chat_is(msgs[i].role, "user") != ((i - first) % 2 == 0))
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "chat format %s: message %zu has role '%s'; roles must alternate "
                            "user/assistant/user/... after an optional system message",
                            format, i, msgs[i].role ? msgs[i].role : "(null)");
    return VKLLM_OK;
}

static vkllm_status chat_render_gemma(chat_buf *b, const chat_message *msgs, size_t n, bool gen) {
    size_t first = n > 0 && chat_is(msgs[0].role, "system") ? 1 : 0;
    VKL_TRY(chat_check_alternation(msgs, first, n, "gemma"));
    chat_puts(b, "<bos>");
    for (size_t i = first; i < n; i++) {
        chat_puts(b, "<start_of_turn>");
        chat_puts(b, chat_is(msgs[i].role, "assistant") ? "model" : msgs[i].role);
        chat_puts(b, "\n");
        if (i == first && first == 1) {
            chat_puts(b, msgs[0].content);
            chat_puts(b, "\n\n");
        }
        chat_put_trimmed(b, msgs[i].content);
        chat_puts(b, "<end_of_turn>\n");
    }
    if (gen) chat_puts(b, "<start_of_turn>model\n");
    return VKLLM_OK;
}

static void chat_render_llama3(chat_buf *b, const chat_message *msgs, size_t n, bool gen) {
    for (size_t i = 0; i < n; i++) {
        if (i == 0) chat_puts(b, "<|begin_of_text|>");
        chat_puts(b, "<|start_header_id|>");
        chat_puts(b, msgs[i].role);
        chat_puts(b, "<|end_header_id|>\n\n");
        chat_put_trimmed(b, msgs[i].content);
        chat_puts(b, "<|eot_id|>");
    }
    if (gen) chat_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void chat_render_chatml(chat_buf *b, const chat_message *msgs, size_t n, bool gen) {
    for (size_t i = 0; i < n; i++) {
        chat_puts(b, "<|im_start|>");
        chat_puts(b, msgs[i].role);
        chat_puts(b, "\n");
        chat_puts(b, msgs[i].content);
        chat_puts(b, "<|im_end|>\n");
    }
    if (gen) chat_puts(b, "<|im_start|>assistant\n");
}

static vkllm_status chat_render_llama2(chat_buf *b, const chat_message *msgs, size_t n) {
    size_t first = n > 0 && chat_is(msgs[0].role, "system") ? 1 : 0;
    VKL_TRY(chat_check_alternation(msgs, first, n, "llama2"));
    for (size_t i = first; i < n; i++) {
        if (chat_is(msgs[i].role, "user")) {
            chat_puts(b, "<s>[INST] ");
            if (i == first && first == 1) {
                /* strip() applies to the whole "<<SYS>>...user" string: only its end can be
                 * whitespace-trimmed, its start is "<<SYS>>". */
                chat_buf whole = {0};
                chat_puts(&whole, "<<SYS>>\n");
                chat_puts(&whole, msgs[0].content);
                chat_puts(&whole, "\n<</SYS>>\n\n");
                chat_puts(&whole, msgs[i].content);
                if (whole.failed)
                    b->failed = true;
                else
                    chat_put_trimmed(b, whole.s);
                free(whole.s);
            } else {
                chat_put_trimmed(b, msgs[i].content);
            }
            chat_puts(b, " [/INST]");
        } else if (chat_is(msgs[i].role, "assistant")) {
            chat_puts(b, " ");
            chat_put_trimmed(b, msgs[i].content);
            chat_puts(b, " </s>");
        }
    }
    return VKLLM_OK;
}

static void chat_render_plain(chat_buf *b, const chat_message *msgs, size_t n, bool gen) {
    for (size_t i = 0; i < n; i++) {
        chat_puts(b, msgs[i].role);
        chat_puts(b, ": ");
        chat_puts(b, msgs[i].content);
        chat_puts(b, "\n");
    }
    if (gen) chat_puts(b, "assistant:");
}

vkllm_status chat_render(const chat_template *tmpl, const chat_message *msgs, size_t n,
                         bool add_generation_prompt, char **out) {
    *out = NULL;
    if (!tmpl || (!msgs && n > 0))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "chat_render: NULL template or messages");
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "chat_render: message %zu has a NULL %s", i,
                            msgs[i].role ? "content" : "role");
    chat_buf b = {0};
    chat_put(&b, "", 0);
    vkllm_status st = VKLLM_OK;
    switch (tmpl->format) {
    case CHAT_FORMAT_GEMMA:
        st = chat_render_gemma(&b, msgs, n, add_generation_prompt);
        break;
    case CHAT_FORMAT_LLAMA3:
        chat_render_llama3(&b, msgs, n, add_generation_prompt);
        break;
    case CHAT_FORMAT_CHATML:
        chat_render_chatml(&b, msgs, n, add_generation_prompt);
        break;
    case CHAT_FORMAT_LLAMA2:
        st = chat_render_llama2(&b, msgs, n);
        break;
    case CHAT_FORMAT_PLAIN:
        chat_render_plain(&b, msgs, n, add_generation_prompt);
        break;
    default:
        st = vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "chat_render: format %d", (int)tmpl->format);
    }
    if (st == VKLLM_OK && b.failed)
        st = vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "chat_render: out of memory");
    if (st != VKLLM_OK) {
        free(b.s);
        return st;
    }
    *out = b.s;
    return VKLLM_OK;
}
