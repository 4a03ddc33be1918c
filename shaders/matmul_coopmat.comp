// matmul_coopmat.comp: Y = X·Wᵀ with GL_NV_cooperative_matrix (tensor cores), one
// source for every tile shape: large tiles for prefill and narrow, K-split tiles for
// batched decode (9-64 tokens).
//
// Operands and push constants: exactly those of matmul.comp / matvec.comp (W rows of a
// ggml type from pc.skew, X f32 [n_tokens][x_stride] from pc.x_offset, Y element (t, r)
// at y_offset + t*y_stride + r, optional bias per row with HAS_BIAS).
//
// Shape (spec constants, chosen by engine/exec/k_matmul.c):
//   a workgroup owns a BM x BN tile of Y (BM rows of W, BN tokens) and has
//   SG_M * SG_N * SG_K subgroups of 32. Subgroup (sm, sn, sk) owns rows
//   [sm*FM*16, +FM*16) and tokens [sn*FN*8, +FN*8) of the tile (FM x FN accumulators of
//   16x8, f32) and, of every K step of BK = SG_K*32 columns, the 32 columns
//   [sk*32, +32). BM = SG_M*FM*16, BN = SG_N*FN*8.
//   SG_K = 1: the classic tile (prefill, e.g. 128x128 with 2x4 subgroups of 4x4
//   accumulators). SG_K > 1: K split inside the workgroup (narrow tiles for few tokens
//   still give every subgroup its own stream of weight loads); the SG_K partial sums are
//   added through shared memory at the end.
// K loop, double-buffered: the whole workgroup dequantizes the W tile (BM x BK, groups of
// 8 elements through dequant.glsl) and converts the X tile (BN x BK) to fp16 into
// registers for step s+1, runs the tensor-core products of step s from shared buffer
// s%2, then stores the registers into buffer (s+1)%2: one barrier per step, global loads
// of the next step in flight during the products.
// Shared memory: W and X tiles fp16, rows of BK+8 halves (16-byte aligned rows for the
// matrix loads; the 8-half pad spreads consecutive rows over the banks), 2 buffers each,
// plus 512 bytes per subgroup for the epilogue: 2*(BM+BN)*(BK+8)*2 + 512*subgroups bytes
// (the launcher keeps it within maxComputeSharedMemorySize; 45056 for 128x128).
// Edges: rows past `rows` and tokens past `n_tokens` are clamped to the last valid one
// (in-bounds loads that only feed outputs that are not written); columns past `cols`
// load as zero in both W and X. Y is written through a per-subgroup 16x8 staging
// fragment, bounds-checked, bias added, 16 consecutive rows per token (64-byte runs).
// X is converted to fp16: activations beyond ±65504 would overflow (as in matmul.comp).
// Needs: NV cooperative matrix 16x8x16 fp16 -> f32, shaderFloat16, Vulkan memory model
// (glslang emits it for this extension), subgroup size 32. Dispatch: x = row tiles,
// y = token tiles.
// variant: matmul_cm_f32 DQ_F32
// variant: matmul_cm_f16 DQ_F16
// variant: matmul_cm_q4_0 DQ_Q4_0
// variant: matmul_cm_q4_1 DQ_Q4_1
// variant: matmul_cm_q5_0 DQ_Q5_0
// variant: matmul_cm_q5_1 DQ_Q5_1
// variant: matmul_cm_q8_0 DQ_Q8_0
// variant: matmul_cm_q2_k DQ_Q2_K
// variant: matmul_cm_q3_k DQ_Q3_K
// variant: matmul_cm_q4_k DQ_Q4_K
// variant: matmul_cm_q5_k DQ_Q5_K
// variant: matmul_cm_q6_k DQ_Q6_K
//
// CM_EMULATE: the same kernel with the cooperative-matrix operations emulated by plain
// shared-memory arithmetic (virtual 32-invocation subgroups = invocations tid/32, the
// fragment element e = lane + 32q, q < 4, at row e%16, column e/16), so that tile
// loading, double buffering, the K-slice reduction and the epilogue are tested on
// devices without cooperative matrices (lavapipe). Needs shaderFloat16 only. Selected
// by VKLLM_MATMUL=emulate (tests); never chosen by AUTO.
// variant: matmul_cm_emu_f32 DQ_F32 CM_EMULATE
// variant: matmul_cm_emu_f16 DQ_F16 CM_EMULATE
// variant: matmul_cm_emu_q4_0 DQ_Q4_0 CM_EMULATE
// variant: matmul_cm_emu_q4_1 DQ_Q4_1 CM_EMULATE
// variant: matmul_cm_emu_q5_0 DQ_Q5_0 CM_EMULATE
// variant: matmul_cm_emu_q5_1 DQ_Q5_1 CM_EMULATE
// variant: matmul_cm_emu_q8_0 DQ_Q8_0 CM_EMULATE
// variant: matmul_cm_emu_q2_k DQ_Q2_K CM_EMULATE
// variant: matmul_cm_emu_q3_k DQ_Q3_K CM_EMULATE
// variant: matmul_cm_emu_q4_k DQ_Q4_K CM_EMULATE
// variant: matmul_cm_emu_q5_k DQ_Q5_K CM_EMULATE
// variant: matmul_cm_emu_q6_k DQ_Q6_K CM_EMULATE
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#ifndef CM_EMULATE
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_shader_subgroup_basic : require
#endif

