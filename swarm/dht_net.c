/*
 * The DHT's ZeroMQ adapter (see dht_net.h).
 *
 * The pool is a small array searched linearly by address (a few hundred
 * entries at most, compared with strcmp only on a hash match). DEALERs
 * queue while they connect (ZMQ_IMMEDIATE off): the first request to a new
 * address must not fail because the TCP and CURVE handshakes have not
 * finished yet; a peer that never answers costs the DHT a timeout, as it
 * would anyway. A request still queued for a dead peer may reach it later,
 * where it is answered to an id nobody waits for: harmless.
 *
 * Dead peers are noticed at once, not after the DHT's request timeout: each
 * DEALER has a socket monitor (a PAIR over inproc) and when a connect is
 * refused, a handshake fails or an established connection drops, every
 * request still unanswered on that DEALER (a small ring of ids per link)
 * is reported failed. A lookup then moves on to other nodes in
 * microseconds on a LAN where a silent timeout would cost seconds.
 *
 * The rate limiter is a fixed table of token buckets keyed by routing id;
 * a new routing id takes the slot used least recently. The table is small
 * on purpose: an attacker with many connections only evicts buckets, and
 * evicted buckets start full, so the limit is per live connection, which
 * is what a ROUTER can tell apart.
 */
#include "swarm/dht_net.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/err.h"
#include <sodium.h>

#include "proto/addr.h"
#include "swarm/record.h"
#include "swarm/transport.h"

#define RATE_SLOTS 128
#define RID_MAX 32
#define MAX_SLEEP_MS 1000
#define LINK_RIDS 32           /* unanswered request ids remembered per link */
#define MON_EVENTS (ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_DISCONNECTED | \
                    ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | \
                    ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

typedef struct link {
    char addr[SHOAL_ADDR_MAX];
    uint32_t hash;
    void *sock;
    void *mon;                 /* PAIR reading sock's monitor events, or NULL */
    int64_t used;
    uint64_t rids[LINK_RIDS];  /* requests sent and not answered yet (a ring) */
    uint32_t nrids, rid_head;
} link;

typedef struct rate_slot {
    uint8_t rid[RID_MAX];
    uint8_t len;
    double tokens;
    int64_t last;
} rate_slot;

struct shoal_dht_net {
    shoal_dht_net_params p;
    shoal_dht *dht;
    link *links;
    uint32_t nlinks;
    uint8_t *buf;            /* SHOAL_WIRE_HEADER_MAX: encoded requests and replies */
    shoal_wire_header rep;
    rate_slot rate[RATE_SLOTS];
    int64_t next_idle_check;
    uint32_t mon_seq;
    bool join_done;          /* shoal_dht_net_join's bootstrap ended */
    int join_status;
    shoal_dht_net_stats st;
};

shoal_dht_net_params shoal_dht_net_params_default(void)
{
    shoal_dht_net_params p;
    memset(&p, 0, sizeof p);
    p.dht = shoal_dht_params_default();
    p.max_links = 256;
    p.idle_ms = 120000;
    p.sndhwm = 32;
    p.rate = 200;
    p.burst = 400;
    return p;
}

int64_t shoal_dht_net_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static void link_close(shoal_dht_net *n, uint32_t i);

int shoal_dht_net_new(const shoal_dht_net_params *p, shoal_dht_net **out)
{
    *out = NULL;
    if (!p || !p->zmq_ctx || p->max_links < 1 || p->max_links > SHOAL_DHT_NET_MAX_LINKS ||
        p->idle_ms < 1 || p->sndhwm < 1 || !(p->rate > 0) || !(p->burst >= 1))
        return SHOAL_ERR_ARG;
    shoal_dht_net *n = calloc(1, sizeof *n);
    if (!n)
        return SHOAL_ERR_NOMEM;
    n->p = *p;
    n->links = calloc(p->max_links, sizeof *n->links);
    n->buf = malloc(SHOAL_WIRE_HEADER_MAX);
    int rc = SHOAL_ERR_NOMEM;
    if (!n->links || !n->buf)
        goto fail;
    if ((rc = shoal_dht_new(&p->dht, &n->dht)))
        goto fail;
    *out = n;
    return 0;
fail:
    shoal_dht_net_destroy(&n);
    return rc;
}

