/* bench_kernels.c: `vkllm bench kernels`: GPU time of the weight and attention kernels
 * at Llama-3-8B layer shapes, against the device's copy bandwidth measured in the same
 * run.
 *
 * Method (docs/benchmarks.md): every configuration is recorded as one command buffer of
 * `reps` repetitions separated by GPU timestamps, submitted once untimed (pipeline
 * creation, first-touch) and once timed; the figure is the median repetition. Each
 * repetition reads a different copy of the weights (or of the KV cache) so that the
 * GPU's L2 cache cannot hold the operand between repetitions: copies are added until
 * they total at least BENCH_ROTATE_BYTES. Consecutive repetitions write the same output,
 * so the automatic write-after-write barrier serialises them and each timestamp
 * interval is one kernel's time. Buffers are filled on the GPU with a constant word
 * (fp16 0.1 in every half), which is a legal value of every format; the kernels'
 * timing does not depend on the values.
 *
 * Achieved bandwidth counts the bytes a kernel must move at least: the weight (or K/V)
 * bytes once plus the activations read and written. TFLOP/s counts 2 flops per
 * multiply-add. "of copy" is that bandwidth over the copy_vec4 figure (bytes read plus
 * written by a compute-shader copy of ~1 GiB buffers). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "exec/k_attention.h"
#include "exec/k_matmul.h"

#define BENCH_ROTATE_BYTES (256ull << 20)
#define BENCH_MAX_COPIES 32u
#define BENCH_FILL_WORD 0x2E662E66u /* two fp16 0.1; as f32 about 5e-11 */
#define BENCH_MAX_REPS 200u

typedef struct kb_shape {
    const char *name;
    uint32_t rows, cols;
} kb_shape;

static const kb_shape full_shapes[] = {
    {"q/o", 4096, 4096}, {"k/v", 1024, 4096}, {"gate/up", 14336, 4096}, {"down", 4096, 14336}};
/* --small: the same roles at lavapipe-friendly sizes (K-quants need cols % 256 == 0). */
static const kb_shape small_shapes[] = {
    {"q/o", 256, 256}, {"k/v", 64, 256}, {"gate/up", 512, 256}, {"down", 256, 512}};

