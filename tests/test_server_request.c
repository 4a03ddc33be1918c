/* test_server_request.c: OpenAI request validation (srv_request.c) and response
 * building (srv_response.c) without an engine: every parameter maps to its engine
 * field, every invalid value is a 400 naming its parameter, and the response shapes
 * (logprobs in both OpenAI forms, chunks, usage, errors) carry exact values. */
// links: server common
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_request.h"
#include "server/srv_response.h"

static bool parse(srv_endpoint ep, const char *body, srv_gen_request *req, srv_error *err) {
    return srv_parse_generation(ep, body, strlen(body), req, err);
}

Test(server_request, completion_defaults_are_openai_defaults) {
    srv_gen_request r;
    srv_error e;
    cr_assert(parse(SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"Hi\"}", &r, &e), "%s", e.message);
    cr_assert_eq(r.n_prompts, 1);
    cr_assert_str_eq(r.prompts[0].text, "Hi");
    cr_assert_eq(r.prompts[0].text_len, 2);
    cr_assert_float_eq(r.sampling.temperature, 1.0f, 0);
    cr_assert_float_eq(r.sampling.top_p, 1.0f, 0);
    cr_assert_eq(r.sampling.top_k, 0);
    cr_assert_eq(r.sampling.max_tokens, 16);
    cr_assert_eq(r.sampling.n, 1);
    cr_assert_not(r.max_tokens_given);
    cr_assert_not(r.sampling.has_seed);
    cr_assert_eq(r.sampling.logprobs, 0);
    cr_assert_not(r.stream);
    cr_assert_null(r.model);
    srv_gen_request_free(&r);
}

Test(server_request, every_completion_parameter_maps) {
    const char *body =
        "{\"model\": \"m\", \"prompt\": \"abc\", \"max_tokens\": 7, \"temperature\": 0.5,"
        " \"top_p\": 0.9, \"top_k\": 40, \"min_p\": 0.05, \"n\": 3, \"stop\": [\"x\", \"yz\"],"
        " \"seed\": -1, \"presence_penalty\": 0.25, \"frequency_penalty\": -1.5,"
        " \"repetition_penalty\": 1.1, \"logprobs\": 4, \"user\": \"u1\", \"stream\": true,"
        " \"stream_options\": {\"include_usage\": true}, \"ignore_eos\": true,"
        " \"stop_token_ids\": [5, 6], \"some_future_field\": {\"x\": [1]}}";
    srv_gen_request r;
    srv_error e;
    cr_assert(parse(SRV_ENDPOINT_COMPLETIONS, body, &r, &e), "%s", e.message);
    cr_assert_str_eq(r.model, "m");
    cr_assert_str_eq(r.user, "u1");
    cr_assert_eq(r.sampling.max_tokens, 7);
    cr_assert(r.max_tokens_given);
    cr_assert_float_eq(r.sampling.temperature, 0.5f, 0);
    cr_assert_float_eq(r.sampling.top_p, 0.9f, 1e-7);
    cr_assert_eq(r.sampling.top_k, 40);
    cr_assert_float_eq(r.sampling.min_p, 0.05f, 1e-7);
    cr_assert_eq(r.sampling.n, 3);
    cr_assert_eq(r.sampling.n_stop, 2);
    cr_assert_str_eq(r.sampling.stop[0], "x");
    cr_assert_str_eq(r.sampling.stop[1], "yz");
    cr_assert(r.sampling.has_seed);
    cr_assert_eq(r.sampling.seed, UINT64_MAX); /* -1 as an unsigned 64-bit seed */
    cr_assert_float_eq(r.sampling.presence_penalty, 0.25f, 0);
    cr_assert_float_eq(r.sampling.frequency_penalty, -1.5f, 0);
    cr_assert_float_eq(r.sampling.repetition_penalty, 1.1f, 1e-7);
    cr_assert(r.want_logprobs);
    cr_assert_eq(r.top_logprobs, 4);
    cr_assert_eq(r.sampling.logprobs, 4);
    cr_assert(r.stream);
    cr_assert(r.include_usage);
    cr_assert(r.sampling.ignore_eos);
    cr_assert_eq(r.sampling.n_stop_token_ids, 2);
    cr_assert_eq(r.sampling.stop_token_ids[1], 6);
    srv_gen_request_free(&r);
}

