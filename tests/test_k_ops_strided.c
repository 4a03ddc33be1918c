/* test_k_ops_strided.c: the strided launchers used on the fused QKV activation
 * (k_rope_ex, k_rms_norm_ex in engine/exec/k_ops.c) and the accumulating epilogue of the
 * matvec kernels (k_matmul_args.accumulate), against the CPU references.
 *
 * Layout under test: rows of `stride` floats per token holding Q heads, then K heads,
 * then V (as runner_internal.h's qkv), plus a nonzero offset. The reference gathers the heads
 * into a contiguous array, applies ref_rope / ref_rms_norm (engine/ref/ref_ops.h) and
 * scatters them back; everything the op must not touch (V columns, padding, the offset
 * prefix) must keep its poison/original bits. Bounds: 1e-5 relative L2 (f32 math,
 * positions < 64 for RoPE; reductions over <= 100 values). The accumulate case compares
 * y0 + X·Wᵀ + bias computed in double from the dequantized weights (model/quant.h),
 * bound 1e-4 as in test_k_matmul.c. Sizes are not multiples of any workgroup size. */
// links: exec gpu ref model
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_gpu.h"
#include "common/test_util.h"
#include "exec/k_matmul.h"
#include "exec/k_ops.h"
#include "model/quant.h"
#include "ref/ref_ops.h"

#define OPS_BOUND 1e-5
#define MATVEC_BOUND 1e-4
/* matvec_dp4a quantizes X to int8 per block of 32 (error ~4e-3): where AUTO resolves to
 * it (devices with accelerated int8 dot products) the products get this bound. */
#define DP4A_BOUND 1e-2

TestSuite(k_ops_strided, .fini = test_gpu_check_validation);

static gpu_binding bind(const gpu_buffer *b) {
    return (gpu_binding){.buffer = b};
}

static void run(vkllm_status (*record)(gpu_cmd *, void *), void *arg, const char *what) {
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status st = record(cmd, arg);
    vkllm_status st_submit = gpu_cmd_submit(cmd);
    cr_assert(st == VKLLM_OK, "%s: %s", what, vkllm_last_error());
    cr_assert(st_submit == VKLLM_OK, "%s: submit: %s", what, vkllm_last_error());
}

/* A fused-row case: n_tokens rows of `stride` floats starting at float `offset`; the
 * op covers `heads` heads of head_dim from column `col`. */
typedef struct fused_case {
    uint32_t n_tokens, heads, head_dim, stride, offset, col;
    uint64_t seed;
} fused_case;

static size_t fused_floats(const fused_case *c) {
    return (size_t)c->offset + (size_t)c->n_tokens * c->stride;
}

/* contiguous [n_tokens][heads][head_dim] <-> the fused layout */
static void gather(const fused_case *c, const float *fused, float *dense) {
    size_t w = (size_t)c->heads * c->head_dim;
    for (uint32_t t = 0; t < c->n_tokens; t++)
        memcpy(dense + t * w, fused + c->offset + (size_t)t * c->stride + c->col, w * 4);
}

static void scatter(const fused_case *c, const float *dense, float *fused) {
    size_t w = (size_t)c->heads * c->head_dim;
    for (uint32_t t = 0; t < c->n_tokens; t++)
        memcpy(fused + c->offset + (size_t)t * c->stride + c->col, dense + t * w, w * 4);
}

/* out must equal expect bit for bit outside the op's columns, and be close inside. */
static void check_fused(const fused_case *c, const float *out, const float *expect,
                        const char *what) {
    size_t n = fused_floats(c), w = (size_t)c->heads * c->head_dim;
    float *got = malloc(n * 4), *want = malloc(n * 4);
    float *got_d = malloc((size_t)c->n_tokens * w * 4),
          *want_d = malloc((size_t)c->n_tokens * w * 4);
    memcpy(got, out, n * 4);
    memcpy(want, expect, n * 4);
    gather(c, got, got_d);
    gather(c, want, want_d);
    long bad = test_first_nonfinite(got_d, (size_t)c->n_tokens * w);
    cr_assert(bad < 0, "%s: non-finite output at %ld (unwritten?)", what, bad);
    double err = test_rel_error(got_d, want_d, (size_t)c->n_tokens * w);
    cr_assert(err <= OPS_BOUND, "%s: relative error %.3g > %.3g", what, err, OPS_BOUND);
    /* blank the op's columns in both, then everything else must match exactly */
    for (size_t i = 0; i < (size_t)c->n_tokens * w; i++)
        got_d[i] = want_d[i] = 0;
    scatter(c, got_d, got);
    scatter(c, want_d, want);
    cr_assert(memcmp(got, want, n * 4) == 0, "%s: floats outside the op's heads changed", what);
    free(got);
    free(want);
    free(got_d);
    free(want_d);
}

