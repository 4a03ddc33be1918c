// dequant.glsl: dequantization of ggml weight blocks from a plain uint[] buffer.
//
// Owns: reading every supported weight type (F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) in units of 8 consecutive elements ("groups").
// Layouts follow /work/shared/docs/gguf-and-models.md §3.
//
// Use: the including shader declares, before the #include,
//     layout(std430, binding = N) readonly buffer Weights { uint wq[]; };
// and defines exactly one DQ_<TYPE> (DQ_F32, DQ_F16, DQ_Q4_0, ... DQ_Q6_K).
// It then gets
//     DQ_BLOCK_ELEMS, DQ_BLOCK_BYTES, DQ_GROUPS (= DQ_BLOCK_ELEMS / 8)
//     void dq_group(uint block_byte, uint g, out vec4 lo, out vec4 hi)
// which returns elements 8g .. 8g+7 of the block starting at byte block_byte of wq.
// F32 and F16 are treated as "blocks" of 8 elements (32 and 16 bytes), so their
// rows must hold a multiple of 8 elements.
//
// DQ_FLAT (defined before the #include): branch-free forms of the word fetches and of the
// Q4_K/Q5_K scale decoding, for kernels that issue the loads of several groups together
// and overlap them with other work (matmul_coopmat.comp): a load inside an if/else makes
// the compiler wait for it inside the branch. Same values (exactly), same words read.
//
// Invariants: only Vulkan 1.1 core is needed (fp16 and 8-bit fields are unpacked
// from 32-bit words). block_byte must be a multiple of 4 for block sizes that are
// multiples of 4 (F32, F16, Q4_1, Q5_1, Q2_K, Q4_K, Q5_K) and a multiple of 2 for
// the 18/22/34/110/210-byte blocks (Q4_0, Q5_0, Q8_0, Q3_K, Q6_K), whose fields
// may straddle word boundaries. A group never reads a word that starts at or past
// the block's last byte rounded up to 4, so a binding covering the tensor rounded
// up to a multiple of 4 bytes is enough.

#ifndef DQ_GLSL
#define DQ_GLSL

// Word i of the weight bytes. A shader that stages weights elsewhere (matvec_fast.comp
// reads them from shared memory) defines DQ_W(i) before the #include.
#ifndef DQ_W
#define DQ_W(i) wq[i]
#endif

// ---------------------------------------------------------------- byte access

// 32 bits starting at a byte offset that is a multiple of 4.
uint dq_word(uint byte_off) { return DQ_W(byte_off >> 2); }

// 32 bits starting at a byte offset that is a multiple of 2 (may straddle two words).
#ifndef DQ_FLAT
uint dq_word2(uint byte_off) {
    uint i = byte_off >> 2;
    if ((byte_off & 2u) == 0u) return DQ_W(i);
    return (DQ_W(i) >> 16) | (DQ_W(i + 1u) << 16);
}
#else
uint dq_word2(uint byte_off) {
    uint i = byte_off >> 2, odd = (byte_off >> 1) & 1u;
    uint lo = DQ_W(i), hi = DQ_W(i + odd); /* the second word only when straddling */
    return odd == 0u ? lo : (lo >> 16) | (hi << 16);
}
#endif

uint dq_u16(uint byte_off) { return (DQ_W(byte_off >> 2) >> ((byte_off & 2u) * 8u)) & 0xffffu; }
uint dq_u8(uint byte_off) { return (DQ_W(byte_off >> 2) >> ((byte_off & 3u) * 8u)) & 0xffu; }
int dq_i8(uint byte_off) { return int(dq_u8(byte_off) << 24) >> 24; }
float dq_half(uint byte_off) { return unpackHalf2x16(dq_u16(byte_off)).x; }

