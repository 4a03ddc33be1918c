// get_rows.comp: embedding gather, out[i][c] = dequant(W row ids[i])[c].
//
// W: rows of one ggml type (dequant.glsl) bound from a byte offset at or below the
// range's row 0 (pc.skew bytes in); the range covers global rows
// [row_base, row_base + rows). ids: int32 [n_ids]. out: f32, row i at
// i*out_stride (out_stride and cols multiples of 4).
// Each invocation writes one group of 8 elements of one output row, for ids that
// fall in this range; ids outside [0, total_rows) get zeros from the dispatch with
// write_invalid = 1 (the launcher sets it on exactly one range), so the kernel
// never reads out of bounds and every output element is written exactly once.
// Invocations are numbered over a 2-D grid of workgroups (x + y*num_x).
// variant: get_rows_f32 DQ_F32
// variant: get_rows_f16 DQ_F16
// variant: get_rows_q4_0 DQ_Q4_0
// variant: get_rows_q4_1 DQ_Q4_1
// variant: get_rows_q5_0 DQ_Q5_0
// variant: get_rows_q5_1 DQ_Q5_1
// variant: get_rows_q8_0 DQ_Q8_0
// variant: get_rows_q2_k DQ_Q2_K
// variant: get_rows_q3_k DQ_Q3_K
// variant: get_rows_q4_k DQ_Q4_K
// variant: get_rows_q5_k DQ_Q5_K
// variant: get_rows_q6_k DQ_Q6_K
#version 450
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG_SIZE = 64;

layout(std430, binding = 0) readonly buffer Weights { uint wq[]; };
layout(std430, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, binding = 2) writeonly buffer Outputs { vec4 out4[]; };

layout(push_constant) uniform Push {
    uint rows;          // rows in this range
    uint cols;          // elements per row (multiple of 8)
    uint row_bytes;
    uint skew;          // byte of the range's row 0 in wq
    uint row_base;      // global index of the range's row 0
    uint total_rows;    // rows of the whole weight
    uint n_ids;
    uint out_stride;    // floats between output rows
    uint write_invalid; // 1: this dispatch writes zeros for out-of-range ids
} pc;

#include "dequant.glsl"

void main() {
    uint n_groups = pc.cols / 8u;
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint lin = wg * WG_SIZE + gl_LocalInvocationID.x;
    uint i = lin / n_groups, gi = lin % n_groups;
    if (i >= pc.n_ids) return;
    int id = ids[i];
    uint out_at = (i * pc.out_stride) / 4u + 2u * gi;
    if (id < 0 || uint(id) >= pc.total_rows) {
        if (pc.write_invalid != 0u) {
            out4[out_at] = vec4(0.0);
            out4[out_at + 1u] = vec4(0.0);
        }
        return;
    }
    uint local = uint(id) - pc.row_base; // wraps to a huge value below the range
    if (local >= pc.rows) return;
    vec4 lo, hi;
    dq_group(pc.skew + local * pc.row_bytes + (gi / DQ_GROUPS) * DQ_BLOCK_BYTES, gi % DQ_GROUPS,
             lo, hi);
    out4[out_at] = lo;
    out4[out_at + 1u] = hi;
}
