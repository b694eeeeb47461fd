/*
 * Discovery through the DHT (see discover.h).
 *
 * The probe is one poll loop over one DEALER per server (in chunks), each a
 * small state machine: INFO sent -> INFO answered -> PING sent ... ->
 * padded PING sent (16 KiB, 64 KiB, ...) -> done.
 * Request ids are per server and per step, so a late answer to an earlier
 * step is recognised and dropped. Each DEALER has a socket monitor: a
 * refused connection or a failed CURVE handshake ends its probe at once
 * (a server killed a moment ago costs microseconds, not the timeout).
 */
#include "client/discover.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "kernels/err.h"
#include "proto/addr.h"
#include "swarm/blockmap.h"
#include "swarm/dht_net.h"
#include "swarm/transport.h"

#define PROBE_CHUNK 256
#define PAD_FIRST (16 * 1024) /* bytes of the first padded PING */
#define PAD_GROWTH 4          /* the next one is this much larger */
#define PAD_ENOUGH_MS 2.0     /* extra time that makes a good enough sample */
#define PAD_EXTRA_MIN_MS 0.01 /* a faster sample is taken as this long */
#define PAD_WAIT_MS 250.0     /* a padded PING out longer: the link is slow */
#define PROBE_MAX_MSG (SHOAL_WIRE_HEADER_MAX + SHOAL_WIRE_PAD_MAX)

