/* gpu_cmd.c: command recording (dispatch, copy, fill), automatic barriers,
 * descriptors, timestamps and submission.
 *
 * Automatic barriers: a gpu_cmd remembers every buffer range read or written since
 * its last barrier. Before an operation it checks its own ranges against them:
 * read-after-write, write-after-write and write-after-read overlaps on the same
 * VkBuffer record one global compute+transfer memory barrier and clear the list.
 * Every command buffer ends with a barrier that makes its writes visible to later
 * submissions and to the host, so nothing crosses gpu_cmd boundaries unsynchronised.
 *
 * Descriptors: push descriptors where the device has them, else sets from
 * descriptor pools owned by the command's slot (reset when the slot is recycled).
 *
 * Flushes: gpu_cmd_flush submits the slot recorded so far (no fence) and continues in
 * a fresh slot; the parts stay on cmd->flushed until the final submit's fence, whose
 * signal covers all work submitted earlier to the queue, has been waited for. The access
 * list is kept across a flush: a barrier recorded in a later part orders the earlier
 * parts' work too (submission order). Timestamps all go to one query pool (ts_slot's).
 * Errors while recording are remembered (the first one wins) and returned by
 * submit; after an error nothing more is recorded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_internal.h"
#include "common/clock.h"

#define GPU_QUERY_COUNT GPU_MAX_TIMESTAMPS

static const VkPipelineStageFlags gpu_work_stages =
    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;

/* ---------------------------------------------------------------- slots */

static vkllm_status gpu_slot_get(gpu_context *ctx, gpu_cmd_slot **out) {
    if (ctx->free_slots) {
        *out = ctx->free_slots;
        ctx->free_slots = (*out)->next;
        (*out)->next = NULL;
        return VKLLM_OK;
    }
    gpu_cmd_slot *slot = calloc(1, sizeof *slot);
    if (!slot) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "command slot");
    VkCommandBufferAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = ctx->command_pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    VkResult r = ctx->vk.vkAllocateCommandBuffers(ctx->device, &alloc, &slot->cb);
    if (r < 0) {
        free(slot);
        return gpu_vk_fail(r, "vkAllocateCommandBuffers", "one primary command buffer");
    }
    VkFenceCreateInfo fence = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    r = ctx->vk.vkCreateFence(ctx->device, &fence, NULL, &slot->fence);
    if (r < 0) {
        ctx->vk.vkFreeCommandBuffers(ctx->device, ctx->command_pool, 1, &slot->cb);
        free(slot);
        return gpu_vk_fail(r, "vkCreateFence", "command fence");
    }
    *out = slot;
    return VKLLM_OK;
}

static void gpu_slot_destroy(gpu_context *ctx, gpu_cmd_slot *slot) {
    for (uint32_t i = 0; i < slot->num_pools; i++)
        ctx->vk.vkDestroyDescriptorPool(ctx->device, slot->pools[i], NULL);
    free(slot->pools);
    if (slot->query_pool) ctx->vk.vkDestroyQueryPool(ctx->device, slot->query_pool, NULL);
    ctx->vk.vkDestroyFence(ctx->device, slot->fence, NULL);
    ctx->vk.vkFreeCommandBuffers(ctx->device, ctx->command_pool, 1, &slot->cb);
    free(slot);
}

static void gpu_cmd_release(gpu_cmd *cmd);

void gpu_cmd_destroy_slots(gpu_context *ctx) {
    while (ctx->live_cmds)
        gpu_cmd_release(ctx->live_cmds);
    while (ctx->free_slots) {
        gpu_cmd_slot *next = ctx->free_slots->next;
        gpu_slot_destroy(ctx, ctx->free_slots);
        ctx->free_slots = next;
    }
}

/* Resets one slot (command buffer, fence, the descriptor pools it used) and puts it on
 * the context's free list. */
