/* test_gpu.c: one validated gpu_context per test process (see test_gpu.h). */
#include "test_gpu.h"

#include <criterion/criterion.h>
#include <stdlib.h>

#include "test_util.h"

static gpu_context *shared_context;

static void destroy_shared_context(void) {
    if (shared_context) gpu_context_destroy(shared_context);
    shared_context = NULL;
}

gpu_context *test_gpu(void) {
    if (!shared_context) {
        gpu_context_options options = {.validation = true,
                                       .pipeline_cache_dir = getenv("VKLLM_PIPELINE_CACHE_DIR")};
        vkllm_status status = gpu_context_create(&options, &shared_context);
        cr_assert(status == VKLLM_OK, "gpu_context_create: %s", vkllm_last_error());
        atexit(destroy_shared_context);
    }
    return shared_context;
}

void test_gpu_check_validation(void) {
    if (!shared_context) return;
    cr_assert(gpu_validation_errors(shared_context) == 0, "%u Vulkan validation error(s)",
              gpu_validation_errors(shared_context));
}

gpu_buffer test_gpu_buffer_from(const void *data, uint64_t size) {
    gpu_buffer buffer;
    vkllm_status status = gpu_buffer_create(test_gpu(), size, GPU_MEMORY_DEVICE, &buffer);
    cr_assert(status == VKLLM_OK, "gpu_buffer_create(%llu): %s", (unsigned long long)size,
              vkllm_last_error());
    status = gpu_upload(test_gpu(), &buffer, 0, data, size);
    cr_assert(status == VKLLM_OK, "gpu_upload: %s", vkllm_last_error());
    return buffer;
}

gpu_buffer test_gpu_buffer_poisoned(uint64_t size) {
    gpu_buffer buffer;
    vkllm_status status = gpu_buffer_create(test_gpu(), size, GPU_MEMORY_DEVICE, &buffer);
    cr_assert(status == VKLLM_OK, "gpu_buffer_create(%llu): %s", (unsigned long long)size,
              vkllm_last_error());
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(test_gpu(), &cmd) == VKLLM_OK, "%s", vkllm_last_error());
    gpu_cmd_fill(cmd, &buffer, 0, size & ~(uint64_t)3, TEST_POISON_WORD);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    return buffer;
}

void test_gpu_read(const gpu_buffer *buffer, void *out, uint64_t size) {
    vkllm_status status = gpu_download(test_gpu(), buffer, 0, out, size);
    cr_assert(status == VKLLM_OK, "gpu_download: %s", vkllm_last_error());
}

void test_gpu_free(gpu_buffer *buffer) {
    gpu_buffer_destroy(test_gpu(), buffer);
}

gpu_pipeline *test_gpu_pipeline(const gpu_pipeline_desc *desc) {
    gpu_pipeline *pipeline = NULL;
    vkllm_status status = gpu_pipeline_get(test_gpu(), desc, &pipeline);
    cr_assert(status == VKLLM_OK, "pipeline %s: %s", desc->shader, vkllm_last_error());
    return pipeline;
}
