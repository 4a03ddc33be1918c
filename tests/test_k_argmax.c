/* test_k_argmax.c: k_argmax (shaders/argmax.comp, greedy sampling on the GPU) against a
 * CPU argmax, one workgroup per row and chunked (scratch given): rows longer than one
 * unrolled sweep (256 invocations x 16 loads) and than one chunk, row strides, ties (the
 * lowest index wins, also across chunks), NaN (never wins), -inf, and a row that is all
 * NaN (-1). The result buffer is poisoned so an unwritten row fails; the chunked path runs
 * twice on the same counters (each call must leave them 0). */
// links: exec gpu
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_gpu.h"
#include "common/test_util.h"
#include "exec/k_sample.h"

/* The CPU rule: the largest non-NaN value, lowest index among equals; -1 if none. */
static int32_t cpu_argmax(const float *row, uint32_t n) {
    int32_t best = -1;
    for (uint32_t c = 0; c < n; c++)
        if (!isnan(row[c]) && (best < 0 || row[c] > row[best])) best = (int32_t)c;
    return best;
}

static void argmax_case(uint32_t rows, uint32_t n_cols, uint32_t stride, uint64_t seed,
                        bool chunked) {
    test_rng rng = test_rng_seeded(seed);
    float *x = malloc((size_t)rows * stride * 4);
    cr_assert(x);
    test_fill_uniform(&rng, x, (size_t)rows * stride, -4.0f, 4.0f);
    for (uint32_t r = 0; r < rows; r++) {
        float *row = x + (size_t)r * stride;
        switch (r % 5) {
        case 0: /* a tie for the maximum: the lower index wins */
            row[n_cols - 1] = row[n_cols / 3] = 9.0f;
            break;
        case 1: /* NaN everywhere but a few, and the maximum past the first sweep */
            for (uint32_t c = 0; c < n_cols; c += 3)
                row[c] = NAN;
            row[n_cols - 2] = 8.0f;
            break;
        case 2: /* all NaN */
            for (uint32_t c = 0; c < n_cols; c++)
                row[c] = NAN;
            break;
        case 3: /* all -inf but one NaN: the first -inf wins */
            for (uint32_t c = 0; c < n_cols; c++)
                row[c] = -INFINITY;
            row[0] = NAN;
            break;
        default: /* random: the padding past n_cols is larger and must be ignored */
            for (uint32_t c = n_cols; c < stride; c++)
                row[c] = 100.0f;
            break;
        }
    }
    gpu_buffer gx = test_gpu_buffer_from(x, (uint64_t)rows * stride * 4);
    gpu_buffer gy = test_gpu_buffer_poisoned((uint64_t)rows * 4);
    gpu_buffer partials = {0}, counters = {0};
    if (chunked) {
        partials = test_gpu_buffer_poisoned(k_argmax_partials_bytes(rows, n_cols));
        uint32_t *zero = calloc(rows, 4);
        counters = test_gpu_buffer_from(zero, (uint64_t)rows * 4);
        free(zero);
    }
    int32_t *got = malloc((size_t)rows * 4);
    cr_assert(got);
    for (int run = 0; run < (chunked ? 2 : 1); run++) {
        gpu_cmd *cmd;
        cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
        gpu_cmd_fill(cmd, &gy, 0, (uint64_t)rows * 4, TEST_POISON_WORD);
        vkllm_status st = k_argmax(
            test_gpu(), cmd, (gpu_binding){.buffer = &gx}, (gpu_binding){.buffer = &gy},
            (gpu_binding){.buffer = partials.handle ? &partials : NULL},
            (gpu_binding){.buffer = counters.handle ? &counters : NULL}, rows, n_cols, stride);
        cr_assert(st == VKLLM_OK, "%s", vkllm_last_error());
        cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
        test_gpu_read(&gy, got, (uint64_t)rows * 4);
        for (uint32_t r = 0; r < rows; r++) {
            int32_t want = cpu_argmax(x + (size_t)r * stride, n_cols);
            cr_assert_eq(got[r], want,
                         "row %u of %u (case %u), n_cols %u, stride %u, %s run %d, seed %llu: %d "
                         "vs %d",
                         r, rows, r % 5, n_cols, stride, chunked ? "chunked" : "one workgroup", run,
                         (unsigned long long)seed, got[r], want);
        }
    }
    if (chunked) {
        uint32_t *left = malloc((size_t)rows * 4);
        test_gpu_read(&counters, left, (uint64_t)rows * 4);
        for (uint32_t r = 0; r < rows; r++)
            cr_assert_eq(left[r], 0u, "counter of row %u left at %u", r, left[r]);
        free(left);
        test_gpu_free(&partials);
        test_gpu_free(&counters);
    }
    free(got);
    free(x);
    test_gpu_free(&gx);
    test_gpu_free(&gy);
}