static void gpu_slot_recycle(gpu_context *ctx, gpu_cmd_slot *slot) {
    ctx->vk.vkResetCommandBuffer(slot->cb, 0);
    ctx->vk.vkResetFences(ctx->device, 1, &slot->fence);
    for (uint32_t i = 0; i < slot->pools_used && i < slot->num_pools; i++)
        ctx->vk.vkResetDescriptorPool(ctx->device, slot->pools[i], 0);
    slot->pools_used = 0;
    slot->next = ctx->free_slots;
    ctx->free_slots = slot;
}

static uint32_t gpu_cmd_pools_used(const gpu_cmd *cmd) {
    return cmd->sets_in_pool ? cmd->pool_used + 1 : cmd->pool_used;
}

/* Returns the command's slots to the context (resetting what they used) and frees it. */
static void gpu_cmd_release(gpu_cmd *cmd) {
    gpu_context *ctx = cmd->ctx;
    for (gpu_cmd **p = &ctx->live_cmds; *p; p = &(*p)->next_live)
        if (*p == cmd) {
            *p = cmd->next_live;
            break;
        }
    /* flushed parts may still run unless the final fence was waited for (error paths) */
    if (cmd->flushed && !cmd->completed) ctx->vk.vkQueueWaitIdle(ctx->queue);
    while (cmd->flushed) {
        gpu_cmd_slot *next = cmd->flushed->next;
        gpu_slot_recycle(ctx, cmd->flushed);
        cmd->flushed = next;
    }
    cmd->slot->pools_used = gpu_cmd_pools_used(cmd);
    gpu_slot_recycle(ctx, cmd->slot);
    if (!cmd->internal && ctx->live_user_cmds > 0 && --ctx->live_user_cmds == 0)
        gpu_ring_recycle(ctx);
    free(cmd->accesses);
    free(cmd->labels);
    free(cmd);
}

/* ---------------------------------------------------------------- begin */

static VkResult gpu_slot_begin(gpu_context *ctx, gpu_cmd_slot *slot) {
    VkCommandBufferBeginInfo begin = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    return ctx->vk.vkBeginCommandBuffer(slot->cb, &begin);
}

vkllm_status gpu_cmd_begin_internal(gpu_context *ctx, bool internal, gpu_cmd **out) {
    *out = NULL;
    gpu_cmd *cmd = calloc(1, sizeof *cmd);
    if (!cmd) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "gpu_cmd");
    vkllm_status s = gpu_slot_get(ctx, &cmd->slot);
    if (s != VKLLM_OK) {
        free(cmd);
        return s;
    }
    cmd->ctx = ctx;
    cmd->internal = internal;
    cmd->next_live = ctx->live_cmds;
    ctx->live_cmds = cmd;
    VkResult r = gpu_slot_begin(ctx, cmd->slot);
    if (!internal) ctx->live_user_cmds++;
    if (r < 0) {
        gpu_cmd_release(cmd);
        return gpu_vk_fail(r, "vkBeginCommandBuffer", "starting a command buffer");
    }
    *out = cmd;
    return VKLLM_OK;
}

vkllm_status gpu_cmd_begin(gpu_context *ctx, gpu_cmd **out) {
    return gpu_cmd_begin_internal(ctx, false, out);
}

uint32_t gpu_cmd_barrier_count(const gpu_cmd *cmd) {
    return cmd ? cmd->barriers : 0;
}

/* Remembers the first recording error (the message is copied, since later calls
 * may overwrite the thread's error buffer before submit). */
static void gpu_cmd_set_error(gpu_cmd *cmd, vkllm_status status) {
    if (cmd->error != VKLLM_OK) return;
    cmd->error = status;
    snprintf(cmd->error_message, sizeof cmd->error_message, "%s", vkllm_last_error());
}

#define GPU_CMD_FAIL(cmd, status, ...)                                                             \
    do {                                                                                           \
        gpu_cmd_set_error((cmd), vkl_fail((status), __VA_ARGS__));                                 \
        return;                                                                                    \
    } while (0)