/* ---------------------------------------------------------------- RoPE */

typedef struct rope_run {
    k_rope_args a;
} rope_run;

static vkllm_status rope_record(gpu_cmd *cmd, void *arg) {
    return k_rope_ex(test_gpu(), cmd, &((rope_run *)arg)->a);
}

static void rope_case(const fused_case *c, k_rope_mode mode, bool in_place) {
    char what[200];
    snprintf(what, sizeof what,
             "k_rope_ex %s %s tokens=%u heads=%u head_dim=%u stride=%u offset=%u col=%u "
             "seed=%llu",
             mode == K_ROPE_NEOX ? "neox" : "norm", in_place ? "in place" : "out of place",
             c->n_tokens, c->heads, c->head_dim, c->stride, c->offset, c->col,
             (unsigned long long)c->seed);
    test_rng rng = test_rng_seeded(c->seed);
    size_t n = fused_floats(c), w = (size_t)c->heads * c->head_dim;
    uint32_t n_rot = c->head_dim - 2; /* some dims copied unchanged */
    float *x = malloc(n * 4), *expect = malloc(n * 4), *out = malloc(n * 4);
    test_fill_uniform(&rng, x, n, -1, 1);
    int32_t *pos = malloc(c->n_tokens * 4);
    for (uint32_t t = 0; t < c->n_tokens; t++)
        pos[t] = (int32_t)test_rng_below(&rng, 64);
    float *dense = malloc((size_t)c->n_tokens * w * 4);
    gather(c, x, dense);
    ref_rope(dense, pos, NULL, dense, c->n_tokens, c->heads, c->head_dim, n_rot, 10000.0f, 1.0f,
             mode == K_ROPE_NEOX ? REF_ROPE_NEOX : REF_ROPE_NORM);
    if (in_place) {
        memcpy(expect, x, n * 4);
    } else {
        test_poison(expect, n); /* the output buffer starts poisoned */
    }
    scatter(c, dense, expect);

    gpu_buffer xb = test_gpu_buffer_from(x, n * 4);
    gpu_buffer pb = test_gpu_buffer_from(pos, c->n_tokens * 4);
    gpu_buffer ob = test_gpu_buffer_poisoned(n * 4);
    const gpu_buffer *dst = in_place ? &xb : &ob;
    rope_run r = {.a = {.x = bind(&xb),
                        .positions = bind(&pb),
                        .out = bind(dst),
                        .n_tokens = c->n_tokens,
                        .n_heads = c->heads,
                        .head_dim = c->head_dim,
                        .n_rot = n_rot,
                        .x_stride = c->stride,
                        .x_offset = c->offset + c->col,
                        .out_stride = c->stride,
                        .out_offset = c->offset + c->col,
                        .freq_base = 10000.0f,
                        .freq_scale = 1.0f,
                        .mode = mode}};
    run(rope_record, &r, what);
    test_gpu_read(dst, out, n * 4);
    check_fused(c, out, expect, what);
    test_gpu_free(&xb);
    test_gpu_free(&pb);
    test_gpu_free(&ob);
    free(x);
    free(expect);
    free(out);
    free(pos);
    free(dense);
}

