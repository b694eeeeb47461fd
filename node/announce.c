/*
 * The DHT in the node (see announce.h): an announcer that owns a full DHT
 * node, puts the node's records in rounds, answers DHT requests for the
 * I/O thread, and re-checks placement.
 *
 * A round is one record per block of a span, all with one sequence number
 * (strictly above every earlier round's, so that a later round always
 * replaces an earlier one in every store) and one expiry. Puts start as
 * the DHT has room for operations (it runs at most max_ops at once); a new
 * round (a state change) replaces a round still starting its puts.
 *
 * The announcer reads the node's live numbers (span, free cache tokens,
 * weight type, adapters, leaving) from the node's own fields, on the I/O
 * thread, under the node's mutex where node_impl.h says so.
 */
#include "node/announce.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "kernels/err.h"
#include "kernels/model.h"
#include "node/node_impl.h"
#include "node/train.h"
#include "swarm/blockmap.h"
#include "swarm/dht_net.h"
#include "swarm/log.h"
#include "swarm/placement.h"
#include "swarm/record.h"

#define MAX_TTL_MS (9 * 60 * 1000) /* under SHOAL_RECORD_MAX_AHEAD_MS */
#define MIN_TTL_MS 3000

struct shoal_announce {
    const shoal_identity *id;
    char address[SHOAL_ADDR_MAX];
    shoal_model_id model;
    uint32_t nblocks;
    shoal_announce_params p;
    char **peers;                 /* (p.n_initial) owned copies */
    void *zctx;
    shoal_dht_net *net;
    shoal_node *node;             /* attached node, or NULL */
    uint64_t rng;

    /* the current round */
    shoal_record tmpl;            /* every field but block and signature */
    uint32_t round_next, round_end;
    uint32_t puts_inflight, puts_ok, puts_failed;
    uint64_t last_seq;
    bool have_span;               /* tmpl holds a span announced before */
    int64_t next_round;
    bool offline_sent;
    int logged_state;             /* the state of the last round logged */
    uint32_t puts_reached;        /* puts stored while another node answered */
    uint32_t round_reached0;      /* puts_reached when the round started */
    atomic_bool online;           /* an ONLINE round was stored whole (any thread) */

    /* rebalancing */
    shoal_blockmap *bm;
    int64_t next_rebalance;
    bool confirming;              /* a move was seen once; the next check confirms */
    uint32_t confirm_from, confirm_to;
    pthread_mutex_t mu;           /* guards move_* */
    bool move;
    uint32_t move_begin, move_end;

    bool joined;                  /* the bootstrap lookup ended (either way) */
    int64_t join_deadline;        /* announce anyway after this */
    int64_t round_gap;            /* the next refresh interval (grows to refresh_ms) */
    bool dirty;                   /* the DHT must be pumped now */
    int64_t wake;
    uint8_t *scratch;             /* SHOAL_RECORD_MAX */
};

shoal_announce_params shoal_announce_params_default(void)
{
    shoal_announce_params p;
    memset(&p, 0, sizeof p);
    p.record_ttl_ms = 5 * 60 * 1000;
    p.refresh_ms = 60 * 1000;
    p.rebalance_ms = 0;
    p.rebalance_margin = 0.02;
    return p;
}

static uint64_t rnd(shoal_announce *a)
{
    uint64_t x = a->rng; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return a->rng = x ? x : 0x9e3779b97f4a7c15ull;
}

/* t scaled by a random factor in [lo, hi). */
static int64_t jitter(shoal_announce *a, int64_t t, double lo, double hi)
{
    double u = (double)(rnd(a) >> 11) / (double)(1ull << 53);
    return (int64_t)((double)t * (lo + (hi - lo) * u));
}

static void on_boot(void *ctx, int status, const shoal_dht_contact *nodes, size_t n,
                    const shoal_dht_lookup_info *info)
{
    (void)nodes;
    shoal_announce *a = ctx;
    if (status == 0)
        SHOAL_LOG_I("joined the DHT: %zu nodes near us, %u hops", n, info ? info->hops : 0);
    else if (status != SHOAL_ERR_CANCELLED)
        SHOAL_LOG_W("no initial peer answered (%s); retrying", shoal_strerror(status));
    a->joined = true;
    a->dirty = true;
}

