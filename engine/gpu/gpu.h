/* gpu.h: the Vulkan device layer, the only part of vkllm that talks to Vulkan.
 *
 * It owns the instance, the chosen physical device and its feature set, device
 * memory (large VkDeviceMemory blocks, sub-allocated), buffers, staging for
 * uploads and readbacks, compute pipelines built from the SPIR-V embedded in the
 * library (with an on-disk pipeline cache), command recording with automatic
 * barriers, and timestamp queries. It knows nothing about models or requests.
 *
 * Threading: a gpu_context and everything made from it belong to one thread at
 * a time (the engine loop). Nothing here aborts; every fallible call returns a
 * vkllm_status with a message (see engine/common/status.h).
 *
 * Module prefix: gpu_. Implementation files: instance/device choice
 * (gpu_device.c), memory (gpu_memory.c), buffers and staging (gpu_buffer.c),
 * pipelines and cache (gpu_pipeline.c), command recording (gpu_cmd.c). */
#ifndef VKL_GPU_H
#define VKL_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"

/* ---------------------------------------------------------------- features */

typedef enum gpu_device_kind {
    GPU_KIND_OTHER = 0,
    GPU_KIND_CPU,
    GPU_KIND_VIRTUAL,
    GPU_KIND_INTEGRATED,
    GPU_KIND_DISCRETE,
} gpu_device_kind;

#define GPU_MAX_COOPMAT_SHAPES 16
typedef struct gpu_coopmat_shape {
    uint32_t m, n, k;
    uint32_t a_type, b_type, c_type, result_type; /* see gpu_features below */
} gpu_coopmat_shape;

/* Everything a kernel needs to choose a variant. Filled once per device. */
typedef struct gpu_features {
    char name[256];
    char driver[256]; /* driver name and info, e.g. "llvmpipe / Mesa 22.3.6" */
    uint32_t vendor_id, device_id;
    uint32_t api_version; /* VK_MAKE_API_VERSION packed */
    gpu_device_kind kind;

    /* arithmetic and storage */
    bool fp16_arithmetic;     /* shaderFloat16 */
    bool int8_arithmetic;     /* shaderInt8 */
    bool int64;               /* shaderInt64 */
    bool storage16;           /* storageBuffer16BitAccess */
    bool storage8;            /* storageBuffer8BitAccess */
    bool integer_dot_product; /* VK_KHR_shader_integer_dot_product */
    bool buffer_device_address;
    bool coopmat_nv;      /* VK_NV_cooperative_matrix */
    bool coopmat_khr;     /* VK_KHR_cooperative_matrix */
    bool memory_budget;   /* VK_EXT_memory_budget */
    bool push_descriptor; /* VK_KHR_push_descriptor */

    /* subgroups */
    uint32_t subgroup_size;                        /* default size */
    uint32_t subgroup_min_size, subgroup_max_size; /* with subgroup_size_control */
    bool subgroup_size_control;                    /* can require a size per pipeline */
    bool subgroup_basic, subgroup_vote, subgroup_arithmetic, subgroup_ballot, subgroup_shuffle,
        subgroup_shuffle_relative, subgroup_clustered, subgroup_quad; /* in compute stage */

    /* limits */
    uint32_t max_shared_memory;        /* maxComputeSharedMemorySize, bytes */
    uint64_t max_storage_buffer_range; /* bytes one binding may cover */
    uint64_t max_allocation_size;      /* maxMemoryAllocationSize */
    uint64_t min_storage_offset_alignment;
    uint32_t max_workgroup_invocations;
    uint32_t max_workgroup_size[3];
    uint32_t max_workgroup_count[3];
    uint32_t max_push_constants_size;
    uint64_t device_local_bytes; /* size of the largest device-local heap */
    bool timestamps;             /* compute queue supports timestamps */
    float timestamp_period_ns;   /* ns per timestamp tick */

    /* added after the first version (append-only) */
    bool int16;                   /* shaderInt16 */
    bool subgroup_extended_types; /* subgroup ops on 8/16/64-bit types */
    bool compute_full_subgroups;  /* computeFullSubgroups (with subgroup_size_control) */
    bool vulkan_memory_model;
    bool scalar_block_layout;
    bool pipeline_creation_feedback;
    uint64_t max_buffer_size; /* maxBufferSize where known (maintenance4), else 0 */
    uint64_t non_coherent_atom_size;
    /* Cooperative matrix shapes the driver lists (subgroup scope). Component types
     * use the Vulkan values: 0 f16, 1 f32, 2 f64, 3 s8, 4 s16, 5 s32, 6 s64,
     * 7 u8, 8 u16, 9 u32, 10 u64. */
    uint32_t num_coopmat_nv_shapes, num_coopmat_khr_shapes;
    gpu_coopmat_shape coopmat_nv_shapes[GPU_MAX_COOPMAT_SHAPES];
    gpu_coopmat_shape coopmat_khr_shapes[GPU_MAX_COOPMAT_SHAPES];
    /* integerDotProduct4x8BitPackedSignedAccelerated: packed int8 dot products (OpSDot)
     * run as a native instruction (DP4A), not emulated; selects matvec_dp4a.comp */
    bool integer_dot_accelerated;
} gpu_features;

