/* test_k_matvec_norm.c: the RMSNorm prologue of matvec_dp4a.comp (k_matmul_args.norm_weight,
 * NORM_X): Y = rmsnorm(X)·Wᵀ (+ bias, or += Y) from the raw rows X in one dispatch.
 *
 * Compared, per output, with S = Σ_c |w_rc · xn_c| + |base| (xn the normalized row):
 *   - the two dispatches it replaces on the GPU, k_rms_norm then the same dp4a product:
 *     |y - y2| <= 2e-4 · S + 1e-6 (both quantize the same row up to a per-token factor,
 *     so only float rounding and rare flipped ties separate them);
 *   - the exact double product of the dequantized W with rmsnorm(X) (CPU):
 *     |y - exact| <= 2e-2 · S (int8 X quantization, as test_k_matvec_dp4a.c states).
 * Random inputs (seed in every message), tokens of very different magnitudes (the norm
 * must be per token), Y poisoned so unwritten outputs fail; Q4_0, Q8_0, Q4_K, Q6_K; cols
 * 256 and 4352 (lavapipe runs 6-8 tokens of 4352 in two passes), 1-8 tokens, bias,
 * accumulate, x_stride. Error paths: another kernel, cols below 4 x the subgroups. */
// links: exec gpu model
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_gpu.h"
#include "common/test_quant.h"
#include "common/test_util.h"
#include "exec/k_matmul.h"
#include "exec/k_ops.h"
#include "model/quant.h"

#define PAIR_BOUND 2e-4
#define EXACT_BOUND 2e-2
#define NORM_EPS 1e-5f

typedef struct norm_case {
    ggml_type type;
    uint32_t rows, cols, n_tokens, x_stride;
    bool bias, accumulate;
    uint64_t seed;
} norm_case;

static gpu_binding bind(const gpu_buffer *b, bool writable) {
    return (gpu_binding){.buffer = b, .writable = writable};
}

