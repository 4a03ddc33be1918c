/* bench_throughput.c: `vkllm bench throughput`: an offline run of N requests (all
 * arriving at t = 0, ignore_eos: each generates exactly its output length) through a
 * batching scheduler over the runner, reporting requests/s, output tokens/s and total
 * tokens/s, and the KV memory in use over time.
 *
 * Why its own scheduler: the comparison needs admission policies the engine's
 * scheduler (engine/sched) deliberately does not have: static batching and the
 * contiguous-reservation KV baseline. So this file drives exec_step directly with a
 * small scheduler whose four variants differ ONLY in the policy being measured; the
 * model, kernels, step budget (max_tokens / max_seqs) and KV memory are identical:
 *   --mode continuous: every step runs the decode token of every running request first,
 *       then prefill chunks (partly prefilled requests first, then new requests FCFS)
 *       fill the remaining token budget; a request is admitted the step it gets a chunk.
 *   --mode static: a batch is admitted (FCFS, up to max_seqs, while its KV fits) only
 *       when no request is running; it runs until its longest request ends.
 *   --kv paged: engine/kv/kv_manager (blocks of 16 tokens, allocated as tokens arrive,
 *       prefix caching off because prompts are random). Admission needs the prompt's
 *       blocks plus a 1% watermark; when a decode append finds no free block the
 *       latest-admitted running request is preempted (blocks freed, requeued at the
 *       front, recomputed later with the tokens it had generated: vLLM's default).
 *   --kv contiguous: engine/kv/kv_contig reserves prompt + max_tokens slots per request
 *       at admission (max_tokens = its output length, or --reserve N for every request,
 *       as a server that sizes slots by context), rounded up to whole blocks so the
 *       reservation maps onto the runner's paged layout as consecutive blocks. FCFS
 *       admission stops at the first request that does not fit (no preemption needed).
 * Both allocators get the same number of blocks: --kv-memory BYTES / bytes per block.
 *
 * Workload (docs/benchmarks.md): prompt and output lengths are drawn independently from
 * log-normal distributions fitted to ShareGPT's reported means (prompt ~161 tokens,
 * output ~338; sigma 1.0 gives the long tail), then filtered as vLLM's benchmark does:
 * pairs with prompt or output under 4 tokens, prompt over 1024 or prompt + output over
 * 2048 are redrawn. --len-scale multiplies lengths and limits alike (small models on
 * lavapipe). Prompt tokens are uniform random ids; generated tokens are the greedy ones.
 *
 * Timing: wall time from the first step to the last request's end, scheduling included
 * (it is part of an engine's cost); one untimed warm-up run of a few short requests
 * first. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "kv/kv_contig.h"
#include "kv/kv_manager.h"

/* ---------------------------------------------------------------- requests */

typedef struct tp_request {
    uint32_t prompt_len, output_len;
    int32_t *tokens;     /* prompt then generated tokens; capacity prompt_len + output_len */
    uint32_t n_tokens;   /* known tokens: prompt + generated */
    uint32_t n_computed; /* tokens whose K/V is in the cache */
    uint32_t n_generated;
    uint32_t kv_len; /* tokens the paged manager holds for it */
    bool running, done;
    kv_seq_id seq;
    uint32_t admit_order;
    uint32_t reserved_blocks; /* contiguous: blocks of its reservation */
    int32_t *table;           /* contiguous: its block table (reserved_blocks entries) */
    double t_first, t_done;
} tp_request;

/* ---------------------------------------------------------------- the run */

typedef enum tp_mode { TP_CONTINUOUS, TP_STATIC } tp_mode;
typedef enum tp_kv { TP_PAGED, TP_CONTIGUOUS } tp_kv;

typedef struct tp_sample {
    double t;
    double used_bytes; /* allocated (blocks in use / reserved) */
    double live_bytes; /* holding a token */
    uint32_t running;
} tp_sample;

typedef struct tp_result {
    double elapsed_s, requests_per_s, output_tps, total_tps;
    double ttft_mean_s, e2e_mean_s;
    uint64_t steps, preemptions, prompt_tokens, output_tokens, forward_tokens;
    uint32_t completed, rejected, peak_running;
    double mean_running, mean_kv_usage, peak_kv_usage;
    tp_sample *samples;
    size_t n_samples, cap_samples;
} tp_result;

typedef struct tp_run {
    bench_model *m;
    tp_mode mode;
    tp_kv kv;
    uint32_t reserve; /* contiguous: fixed reservation (0: prompt + output) */
    uint32_t bs, num_blocks, max_tokens, max_seqs;
    kv_manager *paged;
    kv_contig *contig;
    kv_ops ops;
    tp_request *reqs;
    uint32_t n_reqs;
    /* queues of request indices */
    uint32_t *waiting; /* FCFS deque: [wait_head, wait_tail) with push-front room */
    size_t wait_head, wait_tail;
    uint32_t *running;
    uint32_t n_running;
    uint32_t admit_counter;
    /* plan scratch */
    int32_t *tokens, *positions, *slots, *argmax;
    exec_seq_plan *seqs;
    uint32_t *step_req; /* request of each plan sequence */
    tp_result *res;
} tp_run;

