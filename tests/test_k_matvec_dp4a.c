/* test_k_matvec_dp4a.c: matvec_dp4a.comp (k_matmul_ex, kernel MATVEC_DP4A or
 * VKLLM_MATVEC=dp4a) against CPU references.
 *
 * Reference 1 (the kernel's product): X is quantized per block of 32 like the shader
 * (d = max|x|/127, q = round-half-even(x/d)) and dequantized (d·q); Y = Σ w·d·q in double
 * with W dequantized by model/quant.c (the kernel's integer sums are exact, so only float
 * rounding separates the two). Bound per output: |y - ref| <= 2e-4 · S + 1e-6,
 * S = Σ_c |w_rc|·|x_c| + |bias_r| (f32 accumulation, and 1/d computed by the GPU may round
 * a product lying within an ulp of a .5 tie the other way: one flipped q changes y by
 * about |w|·d_x, far below 2e-4·S for these sizes).
 * Reference 2 (exact product of the dequantized weights with the f32 X): |y - exact| <=
 * 2e-2 · S, the X quantization error (|x - d·q| <= d/2 = max|x|/254 per element, at most
 * about 1/127 of S for X uniform in [-1, 1)).
 * Inputs: random blocks (seeded, seed in every message), Y poisoned with NaN words so
 * unwritten outputs fail and elements outside the written region must keep the poison;
 * types Q4_0, Q8_0, Q4_K, Q6_K; rows not multiples of a workgroup's rows, cols of 256,
 * 288 (an odd number of blocks: rows alternate 4-byte alignment; Q6_K blocks always do)
 * and 4352 (lavapipe's 32 KiB of shared memory takes 5 tokens of it per pass: 6-8 tokens
 * run as two passes), 1-8 tokens, bias, accumulate,
 * strides, a skewed weight split into row ranges, persistent workgroups (tuning).
 * Both main loops (VKLLM_MATVEC_DP4A_TUNE's fifth field: loop 2 is the default, loop 1 the
 * first version) and both weight-load paths of loop 2: 16-byte loads when the weight buffer
 * reaches the tensor end rounded up to 16 (pad16; Q4_K also needs a 16-byte aligned
 * offset), else word loads (buffer ends at the tensor end rounded up to 4); rows per
 * subgroup 1-4, units per lane 1-4, several row groups per workgroup and steps per row, odd
 * row counts, even skews (offsets 4-28), 1-8 tokens on 4096 columns. */
// links: exec gpu model
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_gpu.h"
#include "common/test_util.h"
#include "exec/k_matmul.h"
#include "model/quant.h"

#define QUANT_BOUND 2e-4
#define EXACT_BOUND 2e-2

typedef enum x_kind {
    X_UNIFORM,   /* uniform in [-1, 1) */
    X_ONE_SPIKE, /* per block: 1.0 at element 0, 0.0035 elsewhere (quantizes to 0) */
} x_kind;

typedef struct dp_case {
    ggml_type type;
    uint32_t rows, cols, n_tokens;
    k_matmul_kernel kernel;
    uint64_t w_offset;          /* multiple of 4 */
    uint64_t max_binding_bytes; /* 0: device limit */
    uint32_t x_stride, y_stride, y_col;
    bool bias, accumulate;
    x_kind x;
    bool positive_weights; /* Q8_0 quants all +100, scales positive */
    bool pad16;            /* weight buffer up to the tensor end rounded up to 16 */
    const char *tune;      /* VKLLM_MATVEC_DP4A_TUNE for this case (NULL: unset) */
    uint64_t seed;
} dp_case;

static void put_f16(uint8_t *p, float v) {
    uint16_t h = test_f32_to_f16(v);
    memcpy(p, &h, 2);
}

static float random_scale(test_rng *rng, float lo, float hi) {
    float v = test_rng_uniform(rng, lo, hi);
    return (test_rng_next(rng) & 1) ? -v : v;
}

