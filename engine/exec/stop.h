/* stop.h: when a sequence ends and which of its text may be streamed.
 *
 * Two layers:
 *   stop_matcher -- stop strings over a stream of text pieces. Text that might still be
 *     the start of a stop string is held back; the text handed out never contains a stop
 *     string nor a prefix of one that later completes. The stop string that completes
 *     first in the text wins (earliest end; at equal ends the longest, i.e. the earliest
 *     start), so the result does not depend on how the text was cut into pieces and the
 *     emitted text cannot contain any stop string (vLLM checks its list in order, which
 *     can let another stop string through).
 *     Output is cut at the match start (or after the stop string with include_stop_str);
 *     the rest is dropped. Output never ends inside a UTF-8 character: an incomplete
 *     sequence at the end of the input is held until it completes or the stream is
 *     flushed. Stop strings must be non-empty valid UTF-8.
 *   stop_seq -- one generated sequence: stop token ids, end-of-generation tokens (unless
 *     ignore_eos), max_tokens, and stop strings through a stop_matcher, fed by the
 *     tokenizer's streaming decoder. The finish reasons map to OpenAI's "stop" (EOS, stop
 *     token, stop string) and "length" (max_tokens).
 *     A stop token or EOG token's own text is never emitted. When a sequence finishes for
 *     any reason, the decoder's incomplete bytes (as U+FFFD) and the matcher's held text
 *     are flushed into that last event, unless a stop string completes in them.
 * Module prefix: stop_. */
#ifndef VKL_STOP_H
#define VKL_STOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "exec/sampler.h"
#include "model/tokenizer.h"

/* ---------------------------------------------------------------- stop strings */

typedef struct stop_matcher stop_matcher;

/* Copies the strings. Errors: a NULL, empty or invalid UTF-8 string (named by index). */
vkllm_status stop_matcher_create(const char *const *stops, size_t n_stops, bool include_stop_str,
                                 stop_matcher **out);
void stop_matcher_free(stop_matcher *m);

typedef struct stop_text {
    const char *text; /* safe to emit now; valid until the next call on the matcher */
    size_t len;
    bool stopped;       /* a stop string completed (now or before): emit nothing more */
    int32_t stop_index; /* which stop string (index given at create), -1 if none */
} stop_text;

/* Feeds a piece of text (any bytes; len may be 0). After a stop, pushes return stopped
 * with no text. */
vkllm_status stop_matcher_push(stop_matcher *m, const char *piece, size_t len, stop_text *out);
/* The stream ended without a stop: hands out every held byte (nothing after a stop). The
 * matcher is then empty and may be fed again. */
void stop_matcher_flush(stop_matcher *m, const char **text, size_t *len);
/* Bytes currently held back (tests, metrics). */
size_t stop_matcher_held(const stop_matcher *m);

/* ---------------------------------------------------------------- one sequence */

typedef enum stop_reason {
    STOP_NONE = 0, /* still running */
    STOP_EOS,      /* an end-of-generation token (tok_is_eog), ignore_eos off */
    STOP_TOKEN,    /* one of stop_token_ids */
    STOP_STRING,   /* one of stop_strings */
    STOP_LENGTH,   /* max_tokens generated */
} stop_reason;

/* OpenAI finish_reason: "stop" for EOS / token / string, "length", NULL for STOP_NONE. */
const char *stop_finish_reason(stop_reason reason);

typedef struct stop_seq stop_seq;

/* Copies stop ids and strings from `params` (validated first). */
vkllm_status stop_seq_create(const sampler_params *params, stop_seq **out);
void stop_seq_free(stop_seq *s);

typedef struct stop_event {
    const char *text; /* text to stream now; valid until the next call on this stop_seq */
    size_t len;
    stop_reason reason; /* STOP_NONE while the sequence goes on */
    int32_t stop_index; /* STOP_STRING: index of the string; STOP_TOKEN/EOS: the token */
} stop_event;

/* One generated token. is_eog: tok_is_eog(tokenizer, token). dec: the sequence's
 * streaming decoder (NULL: no text, token-level checks only). Checks in this order:
 * stop token id, EOG, then decodes and matches stop strings, then max_tokens. After the
 * sequence finished, a push is VKLLM_ERR_INVALID_ARGUMENT. */
vkllm_status stop_seq_push(stop_seq *s, tok_decoder *dec, int32_t token, bool is_eog,
                           stop_event *out);
/* Ends a sequence for a reason outside the sampler (abort, context full): flushes the
 * decoder and held text into *out (reason stays as it was, or STOP_STRING if one
 * completes in the flushed bytes). */
vkllm_status stop_seq_finish(stop_seq *s, tok_decoder *dec, stop_event *out);

uint32_t stop_seq_generated(const stop_seq *s);
stop_reason stop_seq_reason(const stop_seq *s);

#endif
