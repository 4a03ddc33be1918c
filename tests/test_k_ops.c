/* test_k_ops.c: the small-op kernels (engine/exec/k_ops.c, shaders/rms_norm.comp,
 * softmax.comp, rope.comp, glu.comp, eltwise.comp) against the CPU references of
 * engine/ref/ref_ops.c (themselves checked by test_k_ops_ref.c).
 *
 * Inputs are random from a seeded test_rng (the seed is in every message);
 * outputs start poisoned (NaN words) so an unwritten element fails; sizes are
 * not multiples of the workgroup size (1, 7, 641, 2049, 4099, ...) and there
 * are many rows. Both reduction paths (shared memory and subgroup) run on the
 * same device. Error bounds are relative L2 errors ||out - ref|| / ||ref||:
 *   add, scale                 1e-6  (one f32 rounding, same as the reference)
 *   softcap, glu               1e-5  (exp-based tanh/sigmoid in f32)
 *   rms_norm(_add), softmax    1e-5  (f32 reductions over up to 8195 values)
 *   rope, positions < 64       1e-5
 *   rope, positions < 32768    1e-3  (theta = pos * freq is f32, as in llama.cpp and
 *                                     Hugging Face: its rounding alone is ~|theta| 2^-24,
 *                                     up to 2e-3 rad for |theta| ~ 3.3e4; measured
 *                                     3.3e-4 on lavapipe, where a CPU emulation of the
 *                                     same f32 steps gives 1.2e-4 to 2e-4)
 * Every test ends with the validation-layer check. */
// links: exec gpu ref
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_gpu.h"
#include "common/test_util.h"
#include "exec/k_ops.h"
#include "ref/ref_ops.h"

/* ---------------------------------------------------------- helpers */

static gpu_binding bind(const gpu_buffer *buffer) {
    return (gpu_binding){.buffer = buffer, .offset = 0, .range = 0};
}

static gpu_cmd *begin(void) {
    gpu_cmd *cmd = NULL;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "gpu_cmd_begin: %s", vkllm_last_error());
    return cmd;
}

static void submit(gpu_cmd *cmd) {
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "gpu_cmd_submit: %s", vkllm_last_error());
}

static void expect_ok(vkllm_status status, const char *what) {
    cr_assert(status == VKLLM_OK, "%s: %s (%s)", what, vkllm_status_name(status),
              vkllm_last_error());
}

static float *alloc_floats(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    cr_assert(p != NULL, "out of host memory for %zu floats", n);
    return p;
}

static float *random_floats(test_rng *rng, size_t n, float lo, float hi) {
    float *p = alloc_floats(n);
    test_fill_uniform(rng, p, n, lo, hi);
    return p;
}

static float *read_floats(const gpu_buffer *buffer, size_t n) {
    float *p = alloc_floats(n);
    test_gpu_read(buffer, p, n * sizeof(float));
    return p;
}

/* Relative L2 error with a message naming the case; NaN/Inf (poison) fails. */
static void check_close(const float *out, const float *ref, size_t n, double bound,
                        const char *what) {
    long bad = test_first_nonfinite(out, n);
    cr_assert(bad < 0, "%s: non-finite output at %ld of %zu (unwritten or NaN)", what, bad, n);
    double err = test_rel_error(out, ref, n);
    cr_assert(err <= bound, "%s: relative error %.3g > bound %.3g", what, err, bound);
}

static bool subgroup_path_available(void) {
    const gpu_features *f = gpu_context_features(test_gpu());
    return f->subgroup_basic && f->subgroup_arithmetic;
}

static const char *path_name(k_reduce_path path) {
    return path == K_REDUCE_SUBGROUP ? "subgroup" : path == K_REDUCE_SHARED ? "shared" : "auto";
}

/* ---------------------------------------------------------- elementwise */

static const uint32_t eltwise_sizes[] = {1, 7, 255, 641, 2049, 4099, (1u << 20) + 3};
#define N_ELTWISE_SIZES (sizeof eltwise_sizes / sizeof eltwise_sizes[0])

