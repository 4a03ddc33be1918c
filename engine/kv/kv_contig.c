/* kv_contig.c: first-fit contiguous reservations, the baseline allocator (see
 * kv_contig.h). Invariants: free extents are sorted by start, non-empty, disjoint and
 * never adjacent (always merged); free extents and live reservations tile
 * [0, capacity) exactly. */
#include "kv_contig.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct kv_extent {
    uint64_t start;
    uint64_t length;
} kv_extent;

typedef struct kv_contig_seq {
    bool live;
    uint64_t start;
    uint64_t reserved;
    uint64_t num_tokens;
} kv_contig_seq;

struct kv_contig {
    uint64_t capacity;
    kv_extent *extents;
    size_t num_extents;
    size_t extents_capacity;
    kv_contig_seq *seqs;
    size_t num_seqs;
    size_t seqs_capacity;
    uint64_t failed_allocations;
};

vkllm_status kv_contig_create(uint64_t capacity_slots, kv_contig **out) {
    *out = NULL;
    if (capacity_slots == 0 || capacity_slots > INT32_MAX)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv contig: capacity %llu slots out of range",
                        (unsigned long long)capacity_slots);
    kv_contig *c = calloc(1, sizeof *c);
    if (c) c->extents = malloc(16 * sizeof *c->extents);
    if (!c || !c->extents) {
        kv_contig_destroy(c);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv contig allocator");
    }
    c->capacity = capacity_slots;
    c->extents_capacity = 16;
    c->extents[0] = (kv_extent){.start = 0, .length = capacity_slots};
    c->num_extents = 1;
    *out = c;
    return VKLLM_OK;
}

void kv_contig_destroy(kv_contig *c) {
    if (!c) return;
    free(c->extents);
    free(c->seqs);
    free(c);
}

static kv_contig_seq *kv_contig_find(const kv_contig *c, kv_seq_id id) {
    if (id < 0 || (size_t)id >= c->num_seqs || !c->seqs[id].live) return NULL;
    return &c->seqs[id];
}

vkllm_status kv_contig_allocate(kv_contig *c, size_t max_len, size_t prompt_len, kv_seq_id *seq) {
    *seq = -1;
    if (prompt_len == 0 || prompt_len > max_len)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "kv contig allocate: prompt of %zu tokens with max_len %zu", prompt_len,
                        max_len);
    if (max_len > c->capacity)
        return vkl_fail(VKLLM_ERR_TOO_LONG,
                        "kv contig allocate: max_len %zu exceeds the %llu slots of the cache",
                        max_len, (unsigned long long)c->capacity);
    size_t e = 0;
    while (e < c->num_extents && c->extents[e].length < max_len)
        e++;
    if (e == c->num_extents) {
        c->failed_allocations++;
        return vkl_fail(VKLLM_ERR_BUSY, "kv contig allocate: no free region of %zu slots", max_len);
    }
    /* Find a dead id or grow, before changing the free range. */
    size_t id = 0;
    while (id < c->num_seqs && c->seqs[id].live)
        id++;
    if (id == c->num_seqs) {
        if (c->num_seqs == c->seqs_capacity) {
            size_t capacity = c->seqs_capacity ? 2 * c->seqs_capacity : 16;
            kv_contig_seq *seqs = realloc(c->seqs, capacity * sizeof *seqs);
            if (!seqs) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv contig: sequences");
            c->seqs = seqs;
            c->seqs_capacity = capacity;
        }
        c->num_seqs++;
    }
    c->seqs[id] = (kv_contig_seq){
        .live = true, .start = c->extents[e].start, .reserved = max_len, .num_tokens = prompt_len};
    c->extents[e].start += max_len;
    c->extents[e].length -= max_len;
    if (c->extents[e].length == 0) {
        memmove(c->extents + e, c->extents + e + 1, (c->num_extents - e - 1) * sizeof *c->extents);
        c->num_extents--;
    }
    *seq = (kv_seq_id)id;
    return VKLLM_OK;
}

vkllm_status kv_contig_append(kv_contig *c, kv_seq_id id, size_t num_tokens) {
    kv_contig_seq *s = kv_contig_find(c, id);
    if (!s)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv contig append: sequence %d is not live",
                        (int)id);
    if (num_tokens > s->reserved - s->num_tokens)
        return vkl_fail(VKLLM_ERR_TOO_LONG,
                        "kv contig append: sequence %d holds %llu of its %llu reserved slots, "
                        "cannot add %zu",
                        (int)id, (unsigned long long)s->num_tokens, (unsigned long long)s->reserved,
                        num_tokens);
    s->num_tokens += num_tokens;
    return VKLLM_OK;
}

vkllm_status kv_contig_free(kv_contig *c, kv_seq_id id) {
    kv_contig_seq *s = kv_contig_find(c, id);
    if (!s)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv contig free: sequence %d is not live",
                        (int)id);
    /* Insert sorted, then merge with the neighbours it touches. One slot more is
     * needed at most (no merge). */
    if (c->num_extents == c->extents_capacity) {
        kv_extent *extents = realloc(c->extents, 2 * c->extents_capacity * sizeof *extents);
        if (!extents) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "kv contig: free list");
        c->extents = extents;
        c->extents_capacity *= 2;
    }
    size_t e = 0;
    while (e < c->num_extents && c->extents[e].start < s->start)
        e++;
    memmove(c->extents + e + 1, c->extents + e, (c->num_extents - e) * sizeof *c->extents);
    c->extents[e] = (kv_extent){.start = s->start, .length = s->reserved};
    c->num_extents++;
    if (e + 1 < c->num_extents &&
        c->extents[e].start + c->extents[e].length == c->extents[e + 1].start) {
        c->extents[e].length += c->extents[e + 1].length;
        memmove(c->extents + e + 1, c->extents + e + 2,
                (c->num_extents - e - 2) * sizeof *c->extents);
        c->num_extents--;
    }
    if (e > 0 && c->extents[e - 1].start + c->extents[e - 1].length == c->extents[e].start) {
        c->extents[e - 1].length += c->extents[e].length;
        memmove(c->extents + e, c->extents + e + 1, (c->num_extents - e - 1) * sizeof *c->extents);
        c->num_extents--;
    }
    s->live = false;
    return VKLLM_OK;
}

int32_t kv_contig_base_slot(const kv_contig *c, kv_seq_id id) {
    const kv_contig_seq *s = kv_contig_find(c, id);
    return s ? (int32_t)s->start : -1;
}

void kv_contig_stats(const kv_contig *c, kv_stats *st) {
    *st = (kv_stats){0};
    st->capacity_slots = c->capacity;
    for (size_t i = 0; i < c->num_seqs; i++) {
        if (!c->seqs[i].live) continue;
        st->num_seqs++;
        st->allocated_slots += c->seqs[i].reserved;
        st->live_tokens += c->seqs[i].num_tokens;
    }
    for (size_t e = 0; e < c->num_extents; e++)
        if (c->extents[e].length > st->largest_free_extent)
            st->largest_free_extent = c->extents[e].length;
    st->waste = kv_stats_waste(st->allocated_slots, st->live_tokens);
    st->usage = (double)st->allocated_slots / (double)c->capacity;
    st->failed_allocations = c->failed_allocations;
}
