/* srv_stream.c: the generation endpoints: submission, then either a streamed answer
 * (server-sent events produced by an MHD response callback that pops the job's event
 * queue) or a blocking wait that builds one JSON body.
 *
 * Both paths run on the connection's own thread (thread-per-connection daemon), so
 * blocking there is allowed; waits are sliced into short timeouts so that a client
 * that hangs up is noticed and its engine requests are cancelled (which frees their
 * KV blocks). A srv_gen lives from submission until its answer is finished or the
 * connection drops; srv_gen_finish is the single place that drains, records metrics
 * and frees it. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/srv_internal.h"
#include "server/srv_job.h"
#include "server/srv_response.h"

/* How long one wait slice lasts before the connection is checked again. */
#define SRV_POLL_MS 50

typedef struct srv_choice_state {
    char *text; /* generated text, echoed prompt first */
    size_t text_len, text_cap;
    size_t echo_len;
    int32_t *tokens;
    size_t n_tokens, tokens_cap;
    vkllm_token_logprob *logprobs; /* n_tokens * logprob_cols */
    vkllm_finish_reason finish;
    char *error_message;
    bool finished;
    bool opened;          /* stream: opening chunk (role / echo) sent */
    size_t stream_offset; /* stream: text bytes sent so far, for logprob text_offset */
    double t_last_token;
} srv_choice_state;

struct srv_gen {
    srv_server *server;
    struct MHD_Connection *conn;
    srv_gen_request req;
    srv_job *job;
    char id[64];
    srv_response_ctx rc;
    srv_choice_state *choices;
    char **echo; /* per prompt: the echoed prompt text (completions with echo) */
    size_t *echo_len;
    uint32_t finished_seen;
    uint64_t completion_tokens;
    double t_first_token;
    double t_last_event;
    bool cancelled; /* by a disconnect or shutdown */
    /* stream output not yet handed to MHD */
    char *out;
    size_t out_len, out_pos, out_cap;
    bool done_sent;
    bool usage_null;
    srv_gen *next; /* server.gens */
};

/* ---------------------------------------------------------------- small buffers */

static bool grow(void **data, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t cap2 = *cap ? *cap * 2 : 256;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(*data, cap2 * elem);
    if (!p) return false;
    *data = p;
    *cap = cap2;
    return true;
}

static bool append_text(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (n > SIZE_MAX / 4 || *len > SIZE_MAX / 4) return false; /* also bounds memcpy for gcc */
    if (!grow((void **)buf, cap, *len + n + 1, 1)) return false;
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return true;
}

/* Appends "data: <json>\n\n" (consuming value) to the stream output. */
static bool emit_json(srv_gen *g, json_t *value) {
    char *s = srv_json_dump_free(value);
    if (!s) return false;
    bool ok = append_text(&g->out, &g->out_len, &g->out_cap, "data: ", 6) &&
              append_text(&g->out, &g->out_len, &g->out_cap, s, strlen(s)) &&
              append_text(&g->out, &g->out_len, &g->out_cap, "\n\n", 2);
    free(s);
    return ok;
}

/* ---------------------------------------------------------------- lifetime */

static bool absorb(srv_gen *g, const srv_event_rec *rec);

static bool token_text_cb(void *ctx, int32_t token, char **text, size_t *len) {
    srv_server *s = ctx;
    return s->backend->detokenize(s->backend_ctx, &token, 1, text, len) == VKLLM_OK;
}

static void gen_free(srv_gen *g) {
    if (!g) return;
    size_t n = g->job ? g->job->n_choices : 0;
    for (size_t i = 0; g->choices && i < n; i++) {
        free(g->choices[i].text);
        free(g->choices[i].tokens);
        free(g->choices[i].logprobs);
        free(g->choices[i].error_message);
    }
    free(g->choices);
    for (size_t i = 0; g->echo && i < g->req.n_prompts; i++)
        free(g->echo[i]);
    free(g->echo);
    free(g->echo_len);
    free(g->out);
    srv_gen_request_free(&g->req);
    free(g);
}