Test(k_ops, add, .fini = test_gpu_check_validation) {
    const uint64_t seed = 101;
    test_rng rng = test_rng_seeded(seed);
    for (size_t s = 0; s < N_ELTWISE_SIZES; s++) {
        uint32_t n = eltwise_sizes[s];
        char what[128];
        float *a = random_floats(&rng, n, -10, 10), *b = random_floats(&rng, n, -10, 10);
        float *ref = alloc_floats(n);
        ref_add(a, b, ref, n);
        gpu_buffer ga = test_gpu_buffer_from(a, n * 4ull), gb = test_gpu_buffer_from(b, n * 4ull);
        gpu_buffer gout = test_gpu_buffer_poisoned(n * 4ull);

        gpu_cmd *cmd = begin();
        expect_ok(k_add(test_gpu(), cmd, bind(&ga), bind(&gb), bind(&gout), n), "k_add");
        expect_ok(k_add(test_gpu(), cmd, bind(&ga), bind(&gb), bind(&ga), n), "k_add in place");
        submit(cmd);

        float *out = read_floats(&gout, n), *in_place = read_floats(&ga, n);
        snprintf(what, sizeof what, "add n=%u seed=%llu", n, (unsigned long long)seed);
        check_close(out, ref, n, 1e-6, what);
        snprintf(what, sizeof what, "add in place (out = a) n=%u seed=%llu", n,
                 (unsigned long long)seed);
        check_close(in_place, ref, n, 1e-6, what);
        free(a), free(b), free(ref), free(out), free(in_place);
        test_gpu_free(&ga), test_gpu_free(&gb), test_gpu_free(&gout);
    }
}

/* More elements than one dispatch has invocations (65535 groups x 256), so the
 * grid-stride loop must cover the tail. */
Test(k_ops, add_grid_stride_tail, .fini = test_gpu_check_validation) {
    const uint64_t seed = 102;
    const gpu_features *f = gpu_context_features(test_gpu());
    uint64_t invocations =
        (uint64_t)(f->max_workgroup_count[0] ? f->max_workgroup_count[0] : 65535u) * 256u;
    if (invocations > (1u << 25)) invocations = 1u << 25; /* large-limit devices: keep it small */
    uint32_t n = (uint32_t)invocations + 1001;
    test_rng rng = test_rng_seeded(seed);
    float *a = random_floats(&rng, n, -1, 1), *b = random_floats(&rng, n, -1, 1);
    float *ref = alloc_floats(n);
    ref_add(a, b, ref, n);
    gpu_buffer ga = test_gpu_buffer_from(a, n * 4ull), gb = test_gpu_buffer_from(b, n * 4ull);
    gpu_buffer gout = test_gpu_buffer_poisoned(n * 4ull);
    gpu_cmd *cmd = begin();
    expect_ok(k_add(test_gpu(), cmd, bind(&ga), bind(&gb), bind(&gout), n), "k_add");
    submit(cmd);
    float *out = read_floats(&gout, n);
    char what[128];
    snprintf(what, sizeof what, "add n=%u seed=%llu", n, (unsigned long long)seed);
    check_close(out, ref, n, 1e-6, what);
    /* the tail specifically (an L2 norm over 17M values could hide a small gap) */
    check_close(out + invocations, ref + invocations, 1001, 1e-6, what);
    free(a), free(b), free(ref), free(out);
    test_gpu_free(&ga), test_gpu_free(&gb), test_gpu_free(&gout);
}

