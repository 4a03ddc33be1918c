/* test_k_attn_prefill_cm.c: the tensor-core prefill attention (shaders/attn_prefill_cm.comp)
 * and its kernel choice (k_attn_prefill_choose, VKLLM_ATTN_PREFILL, VKLLM_ATTN_PREFILL_TILE)
 * against the double-precision CPU reference in tests/common/ref_attention.c.
 *
 * On lavapipe the CM_EMULATE build runs (VKLLM_ATTN_PREFILL=emulate): the same tiles,
 * masking, online softmax and epilogue as the tensor-core build, with the fragment products
 * done in shared memory. Where the device has NV cooperative matrices (the H100), the same
 * cases also run the real kernel (VKLLM_ATTN_PREFILL=cm); elsewhere that test is skipped.
 *
 * Inputs: random fp16 K/V in a paged cache whose block tables come from a random
 * permutation of the pool (scattered, out of order), random q, outputs poisoned (NaN) so
 * unwritten elements fail. Error bound CM_REL_BOUND (relative, ||out - ref|| / ||ref||
 * per sequence): the kernel rounds q*scale and the probabilities P to fp16 (unit roundoff
 * 2^-11 = 4.9e-4), so each score and each weight carries up to ~5e-4 relative error;
 * observed errors are 2.3e-4..3.2e-4 with these inputs (|q| < 2, |k|, |v| < 1, scale
 * 3/sqrt(d)); the bound leaves a factor ~8 (a wrong mask, rescale or normalisation gives
 * 1e-2 and more: short rows see few keys). The portable fallback is held to PORTABLE_REL_BOUND
 * (2e-5, as in test_k_attention.c), which the fp16 path cannot meet: it proves which kernel ran. */
// links: exec gpu
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/ref_attention.h"
#include "common/test_gpu.h"
#include "common/test_util.h"
#include "exec/k_attention.h"
#include "exec/k_matmul.h"

#define CM_REL_BOUND 2.5e-3
#define PORTABLE_REL_BOUND 2e-5

static gpu_binding bind(const gpu_buffer *buffer) {
    return (gpu_binding){.buffer = buffer};
}

/* One prefill dispatch: sequences with `prefix` cached tokens and a `chunk` of new query
 * tokens each. */
typedef struct pf_case {
    uint64_t seed;
    uint32_t head_dim, n_head_kv, group, block_size, n_seqs;
    const uint32_t *prefix, *chunk;
    uint32_t window;
    float softcap;
    uint32_t q_pad; /* extra floats per q row (a fused-QKV-like stride) */
    double bound;
} pf_case;

/* Runs the case through k_attn_prefill with whatever kernel the environment selects and
 * returns the largest per-sequence relative error (asserting it is within the bound). */
