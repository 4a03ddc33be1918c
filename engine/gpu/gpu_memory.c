/* gpu_memory.c: device memory. One pool per gpu_memory_kind; a pool takes large
 * VkDeviceMemory blocks from the driver and hands out aligned ranges of them.
 *
 * Invariants: the ranges of a block are a list ordered by offset that covers the
 * block exactly (no gaps, no overlap); no two adjacent ranges are both free (they
 * are merged on free); block->used / block->live count the live ranges. Host-visible
 * blocks are mapped once for their lifetime, and their ranges are aligned to
 * nonCoherentAtomSize so flushes of one buffer never touch another. A request
 * larger than half a block (or one the driver prefers dedicated) gets its own
 * VkDeviceMemory, freed with the buffer. At most one empty block is kept per pool
 * (to avoid re-allocating on create/destroy patterns); others are returned. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_internal.h"

#define GPU_DEVICE_BLOCK_SIZE ((VkDeviceSize)256 << 20)
#define GPU_HOST_BLOCK_SIZE ((VkDeviceSize)64 << 20)

static const char *gpu_kind_label(gpu_memory_kind kind) {
    switch (kind) {
    case GPU_MEMORY_DEVICE:
        return "device";
    case GPU_MEMORY_UPLOAD:
        return "upload";
    case GPU_MEMORY_READBACK:
        return "readback";
    }
    return "?";
}

/* Memory-type preferences per kind: the first (required, forbidden) pair that some
 * allowed type satisfies wins. */
static uint32_t gpu_find_memory_type(const gpu_context *ctx, uint32_t type_bits,
                                     gpu_memory_kind kind) {
    enum {
        DL = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT,
        HV = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT,
        HC = VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
        CA = VK_MEMORY_PROPERTY_HOST_CACHED_BIT,
        AVOID = VK_MEMORY_PROPERTY_PROTECTED_BIT | VK_MEMORY_PROPERTY_LAZILY_ALLOCATED_BIT,
    };
    static const VkMemoryPropertyFlags prefs[3][3][2] = {
        [GPU_MEMORY_DEVICE] = {{DL, HV}, {DL, 0}, {0, 0}},
        [GPU_MEMORY_UPLOAD] = {{HV | HC, DL}, {HV | HC, 0}, {HV | HC, 0}},
        [GPU_MEMORY_READBACK] = {{HV | HC | CA, 0}, {HV | CA, 0}, {HV | HC, 0}},
    };
    const VkPhysicalDeviceMemoryProperties *mp = &ctx->memory_properties;
    for (int p = 0; p < 3; p++) {
        VkMemoryPropertyFlags required = prefs[kind][p][0], forbidden = prefs[kind][p][1] | AVOID;
        for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
            VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
            if ((type_bits & (1u << i)) && (f & required) == required && !(f & forbidden)) return i;
        }
    }
    return UINT32_MAX;
}

static bool gpu_is_host_kind(gpu_memory_kind kind) {
    return kind != GPU_MEMORY_DEVICE;
}

static VkDeviceSize gpu_heap_size(const gpu_context *ctx, uint32_t type_index) {
    const VkPhysicalDeviceMemoryProperties *mp = &ctx->memory_properties;
    return mp->memoryHeaps[mp->memoryTypes[type_index].heapIndex].size;
}

static VkDeviceSize gpu_block_size_for(const gpu_context *ctx, gpu_memory_kind kind,
                                       uint32_t type_index) {
    VkDeviceSize size = gpu_is_host_kind(kind) ? GPU_HOST_BLOCK_SIZE : GPU_DEVICE_BLOCK_SIZE;
    VkDeviceSize max_alloc = ctx->info.features.max_allocation_size;
    if (max_alloc && size > max_alloc) size = max_alloc;
    VkDeviceSize heap_quarter = gpu_heap_size(ctx, type_index) / 4;
    if (heap_quarter >= ((VkDeviceSize)16 << 20) && size > heap_quarter) size = heap_quarter;
    return size;
}

static uint64_t gpu_memory_in_use_locked(const gpu_context *ctx, bool device_local_only) {
    uint64_t total = 0;
    for (int k = 0; k < 3; k++) {
        const gpu_memory_pool *pool = &ctx->pools[k];
        if (pool->type_index == UINT32_MAX) continue;
        if (device_local_only && !(pool->flags & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT)) continue;
        for (const gpu_block *b = pool->blocks; b; b = b->next)
            total += b->size;
    }
    return total;
}

