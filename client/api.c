/*
 * The OpenAI-compatible API server (see api.h).
 *
 * A request lives in one libmicrohttpd connection thread from its first
 * header to its last byte: the access handler collects the body (capped),
 * checks the route, method and key, parses the JSON into a job, takes a
 * slot and runs the prompt. A plain answer then generates to the end and
 * is sent whole; a streaming answer is a content-reader callback that
 * generates one token per call and hands out SSE chunks, so a slow client
 * slows its own generation and nothing else, and a client that goes away
 * frees its slot at the next chunk (the reader's free callback).
 *
 * Stop sequences: the text of a reply is cut where a stop string starts.
 * While streaming, the tail that could still grow into a stop string is
 * held back, so no chunk ever carries part of a stop string.
 *
 * Text leaving the server is valid UTF-8 (client/gen.h's output stream
 * replaces bytes that can never be UTF-8 with U+FFFD); cuts at stop
 * strings fall on character boundaries, since a stop string is valid
 * UTF-8 itself.
 */
#include "client/api.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "client/api_request.h"
#include "client/chat.h"
#include "client/http.h"
#include "client/state.h"
#include "swarm/metrics.h"
#include "kernels/err.h"
#include "swarm/log.h"

#define API_ERR_MAX 1024

enum { R_CHAT, R_COMPLETIONS, R_MODELS, R_MODEL, R_HEALTH, R_METRICS, R_DASHBOARD, R_STATE,
       R_OTHER, R__COUNT };
static const char *const route_label[R__COUNT] = {
    "/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/{id}",
    "/health", "/metrics", "/", "/api/v1/state", "other"};

typedef struct api_slot {
    shoal_gen *gs;
    bool busy;
} api_slot;

struct shoal_api {
    shoal_api_params p;
    char *host, *api_key, *model_name;
    struct MHD_Daemon *mhd;
    int port;
    time_t created;

    pthread_mutex_t mu;        /* everything below */
    pthread_cond_t slot_free;  /* a slot was released */
    pthread_cond_t wake;       /* the health thread: stop */
    shoal_lm *lm;
    bool covered;              /* the peers cover every block (always, locally) */
    char route_err[API_ERR_MAX];
    api_slot *slots;
    int n_waiting, n_active;
    bool stopping;
    pthread_t health;
    bool health_started;
    atomic_uint_fast64_t seq;  /* request ids */

    shoal_metrics *metrics;
    int m_requests, m_errors, m_tokens, m_prompt, m_active, m_queued, m_duration, m_ttft,
        m_ready, m_slots;
};

/* ---- small helpers ---------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int route_of(const char *url, const char **model_id)
{
    *model_id = NULL;
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions"))
        return R_CHAT;
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/completions"))
        return R_COMPLETIONS;
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/models"))
        return R_MODELS;
    if (!strncmp(url, "/v1/models/", 11) && url[11]) {
        *model_id = url + 11;
        return R_MODEL;
    }
    if (!strcmp(url, "/health"))
        return R_HEALTH;
    if (!strcmp(url, "/metrics"))
        return R_METRICS;
    if (!strcmp(url, "/") || !strcmp(url, "/index.html"))
        return R_DASHBOARD;
    if (!strcmp(url, "/api/v1/state"))
        return R_STATE;
    return R_OTHER;
}

/* Constant-time comparison of a presented key with the configured one. */
static bool key_matches(const char *given, const char *want)
{
    size_t lg = strlen(given), lw = strlen(want);
    unsigned char d = lg != lw;
    for (size_t i = 0; i < lw; i++)
        d |= (unsigned char)(want[i] ^ (i < lg ? given[i] : 0));
    return d == 0;
}

/* ---- responses ----------------------------------------------------------------- */

typedef struct req req;

static enum MHD_Result send_body(req *r, struct MHD_Connection *c, int status,
                                 const char *type, char *body, size_t len);

/* {"error": {"message", "type", "param", "code"}}; param and code may be
 * NULL (JSON null). */
static enum MHD_Result send_error(req *r, struct MHD_Connection *c, int status,
                                  const char *type, const char *param, const char *code,
                                  const char *fmt, ...) __attribute__((format(printf, 7, 8)));

/* One request: from the first header to the last byte sent. */
struct req {
    shoal_api *a;
    atomic_int refs;           /* the connection, and a streaming response */
    int route, status;
    double t0;
    bool counted_error;
    /* body */
    char *body;
    size_t len, cap;
    bool too_large, responded;
    /* generation */
    shoal_api_job job;         /* the parsed request (client/api_request.h) */
    int slot;                  /* -1: none held */
    shoal_gen *gs;
    shoal_gen_out out;
    char piece[SHOAL_GEN_OUT_CAP];
    char *text;                /* the reply so far */
    size_t text_len, text_cap, emitted;
    int n_gen;
    const char *finish;        /* NULL while generating */
    char gen_err[API_ERR_MAX]; /* a failure while generating */
    bool first_token_seen;
    char id[64];
    time_t created;
    /* streaming */
    int phase;
    char *sse;                 /* pending bytes of the current event */
    size_t sse_len, sse_off;
};

