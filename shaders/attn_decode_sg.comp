// attn_decode_sg.comp: paged decode attention, one subgroup per stream of keys (the fast
// variant of attn_decode.comp; same grid, bindings, push constants, scratch layout and
// outputs, so attn_reduce merges its partitions unchanged).
//
// Workgroup (x = sequence, y = kv_head * n_chunks + chunk, z = partition) serves up to
// HEADS query heads of one KV head over the partition [lo + z*partition_size, ...) exactly
// as attn_decode does. Inside it, NSG = WG / LANES subgroups split the partition into steps
// of KB consecutive keys (subgroup s takes steps s, s + NSG, ...), with no workgroup
// barrier until the final merge:
//   - the LANES lanes of a subgroup split the head dimension: lane l owns the dim quads
//     (4 fp16 = one uvec2) l, l + LANES, ... of a row, so one K (or V) row is read as
//     LANES consecutive 8-byte loads (256 coalesced bytes for head_dim 128 on 32 lanes);
//   - all KB keys of a step are loaded (K and V) before any is used (memory parallelism);
//   - q.k of each (head, key) is the lane's partial dot product summed by subgroupAdd, so
//     the score is subgroup-uniform and every lane runs the same online softmax;
//   - each subgroup keeps its own (m, l, acc) per query head: the GQA heads of the KV
//     head share every K/V load.
// At the end the subgroups' states are merged in shared memory (max of m, rescaled sums)
// and written as attn_decode writes them: out = acc / l when the sequence has <= 1
// partition, else the unnormalized acc and (m, l) into scratch.
//
// FUSED_REDUCE (variant attn_decode_sg_fused): the partitions are merged by this dispatch
// instead of attn_reduce.comp. Each workgroup that wrote a partial result (sequences with
// more than one partition) counts itself in counters[seq * gl_NumWorkGroups.y + y] (one
// counter per (sequence, head chunk), an atomicAdd by one thread); the workgroup that
// brings the count to the sequence's partition count is the last one: it merges every
// partition of its heads exactly as attn_reduce does and resets the counter to 0 for
// the next dispatch (all the others have counted by then). Visibility of the partials
// (no Vulkan memory model needed): scratch and counters are `coherent` (loads and
// stores bypass the non-coherent caches); every invocation that wrote scratch runs
// memoryBarrierBuffer() (its writes are ordered before what follows) and then barrier(),
// and only after that does thread 0 increment; the last workgroup reads scratch after a
// barrier() that follows that increment and another memoryBarrierBuffer(). The counters
// must be zero before the first dispatch (the caller clears them once).
//
// Invariants: gl_SubgroupSize == LANES and WG is a multiple of LANES (the launcher asks
// for that subgroup size where the driver can vary it); HEAD_DIM is a multiple of 4;
// HEADS * HEAD_DIM * NSG floats fit shared memory (launcher). Masked keys (past the
// partition end) read a valid row (the last key's) and get probability exactly 0.
//
// variant: attn_decode_sg
// variant: attn_decode_sg_fused FUSED_REDUCE
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#include "attention.glsl"

layout(local_size_x_id = 3) in;
layout(constant_id = 0) const uint HEAD_DIM = 128u; // multiple of 4, <= 256
layout(constant_id = 1) const uint LANES = 32u;     // subgroup size
layout(constant_id = 2) const uint HEADS = 4u;      // query heads one workgroup serves (max)
layout(constant_id = 3) const uint WG = 128u;       // LANES * subgroups per workgroup
layout(constant_id = 4) const uint KB = 8u;         // keys per subgroup step
const uint QUADS = HEAD_DIM / 4u;                   // uvec2 words per row
const uint NCH = (QUADS + LANES - 1u) / LANES;      // quads per lane
const uint NSG = WG / LANES;
const uint HALF = HEAD_DIM / 2u;

layout(std430, binding = 0) readonly buffer Q { vec2 q[]; };
layout(std430, binding = 1) readonly buffer KCache { uvec2 k_cache[]; };
layout(std430, binding = 2) readonly buffer VCache { uvec2 v_cache[]; };
layout(std430, binding = 3) readonly buffer Tables { int block_tables[]; };
layout(std430, binding = 4) readonly buffer Ctx { int context_lens[]; };
layout(std430, binding = 5) writeonly buffer Out { vec2 out_rows[]; };
#ifdef FUSED_REDUCE
layout(std430, binding = 6) coherent buffer Scratch { float scratch[]; };
layout(std430, binding = 7) coherent buffer Counters { uint counters[]; };
#else
layout(std430, binding = 6) writeonly buffer Scratch { float scratch[]; };
#endif

layout(push_constant) uniform Push {
    uint n_seqs;
    uint n_head;
    uint n_head_kv;
    uint block_size;
    uint num_blocks;
    uint table_stride;
    uint q_stride;
    uint partition_size;
    uint max_parts;
    uint window;
    float scale;
    float softcap;
    uint ml_offset;
} pc;

shared float m_s[NSG * HEADS], l_s[NSG * HEADS];
shared vec4 acc_s[NSG * HEADS * QUADS];
#ifdef FUSED_REDUCE
shared bool last_s;
#endif

