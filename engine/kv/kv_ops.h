/* kv_ops.h: the device work the block manager asks its caller to do, as plain data.
 *
 * The manager never touches Vulkan. Calls that need block contents moved (copy-on-
 * write, swap out, swap in) append kv_op records to a caller-owned kv_ops list; the
 * runner executes them IN LIST ORDER before the step's forward pass (a later op may
 * write a block that an earlier op read, e.g. a swapped-out block reused by a
 * copy-on-write), then clears the list. Every op moves one whole block: all layers,
 * K and V, all block_size token slots. */
#ifndef VKL_KV_OPS_H
#define VKL_KV_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef enum kv_op_kind {
    KV_OP_COPY = 0, /* device block src -> device block dst (copy-on-write) */
    KV_OP_SWAP_OUT, /* device block src -> host block dst */
    KV_OP_SWAP_IN,  /* host block src -> device block dst */
} kv_op_kind;

typedef struct kv_op {
    kv_op_kind kind;
    int32_t src;
    int32_t dst;
} kv_op;

typedef struct kv_ops {
    kv_op *items;
    size_t count;
    size_t capacity;
} kv_ops;

/* An empty list needs no init: kv_ops ops = {0}. */
void kv_ops_clear(kv_ops *ops); /* count = 0, keeps the storage */
void kv_ops_destroy(kv_ops *ops);

/* Makes room for `extra` more ops, so that a later push cannot fail. */
vkllm_status kv_ops_reserve(kv_ops *ops, size_t extra);

/* Appends one op; fails only when storage cannot grow. */
vkllm_status kv_ops_push(kv_ops *ops, kv_op_kind kind, int32_t src, int32_t dst);

const char *kv_op_kind_name(kv_op_kind kind);

#endif