void shoal_dht_net_destroy(shoal_dht_net **pp)
{
    if (!pp || !*pp)
        return;
    shoal_dht_net *n = *pp;
    shoal_dht_destroy(&n->dht);
    while (n->links && n->nlinks)
        link_close(n, n->nlinks - 1);
    free(n->links);
    free(n->buf);
    free(n);
    *pp = NULL;
}

shoal_dht *shoal_dht_net_dht(shoal_dht_net *n) { return n->dht; }

/* ---- the DEALER pool ----------------------------------------------------- */

static void link_close(shoal_dht_net *n, uint32_t i)
{
    if (n->links[i].mon) /* stop the monitor first, or its socket keeps the context */
        zmq_socket_monitor(n->links[i].sock, NULL, 0);
    shoal_transport_close(&n->links[i].sock);
    shoal_transport_close(&n->links[i].mon);
    n->links[i] = n->links[--n->nlinks];
}

static void rid_push(link *l, uint64_t rid)
{
    l->rids[(l->rid_head + l->nrids) % LINK_RIDS] = rid;
    if (l->nrids < LINK_RIDS)
        l->nrids++;
    else
        l->rid_head = (l->rid_head + 1) % LINK_RIDS; /* the oldest times out as usual */
}

static void rid_drop(link *l, uint64_t rid)
{
    for (uint32_t k = 0; k < l->nrids; k++) {
        uint32_t at = (l->rid_head + k) % LINK_RIDS;
        if (l->rids[at] != rid)
            continue;
        /* move the oldest into the hole */
        l->rids[at] = l->rids[l->rid_head];
        l->rid_head = (l->rid_head + 1) % LINK_RIDS;
        l->nrids--;
        return;
    }
}

/* A monitor on sock, read through a PAIR; NULL when it cannot be made (the
 * link then relies on the DHT's timeouts). */
static void *monitor_open(shoal_dht_net *n, void *sock)
{
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://shoal-dht-mon-%p-%u", (void *)n, ++n->mon_seq);
    if (zmq_socket_monitor(sock, ep, MON_EVENTS))
        return NULL;
    void *mon = zmq_socket(n->p.zmq_ctx, ZMQ_PAIR);
    int zero = 0;
    if (!mon || zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero) || zmq_connect(mon, ep)) {
        if (mon)
            zmq_close(mon);
        zmq_socket_monitor(sock, NULL, 0);
        return NULL;
    }
    return mon;
}

/* The DEALER for address `to`, opened when missing; NULL when the address
 * does not parse or the socket cannot be made. */
static link *link_get(shoal_dht_net *n, const char *to, int64_t now)
{
    uint32_t h = hash_str(to);
    for (uint32_t i = 0; i < n->nlinks; i++)
        if (n->links[i].hash == h && !strcmp(n->links[i].addr, to)) {
            n->links[i].used = now;
            return &n->links[i];
        }
    size_t len = strnlen(to, SHOAL_ADDR_MAX);
    shoal_addr a;
    if (len == SHOAL_ADDR_MAX || shoal_addr_parse(&a, to))
        return NULL;
    if (n->nlinks == n->p.max_links) {
        /* the least recently used link with no request waiting; else the
         * least recently used, whose requests then fail at once */
        uint32_t lru = n->nlinks;
        for (uint32_t i = 0; i < n->nlinks; i++)
            if (!n->links[i].nrids && (lru == n->nlinks || n->links[i].used < n->links[lru].used))
                lru = i;
        for (uint32_t i = 0; lru == n->nlinks && i < n->nlinks; i++)
            if (i == 0 || n->links[i].used < n->links[lru].used)
                lru = i;
        link *v = &n->links[lru];
        uint64_t ids[LINK_RIDS];
        uint32_t k = v->nrids;
        for (uint32_t i = 0; i < k; i++)
            ids[i] = v->rids[(v->rid_head + i) % LINK_RIDS];
        link_close(n, lru);
        n->st.links_evicted++;
        for (uint32_t i = 0; i < k; i++)
            shoal_dht_request_failed(n->dht, ids[i], now);
    }
    void *s = NULL;
    if (shoal_transport_client_open(n->p.zmq_ctx, &a, SHOAL_WIRE_HEADER_MAX, &s))
        return NULL;
    int zero = 0;
    if (zmq_setsockopt(s, ZMQ_SNDHWM, &n->p.sndhwm, sizeof n->p.sndhwm) ||
        zmq_setsockopt(s, ZMQ_IMMEDIATE, &zero, sizeof zero)) {
        shoal_transport_close(&s);
        return NULL;
    }
    link *l = &n->links[n->nlinks++];
    memset(l, 0, sizeof *l);
    memcpy(l->addr, to, len + 1);
    l->hash = h;
    l->sock = s;
    l->mon = monitor_open(n, s);
    l->used = now;
    n->st.links_opened++;
    return l;
}

