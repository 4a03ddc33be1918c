/* rope.glsl: the rotary-embedding angle shared by rope.comp and rope_kv.comp, so both
 * rotate bit for bit alike (docs/gguf-and-models.md §4.4).
 *
 * theta = pos * freq_scale * freq_base^(-2i/n_rot) / ff_i is computed in f32, as
 * llama.cpp and Hugging Face do, with freq_base^(-2i/n_rot) = exp2(i * log2_base_step),
 * log2_base_step = -2 log2(freq_base) / n_rot (host, double). Vulkan pins sin/cos
 * accuracy only on [-pi, pi], so theta is first reduced exactly (Cody-Waite): k =
 * round(theta / 2pi), with 2pi = C1 + C2 + C3 where C1 and C2 have 8 significant bits,
 * so k*C1 and k*C2 are exact for |k| < 2^16 (|theta| < 4e5); `precise` keeps the
 * compiler from re-associating or contracting those steps. */
#ifndef ROPE_GLSL
#define ROPE_GLSL

/* 2pi = C1 + C2 + C3 to about 2^-42; C1 = 6.28125, C2 = 0.00193023681640625 exactly. */
#define ROPE_TWO_PI_C1 uintBitsToFloat(0x40c90000u)
#define ROPE_TWO_PI_C2 uintBitsToFloat(0x3afd0000u)
#define ROPE_TWO_PI_C3 uintBitsToFloat(0x36aa2217u)
#define ROPE_INV_TWO_PI 0.15915494309189535

/* theta of pair i at position pos before the frequency factor. */
float rope_theta(int pos, uint i, float freq_scale, float log2_base_step) {
    return float(pos) * (freq_scale * exp2(float(i) * log2_base_step));
}

/* (cos, sin) of theta after the exact range reduction. */
vec2 rope_cos_sin(float theta) {
    precise float turns = round(theta * ROPE_INV_TWO_PI);
    precise float reduced =
        ((theta - turns * ROPE_TWO_PI_C1) - turns * ROPE_TWO_PI_C2) - turns * ROPE_TWO_PI_C3;
    return vec2(cos(reduced), sin(reduced));
}

#endif
