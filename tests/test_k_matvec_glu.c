/* test_k_matvec_glu.c: the GLU prologue of matvec_dp4a.comp (k_matmul_args.glu, GLU_X):
 * Y = (act(gate) ∘ up)·Wᵀ (+ bias, or += Y) read straight from the FFN's gate|up rows in one
 * dispatch (gate at columns [0, cols), up at [cols, 2 cols) of each token's row).
 *
 * Compared, per output, with S = Σ_c |w_rc · a_c| + |base| (a = act(gate) ∘ up):
 *   - the two dispatches it replaces on the GPU, k_glu then the same dp4a product:
 *     |y - y2| <= 2e-4 · S + 1e-6 (both quantize the same act values, formed by the same
 *     ops_math.glsl function, so only f32 rounding of act and rare flipped ties separate them);
 *   - the exact double product of the dequantized W with act computed in double (CPU):
 *     |y - exact| <= 2e-2 · S (int8 X quantization, as test_k_matvec_dp4a.c states).
 * Random inputs (seed in every message): gates over [-6, 6] (both tails and the curved middle
 * of SiLU and GELU-tanh), up rows of very different magnitudes per token (1e-2 .. 1e2), Y
 * poisoned so unwritten outputs fail; Q4_0, Q8_0, Q4_K, Q6_K; SiLU and GELU-tanh; cols 256,
 * 512 and 4352 (lavapipe's 32 KiB splits 8 tokens of 4352 into column chunks, whose gate-to-up
 * distance stays the whole row's), 1-8 tokens, bias, accumulate (the residual join of
 * ffn_down), x_stride, both main loops. Error paths: GLU with the RMSNorm prologue, another
 * kernel, an unknown activation, x_stride below 2 cols, an X binding too small for the up half.
 */
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

typedef struct glu_case {
    ggml_type type;
    k_glu_kind kind;
    uint32_t rows, cols, n_tokens, x_stride; /* x_stride 0: 2 cols */
    bool bias, accumulate;
    uint64_t seed;
} glu_case;

static gpu_binding bind(const gpu_buffer *b, bool writable) {
    return (gpu_binding){.buffer = b, .writable = writable};
}

/* The activations in double, from their definitions (model.h): silu(z) = z / (1 + e^-z),
 * gelu_tanh(z) = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))). */
static double act_exact(k_glu_kind kind, double z) {
    if (kind == K_GLU_SILU) return z / (1.0 + exp(-z));
    return 0.5 * z * (1.0 + tanh(sqrt(2.0 / M_PI) * (z + 0.044715 * z * z * z)));
}

