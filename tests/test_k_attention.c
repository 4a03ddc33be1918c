/* test_k_attention.c: the paged-attention kernels (kv_write, decode + reduce, prefill,
 * block copy) against the double-precision CPU reference in tests/common/ref_attention.c.
 *
 * K/V caches are random fp16 with block tables drawn from a random permutation of all
 * block ids (scattered, out of order, distinct across sequences); outputs are poisoned
 * (NaN) first so any unwritten element fails. The reference reads the same fp16 K/V,
 * so the only differences are f32 vs double arithmetic and summation order:
 * relative error bound ATTN_REL_BOUND (2e-5; observed errors are 1e-7..1.5e-6). kv_write and
 * block_copy are compared bit for bit. */
// links: exec gpu
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/ref_attention.h"
#include "common/test_gpu.h"
#include "common/test_util.h"
#include "exec/k_attention.h"

#ifndef ATTN_REL_BOUND
#define ATTN_REL_BOUND 2e-5
#endif

static gpu_binding bind(const gpu_buffer *buffer) {
    return (gpu_binding){.buffer = buffer, .offset = 0, .range = 0, .writable = false};
}

/* ---------------------------------------------------------------- test fixtures */

/* A layer's KV cache filled with random fp16 values, on the host and on the device,
 * plus block tables for a set of sequences. */
typedef struct paged_cache {
    k_attn_kv_layout kv;
    uint16_t *k, *v;
    gpu_buffer k_buf, v_buf;
    uint32_t n_seqs, table_stride;
    int32_t *tables; /* [n_seqs][table_stride], unused entries -1 */
    gpu_buffer tables_buf;
} paged_cache;

static ref_attn_cache ref_cache(const paged_cache *c) {
    return (ref_attn_cache){.k = c->k,
                            .v = c->v,
                            .num_blocks = c->kv.num_blocks,
                            .block_size = c->kv.block_size,
                            .n_head_kv = c->kv.n_head_kv,
                            .head_dim = c->kv.head_dim};
}

/* Sequences with tokens[s] tokens each get ceil(tokens/bs) blocks taken from a random
 * permutation of all block ids; `spare` extra blocks stay unused. */
