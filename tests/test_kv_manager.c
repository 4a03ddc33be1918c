/* test_kv_manager.c: each rule of the paged KV block manager on small hand-built
 * cases with exact expected block ids, counts, slots and ops (no GPU):
 * copy-on-write of a shared last block, prefix reuse across prompts sharing 200
 * tokens, the last-token rule, commit before caching, LRU and tail-first eviction,
 * fork counts, swap round trip with its ops, capacity answers and error messages,
 * and the waste figure. */
// links: kv common
#include <criterion/criterion.h>
#include <string.h>

#include "common/test_util.h"
#include "kv/kv_manager.h"

static kv_manager *make(uint32_t block_size, uint32_t blocks, uint32_t host_blocks,
                        uint32_t watermark, bool caching) {
    kv_config config = {.block_size = block_size,
                        .num_device_blocks = blocks,
                        .num_host_blocks = host_blocks,
                        .watermark_blocks = watermark,
                        .model_key = 0x1234,
                        .enable_prefix_caching = caching};
    kv_manager *m = NULL;
    cr_assert_eq(kv_manager_create(&config, &m), VKLLM_OK, "%s", vkllm_last_error());
    return m;
}

static uint32_t refs(const kv_manager *m, int32_t block) {
    return kv_manager_device_pool(m)->blocks[block].ref_count;
}

static kv_seq_id alloc_ok(kv_manager *m, const int32_t *tokens, size_t n, size_t *computed) {
    kv_seq_id seq;
    size_t dummy;
    vkllm_status status = kv_manager_allocate(m, tokens, n, 0, &seq, computed ? computed : &dummy);
    cr_assert_eq(status, VKLLM_OK, "allocate %zu tokens: %s", n, vkllm_last_error());
    return seq;
}

static void fill_tokens(int32_t *tokens, size_t n, int32_t start) {
    for (size_t i = 0; i < n; i++)
        tokens[i] = start + (int32_t)i;
}

Test(kv_manager, cow_on_shared_last_block) {
    kv_manager *m = make(4, 8, 0, 0, true);
    int32_t prompt[6];
    fill_tokens(prompt, 6, 100);
    kv_seq_id parent = alloc_ok(m, prompt, 6, NULL);
    cr_assert_eq(kv_manager_commit(m, parent, 6), VKLLM_OK);
    size_t n;
    const int32_t *table = kv_manager_block_table(m, parent, &n);
    cr_assert_eq(n, 2u);
    int32_t full = table[0], last = table[1];
    kv_seq_id child;
    cr_assert_eq(kv_manager_fork(m, parent, &child), VKLLM_OK);
    cr_assert(refs(m, full) == 2 && refs(m, last) == 2, "fork shares every block");
    cr_assert_eq(kv_manager_blocks_to_append(m, child, 1), 1u, "one block for the copy");

    kv_ops ops = {0};
    int32_t token = 7, slot = -1;
    cr_assert_eq(kv_manager_append(m, child, &token, 1, &ops, &slot), VKLLM_OK);
    cr_assert_eq(ops.count, 1u, "one copy-on-write op");
    cr_assert_eq(ops.items[0].kind, KV_OP_COPY);
    cr_assert_eq(ops.items[0].src, last);
    int32_t copy = ops.items[0].dst;
    cr_assert_neq(copy, last);
    cr_assert_eq(slot, copy * 4 + 2, "token 6 goes to offset 2 of the copy");
    cr_assert_eq(refs(m, last), 1u, "the shared block lost the child's reference");
    cr_assert_eq(refs(m, copy), 1u);
    cr_assert_eq(refs(m, full), 2u, "the full block stays shared");
    table = kv_manager_block_table(m, child, &n);
    cr_assert(n == 2 && table[0] == full && table[1] == copy);

    /* the parent is now the only holder: it writes in place, no op */
    kv_ops_clear(&ops);
    token = 8;
    cr_assert_eq(kv_manager_blocks_to_append(m, parent, 1), 0u);
    cr_assert_eq(kv_manager_append(m, parent, &token, 1, &ops, &slot), VKLLM_OK);
    cr_assert_eq(ops.count, 0u);
    cr_assert_eq(slot, last * 4 + 2);

    /* a shared FULL last block is never copied: the next token opens a new block */
    int32_t eight[8];
    fill_tokens(eight, 8, 500);
    kv_seq_id a = alloc_ok(m, eight, 8, NULL);
    kv_seq_id b;
    cr_assert_eq(kv_manager_fork(m, a, &b), VKLLM_OK);
    cr_assert_eq(kv_manager_blocks_to_append(m, b, 1), 1u);
    cr_assert_eq(kv_manager_append(m, b, &token, 1, &ops, &slot), VKLLM_OK);
    cr_assert_eq(ops.count, 0u, "no copy for a full shared block");
    table = kv_manager_block_table(m, b, &n);
    cr_assert_eq(n, 3u);
    cr_assert_eq(slot, table[2] * 4);

    /* an append that needs a copy without an ops list is refused, nothing changes */
    kv_seq_id c;
    cr_assert_eq(kv_manager_fork(m, child, &c), VKLLM_OK);
    uint32_t free_before = kv_manager_num_free_blocks(m);
    cr_assert_eq(kv_manager_append(m, c, &token, 1, NULL, NULL), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "copy-on-write"), "%s", vkllm_last_error());
    cr_assert_eq(kv_manager_num_free_blocks(m), free_before);
    cr_assert_eq(kv_manager_seq_num_tokens(m, c), 7u);
    kv_ops_destroy(&ops);
    kv_manager_destroy(m);
}