static double run_case(const pf_case *t) {
    test_rng rng = test_rng_seeded(t->seed);
    uint32_t n = t->n_seqs, d = t->head_dim, bs = t->block_size;
    uint32_t n_head = t->n_head_kv * t->group, q_stride = n_head * d + t->q_pad;
    int32_t *ctx = malloc(sizeof(int32_t) * n), *qstart = malloc(sizeof(int32_t) * (n + 1));
    uint32_t n_tokens = 0, max_q = 0, blocks = 0, widest = 1;
    for (uint32_t s = 0; s < n; s++) {
        ctx[s] = (int32_t)(t->prefix[s] + t->chunk[s]);
        qstart[s] = (int32_t)n_tokens;
        n_tokens += t->chunk[s];
        if (t->chunk[s] > max_q) max_q = t->chunk[s];
        uint32_t b = ((uint32_t)ctx[s] + bs - 1) / bs;
        blocks += b;
        if (b > widest) widest = b;
    }
    qstart[n] = (int32_t)n_tokens;

    /* Cache: blocks + 2 spare, tables from a random permutation, one unused entry per row. */
    k_attn_kv_layout kv = {
        .num_blocks = blocks + 2, .block_size = bs, .n_head_kv = t->n_head_kv, .head_dim = d};
    uint32_t stride = widest + 1;
    uint32_t *perm = malloc(sizeof(uint32_t) * kv.num_blocks);
    for (uint32_t i = 0; i < kv.num_blocks; i++)
        perm[i] = i;
    for (uint32_t i = kv.num_blocks; i > 1; i--) {
        uint32_t j = test_rng_below(&rng, i), x = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = x;
    }
    int32_t *tables = malloc(sizeof(int32_t) * n * stride);
    for (uint32_t s = 0, next = 0; s < n; s++) {
        uint32_t b = ((uint32_t)ctx[s] + bs - 1) / bs;
        for (uint32_t i = 0; i < stride; i++)
            tables[s * stride + i] = i < b ? (int32_t)perm[next++] : -1;
    }
    size_t elems = (size_t)(k_attn_layer_bytes(&kv) / 2);
    uint16_t *k = malloc(elems * 2), *v = malloc(elems * 2);
    for (size_t i = 0; i < elems; i++) {
        k[i] = test_f32_to_f16(test_rng_uniform(&rng, -1.0f, 1.0f));
        v[i] = test_f32_to_f16(test_rng_uniform(&rng, -1.0f, 1.0f));
    }
    k_attn_params p = {.n_head = n_head,
                       .scale = 3.0f / sqrtf((float)d),
                       .softcap = t->softcap,
                       .window = t->window};
    size_t q_n = (size_t)n_tokens * q_stride, out_n = (size_t)n_tokens * n_head * d;
    float *q = malloc(sizeof(float) * q_n), *out = malloc(sizeof(float) * out_n),
          *ref = malloc(sizeof(float) * out_n);
    test_fill_uniform(&rng, q, q_n, -2.0f, 2.0f);

    gpu_buffer k_buf = test_gpu_buffer_from(k, elems * 2),
               v_buf = test_gpu_buffer_from(v, elems * 2);
    gpu_buffer tables_buf = test_gpu_buffer_from(tables, sizeof(int32_t) * n * stride);
    gpu_buffer q_buf = test_gpu_buffer_from(q, sizeof(float) * q_n);
    gpu_buffer ctx_buf = test_gpu_buffer_from(ctx, sizeof(int32_t) * n);
    gpu_buffer qs_buf = test_gpu_buffer_from(qstart, sizeof(int32_t) * (n + 1));
    gpu_buffer out_buf = test_gpu_buffer_poisoned(sizeof(float) * (out_n ? out_n : 1));
    k_attn_prefill_args a = {.n_seqs = n,
                             .max_q_len = max_q,
                             .q = bind(&q_buf),
                             .q_stride = q_stride,
                             .query_start = bind(&qs_buf),
                             .context_lens = bind(&ctx_buf),
                             .block_tables = bind(&tables_buf),
                             .table_stride = stride,
                             .k_cache = bind(&k_buf),
                             .v_cache = bind(&v_buf),
                             .out = bind(&out_buf)};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status st = k_attn_prefill(test_gpu(), cmd, &kv, &p, &a);
    vkllm_status sub = gpu_cmd_submit(cmd);
    cr_assert(st == VKLLM_OK, "seed %llu: k_attn_prefill: %s", (unsigned long long)t->seed,
              vkllm_last_error());
    cr_assert(sub == VKLLM_OK, "submit: %s", vkllm_last_error());
    test_gpu_read(&out_buf, out, sizeof(float) * out_n);

    ref_attn_cache rc = {.k = k,
                         .v = v,
                         .num_blocks = kv.num_blocks,
                         .block_size = bs,
                         .n_head_kv = t->n_head_kv,
                         .head_dim = d};
    double worst = 0;
    for (uint32_t s = 0; s < n; s++) {
        if (t->chunk[s] == 0) continue;
        for (uint32_t i = 0; i < t->chunk[s]; i++) {
            uint32_t tok = (uint32_t)qstart[s] + i, pos = t->prefix[s] + i;
            for (uint32_t h = 0; h < n_head; h++)
                ref_attention_row(&rc, tables + s * stride, h / t->group,
                                  q + (size_t)tok * q_stride + (size_t)h * d, pos, t->window,
                                  p.scale, p.softcap, ref + ((size_t)tok * n_head + h) * d);
        }
        size_t row = (size_t)qstart[s] * n_head * d, len = (size_t)t->chunk[s] * n_head * d;
        long bad = test_first_nonfinite(out + row, len);
        cr_assert(bad < 0, "seed %llu seq %u: non-finite output at %ld (unwritten?)",
                  (unsigned long long)t->seed, s, bad);
        double err = test_rel_error(out + row, ref + row, len);
        cr_assert(err <= t->bound,
                  "seed %llu seq %u (prefix %u chunk %u, hd %u, group %u, bs %u, window %u, "
                  "softcap %g): rel error %.3g > %.3g",
                  (unsigned long long)t->seed, s, t->prefix[s], t->chunk[s], d, t->group, bs,
                  t->window, (double)t->softcap, err, t->bound);
        if (err > worst) worst = err;
    }
    gpu_buffer *bufs[] = {&k_buf, &v_buf, &tables_buf, &q_buf, &ctx_buf, &qs_buf, &out_buf};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        test_gpu_free(bufs[i]);
    free(ctx);
    free(qstart);
    free(perm);
    free(tables);
    free(k);
    free(v);
    free(q);
    free(out);
    free(ref);
    return worst;
}

