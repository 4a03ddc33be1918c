#version 450
/* softmax.comp: softmax over rows with optional scale and soft-cap, one workgroup per row.
 *
 *   y = x * scale; if (softcap > 0) y = softcap * tanh(y / softcap);
 *   out[r][i] = exp(y_i - max_j y_j) / sum_j exp(y_j - max_j y_j)
 *
 * Bindings: 0 x [rows][n] f32, 1 out [rows][n] f32 (may be x: each invocation
 * writes only elements it alone read). Push constants: rows, n, scale, softcap.
 * Spec constant 0: workgroup size (power of two).
 * Two passes over the row: an online (max, sum) per invocation, merged across
 * the workgroup by rescaling each partial sum to the row maximum; then the
 * normalized write. -inf inputs are masked: they give 0 whatever scale and
 * softcap are (the mask applies after capping, as in Gemma 2 attention, where
 * tanh would otherwise turn -inf into -softcap); a row with no unmasked entry
 * is written as all zeros (the CPU reference does the same). */
// variant: softmax
// variant: softmax_sg USE_SUBGROUP
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer XBuffer { float x[]; };
layout(std430, binding = 1) writeonly buffer OutBuffer { float out_values[]; };

layout(push_constant) uniform PushConstants {
    uint rows;
    uint n;
    float scale;
    float softcap;
} pc;

#include "ops_math.glsl"
#include "ops_reduce.glsl"

#define NEG_INF uintBitsToFloat(0xff800000u)

void main() {
    uint row = ops_row_index();
    if (row >= pc.rows) return; /* uniform across the workgroup */
    uint lid = gl_LocalInvocationID.x;
    uint base = row * pc.n;

    float local_max = NEG_INF, local_sum = 0.0;
    for (uint i = lid; i < pc.n; i += BLOCK_SIZE) {
        float v = x[base + i];
        if (v == NEG_INF) continue;
        float y = ops_scale_softcap(v, pc.scale, pc.softcap);
        if (y > local_max) {
            local_sum = local_sum * exp(local_max - y) + 1.0; /* exp(-inf) = 0 on the first hit */
            local_max = y;
        } else {
            local_sum += exp(y - local_max);
        }
    }
    float row_max = ops_wg_max(local_max);
    if (row_max == NEG_INF) { /* every entry masked (uniform: all see the same max) */
        for (uint i = lid; i < pc.n; i += BLOCK_SIZE) out_values[base + i] = 0.0;
        return;
    }
    float rescaled = local_sum > 0.0 ? local_sum * exp(local_max - row_max) : 0.0;
    float inv_sum = 1.0 / ops_wg_sum(rescaled);

    for (uint i = lid; i < pc.n; i += BLOCK_SIZE) {
        float v = x[base + i];
        float y = ops_scale_softcap(v, pc.scale, pc.softcap);
        out_values[base + i] = v == NEG_INF ? 0.0 : exp(y - row_max) * inv_sum;
    }
}
