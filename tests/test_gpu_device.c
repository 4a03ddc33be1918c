/* test_gpu_device.c: device discovery and choice, the feature set, the
 * VkResult -> status mapping and the validation-layer counter.
 *
 * Features are checked against the Vulkan spec's guaranteed minimums (and, on
 * lavapipe, against what that driver is known to report: subgroup size 8,
 * 128 MiB storage range, 32 KiB shared memory). Device selection is driven
 * through VKLLM_DEVICE and gpu_context_options.device. */
// links: gpu
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_gpu.h"
#include "gpu/gpu_internal.h"

TestSuite(gpu_device, .fini = test_gpu_check_validation);

static bool is_power_of_two(uint64_t x) {
    return x && !(x & (x - 1));
}

Test(gpu_device, features_are_sane) {
    const gpu_features *f = gpu_context_features(test_gpu());
    cr_assert(f->name[0], "device has a name");
    cr_assert(f->driver[0], "driver described");
    cr_assert_geq(f->api_version, VK_API_VERSION_1_1);
    cr_assert(is_power_of_two(f->subgroup_size), "subgroup size %u", f->subgroup_size);
    cr_assert(f->subgroup_min_size <= f->subgroup_size && f->subgroup_size <= f->subgroup_max_size,
              "subgroup %u in [%u, %u]", f->subgroup_size, f->subgroup_min_size,
              f->subgroup_max_size);
    /* Vulkan's required minimums */
    cr_assert_geq(f->max_storage_buffer_range, (uint64_t)1 << 27);
    cr_assert_geq(f->max_shared_memory, 16384u);
    cr_assert_geq(f->max_push_constants_size, 128u);
    cr_assert_geq(f->max_workgroup_invocations, 128u);
    cr_assert_geq(f->max_workgroup_count[0], 65535u);
    cr_assert(is_power_of_two(f->min_storage_offset_alignment) &&
                  f->min_storage_offset_alignment <= 256,
              "storage offset alignment %llu", (unsigned long long)f->min_storage_offset_alignment);
    cr_assert(is_power_of_two(f->non_coherent_atom_size) && f->non_coherent_atom_size <= 256);
    cr_assert_geq(f->max_allocation_size, (uint64_t)1 << 30, "maxMemoryAllocationSize >= 1 GiB");
    cr_assert_gt(f->device_local_bytes, 0);
    cr_assert(f->subgroup_basic, "Vulkan 1.1 requires basic subgroup ops in compute");
    if (f->timestamps) cr_assert_gt(f->timestamp_period_ns, 0.0f);
    if (f->coopmat_nv) cr_assert_gt(f->num_coopmat_nv_shapes, 0);
    if (strstr(f->name, "llvmpipe")) {
        cr_assert_eq(f->kind, GPU_KIND_CPU);
        cr_assert_eq(f->subgroup_size, 8u);
        cr_assert_eq(f->max_storage_buffer_range, (uint64_t)128 << 20);
        cr_assert_eq(f->max_shared_memory, 32768u);
        cr_assert(f->fp16_arithmetic && f->storage16 && f->storage8 && f->int8_arithmetic);
        cr_assert(f->subgroup_arithmetic && f->subgroup_shuffle && f->subgroup_ballot);
        cr_assert(f->push_descriptor, "lavapipe has VK_KHR_push_descriptor");
        cr_assert(strstr(f->driver, "Mesa"), "driver: %s", f->driver);
        cr_assert(!f->coopmat_nv && !f->coopmat_khr);
    }
}

