/* test_k_get_rows.c: the embedding gather k_get_rows against model/quant.h.
 *
 * For every weight type: random blocks (random bits, sane fp16 scales), random ids
 * with repeats plus out-of-range ids (-1, rows, INT32_MIN) that must give rows of
 * zeros, a poisoned output with a row stride larger than cols (the padding must
 * stay poisoned), and small binding limits that split the weight into row ranges
 * bound at every skew. Expected values are quant_dequantize()'s; the GPU computes
 * the same float32 expressions, so the bound is 1e-6 relative (contractions such as
 * d*q + m into an fma may differ in the last bit). */
// links: exec gpu model
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/k_matmul.h"
#include "model/quant.h"
#include "common/test_gpu.h"
#include "common/test_util.h"

#define GET_ROWS_BOUND 1e-6

static const ggml_type all_types[] = {
    GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1,
    GGML_TYPE_Q8_0, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

/* Random bytes, then every fp16 field of every block set to a finite random value
 * (random bits could make NaN/Inf scales). */
static void random_weight(test_rng *rng, ggml_type type, uint8_t *dst, uint64_t n_elems) {
    ggml_type_info info = ggml_type_get_info(type);
    uint64_t bytes = n_elems / info.block_elems * info.block_bytes;
    for (uint64_t i = 0; i < bytes; i++)
        dst[i] = (uint8_t)test_rng_next(rng);
    static const struct {
        ggml_type type;
        uint32_t fields[2]; /* byte offsets of fp16 fields; 0xff = none */
    } halves[] = {
        {GGML_TYPE_Q4_0, {0, 0xff}},   {GGML_TYPE_Q4_1, {0, 2}},    {GGML_TYPE_Q5_0, {0, 0xff}},
        {GGML_TYPE_Q5_1, {0, 2}},      {GGML_TYPE_Q8_0, {0, 0xff}}, {GGML_TYPE_Q2_K, {80, 82}},
        {GGML_TYPE_Q3_K, {108, 0xff}}, {GGML_TYPE_Q4_K, {0, 2}},    {GGML_TYPE_Q5_K, {0, 2}},
        {GGML_TYPE_Q6_K, {208, 0xff}},
    };
    if (type == GGML_TYPE_F32) {
        for (uint64_t i = 0; i < n_elems; i++) {
            float v = test_rng_uniform(rng, -2, 2);
            memcpy(dst + 4 * i, &v, 4);
        }
        return;
    }
    if (type == GGML_TYPE_F16) {
        for (uint64_t i = 0; i < n_elems; i++) {
            uint16_t h = test_f32_to_f16(test_rng_uniform(rng, -2, 2));
            memcpy(dst + 2 * i, &h, 2);
        }
        return;
    }
    for (size_t k = 0; k < sizeof halves / sizeof halves[0]; k++) {
        if (halves[k].type != type) continue;
        for (uint64_t b = 0; b < bytes / info.block_bytes; b++)
            for (int f = 0; f < 2; f++) {
                if (halves[k].fields[f] == 0xff) continue;
                uint16_t h = test_f32_to_f16(test_rng_uniform(rng, -0.05f, 0.05f));
                memcpy(dst + b * info.block_bytes + halves[k].fields[f], &h, 2);
            }
        return;
    }
    cr_assert_fail("no recipe for type %u", (unsigned)type);
}

static void run_gather(ggml_type type, uint32_t rows, uint32_t cols, uint32_t n_ids,
                       uint32_t out_stride, uint64_t w_offset, uint64_t max_binding,
                       uint64_t seed) {
    char label[200];
    snprintf(label, sizeof label,
             "%s rows=%u cols=%u n_ids=%u out_stride=%u offset=%llu max_binding=%llu seed=%llu",
             ggml_type_get_info(type).name, rows, cols, n_ids, out_stride,
             (unsigned long long)w_offset, (unsigned long long)max_binding,
             (unsigned long long)seed);
    test_rng rng = test_rng_seeded(seed);
    uint64_t rb = ggml_row_bytes(type, cols);
    uint64_t w_size = (w_offset + rb * rows + 15) & ~15ull;
    uint8_t *w_host = calloc(1, w_size);
    float *deq = malloc(sizeof(float) * rows * cols);
    int32_t *ids = malloc(sizeof(int32_t) * n_ids);
    uint32_t stride = out_stride ? out_stride : cols;
    float *out = malloc(sizeof(float) * n_ids * stride);
    cr_assert(w_host && deq && ids && out);
    random_weight(&rng, type, w_host + w_offset, (uint64_t)rows * cols);
    cr_assert(quant_dequantize(type, w_host + w_offset, deq, (uint64_t)rows * cols) == VKLLM_OK,
              "%s", vkllm_last_error());
    for (uint32_t i = 0; i < n_ids; i++)
        ids[i] = (int32_t)test_rng_below(&rng, rows);
    if (n_ids > 3) {
        ids[1] = -1;
        ids[2] = (int32_t)rows;
        ids[3] = INT32_MIN;
    }
    if (n_ids > 5) ids[5] = ids[4]; /* a repeat */

    gpu_buffer wb = test_gpu_buffer_from(w_host, w_size);
    gpu_buffer ib = test_gpu_buffer_from(ids, sizeof(int32_t) * n_ids);
    gpu_buffer ob = test_gpu_buffer_poisoned(sizeof(float) * n_ids * stride);
    k_weight w = {&wb, w_offset, type, rows, cols};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status st = k_get_rows_ex(test_gpu(), cmd, &w, (gpu_binding){&ib, 0, 0, false},
                                    (gpu_binding){&ob, 0, 0, true}, n_ids, out_stride, max_binding);
    vkllm_status st_submit = gpu_cmd_submit(cmd);
    cr_assert(st == VKLLM_OK, "%s: %s", label, vkllm_last_error());
    cr_assert(st_submit == VKLLM_OK, "%s: submit: %s", label, vkllm_last_error());
    test_gpu_read(&ob, out, sizeof(float) * n_ids * stride);

    float *got = malloc(sizeof(float) * cols), *want = malloc(sizeof(float) * cols);
    cr_assert(got && want);
    for (uint32_t i = 0; i < n_ids; i++) {
        bool valid = ids[i] >= 0 && (uint32_t)ids[i] < rows;
        for (uint32_t c = 0; c < stride; c++) {
            float v = out[(size_t)i * stride + c];
            if (c >= cols) {
                uint32_t bits;
                memcpy(&bits, &v, 4);
                cr_assert(bits == TEST_POISON_WORD, "%s: padding out[%u][%u] was written", label, i,
                          c);
                continue;
            }
            got[c] = v;
            want[c] = valid ? deq[(size_t)ids[i] * cols + c] : 0.0f;
        }
        long bad = test_first_nonfinite(got, cols);
        cr_assert(bad < 0, "%s: out[%u][%ld] (id %d) not finite (unwritten?)", label, i, bad,
                  ids[i]);
        if (!valid) {
            for (uint32_t c = 0; c < cols; c++)
                cr_assert(got[c] == 0.0f, "%s: out-of-range id %d: out[%u][%u] = %g, want 0", label,
                          ids[i], i, c, got[c]);
            continue;
        }
        double err = test_rel_error(got, want, cols);
        cr_assert(err <= GET_ROWS_BOUND, "%s: row %u (id %d): relative error %.3g > %.3g", label, i,
                  ids[i], err, GET_ROWS_BOUND);
    }
    test_gpu_free(&wb);
    test_gpu_free(&ib);
    test_gpu_free(&ob);
    free(w_host);
    free(deq);
    free(ids);
    free(out);
    free(got);
    free(want);
}

TestSuite(k_get_rows, .fini = test_gpu_check_validation);

Test(k_get_rows, every_type) {
    for (size_t i = 0; i < N_TYPES; i++) {
        ggml_type t = all_types[i];
        uint32_t be = ggml_type_get_info(t).block_elems;
        uint32_t cols = be == 1 ? 72 : be * (be == 256 ? 2 : 5);
        run_gather(t, 37, cols, 29, 0, 0, 0, 100 + i);
    }
}

/* Row ranges with every skew (3 or 4 rows per binding, odd block counts), a weight
 * at a non-16-aligned offset and an output row stride with padding. */
Test(k_get_rows, row_ranges_skew_and_stride) {
    for (size_t i = 0; i < N_TYPES; i++) {
        ggml_type t = all_types[i];
        uint32_t be = ggml_type_get_info(t).block_elems;
        uint32_t cols = be == 1 ? 40 : be * (be == 256 ? 1 : 3);
        uint64_t rb = ggml_row_bytes(t, cols);
        run_gather(t, 23, cols, 40, cols + 12, 36, rb * 4 + 20, 200 + i);
    }
}

Test(k_get_rows, argument_errors) {
    gpu_buffer wb = test_gpu_buffer_poisoned(4096);
    gpu_buffer ib = test_gpu_buffer_poisoned(64);
    gpu_buffer ob = test_gpu_buffer_poisoned(4096);
    gpu_binding ids = {&ib, 0, 0, false}, out = {&ob, 0, 0, true};
    k_weight w = {&wb, 0, GGML_TYPE_Q4_0, 16, 64};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    cr_assert(k_get_rows(test_gpu(), cmd, &w, ids, out, 16) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status st = k_get_rows(test_gpu(), cmd, &w, ids, out, 17); /* ids has 16 */
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vkllm_last_error(), "ids binding"),
              "got %s: %s", vkllm_status_name(st), vkllm_last_error());
    st = k_get_rows_ex(test_gpu(), cmd, &w, ids, out, 4, 66, 0);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vkllm_last_error(), "out_stride 66"),
              "got %s: %s", vkllm_status_name(st), vkllm_last_error());
    k_weight bad = w;
    bad.type = GGML_TYPE_BF16;
    st = k_get_rows(test_gpu(), cmd, &bad, ids, out, 4);
    cr_assert(st == VKLLM_ERR_UNSUPPORTED && strstr(vkllm_last_error(), "BF16"), "got %s: %s",
              vkllm_status_name(st), vkllm_last_error());
    bad = w;
    bad.cols = 64 * 40; /* 16 rows of 1440 bytes: past the 4096-byte buffer */
    st = k_get_rows(test_gpu(), cmd, &bad, ids, out, 1);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vkllm_last_error(), "buffer has"),
              "got %s: %s", vkllm_status_name(st), vkllm_last_error());
    st = k_get_rows_ex(test_gpu(), cmd, &w, ids, out, 1, 0, 16); /* one row: 36 bytes > 16 */
    cr_assert(st == VKLLM_ERR_UNSUPPORTED && strstr(vkllm_last_error(), "does not fit"),
              "got %s: %s", vkllm_status_name(st), vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    test_gpu_free(&wb);
    test_gpu_free(&ib);
    test_gpu_free(&ob);
}
