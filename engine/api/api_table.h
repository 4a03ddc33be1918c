/* api_table.h: the engine's request records by id: an open-addressing hash table
 * (linear probing, backward-shift deletion, so no tombstones; load factor <= 1/2).
 * Not thread-safe: the engine's mutex guards it. Module prefix: api_. */
#ifndef VKL_API_TABLE_H
#define VKL_API_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct api_request api_request;

typedef struct api_table {
    api_request **slots; /* NULL: empty */
    size_t cap;          /* power of two, or 0 */
    size_t count;
} api_table;

/* The record with that id, or NULL. */
api_request *api_table_get(const api_table *t, uint64_t id);
/* Inserts a record whose id is not present yet. */
vkllm_status api_table_put(api_table *t, api_request *r);
/* Removes the record with that id (no-op when absent). */
void api_table_del(api_table *t, uint64_t id);
/* Any record (for draining), or NULL when empty. */
api_request *api_table_any(const api_table *t);
void api_table_free(api_table *t);

#endif
