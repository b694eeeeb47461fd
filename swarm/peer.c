/*
 * Blocking request/reply over one DEALER socket (see peer.h).
 *
 * Buffers: the header buffer (64 KiB) is allocated at connect; the tensor
 * encode buffer grows to the largest request seen and is then reused, so a
 * steady decode loop allocates nothing. Replies are decoded straight out of
 * the received zmq frames into the caller's x.
 */
#include "swarm/peer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "kernels/err.h"
#include "proto/addr.h"
#include "swarm/transport.h"

#define PEER_ERR_MAX 512

struct shoal_peer {
    void *ctx;
    int own_ctx;
    void *sock;               /* NULL after a failed reopen: reopened on use */
    shoal_addr addr;
    char address[SHOAL_ADDR_MAX];
    uint8_t peer_id[32];
    int64_t max_frame;
    uint64_t next_id;
    uint8_t *hbuf;            /* SHOAL_WIRE_HEADER_MAX */
    uint8_t *tbuf;            /* encoded request tensor */
    size_t tcap;
    shoal_wire_header req, rep;
    char err[PEER_ERR_MAX];
};

shoal_peer_params shoal_peer_params_default(void)
{
    shoal_peer_params p = {.zmq_ctx = NULL, .max_frame = (int64_t)256 << 20};
    return p;
}

