// attn_decode.comp: paged attention for one new token per sequence (decode), split-K.
//
// Workgroup (x = sequence, y = kv_head * n_chunks + chunk, z = partition) serves the query
// heads chunk*HEADS_PER_WG .. of one KV head (GQA/MQA: all n_head/n_head_kv query heads of
// the KV head when they fit, so K and V are read once for all of them) over the partition
// [lo + z*partition_size, ...) of the sequence's keys, where lo = max(0, ctx - window) with a
// sliding window and 0 without. Keys are read through the block table, TILE tokens at a time,
// into shared memory (fp16 words; rows padded by one word so column reads do not collide in
// banks). Online softmax: per head a running max m and sum l; the output accumulator is
// rescaled by exp(m_old - m_new) whenever the max grows.
//
// Output: when the sequence has one partition (or none: ctx == 0 gives zeros) the workgroup
// writes out[seq][head][:] = acc / l directly. Otherwise it writes its unnormalized acc to
// scratch[((seq*n_head + head)*max_parts + part)*HEAD_DIM + d] and (m, l) to
// scratch[ml_offset + ((seq*n_head + head)*max_parts + part)*2 + {0,1}], and attn_reduce
// merges the partitions.
//
// Each thread owns up to ACC_WORDS output words (pairs of dims); the launcher picks
// HEADS_PER_WG so that HEADS_PER_WG * HEAD_DIM / 2 <= WG * ACC_WORDS.
//
// variant: attn_decode
#version 450
#extension GL_GOOGLE_include_directive : require
#include "attention.glsl"

#define WG 128u
#define ACC_WORDS 8u

layout(local_size_x = 128) in;
layout(constant_id = 0) const uint HEAD_DIM = 128u;   // even, <= 256
layout(constant_id = 1) const uint TILE = 32u;        // keys per shared-memory tile
layout(constant_id = 2) const uint HEADS_PER_WG = 8u; // query heads one workgroup serves (max)
const uint HALF = HEAD_DIM / 2u;
const uint ROW = HALF + 1u; // padded row stride of the tile, in words

layout(std430, binding = 0) readonly buffer Q { vec2 q[]; };
layout(std430, binding = 1) readonly buffer KCache { uint k_cache[]; };
layout(std430, binding = 2) readonly buffer VCache { uint v_cache[]; };
layout(std430, binding = 3) readonly buffer Tables { int block_tables[]; };
layout(std430, binding = 4) readonly buffer Ctx { int context_lens[]; };
layout(std430, binding = 5) writeonly buffer Out { vec2 out_rows[]; };
layout(std430, binding = 6) writeonly buffer Scratch { float scratch[]; };

layout(push_constant) uniform Push {
    uint n_seqs;
    uint n_head;         // query heads
    uint n_head_kv;
    uint block_size;     // tokens per KV block
    uint num_blocks;     // blocks in the cache (block ids are clamped below it)
    uint table_stride;   // ints between consecutive sequences' block tables
    uint q_stride;       // floats between consecutive sequences' q rows (even)
    uint partition_size; // keys per partition (> 0)
    uint max_parts;      // partition slots per (seq, head) in scratch = grid z
    uint window;         // sliding window (keys with pos > ctx-1-window); 0 = none
    float scale;         // multiplies q.k
    float softcap;       // score = softcap * tanh(score / softcap); 0 = none
    uint ml_offset;      // float offset of the (max, sum) pairs in scratch
} pc;