static void tp_free_kv(tp_run *r, tp_request *q) {
    if (r->kv == TP_PAGED)
        kv_manager_free(r->paged, q->seq);
    else
        kv_contig_free(r->contig, q->seq);
    q->seq = -1;
}

static void tp_remove_running(tp_run *r, uint32_t idx) {
    for (uint32_t i = 0; i < r->n_running; i++)
        if (r->running[i] == idx) {
            memmove(&r->running[i], &r->running[i + 1], (r->n_running - i - 1) * 4);
            r->n_running--;
            return;
        }
}

/* Preemption by recompute: frees the latest-admitted running request and requeues it
 * at the front; its known tokens (prompt + generated) are prefilled again later. */
static void tp_preempt_latest(tp_run *r) {
    uint32_t best = 0;
    for (uint32_t i = 1; i < r->n_running; i++)
        if (r->reqs[r->running[i]].admit_order > r->reqs[r->running[best]].admit_order) best = i;
    uint32_t idx = r->running[best];
    tp_request *q = &r->reqs[idx];
    tp_free_kv(r, q);
    q->running = false;
    q->n_computed = 0;
    q->kv_len = 0;
    tp_remove_running(r, idx);
    r->waiting[--r->wait_head] = idx;
    r->res->preemptions++;
}

/* Tries to give request idx its KV; false if it does not fit now (rejected too when it
 * can never fit). */
static bool tp_admit(tp_run *r, uint32_t idx, bool *never) {
    tp_request *q = &r->reqs[idx];
    *never = false;
    if (r->kv == TP_PAGED) {
        kv_alloc_status a = kv_manager_can_allocate(r->paged, q->tokens, q->n_tokens, 0);
        if (a == KV_ALLOC_NEVER) *never = true;
        if (a != KV_ALLOC_OK) return false;
        size_t computed = 0;
        if (kv_manager_allocate(r->paged, q->tokens, q->n_tokens, 0, &q->seq, &computed) !=
            VKLLM_OK)
            return false;
        q->kv_len = q->n_tokens;
        q->n_computed = (uint32_t)computed; /* 0: prefix caching is off */
    } else {
        uint32_t want = r->reserve ? r->reserve : q->prompt_len + q->output_len;
        if (want < q->prompt_len + q->output_len) want = q->prompt_len + q->output_len;
        uint32_t blocks = (want + r->bs - 1) / r->bs;
        vkllm_status st =
            kv_contig_allocate(r->contig, (size_t)blocks * r->bs, q->n_tokens, &q->seq);
        if (st == VKLLM_ERR_TOO_LONG) *never = true;
        if (st != VKLLM_OK) return false;
        int32_t base = kv_contig_base_slot(r->contig, q->seq) / (int32_t)r->bs;
        q->reserved_blocks = blocks;
        for (uint32_t b = 0; b < blocks; b++)
            q->table[b] = base + (int32_t)b;
        q->n_computed = 0;
    }
    q->running = true;
    q->admit_order = r->admit_counter++;
    r->running[r->n_running++] = idx;
    return true;
}

/* Slot of position pos of request q. */
static int32_t tp_slot(tp_run *r, tp_request *q, uint32_t pos) {
    if (r->kv == TP_PAGED) {
        int32_t slot = -1;
        kv_manager_slots(r->paged, q->seq, pos, 1, &slot);
        return slot;
    }
    return q->table[pos / r->bs] * (int32_t)r->bs + (int32_t)(pos % r->bs);
}

static void tp_sample_kv(tp_run *r, double t) {
    kv_stats st;
    if (r->kv == TP_PAGED)
        kv_manager_stats(r->paged, &st);
    else
        kv_contig_stats(r->contig, &st);
    double slot_bytes = (double)r->m->kv_bytes_per_block / r->bs;
    tp_result *res = r->res;
    if (res->n_samples == res->cap_samples) {
        size_t cap = res->cap_samples ? res->cap_samples * 2 : 1024;
        tp_sample *s = realloc(res->samples, cap * sizeof *s);
        if (!s) return;
        res->samples = s, res->cap_samples = cap;
    }
    res->samples[res->n_samples++] = (tp_sample){.t = t,
                                                 .used_bytes = st.allocated_slots * slot_bytes,
                                                 .live_bytes = st.live_tokens * slot_bytes,
                                                 .running = r->n_running};
    double usage = st.capacity_slots ? (double)st.allocated_slots / st.capacity_slots : 0;
    res->mean_kv_usage += usage;
    if (usage > res->peak_kv_usage) res->peak_kv_usage = usage;
}

/* Plans the next prefill chunk of request idx into the step: as many of its pending prompt
 * tokens as the step's token budget leaves room for; logits only when it is the last chunk. */
