/*
 * Server-to-server forwarding (see push.h). The table of outgoing links and
 * the relay ring belong to the I/O thread; the worker side touches only the
 * session it holds and its own sockets and buffers.
 */
#include "node/push.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "swarm/log.h"

typedef struct push_link {
    char address[SHOAL_ADDR_MAX];
    void *sock;
    uint64_t used;
    double last;                  /* node_now() of the last push sent */
} push_link;

typedef struct push_relay {
    uint64_t id;                  /* the push's request id; 0: empty */
    uint8_t rid[NODE_RID_MAX];    /* the pushing session's client */
    size_t rid_len;
} push_relay;

struct node_push_table {
    push_link links[NODE_PUSH_LINKS];
    int nlinks;
    uint64_t stamp;
    double new_tokens;            /* new links that may be opened now */
    double new_at;                /* node_now() of the last refill */
    push_relay relays[NODE_PUSH_RELAYS];
    int next_relay;
    uint8_t *hbuf;                /* SHOAL_WIRE_HEADER_MAX: error replies */
};

int node_push_init(shoal_node *n)
{
    n->push_table = calloc(1, sizeof *n->push_table);
    if (!n->push_table || !(n->push_table->hbuf = malloc(SHOAL_WIRE_HEADER_MAX)))
        return SHOAL_ERR_NOMEM;
    n->push_table->new_tokens = NODE_PUSH_NEW_BURST;
    n->push_table->new_at = node_now();
    return 0;
}

void node_push_fini(shoal_node *n)
{
    struct node_push_table *t = n->push_table;
    if (!t)
        return;
    for (int i = 0; i < t->nlinks; i++)
        shoal_transport_close(&t->links[i].sock);
    free(t->hbuf);
    free(t);
    n->push_table = NULL;
}

/* ---- worker side --------------------------------------------------------- */

static void copy_rid(node_session *s, const node_job *j)
{
    size_t len = zmq_msg_size((zmq_msg_t *)&j->msg.frame[0]);
    if (len == 0 || len > NODE_RID_MAX)
        return;
    memcpy(s->client_rid, zmq_msg_data((zmq_msg_t *)&j->msg.frame[0]), len);
    s->client_rid_len = len;
}

void node_push_open(node_session *s, const node_job *j)
{
    s->push_token = (j->h.has & SHOAL_WIRE_HAS_PUSH_TOKEN) ? j->h.push_token : 0;
    copy_rid(s, j);
}

void node_push_note_client(node_session *s, const node_job *j) { copy_rid(s, j); }

/* An ERROR reply to j's sender, through the worker's socket. */
static void push_refuse(node_worker *w, node_job *j, int code, const char *msg)
{
    size_t hlen;
    if (shoal_wire_encode_error(j->h.request_id, code, msg, w->hbuf, SHOAL_WIRE_HEADER_MAX,
                                &hlen))
        return;
    shoal_transport_part parts[2] = {
        {zmq_msg_data(&j->msg.frame[0]), zmq_msg_size(&j->msg.frame[0])},
        {w->hbuf, hlen},
    };
    shoal_transport_send(w->push, parts, 2);
    SHOAL_LOG_D("push %llu refused: %s", (unsigned long long)j->h.request_id, msg);
}

int node_push_accept(node_worker *w, node_job *j, node_session *s)
{
    if (!s->push_token || j->h.push_token != s->push_token) {
        push_refuse(w, j, SHOAL_ERR_AUTH, "the push token does not match the session's");
        return -1;
    }
    if (!s->client_rid_len) {
        push_refuse(w, j, SHOAL_ERR_SESSION, "the session has no client to answer");
        return -1;
    }
    /* from here on, every answer about this step goes to the client */
    zmq_msg_close(&j->msg.frame[0]);
    if (zmq_msg_init_size(&j->msg.frame[0], s->client_rid_len)) {
        zmq_msg_init(&j->msg.frame[0]);
        return -1;
    }
    memcpy(zmq_msg_data(&j->msg.frame[0]), s->client_rid, s->client_rid_len);
    j->h.op = SHOAL_OP_SESSION_STEP;
    return 0;
}