layout(std430, binding = 0) readonly buffer Weights { uint wq[]; };
layout(std430, binding = 1) readonly buffer Activations { vec4 x4[]; };
layout(std430, binding = 2) writeonly buffer Outputs { float y[]; };
layout(std430, binding = 3) readonly buffer Biases { float bias[]; };

layout(push_constant) uniform Push {
    uint rows;        // rows in this range
    uint cols;        // elements per row (multiple of 8)
    uint row_bytes;   // bytes per row
    uint skew;        // byte of row 0 in wq
    uint x_stride;    // floats between tokens in X
    uint y_stride;    // floats between tokens in Y
    uint y_offset;    // Y element of (token 0, row 0)
    uint bias_offset; // bias element of row 0
    uint n_tokens;
    uint x_offset;    // X float of (token 0, column 0); multiple of 4
} pc;

#include "dequant.glsl"

layout(local_size_x_id = 7) in;
// The defaults (a 64x64 tile, 22 KiB of shared memory) fit every device; the launcher
// always sets all of these from the device's limits.
layout(constant_id = 0) const uint SG_M = 2; // subgroups along rows
layout(constant_id = 1) const uint SG_N = 2; // subgroups along tokens
layout(constant_id = 2) const uint SG_K = 1; // subgroups along K (split inside the step)
layout(constant_id = 3) const uint FM = 2;   // 16-row accumulators per subgroup
layout(constant_id = 4) const uint FN = 4;   // 8-token accumulators per subgroup
layout(constant_id = 6) const uint HAS_BIAS = 0;
layout(constant_id = 7) const uint WG_SIZE = 128; // = SG_M * SG_N * SG_K * 32

#define CM_SCOPE 3 /* Subgroup */
const uint NSG = SG_M * SG_N * SG_K;
const uint BM = SG_M * FM * 16u;
const uint BN = SG_N * FN * 8u;
const uint BKS = 32u;          // columns of a step per K slice
const uint BK = SG_K * BKS;    // columns per step
const uint KS = BK + 8u;       // shared row stride, halves
const uint WGROUPS = BM * (BK / 8u);               // 8-element W groups per step
const uint XVECS = BN * (BK / 4u);                 // vec4 of X per step
const uint WPT = (WGROUPS + WG_SIZE - 1u) / WG_SIZE; // per invocation
const uint XPT = (XVECS + WG_SIZE - 1u) / WG_SIZE;

shared float16_t ws[2u * BM * KS]; // [buf][m][k]: A (rows x k), row-major
shared float16_t xs[2u * BN * KS]; // [buf][n][k]: B (k x tokens), column-major
shared float stage[NSG * 128u];    // per subgroup: one 16x8 fragment, column-major

