/*
 * Training sessions on the node (see train.h and docs/WIRE.md).
 *
 * A session is a slot in a fixed table (under node->mu) holding its owner,
 * span, budget tokens, idle clock and busy flag, and, worker-only while
 * busy, the span's training state (lora/train_span.h) over weight views
 * of its blocks (kernels/backward.h). An open reserves the slot and the
 * budget under the lock and builds the state outside it; a close or an
 * expiry removes the slot under the lock.
 *
 * Every request is checked before the session changes: tensor count,
 * shape and size against the session's micro-batch size and the node's
 * request cap, decoding (NaN, Inf), checkpoint ranges and values; a bad
 * request gets an ERROR reply and leaves the session as it was.
 */
#include "node/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "lora/adapter.h"
#include "lora/train_span.h"
#include "swarm/log.h"

typedef struct node_train_session {
    uint64_t id;
    char owner[NODE_OWNER_SIZE];
    int a, b;                  /* blocks [a, b) */
    uint64_t tokens;           /* taken from the budget */
    double last_used;
    int busy;
    /* worker-only while busy: */
    shoal_train_w *w;
    shoal_train_span *span;
} node_train_session;

/* A served adapter: its pairs for the node's span, as inference views. */
typedef struct node_adapter {
    char name[NODE_ADAPTER_NAME_MAX];
    shoal_adapter *ad;
    shoal_fwd_lora *views;     /* (span blocks, SHOAL_PROJ__COUNT) */
    int b0, b1;
} node_adapter;

typedef struct node_train_table {
    node_train_session *s[NODE_TRAIN_MAX_SESSIONS];
    int n;
    node_adapter adapters[NODE_MAX_ADAPTERS]; /* fixed once the node starts */
    int nadapters;
} node_train_table;

int node_train_init(shoal_node *n)
{
    n->train = calloc(1, sizeof *n->train);
    return n->train ? 0 : SHOAL_ERR_NOMEM;
}

static void session_free(node_train_session *s)
{
    if (!s)
        return;
    shoal_train_span_destroy(&s->span);
    shoal_train_w_destroy(&s->w);
    free(s);
}

/* Remove s from the table and the budget (under mu); the caller frees it. */
static void session_unlink_locked(shoal_node *n, node_train_session *s)
{
    node_train_table *t = n->train;
    for (int i = 0; i < t->n; i++)
        if (t->s[i] == s) {
            t->s[i] = t->s[--t->n];
            break;
        }
    n->reserved -= s->tokens;
}

void node_train_fini(shoal_node *n)
{
    if (!n->train)
        return;
    pthread_mutex_lock(&n->mu);
    node_train_close_all_locked(n);
    pthread_mutex_unlock(&n->mu);
    for (int i = 0; i < n->train->nadapters; i++) {
        shoal_adapter_destroy(&n->train->adapters[i].ad);
        free(n->train->adapters[i].views);
    }
    free(n->train);
    n->train = NULL;
}

bool node_train_is_op(int op)
{
    return op >= SHOAL_OP_TRAIN_OPEN && op <= SHOAL_OP_TRAIN_CLOSE;
}

static node_train_session *find_locked(shoal_node *n, uint64_t id)
{
    for (int i = 0; i < n->train->n; i++)
        if (n->train->s[i]->id == id)
            return n->train->s[i];
    return NULL;
}

int node_train_claim_locked(shoal_node *n, node_job *j)
{
    j->ts = NULL;
    if (j->h.op == SHOAL_OP_TRAIN_OPEN)
        return 1;
    node_train_session *s = find_locked(n, j->h.session_id);
    if (s && s->owner[0] && strcmp(s->owner, j->owner))
        s = NULL; /* another client's session: as if unknown */
    if (s && s->busy)
        return 0;
    if (s)
        s->busy = 1;
    j->ts = s;
    return 1;
}

void node_train_release_locked(shoal_node *n, node_job *j)
{
    (void)n;
    if (!j->ts)
        return;
    j->ts->busy = 0;
    j->ts->last_used = node_now();
    j->ts = NULL;
}

int node_train_expire_locked(shoal_node *n, double now)
{
    int closed = 0;
    node_train_table *t = n->train;
    for (int i = 0; t && i < t->n;) {
        node_train_session *s = t->s[i];
        if (!s->busy && now - s->last_used > n->p.session_timeout_s) {
            SHOAL_LOG_I("training session %016llx idle for %.0f s: closed",
                        (unsigned long long)s->id, now - s->last_used);
            session_unlink_locked(n, s); /* moves the last entry into slot i */
            session_free(s);
            closed++;
        } else {
            i++;
        }
    }
    return closed;
}