// Small unsigned integers to float. Not the bit trick (2^23 + v has v in its mantissa,
// then subtract 2^23): where two such fields are summed (Q5_*, Q6_K high bits) the NVIDIA
// compiler reassociates (a - 2^23) + 16 (b - 2^23) into a + 16 b - const and loses the
// low bits (measured: 0.3-0.5 relative error on the H100, exact on lavapipe).
vec4 dq_u2f(uvec4 v) { return vec4(v); }

// The four bytes of w, each shifted right by `shift` and masked: nibbles (mask 15),
// 2-bit fields (mask 3) or whole bytes (mask 255).
vec4 dq_fields(uint w, uint shift, uint mask) {
    return dq_u2f((uvec4(w) >> (uvec4(0u, 8u, 16u, 24u) + shift)) & mask);
}

// Bits 0..3 of `bits` as 0.0 / 1.0.
vec4 dq_bits(uint bits) { return dq_u2f((uvec4(bits) >> uvec4(0u, 1u, 2u, 3u)) & 1u); }

// The four bytes of w as signed int8 values (byte ^ 0x80 = value + 128).
#ifndef DQ_FLAT
vec4 dq_sbytes(uint w) { return vec4(ivec4(uvec4(w) << uvec4(24u, 16u, 8u, 0u)) >> 24); }
#else
vec4 dq_sbytes(uint w) { return dq_fields(w ^ 0x80808080u, 0u, 255u) - 128.0; }
#endif

// Bit `shift` of each of the four bytes of w, as 0.0 / 1.0.
vec4 dq_byte_bits(uint w, uint shift) { return dq_fields(w, shift, 1u); }

// ---------------------------------------------------------------- per type

#if defined(DQ_F32)
#define DQ_BLOCK_ELEMS 8u
#define DQ_BLOCK_BYTES 32u
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
    uint i = bb >> 2;
    lo = uintBitsToFloat(uvec4(DQ_W(i), DQ_W(i + 1u), DQ_W(i + 2u), DQ_W(i + 3u)));
    hi = uintBitsToFloat(uvec4(DQ_W(i + 4u), DQ_W(i + 5u), DQ_W(i + 6u), DQ_W(i + 7u)));
}

#elif defined(DQ_F16)
#define DQ_BLOCK_ELEMS 8u
#define DQ_BLOCK_BYTES 16u
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
    uint i = bb >> 2;
    lo = vec4(unpackHalf2x16(DQ_W(i)), unpackHalf2x16(DQ_W(i + 1u)));
    hi = vec4(unpackHalf2x16(DQ_W(i + 2u)), unpackHalf2x16(DQ_W(i + 3u)));
}

#elif defined(DQ_Q4_0)
// 0: d; 2: qs[16]. Elements 0-15 = low nibbles, 16-31 = high nibbles. value d*(q-8).
#define DQ_BLOCK_ELEMS 32u
#define DQ_BLOCK_BYTES 18u
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
    float d = dq_half(bb);
    uint q = bb + 2u + 8u * (g & 1u);
    uint shift = 4u * (g >> 1);
    lo = d * (dq_fields(dq_word2(q), shift, 15u) - 8.0);
    hi = d * (dq_fields(dq_word2(q + 4u), shift, 15u) - 8.0);
}

#elif defined(DQ_Q4_1)
// 0: d; 2: m; 4: qs[16]. value d*q + m.
#define DQ_BLOCK_ELEMS 32u
#define DQ_BLOCK_BYTES 20u
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
    vec2 dm = unpackHalf2x16(dq_word(bb));
    uint q = bb + 4u + 8u * (g & 1u);
    uint shift = 4u * (g >> 1);
    lo = dm.x * dq_fields(dq_word(q), shift, 15u) + dm.y;
    hi = dm.x * dq_fields(dq_word(q + 4u), shift, 15u) + dm.y;
}

