/* runner_layer.c: the commands of one transformer layer of a step (exec_record_layer):
 * the attention norm, the QKV products, the Q/K norms and RoPE, the KV-cache write and
 * paged attention, the output projection into the residual, then the FFN norm, the
 * gate|up products, the GLU and the down projection into the residual; and the product
 * normed product the LM head shares (exec_matmul_normed).
 *
 * Owns the fusion decisions taken at each step (runner_internal.h describes the
 * fusions): whether an RMSNorm folds into the products after it (norm_folds) and the
 * GLU into the down product (glu_folds), both matvec_dp4a prologues at decode; whether
 * a projection accumulates into the residual in its epilogue (project_to_residual);
 * RoPE and the KV write in one dispatch (EXEC_FUSE_ROPE_KV).
 * Invariants: it records into the buffers runner.c sized for the step (checked before
 * recording); products into disjoint columns of one activation get disjoint bindings
 * (matmul_cols_pro), so the automatic barriers let them run together. */
#include "exec/runner_internal.h"

#include "exec/k_ops.h"
#include "exec/k_rope_kv.h"

/* Attention of the step's tokens; the KV write first unless the fused RoPE + KV write
 * (k_rope_kv_write) already stored this layer's K/V (kv_written). */
static vkllm_status record_attention(exec_model *m, gpu_cmd *cmd, uint32_t il,
                                     const exec_step_inputs *in, uint32_t n_tokens,
                                     bool kv_written) {
    const model_config *c = &m->cfg;
    exec_layer *l = &m->layers[il];
    k_attn_params p = {.n_head = c->n_head,
                       .scale = c->attn_scale,
                       .softcap = c->attn_logit_softcap,
                       .window = c->is_sliding[il] ? c->sliding_window : 0};
    k_attn_kv_write_args w = {.n_tokens = n_tokens,
                              .k_src = exec_bind(&m->qkv),
                              .v_src = exec_bind(&m->qkv),
                              .k_src_offset = c->n_embd_q,
                              .v_src_offset = c->n_embd_q + c->n_embd_k,
                              .k_src_stride = m->n_qkv,
                              .v_src_stride = m->n_qkv,
                              .slots = in->slots,
                              .k_cache = exec_bind(&l->k_cache),
                              .v_cache = exec_bind(&l->v_cache)};
    if (!kv_written) VKL_TRY(k_attn_kv_write(m->ctx, cmd, &m->kv, &w));
    uint64_t q_row = (uint64_t)m->n_qkv * 4, out_row = (uint64_t)c->n_head * c->head_dim_v * 4;
    if (in->n_decode) {
        k_attn_decode_args d = {.n_seqs = in->n_decode,
                                .max_context_len = in->max_decode_ctx,
                                .partition_size = m->options.partition_size,
                                .q = exec_bind_rows(&m->qkv, q_row, 0, in->n_decode),
                                .q_stride = m->n_qkv,
                                .block_tables = in->dec_tables,
                                .table_stride = m->max_blocks_per_seq,
                                .context_lens = in->dec_lens,
                                .k_cache = exec_bind(&l->k_cache),
                                .v_cache = exec_bind(&l->v_cache),
                                .out = exec_bind_rows(&m->attn, out_row, 0, in->n_decode),
                                .scratch = exec_bind(&m->decode_scratch)};
        if (!(m->options.no_fusion & EXEC_FUSE_ATTN_REDUCE))
            d.counters = exec_bind(&m->decode_counters);
        VKL_TRY(k_attn_decode(m->ctx, cmd, &m->kv, &p, &d));
    }
    if (in->n_prefill) {
        uint32_t first = in->first_prefill_token, count = n_tokens - first;
        k_attn_prefill_args a = {.n_seqs = in->n_prefill,
                                 .max_q_len = in->max_q_len,
                                 .q = exec_bind_rows(&m->qkv, q_row, first, count),
                                 .q_stride = m->n_qkv,
                                 .query_start = in->pre_query_start,
                                 .context_lens = in->pre_lens,
                                 .block_tables = in->pre_tables,
                                 .table_stride = m->max_blocks_per_seq,
                                 .k_cache = exec_bind(&l->k_cache),
                                 .v_cache = exec_bind(&l->v_cache),
                                 .out = exec_bind_rows(&m->attn, out_row, first, count)};
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
                       .x = exec_bind(x),
                       .y = {.buffer = y, .offset = start, .range = end - start},
                       .y_stride = y_stride,
                       .y_col = (uint32_t)((first - start) / 4),
                       .n_tokens = n_tokens,
                       .accumulate = accumulate,
                       .bias = bias && bias->present ? exec_bind(&bias->buffer) : (gpu_binding){0},
                       .split_scratch = m->split_scratch.handle ? exec_bind(&m->split_scratch)
                                                                : (gpu_binding){0}};
    if (norm) {
        a.norm_weight = exec_bind(&norm->buffer);
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
                           .x = exec_bind(&m->x),
                           .n_tokens = n_tokens,
                           .norm_weight = exec_bind(&norm->buffer),
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
    k_matmul_args a = {.w = &down->weight,
                       .x = exec_bind(&m->gu),
                       .n_tokens = n_tokens,
                       .glu = true,
                       .glu_kind = glu};
    return k_matmul_glu_prologue_applies(gpu_context_features(m->ctx), &a);
}

vkllm_status exec_matmul_normed(exec_model *m, gpu_cmd *cmd, const exec_tensor *w,
                                const exec_tensor *norm, const gpu_buffer *x, const gpu_buffer *y,
                                uint32_t n_tokens) {
    const exec_tensor *ws[1] = {w};
    if (norm_folds(m, ws, 1, norm, n_tokens))
        return matmul_cols_norm(m, cmd, w, x, y, 0, 0, NULL, n_tokens, false, norm);
    VKL_TRY(k_rms_norm(m->ctx, cmd, exec_bind(x), exec_bind(&norm->buffer), exec_bind(x), n_tokens,
                       m->cfg.n_embd, m->cfg.rms_eps));
    return matmul_cols(m, cmd, w, x, y, 0, 0, NULL, n_tokens, false);
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
        return k_rms_norm_add(m->ctx, cmd, s, exec_bind(&norm->buffer), x, n_tokens, c->n_embd,
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

vkllm_status exec_record_layer(exec_model *m, gpu_cmd *cmd, uint32_t il, const exec_step_inputs *in,
                               uint32_t T) {
    const model_config *c = &m->cfg;
    exec_layer *l = &m->layers[il];
    gpu_context *ctx = m->ctx;
    /* attn_norm folds into the QKV products where they all run matvec_dp4a. */
    const exec_tensor *qkv_parts[4] = {&l->wqkv, &l->wq, &l->wk, &l->wv};
    bool fold = norm_folds(m, qkv_parts, 4, &l->attn_norm, T);
    if (!fold)
        VKL_TRY(k_rms_norm(ctx, cmd, exec_bind(&m->x), exec_bind(&l->attn_norm.buffer),
                           exec_bind(&m->h), T, c->n_embd, c->rms_eps));
    VKL_TRY(record_qkv(m, cmd, l, T, fold ? &l->attn_norm : NULL));
    /* Q and K heads are adjacent in each qkv row: one norm and one RoPE for both. */
    uint32_t qk_heads = c->n_head + c->n_head_kv;
    if (c->has_qk_norm) {
        k_rms_norm_args a = {.x = exec_bind(&m->qkv),
                             .weight = exec_bind(&l->qk_norm.buffer),
                             .out = exec_bind(&m->qkv),
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
        m->rope_freqs.present ? exec_bind(&m->rope_freqs.buffer) : (gpu_binding){0};
    k_rope_mode mode = c->rope_neox ? K_ROPE_NEOX : K_ROPE_NORM;
    /* RoPE of Q and K and the K/V cache write in one dispatch (the qkv row holds Q, K,
     * V heads of one head_dim, checked at create), else RoPE here and kv_write in
     * record_attention. */
    bool fuse_rope_kv = !(m->options.no_fusion & EXEC_FUSE_ROPE_KV);
    if (fuse_rope_kv) {
        k_rope_kv_args r = {.qkv = exec_bind(&m->qkv),
                            .n_tokens = T,
                            .n_head = c->n_head,
                            .x_stride = m->n_qkv,
                            .positions = in->positions,
                            .freq_factors = freq_factors,
                            .slots = in->slots,
                            .k_cache = exec_bind(&l->k_cache),
                            .v_cache = exec_bind(&l->v_cache),
                            .n_rot = c->n_rot,
                            .freq_base = model_rope_base(c, il),
                            .freq_scale = model_rope_scale(c, il),
                            .mode = mode};
        VKL_TRY(k_rope_kv_write(ctx, cmd, &m->kv, &r));
    } else {
        k_rope_args r = {.x = exec_bind(&m->qkv),
                         .positions = in->positions,
                         .freq_factors = freq_factors,
                         .out = exec_bind(&m->qkv),
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
        VKL_TRY(k_rms_norm(ctx, cmd, exec_bind(&m->x), exec_bind(&l->ffn_norm.buffer),
                           exec_bind(&m->h), T, c->n_embd, c->rms_eps));
    VKL_TRY(record_gate_up(m, cmd, l, T, fold ? &l->ffn_norm : NULL));
    k_glu_kind glu = c->act == MODEL_ACT_GELU_TANH ? K_GLU_GELU_TANH : K_GLU_SILU;
    /* the GLU folds into the down product where it runs matvec_dp4a (decode) */
    if (glu_folds(m, &l->ffn_down, glu, T))
        return project_to_residual(m, cmd, &l->ffn_down, &m->gu, &l->post_ffw_norm, T, &glu);
    VKL_TRY(k_glu_fused(ctx, cmd, glu, exec_bind(&m->gu), exec_bind(&m->act), T, c->n_ff));
    VKL_TRY(project_to_residual(m, cmd, &l->ffn_down, &m->act, &l->post_ffw_norm, T, NULL));
    return VKLLM_OK;
}
