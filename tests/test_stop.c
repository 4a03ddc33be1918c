/* test_stop.c: engine/exec/stop.c. Stop strings across piece boundaries, overlapping
 * prefixes, several stop strings, include_stop_str, UTF-8 safety, flushing; a randomized
 * property test against a whole-text reference with random cuts (seeded); the
 * per-sequence rules (stop ids, EOS, ignore_eos, max_tokens, finish reasons); and, with
 * the real Gemma 3 tokenizer when the model file is present, the decoder-fed path. */
// links: exec model
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/test_util.h"
#include "exec/stop.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

/* ---------------------------------------------------------- helpers */

typedef struct stream {
    char text[4096]; /* everything emitted so far */
    size_t len;
    bool stopped;
    int32_t stop_index;
} stream;

static stop_matcher *matcher(const char *const *stops, size_t n, bool include) {
    stop_matcher *m = NULL;
    vkllm_status s = stop_matcher_create(stops, n, include, &m);
    cr_assert_eq(s, VKLLM_OK, "stop_matcher_create: %s", vkllm_last_error());
    return m;
}

/* Pushes one piece; returns what came out of this push (NUL-terminated copy). */
static const char *push(stop_matcher *m, stream *st, const char *piece) {
    static char out[4096];
    stop_text t;
    cr_assert_eq(stop_matcher_push(m, piece, strlen(piece), &t), VKLLM_OK, "%s",
                 vkllm_last_error());
    cr_assert_lt(st->len + t.len, sizeof st->text);
    memcpy(st->text + st->len, t.text, t.len);
    st->len += t.len;
    st->text[st->len] = 0;
    memcpy(out, t.text, t.len);
    out[t.len] = 0;
    st->stopped = t.stopped;
    st->stop_index = t.stop_index;
    return out;
}

static const char *flush(stop_matcher *m, stream *st) {
    static char out[4096];
    const char *t;
    size_t len;
    stop_matcher_flush(m, &t, &len);
    memcpy(st->text + st->len, t, len);
    st->len += len;
    st->text[st->len] = 0;
    memcpy(out, t, len);
    out[len] = 0;
    return out;
}

/* ---------------------------------------------------------- stop strings */

Test(stop, stop_string_across_pieces) {
    const char *stops[] = {"o w"};
    stop_matcher *m = matcher(stops, 1, false);
    stream st = {0};
    cr_assert_str_eq(push(m, &st, "Hel"), "Hel");
    cr_assert_str_eq(push(m, &st, "lo wor"), "l");
    cr_assert(st.stopped);
    cr_assert_eq(st.stop_index, 0);
    cr_assert_str_eq(push(m, &st, "ld"), "", "nothing after a stop");
    cr_assert(st.stopped);
    cr_assert_str_eq(flush(m, &st), "", "nothing to flush after a stop");
    cr_assert_str_eq(st.text, "Hell");
    stop_matcher_free(m);
}

Test(stop, held_prefix_is_released_when_it_does_not_complete) {
    const char *stops[] = {"o w"};
    stop_matcher *m = matcher(stops, 1, false);
    stream st = {0};
    cr_assert_str_eq(push(m, &st, "Hello"), "Hell");
    cr_assert_eq(stop_matcher_held(m), 1);
    cr_assert_str_eq(push(m, &st, " "), "", "'o ' may still become 'o w'");
    cr_assert_eq(stop_matcher_held(m), 2);
    cr_assert_str_eq(push(m, &st, "there"), "o there");
    cr_assert_str_eq(push(m, &st, "o"), "");
    cr_assert_str_eq(flush(m, &st), "o", "held text comes out at the end");
    cr_assert(!st.stopped);
    cr_assert_str_eq(st.text, "Hello thereo");
    stop_matcher_free(m);
}

