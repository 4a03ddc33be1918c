/* test_gpu_cmd.c: command recording: automatic barriers, both descriptor paths
 * (push descriptors and pools), fill, copy, timestamps, the upload ring and the
 * errors remembered while recording.
 *
 * The barrier tests run a chain of dependent copy_vec4 dispatches (A->B->C...)
 * in one command buffer on a private context with synchronization validation
 * on (VKLLM_VALIDATION=sync), so a missing barrier is reported as a hazard and
 * counted as an error, and check both the result bytes and the number of
 * barriers recorded. A control test removes the tracking on purpose and checks
 * that the layer then does report the hazard. */
// links: gpu
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_gpu.h"
#include "common/test_util.h"
#include "gpu/gpu_internal.h"

TestSuite(gpu_cmd, .fini = test_gpu_check_validation);

static gpu_context *sync_context(bool no_push_descriptors) {
    setenv("VKLLM_VALIDATION", "sync", 1);
    gpu_context_options options = {
        .validation = true, .pipeline_cache_dir = "", .no_push_descriptors = no_push_descriptors};
    gpu_context *ctx = NULL;
    vkllm_status status = gpu_context_create(&options, &ctx);
    setenv("VKLLM_VALIDATION", "1", 1);
    cr_assert(status == VKLLM_OK, "%s", vkllm_last_error());
    return ctx;
}

static gpu_pipeline *copy_pipeline(gpu_context *ctx) {
    gpu_pipeline_desc desc = {.shader = "copy_vec4", .num_bindings = 2, .push_constant_size = 4};
    gpu_pipeline *p;
    cr_assert(gpu_pipeline_get(ctx, &desc, &p) == VKLLM_OK, "%s", vkllm_last_error());
    return p;
}

static void random_words(uint64_t seed, uint32_t *w, size_t n) {
    test_rng rng = test_rng_seeded(seed);
    for (size_t i = 0; i < n; i++)
        w[i] = (uint32_t)test_rng_next(&rng);
}

/* A -> B -> C -> ... over `links` dispatches; element counts not multiples of 256.
 * flush_every > 0 submits the recording so far after every that many links
 * (gpu_cmd_flush): the chain must still be ordered and the barriers the same. */