static paged_cache cache_make(test_rng *rng, uint32_t head_dim, uint32_t n_head_kv,
                              uint32_t block_size, uint32_t n_seqs, const uint32_t *tokens,
                              uint32_t spare) {
    paged_cache c = {.kv = {.block_size = block_size, .n_head_kv = n_head_kv, .head_dim = head_dim},
                     .n_seqs = n_seqs};
    uint32_t total = 0, widest = 1;
    for (uint32_t s = 0; s < n_seqs; s++) {
        uint32_t blocks = (tokens[s] + block_size - 1) / block_size;
        total += blocks;
        if (blocks > widest) widest = blocks;
    }
    c.kv.num_blocks = total + spare;
    c.table_stride = widest + 1; /* one unused entry per row: the kernels must not need it */
    uint32_t *perm = malloc(sizeof(uint32_t) * c.kv.num_blocks);
    for (uint32_t i = 0; i < c.kv.num_blocks; i++)
        perm[i] = i;
    for (uint32_t i = c.kv.num_blocks; i > 1; i--) {
        uint32_t j = test_rng_below(rng, i), t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    c.tables = malloc(sizeof(int32_t) * n_seqs * c.table_stride);
    uint32_t next = 0;
    for (uint32_t s = 0; s < n_seqs; s++) {
        uint32_t blocks = (tokens[s] + block_size - 1) / block_size;
        for (uint32_t b = 0; b < c.table_stride; b++)
            c.tables[s * c.table_stride + b] = b < blocks ? (int32_t)perm[next++] : -1;
    }
    free(perm);
    size_t elems = (size_t)(k_attn_layer_bytes(&c.kv) / 2);
    c.k = malloc(elems * 2);
    c.v = malloc(elems * 2);
    for (size_t i = 0; i < elems; i++) {
        c.k[i] = test_f32_to_f16(test_rng_uniform(rng, -1.0f, 1.0f));
        c.v[i] = test_f32_to_f16(test_rng_uniform(rng, -1.0f, 1.0f));
    }
    c.k_buf = test_gpu_buffer_from(c.k, elems * 2);
    c.v_buf = test_gpu_buffer_from(c.v, elems * 2);
    c.tables_buf = test_gpu_buffer_from(c.tables, sizeof(int32_t) * n_seqs * c.table_stride);
    return c;
}

static void cache_free(paged_cache *c) {
    test_gpu_free(&c->k_buf);
    test_gpu_free(&c->v_buf);
    test_gpu_free(&c->tables_buf);
    free(c->k);
    free(c->v);
    free(c->tables);
}

static gpu_buffer int_buffer(const int32_t *values, uint32_t n) {
    return test_gpu_buffer_from(values, sizeof(int32_t) * n);
}

/* ---------------------------------------------------------------- decode */

typedef struct decode_case {
    uint64_t seed;
    uint32_t head_dim, n_head_kv, group, block_size;
    uint32_t n_seqs;
    const uint32_t *ctx;
    uint32_t partition; /* 0 = default */
    uint32_t window;
    float softcap;
} decode_case;

/* Decode with the partition merge folded into the decode dispatch (counters given):
 * run_decode then records fill(poison) + decode twice per command buffer, over
 * DECODE_COUNTER_SUBMITS submissions, so every call after the first relies on the
 * previous one having reset the counters; the counters must end all zero. */
static bool with_counters = false;
#define DECODE_COUNTER_SUBMITS 2

static void run_decode(const decode_case *t) {
    test_rng rng = test_rng_seeded(t->seed);
    paged_cache c =
        cache_make(&rng, t->head_dim, t->n_head_kv, t->block_size, t->n_seqs, t->ctx, 3);
    uint32_t n_head = t->n_head_kv * t->group, d = t->head_dim;
    k_attn_params p = {.n_head = n_head,
                       .scale = 3.0f / sqrtf((float)d),
                       .softcap = t->softcap,
                       .window = t->window};
    size_t q_n = (size_t)t->n_seqs * n_head * d;
    float *q = malloc(sizeof(float) * q_n), *out = malloc(sizeof(float) * q_n),
          *ref = malloc(sizeof(float) * q_n);
    test_fill_uniform(&rng, q, q_n, -2.0f, 2.0f);
    int32_t *ctx = malloc(sizeof(int32_t) * t->n_seqs);
    uint32_t max_ctx = 0;
    for (uint32_t s = 0; s < t->n_seqs; s++) {
        ctx[s] = (int32_t)t->ctx[s];
        if (t->ctx[s] > max_ctx) max_ctx = t->ctx[s];
    }
    gpu_buffer q_buf = test_gpu_buffer_from(q, sizeof(float) * q_n);
    gpu_buffer ctx_buf = int_buffer(ctx, t->n_seqs);
    gpu_buffer out_buf = test_gpu_buffer_poisoned(sizeof(float) * q_n);
    uint64_t scratch_bytes =
        k_attn_decode_scratch_bytes(&c.kv, &p, t->n_seqs, max_ctx, t->partition);
    gpu_buffer scratch_buf = {0};
    if (scratch_bytes) scratch_buf = test_gpu_buffer_poisoned(scratch_bytes);

    k_attn_decode_args a = {.n_seqs = t->n_seqs,
                            .max_context_len = max_ctx,
                            .partition_size = t->partition,
                            .q = bind(&q_buf),
                            .block_tables = bind(&c.tables_buf),
                            .table_stride = c.table_stride,
                            .context_lens = bind(&ctx_buf),
                            .k_cache = bind(&c.k_buf),
                            .v_cache = bind(&c.v_buf),
                            .out = bind(&out_buf)};
    if (scratch_bytes) a.scratch = bind(&scratch_buf);
    uint64_t counter_bytes = k_attn_decode_counter_bytes(&p, t->n_seqs);
    uint32_t *counters = calloc(counter_bytes, 1);
    gpu_buffer counter_buf = {0};
    if (with_counters) {
        counter_buf = test_gpu_buffer_from(counters, counter_bytes);
        a.counters = bind(&counter_buf);
    }
    for (int submit = 0; submit < (with_counters ? DECODE_COUNTER_SUBMITS : 1); submit++) {
        gpu_cmd *cmd;
        cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
        vkllm_status st = VKLLM_OK;
        for (int call = 0; call < (with_counters ? 2 : 1) && st == VKLLM_OK; call++) {
            if (call > 0) gpu_cmd_fill(cmd, &out_buf, 0, sizeof(float) * q_n, TEST_POISON_WORD);
            st = k_attn_decode(test_gpu(), cmd, &c.kv, &p, &a);
        }
        vkllm_status sub = gpu_cmd_submit(cmd);
        cr_assert(st == VKLLM_OK, "k_attn_decode: %s", vkllm_last_error());
        cr_assert(sub == VKLLM_OK, "submit: %s", vkllm_last_error());
    }
    if (with_counters) {
        test_gpu_read(&counter_buf, counters, counter_bytes);
        for (uint64_t i = 0; i < counter_bytes / 4; i++)
            cr_assert(counters[i] == 0, "seed %llu: decode counter %llu left at %u",
                      (unsigned long long)t->seed, (unsigned long long)i, counters[i]);
        test_gpu_free(&counter_buf);
    }
    free(counters);
    test_gpu_read(&out_buf, out, sizeof(float) * q_n);

    ref_attn_cache rc = ref_cache(&c);
    for (uint32_t s = 0; s < t->n_seqs; s++) {
        for (uint32_t h = 0; h < n_head; h++) {
            float *r = ref + ((size_t)s * n_head + h) * d;
            if (t->ctx[s] == 0) {
                memset(r, 0, sizeof(float) * d);
                continue;
            }
            ref_attention_row(&rc, c.tables + s * c.table_stride, h / t->group,
                              q + ((size_t)s * n_head + h) * d, t->ctx[s] - 1, t->window, p.scale,
                              p.softcap, r);
        }
    }
    for (uint32_t s = 0; s < t->n_seqs; s++) {
        size_t row = (size_t)s * n_head * d;
        double err = test_rel_error(out + row, ref + row, (size_t)n_head * d);
        cr_assert(test_first_nonfinite(out + row, (size_t)n_head * d) < 0,
                  "seed %llu seq %u (ctx %u): non-finite output", (unsigned long long)t->seed, s,
                  t->ctx[s]);
        if (t->ctx[s] == 0) {
            for (size_t i = 0; i < (size_t)n_head * d; i++)
                cr_assert(out[row + i] == 0.0f, "seed %llu seq %u: ctx 0 must give zeros",
                          (unsigned long long)t->seed, s);
            continue;
        }
        cr_assert(err <= ATTN_REL_BOUND,
                  "seed %llu seq %u (ctx %u, hd %u, group %u, bs %u, window %u, softcap %g): "
                  "rel error %.3g > %.3g",
                  (unsigned long long)t->seed, s, t->ctx[s], d, t->group, t->block_size, t->window,
                  (double)t->softcap, err, ATTN_REL_BOUND);
    }
    test_gpu_free(&q_buf);
    test_gpu_free(&ctx_buf);
    test_gpu_free(&out_buf);
    if (scratch_bytes) test_gpu_free(&scratch_buf);
    free(q);
    free(out);
    free(ref);
    free(ctx);
    cache_free(&c);
}

Test(k_attention, decode_ragged_single_partition, .fini = test_gpu_check_validation) {
    static const uint32_t ctx[] = {1, 17, 100, 16, 250, 33};
    /* partition 512 > every context: attn_decode writes the output, no reduce runs. */
    run_decode(&(decode_case){.seed = 101,
                              .head_dim = 128,
                              .n_head_kv = 2,
                              .group = 1,
                              .block_size = 16,
                              .n_seqs = 6,
                              .ctx = ctx,
                              .partition = 512});
}

Test(k_attention, decode_automatic_partition_size, .fini = test_gpu_check_validation) {
    /* 12 (sequence, KV head) columns: the automatic size drops to its floor
     * K_ATTN_PARTITION_MIN = 32 (8 partitions). */
    static const uint32_t ctx[] = {1, 17, 100, 16, 250, 33};
    k_attn_kv_layout kv = {.num_blocks = 64, .block_size = 16, .n_head_kv = 2, .head_dim = 128};
    k_attn_params p = {.n_head = 2, .scale = 1.0f};
    cr_assert_eq(k_attn_decode_partition_size(&kv, &p, 6, 250, 0), K_ATTN_PARTITION_MIN);
    cr_assert_eq(k_attn_decode_partitions(&kv, &p, 6, 250, 0), 8u);
    cr_assert_eq(k_attn_decode_partition_size(&kv, &p, 200, 4000, 0), 512u);
    run_decode(&(decode_case){.seed = 102,
                              .head_dim = 128,
                              .n_head_kv = 2,
                              .group = 1,
                              .block_size = 16,
                              .n_seqs = 6,
                              .ctx = ctx});
}

Test(k_attention, decode_scratch_bound_covers_every_batch) {
    test_rng rng = test_rng_seeded(103);
    for (int i = 0; i < 2000; i++) {
        k_attn_kv_layout kv = {.num_blocks = 1,
                               .block_size = 16,
                               .n_head_kv = 1 + test_rng_below(&rng, 8),
                               .head_dim = 64u << test_rng_below(&rng, 3)};
        k_attn_params p = {.n_head = kv.n_head_kv * (1 + test_rng_below(&rng, 16)),
                           .window = test_rng_below(&rng, 2) ? 0 : 1 + test_rng_below(&rng, 4096)};
        uint32_t max_seqs = 1 + test_rng_below(&rng, 300), max_ctx = test_rng_below(&rng, 40000);
        uint32_t requested = test_rng_below(&rng, 2) ? 0 : 32u << test_rng_below(&rng, 6);
        uint64_t bound = k_attn_decode_scratch_bytes_max(&kv, &p, max_seqs, max_ctx, requested);
        uint32_t n = 1 + test_rng_below(&rng, max_seqs), c = test_rng_below(&rng, max_ctx + 1);
        uint64_t need = k_attn_decode_scratch_bytes(&kv, &p, n, c, requested);
        cr_assert(need <= bound,
                  "seed 103 case %d: %llu scratch bytes for %u seqs x %u keys > bound %llu "
                  "for %u x %u (requested %u)",
                  i, (unsigned long long)need, n, c, (unsigned long long)bound, max_seqs, max_ctx,
                  requested);
    }
}

Test(k_attention, decode_gqa4_hd256_several_partitions, .fini = test_gpu_check_validation) {
    /* 1500 keys over 3 partitions of 512; 512 exactly one; mixed in one dispatch. */
    static const uint32_t ctx[] = {1500, 513, 7, 512, 1024};
    run_decode(&(decode_case){.seed = 202,
                              .head_dim = 256,
                              .n_head_kv = 1,
                              .group = 4,
                              .block_size = 16,
                              .n_seqs = 5,
                              .ctx = ctx,
                              .partition = 512});
}

Test(k_attention, decode_gqa8_hd64_bs8, .fini = test_gpu_check_validation) {
    static const uint32_t ctx[] = {300, 45, 1, 129};
    run_decode(&(decode_case){.seed = 303,
                              .head_dim = 64,
                              .n_head_kv = 2,
                              .group = 8,
                              .block_size = 8,
                              .n_seqs = 4,
                              .ctx = ctx,
                              .partition = 128});
}

Test(k_attention, decode_bs32_window_softcap, .fini = test_gpu_check_validation) {
    /* window 256 over partitions of 128: contexts shorter than, equal to and longer than
     * the window, ending mid-block. */
    static const uint32_t ctx[] = {700, 300, 1000, 5, 256, 257};
    run_decode(&(decode_case){.seed = 404,
                              .head_dim = 128,
                              .n_head_kv = 2,
                              .group = 4,
                              .block_size = 32,
                              .n_seqs = 6,
                              .ctx = ctx,
                              .partition = 128,
                              .window = 256,
                              .softcap = 1.5f});
}

Test(k_attention, decode_large_groups_split_in_chunks, .fini = test_gpu_check_validation) {
    /* hd 256 serves at most 8 query heads per workgroup: 12 heads = chunks of 8 and 4. */
    static const uint32_t ctx[] = {333, 90};
    run_decode(&(decode_case){.seed = 505,
                              .head_dim = 256,
                              .n_head_kv = 1,
                              .group = 12,
                              .block_size = 16,
                              .n_seqs = 2,
                              .ctx = ctx,
                              .partition = 256});
    /* hd 64: 32 per workgroup; 40 heads = 32 + 8; two KV heads. */
    static const uint32_t ctx2[] = {77};
    run_decode(&(decode_case){.seed = 506,
                              .head_dim = 64,
                              .n_head_kv = 2,
                              .group = 40,
                              .block_size = 8,
                              .n_seqs = 1,
                              .ctx = ctx2});
}

Test(k_attention, decode_zero_context_gives_zeros, .fini = test_gpu_check_validation) {
    static const uint32_t ctx[] = {0, 5, 600};
    run_decode(&(decode_case){.seed = 606,
                              .head_dim = 128,
                              .n_head_kv = 1,
                              .group = 2,
                              .block_size = 16,
                              .n_seqs = 3,
                              .ctx = ctx,
                              .partition = 256});
}

/* ---------------------------------------------------------------- prefill */

typedef struct prefill_case {
    uint64_t seed;
    uint32_t head_dim, n_head_kv, group, block_size;
    uint32_t n_seqs;
    const uint32_t *prefix; /* tokens already cached before the chunk */
    const uint32_t *chunk;  /* new query tokens */
    uint32_t window;
    float softcap;
    uint32_t q_pad; /* extra floats per q row (a fused-QKV-like stride) */
} prefill_case;

static void run_prefill(const prefill_case *t) {
    test_rng rng = test_rng_seeded(t->seed);
    uint32_t *ctx_u = malloc(sizeof(uint32_t) * t->n_seqs);
    int32_t *ctx = malloc(sizeof(int32_t) * t->n_seqs);
    int32_t *qstart = malloc(sizeof(int32_t) * (t->n_seqs + 1));
    uint32_t n_tokens = 0, max_q = 0;
    for (uint32_t s = 0; s < t->n_seqs; s++) {
        ctx_u[s] = t->prefix[s] + t->chunk[s];
        ctx[s] = (int32_t)ctx_u[s];
        qstart[s] = (int32_t)n_tokens;
        n_tokens += t->chunk[s];
        if (t->chunk[s] > max_q) max_q = t->chunk[s];
    }
    qstart[t->n_seqs] = (int32_t)n_tokens;
    paged_cache c = cache_make(&rng, t->head_dim, t->n_head_kv, t->block_size, t->n_seqs, ctx_u, 2);
    uint32_t n_head = t->n_head_kv * t->group, d = t->head_dim;
    uint32_t q_stride = n_head * d + t->q_pad;
    k_attn_params p = {.n_head = n_head,
                       .scale = 3.0f / sqrtf((float)d),
                       .softcap = t->softcap,
                       .window = t->window};
    size_t out_n = (size_t)n_tokens * n_head * d, q_n = (size_t)n_tokens * q_stride;
    float *q = malloc(sizeof(float) * q_n), *out = malloc(sizeof(float) * out_n),
          *ref = malloc(sizeof(float) * out_n);
    test_fill_uniform(&rng, q, q_n, -2.0f, 2.0f);
    gpu_buffer q_buf = test_gpu_buffer_from(q, sizeof(float) * q_n);
    gpu_buffer ctx_buf = int_buffer(ctx, t->n_seqs);
    gpu_buffer qstart_buf = int_buffer(qstart, t->n_seqs + 1);
    gpu_buffer out_buf = test_gpu_buffer_poisoned(sizeof(float) * out_n);

    k_attn_prefill_args a = {.n_seqs = t->n_seqs,
                             .max_q_len = max_q,
                             .q = bind(&q_buf),
                             .q_stride = q_stride,
                             .query_start = bind(&qstart_buf),
                             .context_lens = bind(&ctx_buf),
                             .block_tables = bind(&c.tables_buf),
                             .table_stride = c.table_stride,
                             .k_cache = bind(&c.k_buf),
                             .v_cache = bind(&c.v_buf),
                             .out = bind(&out_buf)};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    /* These cases hold the portable attn_prefill.comp to the f32 bound; the tensor-core
     * kernel (fp16 operands, chosen automatically on coopmat devices) has its own tests in
     * test_k_attn_prefill_cm.c. */
    setenv("VKLLM_ATTN_PREFILL", "old", 1);
    vkllm_status st = k_attn_prefill(test_gpu(), cmd, &c.kv, &p, &a);
    vkllm_status sub = gpu_cmd_submit(cmd);
    cr_assert(st == VKLLM_OK, "k_attn_prefill: %s", vkllm_last_error());
    cr_assert(sub == VKLLM_OK, "submit: %s", vkllm_last_error());
    test_gpu_read(&out_buf, out, sizeof(float) * out_n);

    ref_attn_cache rc = ref_cache(&c);
    for (uint32_t s = 0; s < t->n_seqs; s++) {
        for (uint32_t i = 0; i < t->chunk[s]; i++) {
            uint32_t tok = (uint32_t)qstart[s] + i, pos = t->prefix[s] + i;
            for (uint32_t h = 0; h < n_head; h++)
                ref_attention_row(&rc, c.tables + s * c.table_stride, h / t->group,
                                  q + (size_t)tok * q_stride + (size_t)h * d, pos, t->window,
                                  p.scale, p.softcap, ref + ((size_t)tok * n_head + h) * d);
        }
        size_t row = (size_t)qstart[s] * n_head * d, n = (size_t)t->chunk[s] * n_head * d;
        long bad = test_first_nonfinite(out + row, n);
        cr_assert(bad < 0, "seed %llu seq %u: non-finite output at %ld (unwritten?)",
                  (unsigned long long)t->seed, s, bad);
        double err = test_rel_error(out + row, ref + row, n);
        cr_assert(err <= ATTN_REL_BOUND,
                  "seed %llu seq %u (prefix %u chunk %u, hd %u, group %u, bs %u, window %u, "
                  "softcap %g): rel error %.3g > %.3g",
                  (unsigned long long)t->seed, s, t->prefix[s], t->chunk[s], d, t->group,
                  t->block_size, t->window, (double)t->softcap, err, ATTN_REL_BOUND);
    }
    test_gpu_free(&q_buf);
    test_gpu_free(&ctx_buf);
    test_gpu_free(&qstart_buf);
    test_gpu_free(&out_buf);
    free(q);
    free(out);
    free(ref);
    free(ctx);
    free(ctx_u);
    free(qstart);
    cache_free(&c);
}

Test(k_attention, prefill_single_sequence_no_prefix, .fini = test_gpu_check_validation) {
    static const uint32_t prefix[] = {0}, chunk[] = {50};
    run_prefill(&(prefill_case){.seed = 707,
                                .head_dim = 128,
                                .n_head_kv = 1,
                                .group = 1,
                                .block_size = 16,
                                .n_seqs = 1,
                                .prefix = prefix,
                                .chunk = chunk});
}

Test(k_attention, prefill_ragged_cached_prefix_gqa4_hd256, .fini = test_gpu_check_validation) {
    /* Prefix-cache hits (whole and partial blocks) + chunks; a 1-token chunk (decode-like). */
    static const uint32_t prefix[] = {100, 0, 48, 300}, chunk[] = {37, 20, 1, 64};
    run_prefill(&(prefill_case){.seed = 808,
                                .head_dim = 256,
                                .n_head_kv = 1,
                                .group = 4,
                                .block_size = 16,
                                .n_seqs = 4,
                                .prefix = prefix,
                                .chunk = chunk,
                                .q_pad = 6});
}

Test(k_attention, prefill_gqa8_hd64_bs8_window_softcap, .fini = test_gpu_check_validation) {
    static const uint32_t prefix[] = {70, 0, 13}, chunk[] = {50, 33, 9};
    run_prefill(&(prefill_case){.seed = 909,
                                .head_dim = 64,
                                .n_head_kv = 2,
                                .group = 8,
                                .block_size = 8,
                                .n_seqs = 3,
                                .prefix = prefix,
                                .chunk = chunk,
                                .window = 40,
                                .softcap = 2.0f});
}

Test(k_attention, prefill_bs32_mha_window, .fini = test_gpu_check_validation) {
    static const uint32_t prefix[] = {40, 95}, chunk[] = {70, 3};
    run_prefill(&(prefill_case){.seed = 1010,
                                .head_dim = 128,
                                .n_head_kv = 3,
                                .group = 1,
                                .block_size = 32,
                                .n_seqs = 2,
                                .prefix = prefix,
                                .chunk = chunk,
                                .window = 64});
}

/* ---------------------------------------------------------------- kv_write */

Test(k_attention, kv_write_scatters_fp16_rows, .fini = test_gpu_check_validation) {
    test_rng rng = test_rng_seeded(1111);
    k_attn_kv_layout kv = {.num_blocks = 9, .block_size = 16, .n_head_kv = 2, .head_dim = 128};
    uint32_t n_tokens = 37, row = kv.n_head_kv * kv.head_dim;
    uint32_t k_off = 10, k_stride = row * 3, v_off = 10 + row, v_stride = row * 3; /* fused */
    uint32_t num_slots = kv.num_blocks * kv.block_size;
    size_t src_n = (size_t)n_tokens * k_stride + k_off + row;
    float *src = malloc(sizeof(float) * src_n);
    test_fill_uniform(&rng, src, src_n, -3.0f, 3.0f);
    /* Distinct random slots; every 7th token is padding (-1); one slot out of range. */
    uint32_t *perm = malloc(sizeof(uint32_t) * num_slots);
    for (uint32_t i = 0; i < num_slots; i++)
        perm[i] = i;
    for (uint32_t i = num_slots; i > 1; i--) {
        uint32_t j = test_rng_below(&rng, i), t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    int32_t slots[37];
    for (uint32_t i = 0; i < n_tokens; i++)
        slots[i] = i % 7 == 3 ? -1 : (int32_t)perm[i];
    slots[20] = (int32_t)num_slots; /* past the cache: skipped */
    free(perm);

    uint64_t bytes = k_attn_layer_bytes(&kv);
    gpu_buffer src_buf = test_gpu_buffer_from(src, sizeof(float) * src_n);
    gpu_buffer slots_buf = int_buffer(slots, n_tokens);
    gpu_buffer k_buf = test_gpu_buffer_poisoned(bytes), v_buf = test_gpu_buffer_poisoned(bytes);
    k_attn_kv_write_args a = {.n_tokens = n_tokens,
                              .k_src = bind(&src_buf),
                              .v_src = bind(&src_buf),
                              .k_src_offset = k_off,
                              .v_src_offset = v_off,
                              .k_src_stride = k_stride,
                              .v_src_stride = v_stride,
                              .slots = bind(&slots_buf),
                              .k_cache = bind(&k_buf),
                              .v_cache = bind(&v_buf)};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status st = k_attn_kv_write(test_gpu(), cmd, &kv, &a);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "submit: %s", vkllm_last_error());
    cr_assert(st == VKLLM_OK, "k_attn_kv_write: %s", vkllm_last_error());

    uint16_t *k = malloc(bytes), *v = malloc(bytes), *ek = malloc(bytes), *ev = malloc(bytes);
    test_gpu_read(&k_buf, k, bytes);
    test_gpu_read(&v_buf, v, bytes);
    for (size_t i = 0; i < bytes / 2; i++) /* expected: untouched words keep the poison */
        ek[i] = ev[i] = (uint16_t)(i % 2 ? TEST_POISON_WORD >> 16 : TEST_POISON_WORD & 0xffff);
    ref_attn_cache rc = {.num_blocks = kv.num_blocks,
                         .block_size = kv.block_size,
                         .n_head_kv = kv.n_head_kv,
                         .head_dim = kv.head_dim};
    for (uint32_t t = 0; t < n_tokens; t++) {
        if (slots[t] < 0 || (uint32_t)slots[t] >= num_slots) continue;
        for (uint32_t h = 0; h < kv.n_head_kv; h++) {
            uint64_t at = ref_attn_row_index(&rc, (uint32_t)slots[t], h);
            for (uint32_t j = 0; j < kv.head_dim; j++) {
                ek[at + j] =
                    test_f32_to_f16(src[k_off + (size_t)t * k_stride + h * kv.head_dim + j]);
                ev[at + j] =
                    test_f32_to_f16(src[v_off + (size_t)t * v_stride + h * kv.head_dim + j]);
            }
        }
    }
    for (size_t i = 0; i < bytes / 2; i++) {
        cr_assert(k[i] == ek[i], "seed 1111: K element %zu is 0x%04x, expected 0x%04x", i, k[i],
                  ek[i]);
        cr_assert(v[i] == ev[i], "seed 1111: V element %zu is 0x%04x, expected 0x%04x", i, v[i],
                  ev[i]);
    }
    free(k);
    free(v);
    free(ek);
    free(ev);
    free(src);
    test_gpu_free(&src_buf);
    test_gpu_free(&slots_buf);
    test_gpu_free(&k_buf);
    test_gpu_free(&v_buf);
}

/* kv_write of a chunk, then prefill over it, then a decode step, in one command buffer:
 * the dependency kv_write -> attention goes through the automatic barriers. */
Test(k_attention, kv_write_then_prefill_then_decode, .fini = test_gpu_check_validation) {
    test_rng rng = test_rng_seeded(1212);
    const uint32_t prefix = 45, chunk = 30, d = 128, group = 2;
    uint32_t total[] = {prefix + chunk + 1}; /* + 1 decode token */
    paged_cache c = cache_make(&rng, d, 2, 16, 1, total, 1);
    uint32_t n_head = c.kv.n_head_kv * group, row = c.kv.n_head_kv * d, n_new = chunk + 1;
    k_attn_params p = {.n_head = n_head, .scale = 3.0f / sqrtf((float)d)};
    /* New K/V for positions prefix .. prefix+chunk; slots from the block table. */
    float *kv_new = malloc(sizeof(float) * n_new * row * 2);
    test_fill_uniform(&rng, kv_new, (size_t)n_new * row * 2, -1.0f, 1.0f);
    int32_t slots[31];
    for (uint32_t i = 0; i < n_new; i++) {
        uint32_t pos = prefix + i;
        slots[i] = c.tables[pos / 16] * 16 + (int32_t)(pos % 16);
        for (uint32_t h = 0; h < c.kv.n_head_kv; h++) {
            uint64_t at = ref_attn_row_index(
                &(ref_attn_cache){.block_size = 16, .n_head_kv = c.kv.n_head_kv, .head_dim = d},
                (uint32_t)slots[i], h);
            for (uint32_t j = 0; j < d; j++) {
                c.k[at + j] = test_f32_to_f16(kv_new[(size_t)i * row + h * d + j]);
                c.v[at + j] = test_f32_to_f16(kv_new[(size_t)(n_new + i) * row + h * d + j]);
            }
        }
    }
    size_t qn = (size_t)n_new * n_head * d;
    float *q = malloc(sizeof(float) * qn), *out = malloc(sizeof(float) * qn),
          *ref = malloc(sizeof(float) * qn);
    test_fill_uniform(&rng, q, qn, -2.0f, 2.0f);
    int32_t qstart[2] = {0, (int32_t)chunk}, ctx_prefill = (int32_t)(prefix + chunk),
            ctx_decode = (int32_t)(prefix + chunk + 1);
    gpu_buffer kvn_buf = test_gpu_buffer_from(kv_new, sizeof(float) * n_new * row * 2);
    gpu_buffer slots_buf = int_buffer(slots, n_new);
    gpu_buffer q_buf = test_gpu_buffer_from(q, sizeof(float) * qn);
    gpu_buffer qs_buf = int_buffer(qstart, 2), cp_buf = int_buffer(&ctx_prefill, 1),
               cd_buf = int_buffer(&ctx_decode, 1);
    gpu_buffer out_buf = test_gpu_buffer_poisoned(sizeof(float) * qn);
    /* Poison the new slots on the device: only kv_write can make them right. */
    gpu_buffer poison = test_gpu_buffer_poisoned(k_attn_layer_bytes(&c.kv));
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    for (uint32_t i = 0; i < n_new; i++) {
        uint64_t off =
            ref_attn_row_index(
                &(ref_attn_cache){.block_size = 16, .n_head_kv = c.kv.n_head_kv, .head_dim = d},
                (uint32_t)slots[i], 0) *
            2;
        for (uint32_t h = 0; h < c.kv.n_head_kv; h++) {
            uint64_t o = off + (uint64_t)h * 16 * d * 2;
            gpu_cmd_copy(cmd, &poison, o, &c.k_buf, o, d * 2);
            gpu_cmd_copy(cmd, &poison, o, &c.v_buf, o, d * 2);
        }
    }
    k_attn_kv_write_args w = {.n_tokens = n_new,
                              .k_src = bind(&kvn_buf),
                              .v_src = bind(&kvn_buf),
                              .v_src_offset = n_new * row,
                              .slots = bind(&slots_buf),
                              .k_cache = bind(&c.k_buf),
                              .v_cache = bind(&c.v_buf)};
    k_attn_prefill_args pa = {.n_seqs = 1,
                              .max_q_len = chunk,
                              .q = bind(&q_buf),
                              .query_start = bind(&qs_buf),
                              .context_lens = bind(&cp_buf),
                              .block_tables = bind(&c.tables_buf),
                              .table_stride = c.table_stride,
                              .k_cache = bind(&c.k_buf),
                              .v_cache = bind(&c.v_buf),
                              .out = bind(&out_buf)};
    gpu_binding q_dec = {.buffer = &q_buf, .offset = sizeof(float) * chunk * n_head * d};
    gpu_binding out_dec = {.buffer = &out_buf, .offset = sizeof(float) * chunk * n_head * d};
    k_attn_decode_args da = {.n_seqs = 1,
                             .max_context_len = (uint32_t)ctx_decode,
                             .q = q_dec,
                             .block_tables = bind(&c.tables_buf),
                             .table_stride = c.table_stride,
                             .context_lens = bind(&cd_buf),
                             .k_cache = bind(&c.k_buf),
                             .v_cache = bind(&c.v_buf),
                             .out = out_dec};
    uint64_t scratch_bytes = k_attn_decode_scratch_bytes(&c.kv, &p, 1, da.max_context_len, 0);
    cr_assert(scratch_bytes > 0, "76 keys in one sequence split into partitions automatically");
    gpu_buffer scratch = test_gpu_buffer_poisoned(scratch_bytes);
    da.scratch = bind(&scratch);
    vkllm_status s1 = k_attn_kv_write(test_gpu(), cmd, &c.kv, &w);
    setenv("VKLLM_ATTN_PREFILL", "old", 1); /* the f32 bound: see run_prefill */
    vkllm_status s2 = k_attn_prefill(test_gpu(), cmd, &c.kv, &p, &pa);
    vkllm_status s3 = k_attn_decode(test_gpu(), cmd, &c.kv, &p, &da);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "submit: %s", vkllm_last_error());
    cr_assert(s1 == VKLLM_OK && s2 == VKLLM_OK && s3 == VKLLM_OK, "%s", vkllm_last_error());
    test_gpu_read(&out_buf, out, sizeof(float) * qn);
    ref_attn_cache rc = ref_cache(&c);
    for (uint32_t i = 0; i < n_new; i++)
        for (uint32_t h = 0; h < n_head; h++)
            ref_attention_row(&rc, c.tables, h / group, q + ((size_t)i * n_head + h) * d,
                              prefix + i, 0, p.scale, 0, ref + ((size_t)i * n_head + h) * d);
    test_assert_close(out, ref, qn, ATTN_REL_BOUND);
    free(kv_new);
    free(q);
    free(out);
    free(ref);
    gpu_buffer *bufs[] = {&kvn_buf, &slots_buf, &q_buf,  &qs_buf, &cp_buf,
                          &cd_buf,  &out_buf,   &poison, &scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        test_gpu_free(bufs[i]);
    cache_free(&c);
}

/* ---------------------------------------------------------------- block copy */

Test(k_attention, block_copy_copies_whole_blocks, .fini = test_gpu_check_validation) {
    test_rng rng = test_rng_seeded(1313);
    uint32_t tokens[] = {16 * 12};
    paged_cache c = cache_make(&rng, 64, 3, 16, 1, tokens, 0);
    int32_t pairs[] = {2, 7, 5, 0, 11, 3, 4, 40 /* out of range: skipped */};
    uint32_t n_pairs = 4;
    gpu_buffer pairs_buf = int_buffer(pairs, 2 * n_pairs);
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    vkllm_status st = k_attn_block_copy(test_gpu(), cmd, &c.kv, n_pairs, bind(&pairs_buf),
                                        bind(&c.k_buf), bind(&c.v_buf));
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "submit: %s", vkllm_last_error());
    cr_assert(st == VKLLM_OK, "%s", vkllm_last_error());
    uint64_t bytes = k_attn_layer_bytes(&c.kv), block = k_attn_block_bytes(&c.kv);
    uint8_t *k = malloc(bytes), *v = malloc(bytes);
    test_gpu_read(&c.k_buf, k, bytes);
    test_gpu_read(&c.v_buf, v, bytes);
    uint8_t *ek = malloc(bytes), *ev = malloc(bytes);
    memcpy(ek, c.k, bytes);
    memcpy(ev, c.v, bytes);
    for (uint32_t i = 0; i < 3; i++) {
        memcpy(ek + pairs[2 * i + 1] * block, (uint8_t *)c.k + pairs[2 * i] * block, block);
        memcpy(ev + pairs[2 * i + 1] * block, (uint8_t *)c.v + pairs[2 * i] * block, block);
    }
    cr_assert(memcmp(k, ek, bytes) == 0, "seed 1313: K after block copy differs");
    cr_assert(memcmp(v, ev, bytes) == 0, "seed 1313: V after block copy differs");
    free(k);
    free(v);
    free(ek);
    free(ev);
    test_gpu_free(&pairs_buf);
    cache_free(&c);
}

