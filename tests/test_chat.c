/* test_chat.c: chat formats against renderings of the official Jinja templates made with
 * jinja2 by tools/fixtures/gen_tokenizer.py (tests/fixtures/tokenizer/chat.cases), plus
 * detection, names, the plain fallback and the alternation errors. */
// links: model common
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat.h"
#include "model/gguf.h"
#include "test_tokenizer_cases.h"

#define CHAT_CASES VKLLM_SOURCE_DIR "/tests/fixtures/tokenizer/chat.cases"

Test(chat, matches_jinja_renderings) {
    char *data = tcase_read_file(CHAT_CASES, NULL);
    cr_assert(data, "cannot read %s", CHAT_CASES);
    size_t checked = 0;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        char *fields[64];
        size_t nf = 0;
        for (char *p = line; nf < 64;) {
            fields[nf++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) break;
            *tab = '\0';
            p = tab + 1;
        }
        chat_template t;
        cr_assert_eq(chat_template_by_name(fields[0], &t), VKLLM_OK, "%s", fields[0]);
        bool gen = atoi(fields[1]) != 0;
        size_t n = (size_t)atoi(fields[2]);
        cr_assert_eq(nf, 4 + 2 * n);
        chat_message msgs[16];
        size_t len;
        for (size_t i = 0; i < n; i++) {
            msgs[i].role = tcase_unhex(fields[3 + 2 * i], strlen(fields[3 + 2 * i]), &len);
            msgs[i].content = tcase_unhex(fields[4 + 2 * i], strlen(fields[4 + 2 * i]), &len);
        }
        char *want = tcase_unhex(fields[3 + 2 * n], strlen(fields[3 + 2 * n]), &len);
        char *got;
        cr_assert_eq(chat_render(&t, msgs, n, gen, &got), VKLLM_OK, "%s", vkllm_last_error());
        cr_assert_str_eq(got, want, "format %s, %zu messages, generation prompt %d", fields[0], n,
                         gen);
        free(got);
        free(want);
        for (size_t i = 0; i < n; i++) {
            free((char *)msgs[i].role);
            free((char *)msgs[i].content);
        }
        checked++;
    }
    cr_assert_eq(checked, 64);
    free(data);
}

Test(chat, detect_by_substring) {
    cr_assert_eq(chat_template_detect("{{ '<start_of_turn>' + role }}", NULL).format,
                 CHAT_FORMAT_GEMMA);
    cr_assert_eq(chat_template_detect("x<|start_header_id|>y", NULL).format, CHAT_FORMAT_LLAMA3);
    cr_assert_eq(chat_template_detect("{{'<|im_start|>' + m}}", NULL).format, CHAT_FORMAT_CHATML);
    cr_assert_eq(chat_template_detect("{{ '[INST] ' + c }}", NULL).format, CHAT_FORMAT_LLAMA2);
    chat_template t = chat_template_detect("{{ messages | tojson }}", NULL);
    cr_assert_eq(t.format, CHAT_FORMAT_PLAIN);
    cr_assert(strstr(t.warning, "not recognised"), "%s", t.warning);
    t = chat_template_detect(NULL, NULL);
    cr_assert_eq(t.format, CHAT_FORMAT_PLAIN);
    cr_assert(strstr(t.warning, "no chat template"), "%s", t.warning);
    cr_assert_str_eq(chat_template_detect("<|im_start|>", NULL).warning, "");
}

Test(chat, detect_from_tiny_gguf) {
    gguf_file *g;
    const char *path = VKLLM_SOURCE_DIR "/tests/fixtures/tokenizer/llama3-bpe-tiny.gguf";
    cr_assert_eq(gguf_open(path, &g), VKLLM_OK, "%s", vkllm_last_error());
    tok_tokenizer *tok;
    cr_assert_eq(tok_load(g, &tok), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(chat_template_from_gguf(g, tok).format, CHAT_FORMAT_LLAMA3);
    cr_assert_eq(chat_template_from_gguf(g, NULL).format, CHAT_FORMAT_LLAMA3,
                 "from tokenizer.chat_template alone");
    tok_free(tok);
    gguf_close(g);
    path = VKLLM_SOURCE_DIR "/tests/fixtures/tokenizer/spm-tiny.gguf";
    cr_assert_eq(gguf_open(path, &g), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(tok_load(g, &tok), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(chat_template_from_gguf(g, tok).format, CHAT_FORMAT_GEMMA,
                 "no template key: found by <start_of_turn> in the vocabulary");
    tok_free(tok);
    gguf_close(g);
}

Test(chat, by_name) {
    const char *names[] = {"plain", "gemma", "llama3", "chatml", "llama2"};
    for (int i = 0; i < 5; i++) {
        chat_template t;
        cr_assert_eq(chat_template_by_name(names[i], &t), VKLLM_OK);
        cr_assert_str_eq(chat_format_name(t.format), names[i]);
    }
    chat_template t;
    cr_assert_eq(chat_template_by_name("qwen", &t), VKLLM_OK);
    cr_assert_eq(t.format, CHAT_FORMAT_CHATML);
    cr_assert_eq(chat_template_by_name("vicuna", &t), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "'vicuna'"), "%s", vkllm_last_error());
}

Test(chat, plain_format) {
    chat_template t = {.format = CHAT_FORMAT_PLAIN};
    chat_message m[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}};
    char *out;
    cr_assert_eq(chat_render(&t, m, 3, true, &out), VKLLM_OK);
    cr_assert_str_eq(out, "system: Be brief.\nuser: Hi\nassistant: Hello\nassistant:");
    free(out);
    cr_assert_eq(chat_render(&t, m, 0, false, &out), VKLLM_OK);
    cr_assert_str_eq(out, "");
    free(out);
}

Test(chat, alternation_errors) {
    chat_message m[] = {{"user", "a"}, {"user", "b"}};
    chat_template g = {.format = CHAT_FORMAT_GEMMA}, l2 = {.format = CHAT_FORMAT_LLAMA2};
    char *out = (char *)1;
    cr_assert_eq(chat_render(&g, m, 2, true, &out), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_null(out);
    cr_assert(strstr(vkllm_last_error(), "message 1 has role 'user'"), "%s", vkllm_last_error());
    chat_message a[] = {{"system", "s"}, {"assistant", "x"}};
    cr_assert_eq(chat_render(&l2, a, 2, false, &out), VKLLM_ERR_INVALID_ARGUMENT);
    chat_message nul[] = {{"user", NULL}};
    cr_assert_eq(chat_render(&g, nul, 1, false, &out), VKLLM_ERR_INVALID_ARGUMENT);
}
