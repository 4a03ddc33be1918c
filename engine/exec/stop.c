/* stop.c: stop strings over streamed text and the per-sequence stop rules (see stop.h).
 *
 * Matcher invariant between calls: buf[consumed..len) is the held text; it contains no
 * complete stop string, and it is either empty, a proper prefix of some stop string
 * (starting at its earliest such position), or ends in an incomplete UTF-8 sequence.
 * buf[0..consumed) is the text handed out by the last call, kept alive until the next. */
#include "exec/stop.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- byte buffer */

typedef struct byte_buf {
    char *data;
    size_t len, cap;
} byte_buf;

static vkllm_status buf_append(byte_buf *b, const char *bytes, size_t n, const char *what) {
    if (n == 0) return VKLLM_OK;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "%s: %zu bytes", what, cap);
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the sequence a lead byte starts (1 for ASCII and for invalid bytes). */
static size_t utf8_seq_len(unsigned char c) {
    if (c >= 0xF0 && c <= 0xF4) return 4;
    if (c >= 0xE0) return c <= 0xEF ? 3 : 1;
    if (c >= 0xC2) return 2;
    return 1;
}

static bool utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq_len(c);
        if (k == 1 || i + k > n) return false;
        for (size_t j = 1; j < k; j++)
            if ((u[i + j] & 0xC0) != 0x80) return false;
        /* overlong 3/4-byte forms, surrogates, code points above U+10FFFF */
        if (c == 0xE0 && u[i + 1] < 0xA0) return false;
        if (c == 0xED && u[i + 1] >= 0xA0) return false;
        if (c == 0xF0 && u[i + 1] < 0x90) return false;
        if (c == 0xF4 && u[i + 1] >= 0x90) return false;
        i += k;
    }
    return true;
}

/* Where a trailing incomplete UTF-8 sequence starts (n when the end is complete). */
static size_t utf8_complete_end(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t j = n;
    for (int back = 0; back < 4 && j > 0; back++) {
        j--;
        if ((u[j] & 0xC0) != 0x80) {
            size_t k = utf8_seq_len(u[j]);
            return j + k > n ? j : n;
        }
    }
    return n;
}

/* Moves a cut at `pos` back to the start of the character it would split. */
static size_t utf8_char_boundary(const char *s, size_t n, size_t pos) {
    const unsigned char *u = (const unsigned char *)s;
    size_t j = pos;
    for (int back = 0; back < 3 && j > 0 && j < n && (u[j] & 0xC0) == 0x80; back++) {
        j--;
        if ((u[j] & 0xC0) != 0x80) return j + utf8_seq_len(u[j]) > pos ? j : pos;
    }
    return pos;
}

/* ---------------------------------------------------------------- matcher */

struct stop_matcher {
    char **stops;
    size_t *lens;
    size_t n_stops;
    size_t max_len;
    bool include_stop_str;
    byte_buf buf;
    size_t consumed;
    bool stopped;
    int32_t stop_index;
};

vkllm_status stop_matcher_create(const char *const *stops, size_t n_stops, bool include_stop_str,
                                 stop_matcher **out) {
    *out = NULL;
    if (n_stops && !stops)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "stop strings: NULL array of %zu", n_stops);
    for (size_t i = 0; i < n_stops; i++) {
        if (!stops[i] || !stops[i][0])
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "stop string %zu is NULL or empty", i);
        if (!utf8_valid(stops[i], strlen(stops[i])))
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "stop string %zu is not valid UTF-8", i);
    }
    stop_matcher *m = calloc(1, sizeof *m);
    if (!m) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "stop matcher");
    m->stops = calloc(n_stops ? n_stops : 1, sizeof *m->stops);
    m->lens = calloc(n_stops ? n_stops : 1, sizeof *m->lens);
    if (!m->stops || !m->lens) {
        stop_matcher_free(m);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "stop matcher: %zu strings", n_stops);
    }
    m->n_stops = n_stops;
    for (size_t i = 0; i < n_stops; i++) {
        m->lens[i] = strlen(stops[i]);
        m->stops[i] = malloc(m->lens[i] + 1);
        if (!m->stops[i]) {
            stop_matcher_free(m);
            return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "stop matcher: string %zu", i);
        }
        memcpy(m->stops[i], stops[i], m->lens[i] + 1);
        if (m->lens[i] > m->max_len) m->max_len = m->lens[i];
    }
    m->include_stop_str = include_stop_str;
    m->stop_index = -1;
    *out = m;
    return VKLLM_OK;
}

