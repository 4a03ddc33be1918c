/* ref_ops.c: CPU reference small ops (see ref_ops.h for the contracts).
 *
 * Everything is evaluated in double and rounded to float once at the end, so
 * the only f32 rounding in a result is the final store; the GPU kernels are
 * judged against these values. In-place use (out == input) is safe because
 * each function reads every input value of a row (or element) before it
 * writes that row's (or element's) output. */
#include "ref_ops.h"

#include <math.h>
#include <stdbool.h>

static double silu_d(double z) {
    return z / (1.0 + exp(-z));
}

static double gelu_tanh_d(double z) {
    const double sqrt_2_over_pi = 0.79788456080286535588;
    return 0.5 * z * (1.0 + tanh(sqrt_2_over_pi * (z + 0.044715 * z * z * z)));
}

float ref_silu(float z) {
    return (float)silu_d(z);
}

float ref_gelu_tanh(float z) {
    return (float)gelu_tanh_d(z);
}

void ref_add(const float *a, const float *b, float *out, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = (float)((double)a[i] + (double)b[i]);
}

void ref_scale(const float *x, float *out, size_t n, float s) {
    for (size_t i = 0; i < n; i++)
        out[i] = (float)((double)x[i] * s);
}

void ref_softcap(const float *x, float *out, size_t n, float cap) {
    for (size_t i = 0; i < n; i++)
        out[i] = (float)(cap * tanh((double)x[i] / cap));
}

void ref_glu(ref_glu_kind kind, const float *g, size_t g_stride, const float *u, size_t u_stride,
             float *out, size_t rows, size_t n) {
    for (size_t r = 0; r < rows; r++) {
        for (size_t i = 0; i < n; i++) {
            double gv = g[r * g_stride + i], uv = u[r * u_stride + i];
            double act = kind == REF_GLU_SILU ? silu_d(gv) : gelu_tanh_d(gv);
            out[r * n + i] = (float)(act * uv);
        }
    }
}

/* 1 / sqrt(mean(x^2) + eps) of one row, accumulated in double. */
static double rms_inverse(const float *row, size_t n, float eps) {
    double sum_squares = 0;
    for (size_t i = 0; i < n; i++)
        sum_squares += (double)row[i] * row[i];
    return 1.0 / sqrt(sum_squares / (double)n + (double)eps);
}

void ref_rms_norm(const float *x, const float *w, float *out, size_t rows, size_t n, float eps) {
    for (size_t r = 0; r < rows; r++) {
        double inv = rms_inverse(x + r * n, n, eps);
        for (size_t i = 0; i < n; i++)
            out[r * n + i] = (float)((double)x[r * n + i] * inv * w[i]);
    }
}

void ref_rms_norm_add(const float *x, const float *w, float *residual, size_t rows, size_t n,
                      float eps) {
    for (size_t r = 0; r < rows; r++) {
        double inv = rms_inverse(x + r * n, n, eps);
        for (size_t i = 0; i < n; i++) {
            double normed = (double)x[r * n + i] * inv * w[i];
            residual[r * n + i] = (float)((double)residual[r * n + i] + normed);
        }
    }
}

/* x * scale, then soft-capped when softcap > 0 (softmax's logit transform). */
static double capped(float x, float scale, float softcap) {
    double y = (double)x * scale;
    return softcap > 0 ? softcap * tanh(y / softcap) : y;
}

void ref_softmax(const float *x, float *out, size_t rows, size_t n, float scale, float softcap) {
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * n;
        double max = -INFINITY;
        /* y is recomputed in each pass rather than stored, so out may alias x
         * (x is only overwritten in the last pass, element by element). */
        for (size_t i = 0; i < n; i++) {
            if (row[i] == -INFINITY) continue;
            double y = capped(row[i], scale, softcap);
            if (y > max) max = y;
        }
        if (max == -INFINITY) { /* every entry masked: define the result as 0 */
            for (size_t i = 0; i < n; i++)
                out[r * n + i] = 0.0f;
            continue;
        }
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            if (row[i] != -INFINITY) sum += exp(capped(row[i], scale, softcap) - max);
        for (size_t i = 0; i < n; i++) {
            bool masked = row[i] == -INFINITY;
            out[r * n + i] =
                masked ? 0.0f : (float)(exp(capped(row[i], scale, softcap) - max) / sum);
        }
    }
}

void ref_rope(const float *x, const int32_t *pos, const float *freq_factors, float *out,
              size_t n_tokens, size_t n_heads, size_t head_dim, size_t n_rot, float freq_base,
              float freq_scale, ref_rope_mode mode) {
    size_t half = n_rot / 2;
    for (size_t t = 0; t < n_tokens; t++) {
        for (size_t h = 0; h < n_heads; h++) {
            const float *in_head = x + (t * n_heads + h) * head_dim;
            float *out_head = out + (t * n_heads + h) * head_dim;
            for (size_t i = 0; i < half; i++) {
                double freq = pow((double)freq_base, -2.0 * (double)i / (double)n_rot);
                double theta = (double)pos[t] * (double)freq_scale * freq;
                if (freq_factors) theta /= (double)freq_factors[i];
                size_t ia = mode == REF_ROPE_NORM ? 2 * i : i;
                size_t ib = mode == REF_ROPE_NORM ? 2 * i + 1 : i + half;
                double a = in_head[ia], b = in_head[ib];
                double c = cos(theta), s = sin(theta);
                out_head[ia] = (float)(a * c - b * s);
                out_head[ib] = (float)(a * s + b * c);
            }
            for (size_t i = n_rot; i < head_dim; i++)
                out_head[i] = in_head[i];
        }
    }
}
