/* api_engine.c: engine creation and destruction, the engine thread and statistics.
 *
 * The engine thread loop: take every queued command at once (under mu), apply them in
 * order to the scheduler (add, cancel: a cancelled request's blocks are free before the
 * next step), run one step if there is work and the engine is not paused, publish the
 * statistics, and sleep on `wake` when there is nothing to do. Shutdown: the thread
 * applies the last commands, cancels everything (callbacks get CANCELLED), publishes and
 * returns; destroy then frees the scheduler, the model and the records.
 *
 * Step timing: the wall clock around sched_engine_step and the runner's GPU time of that
 * step are added to the prefill figures when the step computed any prompt tokens, else
 * to the decode figures (exact for one stream; a mixed batch counts as prefill). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/api_internal.h"
#include "common/splitmix.h"

const char *vkllm_version(void) {
    return "0.1.0";
}

void api_post_locked(vkllm_engine *e, api_command *cmd) {
    cmd->next = NULL;
    if (e->cmd_tail)
        e->cmd_tail->next = cmd;
    else
        e->cmd_head = cmd;
    e->cmd_tail = cmd;
    pthread_cond_signal(&e->wake);
}

void api_engine_pause(vkllm_engine *e, bool paused) {
    pthread_mutex_lock(&e->mu);
    e->paused = paused;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
}

/* ---------------------------------------------------------------- engine thread */

/* Engine-thread-only state between two publications. */
typedef struct loop_state {
    sched_stats last; /* the scheduler's figures at the previous publication */
    uint64_t prefill_tokens, decode_tokens;
    double prefill_s, decode_s, prefill_gpu_s, decode_gpu_s;
} loop_state;

/* Applies commands in order; returns how many adds were among them. */
static uint32_t apply_commands(vkllm_engine *e, api_command *cmd) {
    uint32_t adds = 0;
    while (cmd) {
        api_command *next = cmd->next;
        if (cmd->kind == API_CMD_ADD) {
            api_apply_add(e, cmd);
            adds++;
        } else {
            /* NOT_FOUND: it finished between the call and now; nothing to do. */
            (void)sched_engine_cancel(e->sched, cmd->id);
        }
        api_command_free(cmd);
        cmd = next;
    }
    return adds;
}

/* Publishes the scheduler's figures; `adds` commands are now counted by the scheduler
 * rather than as pending (both in one critical section so that waiting counts stay
 * exact for vkllm_submit's BUSY check). `step_s` < 0: no step ran. */
static void publish(vkllm_engine *e, loop_state *ls, uint32_t adds, double step_s) {
    sched_stats now;
    sched_engine_stats(e->sched, &now);
    if (step_s >= 0) {
        uint64_t prefill = now.prefill_tokens_total - ls->last.prefill_tokens_total;
        uint64_t decode = now.decode_tokens_total - ls->last.decode_tokens_total;
        double gpu_s = (prefill || decode) ? exec_last_step_gpu_ms(e->model.exec) / 1e3 : 0.0;
        ls->prefill_tokens += prefill;
        ls->decode_tokens += decode;
        if (prefill) {
            ls->prefill_s += step_s;
            ls->prefill_gpu_s += gpu_s;
        } else if (decode) {
            ls->decode_s += step_s;
            ls->decode_gpu_s += gpu_s;
        }
    }
    ls->last = now;
    pthread_mutex_lock(&e->mu);
    e->stats = now.api;
    e->stats.requests_failed += e->add_failures;
    e->stats.prefill_tokens_computed = ls->prefill_tokens;
    e->stats.decode_tokens_computed = ls->decode_tokens;
    e->stats.prefill_time_s = ls->prefill_s;
    e->stats.decode_time_s = ls->decode_s;
    e->stats.prefill_gpu_time_s = ls->prefill_gpu_s;
    e->stats.decode_gpu_time_s = ls->decode_gpu_s;
    e->n_pending_adds -= adds;
    api_publish_finished_locked(e);
    pthread_mutex_unlock(&e->mu);
}

static void *engine_main(void *arg) {
    vkllm_engine *e = arg;
    loop_state ls;
    memset(&ls, 0, sizeof ls);
    sched_engine_stats(e->sched, &ls.last);
    bool has_work = false;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stopping && !e->cmd_head && (!has_work || e->paused))
            pthread_cond_wait(&e->wake, &e->mu);
        api_command *cmds = e->cmd_head;
        e->cmd_head = e->cmd_tail = NULL;
        bool stopping = e->stopping, paused = e->paused;
        pthread_mutex_unlock(&e->mu);

        uint32_t adds = apply_commands(e, cmds);
        if (stopping) {
            sched_engine_cancel_all(e->sched);
            publish(e, &ls, adds, -1.0);
            return NULL;
        }
        double step_s = -1.0;
        if (!paused && sched_engine_has_work(e->sched)) {
            double t0 = api_now();
            /* A failed step already finished its requests with VKLLM_FINISH_ERROR; the
             * engine goes on serving the rest. */
            (void)sched_engine_step(e->sched);
            step_s = api_now() - t0;
        }
        has_work = sched_engine_has_work(e->sched);
        publish(e, &ls, adds, step_s);
    }
}

