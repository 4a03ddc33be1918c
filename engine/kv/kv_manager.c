/* kv_manager.c: per-sequence block bookkeeping on top of two block pools (device
 * with prefix caching, host for swap). See kv_manager.h for the rules.
 *
 * Invariants kept here (the pools keep their own):
 * - a live sequence's table has ceil(num_tokens / block_size) entries, all device
 *   ids or (when swapped) all host ids; each entry holds one reference;
 * - hashes[0..num_hashed) are the chain hashes of its first full blocks;
 * - num_committed <= num_tokens; only blocks wholly below num_committed are cached;
 * - every mutating call checks capacity and reserves memory first, so a failure
 *   leaves the manager exactly as it was. */
#include "kv_manager.h"

#include <stdlib.h>
#include <string.h>

#include "kv/kv_block_table.h"
#include "kv/kv_prefix_hash.h"

typedef struct kv_seq {
    bool live;
    bool swapped;
    uint64_t extra_key; /* model key + cache salt, folded into every block hash */
    kv_block_table table;
    int32_t *tokens;
    size_t num_tokens;
    size_t tokens_capacity;
    uint64_t *hashes;
    size_t num_hashed;
    size_t hashes_capacity;
    size_t num_committed;
    size_t num_cache_offered; /* full blocks [0, this) were offered to the prefix cache */
} kv_seq;

struct kv_manager {
    kv_config config;
    kv_block_pool device;
    kv_block_pool host;
    kv_seq *seqs;
    size_t num_seq_slots;
    size_t seq_capacity;
    kv_seq_id *free_ids; /* stack of dead ids below num_seq_slots */
    size_t num_free_ids;
    int32_t *device_scratch; /* [num_device_blocks], -1 between calls */
    int32_t *host_scratch;   /* [num_host_blocks], -1 between calls */
    uint8_t *host_consumed;  /* [num_host_blocks], 0 between calls */
    uint64_t prefix_queries;
    uint64_t prefix_hits;
    uint64_t failed_allocations;
    uint64_t cow_copies;
    uint64_t swapped_out_blocks;
    uint64_t swapped_in_blocks;
};

static size_t kv_div_ceil(size_t a, size_t b) {
    return (a + b - 1) / b;
}

/* ------------------------------------------------------------------ create */

vkllm_status kv_manager_create(const kv_config *config, kv_manager **out) {
    *out = NULL;
    const kv_config c = *config;
    if (c.block_size == 0 || c.num_device_blocks == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "kv manager: block_size %u and num_device_blocks %u must be > 0",
                        c.block_size, c.num_device_blocks);
    if (c.watermark_blocks >= c.num_device_blocks)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "kv manager: watermark_blocks %u must be below num_device_blocks %u",
                        c.watermark_blocks, c.num_device_blocks);
    /* Slots are int32 on the device (block_id * block_size + offset). */
    if ((uint64_t)c.num_device_blocks * c.block_size > INT32_MAX ||
        (uint64_t)c.num_host_blocks * c.block_size > INT32_MAX)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "kv manager: %u device / %u host blocks of %u tokens exceed int32 slots",
                        c.num_device_blocks, c.num_host_blocks, c.block_size);
    kv_manager *m = calloc(1, sizeof *m);
    if (!m) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv manager");
    m->config = c;
    vkllm_status status =
        kv_block_pool_init(&m->device, c.num_device_blocks, c.block_size, c.enable_prefix_caching);
    if (status == VKLLM_OK)
        status = kv_block_pool_init(&m->host, c.num_host_blocks, c.block_size, false);
    if (status == VKLLM_OK) {
        m->device_scratch = malloc(c.num_device_blocks * sizeof *m->device_scratch);
        m->host_scratch = malloc((c.num_host_blocks + 1) * sizeof *m->host_scratch);
        m->host_consumed = calloc(c.num_host_blocks + 1, 1);
        if (!m->device_scratch || !m->host_scratch || !m->host_consumed)
            status = vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv manager: scratch maps");
    }
    if (status != VKLLM_OK) {
        kv_manager_destroy(m);
        return status;
    }
    for (uint32_t i = 0; i < c.num_device_blocks; i++)
        m->device_scratch[i] = -1;
    for (uint32_t i = 0; i < c.num_host_blocks; i++)
        m->host_scratch[i] = -1;
    *out = m;
    return VKLLM_OK;
}

