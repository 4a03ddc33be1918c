/* k_attention.c: launchers of the paged-attention kernels (see k_attention.h for the KV
 * layout and conventions). Each launcher checks the shapes, picks the specialization
 * (tile sizes that fit 32 KiB of shared memory, the portable limit, so every device runs
 * the same tested configuration), fills the push constants in the exact order the shader
 * declares them, and records the dispatches.
 *
 * Decode has two kernels with the same bindings, push constants, grid meaning, scratch
 * layout and reduce: attn_decode_sg.comp (subgroups stream keys, lanes split the head
 * dimension; needs subgroup arithmetic and head_dim % 4 == 0; specialized for the
 * device's subgroup size) and the portable attn_decode.comp. VKLLM_ATTN=old|new forces
 * one (see decode_kernel_choice). The partition size (and so the scratch size) does not
 * depend on the kernel or the device: scratch bounds stay host-computable.
 *
 * Prefill has attn_prefill.comp (portable, 32 KiB) and attn_prefill_cm.comp (tensor
 * cores; its tile is fitted to the device's maxComputeSharedMemorySize, not to the
 * portable budget, and its CM_EMULATE build runs the same tile on lavapipe); see
 * k_attn_prefill_choose and docs/notes-prefill-attn.md. */
#include "k_attention.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "k_matmul.h" /* k_matmul_coopmat_available: the same device requirements */

#define WORKGROUP_ATTN 128u /* local_size_x of attn_decode and attn_prefill */
#define WORKGROUP_KV_WRITE 64u
#define WORKGROUP_BLOCK_COPY 256u
#define DECODE_ACC_WORDS 8u   /* ACC_WORDS in attn_decode.comp */
#define PREFILL_ACC_WORDS 16u /* ACC_WORDS in attn_prefill.comp */
#define DECODE_MAX_HEADS_PER_WG 32u
#define SHARED_BUDGET 32768u /* bytes: lavapipe's limit, used on every device */

/* Push constants, field for field as declared in the shaders. */
typedef struct kv_write_push {
    uint32_t n_tokens, n_head_kv, head_dim, block_size, num_slots;
    uint32_t k_src_offset, k_src_stride, v_src_offset, v_src_stride;
} kv_write_push;

typedef struct decode_push {
    uint32_t n_seqs, n_head, n_head_kv, block_size, num_blocks, table_stride, q_stride;
    uint32_t partition_size, max_parts, window;
    float scale, softcap;
    uint32_t ml_offset;
} decode_push;

typedef struct reduce_push {
    uint32_t n_seqs, n_head, head_dim, partition_size, max_parts, window, ml_offset;
} reduce_push;

typedef struct prefill_push {
    uint32_t n_seqs, n_head, n_head_kv, block_size, num_blocks, table_stride, q_stride, window;
    float scale, softcap;
} prefill_push;

typedef struct block_copy_push {
    uint32_t n_pairs, block_words, num_blocks;
} block_copy_push;

static uint32_t div_up(uint64_t a, uint64_t b) {
    return (uint32_t)((a + b - 1) / b);
}

uint64_t k_attn_block_bytes(const k_attn_kv_layout *kv) {
    return (uint64_t)kv->n_head_kv * kv->block_size * kv->head_dim * 2u;
}

uint64_t k_attn_layer_bytes(const k_attn_kv_layout *kv) {
    return (uint64_t)kv->num_blocks * k_attn_block_bytes(kv);
}

vkllm_status k_attn_check_layout(const k_attn_kv_layout *kv) {
    if (!kv) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "attention: KV layout is NULL");
    if (kv->num_blocks == 0 || kv->block_size == 0 || kv->n_head_kv == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "attention: KV layout num_blocks=%u block_size=%u n_head_kv=%u: all "
                        "must be > 0",
                        kv->num_blocks, kv->block_size, kv->n_head_kv);
    if (kv->head_dim == 0 || kv->head_dim % 2 != 0 || kv->head_dim > K_ATTN_MAX_HEAD_DIM)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "attention: KV layout head_dim=%u: must be even and in 2..%u", kv->head_dim,
                        K_ATTN_MAX_HEAD_DIM);
    /* The shaders index words (and slots) with 32-bit unsigned integers. */
    if (k_attn_layer_bytes(kv) / 4u > UINT32_MAX)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "attention: KV layout of %llu bytes per layer exceeds 2^32 words",
                        (unsigned long long)k_attn_layer_bytes(kv));
    return VKLLM_OK;
}

