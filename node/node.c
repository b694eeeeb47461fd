/*
 * The node's lifecycle and its I/O thread (see node.h, node_impl.h).
 *
 * The I/O thread polls three sockets: the ROUTER (requests), a PULL that
 * collects the workers' replies (forwarded to the ROUTER without copying),
 * and the ZAP handler (CURVE handshakes). It answers PING, INFO and every
 * request it can refuse on sight itself; queues FORWARD, SESSION_STEP and
 * SESSION_CLOSE for the workers; and for SESSION_OPEN reserves cache
 * tokens first (parking the request while the budget is full, up to
 * busy_wait_ms) and then queues the open, whose KV cache a worker makes.
 * Every send on the ROUTER is non-blocking.
 *
 * Shutdown: shoal_node_stop() raises a flag; the I/O thread stops reading
 * requests, refuses parked opens, waits until the queue is empty and no
 * worker holds a job, forwards the last replies, lets the workers go and
 * closes its sockets (the ROUTER with a short linger so the last replies
 * leave).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/err.h"
#include "node/announce.h"
#include "node/daemon.h"
#include "node/node_impl.h"
#include "node/push.h"
#include "node/train.h"
#include "swarm/log.h"

#define IO_POLL_MS 200
#define IO_BUSY_POLL_MS 20
#define IO_BATCH 256              /* requests read per wake-up */
#define EXPIRE_EVERY_S 1.0
#define SHUTDOWN_LINGER_MS 2000

