/* runner.c: the forward pass of one step on the GPU (see runner.h).
 *
 * Layout of the scratch activations (f32, row-major, one row per token of the step):
 *   x [T][n_embd]        the residual stream
 *   h [T][n_embd]        normalized input of a sub-layer
 *   qkv [T][n_qkv]       fused Q|K|V, n_qkv = n_embd_q + n_embd_k + n_embd_v: each row
 *                        holds the n_head Q heads, then the n_head_kv K heads, then V
 *   attn [T][n_head * head_dim_v]
 *   o [T][n_embd]        output of a projection before it joins the residual
 *   gu [T][2 * n_ff]     fused gate|up; act [T][n_ff] = act(gate) * up (not written
 *                        where the GLU folds into ffn_down's matvec_dp4a prologue: decode)
 *
 * Fusion (fewer, larger dispatches; docs/perf-notes.md): at load, wq|wk|wv with one
 * type and column count are stacked into one weight (rows Q, then K, then V: each
 * row's bytes are the same, so stacking is a byte concatenation) with stacked biases,
 * and ffn_gate|ffn_up likewise; one product then writes the fused activation. When
 * the types differ (Q4_K_M keeps attn_v in Q6_K on some layers) the separate products
 * write their columns of the same activation (y_col / y_stride), so everything after
 * the products is the same. The Q/K norms (one stacked q_norm|k_norm weight) and RoPE
 * run once over the Q and K heads of each row in place; kv_write and attention read
 * K, V and Q from the fused rows with strides. Decode (<= 8 tokens) projections that
 * join the residual directly (no post-norm) accumulate into x in the product's
 * epilogue instead of a separate add.
 *   last [S][n_embd]     the rows whose logits are wanted (S <= max_seqs)
 *   logits [S][n_vocab]
 * Token rows are ordered as in the plan: decode sequences first (one row each),
 * then the prefill chunks, so decode queries are rows [0, n_decode).
 *
 * Invariant: every buffer here is sized at create time for max_tokens / max_seqs /
 * max_context; exec_step refuses plans beyond them with VKLLM_ERR_INVALID_ARGUMENT
 * before recording anything. */
#include "runner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exec/k_attention.h"
#include "exec/k_matmul.h"
#include "exec/k_ops.h"
#include "exec/k_rope_kv.h"
#include "exec/k_sample.h"

/* A weight tensor in device memory, with the view the kernels take. */
typedef struct exec_tensor {
    gpu_buffer buffer;
    k_weight weight;
    bool present;
} exec_tensor;

typedef struct exec_layer {
    exec_tensor attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, post_attn_norm;
    exec_tensor ffn_norm, ffn_gate, ffn_up, ffn_down, post_ffw_norm;
    /* Stacked at load (then the parts above stay absent): wq|wk|wv and bq|bk|bv,
     * q_norm|k_norm [2][head_dim], ffn_gate|ffn_up. */
    exec_tensor wqkv, bqkv, qk_norm, ffn_gate_up;
    gpu_buffer k_cache, v_cache;
    gpu_buffer k_host, v_host; /* swap space: num_host_blocks blocks each */
} exec_layer;

/* The tensors of a layer as the file has them, and the device slots of a layer in the
 * same order followed by the stacked ones; upload pairs the first LAYER_FILE_TENSORS
 * entries, destroy frees all LAYER_SLOTS. */
enum { LAYER_FILE_TENSORS = 16, LAYER_SLOTS = LAYER_FILE_TENSORS + 4 };

static void layer_sources(const model_layer_weights *w, const gguf_tensor **out) {
    const gguf_tensor *all[LAYER_FILE_TENSORS] = {w->attn_norm,
                                                  w->wq,
                                                  w->wk,
                                                  w->wv,
                                                  w->bq,
                                                  w->bk,
                                                  w->bv,
                                                  w->q_norm,
                                                  w->k_norm,
                                                  w->wo,
                                                  w->post_attn_norm,
                                                  w->ffn_norm,
                                                  w->ffn_gate,
                                                  w->ffn_up,
                                                  w->ffn_down,
                                                  w->post_ffw_norm};
    memcpy(out, all, sizeof all);
}

static void layer_slots(exec_layer *l, exec_tensor **out) {
    exec_tensor *all[LAYER_SLOTS] = {&l->attn_norm,
                                     &l->wq,
                                     &l->wk,
                                     &l->wv,
                                     &l->bq,
                                     &l->bk,
                                     &l->bv,
                                     &l->q_norm,
                                     &l->k_norm,
                                     &l->wo,
                                     &l->post_attn_norm,
                                     &l->ffn_norm,
                                     &l->ffn_gate,
                                     &l->ffn_up,
                                     &l->ffn_down,
                                     &l->post_ffw_norm,
                                     &l->wqkv,
                                     &l->bqkv,
                                     &l->qk_norm,
                                     &l->ffn_gate_up};
    memcpy(out, all, sizeof all);
}

struct exec_model {
    gpu_context *ctx;
    model_config cfg;
    exec_options options;
    k_attn_kv_layout kv;
    exec_tensor token_embd, output_norm, output, rope_freqs;
    exec_layer *layers;
    uint32_t max_blocks_per_seq;

    uint32_t n_qkv; /* floats per token of qkv */
    gpu_buffer x, h, qkv, attn, o, gu, act, last, logits, decode_scratch, decode_counters;
    gpu_buffer split_scratch; /* k_matmul_args.split_scratch; no handle when unused */
    gpu_buffer logits_readback, argmax_out, argmax_readback;
    /* k_topk outputs [max_seqs][K_TOPK_MAX] ids and values, [max_seqs][4] stats */
    gpu_buffer topk_ids, topk_values, topk_stats, topk_readback;
    uint32_t last_logit_rows; /* logits rows of the last step (exec_read_logits_row) */
    bool stepped;
    uint64_t last_readback_bytes;
    uint64_t weight_bytes, kv_bytes, scratch_bytes;
    double last_gpu_ms;
    double last_record_ms; /* host time recording the last step's commands */
    uint32_t last_barriers;
};

static gpu_binding bind(const gpu_buffer *buffer) {
    return (gpu_binding){.buffer = buffer, .offset = 0, .range = 0};
}

static gpu_binding bind_rows(const gpu_buffer *buffer, uint64_t row_bytes, uint32_t first,
                             uint32_t count) {
    return (gpu_binding){.buffer = buffer, .offset = row_bytes * first, .range = row_bytes * count};
}

/* ---------------------------------------------------------------- weights */

static vkllm_status upload_tensor(exec_model *m, const gguf_tensor *t, exec_tensor *out) {
    if (!t) return VKLLM_OK;
    /* The weight kernels read whole words, and the fast matvec whole 16-byte chunks,
     * so the buffer extends to the tensor's end rounded up to 16 bytes. */
    uint64_t size = (t->n_bytes + 15) & ~(uint64_t)15;
    vkllm_status s = gpu_buffer_create(m->ctx, size, GPU_MEMORY_DEVICE, &out->buffer);
    if (s != VKLLM_OK)
        return vkl_fail_wrap(s, "uploading tensor '%.*s' (%llu bytes): ", (int)t->name.len,
                             t->name.ptr, (unsigned long long)t->n_bytes);
    s = gpu_upload(m->ctx, &out->buffer, 0, t->data, t->n_bytes);
    if (s != VKLLM_OK) {
        gpu_buffer_destroy(m->ctx, &out->buffer);
        return vkl_fail_wrap(s, "uploading tensor '%.*s': ", (int)t->name.len, t->name.ptr);
    }
    out->present = true;
    out->weight = (k_weight){.buffer = &out->buffer,
                             .offset = 0,
                             .type = t->type,
                             .rows = (uint32_t)t->ne[1],
                             .cols = (uint32_t)t->ne[0]};
    m->weight_bytes += size;
    return VKLLM_OK;
}

/* Uploads parts[0..n) (same type and row length) as one tensor whose rows are the
 * parts' rows in order: a byte concatenation, since every row has the same bytes. */