static void tp_plan_prefill_chunk(tp_run *r, uint32_t idx, uint32_t *n_tokens_io,
                                  uint32_t *n_seqs_io) {
    uint32_t n_tokens = *n_tokens_io, n_seqs = *n_seqs_io;
    tp_request *q = &r->reqs[idx];
    uint32_t chunk = q->n_tokens - q->n_computed;
    if (chunk > r->max_tokens - n_tokens) chunk = r->max_tokens - n_tokens;
    for (uint32_t k = 0; k < chunk; k++) {
        uint32_t pos = q->n_computed + k;
        r->tokens[n_tokens + k] = q->tokens[pos];
        r->positions[n_tokens + k] = (int32_t)pos;
        r->slots[n_tokens + k] = tp_slot(r, q, pos);
    }
    uint32_t ctx = q->n_computed + chunk;
    r->seqs[n_seqs] = (exec_seq_plan){.first_token = n_tokens,
                                      .n_new = chunk,
                                      .context_len = ctx,
                                      .need_logits = ctx == q->n_tokens};
    r->step_req[n_seqs++] = idx;
    n_tokens += chunk;
    *n_tokens_io = n_tokens;
    *n_seqs_io = n_seqs;
}

/* Schedules and runs one step. false on a failure (message printed). */
static bool tp_step(tp_run *r, double t0) {
    uint32_t n_seqs = 0, n_tokens = 0;
    /* 1. Decode tokens of running requests (admission order), each needing a slot. */
    for (uint32_t i = 0; i < r->n_running; i++) {
        tp_request *q = &r->reqs[r->running[i]];
        if (q->n_tokens - q->n_computed != 1 || q->n_computed == 0) continue;
        if (r->kv == TP_PAGED && q->kv_len < q->n_tokens) {
            vkllm_status st;
            while ((st = kv_manager_append(r->paged, q->seq, &q->tokens[q->n_tokens - 1], 1,
                                           &r->ops, NULL)) == VKLLM_ERR_BUSY) {
                bool self = true;
                for (uint32_t j = 0; j < r->n_running; j++)
                    if (r->reqs[r->running[j]].admit_order > q->admit_order) self = false;
                tp_preempt_latest(r);
                if (self) break;
            }
            if (!q->running) { /* it preempted itself: the list shifted */
                i--;
                continue;
            }
            if (st != VKLLM_OK && st != VKLLM_ERR_BUSY) {
                fprintf(stderr, "vkllm bench throughput: kv append: %s\n", vkllm_last_error());
                return false;
            }
            q->kv_len = q->n_tokens;
        }
    }
    /* Decode sequences first in the plan (their slots are final now). */
    for (uint32_t i = 0; i < r->n_running && n_seqs < r->max_seqs; i++) {
        uint32_t idx = r->running[i];
        tp_request *q = &r->reqs[idx];
        if (q->n_tokens - q->n_computed != 1 || q->n_computed == 0) continue;
        uint32_t pos = q->n_tokens - 1;
        r->tokens[n_tokens] = q->tokens[pos];
        r->positions[n_tokens] = (int32_t)pos;
        r->slots[n_tokens] = tp_slot(r, q, pos);
        r->seqs[n_seqs] = (exec_seq_plan){
            .first_token = n_tokens, .n_new = 1, .context_len = q->n_tokens, .need_logits = true};
        r->step_req[n_seqs++] = idx;
        n_tokens++;
    }
    /* 2. Static batching: a new batch only when nothing runs. */
    if (r->mode == TP_STATIC && r->n_running == 0) {
        while (r->wait_head < r->wait_tail && r->n_running < r->max_seqs) {
            bool never;
            uint32_t idx = r->waiting[r->wait_head];
            if (!tp_admit(r, idx, &never)) {
                if (!never) break;
                r->reqs[idx].done = true; /* can never fit: rejected */
                r->res->rejected++;
            }
            r->wait_head++;
        }
    }
    /* 3. Prefill chunks: running requests still prefilling, then (continuous) new ones. */
    for (uint32_t i = 0; i < r->n_running && n_tokens < r->max_tokens && n_seqs < r->max_seqs;
         i++) {
        uint32_t idx = r->running[i];
        tp_request *q = &r->reqs[idx];
        bool decode = q->n_tokens - q->n_computed == 1 && q->n_computed > 0;
        if (decode) continue;
        tp_plan_prefill_chunk(r, idx, &n_tokens, &n_seqs);
    }
    while (r->mode == TP_CONTINUOUS && r->wait_head < r->wait_tail && n_tokens < r->max_tokens &&
           n_seqs < r->max_seqs && r->n_running < r->max_seqs) {
        uint32_t idx = r->waiting[r->wait_head];
        bool never;
        if (!tp_admit(r, idx, &never)) {
            if (!never) break;
            r->reqs[idx].done = true;
            r->res->rejected++;
            r->wait_head++;
            continue;
        }
        r->wait_head++;
        tp_plan_prefill_chunk(r, idx, &n_tokens, &n_seqs);
    }
    if (n_seqs == 0) return true; /* nothing runnable (cannot happen with work left) */
    /* The runner wants decode sequences (n_new == 1) first: a 1-token prefill chunk is a
     * decode row for it, so move every such sequence to the front, order kept. */
    {
        exec_seq_plan tmp_s;
        uint32_t tmp_r;
        for (uint32_t i = 1; i < n_seqs; i++) {
            if (r->seqs[i].n_new != 1) continue;
            uint32_t j = i;
            while (j > 0 && r->seqs[j - 1].n_new != 1) {
                tmp_s = r->seqs[j - 1], r->seqs[j - 1] = r->seqs[j], r->seqs[j] = tmp_s;
                tmp_r = r->step_req[j - 1], r->step_req[j - 1] = r->step_req[j],
                r->step_req[j] = tmp_r;
                j--;
            }
        }
        /* Token ranges must tile [0, n_tokens) in sequence order: rebuild them. */
        int32_t *t2 = r->tokens + r->max_tokens, *p2 = r->positions + r->max_tokens,
                *s2 = r->slots + r->max_tokens;
        uint32_t at = 0;
        for (uint32_t i = 0; i < n_seqs; i++) {
            exec_seq_plan *sp = &r->seqs[i];
            memcpy(t2 + at, r->tokens + sp->first_token, sp->n_new * 4);
            memcpy(p2 + at, r->positions + sp->first_token, sp->n_new * 4);
            memcpy(s2 + at, r->slots + sp->first_token, sp->n_new * 4);
            sp->first_token = at;
            at += sp->n_new;
        }
        memcpy(r->tokens, t2, at * 4);
        memcpy(r->positions, p2, at * 4);
        memcpy(r->slots, s2, at * 4);
    }
    /* Block tables last: no allocator call may move them before exec_step. */
    for (uint32_t i = 0; i < n_seqs; i++) {
        tp_request *q = &r->reqs[r->step_req[i]];
        if (r->kv == TP_PAGED) {
            size_t nb = 0;
            r->seqs[i].block_table = kv_manager_block_table(r->paged, q->seq, &nb);
            r->seqs[i].n_blocks = (uint32_t)nb;
        } else {
            r->seqs[i].block_table = q->table;
            r->seqs[i].n_blocks = q->reserved_blocks;
        }
    }
    if (r->ops.count) {
        if (exec_apply_kv_ops(r->m->exec, r->ops.items, r->ops.count) != VKLLM_OK) {
            fprintf(stderr, "vkllm bench throughput: kv ops: %s\n", vkllm_last_error());
            return false;
        }
        kv_ops_clear(&r->ops);
    }
    exec_step_plan plan = {.n_tokens = n_tokens,
                           .tokens = r->tokens,
                           .positions = r->positions,
                           .slots = r->slots,
                           .n_seqs = n_seqs,
                           .seqs = r->seqs};
    if (exec_step(r->m->exec, &plan, NULL, r->argmax) != VKLLM_OK) {
        fprintf(stderr, "vkllm bench throughput: step: %s\n", vkllm_last_error());
        return false;
    }
    double now = bench_now() - t0;
    tp_result *res = r->res;
    res->steps++;
    res->forward_tokens += n_tokens;
    res->mean_running += r->n_running;
    if (r->n_running > res->peak_running) res->peak_running = r->n_running;
    /* 4. Results: new tokens, finished requests. */
    uint32_t row = 0;
    for (uint32_t i = 0; i < n_seqs; i++) {
        tp_request *q = &r->reqs[r->step_req[i]];
        q->n_computed += r->seqs[i].n_new;
        if (r->kv == TP_PAGED) kv_manager_commit(r->paged, q->seq, q->n_computed);
        if (!r->seqs[i].need_logits) continue;
        int32_t tok = r->argmax[row++];
        q->tokens[q->n_tokens++] = tok;
        q->n_generated++;
        if (q->n_generated == 1) q->t_first = now;
        if (r->kv == TP_CONTIGUOUS) kv_contig_append(r->contig, q->seq, 1);
        if (q->n_generated >= q->output_len) {
            q->done = true;
            q->t_done = now;
            tp_free_kv(r, q);
            q->running = false;
            tp_remove_running(r, r->step_req[i]);
            res->completed++;
        }
    }
    tp_sample_kv(r, now);
    return true;
}