/* ---------------------------------------------------------------- barriers */

static void gpu_record_barrier(gpu_cmd *cmd, VkPipelineStageFlags dst_stages,
                               VkAccessFlags dst_access) {
    VkMemoryBarrier barrier = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = dst_access,
    };
    cmd->ctx->vk.vkCmdPipelineBarrier(cmd->slot->cb, gpu_work_stages, dst_stages, 0, 1, &barrier, 0,
                                      NULL, 0, NULL);
    cmd->num_accesses = 0;
}

static void gpu_full_barrier(gpu_cmd *cmd) {
    gpu_record_barrier(cmd, gpu_work_stages,
                       VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                           VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT);
    cmd->barriers++;
}

static bool gpu_conflicts(const gpu_access *earlier, const gpu_access *now) {
    if (earlier->buffer != now->buffer) return false;
    if (earlier->end <= now->begin || now->end <= earlier->begin) return false;
    return earlier->write || now->write; /* RAW, WAW, WAR; read-after-read is free */
}

/* Records a barrier if `ops` conflict with anything since the last one, then adds them. */
static void gpu_track(gpu_cmd *cmd, const gpu_access *ops, uint32_t n) {
    bool conflict = false;
    for (uint32_t i = 0; i < n && !conflict; i++)
        for (uint32_t j = 0; j < cmd->num_accesses && !conflict; j++)
            conflict = gpu_conflicts(&cmd->accesses[j], &ops[i]);
    if (conflict) gpu_full_barrier(cmd);
    if (cmd->num_accesses + n > cmd->accesses_cap) {
        uint32_t cap = cmd->accesses_cap ? cmd->accesses_cap * 2 : 64;
        while (cap < cmd->num_accesses + n)
            cap *= 2;
        gpu_access *grown = realloc(cmd->accesses, cap * sizeof *grown);
        if (!grown) {
            /* cannot remember: be safe and fence everything from here on */
            gpu_full_barrier(cmd);
            return;
        }
        cmd->accesses = grown;
        cmd->accesses_cap = cap;
    }
    memcpy(cmd->accesses + cmd->num_accesses, ops, n * sizeof *ops);
    cmd->num_accesses += n;
}

void gpu_cmd_barrier(gpu_cmd *cmd) {
    if (!cmd || cmd->error) return;
    gpu_full_barrier(cmd);
}

/* ---------------------------------------------------------------- descriptors */

static VkDescriptorSet gpu_cmd_descriptor_set(gpu_cmd *cmd, VkDescriptorSetLayout layout) {
    gpu_context *ctx = cmd->ctx;
    gpu_cmd_slot *slot = cmd->slot;
    if (cmd->sets_in_pool == GPU_SETS_PER_POOL) {
        cmd->pool_used++;
        cmd->sets_in_pool = 0;
    }
    if (cmd->pool_used >= slot->num_pools) {
        if (slot->num_pools == slot->pools_cap) {
            uint32_t cap = slot->pools_cap ? slot->pools_cap * 2 : 4;
            VkDescriptorPool *grown = realloc(slot->pools, cap * sizeof *grown);
            if (!grown) {
                gpu_cmd_set_error(cmd, vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "descriptor pools"));
                return VK_NULL_HANDLE;
            }
            slot->pools = grown;
            slot->pools_cap = cap;
        }
        VkDescriptorPoolSize size = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                     GPU_SETS_PER_POOL * GPU_MAX_BINDINGS};
        VkDescriptorPoolCreateInfo info = {
            .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
            .maxSets = GPU_SETS_PER_POOL,
            .poolSizeCount = 1,
            .pPoolSizes = &size,
        };
        VkResult r =
            ctx->vk.vkCreateDescriptorPool(ctx->device, &info, NULL, &slot->pools[slot->num_pools]);
        if (r < 0) {
            gpu_cmd_set_error(
                cmd, gpu_vk_fail(r, "vkCreateDescriptorPool", "%u sets", GPU_SETS_PER_POOL));
            return VK_NULL_HANDLE;
        }
        slot->num_pools++;
    }
    VkDescriptorSetAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
        .descriptorPool = slot->pools[cmd->pool_used],
        .descriptorSetCount = 1,
        .pSetLayouts = &layout,
    };
    VkDescriptorSet set;
    VkResult r = ctx->vk.vkAllocateDescriptorSets(ctx->device, &alloc, &set);
    if (r < 0) {
        gpu_cmd_set_error(cmd, gpu_vk_fail(r, "vkAllocateDescriptorSets", "set %u of pool %u",
                                           cmd->sets_in_pool, cmd->pool_used));
        return VK_NULL_HANDLE;
    }
    cmd->sets_in_pool++;
    return set;
}

