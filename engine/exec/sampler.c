/* sampler.c: CPU sampling of one logits row (see sampler.h for the order of the steps,
 * the logprob modes and the seeding rules).
 *
 * Invariants of the workspace between calls: count[] and flags[] are all zero (every
 * entry set during a call is listed in touched[] and cleared before returning), so a
 * call costs O(history) for penalties, not O(vocabulary). */
#include "exec/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/splitmix.h"

/* flags[] bits */
#define FLAG_IN_WINDOW 1u /* token occurs in the repetition window */
#define FLAG_TOUCHED 2u   /* token is listed in touched[] */

/* Candidates from the GPU top-k (k_sample.h's K_TOPK_MAX). */
#define K_SAMPLER_CANDIDATES_MAX 256u

struct sampler_workspace {
    uint32_t max_vocab;
    float *w;         /* penalized logits, NaN -> -inf */
    float *e;         /* exp((w - max) / T) of the kept tokens, by position in kept */
    int32_t *idx;     /* candidate / kept token ids */
    uint32_t *count;  /* occurrences among generated tokens */
    uint8_t *flags;   /* FLAG_* */
    int32_t *touched; /* tokens whose count/flags are non-zero */
};

sampler_params sampler_params_default(void) {
    return (sampler_params){
        .temperature = 1.0f,
        .top_k = 0,
        .top_p = 1.0f,
        .min_p = 0.0f,
        .repetition_penalty = 1.0f,
        .repetition_window = 0,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .has_seed = false,
        .seed = 0,
        .logprobs = -1,
        .logprobs_mode = SAMPLER_LOGPROBS_RAW,
        .n = 1,
        .ignore_eos = false,
        .max_tokens = 16,
    };
}

vkllm_status sampler_params_validate(const sampler_params *p) {
    if (!p) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling params: NULL");
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling params: temperature %g must be finite and >= 0",
                        (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling params: top_p %g must be in (0, 1]",
                        (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling params: min_p %g must be in [0, 1]",
                        (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling params: repetition_penalty %g must be finite and > 0",
                        (double)p->repetition_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling params: presence_penalty %g must be in [-2, 2]",
                        (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling params: frequency_penalty %g must be in [-2, 2]",
                        (double)p->frequency_penalty);
    if (p->logprobs < -1 || p->logprobs > SAMPLER_MAX_LOGPROBS)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling params: logprobs %d must be -1 (none) or 0..%d", p->logprobs,
                        SAMPLER_MAX_LOGPROBS);
    if (p->logprobs_mode != SAMPLER_LOGPROBS_RAW && p->logprobs_mode != SAMPLER_LOGPROBS_PROCESSED)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling params: logprobs_mode %d unknown",
                        (int)p->logprobs_mode);
    if (p->n < 1) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling params: n must be >= 1");
    if (p->max_tokens < 1)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampling params: max_tokens must be >= 1");
    if (p->n_stop_token_ids && !p->stop_token_ids)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling params: stop_token_ids is NULL with n_stop_token_ids %zu",
                        p->n_stop_token_ids);
    if (p->n_stop_strings && !p->stop_strings)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampling params: stop_strings is NULL with n_stop_strings %zu",
                        p->n_stop_strings);
    for (size_t i = 0; i < p->n_stop_strings; i++)
        if (!p->stop_strings[i] || !p->stop_strings[i][0])
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "sampling params: stop_strings[%zu] is NULL or empty", i);
    return VKLLM_OK;
}

bool sampler_is_greedy(const sampler_params *p) {
    return p->temperature <= SAMPLER_GREEDY_EPS || p->top_k == 1;
}

static bool penalties_active(const sampler_params *p) {
    return p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f ||
           p->frequency_penalty != 0.0f;
}

bool sampler_argmax_suffices(const sampler_params *p) {
    return sampler_is_greedy(p) && !penalties_active(p) && p->logprobs < 0;
}

/* ---------------------------------------------------------------- RNG */

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

void sampler_state_init(sampler_state *state, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        state->s[i] = vkl_splitmix64(&x);
    /* splitmix64 outputs are a bijection of distinct inputs: four zeros cannot happen,
     * but keep the xoshiro invariant explicit. */
    if (!(state->s[0] | state->s[1] | state->s[2] | state->s[3])) state->s[0] = 1;
    state->seed = seed;
    state->draws = 0;
}

