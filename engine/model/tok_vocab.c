/* tok_vocab.c: loading the vocabulary from GGUF, the text -> id map, the special-token
 * trie and splitting input text around special tokens; tok_encode() drives the
 * model-specific encoders (tok_spm.c, tok_bpe.c) over the remaining fragments.
 *
 * Invariants: see tok_internal.h. The text map uses open addressing (FNV-1a, linear
 * probing) at load factor <= 0.5, so lookups cost one hash and ~1.5 probes; it is built once
 * at load (262144 Gemma tokens: a few milliseconds). */
#include "model/tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_KEY(name) "tokenizer.ggml." name

/* Texts of tokens that end generation when present (llama.cpp's auto-detected set). */
static const char *const tok_eog_texts[] = {
    "<|eot_id|>",    "<|im_end|>",      "<|end|>",  "<end_of_turn>",
    "<|endoftext|>", "<|end_of_text|>", "<EOT>",    "_<EOT>",
    "<|eom_id|>",    "<|return|>",      "<|call|>", "<｜end▁of▁sentence｜>",
};
/* Texts that name the end-of-turn token when the file has no eot_token_id. */
static const char *const tok_eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "_<EOT>",
};

vkllm_status tok_ids_push(tok_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return VKLLM_OK;
}

static uint32_t tok_hash(const char *s, size_t len) {
    uint32_t h = 2166136261u; /* FNV-1a 32 */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

int32_t tok_lookup(const tok_tokenizer *tok, const char *s, size_t len) {
    uint32_t slot = tok_hash(s, len) & tok->map_mask;
    for (;;) {
        uint32_t v = tok->map_slots[slot];
        if (v == 0) return -1;
        uint32_t id = v - 1;
        if (tok->text_len[id] == len && memcmp(tok->text_arena + tok->text_off[id], s, len) == 0)
            return (int32_t)id;
        slot = (slot + 1) & tok->map_mask;
    }
}

static void tok_map_insert(tok_tokenizer *tok, uint32_t id) {
    const char *s = tok->text_arena + tok->text_off[id];
    size_t len = tok->text_len[id];
    uint32_t slot = tok_hash(s, len) & tok->map_mask;
    for (;;) {
        uint32_t v = tok->map_slots[slot];
        if (v == 0) {
            tok->map_slots[slot] = id + 1;
            return;
        }
        uint32_t other = v - 1;
        if (tok->text_len[other] == len &&
            memcmp(tok->text_arena + tok->text_off[other], s, len) == 0)
            return; /* duplicate text: the lower id wins */
        slot = (slot + 1) & tok->map_mask;
    }
}

/* ---------------------------------------------------------------- special-token trie */

static vkllm_status tok_trie_add(tok_tokenizer *tok, uint32_t *cap, int32_t id) {
    const uint8_t *s = (const uint8_t *)tok->text_arena + tok->text_off[id];
    size_t len = tok->text_len[id];
    int32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t child = tok->trie[node].first_child;
        while (child >= 0 && tok->trie[child].byte != s[i])
            child = tok->trie[child].next_sibling;
        if (child < 0) {
            if (tok->n_trie == *cap) {
                uint32_t new_cap = *cap * 2;
                tok_trie_node *t = realloc(tok->trie, new_cap * sizeof *t);
                if (!t) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
                tok->trie = t;
                *cap = new_cap;
            }
            child = (int32_t)tok->n_trie++;
            tok->trie[child] = (tok_trie_node){.first_child = -1,
                                               .next_sibling = tok->trie[node].first_child,
                                               .token = -1,
                                               .byte = s[i]};
            tok->trie[node].first_child = child;
        }
        node = child;
    }
    if (tok->trie[node].token < 0) tok->trie[node].token = id;
    return VKLLM_OK;
}

static bool tok_is_special_type(uint8_t type) {
    return type == TOK_TYPE_CONTROL || type == TOK_TYPE_UNKNOWN || type == TOK_TYPE_USER_DEFINED;
}