/* ---------------------------------------------------------------- errors */

Test(k_attention, bad_shapes_fail_with_clear_messages, .fini = test_gpu_check_validation) {
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    k_attn_kv_layout kv = {.num_blocks = 4, .block_size = 16, .n_head_kv = 2, .head_dim = 130};
    cr_assert(k_attn_check_layout(&kv) == VKLLM_OK, "head_dim 130 is supported");
    kv.head_dim = 127;
    cr_assert(k_attn_check_layout(&kv) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "head_dim=127"), "message: %s", vkllm_last_error());
    kv.head_dim = 512;
    cr_assert(k_attn_check_layout(&kv) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "head_dim=512"), "message: %s", vkllm_last_error());
    kv.head_dim = 128;
    kv.block_size = 0;
    cr_assert(k_attn_check_layout(&kv) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "block_size=0"), "message: %s", vkllm_last_error());
    kv.block_size = 16;

    k_attn_params p = {.n_head = 5, .scale = 1.0f};
    k_attn_decode_args da = {.n_seqs = 1, .max_context_len = 10};
    cr_assert(k_attn_decode(test_gpu(), cmd, &kv, &p, &da) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "n_head=5"), "message: %s", vkllm_last_error());
    p.n_head = 4;
    da.max_context_len = 2000; /* 4 partitions: needs scratch */
    cr_assert(k_attn_decode(test_gpu(), cmd, &kv, &p, &da) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "scratch"), "message: %s", vkllm_last_error());
    da.q_stride = 7;
    cr_assert(k_attn_decode(test_gpu(), cmd, &kv, &p, &da) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "q_stride=7"), "message: %s", vkllm_last_error());
    p.softcap = -1.0f;
    k_attn_prefill_args pa = {.n_seqs = 1, .max_q_len = 3};
    cr_assert(k_attn_prefill(test_gpu(), cmd, &kv, &p, &pa) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "softcap"), "message: %s", vkllm_last_error());
    /* Nothing was recorded: the empty command buffer submits cleanly. */
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
}

