/* gpu_pipeline.c: embedded-shader lookup, a minimal SPIR-V interface scan,
 * compute pipelines (with spec constants and required subgroup size) and the
 * on-disk pipeline cache.
 *
 * Invariants: one VkPipeline per distinct gpu_pipeline_desc (hash table keyed on
 * every field that affects the pipeline); shader modules and layouts are shared
 * and live until the context dies. The cache file is named after vendor id,
 * device id, driver version and pipelineCacheUUID, and its header is checked
 * against the device before the driver sees it; it is written to a temporary
 * file and renamed, so a crash never leaves a torn cache behind. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpu_internal.h"
#include "common/clock.h"

const gpu_shader_blob *gpu_find_shader(const char *name) {
    if (!name) return NULL;
    for (const gpu_shader_blob *b = gpu_all_shaders(); b->name; b++)
        if (!strcmp(b->name, name)) return b;
    return NULL;
}

/* ---------------------------------------------------------------- SPIR-V scan */

enum {
    SPV_MAGIC = 0x07230203,
    OP_EXECUTION_MODE = 16,
    OP_CAPABILITY = 17,
    OP_TYPE_BOOL = 20,
    OP_TYPE_INT = 21,
    OP_TYPE_FLOAT = 22,
    OP_TYPE_VECTOR = 23,
    OP_TYPE_MATRIX = 24,
    OP_TYPE_ARRAY = 28,
    OP_TYPE_RUNTIME_ARRAY = 29,
    OP_TYPE_STRUCT = 30,
    OP_TYPE_POINTER = 32,
    OP_CONSTANT = 43,
    OP_VARIABLE = 59,
    OP_DECORATE = 71,
    OP_MEMBER_DECORATE = 72,
    DEC_SPEC_ID = 1,
    DEC_BLOCK = 2,
    DEC_BUFFER_BLOCK = 3,
    DEC_ARRAY_STRIDE = 6,
    DEC_MATRIX_STRIDE = 7,
    DEC_BINDING = 33,
    DEC_DESCRIPTOR_SET = 34,
    DEC_OFFSET = 35,
    DEC_NON_WRITABLE = 24,
    SC_UNIFORM = 2,
    SC_PUSH_CONSTANT = 9,
    SC_STORAGE_BUFFER = 12,
    EM_LOCAL_SIZE = 17,
};

typedef struct spv_id {
    const uint32_t *def; /* the defining instruction (types, constants, variables) */
    uint32_t binding, set, array_stride, matrix_stride;
    uint32_t non_writable_members; /* struct members decorated NonWritable */
    bool has_binding, block, buffer_block, non_writable;
} spv_id;

typedef struct spv_scan {
    const uint32_t *code;
    size_t words;
    uint32_t bound;
    spv_id *ids;
    /* member offsets: (struct id, member, offset) */
    uint32_t (*offsets)[3];
    size_t num_offsets;
} spv_scan;

static uint32_t spv_member_offset(const spv_scan *s, uint32_t type, uint32_t member, bool *found) {
    for (size_t i = 0; i < s->num_offsets; i++)
        if (s->offsets[i][0] == type && s->offsets[i][1] == member) {
            *found = true;
            return s->offsets[i][2];
        }
    *found = false;
    return 0;
}

/* Size in bytes of a type in an explicitly laid out block (0 if unknown). */
static uint64_t spv_type_size(const spv_scan *s, uint32_t type, int depth) {
    if (type >= s->bound || !s->ids[type].def || depth > 16) return 0;
    const uint32_t *d = s->ids[type].def;
    switch (d[0] & 0xffff) {
    case OP_TYPE_BOOL:
        return 4;
    case OP_TYPE_INT:
    case OP_TYPE_FLOAT:
        return d[2] / 8;
    case OP_TYPE_VECTOR:
        return spv_type_size(s, d[2], depth + 1) * d[3];
    case OP_TYPE_MATRIX: {
        uint32_t stride = s->ids[type].matrix_stride;
        return (uint64_t)(stride ? stride : spv_type_size(s, d[2], depth + 1)) * d[3];
    }
    case OP_TYPE_ARRAY: {
        uint32_t length_id = d[3];
        uint64_t length = 0;
        if (length_id < s->bound && s->ids[length_id].def &&
            (s->ids[length_id].def[0] & 0xffff) == OP_CONSTANT)
            length = s->ids[length_id].def[3];
        uint32_t stride = s->ids[type].array_stride;
        return length * (stride ? stride : spv_type_size(s, d[2], depth + 1));
    }
    case OP_TYPE_STRUCT: {
        uint32_t members = (d[0] >> 16) - 2;
        uint64_t end = 0;
        for (uint32_t m = 0; m < members; m++) {
            bool found;
            uint32_t offset = spv_member_offset(s, type, m, &found);
            uint64_t e = offset + spv_type_size(s, d[2 + m], depth + 1);
            if (e > end) end = e;
        }
        return end;
    }
    default:
        return 0;
    }
}

