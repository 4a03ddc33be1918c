// matvec_dp4a.comp: Y = X·Wᵀ for 1 to 8 tokens with packed 8-bit integer dot products
// (SPV_KHR_integer_dot_product OpSDot, "DP4A"), for Q4_0, Q8_0, Q4_K and Q6_K weights.
//
// Same operation, bindings, push-constant block and epilogues (bias, ACCUMULATE,
// y_offset/y_stride, x_offset/x_stride, skew) as matvec_fast.comp; pc.chunk_blocks is unused.
// Optional prologues in quantize_x (one at a time): NORM_X (RMSNorm of X) and GLU_X (X =
// act(gate) ∘ up from the FFN's gate|up rows), docs/notes-fusion.md.
// Design (docs/notes-dp4a.md; the first version in docs/perf-notes.md, "matvec_dp4a"):
//   - X is quantized per workgroup into shared memory, like Q8_1: for every block of 32
//     elements d = max|x|/127, q = roundEven(x/d) (int8, packed 4 per word), and the
//     block's integer sums Σq over 32 and over each half of 16 (exact floats). Each thread
//     quantizes whole blocks (NUM_COLS * cols/32 over WG_SIZE threads), then one barrier;
//   - workgroups are persistent, so the quantization is amortized over all the rows a
//     workgroup takes (the launcher picks the workgroup count). Loop 2 hands out blocks of
//     NUM_ROWS rows to subgroups (sg, sg + all subgroups, ...), loop 1 groups of
//     gl_NumSubgroups * NUM_ROWS rows to workgroups (wg, wg + num_wg, ...);
//   - each subgroup computes NUM_ROWS rows at a time. Loop 2 (default): lane l takes the
//     32-weight units l, l + subgroup size, ... of each row (a Q4_0/Q8_0 block, an eighth of
//     a K-quant super-block), UNITS of them per row in flight, so consecutive lanes read
//     consecutive bytes; the weights go straight from 16-byte loads into registers (no
//     shared-memory stage, no barrier), are decoded once into 8 int8-operand words and
//     dotted with each token's X (read once per token for all NUM_ROWS rows): 8-bit quants
//     as they are, 4-bit after a mask (0..15 are valid signed bytes, the offset 8 applied
//     per block through Σq_x), 6-bit made signed; the float scales apply once per 16 or 32.
//     Integer sums are exact. Loop 1 (DP4A_LOOP = 1): the first version, kept for the A/B;
//   - a subgroup reduce-scatter (loop 2; subgroupAdd in loop 1) finishes each row; no barrier
//     in the main loop. Needs subgroup arithmetic and shuffle.
// Shared memory: NUM_COLS * (MAX_COLS + MAX_COLS/32 * 16) bytes, each array rounded up to
// 128 bytes (MAX_COLS = pc.cols, fixed by the launcher per pipeline). Rows too wide for all
// the tokens' X are dispatched by the launcher in column chunks (pc.cols, pc.skew and
// pc.x_offset of the chunk; later chunks with ACCUMULATE): nothing here depends on it.
// Weight binding: with VEC_LOADS it starts at a 16-byte multiple and extends to the last
// row's end rounded up to 16 (16-byte loads; for Q4_K also skew % 16 == 0); without, at a
// 4-byte multiple to the end rounded up to 4 (word loads, clamped to the binding).
// Invariants: cols % 32 == 0 (256 for K-quants), row_bytes and skew even (multiples of 4 for
// Q4_K), WG_SIZE a multiple of the subgroup size; rows past the end repeat the last row (in
// bounds) and are not written.
// variant: matvec_dp4a_q4_0 DQ_Q4_0
// variant: matvec_dp4a_q8_0 DQ_Q8_0
// variant: matvec_dp4a_q4_k DQ_Q4_K
// variant: matvec_dp4a_q6_k DQ_Q6_K
#version 450
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_spirv_intrinsics : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_GOOGLE_include_directive : require

// OpSDot (SPV_KHR_integer_dot_product): signed dot product of two words of 4 packed int8,
// packed vector format 0 (PackedVectorFormat4x8Bit). Capabilities DotProduct (6019) and
// DotProductInput4x8BitPacked (6018). glslang 12 lacks GL_EXT_integer_dot_product.
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018],
                  id = 4450) int sdot_packed(uint a, uint b, spirv_literal int fmt);
#define SDOT(a, b) sdot_packed((a), (b), 0)

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG_SIZE = 256;
layout(constant_id = 1) const uint NUM_ROWS = 2;   // rows a subgroup computes together
layout(constant_id = 2) const uint NUM_COLS = 1;   // tokens (1..8)
layout(constant_id = 3) const uint MAX_COLS = 4096; // = pc.cols (sizes the shared arrays)
layout(constant_id = 4) const uint HAS_BIAS = 0;
layout(constant_id = 5) const uint UNUSED5 = 0; // matvec_fast's ROWS_PER_WG slot
layout(constant_id = 6) const uint ACCUMULATE = 0; // 1: y += result (residual joins)
// ids 12.. (dp4a helper; 7, 8 are the RMSNorm prologue's, 9, 10 the GLU prologue's)
layout(constant_id = 12) const uint UNITS = 1;     // loop 2: units per lane and row in flight
layout(constant_id = 13) const uint DP4A_LOOP = 0; // 1: loop 1 (first version), for A/B runs
layout(constant_id = 14) const uint VEC_LOADS = 0; // 1: 16-byte weight loads (see above)

layout(std430, binding = 0) readonly buffer Weights { uint wq[]; };
layout(std430, binding = 0) readonly buffer Weights4 { uvec4 wq4[]; }; // same binding
layout(std430, binding = 1) readonly buffer Activations { vec4 x4[]; };
layout(std430, binding = 2) buffer Outputs { float y[]; }; // read too with ACCUMULATE
layout(std430, binding = 3) readonly buffer Biases { float bias[]; };

layout(push_constant) uniform Push {
    uint rows;         // rows in this range
    uint cols;         // elements per row
    uint row_bytes;    // bytes per row
    uint skew;         // byte of row 0 in wq (even)
    uint x_stride;     // floats between tokens in X
    uint y_stride;     // floats between tokens in Y
    uint y_offset;     // Y element of (token 0, row 0)
    uint bias_offset;  // bias element of row 0
    uint chunk_blocks; // unused (matvec_fast's)
    uint x_offset;     // X float of (token 0, column 0); multiple of 4
} pc;

