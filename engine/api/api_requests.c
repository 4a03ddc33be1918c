/* api_requests.c: the request side of the public API: submit, cancel, poll, wait, and
 * the records that the engine thread fills from scheduler events.
 *
 * Lock discipline (see api_internal.h): every record field marked "guarded" is read and
 * written with engine->mu held; user callbacks run with it released. A record's memory
 * is freed by whoever drops the last reference: it is referenced by the table
 * (in_table), by blocked waiters (waiters) and, until `finished`, by the engine thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "common/clock.h"

double api_now(void) {
    return vkl_monotonic_s();
}

static void request_free(api_request *r) {
    free(r->text);
    free(r);
}

/* ---------------------------------------------------------------- finished list */

static void finished_unlink(vkllm_engine *e, api_request *r) {
    if (!r->listed) return;
    r->listed = false;
    if (r->older)
        r->older->newer = r->newer;
    else if (e->finished_oldest == r)
        e->finished_oldest = r->newer;
    if (r->newer)
        r->newer->older = r->older;
    else if (e->finished_newest == r)
        e->finished_newest = r->older;
    r->older = r->newer = NULL;
    e->n_finished_kept--;
}

/* Takes r out of the table (collected by wait, or dropped); frees it when nobody waits.
 * mu held. */
static void table_remove(vkllm_engine *e, api_request *r) {
    if (!r->in_table) return;
    api_table_del(&e->requests, r->id);
    r->in_table = false;
    finished_unlink(e, r);
    if (r->waiters == 0) request_free(r);
}

/* mu held: r just finished; keep it for wait/poll, dropping the oldest beyond the cap. */
static void finished_push(vkllm_engine *e, api_request *r) {
    r->older = e->finished_newest;
    r->newer = NULL;
    if (e->finished_newest)
        e->finished_newest->newer = r;
    else
        e->finished_oldest = r;
    e->finished_newest = r;
    r->listed = true;
    e->n_finished_kept++;
    while (e->n_finished_kept > API_MAX_FINISHED_KEPT) {
        api_request *old = e->finished_oldest;
        /* A record someone waits on is about to be collected anyway. */
        if (old->waiters) {
            finished_unlink(e, old);
            continue;
        }
        table_remove(e, old);
    }
}

/* ---------------------------------------------------------------- events */

static void text_append(api_request *r, const char *text, size_t len) {
    if (!len) return;
    if (r->text_len + len + 1 > r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap * 2 : 256;
        while (cap < r->text_len + len + 1)
            cap *= 2;
        char *grown = realloc(r->text, cap);
        if (!grown) return; /* poll shows less text; the stream itself went out intact */
        r->text = grown;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, text, len);
    r->text_len += len;
    r->text[r->text_len] = '\0';
}

/* Records the event, calls the user, then (last event) marks the request finished and
 * wakes waiters: a waiter never returns while a callback of its request still runs. */
static void deliver(api_request *r, const vkllm_event *ev, bool last, uint32_t prompt_tokens,
                    uint32_t cached, uint32_t completion) {
    vkllm_engine *e = r->engine;
    pthread_mutex_lock(&e->mu);
    if (ev->index == 0) {
        text_append(r, ev->text, ev->text_len);
        if (completion > r->completion_tokens) r->completion_tokens = completion;
        if (ev->n_tokens && r->first_token_time == 0) r->first_token_time = api_now();
    }
    if (prompt_tokens) r->prompt_tokens = prompt_tokens;
    if (cached > r->cached_prompt_tokens) r->cached_prompt_tokens = cached;
    if (ev->finish != VKLLM_FINISH_NONE && ev->index == 0) r->finish = ev->finish;
    pthread_mutex_unlock(&e->mu);

    if (r->on_event) r->on_event(ev, r->user);

    if (last) {
        /* Marked finished at the next publication (api_publish_finished), so that a
         * returning vkllm_wait finds this request's steps in the statistics. */
        pthread_mutex_lock(&e->mu);
        if (r->finish == VKLLM_FINISH_NONE) r->finish = ev->finish;
        r->finish_time = api_now();
        r->newer = e->just_finished;
        e->just_finished = r;
        pthread_mutex_unlock(&e->mu);
    }
}