/* ---------------------------------------------------------------- create / destroy */

static uint64_t fresh_seed(const void *salt) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    uint64_t x = (uint64_t)t.tv_nsec ^ ((uint64_t)t.tv_sec << 30) ^ (uint64_t)(uintptr_t)salt ^
                 ((uint64_t)getpid() << 48);
    /* splitmix64 finaliser so nearby clocks give unrelated seeds */
    return vkl_splitmix64(&x);
}

static vkllm_status create_sched(vkllm_engine *e) {
    sched_config sc;
    sched_config_default(&sc);
    sc.max_step_tokens = e->options.max_step_tokens;
    sc.max_running_seqs = e->options.max_running_seqs;
    sc.max_context = 0; /* the runner's, resolved from options.max_context */
    sc.max_waiting = 0; /* enforced by vkllm_submit, so an accepted request is never refused */
    sc.preempt_mode = e->options.swap_blocks ? SCHED_PREEMPT_SWAP : SCHED_PREEMPT_RECOMPUTE;
    sc.enable_prefix_caching = e->options.enable_prefix_caching;
    sc.model_key = e->model.model_key;
    sc.seed = fresh_seed(e);
    VKL_TRY(sched_engine_create(e->model.exec, &e->model.cfg, e->model.tok, &sc, &e->sched));
    e->sched_limits = *sched_engine_config(e->sched);
    return VKLLM_OK;
}

vkllm_status vkllm_engine_create(const char *model_path, const vkllm_engine_options *options,
                                 vkllm_engine **out) {
    if (!out) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_engine_create: out is NULL");
    *out = NULL;
    if (!model_path)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_engine_create: model_path is NULL");
    vkllm_engine *e = calloc(1, sizeof *e);
    if (!e) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "vkllm_engine_create");
    vkllm_status s = api_options_resolve(options, &e->options);
    if (s == VKLLM_OK) s = api_model_load(model_path, &e->options, &e->model);
    /* The caller's strings and callbacks are not kept past creation. */
    e->options.device = NULL;
    e->options.chat_template = NULL;
    e->options.on_progress = NULL;
    e->options.progress_user = NULL;
    if (s == VKLLM_OK) {
        s = create_sched(e);
        if (s != VKLLM_OK) vkl_fail_wrap(s, "%s: scheduler: ", model_path);
    }
    if (s != VKLLM_OK) {
        api_model_unload(&e->model);
        free(e);
        return s;
    }
    e->next_id = 1;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->wake, NULL);
    pthread_cond_init(&e->progress, NULL);
    sched_stats first;
    sched_engine_stats(e->sched, &first);
    e->stats = first.api;
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        sched_engine_destroy(e->sched);
        api_model_unload(&e->model);
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->wake);
        pthread_cond_destroy(&e->progress);
        free(e);
        return vkl_fail(VKLLM_ERR_INTERNAL, "vkllm_engine_create: cannot start the engine thread");
    }
    e->thread_started = true;
    *out = e;
    return VKLLM_OK;
}

void vkllm_engine_destroy(vkllm_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    if (e->thread_started) pthread_join(e->thread, NULL);
    /* Commands posted after the thread's last look (a cancel racing with destroy). */
    for (api_command *c = e->cmd_head, *next; c; c = next) {
        next = c->next;
        api_command_free(c);
    }
    sched_engine_destroy(e->sched);
    api_requests_free_all(e);
    api_model_unload(&e->model);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->progress);
    free(e);
}

vkllm_status vkllm_engine_model_info(vkllm_engine *e, vkllm_model_info *out) {
    if (!e || !out)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_engine_model_info: %s is NULL",
                        e ? "out" : "engine");
    *out = e->model.info; /* immutable after creation */
    return VKLLM_OK;
}

vkllm_status vkllm_get_stats(vkllm_engine *e, vkllm_stats *out) {
    if (!e || !out)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "vkllm_get_stats: %s is NULL",
                        e ? "out" : "engine");
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    out->requests_waiting += e->n_pending_adds;
    pthread_mutex_unlock(&e->mu);
    return VKLLM_OK;
}
