/* test_k_matmul_big.c: weights larger than one storage-buffer binding may cover.
 *
 * lavapipe's maxStorageBufferRange is 128 MiB, so these ~150 MiB weights must be
 * split by the launchers into row ranges bound from aligned offsets (with a byte
 * skew inside the binding). Cases:
 *   - Q8_0, Gemma-3-like embedding shape (640 columns, 34-byte blocks so row starts
 *     fall on 2-byte boundaries): matvec (1 token) and get_rows with ids in every range;
 *   - F32, 2048 columns: the tiled kernel with 9 tokens (kept to one weight type since
 *     a 150 MiB tiled product is slow on a CPU device).
 * Reference: quant_dequantize row by row, products in double. Bounds: 1e-4 relative
 * (f32 accumulation), get_rows 1e-6. Outputs are poisoned first. */
// links: exec gpu model
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "exec/k_matmul.h"
#include "model/quant.h"
#include "common/test_gpu.h"
#include "common/test_util.h"

#define BIG_BOUND 1e-4
/* where the matvec resolves to matvec_dp4a (X quantized to int8 per block of 32) */
#define BIG_DP4A_BOUND 1e-2
#define BIG_GATHER_BOUND 1e-6
#define BIG_BYTES (150ull << 20)

TestSuite(k_matmul_big, .fini = test_gpu_check_validation);

/* Random Q8_0 blocks: random int8 quants, fp16 scale in [0.002, 0.02). */
static void random_q8_0(test_rng *rng, uint8_t *dst, uint64_t blocks) {
    for (uint64_t b = 0; b < blocks; b++) {
        uint8_t *blk = dst + 34 * b;
        uint16_t d = test_f32_to_f16(test_rng_uniform(rng, 0.002f, 0.02f));
        memcpy(blk, &d, 2);
        for (int i = 0; i < 4; i++) {
            uint64_t r = test_rng_next(rng);
            memcpy(blk + 2 + 8 * i, &r, 8);
        }
    }
}

static gpu_buffer upload_weight(const uint8_t *host, uint64_t size) {
    const gpu_features *f = gpu_context_features(test_gpu());
    cr_assert(size > f->max_storage_buffer_range || f->max_storage_buffer_range > (1ull << 30),
              "weight of %llu bytes fits one binding (%llu): the test would not split it",
              (unsigned long long)size, (unsigned long long)f->max_storage_buffer_range);
    return test_gpu_buffer_from(host, size);
}

Test(k_matmul_big, q8_0_matvec_and_get_rows, .timeout = 300) {
    const uint64_t seed = 77;
    test_rng rng = test_rng_seeded(seed);
    const uint32_t cols = 640, row_bytes = 680;
    const uint32_t rows = (uint32_t)(BIG_BYTES / row_bytes) | 1; /* odd: last row ends at 2 mod 4 */
    uint64_t bytes = (uint64_t)rows * row_bytes;
    uint64_t size = (bytes + 15) & ~15ull;
    uint8_t *w_host = calloc(1, size);
    cr_assert(w_host);
    random_q8_0(&rng, w_host, bytes / 34);

    float *x = malloc(sizeof(float) * cols);
    float *y = malloc(sizeof(float) * rows);
    float *ref = malloc(sizeof(float) * rows);
    float row[640];
    cr_assert(x && y && ref);
    test_fill_uniform(&rng, x, cols, -1, 1);
    for (uint32_t r = 0; r < rows; r++) {
        cr_assert(quant_dequantize(GGML_TYPE_Q8_0, w_host + (uint64_t)r * row_bytes, row, cols) ==
                  VKLLM_OK);
        double s = 0;
        for (uint32_t c = 0; c < cols; c++)
            s += (double)row[c] * x[c];
        ref[r] = (float)s;
    }

    gpu_buffer wb = upload_weight(w_host, size);
    gpu_buffer xb = test_gpu_buffer_from(x, sizeof(float) * cols);
    gpu_buffer yb = test_gpu_buffer_poisoned(sizeof(float) * rows);
    k_weight w = {&wb, 0, GGML_TYPE_Q8_0, rows, cols};

    enum { N_IDS = 9 };
    int32_t ids[N_IDS] = {0,
                          1,
                          (int32_t)(rows / 2),
                          (int32_t)(rows / 2 + 1),
                          (int32_t)(rows - 1),
                          (int32_t)(rows - 2),
                          197400,
                          197401,
                          12345};
    gpu_buffer ib = test_gpu_buffer_from(ids, sizeof ids);
    gpu_buffer ob = test_gpu_buffer_poisoned(sizeof(float) * N_IDS * cols);

    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status st = k_matmul(test_gpu(), cmd, &w, (gpu_binding){&xb, 0, 0, false},
                               (gpu_binding){&yb, 0, 0, true}, 1);
    cr_assert(st == VKLLM_OK, "k_matmul: %s", vkllm_last_error());
    st = k_get_rows(test_gpu(), cmd, &w, (gpu_binding){&ib, 0, 0, false},
                    (gpu_binding){&ob, 0, 0, true}, N_IDS);
    cr_assert(st == VKLLM_OK, "k_get_rows: %s", vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "submit: %s", vkllm_last_error());

    test_gpu_read(&yb, y, sizeof(float) * rows);
    long bad = test_first_nonfinite(y, rows);
    cr_assert(bad < 0, "Q8_0 %u x %u seed %llu: row %ld not written", rows, cols,
              (unsigned long long)seed, bad);
    double err = test_rel_error(y, ref, rows);
    k_matmul_args resolved = {
        .w = &w, .x = {&xb, 0, 0, false}, .y = {&yb, 0, 0, true}, .n_tokens = 1};
    double bound =
        k_matmul_matvec_choice(gpu_context_features(test_gpu()), &resolved) == K_MATMUL_MATVEC_DP4A
            ? BIG_DP4A_BOUND
            : BIG_BOUND;
    cr_assert(err <= bound, "Q8_0 %u x %u seed %llu: relative error %.3g > %.3g", rows, cols,
              (unsigned long long)seed, err, bound);

    float *gathered = malloc(sizeof(float) * N_IDS * cols);
    cr_assert(gathered);
    test_gpu_read(&ob, gathered, sizeof(float) * N_IDS * cols);
    for (int i = 0; i < N_IDS; i++) {
        cr_assert(quant_dequantize(GGML_TYPE_Q8_0, w_host + (uint64_t)ids[i] * row_bytes, row,
                                   cols) == VKLLM_OK);
        double e = test_rel_error(gathered + (size_t)i * cols, row, cols);
        cr_assert(e <= BIG_GATHER_BOUND, "get_rows id %d: relative error %.3g", ids[i], e);
    }

    test_gpu_free(&wb);
    test_gpu_free(&xb);
    test_gpu_free(&yb);
    test_gpu_free(&ib);
    test_gpu_free(&ob);
    free(w_host);
    free(x);
    free(y);
    free(ref);
    free(gathered);
}

