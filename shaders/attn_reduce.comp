// attn_reduce.comp: merges the partitions attn_decode wrote for sequences whose context
// spans more than one partition: with partition i giving (m_i, l_i, acc_i) (acc unnormalized,
// relative to m_i) and M = max m_i,
//     out = sum_i exp(m_i - M) acc_i / sum_i exp(m_i - M) l_i.
// Workgroup (x = sequence, y = query head). Sequences with at most one partition were
// written by attn_decode directly and are skipped here. The partition count is recomputed
// from context_lens exactly as attn_decode computes it (same window and partition size).
//
// variant: attn_reduce
#version 450
#extension GL_GOOGLE_include_directive : require
#include "attention.glsl"

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Ctx { int context_lens[]; };
layout(std430, binding = 1) readonly buffer Scratch { float scratch[]; };
layout(std430, binding = 2) writeonly buffer Out { float out_rows[]; };

layout(push_constant) uniform Push {
    uint n_seqs;
    uint n_head;
    uint head_dim;
    uint partition_size;
    uint max_parts;
    uint window;
    uint ml_offset;
} pc;

shared float red_s[64];

// Workgroup max (is_max) or sum of one value per thread; every thread gets the result.
float reduce64(float v, bool is_max) {
    uint tid = gl_LocalInvocationID.x;
    red_s[tid] = v;
    barrier();
    for (uint half_n = 32u; half_n > 0u; half_n /= 2u) {
        if (tid < half_n)
            red_s[tid] = is_max ? max(red_s[tid], red_s[tid + half_n])
                                : red_s[tid] + red_s[tid + half_n];
        barrier();
    }
    float r = red_s[0];
    barrier(); // red_s is reused by the next reduction
    return r;
}

void main() {
    uint seq = gl_WorkGroupID.x, head = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
    int ctx_signed = context_lens[seq];
    uint ctx = ctx_signed > 0 ? uint(ctx_signed) : 0u;
    uint lo = (pc.window > 0u && ctx > pc.window) ? ctx - pc.window : 0u;
    uint n_parts = min((ctx - lo + pc.partition_size - 1u) / pc.partition_size, pc.max_parts);
    if (n_parts <= 1u) return; // workgroup-uniform
    uint row = seq * pc.n_head + head;
    uint ml = pc.ml_offset + row * pc.max_parts * 2u;
    // (m, l) of the partitions: threads take partitions, the workgroup reduces.
    float m_loc = ATTN_MASKED;
    for (uint i = tid; i < n_parts; i += 64u) m_loc = max(m_loc, scratch[ml + 2u * i]);
    float m_all = reduce64(m_loc, true);
    float l_loc = 0.0;
    for (uint i = tid; i < n_parts; i += 64u)
        l_loc += attn_prob(scratch[ml + 2u * i], m_all) * scratch[ml + 2u * i + 1u];
    float l_all = reduce64(l_loc, false);
    float inv_l = l_all > 0.0 ? 1.0 / l_all : 0.0;
    // Partitions in groups of 4 independent loads (memory parallelism for long contexts).
    uint acc0 = row * pc.max_parts * pc.head_dim;
    for (uint d = tid; d < pc.head_dim; d += 64u) {
        float o = 0.0;
        for (uint i = 0u; i < n_parts; i += 4u) {
            float part_sum = 0.0;
            for (uint k = 0u; k < 4u; k++) {
                uint j = min(i + k, n_parts - 1u);
                float w = i + k < n_parts ? attn_prob(scratch[ml + 2u * j], m_all) : 0.0;
                part_sum += w * scratch[acc0 + j * pc.head_dim + d];
            }
            o += part_sum;
        }
        out_rows[row * pc.head_dim + d] = o * inv_l;
    }
}
