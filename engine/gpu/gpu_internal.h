/* gpu_internal.h: what the gpu_*.c files share and nothing outside engine/gpu uses.
 *
 * Owns the layout of gpu_context, gpu_cmd, gpu_pipeline and the memory blocks.
 * Invariants: every Vulkan device call goes through ctx->vk (a per-device volk
 * table, so several contexts on different drivers can coexist); every VkResult
 * failure becomes a vkllm_status through gpu_vk_fail(), which names the call and
 * the VkResult. */
#ifndef VKL_GPU_INTERNAL_H
#define VKL_GPU_INTERNAL_H

#include <volk.h>

#include "gpu.h"

/* VK_KHR_cooperative_matrix is newer than the Vulkan headers shipped here, so the
 * few definitions we need are declared locally (values from the registry). */
#define GPU_VK_KHR_COOPERATIVE_MATRIX_NAME "VK_KHR_cooperative_matrix"
#define GPU_STYPE_COOPMAT_FEATURES_KHR ((VkStructureType)1000506000)
#define GPU_STYPE_COOPMAT_PROPERTIES_KHR ((VkStructureType)1000506001)
typedef struct gpu_vk_coopmat_features_khr {
    VkStructureType sType;
    void *pNext;
    VkBool32 cooperativeMatrix;
    VkBool32 cooperativeMatrixRobustBufferAccess;
} gpu_vk_coopmat_features_khr;
typedef struct gpu_vk_coopmat_properties_khr {
    VkStructureType sType;
    void *pNext;
    uint32_t MSize, NSize, KSize;
    uint32_t AType, BType, CType, ResultType;
    VkBool32 saturatingAccumulation;
    uint32_t scope;
} gpu_vk_coopmat_properties_khr;
typedef VkResult(VKAPI_PTR *gpu_pfn_coopmat_properties_khr)(VkPhysicalDevice, uint32_t *,
                                                            gpu_vk_coopmat_properties_khr *);

/* ---------------------------------------------------------------- errors */

const char *gpu_vk_result_name(VkResult result);
/* Maps `result` to a vkllm status and records "<call> failed: <VK_...>: <context>". */
vkllm_status gpu_vk_fail(VkResult result, const char *call, const char *fmt, ...) VKL_PRINTF(3, 4);
/* Evaluates a VkResult-returning call; on failure returns gpu_vk_fail(...). */
#define GPU_VK_TRY(call, ...)                                                                      \
    do {                                                                                           \
        VkResult gpu_vk_try_result_ = (call);                                                      \
        if (gpu_vk_try_result_ < 0) return gpu_vk_fail(gpu_vk_try_result_, __VA_ARGS__);           \
    } while (0)

/* ---------------------------------------------------------------- device */

/* Everything known about one physical device before a VkDevice exists. */
typedef struct gpu_device_info {
    VkPhysicalDevice physical;
    gpu_features features;
    uint32_t api_version; /* min(device, what we ask the instance for) */
    uint32_t queue_family;
    uint32_t timestamp_valid_bits;
    uint64_t non_coherent_atom_size;
    uint64_t max_buffer_size; /* 0 if the device does not say */
    bool compute_full_subgroups;
    bool feedback;              /* VK_EXT_pipeline_creation_feedback or Vulkan 1.3 */
    bool executable_statistics; /* VK_KHR_pipeline_executable_properties (registers, spills) */
    bool allow_khr_coopmat;     /* false under a validation layer too old to know it */
    uint8_t pipeline_cache_uuid[VK_UUID_SIZE];
    uint32_t driver_version;
    /* extensions present on the device (NULL-terminated names from a static table) */
    const char *extensions[32];
    uint32_t num_extensions;
} gpu_device_info;

/* VKLLM_PIPELINE_STATS set (not "0"): every pipeline created prints the driver's
 * statistics for it (registers, spills, shared memory: whatever the driver reports) to
 * stderr, where VK_KHR_pipeline_executable_properties is available. */
bool gpu_env_pipeline_stats(void);

/* Enumerates devices of `instance` with their features (malloc'ed array). */
vkllm_status gpu_query_devices(VkInstance instance, uint32_t instance_api, bool allow_khr_coopmat,
                               gpu_device_info **out, uint32_t *count);