// Fragment operations. ACC: 16x8 f32 accumulator; FRAG_A: 16x16 fp16 (rows x k) from
// ws; FRAG_B: 16x8 fp16 (k x tokens) from xs, stored [n][k] (column-major).
#ifndef CM_EMULATE
#define ACC fcoopmatNV<32, CM_SCOPE, 16, 8>
#define FRAG_A fcoopmatNV<16, CM_SCOPE, 16, 16>
#define FRAG_B fcoopmatNV<16, CM_SCOPE, 16, 8>
#define ACC_ZERO ACC(0.0)
#define LOAD_A(dst, off) coopMatLoadNV(dst, ws, off, KS, false)
#define LOAD_B(dst, off) coopMatLoadNV(dst, xs, off, KS, true)
#define MMA(a, b, c) coopMatMulAddNV(a, b, c)
#define STORE_ACC(src, off) coopMatStoreNV(src, stage, off, 16u, true)
#define LOAD_ACC(dst, off) coopMatLoadNV(dst, stage, off, 16u, true)
#else
#define ACC vec4
#define FRAG_A uint
#define FRAG_B uint
#define ACC_ZERO vec4(0.0)
#define LOAD_A(dst, off) dst = (off)
#define LOAD_B(dst, off) dst = (off)
#define MMA(a, b, c) emu_mma(a, b, c)
#define STORE_ACC(src, off) emu_store(src, off)
#define LOAD_ACC(dst, off) dst = emu_load(off)
uint emu_lane() { return gl_LocalInvocationID.x % 32u; }
vec4 emu_mma(uint a, uint b, vec4 c) {
    for (uint q = 0u; q < 4u; q++) {
        uint e = emu_lane() + 32u * q, m = e % 16u, n = e / 16u;
        float s = 0.0;
        for (uint k = 0u; k < 16u; k++) s += float(ws[a + m * KS + k]) * float(xs[b + n * KS + k]);
        c[q] += s;
    }
    return c;
}
void emu_store(vec4 v, uint off) {
    for (uint q = 0u; q < 4u; q++) stage[off + emu_lane() + 32u * q] = v[q];
}
vec4 emu_load(uint off) {
    vec4 v;
    for (uint q = 0u; q < 4u; q++) v[q] = stage[off + emu_lane() + 32u * q];
    return v;
}
#endif

f16vec4 pw[2u * WPT]; // next W tile: group j = pw[2j] (elements 0-3), pw[2j+1] (4-7)
f16vec4 px[XPT];      // next X tile

// Dequantizes/converts the tile of columns [k0, k0 + BK) into pw/px.
void load_tile(uint k0, uint m0, uint n0, uint tid) {
    uint n_groups = pc.cols / 8u;
    for (uint j = 0u; j < WPT; j++) {
        uint i = tid + j * WG_SIZE;
        uint m = i / (BK / 8u), kg = i % (BK / 8u);
        uint row = min(m0 + m, pc.rows - 1u);
        uint gi = k0 / 8u + kg;
        uint gc = min(gi, n_groups - 1u);
        vec4 lo, hi;
        dq_group(pc.skew + row * pc.row_bytes + (gc / DQ_GROUPS) * DQ_BLOCK_BYTES,
                 gc % DQ_GROUPS, lo, hi);
        bool ok = gi < n_groups && i < WGROUPS;
        pw[2u * j] = ok ? f16vec4(lo) : f16vec4(0.0);
        pw[2u * j + 1u] = ok ? f16vec4(hi) : f16vec4(0.0);
    }
    uint x_stride4 = pc.x_stride / 4u, x_base4 = pc.x_offset / 4u;
    for (uint j = 0u; j < XPT; j++) {
        uint i = tid + j * WG_SIZE;
        uint n = i / (BK / 4u), kv = i % (BK / 4u);
        uint tok = min(n0 + n, pc.n_tokens - 1u);
        uint col = k0 + kv * 4u;
        vec4 v = x4[x_base4 + tok * x_stride4 + min(col, pc.cols - 4u) / 4u];
        px[j] = (col < pc.cols && i < XVECS) ? f16vec4(v) : f16vec4(0.0);
    }
}