static void drain_outbox(shoal_dht_net *n, int64_t now)
{
    shoal_dht_msg msg;
    while (shoal_dht_next_outgoing(n->dht, &msg)) {
        uint64_t rid = msg.header.request_id;
        size_t len = 0;
        link *l = NULL;
        /* encode first: msg points into the DHT until the next call into it */
        int ok = shoal_wire_encode(&msg.header, n->buf, SHOAL_WIRE_HEADER_MAX, &len) == 0 &&
                 (l = link_get(n, msg.to, now)) != NULL;
        if (ok) {
            shoal_transport_part part = {n->buf, len};
            ok = shoal_transport_send(l->sock, &part, 1) == 0;
        }
        if (ok) {
            n->st.sent++;
            rid_push(l, rid);
        } else {
            n->st.send_failed++;
            shoal_dht_request_failed(n->dht, rid, now);
        }
    }
}

static void close_idle(shoal_dht_net *n, int64_t now)
{
    if (now < n->next_idle_check)
        return;
    n->next_idle_check = now + 1000;
    for (uint32_t i = 0; i < n->nlinks;) {
        if (n->links[i].used + n->p.idle_ms <= now) {
            link_close(n, i);
            n->st.links_idle_closed++;
        } else {
            i++;
        }
    }
}

int64_t shoal_dht_net_pump(shoal_dht_net *n, int64_t now)
{
    drain_outbox(n, now);
    int64_t wake = shoal_dht_tick(n->dht, now);
    drain_outbox(n, now);
    close_idle(n, now);
    if (wake > now + MAX_SLEEP_MS)
        wake = now + MAX_SLEEP_MS; /* idle links are checked about once a second */
    return wake;
}

size_t shoal_dht_net_poll_items(shoal_dht_net *n, zmq_pollitem_t *items, size_t max)
{
    size_t k = 0;
    for (uint32_t i = 0; i < n->nlinks && k + 2 <= max; i++) {
        items[k++] = (zmq_pollitem_t){n->links[i].sock, 0, ZMQ_POLLIN, 0};
        if (n->links[i].mon)
            items[k++] = (zmq_pollitem_t){n->links[i].mon, 0, ZMQ_POLLIN, 0};
    }
    return k;
}

/* Read every message waiting on link i; returns how many. */
static size_t link_read(shoal_dht_net *n, link *l, int64_t now)
{
    size_t count = 0;
    for (;;) {
        shoal_transport_msg m;
        shoal_transport_msg_init(&m);
        int rc = shoal_transport_recv(l->sock, &m, 1, SHOAL_WIRE_HEADER_MAX, ZMQ_DONTWAIT);
        if (rc == SHOAL_ERR_TIMEOUT || rc == SHOAL_ERR_IO)
            return count;
        count++;
        n->st.replies++;
        if (rc) { /* too big or too many frames: dropped whole */
            n->st.bad_replies++;
            continue;
        }
        shoal_wire_header h;
        rc = shoal_wire_decode(&h, zmq_msg_data(&m.frame[0]), zmq_msg_size(&m.frame[0]));
        if (rc) {
            n->st.bad_replies++;
            if (h.request_id)
                shoal_dht_request_failed(n->dht, h.request_id, now);
        } else {
            rid_drop(l, h.request_id);
            shoal_dht_receive_reply(n->dht, l->addr, &h, now);
        }
        shoal_transport_msg_close(&m);
        l->used = now;
    }
}