vkllm_status gpu_shader_reflect(const gpu_shader_blob *blob, gpu_shader_interface *out) {
    memset(out, 0, sizeof *out);
    if (!blob || !blob->code || blob->size_bytes < 20 || blob->size_bytes % 4 ||
        blob->code[0] != SPV_MAGIC)
        return vkl_fail(VKLLM_ERR_FORMAT, "shader %s: not a SPIR-V module (size %zu)",
                        blob && blob->name ? blob->name : "?", blob ? blob->size_bytes : 0);
    spv_scan s = {.code = blob->code, .words = blob->size_bytes / 4, .bound = blob->code[3]};
    if (s.bound > (1u << 22))
        return vkl_fail(VKLLM_ERR_FORMAT, "shader %s: SPIR-V id bound %u is implausible",
                        blob->name, s.bound);
    s.ids = calloc(s.bound ? s.bound : 1, sizeof *s.ids);
    s.offsets = calloc(s.words, sizeof *s.offsets);
    if (!s.ids || !s.offsets) {
        free(s.ids), free(s.offsets);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "SPIR-V scan of %s", blob->name);
    }
    vkllm_status status = VKLLM_OK;
    /* pass 1: definitions and decorations */
    for (size_t at = 5; at < s.words;) {
        const uint32_t *ins = s.code + at;
        uint32_t count = ins[0] >> 16, op = ins[0] & 0xffff;
        if (count == 0 || at + count > s.words) {
            status = vkl_fail(VKLLM_ERR_FORMAT,
                              "shader %s: truncated SPIR-V instruction at word "
                              "%zu",
                              blob->name, at);
            break;
        }
        uint32_t result = UINT32_MAX;
        switch (op) {
        case OP_TYPE_BOOL:
        case OP_TYPE_INT:
        case OP_TYPE_FLOAT:
        case OP_TYPE_VECTOR:
        case OP_TYPE_MATRIX:
        case OP_TYPE_ARRAY:
        case OP_TYPE_RUNTIME_ARRAY:
        case OP_TYPE_STRUCT:
        case OP_TYPE_POINTER:
            result = count > 1 ? ins[1] : UINT32_MAX;
            break;
        case OP_CONSTANT:
        case OP_VARIABLE:
            result = count > 2 ? ins[2] : UINT32_MAX;
            break;
        case OP_CAPABILITY:
            if (count >= 2 && out->num_capabilities < 48)
                out->capabilities[out->num_capabilities++] = ins[1];
            break;
        case OP_EXECUTION_MODE:
            if (count >= 6 && ins[2] == EM_LOCAL_SIZE)
                for (int i = 0; i < 3; i++)
                    out->local_size[i] = ins[3 + i];
            break;
        case OP_DECORATE:
            if (count >= 3 && ins[1] < s.bound) {
                spv_id *id = &s.ids[ins[1]];
                uint32_t value = count >= 4 ? ins[3] : 0;
                switch (ins[2]) {
                case DEC_BINDING:
                    id->binding = value, id->has_binding = true;
                    break;
                case DEC_DESCRIPTOR_SET:
                    id->set = value;
                    break;
                case DEC_BLOCK:
                    id->block = true;
                    break;
                case DEC_BUFFER_BLOCK:
                    id->buffer_block = true;
                    break;
                case DEC_NON_WRITABLE:
                    id->non_writable = true;
                    break;
                case DEC_ARRAY_STRIDE:
                    id->array_stride = value;
                    break;
                case DEC_SPEC_ID:
                    if (value + 1 > out->num_spec_constants) out->num_spec_constants = value + 1;
                    break;
                default:
                    break;
                }
            }
            break;
        case OP_MEMBER_DECORATE:
            if (count >= 4 && ins[3] == DEC_NON_WRITABLE && ins[1] < s.bound)
                s.ids[ins[1]].non_writable_members++;
            if (count >= 5 && ins[3] == DEC_OFFSET) {
                s.offsets[s.num_offsets][0] = ins[1];
                s.offsets[s.num_offsets][1] = ins[2];
                s.offsets[s.num_offsets][2] = ins[4];
                s.num_offsets++;
            } else if (count >= 5 && ins[3] == DEC_MATRIX_STRIDE && ins[1] < s.bound) {
                /* approximate: a matrix member's stride is kept on the struct id */
                s.ids[ins[1]].matrix_stride = ins[4];
            }
            break;
        default:
            break;
        }
        if (result != UINT32_MAX && result < s.bound) s.ids[result].def = ins;
        at += count;
    }
    /* pass 2: variables */
    for (uint32_t v = 0; v < s.bound && status == VKLLM_OK; v++) {
        const uint32_t *d = s.ids[v].def;
        if (!d || (d[0] & 0xffff) != OP_VARIABLE) continue;
        uint32_t storage = d[3];
        uint32_t pointer = d[1];
        if (pointer >= s.bound || !s.ids[pointer].def ||
            (s.ids[pointer].def[0] & 0xffff) != OP_TYPE_POINTER)
            continue;
        uint32_t pointee = s.ids[pointer].def[3];
        if (storage == SC_PUSH_CONSTANT) {
            uint64_t size = spv_type_size(&s, pointee, 0);
            if (size > out->push_constant_size) out->push_constant_size = (uint32_t)size;
        } else if (storage == SC_STORAGE_BUFFER || storage == SC_UNIFORM) {
            if (!s.ids[v].has_binding) continue;
            /* an array of blocks: look through to the element type */
            uint32_t block = pointee;
            if (block < s.bound && s.ids[block].def &&
                ((s.ids[block].def[0] & 0xffff) == OP_TYPE_ARRAY ||
                 (s.ids[block].def[0] & 0xffff) == OP_TYPE_RUNTIME_ARRAY))
                block = s.ids[block].def[2];
            bool is_storage =
                storage == SC_STORAGE_BUFFER || (block < s.bound && s.ids[block].buffer_block);
            if (!is_storage) {
                status = vkl_fail(VKLLM_ERR_UNSUPPORTED,
                                  "shader %s: binding %u is a uniform buffer; the gpu layer binds "
                                  "storage buffers only (use `buffer`, not `uniform`)",
                                  blob->name, s.ids[v].binding);
                break;
            }
            if (s.ids[v].set != 0) {
                status = vkl_fail(VKLLM_ERR_UNSUPPORTED,
                                  "shader %s: binding %u uses descriptor set %u; only set 0 "
                                  "is bound",
                                  blob->name, s.ids[v].binding, s.ids[v].set);
                break;
            }
            if (s.ids[v].binding + 1 > out->num_bindings) out->num_bindings = s.ids[v].binding + 1;
            /* read-only: the variable, or every member of its block, is NonWritable */
            bool read_only = s.ids[v].non_writable;
            if (!read_only && block < s.bound && s.ids[block].def &&
                (s.ids[block].def[0] & 0xffff) == OP_TYPE_STRUCT) {
                uint32_t members = (s.ids[block].def[0] >> 16) - 2;
                read_only = members > 0 && s.ids[block].non_writable_members >= members;
            }
            if (!read_only && s.ids[v].binding < 32) out->writable_mask |= 1u << s.ids[v].binding;
        }
    }
    free(s.ids);
    free(s.offsets);
    return status;
}