static const char *status_text(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "invalid_request_error";
    case 404: return "invalid_request_error";
    case 405: return "invalid_request_error";
    case 413: return "invalid_request_error";
    case 429: return "rate_limit_error";
    case 503: return "server_error";
    default: return "server_error";
    }
}

static void count_error(req *r, int status)
{
    if (r->counted_error)
        return;
    r->counted_error = true;
    char code[16];
    snprintf(code, sizeof code, "%d", status);
    const char *v[2] = {route_label[r->route], code};
    shoal_metrics_inc(r->a->metrics, r->a->m_errors, v, 1);
}

static enum MHD_Result send_body(req *r, struct MHD_Connection *c, int status,
                                 const char *type, char *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
    if (status == 405)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                r->route == R_CHAT || r->route == R_COMPLETIONS
                                    ? "POST, OPTIONS"
                                    : "GET, HEAD, OPTIONS");
    if (r->route == R_DASHBOARD || r->route == R_STATE || r->route == R_METRICS)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (status == 429 || status == 503)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    r->status = status;
    r->responded = true;
    if (status >= 400)
        count_error(r, status);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_json(req *r, struct MHD_Connection *c, int status, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s)
        return MHD_NO;
    size_t n = strlen(s);
    char *body = malloc(n + 2);
    if (!body) {
        free(s);
        return MHD_NO;
    }
    memcpy(body, s, n);
    body[n] = '\n';
    free(s);
    return send_body(r, c, status, "application/json", body, n + 1);
}

static json_t *error_json(const char *type, const char *param, const char *code,
                          const char *msg)
{
    return json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message", msg, "type", type, "param",
                     param, "code", code);
}