// Quantized X in shared memory, in 16-byte chunks (4 words): chunk c = t * XC + 2b + half
// holds words 4 half .. 4 half + 3 of block b of token t; it lives at chunk c ^ ((c >> 3) & 7)
// (a swizzle inside each aligned group of 8 chunks, so both arrays are rounded up to 8
// chunks): lanes reading consecutive units (X blocks 2u, 2u + 1 with 16-byte loads) hit
// distinct banks instead of 4 lanes sharing each. The same swizzle spreads xds (one vec4
// per block).
const uint XB = MAX_COLS / 32u; // X blocks per token
const uint XC = MAX_COLS / 16u; // X chunks per token
shared uint xq[4u * ((NUM_COLS * XC + 7u) & ~7u)];
shared vec4 xds[(NUM_COLS * XB + 7u) & ~7u]; // d, Σq, Σq of elements 0-15, of 16-31

uint swz(uint c) { return c ^ ((c >> 3) & 7u); }

// ---------------------------------------------------------------- X quantization
// NORM_X (RMSNorm prologue, docs/notes-fusion.md): X is the raw residual row and the product
// is W·(rmsnorm(x) ∘ g) = r_t · W·(x ∘ g) with r_t = 1/sqrt(Σx²/cols + eps) per token, so
// x ∘ g is quantized as usual and r_t scales the finished sum in the epilogue (xnorm_r,
// per invocation: the shared arrays are left exactly as big as without the prologue,
// which fills 48 KiB at 8 tokens of 4096). Σx² is summed per subgroup and then across
// subgroups through xq, before xq holds quantized X (needs NUM_COLS * gl_NumSubgroups <=
// xq's words, NUM_COLS * cols / 4 or more: cols >= 4 * subgroups, checked by the launcher). Every
// invocation adds the subgroups' sums in the same order, so all get the same r_t.
layout(constant_id = 7) const uint NORM_X = 0;         // 1: RMSNorm prologue (binding 4)
layout(constant_id = 8) const float NORM_EPS = 1e-6;   // its epsilon
layout(std430, binding = 4) readonly buffer NormWeights { vec4 g4[]; }; // g [cols]
float xnorm_r[NUM_COLS]; // r_t (NORM_X), set by quantize_x

// Σx² of each token -> xnorm_r (NORM_X). Two workgroup barriers; uniform control flow.
void x_norm_scales(uint tid, uint n, uint nb) {
    float ss[NUM_COLS];
    for (uint t = 0u; t < NUM_COLS; t++) ss[t] = 0.0;
    for (uint i = tid; i < n; i += WG_SIZE) {
        uint t = i / nb, b = i % nb;
        uint base4 = pc.x_offset / 4u + t * (pc.x_stride / 4u) + b * 8u;
        float part = 0.0;
        for (uint k = 0u; k < 8u; k++) part += dot(x4[base4 + k], x4[base4 + k]);
        for (uint tt = 0u; tt < NUM_COLS; tt++)
            if (tt == t) ss[tt] += part;
    }
    for (uint t = 0u; t < NUM_COLS; t++) {
        float s = subgroupAdd(ss[t]);
        if (gl_SubgroupInvocationID == 0u)
            xq[t * gl_NumSubgroups + gl_SubgroupID] = floatBitsToUint(s);
    }
    barrier();
    for (uint t = 0u; t < NUM_COLS; t++) {
        float total = 0.0;
        for (uint sg = 0u; sg < gl_NumSubgroups; sg++)
            total += uintBitsToFloat(xq[t * gl_NumSubgroups + sg]);
        xnorm_r[t] = inversesqrt(total / float(pc.cols) + NORM_EPS);
    }
    barrier(); // every invocation has read the sums before xq is overwritten
}

// GLU_X (GLU prologue, docs/notes-fusion.md): X is the FFN's fused gate|up activation (each
// token's row holds gate at its columns [0, n_ff) and up at [n_ff, 2 n_ff); the launcher
// passes x_stride >= 2 n_ff) and the product is W·(act(gate) ∘ up). Each element
// act(gate)·up is formed exactly as glu.comp forms it (the same ops_math.glsl function, then
// one multiply) and quantized like X, so the main loop and the epilogue are unchanged and the
// glu dispatch goes away. GLU_UP = n_ff of the whole row (column chunks move pc.x_offset, not
// the gate-to-up distance). Never together with NORM_X (the launcher refuses it).
layout(constant_id = 9) const uint GLU_X = 0;   // 0 off, 1 SiLU, 2 GELU-tanh (k_glu_kind + 1)
layout(constant_id = 10) const uint GLU_UP = 0; // floats from a gate to its up; multiple of 4

#include "ops_math.glsl"

vec4 glu_act(vec4 g) {
    if (GLU_X == 1u) return vec4(ops_silu(g.x), ops_silu(g.y), ops_silu(g.z), ops_silu(g.w));
    return vec4(ops_gelu_tanh(g.x), ops_gelu_tanh(g.y), ops_gelu_tanh(g.z), ops_gelu_tanh(g.w));
}

void quantize_x(uint tid) {
    uint n = NUM_COLS * (pc.cols / 32u);
    uint nb = pc.cols / 32u;
    if (NORM_X != 0u) x_norm_scales(tid, n, nb);
    for (uint i = tid; i < n; i += WG_SIZE) {
        uint t = i / nb, b = i % nb;
        uint base4 = pc.x_offset / 4u + t * (pc.x_stride / 4u) + b * 8u;
        vec4 v[8];
        float amax = 0.0;
        for (uint k = 0u; k < 8u; k++) {
            v[k] = x4[base4 + k];
            if (NORM_X != 0u) v[k] *= g4[b * 8u + k];
            if (GLU_X != 0u) v[k] = glu_act(v[k]) * x4[base4 + GLU_UP / 4u + k];
            vec4 a = abs(v[k]);
            amax = max(amax, max(max(a.x, a.y), max(a.z, a.w)));
        }
        float d = amax / 127.0;
        float id = d > 0.0 ? 1.0 / d : 0.0;
        int s = 0, s_lo = 0;
        for (uint k = 0u; k < 8u; k++) {
            ivec4 q = ivec4(clamp(roundEven(v[k] * id), -127.0, 127.0));
            s += q.x + q.y + q.z + q.w;
            if (k == 3u) s_lo = s;
            uint c = swz(t * XC + 2u * b + (k >> 2));
            xq[4u * c + (k & 3u)] = uint(q.x & 255) | (uint(q.y & 255) << 8) |
                                    (uint(q.z & 255) << 16) | (uint(q.w & 255) << 24);
        }
        xds[swz(t * XB + b)] = vec4(d, float(s), float(s_lo), float(s - s_lo));
    }
}

