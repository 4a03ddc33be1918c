/* gpu_device.c: the Vulkan instance, physical-device discovery and choice, the
 * feature set (gpu_features), logical device creation, the validation messenger,
 * and the VkResult -> vkllm_status mapping.
 *
 * Invariants: a device is only usable with Vulkan >= 1.1 and a compute queue;
 * a feature is reported true only when it is also enabled on the VkDevice we
 * create, so kernels may rely on every flag in gpu_features. Feature structs are
 * only chained when the device has the extension or the core version that
 * defines them (otherwise the validation layer would object). */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#include <dlfcn.h>
#include <link.h>

/* Sanitizer builds only: Vulkan drivers keep a few bytes of process-lifetime state
 * (lavapipe/LLVM allocate it in a pthread_once), and the loader unloads the driver
 * when the instance goes. LeakSanitizer then no longer sees the driver's globals that
 * still point at that state and reports an unattributable leak, failing every run.
 * Pinning the loaded objects (RTLD_NODELETE) keeps those globals mapped, so only
 * leaks that are really unreachable, ours included, are reported. */
static int pin_loaded_object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size, (void)data;
    if (info->dlpi_name && info->dlpi_name[0])
        dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
    return 0;
}
static void pin_driver_objects(void) {
    dl_iterate_phdr(pin_loaded_object, NULL);
}
#else
static void pin_driver_objects(void) {}
#endif

/* ---------------------------------------------------------------- errors */

const char *gpu_vk_result_name(VkResult result) {
    switch (result) {
#define GPU_RESULT_NAME(x)                                                                         \
    case x:                                                                                        \
        return #x;
        GPU_RESULT_NAME(VK_SUCCESS)
        GPU_RESULT_NAME(VK_NOT_READY)
        GPU_RESULT_NAME(VK_TIMEOUT)
        GPU_RESULT_NAME(VK_EVENT_SET)
        GPU_RESULT_NAME(VK_EVENT_RESET)
        GPU_RESULT_NAME(VK_INCOMPLETE)
        GPU_RESULT_NAME(VK_ERROR_OUT_OF_HOST_MEMORY)
        GPU_RESULT_NAME(VK_ERROR_OUT_OF_DEVICE_MEMORY)
        GPU_RESULT_NAME(VK_ERROR_INITIALIZATION_FAILED)
        GPU_RESULT_NAME(VK_ERROR_DEVICE_LOST)
        GPU_RESULT_NAME(VK_ERROR_MEMORY_MAP_FAILED)
        GPU_RESULT_NAME(VK_ERROR_LAYER_NOT_PRESENT)
        GPU_RESULT_NAME(VK_ERROR_EXTENSION_NOT_PRESENT)
        GPU_RESULT_NAME(VK_ERROR_FEATURE_NOT_PRESENT)
        GPU_RESULT_NAME(VK_ERROR_INCOMPATIBLE_DRIVER)
        GPU_RESULT_NAME(VK_ERROR_TOO_MANY_OBJECTS)
        GPU_RESULT_NAME(VK_ERROR_FORMAT_NOT_SUPPORTED)
        GPU_RESULT_NAME(VK_ERROR_FRAGMENTED_POOL)
        GPU_RESULT_NAME(VK_ERROR_UNKNOWN)
        GPU_RESULT_NAME(VK_ERROR_OUT_OF_POOL_MEMORY)
        GPU_RESULT_NAME(VK_ERROR_INVALID_EXTERNAL_HANDLE)
        GPU_RESULT_NAME(VK_ERROR_FRAGMENTATION)
        GPU_RESULT_NAME(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
        GPU_RESULT_NAME(VK_PIPELINE_COMPILE_REQUIRED)
        GPU_RESULT_NAME(VK_ERROR_VALIDATION_FAILED_EXT)
        GPU_RESULT_NAME(VK_ERROR_INVALID_SHADER_NV)
        GPU_RESULT_NAME(VK_ERROR_NOT_PERMITTED_KHR)
#undef GPU_RESULT_NAME
    default:
        return "VK_RESULT_UNKNOWN";
    }
}

vkllm_status gpu_vk_fail(VkResult result, const char *call, const char *fmt, ...) {
    vkllm_status status;
    switch (result) {
    case VK_ERROR_OUT_OF_HOST_MEMORY:
        status = VKLLM_ERR_OUT_OF_HOST_MEMORY;
        break;
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    case VK_ERROR_FRAGMENTED_POOL:
    case VK_ERROR_FRAGMENTATION:
        status = VKLLM_ERR_OUT_OF_DEVICE_MEMORY;
        break;
    case VK_ERROR_DEVICE_LOST:
        status = VKLLM_ERR_DEVICE_LOST;
        break;
    case VK_ERROR_INCOMPATIBLE_DRIVER:
        status = VKLLM_ERR_NO_DEVICE;
        break;
    case VK_ERROR_LAYER_NOT_PRESENT:
    case VK_ERROR_EXTENSION_NOT_PRESENT:
    case VK_ERROR_FEATURE_NOT_PRESENT:
        status = VKLLM_ERR_UNSUPPORTED;
        break;
    default:
        status = VKLLM_ERR_VULKAN;
        break;
    }
    char context[VKL_ERROR_MAX / 2];
    va_list args;
    va_start(args, fmt);
    vsnprintf(context, sizeof context, fmt, args);
    va_end(args);
    return vkl_fail(status, "%s failed: %s (%d): %s", call, gpu_vk_result_name(result), (int)result,
                    context);
}

/* ---------------------------------------------------------------- helpers */

static vkllm_status gpu_volk_init(void) {
    static bool loaded;
    if (loaded) return VKLLM_OK;
    VkResult result = volkInitialize();
    if (result != VK_SUCCESS)
        return vkl_fail(VKLLM_ERR_NO_DEVICE,
                        "no Vulkan loader found (volkInitialize: %s); install libvulkan1 and a "
                        "Vulkan driver (e.g. mesa-vulkan-drivers for lavapipe)",
                        gpu_vk_result_name(result));
    if (volkGetInstanceVersion() < VK_API_VERSION_1_1)
        return vkl_fail(VKLLM_ERR_NO_DEVICE,
                        "the Vulkan loader supports only Vulkan %u.%u; vkllm "
                        "needs 1.1 or newer",
                        VK_API_VERSION_MAJOR(volkGetInstanceVersion()),
                        VK_API_VERSION_MINOR(volkGetInstanceVersion()));
    loaded = true;
    return VKLLM_OK;
}

static bool gpu_has_extension(const VkExtensionProperties *exts, uint32_t n, const char *name) {
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(exts[i].extensionName, name)) return true;
    return false;
}

