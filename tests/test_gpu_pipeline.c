/* test_gpu_pipeline.c: shader lookup, the SPIR-V interface scan, pipeline
 * de-duplication and desc checks, and the on-disk pipeline cache (written at
 * destroy, read back at create, rejected when its header does not match).
 * Also builds every embedded shader variant with the interface its SPIR-V
 * declares (what `vkllm devices --warm` does), validation on. */
// links: gpu
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/test_gpu.h"

TestSuite(gpu_pipeline, .fini = test_gpu_check_validation);

Test(gpu_pipeline, find_shader_and_reflect) {
    const gpu_shader_blob *blob = gpu_find_shader("copy_vec4");
    cr_assert_not_null(blob);
    cr_assert_str_eq(blob->name, "copy_vec4");
    cr_assert_eq(blob->code[0], 0x07230203u, "SPIR-V magic");
    cr_assert_null(gpu_find_shader("no_such_variant"));
    gpu_shader_interface iface;
    cr_assert(gpu_shader_reflect(blob, &iface) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(iface.num_bindings, 2u);
    cr_assert_eq(iface.push_constant_size, 4u);
    cr_assert_eq(iface.local_size[0], 256u);
    cr_assert_eq(iface.local_size[1], 1u);
    cr_assert_eq(iface.writable_mask, 2u, "binding 0 is readonly, binding 1 writeonly");
    /* corrupt blobs are rejected with a message */
    uint32_t bad[8] = {0x12345678, 0, 0, 10, 0, 0, 0, 0};
    gpu_shader_blob corrupt = {"corrupt", bad, sizeof bad};
    cr_assert_eq(gpu_shader_reflect(&corrupt, &iface), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "not a SPIR-V module"), "%s", vkllm_last_error());
    bad[0] = 0x07230203;
    bad[5] = (50u << 16) | 71; /* an instruction longer than the module */
    cr_assert_eq(gpu_shader_reflect(&corrupt, &iface), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "truncated"), "%s", vkllm_last_error());
}

Test(gpu_pipeline, identical_descs_share_a_pipeline) {
    gpu_context *ctx = test_gpu();
    gpu_pipeline_desc a = {.shader = "copy_vec4", .num_bindings = 2, .push_constant_size = 4};
    gpu_pipeline_desc b = a;
    char name[] = "copy_vec4"; /* equal by content, not by pointer */
    b.shader = name;
    gpu_pipeline *pa, *pb, *pc, *pd;
    cr_assert(gpu_pipeline_get(ctx, &a, &pa) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(gpu_pipeline_get(ctx, &b, &pb) == VKLLM_OK);
    cr_assert_eq(pa, pb);
    gpu_pipeline_desc c = a;
    c.num_spec_constants = 1;
    c.spec_constants[0] = 7;
    cr_assert(gpu_pipeline_get(ctx, &c, &pc) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_neq(pa, pc);
    gpu_pipeline_desc d = a;
    d.push_constant_size = 16; /* a larger push range than the shader needs is fine */
    cr_assert(gpu_pipeline_get(ctx, &d, &pd) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_neq(pa, pd);
}

Test(gpu_pipeline, bad_descs_fail_clearly) {
    gpu_context *ctx = test_gpu();
    const gpu_features *f = gpu_context_features(ctx);
    gpu_pipeline *p;
    gpu_pipeline_desc d = {.shader = "nope", .num_bindings = 2, .push_constant_size = 4};
    cr_assert_eq(gpu_pipeline_get(ctx, &d, &p), VKLLM_ERR_NOT_FOUND);
    cr_assert(strstr(vkllm_last_error(), "\"nope\""), "%s", vkllm_last_error());
    d.shader = "copy_vec4";
    d.num_bindings = 1;
    cr_assert_eq(gpu_pipeline_get(ctx, &d, &p), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "binding 1"), "%s", vkllm_last_error());
    d.num_bindings = 2;
    d.push_constant_size = 0;
    cr_assert_eq(gpu_pipeline_get(ctx, &d, &p), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "push-constant block is 4 bytes"), "%s",
              vkllm_last_error());
    d.push_constant_size = 6;
    cr_assert_eq(gpu_pipeline_get(ctx, &d, &p), VKLLM_ERR_INVALID_ARGUMENT);
    d.push_constant_size = 4;
    d.num_bindings = GPU_MAX_BINDINGS + 1;
    cr_assert_eq(gpu_pipeline_get(ctx, &d, &p), VKLLM_ERR_INVALID_ARGUMENT);
    d.num_bindings = 2;
    d.required_subgroup_size = f->subgroup_max_size * 2;
    cr_assert_eq(gpu_pipeline_get(ctx, &d, &p), VKLLM_ERR_UNSUPPORTED);
    cr_assert(strstr(vkllm_last_error(), "subgroup size"), "%s", vkllm_last_error());
    if (f->subgroup_size_control) {
        d.required_subgroup_size = f->subgroup_min_size;
        cr_assert(gpu_pipeline_get(ctx, &d, &p) == VKLLM_OK, "%s", vkllm_last_error());
    }
}

static int count_cache_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "pipelines-", 10) && strstr(e->d_name, ".bin") &&
            !strstr(e->d_name, ".tmp"))
            n++;
    closedir(d);
    return n;
}