int node_train_close_all_locked(shoal_node *n)
{
    int closed = 0;
    while (n->train && n->train->n) {
        node_train_session *s = n->train->s[0];
        session_unlink_locked(n, s);
        session_free(s);
        closed++;
    }
    return closed;
}

/* Replies go through worker.c's node_worker_send / node_worker_error. */

/* Reply w->rep (already initialised) with x (shape[0..ndim)) in codec when
 * x != NULL. */
static void train_reply(node_worker *w, node_job *j, const float *x, uint32_t ndim,
                        const uint32_t *shape, int codec)
{
    shoal_wire_header *r = &w->rep;
    size_t tlen = 0;
    if (x) {
        shoal_codec_desc d;
        if (shoal_codec_desc_init(&d, codec, ndim, shape) || d.nbytes > w->tcap) {
            node_worker_error(w, j, SHOAL_ERR_ARG, "bad reply codec %d", codec);
            return;
        }
        if (shoal_codec_encode(&d, x, w->tbuf, w->tcap)) {
            node_worker_error(w, j, SHOAL_ERR_RANGE, "the output does not fit codec %s",
                        shoal_codec_name(codec));
            return;
        }
        shoal_wire_tensor_add(r, &d);
        tlen = (size_t)d.nbytes;
    }
    size_t hlen;
    if (shoal_wire_encode(r, w->hbuf, SHOAL_WIRE_HEADER_MAX, &hlen)) {
        node_worker_error(w, j, SHOAL_ERR_INTERNAL, "cannot encode the reply");
        return;
    }
    node_worker_send(w, j, hlen, x ? w->tbuf : NULL, tlen);
}

static void train_ok(node_worker *w, node_job *j)
{
    shoal_wire_reply_init(&w->rep, &j->h);
    train_reply(w, j, NULL, 0, NULL, 0);
}

/* Decode the job's one tensor into w->x: ndim_ok says which ranks are
 * accepted (bit 1 << ndim), at most `cap` elements. On failure the error
 * reply has been sent. */
static int take(node_worker *w, node_job *j, unsigned ndim_ok, size_t cap, uint64_t *elems)
{
    shoal_node *n = w->node;
    const shoal_codec_desc *d = &j->h.tensors[0];
    size_t room = (size_t)n->p.max_batch * (size_t)n->hp.dim;
    if (j->h.ntensors != 1) {
        node_worker_error(w, j, SHOAL_ERR_FORMAT, "expected 1 tensor, got %u", j->h.ntensors);
        return -1;
    }
    if (d->ndim > 3 || !(ndim_ok & (1u << d->ndim)) || shoal_codec_desc_check(d, elems)) {
        node_worker_error(w, j, SHOAL_ERR_FORMAT, "a tensor of the wrong rank");
        return -1;
    }
    if (*elems > cap || *elems > room) {
        node_worker_error(w, j, SHOAL_ERR_RANGE, "%llu values in one request; at most %zu here",
                    (unsigned long long)*elems, cap < room ? cap : room);
        return -1;
    }
    int rc = shoal_codec_decode(d, zmq_msg_data(&j->msg.frame[2]),
                                zmq_msg_size(&j->msg.frame[2]), w->x, room);
    if (rc) {
        node_worker_error(w, j, rc, "the tensor does not decode (NaN, Inf or a bad block)");
        return -1;
    }
    return 0;
}

/* ---- the ops ---------------------------------------------------------------- */

