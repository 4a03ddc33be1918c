// attn_prefill_cm.comp: causal paged flash attention for prefill chunks on tensor cores
// (GL_NV_cooperative_matrix): S = Q·Kᵀ and O += P·V as 16x8x16 fp16 products with f32
// accumulators, online softmax in f32 on the S tile in shared memory.
//
// Bindings, push constants, grid meaning and semantics are exactly attn_prefill.comp's
// (read its header): several ragged sequences per dispatch (query_start / context_lens),
// paged K/V through block tables, GQA rows row_index = token * group + g (the G query
// heads of a KV head share every K/V tile), sliding window, softcap, scale, chunks that
// start mid-context (cached prefixes, earlier chunks). Differences: q is pre-multiplied by
// `scale` and rounded to fp16, P is rounded to fp16 (tensor-core operands), so results
// agree with attn_prefill.comp to ~1e-3 relative, not to f32 rounding. The grid has the
// same shape, but workgroups are renumbered (tile, sequence, KV head from the linear id,
// KV head fastest, row tiles last to first) so that the workgroups dispatched first are
// the heaviest row tiles (most keys) of every sequence and head, and the light ones fill
// in behind them.
//
// Workgroup (x = row tile, y = sequence, z = KV head): NSG subgroups of 32, BR = 16*NSG
// rows; subgroup sg owns rows [16*sg, +16) of the tile, all BC keys of a step and all
// HEAD_DIM output columns (HEAD_DIM/8 accumulators of 16x8 f32 in registers). A tile only
// visits keys k_lo .. last_pos (its last row's position; k_lo from the window), so fully
// masked key tiles are never loaded; masking inside the visited range is per element.
// Step of BC keys:
//   1. issue the global loads of the next step's K and V chunks into registers (latency
//      hidden behind this step's products);
//   2. S = Q·Kᵀ from shared memory (Q tile and K tile), stored as f32 into the
//      subgroup's own S rows;
//   3. softmax: two lanes per row, BC/2 columns each (mask, softcap, running max
//      exchanged through shared memory, exp, running sums kept per lane); P written as
//      fp16 over the same rows (after a subgroup sync, so no lane still reads S there);
//      the row's rescale factor alpha goes to alpha_s;
//   4. O *= alpha (per row: see "row map"), O += P·V;
//   5. barrier, store the prefetched K/V chunks, barrier.
// Row map: the element-to-row layout of an accumulator is the driver's; at start each
// subgroup loads a 16x8 matrix whose element (r, c) is r, so component i of any
// accumulator of this type lies in row rowmap[i] (per-row scaling without knowing the
// layout).
// Shared memory (uvec4 = 8 fp16 or 4 f32; rows padded to an odd number of uvec4 so the
// 8 rows of an 8x8 fragment load hit 8 different bank groups):
//   Q tile  BR x RS, K tile BC x RS, V tile BC x RS   (RS = HEAD_DIM/8 + 1)
//   S/P     BR x SRS (SRS = BC/4 + 1): S as f32, then P as fp16 in the first half
//   alpha_s BR floats, xch_s WG floats (the two lanes of a row exchange max and sum).
// Bytes: 16*(BR*RS + 2*BC*RS + BR*SRS) + 4*(BR + 32*NSG); engine/exec/k_attention.c
// computes the same and keeps it within maxComputeSharedMemorySize (44,800 bytes for
// HEAD_DIM 128, NSG 4, BC 32: the H100 choice). Output: each accumulator is divided by
// its row's sum and staged through the S rows, BC columns at a time, to coalesced vec2
// stores. Needs: NV cooperative matrix 16x8x16 fp16 -> f32, shaderFloat16, subgroup size
// 32; HEAD_DIM a multiple of 16 (<= 256), BC a multiple of 16; K/V bindings 16-byte
// aligned (read as uvec4: a row is HEAD_DIM/8 of them).
// variant: attn_prefill_cm
//
// CM_EMULATE: the same kernel with the cooperative-matrix operations emulated by plain
// shared-memory arithmetic (virtual subgroups of 32 = invocations tid/32; accumulator
// element e = lane + 32q, q < 4, at row e%16, column e/16; A/B fragments are the shared
// offset and stride they would be loaded from, read when multiplied; subgroup syncs
// become workgroup barriers, every one reached by all invocations). Needs nothing beyond
// Vulkan 1.1 compute, so lavapipe tests the tiling, masking, softmax and epilogue.
// Selected by VKLLM_ATTN_PREFILL=emulate (tests); never chosen automatically.
// variant: attn_prefill_cm_emu CM_EMULATE
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#ifndef CM_EMULATE
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_shader_subgroup_basic : require
#endif
#include "attention.glsl"