static void run_case(const glu_case *c) {
    char label[220];
    snprintf(label, sizeof label,
             "%s %s rows=%u cols=%u tokens=%u x_stride=%u bias=%d acc=%d loop=%s seed=%llu",
             ggml_type_get_info(c->type).name, c->kind == K_GLU_SILU ? "silu" : "gelu_tanh",
             c->rows, c->cols, c->n_tokens, c->x_stride, c->bias, c->accumulate,
             getenv("VKLLM_MATVEC_DP4A_LOOP") ? getenv("VKLLM_MATVEC_DP4A_LOOP") : "2",
             (unsigned long long)c->seed);
    test_rng rng = test_rng_seeded(c->seed);
    uint32_t rows = c->rows, cols = c->cols, nt = c->n_tokens;
    uint32_t xs = c->x_stride ? c->x_stride : 2 * cols;
    uint64_t row_bytes = quant_row_bytes(c->type, cols);
    uint64_t w_size = (row_bytes * rows + 15) & ~15ull;
    float *deq = malloc(sizeof(float) * rows * cols);
    uint8_t *wq = calloc(1, w_size);
    test_random_quant_blocks(&rng, c->type, (uint64_t)rows * cols, wq);
    cr_assert(quant_dequantize(c->type, wq, deq, (uint64_t)rows * cols) == VKLLM_OK, "%s", label);
    float *gu = malloc(sizeof(float) * nt * xs);
    test_poison(gu, (size_t)nt * xs); /* the padding past 2 cols must not be read */
    for (uint32_t t = 0; t < nt; t++) {
        float *row = gu + (size_t)t * xs;
        test_fill_uniform(&rng, row, cols, -6, 6);
        test_fill_uniform(&rng, row + cols, cols, -1, 1);
        for (uint32_t k = 0; k < cols; k++) /* up magnitudes 1e-2 .. 1e2 */
            row[cols + k] *= powf(10.0f, (float)(t % 5) - 2.0f);
    }
    float *bias = malloc(sizeof(float) * rows);
    test_fill_uniform(&rng, bias, rows, -1, 1);
    size_t y_len = (size_t)nt * rows;
    float *y_init = malloc(sizeof(float) * y_len), *y1 = malloc(sizeof(float) * y_len),
          *y2 = malloc(sizeof(float) * y_len);
    if (c->accumulate)
        test_fill_uniform(&rng, y_init, y_len, -1, 1);
    else
        test_poison(y_init, y_len);

    gpu_buffer wb = test_gpu_buffer_from(wq, w_size), xb = test_gpu_buffer_from(gu, 4ull * nt * xs);
    gpu_buffer bb = test_gpu_buffer_from(bias, 4ull * rows);
    gpu_buffer yb1 = test_gpu_buffer_from(y_init, 4 * y_len),
               yb2 = test_gpu_buffer_from(y_init, 4 * y_len);
    gpu_buffer ab = test_gpu_buffer_poisoned(4ull * nt * cols);
    k_weight kw = {&wb, 0, c->type, rows, cols};
    k_matmul_args a = {.w = &kw,
                       .x = bind(&xb, false),
                       .y = bind(&yb1, true),
                       .bias = c->bias ? bind(&bb, false) : (gpu_binding){0},
                       .n_tokens = nt,
                       .x_stride = c->x_stride,
                       .accumulate = c->accumulate,
                       .glu = true,
                       .glu_kind = c->kind,
                       .kernel = K_MATMUL_MATVEC_DP4A};
    k_matmul_args a2 = a;
    a2.x = bind(&ab, false);
    a2.x_stride = 0;
    a2.y = bind(&yb2, true);
    a2.glu = false;
    /* up from float `cols` of the same buffer (a multiple of 256 bytes: aligned) */
    gpu_binding up = {.buffer = &xb, .offset = 4ull * cols, .range = 4ull * nt * xs - 4ull * cols};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status s1 = k_matmul_ex(test_gpu(), cmd, &a);
    vkllm_status s2 =
        k_glu(test_gpu(), cmd, c->kind, bind(&xb, false), up, bind(&ab, true), nt, cols, xs, xs);
    vkllm_status s3 = k_matmul_ex(test_gpu(), cmd, &a2);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s: submit: %s", label, vkllm_last_error());
    cr_assert(s1 == VKLLM_OK && s2 == VKLLM_OK && s3 == VKLLM_OK, "%s: %s", label,
              vkllm_last_error());
    test_gpu_read(&yb1, y1, 4 * y_len);
    test_gpu_read(&yb2, y2, 4 * y_len);

    double worst_pair = 0, worst_exact = 0;
    double *act = malloc(sizeof(double) * cols);
    for (uint32_t t = 0; t < nt; t++) {
        const float *row = gu + (size_t)t * xs;
        for (uint32_t k = 0; k < cols; k++)
            act[k] = act_exact(c->kind, row[k]) * row[cols + k];
        for (uint32_t r = 0; r < rows; r++) {
            size_t yi = (size_t)t * rows + r;
            double base = (c->bias ? bias[r] : 0.0) + (c->accumulate ? y_init[yi] : 0.0);
            double exact = base, s = fabs(base);
            for (uint32_t k = 0; k < cols; k++) {
                exact += deq[(size_t)r * cols + k] * act[k];
                s += fabs(deq[(size_t)r * cols + k] * act[k]);
            }
            cr_assert(isfinite(y1[yi]), "%s: token %u row %u not finite (unwritten?)", label, t, r);
            double dp = fabs(y1[yi] - y2[yi]), de = fabs(y1[yi] - exact);
            cr_assert(dp <= PAIR_BOUND * s + 1e-6,
                      "%s: token %u row %u: %.9g vs glu + matvec %.9g (rel %.3g > %.3g)", label, t,
                      r, y1[yi], y2[yi], dp / s, PAIR_BOUND);
            cr_assert(de <= EXACT_BOUND * s + 1e-6,
                      "%s: token %u row %u: %.9g vs exact %.9g (rel %.3g > %.3g)", label, t, r,
                      y1[yi], exact, de / s, EXACT_BOUND);
            worst_pair = fmax(worst_pair, dp / s);
            worst_exact = fmax(worst_exact, de / s);
        }
    }
    cr_log_info("%s: worst rel error %.3g (vs two dispatches), %.3g (exact)", label, worst_pair,
                worst_exact);
    free(act), free(deq), free(wq), free(gu), free(bias), free(y_init), free(y1), free(y2);
    test_gpu_free(&wb), test_gpu_free(&xb), test_gpu_free(&bb);
    test_gpu_free(&yb1), test_gpu_free(&yb2), test_gpu_free(&ab);
}