/* Random blocks: random quant bytes, fp16 scales from sane ranges (as test_k_matmul.c). */
static void random_weight(test_rng *rng, const dp_case *c, uint8_t *dst) {
    ggml_type_info info = ggml_type_get_info(c->type);
    uint64_t blocks = (uint64_t)c->rows * c->cols / info.block_elems;
    for (uint64_t b = 0; b < blocks; b++) {
        uint8_t *blk = dst + b * info.block_bytes;
        for (uint32_t i = 0; i < info.block_bytes; i++)
            blk[i] = c->positive_weights ? 100 : (uint8_t)test_rng_next(rng);
        switch (c->type) {
        case GGML_TYPE_Q4_0:
        case GGML_TYPE_Q8_0:
            put_f16(blk, c->positive_weights ? 0.01f : random_scale(rng, 0.002f, 0.02f));
            break;
        case GGML_TYPE_Q4_K:
            put_f16(blk, random_scale(rng, 0.0005f, 0.005f));
            put_f16(blk + 2, random_scale(rng, 0.0f, 0.002f));
            break;
        case GGML_TYPE_Q6_K:
            put_f16(blk + 208, random_scale(rng, 0.0002f, 0.002f));
            break;
        default:
            cr_assert_fail("no random recipe for type %u", (unsigned)c->type);
        }
    }
}

/* X of one token quantized like the shader and dequantized: xq[c] = d_b * q_c. */
static void quantize_x(const float *x, uint32_t cols, double *xq) {
    for (uint32_t b = 0; b < cols / 32; b++) {
        float amax = 0;
        for (uint32_t i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(x[32 * b + i]));
        float d = amax / 127.0f;
        float id = d > 0 ? 1.0f / d : 0.0f;
        for (uint32_t i = 0; i < 32; i++) {
            float v = rintf(x[32 * b + i] * id);
            v = v < -127 ? -127 : v > 127 ? 127 : v;
            xq[32 * b + i] = (double)d * v;
        }
    }
}

static const char *kernel_label(const dp_case *c) {
    return c->kernel == K_MATMUL_MATVEC_DP4A ? "dp4a" : "auto";
}