shoal_discover_params shoal_discover_params_default(void)
{
    shoal_discover_params p = {.timeout_ms = 10000, .probe_timeout_ms = 3000, .pings = 3,
                               .include_offline = 0, .pad_max = SHOAL_WIRE_PAD_MAX};
    return p;
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---- probing ------------------------------------------------------------ */

typedef struct probe {
    shoal_discover_server *s;
    void *sock;
    void *mon;           /* PAIR reading sock's monitor, or NULL */
    uint64_t rid;        /* the request in flight */
    int step;            /* 0: INFO; k >= 1: ping k */
    uint32_t pad;        /* bytes of the padded ping in flight; 0: plain */
    double sent;
    int done;
} probe;

/* What all probes of a chunk share. */
typedef struct probe_env {
    int pings;
    uint32_t pad_max;
    uint8_t *buf;        /* SHOAL_WIRE_HEADER_MAX: headers */
    const uint8_t *zeros; /* pad_max bytes: the pad sent */
} probe_env;

static int info_to_cand(const shoal_wire_header *h, shoal_route_cand *c)
{
    uint32_t state;
    if (!(h->has & SHOAL_WIRE_HAS_SPAN) || h->span_start >= h->span_end)
        return SHOAL_ERR_PROTOCOL; /* a server, not a bootstrap node */
    int rc = shoal_peer_info_from_header(h, &c->info, &state);
    c->state = state;
    return rc;
}

static int probe_send(probe *p, const probe_env *env)
{
    shoal_wire_header q;
    p->rid++;
    if (p->step == 0)
        shoal_wire_header_init(&q, SHOAL_OP_INFO, p->rid);
    else if (shoal_wire_ping_init(&q, p->rid, p->pad, p->pad))
        return SHOAL_ERR_INTERNAL;
    size_t len;
    if (shoal_wire_encode(&q, env->buf, SHOAL_WIRE_HEADER_MAX, &len))
        return SHOAL_ERR_INTERNAL;
    shoal_transport_part parts[2] = {{env->buf, len}, {env->zeros, p->pad}};
    p->sent = mono_ms();
    return shoal_transport_send(p->sock, parts, p->pad ? 2 : 1);
}

/* The link's bandwidth from a padded round trip of `ms` (pad bytes each
 * way) against the plain RTT. */
static double pad_bandwidth(uint32_t pad, double ms, double rtt_ms)
{
    double extra = ms - rtt_ms;
    if (extra < PAD_EXTRA_MIN_MS)
        extra = PAD_EXTRA_MIN_MS;
    return 2.0 * (double)pad / (extra / 1000.0);
}

/* A padded ping not back by `now`: the link is slower than the pad
 * could show in that time, an upper bound on its bandwidth. */
static void pad_give_up(probe *p, double now)
{
    double bound = pad_bandwidth(p->pad, now - p->sent, p->s->rtt_ms);
    if (now - p->sent - p->s->rtt_ms >= PAD_ENOUGH_MS &&
        (p->s->bandwidth <= 0 || bound < p->s->bandwidth)) {
        p->s->bandwidth = bound;
        p->s->bandwidth_bound = 1;
    }
    p->done = 1;
}

static void probe_fail(probe *p, const char *why)
{
    snprintf(p->s->why, sizeof p->s->why, "%s", why);
    p->s->answered = 0;
    p->done = 1;
}

/* Take one reply on p's socket. */
static void probe_read(probe *p, const probe_env *env)
{
    shoal_transport_msg m;
    shoal_transport_msg_init(&m);
    int rc = shoal_transport_recv(p->sock, &m, 2, PROBE_MAX_MSG, ZMQ_DONTWAIT);
    if (rc == SHOAL_ERR_TIMEOUT)
        return;
    if (rc) {
        probe_fail(p, "sent a malformed answer");
        return;
    }
    double now = mono_ms();
    shoal_wire_header h;
    rc = shoal_wire_decode(&h, zmq_msg_data(&m.frame[0]), zmq_msg_size(&m.frame[0]));
    size_t lens[1] = {m.nframes > 1 ? zmq_msg_size(&m.frame[1]) : 0};
    if (!rc)
        rc = shoal_wire_frames_check(&h, (size_t)m.nframes - 1, lens);
    shoal_transport_msg_close(&m);
    if (rc) {
        probe_fail(p, "sent a malformed answer");
        return;
    }
    if (h.request_id != p->rid || !(h.flags & SHOAL_WIRE_FLAG_REPLY))
        return; /* an answer to an earlier step */
    if (h.op == SHOAL_OP_ERROR) {
        char why[sizeof p->s->why];
        snprintf(why, sizeof why, "refused: %.100s",
                 h.message[0] ? h.message : shoal_strerror((int)h.error));
        probe_fail(p, why);
        return;
    }
    if (p->step == 0) {
        memset(&p->s->cand, 0, sizeof p->s->cand);
        snprintf(p->s->cand.address, sizeof p->s->cand.address, "%s", p->s->rec.addr);
        if (h.op != SHOAL_OP_INFO || info_to_cand(&h, &p->s->cand)) {
            probe_fail(p, "sent an INFO answer without a usable span");
            return;
        }
        p->s->answered = 1;
    } else if (h.op != SHOAL_OP_PING) {
        probe_fail(p, "answered a PING with something else");
        return;
    } else if (!p->pad) {
        double rtt = now - p->sent;
        if (p->s->rtt_ms <= 0 || rtt < p->s->rtt_ms)
            p->s->rtt_ms = rtt;
    } else {
        /* a padded ping: the pad must have come back whole */
        if (h.ntensors != 1 || h.tensors[0].nbytes != p->pad) {
            p->done = 1; /* a node that does not pad (older): no bandwidth */
            return;
        }
        /* each sample replaces the last: a larger pad is less noisy */
        double ms = now - p->sent;
        p->s->bandwidth = pad_bandwidth(p->pad, ms, p->s->rtt_ms);
        if (ms - p->s->rtt_ms >= PAD_ENOUGH_MS || p->pad >= env->pad_max) {
            p->done = 1;
            return;
        }
    }
    if (p->step >= env->pings) {
        /* the plain pings are done: time the link */
        if (env->pad_max < 4 || p->s->rtt_ms <= 0) {
            p->done = 1;
            return;
        }
        uint32_t next = p->pad ? p->pad * PAD_GROWTH : PAD_FIRST;
        p->pad = next < env->pad_max ? next : env->pad_max;
    }
    p->step++;
    if (probe_send(p, env))
        p->done = 1; /* INFO answered already: keep it, without an RTT */
}

#define PROBE_EVENTS (ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | \
                      ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

static void *probe_monitor(void *zctx, void *sock, size_t i, const void *tag)
{
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://shoal-probe-%p-%zu", tag, i);
    if (zmq_socket_monitor(sock, ep, PROBE_EVENTS))
        return NULL;
    void *mon = zmq_socket(zctx, ZMQ_PAIR);
    int zero = 0;
    if (!mon || zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero) || zmq_connect(mon, ep)) {
        if (mon)
            zmq_close(mon);
        zmq_socket_monitor(sock, NULL, 0);
        return NULL;
    }
    return mon;
}

