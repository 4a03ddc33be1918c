/* srv_job.h: one HTTP generation request in flight: its engine requests and the
 * queue of their events.
 *
 * A completions request with several prompts becomes several engine requests (subs);
 * each sub yields `n` choices, numbered sub.first_choice + event.index. The engine
 * calls srv_job_on_event on its own thread; the callback only copies the event into
 * the queue (no JSON, no engine calls) and wakes the connection thread, which pops
 * events with srv_job_pop and does all formatting there.
 *
 * Invariants: `finished_choices` counts choices whose final event was queued; a job
 * is freed only after every submitted sub is finished and collected (srv_job_drain),
 * so no callback can reach freed memory. Times are CLOCK_MONOTONIC seconds. */
#ifndef SRV_JOB_H
#define SRV_JOB_H

#include <pthread.h>
#include <stdbool.h>

#include "server/srv_backend.h"

typedef struct srv_event_rec {
    struct srv_event_rec *next;
    uint32_t choice;
    char *text;
    size_t text_len;
    int32_t *tokens;
    size_t n_tokens;
    vkllm_token_logprob *logprobs; /* n_tokens * job.logprob_cols, or NULL */
    vkllm_finish_reason finish;
    vkllm_status error;
    char *error_message;
    double time;
} srv_event_rec;

typedef struct srv_job srv_job;

typedef struct srv_job_sub {
    srv_job *job;
    uint32_t first_choice, n_choices;
    vkllm_request_id id;
    bool submitted;
    uint32_t finished_choices; /* under job.lock */
    bool collected;
    uint32_t prompt_tokens, cached_prompt_tokens; /* from wait, once collected */
} srv_job_sub;

struct srv_job {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    srv_event_rec *head, *tail;
    uint32_t n_choices, finished_choices;
    uint32_t logprob_cols; /* engine logprobs + 1, or 0 */
    srv_job_sub *subs;
    size_t n_subs;
    const srv_backend *backend;
    void *backend_ctx;
    double t_submit;
    bool cancel_requested;
};

double srv_now(void);

/* n_subs engine requests of n_per_sub choices each. NULL when out of memory. */
srv_job *srv_job_create(const srv_backend *backend, void *backend_ctx, size_t n_subs,
                        uint32_t n_per_sub, uint32_t engine_logprobs);
/* The vkllm_event_fn; user is a srv_job_sub *. */
void srv_job_on_event(const vkllm_event *event, void *user);
/* The next event, waiting up to timeout_ms; NULL when none arrived in time. */
srv_event_rec *srv_job_pop(srv_job *job, int timeout_ms);
void srv_event_rec_free(srv_event_rec *rec);
/* Whether every choice's final event has been queued (popped or not). */
bool srv_job_all_finished(srv_job *job);
/* Cancels every submitted sub that has not finished (idempotent). */
void srv_job_cancel(srv_job *job);
/* Waits for every submitted sub to finish (cancelling nothing), then collects each
 * with backend.wait, filling prompt token counts. Call before srv_job_free. False
 * when a final event never arrived (5 s after wait returned): then the job must be
 * leaked rather than freed, since a late callback could still reach it. */
bool srv_job_drain(srv_job *job);
void srv_job_free(srv_job *job);

#endif
