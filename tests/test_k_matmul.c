/* test_k_matmul.c: the weight kernels (k_matmul / k_matmul_ex) against a CPU reference.
 *
 * Reference: the weights are dequantized on the CPU with model/quant.h, then
 * Y = X·Wᵀ (+ bias) is computed in double. Weights are random blocks (random
 * quant bits, fp16 scales drawn from sane ranges), X is uniform in [-1, 1), Y is
 * poisoned (NaN words) first so unwritten outputs fail, and elements outside the
 * written region must still hold the poison afterwards.
 * Bounds (relative L2 error of all outputs): 1e-4 for the f32 paths (matvec,
 * tiled), 1e-2 for the cooperative-matrix path (fp16 operands, f32 accumulation) and for
 * matvec_dp4a.comp where MATVEC picks it (X quantized to int8 per block of 32).
 * Shapes: rows not multiples of the tile (37, 67, 131), cols a multiple of the
 * block but not of the k-tile where the type allows it.
 * The big-weight case (test_k_matmul_big.c) covers bindings beyond 128 MiB;
 * here small max_binding_bytes values force the same row-range splitting. */
// links: exec gpu model
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/k_matmul.h"
#include "model/quant.h"
#include "common/test_gpu.h"
#include "common/test_util.h"

#define F32_BOUND 1e-4
#define COOPMAT_BOUND 1e-2
#define DP4A_BOUND 1e-2