static void do_open(node_worker *w, node_job *j)
{
    shoal_node *n = w->node;
    const shoal_wire_header *h = &j->h;
    if (h->span_start >= h->span_end || h->span_start < (uint32_t)n->p.block_begin ||
        h->span_end > (uint32_t)n->p.block_end) {
        node_worker_error(w, j, SHOAL_ERR_RANGE, "blocks %u:%u are not inside the served %d:%d",
                    h->span_start, h->span_end, n->p.block_begin, n->p.block_end);
        return;
    }
    if (h->session_id == 0) {
        node_worker_error(w, j, SHOAL_ERR_ARG, "session id 0 is reserved");
        return;
    }
    if (h->max_length < 1 || h->max_length > (uint32_t)n->p.max_batch) {
        node_worker_error(w, j, SHOAL_ERR_RANGE, "%u tokens per micro-batch; this node takes 1..%d",
                    h->max_length, n->p.max_batch);
        return;
    }
    shoal_train_span_params p = shoal_train_span_params_default();
    p.rank = h->lora_rank > SHOAL_LORA_MAX_RANK ? 0 : (int)h->lora_rank;
    p.alpha = (float)h->lora_alpha;
    p.targets = h->lora_targets;
    p.seed = h->lora_seed;
    p.opt = (shoal_adamw_params){(float)h->opt_lr, (float)h->opt_beta1, (float)h->opt_beta2,
                                 (float)h->opt_eps, (float)h->opt_wd};
    p.max_tokens = (int)h->max_length;
    p.max_saved = NODE_TRAIN_MAX_SAVED;
    p.threads = w->threads;
    char err[200];
    if (shoal_train_span_params_check(&n->hp, &p, err, sizeof err)) {
        node_worker_error(w, j, SHOAL_ERR_ARG, "%s", err);
        return;
    }
    if (shoal_train_state_len(&n->hp, (int)h->span_start, (int)h->span_end, p.targets, p.rank) >
        UINT32_MAX) {
        node_worker_error(w, j, SHOAL_ERR_RANGE, "the adapter state is too large for one session");
        return;
    }
    uint64_t bytes = shoal_train_span_bytes(&n->hp, (int)h->span_start, (int)h->span_end, &p);
    uint64_t bpt = shoal_kv_bytes_per_token(n->spans[0].m);
    uint64_t tokens = bpt ? (bytes + bpt - 1) / bpt : bytes;

    pthread_mutex_lock(&n->mu);
    node_train_session *old = find_locked(n, h->session_id);
    int rc = 0;
    node_train_session *s = NULL;
    if (old) {
        rc = (!strcmp(old->owner, j->owner) && old->a == (int)h->span_start &&
              old->b == (int)h->span_end) ? -1 : SHOAL_ERR_ARG;
    } else if (n->train->n >= NODE_TRAIN_MAX_SESSIONS || tokens > n->p.cache_tokens - n->reserved) {
        rc = SHOAL_ERR_BUSY;
    } else if (!(s = calloc(1, sizeof *s))) {
        rc = SHOAL_ERR_NOMEM;
    } else {
        s->id = h->session_id;
        snprintf(s->owner, sizeof s->owner, "%s", j->owner);
        s->a = (int)h->span_start;
        s->b = (int)h->span_end;
        s->tokens = tokens;
        s->busy = 1;
        s->last_used = node_now();
        n->train->s[n->train->n++] = s;
        n->reserved += tokens;
        j->ts = s; /* released after the job */
    }
    pthread_mutex_unlock(&n->mu);
    if (rc == -1) { /* a retried open that already went through */
        train_ok(w, j);
        return;
    }
    if (rc == SHOAL_ERR_ARG) {
        node_worker_error(w, j, rc, "session id %016llx is in use", (unsigned long long)h->session_id);
        return;
    }
    if (rc) {
        node_worker_error(w, j, rc, rc == SHOAL_ERR_BUSY ? "no room for a training session (%llu MiB)"
                                                   : "out of memory (%llu MiB)",
                    (unsigned long long)(bytes >> 20));
        return;
    }
    if ((rc = shoal_train_w_open(n->g, s->a, s->b, 0, &s->w, err, sizeof err)) ||
        (rc = shoal_train_span_new(s->w, s->a, s->b, &p, &s->span))) {
        pthread_mutex_lock(&n->mu);
        session_unlink_locked(n, s);
        j->ts = NULL;
        pthread_mutex_unlock(&n->mu);
        session_free(s);
        node_worker_error(w, j, rc, "cannot set up the training session: %s", shoal_strerror(rc));
        return;
    }
    SHOAL_LOG_D("training session %016llx open: blocks %d:%d, rank %d, %llu MiB",
                (unsigned long long)s->id, s->a, s->b, p.rank, (unsigned long long)(bytes >> 20));
    train_ok(w, j);
}