// Word k of X block b of token t, and the block's (d, Σq, Σq of elements 0-15, of 16-31).
uint xword(uint t, uint b, uint k) { return xq[4u * swz(t * XC + 2u * b + (k >> 2)) + (k & 3u)]; }
vec4 xblock(uint t, uint b) { return xds[XB % 64u == 0u ? t * XB + swz(b) : swz(t * XB + b)]; }

// ================================================================ main loop 2 (default)
// Work of one lane ("unit"): 32 weights of one row, u = 0 .. cols/32 - 1, for every type:
// Q4_0/Q8_0 block u; Q4_K/Q6_K super-block u / 8, part j = u % 8 (below). A subgroup step
// takes units s*UNITS*sgs + k*sgs + lane (k < UNITS) of NUM_ROWS rows, so consecutive lanes
// read consecutive blocks (a quarter-subgroup's 16-byte loads span 1-3 128-byte lines).
// Per type: unit_fetch(rb, u) issues the loads (rb: byte of the row in the binding),
// unit_decode() turns them into 8 int8-operand words q[] (q[0..3] pair with X chunk xa,
// q[4..7] with X chunk xb) and float scales, unit_x(t, u) reads X of token t from shared
// memory (shared by the rows), unit_dot() is the scaled integer dot product.
// Q4_0/Q8_0/Q6_K are 2-byte aligned: their bytes are loaded as a window of 16-byte-aligned
// chunks and shifted into place with selects (win5) and 16-bit funnels.

// Chunk i (bytes 16i..16i+15) of the weight binding. Word loads (VEC_LOADS 0: the binding
// is only 4-byte aligned or ends before the next 16-byte boundary) clamp to the binding.
uvec4 wchunk(uint i) {
    if (VEC_LOADS != 0u) return wq4[i];
    uint w = 4u * i, last = uint(wq.length()) - 1u;
    return uvec4(wq[min(w, last)], wq[min(w + 1u, last)], wq[min(w + 2u, last)],
                 wq[min(w + 3u, last)]);
}

// Words (o >> 2) + k, k < 5, of the 8-word window (a, b); o < 16. Two select stages.
void win5(uvec4 a, uvec4 b, uint o, out uint w[5]) {
    uint v[8] = uint[8](a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);
    uint t[6];
    [[unroll]] for (uint k = 0u; k < 6u; k++) t[k] = (o & 8u) != 0u ? v[k + 2u] : v[k];
    [[unroll]] for (uint k = 0u; k < 5u; k++) w[k] = (o & 4u) != 0u ? t[k + 1u] : t[k];
}

// Bytes 2..5 of the pair (lo, hi).
uint funnel16(uint lo, uint hi) { return (lo >> 16) | (hi << 16); }

int sdot4(uint q0, uint q1, uint q2, uint q3, uvec4 x) {
    return SDOT(q0, x.x) + SDOT(q1, x.y) + SDOT(q2, x.z) + SDOT(q3, x.w);
}

// X chunk c (4 words) of token t. When a token's chunks are a multiple of 64 (cols % 1024
// == 0) the swizzle leaves t * XC alone (it only mixes bits 0-5), so every token's address
// is the first one's plus a constant (xblock likewise with XB, cols % 2048 == 0).
uvec4 xchunk(uint t, uint c) {
    uint i = 4u * (XC % 64u == 0u ? t * XC + swz(c) : swz(t * XC + c));
    return uvec4(xq[i], xq[i + 1u], xq[i + 2u], xq[i + 3u]);
}

#if defined(DQ_Q4_0) || defined(DQ_Q8_0)
// Block u: d (f16) then 16 bytes of nibble pairs (Q4_0: byte i = elements i, i + 16) or
// 32 int8 (Q8_0), at byte rb + BB2 * u (even). X: block u, chunks 2u and 2u + 1.
#if defined(DQ_Q4_0)
const uint BB2 = 18u;
struct wraw_t { uvec4 a, b; }; // the 32-byte window holding the block (18 bytes at o <= 14)
#else
const uint BB2 = 34u;
struct wraw_t { uvec4 a, b, c; }; // the 48-byte window (34 bytes at o <= 14)
#endif
struct wdec_t { uint q[8]; float d; };
struct xin_t { uvec4 xa, xb; float dx, c; }; // c: (Q4_0) 8 Σq_x, the offset of the nibbles

wraw_t unit_fetch(uint rb, uint u) {
    uint c = (rb + BB2 * u) >> 4;
#if defined(DQ_Q4_0)
    return wraw_t(wchunk(c), wchunk(c + 1u));
#else
    return wraw_t(wchunk(c), wchunk(c + 1u), wchunk(c + 2u));
#endif
}