static vkllm_status upload_stacked(exec_model *m, const gguf_tensor *const *parts, size_t n,
                                   exec_tensor *out) {
    uint64_t bytes = 0, rows = 0;
    for (size_t i = 0; i < n; i++) {
        bytes += parts[i]->n_bytes;
        rows += parts[i]->n_dims >= 2 ? parts[i]->ne[1] : 1;
    }
    uint64_t size = (bytes + 15) & ~(uint64_t)15; /* see upload_tensor */
    vkllm_status s = gpu_buffer_create(m->ctx, size, GPU_MEMORY_DEVICE, &out->buffer);
    if (s != VKLLM_OK)
        return vkl_fail_wrap(
            s, "uploading tensors '%.*s'.. stacked (%llu bytes): ", (int)parts[0]->name.len,
            parts[0]->name.ptr, (unsigned long long)bytes);
    uint64_t offset = 0;
    for (size_t i = 0; i < n && s == VKLLM_OK; i++) {
        s = gpu_upload(m->ctx, &out->buffer, offset, parts[i]->data, parts[i]->n_bytes);
        if (s != VKLLM_OK)
            s = vkl_fail_wrap(s, "uploading tensor '%.*s' into a stacked buffer: ",
                              (int)parts[i]->name.len, parts[i]->name.ptr);
        offset += parts[i]->n_bytes;
    }
    if (s != VKLLM_OK) {
        gpu_buffer_destroy(m->ctx, &out->buffer);
        return s;
    }
    out->present = true;
    out->weight = (k_weight){.buffer = &out->buffer,
                             .offset = 0,
                             .type = parts[0]->type,
                             .rows = (uint32_t)rows,
                             .cols = (uint32_t)parts[0]->ne[0]};
    m->weight_bytes += size;
    return VKLLM_OK;
}

/* True when the matrices can be stacked into one weight: all present, 2-D, of one
 * type and one row length. */
static bool stackable(const gguf_tensor *const *parts, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!parts[i] || parts[i]->n_dims != 2 || parts[i]->type != parts[0]->type ||
            parts[i]->ne[0] != parts[0]->ne[0])
            return false;
    return true;
}

static void free_tensor(gpu_context *ctx, exec_tensor *t) {
    if (t->present) gpu_buffer_destroy(ctx, &t->buffer);
    t->present = false;
}

/* True when `t` (a part of layer l) went into one of l's stacked tensors. */
static bool fused_part(const exec_layer *l, const exec_tensor *t) {
    if (l->wqkv.present && (t == &l->wq || t == &l->wk || t == &l->wv)) return true;
    if (l->bqkv.present && (t == &l->bq || t == &l->bk || t == &l->bv)) return true;
    if (l->qk_norm.present && (t == &l->q_norm || t == &l->k_norm)) return true;
    return l->ffn_gate_up.present && (t == &l->ffn_gate || t == &l->ffn_up);
}

/* Uploads the stacked tensors of one layer (see the file comment). */
static vkllm_status upload_fused(exec_model *m, const model_layer_weights *lw, exec_layer *l) {
    const model_config *c = &m->cfg;
    if (lw->q_norm || lw->k_norm) {
        /* always stacked: the per-head norm runs once over the Q and K heads */
        const gguf_tensor *norms[2] = {lw->q_norm, lw->k_norm};
        for (int i = 0; i < 2; i++)
            if (!norms[i] || norms[i]->type != GGML_TYPE_F32 ||
                norms[i]->n_bytes != (uint64_t)c->head_dim * 4)
                return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                                "layer q/k norms: both attn_q_norm and attn_k_norm must be f32 "
                                "[%u] (head_dim)",
                                c->head_dim);
        VKL_TRY(upload_stacked(m, norms, 2, &l->qk_norm));
    }
    if (m->options.no_weight_fusion) return VKLLM_OK;
    const gguf_tensor *qkv[3] = {lw->wq, lw->wk, lw->wv};
    const gguf_tensor *bias[3] = {lw->bq, lw->bk, lw->bv};
    bool biases_all = bias[0] && bias[1] && bias[2], biases_none = !bias[0] && !bias[1] && !bias[2];
    if (stackable(qkv, 3) && (biases_all || biases_none)) {
        VKL_TRY(upload_stacked(m, qkv, 3, &l->wqkv));
        if (biases_all) VKL_TRY(upload_stacked(m, bias, 3, &l->bqkv));
    }
    const gguf_tensor *gate_up[2] = {lw->ffn_gate, lw->ffn_up};
    if (stackable(gate_up, 2)) VKL_TRY(upload_stacked(m, gate_up, 2, &l->ffn_gate_up));
    return VKLLM_OK;
}

static vkllm_status upload_weights(exec_model *m, const model_weights *w) {
    VKL_TRY(upload_tensor(m, w->token_embd, &m->token_embd));
    VKL_TRY(upload_tensor(m, w->output_norm, &m->output_norm));
    if (w->output != w->token_embd) VKL_TRY(upload_tensor(m, w->output, &m->output));
    VKL_TRY(upload_tensor(m, w->rope_freqs, &m->rope_freqs));
    for (uint32_t il = 0; il < m->cfg.n_layer; il++) {
        const model_layer_weights *lw = &w->layers[il];
        exec_layer *l = &m->layers[il];
        const gguf_tensor *src[LAYER_FILE_TENSORS];
        exec_tensor *dst[LAYER_SLOTS];
        layer_sources(lw, src);
        layer_slots(l, dst);
        for (size_t i = 0; i < LAYER_FILE_TENSORS; i++) {
            if (!src[i]) continue;
            if (src[i]->n_dims >= 2 && !k_matmul_type_supported(src[i]->type))
                return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                                "tensor '%.*s' has type %s, which the GPU kernels do not read",
                                (int)src[i]->name.len, src[i]->name.ptr,
                                ggml_type_get_info(src[i]->type).name);
        }
        VKL_TRY(upload_fused(m, lw, l));
        for (size_t i = 0; i < LAYER_FILE_TENSORS; i++) {
            if (!src[i] || dst[i]->present || fused_part(l, dst[i])) continue;
            VKL_TRY(upload_tensor(m, src[i], dst[i]));
        }
    }
    return VKLLM_OK;
}

/* The LM head: output.weight, or token_embd when tied. */
static const exec_tensor *lm_head(const exec_model *m) {
    return m->output.present ? &m->output : &m->token_embd;
}

/* ---------------------------------------------------------------- create */

static vkllm_status scratch_buffer(exec_model *m, uint64_t bytes, gpu_memory_kind kind,
                                   gpu_buffer *out) {
    if (bytes == 0) bytes = 16;
    VKL_TRY(gpu_buffer_create(m->ctx, bytes, kind, out));
    m->scratch_bytes += bytes;
    return VKLLM_OK;
}

/* EXEC_FUSE_* bits VKLLM_FUSE turns off (see runner.h); unset: EXEC_FUSE_DEFAULT_OFF. */
static uint32_t fuse_off_from_env(void) {
    const char *env = getenv("VKLLM_FUSE");
    if (!env || !*env) return EXEC_FUSE_DEFAULT_OFF;
    if (!strcmp(env, "1") || !strcmp(env, "all")) return 0;
    if (!strcmp(env, "0") || !strcmp(env, "none")) return EXEC_FUSE_ALL;
    static const struct {
        const char *name;
        uint32_t bit;
    } names[] = {{"rope_kv", EXEC_FUSE_ROPE_KV},
                 {"attn", EXEC_FUSE_ATTN_REDUCE},
                 {"norm", EXEC_FUSE_NORM_MATVEC},
                 {"glu", EXEC_FUSE_GLU_MATVEC}};
    uint32_t on = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strstr(env, names[i].name)) on |= names[i].bit;
    return EXEC_FUSE_ALL & ~on;
}

static void fill_default_options(const model_config *cfg, exec_options *o) {
    if (!o->block_size) o->block_size = 16;
    if (!o->max_tokens) o->max_tokens = 512;
    if (!o->max_seqs) o->max_seqs = 64;
    if (o->max_seqs > o->max_tokens) o->max_seqs = o->max_tokens;
    if (!o->max_context) o->max_context = cfg->n_ctx_train < 8192 ? cfg->n_ctx_train : 8192;
    if (!o->max_context) o->max_context = 8192;
    if (o->kv_memory_fraction <= 0 || o->kv_memory_fraction > 1) o->kv_memory_fraction = 0.9f;
    if (!o->flush_layers) {
        const char *env = getenv("VKLLM_FLUSH_LAYERS"); /* A/B timing */
        o->flush_layers = env && *env ? (int32_t)strtol(env, NULL, 10) : 4;
        if (!o->flush_layers) o->flush_layers = -1;
    }
    o->no_fusion |= fuse_off_from_env();
}