static const ggml_type all_types[] = {
    GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1,
    GGML_TYPE_Q8_0, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

/* ---------------------------------------------------------------- random weights */

static void put_f16(uint8_t *p, float v) {
    uint16_t h = test_f32_to_f16(v);
    memcpy(p, &h, 2);
}

static float random_scale(test_rng *rng, float lo, float hi) {
    float v = test_rng_uniform(rng, lo, hi);
    return (test_rng_next(rng) & 1) ? -v : v;
}

/* Fills `rows` rows of `cols` elements of `type` at dst with random data. */
static void random_weight(test_rng *rng, ggml_type type, uint8_t *dst, uint32_t rows,
                          uint32_t cols) {
    uint64_t n = (uint64_t)rows * cols;
    if (type == GGML_TYPE_F32) {
        for (uint64_t i = 0; i < n; i++) {
            float v = test_rng_uniform(rng, -1, 1);
            memcpy(dst + 4 * i, &v, 4);
        }
        return;
    }
    if (type == GGML_TYPE_F16) {
        for (uint64_t i = 0; i < n; i++)
            put_f16(dst + 2 * i, test_rng_uniform(rng, -1, 1));
        return;
    }
    ggml_type_info info = ggml_type_get_info(type);
    uint64_t blocks = n / info.block_elems;
    for (uint64_t b = 0; b < blocks; b++) {
        uint8_t *blk = dst + b * info.block_bytes;
        for (uint32_t i = 0; i < info.block_bytes; i++)
            blk[i] = (uint8_t)test_rng_next(rng);
        switch (type) {
        case GGML_TYPE_Q4_0:
        case GGML_TYPE_Q5_0:
        case GGML_TYPE_Q8_0:
            put_f16(blk, random_scale(rng, 0.002f, 0.02f));
            break;
        case GGML_TYPE_Q4_1:
        case GGML_TYPE_Q5_1:
            put_f16(blk, random_scale(rng, 0.002f, 0.02f));
            put_f16(blk + 2, random_scale(rng, 0.0f, 0.1f));
            break;
        case GGML_TYPE_Q2_K:
            put_f16(blk + 80, random_scale(rng, 0.002f, 0.02f));
            put_f16(blk + 82, random_scale(rng, 0.0f, 0.01f));
            break;
        case GGML_TYPE_Q3_K:
            put_f16(blk + 108, random_scale(rng, 0.0005f, 0.005f));
            break;
        case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q5_K:
            put_f16(blk, random_scale(rng, 0.0005f, 0.005f));
            put_f16(blk + 2, random_scale(rng, 0.0f, 0.002f));
            break;
        case GGML_TYPE_Q6_K:
            put_f16(blk + 208, random_scale(rng, 0.0002f, 0.002f));
            break;
        default:
            cr_assert_fail("no random recipe for type %u", (unsigned)type);
        }
    }
}

/* ---------------------------------------------------------------- one case */

typedef struct mm_case {
    ggml_type type;
    uint32_t rows, cols, n_tokens;
    k_matmul_kernel kernel;
    k_reduce_path reduce;
    uint64_t w_offset;          /* weight bytes start here in its buffer (multiple of 4) */
    uint64_t max_binding_bytes; /* 0: device limit */
    uint32_t x_stride, y_stride, y_col;
    bool bias;
    double bound;
    uint64_t seed;
} mm_case;

static const char *kernel_name(k_matmul_kernel k) {
    static const char *names[] = {"auto",         "matvec",      "tiled",        "coopmat",
                                  "matvec_basic", "matvec_fast", "coopmat_basic"};
    return names[k];
}

static void run_case(const mm_case *c) {
    char label[256];
    snprintf(label, sizeof label,
             "%s rows=%u cols=%u n_tokens=%u kernel=%s reduce=%d offset=%llu max_binding=%llu "
             "x_stride=%u y_stride=%u y_col=%u bias=%d seed=%llu",
             ggml_type_get_info(c->type).name, c->rows, c->cols, c->n_tokens,
             kernel_name(c->kernel), (int)c->reduce, (unsigned long long)c->w_offset,
             (unsigned long long)c->max_binding_bytes, c->x_stride, c->y_stride, c->y_col, c->bias,
             (unsigned long long)c->seed);
    test_rng rng = test_rng_seeded(c->seed);
    uint32_t rows = c->rows, cols = c->cols, nt = c->n_tokens;
    uint32_t xs = c->x_stride ? c->x_stride : cols;
    uint32_t ys = c->y_stride ? c->y_stride : c->y_col + rows;
    uint64_t row_bytes = ggml_row_bytes(c->type, cols);
    cr_assert(row_bytes > 0, "%s: bad shape", label);

    /* weights: random prefix bytes, the tensor, padding to 16 */
    uint64_t w_size = (c->w_offset + row_bytes * rows + 15) & ~15ull;
    uint8_t *w_host = malloc(w_size);
    cr_assert(w_host);
    for (uint64_t i = 0; i < w_size; i++)
        w_host[i] = (uint8_t)test_rng_next(&rng);
    random_weight(&rng, c->type, w_host + c->w_offset, rows, cols);
    float *deq = malloc(sizeof(float) * rows * cols);
    cr_assert(deq);
    cr_assert(quant_dequantize(c->type, w_host + c->w_offset, deq, (uint64_t)rows * cols) ==
                  VKLLM_OK,
              "%s: quant_dequantize: %s", label, vkllm_last_error());

    float *x = malloc(sizeof(float) * nt * xs);
    float *bias = malloc(sizeof(float) * rows);
    cr_assert(x && bias);
    test_fill_uniform(&rng, x, (size_t)nt * xs, -1, 1); /* padding columns too: must be ignored */
    test_fill_uniform(&rng, bias, rows, -1, 1);

    /* reference */
    size_t y_len = (size_t)nt * ys;
    float *ref = malloc(sizeof(float) * nt * rows);
    float *out = malloc(sizeof(float) * nt * rows);
    float *y_host = malloc(sizeof(float) * y_len);
    cr_assert(ref && out && y_host);
    for (uint32_t t = 0; t < nt; t++)
        for (uint32_t r = 0; r < rows; r++) {
            double s = c->bias ? bias[r] : 0.0;
            const float *wr = deq + (size_t)r * cols, *xr = x + (size_t)t * xs;
            for (uint32_t k = 0; k < cols; k++)
                s += (double)wr[k] * xr[k];
            ref[(size_t)t * rows + r] = (float)s;
        }

    gpu_buffer wb = test_gpu_buffer_from(w_host, w_size);
    gpu_buffer xb = test_gpu_buffer_from(x, sizeof(float) * nt * xs);
    gpu_buffer bb = test_gpu_buffer_from(bias, sizeof(float) * rows);
    gpu_buffer yb = test_gpu_buffer_poisoned(sizeof(float) * y_len);
    k_weight w = {&wb, c->w_offset, c->type, rows, cols};
    k_matmul_args a = {.w = &w,
                       .x = {&xb, 0, 0, false},
                       .y = {&yb, 0, 0, true},
                       .bias = c->bias ? (gpu_binding){&bb, 0, 0, false} : (gpu_binding){0},
                       .n_tokens = nt,
                       .x_stride = c->x_stride,
                       .y_stride = c->y_stride,
                       .y_col = c->y_col,
                       .kernel = c->kernel,
                       .reduce = c->reduce,
                       .max_binding_bytes = c->max_binding_bytes};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status st = k_matmul_ex(test_gpu(), cmd, &a);
    vkllm_status st_submit = gpu_cmd_submit(cmd);
    cr_assert(st == VKLLM_OK, "%s: k_matmul_ex: %s", label, vkllm_last_error());
    cr_assert(st_submit == VKLLM_OK, "%s: submit: %s", label, vkllm_last_error());
    test_gpu_read(&yb, y_host, sizeof(float) * y_len);

    for (uint32_t t = 0; t < nt; t++)
        for (uint32_t col = 0; col < ys; col++) {
            float v = y_host[(size_t)t * ys + col];
            if (col >= c->y_col && col < c->y_col + rows) {
                out[(size_t)t * rows + col - c->y_col] = v;
            } else {
                uint32_t bits;
                memcpy(&bits, &v, 4);
                cr_assert(bits == TEST_POISON_WORD, "%s: y[%u][%u] outside the output was written",
                          label, t, col);
            }
        }
    long bad = test_first_nonfinite(out, (size_t)nt * rows);
    cr_assert(bad < 0, "%s: non-finite output at token %ld row %ld (unwritten?)", label,
              bad / (long)rows, bad % (long)rows);
    double err = test_rel_error(out, ref, (size_t)nt * rows);
    /* AUTO takes the fp16 cooperative-matrix path on devices that have it. */
    k_matmul_kernel used = c->kernel == K_MATMUL_AUTO
                               ? k_matmul_auto_kernel(gpu_context_features(test_gpu()), nt)
                               : c->kernel;
    /* MATVEC runs matvec_dp4a.comp (X quantized to int8, error ~4e-3) where the device
     * accelerates int8 dot products or VKLLM_MATVEC=dp4a asks for it */
    if (used == K_MATMUL_MATVEC)
        used = k_matmul_matvec_choice(gpu_context_features(test_gpu()), &a);
    bool fp16 = used == K_MATMUL_COOPMAT || used == K_MATMUL_COOPMAT_BASIC;
    double bound = fp16 && c->bound < COOPMAT_BOUND ? COOPMAT_BOUND : c->bound;
    if (used == K_MATMUL_MATVEC_DP4A && bound < DP4A_BOUND) bound = DP4A_BOUND;
    cr_assert(err <= bound, "%s: relative error %.3g > %.3g", label, err, bound);

    test_gpu_free(&wb);
    test_gpu_free(&xb);
    test_gpu_free(&bb);
    test_gpu_free(&yb);
    free(w_host);
    free(deq);
    free(x);
    free(bias);
    free(ref);
    free(out);
    free(y_host);
}

/* cols for a type: a multiple of its block; for F32/F16 a multiple of 8 but not of 32. */
static uint32_t cols_for(ggml_type type, uint32_t blocks) {
    uint32_t be = ggml_type_get_info(type).block_elems;
    return be == 1 ? 8 * (4 * blocks + 1) : be * blocks;
}

TestSuite(k_matmul, .fini = test_gpu_check_validation);

/* ---------------------------------------------------------------- matvec, 1-8 tokens */

Test(k_matmul, matvec_every_type_both_reductions) {
    const gpu_features *f = gpu_context_features(test_gpu());
    static const uint32_t tokens[] = {1, 3, 8};
    for (size_t i = 0; i < N_TYPES; i++)
        for (size_t j = 0; j < 3; j++)
            for (int reduce = K_REDUCE_SHARED; reduce <= K_REDUCE_SUBGROUP; reduce++) {
                if (reduce == K_REDUCE_SUBGROUP && !f->subgroup_arithmetic) continue;
                ggml_type t = all_types[i];
                uint32_t blocks = ggml_type_get_info(t).block_elems == 256 ? 3 : 11;
                mm_case c = {.type = t,
                             .rows = 37,
                             .cols = cols_for(t, blocks),
                             .n_tokens = tokens[j],
                             .kernel = K_MATMUL_AUTO,
                             .reduce = (k_reduce_path)reduce,
                             .bound = F32_BOUND,
                             .seed = 1000 + 10 * i + j};
                run_case(&c);
            }
}

/* ---------------------------------------------------------------- matvec_fast */

/* The fast matvec forced on every type: 1..8 tokens (every NUM_COLS) for the types of
 * Llama-3 GGUFs, rows not multiples of the rows per workgroup, rows of many chunks
 * (lavapipe's subgroup of 8 gives 512-byte chunks: 2-26 blocks). */
Test(k_matmul, matvec_fast_every_type) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (!f->subgroup_arithmetic) cr_skip("device has no subgroup arithmetic");
    for (size_t i = 0; i < N_TYPES; i++) {
        ggml_type t = all_types[i];
        bool main_type = t == GGML_TYPE_F16 || t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q5_0 ||
                         t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q6_K;
        for (uint32_t nt = 1; nt <= 8; nt++) {
            if (!main_type && nt != 1 && nt != 6) continue;
            uint32_t blocks = ggml_type_get_info(t).block_elems == 256 ? 5 + nt % 3 : 57 + 4 * nt;
            mm_case c = {.type = t,
                         .rows = nt & 1 ? 37 : 19,
                         .cols = cols_for(t, blocks),
                         .n_tokens = nt,
                         .kernel = K_MATMUL_MATVEC_FAST,
                         .bias = nt == 3,
                         .bound = F32_BOUND,
                         .seed = 7000 + 10 * i + nt};
            run_case(&c);
        }
    }
}

