/* runner.h: the model on the GPU: weights, the paged KV cache, activations, and
 * the forward pass of one step (an exec_step_plan in, logits out).
 *
 * exec_model_create uploads every weight once in its file format, allocates the
 * KV cache (per layer, K and V, in the layout of exec/k_attention.h) and scratch
 * activations sized for the largest step (max_tokens tokens, max_seqs sequences).
 * exec_step records the whole step (embedding, every layer, the LM head of the
 * rows that need logits) into one command buffer, submits it and waits.
 *
 * The runner does not decide anything: which tokens run and where their K/V go
 * come from the plan (scheduler + KV manager). Module prefix: exec_. */
#ifndef VKL_RUNNER_H
#define VKL_RUNNER_H

#include <stdbool.h>
#include <stdint.h>

#include "exec/step_plan.h"
#include "gpu/gpu.h"
#include "kv/kv_ops.h"
#include "model/gguf.h"
#include "model/model.h"

typedef struct exec_options {
    uint32_t block_size;      /* tokens per KV block (default 16) */
    uint32_t num_blocks;      /* KV blocks; 0: from kv_memory_fraction */
    float kv_memory_fraction; /* of the device-local heap left after weights and scratch
                                 (default 0.9 when num_blocks is 0) */
    uint32_t max_tokens;      /* most tokens in one step (default 512) */
    uint32_t max_seqs;        /* most sequences in one step (default 64) */
    uint32_t max_context;     /* longest sequence in tokens (default: the model's, capped
                                 at 8192) */
    uint32_t partition_size;  /* decode attention partition (0: automatic) */
    uint32_t num_host_blocks; /* host-memory blocks for swapped-out sequences (default 0) */
    bool no_weight_fusion;    /* keep wq/wk/wv and ffn_gate/ffn_up as separate products
                                 (each writing its columns of the fused activation), as
                                 when their types differ: tests and A/B timing */
    int32_t flush_layers;     /* submit a step's recording in parts of 1, 2, 4, ... layers,
                                 at most this many, so the GPU runs while the host records
                                 the rest (0: default 8, or VKLLM_FLUSH_LAYERS; negative:
                                 one submission per step) */
    uint32_t no_fusion;       /* EXEC_FUSE_* bits of the dispatch fusions to turn off (tests,
                                 A/B timing); the environment adds to it, see exec_fuse */
} exec_options;

/* Dispatch fusions of the layer (docs/notes-fusion.md), on by default except
 * EXEC_FUSE_DEFAULT_OFF. The variable VKLLM_FUSE sets them for A/B runs: "0" (or "none")
 * all off, otherwise a comma list of the ones on, by the names rope_kv, attn, norm, glu
 * ("rope_kv,attn"; "1" or "all": every one). */
typedef enum exec_fuse {
    EXEC_FUSE_ROPE_KV = 1u << 0,     /* RoPE + KV-cache write: k_rope_kv_write */
    EXEC_FUSE_ATTN_REDUCE = 1u << 1, /* decode partitions merged by the decode dispatch */
    EXEC_FUSE_NORM_MATVEC = 1u << 2, /* RMSNorm as the prologue of matvec_dp4a */
    EXEC_FUSE_GLU_MATVEC = 1u << 3,  /* GLU as the prologue of the down product (dp4a) */
    EXEC_FUSE_ALL = (1u << 4) - 1u,
    /* Off unless VKLLM_FUSE names it: the GLU prologue measured slower on the H100 (Q4_0
     * 8B: tg128 271.4 -> 268.6 tok/s, 8 sequences 771 -> 710; each workgroup of the down
     * product reads gate and up and evaluates the activation; docs/perf-notes.md). */
    EXEC_FUSE_DEFAULT_OFF = EXEC_FUSE_GLU_MATVEC,
} exec_fuse;

typedef struct exec_model exec_model;

vkllm_status exec_model_create(gpu_context *ctx, const gguf_file *file, const model_config *cfg,
                               const model_weights *weights, const exec_options *options,
                               exec_model **out);
void exec_model_destroy(exec_model *model);

/* The options in effect (defaults filled in, num_blocks decided). */
const exec_options *exec_model_options(const exec_model *model);
/* Device bytes of weights, of the KV cache and of scratch activations. */
void exec_model_memory(const exec_model *model, uint64_t *weights, uint64_t *kv, uint64_t *scratch);

/* Runs one step. logits: [exec_plan_logit_rows(plan)][n_vocab] floats, the rows in
 * the order of plan->seqs that have need_logits (may be NULL when none are wanted;
 * then argmax may still be asked for). argmax (may be NULL): the greedy token of each
 * of those rows, computed on the GPU. */
vkllm_status exec_step(exec_model *model, const exec_step_plan *plan, float *logits,
                       int32_t *argmax);

/* What one step returns, per logits row (the rows of plan->seqs with need_logits, in
 * order; n = exec_plan_logit_rows(plan)). Every output is optional (NULL / 0: not wanted).
 *   logits [n][n_vocab]: the rows flagged in logits_rows (NULL: every row) are written,
 *       the others left as they were; only those rows are read back.
 *   argmax [n]: the greedy token of each row (GPU).
 *   topk_k (1..K_TOPK_MAX of exec/k_sample.h): the k best logits of every row by k_topk,
 *       in the same command buffer: topk_ids / topk_values [n][topk_k] and topk_stats
 *       [n][4], with inv_temperature [n] (1 / T per row; 1 for rows sampled greedily). */
typedef struct exec_step_outputs {
    float *logits;
    const bool *logits_rows;
    int32_t *argmax;
    uint32_t topk_k;
    const float *inv_temperature;
    int32_t *topk_ids;
    float *topk_values;
    float *topk_stats;
} exec_step_outputs;

/* exec_step with the outputs above. */
vkllm_status exec_step_ex(exec_model *model, const exec_step_plan *plan,
                          const exec_step_outputs *outputs);

/* Downloads logits row `row` [n_vocab] of the last step (any row, read back or not: the
 * device keeps them until the next step), e.g. when sampling from the candidates could
 * not finish. Errors: no step ran yet, row beyond the last step's logits rows. */
vkllm_status exec_read_logits_row(exec_model *model, uint32_t row, float *out);

/* Bytes copied from the device to the host by the last step's readbacks plus the
 * exec_read_logits_row calls since (logits, argmax ids, candidates). */
uint64_t exec_last_step_readback_bytes(const exec_model *model);

/* Executes the block manager's device work (copy-on-write copies, swap out to and
 * swap in from host blocks), in list order, for every layer's K and V; waits. */
vkllm_status exec_apply_kv_ops(exec_model *model, const kv_op *ops, size_t n_ops);

/* Timings of the last step in ms (GPU time of the whole command buffer; 0 when the
 * device has no timestamps). */
double exec_last_step_gpu_ms(const exec_model *model);

/* Host time the last step spent recording its commands (ms): the inputs' upload and every
 * launcher, including the parts gpu_cmd_flush submitted while recording went on. When it
 * approaches the GPU time, the GPU waits for the host. */
double exec_last_step_record_ms(const exec_model *model);

/* Pipeline barriers the automatic tracking recorded in the last step's command buffer
 * (the final one that publishes results excluded). */
uint32_t exec_last_step_barriers(const exec_model *model);

/* Parts the last step's recording was submitted in before its final one (gpu_cmd_flush
 * calls; exec_options.flush_layers). */
uint32_t exec_last_step_flushes(const exec_model *model);

#endif
