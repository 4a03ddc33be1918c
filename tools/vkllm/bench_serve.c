/* bench_serve.c: `vkllm bench serve`: a load generator for any OpenAI-compatible
 * server (vkllm serve, llama.cpp's llama-server, vLLM): streaming POST /v1/completions
 * with Poisson arrivals (seeded) or all at once (--rate inf), optionally capped at
 * --concurrency requests in flight, measuring per request
 *   TTFT  send -> first streamed event carrying text,
 *   ITL   gaps between consecutive text events,
 *   TPOT  (E2E - TTFT) / (output tokens - 1),
 *   E2E   send -> end of the stream,
 * and request throughput, output tokens/s and goodput (requests/s meeting --slo-ttft-ms
 * and --slo-tpot-ms). Several rates (--rate 1,2,4) run one after the other and give the
 * latency-against-rate plot (--png).
 *
 * HTTP: a minimal HTTP/1.1 client over POSIX sockets (one connection per request,
 * "Connection: close"; chunked or identity bodies; Server-Sent Events "data:" lines,
 * "[DONE]" ends). Only plain http:// URLs: the servers benchmarked are local, and this
 * avoids a libcurl dependency. Output tokens are counted as streamed chunks carrying a
 * choice's text (these servers stream one chunk per token) unless the server reports
 * usage.completion_tokens in the stream (--include-usage asks for it), which then wins.
 *
 * Workload: lengths from bench_workload_lengths (ShareGPT-like, docs/benchmarks.md);
 * the prompt is that many random common English words (about one token each with
 * Llama-3 / GPT-style BPE vocabularies), max_tokens = the output length, ignore_eos and
 * temperature 0, so each request generates exactly its output length on servers that
 * honour ignore_eos (vLLM, llama-server, vkllm). */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define SV_MAX_RATES 16

static const char *const sv_words[] = {
    "the",   "of",    "and",   "to",     "in",   "is",   "you",   "that",   "it",    "he",
    "was",   "for",   "on",    "are",    "as",   "with", "his",   "they",   "at",    "be",
    "this",  "have",  "from",  "or",     "one",  "had",  "by",    "word",   "but",   "not",
    "what",  "all",   "were",  "we",     "when", "your", "can",   "said",   "there", "use",
    "an",    "each",  "which", "she",    "do",   "how",  "their", "if",     "will",  "up",
    "other", "about", "out",   "many",   "then", "them", "these", "so",     "some",  "her",
    "would", "make",  "like",  "him",    "into", "time", "has",   "look",   "two",   "more",
    "write", "go",    "see",   "number", "no",   "way",  "could", "people", "my",    "than",
    "first", "water", "been",  "call",   "who",  "oil",  "its",   "now",    "find",  "long",
    "down",  "day",   "did",   "get",    "come", "made", "may",   "part",   "over",  "new"};
#define SV_N_WORDS (sizeof sv_words / sizeof sv_words[0])

typedef struct sv_url {
    char host[256], port[16], path[512];
} sv_url;

typedef struct sv_request {
    /* input */
    uint32_t prompt_words, output_len;
    char *body;
    double arrival; /* seconds after the run's start */
    /* measured */
    double t_send, t_first, t_end;
    double *event_times; /* text events */
    uint32_t n_events, cap_events;
    long usage_completion, usage_prompt; /* -1: not reported */
    int http_status;
    bool ok;
    char error[160];
} sv_request;

typedef struct sv_run {
    const sv_url *url;
    sv_request *reqs;
    uint32_t n;
    double t0;
    double timeout_s;
    sem_t slots; /* concurrency */
    bool limited;
} sv_run;

typedef struct sv_worker {
    sv_run *run;
    sv_request *req;
    pthread_t thread;
} sv_worker;

static bool parse_url(const char *s, sv_url *u) {
    if (strncmp(s, "http://", 7)) return false;
    s += 7;
    const char *slash = strchr(s, '/');
    size_t hostlen = slash ? (size_t)(slash - s) : strlen(s);
    char hp[sizeof u->host];
    if (hostlen == 0 || hostlen >= sizeof hp) return false;
    memcpy(hp, s, hostlen);
    hp[hostlen] = 0;
    char *colon = strrchr(hp, ':');
    if (colon) {
        *colon = 0;
        snprintf(u->port, sizeof u->port, "%s", colon + 1);
    } else {
        snprintf(u->port, sizeof u->port, "80");
    }
    snprintf(u->host, sizeof u->host, "%s", hp);
    /* A base path ("/v1" or "") is kept; the endpoint is appended by the caller. */
    snprintf(u->path, sizeof u->path, "%s", slash ? slash : "");
    size_t pl = strlen(u->path);
    while (pl && u->path[pl - 1] == '/')
        u->path[--pl] = 0;
    return u->host[0] != 0;
}