wdec_t unit_decode(wraw_t r, uint rb, uint u) {
    uint o = (rb + BB2 * u) & 15u;
    bool h = (o & 2u) != 0u; // d in the high half of its word, quant words aligned
    wdec_t d;
#if defined(DQ_Q4_0)
    uint w[5];
    win5(r.a, r.b, o, w);
    [[unroll]] for (uint k = 0u; k < 4u; k++) {
        uint qw = h ? w[k + 1u] : funnel16(w[k], w[k + 1u]);
        d.q[k] = qw & 0x0F0F0F0Fu;             // elements 4k..4k+3
        d.q[4u + k] = (qw >> 4) & 0x0F0F0F0Fu; // elements 16+4k..
    }
#else
    uint v[12] = uint[12](r.a.x, r.a.y, r.a.z, r.a.w, r.b.x, r.b.y, r.b.z, r.b.w, r.c.x, r.c.y,
                          r.c.z, r.c.w);
    uint t[10], w[9];
    [[unroll]] for (uint k = 0u; k < 10u; k++) t[k] = (o & 8u) != 0u ? v[k + 2u] : v[k];
    [[unroll]] for (uint k = 0u; k < 9u; k++) w[k] = (o & 4u) != 0u ? t[k + 1u] : t[k];
    [[unroll]] for (uint k = 0u; k < 8u; k++) d.q[k] = h ? w[k + 1u] : funnel16(w[k], w[k + 1u]);
#endif
    d.d = unpackHalf2x16(h ? w[0] >> 16 : w[0]).x;
    return d;
}

xin_t unit_x(uint t, uint u) {
    vec4 s = xblock(t, u);
#if defined(DQ_Q4_0)
    float c = 8.0 * s.y;
#else
    float c = 0.0;
#endif
    return xin_t(xchunk(t, 2u * u), xchunk(t, 2u * u + 1u), s.x, c);
}

float unit_dot(wdec_t w, xin_t x) {
    int s = sdot4(w.q[0], w.q[1], w.q[2], w.q[3], x.xa) +
            sdot4(w.q[4], w.q[5], w.q[6], w.q[7], x.xb);
    return (w.d * x.dx) * (float(s) - x.c);
}

#elif defined(DQ_Q4_K)
// Super-block u/8 (144 bytes, 16-byte aligned when the row start is): 0: d, dmin; 4: 12
// bytes of 6-bit scales and mins; 16: qs. Part j = u % 8 = 2c + h takes qs bytes
// 32c + 16h .. +15 (one 16-byte chunk): low nibbles = elements 16h.. of sub-block 2c, high
// nibbles = elements 16h.. of sub-block 2c + 1. X: blocks 8(u/8) + 2c and + 1, half h.
struct wraw_t { uvec4 hdr, qs; };
struct wdec_t { uint q[8]; float a0, a1, m0, m1; }; // d·scale and dmin·min per sub-block
struct xin_t { uvec4 xa, xb; float dx0, dx1, p0, p1; }; // p: dx·Σq_x of the half

// 16 bytes at byte p (a multiple of 16 with VEC_LOADS, else of 4; inside the binding).
uvec4 wload16(uint p) {
    if (VEC_LOADS != 0u) return wq4[p >> 4];
    uint w = p >> 2;
    return uvec4(wq[w], wq[w + 1u], wq[w + 2u], wq[w + 3u]);
}

wraw_t unit_fetch(uint rb, uint u) {
    uint bb = rb + 144u * (u >> 3);
    return wraw_t(wload16(bb), wload16(bb + 16u + 16u * (u & 7u)));
}

wdec_t unit_decode(wraw_t r, uint rb, uint u) {
    uint c = (u & 7u) >> 1;
    // bytes of sub-blocks 2c, 2c + 1 in the low 16 bits (scale byte j & 3 of each word)
    uint sh = 16u * (c & 1u);
    uint a = r.hdr.y >> sh, b = r.hdr.z >> sh, e = r.hdr.w >> sh;
    bool upper = c >= 2u; // sub-blocks 4..7: 4 low bits in bytes 8..11, 2 high in 0..7
    uint scp = upper ? (e & 0x0F0Fu) | ((a >> 2) & 0x3030u) : a & 0x3F3Fu;
    uint mnp = upper ? ((e >> 4) & 0x0F0Fu) | ((b >> 2) & 0x3030u) : b & 0x3F3Fu;
    vec2 dm = unpackHalf2x16(r.hdr.x);
    wdec_t d;
    d.a0 = dm.x * float(scp & 0xFFu);
    d.a1 = dm.x * float(scp >> 8);
    d.m0 = dm.y * float(mnp & 0xFFu);
    d.m1 = dm.y * float(mnp >> 8);
    uint qs[4] = uint[4](r.qs.x, r.qs.y, r.qs.z, r.qs.w);
    [[unroll]] for (uint k = 0u; k < 4u; k++) {
        d.q[k] = qs[k] & 0x0F0F0F0Fu;
        d.q[4u + k] = (qs[k] >> 4) & 0x0F0F0F0Fu;
    }
    return d;
}

xin_t unit_x(uint t, uint u) {
    uint h = u & 1u, xb = 8u * (u >> 3) + 2u * ((u & 7u) >> 1);
    vec4 s0 = xblock(t, xb), s1 = xblock(t, xb + 1u);
    return xin_t(xchunk(t, 2u * xb + h), xchunk(t, 2u * xb + 2u + h), s0.x, s1.x,
                 s0.x * (h != 0u ? s0.w : s0.z), s1.x * (h != 0u ? s1.w : s1.z));
}

float unit_dot(wdec_t w, xin_t x) {
    int s0 = sdot4(w.q[0], w.q[1], w.q[2], w.q[3], x.xa);
    int s1 = sdot4(w.q[4], w.q[5], w.q[6], w.q[7], x.xb);
    return (w.a0 * x.dx0) * float(s0) - w.m0 * x.p0 + (w.a1 * x.dx1) * float(s1) - w.m1 * x.p1;
}

#elif defined(DQ_Q6_K)
// Super-block u/8 (210 bytes, even offset): 0: ql[128]; 128: qh[64]; 192: int8 scales[16];
// 208: d. Element 128hh + 32k + l (l < 32) is (nibble k >= 2 of ql[64hh + 32(k & 1) + l])
// | (bits 2k.. of qh[32hh + l]) << 4, minus 32. Part j = u % 8 = 4hh + 2kl + half takes
// ql bytes 16j.. (16 bytes: k = kl from the low nibbles, k = kl + 2 from the high ones) and
// qh bytes 32hh + 16half .., i.e. l = 16half .. +15 of k = kl and kl + 2: two whole groups
// of 16 with their own scales (8hh + 2kl + half and + 4). X: blocks 8(u/8) + 4hh + kl and
// + 2, half `half`. The quants are made signed (q - 32) in place, so no Σq_x term.
struct wraw_t { uvec4 l0, l1, h0, h1; uint s0, s1, dw; }; // ql and qh windows, scale words, d
struct wdec_t { uint q[8]; float a0, a1; };                // d·scale of the two groups
struct xin_t { uvec4 xa, xb; float dx0, dx1; };

