/* quant.c: CPU dequantization/quantization of ggml block formats and fp16/bf16.
 *
 * Block layouts follow docs/gguf-and-models.md §3. Every dequantizer evaluates the
 * same float32 expression, in the same order, as gguf-py's numpy reference
 * (e.g. Q4_K: (d*scale)*q - (dmin*min)), so results match it bit for bit; keep that
 * order when editing. Blocks are read byte-wise (no alignment assumptions, host
 * endianness irrelevant). */
#include "model/quant.h"

#include <math.h>
#include <string.h>

#define QK 32    /* legacy block size */
#define QK_K 256 /* K-quant super-block size */

/* ------------------------------------------------------------------ scalars */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float quant_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        /* Zero or subnormal: mant * 2^-24 is exact in float32. */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return f32_from(sign | 0x7f800000u | (mant << 13));
    return f32_from(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t quant_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t mag = x & 0x7fffffffu;
    if (mag > 0x7f800000u) /* NaN: keep the top payload bits, force quiet */
        return (uint16_t)(sign | 0x7e00u | ((mag >> 13) & 0x3ffu));
    if (mag >= 0x477ff000u) /* >= 65520 rounds to infinity (and inf stays inf) */
        return (uint16_t)(sign | 0x7c00u);
    if (mag < 0x38800000u) {                 /* below 2^-14: half subnormal or zero */
        if (mag <= 0x33000000u) return sign; /* <= 2^-25 rounds to (even) zero */
        uint32_t exp = mag >> 23;
        uint32_t mant = (mag & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - exp; /* value / 2^-24 = mant >> shift */
        uint32_t q = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q); /* a carry into 0x400 is the smallest normal */
    }
    /* Normal: rebias the exponent, round the 13 dropped bits to nearest even; a carry
     * into the exponent field is the correct next binade. */
    uint32_t rebased = mag - (112u << 23);
    uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
    return (uint16_t)(sign | (rounded >> 13));
}

float quant_bf16_to_f32(uint16_t h) {
    return f32_from((uint32_t)h << 16);
}