static void run_chain_flushed(gpu_context *ctx, uint32_t links, uint32_t elements, uint64_t seed,
                              uint32_t flush_every) {
    size_t words = (size_t)elements * 4, bytes = words * 4;
    uint32_t *data = malloc(bytes), *back = malloc(bytes);
    random_words(seed, data, words);
    gpu_buffer buffers[3];
    for (int i = 0; i < 3; i++)
        cr_assert(gpu_buffer_create(ctx, bytes, GPU_MEMORY_DEVICE, &buffers[i]) == VKLLM_OK);
    cr_assert(gpu_upload(ctx, &buffers[0], 0, data, bytes) == VKLLM_OK);
    gpu_pipeline *copy = copy_pipeline(ctx);
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_cmd_fill(cmd, &buffers[1], 0, bytes, TEST_POISON_WORD);
    gpu_cmd_fill(cmd, &buffers[2], 0, bytes, TEST_POISON_WORD);
    for (uint32_t i = 0; i < links; i++) {
        /* rotate through three buffers: each link reads what the previous one wrote */
        gpu_binding b[2] = {{.buffer = &buffers[i % 3]},
                            {.buffer = &buffers[(i + 1) % 3], .writable = true}};
        gpu_cmd_dispatch(cmd, copy, b, 2, &elements, 4, (elements + 255) / 256, 1, 1);
        if (flush_every && (i + 1) % flush_every == 0)
            cr_assert(gpu_cmd_flush(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    }
    cr_assert_eq(gpu_cmd_flush_count(cmd), flush_every ? links / flush_every : 0);
    /* fills: 1 barrier-free pair; each link depends on the previous one (and the
     * first on the fill of its destination) */
    uint32_t barriers = gpu_cmd_barrier_count(cmd);
    cr_assert_eq(barriers, links, "%u links recorded %u barriers", links, barriers);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(gpu_download(ctx, &buffers[links % 3], 0, back, bytes) == VKLLM_OK);
    for (size_t i = 0; i < words; i++)
        cr_assert_eq(back[i], data[i], "seed %llu links %u: word %zu is %08x, expected %08x",
                     (unsigned long long)seed, links, i, back[i], data[i]);
    for (int i = 0; i < 3; i++)
        gpu_buffer_destroy(ctx, &buffers[i]);
    free(data);
    free(back);
}

static void run_chain(gpu_context *ctx, uint32_t links, uint32_t elements, uint64_t seed) {
    run_chain_flushed(ctx, links, elements, seed, 0);
}

Test(gpu_cmd, dependent_chain_push_descriptors) {
    gpu_context *ctx = sync_context(false);
    run_chain(ctx, 7, 1000, 11);
    cr_assert_eq(gpu_validation_errors(ctx), 0u, "synchronization validation found hazards");
    gpu_context_destroy(ctx);
}

Test(gpu_cmd, dependent_chain_descriptor_pools) {
    /* more dispatches than one descriptor pool holds (256 sets) */
    gpu_context *ctx = sync_context(true);
    run_chain(ctx, 300, 333, 12);
    run_chain(ctx, 5, 4097, 13); /* the slot and its pools are reused */
    cr_assert_eq(gpu_validation_errors(ctx), 0u, "synchronization validation found hazards");
    gpu_context_destroy(ctx);
}

/* The same chains submitted in parts (gpu_cmd_flush): synchronization validation sees
 * every part's hazards against the earlier parts, and slots/pools are recycled. */
Test(gpu_cmd, dependent_chain_flushed) {
    gpu_context *ctx = sync_context(false);
    run_chain_flushed(ctx, 9, 1000, 14, 2);
    run_chain_flushed(ctx, 4, 777, 15, 1); /* a flush right before the final submit */
    cr_assert_eq(gpu_validation_errors(ctx), 0u, "synchronization validation found hazards");
    gpu_context_destroy(ctx);
    ctx = sync_context(true); /* descriptor pools: each part has its own slot's pools */
    run_chain_flushed(ctx, 300, 333, 16, 7);
    run_chain_flushed(ctx, 300, 333, 17, 100);
    cr_assert_eq(gpu_validation_errors(ctx), 0u, "synchronization validation found hazards");
    gpu_context_destroy(ctx);
}

/* gpu_cmd_wait polling the fence (VKLLM_SPIN_WAIT ms) instead of blocking: long enough to
 * see the fence signal, and so short that it falls through to vkWaitForFences. The chains'
 * results (checked word by word) must be the same either way. */
Test(gpu_cmd, spin_wait_then_block) {
    gpu_context *ctx = sync_context(false);
    setenv("VKLLM_SPIN_WAIT", "10000", 1);
    run_chain_flushed(ctx, 40, 4097, 18, 16);
    setenv("VKLLM_SPIN_WAIT", "0.000001", 1);
    run_chain_flushed(ctx, 40, 4097, 19, 16);
    unsetenv("VKLLM_SPIN_WAIT");
    cr_assert_eq(gpu_validation_errors(ctx), 0u, "synchronization validation found hazards");
    gpu_context_destroy(ctx);
}

/* A recording error after a flush is returned by submit once the submitted parts have
 * finished, and the context goes on working. */
Test(gpu_cmd, error_after_flush) {
    gpu_context *ctx = test_gpu();
    gpu_buffer a;
    cr_assert(gpu_buffer_create(ctx, 4096, GPU_MEMORY_DEVICE, &a) == VKLLM_OK);
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_cmd_fill(cmd, &a, 0, 4096, 7);
    cr_assert(gpu_cmd_flush(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    gpu_cmd_dispatch(cmd, NULL, NULL, 0, NULL, 0, 1, 1, 1);
    cr_assert(gpu_cmd_flush(cmd) != VKLLM_OK, "a flush after a recording error must fail");
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "no pipeline"), "message: %s", vkllm_last_error());
    run_chain_flushed(ctx, 3, 100, 18, 1);
    gpu_buffer_destroy(ctx, &a);
}

/* Control: with the tracking wiped between two dependent dispatches, no barrier is
 * recorded and synchronization validation reports the hazard. */
Test(gpu_cmd, missing_barrier_is_caught_by_sync_validation) {
    gpu_context *ctx = sync_context(false);
    if (!gpu_validation_enabled(ctx)) {
        gpu_context_destroy(ctx);
        cr_skip_test("no validation layer");
    }
    gpu_buffer a, b, c;
    cr_assert(gpu_buffer_create(ctx, 4096, GPU_MEMORY_DEVICE, &a) == VKLLM_OK);
    cr_assert(gpu_buffer_create(ctx, 4096, GPU_MEMORY_DEVICE, &b) == VKLLM_OK);
    cr_assert(gpu_buffer_create(ctx, 4096, GPU_MEMORY_DEVICE, &c) == VKLLM_OK);
    gpu_pipeline *copy = copy_pipeline(ctx);
    uint32_t n = 256;
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_binding ab[2] = {{.buffer = &a}, {.buffer = &b, .writable = true}};
    gpu_binding bc[2] = {{.buffer = &b}, {.buffer = &c, .writable = true}};
    gpu_cmd_dispatch(cmd, copy, ab, 2, &n, 4, 1, 1, 1);
    cmd->num_accesses = 0; /* forget the write to b */
    fprintf(stderr, "(a SYNC-HAZARD validation error is expected next)\n");
    gpu_cmd_dispatch(cmd, copy, bc, 2, &n, 4, 1, 1, 1);
    cr_assert_eq(gpu_cmd_barrier_count(cmd), 0u);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
    cr_assert_geq(gpu_validation_errors(ctx), 1u, "the hazard was reported");
    gpu_buffer_destroy(ctx, &a);
    gpu_buffer_destroy(ctx, &b);
    gpu_buffer_destroy(ctx, &c);
    gpu_context_destroy(ctx);
}

Test(gpu_cmd, barriers_only_where_needed) {
    gpu_context *ctx = test_gpu();
    gpu_buffer src, dst;
    cr_assert(gpu_buffer_create(ctx, 8192, GPU_MEMORY_DEVICE, &src) == VKLLM_OK);
    cr_assert(gpu_buffer_create(ctx, 8192, GPU_MEMORY_DEVICE, &dst) == VKLLM_OK);
    gpu_pipeline *copy = copy_pipeline(ctx);
    uint32_t n = 128; /* 2 KiB per dispatch */
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_cmd_fill(cmd, &src, 0, 8192, 1);
    cr_assert_eq(gpu_cmd_barrier_count(cmd), 0u);
    /* disjoint writes reading the same source after the fill: one RAW barrier, then none */
    for (uint32_t i = 0; i < 4; i++) {
        gpu_binding b[2] = {{.buffer = &src, .offset = 0, .range = 2048},
                            {.buffer = &dst, .offset = i * 2048, .range = 2048, .writable = true}};
        gpu_cmd_dispatch(cmd, copy, b, 2, &n, 4, 1, 1, 1);
    }
    cr_assert_eq(gpu_cmd_barrier_count(cmd), 1u, "RAW on src only; disjoint dst ranges");
    /* write-after-read: filling src, which the dispatches read */
    gpu_cmd_fill(cmd, &src, 0, 4, 2);
    cr_assert_eq(gpu_cmd_barrier_count(cmd), 2u, "WAR on src");
    /* write-after-write on the same range */
    gpu_cmd_fill(cmd, &src, 0, 4, 3);
    cr_assert_eq(gpu_cmd_barrier_count(cmd), 3u, "WAW on src");
    /* the dispatches' writes are behind the last barrier: a copy over them needs none */
    gpu_cmd_copy(cmd, &src, 4096, &dst, 0, 16);
    cr_assert_eq(gpu_cmd_barrier_count(cmd), 3u, "earlier writes already fenced");
    gpu_cmd_copy(cmd, &src, 8000, &dst, 8000, 16);
    cr_assert_eq(gpu_cmd_barrier_count(cmd), 3u, "nothing overlaps");
    gpu_cmd_copy(cmd, &src, 4104, &dst, 12, 8);
    cr_assert_eq(gpu_cmd_barrier_count(cmd), 4u, "dst[12..16) overlaps the copy before: WAW");
    gpu_cmd_barrier(cmd);
    cr_assert_eq(gpu_cmd_barrier_count(cmd), 5u, "forced");
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    uint32_t back[2048];
    cr_assert(gpu_download(ctx, &dst, 0, back, sizeof back) == VKLLM_OK);
    cr_assert_eq(back[0], 1u, "copied before the later fills");
    for (int i = 1; i < 2048; i++)
        cr_assert_eq(back[i], 1u, "word %d", i);
    gpu_buffer_destroy(ctx, &src);
    gpu_buffer_destroy(ctx, &dst);
}

/* A binding passed with .writable = false that the shader may write (not declared
 * readonly) still counts as written: copy_vec4's binding 1 here. */
Test(gpu_cmd, shader_writes_override_a_missing_writable_flag) {
    gpu_context *ctx = test_gpu();
    gpu_buffer a, b, c;
    cr_assert(gpu_buffer_create(ctx, 4096, GPU_MEMORY_DEVICE, &a) == VKLLM_OK);
    cr_assert(gpu_buffer_create(ctx, 4096, GPU_MEMORY_DEVICE, &b) == VKLLM_OK);
    cr_assert(gpu_buffer_create(ctx, 4096, GPU_MEMORY_DEVICE, &c) == VKLLM_OK);
    gpu_pipeline *copy = copy_pipeline(ctx);
    uint32_t n = 256;
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_binding ab[2] = {{.buffer = &a}, {.buffer = &b}}; /* flag forgotten */
    gpu_binding bc[2] = {{.buffer = &b}, {.buffer = &c}};
    gpu_cmd_dispatch(cmd, copy, ab, 2, &n, 4, 1, 1, 1);
    gpu_cmd_dispatch(cmd, copy, bc, 2, &n, 4, 1, 1, 1);
    cr_assert_eq(gpu_cmd_barrier_count(cmd), 1u, "RAW on b detected from the shader");
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
    gpu_buffer_destroy(ctx, &a);
    gpu_buffer_destroy(ctx, &b);
    gpu_buffer_destroy(ctx, &c);
}

Test(gpu_cmd, fill_and_copy) {
    gpu_context *ctx = test_gpu();
    gpu_buffer a = test_gpu_buffer_poisoned(1024), b = test_gpu_buffer_poisoned(1024);
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_cmd_fill(cmd, &a, 8, 100, 0x01020304u);
    gpu_cmd_copy(cmd, &a, 7, &b, 3, 102); /* odd offsets and size */
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    uint8_t ha[1024], hb[1024];
    test_gpu_read(&a, ha, sizeof ha);
    test_gpu_read(&b, hb, sizeof hb);
    uint32_t poison = TEST_POISON_WORD, word = 0x01020304u;
    for (int i = 0; i < 1024; i++) {
        uint8_t expect =
            (i >= 8 && i < 108) ? ((uint8_t *)&word)[i % 4] : ((uint8_t *)&poison)[i % 4];
        cr_assert_eq(ha[i], expect, "a[%d]", i);
    }
    for (int i = 0; i < 1024; i++) {
        uint8_t expect = (i >= 3 && i < 105) ? ha[i + 4] : ((uint8_t *)&poison)[i % 4];
        cr_assert_eq(hb[i], expect, "b[%d]", i);
    }
    /* errors: misaligned fill, overlapping copy, out of range */
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_cmd_fill(cmd, &a, 2, 8, 0);
    cr_assert_eq(gpu_cmd_submit(cmd), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "multiples of 4"), "%s", vkllm_last_error());
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_cmd_copy(cmd, &a, 0, &a, 10, 20);
    cr_assert_eq(gpu_cmd_submit(cmd), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "overlap"), "%s", vkllm_last_error());
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_cmd_copy(cmd, &a, 1000, &b, 0, 25);
    gpu_cmd_fill(cmd, &a, 0, 4, 0); /* ignored after the first error */
    cr_assert_eq(gpu_cmd_submit(cmd), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "gpu_cmd_copy source") &&
                  strstr(vkllm_last_error(), "1024 bytes"),
              "%s", vkllm_last_error());
    test_gpu_free(&a);
    test_gpu_free(&b);
}