void node_push_forward(node_worker *w, node_job *j, const float *x, uint32_t ntok)
{
    const shoal_wire_header *h = &j->h;
    if (!(h->has & SHOAL_WIRE_HAS_ROUTE) || h->nroute == 0)
        return;
    shoal_node *n = w->node;
    const shoal_wire_hop *next = &h->route[0];
    shoal_wire_header q;
    uint64_t id = h->request_id + 1 ? h->request_id + 1 : 1;
    shoal_wire_header_init(&q, SHOAL_OP_SESSION_PUSH, id);
    q.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION |
            SHOAL_WIRE_HAS_PUSH_TOKEN | SHOAL_WIRE_HAS_REPLY_CODEC;
    q.session_id = next->session_id;
    q.step_id = h->step_id;
    q.position = h->position;
    q.push_token = next->token;
    int codec = (h->has & SHOAL_WIRE_HAS_REPLY_CODEC) ? (int)h->reply_codec
                                                      : (int)h->tensors[0].codec;
    q.reply_codec = (uint32_t)codec;
    if (h->nroute > 1) {
        q.has |= SHOAL_WIRE_HAS_ROUTE;
        q.nroute = h->nroute - 1;
        memcpy(q.route, h->route + 1, q.nroute * sizeof *q.route);
    }
    shoal_codec_desc d;
    uint32_t shape[2] = {ntok, (uint32_t)n->hp.dim};
    size_t hlen;
    if (shoal_codec_desc_init(&d, codec, 2, shape) || d.nbytes > w->tcap ||
        shoal_codec_encode(&d, x, w->tbuf, w->tcap) || shoal_wire_tensor_add(&q, &d) ||
        shoal_wire_encode(&q, w->hbuf, SHOAL_WIRE_HEADER_MAX, &hlen)) {
        SHOAL_LOG_W("session %016llx: cannot build the push of step %llu",
                    (unsigned long long)h->session_id, (unsigned long long)h->step_id);
        return;
    }
    shoal_transport_part parts[5] = {
        {"", 0},
        {next->addr.ptr, next->addr.len},
        {zmq_msg_data(&j->msg.frame[0]), zmq_msg_size(&j->msg.frame[0])},
        {w->hbuf, hlen},
        {w->tbuf, (size_t)d.nbytes},
    };
    int rc = shoal_transport_send(w->push, parts, 5);
    if (rc)
        SHOAL_LOG_E("worker %d: cannot pass a push to the I/O thread (%s)", w->index,
                    shoal_strerror(rc));
}

/* ---- I/O thread side ------------------------------------------------------- */

/* An ERROR reply with request id `id` to the client routing id rid. */
static void relay_error(shoal_node *n, const uint8_t *rid, size_t rid_len, uint64_t id,
                        int code, const char *msg)
{
    size_t hlen;
    if (shoal_wire_encode_error(id, code, msg, n->push_table->hbuf, SHOAL_WIRE_HEADER_MAX,
                                &hlen))
        return;
    shoal_transport_part parts[2] = {{rid, rid_len}, {n->push_table->hbuf, hlen}};
    shoal_transport_send(n->router, parts, 2);
}

/* May a new outgoing link be opened now? A token bucket: a client names the
 * next hop's address, so without a bound a client could make the node
 * connect to any number of hosts. */
static bool link_allowed(struct node_push_table *t, double now)
{
    t->new_tokens += (now - t->new_at) * NODE_PUSH_NEW_PER_S;
    if (t->new_tokens > NODE_PUSH_NEW_BURST)
        t->new_tokens = NODE_PUSH_NEW_BURST;
    t->new_at = now;
    if (t->new_tokens < 1)
        return false;
    t->new_tokens -= 1;
    return true;
}

/* The outgoing link to address, opened when missing (the least recently
 * used one closed when the table is full). NULL when it cannot be. */
static push_link *link_get(shoal_node *n, const char *address)
{
    struct node_push_table *t = n->push_table;
    push_link *victim = NULL;
    double now = node_now();
    for (int i = 0; i < t->nlinks; i++) {
        if (!strcmp(t->links[i].address, address)) {
            t->links[i].used = ++t->stamp;
            t->links[i].last = now;
            return &t->links[i];
        }
        if (!victim || t->links[i].used < victim->used)
            victim = &t->links[i];
    }
    shoal_addr a;
    if (shoal_addr_parse(&a, address))
        return NULL;
    if (!link_allowed(t, now)) {
        SHOAL_LOG_D("push to %s refused: too many new next hops (%.0f per minute)", address,
                    NODE_PUSH_NEW_PER_S * 60);
        return NULL;
    }
    push_link *l = t->nlinks < NODE_PUSH_LINKS ? &t->links[t->nlinks] : victim;
    if (l == victim)
        shoal_transport_close(&l->sock);
    else
        t->nlinks++;
    memset(l, 0, sizeof *l);
    if (shoal_transport_client_open(n->ctx, &a, (int64_t)n->max_frame, &l->sock)) {
        /* keep the slot, empty: the next push to it tries again */
        return NULL;
    }
    snprintf(l->address, sizeof l->address, "%s", address);
    l->used = ++t->stamp;
    l->last = now;
    return l;
}