static void skip_without_dp4a(void) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (!f->integer_dot_product || !f->subgroup_arithmetic)
        cr_skip_test("device has no integer dot products / subgroup arithmetic");
}

TestSuite(k_matvec_glu, .fini = test_gpu_check_validation);

Test(k_matvec_glu, types_tokens_activations) {
    skip_without_dp4a();
    static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K,
                                      GGML_TYPE_Q6_K};
    uint64_t seed = 6100;
    for (size_t i = 0; i < 4; i++) {
        run_case(&(glu_case){.type = types[i],
                             .kind = K_GLU_SILU,
                             .rows = 37,
                             .cols = 256,
                             .n_tokens = 1,
                             .seed = seed++});
        run_case(&(glu_case){.type = types[i],
                             .kind = K_GLU_GELU_TANH,
                             .rows = 21,
                             .cols = 256,
                             .n_tokens = 5,
                             .bias = true,
                             .seed = seed++});
    }
    /* 4352 cols: 8 tokens run in column chunks on lavapipe's 32 KiB */
    run_case(&(glu_case){.type = GGML_TYPE_Q4_0,
                         .kind = K_GLU_SILU,
                         .rows = 19,
                         .cols = 4352,
                         .n_tokens = 8,
                         .seed = seed++});
    run_case(&(glu_case){.type = GGML_TYPE_Q4_K,
                         .kind = K_GLU_GELU_TANH,
                         .rows = 40,
                         .cols = 4352,
                         .n_tokens = 1,
                         .seed = seed++});
}

/* ffn_down's use: y += W act (the residual), and padded gate|up rows. */
Test(k_matvec_glu, accumulate_and_strides) {
    skip_without_dp4a();
    run_case(&(glu_case){.type = GGML_TYPE_Q8_0,
                         .kind = K_GLU_SILU,
                         .rows = 45,
                         .cols = 512,
                         .n_tokens = 3,
                         .x_stride = 2 * 512 + 8,
                         .accumulate = true,
                         .seed = 6201});
    run_case(&(glu_case){.type = GGML_TYPE_Q6_K,
                         .kind = K_GLU_GELU_TANH,
                         .rows = 33,
                         .cols = 512,
                         .n_tokens = 2,
                         .bias = true,
                         .accumulate = true,
                         .seed = 6202});
    run_case(&(glu_case){.type = GGML_TYPE_Q4_K,
                         .kind = K_GLU_SILU,
                         .rows = 29,
                         .cols = 768,
                         .n_tokens = 7,
                         .accumulate = true,
                         .seed = 6203});
}