wraw_t unit_fetch(uint rb, uint u) {
    uint bb = rb + 210u * (u >> 3), j = u & 7u;
    uint cl = (bb + 16u * j) >> 4;
    uint ch = (bb + 128u + 32u * (j >> 2) + 16u * (j & 1u)) >> 4;
    uint ps = bb + 192u + 8u * (j >> 2) + (j & 3u); // scale byte of the low group
    return wraw_t(wchunk(cl), wchunk(cl + 1u), wchunk(ch), wchunk(ch + 1u), wq[ps >> 2],
                  wq[(ps + 4u) >> 2], wq[(bb + 208u) >> 2]);
}

// 16 bytes at the even byte o (<= 14) of the window (a, b).
void run4(uvec4 a, uvec4 b, uint o, out uint r[4]) {
    uint w[5];
    win5(a, b, o, w);
    [[unroll]] for (uint k = 0u; k < 4u; k++)
        r[k] = (o & 2u) != 0u ? funnel16(w[k], w[k + 1u]) : w[k];
}

// Four 6-bit values (0..63) -> the int8 values - 32: flip bit 5, sign-extend it (x + 0xC0
// where bit 5 is set: bytes stay < 256, no carries).
uint q6_signed(uint q) {
    uint x = q ^ 0x20202020u;
    return x + (x & 0x20202020u) * 6u;
}

wdec_t unit_decode(wraw_t r, uint rb, uint u) {
    uint bb = rb + 210u * (u >> 3), j = u & 7u;
    uint o = bb & 15u; // ql, qh and the scales are 16-byte multiples into the block
    uint ql[4], qh[4];
    run4(r.l0, r.l1, o, ql);
    run4(r.h0, r.h1, o, qh);
    uint kl2 = 2u * ((j & 3u) >> 1); // qh shift of the low group (2k)
    wdec_t d;
    [[unroll]] for (uint k = 0u; k < 4u; k++) {
        d.q[k] = q6_signed((ql[k] & 0x0F0F0F0Fu) | (((qh[k] >> kl2) & 0x03030303u) << 4));
        d.q[4u + k] =
            q6_signed(((ql[k] >> 4) & 0x0F0F0F0Fu) | (((qh[k] >> (kl2 + 4u)) & 0x03030303u) << 4));
    }
    uint ps = bb + 192u + 8u * (j >> 2) + (j & 3u);
    float dd = unpackHalf2x16((bb & 2u) != 0u ? r.dw >> 16 : r.dw).x;
    d.a0 = dd * float(bitfieldExtract(int(r.s0), int(8u * (ps & 3u)), 8));
    d.a1 = dd * float(bitfieldExtract(int(r.s1), int(8u * (ps & 3u)), 8));
    return d;
}

xin_t unit_x(uint t, uint u) {
    uint j = u & 7u, hf = j & 1u;
    uint xb = 8u * (u >> 3) + 4u * (j >> 2) + ((j & 3u) >> 1);
    return xin_t(xchunk(t, 2u * xb + hf), xchunk(t, 2u * xb + 4u + hf), xblock(t, xb).x,
                 xblock(t, xb + 2u).x);
}

float unit_dot(wdec_t w, xin_t x) {
    int s0 = sdot4(w.q[0], w.q[1], w.q[2], w.q[3], x.xa);
    int s1 = sdot4(w.q[4], w.q[5], w.q[6], w.q[7], x.xb);
    return (w.a0 * x.dx0) * float(s0) + (w.a1 * x.dx1) * float(s1);
}
#endif

// ================================================================ loop 1: weight units
// (the first version, kept for the A/B; DP4A_LOOP = 1)
// A "unit" is the work of one lane for one row: v1_unit_load(row byte, u) loads its weights,
// v1_unit_dot(unit, u, t) returns their dot product with token t. V1_UNITS(nb) units per row.

#if defined(DQ_Q4_0) || defined(DQ_Q8_0)
// Unit u: blocks 2u and 2u + 1 (the last unit of a row of an odd block count holds one).
#if defined(DQ_Q4_0)
const uint V1_BB = 18u; // block bytes
#else
const uint V1_BB = 34u;
#endif
const uint V1_QW = (V1_BB - 2u) / 4u; // quant words per block
#define V1_UNITS(nb) (((nb) + 1u) / 2u)

struct v1_unit_t {
    float d0, d1;
    uint q0[V1_QW], q1[V1_QW];
    bool has1;
};

// Scale and quant words of the block at byte bb of wq. `mis`: bb % 4 == 2 (the scale is
// the high half of word bb/4 and the quants are aligned words); else the scale is the low
// half and every quant word straddles two words. Reads words bb/4 .. bb/4 + V1_QW, all within
// [bb - 2, bb + V1_BB + 2), so within the binding (its end is the row end rounded up to 4).
void blk_words(uint bb, const bool mis, out float dw, out uint q[V1_QW]) {
    uint w0 = bb >> 2;
    uint v[V1_QW + 1u];
    for (uint j = 0u; j <= V1_QW; j++) v[j] = wq[w0 + j];
    if (mis) {
        dw = unpackHalf2x16(v[0] >> 16).x;
        for (uint j = 0u; j < V1_QW; j++) q[j] = v[j + 1u];
    } else {
        dw = unpackHalf2x16(v[0]).x;
        for (uint j = 0u; j < V1_QW; j++) q[j] = (v[j] >> 16) | (v[j + 1u] << 16);
    }
}

v1_unit_t v1_unit_load(uint row_byte, uint u, uint nb) {
    v1_unit_t w;
    uint bs = row_byte + 2u * u * V1_BB;
    w.has1 = 2u * u + 1u < nb;
    w.d1 = 0.0;
    // the pair's alignment is the row start's: uniform over the subgroup
    if ((bs & 2u) != 0u) {
        blk_words(bs, true, w.d0, w.q0);
        if (w.has1) blk_words(bs + V1_BB, false, w.d1, w.q1);
    } else {
        blk_words(bs, false, w.d0, w.q0);
        if (w.has1) blk_words(bs + V1_BB, true, w.d1, w.q1);
    }
    return w;
}