/* Bytes of the products' split-K scratch (k_matmul_args.split_scratch): the most any
 * product of a step uses at any token count it can run with (layers: 9..max_tokens,
 * the LM head: up to max_seqs rows), wo and ffn_down sized for accumulate (the residual
 * joins in the reduce). 0 where the kernel never uses one (no cooperative matrices,
 * VKLLM_MATMUL_SPLITK=0 and no accumulate). Layers repeat shapes: each distinct
 * (shape, type, accumulate) is sized once. */
static uint64_t split_scratch_bytes(const exec_model *m) {
    const gpu_features *f = gpu_context_features(m->ctx);
    const model_config *c = &m->cfg;
    struct sized {
        k_weight w;
        bool acc;
        uint32_t max_tokens;
    } seen[32];
    uint32_t n_seen = 0;
    uint64_t most = 0;
    for (uint32_t li = 0; li <= c->n_layer; li++) {
        const exec_layer *l = li < c->n_layer ? &m->layers[li] : NULL;
        const exec_tensor *ws[] = {
            l ? &l->wqkv : lm_head(m), l ? &l->wq : NULL,     l ? &l->wk : NULL,
            l ? &l->wv : NULL,         l ? &l->wo : NULL,     l ? &l->ffn_gate_up : NULL,
            l ? &l->ffn_gate : NULL,   l ? &l->ffn_up : NULL, l ? &l->ffn_down : NULL};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            if (!ws[i] || !ws[i]->present) continue;
            const k_weight *w = &ws[i]->weight;
            bool acc = l && (ws[i] == &l->wo || ws[i] == &l->ffn_down);
            uint32_t max_tokens = l ? m->options.max_tokens : m->options.max_seqs;
            bool known = false;
            for (uint32_t j = 0; j < n_seen && !known; j++)
                known = seen[j].w.rows == w->rows && seen[j].w.cols == w->cols &&
                        seen[j].w.type == w->type && seen[j].acc == acc &&
                        seen[j].max_tokens == max_tokens;
            if (known) continue;
            if (n_seen < sizeof seen / sizeof seen[0])
                seen[n_seen++] = (struct sized){*w, acc, max_tokens};
            for (uint32_t n = 1; n <= max_tokens; n++) {
                uint64_t bytes = k_matmul_split_scratch_bytes(f, w, n, acc);
                if (bytes > most) most = bytes;
            }
        }
    }
    return most;
}

static vkllm_status create_scratch(exec_model *m) {
    const model_config *c = &m->cfg;
    uint64_t T = m->options.max_tokens, S = m->options.max_seqs;
    VKL_TRY(scratch_buffer(m, T * c->n_embd * 4, GPU_MEMORY_DEVICE, &m->x));
    VKL_TRY(scratch_buffer(m, T * c->n_embd * 4, GPU_MEMORY_DEVICE, &m->h));
    VKL_TRY(scratch_buffer(m, T * m->n_qkv * 4, GPU_MEMORY_DEVICE, &m->qkv));
    VKL_TRY(scratch_buffer(m, T * c->n_head * c->head_dim_v * 4, GPU_MEMORY_DEVICE, &m->attn));
    VKL_TRY(scratch_buffer(m, T * c->n_embd * 4, GPU_MEMORY_DEVICE, &m->o));
    VKL_TRY(scratch_buffer(m, T * c->n_ff * 2 * 4, GPU_MEMORY_DEVICE, &m->gu));
    VKL_TRY(scratch_buffer(m, T * c->n_ff * 4, GPU_MEMORY_DEVICE, &m->act));
    VKL_TRY(scratch_buffer(m, S * c->n_embd * 4, GPU_MEMORY_DEVICE, &m->last));
    VKL_TRY(scratch_buffer(m, S * c->n_vocab * 4, GPU_MEMORY_DEVICE, &m->logits));
    VKL_TRY(scratch_buffer(m, S * c->n_vocab * 4, GPU_MEMORY_READBACK, &m->logits_readback));
    VKL_TRY(scratch_buffer(m, S * 4, GPU_MEMORY_DEVICE, &m->argmax_out));
    VKL_TRY(scratch_buffer(m, S * 4, GPU_MEMORY_READBACK, &m->argmax_readback));
    VKL_TRY(scratch_buffer(m, S * K_TOPK_MAX * 4, GPU_MEMORY_DEVICE, &m->topk_ids));
    VKL_TRY(scratch_buffer(m, S * K_TOPK_MAX * 4, GPU_MEMORY_DEVICE, &m->topk_values));
    VKL_TRY(scratch_buffer(m, S * 16, GPU_MEMORY_DEVICE, &m->topk_stats));
    /* ids, then values, then stats, each packed at the step's k */
    VKL_TRY(
        scratch_buffer(m, S * (2 * K_TOPK_MAX * 4 + 16), GPU_MEMORY_READBACK, &m->topk_readback));
    k_attn_params p = {.n_head = c->n_head, .scale = c->attn_scale};
    uint64_t decode_scratch = k_attn_decode_scratch_bytes_max(
        &m->kv, &p, m->options.max_seqs, m->options.max_context, m->options.partition_size);
    VKL_TRY(scratch_buffer(m, decode_scratch, GPU_MEMORY_DEVICE, &m->decode_scratch));
    uint64_t split_bytes = split_scratch_bytes(m);
    if (split_bytes) VKL_TRY(scratch_buffer(m, split_bytes, GPU_MEMORY_DEVICE, &m->split_scratch));
    /* The fused decode merge's counters start at 0; every decode leaves them 0. */
    uint64_t counter_bytes = k_attn_decode_counter_bytes(&p, m->options.max_seqs);
    VKL_TRY(scratch_buffer(m, counter_bytes, GPU_MEMORY_DEVICE, &m->decode_counters));
    void *zeros = calloc(1, counter_bytes);
    if (!zeros) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "decode counters");
    vkllm_status s = gpu_upload(m->ctx, &m->decode_counters, 0, zeros, counter_bytes);
    free(zeros);
    return s;
}

