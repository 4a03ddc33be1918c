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

void main() {
    uint seq = gl_WorkGroupID.x, head = gl_WorkGroupID.y;
    int ctx_signed = context_lens[seq];
    uint ctx = ctx_signed > 0 ? uint(ctx_signed) : 0u;
    uint lo = (pc.window > 0u && ctx > pc.window) ? ctx - pc.window : 0u;
    uint n_parts = min((ctx - lo + pc.partition_size - 1u) / pc.partition_size, pc.max_parts);
    if (n_parts <= 1u) return;
    uint row = seq * pc.n_head + head;
    uint ml = pc.ml_offset + row * pc.max_parts * 2u;
    float m_all = ATTN_MASKED;
    for (uint i = 0u; i < n_parts; i++) m_all = max(m_all, scratch[ml + 2u * i]);
    float l_all = 0.0;
    for (uint i = 0u; i < n_parts; i++)
        l_all += attn_prob(scratch[ml + 2u * i], m_all) * scratch[ml + 2u * i + 1u];
    float inv_l = l_all > 0.0 ? 1.0 / l_all : 0.0;
    for (uint d = gl_LocalInvocationID.x; d < pc.head_dim; d += 64u) {
        float o = 0.0;
        for (uint i = 0u; i < n_parts; i++)
            o += attn_prob(scratch[ml + 2u * i], m_all) *
                 scratch[(row * pc.max_parts + i) * pc.head_dim + d];
        out_rows[row * pc.head_dim + d] = o * inv_l;
    }
}