Test(stop, overlapping_prefixes) {
    /* "abab" inside "abaabab": the first "aba" is a prefix that fails at the next 'a',
     * but its last 'a' starts a new candidate. */
    const char *stops[] = {"abab"};
    stop_matcher *m = matcher(stops, 1, false);
    stream st = {0};
    const char *text = "abaabab";
    for (size_t i = 0; text[i]; i++) {
        char piece[2] = {text[i], 0};
        push(m, &st, piece);
    }
    cr_assert(st.stopped);
    cr_assert_str_eq(st.text, "aba");
    stop_matcher_free(m);

    const char *stops2[] = {"aab"};
    m = matcher(stops2, 1, false);
    stream st2 = {0};
    cr_assert_str_eq(push(m, &st2, "xaa"), "x", "'aa' held");
    cr_assert_str_eq(push(m, &st2, "a"), "a", "'aaa': the first a can no longer start it");
    cr_assert_str_eq(push(m, &st2, "b"), "");
    cr_assert(st2.stopped);
    cr_assert_str_eq(st2.text, "xa");
    stop_matcher_free(m);
}

Test(stop, several_stop_strings_first_to_complete_wins) {
    const char *stops[] = {"world", "abcd", "bc", "xyz", "yz"};
    stop_matcher *m = matcher(stops, 5, false);
    stream st = {0};
    push(m, &st, "hello wxyz!");
    cr_assert(st.stopped);
    cr_assert_eq(st.stop_index, 3, "xyz and yz end together: the longer one (%d)", st.stop_index);
    cr_assert_str_eq(st.text, "hello w");
    stop_matcher_free(m);

    /* "bc" completes before "abcd", whatever the cuts */
    const char *cuts[][3] = {{"abcd", "", ""}, {"a", "b", "cd"}, {"ab", "cd", ""}};
    for (int c = 0; c < 3; c++) {
        m = matcher(stops, 5, false);
        stream s2 = {0};
        for (int i = 0; i < 3; i++)
            push(m, &s2, cuts[c][i]);
        cr_assert(s2.stopped, "cut %d", c);
        cr_assert_eq(s2.stop_index, 2, "cut %d: stop %d", c, s2.stop_index);
        cr_assert_str_eq(s2.text, "a", "cut %d", c);
        stop_matcher_free(m);
    }
}

Test(stop, include_stop_str) {
    const char *stops[] = {"END"};
    stop_matcher *m = matcher(stops, 1, true);
    stream st = {0};
    cr_assert_str_eq(push(m, &st, "abc E"), "abc ");
    cr_assert_str_eq(push(m, &st, "ND tail"), "END");
    cr_assert(st.stopped);
    cr_assert_str_eq(st.text, "abc END");
    stop_matcher_free(m);
}

Test(stop, utf8_is_never_split) {
    /* a stop string starting with a 2-byte character, fed byte by byte */
    const char *stops[] = {"\xC3\xA9!"}; /* "é!" */
    stop_matcher *m = matcher(stops, 1, false);
    stream st = {0};
    cr_assert_str_eq(push(m, &st, "caf\xC3"), "caf");
    cr_assert_str_eq(push(m, &st, "\xA8"), "\xC3\xA8", "è is not é: released whole");
    cr_assert_str_eq(push(m, &st, "\xC3"), "");
    cr_assert_str_eq(push(m, &st, "\xA9"), "", "é may start é!");
    cr_assert_str_eq(push(m, &st, "!"), "");
    cr_assert(st.stopped);
    cr_assert_str_eq(st.text, "caf\xC3\xA8");
    stop_matcher_free(m);

    /* no stop string involved: an incomplete character is still held */
    const char *x[] = {"zz"};
    m = matcher(x, 1, false);
    stream s2 = {0};
    cr_assert_str_eq(push(m, &s2, "a\xF0\x9F"), "a", "4-byte emoji cut after 2 bytes");
    cr_assert_str_eq(push(m, &s2, "\x98"), "");
    cr_assert_str_eq(push(m, &s2, "\x80 b"), "\xF0\x9F\x98\x80 b");
    cr_assert_str_eq(push(m, &s2, "\xE2\x82"), "");
    cr_assert_str_eq(flush(m, &s2), "\xE2\x82", "flush hands out incomplete bytes too");
    stop_matcher_free(m);

    /* the emitted text is valid UTF-8 at every step for a CJK stream and stop */
    const char *cjk[] = {"\xE4\xB8\x96\xE7\x95\x8C"}; /* 世界 */
    m = matcher(cjk, 1, false);
    stream s3 = {0};
    const char *text = "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE4\xBA\xBA\xE4\xB8\x96\xE7\x95\x8C";
    for (size_t i = 0; text[i]; i++) {
        char piece[2] = {text[i], 0};
        const char *out = push(m, &s3, piece);
        size_t n = strlen(out);
        if (n) {
            unsigned char first = (unsigned char)out[0];
            cr_assert((first & 0xC0) != 0x80, "output at byte %zu starts mid-character", i);
            cr_assert_eq(n % 3, 0, "output at byte %zu is not whole 3-byte characters", i);
        }
    }
    cr_assert(s3.stopped);
    cr_assert_str_eq(s3.text, "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE4\xBA\xBA"); /* 你好世人 */
    stop_matcher_free(m);
}

