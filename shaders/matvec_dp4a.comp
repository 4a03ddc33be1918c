// matvec_dp4a.comp: Y = X·Wᵀ for 1 to 8 tokens with packed 8-bit integer dot products
// (SPV_KHR_integer_dot_product OpSDot, "DP4A"), for Q4_0, Q8_0, Q4_K and Q6_K weights.
//
// Same operation, bindings, push-constant block and epilogues (bias, ACCUMULATE,
// y_offset/y_stride, x_offset/x_stride, skew) as matvec_fast.comp; pc.chunk_blocks is unused.
// Design (docs/perf-notes.md, "matvec_dp4a"):
//   - X is quantized per workgroup into shared memory, like Q8_1: for every block of 32
//     elements d = max|x|/127, q = roundEven(x/d) (int8, packed 4 per word), and the
//     block's integer sums Σq over 32 and over each half of 16 (exact floats). Each thread
//     quantizes whole blocks (NUM_COLS * cols/32 over WG_SIZE threads), then one barrier;
//   - workgroups are persistent over row groups: group g = wg, wg + num_wg, ... of
//     gl_NumSubgroups * NUM_ROWS rows, so the quantization is amortized over all the rows a
//     workgroup takes (the launcher picks the workgroup count);
//   - each subgroup owns NUM_ROWS rows of a group; lane l takes the "units" l, l + subgroup
//     size, ... of each row (per type below: 64 elements each), loads its weight words
//     straight from the weight buffer (32-bit loads) and dots them with X words from
//     shared memory: 8-bit quants are OpSDot operands as they are, 4- and 6-bit quants
//     after a mask (values 0..15 or 0..63 are valid signed bytes), the offset (8 or 32)
//     applied once per block through Σq_x; the float scales apply once per block of 32
//     (16 for Q6_K). Integer sums are exact;
//   - subgroupAdd reduces each row; no barrier in the main loop.
// Shared memory: NUM_COLS * (MAX_COLS + MAX_COLS/32 * 16) bytes, each array rounded up to
// 128 bytes (MAX_COLS = pc.cols, fixed by the launcher per pipeline). The weight binding starts at a 4-byte multiple and extends
// to the last row's end rounded up to 4 bytes: reads never go past it (see unit_load).
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
#extension GL_EXT_spirv_intrinsics : require

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

layout(std430, binding = 0) readonly buffer Weights { uint wq[]; };
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

