/* runner_internal.h: the state the runner's two files share. Internal to the runner
 * (runner.c: model creation, weights, scratch, KV cache, the step around its layers and
 * the LM head; runner_layer.c: the commands of one transformer layer); nothing else
 * includes it, callers use exec/runner.h.
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
 *   last [S][n_embd]     the rows whose logits are wanted (S <= max_seqs)
 *   logits [S][n_vocab]
 * Token rows are ordered as in the plan: decode sequences first (one row each),
 * then the prefill chunks, so decode queries are rows [0, n_decode).
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
 *
 * Invariant: every buffer of exec_model is sized at create time for max_tokens /
 * max_seqs / max_context (runner.c); exec_step refuses plans beyond them before
 * anything is recorded, so the layer code records into buffers that fit the step. */
#ifndef VKL_RUNNER_INTERNAL_H
#define VKL_RUNNER_INTERNAL_H

#include "exec/k_attention.h"
#include "exec/k_matmul.h"
#include "exec/runner.h"

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
    gpu_buffer logits_readback, argmax_out, argmax_readback, argmax_partials, argmax_counters;
    /* k_topk outputs [max_seqs][K_TOPK_MAX] ids and values, [max_seqs][4] stats */
    gpu_buffer topk_ids, topk_values, topk_stats, topk_readback;
    uint32_t last_logit_rows; /* logits rows of the last step (exec_read_logits_row) */
    bool stepped;
    uint64_t last_readback_bytes;
    uint64_t weight_bytes, kv_bytes, scratch_bytes;
    double last_gpu_ms;
    double last_record_ms; /* host time recording the last step's commands */
    uint32_t last_barriers, last_flushes;
};

/* Per-step inputs, copied into the upload ring. */
typedef struct exec_step_inputs {
    gpu_binding tokens, positions, slots;
    /* decode sequences (rows [0, n_decode)) */
    gpu_binding dec_tables, dec_lens;
    /* prefill sequences */
    gpu_binding pre_tables, pre_lens, pre_query_start;
    uint32_t n_decode, n_prefill, max_decode_ctx, max_q_len;
    uint32_t first_prefill_token;
} exec_step_inputs;

/* A binding of the whole buffer. */
static inline gpu_binding exec_bind(const gpu_buffer *buffer) {
    return (gpu_binding){.buffer = buffer, .offset = 0, .range = 0};
}

/* A binding of rows [first, first + count) of row_bytes each. */
static inline gpu_binding exec_bind_rows(const gpu_buffer *buffer, uint64_t row_bytes,
                                         uint32_t first, uint32_t count) {
    return (gpu_binding){.buffer = buffer, .offset = row_bytes * first, .range = row_bytes * count};
}

/* Records layer il of the step (T tokens, inputs `in`) into cmd (runner_layer.c). */
vkllm_status exec_record_layer(exec_model *m, gpu_cmd *cmd, uint32_t il, const exec_step_inputs *in,
                               uint32_t T);
/* y = rmsnorm(x) ∘ norm · Wᵀ for n_tokens rows, default strides (the LM head after the
 * output norm). The norm folds into the product where it can (decode on int8 dot-product
 * devices: x is then left as it is), else x is normalized in place first. */
vkllm_status exec_matmul_normed(exec_model *m, gpu_cmd *cmd, const exec_tensor *w,
                                const exec_tensor *norm, const gpu_buffer *x, const gpu_buffer *y,
                                uint32_t n_tokens);

#endif
