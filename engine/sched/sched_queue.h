/* sched_queue.h: an ordered list of requests (the waiting, running and swapped queues).
 *
 * A plain growable array of group pointers: queues hold at most a few hundred
 * requests, so O(n) insertion and removal cost less than any linked structure's
 * bookkeeping. The queue does not own its groups. Module prefix: sched_. */
#ifndef VKL_SCHED_QUEUE_H
#define VKL_SCHED_QUEUE_H

#include <stddef.h>

#include "sched/sched_group.h"

typedef struct sched_queue {
    sched_group **items;
    size_t count, capacity;
} sched_queue;

void sched_queue_destroy(sched_queue *q);
vkllm_status sched_queue_push_back(sched_queue *q, sched_group *g);
vkllm_status sched_queue_push_front(sched_queue *q, sched_group *g);
/* Inserts keeping the queue sorted by arrival (earliest first). */
vkllm_status sched_queue_insert_by_arrival(sched_queue *q, sched_group *g);
/* Removes g if present; returns whether it was. */
bool sched_queue_remove(sched_queue *q, const sched_group *g);
sched_group *sched_queue_find(const sched_queue *q, vkllm_request_id id);

#endif