void stop_matcher_free(stop_matcher *m) {
    if (!m) return;
    if (m->stops)
        for (size_t i = 0; i < m->n_stops; i++)
            free(m->stops[i]);
    free(m->stops);
    free(m->lens);
    free(m->buf.data);
    free(m);
}

size_t stop_matcher_held(const stop_matcher *m) {
    return m->buf.len - m->consumed;
}

/* Drops the text handed out by the previous call. */
static void matcher_drop_consumed(stop_matcher *m) {
    if (m->consumed == 0) return;
    memmove(m->buf.data, m->buf.data + m->consumed, m->buf.len - m->consumed);
    m->buf.len -= m->consumed;
    m->consumed = 0;
}

vkllm_status stop_matcher_push(stop_matcher *m, const char *piece, size_t len, stop_text *out) {
    *out = (stop_text){.text = "", .len = 0, .stopped = m->stopped, .stop_index = m->stop_index};
    if (m->stopped) return VKLLM_OK;
    if (len && !piece)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "stop matcher: NULL piece of %zu bytes", len);
    matcher_drop_consumed(m);
    VKL_TRY(buf_append(&m->buf, piece, len, "stop matcher buffer"));
    const char *b = m->buf.data;
    const size_t n = m->buf.len;

    /* The stop string that completes first (earliest end), then the longest: the same
     * answer however the text was cut into pieces. */
    size_t best_pos = SIZE_MAX, best_end = SIZE_MAX;
    int32_t best = -1;
    for (size_t i = 0; i < m->n_stops; i++) {
        const char *hit = n ? memmem(b, n, m->stops[i], m->lens[i]) : NULL;
        if (!hit) continue;
        size_t pos = (size_t)(hit - b), end = pos + m->lens[i];
        if (end < best_end || (end == best_end && pos < best_pos)) {
            best_pos = pos;
            best_end = end;
            best = (int32_t)i;
        }
    }
    if (best >= 0) {
        m->stopped = true;
        m->stop_index = best;
        size_t emit = best_pos + (m->include_stop_str ? m->lens[best] : 0);
        *out = (stop_text){.text = b, .len = emit, .stopped = true, .stop_index = best};
        m->consumed = n; /* the rest after the stop string is dropped */
        return VKLLM_OK;
    }

    /* Hold the earliest suffix that is a proper prefix of a stop string. */
    size_t hold = n;
    size_t first = m->max_len > n ? 0 : n - (m->max_len - 1);
    for (size_t i = first; i < n && hold == n; i++) {
        size_t tail = n - i;
        for (size_t s = 0; s < m->n_stops; s++) {
            if (m->lens[s] > tail && memcmp(b + i, m->stops[s], tail) == 0) {
                hold = i;
                break;
            }
        }
    }
    size_t complete = utf8_complete_end(b, n);
    size_t emit = hold < complete ? hold : complete;
    emit = utf8_char_boundary(b, n, emit);
    *out = (stop_text){.text = b, .len = emit, .stopped = false, .stop_index = -1};
    m->consumed = emit;
    return VKLLM_OK;
}

void stop_matcher_flush(stop_matcher *m, const char **text, size_t *len) {
    if (m->stopped) {
        *text = "";
        *len = 0;
        return;
    }
    matcher_drop_consumed(m);
    *text = m->buf.len ? m->buf.data : "";
    *len = m->buf.len;
    m->consumed = m->buf.len;
}

/* ---------------------------------------------------------------- one sequence */

struct stop_seq {
    int32_t *stop_ids;
    size_t n_stop_ids;
    bool ignore_eos;
    uint32_t max_tokens;
    stop_matcher *matcher; /* NULL without stop strings */
    uint32_t generated;
    stop_reason reason;
    int32_t stop_index;
    byte_buf out; /* text of the current event */
};

const char *stop_finish_reason(stop_reason reason) {
    switch (reason) {
    case STOP_EOS:
    case STOP_TOKEN:
    case STOP_STRING:
        return "stop";
    case STOP_LENGTH:
        return "length";
    case STOP_NONE:
        break;
    }
    return NULL;
}