static const fused_case fused_cases[] = {
    /* Q+K heads of a qkv row (q 3 heads, k 2 heads, v 2 heads of 10) */
    {.n_tokens = 5, .heads = 5, .head_dim = 10, .stride = 70, .offset = 0, .col = 0, .seed = 1},
    /* with an offset and the K heads alone, 37 tokens */
    {.n_tokens = 37, .heads = 2, .head_dim = 18, .stride = 126, .offset = 6, .col = 54, .seed = 2},
    /* one token, wide heads, padding after the row */
    {.n_tokens = 1, .heads = 3, .head_dim = 34, .stride = 110, .offset = 2, .col = 4, .seed = 3},
};

Test(k_ops_strided, rope_fused_rows) {
    for (size_t i = 0; i < sizeof fused_cases / sizeof fused_cases[0]; i++)
        for (int mode = 0; mode < 2; mode++)
            for (int in_place = 0; in_place < 2; in_place++)
                rope_case(&fused_cases[i], (k_rope_mode)mode, in_place);
}

/* The contiguous k_rope equals k_rope_ex with strides 0 (checked against the
 * reference in test_k_ops.c); here: a stride below the row width is refused. */
Test(k_ops_strided, rope_bad_stride) {
    gpu_buffer xb = test_gpu_buffer_poisoned(4096);
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    k_rope_args a = {.x = bind(&xb),
                     .positions = bind(&xb),
                     .out = bind(&xb),
                     .n_tokens = 2,
                     .n_heads = 3,
                     .head_dim = 8,
                     .n_rot = 8,
                     .x_stride = 20,
                     .freq_base = 10000.0f,
                     .freq_scale = 1.0f};
    cr_assert_eq(k_rope_ex(test_gpu(), cmd, &a), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "stride") != NULL, "%s", vkllm_last_error());
    a.x_stride = 0;
    a.out_offset = 1000; /* 1000 + 48 floats > 1024 */
    cr_assert_eq(k_rope_ex(test_gpu(), cmd, &a), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "out") != NULL, "%s", vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
    test_gpu_free(&xb);
}

/* ---------------------------------------------------------------- RMSNorm */

typedef struct norm_run {
    k_rms_norm_args a;
} norm_run;

static vkllm_status norm_record(gpu_cmd *cmd, void *arg) {
    return k_rms_norm_ex(test_gpu(), cmd, &((norm_run *)arg)->a);
}

/* Per-head norm with a stacked [2][head_dim] weight: heads >= split use row 1. */
static void norm_case(const fused_case *c, uint32_t split, k_reduce_path path, bool in_place) {
    char what[200];
    snprintf(what, sizeof what,
             "k_rms_norm_ex path=%d split=%u %s tokens=%u heads=%u n=%u stride=%u offset=%u "
             "col=%u seed=%llu",
             (int)path, split, in_place ? "in place" : "out of place", c->n_tokens, c->heads,
             c->head_dim, c->stride, c->offset, c->col, (unsigned long long)c->seed);
    test_rng rng = test_rng_seeded(c->seed + 100);
    size_t n = fused_floats(c), w = (size_t)c->heads * c->head_dim;
    float eps = 1e-6f;
    float *x = malloc(n * 4), *expect = malloc(n * 4), *out = malloc(n * 4);
    test_fill_uniform(&rng, x, n, -2, 2);
    float weight[2 * 64];
    test_fill_uniform(&rng, weight, 2 * c->head_dim, 0.5f, 1.5f);
    float *dense = malloc((size_t)c->n_tokens * w * 4);
    gather(c, x, dense);
    for (uint32_t t = 0; t < c->n_tokens; t++)
        for (uint32_t h = 0; h < c->heads; h++) {
            float *row = dense + ((size_t)t * c->heads + h) * c->head_dim;
            const float *wr = weight + (split && h >= split ? c->head_dim : 0);
            ref_rms_norm(row, wr, row, 1, c->head_dim, eps);
        }
    if (in_place)
        memcpy(expect, x, n * 4);
    else
        test_poison(expect, n);
    scatter(c, dense, expect);

    gpu_buffer xb = test_gpu_buffer_from(x, n * 4);
    gpu_buffer wb = test_gpu_buffer_from(weight, 2 * c->head_dim * 4);
    gpu_buffer ob = test_gpu_buffer_poisoned(n * 4);
    const gpu_buffer *dst = in_place ? &xb : &ob;
    norm_run r = {.a = {.x = bind(&xb),
                        .weight = bind(&wb),
                        .out = bind(dst),
                        .n_tokens = c->n_tokens,
                        .heads = c->heads,
                        .n = c->head_dim,
                        .x_stride = c->stride,
                        .x_offset = c->offset + c->col,
                        .out_stride = c->stride,
                        .out_offset = c->offset + c->col,
                        .w_split = split,
                        .eps = eps,
                        .path = path}};
    run(norm_record, &r, what);
    test_gpu_read(dst, out, n * 4);
    check_fused(c, out, expect, what);
    test_gpu_free(&xb);
    test_gpu_free(&wb);
    test_gpu_free(&ob);
    free(x);
    free(expect);
    free(out);
    free(dense);
}