void quantize_x(uint tid) {
    uint n = NUM_COLS * (pc.cols / 32u);
    uint nb = pc.cols / 32u;
    for (uint i = tid; i < n; i += WG_SIZE) {
        uint t = i / nb, b = i % nb;
        uint base4 = pc.x_offset / 4u + t * (pc.x_stride / 4u) + b * 8u;
        vec4 v[8];
        float amax = 0.0;
        for (uint k = 0u; k < 8u; k++) {
            v[k] = x4[base4 + k];
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
vec4 xblock(uint t, uint b) { return xds[swz(t * XB + b)]; }

// ---------------------------------------------------------------- weight units
// A "unit" is the work of one lane for one row: unit_load(row byte, u) loads its weights,
// unit_dot(unit, u, t) returns their dot product with token t. UNITS(nb) units per row.

#if defined(DQ_Q4_0) || defined(DQ_Q8_0)
// Unit u: blocks 2u and 2u + 1 (the last unit of a row of an odd block count holds one).
#if defined(DQ_Q4_0)
const uint BB = 18u; // block bytes
#else
const uint BB = 34u;
#endif
const uint QW = (BB - 2u) / 4u; // quant words per block
#define UNITS(nb) (((nb) + 1u) / 2u)

struct unit_t {
    float d0, d1;
    uint q0[QW], q1[QW];
    bool has1;
};

// Scale and quant words of the block at byte bb of wq. `mis`: bb % 4 == 2 (the scale is
// the high half of word bb/4 and the quants are aligned words); else the scale is the low
// half and every quant word straddles two words. Reads words bb/4 .. bb/4 + QW, all within
// [bb - 2, bb + BB + 2), so within the binding (its end is the row end rounded up to 4).
void blk_words(uint bb, const bool mis, out float dw, out uint q[QW]) {
    uint w0 = bb >> 2;
    uint v[QW + 1u];
    for (uint j = 0u; j <= QW; j++) v[j] = wq[w0 + j];
    if (mis) {
        dw = unpackHalf2x16(v[0] >> 16).x;
        for (uint j = 0u; j < QW; j++) q[j] = v[j + 1u];
    } else {
        dw = unpackHalf2x16(v[0]).x;
        for (uint j = 0u; j < QW; j++) q[j] = (v[j] >> 16) | (v[j + 1u] << 16);
    }
}

unit_t unit_load(uint row_byte, uint u, uint nb) {
    unit_t w;
    uint bs = row_byte + 2u * u * BB;
    w.has1 = 2u * u + 1u < nb;
    w.d1 = 0.0;
    // the pair's alignment is the row start's: uniform over the subgroup
    if ((bs & 2u) != 0u) {
        blk_words(bs, true, w.d0, w.q0);
        if (w.has1) blk_words(bs + BB, false, w.d1, w.q1);
    } else {
        blk_words(bs, false, w.d0, w.q0);
        if (w.has1) blk_words(bs + BB, true, w.d1, w.q1);
    }
    return w;
}

// One block's integer dot with X block b, scaled.
float blk_dot(uint q[QW], float dw, uint t, uint b) {
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

float unit_dot(unit_t w, uint u, uint t) {
    float v = blk_dot(w.q0, w.d0, t, 2u * u);
    if (w.has1) v += blk_dot(w.q1, w.d1, t, 2u * u + 1u);
    return v;
}

#elif defined(DQ_Q4_K)
// 144-byte blocks: 0: d, 2: dmin (f16); 4: scales[12] (6-bit scales and mins of the 8
// sub-blocks of 32); 16: qs[128]: chunk c (elements 64c..64c+63) in qs[32c..32c+31], low
// nibbles first. Unit u: chunk u % 4 of block u / 4 (sub-blocks 2c, 2c+1 = X blocks).
// Blocks are 4-byte aligned (144 % 4 == 0, the row start is).
const uint BB = 144u;
#define UNITS(nb) ((nb) / 2u) // nb = X blocks of 32 per row

struct unit_t {
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

unit_t unit_load(uint row_byte, uint u, uint nb) {
    unit_t w;
    uint blk = u >> 2, c = u & 3u;
    uint w0 = (row_byte + blk * BB) >> 2;
    uint h0 = wq[w0], s0 = wq[w0 + 1u], s1 = wq[w0 + 2u], s2 = wq[w0 + 3u];
    uint qw = w0 + 4u + 8u * c;
    for (uint k = 0u; k < 8u; k++) w.q[k] = wq[qw + k];
    w.dm = unpackHalf2x16(h0);
    w.scm = vec4(q4k_scale_min(s0, s1, s2, 2u * c), q4k_scale_min(s0, s1, s2, 2u * c + 1u));
    return w;
}

float unit_dot(unit_t w, uint u, uint t) {
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
const uint BB = 210u;
#define UNITS(nb) ((nb) / 2u)

struct unit_t {
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

unit_t unit_load(uint row_byte, uint u, uint nb) {
    unit_t w;
    uint bb = row_byte + (u >> 2) * BB;
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

float unit_dot(unit_t w, uint u, uint t) {
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

// Loads unit u of the NUM_ROWS rows from row0 (rows past the end repeat the last row).
void load_units(uint row0, uint u, uint nb, out unit_t w[NUM_ROWS]) {
    for (uint r = 0u; r < NUM_ROWS; r++) {
        uint row = min(row0 + r, pc.rows - 1u);
        w[r] = unit_load(pc.skew + row * pc.row_bytes, u, nb);
    }
}

void main() {
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint num_wg = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
    uint lane = gl_SubgroupInvocationID, sgs = gl_SubgroupSize;
    uint nb = pc.cols / 32u;
    uint n_units = UNITS(nb);
    uint rows_per_group = gl_NumSubgroups * NUM_ROWS;

    // The loop condition depends on the workgroup only, so the barrier is in uniform
    // control flow. Registers hold two units per row: the one being computed and the next
    // one, whose loads are in flight meanwhile (the first group's first loads overlap the
    // quantization of X).
    for (uint g = wg; g * rows_per_group < pc.rows; g += num_wg) {
        uint row0 = g * rows_per_group + gl_SubgroupID * NUM_ROWS;
        bool has_rows = row0 < pc.rows; // uniform in the subgroup
        unit_t cur[NUM_ROWS];
        if (has_rows && lane < n_units) load_units(row0, lane, nb, cur);
        if (g == wg) {
            quantize_x(gl_LocalInvocationID.x);
            barrier();
        }
        if (!has_rows) continue;

        float acc[NUM_ACC];
        for (uint i = 0u; i < NUM_ACC; i++) acc[i] = 0.0;

        for (uint u = lane; u < n_units; u += sgs) {
            unit_t nxt[NUM_ROWS];
            if (u + sgs < n_units) load_units(row0, u + sgs, nb, nxt);
            for (uint r = 0u; r < NUM_ROWS; r++)
                for (uint t = 0u; t < NUM_COLS; t++)
                    acc[r * NUM_COLS + t] += unit_dot(cur[r], u, t);
            for (uint r = 0u; r < NUM_ROWS; r++) cur[r] = nxt[r];
        }

        for (uint r = 0u; r < NUM_ROWS; r++)
            for (uint t = 0u; t < NUM_COLS; t++) {
                float s = subgroupAdd(acc[r * NUM_COLS + t]);
                if (lane == 0u && row0 + r < pc.rows) {
                    if (HAS_BIAS != 0u) s += bias[pc.bias_offset + row0 + r];
                    uint yi = pc.y_offset + t * pc.y_stride + row0 + r;
                    y[yi] = ACCUMULATE != 0u ? y[yi] + s : s;
                }
            }
    }
}