/* Lists every physical device (with features), in the loader's order.
 * *out is malloc'ed; free() it. Creates and destroys its own instance. */
vkllm_status gpu_list_devices(gpu_features **out, uint32_t *count);

/* Formats `f` as human-readable multi-line text (for `vkllm devices`). */
void gpu_features_print(const gpu_features *f, void *file /* FILE* */);

/* ---------------------------------------------------------------- context */

typedef struct gpu_context gpu_context;

typedef struct gpu_context_options {
    /* Device choice: NULL means the VKLLM_DEVICE environment variable, then the
     * best device (discrete > integrated > virtual > CPU). Otherwise an index
     * ("1") or a case-insensitive substring of the device name ("llvmpipe"). */
    const char *device;
    /* Enable VK_LAYER_KHRONOS_validation and count its errors (tests do). Also
     * turned on by VKLLM_VALIDATION=1 in the environment; VKLLM_VALIDATION=sync
     * adds synchronization validation (missing barriers become errors). */
    bool validation;
    /* Directory of the on-disk pipeline cache; NULL means $XDG_CACHE_HOME/vkllm
     * (or ~/.cache/vkllm). "" disables the disk cache. */
    const char *pipeline_cache_dir;
    /* Added: use descriptor pools even where VK_KHR_push_descriptor exists (tests
     * use it to cover both paths). */
    bool no_push_descriptors;
} gpu_context_options;

vkllm_status gpu_context_create(const gpu_context_options *options, gpu_context **out);
/* Waits for the device to go idle, saves the pipeline cache, frees everything. */
void gpu_context_destroy(gpu_context *ctx);
const gpu_features *gpu_context_features(const gpu_context *ctx);

/* Validation-layer messages of severity error seen so far (0 if not enabled).
 * Each one is also printed to stderr. */
uint32_t gpu_validation_errors(const gpu_context *ctx);

/* Pipeline statistics: how many pipelines this context created, and how many
 * of those the driver reported as found in the pipeline cache (via
 * VK_EXT_pipeline_creation_feedback where present), plus time spent creating. */
typedef struct gpu_pipeline_stats {
    uint32_t created;
    uint32_t cache_hits;     /* creation feedback said "application pipeline cache hit" */
    bool feedback_available; /* the driver supports creation feedback */
    bool disk_cache_loaded;  /* a cache file was read at start */
    double create_ms;        /* total time in vkCreateComputePipelines */
} gpu_pipeline_stats;
gpu_pipeline_stats gpu_context_pipeline_stats(const gpu_context *ctx);