int shoal_announce_new(const shoal_identity *id, const char *address,
                       const shoal_model_id *model, uint32_t nblocks,
                       const shoal_announce_params *p, shoal_announce **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    if (!id || !address || !model || !p || nblocks < 1 || p->record_ttl_ms < MIN_TTL_MS ||
        p->refresh_ms < 1 || p->rebalance_ms < 0 || !(p->rebalance_margin >= 0) ||
        (p->n_initial && !p->initial_peers)) {
        snprintf(err, errlen, "bad announcer parameters");
        return SHOAL_ERR_ARG;
    }
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium cannot start");
        return SHOAL_ERR_INTERNAL;
    }
    shoal_announce *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    pthread_mutex_init(&a->mu, NULL);
    a->id = id;
    snprintf(a->address, sizeof a->address, "%s", address);
    a->model = *model;
    a->nblocks = nblocks;
    a->p = *p;
    if (a->p.record_ttl_ms > MAX_TTL_MS)
        a->p.record_ttl_ms = MAX_TTL_MS;
    if (a->p.refresh_ms > a->p.record_ttl_ms / 3)
        a->p.refresh_ms = a->p.record_ttl_ms / 3;
    a->p.initial_peers = NULL;
    randombytes_buf(&a->rng, sizeof a->rng);
    a->logged_state = -1;
    int rc = SHOAL_ERR_NOMEM;
    a->scratch = malloc(SHOAL_RECORD_MAX);
    a->peers = calloc(p->n_initial ? p->n_initial : 1, sizeof *a->peers);
    if (!a->scratch || !a->peers)
        goto nomem;
    for (size_t i = 0; i < p->n_initial; i++)
        if (!(a->peers[i] = strdup(p->initial_peers[i])))
            goto nomem;
    rc = SHOAL_ERR_IO;
    if (!(a->zctx = shoal_transport_ctx_new())) {
        snprintf(err, errlen, "cannot make a ZeroMQ context");
        goto fail;
    }
    shoal_dht_net_params np = shoal_dht_net_params_default();
    np.zmq_ctx = a->zctx;
    memcpy(np.dht.self_id, shoal_identity_peer_id(id), sizeof np.dht.self_id);
    snprintf(np.dht.self_addr, sizeof np.dht.self_addr, "%s", address);
    randombytes_buf(np.dht.seed, sizeof np.dht.seed);
    np.dht.validate = shoal_record_dht_validate;
    np.max_links = NODE_ANNOUNCE_POLL_MAX / SHOAL_DHT_NET_POLL_PER_LINK;
    if ((rc = shoal_dht_net_new(&np, &a->net))) {
        snprintf(err, errlen, "cannot start the DHT: %s", shoal_strerror(rc));
        goto fail;
    }
    int64_t now = shoal_dht_net_now();
    if (p->n_initial) {
        rc = shoal_dht_bootstrap(shoal_dht_net_dht(a->net), (const char *const *)a->peers,
                                 p->n_initial, now, on_boot, a);
        if (rc) {
            snprintf(err, errlen, "--initial-peers: no usable address (%s)",
                     shoal_strerror(rc));
            goto fail;
        }
    }
    if (a->p.rebalance_ms)
        a->next_rebalance = now + jitter(a, a->p.rebalance_ms, 0.75, 1.25);
    a->joined = p->n_initial == 0;
    a->join_deadline = now + 5000;
    a->round_gap = 5000 < a->p.refresh_ms ? 5000 : a->p.refresh_ms;
    a->dirty = true;
    *out = a;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    shoal_announce_destroy(&a);
    return rc;
}

void shoal_announce_destroy(shoal_announce **pp)
{
    if (!pp || !*pp)
        return;
    shoal_announce *a = *pp;
    shoal_blockmap_destroy(&a->bm);   /* freed by its last callback if needed */
    shoal_dht_net_destroy(&a->net);   /* callbacks (into a) run here */
    if (a->zctx)
        zmq_ctx_term(a->zctx);
    for (size_t i = 0; a->peers && i < a->p.n_initial; i++)
        free(a->peers[i]);
    free(a->peers);
    free(a->scratch);
    pthread_mutex_destroy(&a->mu);
    free(a);
    *pp = NULL;
}