shoal_node_params shoal_node_params_default(void)
{
    shoal_node_params p = {
        .block_begin = 0, .block_end = 0, .host = "0.0.0.0", .port = 0, .public_host = NULL,
        .threads = 1, .workers = 0, .max_batch = 512, .cache_tokens = 0, .max_sessions = 256,
        .max_length = 0, .session_timeout_s = 300.0, .busy_wait_ms = 2000,
    };
    return p;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int shoal_node_new(const shoal_gguf *g, const shoal_identity *id, const shoal_node_params *p,
                   shoal_node **out, char *err, size_t errlen)
{
    *out = NULL;
    shoal_node *n = calloc(1, sizeof *n);
    if (!n) {
        set_err(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    n->p = *p;
    n->g = g;
    int rc = shoal_hparams_read(g, &n->hp, err, errlen);
    if (rc)
        goto fail;
    rc = SHOAL_ERR_ARG;
    if (p->block_begin < 0 || p->block_begin >= p->block_end || p->block_end > n->hp.n_layer) {
        set_err(err, errlen, "blocks %d:%d are not a span of the model's 0:%d", p->block_begin,
                p->block_end, n->hp.n_layer);
        goto fail;
    }
    if (p->threads < 1 || p->max_batch < 1 || p->max_batch > 65536 || p->max_sessions < 1 ||
        !(p->session_timeout_s > 0) || p->busy_wait_ms < 0 || !p->host) {
        set_err(err, errlen, "bad node parameters");
        goto fail;
    }
    if ((rc = shoal_model_id_compute(g, &n->model_id))) {
        set_err(err, errlen, "cannot hash the model");
        goto fail;
    }
    shoal_model *m = NULL;
    if ((rc = shoal_model_open(g, p->block_begin, p->block_end, 0, &m, err, errlen)))
        goto fail;
    n->spans[0] = (node_span){p->block_begin, p->block_end, m};
    n->nspans = 1;
    n->weight_type = shoal_model_weight_type(m);

    size_t bpt = shoal_kv_bytes_per_token(m);
    if (!n->p.cache_tokens) {
        uint64_t t = bpt ? ((uint64_t)2 << 30) / bpt : 65536;
        n->p.cache_tokens = t < 256 ? 256 : t > 65536 ? 65536 : t;
    }
    if (!n->p.max_length || n->p.max_length > n->p.cache_tokens)
        n->p.max_length = n->p.cache_tokens > 1u << 24 ? 1u << 24 : (uint32_t)n->p.cache_tokens;
    if (!n->p.workers)
        n->p.workers = p->threads / 4 > 0 ? p->threads / 4 : 1;
    if (n->p.workers > p->threads)
        n->p.workers = p->threads;
    if (n->p.workers > NODE_MAX_WORKERS)
        n->p.workers = NODE_MAX_WORKERS;
    /* Frames up to twice the largest valid tensor (at least 1 MiB) are read
     * and refused with a reply; bigger ones make libzmq drop the peer. */
    size_t tensor_bytes = (size_t)p->max_batch * (size_t)n->hp.dim * sizeof(float);
    n->max_frame = 2 * tensor_bytes > ((size_t)1 << 20) ? 2 * tensor_bytes : (size_t)1 << 20;

    rc = SHOAL_ERR_NOMEM;
    n->sessions = calloc((size_t)n->p.max_sessions, sizeof *n->sessions);
    n->jobs = calloc(NODE_MAX_JOBS, sizeof *n->jobs);
    n->hbuf = malloc(SHOAL_WIRE_HEADER_MAX);
    n->workers = calloc((size_t)n->p.workers, sizeof *n->workers);
    if (!n->sessions || !n->jobs || !n->hbuf || !n->workers) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = NODE_MAX_JOBS - 1; i >= 0; i--)
        node_job_free_locked(n, &n->jobs[i]);
    if (node_train_init(n)) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    if (node_push_init(n)) { /* forwarding: node/push.h */
        set_err(err, errlen, "out of memory");
        goto fail;
    }

    rc = SHOAL_ERR_IO;
    n->ctx = shoal_transport_ctx_new();
    if (!n->ctx || shoal_transport_zap_open(n->ctx, &n->zap)) {
        set_err(err, errlen, "cannot set up ZeroMQ: %s", zmq_strerror(errno));
        goto fail;
    }
    if ((rc = shoal_transport_server_open(n->ctx, id, p->host, p->port, (int64_t)n->max_frame,
                                          &n->router, &n->port, err, errlen)))
        goto fail;
    snprintf(n->pull_ep, sizeof n->pull_ep, "inproc://shoal-node-%p", (void *)n);
    int zero = 0;
    n->pull = zmq_socket(n->ctx, ZMQ_PULL);
    if (!n->pull || zmq_setsockopt(n->pull, ZMQ_RCVHWM, &zero, sizeof zero) ||
        zmq_setsockopt(n->pull, ZMQ_LINGER, &zero, sizeof zero) || zmq_bind(n->pull, n->pull_ep)) {
        set_err(err, errlen, "cannot set up the reply socket: %s", zmq_strerror(errno));
        goto fail;
    }

    char host[SHOAL_ADDR_HOST_MAX];
    if (p->public_host)
        snprintf(host, sizeof host, "%s", p->public_host);
    else if (node_daemon_is_wildcard(p->host))
        node_daemon_public_host(p->host, host, sizeof host);
    else
        snprintf(host, sizeof host, "%s", p->host);
    shoal_addr a;
    if (shoal_addr_init(&a, host, (uint16_t)n->port, shoal_identity_public_key(id)) ||
        shoal_addr_format(&a, n->address, sizeof n->address)) {
        rc = SHOAL_ERR_ARG;
        set_err(err, errlen, "'%s' cannot be written in a node address", host);
        goto fail;
    }

    int per = p->threads / n->p.workers;
    for (int i = 0; i < n->p.workers; i++) {
        int t = per + (i < p->threads % n->p.workers ? 1 : 0);
        if ((rc = node_worker_init(n, &n->workers[i], i, t))) {
            set_err(err, errlen, "cannot set up compute worker %d (%s)", i, shoal_strerror(rc));
            n->nworkers = i + 1;
            goto fail;
        }
        n->nworkers = i + 1;
    }
    *out = n;
    return 0;
fail:
    shoal_node_destroy(&n);
    return rc;
}

/* ---- replies from the I/O thread -------------------------------------- */

static void io_send(shoal_node *n, zmq_msg_t *routing, size_t hlen)
{
    shoal_transport_part parts[2] = {{zmq_msg_data(routing), zmq_msg_size(routing)},
                                     {n->hbuf, hlen}};
    if (shoal_transport_send(n->router, parts, 2))
        SHOAL_LOG_D("reply dropped: the client is gone or not reading");
}

static void io_error(shoal_node *n, zmq_msg_t *routing, uint64_t request_id, int code,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void io_error(shoal_node *n, zmq_msg_t *routing, uint64_t request_id, int code,
                     const char *fmt, ...)
{
    char msg[SHOAL_WIRE_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t hlen;
    node_metrics_error(n, n->io_op, code);
    SHOAL_LOG_D("request %llu refused: %s: %s", (unsigned long long)request_id,
                shoal_strerror(code), msg);
    if (shoal_wire_encode_error(request_id, code, msg, n->hbuf, SHOAL_WIRE_HEADER_MAX, &hlen) == 0)
        io_send(n, routing, hlen);
}

static void io_reply(shoal_node *n, zmq_msg_t *routing, const shoal_wire_header *r)
{
    size_t hlen;
    if (shoal_wire_encode(r, n->hbuf, SHOAL_WIRE_HEADER_MAX, &hlen) == 0)
        io_send(n, routing, hlen);
    else
        SHOAL_LOG_E("cannot encode a %s reply", shoal_wire_op_name(r->op));
}

static void io_info(shoal_node *n, zmq_msg_t *routing, const shoal_wire_header *req)
{
    shoal_wire_header *r = &n->rep;
    shoal_wire_reply_init(r, req);
    r->has |= SHOAL_WIRE_HAS_MODEL | SHOAL_WIRE_HAS_MODEL_HASH | SHOAL_WIRE_HAS_SPAN |
              SHOAL_WIRE_HAS_WEIGHT_TYPE | SHOAL_WIRE_HAS_FREE_TOKENS |
              SHOAL_WIRE_HAS_SOFTWARE | SHOAL_WIRE_HAS_NBLOCKS | SHOAL_WIRE_HAS_DIM |
              SHOAL_WIRE_HAS_CODECS | SHOAL_WIRE_HAS_MAX_LENGTH;
    memcpy(r->model, n->model_id.name, sizeof r->model);
    memcpy(r->model_hash, n->model_id.hash, sizeof r->model_hash);
    r->span_start = (uint32_t)n->p.block_begin;
    r->span_end = (uint32_t)n->p.block_end;
    r->weight_type = (uint32_t)n->weight_type;
    pthread_mutex_lock(&n->mu);
    r->free_tokens = n->p.cache_tokens - n->reserved;
    pthread_mutex_unlock(&n->mu);
    shoal_wire_text_set(r->software, sizeof r->software, "shoal " SHOAL_VERSION);
    r->nblocks = (uint32_t)n->hp.n_layer;
    r->dim = (uint32_t)n->hp.dim;
    r->codecs = (1u << SHOAL_CODEC__COUNT) - 1;
    r->max_length = n->p.max_length;
    node_adapter_list(n, r->adapter, sizeof r->adapter); /* adapters: train.h */
    if (r->adapter[0])
        r->has |= SHOAL_WIRE_HAS_ADAPTER;
    if (atomic_load(&n->leaving)) { /* graceful leave */
        r->has |= SHOAL_WIRE_HAS_STATE;
        r->state = SHOAL_WIRE_STATE_OFFLINE;
        r->flags |= SHOAL_WIRE_FLAG_LEAVING;
    }
    io_reply(n, routing, r);
}

/* ---- requests ---------------------------------------------------------- */

static node_job *job_take(shoal_node *n, shoal_transport_msg *m, const shoal_wire_header *h)
{
    pthread_mutex_lock(&n->mu);
    node_job *j = n->free_jobs;
    if (j)
        n->free_jobs = j->next_free;
    pthread_mutex_unlock(&n->mu);
    if (!j)
        return NULL;
    j->msg.nframes = m->nframes;
    for (int i = 0; i < m->nframes; i++) {
        zmq_msg_init(&j->msg.frame[i]);
        zmq_msg_move(&j->msg.frame[i], &m->frame[i]);
    }
    shoal_transport_msg_close(m);
    j->h = *h;
    const char *u = shoal_transport_user_id(&j->msg.frame[1]);
    snprintf(j->owner, sizeof j->owner, "%s", u ? u : "");
    j->s = NULL;
    return j;
}

static void job_queue(shoal_node *n, node_job *j)
{
    pthread_mutex_lock(&n->mu);
    n->queue[n->qlen++] = j; /* qlen < NODE_MAX_JOBS: each job is in one place */
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

static void job_drop(shoal_node *n, node_job *j)
{
    pthread_mutex_lock(&n->mu);
    node_job_free_locked(n, j);
    pthread_mutex_unlock(&n->mu);
}

/* Try to reserve the session of an OPEN job: 0 (queued), 1 (keep waiting),
 * or -1 (answered and freed). */
static int open_try(shoal_node *n, node_job *j, double now)
{
    const shoal_wire_header *h = &j->h;
    pthread_mutex_lock(&n->mu);
    const node_span *sp = node_span_get(n, (int)h->span_start, (int)h->span_end);
    node_session *s = NULL;
    int rc = sp ? node_session_reserve(n, h->session_id, j->owner, sp, h->max_length, &s)
                : SHOAL_ERR_BUSY;
    const struct node_adapter *ad =
        node_adapter_find(n, (h->has & SHOAL_WIRE_HAS_ADAPTER) ? h->adapter : NULL);
    if (rc == 0)
        s->adapter = ad;
    int same = 0;
    if (rc == SHOAL_ERR_ARG) {
        node_session *o = node_session_find(n, h->session_id);
        same = o && !strcmp(o->owner, j->owner) && o->span == sp &&
               o->max_length == h->max_length && o->adapter == ad;
    }
    pthread_mutex_unlock(&n->mu);
    if (rc == 0) {
        j->s = s;
        job_queue(n, j);
        return 0;
    }
    if (rc == SHOAL_ERR_BUSY && sp && now < j->deadline)
        return 1;
    if (same) { /* a retried open that already went through */
        shoal_wire_header *r = &n->rep;
        shoal_wire_reply_init(r, h);
        io_reply(n, &j->msg.frame[0], r);
    } else if (rc == SHOAL_ERR_BUSY) {
        io_error(n, &j->msg.frame[0], h->request_id, SHOAL_ERR_BUSY, "%s",
                 !sp ? "too many distinct spans"
                     : n->nsessions >= n->p.max_sessions ? "too many sessions" : "cache full");
    } else if (rc == SHOAL_ERR_ARG) {
        io_error(n, &j->msg.frame[0], h->request_id, SHOAL_ERR_ARG,
                 "session id %016llx is in use", (unsigned long long)h->session_id);
    } else {
        io_error(n, &j->msg.frame[0], h->request_id, rc, "cannot open the session");
    }
    job_drop(n, j);
    return -1;
}

static void io_open(shoal_node *n, shoal_transport_msg *m, const shoal_wire_header *h)
{
    if (h->span_start >= h->span_end || h->span_start < (uint32_t)n->p.block_begin ||
        h->span_end > (uint32_t)n->p.block_end) {
        io_error(n, &m->frame[0], h->request_id, SHOAL_ERR_RANGE,
                 "blocks %u:%u are not inside the served %d:%d", h->span_start, h->span_end,
                 n->p.block_begin, n->p.block_end);
        return;
    }
    if (h->max_length < 1 || h->max_length > n->p.max_length) {
        io_error(n, &m->frame[0], h->request_id, SHOAL_ERR_RANGE,
                 "max_length %u is outside 1..%u", h->max_length, n->p.max_length);
        return;
    }
    if (h->session_id == 0) {
        io_error(n, &m->frame[0], h->request_id, SHOAL_ERR_ARG, "session id 0 is reserved");
        return;
    }
    if (atomic_load(&n->leaving)) { /* graceful leave */
        io_error(n, &m->frame[0], h->request_id, SHOAL_ERR_BUSY, "node is leaving");
        return;
    }
    if ((h->has & SHOAL_WIRE_HAS_ADAPTER) && h->adapter[0] && !node_adapter_find(n, h->adapter)) {
        io_error(n, &m->frame[0], h->request_id, SHOAL_ERR_NOTFOUND,
                 "adapter '%s' is not served here", h->adapter);
        return;
    }
    node_job *j = job_take(n, m, h);
    if (!j) {
        io_error(n, &m->frame[0], h->request_id, SHOAL_ERR_BUSY, "node overloaded");
        return;
    }
    double now = node_now();
    j->deadline = now + n->p.busy_wait_ms / 1000.0;
    if (open_try(n, j, now) == 1) {
        if (n->npending < NODE_MAX_PENDING) {
            n->pending[n->npending++] = j;
        } else {
            io_error(n, &j->msg.frame[0], h->request_id, SHOAL_ERR_BUSY, "cache full");
            job_drop(n, j);
        }
    }
}

/* Retry parked opens (space may have been freed); refuse all when stopping. */
static void io_pending(shoal_node *n, int stopping)
{
    double now = node_now();
    for (int i = 0; i < n->npending;) {
        node_job *j = n->pending[i];
        int r;
        if (stopping) {
            io_error(n, &j->msg.frame[0], j->h.request_id, SHOAL_ERR_CANCELLED,
                     "node is shutting down");
            job_drop(n, j);
            r = -1;
        } else {
            r = open_try(n, j, now);
        }
        if (r == 1) {
            i++;
        } else {
            memmove(&n->pending[i], &n->pending[i + 1],
                    (size_t)(n->npending - i - 1) * sizeof n->pending[0]);
            n->npending--;
        }
    }
}

static void io_request(shoal_node *n, shoal_transport_msg *m)
{
    if (m->nframes < 2)
        return; /* not even a header: nothing to answer */
    shoal_wire_header req;
    int rc = shoal_wire_decode(&req, zmq_msg_data(&m->frame[1]), zmq_msg_size(&m->frame[1]));
    n->io_op = rc ? 0 : req.op; /* 0: counted as "unknown" */
    if (!(!rc && (req.flags & SHOAL_WIRE_FLAG_REPLY)))
        node_metrics_request(n, n->io_op);
    if (rc == SHOAL_ERR_VERSION) {
        io_error(n, &m->frame[0], req.request_id, rc, "protocol version %u; this node speaks %d",
                 req.version, SHOAL_WIRE_VERSION);
        return;
    }
    if (rc) {
        io_error(n, &m->frame[0], req.request_id, rc,
                 rc == SHOAL_ERR_UNSUPPORTED ? "unknown codec" : "malformed header");
        return;
    }
    if (req.flags & SHOAL_WIRE_FLAG_REPLY)
        return; /* a server answers requests only; never reply to a reply */
    size_t lens[SHOAL_TRANSPORT_MAX_FRAMES];
    size_t nt = (size_t)m->nframes - 2;
    for (size_t i = 0; i < nt; i++)
        lens[i] = zmq_msg_size(&m->frame[i + 2]);
    if (shoal_wire_frames_check(&req, nt, lens)) {
        io_error(n, &m->frame[0], req.request_id, SHOAL_ERR_FORMAT,
                 "tensor frames do not match the header");
        return;
    }
    switch (req.op) {
    case SHOAL_OP_PING: {
        /* a pad asked back (a client timing the link) is the first req.pad
         * bytes of the request's own pad: never more than it brought */
        shoal_wire_header *r = &n->rep;
        size_t hlen;
        if (shoal_wire_ping_reply(r, &req) || !r->ntensors) {
            shoal_wire_reply_init(r, &req);
            io_reply(n, &m->frame[0], r);
        } else if (shoal_wire_encode(r, n->hbuf, SHOAL_WIRE_HEADER_MAX, &hlen) == 0) {
            shoal_transport_part parts[3] = {
                {zmq_msg_data(&m->frame[0]), zmq_msg_size(&m->frame[0])},
                {n->hbuf, hlen},
                {zmq_msg_data(&m->frame[2]), (size_t)r->tensors[0].nbytes}};
            if (shoal_transport_send(n->router, parts, 3))
                SHOAL_LOG_D("reply dropped: the client is gone or not reading");
        }
        return;
    }
    case SHOAL_OP_INFO: io_info(n, &m->frame[0], &req); return;
    case SHOAL_OP_FIND_NODE: /* >>> DHT: node/announce.h */
    case SHOAL_OP_FIND_VALUE:
    case SHOAL_OP_STORE:
        if (node_announce_request(n, &m->frame[0], &req))
            io_error(n, &m->frame[0], req.request_id, SHOAL_ERR_UNSUPPORTED,
                     "this node runs no DHT (start it with --initial-peers)");
        return; /* <<< DHT */
    case SHOAL_OP_SESSION_OPEN: io_open(n, m, &req); return;
    case SHOAL_OP_FORWARD:
    case SHOAL_OP_SESSION_STEP:
    case SHOAL_OP_SESSION_CLOSE:
    case SHOAL_OP_SESSION_PUSH:   /* forwarding: node/push.h */
    case SHOAL_OP_TRAIN_OPEN:     /* training ops: node/train.c */
    case SHOAL_OP_TRAIN_FORWARD:
    case SHOAL_OP_TRAIN_BACKWARD:
    case SHOAL_OP_TRAIN_STEP:
    case SHOAL_OP_TRAIN_PULL:
    case SHOAL_OP_TRAIN_PUSH:
    case SHOAL_OP_TRAIN_CLOSE: {
        node_job *j = job_take(n, m, &req);
        if (!j)
            io_error(n, &m->frame[0], req.request_id, SHOAL_ERR_BUSY, "node overloaded");
        else
            job_queue(n, j);
        return;
    }
    default:
        io_error(n, &m->frame[0], req.request_id, SHOAL_ERR_UNSUPPORTED,
                 "op %u is not served here", req.op);
    }
}

/* Forward every reply the workers have passed on. Returns how many. */
static int io_drain_replies(shoal_node *n)
{
    int count = 0;
    for (;;) {
        shoal_transport_msg m;
        shoal_transport_msg_init(&m);
        int rc = shoal_transport_recv(n->pull, &m, 5, (size_t)-1, ZMQ_DONTWAIT);
        if (rc)
            return count;
        if (m.nframes == 5 && zmq_msg_size(&m.frame[0]) == 0) {
            node_push_send(n, &m); /* a push for the next node (node/push.h) */
            continue;
        }
        if (shoal_transport_send_msg(n->router, &m, ZMQ_DONTWAIT))
            SHOAL_LOG_D("reply dropped: the client is gone or not reading");
        count++;
    }
}

static void *io_main(void *arg)
{
    shoal_node *n = arg;
    size_t max_total = SHOAL_WIRE_HEADER_MAX + 2 * n->max_frame + 256;
    double next_expire = node_now() + EXPIRE_EVERY_S;
    int stopping = 0, leaving = 0;
    for (;;) {
        if (!stopping && atomic_load(&n->stop)) {
            stopping = 1;
            SHOAL_LOG_I("stopping: finishing the jobs in hand");
            io_pending(n, 1);
        }
        if (!leaving && atomic_load(&n->leaving)) { /* graceful leave */
            leaving = 1;
            io_pending(n, 1);
        }
        zmq_pollitem_t items[3 + NODE_PUSH_LINKS + NODE_ANNOUNCE_POLL_MAX] = {
            {n->router, 0, stopping ? 0 : ZMQ_POLLIN, 0},
            {n->pull, 0, ZMQ_POLLIN, 0},
            {n->zap, 0, ZMQ_POLLIN, 0},
        };
        int npush = node_push_poll_items(n, items + 3, NODE_PUSH_LINKS); /* forwarding */
        /* >>> DHT: node/announce.h */
        zmq_pollitem_t *dht_items = items + 3 + npush;
        size_t ndht = node_announce_poll_items(n, dht_items, NODE_ANNOUNCE_POLL_MAX);
        long poll_ms = node_announce_timeout(n, n->npending || stopping ? IO_BUSY_POLL_MS
                                                                        : IO_POLL_MS);
        int r = zmq_poll(items, 3 + npush + (int)ndht, poll_ms);
        /* <<< DHT */
        if (r < 0) {
            if (errno != EINTR && !stopping) {
                /* the sockets are unusable: stop as if asked, without input */
                SHOAL_LOG_E("poll failed: %s", zmq_strerror(errno));
                atomic_store(&n->stop, 1);
            }
            struct timespec ts = {0, IO_BUSY_POLL_MS * 1000000L};
            nanosleep(&ts, NULL);
            r = 0;
        }
        if (r > 0 && (items[2].revents & ZMQ_POLLIN))
            while (shoal_transport_zap_serve(n->zap) == 0) {
            }
        if (r > 0 && npush)
            node_push_service(n, items + 3, npush);
        if (r >= 0) /* DHT replies, timers, announcing: node/announce.h */
            node_announce_service(n, dht_items, r > 0 ? ndht : 0);
        int freed = r > 0 && (items[1].revents & ZMQ_POLLIN) ? io_drain_replies(n) : 0;
        if (r > 0 && (items[0].revents & ZMQ_POLLIN)) {
            for (int i = 0; i < IO_BATCH; i++) {
                shoal_transport_msg m;
                shoal_transport_msg_init(&m);
                int rc = shoal_transport_recv(n->router, &m, SHOAL_TRANSPORT_MAX_FRAMES,
                                              max_total, ZMQ_DONTWAIT);
                if (rc == SHOAL_ERR_TIMEOUT)
                    break;
                if (rc) {
                    SHOAL_LOG_D("message dropped: too many or too large frames");
                    continue;
                }
                io_request(n, &m);
                shoal_transport_msg_close(&m);
            }
        }
        double now = node_now();
        if (now >= next_expire) {
            pthread_mutex_lock(&n->mu);
            freed += node_session_expire(n, now);
            freed += node_train_expire_locked(n, now);
            pthread_mutex_unlock(&n->mu);
            next_expire = now + EXPIRE_EVERY_S;
            node_metrics_tick(n); /* the gauges, once a second */
            node_push_expire(n, now);
        }
        if (n->npending && (freed || r == 0 || now > n->pending[0]->deadline))
            io_pending(n, 0);
        if (stopping) {
            pthread_mutex_lock(&n->mu);
            int idle = n->qlen == 0 && n->active == 0;
            pthread_mutex_unlock(&n->mu);
            if (idle)
                break;
        }
    }
    pthread_mutex_lock(&n->mu);
    n->workers_exit = 1;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    for (int i = 0; i < n->nworkers; i++) {
        if (n->workers[i].started)
            pthread_join(n->workers[i].thread, NULL);
        n->workers[i].started = 0;
    }
    io_drain_replies(n);
    int linger = SHUTDOWN_LINGER_MS;
    zmq_setsockopt(n->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(n->router);
    n->router = NULL;
    atomic_store(&n->running, 0);
    return NULL;
}

int shoal_node_start(shoal_node *n, char *err, size_t errlen)
{
    for (int i = 0; i < n->nworkers; i++) {
        if (pthread_create(&n->workers[i].thread, NULL, node_worker_main, &n->workers[i])) {
            set_err(err, errlen, "cannot start a worker thread");
            shoal_node_stop(n);
            return SHOAL_ERR_NOMEM;
        }
        n->workers[i].started = 1;
    }
    atomic_store(&n->running, 1);
    if (pthread_create(&n->io_thread, NULL, io_main, n)) {
        atomic_store(&n->running, 0);
        set_err(err, errlen, "cannot start the I/O thread");
        shoal_node_stop(n);
        return SHOAL_ERR_NOMEM;
    }
    n->io_started = 1;
    SHOAL_LOG_I("serving blocks %d:%d of %s on %s (%d workers, %d threads, %llu cache tokens)",
                n->p.block_begin, n->p.block_end,
                n->model_id.name[0] ? n->model_id.name : "the model", n->address,
                n->nworkers, n->p.threads, (unsigned long long)n->p.cache_tokens);
    return 0;
}

void shoal_node_stop(shoal_node *n)
{
    if (!n)
        return;
    atomic_store(&n->stop, 1);
    if (n->io_started) {
        pthread_join(n->io_thread, NULL);
        n->io_started = 0;
    } else {
        /* never started, or the I/O thread failed to: release any workers */
        pthread_mutex_lock(&n->mu);
        n->workers_exit = 1;
        pthread_cond_broadcast(&n->cv);
        pthread_mutex_unlock(&n->mu);
        for (int i = 0; i < n->nworkers; i++) {
            if (n->workers[i].started)
                pthread_join(n->workers[i].thread, NULL);
            n->workers[i].started = 0;
        }
    }
    pthread_mutex_lock(&n->mu);
    int closed = n->nsessions;
    while (n->nsessions)
        node_session_remove(n, n->sessions[0]);
    closed += node_train_close_all_locked(n);
    pthread_mutex_unlock(&n->mu);
    if (closed)
        SHOAL_LOG_I("closed %d sessions", closed);
}

void shoal_node_destroy(shoal_node **pp)
{
    if (!pp || !*pp)
        return;
    shoal_node *n = *pp;
    shoal_node_stop(n);
    for (int i = 0; i < n->nworkers; i++)
        node_worker_fini(&n->workers[i]);
    free(n->workers);
    for (int i = 0; n->jobs && i < NODE_MAX_JOBS; i++)
        shoal_transport_msg_close(&n->jobs[i].msg);
    for (int i = 0; i < n->npending; i++)
        shoal_transport_msg_close(&n->pending[i]->msg);
    shoal_transport_close(&n->router);
    shoal_transport_close(&n->pull);
    shoal_transport_close(&n->zap);
    node_push_fini(n); /* its sockets, before the context goes */
    if (n->ctx)
        zmq_ctx_term(n->ctx);
    node_train_fini(n);
    for (int i = 0; i < n->nspans; i++)
        shoal_model_destroy(&n->spans[i].m);
    free(n->sessions);
    free(n->jobs);
    free(n->hbuf);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
    free(n);
    *pp = NULL;
}

bool shoal_node_running(const shoal_node *n) { return atomic_load(&n->running) != 0; }
const char *shoal_node_address(const shoal_node *n) { return n->address; }
int shoal_node_port(const shoal_node *n) { return n->port; }
const shoal_model_id *shoal_node_model_id(const shoal_node *n) { return &n->model_id; }
uint64_t shoal_node_cache_tokens(const shoal_node *n) { return n->p.cache_tokens; }

int shoal_node_set_metrics(shoal_node *n, struct shoal_metrics *m)
{
    return m ? node_metrics_init(n, m) : 0;
}
int shoal_node_workers(const shoal_node *n) { return n->nworkers; }

/* ---- graceful leave ------------------------------------------------------ */

void shoal_node_leave(shoal_node *n)
{
    if (!atomic_exchange(&n->leaving, 1))
        SHOAL_LOG_I("leaving: no new sessions; clients are told to move theirs");
}

bool shoal_node_leaving(const shoal_node *n) { return atomic_load(&n->leaving) != 0; }

int shoal_node_sessions(shoal_node *n)
{
    pthread_mutex_lock(&n->mu);
    int k = n->nsessions;
    pthread_mutex_unlock(&n->mu);
    return k;
}