static vkllm_status check_params(const k_attn_kv_layout *kv, const k_attn_params *p) {
    VKL_TRY(k_attn_check_layout(kv));
    if (!p) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "attention: params are NULL");
    if (p->n_head == 0 || p->n_head % kv->n_head_kv != 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "attention: n_head=%u must be a positive multiple of n_head_kv=%u",
                        p->n_head, kv->n_head_kv);
    if (!(p->softcap >= 0.0f))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "attention: softcap=%g must be >= 0 (0 = off)",
                        (double)p->softcap);
    return VKLLM_OK;
}

static vkllm_status check_grid(gpu_context *ctx, const char *kernel, uint32_t x, uint32_t y,
                               uint32_t z) {
    const gpu_features *f = gpu_context_features(ctx);
    if (x > f->max_workgroup_count[0] || y > f->max_workgroup_count[1] ||
        z > f->max_workgroup_count[2])
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "attention: %s grid %u x %u x %u exceeds the device limit %u x %u x %u",
                        kernel, x, y, z, f->max_workgroup_count[0], f->max_workgroup_count[1],
                        f->max_workgroup_count[2]);
    return VKLLM_OK;
}

static vkllm_status check_q_stride(uint32_t q_stride, const char *kernel) {
    if (q_stride % 2 != 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "attention: %s q_stride=%u must be even",
                        kernel, q_stride);
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- kv_write */

vkllm_status k_attn_kv_write(gpu_context *ctx, gpu_cmd *cmd, const k_attn_kv_layout *kv,
                             const k_attn_kv_write_args *a) {
    VKL_TRY(k_attn_check_layout(kv));
    if (a->n_tokens == 0) return VKLLM_OK;
    uint32_t row = kv->n_head_kv * kv->head_dim;
    kv_write_push push = {
        .n_tokens = a->n_tokens,
        .n_head_kv = kv->n_head_kv,
        .head_dim = kv->head_dim,
        .block_size = kv->block_size,
        .num_slots = (uint32_t)((uint64_t)kv->num_blocks * kv->block_size > UINT32_MAX
                                    ? UINT32_MAX
                                    : (uint64_t)kv->num_blocks * kv->block_size),
        .k_src_offset = a->k_src_offset,
        .k_src_stride = a->k_src_stride ? a->k_src_stride : row,
        .v_src_offset = a->v_src_offset,
        .v_src_stride = a->v_src_stride ? a->v_src_stride : row,
    };
    const gpu_features *f = gpu_context_features(ctx);
    uint32_t groups_x = div_up(row / 2u, WORKGROUP_KV_WRITE);
    uint32_t groups_y =
        a->n_tokens < f->max_workgroup_count[1] ? a->n_tokens : f->max_workgroup_count[1];
    gpu_pipeline_desc desc = {
        .shader = "kv_write", .num_bindings = 5, .push_constant_size = sizeof push};
    gpu_pipeline *pipeline;
    VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    gpu_binding b[5] = {a->k_src, a->v_src, a->slots, a->k_cache, a->v_cache};
    b[0].writable = b[1].writable = b[2].writable = false;
    b[3].writable = b[4].writable = true;
    gpu_cmd_dispatch(cmd, pipeline, b, 5, &push, sizeof push, groups_x, groups_y, 1);
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- decode */

typedef struct decode_config {
    uint32_t heads_per_wg, tile, n_chunks;
} decode_config;

static uint32_t decode_shared_bytes(uint32_t head_dim, uint32_t heads, uint32_t tile) {
    return heads * head_dim * 4u              /* q_s */
           + tile * (head_dim / 2u + 1u) * 4u /* tile_s */
           + heads * tile * 4u + tile * 4u    /* p_s, row_base_s */
           + 3u * heads * 4u;                 /* m_s, l_s, alpha_s */
}

static decode_config decode_choose(const k_attn_kv_layout *kv, const k_attn_params *p) {
    uint32_t group = p->n_head / kv->n_head_kv;
    uint32_t cap = DECODE_ACC_WORDS * WORKGROUP_ATTN / (kv->head_dim / 2u);
    if (cap > DECODE_MAX_HEADS_PER_WG) cap = DECODE_MAX_HEADS_PER_WG;
    decode_config c = {.heads_per_wg = group < cap ? group : cap};
    c.tile = kv->head_dim <= 128 ? 64u : 32u;
    while (c.tile > 8u && decode_shared_bytes(kv->head_dim, c.heads_per_wg, c.tile) > SHARED_BUDGET)
        c.tile /= 2u;
    c.n_chunks = div_up(group, c.heads_per_wg);
    return c;
}

/* attn_decode_sg (see the shader header): SG_SUBGROUPS subgroups per workgroup, each
 * taking SG_KEYS_PER_STEP keys per step; lanes split the head dimension in quads. */
#define SG_SUBGROUPS 4u
#define SG_KEYS_PER_STEP 8u
#define SG_MAX_HEADS_PER_WG 8u  /* registers: acc and q are 2 * heads * quads-per-lane vec4 */
#define SG_SHARED_BUDGET 16384u /* bytes of merge state (acc_s) per workgroup */

typedef struct sg_config {
    uint32_t lanes, heads_per_wg, n_chunks, required_subgroup_size, keys_per_step;
} sg_config;

static sg_config sg_choose(const gpu_features *f, const k_attn_kv_layout *kv,
                           const k_attn_params *p) {
    uint32_t group = p->n_head / kv->n_head_kv;
    sg_config c = {.lanes = f->subgroup_size ? f->subgroup_size : 1u};
    /* Drivers that may vary the size (size control with min < max) are asked for the
     * default one, which the shader is specialized for. */
    if (f->subgroup_size_control && f->subgroup_min_size < f->subgroup_max_size)
        c.required_subgroup_size = c.lanes;
    uint32_t cap = SG_SHARED_BUDGET / (SG_SUBGROUPS * kv->head_dim * 4u);
    if (cap > SG_MAX_HEADS_PER_WG) cap = SG_MAX_HEADS_PER_WG;
    if (cap < 1u) cap = 1u;
    c.heads_per_wg = group < cap ? group : cap;
    c.n_chunks = div_up(group, c.heads_per_wg);
    /* VKLLM_ATTN_KEYS=n (1..32) overrides the keys per step: a tuning knob for A/B runs
     * (more keys = more loads in flight per warp, more registers). */
    const char *keys = getenv("VKLLM_ATTN_KEYS");
    long n = keys ? strtol(keys, NULL, 10) : 0;
    c.keys_per_step = n >= 1 && n <= 32 ? (uint32_t)n : SG_KEYS_PER_STEP;
    return c;
}

/* VKLLM_ATTN=old forces attn_decode.comp, =new forces attn_decode_sg.comp (failing where
 * the device cannot run it); otherwise the subgroup kernel runs wherever it can. */
static vkllm_status decode_kernel_choice(const gpu_features *f, const k_attn_kv_layout *kv,
                                         bool *use_sg) {
    const char *env = getenv("VKLLM_ATTN");
    bool force_old = env && !strcasecmp(env, "old"), force_new = env && !strcasecmp(env, "new");
    uint32_t sg = f->subgroup_size;
    bool can = f->subgroup_basic && f->subgroup_arithmetic && sg >= 4u && sg <= 128u &&
               (sg & (sg - 1u)) == 0 && kv->head_dim % 4u == 0 &&
               sg * SG_SUBGROUPS <= f->max_workgroup_invocations &&
               (!f->subgroup_size_control || f->subgroup_min_size == f->subgroup_max_size ||
                (sg >= f->subgroup_min_size && sg <= f->subgroup_max_size));
    if (force_new && !can)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "attention: VKLLM_ATTN=new needs subgroup arithmetic, a power-of-two "
                        "subgroup size of 4..128 (device '%s': %u) and head_dim %% 4 == 0 (%u)",
                        f->name, sg, kv->head_dim);
    *use_sg = can && !force_old;
    return VKLLM_OK;
}

static uint32_t decode_keys(const k_attn_params *p, uint32_t max_context_len) {
    return (p->window > 0 && max_context_len > p->window) ? p->window : max_context_len;
}

/* The automatic partition size stops halving here. VKLLM_ATTN_PARTITION_MIN (a power of
 * two, 16..512) overrides K_ATTN_PARTITION_MIN for A/B timing; any such value keeps the
 * scratch bound of k_attn_decode_scratch_bytes_max (it depends on the target only). */
static uint32_t partition_min(void) {
    const char *env = getenv("VKLLM_ATTN_PARTITION_MIN");
    long v = env ? strtol(env, NULL, 10) : 0;
    if (v >= 16 && v <= (long)K_ATTN_PARTITION_DEFAULT && (v & (v - 1)) == 0) return (uint32_t)v;
    return K_ATTN_PARTITION_MIN;
}

uint32_t k_attn_decode_partition_size(const k_attn_kv_layout *kv, const k_attn_params *p,
                                      uint32_t n_seqs, uint32_t max_context_len,
                                      uint32_t requested) {
    if (requested) return requested;
    uint32_t keys = decode_keys(p, max_context_len);
    uint64_t columns = (uint64_t)n_seqs * kv->n_head_kv * decode_choose(kv, p).n_chunks;
    uint32_t size = K_ATTN_PARTITION_DEFAULT, min_size = partition_min();
    while (size > min_size && columns * div_up(keys, size) < K_ATTN_DECODE_TARGET_GROUPS)
        size /= 2u;
    return size;
}

uint32_t k_attn_decode_partitions(const k_attn_kv_layout *kv, const k_attn_params *p,
                                  uint32_t n_seqs, uint32_t max_context_len, uint32_t requested) {
    uint32_t size = k_attn_decode_partition_size(kv, p, n_seqs, max_context_len, requested);
    uint32_t parts = div_up(decode_keys(p, max_context_len), size);
    return parts ? parts : 1u;
}

uint64_t k_attn_decode_scratch_bytes(const k_attn_kv_layout *kv, const k_attn_params *p,
                                     uint32_t n_seqs, uint32_t max_context_len,
                                     uint32_t requested) {
    uint32_t parts = k_attn_decode_partitions(kv, p, n_seqs, max_context_len, requested);
    if (parts <= 1) return 0;
    return (uint64_t)n_seqs * p->n_head * parts * (kv->head_dim + 2u) * 4u;
}

uint64_t k_attn_decode_scratch_bytes_max(const k_attn_kv_layout *kv, const k_attn_params *p,
                                         uint32_t max_seqs, uint32_t max_context_len,
                                         uint32_t requested) {
    /* Explicit size: n_seqs * partitions grows with both. Automatic size: either 512 was
     * kept (same bound with 512) or the size was halved because n_seqs * parts was below
     * the target at twice the size, so n_seqs * parts < 2 * target. */
    uint32_t size = requested ? requested : K_ATTN_PARTITION_DEFAULT;
    uint64_t units = (uint64_t)max_seqs * div_up(decode_keys(p, max_context_len), size);
    if (!requested && units < 2u * K_ATTN_DECODE_TARGET_GROUPS)
        units = 2u * K_ATTN_DECODE_TARGET_GROUPS;
    return units * p->n_head * (kv->head_dim + 2u) * 4u;
}

uint64_t k_attn_decode_counter_bytes(const k_attn_params *p, uint32_t max_seqs) {
    return (uint64_t)max_seqs * (p && p->n_head ? p->n_head : 1u) * 4u;
}

/* True when the partitions are merged by the decode dispatch (attn_decode_sg_fused):
 * the subgroup kernel, counters given, more than one partition, and VKLLM_ATTN_REDUCE not
 * "separate" (A/B timing of the two-dispatch path). */
static bool decode_fused_reduce(bool use_sg, uint32_t parts, const k_attn_decode_args *a) {
    const char *env = getenv("VKLLM_ATTN_REDUCE");
    if (env && !strcasecmp(env, "separate")) return false;
    return use_sg && parts > 1 && a->counters.buffer != NULL;
}

vkllm_status k_attn_decode(gpu_context *ctx, gpu_cmd *cmd, const k_attn_kv_layout *kv,
                           const k_attn_params *p, const k_attn_decode_args *a) {
    VKL_TRY(check_params(kv, p));
    if (a->n_seqs == 0) return VKLLM_OK;
    uint32_t q_stride = a->q_stride ? a->q_stride : p->n_head * kv->head_dim;
    VKL_TRY(check_q_stride(q_stride, "decode"));
    bool use_sg = false;
    uint32_t partition =
        k_attn_decode_partition_size(kv, p, a->n_seqs, a->max_context_len, a->partition_size);
    uint32_t parts =
        k_attn_decode_partitions(kv, p, a->n_seqs, a->max_context_len, a->partition_size);
    uint64_t scratch_bytes =
        k_attn_decode_scratch_bytes(kv, p, a->n_seqs, a->max_context_len, a->partition_size);
    if (scratch_bytes > 0) {
        if (!a->scratch.buffer)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "attention: decode of max_context_len=%u over %u partitions needs "
                            "%llu scratch bytes but no scratch binding was given",
                            a->max_context_len, parts, (unsigned long long)scratch_bytes);
        uint64_t have =
            a->scratch.range ? a->scratch.range : a->scratch.buffer->size - a->scratch.offset;
        if (have < scratch_bytes)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "attention: decode scratch binding has %llu bytes, needs %llu",
                            (unsigned long long)have, (unsigned long long)scratch_bytes);
        if (scratch_bytes / 4u > UINT32_MAX)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "attention: decode scratch of %llu bytes exceeds 2^32 floats",
                            (unsigned long long)scratch_bytes);
    }
    const gpu_features *f = gpu_context_features(ctx);
    VKL_TRY(decode_kernel_choice(f, kv, &use_sg));
    decode_config c = decode_choose(kv, p);
    sg_config sgc = sg_choose(f, kv, p);
    uint32_t groups_y = kv->n_head_kv * (use_sg ? sgc.n_chunks : c.n_chunks);
    VKL_TRY(check_grid(ctx, "attn_decode", a->n_seqs, groups_y, parts));

    decode_push push = {
        .n_seqs = a->n_seqs,
        .n_head = p->n_head,
        .n_head_kv = kv->n_head_kv,
        .block_size = kv->block_size,
        .num_blocks = kv->num_blocks,
        .table_stride = a->table_stride,
        .q_stride = q_stride,
        .partition_size = partition,
        .max_parts = parts,
        .window = p->window,
        .scale = p->scale,
        .softcap = p->softcap,
        .ml_offset = (uint32_t)((uint64_t)a->n_seqs * p->n_head * parts * kv->head_dim),
    };
    gpu_pipeline_desc desc = {.shader = "attn_decode",
                              .num_bindings = 7,
                              .push_constant_size = sizeof push,
                              .num_spec_constants = 3,
                              .spec_constants = {kv->head_dim, c.tile, c.heads_per_wg}};
    if (use_sg)
        desc = (gpu_pipeline_desc){.shader = "attn_decode_sg",
                                   .num_bindings = 7,
                                   .push_constant_size = sizeof push,
                                   .num_spec_constants = 5,
                                   .spec_constants = {kv->head_dim, sgc.lanes, sgc.heads_per_wg,
                                                      sgc.lanes * SG_SUBGROUPS, sgc.keys_per_step},
                                   .required_subgroup_size = sgc.required_subgroup_size};
    gpu_pipeline *pipeline;
    VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    gpu_binding scratch = scratch_bytes > 0 ? a->scratch : a->out;
    gpu_binding b[8] = {a->q,   a->k_cache, a->v_cache, a->block_tables, a->context_lens,
                        a->out, scratch,    a->counters};
    for (int i = 0; i < 5; i++)
        b[i].writable = false;
    b[5].writable = b[6].writable = b[7].writable = true;
    bool fused = decode_fused_reduce(use_sg, parts, a);
    if (fused) {
        uint64_t need = (uint64_t)a->n_seqs * groups_y * 4u;
        uint64_t have = a->counters.offset > a->counters.buffer->size
                            ? 0
                            : (a->counters.range ? a->counters.range
                                                 : a->counters.buffer->size - a->counters.offset);
        if (have < need)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "attention: decode counters binding has %llu bytes, needs %llu "
                            "(k_attn_decode_counter_bytes)",
                            (unsigned long long)have, (unsigned long long)need);
        desc.shader = "attn_decode_sg_fused";
        desc.num_bindings = 8;
        VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    }
    gpu_cmd_dispatch(cmd, pipeline, b, desc.num_bindings, &push, sizeof push, a->n_seqs, groups_y,
                     parts);
    if (parts <= 1 || fused) return VKLLM_OK;

    reduce_push rpush = {
        .n_seqs = a->n_seqs,
        .n_head = p->n_head,
        .head_dim = kv->head_dim,
        .partition_size = partition,
        .max_parts = parts,
        .window = p->window,
        .ml_offset = push.ml_offset,
    };
    VKL_TRY(check_grid(ctx, "attn_reduce", a->n_seqs, p->n_head, 1));
    gpu_pipeline_desc rdesc = {
        .shader = "attn_reduce", .num_bindings = 3, .push_constant_size = sizeof rpush};
    VKL_TRY(gpu_pipeline_get(ctx, &rdesc, &pipeline));
    gpu_binding rb[3] = {a->context_lens, a->scratch, a->out};
    rb[0].writable = rb[1].writable = false;
    rb[2].writable = true;
    gpu_cmd_dispatch(cmd, pipeline, rb, 3, &rpush, sizeof rpush, a->n_seqs, p->n_head, 1);
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- prefill */