/* ---------------------------------------------------------------- recording */

static VkDescriptorSetLayout gpu_pipeline_set_layout(gpu_context *ctx, const gpu_pipeline *p) {
    for (uint32_t i = 0; i < ctx->num_layouts; i++)
        if (ctx->layouts[i].layout == p->layout) return ctx->layouts[i].set_layout;
    return VK_NULL_HANDLE;
}

void gpu_cmd_dispatch(gpu_cmd *cmd, gpu_pipeline *pipeline, const gpu_binding *bindings,
                      uint32_t num_bindings, const void *push_constants, uint32_t push_size,
                      uint32_t groups_x, uint32_t groups_y, uint32_t groups_z) {
    if (!cmd || cmd->error) return;
    gpu_context *ctx = cmd->ctx;
    const gpu_features *f = &ctx->info.features;
    if (!pipeline) GPU_CMD_FAIL(cmd, VKLLM_ERR_INVALID_ARGUMENT, "gpu_cmd_dispatch: no pipeline");
    const char *name = pipeline->shader_name;
    if (num_bindings != pipeline->desc.num_bindings)
        GPU_CMD_FAIL(cmd, VKLLM_ERR_INVALID_ARGUMENT,
                     "gpu_cmd_dispatch %s: %u bindings given, the pipeline has %u", name,
                     num_bindings, pipeline->desc.num_bindings);
    if (push_size > pipeline->desc.push_constant_size || push_size % 4 ||
        (push_size && !push_constants))
        GPU_CMD_FAIL(cmd, VKLLM_ERR_INVALID_ARGUMENT,
                     "gpu_cmd_dispatch %s: %u push-constant bytes (pipeline takes %u, multiple "
                     "of 4)",
                     name, push_size, pipeline->desc.push_constant_size);
    uint32_t groups[3] = {groups_x, groups_y, groups_z};
    for (int i = 0; i < 3; i++)
        if (groups[i] > f->max_workgroup_count[i])
            GPU_CMD_FAIL(cmd, VKLLM_ERR_INVALID_ARGUMENT,
                         "gpu_cmd_dispatch %s: %u x %u x %u workgroups; the device allows at "
                         "most %u in dimension %d",
                         name, groups_x, groups_y, groups_z, f->max_workgroup_count[i], i);

    gpu_access ops[GPU_MAX_BINDINGS] = {0};
    VkDescriptorBufferInfo infos[GPU_MAX_BINDINGS];
    VkWriteDescriptorSet writes[GPU_MAX_BINDINGS];
    for (uint32_t i = 0; i < num_bindings; i++) {
        const gpu_binding *b = &bindings[i];
        if (!b->buffer || !b->buffer->handle)
            GPU_CMD_FAIL(cmd, VKLLM_ERR_INVALID_ARGUMENT,
                         "gpu_cmd_dispatch %s: binding %u has no buffer", name, i);
        uint64_t size = b->buffer->size;
        if (b->offset >= size || b->offset % f->min_storage_offset_alignment)
            GPU_CMD_FAIL(cmd, VKLLM_ERR_INVALID_ARGUMENT,
                         "gpu_cmd_dispatch %s: binding %u offset %llu is outside the buffer of "
                         "%llu bytes or not a multiple of minStorageBufferOffsetAlignment %llu",
                         name, i, (unsigned long long)b->offset, (unsigned long long)size,
                         (unsigned long long)f->min_storage_offset_alignment);
        uint64_t range = b->range;
        if (range == 0) {
            range = size - b->offset;
            if (range > f->max_storage_buffer_range) range = f->max_storage_buffer_range;
        }
        if (range > size - b->offset || range > f->max_storage_buffer_range)
            GPU_CMD_FAIL(cmd, VKLLM_ERR_INVALID_ARGUMENT,
                         "gpu_cmd_dispatch %s: binding %u range [%llu, +%llu) exceeds the buffer "
                         "of %llu bytes or maxStorageBufferRange %llu",
                         name, i, (unsigned long long)b->offset, (unsigned long long)range,
                         (unsigned long long)size, (unsigned long long)f->max_storage_buffer_range);
        bool written = b->writable || (i < 32 && (pipeline->shader_writes >> i & 1));
        ops[i] = (gpu_access){(VkBuffer)b->buffer->handle, b->offset, b->offset + range, written};
        infos[i] = (VkDescriptorBufferInfo){(VkBuffer)b->buffer->handle, b->offset, range};
        writes[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = &infos[i],
        };
    }
    if (groups_x == 0 || groups_y == 0 || groups_z == 0) return; /* nothing runs */
    gpu_track(cmd, ops, num_bindings);

    VkCommandBuffer cb = cmd->slot->cb;
    ctx->vk.vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline->pipeline);
    if (num_bindings) {
        if (ctx->use_push_descriptors) {
            ctx->vk.vkCmdPushDescriptorSetKHR(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline->layout,
                                              0, num_bindings, writes);
        } else {
            VkDescriptorSet set =
                gpu_cmd_descriptor_set(cmd, gpu_pipeline_set_layout(ctx, pipeline));
            if (!set) return;
            for (uint32_t i = 0; i < num_bindings; i++)
                writes[i].dstSet = set;
            ctx->vk.vkUpdateDescriptorSets(ctx->device, num_bindings, writes, 0, NULL);
            ctx->vk.vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline->layout, 0,
                                            1, &set, 0, NULL);
        }
    }
    if (push_size)
        ctx->vk.vkCmdPushConstants(cb, pipeline->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size,
                                   push_constants);
    ctx->vk.vkCmdDispatch(cb, groups_x, groups_y, groups_z);
    if (ctx->profiling) {
        uint32_t p0 = 0;
        if (push_size >= 4) memcpy(&p0, push_constants, 4);
        char label[2 * GPU_LABEL_MAX]; /* cut to GPU_LABEL_MAX by gpu_cmd_timestamp */
        snprintf(label, sizeof label, "%.63s p0=%u g=%ux%ux%u", name, p0, groups_x, groups_y,
                 groups_z);
        gpu_cmd_timestamp(cmd, label);
    }
}

