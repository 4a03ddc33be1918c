/* sched_queue.c: ordered request lists; see sched_queue.h. */
#include "sched/sched_queue.h"

#include <stdlib.h>
#include <string.h>

void sched_queue_destroy(sched_queue *q) {
    free(q->items);
    memset(q, 0, sizeof *q);
}

static vkllm_status sched_queue_insert_at(sched_queue *q, size_t at, sched_group *g) {
    if (q->count == q->capacity) {
        size_t cap = q->capacity ? q->capacity * 2 : 16;
        sched_group **items = realloc(q->items, cap * sizeof *items);
        if (!items) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "sched queue of %zu", cap);
        q->items = items;
        q->capacity = cap;
    }
    memmove(q->items + at + 1, q->items + at, (q->count - at) * sizeof *q->items);
    q->items[at] = g;
    q->count++;
    return VKLLM_OK;
}

vkllm_status sched_queue_push_back(sched_queue *q, sched_group *g) {
    return sched_queue_insert_at(q, q->count, g);
}

vkllm_status sched_queue_push_front(sched_queue *q, sched_group *g) {
    return sched_queue_insert_at(q, 0, g);
}

vkllm_status sched_queue_insert_by_arrival(sched_queue *q, sched_group *g) {
    size_t at = q->count;
    while (at > 0 && q->items[at - 1]->arrival > g->arrival)
        at--;
    return sched_queue_insert_at(q, at, g);
}

bool sched_queue_remove(sched_queue *q, const sched_group *g) {
    for (size_t i = 0; i < q->count; i++)
        if (q->items[i] == g) {
            memmove(q->items + i, q->items + i + 1, (q->count - i - 1) * sizeof *q->items);
            q->count--;
            return true;
        }
    return false;
}

sched_group *sched_queue_find(const sched_queue *q, vkllm_request_id id) {
    for (size_t i = 0; i < q->count; i++)
        if (q->items[i]->id == id) return q->items[i];
    return NULL;
}
