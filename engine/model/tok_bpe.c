/* tok_bpe.c: byte-level BPE encoding ("gpt2" vocabularies) and its regex pre-tokenizer.
 *
 * A fragment is cut by the pre-tokenizer regex into pieces (the matches, and any text
 * between matches as pieces of its own, like Hugging Face's Split "isolated"). Each piece's
 * bytes are spelled in the byte-level alphabet; with ignore_merges (llama3 family) a piece
 * that is itself a token is emitted whole; otherwise its characters merge pairwise, lowest
 * merge rank first (ties: leftmost), until no adjacent pair has a merge.
 *
 * Regexes run in PCRE2 with UTF and UCP (Unicode \p{L}, \p{N}, \s) and MATCH_INVALID_UTF, so
 * invalid UTF-8 in the input cannot make matching fail; such bytes end up in gap pieces. */
#include "model/tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Hugging Face's originals (llama.cpp spells (?i:...) as explicit classes: equivalent). */
static const char tok_re_llama3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char tok_re_qwen2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char tok_re_gpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char *const tok_pre_llama3[] = {"llama3",    "llama-v3", "llama-bpe", "falcon3",
                                             "falcon-h1", "pixtral",  "midm-2.0",  "lfm2"};
static const char *const tok_pre_llama3_regex_only[] = {"dbrx", "smaug-bpe"};
static const char *const tok_pre_qwen2[] = {"qwen2", "deepseek-r1-qwen", "megrez"};
static const char *const tok_pre_gpt2[] = {"gpt-2", "phi-2", "roberta-bpe"};

static bool tok_pre_in(const char *pre, size_t len, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == len && memcmp(list[i], pre, len) == 0) return true;
    return false;
}
#define TOK_PRE_IN(pre, len, list) tok_pre_in(pre, len, list, sizeof list / sizeof *list)

vkllm_status tok_bpe_setup_pre(tok_tokenizer *tok, const char *pre, size_t pre_len,
                               bool *default_add_bos) {
    const char *regex = tok_re_gpt2;
    const char *name = "gpt-2";
    if (pre && TOK_PRE_IN(pre, pre_len, tok_pre_llama3)) {
        regex = tok_re_llama3, name = "llama3";
        tok->ignore_merges = true;
        *default_add_bos = true;
    } else if (pre && TOK_PRE_IN(pre, pre_len, tok_pre_llama3_regex_only)) {
        regex = tok_re_llama3, name = "llama3";
    } else if (pre && TOK_PRE_IN(pre, pre_len, tok_pre_qwen2)) {
        regex = tok_re_qwen2, name = "qwen2";
    } else if (!(pre && TOK_PRE_IN(pre, pre_len, tok_pre_gpt2))) {
        snprintf(tok->warning, sizeof tok->warning,
                 "tokenizer.ggml.pre '%.*s' is not known; using the gpt-2 pre-tokenizer regex "
                 "(token ids may differ from the model's own tokenizer)",
                 pre ? (int)(pre_len > 64 ? 64 : pre_len) : 0, pre ? pre : "");
    }
    snprintf(tok->pre_name, sizeof tok->pre_name, "%s", name);
    int err;
    PCRE2_SIZE err_off;
    tok->pre_regex =
        pcre2_compile((PCRE2_SPTR)regex, PCRE2_ZERO_TERMINATED,
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_off, NULL);
    if (!tok->pre_regex) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return vkl_fail(VKLLM_ERR_INTERNAL, "tokenizer: pre-tokenizer regex %s: %s at %zu", name,
                        (const char *)msg, (size_t)err_off);
    }
    pcre2_jit_compile(tok->pre_regex, PCRE2_JIT_COMPLETE); /* optional: falls back if absent */
    return VKLLM_OK;
}

