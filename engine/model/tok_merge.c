/* tok_merge.c: the pairwise merge loop shared by the SPM and BPE encoders.
 *
 * Symbols form a doubly linked list over a byte buffer. Candidate pairs wait in a binary
 * min-heap ordered by (prio, start of the left symbol), so each step takes the best pair
 * and, on ties, the leftmost one, in O(log n). Entries are not removed when a neighbour
 * merges; instead each entry remembers both symbols' lengths, and an entry whose symbols
 * changed since it was pushed is dropped when popped (lazy invalidation). Total cost
 * O(n log n) for a fragment of n characters. */
#include "model/tok_internal.h"

#include <stdlib.h>

typedef struct tok_cand {
    double prio;
    uint32_t pos; /* start of the left symbol: the tie-break */
    int32_t left, right;
    uint32_t left_len, right_len;
    int32_t id;
} tok_cand;

typedef struct tok_heap {
    tok_cand *v;
    size_t n, cap;
} tok_heap;

static bool tok_cand_less(const tok_cand *a, const tok_cand *b) {
    if (a->prio != b->prio) return a->prio < b->prio;
    return a->pos < b->pos;
}

static vkllm_status tok_heap_push(tok_heap *h, tok_cand c) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        tok_cand *v = realloc(h->v, cap * sizeof *v);
        if (!v) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!tok_cand_less(&c, &h->v[parent])) break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = c;
    return VKLLM_OK;
}

static tok_cand tok_heap_pop(tok_heap *h) {
    tok_cand top = h->v[0];
    tok_cand last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n) break;
        if (child + 1 < h->n && tok_cand_less(&h->v[child + 1], &h->v[child])) child++;
        if (!tok_cand_less(&h->v[child], &last)) break;
        h->v[i] = h->v[child];
        i = child;
    }
    if (h->n > 0) h->v[i] = last;
    return top;
}

static vkllm_status tok_try_pair(const tok_tokenizer *tok, const char *buf, tok_sym *syms,
                                 int32_t left, tok_pair_fn pair, tok_heap *heap) {
    if (left < 0) return VKLLM_OK;
    int32_t right = syms[left].next;
    if (right < 0) return VKLLM_OK;
    tok_cand c = {.pos = syms[left].start,
                  .left = left,
                  .right = right,
                  .left_len = syms[left].len,
                  .right_len = syms[right].len};
    if (!pair(tok, buf, &syms[left], &syms[right], &c.prio, &c.id)) return VKLLM_OK;
    return tok_heap_push(heap, c);
}

vkllm_status tok_merge_run(const tok_tokenizer *tok, const char *buf, tok_sym *syms, size_t n,
                           tok_pair_fn pair) {
    tok_heap heap = {0};
    vkllm_status st = VKLLM_OK;
    for (size_t i = 0; i + 1 < n && st == VKLLM_OK; i++)
        st = tok_try_pair(tok, buf, syms, (int32_t)i, pair, &heap);
    while (st == VKLLM_OK && heap.n > 0) {
        tok_cand c = tok_heap_pop(&heap);
        tok_sym *l = &syms[c.left], *r = &syms[c.right];
        /* Stale: one side merged into something else since this entry was pushed. */
        if (l->len != c.left_len || r->len != c.right_len || l->next != c.right) continue;
        l->len += r->len;
        l->id = c.id;
        l->next = r->next;
        if (r->next >= 0) syms[r->next].prev = c.left;
        r->len = 0;
        st = tok_try_pair(tok, buf, syms, l->prev, pair, &heap);
        if (st == VKLLM_OK) st = tok_try_pair(tok, buf, syms, c.left, pair, &heap);
    }
    free(heap.v);
    return st;
}