uint64_t gpu_memory_in_use(const gpu_context *ctx) {
    return gpu_memory_in_use_locked(ctx, true);
}

gpu_memory_stats gpu_memory_get_stats(const gpu_context *ctx) {
    gpu_memory_stats s;
    memset(&s, 0, sizeof s);
    for (int k = 0; k < 3; k++)
        for (const gpu_block *b = ctx->pools[k].blocks; b; b = b->next) {
            s.reserved[k] += b->size;
            s.used[k] += b->used;
            s.live_buffers[k] += b->live;
            if (b->dedicated)
                s.dedicated[k]++;
            else
                s.blocks[k]++;
        }
    return s;
}

static vkllm_status gpu_out_of_memory(const gpu_context *ctx, gpu_memory_kind kind,
                                      VkDeviceSize requested, uint32_t type_index,
                                      const char *why) {
    VkDeviceSize heap = type_index == UINT32_MAX ? 0 : gpu_heap_size(ctx, type_index);
    return vkl_fail(VKLLM_ERR_OUT_OF_DEVICE_MEMORY,
                    "out of device memory: %s buffer needs %llu bytes (%.1f MiB); %s; heap "
                    "%llu bytes (%.1f MiB), this context holds %llu bytes (%.1f MiB)",
                    gpu_kind_label(kind), (unsigned long long)requested,
                    (double)requested / (1 << 20), why, (unsigned long long)heap,
                    (double)heap / (1 << 20),
                    (unsigned long long)gpu_memory_in_use_locked(ctx, false),
                    (double)gpu_memory_in_use_locked(ctx, false) / (1 << 20));
}

static vkllm_status gpu_block_create(gpu_context *ctx, gpu_memory_pool *pool, uint32_t type_index,
                                     VkDeviceSize size, VkBuffer dedicated_buffer,
                                     gpu_block **out) {
    gpu_block *block = calloc(1, sizeof *block);
    gpu_allocation *whole = calloc(1, sizeof *whole);
    if (!block || !whole) {
        free(block), free(whole);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "memory block record");
    }
    VkMemoryAllocateFlagsInfo flags = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO,
        .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT,
    };
    VkMemoryDedicatedAllocateInfo dedicated = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_DEDICATED_ALLOCATE_INFO,
        .buffer = dedicated_buffer,
    };
    VkMemoryAllocateInfo info = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = size,
        .memoryTypeIndex = type_index,
    };
    const void **tail = &info.pNext;
    if (ctx->buffer_device_address) {
        *tail = &flags;
        tail = &flags.pNext;
    }
    if (dedicated_buffer) *tail = &dedicated;
    VkResult r = ctx->vk.vkAllocateMemory(ctx->device, &info, NULL, &block->memory);
    if (r < 0) {
        free(block), free(whole);
        gpu_vk_fail(r, "vkAllocateMemory", "%llu bytes", (unsigned long long)size);
        char reason[VKL_ERROR_MAX];
        snprintf(reason, sizeof reason, "%s", vkllm_last_error());
        if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
            return gpu_out_of_memory(ctx, pool->kind, size, type_index, reason);
        return gpu_vk_fail(r, "vkAllocateMemory", "%llu bytes for a %s buffer",
                           (unsigned long long)size, gpu_kind_label(pool->kind));
    }
    if (gpu_is_host_kind(pool->kind)) {
        r = ctx->vk.vkMapMemory(ctx->device, block->memory, 0, VK_WHOLE_SIZE, 0, &block->mapped);
        if (r < 0) {
            ctx->vk.vkFreeMemory(ctx->device, block->memory, NULL);
            free(block), free(whole);
            return gpu_vk_fail(r, "vkMapMemory", "%llu bytes of %s memory",
                               (unsigned long long)size, gpu_kind_label(pool->kind));
        }
    }
    block->size = size;
    block->dedicated = dedicated_buffer != VK_NULL_HANDLE;
    *whole = (gpu_allocation){.block = block, .offset = 0, .size = size, .free = true};
    block->ranges = whole;
    block->next = pool->blocks;
    pool->blocks = block;
    (void)type_index;
    *out = block;
    return VKLLM_OK;
}

static void gpu_block_destroy(gpu_context *ctx, gpu_memory_pool *pool, gpu_block *block) {
    for (gpu_block **p = &pool->blocks; *p; p = &(*p)->next)
        if (*p == block) {
            *p = block->next;
            break;
        }
    if (block->mapped) ctx->vk.vkUnmapMemory(ctx->device, block->memory);
    ctx->vk.vkFreeMemory(ctx->device, block->memory, NULL);
    for (gpu_allocation *a = block->ranges, *next; a; a = next) {
        next = a->next;
        free(a);
    }
    free(block);
}