/* Two prompts share their first 200 tokens; the second reuses floor(200 / bs) blocks. */
static void check_shared_200(uint32_t bs) {
    kv_manager *m = make(bs, 600, 0, 2, true);
    const uint64_t seed = 0x5eed0200 + bs;
    test_rng rng = test_rng_seeded(seed);
    int32_t a[260], b[250];
    for (int i = 0; i < 260; i++)
        a[i] = (int32_t)test_rng_below(&rng, 30000);
    memcpy(b, a, 200 * sizeof *b);
    for (int i = 200; i < 250; i++)
        b[i] = a[i] + 1; /* differs from token 200 on */
    size_t computed;
    kv_seq_id sa = alloc_ok(m, a, 260, &computed);
    cr_assert_eq(computed, 0u, "bs %u: nothing cached yet", bs);

    /* before A's K/V is committed nothing may be reused */
    kv_seq_id early = alloc_ok(m, b, 250, &computed);
    cr_assert_eq(computed, 0u, "bs %u: uncommitted blocks must not be hit", bs);
    cr_assert_eq(kv_manager_free(m, early), VKLLM_OK);

    cr_assert_eq(kv_manager_commit(m, sa, 260), VKLLM_OK);
    kv_stats before;
    kv_manager_stats(m, &before);
    kv_seq_id sb = alloc_ok(m, b, 250, &computed);
    size_t expect_blocks = 200 / bs;
    cr_assert_eq(computed, expect_blocks * bs, "bs %u: reused %zu tokens, expected %zu", bs,
                 computed, expect_blocks * bs);
    size_t na, nb;
    const int32_t *ta = kv_manager_block_table(m, sa, &na);
    const int32_t *tb = kv_manager_block_table(m, sb, &nb);
    cr_assert_eq(nb, (250 + bs - 1) / bs);
    for (size_t i = 0; i < expect_blocks; i++) {
        cr_assert_eq(tb[i], ta[i], "bs %u: block %zu must be shared", bs, i);
        cr_assert_eq(refs(m, ta[i]), 2u);
    }
    for (size_t i = expect_blocks; i < nb; i++)
        for (size_t j = 0; j < na; j++)
            cr_assert_neq(tb[i], ta[j], "bs %u: block %zu of B must be its own", bs, i);
    kv_stats after;
    kv_manager_stats(m, &after);
    cr_assert_eq(after.prefix_cache_queries - before.prefix_cache_queries, 250u);
    cr_assert_eq(after.prefix_cache_hits - before.prefix_cache_hits, expect_blocks * bs);
    kv_manager_destroy(m);
}