static void sv_fail(sv_request *q, const char *fmt, const char *arg) {
    if (!q->error[0]) snprintf(q->error, sizeof q->error, fmt, arg);
    q->ok = false;
}

static void sv_event(sv_request *q, double t) {
    if (q->n_events == q->cap_events) {
        uint32_t cap = q->cap_events ? q->cap_events * 2 : 256;
        double *e = realloc(q->event_times, cap * sizeof *e);
        if (!e) return;
        q->event_times = e, q->cap_events = cap;
    }
    q->event_times[q->n_events++] = t;
    if (q->n_events == 1) q->t_first = t;
}

/* One SSE "data:" payload. Returns true at the end of the stream. */
static bool sv_payload(sv_request *q, const char *data, double t) {
    while (*data == ' ')
        data++;
    if (!strncmp(data, "[DONE]", 6)) return true;
    if (strstr(data, "\"error\"")) {
        sv_fail(q, "server error: %.120s", data);
        return true;
    }
    /* A token event is any chunk with a choice's text (completions) or content (chat),
     * empty text included: servers stream one chunk per token and a token may end
     * mid-UTF-8 (vLLM's benchmark counts chunks the same way). */
    if (strstr(data, "\"text\":") || strstr(data, "\"content\":")) sv_event(q, t);
    const char *u = strstr(data, "\"completion_tokens\":");
    if (u) q->usage_completion = strtol(u + 20, NULL, 10);
    u = strstr(data, "\"prompt_tokens\":");
    if (u) q->usage_prompt = strtol(u + 16, NULL, 10);
    return false;
}

/* Streaming parsers: HTTP chunked framing, then SSE lines. */
typedef struct sv_stream {
    bool chunked;
    long chunk_left; /* bytes left of the current chunk; -1: reading a size line */
    char size_line[32];
    size_t size_len;
    bool crlf_pending; /* the CRLF after a chunk's data */
    char *line;
    size_t line_len, line_cap;
    bool done;
} sv_stream;

static void sv_line_char(sv_stream *s, sv_request *q, char c, double t) {
    if (c == '\n') {
        if (s->line_len && s->line[s->line_len - 1] == '\r') s->line_len--;
        if (s->line) s->line[s->line_len] = 0;
        if (s->line_len >= 5 && !strncmp(s->line, "data:", 5))
            if (sv_payload(q, s->line + 5, t)) s->done = true;
        s->line_len = 0;
        return;
    }
    if (s->line_len + 2 > s->line_cap) {
        size_t cap = s->line_cap ? s->line_cap * 2 : 4096;
        char *l = realloc(s->line, cap);
        if (!l) return;
        s->line = l, s->line_cap = cap;
    }
    s->line[s->line_len++] = c;
}

static void sv_body(sv_stream *s, sv_request *q, const char *buf, size_t n, double t) {
    for (size_t i = 0; i < n && !s->done; i++) {
        char c = buf[i];
        if (!s->chunked) {
            sv_line_char(s, q, c, t);
            continue;
        }
        if (s->chunk_left > 0) {
            sv_line_char(s, q, c, t);
            if (--s->chunk_left == 0) s->crlf_pending = true;
            continue;
        }
        if (s->crlf_pending) { /* skip "\r\n" after data */
            if (c == '\n') s->crlf_pending = false;
            continue;
        }
        if (c == '\n') {
            s->size_line[s->size_len] = 0;
            long size = strtol(s->size_line, NULL, 16);
            s->size_len = 0;
            if (size == 0) {
                sv_line_char(s, q, '\n', t); /* flush a last line without newline */
                s->done = true;
            }
            s->chunk_left = size;
        } else if (c != '\r' && s->size_len + 1 < sizeof s->size_line) {
            s->size_line[s->size_len++] = c;
        }
    }
}