/* An event on p's monitor: the connection was refused or the handshake
 * failed (a wrong key in the record's address). */
static void probe_event(probe *p)
{
    int failed = 0, handshake = 0;
    for (;;) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, p->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&f);
            break;
        }
        if (zmq_msg_size(&f) >= 2) {
            uint16_t ev;
            memcpy(&ev, zmq_msg_data(&f), 2);
            failed |= (ev & PROBE_EVENTS) != 0;
            handshake |= (ev & ZMQ_EVENT_CONNECT_RETRIED) == 0 && (ev & PROBE_EVENTS);
        }
        int more = zmq_msg_more(&f);
        zmq_msg_close(&f);
        while (more) {
            zmq_msg_init(&f);
            more = zmq_msg_recv(&f, p->mon, ZMQ_DONTWAIT) >= 0 && zmq_msg_more(&f);
            zmq_msg_close(&f);
        }
    }
    /* after INFO came, a later drop only costs the RTT: keep the answer */
    if (failed && !p->s->answered)
        probe_fail(p, handshake ? "failed the CURVE handshake (not the key in its record)"
                                : "refused the connection");
    else if (failed)
        p->done = 1;
}

static int probe_chunk(shoal_discover_server *servers, size_t n, int timeout_ms,
                       const probe_env *env, void *zctx)
{
    probe *pr = calloc(n, sizeof *pr);
    zmq_pollitem_t *items = calloc(2 * n, sizeof *items);
    size_t *of = calloc(2 * n, sizeof *of);
    if (!pr || !items || !of) {
        free(pr);
        free(items);
        free(of);
        return SHOAL_ERR_NOMEM;
    }
    uint64_t base;
    randombytes_buf(&base, sizeof base);
    for (size_t i = 0; i < n; i++) {
        probe *p = &pr[i];
        p->s = &servers[i];
        p->s->answered = 0;
        p->s->rtt_ms = 0;
        p->s->bandwidth = 0;
        p->s->bandwidth_bound = 0;
        p->s->why[0] = 0;
        p->rid = (base + (uint64_t)i * 1024) | 1;
        shoal_addr a;
        if (shoal_addr_parse(&a, p->s->rec.addr) ||
            shoal_transport_client_open(zctx, &a, PROBE_MAX_MSG, &p->sock)) {
            probe_fail(p, "cannot connect");
            continue;
        }
        p->mon = probe_monitor(zctx, p->sock, i, pr);
        if (probe_send(p, env))
            probe_fail(p, "cannot send");
    }
    double deadline = mono_ms() + timeout_ms;
    for (;;) {
        size_t k = 0;
        double now = mono_ms(), wake = deadline;
        for (size_t i = 0; i < n; i++) {
            if (!pr[i].done && pr[i].pad) { /* a slow link costs PAD_WAIT_MS at most */
                if (now - pr[i].sent >= PAD_WAIT_MS)
                    pad_give_up(&pr[i], now);
                else if (pr[i].sent + PAD_WAIT_MS < wake)
                    wake = pr[i].sent + PAD_WAIT_MS;
            }
            if (!pr[i].done) {
                items[k] = (zmq_pollitem_t){pr[i].sock, 0, ZMQ_POLLIN, 0};
                of[k++] = i;
                if (pr[i].mon) {
                    items[k] = (zmq_pollitem_t){pr[i].mon, 0, ZMQ_POLLIN, 0};
                    of[k++] = i;
                }
            }
        }
        double left = wake - now;
        if (!k || deadline - now <= 0)
            break;
        if (left < 0)
            left = 0;
        int r = zmq_poll(items, (int)k, (long)left + 1);
        if (r < 0 && errno != EINTR)
            break;
        for (size_t j = 0; r > 0 && j < k; j++) {
            probe *p = &pr[of[j]];
            if (!(items[j].revents & ZMQ_POLLIN) || p->done)
                continue;
            if (items[j].socket == p->mon)
                probe_event(p);
            else
                probe_read(p, env);
        }
    }
    double end = mono_ms();
    for (size_t i = 0; i < n; i++) {
        if (!pr[i].done && !pr[i].s->answered)
            probe_fail(&pr[i], "did not answer in time");
        if (!pr[i].done && pr[i].pad)
            pad_give_up(&pr[i], end);
        if (pr[i].mon) /* stop the monitor first, or its socket keeps the context */
            zmq_socket_monitor(pr[i].sock, NULL, 0);
        shoal_transport_close(&pr[i].sock);
        shoal_transport_close(&pr[i].mon);
    }
    free(pr);
    free(items);
    free(of);
    return 0;
}

