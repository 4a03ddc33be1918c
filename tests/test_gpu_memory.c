/* test_gpu_memory.c: the block allocator behind gpu_buffer_create.
 *
 * The stress test creates and destroys buffers of random sizes and kinds (seeded)
 * and after every step checks, from the allocation records, that no two live
 * ranges in one VkDeviceMemory overlap, that offsets respect the Vulkan alignment
 * (and nonCoherentAtomSize for host-visible kinds), and that the accounting
 * (gpu_memory_get_stats) equals the sum of the live ranges. Each live buffer is
 * filled with its own word on the GPU and checked at the end, so an overlap the
 * records missed would still show up in the data. Out-of-memory requests must fail
 * with VKLLM_ERR_OUT_OF_DEVICE_MEMORY and a message with the sizes. */
// links: gpu
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_gpu.h"
#include "common/test_util.h"
#include "gpu/gpu_internal.h"

TestSuite(gpu_memory, .fini = test_gpu_check_validation);

typedef struct live_buffer {
    gpu_buffer buffer;
    uint32_t word;
    bool used;
} live_buffer;

static void check_no_overlap(gpu_context *ctx, const live_buffer *live, int n) {
    const gpu_features *f = gpu_context_features(ctx);
    for (int i = 0; i < n; i++) {
        if (!live[i].used) continue;
        const gpu_allocation *a = live[i].buffer.allocation;
        cr_assert(!a->free, "live buffer %d has a free range", i);
        cr_assert_geq(a->size, live[i].buffer.size);
        cr_assert_leq(a->offset + a->size, a->block->size);
        VkMemoryRequirements req;
        ctx->vk.vkGetBufferMemoryRequirements(ctx->device, (VkBuffer)live[i].buffer.handle, &req);
        cr_assert_eq(a->offset % req.alignment, 0u, "offset %llu vs alignment %llu",
                     (unsigned long long)a->offset, (unsigned long long)req.alignment);
        if (live[i].buffer.kind != GPU_MEMORY_DEVICE)
            cr_assert_eq(a->offset % f->non_coherent_atom_size, 0u);
        for (int j = i + 1; j < n; j++) {
            if (!live[j].used) continue;
            const gpu_allocation *b = live[j].buffer.allocation;
            if (a->block != b->block) continue;
            bool disjoint = a->offset + a->size <= b->offset || b->offset + b->size <= a->offset;
            cr_assert(disjoint, "buffers %d [%llu,+%llu) and %d [%llu,+%llu) overlap", i,
                      (unsigned long long)a->offset, (unsigned long long)a->size, j,
                      (unsigned long long)b->offset, (unsigned long long)b->size);
        }
    }
    /* the records of every block tile it exactly, with no two adjacent free ranges */
    gpu_memory_stats stats = gpu_memory_get_stats(ctx);
    uint64_t used = 0;
    uint32_t count = 0;
    for (int k = 0; k < 3; k++)
        for (const gpu_block *b = ctx->pools[k].blocks; b; b = b->next) {
            VkDeviceSize at = 0, block_used = 0;
            bool previous_free = false;
            for (const gpu_allocation *r = b->ranges; r; r = r->next) {
                cr_assert_eq(r->offset, at, "ranges tile the block");
                cr_assert(!(r->free && previous_free), "adjacent free ranges are merged");
                previous_free = r->free;
                if (!r->free) block_used += r->size, count++;
                at += r->size;
            }
            cr_assert_eq(at, b->size);
            cr_assert_eq(block_used, b->used);
            used += block_used;
        }
    uint64_t stats_used = stats.used[0] + stats.used[1] + stats.used[2];
    uint32_t stats_live = stats.live_buffers[0] + stats.live_buffers[1] + stats.live_buffers[2];
    cr_assert_eq(stats_used, used);
    cr_assert_eq(stats_live, count);
}