static bool tok_bpe_pair(const tok_tokenizer *tok, const char *buf, const tok_sym *l,
                         const tok_sym *r, double *prio, int32_t *id) {
    (void)buf;
    if (l->id < 0 || r->id < 0) return false;
    uint64_t key = ((uint64_t)(uint32_t)l->id << 32 | (uint32_t)r->id) + 1;
    uint32_t slot = (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & tok->merge_mask;
    for (;;) {
        uint64_t k = tok->merge_keys[slot];
        if (k == 0) return false;
        if (k == key) break;
        slot = (slot + 1) & tok->merge_mask;
    }
    *prio = tok->merge_rank[slot];
    *id = tok->merge_result[slot];
    return true;
}

/* Scratch reused across the pieces of one fragment. */
typedef struct tok_bpe_scratch {
    char *buf;
    tok_sym *syms;
    size_t cap; /* bytes of buf; syms has as many entries */
} tok_bpe_scratch;

static vkllm_status tok_bpe_piece(const tok_tokenizer *tok, const uint8_t *piece, size_t len,
                                  tok_bpe_scratch *sc, tok_ids *out) {
    if (len == 0) return VKLLM_OK;
    if (2 * len > sc->cap) {
        size_t cap = 4 * len;
        char *buf = realloc(sc->buf, cap);
        if (buf) sc->buf = buf;
        tok_sym *syms = realloc(sc->syms, cap * sizeof *syms);
        if (syms) sc->syms = syms;
        if (!buf || !syms)
            return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
        sc->cap = cap;
    }
    size_t blen = 0;
    for (size_t i = 0; i < len; i++) {
        size_t clen = tok_utf8_put(tok_byte_to_cp(piece[i]), sc->buf + blen);
        sc->syms[i] = (tok_sym){.prev = (int32_t)i - 1,
                                .next = i + 1 < len ? (int32_t)i + 1 : -1,
                                .start = (uint32_t)blen,
                                .len = (uint32_t)clen,
                                .id = tok->byte_char_id[piece[i]]};
        blen += clen;
    }
    if (tok->ignore_merges) {
        int32_t whole = tok_lookup(tok, sc->buf, blen);
        if (whole >= 0) return tok_ids_push(out, whole);
    }
    VKL_TRY(tok_merge_run(tok, sc->buf, sc->syms, len, tok_bpe_pair));
    for (int32_t s = 0; s >= 0; s = sc->syms[s].next) {
        int32_t id = sc->syms[s].id;
        if (id < 0) id = tok->unk; /* a byte missing from the vocabulary */
        if (id >= 0) VKL_TRY(tok_ids_push(out, id));
    }
    return VKLLM_OK;
}

vkllm_status tok_bpe_encode(const tok_tokenizer *tok, const char *text, size_t len, tok_ids *out) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(tok->pre_regex, NULL);
    if (!md) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    tok_bpe_scratch sc = {0};
    const uint8_t *u = (const uint8_t *)text;
    size_t pos = 0;
    vkllm_status st = VKLLM_OK;
    while (pos < len && st == VKLLM_OK) {
        int rc = pcre2_match(tok->pre_regex, u, len, pos, 0, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            st = vkl_fail(VKLLM_ERR_INTERNAL, "tokenizer: pre-tokenizer match at byte %zu: %s", pos,
                          (const char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t m_start = ov[0], m_end = ov[1];
        if (m_start > pos) st = tok_bpe_piece(tok, u + pos, m_start - pos, &sc, out);
        if (st != VKLLM_OK) break;
        if (m_end == m_start) {
            /* An empty match cannot happen with these regexes; step over a character to be safe. */
            m_end = m_start + tok_utf8_len(u[m_start]);
            if (m_end > len) m_end = len;
        }
        st = tok_bpe_piece(tok, u + m_start, m_end - m_start, &sc, out);
        pos = m_end;
    }
    if (st == VKLLM_OK && pos < len) st = tok_bpe_piece(tok, u + pos, len - pos, &sc, out);
    free(sc.buf);
    free(sc.syms);
    pcre2_match_data_free(md);
    return st;
}