/* Longest special token starting at text[0] that may be matched; returns its byte length
 * (0 if none) and its id in *id. */
static size_t tok_match_special(const tok_tokenizer *tok, const char *text, size_t len,
                                bool parse_special, int32_t *id) {
    size_t best = 0;
    int32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t child = tok->trie[node].first_child;
        while (child >= 0 && tok->trie[child].byte != (uint8_t)text[i])
            child = tok->trie[child].next_sibling;
        if (child < 0) break;
        node = child;
        int32_t t = tok->trie[node].token;
        if (t >= 0 && (parse_special || tok->types[t] == TOK_TYPE_USER_DEFINED)) {
            best = i + 1;
            *id = t;
        }
    }
    return best;
}

/* ---------------------------------------------------------------- loading */

static vkllm_status tok_opt_id(const gguf_file *gguf, const char *key, uint32_t n_vocab,
                               int32_t *id) {
    uint32_t v;
    vkllm_status st = gguf_get_u32(gguf, key, &v);
    if (st == VKLLM_ERR_NOT_FOUND) return VKLLM_OK;
    if (st != VKLLM_OK) return st;
    if (v >= n_vocab)
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: %s = %u is out of range (vocabulary has %u tokens)",
                        gguf->path ? gguf->path : "gguf", key, v, n_vocab);
    *id = (int32_t)v;
    return VKLLM_OK;
}

static vkllm_status tok_opt_bool(const gguf_file *gguf, const char *key, bool *v) {
    vkllm_status st = gguf_get_bool(gguf, key, v);
    return st == VKLLM_ERR_NOT_FOUND ? VKLLM_OK : st;
}

/* An optional per-token array: absent is fine, a wrong type or count is not. */
static vkllm_status tok_opt_array(const gguf_file *gguf, const char *key, uint32_t n_vocab,
                                  bool want_float, const gguf_kv **out) {
    *out = gguf_find_kv(gguf, key);
    if (!*out) return VKLLM_OK;
    const char *path = gguf->path ? gguf->path : "gguf";
    const gguf_value *v = &(*out)->value;
    if (v->type != GGUF_TYPE_ARRAY)
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: %s is not an array (at offset %llu)", path, key,
                        (unsigned long long)(*out)->file_offset);
    gguf_value_type et = v->array.elem_type;
    bool is_float = et == GGUF_TYPE_FLOAT32 || et == GGUF_TYPE_FLOAT64;
    bool is_int = et <= GGUF_TYPE_INT32 || et == GGUF_TYPE_UINT64 || et == GGUF_TYPE_INT64;
    if (want_float ? !is_float : !is_int)
        return vkl_fail(
            VKLLM_ERR_FORMAT, "%s: %s has element type %d, expected %s (at offset %llu)", path, key,
            (int)et, want_float ? "float" : "integer", (unsigned long long)(*out)->file_offset);
    if (v->array.count != n_vocab)
        return vkl_fail(
            VKLLM_ERR_FORMAT,
            "%s: %s has %llu elements but tokenizer.ggml.tokens has %u (at offset %llu)", path, key,
            (unsigned long long)v->array.count, n_vocab, (unsigned long long)(*out)->file_offset);
    return VKLLM_OK;
}

static vkllm_status tok_load_texts(tok_tokenizer *tok, const gguf_kv *tokens) {
    uint32_t n = tok->n_vocab;
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += gguf_array_str(tokens, i).len + 1;
    if (total > UINT32_MAX)
        return vkl_fail(VKLLM_ERR_FORMAT, "tokenizer.ggml.tokens: %llu bytes of text is too much",
                        (unsigned long long)total);
    tok->text_arena = malloc(total);
    tok->text_off = malloc(n * sizeof *tok->text_off);
    tok->text_len = malloc(n * sizeof *tok->text_len);
    if (!tok->text_arena || !tok->text_off || !tok->text_len)
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory for %u tokens", n);
    uint32_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        gguf_str s = gguf_array_str(tokens, i);
        memcpy(tok->text_arena + off, s.ptr, s.len);
        tok->text_arena[off + s.len] = '\0';
        tok->text_off[i] = off;
        tok->text_len[i] = (uint32_t)s.len;
        off += (uint32_t)s.len + 1;
    }
    uint32_t cap = 2;
    while (cap < 2 * n)
        cap *= 2;
    tok->map_slots = calloc(cap, sizeof *tok->map_slots);
    if (!tok->map_slots) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    tok->map_mask = cap - 1;
    for (uint32_t i = 0; i < n; i++)
        tok_map_insert(tok, i);
    return VKLLM_OK;
}

