#version 450
// split_k_reduce.comp: the second half of a split-K product (engine/exec/k_matmul_coopmat.c,
// "split-K across workgroups"): matmul_coopmat.comp ran once per slice of K, slice s
// writing its partial products to partial[s * slice_stride + t * rows + r]; this sums the
// slices in order s = 0, 1, ... and writes
//     y[y_offset + t * y_stride + r] = (ACCUMULATE ? y[...] : 0) + Σ_s partial + bias[r]
// for t < n_tokens, r < rows. One invocation per output element, grid-stride loop (any
// count fits a capped grid, dispatched over x and y). Each element is read and written
// by one invocation only, so ACCUMULATE reads Y in place safely.
// Bindings: 0 partial (f32), 1 y (f32, read when ACCUMULATE), 2 bias (f32; unused
// unless HAS_BIAS). Spec constants: 0 workgroup size, 1 HAS_BIAS, 2 ACCUMULATE.
// variant: split_k_reduce

layout(constant_id = 0) const uint WG_SIZE = 256;
layout(constant_id = 1) const uint HAS_BIAS = 0;
layout(constant_id = 2) const uint ACCUMULATE = 0;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Partials { float partial[]; };
layout(std430, binding = 1) buffer Outputs { float y[]; };
layout(std430, binding = 2) readonly buffer Biases { float bias[]; };

layout(push_constant) uniform Push {
    uint rows;         // outputs per token
    uint n_tokens;
    uint n_slices;     // partial products per output (>= 1)
    uint slice_stride; // floats between slices in partial
    uint y_stride;     // floats between tokens in Y
    uint y_offset;     // Y element of (token 0, row 0)
    uint bias_offset;  // bias element of row 0
} pc;

void main() {
    uint n = pc.rows * pc.n_tokens;
    uint step = gl_NumWorkGroups.x * gl_NumWorkGroups.y * WG_SIZE;
    uint first = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * WG_SIZE +
                 gl_LocalInvocationID.x;
    for (uint i = first; i < n; i += step) {
        uint t = i / pc.rows, r = i % pc.rows;
        float v = 0.0;
        for (uint s = 0u; s < pc.n_slices; s++) v += partial[s * pc.slice_stride + i];
        if (HAS_BIAS != 0u) v += bias[pc.bias_offset + r];
        uint at = pc.y_offset + t * pc.y_stride + r;
        if (ACCUMULATE != 0u) v += y[at];
        y[at] = v;
    }
}