// First uvec2 of the K/V row of token `offset` in the block at block_tables[entry]
// (ids clamped into the cache, as attn_decode does).
uint row_quad(uint entry, uint kv_head, uint offset) {
    uint blk = min(uint(max(block_tables[entry], 0)), pc.num_blocks - 1u);
    return attn_kv_row_word(blk, kv_head, offset, pc.n_head_kv, pc.block_size, HEAD_DIM) / 2u;
}

vec4 unpack4(uvec2 w) { return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)); }

#ifdef FUSED_REDUCE
// Called by every invocation after this workgroup wrote its partition of heads head0 ..
// head0 + n_heads - 1 of `seq` to scratch (see the header): the last of the n_parts
// workgroups of that (sequence, chunk) merges all partitions into out_rows:
//     out = sum_i exp(m_i - M) acc_i / sum_i exp(m_i - M) l_i,  M = max_i m_i.
void merge_partitions(uint seq, uint head0, uint n_heads, uint n_parts) {
    uint tid = gl_LocalInvocationID.x;
    memoryBarrierBuffer(); // this invocation's partial writes before the count
    barrier();             // ... and every invocation's
    if (tid == 0u) {
        uint counter = seq * gl_NumWorkGroups.y + gl_WorkGroupID.y;
        bool last = atomicAdd(counters[counter], 1u) + 1u == n_parts;
        // Every other workgroup of this counter has counted: reset it for the next use.
        if (last) atomicExchange(counters[counter], 0u);
        last_s = last;
    }
    barrier();
    if (!last_s) return; // workgroup-uniform
    memoryBarrierBuffer(); // the other workgroups' partials, visible since they counted
    // (M, sum l) per head into m_s / l_s (the subgroup merge is done with them).
    if (tid < n_heads) {
        uint ml = pc.ml_offset + (seq * pc.n_head + head0 + tid) * pc.max_parts * 2u;
        float m_all = ATTN_MASKED;
        for (uint i = 0u; i < n_parts; i++) m_all = max(m_all, scratch[ml + 2u * i]);
        float l_all = 0.0;
        for (uint i = 0u; i < n_parts; i++)
            l_all += attn_prob(scratch[ml + 2u * i], m_all) * scratch[ml + 2u * i + 1u];
        m_s[tid] = m_all;
        l_s[tid] = l_all;
    }
    barrier();
    for (uint w = tid; w < n_heads * QUADS; w += WG) {
        uint g = w / QUADS, quad = w - g * QUADS;
        uint row = seq * pc.n_head + head0 + g;
        uint ml = pc.ml_offset + row * pc.max_parts * 2u;
        float m_all = m_s[g], l_all = l_s[g];
        vec4 o = vec4(0.0);
        for (uint i = 0u; i < n_parts; i++) {
            float wgt = attn_prob(scratch[ml + 2u * i], m_all);
            uint at = (row * pc.max_parts + i) * HEAD_DIM + 4u * quad;
            o += wgt * vec4(scratch[at], scratch[at + 1u], scratch[at + 2u], scratch[at + 3u]);
        }
        o = l_all > 0.0 ? o / l_all : vec4(0.0);
        out_rows[row * HALF + 2u * quad] = o.xy;
        out_rows[row * HALF + 2u * quad + 1u] = o.zw;
    }
}
#endif