static void run_case(const dp_case *c) {
    char label[320];
    snprintf(label, sizeof label,
             "%s rows=%u cols=%u n_tokens=%u kernel=%s offset=%llu max_binding=%llu "
             "x_stride=%u y_stride=%u y_col=%u bias=%d accumulate=%d x=%d pad16=%d tune=%s "
             "seed=%llu",
             ggml_type_get_info(c->type).name, c->rows, c->cols, c->n_tokens, kernel_label(c),
             (unsigned long long)c->w_offset, (unsigned long long)c->max_binding_bytes, c->x_stride,
             c->y_stride, c->y_col, c->bias, c->accumulate, (int)c->x, c->pad16,
             c->tune ? c->tune : "-", (unsigned long long)c->seed);
    test_rng rng = test_rng_seeded(c->seed);
    uint32_t rows = c->rows, cols = c->cols, nt = c->n_tokens;
    uint32_t xs = c->x_stride ? c->x_stride : cols;
    uint32_t ys = c->y_stride ? c->y_stride : c->y_col + rows;
    uint64_t row_bytes = ggml_row_bytes(c->type, cols);

    uint64_t w_size =
        (c->w_offset + row_bytes * rows + (c->pad16 ? 15 : 3)) & (c->pad16 ? ~15ull : ~3ull);
    uint8_t *w_host = malloc(w_size);
    float *deq = malloc(sizeof(float) * rows * cols);
    float *x = malloc(sizeof(float) * nt * xs);
    float *bias = malloc(sizeof(float) * rows);
    size_t y_len = (size_t)nt * ys;
    float *y_host = malloc(sizeof(float) * y_len);
    float *y_init = malloc(sizeof(float) * y_len);
    double *xq = malloc(sizeof(double) * cols);
    cr_assert(w_host && deq && x && bias && y_host && y_init && xq);
    for (uint64_t i = 0; i < w_size; i++)
        w_host[i] = (uint8_t)test_rng_next(&rng);
    const uint8_t *w = w_host + c->w_offset;
    random_weight(&rng, c, w_host + c->w_offset);
    cr_assert(quant_dequantize(c->type, w, deq, (uint64_t)rows * cols) == VKLLM_OK, "%s: %s", label,
              vkllm_last_error());
    test_fill_uniform(&rng, x, (size_t)nt * xs, -1, 1); /* padding columns too: ignored */
    if (c->x == X_ONE_SPIKE)
        for (uint32_t t = 0; t < nt; t++)
            for (uint32_t k = 0; k < cols; k++)
                x[(size_t)t * xs + k] = k % 32 == 0 ? 1.0f : 0.0035f;
    test_fill_uniform(&rng, bias, rows, -1, 1);
    /* Y: poison, or random values to accumulate onto in the output region */
    test_poison(y_init, y_len);
    if (c->accumulate)
        for (uint32_t t = 0; t < nt; t++)
            test_fill_uniform(&rng, y_init + (size_t)t * ys + c->y_col, rows, -1, 1);

    gpu_buffer wb = test_gpu_buffer_from(w_host, w_size);
    gpu_buffer xb = test_gpu_buffer_from(x, sizeof(float) * nt * xs);
    gpu_buffer bb = test_gpu_buffer_from(bias, sizeof(float) * rows);
    gpu_buffer yb = test_gpu_buffer_from(y_init, sizeof(float) * y_len);
    k_weight kw = {&wb, c->w_offset, c->type, rows, cols};
    k_matmul_args a = {.w = &kw,
                       .x = {&xb, 0, 0, false},
                       .y = {&yb, 0, 0, true},
                       .bias = c->bias ? (gpu_binding){&bb, 0, 0, false} : (gpu_binding){0},
                       .n_tokens = nt,
                       .x_stride = c->x_stride,
                       .y_stride = c->y_stride,
                       .y_col = c->y_col,
                       .accumulate = c->accumulate,
                       .kernel = c->kernel,
                       .max_binding_bytes = c->max_binding_bytes};
    gpu_cmd *cmd;
    if (c->tune) cr_assert(setenv("VKLLM_MATVEC_DP4A_TUNE", c->tune, 1) == 0);
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status st = k_matmul_ex(test_gpu(), cmd, &a);
    vkllm_status st_submit = gpu_cmd_submit(cmd);
    if (c->tune) cr_assert(unsetenv("VKLLM_MATVEC_DP4A_TUNE") == 0);
    cr_assert(st == VKLLM_OK, "%s: k_matmul_ex: %s", label, vkllm_last_error());
    cr_assert(st_submit == VKLLM_OK, "%s: submit: %s", label, vkllm_last_error());
    test_gpu_read(&yb, y_host, sizeof(float) * y_len);

    double worst_q = 0, worst_e = 0, worst_gap = INFINITY;
    for (uint32_t t = 0; t < nt; t++) {
        const float *xt = x + (size_t)t * xs;
        quantize_x(xt, cols, xq);
        for (uint32_t col = 0; col < ys; col++) {
            size_t yi = (size_t)t * ys + col;
            float v = y_host[yi];
            if (col < c->y_col || col >= c->y_col + rows) {
                uint32_t bits;
                memcpy(&bits, &v, 4);
                cr_assert(bits == TEST_POISON_WORD, "%s: y[%u][%u] outside the output written",
                          label, t, col);
                continue;
            }
            uint32_t r = col - c->y_col;
            cr_assert(isfinite(v), "%s: token %u row %u is not finite (unwritten?)", label, t, r);
            double base = (c->bias ? bias[r] : 0.0) + (c->accumulate ? y_init[yi] : 0.0);
            double ref_q = base, exact = base, s = fabs(base);
            for (uint32_t k = 0; k < cols; k++) {
                double wk = deq[(size_t)r * cols + k];
                ref_q += wk * xq[k];
                exact += wk * xt[k];
                s += fabs(wk * xt[k]);
            }
            double eq = fabs(v - ref_q) / (s + 1e-6), ee = fabs(v - exact) / (s + 1e-6);
            cr_assert(fabs(v - ref_q) <= QUANT_BOUND * s + 1e-6,
                      "%s: token %u row %u: %.9g vs quantized-X reference %.9g (rel %.3g > %.3g)",
                      label, t, r, v, ref_q, eq, QUANT_BOUND);
            /* the spiky X is built to defeat the quantization: reference 1 only */
            cr_assert(c->x == X_ONE_SPIKE || fabs(v - exact) <= EXACT_BOUND * s + 1e-6,
                      "%s: token %u row %u: %.9g vs exact %.9g (rel %.3g > %.3g)", label, t, r, v,
                      exact, ee, EXACT_BOUND);
            worst_q = fmax(worst_q, eq);
            worst_e = fmax(worst_e, ee);
            worst_gap = fmin(worst_gap, fabs(exact - ref_q) / (s + 1e-6));
        }
    }
    /* X_ONE_SPIKE: the quantized X differs from X on every small element, so matching
     * reference 1 to 2e-4 shows the dp4a kernel ran (an f32 kernel would be >= 0.03 off) */
    if (c->x == X_ONE_SPIKE)
        cr_assert(worst_gap > 100 * QUANT_BOUND,
                  "%s: the quantized-X and exact references are only %.3g apart", label, worst_gap);
    cr_log_info("%s: worst rel error %.3g (quantized X), %.3g (exact)", label, worst_q, worst_e);

    test_gpu_free(&wb);
    test_gpu_free(&xb);
    test_gpu_free(&bb);
    test_gpu_free(&yb);
    free(w_host);
    free(deq);
    free(x);
    free(bias);
    free(y_host);
    free(y_init);
    free(xq);
}

