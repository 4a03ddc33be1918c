/* test_gpu_buffer.c: buffers, gpu_upload/gpu_download through staging, and the
 * copy_vec4 kernel over a buffer larger than maxStorageBufferRange.
 *
 * Data is random bytes from a seeded test_rng (seed in messages); every readback
 * is compared byte for byte with the host copy. Destinations start poisoned so a
 * byte that was never written fails. Sizes include odd ones (not multiples of 4),
 * sizes just around the staging piece size (16 MiB) and a 160 MiB buffer that is
 * larger than the 128 MiB one binding may cover on lavapipe. */
// links: gpu
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_gpu.h"
#include "common/test_util.h"

TestSuite(gpu_buffer, .fini = test_gpu_check_validation);

static void fill_random(test_rng *rng, uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = test_rng_next(rng);
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] = (uint8_t)test_rng_next(rng);
}

static size_t first_difference(const uint8_t *a, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return i;
    return n;
}

static void round_trip(gpu_memory_kind kind, uint64_t size, uint64_t seed) {
    gpu_context *ctx = test_gpu();
    test_rng rng = test_rng_seeded(seed);
    uint8_t *data = malloc(size), *back = malloc(size);
    cr_assert(data && back);
    fill_random(&rng, data, size);
    memset(back, 0xa5, size);
    gpu_buffer buffer;
    cr_assert(gpu_buffer_create(ctx, size, kind, &buffer) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(buffer.size, size);
    cr_assert_eq(buffer.mapped != NULL, kind != GPU_MEMORY_DEVICE, "mapped only for host kinds");
    cr_assert(gpu_upload(ctx, &buffer, 0, data, size) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(gpu_download(ctx, &buffer, 0, back, size) == VKLLM_OK, "%s", vkllm_last_error());
    size_t bad = first_difference(data, back, size);
    cr_assert_eq(bad, size, "kind %d size %llu seed %llu: first difference at byte %zu", kind,
                 (unsigned long long)size, (unsigned long long)seed, bad);
    /* a sub-range at an odd offset */
    if (size > 10) {
        uint64_t offset = size / 3 + 1, n = size / 2 - 3;
        memset(back, 0, n);
        cr_assert(gpu_download(ctx, &buffer, offset, back, n) == VKLLM_OK, "%s",
                  vkllm_last_error());
        bad = first_difference(data + offset, back, n);
        cr_assert_eq(bad, n, "sub-range at %llu: difference at %zu", (unsigned long long)offset,
                     bad);
        /* overwrite a sub-range and check the neighbours kept their bytes */
        fill_random(&rng, data + offset, n);
        cr_assert(gpu_upload(ctx, &buffer, offset, data + offset, n) == VKLLM_OK, "%s",
                  vkllm_last_error());
        cr_assert(gpu_download(ctx, &buffer, 0, back, size) == VKLLM_OK, "%s", vkllm_last_error());
        bad = first_difference(data, back, size);
        cr_assert_eq(bad, size, "after partial upload: difference at byte %zu", bad);
    }
    gpu_buffer_destroy(ctx, &buffer);
    cr_assert_null(buffer.handle, "destroy clears the struct");
    free(data);
    free(back);
}

Test(gpu_buffer, round_trip_small_odd_sizes) {
    const uint64_t sizes[] = {1, 3, 4, 5, 63, 64, 65, 1000, 4097, 65537};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        round_trip(GPU_MEMORY_DEVICE, sizes[i], 100 + i);
        round_trip(GPU_MEMORY_UPLOAD, sizes[i], 200 + i);
        round_trip(GPU_MEMORY_READBACK, sizes[i], 300 + i);
    }
}

Test(gpu_buffer, round_trip_across_staging_pieces) {
    /* the staging slot is 16 MiB: one byte less, exactly, one more, several pieces */
    const uint64_t mib = 1 << 20;
    const uint64_t sizes[] = {16 * mib - 1, 16 * mib, 16 * mib + 1, 50 * mib + 7};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        round_trip(GPU_MEMORY_DEVICE, sizes[i], 400 + i);
}

Test(gpu_buffer, out_of_range_copies_fail_clearly) {
    gpu_context *ctx = test_gpu();
    gpu_buffer buffer;
    cr_assert(gpu_buffer_create(ctx, 100, GPU_MEMORY_DEVICE, &buffer) == VKLLM_OK);
    uint8_t data[128] = {0};
    cr_assert_eq(gpu_upload(ctx, &buffer, 90, data, 11), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "outside the buffer of 100 bytes"), "%s",
              vkllm_last_error());
    cr_assert_eq(gpu_download(ctx, &buffer, 101, data, 0), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gpu_upload(ctx, &buffer, 100, data, 0), VKLLM_OK, "empty copy at the end");
    gpu_buffer_destroy(ctx, &buffer);
    cr_assert_eq(gpu_buffer_create(ctx, 0, GPU_MEMORY_DEVICE, &buffer), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "size 0"), "%s", vkllm_last_error());
}