// One block's integer dot with X block b, scaled.
float blk_dot(uint q[V1_QW], float dw, uint t, uint b) {
    vec4 xb = xblock(t, b);
    int s = 0;
#if defined(DQ_Q4_0)
    for (uint j = 0u; j < 4u; j++) {
        s += SDOT(q[j] & 0x0F0F0F0Fu, xword(t, b, j));
        s += SDOT((q[j] >> 4) & 0x0F0F0F0Fu, xword(t, b, 4u + j));
    }
    return (dw * xb.x) * (float(s) - 8.0 * xb.y);
#else
    for (uint j = 0u; j < 8u; j++) s += SDOT(q[j], xword(t, b, j));
    return (dw * xb.x) * float(s);
#endif
}

float v1_unit_dot(v1_unit_t w, uint u, uint t) {
    float v = blk_dot(w.q0, w.d0, t, 2u * u);
    if (w.has1) v += blk_dot(w.q1, w.d1, t, 2u * u + 1u);
    return v;
}

#elif defined(DQ_Q4_K)
// 144-byte blocks: 0: d, 2: dmin (f16); 4: scales[12] (6-bit scales and mins of the 8
// sub-blocks of 32); 16: qs[128]: chunk c (elements 64c..64c+63) in qs[32c..32c+31], low
// nibbles first. Unit u: chunk u % 4 of block u / 4 (sub-blocks 2c, 2c+1 = X blocks).
// Blocks are 4-byte aligned (144 % 4 == 0, the row start is).
const uint V1_BB = 144u;
#define V1_UNITS(nb) ((nb) / 2u) // nb = X blocks of 32 per row

struct v1_unit_t {
    vec2 dm;     // d, dmin
    vec4 scm;    // scale and min of sub-block 2c, then of 2c + 1
    uint q[8];
};

// Scale and min of sub-block j from the 12 scale bytes (words s0, s1, s2).
vec2 q4k_scale_min(uint s0, uint s1, uint s2, uint j) {
    uint sh = 8u * (j & 3u);
    uint a = s0 >> sh, b = s1 >> sh, e = s2 >> sh;
    if (j < 4u) return vec2(float(a & 63u), float(b & 63u));
    return vec2(float((e & 15u) | (((a >> 6) & 3u) << 4)),
                float(((e >> 4) & 15u) | (((b >> 6) & 3u) << 4)));
}

v1_unit_t v1_unit_load(uint row_byte, uint u, uint nb) {
    v1_unit_t w;
    uint blk = u >> 2, c = u & 3u;
    uint w0 = (row_byte + blk * V1_BB) >> 2;
    uint h0 = wq[w0], s0 = wq[w0 + 1u], s1 = wq[w0 + 2u], s2 = wq[w0 + 3u];
    uint qw = w0 + 4u + 8u * c;
    for (uint k = 0u; k < 8u; k++) w.q[k] = wq[qw + k];
    w.dm = unpackHalf2x16(h0);
    w.scm = vec4(q4k_scale_min(s0, s1, s2, 2u * c), q4k_scale_min(s0, s1, s2, 2u * c + 1u));
    return w;
}

float v1_unit_dot(v1_unit_t w, uint u, uint t) {
    uint b0 = 2u * u; // X block of sub-block 2c: 8 * blk + 2c
    int s_lo = 0, s_hi = 0;
    for (uint k = 0u; k < 8u; k++) {
        s_lo += SDOT(w.q[k] & 0x0F0F0F0Fu, xword(t, b0, k));
        s_hi += SDOT((w.q[k] >> 4) & 0x0F0F0F0Fu, xword(t, b0 + 1u, k));
    }
    vec4 x0 = xblock(t, b0), x1 = xblock(t, b0 + 1u);
    return w.dm.x * (w.scm.x * x0.x * float(s_lo) + w.scm.z * x1.x * float(s_hi)) -
           w.dm.y * (w.scm.y * x0.x * x0.y + w.scm.w * x1.x * x1.y);
}

#elif defined(DQ_Q6_K)
// 210-byte blocks: 0: ql[128], 128: qh[64], 192: scales[16] (int8, one per 16 elements),
// 208: d (f16). Half h (elements 128h..128h+127) uses ql[64h..64h+63], qh[32h..32h+31]:
// for l < 32, element 128h + l + 32k (k = 0..3) is (nibble of ql[64h + l + 32(k & 1)],
// low for k < 2) | (bits 2k, 2k+1 of qh[32h + l]) << 4, minus 32.
// Unit u: block u / 4, half h = (u / 2) % 2, l in [16 lq, 16 lq + 16) with lq = u % 2: the
// 16-element groups 128h + 32k + 16lq (k = 0..3), scale 8h + 2k + lq each.
// Blocks alternate 2-byte alignment (210 % 4 == 2): words are joined by a funnel shift
// whose amount (0 or 16) is per block; every run read ends before the block's last word.
const uint V1_BB = 210u;
#define V1_UNITS(nb) ((nb) / 2u)

struct v1_unit_t {
    float d;
    vec4 sc;     // scales of the groups k = 0..3
    uint ql[8];  // ql[64h + 16lq ..] (4 words), then ql[64h + 32 + 16lq ..] (4 words)
    uint qh[4];
};

// Word at byte a (even) of wq: a funnel of two words, shift (a & 2) * 8.
uint q6k_word(uint a) {
    uint i = a >> 2, sh = (a & 2u) * 8u;
    return (wq[i] >> sh) | ((wq[i + 1u] << 16) << (16u - sh));
}