/* The kernel k_attn_prefill_choose picks on the test device for head_dim d. */
static k_attn_prefill_kernel chosen(uint32_t d) {
    k_attn_kv_layout kv = {.num_blocks = 4, .block_size = 16, .n_head_kv = 1, .head_dim = d};
    k_attn_prefill_kernel kernel = K_ATTN_PREFILL_PORTABLE;
    cr_assert(k_attn_prefill_choose(gpu_context_features(test_gpu()), &kv, &kernel) == VKLLM_OK,
              "%s", vkllm_last_error());
    return kernel;
}

/* The coopmat cases, run with VKLLM_ATTN_PREFILL=`kernel` (emulate or cm). Criterion runs
 * each test in its own process, so the variables do not leak into other tests. */
static void run_cm_cases(const char *kernel) {
    setenv("VKLLM_ATTN_PREFILL", kernel, 1);
    k_attn_prefill_kernel want =
        !strcmp(kernel, "cm") ? K_ATTN_PREFILL_COOPMAT : K_ATTN_PREFILL_EMULATE;
    cr_assert_eq(chosen(128), want);
    cr_assert_eq(chosen(64), want);

    /* GQA 4, hd 128, bs 16: ragged chunks after cached prefixes (whole and partial
     * blocks), a 1-token chunk, a sequence without a chunk (skipped), a fresh prompt. */
    static const uint32_t prefix1[] = {100, 0, 48, 7, 16}, chunk1[] = {37, 70, 1, 0, 33};
    double e1 = run_case(&(pf_case){.seed = 2101,
                                    .head_dim = 128,
                                    .n_head_kv = 2,
                                    .group = 4,
                                    .block_size = 16,
                                    .n_seqs = 5,
                                    .prefix = prefix1,
                                    .chunk = chunk1,
                                    .bound = CM_REL_BOUND});
    /* MHA (group 1), hd 64, bs 8, sliding window + softcap, padded q rows. */
    static const uint32_t prefix2[] = {70, 0, 13}, chunk2[] = {50, 33, 9};
    double e2 = run_case(&(pf_case){.seed = 2102,
                                    .head_dim = 64,
                                    .n_head_kv = 3,
                                    .group = 1,
                                    .block_size = 8,
                                    .n_seqs = 3,
                                    .prefix = prefix2,
                                    .chunk = chunk2,
                                    .window = 40,
                                    .softcap = 2.0f,
                                    .q_pad = 6,
                                    .bound = CM_REL_BOUND});
    /* GQA 4, hd 64, bs 32, window shorter than the chunk (k_lo > 0 inside the chunk). */
    static const uint32_t prefix3[] = {90, 5}, chunk3[] = {41, 64};
    double e3 = run_case(&(pf_case){.seed = 2103,
                                    .head_dim = 64,
                                    .n_head_kv = 1,
                                    .group = 4,
                                    .block_size = 32,
                                    .n_seqs = 2,
                                    .prefix = prefix3,
                                    .chunk = chunk3,
                                    .window = 24,
                                    .bound = CM_REL_BOUND});
    /* hd 16 (one 16-wide product per S fragment), GQA 3 (row tiles that split tokens). */
    static const uint32_t prefix4[] = {3}, chunk4[] = {29};
    double e4 = run_case(&(pf_case){.seed = 2104,
                                    .head_dim = 16,
                                    .n_head_kv = 2,
                                    .group = 3,
                                    .block_size = 16,
                                    .n_seqs = 1,
                                    .prefix = prefix4,
                                    .chunk = chunk4,
                                    .softcap = 5.0f,
                                    .bound = CM_REL_BOUND});
    cr_log_info("%s: worst rel errors %.3g %.3g %.3g %.3g", kernel, e1, e2, e3, e4);
    unsetenv("VKLLM_ATTN_PREFILL");
}