uint16_t quant_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)(((uint64_t)x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static float load_f16(const uint8_t *p) {
    return quant_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

static void store_f16(uint8_t *p, float v) {
    uint16_t h = quant_f32_to_f16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ------------------------------------------------------------------ legacy blocks */

/* Low nibbles hold elements 0..15, high nibbles 16..31. */
static uint32_t nibble(const uint8_t *qs, uint32_t e) {
    return e < 16 ? qs[e] & 15u : qs[e - 16] >> 4;
}

static void dequant_q4_0(const uint8_t *b, float *y) {
    float d = load_f16(b);
    for (uint32_t e = 0; e < QK; e++)
        y[e] = d * (float)((int)nibble(b + 2, e) - 8);
}

static void dequant_q4_1(const uint8_t *b, float *y) {
    float d = load_f16(b), m = load_f16(b + 2);
    for (uint32_t e = 0; e < QK; e++)
        y[e] = d * (float)nibble(b + 4, e) + m;
}

static void dequant_q5_0(const uint8_t *b, float *y) {
    float d = load_f16(b);
    uint32_t qh = load_u32(b + 2);
    for (uint32_t e = 0; e < QK; e++) {
        int q = (int)(nibble(b + 6, e) | ((qh >> e) & 1u) << 4);
        y[e] = d * (float)(q - 16);
    }
}

static void dequant_q5_1(const uint8_t *b, float *y) {
    float d = load_f16(b), m = load_f16(b + 2);
    uint32_t qh = load_u32(b + 4);
    for (uint32_t e = 0; e < QK; e++) {
        uint32_t q = nibble(b + 8, e) | ((qh >> e) & 1u) << 4;
        y[e] = d * (float)q + m;
    }
}

static void dequant_q8_0(const uint8_t *b, float *y) {
    float d = load_f16(b);
    for (uint32_t e = 0; e < QK; e++)
        y[e] = (float)(int8_t)b[2 + e] * d;
}

/* ------------------------------------------------------------------ K-quants */

static void dequant_q2_k(const uint8_t *b, float *y) {
    const uint8_t *scales = b, *qs = b + 16;
    float d = load_f16(b + 80), dmin = load_f16(b + 82);
    for (uint32_t j = 0; j < 16; j++) {
        float dl = d * (float)(scales[j] & 15u);
        float ml = dmin * (float)(scales[j] >> 4);
        for (uint32_t i = 0; i < 16; i++) {
            uint32_t e = 16 * j + i;
            uint32_t q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3u;
            y[e] = dl * (float)q - ml;
        }
    }
}

static void dequant_q3_k(const uint8_t *b, float *y) {
    const uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
    float d = load_f16(b + 108);
    for (uint32_t j = 0; j < 16; j++) {
        uint32_t low = j < 8 ? sc[j] & 15u : sc[j - 8] >> 4;
        uint32_t high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3u;
        float dl = d * (float)((int)(low | high << 4) - 32);
        for (uint32_t i = 0; i < 16; i++) {
            uint32_t e = 16 * j + i;
            int q2 = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            int hbit = (hmask[e % 32] >> (e / 32)) & 1;
            y[e] = dl * (float)(q2 - (hbit ? 0 : 4));
        }
    }
}

/* The 12-byte packing of eight 6-bit scales and mins shared by Q4_K and Q5_K. */
static void k_scale_min(const uint8_t *s, uint32_t j, uint32_t *scale, uint32_t *min) {
    if (j < 4) {
        *scale = s[j] & 63u;
        *min = s[j + 4] & 63u;
    } else {
        *scale = (s[j + 4] & 15u) | ((s[j - 4] >> 6) << 4);
        *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void dequant_q4_k(const uint8_t *b, float *y) {
    float d = load_f16(b), dmin = load_f16(b + 2);
    const uint8_t *qs = b + 16;
    for (uint32_t j = 0; j < 8; j++) {
        uint32_t sc, m;
        k_scale_min(b + 4, j, &sc, &m);
        float dl = d * (float)sc, ml = dmin * (float)m;
        const uint8_t *q = qs + 32 * (j / 2);
        uint32_t shift = 4 * (j % 2);
        for (uint32_t l = 0; l < 32; l++)
            y[32 * j + l] = dl * (float)((q[l] >> shift) & 15u) - ml;
    }
}

static void dequant_q5_k(const uint8_t *b, float *y) {
    float d = load_f16(b), dmin = load_f16(b + 2);
    const uint8_t *qh = b + 16, *qs = b + 48;
    for (uint32_t j = 0; j < 8; j++) {
        uint32_t sc, m;
        k_scale_min(b + 4, j, &sc, &m);
        float dl = d * (float)sc, ml = dmin * (float)m;
        const uint8_t *q = qs + 32 * (j / 2);
        uint32_t shift = 4 * (j % 2);
        for (uint32_t l = 0; l < 32; l++) {
            uint32_t v = ((q[l] >> shift) & 15u) | ((qh[l] >> j) & 1u) << 4;
            y[32 * j + l] = dl * (float)v - ml;
        }
    }
}

static void dequant_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *scales = (const int8_t *)(b + 192);
    float d = load_f16(b + 208);
    for (uint32_t j = 0; j < 16; j++) {
        float dl = d * (float)scales[j];
        for (uint32_t i = 0; i < 16; i++) {
            uint32_t e = 16 * j + i;
            uint32_t h = e / 128, g = (e % 128) / 32, l = e % 32;
            uint32_t low = (ql[64 * h + l + 32 * (g & 1)] >> (4 * (g / 2))) & 15u;
            uint32_t high = (qh[32 * h + l] >> (2 * g)) & 3u;
            y[e] = dl * (float)((int)(low | high << 4) - 32);
        }
    }
}

/* ------------------------------------------------------------------ dispatch */

typedef void (*block_dequant_fn)(const uint8_t *block, float *out);

static block_dequant_fn block_dequantizer(ggml_type type) {
    switch (type) {
    case GGML_TYPE_Q4_0:
        return dequant_q4_0;
    case GGML_TYPE_Q4_1:
        return dequant_q4_1;
    case GGML_TYPE_Q5_0:
        return dequant_q5_0;
    case GGML_TYPE_Q5_1:
        return dequant_q5_1;
    case GGML_TYPE_Q8_0:
        return dequant_q8_0;
    case GGML_TYPE_Q2_K:
        return dequant_q2_k;
    case GGML_TYPE_Q3_K:
        return dequant_q3_k;
    case GGML_TYPE_Q4_K:
        return dequant_q4_k;
    case GGML_TYPE_Q5_K:
        return dequant_q5_k;
    case GGML_TYPE_Q6_K:
        return dequant_q6_k;
    default:
        return NULL;
    }
}

bool quant_can_dequantize(ggml_type type) {
    return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 ||
           block_dequantizer(type) != NULL;
}

uint64_t quant_row_bytes(ggml_type type, uint64_t n) {
    return ggml_row_bytes(type, n);
}

static vkllm_status check_count(ggml_type type, uint64_t n, const char *what) {
    ggml_type_info info = ggml_type_get_info(type);
    if (info.block_elems == 0 || n % info.block_elems != 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: %llu elements is not a multiple of the %s block size %u", what,
                        (unsigned long long)n, info.name, info.block_elems);
    return VKLLM_OK;
}

vkllm_status quant_dequantize(ggml_type type, const void *src, float *dst, uint64_t n) {
    if (!quant_can_dequantize(type))
        return vkl_fail(VKLLM_ERR_UNSUPPORTED, "quant_dequantize: type %s (%u) not supported",
                        ggml_type_get_info(type).name, (unsigned)type);
    VKL_TRY(check_count(type, n, "quant_dequantize"));
    if (n && (!src || !dst))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "quant_dequantize: null buffer");
    const uint8_t *s = src;
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        return VKLLM_OK;
    case GGML_TYPE_F16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = load_f16(s + 2 * i);
        return VKLLM_OK;
    case GGML_TYPE_BF16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = quant_bf16_to_f32((uint16_t)(s[2 * i] | s[2 * i + 1] << 8));
        return VKLLM_OK;
    default:
        break;
    }
    ggml_type_info info = ggml_type_get_info(type);
    block_dequant_fn fn = block_dequantizer(type);
    for (uint64_t b = 0; b < n / info.block_elems; b++)
        fn(s + b * info.block_bytes, dst + b * info.block_elems);
    return VKLLM_OK;
}

/* ------------------------------------------------------------------ quantizers */

/* The element of largest magnitude, keeping its sign (first one on ties). */
static float signed_absmax(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (uint32_t e = 0; e < QK; e++)
        if (fabsf(x[e]) > amax) {
            amax = fabsf(x[e]);
            max = x[e];
        }
    return max;
}

static void min_max(const float *x, float *min, float *max) {
    *min = INFINITY;
    *max = -INFINITY;
    for (uint32_t e = 0; e < QK; e++) {
        if (x[e] < *min) *min = x[e];
        if (x[e] > *max) *max = x[e];
    }
}

static uint32_t clamp_code(float v, uint32_t hi) {
    if (!(v > 0.0f)) return 0; /* also NaN */
    return v >= (float)hi ? hi : (uint32_t)v;
}

/* Q4_0: d = max/-8 so the extreme maps to code 0; codes = trunc(x/d + 8.5) in 0..15. */
static void quant_q4_0(const float *x, uint8_t *b) {
    float d = signed_absmax(x) / -8.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(b, d);
    for (uint32_t j = 0; j < 16; j++) {
        uint32_t lo = clamp_code(x[j] * id + 8.5f, 15), hi = clamp_code(x[j + 16] * id + 8.5f, 15);
        b[2 + j] = (uint8_t)(lo | hi << 4);
    }
}

static void quant_q4_1(const float *x, uint8_t *b) {
    float min, max;
    min_max(x, &min, &max);
    float d = (max - min) / 15.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(b, d);
    store_f16(b + 2, min);
    for (uint32_t j = 0; j < 16; j++) {
        uint32_t lo = clamp_code((x[j] - min) * id + 0.5f, 15);
        uint32_t hi = clamp_code((x[j + 16] - min) * id + 0.5f, 15);
        b[4 + j] = (uint8_t)(lo | hi << 4);
    }
}

static void pack_q5(const uint32_t *q, uint8_t *qh_out, uint8_t *qs) {
    uint32_t qh = 0;
    for (uint32_t j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 15u) | (q[j + 16] & 15u) << 4);
        qh |= ((q[j] >> 4) & 1u) << j;
        qh |= ((q[j + 16] >> 4) & 1u) << (j + 16);
    }
    for (uint32_t i = 0; i < 4; i++)
        qh_out[i] = (uint8_t)(qh >> (8 * i));
}

static void quant_q5_0(const float *x, uint8_t *b) {
    float d = signed_absmax(x) / -16.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t q[QK];
    for (uint32_t e = 0; e < QK; e++)
        q[e] = clamp_code(x[e] * id + 16.5f, 31);
    store_f16(b, d);
    pack_q5(q, b + 2, b + 6);
}

static void quant_q5_1(const float *x, uint8_t *b) {
    float min, max;
    min_max(x, &min, &max);
    float d = (max - min) / 31.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t q[QK];
    for (uint32_t e = 0; e < QK; e++)
        q[e] = clamp_code((x[e] - min) * id + 0.5f, 31);
    store_f16(b, d);
    store_f16(b + 2, min);
    pack_q5(q, b + 4, b + 8);
}

static void quant_q8_0(const float *x, uint8_t *b) {
    float amax = 0.0f;
    for (uint32_t e = 0; e < QK; e++)
        amax = fmaxf(amax, fabsf(x[e]));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(b, d);
    for (uint32_t e = 0; e < QK; e++) {
        float v = roundf(x[e] * id);
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        b[2 + e] = (uint8_t)(int8_t)v;
    }
}

typedef void (*block_quant_fn)(const float *x, uint8_t *block);

static block_quant_fn block_quantizer(ggml_type type) {
    switch (type) {
    case GGML_TYPE_Q4_0:
        return quant_q4_0;
    case GGML_TYPE_Q4_1:
        return quant_q4_1;
    case GGML_TYPE_Q5_0:
        return quant_q5_0;
    case GGML_TYPE_Q5_1:
        return quant_q5_1;
    case GGML_TYPE_Q8_0:
        return quant_q8_0;
    default:
        return NULL;
    }
}

bool quant_can_quantize(ggml_type type) {
    return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 ||
           block_quantizer(type) != NULL;
}

vkllm_status quant_quantize(ggml_type type, const float *src, void *dst, uint64_t n) {
    if (!quant_can_quantize(type))
        return vkl_fail(VKLLM_ERR_UNSUPPORTED, "quant_quantize: type %s (%u) not supported",
                        ggml_type_get_info(type).name, (unsigned)type);
    VKL_TRY(check_count(type, n, "quant_quantize"));
    if (n && (!src || !dst))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "quant_quantize: null buffer");
    uint8_t *d = dst;
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        return VKLLM_OK;
    case GGML_TYPE_F16:
        for (uint64_t i = 0; i < n; i++)
            store_f16(d + 2 * i, src[i]);
        return VKLLM_OK;
    case GGML_TYPE_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = quant_f32_to_bf16(src[i]);
            d[2 * i] = (uint8_t)h;
            d[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return VKLLM_OK;
    default:
        break;
    }
    ggml_type_info info = ggml_type_get_info(type);
    block_quant_fn fn = block_quantizer(type);
    for (uint64_t b = 0; b < n / info.block_elems; b++)
        fn(src + b * info.block_elems, d + b * info.block_bytes);
    return VKLLM_OK;
}