static void run_case(const norm_case *c) {
    char label[200];
    snprintf(label, sizeof label,
             "%s rows=%u cols=%u tokens=%u x_stride=%u bias=%d acc=%d seed=%llu",
             ggml_type_get_info(c->type).name, c->rows, c->cols, c->n_tokens, c->x_stride, c->bias,
             c->accumulate, (unsigned long long)c->seed);
    test_rng rng = test_rng_seeded(c->seed);
    uint32_t rows = c->rows, cols = c->cols, nt = c->n_tokens;
    uint32_t xs = c->x_stride ? c->x_stride : cols;
    uint64_t row_bytes = quant_row_bytes(c->type, cols);
    uint64_t w_size = (row_bytes * rows + 15) & ~15ull;
    float *deq = malloc(sizeof(float) * rows * cols);
    uint8_t *wq = calloc(1, w_size);
    test_random_quant_blocks(&rng, c->type, (uint64_t)rows * cols, wq);
    cr_assert(quant_dequantize(c->type, wq, deq, (uint64_t)rows * cols) == VKLLM_OK, "%s", label);
    float *x = malloc(sizeof(float) * nt * xs), *g = malloc(sizeof(float) * cols);
    test_fill_uniform(&rng, x, (size_t)nt * xs, -1, 1);
    for (uint32_t t = 0; t < nt; t++) /* magnitudes 1e-2 .. 1e2 */
        for (uint32_t k = 0; k < xs; k++)
            x[(size_t)t * xs + k] *= powf(10.0f, (float)(t % 5) - 2.0f);
    test_fill_uniform(&rng, g, cols, 0.25f, 2.0f);
    float *bias = malloc(sizeof(float) * rows);
    test_fill_uniform(&rng, bias, rows, -1, 1);
    size_t y_len = (size_t)nt * rows;
    float *y_init = malloc(sizeof(float) * y_len), *y1 = malloc(sizeof(float) * y_len),
          *y2 = malloc(sizeof(float) * y_len);
    if (c->accumulate)
        test_fill_uniform(&rng, y_init, y_len, -1, 1);
    else
        test_poison(y_init, y_len);

    gpu_buffer wb = test_gpu_buffer_from(wq, w_size), xb = test_gpu_buffer_from(x, 4ull * nt * xs);
    gpu_buffer gb = test_gpu_buffer_from(g, 4ull * cols),
               bb = test_gpu_buffer_from(bias, 4ull * rows);
    gpu_buffer yb1 = test_gpu_buffer_from(y_init, 4 * y_len),
               yb2 = test_gpu_buffer_from(y_init, 4 * y_len);
    gpu_buffer hb = test_gpu_buffer_poisoned(4ull * nt * cols);
    k_weight kw = {&wb, 0, c->type, rows, cols};
    k_matmul_args a = {.w = &kw,
                       .x = bind(&xb, false),
                       .y = bind(&yb1, true),
                       .bias = c->bias ? bind(&bb, false) : (gpu_binding){0},
                       .n_tokens = nt,
                       .x_stride = c->x_stride,
                       .accumulate = c->accumulate,
                       .norm_weight = bind(&gb, false),
                       .norm_eps = NORM_EPS,
                       .kernel = K_MATMUL_MATVEC_DP4A};
    k_matmul_args a2 = a;
    a2.x = bind(&hb, false);
    a2.x_stride = 0;
    a2.y = bind(&yb2, true);
    a2.norm_weight = (gpu_binding){0};
    k_rms_norm_args n = {.x = bind(&xb, false),
                         .weight = bind(&gb, false),
                         .out = bind(&hb, true),
                         .n_tokens = nt,
                         .n = cols,
                         .x_stride = xs,
                         .eps = NORM_EPS};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status s1 = k_matmul_ex(test_gpu(), cmd, &a);
    vkllm_status s2 = k_rms_norm_ex(test_gpu(), cmd, &n);
    vkllm_status s3 = k_matmul_ex(test_gpu(), cmd, &a2);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s: submit: %s", label, vkllm_last_error());
    cr_assert(s1 == VKLLM_OK && s2 == VKLLM_OK && s3 == VKLLM_OK, "%s: %s", label,
              vkllm_last_error());
    test_gpu_read(&yb1, y1, 4 * y_len);
    test_gpu_read(&yb2, y2, 4 * y_len);

    double worst_pair = 0, worst_exact = 0;
    double *xn = malloc(sizeof(double) * cols);
    for (uint32_t t = 0; t < nt; t++) {
        const float *xt = x + (size_t)t * xs;
        double ss = 0;
        for (uint32_t k = 0; k < cols; k++)
            ss += (double)xt[k] * xt[k];
        double r = 1.0 / sqrt(ss / cols + NORM_EPS);
        for (uint32_t k = 0; k < cols; k++)
            xn[k] = xt[k] * r * g[k];
        for (uint32_t row = 0; row < rows; row++) {
            size_t yi = (size_t)t * rows + row;
            double base = (c->bias ? bias[row] : 0.0) + (c->accumulate ? y_init[yi] : 0.0);
            double exact = base, s = fabs(base);
            for (uint32_t k = 0; k < cols; k++) {
                exact += deq[(size_t)row * cols + k] * xn[k];
                s += fabs(deq[(size_t)row * cols + k] * xn[k]);
            }
            cr_assert(isfinite(y1[yi]), "%s: token %u row %u not finite (unwritten?)", label, t,
                      row);
            double dp = fabs(y1[yi] - y2[yi]), de = fabs(y1[yi] - exact);
            cr_assert(dp <= PAIR_BOUND * s + 1e-6,
                      "%s: token %u row %u: %.9g vs rms_norm + matvec %.9g (rel %.3g > %.3g)",
                      label, t, row, y1[yi], y2[yi], dp / s, PAIR_BOUND);
            cr_assert(de <= EXACT_BOUND * s + 1e-6,
                      "%s: token %u row %u: %.9g vs exact %.9g (rel %.3g > %.3g)", label, t, row,
                      y1[yi], exact, de / s, EXACT_BOUND);
            worst_pair = fmax(worst_pair, dp / s);
            worst_exact = fmax(worst_exact, de / s);
        }
    }
    cr_log_info("%s: worst rel error %.3g (vs two dispatches), %.3g (exact)", label, worst_pair,
                worst_exact);
    free(xn), free(deq), free(wq), free(x), free(g), free(bias), free(y_init), free(y1), free(y2);
    test_gpu_free(&wb), test_gpu_free(&xb), test_gpu_free(&gb), test_gpu_free(&bb);
    test_gpu_free(&yb1), test_gpu_free(&yb2), test_gpu_free(&hb);
}