static void build_some(gpu_context *ctx) {
    for (uint32_t v = 0; v < 4; v++) {
        gpu_pipeline_desc d = {.shader = "copy_vec4",
                               .num_bindings = 2,
                               .push_constant_size = 4,
                               .num_spec_constants = 1,
                               .spec_constants = {v}};
        gpu_pipeline *p;
        cr_assert(gpu_pipeline_get(ctx, &d, &p) == VKLLM_OK, "%s", vkllm_last_error());
    }
}

Test(gpu_pipeline, disk_cache_is_saved_and_reused) {
    char dir[] = "/tmp/vkllm-pipeline-cache-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char sub[128];
    snprintf(sub, sizeof sub, "%s/nested/dir", dir); /* created on save */
    gpu_context_options options = {.validation = true, .pipeline_cache_dir = sub};
    gpu_context *ctx;
    cr_assert(gpu_context_create(&options, &ctx) == VKLLM_OK, "%s", vkllm_last_error());
    gpu_pipeline_stats first = gpu_context_pipeline_stats(ctx);
    cr_assert(!first.disk_cache_loaded, "nothing to load yet");
    build_some(ctx);
    first = gpu_context_pipeline_stats(ctx);
    cr_assert_eq(first.created, 4u);
    cr_assert_gt(first.create_ms, 0.0);
    char path[512];
    snprintf(path, sizeof path, "%s", gpu_pipeline_cache_path(ctx));
    cr_assert(strstr(path, sub) == path, "cache path %s is in %s", path, sub);
    cr_assert_eq(gpu_validation_errors(ctx), 0u);
    gpu_context_destroy(ctx);
    cr_assert_eq(access(path, R_OK), 0, "cache file %s written at destroy", path);
    cr_assert_eq(count_cache_files(sub), 1);

    cr_assert(gpu_context_create(&options, &ctx) == VKLLM_OK, "%s", vkllm_last_error());
    gpu_pipeline_stats second = gpu_context_pipeline_stats(ctx);
    cr_assert(second.disk_cache_loaded, "the file was read at create");
    build_some(ctx);
    second = gpu_context_pipeline_stats(ctx);
    cr_assert_eq(second.created, 4u);
    /* Drivers whose creation feedback reports hits must report them for all four;
     * lavapipe's feedback never sets the hit bit (its cache stores no pipelines). */
    if (second.feedback_available && second.cache_hits > 0) cr_assert_eq(second.cache_hits, 4u);
    cr_assert_eq(gpu_validation_errors(ctx), 0u);
    gpu_context_destroy(ctx);

    /* a file whose header belongs to another device is ignored, not fed to the driver */
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    uint32_t wrong_vendor = 0xdeadbeef;
    fseek(f, 8, SEEK_SET);
    fwrite(&wrong_vendor, 4, 1, f);
    fclose(f);
    cr_assert(gpu_context_create(&options, &ctx) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(!gpu_context_pipeline_stats(ctx).disk_cache_loaded, "mismatched header ignored");
    build_some(ctx);
    gpu_context_destroy(ctx); /* rewrites a good file */
    cr_assert(gpu_context_create(&options, &ctx) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(gpu_context_pipeline_stats(ctx).disk_cache_loaded, "rewritten after the bad one");
    gpu_context_destroy(ctx);

    /* a truncated file too */
    f = fopen(path, "wb");
    fwrite("VKLLM", 1, 5, f);
    fclose(f);
    cr_assert(gpu_context_create(&options, &ctx) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(!gpu_context_pipeline_stats(ctx).disk_cache_loaded);
    gpu_context_destroy(ctx);

    remove(path);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(gpu_pipeline, empty_cache_dir_disables_the_disk_cache) {
    char dir[] = "/tmp/vkllm-pipeline-cache-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    setenv("VKLLM_PIPELINE_CACHE_DIR", dir, 1);
    gpu_context_options options = {.validation = true, .pipeline_cache_dir = ""};
    gpu_context *ctx;
    cr_assert(gpu_context_create(&options, &ctx) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_str_eq(gpu_pipeline_cache_path(ctx), "", "option \"\" beats the environment");
    build_some(ctx);
    gpu_context_destroy(ctx);
    cr_assert_eq(count_cache_files(dir), 0);
    /* NULL option: the environment variable names the directory */
    options.pipeline_cache_dir = NULL;
    cr_assert(gpu_context_create(&options, &ctx) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(strstr(gpu_pipeline_cache_path(ctx), dir) == gpu_pipeline_cache_path(ctx));
    build_some(ctx);
    gpu_context_destroy(ctx);
    cr_assert_eq(count_cache_files(dir), 1);
    unsetenv("VKLLM_PIPELINE_CACHE_DIR");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Every embedded variant builds with the bindings/push size its SPIR-V declares. */
Test(gpu_pipeline, every_embedded_shader_builds) {
    gpu_context *ctx = test_gpu();
    uint32_t n = 0, skipped = 0;
    for (const gpu_shader_blob *blob = gpu_all_shaders(); blob->name; blob++, n++) {
        gpu_shader_interface iface;
        cr_assert(gpu_shader_reflect(blob, &iface) == VKLLM_OK, "%s: %s", blob->name,
                  vkllm_last_error());
        cr_assert_leq(iface.num_bindings, GPU_MAX_BINDINGS, "%s", blob->name);
        gpu_pipeline_desc d = {.shader = blob->name,
                               .num_bindings = iface.num_bindings,
                               .push_constant_size = (iface.push_constant_size + 3) / 4 * 4};
        gpu_pipeline *p;
        if (gpu_shader_check_device(ctx, blob, &iface) != VKLLM_OK) {
            /* a variant for features this device lacks must be refused before Vulkan sees it */
            cr_assert_eq(gpu_pipeline_get(ctx, &d, &p), VKLLM_ERR_UNSUPPORTED);
            cr_assert(strstr(vkllm_last_error(), blob->name) &&
                          strstr(vkllm_last_error(), "capability"),
                      "%s", vkllm_last_error());
            skipped++;
        } else {
            cr_assert(gpu_pipeline_get(ctx, &d, &p) == VKLLM_OK, "%s: %s", blob->name,
                      vkllm_last_error());
        }
        cr_assert_eq(gpu_validation_errors(ctx), 0u, "building %s", blob->name);
    }
    cr_assert_geq(n, 1u);
    cr_assert_lt(skipped, n, "the portable variants build everywhere");
}
