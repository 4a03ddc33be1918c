/* test_k_ops_ref.c: checks the CPU reference small ops (engine/ref/ref_ops.c)
 * against values computed by hand from the formulas of
 * docs/gguf-and-models.md, so the oracle of the GPU tests is itself checked.
 * Expected values carry >= 7 significant digits; bounds are absolute 1e-6
 * (relative for large values) since the references round once to f32. */
// links: ref
#include <criterion/criterion.h>
#include <math.h>

#include "ref/ref_ops.h"

#define EXPECT_NEAR(got, want, tol)                                                                \
    cr_assert(fabs((double)(got) - (double)(want)) <= (tol)*fmax(1.0, fabs((double)(want))),       \
              "%s = %.9g, expected %.9g", #got, (double)(got), (double)(want))

Test(k_ops_ref, scalar_activations) {
    EXPECT_NEAR(ref_silu(0.0f), 0.0, 1e-7);
    EXPECT_NEAR(ref_silu(1.0f), 0.7310585786, 1e-7);   /* 1 / (1 + e^-1) */
    EXPECT_NEAR(ref_silu(-2.0f), -0.2384058440, 1e-7); /* -2 / (1 + e^2) */
    /* gelu_tanh(1) = 0.5 (1 + tanh(sqrt(2/pi) * 1.044715)) = 0.5 (1 + tanh(0.8335620)) */
    EXPECT_NEAR(ref_gelu_tanh(1.0f), 0.8411919906, 1e-7);
    EXPECT_NEAR(ref_gelu_tanh(-1.0f), -0.1588080094, 1e-7);
    EXPECT_NEAR(ref_gelu_tanh(0.0f), 0.0, 1e-7);
}

Test(k_ops_ref, elementwise) {
    float a[3] = {1.5f, -2.0f, 1e-3f}, b[3] = {0.25f, 2.0f, 1.0f}, out[3];
    ref_add(a, b, out, 3);
    EXPECT_NEAR(out[0], 1.75, 1e-7);
    EXPECT_NEAR(out[1], 0.0, 1e-7);
    EXPECT_NEAR(out[2], 1.001, 1e-7);
    ref_add(a, b, a, 3); /* in place */
    EXPECT_NEAR(a[0], 1.75, 1e-7);

    float x[2] = {2.0f, -3.0f};
    ref_scale(x, out, 2, 0.5f);
    EXPECT_NEAR(out[0], 1.0, 1e-7);
    EXPECT_NEAR(out[1], -1.5, 1e-7);
    float y[3] = {30.0f, -15.0f, 0.0f};
    ref_softcap(y, out, 3, 30.0f);
    EXPECT_NEAR(out[0], 22.84782468, 1e-7);  /* 30 tanh(1) */
    EXPECT_NEAR(out[1], -13.86351472, 1e-7); /* -30 tanh(0.5) */
    EXPECT_NEAR(out[2], 0.0, 1e-7);
}

Test(k_ops_ref, glu_separate_and_fused_rows) {
    float g[2] = {1.0f, -2.0f}, u[2] = {2.0f, 3.0f}, out[2];
    ref_glu(REF_GLU_SILU, g, 1, u, 1, out, 2, 1);
    EXPECT_NEAR(out[0], 2 * 0.7310585786, 1e-7);
    EXPECT_NEAR(out[1], 3 * -0.2384058440, 1e-7);
    /* fused [rows][2n] gate|up: rows 2, n 1 */
    float gu[4] = {1.0f, 2.0f, -1.0f, 4.0f};
    ref_glu(REF_GLU_GELU_TANH, gu, 2, gu + 1, 2, out, 2, 1);
    EXPECT_NEAR(out[0], 2 * 0.8411919906, 1e-7);
    EXPECT_NEAR(out[1], 4 * -0.1588080094, 1e-7);
}

Test(k_ops_ref, rms_norm) {
    /* row 0: [3, 4], mean square 12.5, eps 0: [3, 4] / sqrt(12.5) * [1, 2] */
    float x[4] = {3.0f, 4.0f, 1.0f, 1.0f}, w[2] = {1.0f, 2.0f}, out[4];
    ref_rms_norm(x, w, out, 2, 2, 0.0f);
    EXPECT_NEAR(out[0], 0.8485281374, 1e-7);
    EXPECT_NEAR(out[1], 2.2627416998, 1e-7);
    EXPECT_NEAR(out[2], 1.0, 1e-7);
    EXPECT_NEAR(out[3], 2.0, 1e-7);
    /* eps matters: [1] with eps 3 -> 1 / sqrt(1 + 3) = 0.5 */
    float one = 1.0f, w1 = 1.0f, r;
    ref_rms_norm(&one, &w1, &r, 1, 1, 3.0f);
    EXPECT_NEAR(r, 0.5, 1e-7);
    /* fused add: residual [10, 10] += [0.8485.., 2.2627..] */
    float residual[2] = {10.0f, 10.0f};
    ref_rms_norm_add(x, w, residual, 1, 2, 0.0f);
    EXPECT_NEAR(residual[0], 10.8485281374, 1e-7);
    EXPECT_NEAR(residual[1], 12.2627416998, 1e-7);
    /* in place */
    ref_rms_norm(x, w, x, 1, 2, 0.0f);
    EXPECT_NEAR(x[1], 2.2627416998, 1e-7);
}

Test(k_ops_ref, softmax) {
    float x[3] = {0.0f, (float)M_LN2, -INFINITY}, out[3];
    ref_softmax(x, out, 1, 3, 1.0f, 0.0f); /* e^0 : e^ln2 : 0 = 1 : 2 : 0 */
    EXPECT_NEAR(out[0], 1.0 / 3, 1e-7);
    EXPECT_NEAR(out[1], 2.0 / 3, 1e-7);
    EXPECT_NEAR(out[2], 0.0, 1e-7);
    /* scale 2 on [0, ln2 / 2] gives the same */
    float xs[2] = {0.0f, (float)(M_LN2 / 2)};
    ref_softmax(xs, out, 1, 2, 2.0f, 0.0f);
    EXPECT_NEAR(out[1], 2.0 / 3, 1e-7);
    /* softcap 1 on [0, 100]: y = [0, tanh(100) = 1] -> [1 / (1 + e), e / (1 + e)] */
    float xc[2] = {0.0f, 100.0f};
    ref_softmax(xc, out, 1, 2, 1.0f, 1.0f);
    EXPECT_NEAR(out[0], 0.2689414214, 1e-7);
    EXPECT_NEAR(out[1], 0.7310585786, 1e-7);
    /* -inf stays masked under a softcap (the cap would otherwise map it to -cap) */
    float xm[3] = {0.0f, 100.0f, -INFINITY};
    ref_softmax(xm, out, 1, 3, 1.0f, 1.0f);
    EXPECT_NEAR(out[1], 0.7310585786, 1e-7);
    EXPECT_NEAR(out[2], 0.0, 0);
    /* a fully masked row is defined as zeros */
    float masked[2] = {-INFINITY, -INFINITY};
    ref_softmax(masked, out, 1, 2, 1.0f, 0.0f);
    EXPECT_NEAR(out[0], 0.0, 0);
    EXPECT_NEAR(out[1], 0.0, 0);
}

Test(k_ops_ref, rope_norm_and_neox) {
    /* NORM, head_dim 4, n_rot 2, position 1: pair (x0, x1) rotated by theta = 1;
     * dims 2, 3 untouched. */
    float x[4] = {1.0f, 0.0f, 5.0f, 6.0f}, out[4];
    int32_t pos1 = 1;
    ref_rope(x, &pos1, NULL, out, 1, 1, 4, 2, 10000.0f, 1.0f, REF_ROPE_NORM);
    EXPECT_NEAR(out[0], 0.5403023059, 1e-7); /* cos 1 */
    EXPECT_NEAR(out[1], 0.8414709848, 1e-7); /* sin 1 */
    EXPECT_NEAR(out[2], 5.0, 0);
    EXPECT_NEAR(out[3], 6.0, 0);

    /* NEOX, head_dim 4 = n_rot, base 10000, position 2: pairs (x0, x2) with
     * theta = 2 and (x1, x3) with theta = 2 * 10000^(-2/4) = 0.02. */
    float xn[4] = {1.0f, 0.0f, 0.0f, 1.0f};
    int32_t pos2 = 2;
    ref_rope(xn, &pos2, NULL, out, 1, 1, 4, 4, 10000.0f, 1.0f, REF_ROPE_NEOX);
    EXPECT_NEAR(out[0], -0.4161468365, 1e-7); /* cos 2 */
    EXPECT_NEAR(out[2], 0.9092974268, 1e-7);  /* sin 2 */
    EXPECT_NEAR(out[1], -0.0199986667, 1e-7); /* -sin 0.02 */
    EXPECT_NEAR(out[3], 0.9998000067, 1e-7);  /* cos 0.02 */

    /* freq_scale 0.5 and a divisor 2: theta = 4 * 0.5 / 2 = 1 */
    int32_t pos4 = 4;
    float ff[1] = {2.0f};
    ref_rope(x, &pos4, ff, out, 1, 1, 4, 2, 10000.0f, 0.5f, REF_ROPE_NORM);
    EXPECT_NEAR(out[0], 0.5403023059, 1e-7);
    EXPECT_NEAR(out[1], 0.8414709848, 1e-7);

    /* second token and head use their own offsets and position 0 is the identity */
    float two[8] = {1, 2, 3, 4, 1.0f, 0.0f, 7, 8};
    int32_t pos_pair[2] = {0, 1};
    ref_rope(two, pos_pair, NULL, two, 2, 1, 4, 2, 10000.0f, 1.0f, REF_ROPE_NORM); /* in place */
    EXPECT_NEAR(two[0], 1.0, 0);
    EXPECT_NEAR(two[1], 2.0, 0);
    EXPECT_NEAR(two[4], 0.5403023059, 1e-7);
    EXPECT_NEAR(two[5], 0.8414709848, 1e-7);
    EXPECT_NEAR(two[7], 8.0, 0);
}