Test(stop, invalid_stop_strings_are_refused) {
    stop_matcher *m = (stop_matcher *)1;
    const char *bad[] = {"ok", "\xC3"};
    cr_assert_eq(stop_matcher_create(bad, 2, false, &m), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_null(m);
    cr_assert(strstr(vkllm_last_error(), "stop string 1 is not valid UTF-8"), "%s",
              vkllm_last_error());
    const char *surrogate[] = {"\xED\xA0\x80"};
    cr_assert_eq(stop_matcher_create(surrogate, 1, false, &m), VKLLM_ERR_INVALID_ARGUMENT);
    const char *empty[] = {""};
    cr_assert_eq(stop_matcher_create(empty, 1, false, &m), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "stop string 0 is NULL or empty"), "%s",
              vkllm_last_error());
}

/* Reference on the whole text: the stop string with the earliest end (then longest). */
static size_t reference_cut(const char *text, const char *const *stops, size_t n, bool *stopped) {
    size_t best_end = SIZE_MAX, best_pos = 0;
    for (size_t i = 0; i < n; i++) {
        const char *hit = strstr(text, stops[i]);
        if (!hit) continue;
        size_t pos = (size_t)(hit - text), end = pos + strlen(stops[i]);
        if (end < best_end || (end == best_end && pos < best_pos)) best_end = end, best_pos = pos;
    }
    *stopped = best_end != SIZE_MAX;
    return *stopped ? best_pos : strlen(text);
}

Test(stop, random_texts_and_cuts_match_the_whole_text_reference) {
    const char *stops[] = {"abc", "bca", "cc", "abab", "cab"};
    for (uint64_t seed = 1; seed <= 3000; seed++) {
        test_rng rng = test_rng_seeded(seed);
        char text[64];
        size_t len = 1 + test_rng_below(&rng, 40);
        for (size_t i = 0; i < len; i++)
            text[i] = "abcd"[test_rng_below(&rng, 4)];
        text[len] = 0;
        size_t n_stops = 1 + test_rng_below(&rng, 5);
        bool want_stop;
        size_t cut = reference_cut(text, stops, n_stops, &want_stop);
        stop_matcher *m = matcher(stops, n_stops, false);
        stream st = {0};
        for (size_t i = 0; i < len;) {
            size_t k = 1 + test_rng_below(&rng, 6);
            if (k > len - i) k = len - i;
            char piece[8];
            memcpy(piece, text + i, k);
            piece[k] = 0;
            push(m, &st, piece);
            /* what is out so far is always a prefix of the final answer */
            cr_assert(st.len <= cut && memcmp(st.text, text, st.len) == 0,
                      "seed %llu: emitted '%s' is not a prefix of '%.*s' (text '%s')",
                      (unsigned long long)seed, st.text, (int)cut, text, text);
            i += k;
        }
        if (!st.stopped) flush(m, &st);
        cr_assert_eq(st.stopped, want_stop, "seed %llu text '%s'", (unsigned long long)seed, text);
        cr_assert(st.len == cut && memcmp(st.text, text, cut) == 0,
                  "seed %llu: emitted '%s', want '%.*s' (text '%s', %zu stops)",
                  (unsigned long long)seed, st.text, (int)cut, text, text, n_stops);
        stop_matcher_free(m);
    }
}