/* 160 MiB: more than one binding may cover, so copy_vec4 runs over two bound ranges. */
Test(gpu_buffer, large_buffer_copy_in_two_ranges) {
    gpu_context *ctx = test_gpu();
    const gpu_features *f = gpu_context_features(ctx);
    const uint64_t size = (uint64_t)160 << 20;
    const uint64_t seed = 77;
    test_rng rng = test_rng_seeded(seed);
    uint8_t *data = malloc(size), *back = malloc(size);
    cr_assert(data && back);
    fill_random(&rng, data, size);

    gpu_buffer src, dst;
    cr_assert(gpu_buffer_create(ctx, size, GPU_MEMORY_DEVICE, &src) == VKLLM_OK, "%s",
              vkllm_last_error());
    dst = test_gpu_buffer_poisoned(size);
    cr_assert(gpu_upload(ctx, &src, 0, data, size) == VKLLM_OK, "%s", vkllm_last_error());

    gpu_pipeline_desc desc = {.shader = "copy_vec4", .num_bindings = 2, .push_constant_size = 4};
    gpu_pipeline *copy = test_gpu_pipeline(&desc);
    /* the first range covers as much as one binding may (rounded to the alignment) */
    uint64_t first = f->max_storage_buffer_range < size ? f->max_storage_buffer_range : size / 2;
    first = first / 256 * 256;
    uint64_t ranges[2][2] = {{0, first}, {first, size - first}};
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    for (int r = 0; r < 2; r++) {
        gpu_binding b[2] = {
            {.buffer = &src, .offset = ranges[r][0], .range = ranges[r][1]},
            {.buffer = &dst, .offset = ranges[r][0], .range = ranges[r][1], .writable = true},
        };
        uint32_t count = (uint32_t)(ranges[r][1] / 16);
        gpu_cmd_dispatch(cmd, copy, b, 2, &count, 4, 1024, 1, 1);
    }
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    memset(back, 0, size);
    cr_assert(gpu_download(ctx, &dst, 0, back, size) == VKLLM_OK, "%s", vkllm_last_error());
    size_t bad = first_difference(data, back, size);
    cr_assert_eq(bad, size, "seed %llu: first difference at byte %zu (range split at %llu)",
                 (unsigned long long)seed, bad, (unsigned long long)first);
    gpu_buffer_destroy(ctx, &src);
    gpu_buffer_destroy(ctx, &dst);
    free(data);
    free(back);
}

Test(gpu_buffer, binding_beyond_storage_range_is_rejected) {
    gpu_context *ctx = test_gpu();
    const gpu_features *f = gpu_context_features(ctx);
    uint64_t size = f->max_storage_buffer_range + 4096;
    if (size > f->max_allocation_size)
        cr_skip("a buffer beyond maxStorageBufferRange (%llu bytes) exceeds "
                "maxMemoryAllocationSize (%llu bytes) here",
                (unsigned long long)f->max_storage_buffer_range,
                (unsigned long long)f->max_allocation_size);
    gpu_buffer a, b;
    cr_assert(gpu_buffer_create(ctx, size, GPU_MEMORY_DEVICE, &a) == VKLLM_OK, "%s",
              vkllm_last_error());
    cr_assert(gpu_buffer_create(ctx, 4096, GPU_MEMORY_DEVICE, &b) == VKLLM_OK);
    gpu_pipeline_desc desc = {.shader = "copy_vec4", .num_bindings = 2, .push_constant_size = 4};
    gpu_pipeline *copy = test_gpu_pipeline(&desc);
    uint32_t count = 1;
    gpu_cmd *cmd;
    /* an explicit range over the limit fails at submit with a message */
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_binding too_big[2] = {{.buffer = &a, .range = size}, {.buffer = &b, .writable = true}};
    gpu_cmd_dispatch(cmd, copy, too_big, 2, &count, 4, 1, 1, 1);
    cr_assert_eq(gpu_cmd_submit(cmd), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "maxStorageBufferRange"), "%s", vkllm_last_error());
    /* a misaligned offset too */
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_binding misaligned[2] = {{.buffer = &a, .offset = 4, .range = 64},
                                 {.buffer = &b, .writable = true}};
    gpu_cmd_dispatch(cmd, copy, misaligned, 2, &count, 4, 1, 1, 1);
    cr_assert_eq(gpu_cmd_submit(cmd), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "minStorageBufferOffsetAlignment"), "%s",
              vkllm_last_error());
    /* range 0 means "to the end", clamped to the limit: valid (and validation-clean) */
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_binding whole[2] = {{.buffer = &a}, {.buffer = &b, .writable = true}};
    gpu_cmd_dispatch(cmd, copy, whole, 2, &count, 4, 1, 1, 1);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    gpu_buffer_destroy(ctx, &a);
    gpu_buffer_destroy(ctx, &b);
}

Test(gpu_buffer, device_address_when_available) {
    gpu_context *ctx = test_gpu();
    gpu_buffer a;
    cr_assert(gpu_buffer_create(ctx, 256, GPU_MEMORY_DEVICE, &a) == VKLLM_OK);
    uint64_t address = gpu_buffer_device_address(ctx, &a);
    if (gpu_context_features(ctx)->buffer_device_address)
        cr_assert_neq(address, 0, "buffer_device_address is reported but the address is 0");
    else
        cr_assert_eq(address, 0);
    gpu_buffer_destroy(ctx, &a);
}
