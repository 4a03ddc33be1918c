/* srv_job.c: the event queue between the engine thread and a connection thread
 * (see srv_job.h). The callback allocates one record per event and never blocks
 * except on the job's mutex, which consumers hold only for list operations. */
#include "server/srv_job.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"

double srv_now(void) {
    return vkl_monotonic_s();
}

srv_job *srv_job_create(const srv_backend *backend, void *backend_ctx, size_t n_subs,
                        uint32_t n_per_sub, uint32_t engine_logprobs) {
    srv_job *job = calloc(1, sizeof *job);
    if (!job) return NULL;
    job->subs = calloc(n_subs, sizeof *job->subs);
    if (!job->subs) {
        free(job);
        return NULL;
    }
    pthread_mutex_init(&job->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&job->cond, &attr);
    pthread_condattr_destroy(&attr);
    job->n_subs = n_subs;
    job->n_choices = (uint32_t)n_subs * n_per_sub;
    job->logprob_cols = engine_logprobs ? engine_logprobs + 1 : 0;
    job->backend = backend;
    job->backend_ctx = backend_ctx;
    for (size_t i = 0; i < n_subs; i++) {
        job->subs[i].job = job;
        job->subs[i].first_choice = (uint32_t)i * n_per_sub;
        job->subs[i].n_choices = n_per_sub;
    }
    return job;
}

static void *dup_bytes(const void *src, size_t n) {
    if (!src || n == 0) return NULL;
    void *p = malloc(n);
    if (p) memcpy(p, src, n);
    return p;
}

void srv_job_on_event(const vkllm_event *event, void *user) {
    srv_job_sub *sub = user;
    srv_job *job = sub->job;
    srv_event_rec *rec = calloc(1, sizeof *rec);
    if (rec) {
        rec->choice = sub->first_choice + (event->index < sub->n_choices ? event->index : 0);
        rec->text_len = event->text ? event->text_len : 0;
        rec->text = malloc(rec->text_len + 1);
        if (rec->text) {
            if (rec->text_len) memcpy(rec->text, event->text, rec->text_len);
            rec->text[rec->text_len] = 0;
        }
        rec->n_tokens = event->tokens ? event->n_tokens : 0;
        rec->tokens = dup_bytes(event->tokens, rec->n_tokens * sizeof *rec->tokens);
        if (event->logprobs && job->logprob_cols)
            rec->logprobs = dup_bytes(event->logprobs,
                                      rec->n_tokens * job->logprob_cols * sizeof *rec->logprobs);
        rec->finish = event->finish;
        rec->error = event->error;
        rec->error_message = event->error_message ? strdup(event->error_message) : NULL;
        rec->time = srv_now();
    }
    pthread_mutex_lock(&job->lock);
    if (rec) {
        if (job->tail)
            job->tail->next = rec;
        else
            job->head = rec;
        job->tail = rec;
    }
    if (event->finish != VKLLM_FINISH_NONE) {
        sub->finished_choices++;
        job->finished_choices++;
    }
    pthread_cond_broadcast(&job->cond);
    pthread_mutex_unlock(&job->lock);
}

static void deadline_after(int timeout_ms, struct timespec *ts) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

srv_event_rec *srv_job_pop(srv_job *job, int timeout_ms) {
    struct timespec deadline;
    deadline_after(timeout_ms, &deadline);
    pthread_mutex_lock(&job->lock);
    while (!job->head) {
        if (pthread_cond_timedwait(&job->cond, &job->lock, &deadline) == ETIMEDOUT) break;
    }
    srv_event_rec *rec = job->head;
    if (rec) {
        job->head = rec->next;
        if (!job->head) job->tail = NULL;
        rec->next = NULL;
    }
    pthread_mutex_unlock(&job->lock);
    return rec;
}

void srv_event_rec_free(srv_event_rec *rec) {
    if (!rec) return;
    free(rec->text);
    free(rec->tokens);
    free(rec->logprobs);
    free(rec->error_message);
    free(rec);
}

bool srv_job_all_finished(srv_job *job) {
    pthread_mutex_lock(&job->lock);
    bool done = job->finished_choices >= job->n_choices;
    pthread_mutex_unlock(&job->lock);
    return done;
}

void srv_job_cancel(srv_job *job) {
    pthread_mutex_lock(&job->lock);
    job->cancel_requested = true;
    pthread_mutex_unlock(&job->lock);
    for (size_t i = 0; i < job->n_subs; i++) {
        srv_job_sub *sub = &job->subs[i];
        pthread_mutex_lock(&job->lock);
        bool live = sub->submitted && sub->finished_choices < sub->n_choices;
        pthread_mutex_unlock(&job->lock);
        /* NOT_FOUND means it finished meanwhile; its final event is on its way. */
        if (live) job->backend->cancel(job->backend_ctx, sub->id);
    }
}

bool srv_job_drain(srv_job *job) {
    for (size_t i = 0; i < job->n_subs; i++) {
        srv_job_sub *sub = &job->subs[i];
        if (!sub->submitted || sub->collected) continue;
        vkllm_request_result result;
        memset(&result, 0, sizeof result);
        if (job->backend->wait(job->backend_ctx, sub->id, &result) == VKLLM_OK) {
            sub->prompt_tokens = result.prompt_tokens;
            sub->cached_prompt_tokens = result.cached_prompt_tokens;
            free(result.text);
        }
        sub->collected = true;
    }
    /* wait() returns when the request is finished; its final callback may still be
     * running on the engine thread, so also wait until every final event is in. */
    double give_up = srv_now() + 5.0;
    bool all = false;
    pthread_mutex_lock(&job->lock);
    while (srv_now() < give_up) {
        all = true;
        for (size_t i = 0; i < job->n_subs; i++)
            if (job->subs[i].submitted && job->subs[i].finished_choices < job->subs[i].n_choices)
                all = false;
        if (all) break;
        struct timespec deadline;
        deadline_after(100, &deadline);
        pthread_cond_timedwait(&job->cond, &job->lock, &deadline);
    }
    pthread_mutex_unlock(&job->lock);
    return all;
}

void srv_job_free(srv_job *job) {
    if (!job) return;
    srv_event_rec *rec = job->head;
    while (rec) {
        srv_event_rec *next = rec->next;
        srv_event_rec_free(rec);
        rec = next;
    }
    pthread_mutex_destroy(&job->lock);
    pthread_cond_destroy(&job->cond);
    free(job->subs);
    free(job);
}