Test(k_attn_prefill_cm, emulated_kernel_matches_reference, .fini = test_gpu_check_validation) {
    run_cm_cases("emulate");
}

Test(k_attn_prefill_cm, tensor_core_kernel_matches_reference, .fini = test_gpu_check_validation) {
    if (!k_matmul_coopmat_available(gpu_context_features(test_gpu())))
        cr_skip_test("device has no NV cooperative matrix 16x8x16 fp16 (lavapipe): the "
                     "emulated build covers the tiles");
    run_cm_cases("cm");
    /* automatic choice on such a device is the tensor-core kernel */
    cr_assert_eq(chosen(128), K_ATTN_PREFILL_COOPMAT);
}

Test(k_attn_prefill_cm, forced_tiles, .fini = test_gpu_check_validation) {
    /* Every tile axis: 1, 2 and 4 subgroups; 16, 32 and 64 keys per step (each within
     * lavapipe's 32 KiB at these head dims). */
    static const struct {
        const char *tile;
        uint32_t head_dim;
    } tiles[] = {{"2,32", 128}, {"2,64", 64}, {"1,16", 128}, {"4,32", 64}, {"1,64", 32}};
    static const uint32_t prefix[] = {33, 0}, chunk[] = {45, 18};
    setenv("VKLLM_ATTN_PREFILL", "emulate", 1);
    for (size_t i = 0; i < sizeof tiles / sizeof tiles[0]; i++) {
        setenv("VKLLM_ATTN_PREFILL_TILE", tiles[i].tile, 1);
        double e = run_case(&(pf_case){.seed = 2200 + i,
                                       .head_dim = tiles[i].head_dim,
                                       .n_head_kv = 2,
                                       .group = 2,
                                       .block_size = 16,
                                       .n_seqs = 2,
                                       .prefix = prefix,
                                       .chunk = chunk,
                                       .window = i == 3 ? 20 : 0,
                                       .bound = CM_REL_BOUND});
        cr_log_info("tile %s hd %u: rel error %.3g", tiles[i].tile, tiles[i].head_dim, e);
    }
    unsetenv("VKLLM_ATTN_PREFILL_TILE");
    unsetenv("VKLLM_ATTN_PREFILL");
}

Test(k_attn_prefill_cm, head_dim_not_multiple_of_16_falls_back, .fini = test_gpu_check_validation) {
    /* hd 72 and 40: the coopmat kernel does not take them, the portable kernel runs, held to
     * its own f32 bound (which the fp16 path would not meet). */
    setenv("VKLLM_ATTN_PREFILL", "emulate", 1);
    cr_assert_eq(chosen(72), K_ATTN_PREFILL_PORTABLE);
    cr_assert_eq(chosen(40), K_ATTN_PREFILL_PORTABLE);
    static const uint32_t prefix[] = {21, 0}, chunk[] = {40, 7};
    run_case(&(pf_case){.seed = 2301,
                        .head_dim = 72,
                        .n_head_kv = 1,
                        .group = 3,
                        .block_size = 8,
                        .n_seqs = 2,
                        .prefix = prefix,
                        .chunk = chunk,
                        .window = 30,
                        .bound = PORTABLE_REL_BOUND});
    /* and hd 128 with the same variable does run the fp16 path: the f32 bound fails */
    static const uint32_t prefix2[] = {0}, chunk2[] = {40};
    pf_case c = {.seed = 2302,
                 .head_dim = 128,
                 .n_head_kv = 1,
                 .group = 2,
                 .block_size = 16,
                 .n_seqs = 1,
                 .prefix = prefix2,
                 .chunk = chunk2,
                 .bound = CM_REL_BOUND};
    double e = run_case(&c);
    cr_assert(e > PORTABLE_REL_BOUND,
              "seed 2302: emulate at hd 128 agrees to %.3g: the fp16 kernel did not run?", e);
    unsetenv("VKLLM_ATTN_PREFILL");
}