static vkllm_status create_kv_cache(exec_model *m) {
    const model_config *c = &m->cfg;
    if (c->head_dim != c->head_dim_v)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "KV cache: head_dim %u differs from head_dim_v %u; the paged kernels need "
                        "them equal",
                        c->head_dim, c->head_dim_v);
    m->kv = (k_attn_kv_layout){.num_blocks = 1,
                               .block_size = m->options.block_size,
                               .n_head_kv = c->n_head_kv,
                               .head_dim = c->head_dim};
    VKL_TRY(k_attn_check_layout(&m->kv));
    uint64_t bytes_per_block = 2 * k_attn_block_bytes(&m->kv) * c->n_layer;
    uint32_t num_blocks = m->options.num_blocks;
    if (!num_blocks) {
        const gpu_features *f = gpu_context_features(m->ctx);
        uint64_t used = m->weight_bytes + m->scratch_bytes;
        uint64_t heap = f->device_local_bytes;
        uint64_t free_bytes = heap > used ? heap - used : 0;
        uint64_t budget = (uint64_t)((double)free_bytes * m->options.kv_memory_fraction);
        num_blocks = (uint32_t)(budget / bytes_per_block);
        /* Each layer's K (and V) array is one binding and one allocation: stay within
         * both limits (on NVIDIA maxStorageBufferRange, 4 GiB - 1, exceeds
         * maxMemoryAllocationSize, 4 GiB - 2 MiB). */
        uint64_t per_layer_bytes = f->max_storage_buffer_range;
        if (f->max_allocation_size && f->max_allocation_size < per_layer_bytes)
            per_layer_bytes = f->max_allocation_size;
        uint64_t per_layer_limit = per_layer_bytes / k_attn_block_bytes(&m->kv);
        if (num_blocks > per_layer_limit) num_blocks = (uint32_t)per_layer_limit;
        if (num_blocks == 0)
            return vkl_fail(VKLLM_ERR_OUT_OF_DEVICE_MEMORY,
                            "KV cache: no room for a single block (%llu bytes each) after "
                            "%llu bytes of weights and scratch on a %llu-byte heap",
                            (unsigned long long)bytes_per_block, (unsigned long long)used,
                            (unsigned long long)heap);
        m->options.num_blocks = num_blocks;
    }
    m->kv.num_blocks = num_blocks;
    VKL_TRY(k_attn_check_layout(&m->kv));
    uint64_t layer_bytes = k_attn_layer_bytes(&m->kv);
    for (uint32_t il = 0; il < c->n_layer; il++) {
        vkllm_status s =
            gpu_buffer_create(m->ctx, layer_bytes, GPU_MEMORY_DEVICE, &m->layers[il].k_cache);
        if (s == VKLLM_OK)
            s = gpu_buffer_create(m->ctx, layer_bytes, GPU_MEMORY_DEVICE, &m->layers[il].v_cache);
        if (s != VKLLM_OK)
            return vkl_fail_wrap(s,
                                 "KV cache: layer %u of %u (%u blocks, %llu bytes per layer "
                                 "for K and as many for V): ",
                                 il, c->n_layer, num_blocks, (unsigned long long)layer_bytes);
        m->kv_bytes += 2 * layer_bytes;
        if (m->options.num_host_blocks) {
            uint64_t host_bytes = k_attn_block_bytes(&m->kv) * m->options.num_host_blocks;
            s = gpu_buffer_create(m->ctx, host_bytes, GPU_MEMORY_READBACK, &m->layers[il].k_host);
            if (s == VKLLM_OK)
                s = gpu_buffer_create(m->ctx, host_bytes, GPU_MEMORY_READBACK,
                                      &m->layers[il].v_host);
            if (s != VKLLM_OK)
                return vkl_fail_wrap(s, "KV swap space: layer %u (%u host blocks): ", il,
                                     m->options.num_host_blocks);
        }
    }
    m->max_blocks_per_seq = (m->options.max_context + m->kv.block_size - 1) / m->kv.block_size;
    return VKLLM_OK;
}

vkllm_status exec_model_create(gpu_context *ctx, const gguf_file *file, const model_config *cfg,
                               const model_weights *weights, const exec_options *options,
                               exec_model **out) {
    (void)file;
    *out = NULL;
    exec_model *m = calloc(1, sizeof *m);
    if (!m) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "exec_model");
    m->ctx = ctx;
    m->cfg = *cfg;
    if (options) m->options = *options;
    fill_default_options(cfg, &m->options);
    /* The fused row holds whole heads: Q heads then K heads of one head_dim, so RoPE
     * and the q/k norms run over both in one dispatch. */
    if (cfg->n_embd_q != cfg->n_head * cfg->head_dim ||
        cfg->n_embd_k != cfg->n_head_kv * cfg->head_dim) {
        free(m);
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "exec_model: n_embd_q %u / n_embd_k %u are not n_head %u / n_head_kv %u "
                        "heads of head_dim %u",
                        cfg->n_embd_q, cfg->n_embd_k, cfg->n_head, cfg->n_head_kv, cfg->head_dim);
    }
    m->n_qkv = cfg->n_embd_q + cfg->n_embd_k + cfg->n_embd_v;
    m->layers = calloc(cfg->n_layer, sizeof *m->layers);
    if (!m->layers) {
        free(m);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "exec_model layers");
    }
    vkllm_status s = upload_weights(m, weights);
    if (s == VKLLM_OK) {
        /* The KV layout (block geometry) sizes the decode scratch, so set it first. */
        m->kv = (k_attn_kv_layout){.num_blocks = 1,
                                   .block_size = m->options.block_size,
                                   .n_head_kv = cfg->n_head_kv,
                                   .head_dim = cfg->head_dim};
        s = create_scratch(m);
    }
    if (s == VKLLM_OK) s = create_kv_cache(m);
    if (s != VKLLM_OK) {
        exec_model_destroy(m);
        return s;
    }
    *out = m;
    return VKLLM_OK;
}

void exec_model_destroy(exec_model *m) {
    if (!m) return;
    gpu_context *ctx = m->ctx;
    free_tensor(ctx, &m->token_embd);
    free_tensor(ctx, &m->output_norm);
    free_tensor(ctx, &m->output);
    free_tensor(ctx, &m->rope_freqs);
    for (uint32_t il = 0; il < m->cfg.n_layer; il++) {
        exec_layer *l = &m->layers[il];
        exec_tensor *all[LAYER_SLOTS];
        layer_slots(l, all);
        for (size_t i = 0; i < LAYER_SLOTS; i++)
            free_tensor(ctx, all[i]);
        if (l->k_cache.handle) gpu_buffer_destroy(ctx, &l->k_cache);
        if (l->v_cache.handle) gpu_buffer_destroy(ctx, &l->v_cache);
        if (l->k_host.handle) gpu_buffer_destroy(ctx, &l->k_host);
        if (l->v_host.handle) gpu_buffer_destroy(ctx, &l->v_host);
    }
    gpu_buffer *scratch[] = {&m->x,
                             &m->h,
                             &m->qkv,
                             &m->attn,
                             &m->o,
                             &m->gu,
                             &m->act,
                             &m->last,
                             &m->logits,
                             &m->decode_scratch,
                             &m->split_scratch,
                             &m->decode_counters,
                             &m->logits_readback,
                             &m->argmax_out,
                             &m->argmax_readback,
                             &m->topk_ids,
                             &m->topk_values,
                             &m->topk_stats,
                             &m->topk_readback};
    for (size_t i = 0; i < sizeof scratch / sizeof scratch[0]; i++)
        if (scratch[i]->handle) gpu_buffer_destroy(ctx, scratch[i]);
    free(m->layers);
    free(m);
}

const exec_options *exec_model_options(const exec_model *m) {
    return &m->options;
}

void exec_model_memory(const exec_model *m, uint64_t *weights, uint64_t *kv, uint64_t *scratch) {
    if (weights) *weights = m->weight_bytes;
    if (kv) *kv = m->kv_bytes;
    if (scratch) *scratch = m->scratch_bytes;
}

double exec_last_step_gpu_ms(const exec_model *m) {
    return m->last_gpu_ms;
}

double exec_last_step_record_ms(const exec_model *m) {
    return m->last_record_ms;
}

static double monotonic_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

uint32_t exec_last_step_barriers(const exec_model *m) {
    return m->last_barriers;
}

/* ---------------------------------------------------------------- one step */

/* Per-step inputs, copied into the upload ring. */
typedef struct step_inputs {
    gpu_binding tokens, positions, slots;
    /* decode sequences (rows [0, n_decode)) */
    gpu_binding dec_tables, dec_lens;
    /* prefill sequences */
    gpu_binding pre_tables, pre_lens, pre_query_start;
    uint32_t n_decode, n_prefill, max_decode_ctx, max_q_len;
    uint32_t first_prefill_token;
} step_inputs;

static vkllm_status ring_copy(gpu_context *ctx, const void *src, uint64_t bytes,
                              gpu_binding *binding) {
    void *dst;
    VKL_TRY(gpu_ring_alloc(ctx, bytes ? bytes : 4, &dst, binding));
    if (bytes) memcpy(dst, src, bytes);
    return VKLLM_OK;
}

/* Writes block tables [count][max_blocks_per_seq] and context lengths of
 * plan->seqs[first .. first+count) into the ring. */
static vkllm_status ring_tables(exec_model *m, const exec_step_plan *plan, uint32_t first,
                                uint32_t count, gpu_binding *tables, gpu_binding *lens) {
    uint32_t stride = m->max_blocks_per_seq;
    int32_t *t, *l;
    VKL_TRY(
        gpu_ring_alloc(m->ctx, (uint64_t)(count ? count : 1) * stride * 4, (void **)&t, tables));
    VKL_TRY(gpu_ring_alloc(m->ctx, (uint64_t)(count ? count : 1) * 4, (void **)&l, lens));
    for (uint32_t i = 0; i < count; i++) {
        const exec_seq_plan *seq = &plan->seqs[first + i];
        uint32_t n = seq->n_blocks < stride ? seq->n_blocks : stride;
        memcpy(t + (uint64_t)i * stride, seq->block_table, (uint64_t)n * 4);
        for (uint32_t b = n; b < stride; b++)
            t[(uint64_t)i * stride + b] = -1;
        l[i] = (int32_t)seq->context_len;
    }
    return VKLLM_OK;
}