Test(k_ops, scale_and_softcap, .fini = test_gpu_check_validation) {
    const uint64_t seed = 103;
    test_rng rng = test_rng_seeded(seed);
    for (size_t s = 0; s < N_ELTWISE_SIZES; s++) {
        uint32_t n = eltwise_sizes[s];
        char what[160];
        /* wide range so the cap saturates (|x| up to 4 cap) and small |x| hit the series */
        float *x = random_floats(&rng, n, -120, 120);
        if (n > 3) x[1] = 1e-3f, x[2] = -0.05f, x[3] = 0.0f;
        float *ref_scaled = alloc_floats(n), *ref_capped = alloc_floats(n);
        float *ref_both = alloc_floats(n);
        ref_scale(x, ref_scaled, n, 0.0625f);
        ref_softcap(x, ref_capped, n, 30.0f);
        ref_scale(x, ref_both, n, 0.5f);
        ref_softcap(ref_both, ref_both, n, 30.0f);

        gpu_buffer gx = test_gpu_buffer_from(x, n * 4ull);
        gpu_buffer g1 = test_gpu_buffer_poisoned(n * 4ull), g2 = test_gpu_buffer_poisoned(n * 4ull);
        gpu_buffer g3 = test_gpu_buffer_poisoned(n * 4ull);
        gpu_cmd *cmd = begin();
        expect_ok(k_scale(test_gpu(), cmd, bind(&gx), bind(&g1), n, 0.0625f), "k_scale");
        expect_ok(k_softcap(test_gpu(), cmd, bind(&gx), bind(&g2), n, 30.0f), "k_softcap");
        expect_ok(k_scale_softcap(test_gpu(), cmd, bind(&gx), bind(&g3), n, 0.5f, 30.0f),
                  "k_scale_softcap");
        expect_ok(k_softcap(test_gpu(), cmd, bind(&gx), bind(&gx), n, 30.0f), "k_softcap inplace");
        submit(cmd);

        float *o1 = read_floats(&g1, n), *o2 = read_floats(&g2, n), *o3 = read_floats(&g3, n);
        float *o4 = read_floats(&gx, n);
        snprintf(what, sizeof what, "scale 0.0625 n=%u seed=%llu", n, (unsigned long long)seed);
        check_close(o1, ref_scaled, n, 1e-6, what);
        snprintf(what, sizeof what, "softcap 30 n=%u seed=%llu", n, (unsigned long long)seed);
        check_close(o2, ref_capped, n, 1e-5, what);
        snprintf(what, sizeof what, "scale 0.5 + softcap 30 n=%u seed=%llu", n,
                 (unsigned long long)seed);
        check_close(o3, ref_both, n, 1e-5, what);
        snprintf(what, sizeof what, "softcap in place n=%u seed=%llu", n, (unsigned long long)seed);
        check_close(o4, ref_capped, n, 1e-5, what);
        if (n > 3) { /* small values keep relative accuracy (Taylor branch of tanh) */
            cr_assert(fabsf(o2[1] - ref_capped[1]) <= 1e-6f * fabsf(ref_capped[1]),
                      "softcap(1e-3) = %.9g, expected %.9g", (double)o2[1], (double)ref_capped[1]);
            cr_assert(o2[3] == 0.0f, "softcap(0) = %g", (double)o2[3]);
        }
        free(x), free(ref_scaled), free(ref_capped), free(ref_both);
        free(o1), free(o2), free(o3), free(o4);
        test_gpu_free(&gx), test_gpu_free(&g1), test_gpu_free(&g2), test_gpu_free(&g3);
    }
}

