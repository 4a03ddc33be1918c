/* test_kv_property.c: random operation sequences against the paged KV block manager,
 * with every invariant checked after every operation (no GPU).
 *
 * The test plays scheduler and runner: it allocates prompts drawn from a few shared
 * prefixes over a tiny alphabet (so prefixes collide and the cache hits), computes
 * prompts in chunks, appends decode tokens, forks, frees, swaps groups out and in,
 * all under a small pool so eviction and refusals happen. Alongside, it keeps a
 * SHADOW of device and host KV memory: each slot holds what the K/V of a token
 * depends on (token id, position, and an independent hash of the whole prefix),
 * written when the test "computes" a token and moved only by the kv_ops the manager
 * returns. Reading every live sequence back through its block table proves that
 * copy-on-write, swapping and prefix hits hand out the right contents.
 *
 * Checked after each operation (recomputed from the test's own sequence list):
 * - device and host ref_count == number of block-table entries naming the block;
 * - the free queue holds exactly the zero-count blocks, each once, links consistent;
 * - hash map entries point at cached blocks holding that hash; every cached block is
 *   indexed, full, and its stored tokens equal the shadow contents of the block;
 * - fill of each referenced block == tokens each referencing sequence has there;
 * - a block is written only when its count is 1;
 * - committed positions of every live sequence read back correctly;
 * - capacity answers agree with outcomes (OK => success, LATER/BUSY => no change);
 * - at the end, after freeing everything, every block is free. */
// links: kv common
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/test_util.h"
#include "kv/kv_manager.h"

enum { MAX_SEQS = 24, MAX_LEN = 160, NUM_BASES = 3, BASE_LEN = 96 };

typedef struct shadow_slot {
    int32_t token;
    int32_t position;
    uint64_t context; /* FNV-1a over (salt, tokens[0..position]) */
} shadow_slot;

typedef struct model_seq {
    bool live;
    kv_seq_id id;
    int group;
    uint64_t salt;
    int32_t tokens[MAX_LEN];
    size_t len;
    size_t computed;
    bool swapped;
} model_seq;

typedef struct world {
    uint64_t seed;
    long op_index;
    const char *op_name;
    kv_manager *m;
    uint32_t bs, num_blocks, num_host;
    bool caching;
    shadow_slot *device;
    shadow_slot *host;
    model_seq seqs[MAX_SEQS];
    int next_group;
    int32_t bases[NUM_BASES][BASE_LEN];
    kv_ops ops;
    /* scratch for the checker */
    uint32_t *expect_refs;
    uint32_t *expect_fill;
    uint32_t *expect_host_refs;
    uint32_t *expect_host_fill;
    uint8_t *seen;
    /* coverage counters: a run that never reaches a path proves nothing about it */
    long hits, cows, swap_outs, swap_ins, refusals, evictions_seen, forks, frees;
} world;

#define CTX "seed %llx op %ld (%s): "
#define CTXA (unsigned long long)w->seed, w->op_index, w->op_name

