// matvec.comp: Y = X·Wᵀ for 1 to 8 tokens (decode and small batches).
//
// W: `rows` rows of `cols` elements of one ggml type (dequant.glsl), bound from a
// byte offset at or below row 0 (pc.skew = bytes from the binding start to row 0).
// X: f32, element (t, c) at x_offset + t*x_stride + c (vec4 reads: x_offset, x_stride
// and cols are multiples of 4).
// Y: f32, element (t, r) at y_offset + t*y_stride + r. Bias (HAS_BIAS = 1): f32,
// bias[bias_offset + r] is added to every token's output r. ACCUMULATE = 1: the result
// is added to Y (y += W x + bias), each element read and written by one invocation.
//
// One workgroup computes NUM_ROWS consecutive rows for all NUM_COLS tokens in one
// pass over those rows' weights: each invocation walks groups of 8 elements
// (gi = tid, tid + WG_SIZE, ...), dequantizes them in registers for each row and
// multiplies with every token's X, so each weight byte is read once. The partial
// sums are reduced with subgroupAdd plus shared memory across subgroups
// (SUBGROUP_REDUCE, correct for any subgroup size >= SUBGROUP_MIN), or with a
// shared-memory tree (portable path; WG_SIZE must be a power of two).
// Workgroups are numbered x + y*num_x (2-D dispatch for more than 65535 groups).
// variant: matvec_f32 DQ_F32 SUBGROUP_REDUCE
// variant: matvec_f32_portable DQ_F32
// variant: matvec_f16 DQ_F16 SUBGROUP_REDUCE
// variant: matvec_f16_portable DQ_F16
// variant: matvec_q4_0 DQ_Q4_0 SUBGROUP_REDUCE
// variant: matvec_q4_0_portable DQ_Q4_0
// variant: matvec_q4_1 DQ_Q4_1 SUBGROUP_REDUCE
// variant: matvec_q4_1_portable DQ_Q4_1
// variant: matvec_q5_0 DQ_Q5_0 SUBGROUP_REDUCE
// variant: matvec_q5_0_portable DQ_Q5_0
// variant: matvec_q5_1 DQ_Q5_1 SUBGROUP_REDUCE
// variant: matvec_q5_1_portable DQ_Q5_1
// variant: matvec_q8_0 DQ_Q8_0 SUBGROUP_REDUCE
// variant: matvec_q8_0_portable DQ_Q8_0
// variant: matvec_q2_k DQ_Q2_K SUBGROUP_REDUCE
// variant: matvec_q2_k_portable DQ_Q2_K
// variant: matvec_q3_k DQ_Q3_K SUBGROUP_REDUCE
// variant: matvec_q3_k_portable DQ_Q3_K
// variant: matvec_q4_k DQ_Q4_K SUBGROUP_REDUCE
// variant: matvec_q4_k_portable DQ_Q4_K
// variant: matvec_q5_k DQ_Q5_K SUBGROUP_REDUCE
// variant: matvec_q5_k_portable DQ_Q5_K
// variant: matvec_q6_k DQ_Q6_K SUBGROUP_REDUCE
// variant: matvec_q6_k_portable DQ_Q6_K
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef SUBGROUP_REDUCE
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG_SIZE = 64;
layout(constant_id = 1) const uint NUM_ROWS = 2;     // rows per workgroup
layout(constant_id = 2) const uint NUM_COLS = 1;     // tokens (1..8)
layout(constant_id = 3) const uint SUBGROUP_MIN = 8; // smallest subgroup size the driver may use
layout(constant_id = 4) const uint HAS_BIAS = 0;
layout(constant_id = 5) const uint ACCUMULATE = 0; // 1: y += result (residual joins)

layout(std430, binding = 0) readonly buffer Weights { uint wq[]; };
layout(std430, binding = 1) readonly buffer Activations { vec4 x4[]; };
layout(std430, binding = 2) buffer Outputs { float y[]; }; // read too with ACCUMULATE
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
    uint n_tokens;    // unused here (NUM_COLS); shared layout with matmul.comp
    uint x_offset;    // X float of (token 0, column 0); multiple of 4
} pc;