v1_unit_t v1_unit_load(uint row_byte, uint u, uint nb) {
    v1_unit_t w;
    uint bb = row_byte + (u >> 2) * V1_BB;
    uint h = (u >> 1) & 1u, lq = u & 1u;
    uint qa = bb + 64u * h + 16u * lq;
    for (uint k = 0u; k < 4u; k++) {
        w.ql[k] = q6k_word(qa + 4u * k);
        w.ql[4u + k] = q6k_word(qa + 32u + 4u * k);
        w.qh[k] = q6k_word(bb + 128u + 32u * h + 16u * lq + 4u * k);
    }
    uint s0 = q6k_word(bb + 192u + 8u * h), s1 = q6k_word(bb + 196u + 8u * h);
    // scale bytes 2k + lq of the 8 at 192 + 8h: bytes lq, 2 + lq of s0 and of s1
    uint sh = 8u * lq;
    w.sc = vec4(float(bitfieldExtract(int(s0), int(sh), 8)),
                float(bitfieldExtract(int(s0), int(sh + 16u), 8)),
                float(bitfieldExtract(int(s1), int(sh), 8)),
                float(bitfieldExtract(int(s1), int(sh + 16u), 8)));
    uint dw = wq[(bb + 208u) >> 2];
    w.d = unpackHalf2x16((bb & 2u) != 0u ? dw >> 16 : dw).x;
    return w;
}

float v1_unit_dot(v1_unit_t w, uint u, uint t) {
    uint h = (u >> 1) & 1u, lq = u & 1u;
    uint b0 = 8u * (u >> 2) + 4u * h; // X block of group k: b0 + k, words 4lq..4lq+3
    float acc = 0.0;
    for (uint k = 0u; k < 4u; k++) {
        int s = 0;
        for (uint i = 0u; i < 4u; i++) {
            uint lo = (w.ql[4u * (k & 1u) + i] >> (4u * (k >> 1))) & 0x0F0F0F0Fu;
            uint hi = ((w.qh[i] >> (2u * k)) & 0x03030303u) << 4;
            s += SDOT(lo | hi, xword(t, b0 + k, 4u * lq + i)); // 0..63: valid signed bytes
        }
        vec4 xb = xblock(t, b0 + k);
        acc += w.sc[k] * xb.x * (float(s) - 32.0 * (lq == 0u ? xb.z : xb.w));
    }
    return w.d * acc;
}
#endif

// ---------------------------------------------------------------- main

const uint NUM_ACC = NUM_ROWS * NUM_COLS;
const uint NUM_RAW = NUM_ROWS * UNITS; // units per lane in flight

// NUM_ACC rounded up to a power of two, and its log2 (NUM_ACC <= 8 rows x 8 tokens).
const uint NUM_ACC_P2 = NUM_ACC <= 1u    ? 1u
                        : NUM_ACC <= 2u  ? 2u
                        : NUM_ACC <= 4u  ? 4u
                        : NUM_ACC <= 8u  ? 8u
                        : NUM_ACC <= 16u ? 16u
                        : NUM_ACC <= 32u ? 32u
                                         : 64u;
const uint LOG2_ACC_P2 = NUM_ACC_P2 == 1u    ? 0u
                         : NUM_ACC_P2 == 2u  ? 1u
                         : NUM_ACC_P2 == 4u  ? 2u
                         : NUM_ACC_P2 == 8u  ? 3u
                         : NUM_ACC_P2 == 16u ? 4u
                         : NUM_ACC_P2 == 32u ? 5u
                                             : 6u;

// Sum s of accumulator idx (row-major: r * NUM_COLS + t) through the epilogue.
void store_one(uint row0, uint idx, float s) {
    uint r = idx / NUM_COLS, t = idx % NUM_COLS;
    if (NORM_X != 0u) { // RMSNorm prologue's 1/rms (quantize_x); selects, no dynamic index
        float nr = 1.0;
        [[unroll]] for (uint i = 0u; i < NUM_COLS; i++) nr = i == t ? xnorm_r[i] : nr;
        s *= nr;
    }
    if (row0 + r < pc.rows) {
        if (HAS_BIAS != 0u) s += bias[pc.bias_offset + row0 + r];
        uint yi = pc.y_offset + t * pc.y_stride + row0 + r;
        y[yi] = ACCUMULATE != 0u ? y[yi] + s : s;
    }
}

// Reduces acc over the subgroup and writes the rows row0 + r < pc.rows. Subgroup-uniform
// control flow. scatter (loop 2): a reduce-scatter, when NUM_ACC_P2 <= the subgroup size:
// stage k swaps half of the remaining values with the lane at distance sgs >> (k + 1)
// (lanes with that bit set keep the upper half), so after log2(NUM_ACC_P2) stages lane l
// holds a partial sum of value l / (sgs / NUM_ACC_P2), finished by a butterfly over the
// remaining lane bits; then one store per value, all lanes at once. NUM_ACC_P2 - 1 +
// log2(sgs / NUM_ACC_P2) shuffles instead of 5 per value (8 tokens x 2 rows: 16 vs 80).
// Otherwise subgroupAdd per value, lane 0 storing.
void store_sums(uint row0, float acc[NUM_ACC], bool scatter) {
    uint sgs = gl_SubgroupSize, lane = gl_SubgroupInvocationID;
    if (scatter && NUM_ACC_P2 <= sgs) {
        float v[NUM_ACC_P2];
        [[unroll]] for (uint i = 0u; i < NUM_ACC_P2; i++) v[i] = i < NUM_ACC ? acc[i] : 0.0;
        uint d = sgs;
        [[unroll]] for (uint k = 0u; k < LOG2_ACC_P2; k++) {
            uint h = NUM_ACC_P2 >> (k + 1u);
            d >>= 1;
            bool upper = (lane & d) != 0u;
            [[unroll]] for (uint i = 0u; i < h; i++) {
                float keep = upper ? v[i + h] : v[i];
                float send = upper ? v[i] : v[i + h];
                v[i] = keep + subgroupShuffleXor(send, d);
            }
        }
        for (d >>= 1; d >= 1u; d >>= 1) v[0] += subgroupShuffleXor(v[0], d);
        uint span = sgs / NUM_ACC_P2; // lanes holding the same value
        if (lane % span == 0u && lane / span < NUM_ACC) store_one(row0, lane / span, v[0]);
    } else {
        [[unroll]] for (uint i = 0u; i < NUM_ACC; i++) {
            float s = subgroupAdd(acc[i]);
            if (lane == 0u) store_one(row0, i, s);
        }
    }
}