uint64_t sampler_child_seed(uint64_t seed, uint32_t index) {
    uint64_t x = seed ^ 0x5a3c96e1d2b4f807ull;
    uint64_t a = vkl_splitmix64(&x);
    uint64_t y = a + (uint64_t)index * 0xd1b54a32d192ed03ull + 1;
    return vkl_splitmix64(&y);
}

uint64_t sampler_rng_next(sampler_state *st) { /* xoshiro256** */
    uint64_t *s = st->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    st->draws++;
    return result;
}

double sampler_rng_uniform(sampler_state *state) {
    return (double)(sampler_rng_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* ---------------------------------------------------------------- workspace */

vkllm_status sampler_workspace_create(uint32_t max_vocab, sampler_workspace **out) {
    *out = NULL;
    if (max_vocab == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampler workspace: max_vocab is 0");
    sampler_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sampler workspace");
    ws->max_vocab = max_vocab;
    ws->w = malloc((size_t)max_vocab * sizeof(float));
    ws->e = malloc((size_t)max_vocab * sizeof(float));
    ws->idx = malloc((size_t)max_vocab * sizeof(int32_t));
    ws->count = calloc(max_vocab, sizeof(uint32_t));
    ws->flags = calloc(max_vocab, 1);
    ws->touched = malloc((size_t)max_vocab * sizeof(int32_t));
    if (!ws->w || !ws->e || !ws->idx || !ws->count || !ws->flags || !ws->touched) {
        sampler_workspace_free(ws);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY,
                        "sampler workspace: %u-token vocabulary (%zu bytes)", max_vocab,
                        (size_t)max_vocab * 21);
    }
    *out = ws;
    return VKLLM_OK;
}

void sampler_workspace_free(sampler_workspace *ws) {
    if (!ws) return;
    free(ws->w);
    free(ws->e);
    free(ws->idx);
    free(ws->count);
    free(ws->flags);
    free(ws->touched);
    free(ws);
}

/* ---------------------------------------------------------------- selection */

/* a ranks below b: smaller value, or equal value and larger id. */
static inline bool worse(const float *w, int32_t a, int32_t b) {
    return w[a] < w[b] || (w[a] == w[b] && a > b);
}

static void sift_down(const float *w, int32_t *heap, uint32_t n, uint32_t i) {
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(w, heap[l], heap[m])) m = l;
        if (r < n && worse(w, heap[r], heap[m])) m = r;
        if (m == i) return;
        int32_t t = heap[i];
        heap[i] = heap[m];
        heap[m] = t;
        i = m;
    }
}

static void sift_up(const float *w, int32_t *heap, uint32_t i) {
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!worse(w, heap[i], heap[parent])) return;
        int32_t t = heap[i];
        heap[i] = heap[parent];
        heap[parent] = t;
        i = parent;
    }
}

/* The k best of w over `set` (ids; NULL: 0..n-1), skipping -inf and NaN, into out[],
 * sorted best first. A min-heap of the k best seen so far: most values lose against its
 * root with one comparison, so the pass is O(n) in practice and O(n log k) at worst. */
static uint32_t select_top(const float *w, const int32_t *set, uint32_t n, uint32_t k,
                           int32_t *out) {
    uint32_t size = 0;
    if (k == 0) return 0;
    for (uint32_t j = 0; j < n; j++) {
        int32_t id = set ? set[j] : (int32_t)j;
        float v = w[id];
        if (!(v > -INFINITY)) continue;
        if (size < k) {
            out[size] = id;
            sift_up(w, out, size);
            size++;
        } else if (worse(w, out[0], id)) {
            out[0] = id;
            sift_down(w, out, size, 0);
        }
    }
    for (uint32_t end = size; end > 1; end--) { /* heap sort: worst goes to the back */
        int32_t t = out[0];
        out[0] = out[end - 1];
        out[end - 1] = t;
        sift_down(w, out, end - 1, 0);
    }
    return size;
}