Test(server_request, logprobs_zero_still_asks_the_engine_for_the_chosen_token) {
    srv_gen_request r;
    srv_error e;
    cr_assert(parse(SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"logprobs\": 0}", &r, &e));
    cr_assert(r.want_logprobs);
    cr_assert_eq(r.top_logprobs, 0);
    cr_assert_eq(r.sampling.logprobs, 1);
    srv_gen_request_free(&r);
}

Test(server_request, max_completion_tokens_wins_and_stop_string_alone) {
    srv_gen_request r;
    srv_error e;
    cr_assert(parse(SRV_ENDPOINT_CHAT,
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"max_tokens\": 5,"
                    " \"max_completion_tokens\": 9, \"stop\": \"END\", \"temperature\": null}",
                    &r, &e),
              "%s", e.message);
    cr_assert_eq(r.sampling.max_tokens, 9);
    cr_assert_eq(r.sampling.n_stop, 1);
    cr_assert_str_eq(r.sampling.stop[0], "END");
    cr_assert_float_eq(r.sampling.temperature, 1.0f, 0, "null means absent");
    srv_gen_request_free(&r);
}

Test(server_request, prompt_forms) {
    srv_gen_request r;
    srv_error e;
    cr_assert(parse(SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": [1, 2, 300]}", &r, &e), "%s",
              e.message);
    cr_assert_eq(r.n_prompts, 1);
    cr_assert_null(r.prompts[0].text);
    cr_assert_eq(r.prompts[0].n_tokens, 3);
    cr_assert_eq(r.prompts[0].tokens[2], 300);
    srv_gen_request_free(&r);

    cr_assert(parse(SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": [\"a\", \"bc\"]}", &r, &e));
    cr_assert_eq(r.n_prompts, 2);
    cr_assert_str_eq(r.prompts[1].text, "bc");
    srv_gen_request_free(&r);

    cr_assert(parse(SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": [[7], [8, 9]]}", &r, &e));
    cr_assert_eq(r.n_prompts, 2);
    cr_assert_eq(r.prompts[1].n_tokens, 2);
    cr_assert_eq(r.prompts[1].tokens[0], 8);
    srv_gen_request_free(&r);

    /* prompts reach the engine as C strings, so an escaped NUL is refused */
    cr_assert_not(parse(SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\\u0000b\"}", &r, &e));
    cr_assert_eq(e.http_status, 400);
}

Test(server_request, chat_messages) {
    srv_gen_request r;
    srv_error e;
    cr_assert(parse(SRV_ENDPOINT_CHAT,
                    "{\"messages\": [{\"role\": \"developer\", \"content\": \"be brief\"},"
                    " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"},"
                    " {\"type\": \"text\", \"text\": \"b\"}]},"
                    " {\"role\": \"assistant\", \"content\": null},"
                    " {\"role\": \"user\", \"content\": \"c\", \"name\": \"ignored\"}],"
                    " \"logprobs\": true, \"top_logprobs\": 2}",
                    &r, &e),
              "%s", e.message);
    cr_assert_eq(r.n_messages, 4);
    cr_assert_str_eq(r.messages[0].role, "system");
    cr_assert_str_eq(r.messages[1].content, "a\nb");
    cr_assert_str_eq(r.messages[2].role, "assistant");
    cr_assert_str_eq(r.messages[2].content, "");
    cr_assert_str_eq(r.messages[3].content, "c");
    cr_assert(r.want_logprobs);
    cr_assert_eq(r.top_logprobs, 2);
    cr_assert_eq(r.sampling.logprobs, 2);
    srv_gen_request_free(&r);

    cr_assert(parse(SRV_ENDPOINT_CHAT,
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": "
                    "false}",
                    &r, &e));
    cr_assert_not(r.want_logprobs);
    cr_assert_eq(r.sampling.logprobs, 0);
    srv_gen_request_free(&r);
}