void gpu_set_profiling(gpu_context *ctx, bool on) {
    if (ctx) ctx->profiling = on;
}

static bool gpu_cmd_check_range(gpu_cmd *cmd, const char *what, const gpu_buffer *buffer,
                                uint64_t offset, uint64_t size) {
    if (!buffer || !buffer->handle) {
        gpu_cmd_set_error(cmd, vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: no buffer", what));
        return false;
    }
    if (offset > buffer->size || size > buffer->size - offset) {
        gpu_cmd_set_error(cmd, vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                                        "%s: range [%llu, +%llu) outside the buffer of %llu bytes",
                                        what, (unsigned long long)offset, (unsigned long long)size,
                                        (unsigned long long)buffer->size));
        return false;
    }
    return true;
}

void gpu_cmd_copy(gpu_cmd *cmd, const gpu_buffer *src, uint64_t src_offset, const gpu_buffer *dst,
                  uint64_t dst_offset, uint64_t size) {
    if (!cmd || cmd->error) return;
    if (!gpu_cmd_check_range(cmd, "gpu_cmd_copy source", src, src_offset, size) ||
        !gpu_cmd_check_range(cmd, "gpu_cmd_copy destination", dst, dst_offset, size))
        return;
    if (size == 0) return;
    if (src->handle == dst->handle && src_offset < dst_offset + size &&
        dst_offset < src_offset + size)
        GPU_CMD_FAIL(cmd, VKLLM_ERR_INVALID_ARGUMENT,
                     "gpu_cmd_copy: source [%llu, +%llu) and destination [%llu, +%llu) overlap "
                     "in one buffer",
                     (unsigned long long)src_offset, (unsigned long long)size,
                     (unsigned long long)dst_offset, (unsigned long long)size);
    gpu_access ops[2] = {
        {(VkBuffer)src->handle, src_offset, src_offset + size, false},
        {(VkBuffer)dst->handle, dst_offset, dst_offset + size, true},
    };
    gpu_track(cmd, ops, 2);
    VkBufferCopy region = {src_offset, dst_offset, size};
    cmd->ctx->vk.vkCmdCopyBuffer(cmd->slot->cb, (VkBuffer)src->handle, (VkBuffer)dst->handle, 1,
                                 &region);
}

