/* srv_response.c: response and chunk bodies (see srv_response.h). Field order and
 * shapes follow OpenAI's API reference so that its official clients parse them. */
#include "server/srv_response.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is invalid. */
static size_t utf8_sequence(const unsigned char *s, size_t left) {
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80) return c ? 1 : 0;
    if ((c & 0xE0) == 0xC0)
        n = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
        n = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
        n = 4, cp = c & 0x07;
    else
        return 0;
    if (n > left) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

json_t *srv_json_text(const char *s, size_t len) {
    if (!s) return json_string("");
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_sequence(u + i, len - i);
        if (!n) break;
        i += n;
    }
    if (i == len) return json_stringn(s, len);
    /* Slow path: replace each invalid byte (and NUL) with U+FFFD. */
    char *clean = malloc(len * 3 + 1), *w = clean;
    if (!clean) return NULL;
    for (i = 0; i < len;) {
        size_t n = utf8_sequence(u + i, len - i);
        if (n) {
            memcpy(w, s + i, n);
            w += n;
            i += n;
        } else {
            memcpy(w, "\xEF\xBF\xBD", 3);
            w += 3;
            i++;
        }
    }
    json_t *out = json_stringn(clean, (size_t)(w - clean));
    free(clean);
    return out;
}

const char *srv_finish_reason_name(vkllm_finish_reason finish) {
    switch (finish) {
    case VKLLM_FINISH_STOP:
        return "stop";
    case VKLLM_FINISH_LENGTH:
        return "length";
    case VKLLM_FINISH_CANCELLED:
        return "abort"; /* vLLM's name for an aborted request */
    case VKLLM_FINISH_ERROR:
        return "error";
    default:
        return NULL;
    }
}

static json_t *string_or_null(const char *s) {
    return s && *s ? json_string(s) : json_null();
}

json_t *srv_error_json(const srv_error *err) {
    json_t *code = err->code[0] ? json_string(err->code) : json_null();
    return json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message",
                     srv_json_text(err->message, strlen(err->message)), "type", err->type, "param",
                     string_or_null(err->param), "code", code);
}

json_t *srv_usage_json(const srv_usage *usage) {
    return json_pack("{s:I,s:I,s:I,s:{s:I}}", "prompt_tokens", (json_int_t)usage->prompt_tokens,
                     "completion_tokens", (json_int_t)usage->completion_tokens, "total_tokens",
                     (json_int_t)(usage->prompt_tokens + usage->completion_tokens),
                     "prompt_tokens_details", "cached_tokens", (json_int_t)usage->cached_tokens);
}

static double finite_logprob(float lp) {
    return isfinite(lp) ? (double)lp : -9999.0;
}

/* The token's text and, for chat, its bytes. */
static void token_text(const srv_response_ctx *rc, int32_t token, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    if (!rc->token_text || !rc->token_text(rc->token_text_ctx, token, text, len)) {
        *text = NULL;
        *len = 0;
    }
}

static json_t *bytes_json(const char *s, size_t len) {
    json_t *arr = json_array();
    for (size_t i = 0; i < len; i++)
        json_array_append_new(arr, json_integer((unsigned char)s[i]));
    return arr;
}

static json_t *chat_logprob_entry(const srv_response_ctx *rc, int32_t token, float lp) {
    char *t;
    size_t len;
    token_text(rc, token, &t, &len);
    json_t *e = json_pack("{s:o,s:f,s:o}", "token", srv_json_text(t ? t : "", len), "logprob",
                          finite_logprob(lp), "bytes", bytes_json(t, len));
    free(t);
    return e;
}

json_t *srv_logprobs_json(const srv_response_ctx *rc, const int32_t *tokens, size_t n,
                          const vkllm_token_logprob *logprobs, size_t text_offset) {
    uint32_t cols = rc->logprob_cols;
    uint32_t top = rc->top_logprobs < cols ? rc->top_logprobs : (cols ? cols - 1 : 0);
    if (rc->endpoint == SRV_ENDPOINT_CHAT) {
        json_t *content = json_array();
        for (size_t i = 0; i < n; i++) {
            const vkllm_token_logprob *row = logprobs ? logprobs + i * cols : NULL;
            json_t *e = chat_logprob_entry(rc, tokens[i], row ? row[0].logprob : NAN);
            json_t *alts = json_array();
            for (uint32_t k = 0; row && k < top; k++)
                json_array_append_new(alts,
                                      chat_logprob_entry(rc, row[1 + k].token, row[1 + k].logprob));
            json_object_set_new(e, "top_logprobs", alts);
            json_array_append_new(content, e);
        }
        return json_pack("{s:o}", "content", content);
    }
    json_t *strs = json_array(), *lps = json_array(), *tops = json_array(), *offsets = json_array();
    size_t offset = text_offset;
    for (size_t i = 0; i < n; i++) {
        const vkllm_token_logprob *row = logprobs ? logprobs + i * cols : NULL;
        char *t;
        size_t len;
        token_text(rc, tokens[i], &t, &len);
        json_array_append_new(strs, srv_json_text(t ? t : "", len));
        json_array_append_new(lps, json_real(finite_logprob(row ? row[0].logprob : NAN)));
        json_array_append_new(offsets, json_integer((json_int_t)offset));
        offset += len;
        free(t);
        /* A dict from token text to logprob; alternatives whose texts collide keep
         * the first (most likely) one, as a dict can. */
        json_t *alts = json_object();
        for (uint32_t k = 0; row && k < top; k++) {
            char *at;
            size_t alen;
            token_text(rc, row[1 + k].token, &at, &alen);
            json_t *key = srv_json_text(at ? at : "", alen);
            if (key && !json_object_get(alts, json_string_value(key)))
                json_object_set_new(alts, json_string_value(key),
                                    json_real(finite_logprob(row[1 + k].logprob)));
            json_decref(key);
            free(at);
        }
        json_array_append_new(tops, alts);
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", strs, "token_logprobs", lps, "top_logprobs",
                     tops, "text_offset", offsets);
}