static enum MHD_Result send_error(req *r, struct MHD_Connection *c, int status,
                                  const char *type, const char *param, const char *code,
                                  const char *fmt, ...)
{
    char msg[API_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* messages may quote user input: keep them valid UTF-8 for JSON */
    msg[shoal_utf8_valid_prefix(msg, strlen(msg))] = 0;
    return send_json(r, c, status, error_json(type ? type : status_text(status), param, code,
                                              msg));
}

/* ---- slots ---------------------------------------------------------------------- */

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb)
{
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* Takes a slot for r (its prompt is known): 0, or an HTTP status (429
 * queue full, 503 not ready / timed out / stopping) with err set. */
static int slot_acquire(shoal_api *a, req *r, char *err, size_t errlen)
{
    pthread_mutex_lock(&a->mu);
    int status = 0;
    if (!a->lm || !a->covered || a->stopping) {
        snprintf(err, errlen, "%s",
                 a->stopping ? "the server is stopping"
                 : !a->lm    ? "the model is still loading"
                             : a->route_err);
        status = 503;
        goto out;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    double t = deadline.tv_sec + deadline.tv_nsec * 1e-9 + a->p.queue_timeout;
    deadline.tv_sec = (time_t)t;
    deadline.tv_nsec = (long)((t - (double)deadline.tv_sec) * 1e9);
    bool queued = false;
    for (;;) {
        int best = -1, best_len = -1;
        for (int i = 0; i < a->p.slots; i++) {
            if (a->slots[i].busy)
                continue;
            int l = 0;
            if (a->slots[i].gs)
                l = common_prefix(shoal_gen_tokens(a->slots[i].gs),
                                  shoal_gen_pos(a->slots[i].gs), r->job.prompt, r->job.n_prompt);
            if (l > best_len) {
                best = i;
                best_len = l;
            }
        }
        if (best >= 0) {
            a->slots[best].busy = true;
            r->slot = best;
            a->n_active++;
            break;
        }
        if (!queued) {
            if (a->n_waiting >= a->p.queue) {
                snprintf(err, errlen, "too many requests: %d generating and %d waiting",
                         a->p.slots, a->n_waiting);
                status = 429;
                goto out;
            }
            a->n_waiting++;
            queued = true;
            shoal_metrics_set(a->metrics, a->m_queued, NULL, a->n_waiting);
        }
        int rc = pthread_cond_timedwait(&a->slot_free, &a->mu, &deadline);
        if (a->stopping || !a->lm || !a->covered) {
            snprintf(err, errlen, "%s", a->stopping ? "the server is stopping" : a->route_err);
            status = 503;
            break;
        }
        if (rc == ETIMEDOUT) {
            snprintf(err, errlen, "the server is busy: no generation slot freed in %.0f s",
                     a->p.queue_timeout);
            status = 503;
            break;
        }
    }
    if (queued) {
        a->n_waiting--;
        shoal_metrics_set(a->metrics, a->m_queued, NULL, a->n_waiting);
    }
out:
    if (!status)
        shoal_metrics_set(a->metrics, a->m_active, NULL, a->n_active);
    pthread_mutex_unlock(&a->mu);
    return status;
}

/* Gives r's slot back; a broken session is dropped so the next user opens
 * a fresh one. */
static void slot_release(shoal_api *a, req *r)
{
    if (r->slot < 0)
        return;
    if (r->gs && shoal_gen_broken(r->gs))
        shoal_gen_destroy(&r->gs);
    pthread_mutex_lock(&a->mu);
    a->slots[r->slot].gs = r->gs;
    a->slots[r->slot].busy = false;
    a->n_active--;
    shoal_metrics_set(a->metrics, a->m_active, NULL, a->n_active);
    pthread_cond_signal(&a->slot_free);
    pthread_mutex_unlock(&a->mu);
    r->slot = -1;
    r->gs = NULL;
}

/* ---- generation ----------------------------------------------------------------- */

static int text_append(req *r, const char *s, size_t n)
{
    if (n > r->text_cap - r->text_len) {
        size_t cap = r->text_cap ? r->text_cap : 1024;
        while (n > cap - r->text_len)
            cap *= 2;
        char *t = realloc(r->text, cap);
        if (!t)
            return SHOAL_ERR_NOMEM;
        r->text = t;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, s, n);
    r->text_len += n;
    return 0;
}

/* Cuts the text at the first stop string that occurs in it, looking only
 * where new bytes (from `from` on) could complete one. True when cut. */
static bool apply_stops(req *r, size_t from)
{
    size_t best = SIZE_MAX;
    for (int i = 0; i < r->job.n_stops; i++) {
        size_t l = r->job.stop_len[i];
        if (l > r->text_len)
            continue;
        size_t start = from > l - 1 ? from - (l - 1) : 0;
        for (size_t p = start; p + l <= r->text_len && p < best; p++)
            if (!memcmp(r->text + p, r->job.stops[i], l)) {
                best = p;
                break;
            }
    }
    if (best == SIZE_MAX)
        return false;
    r->text_len = best;
    return true;
}

/* Bytes of the text that can be sent: all of it once finished, else all
 * but the longest tail that is a proper prefix of a stop string. */
static size_t text_ready(const req *r)
{
    if (r->finish)
        return r->text_len;
    size_t hold = 0;
    for (int i = 0; i < r->job.n_stops; i++) {
        size_t l = r->job.stop_len[i];
        for (size_t k = l - 1 < r->text_len ? l - 1 : r->text_len; k > hold; k--)
            if (!memcmp(r->text + r->text_len - k, r->job.stops[i], k)) {
                hold = k;
                break;
            }
    }
    return r->text_len - hold;
}

static void gen_finish(req *r, const char *why)
{
    size_t len;
    r->finish = why;
    if (!shoal_gen_out_flush(&r->out, r->piece, sizeof r->piece, &len) && len &&
        !text_append(r, r->piece, len))
        apply_stops(r, r->text_len - len);
    shoal_metrics_inc(r->a->metrics, r->a->m_tokens, NULL, r->n_gen);
    slot_release(r->a, r);
}

/* Runs the prompt in the slot's session. 0, or an HTTP status with err. */
static int gen_start(req *r, char *err, size_t errlen)
{
    shoal_api *a = r->a;
    api_slot *s = &a->slots[r->slot];
    r->gs = s->gs;
    s->gs = NULL;
    int rc;
    if (!r->gs && (rc = shoal_gen_new(a->lm, &r->job.sp, &r->gs, err, errlen))) {
        SHOAL_LOG_W("api: cannot open a session: %s", err);
        return rc == SHOAL_ERR_NOMEM ? 500 : 503;
    }
    if ((rc = shoal_gen_set_sampler(r->gs, &r->job.sp))) {
        snprintf(err, errlen, "bad sampling parameters");
        return 400;
    }
    shoal_metrics_inc(a->metrics, a->m_prompt, NULL, r->job.n_prompt);
    if ((rc = shoal_gen_sync(r->gs, r->job.prompt, r->job.n_prompt, NULL))) {
        snprintf(err, errlen, "%s", shoal_gen_error(r->gs));
        SHOAL_LOG_W("api: prompt failed: %s", err);
        return shoal_gen_broken(r->gs) ? 503 : 500;
    }
    shoal_gen_out_init(&r->out, shoal_lm_tokenizer(a->lm), r->job.prompt[r->job.n_prompt - 1], true);
    return 0;
}

/* One token: 0 (r->finish set when the reply is over) or an error code
 * with r->gen_err set (the reply is over, r->finish NULL). */
static int gen_step(req *r)
{
    shoal_api *a = r->a;
    const shoal_tokenizer *tok = shoal_lm_tokenizer(a->lm);
    if (a->stopping) {
        snprintf(r->gen_err, sizeof r->gen_err, "the server is stopping");
        slot_release(a, r);
        return SHOAL_ERR_CANCELLED;
    }
    int32_t next = shoal_gen_sample(r->gs);
    if (!r->first_token_seen) {
        r->first_token_seen = true;
        const char *v[1] = {route_label[r->route]};
        shoal_metrics_observe(a->metrics, a->m_ttft, v, now_s() - r->t0);
    }
    if (shoal_tokenizer_is_eog(tok, next) || next == r->job.end_tok) {
        gen_finish(r, "stop");
        return 0;
    }
    r->n_gen++;
    size_t len = 0;
    int rc = shoal_gen_out_push(&r->out, next, r->piece, sizeof r->piece, &len);
    if (!rc && len) {
        size_t from = r->text_len;
        if ((rc = text_append(r, r->piece, len))) {
            snprintf(r->gen_err, sizeof r->gen_err, "out of memory");
            slot_release(a, r);
            return rc;
        }
        if (apply_stops(r, from)) {
            gen_finish(r, "stop");
            return 0;
        }
    }
    if (r->n_gen >= r->job.max_tokens || shoal_gen_pos(r->gs) >= shoal_gen_ctx(r->gs)) {
        gen_finish(r, "length");
        return 0;
    }
    if ((rc = shoal_gen_feed(r->gs, &next, 1))) {
        snprintf(r->gen_err, sizeof r->gen_err, "%s", shoal_gen_error(r->gs));
        SHOAL_LOG_W("api: generation failed: %s", r->gen_err);
        slot_release(a, r);
        return rc;
    }
    return 0;
}

static uint64_t fresh_seed(shoal_api *a)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^
                 (atomic_fetch_add(&a->seq, 1) * 0x9E3779B97F4A7C15ULL);
    x ^= x >> 31;
    return x * 0xBF58476D1CE4E5B9ULL;
}

/* ---- answers ------------------------------------------------------------------ */

static json_t *text_json(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    return j ? j : json_string("");
}

static json_t *usage_json(const req *r)
{
    return json_pack("{s:i,s:i,s:i}", "prompt_tokens", r->job.n_prompt, "completion_tokens",
                     r->n_gen, "total_tokens", r->job.n_prompt + r->n_gen);
}

/* The whole answer of a plain request. */
static json_t *answer_json(const req *r)
{
    shoal_api *a = r->a;
    json_t *choice;
    if (r->job.chat)
        choice = json_pack("{s:i,s:{s:s,s:o},s:n,s:s}", "index", 0, "message", "role",
                           "assistant", "content", text_json(r->text, r->text_len), "logprobs",
                           "finish_reason", r->finish);
    else
        choice = json_pack("{s:o,s:i,s:n,s:s}", "text", text_json(r->text, r->text_len),
                           "index", 0, "logprobs", "finish_reason", r->finish);
    return json_pack("{s:s,s:s,s:I,s:s,s:[o],s:o,s:n}", "id", r->id, "object",
                     r->job.chat ? "chat.completion" : "text_completion", "created",
                     (json_int_t)r->created, "model", a->model_name, "choices", choice, "usage",
                     usage_json(r), "system_fingerprint");
}

/* One streaming chunk: text[0..n) (NULL: none), finish (NULL: null),
 * role: the chat's first chunk. */
static json_t *chunk_json(const req *r, const char *text, size_t n, const char *finish,
                          bool role)
{
    shoal_api *a = r->a;
    json_t *choice;
    if (r->job.chat) {
        json_t *delta = json_object();
        if (role) {
            json_object_set_new(delta, "role", json_string("assistant"));
            json_object_set_new(delta, "content", json_string(""));
        }
        if (text)
            json_object_set_new(delta, "content", text_json(text, n));
        choice = json_pack("{s:i,s:o,s:n,s:s?}", "index", 0, "delta", delta, "logprobs",
                           "finish_reason", finish);
    } else {
        choice = json_pack("{s:o,s:i,s:n,s:s?}", "text", text_json(text ? text : "", n),
                           "index", 0, "logprobs", "finish_reason", finish);
    }
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", r->id, "object",
                          r->job.chat ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)r->created, "model", a->model_name, "choices", choice);
    if (j && r->job.include_usage)
        json_object_set_new(j, "usage", json_null());
    return j;
}

