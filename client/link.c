/*
 * Links to nodes (see link.h): a DEALER socket, its monitor (a PAIR socket
 * on an inproc endpoint that libzmq writes socket events to), and the
 * liveness bookkeeping.
 *
 * Monitor events arrive as two frames: 6 bytes (u16 event, u32 value, host
 * order) and the endpoint. CONNECT_RETRIED before any handshake means the
 * connection was refused (nothing listens: the node is down or not up
 * yet). DISCONNECTED after HANDSHAKE_SUCCEEDED (or after
 * a message came) is an established connection that broke, which is what a
 * node's death looks like from here; a handshake that fails (a wrong key in
 * the address) is not a drop: such a node simply never answers. Reconnection is libzmq's business; a
 * restarted node is a new process without the sessions, and the caller
 * treats a drop as the loss of every session on the link.
 */
#include "client/link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "kernels/err.h"
#include "proto/codec.h"

#define LINK_MAX_FRAME ((int64_t)256 << 20) /* largest reply frame accepted */
#define LINK_FAR 1e300

struct shoal_link {
    void *sock;
    void *mon;
    shoal_addr addr;
    char address[SHOAL_ADDR_MAX];
    unsigned drops;
    int up;              /* a connection with a completed handshake is up */
    unsigned refused;    /* connection attempts that failed since the last
                            handshake that succeeded (or since open) */
    int awaiting;
    double heard;        /* last message from the node, or start of the wait */
    double ping_sent;    /* last PING, 0: none during this wait */
    uint64_t ping_id;
    uint8_t *hbuf;       /* SHOAL_WIRE_HEADER_MAX */
    uint8_t *tbuf;       /* encoded request tensor */
    size_t tcap;
    shoal_wire_header req;
};

double shoal_link_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int shoal_link_open(void *zctx, const char *address, shoal_link **out)
{
    *out = NULL;
    if (sodium_init() < 0)
        return SHOAL_ERR_INTERNAL;
    shoal_link *l = calloc(1, sizeof *l);
    if (!l)
        return SHOAL_ERR_NOMEM;
    int rc = SHOAL_ERR_FORMAT;
    if (!address || shoal_addr_parse(&l->addr, address) ||
        shoal_addr_format(&l->addr, l->address, sizeof l->address))
        goto fail;
    rc = SHOAL_ERR_NOMEM;
    if (!(l->hbuf = malloc(SHOAL_WIRE_HEADER_MAX)))
        goto fail;
    if ((rc = shoal_transport_client_open(zctx, &l->addr, LINK_MAX_FRAME, &l->sock)))
        goto fail;
    rc = SHOAL_ERR_IO;
    uint64_t tag;
    randombytes_buf(&tag, sizeof tag);
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://shoal-link-%p-%016llx", (void *)l, (unsigned long long)tag);
    if (zmq_socket_monitor(l->sock, ep,
                           ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                               ZMQ_EVENT_CONNECT_RETRIED))
        goto fail;
    int zero = 0;
    if (!(l->mon = zmq_socket(zctx, ZMQ_PAIR)) ||
        zmq_setsockopt(l->mon, ZMQ_LINGER, &zero, sizeof zero) || zmq_connect(l->mon, ep))
        goto fail;
    randombytes_buf(&l->ping_id, sizeof l->ping_id);
    *out = l;
    return 0;
fail:
    shoal_link_destroy(&l);
    return rc;
}

void shoal_link_destroy(shoal_link **lp)
{
    if (!lp || !*lp)
        return;
    shoal_link *l = *lp;
    if (l->sock)
        zmq_socket_monitor(l->sock, NULL, 0);
    shoal_transport_close(&l->mon);
    shoal_transport_close(&l->sock);
    free(l->hbuf);
    free(l->tbuf);
    free(l);
    *lp = NULL;
}

const char *shoal_link_address(const shoal_link *l) { return l->address; }
unsigned shoal_link_drops(const shoal_link *l) { return l->drops; }
unsigned shoal_link_refused(const shoal_link *l) { return l->up ? 0 : l->refused; }

int shoal_link_send(shoal_link *l, const shoal_wire_header *h, const float *x, uint32_t n,
                    uint32_t dim, int codec)
{
    shoal_wire_header *q = &l->req;
    *q = *h;
    shoal_transport_part parts[2];
    int nparts = 1;
    if (x) {
        shoal_codec_desc d;
        uint32_t shape[2] = {n, dim};
        if (n == 0 || dim == 0 || shoal_codec_desc_init(&d, codec, 2, shape))
            return SHOAL_ERR_ARG;
        if (d.nbytes > l->tcap) {
            uint8_t *nb = realloc(l->tbuf, d.nbytes);
            if (!nb)
                return SHOAL_ERR_NOMEM;
            l->tbuf = nb;
            l->tcap = d.nbytes;
        }
        int rc = shoal_codec_encode(&d, x, l->tbuf, l->tcap);
        if (rc)
            return rc;
        q->ntensors = 0;
        if (shoal_wire_tensor_add(q, &d))
            return SHOAL_ERR_ARG;
        q->has |= SHOAL_WIRE_HAS_REPLY_CODEC;
        q->reply_codec = (uint32_t)codec;
        parts[1].data = l->tbuf;
        parts[1].len = d.nbytes;
        nparts = 2;
    }
    size_t hlen;
    if (shoal_wire_encode(q, l->hbuf, SHOAL_WIRE_HEADER_MAX, &hlen))
        return SHOAL_ERR_ARG;
    parts[0].data = l->hbuf;
    parts[0].len = hlen;
    return shoal_transport_send(l->sock, parts, nparts);
}