void kv_manager_destroy(kv_manager *m) {
    if (!m) return;
    for (size_t i = 0; i < m->num_seq_slots; i++) {
        kv_block_table_destroy(&m->seqs[i].table);
        free(m->seqs[i].tokens);
        free(m->seqs[i].hashes);
    }
    free(m->seqs);
    free(m->free_ids);
    free(m->device_scratch);
    free(m->host_scratch);
    free(m->host_consumed);
    kv_block_pool_destroy(&m->device);
    kv_block_pool_destroy(&m->host);
    free(m);
}

/* ------------------------------------------------------------------ sequences */

static kv_seq *kv_find_seq(const kv_manager *m, kv_seq_id id) {
    if (id < 0 || (size_t)id >= m->num_seq_slots || !m->seqs[id].live) return NULL;
    return &m->seqs[id];
}

static vkllm_status kv_bad_seq(const char *what, kv_seq_id id) {
    return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv %s: sequence %d is not live", what, (int)id);
}

/* A fresh live sequence with no tokens. May move m->seqs: re-find other pointers. */
static vkllm_status kv_new_seq(kv_manager *m, kv_seq_id *out) {
    if (m->num_free_ids == 0) {
        if (m->num_seq_slots == m->seq_capacity) {
            size_t capacity = m->seq_capacity ? 2 * m->seq_capacity : 16;
            if (capacity > INT32_MAX)
                return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv manager: too many sequences");
            kv_seq *seqs = realloc(m->seqs, capacity * sizeof *seqs);
            if (!seqs) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv manager: sequences");
            m->seqs = seqs;
            kv_seq_id *ids = realloc(m->free_ids, capacity * sizeof *ids);
            if (!ids) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv manager: sequence ids");
            m->free_ids = ids;
            memset(m->seqs + m->seq_capacity, 0, (capacity - m->seq_capacity) * sizeof *m->seqs);
            m->seq_capacity = capacity;
        }
        m->free_ids[m->num_free_ids++] = (kv_seq_id)m->num_seq_slots++;
    }
    kv_seq_id id = m->free_ids[--m->num_free_ids];
    kv_seq *s = &m->seqs[id];
    /* Storage of a previous holder of this id is kept for reuse. */
    s->live = true;
    s->swapped = false;
    s->extra_key = 0;
    s->table.count = 0;
    s->num_tokens = s->num_hashed = s->num_committed = s->num_cache_offered = 0;
    *out = id;
    return VKLLM_OK;
}

static void kv_drop_seq(kv_manager *m, kv_seq_id id) {
    m->seqs[id].live = false;
    m->free_ids[m->num_free_ids++] = id;
}

static vkllm_status kv_seq_reserve(kv_seq *s, size_t num_tokens) {
    if (num_tokens > s->tokens_capacity) {
        size_t capacity = s->tokens_capacity ? s->tokens_capacity : 64;
        while (capacity < num_tokens)
            capacity *= 2;
        int32_t *tokens = realloc(s->tokens, capacity * sizeof *tokens);
        if (!tokens)
            return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv sequence: %zu tokens", capacity);
        s->tokens = tokens;
        s->tokens_capacity = capacity;
    }
    return VKLLM_OK;
}

static vkllm_status kv_seq_reserve_hashes(kv_seq *s, size_t num_blocks) {
    if (num_blocks > s->hashes_capacity) {
        size_t capacity = s->hashes_capacity ? s->hashes_capacity : 8;
        while (capacity < num_blocks)
            capacity *= 2;
        uint64_t *hashes = realloc(s->hashes, capacity * sizeof *hashes);
        if (!hashes)
            return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv sequence: %zu hashes", capacity);
        s->hashes = hashes;
        s->hashes_capacity = capacity;
    }
    return VKLLM_OK;
}

/* Chain hashes of the first num_blocks full blocks (num_blocks <= num_tokens / bs). */
static vkllm_status kv_seq_hash_upto(kv_seq *s, uint32_t block_size, size_t num_blocks) {
    if (num_blocks <= s->num_hashed) return VKLLM_OK;
    VKL_TRY(kv_seq_reserve_hashes(s, num_blocks));
    for (size_t i = s->num_hashed; i < num_blocks; i++) {
        uint64_t parent = i ? s->hashes[i - 1] : KV_HASH_ROOT;
        s->hashes[i] = kv_block_hash(parent, s->tokens + i * block_size, block_size, s->extra_key);
    }
    s->num_hashed = num_blocks;
    return VKLLM_OK;
}

static uint64_t kv_extra_key(const kv_manager *m, uint64_t cache_salt) {
    return kv_block_hash(m->config.model_key, NULL, 0, cache_salt);
}