static void glu_case(k_glu_kind kind, uint32_t rows, uint32_t n, bool fused, uint64_t seed) {
    test_rng rng = test_rng_seeded(seed);
    char what[160];
    snprintf(what, sizeof what, "glu %s %s rows=%u n=%u seed=%llu",
             kind == K_GLU_SILU ? "silu" : "gelu_tanh", fused ? "fused" : "separate", rows, n,
             (unsigned long long)seed);
    size_t count = (size_t)rows * n;
    float *ref = alloc_floats(count);
    ref_glu_kind ref_kind = kind == K_GLU_SILU ? REF_GLU_SILU : REF_GLU_GELU_TANH;
    gpu_buffer gout = test_gpu_buffer_poisoned(count * 4);
    gpu_cmd *cmd = begin();
    float *inputs[2] = {NULL, NULL};
    gpu_buffer gin[2];
    int n_inputs;
    if (fused) {
        inputs[0] = random_floats(&rng, count * 2, -6, 6);
        ref_glu(ref_kind, inputs[0], 2 * n, inputs[0] + n, 2 * n, ref, rows, n);
        gin[0] = test_gpu_buffer_from(inputs[0], count * 8);
        n_inputs = 1;
        expect_ok(k_glu_fused(test_gpu(), cmd, kind, bind(&gin[0]), bind(&gout), rows, n), what);
    } else {
        inputs[0] = random_floats(&rng, count, -6, 6);
        inputs[1] = random_floats(&rng, count, -3, 3);
        ref_glu(ref_kind, inputs[0], n, inputs[1], n, ref, rows, n);
        gin[0] = test_gpu_buffer_from(inputs[0], count * 4);
        gin[1] = test_gpu_buffer_from(inputs[1], count * 4);
        n_inputs = 2;
        expect_ok(
            k_glu(test_gpu(), cmd, kind, bind(&gin[0]), bind(&gin[1]), bind(&gout), rows, n, n, n),
            what);
    }
    submit(cmd);
    float *out = read_floats(&gout, count);
    check_close(out, ref, count, 1e-5, what);
    free(out), free(ref), free(inputs[0]), free(inputs[1]);
    for (int i = 0; i < n_inputs; i++)
        test_gpu_free(&gin[i]);
    test_gpu_free(&gout);
}

Test(k_ops, glu, .fini = test_gpu_check_validation) {
    static const uint32_t shapes[][2] = {{1, 1}, {3, 7}, {5, 641}, {2, 2049}, {9, 4099}, {300, 5}};
    uint64_t seed = 200;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int kind = 0; kind < 2; kind++) {
            glu_case((k_glu_kind)kind, shapes[s][0], shapes[s][1], false, seed++);
            glu_case((k_glu_kind)kind, shapes[s][0], shapes[s][1], true, seed++);
        }
    }
}

/* ---------------------------------------------------------- rms_norm */

static const uint32_t row_shapes[][2] = {
    /* rows, n */
    {300, 1},  {300, 7},
    {37, 641}, {17, 2049},
    {9, 4099}, {44, 256} /* 11 tokens x 4 heads */,
    {64, 128}, {3, 8195} /* rows of more than 32 sweeps of a 256-wide workgroup */,
};
#define N_ROW_SHAPES (sizeof row_shapes / sizeof row_shapes[0])

/* Rows of very different magnitudes: RMSNorm must be scale invariant. */
static float *random_rows(test_rng *rng, uint32_t rows, uint32_t n) {
    float *x = random_floats(rng, (size_t)rows * n, -2, 2);
    static const float row_scales[] = {1.0f, 1e3f, 1e-3f, 7.5f};
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t i = 0; i < n; i++)
            x[(size_t)r * n + i] *= row_scales[r % 4];
    return x;
}