static bool dp4a_device(void) {
    const gpu_features *f = gpu_context_features(test_gpu());
    return f->integer_dot_product && f->subgroup_arithmetic && f->subgroup_shuffle;
}

TestSuite(k_matvec_dp4a, .fini = test_gpu_check_validation);

/* 1..8 tokens, three col counts, every type, rows not multiples of the group rows. */
Test(k_matvec_dp4a, tokens_and_cols) {
    if (!dp4a_device()) cr_skip("device has no integer dot product or subgroup arithmetic/shuffle");
    static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K,
                                      GGML_TYPE_Q6_K};
    static const uint32_t cols[] = {256, 288, 4352};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 3; j++)
            for (uint32_t nt = 1; nt <= 8; nt++) {
                if (j != 2 && nt > 3 && nt != 8) continue;
                bool kquant = ggml_type_get_info(types[i]).block_elems == 256;
                dp_case c = {.type = types[i],
                             .rows = nt & 1 ? 37 : 19,
                             .cols = kquant && j == 1 ? 512 : cols[j],
                             .n_tokens = nt,
                             .kernel = K_MATMUL_MATVEC_DP4A,
                             .seed = 100 + 100 * i + 10 * j + nt};
                run_case(&c);
            }
}

/* Epilogues and layouts: bias, accumulate, x/y strides and y_col, a weight at a skewed
 * offset split into row ranges by a small binding limit. */
Test(k_matvec_dp4a, epilogues_strides_ranges) {
    if (!dp4a_device()) cr_skip("device has no integer dot product or subgroup arithmetic/shuffle");
    static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K,
                                      GGML_TYPE_Q6_K};
    for (size_t i = 0; i < 4; i++)
        for (uint32_t k = 0; k < 4; k++) {
            bool kquant = ggml_type_get_info(types[i]).block_elems == 256;
            uint32_t cols = k & 1 ? (kquant ? 768 : 288) : 512;
            uint64_t rb = ggml_row_bytes(types[i], cols);
            dp_case c = {.type = types[i],
                         .rows = 45,
                         .cols = cols,
                         .n_tokens = 1 + k,
                         .kernel = K_MATMUL_MATVEC_DP4A,
                         .w_offset = 20 + 4 * k,
                         .max_binding_bytes = k >= 2 ? rb * 7 + 64 : 0,
                         .x_stride = cols + 4 * k,
                         .y_stride = k ? 60 : 0,
                         .y_col = k ? 5 + k : 0,
                         .bias = k != 1,
                         .accumulate = k & 1,
                         .seed = 500 + 10 * i + k};
            run_case(&c);
        }
}

/* Persistent workgroups: VKLLM_MATVEC_DP4A_TUNE caps the workgroups so each loops over
 * many row groups (1 and 3 rows per subgroup, 1 and 2 subgroups). */
Test(k_matvec_dp4a, persistent_workgroups) {
    if (!dp4a_device()) cr_skip("device has no integer dot product or subgroup arithmetic/shuffle");
    static const char *tunes[] = {"1,2,2", "3,1,3", "2,4,1", "4,2,5"};
    for (size_t k = 0; k < 4; k++) {
        cr_assert(setenv("VKLLM_MATVEC_DP4A_TUNE", tunes[k], 1) == 0);
        cr_log_info("tune %s", tunes[k]);
        static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K,
                                          GGML_TYPE_Q6_K};
        dp_case c = {.type = types[k],
                     .rows = 61,
                     .cols = k < 2 ? 288 : 768,
                     .n_tokens = 1 + (uint32_t)k,
                     .kernel = K_MATMUL_MATVEC_DP4A,
                     .bias = k == 1,
                     .seed = 600 + k};
        run_case(&c);
    }
    cr_assert(unsetenv("VKLLM_MATVEC_DP4A_TUNE") == 0);
}

static const ggml_type all_types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K,
                                      GGML_TYPE_Q6_K};