/* Offers the sequence's committed full blocks [from, to) to the prefix cache. */
static void kv_seq_offer_to_cache(kv_manager *m, kv_seq *s, size_t from, size_t to) {
    uint32_t bs = m->config.block_size;
    for (size_t i = from; i < to; i++)
        kv_block_pool_cache(&m->device, s->table.ids[i], s->hashes[i],
                            i ? s->hashes[i - 1] : KV_HASH_ROOT, s->tokens + i * bs, s->extra_key);
}

/* ------------------------------------------------------------------ prompts */

typedef struct kv_prefix_match {
    size_t hit_blocks; /* leading prompt blocks found cached */
    size_t free_hits;  /* of those, blocks now in the free queue */
    size_t num_hashed; /* hashes[] entries computed */
} kv_prefix_match;

/* Walks the prompt's full blocks (at most (n-1)/bs of them, see the last-token rule)
 * and stops at the first miss. hashes must hold (n-1)/bs entries. */
static kv_prefix_match kv_match_prefix(const kv_manager *m, const int32_t *tokens, size_t n,
                                       uint64_t extra_key, uint64_t *hashes) {
    kv_prefix_match match = {0};
    if (!m->config.enable_prefix_caching) return match;
    uint32_t bs = m->config.block_size;
    size_t max_blocks = (n - 1) / bs;
    uint64_t parent = KV_HASH_ROOT;
    for (size_t i = 0; i < max_blocks; i++) {
        uint64_t hash = kv_block_hash(parent, tokens + i * bs, bs, extra_key);
        hashes[match.num_hashed++] = hash;
        int32_t id = kv_block_pool_lookup(&m->device, hash, parent, tokens + i * bs, extra_key);
        if (id < 0) break;
        match.hit_blocks++;
        if (kv_block_pool_is_free(&m->device, id)) match.free_hits++;
        parent = hash;
    }
    return match;
}

static bool kv_prompt_never_fits(const kv_manager *m, size_t n) {
    return kv_div_ceil(n, m->config.block_size) >
           (size_t)(m->config.num_device_blocks - m->config.watermark_blocks);
}

/* Free blocks a prompt consumes: fresh ones plus hits taken off the free queue. */
static size_t kv_prompt_cost(const kv_manager *m, size_t n, const kv_prefix_match *match) {
    return kv_div_ceil(n, m->config.block_size) - match->hit_blocks + match->free_hits;
}

static bool kv_fits_above_watermark(const kv_manager *m, size_t cost) {
    return (size_t)m->device.num_free >= cost + m->config.watermark_blocks;
}

kv_alloc_status kv_manager_can_allocate(const kv_manager *m, const int32_t *tokens,
                                        size_t num_tokens, uint64_t cache_salt) {
    if (num_tokens == 0) return KV_ALLOC_NEVER; /* an empty prompt is no request */
    if (kv_prompt_never_fits(m, num_tokens)) return KV_ALLOC_NEVER;
    kv_prefix_match match = {0};
    if (m->config.enable_prefix_caching) {
        size_t max_blocks = (num_tokens - 1) / m->config.block_size;
        uint64_t stack_hashes[64];
        uint64_t *hashes = max_blocks <= 64 ? stack_hashes : malloc(max_blocks * sizeof *hashes);
        /* Without memory for the walk, assume no hits: a conservative answer. */
        if (hashes)
            match = kv_match_prefix(m, tokens, num_tokens, kv_extra_key(m, cache_salt), hashes);
        if (hashes != stack_hashes) free(hashes);
    }
    return kv_fits_above_watermark(m, kv_prompt_cost(m, num_tokens, &match)) ? KV_ALLOC_OK
                                                                             : KV_ALLOC_LATER;
}