#include "dequant.glsl"

const uint NUM_ACC = NUM_ROWS * NUM_COLS;

#ifdef SUBGROUP_REDUCE
shared float partial[NUM_ACC * (WG_SIZE / SUBGROUP_MIN)];
#else
shared float partial[NUM_ACC * WG_SIZE];
#endif

void main() {
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint row0 = wg * NUM_ROWS;
    if (row0 >= pc.rows) return; // uniform for the whole workgroup
    uint tid = gl_LocalInvocationID.x;
    uint n_groups = pc.cols / 8u;
    uint x_stride4 = pc.x_stride / 4u, x_base4 = pc.x_offset / 4u;

    float acc[NUM_ACC];
    for (uint i = 0u; i < NUM_ACC; i++) acc[i] = 0.0;

    uint row_start[NUM_ROWS];
    for (uint r = 0u; r < NUM_ROWS; r++)
        // rows past the end repeat the last row (in bounds) and are not written
        row_start[r] = pc.skew + min(row0 + r, pc.rows - 1u) * pc.row_bytes;

    for (uint gi = tid; gi < n_groups; gi += WG_SIZE) {
        uint block_off = (gi / DQ_GROUPS) * DQ_BLOCK_BYTES;
        uint g = gi % DQ_GROUPS;
        vec4 xv[2 * NUM_COLS];
        for (uint t = 0u; t < NUM_COLS; t++) {
            xv[2u * t] = x4[x_base4 + t * x_stride4 + 2u * gi];
            xv[2u * t + 1u] = x4[x_base4 + t * x_stride4 + 2u * gi + 1u];
        }
        for (uint r = 0u; r < NUM_ROWS; r++) {
            vec4 lo, hi;
            dq_group(row_start[r] + block_off, g, lo, hi);
            for (uint t = 0u; t < NUM_COLS; t++)
                acc[r * NUM_COLS + t] += dot(lo, xv[2u * t]) + dot(hi, xv[2u * t + 1u]);
        }
    }

#ifdef SUBGROUP_REDUCE
    const uint max_subgroups = WG_SIZE / SUBGROUP_MIN;
    for (uint i = 0u; i < NUM_ACC; i++) {
        float s = subgroupAdd(acc[i]);
        if (subgroupElect()) partial[i * max_subgroups + gl_SubgroupID] = s;
    }
    barrier();
    for (uint i = tid; i < NUM_ACC; i += WG_SIZE) {
        float s = 0.0;
        for (uint k = 0u; k < gl_NumSubgroups; k++) s += partial[i * max_subgroups + k];
        uint r = i / NUM_COLS, t = i % NUM_COLS;
        if (row0 + r < pc.rows) {
            if (HAS_BIAS != 0u) s += bias[pc.bias_offset + row0 + r];
            uint yi = pc.y_offset + t * pc.y_stride + row0 + r;
            y[yi] = ACCUMULATE != 0u ? y[yi] + s : s;
        }
    }
#else
    for (uint i = 0u; i < NUM_ACC; i++) partial[i * WG_SIZE + tid] = acc[i];
    barrier();
    for (uint stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride)
            for (uint i = 0u; i < NUM_ACC; i++)
                partial[i * WG_SIZE + tid] += partial[i * WG_SIZE + tid + stride];
        barrier();
    }
    for (uint i = tid; i < NUM_ACC; i += WG_SIZE) {
        uint r = i / NUM_COLS, t = i % NUM_COLS;
        if (row0 + r < pc.rows) {
            float s = partial[i * WG_SIZE];
            if (HAS_BIAS != 0u) s += bias[pc.bias_offset + row0 + r];
            uint yi = pc.y_offset + t * pc.y_stride + row0 + r;
            y[yi] = ACCUMULATE != 0u ? y[yi] + s : s;
        }
    }
#endif
}