/* Other shapes of the fast kernel through VKLLM_MATVEC_TUNE (rows per subgroup, loads
 * per lane, subgroups per workgroup): 1 and 3 rows per subgroup (37 rows: a partial last
 * row set), 2 loads per lane (chunks of one Q6_K block on lavapipe), 1 and 3 subgroups; with a
 * skewed weight split into row ranges and strided X/Y. */
Test(k_matmul, matvec_fast_tunings_skew_ranges) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (!f->subgroup_arithmetic) cr_skip("device has no subgroup arithmetic");
    static const char *tunes[] = {"1,4,4", "3,2,1", "4,2,3", "2,16,2"};
    static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, GGML_TYPE_Q6_K,
                                      GGML_TYPE_Q4_K, GGML_TYPE_F16};
    for (size_t k = 0; k < 4; k++) {
        cr_assert(setenv("VKLLM_MATVEC_TUNE", tunes[k], 1) == 0);
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            ggml_type t = types[i];
            uint32_t blocks = ggml_type_get_info(t).block_elems == 256 ? 3 : 13;
            uint32_t cols = cols_for(t, blocks);
            uint64_t rb = ggml_row_bytes(t, cols);
            uint32_t nt = 1 + (uint32_t)(k + i) % 4;
            mm_case c = {.type = t,
                         .rows = 37,
                         .cols = cols,
                         .n_tokens = nt,
                         .kernel = K_MATMUL_MATVEC_FAST,
                         .w_offset = 20,
                         .max_binding_bytes = k & 1 ? rb * 7 + 64 : 0,
                         .x_stride = cols + 4,
                         .y_stride = 50,
                         .y_col = 5,
                         .bias = (k + i) & 1,
                         .bound = F32_BOUND,
                         .seed = 8000 + 10 * k + i};
            char label[64];
            snprintf(label, sizeof label, "tune %s", tunes[k]);
            cr_log_info("%s", label);
            run_case(&c);
        }
    }
    cr_assert(unsetenv("VKLLM_MATVEC_TUNE") == 0);
}