static void *sv_worker_main(void *arg) {
    sv_worker *w = arg;
    sv_run *run = w->run;
    sv_request *q = w->req;
    q->usage_completion = q->usage_prompt = -1;
    q->ok = true;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int fd = -1;
    int gai = getaddrinfo(run->url->host, run->url->port, &hints, &ai);
    q->t_send = bench_now() - run->t0;
    if (gai) {
        sv_fail(q, "cannot resolve host: %s", gai_strerror(gai));
        goto out;
    }
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        sv_fail(q, "cannot connect: %s", strerror(errno));
        goto out;
    }
    struct timeval tv = {.tv_sec = (time_t)run->timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t body_len = strlen(q->body);
    char head[1024];
    int hl = snprintf(head, sizeof head,
                      "POST %s/v1/completions HTTP/1.1\r\nHost: %s:%s\r\n"
                      "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      run->url->path, run->url->host, run->url->port, body_len);
    if (send(fd, head, (size_t)hl, MSG_NOSIGNAL) != hl ||
        send(fd, q->body, body_len, MSG_NOSIGNAL) != (ssize_t)body_len) {
        sv_fail(q, "send failed: %s", strerror(errno));
        goto out;
    }
    /* Headers. */
    char buf[16384];
    size_t have = 0;
    char *body_start = NULL;
    while (!body_start) {
        ssize_t r = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (r <= 0) {
            sv_fail(q, "connection closed before the response headers%s", "");
            goto out;
        }
        have += (size_t)r;
        buf[have] = 0;
        body_start = strstr(buf, "\r\n\r\n");
        if (!body_start && have >= sizeof buf - 1) {
            sv_fail(q, "response headers too long%s", "");
            goto out;
        }
    }
    body_start += 4;
    int major, minor;
    if (sscanf(buf, "HTTP/%d.%d %d", &major, &minor, &q->http_status) != 3) {
        sv_fail(q, "bad status line%s", "");
        goto out;
    }
    sv_stream s = {.chunk_left = 0};
    for (char *h = strstr(buf, "\r\n"); h && h < body_start; h = strstr(h + 2, "\r\n"))
        if (!strncasecmp(h + 2, "transfer-encoding:", 18) && strstr(h + 2, "chunked") &&
            strstr(h + 2, "chunked") < body_start)
            s.chunked = true;
    double t = bench_now() - run->t0;
    size_t body_have = have - (size_t)(body_start - buf);
    if (q->http_status != 200) {
        char msg[128];
        snprintf(msg, sizeof msg, "%d: %.100s", q->http_status, body_start);
        sv_fail(q, "HTTP %s", msg);
        goto out;
    }
    sv_body(&s, q, body_start, body_have, t);
    while (!s.done) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        t = bench_now() - run->t0;
        if (r == 0) break;
        if (r < 0) {
            sv_fail(q, "receive failed: %s", strerror(errno));
            break;
        }
        sv_body(&s, q, buf, (size_t)r, t);
    }
    free(s.line);
    if (q->ok && q->n_events == 0) sv_fail(q, "stream carried no text%s", "");
out:
    q->t_end = bench_now() - run->t0;
    if (fd >= 0) close(fd);
    if (run->limited) sem_post(&run->slots);
    return NULL;
}

/* Builds the JSON body of request q. */
static bool sv_make_body(sv_request *q, bench_rng *rng, const char *model, bool usage) {
    size_t cap = (size_t)q->prompt_words * 8 + 512 + (model ? strlen(model) : 0);
    char *b = malloc(cap);
    if (!b) return false;
    size_t n = model ? (size_t)snprintf(b, cap, "{\"model\":\"%s\",\"prompt\":\"", model)
                     : (size_t)snprintf(b, cap, "{\"prompt\":\"");
    for (uint32_t i = 0; i < q->prompt_words; i++) {
        const char *w = sv_words[bench_rng_next(rng) % SV_N_WORDS];
        n += (size_t)snprintf(b + n, cap - n, "%s%s", i ? " " : "", w);
    }
    snprintf(b + n, cap - n,
             "\",\"max_tokens\":%u,\"ignore_eos\":true,\"temperature\":0,"
             "\"stream\":true%s}",
             q->output_len, usage ? ",\"stream_options\":{\"include_usage\":true}" : "");
    q->body = b;
    return true;
}

typedef struct sv_stats {
    double rate;
    uint32_t completed, failed, good;
    double duration_s, req_per_s, out_tps, total_tps, goodput;
    bench_summary ttft, tpot, itl, e2e; /* ms */
} sv_stats;