Test(k_attention, head_dim_80_not_a_power_of_two, .fini = test_gpu_check_validation) {
    /* 40 words per row: row tiles and head chunks that do not divide the workgroup. */
    static const uint32_t ctx[] = {200, 9};
    run_decode(&(decode_case){.seed = 1414,
                              .head_dim = 80,
                              .n_head_kv = 2,
                              .group = 30,
                              .block_size = 16,
                              .n_seqs = 2,
                              .ctx = ctx,
                              .partition = 64});
    static const uint32_t prefix[] = {21, 0}, chunk[] = {40, 7};
    run_prefill(&(prefill_case){.seed = 1415,
                                .head_dim = 80,
                                .n_head_kv = 1,
                                .group = 3,
                                .block_size = 8,
                                .n_seqs = 2,
                                .prefix = prefix,
                                .chunk = chunk,
                                .window = 30});
}

/* ---------------------------------------------------------------- decode kernel choice */

/* VKLLM_ATTN picks the decode kernel (k_attention.c): "new" forces attn_decode_sg.comp
 * (subgroup-per-key-stream; on lavapipe its lanes-per-row is the subgroup size 8, so a
 * 128-dim row is 4 quads per lane and 80 dims leave lanes idle in the last quad), "old"
 * forces the portable attn_decode.comp. Criterion runs each test in its own process, so
 * the variable does not leak into other tests. */
