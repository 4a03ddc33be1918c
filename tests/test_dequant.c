/* test_dequant.c: quant.c against gguf-py (fixtures from tools/fixtures/gen_dequant.py).
 *
 * - every dequantizer reproduces gguf.quants.dequantize bit for bit (NaNs compared as
 *   NaNs) on random blocks, also from a misaligned source pointer;
 * - the legacy quantizers produce gguf.quants.quantize's bytes exactly, and their
 *   round trip stays within a stated relative error on seeded random data;
 * - f32 -> f16 matches numpy's rounding, f32 -> bf16 matches gguf-py's; f16 -> f32 is
 *   checked exhaustively against tests/common's independent conversion;
 * - bad arguments give clear statuses. */
// links: model common
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "model/quant.h"

#define FIXTURES VKLLM_SOURCE_DIR "/tests/fixtures/dequant/"

typedef struct fixture {
    uint32_t type, kind, n_elements, n_bytes;
    uint8_t *payload; /* everything after the header */
    size_t payload_size;
} fixture;

static fixture load_fixture(const char *name) {
    char path[512];
    snprintf(path, sizeof path, FIXTURES "%s", name);
    FILE *fp = fopen(path, "rb");
    cr_assert(fp, "missing fixture %s (run tools/fixtures/gen_dequant.py)", path);
    uint8_t head[24];
    cr_assert_eq(fread(head, 1, sizeof head, fp), sizeof head, "%s: short header", path);
    cr_assert(!memcmp(head, "VKQF", 4), "%s: bad magic", path);
    uint32_t f[5];
    memcpy(f, head + 4, sizeof f); /* little-endian host assumed by the tests */
    cr_assert_eq(f[0], 1, "%s: version", path);
    fixture fx = {f[1], f[2], f[3], f[4], NULL, 0};
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, (long)sizeof head, SEEK_SET);
    fx.payload_size = (size_t)size - sizeof head;
    fx.payload = malloc(fx.payload_size);
    cr_assert_eq(fread(fx.payload, 1, fx.payload_size, fp), fx.payload_size);
    fclose(fp);
    return fx;
}

/* Bit-exact float comparison where any NaN equals any NaN. */
static void assert_same_floats(const float *got, const float *want, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++) {
        uint32_t a, b;
        memcpy(&a, &got[i], 4);
        memcpy(&b, &want[i], 4);
        if (isnan(want[i])) {
            cr_assert(isnan(got[i]), "%s: element %zu: got %g (0x%08x), want NaN", what, i, got[i],
                      a);
            continue;
        }
        cr_assert_eq(a, b, "%s: element %zu: got %.9g (0x%08x), want %.9g (0x%08x)", what, i,
                     got[i], a, want[i], b);
    }
}

static void check_dequant_fixture(const char *name, ggml_type type) {
    fixture fx = load_fixture(name);
    cr_assert_eq(fx.kind, 0, "%s: kind", name);
    cr_assert_eq(fx.type, (uint32_t)type, "%s: type", name);
    cr_assert_eq(quant_row_bytes(type, fx.n_elements), fx.n_bytes, "%s: row bytes", name);
    cr_assert_eq(fx.payload_size, fx.n_bytes + 4ull * fx.n_elements, "%s: size", name);
    const uint8_t *blocks = fx.payload;
    float *want = malloc(4ull * fx.n_elements);
    memcpy(want, fx.payload + fx.n_bytes, 4ull * fx.n_elements);
    float *got = malloc(4ull * fx.n_elements);
    test_poison(got, fx.n_elements);
    cr_assert_eq(quant_dequantize(type, blocks, got, fx.n_elements), VKLLM_OK, "%s: %s", name,
                 vkllm_last_error());
    assert_same_floats(got, want, fx.n_elements, name);

    /* Blocks need no alignment: decode again from an odd address. */
    uint8_t *shifted = malloc(fx.n_bytes + 1);
    memcpy(shifted + 1, blocks, fx.n_bytes);
    test_poison(got, fx.n_elements);
    cr_assert_eq(quant_dequantize(type, shifted + 1, got, fx.n_elements), VKLLM_OK);
    assert_same_floats(got, want, fx.n_elements, name);
    free(shifted);
    free(got);
    free(want);
    free(fx.payload);
}

