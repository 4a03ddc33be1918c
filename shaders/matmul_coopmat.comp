// matmul_coopmat.comp: Y = X·Wᵀ with GL_NV_cooperative_matrix (tensor cores), one
// source for every tile shape: large tiles for prefill and narrow, K-split tiles for
// batched decode (9-64 tokens).
//
// Operands and push constants: exactly those of matmul.comp / matvec.comp (W rows of a
// ggml type from pc.skew, X f32 [n_tokens][x_stride] from pc.x_offset, Y element (t, r)
// at y_offset + t*y_stride + r, optional bias per row with HAS_BIAS).
//
// Shape (spec constants, chosen by engine/exec/k_matmul_coopmat.c):
//   a workgroup owns a BM x BN tile of Y (BM rows of W, BN tokens) and has
//   SG_M * SG_N * SG_K subgroups of 32. Subgroup (sm, sn, sk) owns rows
//   [sm*FM*16, +FM*16) and tokens [sn*FN*8, +FN*8) of the tile (FM x FN accumulators of
//   16x8, f32) and, of every K step of BK = SG_K*BKS columns, the BKS = 16*KSUB columns
//   [sk*BKS, +BKS). BM = SG_M*FM*16, BN = SG_N*FN*8.
//   SG_K = 1: the classic tile (prefill, e.g. 128x128 with 2x4 subgroups of 4x4
//   accumulators). SG_K > 1: K split inside the workgroup (narrow tiles for few tokens
//   still give every subgroup its own stream of weight loads); the SG_K partial sums are
//   added through shared memory at the end.
// K loop, double-buffered, branch-free: every invocation dequantizes its share of the
// next step's W tile (one 8-element group = one 16-byte chunk of fp16, dequant.glsl) and
// converts its share of the next X tile (8 floats = one 16-byte chunk) into registers,
// runs the tensor-core products of the current step from shared buffer s%2, then stores
// its chunks into buffer (s+1)%2 with one 16-byte store each: one barrier per step. The
// step body has no branches (the load past the last step reads clamped addresses and
// yields zeros), so the compiler can overlap the next step's global loads and
// dequantization with this step's matrix loads and products; every loop over fragments
// and chunks is [[unroll]] so the fragment arrays stay in registers; dequant.glsl is
// included with DQ_FLAT (no loads inside branches), F16
// weights are copied as they are. PREFETCH = 0 moves
// the next step's loads after the products instead (fewer live registers during the
// products; latency then hidden only by other workgroups on the SM), for measurements.
// Shared memory: uvec4 arrays (16 bytes = 8 halves; GL_NV_cooperative_matrix loads fp16
// matrices from uvec4 arrays with offsets and strides in uvec4 units, which also tells
// the driver that every row start is 16-byte aligned). A row of a tile is BK/8 chunks
// plus PAD chunks; with PAD = 1 and BK/8 even the row stride RS is odd in 16-byte units,
// so the 8 rows an 8x8 matrix load touches fall on 8 different 4-bank groups (no bank
// conflicts; PAD = 0 gives 4- or 8-way conflicts, kept as a knob to measure that).
// Size: 2*(BM+BN)*RS*16 + 512*subgroups bytes (the launcher keeps it within
// maxComputeSharedMemorySize; 45056 for 128x128 with BK 32).
// Edges: rows past `rows` and tokens past `n_tokens` are clamped to the last valid one
// (in-bounds loads that only feed outputs that are not written); columns past `cols`
// load as zero in both W and X. Y is written through a per-subgroup 16x8 staging
// fragment (subgroup barriers only), bounds-checked, bias added, 16 consecutive rows per
// token (64-byte runs).
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
// by VKLLM_MATMUL=emulate (tests; AUTO then picks it too, so engine tests run it).
// Split-K across workgroups (k_matmul_coopmat.c) runs this kernel once per K slice (cols = the
// slice, skew and x_offset moved to its start) and sums in split_k_reduce.comp.
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
#extension GL_EXT_control_flow_attributes : require
#ifndef CM_EMULATE
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
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

#define DQ_FLAT /* branch-free loads: overlapped with the products */
#include "dequant.glsl"

layout(local_size_x_id = 7) in;
// The defaults (a 64x64 tile, 22 KiB of shared memory) fit every device; the launcher
// always sets all of these from the device's limits.
layout(constant_id = 0) const uint SG_M = 2; // subgroups along rows
layout(constant_id = 1) const uint SG_N = 2; // subgroups along tokens
layout(constant_id = 2) const uint SG_K = 1; // subgroups along K (split inside the step)
layout(constant_id = 3) const uint FM = 2;   // 16-row accumulators per subgroup
layout(constant_id = 4) const uint FN = 4;   // 8-token accumulators per subgroup
layout(constant_id = 5) const uint KSUB = 2; // 16-column products per K slice and step
layout(constant_id = 6) const uint HAS_BIAS = 0;
layout(constant_id = 7) const uint WG_SIZE = 128; // = SG_M * SG_N * SG_K * 32
layout(constant_id = 8) const uint PAD = 1;       // 16-byte chunks of padding per row
layout(constant_id = 9) const uint PREFETCH = 1;  // next tile loaded before/after products