/* SPIR-V capabilities that depend on an optional device feature. */
typedef struct spv_capability_need {
    uint32_t capability;
    const char *name;
    size_t feature_offset; /* of a bool in gpu_features */
} spv_capability_need;

#define NEED(cap, name, field)                                                                     \
    { cap, name, offsetof(gpu_features, field) }
static const spv_capability_need spv_needs[] = {
    NEED(9, "Float16 (shaderFloat16)", fp16_arithmetic),
    NEED(11, "Int64 (shaderInt64)", int64),
    NEED(22, "Int16 (shaderInt16)", int16),
    NEED(39, "Int8 (shaderInt8)", int8_arithmetic),
    NEED(61, "GroupNonUniform", subgroup_basic),
    NEED(62, "GroupNonUniformVote", subgroup_vote),
    NEED(63, "GroupNonUniformArithmetic", subgroup_arithmetic),
    NEED(64, "GroupNonUniformBallot", subgroup_ballot),
    NEED(65, "GroupNonUniformShuffle", subgroup_shuffle),
    NEED(66, "GroupNonUniformShuffleRelative", subgroup_shuffle_relative),
    NEED(67, "GroupNonUniformClustered", subgroup_clustered),
    NEED(68, "GroupNonUniformQuad", subgroup_quad),
    NEED(4433, "StorageBuffer16BitAccess", storage16),
    NEED(4434, "UniformAndStorageBuffer16BitAccess", storage16),
    NEED(4448, "StorageBuffer8BitAccess", storage8),
    NEED(4449, "UniformAndStorageBuffer8BitAccess", storage8),
    NEED(5345, "VulkanMemoryModel", vulkan_memory_model),
    NEED(5347, "PhysicalStorageBufferAddresses", buffer_device_address),
    NEED(5357, "CooperativeMatrixNV", coopmat_nv),
    NEED(6016, "DotProductInputAll", integer_dot_product),
    NEED(6017, "DotProductInput4x8Bit", integer_dot_product),
    NEED(6018, "DotProductInput4x8BitPacked", integer_dot_product),
    NEED(6019, "DotProduct", integer_dot_product),
    NEED(6022, "CooperativeMatrixKHR", coopmat_khr),
};
#undef NEED