/* ---- rounds ----------------------------------------------------------------- */

static void on_put(void *ctx, int status, size_t stored, const shoal_dht_lookup_info *info)
{
    shoal_announce *a = ctx;
    if (a->puts_inflight)
        a->puts_inflight--;
    if (status == 0 && stored)
        a->puts_ok++;
    if (status == 0 && stored && info && info->replies) /* not only our own copy */
        a->puts_reached++;
    else
        a->puts_failed++;
}

/* Start a round for [begin, end) in state: replaces the round in hand. */
static void round_start(shoal_announce *a, uint32_t begin, uint32_t end, uint32_t state,
                        uint64_t free_tokens, uint32_t weight_type, const char *adapters,
                        int64_t now)
{
    shoal_record *r = &a->tmpl;
    memset(r, 0, sizeof *r);
    snprintf(r->addr, sizeof r->addr, "%s", a->address);
    memcpy(r->model, a->model.name, sizeof r->model);
    r->model[sizeof r->model - 1] = 0;
    memcpy(r->model_hash, a->model.hash, sizeof r->model_hash);
    r->nblocks = a->nblocks;
    r->span_start = begin;
    r->span_end = end;
    r->state = state;
    r->throughput = a->p.throughput > 0 && isfinite(a->p.throughput) ? a->p.throughput : 0;
    r->free_tokens = free_tokens;
    r->weight_type = weight_type;
    snprintf(r->software, sizeof r->software, "shoal %s", SHOAL_VERSION);
    /* adapters: "a,b,c" -> at most SHOAL_RECORD_MAX_ADAPTERS names */
    for (const char *s = adapters; s && *s && r->nadapters < SHOAL_RECORD_MAX_ADAPTERS;) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len && len < SHOAL_RECORD_ADAPTER_MAX) {
            memcpy(r->adapters[r->nadapters], s, len);
            r->adapters[r->nadapters++][len] = 0;
        }
        s = e ? e + 1 : s + len;
    }
    uint64_t seq = (uint64_t)now;
    if (seq <= a->last_seq)
        seq = a->last_seq + 1;
    a->last_seq = seq;
    r->seq = seq;
    r->expires_ms = now + a->p.record_ttl_ms;
    a->round_next = begin;
    a->round_end = end;
    a->have_span = true;
    a->round_reached0 = a->puts_reached;
    if (state != SHOAL_RECORD_ONLINE)
        atomic_store(&a->online, false);
    if ((int)state != a->logged_state) {
        SHOAL_LOG_I("announcing blocks %u:%u as %s", begin, end,
                    shoal_record_state_name(state));
        a->logged_state = (int)state;
    }
}

/* Put as many records of the round as the DHT takes now. */
static void round_step(shoal_announce *a, int64_t now)
{
    shoal_dht *d = shoal_dht_net_dht(a->net);
    while (a->round_next < a->round_end) {
        shoal_record r = a->tmpl;
        r.block = a->round_next;
        size_t len = 0;
        uint8_t key[32];
        int rc = shoal_record_sign(&r, a->id, a->scratch, SHOAL_RECORD_MAX, &len);
        if (rc) {
            SHOAL_LOG_E("cannot sign the record of block %u: %s", r.block, shoal_strerror(rc));
            a->round_next++;
            continue;
        }
        shoal_record_block_key(a->model.hash, r.block, key);
        rc = shoal_dht_put(d, key, a->scratch, len, now, on_put, a);
        if (rc == SHOAL_ERR_BUSY)
            return; /* the DHT runs max_ops operations: later */
        if (rc)
            SHOAL_LOG_W("cannot put the record of block %u: %s", r.block, shoal_strerror(rc));
        else
            a->puts_inflight++;
        a->round_next++;
        a->dirty = true;
    }
}