/* VKLLM_MATVEC=basic sends MATVEC/AUTO to matvec.comp (still correct); the fast kernel
 * forced with a shared-memory reduction, or on a weight whose buffer ends before the
 * tensor end rounded up to 16 bytes, is refused with a message, while MATVEC falls back. */
Test(k_matmul, matvec_fast_selection) {
    const gpu_features *f = gpu_context_features(test_gpu());
    cr_assert(setenv("VKLLM_MATVEC", "basic", 1) == 0);
    mm_case c = {.type = GGML_TYPE_Q4_0,
                 .rows = 37,
                 .cols = 1024,
                 .n_tokens = 2,
                 .kernel = K_MATMUL_AUTO,
                 .bound = F32_BOUND,
                 .seed = 9000};
    run_case(&c);
    cr_assert(unsetenv("VKLLM_MATVEC") == 0);

    gpu_buffer wb = test_gpu_buffer_poisoned(7 * 68); /* Q8_0 7 x 64: 476 bytes, 16-rounded 480 */
    gpu_buffer xb = test_gpu_buffer_poisoned(4 * 64);
    gpu_buffer yb = test_gpu_buffer_poisoned(4 * 8);
    k_weight w = {&wb, 0, GGML_TYPE_Q8_0, 7, 64};
    k_matmul_args a = {.w = &w,
                       .x = {&xb, 0, 0, false},
                       .y = {&yb, 0, 0, true},
                       .n_tokens = 1,
                       .kernel = K_MATMUL_MATVEC_FAST};
    cr_assert(!k_matmul_matvec_fast_applies(f, &a));
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    vkllm_status st = k_matmul_ex(test_gpu(), cmd, &a);
    char msg[VKL_ERROR_MAX];
    snprintf(msg, sizeof msg, "%s", vkllm_last_error());
    a.kernel = K_MATMUL_MATVEC; /* falls back to the basic kernel */
    vkllm_status st_fallback = k_matmul_ex(test_gpu(), cmd, &a);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(st == VKLLM_ERR_UNSUPPORTED, "got %s", vkllm_status_name(st));
    cr_assert(strstr(msg, "rounded up to 16") != NULL, "message: %s", msg);
    cr_assert(st_fallback == VKLLM_OK, "%s", vkllm_last_error());
    test_gpu_free(&wb);

    if (f->subgroup_arithmetic) {
        wb = test_gpu_buffer_poisoned(7 * 68 + 4);
        a.kernel = K_MATMUL_MATVEC_FAST;
        cr_assert(k_matmul_matvec_fast_applies(f, &a));
        a.reduce = K_REDUCE_SHARED;
        cr_assert(!k_matmul_matvec_fast_applies(f, &a));
        cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
        st = k_matmul_ex(test_gpu(), cmd, &a);
        cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
        cr_assert(st == VKLLM_ERR_UNSUPPORTED, "got %s", vkllm_status_name(st));
        test_gpu_free(&wb);
    }
    test_gpu_free(&xb);
    test_gpu_free(&yb);
}

/* ---------------------------------------------------------------- tiled, > 8 tokens */

Test(k_matmul, tiled_every_type) {
    static const uint32_t tokens[] = {17, 64};
    for (size_t i = 0; i < N_TYPES; i++)
        for (size_t j = 0; j < 2; j++) {
            ggml_type t = all_types[i];
            uint32_t blocks = ggml_type_get_info(t).block_elems == 256 ? 3 : 7;
            mm_case c = {.type = t,
                         .rows = j ? 131 : 67,
                         .cols = cols_for(t, blocks),
                         .n_tokens = tokens[j],
                         .kernel = K_MATMUL_TILED,
                         .bound = F32_BOUND,
                         .seed = 2000 + 10 * i + j};
            run_case(&c);
        }
}

/* AUTO with more than 8 tokens picks coopmat or tiled by feature; and the matvec
 * kernel forced on 17 tokens runs in chunks of 8. */
Test(k_matmul, auto_choice_and_matvec_chunks) {
    const gpu_features *f = gpu_context_features(test_gpu());
    cr_assert(k_matmul_auto_kernel(f, 1) == K_MATMUL_MATVEC);
    cr_assert(k_matmul_auto_kernel(f, 8) == K_MATMUL_MATVEC);
    cr_assert(k_matmul_auto_kernel(f, 9) ==
              (k_matmul_coopmat_available(f) ? K_MATMUL_COOPMAT : K_MATMUL_TILED));
    mm_case c = {.type = GGML_TYPE_Q4_K,
                 .rows = 37,
                 .cols = 512,
                 .n_tokens = 17,
                 .kernel = K_MATMUL_AUTO,
                 .seed = 3000,
                 .bound = k_matmul_coopmat_available(f) ? COOPMAT_BOUND : F32_BOUND};
    run_case(&c);
    c.kernel = K_MATMUL_MATVEC;
    c.bound = F32_BOUND;
    c.seed = 3001;
    run_case(&c);
}