Test(gpu_device, list_matches_context) {
    gpu_features *list;
    uint32_t count;
    cr_assert(gpu_list_devices(&list, &count) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_geq(count, 1u);
    const gpu_features *f = gpu_context_features(test_gpu());
    bool found = false;
    for (uint32_t i = 0; i < count; i++)
        if (!strcmp(list[i].name, f->name) && list[i].device_id == f->device_id) {
            found = true;
            cr_assert_eq(list[i].subgroup_size, f->subgroup_size);
            cr_assert_eq(list[i].max_storage_buffer_range, f->max_storage_buffer_range);
            cr_assert_eq(list[i].fp16_arithmetic, f->fp16_arithmetic);
        }
    cr_assert(found, "the context's device %s is in gpu_list_devices", f->name);
    char text[8192];
    FILE *out = fmemopen(text, sizeof text, "w");
    gpu_features_print(&list[0], out);
    fclose(out);
    cr_assert(strstr(text, list[0].name) && strstr(text, "subgroup size") &&
                  strstr(text, "storage buffer range"),
              "printout:\n%s", text);
    free(list);
}

/* Creates a context with VKLLM_DEVICE=value and returns the status (context destroyed). */
static vkllm_status create_with_env(const char *value, const char *option, char *name_out) {
    setenv("VKLLM_DEVICE", value, 1);
    gpu_context_options options = {.device = option, .validation = true, .pipeline_cache_dir = ""};
    gpu_context *ctx = NULL;
    vkllm_status status = gpu_context_create(&options, &ctx);
    unsetenv("VKLLM_DEVICE");
    if (status == VKLLM_OK) {
        snprintf(name_out, 256, "%s", gpu_context_features(ctx)->name);
        cr_assert_eq(gpu_validation_errors(ctx), 0u);
        gpu_context_destroy(ctx);
    }
    return status;
}

Test(gpu_device, choose_by_name_and_index) {
    gpu_features *list;
    uint32_t count;
    cr_assert(gpu_list_devices(&list, &count) == VKLLM_OK);
    char name[256];
    cr_assert(create_with_env("0", NULL, name) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_str_eq(name, list[0].name, "index 0 is the first listed device");
    if (strstr(list[0].name, "llvmpipe")) {
        cr_assert(create_with_env("LLVMPIPE", NULL, name) == VKLLM_OK, "%s", vkllm_last_error());
        cr_assert(strstr(name, "llvmpipe"), "chose %s", name);
        cr_assert(create_with_env("llvmpipe", NULL, name) == VKLLM_OK, "%s", vkllm_last_error());
    }
    /* the option beats the environment */
    cr_assert(create_with_env("no-such-device", "0", name) == VKLLM_OK, "%s", vkllm_last_error());
    uint32_t index = 99;
    cr_assert(gpu_pick_device(list, count, "0", &index) == VKLLM_OK);
    cr_assert_eq(index, 0u);
    free(list);
}

Test(gpu_device, bad_device_lists_devices) {
    gpu_features *list;
    uint32_t count;
    cr_assert(gpu_list_devices(&list, &count) == VKLLM_OK);
    char name[256];
    cr_assert_eq(create_with_env("no-such-gpu-xyz", NULL, name), VKLLM_ERR_NO_DEVICE);
    const char *message = vkllm_last_error();
    cr_assert(strstr(message, "VKLLM_DEVICE") && strstr(message, "no-such-gpu-xyz") &&
                  strstr(message, list[0].name),
              "message names the variable, the value and the devices: %s", message);
    char index[16];
    snprintf(index, sizeof index, "%u", count);
    cr_assert_eq(create_with_env(index, NULL, name), VKLLM_ERR_NO_DEVICE);
    cr_assert(strstr(vkllm_last_error(), "index out of range"), "%s", vkllm_last_error());
    cr_assert_eq(create_with_env("", "nope-not-a-device", name), VKLLM_ERR_NO_DEVICE);
    cr_assert(strstr(vkllm_last_error(), "gpu_context_options.device"), "%s", vkllm_last_error());
    free(list);
}

Test(gpu_device, vk_results_map_to_statuses) {
    cr_assert_eq(gpu_vk_fail(VK_ERROR_OUT_OF_DEVICE_MEMORY, "vkAllocateMemory", "%d bytes", 42),
                 VKLLM_ERR_OUT_OF_DEVICE_MEMORY);
    cr_assert(strstr(vkllm_last_error(), "vkAllocateMemory") &&
                  strstr(vkllm_last_error(), "VK_ERROR_OUT_OF_DEVICE_MEMORY") &&
                  strstr(vkllm_last_error(), "42 bytes"),
              "%s", vkllm_last_error());
    cr_assert_eq(gpu_vk_fail(VK_ERROR_DEVICE_LOST, "vkQueueSubmit", "x"), VKLLM_ERR_DEVICE_LOST);
    cr_assert_eq(gpu_vk_fail(VK_ERROR_OUT_OF_HOST_MEMORY, "vkCreateBuffer", "x"),
                 VKLLM_ERR_OUT_OF_HOST_MEMORY);
    cr_assert_eq(gpu_vk_fail(VK_ERROR_EXTENSION_NOT_PRESENT, "vkCreateDevice", "x"),
                 VKLLM_ERR_UNSUPPORTED);
    cr_assert_eq(gpu_vk_fail(VK_ERROR_INCOMPATIBLE_DRIVER, "vkCreateInstance", "x"),
                 VKLLM_ERR_NO_DEVICE);
    cr_assert_eq(gpu_vk_fail(VK_ERROR_INITIALIZATION_FAILED, "vkCreateDevice", "x"),
                 VKLLM_ERR_VULKAN);
    cr_assert(strstr(vkllm_last_error(), "VK_ERROR_INITIALIZATION_FAILED"), "%s",
              vkllm_last_error());
    cr_assert_str_eq(gpu_vk_result_name(VK_ERROR_FRAGMENTED_POOL), "VK_ERROR_FRAGMENTED_POOL");
    cr_assert_str_eq(gpu_vk_result_name((VkResult)-123456), "VK_RESULT_UNKNOWN");
}

/* The counter really counts: a deliberate misuse on a private context. */
Test(gpu_device, validation_errors_are_counted) {
    gpu_context_options options = {.validation = true, .pipeline_cache_dir = ""};
    gpu_context *ctx;
    cr_assert(gpu_context_create(&options, &ctx) == VKLLM_OK, "%s", vkllm_last_error());
    if (!gpu_validation_enabled(ctx)) {
        gpu_context_destroy(ctx);
        cr_skip_test("VK_LAYER_KHRONOS_validation is not installed");
    }
    cr_assert_eq(gpu_validation_errors(ctx), 0u);
    fprintf(stderr, "(the next validation error is expected)\n");
    /* VUID-VkBufferCreateInfo-size-00912: size must be greater than 0 */
    VkBufferCreateInfo info = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                               .size = 0,
                               .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT};
    VkBuffer buffer = VK_NULL_HANDLE;
    VkResult r = ctx->vk.vkCreateBuffer(ctx->device, &info, NULL, &buffer);
    if (r == VK_SUCCESS && buffer) ctx->vk.vkDestroyBuffer(ctx->device, buffer, NULL);
    cr_assert_geq(gpu_validation_errors(ctx), 1u, "the layer's error was counted");
    gpu_context_destroy(ctx);
}

Test(gpu_device, missing_validation_layer_only_warns) {
    setenv("VK_LAYER_PATH", "/nonexistent-vkllm-layer-dir", 1);
    gpu_context_options options = {.validation = true, .pipeline_cache_dir = ""};
    gpu_context *ctx = NULL;
    vkllm_status status = gpu_context_create(&options, &ctx);
    unsetenv("VK_LAYER_PATH");
    cr_assert(status == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(!gpu_validation_enabled(ctx), "no layer found, so validation is off");
    cr_assert_eq(gpu_validation_errors(ctx), 0u);
    gpu_context_destroy(ctx);
}