static vkllm_status tok_build_specials(tok_tokenizer *tok) {
    uint32_t cap = 1024;
    tok->trie = malloc(cap * sizeof *tok->trie);
    if (!tok->trie) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    tok->trie[0] = (tok_trie_node){.first_child = -1, .next_sibling = -1, .token = -1};
    tok->n_trie = 1;
    for (uint32_t i = 0; i < tok->n_vocab; i++)
        if (tok_is_special_type(tok->types[i]) && tok->text_len[i] > 0)
            VKL_TRY(tok_trie_add(tok, &cap, (int32_t)i));
    return VKLLM_OK;
}

static void tok_find_eog(tok_tokenizer *tok) {
    if (tok->eot < 0) {
        for (size_t i = 0; i < sizeof tok_eot_texts / sizeof *tok_eot_texts && tok->eot < 0; i++)
            tok->eot = tok_find(tok, tok_eot_texts[i]);
    }
    int32_t listed[] = {tok->eos, tok->eot, tok->eom};
    for (size_t i = 0; i < 3; i++)
        if (listed[i] >= 0) tok->flags[listed[i]] |= TOK_FLAG_EOG;
    for (size_t i = 0; i < sizeof tok_eog_texts / sizeof *tok_eog_texts; i++) {
        int32_t id = tok_find(tok, tok_eog_texts[i]);
        if (id >= 0) tok->flags[id] |= TOK_FLAG_EOG;
    }
}

