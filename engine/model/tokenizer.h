/* tokenizer.h: text <-> token ids for the vocabularies stored in GGUF files.
 *
 * Supported `tokenizer.ggml.model` values:
 *   "llama" -- SentencePiece BPE-by-scores with byte fallback (Gemma, Llama 2, Mistral);
 *   "gpt2"  -- byte-level BPE with a regex pre-tokenizer chosen by `tokenizer.ggml.pre`
 *              (llama-bpe/llama3 family, qwen2 family, gpt-2 family).
 * Any other model (bert, t5, rwkv, none, ...) is refused with VKLLM_ERR_UNSUPPORTED naming it.
 * An unknown `tokenizer.ggml.pre` for a gpt2 vocabulary is NOT refused: the gpt-2 regex is
 * used, a one-line warning is printed on stderr and kept for the caller (tok_warning()),
 * because llama.cpp does the same and refusing would block many real files.
 *
 * Special tokens (§6.2 of gguf-and-models.md): before the model's algorithm runs, the text
 * is cut around special tokens, leftmost match first and the longest token at that
 * position. User-defined tokens (type 4) are always matched; control (3) and unknown (2)
 * tokens only when the caller passes parse_special. Chat prompts rendered by chat.h
 * contain the BOS text themselves: encode them with add_special=false, parse_special=true.
 *
 * Defaults as llama.cpp before file keys override them: SPM add_bos=true,
 * add_space_prefix=true, bos 1, eos 2, unk 0; BPE add_bos=false except the llama3 family
 * of pre values (true), bos = eos = 11. add_eos defaults to false.
 * End-of-generation set: eos, eot, eom ids plus tokens whose text is one of <|eot_id|>,
 * <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>, <|end_of_text|>, <EOT>, <|eom_id|>,
 * <|return|>, <|call|>, _<EOT>, <｜end▁of▁sentence｜>.
 *
 * The tokenizer copies everything it needs: it does not reference the gguf_file after
 * tok_load returns. It is immutable after load, so encode/decode calls from several
 * threads at once are safe (each decoder is single-threaded). Module prefix: tok_. */
#ifndef VKL_TOKENIZER_H
#define VKL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "model/gguf.h"

typedef struct tok_tokenizer tok_tokenizer;

typedef enum tok_kind {
    TOK_KIND_SPM = 1, /* tokenizer.ggml.model = "llama" */
    TOK_KIND_BPE = 2, /* tokenizer.ggml.model = "gpt2" */
} tok_kind;

/* Values of tokenizer.ggml.token_type. */
typedef enum tok_type {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
} tok_type;

/* Builds a tokenizer from the tokenizer.ggml.* keys of `gguf`. Loading a 262144-token
 * vocabulary takes a few tens of milliseconds (hash maps built once). Errors name the key. */
vkllm_status tok_load(const gguf_file *gguf, tok_tokenizer **out);
void tok_free(tok_tokenizer *tok);

/* The warning produced while loading ("" if none), e.g. an unknown pre-tokenizer. */
const char *tok_warning(const tok_tokenizer *tok);

tok_kind tok_get_kind(const tok_tokenizer *tok);
/* The pre-tokenizer actually used for BPE: "llama3", "qwen2" or "gpt-2"; "" for SPM. */
const char *tok_pre_name(const tok_tokenizer *tok);
size_t tok_vocab_size(const tok_tokenizer *tok);

/* Token text as stored in the vocabulary (SPM: with '▁'; BPE: in the byte alphabet).
 * NUL-terminated; `len` (may be NULL) receives the byte length. NULL for an id out of range. */
const char *tok_token_text(const tok_tokenizer *tok, int32_t id, size_t *len);
tok_type tok_token_type(const tok_tokenizer *tok, int32_t id);
/* Id of the token whose text is exactly `text` (NUL-terminated), or -1. */
int32_t tok_find(const tok_tokenizer *tok, const char *text);

/* Special ids; -1 when the vocabulary has none. */
int32_t tok_bos(const tok_tokenizer *tok);
int32_t tok_eos(const tok_tokenizer *tok);
int32_t tok_eot(const tok_tokenizer *tok); /* eot_token_id, else found by text, else -1 */
bool tok_add_bos(const tok_tokenizer *tok);
bool tok_add_eos(const tok_tokenizer *tok);
/* True when generation should stop at `id` (see the end-of-generation set above). */
bool tok_is_eog(const tok_tokenizer *tok, int32_t id);

/* Encodes `len` bytes of `text` (need not be NUL-terminated; invalid UTF-8 is accepted and
 * ends up as byte tokens). add_special adds BOS/EOS as the tokenizer's add_bos/add_eos say;
 * parse_special lets control tokens written in the text become their ids.
 * On success *ids is a malloc'd array (the caller frees it with free(); NULL when *n is 0). */
vkllm_status tok_encode(const tok_tokenizer *tok, const char *text, size_t len, bool add_special,
                        bool parse_special, int32_t **ids, size_t *n);

/* Raw bytes a token stands for (BPE: byte alphabet undone; SPM: '▁' -> ' ', <0xXX> -> one
 * byte). Control/unknown/unused tokens give their text only when render_special, else
 * nothing. Writes at most `cap` bytes and returns the full length (like snprintf, no NUL). */
size_t tok_token_bytes(const tok_tokenizer *tok, int32_t id, bool render_special, char *buf,
                       size_t cap);

/* ---------------------------------------------------------------- streaming decoder
 * Takes ids one at a time and hands out only complete, valid UTF-8: bytes of a character
 * split across tokens (byte-fallback tokens of an emoji, a byte-level BPE token ending in
 * the middle of a character) are held until the character is complete. Invalid sequences
 * become U+FFFD. For SPM with add_space_prefix, the leading space of the first text token
 * is dropped (the space the encoder added). */
typedef struct tok_decoder tok_decoder;

vkllm_status tok_decoder_new(const tok_tokenizer *tok, bool render_special, tok_decoder **out);
void tok_decoder_free(tok_decoder *dec);
/* Feeds one id. *text points at the newly complete text (NOT NUL-terminated), valid until
 * the next call on this decoder; *len may be 0. An id out of range is
 * VKLLM_ERR_INVALID_ARGUMENT. */
vkllm_status tok_decoder_push(tok_decoder *dec, int32_t id, const char **text, size_t *len);
/* Ends the stream: held incomplete bytes come out as U+FFFD. Resets the decoder. */
void tok_decoder_flush(tok_decoder *dec, const char **text, size_t *len);

/* Whole-sequence decode through a decoder (flushes at the end). *out is malloc'd and
 * NUL-terminated; the caller frees it. */
vkllm_status tok_decode(const tok_tokenizer *tok, const int32_t *ids, size_t n, bool render_special,
                        char **out, size_t *out_len);

#endif
