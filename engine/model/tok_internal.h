/* tok_internal.h: the tokenizer's private state, shared by the tok_*.c files.
 *
 * Invariants after tok_load():
 *   - token i's text is text_arena + text_off[i], text_len[i] bytes, NUL-terminated;
 *   - the text map holds every token text exactly once (for duplicate texts, the lowest id);
 *   - every special-trie terminal names a token of type control, unknown or user-defined;
 *   - BPE: merge_result[k] is the id of the concatenation of merge k's two tokens, and
 *     byte_char_id[b] is the id of byte b's one-character byte-level spelling (or -1);
 *   - SPM: byte_id[b] is the id of "<0xXX>" (or -1). */
#ifndef VKL_TOK_INTERNAL_H
#define VKL_TOK_INTERNAL_H

#include "model/tokenizer.h"

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#define TOK_FLAG_EOG 1u

typedef struct tok_trie_node {
    int32_t first_child;
    int32_t next_sibling;
    int32_t token; /* id of the special token ending here, or -1 */
    uint8_t byte;
} tok_trie_node;

struct tok_tokenizer {
    tok_kind kind;
    uint32_t n_vocab;
    char *text_arena;
    uint32_t *text_off;
    uint32_t *text_len;
    float *scores;  /* SPM merge priority; zeros when absent */
    uint8_t *types; /* tok_type per id */
    uint8_t *flags; /* TOK_FLAG_* per id */

    uint32_t *map_slots; /* text -> id + 1; 0 = empty */
    uint32_t map_mask;

    tok_trie_node *trie; /* node 0 is the root */
    uint32_t n_trie;

    int32_t byte_id[256];      /* SPM byte fallback tokens */
    int32_t byte_char_id[256]; /* BPE single-byte tokens */

    uint64_t *merge_keys; /* (left << 32 | right) + 1; 0 = empty */
    uint32_t *merge_rank;
    int32_t *merge_result;
    uint32_t merge_mask;

    pcre2_code *pre_regex;
    char pre_name[16];
    bool ignore_merges;

    int32_t bos, eos, eot, eom, unk;
    bool add_bos, add_eos, add_space_prefix;
    char warning[256];
};

/* A growable id list. */
typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;
vkllm_status tok_ids_push(tok_ids *ids, int32_t id);

/* Id of the token whose text is exactly [s, s + len), or -1. */
int32_t tok_lookup(const tok_tokenizer *tok, const char *s, size_t len);

/* Model-specific encoders of one text fragment (specials already removed). */
vkllm_status tok_spm_encode(const tok_tokenizer *tok, const char *text, size_t len, tok_ids *out);
vkllm_status tok_bpe_encode(const tok_tokenizer *tok, const char *text, size_t len, tok_ids *out);
/* Picks and compiles the pre-tokenizer regex for `pre` (may be NULL/empty); sets
 * pre_name, ignore_merges and, when the file does not say, the add_bos default. */
vkllm_status tok_bpe_setup_pre(tok_tokenizer *tok, const char *pre, size_t pre_len,
                               bool *default_add_bos);

/* Symbols over a byte buffer, merged pairwise (tok_merge.c). A symbol covers
 * [start, start + len) of the buffer; merged-away symbols have len 0. */
typedef struct tok_sym {
    int32_t prev, next;
    uint32_t start, len;
    int32_t id; /* token id of the symbol's text, -1 if not (yet) known */
} tok_sym;

/* Whether l and r may merge: on true, *prio (lower merges first) and *id (the merged token). */
typedef bool (*tok_pair_fn)(const tok_tokenizer *tok, const char *buf, const tok_sym *l,
                            const tok_sym *r, double *prio, int32_t *id);

/* Repeatedly merges the adjacent pair with the lowest prio (ties: leftmost) until no pair
 * can merge. syms[0..n) start linked in order. */
vkllm_status tok_merge_run(const tok_tokenizer *tok, const char *buf, tok_sym *syms, size_t n,
                           tok_pair_fn pair);

/* Byte-level alphabet (GPT-2 bytes_to_unicode). */
uint32_t tok_byte_to_cp(uint8_t byte);
/* Byte for a code point of the alphabet, or -1 when the code point is not in it. */
int tok_cp_to_byte(uint32_t cp);
/* Writes the UTF-8 of cp (<= 4 bytes) and returns the byte count. */
size_t tok_utf8_put(uint32_t cp, char *dst);
/* Decodes one UTF-8 character at s (n bytes left); returns its length (1 for an invalid
 * byte, with *cp = the byte value | 0x80000000). */
size_t tok_utf8_next(const char *s, size_t n, uint32_t *cp);
/* Length of the UTF-8 sequence led by byte b (1 for invalid leads and continuation bytes). */
size_t tok_utf8_len(uint8_t b);

#endif