static void do_pass(node_worker *w, node_job *j, node_train_session *s)
{
    shoal_node *n = w->node;
    const shoal_train_span_params *sp = shoal_train_span_params_of(s->span);
    uint64_t elems;
    if (take(w, j, (1u << 2) | (1u << 3), (size_t)sp->max_tokens * (size_t)n->hp.dim, &elems))
        return;
    const shoal_codec_desc *d = &j->h.tensors[0];
    if (d->shape[d->ndim - 1] != (uint32_t)n->hp.dim) {
        node_worker_error(w, j, SHOAL_ERR_FORMAT, "expected hidden states ([sequences,] tokens, %d)",
                    n->hp.dim);
        return;
    }
    int n_seq = d->ndim == 3 ? (int)d->shape[0] : 1, T = (int)d->shape[d->ndim - 2];
    uint64_t key = (j->h.has & SHOAL_WIRE_HAS_STEP) ? j->h.step_id : 0;
    int rc = j->h.op == SHOAL_OP_TRAIN_FORWARD
                 ? shoal_train_span_forward(s->span, key, n_seq, T, w->x)
                 : shoal_train_span_backward(s->span, key, n_seq, T, w->x);
    if (rc) {
        node_worker_error(w, j, rc,
                    rc == SHOAL_ERR_BUSY       ? "%d micro-batches are already kept"
                    : rc == SHOAL_ERR_NOTFOUND ? "no forward kept for this step (%d kept at most)"
                                               : "the pass failed (%d kept at most)",
                    NODE_TRAIN_MAX_SAVED);
        return;
    }
    shoal_wire_reply_init(&w->rep, &j->h);
    int codec = (j->h.has & SHOAL_WIRE_HAS_REPLY_CODEC) ? (int)j->h.reply_codec : (int)d->codec;
    train_reply(w, j, w->x, d->ndim, d->shape, codec);
}

static void do_step(node_worker *w, node_job *j, node_train_session *s)
{
    const shoal_wire_header *h = &j->h;
    int64_t t = shoal_train_span_t(s->span);
    float lr = -1;
    if (h->has & SHOAL_WIRE_HAS_OPT) {
        const shoal_adamw_params *o = &shoal_train_span_params_of(s->span)->opt;
        if ((float)h->opt_beta1 != o->beta1 || (float)h->opt_beta2 != o->beta2 ||
            (float)h->opt_eps != o->eps || (float)h->opt_wd != o->weight_decay) {
            node_worker_error(w, j, SHOAL_ERR_ARG,
                        "only the learning rate may change during a session");
            return;
        }
        lr = (float)h->opt_lr;
    }
    if (h->step_id == (uint64_t)t && t > 0) { /* a retry of the step just taken */
        train_ok(w, j);
        return;
    }
    if (h->step_id != (uint64_t)t + 1) {
        node_worker_error(w, j, SHOAL_ERR_RANGE, "step %llu, but the session is at step %lld",
                    (unsigned long long)h->step_id, (long long)t);
        return;
    }
    shoal_train_span_step(s->span, lr);
    train_ok(w, j);
}

static void do_pull(node_worker *w, node_job *j, node_train_session *s)
{
    shoal_node *n = w->node;
    size_t total = shoal_train_span_state_len(s->span);
    size_t pos = j->h.position, room = (size_t)n->p.max_batch * (size_t)n->hp.dim;
    if (pos >= total || j->h.max_length == 0) {
        node_worker_error(w, j, SHOAL_ERR_RANGE, "offset %zu of a state of %zu floats", pos, total);
        return;
    }
    size_t k = total - pos;
    k = k < j->h.max_length ? k : j->h.max_length;
    k = k < room ? k : room;
    shoal_train_span_state_get(s->span, pos, k, w->x);
    shoal_wire_reply_init(&w->rep, &j->h);
    w->rep.has |= SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_MAX_LENGTH;
    w->rep.step_id = (uint64_t)shoal_train_span_t(s->span);
    w->rep.max_length = (uint32_t)total;
    uint32_t shape[1] = {(uint32_t)k};
    train_reply(w, j, w->x, 1, shape, SHOAL_CODEC_F32);
}

static void do_push(node_worker *w, node_job *j, node_train_session *s)
{
    size_t total = shoal_train_span_state_len(s->span);
    uint64_t elems;
    if (take(w, j, 1u << 1, total, &elems))
        return;
    if (j->h.step_id > (uint64_t)INT64_MAX / 2) {
        node_worker_error(w, j, SHOAL_ERR_RANGE, "step count %llu", (unsigned long long)j->h.step_id);
        return;
    }
    if (j->h.position > total || elems > total - j->h.position ||
        shoal_train_span_state_set(s->span, j->h.position, (size_t)elems, w->x)) {
        node_worker_error(w, j, SHOAL_ERR_RANGE,
                    "values %u..%llu of a state of %zu floats (or a negative second moment)",
                    j->h.position, (unsigned long long)(j->h.position + elems), total);
        return;
    }
    shoal_train_span_set_t(s->span, (int64_t)j->h.step_id);
    shoal_wire_reply_init(&w->rep, &j->h);
    w->rep.has |= SHOAL_WIRE_HAS_MAX_LENGTH;
    w->rep.max_length = (uint32_t)total;
    train_reply(w, j, NULL, 0, NULL, 0);
}

