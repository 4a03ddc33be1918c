/* gpu_buffer.c: buffers, synchronous uploads/downloads through staging, and the
 * upload ring.
 *
 * Invariants: every buffer may be a storage buffer and a transfer source and
 * destination (kernels and copies use any buffer). Uploads and downloads of
 * device buffers go through GPU_STAGING_SLOTS host-visible slots so that the CPU
 * copies one piece while the GPU copies the previous; a slot is reused only after
 * the fence of the command that read/wrote it has signalled. Ring space stays
 * valid until the user's next gpu_cmd_submit returns with no other user command
 * recording; then the ring is reset (and, if it overflowed into extra chunks,
 * replaced by one chunk large enough for the whole step). */
#include <stdlib.h>
#include <string.h>

#include "gpu_internal.h"

#define GPU_STAGING_SLOT_SIZE ((uint64_t)16 << 20)
_Static_assert(GPU_STAGING_SLOTS == 2, "gpu_download drains exactly two slots");
#define GPU_RING_CHUNK_SIZE ((uint64_t)4 << 20)
#define GPU_RING_MAX_BYTES ((uint64_t)256 << 20) /* between two submits */

static const char *gpu_buffer_kind_name(gpu_memory_kind kind) {
    return kind == GPU_MEMORY_DEVICE ? "device" : kind == GPU_MEMORY_UPLOAD ? "upload" : "readback";
}

vkllm_status gpu_buffer_create(gpu_context *ctx, uint64_t size, gpu_memory_kind kind,
                               gpu_buffer *out) {
    memset(out, 0, sizeof *out);
    if (size == 0) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gpu_buffer_create: size 0");
    if ((unsigned)kind > GPU_MEMORY_READBACK)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gpu_buffer_create: memory kind %d", (int)kind);
    uint64_t max_buffer = ctx->info.max_buffer_size;
    if (max_buffer && size > max_buffer)
        return vkl_fail(VKLLM_ERR_OUT_OF_DEVICE_MEMORY,
                        "out of device memory: %s buffer of %llu bytes (%.1f MiB) exceeds the "
                        "device's maxBufferSize of %llu bytes (%.1f MiB)",
                        gpu_buffer_kind_name(kind), (unsigned long long)size,
                        (double)size / (1 << 20), (unsigned long long)max_buffer,
                        (double)max_buffer / (1 << 20));
    VkBufferCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                 (ctx->buffer_device_address ? VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT : 0),
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkBuffer buffer;
    GPU_VK_TRY(ctx->vk.vkCreateBuffer(ctx->device, &info, NULL, &buffer), "vkCreateBuffer",
               "%s buffer of %llu bytes", gpu_buffer_kind_name(kind), (unsigned long long)size);
    VkMemoryDedicatedRequirements dedicated = {.sType =
                                                   VK_STRUCTURE_TYPE_MEMORY_DEDICATED_REQUIREMENTS};
    VkMemoryRequirements2 requirements = {.sType = VK_STRUCTURE_TYPE_MEMORY_REQUIREMENTS_2,
                                          .pNext = &dedicated};
    VkBufferMemoryRequirementsInfo2 query = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_MEMORY_REQUIREMENTS_INFO_2, .buffer = buffer};
    ctx->vk.vkGetBufferMemoryRequirements2(ctx->device, &query, &requirements);

    gpu_allocation *allocation;
    vkllm_status status = gpu_memory_alloc(ctx, kind, &requirements.memoryRequirements,
                                           dedicated.prefersDedicatedAllocation ||
                                               dedicated.requiresDedicatedAllocation,
                                           buffer, &allocation);
    if (status != VKLLM_OK) {
        ctx->vk.vkDestroyBuffer(ctx->device, buffer, NULL);
        return status;
    }
    /* a dedicated block was created with this buffer in VkMemoryDedicatedAllocateInfo,
     * so bind it whole; a shared block is bound at the range's offset */
    VkResult r = ctx->vk.vkBindBufferMemory(ctx->device, buffer, allocation->block->memory,
                                            allocation->offset);
    if (r < 0) {
        gpu_memory_free(ctx, allocation);
        ctx->vk.vkDestroyBuffer(ctx->device, buffer, NULL);
        return gpu_vk_fail(r, "vkBindBufferMemory", "%s buffer of %llu bytes",
                           gpu_buffer_kind_name(kind), (unsigned long long)size);
    }
    out->handle = (void *)buffer;
    out->size = size;
    out->kind = kind;
    out->allocation = allocation;
    out->mapped =
        allocation->block->mapped ? (char *)allocation->block->mapped + allocation->offset : NULL;
    return VKLLM_OK;
}

void gpu_buffer_destroy(gpu_context *ctx, gpu_buffer *buffer) {
    if (!ctx || !buffer || !buffer->handle) return;
    ctx->vk.vkDestroyBuffer(ctx->device, (VkBuffer)buffer->handle, NULL);
    gpu_memory_free(ctx, buffer->allocation);
    memset(buffer, 0, sizeof *buffer);
}