static void rms_norm_case(k_reduce_path path, uint32_t rows, uint32_t n, uint64_t seed) {
    test_rng rng = test_rng_seeded(seed);
    const float eps = 1e-6f;
    size_t count = (size_t)rows * n;
    char what[160];
    float *x = random_rows(&rng, rows, n);
    float *w = random_floats(&rng, n, 0.5f, 1.5f);
    float *residual = random_floats(&rng, count, -3, 3);
    float *ref = alloc_floats(count), *ref_add = alloc_floats(count);
    ref_rms_norm(x, w, ref, rows, n, eps);
    memcpy(ref_add, residual, count * 4);
    ref_rms_norm_add(x, w, ref_add, rows, n, eps);

    gpu_buffer gx = test_gpu_buffer_from(x, count * 4), gw = test_gpu_buffer_from(w, n * 4ull);
    gpu_buffer gres = test_gpu_buffer_from(residual, count * 4);
    gpu_buffer gout = test_gpu_buffer_poisoned(count * 4);
    gpu_cmd *cmd = begin();
    expect_ok(k_rms_norm_path(test_gpu(), cmd, path, false, bind(&gx), bind(&gw), bind(&gout), rows,
                              n, eps),
              "k_rms_norm_path");
    expect_ok(k_rms_norm_path(test_gpu(), cmd, path, true, bind(&gx), bind(&gw), bind(&gres), rows,
                              n, eps),
              "k_rms_norm_path fused add");
    /* in place last: it overwrites x, which the two dispatches above read */
    expect_ok(k_rms_norm_path(test_gpu(), cmd, path, false, bind(&gx), bind(&gw), bind(&gx), rows,
                              n, eps),
              "k_rms_norm_path in place");
    submit(cmd);

    float *out = read_floats(&gout, count), *out_add = read_floats(&gres, count);
    float *out_in_place = read_floats(&gx, count);
    snprintf(what, sizeof what, "rms_norm %s rows=%u n=%u seed=%llu", path_name(path), rows, n,
             (unsigned long long)seed);
    check_close(out, ref, count, 1e-5, what);
    /* per row too: rows of 1e-3 scale must not hide behind rows of 1e3 */
    for (uint32_t r = 0; r < rows; r++)
        check_close(out + (size_t)r * n, ref + (size_t)r * n, n, 1e-5, what);
    snprintf(what, sizeof what, "rms_norm_add %s rows=%u n=%u seed=%llu", path_name(path), rows, n,
             (unsigned long long)seed);
    check_close(out_add, ref_add, count, 1e-5, what);
    snprintf(what, sizeof what, "rms_norm in place %s rows=%u n=%u seed=%llu", path_name(path),
             rows, n, (unsigned long long)seed);
    check_close(out_in_place, ref, count, 1e-5, what);

    free(x), free(w), free(residual), free(ref), free(ref_add);
    free(out), free(out_add), free(out_in_place);
    test_gpu_free(&gx), test_gpu_free(&gw), test_gpu_free(&gres), test_gpu_free(&gout);
}

Test(k_ops, rms_norm_shared, .fini = test_gpu_check_validation) {
    for (size_t s = 0; s < N_ROW_SHAPES; s++)
        rms_norm_case(K_REDUCE_SHARED, row_shapes[s][0], row_shapes[s][1], 300 + s);
}

Test(k_ops, rms_norm_subgroup, .fini = test_gpu_check_validation) {
    if (!subgroup_path_available()) {
        gpu_cmd *cmd = begin();
        gpu_buffer g = test_gpu_buffer_poisoned(64);
        vkllm_status status = k_rms_norm_path(test_gpu(), cmd, K_REDUCE_SUBGROUP, false, bind(&g),
                                              bind(&g), bind(&g), 1, 4, 1e-6f);
        cr_assert(status == VKLLM_ERR_UNSUPPORTED, "expected UNSUPPORTED, got %s",
                  vkllm_status_name(status));
        submit(cmd);
        test_gpu_free(&g);
        cr_skip_test("device has no subgroup arithmetic: subgroup path not run");
    }
    cr_log_info("subgroup size %u", gpu_context_features(test_gpu())->subgroup_size);
    for (size_t s = 0; s < N_ROW_SHAPES; s++)
        rms_norm_case(K_REDUCE_SUBGROUP, row_shapes[s][0], row_shapes[s][1], 320 + s);
}

/* More rows than maxComputeWorkGroupCount[0]: rows spill into the y dimension. */
Test(k_ops, rms_norm_rows_beyond_group_limit, .fini = test_gpu_check_validation) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (f->max_workgroup_count[0] > 200000)
        cr_skip_test("max workgroup count x %u: too many rows to test cheaply",
                     f->max_workgroup_count[0]);
    uint32_t rows = f->max_workgroup_count[0] + 4465, n = 3;
    rms_norm_case(K_REDUCE_AUTO, rows, n, 340);
}

/* ---------------------------------------------------------- softmax */

/* Causal-style masks: row r masks the entries i > r (mod n) with -inf, and one
 * row is masked entirely (defined as all zeros). Masks hold under a softcap. */
static void apply_masks(float *x, uint32_t rows, uint32_t n) {
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t i = 0; i < n; i++)
            if (r % 3 == 1 && i > r % n) x[(size_t)r * n + i] = -INFINITY;
    if (rows > 2)
        for (uint32_t i = 0; i < n; i++)
            x[(size_t)2 * n + i] = -INFINITY;
}

