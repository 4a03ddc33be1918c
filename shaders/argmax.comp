// argmax.comp: the index of the largest value of each row (greedy sampling on the
// GPU, so a step returns token ids instead of whole logit rows). Ties go to the
// lowest index, as in the CPU reference; NaN never wins; a row with no non-NaN value
// gives -1. Shared-memory tree reductions, so it needs nothing beyond Vulkan 1.1 core
// compute.
//
// argmax_f32: one workgroup per row (gl_WorkGroupID.x = row).
// argmax_f32_split (SPLIT): a row is cut into chunks of CHUNK_COLS values, one workgroup
// each (x = chunk, y = row), so a 128k vocabulary is read by ~128 workgroups at once
// instead of walked by one (44 us for one workgroup on an H100). Each workgroup writes its
// (value, index) to partials[row * n_chunks + chunk] and counts itself in counters[row];
// the workgroup that brings the count to n_chunks merges the row's partials, writes the
// result and sets the counter back to 0 for the next dispatch (the caller zeroes the
// counters once). Visibility as in attn_decode_sg.comp's fused reduce: partials and
// counters are coherent; the writer orders its partial before its increment with
// memoryBarrierBuffer(), and the last workgroup reads after its own increment.
// variant: argmax_f32
// variant: argmax_f32_split SPLIT
#version 450
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint CHUNK_COLS = 1024; // SPLIT: values per workgroup

layout(binding = 0) readonly buffer Logits { float logits[]; };
layout(binding = 1) writeonly buffer Result { int result[]; };
#ifdef SPLIT
layout(binding = 2) coherent buffer Partials { uvec2 partials[]; }; // (value bits, index)
layout(binding = 3) coherent buffer Counters { uint counters[]; };
#endif

layout(push_constant) uniform Push {
    uint n_cols;     // values per row
    uint row_stride; // floats between rows
} pc;

shared float best_value[256];
shared int best_index[256];

bool better(float v, int i, float bv, int bi) {
    // NaN never wins; equal values keep the lower index.
    return !isnan(v) && (bi < 0 || v > bv || (v == bv && i < bi));
}

// The best of columns [begin, end) of `row` seen by this invocation (index -1: none).
void scan(uint row, uint begin, uint end, uint tid, out float bv, out int bi) {
    bv = 0.0;
    bi = -1;
    // UNROLL loads in flight per invocation: a plain strided loop waits a full memory
    // latency per value (61 µs for a 128k vocabulary on an H100).
    const uint UNROLL = 16u;
    for (uint c0 = begin + tid; c0 < end; c0 += 256u * UNROLL) {
        float v[UNROLL];
        [[unroll]] for (uint k = 0u; k < UNROLL; k++) {
            uint c = c0 + 256u * k;
            // an in-bounds load and a select (OpSelect), not a branch around the load
            v[k] = mix(0.0, logits[row * pc.row_stride + min(c, end - 1u)], c < end);
        }
        [[unroll]] for (uint k = 0u; k < UNROLL; k++) {
            uint c = c0 + 256u * k;
            if (c < end && better(v[k], int(c), bv, bi)) {
                bv = v[k];
                bi = int(c);
            }
        }
    }
}

// The workgroup's best of every invocation's (bv, bi), in best_value[0], best_index[0].
void reduce(uint tid, float bv, int bi) {
    best_value[tid] = bv;
    best_index[tid] = bi;
    barrier();
    for (uint s = 128; s > 0; s >>= 1) {
        if (tid < s) {
            float v = best_value[tid + s];
            int i = best_index[tid + s];
            if (i >= 0 && better(v, i, best_value[tid], best_index[tid])) {
                best_value[tid] = v;
                best_index[tid] = i;
            }
        }
        barrier();
    }
}

#ifndef SPLIT
void main() {
    uint row = gl_WorkGroupID.x, tid = gl_LocalInvocationID.x;
    float bv;
    int bi;
    scan(row, 0u, pc.n_cols, tid, bv, bi);
    reduce(tid, bv, bi);
    if (tid == 0u) result[row] = best_index[0];
}
#else
shared bool is_last;

void main() {
    uint chunk = gl_WorkGroupID.x, row = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
    uint n_chunks = (pc.n_cols + CHUNK_COLS - 1u) / CHUNK_COLS;
    uint begin = chunk * CHUNK_COLS, end = min(begin + CHUNK_COLS, pc.n_cols);
    float bv;
    int bi;
    scan(row, begin, end, tid, bv, bi);
    reduce(tid, bv, bi);
    if (tid == 0u) {
        partials[row * n_chunks + chunk] = uvec2(floatBitsToUint(best_value[0]), uint(best_index[0]));
        memoryBarrierBuffer();
        is_last = atomicAdd(counters[row], 1u) == n_chunks - 1u;
    }
    barrier();
    if (!is_last) return;
    memoryBarrierBuffer();
    bv = 0.0;
    bi = -1;
    for (uint c = tid; c < n_chunks; c += 256u) {
        uvec2 p = partials[row * n_chunks + c];
        float v = uintBitsToFloat(p.x);
        int i = int(p.y);
        if (i >= 0 && better(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    reduce(tid, bv, bi);
    if (tid == 0u) {
        result[row] = best_index[0];
        counters[row] = 0u;
    }
}
#endif