static uint32_t gpu_instance_api(void) {
    uint32_t v = volkGetInstanceVersion();
    return v >= VK_API_VERSION_1_3 ? VK_API_VERSION_1_3 : v;
}

typedef struct gpu_instance_setup {
    bool validation, sync_validation, portability;
    /* false when a validation layer older than VK_KHR_cooperative_matrix is on: it
     * would report the extension's structs as unknown (an error) */
    bool allow_khr_coopmat;
} gpu_instance_setup;

static VkBool32 VKAPI_PTR gpu_debug_callback(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                             VkDebugUtilsMessageTypeFlagsEXT types,
                                             const VkDebugUtilsMessengerCallbackDataEXT *data,
                                             void *user) {
    (void)types;
    if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
        gpu_context *ctx = user;
        if (ctx) ctx->validation_errors++;
        fprintf(stderr, "vkllm: Vulkan validation error: %s\n",
                data && data->pMessage ? data->pMessage : "(no message)");
    }
    return VK_FALSE;
}

static void gpu_messenger_info(gpu_context *ctx, VkDebugUtilsMessengerCreateInfoEXT *info) {
    *info = (VkDebugUtilsMessengerCreateInfoEXT){
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = gpu_debug_callback,
        .pUserData = ctx,
    };
}

/* Creates an instance; with ctx != NULL and setup->validation, also the messenger. */
static vkllm_status gpu_create_instance(gpu_context *ctx, gpu_instance_setup *setup,
                                        VkInstance *out) {
    VKL_TRY(gpu_volk_init());
    const char *layers[1];
    uint32_t num_layers = 0;
    const char *extensions[4];
    uint32_t num_extensions = 0;

    uint32_t n = 0;
    vkEnumerateInstanceExtensionProperties(NULL, &n, NULL);
    VkExtensionProperties *exts = calloc(n ? n : 1, sizeof *exts);
    if (!exts) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "instance extension list");
    vkEnumerateInstanceExtensionProperties(NULL, &n, exts);
    setup->portability = gpu_has_extension(exts, n, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    if (setup->portability)
        extensions[num_extensions++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
    bool debug_utils = gpu_has_extension(exts, n, VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    free(exts);

    if (setup->validation) {
        uint32_t nl = 0;
        vkEnumerateInstanceLayerProperties(&nl, NULL);
        VkLayerProperties *props = calloc(nl ? nl : 1, sizeof *props);
        if (!props) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "instance layer list");
        vkEnumerateInstanceLayerProperties(&nl, props);
        bool found = false;
        for (uint32_t i = 0; i < nl; i++)
            if (!strcmp(props[i].layerName, "VK_LAYER_KHRONOS_validation")) {
                found = true;
                setup->allow_khr_coopmat =
                    props[i].specVersion >= VK_MAKE_API_VERSION(0, 1, 3, 255);
            }
        free(props);
        if (!found) {
            fprintf(stderr, "vkllm: warning: validation requested but VK_LAYER_KHRONOS_validation "
                            "is not installed; running without it\n");
            setup->validation = false;
        }
    }
    bool validation_features = false;
    if (setup->validation) {
        layers[num_layers++] = "VK_LAYER_KHRONOS_validation";
        uint32_t nle = 0;
        vkEnumerateInstanceExtensionProperties("VK_LAYER_KHRONOS_validation", &nle, NULL);
        VkExtensionProperties *lexts = calloc(nle ? nle : 1, sizeof *lexts);
        if (!lexts) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "layer extension list");
        vkEnumerateInstanceExtensionProperties("VK_LAYER_KHRONOS_validation", &nle, lexts);
        debug_utils =
            debug_utils || gpu_has_extension(lexts, nle, VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
        validation_features =
            gpu_has_extension(lexts, nle, VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
        free(lexts);
        if (!debug_utils) {
            fprintf(stderr, "vkllm: warning: VK_EXT_debug_utils missing; validation messages "
                            "cannot be counted\n");
        } else {
            extensions[num_extensions++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
        }
        if (setup->sync_validation && validation_features)
            extensions[num_extensions++] = VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME;
        else
            setup->sync_validation = false;
    }

    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "vkllm",
        .pEngineName = "vkllm",
        .apiVersion = gpu_instance_api(),
    };
    VkInstanceCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .flags = setup->portability ? VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR : 0,
        .pApplicationInfo = &app,
        .enabledLayerCount = num_layers,
        .ppEnabledLayerNames = layers,
        .enabledExtensionCount = num_extensions,
        .ppEnabledExtensionNames = extensions,
    };
    VkDebugUtilsMessengerCreateInfoEXT messenger_info;
    VkValidationFeatureEnableEXT sync_enable =
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    VkValidationFeaturesEXT features = {
        .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
        .enabledValidationFeatureCount = 1,
        .pEnabledValidationFeatures = &sync_enable,
    };
    if (setup->validation && debug_utils) {
        gpu_messenger_info(ctx, &messenger_info);
        info.pNext = &messenger_info;
        if (setup->sync_validation) messenger_info.pNext = &features;
    }
    GPU_VK_TRY(vkCreateInstance(&info, NULL, out), "vkCreateInstance", "Vulkan %u.%u%s",
               VK_API_VERSION_MAJOR(app.apiVersion), VK_API_VERSION_MINOR(app.apiVersion),
               setup->validation ? " with VK_LAYER_KHRONOS_validation" : "");
    volkLoadInstance(*out);
    if (ctx && setup->validation && debug_utils) {
        messenger_info.pNext = NULL; /* the validation features belong to the instance only */
        VkResult r = vkCreateDebugUtilsMessengerEXT(*out, &messenger_info, NULL, &ctx->messenger);
        if (r < 0) {
            vkDestroyInstance(*out, NULL);
            *out = VK_NULL_HANDLE;
            return gpu_vk_fail(r, "vkCreateDebugUtilsMessengerEXT", "validation messenger");
        }
    }
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- feature chains */

/* Device extensions vkllm enables when present. `core` is the Vulkan version that
 * made the extension's feature/property structs core (0: never). */
typedef struct gpu_ext_def {
    const char *name;
    uint32_t core;
} gpu_ext_def;

enum {
    EXT_8BIT_STORAGE,
    EXT_FLOAT16_INT8,
    EXT_SUBGROUP_SIZE_CONTROL,
    EXT_BUFFER_DEVICE_ADDRESS,
    EXT_INTEGER_DOT_PRODUCT,
    EXT_COOPMAT_NV,
    EXT_COOPMAT_KHR,
    EXT_MEMORY_BUDGET,
    EXT_PUSH_DESCRIPTOR,
    EXT_CREATION_FEEDBACK,
    EXT_DRIVER_PROPERTIES,
    EXT_MEMORY_MODEL,
    EXT_SCALAR_BLOCK_LAYOUT,
    EXT_SUBGROUP_EXTENDED_TYPES,
    EXT_MAINTENANCE4,
    EXT_NON_SEMANTIC_INFO,
    EXT_PORTABILITY_SUBSET,
    EXT_EXECUTABLE_PROPERTIES,
    EXT_COUNT
};

static const gpu_ext_def gpu_ext_defs[EXT_COUNT] = {
    [EXT_8BIT_STORAGE] = {"VK_KHR_8bit_storage", VK_API_VERSION_1_2},
    [EXT_FLOAT16_INT8] = {"VK_KHR_shader_float16_int8", VK_API_VERSION_1_2},
    [EXT_SUBGROUP_SIZE_CONTROL] = {"VK_EXT_subgroup_size_control", VK_API_VERSION_1_3},
    [EXT_BUFFER_DEVICE_ADDRESS] = {"VK_KHR_buffer_device_address", VK_API_VERSION_1_2},
    [EXT_INTEGER_DOT_PRODUCT] = {"VK_KHR_shader_integer_dot_product", VK_API_VERSION_1_3},
    [EXT_COOPMAT_NV] = {"VK_NV_cooperative_matrix", 0},
    [EXT_COOPMAT_KHR] = {GPU_VK_KHR_COOPERATIVE_MATRIX_NAME, 0},
    [EXT_MEMORY_BUDGET] = {"VK_EXT_memory_budget", 0},
    [EXT_PUSH_DESCRIPTOR] = {"VK_KHR_push_descriptor", 0},
    [EXT_CREATION_FEEDBACK] = {"VK_EXT_pipeline_creation_feedback", VK_API_VERSION_1_3},
    [EXT_DRIVER_PROPERTIES] = {"VK_KHR_driver_properties", VK_API_VERSION_1_2},
    [EXT_MEMORY_MODEL] = {"VK_KHR_vulkan_memory_model", VK_API_VERSION_1_2},
    [EXT_SCALAR_BLOCK_LAYOUT] = {"VK_EXT_scalar_block_layout", VK_API_VERSION_1_2},
    [EXT_SUBGROUP_EXTENDED_TYPES] = {"VK_KHR_shader_subgroup_extended_types", VK_API_VERSION_1_2},
    [EXT_MAINTENANCE4] = {"VK_KHR_maintenance4", VK_API_VERSION_1_3},
    [EXT_NON_SEMANTIC_INFO] = {"VK_KHR_shader_non_semantic_info", VK_API_VERSION_1_3},
    [EXT_PORTABILITY_SUBSET] = {"VK_KHR_portability_subset", 0},
    [EXT_EXECUTABLE_PROPERTIES] = {"VK_KHR_pipeline_executable_properties", 0},
};

/* Every feature/property struct we may chain, for one device. */
typedef struct gpu_chain {
    bool has_ext[EXT_COUNT]; /* the device lists the extension */
    bool usable[EXT_COUNT];  /* the extension or its core version is available */
    VkPhysicalDeviceFeatures2 features;
    VkPhysicalDevice16BitStorageFeatures storage16;
    VkPhysicalDevice8BitStorageFeatures storage8;
    VkPhysicalDeviceShaderFloat16Int8Features float16_int8;
    VkPhysicalDeviceSubgroupSizeControlFeatures subgroup_size_control;
    VkPhysicalDeviceBufferDeviceAddressFeatures bda;
    VkPhysicalDeviceShaderIntegerDotProductFeatures dot_product;
    VkPhysicalDeviceCooperativeMatrixFeaturesNV coopmat_nv;
    gpu_vk_coopmat_features_khr coopmat_khr;
    VkPhysicalDeviceVulkanMemoryModelFeatures memory_model;
    VkPhysicalDeviceScalarBlockLayoutFeatures scalar_block;
    VkPhysicalDeviceShaderSubgroupExtendedTypesFeatures extended_types;
    VkPhysicalDeviceMaintenance4Features maintenance4;
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR executable_properties;

    VkPhysicalDeviceProperties2 properties;
    VkPhysicalDeviceSubgroupProperties subgroup;
    VkPhysicalDeviceSubgroupSizeControlProperties subgroup_size_props;
    VkPhysicalDeviceDriverProperties driver;
    VkPhysicalDeviceMaintenance3Properties maintenance3;
    VkPhysicalDeviceMaintenance4Properties maintenance4_props;
    VkPhysicalDeviceShaderIntegerDotProductProperties dot_product_props;
} gpu_chain;

#define GPU_CHAIN(tail, s, stype)                                                                  \
    do {                                                                                           \
        (s).sType = (stype);                                                                       \
        *(tail) = &(s);                                                                            \
        (tail) = &(s).pNext;                                                                       \
    } while (0)

static void gpu_chain_query(VkPhysicalDevice physical, uint32_t api, bool allow_khr_coopmat,
                            gpu_chain *c) {
    uint32_t n = 0;
    vkEnumerateDeviceExtensionProperties(physical, NULL, &n, NULL);
    VkExtensionProperties *exts = calloc(n ? n : 1, sizeof *exts);
    if (exts) vkEnumerateDeviceExtensionProperties(physical, NULL, &n, exts);
    for (int e = 0; e < EXT_COUNT; e++) {
        c->has_ext[e] = exts && gpu_has_extension(exts, n, gpu_ext_defs[e].name);
        c->usable[e] = c->has_ext[e] || (gpu_ext_defs[e].core && api >= gpu_ext_defs[e].core);
    }
    if (!allow_khr_coopmat) c->has_ext[EXT_COOPMAT_KHR] = c->usable[EXT_COOPMAT_KHR] = false;
    /* statistics capture is for diagnosis only (VKLLM_PIPELINE_STATS): not enabled otherwise */
    if (!gpu_env_pipeline_stats())
        c->has_ext[EXT_EXECUTABLE_PROPERTIES] = c->usable[EXT_EXECUTABLE_PROPERTIES] = false;
    free(exts);

    void **tail = &c->features.pNext;
    c->features.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
    GPU_CHAIN(tail, c->storage16, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES);
    if (c->usable[EXT_8BIT_STORAGE])
        GPU_CHAIN(tail, c->storage8, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES);
    if (c->usable[EXT_FLOAT16_INT8])
        GPU_CHAIN(tail, c->float16_int8,
                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES);
    if (c->usable[EXT_SUBGROUP_SIZE_CONTROL])
        GPU_CHAIN(tail, c->subgroup_size_control,
                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES);
    if (c->usable[EXT_BUFFER_DEVICE_ADDRESS])
        GPU_CHAIN(tail, c->bda, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_BUFFER_DEVICE_ADDRESS_FEATURES);
    if (c->usable[EXT_INTEGER_DOT_PRODUCT])
        GPU_CHAIN(tail, c->dot_product,
                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES);
    if (c->usable[EXT_COOPMAT_NV])
        GPU_CHAIN(tail, c->coopmat_nv,
                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV);
    if (c->usable[EXT_COOPMAT_KHR]) GPU_CHAIN(tail, c->coopmat_khr, GPU_STYPE_COOPMAT_FEATURES_KHR);
    if (c->usable[EXT_MEMORY_MODEL])
        GPU_CHAIN(tail, c->memory_model,
                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES);
    if (c->usable[EXT_SCALAR_BLOCK_LAYOUT])
        GPU_CHAIN(tail, c->scalar_block,
                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SCALAR_BLOCK_LAYOUT_FEATURES);
    if (c->usable[EXT_SUBGROUP_EXTENDED_TYPES])
        GPU_CHAIN(tail, c->extended_types,
                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SUBGROUP_EXTENDED_TYPES_FEATURES);
    if (c->usable[EXT_MAINTENANCE4])
        GPU_CHAIN(tail, c->maintenance4, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_FEATURES);
    if (c->usable[EXT_EXECUTABLE_PROPERTIES])
        GPU_CHAIN(tail, c->executable_properties,
                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR);
    vkGetPhysicalDeviceFeatures2(physical, &c->features);

    tail = &c->properties.pNext;
    c->properties.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
    GPU_CHAIN(tail, c->subgroup, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES);
    GPU_CHAIN(tail, c->maintenance3, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES);
    if (c->usable[EXT_SUBGROUP_SIZE_CONTROL])
        GPU_CHAIN(tail, c->subgroup_size_props,
                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES);
    if (c->usable[EXT_DRIVER_PROPERTIES])
        GPU_CHAIN(tail, c->driver, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES);
    if (c->usable[EXT_MAINTENANCE4])
        GPU_CHAIN(tail, c->maintenance4_props,
                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES);
    if (c->usable[EXT_INTEGER_DOT_PRODUCT])
        GPU_CHAIN(tail, c->dot_product_props,
                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES);
    vkGetPhysicalDeviceProperties2(physical, &c->properties);
}

/* Keeps only the feature bits vkllm wants on the VkDevice (everything kernels can
 * use, nothing that costs speed like robust access or capture/replay). */
static void gpu_chain_trim_for_create(gpu_chain *c) {
    VkPhysicalDeviceFeatures all = c->features.features;
    VkPhysicalDeviceFeatures *f = &c->features.features;
    memset(f, 0, sizeof *f);
    f->shaderInt64 = all.shaderInt64;
    f->shaderInt16 = all.shaderInt16;
    f->shaderFloat64 = all.shaderFloat64;
    f->shaderStorageBufferArrayDynamicIndexing = all.shaderStorageBufferArrayDynamicIndexing;
    c->bda.bufferDeviceAddressCaptureReplay = VK_FALSE;
    c->bda.bufferDeviceAddressMultiDevice = VK_FALSE;
    c->coopmat_nv.cooperativeMatrixRobustBufferAccess = VK_FALSE;
    c->coopmat_khr.cooperativeMatrixRobustBufferAccess = VK_FALSE;
    c->memory_model.vulkanMemoryModelAvailabilityVisibilityChains = VK_FALSE;
}

static gpu_device_kind gpu_kind_of(VkPhysicalDeviceType type) {
    switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        return GPU_KIND_DISCRETE;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        return GPU_KIND_INTEGRATED;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        return GPU_KIND_VIRTUAL;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        return GPU_KIND_CPU;
    default:
        return GPU_KIND_OTHER;
    }
}

static void gpu_coopmat_shapes(VkPhysicalDevice physical, bool khr, gpu_features *f) {
    uint32_t n = 0;
    if (!khr) {
        if (!vkGetPhysicalDeviceCooperativeMatrixPropertiesNV) return;
        vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(physical, &n, NULL);
        VkCooperativeMatrixPropertiesNV *p = calloc(n ? n : 1, sizeof *p);
        if (!p) return;
        for (uint32_t i = 0; i < n; i++)
            p[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
        vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(physical, &n, p);
        for (uint32_t i = 0; i < n && f->num_coopmat_nv_shapes < GPU_MAX_COOPMAT_SHAPES; i++) {
            if (p[i].scope != VK_SCOPE_SUBGROUP_NV) continue;
            f->coopmat_nv_shapes[f->num_coopmat_nv_shapes++] = (gpu_coopmat_shape){
                p[i].MSize, p[i].NSize, p[i].KSize, p[i].AType, p[i].BType, p[i].CType, p[i].DType};
        }
        free(p);
        return;
    }
    gpu_pfn_coopmat_properties_khr get = (gpu_pfn_coopmat_properties_khr)vkGetInstanceProcAddr(
        volkGetLoadedInstance(), "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
    if (!get) return;
    get(physical, &n, NULL);
    gpu_vk_coopmat_properties_khr *p = calloc(n ? n : 1, sizeof *p);
    if (!p) return;
    for (uint32_t i = 0; i < n; i++)
        p[i].sType = GPU_STYPE_COOPMAT_PROPERTIES_KHR;
    get(physical, &n, p);
    for (uint32_t i = 0; i < n && f->num_coopmat_khr_shapes < GPU_MAX_COOPMAT_SHAPES; i++) {
        if (p[i].scope != 3 /* VK_SCOPE_SUBGROUP_KHR */) continue;
        f->coopmat_khr_shapes[f->num_coopmat_khr_shapes++] =
            (gpu_coopmat_shape){p[i].MSize, p[i].NSize, p[i].KSize,     p[i].AType,
                                p[i].BType, p[i].CType, p[i].ResultType};
    }
    free(p);
}

/* Fills `info` for one physical device; false if it cannot run vkllm (reason in why). */
static bool gpu_describe_device(VkPhysicalDevice physical, uint32_t instance_api,
                                bool allow_khr_coopmat, gpu_device_info *info, gpu_chain *c) {
    memset(info, 0, sizeof *info);
    memset(c, 0, sizeof *c);
    info->physical = physical;
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(physical, &props);
    uint32_t api = props.apiVersion < instance_api ? props.apiVersion : instance_api;
    info->api_version = api;
    gpu_features *f = &info->features;
    snprintf(f->name, sizeof f->name, "%s", props.deviceName);
    f->vendor_id = props.vendorID;
    f->device_id = props.deviceID;
    f->api_version = props.apiVersion;
    f->kind = gpu_kind_of(props.deviceType);
    info->driver_version = props.driverVersion;
    memcpy(info->pipeline_cache_uuid, props.pipelineCacheUUID, VK_UUID_SIZE);
    snprintf(f->driver, sizeof f->driver, "driver version 0x%x", props.driverVersion);
    if (api < VK_API_VERSION_1_1) return false;

    info->allow_khr_coopmat = allow_khr_coopmat;
    gpu_chain_query(physical, api, allow_khr_coopmat, c);
    const VkPhysicalDeviceLimits *l = &c->properties.properties.limits;
    if (c->usable[EXT_DRIVER_PROPERTIES])
        snprintf(f->driver, sizeof f->driver, "%.120s / %.120s", c->driver.driverName,
                 c->driver.driverInfo);

    f->fp16_arithmetic = c->float16_int8.shaderFloat16;
    f->int8_arithmetic = c->float16_int8.shaderInt8;
    f->int64 = c->features.features.shaderInt64;
    f->int16 = c->features.features.shaderInt16;
    f->storage16 = c->storage16.storageBuffer16BitAccess;
    f->storage8 = c->storage8.storageBuffer8BitAccess;
    f->integer_dot_product = c->dot_product.shaderIntegerDotProduct;
    f->integer_dot_accelerated =
        f->integer_dot_product &&
        c->dot_product_props.integerDotProduct4x8BitPackedSignedAccelerated;
    f->buffer_device_address = c->bda.bufferDeviceAddress;
    f->coopmat_nv = c->has_ext[EXT_COOPMAT_NV] && c->coopmat_nv.cooperativeMatrix;
    f->coopmat_khr = c->has_ext[EXT_COOPMAT_KHR] && c->coopmat_khr.cooperativeMatrix;
    f->memory_budget = c->has_ext[EXT_MEMORY_BUDGET];
    f->push_descriptor = c->has_ext[EXT_PUSH_DESCRIPTOR];
    f->vulkan_memory_model = c->memory_model.vulkanMemoryModel;
    f->scalar_block_layout = c->scalar_block.scalarBlockLayout;
    f->subgroup_extended_types = c->extended_types.shaderSubgroupExtendedTypes;
    f->pipeline_creation_feedback = c->usable[EXT_CREATION_FEEDBACK];
    info->feedback = f->pipeline_creation_feedback;
    info->executable_statistics =
        c->has_ext[EXT_EXECUTABLE_PROPERTIES] && c->executable_properties.pipelineExecutableInfo;

    f->subgroup_size = c->subgroup.subgroupSize;
    f->subgroup_min_size = f->subgroup_max_size = f->subgroup_size;
    if (c->usable[EXT_SUBGROUP_SIZE_CONTROL] && c->subgroup_size_control.subgroupSizeControl &&
        (c->subgroup_size_props.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT)) {
        f->subgroup_size_control = true;
        f->subgroup_min_size = c->subgroup_size_props.minSubgroupSize;
        f->subgroup_max_size = c->subgroup_size_props.maxSubgroupSize;
        f->compute_full_subgroups = c->subgroup_size_control.computeFullSubgroups;
    }
    info->compute_full_subgroups = f->compute_full_subgroups;
    bool compute = c->subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT;
    VkSubgroupFeatureFlags ops = compute ? c->subgroup.supportedOperations : 0;
    f->subgroup_basic = ops & VK_SUBGROUP_FEATURE_BASIC_BIT;
    f->subgroup_vote = ops & VK_SUBGROUP_FEATURE_VOTE_BIT;
    f->subgroup_arithmetic = ops & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT;
    f->subgroup_ballot = ops & VK_SUBGROUP_FEATURE_BALLOT_BIT;
    f->subgroup_shuffle = ops & VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
    f->subgroup_shuffle_relative = ops & VK_SUBGROUP_FEATURE_SHUFFLE_RELATIVE_BIT;
    f->subgroup_clustered = ops & VK_SUBGROUP_FEATURE_CLUSTERED_BIT;
    f->subgroup_quad = ops & VK_SUBGROUP_FEATURE_QUAD_BIT;

    f->max_shared_memory = l->maxComputeSharedMemorySize;
    f->max_storage_buffer_range = l->maxStorageBufferRange;
    f->max_allocation_size = c->maintenance3.maxMemoryAllocationSize;
    f->min_storage_offset_alignment = l->minStorageBufferOffsetAlignment;
    f->max_workgroup_invocations = l->maxComputeWorkGroupInvocations;
    for (int i = 0; i < 3; i++) {
        f->max_workgroup_size[i] = l->maxComputeWorkGroupSize[i];
        f->max_workgroup_count[i] = l->maxComputeWorkGroupCount[i];
    }
    f->max_push_constants_size = l->maxPushConstantsSize;
    f->non_coherent_atom_size = l->nonCoherentAtomSize;
    info->non_coherent_atom_size = l->nonCoherentAtomSize;
    f->timestamp_period_ns = l->timestampPeriod;
    if (c->usable[EXT_MAINTENANCE4]) f->max_buffer_size = c->maintenance4_props.maxBufferSize;
    info->max_buffer_size = f->max_buffer_size;

    VkPhysicalDeviceMemoryProperties mem;
    vkGetPhysicalDeviceMemoryProperties(physical, &mem);
    for (uint32_t i = 0; i < mem.memoryHeapCount; i++)
        if ((mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            mem.memoryHeaps[i].size > f->device_local_bytes)
            f->device_local_bytes = mem.memoryHeaps[i].size;

    /* the queue: the first compute family with timestamps, else the first compute family */
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(physical, &nq, NULL);
    VkQueueFamilyProperties *q = calloc(nq ? nq : 1, sizeof *q);
    if (!q) return false;
    vkGetPhysicalDeviceQueueFamilyProperties(physical, &nq, q);
    uint32_t chosen = UINT32_MAX;
    for (uint32_t i = 0; i < nq && chosen == UINT32_MAX; i++)
        if ((q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && q[i].timestampValidBits) chosen = i;
    for (uint32_t i = 0; i < nq && chosen == UINT32_MAX; i++)
        if (q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) chosen = i;
    if (chosen != UINT32_MAX) {
        info->queue_family = chosen;
        info->timestamp_valid_bits = q[chosen].timestampValidBits;
        f->timestamps = q[chosen].timestampValidBits > 0 && l->timestampPeriod > 0;
    }
    free(q);
    if (chosen == UINT32_MAX) return false;

    if (f->coopmat_nv) gpu_coopmat_shapes(physical, false, f);
    if (f->coopmat_khr) gpu_coopmat_shapes(physical, true, f);
    return true;
}

vkllm_status gpu_query_devices(VkInstance instance, uint32_t instance_api, bool allow_khr_coopmat,
                               gpu_device_info **out, uint32_t *count) {
    *out = NULL;
    *count = 0;
    uint32_t n = 0;
    GPU_VK_TRY(vkEnumeratePhysicalDevices(instance, &n, NULL), "vkEnumeratePhysicalDevices",
               "counting devices");
    if (n == 0)
        return vkl_fail(VKLLM_ERR_NO_DEVICE, "no Vulkan device found (is a driver such as "
                                             "mesa-vulkan-drivers installed?)");
    VkPhysicalDevice *physical = calloc(n, sizeof *physical);
    gpu_device_info *infos = calloc(n, sizeof *infos);
    gpu_chain *chain = calloc(1, sizeof *chain);
    if (!physical || !infos || !chain) {
        free(physical), free(infos), free(chain);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "device list of %u", n);
    }
    VkResult r = vkEnumeratePhysicalDevices(instance, &n, physical);
    if (r < 0) {
        free(physical), free(infos), free(chain);
        return gpu_vk_fail(r, "vkEnumeratePhysicalDevices", "listing %u devices", n);
    }
    pin_driver_objects(); /* the drivers are loaded by now */
    uint32_t usable = 0;
    for (uint32_t i = 0; i < n; i++) {
        /* unusable devices (Vulkan 1.0, no compute queue) are skipped */
        if (gpu_describe_device(physical[i], instance_api, allow_khr_coopmat, &infos[usable],
                                chain))
            usable++;
    }
    free(physical);
    free(chain);
    if (usable == 0) {
        free(infos);
        return vkl_fail(VKLLM_ERR_NO_DEVICE,
                        "%u Vulkan device(s) found but none has Vulkan 1.1 "
                        "and a compute queue",
                        n);
    }
    *out = infos;
    *count = usable;
    return VKLLM_OK;
}

static int gpu_kind_rank(gpu_device_kind kind) {
    switch (kind) {
    case GPU_KIND_DISCRETE:
        return 4;
    case GPU_KIND_INTEGRATED:
        return 3;
    case GPU_KIND_VIRTUAL:
        return 2;
    case GPU_KIND_CPU:
        return 1;
    default:
        return 0;
    }
}

static bool gpu_contains_nocase(const char *haystack, const char *needle) {
    size_t hn = strlen(haystack), nn = strlen(needle);
    for (size_t i = 0; i + nn <= hn; i++) {
        size_t j = 0;
        while (j < nn &&
               tolower((unsigned char)haystack[i + j]) == tolower((unsigned char)needle[j]))
            j++;
        if (j == nn) return true;
    }
    return false;
}

vkllm_status gpu_choose_device(const gpu_features *devices, uint32_t count, const char *requested,
                               const char *source, uint32_t *chosen) {
    if (!requested || !requested[0]) {
        uint32_t best = 0;
        for (uint32_t i = 1; i < count; i++)
            if (gpu_kind_rank(devices[i].kind) > gpu_kind_rank(devices[best].kind)) best = i;
        *chosen = best;
        return VKLLM_OK;
    }
    bool numeric = true;
    for (const char *p = requested; *p; p++)
        if (!isdigit((unsigned char)*p)) numeric = false;
    if (numeric) {
        unsigned long index = strtoul(requested, NULL, 10);
        if (index < count) {
            *chosen = (uint32_t)index;
            return VKLLM_OK;
        }
    } else {
        for (uint32_t i = 0; i < count; i++)
            if (gpu_contains_nocase(devices[i].name, requested)) {
                *chosen = i;
                return VKLLM_OK;
            }
    }
    char list[VKL_ERROR_MAX / 2];
    size_t used = 0;
    list[0] = '\0';
    for (uint32_t i = 0; i < count && used < sizeof list; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%u: %s", i ? "; " : "", i,
                         devices[i].name);
        if (w < 0) break;
        used += (size_t)w;
    }
    return vkl_fail(VKLLM_ERR_NO_DEVICE, "%s=\"%s\" matches no Vulkan device (%s); devices: %s",
                    source, requested, numeric ? "index out of range" : "no name contains it",
                    list);
}

vkllm_status gpu_list_devices(gpu_features **out, uint32_t *count) {
    *out = NULL;
    *count = 0;
    gpu_instance_setup setup = {0};
    VkInstance instance;
    VKL_TRY(gpu_create_instance(NULL, &setup, &instance));
    gpu_device_info *infos;
    uint32_t n;
    vkllm_status status = gpu_query_devices(instance, gpu_instance_api(), true, &infos, &n);
    vkDestroyInstance(instance, NULL);
    if (status != VKLLM_OK) return status;
    gpu_features *features = calloc(n, sizeof *features);
    if (!features) {
        free(infos);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "feature list of %u devices", n);
    }
    for (uint32_t i = 0; i < n; i++)
        features[i] = infos[i].features;
    free(infos);
    *out = features;
    *count = n;
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- printing */

static const char *gpu_kind_name(gpu_device_kind kind) {
    switch (kind) {
    case GPU_KIND_DISCRETE:
        return "discrete GPU";
    case GPU_KIND_INTEGRATED:
        return "integrated GPU";
    case GPU_KIND_VIRTUAL:
        return "virtual GPU";
    case GPU_KIND_CPU:
        return "CPU";
    default:
        return "other";
    }
}

static const char *gpu_component_name(uint32_t type) {
    static const char *names[] = {"f16", "f32", "f64", "s8",  "s16", "s32",
                                  "s64", "u8",  "u16", "u32", "u64"};
    return type < sizeof names / sizeof names[0] ? names[type] : "?";
}

static void gpu_print_shapes(FILE *out, const char *what, const gpu_coopmat_shape *s, uint32_t n) {
    if (!n) return;
    fprintf(out, "  %-28s", what);
    for (uint32_t i = 0; i < n; i++)
        fprintf(out, "%s%ux%ux%u %s*%s+%s->%s", i ? ", " : "", s[i].m, s[i].n, s[i].k,
                gpu_component_name(s[i].a_type), gpu_component_name(s[i].b_type),
                gpu_component_name(s[i].c_type), gpu_component_name(s[i].result_type));
    fprintf(out, "\n");
}

void gpu_features_print(const gpu_features *f, void *file) {
    FILE *out = file;
#define YN(x) ((x) ? "yes" : "no")
    fprintf(out, "%s (%s)\n", f->name, gpu_kind_name(f->kind));
    fprintf(out, "  %-28s%s\n", "driver", f->driver);
    fprintf(out, "  %-28s%u.%u.%u\n", "Vulkan", VK_API_VERSION_MAJOR(f->api_version),
            VK_API_VERSION_MINOR(f->api_version), VK_API_VERSION_PATCH(f->api_version));
    fprintf(out, "  %-28s0x%04x / 0x%04x\n", "vendor / device id", f->vendor_id, f->device_id);
    fprintf(out, "  %-28sfp16 %s, int8 %s, int16 %s, int64 %s\n", "arithmetic",
            YN(f->fp16_arithmetic), YN(f->int8_arithmetic), YN(f->int16), YN(f->int64));
    fprintf(out, "  %-28s16-bit %s, 8-bit %s, scalar layout %s\n", "storage access",
            YN(f->storage16), YN(f->storage8), YN(f->scalar_block_layout));
    fprintf(out, "  %-28s%s\n", "integer dot product", YN(f->integer_dot_product));
    fprintf(out, "  %-28s%s\n", "integer dot accelerated", YN(f->integer_dot_accelerated));
    fprintf(out, "  %-28sNV %s, KHR %s\n", "cooperative matrix", YN(f->coopmat_nv),
            YN(f->coopmat_khr));
    gpu_print_shapes(out, "  NV shapes", f->coopmat_nv_shapes, f->num_coopmat_nv_shapes);
    gpu_print_shapes(out, "  KHR shapes", f->coopmat_khr_shapes, f->num_coopmat_khr_shapes);
    fprintf(out, "  %-28s%s\n", "buffer device address", YN(f->buffer_device_address));
    fprintf(out, "  %-28s%s\n", "vulkan memory model", YN(f->vulkan_memory_model));
    fprintf(out, "  %-28s%s\n", "memory budget", YN(f->memory_budget));
    fprintf(out, "  %-28s%s\n", "push descriptors", YN(f->push_descriptor));
    fprintf(out, "  %-28s%s\n", "pipeline creation feedback", YN(f->pipeline_creation_feedback));
    fprintf(out, "  %-28s%u (min %u, max %u), size control %s, full subgroups %s\n",
            "subgroup size", f->subgroup_size, f->subgroup_min_size, f->subgroup_max_size,
            YN(f->subgroup_size_control), YN(f->compute_full_subgroups));
    fprintf(out,
            "  %-28sbasic %s, vote %s, arithmetic %s, ballot %s, shuffle %s, shuffle-relative "
            "%s, clustered %s, quad %s, extended types %s\n",
            "subgroup ops (compute)", YN(f->subgroup_basic), YN(f->subgroup_vote),
            YN(f->subgroup_arithmetic), YN(f->subgroup_ballot), YN(f->subgroup_shuffle),
            YN(f->subgroup_shuffle_relative), YN(f->subgroup_clustered), YN(f->subgroup_quad),
            YN(f->subgroup_extended_types));
    fprintf(out, "  %-28s%u bytes\n", "shared memory", f->max_shared_memory);
    fprintf(out, "  %-28s%llu bytes (%.1f MiB)\n", "storage buffer range",
            (unsigned long long)f->max_storage_buffer_range,
            (double)f->max_storage_buffer_range / (1 << 20));
    fprintf(out, "  %-28s%llu bytes (%.1f MiB)\n", "max allocation",
            (unsigned long long)f->max_allocation_size, (double)f->max_allocation_size / (1 << 20));
    if (f->max_buffer_size)
        fprintf(out, "  %-28s%llu bytes (%.1f MiB)\n", "max buffer",
                (unsigned long long)f->max_buffer_size, (double)f->max_buffer_size / (1 << 20));
    fprintf(out, "  %-28s%llu bytes (%.1f GiB)\n", "device-local heap",
            (unsigned long long)f->device_local_bytes, (double)f->device_local_bytes / (1 << 30));
    fprintf(out, "  %-28s%llu bytes\n", "storage offset alignment",
            (unsigned long long)f->min_storage_offset_alignment);
    fprintf(out, "  %-28s%llu bytes\n", "non-coherent atom",
            (unsigned long long)f->non_coherent_atom_size);
    fprintf(out, "  %-28s%u invocations, size %u x %u x %u, count %u x %u x %u\n", "workgroups",
            f->max_workgroup_invocations, f->max_workgroup_size[0], f->max_workgroup_size[1],
            f->max_workgroup_size[2], f->max_workgroup_count[0], f->max_workgroup_count[1],
            f->max_workgroup_count[2]);
    fprintf(out, "  %-28s%u bytes\n", "push constants", f->max_push_constants_size);
    fprintf(out, "  %-28s%s (%.3g ns per tick)\n", "timestamps", YN(f->timestamps),
            (double)f->timestamp_period_ns);
#undef YN
}

/* ---------------------------------------------------------------- context */

static bool gpu_env_validation(bool *sync) {
    const char *v = getenv("VKLLM_VALIDATION");
    *sync = v && !strcmp(v, "sync");
    return v && v[0] && strcmp(v, "0") != 0;
}

static vkllm_status gpu_create_device(gpu_context *ctx) {
    gpu_device_info *info = &ctx->info;
    gpu_chain *c = calloc(1, sizeof *c);
    if (!c) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "feature chain");
    gpu_chain_query(ctx->physical, info->api_version, info->allow_khr_coopmat, c);
    gpu_chain_trim_for_create(c);

    /* extensions: every one we know that the device lists (and that is not core) */
    const char *names[EXT_COUNT];
    uint32_t n = 0;
    for (int e = 0; e < EXT_COUNT; e++) {
        if (!c->has_ext[e]) continue;
        if (e == EXT_COOPMAT_NV && !info->features.coopmat_nv) continue;
        if (e == EXT_COOPMAT_KHR && !info->features.coopmat_khr) continue;
        names[n++] = gpu_ext_defs[e].name;
    }
    /* the KHR and NV cooperative matrix extensions may not both be enabled on some
     * drivers' validation; prefer enabling both only when both report support */
    float priority = 1.0f;
    VkDeviceQueueCreateInfo queue = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = info->queue_family,
        .queueCount = 1,
        .pQueuePriorities = &priority,
    };
    VkDeviceCreateInfo create = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = &c->features,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &queue,
        .enabledExtensionCount = n,
        .ppEnabledExtensionNames = names,
    };
    VkResult r = vkCreateDevice(ctx->physical, &create, NULL, &ctx->device);
    free(c);
    if (r < 0) return gpu_vk_fail(r, "vkCreateDevice", "device \"%s\"", info->features.name);
    volkLoadDeviceTable(&ctx->vk, ctx->device);
    ctx->vk.vkGetDeviceQueue(ctx->device, info->queue_family, 0, &ctx->queue);
    ctx->use_push_descriptors = info->features.push_descriptor;
    ctx->buffer_device_address = info->features.buffer_device_address;
    return VKLLM_OK;
}

