/* common/splitmix.h: splitmix64, the one 64-bit mixer every module uses (seeds, id hashes,
 * synthetic weights, benchmark workloads). Header-only so any module or tool can use it
 * without a link dependency. Invariant: the constants are splitmix64's; outputs are part of
 * what seeded runs reproduce, so they must never change. */
#ifndef VKL_SPLITMIX_H
#define VKL_SPLITMIX_H

#include <stdint.h>

/* The splitmix64 finaliser: a bijection of 64-bit values that scatters nearby inputs. */
static inline uint64_t vkl_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* One splitmix64 step: advances *state by the golden-ratio increment and mixes it. */
static inline uint64_t vkl_splitmix64(uint64_t *state) {
    return vkl_mix64(*state += 0x9e3779b97f4a7c15ull);
}

#endif
