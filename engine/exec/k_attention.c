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
 * depend on the kernel or the device: scratch bounds stay host-computable. */
#include "k_attention.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

uint32_t k_attn_decode_partition_size(const k_attn_kv_layout *kv, const k_attn_params *p,
                                      uint32_t n_seqs, uint32_t max_context_len,
                                      uint32_t requested) {
    if (requested) return requested;
    uint32_t keys = decode_keys(p, max_context_len);
    uint64_t columns = (uint64_t)n_seqs * kv->n_head_kv * decode_choose(kv, p).n_chunks;
    uint32_t size = K_ATTN_PARTITION_DEFAULT;
    while (size > K_ATTN_PARTITION_MIN &&
           columns * div_up(keys, size) < K_ATTN_DECODE_TARGET_GROUPS)
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
    gpu_binding b[7] = {a->q,   a->k_cache, a->v_cache, a->block_tables, a->context_lens,
                        a->out, scratch};
    for (int i = 0; i < 5; i++)
        b[i].writable = false;
    b[5].writable = b[6].writable = true;
    gpu_cmd_dispatch(cmd, pipeline, b, 7, &push, sizeof push, a->n_seqs, groups_y, parts);
    if (parts <= 1) return VKLLM_OK;

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

vkllm_status k_attn_prefill(gpu_context *ctx, gpu_cmd *cmd, const k_attn_kv_layout *kv,
                            const k_attn_params *p, const k_attn_prefill_args *a) {
    VKL_TRY(check_params(kv, p));
    if (a->n_seqs == 0 || a->max_q_len == 0) return VKLLM_OK;
    uint32_t q_stride = a->q_stride ? a->q_stride : p->n_head * kv->head_dim;
    VKL_TRY(check_q_stride(q_stride, "prefill"));
    uint32_t group = p->n_head / kv->n_head_kv;
    uint32_t br = PREFILL_ACC_WORDS * WORKGROUP_ATTN / (kv->head_dim / 2u);
    if (br > 64u) br = 64u;
    uint32_t bc = 32u;
    while (bc > 8u && prefill_shared_bytes(kv->head_dim, br, bc) > SHARED_BUDGET)
        bc /= 2u;
    uint32_t groups_x = div_up((uint64_t)a->max_q_len * group, br);
    VKL_TRY(check_grid(ctx, "attn_prefill", groups_x, a->n_seqs, kv->n_head_kv));

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
    gpu_pipeline_desc desc = {.shader = "attn_prefill",
                              .num_bindings = 7,
                              .push_constant_size = sizeof push,
                              .num_spec_constants = 3,
                              .spec_constants = {kv->head_dim, br, bc}};
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