static void record_metrics(srv_gen *g) {
    srv_metrics *m = &g->server->metrics;
    srv_job *job = g->job;
    for (size_t i = 0; i < job->n_subs; i++) {
        srv_job_sub *sub = &job->subs[i];
        if (!sub->submitted) continue;
        srv_metrics_finished(m, g->choices[sub->first_choice].finish);
        srv_metrics_observe(m, SRV_HIST_PROMPT_TOKENS, sub->prompt_tokens, 1);
        uint64_t generated = 0;
        for (uint32_t k = 0; k < sub->n_choices; k++)
            generated += g->choices[sub->first_choice + k].n_tokens;
        srv_metrics_observe(m, SRV_HIST_GENERATION_TOKENS, (double)generated, 1);
    }
    if (g->t_last_event > 0) {
        double e2e = g->t_last_event - job->t_submit;
        srv_metrics_observe(m, SRV_HIST_E2E, e2e, 1);
        if (g->t_first_token > 0)
            srv_metrics_observe(m, SRV_HIST_DECODE, g->t_last_event - g->t_first_token, 1);
    }
}

/* Drains the engine side, records metrics, leaves the server's list and frees. */
static void gen_finish(srv_gen *g) {
    srv_server *s = g->server;
    bool drained = true;
    if (g->job) {
        if (!srv_job_all_finished(g->job)) srv_job_cancel(g->job);
        drained = srv_job_drain(g->job);
        /* Events nobody read (the client left) still tell how each choice ended. */
        for (srv_event_rec *rec; (rec = srv_job_pop(g->job, 0)) != NULL;) {
            absorb(g, rec);
            srv_event_rec_free(rec);
        }
        record_metrics(g);
    }
    pthread_mutex_lock(&s->lock);
    for (srv_gen **p = &s->gens; *p; p = &(*p)->next)
        if (*p == g) {
            *p = g->next;
            break;
        }
    s->active--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    if (!drained) {
        /* A final event never came: a late callback could still touch the job, so
         * it is leaked on purpose rather than freed under the engine's feet. */
        fprintf(stderr, "vkllm serve: request %s did not finish after cancel; leaking it\n", g->id);
        return;
    }
    srv_job *job = g->job;
    gen_free(g); /* reads job->n_choices */
    srv_job_free(job);
}

/* ---------------------------------------------------------------- events */

/* Folds one event into its choice: text, tokens, logprobs, timing metrics. */
static bool absorb(srv_gen *g, const srv_event_rec *rec) {
    if (rec->choice >= g->job->n_choices) return true;
    srv_choice_state *c = &g->choices[rec->choice];
    uint32_t cols = g->job->logprob_cols;
    if (!append_text(&c->text, &c->text_len, &c->text_cap, rec->text ? rec->text : "",
                     rec->text_len))
        return false;
    if (rec->n_tokens) {
        size_t old_cap = c->tokens_cap;
        if (!grow((void **)&c->tokens, &c->tokens_cap, c->n_tokens + rec->n_tokens,
                  sizeof *c->tokens))
            return false;
        if (cols && (c->tokens_cap != old_cap || !c->logprobs)) {
            void *p = realloc(c->logprobs, c->tokens_cap * cols * sizeof *c->logprobs);
            if (!p) return false;
            c->logprobs = p;
        }
        memcpy(c->tokens + c->n_tokens, rec->tokens, rec->n_tokens * sizeof *c->tokens);
        if (cols && c->logprobs) {
            if (rec->logprobs)
                memcpy(c->logprobs + c->n_tokens * cols, rec->logprobs,
                       rec->n_tokens * cols * sizeof *c->logprobs);
            else
                memset(c->logprobs + c->n_tokens * cols, 0,
                       rec->n_tokens * cols * sizeof *c->logprobs);
        }
        c->n_tokens += rec->n_tokens;
        g->completion_tokens += rec->n_tokens;
        /* Latency metrics: time to the first token of the request, then the gap per
         * token within each choice. */
        srv_metrics *m = &g->server->metrics;
        if (g->t_first_token == 0) {
            g->t_first_token = rec->time;
            srv_metrics_observe(m, SRV_HIST_TTFT, rec->time - g->job->t_submit, 1);
        } else if (c->t_last_token > 0) {
            srv_metrics_observe(m, SRV_HIST_ITL,
                                (rec->time - c->t_last_token) / (double)rec->n_tokens,
                                rec->n_tokens);
        }
        c->t_last_token = rec->time;
    }
    g->t_last_event = rec->time;
    if (rec->finish != VKLLM_FINISH_NONE && !c->finished) {
        c->finished = true;
        c->finish = rec->finish;
        g->finished_seen++;
        if (rec->finish == VKLLM_FINISH_ERROR)
            c->error_message = strdup(rec->error_message ? rec->error_message : "engine error");
    }
    return true;
}