// The tensor-core build keeps every fragment in registers (loops over fragments fully
// unrolled); the emulated build keeps its loops (lavapipe compiles the unrolled form for
// tens of seconds).
#ifndef CM_EMULATE
#define UNROLL [[unroll]]
#else
#define UNROLL [[dont_unroll]]
#endif

layout(local_size_x_id = 3) in;
layout(constant_id = 0) const uint HEAD_DIM = 128u; // multiple of 16, <= 256
layout(constant_id = 1) const uint NSG = 4u;        // subgroups; BR = 16 * NSG rows
layout(constant_id = 2) const uint BC = 16u;        // keys per step, multiple of 16 (the
                                                    // default fits 32 KiB of shared memory)
layout(constant_id = 3) const uint WG = 128u;       // = 32 * NSG

const uint BR = 16u * NSG;
const uint HALF = HEAD_DIM / 2u;
const uint CPR = HEAD_DIM / 8u; // uvec4 chunks per K/V/Q row
const uint RS = CPR + 1u;
const uint SRS = BC / 4u + 1u;
const uint Q_OFF = 0u;
const uint K_OFF = BR * RS;
const uint V_OFF = K_OFF + BC * RS;
const uint S_OFF = V_OFF + BC * RS;
const uint SH_SIZE = S_OFF + BR * SRS;
const uint KV_CHUNKS = BC * CPR;
const uint KV_PER_THREAD = (KV_CHUNKS + WG - 1u) / WG;
const uint Q_CHUNKS = BR * CPR;
const uint HALF_BC = BC / 2u; // columns per lane in the softmax

layout(std430, binding = 0) readonly buffer Q { vec2 q[]; };
layout(std430, binding = 1) readonly buffer KCache { uvec4 k_cache[]; };
layout(std430, binding = 2) readonly buffer VCache { uvec4 v_cache[]; };
layout(std430, binding = 3) readonly buffer Tables { int block_tables[]; };
layout(std430, binding = 4) readonly buffer QStart { int query_start[]; };
layout(std430, binding = 5) readonly buffer Ctx { int context_lens[]; };
layout(std430, binding = 6) writeonly buffer Out { vec2 out_rows[]; };

layout(push_constant) uniform Push {
    uint n_seqs;
    uint n_head;
    uint n_head_kv;
    uint block_size;
    uint num_blocks;
    uint table_stride;
    uint q_stride;
    uint window;
    float scale;
    float softcap;
} pc;

shared uvec4 sh[SH_SIZE];
shared float alpha_s[BR];
shared float xch_s[WG];

