/* test_gpu.h: the Vulkan context every GPU test shares.
 *
 * test_gpu() creates one gpu_context per test process (validation layer on)
 * the first time it is called; test_gpu_check_validation() asserts that the
 * validation layer reported no error so far. Use TEST_GPU_FINI as the .fini
 * of GPU tests so every test case ends with that check. */
#ifndef VKL_TEST_GPU_H
#define VKL_TEST_GPU_H

#include "gpu/gpu.h"

gpu_context *test_gpu(void);
void test_gpu_check_validation(void);

/* Helpers built on gpu.h: device buffers from host data and back. */
gpu_buffer test_gpu_buffer_from(const void *data, uint64_t size);
gpu_buffer test_gpu_buffer_poisoned(uint64_t size); /* filled with TEST_POISON_WORD */
void test_gpu_read(const gpu_buffer *buffer, void *out, uint64_t size);
void test_gpu_free(gpu_buffer *buffer);

/* Looks up (creating) the pipeline for a shader variant; asserts on failure. */
gpu_pipeline *test_gpu_pipeline(const gpu_pipeline_desc *desc);

#endif
