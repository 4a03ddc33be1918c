// matvec_fast.comp: Y = X·Wᵀ for 1 to 8 tokens, built for memory bandwidth (decode).
//
// Same operation, operands, push-constant meaning and ACCUMULATE epilogue as
// matvec.comp, plus pc.chunk_blocks. Needs subgroup arithmetic (the launcher falls back to matvec.comp
// otherwise). Design (docs/kernels-matmul.md, "matvec_fast"):
//   - each subgroup owns NUM_ROWS rows at a time (x is read once for all of them) and
//     reduces them itself with subgroupAdd: no shared-memory tree, no workgroup barrier;
//   - the weights are read as 16-byte uvec4 loads, consecutive lanes reading consecutive
//     16 bytes of the row (fully coalesced whatever the block size or row alignment),
//     LOADS per lane per row in flight, staged in the subgroup's own shared-memory slice;
//     the next chunk's loads are issued before the current chunk is computed;
//   - lanes then dequantize groups of 8 elements from shared memory (gi = lane, lane +
//     subgroup size, ...) and multiply them with X (f32, vec4 reads through the cache);
//   - 4- and 8-bit quants become exact floats by OR-ing them into the mantissa of a
//     float with a fixed exponent and subtracting that float's bias (one logic op and one
//     add per element, no int-to-float conversion, which runs at a quarter of the FMA rate
//     on NVIDIA GPUs); the block scale multiplies the 8-element dot product once.
// Chunks: the row is processed in chunks of pc.chunk_blocks blocks; the launcher picks it
// so that a chunk's 16-byte-aligned window (<= its bytes + 30) fits LOADS * subgroup size
// uvec4 for the smallest subgroup size the driver may use. The weight binding starts at a
// 16-byte-aligned offset and extends to the last row's end rounded up to 16 bytes.
// Rows: workgroup w owns rows [w*ROWS_PER_WG, +ROWS_PER_WG); its subgroups take NUM_ROWS
// of them at a time (correct for any number of subgroups). Rows past the end repeat the
// last row (in bounds) and are not written. Workgroups are numbered x + y*num_x.
// Invariants: WG_SIZE is a multiple of the subgroup size (full subgroups), so the shared
// slices (LOADS * subgroup size uvec4 per row) of all subgroups fit STAGE_WORDS.
// variant: matvec_fast_f32 DQ_F32
// variant: matvec_fast_f16 DQ_F16
// variant: matvec_fast_q4_0 DQ_Q4_0
// variant: matvec_fast_q4_1 DQ_Q4_1
// variant: matvec_fast_q5_0 DQ_Q5_0
// variant: matvec_fast_q5_1 DQ_Q5_1
// variant: matvec_fast_q8_0 DQ_Q8_0
// variant: matvec_fast_q2_k DQ_Q2_K
// variant: matvec_fast_q3_k DQ_Q3_K
// variant: matvec_fast_q4_k DQ_Q4_K
// variant: matvec_fast_q5_k DQ_Q5_K
// variant: matvec_fast_q6_k DQ_Q6_K
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG_SIZE = 128;
layout(constant_id = 1) const uint NUM_ROWS = 2;    // rows a subgroup computes together
layout(constant_id = 2) const uint NUM_COLS = 1;    // tokens (1..8)
layout(constant_id = 3) const uint LOADS = 4;       // uvec4 loads per lane per row and chunk
layout(constant_id = 4) const uint HAS_BIAS = 0;
layout(constant_id = 5) const uint ROWS_PER_WG = 8; // rows per workgroup
layout(constant_id = 6) const uint ACCUMULATE = 0; // 1: y += result (residual joins)

layout(std430, binding = 0) readonly buffer Weights { uvec4 wq4[]; };
layout(std430, binding = 1) readonly buffer Activations { vec4 x4[]; };
layout(std430, binding = 2) buffer Outputs { float y[]; }; // read too with ACCUMULATE
layout(std430, binding = 3) readonly buffer Biases { float bias[]; };