static bool round_done(const shoal_announce *a)
{
    return a->round_next >= a->round_end && a->puts_inflight == 0;
}

/* ---- driving the DHT without a node ----------------------------------------- */

static bool alone_done(void *ctx)
{
    shoal_announce *a = ctx;
    round_step(a, shoal_dht_net_now());
    return round_done(a);
}

int shoal_announce_publish(shoal_announce *a, uint32_t begin, uint32_t end, uint32_t state,
                           uint64_t free_tokens, uint32_t weight_type, int64_t wait_ms)
{
    if (begin >= end || end > a->nblocks)
        return 0;
    int64_t now = shoal_dht_net_now();
    uint32_t ok0 = a->puts_ok;
    round_start(a, begin, end, state, free_tokens, weight_type, NULL, now);
    shoal_dht_net_run(a->net, now + wait_ms, alone_done, a);
    return (int)(a->puts_ok - ok0);
}

void shoal_announce_leave(shoal_announce *a, int64_t wait_ms)
{
    a->node = NULL;
    if (!a->have_span)
        return;
    if (a->tmpl.state == SHOAL_RECORD_OFFLINE) { /* the node said so: finish its puts */
        shoal_dht_net_run(a->net, shoal_dht_net_now() + wait_ms, alone_done, a);
        return;
    }
    int n = shoal_announce_publish(a, a->tmpl.span_start, a->tmpl.span_end,
                                   SHOAL_RECORD_OFFLINE, 0, a->tmpl.weight_type, wait_ms);
    SHOAL_LOG_I("announced OFFLINE for blocks %u:%u (%d of %u records stored)",
                a->tmpl.span_start, a->tmpl.span_end, n, a->tmpl.span_end - a->tmpl.span_start);
}

bool shoal_announce_online(shoal_announce *a)
{
    return atomic_load(&a->online);
}

bool shoal_announce_move_wanted(shoal_announce *a, uint32_t *begin, uint32_t *end)
{
    pthread_mutex_lock(&a->mu);
    bool m = a->move;
    if (m) {
        *begin = a->move_begin;
        *end = a->move_end;
        a->move = false;
    }
    pthread_mutex_unlock(&a->mu);
    return m;
}

/* ---- on the node's I/O thread ------------------------------------------------ */

void shoal_node_set_announce(shoal_node *n, shoal_announce *a)
{
    n->announce = a;
    if (a) {
        a->node = n;
        a->next_round = 0; /* the first round at once */
        a->offline_sent = false;
        a->dirty = true;
    }
}

/* The placement re-check, once its records are in. A move is made only
 * when two checks in a row (the second a random quarter to three quarters
 * of a period after the first) want the same one: a view read while
 * records are still spreading (a server that just started or moved) must
 * not move anyone, and servers that saw the same gap must not all rush
 * into it. */