static json_t *finish_json(vkllm_finish_reason finish) {
    const char *name = srv_finish_reason_name(finish);
    return name ? json_string(name) : json_null();
}

json_t *srv_build_response(const srv_response_ctx *rc, const srv_choice_result *choices,
                           size_t n_choices, const srv_usage *usage) {
    bool chat = rc->endpoint == SRV_ENDPOINT_CHAT;
    json_t *arr = json_array();
    for (size_t i = 0; i < n_choices; i++) {
        const srv_choice_result *c = &choices[i];
        json_t *lp = rc->want_logprobs
                         ? srv_logprobs_json(rc, c->tokens, c->n_tokens, c->logprobs, c->echo_len)
                         : json_null();
        json_t *choice;
        if (chat)
            choice = json_pack("{s:I,s:{s:s,s:o},s:o,s:o}", "index", (json_int_t)i, "message",
                               "role", "assistant", "content", srv_json_text(c->text, c->text_len),
                               "logprobs", lp, "finish_reason", finish_json(c->finish));
        else
            choice = json_pack("{s:I,s:o,s:o,s:o}", "index", (json_int_t)i, "text",
                               srv_json_text(c->text, c->text_len), "logprobs", lp, "finish_reason",
                               finish_json(c->finish));
        json_array_append_new(arr, choice);
    }
    return json_pack("{s:s,s:s,s:I,s:s,s:o,s:o}", "id", rc->id, "object",
                     chat ? "chat.completion" : "text_completion", "created",
                     (json_int_t)rc->created, "model", rc->model, "choices", arr, "usage",
                     srv_usage_json(usage));
}

json_t *srv_build_chunk(const srv_response_ctx *rc, uint32_t choice, const char *text,
                        size_t text_len, bool role_chunk, const int32_t *tokens, size_t n_tokens,
                        const vkllm_token_logprob *logprobs, size_t text_offset,
                        vkllm_finish_reason finish, bool usage_null) {
    bool chat = rc->endpoint == SRV_ENDPOINT_CHAT;
    json_t *lp = rc->want_logprobs && n_tokens
                     ? srv_logprobs_json(rc, tokens, n_tokens, logprobs, text_offset)
                     : json_null();
    json_t *c;
    if (chat) {
        json_t *delta = json_object();
        if (role_chunk) json_object_set_new(delta, "role", json_string("assistant"));
        if (role_chunk || text_len || finish == VKLLM_FINISH_NONE)
            json_object_set_new(delta, "content", srv_json_text(text, text_len));
        c = json_pack("{s:I,s:o,s:o,s:o}", "index", (json_int_t)choice, "delta", delta, "logprobs",
                      lp, "finish_reason", finish_json(finish));
    } else {
        c = json_pack("{s:I,s:o,s:o,s:o}", "index", (json_int_t)choice, "text",
                      srv_json_text(text, text_len), "logprobs", lp, "finish_reason",
                      finish_json(finish));
    }
    json_t *chunk = json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", rc->id, "object",
                              chat ? "chat.completion.chunk" : "text_completion", "created",
                              (json_int_t)rc->created, "model", rc->model, "choices", c);
    if (chunk && usage_null) json_object_set_new(chunk, "usage", json_null());
    return chunk;
}

json_t *srv_build_usage_chunk(const srv_response_ctx *rc, const srv_usage *usage) {
    bool chat = rc->endpoint == SRV_ENDPOINT_CHAT;
    return json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", rc->id, "object",
                     chat ? "chat.completion.chunk" : "text_completion", "created",
                     (json_int_t)rc->created, "model", rc->model, "choices", "usage",
                     srv_usage_json(usage));
}

json_t *srv_build_models(const char *model, long long created, uint32_t max_model_len) {
    return json_pack("{s:s,s:[{s:s,s:s,s:I,s:s,s:I}]}", "object", "list", "data", "id", model,
                     "object", "model", "created", (json_int_t)created, "owned_by", "vkllm",
                     "max_model_len", (json_int_t)max_model_len);
}

char *srv_json_dump_free(json_t *value) {
    if (!value) return NULL;
    char *s = json_dumps(value, JSON_COMPACT);
    json_decref(value);
    return s;
}