static void run_decode_cases_forced(const char *kernel) {
    setenv("VKLLM_ATTN", kernel, 1);
    /* contexts around steps of 8 keys x 4 subgroups (32) and blocks, 1 and several
     * partitions, a context whose last partition holds one key */
    static const uint32_t ragged[] = {1, 31, 32, 33, 257, 129, 7, 500};
    run_decode(&(decode_case){.seed = 1501,
                              .head_dim = 128,
                              .n_head_kv = 2,
                              .group = 4,
                              .block_size = 16,
                              .n_seqs = 8,
                              .ctx = ragged,
                              .partition = 128});
    /* MHA (1:1), hd 64, bs 8, automatic partitions */
    static const uint32_t mha[] = {95, 3, 200};
    run_decode(&(decode_case){.seed = 1502,
                              .head_dim = 64,
                              .n_head_kv = 3,
                              .group = 1,
                              .block_size = 8,
                              .n_seqs = 3,
                              .ctx = mha});
    /* hd 256 (the shader caps heads per workgroup at 4 there): 6 heads = chunks 4 + 2 */
    static const uint32_t wide[] = {300, 64, 2};
    run_decode(&(decode_case){.seed = 1503,
                              .head_dim = 256,
                              .n_head_kv = 1,
                              .group = 6,
                              .block_size = 16,
                              .n_seqs = 3,
                              .ctx = wide,
                              .partition = 64});
    /* window + softcap, partition not a multiple of the 32-key subgroup sweep */
    static const uint32_t win[] = {401, 100, 1, 150};
    run_decode(&(decode_case){.seed = 1504,
                              .head_dim = 128,
                              .n_head_kv = 1,
                              .group = 4,
                              .block_size = 32,
                              .n_seqs = 4,
                              .ctx = win,
                              .partition = 72,
                              .window = 150,
                              .softcap = 2.0f});
    /* hd 80 (20 quads: the last quad column is partly idle), group 10, zero context */
    static const uint32_t odd[] = {0, 77, 146};
    run_decode(&(decode_case){.seed = 1505,
                              .head_dim = 80,
                              .n_head_kv = 2,
                              .group = 10,
                              .block_size = 16,
                              .n_seqs = 3,
                              .ctx = odd,
                              .partition = 96});
    unsetenv("VKLLM_ATTN");
}

