/* tok_spm.c: SentencePiece BPE-by-scores encoding ("llama" vocabularies) of one fragment.
 *
 * Spaces become U+2581; the text is cut into UTF-8 characters; the adjacent pair whose
 * concatenation is a vocabulary token with the highest score merges first (ties: leftmost)
 * until no pair forms a token; a final symbol that is not a token becomes one <0xXX> token
 * per byte (byte fallback), or unk when the vocabulary has no byte tokens. */
#include "model/tok_internal.h"

#include <stdlib.h>
#include <string.h>

static bool tok_spm_pair(const tok_tokenizer *tok, const char *buf, const tok_sym *l,
                         const tok_sym *r, double *prio, int32_t *id) {
    int32_t t = tok_lookup(tok, buf + l->start, l->len + r->len);
    if (t < 0) return false;
    *prio = -(double)tok->scores[t];
    *id = t;
    return true;
}

vkllm_status tok_spm_encode(const tok_tokenizer *tok, const char *text, size_t len, tok_ids *out) {
    if (len == 0) return VKLLM_OK;
    if (len > UINT32_MAX / 3)
        return vkl_fail(VKLLM_ERR_TOO_LONG, "tokenizer: text fragment of %zu bytes is too long",
                        len);
    /* Escape spaces: each ' ' (1 byte) becomes E2 96 81. */
    size_t spaces = 0;
    for (size_t i = 0; i < len; i++)
        spaces += text[i] == ' ';
    size_t blen = len + 2 * spaces;
    char *buf = malloc(blen);
    tok_sym *syms = malloc(blen * sizeof *syms);
    if (!buf || !syms) {
        free(buf);
        free(syms);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    }
    size_t b = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + b, "\xE2\x96\x81", 3);
            b += 3;
        } else {
            buf[b++] = text[i];
        }
    }
    size_t n = 0;
    for (size_t pos = 0; pos < blen;) {
        uint32_t cp;
        size_t clen = tok_utf8_next(buf + pos, blen - pos, &cp);
        syms[n] = (tok_sym){.prev = (int32_t)n - 1,
                            .next = pos + clen < blen ? (int32_t)n + 1 : -1,
                            .start = (uint32_t)pos,
                            .len = (uint32_t)clen,
                            .id = -1};
        n++;
        pos += clen;
    }
    vkllm_status st = tok_merge_run(tok, buf, syms, n, tok_spm_pair);
    for (int32_t s = 0; st == VKLLM_OK && s >= 0; s = syms[s].next) {
        int32_t id =
            syms[s].id >= 0 ? syms[s].id : tok_lookup(tok, buf + syms[s].start, syms[s].len);
        if (id >= 0) {
            st = tok_ids_push(out, id);
            continue;
        }
        if (tok->byte_id[(uint8_t)buf[syms[s].start]] < 0) {
            if (tok->unk >= 0) st = tok_ids_push(out, tok->unk); /* no byte tokens: one unk */
            continue;
        }
        for (uint32_t k = 0; k < syms[s].len && st == VKLLM_OK; k++) {
            int32_t byte_tok = tok->byte_id[(uint8_t)buf[syms[s].start + k]];
            st = tok_ids_push(out, byte_tok >= 0 ? byte_tok : tok->unk);
        }
    }
    free(buf);
    free(syms);
    return st;
}
