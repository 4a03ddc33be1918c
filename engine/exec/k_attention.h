/* k_attention.h: the paged KV cache layout and the launchers of the attention kernels
 * (kv_write, paged decode attention + partition reduce, causal prefill attention,
 * block copy). Shaders: shaders/{kv_write,attn_decode,attn_decode_sg,attn_reduce,
 * attn_prefill,attn_prefill_cm,block_copy}.comp with the shared include
 * shaders/attention.glsl (prefill kernel choice: see k_attn_prefill_choose). Decode
 * runs attn_decode_sg.comp where the device has subgroup arithmetic and head_dim % 4 == 0,
 * else attn_decode.comp; the environment variable VKLLM_ATTN=old forces attn_decode.comp
 * and VKLLM_ATTN=new forces attn_decode_sg.comp (k_attn_decode then fails with
 * VKLLM_ERR_UNSUPPORTED where it cannot run). Both give the same results up to f32
 * summation order. With k_attn_decode_args.counters the subgroup kernel also merges the
 * partitions itself (variant attn_decode_sg_fused: one dispatch instead of decode +
 * attn_reduce); VKLLM_ATTN_REDUCE=separate keeps the second dispatch (A/B timing).
 *
 * ---------------------------------------------------------------- KV cache layout
 * Per layer, K and V are two separate arrays (two bindings; they may be ranges of one
 * buffer), each
 *
 *     fp16 [num_blocks][n_head_kv][block_size][head_dim]
 *
 * stored as packed 32-bit words, two fp16 per word, element 2j in the low 16 bits of
 * word j (the order packHalf2x16 / unpackHalf2x16 use). The slot of a token is
 * block_id * block_size + offset_in_block. Why this order:
 *  - one block of one layer (all KV heads) is one contiguous range of
 *    k_attn_block_bytes() bytes in K and one in V, so copy-on-write and swap are
 *    plain contiguous copies;
 *  - inside a block, the block_size rows of one KV head are contiguous
 *    (block_size * head_dim * 2 bytes: 8 KiB for 16 x 256), which is exactly what one
 *    attention workgroup (serving one KV head) reads per block, with consecutive
 *    threads reading consecutive words.
 * Byte offset of element d of token slot `slot`, KV head h:
 *     ((block * n_head_kv + h) * block_size + offset) * head_dim * 2 + d * 2.
 * A layer's K array has k_attn_layer_bytes() bytes (same for V). A binding must not
 * exceed the device's max_storage_buffer_range (128 MiB on lavapipe, 4 GiB on NVIDIA).
 *
 * Swap to/from host memory needs no kernel: for each layer and each block b,
 *     gpu_cmd_copy(cmd, k_layer_buffer, k_offset + b * k_attn_block_bytes(kv),
 *                  host_buffer, host_offset, k_attn_block_bytes(kv));
 * and the same for V (host_buffer of kind GPU_MEMORY_READBACK for swap-out,
 * GPU_MEMORY_UPLOAD as the source for swap-in). Runs of consecutive block ids can be
 * copied as one range.
 *
 * ---------------------------------------------------------------- one step, per layer
 *  1. k_attn_kv_write for every new token of the step (prefill chunks and decode
 *     tokens), slots from the StepPlan (-1 for padding);
 *  2. k_attn_prefill over the sequences that have a chunk (query_start / context_lens
 *     describe them; a 1-token chunk is fine too), and k_attn_decode over the sequences
 *     with one new token (split-K over partitions, better for long contexts). Point the
 *     q / out bindings (offsets aligned to min_storage_offset_alignment) or q_stride at
 *     the rows each call serves.
 * Copy-on-write of a shared last block: k_attn_block_copy once per layer before step 1.
 *
 * ---------------------------------------------------------------- conventions
 * - Queries, keys and values are f32 in activations; q is already RoPE'd. The kernels
 *   compute score = (q . k) * scale, then softcap * tanh(score / softcap) when softcap > 0,
 *   so either pass the attention scale here or pre-scale q and pass scale = 1.
 * - Sliding window w > 0: the query at position p sees keys p_k with p - w < p_k <= p
 *   (Gemma 3: w = attention.sliding_window on local layers, 0 on global layers).
 * - Query head h uses KV head h / (n_head / n_head_kv) (GQA; n_head a multiple of
 *   n_head_kv).
 * - Outputs are f32 [rows][n_head][head_dim], contiguous from the binding's offset.
 * - q rows: head h of a row starts q_stride * row + h * head_dim floats after the
 *   binding's offset; q_stride must be even (0 means n_head * head_dim), so a fused QKV
 *   activation can be read in place.
 * - Supported: head_dim even and <= 256 (64, 128, 256 tested); any block_size >= 1
 *   (8, 16, 32 tested); any n_head / n_head_kv ratio.
 * - All launchers only record dispatches into `cmd` (barriers are automatic); they fail
 *   with VKLLM_ERR_INVALID_ARGUMENT on a shape outside the above, naming the field.
 *
 * Module prefix: k_attn_. */