// Stores pw/px into shared buffer `buf`.
void store_tile(uint buf, uint tid) {
    for (uint j = 0u; j < WPT; j++) {
        uint i = tid + j * WG_SIZE;
        if (i < WGROUPS) {
            uint m = i / (BK / 8u), kg = i % (BK / 8u);
            uint base = (buf * BM + m) * KS + kg * 8u;
            for (uint e = 0u; e < 4u; e++) {
                ws[base + e] = pw[2u * j][e];
                ws[base + 4u + e] = pw[2u * j + 1u][e];
            }
        }
    }
    for (uint j = 0u; j < XPT; j++) {
        uint i = tid + j * WG_SIZE;
        if (i < XVECS) {
            uint n = i / (BK / 4u), kv = i % (BK / 4u);
            uint base = (buf * BN + n) * KS + kv * 4u;
            for (uint e = 0u; e < 4u; e++) xs[base + e] = px[j][e];
        }
    }
}

void main() {
    uint tid = gl_LocalInvocationID.x;
#ifndef CM_EMULATE
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
#else
    uint sg = tid / 32u, lane = tid % 32u;
#endif
    uint sm = sg % SG_M, sn = (sg / SG_M) % SG_N, sk = sg / (SG_M * SG_N);
    uint m0 = gl_WorkGroupID.x * BM, n0 = gl_WorkGroupID.y * BN;

    ACC acc[FM * FN];
    for (uint f = 0u; f < FM * FN; f++) acc[f] = ACC_ZERO;

    uint n_steps = (pc.cols + BK - 1u) / BK;
    load_tile(0u, m0, n0, tid);
    store_tile(0u, tid);
    barrier();
    for (uint s = 0u; s < n_steps; s++) {
        bool more = s + 1u < n_steps;
        if (more) load_tile((s + 1u) * BK, m0, n0, tid);
        uint buf = s & 1u;
        for (uint kk = 0u; kk < BKS; kk += 16u) {
            uint col = sk * BKS + kk;
            FRAG_A a[FM];
            for (uint fm = 0u; fm < FM; fm++)
                LOAD_A(a[fm], (buf * BM + (sm * FM + fm) * 16u) * KS + col);
            for (uint fn = 0u; fn < FN; fn++) {
                FRAG_B b;
                LOAD_B(b, (buf * BN + (sn * FN + fn) * 8u) * KS + col);
                for (uint fm = 0u; fm < FM; fm++)
                    acc[fm * FN + fn] = MMA(a[fm], b, acc[fm * FN + fn]);
            }
        }
        if (more) store_tile(buf ^ 1u, tid);
        barrier();
    }

    // K slices: slices 1.. hand their partial sums to slice 0, one fragment at a time
    // (uniform loops: every subgroup reaches every barrier).
    uint slot = sg * 128u;
    if (SG_K > 1u) {
        for (uint f = 0u; f < FM * FN; f++) {
            if (sk != 0u) STORE_ACC(acc[f], slot);
            barrier();
            if (sk == 0u) {
                for (uint k = 1u; k < SG_K; k++) {
                    ACC part;
                    LOAD_ACC(part, (sg + k * SG_M * SG_N) * 128u);
                    acc[f] = acc[f] + part;
                }
            }
            barrier();
        }
    }

    // Epilogue: slice 0 writes each 16x8 fragment through its staging slot.
    for (uint fm = 0u; fm < FM; fm++)
        for (uint fn = 0u; fn < FN; fn++) {
            if (sk == 0u) STORE_ACC(acc[fm * FN + fn], slot);
            barrier();
            if (sk == 0u) {
                uint r0 = m0 + (sm * FM + fm) * 16u, t0 = n0 + (sn * FN + fn) * 8u;
                for (uint e = lane; e < 128u; e += 32u) {
                    uint row = r0 + e % 16u, tok = t0 + e / 16u;
                    if (row < pc.rows && tok < pc.n_tokens) {
                        float v = stage[slot + e];
                        if (HAS_BIAS != 0u) v += bias[pc.bias_offset + row];
                        y[pc.y_offset + tok * pc.y_stride + row] = v;
                    }
                }
            }
            barrier();
        }
}
