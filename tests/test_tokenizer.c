/* test_tokenizer.c: the tokenizer on the two tiny fixture vocabularies (always present):
 * a llama3-style byte-level BPE and a Gemma-style SentencePiece BPE, both trained by
 * tools/fixtures/gen_tokenizer.py, with expected ids from Hugging Face transformers;
 * round trips; streaming decode across split UTF-8; and error paths on GGUF images built
 * here in memory. */
// links: model common
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "test_tokenizer_cases.h"

#define FIX VKLLM_SOURCE_DIR "/tests/fixtures/tokenizer/"

static tok_tokenizer *load_fixture(const char *name, gguf_file **gguf) {
    cr_assert_eq(gguf_open(name, gguf), VKLLM_OK, "%s: %s", name, vkllm_last_error());
    tok_tokenizer *tok;
    cr_assert_eq(tok_load(*gguf, &tok), VKLLM_OK, "%s: %s", name, vkllm_last_error());
    return tok;
}

/* ---------------------------------------------------------------- llama3-bpe-tiny */

Test(tokenizer_bpe, metadata_and_specials) {
    gguf_file *g;
    tok_tokenizer *tok = load_fixture(FIX "llama3-bpe-tiny.gguf", &g);
    gguf_close(g); /* the tokenizer must not depend on the file staying open */
    cr_assert_eq(tok_get_kind(tok), TOK_KIND_BPE);
    cr_assert_str_eq(tok_pre_name(tok), "llama3");
    cr_assert_str_eq(tok_warning(tok), "");
    cr_assert_eq(tok_vocab_size(tok), 3005);
    int32_t bot = tok_find(tok, "<|begin_of_text|>"), eot = tok_find(tok, "<|eot_id|>");
    int32_t eos = tok_find(tok, "<|end_of_text|>");
    cr_assert(bot >= 0 && eot >= 0 && eos >= 0);
    cr_assert_eq(tok_bos(tok), bot);
    cr_assert_eq(tok_eos(tok), eos);
    cr_assert_eq(tok_eot(tok), eot, "eot found by text");
    cr_assert(tok_add_bos(tok));
    cr_assert(!tok_add_eos(tok));
    cr_assert(tok_is_eog(tok, eot) && tok_is_eog(tok, eos));
    cr_assert(!tok_is_eog(tok, bot) && !tok_is_eog(tok, 100) && !tok_is_eog(tok, -1) &&
              !tok_is_eog(tok, 1 << 20));
    cr_assert_eq(tok_token_type(tok, eot), TOK_TYPE_CONTROL);
    size_t len;
    cr_assert_str_eq(tok_token_text(tok, eot, &len), "<|eot_id|>");
    cr_assert_eq(len, 10);
    cr_assert_null(tok_token_text(tok, 3005, NULL));
    cr_assert_eq(tok_find(tok, "no such token text"), -1);
    /* Byte-level spelling: space is U+0120 'Ġ'. */
    cr_assert_geq(tok_find(tok, "\xC4\xA0"), 0);
    tok_free(tok);
}

Test(tokenizer_bpe, matches_transformers) {
    gguf_file *g;
    tok_tokenizer *tok = load_fixture(FIX "llama3-bpe-tiny.gguf", &g);
    tcase_check_all(tok, FIX "llama3-bpe-tiny.cases");
    tok_free(tok);
    gguf_close(g);
}

Test(tokenizer_bpe, roundtrip_and_streaming) {
    gguf_file *g;
    tok_tokenizer *tok = load_fixture(FIX "llama3-bpe-tiny.gguf", &g);
    tcase_check_roundtrip(tok, FIX "llama3-bpe-tiny.cases");
    tok_free(tok);
    gguf_close(g);
}

/* ---------------------------------------------------------------- spm-tiny */

Test(tokenizer_spm, metadata_and_specials) {
    gguf_file *g;
    tok_tokenizer *tok = load_fixture(FIX "spm-tiny.gguf", &g);
    cr_assert_eq(tok_get_kind(tok), TOK_KIND_SPM);
    cr_assert_str_eq(tok_pre_name(tok), "");
    cr_assert_eq(tok_bos(tok), 2);
    cr_assert_eq(tok_eos(tok), 1);
    cr_assert(tok_add_bos(tok));
    int32_t sot = tok_find(tok, "<start_of_turn>"), eot = tok_find(tok, "<end_of_turn>");
    cr_assert(sot >= 0 && eot >= 0);
    cr_assert_eq(tok_eot(tok), eot);
    cr_assert(tok_is_eog(tok, 1) && tok_is_eog(tok, eot) && !tok_is_eog(tok, sot) &&
              !tok_is_eog(tok, 2));
    cr_assert_eq(tok_find(tok, "<0x0A>"), tok_find(tok, "<0x0A>"));
    cr_assert_eq(tok_token_type(tok, tok_find(tok, "<0xF0>")), TOK_TYPE_BYTE);
    tok_free(tok);
    gguf_close(g);
}