static void softmax_case(k_reduce_path path, uint32_t rows, uint32_t n, float scale, float softcap,
                         uint64_t seed) {
    test_rng rng = test_rng_seeded(seed);
    size_t count = (size_t)rows * n;
    char what[192];
    float *x = random_floats(&rng, count, -30, 30);
    apply_masks(x, rows, n);
    float *ref = alloc_floats(count);
    ref_softmax(x, ref, rows, n, scale, softcap);

    gpu_buffer gx = test_gpu_buffer_from(x, count * 4), gout = test_gpu_buffer_poisoned(count * 4);
    gpu_cmd *cmd = begin();
    expect_ok(
        k_softmax_path(test_gpu(), cmd, path, bind(&gx), bind(&gout), rows, n, scale, softcap),
        "k_softmax_path");
    expect_ok(k_softmax_path(test_gpu(), cmd, path, bind(&gx), bind(&gx), rows, n, scale, softcap),
              "k_softmax_path in place");
    submit(cmd);
    float *out = read_floats(&gout, count), *out_in_place = read_floats(&gx, count);
    snprintf(what, sizeof what, "softmax %s rows=%u n=%u scale=%g softcap=%g seed=%llu",
             path_name(path), rows, n, (double)scale, (double)softcap, (unsigned long long)seed);
    check_close(out, ref, count, 1e-5, what);
    for (uint32_t r = 0; r < rows; r++) {
        if (r == 2) { /* fully masked row: exact zeros */
            for (uint32_t i = 0; i < n; i++)
                cr_assert(out[(size_t)r * n + i] == 0.0f, "%s: masked row value %g", what,
                          (double)out[(size_t)r * n + i]);
            continue;
        }
        check_close(out + (size_t)r * n, ref + (size_t)r * n, n, 1e-5, what);
    }
    snprintf(what, sizeof what, "softmax in place %s rows=%u n=%u seed=%llu", path_name(path), rows,
             n, (unsigned long long)seed);
    check_close(out_in_place, ref, count, 1e-5, what);
    free(x), free(ref), free(out), free(out_in_place);
    test_gpu_free(&gx), test_gpu_free(&gout);
}

static void softmax_all_shapes(k_reduce_path path, uint64_t seed) {
    for (size_t s = 0; s < N_ROW_SHAPES; s++) {
        softmax_case(path, row_shapes[s][0], row_shapes[s][1], 1.0f, 0.0f, seed++);
        softmax_case(path, row_shapes[s][0], row_shapes[s][1], 0.0625f, 0.0f, seed++);
        softmax_case(path, row_shapes[s][0], row_shapes[s][1], 2.0f, 50.0f, seed++);
    }
}

Test(k_ops, softmax_shared, .fini = test_gpu_check_validation) {
    softmax_all_shapes(K_REDUCE_SHARED, 400);
}

Test(k_ops, softmax_subgroup, .fini = test_gpu_check_validation) {
    if (!subgroup_path_available()) cr_skip_test("device has no subgroup arithmetic");
    softmax_all_shapes(K_REDUCE_SUBGROUP, 440);
}

/* ---------------------------------------------------------- RoPE */

typedef struct rope_shape {
    uint32_t n_tokens, n_heads, head_dim, n_rot;
    float freq_base, freq_scale;
} rope_shape;