void gpu_cmd_fill(gpu_cmd *cmd, const gpu_buffer *dst, uint64_t offset, uint64_t size,
                  uint32_t word) {
    if (!cmd || cmd->error) return;
    if (!gpu_cmd_check_range(cmd, "gpu_cmd_fill", dst, offset, size)) return;
    if (offset % 4 || size % 4)
        GPU_CMD_FAIL(cmd, VKLLM_ERR_INVALID_ARGUMENT,
                     "gpu_cmd_fill: offset %llu and size %llu must be multiples of 4",
                     (unsigned long long)offset, (unsigned long long)size);
    if (size == 0) return;
    gpu_access op = {(VkBuffer)dst->handle, offset, offset + size, true};
    gpu_track(cmd, &op, 1);
    cmd->ctx->vk.vkCmdFillBuffer(cmd->slot->cb, (VkBuffer)dst->handle, offset, size, word);
}

void gpu_cmd_timestamp(gpu_cmd *cmd, const char *label) {
    if (!cmd || cmd->error) return;
    gpu_context *ctx = cmd->ctx;
    if (!ctx->info.features.timestamps || cmd->num_timestamps >= GPU_MAX_TIMESTAMPS) return;
    if (cmd->num_timestamps == cmd->labels_cap) {
        uint32_t cap = cmd->labels_cap ? 2 * cmd->labels_cap : 16;
        if (cap > GPU_MAX_TIMESTAMPS) cap = GPU_MAX_TIMESTAMPS;
        void *grown = realloc(cmd->labels, (size_t)cap * GPU_LABEL_MAX);
        if (!grown) {
            gpu_cmd_set_error(cmd, vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY,
                                            "gpu_cmd_timestamp: labels of %u timestamps", cap));
            return;
        }
        cmd->labels = grown;
        cmd->labels_cap = cap;
    }
    if (cmd->num_timestamps == 0) cmd->ts_slot = cmd->slot;
    gpu_cmd_slot *slot = cmd->ts_slot;
    if (!slot->query_pool) {
        VkQueryPoolCreateInfo info = {
            .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
            .queryType = VK_QUERY_TYPE_TIMESTAMP,
            .queryCount = GPU_QUERY_COUNT,
        };
        VkResult r = ctx->vk.vkCreateQueryPool(ctx->device, &info, NULL, &slot->query_pool);
        if (r < 0) {
            gpu_cmd_set_error(
                cmd, gpu_vk_fail(r, "vkCreateQueryPool", "%u timestamps", GPU_QUERY_COUNT));
            return;
        }
    }
    VkCommandBuffer cb = cmd->slot->cb;
    if (cmd->num_timestamps == 0)
        ctx->vk.vkCmdResetQueryPool(cb, slot->query_pool, 0, GPU_QUERY_COUNT);
    snprintf(cmd->labels[cmd->num_timestamps], GPU_LABEL_MAX, "%s", label ? label : "");
    ctx->vk.vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, slot->query_pool,
                                cmd->num_timestamps);
    cmd->num_timestamps++;
}

