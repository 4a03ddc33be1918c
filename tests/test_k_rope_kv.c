/* test_k_rope_kv.c: RoPE fused with the KV-cache write (shaders/rope_kv.comp,
 * engine/exec/k_rope_kv.c) against
 *   - the separate pair it replaces, k_rope_ex over the Q and K heads then k_attn_kv_write,
 *     on the same inputs in another buffer: rows and both caches must agree bit for bit
 *     (the angle code is shared through rope.glsl; cache words neither path writes keep
 *     the poison in both);
 *   - the CPU references: ref_rope for the rotated Q/K heads (relative error bound
 *     ROPE_REL_BOUND = 1e-4: theta is f32 and grows with the position, < 512 here), the
 *     cache rows as fp16 of the rotated K (ROPE_CACHE_REL_BOUND = 1e-3, fp16 rounding 2^-11
 *     on top) and of V (bit for bit), V heads of the rows untouched, cache words of padding
 *     and out-of-range slots untouched (poison).
 * Random inputs (seed in every message); fused rows with padding between tokens and an
 * offset; several sequences' scattered slots; NORM and NEOX, partial rotary (n_rot <
 * head_dim, with an odd n_rot / 2), freq_factors, GQA and MHA, block sizes 8, 16, 32. */
// links: exec gpu ref
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ref_attention.h"
#include "common/test_gpu.h"
#include "common/test_util.h"
#include "exec/k_rope_kv.h"
#include "ref/ref_ops.h"

#define ROPE_REL_BOUND 1e-4
#define ROPE_CACHE_REL_BOUND 1e-3

static gpu_binding bind(const gpu_buffer *buffer) {
    return (gpu_binding){.buffer = buffer};
}

typedef struct rope_kv_case {
    uint64_t seed;
    uint32_t n_tokens, n_head, n_head_kv, head_dim, n_rot, block_size, num_blocks;
    uint32_t pad, offset; /* floats between rows beyond the width; floats before token 0 */
    k_rope_mode mode;
    bool freq_factors;
} rope_kv_case;