void node_push_expire(shoal_node *n, double now)
{
    struct node_push_table *t = n->push_table;
    for (int i = 0; i < t->nlinks; i++)
        if (t->links[i].sock && now - t->links[i].last > NODE_PUSH_IDLE_S)
            shoal_transport_close(&t->links[i].sock); /* the slot stays, empty */
}

void node_push_send(shoal_node *n, shoal_transport_msg *m)
{
    struct node_push_table *t = n->push_table;
    if (m->nframes != 5) {
        shoal_transport_msg_close(m);
        return;
    }
    char address[SHOAL_ADDR_MAX];
    size_t alen = zmq_msg_size(&m->frame[1]);
    size_t rid_len = zmq_msg_size(&m->frame[2]);
    shoal_wire_header h;
    if (alen >= sizeof address || rid_len == 0 || rid_len > NODE_RID_MAX ||
        shoal_wire_decode(&h, zmq_msg_data(&m->frame[3]), zmq_msg_size(&m->frame[3]))) {
        shoal_transport_msg_close(m);
        return;
    }
    memcpy(address, zmq_msg_data(&m->frame[1]), alen);
    address[alen] = 0;
    push_relay *r = &t->relays[t->next_relay];
    t->next_relay = (t->next_relay + 1) % NODE_PUSH_RELAYS;
    r->id = h.request_id;
    memcpy(r->rid, zmq_msg_data(&m->frame[2]), rid_len);
    r->rid_len = rid_len;
    push_link *l = link_get(n, address);
    int rc = SHOAL_ERR_ARG;
    if (l && l->sock) {
        shoal_transport_msg out;
        shoal_transport_msg_init(&out);
        out.nframes = 2;
        for (int i = 0; i < 2; i++) {
            zmq_msg_init(&out.frame[i]);
            zmq_msg_move(&out.frame[i], &m->frame[3 + i]);
        }
        rc = shoal_transport_send_msg(l->sock, &out, ZMQ_DONTWAIT);
    }
    if (rc) {
        char msg[SHOAL_WIRE_MESSAGE_MAX + SHOAL_ADDR_MAX]; /* cut to fit by the encoder */
        snprintf(msg, sizeof msg, "cannot pass the step on to %s (%s)", address,
                 shoal_strerror(rc));
        relay_error(n, r->rid, r->rid_len, r->id, SHOAL_ERR_IO, msg);
        r->id = 0;
    }
    shoal_transport_msg_close(m);
}

int node_push_poll_items(shoal_node *n, zmq_pollitem_t *items, int max)
{
    struct node_push_table *t = n->push_table;
    int k = 0;
    for (int i = 0; i < t->nlinks && k < max; i++)
        if (t->links[i].sock)
            items[k++] = (zmq_pollitem_t){t->links[i].sock, 0, ZMQ_POLLIN, 0};
    return k;
}

void node_push_service(shoal_node *n, const zmq_pollitem_t *items, int count)
{
    struct node_push_table *t = n->push_table;
    for (int i = 0; i < count; i++) {
        if (!(items[i].revents & ZMQ_POLLIN))
            continue;
        for (int guard = 0; guard < 256; guard++) {
            shoal_transport_msg m;
            shoal_transport_msg_init(&m);
            int rc = shoal_transport_recv(items[i].socket, &m, 1 + SHOAL_WIRE_MAX_TENSORS,
                                          SHOAL_WIRE_HEADER_MAX + 2 * n->max_frame, ZMQ_DONTWAIT);
            if (rc == SHOAL_ERR_TIMEOUT || rc == SHOAL_ERR_IO)
                break;
            shoal_wire_header h;
            if (rc == 0 && m.nframes >= 1 &&
                shoal_wire_decode(&h, zmq_msg_data(&m.frame[0]), zmq_msg_size(&m.frame[0])) == 0 &&
                h.op == SHOAL_OP_ERROR && (h.flags & SHOAL_WIRE_FLAG_REPLY) && h.request_id) {
                for (int k = 0; k < NODE_PUSH_RELAYS; k++) {
                    push_relay *r = &t->relays[k];
                    if (r->id != h.request_id)
                        continue;
                    /* the next node's own words, to the client, as they are */
                    shoal_transport_part parts[2] = {
                        {r->rid, r->rid_len},
                        {zmq_msg_data(&m.frame[0]), zmq_msg_size(&m.frame[0])},
                    };
                    shoal_transport_send(n->router, parts, 2);
                    r->id = 0;
                    break;
                }
            }
            shoal_transport_msg_close(&m);
        }
    }
}