vkllm_status gpu_shader_check_device(const gpu_context *ctx, const gpu_shader_blob *blob,
                                     const gpu_shader_interface *iface) {
    const gpu_features *f = &ctx->info.features;
    for (uint32_t i = 0; i < iface->num_capabilities; i++)
        for (size_t n = 0; n < sizeof spv_needs / sizeof spv_needs[0]; n++) {
            if (spv_needs[n].capability != iface->capabilities[i]) continue;
            bool present;
            memcpy(&present, (const char *)f + spv_needs[n].feature_offset, sizeof present);
            if (!present)
                return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                                "shader %s needs SPIR-V capability %s, which device \"%s\" "
                                "does not have (see gpu_features; choose another variant)",
                                blob->name, spv_needs[n].name, f->name);
        }
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- modules, layouts */

static vkllm_status gpu_module_get(gpu_context *ctx, const gpu_shader_blob *blob,
                                   VkShaderModule *out) {
    for (uint32_t i = 0; i < ctx->num_modules; i++)
        if (ctx->modules[i].blob == blob) {
            *out = ctx->modules[i].module;
            return VKLLM_OK;
        }
    if (ctx->num_modules == ctx->modules_cap) {
        uint32_t cap = ctx->modules_cap ? ctx->modules_cap * 2 : 32;
        gpu_module_entry *grown = realloc(ctx->modules, cap * sizeof *grown);
        if (!grown) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "shader module table");
        ctx->modules = grown;
        ctx->modules_cap = cap;
    }
    VkShaderModuleCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = blob->size_bytes,
        .pCode = blob->code,
    };
    VkShaderModule module;
    GPU_VK_TRY(ctx->vk.vkCreateShaderModule(ctx->device, &info, NULL, &module),
               "vkCreateShaderModule", "shader %s (%zu bytes)", blob->name, blob->size_bytes);
    ctx->modules[ctx->num_modules++] = (gpu_module_entry){blob, module};
    *out = module;
    return VKLLM_OK;
}

static vkllm_status gpu_layout_get(gpu_context *ctx, uint32_t num_bindings, uint32_t push_size,
                                   VkPipelineLayout *out) {
    for (uint32_t i = 0; i < ctx->num_layouts; i++)
        if (ctx->layouts[i].num_bindings == num_bindings &&
            ctx->layouts[i].push_constant_size == push_size) {
            *out = ctx->layouts[i].layout;
            return VKLLM_OK;
        }
    if (ctx->num_layouts == ctx->layouts_cap) {
        uint32_t cap = ctx->layouts_cap ? ctx->layouts_cap * 2 : 16;
        gpu_layout_entry *grown = realloc(ctx->layouts, cap * sizeof *grown);
        if (!grown) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "pipeline layout table");
        ctx->layouts = grown;
        ctx->layouts_cap = cap;
    }
    VkDescriptorSetLayoutBinding bindings[GPU_MAX_BINDINGS];
    for (uint32_t i = 0; i < num_bindings; i++)
        bindings[i] = (VkDescriptorSetLayoutBinding){
            .binding = i,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    VkDescriptorSetLayoutCreateInfo set_info = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .flags =
            ctx->use_push_descriptors ? VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR : 0,
        .bindingCount = num_bindings,
        .pBindings = bindings,
    };
    gpu_layout_entry entry = {.num_bindings = num_bindings, .push_constant_size = push_size};
    GPU_VK_TRY(ctx->vk.vkCreateDescriptorSetLayout(ctx->device, &set_info, NULL, &entry.set_layout),
               "vkCreateDescriptorSetLayout", "%u storage buffers", num_bindings);
    VkPushConstantRange push = {VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size};
    VkPipelineLayoutCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &entry.set_layout,
        .pushConstantRangeCount = push_size ? 1 : 0,
        .pPushConstantRanges = &push,
    };
    VkResult r = ctx->vk.vkCreatePipelineLayout(ctx->device, &info, NULL, &entry.layout);
    if (r < 0) {
        ctx->vk.vkDestroyDescriptorSetLayout(ctx->device, entry.set_layout, NULL);
        return gpu_vk_fail(r, "vkCreatePipelineLayout", "%u bindings, %u push bytes", num_bindings,
                           push_size);
    }
    ctx->layouts[ctx->num_layouts++] = entry;
    *out = entry.layout;
    return VKLLM_OK;
}

/* ---------------------------------------------------------------- pipelines */