Test(kv_manager, prefix_reuse_across_prompts_sharing_200_tokens) {
    check_shared_200(16);
    check_shared_200(8);
    check_shared_200(32);
    check_shared_200(1);
}

Test(kv_manager, last_prompt_token_is_always_recomputed) {
    kv_manager *m = make(16, 64, 0, 0, true);
    int32_t p[48];
    fill_tokens(p, 48, 1);
    kv_seq_id s = alloc_ok(m, p, 48, NULL);
    cr_assert_eq(kv_manager_commit(m, s, 48), VKLLM_OK);
    size_t computed;
    /* the same 32 tokens: only 1 block may be reused, token 31 needs its logits */
    alloc_ok(m, p, 32, &computed);
    cr_assert_eq(computed, 16u);
    alloc_ok(m, p, 33, &computed);
    cr_assert_eq(computed, 32u);
    alloc_ok(m, p, 48, &computed);
    cr_assert_eq(computed, 32u, "a fully cached prompt still recomputes its last block");
    alloc_ok(m, p, 16, &computed);
    cr_assert_eq(computed, 0u);
    alloc_ok(m, p, 1, &computed);
    cr_assert_eq(computed, 0u);
    /* a different cache salt never shares */
    kv_seq_id salted;
    cr_assert_eq(kv_manager_allocate(m, p, 48, 99, &salted, &computed), VKLLM_OK);
    cr_assert_eq(computed, 0u, "different salt, no sharing");
    /* prefix caching off: never */
    kv_manager *off = make(16, 64, 0, 0, false);
    s = alloc_ok(off, p, 48, NULL);
    cr_assert_eq(kv_manager_commit(off, s, 48), VKLLM_OK);
    alloc_ok(off, p, 48, &computed);
    cr_assert_eq(computed, 0u);
    kv_manager_destroy(off);
    kv_manager_destroy(m);
}

Test(kv_manager, decode_blocks_enter_cache_at_commit) {
    kv_manager *m = make(4, 32, 0, 0, true);
    int32_t p[10];
    fill_tokens(p, 10, 1);
    kv_seq_id s = alloc_ok(m, p, 3, NULL);
    kv_manager_commit(m, s, 3);
    kv_ops ops = {0};
    int32_t slots[7];
    cr_assert_eq(kv_manager_append(m, s, p + 3, 7, &ops, slots), VKLLM_OK);
    cr_assert_eq(kv_manager_seq_num_tokens(m, s), 10u);
    size_t n;
    const int32_t *t = kv_manager_block_table(m, s, &n);
    cr_assert_eq(n, 3u);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(slots[i], t[(3 + i) / 4] * 4 + (3 + i) % 4, "slot of position %d", 3 + i);
    int32_t check[10];
    cr_assert_eq(kv_manager_slots(m, s, 0, 10, check), VKLLM_OK);
    for (int i = 3; i < 10; i++)
        cr_assert_eq(check[i], slots[i - 3]);
    size_t computed;
    kv_seq_id probe = alloc_ok(m, p, 10, &computed);
    cr_assert_eq(computed, 0u, "appended tokens are not committed yet");
    kv_manager_free(m, probe);
    cr_assert_eq(kv_manager_commit(m, s, 10), VKLLM_OK);
    probe = alloc_ok(m, p, 10, &computed);
    cr_assert_eq(computed, 8u, "two full decoded blocks are cached after commit");
    kv_ops_destroy(&ops);
    kv_manager_destroy(m);
}

/* Free-queue order from head to tail. */
static int queue(const kv_manager *m, int32_t *out) {
    const kv_block_pool *pool = kv_manager_device_pool(m);
    int n = 0;
    for (int32_t id = pool->free_head; id >= 0; id = pool->blocks[id].next_free)
        out[n++] = id;
    return n;
}