static vkllm_status tok_load_inner(const gguf_file *gguf, tok_tokenizer *tok) {
    const char *path = gguf->path ? gguf->path : "gguf";
    gguf_str model;
    vkllm_status st = gguf_get_str(gguf, TOK_KEY("model"), &model);
    if (st == VKLLM_ERR_NOT_FOUND)
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: no tokenizer.ggml.model key (no vocabulary)", path);
    VKL_TRY(st);
    if (gguf_str_eq(model, "llama")) {
        tok->kind = TOK_KIND_SPM;
    } else if (gguf_str_eq(model, "gpt2")) {
        tok->kind = TOK_KIND_BPE;
    } else {
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.model '%.*s' is not supported (supported: llama = "
                        "SentencePiece, gpt2 = byte-level BPE)",
                        path, (int)(model.len > 64 ? 64 : model.len), model.ptr);
    }

    const gguf_kv *tokens = gguf_find_kv(gguf, TOK_KEY("tokens"));
    if (!tokens) return vkl_fail(VKLLM_ERR_FORMAT, "%s: tokenizer.ggml.tokens is missing", path);
    if (tokens->value.type != GGUF_TYPE_ARRAY || tokens->value.array.elem_type != GGUF_TYPE_STRING)
        return vkl_fail(VKLLM_ERR_FORMAT,
                        "%s: tokenizer.ggml.tokens is not an array of strings (at offset %llu)",
                        path, (unsigned long long)tokens->file_offset);
    uint64_t count = tokens->value.array.count;
    if (count == 0 || count > INT32_MAX)
        return vkl_fail(VKLLM_ERR_FORMAT,
                        "%s: tokenizer.ggml.tokens has %llu entries (at offset %llu)", path,
                        (unsigned long long)count, (unsigned long long)tokens->file_offset);
    tok->n_vocab = (uint32_t)count;
    uint32_t n = tok->n_vocab;

    const gguf_kv *types_kv, *scores_kv;
    VKL_TRY(tok_opt_array(gguf, TOK_KEY("token_type"), n, false, &types_kv));
    VKL_TRY(tok_opt_array(gguf, TOK_KEY("scores"), n, true, &scores_kv));

    VKL_TRY(tok_load_texts(tok, tokens));
    tok->types = malloc(n);
    tok->flags = calloc(n, 1);
    tok->scores = calloc(n, sizeof *tok->scores);
    if (!tok->types || !tok->flags || !tok->scores)
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    for (uint32_t i = 0; i < n; i++) {
        int64_t t = types_kv ? gguf_array_int(types_kv, i) : TOK_TYPE_NORMAL;
        if (t < 0 || t > TOK_TYPE_BYTE)
            return vkl_fail(VKLLM_ERR_FORMAT,
                            "%s: tokenizer.ggml.token_type[%u] = %lld is not a token type (0..6)",
                            path, i, (long long)t);
        tok->types[i] = (uint8_t)t;
        if (scores_kv) tok->scores[i] = (float)gguf_array_float(scores_kv, i);
    }

    /* Defaults as llama.cpp, then the file's keys. */
    bool default_add_bos = true;
    tok->eot = tok->eom = -1;
    if (tok->kind == TOK_KIND_SPM) {
        tok->bos = 1, tok->eos = 2, tok->unk = 0;
        tok->add_space_prefix = true;
    } else {
        tok->bos = tok->eos = 11, tok->unk = -1;
        tok->add_space_prefix = false;
        default_add_bos = false;
        gguf_str pre = {0};
        st = gguf_get_str(gguf, TOK_KEY("pre"), &pre);
        if (st != VKLLM_OK && st != VKLLM_ERR_NOT_FOUND) return st;
        VKL_TRY(tok_bpe_setup_pre(tok, pre.ptr, pre.len, &default_add_bos));
    }
    if (tok->bos >= (int32_t)n) tok->bos = -1;
    if (tok->eos >= (int32_t)n) tok->eos = -1;
    if (tok->unk >= (int32_t)n) tok->unk = -1;
    tok->add_bos = default_add_bos;
    tok->add_eos = false;
    VKL_TRY(tok_opt_id(gguf, TOK_KEY("bos_token_id"), n, &tok->bos));
    VKL_TRY(tok_opt_id(gguf, TOK_KEY("eos_token_id"), n, &tok->eos));
    VKL_TRY(tok_opt_id(gguf, TOK_KEY("unknown_token_id"), n, &tok->unk));
    VKL_TRY(tok_opt_id(gguf, TOK_KEY("eot_token_id"), n, &tok->eot));
    VKL_TRY(tok_opt_id(gguf, TOK_KEY("eom_token_id"), n, &tok->eom));
    VKL_TRY(tok_opt_bool(gguf, TOK_KEY("add_bos_token"), &tok->add_bos));
    VKL_TRY(tok_opt_bool(gguf, TOK_KEY("add_eos_token"), &tok->add_eos));
    VKL_TRY(tok_opt_bool(gguf, TOK_KEY("add_space_prefix"), &tok->add_space_prefix));

    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        tok->byte_id[b] = tok_lookup(tok, name, 6);
        char spelled[4];
        size_t len = tok_utf8_put(tok_byte_to_cp((uint8_t)b), spelled);
        tok->byte_char_id[b] = tok_lookup(tok, spelled, len);
    }
    VKL_TRY(tok_build_specials(tok));
    tok_find_eog(tok);

    if (tok->kind == TOK_KIND_BPE) {
        const gguf_kv *merges = gguf_find_kv(gguf, TOK_KEY("merges"));
        if (!merges)
            return vkl_fail(VKLLM_ERR_FORMAT,
                            "%s: tokenizer.ggml.merges is missing (required for gpt2)", path);
        if (merges->value.type != GGUF_TYPE_ARRAY ||
            merges->value.array.elem_type != GGUF_TYPE_STRING)
            return vkl_fail(VKLLM_ERR_FORMAT,
                            "%s: tokenizer.ggml.merges is not an array of strings (at offset %llu)",
                            path, (unsigned long long)merges->file_offset);
        uint64_t n_merges = merges->value.array.count;
        if (n_merges > INT32_MAX)
            return vkl_fail(VKLLM_ERR_FORMAT, "%s: tokenizer.ggml.merges has %llu entries", path,
                            (unsigned long long)n_merges);
        uint32_t cap = 2;
        while (cap < 2 * n_merges)
            cap *= 2;
        tok->merge_keys = calloc(cap, sizeof *tok->merge_keys);
        tok->merge_rank = malloc(cap * sizeof *tok->merge_rank);
        tok->merge_result = malloc(cap * sizeof *tok->merge_result);
        if (!tok->merge_keys || !tok->merge_rank || !tok->merge_result)
            return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory for merges");
        tok->merge_mask = cap - 1;
        char *joined = NULL;
        size_t joined_cap = 0;
        for (uint64_t r = 0; r < n_merges; r++) {
            gguf_str m = gguf_array_str(merges, r);
            size_t sp = 1;
            while (sp < m.len && m.ptr[sp] != ' ')
                sp++;
            if (sp >= m.len)
                return free(joined),
                       vkl_fail(VKLLM_ERR_FORMAT,
                                "%s: tokenizer.ggml.merges[%llu] '%.*s' has no space separator",
                                path, (unsigned long long)r, (int)(m.len > 64 ? 64 : m.len), m.ptr);
            int32_t left = tok_lookup(tok, m.ptr, sp);
            int32_t right = tok_lookup(tok, m.ptr + sp + 1, m.len - sp - 1);
            if (m.len - 1 > joined_cap) {
                joined_cap = m.len * 2;
                char *j = realloc(joined, joined_cap);
                if (!j)
                    return free(joined),
                           vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
                joined = j;
            }
            memcpy(joined, m.ptr, sp);
            memcpy(joined + sp, m.ptr + sp + 1, m.len - sp - 1);
            int32_t result = tok_lookup(tok, joined, m.len - 1);
            if (left < 0 || right < 0 || result < 0) continue; /* unusable merge: skipped */
            uint64_t key = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
            uint32_t slot = (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & tok->merge_mask;
            while (tok->merge_keys[slot] != 0 && tok->merge_keys[slot] != key)
                slot = (slot + 1) & tok->merge_mask;
            if (tok->merge_keys[slot] == key) continue; /* duplicate: first rank wins */
            tok->merge_keys[slot] = key;
            tok->merge_rank[slot] = (uint32_t)r;
            tok->merge_result[slot] = result;
        }
        free(joined);
    }
    return VKLLM_OK;
}

