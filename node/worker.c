/*
 * The node's compute workers (see node.h and node_impl.h).
 *
 * A worker owns a forward-pass scratch per span it has recently computed
 * (slot 0 is the served span, always there; sub-spans asked for by clients
 * share the other slots, least recently used first out), an input buffer of
 * max_batch tokens, and reply buffers, all allocated at start or at a
 * span's first use: a step allocates nothing but, the first time a session
 * sees a longer step, its retry cache.
 *
 * A job's tensor is decoded before anything in the session changes, so a
 * malformed step leaves the session as it was. Replies go to the I/O
 * thread through the worker's PUSH socket as [routing id][header][tensor].
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "node/node_impl.h"
#include "node/push.h"
#include "node/train.h"
#include "swarm/log.h"

int node_worker_init(shoal_node *n, node_worker *w, int index, int threads)
{
    memset(w, 0, sizeof *w);
    w->node = n;
    w->index = index;
    w->threads = threads;
    size_t elems = (size_t)n->p.max_batch * (size_t)n->hp.dim;
    w->x = malloc(elems * sizeof(float));
    w->hbuf = malloc(SHOAL_WIRE_HEADER_MAX);
    w->tcap = elems * sizeof(float);
    w->tbuf = malloc(w->tcap);
    if (!w->x || !w->hbuf || !w->tbuf)
        return SHOAL_ERR_NOMEM;
    int max_ctx = (int)(n->p.max_length > (uint32_t)n->p.max_batch ? n->p.max_length
                                                                     : (uint32_t)n->p.max_batch);
    w->slot[0].span = &n->spans[0];
    w->slot[0].f = shoal_fwd_new(n->spans[0].m, n->p.max_batch, max_ctx, threads);
    if (!w->slot[0].f)
        return SHOAL_ERR_NOMEM;
    w->push = zmq_socket(n->ctx, ZMQ_PUSH);
    int zero = 0;
    if (!w->push || zmq_setsockopt(w->push, ZMQ_SNDHWM, &zero, sizeof zero) ||
        zmq_setsockopt(w->push, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_connect(w->push, n->pull_ep))
        return SHOAL_ERR_IO;
    return 0;
}

void node_worker_fini(node_worker *w)
{
    for (int i = 0; i < WORKER_FWD_SLOTS; i++) {
        shoal_fwd_destroy(&w->slot[i].f);
        shoal_kv_destroy(&w->slot[i].scratch);
    }
    shoal_transport_close(&w->push);
    free(w->x);
    free(w->hbuf);
    free(w->tbuf);
    memset(w, 0, sizeof *w);
}

/* The scratch for span sp, made (evicting the least recently used
 * sub-span) when missing. NULL when out of memory. */
static node_fwd_slot *worker_slot(node_worker *w, const node_span *sp)
{
    shoal_node *n = w->node;
    node_fwd_slot *victim = NULL;
    for (int i = 0; i < WORKER_FWD_SLOTS; i++) {
        node_fwd_slot *s = &w->slot[i];
        if (s->span == sp) {
            s->used = ++w->stamp;
            return s;
        }
        if (i > 0 && (!victim || !s->span || (victim->span && s->used < victim->used)))
            victim = s;
    }
    shoal_fwd_destroy(&victim->f);
    shoal_kv_destroy(&victim->scratch);
    victim->span = NULL;
    int max_ctx = (int)(n->p.max_length > (uint32_t)n->p.max_batch ? n->p.max_length
                                                                     : (uint32_t)n->p.max_batch);
    victim->f = shoal_fwd_new(sp->m, n->p.max_batch, max_ctx, w->threads);
    if (!victim->f)
        return NULL;
    victim->span = sp;
    victim->used = ++w->stamp;
    return victim;
}

/* ---- replies ----------------------------------------------------------- */

void node_worker_send(node_worker *w, node_job *j, size_t hlen, const void *t, size_t tlen)
{
    shoal_transport_part parts[3] = {
        {zmq_msg_data(&j->msg.frame[0]), zmq_msg_size(&j->msg.frame[0])},
        {w->hbuf, hlen},
        {t, tlen},
    };
    int rc = shoal_transport_send(w->push, parts, t ? 3 : 2);
    if (rc)
        SHOAL_LOG_E("worker %d: cannot pass a reply to the I/O thread (%s)", w->index,
                    shoal_strerror(rc));
}