/* exp(x) for x <= 88 without libm: 2^r * 2^f with r = round(x log2 e), |f| <= 1/2, and
 * 2^f = e^(f ln 2) by its degree-6 Taylor polynomial (truncation <= 1.2e-7 relative; about
 * 3 ulp in all). x < -87 (including -inf) and NaN give 0: what a masked or NaN logit must
 * weigh. Written on 4-lane vectors (GCC/clang vector extensions, SSE2/NEON width) because
 * GCC 12 at -O2 does not vectorize the scalar form; exp_fast is the same on one lane. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f exp4(v4f x) {
    const v4f lo = {-126.0f, -126.0f, -126.0f, -126.0f}, hi = {127.0f, 127.0f, 127.0f, 127.0f};
    v4f t = x * 1.44269504f;
    v4i keep_t = t > lo; /* false for NaN, so NaN becomes -126 and the int conversion is defined */
    t = (v4f)(((v4i)t & keep_t) | ((v4i)lo & ~keep_t));
    keep_t = t < hi;
    t = (v4f)(((v4i)t & keep_t) | ((v4i)hi & ~keep_t));
    v4f r = (t + 12582912.0f) - 12582912.0f; /* round to nearest (1.5 * 2^23 trick) */
    v4f g = (t - r) * 0.69314718f;
    v4f poly =
        1.0f +
        g * (1.0f +
             g * (0.5f + g * (1.0f / 6 + g * (1.0f / 24 + g * (1.0f / 120 + g * (1.0f / 720))))));
    v4i scale = (__builtin_convertvector(r, v4i) + 127) << 23;
    v4f y = poly * (v4f)scale;
    v4i valid = x >= -87.0f;
    return (v4f)((v4i)y & valid);
}

static inline float exp_fast(float x) {
    v4f v = {x, x, x, x};
    return exp4(v)[0];
}

/* e[i] = exp((x[i] - m) * s) for i < n (0 for -inf and NaN). */
static void exp_shifted(const float *x, uint32_t n, float m, float s, float *e) {
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v;
        memcpy(&v, x + i, sizeof v);
        v = exp4((v - m) * s);
        memcpy(e + i, &v, sizeof v);
    }
    for (; i < n; i++)
        e[i] = exp_fast((x[i] - m) * s);
}

/* Sum of e[0..n) in double with four interleaved accumulators: fast, and the same order
 * (so the same result) every time. */
static double sum_floats(const float *e, uint32_t n) {
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        acc[0] += e[i];
        acc[1] += e[i + 1];
        acc[2] += e[i + 2];
        acc[3] += e[i + 3];
    }
    for (; i < n; i++)
        acc[0] += e[i];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/* e[i] = exp((x[i] - m) * s) for i < n (0 for -inf and NaN). */
/* sum_i exp((x[i] - m) * s) without a scratch array: chunks of 256 on the stack. */
static double sum_exp_shifted(const float *x, uint32_t n, float m, float s) {
    float chunk[256];
    double sum = 0.0;
    for (uint32_t base = 0; base < n; base += 256) {
        uint32_t len = n - base < 256 ? n - base : 256;
        exp_shifted(x + base, len, m, s, chunk);
        sum += sum_floats(chunk, len);
    }
    return sum;
}

/* log(sum exp(x)) over finite entries (NaN skipped); -inf if none. */
static double log_sum_exp(const float *x, uint32_t n) {
    float m = -INFINITY;
    for (uint32_t i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    if (!(m > -INFINITY)) return -INFINITY;
    if (m == INFINITY) return INFINITY;
    return (double)m + log(sum_exp_shifted(x, n, m, 1.0f));
}

vkllm_status sampler_top_logprobs(const float *logits, uint32_t n_vocab, uint32_t k, int32_t *ids,
                                  float *logprobs, uint32_t *n_out) {
    *n_out = 0;
    if (n_vocab == 0) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "top logprobs: n_vocab is 0");
    double lse = log_sum_exp(logits, n_vocab);
    if (!(lse > -INFINITY))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "top logprobs: no finite logit among %u (all -inf or NaN)", n_vocab);
    uint32_t n = select_top(logits, NULL, n_vocab, k, ids);
    for (uint32_t i = 0; i < n; i++)
        logprobs[i] = (float)((double)logits[ids[i]] - lse);
    *n_out = n;
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- penalties */