/* ---------------------------------------------------------------- submit */

/* Ends a slot's command buffer and submits it, signalling `fence` (may be null); *call
 * names the Vulkan call that failed. */
static VkResult gpu_slot_end_submit(gpu_context *ctx, gpu_cmd_slot *slot, VkFence fence,
                                    const char **call) {
    *call = "vkEndCommandBuffer";
    VkResult r = ctx->vk.vkEndCommandBuffer(slot->cb);
    if (r < 0) return r;
    VkSubmitInfo submit = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &slot->cb,
    };
    *call = "vkQueueSubmit";
    return ctx->vk.vkQueueSubmit(ctx->queue, 1, &submit, fence);
}

vkllm_status gpu_cmd_submit_nowait(gpu_cmd *cmd) {
    if (!cmd) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gpu_cmd_submit: no command");
    gpu_context *ctx = cmd->ctx;
    if (cmd->error) {
        vkllm_status status = cmd->error;
        char message[VKL_ERROR_MAX];
        memcpy(message, cmd->error_message, sizeof message);
        gpu_cmd_release(cmd);
        return vkl_fail(status, "%s", message);
    }
    /* make everything this command wrote visible to later commands and the host */
    gpu_record_barrier(cmd, gpu_work_stages | VK_PIPELINE_STAGE_HOST_BIT,
                       VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                           VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                           VK_ACCESS_HOST_READ_BIT);
    const char *call;
    VkResult r = gpu_slot_end_submit(ctx, cmd->slot, cmd->slot->fence, &call);
    if (r < 0) {
        gpu_cmd_release(cmd);
        return gpu_vk_fail(r, call, "finishing and submitting a command buffer");
    }
    cmd->submitted = true;
    return VKLLM_OK;
}

vkllm_status gpu_cmd_flush(gpu_cmd *cmd) {
    if (!cmd) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gpu_cmd_flush: no command");
    if (cmd->error) return cmd->error;
    gpu_context *ctx = cmd->ctx;
    gpu_cmd_slot *next = NULL;
    vkllm_status s = gpu_slot_get(ctx, &next);
    if (s != VKLLM_OK) {
        gpu_cmd_set_error(cmd, s);
        return s;
    }
    const char *call;
    VkResult r = gpu_slot_end_submit(ctx, cmd->slot, VK_NULL_HANDLE, &call);
    if (r >= 0) {
        r = gpu_slot_begin(ctx, next);
        call = "vkBeginCommandBuffer";
    }
    /* the part (submitted or not) waits on cmd->flushed for the final fence */
    cmd->slot->pools_used = gpu_cmd_pools_used(cmd);
    cmd->slot->next = cmd->flushed;
    cmd->flushed = cmd->slot;
    cmd->slot = next;
    cmd->pool_used = cmd->sets_in_pool = 0;
    if (r < 0) {
        s = gpu_vk_fail(r, call, "flushing part %u of a command", cmd->flushes + 1);
        gpu_cmd_set_error(cmd, s);
        return s;
    }
    cmd->flushes++;
    /* The first timestamp of the new part is written once the previous parts are done and
     * this one has started: its gap is the GPU waiting for the host to submit it. */
    if (ctx->profiling) gpu_cmd_timestamp(cmd, "(idle: next part not yet submitted)");
    return VKLLM_OK;
}

uint32_t gpu_cmd_flush_count(const gpu_cmd *cmd) {
    return cmd ? cmd->flushes : 0;
}