#ifndef VKL_K_ATTENTION_H
#define VKL_K_ATTENTION_H

#include <stdint.h>

#include "gpu/gpu.h"

/* Decode partition size bounds (tokens) of the automatic choice (partition_size 0). */
#define K_ATTN_PARTITION_DEFAULT 512u
/* 32 = 4 subgroups x 8 keys, one step each: measured on the H100 (Llama-3-8B tg128,
 * contexts 1-128) attention 621 -> 527 µs per token against 64 (docs/perf-notes.md). */
#define K_ATTN_PARTITION_MIN 32u
/* Workgroups the automatic partition size aims for (about two per SM on an H100 with 132
 * SMs, so that even one sequence keeps every SM streaming K/V). */
#define K_ATTN_DECODE_TARGET_GROUPS 256u
/* Largest head_dim the kernels support. */
#define K_ATTN_MAX_HEAD_DIM 256u

/* Shape of one layer's KV cache. */
typedef struct k_attn_kv_layout {
    uint32_t num_blocks; /* blocks in this layer's pool */
    uint32_t block_size; /* tokens per block (default 16) */
    uint32_t n_head_kv;
    uint32_t head_dim; /* even, <= 256 */
} k_attn_kv_layout;

/* Bytes of one block in K (the same in V): n_head_kv * block_size * head_dim * 2. */
uint64_t k_attn_block_bytes(const k_attn_kv_layout *kv);
/* Bytes of one layer's K array (the same for V): num_blocks * k_attn_block_bytes. */
uint64_t k_attn_layer_bytes(const k_attn_kv_layout *kv);
/* Checks the layout (non-zero sizes, head_dim even and <= 256, word counts that fit
 * 32-bit indices). */
vkllm_status k_attn_check_layout(const k_attn_kv_layout *kv);

/* Attention options shared by decode and prefill. */
typedef struct k_attn_params {
    uint32_t n_head; /* query heads, a multiple of kv->n_head_kv */
    float scale;     /* multiplies q . k (1 if q is pre-scaled) */
    float softcap;   /* logit softcap; 0 = off */
    uint32_t window; /* sliding window in tokens; 0 = off */
} k_attn_params;

/* ---------------------------------------------------------------- kv_write */

typedef struct k_attn_kv_write_args {
    uint32_t n_tokens;
    gpu_binding k_src, v_src;            /* f32: per token n_head_kv * head_dim values */
    uint32_t k_src_offset, v_src_offset; /* floats from the binding start to token 0 */
    uint32_t k_src_stride, v_src_stride; /* floats between tokens; 0 = n_head_kv * head_dim */
    gpu_binding slots;                   /* int32 [n_tokens]; < 0 (padding) is skipped */
    gpu_binding k_cache, v_cache;        /* this layer's K and V arrays (written) */
} k_attn_kv_write_args;

/* Converts each token's K and V rows to fp16 and stores them at its slot. Slots past
 * num_blocks * block_size are skipped too. Two tokens must not share a slot. */
vkllm_status k_attn_kv_write(gpu_context *ctx, gpu_cmd *cmd, const k_attn_kv_layout *kv,
                             const k_attn_kv_write_args *args);

/* ---------------------------------------------------------------- decode */