Test(kv_manager, eviction_is_lru_and_tail_first) {
    kv_manager *m = make(4, 8, 0, 0, true);
    int32_t pa[12], pb[12];
    fill_tokens(pa, 12, 100);
    fill_tokens(pb, 12, 200);
    kv_seq_id a = alloc_ok(m, pa, 12, NULL), b = alloc_ok(m, pb, 12, NULL);
    kv_manager_commit(m, a, 12);
    kv_manager_commit(m, b, 12);
    size_t n;
    int32_t ta[3], tb[3];
    memcpy(ta, kv_manager_block_table(m, a, &n), sizeof ta);
    memcpy(tb, kv_manager_block_table(m, b, &n), sizeof tb);
    kv_manager_free(m, a); /* A first: least recently used */
    kv_manager_free(m, b);
    int32_t order[8];
    cr_assert_eq(queue(m, order), 8);
    /* blocks 6, 7 never used (hashless, head); then A tail-first, then B tail-first */
    int32_t expect[8] = {6, 7, ta[2], ta[1], ta[0], tb[2], tb[1], tb[0]};
    for (int i = 0; i < 8; i++)
        cr_assert_eq(order[i], expect[i], "queue position %d: %d, expected %d", i, order[i],
                     expect[i]);
    kv_stats st;
    kv_manager_stats(m, &st);
    cr_assert_eq(st.blocks_cached_free, 6u);
    cr_assert_eq(st.blocks_free, 8u);

    /* a 12-token prompt of other tokens takes 6, 7 and A's tail block */
    int32_t pc[12];
    fill_tokens(pc, 12, 300);
    kv_seq_id c = alloc_ok(m, pc, 12, NULL);
    const int32_t *tc = kv_manager_block_table(m, c, &n);
    cr_assert(tc[0] == 6 && tc[1] == 7 && tc[2] == ta[2], "took %d %d %d", tc[0], tc[1], tc[2]);
    kv_manager_stats(m, &st);
    cr_assert_eq(st.evictions, 1u, "exactly one cached block evicted");
    /* A's first two blocks survive: a 13-token A prompt reuses 2 blocks (8 tokens) */
    int32_t pa13[13];
    memcpy(pa13, pa, sizeof pa);
    pa13[12] = 1;
    size_t computed;
    kv_seq_id a2 = alloc_ok(m, pa13, 13, &computed);
    cr_assert_eq(computed, 8u);
    const int32_t *ta2 = kv_manager_block_table(m, a2, &n);
    cr_assert(ta2[0] == ta[0] && ta2[1] == ta[1], "hits are the same physical blocks");
    /* the hits left the queue; A2's 2 fresh blocks came from B's tail first */
    const int32_t *ta2_fresh = kv_manager_block_table(m, a2, &n);
    cr_assert(ta2_fresh[2] == tb[2] && ta2_fresh[3] == tb[1], "fresh blocks %d %d", ta2_fresh[2],
              ta2_fresh[3]);
    cr_assert_eq(queue(m, order), 1);
    cr_assert_eq(order[0], tb[0], "B's first block is the last one left: got %d", order[0]);
    kv_manager_destroy(m);
}

Test(kv_manager, fork_counts) {
    kv_manager *m = make(16, 16, 0, 0, true);
    int32_t p[40];
    fill_tokens(p, 40, 1);
    kv_seq_id parent = alloc_ok(m, p, 40, NULL);
    kv_seq_id c1, c2;
    cr_assert_eq(kv_manager_fork(m, parent, &c1), VKLLM_OK);
    cr_assert_eq(kv_manager_fork(m, c1, &c2), VKLLM_OK);
    size_t n;
    const int32_t *t = kv_manager_block_table(m, parent, &n);
    int32_t ids[3];
    memcpy(ids, t, sizeof ids);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(refs(m, ids[i]), 3u, "block %d", i);
    cr_assert_eq(kv_manager_num_free_blocks(m), 13u, "forks take no blocks");
    cr_assert_eq(kv_manager_seq_num_tokens(m, c2), 40u);
    cr_assert_eq(memcmp(kv_manager_seq_tokens(m, c2), p, sizeof p), 0);
    kv_stats st;
    kv_manager_stats(m, &st);
    cr_assert_eq(st.live_tokens, 40u, "shared slots count once");
    cr_assert_eq(st.allocated_slots, 48u);
    kv_manager_free(m, parent);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(refs(m, ids[i]), 2u);
    kv_manager_free(m, c1);
    kv_manager_free(m, c2);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(refs(m, ids[i]), 0u);
    cr_assert_eq(kv_manager_num_free_blocks(m), 16u);
    cr_assert(!kv_manager_seq_is_live(m, c1));
    kv_manager_destroy(m);
}

