/* srv_request.c: validation of OpenAI-style request bodies (see srv_request.h).
 *
 * Every field goes through one typed getter that treats null as absent and reports
 * the field's name on a type or range error, so each parameter is checked in one
 * line. Bounds follow the OpenAI API reference; vLLM's extensions (top_k, min_p,
 * repetition_penalty, ignore_eos, stop_token_ids) are accepted too. */
#include "server/srv_request.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool srv_error_set(srv_error *err, int http_status, const char *param, const char *code,
                   const char *fmt, ...) {
    err->http_status = http_status;
    snprintf(err->type, sizeof err->type, "%s",
             http_status >= 500 ? "server_error" : "invalid_request_error");
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return false;
}

/* ---------------------------------------------------------------- typed getters */

/* The member, or NULL when absent or null. */
static json_t *member(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static bool bad_param(srv_error *err, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool bad_param(srv_error *err, const char *key, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return srv_error_set(err, 400, key, NULL, "'%s': %s", key, msg);
}

/* Present and valid: true with *present set; absent: true with *present false. */
static bool get_number(json_t *obj, const char *key, double lo, double hi, double *out,
                       bool *present, srv_error *err) {
    json_t *v = member(obj, key);
    *present = v != NULL;
    if (!v) return true;
    if (!json_is_number(v)) return bad_param(err, key, "must be a number");
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return bad_param(err, key, "%g is out of range [%g, %g]", x, lo, hi);
    *out = x;
    return true;
}

static bool get_integer(json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                        bool *present, srv_error *err) {
    json_t *v = member(obj, key);
    *present = v != NULL;
    if (!v) return true;
    int64_t x;
    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e18) {
        x = (int64_t)json_real_value(v);
    } else {
        return bad_param(err, key, "must be an integer");
    }
    if (x < lo || x > hi)
        return bad_param(err, key, "%lld is out of range [%lld, %lld]", (long long)x, (long long)lo,
                         (long long)hi);
    *out = x;
    return true;
}

static bool get_bool(json_t *obj, const char *key, bool *out, bool *present, srv_error *err) {
    json_t *v = member(obj, key);
    *present = v != NULL;
    if (!v) return true;
    if (!json_is_boolean(v)) return bad_param(err, key, "must be a boolean");
    *out = json_is_true(v);
    return true;
}

/* A malloc'ed copy of a string member (NULL when absent). */
static bool get_string(json_t *obj, const char *key, char **out, srv_error *err) {
    json_t *v = member(obj, key);
    *out = NULL;
    if (!v) return true;
    if (!json_is_string(v)) return bad_param(err, key, "must be a string");
    *out = strndup(json_string_value(v), json_string_length(v));
    return *out != NULL || srv_error_set(err, 500, NULL, NULL, "out of memory");
}

static json_t *load_object(const char *body, size_t len, srv_error *err) {
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        srv_error_set(err, 400, NULL, NULL, "malformed JSON body at line %d column %d: %s",
                      jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        srv_error_set(err, 400, NULL, NULL, "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

/* ---------------------------------------------------------------- prompts */

static bool token_array(json_t *arr, const char *param, int32_t **tokens, size_t *n,
                        srv_error *err) {
    size_t count = json_array_size(arr);
    if (count == 0) return bad_param(err, param, "a token list must not be empty");
    int32_t *t = malloc(count * sizeof *t);
    if (!t) return srv_error_set(err, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < count; i++) {
        json_t *e = json_array_get(arr, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT32_MAX) {
            free(t);
            return bad_param(err, param, "element %zu must be a non-negative token id", i);
        }
        t[i] = (int32_t)json_integer_value(e);
    }
    *tokens = t;
    *n = count;
    return true;
}

/* prompt: a string, an array of strings, an array of token ids, or an array of
 * token-id arrays. */
static bool parse_prompts(json_t *root, srv_gen_request *out, srv_error *err) {
    json_t *p = member(root, "prompt");
    if (!p) return srv_error_set(err, 400, "prompt", NULL, "'prompt' is required");
    if (json_is_string(p)) {
        if (json_string_length(p) == 0) return bad_param(err, "prompt", "must not be empty");
        out->prompts = calloc(1, sizeof *out->prompts);
        if (!out->prompts) return srv_error_set(err, 500, NULL, NULL, "out of memory");
        out->n_prompts = 1;
        out->prompts[0].text_len = json_string_length(p);
        out->prompts[0].text = strndup(json_string_value(p), json_string_length(p));
        return out->prompts[0].text != NULL;
    }
    if (!json_is_array(p))
        return bad_param(err, "prompt", "must be a string, an array of strings or token ids");
    size_t count = json_array_size(p);
    if (count == 0) return bad_param(err, "prompt", "must not be empty");
    json_t *first = json_array_get(p, 0);
    if (json_is_integer(first)) { /* one prompt of token ids */
        out->prompts = calloc(1, sizeof *out->prompts);
        if (!out->prompts) return srv_error_set(err, 500, NULL, NULL, "out of memory");
        out->n_prompts = 1;
        return token_array(p, "prompt", &out->prompts[0].tokens, &out->prompts[0].n_tokens, err);
    }
    if (count > SRV_MAX_PROMPTS)
        return bad_param(err, "prompt", "at most %d prompts per request, got %zu", SRV_MAX_PROMPTS,
                         count);
    out->prompts = calloc(count, sizeof *out->prompts);
    if (!out->prompts) return srv_error_set(err, 500, NULL, NULL, "out of memory");
    out->n_prompts = count;
    for (size_t i = 0; i < count; i++) {
        json_t *e = json_array_get(p, i);
        srv_prompt *sp = &out->prompts[i];
        if (json_is_string(e)) {
            if (json_string_length(e) == 0)
                return bad_param(err, "prompt", "prompt %zu must not be empty", i);
            sp->text_len = json_string_length(e);
            sp->text = strndup(json_string_value(e), sp->text_len);
            if (!sp->text) return srv_error_set(err, 500, NULL, NULL, "out of memory");
        } else if (json_is_array(e)) {
            if (!token_array(e, "prompt", &sp->tokens, &sp->n_tokens, err)) return false;
        } else {
            return bad_param(err, "prompt", "element %zu must be a string or a token-id array", i);
        }
    }
    return true;
}

/* ---------------------------------------------------------------- chat messages */

/* content: a string, or an array of {"type": "text", "text": ...} parts joined by
 * newlines; null only for an assistant turn. */
static bool message_content(json_t *content, size_t index, bool may_be_null, char **out,
                            srv_error *err) {
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", index);
    if (!content || json_is_null(content)) {
        if (!may_be_null) return bad_param(err, param, "is required");
        *out = strdup("");
        return *out != NULL;
    }
    if (json_is_string(content)) {
        *out = strndup(json_string_value(content), json_string_length(content));
        return *out != NULL;
    }
    if (!json_is_array(content))
        return bad_param(err, param, "must be a string or an array of text parts");
    size_t total = 0, i;
    json_t *part;
    json_array_foreach(content, i, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type) ||
            strcmp(json_string_value(type), "text") || !json_is_string(text))
            return bad_param(err, param,
                             "part %zu: only {\"type\": \"text\", \"text\": ...} "
                             "parts are supported",
                             i);
        total += json_string_length(text) + 1;
    }
    char *s = malloc(total + 1), *w = s;
    if (!s) return srv_error_set(err, 500, NULL, NULL, "out of memory");
    json_array_foreach(content, i, part) {
        json_t *text = json_object_get(part, "text");
        if (i) *w++ = '\n';
        memcpy(w, json_string_value(text), json_string_length(text));
        w += json_string_length(text);
    }
    *w = 0;
    *out = s;
    return true;
}

static bool parse_messages(json_t *root, vkllm_chat_message **messages, size_t *n_messages,
                           srv_error *err) {
    json_t *m = member(root, "messages");
    if (!m) return srv_error_set(err, 400, "messages", NULL, "'messages' is required");
    if (!json_is_array(m) || json_array_size(m) == 0)
        return bad_param(err, "messages", "must be a non-empty array of messages");
    size_t count = json_array_size(m);
    vkllm_chat_message *msgs = calloc(count, sizeof *msgs);
    if (!msgs) return srv_error_set(err, 500, NULL, NULL, "out of memory");
    *messages = msgs;
    *n_messages = count;
    for (size_t i = 0; i < count; i++) {
        json_t *e = json_array_get(m, i);
        char param[64];
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!json_is_object(e)) {
            snprintf(param, sizeof param, "messages[%zu]", i);
            return bad_param(err, param, "must be an object with role and content");
        }
        json_t *role = json_object_get(e, "role");
        if (!json_is_string(role)) return bad_param(err, param, "must be a string");
        const char *r = json_string_value(role);
        /* "developer" is OpenAI's newer name for the system role. */
        const char *canonical = !strcmp(r, "system") || !strcmp(r, "developer") ? "system"
                                : !strcmp(r, "user")                            ? "user"
                                : !strcmp(r, "assistant")                       ? "assistant"
                                                                                : NULL;
        if (!canonical)
            return bad_param(err, param,
                             "'%s' is not supported (system, developer, user, assistant)", r);
        msgs[i].role = strdup(canonical);
        if (!msgs[i].role) return srv_error_set(err, 500, NULL, NULL, "out of memory");
        char *content = NULL;
        if (!message_content(json_object_get(e, "content"), i, !strcmp(canonical, "assistant"),
                             &content, err))
            return false;
        msgs[i].content = content;
    }
    return true;
}

static void free_messages(vkllm_chat_message *msgs, size_t n) {
    if (!msgs) return;
    for (size_t i = 0; i < n; i++) {
        free((char *)msgs[i].role);
        free((char *)msgs[i].content);
    }
    free(msgs);
}

/* ---------------------------------------------------------------- sampling */

static bool parse_stop(json_t *root, srv_gen_request *out, srv_error *err) {
    json_t *s = member(root, "stop");
    if (!s) return true;
    size_t count = json_is_string(s) ? 1 : json_is_array(s) ? json_array_size(s) : 0;
    if (!json_is_string(s) && !json_is_array(s))
        return bad_param(err, "stop", "must be a string or an array of strings");
    if (count > SRV_MAX_STOP)
        return bad_param(err, "stop", "at most %d stop strings, got %zu", SRV_MAX_STOP, count);
    if (count == 0) return true;
    out->stop_strings = calloc(count, sizeof *out->stop_strings);
    if (!out->stop_strings) return srv_error_set(err, 500, NULL, NULL, "out of memory");
    out->sampling.n_stop = (uint32_t)count;
    out->sampling.stop = (const char *const *)out->stop_strings;
    for (size_t i = 0; i < count; i++) {
        json_t *e = json_is_string(s) ? s : json_array_get(s, i);
        if (!json_is_string(e)) return bad_param(err, "stop", "element %zu must be a string", i);
        if (json_string_length(e) == 0)
            return bad_param(err, "stop", "stop strings must not be empty");
        if (strlen(json_string_value(e)) != json_string_length(e))
            return bad_param(err, "stop", "stop strings must not contain NUL");
        out->stop_strings[i] = strdup(json_string_value(e));
        if (!out->stop_strings[i]) return srv_error_set(err, 500, NULL, NULL, "out of memory");
    }
    return true;
}

static bool parse_sampling(json_t *root, srv_gen_request *out, srv_error *err) {
    vkllm_sampling *s = &out->sampling;
    double d = 0;
    int64_t i = 0;
    bool b = false, present = false;

    if (!get_number(root, "temperature", 0, 2, &d, &present, err)) return false;
    if (present) s->temperature = (float)d;
    if (!get_number(root, "top_p", 0, 1, &d, &present, err)) return false;
    if (present) {
        if (d <= 0) return bad_param(err, "top_p", "must be in (0, 1]");
        s->top_p = (float)d;
    }
    if (!get_integer(root, "top_k", -1, INT32_MAX, &i, &present, err)) return false;
    if (present) s->top_k = i <= 0 ? 0 : (int32_t)i;
    if (!get_number(root, "min_p", 0, 1, &d, &present, err)) return false;
    if (present) s->min_p = (float)d;
    if (!get_number(root, "presence_penalty", -2, 2, &d, &present, err)) return false;
    if (present) s->presence_penalty = (float)d;
    if (!get_number(root, "frequency_penalty", -2, 2, &d, &present, err)) return false;
    if (present) s->frequency_penalty = (float)d;
    if (!get_number(root, "repetition_penalty", 1e-6, 100, &d, &present, err)) return false;
    if (present) s->repetition_penalty = (float)d;
    if (!get_integer(root, "seed", INT64_MIN, INT64_MAX, &i, &present, err)) return false;
    if (present) {
        s->seed = (uint64_t)i;
        s->has_seed = true;
    }
    if (!get_integer(root, "n", 1, SRV_MAX_N, &i, &present, err)) return false;
    if (present) s->n = (uint32_t)i;
    if (!get_bool(root, "ignore_eos", &b, &present, err)) return false;
    if (present) s->ignore_eos = b;

    /* max_completion_tokens is the newer name; it wins when both are given. */
    int64_t max_tokens = 0;
    bool have_max = false;
    if (!get_integer(root, "max_tokens", 1, UINT32_MAX, &i, &present, err)) return false;
    if (present) max_tokens = i, have_max = true;
    if (!get_integer(root, "max_completion_tokens", 1, UINT32_MAX, &i, &present, err)) return false;
    if (present) max_tokens = i, have_max = true;
    if (have_max) s->max_tokens = (uint32_t)max_tokens;
    out->max_tokens_given = have_max;

    if (!parse_stop(root, out, err)) return false;
    json_t *ids = member(root, "stop_token_ids");
    if (ids) {
        if (!json_is_array(ids)) return bad_param(err, "stop_token_ids", "must be an array");
        size_t n_ids;
        if (json_array_size(ids) > 0) {
            if (!token_array(ids, "stop_token_ids", &out->stop_token_ids, &n_ids, err))
                return false;
            s->stop_token_ids = out->stop_token_ids;
            s->n_stop_token_ids = (uint32_t)n_ids;
        }
    }
    return true;
}

/* completions: logprobs is an integer (alternatives per token); chat: logprobs is a
 * boolean and top_logprobs the count, which needs logprobs true. */
static bool parse_logprobs(json_t *root, srv_gen_request *out, srv_error *err) {
    int64_t i = 0;
    bool b = false, present = false;
    if (out->endpoint == SRV_ENDPOINT_COMPLETIONS) {
        if (!get_integer(root, "logprobs", 0, SRV_MAX_LOGPROBS, &i, &present, err)) return false;
        out->want_logprobs = present;
        out->top_logprobs = present ? (uint32_t)i : 0;
        return true;
    }
    if (!get_bool(root, "logprobs", &b, &present, err)) return false;
    out->want_logprobs = present && b;
    if (!get_integer(root, "top_logprobs", 0, SRV_MAX_LOGPROBS, &i, &present, err)) return false;
    if (present) {
        if (!out->want_logprobs)
            return bad_param(err, "top_logprobs", "needs 'logprobs' set to true");
        out->top_logprobs = (uint32_t)i;
    }
    return true;
}

bool srv_parse_generation(srv_endpoint endpoint, const char *body, size_t len, srv_gen_request *out,
                          srv_error *err) {
    memset(out, 0, sizeof *out);
    out->endpoint = endpoint;
    /* OpenAI's defaults (not the engine's): the API promises them to clients.
     * Completions default to 16 tokens; chat's default is set by the server. */
    vkllm_sampling *s = &out->sampling;
    s->temperature = 1.0f;
    s->top_p = 1.0f;
    s->repetition_penalty = 1.0f;
    s->length_penalty = 1.0f;
    s->n = 1;
    s->max_tokens = 16;

    json_t *root = load_object(body, len, err);
    if (!root) return false;
    bool ok = false, present = false;
    if (!get_string(root, "model", &out->model, err)) goto done;
    if (!get_string(root, "user", &out->user, err)) goto done;
    if (endpoint == SRV_ENDPOINT_COMPLETIONS) {
        if (!parse_prompts(root, out, err)) goto done;
        if (!get_bool(root, "echo", &out->echo, &present, err)) goto done;
    } else {
        if (!parse_messages(root, &out->messages, &out->n_messages, err)) goto done;
    }
    if (!parse_sampling(root, out, err)) goto done;
    if (!parse_logprobs(root, out, err)) goto done;
    if (out->echo && out->want_logprobs) {
        bad_param(err, "echo", "echo together with logprobs is not supported");
        goto done;
    }
    if (!get_bool(root, "stream", &out->stream, &present, err)) goto done;
    json_t *so = member(root, "stream_options");
    if (so) {
        if (!out->stream) {
            bad_param(err, "stream_options", "is only allowed when 'stream' is true");
            goto done;
        }
        if (!json_is_object(so)) {
            bad_param(err, "stream_options", "must be an object");
            goto done;
        }
        json_t *iu = member(so, "include_usage");
        if (iu && !json_is_boolean(iu)) {
            bad_param(err, "stream_options.include_usage", "must be a boolean");
            goto done;
        }
        out->include_usage = iu && json_is_true(iu);
    }
    /* The engine reports logprobs of the chosen token as column 0 and top-N after
     * it, so asking for any logprobs needs at least one column. */
    if (out->want_logprobs) out->sampling.logprobs = out->top_logprobs > 0 ? out->top_logprobs : 1;
    ok = true;
done:
    json_decref(root);
    if (!ok) srv_gen_request_free(out);
    return ok;
}

void srv_gen_request_free(srv_gen_request *req) {
    if (!req) return;
    free(req->model);
    free(req->user);
    for (size_t i = 0; i < req->n_prompts; i++) {
        free(req->prompts[i].text);
        free(req->prompts[i].tokens);
    }
    free(req->prompts);
    free_messages(req->messages, req->n_messages);
    if (req->stop_strings)
        for (uint32_t i = 0; i < req->sampling.n_stop; i++)
            free(req->stop_strings[i]);
    free(req->stop_strings);
    free(req->stop_token_ids);
    memset(req, 0, sizeof *req);
}

/* ---------------------------------------------------------------- tokenizer endpoints */

bool srv_parse_tokenize(const char *body, size_t len, srv_tokenize_request *out, srv_error *err) {
    memset(out, 0, sizeof *out);
    json_t *root = load_object(body, len, err);
    if (!root) return false;
    bool ok = false, present = false, b = false;
    json_t *prompt = member(root, "prompt");
    json_t *messages = member(root, "messages");
    if ((prompt != NULL) == (messages != NULL)) {
        srv_error_set(err, 400, "prompt", NULL,
                      "exactly one of 'prompt' and 'messages' is "
                      "required");
        goto done;
    }
    if (prompt) {
        if (!json_is_string(prompt)) {
            bad_param(err, "prompt", "must be a string");
            goto done;
        }
        out->prompt_len = json_string_length(prompt);
        out->prompt = strndup(json_string_value(prompt), out->prompt_len);
        out->add_special_tokens = true;
    } else {
        if (!parse_messages(root, &out->messages, &out->n_messages, err)) goto done;
        out->add_generation_prompt = true;
    }
    if (!get_bool(root, "add_special_tokens", &b, &present, err)) goto done;
    if (present) out->add_special_tokens = b;
    if (!get_bool(root, "add_generation_prompt", &b, &present, err)) goto done;
    if (present) out->add_generation_prompt = b;
    if (!get_bool(root, "return_token_strs", &b, &present, err)) goto done;
    if (present) out->return_token_strs = b;
    ok = true;
done:
    json_decref(root);
    if (!ok) srv_tokenize_request_free(out);
    return ok;
}

void srv_tokenize_request_free(srv_tokenize_request *req) {
    free(req->prompt);
    free_messages(req->messages, req->n_messages);
    memset(req, 0, sizeof *req);
}

bool srv_parse_detokenize(const char *body, size_t len, int32_t **tokens, size_t *n_tokens,
                          srv_error *err) {
    *tokens = NULL;
    *n_tokens = 0;
    json_t *root = load_object(body, len, err);
    if (!root) return false;
    bool ok = false;
    json_t *t = member(root, "tokens");
    if (!t) {
        srv_error_set(err, 400, "tokens", NULL, "'tokens' is required");
    } else if (!json_is_array(t)) {
        bad_param(err, "tokens", "must be an array of token ids");
    } else if (json_array_size(t) == 0) {
        *tokens = malloc(sizeof **tokens); /* an empty list detokenizes to "" */
        ok = *tokens != NULL;
    } else {
        ok = token_array(t, "tokens", tokens, n_tokens, err);
    }
    json_decref(root);
    return ok;
}

bool srv_check_token_ids(const int32_t *tokens, size_t n, uint32_t n_vocab, const char *param,
                         srv_error *err) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= n_vocab)
            return bad_param(err, param,
                             "token id %d at position %zu is outside the "
                             "vocabulary [0, %u)",
                             tokens[i], i, n_vocab);
    return true;
}