Test(k_attn_prefill_cm, choice_and_env_errors, .fini = test_gpu_check_validation) {
    const gpu_features *f = gpu_context_features(test_gpu());
    bool coopmat = k_matmul_coopmat_available(f);
    unsetenv("VKLLM_ATTN_PREFILL");
    cr_assert_eq(chosen(128), coopmat ? K_ATTN_PREFILL_COOPMAT : K_ATTN_PREFILL_PORTABLE);
    cr_assert_eq(chosen(72), K_ATTN_PREFILL_PORTABLE);
    setenv("VKLLM_ATTN_PREFILL", "old", 1);
    cr_assert_eq(chosen(128), K_ATTN_PREFILL_PORTABLE);
    setenv("VKLLM_ATTN_PREFILL", "auto", 1);
    cr_assert_eq(chosen(128), coopmat ? K_ATTN_PREFILL_COOPMAT : K_ATTN_PREFILL_PORTABLE);

    k_attn_kv_layout kv = {.num_blocks = 4, .block_size = 16, .n_head_kv = 1, .head_dim = 128};
    k_attn_prefill_kernel kernel;
    setenv("VKLLM_ATTN_PREFILL", "fast", 1);
    cr_assert_eq(k_attn_prefill_choose(f, &kv, &kernel), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "VKLLM_ATTN_PREFILL='fast'"), "message: %s",
              vkllm_last_error());
    if (!coopmat) {
        setenv("VKLLM_ATTN_PREFILL", "cm", 1);
        cr_assert_eq(k_attn_prefill_choose(f, &kv, &kernel), VKLLM_ERR_UNSUPPORTED);
        cr_assert(strstr(vkllm_last_error(), "VKLLM_ATTN_PREFILL=cm") &&
                      strstr(vkllm_last_error(), f->name),
                  "message: %s", vkllm_last_error());
    }

    /* Tile overrides: malformed, out of range, beyond the device's shared memory. */
    setenv("VKLLM_ATTN_PREFILL", "emulate", 1);
    k_attn_params p = {.n_head = 2, .scale = 1.0f};
    k_attn_prefill_args a = {.n_seqs = 1, .max_q_len = 3};
    static const char *bad[] = {"4", "4,", "0,32", "4,48", "9,32", "4,32x"};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("VKLLM_ATTN_PREFILL_TILE", bad[i], 1);
        cr_assert_eq(k_attn_prefill(test_gpu(), cmd, &kv, &p, &a), VKLLM_ERR_INVALID_ARGUMENT,
                     "tile '%s' accepted", bad[i]);
        cr_assert(strstr(vkllm_last_error(), "VKLLM_ATTN_PREFILL_TILE"), "message: %s",
                  vkllm_last_error());
    }
    kv.head_dim = 256; /* 8 subgroups x 128 keys at hd 256: ~300 KiB */
    setenv("VKLLM_ATTN_PREFILL_TILE", "8,128", 1);
    cr_assert_eq(k_attn_prefill(test_gpu(), cmd, &kv, &p, &a), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "shared memory"), "message: %s", vkllm_last_error());
    /* nothing was recorded */
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    unsetenv("VKLLM_ATTN_PREFILL_TILE");
    unsetenv("VKLLM_ATTN_PREFILL");
}