/* The first main loop (VKLLM_MATVEC_DP4A_LOOP=1) shares quantize_x. */
Test(k_matvec_glu, first_main_loop) {
    skip_without_dp4a();
    setenv("VKLLM_MATVEC_DP4A_LOOP", "1", 1);
    run_case(&(glu_case){.type = GGML_TYPE_Q4_0,
                         .kind = K_GLU_GELU_TANH,
                         .rows = 23,
                         .cols = 512,
                         .n_tokens = 4,
                         .accumulate = true,
                         .seed = 6301});
    run_case(&(glu_case){.type = GGML_TYPE_Q6_K,
                         .kind = K_GLU_SILU,
                         .rows = 17,
                         .cols = 256,
                         .n_tokens = 1,
                         .bias = true,
                         .seed = 6302});
    unsetenv("VKLLM_MATVEC_DP4A_LOOP");
}

Test(k_matvec_glu, unsupported_uses_fail_clearly) {
    skip_without_dp4a();
    const gpu_features *f = gpu_context_features(test_gpu());
    gpu_buffer wb = test_gpu_buffer_poisoned(16384), xb = test_gpu_buffer_poisoned(8192),
               yb = test_gpu_buffer_poisoned(4096), gb = test_gpu_buffer_poisoned(4096);
    k_weight kw = {&wb, 0, GGML_TYPE_Q8_0, 4, 256};
    k_matmul_args a = {.w = &kw,
                       .x = bind(&xb, false),
                       .y = bind(&yb, true),
                       .n_tokens = 1,
                       .glu = true,
                       .glu_kind = K_GLU_GELU_TANH,
                       .kernel = K_MATMUL_MATVEC_DP4A};
    cr_assert(k_matmul_glu_prologue_applies(f, &a));
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    /* both prologues on one product */
    a.norm_weight = bind(&gb, false);
    a.norm_eps = 1e-6f;
    cr_assert(k_matmul_ex(test_gpu(), cmd, &a) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "GLU prologue (glu) and the RMSNorm prologue"),
              "message: %s", vkllm_last_error());
    cr_assert(!k_matmul_glu_prologue_applies(f, &a));
    cr_assert(!k_matmul_norm_prologue_applies(f, &a));
    a.norm_weight = (gpu_binding){0};
    /* another kernel */
    a.kernel = K_MATMUL_TILED;
    cr_assert(k_matmul_ex(test_gpu(), cmd, &a) == VKLLM_ERR_UNSUPPORTED);
    cr_assert(strstr(vkllm_last_error(), "GLU prologue (glu) runs in matvec_dp4a only"),
              "message: %s", vkllm_last_error());
    cr_assert(!k_matmul_glu_prologue_applies(f, &a));
    a.kernel = K_MATMUL_MATVEC_DP4A;
    /* unknown activation */
    a.glu_kind = (k_glu_kind)7;
    cr_assert(k_matmul_ex(test_gpu(), cmd, &a) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "glu_kind 7"), "message: %s", vkllm_last_error());
    cr_assert(!k_matmul_glu_prologue_applies(f, &a));
    a.glu_kind = K_GLU_SILU;
    /* a stride that would put the next token's gate inside this token's up half */
    a.x_stride = 256;
    a.n_tokens = 2;
    cr_assert(k_matmul_ex(test_gpu(), cmd, &a) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "x_stride 256 must be a multiple of 4 and >= 2 x cols"),
              "message: %s", vkllm_last_error());
    /* X must hold the up half of the last token: 2 tokens of 512 floats need 4096 bytes */
    a.x_stride = 0;
    a.x = (gpu_binding){.buffer = &xb, .range = 4096 - 4};
    cr_assert(k_matmul_ex(test_gpu(), cmd, &a) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "x binding has 4092 bytes but needs 4096"), "message: %s",
              vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    test_gpu_free(&wb), test_gpu_free(&xb), test_gpu_free(&yb), test_gpu_free(&gb);
}