int shoal_discover_probe(shoal_discover_server *servers, size_t n, int timeout_ms, int pings,
                         uint32_t pad_max)
{
    if (n == 0)
        return 0;
    if (pad_max > SHOAL_WIRE_PAD_MAX || pad_max % 4 != 0)
        return SHOAL_ERR_ARG;
    if (sodium_init() < 0)
        return SHOAL_ERR_INTERNAL;
    void *zctx = shoal_transport_ctx_new();
    uint8_t *buf = malloc(SHOAL_WIRE_HEADER_MAX);
    uint8_t *zeros = pad_max ? calloc(pad_max, 1) : NULL;
    probe_env env = {pings < 0 ? 0 : pings, pad_max, buf, zeros};
    int rc = SHOAL_ERR_NOMEM;
    if (zctx && buf && (zeros || !pad_max)) {
        rc = 0;
        for (size_t i = 0; i < n && !rc; i += PROBE_CHUNK)
            rc = probe_chunk(servers + i, n - i < PROBE_CHUNK ? n - i : PROBE_CHUNK,
                             timeout_ms, &env, zctx);
    }
    free(buf);
    free(zeros);
    if (zctx)
        zmq_ctx_term(zctx);
    return rc;
}

/* ---- reading the DHT ------------------------------------------------------ */