void api_publish_finished_locked(vkllm_engine *e) {
    api_request *r = e->just_finished;
    e->just_finished = NULL;
    while (r) {
        api_request *next = r->newer;
        r->newer = NULL;
        r->finished = true;
        if (r->in_table)
            finished_push(e, r);
        else if (r->waiters == 0)
            request_free(r);
        r = next;
    }
    pthread_cond_broadcast(&e->progress);
}

static void on_sched_event(const sched_event *ev, void *user) {
    deliver(user, &ev->event, ev->request_finished, ev->prompt_tokens, ev->cached_prompt_tokens,
            ev->completion_tokens);
}

void api_finish_unscheduled(vkllm_engine *e, api_request *r, vkllm_finish_reason finish,
                            vkllm_status error, const char *message) {
    vkllm_event ev = {
        .request = r->id, .text = "", .finish = finish, .error = error, .error_message = message};
    deliver(r, &ev, true, 0, 0, 0);
}

void api_apply_add(vkllm_engine *e, api_command *cmd) {
    api_request *r = cmd->request;
    sched_request sr = {.id = cmd->id,
                        .prompt = cmd->prompt,
                        .n_prompt = cmd->n_prompt,
                        .sampling = cmd->sampling,
                        .beam_width = cmd->beam_width,
                        .length_penalty = cmd->length_penalty,
                        .cache_salt = cmd->cache_salt,
                        .on_event = on_sched_event,
                        .user = r};
    pthread_mutex_lock(&e->mu);
    r->prompt_tokens = (uint32_t)cmd->n_prompt;
    pthread_mutex_unlock(&e->mu);
    vkllm_status s = sched_engine_add(e->sched, &sr);
    if (s == VKLLM_OK) return;
    char message[VKL_ERROR_MAX];
    snprintf(message, sizeof message, "%s", vkllm_last_error());
    pthread_mutex_lock(&e->mu);
    e->add_failures++;
    pthread_mutex_unlock(&e->mu);
    api_finish_unscheduled(e, r, VKLLM_FINISH_ERROR, s, message);
}

void api_requests_free_all(vkllm_engine *e) {
    pthread_mutex_lock(&e->mu);
    for (api_request *r; (r = api_table_any(&e->requests));)
        table_remove(e, r);
    api_table_free(&e->requests);
    pthread_mutex_unlock(&e->mu);
}

/* ---------------------------------------------------------------- public calls */

vkllm_status vkllm_submit(vkllm_engine *e, const vkllm_request_params *params,
                          vkllm_request_id *id) {
    if (!e) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_submit: engine is NULL");
    if (!params) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_submit: params is NULL");
    if (!id) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_submit: id is NULL");
    *id = 0;
    api_command *cmd = calloc(1, sizeof *cmd);
    api_request *r = calloc(1, sizeof *r);
    if (!cmd || !r) {
        free(cmd);
        free(r);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "vkllm_submit");
    }
    vkllm_status s = api_command_prepare(e, params, cmd);
    if (s != VKLLM_OK) {
        api_command_free(cmd);
        free(r);
        return s;
    }
    r->engine = e;
    r->on_event = params->on_event;
    r->user = params->user;
    r->submit_time = api_now();
    r->prompt_tokens = (uint32_t)cmd->n_prompt;
    cmd->request = r;

    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->mu);
        api_command_free(cmd);
        free(r);
        return vkl_fail(VKLLM_ERR_CANCELLED, "vkllm_submit: the engine is shutting down");
    }
    uint32_t waiting = e->stats.requests_waiting + e->n_pending_adds;
    if (waiting >= e->options.max_waiting) {
        pthread_mutex_unlock(&e->mu);
        api_command_free(cmd);
        free(r);
        return vkl_fail(VKLLM_ERR_BUSY,
                        "vkllm_submit: %u requests already wait (max_waiting %u); try again later",
                        waiting, e->options.max_waiting);
    }
    r->id = cmd->id = e->next_id;
    if (api_table_put(&e->requests, r) != VKLLM_OK) {
        pthread_mutex_unlock(&e->mu);
        api_command_free(cmd);
        free(r);
        return VKLLM_ERR_OUT_OF_HOST_MEMORY;
    }
    e->next_id++;
    r->in_table = true;
    e->n_pending_adds++;
    api_post_locked(e, cmd);
    pthread_mutex_unlock(&e->mu);
    *id = r->id;
    return VKLLM_OK;
}

