/* tok_decode.c: ids back to text -- the bytes of one token, and the streaming decoder.
 *
 * The decoder appends each token's bytes to a pending buffer and hands out the longest
 * prefix that is complete UTF-8. An incomplete sequence at the end (at most 3 bytes) waits
 * for the next token; a byte that can never start or continue a valid sequence becomes
 * U+FFFD at once. So the concatenation of everything handed out equals the decoded byte
 * string whenever that string is valid UTF-8. */
#include "model/tok_internal.h"

#include <stdlib.h>
#include <string.h>

static int tok_hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static void tok_put(char *buf, size_t cap, size_t *n, const char *s, size_t len) {
    if (*n < cap) memcpy(buf + *n, s, len <= cap - *n ? len : cap - *n);
    *n += len;
}

size_t tok_token_bytes(const tok_tokenizer *tok, int32_t id, bool render_special, char *buf,
                       size_t cap) {
    if (id < 0 || (uint32_t)id >= tok->n_vocab) return 0;
    const char *text = tok->text_arena + tok->text_off[id];
    size_t len = tok->text_len[id];
    uint8_t type = tok->types[id];
    size_t n = 0;
    if (type == TOK_TYPE_CONTROL || type == TOK_TYPE_UNKNOWN || type == TOK_TYPE_UNUSED) {
        if (render_special) tok_put(buf, cap, &n, text, len);
        return n;
    }
    if (tok->kind == TOK_KIND_SPM) {
        if (type == TOK_TYPE_BYTE && len == 6 && memcmp(text, "<0x", 3) == 0 && text[5] == '>') {
            int hi = tok_hex(text[3]), lo = tok_hex(text[4]);
            if (hi >= 0 && lo >= 0) {
                char b = (char)(hi * 16 + lo);
                tok_put(buf, cap, &n, &b, 1);
                return n;
            }
        }
        for (size_t i = 0; i < len;) {
            if (i + 3 <= len && memcmp(text + i, "\xE2\x96\x81", 3) == 0) {
                tok_put(buf, cap, &n, " ", 1);
                i += 3;
            } else {
                tok_put(buf, cap, &n, text + i, 1);
                i++;
            }
        }
        return n;
    }
    /* Byte-level BPE: undo the alphabet; code points outside it (text of user-defined
     * tokens stored verbatim) pass through unchanged. */
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t clen = tok_utf8_next(text + i, len - i, &cp);
        int byte = (cp & 0x80000000u) ? -1 : tok_cp_to_byte(cp);
        if (byte >= 0) {
            char b = (char)byte;
            tok_put(buf, cap, &n, &b, 1);
        } else {
            tok_put(buf, cap, &n, text + i, clen);
        }
        i += clen;
    }
    return n;
}

struct tok_decoder {
    const tok_tokenizer *tok;
    bool render_special;
    bool seen_text; /* for SPM's leading-space rule */
    char pending[4];
    size_t n_pending;
    char *piece; /* one token's bytes */
    size_t piece_cap;
    char *out; /* what the last call handed out */
    size_t out_cap;
};

vkllm_status tok_decoder_new(const tok_tokenizer *tok, bool render_special, tok_decoder **out) {
    *out = NULL;
    tok_decoder *d = calloc(1, sizeof *d);
    if (!d) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    d->tok = tok;
    d->render_special = render_special;
    *out = d;
    return VKLLM_OK;
}

void tok_decoder_free(tok_decoder *dec) {
    if (!dec) return;
    free(dec->piece);
    free(dec->out);
    free(dec);
}

static vkllm_status tok_grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return VKLLM_OK;
    size_t cap2 = need < 64 ? 64 : need * 2;
    char *b = realloc(*buf, cap2);
    if (!b) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    *buf = b;
    *cap = cap2;
    return VKLLM_OK;
}

/* How a byte sequence at s (n bytes) starts: > 0 a complete valid character of that length,
 * 0 a valid but incomplete prefix, < 0 invalid (replace the first byte). */