Test(gpu_memory, random_create_destroy_stress) {
    gpu_context *ctx = test_gpu();
    const uint64_t seed = 4242;
    test_rng rng = test_rng_seeded(seed);
    { /* staging buffers are created on first use: make them exist before the baseline */
        gpu_buffer warm;
        uint32_t w = 0;
        cr_assert(gpu_buffer_create(ctx, 4, GPU_MEMORY_DEVICE, &warm) == VKLLM_OK);
        cr_assert(gpu_upload(ctx, &warm, 0, &w, 4) == VKLLM_OK);
        cr_assert(gpu_download(ctx, &warm, 0, &w, 4) == VKLLM_OK);
        gpu_buffer_destroy(ctx, &warm);
    }
    gpu_memory_stats base = gpu_memory_get_stats(ctx);
    uint64_t base_in_use = gpu_memory_in_use(ctx);
    enum { SLOTS = 48, STEPS = 400 };
    live_buffer live[SLOTS];
    memset(live, 0, sizeof live);
    for (int step = 0; step < STEPS; step++) {
        int i = (int)test_rng_below(&rng, SLOTS);
        if (live[i].used) {
            gpu_buffer_destroy(ctx, &live[i].buffer);
            live[i].used = false;
        } else {
            /* mostly small, some mid-size, a few larger than half a block (dedicated) */
            uint32_t r = test_rng_below(&rng, 100);
            uint64_t size = r < 70   ? 1 + test_rng_below(&rng, 70000)
                            : r < 97 ? 1 + test_rng_below(&rng, 8u << 20)
                                     : (140u << 20) + test_rng_below(&rng, 1000);
            gpu_memory_kind kind = (gpu_memory_kind)test_rng_below(&rng, 3);
            if (size > (64u << 20)) kind = GPU_MEMORY_DEVICE;
            vkllm_status s = gpu_buffer_create(ctx, size, kind, &live[i].buffer);
            cr_assert(s == VKLLM_OK, "seed %llu step %d: %s", (unsigned long long)seed, step,
                      vkllm_last_error());
            live[i].used = true;
            live[i].word = (uint32_t)test_rng_next(&rng);
            gpu_cmd *cmd;
            cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
            gpu_cmd_fill(cmd, &live[i].buffer, 0, size & ~(uint64_t)3, live[i].word);
            cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
        }
        check_no_overlap(ctx, live, SLOTS);
    }
    /* every live buffer still holds its own word (sampled: first, middle, last word) */
    for (int i = 0; i < SLOTS; i++) {
        if (!live[i].used) continue;
        uint64_t words = live[i].buffer.size / 4;
        if (!words) continue;
        uint64_t at[3] = {0, words / 2, words - 1};
        for (int j = 0; j < 3; j++) {
            uint32_t w;
            cr_assert(gpu_download(ctx, &live[i].buffer, at[j] * 4, &w, 4) == VKLLM_OK);
            cr_assert_eq(w, live[i].word, "seed %llu buffer %d word %llu overwritten",
                         (unsigned long long)seed, i, (unsigned long long)at[j]);
        }
        gpu_buffer_destroy(ctx, &live[i].buffer);
        live[i].used = false;
    }
    gpu_memory_stats end = gpu_memory_get_stats(ctx);
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(end.used[k], base.used[k], "kind %d: used bytes back to the baseline", k);
        cr_assert_eq(end.live_buffers[k], base.live_buffers[k]);
        cr_assert_eq(end.dedicated[k], base.dedicated[k], "dedicated allocations freed");
        cr_assert_leq(end.blocks[k], base.blocks[k] + 1, "at most one spare block kept");
    }
    cr_assert_leq(gpu_memory_in_use(ctx), base_in_use + ((uint64_t)256 << 20) * 3,
                  "in-use memory returns to the baseline plus spare blocks");
}