/* First fit in one block: splits a free range into [padding][taken][rest]. */
static gpu_allocation *gpu_block_take(gpu_block *block, VkDeviceSize size, VkDeviceSize align) {
    for (gpu_allocation *r = block->ranges; r; r = r->next) {
        if (!r->free) continue;
        VkDeviceSize start = gpu_align_up(r->offset, align);
        if (start + size > r->offset + r->size) continue;
        if (start > r->offset) { /* keep the padding as its own free range */
            gpu_allocation *pad = calloc(1, sizeof *pad);
            if (!pad) return NULL;
            *pad = (gpu_allocation){.block = block,
                                    .offset = r->offset,
                                    .size = start - r->offset,
                                    .prev = r->prev,
                                    .next = r,
                                    .free = true};
            if (r->prev)
                r->prev->next = pad;
            else
                block->ranges = pad;
            r->prev = pad;
            r->size -= pad->size;
            r->offset = start;
        }
        if (r->size > size) { /* the rest stays free */
            gpu_allocation *rest = calloc(1, sizeof *rest);
            if (!rest) return NULL;
            *rest = (gpu_allocation){.block = block,
                                     .offset = start + size,
                                     .size = r->size - size,
                                     .prev = r,
                                     .next = r->next,
                                     .free = true};
            if (r->next) r->next->prev = rest;
            r->next = rest;
            r->size = size;
        }
        r->free = false;
        block->used += r->size;
        block->live++;
        return r;
    }
    return NULL;
}

vkllm_status gpu_memory_alloc(gpu_context *ctx, gpu_memory_kind kind,
                              const VkMemoryRequirements *requirements, bool prefer_dedicated,
                              VkBuffer dedicated_buffer, gpu_allocation **out) {
    gpu_memory_pool *pool = &ctx->pools[kind];
    uint32_t type_index = gpu_find_memory_type(ctx, requirements->memoryTypeBits, kind);
    if (type_index == UINT32_MAX)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "no Vulkan memory type suits a %s buffer (memoryTypeBits 0x%x)",
                        gpu_kind_label(kind), requirements->memoryTypeBits);
    if (pool->type_index == UINT32_MAX) {
        pool->type_index = type_index;
        pool->flags = ctx->memory_properties.memoryTypes[type_index].propertyFlags;
        pool->block_size = gpu_block_size_for(ctx, kind, type_index);
    } else if (pool->type_index != type_index) {
        return vkl_fail(VKLLM_ERR_INTERNAL,
                        "%s buffers asked for memory type %u after using type %u",
                        gpu_kind_label(kind), type_index, pool->type_index);
    }
    VkDeviceSize align = requirements->alignment ? requirements->alignment : 1;
    VkDeviceSize size = requirements->size;
    if (gpu_is_host_kind(kind)) {
        VkDeviceSize atom = ctx->info.non_coherent_atom_size ? ctx->info.non_coherent_atom_size : 1;
        if (atom > align) align = atom;
        size = gpu_align_up(size, atom);
    }
    VkDeviceSize heap = gpu_heap_size(ctx, type_index);
    if (size > heap) return gpu_out_of_memory(ctx, kind, size, type_index, "larger than the heap");

    if (prefer_dedicated || size > pool->block_size / 2) {
        VkDeviceSize max_alloc = ctx->info.features.max_allocation_size;
        if (max_alloc && size > max_alloc) {
            char why[160];
            snprintf(why, sizeof why, "larger than maxMemoryAllocationSize %llu bytes",
                     (unsigned long long)max_alloc);
            return gpu_out_of_memory(ctx, kind, size, type_index, why);
        }
        gpu_block *block;
        VKL_TRY(gpu_block_create(ctx, pool, type_index, size, dedicated_buffer, &block));
        gpu_allocation *a = gpu_block_take(block, size, 1);
        if (!a) {
            gpu_block_destroy(ctx, pool, block);
            return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "allocation record");
        }
        *out = a;
        return VKLLM_OK;
    }
    for (gpu_block *b = pool->blocks; b; b = b->next) {
        if (b->dedicated || b->size - b->used < size) continue;
        gpu_allocation *a = gpu_block_take(b, size, align);
        if (a) {
            *out = a;
            return VKLLM_OK;
        }
    }
    gpu_block *block;
    VKL_TRY(gpu_block_create(ctx, pool, type_index, pool->block_size, VK_NULL_HANDLE, &block));
    gpu_allocation *a = gpu_block_take(block, size, align);
    if (!a) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "allocation record");
    *out = a;
    return VKLLM_OK;
}