/* ---------------------------------------------------------------- memory */

typedef enum gpu_memory_kind {
    GPU_MEMORY_DEVICE,   /* device-local; filled by uploads or kernels */
    GPU_MEMORY_UPLOAD,   /* host-visible, coherent, mapped; CPU writes, GPU reads */
    GPU_MEMORY_READBACK, /* host-visible, cached where possible, mapped; GPU writes, CPU reads */
} gpu_memory_kind;

/* A buffer is a VkBuffer bound to a range of a larger VkDeviceMemory block.
 * Plain data: copy it freely, destroy it once. */
typedef struct gpu_buffer {
    void *handle;  /* VkBuffer (opaque here so callers need no Vulkan headers) */
    uint64_t size; /* bytes the caller asked for */
    void *mapped;  /* host pointer for UPLOAD/READBACK, NULL for DEVICE */
    gpu_memory_kind kind;
    void *allocation; /* internal: the sub-allocation record */
} gpu_buffer;

/* Buffers of any size up to the device's limits; sizes beyond one memory block
 * get a dedicated allocation. Out of memory returns VKLLM_ERR_OUT_OF_DEVICE_MEMORY
 * with the sizes involved. */
vkllm_status gpu_buffer_create(gpu_context *ctx, uint64_t size, gpu_memory_kind kind,
                               gpu_buffer *out);
void gpu_buffer_destroy(gpu_context *ctx, gpu_buffer *buffer);

/* Synchronous host<->device copies through staging buffers (any size; large
 * copies go in pieces). For mapped kinds they are plain memcpy. */
vkllm_status gpu_upload(gpu_context *ctx, const gpu_buffer *dst, uint64_t dst_offset,
                        const void *src, uint64_t size);
vkllm_status gpu_download(gpu_context *ctx, const gpu_buffer *src, uint64_t src_offset, void *dst,
                          uint64_t size);

/* Bytes of device-local memory in use by this context (all blocks). */
uint64_t gpu_memory_in_use(const gpu_context *ctx);

/* Upload ring: a host-visible buffer for small per-step data (plans, block
 * tables, push data too large for push constants). gpu_ring_alloc returns a
 * mapped pointer and the binding to read it from; space is recycled once the
 * command buffer that last used it has completed. */
typedef struct gpu_binding {
    const gpu_buffer *buffer;
    uint64_t offset; /* must respect min_storage_offset_alignment */
    uint64_t range;  /* bytes; 0 means "to the end of the buffer" (clamped to the device limit) */
    bool writable;   /* the dispatch writes this range (drives automatic barriers) */
} gpu_binding;

/* ---------------------------------------------------------------- pipelines */

/* The SPIR-V of every shader variant is embedded in the library under a name
 * ("rms_norm", "matvec_q4_0", ...; see shaders/). */
typedef struct gpu_shader_blob {
    const char *name;
    const uint32_t *code;
    size_t size_bytes;
} gpu_shader_blob;
const gpu_shader_blob *gpu_find_shader(const char *name);
/* All embedded shaders, terminated by an entry with name == NULL. */
const gpu_shader_blob *gpu_all_shaders(void);

typedef struct gpu_pipeline gpu_pipeline;

#define GPU_MAX_BINDINGS 12
#define GPU_MAX_SPEC_CONSTANTS 16

typedef struct gpu_pipeline_desc {
    const char *shader;          /* embedded variant name */
    uint32_t num_bindings;       /* storage buffers at set 0, bindings 0..n-1 */
    uint32_t push_constant_size; /* bytes, multiple of 4, <= 128 */
    uint32_t num_spec_constants; /* constant_id 0..n-1, each a 32-bit value */
    uint32_t spec_constants[GPU_MAX_SPEC_CONSTANTS];
    uint32_t required_subgroup_size; /* 0: driver's choice; else needs subgroup_size_control */
} gpu_pipeline_desc;