/* Each invalid body must give HTTP 400 naming exactly this parameter. */
static const struct {
    srv_endpoint ep;
    const char *body, *param;
} invalid[] = {
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"temperature\": -0.1}", "temperature"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"temperature\": 2.5}", "temperature"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"temperature\": \"hot\"}", "temperature"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"top_p\": 0}", "top_p"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"top_p\": 1.01}", "top_p"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"top_k\": -2}", "top_k"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"top_k\": 1.5}", "top_k"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"min_p\": 1.5}", "min_p"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"n\": 0}", "n"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"n\": 1000}", "n"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"max_tokens\": 0}", "max_tokens"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"max_tokens\": \"9\"}", "max_tokens"},
    {SRV_ENDPOINT_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}],"
     " \"max_completion_tokens\": -3}",
     "max_completion_tokens"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"stop\": 5}", "stop"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"stop\": [\"\"]}", "stop"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"stop\": [\"x\", 1]}", "stop"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"seed\": \"x\"}", "seed"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"presence_penalty\": 3}", "presence_penalty"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"frequency_penalty\": -2.1}",
     "frequency_penalty"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"logprobs\": 21}", "logprobs"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"logprobs\": true}", "logprobs"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"echo\": 1}", "echo"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"echo\": true, \"logprobs\": 1}", "echo"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"stream\": \"yes\"}", "stream"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"stream_options\": {}}", "stream_options"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"stream\": true, \"stream_options\": 1}",
     "stream_options"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"model\": 3}", "model"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"user\": []}", "user"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\", \"stop_token_ids\": [-1]}", "stop_token_ids"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"max_tokens\": 3}", "prompt"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"\"}", "prompt"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": []}", "prompt"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": [1, -1]}", "prompt"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": [1, \"a\"]}", "prompt"},
    {SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": {\"a\": 1}}", "prompt"},
    {SRV_ENDPOINT_CHAT, "{\"max_tokens\": 3}", "messages"},
    {SRV_ENDPOINT_CHAT, "{\"messages\": []}", "messages"},
    {SRV_ENDPOINT_CHAT, "{\"messages\": [\"hi\"]}", "messages[0]"},
    {SRV_ENDPOINT_CHAT, "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}",
     "messages[0].role"},
    {SRV_ENDPOINT_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"},"
     " {\"role\": \"user\"}]}",
     "messages[1].content"},
    {SRV_ENDPOINT_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": "
     "\"image_url\", \"image_url\": {}}]}]}",
     "messages[0].content"},
    {SRV_ENDPOINT_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}],"
     " \"top_logprobs\": 2}",
     "top_logprobs"},
    {SRV_ENDPOINT_CHAT,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}],"
     " \"logprobs\": true, \"top_logprobs\": 21}",
     "top_logprobs"},
};

Test(server_request, invalid_parameters_are_400_naming_the_parameter) {
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        srv_gen_request r;
        srv_error e;
        memset(&e, 0, sizeof e);
        cr_assert_not(parse(invalid[i].ep, invalid[i].body, &r, &e), "accepted: %s",
                      invalid[i].body);
        cr_assert_eq(e.http_status, 400, "%s -> %d", invalid[i].body, e.http_status);
        cr_assert_str_eq(e.param, invalid[i].param, "%s: param '%s' (%s)", invalid[i].body, e.param,
                         e.message);
        cr_assert_str_eq(e.type, "invalid_request_error");
        cr_assert(strstr(e.message, invalid[i].param), "message '%s' does not name %s", e.message,
                  invalid[i].param);
    }
}

Test(server_request, malformed_json_is_400) {
    static const char *bodies[] = {"",       "{",        "{\"prompt\": \"a\",}",
                                   "[1, 2]", "\"text\"", "{\"prompt\": \"a\", \"prompt\": \"b\"}"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        srv_gen_request r;
        srv_error e;
        cr_assert_not(parse(SRV_ENDPOINT_COMPLETIONS, bodies[i], &r, &e), "accepted '%s'",
                      bodies[i]);
        cr_assert_eq(e.http_status, 400);
        cr_assert_str_eq(e.param, "");
    }
    srv_gen_request r;
    srv_error e;
    cr_assert_not(parse(SRV_ENDPOINT_COMPLETIONS, "{\"prompt\": \"a\",}", &r, &e));
    cr_assert(strstr(e.message, "malformed JSON") && strstr(e.message, "column"), "%s", e.message);
}