Test(gpu_memory, in_use_tracks_large_buffers) {
    gpu_context *ctx = test_gpu();
    uint64_t before = gpu_memory_in_use(ctx);
    const uint64_t size = (uint64_t)300 << 20;
    gpu_buffer big;
    cr_assert(gpu_buffer_create(ctx, size, GPU_MEMORY_DEVICE, &big) == VKLLM_OK, "%s",
              vkllm_last_error());
    cr_assert_geq(gpu_memory_in_use(ctx), before + size);
    gpu_memory_stats s = gpu_memory_get_stats(ctx);
    cr_assert_geq(s.dedicated[GPU_MEMORY_DEVICE], 1u, "a buffer larger than a block is dedicated");
    gpu_buffer_destroy(ctx, &big);
    cr_assert_eq(gpu_memory_in_use(ctx), before);
}

Test(gpu_memory, absurd_sizes_fail_with_sizes_in_message) {
    gpu_context *ctx = test_gpu();
    gpu_buffer b;
    const uint64_t tib = (uint64_t)1 << 40;
    cr_assert_eq(gpu_buffer_create(ctx, tib, GPU_MEMORY_DEVICE, &b),
                 VKLLM_ERR_OUT_OF_DEVICE_MEMORY);
    cr_assert(strstr(vkllm_last_error(), "1099511627776") &&
                  strstr(vkllm_last_error(), "out of device memory"),
              "%s", vkllm_last_error());
    cr_assert_null(b.handle);
    /* larger than the heap but within maxBufferSize (where the device has one) */
    const gpu_features *f = gpu_context_features(ctx);
    uint64_t over_heap = f->device_local_bytes + ((uint64_t)1 << 20);
    if (!f->max_buffer_size || over_heap <= f->max_buffer_size) {
        cr_assert_eq(gpu_buffer_create(ctx, over_heap, GPU_MEMORY_DEVICE, &b),
                     VKLLM_ERR_OUT_OF_DEVICE_MEMORY);
        char expected[64];
        snprintf(expected, sizeof expected, "%llu", (unsigned long long)f->device_local_bytes);
        cr_assert(strstr(vkllm_last_error(), expected), "heap size in: %s", vkllm_last_error());
    }
    /* the context still works afterwards */
    cr_assert(gpu_buffer_create(ctx, 1000, GPU_MEMORY_UPLOAD, &b) == VKLLM_OK);
    gpu_buffer_destroy(ctx, &b);
}

Test(gpu_memory, host_kinds_are_mapped_and_coherent_enough) {
    gpu_context *ctx = test_gpu();
    gpu_buffer up, down;
    cr_assert(gpu_buffer_create(ctx, 4096, GPU_MEMORY_UPLOAD, &up) == VKLLM_OK);
    cr_assert(gpu_buffer_create(ctx, 4096, GPU_MEMORY_READBACK, &down) == VKLLM_OK);
    cr_assert_not_null(up.mapped);
    cr_assert_not_null(down.mapped);
    for (int i = 0; i < 1024; i++)
        ((uint32_t *)up.mapped)[i] = (uint32_t)i * 2654435761u;
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_cmd_copy(cmd, &up, 0, &down, 0, 4096);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
    uint32_t back[1024];
    cr_assert(gpu_download(ctx, &down, 0, back, sizeof back) == VKLLM_OK);
    for (int i = 0; i < 1024; i++)
        cr_assert_eq(back[i], (uint32_t)i * 2654435761u, "word %d", i);
    gpu_buffer_destroy(ctx, &up);
    gpu_buffer_destroy(ctx, &down);
}

Test(gpu_memory, budget_is_plausible) {
    gpu_context *ctx = test_gpu();
    gpu_buffer b;
    cr_assert(gpu_buffer_create(ctx, 1 << 20, GPU_MEMORY_DEVICE, &b) == VKLLM_OK);
    uint64_t budget = 0, usage = 0;
    bool reported = gpu_memory_budget(ctx, &budget, &usage);
    cr_assert_eq(reported, gpu_context_features(ctx)->memory_budget);
    cr_assert_gt(budget, 0u);
    cr_assert_leq(budget, gpu_context_features(ctx)->device_local_bytes);
    cr_assert_geq(usage, (uint64_t)1 << 20, "our buffer counts: usage %llu",
                  (unsigned long long)usage);
    gpu_buffer_destroy(ctx, &b);
}