static void rebalance_decide(shoal_announce *a, shoal_node *n, int64_t now)
{
    size_t count = shoal_blockmap_count(a->bm);
    shoal_placement_span *spans = calloc(count ? count : 1, sizeof *spans);
    double *others = calloc(a->nblocks, sizeof *others);
    double *scratch = calloc(2 * (size_t)a->nblocks, sizeof *scratch);
    if (!spans || !others || !scratch)
        goto out;
    size_t ns = 0;
    const uint8_t *self = shoal_identity_peer_id(a->id);
    for (size_t i = 0; i < count; i++) {
        const shoal_record *r = shoal_blockmap_server(a->bm, i);
        SHOAL_LOG_D("rebalance: seen %u:%u %s seq %llu%s", r->span_start, r->span_end,
                    shoal_record_state_name(r->state), (unsigned long long)r->seq,
                    memcmp(r->peer_id, self, 32) ? "" : " (us)");
        if (!memcmp(r->peer_id, self, 32) || r->state == SHOAL_RECORD_OFFLINE)
            continue;
        spans[ns++] = (shoal_placement_span){r->span_start, r->span_end, r->throughput};
    }
    shoal_placement_block_tput(spans, ns, a->nblocks, others);
    uint32_t begin = (uint32_t)n->p.block_begin, len = (uint32_t)(n->p.block_end - n->p.block_begin);
    uint32_t to;
    bool want = shoal_placement_should_move(others, a->nblocks, begin, len, a->p.throughput,
                                            a->p.rebalance_margin, scratch, &to);
    if (want && !(a->confirming && a->confirm_from == begin && a->confirm_to == to)) {
        SHOAL_LOG_D("rebalance: blocks %u:%u look better than %u:%u; checking again", to,
                    to + len, begin, begin + len);
        a->confirming = true;
        a->confirm_from = begin;
        a->confirm_to = to;
        /* at a random moment, so that servers that saw the same gap at once
         * do not all move: the later ones see the first one's records */
        a->next_rebalance = now + jitter(a, a->p.rebalance_ms, 0.25, 0.75);
        goto out;
    }
    a->confirming = false;
    if (want) {
        double *here = scratch;
        memcpy(here, others, a->nblocks * sizeof *here);
        for (uint32_t b = begin; b < begin + len; b++)
            here[b] += a->p.throughput;
        SHOAL_LOG_I("rebalance: moving from blocks %u:%u to %u:%u (%zu other servers; "
                    "bottleneck now %.1f tokens/s)",
                    begin, begin + len, to, to + len, ns,
                    shoal_placement_bottleneck(here, a->nblocks));
        pthread_mutex_lock(&a->mu);
        a->move = true;
        a->move_begin = to;
        a->move_end = to + len;
        pthread_mutex_unlock(&a->mu);
    } else {
        SHOAL_LOG_D("rebalance: staying at %u:%u (%zu other servers)", begin, begin + len, ns);
    }
out:
    free(spans);
    free(others);
    free(scratch);
}

static void announcer_step(shoal_announce *a, shoal_node *n, int64_t now)
{
    bool leaving = atomic_load(&n->leaving) != 0;
    if (leaving && !a->offline_sent) {
        a->offline_sent = true;
        round_start(a, (uint32_t)n->p.block_begin, (uint32_t)n->p.block_end,
                    SHOAL_RECORD_OFFLINE, 0, (uint32_t)n->weight_type, NULL, now);
    } else if (!leaving && now >= a->next_round && (a->joined || now >= a->join_deadline)) {
        char adapters[SHOAL_WIRE_ADAPTER_MAX];
        node_adapter_list(n, adapters, sizeof adapters);
        pthread_mutex_lock(&n->mu);
        uint64_t free_tokens = n->p.cache_tokens - n->reserved;
        pthread_mutex_unlock(&n->mu);
        round_start(a, (uint32_t)n->p.block_begin, (uint32_t)n->p.block_end,
                    SHOAL_RECORD_ONLINE, free_tokens, (uint32_t)n->weight_type, adapters, now);
        /* early rounds come sooner: nodes that joined after us, closer to a
         * block's key than those we stored at, get the records quickly */
        a->next_round = now + jitter(a, a->round_gap, 0.9, 1.1);
        a->round_gap = 2 * a->round_gap < a->p.refresh_ms ? 2 * a->round_gap : a->p.refresh_ms;
    }
    round_step(a, now);
    uint32_t peers = 0, records = 0;
    if (a->tmpl.state == SHOAL_RECORD_ONLINE && round_done(a) &&
        a->puts_reached - a->round_reached0 >= a->tmpl.span_end - a->tmpl.span_start &&
        (shoal_announce_dht_counts(a, &peers, &records), peers > 0))
        atomic_store(&a->online, true); /* every block's record is in the DHT, and
                                           the DHT is more than this node */

    if (a->bm) {
        shoal_blockmap_step(a->bm, shoal_dht_net_dht(a->net), now);
        if (shoal_blockmap_done(a->bm)) {
            if (!leaving)
                rebalance_decide(a, n, now);
            shoal_blockmap_destroy(&a->bm);
        }
        a->dirty = true;
    } else if (a->p.rebalance_ms && !leaving && now >= a->next_rebalance) {
        a->next_rebalance = now + jitter(a, a->p.rebalance_ms, 0.75, 1.25);
        pthread_mutex_lock(&a->mu);
        bool pending = a->move;
        pthread_mutex_unlock(&a->mu);
        shoal_blockmap_params bp = shoal_blockmap_params_default();
        memcpy(bp.model_hash, a->model.hash, sizeof bp.model_hash);
        bp.nblocks = a->nblocks;
        bp.parallel = 4;
        if (!pending && shoal_blockmap_new(&bp, &a->bm) == 0) {
            shoal_blockmap_step(a->bm, shoal_dht_net_dht(a->net), now);
            a->dirty = true;
        }
    }
}