static json_t *usage_chunk_json(const req *r)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", r->id, "object",
                     r->job.chat ? "chat.completion.chunk" : "text_completion", "created",
                     (json_int_t)r->created, "model", r->a->model_name, "choices", "usage",
                     usage_json(r));
}

/* Makes `data: JSON\n\n` (or `data: [DONE]\n\n` when j is NULL and done)
 * the pending event. */
static int sse_set(req *r, json_t *j, bool done)
{
    free(r->sse);
    r->sse = NULL;
    r->sse_len = r->sse_off = 0;
    char *s = NULL;
    if (!done) {
        s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!s)
            return SHOAL_ERR_NOMEM;
    }
    const char *body = done ? "[DONE]" : s;
    size_t n = strlen(body);
    r->sse = malloc(n + 9);
    if (r->sse) {
        memcpy(r->sse, "data: ", 6);
        memcpy(r->sse + 6, body, n);
        memcpy(r->sse + 6 + n, "\n\n", 3);
        r->sse_len = n + 8;
    }
    free(s);
    return r->sse ? 0 : SHOAL_ERR_NOMEM;
}

enum { PH_ROLE, PH_GEN, PH_USAGE, PH_DONE, PH_END };

/* The next event of a stream into r->sse; false at the end. */
static bool stream_next(req *r)
{
    for (;;) {
        switch (r->phase) {
        case PH_ROLE:
            r->phase = PH_GEN;
            if (r->job.chat)
                return !sse_set(r, chunk_json(r, NULL, 0, NULL, true), false);
            break;
        case PH_GEN: {
            if (!r->finish && !r->gen_err[0] && gen_step(r)) {
                /* OpenAI's shape of an error in a stream */
                r->phase = PH_DONE;
                return !sse_set(r, error_json("server_error", NULL, "generation_failed",
                                              r->gen_err),
                                false);
            }
            size_t ready = text_ready(r);
            if (ready > r->emitted) {
                const char *t = r->text + r->emitted;
                size_t n = ready - r->emitted;
                r->emitted = ready;
                return !sse_set(r, chunk_json(r, t, n, NULL, false), false);
            }
            if (r->finish) { /* OpenAI ends with an empty delta and the reason */
                r->phase = r->job.include_usage ? PH_USAGE : PH_DONE;
                return !sse_set(r, chunk_json(r, NULL, 0, r->finish, false), false);
            }
            break;
        }
        case PH_USAGE:
            r->phase = PH_DONE;
            return !sse_set(r, usage_chunk_json(r), false);
        case PH_DONE:
            r->phase = PH_END;
            return !sse_set(r, NULL, true);
        default:
            return false;
        }
    }
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    req *r = cls;
    while (r->sse_off == r->sse_len) {
        if (!stream_next(r))
            return r->phase == PH_END && r->sse ? MHD_CONTENT_READER_END_OF_STREAM
                                                : MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = r->sse_len - r->sse_off < max ? r->sse_len - r->sse_off : max;
    memcpy(buf, r->sse + r->sse_off, n);
    r->sse_off += n;
    return (ssize_t)n;
}

/* Frees r when neither its connection nor its streaming response needs it
 * any more (libmicrohttpd does not promise which lets go first). */
static void req_unref(req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    shoal_api_job_free(&r->job);
    free(r->body);
    free(r->job.prompt);
    free(r->text);
    free(r->sse);
    free(r);
}

/* The stream's end (or the client's departure): the slot goes back. */
static void stream_done(void *cls)
{
    req *r = cls;
    if (r->slot >= 0) {
        if (!r->finish && !r->gen_err[0])
            count_error(r, 499); /* the client went away */
        slot_release(r->a, r);
    }
    req_unref(r);
}

/* ---- routes ---------------------------------------------------------------------- */

static enum MHD_Result handle_completion(req *r, struct MHD_Connection *c)
{
    shoal_api *a = r->a;
    shoal_api_error e = {0};
    char err[API_ERR_MAX];
    pthread_mutex_lock(&a->mu);
    bool loaded = a->lm != NULL;
    pthread_mutex_unlock(&a->mu);
    if (!loaded)
        return send_error(r, c, 503, NULL, NULL, "model_loading", "the model is still loading");
    shoal_api_parse_ctx pc = {a->lm, a->model_name, fresh_seed(a)};
    if (shoal_api_parse(&pc, r->body, r->len, r->route == R_CHAT, &r->job, &e))
        return send_error(r, c, e.status, NULL, e.param, e.code, "%s", e.msg);
    int status = slot_acquire(a, r, err, sizeof err);
    if (status)
        return send_error(r, c, status, NULL, NULL, status == 429 ? "rate_limit_exceeded"
                                                                  : "service_unavailable",
                          "%s", err);
    if ((status = gen_start(r, err, sizeof err))) {
        slot_release(a, r);
        return send_error(r, c, status, NULL, NULL,
                          status == 400 ? "invalid_value" : "generation_failed", "%s", err);
    }
    snprintf(r->id, sizeof r->id, "%s-%016" PRIx64 "%08" PRIx64, r->job.chat ? "chatcmpl" : "cmpl",
             fresh_seed(a), (uint64_t)atomic_fetch_add(&a->seq, 1));
    r->created = time(NULL);
    if (r->job.stream) {
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, r,
                                              stream_done);
        if (!resp) {
            slot_release(a, r);
            return MHD_NO;
        }
        atomic_fetch_add(&r->refs, 1);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        r->status = 200;
        r->responded = true;
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    while (!r->finish)
        if (gen_step(r))
            return send_error(r, c, a->stopping ? 503 : 500, NULL, NULL, "generation_failed",
                              "%s", r->gen_err);
    return send_json(r, c, 200, answer_json(r));
}

static json_t *model_json(const shoal_api *a)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", a->model_name, "object", "model", "created",
                     (json_int_t)a->created, "owned_by", "shoal");
}