Test(k_attention, decode_subgroup_kernel_forced, .fini = test_gpu_check_validation) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (!f->subgroup_arithmetic) cr_skip_test("device has no subgroup arithmetic");
    run_decode_cases_forced("new");
}

Test(k_attention, decode_subgroup_kernel_3_keys_per_step, .fini = test_gpu_check_validation) {
    /* VKLLM_ATTN_KEYS=3: steps that do not divide blocks, partitions or contexts. */
    const gpu_features *f = gpu_context_features(test_gpu());
    if (!f->subgroup_arithmetic) cr_skip_test("device has no subgroup arithmetic");
    setenv("VKLLM_ATTN_KEYS", "3", 1);
    run_decode_cases_forced("new");
    unsetenv("VKLLM_ATTN_KEYS");
}

Test(k_attention, decode_portable_kernel_forced, .fini = test_gpu_check_validation) {
    run_decode_cases_forced("old");
}

Test(k_attention, decode_head_dim_130_falls_back_or_fails_clearly,
     .fini = test_gpu_check_validation) {
    /* 130 dims is not a whole number of fp16 quads: automatic choice runs the portable
     * kernel (correct output); forcing the subgroup kernel fails naming the reason. */
    static const uint32_t ctx[] = {90, 13};
    run_decode(&(decode_case){.seed = 1506,
                              .head_dim = 130,
                              .n_head_kv = 1,
                              .group = 2,
                              .block_size = 16,
                              .n_seqs = 2,
                              .ctx = ctx,
                              .partition = 64});
    setenv("VKLLM_ATTN", "new", 1);
    k_attn_kv_layout kv = {.num_blocks = 4, .block_size = 16, .n_head_kv = 1, .head_dim = 130};
    k_attn_params p = {.n_head = 2, .scale = 1.0f};
    k_attn_decode_args da = {.n_seqs = 1, .max_context_len = 10};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(k_attn_decode(test_gpu(), cmd, &kv, &p, &da) == VKLLM_ERR_UNSUPPORTED);
    cr_assert(strstr(vkllm_last_error(), "VKLLM_ATTN=new") && strstr(vkllm_last_error(), "130"),
              "message: %s", vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    unsetenv("VKLLM_ATTN");
}

Test(k_attention, decode_more_partitions_than_reduce_threads, .fini = test_gpu_check_validation) {
    /* 4500 keys / 32 = 141 partitions: attn_reduce's 64 threads each take several
     * partitions' (m, l) and its accumulation runs groups of 4 with a ragged tail. */
    static const uint32_t ctx[] = {4500, 70, 2050};
    run_decode(&(decode_case){.seed = 1601,
                              .head_dim = 64,
                              .n_head_kv = 1,
                              .group = 2,
                              .block_size = 16,
                              .n_seqs = 3,
                              .ctx = ctx,
                              .partition = 32});
    setenv("VKLLM_ATTN", "old", 1);
    run_decode(&(decode_case){.seed = 1602,
                              .head_dim = 64,
                              .n_head_kv = 1,
                              .group = 2,
                              .block_size = 16,
                              .n_seqs = 3,
                              .ctx = ctx,
                              .partition = 32,
                              .window = 3000});
    unsetenv("VKLLM_ATTN");
}

/* ---------------------------------------------------------------- fused partition merge */

/* The subgroup kernel with counters: the last workgroup of each (sequence, head chunk)
 * merges the partitions (attn_decode_sg_fused), one dispatch per decode. Each case runs
 * two decodes per command buffer in two submissions (counter reset), outputs poisoned
 * before each call. */
static void run_fused_reduce_cases(void) {
    with_counters = true;
    run_decode_cases_forced("new");
    /* many partitions per sequence (141 at 4500 keys), several lengths incl. 1 partition */
    static const uint32_t ctx[] = {4500, 70, 2050, 1, 32, 33};
    run_decode(&(decode_case){.seed = 1701,
                              .head_dim = 64,
                              .n_head_kv = 2,
                              .group = 3,
                              .block_size = 16,
                              .n_seqs = 6,
                              .ctx = ctx,
                              .partition = 32});
    /* every context within one partition: no merge at all, counters untouched */
    static const uint32_t short_ctx[] = {5, 100, 17};
    run_decode(&(decode_case){.seed = 1702,
                              .head_dim = 128,
                              .n_head_kv = 2,
                              .group = 4,
                              .block_size = 16,
                              .n_seqs = 3,
                              .ctx = short_ctx});
    /* automatic partition size on one long sequence (split to fill the GPU) */
    static const uint32_t one[] = {3000};
    run_decode(&(decode_case){.seed = 1703,
                              .head_dim = 128,
                              .n_head_kv = 8,
                              .group = 4,
                              .block_size = 16,
                              .n_seqs = 1,
                              .ctx = one});
    with_counters = false;
}

Test(k_attention, decode_fused_reduce, .fini = test_gpu_check_validation) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (!f->subgroup_arithmetic) cr_skip_test("device has no subgroup arithmetic");
    run_fused_reduce_cases();
}