static void peer_err(shoal_peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void peer_err(shoal_peer *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
}

int shoal_peer_connect(const char *address, const shoal_peer_params *params, shoal_peer **out)
{
    *out = NULL;
    shoal_peer_params def = shoal_peer_params_default();
    if (!params)
        params = &def;
    if (sodium_init() < 0)
        return SHOAL_ERR_INTERNAL;
    shoal_peer *p = calloc(1, sizeof *p);
    if (!p)
        return SHOAL_ERR_NOMEM;
    int rc = SHOAL_ERR_FORMAT;
    if (!address || shoal_addr_parse(&p->addr, address) ||
        shoal_addr_format(&p->addr, p->address, sizeof p->address))
        goto fail;
    shoal_addr_peer_id(&p->addr, p->peer_id);
    p->max_frame = params->max_frame > 0 ? params->max_frame : def.max_frame;
    rc = SHOAL_ERR_NOMEM;
    p->hbuf = malloc(SHOAL_WIRE_HEADER_MAX);
    if (!p->hbuf)
        goto fail;
    rc = SHOAL_ERR_IO;
    p->ctx = params->zmq_ctx;
    if (!p->ctx) {
        p->ctx = shoal_transport_ctx_new();
        p->own_ctx = 1;
        if (!p->ctx)
            goto fail;
    }
    if ((rc = shoal_transport_client_open(p->ctx, &p->addr, p->max_frame, &p->sock)))
        goto fail;
    /* random start: ids from two runs of a client never collide in a node's
     * logs, and a stale reply can never carry the next id by accident */
    randombytes_buf(&p->next_id, sizeof p->next_id);
    *out = p;
    return 0;
fail:
    shoal_peer_destroy(&p);
    return rc;
}

void shoal_peer_destroy(shoal_peer **pp)
{
    if (!pp || !*pp)
        return;
    shoal_peer *p = *pp;
    shoal_transport_close(&p->sock);
    if (p->own_ctx && p->ctx)
        zmq_ctx_term(p->ctx);
    free(p->hbuf);
    free(p->tbuf);
    free(p);
    *pp = NULL;
}

const char *shoal_peer_address(const shoal_peer *p) { return p->address; }
const uint8_t *shoal_peer_id(const shoal_peer *p) { return p->peer_id; }
const char *shoal_peer_last_error(const shoal_peer *p) { return p->err; }

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Drop the socket and every message queued on it, then open a fresh one. */
static void peer_reset(shoal_peer *p)
{
    shoal_transport_close(&p->sock);
    shoal_transport_client_open(p->ctx, &p->addr, p->max_frame, &p->sock);
}

static uint64_t peer_new_id(shoal_peer *p)
{
    if (++p->next_id == 0)
        p->next_id = 1;
    return p->next_id;
}

/* The expected reply tensor, decoded into out: exactly shape[0..ndim), or
 * with ndim 0 any shape of at most cap elements (then got says which). */
typedef struct reply_tensor {
    float *out;
    uint32_t ndim, shape[SHOAL_CODEC_MAX_DIMS];
    size_t cap;
    shoal_peer_tensor *got;
} reply_tensor;

/* Check reply m against p->req; decode it into p->rep (and rt). Returns 1 to
 * keep waiting (stale or not a reply), else 0 or an error. */
static int peer_take_reply(shoal_peer *p, shoal_transport_msg *m, const reply_tensor *rt)
{
    shoal_wire_header *h = &p->rep;
    if (m->nframes < 1)
        return 1;
    int rc = shoal_wire_decode(h, zmq_msg_data(&m->frame[0]), zmq_msg_size(&m->frame[0]));
    if (h->request_id != p->req.request_id)
        return 1; /* stale, or not addressed to this call */
    if (rc == SHOAL_ERR_VERSION) {
        peer_err(p, "%s speaks protocol version %u, this client %d", p->address, h->version,
                 SHOAL_WIRE_VERSION);
        return SHOAL_ERR_VERSION;
    }
    if (rc) {
        peer_err(p, "%s sent a malformed reply (%s)", p->address, shoal_strerror(rc));
        return SHOAL_ERR_PROTOCOL;
    }
    if (!(h->flags & SHOAL_WIRE_FLAG_REPLY))
        return 1;
    if (h->op == SHOAL_OP_ERROR) {
        int code = h->error > 0 && h->error < SHOAL_ERR__COUNT ? (int)h->error
                                                               : SHOAL_ERR_PROTOCOL;
        peer_err(p, "%s: %s%s%s", p->address, shoal_strerror((int)h->error),
                 (h->has & SHOAL_WIRE_HAS_MESSAGE) ? ": " : "",
                 (h->has & SHOAL_WIRE_HAS_MESSAGE) ? h->message : "");
        return code;
    }
    if (h->op != p->req.op) {
        peer_err(p, "%s answered %s with %s", p->address, shoal_wire_op_name(p->req.op),
                 shoal_wire_op_name(h->op) ? shoal_wire_op_name(h->op) : "an unknown op");
        return SHOAL_ERR_PROTOCOL;
    }
    size_t lens[SHOAL_TRANSPORT_MAX_FRAMES];
    size_t nt = (size_t)m->nframes - 1;
    for (size_t i = 0; i < nt; i++)
        lens[i] = zmq_msg_size(&m->frame[i + 1]);
    if (shoal_wire_frames_check(h, nt, lens)) {
        peer_err(p, "%s sent tensor frames that do not match its header", p->address);
        return SHOAL_ERR_PROTOCOL;
    }
    if (!rt)
        return 0;
    const shoal_codec_desc *d = &h->tensors[0];
    uint64_t elems = 0;
    int fits = h->ntensors == 1 && shoal_codec_desc_check(d, &elems) == 0;
    if (fits && rt->ndim) {
        fits = d->ndim == rt->ndim;
        for (uint32_t i = 0; fits && i < d->ndim; i++)
            fits = d->shape[i] == rt->shape[i];
    } else if (fits) {
        fits = elems <= rt->cap;
    }
    if (!fits) {
        peer_err(p, "%s answered with a tensor of another shape", p->address);
        return SHOAL_ERR_PROTOCOL;
    }
    rc = shoal_codec_decode(d, zmq_msg_data(&m->frame[1]), zmq_msg_size(&m->frame[1]), rt->out,
                            (size_t)elems);
    if (rc) {
        peer_err(p, "%s sent a tensor that does not decode (%s)", p->address,
                 shoal_strerror(rc));
        return SHOAL_ERR_PROTOCOL;
    }
    if (rt->got) {
        rt->got->ndim = d->ndim;
        memcpy(rt->got->shape, d->shape, sizeof d->shape);
    }
    return 0;
}

/* Send p->req (with tensor x of shape[0..ndim) in codec when x) and wait
 * for its reply into p->rep (tensor into rt->out when rt). */
static int peer_call_shaped(shoal_peer *p, const float *x, uint32_t ndim, const uint32_t *shape,
                            int codec, const reply_tensor *rt, int timeout_ms)
{
    p->err[0] = 0;
    if (timeout_ms < 0)
        timeout_ms = 0;
    if (!p->sock) {
        peer_reset(p);
        if (!p->sock) {
            peer_err(p, "%s: cannot open a socket", p->address);
            return SHOAL_ERR_IO;
        }
    }
    shoal_wire_header *h = &p->req;
    h->request_id = peer_new_id(p);
    shoal_transport_part parts[2];
    int nparts = 1;
    if (x) {
        shoal_codec_desc d;
        if (shoal_codec_desc_init(&d, codec, ndim, shape)) {
            peer_err(p, "bad tensor: %u dimensions in codec %d", ndim, codec);
            return SHOAL_ERR_ARG;
        }
        if (d.nbytes > p->tcap) {
            uint8_t *nb = realloc(p->tbuf, d.nbytes);
            if (!nb) {
                peer_err(p, "out of memory");
                return SHOAL_ERR_NOMEM;
            }
            p->tbuf = nb;
            p->tcap = d.nbytes;
        }
        int rc = shoal_codec_encode(&d, x, p->tbuf, p->tcap);
        if (rc) {
            peer_err(p, "cannot encode the activations as %s (%s)", shoal_codec_name(codec),
                     shoal_strerror(rc));
            return rc;
        }
        shoal_wire_tensor_add(h, &d);
        h->has |= SHOAL_WIRE_HAS_REPLY_CODEC;
        h->reply_codec = (uint32_t)codec;
        parts[1].data = p->tbuf;
        parts[1].len = d.nbytes;
        nparts = 2;
    }
    size_t hlen;
    int rc = shoal_wire_encode(h, p->hbuf, SHOAL_WIRE_HEADER_MAX, &hlen);
    if (rc) {
        peer_err(p, "cannot encode the request (%s)", shoal_strerror(rc));
        return SHOAL_ERR_ARG;
    }
    parts[0].data = p->hbuf;
    parts[0].len = hlen;
    if ((rc = shoal_transport_send(p->sock, parts, nparts))) {
        peer_err(p, "%s: cannot send (%s)", p->address, shoal_strerror(rc));
        peer_reset(p);
        return rc == SHOAL_ERR_BUSY ? SHOAL_ERR_TIMEOUT : rc;
    }
    double deadline = now_ms() + timeout_ms;
    size_t max_total = (size_t)p->max_frame * 2;
    for (;;) {
        double left = deadline - now_ms();
        if (left < 0)
            left = 0;
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        int r = zmq_poll(&it, 1, (long)(left + 0.999));
        if (r < 0 && errno != EINTR) {
            peer_err(p, "%s: poll failed: %s", p->address, zmq_strerror(errno));
            peer_reset(p);
            return SHOAL_ERR_IO;
        }
        if (r > 0) {
            shoal_transport_msg m;
            shoal_transport_msg_init(&m);
            rc = shoal_transport_recv(p->sock, &m, 1 + SHOAL_WIRE_MAX_TENSORS, max_total,
                                      ZMQ_DONTWAIT);
            if (rc == 0) {
                rc = peer_take_reply(p, &m, rt);
                shoal_transport_msg_close(&m);
                if (rc != 1)
                    return rc;
            } else if (rc == SHOAL_ERR_IO) {
                peer_err(p, "%s: receive failed", p->address);
                peer_reset(p);
                return SHOAL_ERR_IO;
            }
            continue; /* an oversized or stale message: keep waiting */
        }
        if (r == 0 && now_ms() >= deadline)
            break;
    }
    peer_err(p, "%s: no answer within %d ms", p->address, timeout_ms);
    peer_reset(p);
    return SHOAL_ERR_TIMEOUT;
}

/* The same for a tensor (n, dim) each way. */
static int peer_call(shoal_peer *p, const float *x, uint32_t n, uint32_t dim, int codec,
                     float *out, int timeout_ms)
{
    uint32_t shape[2] = {n, dim};
    reply_tensor rt = {out, 2, {n, dim, 0}, (size_t)n * dim, NULL};
    return peer_call_shaped(p, x, 2, shape, codec, out ? &rt : NULL, timeout_ms);
}

int shoal_peer_call(shoal_peer *p, const shoal_wire_header *req, const shoal_peer_tensor *in,
                    int codec, shoal_peer_tensor *out, shoal_wire_header *rep, int timeout_ms)
{
    if (!req || (in && (!in->data || in->ndim < 1 || in->ndim > SHOAL_CODEC_MAX_DIMS)) ||
        (out && (!out->data || out->ndim > SHOAL_CODEC_MAX_DIMS)) || codec < 0 ||
        codec >= SHOAL_CODEC__COUNT) {
        peer_err(p, "bad arguments to a call");
        return SHOAL_ERR_ARG;
    }
    p->req = *req;
    p->req.ntensors = 0;
    p->req.has &= ~(uint32_t)SHOAL_WIRE_HAS_REPLY_CODEC;
    reply_tensor rt = {NULL, 0, {0}, 0, NULL};
    if (out) {
        rt.out = out->data;
        rt.ndim = out->ndim;
        memcpy(rt.shape, out->shape, sizeof rt.shape);
        rt.cap = out->cap;
        rt.got = out;
    }
    int rc = peer_call_shaped(p, in ? in->data : NULL, in ? in->ndim : 0, in ? in->shape : NULL,
                              codec, out ? &rt : NULL, timeout_ms);
    if (rc == 0 && rep)
        *rep = p->rep;
    return rc;
}

static void req_init(shoal_peer *p, int op) { shoal_wire_header_init(&p->req, (uint16_t)op, 0); }

static void req_span(shoal_peer *p, uint32_t a, uint32_t b)
{
    p->req.has |= SHOAL_WIRE_HAS_SPAN;
    p->req.span_start = a;
    p->req.span_end = b;
}

static void req_session(shoal_peer *p, uint64_t sid)
{
    p->req.has |= SHOAL_WIRE_HAS_SESSION;
    p->req.session_id = sid;
}

static int check_tensor_args(shoal_peer *p, const float *x, int n, int dim, int codec)
{
    if (!x || n < 1 || dim < 1 || codec < 0 || codec >= SHOAL_CODEC__COUNT) {
        peer_err(p, "bad arguments: n %d, dim %d, codec %d", n, dim, codec);
        return SHOAL_ERR_ARG;
    }
    return 0;
}

int shoal_peer_ping(shoal_peer *p, int timeout_ms)
{
    req_init(p, SHOAL_OP_PING);
    return peer_call(p, NULL, 0, 0, 0, NULL, timeout_ms);
}

int shoal_peer_get_info(shoal_peer *p, shoal_peer_info *info, int timeout_ms)
{
    memset(info, 0, sizeof *info);
    req_init(p, SHOAL_OP_INFO);
    int rc = peer_call(p, NULL, 0, 0, 0, NULL, timeout_ms);
    if (rc)
        return rc;
    if (shoal_peer_info_from_header(&p->rep, info, NULL)) {
        peer_err(p, "%s: INFO reply without a usable span, block count or dim", p->address);
        return SHOAL_ERR_PROTOCOL;
    }
    return 0;
}

int shoal_peer_info_from_header(const shoal_wire_header *h, shoal_peer_info *info,
                                uint32_t *state)
{
    const uint32_t need = SHOAL_WIRE_HAS_NBLOCKS | SHOAL_WIRE_HAS_DIM;
    memset(info, 0, sizeof *info);
    if (state)
        *state = 0;
    if ((h->has & need) != need || h->dim == 0 || h->span_start > h->span_end ||
        h->span_end > h->nblocks)
        return SHOAL_ERR_PROTOCOL;
    memcpy(info->model, h->model, sizeof info->model);
    info->model[sizeof info->model - 1] = 0;
    memcpy(info->model_hash, h->model_hash, sizeof info->model_hash);
    info->span_start = h->span_start;
    info->span_end = h->span_end;
    info->nblocks = h->nblocks;
    info->dim = h->dim;
    info->weight_type = h->weight_type;
    info->free_tokens = h->free_tokens;
    info->max_length = (h->has & SHOAL_WIRE_HAS_MAX_LENGTH) ? h->max_length : 0;
    info->codecs = h->codecs;
    info->version = h->version;
    memcpy(info->software, h->software, sizeof info->software);
    info->software[sizeof info->software - 1] = 0;
    if (h->has & SHOAL_WIRE_HAS_ADAPTER) {
        memcpy(info->adapters, h->adapter, sizeof info->adapters);
        info->adapters[sizeof info->adapters - 1] = 0;
    }
    if (state && (h->has & SHOAL_WIRE_HAS_STATE))
        *state = h->state;
    return 0;
}

int shoal_peer_forward(shoal_peer *p, uint32_t span_start, uint32_t span_end, float *x, int n,
                       int dim, int codec, int timeout_ms)
{
    int rc = check_tensor_args(p, x, n, dim, codec);
    if (rc)
        return rc;
    req_init(p, SHOAL_OP_FORWARD);
    req_span(p, span_start, span_end);
    return peer_call(p, x, (uint32_t)n, (uint32_t)dim, codec, x, timeout_ms);
}

int shoal_peer_session_open(shoal_peer *p, uint64_t session_id, uint32_t span_start,
                            uint32_t span_end, uint32_t max_length, int timeout_ms)
{
    return shoal_peer_session_open_adapter(p, session_id, span_start, span_end, max_length,
                                           NULL, timeout_ms);
}

int shoal_peer_session_open_adapter(shoal_peer *p, uint64_t session_id, uint32_t span_start,
                                    uint32_t span_end, uint32_t max_length,
                                    const char *adapter, int timeout_ms)
{
    req_init(p, SHOAL_OP_SESSION_OPEN);
    req_session(p, session_id);
    req_span(p, span_start, span_end);
    p->req.has |= SHOAL_WIRE_HAS_MAX_LENGTH;
    p->req.max_length = max_length;
    if (adapter && *adapter) {
        if (shoal_wire_text_set(p->req.adapter, sizeof p->req.adapter, adapter)) {
            peer_err(p, "adapter name too long");
            return SHOAL_ERR_ARG;
        }
        p->req.has |= SHOAL_WIRE_HAS_ADAPTER;
    }
    return peer_call(p, NULL, 0, 0, 0, NULL, timeout_ms);
}

int shoal_peer_session_step(shoal_peer *p, uint64_t session_id, uint64_t step_id,
                            uint32_t position, float *x, int n, int dim, int codec,
                            int timeout_ms)
{
    int rc = check_tensor_args(p, x, n, dim, codec);
    if (rc)
        return rc;
    req_init(p, SHOAL_OP_SESSION_STEP);
    req_session(p, session_id);
    p->req.has |= SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION;
    p->req.step_id = step_id;
    p->req.position = position;
    rc = peer_call(p, x, (uint32_t)n, (uint32_t)dim, codec, x, timeout_ms);
    if (rc == 0 && (p->rep.session_id != session_id || p->rep.step_id != step_id)) {
        peer_err(p, "%s answered another session or step", p->address);
        return SHOAL_ERR_PROTOCOL;
    }
    return rc;
}

int shoal_peer_session_close(shoal_peer *p, uint64_t session_id, int timeout_ms)
{
    req_init(p, SHOAL_OP_SESSION_CLOSE);
    req_session(p, session_id);
    return peer_call(p, NULL, 0, 0, 0, NULL, timeout_ms);
}