static void run_case(const rope_kv_case *c) {
    test_rng rng = test_rng_seeded(c->seed);
    k_attn_kv_layout kv = {.num_blocks = c->num_blocks,
                           .block_size = c->block_size,
                           .n_head_kv = c->n_head_kv,
                           .head_dim = c->head_dim};
    uint32_t hd = c->head_dim, T = c->n_tokens;
    uint32_t width = (c->n_head + 2 * c->n_head_kv) * hd, stride = width + c->pad;
    size_t n = (size_t)c->offset + (size_t)(T - 1) * stride + width;
    float *x = malloc(n * 4);
    test_fill_uniform(&rng, x, n, -2.0f, 2.0f);
    /* Distinct slots from a random permutation (several sequences' scattered blocks);
     * every 5th token padding, one past the cache. */
    uint32_t num_slots = c->num_blocks * c->block_size;
    cr_assert(T <= num_slots);
    uint32_t *perm = malloc(sizeof(uint32_t) * num_slots);
    for (uint32_t i = 0; i < num_slots; i++)
        perm[i] = i;
    for (uint32_t i = num_slots; i > 1; i--) {
        uint32_t j = test_rng_below(&rng, i), t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    int32_t *slots = malloc(4 * T), *pos = malloc(4 * T);
    for (uint32_t t = 0; t < T; t++) {
        slots[t] = t % 5 == 2 ? -1 : (int32_t)perm[t];
        pos[t] = (int32_t)test_rng_below(&rng, 512);
    }
    if (T > 3) slots[3] = (int32_t)num_slots;
    free(perm);
    float ff[128];
    for (uint32_t i = 0; i < c->n_rot / 2; i++)
        ff[i] = test_rng_uniform(&rng, 1.0f, 8.0f);
    char what[256];
    snprintf(what, sizeof what,
             "seed %llu: %s%s T=%u heads %u/%u hd %u n_rot %u bs %u pad %u offset %u",
             (unsigned long long)c->seed, c->mode == K_ROPE_NEOX ? "neox" : "norm",
             c->freq_factors ? " +ff" : "", T, c->n_head, c->n_head_kv, hd, c->n_rot, c->block_size,
             c->pad, c->offset);

    uint64_t cache_bytes = k_attn_layer_bytes(&kv);
    gpu_buffer qkv_f = test_gpu_buffer_from(x, n * 4), qkv_s = test_gpu_buffer_from(x, n * 4);
    gpu_buffer pos_b = test_gpu_buffer_from(pos, 4ull * T),
               slots_b = test_gpu_buffer_from(slots, 4ull * T);
    gpu_buffer ff_b = test_gpu_buffer_from(ff, 4ull * (c->n_rot / 2));
    gpu_buffer kf = test_gpu_buffer_poisoned(cache_bytes),
               vf = test_gpu_buffer_poisoned(cache_bytes);
    gpu_buffer ks = test_gpu_buffer_poisoned(cache_bytes),
               vs = test_gpu_buffer_poisoned(cache_bytes);
    float base = 10000.0f, scale = 0.5f;
    gpu_binding factors = c->freq_factors ? bind(&ff_b) : (gpu_binding){0};
    k_rope_kv_args a = {.qkv = bind(&qkv_f),
                        .n_tokens = T,
                        .n_head = c->n_head,
                        .x_stride = stride,
                        .x_offset = c->offset,
                        .positions = bind(&pos_b),
                        .freq_factors = factors,
                        .slots = bind(&slots_b),
                        .k_cache = bind(&kf),
                        .v_cache = bind(&vf),
                        .n_rot = c->n_rot,
                        .freq_base = base,
                        .freq_scale = scale,
                        .mode = c->mode};
    k_rope_args r = {.x = bind(&qkv_s),
                     .positions = bind(&pos_b),
                     .freq_factors = factors,
                     .out = bind(&qkv_s),
                     .n_tokens = T,
                     .n_heads = c->n_head + c->n_head_kv,
                     .head_dim = hd,
                     .n_rot = c->n_rot,
                     .x_stride = stride,
                     .x_offset = c->offset,
                     .out_stride = stride,
                     .out_offset = c->offset,
                     .freq_base = base,
                     .freq_scale = scale,
                     .mode = c->mode};
    k_attn_kv_write_args w = {.n_tokens = T,
                              .k_src = bind(&qkv_s),
                              .v_src = bind(&qkv_s),
                              .k_src_offset = c->offset + c->n_head * hd,
                              .v_src_offset = c->offset + (c->n_head + c->n_head_kv) * hd,
                              .k_src_stride = stride,
                              .v_src_stride = stride,
                              .slots = bind(&slots_b),
                              .k_cache = bind(&ks),
                              .v_cache = bind(&vs)};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status s1 = k_rope_kv_write(test_gpu(), cmd, &kv, &a);
    vkllm_status s2 = k_rope_ex(test_gpu(), cmd, &r);
    vkllm_status s3 = k_attn_kv_write(test_gpu(), cmd, &kv, &w);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s: submit: %s", what, vkllm_last_error());
    cr_assert(s1 == VKLLM_OK && s2 == VKLLM_OK && s3 == VKLLM_OK, "%s: %s", what,
              vkllm_last_error());

    float *out_f = malloc(n * 4), *out_s = malloc(n * 4);
    uint16_t *kfh = malloc(cache_bytes), *vfh = malloc(cache_bytes), *ksh = malloc(cache_bytes),
             *vsh = malloc(cache_bytes);
    test_gpu_read(&qkv_f, out_f, n * 4);
    test_gpu_read(&qkv_s, out_s, n * 4);
    test_gpu_read(&kf, kfh, cache_bytes);
    test_gpu_read(&vf, vfh, cache_bytes);
    test_gpu_read(&ks, ksh, cache_bytes);
    test_gpu_read(&vs, vsh, cache_bytes);
    /* 1. fused == separate, bit for bit */
    cr_assert(memcmp(out_f, out_s, n * 4) == 0, "%s: rows differ from rope + kv_write", what);
    cr_assert(memcmp(kfh, ksh, cache_bytes) == 0, "%s: K cache differs from rope + kv_write", what);
    cr_assert(memcmp(vfh, vsh, cache_bytes) == 0, "%s: V cache differs from rope + kv_write", what);

    /* 2. against the CPU references */
    uint32_t qk = c->n_head + c->n_head_kv;
    size_t dense_n = (size_t)T * qk * hd;
    float *dense = malloc(dense_n * 4), *ref = malloc(dense_n * 4), *got = malloc(dense_n * 4);
    for (uint32_t t = 0; t < T; t++) {
        memcpy(dense + (size_t)t * qk * hd, x + c->offset + (size_t)t * stride, 4ull * qk * hd);
        memcpy(got + (size_t)t * qk * hd, out_f + c->offset + (size_t)t * stride, 4ull * qk * hd);
    }
    ref_rope(dense, pos, c->freq_factors ? ff : NULL, ref, T, qk, hd, c->n_rot, base, scale,
             c->mode == K_ROPE_NEOX ? REF_ROPE_NEOX : REF_ROPE_NORM);
    double err = test_rel_error(got, ref, dense_n);
    cr_assert(err <= ROPE_REL_BOUND, "%s: Q/K rel error %.3g > %.3g", what, err, ROPE_REL_BOUND);
    /* everything outside the Q/K heads (V heads, padding between rows) is untouched */
    for (size_t i = 0; i < n; i++) {
        size_t rel = i < c->offset ? 0 : (i - c->offset) % stride;
        bool rotated = i >= c->offset && rel < (size_t)qk * hd;
        if (!rotated)
            cr_assert(out_f[i] == x[i], "%s: float %zu (not a Q/K element) changed", what, i);
    }
    ref_attn_cache rc = {.num_blocks = kv.num_blocks,
                         .block_size = kv.block_size,
                         .n_head_kv = kv.n_head_kv,
                         .head_dim = hd};
    bool *written = calloc(cache_bytes / 2, 1);
    size_t krow_n = (size_t)T * c->n_head_kv * hd, kn = 0;
    float *kgot = malloc(krow_n * 4), *kref = malloc(krow_n * 4);
    for (uint32_t t = 0; t < T; t++) {
        if (slots[t] < 0 || (uint32_t)slots[t] >= num_slots) continue;
        for (uint32_t h = 0; h < c->n_head_kv; h++) {
            uint64_t at = ref_attn_row_index(&rc, (uint32_t)slots[t], h);
            const float *kr = ref + ((size_t)t * qk + c->n_head + h) * hd;
            const float *vsrc =
                x + c->offset + (size_t)t * stride + (c->n_head + c->n_head_kv + h) * hd;
            for (uint32_t d = 0; d < hd; d++) {
                written[at + d] = true;
                kgot[kn] = test_f16_to_f32(kfh[at + d]);
                kref[kn++] = kr[d];
                cr_assert(vfh[at + d] == test_f32_to_f16(vsrc[d]),
                          "%s: V cache token %u head %u dim %u is 0x%04x, expected 0x%04x", what, t,
                          h, d, vfh[at + d], test_f32_to_f16(vsrc[d]));
            }
        }
    }
    err = test_rel_error(kgot, kref, kn);
    cr_assert(err <= ROPE_CACHE_REL_BOUND, "%s: K cache rel error %.3g > %.3g", what, err,
              ROPE_CACHE_REL_BOUND);
    for (size_t i = 0; i < cache_bytes / 2; i++) {
        if (written[i]) continue;
        uint16_t poison = (uint16_t)(i % 2 ? TEST_POISON_WORD >> 16 : TEST_POISON_WORD & 0xffff);
        cr_assert(kfh[i] == poison && vfh[i] == poison,
                  "%s: cache element %zu of no live slot was written", what, i);
    }
    free(written), free(kgot), free(kref), free(dense), free(ref), free(got);
    free(out_f), free(out_s), free(kfh), free(vfh), free(ksh), free(vsh);
    free(x), free(slots), free(pos);
    test_gpu_free(&qkv_f), test_gpu_free(&qkv_s), test_gpu_free(&pos_b), test_gpu_free(&slots_b);
    test_gpu_free(&ff_b), test_gpu_free(&kf), test_gpu_free(&vf), test_gpu_free(&ks),
        test_gpu_free(&vs);
}

Test(k_rope_kv, llama_norm_gqa4_decode_and_chunk, .fini = test_gpu_check_validation) {
    /* one decode token, then a 37-token chunk with padding tokens and a slot past the cache */
    run_case(&(rope_kv_case){.seed = 4101,
                             .n_tokens = 1,
                             .n_head = 8,
                             .n_head_kv = 2,
                             .head_dim = 64,
                             .n_rot = 64,
                             .block_size = 16,
                             .num_blocks = 4,
                             .mode = K_ROPE_NORM});
    run_case(&(rope_kv_case){.seed = 4102,
                             .n_tokens = 37,
                             .n_head = 8,
                             .n_head_kv = 2,
                             .head_dim = 64,
                             .n_rot = 64,
                             .block_size = 16,
                             .num_blocks = 7,
                             .pad = 6,
                             .offset = 10,
                             .mode = K_ROPE_NORM,
                             .freq_factors = true});
}

Test(k_rope_kv, neox_partial_rotary_freq_factors_bs8, .fini = test_gpu_check_validation) {
    /* n_rot 64 of head_dim 128 (dims past n_rot copied), GQA 4:1 */
    run_case(&(rope_kv_case){.seed = 4201,
                             .n_tokens = 21,
                             .n_head = 8,
                             .n_head_kv = 2,
                             .head_dim = 128,
                             .n_rot = 64,
                             .block_size = 8,
                             .num_blocks = 5,
                             .pad = 2,
                             .mode = K_ROPE_NEOX,
                             .freq_factors = true});
    /* n_rot / 2 = 21 is odd: NEOX pairs straddle fp16 words */
    run_case(&(rope_kv_case){.seed = 4202,
                             .n_tokens = 9,
                             .n_head = 6,
                             .n_head_kv = 3,
                             .head_dim = 80,
                             .n_rot = 42,
                             .block_size = 8,
                             .num_blocks = 3,
                             .offset = 4,
                             .mode = K_ROPE_NEOX});
}

Test(k_rope_kv, mha_head_dim_256_bs32_many_tokens, .fini = test_gpu_check_validation) {
    run_case(&(rope_kv_case){.seed = 4301,
                             .n_tokens = 70,
                             .n_head = 3,
                             .n_head_kv = 3,
                             .head_dim = 256,
                             .n_rot = 256,
                             .block_size = 32,
                             .num_blocks = 4,
                             .pad = 8,
                             .mode = K_ROPE_NEOX});
    run_case(&(rope_kv_case){.seed = 4302,
                             .n_tokens = 130,
                             .n_head = 4,
                             .n_head_kv = 1,
                             .head_dim = 32,
                             .n_rot = 16,
                             .block_size = 16,
                             .num_blocks = 10,
                             .mode = K_ROPE_NORM,
                             .freq_factors = true});
}

Test(k_rope_kv, bad_arguments_fail_with_clear_messages, .fini = test_gpu_check_validation) {
    k_attn_kv_layout kv = {.num_blocks = 2, .block_size = 16, .n_head_kv = 1, .head_dim = 64};
    gpu_buffer small = test_gpu_buffer_poisoned(64), cache = test_gpu_buffer_poisoned(8192);
    k_rope_kv_args a = {.qkv = bind(&small),
                        .n_tokens = 2,
                        .n_head = 2,
                        .positions = bind(&small),
                        .slots = bind(&small),
                        .k_cache = bind(&cache),
                        .v_cache = bind(&cache),
                        .n_rot = 64,
                        .freq_base = 10000.0f,
                        .freq_scale = 1.0f};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(k_rope_kv_write(test_gpu(), cmd, &kv, &a) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "binding qkv covers 64 bytes"), "message: %s",
              vkllm_last_error());
    a.n_rot = 66;
    cr_assert(k_rope_kv_write(test_gpu(), cmd, &kv, &a) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "n_rot 66"), "message: %s", vkllm_last_error());
    a.n_rot = 64;
    a.x_stride = 100;
    cr_assert(k_rope_kv_write(test_gpu(), cmd, &kv, &a) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "x_stride 100"), "message: %s", vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    test_gpu_free(&small), test_gpu_free(&cache);
}