/* ---------------------------------------------------------------- cooperative matrix */

/* Every cooperative-matrix shape on every type (runs on a GPU with NV cooperative
 * matrices; on lavapipe it only checks that every variant is embedded):
 *   - the automatic shapes of matmul_coopmat.comp for < 8192 rows: 9/16 tokens (32x16,
 *     K split 4), 17/32 (32x32, K split 4), 33/64 (32x64, K split 2), 65-200
 *     (128x128, 128x64 or 64x64 split 2, by the number of tiles), each on rows that are
 *     not multiples of the tile (67, 131, 300) and rows of many K steps (37 small blocks
 *     or 5 super-blocks: 5-37 steps of 32-128 columns; F32/F16 cols not a multiple of 32);
 *   - shapes forced through VKLLM_MATMUL_TUNE (every shape the chooser uses, the
 *     >= 8192-row ones included, plus odd ones, and the K depth / padding / prefetch
 *     settings that docs/perf-notes.md, "coopmat, second pass" measures), with bias, strides and
 * y_col;
 *   - the first-cut kernel (COOPMAT_BASIC, and COOPMAT under VKLLM_MATMUL=old). */
static const char *cm_type_name_lower(ggml_type t, char *buf, size_t n) {
    snprintf(buf, n, "%s", ggml_type_get_info(t).name);
    for (char *p = buf; *p; p++)
        *p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
    return buf;
}

Test(k_matmul, coopmat_every_type) {
    const gpu_features *f = gpu_context_features(test_gpu());
    for (size_t i = 0; i < N_TYPES; i++) {
        char tn[16], name[64];
        cm_type_name_lower(all_types[i], tn, sizeof tn);
        snprintf(name, sizeof name, "matmul_coopmat_%s", tn);
        cr_assert(gpu_find_shader(name) != NULL, "shader variant %s is not embedded", name);
        snprintf(name, sizeof name, "matmul_cm_%s", tn);
        cr_assert(gpu_find_shader(name) != NULL, "shader variant %s is not embedded", name);
    }
    if (!k_matmul_coopmat_available(f))
        cr_skip("device '%s' has no usable VK_NV_cooperative_matrix (the variants compile; "
                "run this on a GPU that has it)",
                f->name);
    cr_assert(unsetenv("VKLLM_MATMUL") == 0 && unsetenv("VKLLM_MATMUL_TUNE") == 0);
    static const uint32_t tokens[] = {9, 16, 17, 32, 33, 64, 65, 200};
    static const uint32_t rows[] = {67, 131, 300};
    for (size_t i = 0; i < N_TYPES; i++)
        for (size_t j = 0; j < sizeof tokens / sizeof tokens[0]; j++) {
            ggml_type t = all_types[i];
            uint32_t blocks = ggml_type_get_info(t).block_elems == 256 ? 5 : 37;
            mm_case c = {.type = t,
                         .rows = rows[(i + j) % 3],
                         .cols = cols_for(t, blocks),
                         .n_tokens = tokens[j],
                         .kernel = K_MATMUL_COOPMAT,
                         .bias = j % 3 == 1,
                         .bound = COOPMAT_BOUND,
                         .seed = 4000 + 10 * i + j};
            run_case(&c);
        }
    /* forced shapes: SG_M,FM,SG_N,FN,SG_K[,KSUB[,PAD[,PREFETCH]]] */
    static const char *tunes[] = {"2,1,1,2,4",       "2,1,1,4,4",     "2,1,2,4,2",     "4,1,2,4,2",
                                  "4,1,1,2,2",       "4,1,1,4,2",     "2,4,4,4,1",     "2,4,2,4,1",
                                  "2,2,2,4,2",       "1,2,1,1,8",     "3,1,1,3,2",     "2,2,1,1,1",
                                  "2,4,4,4,1,2,1,0", "2,2,2,4,1,4,1", "2,4,2,4,1,2,0", "4,2,2,4,1",
                                  "2,1,1,2,4,1,3,0", "2,1,1,1,1,8,3"};
    static const ggml_type tune_types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K,
                                           GGML_TYPE_Q8_0, GGML_TYPE_F16};
    for (size_t k = 0; k < sizeof tunes / sizeof tunes[0]; k++) {
        cr_assert(setenv("VKLLM_MATMUL_TUNE", tunes[k], 1) == 0);
        cr_log_info("VKLLM_MATMUL_TUNE=%s", tunes[k]);
        for (size_t i = 0; i < sizeof tune_types / sizeof tune_types[0]; i++) {
            ggml_type t = tune_types[i];
            uint32_t blocks = ggml_type_get_info(t).block_elems == 256 ? 3 : 21;
            uint32_t cols = cols_for(t, blocks);
            mm_case c = {.type = t,
                         .rows = 157,
                         .cols = cols,
                         .n_tokens = 11 + 23 * (uint32_t)((k + i) % 4),
                         .kernel = K_MATMUL_COOPMAT,
                         .w_offset = 20,
                         .x_stride = cols + 4,
                         .y_stride = 200,
                         .y_col = 7,
                         .bias = (k + i) & 1,
                         .bound = COOPMAT_BOUND,
                         .seed = 4500 + 10 * k + i};
            run_case(&c);
        }
    }
    cr_assert(unsetenv("VKLLM_MATMUL_TUNE") == 0);
    /* the first-cut kernel, by name and through VKLLM_MATMUL=old */
    for (size_t i = 0; i < N_TYPES; i++) {
        ggml_type t = all_types[i];
        uint32_t blocks = ggml_type_get_info(t).block_elems == 256 ? 3 : 7;
        mm_case c = {.type = t,
                     .rows = 131,
                     .cols = cols_for(t, blocks),
                     .n_tokens = i & 1 ? 200 : 17,
                     .kernel = K_MATMUL_COOPMAT_BASIC,
                     .bias = i % 3 == 0,
                     .bound = COOPMAT_BOUND,
                     .seed = 4800 + i};
        run_case(&c);
    }
    cr_assert(setenv("VKLLM_MATMUL", "old", 1) == 0);
    mm_case c = {.type = GGML_TYPE_Q4_0,
                 .rows = 67,
                 .cols = 1024,
                 .n_tokens = 40,
                 .kernel = K_MATMUL_COOPMAT,
                 .bound = COOPMAT_BOUND,
                 .seed = 4900};
    run_case(&c);
    cr_assert(unsetenv("VKLLM_MATMUL") == 0);
}