Test(tokenizer_spm, matches_transformers) {
    gguf_file *g;
    tok_tokenizer *tok = load_fixture(FIX "spm-tiny.gguf", &g);
    tcase_check_all(tok, FIX "spm-tiny.cases");
    tok_free(tok);
    gguf_close(g);
}

Test(tokenizer_spm, roundtrip_and_streaming) {
    gguf_file *g;
    tok_tokenizer *tok = load_fixture(FIX "spm-tiny.gguf", &g);
    tcase_check_roundtrip(tok, FIX "spm-tiny.cases");
    tok_free(tok);
    gguf_close(g);
}

/* An emoji missing from the small vocabulary becomes 4 byte tokens; the streaming decoder
 * must hold the first three and emit the whole character with the fourth. */
Test(tokenizer_spm, byte_fallback_emoji_streams_whole) {
    gguf_file *g;
    tok_tokenizer *tok = load_fixture(FIX "spm-tiny.gguf", &g);
    const char *emoji = "\xF0\x9F\xA6\x99"; /* U+1F999, not in the training text */
    int32_t *ids;
    size_t n;
    cr_assert_eq(tok_encode(tok, emoji, 4, false, false, &ids, &n), VKLLM_OK);
    cr_assert_eq(n, 4);
    const int32_t want[4] = {tok_find(tok, "<0xF0>"), tok_find(tok, "<0x9F>"),
                             tok_find(tok, "<0xA6>"), tok_find(tok, "<0x99>")};
    cr_assert_arr_eq(ids, want, sizeof want);
    tok_decoder *dec;
    cr_assert_eq(tok_decoder_new(tok, false, &dec), VKLLM_OK);
    const char *t;
    size_t l;
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(tok_decoder_push(dec, ids[k], &t, &l), VKLLM_OK);
        cr_assert_eq(l, 0, "byte %d of the emoji must be held", k);
    }
    cr_assert_eq(tok_decoder_push(dec, ids[3], &t, &l), VKLLM_OK);
    cr_assert(l == 4 && memcmp(t, emoji, 4) == 0);
    /* A stream cut inside a character: flush gives one U+FFFD. */
    cr_assert_eq(tok_decoder_push(dec, ids[0], &t, &l), VKLLM_OK);
    cr_assert_eq(l, 0);
    tok_decoder_flush(dec, &t, &l);
    cr_assert(l == 3 && memcmp(t, "\xEF\xBF\xBD", 3) == 0);
    /* A lone continuation byte is replaced at once; an id out of range is refused. */
    cr_assert_eq(tok_decoder_push(dec, ids[2], &t, &l), VKLLM_OK);
    cr_assert(l == 3 && memcmp(t, "\xEF\xBF\xBD", 3) == 0);
    cr_assert_eq(tok_decoder_push(dec, 99999, &t, &l), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "99999"));
    tok_decoder_free(dec);
    free(ids);
    tok_free(tok);
    gguf_close(g);
}

/* Byte-level BPE: a 4-byte character spread over tokens that each hold part of it. */
Test(tokenizer_bpe, streaming_holds_partial_characters) {
    gguf_file *g;
    tok_tokenizer *tok = load_fixture(FIX "llama3-bpe-tiny.gguf", &g);
    const char *text = "a\xF0\x9F\xA6\x99 \xE4\xB8\xAD\xE6\x96\x87!";
    int32_t *ids;
    size_t n;
    cr_assert_eq(tok_encode(tok, text, strlen(text), false, false, &ids, &n), VKLLM_OK);
    cr_assert_geq(n, 6, "rare characters split into byte tokens");
    tok_decoder *dec;
    cr_assert_eq(tok_decoder_new(tok, false, &dec), VKLLM_OK);
    char acc[64];
    size_t o = 0, empty_chunks = 0;
    for (size_t k = 0; k < n; k++) {
        const char *t;
        size_t l;
        cr_assert_eq(tok_decoder_push(dec, ids[k], &t, &l), VKLLM_OK);
        empty_chunks += l == 0;
        memcpy(acc + o, t, l);
        o += l;
    }
    cr_assert_gt(empty_chunks, 0, "some token must have ended mid-character");
    cr_assert(o == strlen(text) && memcmp(acc, text, o) == 0);
    tok_decoder_free(dec);
    free(ids);
    tok_free(tok);
    gguf_close(g);
}

/* ---------------------------------------------------------------- GGUF images in memory */

typedef struct gbuf {
    unsigned char *p;
    size_t n, cap;
} gbuf;