// Fragment operations. ACC: 16x8 f32 accumulator. FRAG_A: 16x16 fp16 (rows x k),
// row-major at `off` with row stride `st` (uvec4 units). FRAG_B: 16x8 fp16 (k x n), from
// `off` with stride `st`, column-major (element (k, n) in column n's run) when cm.
#ifndef CM_EMULATE
#define CM_SCOPE 3 /* Subgroup */
#define ACC fcoopmatNV<32, CM_SCOPE, 16, 8>
#define FRAG_A fcoopmatNV<16, CM_SCOPE, 16, 16>
#define FRAG_B fcoopmatNV<16, CM_SCOPE, 16, 8>
#define ACC_ZERO ACC(0.0)
#define LOAD_A(dst, off, st) coopMatLoadNV(dst, sh, off, st, false)
#define LOAD_B(dst, off, st, cm) coopMatLoadNV(dst, sh, off, st, cm)
#define MMA(a, b, c) coopMatMulAddNV(a, b, c)
#define STORE_ACC(src, off, st) coopMatStoreNV(src, sh, off, st, false)
#define LOAD_ACC(dst, off, st) coopMatLoadNV(dst, sh, off, st, false)
// S/P rows and the staging rows are private to one subgroup
#define SG_SYNC()                                                                          \
    {                                                                                      \
        subgroupMemoryBarrierShared();                                                     \
        subgroupBarrier();                                                                 \
    }
#else
#define ACC vec4
#define FRAG_A uvec2
#define FRAG_B uvec3
#define ACC_ZERO vec4(0.0)
#define LOAD_A(dst, off, st) dst = uvec2(off, st)
#define LOAD_B(dst, off, st, cm) dst = uvec3(off, st, (cm) ? 1u : 0u)
#define MMA(a, b, c) emu_mma(a, b, c)
#define STORE_ACC(src, off, st) emu_store(src, off, st)
#define LOAD_ACC(dst, off, st) dst = emu_load(off, st)
// virtual subgroups span several real ones (lavapipe: 8 lanes)
#define SG_SYNC() barrier()
uint emu_lane() { return gl_LocalInvocationID.x % 32u; }
// The 16 halves of the run that starts at uvec4 `at`, as floats.
void emu_run16(uint at, out vec2 h[8]) {
    uvec4 lo = sh[at], hi = sh[at + 1u];
    h[0] = unpackHalf2x16(lo.x), h[1] = unpackHalf2x16(lo.y);
    h[2] = unpackHalf2x16(lo.z), h[3] = unpackHalf2x16(lo.w);
    h[4] = unpackHalf2x16(hi.x), h[5] = unpackHalf2x16(hi.y);
    h[6] = unpackHalf2x16(hi.z), h[7] = unpackHalf2x16(hi.w);
}
float emu_dot16(vec2 x[8], vec2 y[8]) {
    float s = 0.0;
    for (uint i = 0u; i < 8u; i++) s += x[i].x * y[i].x + x[i].y * y[i].y;
    return s;
}
// This lane's elements e = lane + 32*e4 all lie in row m = lane % 16 (columns
// n = lane / 16 + 2*e4), so the A row is read once.
vec4 emu_mma(uvec2 a, uvec3 b, vec4 c) {
    uint lane = emu_lane(), m = lane % 16u, n0 = lane / 16u;
    vec2 ar[8];
    emu_run16(a.x + m * a.y, ar);
    if (b.z != 0u) { // column n of B is a run of 16 halves
        for (uint e4 = 0u; e4 < 4u; e4++) {
            vec2 bc[8];
            emu_run16(b.x + (n0 + 2u * e4) * b.y, bc);
            c[e4] += emu_dot16(ar, bc);
        }
    } else { // row k of B holds columns 0..7: this lane's are halves n0, n0+2, n0+4, n0+6
        for (uint k = 0u; k < 16u; k++) {
            uvec4 w = sh[b.x + k * b.y];
            vec4 bk = n0 == 0u ? vec4(unpackHalf2x16(w.x).x, unpackHalf2x16(w.y).x,
                                      unpackHalf2x16(w.z).x, unpackHalf2x16(w.w).x)
                               : vec4(unpackHalf2x16(w.x).y, unpackHalf2x16(w.y).y,
                                      unpackHalf2x16(w.z).y, unpackHalf2x16(w.w).y);
            c += ar[k / 2u][k & 1u] * bk;
        }
    }
    return c;
}
void emu_store(vec4 v, uint off, uint st) {
    for (uint e4 = 0u; e4 < 4u; e4++) {
        uint e = emu_lane() + 32u * e4, m = e % 16u, n = e / 16u;
        sh[off + m * st + n / 4u][n % 4u] = floatBitsToUint(v[e4]);
    }
}
vec4 emu_load(uint off, uint st) {
    vec4 v;
    for (uint e4 = 0u; e4 < 4u; e4++) {
        uint e = emu_lane() + 32u * e4, m = e % 16u, n = e / 16u;
        v[e4] = uintBitsToFloat(sh[off + m * st + n / 4u][n % 4u]);
    }
    return v;
}
#endif