/* Runs the requests to completion with a fresh allocator of r->num_blocks blocks. */
static bool tp_execute(tp_run *r, tp_result *res) {
    memset(res, 0, sizeof *res);
    r->res = res;
    bool ok = true;
    if (r->kv == TP_PAGED) {
        kv_config kc = {.block_size = r->bs,
                        .num_device_blocks = r->num_blocks,
                        .watermark_blocks = r->num_blocks / 100,
                        .enable_prefix_caching = false};
        ok = kv_manager_create(&kc, &r->paged) == VKLLM_OK;
    } else {
        ok = kv_contig_create((uint64_t)r->num_blocks * r->bs, &r->contig) == VKLLM_OK;
    }
    if (!ok) {
        fprintf(stderr, "vkllm bench throughput: kv allocator: %s\n", vkllm_last_error());
        return false;
    }
    r->wait_head = r->n_reqs; /* room for push-front of preempted requests */
    r->wait_tail = 2 * (size_t)r->n_reqs;
    r->n_running = 0;
    r->admit_counter = 0;
    for (uint32_t i = 0; i < r->n_reqs; i++) {
        tp_request *q = &r->reqs[i];
        r->waiting[r->n_reqs + i] = i;
        q->n_tokens = q->prompt_len;
        q->n_computed = q->n_generated = q->kv_len = 0;
        q->running = q->done = false;
        q->seq = -1;
        res->prompt_tokens += q->prompt_len;
        res->output_tokens += q->output_len;
    }
    double t0 = bench_now();
    while (ok && (r->n_running || r->wait_head < r->wait_tail)) {
        uint64_t before = res->steps;
        ok = tp_step(r, t0);
        if (ok && res->steps == before && r->n_running == 0 && r->wait_head < r->wait_tail) {
            fprintf(stderr, "vkllm bench throughput: request %u fits no step (KV too small?)\n",
                    r->waiting[r->wait_head]);
            ok = false;
        }
    }
    res->elapsed_s = bench_now() - t0;
    if (r->paged) kv_manager_destroy(r->paged);
    if (r->contig) kv_contig_destroy(r->contig);
    r->paged = NULL, r->contig = NULL;
    if (!ok) return false;
    double ttft = 0, e2e = 0, done_prompt = 0, done_output = 0;
    for (uint32_t i = 0; i < r->n_reqs; i++) {
        tp_request *q = &r->reqs[i];
        if (q->n_generated < q->output_len) continue; /* rejected */
        ttft += q->t_first, e2e += q->t_done;
        done_prompt += q->prompt_len, done_output += q->output_len;
    }
    res->requests_per_s = res->completed / res->elapsed_s;
    res->output_tps = done_output / res->elapsed_s;
    res->total_tps = (done_prompt + done_output) / res->elapsed_s;
    res->ttft_mean_s = res->completed ? ttft / res->completed : NAN;
    res->e2e_mean_s = res->completed ? e2e / res->completed : NAN;
    if (res->steps) {
        res->mean_running /= (double)res->steps;
        res->mean_kv_usage /= (double)res->steps;
    }
    return true;
}