static uint32_t prefill_shared_bytes(uint32_t head_dim, uint32_t br, uint32_t bc) {
    return br * head_dim * 4u + bc * (head_dim / 2u + 1u) * 4u + br * bc * 4u + bc * 4u +
           4u * br * 4u;
}

/* attn_prefill_cm.comp's tile: nsg subgroups of 32 (16 * nsg query rows), bc keys per
 * step (spec constants 1 and 2; 3 is the workgroup size 32 * nsg). */
typedef struct pcm_tile {
    uint32_t nsg, bc;
} pcm_tile;

/* Preference order: more rows per workgroup first (each K/V tile in shared memory serves
 * more query rows), then more keys per step (fewer barriers per product). The H100 (48
 * KiB) gets 4 x 32 at head_dim 128, 4 x 64 at 64; lavapipe (32 KiB) 4 x 16 at 128. */
static const pcm_tile pcm_tiles[] = {{4, 64}, {4, 32}, {4, 16}, {2, 64}, {2, 32}, {2, 16}, {1, 16}};
#define PCM_MAX_HEAD_DIM 256u

/* Shared bytes of attn_prefill_cm.comp (its header): Q, K, V tiles of rows padded to
 * head_dim/8 + 1 uvec4, the S/P rows (bc/4 + 1 uvec4), alpha_s and xch_s. */
