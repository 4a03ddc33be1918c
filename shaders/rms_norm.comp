#version 450
/* rms_norm.comp: RMSNorm with weight over rows, one workgroup per row.
 *
 *   out[r][i]       = x[r][i] * inversesqrt(mean_j x[r][j]^2 + eps) * w[i]   (rms_norm*)
 *   residual[r][i] += x[r][i] * inversesqrt(mean_j x[r][j]^2 + eps) * w[i]   (rms_norm_add*)
 *
 * Bindings: 0 x [rows][n] f32, 1 w [n] f32, 2 out (or residual) [rows][n] f32.
 * Push constants: rows, n, eps, and the row view: rows are grouped `group` per token
 * (heads), row r = (token t, head h) starts at float x_offset + t * x_stride + h * n of
 * x (out_offset + t * out_stride + h * n of out), so per-head Q/K norms can run in
 * place inside a fused QKV activation. Heads h >= w_split read the weight's second
 * row w[n .. 2n) (Q heads then K heads with one stacked q_norm|k_norm weight); the
 * plain contiguous case is group 1, strides n, offsets 0, w_split = 1 (never reached).
 * Spec constant 0: workgroup size (power of two).
 * In place (binding 2 = binding 0) is safe: each invocation reads, then writes,
 * only the elements i = lid (mod BLOCK_SIZE) of its row, and the reduction's
 * barriers separate every read of the first pass from every write.
 * The fused variants are Gemma 3's post-norms: x += RMSNorm(o) * w. */
// variant: rms_norm
// variant: rms_norm_sg USE_SUBGROUP
// variant: rms_norm_add FUSED_ADD
// variant: rms_norm_add_sg FUSED_ADD USE_SUBGROUP
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer XBuffer { float x[]; };
layout(std430, binding = 1) readonly buffer WBuffer { float w[]; };
layout(std430, binding = 2) buffer OutBuffer { float out_values[]; };

layout(push_constant) uniform PushConstants {
    uint rows;
    uint n;
    float eps;
    uint group;      /* rows per token */
    uint x_stride;   /* floats between tokens of x */
    uint x_offset;   /* float of (token 0, row 0) of x */
    uint out_stride; /* floats between tokens of out */
    uint out_offset; /* float of (token 0, row 0) of out */
    uint w_split;    /* heads h >= w_split use w[n + i] */
} pc;

#include "ops_reduce.glsl"

void main() {
    uint row = ops_row_index();
    if (row >= pc.rows) return; /* uniform across the workgroup */
    uint lid = gl_LocalInvocationID.x;
    uint token = row / pc.group;
    uint head = row - token * pc.group;
    uint base = pc.x_offset + token * pc.x_stride + head * pc.n;
    uint obase = pc.out_offset + token * pc.out_stride + head * pc.n;
    uint wbase = head >= pc.w_split ? pc.n : 0u;

    float sum_squares = 0.0;
    for (uint i = lid; i < pc.n; i += BLOCK_SIZE) {
        float v = x[base + i];
        sum_squares += v * v;
    }
    sum_squares = ops_wg_sum(sum_squares);
    float inv_rms = inversesqrt(sum_squares / float(pc.n) + pc.eps);

    for (uint i = lid; i < pc.n; i += BLOCK_SIZE) {
        float normed = x[base + i] * inv_rms * w[wbase + i];
#ifdef FUSED_ADD
        out_values[obase + i] += normed;
#else
        out_values[obase + i] = normed;
#endif
    }
}