static vkllm_status check_plan_fits(const exec_model *m, const exec_step_plan *plan) {
    VKL_TRY(exec_plan_validate(plan, m->kv.block_size, m->kv.num_blocks));
    if (plan->n_tokens > m->options.max_tokens || plan->n_seqs > m->options.max_seqs)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "step plan: %u tokens in %u sequences exceed the runner's limits (%u "
                        "tokens, %u sequences)",
                        plan->n_tokens, plan->n_seqs, m->options.max_tokens, m->options.max_seqs);
    for (uint32_t s = 0; s < plan->n_seqs; s++)
        if (plan->seqs[s].context_len > m->options.max_context)
            return vkl_fail(VKLLM_ERR_TOO_LONG,
                            "step plan: sequence %u reaches %u tokens, beyond max_context %u", s,
                            plan->seqs[s].context_len, m->options.max_context);
    for (uint32_t t = 0; t < plan->n_tokens; t++)
        if (plan->tokens[t] < 0 || (uint32_t)plan->tokens[t] >= m->cfg.n_vocab)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "step plan: token %u has id %d outside the vocabulary [0, %u)", t,
                            plan->tokens[t], m->cfg.n_vocab);
    return VKLLM_OK;
}

static vkllm_status upload_inputs(exec_model *m, const exec_step_plan *plan, step_inputs *in) {
    memset(in, 0, sizeof *in);
    uint64_t n = plan->n_tokens;
    VKL_TRY(ring_copy(m->ctx, plan->tokens, n * 4, &in->tokens));
    VKL_TRY(ring_copy(m->ctx, plan->positions, n * 4, &in->positions));
    VKL_TRY(ring_copy(m->ctx, plan->slots, n * 4, &in->slots));
    in->n_decode = exec_plan_decode_count(plan);
    in->n_prefill = plan->n_seqs - in->n_decode;
    for (uint32_t s = 0; s < in->n_decode; s++)
        if (plan->seqs[s].context_len > in->max_decode_ctx)
            in->max_decode_ctx = plan->seqs[s].context_len;
    VKL_TRY(ring_tables(m, plan, 0, in->n_decode, &in->dec_tables, &in->dec_lens));
    VKL_TRY(ring_tables(m, plan, in->n_decode, in->n_prefill, &in->pre_tables, &in->pre_lens));
    int32_t *qs;
    VKL_TRY(gpu_ring_alloc(m->ctx, (uint64_t)(in->n_prefill + 1) * 4, (void **)&qs,
                           &in->pre_query_start));
    in->first_prefill_token = in->n_decode; /* one token per decode sequence */
    qs[0] = 0;
    for (uint32_t i = 0; i < in->n_prefill; i++) {
        const exec_seq_plan *seq = &plan->seqs[in->n_decode + i];
        qs[i + 1] = qs[i] + (int32_t)seq->n_new;
        if (seq->n_new > in->max_q_len) in->max_q_len = seq->n_new;
    }
    return VKLLM_OK;
}

/* Attention of the step's tokens; the KV write first unless the fused RoPE + KV write
 * (k_rope_kv_write) already stored this layer's K/V (kv_written). */
static vkllm_status record_attention(exec_model *m, gpu_cmd *cmd, uint32_t il,
                                     const step_inputs *in, uint32_t n_tokens, bool kv_written) {
    const model_config *c = &m->cfg;
    exec_layer *l = &m->layers[il];
    k_attn_params p = {.n_head = c->n_head,
                       .scale = c->attn_scale,
                       .softcap = c->attn_logit_softcap,
                       .window = c->is_sliding[il] ? c->sliding_window : 0};
    k_attn_kv_write_args w = {.n_tokens = n_tokens,
                              .k_src = bind(&m->qkv),
                              .v_src = bind(&m->qkv),
                              .k_src_offset = c->n_embd_q,
                              .v_src_offset = c->n_embd_q + c->n_embd_k,
                              .k_src_stride = m->n_qkv,
                              .v_src_stride = m->n_qkv,
                              .slots = in->slots,
                              .k_cache = bind(&l->k_cache),
                              .v_cache = bind(&l->v_cache)};
    if (!kv_written) VKL_TRY(k_attn_kv_write(m->ctx, cmd, &m->kv, &w));
    uint64_t q_row = (uint64_t)m->n_qkv * 4, out_row = (uint64_t)c->n_head * c->head_dim_v * 4;
    if (in->n_decode) {
        k_attn_decode_args d = {.n_seqs = in->n_decode,
                                .max_context_len = in->max_decode_ctx,
                                .partition_size = m->options.partition_size,
                                .q = bind_rows(&m->qkv, q_row, 0, in->n_decode),
                                .q_stride = m->n_qkv,
                                .block_tables = in->dec_tables,
                                .table_stride = m->max_blocks_per_seq,
                                .context_lens = in->dec_lens,
                                .k_cache = bind(&l->k_cache),
                                .v_cache = bind(&l->v_cache),
                                .out = bind_rows(&m->attn, out_row, 0, in->n_decode),
                                .scratch = bind(&m->decode_scratch)};
        if (!(m->options.no_fusion & EXEC_FUSE_ATTN_REDUCE)) d.counters = bind(&m->decode_counters);
        VKL_TRY(k_attn_decode(m->ctx, cmd, &m->kv, &p, &d));
    }
    if (in->n_prefill) {
        uint32_t first = in->first_prefill_token, count = n_tokens - first;
        k_attn_prefill_args a = {.n_seqs = in->n_prefill,
                                 .max_q_len = in->max_q_len,
                                 .q = bind_rows(&m->qkv, q_row, first, count),
                                 .q_stride = m->n_qkv,
                                 .query_start = in->pre_query_start,
                                 .context_lens = in->pre_lens,
                                 .block_tables = in->pre_tables,
                                 .table_stride = m->max_blocks_per_seq,
                                 .k_cache = bind(&l->k_cache),
                                 .v_cache = bind(&l->v_cache),
                                 .out = bind_rows(&m->attn, out_row, first, count)};
        VKL_TRY(k_attn_prefill(m->ctx, cmd, &m->kv, &p, &a));
    }
    return VKLLM_OK;
}

/* y[t][col .. col + w.rows) (= or +=) W x[t] (+ bias) for t < n_tokens, y rows of
 * y_stride floats (0: w.rows); with `norm` W rmsnorm(x[t]) (k_matmul_args.norm_weight),
 * with `glu` W (act(gate) ∘ up) of the gate|up rows x = gu (k_matmul_args.glu). The binding starts
 * at the aligned offset at or below column `col` of token 0 and ends at the last element written,
 * so products into disjoint columns of one buffer for one token (decode) have disjoint ranges and
 * the automatic barrier tracking lets them run together. */
static vkllm_status matmul_cols_pro(exec_model *m, gpu_cmd *cmd, const exec_tensor *w,
                                    const gpu_buffer *x, const gpu_buffer *y, uint32_t y_stride,
                                    uint32_t col, const exec_tensor *bias, uint32_t n_tokens,
                                    bool accumulate, const exec_tensor *norm,
                                    const k_glu_kind *glu) {
    uint64_t align = gpu_context_features(m->ctx)->min_storage_offset_alignment;
    if (align < 4) align = 4;
    uint32_t rows = w->weight.rows;
    if (!y_stride) y_stride = rows;
    uint64_t first = (uint64_t)col * 4, start = first - first % align;
    uint64_t end = ((uint64_t)(n_tokens ? n_tokens - 1 : 0) * y_stride + col + rows) * 4;
    k_matmul_args a = {.w = &w->weight,
                       .x = bind(x),
                       .y = {.buffer = y, .offset = start, .range = end - start},
                       .y_stride = y_stride,
                       .y_col = (uint32_t)((first - start) / 4),
                       .n_tokens = n_tokens,
                       .accumulate = accumulate,
                       .bias = bias && bias->present ? bind(&bias->buffer) : (gpu_binding){0},
                       .split_scratch =
                           m->split_scratch.handle ? bind(&m->split_scratch) : (gpu_binding){0}};
    if (norm) {
        a.norm_weight = bind(&norm->buffer);
        a.norm_eps = m->cfg.rms_eps;
    }
    if (glu) { /* x is gu: rows of 2 n_ff, gate then up */
        a.glu = true;
        a.glu_kind = *glu;
    }
    return k_matmul_ex(m->ctx, cmd, &a);
}