void node_worker_error(node_worker *w, node_job *j, int code, const char *fmt, ...)
{
    char msg[SHOAL_WIRE_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t hlen;
    if (shoal_wire_encode_error(j->h.request_id, code, msg, w->hbuf, SHOAL_WIRE_HEADER_MAX,
                                &hlen) == 0)
        node_worker_send(w, j, hlen, NULL, 0);
    node_metrics_error(w->node, j->h.op, code);
    SHOAL_LOG_D("request %llu (%s): %s: %s", (unsigned long long)j->h.request_id,
                shoal_wire_op_name(j->h.op), shoal_strerror(code), msg);
}

/* Reply to j, with the tensor x of the request's shape when x != NULL,
 * encoded in the codec the request asked for. */
static void reply_ok(node_worker *w, node_job *j, const float *x)
{
    shoal_wire_header *r = &w->rep;
    shoal_wire_reply_init(r, &j->h);
    if (atomic_load(&w->node->leaving))
        r->flags |= SHOAL_WIRE_FLAG_LEAVING; /* graceful leave: move away */
    size_t tlen = 0;
    if (x) {
        const shoal_codec_desc *q = &j->h.tensors[0];
        shoal_codec_desc d;
        int codec = (j->h.has & SHOAL_WIRE_HAS_REPLY_CODEC) ? (int)j->h.reply_codec
                                                            : (int)q->codec;
        if (shoal_codec_desc_init(&d, codec, q->ndim, q->shape) || d.nbytes > w->tcap) {
            node_worker_error(w, j, SHOAL_ERR_ARG, "bad reply codec %d", codec);
            return;
        }
        int rc = shoal_codec_encode(&d, x, w->tbuf, w->tcap);
        if (rc) {
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
    if (x) {
        const shoal_codec_desc *q = &j->h.tensors[0];
        uint64_t rows = 1;
        for (uint32_t i = 0; i + 1 < q->ndim; i++)
            rows *= q->shape[i];
        node_metrics_tokens(w->node, j->h.op, rows);
    }
}

/* ---- requests ---------------------------------------------------------- */

/* Check the one input tensor of j: (n, dim), or (b, s, dim) when allow3
 * (then *seqs = b, *len = s); at most max_batch tokens. Decode it into
 * w->x. On failure the error reply has been sent. */
static int take_tensor(node_worker *w, node_job *j, int allow3, uint32_t *seqs, uint32_t *len)
{
    shoal_node *n = w->node;
    const shoal_codec_desc *d = &j->h.tensors[0];
    uint32_t dim = (uint32_t)n->hp.dim;
    if (j->h.ntensors != 1) {
        node_worker_error(w, j, SHOAL_ERR_FORMAT, "expected 1 tensor, got %u", j->h.ntensors);
        return -1;
    }
    if (!(d->ndim == 2 || (allow3 && d->ndim == 3)) || d->shape[d->ndim - 1] != dim) {
        node_worker_error(w, j, SHOAL_ERR_FORMAT, "expected hidden states (%s, %u)",
                    allow3 ? "[batch,] tokens" : "tokens", dim);
        return -1;
    }
    uint64_t b = d->ndim == 3 ? d->shape[0] : 1, s = d->shape[d->ndim - 2];
    if (b * s > (uint64_t)n->p.max_batch) {
        node_worker_error(w, j, SHOAL_ERR_RANGE, "%llu tokens in one request; this node takes %d",
                    (unsigned long long)(b * s), n->p.max_batch);
        return -1;
    }
    int rc = shoal_codec_decode(d, zmq_msg_data(&j->msg.frame[2]),
                                zmq_msg_size(&j->msg.frame[2]), w->x,
                                (size_t)n->p.max_batch * dim);
    if (rc) {
        node_worker_error(w, j, rc, "the tensor does not decode (NaN, Inf or a bad block)");
        return -1;
    }
    *seqs = (uint32_t)b;
    *len = (uint32_t)s;
    return 0;
}

static void do_forward(node_worker *w, node_job *j)
{
    shoal_node *n = w->node;
    uint32_t a = j->h.span_start, b = j->h.span_end, seqs, len;
    if (a >= b || a < (uint32_t)n->p.block_begin || b > (uint32_t)n->p.block_end) {
        node_worker_error(w, j, SHOAL_ERR_RANGE, "blocks %u:%u are not inside the served %d:%d", a, b,
                    n->p.block_begin, n->p.block_end);
        return;
    }
    if (take_tensor(w, j, 1, &seqs, &len))
        return;
    pthread_mutex_lock(&n->mu);
    const node_span *sp = node_span_get(n, (int)a, (int)b);
    pthread_mutex_unlock(&n->mu);
    node_fwd_slot *slot = sp ? worker_slot(w, sp) : NULL;
    if (slot && !slot->scratch)
        slot->scratch = shoal_kv_new(sp->m, n->p.max_batch);
    if (!slot || !slot->scratch) {
        node_worker_error(w, j, SHOAL_ERR_NOMEM, "cannot set up blocks %u:%u", a, b);
        return;
    }
    size_t dim = (size_t)n->hp.dim;
    node_adapter_apply(slot->f, NULL); /* stateless: never an adapter */
    for (uint32_t i = 0; i < seqs; i++) {
        shoal_kv_truncate(slot->scratch, 0);
        int rc = shoal_fwd_blocks(slot->f, slot->scratch, 0, (int)len, w->x + i * len * dim);
        if (rc) {
            node_worker_error(w, j, rc, "forward pass failed");
            return;
        }
    }
    reply_ok(w, j, w->x);
}

static void do_open(node_worker *w, node_job *j)
{
    shoal_node *n = w->node;
    node_session *s = j->s;
    s->kv = shoal_kv_new(s->span->m, (int)s->max_length);
    if (!s->kv) {
        pthread_mutex_lock(&n->mu);
        node_session_remove(n, s);
        j->s = NULL;
        pthread_mutex_unlock(&n->mu);
        node_worker_error(w, j, SHOAL_ERR_NOMEM, "cannot allocate %u tokens of KV cache",
                    j->h.max_length);
        return;
    }
    SHOAL_LOG_D("session %016llx open: blocks %d:%d, %u tokens", (unsigned long long)s->id,
                s->span->a, s->span->b, s->max_length);
    node_push_open(s, j); /* forwarding: its token and client */
    reply_ok(w, j, NULL);
}

static void do_close(node_worker *w, node_job *j)
{
    shoal_node *n = w->node;
    if (!j->s) {
        node_worker_error(w, j, SHOAL_ERR_SESSION, "unknown session");
        return;
    }
    pthread_mutex_lock(&n->mu);
    node_session_remove(n, j->s);
    j->s = NULL;
    pthread_mutex_unlock(&n->mu);
    reply_ok(w, j, NULL);
}

static void do_step(node_worker *w, node_job *j)
{
    shoal_node *n = w->node;
    node_session *s = j->s;
    if (!s || !s->kv) {
        node_worker_error(w, j, SHOAL_ERR_SESSION, "unknown session");
        return;
    }
    /* >>> forwarding (node/push.h): a push runs as a step for the client */
    if (j->h.op == SHOAL_OP_SESSION_PUSH) {
        if (node_push_accept(w, j, s))
            return;
    } else {
        node_push_note_client(s, j);
    }
    /* <<< */
    if ((j->h.has & SHOAL_WIRE_HAS_SPAN) &&
        (j->h.span_start != (uint32_t)s->span->a || j->h.span_end != (uint32_t)s->span->b)) {
        node_worker_error(w, j, SHOAL_ERR_ARG, "the session serves blocks %d:%d", s->span->a,
                    s->span->b);
        return;
    }
    uint32_t seqs, ntok, pos = j->h.position;
    if (take_tensor(w, j, 0, &seqs, &ntok))
        return;
    uint32_t len = (uint32_t)shoal_kv_len(s->kv);
    if (pos > len) {
        node_worker_error(w, j, SHOAL_ERR_RANGE, "position %u is past the session's length %u", pos,
                    len);
        return;
    }
    if (ntok > s->max_length - pos) {
        node_worker_error(w, j, SHOAL_ERR_RANGE, "positions %u..%u pass the session's max length %u",
                    pos, pos + ntok - 1, s->max_length);
        return;
    }
    size_t elems = (size_t)ntok * (size_t)n->hp.dim;
    if (s->has_last && j->h.step_id == s->last_step && pos == s->last_pos &&
        ntok == s->last_n) {
        SHOAL_LOG_D("session %016llx: step %llu repeated, cached answer",
                    (unsigned long long)s->id, (unsigned long long)j->h.step_id);
        reply_ok(w, j, s->last_out);
        node_push_forward(w, j, s->last_out, ntok); /* when it has a route */
        return;
    }
    if (elems > s->last_cap) {
        float *nb = realloc(s->last_out, elems * sizeof(float));
        if (!nb) {
            node_worker_error(w, j, SHOAL_ERR_NOMEM, "out of memory");
            return;
        }
        s->last_out = nb;
        s->last_cap = elems;
    }
    node_fwd_slot *slot = worker_slot(w, s->span);
    if (!slot) {
        node_worker_error(w, j, SHOAL_ERR_NOMEM, "cannot set up blocks %d:%d", s->span->a, s->span->b);
        return;
    }
    s->has_last = 0;
    int rc = node_adapter_apply(slot->f, s->adapter); /* the session's adapter, or none */
    if (!rc)
        rc = shoal_fwd_blocks(slot->f, s->kv, (int)pos, (int)ntok, w->x);
    if (rc) {
        node_worker_error(w, j, rc, "forward pass failed");
        return;
    }
    memcpy(s->last_out, w->x, elems * sizeof(float));
    s->has_last = 1;
    s->last_step = j->h.step_id;
    s->last_pos = pos;
    s->last_n = ntok;
    reply_ok(w, j, w->x);
    node_push_forward(w, j, w->x, ntok); /* when it has a route */
}

/* ---- the loop ---------------------------------------------------------- */

void node_job_free_locked(shoal_node *n, node_job *j)
{
    shoal_transport_msg_close(&j->msg);
    j->s = NULL;
    j->next_free = n->free_jobs;
    n->free_jobs = j;
}

/* The first queued job that may run now: steps and closes of one session
 * run one at a time, in arrival order. Marks its session busy. */
static node_job *pop_runnable(shoal_node *n)
{
    for (int i = 0; i < n->qlen; i++) {
        node_job *j = n->queue[i];
        if (j->h.op == SHOAL_OP_SESSION_STEP || j->h.op == SHOAL_OP_SESSION_CLOSE ||
            j->h.op == SHOAL_OP_SESSION_PUSH) {
            node_session *s = node_session_find(n, j->h.session_id);
            /* another client's session: as if unknown (a push proves itself
             * with the session's token instead: node/push.h) */
            if (s && s->owner[0] && strcmp(s->owner, j->owner) &&
                j->h.op != SHOAL_OP_SESSION_PUSH)
                s = NULL;
            if (s && s->busy)
                continue;
            if (s)
                s->busy = 1;
            j->s = s;
        }
        if (node_train_is_op(j->h.op) && !node_train_claim_locked(n, j))
            continue; /* its training session is busy */
        memmove(&n->queue[i], &n->queue[i + 1], (size_t)(n->qlen - i - 1) * sizeof n->queue[0]);
        n->qlen--;
        return j;
    }
    return NULL;
}

void *node_worker_main(void *arg)
{
    node_worker *w = arg;
    shoal_node *n = w->node;
    pthread_mutex_lock(&n->mu);
    for (;;) {
        node_job *j = pop_runnable(n);
        if (!j) {
            if (n->workers_exit)
                break;
            pthread_cond_wait(&n->cv, &n->mu);
            continue;
        }
        n->active++;
        pthread_mutex_unlock(&n->mu);
        double t0 = node_now();
        switch (j->h.op) {
        case SHOAL_OP_FORWARD: do_forward(w, j); break;
        case SHOAL_OP_SESSION_OPEN: do_open(w, j); break;
        case SHOAL_OP_SESSION_STEP: do_step(w, j); break;
        case SHOAL_OP_SESSION_PUSH: do_step(w, j); break; /* node/push.h */
        case SHOAL_OP_SESSION_CLOSE: do_close(w, j); break;
        case SHOAL_OP_TRAIN_OPEN:
        case SHOAL_OP_TRAIN_FORWARD:
        case SHOAL_OP_TRAIN_BACKWARD:
        case SHOAL_OP_TRAIN_STEP:
        case SHOAL_OP_TRAIN_PULL:
        case SHOAL_OP_TRAIN_PUSH:
        case SHOAL_OP_TRAIN_CLOSE: node_train_run(w, j); break;
        default: node_worker_error(w, j, SHOAL_ERR_INTERNAL, "op %u queued by mistake", j->h.op);
        }
        node_metrics_step(n, j->h.op, node_now() - t0);
        pthread_mutex_lock(&n->mu);
        if (j->s) {
            j->s->busy = 0;
            j->s->last_used = node_now();
        }
        node_train_release_locked(n, j);
        node_job_free_locked(n, j);
        n->active--;
        pthread_cond_broadcast(&n->cv);
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}
