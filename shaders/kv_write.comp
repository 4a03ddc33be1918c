// kv_write.comp: scatters the K and V rows of new tokens into the paged KV cache as fp16.
//
// Each token t has a slot (block_id * block_size + offset); its K row (n_head_kv * head_dim
// f32 values, read at k_src_offset + t * k_src_stride) goes to the cache row of every KV
// head at that slot, packed two fp16 per word (layout in attention.glsl). A negative slot,
// or one past num_slots, is skipped (padding tokens). Workgroup x covers the words of one
// token, workgroup y walks tokens with a stride of gl_NumWorkGroups.y so any token count fits.
//
// variant: kv_write
#version 450
#extension GL_GOOGLE_include_directive : require
#include "attention.glsl"

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer KSrc { float k_src[]; };
layout(std430, binding = 1) readonly buffer VSrc { float v_src[]; };
layout(std430, binding = 2) readonly buffer Slots { int slots[]; };
layout(std430, binding = 3) writeonly buffer KCache { uint k_cache[]; };
layout(std430, binding = 4) writeonly buffer VCache { uint v_cache[]; };

layout(push_constant) uniform Push {
    uint n_tokens;
    uint n_head_kv;
    uint head_dim;
    uint block_size;
    uint num_slots;    // num_blocks * block_size: slots at or past it are skipped
    uint k_src_offset; // floats from the start of binding 0 to token 0's K row
    uint k_src_stride; // floats between consecutive tokens' K rows
    uint v_src_offset;
    uint v_src_stride;
} pc;

void main() {
    uint half_dim = pc.head_dim / 2u;
    uint word = gl_GlobalInvocationID.x; // word within the token: head * half_dim + j
    if (word >= pc.n_head_kv * half_dim) return;
    uint head = word / half_dim;
    uint j = word - head * half_dim;
    for (uint t = gl_WorkGroupID.y; t < pc.n_tokens; t += gl_NumWorkGroups.y) {
        int slot = slots[t];
        if (slot < 0 || uint(slot) >= pc.num_slots) continue;
        uint block = uint(slot) / pc.block_size;
        uint offset = uint(slot) - block * pc.block_size;
        uint dst = attn_kv_row_word(block, head, offset, pc.n_head_kv, pc.block_size,
                                    pc.head_dim) + j;
        uint ks = pc.k_src_offset + t * pc.k_src_stride + 2u * word;
        uint vs = pc.v_src_offset + t * pc.v_src_stride + 2u * word;
        k_cache[dst] = packHalf2x16(vec2(k_src[ks], k_src[ks + 1u]));
        v_cache[dst] = packHalf2x16(vec2(v_src[vs], v_src[vs + 1u]));
    }
}