static void gb_put(gbuf *b, const void *s, size_t len) {
    if (b->n + len > b->cap) b->p = realloc(b->p, b->cap = (b->n + len) * 2 + 64);
    memcpy(b->p + b->n, s, len);
    b->n += len;
}
static void gb_u32(gbuf *b, uint32_t v) {
    gb_put(b, &v, 4);
} /* tests run on little-endian */
static void gb_u64(gbuf *b, uint64_t v) {
    gb_put(b, &v, 8);
}
static void gb_str(gbuf *b, const char *s) {
    gb_u64(b, strlen(s));
    gb_put(b, s, strlen(s));
}
static void gb_key(gbuf *b, const char *key, uint32_t type) {
    gb_str(b, key);
    gb_u32(b, type);
}
static void kv_str(gbuf *b, const char *key, const char *v) {
    gb_key(b, key, GGUF_TYPE_STRING);
    gb_str(b, v);
}
static void kv_u32(gbuf *b, const char *key, uint32_t v) {
    gb_key(b, key, GGUF_TYPE_UINT32);
    gb_u32(b, v);
}
static void kv_strs(gbuf *b, const char *key, const char *const *v, size_t n) {
    gb_key(b, key, GGUF_TYPE_ARRAY);
    gb_u32(b, GGUF_TYPE_STRING);
    gb_u64(b, n);
    for (size_t i = 0; i < n; i++)
        gb_str(b, v[i]);
}
static void kv_i32s(gbuf *b, const char *key, const int32_t *v, size_t n) {
    gb_key(b, key, GGUF_TYPE_ARRAY);
    gb_u32(b, GGUF_TYPE_INT32);
    gb_u64(b, n);
    gb_put(b, v, n * 4);
}

/* A GGUF image with `n_kv` key/values already written into `body`. */
static gbuf gguf_image(const gbuf *body, uint64_t n_kv) {
    gbuf b = {0};
    gb_put(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    gb_u64(&b, n_kv);
    gb_put(&b, body->p, body->n);
    return b;
}

static vkllm_status load_image(const gbuf *body, uint64_t n_kv, tok_tokenizer **tok) {
    gbuf img = gguf_image(body, n_kv);
    gguf_file *g;
    cr_assert_eq(gguf_open_memory(img.p, img.n, "mem.gguf", &g), VKLLM_OK, "%s",
                 vkllm_last_error());
    vkllm_status st = tok_load(g, tok);
    gguf_close(g);
    free(img.p);
    return st;
}

static const char *const tiny_tokens[] = {"a", "b", "ab", "<s>", "</s>"};

Test(tokenizer_errors, unsupported_model_named) {
    gbuf body = {0};
    kv_str(&body, "tokenizer.ggml.model", "bert");
    kv_strs(&body, "tokenizer.ggml.tokens", tiny_tokens, 5);
    tok_tokenizer *tok = NULL;
    cr_assert_eq(load_image(&body, 2, &tok), VKLLM_ERR_UNSUPPORTED);
    cr_assert_null(tok);
    cr_assert(strstr(vkllm_last_error(), "'bert'"), "%s", vkllm_last_error());
    free(body.p);
}

Test(tokenizer_errors, missing_model_and_tokens) {
    gbuf body = {0};
    kv_strs(&body, "tokenizer.ggml.tokens", tiny_tokens, 5);
    tok_tokenizer *tok;
    cr_assert_eq(load_image(&body, 1, &tok), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "tokenizer.ggml.model"), "%s", vkllm_last_error());
    free(body.p);
    body = (gbuf){0};
    kv_str(&body, "tokenizer.ggml.model", "llama");
    cr_assert_eq(load_image(&body, 1, &tok), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "tokenizer.ggml.tokens"), "%s", vkllm_last_error());
    free(body.p);
}

Test(tokenizer_errors, token_type_count_and_value) {
    gbuf body = {0};
    kv_str(&body, "tokenizer.ggml.model", "llama");
    kv_strs(&body, "tokenizer.ggml.tokens", tiny_tokens, 5);
    const int32_t types[5] = {1, 1, 1, 3, 3};
    kv_i32s(&body, "tokenizer.ggml.token_type", types, 4);
    tok_tokenizer *tok;
    cr_assert_eq(load_image(&body, 3, &tok), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "token_type has 4 elements"), "%s", vkllm_last_error());
    free(body.p);
    body = (gbuf){0};
    const int32_t bad_types[5] = {1, 1, 9, 3, 3};
    kv_str(&body, "tokenizer.ggml.model", "llama");
    kv_strs(&body, "tokenizer.ggml.tokens", tiny_tokens, 5);
    kv_i32s(&body, "tokenizer.ggml.token_type", bad_types, 5);
    cr_assert_eq(load_image(&body, 3, &tok), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "token_type[2] = 9"), "%s", vkllm_last_error());
    free(body.p);
}