/* ---------------------------------------------------------------- submission */

static void fill_response_ctx(srv_gen *g) {
    srv_server *s = g->server;
    bool chat = g->req.endpoint == SRV_ENDPOINT_CHAT;
    srv_make_id(chat ? "chatcmpl-" : "cmpl-", g->id, sizeof g->id);
    g->rc = (srv_response_ctx){
        .endpoint = g->req.endpoint,
        .id = g->id,
        .created = (long long)time(NULL),
        .model = s->model_name,
        .want_logprobs = g->req.want_logprobs,
        .top_logprobs = g->req.top_logprobs,
        .logprob_cols = g->job ? g->job->logprob_cols : 0,
        .token_text = token_text_cb,
        .token_text_ctx = s,
    };
}

/* The echoed prompt of each completions prompt (text as given, or detokenized). */
static bool prepare_echo(srv_gen *g, srv_error *err) {
    srv_server *s = g->server;
    size_t n = g->req.n_prompts;
    g->echo = calloc(n, sizeof *g->echo);
    g->echo_len = calloc(n, sizeof *g->echo_len);
    if (!g->echo || !g->echo_len) return srv_error_set(err, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const srv_prompt *p = &g->req.prompts[i];
        if (p->text) {
            g->echo[i] = strndup(p->text, p->text_len);
            g->echo_len[i] = p->text_len;
        } else if (s->backend->detokenize(s->backend_ctx, p->tokens, p->n_tokens, &g->echo[i],
                                          &g->echo_len[i]) != VKLLM_OK) {
            return srv_error_set(err, 400, "prompt", NULL, "cannot detokenize the prompt: %s",
                                 s->backend->last_error(s->backend_ctx));
        }
        if (!g->echo[i]) return srv_error_set(err, 500, NULL, NULL, "out of memory");
    }
    return true;
}

static bool submit_error(srv_gen *g, vkllm_status st, srv_error *err) {
    srv_server *s = g->server;
    const char *msg = s->backend->last_error(s->backend_ctx);
    const char *param = g->req.endpoint == SRV_ENDPOINT_CHAT ? "messages" : "prompt";
    switch (st) {
    case VKLLM_ERR_BUSY:
        srv_metrics_busy(&s->metrics);
        return srv_error_set(err, 503, NULL, "server_busy",
                             "too many requests are waiting; retry later (%s)", msg);
    case VKLLM_ERR_TOO_LONG:
        return srv_error_set(err, 400, param, "context_length_exceeded",
                             "the request does not fit the context of %u tokens: %s", s->info.n_ctx,
                             msg);
    case VKLLM_ERR_INVALID_ARGUMENT:
    case VKLLM_ERR_FORMAT:
    case VKLLM_ERR_UNSUPPORTED:
        return srv_error_set(err, 400, NULL, NULL, "%s", msg);
    default:
        return srv_error_set(err, 500, NULL, NULL, "the engine refused the request: %s (%s)", msg,
                             vkllm_status_name(st));
    }
}