static bool subgroup_available(void) {
    const gpu_features *f = gpu_context_features(test_gpu());
    return f->subgroup_basic && f->subgroup_arithmetic;
}

Test(k_ops_strided, rms_norm_fused_rows) {
    for (size_t i = 0; i < sizeof fused_cases / sizeof fused_cases[0]; i++) {
        const fused_case *c = &fused_cases[i];
        uint32_t split = c->heads > 1 ? (c->heads + 1) / 2 : 0; /* 5 heads: 3 Q + 2 K */
        for (int in_place = 0; in_place < 2; in_place++) {
            norm_case(c, split, K_REDUCE_SHARED, in_place);
            norm_case(c, 0, K_REDUCE_SHARED, in_place);
            if (subgroup_available()) norm_case(c, split, K_REDUCE_SUBGROUP, in_place);
        }
    }
}

/* Fused add with different x and residual strides (x dense, residual strided). */
Test(k_ops_strided, rms_norm_add_strided_residual) {
    const uint32_t T = 7, n = 45, stride = 52, offset = 3;
    test_rng rng = test_rng_seeded(77);
    float *x = malloc(T * n * 4), w[45], *res = malloc((offset + T * stride) * 4);
    test_fill_uniform(&rng, x, T * n, -1, 1);
    test_fill_uniform(&rng, w, n, 0.5f, 1.5f);
    test_fill_uniform(&rng, res, offset + T * stride, -1, 1);
    float *expect = malloc((offset + T * stride) * 4), *normed = malloc(T * n * 4);
    memcpy(expect, res, (offset + T * stride) * 4);
    ref_rms_norm(x, w, normed, T, n, 1e-5f);
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t i = 0; i < n; i++)
            expect[offset + t * stride + i] += normed[t * n + i];
    gpu_buffer xb = test_gpu_buffer_from(x, T * n * 4);
    gpu_buffer wb = test_gpu_buffer_from(w, n * 4);
    gpu_buffer rb = test_gpu_buffer_from(res, (offset + T * stride) * 4);
    norm_run r = {.a = {.x = bind(&xb),
                        .weight = bind(&wb),
                        .out = bind(&rb),
                        .n_tokens = T,
                        .n = n,
                        .out_stride = stride,
                        .out_offset = offset,
                        .eps = 1e-5f,
                        .fused_add = true}};
    run(norm_record, &r, "k_rms_norm_ex fused add, strided residual seed=77");
    float *out = malloc((offset + T * stride) * 4);
    test_gpu_read(&rb, out, (offset + T * stride) * 4);
    fused_case c = {.n_tokens = T, .heads = 1, .head_dim = n, .stride = stride, .offset = offset};
    check_fused(&c, out, expect, "k_rms_norm_ex fused add, strided residual seed=77");
    test_gpu_free(&xb);
    test_gpu_free(&wb);
    test_gpu_free(&rb);
    free(x);
    free(res);
    free(expect);
    free(normed);
    free(out);
}

Test(k_ops_strided, rms_norm_bad_args) {
    gpu_buffer b = test_gpu_buffer_poisoned(4096);
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    k_rms_norm_args a = {.x = bind(&b),
                         .weight = bind(&b),
                         .out = bind(&b),
                         .n_tokens = 2,
                         .heads = 4,
                         .n = 8,
                         .x_stride = 31,
                         .eps = 1e-6f};
    cr_assert_eq(k_rms_norm_ex(test_gpu(), cmd, &a), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "stride") != NULL, "%s", vkllm_last_error());
    a.x_stride = 0;
    a.w_split = 4; /* must be below heads */
    cr_assert_eq(k_rms_norm_ex(test_gpu(), cmd, &a), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "w_split") != NULL, "%s", vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
    test_gpu_free(&b);
}