size_t node_announce_poll_items(shoal_node *n, zmq_pollitem_t *items, size_t max)
{
    return n->announce ? shoal_dht_net_poll_items(n->announce->net, items, max) : 0;
}

long node_announce_timeout(shoal_node *n, long ms)
{
    shoal_announce *a = n->announce;
    if (!a)
        return ms;
    if (a->dirty)
        return 0;
    int64_t t = a->wake - shoal_dht_net_now();
    if (t < 0)
        t = 0;
    return t < ms ? (long)t : ms;
}

void node_announce_service(shoal_node *n, const zmq_pollitem_t *items, size_t count)
{
    shoal_announce *a = n->announce;
    if (!a)
        return;
    int64_t now = shoal_dht_net_now();
    if (count && shoal_dht_net_on_poll(a->net, items, count, now))
        a->dirty = true;
    bool leaving = atomic_load(&n->leaving) != 0;
    if (!a->dirty && now < a->wake && !(leaving && !a->offline_sent))
        return;
    a->dirty = false;
    announcer_step(a, n, now);
    int64_t wake = shoal_dht_net_pump(a->net, now);
    if (!a->bm && a->next_round < wake && !leaving)
        wake = a->next_round > now ? a->next_round : now + 100; /* waiting to join: poll */
    if (!a->bm && a->p.rebalance_ms && a->next_rebalance < wake)
        wake = a->next_rebalance;
    if (a->round_next < a->round_end || a->bm)
        wake = now + 50 < wake ? now + 50 : wake; /* puts or gets wait for room */
    a->wake = wake;
}

int node_announce_request(shoal_node *n, zmq_msg_t *routing, const shoal_wire_header *req)
{
    shoal_announce *a = n->announce;
    if (!a)
        return SHOAL_ERR_UNSUPPORTED;
    shoal_dht_net_answer(a->net, n->router, zmq_msg_data(routing), zmq_msg_size(routing), req,
                         shoal_dht_net_now());
    a->dirty = true;
    return 0;
}

/* ---- placement before the node exists ------------------------------------------ */

static double elapsed_s(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

double shoal_announce_measure(const shoal_gguf *g, int block, int threads)
{
    enum { PROMPT = 8, STEPS = 16, CTX = PROMPT + STEPS };
    char err[256];
    shoal_model *m = NULL;
    shoal_fwd *f = NULL;
    shoal_kv *kv = NULL;
    float *x = NULL;
    double tput = 0;
    if (block < 0 || shoal_model_open(g, block, block + 1, 0, &m, err, sizeof err))
        return 0;
    int dim = shoal_model_hparams(m)->dim;
    f = shoal_fwd_new(m, PROMPT, CTX, threads < 1 ? 1 : threads);
    kv = shoal_kv_new(m, CTX);
    x = malloc((size_t)PROMPT * dim * sizeof *x);
    if (!f || !kv || !x)
        goto out;
    /* steps of one token after a short prompt, repeated until the clock has
     * seen enough to trust; the first repetition only warms caches up */
    long tokens = 0;
    double t = 0;
    for (int rep = 0; rep < 10000 && (rep < 2 || t < 0.05); rep++) {
        for (int i = 0; i < PROMPT * dim; i++)
            x[i] = 0.01f * (float)((i * 7919) % 201 - 100);
        if (shoal_fwd_blocks(f, kv, 0, PROMPT, x))
            goto out;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int s = 0; s < STEPS; s++)
            if (shoal_fwd_blocks(f, kv, PROMPT + s, 1, x))
                goto out;
        if (rep) {
            t += elapsed_s(&t0);
            tokens += STEPS;
        }
    }
    if (t > 0 && tokens)
        tput = (double)tokens / t;
out:
    free(x);
    shoal_kv_destroy(&kv);
    shoal_fwd_destroy(&f);
    shoal_model_destroy(&m);
    return tput;
}