#elif defined(DQ_Q5_0)
// 0: d; 2: qh (uint32, bit e = fifth bit of element e); 6: qs[16]. value d*(q-16).
#define DQ_BLOCK_ELEMS 32u
#define DQ_BLOCK_BYTES 22u
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
    float d = dq_half(bb);
    uint qh = dq_word2(bb + 2u) >> (8u * g);
    uint q = bb + 6u + 8u * (g & 1u);
    uint shift = 4u * (g >> 1);
    lo = d * (dq_fields(dq_word2(q), shift, 15u) + 16.0 * dq_bits(qh) - 16.0);
    hi = d * (dq_fields(dq_word2(q + 4u), shift, 15u) + 16.0 * dq_bits(qh >> 4) - 16.0);
}

#elif defined(DQ_Q5_1)
// 0: d; 2: m; 4: qh (uint32); 8: qs[16]. value d*q + m.
#define DQ_BLOCK_ELEMS 32u
#define DQ_BLOCK_BYTES 24u
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
    vec2 dm = unpackHalf2x16(dq_word(bb));
    uint qh = dq_word(bb + 4u) >> (8u * g);
    uint q = bb + 8u + 8u * (g & 1u);
    uint shift = 4u * (g >> 1);
    lo = dm.x * (dq_fields(dq_word(q), shift, 15u) + 16.0 * dq_bits(qh)) + dm.y;
    hi = dm.x * (dq_fields(dq_word(q + 4u), shift, 15u) + 16.0 * dq_bits(qh >> 4)) + dm.y;
}

#elif defined(DQ_Q8_0)
// 0: d; 2: qs[32] int8. value d*q.
#define DQ_BLOCK_ELEMS 32u
#define DQ_BLOCK_BYTES 34u
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
    float d = dq_half(bb);
    uint q = bb + 2u + 8u * g;
    lo = d * dq_sbytes(dq_word2(q));
    hi = d * dq_sbytes(dq_word2(q + 4u));
}

#elif defined(DQ_Q2_K)
// 0: scales[16] (scale low nibble, min high nibble); 16: qs[64]; 80: d; 82: dmin.
// q of element e: byte qs[32*(e/128) + e%32], bits 2*((e%128)/32).
#define DQ_BLOCK_ELEMS 256u
#define DQ_BLOCK_BYTES 84u
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
    uint e0 = 8u * g;
    vec2 dm = unpackHalf2x16(dq_word(bb + 80u));
    uint sc = dq_u8(bb + e0 / 16u);
    float dl = dm.x * float(sc & 15u), ml = dm.y * float(sc >> 4);
    uint q = bb + 16u + 32u * (e0 / 128u) + e0 % 32u;
    uint shift = 2u * ((e0 % 128u) / 32u);
    lo = dl * dq_fields(dq_word(q), shift, 3u) - ml;
    hi = dl * dq_fields(dq_word(q + 4u), shift, 3u) - ml;
}

#elif defined(DQ_Q3_K)
// 0: hmask[32]; 32: qs[64]; 96: scales[12] (16 six-bit signed scales); 108: d.
// value d * S_{e/16} * (q2 - (hbit ? 0 : 4)).
#define DQ_BLOCK_ELEMS 256u
#define DQ_BLOCK_BYTES 110u
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
    uint e0 = 8u * g;
    uint j = e0 / 16u;
    uint low = j < 8u ? dq_u8(bb + 96u + j) & 15u : dq_u8(bb + 96u + j - 8u) >> 4;
    uint high = (dq_u8(bb + 104u + j % 4u) >> (2u * (j / 4u))) & 3u;
    float dl = dq_half(bb + 108u) * float(int(low | (high << 4)) - 32);
    uint hm = bb + e0 % 32u, hshift = e0 / 32u;
    uint q = bb + 32u + 32u * (e0 / 128u) + e0 % 32u;
    uint shift = 2u * ((e0 % 128u) / 32u);
    lo = dl * (dq_fields(dq_word2(q), shift, 3u) - 4.0 + 4.0 * dq_byte_bits(dq_word2(hm), hshift));
    hi = dl * (dq_fields(dq_word2(q + 4u), shift, 3u) - 4.0 +
               4.0 * dq_byte_bits(dq_word2(hm + 4u), hshift));
}

