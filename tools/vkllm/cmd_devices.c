/* cmd_devices.c: `vkllm devices`: lists every Vulkan device with its gpu_features
 * and marks the one vkllm would use; `--warm` also builds every embedded shader
 * variant on that device so the on-disk pipeline cache is filled (a second run
 * shows the cache being used).
 *
 * Warming builds each variant with the bindings and push-constant size its SPIR-V
 * declares (gpu_shader_reflect) and default spec constants; kernels that run with
 * other spec constants compile those variants on first use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "gpu/gpu.h"

static void devices_usage(FILE *out) {
    fprintf(out,
            "usage: vkllm devices [--warm] [--device NAME|INDEX] [--cache-dir DIR]\n"
            "  Lists every Vulkan device with its features; '*' marks the device vkllm uses\n"
            "  (--device, else VKLLM_DEVICE, else discrete > integrated > virtual > CPU).\n"
            "  --warm           create a context on that device and build every embedded\n"
            "                   pipeline, filling the on-disk pipeline cache\n"
            "  --device D       device index or case-insensitive name substring\n"
            "  --cache-dir DIR  pipeline cache directory (default: $VKLLM_PIPELINE_CACHE_DIR,\n"
            "                   else $XDG_CACHE_HOME/vkllm, else ~/.cache/vkllm; \"\" disables)\n");
}

static double devices_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int devices_warm(const char *device, const char *cache_dir) {
    gpu_context_options options = {.device = device, .pipeline_cache_dir = cache_dir};
    double start = devices_now_ms();
    gpu_context *ctx;
    if (gpu_context_create(&options, &ctx) != VKLLM_OK) {
        fprintf(stderr, "vkllm devices: %s\n", vkllm_last_error());
        return 1;
    }
    gpu_pipeline_stats before = gpu_context_pipeline_stats(ctx);
    uint32_t built = 0, failed = 0, unsupported = 0;
    for (const gpu_shader_blob *blob = gpu_all_shaders(); blob->name; blob++) {
        gpu_shader_interface iface;
        gpu_pipeline *pipeline;
        gpu_pipeline_desc desc = {.shader = blob->name};
        if (gpu_shader_reflect(blob, &iface) == VKLLM_OK) {
            desc.num_bindings = iface.num_bindings;
            desc.push_constant_size = (iface.push_constant_size + 3) / 4 * 4;
            if (gpu_shader_check_device(ctx, blob, &iface) != VKLLM_OK) {
                unsupported++; /* a variant for features this device lacks */
                continue;
            }
        }
        if (desc.num_bindings > GPU_MAX_BINDINGS || desc.push_constant_size > 128 ||
            gpu_pipeline_get(ctx, &desc, &pipeline) != VKLLM_OK) {
            fprintf(stderr, "vkllm devices: %s: %s\n", blob->name, vkllm_last_error());
            failed++;
            continue;
        }
        built++;
    }
    gpu_pipeline_stats stats = gpu_context_pipeline_stats(ctx);
    const char *path = gpu_pipeline_cache_path(ctx);
    printf("\nwarmed %u pipelines on %s in %.1f ms (%.1f ms creating pipelines)\n", built,
           gpu_context_features(ctx)->name, devices_now_ms() - start, stats.create_ms);
    printf("  pipeline cache: %s (%s)\n", path[0] ? path : "disabled",
           before.disk_cache_loaded ? "loaded from disk" : "not loaded: new or absent");
    if (stats.feedback_available)
        printf("  driver-reported cache hits: %u of %u\n", stats.cache_hits, stats.created);
    else
        printf("  driver reports no creation feedback; cache hits unknown\n");
    if (unsupported)
        printf("  %u variant(s) skipped: they need features this device lacks\n", unsupported);
    if (failed) printf("  %u variant(s) failed to build (see above)\n", failed);
    gpu_context_destroy(ctx); /* saves the cache */
    return failed ? 1 : 0;
}

int cmd_devices(int argc, char **argv) {
    bool warm = false;
    const char *device = NULL, *cache_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            devices_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--warm")) {
            warm = true;
        } else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            device = argv[++i];
        } else if (!strcmp(argv[i], "--cache-dir") && i + 1 < argc) {
            cache_dir = argv[++i];
        } else {
            fprintf(stderr, "vkllm devices: unknown or incomplete option '%s'\n\n", argv[i]);
            devices_usage(stderr);
            return 2;
        }
    }
    gpu_features *devices;
    uint32_t count;
    if (gpu_list_devices(&devices, &count) != VKLLM_OK) {
        fprintf(stderr, "vkllm devices: %s\n", vkllm_last_error());
        return 1;
    }
    uint32_t chosen = UINT32_MAX;
    vkllm_status pick = gpu_pick_device(devices, count, device, &chosen);
    for (uint32_t i = 0; i < count; i++) {
        printf("%s%u: ", i == chosen ? "* " : "  ", i);
        gpu_features_print(&devices[i], stdout);
        if (i + 1 < count) printf("\n");
    }
    free(devices);
    if (pick != VKLLM_OK) {
        fprintf(stderr, "vkllm devices: %s\n", vkllm_last_error());
        return 1;
    }
    return warm ? devices_warm(device, cache_dir) : 0;
}