/* ---------------------------------------------------------------- matvec accumulate */

typedef struct acc_run {
    k_matmul_args a;
} acc_run;

static vkllm_status acc_record(gpu_cmd *cmd, void *arg) {
    return k_matmul_ex(test_gpu(), cmd, &((acc_run *)arg)->a);
}

/* Random Q8_0 rows: fp16 scale in [0.01, 0.05) and int8 quants. */
static void random_q8_0(test_rng *rng, uint8_t *dst, uint32_t rows, uint32_t cols) {
    size_t blocks = (size_t)rows * cols / 32;
    for (size_t b = 0; b < blocks; b++) {
        uint8_t *p = dst + b * 34;
        uint16_t h = test_f32_to_f16(test_rng_uniform(rng, 0.01f, 0.05f));
        memcpy(p, &h, 2);
        for (int i = 0; i < 32; i++)
            p[2 + i] = (uint8_t)test_rng_next(rng);
    }
}

static void accumulate_case(ggml_type type, k_matmul_kernel kernel, uint32_t rows, uint32_t cols,
                            uint32_t nt, uint32_t y_col, bool bias_on, uint64_t seed) {
    char what[200];
    snprintf(what, sizeof what,
             "accumulate %s kernel=%d rows=%u cols=%u tokens=%u y_col=%u bias=%d seed=%llu",
             ggml_type_get_info(type).name, (int)kernel, rows, cols, nt, y_col, bias_on,
             (unsigned long long)seed);
    test_rng rng = test_rng_seeded(seed);
    uint64_t row_bytes = ggml_row_bytes(type, cols), w_bytes = row_bytes * rows;
    uint8_t *wq = calloc(1, (w_bytes + 15) & ~15ull);
    if (type == GGML_TYPE_Q8_0) {
        random_q8_0(&rng, wq, rows, cols);
    } else {
        test_fill_uniform(&rng, (float *)wq, (size_t)rows * cols, -1, 1);
    }
    float *deq = malloc((size_t)rows * cols * 4);
    cr_assert(quant_dequantize(type, wq, deq, (uint64_t)rows * cols) == VKLLM_OK, "%s",
              vkllm_last_error());
    uint32_t ys = y_col + rows + 3;
    float *x = malloc((size_t)nt * cols * 4), *bias = malloc(rows * 4);
    float *y0 = malloc((size_t)nt * ys * 4), *expect = malloc((size_t)nt * ys * 4);
    test_fill_uniform(&rng, x, (size_t)nt * cols, -1, 1);
    test_fill_uniform(&rng, bias, rows, -1, 1);
    test_fill_uniform(&rng, y0, (size_t)nt * ys, -4, 4);
    memcpy(expect, y0, (size_t)nt * ys * 4);
    for (uint32_t t = 0; t < nt; t++)
        for (uint32_t r = 0; r < rows; r++) {
            double s = bias_on ? bias[r] : 0.0;
            for (uint32_t k = 0; k < cols; k++)
                s += (double)deq[(size_t)r * cols + k] * x[(size_t)t * cols + k];
            expect[(size_t)t * ys + y_col + r] += (float)s;
        }
    gpu_buffer wb = test_gpu_buffer_from(wq, (w_bytes + 15) & ~15ull);
    gpu_buffer xb = test_gpu_buffer_from(x, (size_t)nt * cols * 4);
    gpu_buffer bb = test_gpu_buffer_from(bias, rows * 4);
    gpu_buffer yb = test_gpu_buffer_from(y0, (size_t)nt * ys * 4);
    k_weight w = {&wb, 0, type, rows, cols};
    acc_run r = {.a = {.w = &w,
                       .x = bind(&xb),
                       .y = bind(&yb),
                       .bias = bias_on ? bind(&bb) : (gpu_binding){0},
                       .n_tokens = nt,
                       .y_stride = ys,
                       .y_col = y_col,
                       .accumulate = true,
                       .kernel = kernel}};
    run(acc_record, &r, what);
    float *out = malloc((size_t)nt * ys * 4);
    test_gpu_read(&yb, out, (size_t)nt * ys * 4);
    fused_case c = {.n_tokens = nt, .heads = 1, .head_dim = rows, .stride = ys, .col = y_col};
    /* check_fused's bound is OPS_BOUND; the products need MATVEC_BOUND */
    float *got_d = malloc((size_t)nt * rows * 4), *want_d = malloc((size_t)nt * rows * 4);
    gather(&c, out, got_d);
    gather(&c, expect, want_d);
    double err = test_rel_error(got_d, want_d, (size_t)nt * rows);
    double bound =
        k_matmul_matvec_choice(gpu_context_features(test_gpu()), &r.a) == K_MATMUL_MATVEC_DP4A
            ? DP4A_BOUND
            : MATVEC_BOUND;
    cr_assert(err <= bound, "%s: relative error %.3g > %.3g", what, err, bound);
    for (size_t i = 0; i < (size_t)nt * ys; i++) {
        size_t col = i % ys;
        if (col < y_col || col >= y_col + rows)
            cr_assert(memcmp(&out[i], &y0[i], 4) == 0, "%s: y[%zu] outside the output changed",
                      what, i);
    }
    test_gpu_free(&wb);
    test_gpu_free(&xb);
    test_gpu_free(&bb);
    test_gpu_free(&yb);
    free(wq);
    free(deq);
    free(x);
    free(bias);
    free(y0);
    free(expect);
    free(out);
    free(got_d);
    free(want_d);
}

