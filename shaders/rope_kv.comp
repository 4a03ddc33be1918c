// rope_kv.comp: RoPE of the Q and K heads of fused QKV rows, in place, fused with the write
// of the rotated K and of V into the paged KV cache (one dispatch where rope.comp then
// kv_write.comp took two, and two barriers fewer per layer: docs/notes-fusion.md).
//
// Row of token t: x_offset + t * x_stride floats into binding 0, holding n_head Q heads,
// then n_head_kv K heads, then n_head_kv V heads of head_dim floats each. Workgroup x =
// head (0 .. n_head + 2 n_head_kv), y walks tokens with a stride of gl_NumWorkGroups.y.
//   - Q head: rotated in place, exactly as rope.comp rotates it (rope.glsl: same angle,
//     same products), dims >= n_rot unchanged;
//   - K head: rotated in place the same way and the rotated values written as fp16 to the
//     token's slot (layout in attention.glsl) - the values kv_write.comp would store after
//     rope.comp;
//   - V head: written to the slot as fp16 (not modified).
// Slots < 0 (padding) or >= num_slots skip the cache writes; the rotation still happens,
// as rope.comp would do it. A Q/K head is staged in shared memory first (one barrier),
// because NEOX pairs (x[i], x[i + n_rot/2]) span fp16 words that different invocations
// own: each invocation then computes and writes the two elements of its own word.
//
// Bindings: 0 qkv (f32, read and written), 1 pos int32 [n_tokens], 2 slots int32
// [n_tokens], 3 k_cache, 4 v_cache (packed fp16 words), and with HAS_FREQ_FACTORS 5
// freq_factors f32 [n_rot/2]. Invariants (launcher): head_dim even and <= ROPE_KV_MAX_DIM,
// n_rot even and 0 < n_rot <= head_dim.
//
// variant: rope_kv_norm
// variant: rope_kv_neox ROPE_NEOX
// variant: rope_kv_norm_ff HAS_FREQ_FACTORS
// variant: rope_kv_neox_ff ROPE_NEOX HAS_FREQ_FACTORS
#version 450
#extension GL_GOOGLE_include_directive : require
#include "attention.glsl"
#include "rope.glsl"

#define WG 64u
#define ROPE_KV_MAX_DIM 256u
layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer QKV { float x[]; };
layout(std430, binding = 1) readonly buffer PosBuffer { int pos[]; };
layout(std430, binding = 2) readonly buffer Slots { int slots[]; };
layout(std430, binding = 3) writeonly buffer KCache { uint k_cache[]; };
layout(std430, binding = 4) writeonly buffer VCache { uint v_cache[]; };
#ifdef HAS_FREQ_FACTORS
layout(std430, binding = 5) readonly buffer FreqFactorBuffer { float freq_factors[]; };
#endif

layout(push_constant) uniform PushConstants {
    uint n_tokens;
    uint n_head;    // Q heads: rotated only
    uint n_head_kv; // K heads (rotated and cached), then as many V heads (cached)
    uint head_dim;
    uint n_rot;
    float log2_base_step;
    float freq_scale;
    uint x_stride; // floats between tokens' rows
    uint x_offset; // float of (token 0, head 0)
    uint block_size;
    uint num_slots; // num_blocks * block_size
} pc;

shared float row_s[ROPE_KV_MAX_DIM];

// cos and sin of pair i's angle at position p.
vec2 pair_cos_sin(int p, uint i) {
    float theta = rope_theta(p, i, pc.freq_scale, pc.log2_base_step);
#ifdef HAS_FREQ_FACTORS
    theta /= freq_factors[i];
#endif
    return rope_cos_sin(theta);
}

// Rotated elements 2w, 2w + 1 of the head staged in row_s.
vec2 rotated_word(int p, uint w) {
    uint d = 2u * w;
    if (d >= pc.n_rot) return vec2(row_s[d], row_s[d + 1u]);
#ifdef ROPE_NEOX
    uint half_rot = pc.n_rot / 2u;
    vec2 o;
    for (uint e = 0u; e < 2u; e++) {
        uint de = d + e;
        uint i = de < half_rot ? de : de - half_rot;
        float a = row_s[i], b = row_s[i + half_rot];
        vec2 cs = pair_cos_sin(p, i);
        o[e] = de < half_rot ? a * cs.x - b * cs.y : a * cs.y + b * cs.x;
    }
    return o;
#else
    float a = row_s[d], b = row_s[d + 1u];
    vec2 cs = pair_cos_sin(p, w);
    return vec2(a * cs.x - b * cs.y, a * cs.y + b * cs.x);
#endif
}

void main() {
    uint head = gl_WorkGroupID.x, tid = gl_LocalInvocationID.x;
    uint half_dim = pc.head_dim / 2u;
    bool is_v = head >= pc.n_head + pc.n_head_kv, is_k = !is_v && head >= pc.n_head;
    uint kv_head = is_v ? head - pc.n_head - pc.n_head_kv : head - pc.n_head;
    // The token loop is workgroup-uniform, so the barriers below are in uniform control flow.
    for (uint t = gl_WorkGroupID.y; t < pc.n_tokens; t += gl_NumWorkGroups.y) {
        uint base = pc.x_offset + t * pc.x_stride + head * pc.head_dim;
        int slot = slots[t];
        bool cached = (is_k || is_v) && slot >= 0 && uint(slot) < pc.num_slots;
        uint dst = 0u;
        if (cached) {
            uint block = uint(slot) / pc.block_size;
            uint offset = uint(slot) - block * pc.block_size;
            dst = attn_kv_row_word(block, kv_head, offset, pc.n_head_kv, pc.block_size,
                                   pc.head_dim);
        }
        if (is_v) {
            if (cached)
                for (uint w = tid; w < half_dim; w += WG)
                    v_cache[dst + w] = packHalf2x16(vec2(x[base + 2u * w], x[base + 2u * w + 1u]));
            continue;
        }
        barrier(); // the previous token's reads of row_s are done
        for (uint d = tid; d < pc.head_dim; d += WG) row_s[d] = x[base + d];
        barrier();
        int p = pos[t];
        for (uint w = tid; w < half_dim; w += WG) {
            vec2 o = rotated_word(p, w);
            x[base + 2u * w] = o.x;
            x[base + 2u * w + 1u] = o.y;
            if (cached) k_cache[dst + w] = packHalf2x16(o);
        }
    }
}