static enum MHD_Result handle_health(req *r, struct MHD_Connection *c)
{
    shoal_api *a = r->a;
    pthread_mutex_lock(&a->mu);
    json_t *j;
    int status;
    if (!a->lm) {
        status = 503;
        j = json_pack("{s:s,s:s}", "status", "loading", "message", "the model is still loading");
    } else if (!a->covered) {
        status = 503;
        j = json_pack("{s:s,s:s}", "status", "unavailable", "message", a->route_err);
    } else {
        status = 200;
        j = json_pack("{s:s,s:s,s:i,s:i,s:i}", "status", "ok", "model", a->model_name,
                      "slots", a->p.slots, "slots_busy", a->n_active, "queued", a->n_waiting);
    }
    pthread_mutex_unlock(&a->mu);
    return send_json(r, c, status, j);
}

static enum MHD_Result handle_metrics(req *r, struct MHD_Connection *c)
{
    char *text = NULL;
    size_t len = 0;
    if (shoal_metrics_render(r->a->metrics, &text, &len))
        return send_error(r, c, 500, NULL, NULL, NULL, "out of memory");
    return send_body(r, c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

static enum MHD_Result handle_dashboard(req *r, struct MHD_Connection *c)
{
    if (!r->a->p.state)
        return send_error(r, c, 404, NULL, NULL, "unknown_url",
                          "no dashboard: this API was started without --initial-peers");
    char *page = strdup(shoal_dashboard_html);
    if (!page)
        return send_error(r, c, 500, NULL, NULL, NULL, "out of memory");
    return send_body(r, c, 200, "text/html; charset=utf-8", page, strlen(page));
}

static enum MHD_Result handle_state(req *r, struct MHD_Connection *c)
{
    shoal_api *a = r->a;
    if (!a->p.state)
        return send_error(r, c, 404, NULL, NULL, "unknown_url",
                          "no swarm state: this API was started without --initial-peers");
    pthread_mutex_lock(&a->mu);
    json_t *self = json_pack("{s:s,s:s,s:b,s:i,s:i}", "role", "api", "model", a->model_name,
                             "ready", a->lm && a->covered, "slots", a->p.slots, "slots_busy",
                             a->n_active);
    pthread_mutex_unlock(&a->mu);
    char *text = shoal_state_json(a->p.state, self);
    if (!text)
        return send_error(r, c, 500, NULL, NULL, NULL, "out of memory");
    return send_body(r, c, 200, "application/json", text, strlen(text));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    shoal_api *a = cls;
    req *r = *con_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof *r)))
            return MHD_NO;
        r->a = a;
        atomic_init(&r->refs, 1);
        r->slot = -1;
        r->t0 = now_s();
        const char *model_id;
        r->route = route_of(url, &model_id);
        *con_cls = r;
        const char *v[1] = {route_label[r->route]};
        shoal_metrics_inc(a->metrics, a->m_requests, v, 1);
        bool post = r->route == R_CHAT || r->route == R_COMPLETIONS;
        bool is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
        if (!strcmp(method, "OPTIONS")) { /* CORS preflight */
            struct MHD_Response *resp =
                MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
            if (!resp)
                return MHD_NO;
            MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
            MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
            MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                    "Authorization, Content-Type");
            r->status = 204;
            r->responded = true;
            enum MHD_Result ret = MHD_queue_response(c, 204, resp);
            MHD_destroy_response(resp);
            return ret;
        }
        if (r->route == R_OTHER)
            return send_error(r, c, 404, NULL, NULL, "unknown_url", "Invalid URL (%.16s %.200s)",
                              method, url);
        if (post ? strcmp(method, "POST") : !is_get)
            return send_error(r, c, 405, NULL, NULL, "method_not_allowed",
                              "Method %.16s is not allowed on %s (use %s)", method,
                              route_label[r->route], post ? "POST" : "GET");
        if (a->api_key && r->route != R_HEALTH && r->route != R_METRICS &&
            r->route != R_DASHBOARD && r->route != R_STATE) { /* public: the swarm's view */
            const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                           MHD_HTTP_HEADER_AUTHORIZATION);
            if (!auth || strncasecmp(auth, "Bearer ", 7))
                return send_error(r, c, 401, NULL, NULL, "invalid_api_key",
                                  "You didn't provide an API key: send it as "
                                  "'Authorization: Bearer KEY'");
            const char *key = auth + 7;
            while (*key == ' ')
                key++;
            if (!key_matches(key, a->api_key))
                return send_error(r, c, 401, NULL, NULL, "invalid_api_key",
                                  "Incorrect API key provided");
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > a->p.max_body)
            return send_error(r, c, 413, NULL, NULL, "request_too_large",
                              "the request body is over %zu bytes", a->p.max_body);
        if (r->route == R_MODEL && strcmp(model_id, a->model_name))
            return send_error(r, c, 404, NULL, "model", "model_not_found",
                              "The model '%.200s' does not exist", model_id);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->responded && !r->too_large) {
            size_t n = *upload_size;
            if (n > a->p.max_body - r->len) {
                r->too_large = true;
            } else {
                if (n > r->cap - r->len) {
                    size_t cap = r->cap ? r->cap : 4096;
                    while (n > cap - r->len)
                        cap *= 2;
                    if (cap > a->p.max_body)
                        cap = a->p.max_body;
                    char *b = realloc(r->body, cap);
                    if (!b)
                        return MHD_NO;
                    r->body = b;
                    r->cap = cap;
                }
                memcpy(r->body + r->len, upload, n);
                r->len += n;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->responded)
        return MHD_YES;
    if (r->too_large)
        return send_error(r, c, 413, NULL, NULL, "request_too_large",
                          "the request body is over %zu bytes", a->p.max_body);
    switch (r->route) {
    case R_CHAT:
    case R_COMPLETIONS:
        return handle_completion(r, c);
    case R_MODELS:
        return send_json(r, c, 200, json_pack("{s:s,s:[o]}", "object", "list", "data",
                                               model_json(a)));
    case R_MODEL:
        return send_json(r, c, 200, model_json(a));
    case R_HEALTH:
        return handle_health(r, c);
    case R_METRICS:
        return handle_metrics(r, c);
    case R_DASHBOARD:
        return handle_dashboard(r, c);
    case R_STATE:
        return handle_state(r, c);
    default:
        return send_error(r, c, 404, NULL, NULL, "unknown_url", "Invalid URL");
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)toe;
    shoal_api *a = cls;
    req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    if (r->slot >= 0)
        slot_release(a, r);
    const char *v[1] = {route_label[r->route]};
    shoal_metrics_observe(a->metrics, a->m_duration, v, now_s() - r->t0);
    req_unref(r);
}