/* Device and host memory as token ids per slot, moved by the ops like the runner. */
typedef struct shadow {
    int32_t device[64 * 4];
    int32_t host[64 * 4];
} shadow;

static void run_ops(shadow *mem, const kv_ops *ops, uint32_t bs) {
    for (size_t k = 0; k < ops->count; k++) {
        kv_op op = ops->items[k];
        int32_t *src = op.kind == KV_OP_SWAP_IN ? mem->host : mem->device;
        int32_t *dst = op.kind == KV_OP_SWAP_OUT ? mem->host : mem->device;
        memcpy(dst + op.dst * bs, src + op.src * bs, bs * sizeof *dst);
    }
}

static void write_seq(shadow *mem, const kv_manager *m, kv_seq_id s, size_t from) {
    size_t n = kv_manager_seq_num_tokens(m, s);
    int32_t slots[64];
    cr_assert_eq(kv_manager_slots(m, s, from, n - from, slots), VKLLM_OK);
    for (size_t i = from; i < n; i++)
        mem->device[slots[i - from]] = kv_manager_seq_tokens(m, s)[i];
}

static void check_seq(const shadow *mem, const kv_manager *m, kv_seq_id s, const int32_t *expect,
                      size_t n) {
    size_t count;
    const int32_t *t = kv_manager_block_table(m, s, &count);
    const int32_t *memory = kv_manager_seq_is_swapped(m, s) ? mem->host : mem->device;
    uint32_t bs = kv_manager_block_size(m);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(memory[t[i / bs] * bs + i % bs], expect[i], "seq %d position %zu", s, i);
}