vkllm_status vkllm_cancel(vkllm_engine *e, vkllm_request_id id) {
    if (!e) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_cancel: engine is NULL");
    api_command *cmd = calloc(1, sizeof *cmd);
    if (!cmd) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "vkllm_cancel");
    pthread_mutex_lock(&e->mu);
    api_request *r = api_table_get(&e->requests, id);
    if (!r) {
        pthread_mutex_unlock(&e->mu);
        free(cmd);
        return vkl_fail(VKLLM_ERR_NOT_FOUND,
                        "vkllm_cancel: no request %llu (finished and "
                        "collected, or never submitted)",
                        (unsigned long long)id);
    }
    if (r->finished) { /* nothing left to stop */
        pthread_mutex_unlock(&e->mu);
        free(cmd);
        return VKLLM_OK;
    }
    cmd->kind = API_CMD_CANCEL;
    cmd->id = id;
    api_post_locked(e, cmd);
    pthread_mutex_unlock(&e->mu);
    return VKLLM_OK;
}

/* mu held. */
static vkllm_status fill_result(const api_request *r, vkllm_request_result *out) {
    memset(out, 0, sizeof *out);
    out->finish = r->finished ? r->finish : VKLLM_FINISH_NONE;
    out->prompt_tokens = r->prompt_tokens;
    out->completion_tokens = r->completion_tokens;
    out->cached_prompt_tokens = r->cached_prompt_tokens;
    if (r->first_token_time > 0) out->time_to_first_token_s = r->first_token_time - r->submit_time;
    out->total_time_s = (r->finished ? r->finish_time : api_now()) - r->submit_time;
    out->text = malloc(r->text_len + 1);
    if (!out->text) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "request result text");
    if (r->text_len) memcpy(out->text, r->text, r->text_len);
    out->text[r->text_len] = '\0';
    out->text_len = r->text_len;
    return VKLLM_OK;
}

vkllm_status vkllm_poll(vkllm_engine *e, vkllm_request_id id, vkllm_request_result *out) {
    if (!e) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_poll: engine is NULL");
    if (!out) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_poll: out is NULL");
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&e->mu);
    api_request *r = api_table_get(&e->requests, id);
    vkllm_status s =
        r ? fill_result(r, out)
          : vkl_fail(VKLLM_ERR_NOT_FOUND, "vkllm_poll: no request %llu", (unsigned long long)id);
    pthread_mutex_unlock(&e->mu);
    return s;
}

vkllm_status vkllm_wait(vkllm_engine *e, vkllm_request_id id, vkllm_request_result *out) {
    if (!e) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_wait: engine is NULL");
    if (out) memset(out, 0, sizeof *out);
    pthread_mutex_lock(&e->mu);
    api_request *r = api_table_get(&e->requests, id);
    if (!r) {
        pthread_mutex_unlock(&e->mu);
        return vkl_fail(VKLLM_ERR_NOT_FOUND, "vkllm_wait: no request %llu", (unsigned long long)id);
    }
    r->waiters++;
    while (!r->finished)
        pthread_cond_wait(&e->progress, &e->mu);
    r->waiters--;
    vkllm_status s = out ? fill_result(r, out) : VKLLM_OK;
    if (r->in_table)
        table_remove(e, r); /* frees r unless another waiter remains */
    else if (r->waiters == 0)
        request_free(r);
    pthread_mutex_unlock(&e->mu);
    return s;
}

void vkllm_request_result_free(vkllm_request_result *result) {
    if (!result) return;
    free(result->text);
    result->text = NULL;
    result->text_len = 0;
}