// Loop 2. Rows are taken in blocks of NUM_ROWS by subgroups, not workgroups: subgroup
// sg = wg * gl_NumSubgroups + gl_SubgroupID takes blocks sg, sg + all subgroups, ..., so
// the work per SM evens out whatever the workgroup count (workgroups only share the
// quantized X). A subgroup's work is the flat sequence of (block, step s < n_steps) pairs,
// so the next step's loads are in flight while the current one computes, across blocks
// too. Per step: decode the loaded words of the NUM_ROWS x UNITS units (waits for them),
// issue the next step's loads into the same registers (unconditionally: past the last
// block the rows clamp to the last row), then per token read X once and dot it with every
// row's decoded unit.
void fetch_step(uint blk, uint s, uint n_units, out wraw_t w[NUM_RAW]) {
    [[unroll]] for (uint r = 0u; r < NUM_ROWS; r++) {
        uint rb = pc.skew + min(blk * NUM_ROWS + r, pc.rows - 1u) * pc.row_bytes;
        [[unroll]] for (uint k = 0u; k < UNITS; k++) {
            uint u = (s * UNITS + k) * gl_SubgroupSize + gl_SubgroupInvocationID;
            w[r * UNITS + k] = unit_fetch(rb, min(u, n_units - 1u)); // in bounds; unused
        }
    }
}

void main_v2() {
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint num_wg = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
    uint n_units = pc.cols / 32u;
    uint n_blocks = (pc.rows + NUM_ROWS - 1u) / NUM_ROWS;
    if (wg * gl_NumSubgroups >= n_blocks) return; // whole workgroup: skips no barrier
    uint sg = wg * gl_NumSubgroups + gl_SubgroupID, sg_stride = num_wg * gl_NumSubgroups;
    uint step_units = UNITS * gl_SubgroupSize;
    uint n_steps = (n_units + step_units - 1u) / step_units;
    uint n_it = sg < n_blocks ? ((n_blocks - 1u - sg) / sg_stride + 1u) * n_steps : 0u;

    wraw_t raw[NUM_RAW];
    fetch_step(sg, 0u, n_units, raw); // overlaps the quantization of X
    quantize_x(gl_LocalInvocationID.x);
    barrier();

    float acc[NUM_ACC];
    [[unroll]] for (uint i = 0u; i < NUM_ACC; i++) acc[i] = 0.0;
    uint blk = sg, s = 0u;
    for (uint it = 0u; it < n_it; it++) {
        uint row0 = blk * NUM_ROWS;
        wdec_t dec[NUM_RAW];
        [[unroll]] for (uint r = 0u; r < NUM_ROWS; r++) {
            uint rb = pc.skew + min(row0 + r, pc.rows - 1u) * pc.row_bytes;
            [[unroll]] for (uint k = 0u; k < UNITS; k++) {
                uint u = (s * UNITS + k) * gl_SubgroupSize + gl_SubgroupInvocationID;
                dec[r * UNITS + k] = unit_decode(raw[r * UNITS + k], rb, min(u, n_units - 1u));
            }
        }
        uint bn = blk, sn = s + 1u;
        if (sn == n_steps) {
            sn = 0u;
            bn += sg_stride;
        }
        fetch_step(bn, sn, n_units, raw);
        [[unroll]] for (uint k = 0u; k < UNITS; k++) {
            uint u = (s * UNITS + k) * gl_SubgroupSize + gl_SubgroupInvocationID;
            if (u < n_units) {
                [[unroll]] for (uint t = 0u; t < NUM_COLS; t++) {
                    xin_t x = unit_x(t, u);
                    [[unroll]] for (uint r = 0u; r < NUM_ROWS; r++)
                        acc[r * NUM_COLS + t] += unit_dot(dec[r * UNITS + k], x);
                }
            }
        }
        if (sn == 0u) { // the block's last step
            store_sums(row0, acc, true);
            [[unroll]] for (uint i = 0u; i < NUM_ACC; i++) acc[i] = 0.0;
        }
        blk = bn;
        s = sn;
    }
}

// Loop 1 (the first version, kept for the A/B: DP4A_LOOP = 1).
void v1_load_units(uint row0, uint u, uint nb, out v1_unit_t w[NUM_ROWS]) {
    for (uint r = 0u; r < NUM_ROWS; r++) {
        uint row = min(row0 + r, pc.rows - 1u);
        w[r] = v1_unit_load(pc.skew + row * pc.row_bytes, u, nb);
    }
}

void main_v1() {
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint num_wg = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
    uint lane = gl_SubgroupInvocationID, sgs = gl_SubgroupSize;
    uint nb = pc.cols / 32u;
    uint n_units = V1_UNITS(nb);
    uint rows_per_group = gl_NumSubgroups * NUM_ROWS;

    // The loop condition depends on the workgroup only, so the barrier is in uniform
    // control flow. Registers hold two units per row: the one being computed and the next
    // one, whose loads are in flight meanwhile (the first group's first loads overlap the
    // quantization of X).
    for (uint g = wg; g * rows_per_group < pc.rows; g += num_wg) {
        uint row0 = g * rows_per_group + gl_SubgroupID * NUM_ROWS;
        bool has_rows = row0 < pc.rows; // uniform in the subgroup
        v1_unit_t cur[NUM_ROWS];
        if (has_rows && lane < n_units) v1_load_units(row0, lane, nb, cur);
        if (g == wg) {
            quantize_x(gl_LocalInvocationID.x);
            barrier();
        }
        if (!has_rows) continue;

        float acc[NUM_ACC];
        for (uint i = 0u; i < NUM_ACC; i++) acc[i] = 0.0;

        for (uint u = lane; u < n_units; u += sgs) {
            v1_unit_t nxt[NUM_ROWS];
            if (u + sgs < n_units) v1_load_units(row0, u + sgs, nb, nxt);
            for (uint r = 0u; r < NUM_ROWS; r++)
                for (uint t = 0u; t < NUM_COLS; t++)
                    acc[r * NUM_COLS + t] += v1_unit_dot(cur[r], u, t);
            for (uint r = 0u; r < NUM_ROWS; r++) cur[r] = nxt[r];
        }
        store_sums(row0, acc, false);
    }
}

void main() {
    if (DP4A_LOOP == 1u)
        main_v1();
    else
        main_v2();
}