static vkllm_status apply_penalties(const sampler_params *p, sampler_workspace *ws,
                                    uint32_t n_vocab, const int32_t *history, size_t n_history,
                                    size_t n_prompt) {
    size_t n_touched = 0;
    size_t window_start = 0;
    if (p->repetition_window > 0 && p->repetition_window < n_history)
        window_start = n_history - p->repetition_window;
    bool use_window = p->repetition_penalty != 1.0f;
    vkllm_status status = VKLLM_OK;
    for (size_t i = use_window ? window_start : n_prompt; i < n_history; i++) {
        int32_t t = history[i];
        if (t < 0 || (uint32_t)t >= n_vocab) {
            status = vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                              "sampler: history[%zu] = %d is outside the vocabulary [0, %u)", i, t,
                              n_vocab);
            break;
        }
        if (!(ws->flags[t] & FLAG_TOUCHED)) {
            ws->flags[t] |= FLAG_TOUCHED;
            ws->touched[n_touched++] = t;
        }
        if (use_window && i >= window_start) ws->flags[t] |= FLAG_IN_WINDOW;
        if (i >= n_prompt) ws->count[t]++;
    }
    if (status == VKLLM_OK) {
        float r = p->repetition_penalty;
        for (size_t j = 0; j < n_touched; j++) {
            int32_t t = ws->touched[j];
            float v = ws->w[t];
            if (ws->flags[t] & FLAG_IN_WINDOW) v = v > 0.0f ? v / r : v * r;
            uint32_t c = ws->count[t];
            if (c > 0) v -= p->frequency_penalty * (float)c + p->presence_penalty;
            ws->w[t] = v;
        }
    }
    for (size_t j = 0; j < n_touched; j++) {
        ws->flags[ws->touched[j]] = 0;
        ws->count[ws->touched[j]] = 0;
    }
    return status;
}

/* ---------------------------------------------------------------- logprob outputs */

/* x - lse, where a +inf logit takes all the mass (logprob 0, every other one -inf). */
static float log_prob(float x, double lse) {
    if (lse == INFINITY) return x == INFINITY ? 0.0f : -INFINITY;
    return (float)((double)x - lse);
}

/* Raw mode: top-N of the unmodified logits and the sampled token's log-softmax. */
static void fill_raw_logprobs(const sampler_params *p, const float *logits, uint32_t n_vocab,
                              sampler_result *out) {
    double lse = log_sum_exp(logits, n_vocab);
    out->logprob = log_prob(logits[out->token], lse);
    out->n_top = select_top(logits, NULL, n_vocab, (uint32_t)p->logprobs, out->top_ids);
    for (uint32_t i = 0; i < out->n_top; i++)
        out->top_logprobs[i] = log_prob(logits[out->top_ids[i]], lse);
}

/* ---------------------------------------------------------------- sampling */