static void swap_round_trip(bool caching) {
    kv_manager *m = make(4, 12, 10, 0, caching);
    shadow mem;
    memset(&mem, 0xff, sizeof mem);
    int32_t p[10];
    fill_tokens(p, 10, 40);
    kv_seq_id parent = alloc_ok(m, p, 10, NULL);
    write_seq(&mem, m, parent, 0);
    kv_manager_commit(m, parent, 10);
    kv_seq_id child;
    kv_manager_fork(m, parent, &child);
    kv_ops ops = {0};
    int32_t tok = 77;
    cr_assert_eq(kv_manager_append(m, child, &tok, 1, &ops, NULL), VKLLM_OK);
    run_ops(&mem, &ops, 4);
    write_seq(&mem, m, child, 10);
    kv_manager_commit(m, child, 11);
    int32_t pc[11];
    memcpy(pc, p, sizeof p);
    pc[10] = 77;
    /* parent: blocks P0 P1 P2; child: P0 P1 C2 -> 4 distinct device blocks */
    kv_ops_clear(&ops);
    kv_seq_id group[2] = {parent, child};
    cr_assert(kv_manager_can_swap_out(m, group, 2));
    cr_assert_eq(kv_manager_swap_out(m, group, 2, &ops), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(ops.count, 4u, "one copy per distinct device block");
    for (size_t k = 0; k < ops.count; k++)
        cr_assert_eq(ops.items[k].kind, KV_OP_SWAP_OUT);
    run_ops(&mem, &ops, 4);
    cr_assert(kv_manager_seq_is_swapped(m, parent) && kv_manager_seq_is_swapped(m, child));
    cr_assert_eq(kv_manager_num_free_blocks(m), 12u, "all device blocks released");
    cr_assert_eq(kv_manager_num_free_host_blocks(m), 6u);
    size_t n;
    const int32_t *hp = kv_manager_block_table(m, parent, &n);
    const int32_t *hc = kv_manager_block_table(m, child, &n);
    cr_assert(hp[0] == hc[0] && hp[1] == hc[1] && hp[2] != hc[2], "sharing kept on the host");
    cr_assert_eq(kv_manager_host_pool(m)->blocks[hp[0]].ref_count, 2u);
    check_seq(&mem, m, parent, p, 10);
    check_seq(&mem, m, child, pc, 11);
    int32_t slot;
    cr_assert_eq(kv_manager_slots(m, parent, 0, 1, &slot), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(kv_manager_append(m, parent, &tok, 1, &ops, NULL), VKLLM_ERR_INVALID_ARGUMENT);

    /* clobber the freed device blocks, as other requests would */
    int32_t other[48];
    fill_tokens(other, 48, 9000);
    kv_seq_id o = alloc_ok(m, other, 48, NULL); /* all 12 device blocks: evicts the cache */
    write_seq(&mem, m, o, 0);
    kv_manager_free(m, o);

    kv_ops_clear(&ops);
    cr_assert_eq(kv_manager_can_swap_in(m, group, 2), KV_ALLOC_OK);
    cr_assert_eq(kv_manager_swap_in(m, group, 2, &ops), VKLLM_OK, "%s", vkllm_last_error());
    for (size_t k = 0; k < ops.count; k++)
        cr_assert_eq(ops.items[k].kind, KV_OP_SWAP_IN);
    run_ops(&mem, &ops, 4);
    cr_assert_eq(ops.count, 4u, "caching %d: every block copied back", caching);
    cr_assert_eq(kv_manager_num_free_host_blocks(m), 10u, "host blocks released");
    check_seq(&mem, m, parent, p, 10);
    check_seq(&mem, m, child, pc, 11);
    const int32_t *dp = kv_manager_block_table(m, parent, &n);
    const int32_t *dc = kv_manager_block_table(m, child, &n);
    cr_assert(dp[0] == dc[0] && dp[1] == dc[1] && dp[2] != dc[2], "sharing kept on the device");
    cr_assert_eq(refs(m, dp[0]), 2u);
    cr_assert_eq(refs(m, dp[2]), 1u);

    if (caching) {
        /* swap out again and back without clobbering: the committed full blocks are
         * still cached on the device, so they come back without a copy */
        kv_ops_clear(&ops);
        cr_assert_eq(kv_manager_swap_out(m, group, 2, &ops), VKLLM_OK);
        run_ops(&mem, &ops, 4);
        kv_ops_clear(&ops);
        cr_assert_eq(kv_manager_swap_in(m, group, 2, &ops), VKLLM_OK);
        run_ops(&mem, &ops, 4);
        cr_assert_eq(ops.count, 2u, "two full cached blocks reused, two partial ones copied");
        check_seq(&mem, m, parent, p, 10);
        check_seq(&mem, m, child, pc, 11);
    }
    kv_ops_destroy(&ops);
    kv_manager_destroy(m);
}

Test(kv_manager, swap_round_trip_with_ops) {
    swap_round_trip(false);
    swap_round_trip(true);
}

Test(kv_manager, swap_fails_cleanly) {
    kv_manager *m = make(4, 16, 3, 0, true);
    int32_t p[16];
    fill_tokens(p, 16, 1);
    kv_seq_id s = alloc_ok(m, p, 16, NULL); /* 4 blocks, host has 3 */
    kv_ops ops = {0};
    cr_assert(!kv_manager_can_swap_out(m, &s, 1));
    cr_assert_eq(kv_manager_swap_out(m, &s, 1, &ops), VKLLM_ERR_BUSY);
    cr_assert(strstr(vkllm_last_error(), "4 device blocks; 3 of 3 host blocks"), "%s",
              vkllm_last_error());
    cr_assert_eq(ops.count, 0u);
    cr_assert(!kv_manager_seq_is_swapped(m, s));
    cr_assert_eq(kv_manager_num_free_blocks(m), 12u);
    kv_seq_id twice[2] = {s, s};
    cr_assert_eq(kv_manager_swap_out(m, twice, 2, &ops), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "listed twice"), "%s", vkllm_last_error());
    cr_assert_eq(kv_manager_swap_in(m, &s, 1, &ops), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "on the device"), "%s", vkllm_last_error());
    kv_seq_id dead = 999;
    cr_assert_eq(kv_manager_swap_out(m, &dead, 1, &ops), VKLLM_ERR_INVALID_ARGUMENT);

    /* swap in when the device is full: LATER / BUSY, no change */
    kv_seq_id small = alloc_ok(m, p, 8, NULL);
    cr_assert_eq(kv_manager_swap_out(m, &small, 1, &ops), VKLLM_OK);
    int32_t big[48];
    fill_tokens(big, 48, 500);
    kv_seq_id filler = alloc_ok(m, big, 48, NULL); /* 12 blocks: device full */
    cr_assert_eq(kv_manager_num_free_blocks(m), 0u);
    kv_ops_clear(&ops);
    cr_assert_eq(kv_manager_can_swap_in(m, &small, 1), KV_ALLOC_LATER);
    cr_assert_eq(kv_manager_swap_in(m, &small, 1, &ops), VKLLM_ERR_BUSY);
    cr_assert_eq(ops.count, 0u);
    cr_assert(kv_manager_seq_is_swapped(m, small));
    kv_manager_free(m, filler);
    cr_assert_eq(kv_manager_swap_in(m, &small, 1, &ops), VKLLM_OK);
    kv_ops_destroy(&ops);
    kv_manager_destroy(m);
}