Test(k_ops_strided, matvec_accumulate) {
    const gpu_features *f = gpu_context_features(test_gpu());
    k_matmul_kernel kernels[2] = {K_MATMUL_MATVEC_BASIC, K_MATMUL_MATVEC_FAST};
    uint64_t seed = 500;
    for (int k = 0; k < 2; k++) {
        if (kernels[k] == K_MATMUL_MATVEC_FAST && !f->subgroup_arithmetic) continue;
        accumulate_case(GGML_TYPE_Q8_0, kernels[k], 37, 96, 1, 0, false, seed++);
        accumulate_case(GGML_TYPE_Q8_0, kernels[k], 67, 160, 3, 5, true, seed++);
        accumulate_case(GGML_TYPE_F32, kernels[k], 13, 40, 8, 2, true, seed++);
        accumulate_case(GGML_TYPE_F32, kernels[k], 21, 24, 11, 0, false, seed++); /* 2 chunks */
    }
    accumulate_case(GGML_TYPE_Q8_0, K_MATMUL_AUTO, 37, 64, 2, 1, true, seed++);
}

Test(k_ops_strided, accumulate_refused_by_tiled) {
    const gpu_features *f = gpu_context_features(test_gpu());
    cr_assert(k_matmul_accumulate_supported(f, 1));
    cr_assert(k_matmul_accumulate_supported(f, 8));
    /* 9 tokens: the tiled kernel refuses accumulate; the cooperative-matrix one (where
     * AUTO picks it, e.g. an H100) accumulates through its reduce */
    if (k_matmul_auto_kernel(f, 9) != K_MATMUL_COOPMAT)
        cr_assert(!k_matmul_accumulate_supported(f, 9));
    gpu_buffer b = test_gpu_buffer_poisoned(4096);
    k_weight w = {&b, 0, GGML_TYPE_F32, 8, 16};
    k_matmul_args a = {.w = &w,
                       .x = bind(&b),
                       .y = bind(&b),
                       .n_tokens = 2,
                       .accumulate = true,
                       .kernel = K_MATMUL_TILED};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    cr_assert_eq(k_matmul_ex(test_gpu(), cmd, &a), VKLLM_ERR_UNSUPPORTED);
    cr_assert(strstr(vkllm_last_error(), "accumulate") != NULL, "%s", vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
    test_gpu_free(&b);
}