/* matmul_cols_pro with the RMSNorm prologue only. */
static vkllm_status matmul_cols_norm(exec_model *m, gpu_cmd *cmd, const exec_tensor *w,
                                     const gpu_buffer *x, const gpu_buffer *y, uint32_t y_stride,
                                     uint32_t col, const exec_tensor *bias, uint32_t n_tokens,
                                     bool accumulate, const exec_tensor *norm) {
    return matmul_cols_pro(m, cmd, w, x, y, y_stride, col, bias, n_tokens, accumulate, norm, NULL);
}

/* matmul_cols_norm without the RMSNorm prologue. */
static vkllm_status matmul_cols(exec_model *m, gpu_cmd *cmd, const exec_tensor *w,
                                const gpu_buffer *x, const gpu_buffer *y, uint32_t y_stride,
                                uint32_t col, const exec_tensor *bias, uint32_t n_tokens,
                                bool accumulate) {
    return matmul_cols_norm(m, cmd, w, x, y, y_stride, col, bias, n_tokens, accumulate, NULL);
}

/* True when the RMSNorm before the products `ws` (the present ones) folds into them
 * (k_matmul_args.norm_weight): every one runs matvec_dp4a for n_tokens, i.e. decode on
 * devices with accelerated int8 dot products, and the fusion is not turned off. */
static bool norm_folds(const exec_model *m, const exec_tensor *const *ws, size_t n,
                       const exec_tensor *norm, uint32_t n_tokens) {
    if (m->options.no_fusion & EXEC_FUSE_NORM_MATVEC) return false;
    const gpu_features *f = gpu_context_features(m->ctx);
    for (size_t i = 0; i < n; i++) {
        if (!ws[i]->present) continue;
        k_matmul_args a = {.w = &ws[i]->weight,
                           .x = bind(&m->x),
                           .n_tokens = n_tokens,
                           .norm_weight = bind(&norm->buffer),
                           .norm_eps = m->cfg.rms_eps};
        if (!k_matmul_norm_prologue_applies(f, &a)) return false;
    }
    return true;
}

/* True when the GLU folds into the down product (k_matmul_args.glu): it runs matvec_dp4a
 * for n_tokens (decode on devices with accelerated int8 dot products), the prologue has the
 * model's activation, and the fusion is not turned off. Then the product reads gu and the
 * glu dispatch goes away. */
static bool glu_folds(const exec_model *m, const exec_tensor *down, k_glu_kind glu,
                      uint32_t n_tokens) {
    if (m->options.no_fusion & EXEC_FUSE_GLU_MATVEC) return false;
    k_matmul_args a = {
        .w = &down->weight, .x = bind(&m->gu), .n_tokens = n_tokens, .glu = true, .glu_kind = glu};
    return k_matmul_glu_prologue_applies(gpu_context_features(m->ctx), &a);
}

static vkllm_status matmul(exec_model *m, gpu_cmd *cmd, const exec_tensor *w, const gpu_buffer *x,
                           const gpu_buffer *y, const exec_tensor *bias, uint32_t n_tokens) {
    return matmul_cols(m, cmd, w, x, y, 0, 0, bias, n_tokens, false);
}

/* x += norm ? rmsnorm(W src) * norm : W src, src = m->attn or m->act (or m->gu with
 * `glu`: the GLU prologue forms act from it). Without a post-norm and with the matvec
 * kernel (decode), the product accumulates into x in its epilogue (one dispatch and one
 * barrier fewer); otherwise it goes through o. */
static vkllm_status project_to_residual(exec_model *m, gpu_cmd *cmd, const exec_tensor *w,
                                        const gpu_buffer *src, const exec_tensor *norm,
                                        uint32_t n_tokens, const k_glu_kind *glu) {
    const model_config *c = &m->cfg;
    const gpu_features *f = gpu_context_features(m->ctx);
    /* the cooperative-matrix kernel accumulates in its split-K reduce, given the scratch */
    if (!norm->present && k_matmul_accumulate_supported(f, n_tokens) &&
        k_matmul_split_scratch_bytes(f, &w->weight, n_tokens, true) <= m->split_scratch.size)
        return matmul_cols_pro(m, cmd, w, src, &m->x, 0, 0, NULL, n_tokens, true, NULL, glu);
    VKL_TRY(matmul_cols_pro(m, cmd, w, src, &m->o, 0, 0, NULL, n_tokens, false, NULL, glu));
    uint64_t bytes = (uint64_t)n_tokens * c->n_embd * 4;
    gpu_binding x = {.buffer = &m->x, .range = bytes};
    gpu_binding s = {.buffer = &m->o, .range = bytes};
    if (norm->present)
        return k_rms_norm_add(m->ctx, cmd, s, bind(&norm->buffer), x, n_tokens, c->n_embd,
                              c->rms_eps);
    return k_add(m->ctx, cmd, x, s, x, n_tokens * c->n_embd);
}

/* qkv = h · [wq|wk|wv]ᵀ (+ biases), one product when stacked, else one per part into
 * its columns. With `norm` (folded attn_norm) the products read x and normalize it. */
static vkllm_status record_qkv(exec_model *m, gpu_cmd *cmd, const exec_layer *l, uint32_t T,
                               const exec_tensor *norm) {
    const model_config *c = &m->cfg;
    const gpu_buffer *in = norm ? &m->x : &m->h;
    uint32_t s = m->n_qkv, k0 = c->n_embd_q, v0 = c->n_embd_q + c->n_embd_k;
    if (l->wqkv.present)
        return matmul_cols_norm(m, cmd, &l->wqkv, in, &m->qkv, 0, 0, &l->bqkv, T, false, norm);
    VKL_TRY(matmul_cols_norm(m, cmd, &l->wq, in, &m->qkv, s, 0, &l->bq, T, false, norm));
    VKL_TRY(matmul_cols_norm(m, cmd, &l->wk, in, &m->qkv, s, k0, &l->bk, T, false, norm));
    return matmul_cols_norm(m, cmd, &l->wv, in, &m->qkv, s, v0, &l->bv, T, false, norm);
}

/* gu = h · [gate|up]ᵀ, stacked or into the columns of each half; `norm` as above. */
static vkllm_status record_gate_up(exec_model *m, gpu_cmd *cmd, const exec_layer *l, uint32_t T,
                                   const exec_tensor *norm) {
    const model_config *c = &m->cfg;
    const gpu_buffer *in = norm ? &m->x : &m->h;
    if (l->ffn_gate_up.present)
        return matmul_cols_norm(m, cmd, &l->ffn_gate_up, in, &m->gu, 0, 0, NULL, T, false, norm);
    VKL_TRY(
        matmul_cols_norm(m, cmd, &l->ffn_gate, in, &m->gu, 2 * c->n_ff, 0, NULL, T, false, norm));
    return matmul_cols_norm(m, cmd, &l->ffn_up, in, &m->gu, 2 * c->n_ff, c->n_ff, NULL, T, false,
                            norm);
}