static void do_close(node_worker *w, node_job *j, node_train_session *s)
{
    shoal_node *n = w->node;
    pthread_mutex_lock(&n->mu);
    session_unlink_locked(n, s);
    j->ts = NULL;
    pthread_mutex_unlock(&n->mu);
    SHOAL_LOG_D("training session %016llx closed", (unsigned long long)s->id);
    session_free(s);
    train_ok(w, j);
}

void node_train_run(node_worker *w, node_job *j)
{
    if (j->h.op == SHOAL_OP_TRAIN_OPEN) {
        do_open(w, j);
        return;
    }
    node_train_session *s = j->ts;
    if (!s || !s->span) {
        node_worker_error(w, j, SHOAL_ERR_SESSION, "unknown training session");
        return;
    }
    switch (j->h.op) {
    case SHOAL_OP_TRAIN_FORWARD:
    case SHOAL_OP_TRAIN_BACKWARD: do_pass(w, j, s); break;
    case SHOAL_OP_TRAIN_STEP: do_step(w, j, s); break;
    case SHOAL_OP_TRAIN_PULL: do_pull(w, j, s); break;
    case SHOAL_OP_TRAIN_PUSH: do_push(w, j, s); break;
    case SHOAL_OP_TRAIN_CLOSE: do_close(w, j, s); break;
    default: node_worker_error(w, j, SHOAL_ERR_INTERNAL, "op %u queued by mistake", j->h.op);
    }
}

/* ---- served adapters ---------------------------------------------------------- */

static int name_ok(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    if (len < 1 || len >= NODE_ADAPTER_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int shoal_node_add_adapter(shoal_node *n, const char *name, const char *path, char *err,
                           size_t errlen)
{
    node_train_table *t = n->train;
    if (!name_ok(name)) {
        snprintf(err, errlen, "adapter name '%.80s': use 1..63 of A-Z a-z 0-9 . _ -",
                 name ? name : "");
        return SHOAL_ERR_ARG;
    }
    if (node_adapter_find(n, name)) {
        snprintf(err, errlen, "adapter '%s' given twice", name);
        return SHOAL_ERR_ARG;
    }
    if (t->nadapters >= NODE_MAX_ADAPTERS) {
        snprintf(err, errlen, "more than %d adapters", NODE_MAX_ADAPTERS);
        return SHOAL_ERR_ARG;
    }
    node_adapter *a = &t->adapters[t->nadapters];
    memset(a, 0, sizeof *a);
    char e[256];
    const int b0 = n->p.block_begin, b1 = n->p.block_end;
    int rc = shoal_adapter_load(path, &n->hp, b0, b1, &a->ad, e, sizeof e);
    if (rc) {
        snprintf(err, errlen, "adapter %s (%s): %s", name, path, e);
        return rc;
    }
    a->views = calloc((size_t)(b1 - b0) * SHOAL_PROJ__COUNT, sizeof *a->views);
    if (!a->views) {
        shoal_adapter_destroy(&a->ad);
        snprintf(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    for (int l = b0; l < b1; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            const shoal_lora *x = shoal_adapter_lora(a->ad, l, p);
            if (x)
                a->views[(l - b0) * SHOAL_PROJ__COUNT + p] = (shoal_fwd_lora){
                    shoal_lora_rank(x), shoal_lora_scale(x), shoal_lora_a_const(x),
                    shoal_lora_b_const(x)};
        }
    snprintf(a->name, sizeof a->name, "%s", name);
    a->b0 = b0;
    a->b1 = b1;
    t->nadapters++;
    SHOAL_LOG_I("adapter %s: %d LoRA pairs for blocks %d:%d from %s", name,
                shoal_adapter_n_pairs(a->ad), b0, b1, path);
    return 0;
}

const node_adapter *node_adapter_find(const shoal_node *n, const char *name)
{
    if (!name || !*name || !n->train)
        return NULL;
    for (int i = 0; i < n->train->nadapters; i++)
        if (!strcmp(n->train->adapters[i].name, name))
            return &n->train->adapters[i];
    return NULL;
}

void node_adapter_list(const shoal_node *n, char *out, size_t size)
{
    if (!size)
        return;
    out[0] = 0;
    size_t used = 0;
    for (int i = 0; n->train && i < n->train->nadapters; i++) {
        const char *name = n->train->adapters[i].name;
        size_t need = strlen(name) + (used ? 1 : 0);
        if (used + need >= size)
            break; /* whole names only */
        used += (size_t)snprintf(out + used, size - used, "%s%s", used ? "," : "", name);
    }
}

int node_adapter_apply(shoal_fwd *f, const node_adapter *a)
{
    return shoal_fwd_set_lora(f, a ? a->views : NULL, a ? a->b0 : 0, a ? a->b1 : 0);
}