vkllm_status sampler_sample(const sampler_params *p, sampler_state *state, sampler_workspace *ws,
                            const float *logits, uint32_t n_vocab, const int32_t *history,
                            size_t n_history, size_t n_prompt, sampler_result *out) {
    memset(out, 0, sizeof *out);
    out->token = -1;
    VKL_TRY(sampler_params_validate(p));
    if (n_vocab == 0 || n_vocab > ws->max_vocab)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampler: n_vocab %u must be in 1..%u (the workspace's max_vocab)", n_vocab,
                        ws->max_vocab);
    if (n_prompt > n_history)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampler: n_prompt %zu > n_history %zu",
                        n_prompt, n_history);
    if (n_history && !history)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampler: history is NULL, n_history %zu",
                        n_history);

    float *w = ws->w;
    for (uint32_t i = 0; i < n_vocab; i++)
        w[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    if (penalties_active(p)) VKL_TRY(apply_penalties(p, ws, n_vocab, history, n_history, n_prompt));

    /* Max and number of finite values after penalties (first max wins ties). */
    int32_t best = -1;
    uint32_t n_finite = 0;
    for (uint32_t i = 0; i < n_vocab; i++) {
        if (!(w[i] > -INFINITY)) continue;
        n_finite++;
        if (best < 0 || w[i] > w[best]) best = (int32_t)i;
    }
    if (best < 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampler: no finite logit among %u (all -inf or NaN)", n_vocab);
    const float m = w[best];

    /* A +inf logit (after penalties) is a certain token: the first one is taken. */
    if (sampler_is_greedy(p) || m == INFINITY) {
        out->token = best;
        out->n_kept = 1;
        if (p->logprobs >= 0) {
            if (p->logprobs_mode == SAMPLER_LOGPROBS_RAW) {
                fill_raw_logprobs(p, logits, n_vocab, out);
            } else {
                double lse = log_sum_exp(w, n_vocab);
                out->logprob = log_prob(m, lse);
                out->n_top = select_top(w, NULL, n_vocab, (uint32_t)p->logprobs, out->top_ids);
                for (uint32_t i = 0; i < out->n_top; i++)
                    out->top_logprobs[i] = log_prob(w[out->top_ids[i]], lse);
            }
        }
        return VKLLM_OK;
    }

    const float T = p->temperature;
    const float inv_t = 1.0f / T;
    const float min_w = p->min_p > 0.0f ? m + T * logf(p->min_p) : -INFINITY;
    const bool use_top_k = p->top_k > 0 && (uint32_t)p->top_k < n_finite;
    const bool use_top_p = p->top_p < 1.0f;

    /* kept: ids in ws->idx[0..n_kept) (sorted best first when `sorted`), or every id
     * 0..n_vocab-1 when `all` (-inf ones then weigh 0). */
    int32_t *kept = ws->idx;
    uint32_t n_kept = 0;
    bool sorted = false, all = false;

    if (use_top_k || use_top_p) {
        sorted = true;
        double mass_all = 0.0; /* normalizer of the distribution top-p reads */
        if (use_top_k) {
            n_kept = select_top(w, NULL, n_vocab, (uint32_t)p->top_k, kept);
            for (uint32_t j = 0; j < n_kept; j++)
                mass_all += exp_fast((w[kept[j]] - m) * inv_t);
        } else {
            mass_all = sum_exp_shifted(w, n_vocab, m, inv_t);
        }
        if (use_top_p) {
            const double target = (double)p->top_p * mass_all;
            uint32_t cap = use_top_k ? n_kept : SAMPLER_TOP_P_CANDIDATES;
            for (;;) {
                uint32_t nc = use_top_k ? n_kept : select_top(w, NULL, n_vocab, cap, kept);
                double before = 0.0;
                uint32_t j = 0;
                while (j < nc && before < target) {
                    before += exp_fast((w[kept[j]] - m) * inv_t);
                    j++;
                }
                /* Done when the mass was reached, the candidates hold every finite
                 * token, or min-p would cut below the last candidate anyway. */
                if (use_top_k || before >= target || nc < cap || nc == n_finite ||
                    w[kept[nc - 1]] < min_w) {
                    n_kept = j;
                    break;
                }
                cap = cap > n_finite / 8 ? n_finite : cap * 8;
            }
        }
        while (n_kept > 1 && w[kept[n_kept - 1]] < min_w)
            n_kept--;
    } else if (p->min_p > 0.0f) {
        for (uint32_t i = 0; i < n_vocab; i++)
            if (w[i] >= min_w) kept[n_kept++] = (int32_t)i;
        if (n_kept == 0) kept[n_kept++] = best; /* rounding guard: the max always stays */
    } else {
        all = true;
        n_kept = n_vocab;
    }

    /* Weights and the draw. */
    if (all) {
        exp_shifted(w, n_vocab, m, inv_t, ws->e);
    } else {
        for (uint32_t j = 0; j < n_kept; j++)
            ws->e[j] = exp_fast((w[kept[j]] - m) * inv_t);
    }
    const double total = sum_floats(ws->e, n_kept);
    const double target = sampler_rng_uniform(state) * total;
    double cum = 0.0;
    int32_t chosen = -1;
    for (uint32_t j = 0; j < n_kept; j++) {
        if (ws->e[j] <= 0.0f) continue;
        int32_t id = all ? (int32_t)j : kept[j];
        cum += ws->e[j];
        chosen = id; /* the last positive weight is the fallback for rounding at the end */
        if (cum > target) break;
    }
    if (chosen < 0)
        return vkl_fail(VKLLM_ERR_INTERNAL, "sampler: kept %u tokens of zero total weight", n_kept);
    out->token = chosen;
    out->n_kept = all ? n_finite : n_kept;

    if (p->logprobs >= 0) {
        if (p->logprobs_mode == SAMPLER_LOGPROBS_RAW) {
            fill_raw_logprobs(p, logits, n_vocab, out);
        } else {
            const double log_total = log(total);
            out->logprob = (float)((double)((w[chosen] - m) * inv_t) - log_total);
            uint32_t want = (uint32_t)p->logprobs;
            if (sorted) {
                out->n_top = want < n_kept ? want : n_kept;
                memcpy(out->top_ids, kept, out->n_top * sizeof(int32_t));
            } else {
                out->n_top = select_top(w, all ? NULL : kept, n_kept, want, out->top_ids);
            }
            for (uint32_t i = 0; i < out->n_top; i++)
                out->top_logprobs[i] =
                    (float)((double)((w[out->top_ids[i]] - m) * inv_t) - log_total);
        }
    }
    return VKLLM_OK;
}

bool sampler_candidates_usable(const sampler_params *p, uint32_t k) {
    return !penalties_active(p) && p->logprobs <= (int32_t)k &&
           (p->top_k <= 0 || (uint32_t)p->top_k <= k || sampler_is_greedy(p));
}

vkllm_status sampler_sample_candidates(const sampler_params *p, sampler_state *state,
                                       const sampler_candidates *c, uint32_t n_vocab,
                                       sampler_result *out, bool *complete) {
    memset(out, 0, sizeof *out);
    out->token = -1;
    *complete = false;
    VKL_TRY(sampler_params_validate(p));
    if (!c || !c->ids || !c->values || c->k == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampler: no candidates given");
    if (!sampler_candidates_usable(p, c->k)) return VKLLM_OK;

    /* The usable prefix: ids in range, values above -inf (NaN and -inf sort last). */
    uint32_t n = 0;
    while (n < c->k && c->ids[n] >= 0 && c->values[n] > -INFINITY) {
        if ((uint32_t)c->ids[n] >= n_vocab)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "sampler: candidate %u has id %d outside the vocabulary [0, %u)", n,
                            c->ids[n], n_vocab);
        n++;
    }
    if (n == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampler: no finite candidate among %u (all -inf or NaN)", c->k);
    /* Every finite logit of the row is a candidate when the list ends early. */
    const bool covers_all = n < c->k;
    const float *v = c->values;
    const float m = v[0];
    const double lse_raw = (double)c->row_max + log((double)c->sum_exp);

    if (sampler_is_greedy(p) || m == INFINITY) {
        if (p->logprobs > (int32_t)n && !covers_all) return VKLLM_OK;
        out->token = c->ids[0];
        out->n_kept = 1;
        if (p->logprobs >= 0) {
            /* Greedy keeps no penalty here, so RAW and PROCESSED (T = 1) agree. */
            out->logprob = log_prob(m, lse_raw);
            out->n_top = (uint32_t)p->logprobs < n ? (uint32_t)p->logprobs : n;
            for (uint32_t j = 0; j < out->n_top; j++) {
                out->top_ids[j] = c->ids[j];
                out->top_logprobs[j] = log_prob(v[j], lse_raw);
            }
        }
        *complete = true;
        return VKLLM_OK;
    }

    const float T = p->temperature, inv_t = 1.0f / T;
    const float min_w = p->min_p > 0.0f ? m + T * logf(p->min_p) : -INFINITY;
    uint32_t n_kept = n;
    bool closed = covers_all; /* the kept set is known to lie inside the candidates */
    double mass_all = covers_all ? 0.0 : (double)c->sum_exp_temp;
    if (p->top_k > 0) {
        if ((uint32_t)p->top_k <= n)
            n_kept = (uint32_t)p->top_k, closed = true;
        else if (!covers_all)
            return VKLLM_OK;
    }
    if (closed) {
        mass_all = 0.0;
        for (uint32_t j = 0; j < n_kept; j++)
            mass_all += exp_fast((v[j] - m) * inv_t);
    }
    if (p->top_p < 1.0f) {
        const double target = (double)p->top_p * mass_all;
        double before = 0.0;
        uint32_t j = 0;
        while (j < n_kept && before < target)
            before += exp_fast((v[j++] - m) * inv_t);
        if (before >= target)
            n_kept = j, closed = true;
        else if (!closed)
            return VKLLM_OK;
    }
    if (p->min_p > 0.0f) {
        if (!closed && v[n_kept - 1] >= min_w) return VKLLM_OK; /* more may pass beyond */
        while (n_kept > 1 && v[n_kept - 1] < min_w)
            n_kept--;
        closed = true;
    }
    if (p->logprobs > (int32_t)n && !covers_all) return VKLLM_OK;

    double total = 0.0;
    float e[K_SAMPLER_CANDIDATES_MAX] = {0};
    uint32_t n_walk = n_kept < K_SAMPLER_CANDIDATES_MAX ? n_kept : K_SAMPLER_CANDIDATES_MAX;
    if (n_walk < n_kept) return VKLLM_OK;
    for (uint32_t j = 0; j < n_walk; j++)
        e[j] = exp_fast((v[j] - m) * inv_t);
    total = closed ? sum_floats(e, n_walk) : (double)c->sum_exp_temp;

    /* Walk in the order sampler_sample walks the same kept set: by value when top-k or
     * top-p sorted it, by id when only min-p filtered it (then the token is the same). */
    uint32_t walk[K_SAMPLER_CANDIDATES_MAX];
    for (uint32_t j = 0; j < n_walk; j++)
        walk[j] = j;
    if (p->top_k <= 0 && p->top_p >= 1.0f && p->min_p > 0.0f) {
        for (uint32_t j = 1; j < n_walk; j++) { /* insertion sort by id: n_walk <= 256 */
            uint32_t x = walk[j], i = j;
            for (; i > 0 && c->ids[walk[i - 1]] > c->ids[x]; i--)
                walk[i] = walk[i - 1];
            walk[i] = x;
        }
    }
    sampler_state peek = *state;
    const double target = sampler_rng_uniform(&peek) * total;
    double cum = 0.0;
    int32_t chosen = -1;
    uint32_t chosen_j = 0;
    for (uint32_t w = 0; w < n_walk; w++) {
        uint32_t j = walk[w];
        if (e[j] <= 0.0f) continue;
        cum += e[j];
        chosen = c->ids[j];
        chosen_j = j;
        if (cum > target) break;
    }
    if (!closed && !(cum > target)) return VKLLM_OK; /* the draw fell beyond the candidates */
    if (chosen < 0) return vkl_fail(VKLLM_ERR_INTERNAL, "sampler: candidates of zero weight");
    *state = peek;
    out->token = chosen;
    out->n_kept = closed ? n_kept : n_vocab;
    if (p->logprobs >= 0) {
        uint32_t want = (uint32_t)p->logprobs;
        if (p->logprobs_mode == SAMPLER_LOGPROBS_RAW) {
            out->logprob = log_prob(v[chosen_j], lse_raw);
            out->n_top = want < n ? want : n;
            for (uint32_t j = 0; j < out->n_top; j++) {
                out->top_ids[j] = c->ids[j];
                out->top_logprobs[j] = log_prob(v[j], lse_raw);
            }
        } else {
            const double log_total = log(total);
            out->logprob = (float)((double)((v[chosen_j] - m) * inv_t) - log_total);
            out->n_top = want < n_walk ? want : n_walk;
            for (uint32_t j = 0; j < out->n_top; j++) {
                out->top_ids[j] = c->ids[j];
                out->top_logprobs[j] = (float)((double)((v[j] - m) * inv_t) - log_total);
            }
        }
    }
    *complete = true;
    return VKLLM_OK;
}

vkllm_status sampler_accept_argmax(const sampler_params *p, int32_t token, uint32_t n_vocab,
                                   sampler_result *out) {
    memset(out, 0, sizeof *out);
    out->token = -1;
    if (!sampler_argmax_suffices(p))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampler: GPU argmax used for params that need logits (temperature %g, "
                        "penalties or logprobs %d)",
                        (double)p->temperature, p->logprobs);
    if (token < 0 || (uint32_t)token >= n_vocab)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "sampler: GPU argmax id %d is outside the vocabulary [0, %u)", token,
                        n_vocab);
    out->token = token;
    out->n_kept = 1;
    return VKLLM_OK;
}