static gpu_memory_pool *gpu_pool_of(gpu_context *ctx, const gpu_block *block) {
    for (int k = 0; k < 3; k++)
        for (gpu_block *b = ctx->pools[k].blocks; b; b = b->next)
            if (b == block) return &ctx->pools[k];
    return NULL;
}

void gpu_memory_free(gpu_context *ctx, gpu_allocation *a) {
    if (!a || a->free) return;
    gpu_block *block = a->block;
    gpu_memory_pool *pool = gpu_pool_of(ctx, block);
    if (!pool) return;
    block->used -= a->size;
    block->live--;
    a->free = true;
    if (block->dedicated) {
        gpu_block_destroy(ctx, pool, block);
        return;
    }
    gpu_allocation *next = a->next;
    if (next && next->free) { /* absorb the following free range */
        a->size += next->size;
        a->next = next->next;
        if (next->next) next->next->prev = a;
        free(next);
    }
    gpu_allocation *prev = a->prev;
    if (prev && prev->free) { /* and merge into the preceding one */
        prev->size += a->size;
        prev->next = a->next;
        if (a->next) a->next->prev = prev;
        free(a);
    }
    if (block->live == 0) {
        uint32_t empty = 0;
        for (gpu_block *b = pool->blocks; b; b = b->next)
            if (!b->dedicated && b->live == 0) empty++;
        if (empty > 1) gpu_block_destroy(ctx, pool, block);
    }
}

void gpu_memory_destroy_all(gpu_context *ctx) {
    for (int k = 0; k < 3; k++)
        while (ctx->pools[k].blocks)
            gpu_block_destroy(ctx, &ctx->pools[k], ctx->pools[k].blocks);
}

static bool gpu_block_coherent(gpu_context *ctx, const gpu_block *block) {
    const gpu_memory_pool *pool = gpu_pool_of(ctx, block);
    return !pool || (pool->flags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
}

static VkMappedMemoryRange gpu_atom_range(gpu_context *ctx, const gpu_allocation *a,
                                          VkDeviceSize offset, VkDeviceSize size) {
    VkDeviceSize atom = ctx->info.non_coherent_atom_size ? ctx->info.non_coherent_atom_size : 1;
    VkDeviceSize begin = (a->offset + offset) / atom * atom;
    VkDeviceSize end = gpu_align_up(a->offset + offset + size, atom);
    if (end > a->block->size) end = a->block->size;
    return (VkMappedMemoryRange){.sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
                                 .memory = a->block->memory,
                                 .offset = begin,
                                 .size = end - begin};
}

void gpu_memory_flush(gpu_context *ctx, const gpu_allocation *a, VkDeviceSize offset,
                      VkDeviceSize size) {
    if (!a || gpu_block_coherent(ctx, a->block)) return;
    VkMappedMemoryRange range = gpu_atom_range(ctx, a, offset, size);
    ctx->vk.vkFlushMappedMemoryRanges(ctx->device, 1, &range);
}

void gpu_memory_invalidate(gpu_context *ctx, const gpu_allocation *a, VkDeviceSize offset,
                           VkDeviceSize size) {
    if (!a || gpu_block_coherent(ctx, a->block)) return;
    VkMappedMemoryRange range = gpu_atom_range(ctx, a, offset, size);
    ctx->vk.vkInvalidateMappedMemoryRanges(ctx->device, 1, &range);
}

bool gpu_memory_budget(const gpu_context *ctx, uint64_t *budget, uint64_t *usage) {
    const VkPhysicalDeviceMemoryProperties *mp = &ctx->memory_properties;
    uint32_t heap = 0;
    for (uint32_t i = 0; i < mp->memoryHeapCount; i++)
        if ((mp->memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            mp->memoryHeaps[i].size > mp->memoryHeaps[heap].size)
            heap = i;
    *budget = mp->memoryHeaps[heap].size;
    *usage = gpu_memory_in_use(ctx);
    if (!ctx->info.features.memory_budget) return false;
    VkPhysicalDeviceMemoryBudgetPropertiesEXT b = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
    VkPhysicalDeviceMemoryProperties2 props = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2, .pNext = &b};
    vkGetPhysicalDeviceMemoryProperties2(ctx->physical, &props);
    *budget = b.heapBudget[heap];
    *usage = b.heapUsage[heap];
    return true;
}