uint64_t gpu_buffer_device_address(gpu_context *ctx, const gpu_buffer *buffer) {
    if (!ctx->buffer_device_address || !buffer->handle) return 0;
    VkBufferDeviceAddressInfo info = {.sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO,
                                      .buffer = (VkBuffer)buffer->handle};
    return ctx->vk.vkGetBufferDeviceAddress(ctx->device, &info);
}

/* ---------------------------------------------------------------- staging */

static vkllm_status gpu_check_range(const char *what, const gpu_buffer *buffer, uint64_t offset,
                                    uint64_t size) {
    if (!buffer || !buffer->handle)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: buffer is not created", what);
    if (offset > buffer->size || size > buffer->size - offset)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "%s: range [%llu, +%llu) outside the buffer of %llu bytes", what,
                        (unsigned long long)offset, (unsigned long long)size,
                        (unsigned long long)buffer->size);
    return VKLLM_OK;
}

static vkllm_status gpu_staging_get(gpu_context *ctx, gpu_memory_kind kind, gpu_buffer **out) {
    gpu_buffer *staging = kind == GPU_MEMORY_UPLOAD ? &ctx->upload_staging : &ctx->download_staging;
    if (!staging->handle) {
        ctx->staging_slot_size = GPU_STAGING_SLOT_SIZE;
        VKL_TRY(gpu_buffer_create(ctx, ctx->staging_slot_size * GPU_STAGING_SLOTS, kind, staging));
    }
    *out = staging;
    return VKLLM_OK;
}

void gpu_staging_destroy(gpu_context *ctx) {
    gpu_buffer_destroy(ctx, &ctx->upload_staging);
    gpu_buffer_destroy(ctx, &ctx->download_staging);
}

/* Waits for every command still in flight (used on error paths). */
static vkllm_status gpu_wait_all(gpu_cmd **in_flight, vkllm_status status) {
    for (int i = 0; i < GPU_STAGING_SLOTS; i++)
        if (in_flight[i]) {
            char saved[VKL_ERROR_MAX];
            memcpy(saved, vkllm_last_error(), sizeof saved);
            vkllm_status s = gpu_cmd_wait(in_flight[i]);
            in_flight[i] = NULL;
            if (status == VKLLM_OK)
                status = s;
            else
                vkl_fail(status, "%s", saved);
        }
    return status;
}

vkllm_status gpu_upload(gpu_context *ctx, const gpu_buffer *dst, uint64_t dst_offset,
                        const void *src, uint64_t size) {
    VKL_TRY(gpu_check_range("gpu_upload", dst, dst_offset, size));
    if (size == 0) return VKLLM_OK;
    if (dst->mapped) {
        memcpy((char *)dst->mapped + dst_offset, src, size);
        gpu_memory_flush(ctx, dst->allocation, dst_offset, size);
        return VKLLM_OK;
    }
    gpu_buffer *staging;
    VKL_TRY(gpu_staging_get(ctx, GPU_MEMORY_UPLOAD, &staging));
    gpu_cmd *in_flight[GPU_STAGING_SLOTS] = {0};
    uint64_t done = 0;
    for (uint32_t piece = 0; done < size; piece++) {
        int slot = (int)(piece % GPU_STAGING_SLOTS);
        if (in_flight[slot]) {
            vkllm_status s = gpu_cmd_wait(in_flight[slot]);
            in_flight[slot] = NULL;
            if (s != VKLLM_OK) return gpu_wait_all(in_flight, s);
        }
        uint64_t n = size - done < ctx->staging_slot_size ? size - done : ctx->staging_slot_size;
        uint64_t slot_offset = (uint64_t)slot * ctx->staging_slot_size;
        memcpy((char *)staging->mapped + slot_offset, (const char *)src + done, n);
        gpu_memory_flush(ctx, staging->allocation, slot_offset, n);
        gpu_cmd *cmd;
        vkllm_status s = gpu_cmd_begin_internal(ctx, true, &cmd);
        if (s != VKLLM_OK) return gpu_wait_all(in_flight, s);
        gpu_cmd_copy(cmd, staging, slot_offset, dst, dst_offset + done, n);
        s = gpu_cmd_submit_nowait(cmd);
        if (s != VKLLM_OK) return gpu_wait_all(in_flight, s);
        in_flight[slot] = cmd;
        done += n;
    }
    return gpu_wait_all(in_flight, VKLLM_OK);
}