/* ---------------------------------------------------------------- command */

static void usage(FILE *out) {
    fprintf(out, "usage: vkllm bench throughput -m MODEL [options]\n"
                 "  --requests N        requests (default 1000)\n"
                 "  --seed S            workload seed (default 0)\n"
                 "  --mode M            continuous | static | both (default continuous)\n"
                 "  --kv K              paged | contiguous | both (default paged)\n"
                 "  --kv-memory BYTES   KV cache size shared by every run, e.g. 2G (default: 1/4\n"
                 "                      of the device memory left after the weights, at most 8G)\n"
                 "  --reserve N         contiguous: reserve N tokens per request (default: its\n"
                 "                      prompt + output length)\n"
                 "  --max-seqs N        sequences per step (default 64)\n"
                 "  --max-batch-tokens N token budget per step (default 512)\n"
                 "  --len-scale F       multiply lengths and filter limits (default 1)\n"
                 "  --json FILE         write the results (and KV memory over time) as JSON\n"
                 "  --png FILE          plot KV memory in use over time for every run\n"
                 "  --device D          Vulkan device index or name substring\n");
}

static const char *mode_name(tp_mode m) {
    return m == TP_CONTINUOUS ? "continuous" : "static";
}
static const char *kv_name(tp_kv k) {
    return k == TP_PAGED ? "paged" : "contiguous";
}

