// attn_prefill.comp: causal flash-style attention for chunks of new tokens (prefill,
// chunked prefill, prefix-cache hits), several ragged sequences per dispatch.
//
// Sequence s owns query tokens query_start[s] .. query_start[s+1]-1 (rows of q and out);
// its context_lens[s] tokens are all in the paged cache (kv_write ran first for the chunk),
// so its queries sit at positions start .. context_len-1 with start = context_len - n_q, and
// query at position p attends to keys p_k <= p (and p - p_k < window with a sliding window)
// read through the block table; earlier chunks and cached prefixes need nothing special.
//
// Workgroup (x = row tile, y = sequence, z = KV head). The rows of a sequence and KV head
// are the (token, query head) pairs, row_index = token * group + g, so the G query heads
// of a KV head share every K/V tile (GQA); a tile takes BR consecutive rows. Keys go through shared
// memory BC at a time (fp16 words, rows padded by one word); per row an online softmax
// (running max and sum); each thread owns up to ACC_WORDS output words. Tiles past a
// sequence's rows exit at once (the grid is sized by the longest sequence).
//
// variant: attn_prefill
#version 450
#extension GL_GOOGLE_include_directive : require
#include "attention.glsl"

#define WG 128u
#define ACC_WORDS 16u

layout(local_size_x = 128) in;
layout(constant_id = 0) const uint HEAD_DIM = 128u; // even, <= 256
layout(constant_id = 1) const uint BR = 32u;        // rows per workgroup, BR*HEAD_DIM/2 <= 2048
layout(constant_id = 2) const uint BC = 32u;        // keys per shared-memory tile
const uint HALF = HEAD_DIM / 2u;
const uint ROW = HALF + 1u;

layout(std430, binding = 0) readonly buffer Q { vec2 q[]; };
layout(std430, binding = 1) readonly buffer KCache { uint k_cache[]; };
layout(std430, binding = 2) readonly buffer VCache { uint v_cache[]; };
layout(std430, binding = 3) readonly buffer Tables { int block_tables[]; };
layout(std430, binding = 4) readonly buffer QStart { int query_start[]; };
layout(std430, binding = 5) readonly buffer Ctx { int context_lens[]; };
layout(std430, binding = 6) writeonly buffer Out { vec2 out_rows[]; };

layout(push_constant) uniform Push {
    uint n_seqs;
    uint n_head;       // query heads
    uint n_head_kv;
    uint block_size;
    uint num_blocks;   // block ids are clamped below it
    uint table_stride; // ints between consecutive sequences' block tables
    uint q_stride;     // floats between consecutive query tokens' q rows (even)
    uint window;       // sliding window; 0 = none
    float scale;       // multiplies q.k
    float softcap;     // 0 = none
} pc;

shared vec2 q_s[BR * HALF];
shared uint tile_s[BC * ROW];
shared float p_s[BR * BC];
shared uint row_base_s[BC];
shared uint row_pos_s[BR];
shared float m_s[BR], l_s[BR], alpha_s[BR];

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint seq = gl_WorkGroupID.y, kv_head = gl_WorkGroupID.z;
    uint group = pc.n_head / pc.n_head_kv;
    int q_first = query_start[seq];
    int n_q_signed = query_start[seq + 1u] - q_first;
    int ctx_signed = context_lens[seq];
    if (n_q_signed <= 0 || ctx_signed < n_q_signed) return;
    uint n_q = uint(n_q_signed), ctx = uint(ctx_signed), start = ctx - n_q;
    uint rows = n_q * group, r0 = gl_WorkGroupID.x * BR;
    if (r0 >= rows) return;
    uint nr = min(BR, rows - r0);

    for (uint i = tid; i < nr * HALF; i += WG) {
        uint r = i / HALF, j = i - r * HALF;
        uint row_index = r0 + r, tok = row_index / group, g = row_index - tok * group;
        q_s[i] = q[((uint(q_first) + tok) * pc.q_stride) / 2u + (kv_head * group + g) * HALF + j];
    }
    if (tid < BR) {
        row_pos_s[tid] = start + (r0 + tid) / group;
        m_s[tid] = ATTN_MASKED;
        l_s[tid] = 0.0;
    }
    vec2 acc[ACC_WORDS];
    for (uint k = 0u; k < ACC_WORDS; k++) acc[k] = vec2(0.0);
    uint table = seq * pc.table_stride;
    uint first_pos = start + r0 / group, last_pos = start + (r0 + nr - 1u) / group;
    uint k_lo = (pc.window > 0u && first_pos + 1u > pc.window) ? first_pos + 1u - pc.window : 0u;
    uint k_end = last_pos + 1u;
    barrier();

    for (uint tile0 = k_lo; tile0 < k_end; tile0 += BC) {
        uint n = min(BC, k_end - tile0);
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
        for (uint p = tid; p < nr * BC; p += WG) {
            uint r = p / BC, c = p - r * BC;
            uint kpos = tile0 + c, qpos = row_pos_s[r];
            float s = ATTN_MASKED;
            if (c < n && kpos <= qpos && (pc.window == 0u || kpos + pc.window > qpos)) {
                float dot_qk = 0.0;
                for (uint j = 0u; j < HALF; j++) {
                    vec2 kv = unpackHalf2x16(tile_s[c * ROW + j]);
                    vec2 qv = q_s[r * HALF + j];
                    dot_qk += qv.x * kv.x + qv.y * kv.y;
                }
                s = attn_score(dot_qk, pc.scale, pc.softcap);
            }
            p_s[p] = s;
        }
        barrier();
        if (tid < nr) {
            uint r = tid;
            float m_old = m_s[r], m_new = m_old;
            for (uint c = 0u; c < n; c++) m_new = max(m_new, p_s[r * BC + c]);
            float sum = 0.0;
            for (uint c = 0u; c < n; c++) {
                float pr = attn_prob(p_s[r * BC + c], m_new);
                p_s[r * BC + c] = pr;
                sum += pr;
            }
            float alpha = attn_prob(m_old, m_new);
            l_s[r] = l_s[r] * alpha + sum;
            m_s[r] = m_new;
            alpha_s[r] = alpha;
        }
        for (uint w = tid; w < n * HALF; w += WG) {
            uint t = w / HALF, j = w - t * HALF;
            tile_s[t * ROW + j] = v_cache[row_base_s[t] + j];
        }
        barrier();
        for (uint k = 0u; k < ACC_WORDS; k++) {
            uint word = tid + k * WG;
            if (word < nr * HALF) {
                uint r = word / HALF, j = word - r * HALF;
                vec2 a = acc[k] * alpha_s[r];
                for (uint c = 0u; c < n; c++)
                    a += p_s[r * BC + c] * unpackHalf2x16(tile_s[c * ROW + j]);
                acc[k] = a;
            }
        }
        barrier();
    }

    for (uint k = 0u; k < ACC_WORDS; k++) {
        uint word = tid + k * WG;
        if (word < nr * HALF) {
            uint r = word / HALF, j = word - r * HALF;
            uint row_index = r0 + r, tok = row_index / group, g = row_index - tok * group;
            float l = l_s[r];
            out_rows[((uint(q_first) + tok) * pc.n_head + kv_head * group + g) * HALF + j] =
                l > 0.0 ? acc[k] / l : vec2(0.0);
        }
    }
}