vkllm_status tok_load(const gguf_file *gguf, tok_tokenizer **out) {
    *out = NULL;
    if (!gguf) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "tok_load: gguf is NULL");
    tok_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    vkllm_status st = tok_load_inner(gguf, tok);
    if (st != VKLLM_OK) {
        tok_free(tok);
        return st;
    }
    if (tok->warning[0]) fprintf(stderr, "vkllm: warning: %s\n", tok->warning);
    *out = tok;
    return VKLLM_OK;
}

void tok_free(tok_tokenizer *tok) {
    if (!tok) return;
    free(tok->text_arena);
    free(tok->text_off);
    free(tok->text_len);
    free(tok->scores);
    free(tok->types);
    free(tok->flags);
    free(tok->map_slots);
    free(tok->trie);
    free(tok->merge_keys);
    free(tok->merge_rank);
    free(tok->merge_result);
    if (tok->pre_regex) pcre2_code_free(tok->pre_regex);
    free(tok);
}

/* ---------------------------------------------------------------- accessors */

const char *tok_warning(const tok_tokenizer *tok) {
    return tok->warning;
}
tok_kind tok_get_kind(const tok_tokenizer *tok) {
    return tok->kind;
}
const char *tok_pre_name(const tok_tokenizer *tok) {
    return tok->pre_name;
}
size_t tok_vocab_size(const tok_tokenizer *tok) {
    return tok->n_vocab;
}