uvec4 next_k[KV_PER_THREAD], next_v[KV_PER_THREAD];

// Loads the K and V chunks of keys [tile0, tile0 + BC) into next_k / next_v. Chunk i is
// uvec4 i % CPR of key i / CPR (CPR consecutive invocations read one 16*CPR-byte row);
// keys past k_end are clamped to the last one (in-bounds reads that are masked out).
void load_kv(uint tile0, uint k_end, uint table, uint kv_head, uint tid) {
    UNROLL for (uint j = 0u; j < KV_PER_THREAD; j++) {
        uint i = tid + j * WG;
        uint pos = min(tile0 + i / CPR, k_end - 1u);
        uint blk = uint(max(block_tables[table + pos / pc.block_size], 0));
        blk = min(blk, pc.num_blocks - 1u);
        uint at = attn_kv_row_word(blk, kv_head, pos % pc.block_size, pc.n_head_kv,
                                   pc.block_size, HEAD_DIM) / 4u + i % CPR;
        if (KV_CHUNKS % WG == 0u || i < KV_CHUNKS) {
            next_k[j] = k_cache[at];
            next_v[j] = v_cache[at];
        }
    }
}

void store_kv(uint tid) {
    UNROLL for (uint j = 0u; j < KV_PER_THREAD; j++) {
        uint i = tid + j * WG;
        if (KV_CHUNKS % WG == 0u || i < KV_CHUNKS) {
            sh[K_OFF + (i / CPR) * RS + i % CPR] = next_k[j];
            sh[V_OFF + (i / CPR) * RS + i % CPR] = next_v[j];
        }
    }
}