/* ---- the server ----------------------------------------------------------------- */

shoal_api_params shoal_api_params_default(void)
{
    return (shoal_api_params){
        .host = "127.0.0.1",
        .port = 8080,
        .slots = 4,
        .queue = 64,
        .queue_timeout = 30,
        .max_body = 1 << 20,
        .max_connections = 256,
        .health_interval = 5,
    };
}

static void *health_main(void *arg)
{
    shoal_api *a = arg;
    char err[API_ERR_MAX];
    pthread_mutex_lock(&a->mu);
    while (!a->stopping) {
        shoal_lm *lm = a->lm;
        pthread_mutex_unlock(&a->mu);
        int rc = shoal_lm_check_route(lm, err, sizeof err);
        pthread_mutex_lock(&a->mu);
        bool was = a->covered;
        a->covered = rc == 0;
        if (rc)
            snprintf(a->route_err, sizeof a->route_err, "the swarm does not cover the model: %.900s",
                     err);
        if (was != a->covered) {
            if (a->covered)
                SHOAL_LOG_I("api: the peers cover every block of the model");
            else
                SHOAL_LOG_W("api: %s", a->route_err);
            shoal_metrics_set(a->metrics, a->m_ready, NULL, a->covered);
            pthread_cond_broadcast(&a->slot_free);
        }
        /* until covered, look again soon */
        double wait = a->covered ? a->p.health_interval : 1.0;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = ts.tv_sec + ts.tv_nsec * 1e-9 + wait;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        if (!a->stopping)
            pthread_cond_timedwait(&a->wake, &a->mu, &ts);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static int add_metrics(shoal_api *a)
{
    static const char *const route[] = {"route"}, *const route_code[] = {"route", "code"};
    shoal_metrics *m = a->metrics;
    a->m_requests = shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "shoal_requests_total",
                                             "HTTP requests received, by route.", route, 1,
                                             NULL, 0);
    a->m_errors = shoal_metrics_add_family(
        m, SHOAL_METRIC_COUNTER, "shoal_request_errors_total",
        "HTTP requests answered with an error (code 499: the client left a stream), by route "
        "and status code.",
        route_code, 2, NULL, 0);
    a->m_tokens = shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER,
                                           "shoal_tokens_generated_total",
                                           "Tokens generated for completions.", NULL, 0, NULL, 0);
    a->m_prompt = shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "shoal_prompt_tokens_total",
                                           "Prompt tokens of completion requests.", NULL, 0,
                                           NULL, 0);
    a->m_active = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "shoal_active_requests",
                                           "Requests holding a generation slot.", NULL, 0, NULL,
                                           0);
    a->m_queued = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "shoal_queued_requests",
                                           "Requests waiting for a generation slot.", NULL, 0,
                                           NULL, 0);
    a->m_slots = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "shoal_generation_slots",
                                          "Generation slots (sessions at once).", NULL, 0, NULL,
                                          0);
    a->m_ready = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "shoal_model_ready",
                                          "1 when the model can be used (loaded, and its blocks "
                                          "covered by the peers), else 0.",
                                          NULL, 0, NULL, 0);
    a->m_duration = shoal_metrics_add_family(
        m, SHOAL_METRIC_HISTOGRAM, "shoal_request_duration_seconds",
        "Time from a request's first byte to its last, by route.", route, 1,
        shoal_metrics_latency_bounds, shoal_metrics_latency_n_bounds);
    a->m_ttft = shoal_metrics_add_family(
        m, SHOAL_METRIC_HISTOGRAM, "shoal_time_to_first_token_seconds",
        "Time from a completion request's first byte to its first token, by route.", route, 1,
        shoal_metrics_latency_bounds, shoal_metrics_latency_n_bounds);
    if (a->m_requests < 0 || a->m_errors < 0 || a->m_tokens < 0 || a->m_prompt < 0 ||
        a->m_active < 0 || a->m_queued < 0 || a->m_slots < 0 || a->m_ready < 0 ||
        a->m_duration < 0 || a->m_ttft < 0)
        return SHOAL_ERR_NOMEM;
    /* every series exists from the start, so rates work from the first scrape */
    shoal_metrics_inc(m, a->m_tokens, NULL, 0);
    shoal_metrics_inc(m, a->m_prompt, NULL, 0);
    shoal_metrics_set(m, a->m_active, NULL, 0);
    shoal_metrics_set(m, a->m_queued, NULL, 0);
    shoal_metrics_set(m, a->m_slots, NULL, a->p.slots);
    shoal_metrics_set(m, a->m_ready, NULL, 0);
    for (int i = 0; i < R__COUNT; i++) {
        const char *v[1] = {route_label[i]};
        shoal_metrics_inc(m, a->m_requests, v, 0);
    }
    return 0;
}