layout(push_constant) uniform Push {
    uint rows;         // rows in this range
    uint cols;         // elements per row
    uint row_bytes;    // bytes per row
    uint skew;         // byte of row 0 in wq4 (any even value)
    uint x_stride;     // floats between tokens in X
    uint y_stride;     // floats between tokens in Y
    uint y_offset;     // Y element of (token 0, row 0)
    uint bias_offset;  // bias element of row 0
    uint chunk_blocks; // blocks per chunk (see above)
    uint x_offset;     // X float of (token 0, column 0); multiple of 4
} pc;

const uint STAGE_WORDS = NUM_ROWS * LOADS * WG_SIZE * 4u;
shared uint stage[STAGE_WORDS];

#define DQ_W(i) stage[i]
#include "dequant.glsl"

// ---------------------------------------------------------------- exact small ints as floats

// The low nibble of each byte of w, minus `off`, exact. Bytes 0 and 1 are masked in
// place into floats whose mantissa unit sits at bit 0 (2^23) or bit 8 (2^15); bytes 2
// and 3 the same after one shift.
vec4 fv_nib4(uint w, float off) {
    uint h = w >> 16;
    return vec4(uintBitsToFloat((w & 0xFu) | 0x4B000000u) - (8388608.0 + off),
                uintBitsToFloat((w & 0xF00u) | 0x47000000u) - (32768.0 + off),
                uintBitsToFloat((h & 0xFu) | 0x4B000000u) - (8388608.0 + off),
                uintBitsToFloat((h & 0xF00u) | 0x47000000u) - (32768.0 + off));
}

// The four unsigned bytes of w, minus `off`, exact.
vec4 fv_ubyte4(uint w, float off) {
    uint h = w >> 16;
    return vec4(uintBitsToFloat((w & 0xFFu) | 0x4B000000u) - (8388608.0 + off),
                uintBitsToFloat((w & 0xFF00u) | 0x47000000u) - (32768.0 + off),
                uintBitsToFloat((h & 0xFFu) | 0x4B000000u) - (8388608.0 + off),
                uintBitsToFloat((h & 0xFF00u) | 0x47000000u) - (32768.0 + off));
}

// ---------------------------------------------------------------- per type
// fv_group(bb, g, lo, hi, sc[, mn]): elements 8g..8g+7 of the block at byte bb of the
// stage are sc * (lo, hi) (- mn where FV_HAS_MIN).

#if defined(DQ_Q4_0)
void fv_group(uint bb, uint g, out vec4 lo, out vec4 hi, out float sc) {
    sc = dq_half(bb);
    uint q = bb + 2u + 8u * (g & 1u);
    uint shift = 4u * (g >> 1);
    lo = fv_nib4(dq_word2(q) >> shift, 8.0);
    hi = fv_nib4(dq_word2(q + 4u) >> shift, 8.0);
}

#elif defined(DQ_Q5_0)
// Bits 0..3 of b moved to bit 4 of bytes 0..3 (the product's terms never overlap).
uint fv_spread4(uint b) { return ((b * 0x00204081u) & 0x01010101u) << 4; }
void fv_group(uint bb, uint g, out vec4 lo, out vec4 hi, out float sc) {
    sc = dq_half(bb);
    uint qh = dq_word2(bb + 2u) >> (8u * g);
    uint q = bb + 6u + 8u * (g & 1u);
    uint shift = 4u * (g >> 1);
    lo = fv_ubyte4(((dq_word2(q) >> shift) & 0x0F0F0F0Fu) | fv_spread4(qh & 15u), 16.0);
    hi = fv_ubyte4(((dq_word2(q + 4u) >> shift) & 0x0F0F0F0Fu) | fv_spread4((qh >> 4) & 15u),
                   16.0);
}

