// argmax.comp: the index of the largest value of each row (greedy sampling on the
// GPU, so a step returns token ids instead of whole logit rows). Ties go to the
// lowest index, as in the CPU reference. One workgroup per row; a shared-memory
// tree reduction, so it needs nothing beyond Vulkan 1.1 core compute.
// variant: argmax_f32
#version 450
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x = 256) in;

layout(binding = 0) readonly buffer Logits { float logits[]; };
layout(binding = 1) writeonly buffer Result { int result[]; };

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

void main() {
    uint row = gl_WorkGroupID.x;
    uint tid = gl_LocalInvocationID.x;
    float bv = 0.0;
    int bi = -1;
    // UNROLL loads in flight per invocation: a plain strided loop waits a full memory
    // latency per value (61 µs for a 128k vocabulary on an H100).
    const uint UNROLL = 16u;
    for (uint c0 = tid; c0 < pc.n_cols; c0 += 256u * UNROLL) {
        float v[UNROLL];
        [[unroll]] for (uint k = 0u; k < UNROLL; k++) {
            uint c = c0 + 256u * k;
            // an in-bounds load and a select (OpSelect), not a branch around the load
            v[k] = mix(0.0, logits[row * pc.row_stride + min(c, pc.n_cols - 1u)], c < pc.n_cols);
        }
        [[unroll]] for (uint k = 0u; k < UNROLL; k++) {
            uint c = c0 + 256u * k;
            if (c < pc.n_cols && better(v[k], int(c), bv, bi)) {
                bv = v[k];
                bi = int(c);
            }
        }
    }
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
    if (tid == 0) result[row] = best_index[0];
}