int shoal_api_start(const shoal_api_params *p, shoal_api **out, char *err, size_t errlen)
{
    *out = NULL;
    if (p->slots < 1 || p->queue < 0 || !(p->queue_timeout >= 0) || p->max_body < 1 ||
        p->max_connections < 1 || p->port < 0 || p->port > 65535 || !p->host ||
        !(p->health_interval > 0)) {
        snprintf(err, errlen, "bad API parameters");
        return SHOAL_ERR_ARG;
    }
    shoal_api *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    a->p = *p;
    a->created = time(NULL);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->slot_free, NULL);
    pthread_cond_init(&a->wake, NULL);
    snprintf(a->route_err, sizeof a->route_err, "the model is still loading");
    int rc = SHOAL_ERR_NOMEM;
    a->host = strdup(p->host);
    a->api_key = p->api_key && *p->api_key ? strdup(p->api_key) : NULL;
    a->model_name = strdup(p->model_name && *p->model_name ? p->model_name : "model");
    a->slots = calloc((size_t)p->slots, sizeof *a->slots);
    a->metrics = shoal_metrics_new();
    if (!a->host || (p->api_key && *p->api_key && !a->api_key) ||
        !a->model_name || !a->slots || !a->metrics || add_metrics(a)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    a->p.host = a->host;
    a->p.api_key = a->api_key;

    a->mhd = shoal_http_listen(p->host, p->port, (unsigned)p->max_connections, 600, on_request,
                               a, on_completed, a, &a->port, err, errlen);
    if (!a->mhd) {
        rc = SHOAL_ERR_IO;
        goto fail;
    }
    *out = a;
    return 0;
fail:
    shoal_api_stop(&a);
    return rc;
}