vkllm_status stop_seq_create(const sampler_params *params, stop_seq **out) {
    *out = NULL;
    VKL_TRY(sampler_params_validate(params));
    stop_seq *s = calloc(1, sizeof *s);
    if (!s) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "stop_seq");
    s->ignore_eos = params->ignore_eos;
    s->max_tokens = params->max_tokens;
    s->stop_index = -1;
    if (params->n_stop_token_ids) {
        s->stop_ids = malloc(params->n_stop_token_ids * sizeof(int32_t));
        if (!s->stop_ids) {
            stop_seq_free(s);
            return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "stop_seq: %zu stop ids",
                            params->n_stop_token_ids);
        }
        memcpy(s->stop_ids, params->stop_token_ids, params->n_stop_token_ids * sizeof(int32_t));
        s->n_stop_ids = params->n_stop_token_ids;
    }
    if (params->n_stop_strings) {
        vkllm_status st = stop_matcher_create(params->stop_strings, params->n_stop_strings,
                                              params->include_stop_str, &s->matcher);
        if (st != VKLLM_OK) {
            stop_seq_free(s);
            return st;
        }
    }
    *out = s;
    return VKLLM_OK;
}

void stop_seq_free(stop_seq *s) {
    if (!s) return;
    free(s->stop_ids);
    stop_matcher_free(s->matcher);
    free(s->out.data);
    free(s);
}

uint32_t stop_seq_generated(const stop_seq *s) {
    return s->generated;
}
stop_reason stop_seq_reason(const stop_seq *s) {
    return s->reason;
}

/* Text through the stop strings into the event; a completed stop string ends the
 * sequence with STOP_STRING whatever reason was set before. */
static vkllm_status seq_feed(stop_seq *s, const char *text, size_t len) {
    if (!s->matcher) return buf_append(&s->out, text, len, "stop_seq output");
    if (s->reason == STOP_STRING) return VKLLM_OK;
    stop_text t;
    VKL_TRY(stop_matcher_push(s->matcher, text, len, &t));
    VKL_TRY(buf_append(&s->out, t.text, t.len, "stop_seq output"));
    if (t.stopped) {
        s->reason = STOP_STRING;
        s->stop_index = t.stop_index;
    }
    return VKLLM_OK;
}

/* The end of the sequence: the decoder's incomplete bytes, then the held text. */
static vkllm_status seq_flush(stop_seq *s, tok_decoder *dec) {
    if (dec) {
        const char *tail;
        size_t tail_len;
        tok_decoder_flush(dec, &tail, &tail_len);
        VKL_TRY(seq_feed(s, tail, tail_len));
    }
    if (s->matcher && s->reason != STOP_STRING) {
        const char *held;
        size_t held_len;
        stop_matcher_flush(s->matcher, &held, &held_len);
        VKL_TRY(buf_append(&s->out, held, held_len, "stop_seq output"));
    }
    return VKLLM_OK;
}

static void seq_event(const stop_seq *s, stop_event *out) {
    *out = (stop_event){.text = s->out.len ? s->out.data : "",
                        .len = s->out.len,
                        .reason = s->reason,
                        .stop_index = s->stop_index};
}

vkllm_status stop_seq_push(stop_seq *s, tok_decoder *dec, int32_t token, bool is_eog,
                           stop_event *out) {
    *out = (stop_event){.text = "", .len = 0, .reason = s->reason, .stop_index = s->stop_index};
    if (s->reason != STOP_NONE)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "stop_seq: token %d pushed after the sequence finished (%s)", token,
                        stop_finish_reason(s->reason));
    s->out.len = 0;
    s->generated++;
    bool is_stop_id = false;
    for (size_t i = 0; i < s->n_stop_ids; i++)
        is_stop_id |= s->stop_ids[i] == token;
    if (is_stop_id || (is_eog && !s->ignore_eos)) {
        s->reason = is_stop_id ? STOP_TOKEN : STOP_EOS;
        s->stop_index = token;
        VKL_TRY(seq_flush(s, dec));
    } else {
        if (dec) {
            const char *piece;
            size_t piece_len;
            VKL_TRY(tok_decoder_push(dec, token, &piece, &piece_len));
            VKL_TRY(seq_feed(s, piece, piece_len));
        }
        if (s->reason == STOP_NONE && s->generated >= s->max_tokens) {
            s->reason = STOP_LENGTH;
            VKL_TRY(seq_flush(s, dec));
        }
    }
    seq_event(s, out);
    return VKLLM_OK;
}

vkllm_status stop_seq_finish(stop_seq *s, tok_decoder *dec, stop_event *out) {
    s->out.len = 0;
    if (s->reason == STOP_NONE || s->reason == STOP_LENGTH) VKL_TRY(seq_flush(s, dec));
    seq_event(s, out);
    return VKLLM_OK;
}