/* matmul_coopmat.comp's tiling on any device with shaderFloat16: VKLLM_MATMUL=emulate
 * runs the same shader with the fragment operations emulated in shared memory, so tile
 * loads, edge clamping, double buffering, the K-slice reduction and the epilogue are
 * checked on lavapipe. Shapes (SG_M,FM,SG_N,FN,SG_K): the automatic ones for 9-64
 * tokens, 4x4 accumulators per subgroup, the 128x64 shape, K split 2/4/8 (shrunk to fit
 * 32 KiB where needed), odd subgroup counts; types with 18/34/210/144-byte blocks and
 * F16 with cols not a multiple of 32; weight at offset 20, strides, y_col, bias. */
Test(k_matmul, coopmat_emulated_shapes) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (!f->fp16_arithmetic) cr_skip("device has no shaderFloat16");
    static const char *tunes[] = {"",          "2,1,1,2,4", "2,1,1,4,4", "2,1,2,4,2",
                                  "4,1,1,4,2", "4,1,2,4,2", "1,4,2,4,1", "2,4,2,4,1",
                                  "2,2,2,4,2", "1,2,1,1,8", "3,1,1,3,2", "2,2,1,1,1"};
    static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K,
                                      GGML_TYPE_Q8_0, GGML_TYPE_F16};
    cr_assert(setenv("VKLLM_MATMUL", "emulate", 1) == 0);
    for (size_t k = 0; k < sizeof tunes / sizeof tunes[0]; k++) {
        cr_assert(setenv("VKLLM_MATMUL_TUNE", tunes[k], 1) == 0);
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            if (k > 0 && (k + i) % 2) continue; /* forced shapes: every other type */
            ggml_type t = types[i];
            uint32_t blocks = ggml_type_get_info(t).block_elems == 256 ? 3 : 21;
            uint32_t cols = cols_for(t, blocks);
            bool plain = (k + i) % 3 == 0;
            mm_case c = {.type = t,
                         .rows = k == 0 ? 67 + 30 * (uint32_t)i : 157,
                         .cols = cols,
                         .n_tokens =
                             k == 0 ? 9 + 14 * (uint32_t)i : 11 + 23 * (uint32_t)((k + i) % 3),
                         .kernel = K_MATMUL_COOPMAT,
                         .w_offset = plain ? 0 : 20,
                         .x_stride = plain ? 0 : cols + 4,
                         .y_stride = plain ? 0 : 200,
                         .y_col = plain ? 0 : 7,
                         .bias = (k + i) & 1,
                         .bound = COOPMAT_BOUND,
                         .seed = 9000 + 10 * k + i};
            cr_log_info("VKLLM_MATMUL_TUNE='%s'", tunes[k]);
            run_case(&c);
        }
    }
    cr_assert(unsetenv("VKLLM_MATMUL_TUNE") == 0);
    cr_assert(unsetenv("VKLLM_MATMUL") == 0);
}

/* The prefill shapes and the K-depth / padding knobs of matmul_coopmat.comp, emulated
 * (VKLLM_MATMUL_TUNE="SG_M,FM,SG_N,FN,SG_K[,KSUB[,PAD]]"):
 *   - every weight type through the 128x128 shape (on a 32 KiB device the launcher
 *     shrinks its K depth to 16 columns) and the 128x64 one, at 65-257 tokens (and 600
 *     on a short row) and rows that are not multiples of the tile;
 *   - K depths of 16-128 columns per slice (KSUB 1, 2, 4, 8), paddings 0, 1 and 3
 *     chunks, loads after the products (PREFETCH 0, with and without a K split), chunk
 *     counts that are not multiples of the workgroup size (idle invocations in the tile
 *     loads), on types with 18/34/144/210-byte blocks and F16. */