#elif defined(DQ_Q8_0)
void fv_group(uint bb, uint g, out vec4 lo, out vec4 hi, out float sc) {
    sc = dq_half(bb);
    uint q = bb + 2u + 8u * g;
    // int8 -> uint8 + 128 by flipping the sign bits
    lo = fv_ubyte4(dq_word2(q) ^ 0x80808080u, 128.0);
    hi = fv_ubyte4(dq_word2(q + 4u) ^ 0x80808080u, 128.0);
}

#elif defined(DQ_Q4_K)
#define FV_HAS_MIN
void fv_group(uint bb, uint g, out vec4 lo, out vec4 hi, out float sc, out float mn) {
    uint e0 = 8u * g;
    uint j = e0 / 32u;
    vec2 dm = unpackHalf2x16(dq_word(bb));
    uint s = bb + 4u;
    uint scl, mnl;
    if (j < 4u) {
        scl = dq_u8(s + j) & 63u;
        mnl = dq_u8(s + j + 4u) & 63u;
    } else {
        uint b8 = dq_u8(s + j + 4u);
        scl = (b8 & 15u) | ((dq_u8(s + j - 4u) >> 6) << 4);
        mnl = (b8 >> 4) | ((dq_u8(s + j) >> 6) << 4);
    }
    sc = dm.x * float(scl);
    mn = dm.y * float(mnl);
    uint c = e0 / 64u, t = e0 % 64u;
    uint q = bb + 16u + 32u * c + t % 32u;
    uint shift = t < 32u ? 0u : 4u;
    lo = fv_nib4(dq_word(q) >> shift, 0.0);
    hi = fv_nib4(dq_word(q + 4u) >> shift, 0.0);
}

#elif defined(DQ_Q6_K)
void fv_group(uint bb, uint g, out vec4 lo, out vec4 hi, out float sc) {
    uint e0 = 8u * g;
    uint h = e0 / 128u, quarter = (e0 % 128u) / 32u, l = e0 % 32u;
    sc = dq_half(bb + 208u) * float(dq_i8(bb + 192u + e0 / 16u));
    uint ql = bb + 64u * h + l + 32u * (quarter & 1u);
    uint lshift = quarter >= 2u ? 4u : 0u;
    uint qh = bb + 128u + 32u * h + l, hshift = 2u * quarter;
    uint q0 = ((dq_word2(ql) >> lshift) & 0x0F0F0F0Fu) |
              (((dq_word2(qh) >> hshift) & 0x03030303u) << 4);
    uint q1 = ((dq_word2(ql + 4u) >> lshift) & 0x0F0F0F0Fu) |
              (((dq_word2(qh + 4u) >> hshift) & 0x03030303u) << 4);
    lo = fv_ubyte4(q0, 32.0);
    hi = fv_ubyte4(q1, 32.0);
}

#else
// Other types: dequant.glsl's functions on the staged bytes.
void fv_group(uint bb, uint g, out vec4 lo, out vec4 hi, out float sc) {
    dq_group(bb, g, lo, hi);
    sc = 1.0;
}
#endif

// ---------------------------------------------------------------- main

const uint NUM_ACC = NUM_ROWS * NUM_COLS;

uint row_start[NUM_ROWS];     // byte of each row's block 0 in wq4
uvec4 pre[NUM_ROWS * LOADS]; // the next chunk's loads, in flight

// Issues the uvec4 loads of the chunk of nb blocks from block blk0 of each row.
void load_chunk(uint blk0, uint nb, uint lane, uint sgs) {
    for (uint r = 0u; r < NUM_ROWS; r++) {
        uint cs = row_start[r] + blk0 * DQ_BLOCK_BYTES;
        uint w0 = cs >> 4, w1 = (cs + nb * DQ_BLOCK_BYTES + 15u) >> 4;
        for (uint k = 0u; k < LOADS; k++) {
            uint i = w0 + lane + k * sgs;
            pre[r * LOADS + k] = i < w1 ? wq4[i] : uvec4(0u);
        }
    }
}

