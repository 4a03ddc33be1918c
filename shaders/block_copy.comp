// block_copy.comp: copies whole KV blocks (K and V) inside one layer's cache, for
// copy-on-write of a shared, partly filled block.
//
// pairs is int32 [n_pairs][2] = (src block, dst block). Workgroup y is the pair, z selects
// K (0) or V (1), x covers the block's words (n_head_kv * block_size * head_dim / 2 words,
// contiguous in the layout of attention.glsl). Pairs with an id outside [0, num_blocks) are
// skipped. Destinations must be distinct and no destination may also be a source in the
// same call (the copies run in parallel).
//
// variant: block_copy
#version 450

layout(local_size_x = 256) in;

layout(std430, binding = 0) buffer KCache { uint k_cache[]; };
layout(std430, binding = 1) buffer VCache { uint v_cache[]; };
layout(std430, binding = 2) readonly buffer Pairs { int pairs[]; };

layout(push_constant) uniform Push {
    uint n_pairs;
    uint block_words; // words of one block of K (same for V)
    uint num_blocks;
} pc;

void main() {
    uint pair = gl_WorkGroupID.y;
    if (pair >= pc.n_pairs) return;
    int src = pairs[2u * pair], dst = pairs[2u * pair + 1u];
    if (src < 0 || dst < 0 || uint(src) >= pc.num_blocks || uint(dst) >= pc.num_blocks) return;
    uint s = uint(src) * pc.block_words, d = uint(dst) * pc.block_words;
    for (uint w = gl_GlobalInvocationID.x; w < pc.block_words; w += gl_NumWorkGroups.x * 256u) {
        if (gl_WorkGroupID.z == 0u)
            k_cache[d + w] = k_cache[s + w];
        else
            v_cache[d + w] = v_cache[s + w];
    }
}
