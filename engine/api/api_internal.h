/* api_internal.h: the engine object behind include/vkllm.h, shared by the api_*.c files.
 *
 * Threads: the engine thread (api_engine.c) alone calls sched_engine_* and therefore
 * alone touches the GPU. Public calls on other threads only take `mu` for a short time:
 * they push commands (add, cancel) onto `cmd_head..cmd_tail` and read or wait on the
 * request records. Callbacks run on the engine thread with `mu` NOT held, so a callback
 * may submit or cancel.
 *
 * Request records (api_request):
 *  - created by vkllm_submit, inserted in `requests` (id -> record) before submit returns;
 *  - updated by the engine thread from sched events (text of sample 0, counts, times);
 *  - `finished` is set only after the request's last user callback has returned and the
 *    step's statistics are published (the record waits on `just_finished`, linked
 *    through `newer`, until then), so when vkllm_wait returns no callback of that
 *    request is running or will run, and vkllm_get_stats counts all of its steps;
 *  - finished records stay in `requests` until vkllm_wait collects them; at most
 *    API_MAX_FINISHED_KEPT uncollected finished records are kept (oldest dropped first),
 *    so callers that only use callbacks do not grow memory;
 *  - a record is freed once it left `requests` and no vkllm_wait is blocked on it.
 *
 * Invariants: every accepted request gets exactly one last event (finish != NONE on the
 * last event of each sample); `n_pending_adds` counts add commands not yet applied. */
#ifndef VKL_API_INTERNAL_H
#define VKL_API_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vkllm.h"

#include "api/api_model.h"
#include "api/api_table.h"
#include "exec/sampler.h"
#include "sched/sched_engine.h"

#define API_MAX_FINISHED_KEPT 1024

typedef struct api_request api_request;

struct api_request {
    vkllm_engine *engine;
    vkllm_request_id id;
    vkllm_event_fn on_event;
    void *user;

    /* guarded by engine->mu */
    vkllm_finish_reason finish;
    bool finished; /* last callback returned */
    bool in_table; /* still in engine->requests */
    uint32_t waiters;
    uint32_t prompt_tokens, completion_tokens, cached_prompt_tokens;
    double submit_time, first_token_time, finish_time; /* seconds, monotonic */
    char *text;                                        /* sample 0 so far */
    size_t text_len, text_cap;
    bool listed;                /* on the list of finished, uncollected records */
    api_request *older, *newer; /* that list, oldest first */
};

typedef enum api_command_kind { API_CMD_ADD, API_CMD_CANCEL } api_command_kind;

/* A request on its way to the engine thread: the command owns copies of everything
 * the caller passed (prompt ids, stop strings and ids), because submit returns before
 * the engine thread reads them. */
typedef struct api_command {
    api_command_kind kind;
    vkllm_request_id id;
    api_request *request; /* API_CMD_ADD */
    int32_t *prompt;
    size_t n_prompt;
    sampler_params sampling;
    char **stop_strings;
    int32_t *stop_ids;
    uint32_t beam_width;
    float length_penalty;
    uint64_t cache_salt;
    struct api_command *next;
} api_command;

struct vkllm_engine {
    vkllm_engine_options options; /* resolved; string fields not kept */
    api_model model;
    sched_engine *sched;
    sched_config sched_limits; /* the scheduler's resolved config (immutable): submit
                                  refuses what it would refuse */
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu;
    pthread_cond_t wake;     /* commands arrived, pause/stop changed */
    pthread_cond_t progress; /* a request finished; a step ended */
    api_command *cmd_head, *cmd_tail;
    uint32_t n_pending_adds;
    bool stopping;
    bool paused; /* test hook: no steps while set */
    uint64_t next_id;
    api_table requests;
    api_request *finished_oldest, *finished_newest;
    api_request *just_finished; /* last event delivered, not yet marked finished */
    uint32_t n_finished_kept;
    vkllm_stats stats;     /* published by the engine thread after each step */
    uint64_t add_failures; /* adds the engine thread could not apply (failed requests) */
};

/* ---- api_params.c */

/* Converts and validates the public sampling struct (messages name "sampling.<field>"). */
vkllm_status api_sampling_convert(const vkllm_sampling *in, sampler_params *out);

/* Validates params and turns the prompt (text, ids or messages) into token ids, on the
 * caller's thread (the tokenizer is immutable). Fills cmd (kind ADD, owning copies). */
vkllm_status api_command_prepare(vkllm_engine *engine, const vkllm_request_params *params,
                                 api_command *cmd);
void api_command_free(api_command *cmd);

/* ---- api_requests.c */

double api_now(void);
/* Applies one ADD command on the engine thread (sched_engine_add); a failure there
 * finishes the request with VKLLM_FINISH_ERROR through its callback. */
void api_apply_add(vkllm_engine *engine, api_command *cmd);
/* Finishes a record that never reached the scheduler (engine thread, mu not held). */
void api_finish_unscheduled(vkllm_engine *engine, api_request *req, vkllm_finish_reason finish,
                            vkllm_status error, const char *message);
/* Marks the requests whose last event was delivered since the last call finished and
 * wakes waiters (engine thread, mu held, right after publishing statistics). */
void api_publish_finished_locked(vkllm_engine *engine);
/* Removes every record (engine destroy, after the thread stopped). */
void api_requests_free_all(vkllm_engine *engine);

/* ---- api_engine.c */

/* Test hook: while paused the engine thread applies commands but runs no step, so
 * requests stay waiting (deterministic BUSY tests). */
void api_engine_pause(vkllm_engine *engine, bool paused);
/* Posts a command and wakes the engine thread (mu held by the caller). */
void api_post_locked(vkllm_engine *engine, api_command *cmd);

#endif