void main() {
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint lane = gl_SubgroupInvocationID, sgs = gl_SubgroupSize;
    uint slice = gl_SubgroupID * NUM_ROWS * LOADS * sgs * 4u; // first word of this subgroup's slice
    uint n_blocks = pc.cols / DQ_BLOCK_ELEMS;
    uint x_stride4 = pc.x_stride / 4u, x_base4 = pc.x_offset / 4u;

    for (uint rs = gl_SubgroupID * NUM_ROWS; rs < ROWS_PER_WG; rs += gl_NumSubgroups * NUM_ROWS) {
        uint row0 = wg * ROWS_PER_WG + rs;
        if (row0 >= pc.rows) break; // uniform in the subgroup

        for (uint r = 0u; r < NUM_ROWS; r++)
            row_start[r] = pc.skew + min(row0 + r, pc.rows - 1u) * pc.row_bytes;

        float acc[NUM_ACC];
        for (uint i = 0u; i < NUM_ACC; i++) acc[i] = 0.0;

        load_chunk(0u, min(pc.chunk_blocks, n_blocks), lane, sgs);

        for (uint blk0 = 0u; blk0 < n_blocks; blk0 += pc.chunk_blocks) {
            uint nb = min(pc.chunk_blocks, n_blocks - blk0);
            // the previous chunk's reads of the stage are done before it is overwritten
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint i = 0u; i < NUM_ROWS * LOADS; i++) {
                uint w = slice + 4u * ((i / LOADS) * LOADS * sgs + lane + (i % LOADS) * sgs);
                stage[w] = pre[i].x;
                stage[w + 1u] = pre[i].y;
                stage[w + 2u] = pre[i].z;
                stage[w + 3u] = pre[i].w;
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            uint next = blk0 + pc.chunk_blocks;
            if (next < n_blocks) // in flight while this chunk is computed
                load_chunk(next, min(pc.chunk_blocks, n_blocks - next), lane, sgs);

            // byte of the chunk's first block in each row's stage slice
            uint first[NUM_ROWS];
            for (uint r = 0u; r < NUM_ROWS; r++)
                first[r] = 4u * (slice + r * LOADS * sgs * 4u) +
                           ((row_start[r] + blk0 * DQ_BLOCK_BYTES) & 15u);

            uint n_groups = nb * DQ_GROUPS;
            for (uint gi = lane; gi < n_groups; gi += sgs) {
                uint blk = gi / DQ_GROUPS, g = gi % DQ_GROUPS;
                uint col4 = x_base4 + ((blk0 + blk) * DQ_BLOCK_ELEMS + 8u * g) / 4u;
                vec4 xl[NUM_COLS], xh[NUM_COLS];
                for (uint t = 0u; t < NUM_COLS; t++) {
                    xl[t] = x4[col4 + t * x_stride4];
                    xh[t] = x4[col4 + t * x_stride4 + 1u];
                }
#ifdef FV_HAS_MIN
                float sx[NUM_COLS];
                for (uint t = 0u; t < NUM_COLS; t++)
                    sx[t] = dot(xl[t] + xh[t], vec4(1.0));
#endif
                for (uint r = 0u; r < NUM_ROWS; r++) {
                    vec4 lo, hi;
                    float sc;
                    uint bb = first[r] + blk * DQ_BLOCK_BYTES;
#ifdef FV_HAS_MIN
                    float mn;
                    fv_group(bb, g, lo, hi, sc, mn);
                    for (uint t = 0u; t < NUM_COLS; t++)
                        acc[r * NUM_COLS + t] +=
                            sc * (dot(lo, xl[t]) + dot(hi, xh[t])) - mn * sx[t];
#else
                    fv_group(bb, g, lo, hi, sc);
                    for (uint t = 0u; t < NUM_COLS; t++)
                        acc[r * NUM_COLS + t] += sc * (dot(lo, xl[t]) + dot(hi, xh[t]));
#endif
                }
            }
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