/* Read the monitor events of l; on a failure, fail its unanswered requests.
 * Returns how many events were read. */
static size_t link_events(shoal_dht_net *n, link *l, int64_t now)
{
    size_t count = 0;
    bool failed = false;
    for (;;) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, l->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&f);
            break;
        }
        /* frame 1: u16 event, u32 value; frame 2: the endpoint */
        if (zmq_msg_size(&f) >= 2) {
            uint16_t ev;
            memcpy(&ev, zmq_msg_data(&f), 2);
            if (ev & MON_EVENTS)
                failed = true;
        }
        int more = zmq_msg_more(&f);
        zmq_msg_close(&f);
        while (more) {
            zmq_msg_init(&f);
            if (zmq_msg_recv(&f, l->mon, ZMQ_DONTWAIT) < 0)
                more = 0;
            else
                more = zmq_msg_more(&f);
            zmq_msg_close(&f);
        }
        count++;
    }
    if (failed && l->nrids) {
        uint64_t ids[LINK_RIDS];
        uint32_t k = l->nrids;
        for (uint32_t i = 0; i < k; i++)
            ids[i] = l->rids[(l->rid_head + i) % LINK_RIDS];
        l->nrids = 0;
        n->st.links_failed++;
        for (uint32_t i = 0; i < k; i++) /* may run callbacks: l is not used after */
            shoal_dht_request_failed(n->dht, ids[i], now);
    }
    return count;
}

size_t shoal_dht_net_on_poll(shoal_dht_net *n, const zmq_pollitem_t *items, size_t count,
                             int64_t now)
{
    size_t read = 0;
    for (size_t k = 0; k < count; k++) {
        if (!(items[k].revents & ZMQ_POLLIN))
            continue;
        /* the pool may have changed since the items were made: find the link */
        for (uint32_t i = 0; i < n->nlinks; i++) {
            if (n->links[i].sock == items[k].socket) {
                read += link_read(n, &n->links[i], now);
                break;
            }
            if (n->links[i].mon && n->links[i].mon == items[k].socket) {
                read += link_events(n, &n->links[i], now);
                break;
            }
        }
    }
    return read;
}

/* ---- answering ------------------------------------------------------------ */

/* Take one token from the bucket of this routing id; false when empty. */
static bool rate_take(shoal_dht_net *n, const void *rid, size_t len, int64_t now)
{
    if (len > RID_MAX)
        len = RID_MAX; /* ROUTER ids are 5 bytes unless a peer sets one */
    rate_slot *s = NULL, *lru = &n->rate[0];
    for (int i = 0; i < RATE_SLOTS; i++) {
        rate_slot *r = &n->rate[i];
        if (r->len == len && !memcmp(r->rid, rid, len) && r->last) {
            s = r;
            break;
        }
        if (r->last < lru->last)
            lru = r;
    }
    if (!s) {
        s = lru;
        memcpy(s->rid, rid, len);
        s->len = (uint8_t)len;
        s->tokens = n->p.burst;
        s->last = now;
    }
    double add = (double)(now - s->last) * 1e-3 * n->p.rate;
    if (add > 0)
        s->tokens = s->tokens + add > n->p.burst ? n->p.burst : s->tokens + add;
    s->last = now > s->last ? now : s->last;
    if (s->last == 0)
        s->last = 1;
    if (s->tokens < 1)
        return false;
    s->tokens -= 1;
    return true;
}