Test(server_request, tokenize_and_detokenize_bodies) {
    srv_tokenize_request t;
    srv_error e;
    const char *b1 = "{\"prompt\": \"hello\", \"add_special_tokens\": false}";
    cr_assert(srv_parse_tokenize(b1, strlen(b1), &t, &e), "%s", e.message);
    cr_assert_str_eq(t.prompt, "hello");
    cr_assert_not(t.add_special_tokens);
    srv_tokenize_request_free(&t);
    const char *b2 = "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}";
    cr_assert(srv_parse_tokenize(b2, strlen(b2), &t, &e), "%s", e.message);
    cr_assert_eq(t.n_messages, 1);
    cr_assert_not(t.add_special_tokens, "vLLM's default for messages");
    cr_assert(t.add_generation_prompt);
    srv_tokenize_request_free(&t);
    const char *b3 = "{\"prompt\": \"a\", \"messages\": []}";
    cr_assert_not(srv_parse_tokenize(b3, strlen(b3), &t, &e));
    cr_assert_eq(e.http_status, 400);

    int32_t *tok;
    size_t n;
    const char *d1 = "{\"tokens\": [3, 1, 2]}";
    cr_assert(srv_parse_detokenize(d1, strlen(d1), &tok, &n, &e));
    cr_assert_eq(n, 3);
    cr_assert_eq(tok[0], 3);
    cr_assert_not(srv_check_token_ids(tok, n, 3, "tokens", &e), "id 3 is outside vocab 3");
    cr_assert_str_eq(e.param, "tokens");
    cr_assert(srv_check_token_ids(tok, n, 4, "tokens", &e));
    free(tok);
    const char *d2 = "{\"tokens\": \"3\"}";
    cr_assert_not(srv_parse_detokenize(d2, strlen(d2), &tok, &n, &e));
    cr_assert_str_eq(e.param, "tokens");
}

/* ---------------------------------------------------------------- responses */

/* Token id t reads "<t>" except 9, which is a lone UTF-8 lead byte. */
static bool fake_token_text(void *ctx, int32_t token, char **text, size_t *len) {
    char buf[32];
    if (token == 9)
        snprintf(buf, sizeof buf, "\xE2");
    else
        snprintf(buf, sizeof buf, "<%d>", token);
    *text = strdup(buf);
    *len = strlen(buf);
    return true;
}

static json_t *roundtrip(json_t *v) {
    char *s = srv_json_dump_free(v);
    cr_assert(s);
    json_error_t je;
    json_t *back = json_loads(s, 0, &je);
    cr_assert(back, "invalid JSON produced: %s", s);
    free(s);
    return back;
}

Test(server_response, error_object_shape) {
    srv_error e;
    srv_error_set(&e, 400, "temperature", NULL, "bad %s", "value");
    json_t *j = roundtrip(srv_error_json(&e));
    json_t *err = json_object_get(j, "error");
    cr_assert_str_eq(json_string_value(json_object_get(err, "message")), "bad value");
    cr_assert_str_eq(json_string_value(json_object_get(err, "type")), "invalid_request_error");
    cr_assert_str_eq(json_string_value(json_object_get(err, "param")), "temperature");
    cr_assert(json_is_null(json_object_get(err, "code")));
    json_decref(j);
}