static uint64_t pcm_shared_bytes(uint32_t head_dim, pcm_tile t) {
    uint64_t br = 16u * t.nsg, rs = head_dim / 8u + 1u, srs = t.bc / 4u + 1u;
    return 16u * (br * rs + 2u * t.bc * rs + br * srs) + 4u * (br + 32u * t.nsg);
}

static bool pcm_tile_fits(const gpu_features *f, uint32_t head_dim, pcm_tile t) {
    return pcm_shared_bytes(head_dim, t) <= f->max_shared_memory &&
           32u * t.nsg <= f->max_workgroup_invocations && 32u * t.nsg <= f->max_workgroup_size[0];
}

/* The automatic tile: the first of pcm_tiles that fits; false when none does. */
static bool pcm_auto_tile(const gpu_features *f, uint32_t head_dim, pcm_tile *tile) {
    for (size_t i = 0; i < sizeof pcm_tiles / sizeof pcm_tiles[0]; i++)
        if (pcm_tile_fits(f, head_dim, pcm_tiles[i])) {
            *tile = pcm_tiles[i];
            return true;
        }
    return false;
}

/* The tile a launch uses: VKLLM_ATTN_PREFILL_TILE=nsg,bc when set (checked), else the
 * automatic one. */
static vkllm_status pcm_tile_for(const gpu_features *f, uint32_t head_dim, pcm_tile *tile) {
    const char *env = getenv("VKLLM_ATTN_PREFILL_TILE");
    if (!env || !*env) {
        if (!pcm_auto_tile(f, head_dim, tile))
            return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                            "attention: no attn_prefill_cm tile fits %u bytes of shared memory "
                            "at head_dim=%u",
                            f->max_shared_memory, head_dim);
        return VKLLM_OK;
    }
    char *end = NULL;
    unsigned long nsg = strtoul(env, &end, 10), bc = 0;
    bool ok = end != env && *end == ',';
    if (ok) {
        const char *second = end + 1;
        bc = strtoul(second, &end, 10);
        ok = end != second && *end == '\0';
    }
    ok = ok && nsg >= 1 && nsg <= 8 && (bc == 16 || bc == 32 || bc == 64 || bc == 128);
    if (!ok)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "attention: VKLLM_ATTN_PREFILL_TILE='%s': expected nsg,bc with nsg in "
                        "1..8 and bc in 16, 32, 64, 128",
                        env);
    *tile = (pcm_tile){(uint32_t)nsg, (uint32_t)bc};
    if (!pcm_tile_fits(f, head_dim, *tile))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "attention: VKLLM_ATTN_PREFILL_TILE=%s needs %llu bytes of shared memory "
                        "at head_dim=%u and %u invocations; device '%s' has %u bytes, %u",
                        env, (unsigned long long)pcm_shared_bytes(head_dim, *tile), head_dim,
                        32u * tile->nsg, f->name, f->max_shared_memory,
                        f->max_workgroup_invocations);
    return VKLLM_OK;
}