static const ggml_type all_types[] = {GGML_TYPE_F16,  GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
                                      GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q8_0,
                                      GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

static const char *kernel_name(k_matmul_kernel k) {
    return k == K_MATMUL_MATVEC ? "matvec" : k == K_MATMUL_TILED ? "tiled" : "coopmat";
}

typedef struct kb_ctx {
    gpu_context *gpu;
    const gpu_features *f;
    uint32_t reps;
    bench_json *json;
    double copy_gbps;
    int failures;
} kb_ctx;

/* Median of the intervals between the last submit's timestamps (labels "start", then one
 * per repetition). Falls back to the wall time of the submit divided by reps. */
static double timed_median_ms(kb_ctx *k, double wall_s) {
    const char **labels;
    const double *ms;
    uint32_t n = gpu_last_timestamps(k->gpu, &labels, &ms);
    if (n < 2 || !k->f->timestamps) return wall_s * 1e3 / k->reps;
    double d[BENCH_MAX_REPS];
    uint32_t m = 0;
    for (uint32_t i = 1; i < n && m < BENCH_MAX_REPS; i++)
        d[m++] = ms[i] - ms[i - 1];
    bench_summary s = bench_summarize(d, m);
    return s.p50;
}

static vkllm_status fill(kb_ctx *k, const gpu_buffer *b, uint32_t word) {
    gpu_cmd *cmd;
    VKL_TRY(gpu_cmd_begin(k->gpu, &cmd));
    gpu_cmd_fill(cmd, b, 0, b->size & ~3ull, word);
    return gpu_cmd_submit(cmd);
}

static gpu_binding bind(const gpu_buffer *b, uint64_t offset, uint64_t range, bool writable) {
    return (gpu_binding){.buffer = b, .offset = offset, .range = range, .writable = writable};
}

static uint64_t align_up(uint64_t v, uint64_t a) {
    return (v + a - 1) / a * a;
}

static uint32_t rotate_copies(uint64_t bytes) {
    uint64_t n = (BENCH_ROTATE_BYTES + bytes - 1) / bytes;
    return n < 1 ? 1 : n > BENCH_MAX_COPIES ? BENCH_MAX_COPIES : (uint32_t)n;
}

/* ---------------------------------------------------------------- copy bandwidth */

static bool bench_copy(kb_ctx *k, bool small) {
    uint64_t size = small ? (64ull << 20) : (1ull << 30);
    uint64_t range = k->f->max_storage_buffer_range & ~0xffffull;
    if (size > range) size = range;
    if (k->f->device_local_bytes && size > k->f->device_local_bytes / 8)
        size = (k->f->device_local_bytes / 8) & ~0xffffull;
    gpu_buffer src = {0}, dst = {0};
    gpu_pipeline *pipe;
    gpu_pipeline_desc desc = {.shader = "copy_vec4", .num_bindings = 2, .push_constant_size = 4};
    vkllm_status st = gpu_buffer_create(k->gpu, size, GPU_MEMORY_DEVICE, &src);
    if (st == VKLLM_OK) st = gpu_buffer_create(k->gpu, size, GPU_MEMORY_DEVICE, &dst);
    if (st == VKLLM_OK) st = gpu_pipeline_get(k->gpu, &desc, &pipe);
    if (st == VKLLM_OK) st = fill(k, &src, BENCH_FILL_WORD);
    uint32_t count = (uint32_t)(size / 16);
    uint32_t groups = count / 256;
    if (groups > 65535) groups = 65535;
    if (groups > k->f->max_workgroup_count[0]) groups = k->f->max_workgroup_count[0];
    if (groups == 0) groups = 1;
    double ms = NAN;
    for (int pass = 0; pass < 2 && st == VKLLM_OK; pass++) {
        gpu_cmd *cmd;
        st = gpu_cmd_begin(k->gpu, &cmd);
        if (st != VKLLM_OK) break;
        gpu_binding b[2] = {bind(&src, 0, size, false), bind(&dst, 0, size, true)};
        gpu_cmd_timestamp(cmd, "start");
        for (uint32_t r = 0; r < k->reps; r++) {
            gpu_cmd_dispatch(cmd, pipe, b, 2, &count, 4, groups, 1, 1);
            gpu_cmd_timestamp(cmd, "rep");
        }
        double t0 = bench_now();
        st = gpu_cmd_submit(cmd);
        if (pass == 1 && st == VKLLM_OK) ms = timed_median_ms(k, bench_now() - t0);
    }
    gpu_buffer_destroy(k->gpu, &src);
    gpu_buffer_destroy(k->gpu, &dst);
    if (st != VKLLM_OK) {
        fprintf(stderr, "vkllm bench kernels: copy: %s\n", vkllm_last_error());
        return false;
    }
    k->copy_gbps = 2.0 * (double)size / (ms * 1e-3) / 1e9;
    printf("copy_vec4: %.0f MiB read + written in %.3f ms: %.1f GB/s\n", size / 1048576.0, ms,
           k->copy_gbps);
    bench_json_object(k->json, "copy");
    bench_json_int(k->json, "buffer_bytes", (long long)size);
    bench_json_num(k->json, "ms", ms);
    bench_json_num(k->json, "gbps", k->copy_gbps);
    bench_json_end_object(k->json);
    return true;
}

/* ---------------------------------------------------------------- dispatch floor */

/* The fixed GPU cost of one dependent dispatch: a chain of tiny copies, each reading the
 * previous one's output (so the recorder puts a barrier between every two), with and
 * without a timestamp after each. Decode runs a few hundred such dependent dispatches per
 * token, so this floor times the dispatch count is what no kernel change removes. */
static bool bench_dispatch_floor(kb_ctx *k) {
    enum { CHAIN = 256, ELEMS = 4096 };
    uint64_t size = ELEMS * 16;
    gpu_buffer a = {0}, b = {0};
    gpu_pipeline *pipe;
    gpu_pipeline_desc desc = {.shader = "copy_vec4", .num_bindings = 2, .push_constant_size = 4};
    vkllm_status st = gpu_buffer_create(k->gpu, size, GPU_MEMORY_DEVICE, &a);
    if (st == VKLLM_OK) st = gpu_buffer_create(k->gpu, size, GPU_MEMORY_DEVICE, &b);
    if (st == VKLLM_OK) st = gpu_pipeline_get(k->gpu, &desc, &pipe);
    if (st == VKLLM_OK) st = fill(k, &a, BENCH_FILL_WORD);
    uint32_t count = ELEMS;
    static const uint32_t groups[2] = {1, 16};
    bench_json_array(k->json, "dispatch_floor");
    for (int g = 0; g < 2 && st == VKLLM_OK; g++) {
        for (int stamped = 0; stamped < 2 && st == VKLLM_OK; stamped++) {
            double ms = NAN;
            for (int pass = 0; pass < 2 && st == VKLLM_OK; pass++) {
                gpu_cmd *cmd;
                st = gpu_cmd_begin(k->gpu, &cmd);
                if (st != VKLLM_OK) break;
                gpu_binding ab[2] = {bind(&a, 0, size, false), bind(&b, 0, size, true)};
                gpu_binding ba[2] = {bind(&b, 0, size, false), bind(&a, 0, size, true)};
                gpu_cmd_timestamp(cmd, "start");
                for (uint32_t i = 0; i < CHAIN; i++) {
                    gpu_cmd_dispatch(cmd, pipe, i % 2 ? ba : ab, 2, &count, 4, groups[g], 1, 1);
                    if (stamped || i + 1 == CHAIN) gpu_cmd_timestamp(cmd, "d");
                }
                st = gpu_cmd_submit(cmd);
                if (pass == 1 && st == VKLLM_OK) {
                    const char **labels;
                    const double *stamps;
                    uint32_t n = gpu_last_timestamps(k->gpu, &labels, &stamps);
                    if (n >= 2 && k->f->timestamps) ms = stamps[n - 1] - stamps[0];
                }
            }
            if (st != VKLLM_OK) break;
            double us = ms * 1e3 / CHAIN;
            printf("dispatch floor: %d dependent copies of %u KiB, %u workgroup(s), %s: %.2f us "
                   "each\n",
                   CHAIN, (unsigned)(size / 1024), groups[g],
                   stamped ? "timestamp after each" : "no timestamps", us);
            bench_json_object(k->json, NULL);
            bench_json_int(k->json, "workgroups", groups[g]);
            bench_json_int(k->json, "timestamp_after_each", stamped);
            bench_json_num(k->json, "us_per_dispatch", us);
            bench_json_end_object(k->json);
        }
    }
    bench_json_end_array(k->json);
    gpu_buffer_destroy(k->gpu, &a);
    gpu_buffer_destroy(k->gpu, &b);
    if (st != VKLLM_OK) {
        fprintf(stderr, "vkllm bench kernels: dispatch floor: %s\n", vkllm_last_error());
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- matmul */

typedef struct kb_filter {
    bool types[N_TYPES];
    bool kernels[4];
    uint32_t batches[8];
    size_t n_batches;
} kb_filter;

static void report_row(kb_ctx *k, const char *what, const char *kernel, const char *type,
                       const char *shape, uint32_t a, uint32_t b, uint32_t batch, double ms,
                       double bytes, double flops) {
    double gbps = bytes / (ms * 1e-3) / 1e9, tflops = flops / (ms * 1e-3) / 1e12;
    double frac = k->copy_gbps > 0 ? gbps / k->copy_gbps : NAN;
    printf("%-8s %-8s %-6s %-8s %6ux%-6u %5u %10.4f %9.1f %8.3f %6.1f%%\n", what, kernel, type,
           shape, a, b, batch, ms, gbps, tflops, frac * 100);
    bench_json_object(k->json, NULL);
    bench_json_str(k->json, "kernel", kernel);
    if (type) bench_json_str(k->json, "type", type);
    bench_json_str(k->json, "shape", shape);
    bench_json_int(k->json, "batch", batch);
    bench_json_num(k->json, "ms", ms);
    bench_json_num(k->json, "bytes", bytes);
    bench_json_num(k->json, "flops", flops);
    bench_json_num(k->json, "gbps", gbps);
    bench_json_num(k->json, "tflops", tflops);
    bench_json_num(k->json, "frac_copy_bw", frac);
}

static void bench_matmul_shape(kb_ctx *k, const kb_filter *flt, ggml_type type,
                               const kb_shape *shape) {
    ggml_type_info info = ggml_type_get_info(type);
    uint64_t row_bytes = ggml_row_bytes(type, shape->cols);
    uint64_t wbytes = row_bytes * shape->rows;
    uint64_t stride = align_up(wbytes, 256);
    uint32_t copies = rotate_copies(wbytes);
    uint32_t max_batch = 0;
    for (size_t i = 0; i < flt->n_batches; i++)
        if (flt->batches[i] > max_batch) max_batch = flt->batches[i];
    gpu_buffer w = {0}, x = {0}, y = {0};
    vkllm_status st = gpu_buffer_create(k->gpu, stride * copies, GPU_MEMORY_DEVICE, &w);
    if (st == VKLLM_OK)
        st =
            gpu_buffer_create(k->gpu, (uint64_t)max_batch * shape->cols * 4, GPU_MEMORY_DEVICE, &x);
    if (st == VKLLM_OK)
        st =
            gpu_buffer_create(k->gpu, (uint64_t)max_batch * shape->rows * 4, GPU_MEMORY_DEVICE, &y);
    if (st == VKLLM_OK) st = fill(k, &w, BENCH_FILL_WORD);
    if (st == VKLLM_OK) st = fill(k, &x, 0x3dcccccdu); /* 0.1f */
    if (st != VKLLM_OK) {
        fprintf(stderr, "vkllm bench kernels: %s %s: %s\n", info.name, shape->name,
                vkllm_last_error());
        k->failures++;
        goto done;
    }
    for (int kern = K_MATMUL_MATVEC; kern <= K_MATMUL_COOPMAT; kern++) {
        if (!flt->kernels[kern]) continue;
        if (kern == K_MATMUL_COOPMAT && !k_matmul_coopmat_available(k->f)) continue;
        for (size_t bi = 0; bi < flt->n_batches; bi++) {
            uint32_t batch = flt->batches[bi];
            double ms = NAN;
            for (int pass = 0; pass < 2 && st == VKLLM_OK; pass++) {
                gpu_cmd *cmd;
                st = gpu_cmd_begin(k->gpu, &cmd);
                if (st != VKLLM_OK) break;
                gpu_cmd_timestamp(cmd, "start");
                for (uint32_t r = 0; r < k->reps && st == VKLLM_OK; r++) {
                    k_weight wt = {.buffer = &w,
                                   .offset = (r % copies) * stride,
                                   .type = type,
                                   .rows = shape->rows,
                                   .cols = shape->cols};
                    k_matmul_args a = {.w = &wt,
                                       .x = bind(&x, 0, 0, false),
                                       .y = bind(&y, 0, 0, true),
                                       .n_tokens = batch,
                                       .kernel = (k_matmul_kernel)kern};
                    st = k_matmul_ex(k->gpu, cmd, &a);
                    gpu_cmd_timestamp(cmd, "rep");
                }
                double t0 = bench_now();
                vkllm_status sub = gpu_cmd_submit(cmd); /* frees cmd even after a failure */
                if (st == VKLLM_OK) st = sub;
                if (pass == 1 && st == VKLLM_OK) ms = timed_median_ms(k, bench_now() - t0);
            }
            if (st == VKLLM_ERR_UNSUPPORTED) { /* a path without this type: noted, not a failure */
                printf("%-8s %-8s %-6s %-8s skipped: %s\n", "matmul", kernel_name(kern), info.name,
                       shape->name, vkllm_last_error());
                st = VKLLM_OK;
                continue;
            }
            if (st != VKLLM_OK) {
                fprintf(stderr, "vkllm bench kernels: %s %s %s batch %u: %s\n", kernel_name(kern),
                        info.name, shape->name, batch, vkllm_last_error());
                k->failures++;
                st = VKLLM_OK;
                continue;
            }
            double bytes = (double)wbytes + 4.0 * batch * (shape->cols + shape->rows);
            double flops = 2.0 * shape->rows * shape->cols * batch;
            report_row(k, "matmul", kernel_name(kern), info.name, shape->name, shape->rows,
                       shape->cols, batch, ms, bytes, flops);
            bench_json_int(k->json, "rows", shape->rows);
            bench_json_int(k->json, "cols", shape->cols);
            bench_json_int(k->json, "weight_copies", copies);
            bench_json_end_object(k->json);
        }
    }
done:
    gpu_buffer_destroy(k->gpu, &w);
    gpu_buffer_destroy(k->gpu, &x);
    gpu_buffer_destroy(k->gpu, &y);
}

/* ---------------------------------------------------------------- attention */

#define ATT_HEADS 32u
#define ATT_KV_HEADS 8u
#define ATT_DIM 128u
#define ATT_BLOCK 16u

/* Block tables of `copies` copies of n_seqs sequences of ctx tokens, each copy padded
 * to the storage-offset alignment; blocks are a seeded permutation of the pool so that
 * a sequence's blocks are scattered as in a long-running server. */
static int32_t *att_tables(uint32_t copies, uint32_t n_seqs, uint32_t per_seq,
                           uint64_t copy_stride_ints, uint64_t seed) {
    uint32_t total = copies * n_seqs * per_seq;
    int32_t *perm = malloc((size_t)total * 4);
    int32_t *tables = calloc((size_t)(copies * copy_stride_ints), 4);
    if (!perm || !tables) {
        free(perm);
        free(tables);
        return NULL;
    }
    for (uint32_t i = 0; i < total; i++)
        perm[i] = (int32_t)i;
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (uint32_t i = total - 1; i > 0; i--) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint32_t j = (uint32_t)(s % (i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (uint32_t c = 0; c < copies; c++)
        for (uint32_t q = 0; q < n_seqs; q++)
            memcpy(tables + c * copy_stride_ints + (uint64_t)q * per_seq,
                   perm + ((uint64_t)c * n_seqs + q) * per_seq, (size_t)per_seq * 4);
    free(perm);
    return tables;
}

/* prefill_chunk 0: decode of n_seqs sequences at context ctx; else one prefill chunk of
 * prefill_chunk tokens ending at context ctx, for each of n_seqs sequences. `label` names
 * the row's kernel (NULL: "prefill" or "decode"). */
static void bench_attention_one(kb_ctx *k, uint32_t n_seqs, uint32_t ctx, uint32_t prefill_chunk,
                                const char *label) {
    const char *what = label ? label : prefill_chunk ? "prefill" : "decode";
    uint32_t per_seq = (ctx + ATT_BLOCK - 1) / ATT_BLOCK;
    uint64_t kv_copy_bytes = (uint64_t)n_seqs * per_seq * ATT_BLOCK * ATT_KV_HEADS * ATT_DIM * 2;
    uint32_t copies = rotate_copies(2 * kv_copy_bytes);
    k_attn_kv_layout kv = {.num_blocks = copies * n_seqs * per_seq,
                           .block_size = ATT_BLOCK,
                           .n_head_kv = ATT_KV_HEADS,
                           .head_dim = ATT_DIM};
    k_attn_params p = {.n_head = ATT_HEADS, .scale = 1.0f / sqrtf((float)ATT_DIM)};
    uint64_t align = k->f->min_storage_offset_alignment ? k->f->min_storage_offset_alignment : 4;
    uint64_t table_stride_ints = align_up((uint64_t)n_seqs * per_seq * 4, align) / 4;
    uint32_t q_rows = prefill_chunk ? prefill_chunk * n_seqs : n_seqs;
    uint64_t q_bytes = (uint64_t)q_rows * ATT_HEADS * ATT_DIM * 4;
    uint64_t scratch_bytes =
        prefill_chunk ? 0 : k_attn_decode_scratch_bytes(&kv, &p, n_seqs, ctx, 0);
    int32_t *tables = att_tables(copies, n_seqs, per_seq, table_stride_ints, ctx + n_seqs);
    int32_t *meta = calloc(2 * n_seqs + 2, 4); /* context_lens [n_seqs], query_start [n+1] */
    gpu_buffer kc = {0}, vc = {0}, q = {0}, out = {0}, tb = {0}, md = {0}, scr = {0};
    vkllm_status st = tables && meta ? VKLLM_OK : VKLLM_ERR_OUT_OF_HOST_MEMORY;
    if (st == VKLLM_OK) st = k_attn_check_layout(&kv);
    if (st == VKLLM_OK)
        st = gpu_buffer_create(k->gpu, k_attn_layer_bytes(&kv), GPU_MEMORY_DEVICE, &kc);
    if (st == VKLLM_OK)
        st = gpu_buffer_create(k->gpu, k_attn_layer_bytes(&kv), GPU_MEMORY_DEVICE, &vc);
    if (st == VKLLM_OK) st = gpu_buffer_create(k->gpu, q_bytes, GPU_MEMORY_DEVICE, &q);
    if (st == VKLLM_OK) st = gpu_buffer_create(k->gpu, q_bytes, GPU_MEMORY_DEVICE, &out);
    if (st == VKLLM_OK)
        st = gpu_buffer_create(k->gpu, copies * table_stride_ints * 4, GPU_MEMORY_DEVICE, &tb);
    if (st == VKLLM_OK)
        st = gpu_buffer_create(k->gpu, (2 * n_seqs + 2) * 4, GPU_MEMORY_DEVICE, &md);
    if (st == VKLLM_OK && scratch_bytes)
        st = gpu_buffer_create(k->gpu, scratch_bytes, GPU_MEMORY_DEVICE, &scr);
    if (st == VKLLM_OK) st = fill(k, &kc, BENCH_FILL_WORD);
    if (st == VKLLM_OK) st = fill(k, &vc, BENCH_FILL_WORD);
    if (st == VKLLM_OK) st = fill(k, &q, 0x3dcccccdu);
    if (st == VKLLM_OK) st = gpu_upload(k->gpu, &tb, 0, tables, copies * table_stride_ints * 4);
    if (st == VKLLM_OK) {
        for (uint32_t s = 0; s < n_seqs; s++)
            meta[s] = (int32_t)ctx;
        uint32_t chunk = prefill_chunk ? prefill_chunk : 1;
        for (uint32_t s = 0; s <= n_seqs; s++)
            meta[n_seqs + s] = (int32_t)(s * chunk);
        st = gpu_upload(k->gpu, &md, 0, meta, (2 * n_seqs + 1) * 4);
    }
    /* query_start gets its own buffer: a binding offset must be aligned. */
    gpu_buffer qs = {0};
    if (st == VKLLM_OK) st = gpu_buffer_create(k->gpu, (n_seqs + 1) * 4, GPU_MEMORY_DEVICE, &qs);
    if (st == VKLLM_OK) st = gpu_upload(k->gpu, &qs, 0, meta + n_seqs, (n_seqs + 1) * 4);
    double ms = NAN;
    for (int pass = 0; pass < 2 && st == VKLLM_OK; pass++) {
        gpu_cmd *cmd;
        st = gpu_cmd_begin(k->gpu, &cmd);
        if (st != VKLLM_OK) break;
        gpu_cmd_timestamp(cmd, "start");
        for (uint32_t r = 0; r < k->reps && st == VKLLM_OK; r++) {
            gpu_binding tbl = bind(&tb, (r % copies) * table_stride_ints * 4,
                                   (uint64_t)n_seqs * per_seq * 4, false);
            if (prefill_chunk) {
                k_attn_prefill_args a = {.n_seqs = n_seqs,
                                         .max_q_len = prefill_chunk,
                                         .q = bind(&q, 0, 0, false),
                                         .query_start = bind(&qs, 0, 0, false),
                                         .context_lens = bind(&md, 0, (uint64_t)n_seqs * 4, false),
                                         .block_tables = tbl,
                                         .table_stride = per_seq,
                                         .k_cache = bind(&kc, 0, 0, false),
                                         .v_cache = bind(&vc, 0, 0, false),
                                         .out = bind(&out, 0, 0, true)};
                st = k_attn_prefill(k->gpu, cmd, &kv, &p, &a);
            } else {
                k_attn_decode_args a = {.n_seqs = n_seqs,
                                        .max_context_len = ctx,
                                        .q = bind(&q, 0, 0, false),
                                        .block_tables = tbl,
                                        .table_stride = per_seq,
                                        .context_lens = bind(&md, 0, (uint64_t)n_seqs * 4, false),
                                        .k_cache = bind(&kc, 0, 0, false),
                                        .v_cache = bind(&vc, 0, 0, false),
                                        .out = bind(&out, 0, 0, true),
                                        .scratch = scratch_bytes ? bind(&scr, 0, 0, true)
                                                                 : (gpu_binding){0}};
                st = k_attn_decode(k->gpu, cmd, &kv, &p, &a);
            }
            gpu_cmd_timestamp(cmd, "rep");
        }
        double t0 = bench_now();
        vkllm_status sub = gpu_cmd_submit(cmd);
        if (st == VKLLM_OK) st = sub;
        if (pass == 1 && st == VKLLM_OK) ms = timed_median_ms(k, bench_now() - t0);
    }
    if (st != VKLLM_OK) {
        fprintf(stderr, "vkllm bench kernels: attention %s seqs %u ctx %u: %s\n", what, n_seqs, ctx,
                vkllm_last_error());
        k->failures++;
    } else {
        /* Keys each query row reads: the whole context for decode; causal rows for prefill. */
        double keys = 0;
        if (prefill_chunk) {
            for (uint32_t i = 0; i < prefill_chunk; i++)
                keys += ctx - prefill_chunk + i + 1;
        } else {
            keys = ctx;
        }
        keys *= n_seqs;
        double kv_read = (double)n_seqs * ctx * ATT_KV_HEADS * ATT_DIM * 2 * 2;
        double bytes = kv_read + 2.0 * (double)q_bytes;
        double flops = keys * ATT_HEADS * ATT_DIM * 4.0;
        char shape[32];
        snprintf(shape, sizeof shape, "ctx%u", ctx);
        report_row(k, "attn", what, "f16kv", shape, n_seqs, ctx, prefill_chunk ? prefill_chunk : 1,
                   ms, bytes, flops);
        bench_json_int(k->json, "n_seqs", n_seqs);
        bench_json_int(k->json, "context", ctx);
        bench_json_int(k->json, "kv_copies", copies);
        bench_json_end_object(k->json);
    }
    gpu_buffer *bufs[] = {&kc, &vc, &q, &out, &tb, &md, &scr, &qs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        gpu_buffer_destroy(k->gpu, bufs[i]);
    free(tables);
    free(meta);
}

/* Prefill rows: with `both`, the portable attn_prefill ("prefill", VKLLM_ATTN_PREFILL=old)
 * and, where the device runs it, the tensor-core attn_prefill_cm ("prefill_cm"), in one
 * run so the two are timed side by side. Without `both` (--small: the smoke test's fixed
 * row count) or with an explicit VKLLM_ATTN_PREFILL, one row ("prefill") of the kernel
 * k_attn_prefill chooses. */
static void bench_attention_prefill(kb_ctx *k, uint32_t chunk, bool both) {
    if (!both || getenv("VKLLM_ATTN_PREFILL")) {
        bench_attention_one(k, 1, chunk, chunk, "prefill");
        return;
    }
    k_attn_kv_layout kv = {
        .num_blocks = 1, .block_size = ATT_BLOCK, .n_head_kv = ATT_KV_HEADS, .head_dim = ATT_DIM};
    k_attn_prefill_kernel auto_kernel = K_ATTN_PREFILL_PORTABLE;
    if (k_attn_prefill_choose(k->f, &kv, &auto_kernel) != VKLLM_OK)
        auto_kernel = K_ATTN_PREFILL_PORTABLE;
    setenv("VKLLM_ATTN_PREFILL", "old", 1);
    bench_attention_one(k, 1, chunk, chunk, "prefill");
    if (auto_kernel == K_ATTN_PREFILL_COOPMAT) {
        setenv("VKLLM_ATTN_PREFILL", "cm", 1);
        bench_attention_one(k, 1, chunk, chunk, "prefill_cm");
    }
    unsetenv("VKLLM_ATTN_PREFILL");
}

/* ---------------------------------------------------------------- command */

static void usage(FILE *out) {
    fprintf(out, "usage: vkllm bench kernels [options]\n"
                 "  --json FILE       write the results as JSON\n"
                 "  --small           lavapipe-sized shapes and contexts, 64 MiB copy buffers\n"
                 "                    (automatic on a CPU device)\n"
                 "  --full            Llama-3-8B shapes even on a CPU device\n"
                 "  --reps N          timed repetitions per configuration (default 10)\n"
                 "  --types LIST      e.g. F16,Q4_0,Q4_K (default: all nine)\n"
                 "  --kernels LIST    matvec,tiled,coopmat (default: all available)\n"
                 "  --batch LIST      token counts (default 1,8,512; small: 1,8,40)\n"
                 "  --no-matmul / --no-attention   skip a group\n"
                 "  --device D        Vulkan device index or name substring\n");
}

int bench_kernels(int argc, char **argv) {
    const char *json_path = NULL, *device = NULL, *types_arg = NULL, *kernels_arg = NULL;
    bool small = false, full = false, do_matmul = true, do_attention = true;
    kb_filter flt = {0};
    uint32_t reps = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--small")) {
            small = true;
        } else if (!strcmp(a, "--full")) {
            full = true;
        } else if (!strcmp(a, "--no-matmul")) {
            do_matmul = false;
        } else if (!strcmp(a, "--no-attention")) {
            do_attention = false;
        } else if (i + 1 < argc && !strcmp(a, "--json")) {
            json_path = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--device")) {
            device = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--types")) {
            types_arg = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--kernels")) {
            kernels_arg = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--reps")) {
            if (!bench_parse_u32("kernels", a, argv[++i], &reps)) return 2;
            if (reps < 1 || reps > BENCH_MAX_REPS - 1) {
                fprintf(stderr, "vkllm bench kernels: --reps must be 1..%u\n", BENCH_MAX_REPS - 1);
                return 2;
            }
        } else if (i + 1 < argc && !strcmp(a, "--batch")) {
            if (!bench_parse_u32_list("kernels", a, argv[++i], flt.batches, 8, &flt.n_batches))
                return 2;
            for (size_t b = 0; b < flt.n_batches; b++)
                if (!flt.batches[b]) {
                    fprintf(stderr, "vkllm bench kernels: --batch values must be >= 1\n");
                    return 2;
                }
        } else {
            fprintf(stderr, "vkllm bench kernels: unknown option or missing value '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    /* Filters. */
    for (size_t t = 0; t < N_TYPES; t++)
        flt.types[t] = types_arg == NULL;
    if (types_arg) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", types_arg);
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            size_t t = 0;
            while (t < N_TYPES && strcasecmp(tok, ggml_type_get_info(all_types[t]).name))
                t++;
            if (t == N_TYPES) {
                fprintf(stderr, "vkllm bench kernels: unknown type '%s' in --types\n", tok);
                return 2;
            }
            flt.types[t] = true;
        }
    }
    for (int kk = K_MATMUL_MATVEC; kk <= K_MATMUL_COOPMAT; kk++)
        flt.kernels[kk] = kernels_arg == NULL;
    if (kernels_arg) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", kernels_arg);
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            int kk = K_MATMUL_MATVEC;
            while (kk <= K_MATMUL_COOPMAT && strcasecmp(tok, kernel_name((k_matmul_kernel)kk)))
                kk++;
            if (kk > K_MATMUL_COOPMAT) {
                fprintf(stderr, "vkllm bench kernels: unknown kernel '%s' in --kernels\n", tok);
                return 2;
            }
            flt.kernels[kk] = true;
        }
    }

    kb_ctx k = {.reps = reps};
    gpu_context_options go = {.device = device};
    if (gpu_context_create(&go, &k.gpu) != VKLLM_OK) {
        fprintf(stderr, "vkllm bench kernels: %s\n", vkllm_last_error());
        return 1;
    }
    k.f = gpu_context_features(k.gpu);
    if (k.f->kind == GPU_KIND_CPU && !full) small = true;
    if (!flt.n_batches) {
        uint32_t def[3] = {1, 8, small ? 40 : 512};
        memcpy(flt.batches, def, sizeof def);
        flt.n_batches = 3;
    }
    bench_json json;
    if (!bench_json_open(&json, json_path)) {
        gpu_context_destroy(k.gpu);
        return 1;
    }
    k.json = &json;
    bench_json_str(&json, "bench", "kernels");
    bench_json_device(&json, k.f);
    bench_json_bool(&json, "small", small);
    bench_json_int(&json, "reps", reps);
    bench_print_device(k.f);

    bool ok = bench_copy(&k, small) && bench_dispatch_floor(&k);
    printf("%-8s %-8s %-6s %-8s %13s %5s %10s %9s %8s %7s\n", "op", "kernel", "type", "shape",
           "rows x cols", "batch", "ms(med)", "GB/s", "TFLOP/s", "of copy");
    if (ok && do_matmul) {
        const kb_shape *shapes = small ? small_shapes : full_shapes;
        bench_json_array(&json, "matmul");
        for (size_t t = 0; t < N_TYPES; t++) {
            if (!flt.types[t]) continue;
            for (size_t s = 0; s < 4; s++)
                bench_matmul_shape(&k, &flt, all_types[t], &shapes[s]);
        }
        bench_json_end_array(&json);
    }
    if (ok && do_attention) {
        uint32_t full_ctx[] = {512, 1024, 8192, 32768}, small_ctx[] = {64, 200};
        uint32_t seqs[] = {1, 16}, small_seqs[] = {1, 4};
        const uint32_t *ctxs = small ? small_ctx : full_ctx, *ss = small ? small_seqs : seqs;
        size_t n_ctx = small ? 2 : 4;
        bench_json_array(&json, "attention");
        for (size_t b = 0; b < 2; b++)
            for (size_t c = 0; c < n_ctx; c++)
                bench_attention_one(&k, ss[b], ctxs[c], 0, NULL);
        bench_attention_prefill(&k, small ? 48 : 512, !small);
        bench_json_end_array(&json);
    }
    bench_json_int(&json, "failures", k.failures);
    if (!bench_json_close(&json)) ok = false;
    gpu_context_destroy(k.gpu);
    if (k.failures) fprintf(stderr, "vkllm bench kernels: %d configurations failed\n", k.failures);
    return ok && !k.failures ? 0 : 1;
}