int shoal_dht_net_answer(shoal_dht_net *n, void *router, const void *rid, size_t rid_len,
                         const shoal_wire_header *req, int64_t now)
{
    int rc;
    size_t len = 0;
    if (!rate_take(n, rid, rid_len, now)) {
        n->st.rate_limited++;
        rc = SHOAL_ERR_BUSY;
        if (shoal_wire_encode_error(req->request_id, SHOAL_ERR_BUSY, "DHT rate limit", n->buf,
                                    SHOAL_WIRE_HEADER_MAX, &len))
            return rc;
    } else {
        rc = shoal_dht_receive_request(n->dht, req, now, &n->rep);
        if (shoal_wire_encode(&n->rep, n->buf, SHOAL_WIRE_HEADER_MAX, &len) &&
            shoal_wire_encode_error(req->request_id, SHOAL_ERR_INTERNAL, "cannot encode",
                                    n->buf, SHOAL_WIRE_HEADER_MAX, &len))
            return SHOAL_ERR_INTERNAL;
        n->st.answered++;
    }
    shoal_transport_part parts[2] = {{rid, rid_len}, {n->buf, len}};
    shoal_transport_send(router, parts, 2); /* a full socket drops the reply */
    /* the request may have started pings (unknown requesters): the owner
     * pumps after every event */
    return rc;
}

/* ---- a loop for owners with nothing else to poll ------------------------- */

int shoal_dht_net_run(shoal_dht_net *n, int64_t until_ms, bool (*done)(void *ctx), void *ctx)
{
    size_t max_items = SHOAL_DHT_NET_POLL_PER_LINK * (size_t)n->p.max_links;
    zmq_pollitem_t *items = malloc(max_items * sizeof *items);
    if (!items)
        return SHOAL_ERR_NOMEM;
    int rc = SHOAL_ERR_TIMEOUT;
    for (;;) {
        int64_t now = shoal_dht_net_now();
        if (done && done(ctx)) { /* done may start operations: pump after it */
            rc = 0;
            break;
        }
        int64_t wake = shoal_dht_net_pump(n, now);
        if (now >= until_ms)
            break;
        int64_t t = (wake < until_ms ? wake : until_ms) - now;
        if (t < 1)
            t = 1;
        size_t k = shoal_dht_net_poll_items(n, items, max_items);
        int r = zmq_poll(items, (int)k, (long)t);
        if (r < 0 && errno != EINTR) {
            rc = SHOAL_ERR_IO;
            break;
        }
        if (r > 0)
            shoal_dht_net_on_poll(n, items, k, shoal_dht_net_now());
    }
    free(items);
    return rc;
}

void shoal_dht_net_stats_get(const shoal_dht_net *n, shoal_dht_net_stats *st)
{
    *st = n->st;
    st->links = n->nlinks;
}

/* ---- clients ---------------------------------------------------------------- */

int shoal_dht_net_params_client(shoal_dht_net_params *p, void *zmq_ctx)
{
    *p = shoal_dht_net_params_default();
    if (sodium_init() < 0)
        return SHOAL_ERR_INTERNAL;
    p->zmq_ctx = zmq_ctx;
    randombytes_buf(p->dht.self_id, sizeof p->dht.self_id);
    randombytes_buf(p->dht.seed, sizeof p->dht.seed);
    p->dht.self_addr[0] = 0;
    p->dht.validate = shoal_record_dht_validate;
    p->dht.validate_ctx = NULL;
    return 0;
}

static void on_join(void *ctx, int status, const shoal_dht_contact *nodes, size_t n,
                    const shoal_dht_lookup_info *info)
{
    (void)nodes;
    (void)n;
    (void)info;
    shoal_dht_net *net = ctx;
    net->join_done = true;
    net->join_status = status;
}

static bool join_done(void *ctx) { return ((shoal_dht_net *)ctx)->join_done; }

int shoal_dht_net_join(shoal_dht_net *n, const char *const *addrs, size_t count,
                       int64_t until_ms, size_t *contacts)
{
    n->join_done = false;
    n->join_status = 0;
    int rc = shoal_dht_bootstrap(n->dht, addrs, count, shoal_dht_net_now(), on_join, n);
    if (rc)
        return rc;
    rc = shoal_dht_net_run(n, until_ms, join_done, n);
    if (rc == 0)
        rc = n->join_status;
    if (contacts) {
        shoal_dht_stats st;
        shoal_dht_stats_get(n->dht, &st);
        *contacts = st.contacts;
    }
    return rc;
}
