/* kv_stats.c: the waste formula shared by both allocators (see kv_stats.h). */
#include "kv_stats.h"

double kv_stats_waste(uint64_t allocated_slots, uint64_t live_tokens) {
    if (allocated_slots == 0 || live_tokens >= allocated_slots) return 0.0;
    return (double)(allocated_slots - live_tokens) / (double)allocated_slots;
}