Test(kv_manager, capacity_and_too_long) {
    kv_manager *m = make(16, 10, 0, 1, true);
    int32_t p[200];
    fill_tokens(p, 200, 1);
    /* 9 usable blocks (one is watermark): 144 tokens fit, 145 never */
    cr_assert_eq(kv_manager_can_allocate(m, p, 145, 0), KV_ALLOC_NEVER);
    kv_seq_id s;
    size_t computed;
    cr_assert_eq(kv_manager_allocate(m, p, 145, 0, &s, &computed), VKLLM_ERR_TOO_LONG);
    cr_assert(strstr(vkllm_last_error(), "prompt of 145 tokens needs 10 blocks of 16 tokens"), "%s",
              vkllm_last_error());
    cr_assert(strstr(vkllm_last_error(), "can never fit"), "%s", vkllm_last_error());
    cr_assert_eq(kv_manager_num_free_blocks(m), 10u);
    cr_assert_eq(kv_manager_can_allocate(m, p, 144, 0), KV_ALLOC_OK);
    cr_assert_eq(kv_manager_can_allocate(m, p, 0, 0), KV_ALLOC_NEVER);
    cr_assert_eq(kv_manager_allocate(m, p, 0, 0, &s, &computed), VKLLM_ERR_INVALID_ARGUMENT);

    kv_seq_id a = alloc_ok(m, p, 100, NULL); /* 7 blocks, 3 free */
    int32_t q[40];
    fill_tokens(q, 40, 1000);
    /* 3 blocks would leave 0 < watermark 1 */
    cr_assert_eq(kv_manager_can_allocate(m, q, 40, 0), KV_ALLOC_LATER);
    cr_assert_eq(kv_manager_allocate(m, q, 40, 0, &s, &computed), VKLLM_ERR_BUSY);
    cr_assert(strstr(vkllm_last_error(), "needs 3 free blocks"), "%s", vkllm_last_error());
    cr_assert_eq(kv_manager_num_free_blocks(m), 3u);
    kv_stats st;
    kv_manager_stats(m, &st);
    cr_assert_eq(st.failed_allocations, 1u);
    cr_assert_eq(st.num_seqs, 1u);
    cr_assert_eq(kv_manager_can_allocate(m, q, 32, 0), KV_ALLOC_OK);

    /* a prompt that hits blocks in use costs only its fresh blocks */
    kv_manager_commit(m, a, 100);
    cr_assert_eq(kv_manager_can_allocate(m, p, 100, 0), KV_ALLOC_OK,
                 "6 of 7 blocks hit (in use): 1 fresh block needed");
    size_t got;
    kv_seq_id b;
    cr_assert_eq(kv_manager_allocate(m, p, 100, 0, &b, &got), VKLLM_OK);
    cr_assert_eq(got, 96u);
    cr_assert_eq(kv_manager_num_free_blocks(m), 2u);

    /* appends use the watermark; with none free: BUSY and no change */
    kv_ops ops = {0};
    int32_t tok = 5;
    for (int i = 0; i < 12 + 2 * 16; i++) /* 12 fill the last block, 32 take 2 blocks */
        cr_assert_eq(kv_manager_append(m, a, &tok, 1, &ops, NULL), VKLLM_OK, "append %d", i);
    cr_assert_eq(kv_manager_num_free_blocks(m), 0u);
    size_t len = kv_manager_seq_num_tokens(m, a);
    cr_assert_eq(len, 144u);
    cr_assert(!kv_manager_can_append(m, a, 1));
    cr_assert_eq(kv_manager_append(m, a, &tok, 1, &ops, NULL), VKLLM_ERR_BUSY);
    cr_assert_eq(kv_manager_seq_num_tokens(m, a), len);
    cr_assert(kv_manager_can_append(m, b, 12), "b's last block has room for 12");
    cr_assert(!kv_manager_can_append(m, b, 13));
    kv_ops_destroy(&ops);
    kv_manager_destroy(m);
}