static uint32_t gpu_desc_hash(const gpu_pipeline_desc *d) {
    uint32_t h = 2166136261u;
#define GPU_MIX(x)                                                                                 \
    do {                                                                                           \
        h ^= (uint32_t)(x);                                                                        \
        h *= 16777619u;                                                                            \
    } while (0)
    for (const char *p = d->shader; *p; p++)
        GPU_MIX((unsigned char)*p);
    GPU_MIX(d->num_bindings);
    GPU_MIX(d->push_constant_size);
    GPU_MIX(d->num_spec_constants);
    for (uint32_t i = 0; i < d->num_spec_constants; i++)
        GPU_MIX(d->spec_constants[i]);
    GPU_MIX(d->required_subgroup_size);
#undef GPU_MIX
    return h;
}

static bool gpu_desc_equal(const gpu_pipeline *p, const gpu_pipeline_desc *d) {
    const gpu_pipeline_desc *e = &p->desc;
    return !strcmp(p->shader_name, d->shader) && e->num_bindings == d->num_bindings &&
           e->push_constant_size == d->push_constant_size &&
           e->num_spec_constants == d->num_spec_constants &&
           e->required_subgroup_size == d->required_subgroup_size &&
           !memcmp(e->spec_constants, d->spec_constants,
                   d->num_spec_constants * sizeof d->spec_constants[0]);
}

static double gpu_now_ms(void) {
    return vkl_monotonic_s() * 1e3;
}

static vkllm_status gpu_check_desc(gpu_context *ctx, const gpu_pipeline_desc *d,
                                   const gpu_shader_blob **blob_out,
                                   gpu_shader_interface *iface_out) {
    if (!d || !d->shader)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gpu_pipeline_get: no shader name");
    if (strlen(d->shader) >= sizeof((gpu_pipeline *)0)->shader_name)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gpu_pipeline_get: shader name too long: %s",
                        d->shader);
    const gpu_shader_blob *blob = gpu_find_shader(d->shader);
    if (!blob)
        return vkl_fail(VKLLM_ERR_NOT_FOUND,
                        "gpu_pipeline_get: no embedded shader variant named \"%s\" (variants are "
                        "declared by `// variant:` lines in shaders/*.comp)",
                        d->shader);
    const gpu_features *f = &ctx->info.features;
    if (d->num_bindings > GPU_MAX_BINDINGS)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "pipeline %s: %u bindings (at most %d)",
                        d->shader, d->num_bindings, GPU_MAX_BINDINGS);
    if (d->push_constant_size % 4 || d->push_constant_size > 128 ||
        d->push_constant_size > f->max_push_constants_size)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "pipeline %s: push_constant_size %u must be a multiple of 4 and at most "
                        "%u",
                        d->shader, d->push_constant_size,
                        f->max_push_constants_size < 128 ? f->max_push_constants_size : 128);
    if (d->num_spec_constants > GPU_MAX_SPEC_CONSTANTS)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "pipeline %s: %u spec constants (at most %d)",
                        d->shader, d->num_spec_constants, GPU_MAX_SPEC_CONSTANTS);
    uint32_t sg = d->required_subgroup_size;
    if (sg) {
        if (!f->subgroup_size_control)
            return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                            "pipeline %s: requires subgroup size %u but the device cannot "
                            "control subgroup size (it uses %u)",
                            d->shader, sg, f->subgroup_size);
        if (sg < f->subgroup_min_size || sg > f->subgroup_max_size || (sg & (sg - 1)))
            return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                            "pipeline %s: subgroup size %u is outside the device's range %u..%u "
                            "or not a power of two",
                            d->shader, sg, f->subgroup_min_size, f->subgroup_max_size);
    }
    gpu_shader_interface iface;
    VKL_TRY(gpu_shader_reflect(blob, &iface));
    VKL_TRY(gpu_shader_check_device(ctx, blob, &iface));
    if (iface.num_bindings > d->num_bindings)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "pipeline %s: the shader declares storage buffers up to binding %u but "
                        "the desc has num_bindings %u",
                        d->shader, iface.num_bindings - 1, d->num_bindings);
    if (iface.push_constant_size > d->push_constant_size)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "pipeline %s: the shader's push-constant block is %u bytes but the desc "
                        "has push_constant_size %u",
                        d->shader, iface.push_constant_size, d->push_constant_size);
    *blob_out = blob;
    *iface_out = iface;
    return VKLLM_OK;
}

bool gpu_env_pipeline_stats(void) {
    const char *v = getenv("VKLLM_PIPELINE_STATS");
    return v && v[0] && strcmp(v, "0") != 0;
}

/* One stderr line per executable: "pipeline stats: <shader> spec=a,b,..: name=value ...".
 * A diagnosis aid (why a kernel runs below its budget: register count, spills), so
 * failures to query are silent. */