/* Shapes attn_prefill_cm.comp takes (either build). */
static bool pcm_shape_ok(const gpu_features *f, const k_attn_kv_layout *kv) {
    pcm_tile t;
    return kv->head_dim % 16u == 0 && kv->head_dim <= PCM_MAX_HEAD_DIM &&
           pcm_auto_tile(f, kv->head_dim, &t);
}

vkllm_status k_attn_prefill_choose(const gpu_features *f, const k_attn_kv_layout *kv,
                                   k_attn_prefill_kernel *kernel) {
    const char *env = getenv("VKLLM_ATTN_PREFILL");
    bool shape_ok = pcm_shape_ok(f, kv), coopmat = k_matmul_coopmat_available(f);
    *kernel = K_ATTN_PREFILL_PORTABLE;
    if (!env || !*env || !strcasecmp(env, "auto")) {
        if (coopmat && shape_ok) *kernel = K_ATTN_PREFILL_COOPMAT;
    } else if (!strcasecmp(env, "old")) {
        *kernel = K_ATTN_PREFILL_PORTABLE;
    } else if (!strcasecmp(env, "cm")) {
        if (!coopmat)
            return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                            "attention: VKLLM_ATTN_PREFILL=cm needs VK_NV_cooperative_matrix "
                            "(16x8x16 fp16 -> f32), shaderFloat16, the Vulkan memory model and "
                            "subgroup size 32; device '%s' lacks them",
                            f->name);
        if (shape_ok) *kernel = K_ATTN_PREFILL_COOPMAT;
    } else if (!strcasecmp(env, "emulate")) {
        if (shape_ok) *kernel = K_ATTN_PREFILL_EMULATE;
    } else {
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "attention: VKLLM_ATTN_PREFILL='%s': expected old, cm, emulate or auto",
                        env);
    }
    return VKLLM_OK;
}

