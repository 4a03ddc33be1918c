/* test_tokenizer_cases.h: reading the tokenizer fixtures of tools/fixtures/gen_tokenizer.py
 * and checking a tokenizer against them (shared by test_tokenizer*.c; header-only so each
 * test executable stays one file).
 *
 * <name>.cases: one case per line, HEX(utf-8 input) TAB FLAGS TAB space-separated ids,
 * FLAGS bit 0 = add_special, bit 1 = parse_special. Expected ids come from Hugging Face
 * transformers (an independent implementation). */
#ifndef VKL_TEST_TOKENIZER_CASES_H
#define VKL_TEST_TOKENIZER_CASES_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

typedef struct tcase {
    char *text;
    size_t len;
    int flags;
    int32_t *ids;
    size_t n;
} tcase;

static inline char *tcase_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[sz] = '\0';
    if (size) *size = (size_t)sz;
    return buf;
}

static inline int tcase_hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Decodes hex [h, h + hlen) into a new NUL-terminated buffer. */
static inline char *tcase_unhex(const char *h, size_t hlen, size_t *len) {
    char *out = malloc(hlen / 2 + 1);
    cr_assert(out && hlen % 2 == 0, "bad hex field of length %zu", hlen);
    for (size_t i = 0; i < hlen / 2; i++) {
        int hi = tcase_hexval(h[2 * i]), lo = tcase_hexval(h[2 * i + 1]);
        cr_assert(hi >= 0 && lo >= 0, "bad hex digit");
        out[i] = (char)(hi * 16 + lo);
    }
    out[hlen / 2] = '\0';
    *len = hlen / 2;
    return out;
}

static inline tcase *tcase_load(const char *path, size_t *count) {
    char *data = tcase_read_file(path, NULL);
    cr_assert(data, "cannot read fixture %s", path);
    size_t cap = 256, n = 0;
    tcase *cases = malloc(cap * sizeof *cases);
    for (char *line = data; *line;) {
        char *end = strchr(line, '\n');
        if (!end) end = line + strlen(line);
        char *tab1 = memchr(line, '\t', (size_t)(end - line));
        cr_assert(tab1, "%s: line %zu has no tab", path, n + 1);
        char *tab2 = memchr(tab1 + 1, '\t', (size_t)(end - tab1 - 1));
        cr_assert(tab2, "%s: line %zu has one tab", path, n + 1);
        if (n == cap) cases = realloc(cases, (cap *= 2) * sizeof *cases);
        tcase *c = &cases[n++];
        c->text = tcase_unhex(line, (size_t)(tab1 - line), &c->len);
        c->flags = atoi(tab1 + 1);
        c->ids = malloc(((size_t)(end - tab2) / 2 + 1) * sizeof *c->ids);
        c->n = 0;
        for (char *p = tab2 + 1; p < end;) {
            char *q;
            long v = strtol(p, &q, 10);
            if (q == p) break;
            c->ids[c->n++] = (int32_t)v;
            p = q;
        }
        line = *end ? end + 1 : end;
    }
    free(data);
    *count = n;
    return cases;
}

static inline void tcase_free(tcase *cases, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(cases[i].text);
        free(cases[i].ids);
    }
    free(cases);
}

static inline void tcase_format_ids(char *buf, size_t cap, const int32_t *ids, size_t n) {
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && o + 16 < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%d", i ? " " : "", ids[i]);
}

/* Encodes every case and asserts the ids; reports the first few mismatches in detail. */
static inline void tcase_check_all(const tok_tokenizer *tok, const char *path) {
    size_t n;
    tcase *cases = tcase_load(path, &n);
    cr_assert(n >= 200 * 4, "%s: only %zu cases", path, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        tcase *c = &cases[i];
        int32_t *ids;
        size_t m;
        vkllm_status st = tok_encode(tok, c->text, c->len, c->flags & 1, c->flags & 2, &ids, &m);
        cr_assert_eq(st, VKLLM_OK, "%s case %zu: %s", path, i, vkllm_last_error());
        bool same = m == c->n && (m == 0 || memcmp(ids, c->ids, m * sizeof *ids) == 0);
        if (!same && bad++ < 8) {
            char got[1024], want[1024];
            tcase_format_ids(got, sizeof got, ids, m);
            tcase_format_ids(want, sizeof want, c->ids, c->n);
            cr_log_error("%s line %zu flags %d text '%s':\n  got  [%s]\n  want [%s]", path, i + 1,
                         c->flags, c->text, got, want);
        }
        free(ids);
    }
    cr_assert_eq(bad, 0, "%s: %zu of %zu cases differ from the reference ids", path, bad, n);
    tcase_free(cases, n);
}

/* decode(encode(s)) == s for every fixture string (add_special off; special tokens rendered
 * when they were parsed). Strings containing U+2581 are skipped for SPM, whose decoding
 * turns that character into a space by design. Also feeds ids one at a time through the
 * streaming decoder and checks every chunk is complete UTF-8 and the chunks add up. */
static inline void tcase_check_roundtrip(const tok_tokenizer *tok, const char *path) {
    size_t n;
    tcase *cases = tcase_load(path, &n);
    size_t checked = 0;
    for (size_t i = 0; i < n; i++) {
        tcase *c = &cases[i];
        if (c->flags & 1) continue;
        if (tok_get_kind(tok) == TOK_KIND_SPM && strstr(c->text, "\xE2\x96\x81")) continue;
        if (strlen(c->text) != c->len) continue; /* embedded NUL: compared by length below anyway */
        int32_t *ids;
        size_t m;
        cr_assert_eq(tok_encode(tok, c->text, c->len, false, c->flags & 2, &ids, &m), VKLLM_OK);
        char *text;
        size_t len;
        cr_assert_eq(tok_decode(tok, ids, m, (c->flags & 2) != 0, &text, &len), VKLLM_OK);
        cr_assert(len == c->len && memcmp(text, c->text, len) == 0,
                  "%s line %zu: round trip of '%s' gave '%s'", path, i + 1, c->text, text);
        free(text);

        tok_decoder *dec;
        cr_assert_eq(tok_decoder_new(tok, (c->flags & 2) != 0, &dec), VKLLM_OK);
        size_t o = 0;
        char *acc = malloc(c->len * 3 + 16);
        for (size_t k = 0; k < m; k++) {
            const char *t;
            size_t l;
            cr_assert_eq(tok_decoder_push(dec, ids[k], &t, &l), VKLLM_OK);
            /* Each chunk alone must be valid UTF-8 (no split characters). */
            for (size_t j = 0; j < l;) {
                unsigned char b = (unsigned char)t[j];
                size_t cl = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 ? 2 : 0;
                cr_assert(cl > 0 && j + cl <= l, "%s line %zu: chunk %zu splits a character", path,
                          i + 1, k);
                for (size_t q = 1; q < cl; q++)
                    cr_assert(((unsigned char)t[j + q] & 0xC0) == 0x80, "%s line %zu: bad chunk",
                              path, i + 1);
                j += cl;
            }
            memcpy(acc + o, t, l);
            o += l;
        }
        const char *t;
        size_t l;
        tok_decoder_flush(dec, &t, &l);
        cr_assert_eq(l, 0, "%s line %zu: bytes left over at the end", path, i + 1);
        cr_assert(o == c->len && memcmp(acc, c->text, o) == 0,
                  "%s line %zu: streamed decode differs", path, i + 1);
        free(acc);
        tok_decoder_free(dec);
        free(ids);
        checked++;
    }
    cr_assert(checked >= 300, "%s: only %zu round trips checked", path, checked);
    tcase_free(cases, n);
}

#endif