vkllm_status kv_manager_allocate(kv_manager *m, const int32_t *tokens, size_t num_tokens,
                                 uint64_t cache_salt, kv_seq_id *seq_out, size_t *num_computed) {
    *seq_out = -1;
    *num_computed = 0;
    uint32_t bs = m->config.block_size;
    if (num_tokens == 0) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv allocate: empty prompt");
    if (kv_prompt_never_fits(m, num_tokens))
        return vkl_fail(VKLLM_ERR_TOO_LONG,
                        "kv allocate: prompt of %zu tokens needs %zu blocks of %u tokens; the KV "
                        "pool has %u blocks, %u of them kept free as watermark, so it can never "
                        "fit",
                        num_tokens, kv_div_ceil(num_tokens, bs), bs, m->config.num_device_blocks,
                        m->config.watermark_blocks);
    size_t num_blocks = kv_div_ceil(num_tokens, bs);

    kv_seq_id id = -1;
    VKL_TRY(kv_new_seq(m, &id));
    kv_seq *s = &m->seqs[id];
    s->extra_key = kv_extra_key(m, cache_salt);
    vkllm_status status = kv_seq_reserve(s, num_tokens);
    if (status == VKLLM_OK) status = kv_seq_reserve_hashes(s, num_tokens / bs);
    if (status == VKLLM_OK) status = kv_block_table_reserve(&s->table, num_blocks);
    if (status != VKLLM_OK) {
        kv_drop_seq(m, id);
        return status;
    }
    kv_prefix_match match = kv_match_prefix(m, tokens, num_tokens, s->extra_key, s->hashes);
    size_t cost = kv_prompt_cost(m, num_tokens, &match);
    if (!kv_fits_above_watermark(m, cost)) {
        kv_drop_seq(m, id);
        m->failed_allocations++;
        return vkl_fail(VKLLM_ERR_BUSY,
                        "kv allocate: prompt of %zu tokens needs %zu free blocks (%zu cached "
                        "blocks reused); %u are free and %u must stay free",
                        num_tokens, cost, match.hit_blocks, m->device.num_free,
                        m->config.watermark_blocks);
    }
    /* Hits first, so that fresh allocations cannot evict a block just matched. */
    for (size_t i = 0; i < match.hit_blocks; i++) {
        const int32_t *block_tokens = tokens + i * bs;
        int32_t hit =
            kv_block_pool_lookup(&m->device, s->hashes[i], i ? s->hashes[i - 1] : KV_HASH_ROOT,
                                 block_tokens, s->extra_key);
        kv_block_pool_retain(&m->device, hit);
        s->table.ids[s->table.count++] = hit;
    }
    for (size_t i = match.hit_blocks; i < num_blocks; i++) {
        int32_t fresh = kv_block_pool_alloc(&m->device);
        size_t filled = num_tokens - i * bs;
        m->device.blocks[fresh].fill = (uint32_t)(filled < bs ? filled : bs);
        s->table.ids[s->table.count++] = fresh;
    }
    memcpy(s->tokens, tokens, num_tokens * sizeof *tokens);
    s->num_tokens = num_tokens;
    s->num_hashed = match.num_hashed;
    s->num_committed = match.hit_blocks * bs;
    s->num_cache_offered = match.hit_blocks;
    m->prefix_queries += num_tokens;
    m->prefix_hits += s->num_committed;
    *seq_out = id;
    *num_computed = s->num_committed;
    return VKLLM_OK;
}

vkllm_status kv_manager_commit(kv_manager *m, kv_seq_id id, size_t num_tokens) {
    kv_seq *s = kv_find_seq(m, id);
    if (!s) return kv_bad_seq("commit", id);
    if (s->swapped)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv commit: sequence %d is swapped out",
                        (int)id);
    if (num_tokens > s->num_tokens)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "kv commit: sequence %d has %zu tokens, cannot commit %zu", (int)id,
                        s->num_tokens, num_tokens);
    if (num_tokens <= s->num_committed) return VKLLM_OK;
    size_t full = num_tokens / m->config.block_size;
    if (m->config.enable_prefix_caching) {
        VKL_TRY(kv_seq_hash_upto(s, m->config.block_size, full));
        kv_seq_offer_to_cache(m, s, s->num_cache_offered, full);
        s->num_cache_offered = full;
    }
    s->num_committed = num_tokens;
    return VKLLM_OK;
}

/* ------------------------------------------------------------------ decode */

/* Whether the next append must first copy the shared, partly filled last block. */
static bool kv_append_needs_cow(const kv_manager *m, const kv_seq *s) {
    if (s->num_tokens % m->config.block_size == 0) return false;
    return m->device.blocks[s->table.ids[s->table.count - 1]].ref_count > 1;
}

uint32_t kv_manager_blocks_to_append(const kv_manager *m, kv_seq_id id, size_t num_tokens) {
    const kv_seq *s = kv_find_seq(m, id);
    if (!s || s->swapped) return UINT32_MAX;
    uint32_t bs = m->config.block_size;
    size_t fresh = kv_div_ceil(s->num_tokens + num_tokens, bs) - kv_div_ceil(s->num_tokens, bs);
    size_t need = fresh + (num_tokens > 0 && kv_append_needs_cow(m, s) ? 1 : 0);
    return need > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)need;
}

bool kv_manager_can_append(const kv_manager *m, kv_seq_id id, size_t num_tokens) {
    uint32_t need = kv_manager_blocks_to_append(m, id, num_tokens);
    return need != UINT32_MAX && need <= m->device.num_free;
}