static int tok_utf8_status(const uint8_t *s, size_t n) {
    size_t len = tok_utf8_len(s[0]);
    if (s[0] < 0x80) return 1;
    if (len == 1) return -1;
    uint8_t lo = 0x80, hi = 0xBF;
    if (s[0] == 0xE0) lo = 0xA0;
    if (s[0] == 0xED) hi = 0x9F;
    if (s[0] == 0xF0) lo = 0x90;
    if (s[0] == 0xF4) hi = 0x8F;
    for (size_t i = 1; i < len; i++) {
        if (i >= n) return 0;
        uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (s[i] < l || s[i] > h) return -1;
    }
    return (int)len;
}

vkllm_status tok_decoder_push(tok_decoder *dec, int32_t id, const char **text, size_t *len) {
    *text = "";
    *len = 0;
    const tok_tokenizer *tok = dec->tok;
    if (id < 0 || (uint32_t)id >= tok->n_vocab)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "tok_decoder_push: token id %d out of range [0, %u)", id, tok->n_vocab);
    size_t n = tok_token_bytes(tok, id, dec->render_special, dec->piece, dec->piece_cap);
    if (n > dec->piece_cap) {
        VKL_TRY(tok_grow(&dec->piece, &dec->piece_cap, n));
        n = tok_token_bytes(tok, id, dec->render_special, dec->piece, dec->piece_cap);
    }
    const char *src = dec->piece;
    if (tok->kind == TOK_KIND_SPM && tok->add_space_prefix && !dec->seen_text && n > 0 &&
        tok->types[id] != TOK_TYPE_CONTROL && tok->types[id] != TOK_TYPE_UNKNOWN) {
        if (src[0] == ' ') src++, n--;
        dec->seen_text = true;
    }
    /* pending + src, then emit the valid complete prefix. */
    VKL_TRY(tok_grow(&dec->out, &dec->out_cap, (dec->n_pending + n) * 3 + 4));
    char *all = malloc(dec->n_pending + n + 1);
    if (!all) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    if (dec->n_pending) memcpy(all, dec->pending, dec->n_pending);
    if (n) memcpy(all + dec->n_pending, src, n);
    size_t total = dec->n_pending + n, i = 0, o = 0;
    dec->n_pending = 0;
    while (i < total) {
        int s = tok_utf8_status((const uint8_t *)all + i, total - i);
        if (s > 0) {
            memcpy(dec->out + o, all + i, (size_t)s);
            o += (size_t)s;
            i += (size_t)s;
        } else if (s == 0) {
            memcpy(dec->pending, all + i, total - i);
            dec->n_pending = total - i;
            break;
        } else {
            memcpy(dec->out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    free(all);
    *text = dec->out;
    *len = o;
    return VKLLM_OK;
}

void tok_decoder_flush(tok_decoder *dec, const char **text, size_t *len) {
    *text = "";
    *len = 0;
    if (dec->n_pending > 0 && tok_grow(&dec->out, &dec->out_cap, 3) == VKLLM_OK) {
        /* An incomplete sequence is one error: one U+FFFD. */
        memcpy(dec->out, "\xEF\xBF\xBD", 3);
        *text = dec->out;
        *len = 3;
    }
    dec->n_pending = 0;
    dec->seen_text = false;
}

vkllm_status tok_decode(const tok_tokenizer *tok, const int32_t *ids, size_t n, bool render_special,
                        char **out, size_t *out_len) {
    *out = NULL;
    if (out_len) *out_len = 0;
    tok_decoder *dec;
    VKL_TRY(tok_decoder_new(tok, render_special, &dec));
    char *res = NULL;
    size_t rlen = 0, rcap = 0;
    vkllm_status st = tok_grow(&res, &rcap, 64);
    for (size_t i = 0; i <= n && st == VKLLM_OK; i++) {
        const char *t;
        size_t l;
        if (i < n) {
            st = tok_decoder_push(dec, ids[i], &t, &l);
            if (st != VKLLM_OK) break;
        } else {
            tok_decoder_flush(dec, &t, &l);
        }
        st = tok_grow(&res, &rcap, rlen + l + 1);
        if (st != VKLLM_OK) break;
        memcpy(res + rlen, t, l);
        rlen += l;
    }
    tok_decoder_free(dec);
    if (st != VKLLM_OK) {
        free(res);
        return st;
    }
    res[rlen] = '\0';
    *out = res;
    if (out_len) *out_len = rlen;
    return VKLLM_OK;
}