static bool submit_all(srv_gen *g, srv_error *err) {
    srv_server *s = g->server;
    srv_job *job = g->job;
    job->t_submit = srv_now();
    for (size_t i = 0; i < job->n_subs; i++) {
        vkllm_request_params p;
        memset(&p, 0, sizeof p);
        if (s->backend->params_default) s->backend->params_default(&p);
        if (g->req.endpoint == SRV_ENDPOINT_CHAT) {
            p.messages = g->req.messages;
            p.n_messages = g->req.n_messages;
        } else if (g->req.prompts[i].text) {
            p.prompt = g->req.prompts[i].text;
        } else {
            p.prompt_tokens = g->req.prompts[i].tokens;
            p.n_prompt_tokens = g->req.prompts[i].n_tokens;
        }
        p.add_special = true;
        p.sampling = g->req.sampling;
        p.on_event = srv_job_on_event;
        p.user = &job->subs[i];
        vkllm_status st = s->backend->submit(s->backend_ctx, &p, &job->subs[i].id);
        if (st != VKLLM_OK) {
            submit_error(g, st, err);
            return false;
        }
        pthread_mutex_lock(&job->lock);
        job->subs[i].submitted = true;
        pthread_mutex_unlock(&job->lock);
    }
    return true;
}

/* ---------------------------------------------------------------- streaming */

static void usage_of(srv_gen *g, srv_usage *u) {
    memset(u, 0, sizeof *u);
    for (size_t i = 0; i < g->job->n_subs; i++) {
        u->prompt_tokens += g->job->subs[i].prompt_tokens;
        u->cached_tokens += g->job->subs[i].cached_prompt_tokens;
    }
    u->completion_tokens = g->completion_tokens;
}

/* The chunk(s) for one event: the choice's opening chunk first (chat role, or the
 * echoed prompt), then the new text with its tokens and finish reason. */
static bool stream_event(srv_gen *g, const srv_event_rec *rec) {
    if (!absorb(g, rec)) return false;
    if (rec->choice >= g->job->n_choices) return true;
    srv_choice_state *c = &g->choices[rec->choice];
    if (!c->opened) {
        c->opened = true;
        if (g->req.endpoint == SRV_ENDPOINT_CHAT) {
            if (!emit_json(g, srv_build_chunk(&g->rc, rec->choice, "", 0, true, NULL, 0, NULL, 0,
                                              VKLLM_FINISH_NONE, g->usage_null)))
                return false;
        } else if (g->echo) {
            size_t p = rec->choice / g->req.sampling.n;
            if (!emit_json(g,
                           srv_build_chunk(&g->rc, rec->choice, g->echo[p], g->echo_len[p], false,
                                           NULL, 0, NULL, 0, VKLLM_FINISH_NONE, g->usage_null)))
                return false;
            c->stream_offset = g->echo_len[p];
        }
    }
    if (rec->text_len == 0 && rec->n_tokens == 0 && rec->finish == VKLLM_FINISH_NONE) return true;
    if (!emit_json(g, srv_build_chunk(&g->rc, rec->choice, rec->text, rec->text_len, false,
                                      rec->tokens, rec->n_tokens, rec->logprobs, c->stream_offset,
                                      rec->finish, g->usage_null)))
        return false;
    c->stream_offset += rec->text_len;
    if (rec->finish == VKLLM_FINISH_ERROR) {
        srv_error err;
        srv_error_set(&err, 500, NULL, NULL, "choice %u failed: %s", rec->choice,
                      rec->error_message ? rec->error_message : "engine error");
        if (!emit_json(g, srv_error_json(&err))) return false;
    }
    return true;
}