void main() {
    uint tid = gl_LocalInvocationID.x;
#ifndef CM_EMULATE
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
#else
    uint sg = tid / 32u, lane = tid % 32u;
#endif
    uvec3 grid = gl_NumWorkGroups;
    uint linear = gl_WorkGroupID.x + grid.x * (gl_WorkGroupID.y + grid.y * gl_WorkGroupID.z);
    uint kv_head = linear % grid.z, rest = linear / grid.z;
    uint seq = rest % grid.y, tile = grid.x - 1u - rest / grid.y;
    uint group = pc.n_head / pc.n_head_kv;
    int q_first = query_start[seq];
    int n_q_signed = query_start[seq + 1u] - q_first;
    int ctx_signed = context_lens[seq];
    if (n_q_signed <= 0 || ctx_signed < n_q_signed) return;
    uint n_q = uint(n_q_signed), ctx = uint(ctx_signed), start = ctx - n_q;
    uint rows = n_q * group;
    uint r0 = tile * BR;
    if (r0 >= rows) return;
    uint nr = min(BR, rows - r0);
    uint table = seq * pc.table_stride;
    uint first_pos = start + r0 / group, last_pos = start + (r0 + nr - 1u) / group;
    uint k_lo = (pc.window > 0u && first_pos + 1u > pc.window) ? first_pos + 1u - pc.window : 0u;
    uint k_end = last_pos + 1u;
    uint n_steps = (k_end - k_lo + BC - 1u) / BC;

    load_kv(k_lo, k_end, table, kv_head, tid);
    // Q tile, pre-scaled, fp16; rows past the sequence are zeros (never written out).
    for (uint i = tid; i < Q_CHUNKS; i += WG) {
        uint r = i / CPR, c = i % CPR;
        uvec4 h = uvec4(0u);
        if (r < nr) {
            uint row_index = r0 + r, tok = row_index / group, g = row_index - tok * group;
            uint at = ((uint(q_first) + tok) * pc.q_stride) / 2u + (kv_head * group + g) * HALF +
                      c * 4u;
            h = uvec4(packHalf2x16(q[at] * pc.scale), packHalf2x16(q[at + 1u] * pc.scale),
                      packHalf2x16(q[at + 2u] * pc.scale), packHalf2x16(q[at + 3u] * pc.scale));
        }
        sh[Q_OFF + r * RS + c] = h;
    }
    store_kv(tid);

    // This subgroup's S rows; the row map (element (r, c) = r) goes there first.
    uint s_rows = S_OFF + sg * 16u * SRS;
    for (uint e = lane; e < 128u; e += 32u)
        sh[s_rows + (e / 8u) * SRS + (e % 8u) / 4u][e % 4u] = floatBitsToUint(float(e / 8u));
    SG_SYNC();
    ACC rowmap;
    LOAD_ACC(rowmap, s_rows, SRS);

    // Softmax role: row rs (of the subgroup's 16), columns [half_id * BC/2, +BC/2).
    uint rs = lane / 2u, half_id = lane & 1u, rt = sg * 16u + rs;
    uint q_pos = start + (r0 + rt) / group;
    float m_run = ATTN_MASKED, l_run = 0.0; // l_run: this lane's columns only

    ACC o[CPR];
    UNROLL for (uint f = 0u; f < CPR; f++) o[f] = ACC_ZERO;
    barrier();

    for (uint step = 0u; step < n_steps; step++) {
        uint tile0 = k_lo + step * BC;
        if (step + 1u < n_steps) load_kv(tile0 + BC, k_end, table, kv_head, tid);

        // S = Q Kᵀ: A = 16 Q rows x 16 dims, B = 16 dims x 8 keys (K rows, column-major).
        ACC s_acc[BC / 8u];
        UNROLL for (uint f = 0u; f < BC / 8u; f++) s_acc[f] = ACC_ZERO;
        UNROLL for (uint kk = 0u; kk < HEAD_DIM / 16u; kk++) {
            FRAG_A a;
            LOAD_A(a, Q_OFF + sg * 16u * RS + kk * 2u, RS);
            UNROLL for (uint f = 0u; f < BC / 8u; f++) {
                FRAG_B b;
                LOAD_B(b, K_OFF + f * 8u * RS + kk * 2u, RS, true);
                s_acc[f] = MMA(a, b, s_acc[f]);
            }
        }
        UNROLL for (uint f = 0u; f < BC / 8u; f++) STORE_ACC(s_acc[f], s_rows + f * 2u, SRS);
        SG_SYNC();

        // Online softmax of row rt over this lane's half of the keys.
        float sv[HALF_BC];
        float mx = ATTN_MASKED;
        uint c0 = half_id * HALF_BC, srow = S_OFF + rt * SRS;
        UNROLL for (uint c = 0u; c < HALF_BC; c += 4u) {
            uvec4 w = sh[srow + (c0 + c) / 4u];
            UNROLL for (uint u = 0u; u < 4u; u++) {
                uint kpos = tile0 + c0 + c + u;
                bool visible =
                    kpos < k_end && kpos <= q_pos && (pc.window == 0u || kpos + pc.window > q_pos);
                float s = visible ? attn_score(uintBitsToFloat(w[u]), 1.0, pc.softcap)
                                  : ATTN_MASKED;
                sv[c + u] = s;
                mx = max(mx, s);
            }
        }
        xch_s[sg * 32u + lane] = mx;
        SG_SYNC(); // also: every lane has read its S words before P overwrites them
        mx = max(mx, xch_s[sg * 32u + (lane ^ 1u)]);
        float m_new = max(m_run, mx);
        float alpha = attn_prob(m_run, m_new);
        float sum = 0.0;
        UNROLL for (uint c = 0u; c < HALF_BC; c += 8u) {
            vec2 p0 = vec2(attn_prob(sv[c], m_new), attn_prob(sv[c + 1u], m_new));
            vec2 p1 = vec2(attn_prob(sv[c + 2u], m_new), attn_prob(sv[c + 3u], m_new));
            vec2 p2 = vec2(attn_prob(sv[c + 4u], m_new), attn_prob(sv[c + 5u], m_new));
            vec2 p3 = vec2(attn_prob(sv[c + 6u], m_new), attn_prob(sv[c + 7u], m_new));
            sum += p0.x + p0.y + p1.x + p1.y + p2.x + p2.y + p3.x + p3.y;
            sh[srow + (c0 + c) / 8u] = uvec4(packHalf2x16(p0), packHalf2x16(p1),
                                             packHalf2x16(p2), packHalf2x16(p3));
        }
        l_run = l_run * alpha + sum;
        m_run = m_new;
        if (half_id == 0u) alpha_s[rt] = alpha;
        SG_SYNC();

        // O = O * alpha (per row) + P V: A = 16 rows x 16 keys of P, B = 16 keys x 8 dims.
        ACC alpha_frag = ACC_ZERO;
        for (int i = 0; i < alpha_frag.length(); i++)
            alpha_frag[i] = alpha_s[sg * 16u + uint(rowmap[i])];
        UNROLL for (uint f = 0u; f < CPR; f++)
            for (int i = 0; i < alpha_frag.length(); i++) o[f][i] *= alpha_frag[i];
        UNROLL for (uint kk = 0u; kk < BC / 16u; kk++) {
            FRAG_A a;
            LOAD_A(a, s_rows + kk * 2u, SRS);
            UNROLL for (uint f = 0u; f < CPR; f++) {
                FRAG_B b;
                LOAD_B(b, V_OFF + kk * 16u * RS + f, RS, false);
                o[f] = MMA(a, b, o[f]);
            }
        }
        barrier();
        if (step + 1u < n_steps) store_kv(tid);
        barrier();
    }

    // Row sums: the two lanes of a row add their halves; alpha_s takes 1/l.
    xch_s[sg * 32u + lane] = l_run;
    SG_SYNC();
    float l_row = l_run + xch_s[sg * 32u + (lane ^ 1u)];
    if (half_id == 0u) alpha_s[rt] = l_row > 0.0 ? 1.0 / l_row : 0.0;
    SG_SYNC();
    ACC inv_l = ACC_ZERO;
    for (int i = 0; i < inv_l.length(); i++) inv_l[i] = alpha_s[sg * 16u + uint(rowmap[i])];
    UNROLL for (uint f = 0u; f < CPR; f++)
        for (int i = 0; i < inv_l.length(); i++) o[f][i] *= inv_l[i];

    // Epilogue: BC columns at a time through the S rows, then vec2 stores of whole rows.
    UNROLL for (uint c0 = 0u; c0 < HEAD_DIM; c0 += BC) {
        UNROLL for (uint f = 0u; f < BC / 8u; f++)
            if (c0 / 8u + f < CPR) STORE_ACC(o[c0 / 8u + f], s_rows + f * 2u, SRS);
        SG_SYNC();
        uint cols2 = min(BC, HEAD_DIM - c0) / 2u; // vec2 per row this round
        for (uint e = lane; e < 16u * cols2; e += 32u) {
            uint r = e / cols2, c2 = e - r * cols2, rr = sg * 16u + r;
            if (rr < nr) {
                uint row_index = r0 + rr, tok = row_index / group, g = row_index - tok * group;
                uvec4 w = sh[s_rows + r * SRS + c2 / 2u];
                vec2 v = (c2 & 1u) == 0u ? uintBitsToFloat(w.xy) : uintBitsToFloat(w.zw);
                out_rows[((uint(q_first) + tok) * pc.n_head + kv_head * group + g) * HALF +
                         c0 / 2u + c2] = v;
            }
        }
        SG_SYNC();
    }
}