static void gpu_pipeline_print_statistics(gpu_context *ctx, VkPipeline pipeline,
                                          const gpu_pipeline_desc *desc) {
    if (!ctx->vk.vkGetPipelineExecutablePropertiesKHR ||
        !ctx->vk.vkGetPipelineExecutableStatisticsKHR)
        return;
    VkPipelineInfoKHR pinfo = {.sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR, .pipeline = pipeline};
    VkPipelineExecutablePropertiesKHR props[4];
    uint32_t n_exec = 4;
    for (uint32_t i = 0; i < n_exec; i++)
        props[i] = (VkPipelineExecutablePropertiesKHR){
            .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_PROPERTIES_KHR};
    if (ctx->vk.vkGetPipelineExecutablePropertiesKHR(ctx->device, &pinfo, &n_exec, props) < 0)
        return;
    char spec[160] = "";
    for (uint32_t i = 0, at = 0; i < desc->num_spec_constants && at < sizeof spec - 12; i++)
        at += (uint32_t)snprintf(spec + at, sizeof spec - at, "%s%u", i ? "," : "",
                                 desc->spec_constants[i]);
    for (uint32_t e = 0; e < n_exec; e++) {
        VkPipelineExecutableInfoKHR einfo = {.sType =
                                                 VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR,
                                             .pipeline = pipeline,
                                             .executableIndex = e};
        VkPipelineExecutableStatisticKHR stats[24];
        uint32_t n_stats = 24;
        for (uint32_t i = 0; i < n_stats; i++)
            stats[i] = (VkPipelineExecutableStatisticKHR){
                .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR};
        if (ctx->vk.vkGetPipelineExecutableStatisticsKHR(ctx->device, &einfo, &n_stats, stats) < 0)
            continue;
        fprintf(stderr, "pipeline stats: %s spec=%s [%s]:", desc->shader, spec, props[e].name);
        for (uint32_t i = 0; i < n_stats; i++) {
            const VkPipelineExecutableStatisticKHR *st = &stats[i];
            switch (st->format) {
            case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
                fprintf(stderr, " %s=%s;", st->name, st->value.b32 ? "true" : "false");
                break;
            case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
                fprintf(stderr, " %s=%lld;", st->name, (long long)st->value.i64);
                break;
            case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
                fprintf(stderr, " %s=%llu;", st->name, (unsigned long long)st->value.u64);
                break;
            default:
                fprintf(stderr, " %s=%g;", st->name, st->value.f64);
            }
        }
        fputc('\n', stderr);
    }
}

vkllm_status gpu_pipeline_get(gpu_context *ctx, const gpu_pipeline_desc *desc, gpu_pipeline **out) {
    *out = NULL;
    if (!desc || !desc->shader)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gpu_pipeline_get: no shader name");
    uint32_t bucket = gpu_desc_hash(desc) % GPU_PIPELINE_BUCKETS;
    for (gpu_pipeline *p = ctx->pipeline_buckets[bucket]; p; p = p->next_in_bucket)
        if (gpu_desc_equal(p, desc)) {
            *out = p;
            return VKLLM_OK;
        }
    const gpu_shader_blob *blob = NULL;
    gpu_shader_interface iface = {0};
    VKL_TRY(gpu_check_desc(ctx, desc, &blob, &iface));
    VkShaderModule module = VK_NULL_HANDLE;
    VKL_TRY(gpu_module_get(ctx, blob, &module));
    VkPipelineLayout layout = VK_NULL_HANDLE;
    VKL_TRY(gpu_layout_get(ctx, desc->num_bindings, desc->push_constant_size, &layout));

    VkSpecializationMapEntry entries[GPU_MAX_SPEC_CONSTANTS];
    for (uint32_t i = 0; i < desc->num_spec_constants; i++)
        entries[i] = (VkSpecializationMapEntry){i, i * 4, 4};
    VkSpecializationInfo spec = {
        .mapEntryCount = desc->num_spec_constants,
        .pMapEntries = entries,
        .dataSize = desc->num_spec_constants * 4,
        .pData = desc->spec_constants,
    };
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfo subgroup = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO,
        .requiredSubgroupSize = desc->required_subgroup_size,
    };
    VkComputePipelineCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage =
            {
                .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                .pNext = desc->required_subgroup_size ? &subgroup : NULL,
                .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                .module = module,
                .pName = "main",
                .pSpecializationInfo = desc->num_spec_constants ? &spec : NULL,
            },
        .layout = layout,
    };
    VkPipelineCreationFeedback feedback = {0}, stage_feedback = {0};
    VkPipelineCreationFeedbackCreateInfo feedback_info = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CREATION_FEEDBACK_CREATE_INFO,
        .pPipelineCreationFeedback = &feedback,
        .pipelineStageCreationFeedbackCount = 1,
        .pPipelineStageCreationFeedbacks = &stage_feedback,
    };
    if (ctx->info.feedback) info.pNext = &feedback_info;
    bool capture = ctx->info.executable_statistics;
    if (capture) info.flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;

    gpu_pipeline *p = calloc(1, sizeof *p);
    if (!p) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "pipeline record");
    double start = gpu_now_ms();
    /* a cache hit may carry no statistics: capture compiles afresh */
    VkResult r = ctx->vk.vkCreateComputePipelines(
        ctx->device, capture ? VK_NULL_HANDLE : ctx->pipeline_cache, 1, &info, NULL, &p->pipeline);
    ctx->pipeline_stats.create_ms += gpu_now_ms() - start;
    if (r < 0) {
        free(p);
        return gpu_vk_fail(r, "vkCreateComputePipelines", "shader %s", desc->shader);
    }
    ctx->pipeline_stats.created++;
    if (capture) gpu_pipeline_print_statistics(ctx, p->pipeline, desc);
    if ((feedback.flags & VK_PIPELINE_CREATION_FEEDBACK_VALID_BIT) &&
        (feedback.flags & VK_PIPELINE_CREATION_FEEDBACK_APPLICATION_PIPELINE_CACHE_HIT_BIT))
        ctx->pipeline_stats.cache_hits++;
    p->desc = *desc;
    snprintf(p->shader_name, sizeof p->shader_name, "%s", desc->shader);
    p->desc.shader = p->shader_name;
    p->layout = layout;
    p->shader_writes = iface.writable_mask;
    p->next_in_bucket = ctx->pipeline_buckets[bucket];
    ctx->pipeline_buckets[bucket] = p;
    *out = p;
    return VKLLM_OK;
}