static void rope_case(const rope_shape *sh, k_rope_mode mode, bool with_factors,
                      int32_t max_position, double bound, uint64_t seed) {
    test_rng rng = test_rng_seeded(seed);
    size_t count = (size_t)sh->n_tokens * sh->n_heads * sh->head_dim;
    char what[256];
    snprintf(what, sizeof what,
             "rope %s%s tokens=%u heads=%u head_dim=%u n_rot=%u base=%g scale=%g max_pos=%d "
             "seed=%llu",
             mode == K_ROPE_NEOX ? "neox" : "norm", with_factors ? " +freq_factors" : "",
             sh->n_tokens, sh->n_heads, sh->head_dim, sh->n_rot, (double)sh->freq_base,
             (double)sh->freq_scale, max_position, (unsigned long long)seed);
    float *x = random_floats(&rng, count, -2, 2);
    int32_t *pos = malloc(sh->n_tokens * sizeof(int32_t));
    cr_assert(pos);
    for (uint32_t t = 0; t < sh->n_tokens; t++)
        pos[t] = (int32_t)test_rng_below(&rng, (uint32_t)max_position);
    pos[0] = 0;
    if (sh->n_tokens > 1) pos[sh->n_tokens - 1] = max_position - 1;
    uint32_t n_pairs = sh->n_rot / 2;
    float *ff = random_floats(&rng, n_pairs, 1.0f, 8.0f); /* llama3-style divisors */
    float *ref = alloc_floats(count);
    ref_rope(x, pos, with_factors ? ff : NULL, ref, sh->n_tokens, sh->n_heads, sh->head_dim,
             sh->n_rot, sh->freq_base, sh->freq_scale,
             mode == K_ROPE_NEOX ? REF_ROPE_NEOX : REF_ROPE_NORM);

    gpu_buffer gx = test_gpu_buffer_from(x, count * 4);
    gpu_buffer gpos = test_gpu_buffer_from(pos, sh->n_tokens * 4ull);
    gpu_buffer gff = test_gpu_buffer_from(ff, n_pairs * 4ull);
    gpu_buffer gout = test_gpu_buffer_poisoned(count * 4);
    gpu_binding factors = with_factors ? bind(&gff) : (gpu_binding){0};
    gpu_cmd *cmd = begin();
    expect_ok(k_rope(test_gpu(), cmd, bind(&gx), bind(&gpos), factors, bind(&gout), sh->n_tokens,
                     sh->n_heads, sh->head_dim, sh->n_rot, sh->freq_base, sh->freq_scale, mode),
              what);
    expect_ok(k_rope(test_gpu(), cmd, bind(&gx), bind(&gpos), factors, bind(&gx), sh->n_tokens,
                     sh->n_heads, sh->head_dim, sh->n_rot, sh->freq_base, sh->freq_scale, mode),
              what);
    submit(cmd);
    float *out = read_floats(&gout, count), *out_in_place = read_floats(&gx, count);
    check_close(out, ref, count, bound, what);
    check_close(out_in_place, ref, count, bound, what);
    /* dims >= n_rot are copies, bit for bit */
    for (size_t row = 0; row < count / sh->head_dim; row++)
        for (uint32_t d = sh->n_rot; d < sh->head_dim; d++)
            cr_assert(out[row * sh->head_dim + d] == x[row * sh->head_dim + d],
                      "%s: dim %u of row %zu changed", what, d, row);
    free(x), free(pos), free(ff), free(ref), free(out), free(out_in_place);
    test_gpu_free(&gx), test_gpu_free(&gpos), test_gpu_free(&gff), test_gpu_free(&gout);
}

static const rope_shape rope_shapes[] = {
    {13, 3, 64, 64, 10000.0f, 1.0f},    /* llama-like, full rotation */
    {7, 4, 256, 256, 1000000.0f, 1.0f}, /* gemma 3 global layer */
    {9, 1, 256, 256, 10000.0f, 0.125f}, /* gemma 3 local base, linear scaling 8 */
    {5, 3, 128, 96, 500000.0f, 1.0f},   /* partial rotation: dims 96..127 untouched */
    {1, 1, 2, 2, 10000.0f, 1.0f},       /* smallest */
    {301, 2, 10, 6, 10000.0f, 1.0f},    /* many tokens, odd pair count */
};

Test(k_ops, rope_small_positions, .fini = test_gpu_check_validation) {
    uint64_t seed = 500;
    for (size_t s = 0; s < sizeof rope_shapes / sizeof rope_shapes[0]; s++)
        for (int mode = 0; mode < 2; mode++)
            for (int ff = 0; ff < 2; ff++)
                rope_case(&rope_shapes[s], (k_rope_mode)mode, ff, 64, 1e-5, seed++);
}