#define CM_SCOPE 3 /* Subgroup */
const uint NSG = SG_M * SG_N * SG_K;
const uint BM = SG_M * FM * 16u;
const uint BN = SG_N * FN * 8u;
const uint BKS = KSUB * 16u;   // columns of a step per K slice
const uint BK = SG_K * BKS;    // columns per step
const uint CPR = BK / 8u;      // 16-byte chunks (8 halves) per tile row and step
const uint RS = CPR + PAD;     // shared row stride, uvec4
const uint WCH = BM * CPR;     // W chunks (8-element groups) per step
const uint XCH = BN * CPR;     // X chunks (8 floats) per step
const uint WPT = (WCH + WG_SIZE - 1u) / WG_SIZE; // per invocation
const uint XPT = (XCH + WG_SIZE - 1u) / WG_SIZE;

shared uvec4 ws[2u * BM * RS];  // [buf][m][chunk]: A (rows x k), row-major, fp16 pairs
shared uvec4 xs[2u * BN * RS];  // [buf][n][chunk]: B (k x tokens), column-major
shared float stage[NSG * 128u]; // per subgroup: one 16x8 fragment, column-major

// Fragment operations. ACC: 16x8 f32 accumulator; FRAG_A: 16x16 fp16 (rows x k) from
// ws; FRAG_B: 16x8 fp16 (k x tokens) from xs, stored [n][k] (column-major). Offsets and
// strides of ws/xs are in uvec4 units.
#ifndef CM_EMULATE
#define ACC fcoopmatNV<32, CM_SCOPE, 16, 8>
#define FRAG_A fcoopmatNV<16, CM_SCOPE, 16, 16>
#define FRAG_B fcoopmatNV<16, CM_SCOPE, 16, 8>
#define ACC_ZERO ACC(0.0)
#define LOAD_A(dst, off) coopMatLoadNV(dst, ws, off, RS, false)
#define LOAD_B(dst, off) coopMatLoadNV(dst, xs, off, RS, true)
#define MMA(a, b, c) coopMatMulAddNV(a, b, c)
#define STORE_ACC(src, off) coopMatStoreNV(src, stage, off, 16u, true)
#define LOAD_ACC(dst, off) coopMatLoadNV(dst, stage, off, 16u, true)
// the epilogue's staging slot is private to one subgroup
#define STAGE_SYNC()                                                                       \
    {                                                                                      \
        subgroupMemoryBarrierShared();                                                     \
        subgroupBarrier();                                                                 \
    }
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
// virtual subgroups span several real ones (lavapipe: 8 lanes)
#define STAGE_SYNC() barrier()
uint emu_lane() { return gl_LocalInvocationID.x % 32u; }
// Half h (< 16) of the row/column that starts at chunk u.
float emu_half(uvec4 v0, uvec4 v1, uint h) {
    uvec4 v = h < 8u ? v0 : v1;
    return unpackHalf2x16(v[(h % 8u) / 2u])[h & 1u];
}
vec4 emu_mma(uint a, uint b, vec4 c) {
    for (uint q = 0u; q < 4u; q++) {
        uint e = emu_lane() + 32u * q, m = e % 16u, n = e / 16u;
        uint ra = a + m * RS, rb = b + n * RS;
        float s = 0.0;
        for (uint k = 0u; k < 16u; k++)
            s += emu_half(ws[ra], ws[ra + 1u], k) * emu_half(xs[rb], xs[rb + 1u], k);
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

uvec4 pw[WPT]; // next W tile: chunk j of this invocation, 8 fp16
uvec4 px[XPT]; // next X tile

uvec4 pack8(vec4 lo, vec4 hi) {
    return uvec4(packHalf2x16(lo.xy), packHalf2x16(lo.zw), packHalf2x16(hi.xy),
                 packHalf2x16(hi.zw));
}

// Dequantizes/converts the tile of columns [k0, k0 + BK) into pw/px. Chunk i of W is
// group i % CPR of tile row i / CPR (CPR consecutive invocations read one row's run of
// bytes); chunk i of X is floats [8*(i % CPR), +8) of token i / CPR. Branch-free: rows,
// tokens and columns are clamped to valid ones, columns >= cols give zeros.
void load_tile(uint k0, uint m0, uint n0, uint tid) {
    uint n_groups = pc.cols / 8u;
    [[unroll]] for (uint j = 0u; j < WPT; j++) {
        uint i = tid + j * WG_SIZE;
        uint m = i / CPR, kg = i % CPR;
        uint row = min(m0 + m, pc.rows - 1u);
        uint gi = k0 / 8u + kg;
        uint gc = min(gi, n_groups - 1u);
        uint bb = pc.skew + row * pc.row_bytes + (gc / DQ_GROUPS) * DQ_BLOCK_BYTES;
#if defined(DQ_F16)
        uint wi = bb >> 2; /* already 8 halves: copied as they are */
        uvec4 h = uvec4(wq[wi], wq[wi + 1u], wq[wi + 2u], wq[wi + 3u]);
#else
        vec4 lo, hi;
        dq_group(bb, gc % DQ_GROUPS, lo, hi);
        uvec4 h = pack8(lo, hi);
#endif
        pw[j] = gi < n_groups ? h : uvec4(0u);
    }
    uint x_stride4 = pc.x_stride / 4u, x_base4 = pc.x_offset / 4u;
    [[unroll]] for (uint j = 0u; j < XPT; j++) {
        uint i = tid + j * WG_SIZE;
        uint n = i / CPR, kc = i % CPR;
        uint tok = min(n0 + n, pc.n_tokens - 1u);
        uint col = k0 + kc * 8u;
        uint at = x_base4 + tok * x_stride4 + min(col, pc.cols - 8u) / 4u;
        vec4 lo = x4[at], hi = x4[at + 1u];
        px[j] = col < pc.cols ? pack8(lo, hi) : uvec4(0u);
    }
}

// Stores pw/px into shared buffer `buf`: one 16-byte store per chunk.
void store_tile(uint buf, uint tid) {
    [[unroll]] for (uint j = 0u; j < WPT; j++) {
        uint i = tid + j * WG_SIZE;
        if (WCH % WG_SIZE == 0u || i < WCH) ws[(buf * BM + i / CPR) * RS + i % CPR] = pw[j];
    }
    [[unroll]] for (uint j = 0u; j < XPT; j++) {
        uint i = tid + j * WG_SIZE;
        if (XCH % WG_SIZE == 0u || i < XCH) xs[(buf * BN + i / CPR) * RS + i % CPR] = px[j];
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
    [[unroll]] for (uint f = 0u; f < FM * FN; f++) acc[f] = ACC_ZERO;

    // this subgroup's fragments in buffer 0, uvec4 units
    uint a_base = sm * FM * 16u * RS + sk * (BKS / 8u);
    uint b_base = sn * FN * 8u * RS + sk * (BKS / 8u);
    uint n_steps = (pc.cols + BK - 1u) / BK;
    load_tile(0u, m0, n0, tid);
    store_tile(0u, tid);
    barrier();
    for (uint s = 0u; s < n_steps; s++) {
        /* past the end: clamped loads, zeros, stored but never read */
        if (PREFETCH != 0u) load_tile((s + 1u) * BK, m0, n0, tid);
        uint buf = s & 1u;
        uint a0 = a_base + buf * BM * RS, b0 = b_base + buf * BN * RS;
        [[unroll]] for (uint kk = 0u; kk < KSUB; kk++) {
            FRAG_A a[FM];
            [[unroll]] for (uint fm = 0u; fm < FM; fm++)
                LOAD_A(a[fm], a0 + fm * 16u * RS + kk * 2u);
            [[unroll]] for (uint fn = 0u; fn < FN; fn++) {
                FRAG_B b;
                LOAD_B(b, b0 + fn * 8u * RS + kk * 2u);
                [[unroll]] for (uint fm = 0u; fm < FM; fm++)
                    acc[fm * FN + fn] = MMA(a[fm], b, acc[fm * FN + fn]);
            }
        }
        if (PREFETCH == 0u) load_tile((s + 1u) * BK, m0, n0, tid);
        store_tile(buf ^ 1u, tid);
        barrier();
    }

    // K slices: slices 1.. hand their partial sums to slice 0, one fragment at a time
    // (uniform loops: every subgroup reaches every barrier).
    uint slot = sg * 128u;
    if (SG_K > 1u) {
        [[unroll]] for (uint f = 0u; f < FM * FN; f++) {
            if (sk != 0u) STORE_ACC(acc[f], slot);
            barrier();
            if (sk == 0u) {
                [[unroll]] for (uint k = 1u; k < SG_K; k++) {
                    ACC part;
                    LOAD_ACC(part, (sg + k * SG_M * SG_N) * 128u);
                    acc[f] = acc[f] + part;
                }
            }
            barrier();
        }
    }

    // Epilogue: slice 0 writes each 16x8 fragment through its own staging slot.
    [[unroll]] for (uint fm = 0u; fm < FM; fm++)
        [[unroll]] for (uint fn = 0u; fn < FN; fn++) {
            if (sk == 0u) STORE_ACC(acc[fm * FN + fn], slot);
            STAGE_SYNC();
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
            STAGE_SYNC();
        }
}