Test(gpu_cmd, dispatch_errors_are_reported_at_submit) {
    gpu_context *ctx = test_gpu();
    gpu_buffer a;
    cr_assert(gpu_buffer_create(ctx, 1024, GPU_MEMORY_DEVICE, &a) == VKLLM_OK);
    gpu_pipeline *copy = copy_pipeline(ctx);
    gpu_binding one[1] = {{.buffer = &a}};
    uint32_t n = 1;
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_cmd_dispatch(cmd, copy, one, 1, &n, 4, 1, 1, 1);
    cr_assert_eq(gpu_cmd_submit(cmd), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "copy_vec4: 1 bindings given, the pipeline has 2"), "%s",
              vkllm_last_error());
    gpu_binding two[2] = {{.buffer = &a}, {.buffer = &a, .writable = true}};
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_cmd_dispatch(cmd, copy, two, 2, &n, 8, 1, 1, 1);
    cr_assert_eq(gpu_cmd_submit(cmd), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "push-constant"), "%s", vkllm_last_error());
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    uint32_t too_many = gpu_context_features(ctx)->max_workgroup_count[0] + 1u;
    if (too_many == 0) too_many = UINT32_MAX; /* the limit is already the largest count */
    gpu_cmd_dispatch(cmd, copy, two, 2, &n, 4, too_many, 1, 1);
    cr_assert_eq(gpu_cmd_submit(cmd), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "workgroups"), "%s", vkllm_last_error());
    gpu_buffer_destroy(ctx, &a);
}