/* Called by MHD on the connection thread whenever it can send more. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    srv_gen *g = cls;
    for (;;) {
        if (g->out_pos < g->out_len) {
            size_t n = g->out_len - g->out_pos < max ? g->out_len - g->out_pos : max;
            memcpy(buf, g->out + g->out_pos, n);
            g->out_pos += n;
            return (ssize_t)n;
        }
        g->out_len = g->out_pos = 0;
        if (g->done_sent) return MHD_CONTENT_READER_END_OF_STREAM;
        if (g->finished_seen >= g->job->n_choices) {
            srv_job_drain(g->job); /* collects prompt token counts for usage */
            if (g->req.include_usage) {
                srv_usage u;
                usage_of(g, &u);
                if (!emit_json(g, srv_build_usage_chunk(&g->rc, &u)))
                    return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            if (!append_text(&g->out, &g->out_len, &g->out_cap, "data: [DONE]\n\n", 14))
                return MHD_CONTENT_READER_END_WITH_ERROR;
            g->done_sent = true;
            continue;
        }
        /* Wait for the next event; batch whatever else is already queued. */
        srv_event_rec *rec = srv_job_pop(g->job, SRV_POLL_MS);
        while (rec) {
            bool ok = stream_event(g, rec);
            srv_event_rec_free(rec);
            if (!ok) return MHD_CONTENT_READER_END_WITH_ERROR;
            rec = g->finished_seen < g->job->n_choices ? srv_job_pop(g->job, 0) : NULL;
        }
        if (g->out_len == 0 && srv_client_gone(g->conn)) {
            g->cancelled = true;
            srv_job_cancel(g->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls) {
    gen_finish(cls);
}

/* ---------------------------------------------------------------- blocking answer */

static enum MHD_Result answer_whole(srv_gen *g) {
    srv_server *s = g->server;
    struct MHD_Connection *conn = g->conn;
    while (g->finished_seen < g->job->n_choices) {
        srv_event_rec *rec = srv_job_pop(g->job, SRV_POLL_MS);
        if (rec) {
            bool ok = absorb(g, rec);
            srv_event_rec_free(rec);
            if (!ok) break;
            continue;
        }
        if (!g->cancelled && srv_client_gone(conn)) {
            g->cancelled = true;
            srv_job_cancel(g->job);
        }
    }
    srv_job_drain(g->job);
    srv_error err;
    bool failed = g->finished_seen < g->job->n_choices;
    if (failed) srv_error_set(&err, 500, NULL, NULL, "out of memory while collecting the answer");
    for (uint32_t i = 0; !failed && i < g->job->n_choices; i++)
        if (g->choices[i].finish == VKLLM_FINISH_ERROR) {
            failed = true;
            srv_error_set(&err, 500, NULL, NULL, "choice %u failed: %s", i,
                          g->choices[i].error_message);
        }
    enum MHD_Result r;
    if (failed) {
        r = srv_respond_error(s, conn, &err);
    } else {
        uint32_t n = g->job->n_choices;
        srv_choice_result *results = calloc(n, sizeof *results);
        char **joined = calloc(n, sizeof *joined);
        json_t *body = NULL;
        if (results && joined) {
            bool ok = true;
            for (uint32_t i = 0; i < n; i++) {
                srv_choice_state *c = &g->choices[i];
                srv_choice_result *res = &results[i];
                res->text = c->text ? c->text : "";
                res->text_len = c->text_len;
                if (g->echo) { /* the echoed prompt goes first */
                    size_t p = i / g->req.sampling.n, len = 0, cap = 0;
                    ok = ok && append_text(&joined[i], &len, &cap, g->echo[p], g->echo_len[p]) &&
                         append_text(&joined[i], &len, &cap, res->text, res->text_len);
                    res->text = joined[i];
                    res->text_len = len;
                    res->echo_len = g->echo_len[p];
                }
                res->tokens = c->tokens;
                res->n_tokens = c->n_tokens;
                res->logprobs = c->logprobs;
                res->finish = c->finish;
            }
            srv_usage u;
            usage_of(g, &u);
            if (ok) body = srv_build_response(&g->rc, results, n, &u);
        }
        for (uint32_t i = 0; joined && i < n; i++)
            free(joined[i]);
        free(joined);
        free(results);
        r = srv_respond_json(s, conn, 200, body);
    }
    gen_finish(g);
    return r;
}

/* ---------------------------------------------------------------- entry */

enum MHD_Result srv_handle_generation(srv_server *s, struct MHD_Connection *conn,
                                      srv_endpoint endpoint, const char *body, size_t len) {
    srv_error err;
    srv_gen *g = calloc(1, sizeof *g);
    if (!g) {
        srv_error_set(&err, 500, NULL, NULL, "out of memory");
        return srv_respond_error(s, conn, &err);
    }
    g->server = s;
    g->conn = conn;
    if (!srv_parse_generation(endpoint, body, len, &g->req, &err)) goto reject;
    if (g->req.model && strcmp(g->req.model, s->model_name)) {
        srv_error_set(&err, 404, "model", "model_not_found",
                      "The model '%s' does not exist; this server serves '%s'", g->req.model,
                      s->model_name);
        goto reject;
    }
    for (size_t i = 0; i < g->req.n_prompts; i++)
        if (!srv_check_token_ids(g->req.prompts[i].tokens, g->req.prompts[i].n_tokens,
                                 s->info.n_vocab, "prompt", &err))
            goto reject;
    if (!srv_check_token_ids(g->req.sampling.stop_token_ids, g->req.sampling.n_stop_token_ids,
                             s->info.n_vocab, "stop_token_ids", &err))
        goto reject;
    /* Chat without a limit may use the rest of the context, as in vLLM; the engine
     * stops at the context limit with finish_reason "length". */
    if (endpoint == SRV_ENDPOINT_CHAT && !g->req.max_tokens_given)
        g->req.sampling.max_tokens = s->info.n_ctx ? s->info.n_ctx : 256;
    if (g->req.echo && !prepare_echo(g, &err)) goto reject;
    if (s->config.max_waiting) {
        vkllm_stats st;
        if (s->backend->get_stats(s->backend_ctx, &st) == VKLLM_OK &&
            st.requests_waiting >= s->config.max_waiting) {
            srv_metrics_busy(&s->metrics);
            srv_error_set(&err, 503, NULL, "server_busy",
                          "too many requests are waiting (%u, limit %u); retry later",
                          st.requests_waiting, s->config.max_waiting);
            goto reject;
        }
    }
    size_t n_subs = endpoint == SRV_ENDPOINT_CHAT ? 1 : g->req.n_prompts;
    g->job = srv_job_create(s->backend, s->backend_ctx, n_subs, g->req.sampling.n,
                            g->req.sampling.logprobs);
    g->choices = g->job ? calloc(g->job->n_choices, sizeof *g->choices) : NULL;
    if (!g->choices) {
        srv_error_set(&err, 500, NULL, NULL, "out of memory");
        goto reject;
    }
    fill_response_ctx(g);
    g->usage_null = g->req.include_usage;

    /* Register before submitting so that shutdown sees every live request. */
    pthread_mutex_lock(&s->lock);
    if (atomic_load(&s->shutting_down)) {
        pthread_mutex_unlock(&s->lock);
        srv_error_set(&err, 503, NULL, "shutting_down", "the server is shutting down");
        goto reject;
    }
    s->active++;
    g->next = s->gens;
    s->gens = g;
    pthread_mutex_unlock(&s->lock);

    if (!submit_all(g, &err)) {
        enum MHD_Result r = srv_respond_error(s, conn, &err);
        gen_finish(g); /* cancels what was submitted */
        return r;
    }
    if (!g->req.stream) return answer_whole(g);

    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, g, stream_free);
    if (!resp) {
        srv_error_set(&err, 500, NULL, NULL, "cannot create the stream response");
        enum MHD_Result r = srv_respond_error(s, conn, &err);
        gen_finish(g);
        return r;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    MHD_add_response_header(resp, "X-Request-Id", g->id);
    srv_metrics_http(&s->metrics, 200);
    enum MHD_Result r = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp); /* MHD keeps its reference; stream_free runs at the end */
    return r;

reject:
    if (g->job) srv_job_free(g->job);
    g->job = NULL;
    gen_free(g);
    return srv_respond_error(s, conn, &err);
}

uint32_t srv_cancel_all(srv_server *s) {
    uint32_t n = 0;
    pthread_mutex_lock(&s->lock);
    for (srv_gen *g = s->gens; g; g = g->next) {
        if (g->job) srv_job_cancel(g->job);
        n++;
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}