int shoal_discover_servers(const char *const *initial, size_t n_initial,
                           const uint8_t model_hash[32], uint32_t nblocks,
                           const shoal_discover_params *p, shoal_discover_server **out,
                           size_t *count, shoal_discover_stats *st, char *err, size_t errlen)
{
    *out = NULL;
    *count = 0;
    shoal_discover_stats stats;
    memset(&stats, 0, sizeof stats);
    void *zctx = shoal_transport_ctx_new();
    shoal_dht_net *net = NULL;
    shoal_blockmap *bm = NULL;
    shoal_discover_server *sv = NULL;
    int rc = SHOAL_ERR_IO;
    if (!zctx) {
        snprintf(err, errlen, "cannot make a ZeroMQ context");
        goto out;
    }
    shoal_dht_net_params np;
    if ((rc = shoal_dht_net_params_client(&np, zctx)) || (rc = shoal_dht_net_new(&np, &net))) {
        snprintf(err, errlen, "cannot start a DHT client: %s", shoal_strerror(rc));
        goto out;
    }
    double t0 = mono_ms();
    int64_t until = shoal_dht_net_now() + p->timeout_ms;
    rc = shoal_dht_net_join(net, initial, n_initial, until, &stats.contacts);
    stats.join_ms = mono_ms() - t0;
    if (rc || stats.contacts == 0) {
        snprintf(err, errlen, "cannot join the swarm: %s",
                 rc == SHOAL_ERR_ARG ? "no usable --initial-peers address"
                 : rc == SHOAL_ERR_TIMEOUT ? "the initial peers did not answer in time"
                                           : "no initial peer answered");
        rc = rc ? rc : SHOAL_ERR_NOTFOUND;
        goto out;
    }
    shoal_blockmap_params bp = shoal_blockmap_params_default();
    memcpy(bp.model_hash, model_hash, sizeof bp.model_hash);
    bp.nblocks = nblocks;
    t0 = mono_ms();
    if ((rc = shoal_blockmap_new(&bp, &bm)) || (rc = shoal_blockmap_run(bm, net, until))) {
        snprintf(err, errlen, "cannot read the records of the model's %u blocks: %s", nblocks,
                 shoal_strerror(rc));
        goto out;
    }
    stats.read_ms = mono_ms() - t0;
    shoal_blockmap_stats bs;
    shoal_blockmap_stats_get(bm, &bs);
    stats.records = bs.values;
    stats.rejected = bs.rejected;
    stats.max_hops = bs.max_hops;
    size_t nsrv = shoal_blockmap_count(bm), k = 0;
    sv = calloc(nsrv ? nsrv : 1, sizeof *sv);
    if (!sv) {
        rc = SHOAL_ERR_NOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nsrv; i++) {
        const shoal_record *r = shoal_blockmap_server(bm, i);
        if (r->state == SHOAL_RECORD_OFFLINE && !p->include_offline)
            continue;
        sv[k++].rec = *r;
    }
    /* probe those that say they serve; OFFLINE ones are reported as they are */
    size_t live = 0;
    for (size_t i = 0; i < k; i++)
        if (sv[i].rec.state != SHOAL_RECORD_OFFLINE) {
            shoal_discover_server tmp = sv[live];
            sv[live++] = sv[i];
            sv[i] = tmp;
        }
    t0 = mono_ms();
    if ((rc = shoal_discover_probe(sv, live, p->probe_timeout_ms, p->pings, p->pad_max))) {
        snprintf(err, errlen, "cannot probe the servers: %s", shoal_strerror(rc));
        goto out;
    }
    stats.probe_ms = mono_ms() - t0;
    for (size_t i = live; i < k; i++)
        snprintf(sv[i].why, sizeof sv[i].why, "offline");
    *out = sv;
    *count = k;
    sv = NULL;
    rc = 0;
out:
    if (st)
        *st = stats;
    free(sv);
    shoal_blockmap_destroy(&bm);
    shoal_dht_net_destroy(&net);
    if (zctx)
        zmq_ctx_term(zctx);
    return rc;
}

/* "HOST:PORT" of a shoal:// address, for notes. */
static void addr_hostport(const char *addr, char *out, size_t outlen)
{
    const char *h = strncmp(addr, "shoal://", 8) == 0 ? addr + 8 : addr;
    const char *slash = strrchr(h, '/');
    size_t n = slash ? (size_t)(slash - h) : strlen(h);
    snprintf(out, outlen, "%.*s", (int)(n < 200 ? n : 200), h);
}

/* Append one link's measures to a note: " 0.21 ms 0.25 MB/s". */
static void note_link(char *out, size_t outlen, const shoal_discover_server *s)
{
    size_t used = strlen(out);
    if (used + 1 >= outlen)
        return;
    if (s->bandwidth > 0)
        snprintf(out + used, outlen - used, " %.2f ms %s%.3g MB/s", s->rtt_ms,
                 s->bandwidth_bound ? "<" : "", s->bandwidth / 1e6);
    else
        snprintf(out + used, outlen - used, " %.2f ms", s->rtt_ms);
}