static uint64_t context_hash(uint64_t salt, const int32_t *tokens, size_t count) {
    uint64_t h = 0xcbf29ce484222325ull ^ salt;
    for (size_t i = 0; i < count; i++) {
        uint32_t t = (uint32_t)tokens[i];
        for (int b = 0; b < 4; b++) {
            h ^= (t >> (8 * b)) & 0xff;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

static shadow_slot expected_slot(const model_seq *s, size_t pos) {
    return (shadow_slot){.token = s->tokens[pos],
                         .position = (int32_t)pos,
                         .context = context_hash(s->salt, s->tokens, pos + 1)};
}

/* ------------------------------------------------------------------ checker */

static void check_free_list(world *w, const kv_block_pool *pool, const char *which) {
    memset(w->seen, 0, pool->num_blocks);
    uint32_t count = 0;
    int32_t prev = -1;
    for (int32_t id = pool->free_head; id >= 0; id = pool->blocks[id].next_free) {
        cr_assert(id < (int32_t)pool->num_blocks, CTX "%s queue: id %d out of range", CTXA, which,
                  id);
        cr_assert(!w->seen[id], CTX "%s queue: block %d twice", CTXA, which, id);
        w->seen[id] = 1;
        cr_assert_eq(pool->blocks[id].ref_count, 0u,
                     CTX "%s block %d is in the free queue and referenced", CTXA, which, id);
        cr_assert_eq(pool->blocks[id].prev_free, prev, CTX "%s queue: broken back link at %d", CTXA,
                     which, id);
        prev = id;
        count++;
    }
    cr_assert_eq(pool->free_tail, prev, CTX "%s queue: tail", CTXA, which);
    cr_assert_eq(count, pool->num_free, CTX "%s queue: %u linked, num_free %u", CTXA, which, count,
                 pool->num_free);
    for (uint32_t b = 0; b < pool->num_blocks; b++)
        cr_assert(pool->blocks[b].ref_count > 0 || w->seen[b],
                  CTX "%s block %u has count 0 but is not in the free queue", CTXA, which, b);
}

static void check_world(world *w) {
    const kv_block_pool *dev = kv_manager_device_pool(w->m);
    const kv_block_pool *host = kv_manager_host_pool(w->m);
    uint32_t bs = w->bs;
    memset(w->expect_refs, 0, w->num_blocks * sizeof *w->expect_refs);
    memset(w->expect_host_refs, 0, (w->num_host + 1) * sizeof *w->expect_host_refs);
    for (uint32_t b = 0; b < w->num_blocks; b++)
        w->expect_fill[b] = UINT32_MAX;
    for (uint32_t b = 0; b < w->num_host; b++)
        w->expect_host_fill[b] = UINT32_MAX;
    uint32_t live_device = 0, live_swapped = 0;

    for (int i = 0; i < MAX_SEQS; i++) {
        const model_seq *s = &w->seqs[i];
        if (!s->live) continue;
        cr_assert(kv_manager_seq_is_live(w->m, s->id), CTX "seq %d died", CTXA, s->id);
        cr_assert_eq(kv_manager_seq_is_swapped(w->m, s->id), s->swapped, CTX "seq %d residence",
                     CTXA, s->id);
        cr_assert_eq(kv_manager_seq_num_tokens(w->m, s->id), s->len, CTX "seq %d length", CTXA,
                     s->id);
        cr_assert_eq(kv_manager_seq_num_committed(w->m, s->id), s->computed, CTX "seq %d committed",
                     CTXA, s->id);
        cr_assert_eq(
            memcmp(kv_manager_seq_tokens(w->m, s->id), s->tokens, s->len * sizeof *s->tokens), 0,
            CTX "seq %d tokens", CTXA, s->id);
        size_t count;
        const int32_t *table = kv_manager_block_table(w->m, s->id, &count);
        cr_assert_eq(count, (s->len + bs - 1) / bs, CTX "seq %d table length", CTXA, s->id);
        uint32_t limit = s->swapped ? w->num_host : w->num_blocks;
        uint32_t *refs = s->swapped ? w->expect_host_refs : w->expect_refs;
        uint32_t *fill = s->swapped ? w->expect_host_fill : w->expect_fill;
        const kv_block_pool *pool = s->swapped ? host : dev;
        for (size_t k = 0; k < count; k++) {
            int32_t b = table[k];
            cr_assert(b >= 0 && (uint32_t)b < limit, CTX "seq %d entry %zu: block %d", CTXA, s->id,
                      k, b);
            refs[b]++;
            size_t in_block = s->len - k * bs < bs ? s->len - k * bs : bs;
            if (fill[b] == UINT32_MAX) fill[b] = (uint32_t)in_block;
            cr_assert_eq(fill[b], in_block,
                         CTX "block %d shared by sequences with different token counts", CTXA, b);
            cr_assert_eq(pool->blocks[b].fill, in_block,
                         CTX "seq %d block %d fill %u, expected %zu", CTXA, s->id, b,
                         pool->blocks[b].fill, in_block);
        }
        /* committed contents read back through the table */
        const shadow_slot *mem = s->swapped ? w->host : w->device;
        for (size_t p = 0; p < s->computed; p++) {
            shadow_slot got = mem[(size_t)table[p / bs] * bs + p % bs];
            shadow_slot want = expected_slot(s, p);
            cr_assert(got.token == want.token && got.position == want.position &&
                          got.context == want.context,
                      CTX "seq %d (%s) position %zu reads token %d pos %d, expected %d (block "
                          "%d)",
                      CTXA, s->id, s->swapped ? "host" : "device", p, got.token, got.position,
                      want.token, table[p / bs]);
        }
        if (s->swapped)
            live_swapped++;
        else
            live_device++;
    }
    for (uint32_t b = 0; b < w->num_blocks; b++)
        cr_assert_eq(dev->blocks[b].ref_count, w->expect_refs[b],
                     CTX "device block %u count %u, tables name it %u times", CTXA, b,
                     dev->blocks[b].ref_count, w->expect_refs[b]);
    for (uint32_t b = 0; b < w->num_host; b++)
        cr_assert_eq(host->blocks[b].ref_count, w->expect_host_refs[b],
                     CTX "host block %u count %u, tables name it %u times", CTXA, b,
                     host->blocks[b].ref_count, w->expect_host_refs[b]);
    check_free_list(w, dev, "device");
    check_free_list(w, host, "host");

    /* prefix-cache index */
    uint32_t entries = 0;
    for (uint32_t i = 0; i < kv_hash_map_capacity(&dev->map); i++) {
        int32_t b = dev->map.values[i];
        if (b < 0) continue;
        entries++;
        cr_assert(b < (int32_t)w->num_blocks, CTX "map entry -> block %d", CTXA, b);
        cr_assert(dev->blocks[b].cached && dev->blocks[b].hash == dev->map.keys[i],
                  CTX "map entry %llx -> block %d which holds %s %llx", CTXA,
                  (unsigned long long)dev->map.keys[i], b,
                  dev->blocks[b].cached ? "hash" : "no hash",
                  (unsigned long long)dev->blocks[b].hash);
    }
    uint32_t cached = 0;
    for (uint32_t b = 0; b < w->num_blocks; b++) {
        const kv_block *block = &dev->blocks[b];
        if (!block->cached) continue;
        cached++;
        cr_assert(w->caching, CTX "block %u cached with caching off", CTXA, b);
        cr_assert_eq(kv_hash_map_get(&dev->map, block->hash), (int32_t)b,
                     CTX "cached block %u not indexed", CTXA, b);
        cr_assert_eq(block->fill, bs, CTX "cached block %u not full", CTXA, b);
        for (uint32_t k = 0; k < bs; k++)
            cr_assert_eq(w->device[(size_t)b * bs + k].token, dev->tokens[(size_t)b * bs + k],
                         CTX "cached block %u slot %u holds token %d, the index says %d", CTXA, b,
                         k, w->device[(size_t)b * bs + k].token, dev->tokens[(size_t)b * bs + k]);
    }
    cr_assert_eq(entries, cached, CTX "%u map entries, %u cached blocks", CTXA, entries, cached);
    cr_assert_eq(dev->num_cached, cached, CTX "num_cached", CTXA);

    kv_stats st;
    kv_manager_stats(w->m, &st);
    cr_assert_eq(st.blocks_used + st.blocks_free, w->num_blocks, CTX "stats blocks", CTXA);
    cr_assert(st.live_tokens <= st.allocated_slots, CTX "live > allocated", CTXA);
    cr_assert_eq(st.num_seqs, live_device, CTX "stats num_seqs", CTXA);
    cr_assert_eq(st.num_swapped_seqs, live_swapped, CTX "stats swapped", CTXA);
    cr_assert(st.blocks_cached_free <= st.blocks_free && st.blocks_cached == cached);
}

/* ------------------------------------------------------------------ helpers */

/* Whether a live device sequence outside `group` names device block b. */
static bool referenced_outside(const world *w, int group, int32_t b) {
    for (int i = 0; i < MAX_SEQS; i++) {
        const model_seq *s = &w->seqs[i];
        if (!s->live || s->swapped || s->group == group) continue;
        size_t count;
        const int32_t *table = kv_manager_block_table(w->m, s->id, &count);
        for (size_t k = 0; k < count; k++)
            if (table[k] == b) return true;
    }
    return false;
}

/* Executes the ops like the runner. A copy-on-write target must be unshared; a
 * swap-in target may be shared, but only inside the group coming back (swap_in_group,
 * whose sequences are already marked resident). */
static void run_ops(world *w, int swap_in_group) {
    const kv_block_pool *dev = kv_manager_device_pool(w->m);
    for (size_t k = 0; k < w->ops.count; k++) {
        kv_op op = w->ops.items[k];
        shadow_slot *src = op.kind == KV_OP_SWAP_IN ? w->host : w->device;
        shadow_slot *dst = op.kind == KV_OP_SWAP_OUT ? w->host : w->device;
        if (op.kind == KV_OP_COPY)
            cr_assert_eq(dev->blocks[op.dst].ref_count, 1u,
                         CTX "copy op writes device block %d with count %u", CTXA, op.dst,
                         dev->blocks[op.dst].ref_count);
        if (op.kind == KV_OP_SWAP_IN)
            cr_assert(!referenced_outside(w, swap_in_group, op.dst),
                      CTX "swap-in overwrites device block %d that another request uses", CTXA,
                      op.dst);
        memcpy(dst + (size_t)op.dst * w->bs, src + (size_t)op.src * w->bs, w->bs * sizeof *dst);
        if (op.kind == KV_OP_COPY) w->cows++;
    }
    kv_ops_clear(&w->ops);
}

/* The runner's forward pass for positions [from, to) of a device sequence. */
static void compute(world *w, model_seq *s, size_t from, size_t to) {
    const kv_block_pool *dev = kv_manager_device_pool(w->m);
    int32_t slots[MAX_LEN];
    cr_assert_eq(kv_manager_slots(w->m, s->id, from, to - from, slots), VKLLM_OK, CTX "%s", CTXA,
                 vkllm_last_error());
    for (size_t p = from; p < to; p++) {
        int32_t block = slots[p - from] / (int32_t)w->bs;
        cr_assert_eq(dev->blocks[block].ref_count, 1u,
                     CTX "seq %d writes position %zu into block %d with count %u", CTXA, s->id, p,
                     block, dev->blocks[block].ref_count);
        w->device[slots[p - from]] = expected_slot(s, p);
    }
    cr_assert_eq(kv_manager_commit(w->m, s->id, to), VKLLM_OK, CTX "%s", CTXA, vkllm_last_error());
    s->computed = to;
}

static int free_model_slot(world *w) {
    for (int i = 0; i < MAX_SEQS; i++)
        if (!w->seqs[i].live) return i;
    return -1;
}

/* A random live sequence matching the predicate, or -1. */
typedef bool (*seq_pred)(const model_seq *s);
static int pick(world *w, test_rng *rng, seq_pred pred) {
    int candidates[MAX_SEQS], n = 0;
    for (int i = 0; i < MAX_SEQS; i++)
        if (w->seqs[i].live && pred(&w->seqs[i])) candidates[n++] = i;
    return n ? candidates[test_rng_below(rng, (uint32_t)n)] : -1;
}
static bool any_seq(const model_seq *s) {
    return s->live;
}
static bool on_device_pending(const model_seq *s) {
    return !s->swapped && s->computed < s->len;
}
static bool on_device_done(const model_seq *s) {
    return !s->swapped && s->computed == s->len && s->len < MAX_LEN - 4;
}
static bool done(const model_seq *s) {
    return s->computed == s->len;
}
static bool on_device(const model_seq *s) {
    return !s->swapped;
}
static bool swapped(const model_seq *s) {
    return s->swapped;
}

static size_t group_ids(world *w, int group, kv_seq_id *ids) {
    size_t n = 0;
    for (int i = 0; i < MAX_SEQS; i++)
        if (w->seqs[i].live && w->seqs[i].group == group) ids[n++] = w->seqs[i].id;
    return n;
}

static void snapshot(world *w, uint32_t *free_dev, uint32_t *free_host) {
    *free_dev = kv_manager_num_free_blocks(w->m);
    *free_host = kv_manager_num_free_host_blocks(w->m);
}

static void assert_unchanged(world *w, uint32_t free_dev, uint32_t free_host) {
    cr_assert_eq(kv_manager_num_free_blocks(w->m), free_dev, CTX "refused call changed the pool",
                 CTXA);
    cr_assert_eq(kv_manager_num_free_host_blocks(w->m), free_host,
                 CTX "refused call changed the host pool", CTXA);
    cr_assert_eq(w->ops.count, 0u, CTX "refused call emitted ops", CTXA);
}

/* ------------------------------------------------------------------ operations */

static void op_allocate(world *w, test_rng *rng) {
    int slot = free_model_slot(w);
    if (slot < 0) return;
    model_seq *s = &w->seqs[slot];
    size_t len = 0;
    int32_t *t = s->tokens;
    /* a prefix of a shared base, then a short tail over a 3-letter alphabet */
    const int32_t *base = w->bases[test_rng_below(rng, NUM_BASES)];
    size_t prefix = test_rng_below(rng, BASE_LEN);
    for (; len < prefix; len++)
        t[len] = base[len];
    size_t tail = test_rng_below(rng, 24);
    for (size_t i = 0; i < tail; i++)
        t[len++] = (int32_t)test_rng_below(rng, 3);
    if (test_rng_below(rng, 40) == 0) { /* sometimes longer than the pool can ever hold */
        while (len < MAX_LEN - 8)
            t[len++] = (int32_t)test_rng_below(rng, 3);
    }
    if (len == 0) t[len++] = 1;
    s->salt = test_rng_below(rng, 8) == 0 ? 1 : 0;

    kv_alloc_status can = kv_manager_can_allocate(w->m, t, len, s->salt);
    uint32_t fd, fh;
    snapshot(w, &fd, &fh);
    kv_seq_id id;
    size_t computed;
    vkllm_status status = kv_manager_allocate(w->m, t, len, s->salt, &id, &computed);
    if (can == KV_ALLOC_NEVER) {
        cr_assert_eq(status, VKLLM_ERR_TOO_LONG, CTX "NEVER but allocate gave %s", CTXA,
                     vkllm_status_name(status));
        assert_unchanged(w, fd, fh);
        w->refusals++;
        return;
    }
    if (can == KV_ALLOC_LATER) {
        cr_assert_eq(status, VKLLM_ERR_BUSY, CTX "LATER but allocate gave %s", CTXA,
                     vkllm_status_name(status));
        assert_unchanged(w, fd, fh);
        w->refusals++;
        return;
    }
    cr_assert_eq(status, VKLLM_OK, CTX "can_allocate OK but: %s", CTXA, vkllm_last_error());
    cr_assert(computed % w->bs == 0 && computed < len,
              CTX "num_computed %zu for a prompt of %zu tokens (bs %u)", CTXA, computed, len,
              w->bs);
    if (computed) w->hits++;
    if (!w->caching) cr_assert_eq(computed, 0u);
    s->live = true;
    s->id = id;
    s->len = len;
    s->computed = computed; /* the checker now reads these positions: prefix hit contents */
    s->swapped = false;
    s->group = w->next_group++;
}

static void op_compute(world *w, test_rng *rng) {
    int i = pick(w, rng, on_device_pending);
    if (i < 0) return;
    model_seq *s = &w->seqs[i];
    size_t chunk = 1 + test_rng_below(rng, (uint32_t)(s->len - s->computed));
    compute(w, s, s->computed, s->computed + chunk);
}

static void op_append(world *w, test_rng *rng) {
    int i = pick(w, rng, on_device_done);
    if (i < 0) return;
    model_seq *s = &w->seqs[i];
    size_t n = 1 + test_rng_below(rng, 3);
    int32_t tokens[3];
    for (size_t k = 0; k < n; k++)
        tokens[k] = (int32_t)test_rng_below(rng, 3);
    bool can = kv_manager_can_append(w->m, s->id, n);
    uint32_t need = kv_manager_blocks_to_append(w->m, s->id, n);
    uint32_t fd, fh;
    snapshot(w, &fd, &fh);
    int32_t slots[3];
    vkllm_status status = kv_manager_append(w->m, s->id, tokens, n, &w->ops, slots);
    if (!can) {
        cr_assert_eq(status, VKLLM_ERR_BUSY, CTX "can_append false but append gave %s", CTXA,
                     vkllm_status_name(status));
        assert_unchanged(w, fd, fh);
        w->refusals++;
        return;
    }
    cr_assert_eq(status, VKLLM_OK, CTX "can_append but: %s", CTXA, vkllm_last_error());
    cr_assert_eq(fd - kv_manager_num_free_blocks(w->m), need,
                 CTX "append used %u blocks, blocks_to_append said %u", CTXA,
                 fd - kv_manager_num_free_blocks(w->m), need);
    run_ops(w, -1);
    memcpy(s->tokens + s->len, tokens, n * sizeof *tokens);
    s->len += n;
    int32_t check[3];
    cr_assert_eq(kv_manager_slots(w->m, s->id, s->len - n, n, check), VKLLM_OK);
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(slots[k], check[k], CTX "append slot %zu", CTXA, k);
    /* computed in the next step, maybe not all at once */
    size_t upto = s->len - (test_rng_below(rng, 4) == 0 ? test_rng_below(rng, (uint32_t)n) : 0);
    if (upto > s->computed) compute(w, s, s->computed, upto);
}

static void op_fork(world *w, test_rng *rng) {
    int i = pick(w, rng, done);
    int slot = free_model_slot(w);
    if (i < 0 || slot < 0) return;
    model_seq *parent = &w->seqs[i];
    kv_seq_id child;
    cr_assert_eq(kv_manager_fork(w->m, parent->id, &child), VKLLM_OK, CTX "%s", CTXA,
                 vkllm_last_error());
    w->seqs[slot] = *parent;
    w->seqs[slot].id = child;
    w->forks++;
}

static void op_free(world *w, test_rng *rng) {
    int i = pick(w, rng, any_seq);
    if (i < 0) return;
    cr_assert_eq(kv_manager_free(w->m, w->seqs[i].id), VKLLM_OK, CTX "%s", CTXA,
                 vkllm_last_error());
    w->seqs[i].live = false;
    w->frees++;
}

static void op_swap_out(world *w, test_rng *rng) {
    int i = pick(w, rng, on_device);
    if (i < 0) return;
    kv_seq_id ids[MAX_SEQS];
    size_t n = group_ids(w, w->seqs[i].group, ids);
    bool can = kv_manager_can_swap_out(w->m, ids, n);
    uint32_t fd, fh;
    snapshot(w, &fd, &fh);
    vkllm_status status = kv_manager_swap_out(w->m, ids, n, &w->ops);
    if (!can) {
        cr_assert_eq(status, VKLLM_ERR_BUSY, CTX "swap out refused with %s", CTXA,
                     vkllm_status_name(status));
        assert_unchanged(w, fd, fh);
        w->refusals++;
        return;
    }
    cr_assert_eq(status, VKLLM_OK, CTX "%s", CTXA, vkllm_last_error());
    cr_assert_eq(fh - kv_manager_num_free_host_blocks(w->m), w->ops.count,
                 CTX "one host block per swap-out op", CTXA);
    run_ops(w, -1);
    for (int k = 0; k < MAX_SEQS; k++)
        if (w->seqs[k].live && w->seqs[k].group == w->seqs[i].group) w->seqs[k].swapped = true;
    w->swap_outs++;
}

static void op_swap_in(world *w, test_rng *rng) {
    int i = pick(w, rng, swapped);
    if (i < 0) return;
    kv_seq_id ids[MAX_SEQS];
    size_t n = group_ids(w, w->seqs[i].group, ids);
    kv_alloc_status can = kv_manager_can_swap_in(w->m, ids, n);
    uint32_t fd, fh;
    snapshot(w, &fd, &fh);
    vkllm_status status = kv_manager_swap_in(w->m, ids, n, &w->ops);
    if (can != KV_ALLOC_OK) {
        cr_assert_eq(status, VKLLM_ERR_BUSY, CTX "swap in refused with %s", CTXA,
                     vkllm_status_name(status));
        assert_unchanged(w, fd, fh);
        w->refusals++;
        return;
    }
    cr_assert_eq(status, VKLLM_OK, CTX "%s", CTXA, vkllm_last_error());
    for (int k = 0; k < MAX_SEQS; k++)
        if (w->seqs[k].live && w->seqs[k].group == w->seqs[i].group) w->seqs[k].swapped = false;
    run_ops(w, w->seqs[i].group);
    w->swap_ins++;
}

/* ------------------------------------------------------------------ driver */

typedef struct run_config {
    uint64_t seed;
    uint32_t block_size, num_blocks, num_host, watermark;
    bool caching;
    long num_ops;
} run_config;

static void run(const run_config *rc) {
    world *w = calloc(1, sizeof *w);
    cr_assert_not_null(w);
    w->seed = rc->seed;
    w->bs = rc->block_size;
    w->num_blocks = rc->num_blocks;
    w->num_host = rc->num_host;
    w->caching = rc->caching;
    kv_config config = {.block_size = rc->block_size,
                        .num_device_blocks = rc->num_blocks,
                        .num_host_blocks = rc->num_host,
                        .watermark_blocks = rc->watermark,
                        .model_key = 7,
                        .enable_prefix_caching = rc->caching};
    cr_assert_eq(kv_manager_create(&config, &w->m), VKLLM_OK, "%s", vkllm_last_error());
    w->device = calloc((size_t)rc->num_blocks * rc->block_size, sizeof *w->device);
    w->host = calloc((size_t)rc->num_host * rc->block_size + 1, sizeof *w->host);
    w->expect_refs = calloc(rc->num_blocks, sizeof *w->expect_refs);
    w->expect_fill = calloc(rc->num_blocks, sizeof *w->expect_fill);
    w->expect_host_refs = calloc(rc->num_host + 1, sizeof *w->expect_host_refs);
    w->expect_host_fill = calloc(rc->num_host + 1, sizeof *w->expect_host_fill);
    w->seen = calloc(rc->num_blocks + rc->num_host + 1, 1);
    /* poison the shadow: a slot never written reads as token -1 */
    for (size_t i = 0; i < (size_t)rc->num_blocks * rc->block_size; i++)
        w->device[i] = (shadow_slot){.token = -1, .position = -1};
    test_rng rng = test_rng_seeded(rc->seed);
    for (int b = 0; b < NUM_BASES; b++)
        for (int i = 0; i < BASE_LEN; i++)
            w->bases[b][i] = (int32_t)test_rng_below(&rng, 5);

    static const struct {
        const char *name;
        void (*fn)(world *, test_rng *);
        uint32_t weight;
    } ops[] = {{"allocate", op_allocate, 14}, {"compute", op_compute, 14},
               {"append", op_append, 30},     {"fork", op_fork, 5},
               {"free", op_free, 12},         {"swap_out", op_swap_out, 4},
               {"swap_in", op_swap_in, 5}};
    uint32_t total_weight = 0;
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
        total_weight += ops[k].weight;
    for (w->op_index = 0; w->op_index < rc->num_ops; w->op_index++) {
        uint32_t r = test_rng_below(&rng, total_weight);
        size_t k = 0;
        while (r >= ops[k].weight)
            r -= ops[k++].weight;
        w->op_name = ops[k].name;
        ops[k].fn(w, &rng);
        check_world(w);
    }
    kv_stats st;
    kv_manager_stats(w->m, &st);
    w->evictions_seen = (long)st.evictions;

    w->op_name = "final free";
    for (int i = 0; i < MAX_SEQS; i++)
        if (w->seqs[i].live) {
            cr_assert_eq(kv_manager_free(w->m, w->seqs[i].id), VKLLM_OK);
            w->seqs[i].live = false;
            check_world(w);
        }
    kv_manager_stats(w->m, &st);
    cr_assert_eq(st.blocks_free, rc->num_blocks, "seed %llx: %u of %u blocks free at the end",
                 (unsigned long long)rc->seed, st.blocks_free, rc->num_blocks);
    cr_assert_eq(kv_manager_num_free_host_blocks(w->m), rc->num_host);
    cr_assert_eq(st.num_seqs + st.num_swapped_seqs, 0u);
    cr_assert_eq(st.live_tokens, 0u);

    cr_log_info("seed %llx bs %u: %ld hits, %ld copies-on-write, %ld forks, %ld frees, %ld swap "
                "outs, %ld swap ins, %ld refusals, %ld evictions",
                (unsigned long long)rc->seed, rc->block_size, w->hits, w->cows, w->forks, w->frees,
                w->swap_outs, w->swap_ins, w->refusals, w->evictions_seen);
    /* coverage: every path was reached in this run */
    cr_assert((w->cows > 0 || rc->block_size == 1) && w->forks > 0 && w->frees > 0 &&
                  w->refusals > 0,
              "seed %llx: cows %ld forks %ld frees %ld refusals %ld", (unsigned long long)rc->seed,
              w->cows, w->forks, w->frees, w->refusals);
    if (rc->num_host)
        cr_assert(w->swap_outs > 0 && w->swap_ins > 0, "seed %llx: swap outs %ld ins %ld",
                  (unsigned long long)rc->seed, w->swap_outs, w->swap_ins);
    if (rc->caching)
        cr_assert(w->hits > 0 && w->evictions_seen > 0, "seed %llx: hits %ld evictions %ld",
                  (unsigned long long)rc->seed, w->hits, w->evictions_seen);

    kv_ops_destroy(&w->ops);
    kv_manager_destroy(w->m);
    free(w->device);
    free(w->host);
    free(w->expect_refs);
    free(w->expect_fill);
    free(w->expect_host_refs);
    free(w->expect_host_fill);
    free(w->seen);
    free(w);
}

Test(kv_property, block_size_4) {
    for (uint64_t seed = 1; seed <= 3; seed++)
        run(&(run_config){.seed = 0xb4000 + seed,
                          .block_size = 4,
                          .num_blocks = 48,
                          .num_host = 24,
                          .watermark = 1,
                          .caching = true,
                          .num_ops = 3000});
}

Test(kv_property, block_size_16) {
    for (uint64_t seed = 1; seed <= 3; seed++)
        run(&(run_config){.seed = 0xb16000 + seed,
                          .block_size = 16,
                          .num_blocks = 24,
                          .num_host = 12,
                          .watermark = 0,
                          .caching = true,
                          .num_ops = 3000});
}

Test(kv_property, block_size_1_and_odd) {
    run(&(run_config){.seed = 0xb1001,
                      .block_size = 1,
                      .num_blocks = 160,
                      .num_host = 60,
                      .watermark = 2,
                      .caching = true,
                      .num_ops = 2000});
    run(&(run_config){.seed = 0xb3001,
                      .block_size = 3,
                      .num_blocks = 64,
                      .num_host = 30,
                      .watermark = 1,
                      .caching = true,
                      .num_ops = 3000});
}

Test(kv_property, no_prefix_caching_no_swap) {
    run(&(run_config){.seed = 0xc0001,
                      .block_size = 4,
                      .num_blocks = 40,
                      .num_host = 0,
                      .watermark = 1,
                      .caching = false,
                      .num_ops = 3000});
    run(&(run_config){.seed = 0xc0002,
                      .block_size = 8,
                      .num_blocks = 30,
                      .num_host = 16,
                      .watermark = 0,
                      .caching = false,
                      .num_ops = 3000});
}