const char *tok_token_text(const tok_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || (uint32_t)id >= tok->n_vocab) return NULL;
    if (len) *len = tok->text_len[id];
    return tok->text_arena + tok->text_off[id];
}

tok_type tok_token_type(const tok_tokenizer *tok, int32_t id) {
    if (id < 0 || (uint32_t)id >= tok->n_vocab) return TOK_TYPE_UNDEFINED;
    return (tok_type)tok->types[id];
}

int32_t tok_find(const tok_tokenizer *tok, const char *text) {
    return tok_lookup(tok, text, strlen(text));
}

int32_t tok_bos(const tok_tokenizer *tok) {
    return tok->bos;
}
int32_t tok_eos(const tok_tokenizer *tok) {
    return tok->eos;
}
int32_t tok_eot(const tok_tokenizer *tok) {
    return tok->eot;
}
bool tok_add_bos(const tok_tokenizer *tok) {
    return tok->add_bos;
}
bool tok_add_eos(const tok_tokenizer *tok) {
    return tok->add_eos;
}

bool tok_is_eog(const tok_tokenizer *tok, int32_t id) {
    if (id < 0 || (uint32_t)id >= tok->n_vocab) return false;
    return (tok->flags[id] & TOK_FLAG_EOG) != 0;
}

/* ---------------------------------------------------------------- encoding */

static vkllm_status tok_encode_fragment(const tok_tokenizer *tok, const char *text, size_t len,
                                        bool prev_special, tok_ids *out) {
    if (tok->kind == TOK_KIND_BPE) return tok_bpe_encode(tok, text, len, out);
    if (!(tok->add_space_prefix && prev_special)) return tok_spm_encode(tok, text, len, out);
    /* SPM: one space goes in front of a fragment at the start or after a special token. */
    char *spaced = malloc(len + 1);
    if (!spaced) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    spaced[0] = ' ';
    memcpy(spaced + 1, text, len);
    vkllm_status st = tok_spm_encode(tok, spaced, len + 1, out);
    free(spaced);
    return st;
}

static vkllm_status tok_encode_inner(const tok_tokenizer *tok, const char *text, size_t len,
                                     bool add_special, bool parse_special, tok_ids *out) {
    if (add_special && tok->add_bos && tok->bos >= 0) VKL_TRY(tok_ids_push(out, tok->bos));
    bool prev_special = true;
    size_t frag_start = 0, i = 0;
    while (i < len) {
        int32_t id = -1;
        size_t m = tok_match_special(tok, text + i, len - i, parse_special, &id);
        if (m == 0) {
            i++;
            continue;
        }
        if (i > frag_start)
            VKL_TRY(tok_encode_fragment(tok, text + frag_start, i - frag_start, prev_special, out));
        VKL_TRY(tok_ids_push(out, id));
        prev_special = true;
        i += m;
        frag_start = i;
    }
    if (len > frag_start)
        VKL_TRY(tok_encode_fragment(tok, text + frag_start, len - frag_start, prev_special, out));
    if (add_special && tok->add_eos && tok->eos >= 0) VKL_TRY(tok_ids_push(out, tok->eos));
    return VKLLM_OK;
}

vkllm_status tok_encode(const tok_tokenizer *tok, const char *text, size_t len, bool add_special,
                        bool parse_special, int32_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    if (!tok || (!text && len > 0))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "tok_encode: NULL tokenizer or text");
    tok_ids out = {0};
    vkllm_status st = tok_encode_inner(tok, text, len, add_special, parse_special, &out);
    if (st != VKLLM_OK) {
        free(out.v);
        return st;
    }
    if (out.n == 0) {
        free(out.v);
        out.v = NULL;
    }
    *ids = out.v;
    *n = out.n;
    return VKLLM_OK;
}
