#version 450
/* glu.comp: gated linear units,
 *   out[r][i] = act(g[r*g_stride + i]) * u[u_offset + r*u_stride + i].
 *
 * act = silu (glu_silu: SwiGLU of llama/qwen) or gelu_tanh (glu_gelu_tanh: Gemma's GeGLU).
 * Bindings: 0 g f32, 1 u f32, 2 out [rows][n] f32. g and u may be the same
 * buffer (the two halves of a fused gate|up row: strides 2n, u_offset n).
 * Push constants: rows, n, g_stride, u_stride, u_offset (floats; u_offset lets
 * the up half of a fused row start at +n without an aligned binding offset). Spec constant 0:
 * workgroup size. One invocation per element with a grid-stride loop, so any
 * element count fits in a capped number of workgroups. */
// variant: glu_silu ACT_SILU
// variant: glu_gelu_tanh ACT_GELU_TANH
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer GBuffer { float g[]; };
layout(std430, binding = 1) readonly buffer UBuffer { float u[]; };
layout(std430, binding = 2) writeonly buffer OutBuffer { float out_values[]; };

layout(push_constant) uniform PushConstants {
    uint rows;
    uint n;
    uint g_stride;
    uint u_stride;
    uint u_offset;
} pc;

#include "ops_math.glsl"

void main() {
    uint total = pc.rows * pc.n;
    uint step = gl_NumWorkGroups.x * BLOCK_SIZE;
    for (uint idx = gl_GlobalInvocationID.x; idx < total; idx += step) {
        uint r = idx / pc.n, i = idx - r * pc.n;
        float gate = g[r * pc.g_stride + i];
#ifdef ACT_SILU
        float act = ops_silu(gate);
#else
        float act = ops_gelu_tanh(gate);
#endif
        out_values[idx] = act * u[pc.u_offset + r * pc.u_stride + i];
    }
}