Test(kv_manager, bad_arguments_are_reported) {
    kv_config config = {.block_size = 16, .num_device_blocks = 4, .watermark_blocks = 4};
    kv_manager *m = NULL;
    cr_assert_eq(kv_manager_create(&config, &m), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "watermark_blocks 4"), "%s", vkllm_last_error());
    config = (kv_config){.block_size = 0, .num_device_blocks = 4};
    cr_assert_eq(kv_manager_create(&config, &m), VKLLM_ERR_INVALID_ARGUMENT);
    config = (kv_config){.block_size = 1024, .num_device_blocks = 1u << 22};
    cr_assert_eq(kv_manager_create(&config, &m), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "int32"), "%s", vkllm_last_error());
    cr_assert_null(m);

    m = make(4, 8, 0, 0, true);
    int32_t p[6] = {1, 2, 3, 4, 5, 6};
    kv_seq_id s = alloc_ok(m, p, 6, NULL);
    cr_assert_eq(kv_manager_commit(m, s, 7), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "has 6 tokens, cannot commit 7"), "%s",
              vkllm_last_error());
    int32_t slots[8];
    cr_assert_eq(kv_manager_slots(m, s, 4, 3, slots), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "positions [4, 7)"), "%s", vkllm_last_error());
    cr_assert_eq(kv_manager_free(m, s), VKLLM_OK);
    cr_assert_eq(kv_manager_free(m, s), VKLLM_ERR_INVALID_ARGUMENT, "double free");
    cr_assert(strstr(vkllm_last_error(), "not live"), "%s", vkllm_last_error());
    kv_seq_id child;
    cr_assert_eq(kv_manager_fork(m, s, &child), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(kv_manager_fork(m, -1, &child), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(kv_manager_commit(m, 12345, 1), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(kv_manager_blocks_to_append(m, s, 1), UINT32_MAX);
    cr_assert(!kv_manager_can_append(m, s, 1));
    size_t n = 99;
    cr_assert_null(kv_manager_block_table(m, s, &n));
    cr_assert_eq(n, 0u);
    kv_manager_destroy(m);
}

Test(kv_manager, waste_counts_unfilled_tail_slots) {
    kv_manager *m = make(16, 64, 0, 0, true);
    int32_t p[100];
    fill_tokens(p, 100, 1);
    alloc_ok(m, p, 100, NULL);     /* 7 blocks, 112 slots, 100 tokens */
    alloc_ok(m, p + 50, 33, NULL); /* 3 blocks, 48 slots, 33 tokens */
    kv_stats st;
    kv_manager_stats(m, &st);
    cr_assert_eq(st.blocks_used, 10u);
    cr_assert_eq(st.allocated_slots, 160u);
    cr_assert_eq(st.live_tokens, 133u);
    double expect = (160.0 - 133.0) / 160.0;
    cr_assert(st.waste > expect - 1e-12 && st.waste < expect + 1e-12, "waste %f, expected %f",
              st.waste, expect);
    cr_assert(st.usage > 160.0 / 1024 - 1e-12 && st.usage < 160.0 / 1024 + 1e-12);
    cr_assert_eq(st.num_seqs, 2u);
    kv_manager_destroy(m);
}