void shoal_link_await(shoal_link *l, double now)
{
    if (!l->awaiting || l->heard < now) {
        /* silence counts from the start of this wait */
        if (!l->awaiting)
            l->ping_sent = 0;
        l->heard = now;
    }
    l->awaiting = 1;
}

void shoal_link_idle(shoal_link *l) { l->awaiting = 0; }

void shoal_link_poll_items(shoal_link *l, zmq_pollitem_t items[2])
{
    items[0] = (zmq_pollitem_t){l->sock, 0, ZMQ_POLLIN, 0};
    items[1] = (zmq_pollitem_t){l->mon, 0, ZMQ_POLLIN, 0};
}

/* Count the monitor's DISCONNECTED events. */
static void drain_monitor(shoal_link *l)
{
    for (;;) {
        zmq_msg_t ev, ep;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, l->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        if (zmq_msg_size(&ev) >= 2) {
            uint16_t id;
            memcpy(&id, zmq_msg_data(&ev), sizeof id);
            if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
                l->up = 1;
                l->refused = 0;
            } else if (id == ZMQ_EVENT_CONNECT_RETRIED && !l->up) {
                l->refused++; /* nobody listens there now */
            } else if (id == ZMQ_EVENT_DISCONNECTED && l->up) {
                /* an established connection broke (not a handshake that
                 * never completed: a wrong key just stays silent) */
                l->drops++;
                l->up = 0;
            }
        }
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        while (more) { /* the endpoint frame */
            zmq_msg_init(&ep);
            if (zmq_msg_recv(&ep, l->mon, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&ep);
                break;
            }
            more = zmq_msg_more(&ep);
            zmq_msg_close(&ep);
        }
    }
}

int shoal_link_service(shoal_link *l, double now, shoal_transport_msg *m, shoal_wire_header *h)
{
    drain_monitor(l);
    size_t max_total = (size_t)LINK_MAX_FRAME * 2;
    for (;;) {
        shoal_transport_msg_init(m);
        int rc = shoal_transport_recv(l->sock, m, 1 + SHOAL_WIRE_MAX_TENSORS, max_total,
                                      ZMQ_DONTWAIT);
        if (rc == SHOAL_ERR_TIMEOUT || rc == SHOAL_ERR_IO)
            return rc;
        l->heard = now; /* anything at all proves the node is there */
        l->up = 1;
        if (rc || m->nframes < 1) {
            shoal_transport_msg_close(m);
            continue; /* oversized: dropped whole */
        }
        rc = shoal_wire_decode(h, zmq_msg_data(&m->frame[0]), zmq_msg_size(&m->frame[0]));
        if (rc) {
            shoal_transport_msg_close(m);
            return SHOAL_ERR_PROTOCOL;
        }
        if ((h->flags & SHOAL_WIRE_FLAG_REPLY) &&
            (h->op == SHOAL_OP_PING || (h->op == SHOAL_OP_ERROR && h->request_id == l->ping_id))) {
            shoal_transport_msg_close(m);
            continue;
        }
        return 0;
    }
}

int shoal_link_tick(shoal_link *l, double now, double liveness_ms)
{
    if (!l->awaiting)
        return 0;
    if (now - l->heard >= liveness_ms)
        return SHOAL_ERR_TIMEOUT;
    double every = liveness_ms / 4;
    if (now - l->heard >= every && now - l->ping_sent >= every) {
        shoal_wire_header p;
        if (++l->ping_id == 0)
            l->ping_id = 1;
        shoal_wire_header_init(&p, SHOAL_OP_PING, l->ping_id);
        size_t hlen;
        if (shoal_wire_encode(&p, l->hbuf, SHOAL_WIRE_HEADER_MAX, &hlen) == 0) {
            shoal_transport_part part = {l->hbuf, hlen};
            shoal_transport_send(l->sock, &part, 1); /* a full queue: the silence tells */
        }
        l->ping_sent = now;
    }
    return 0;
}

double shoal_link_next_due(const shoal_link *l, double liveness_ms)
{
    if (!l->awaiting)
        return LINK_FAR;
    double every = liveness_ms / 4;
    double ping = l->heard + every;
    if (l->ping_sent + every > ping)
        ping = l->ping_sent + every;
    double dead = l->heard + liveness_ms;
    return ping < dead ? ping : dead;
}

int shoal_link_take_tensor(const shoal_wire_header *h, shoal_transport_msg *m, int frame,
                           float *out, uint32_t n, uint32_t dim)
{
    if (frame < 1 || frame >= m->nframes || (uint32_t)frame > h->ntensors)
        return SHOAL_ERR_PROTOCOL;
    size_t lens[SHOAL_TRANSPORT_MAX_FRAMES];
    size_t nt = (size_t)m->nframes - 1;
    for (size_t i = 0; i < nt; i++)
        lens[i] = zmq_msg_size(&m->frame[i + 1]);
    if (shoal_wire_frames_check(h, nt, lens))
        return SHOAL_ERR_PROTOCOL;
    const shoal_codec_desc *d = &h->tensors[frame - 1];
    if (d->ndim != 2 || d->shape[0] != n || d->shape[1] != dim)
        return SHOAL_ERR_PROTOCOL;
    if (shoal_codec_decode(d, zmq_msg_data(&m->frame[frame]), zmq_msg_size(&m->frame[frame]),
                           out, (size_t)n * dim))
        return SHOAL_ERR_PROTOCOL;
    return 0;
}