vkllm_status kv_manager_append(kv_manager *m, kv_seq_id id, const int32_t *tokens,
                               size_t num_tokens, kv_ops *ops, int32_t *slots) {
    kv_seq *s = kv_find_seq(m, id);
    if (!s) return kv_bad_seq("append", id);
    if (s->swapped)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv append: sequence %d is swapped out",
                        (int)id);
    if (num_tokens == 0) return VKLLM_OK;
    uint32_t bs = m->config.block_size;
    uint32_t need = kv_manager_blocks_to_append(m, id, num_tokens);
    if (need > m->device.num_free)
        return vkl_fail(VKLLM_ERR_BUSY,
                        "kv append: sequence %d needs %u free blocks for %zu tokens, %u free",
                        (int)id, need, num_tokens, m->device.num_free);
    bool cow = kv_append_needs_cow(m, s);
    if (cow && !ops)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "kv append: sequence %d needs a copy-on-write but no ops list was given",
                        (int)id);
    VKL_TRY(kv_seq_reserve(s, s->num_tokens + num_tokens));
    VKL_TRY(kv_block_table_reserve(&s->table,
                                   kv_div_ceil(s->num_tokens + num_tokens, bs) - s->table.count));
    if (cow) VKL_TRY(kv_ops_reserve(ops, 1));

    if (cow) {
        int32_t shared = s->table.ids[s->table.count - 1];
        int32_t copy = kv_block_pool_alloc(&m->device);
        m->device.blocks[copy].fill = m->device.blocks[shared].fill;
        kv_ops_push(ops, KV_OP_COPY, shared, copy); /* reserved: cannot fail */
        kv_block_pool_release(&m->device, shared);
        s->table.ids[s->table.count - 1] = copy;
        m->cow_copies++;
    }
    for (size_t i = 0; i < num_tokens; i++) {
        size_t pos = s->num_tokens;
        if (pos % bs == 0) s->table.ids[s->table.count++] = kv_block_pool_alloc(&m->device);
        int32_t block = s->table.ids[pos / bs];
        m->device.blocks[block].fill = (uint32_t)(pos % bs) + 1;
        if (slots) slots[i] = block * (int32_t)bs + (int32_t)(pos % bs);
        s->tokens[s->num_tokens++] = tokens[i];
    }
    return VKLLM_OK;
}

/* ------------------------------------------------------------------ fork and free */

vkllm_status kv_manager_fork(kv_manager *m, kv_seq_id parent_id, kv_seq_id *child_out) {
    *child_out = -1;
    if (!kv_find_seq(m, parent_id)) return kv_bad_seq("fork", parent_id);
    kv_seq_id child_id = -1;
    VKL_TRY(kv_new_seq(m, &child_id)); /* may move m->seqs */
    kv_seq *parent = &m->seqs[parent_id];
    kv_seq *child = &m->seqs[child_id];
    vkllm_status status = kv_seq_reserve(child, parent->num_tokens);
    if (status == VKLLM_OK) status = kv_seq_reserve_hashes(child, parent->num_hashed);
    if (status == VKLLM_OK) status = kv_block_table_copy(&child->table, &parent->table);
    if (status != VKLLM_OK) {
        kv_drop_seq(m, child_id);
        return status;
    }
    child->swapped = parent->swapped;
    child->extra_key = parent->extra_key;
    if (parent->num_tokens)
        memcpy(child->tokens, parent->tokens, parent->num_tokens * sizeof *child->tokens);
    child->num_tokens = parent->num_tokens;
    if (parent->num_hashed)
        memcpy(child->hashes, parent->hashes, parent->num_hashed * sizeof *child->hashes);
    child->num_hashed = parent->num_hashed;
    child->num_committed = parent->num_committed;
    child->num_cache_offered = parent->num_cache_offered;
    kv_block_pool *pool = parent->swapped ? &m->host : &m->device;
    for (size_t i = 0; i < child->table.count; i++)
        kv_block_pool_retain(pool, child->table.ids[i]);
    *child_out = child_id;
    return VKLLM_OK;
}

vkllm_status kv_manager_free(kv_manager *m, kv_seq_id id) {
    kv_seq *s = kv_find_seq(m, id);
    if (!s) return kv_bad_seq("free", id);
    kv_block_pool *pool = s->swapped ? &m->host : &m->device;
    /* Reverse order: the tail is freed first, lands nearer the queue head, and is
     * evicted before the prefix that other requests are more likely to share. */
    for (size_t i = s->table.count; i-- > 0;)
        kv_block_pool_release(pool, s->table.ids[i]);
    s->table.count = 0;
    kv_drop_seq(m, id);
    return VKLLM_OK;
}

/* ------------------------------------------------------------------ swapping */