static void argmax_cases(bool chunked) {
    argmax_case(5, 7, 7, 1, chunked);           /* fewer columns than invocations */
    argmax_case(10, 4097, 4100, 2, chunked);    /* one past a whole unrolled sweep */
    argmax_case(5, 10007, 10007, 3, chunked);   /* several sweeps, no padding */
    argmax_case(3, 128256, 128260, 4, chunked); /* a Llama-3 vocabulary */
    argmax_case(5, 1024, 1030, 5, chunked);     /* exactly one chunk */
    argmax_case(5, 1025, 1025, 6, chunked);     /* one past a chunk */
    argmax_case(7, 3072, 3072, 7, chunked);     /* whole chunks */
}

Test(k_argmax, matches_cpu, .fini = test_gpu_check_validation) {
    argmax_cases(false);
}

Test(k_argmax, chunked_matches_cpu, .fini = test_gpu_check_validation) {
    argmax_cases(true);
}

/* The tie of case 0 (9.0 at n_cols/3 and n_cols-1) lies in different chunks when n_cols
 * spans several; a row whose maximum repeats in every chunk keeps the first. */
Test(k_argmax, chunked_tie_across_chunks, .fini = test_gpu_check_validation) {
    const uint32_t n = 5000;
    float *x = malloc(n * 4);
    for (uint32_t c = 0; c < n; c++)
        x[c] = (c % 1024 == 1000) ? 3.0f : -1.0f;
    gpu_buffer gx = test_gpu_buffer_from(x, n * 4);
    gpu_buffer gy = test_gpu_buffer_poisoned(4);
    gpu_buffer partials = test_gpu_buffer_poisoned(k_argmax_partials_bytes(1, n));
    uint32_t zero = 0;
    gpu_buffer counters = test_gpu_buffer_from(&zero, 4);
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    cr_assert(k_argmax(test_gpu(), cmd, (gpu_binding){.buffer = &gx}, (gpu_binding){.buffer = &gy},
                       (gpu_binding){.buffer = &partials}, (gpu_binding){.buffer = &counters}, 1, n,
                       n) == VKLLM_OK);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    int32_t got;
    test_gpu_read(&gy, &got, 4);
    cr_assert_eq(got, 1000);
    test_gpu_free(&gx);
    test_gpu_free(&gy);
    test_gpu_free(&partials);
    test_gpu_free(&counters);
    free(x);
}

Test(k_argmax, bad_arguments_are_named, .fini = test_gpu_check_validation) {
    float x[8] = {0};
    gpu_buffer gx = test_gpu_buffer_from(x, sizeof x);
    gpu_buffer gy = test_gpu_buffer_poisoned(4);
    gpu_buffer partials = test_gpu_buffer_poisoned(8);
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    gpu_binding none = {0};
    cr_assert(k_argmax(test_gpu(), cmd, (gpu_binding){.buffer = &gx}, (gpu_binding){.buffer = &gy},
                       none, none, 1, 8, 4) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "row_stride 4 < n_cols 8"), "%s", vkllm_last_error());
    cr_assert(k_argmax(test_gpu(), cmd, (gpu_binding){.buffer = &gx}, (gpu_binding){.buffer = &gy},
                       none, none, 2, 8, 8) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "binding logits covers 32 bytes but the op needs 64"),
              "%s", vkllm_last_error());
    /* chunked (2 chunks), the counters missing */
    float big[2048] = {0};
    gpu_buffer gb = test_gpu_buffer_from(big, sizeof big);
    cr_assert(k_argmax(test_gpu(), cmd, (gpu_binding){.buffer = &gb}, (gpu_binding){.buffer = &gy},
                       (gpu_binding){.buffer = &partials}, none, 1, 2048,
                       2048) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "partials covers 8 bytes but the op needs 16"), "%s",
              vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    test_gpu_free(&gx);
    test_gpu_free(&gy);
    test_gpu_free(&gb);
    test_gpu_free(&partials);
}