static void skip_without_dp4a(void) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (!f->integer_dot_product || !f->subgroup_arithmetic)
        cr_skip_test("device has no integer dot products / subgroup arithmetic");
}

TestSuite(k_matvec_norm, .fini = test_gpu_check_validation);

Test(k_matvec_norm, types_tokens_cols) {
    skip_without_dp4a();
    static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K,
                                      GGML_TYPE_Q6_K};
    uint64_t seed = 5100;
    for (size_t i = 0; i < 4; i++) {
        run_case(
            &(norm_case){.type = types[i], .rows = 37, .cols = 256, .n_tokens = 1, .seed = seed++});
        run_case(&(norm_case){.type = types[i],
                              .rows = 21,
                              .cols = 256,
                              .n_tokens = 5,
                              .bias = true,
                              .seed = seed++});
    }
    /* 4352 cols: 8 tokens run as two passes on lavapipe's 32 KiB */
    run_case(&(norm_case){
        .type = GGML_TYPE_Q4_0, .rows = 19, .cols = 4352, .n_tokens = 8, .seed = seed++});
    run_case(&(norm_case){
        .type = GGML_TYPE_Q4_K, .rows = 40, .cols = 4352, .n_tokens = 1, .seed = seed++});
}

Test(k_matvec_norm, accumulate_and_strides) {
    skip_without_dp4a();
    run_case(&(norm_case){.type = GGML_TYPE_Q8_0,
                          .rows = 45,
                          .cols = 512,
                          .n_tokens = 3,
                          .x_stride = 520,
                          .accumulate = true,
                          .seed = 5201});
    run_case(&(norm_case){.type = GGML_TYPE_Q6_K,
                          .rows = 33,
                          .cols = 512,
                          .n_tokens = 2,
                          .bias = true,
                          .accumulate = true,
                          .seed = 5202});
}

Test(k_matvec_norm, unsupported_uses_fail_clearly) {
    skip_without_dp4a();
    /* 32 cols under 16 subgroups per workgroup (tuning variable): 32 < 4 x 16 */
    setenv("VKLLM_MATVEC_DP4A_TUNE", "1,16,264", 1);
    gpu_buffer wb = test_gpu_buffer_poisoned(4096), xb = test_gpu_buffer_poisoned(4096),
               yb = test_gpu_buffer_poisoned(4096);
    k_weight kw = {&wb, 0, GGML_TYPE_Q8_0, 4, 32};
    k_matmul_args a = {.w = &kw,
                       .x = bind(&xb, false),
                       .y = bind(&yb, true),
                       .n_tokens = 1,
                       .norm_weight = bind(&xb, false),
                       .norm_eps = NORM_EPS,
                       .kernel = K_MATMUL_MATVEC_DP4A};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(k_matmul_ex(test_gpu(), cmd, &a) == VKLLM_ERR_UNSUPPORTED);
    cr_assert(strstr(vkllm_last_error(), "needs cols (32) >= 4 x the subgroups"), "message: %s",
              vkllm_last_error());
    cr_assert(!k_matmul_norm_prologue_applies(gpu_context_features(test_gpu()), &a));
    unsetenv("VKLLM_MATVEC_DP4A_TUNE");
    kw.cols = 256;
    a.kernel = K_MATMUL_TILED;
    cr_assert(k_matmul_ex(test_gpu(), cmd, &a) == VKLLM_ERR_UNSUPPORTED);
    cr_assert(strstr(vkllm_last_error(), "matvec_dp4a only"), "message: %s", vkllm_last_error());
    cr_assert(!k_matmul_norm_prologue_applies(gpu_context_features(test_gpu()), &a));
    a.kernel = K_MATMUL_MATVEC_DP4A;
    cr_assert(k_matmul_norm_prologue_applies(gpu_context_features(test_gpu()), &a));
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    test_gpu_free(&wb), test_gpu_free(&xb), test_gpu_free(&yb);
}