/* Returns the pipeline for `desc`, creating it on first use (the context keeps
 * and destroys it). Identical descs return the same pipeline. */
vkllm_status gpu_pipeline_get(gpu_context *ctx, const gpu_pipeline_desc *desc, gpu_pipeline **out);

/* ---------------------------------------------------------------- commands */

typedef struct gpu_cmd gpu_cmd;

/* Starts recording a command buffer. */
vkllm_status gpu_cmd_begin(gpu_context *ctx, gpu_cmd **out);

/* Records one dispatch. Bindings are storage buffers 0..n-1. (A binding the
 * shader does not declare `readonly` counts as written even if .writable is
 * false, so a forgotten flag costs a barrier, never a race.) Barriers are
 * automatic: if a binding overlaps a range written by an earlier dispatch or
 * copy in this command buffer (or this dispatch writes a range an earlier one
 * read) since the last barrier, a compute->compute memory barrier is recorded
 * first. Errors (bad sizes, too many bindings) are remembered and returned by
 * gpu_cmd_submit. */
void gpu_cmd_dispatch(gpu_cmd *cmd, gpu_pipeline *pipeline, const gpu_binding *bindings,
                      uint32_t num_bindings, const void *push_constants, uint32_t push_size,
                      uint32_t groups_x, uint32_t groups_y, uint32_t groups_z);

/* Buffer-to-buffer copy inside the command buffer (with the same automatic barriers). */
void gpu_cmd_copy(gpu_cmd *cmd, const gpu_buffer *src, uint64_t src_offset, const gpu_buffer *dst,
                  uint64_t dst_offset, uint64_t size);

/* Fills `size` bytes (multiple of 4) with a repeated 32-bit word. */
void gpu_cmd_fill(gpu_cmd *cmd, const gpu_buffer *dst, uint64_t offset, uint64_t size,
                  uint32_t word);

/* Forces a full compute/transfer memory barrier. */
void gpu_cmd_barrier(gpu_cmd *cmd);

/* Writes a GPU timestamp with a label (kept up to 2048 per command buffer). */
void gpu_cmd_timestamp(gpu_cmd *cmd, const char *label);

/* Per-dispatch profiling (off by default): while on, every dispatch recorded is followed
 * by a timestamp labelled "<shader> p0=<first push-constant word> g=<X>x<Y>x<Z>", so the
 * gap between consecutive timestamps is what that dispatch added to the chain (its run
 * time plus the barrier and launch before it). The timestamps serialise dispatches that
 * would otherwise overlap, so a profiled step is slightly slower than an unprofiled one:
 * use it to see where time goes, not to time the whole. Each gpu_cmd_flush adds a timestamp
 * "(idle: next part not yet submitted)" at the start of the new part: its gap is time the
 * GPU had finished the earlier parts and waited for the host to submit this one. */
void gpu_set_profiling(gpu_context *ctx, bool on);

/* Submits what was recorded so far without waiting, and goes on recording into a fresh
 * Vulkan command buffer of the same gpu_cmd, so the GPU starts on the first part of a
 * long recording while the host records the rest. Barriers stay automatic across the
 * split (a pipeline barrier also orders work submitted earlier to the queue), and
 * timestamps, error handling and gpu_cmd_submit (which waits for all the parts) are
 * unchanged. An error is remembered like a recording error and also returned. */
vkllm_status gpu_cmd_flush(gpu_cmd *cmd);

/* Number of gpu_cmd_flush calls that submitted a part of this command so far. */
uint32_t gpu_cmd_flush_count(const gpu_cmd *cmd);

/* Ends, submits, waits for completion and frees the command buffer (even on failure). */
vkllm_status gpu_cmd_submit(gpu_cmd *cmd);

/* Timestamps of the last submitted command buffer of this context:
 * label i and its time in milliseconds since the first timestamp. */