/* Loop 2 under tunings "R,S,W,U,0": rows per subgroup, subgroups, workgroup cap, units per
 * lane; each with 16-byte and with word loads, several row groups per workgroup (the next
 * group's loads are issued during the previous group's last step) and partial last steps. */
Test(k_matvec_dp4a, loop2_tunings_and_loads) {
    if (!dp4a_device()) cr_skip("device has no integer dot product or subgroup arithmetic/shuffle");
    static const char *tunes[] = {"1,2,3,1,0", "2,2,3,2,0", "3,1,2,4,0", "4,4,5,1,0", "2,1,1,3,0"};
    for (size_t i = 0; i < 4; i++)
        for (size_t k = 0; k < 5; k++)
            for (int pad = 0; pad < 2; pad++) {
                bool kquant = ggml_type_get_info(all_types[i]).block_elems == 256;
                uint32_t nt = (uint32_t)(k == 4 ? 8 : 1 + (k + (size_t)pad) % 3);
                dp_case c = {.type = all_types[i],
                             .rows = k & 1 ? 61 : 23,
                             .cols = kquant ? (k & 1 ? 768 : 1280) : (k & 1 ? 288 : 800),
                             .n_tokens = nt,
                             .kernel = K_MATMUL_MATVEC_DP4A,
                             .w_offset = 4 * (k + 2 * (size_t)pad), /* 4..28: every skew */
                             .bias = k == 2,
                             .accumulate = k == 3,
                             .pad16 = pad,
                             .tune = tunes[k],
                             .seed = 800 + 20 * i + 2 * k + (uint64_t)pad};
                run_case(&c);
            }
}

/* 1..8 tokens on 4096 columns (6-8 tokens take two passes on 32 KiB of shared memory),
 * default tuning, 16-byte loads, a skewed and an aligned weight. */
Test(k_matvec_dp4a, loop2_wide_rows_all_tokens) {
    if (!dp4a_device()) cr_skip("device has no integer dot product or subgroup arithmetic/shuffle");
    for (size_t i = 0; i < 4; i++)
        for (uint32_t nt = 1; nt <= 8; nt++) {
            if (i != nt % 4 && nt != 1 && nt != 8) continue;
            dp_case c = {.type = all_types[i],
                         .rows = nt & 1 ? 13 : 10,
                         .cols = 4096,
                         .n_tokens = nt,
                         .kernel = K_MATMUL_MATVEC_DP4A,
                         .w_offset = nt & 2 ? 16 : 8,
                         .pad16 = true,
                         .tune = nt & 4 ? "2,2,2,2,0" : NULL,
                         .seed = 900 + 10 * i + nt};
            run_case(&c);
        }
}

/* Rows too wide for all the tokens' quantized X in shared memory: loop 2 splits the
 * columns into chunks of whole blocks, one dispatch each, later chunks accumulating (on
 * lavapipe's 32 KiB: 4096 columns x 8 tokens -> 2 chunks; Q4_K 4352 -> 2304 + 2048), with
 * bias, accumulate, strides, y_col and row ranges; loop 1 runs token passes instead. */
Test(k_matvec_dp4a, column_chunks) {
    if (!dp4a_device()) cr_skip("device has no integer dot product or subgroup arithmetic/shuffle");
    for (size_t i = 0; i < 4; i++)
        for (uint32_t k = 0; k < 2; k++) {
            bool kquant = ggml_type_get_info(all_types[i]).block_elems == 256;
            uint32_t cols = kquant && k ? 4352 : 4096;
            dp_case c = {.type = all_types[i],
                         .rows = 21 + 4 * k,
                         .cols = cols,
                         .n_tokens = 8 - k,
                         .kernel = K_MATMUL_MATVEC_DP4A,
                         .w_offset = 12,
                         .max_binding_bytes = k ? ggml_row_bytes(all_types[i], cols) * 6 + 64 : 0,
                         .x_stride = cols + 8,
                         .y_stride = k ? 40 : 0,
                         .y_col = 3 * k,
                         .bias = true,
                         .accumulate = k == 1,
                         .pad16 = i & 1,
                         .seed = 1100 + 10 * i + k};
            run_case(&c);
        }
    dp_case c = {.type = GGML_TYPE_Q4_0,
                 .rows = 17,
                 .cols = 4096,
                 .n_tokens = 7,
                 .kernel = K_MATMUL_MATVEC_DP4A,
                 .bias = true,
                 .tune = "1,2,3,1,1",
                 .seed = 1200};
    run_case(&c);
}

