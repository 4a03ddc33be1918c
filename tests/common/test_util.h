/* test_util.h: shared helpers for the Criterion tests.
 *
 * - a seeded PRNG (xoshiro-style) so failures reproduce: every test prints its seed;
 * - random inputs in a range, fp16 conversion for building device inputs;
 * - comparison by relative error ||out - ref|| / ||ref|| that fails on any NaN/Inf,
 *   which is how poisoned (never written) outputs are caught;
 * - the poison value itself: a NaN bit pattern written into outputs before a kernel
 *   runs, so an element the kernel forgot stays NaN and fails the comparison. */
#ifndef VKL_TEST_UTIL_H
#define VKL_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define TEST_POISON_WORD 0x7fc0dead /* a quiet NaN as float32 */

typedef struct test_rng {
    uint64_t s[2];
} test_rng;

test_rng test_rng_seeded(uint64_t seed);
uint64_t test_rng_next(test_rng *rng);
float test_rng_uniform(test_rng *rng, float lo, float hi); /* [lo, hi) */
uint32_t test_rng_below(test_rng *rng, uint32_t n);        /* [0, n) */
void test_fill_uniform(test_rng *rng, float *x, size_t n, float lo, float hi);

/* Fills `n` 32-bit words with TEST_POISON_WORD. */
void test_poison(void *x, size_t n_words);

/* ||out - ref||_2 / max(||ref||_2, tiny); returns INFINITY if any out is NaN/Inf. */
double test_rel_error(const float *out, const float *ref, size_t n);

/* Index of the first NaN/Inf in out, or -1. */
long test_first_nonfinite(const float *out, size_t n);

/* IEEE binary16 conversions (round to nearest even), independent of the engine's. */
uint16_t test_f32_to_f16(float f);
float test_f16_to_f32(uint16_t h);

/* Asserts rel error <= bound with a message naming the test case. */
#define test_assert_close(out, ref, n, bound, ...)                                                 \
    do {                                                                                           \
        double test_err_ = test_rel_error((out), (ref), (n));                                      \
        long test_bad_ = test_first_nonfinite((out), (n));                                         \
        cr_assert(test_bad_ < 0, "non-finite output at %ld (unwritten or NaN)", test_bad_);        \
        cr_assert(test_err_ <= (bound), "relative error %.3g > %.3g", test_err_, (double)(bound)); \
    } while (0)

#endif