Test(gpu_cmd, timestamps_are_monotonic) {
    gpu_context *ctx = test_gpu();
    if (!gpu_context_features(ctx)->timestamps) cr_skip_test("no timestamps on this queue");
    const uint32_t elements = 1 << 18; /* 4 MiB */
    gpu_buffer a, b;
    cr_assert(gpu_buffer_create(ctx, elements * 16, GPU_MEMORY_DEVICE, &a) == VKLLM_OK);
    cr_assert(gpu_buffer_create(ctx, elements * 16, GPU_MEMORY_DEVICE, &b) == VKLLM_OK);
    gpu_pipeline *copy = copy_pipeline(ctx);
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    gpu_cmd_timestamp(cmd, "start");
    gpu_cmd_fill(cmd, &a, 0, elements * 16, 5);
    gpu_cmd_timestamp(cmd, "fill");
    for (int i = 0; i < 3; i++) {
        gpu_binding bind[2] = {{.buffer = i % 2 ? &b : &a},
                               {.buffer = i % 2 ? &a : &b, .writable = true}};
        uint32_t n = elements;
        gpu_cmd_dispatch(cmd, copy, bind, 2, &n, 4, 256, 1, 1);
        char label[16];
        snprintf(label, sizeof label, "copy %d", i);
        gpu_cmd_timestamp(cmd, label);
        /* timestamps of later parts go to the same query pool */
        if (i == 1) cr_assert(gpu_cmd_flush(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    }
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
    const char **labels;
    const double *ms;
    uint32_t count = gpu_last_timestamps(ctx, &labels, &ms);
    cr_assert_eq(count, 5u);
    cr_assert_str_eq(labels[0], "start");
    cr_assert_str_eq(labels[1], "fill");
    cr_assert_str_eq(labels[4], "copy 2");
    cr_assert_eq(ms[0], 0.0);
    for (uint32_t i = 1; i < count; i++)
        cr_assert_geq(ms[i], ms[i - 1], "timestamp %u (%s) %.6f ms < %.6f ms", i, labels[i], ms[i],
                      ms[i - 1]);
    cr_assert_gt(ms[4], 0.0, "copying 12 MiB took some time");
    cr_assert_lt(ms[4], 60000.0);
    /* a command without timestamps clears them */
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
    cr_assert_eq(gpu_last_timestamps(ctx, &labels, &ms), 0u);
    gpu_buffer_destroy(ctx, &a);
    gpu_buffer_destroy(ctx, &b);
}

Test(gpu_cmd, profiling_labels_every_dispatch) {
    gpu_context *ctx = test_gpu();
    if (!gpu_context_features(ctx)->timestamps) cr_skip_test("no timestamps on this queue");
    const uint32_t elements = 3000;
    gpu_buffer a, b;
    cr_assert(gpu_buffer_create(ctx, elements * 16, GPU_MEMORY_DEVICE, &a) == VKLLM_OK);
    cr_assert(gpu_buffer_create(ctx, elements * 16, GPU_MEMORY_DEVICE, &b) == VKLLM_OK);
    gpu_pipeline *copy = copy_pipeline(ctx);
    for (int on = 1; on >= 0; on--) {
        gpu_set_profiling(ctx, on);
        gpu_cmd *cmd;
        cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
        gpu_cmd_timestamp(cmd, "start");
        for (uint32_t i = 0; i < 3; i++) {
            gpu_binding bind[2] = {{.buffer = i % 2 ? &b : &a},
                                   {.buffer = i % 2 ? &a : &b, .writable = true}};
            uint32_t n = elements - i;
            gpu_cmd_dispatch(cmd, copy, bind, 2, &n, 4, 12 + i, 1, 1);
        }
        gpu_cmd_timestamp(cmd, "end");
        cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
        const char **labels;
        const double *ms;
        uint32_t count = gpu_last_timestamps(ctx, &labels, &ms);
        if (!on) {
            cr_assert_eq(count, 2u, "profiling off: only the caller's timestamps");
            continue;
        }
        cr_assert_eq(count, 5u);
        cr_assert_str_eq(labels[1], "copy_vec4 p0=3000 g=12x1x1");
        cr_assert_str_eq(labels[3], "copy_vec4 p0=2998 g=14x1x1");
        cr_assert_str_eq(labels[4], "end");
        for (uint32_t i = 1; i < count; i++)
            cr_assert_geq(ms[i], ms[i - 1], "timestamp %u (%s)", i, labels[i]);
    }
    gpu_buffer_destroy(ctx, &a);
    gpu_buffer_destroy(ctx, &b);
}

Test(gpu_cmd, ring_feeds_dispatches_and_recycles) {
    gpu_context *ctx = test_gpu();
    gpu_pipeline *copy = copy_pipeline(ctx);
    const uint64_t align = gpu_context_features(ctx)->min_storage_offset_alignment;
    for (int step = 0; step < 3; step++) {
        /* a few allocations per step, one larger than a ring chunk (4 MiB) on step 1 */
        const uint32_t counts[3] = {5, 1000, step == 1 ? (5u << 20) / 16 : 77};
        gpu_buffer outs[3];
        uint32_t *expect[3];
        gpu_cmd *cmd;
        cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
        for (int i = 0; i < 3; i++) {
            void *mapped;
            gpu_binding binding;
            uint64_t bytes = (uint64_t)counts[i] * 16;
            cr_assert(gpu_ring_alloc(ctx, bytes, &mapped, &binding) == VKLLM_OK, "%s",
                      vkllm_last_error());
            cr_assert_eq(binding.offset % align, 0u);
            cr_assert_eq(binding.range, bytes);
            random_words(1000 + step * 10 + i, mapped, bytes / 4);
            expect[i] = malloc(bytes);
            memcpy(expect[i], mapped, bytes);
            outs[i] = test_gpu_buffer_poisoned(bytes);
            gpu_binding b[2] = {binding, {.buffer = &outs[i], .writable = true}};
            gpu_cmd_dispatch(cmd, copy, b, 2, &counts[i], 4, 64, 1, 1);
        }
        cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK, "%s", vkllm_last_error());
        for (int i = 0; i < 3; i++) {
            uint64_t bytes = (uint64_t)counts[i] * 16;
            uint32_t *back = malloc(bytes);
            test_gpu_read(&outs[i], back, bytes);
            cr_assert(!memcmp(back, expect[i], bytes), "step %d allocation %d differs", step, i);
            free(back);
            free(expect[i]);
            test_gpu_free(&outs[i]);
        }
    }
    /* after a submit the ring starts over */
    void *mapped;
    gpu_binding binding;
    cr_assert(gpu_ring_alloc(ctx, 64, &mapped, &binding) == VKLLM_OK);
    cr_assert_eq(binding.offset, 0u, "ring reset after the step completed");
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
    /* errors */
    cr_assert_eq(gpu_ring_alloc(ctx, 0, &mapped, &binding), VKLLM_ERR_INVALID_ARGUMENT);
    uint64_t too_big = gpu_context_features(ctx)->max_storage_buffer_range + 1;
    cr_assert_eq(gpu_ring_alloc(ctx, too_big, &mapped, &binding), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "maxStorageBufferRange"), "%s", vkllm_last_error());
}

Test(gpu_cmd, ring_full_is_a_clear_error) {
    gpu_context *ctx = test_gpu();
    void *mapped;
    gpu_binding binding;
    const uint64_t piece = (uint64_t)100 << 20;
    cr_assert(gpu_ring_alloc(ctx, piece, &mapped, &binding) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(gpu_ring_alloc(ctx, piece, &mapped, &binding) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(gpu_ring_alloc(ctx, piece, &mapped, &binding), VKLLM_ERR_OUT_OF_DEVICE_MEMORY);
    cr_assert(strstr(vkllm_last_error(), "ring full"), "%s", vkllm_last_error());
    gpu_cmd *cmd;
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
    cr_assert(gpu_ring_alloc(ctx, piece, &mapped, &binding) == VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(gpu_cmd_begin(ctx, &cmd) == VKLLM_OK);
    cr_assert(gpu_cmd_submit(cmd) == VKLLM_OK);
}