static vkllm_status record_layer(exec_model *m, gpu_cmd *cmd, uint32_t il, const step_inputs *in,
                                 uint32_t T) {
    const model_config *c = &m->cfg;
    exec_layer *l = &m->layers[il];
    gpu_context *ctx = m->ctx;
    /* attn_norm folds into the QKV products where they all run matvec_dp4a. */
    const exec_tensor *qkv_parts[4] = {&l->wqkv, &l->wq, &l->wk, &l->wv};
    bool fold = norm_folds(m, qkv_parts, 4, &l->attn_norm, T);
    if (!fold)
        VKL_TRY(k_rms_norm(ctx, cmd, bind(&m->x), bind(&l->attn_norm.buffer), bind(&m->h), T,
                           c->n_embd, c->rms_eps));
    VKL_TRY(record_qkv(m, cmd, l, T, fold ? &l->attn_norm : NULL));
    /* Q and K heads are adjacent in each qkv row: one norm and one RoPE for both. */
    uint32_t qk_heads = c->n_head + c->n_head_kv;
    if (c->has_qk_norm) {
        k_rms_norm_args a = {.x = bind(&m->qkv),
                             .weight = bind(&l->qk_norm.buffer),
                             .out = bind(&m->qkv),
                             .n_tokens = T,
                             .heads = qk_heads,
                             .n = c->head_dim,
                             .x_stride = m->n_qkv,
                             .out_stride = m->n_qkv,
                             .w_split = c->n_head,
                             .eps = c->rms_eps};
        VKL_TRY(k_rms_norm_ex(ctx, cmd, &a));
    }
    gpu_binding freq_factors =
        m->rope_freqs.present ? bind(&m->rope_freqs.buffer) : (gpu_binding){0};
    k_rope_mode mode = c->rope_neox ? K_ROPE_NEOX : K_ROPE_NORM;
    /* RoPE of Q and K and the K/V cache write in one dispatch (the qkv row holds Q, K,
     * V heads of one head_dim, checked at create), else RoPE here and kv_write in
     * record_attention. */
    bool fuse_rope_kv = !(m->options.no_fusion & EXEC_FUSE_ROPE_KV);
    if (fuse_rope_kv) {
        k_rope_kv_args r = {.qkv = bind(&m->qkv),
                            .n_tokens = T,
                            .n_head = c->n_head,
                            .x_stride = m->n_qkv,
                            .positions = in->positions,
                            .freq_factors = freq_factors,
                            .slots = in->slots,
                            .k_cache = bind(&l->k_cache),
                            .v_cache = bind(&l->v_cache),
                            .n_rot = c->n_rot,
                            .freq_base = model_rope_base(c, il),
                            .freq_scale = model_rope_scale(c, il),
                            .mode = mode};
        VKL_TRY(k_rope_kv_write(ctx, cmd, &m->kv, &r));
    } else {
        k_rope_args r = {.x = bind(&m->qkv),
                         .positions = in->positions,
                         .freq_factors = freq_factors,
                         .out = bind(&m->qkv),
                         .n_tokens = T,
                         .n_heads = qk_heads,
                         .head_dim = c->head_dim,
                         .n_rot = c->n_rot,
                         .x_stride = m->n_qkv,
                         .out_stride = m->n_qkv,
                         .freq_base = model_rope_base(c, il),
                         .freq_scale = model_rope_scale(c, il),
                         .mode = mode};
        VKL_TRY(k_rope_ex(ctx, cmd, &r));
    }
    VKL_TRY(record_attention(m, cmd, il, in, T, fuse_rope_kv));
    VKL_TRY(project_to_residual(m, cmd, &l->wo, &m->attn, &l->post_attn_norm, T, NULL));

    const exec_tensor *ffn_parts[3] = {&l->ffn_gate_up, &l->ffn_gate, &l->ffn_up};
    fold = norm_folds(m, ffn_parts, 3, &l->ffn_norm, T);
    if (!fold)
        VKL_TRY(k_rms_norm(ctx, cmd, bind(&m->x), bind(&l->ffn_norm.buffer), bind(&m->h), T,
                           c->n_embd, c->rms_eps));
    VKL_TRY(record_gate_up(m, cmd, l, T, fold ? &l->ffn_norm : NULL));
    k_glu_kind glu = c->act == MODEL_ACT_GELU_TANH ? K_GLU_GELU_TANH : K_GLU_SILU;
    /* the GLU folds into the down product where it runs matvec_dp4a (decode) */
    if (glu_folds(m, &l->ffn_down, glu, T))
        return project_to_residual(m, cmd, &l->ffn_down, &m->gu, &l->post_ffw_norm, T, &glu);
    VKL_TRY(k_glu_fused(ctx, cmd, glu, bind(&m->gu), bind(&m->act), T, c->n_ff));
    VKL_TRY(project_to_residual(m, cmd, &l->ffn_down, &m->act, &l->post_ffw_norm, T, NULL));
    return VKLLM_OK;
}

/* Gathers the rows that need logits, applies the final norm and the LM head. */
/* Records the readback of the wanted logits rows (runs of consecutive rows in one
 * copy each); returns the bytes. */
static uint64_t record_logits_readback(exec_model *m, gpu_cmd *cmd, uint32_t n_rows,
                                       const bool *rows) {
    uint64_t row_bytes = (uint64_t)m->cfg.n_vocab * 4, total = 0;
    for (uint32_t r = 0; r < n_rows;) {
        if (rows && !rows[r]) {
            r++;
            continue;
        }
        uint32_t end = r + 1;
        while (end < n_rows && (!rows || rows[end]))
            end++;
        uint64_t bytes = (end - r) * row_bytes;
        gpu_cmd_copy(cmd, &m->logits, r * row_bytes, &m->logits_readback, r * row_bytes, bytes);
        total += bytes;
        r = end;
    }
    return total;
}

/* k_topk over the step's logits rows, then one readback of ids | values | stats. */
static vkllm_status record_topk(exec_model *m, gpu_cmd *cmd, uint32_t n_rows,
                                const exec_step_outputs *o) {
    uint32_t k = o->topk_k, n_vocab = m->cfg.n_vocab;
    gpu_binding inv_t;
    VKL_TRY(ring_copy(m->ctx, o->inv_temperature, (uint64_t)n_rows * 4, &inv_t));
    VKL_TRY(k_topk(m->ctx, cmd, bind(&m->logits), inv_t, bind(&m->topk_ids), bind(&m->topk_values),
                   bind(&m->topk_stats), n_rows, n_vocab, n_vocab, k));
    uint64_t list = (uint64_t)n_rows * k * 4;
    gpu_cmd_copy(cmd, &m->topk_ids, 0, &m->topk_readback, 0, list);
    gpu_cmd_copy(cmd, &m->topk_values, 0, &m->topk_readback, list, list);
    gpu_cmd_copy(cmd, &m->topk_stats, 0, &m->topk_readback, 2 * list, (uint64_t)n_rows * 16);
    m->last_readback_bytes += 2 * list + (uint64_t)n_rows * 16;
    return VKLLM_OK;
}

static vkllm_status record_head(exec_model *m, gpu_cmd *cmd, const exec_step_plan *plan,
                                uint32_t n_rows, const exec_step_outputs *o) {
    bool want_logits = o->logits != NULL, want_argmax = o->argmax != NULL;
    const model_config *c = &m->cfg;
    uint64_t row = (uint64_t)c->n_embd * 4;
    uint32_t r = 0;
    for (uint32_t s = 0; s < plan->n_seqs; s++) {
        const exec_seq_plan *seq = &plan->seqs[s];
        if (!seq->need_logits) continue;
        uint32_t t = seq->first_token + seq->n_new - 1;
        gpu_cmd_copy(cmd, &m->x, row * t, &m->last, row * r, row);
        r++;
    }
    VKL_TRY(k_rms_norm(m->ctx, cmd, bind(&m->last), bind(&m->output_norm.buffer), bind(&m->last),
                       n_rows, c->n_embd, c->rms_eps));
    VKL_TRY(matmul(m, cmd, lm_head(m), &m->last, &m->logits, NULL, n_rows));
    uint32_t n_logits = n_rows * c->n_vocab;
    if (c->final_logit_softcap > 0)
        VKL_TRY(k_softcap(m->ctx, cmd, bind(&m->logits), bind(&m->logits), n_logits,
                          c->final_logit_softcap));
    if (want_argmax) {
        gpu_pipeline *argmax;
        gpu_pipeline_desc desc = {
            .shader = "argmax_f32", .num_bindings = 2, .push_constant_size = 8};
        VKL_TRY(gpu_pipeline_get(m->ctx, &desc, &argmax));
        uint32_t push[2] = {c->n_vocab, c->n_vocab};
        gpu_binding b[2] = {bind(&m->logits), {.buffer = &m->argmax_out, .writable = true}};
        gpu_cmd_dispatch(cmd, argmax, b, 2, push, sizeof push, n_rows, 1, 1);
        gpu_cmd_copy(cmd, &m->argmax_out, 0, &m->argmax_readback, 0, (uint64_t)n_rows * 4);
        m->last_readback_bytes += (uint64_t)n_rows * 4;
    }
    if (o->topk_k) VKL_TRY(record_topk(m, cmd, n_rows, o));
    if (want_logits)
        m->last_readback_bytes += record_logits_readback(m, cmd, n_rows, o->logits_rows);
    return VKLLM_OK;
}