/* Loop 1 (the first version, kept for the A/B) is still right: tuning field 5 and
 * VKLLM_MATVEC_DP4A_LOOP=1. */
Test(k_matvec_dp4a, loop1_still_runs) {
    if (!dp4a_device()) cr_skip("device has no integer dot product or subgroup arithmetic/shuffle");
    for (size_t i = 0; i < 4; i++) {
        bool kquant = ggml_type_get_info(all_types[i]).block_elems == 256;
        dp_case c = {.type = all_types[i],
                     .rows = 29,
                     .cols = kquant ? 512 : 288,
                     .n_tokens = 1 + (uint32_t)i,
                     .kernel = K_MATMUL_MATVEC_DP4A,
                     .w_offset = 4,
                     .pad16 = true,
                     .tune = i & 1 ? "1,2,3,1,1" : NULL,
                     .seed = 1000 + i};
        if (!c.tune) cr_assert(setenv("VKLLM_MATVEC_DP4A_LOOP", "1", 1) == 0);
        run_case(&c);
        cr_assert(unsetenv("VKLLM_MATVEC_DP4A_LOOP") == 0);
    }
}

/* VKLLM_MATVEC=dp4a sends AUTO to this kernel (a spiky X makes the quantized product
 * distinguishable from the f32 one) and leaves other types on matvec_fast. */
Test(k_matvec_dp4a, env_forces_auto) {
    if (!dp4a_device()) cr_skip("device has no integer dot product or subgroup arithmetic/shuffle");
    cr_assert(setenv("VKLLM_MATVEC", "dp4a", 1) == 0);
    dp_case c = {.type = GGML_TYPE_Q8_0,
                 .rows = 21,
                 .cols = 256,
                 .n_tokens = 2,
                 .kernel = K_MATMUL_AUTO,
                 .x = X_ONE_SPIKE,
                 .positive_weights = true,
                 .seed = 700};
    run_case(&c);
    c.kernel = K_MATMUL_MATVEC_DP4A;
    run_case(&c);
    cr_assert(unsetenv("VKLLM_MATVEC") == 0);
}

/* Requested explicitly for a type it lacks: UNSUPPORTED with a message naming the type. */
Test(k_matvec_dp4a, unsupported_type_fails) {
    if (!dp4a_device()) cr_skip("device has no integer dot product or subgroup arithmetic/shuffle");
    uint32_t rows = 4, cols = 256;
    uint64_t bytes = ggml_row_bytes(GGML_TYPE_Q5_K, cols) * rows;
    uint8_t *zeros = calloc(1, bytes);
    float xz[256] = {0};
    gpu_buffer wb = test_gpu_buffer_from(zeros, bytes);
    gpu_buffer xb = test_gpu_buffer_from(xz, sizeof xz);
    gpu_buffer yb = test_gpu_buffer_poisoned(sizeof(float) * rows);
    k_weight kw = {&wb, 0, GGML_TYPE_Q5_K, rows, cols};
    k_matmul_args a = {.w = &kw,
                       .x = {&xb, 0, 0, false},
                       .y = {&yb, 0, 0, true},
                       .n_tokens = 1,
                       .kernel = K_MATMUL_MATVEC_DP4A};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    vkllm_status st = k_matmul_ex(test_gpu(), cmd, &a);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
    cr_assert(st == VKLLM_ERR_UNSUPPORTED, "status %d", (int)st);
    cr_assert(strstr(vkllm_last_error(), "dp4a") && strstr(vkllm_last_error(), "Q5_K"),
              "message: %s", vkllm_last_error());
    /* the same weight under VKLLM_MATVEC=dp4a with AUTO runs (matvec_fast) */
    cr_assert(setenv("VKLLM_MATVEC", "dp4a", 1) == 0);
    a.kernel = K_MATMUL_AUTO;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    st = k_matmul_ex(test_gpu(), cmd, &a);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
    cr_assert(unsetenv("VKLLM_MATVEC") == 0);
    cr_assert(st == VKLLM_OK, "AUTO under VKLLM_MATVEC=dp4a: %s", vkllm_last_error());
    float y[4];
    test_gpu_read(&yb, y, sizeof y);
    for (uint32_t r = 0; r < rows; r++)
        cr_assert(y[r] == 0.0f, "row %u: %g (zero weights and X)", r, y[r]);
    test_gpu_free(&wb);
    test_gpu_free(&xb);
    test_gpu_free(&yb);
    free(zeros);
}