uint32_t gpu_last_timestamps(const gpu_context *ctx, const char ***labels, const double **ms);

/* Ring allocation for per-step data; see gpu_binding above. Alignment is the
 * device's storage-offset alignment. Valid until the next gpu_cmd_submit returns. */
vkllm_status gpu_ring_alloc(gpu_context *ctx, uint64_t size, void **mapped, gpu_binding *binding);

/* ---------------------------------------------------------------- additions
 * (added by the gpu helper after the first version; above, only fields were
 * appended to gpu_features and gpu_context_options and one comment added) */

/* Whether the validation layer is active (false when requested but not installed). */
bool gpu_validation_enabled(const gpu_context *ctx);

/* Memory accounting per gpu_memory_kind (index). `reserved` counts VkDeviceMemory
 * taken from the driver (blocks + dedicated), `used` the live buffers' ranges. */
typedef struct gpu_memory_stats {
    uint64_t reserved[3], used[3];
    uint32_t blocks[3], dedicated[3], live_buffers[3];
} gpu_memory_stats;
gpu_memory_stats gpu_memory_get_stats(const gpu_context *ctx);

/* The largest device-local heap's budget and current usage by this process, as
 * VK_EXT_memory_budget reports them. Without the extension, false; then *budget is
 * the heap size and *usage this context's gpu_memory_in_use(). */
bool gpu_memory_budget(const gpu_context *ctx, uint64_t *budget, uint64_t *usage);

/* Device address of a buffer (0 unless features.buffer_device_address). */
uint64_t gpu_buffer_device_address(gpu_context *ctx, const gpu_buffer *buffer);

/* What a SPIR-V module declares: storage buffers at set 0 (num_bindings = highest
 * binding + 1) and the size of its push-constant block (0 if none). Minimal scan of
 * OpDecorate/OpVariable/type instructions, no reflection library. gpu_pipeline_get
 * uses it to reject a desc that declares fewer bindings or push bytes than the
 * shader uses (a clear error instead of a validation-layer one). */
typedef struct gpu_shader_interface {
    uint32_t num_bindings;
    uint32_t push_constant_size;
    uint32_t num_spec_constants; /* highest SpecId + 1 */
    uint32_t local_size[3];      /* LocalSize execution mode (0 if set by spec constants) */
    /* Bit i: binding i is not declared read-only (no `readonly`), so the shader may
     * write it. gpu_cmd_dispatch treats such bindings as written for barriers even
     * when gpu_binding.writable is false. */
    uint32_t writable_mask;
    uint32_t num_capabilities; /* OpCapability operands (first 48) */
    uint32_t capabilities[48];
} gpu_shader_interface;
/* VKLLM_OK if the context's device has every SPIR-V capability the shader declares
 * that vkllm knows a feature flag for; else VKLLM_ERR_UNSUPPORTED naming the shader
 * and the missing feature. gpu_pipeline_get calls it before creating anything. */
vkllm_status gpu_shader_reflect(const gpu_shader_blob *blob, gpu_shader_interface *out);
vkllm_status gpu_shader_check_device(const gpu_context *ctx, const gpu_shader_blob *blob,
                                     const gpu_shader_interface *iface);

/* Picks a device from a gpu_list_devices() list the way gpu_context_create does:
 * `requested` is an index or a case-insensitive name substring; NULL means the
 * VKLLM_DEVICE environment variable, then the best kind. No match gives
 * VKLLM_ERR_NO_DEVICE with a message listing the devices. */
vkllm_status gpu_pick_device(const gpu_features *devices, uint32_t count, const char *requested,
                             uint32_t *index);

/* Path of this context's pipeline cache file ("" when the disk cache is off). */
const char *gpu_pipeline_cache_path(const gpu_context *ctx);

/* Automatic barriers recorded so far in `cmd` (tests check the tracking with it). */
uint32_t gpu_cmd_barrier_count(const gpu_cmd *cmd);

#endif
