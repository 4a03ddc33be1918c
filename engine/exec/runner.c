/* runner.c: the model on the GPU and the forward pass of one step (see runner.h).
 *
 * Owns: model creation (weight upload, with the fused weights stacked at load; the
 * scratch activations; the paged KV cache), options, the per-step inputs in the upload
 * ring, the step's recording around its layers (embedding, the LM head, logits, argmax
 * and top-k readback), submission, and the KV block operations. The commands of each
 * layer are recorded by runner_layer.c; the activations' layout, the fusions and the
 * state both files share are described in runner_internal.h.
 *
 * Invariant: every buffer here is sized at create time for max_tokens / max_seqs /
 * max_context; exec_step refuses plans beyond them with VKLLM_ERR_INVALID_ARGUMENT
 * before recording anything. */
#include "exec/runner_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/k_ops.h"
#include "common/clock.h"
#include "exec/k_sample.h"

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

/* Uploads the stacked tensors of one layer (runner_internal.h, "Fusion"). */
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
        o->flush_layers = env && *env ? (int32_t)strtol(env, NULL, 10) : 8;
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
    /* so are the chunked argmax's (one per logits row) */
    VKL_TRY(scratch_buffer(m, k_argmax_partials_bytes((uint32_t)S, c->n_vocab), GPU_MEMORY_DEVICE,
                           &m->argmax_partials));
    VKL_TRY(scratch_buffer(m, S * 4, GPU_MEMORY_DEVICE, &m->argmax_counters));
    uint64_t zero_bytes = counter_bytes > S * 4 ? counter_bytes : S * 4;
    void *zeros = calloc(1, zero_bytes);
    if (!zeros) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "decode counters");
    vkllm_status s = gpu_upload(m->ctx, &m->decode_counters, 0, zeros, counter_bytes);
    if (s == VKLLM_OK) s = gpu_upload(m->ctx, &m->argmax_counters, 0, zeros, S * 4);
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
                             &m->argmax_partials,
                             &m->argmax_counters,
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

uint32_t exec_last_step_barriers(const exec_model *m) {
    return m->last_barriers;
}

uint32_t exec_last_step_flushes(const exec_model *m) {
    return m->last_flushes;
}

/* ---------------------------------------------------------------- one step */

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

static vkllm_status upload_inputs(exec_model *m, const exec_step_plan *plan, exec_step_inputs *in) {
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

/* ---------------------------------------------------------------- the LM head and readback */

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
    VKL_TRY(k_topk(m->ctx, cmd, exec_bind(&m->logits), inv_t, exec_bind(&m->topk_ids),
                   exec_bind(&m->topk_values), exec_bind(&m->topk_stats), n_rows, n_vocab, n_vocab,
                   k));
    uint64_t list = (uint64_t)n_rows * k * 4;
    gpu_cmd_copy(cmd, &m->topk_ids, 0, &m->topk_readback, 0, list);
    gpu_cmd_copy(cmd, &m->topk_values, 0, &m->topk_readback, list, list);
    gpu_cmd_copy(cmd, &m->topk_stats, 0, &m->topk_readback, 2 * list, (uint64_t)n_rows * 16);
    m->last_readback_bytes += 2 * list + (uint64_t)n_rows * 16;
    return VKLLM_OK;
}
/* Gathers the rows that need logits, applies the final norm and the LM head. */
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
    VKL_TRY(exec_matmul_normed(m, cmd, lm_head(m), &m->output_norm, &m->last, &m->logits, n_rows));
    uint32_t n_logits = n_rows * c->n_vocab;
    if (c->final_logit_softcap > 0)
        VKL_TRY(k_softcap(m->ctx, cmd, exec_bind(&m->logits), exec_bind(&m->logits), n_logits,
                          c->final_logit_softcap));
    if (want_argmax) {
        VKL_TRY(k_argmax(m->ctx, cmd, exec_bind(&m->logits), exec_bind(&m->argmax_out),
                         exec_bind(&m->argmax_partials), exec_bind(&m->argmax_counters), n_rows,
                         c->n_vocab, c->n_vocab));
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
    exec_step_inputs in;
    VKL_TRY(upload_inputs(m, plan, &in));
    gpu_cmd_timestamp(cmd, "step begin");
    VKL_TRY(k_get_rows(m->ctx, cmd, &m->token_embd.weight, in.tokens, exec_bind(&m->x), T));
    if (c->embed_scale != 1.0f)
        VKL_TRY(k_scale(m->ctx, cmd, exec_bind(&m->x), exec_bind(&m->x), T * c->n_embd,
                        c->embed_scale));
    /* Parts of 1, 2, 4, ... layers up to flush_layers: the GPU starts after one layer, and
     * the host, recording each part while the GPU runs the previous one (half as long),
     * stays ahead without paying a submission every layer. */
    uint32_t every = m->options.flush_layers > 0 ? (uint32_t)m->options.flush_layers : 0;
    uint32_t part = 1, in_part = 0;
    for (uint32_t il = 0; il < c->n_layer; il++) {
        VKL_TRY(exec_record_layer(m, cmd, il, &in, T));
        if (every && ++in_part == part && il + 1 < c->n_layer) {
            VKL_TRY(gpu_cmd_flush(cmd));
            in_part = 0;
            part = 2 * part < every ? 2 * part : every;
        }
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
    double record_start = vkl_monotonic_s();
    vkllm_status s = record_step(m, cmd, plan, n_rows, o);
    m->last_record_ms = (vkl_monotonic_s() - record_start) * 1e3;
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
    m->last_flushes = gpu_cmd_flush_count(cmd);
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