gpu_pipeline_stats gpu_context_pipeline_stats(const gpu_context *ctx) {
    gpu_pipeline_stats s = ctx->pipeline_stats;
    s.feedback_available = ctx->info.feedback;
    return s;
}

/* ---------------------------------------------------------------- disk cache */

/* VkPipelineCacheHeaderVersionOne, read field by field (little-endian host). */
static bool gpu_cache_header_matches(const gpu_context *ctx, const uint8_t *data, size_t size) {
    if (size < 32) return false;
    uint32_t header_size, version, vendor, device;
    memcpy(&header_size, data, 4);
    memcpy(&version, data + 4, 4);
    memcpy(&vendor, data + 8, 4);
    memcpy(&device, data + 12, 4);
    return header_size >= 32 && header_size <= size &&
           version == VK_PIPELINE_CACHE_HEADER_VERSION_ONE &&
           vendor == ctx->info.features.vendor_id && device == ctx->info.features.device_id &&
           !memcmp(data + 16, ctx->info.pipeline_cache_uuid, VK_UUID_SIZE);
}

static bool gpu_cache_dir(const char *option, char *dir, size_t size) {
    const char *env = getenv("VKLLM_PIPELINE_CACHE_DIR");
    if (option) {
        snprintf(dir, size, "%s", option);
    } else if (env) {
        snprintf(dir, size, "%s", env);
    } else if (getenv("XDG_CACHE_HOME") && getenv("XDG_CACHE_HOME")[0]) {
        snprintf(dir, size, "%s/vkllm", getenv("XDG_CACHE_HOME"));
    } else if (getenv("HOME") && getenv("HOME")[0]) {
        snprintf(dir, size, "%s/.cache/vkllm", getenv("HOME"));
    } else {
        dir[0] = '\0';
    }
    return dir[0] != '\0';
}

static int gpu_mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    return 0;
}