Test(k_ops, rope_large_positions, .fini = test_gpu_check_validation) {
    uint64_t seed = 600;
    for (size_t s = 0; s < sizeof rope_shapes / sizeof rope_shapes[0]; s++)
        for (int mode = 0; mode < 2; mode++)
            rope_case(&rope_shapes[s], (k_rope_mode)mode, s % 2, 32768, 1e-3, seed++);
}

/* ---------------------------------------------------------- argument errors */

Test(k_ops, argument_errors, .fini = test_gpu_check_validation) {
    gpu_context *ctx = test_gpu();
    gpu_buffer small = test_gpu_buffer_poisoned(16), big = test_gpu_buffer_poisoned(4096);
    gpu_cmd *cmd = begin();

    /* a binding smaller than the tensor */
    vkllm_status st = k_rms_norm(ctx, cmd, bind(&small), bind(&big), bind(&big), 2, 7, 1e-6f);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT, "short x: %s", vkllm_status_name(st));
    cr_assert(
        strstr(vkllm_last_error(), "k_rms_norm: binding x covers 16 bytes but the op needs 56"),
        "message: %s", vkllm_last_error());

    /* a range beyond the buffer */
    gpu_binding past = {.buffer = &small, .offset = 8, .range = 16};
    st = k_add(ctx, cmd, past, bind(&big), bind(&big), 2);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vkllm_last_error(), "binding a range"),
              "range past end: %s", vkllm_last_error());

    /* missing buffer */
    st = k_softmax(ctx, cmd, bind(&big), (gpu_binding){0}, 1, 4, 1.0f, 0.0f);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vkllm_last_error(), "binding out"),
              "no out buffer: %s", vkllm_last_error());

    /* RoPE shape rules */
    st = k_rope(ctx, cmd, bind(&big), bind(&big), (gpu_binding){0}, bind(&big), 1, 1, 8, 10,
                10000.0f, 1.0f, K_ROPE_NEOX);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vkllm_last_error(), "n_rot 10"),
              "n_rot > head_dim: %s", vkllm_last_error());
    st = k_rope(ctx, cmd, bind(&big), bind(&big), (gpu_binding){0}, bind(&big), 1, 1, 8, 3,
                10000.0f, 1.0f, K_ROPE_NORM);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT, "odd n_rot: %s", vkllm_status_name(st));
    st = k_rope(ctx, cmd, bind(&big), bind(&big), (gpu_binding){0}, bind(&big), 1, 1, 8, 8, 0.0f,
                1.0f, K_ROPE_NORM);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vkllm_last_error(), "freq_base"),
              "zero base: %s", vkllm_last_error());
    st = k_rope(ctx, cmd, bind(&big), bind(&small), (gpu_binding){0}, bind(&big), 5, 1, 8, 8,
                10000.0f, 1.0f, K_ROPE_NORM);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vkllm_last_error(), "binding positions"),
              "short positions: %s", vkllm_last_error());

    /* other value checks */
    st = k_softcap(ctx, cmd, bind(&big), bind(&big), 4, 0.0f);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT, "cap 0: %s", vkllm_status_name(st));
    st = k_glu(ctx, cmd, K_GLU_SILU, bind(&big), bind(&big), bind(&big), 2, 8, 4, 8);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vkllm_last_error(), "strides"),
              "stride < n: %s", vkllm_last_error());
    st = k_rms_norm(ctx, cmd, bind(&big), bind(&big), bind(&big), 1, 4, NAN);
    cr_assert(st == VKLLM_ERR_INVALID_ARGUMENT, "NaN eps: %s", vkllm_status_name(st));

    /* zero-sized ops record nothing and succeed */
    expect_ok(k_add(ctx, cmd, bind(&small), bind(&small), bind(&small), 0), "k_add n=0");
    expect_ok(k_rms_norm(ctx, cmd, bind(&small), bind(&small), bind(&small), 0, 4, 1e-6f),
              "k_rms_norm rows=0");

    /* the command buffer is still usable after rejected calls */
    submit(cmd);
    test_gpu_free(&small), test_gpu_free(&big);
}
