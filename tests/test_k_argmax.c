/* test_k_argmax.c: shaders/argmax.comp (greedy sampling on the GPU) against a CPU argmax:
 * rows longer than one unrolled sweep (256 invocations x 16 loads), row strides, ties
 * (the lowest index wins), NaN (never wins), -inf, and a row that is all NaN (-1).
 * The result buffer is poisoned so an unwritten row fails. */
// links: gpu
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "common/test_gpu.h"
#include "common/test_util.h"

/* The CPU rule: the largest non-NaN value, lowest index among equals; -1 if none. */
static int32_t cpu_argmax(const float *row, uint32_t n) {
    int32_t best = -1;
    for (uint32_t c = 0; c < n; c++)
        if (!isnan(row[c]) && (best < 0 || row[c] > row[best])) best = (int32_t)c;
    return best;
}

static void argmax_case(uint32_t rows, uint32_t n_cols, uint32_t stride, uint64_t seed) {
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
    gpu_pipeline_desc desc = {.shader = "argmax_f32", .num_bindings = 2, .push_constant_size = 8};
    gpu_pipeline *p = test_gpu_pipeline(&desc);
    gpu_binding b[2] = {{.buffer = &gx}, {.buffer = &gy, .writable = true}};
    uint32_t push[2] = {n_cols, stride};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK);
    gpu_cmd_dispatch(cmd, p, b, 2, push, sizeof push, rows, 1, 1);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    int32_t *got = malloc((size_t)rows * 4);
    cr_assert(got);
    test_gpu_read(&gy, got, (uint64_t)rows * 4);
    for (uint32_t r = 0; r < rows; r++) {
        int32_t want = cpu_argmax(x + (size_t)r * stride, n_cols);
        cr_assert_eq(got[r], want,
                     "row %u of %u (case %u), n_cols %u, stride %u, seed %llu: %d vs %d", r, rows,
                     r % 5, n_cols, stride, (unsigned long long)seed, got[r], want);
    }
    free(got);
    free(x);
    test_gpu_free(&gx);
    test_gpu_free(&gy);
}

Test(k_argmax, matches_cpu, .fini = test_gpu_check_validation) {
    argmax_case(5, 7, 7, 1);           /* fewer columns than invocations */
    argmax_case(10, 4097, 4100, 2);    /* one past a whole unrolled sweep */
    argmax_case(5, 10007, 10007, 3);   /* several sweeps, no padding */
    argmax_case(3, 128256, 128260, 4); /* a Llama-3 vocabulary */
}