Test(dequant, f32) {
    check_dequant_fixture("dequant_f32.bin", GGML_TYPE_F32);
}
Test(dequant, f16) {
    check_dequant_fixture("dequant_f16.bin", GGML_TYPE_F16);
}
Test(dequant, bf16) {
    check_dequant_fixture("dequant_bf16.bin", GGML_TYPE_BF16);
}
Test(dequant, q4_0) {
    check_dequant_fixture("dequant_q4_0.bin", GGML_TYPE_Q4_0);
}
Test(dequant, q4_1) {
    check_dequant_fixture("dequant_q4_1.bin", GGML_TYPE_Q4_1);
}
Test(dequant, q5_0) {
    check_dequant_fixture("dequant_q5_0.bin", GGML_TYPE_Q5_0);
}
Test(dequant, q5_1) {
    check_dequant_fixture("dequant_q5_1.bin", GGML_TYPE_Q5_1);
}
Test(dequant, q8_0) {
    check_dequant_fixture("dequant_q8_0.bin", GGML_TYPE_Q8_0);
}
Test(dequant, q2_k) {
    check_dequant_fixture("dequant_q2_k.bin", GGML_TYPE_Q2_K);
}
Test(dequant, q3_k) {
    check_dequant_fixture("dequant_q3_k.bin", GGML_TYPE_Q3_K);
}
Test(dequant, q4_k) {
    check_dequant_fixture("dequant_q4_k.bin", GGML_TYPE_Q4_K);
}
Test(dequant, q5_k) {
    check_dequant_fixture("dequant_q5_k.bin", GGML_TYPE_Q5_K);
}
Test(dequant, q6_k) {
    check_dequant_fixture("dequant_q6_k.bin", GGML_TYPE_Q6_K);
}

/* ------------------------------------------------------------------ quantizers */

static void check_quant_fixture(const char *name, ggml_type type) {
    fixture fx = load_fixture(name);
    cr_assert_eq(fx.kind, 1, "%s: kind", name);
    cr_assert_eq(fx.type, (uint32_t)type);
    cr_assert_eq(quant_row_bytes(type, fx.n_elements), fx.n_bytes);
    float *x = malloc(4ull * fx.n_elements);
    memcpy(x, fx.payload, 4ull * fx.n_elements);
    const uint8_t *want = fx.payload + 4ull * fx.n_elements;
    uint8_t *got = malloc(fx.n_bytes);
    memset(got, 0xA5, fx.n_bytes);
    cr_assert_eq(quant_quantize(type, x, got, fx.n_elements), VKLLM_OK, "%s", vkllm_last_error());
    ggml_type_info info = ggml_type_get_info(type);
    for (uint32_t i = 0; i < fx.n_bytes; i++)
        cr_assert_eq(got[i], want[i], "%s: byte %u (block %u, offset %u): got 0x%02x want 0x%02x",
                     name, i, i / info.block_bytes, i % info.block_bytes, got[i], want[i]);
    free(got);
    free(x);
    free(fx.payload);
}

Test(quantize, q4_0_matches_gguf_py) {
    check_quant_fixture("quant_q4_0.bin", GGML_TYPE_Q4_0);
}
Test(quantize, q4_1_matches_gguf_py) {
    check_quant_fixture("quant_q4_1.bin", GGML_TYPE_Q4_1);
}
Test(quantize, q5_0_matches_gguf_py) {
    check_quant_fixture("quant_q5_0.bin", GGML_TYPE_Q5_0);
}
Test(quantize, q5_1_matches_gguf_py) {
    check_quant_fixture("quant_q5_1.bin", GGML_TYPE_Q5_1);
}
Test(quantize, q8_0_matches_gguf_py) {
    check_quant_fixture("quant_q8_0.bin", GGML_TYPE_Q8_0);
}

/* Round trip on seeded uniform data; bounds are ||x - dq(q(x))|| / ||x||, with margin
 * over what the format's step (range / levels) implies. */
Test(quantize, round_trip_error_bounds) {
    const struct {
        ggml_type type;
        double bound;
    } cases[] = {
        {GGML_TYPE_Q4_0, 0.12},  {GGML_TYPE_Q4_1, 0.08},  {GGML_TYPE_Q5_0, 0.06},
        {GGML_TYPE_Q5_1, 0.04},  {GGML_TYPE_Q8_0, 0.008}, {GGML_TYPE_F16, 0.001},
        {GGML_TYPE_BF16, 0.005}, {GGML_TYPE_F32, 0.0},
    };
    const uint64_t seed = 0x5eed0001u;
    const uint64_t n = 32 * 37;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        test_rng rng = test_rng_seeded(seed + c);
        float *x = malloc(n * 4), *y = malloc(n * 4);
        test_fill_uniform(&rng, x, n, -3.0f, 5.0f); /* asymmetric: exercises the min term */
        uint8_t *q = malloc(quant_row_bytes(cases[c].type, n));
        cr_assert_eq(quant_quantize(cases[c].type, x, q, n), VKLLM_OK);
        test_poison(y, n);
        cr_assert_eq(quant_dequantize(cases[c].type, q, y, n), VKLLM_OK);
        double err = test_rel_error(y, x, n);
        cr_assert(err <= cases[c].bound, "%s seed %llu: relative error %.4g > %.4g",
                  ggml_type_get_info(cases[c].type).name, (unsigned long long)(seed + c), err,
                  cases[c].bound);
        free(q);
        free(x);
        free(y);
    }
}