static void sv_json_summary(bench_json *j, const char *key, const bench_summary *s) {
    bench_json_object(j, key);
    bench_json_num(j, "mean", s->mean);
    bench_json_num(j, "p50", s->p50);
    bench_json_num(j, "p90", s->p90);
    bench_json_num(j, "p99", s->p99);
    bench_json_end_object(j);
}

static bool sv_run_rate(const sv_url *url, const char *model, uint32_t n, double rate,
                        uint32_t concurrency, uint64_t seed, double len_scale, bool usage,
                        double slo_ttft_ms, double slo_tpot_ms, double timeout_s, sv_stats *st,
                        char *first_error, size_t err_cap) {
    sv_request *reqs = calloc(n, sizeof *reqs);
    sv_worker *workers = calloc(n, sizeof *workers);
    uint32_t *pl = malloc((size_t)n * 4), *ol = malloc((size_t)n * 4);
    bool ok = reqs && workers && pl && ol;
    if (ok) bench_workload_lengths(n, seed, len_scale, pl, ol);
    bench_rng rng = {seed ^ 0x5EEDull};
    double t = 0;
    for (uint32_t i = 0; ok && i < n; i++) {
        reqs[i].prompt_words = pl[i];
        reqs[i].output_len = ol[i];
        if (isfinite(rate)) t += bench_rng_exponential(&rng, rate);
        reqs[i].arrival = t;
        ok = sv_make_body(&reqs[i], &rng, model, usage);
    }
    sv_run run = {
        .url = url, .reqs = reqs, .n = n, .timeout_s = timeout_s, .limited = concurrency > 0};
    if (ok && run.limited) sem_init(&run.slots, 0, concurrency);
    uint32_t started = 0;
    run.t0 = bench_now();
    for (uint32_t i = 0; ok && i < n; i++) {
        double wait = reqs[i].arrival - (bench_now() - run.t0);
        if (wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - floor(wait)) * 1e9)};
            nanosleep(&ts, NULL);
        }
        if (run.limited) sem_wait(&run.slots);
        workers[i] = (sv_worker){.run = &run, .req = &reqs[i]};
        if (pthread_create(&workers[i].thread, NULL, sv_worker_main, &workers[i])) {
            fprintf(stderr, "vkllm bench serve: cannot start a thread\n");
            ok = false;
            break;
        }
        started++;
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(workers[i].thread, NULL);
    double end = 0, start = INFINITY;
    memset(st, 0, sizeof *st);
    st->rate = rate;
    double *ttft = malloc((n + 1) * sizeof(double)), *tpot = malloc((n + 1) * sizeof(double));
    double *e2e = malloc((n + 1) * sizeof(double));
    size_t n_itl = 0, n_tpot = 0;
    for (uint32_t i = 0; i < started; i++)
        n_itl += reqs[i].n_events;
    double *itl = malloc((n_itl + 1) * sizeof(double));
    ok = ok && ttft && tpot && e2e && itl;
    n_itl = 0;
    double out_tokens = 0, prompt_tokens = 0;
    for (uint32_t i = 0; ok && i < started; i++) {
        sv_request *q = &reqs[i];
        if (q->t_send < start) start = q->t_send;
        if (q->t_end > end) end = q->t_end;
        if (!q->ok) {
            st->failed++;
            if (first_error && !first_error[0]) snprintf(first_error, err_cap, "%s", q->error);
            continue;
        }
        double n_out = q->usage_completion >= 0 ? (double)q->usage_completion : q->n_events;
        out_tokens += n_out;
        prompt_tokens += q->usage_prompt >= 0 ? (double)q->usage_prompt : q->prompt_words;
        double f = (q->t_first - q->t_send) * 1e3, e = (q->t_end - q->t_send) * 1e3;
        ttft[st->completed] = f;
        e2e[st->completed] = e;
        double tp = n_out > 1 ? (e - f) / (n_out - 1) : NAN;
        if (n_out > 1) tpot[n_tpot++] = tp;
        for (uint32_t k = 1; k < q->n_events; k++)
            itl[n_itl++] = (q->event_times[k] - q->event_times[k - 1]) * 1e3;
        bool good =
            (slo_ttft_ms <= 0 || f <= slo_ttft_ms) && (slo_tpot_ms <= 0 || !(tp > slo_tpot_ms));
        st->good += good;
        st->completed++;
    }
    if (ok) {
        st->duration_s = end > start ? end - start : NAN;
        st->req_per_s = st->completed / st->duration_s;
        st->out_tps = out_tokens / st->duration_s;
        st->total_tps = (out_tokens + prompt_tokens) / st->duration_s;
        st->goodput = st->good / st->duration_s;
        st->ttft = bench_summarize(ttft, st->completed);
        st->tpot = bench_summarize(tpot, n_tpot);
        st->itl = bench_summarize(itl, n_itl);
        st->e2e = bench_summarize(e2e, st->completed);
    }
    free(ttft), free(tpot), free(e2e), free(itl);
    if (run.limited && reqs && workers) sem_destroy(&run.slots);
    for (uint32_t i = 0; reqs && i < n; i++)
        free(reqs[i].body), free(reqs[i].event_times);
    free(reqs), free(workers), free(pl), free(ol);
    return ok;
}

