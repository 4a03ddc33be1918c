#version 450
// topk.comp: the k largest logits of each row (k <= 256), sorted, plus the row statistics
// the sampler needs to normalize without the rest of the row, so a step reads back
// k candidates per row instead of the whole vocabulary. One workgroup of 256 per row.
//
// Bindings: 0 logits [rows][row_stride] f32 (readonly), 1 ids [rows][k] int,
// 2 values [rows][k] f32, 3 stats [rows][4] f32, 4 inv_temperature [rows] f32 (readonly).
// Push constants: n_cols, row_stride, k.
// Output order: value descending, equal values lower id first (as the CPU sampler);
// NaN ranks below -inf and -0.0 equals +0.0. When n_cols < k the tail is id -1, -inf.
// stats[r] = {max, sum exp(x - max), sum exp((x - max) * inv_temperature[r]), 0} over
// non-NaN x (max -inf and sums 0 when there is none).
//
// Method: radix select on 32-bit order-preserving keys, 8 bits per pass (4 passes, each
// a shared-memory histogram of the still-matching keys), gives the k-th largest key T;
// when more keys equal T than are needed, 4 more passes select the lowest ids among them.
// A gather pass collects the winners into shared memory and a bitonic sort orders them.
// The first pass also finds the max, the second sums the exponentials. Atomics on shared
// memory only: Vulkan 1.1 core compute.
// variant: topk_f32

layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) writeonly buffer Ids { int out_ids[]; };
layout(std430, binding = 2) writeonly buffer Values { float out_values[]; };
layout(std430, binding = 3) writeonly buffer Stats { float out_stats[]; };
layout(std430, binding = 4) readonly buffer InvTemp { float inv_temperature[]; };

layout(push_constant) uniform Push {
    uint n_cols;
    uint row_stride;
    uint k;
} pc;

shared uint hist[256];
shared float reduce_a[256];
shared float reduce_b[256];
shared uint sel_key[256];
shared uint sel_id[256];
shared uint s_prefix, s_mask, s_remaining, s_equal, s_count;

uint key_of(float v) {
    if (isnan(v)) return 0u;
    uint b = v == 0.0 ? 0u : floatBitsToUint(v);
    return (b & 0x80000000u) != 0u ? ~b : (b | 0x80000000u);
}

// After a histogram pass: thread 0 finds the digit holding the s_remaining-th largest.
void choose_digit(uint shift) {
    if (gl_LocalInvocationID.x == 0) {
        uint above = 0u;
        for (int b = 255; b >= 0; b--) {
            uint h = hist[b];
            if (above + h >= s_remaining) {
                s_prefix |= uint(b) << shift;
                s_mask |= 0xFFu << shift;
                s_remaining -= above;
                s_equal = h;
                break;
            }
            above += h;
        }
    }
    barrier();
}