vkllm_status gpu_download(gpu_context *ctx, const gpu_buffer *src, uint64_t src_offset, void *dst,
                          uint64_t size) {
    VKL_TRY(gpu_check_range("gpu_download", src, src_offset, size));
    if (size == 0) return VKLLM_OK;
    if (src->mapped) {
        gpu_memory_invalidate(ctx, src->allocation, src_offset, size);
        memcpy(dst, (const char *)src->mapped + src_offset, size);
        return VKLLM_OK;
    }
    gpu_buffer *staging;
    VKL_TRY(gpu_staging_get(ctx, GPU_MEMORY_READBACK, &staging));
    gpu_cmd *in_flight[GPU_STAGING_SLOTS] = {0};
    uint64_t piece_done[GPU_STAGING_SLOTS] = {0}, piece_size[GPU_STAGING_SLOTS] = {0};
    uint64_t issued = 0;
    uint32_t piece = 0;
    /* keep GPU_STAGING_SLOTS copies in flight; drain a slot (wait + memcpy) before reuse */
    while (issued < size || in_flight[0] || in_flight[1]) {
        int slot = (int)(piece % GPU_STAGING_SLOTS);
        uint64_t slot_offset = (uint64_t)slot * ctx->staging_slot_size;
        if (in_flight[slot]) {
            vkllm_status s = gpu_cmd_wait(in_flight[slot]);
            in_flight[slot] = NULL;
            if (s != VKLLM_OK) return gpu_wait_all(in_flight, s);
            gpu_memory_invalidate(ctx, staging->allocation, slot_offset, piece_size[slot]);
            memcpy((char *)dst + piece_done[slot], (const char *)staging->mapped + slot_offset,
                   piece_size[slot]);
        }
        if (issued < size) {
            uint64_t n =
                size - issued < ctx->staging_slot_size ? size - issued : ctx->staging_slot_size;
            gpu_cmd *cmd;
            vkllm_status s = gpu_cmd_begin_internal(ctx, true, &cmd);
            if (s != VKLLM_OK) return gpu_wait_all(in_flight, s);
            gpu_cmd_copy(cmd, src, src_offset + issued, staging, slot_offset, n);
            s = gpu_cmd_submit_nowait(cmd);
            if (s != VKLLM_OK) return gpu_wait_all(in_flight, s);
            in_flight[slot] = cmd;
            piece_done[slot] = issued;
            piece_size[slot] = n;
            issued += n;
        }
        piece++;
    }
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- ring */

vkllm_status gpu_ring_alloc(gpu_context *ctx, uint64_t size, void **mapped, gpu_binding *binding) {
    if (size == 0) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gpu_ring_alloc: size 0");
    uint64_t limit = ctx->info.features.max_storage_buffer_range;
    if (size > limit)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "gpu_ring_alloc: %llu bytes exceed maxStorageBufferRange (%llu bytes), "
                        "the most one binding can cover; use a buffer of its own",
                        (unsigned long long)size, (unsigned long long)limit);
    uint64_t align = ctx->info.features.min_storage_offset_alignment;
    if (align < 16) align = 16;
    if (!ctx->ring_chunk_size) ctx->ring_chunk_size = GPU_RING_CHUNK_SIZE;
    gpu_ring_chunk *chunk = ctx->ring;
    uint64_t offset = chunk ? gpu_align_up(chunk->head, align) : 0;
    if (!chunk || offset + size > chunk->buffer.size) {
        /* full (or none yet): start another chunk; the old ones stay valid until recycled */
        uint64_t chunk_size = ctx->ring_chunk_size;
        if (chunk_size < size) chunk_size = gpu_align_up(size, align);
        uint64_t held = 0;
        for (gpu_ring_chunk *c = ctx->ring; c; c = c->next)
            held += c->buffer.size;
        if (held + chunk_size > GPU_RING_MAX_BYTES)
            return vkl_fail(VKLLM_ERR_OUT_OF_DEVICE_MEMORY,
                            "gpu_ring_alloc: ring full: %llu bytes requested, %llu bytes already "
                            "handed out since the last gpu_cmd_submit (limit %llu bytes); submit "
                            "the step before allocating more",
                            (unsigned long long)size, (unsigned long long)held,
                            (unsigned long long)GPU_RING_MAX_BYTES);
        gpu_ring_chunk *fresh = calloc(1, sizeof *fresh);
        if (!fresh) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "ring chunk record");
        vkllm_status s = gpu_buffer_create(ctx, chunk_size, GPU_MEMORY_UPLOAD, &fresh->buffer);
        if (s != VKLLM_OK) {
            free(fresh);
            return vkl_fail_wrap(s, "gpu_ring_alloc: growing the ring by %llu bytes: ",
                                 (unsigned long long)chunk_size);
        }
        fresh->next = ctx->ring;
        ctx->ring = fresh;
        chunk = fresh;
        offset = 0;
    }
    chunk->head = offset + size;
    *mapped = (char *)chunk->buffer.mapped + offset;
    *binding = (gpu_binding){.buffer = &chunk->buffer, .offset = offset, .range = size};
    return VKLLM_OK;
}

void gpu_ring_recycle(gpu_context *ctx) {
    if (!ctx->ring) return;
    if (!ctx->ring->next) {
        ctx->ring->head = 0;
        return;
    }
    /* the step overflowed: next time use one chunk as large as everything it used */
    uint64_t total = 0;
    for (gpu_ring_chunk *c = ctx->ring; c; c = c->next)
        total += c->buffer.size;
    gpu_ring_destroy(ctx);
    ctx->ring_chunk_size = total;
}

void gpu_ring_destroy(gpu_context *ctx) {
    for (gpu_ring_chunk *c = ctx->ring, *next; c; c = next) {
        next = c->next;
        gpu_buffer_destroy(ctx, &c->buffer);
        free(c);
    }
    ctx->ring = NULL;
}