Test(server_response, completion_with_echo_and_logprobs) {
    /* two tokens, logprob_cols 3 (chosen + 2 alternatives), 2 alternatives shown */
    const int32_t tokens[] = {12, 9};
    const vkllm_token_logprob lp[] = {{12, -0.5f},    {12, -0.5f}, {4, -1.25f},
                                      {9, -INFINITY}, {7, -0.1f},  {7, -0.2f}};
    srv_response_ctx rc = {.endpoint = SRV_ENDPOINT_COMPLETIONS,
                           .id = "cmpl-1",
                           .created = 42,
                           .model = "m",
                           .want_logprobs = true,
                           .top_logprobs = 2,
                           .logprob_cols = 3,
                           .token_text = fake_token_text};
    srv_choice_result c = {.text = "Hi<12>x",
                           .text_len = 7,
                           .echo_len = 2,
                           .tokens = tokens,
                           .n_tokens = 2,
                           .logprobs = lp,
                           .finish = VKLLM_FINISH_LENGTH};
    srv_usage u = {.prompt_tokens = 3, .completion_tokens = 2, .cached_tokens = 1};
    json_t *j = roundtrip(srv_build_response(&rc, &c, 1, &u));
    cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "text_completion");
    cr_assert_eq(json_integer_value(json_object_get(j, "created")), 42);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(ch, "text")), "Hi<12>x");
    cr_assert_str_eq(json_string_value(json_object_get(ch, "finish_reason")), "length");
    json_t *l = json_object_get(ch, "logprobs");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(l, "tokens"), 0)), "<12>");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(l, "tokens"), 1)),
                     "\xEF\xBF\xBD", "a lone lead byte becomes U+FFFD");
    cr_assert_float_eq(json_real_value(json_array_get(json_object_get(l, "token_logprobs"), 0)),
                       -0.5, 1e-9);
    cr_assert_float_eq(json_real_value(json_array_get(json_object_get(l, "token_logprobs"), 1)),
                       -9999.0, 0, "-inf is reported as -9999 (vLLM)");
    json_t *off = json_object_get(l, "text_offset");
    cr_assert_eq(json_integer_value(json_array_get(off, 0)), 2, "offsets start after the echo");
    cr_assert_eq(json_integer_value(json_array_get(off, 1)), 6, "2 + strlen(\"<12>\")");
    json_t *top0 = json_array_get(json_object_get(l, "top_logprobs"), 0);
    cr_assert_eq(json_object_size(top0), 2);
    cr_assert_float_eq(json_real_value(json_object_get(top0, "<4>")), -1.25, 1e-9);
    json_t *top1 = json_array_get(json_object_get(l, "top_logprobs"), 1);
    cr_assert_eq(json_object_size(top1), 1, "equal texts collapse to one dict key");
    cr_assert_float_eq(json_real_value(json_object_get(top1, "<7>")), -0.1, 1e-7);
    json_t *usage = json_object_get(j, "usage");
    cr_assert_eq(json_integer_value(json_object_get(usage, "total_tokens")), 5);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(usage, "prompt_tokens_details"),
                                                    "cached_tokens")),
                 1);
    json_decref(j);
}

Test(server_response, chat_logprobs_and_message) {
    const int32_t tokens[] = {65};
    const vkllm_token_logprob lp[] = {{65, -0.75f}, {66, -1.5f}};
    srv_response_ctx rc = {.endpoint = SRV_ENDPOINT_CHAT,
                           .id = "chatcmpl-1",
                           .model = "m",
                           .want_logprobs = true,
                           .top_logprobs = 1,
                           .logprob_cols = 2,
                           .token_text = fake_token_text};
    srv_choice_result c = {.text = "<65>",
                           .text_len = 4,
                           .tokens = tokens,
                           .n_tokens = 1,
                           .logprobs = lp,
                           .finish = VKLLM_FINISH_STOP};
    srv_usage u = {0};
    json_t *j = roundtrip(srv_build_response(&rc, &c, 1, &u));
    cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "chat.completion");
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    json_t *msg = json_object_get(ch, "message");
    cr_assert_str_eq(json_string_value(json_object_get(msg, "role")), "assistant");
    cr_assert_str_eq(json_string_value(json_object_get(msg, "content")), "<65>");
    cr_assert_str_eq(json_string_value(json_object_get(ch, "finish_reason")), "stop");
    json_t *e0 = json_array_get(json_object_get(json_object_get(ch, "logprobs"), "content"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(e0, "token")), "<65>");
    cr_assert_float_eq(json_real_value(json_object_get(e0, "logprob")), -0.75, 1e-9);
    json_t *bytes = json_object_get(e0, "bytes");
    cr_assert_eq(json_array_size(bytes), 4);
    cr_assert_eq(json_integer_value(json_array_get(bytes, 0)), '<');
    json_t *alt = json_array_get(json_object_get(e0, "top_logprobs"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(alt, "token")), "<66>");
    cr_assert_float_eq(json_real_value(json_object_get(alt, "logprob")), -1.5, 1e-9);
    json_decref(j);
}

