/* ops_math.glsl: activation and capping functions shared by the small-op shaders.
 *
 * Written with exp() only, because the precision of GLSL tanh() is not pinned
 * down by Vulkan (it is "inherited" from an exp-based formula and some drivers
 * map it to a ~2^-11 hardware approximation). Forms are chosen so that no
 * intermediate overflows into inf/inf and small results keep relative accuracy:
 *   silu(z)      = z / (1 + e^-z)
 *   gelu_tanh(z) = 0.5 z (1 + tanh(y)) = z / (1 + e^(-2y)),  y = sqrt(2/pi)(z + 0.044715 z^3)
 *   tanh(x)      = sign(x) (1 - e^(-2|x|)) / (1 + e^(-2|x|)), odd Taylor series for |x| < 1/16
 * (the series' first omitted term is below 1e-12 relative there). */

float ops_silu(float z) { return z / (1.0 + exp(-z)); }

float ops_gelu_tanh(float z) {
    const float sqrt_2_over_pi = 0.7978845608028654;
    float y = sqrt_2_over_pi * (z + 0.044715 * z * z * z);
    return z / (1.0 + exp(-2.0 * y));
}

float ops_tanh(float x) {
    float ax = abs(x);
    float r;
    if (ax < 0.0625) {
        float x2 = ax * ax;
        r = ax * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))));
    } else {
        float t = exp(-2.0 * ax);
        r = (1.0 - t) / (1.0 + t);
    }
    return x < 0.0 ? -r : r;
}

/* x * scale, then cap * tanh(. / cap) when cap > 0 (logit soft-capping). */
float ops_scale_softcap(float x, float scale, float cap) {
    float y = x * scale;
    return cap > 0.0 ? cap * ops_tanh(y / cap) : y;
}