void main() {
    uint lane = gl_SubgroupInvocationID, sg = gl_SubgroupID, tid = gl_LocalInvocationID.x;
    uint seq = gl_WorkGroupID.x, part = gl_WorkGroupID.z;
    uint group = pc.n_head / pc.n_head_kv;
    uint n_chunks = (group + HEADS - 1u) / HEADS;
    uint kv_head = gl_WorkGroupID.y / n_chunks;
    uint chunk = gl_WorkGroupID.y - kv_head * n_chunks;
    uint head0 = kv_head * group + chunk * HEADS;
    uint n_heads_here = min(HEADS, group - chunk * HEADS);

    int ctx_signed = context_lens[seq];
    uint ctx = ctx_signed > 0 ? uint(ctx_signed) : 0u;
    uint lo = (pc.window > 0u && ctx > pc.window) ? ctx - pc.window : 0u;
    uint n_parts = (ctx - lo + pc.partition_size - 1u) / pc.partition_size;
    if (part >= max(n_parts, 1u) || part >= pc.max_parts) return;
    uint t0 = lo + part * pc.partition_size;
    uint t1 = min(ctx, t0 + pc.partition_size);

    vec4 qv[HEADS * NCH], acc[HEADS * NCH];
    float m[HEADS], l[HEADS];
    uint q_base = (seq * pc.q_stride) / 2u + head0 * HALF;
    [[unroll]] for (uint g = 0u; g < HEADS; g++) {
        m[g] = ATTN_MASKED;
        l[g] = 0.0;
        [[unroll]] for (uint c = 0u; c < NCH; c++) {
            uint quad = lane + c * LANES;
            vec4 v = vec4(0.0);
            if (g < n_heads_here && quad < QUADS)
                v = vec4(q[q_base + g * HALF + 2u * quad], q[q_base + g * HALF + 2u * quad + 1u]);
            qv[g * NCH + c] = v;
            acc[g * NCH + c] = vec4(0.0);
        }
    }
    uint table = seq * pc.table_stride;

    for (uint base = t0 + sg * KB; base < t1; base += NSG * KB) {
        uvec2 kw[KB * NCH], vw[KB * NCH];
        // One division per step: later keys advance (block, offset) and look the block
        // table up only when they cross into the next block. Keys past t1 reuse the last
        // live key's row (their probability is 0).
        uint blk_index = base / pc.block_size, offset = base - blk_index * pc.block_size;
        uint row = row_quad(table + blk_index, kv_head, offset);
        [[unroll]] for (uint i = 0u; i < KB; i++) {
            if (i > 0u && base + i < t1) {
                offset++;
                if (offset == pc.block_size) {
                    offset = 0u;
                    blk_index++;
                    row = row_quad(table + blk_index, kv_head, 0u);
                } else {
                    row += QUADS;
                }
            }
            [[unroll]] for (uint c = 0u; c < NCH; c++) {
                uint quad = lane + c * LANES;
                // In-bounds loads for every lane and a select on the values (mix with a
                // bool is OpSelect): `live ? load : 0` compiles to a branch around each load.
                bvec2 live = bvec2(quad < QUADS);
                uint at = row + min(quad, QUADS - 1u);
                kw[i * NCH + c] = mix(uvec2(0u), k_cache[at], live);
                vw[i * NCH + c] = mix(uvec2(0u), v_cache[at], live);
            }
        }
        [[unroll]] for (uint g = 0u; g < HEADS; g++) {
            if (g >= n_heads_here) break; // workgroup-uniform
            float s[KB];
            float m_new = m[g];
            [[unroll]] for (uint i = 0u; i < KB; i++) {
                float part_dot = 0.0;
                [[unroll]] for (uint c = 0u; c < NCH; c++)
                    part_dot += dot(qv[g * NCH + c], unpack4(kw[i * NCH + c]));
                float d = subgroupAdd(part_dot);
                s[i] = base + i < t1 ? attn_score(d, pc.scale, pc.softcap) : ATTN_MASKED;
                m_new = max(m_new, s[i]);
            }
            float alpha = attn_prob(m[g], m_new);
            float sum = 0.0;
            vec4 a[NCH];
            [[unroll]] for (uint c = 0u; c < NCH; c++)
                a[c] = acc[g * NCH + c] * alpha;
            [[unroll]] for (uint i = 0u; i < KB; i++) {
                float p = attn_prob(s[i], m_new);
                sum += p;
                [[unroll]] for (uint c = 0u; c < NCH; c++)
                    a[c] += p * unpack4(vw[i * NCH + c]);
            }
            [[unroll]] for (uint c = 0u; c < NCH; c++)
                acc[g * NCH + c] = a[c];
            l[g] = l[g] * alpha + sum;
            m[g] = m_new;
        }
    }

    // Merge the subgroups' states.
    [[unroll]] for (uint g = 0u; g < HEADS; g++) {
        if (lane == 0u) {
            m_s[sg * HEADS + g] = m[g];
            l_s[sg * HEADS + g] = l[g];
        }
        [[unroll]] for (uint c = 0u; c < NCH; c++) {
            uint quad = lane + c * LANES;
            if (quad < QUADS) acc_s[(sg * HEADS + g) * QUADS + quad] = acc[g * NCH + c];
        }
    }
    barrier();
    bool single = n_parts <= 1u;
    for (uint w = tid; w < n_heads_here * QUADS; w += WG) {
        uint g = w / QUADS, quad = w - g * QUADS;
        float m_all = ATTN_MASKED;
        for (uint s = 0u; s < NSG; s++)
            m_all = max(m_all, m_s[s * HEADS + g]);
        float l_all = 0.0;
        vec4 o = vec4(0.0);
        for (uint s = 0u; s < NSG; s++) {
            float wgt = attn_prob(m_s[s * HEADS + g], m_all);
            l_all += wgt * l_s[s * HEADS + g];
            o += wgt * acc_s[(s * HEADS + g) * QUADS + quad];
        }
        uint row = seq * pc.n_head + head0 + g;
        if (single) {
            o = l_all > 0.0 ? o / l_all : vec4(0.0);
            out_rows[row * HALF + 2u * quad] = o.xy;
            out_rows[row * HALF + 2u * quad + 1u] = o.zw;
        } else {
            uint at = (row * pc.max_parts + part) * HEAD_DIM + 4u * quad;
            scratch[at] = o.x;
            scratch[at + 1u] = o.y;
            scratch[at + 2u] = o.z;
            scratch[at + 3u] = o.w;
            if (quad == 0u) {
                uint ml = pc.ml_offset + (row * pc.max_parts + part) * 2u;
                scratch[ml] = m_all;
                scratch[ml + 1u] = l_all;
            }
        }
    }
#ifdef FUSED_REDUCE
    if (single) return; // workgroup-uniform
    merge_partitions(seq, head0, n_heads_here, min(n_parts, pc.max_parts));
#endif
}