vkllm_status gpu_context_create(const gpu_context_options *options, gpu_context **out) {
    static const gpu_context_options defaults = {0};
    if (!options) options = &defaults;
    *out = NULL;
    gpu_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "gpu_context");
    bool sync = false;
    bool env_validation = gpu_env_validation(&sync);
    gpu_instance_setup setup = {.validation = options->validation || env_validation,
                                .sync_validation = sync,
                                .allow_khr_coopmat = true};
    vkllm_status status = gpu_create_instance(ctx, &setup, &ctx->instance);
    if (status != VKLLM_OK) goto fail;
    ctx->validation = setup.validation;

    gpu_device_info *devices = NULL;
    uint32_t count = 0, chosen = 0;
    status = gpu_query_devices(ctx->instance, gpu_instance_api(), setup.allow_khr_coopmat, &devices,
                               &count);
    if (status != VKLLM_OK) goto fail;
    const char *requested = options->device;
    const char *source = "gpu_context_options.device";
    if (!requested) {
        requested = getenv("VKLLM_DEVICE");
        source = "VKLLM_DEVICE";
    }
    gpu_features *features = calloc(count, sizeof *features);
    if (!features) {
        free(devices);
        status = vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "device list");
        goto fail;
    }
    for (uint32_t i = 0; i < count; i++)
        features[i] = devices[i].features;
    status = gpu_choose_device(features, count, requested, source, &chosen);
    free(features);
    if (status == VKLLM_OK) ctx->info = devices[chosen];
    free(devices);
    if (status != VKLLM_OK) goto fail;
    ctx->physical = ctx->info.physical;
    vkGetPhysicalDeviceMemoryProperties(ctx->physical, &ctx->memory_properties);

    status = gpu_create_device(ctx);
    if (status != VKLLM_OK) goto fail;
    if (options->no_push_descriptors) ctx->use_push_descriptors = false;
    VkCommandPoolCreateInfo pool = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = ctx->info.queue_family,
    };
    VkResult r = ctx->vk.vkCreateCommandPool(ctx->device, &pool, NULL, &ctx->command_pool);
    if (r < 0) {
        status = gpu_vk_fail(r, "vkCreateCommandPool", "compute queue family %u",
                             ctx->info.queue_family);
        goto fail;
    }
    for (int k = 0; k < 3; k++) {
        ctx->pools[k].kind = (gpu_memory_kind)k;
        ctx->pools[k].type_index = UINT32_MAX;
    }
    status = gpu_pipeline_cache_open(ctx, options->pipeline_cache_dir);
    if (status != VKLLM_OK) goto fail;
    *out = ctx;
    return VKLLM_OK;

