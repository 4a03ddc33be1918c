/* ref_matmul.c: the reference matrix product y = x W^T (+ b), split over output rows
 * with pthreads. Each output element is one dot product summed in a fixed order (eight
 * float lanes, then combined in double), so the result never depends on the thread
 * count. */
#include <pthread.h>

#include "ref/ref_internal.h"

/* Below this many multiply-adds a product runs on the calling thread. */
#define REF_MATMUL_PARALLEL_MIN (1u << 20)
#define REF_MATMUL_MAX_THREADS 64

typedef struct matmul_job {
    const float *w, *bias, *x;
    float *y;
    uint32_t n_tok, n_in, n_out, row_begin, row_end;
} matmul_job;

static float dot(const float *a, const float *b, uint32_t n) {
    float lane[8] = {0};
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            lane[l] += a[i + l] * b[i + l];
    double sum = 0.0;
    for (int l = 0; l < 8; l++)
        sum += lane[l];
    for (; i < n; i++)
        sum += (double)a[i] * b[i];
    return (float)sum;
}

static void *matmul_rows(void *arg) {
    const matmul_job *j = arg;
    for (uint32_t r = j->row_begin; r < j->row_end; r++) {
        const float *wr = j->w + (size_t)r * j->n_in;
        float b = j->bias ? j->bias[r] : 0.0f;
        for (uint32_t t = 0; t < j->n_tok; t++)
            j->y[(size_t)t * j->n_out + r] = dot(wr, j->x + (size_t)t * j->n_in, j->n_in) + b;
    }
    return NULL;
}

void ref_matmul(const float *w, const float *bias, const float *x, float *y, uint32_t n_tok,
                uint32_t n_in, uint32_t n_out, uint32_t n_threads) {
    uint64_t work = (uint64_t)n_tok * n_in * n_out;
    if (n_threads > REF_MATMUL_MAX_THREADS) n_threads = REF_MATMUL_MAX_THREADS;
    if (n_threads > n_out) n_threads = n_out;
    if (n_threads <= 1 || work < REF_MATMUL_PARALLEL_MIN) {
        matmul_job job = {w, bias, x, y, n_tok, n_in, n_out, 0, n_out};
        matmul_rows(&job);
        return;
    }
    matmul_job jobs[REF_MATMUL_MAX_THREADS];
    pthread_t threads[REF_MATMUL_MAX_THREADS];
    bool started[REF_MATMUL_MAX_THREADS] = {0};
    for (uint32_t i = 0; i < n_threads; i++) {
        jobs[i] = (matmul_job){w,
                               bias,
                               x,
                               y,
                               n_tok,
                               n_in,
                               n_out,
                               (uint32_t)((uint64_t)n_out * i / n_threads),
                               (uint32_t)((uint64_t)n_out * (i + 1) / n_threads)};
        /* Thread 0's share runs here; a thread that cannot start runs here as well. */
        if (i > 0) started[i] = pthread_create(&threads[i], NULL, matmul_rows, &jobs[i]) == 0;
    }
    matmul_rows(&jobs[0]);
    for (uint32_t i = 1; i < n_threads; i++) {
        if (started[i])
            pthread_join(threads[i], NULL);
        else
            matmul_rows(&jobs[i]);
    }
}