int shoal_announce_blocks_for_budget(const shoal_gguf *g, uint64_t budget_bytes,
                                     uint64_t cache_tokens)
{
    char err[256];
    shoal_hparams hp;
    shoal_model *m = NULL;
    if (shoal_hparams_read(g, &hp, err, sizeof err) || hp.n_layer < 1)
        return 1;
    if (shoal_model_open(g, 0, 1, 0, &m, err, sizeof err))
        return 1;
    uint64_t per = shoal_model_weight_bytes(m) + shoal_kv_bytes_per_token(m) * cache_tokens;
    shoal_model_destroy(&m);
    uint64_t k = per ? budget_bytes / per : (uint64_t)hp.n_layer;
    if (k < 1)
        k = 1;
    return k > (uint64_t)hp.n_layer ? hp.n_layer : (int)k;
}

int shoal_announce_choose(const char *const *initial, size_t n_initial,
                          const shoal_model_id *model, uint32_t nblocks, uint32_t *len,
                          double by_speed, int64_t timeout_ms, uint32_t *start, size_t *servers,
                          char *err, size_t errlen)
{
    *start = 0;
    if (servers)
        *servers = 0;
    if (*len < 1 || *len > nblocks) {
        snprintf(err, errlen, "a span of %u blocks does not fit a model of %u", *len, nblocks);
        return SHOAL_ERR_ARG;
    }
    void *zctx = shoal_transport_ctx_new();
    shoal_dht_net *net = NULL;
    shoal_blockmap *bm = NULL;
    shoal_placement_span *spans = NULL;
    double *tput = NULL;
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
    int64_t until = shoal_dht_net_now() + timeout_ms;
    size_t contacts = 0;
    rc = shoal_dht_net_join(net, initial, n_initial, until, &contacts);
    if (rc || contacts == 0) {
        snprintf(err, errlen, "cannot join the swarm: %s",
                 rc == SHOAL_ERR_ARG ? "no usable --initial-peers address"
                                     : "no initial peer answered");
        rc = rc ? rc : SHOAL_ERR_NOTFOUND;
        goto out;
    }
    shoal_blockmap_params bp = shoal_blockmap_params_default();
    memcpy(bp.model_hash, model->hash, sizeof bp.model_hash);
    bp.nblocks = nblocks;
    if ((rc = shoal_blockmap_new(&bp, &bm)) || (rc = shoal_blockmap_run(bm, net, until))) {
        snprintf(err, errlen, "cannot read the block records: %s", shoal_strerror(rc));
        goto out;
    }
    size_t count = shoal_blockmap_count(bm), ns = 0;
    spans = calloc(count ? count : 1, sizeof *spans);
    tput = calloc(nblocks, sizeof *tput);
    if (!spans || !tput) {
        rc = SHOAL_ERR_NOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        const shoal_record *r = shoal_blockmap_server(bm, i);
        if (r->state != SHOAL_RECORD_OFFLINE)
            spans[ns++] = (shoal_placement_span){r->span_start, r->span_end, r->throughput};
    }
    if (by_speed > 0)
        *len = shoal_placement_length(spans, ns, by_speed, *len);
    shoal_placement_block_tput(spans, ns, nblocks, tput);
    *start = shoal_placement_choose(tput, nblocks, *len);
    if (servers)
        *servers = ns;
    rc = 0;
out:
    free(spans);
    free(tput);
    shoal_blockmap_destroy(&bm);
    shoal_dht_net_destroy(&net);
    if (zctx)
        zmq_ctx_term(zctx);
    return rc;
}

void shoal_announce_dht_counts(const shoal_announce *a, uint32_t *peers, uint32_t *records)
{
    shoal_dht_stats st;
    shoal_dht_stats_get(shoal_dht_net_dht(a->net), &st);
    *peers = st.contacts;
    *records = st.records;
}