/* Checks that every id is live, in the expected residence, and listed once. */
static vkllm_status kv_check_group(const kv_manager *m, const kv_seq_id *group, size_t count,
                                   bool want_swapped, const char *what) {
    if (count == 0) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv %s: empty group", what);
    for (size_t i = 0; i < count; i++) {
        const kv_seq *s = kv_find_seq(m, group[i]);
        if (!s) return kv_bad_seq(what, group[i]);
        if (s->swapped != want_swapped)
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv %s: sequence %d is %s", what,
                            (int)group[i], s->swapped ? "swapped out" : "on the device");
        for (size_t j = 0; j < i; j++)
            if (group[j] == group[i])
                return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv %s: sequence %d listed twice", what,
                                (int)group[i]);
    }
    return VKLLM_OK;
}

/* Distinct blocks named by the group's tables, using a scratch map (left clean). */
static size_t kv_count_distinct(const kv_manager *m, const kv_seq_id *group, size_t count,
                                int32_t *scratch) {
    size_t distinct = 0;
    for (size_t g = 0; g < count; g++) {
        const kv_block_table *t = &m->seqs[group[g]].table;
        for (size_t i = 0; i < t->count; i++)
            if (scratch[t->ids[i]] < 0) {
                scratch[t->ids[i]] = 0;
                distinct++;
            }
    }
    for (size_t g = 0; g < count; g++) {
        const kv_block_table *t = &m->seqs[group[g]].table;
        for (size_t i = 0; i < t->count; i++)
            scratch[t->ids[i]] = -1;
    }
    return distinct;
}

bool kv_manager_can_swap_out(const kv_manager *m, const kv_seq_id *group, size_t count) {
    if (kv_check_group(m, group, count, false, "swap out") != VKLLM_OK) return false;
    return kv_count_distinct(m, group, count, m->device_scratch) <= m->host.num_free;
}

vkllm_status kv_manager_swap_out(kv_manager *m, const kv_seq_id *group, size_t count, kv_ops *ops) {
    VKL_TRY(kv_check_group(m, group, count, false, "swap out"));
    size_t distinct = kv_count_distinct(m, group, count, m->device_scratch);
    if (distinct > m->host.num_free)
        return vkl_fail(VKLLM_ERR_BUSY,
                        "kv swap out: group of %zu sequences holds %zu device blocks; %u of %u "
                        "host blocks are free",
                        count, distinct, m->host.num_free, m->host.num_blocks);
    VKL_TRY(kv_ops_reserve(ops, distinct));
    size_t first_op = ops->count;
    for (size_t g = 0; g < count; g++) {
        kv_seq *s = &m->seqs[group[g]];
        for (size_t i = s->table.count; i-- > 0;) {
            int32_t device_id = s->table.ids[i];
            int32_t host_id = m->device_scratch[device_id];
            if (host_id < 0) {
                host_id = kv_block_pool_alloc(&m->host);
                m->host.blocks[host_id].fill = m->device.blocks[device_id].fill;
                kv_ops_push(ops, KV_OP_SWAP_OUT, device_id, host_id); /* reserved */
                m->device_scratch[device_id] = host_id;
            } else {
                kv_block_pool_retain(&m->host, host_id);
            }
            s->table.ids[i] = host_id;
            kv_block_pool_release(&m->device, device_id);
        }
        s->swapped = true;
    }
    for (size_t k = first_op; k < ops->count; k++)
        m->device_scratch[ops->items[k].src] = -1;
    m->swapped_out_blocks += distinct;
    return VKLLM_OK;
}

/* For swap-in: the cached device block holding host block `i` of sequence s, if its
 * K/V is committed and the prefix cache still has it; -1 otherwise. */
static int32_t kv_swap_in_hit(const kv_manager *m, const kv_seq *s, size_t i) {
    uint32_t bs = m->config.block_size;
    if (!m->config.enable_prefix_caching || i >= s->num_committed / bs || i >= s->num_hashed)
        return -1;
    return kv_block_pool_lookup(&m->device, s->hashes[i], i ? s->hashes[i - 1] : KV_HASH_ROOT,
                                s->tokens + i * bs, s->extra_key);
}

typedef struct kv_swap_in_plan {
    size_t distinct;
    size_t cost; /* free device blocks consumed */
} kv_swap_in_plan;