int shoal_discover(const char *const *initial, size_t n_initial, const shoal_route_want *want,
                   const shoal_discover_params *p, shoal_route_cands *out,
                   shoal_route_cost **costs, char *note, size_t notelen, char *err,
                   size_t errlen)
{
    *costs = NULL;
    if (note && notelen)
        note[0] = 0;
    if (out->n) {
        snprintf(err, errlen, "discovery needs an empty candidate list");
        return SHOAL_ERR_ARG;
    }
    shoal_discover_params q = *p;
    q.include_offline = 0;
    shoal_discover_server *sv = NULL;
    size_t n = 0;
    shoal_discover_stats st;
    int rc = shoal_discover_servers(initial, n_initial, want->model.hash, want->nblocks, &q, &sv,
                                    &n, &st, err, errlen);
    if (rc)
        return rc;
    size_t answered = 0;
    double lo = 0, hi = 0, bw_lo = 0, bw_hi = 0;
    shoal_route_cost *c = calloc(n ? n : 1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        free(sv);
        return SHOAL_ERR_NOMEM;
    }
    char missing[512] = "";
    size_t said = 0;
    for (size_t i = 0; i < n; i++) {
        if (!sv[i].answered) {
            size_t used = strlen(missing);
            if (said++ < 2 && used + 1 < sizeof missing)
                snprintf(missing + used, sizeof missing - used, "%s%s %s", used ? "; " : "",
                         sv[i].rec.addr, sv[i].why);
            continue;
        }
        if ((rc = shoal_route_cands_add(out, sv[i].cand.address, &sv[i].cand.info))) {
            snprintf(err, errlen, "too many servers");
            break;
        }
        out->v[out->n - 1].state = sv[i].cand.state;
        c[answered].rtt_ms = sv[i].rtt_ms;
        c[answered].throughput = sv[i].rec.throughput;
        c[answered].bandwidth = sv[i].bandwidth;
        if (sv[i].rtt_ms > 0) {
            lo = lo == 0 || sv[i].rtt_ms < lo ? sv[i].rtt_ms : lo;
            hi = sv[i].rtt_ms > hi ? sv[i].rtt_ms : hi;
        }
        if (sv[i].bandwidth > 0) {
            bw_lo = bw_lo == 0 || sv[i].bandwidth < bw_lo ? sv[i].bandwidth : bw_lo;
            bw_hi = sv[i].bandwidth > bw_hi ? sv[i].bandwidth : bw_hi;
        }
        answered++;
    }
    /* with few servers, each one's link: what routing weighed */
    char links[1024] = "";
    for (size_t i = 0; answered <= 8 && i < n; i++) {
        if (!sv[i].answered)
            continue;
        size_t used = strlen(links);
        char hp[208];
        addr_hostport(sv[i].rec.addr, hp, sizeof hp);
        if (used + 1 < sizeof links)
            snprintf(links + used, sizeof links - used, "%s%s", used ? ", " : "; links: ", hp);
        note_link(links, sizeof links, &sv[i]);
    }
    if (note && notelen)
        snprintf(note, notelen, "DHT: %zu server%s of this model, %zu answered (RTT %.2f-%.2f ms, "
                 "%.3g-%.3g MB/s; %u records read, %u rejected)%s%s%s%s",
                 n, n == 1 ? "" : "s", answered, lo, hi, bw_lo / 1e6, bw_hi / 1e6, st.records,
                 st.rejected, said ? "; not answering: " : "", missing, said > 2 ? "; ..." : "",
                 links);
    free(sv);
    if (rc) {
        free(c);
        return rc;
    }
    *costs = c;
    return 0;
}
