// matmul.comp: Y = X·Wᵀ for many tokens (prefill), tiled in shared memory.
//
// Same operands and push constants as matvec.comp (read its header): W rows of a
// ggml type bound from pc.skew, X f32 [n_tokens][x_stride], Y element (t, r) at
// y_offset + t*y_stride + r, optional bias (HAS_BIAS) added per row.
//
// Portable path: a workgroup computes a BM (rows of W) x BN (tokens) tile of Y.
// Each step of BK columns dequantizes the W tile (BM x BK, groups of 8 elements,
// f32) and copies the X tile into shared memory, then every invocation accumulates
// TM x TN outputs (rows tm, tm + BM/TM, ...; tokens tn, tn + BN/TN, ...) in f32.
// Constraints (the launcher keeps them): WG_SIZE = (BM/TM)*(BN/TN), BK a multiple
// of 8, shared use (BM + BN)*BK*4 bytes <= the device limit.
// Rows past `rows`, tokens past `n_tokens` and columns past `cols` load as zero and
// are not written.
//
// COOPMAT (GL_NV_cooperative_matrix; needs shaderFloat16 and subgroup size 32):
// a 64x64 tile per workgroup of 4 subgroups, W and X tiles stored as fp16 in
// shared memory, 16x8x16 fp16 products accumulated in f32, each subgroup owning a
// 32x32 quarter (2x4 accumulators). The result goes through shared memory so the
// edges are bounds-checked and Y is written row-contiguously. Dispatch: x = row
// tiles, y = token tiles.
// variant: matmul_f32 DQ_F32
// variant: matmul_f16 DQ_F16
// variant: matmul_q4_0 DQ_Q4_0
// variant: matmul_q4_1 DQ_Q4_1
// variant: matmul_q5_0 DQ_Q5_0
// variant: matmul_q5_1 DQ_Q5_1
// variant: matmul_q8_0 DQ_Q8_0
// variant: matmul_q2_k DQ_Q2_K
// variant: matmul_q3_k DQ_Q3_K
// variant: matmul_q4_k DQ_Q4_K
// variant: matmul_q5_k DQ_Q5_K
// variant: matmul_q6_k DQ_Q6_K
// variant: matmul_coopmat_f32 DQ_F32 COOPMAT
// variant: matmul_coopmat_f16 DQ_F16 COOPMAT
// variant: matmul_coopmat_q4_0 DQ_Q4_0 COOPMAT
// variant: matmul_coopmat_q4_1 DQ_Q4_1 COOPMAT
// variant: matmul_coopmat_q5_0 DQ_Q5_0 COOPMAT
// variant: matmul_coopmat_q5_1 DQ_Q5_1 COOPMAT
// variant: matmul_coopmat_q8_0 DQ_Q8_0 COOPMAT
// variant: matmul_coopmat_q2_k DQ_Q2_K COOPMAT
// variant: matmul_coopmat_q3_k DQ_Q3_K COOPMAT
// variant: matmul_coopmat_q4_k DQ_Q4_K COOPMAT
// variant: matmul_coopmat_q5_k DQ_Q5_K COOPMAT
// variant: matmul_coopmat_q6_k DQ_Q6_K COOPMAT
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef COOPMAT
#extension GL_NV_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
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

#ifndef COOPMAT
// ---------------------------------------------------------------- portable path

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG_SIZE = 256;
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint BK = 32;
layout(constant_id = 4) const uint TM = 4;
layout(constant_id = 5) const uint TN = 4;
layout(constant_id = 6) const uint HAS_BIAS = 0;

shared float ws[BK * BM]; // ws[k * BM + m]
shared float xs[BK * BN]; // xs[k * BN + n]

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint m0 = gl_WorkGroupID.x * BM, n0 = gl_WorkGroupID.y * BN;
    uint tm = tid % (BM / TM), tn = tid / (BM / TM);
    uint n_groups = pc.cols / 8u;
    uint x_stride4 = pc.x_stride / 4u, x_base4 = pc.x_offset / 4u;

    float acc[TM * TN];
    for (uint i = 0u; i < TM * TN; i++) acc[i] = 0.0;

    for (uint k0 = 0u; k0 < pc.cols; k0 += BK) {
        for (uint i = tid; i < BM * (BK / 8u); i += WG_SIZE) {
            uint m = i / (BK / 8u), kg = i % (BK / 8u);
            uint row = m0 + m, gi = k0 / 8u + kg;
            vec4 lo = vec4(0.0), hi = vec4(0.0);
            if (row < pc.rows && gi < n_groups)
                dq_group(pc.skew + row * pc.row_bytes + (gi / DQ_GROUPS) * DQ_BLOCK_BYTES,
                         gi % DQ_GROUPS, lo, hi);
            uint k = kg * 8u;
            for (uint j = 0u; j < 4u; j++) {
                ws[(k + j) * BM + m] = lo[j];
                ws[(k + 4u + j) * BM + m] = hi[j];
            }
        }
        for (uint i = tid; i < BN * (BK / 4u); i += WG_SIZE) {
            uint n = i / (BK / 4u), kv = i % (BK / 4u);
            uint tok = n0 + n, col = k0 + kv * 4u;
            vec4 v = vec4(0.0);
            if (tok < pc.n_tokens && col < pc.cols)
                v = x4[x_base4 + tok * x_stride4 + col / 4u];
            for (uint j = 0u; j < 4u; j++) xs[(kv * 4u + j) * BN + n] = v[j];
        }
        barrier();
        for (uint k = 0u; k < BK; k++) {
            float a[TM], b[TN];
            for (uint i = 0u; i < TM; i++) a[i] = ws[k * BM + tm + i * (BM / TM)];
            for (uint j = 0u; j < TN; j++) b[j] = xs[k * BN + tn + j * (BN / TN)];
            for (uint i = 0u; i < TM; i++)
                for (uint j = 0u; j < TN; j++) acc[i * TN + j] += a[i] * b[j];
        }
        barrier();
    }

    for (uint j = 0u; j < TN; j++) {
        uint tok = n0 + tn + j * (BN / TN);
        if (tok >= pc.n_tokens) continue;
        for (uint i = 0u; i < TM; i++) {
            uint row = m0 + tm + i * (BM / TM);
            if (row >= pc.rows) continue;
            float s = acc[i * TN + j];
            if (HAS_BIAS != 0u) s += bias[pc.bias_offset + row];
            y[pc.y_offset + tok * pc.y_stride + row] = s;
        }
    }
}