void main() {
    uint row = gl_WorkGroupID.x;
    uint tid = gl_LocalInvocationID.x;
    uint base = row * pc.row_stride;
    uint n = pc.n_cols;
    uint k_eff = min(pc.k, n);

    if (tid == 0) {
        s_prefix = 0u;
        s_mask = 0u;
        s_remaining = k_eff;
        s_equal = 0u;
        s_count = 0u;
    }

    // ---- value passes (the first also finds the max, the second sums exponentials)
    float row_max = -1.0 / 0.0;
    for (int d = 3; d >= 0; d--) {
        uint shift = uint(d) * 8u;
        hist[tid] = 0u;
        barrier();
        uint prefix = s_prefix, mask = s_mask;
        float local_max = -1.0 / 0.0, sum_raw = 0.0, sum_temp = 0.0;
        float inv_t = inv_temperature[row];
        for (uint c = tid; c < n; c += 256u) {
            float v = logits[base + c];
            uint key = key_of(v);
            if ((key & mask) == prefix) atomicAdd(hist[(key >> shift) & 0xFFu], 1u);
            if (d == 3) {
                if (!isnan(v)) local_max = max(local_max, v);
            } else if (d == 2 && !isnan(v) && row_max > -1.0 / 0.0) {
                sum_raw += exp(v - row_max);
                sum_temp += exp((v - row_max) * inv_t);
            }
        }
        if (d == 3) reduce_a[tid] = local_max;
        if (d == 2) {
            reduce_a[tid] = sum_raw;
            reduce_b[tid] = sum_temp;
        }
        barrier();
        for (uint s = 128u; s > 0u; s >>= 1) {
            if (tid < s) {
                if (d == 3) reduce_a[tid] = max(reduce_a[tid], reduce_a[tid + s]);
                if (d == 2) {
                    reduce_a[tid] += reduce_a[tid + s];
                    reduce_b[tid] += reduce_b[tid + s];
                }
            }
            barrier();
        }
        if (d == 3) row_max = reduce_a[0];
        if (d == 2 && tid == 0) {
            out_stats[row * 4u + 0u] = row_max;
            out_stats[row * 4u + 1u] = reduce_a[0];
            out_stats[row * 4u + 2u] = reduce_b[0];
            out_stats[row * 4u + 3u] = 0.0;
        }
        if (k_eff > 0u) choose_digit(shift);
        barrier();
    }
    uint threshold = s_prefix;

    // ---- ties at the threshold: the lowest ids among keys == threshold
    bool ties = k_eff > 0u && s_equal > s_remaining;
    uint id_limit = 0xFFFFFFFFu; // take ids <= id_limit among keys == threshold
    if (ties) {
        barrier();
        if (tid == 0) {
            s_prefix = 0u;
            s_mask = 0u;
        }
        barrier();
        for (int d = 3; d >= 0; d--) {
            uint shift = uint(d) * 8u;
            hist[tid] = 0u;
            barrier();
            uint prefix = s_prefix, mask = s_mask;
            for (uint c = tid; c < n; c += 256u) {
                if (key_of(logits[base + c]) != threshold) continue;
                uint idkey = ~c; // larger idkey = lower id
                if ((idkey & mask) == prefix) atomicAdd(hist[(idkey >> shift) & 0xFFu], 1u);
            }
            barrier();
            choose_digit(shift);
            barrier();
        }
        id_limit = ~s_prefix;
    }

    // ---- gather into shared memory, pad, bitonic sort (descending), write
    sel_key[tid] = 0u;
    sel_id[tid] = 0xFFFFFFFFu;
    barrier();
    for (uint c = tid; c < n && k_eff > 0u; c += 256u) {
        uint key = key_of(logits[base + c]);
        if (key > threshold || (key == threshold && c <= id_limit)) {
            uint slot = atomicAdd(s_count, 1u);
            if (slot < 256u) {
                sel_key[slot] = key;
                sel_id[slot] = c;
            }
        }
    }
    barrier();
    for (uint size = 2u; size <= 256u; size <<= 1) {
        for (uint stride = size >> 1; stride > 0u; stride >>= 1) {
            uint j = tid ^ stride;
            if (j > tid) {
                uint ki = sel_key[tid], kj = sel_key[j], ii = sel_id[tid], ij = sel_id[j];
                bool j_better = kj > ki || (kj == ki && ij < ii);
                bool i_better = ki > kj || (ki == kj && ii < ij);
                bool descending = (tid & size) == 0u;
                if (descending ? j_better : i_better) {
                    sel_key[tid] = kj;
                    sel_key[j] = ki;
                    sel_id[tid] = ij;
                    sel_id[j] = ii;
                }
            }
            barrier();
        }
    }
    for (uint j = tid; j < pc.k; j += 256u) {
        if (j < k_eff) {
            uint id = sel_id[j];
            out_ids[row * pc.k + j] = int(id);
            out_values[row * pc.k + j] = logits[base + id];
        } else {
            out_ids[row * pc.k + j] = -1;
            out_values[row * pc.k + j] = -1.0 / 0.0;
        }
    }
}