/* Picks a device per `requested` (index or name substring; NULL: best). `source`
 * names where the request came from, for the error message. */
vkllm_status gpu_choose_device(const gpu_features *devices, uint32_t count, const char *requested,
                               const char *source, uint32_t *chosen);

/* ---------------------------------------------------------------- memory */

typedef struct gpu_block gpu_block;

/* One range of a block; the ranges of a block form a list ordered by offset
 * that covers the whole block with no gaps. Adjacent free ranges are merged. */
typedef struct gpu_allocation {
    gpu_block *block;
    VkDeviceSize offset, size;
    struct gpu_allocation *prev, *next;
    bool free;
} gpu_allocation;

struct gpu_block {
    VkDeviceMemory memory;
    VkDeviceSize size;
    VkDeviceSize used; /* bytes in live ranges */
    uint32_t live;     /* live ranges */
    bool dedicated;    /* holds exactly one buffer; freed with it */
    void *mapped;      /* persistent mapping for host-visible kinds */
    gpu_allocation *ranges;
    gpu_block *next;
};

typedef struct gpu_memory_pool {
    gpu_memory_kind kind;
    uint32_t type_index; /* UINT32_MAX until first use */
    VkMemoryPropertyFlags flags;
    VkDeviceSize block_size;
    gpu_block *blocks;
} gpu_memory_pool;

/* Reserves memory for `requirements` (dedicated if large or preferred). */
vkllm_status gpu_memory_alloc(gpu_context *ctx, gpu_memory_kind kind,
                              const VkMemoryRequirements *requirements, bool prefer_dedicated,
                              VkBuffer dedicated_buffer, gpu_allocation **out);
void gpu_memory_free(gpu_context *ctx, gpu_allocation *allocation);
void gpu_memory_destroy_all(gpu_context *ctx);
/* Makes host writes visible (non-coherent memory) / device writes visible to the host. */
void gpu_memory_flush(gpu_context *ctx, const gpu_allocation *a, VkDeviceSize offset,
                      VkDeviceSize size);
void gpu_memory_invalidate(gpu_context *ctx, const gpu_allocation *a, VkDeviceSize offset,
                           VkDeviceSize size);

/* ---------------------------------------------------------------- pipelines */

struct gpu_pipeline {
    gpu_pipeline_desc desc;
    char shader_name[96];
    VkPipeline pipeline;
    VkPipelineLayout layout; /* owned by the context's layout cache */
    uint32_t shader_writes;  /* bindings the SPIR-V does not declare read-only */
    struct gpu_pipeline *next_in_bucket;
};

typedef struct gpu_layout_entry {
    uint32_t num_bindings, push_constant_size;
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout layout;
} gpu_layout_entry;

typedef struct gpu_module_entry {
    const gpu_shader_blob *blob;
    VkShaderModule module;
} gpu_module_entry;

#define GPU_PIPELINE_BUCKETS 256

/* ---------------------------------------------------------------- commands */

#define GPU_MAX_TIMESTAMPS 2048
#define GPU_LABEL_MAX 64
#define GPU_SETS_PER_POOL 256

/* A command buffer with what it needs; recycled through the context's free list. */
typedef struct gpu_cmd_slot {
    VkCommandBuffer cb;
    VkFence fence;
    VkQueryPool query_pool; /* created on first timestamp */
    VkDescriptorPool *pools;
    uint32_t num_pools, pools_cap;
    uint32_t pools_used; /* descriptor pools a flushed part used (reset at release) */
    struct gpu_cmd_slot *next;
} gpu_cmd_slot;

typedef struct gpu_access {
    VkBuffer buffer;
    VkDeviceSize begin, end;
    bool write;
} gpu_access;