int bench_throughput(int argc, char **argv) {
    const char *model_path = NULL, *json_path = NULL, *png_path = NULL, *device = NULL;
    const char *mode_arg = "continuous", *kv_arg = "paged";
    uint32_t n_reqs = 1000, reserve = 0, max_seqs = 64, max_tokens = 512;
    uint64_t seed = 0, kv_memory = 0;
    double len_scale = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool ok = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (i + 1 >= argc) {
            fprintf(stderr, "vkllm bench throughput: unknown option or missing value '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model_path = argv[++i];
        } else if (!strcmp(a, "--json")) {
            json_path = argv[++i];
        } else if (!strcmp(a, "--png")) {
            png_path = argv[++i];
        } else if (!strcmp(a, "--device")) {
            device = argv[++i];
        } else if (!strcmp(a, "--mode")) {
            mode_arg = argv[++i];
        } else if (!strcmp(a, "--kv")) {
            kv_arg = argv[++i];
        } else if (!strcmp(a, "--requests")) {
            ok = bench_parse_u32("throughput", a, argv[++i], &n_reqs);
        } else if (!strcmp(a, "--seed")) {
            ok = bench_parse_u64("throughput", a, argv[++i], &seed);
        } else if (!strcmp(a, "--kv-memory")) {
            ok = bench_parse_bytes("throughput", a, argv[++i], &kv_memory);
        } else if (!strcmp(a, "--reserve")) {
            ok = bench_parse_u32("throughput", a, argv[++i], &reserve);
        } else if (!strcmp(a, "--max-seqs")) {
            ok = bench_parse_u32("throughput", a, argv[++i], &max_seqs);
        } else if (!strcmp(a, "--max-batch-tokens")) {
            ok = bench_parse_u32("throughput", a, argv[++i], &max_tokens);
        } else if (!strcmp(a, "--len-scale")) {
            ok = bench_parse_f64("throughput", a, argv[++i], &len_scale);
            if (ok && !(len_scale > 0 && len_scale <= 4)) {
                fprintf(stderr, "vkllm bench throughput: --len-scale must be in (0, 4]\n");
                ok = false;
            }
        } else {
            fprintf(stderr, "vkllm bench throughput: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) return 2;
    }
    bool modes[2] = {!strcmp(mode_arg, "continuous") || !strcmp(mode_arg, "both"),
                     !strcmp(mode_arg, "static") || !strcmp(mode_arg, "both")};
    bool kvs[2] = {!strcmp(kv_arg, "paged") || !strcmp(kv_arg, "both"),
                   !strcmp(kv_arg, "contiguous") || !strcmp(kv_arg, "both")};
    if (!modes[0] && !modes[1]) {
        fprintf(stderr, "vkllm bench throughput: --mode must be continuous, static or both\n");
        return 2;
    }
    if (!kvs[0] && !kvs[1]) {
        fprintf(stderr, "vkllm bench throughput: --kv must be paged, contiguous or both\n");
        return 2;
    }
    if (!model_path || !n_reqs || !max_seqs || max_tokens < max_seqs) {
        fprintf(stderr, "vkllm bench throughput: need -m MODEL, --requests >= 1, --max-seqs "
                        ">= 1 and --max-batch-tokens >= --max-seqs\n\n");
        usage(stderr);
        return 2;
    }

    /* Workload first: it sizes max_context. */
    tp_request *reqs = calloc(n_reqs, sizeof *reqs);
    if (!reqs) return 1;
    {
        uint32_t *pl = malloc((size_t)n_reqs * 4), *ol = malloc((size_t)n_reqs * 4);
        if (!pl || !ol) {
            free(pl), free(ol), free(reqs);
            return 1;
        }
        bench_workload_lengths(n_reqs, seed, len_scale, pl, ol);
        for (uint32_t i = 0; i < n_reqs; i++)
            reqs[i].prompt_len = pl[i], reqs[i].output_len = ol[i];
        free(pl), free(ol);
    }
    uint32_t max_total = 0;
    double mean_p = 0, mean_o = 0;
    for (uint32_t i = 0; i < n_reqs; i++) {
        uint32_t t = reqs[i].prompt_len + reqs[i].output_len;
        if (reserve > t) t = reserve;
        if (t > max_total) max_total = t;
        mean_p += reqs[i].prompt_len, mean_o += reqs[i].output_len;
    }
    mean_p /= n_reqs, mean_o /= n_reqs;

    uint32_t bs = 16;
    exec_options o = {.block_size = bs,
                      .max_tokens = max_tokens,
                      .max_seqs = max_seqs,
                      .max_context = (max_total + 2 * bs) / bs * bs};
    bench_model m;
    /* The KV size must be known before the runner allocates it: peek at the config. */
    if (!kv_memory) {
        gpu_features *devs = NULL;
        uint32_t n_devs = 0, pick = 0;
        if (gpu_list_devices(&devs, &n_devs) == VKLLM_OK &&
            gpu_pick_device(devs, n_devs, device, &pick) == VKLLM_OK) {
            uint64_t heap = devs[pick].device_local_bytes;
            kv_memory = heap / 4; /* weights are subtracted below once known */
        }
        free(devs);
        if (!kv_memory) kv_memory = 1ull << 30;
    }
    {
        gguf_file *g;
        model_config cfg;
        if (gguf_open(model_path, &g) != VKLLM_OK || model_load_config(g, &cfg) != VKLLM_OK) {
            fprintf(stderr, "vkllm bench throughput: %s\n", vkllm_last_error());
            free(reqs);
            return 1;
        }
        gguf_close(g);
        if (kv_memory > (8ull << 30)) kv_memory = 8ull << 30;
        uint64_t per_block = bench_kv_block_bytes(&cfg, bs);
        uint64_t need = per_block * ((max_total + bs - 1) / bs + 1);
        if (kv_memory < need) {
            fprintf(stderr,
                    "vkllm bench throughput: --kv-memory %llu holds fewer blocks than the longest "
                    "request needs (%llu bytes)\n",
                    (unsigned long long)kv_memory, (unsigned long long)need);
            free(reqs);
            return 2;
        }
    }
    if (!bench_model_open("throughput", model_path, device, &o, kv_memory, &m)) {
        free(reqs);
        return 1;
    }
    const exec_options *eo = exec_model_options(m.exec);
    tp_run r = {.m = &m,
                .reserve = reserve,
                .bs = bs,
                .num_blocks = eo->num_blocks,
                .max_tokens = eo->max_tokens,
                .max_seqs = eo->max_seqs,
                .reqs = reqs,
                .n_reqs = n_reqs};
    uint32_t max_blocks = (max_total + bs - 1) / bs + 1;
    bool ok = true;
    for (uint32_t i = 0; ok && i < n_reqs; i++) {
        reqs[i].tokens = malloc((size_t)(reqs[i].prompt_len + reqs[i].output_len + 1) * 4);
        reqs[i].table = malloc((size_t)max_blocks * 4);
        ok = reqs[i].tokens && reqs[i].table;
        bench_rng tr = {seed ^ (0xA5A5A5A5ull + i)};
        for (uint32_t k = 0; ok && k < reqs[i].prompt_len; k++)
            reqs[i].tokens[k] = (int32_t)(bench_rng_next(&tr) % m.cfg.n_vocab);
    }
    r.waiting = malloc((size_t)n_reqs * 2 * 4);
    r.running = malloc((size_t)n_reqs * 4);
    r.tokens = malloc((size_t)r.max_tokens * 2 * 4);
    r.positions = malloc((size_t)r.max_tokens * 2 * 4);
    r.slots = malloc((size_t)r.max_tokens * 2 * 4);
    r.argmax = malloc((size_t)r.max_seqs * 4);
    r.seqs = malloc((size_t)r.max_seqs * sizeof *r.seqs);
    r.step_req = malloc((size_t)r.max_seqs * 4);
    ok = ok && r.waiting && r.running && r.tokens && r.positions && r.slots && r.argmax && r.seqs &&
         r.step_req;

    const gpu_features *f = gpu_context_features(m.gpu);
    bench_print_device(f);
    printf("model: %s, weights %.2f GiB; KV %u blocks of %u tokens = %.2f GiB; step budget %u "
           "tokens / %u seqs\n",
           model_path, m.weight_bytes / 1073741824.0, r.num_blocks, bs,
           (double)r.num_blocks * m.kv_bytes_per_block / 1073741824.0, r.max_tokens, r.max_seqs);
    printf("workload: %u requests, seed %llu, prompt mean %.1f, output mean %.1f tokens (len "
           "scale %.3g)\n",
           n_reqs, (unsigned long long)seed, mean_p, mean_o, len_scale);

    bench_json json;
    ok = ok && bench_json_open(&json, json_path);
    bench_json_str(&json, "bench", "throughput");
    bench_json_device(&json, f);
    bench_json_str(&json, "model", model_path);
    bench_json_int(&json, "requests", n_reqs);
    bench_json_int(&json, "seed", (long long)seed);
    bench_json_num(&json, "len_scale", len_scale);
    bench_json_num(&json, "prompt_mean", mean_p);
    bench_json_num(&json, "output_mean", mean_o);
    bench_json_int(&json, "kv_blocks", r.num_blocks);
    bench_json_int(&json, "block_size", bs);
    bench_json_int(&json, "kv_bytes", (long long)((uint64_t)r.num_blocks * m.kv_bytes_per_block));
    bench_json_int(&json, "max_batch_tokens", r.max_tokens);
    bench_json_int(&json, "max_seqs", r.max_seqs);
    bench_json_array(&json, "runs");

    /* Warm-up: the first max_seqs requests, outputs cut to 8 tokens, through the
     * continuous paged loop: every decode batch size up to max_seqs and prefill chunks of
     * many lengths run once, so pipeline creation is not timed. */
    if (ok) {
        uint32_t n_warm = n_reqs < r.max_seqs ? n_reqs : r.max_seqs;
        tp_request *saved = malloc(n_warm * sizeof *reqs);
        ok = saved != NULL;
        if (ok) {
            memcpy(saved, reqs, n_warm * sizeof *reqs);
            for (uint32_t i = 0; i < n_warm; i++)
                if (reqs[i].output_len > 8) reqs[i].output_len = 8;
            tp_run w = r;
            w.n_reqs = n_warm;
            w.mode = TP_CONTINUOUS;
            w.kv = TP_PAGED;
            tp_result wr;
            ok = tp_execute(&w, &wr);
            free(wr.samples);
            memcpy(reqs, saved, n_warm * sizeof *reqs);
            free(saved);
        }
    }

    printf("%-22s %9s %10s %10s %9s %8s %8s %8s %8s\n", "run", "req/s", "out tok/s", "tot tok/s",
           "elapsed s", "preempt", "avg run", "peak KV", "TTFT s");
    tp_result results[4];
    memset(results, 0, sizeof results);
    const char *labels[4];
    size_t n_results = 0;
    char label_buf[4][40];
    for (int mi = 0; ok && mi < 2; mi++)
        for (int ki = 0; ok && ki < 2; ki++) {
            if (!modes[mi] || !kvs[ki]) continue;
            r.mode = (tp_mode)mi;
            r.kv = (tp_kv)ki;
            tp_result *res = &results[n_results];
            ok = tp_execute(&r, res);
            if (!ok) break;
            snprintf(label_buf[n_results], sizeof label_buf[0], "%s/%s", mode_name(r.mode),
                     kv_name(r.kv));
            labels[n_results] = label_buf[n_results];
            printf("%-22s %9.2f %10.1f %10.1f %9.2f %8llu %8.1f %7.1f%% %8.2f\n", labels[n_results],
                   res->requests_per_s, res->output_tps, res->total_tps, res->elapsed_s,
                   (unsigned long long)res->preemptions, res->mean_running,
                   res->peak_kv_usage * 100, res->ttft_mean_s);
            bench_json_object(&json, NULL);
            bench_json_str(&json, "mode", mode_name(r.mode));
            bench_json_str(&json, "kv", kv_name(r.kv));
            bench_json_int(&json, "completed", res->completed);
            bench_json_int(&json, "rejected", res->rejected);
            bench_json_num(&json, "elapsed_s", res->elapsed_s);
            bench_json_num(&json, "requests_per_s", res->requests_per_s);
            bench_json_num(&json, "output_tokens_per_s", res->output_tps);
            bench_json_num(&json, "total_tokens_per_s", res->total_tps);
            bench_json_int(&json, "prompt_tokens", (long long)res->prompt_tokens);
            bench_json_int(&json, "output_tokens", (long long)res->output_tokens);
            bench_json_int(&json, "forward_tokens", (long long)res->forward_tokens);
            bench_json_int(&json, "steps", (long long)res->steps);
            bench_json_int(&json, "preemptions", (long long)res->preemptions);
            bench_json_num(&json, "mean_running", res->mean_running);
            bench_json_int(&json, "peak_running", res->peak_running);
            bench_json_num(&json, "mean_kv_usage", res->mean_kv_usage);
            bench_json_num(&json, "peak_kv_usage", res->peak_kv_usage);
            bench_json_num(&json, "ttft_mean_s", res->ttft_mean_s);
            bench_json_num(&json, "e2e_mean_s", res->e2e_mean_s);
            /* KV memory over time, at most ~400 points (every k-th step). */
            size_t stride = res->n_samples / 400 + 1;
            bench_json_array(&json, "kv_timeline");
            for (size_t s = 0; s < res->n_samples; s += stride) {
                bench_json_array(&json, NULL);
                bench_json_num(&json, NULL, res->samples[s].t);
                bench_json_num(&json, NULL, res->samples[s].used_bytes);
                bench_json_num(&json, NULL, res->samples[s].live_bytes);
                bench_json_int(&json, NULL, res->samples[s].running);
                bench_json_end_array(&json);
            }
            bench_json_end_array(&json);
            bench_json_end_object(&json);
            n_results++;
        }
    bench_json_end_array(&json);
    if (ok && png_path && n_results) {
        /* Unit from the largest value, so small runs read well too. */
        double peak = 0;
        for (size_t i = 0; i < n_results; i++)
            for (size_t s = 0; s < results[i].n_samples; s++)
                peak = fmax(peak, results[i].samples[s].used_bytes);
        double unit = peak >= 1073741824.0 ? 1073741824.0 : peak >= 1048576.0 ? 1048576.0 : 1024.0;
        const char *y_label = unit == 1073741824.0 ? "KV memory allocated (GiB)"
                              : unit == 1048576.0  ? "KV memory allocated (MiB)"
                                                   : "KV memory allocated (KiB)";
        bench_plot plot = {.title = "KV cache memory in use over time",
                           .x_label = "time (s)",
                           .y_label = y_label,
                           .n_series = n_results};
        double *xs[4] = {0}, *ys[4] = {0};
        for (size_t i = 0; i < n_results; i++) {
            tp_result *res = &results[i];
            xs[i] = malloc((res->n_samples + 1) * sizeof(double));
            ys[i] = malloc((res->n_samples + 1) * sizeof(double));
            if (!xs[i] || !ys[i]) continue;
            for (size_t s = 0; s < res->n_samples; s++) {
                xs[i][s] = res->samples[s].t;
                ys[i][s] = res->samples[s].used_bytes / unit;
            }
            plot.series[i] = (bench_series){labels[i], xs[i], ys[i], res->n_samples};
        }
        ok = bench_plot_png(&plot, png_path, 0, 0);
        for (size_t i = 0; i < n_results; i++)
            free(xs[i]), free(ys[i]);
    }
    if (!bench_json_close(&json)) ok = false;
    for (size_t i = 0; i < n_results; i++)
        free(results[i].samples);
    for (uint32_t i = 0; i < n_reqs; i++)
        free(reqs[i].tokens), free(reqs[i].table);
    free(reqs);
    free(r.waiting), free(r.running), free(r.tokens), free(r.positions), free(r.slots);
    free(r.argmax), free(r.seqs), free(r.step_req);
    kv_ops_destroy(&r.ops);
    bench_model_close(&m);
    return ok ? 0 : 1;
}