Test(k_attention, decode_fused_reduce_3_keys_per_step, .fini = test_gpu_check_validation) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (!f->subgroup_arithmetic) cr_skip_test("device has no subgroup arithmetic");
    setenv("VKLLM_ATTN_KEYS", "3", 1);
    run_fused_reduce_cases();
    unsetenv("VKLLM_ATTN_KEYS");
}

/* Counters given but the two-dispatch path forced (VKLLM_ATTN_REDUCE=separate, and the
 * portable kernel, which has no fused merge): same results, counters stay 0. */
Test(k_attention, decode_counters_with_separate_reduce, .fini = test_gpu_check_validation) {
    setenv("VKLLM_ATTN_REDUCE", "separate", 1);
    with_counters = true;
    static const uint32_t ctx[] = {4500, 70, 2050};
    run_decode(&(decode_case){.seed = 1711,
                              .head_dim = 64,
                              .n_head_kv = 1,
                              .group = 2,
                              .block_size = 16,
                              .n_seqs = 3,
                              .ctx = ctx,
                              .partition = 32});
    unsetenv("VKLLM_ATTN_REDUCE");
    run_decode_cases_forced("old");
    with_counters = false;
}

Test(k_attention, decode_counters_too_small_fail_clearly, .fini = test_gpu_check_validation) {
    const gpu_features *f = gpu_context_features(test_gpu());
    if (!f->subgroup_arithmetic) cr_skip_test("device has no subgroup arithmetic");
    k_attn_kv_layout kv = {.num_blocks = 8, .block_size = 16, .n_head_kv = 2, .head_dim = 64};
    k_attn_params p = {.n_head = 4, .scale = 1.0f};
    gpu_buffer any = test_gpu_buffer_poisoned(1 << 16), small = test_gpu_buffer_poisoned(4);
    k_attn_decode_args a = {.n_seqs = 2,
                            .max_context_len = 100,
                            .partition_size = 32,
                            .q = bind(&any),
                            .block_tables = bind(&any),
                            .table_stride = 8,
                            .context_lens = bind(&any),
                            .k_cache = bind(&any),
                            .v_cache = bind(&any),
                            .out = bind(&any),
                            .scratch = bind(&any),
                            .counters = bind(&small)};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(k_attn_decode(test_gpu(), cmd, &kv, &p, &a) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "counters binding has 4 bytes"), "message: %s",
              vkllm_last_error());
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    test_gpu_free(&any), test_gpu_free(&small);
}