typedef struct k_attn_decode_args {
    uint32_t n_seqs; /* one query token per sequence */
    /* Host-known upper bound of context_lens (sizes the partition grid and scratch).
     * A context_len above it is computed over its first partitions only: wrong output. */
    uint32_t max_context_len;
    uint32_t partition_size;  /* keys per partition; 0 = automatic (see below) */
    gpu_binding q;            /* f32 rows [n_seqs], see q_stride */
    uint32_t q_stride;        /* floats between sequences' q rows; 0 = n_head * head_dim */
    gpu_binding block_tables; /* int32 [n_seqs][table_stride] */
    uint32_t table_stride;    /* max_blocks_per_seq */
    gpu_binding context_lens; /* int32 [n_seqs]: tokens in the cache including this one;
                                 0 gives a zero output row */
    gpu_binding k_cache, v_cache;
    gpu_binding out;     /* f32 [n_seqs][n_head][head_dim] (written) */
    gpu_binding scratch; /* k_attn_decode_scratch_bytes() bytes (written); may be left
                            empty (buffer NULL) when that size is 0 */
    /* k_attn_decode_counter_bytes() bytes of uint32 counters, all 0 before the first call
     * (clear them once: every call leaves them 0 again), or buffer NULL. With them the
     * subgroup kernel merges the partitions itself (attn_decode_sg_fused: the last
     * workgroup of each (sequence, head chunk) does attn_reduce's work), so a decode is
     * one dispatch; without them, or with VKLLM_ATTN_REDUCE=separate, or on the portable
     * kernel, attn_reduce runs as a second dispatch. Calls sharing the counters must be
     * ordered (the automatic barriers do that: the binding is written). */
    gpu_binding counters;
} k_attn_decode_args;

/* Decode partition size. `requested` > 0 is used as is; 0 means automatic: 512, halved
 * (down to 64) while fewer than K_ATTN_DECODE_TARGET_GROUPS workgroups would run, so a
 * single long sequence still spreads over the GPU. Keys per sequence =
 * min(context_len, window) when window > 0. */
uint32_t k_attn_decode_partition_size(const k_attn_kv_layout *kv, const k_attn_params *p,
                                      uint32_t n_seqs, uint32_t max_context_len,
                                      uint32_t requested);
/* Partitions per (sequence, head) for that partition size (at least 1). */
uint32_t k_attn_decode_partitions(const k_attn_kv_layout *kv, const k_attn_params *p,
                                  uint32_t n_seqs, uint32_t max_context_len, uint32_t requested);
/* Scratch bytes k_attn_decode needs for these arguments: 0 when every sequence fits one
 * partition, else n_seqs * n_head * partitions * (head_dim + 2) * 4. */
uint64_t k_attn_decode_scratch_bytes(const k_attn_kv_layout *kv, const k_attn_params *p,
                                     uint32_t n_seqs, uint32_t max_context_len, uint32_t requested);
/* An upper bound of k_attn_decode_scratch_bytes over n_seqs <= max_seqs and context
 * lengths <= max_context_len (allocate the scratch buffer once with it). */
uint64_t k_attn_decode_scratch_bytes_max(const k_attn_kv_layout *kv, const k_attn_params *p,
                                         uint32_t max_seqs, uint32_t max_context_len,
                                         uint32_t requested);

/* Bytes of the decode counters (see k_attn_decode_args.counters) for up to max_seqs
 * sequences: one uint32 per (sequence, query head), a bound of the (sequence, head chunk)
 * pairs on any device. */
uint64_t k_attn_decode_counter_bytes(const k_attn_params *p, uint32_t max_seqs);

/* Records attn_decode or attn_decode_sg (grid n_seqs x n_head_kv*chunks x partitions; the
 * choice is described at the top) and, when there is more than one partition, attn_reduce
 * (n_seqs x n_head) unless the decode dispatch merges them (counters given, subgroup
 * kernel). Sequences whose own context fits one partition are written by the decode
 * kernel directly. */
vkllm_status k_attn_decode(gpu_context *ctx, gpu_cmd *cmd, const k_attn_kv_layout *kv,
                           const k_attn_params *p, const k_attn_decode_args *args);

/* ---------------------------------------------------------------- prefill */