fail:
    gpu_context_destroy(ctx);
    return status;
}

void gpu_context_destroy(gpu_context *ctx) {
    if (!ctx) return;
    if (ctx->device) {
        ctx->vk.vkDeviceWaitIdle(ctx->device);
        gpu_pipelines_destroy(ctx); /* saves the disk cache first */
        gpu_cmd_destroy_slots(ctx);
        gpu_ring_destroy(ctx);
        gpu_staging_destroy(ctx);
        gpu_memory_destroy_all(ctx);
        if (ctx->command_pool) ctx->vk.vkDestroyCommandPool(ctx->device, ctx->command_pool, NULL);
        ctx->vk.vkDestroyDevice(ctx->device, NULL);
    }
    if (ctx->messenger) vkDestroyDebugUtilsMessengerEXT(ctx->instance, ctx->messenger, NULL);
    if (ctx->instance) vkDestroyInstance(ctx->instance, NULL);
    free(ctx);
}

const gpu_features *gpu_context_features(const gpu_context *ctx) {
    return &ctx->info.features;
}

uint32_t gpu_validation_errors(const gpu_context *ctx) {
    return ctx->validation_errors;
}

bool gpu_validation_enabled(const gpu_context *ctx) {
    return ctx->validation;
}

vkllm_status gpu_pick_device(const gpu_features *devices, uint32_t count, const char *requested,
                             uint32_t *index) {
    const char *source = "device";
    if (!requested) {
        requested = getenv("VKLLM_DEVICE");
        source = "VKLLM_DEVICE";
    }
    return gpu_choose_device(devices, count, requested, source, index);
}