/* ---------------------------------------------------------- per-sequence rules */

static stop_seq *seq(const sampler_params *p) {
    stop_seq *s = NULL;
    cr_assert_eq(stop_seq_create(p, &s), VKLLM_OK, "stop_seq_create: %s", vkllm_last_error());
    return s;
}

static stop_event push_tok(stop_seq *s, int32_t token, bool is_eog) {
    stop_event e;
    cr_assert_eq(stop_seq_push(s, NULL, token, is_eog, &e), VKLLM_OK, "%s", vkllm_last_error());
    return e;
}

Test(stop, sequence_rules_and_finish_reasons) {
    sampler_params p = sampler_params_default();
    p.max_tokens = 5;
    int32_t ids[2] = {42, 7};
    p.stop_token_ids = ids;
    p.n_stop_token_ids = 2;

    stop_seq *s = seq(&p);
    cr_assert_eq(push_tok(s, 3, false).reason, STOP_NONE);
    stop_event e = push_tok(s, 7, false);
    cr_assert_eq(e.reason, STOP_TOKEN);
    cr_assert_eq(e.stop_index, 7);
    cr_assert_str_eq(stop_finish_reason(e.reason), "stop");
    cr_assert_eq(stop_seq_generated(s), 2);
    stop_event after;
    cr_assert_eq(stop_seq_push(s, NULL, 1, false, &after), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "after the sequence finished (stop)"), "%s",
              vkllm_last_error());
    stop_seq_free(s);

    s = seq(&p);
    e = push_tok(s, 1, true);
    cr_assert_eq(e.reason, STOP_EOS, "EOG stops");
    stop_seq_free(s);

    p.ignore_eos = true;
    s = seq(&p);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(push_tok(s, 1, true).reason, STOP_NONE, "i %d", i);
    e = push_tok(s, 1, true);
    cr_assert_eq(e.reason, STOP_LENGTH, "ignore_eos runs to max_tokens");
    cr_assert_str_eq(stop_finish_reason(e.reason), "length");
    cr_assert_null(stop_finish_reason(STOP_NONE));
    cr_assert_eq(stop_seq_reason(s), STOP_LENGTH);
    stop_seq_free(s);

    /* a stop id is honoured even with ignore_eos */
    s = seq(&p);
    cr_assert_eq(push_tok(s, 42, true).reason, STOP_TOKEN);
    stop_seq_free(s);

    /* invalid params are refused (validated at create) */
    p.max_tokens = 0;
    stop_seq *bad = (stop_seq *)1;
    cr_assert_eq(stop_seq_create(&p, &bad), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_null(bad);
    cr_assert(strstr(vkllm_last_error(), "max_tokens"), "%s", vkllm_last_error());
}

/* ---------------------------------------------------------- with the real tokenizer */

#define GEMMA VKLLM_SOURCE_DIR "/models/gemma-3-270m-q4_k_m.gguf"

static gguf_file *gemma_gguf;
static tok_tokenizer *gemma;