vkllm_status k_attn_prefill(gpu_context *ctx, gpu_cmd *cmd, const k_attn_kv_layout *kv,
                            const k_attn_params *p, const k_attn_prefill_args *a) {
    VKL_TRY(check_params(kv, p));
    if (a->n_seqs == 0 || a->max_q_len == 0) return VKLLM_OK;
    uint32_t q_stride = a->q_stride ? a->q_stride : p->n_head * kv->head_dim;
    VKL_TRY(check_q_stride(q_stride, "prefill"));
    uint32_t group = p->n_head / kv->n_head_kv;
    const gpu_features *f = gpu_context_features(ctx);
    k_attn_prefill_kernel kernel;
    VKL_TRY(k_attn_prefill_choose(f, kv, &kernel));
    /* attn_prefill_cm reads K/V as uvec4: the bindings must start 16-byte aligned. */
    if ((a->k_cache.offset | a->v_cache.offset) % 16u != 0) kernel = K_ATTN_PREFILL_PORTABLE;

    prefill_push push = {
        .n_seqs = a->n_seqs,
        .n_head = p->n_head,
        .n_head_kv = kv->n_head_kv,
        .block_size = kv->block_size,
        .num_blocks = kv->num_blocks,
        .table_stride = a->table_stride,
        .q_stride = q_stride,
        .window = p->window,
        .scale = p->scale,
        .softcap = p->softcap,
    };
    gpu_pipeline_desc desc;
    uint32_t rows_per_group;
    if (kernel == K_ATTN_PREFILL_PORTABLE) {
        uint32_t br = PREFILL_ACC_WORDS * WORKGROUP_ATTN / (kv->head_dim / 2u);
        if (br > 64u) br = 64u;
        uint32_t bc = 32u;
        while (bc > 8u && prefill_shared_bytes(kv->head_dim, br, bc) > SHARED_BUDGET)
            bc /= 2u;
        desc = (gpu_pipeline_desc){.shader = "attn_prefill",
                                   .num_bindings = 7,
                                   .push_constant_size = sizeof push,
                                   .num_spec_constants = 3,
                                   .spec_constants = {kv->head_dim, br, bc}};
        rows_per_group = br;
    } else {
        pcm_tile t = {0};
        VKL_TRY(pcm_tile_for(f, kv->head_dim, &t));
        bool emulate = kernel == K_ATTN_PREFILL_EMULATE;
        desc = (gpu_pipeline_desc){.shader = emulate ? "attn_prefill_cm_emu" : "attn_prefill_cm",
                                   .num_bindings = 7,
                                   .push_constant_size = sizeof push,
                                   .num_spec_constants = 4,
                                   .spec_constants = {kv->head_dim, t.nsg, t.bc, 32u * t.nsg},
                                   .required_subgroup_size =
                                       emulate || f->subgroup_size == 32 ? 0 : 32};
        rows_per_group = 16u * t.nsg;
    }
    uint32_t groups_x = div_up((uint64_t)a->max_q_len * group, rows_per_group);
    VKL_TRY(check_grid(ctx, desc.shader, groups_x, a->n_seqs, kv->n_head_kv));
    gpu_pipeline *pipeline;
    VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    gpu_binding b[7] = {a->q,           a->k_cache,      a->v_cache, a->block_tables,
                        a->query_start, a->context_lens, a->out};
    for (int i = 0; i < 6; i++)
        b[i].writable = false;
    b[6].writable = true;
    gpu_cmd_dispatch(cmd, pipeline, b, 7, &push, sizeof push, groups_x, a->n_seqs, kv->n_head_kv);
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- block copy */

vkllm_status k_attn_block_copy(gpu_context *ctx, gpu_cmd *cmd, const k_attn_kv_layout *kv,
                               uint32_t n_pairs, gpu_binding pairs, gpu_binding k_cache,
                               gpu_binding v_cache) {
    VKL_TRY(k_attn_check_layout(kv));
    if (n_pairs == 0) return VKLLM_OK;
    block_copy_push push = {
        .n_pairs = n_pairs,
        .block_words = (uint32_t)(k_attn_block_bytes(kv) / 4u),
        .num_blocks = kv->num_blocks,
    };
    uint32_t groups_x = div_up(push.block_words, WORKGROUP_BLOCK_COPY);
    if (groups_x > 64u) groups_x = 64u; /* the shader loops over the rest */
    VKL_TRY(check_grid(ctx, "block_copy", groups_x, n_pairs, 2));
    gpu_pipeline_desc desc = {
        .shader = "block_copy", .num_bindings = 3, .push_constant_size = sizeof push};
    gpu_pipeline *pipeline;
    VKL_TRY(gpu_pipeline_get(ctx, &desc, &pipeline));
    gpu_binding b[3] = {k_cache, v_cache, pairs};
    b[0].writable = b[1].writable = true;
    b[2].writable = false;
    gpu_cmd_dispatch(cmd, pipeline, b, 3, &push, sizeof push, groups_x, n_pairs, 2);
    return VKLLM_OK;
}