int shoal_api_port(const shoal_api *a) { return a->port; }

void shoal_api_set_lm(shoal_api *a, shoal_lm *lm)
{
    pthread_mutex_lock(&a->mu);
    a->lm = lm;
    a->covered = !shoal_lm_remote(lm);
    if (a->covered)
        shoal_metrics_set(a->metrics, a->m_ready, NULL, 1);
    else
        snprintf(a->route_err, sizeof a->route_err,
                 "the swarm does not cover the model yet (asking the peers)");
    if (shoal_lm_remote(lm) && !a->health_started &&
        !pthread_create(&a->health, NULL, health_main, a))
        a->health_started = true;
    pthread_cond_broadcast(&a->slot_free);
    pthread_mutex_unlock(&a->mu);
}

void shoal_api_stop(shoal_api **p)
{
    shoal_api *a = p ? *p : NULL;
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    pthread_cond_broadcast(&a->slot_free);
    pthread_cond_broadcast(&a->wake);
    pthread_mutex_unlock(&a->mu);
    if (a->mhd)
        MHD_stop_daemon(a->mhd);
    if (a->health_started)
        pthread_join(a->health, NULL);
    for (int i = 0; a->slots && i < a->p.slots; i++)
        shoal_gen_destroy(&a->slots[i].gs);
    free(a->slots);
    shoal_metrics_destroy(&a->metrics);
    free(a->host);
    free(a->api_key);
    free(a->model_name);
    pthread_cond_destroy(&a->wake);
    pthread_cond_destroy(&a->slot_free);
    pthread_mutex_destroy(&a->mu);
    free(a);
    *p = NULL;
}
