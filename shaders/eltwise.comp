#version 450
/* eltwise.comp: elementwise f32 ops over n values, one invocation per element
 * with a grid-stride loop (any n fits in a capped number of workgroups).
 *
 *   add:           out = a + b          bindings 0 a, 1 b, 2 out; push n
 *   scale_softcap: out = x * scale, then cap * tanh(out / cap) if cap > 0
 *                                       bindings 0 x, 1 out; push n, scale, cap
 * In place (out bound to the same range as an input) is safe: each element is
 * read and written by the same invocation. Spec constant 0: workgroup size. */
// variant: add OP_ADD
// variant: scale_softcap OP_SCALE_SOFTCAP
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

#include "ops_math.glsl"

#ifdef OP_ADD
layout(std430, binding = 0) readonly buffer ABuffer { float a[]; };
layout(std430, binding = 1) readonly buffer BBuffer { float b[]; };
layout(std430, binding = 2) writeonly buffer OutBuffer { float out_values[]; };
layout(push_constant) uniform PushConstants { uint n; } pc;
#else
layout(std430, binding = 0) readonly buffer XBuffer { float x[]; };
layout(std430, binding = 1) writeonly buffer OutBuffer { float out_values[]; };
layout(push_constant) uniform PushConstants {
    uint n;
    float scale;
    float softcap;
} pc;
#endif

void main() {
    uint step = gl_NumWorkGroups.x * BLOCK_SIZE;
    for (uint i = gl_GlobalInvocationID.x; i < pc.n; i += step) {
#ifdef OP_ADD
        out_values[i] = a[i] + b[i];
#else
        out_values[i] = ops_scale_softcap(x[i], pc.scale, pc.softcap);
#endif
    }
}