static void gemma_setup(void) {
    if (access(GEMMA, R_OK) != 0) cr_skip_test("%s is absent (run tools/fetch_model.sh)", GEMMA);
    cr_assert_eq(gguf_open(GEMMA, &gemma_gguf), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(tok_load(gemma_gguf, &gemma), VKLLM_OK, "%s", vkllm_last_error());
}

static void gemma_teardown(void) {
    tok_free(gemma);
    gemma = NULL;
    if (gemma_gguf) gguf_close(gemma_gguf);
    gemma_gguf = NULL;
}

/* Runs ids through a decoder + stop_seq; returns the emitted text (malloc'd). */
static char *run_ids(const sampler_params *p, const int32_t *ids, size_t n, stop_reason *reason) {
    tok_decoder *dec = NULL;
    cr_assert_eq(tok_decoder_new(gemma, false, &dec), VKLLM_OK, "%s", vkllm_last_error());
    stop_seq *s = seq(p);
    char *text = calloc(1, 65536);
    size_t len = 0;
    *reason = STOP_NONE;
    for (size_t i = 0; i < n && *reason == STOP_NONE; i++) {
        stop_event e;
        cr_assert_eq(stop_seq_push(s, dec, ids[i], tok_is_eog(gemma, ids[i]), &e), VKLLM_OK, "%s",
                     vkllm_last_error());
        memcpy(text + len, e.text, e.len);
        len += e.len;
        *reason = e.reason;
    }
    if (*reason == STOP_NONE) {
        stop_event e;
        cr_assert_eq(stop_seq_finish(s, dec, &e), VKLLM_OK);
        memcpy(text + len, e.text, e.len);
        len += e.len;
        *reason = e.reason;
    }
    text[len] = 0;
    stop_seq_free(s);
    tok_decoder_free(dec);
    return text;
}

Test(stop, decoder_fed_sequences_on_gemma, .init = gemma_setup, .fini = gemma_teardown) {
    const char *src = "Hello world, this is a test of stop strings. \xF0\x9F\x98\x80 Done.";
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(tok_encode(gemma, src, strlen(src), false, false, &ids, &n), VKLLM_OK);
    cr_assert_gt(n, 8);
    char *full = NULL;
    size_t full_len = 0;
    cr_assert_eq(tok_decode(gemma, ids, n, false, &full, &full_len), VKLLM_OK);

    sampler_params p = sampler_params_default();
    p.max_tokens = 1000;
    stop_reason reason;
    char *text = run_ids(&p, ids, n, &reason);
    cr_assert_str_eq(text, full, "no stops: the whole decoded text");
    cr_assert_eq(reason, STOP_NONE);
    free(text);

    const char *stops[] = {"stop str", "is a t", "zzz"};
    p.stop_strings = stops;
    p.n_stop_strings = 3;
    text = run_ids(&p, ids, n, &reason);
    const char *cut = strstr(full, "is a t");
    cr_assert_not_null(cut);
    cr_assert_eq(strlen(text), (size_t)(cut - full), "emitted '%s'", text);
    cr_assert(memcmp(text, full, strlen(text)) == 0, "emitted '%s'", text);
    cr_assert_eq(reason, STOP_STRING);
    free(text);

    /* max_tokens in the middle: the held prefix of a stop string is flushed */
    const char *stop_dot[] = {"test of stop strings. X"};
    p.stop_strings = stop_dot;
    p.n_stop_strings = 1;
    int32_t *ids2 = NULL;
    size_t n2 = 0;
    const char *src2 = "Hello world, this is a test of stop strings.";
    cr_assert_eq(tok_encode(gemma, src2, strlen(src2), false, false, &ids2, &n2), VKLLM_OK);
    p.max_tokens = (uint32_t)n2;
    text = run_ids(&p, ids, n, &reason);
    cr_assert_eq(reason, STOP_LENGTH);
    char *want = NULL;
    size_t want_len;
    cr_assert_eq(tok_decode(gemma, ids, n2, false, &want, &want_len), VKLLM_OK);
    cr_assert_str_eq(text, want, "held text flushed at max_tokens");
    free(text);
    free(want);
    free(ids2);

    /* EOS ends the sequence, its text is not emitted */
    int32_t eos_ids[3] = {ids[0], ids[1], tok_eos(gemma)};
    p = sampler_params_default();
    text = run_ids(&p, eos_ids, 3, &reason);
    cr_assert_eq(reason, STOP_EOS);
    char *two = NULL;
    cr_assert_eq(tok_decode(gemma, ids, 2, false, &two, &want_len), VKLLM_OK);
    cr_assert_str_eq(text, two);
    free(two);
    free(text);
    free(full);
    free(ids);
}