Test(server_response, stream_chunks) {
    srv_response_ctx rc = {
        .endpoint = SRV_ENDPOINT_CHAT, .id = "chatcmpl-2", .created = 7, .model = "m"};
    json_t *role =
        roundtrip(srv_build_chunk(&rc, 1, "", 0, true, NULL, 0, NULL, 0, VKLLM_FINISH_NONE, true));
    cr_assert_str_eq(json_string_value(json_object_get(role, "object")), "chat.completion.chunk");
    cr_assert(json_is_null(json_object_get(role, "usage")) && json_object_get(role, "usage"),
              "include_usage: every chunk has usage null");
    json_t *c0 = json_array_get(json_object_get(role, "choices"), 0);
    cr_assert_eq(json_integer_value(json_object_get(c0, "index")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(c0, "delta"), "role")),
                     "assistant");
    cr_assert(json_is_null(json_object_get(c0, "finish_reason")));
    json_decref(role);

    json_t *last = roundtrip(
        srv_build_chunk(&rc, 0, "", 0, false, NULL, 0, NULL, 0, VKLLM_FINISH_CANCELLED, false));
    cr_assert_null(json_object_get(last, "usage"));
    json_t *c1 = json_array_get(json_object_get(last, "choices"), 0);
    cr_assert_eq(json_object_size(json_object_get(c1, "delta")), 0, "final delta is {}");
    cr_assert_str_eq(json_string_value(json_object_get(c1, "finish_reason")), "abort");
    json_decref(last);

    srv_usage u = {.prompt_tokens = 4, .completion_tokens = 6};
    json_t *uc = roundtrip(srv_build_usage_chunk(&rc, &u));
    cr_assert_eq(json_array_size(json_object_get(uc, "choices")), 0);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(uc, "usage"), "total_tokens")),
                 10);
    json_decref(uc);

    rc.endpoint = SRV_ENDPOINT_COMPLETIONS;
    json_t *tc = roundtrip(
        srv_build_chunk(&rc, 0, "ab", 2, false, NULL, 0, NULL, 0, VKLLM_FINISH_STOP, false));
    cr_assert_str_eq(json_string_value(json_object_get(tc, "object")), "text_completion");
    json_t *c2 = json_array_get(json_object_get(tc, "choices"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(c2, "text")), "ab");
    cr_assert_str_eq(json_string_value(json_object_get(c2, "finish_reason")), "stop");
    json_decref(tc);
}

Test(server_response, utf8_sanitizing) {
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"plain", 5, "plain"},
        {"\xC3\xA9t\xC3\xA9", 5, "\xC3\xA9t\xC3\xA9"},
        {"a\xFF"
         "b",
         3,
         "a\xEF\xBF\xBD"
         "b"},
        {"\xC0\xAF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},                   /* overlong */
        {"\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},   /* surrogate */
        {"x\xF0\x9F\x98", 4, "x\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* cut emoji */
        {"\xF0\x9F\x98\x80", 4, "\xF0\x9F\x98\x80"},
        {"a\0b", 3,
         "a\xEF\xBF\xBD"
         "b"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *s = srv_json_text(cases[i].in, cases[i].len);
        cr_assert(s, "case %zu", i);
        cr_assert_str_eq(json_string_value(s), cases[i].out, "case %zu", i);
        json_decref(s);
    }
}

Test(server_response, models_list) {
    json_t *j = roundtrip(srv_build_models("tiny", 5, 256));
    json_t *d = json_array_get(json_object_get(j, "data"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(d, "id")), "tiny");
    cr_assert_str_eq(json_string_value(json_object_get(d, "object")), "model");
    cr_assert_eq(json_integer_value(json_object_get(d, "max_model_len")), 256);
    json_decref(j);
}