typedef struct k_attn_prefill_args {
    uint32_t n_seqs;
    uint32_t max_q_len;       /* host-known max query tokens of one sequence (sizes the grid) */
    gpu_binding q;            /* f32 rows [n_tokens] (all sequences' query tokens), see q_stride */
    uint32_t q_stride;        /* floats between tokens' q rows; 0 = n_head * head_dim */
    gpu_binding query_start;  /* int32 [n_seqs + 1]: sequence s owns rows
                                 query_start[s] .. query_start[s+1]-1 */
    gpu_binding context_lens; /* int32 [n_seqs]: tokens in the cache including the chunk
                                 (chunk positions: context_len - n_q .. context_len - 1) */
    gpu_binding block_tables; /* int32 [n_seqs][table_stride] */
    uint32_t table_stride;
    gpu_binding k_cache, v_cache;
    gpu_binding out; /* f32 [n_tokens][n_head][head_dim] (written) */
} k_attn_prefill_args;

/* Prefill kernels (same bindings, push constants, grid and semantics):
 *  - PORTABLE: attn_prefill.comp, scalar f32 (every device; reference-exact to ~1e-6);
 *  - COOPMAT: attn_prefill_cm.comp, S = Q.K^T and O += P.V on tensor cores
 *    (GL_NV_cooperative_matrix 16x8x16 fp16 -> f32; q scaled and P rounded to fp16, so
 *    ~1e-3 relative agreement); needs k_matmul_coopmat_available(), head_dim % 16 == 0
 *    (<= 256), a tile shape within maxComputeSharedMemorySize and 16-byte aligned K/V
 *    binding offsets;
 *  - EMULATE: attn_prefill_cm.comp built with CM_EMULATE (the same tiles, products done
 *    with plain shared-memory arithmetic; for tests on devices without coopmat).
 * Automatic choice: COOPMAT where it can run, else PORTABLE. VKLLM_ATTN_PREFILL=old|cm|
 * emulate forces one (auto or unset: automatic); cm and emulate still fall back to
 * PORTABLE for shapes the coopmat kernel does not take (head_dim, shared memory, binding
 * alignment), while cm on a device without cooperative matrices fails with
 * VKLLM_ERR_UNSUPPORTED and an unknown value with VKLLM_ERR_INVALID_ARGUMENT.
 * VKLLM_ATTN_PREFILL_TILE=nsg,bc forces the coopmat tile (nsg subgroups of 32 = 16*nsg
 * query rows, bc keys per step; 1 <= nsg <= 8, bc in 16, 32, 64, 128): A/B runs and
 * tests; a shape beyond the shared memory fails with VKLLM_ERR_INVALID_ARGUMENT. */
typedef enum k_attn_prefill_kernel {
    K_ATTN_PREFILL_PORTABLE,
    K_ATTN_PREFILL_COOPMAT,
    K_ATTN_PREFILL_EMULATE,
} k_attn_prefill_kernel;

/* The kernel k_attn_prefill runs for this layout on this device (VKLLM_ATTN_PREFILL
 * included; binding alignment is checked at launch only). */
vkllm_status k_attn_prefill_choose(const gpu_features *f, const k_attn_kv_layout *kv,
                                   k_attn_prefill_kernel *kernel);

/* Records the prefill kernel chosen as above (grid row tiles x n_seqs x n_head_kv). The
 * chunk's K/V must have been written by k_attn_kv_write earlier in the same command
 * buffer (or before). A sequence with n_q <= 0 or context_len < n_q is skipped (its rows
 * stay unwritten). */
vkllm_status k_attn_prefill(gpu_context *ctx, gpu_cmd *cmd, const k_attn_kv_layout *kv,
                            const k_attn_params *p, const k_attn_prefill_args *args);

/* ---------------------------------------------------------------- block copy */

/* Copies K and V of whole blocks: pairs is int32 [n_pairs][2] = (src, dst). Destinations
 * must be distinct and not sources of the same call; ids outside [0, num_blocks) are
 * skipped. One call per layer. */
vkllm_status k_attn_block_copy(gpu_context *ctx, gpu_cmd *cmd, const k_attn_kv_layout *kv,
                               uint32_t n_pairs, gpu_binding pairs, gpu_binding k_cache,
                               gpu_binding v_cache);

#endif