static void usage(FILE *out) {
    fprintf(out, "usage: vkllm bench serve [options]\n"
                 "  --url URL           server base URL (default http://127.0.0.1:8000)\n"
                 "  --model NAME        \"model\" field of the requests (default: none sent; the\n"
                 "                      server's only model; llama-server ignores it)\n"
                 "  --requests N        requests per rate (default 200)\n"
                 "  --rate LIST         requests/s, Poisson arrivals; 'inf' sends all at once\n"
                 "                      (default inf); several values run one after the other\n"
                 "  --concurrency C     at most C requests in flight (default 0: no limit)\n"
                 "  --seed S            workload and arrival seed (default 0)\n"
                 "  --len-scale F       multiply prompt/output lengths and limits (default 1)\n"
                 "  --slo-ttft-ms MS    goodput: TTFT objective (default none)\n"
                 "  --slo-tpot-ms MS    goodput: TPOT objective (default none)\n"
                 "  --include-usage     ask for usage in the stream (stream_options)\n"
                 "  --timeout S         per-request receive timeout in seconds (default 600)\n"
                 "  --json FILE         write the results as JSON\n"
                 "  --png FILE          plot latency against request rate\n");
}

int bench_serve(int argc, char **argv) {
    const char *url_arg = "http://127.0.0.1:8000", *model = NULL, *json_path = NULL,
               *png_path = NULL;
    uint32_t n = 200, concurrency = 0;
    uint64_t seed = 0;
    double rates[SV_MAX_RATES] = {INFINITY}, len_scale = 1, slo_ttft = 0, slo_tpot = 0,
           timeout_s = 600;
    size_t n_rates = 1;
    bool usage_flag = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool ok = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--include-usage")) {
            usage_flag = true;
        } else if (i + 1 >= argc) {
            fprintf(stderr, "vkllm bench serve: unknown option or missing value '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (!strcmp(a, "--url")) {
            url_arg = argv[++i];
        } else if (!strcmp(a, "--model")) {
            model = argv[++i];
        } else if (!strcmp(a, "--json")) {
            json_path = argv[++i];
        } else if (!strcmp(a, "--png")) {
            png_path = argv[++i];
        } else if (!strcmp(a, "--requests")) {
            ok = bench_parse_u32("serve", a, argv[++i], &n) && n > 0;
        } else if (!strcmp(a, "--concurrency")) {
            ok = bench_parse_u32("serve", a, argv[++i], &concurrency);
        } else if (!strcmp(a, "--seed")) {
            ok = bench_parse_u64("serve", a, argv[++i], &seed);
        } else if (!strcmp(a, "--rate")) {
            ok = bench_parse_f64_list("serve", a, argv[++i], rates, SV_MAX_RATES, &n_rates);
            for (size_t r = 0; ok && r < n_rates; r++)
                ok = rates[r] > 0;
        } else if (!strcmp(a, "--len-scale")) {
            ok = bench_parse_f64("serve", a, argv[++i], &len_scale) && len_scale > 0 &&
                 len_scale <= 4;
        } else if (!strcmp(a, "--slo-ttft-ms")) {
            ok = bench_parse_f64("serve", a, argv[++i], &slo_ttft);
        } else if (!strcmp(a, "--slo-tpot-ms")) {
            ok = bench_parse_f64("serve", a, argv[++i], &slo_tpot);
        } else if (!strcmp(a, "--timeout")) {
            ok = bench_parse_f64("serve", a, argv[++i], &timeout_s) && timeout_s >= 1;
        } else {
            fprintf(stderr, "vkllm bench serve: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "vkllm bench serve: bad value for %s\n", a);
            return 2;
        }
    }
    sv_url url;
    if (!parse_url(url_arg, &url) || (model && (strchr(model, '"') || strchr(model, '\\')))) {
        fprintf(stderr,
                "vkllm bench serve: need an http://host[:port][/base] URL and a plain "
                "model name (got '%s', '%s')\n",
                url_arg, model ? model : "");
        return 2;
    }
    bench_json json;
    if (!bench_json_open(&json, json_path)) return 1;
    bench_json_str(&json, "bench", "serve");
    bench_json_str(&json, "url", url_arg);
    bench_json_int(&json, "requests", n);
    bench_json_int(&json, "concurrency", concurrency);
    bench_json_int(&json, "seed", (long long)seed);
    bench_json_num(&json, "len_scale", len_scale);
    bench_json_num(&json, "slo_ttft_ms", slo_ttft);
    bench_json_num(&json, "slo_tpot_ms", slo_tpot);
    bench_json_array(&json, "runs");
    printf("%-7s %5s %5s %8s %9s %8s | %-23s | %-23s | %-17s | %8s\n", "rate", "ok", "fail",
           "req/s", "out tok/s", "goodput", "TTFT ms mean/p50/p99", "TPOT ms mean/p50/p99",
           "ITL ms mean/p99", "E2E ms");
    bool ok = true;
    int failed_total = 0;
    sv_stats stats[SV_MAX_RATES];
    for (size_t r = 0; ok && r < n_rates; r++) {
        char first_error[200] = "";
        sv_stats *st = &stats[r];
        ok = sv_run_rate(&url, model, n, rates[r], concurrency, seed + r, len_scale, usage_flag,
                         slo_ttft, slo_tpot, timeout_s, st, first_error, sizeof first_error);
        if (!ok) break;
        printf("%-7.4g %5u %5u %8.2f %9.1f %8.2f | %7.1f %7.1f %7.1f | %7.2f %7.2f %7.2f | "
               "%8.2f %8.2f | %8.1f\n",
               rates[r], st->completed, st->failed, st->req_per_s, st->out_tps, st->goodput,
               st->ttft.mean, st->ttft.p50, st->ttft.p99, st->tpot.mean, st->tpot.p50, st->tpot.p99,
               st->itl.mean, st->itl.p99, st->e2e.mean);
        if (first_error[0]) fprintf(stderr, "vkllm bench serve: first failure: %s\n", first_error);
        failed_total += (int)st->failed;
        bench_json_object(&json, NULL);
        if (isfinite(rates[r]))
            bench_json_num(&json, "rate", rates[r]);
        else
            bench_json_str(&json, "rate", "inf");
        bench_json_int(&json, "completed", st->completed);
        bench_json_int(&json, "failed", st->failed);
        bench_json_num(&json, "duration_s", st->duration_s);
        bench_json_num(&json, "requests_per_s", st->req_per_s);
        bench_json_num(&json, "output_tokens_per_s", st->out_tps);
        bench_json_num(&json, "total_tokens_per_s", st->total_tps);
        bench_json_num(&json, "goodput", st->goodput);
        sv_json_summary(&json, "ttft_ms", &st->ttft);
        sv_json_summary(&json, "tpot_ms", &st->tpot);
        sv_json_summary(&json, "itl_ms", &st->itl);
        sv_json_summary(&json, "e2e_ms", &st->e2e);
        if (first_error[0]) bench_json_str(&json, "first_error", first_error);
        bench_json_end_object(&json);
    }
    bench_json_end_array(&json);
    if (ok && png_path) {
        double x[SV_MAX_RATES], y[4][SV_MAX_RATES];
        size_t m = 0;
        for (size_t r = 0; r < n_rates; r++) {
            if (!isfinite(rates[r])) continue; /* no x position for "all at once" */
            x[m] = rates[r];
            y[0][m] = stats[r].ttft.p50, y[1][m] = stats[r].ttft.p99;
            y[2][m] = stats[r].tpot.p50, y[3][m] = stats[r].itl.p99;
            m++;
        }
        bench_plot plot = {.title = "Latency against request rate",
                           .x_label = "request rate (requests/s, Poisson)",
                           .y_label = "milliseconds",
                           .n_series = 4,
                           .series = {{"TTFT p50", x, y[0], m},
                                      {"TTFT p99", x, y[1], m},
                                      {"TPOT p50", x, y[2], m},
                                      {"ITL p99", x, y[3], m}}};
        ok = bench_plot_png(&plot, png_path, 0, 0);
    }
    if (!bench_json_close(&json)) ok = false;
    return ok && failed_total == 0 ? 0 : 1;
}
