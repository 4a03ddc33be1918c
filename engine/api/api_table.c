/* api_table.c: the request table (see api_table.h). The id is the key; it is read from
 * the record (api_request.id), so a slot holds only the pointer. */
#include "api/api_table.h"

#include <stdlib.h>

#include "api/api_internal.h"
#include "common/splitmix.h"

static size_t home(uint64_t id, size_t cap) {
    /* splitmix64 finaliser: sequential ids spread over the table */
    return (size_t)vkl_mix64(id) & (cap - 1);
}

api_request *api_table_get(const api_table *t, uint64_t id) {
    if (!t->cap) return NULL;
    for (size_t i = home(id, t->cap);; i = (i + 1) & (t->cap - 1)) {
        api_request *r = t->slots[i];
        if (!r) return NULL;
        if (r->id == id) return r;
    }
}

static void insert(api_request **slots, size_t cap, api_request *r) {
    size_t i = home(r->id, cap);
    while (slots[i])
        i = (i + 1) & (cap - 1);
    slots[i] = r;
}

vkllm_status api_table_put(api_table *t, api_request *r) {
    if ((t->count + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        api_request **slots = calloc(cap, sizeof *slots);
        if (!slots) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "request table (%zu)", cap);
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i]) insert(slots, cap, t->slots[i]);
        free(t->slots);
        t->slots = slots;
        t->cap = cap;
    }
    insert(t->slots, t->cap, r);
    t->count++;
    return VKLLM_OK;
}

void api_table_del(api_table *t, uint64_t id) {
    if (!t->cap) return;
    size_t mask = t->cap - 1, i = home(id, t->cap);
    while (t->slots[i] && t->slots[i]->id != id)
        i = (i + 1) & mask;
    if (!t->slots[i]) return;
    t->slots[i] = NULL;
    t->count--;
    /* Backward shift: move later entries of the probe run into the hole when their
     * home position does not lie cyclically in (hole, j]. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; t->slots[j]; j = (j + 1) & mask) {
        size_t h = home(t->slots[j]->id, t->cap);
        bool stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
        if (stays) continue;
        t->slots[hole] = t->slots[j];
        t->slots[j] = NULL;
        hole = j;
    }
}

api_request *api_table_any(const api_table *t) {
    if (!t->count) return NULL;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i]) return t->slots[i];
    return NULL;
}

void api_table_free(api_table *t) {
    free(t->slots);
    t->slots = NULL;
    t->cap = t->count = 0;
}