shared vec2 q_s[HEADS_PER_WG * HALF];
shared uint tile_s[TILE * ROW];
shared float p_s[HEADS_PER_WG * TILE]; // scores, then probabilities
shared uint row_base_s[TILE];
shared float m_s[HEADS_PER_WG], l_s[HEADS_PER_WG], alpha_s[HEADS_PER_WG];

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint seq = gl_WorkGroupID.x, part = gl_WorkGroupID.z;
    uint group = pc.n_head / pc.n_head_kv;
    uint n_chunks = (group + HEADS_PER_WG - 1u) / HEADS_PER_WG;
    uint kv_head = gl_WorkGroupID.y / n_chunks;
    uint chunk = gl_WorkGroupID.y - kv_head * n_chunks;
    uint head0 = kv_head * group + chunk * HEADS_PER_WG; // first query head served here
    uint n_heads_here = min(HEADS_PER_WG, group - chunk * HEADS_PER_WG);

    int ctx_signed = context_lens[seq];
    uint ctx = ctx_signed > 0 ? uint(ctx_signed) : 0u;
    uint lo = (pc.window > 0u && ctx > pc.window) ? ctx - pc.window : 0u;
    uint n_parts = (ctx - lo + pc.partition_size - 1u) / pc.partition_size;
    if (part >= max(n_parts, 1u) || part >= pc.max_parts) return;
    uint t0 = lo + part * pc.partition_size;
    uint t1 = min(ctx, t0 + pc.partition_size);

    for (uint i = tid; i < n_heads_here * HALF; i += WG) {
        uint g = i / HALF, j = i - g * HALF;
        q_s[i] = q[(seq * pc.q_stride) / 2u + (head0 + g) * HALF + j];
    }
    if (tid < HEADS_PER_WG) {
        m_s[tid] = ATTN_MASKED;
        l_s[tid] = 0.0;
    }
    barrier(); // m_s, l_s and q_s are read by other threads below
    vec2 acc[ACC_WORDS];
    for (uint k = 0u; k < ACC_WORDS; k++) acc[k] = vec2(0.0);
    uint table = seq * pc.table_stride;

    for (uint tile0 = t0; tile0 < t1; tile0 += TILE) {
        uint n = min(TILE, t1 - tile0);
        if (tid < n) {
            uint pos = tile0 + tid;
            uint blk = uint(max(block_tables[table + pos / pc.block_size], 0));
            blk = min(blk, pc.num_blocks - 1u);
            row_base_s[tid] = attn_kv_row_word(blk, kv_head, pos % pc.block_size, pc.n_head_kv,
                                               pc.block_size, HEAD_DIM);
        }
        barrier();
        for (uint w = tid; w < n * HALF; w += WG) {
            uint t = w / HALF, j = w - t * HALF;
            tile_s[t * ROW + j] = k_cache[row_base_s[t] + j];
        }
        barrier();
        // Scores: pair p = (head g, key t); consecutive threads take consecutive keys.
        for (uint p = tid; p < n_heads_here * TILE; p += WG) {
            uint g = p / TILE, t = p - g * TILE;
            float s = ATTN_MASKED;
            if (t < n) {
                float dot_qk = 0.0;
                for (uint j = 0u; j < HALF; j++) {
                    vec2 kv = unpackHalf2x16(tile_s[t * ROW + j]);
                    vec2 qv = q_s[g * HALF + j];
                    dot_qk += qv.x * kv.x + qv.y * kv.y;
                }
                s = attn_score(dot_qk, pc.scale, pc.softcap);
            }
            p_s[p] = s;
        }
        barrier();
        // Online softmax per head (one thread per head), while all threads load V.
        if (tid < n_heads_here) {
            uint g = tid;
            float m_old = m_s[g], m_new = m_old;
            for (uint t = 0u; t < n; t++) m_new = max(m_new, p_s[g * TILE + t]);
            float sum = 0.0;
            for (uint t = 0u; t < n; t++) {
                float pr = attn_prob(p_s[g * TILE + t], m_new);
                p_s[g * TILE + t] = pr;
                sum += pr;
            }
            float alpha = attn_prob(m_old, m_new);
            l_s[g] = l_s[g] * alpha + sum;
            m_s[g] = m_new;
            alpha_s[g] = alpha;
        }
        for (uint w = tid; w < n * HALF; w += WG) {
            uint t = w / HALF, j = w - t * HALF;
            tile_s[t * ROW + j] = v_cache[row_base_s[t] + j];
        }
        barrier();
        for (uint k = 0u; k < ACC_WORDS; k++) {
            uint word = tid + k * WG;
            if (word < n_heads_here * HALF) {
                uint g = word / HALF, j = word - g * HALF;
                vec2 a = acc[k] * alpha_s[g];
                for (uint t = 0u; t < n; t++)
                    a += p_s[g * TILE + t] * unpackHalf2x16(tile_s[t * ROW + j]);
                acc[k] = a;
            }
        }
        barrier();
    }

    if (n_parts <= 1u) {
        for (uint k = 0u; k < ACC_WORDS; k++) {
            uint word = tid + k * WG;
            if (word < n_heads_here * HALF) {
                uint g = word / HALF, j = word - g * HALF;
                float l = l_s[g];
                out_rows[(seq * pc.n_head + head0 + g) * HALF + j] =
                    l > 0.0 ? acc[k] / l : vec2(0.0);
            }
        }
        return;
    }
    for (uint k = 0u; k < ACC_WORDS; k++) {
        uint word = tid + k * WG;
        if (word < n_heads_here * HALF) {
            uint g = word / HALF, j = word - g * HALF;
            uint base = ((seq * pc.n_head + head0 + g) * pc.max_parts + part) * HEAD_DIM + 2u * j;
            scratch[base] = acc[k].x;
            scratch[base + 1u] = acc[k].y;
        }
    }
    if (tid < n_heads_here) {
        uint base = pc.ml_offset + ((seq * pc.n_head + head0 + tid) * pc.max_parts + part) * 2u;
        scratch[base] = m_s[tid];
        scratch[base + 1u] = l_s[tid];
    }
}