/* Counts without changing anything; uses host_scratch as marks (left clean). */
static kv_swap_in_plan kv_plan_swap_in(const kv_manager *m, const kv_seq_id *group, size_t count) {
    kv_swap_in_plan plan = {0};
    for (size_t g = 0; g < count; g++) {
        const kv_seq *s = &m->seqs[group[g]];
        for (size_t i = 0; i < s->table.count; i++) {
            int32_t host_id = s->table.ids[i];
            if (m->host_scratch[host_id] >= 0) continue;
            m->host_scratch[host_id] = 0;
            plan.distinct++;
            int32_t hit = kv_swap_in_hit(m, s, i);
            /* A hit on a block in use is free of cost; counting a hit on a free block
             * (or a miss) as one block each may overcount: a conservative answer. */
            if (hit < 0 || kv_block_pool_is_free(&m->device, hit)) plan.cost++;
        }
    }
    for (size_t g = 0; g < count; g++) {
        const kv_seq *s = &m->seqs[group[g]];
        for (size_t i = 0; i < s->table.count; i++)
            m->host_scratch[s->table.ids[i]] = -1;
    }
    return plan;
}

kv_alloc_status kv_manager_can_swap_in(const kv_manager *m, const kv_seq_id *group, size_t count) {
    if (kv_check_group(m, group, count, true, "swap in") != VKLLM_OK) return KV_ALLOC_NEVER;
    kv_swap_in_plan plan = kv_plan_swap_in(m, group, count);
    if (plan.distinct > m->device.num_blocks) return KV_ALLOC_NEVER;
    return plan.cost <= m->device.num_free ? KV_ALLOC_OK : KV_ALLOC_LATER;
}

vkllm_status kv_manager_swap_in(kv_manager *m, const kv_seq_id *group, size_t count, kv_ops *ops) {
    VKL_TRY(kv_check_group(m, group, count, true, "swap in"));
    uint32_t bs = m->config.block_size;
    /* Hashes of committed full blocks, so cached copies can be found (may allocate). */
    if (m->config.enable_prefix_caching)
        for (size_t g = 0; g < count; g++) {
            kv_seq *s = &m->seqs[group[g]];
            VKL_TRY(kv_seq_hash_upto(s, bs, s->num_committed / bs));
        }
    kv_swap_in_plan plan = kv_plan_swap_in(m, group, count);
    if (plan.cost > m->device.num_free)
        return vkl_fail(VKLLM_ERR_BUSY,
                        "kv swap in: group of %zu sequences needs %zu free device blocks, %u free",
                        count, plan.cost, m->device.num_free);
    VKL_TRY(kv_ops_reserve(ops, plan.distinct));

    /* Pass 1: prefix-cache hits, retained before any allocation can evict them. */
    for (size_t g = 0; g < count; g++) {
        const kv_seq *s = &m->seqs[group[g]];
        for (size_t i = 0; i < s->table.count; i++) {
            int32_t host_id = s->table.ids[i];
            if (m->host_scratch[host_id] != -1) continue;
            int32_t hit = kv_swap_in_hit(m, s, i);
            m->host_scratch[host_id] = hit >= 0 ? hit : -2; /* -2: needs a fresh block */
            if (hit >= 0) kv_block_pool_retain(&m->device, hit);
        }
    }
    /* Pass 2: fresh blocks and copies for the rest. */
    for (size_t g = 0; g < count; g++) {
        const kv_seq *s = &m->seqs[group[g]];
        for (size_t i = 0; i < s->table.count; i++) {
            int32_t host_id = s->table.ids[i];
            if (m->host_scratch[host_id] != -2) continue;
            int32_t device_id = kv_block_pool_alloc(&m->device);
            m->device.blocks[device_id].fill = m->host.blocks[host_id].fill;
            kv_ops_push(ops, KV_OP_SWAP_IN, host_id, device_id); /* reserved */
            m->host_scratch[host_id] = device_id;
            m->swapped_in_blocks++;
        }
    }
    /* Pass 3: rewrite tables. Passes 1-2 gave each distinct block its first device
     * reference; every further table entry adds one. Host references are dropped. */
    for (size_t g = 0; g < count; g++) {
        kv_seq *s = &m->seqs[group[g]];
        for (size_t i = s->table.count; i-- > 0;) {
            int32_t host_id = s->table.ids[i];
            int32_t device_id = m->host_scratch[host_id];
            if (m->host_consumed[host_id]) kv_block_pool_retain(&m->device, device_id);
            m->host_consumed[host_id] = 1;
            kv_block_pool_release(&m->host, host_id);
            s->table.ids[i] = device_id;
        }
        s->swapped = false;
    }
    /* Pass 4: clean the scratch maps (keyed by host id, read from the ops and hits)
     * and re-offer committed full blocks to the prefix cache. */
    for (uint32_t h = 0; h < m->host.num_blocks; h++) {
        m->host_scratch[h] = -1;
        m->host_consumed[h] = 0;
    }
    if (m->config.enable_prefix_caching)
        for (size_t g = 0; g < count; g++) {
            kv_seq *s = &m->seqs[group[g]];
            size_t full = s->num_committed / bs;
            kv_seq_offer_to_cache(m, s, 0, full);
            s->num_cache_offered = full;
        }
    return VKLLM_OK;
}