#elif defined(DQ_Q4_K) || defined(DQ_Q5_K)
// Q4_K: 0: d; 2: dmin; 4: scales[12] (8 six-bit scales and mins); 16: qs[128].
// Q5_K: the same, with qh[32] at 16 and qs[128] at 48.
// Chunk c = e/64 uses qs[32c .. 32c+31]: low nibbles for e%64 < 32, high ones after.
#if defined(DQ_Q4_K)
#define DQ_BLOCK_BYTES 144u
#define DQ_QS 16u
#else
#define DQ_BLOCK_BYTES 176u
#define DQ_QS 48u
#endif
#define DQ_BLOCK_ELEMS 256u
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
    uint e0 = 8u * g;
    uint j = e0 / 32u;
    vec2 dm = unpackHalf2x16(dq_word(bb));
    uint s = bb + 4u;
    uint sc, mn;
#ifndef DQ_FLAT
    if (j < 4u) {
        sc = dq_u8(s + j) & 63u;
        mn = dq_u8(s + j + 4u) & 63u;
    } else {
        uint b8 = dq_u8(s + j + 4u);
        sc = (b8 & 15u) | ((dq_u8(s + j - 4u) >> 6) << 4);
        mn = (b8 >> 4) | ((dq_u8(s + j) >> 6) << 4);
    }
#else
    uint bj = dq_u8(s + j), bj4 = dq_u8(s + j + 4u), bjm4 = dq_u8(s + (j & 3u));
    sc = j < 4u ? bj & 63u : (bj4 & 15u) | ((bjm4 >> 6) << 4);
    mn = j < 4u ? bj4 & 63u : (bj4 >> 4) | ((bj >> 6) << 4);
#endif
    float dl = dm.x * float(sc), ml = dm.y * float(mn);
    uint c = e0 / 64u, t = e0 % 64u;
    uint q = bb + DQ_QS + 32u * c + t % 32u;
    uint shift = t < 32u ? 0u : 4u;
    vec4 q0 = dq_fields(dq_word(q), shift, 15u);
    vec4 q1 = dq_fields(dq_word(q + 4u), shift, 15u);
#if defined(DQ_Q5_K)
    uint h = bb + 16u + t % 32u, hshift = 2u * c + (t < 32u ? 0u : 1u);
    q0 += 16.0 * dq_byte_bits(dq_word(h), hshift);
    q1 += 16.0 * dq_byte_bits(dq_word(h + 4u), hshift);
#endif
    lo = dl * q0 - ml;
    hi = dl * q1 - ml;
}

#elif defined(DQ_Q6_K)
// 0: ql[128]; 128: qh[64]; 192: scales[16] int8; 208: d. value d*scale_{e/16}*(q-32).
#define DQ_BLOCK_ELEMS 256u
#define DQ_BLOCK_BYTES 210u
void dq_group(uint bb, uint g, out vec4 lo, out vec4 hi) {
    uint e0 = 8u * g;
    uint h = e0 / 128u, quarter = (e0 % 128u) / 32u, l = e0 % 32u;
    float dl = dq_half(bb + 208u) * float(dq_i8(bb + 192u + e0 / 16u));
    uint ql = bb + 64u * h + l + 32u * (quarter & 1u);
    uint lshift = quarter >= 2u ? 4u : 0u;
    uint qh = bb + 128u + 32u * h + l, hshift = 2u * quarter;
    lo = dl * (dq_fields(dq_word2(ql), lshift, 15u) +
               16.0 * dq_fields(dq_word2(qh), hshift, 3u) - 32.0);
    hi = dl * (dq_fields(dq_word2(ql + 4u), lshift, 15u) +
               16.0 * dq_fields(dq_word2(qh + 4u), hshift, 3u) - 32.0);
}

#else
#error "dequant.glsl: define one DQ_<TYPE>"
#endif

#define DQ_GROUPS (DQ_BLOCK_ELEMS / 8u)

#endif
