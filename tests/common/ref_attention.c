/* ref_attention.c: double-precision paged attention over fp16 K/V (see ref_attention.h). */
#include "ref_attention.h"

#include <math.h>
#include <stdlib.h>

#include "test_util.h"

uint64_t ref_attn_row_index(const ref_attn_cache *c, uint32_t slot, uint32_t kv_head) {
    uint64_t block = slot / c->block_size, offset = slot % c->block_size;
    return ((block * c->n_head_kv + kv_head) * c->block_size + offset) * c->head_dim;
}

void ref_attention_row(const ref_attn_cache *c, const int32_t *block_table, uint32_t kv_head,
                       const float *q, uint32_t pos, uint32_t window, double scale, double softcap,
                       float *out) {
    uint32_t first = (window > 0 && pos + 1 > window) ? pos + 1 - window : 0;
    uint32_t n = pos + 1 - first, d = c->head_dim;
    double *scores = malloc(sizeof(double) * n);
    double *acc = calloc(d, sizeof(double));
    double max = -INFINITY;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t p = first + i;
        uint32_t slot =
            (uint32_t)block_table[p / c->block_size] * c->block_size + p % c->block_size;
        const uint16_t *k = c->k + ref_attn_row_index(c, slot, kv_head);
        double s = 0;
        for (uint32_t j = 0; j < d; j++)
            s += (double)q[j] * test_f16_to_f32(k[j]);
        s *= scale;
        if (softcap > 0) s = softcap * tanh(s / softcap);
        scores[i] = s;
        if (s > max) max = s;
    }
    double sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t p = first + i;
        uint32_t slot =
            (uint32_t)block_table[p / c->block_size] * c->block_size + p % c->block_size;
        const uint16_t *v = c->v + ref_attn_row_index(c, slot, kv_head);
        double w = exp(scores[i] - max);
        sum += w;
        for (uint32_t j = 0; j < d; j++)
            acc[j] += w * test_f16_to_f32(v[j]);
    }
    for (uint32_t j = 0; j < d; j++)
        out[j] = n ? (float)(acc[j] / sum) : 0.0f;
    free(scores);
    free(acc);
}