struct gpu_cmd {
    gpu_context *ctx;
    struct gpu_cmd *next_live; /* the context's list of commands not yet released */
    gpu_cmd_slot *slot;        /* the command buffer being recorded */
    gpu_cmd_slot *flushed;     /* parts already submitted by gpu_cmd_flush (list via next) */
    gpu_cmd_slot *ts_slot;     /* owner of the query pool the timestamps go to */
    uint32_t flushes;
    bool internal;  /* an upload/download: does not recycle the ring */
    bool submitted; /* submitted, fence not yet waited */
    bool completed; /* the final fence was waited for: every part has finished */
    vkllm_status error;
    char error_message[VKL_ERROR_MAX];
    gpu_access *accesses; /* since the last barrier */
    uint32_t num_accesses, accesses_cap;
    uint32_t pool_used; /* index of the descriptor pool in use */
    uint32_t sets_in_pool;
    uint32_t barriers; /* recorded automatically or forced (for tests/stats) */
    uint32_t num_timestamps;
    /* labels of the timestamps so far; grown on demand (a step writes 2, a profiled one
     * several hundred), so a command does not carry GPU_MAX_TIMESTAMPS of them */
    char (*labels)[GPU_LABEL_MAX];
    uint32_t labels_cap;
};

vkllm_status gpu_cmd_begin_internal(gpu_context *ctx, bool internal, gpu_cmd **out);
/* Ends and submits without waiting. On failure the command is freed. */
vkllm_status gpu_cmd_submit_nowait(gpu_cmd *cmd);
/* Waits for a submitted command, collects its timestamps, frees it. */
vkllm_status gpu_cmd_wait(gpu_cmd *cmd);
/* Releases commands the caller never submitted, then every recycled slot. */
void gpu_cmd_destroy_slots(gpu_context *ctx);

/* ---------------------------------------------------------------- ring */

typedef struct gpu_ring_chunk {
    gpu_buffer buffer;
    uint64_t head;
    struct gpu_ring_chunk *next;
} gpu_ring_chunk;

/* ---------------------------------------------------------------- context */

#define GPU_STAGING_SLOTS 2

struct gpu_context {
    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice physical;
    VkDevice device;
    VkQueue queue;
    struct VolkDeviceTable vk;
    gpu_device_info info;
    VkPhysicalDeviceMemoryProperties memory_properties;

    bool validation;
    uint32_t validation_errors;
    bool profiling; /* gpu_set_profiling: a timestamp after every dispatch */

    bool use_push_descriptors;
    bool buffer_device_address;

    gpu_memory_pool pools[3]; /* indexed by gpu_memory_kind */

    VkCommandPool command_pool;
    gpu_cmd_slot *free_slots;
    uint32_t live_user_cmds;   /* user commands begun and not yet submitted */
    struct gpu_cmd *live_cmds; /* all commands not yet released (freed at destroy) */

    /* timestamps of the last submitted user command */
    uint32_t num_timestamps;
    char timestamp_labels[GPU_MAX_TIMESTAMPS][GPU_LABEL_MAX];
    const char *timestamp_label_ptrs[GPU_MAX_TIMESTAMPS];
    double timestamp_ms[GPU_MAX_TIMESTAMPS];

    /* staging for gpu_upload / gpu_download: GPU_STAGING_SLOTS pieces in flight */
    gpu_buffer upload_staging, download_staging;
    uint64_t staging_slot_size;

    /* pipelines */
    VkPipelineCache pipeline_cache;
    char pipeline_cache_path[4096]; /* "" when the disk cache is off */
    gpu_pipeline *pipeline_buckets[GPU_PIPELINE_BUCKETS];
    gpu_layout_entry *layouts;
    uint32_t num_layouts, layouts_cap;
    gpu_module_entry *modules;
    uint32_t num_modules, modules_cap;
    gpu_pipeline_stats pipeline_stats;
    uint32_t pipelines_at_load; /* cache_hits+created when the file was read (for saving) */

    /* ring */
    gpu_ring_chunk *ring;
    uint64_t ring_chunk_size;
};

vkllm_status gpu_pipeline_cache_open(gpu_context *ctx, const char *dir_option);
void gpu_pipelines_destroy(gpu_context *ctx);
void gpu_ring_destroy(gpu_context *ctx);
void gpu_ring_recycle(gpu_context *ctx);
void gpu_staging_destroy(gpu_context *ctx);

static inline VkDeviceSize gpu_align_up(VkDeviceSize x, VkDeviceSize a) {
    return a <= 1 ? x : (x + a - 1) / a * a;
}

#endif