static void gpu_cmd_collect_timestamps(gpu_cmd *cmd) {
    gpu_context *ctx = cmd->ctx;
    ctx->num_timestamps = 0;
    uint32_t n = cmd->num_timestamps;
    if (n == 0) return;
    uint64_t ticks[GPU_MAX_TIMESTAMPS];
    VkResult r = ctx->vk.vkGetQueryPoolResults(ctx->device, cmd->ts_slot->query_pool, 0, n,
                                               sizeof ticks, ticks, sizeof ticks[0],
                                               VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    if (r != VK_SUCCESS) return;
    uint32_t bits = ctx->info.timestamp_valid_bits;
    uint64_t mask = bits >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << bits) - 1);
    double period = ctx->info.features.timestamp_period_ns;
    for (uint32_t i = 0; i < n; i++) {
        memcpy(ctx->timestamp_labels[i], cmd->labels[i], GPU_LABEL_MAX);
        ctx->timestamp_label_ptrs[i] = ctx->timestamp_labels[i];
        uint64_t delta = ((ticks[i] & mask) - (ticks[0] & mask)) & mask;
        ctx->timestamp_ms[i] = (double)delta * period / 1e6;
    }
    ctx->num_timestamps = n;
}

/* How long gpu_cmd_wait polls the fence before blocking in vkWaitForFences. Blocking
 * costs the thread's wake-up after the GPU finishes, at every step: on the H100 polling
 * took batch-1 decode from 258.9 to 278.4 tokens/s (wall minus GPU time 0.26 -> 0.08 ms
 * per token; docs/perf-notes.md, "fourth pass"). Default 20 ms on GPUs, covering a decode
 * step; none on CPU devices, whose driver threads need the cores the poll would take.
 * VKLLM_SPIN_WAIT=<ms> overrides (0: always block). */
#define GPU_SPIN_WAIT_DEFAULT_S 0.020
static double gpu_spin_wait_s(const gpu_context *ctx) {
    const char *v = getenv("VKLLM_SPIN_WAIT");
    if (v && *v) return strtod(v, NULL) * 1e-3;
    return ctx->info.features.kind == GPU_KIND_CPU ? 0 : GPU_SPIN_WAIT_DEFAULT_S;
}

vkllm_status gpu_cmd_wait(gpu_cmd *cmd) {
    gpu_context *ctx = cmd->ctx;
    VkResult r = VK_NOT_READY;
    double spin = gpu_spin_wait_s(ctx);
    if (spin > 0) {
        double until = vkl_monotonic_s() + spin;
        do
            r = ctx->vk.vkGetFenceStatus(ctx->device, cmd->slot->fence);
        while (r == VK_NOT_READY && vkl_monotonic_s() < until);
    }
    if (r == VK_NOT_READY)
        r = ctx->vk.vkWaitForFences(ctx->device, 1, &cmd->slot->fence, VK_TRUE, UINT64_MAX);
    if (r != VK_SUCCESS) {
        gpu_cmd_release(cmd);
        return gpu_vk_fail(r < 0 ? r : VK_ERROR_UNKNOWN, "vkWaitForFences",
                           "waiting for a command buffer (%s)", gpu_vk_result_name(r));
    }
    cmd->completed = true;
    if (!cmd->internal) gpu_cmd_collect_timestamps(cmd);
    gpu_cmd_release(cmd);
    return VKLLM_OK;
}

vkllm_status gpu_cmd_submit(gpu_cmd *cmd) {
    VKL_TRY(gpu_cmd_submit_nowait(cmd));
    return gpu_cmd_wait(cmd);
}

uint32_t gpu_last_timestamps(const gpu_context *ctx, const char ***labels, const double **ms) {
    if (labels) *labels = (const char **)ctx->timestamp_label_ptrs;
    if (ms) *ms = ctx->timestamp_ms;
    return ctx->num_timestamps;
}