vkllm_status gpu_pipeline_cache_open(gpu_context *ctx, const char *dir_option) {
    char dir[3072];
    uint8_t *data = NULL;
    size_t size = 0;
    ctx->pipeline_cache_path[0] = '\0';
    if (gpu_cache_dir(dir_option, dir, sizeof dir)) {
        char uuid[2 * VK_UUID_SIZE + 1];
        for (unsigned i = 0; i < VK_UUID_SIZE; i++)
            snprintf(uuid + 2 * i, 3, "%02x", ctx->info.pipeline_cache_uuid[i]);
        snprintf(ctx->pipeline_cache_path, sizeof ctx->pipeline_cache_path,
                 "%s/pipelines-%04x-%04x-%08x-%s.bin", dir, ctx->info.features.vendor_id,
                 ctx->info.features.device_id, ctx->info.driver_version, uuid);
        FILE *file = fopen(ctx->pipeline_cache_path, "rb");
        if (file) {
            if (fseek(file, 0, SEEK_END) == 0) {
                long n = ftell(file);
                if (n > 0 && n < (1L << 30) && fseek(file, 0, SEEK_SET) == 0) {
                    data = malloc((size_t)n);
                    if (data && fread(data, 1, (size_t)n, file) == (size_t)n) size = (size_t)n;
                }
            }
            fclose(file);
            if (size && !gpu_cache_header_matches(ctx, data, size)) {
                fprintf(stderr,
                        "vkllm: ignoring pipeline cache %s: its header does not match "
                        "this device/driver\n",
                        ctx->pipeline_cache_path);
                size = 0;
            }
        }
    }
    VkPipelineCacheCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
        .initialDataSize = size,
        .pInitialData = size ? data : NULL,
    };
    VkResult r = ctx->vk.vkCreatePipelineCache(ctx->device, &info, NULL, &ctx->pipeline_cache);
    if (r < 0 && size) { /* a driver that rejects the data: start empty */
        fprintf(stderr, "vkllm: pipeline cache %s rejected by the driver (%s); starting empty\n",
                ctx->pipeline_cache_path, gpu_vk_result_name(r));
        info.initialDataSize = 0;
        info.pInitialData = NULL;
        size = 0;
        r = ctx->vk.vkCreatePipelineCache(ctx->device, &info, NULL, &ctx->pipeline_cache);
    }
    free(data);
    if (r < 0) return gpu_vk_fail(r, "vkCreatePipelineCache", "empty cache");
    ctx->pipeline_stats.disk_cache_loaded = size > 0;
    return VKLLM_OK;
}

static void gpu_pipeline_cache_save(gpu_context *ctx) {
    if (!ctx->pipeline_cache || !ctx->pipeline_cache_path[0]) return;
    /* nothing new was compiled: the file (if any) is already current */
    if (ctx->pipeline_stats.created == ctx->pipeline_stats.cache_hits &&
        ctx->pipeline_stats.disk_cache_loaded)
        return;
    if (ctx->pipeline_stats.created == 0) return;
    size_t size = 0;
    if (ctx->vk.vkGetPipelineCacheData(ctx->device, ctx->pipeline_cache, &size, NULL) < 0 ||
        size == 0)
        return;
    uint8_t *data = malloc(size);
    if (!data) return;
    VkResult r = ctx->vk.vkGetPipelineCacheData(ctx->device, ctx->pipeline_cache, &size, data);
    if (r != VK_SUCCESS) {
        free(data);
        return;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", ctx->pipeline_cache_path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", ctx->pipeline_cache_path, (long)getpid());
    bool ok = false;
    if (!slash || gpu_mkdirs(dir) == 0) {
        FILE *file = fopen(tmp, "wb");
        if (file) {
            ok = fwrite(data, 1, size, file) == size;
            ok = (fclose(file) == 0) && ok;
            if (ok) ok = rename(tmp, ctx->pipeline_cache_path) == 0;
            if (!ok) remove(tmp);
        }
    }
    if (!ok)
        fprintf(stderr, "vkllm: warning: could not save the pipeline cache to %s: %s\n",
                ctx->pipeline_cache_path, strerror(errno));
    free(data);
}

void gpu_pipelines_destroy(gpu_context *ctx) {
    gpu_pipeline_cache_save(ctx);
    for (int b = 0; b < GPU_PIPELINE_BUCKETS; b++)
        for (gpu_pipeline *p = ctx->pipeline_buckets[b], *next; p; p = next) {
            next = p->next_in_bucket;
            ctx->vk.vkDestroyPipeline(ctx->device, p->pipeline, NULL);
            free(p);
        }
    memset(ctx->pipeline_buckets, 0, sizeof ctx->pipeline_buckets);
    for (uint32_t i = 0; i < ctx->num_layouts; i++) {
        ctx->vk.vkDestroyPipelineLayout(ctx->device, ctx->layouts[i].layout, NULL);
        ctx->vk.vkDestroyDescriptorSetLayout(ctx->device, ctx->layouts[i].set_layout, NULL);
    }
    free(ctx->layouts);
    ctx->layouts = NULL;
    ctx->num_layouts = ctx->layouts_cap = 0;
    for (uint32_t i = 0; i < ctx->num_modules; i++)
        ctx->vk.vkDestroyShaderModule(ctx->device, ctx->modules[i].module, NULL);
    free(ctx->modules);
    ctx->modules = NULL;
    ctx->num_modules = ctx->modules_cap = 0;
    if (ctx->pipeline_cache) ctx->vk.vkDestroyPipelineCache(ctx->device, ctx->pipeline_cache, NULL);
    ctx->pipeline_cache = VK_NULL_HANDLE;
}

const char *gpu_pipeline_cache_path(const gpu_context *ctx) {
    return ctx->pipeline_cache_path;
}
