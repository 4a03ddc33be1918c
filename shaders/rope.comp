#version 450
/* rope.comp: rotary position embedding of [n_tokens][n_heads][head_dim] f32.
 *
 * Head h of token t starts at float x_offset + t * x_stride + h * head_dim of x (and
 * out_offset + t * out_stride + h * head_dim of out), so Q and K can be rotated in
 * place inside a fused QKV activation (one dispatch for both when the K heads follow
 * the Q heads in each row). Contiguous tensors: stride n_heads * head_dim, offset 0.
 *
 * For token t at position p = pos[t] and pair i < n_rot/2 (docs/gguf-and-models.md §4.4):
 *   theta = p * freq_scale * freq_base^(-2i/n_rot) / ff_i,  ff_i = freq_factors[i] or 1
 *   (a, b) -> (a cos(theta) - b sin(theta), a sin(theta) + b cos(theta))
 * NORM pairs (x[2i], x[2i+1]); NEOX (ROPE_NEOX) pairs (x[i], x[i + n_rot/2]).
 * Dims >= n_rot are copied unchanged, so out may differ from x; in place
 * (out bound to x's range) is safe because each invocation reads its two
 * values before writing them and no other invocation touches them.
 *
 * Bindings: 0 x, 1 pos int32 [n_tokens], 2 out, and with HAS_FREQ_FACTORS
 * 3 freq_factors f32 [n_rot/2]. Push constants: see PushConstants;
 * log2_base_step = -2 log2(freq_base) / n_rot (computed on the host in double)
 * so that freq_base^(-2i/n_rot) = exp2(i * log2_base_step).
 * One invocation per (token, head, pair j < head_dim/2); pairs j >= n_rot/2
 * copy dims n_rot + 2(j - n_rot/2) and the one after it. head_dim and n_rot
 * are even (checked by the launcher). Grid-stride loop over all pairs.
 * theta is computed in f32, as llama.cpp and Hugging Face do, so its error
 * grows like |theta| * 2^-24 (see tests); the angle and its exact range reduction
 * live in rope.glsl, shared with rope_kv.comp (RoPE fused with the KV-cache write). */
// variant: rope_norm
// variant: rope_neox ROPE_NEOX
// variant: rope_norm_ff HAS_FREQ_FACTORS
// variant: rope_neox_ff ROPE_NEOX HAS_FREQ_FACTORS

#extension GL_GOOGLE_include_directive : require
#include "rope.glsl"

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer XBuffer { float x[]; };
layout(std430, binding = 1) readonly buffer PosBuffer { int pos[]; };
layout(std430, binding = 2) writeonly buffer OutBuffer { float out_values[]; };
#ifdef HAS_FREQ_FACTORS
layout(std430, binding = 3) readonly buffer FreqFactorBuffer { float freq_factors[]; };
#endif

layout(push_constant) uniform PushConstants {
    uint n_tokens;
    uint n_heads;
    uint head_dim;
    uint n_rot;
    float log2_base_step;
    float freq_scale;
    uint x_stride;   /* floats between tokens of x */
    uint x_offset;   /* float of (token 0, head 0) in x */
    uint out_stride; /* floats between tokens of out */
    uint out_offset; /* float of (token 0, head 0) in out */
} pc;

void main() {
    uint pairs_per_head = pc.head_dim / 2;
    uint rot_pairs = pc.n_rot / 2;
    uint total = pc.n_tokens * pc.n_heads * pairs_per_head;
    uint step = gl_NumWorkGroups.x * BLOCK_SIZE;
    for (uint idx = gl_GlobalInvocationID.x; idx < total; idx += step) {
        uint head_row = idx / pairs_per_head; /* token * n_heads + head */
        uint j = idx - head_row * pairs_per_head;
        uint token = head_row / pc.n_heads;
        uint head_dims = (head_row - token * pc.n_heads) * pc.head_dim;
        uint base = pc.x_offset + token * pc.x_stride + head_dims;
        uint obase = pc.out_offset + token * pc.out_stride + head_dims;
        if (j >= rot_pairs) {
            uint d = pc.n_rot + 2 * (j - rot_pairs);
            out_values[obase + d] = x[base + d];
            out_values[obase + d + 1] = x[base + d + 1];
            continue;
        }
        float theta = rope_theta(pos[token], j, pc.freq_scale, pc.log2_base_step);
#ifdef HAS_FREQ_FACTORS
        theta /= freq_factors[j];
#endif
        vec2 cs = rope_cos_sin(theta);
#ifdef ROPE_NEOX
        uint ia = j, ib = j + rot_pairs;
#else
        uint ia = 2 * j, ib = 2 * j + 1;
#endif
        float a = x[base + ia], b = x[base + ib];
        out_values[obase + ia] = a * cs.x - b * cs.y;
        out_values[obase + ib] = a * cs.y + b * cs.x;
    }
}