/* ------------------------------------------------------------------ fp16 / bf16 */

Test(convert, f32_to_f16_matches_numpy) {
    fixture fx = load_fixture("round_f16.bin");
    cr_assert_eq(fx.kind, 2);
    const float *x = (const float *)fx.payload;
    const uint16_t *want = (const uint16_t *)(fx.payload + 4ull * fx.n_elements);
    for (uint32_t i = 0; i < fx.n_elements; i++) {
        uint16_t got = quant_f32_to_f16(x[i]);
        cr_assert_eq(got, want[i], "input %u = %.9g: got 0x%04x want 0x%04x", i, x[i], got,
                     want[i]);
    }
    free(fx.payload);
}

Test(convert, f32_to_bf16_matches_gguf_py) {
    fixture fx = load_fixture("round_bf16.bin");
    cr_assert_eq(fx.kind, 3);
    const float *x = (const float *)fx.payload;
    const uint16_t *want = (const uint16_t *)(fx.payload + 4ull * fx.n_elements);
    for (uint32_t i = 0; i < fx.n_elements; i++) {
        uint16_t got = quant_f32_to_bf16(x[i]);
        if (isnan(x[i])) {
            cr_assert(isnan(quant_bf16_to_f32(got)), "input %u NaN stays NaN", i);
            continue;
        }
        cr_assert_eq(got, want[i], "input %u = %.9g: got 0x%04x want 0x%04x", i, x[i], got,
                     want[i]);
    }
    free(fx.payload);
}

Test(convert, f16_exhaustive) {
    for (uint32_t h = 0; h < 65536; h++) {
        float a = quant_f16_to_f32((uint16_t)h), b = test_f16_to_f32((uint16_t)h);
        if (isnan(b)) {
            cr_assert(isnan(a), "0x%04x must be NaN", h);
            cr_assert(isnan(quant_f16_to_f32(quant_f32_to_f16(a))), "0x%04x NaN round trip", h);
            continue;
        }
        cr_assert(!memcmp(&a, &b, 4), "0x%04x: got %.9g want %.9g", h, a, b);
        cr_assert_eq(quant_f32_to_f16(a), h, "0x%04x does not round-trip", h);
    }
}

/* ------------------------------------------------------------------ errors */

Test(dequant, refuses_bad_arguments) {
    float out[256];
    uint8_t in[256 * 4] = {0};
    cr_assert_eq(quant_dequantize((ggml_type)16, in, out, 256), VKLLM_ERR_UNSUPPORTED);
    cr_assert(strstr(vkllm_last_error(), "IQ2_XXS"), "%s", vkllm_last_error());
    cr_assert_eq(quant_dequantize(GGML_TYPE_Q4_K, in, out, 100), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "block size 256"), "%s", vkllm_last_error());
    cr_assert_eq(quant_dequantize(GGML_TYPE_Q8_1, in, out, 32), VKLLM_ERR_UNSUPPORTED);
    cr_assert_eq(quant_quantize(GGML_TYPE_Q4_K, out, in, 256), VKLLM_ERR_UNSUPPORTED);
    cr_assert_eq(quant_quantize(GGML_TYPE_Q8_0, out, in, 33), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(quant_dequantize(GGML_TYPE_Q8_0, NULL, out, 32), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(quant_dequantize(GGML_TYPE_Q8_0, NULL, NULL, 0), VKLLM_OK, "empty is fine");
    cr_assert_eq(quant_row_bytes(GGML_TYPE_Q5_K, 512), 352);
    cr_assert_eq(quant_row_bytes(GGML_TYPE_Q5_K, 300), 0);
    cr_assert(quant_can_dequantize(GGML_TYPE_Q6_K));
    cr_assert(!quant_can_dequantize(GGML_TYPE_I32));
    cr_assert(quant_can_quantize(GGML_TYPE_Q5_1));
    cr_assert(!quant_can_quantize(GGML_TYPE_Q6_K));
}