/* ------------------------------------------------------------------ queries */

uint32_t kv_manager_block_size(const kv_manager *m) {
    return m->config.block_size;
}
uint32_t kv_manager_num_free_blocks(const kv_manager *m) {
    return m->device.num_free;
}
uint32_t kv_manager_num_free_host_blocks(const kv_manager *m) {
    return m->host.num_free;
}
uint32_t kv_manager_watermark_blocks(const kv_manager *m) {
    return m->config.watermark_blocks;
}

bool kv_manager_seq_is_live(const kv_manager *m, kv_seq_id id) {
    return kv_find_seq(m, id);
}

bool kv_manager_seq_is_swapped(const kv_manager *m, kv_seq_id id) {
    const kv_seq *s = kv_find_seq(m, id);
    return s && s->swapped;
}

size_t kv_manager_seq_num_tokens(const kv_manager *m, kv_seq_id id) {
    const kv_seq *s = kv_find_seq(m, id);
    return s ? s->num_tokens : 0;
}

size_t kv_manager_seq_num_committed(const kv_manager *m, kv_seq_id id) {
    const kv_seq *s = kv_find_seq(m, id);
    return s ? s->num_committed : 0;
}

const int32_t *kv_manager_seq_tokens(const kv_manager *m, kv_seq_id id) {
    const kv_seq *s = kv_find_seq(m, id);
    return s ? s->tokens : NULL;
}

const int32_t *kv_manager_block_table(const kv_manager *m, kv_seq_id id, size_t *count) {
    const kv_seq *s = kv_find_seq(m, id);
    *count = s ? s->table.count : 0;
    return s ? s->table.ids : NULL;
}

vkllm_status kv_manager_slots(const kv_manager *m, kv_seq_id id, size_t first, size_t count,
                              int32_t *slots) {
    const kv_seq *s = kv_find_seq(m, id);
    if (!s) return kv_bad_seq("slots", id);
    if (s->swapped || first > s->num_tokens || count > s->num_tokens - first)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "kv slots: positions [%zu, %zu) of sequence %d (%zu tokens%s)", first,
                        first + count, (int)id, s->num_tokens, s->swapped ? ", swapped out" : "");
    uint32_t bs = m->config.block_size;
    for (size_t k = 0; k < count; k++) {
        size_t pos = first + k;
        slots[k] = s->table.ids[pos / bs] * (int32_t)bs + (int32_t)(pos % bs);
    }
    return VKLLM_OK;
}

void kv_manager_stats(const kv_manager *m, kv_stats *st) {
    *st = (kv_stats){0};
    uint32_t bs = m->config.block_size;
    st->block_size = bs;
    st->blocks_total = m->device.num_blocks;
    st->blocks_free = m->device.num_free;
    st->blocks_used = m->device.num_blocks - m->device.num_free;
    st->blocks_cached = m->device.num_cached;
    for (uint32_t b = 0; b < m->device.num_blocks; b++) {
        const kv_block *block = &m->device.blocks[b];
        if (block->ref_count == 0) {
            if (block->cached) st->blocks_cached_free++;
        } else {
            st->live_tokens += block->fill;
        }
    }
    st->host_blocks_total = m->host.num_blocks;
    st->host_blocks_used = m->host.num_blocks - m->host.num_free;
    for (size_t i = 0; i < m->num_seq_slots; i++) {
        if (!m->seqs[i].live) continue;
        if (m->seqs[i].swapped)
            st->num_swapped_seqs++;
        else
            st->num_seqs++;
    }
    st->capacity_slots = (uint64_t)m->device.num_blocks * bs;
    st->allocated_slots = (uint64_t)st->blocks_used * bs;
    st->waste = kv_stats_waste(st->allocated_slots, st->live_tokens);
    st->usage = (double)st->allocated_slots / (double)st->capacity_slots;
    st->failed_allocations = m->failed_allocations;
    st->prefix_cache_queries = m->prefix_queries;
    st->prefix_cache_hits = m->prefix_hits;
    st->evictions = m->device.evictions;
    st->cow_copies = m->cow_copies;
    st->swapped_out_blocks = m->swapped_out_blocks;
    st->swapped_in_blocks = m->swapped_in_blocks;
}

const kv_block_pool *kv_manager_device_pool(const kv_manager *m) {
    return &m->device;
}
const kv_block_pool *kv_manager_host_pool(const kv_manager *m) {
    return &m->host;
}