Test(k_matmul, coopmat_emulated_prefill_and_knobs) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (!f->fp16_arithmetic) cr_skip("device has no shaderFloat16");
    cr_assert(setenv("VKLLM_MATMUL", "emulate", 1) == 0);
    static const char *prefill[] = {"2,4,4,4,1", "2,4,2,4,1"};
    static const uint32_t tokens[] = {65, 130, 193, 257};
    for (size_t i = 0; i < N_TYPES; i++) {
        cr_assert(setenv("VKLLM_MATMUL_TUNE", prefill[i % 2], 1) == 0);
        ggml_type t = all_types[i];
        uint32_t blocks = ggml_type_get_info(t).block_elems == 256 ? 1 : 7;
        mm_case c = {.type = t,
                     .rows = 131 + 40 * (uint32_t)(i % 3),
                     .cols = cols_for(t, blocks),
                     .n_tokens = tokens[i % 4],
                     .kernel = K_MATMUL_COOPMAT,
                     .bias = i % 3 == 2,
                     .bound = COOPMAT_BOUND,
                     .seed = 9500 + i};
        cr_log_info("VKLLM_MATMUL_TUNE='%s'", prefill[i % 2]);
        run_case(&c);
    }
    mm_case long_batch = {.type = GGML_TYPE_Q4_0,
                          .rows = 67,
                          .cols = 64,
                          .n_tokens = 600,
                          .kernel = K_MATMUL_COOPMAT,
                          .bias = true,
                          .bound = COOPMAT_BOUND,
                          .seed = 9590};
    run_case(&long_batch);
    static const char *knobs[] = {"1,2,2,4,1,4,1",   "2,1,1,2,2,4,0",  "2,4,2,4,1,1,0",
                                  "2,1,1,1,1,8,3",   "1,3,1,1,2,1,1",  "2,1,3,1,1,1,1",
                                  "2,2,2,4,1,2,1,0", "2,1,1,2,4,2,1,0"};
    static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q8_0,
                                      GGML_TYPE_Q6_K, GGML_TYPE_F16,  GGML_TYPE_Q5_0,
                                      GGML_TYPE_Q4_K, GGML_TYPE_Q8_0};
    for (size_t k = 0; k < sizeof knobs / sizeof knobs[0]; k++) {
        cr_assert(setenv("VKLLM_MATMUL_TUNE", knobs[k], 1) == 0);
        ggml_type t = types[k];
        uint32_t blocks = ggml_type_get_info(t).block_elems == 256 ? 3 : 21;
        uint32_t cols = cols_for(t, blocks);
        bool plain = k % 2 == 0;
        mm_case c = {.type = t,
                     .rows = 157,
                     .cols = cols,
                     .n_tokens = 9 + 37 * (uint32_t)k,
                     .kernel = K_MATMUL_COOPMAT,
                     .w_offset = plain ? 0 : 20,
                     .x_stride = plain ? 0 : cols + 4,
                     .y_stride = plain ? 0 : 200,
                     .y_col = plain ? 0 : 7,
                     .bias = k % 3 == 1,
                     .bound = COOPMAT_BOUND,
                     .seed = 9600 + k};
        cr_log_info("VKLLM_MATMUL_TUNE='%s'", knobs[k]);
        run_case(&c);
    }
    cr_assert(unsetenv("VKLLM_MATMUL_TUNE") == 0);
    cr_assert(unsetenv("VKLLM_MATMUL") == 0);
}

Test(k_matmul, coopmat_refused_without_the_feature) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (k_matmul_coopmat_available(f)) cr_skip("device has cooperative matrices");
    gpu_buffer wb = test_gpu_buffer_poisoned(64 * 34);
    gpu_buffer xb = test_gpu_buffer_poisoned(4 * 32 * 16);
    gpu_buffer yb = test_gpu_buffer_poisoned(4 * 64 * 16);
    k_weight w = {&wb, 0, GGML_TYPE_Q8_0, 64, 32};
    k_matmul_args a = {.w = &w,
                       .x = {&xb, 0, 0, false},
                       .y = {&yb, 0, 0, true},
                       .n_tokens = 16,
                       .kernel = K_MATMUL_COOPMAT};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    vkllm_status st = k_matmul_ex(test_gpu(), cmd, &a);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(st == VKLLM_ERR_UNSUPPORTED, "got %s", vkllm_status_name(st));
    cr_assert(strstr(vkllm_last_error(), "cooperative") != NULL, "message: %s", vkllm_last_error());
    test_gpu_free(&wb);
    test_gpu_free(&xb);
    test_gpu_free(&yb);
}

/* ---------------------------------------------------------------- splitting, skew, strides */

/* Small binding limits split W into many row ranges; odd block counts per row make
 * rows of 2-byte-aligned types (18, 22, 34, 110, 210-byte blocks) start at every
 * skew; the weight itself starts at a non-16-aligned offset. */
Test(k_matmul, row_ranges_and_skew) {
    static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0,
                                      GGML_TYPE_Q3_K, GGML_TYPE_Q6_K, GGML_TYPE_Q4_1,
                                      GGML_TYPE_F16};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        ggml_type t = types[i];
        uint32_t blocks = ggml_type_get_info(t).block_elems == 256 ? 1 : 3;
        uint32_t cols = cols_for(t, blocks);
        uint64_t rb = ggml_row_bytes(t, cols);
        for (uint32_t nt = 1; nt <= 17; nt += 16) {
            mm_case c = {.type = t,
                         .rows = 45,
                         .cols = cols,
                         .n_tokens = nt,
                         .kernel = K_MATMUL_AUTO,
                         .w_offset = 20,
                         .max_binding_bytes = rb * 7 + 64, /* 6 or 7 rows per range */
                         .bias = true,
                         .bound = F32_BOUND,
                         .seed = 5000 + 10 * i + nt};
            run_case(&c);
        }
    }
}

