// argmax.comp: the index of the largest value of each row (greedy sampling on the
// GPU, so a step returns token ids instead of whole logit rows). Ties go to the
// lowest index, as in the CPU reference. One workgroup per row; a shared-memory
// tree reduction, so it needs nothing beyond Vulkan 1.1 core compute.
// variant: argmax_f32
#version 450

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
    for (uint c = tid; c < pc.n_cols; c += 256) {
        float v = logits[row * pc.row_stride + c];
        if (better(v, int(c), bv, bi)) {
            bv = v;
            bi = int(c);
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