#else
// ---------------------------------------------------------------- cooperative matrices

// Scope 3 = Subgroup. glslang emits the Vulkan memory model for this extension, so the
// device must enable vulkanMemoryModel (plus cooperativeMatrix and shaderFloat16).
#define CM_SCOPE 3
#define CM_BM 64u
#define CM_BN 64u
#define CM_BK 32u
#define CM_WG 128u
layout(local_size_x = 128) in;
layout(constant_id = 6) const uint HAS_BIAS = 0;

shared float16_t ws16[CM_BM * CM_BK]; // [m][k]: A (rows x k) row-major
shared float16_t xs16[CM_BN * CM_BK]; // [n][k]: B (k x tokens) column-major
shared float cs[CM_BM * CM_BN];       // [n][m]: C (rows x tokens) column-major

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint m0 = gl_WorkGroupID.x * CM_BM, n0 = gl_WorkGroupID.y * CM_BN;
    uint sm = gl_SubgroupID % 2u, sn = gl_SubgroupID / 2u; // this subgroup's 32x32 quarter
    uint n_groups = pc.cols / 8u;
    uint x_stride4 = pc.x_stride / 4u, x_base4 = pc.x_offset / 4u;

    fcoopmatNV<32, CM_SCOPE, 16, 8> acc[2][4];
    for (uint mi = 0u; mi < 2u; mi++)
        for (uint nj = 0u; nj < 4u; nj++) acc[mi][nj] = fcoopmatNV<32, CM_SCOPE, 16, 8>(0.0);

    for (uint k0 = 0u; k0 < pc.cols; k0 += CM_BK) {
        for (uint i = tid; i < CM_BM * (CM_BK / 8u); i += CM_WG) {
            uint m = i / (CM_BK / 8u), kg = i % (CM_BK / 8u);
            uint row = m0 + m, gi = k0 / 8u + kg;
            vec4 lo = vec4(0.0), hi = vec4(0.0);
            if (row < pc.rows && gi < n_groups)
                dq_group(pc.skew + row * pc.row_bytes + (gi / DQ_GROUPS) * DQ_BLOCK_BYTES,
                         gi % DQ_GROUPS, lo, hi);
            uint base = m * CM_BK + kg * 8u;
            for (uint j = 0u; j < 4u; j++) {
                ws16[base + j] = float16_t(lo[j]);
                ws16[base + 4u + j] = float16_t(hi[j]);
            }
        }
        for (uint i = tid; i < CM_BN * (CM_BK / 4u); i += CM_WG) {
            uint n = i / (CM_BK / 4u), kv = i % (CM_BK / 4u);
            uint tok = n0 + n, col = k0 + kv * 4u;
            vec4 v = vec4(0.0);
            if (tok < pc.n_tokens && col < pc.cols)
                v = x4[x_base4 + tok * x_stride4 + col / 4u];
            for (uint j = 0u; j < 4u; j++) xs16[n * CM_BK + kv * 4u + j] = float16_t(v[j]);
        }
        barrier();
        for (uint kk = 0u; kk < CM_BK; kk += 16u) {
            fcoopmatNV<16, CM_SCOPE, 16, 16> a[2];
            fcoopmatNV<16, CM_SCOPE, 16, 8> b[4];
            for (uint mi = 0u; mi < 2u; mi++)
                coopMatLoadNV(a[mi], ws16, (32u * sm + 16u * mi) * CM_BK + kk, CM_BK, false);
            for (uint nj = 0u; nj < 4u; nj++)
                coopMatLoadNV(b[nj], xs16, (32u * sn + 8u * nj) * CM_BK + kk, CM_BK, true);
            for (uint mi = 0u; mi < 2u; mi++)
                for (uint nj = 0u; nj < 4u; nj++)
                    acc[mi][nj] = coopMatMulAddNV(a[mi], b[nj], acc[mi][nj]);
        }
        barrier();
    }

    for (uint mi = 0u; mi < 2u; mi++)
        for (uint nj = 0u; nj < 4u; nj++)
            coopMatStoreNV(acc[mi][nj], cs, (32u * sn + 8u * nj) * CM_BM + 32u * sm + 16u * mi,
                           CM_BM, true);
    barrier();
    for (uint i = tid; i < CM_BM * CM_BN; i += CM_WG) {
        uint n = i / CM_BM, m = i % CM_BM;
        uint tok = n0 + n, row = m0 + m;
        if (tok < pc.n_tokens && row < pc.rows) {
            float s = cs[i];
            if (HAS_BIAS != 0u) s += bias[pc.bias_offset + row];
            y[pc.y_offset + tok * pc.y_stride + row] = s;
        }
    }
}
#endif