/* Fused-QKV style output: Y has a row stride larger than rows and this weight writes
 * columns [y_col, y_col + rows); X has padding columns; bias added. */
Test(k_matmul, strides_column_offset_bias) {
    static const uint32_t tokens[] = {1, 5, 8, 33};
    for (size_t j = 0; j < 4; j++) {
        mm_case c = {.type = GGML_TYPE_Q5_K,
                     .rows = 70,
                     .cols = 512,
                     .n_tokens = tokens[j],
                     .x_stride = 520,
                     .y_stride = 200,
                     .y_col = 96,
                     .bias = true,
                     .bound = F32_BOUND,
                     .seed = 6000 + j};
        run_case(&c);
    }
}

/* ---------------------------------------------------------------- argument errors */

static vkllm_status try_matmul(const k_weight *w, gpu_binding x, gpu_binding y, uint32_t n,
                               uint32_t x_stride, uint32_t y_stride) {
    k_matmul_args a = {
        .w = w, .x = x, .y = y, .n_tokens = n, .x_stride = x_stride, .y_stride = y_stride};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    vkllm_status st = k_matmul_ex(test_gpu(), cmd, &a);
    char msg[VKL_ERROR_MAX];
    snprintf(msg, sizeof msg, "%s", vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    if (st != VKLLM_OK) vkl_fail(st, "%s", msg); /* the launcher's message, for the caller */
    return st;
}

#define EXPECT_FAIL(call, code, needle)                                                            \
    do {                                                                                           \
        vkllm_status st_ = (call);                                                                 \
        cr_assert(st_ == (code), "%s: got %s (%s)", #call, vkllm_status_name(st_),                 \
                  vkllm_last_error());                                                             \
        cr_assert(strstr(vkllm_last_error(), (needle)) != NULL, "%s: message '%s' lacks '%s'",     \
                  #call, vkllm_last_error(), (needle));                                            \
    } while (0)

Test(k_matmul, argument_errors) {
    gpu_buffer wb = test_gpu_buffer_poisoned(4096);
    gpu_buffer xb = test_gpu_buffer_poisoned(4 * 256);
    gpu_buffer yb = test_gpu_buffer_poisoned(4 * 256);
    gpu_binding x = {&xb, 0, 0, false}, y = {&yb, 0, 0, true};
    k_weight w = {&wb, 0, GGML_TYPE_Q8_0, 8, 64}; /* 8 rows x 68 bytes */
    cr_assert(try_matmul(&w, x, y, 2, 0, 0) == VKLLM_OK, "%s", vkllm_last_error());

    k_weight bad = w;
    bad.type = GGML_TYPE_Q8_K;
    EXPECT_FAIL(try_matmul(&bad, x, y, 1, 0, 0), VKLLM_ERR_UNSUPPORTED, "Q8_K");
    bad.type = (ggml_type)16; /* IQ2_XXS */
    EXPECT_FAIL(try_matmul(&bad, x, y, 1, 0, 0), VKLLM_ERR_UNSUPPORTED, "IQ2_XXS");
    bad = w;
    bad.cols = 48;
    EXPECT_FAIL(try_matmul(&bad, x, y, 1, 0, 0), VKLLM_ERR_INVALID_ARGUMENT, "cols 48");
    bad = w;
    bad.type = GGML_TYPE_F16;
    bad.cols = 12;
    EXPECT_FAIL(try_matmul(&bad, x, y, 1, 0, 0), VKLLM_ERR_INVALID_ARGUMENT, "multiple of 8");
    bad = w;
    bad.offset = 2;
    EXPECT_FAIL(try_matmul(&bad, x, y, 1, 0, 0), VKLLM_ERR_INVALID_ARGUMENT, "offset 2");
    bad = w;
    bad.rows = 61; /* 61 * 68 = 4148 > 4096 */
    EXPECT_FAIL(try_matmul(&bad, x, y, 1, 0, 0), VKLLM_ERR_INVALID_ARGUMENT, "buffer has 4096");
    EXPECT_FAIL(try_matmul(&w, x, y, 5, 0, 0), VKLLM_ERR_INVALID_ARGUMENT, "x binding");
    EXPECT_FAIL(try_matmul(&w, x, y, 1, 66, 0), VKLLM_ERR_INVALID_ARGUMENT, "x_stride 66");
    EXPECT_FAIL(try_matmul(&w, x, y, 1, 0, 4), VKLLM_ERR_INVALID_ARGUMENT, "y_stride 4");
    gpu_binding small_y = {&yb, 0, 16, true};
    EXPECT_FAIL(try_matmul(&w, x, small_y, 1, 0, 0), VKLLM_ERR_INVALID_ARGUMENT, "y binding");

    test_gpu_free(&wb);
    test_gpu_free(&xb);
    test_gpu_free(&yb);
}