Test(tokenizer_errors, special_id_out_of_range) {
    gbuf body = {0};
    kv_str(&body, "tokenizer.ggml.model", "llama");
    kv_strs(&body, "tokenizer.ggml.tokens", tiny_tokens, 5);
    kv_u32(&body, "tokenizer.ggml.bos_token_id", 7);
    tok_tokenizer *tok;
    cr_assert_eq(load_image(&body, 3, &tok), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "bos_token_id = 7 is out of range"), "%s",
              vkllm_last_error());
    free(body.p);
}

Test(tokenizer_errors, bpe_needs_merges_and_warns_on_unknown_pre) {
    static const char *const bpe_tokens[] = {"a", "b", "ab", "\xC4\xA0"};
    gbuf body = {0};
    kv_str(&body, "tokenizer.ggml.model", "gpt2");
    kv_strs(&body, "tokenizer.ggml.tokens", bpe_tokens, 4);
    tok_tokenizer *tok;
    cr_assert_eq(load_image(&body, 2, &tok), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "tokenizer.ggml.merges is missing"), "%s",
              vkllm_last_error());
    static const char *const merges[] = {"a b"};
    kv_strs(&body, "tokenizer.ggml.merges", merges, 1);
    kv_str(&body, "tokenizer.ggml.pre", "some-new-model");
    cr_assert_eq(load_image(&body, 4, &tok), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(strstr(tok_warning(tok), "'some-new-model'"), "%s", tok_warning(tok));
    cr_assert_str_eq(tok_pre_name(tok), "gpt-2");
    cr_assert(!tok_add_bos(tok), "BPE default: no BOS");
    int32_t *ids;
    size_t n;
    cr_assert_eq(tok_encode(tok, "ab ab", 5, true, false, &ids, &n), VKLLM_OK);
    /* gpt-2 regex: "ab", " ab"; " " is not merged with "ab" (no merge), so 2 + 2 tokens. */
    const int32_t want[] = {2, 3, 2};
    cr_assert_eq(n, 3);
    cr_assert_arr_eq(ids, want, sizeof want);
    free(ids);
    tok_free(tok);
    free(body.p);
}

Test(tokenizer_errors, bad_merge_entry) {
    static const char *const bpe_tokens[] = {"a", "b", "ab"};
    static const char *const merges[] = {"ab"};
    gbuf body = {0};
    kv_str(&body, "tokenizer.ggml.model", "gpt2");
    kv_str(&body, "tokenizer.ggml.pre", "gpt-2");
    kv_strs(&body, "tokenizer.ggml.tokens", bpe_tokens, 3);
    kv_strs(&body, "tokenizer.ggml.merges", merges, 1);
    tok_tokenizer *tok;
    cr_assert_eq(load_image(&body, 4, &tok), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "merges[0] 'ab' has no space"), "%s", vkllm_last_error());
    free(body.p);
}

/* SPM defaults (no keys): add_bos, add_space_prefix, bos 1; user-defined tokens always split. */
Test(tokenizer_spm, defaults_and_space_prefix) {
    static const char *const toks[] = {"<unk>",
                                       "<s>",
                                       "</s>",
                                       "\xE2\x96\x81"
                                       "a",
                                       "a",
                                       "b",
                                       "<u>",
                                       "\xE2\x96\x81"};
    const int32_t types[] = {2, 3, 3, 1, 1, 1, 4, 1};
    gbuf body = {0};
    kv_str(&body, "tokenizer.ggml.model", "llama");
    kv_strs(&body, "tokenizer.ggml.tokens", toks, 8);
    kv_i32s(&body, "tokenizer.ggml.token_type", types, 8);
    tok_tokenizer *tok;
    cr_assert_eq(load_image(&body, 3, &tok), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(tok_add_bos(tok));
    cr_assert_eq(tok_bos(tok), 1);
    int32_t *ids;
    size_t n;
    /* " a" prefix -> "▁a"; "<u>" user-defined even without parse_special; after it the
     * fragment "b" gets a space prefix again: "▁" "b"; "</s>" not parsed -> unk chars. */
    cr_assert_eq(tok_encode(tok, "a<u>b", 5, true, false, &ids, &n), VKLLM_OK);
    const int32_t want[] = {1, 3, 6, 7, 5};
    cr_assert_eq(n, 5);
    cr_assert_arr_eq(ids, want, sizeof want);
    char *text;
    cr_assert_eq(tok_decode(tok, ids, n, false, &text, NULL), VKLLM_OK);
    cr_assert_str_eq(text, "a<u> b", "leading space of the first text token dropped");
    free(text);
    free(ids);
    tok_free(tok);
    free(body.p);
}