Test(k_matmul_big, f32_tiled, .timeout = 300) {
    const uint64_t seed = 78;
    test_rng rng = test_rng_seeded(seed);
    const uint32_t cols = 2048, n_tokens = 9;
    const uint32_t rows = (uint32_t)(BIG_BYTES / (4 * cols)) + 37;
    uint64_t size = (uint64_t)rows * cols * 4;
    float *w_host = malloc(size);
    float *x = malloc(sizeof(float) * n_tokens * cols);
    float *y = malloc(sizeof(float) * n_tokens * rows);
    float *ref = malloc(sizeof(float) * n_tokens * rows);
    cr_assert(w_host && x && y && ref);
    test_fill_uniform(&rng, w_host, (size_t)rows * cols, -1, 1);
    test_fill_uniform(&rng, x, (size_t)n_tokens * cols, -1, 1);
    for (uint32_t r = 0; r < rows; r++) {
        const float *wr = w_host + (size_t)r * cols;
        for (uint32_t t = 0; t < n_tokens; t++) {
            const float *xt = x + (size_t)t * cols;
            double s = 0;
            for (uint32_t c = 0; c < cols; c++)
                s += (double)wr[c] * xt[c];
            ref[(size_t)t * rows + r] = (float)s;
        }
    }
    gpu_buffer wb = upload_weight((const uint8_t *)w_host, size);
    gpu_buffer xb = test_gpu_buffer_from(x, sizeof(float) * n_tokens * cols);
    gpu_buffer yb = test_gpu_buffer_poisoned(sizeof(float) * n_tokens * rows);
    k_weight w = {&wb, 0, GGML_TYPE_F32, rows, cols};
    k_matmul_args a = {.w = &w,
                       .x = {&xb, 0, 0, false},
                       .y = {&yb, 0, 0, true},
                       .n_tokens = n_tokens,
                       .kernel = K_MATMUL_TILED};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status st = k_matmul_ex(test_gpu(), cmd, &a);
    cr_assert(st == VKLLM_OK, "k_matmul_ex: %s", vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "submit: %s", vkllm_last_error());
    test_gpu_read(&yb, y, sizeof(float) * n_tokens * rows);
    long bad = test_first_nonfinite(y, (size_t)n_tokens * rows);
    cr_assert(bad < 0, "F32 %u x %u seed %llu: output %ld not written", rows, cols,
              (unsigned long long)seed, bad);
    double err = test_rel_error(y, ref, (size_t)n_tokens * rows);
    cr_assert(err <= BIG_BOUND, "F32 %u x %u, %u tokens, seed %llu: relative error %.3g > %.3g",
              rows, cols, n_tokens, (unsigned long long)seed, err, BIG_BOUND);
    test_gpu_free(&wb);
    test_gpu_free(&xb);
    test_gpu_free(&yb);
    free(w_host);
    free(x);
    free(y);
    free(ref);
}