static vkllm_status record_step(exec_model *m, gpu_cmd *cmd, const exec_step_plan *plan,
                                uint32_t n_rows, const exec_step_outputs *o) {
    const model_config *c = &m->cfg;
    uint32_t T = plan->n_tokens;
    step_inputs in;
    VKL_TRY(upload_inputs(m, plan, &in));
    gpu_cmd_timestamp(cmd, "step begin");
    VKL_TRY(k_get_rows(m->ctx, cmd, &m->token_embd.weight, in.tokens, bind(&m->x), T));
    if (c->embed_scale != 1.0f)
        VKL_TRY(k_scale(m->ctx, cmd, bind(&m->x), bind(&m->x), T * c->n_embd, c->embed_scale));
    int32_t every = m->options.flush_layers;
    for (uint32_t il = 0; il < c->n_layer; il++) {
        VKL_TRY(record_layer(m, cmd, il, &in, T));
        if (every > 0 && il % (uint32_t)every == 0 && il + 1 < c->n_layer)
            VKL_TRY(gpu_cmd_flush(cmd));
    }
    if (n_rows) VKL_TRY(record_head(m, cmd, plan, n_rows, o));
    gpu_cmd_timestamp(cmd, "step end");
    return VKLLM_OK;
}

vkllm_status exec_step(exec_model *m, const exec_step_plan *plan, float *logits, int32_t *argmax) {
    exec_step_outputs o = {.logits = logits, .argmax = argmax};
    return exec_step_ex(m, plan, &o);
}

vkllm_status exec_step_ex(exec_model *m, const exec_step_plan *plan, const exec_step_outputs *o) {
    static const exec_step_outputs none = {0};
    if (!o) o = &none;
    if (o->topk_k && (o->topk_k > K_TOPK_MAX || !o->inv_temperature || !o->topk_ids ||
                      !o->topk_values || !o->topk_stats))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "exec_step: topk_k %u needs 1..%u and the inv_temperature, topk_ids, "
                        "topk_values and topk_stats arrays",
                        o->topk_k, K_TOPK_MAX);
    VKL_TRY(check_plan_fits(m, plan));
    uint32_t n_rows = exec_plan_logit_rows(plan);
    if (o->topk_k)
        for (uint32_t r = 0; r < n_rows; r++)
            if (!isfinite(o->inv_temperature[r]))
                return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                                "exec_step: inv_temperature of logits row %u is %g (not finite)", r,
                                (double)o->inv_temperature[r]);
    m->stepped = false; /* the logits buffer is being overwritten */
    m->last_readback_bytes = 0;
    gpu_cmd *cmd;
    VKL_TRY(gpu_cmd_begin(m->ctx, &cmd));
    double record_start = monotonic_ms();
    vkllm_status s = record_step(m, cmd, plan, n_rows, o);
    m->last_record_ms = monotonic_ms() - record_start;
    if (s != VKLLM_OK) {
        /* Submitting an unfinished recording would run half a step; gpu_cmd_submit
         * still frees it, so submit only after recording a barrier-only tail. */
        vkllm_status keep = s;
        char message[VKL_ERROR_MAX];
        snprintf(message, sizeof message, "%s", vkllm_last_error());
        gpu_cmd_submit(cmd);
        return vkl_fail(keep, "%s", message);
    }
    m->last_barriers = gpu_cmd_barrier_count(cmd);
    VKL_TRY(gpu_cmd_submit(cmd));
    const char **labels;
    const double *ms;
    uint32_t n_ts = gpu_last_timestamps(m->ctx, &labels, &ms);
    m->last_gpu_ms = n_ts >= 2 ? ms[n_ts - 1] - ms[0] : 0;
    m->stepped = true;
    m->last_logit_rows = n_rows;
    if (!n_rows) return VKLLM_OK;
    uint64_t row_bytes = (uint64_t)m->cfg.n_vocab * 4;
    if (o->logits)
        for (uint32_t r = 0; r < n_rows; r++)
            if (!o->logits_rows || o->logits_rows[r])
                memcpy((char *)o->logits + r * row_bytes,
                       (const char *)m->logits_readback.mapped + r * row_bytes, row_bytes);
    if (o->argmax) memcpy(o->argmax, m->argmax_readback.mapped, (uint64_t)n_rows * 4);
    if (o->topk_k) {
        uint64_t list = (uint64_t)n_rows * o->topk_k * 4;
        const char *rb = m->topk_readback.mapped;
        memcpy(o->topk_ids, rb, list);
        memcpy(o->topk_values, rb + list, list);
        memcpy(o->topk_stats, rb + 2 * list, (uint64_t)n_rows * 16);
    }
    return VKLLM_OK;
}

vkllm_status exec_read_logits_row(exec_model *m, uint32_t row, float *out) {
    if (!m->stepped)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "exec_read_logits_row: no completed step holds logits");
    if (row >= m->last_logit_rows)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "exec_read_logits_row: row %u beyond the last step's %u logits rows", row,
                        m->last_logit_rows);
    uint64_t row_bytes = (uint64_t)m->cfg.n_vocab * 4;
    VKL_TRY(gpu_download(m->ctx, &m->logits, row * row_bytes, out, row_bytes));
    m->last_readback_bytes += row_bytes;
    return VKLLM_OK;
}

uint64_t exec_last_step_readback_bytes(const exec_model *m) {
    return m->last_readback_bytes;
}

vkllm_status exec_apply_kv_ops(exec_model *m, const kv_op *ops, size_t n_ops) {
    if (n_ops == 0) return VKLLM_OK;
    uint64_t block = k_attn_block_bytes(&m->kv);
    for (size_t i = 0; i < n_ops; i++) {
        uint32_t src_limit =
            ops[i].kind == KV_OP_SWAP_IN ? m->options.num_host_blocks : m->kv.num_blocks;
        uint32_t dst_limit =
            ops[i].kind == KV_OP_SWAP_OUT ? m->options.num_host_blocks : m->kv.num_blocks;
        if (ops[i].src < 0 || (uint32_t)ops[i].src >= src_limit || ops[i].dst < 0 ||
            (uint32_t)ops[i].dst >= dst_limit)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "kv op %zu (%s %d -> %d) outside the pools (%u device, %u host blocks)",
                            i, kv_op_kind_name(ops[i].kind), ops[i].src, ops[i].dst,
                            m->kv.num_blocks, m->options.num_host_blocks);
    }
    gpu_cmd *cmd;
    VKL_TRY(gpu_cmd_begin(m->ctx, &cmd));
    for (size_t i = 0; i < n_ops; i++) {
        for (uint32_t il = 0; il < m->cfg.n_layer; il++) {
            exec_layer *l = &m->layers[il];
            const gpu_buffer *src[2], *dst[2];
            switch (ops[i].kind) {
            case KV_OP_COPY:
                src[0] = dst[0] = &l->k_cache;
                src[1] = dst[1] = &l->v_cache;
                break;
            case KV_OP_SWAP_OUT:
                src[0] = &l->k_cache, src[1] = &l->v_cache;
                dst[0] = &l->k_host, dst[1] = &l->v_host;
                break;
            default: /* KV_OP_SWAP_IN */
                src[0] = &l->k_host, src[1] = &l->v_host;
                dst[0] = &l->k_cache, dst[1] = &l->v_cache;
                break;
            }
            for (int kv = 0; kv < 2; kv++)
                gpu_cmd_copy(cmd, src[kv], block * (uint64_t)ops[i].src, dst[kv],
                             block * (uint64_t)ops[i].dst, block);
        }
    }
    return gpu_cmd_submit(cmd);
}
