/*
 * The swarm simulator (issue 4, part 6): the DHT core and the placement
 * rule are pure functions of messages and time, so thousands of them run
 * in one process here with a fake clock.
 *
 *   bench_sim [--dht] [--placement] [--nodes N] [--churn F] [--seed S]
 *             [--lookups L] [--servers M] [--margin X]
 *
 * --dht: N nodes (10 000) join one after another (each through node 0 and
 * two earlier nodes) over a simulated network: every message goes through
 * the real wire encoder and decoder, 10..100 ms latency, 1 % loss. Some
 * values are put. Then a fraction F (0.20) of the nodes vanish at once
 * (they stop answering; nobody is told), and L (1000) FIND_NODE lookups of
 * random targets start from random live nodes, then L gets of the values
 * put before. A lookup succeeds when the first node it returns is the true
 * closest live node (brute force; never the node that asks); a get
 * succeeds when it returns the value. Printed: success rates, hops median
 * and p95, requests and messages (requests + replies) per lookup. The same
 * is measured again after two simulated minutes (timeouts and refreshes
 * have cleaned the tables).
 *
 * --placement: M (1000) servers, throughputs log-uniform over 10x (10..100
 * tokens/s), spans of 4..16 blocks, join an 80-block model one by one,
 * each taking the span Petals' rule gives over the servers before it
 * (shoal_placement_choose, as `shoal serve` without --blocks does), then
 * rebalancing rounds: each server in random order runs
 * shoal_placement_should_move over the others (as node/announce.c does,
 * margin X, 0.02 by default as in `shoal serve`) and moves at once when it says so; rounds go
 * on until nobody moves (at most 50). Printed: the bottleneck (least
 * block throughput) after the joins, after rebalancing, and an upper bound
 * on the optimum: sum_i t_i * len_i / 80 (every server adds t_i to len_i
 * blocks, so the average block, and so the least, holds no more), and the
 * ratios to it. Five independent runs (seeds S..S+4). Then the same with
 * a fraction F (--churn) of the servers leaving after the joins, before
 * the rebalancing rounds.
 *
 * A benchmark: it prints numbers and exits 0; the targets are checked by
 * whoever reads them (docs/BENCHMARKS.md).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "kernels/err.h"
#include "proto/identity.h"
#include "proto/wire.h"
#include "swarm/dht.h"
#include "swarm/placement.h"

#define T0 1700000000000LL /* the fake clock starts here (Unix ms) */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rnd64(rng *r)
{
    uint64_t x = r->s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return r->s = x;
}

static double rnd_unit(rng *r) { return (double)(rnd64(r) >> 11) / 9007199254740992.0; }

static void rnd_bytes(rng *r, uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(rnd64(r) >> 24);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------ */
/* DHT                                                                  */

/* Values: 'B', owner byte, seq (u64 LE), expiry (i64 LE), payload. */
static int bench_validate(void *ctx, const uint8_t key[32], const uint8_t *v, size_t len,
                          int64_t now, shoal_dht_meta *m)
{
    (void)ctx;
    (void)key;
    if (len < 18 || v[0] != 'B')
        return SHOAL_ERR_FORMAT;
    memset(m->owner, v[1], 32);
    memcpy(&m->seq, v + 2, 8);
    memcpy(&m->expires_ms, v + 10, 8);
    return m->expires_ms > now ? SHOAL_OK : SHOAL_ERR_RANGE;
}

enum { EV_TICK, EV_REQ, EV_REP };

typedef struct ev {
    int64_t t;
    uint64_t seq;
    int kind, to, from;
    uint8_t *frame;
    uint32_t len;
} ev;

typedef struct simnode {
    shoal_dht *d;
    char addr[SHOAL_ADDR_MAX];
    uint8_t id[32];
    int alive;
    int boot_calls, boot_status;
    int64_t next_tick;
} simnode;

typedef struct sim {
    rng r;
    simnode *n;
    int N;
    ev *heap;
    size_t nh, caph;
    uint64_t seq;
    int64_t now;
    int *map; /* address hash table: node index or -1 */
    size_t mapcap;
    uint32_t loss_ppm;
    uint64_t msgs, lost, wire_errors, oom;
    uint8_t frame[SHOAL_WIRE_HEADER_MAX];
} sim;

static int ev_less(const ev *a, const ev *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void push(sim *s, int64_t t, int kind, int to, int from, const uint8_t *frame,
                 size_t len)
{
    if (s->nh == s->caph) {
        size_t cap = s->caph ? 2 * s->caph : 4096;
        ev *h = realloc(s->heap, cap * sizeof *h);
        if (!h) {
            s->oom++;
            return;
        }
        s->heap = h;
        s->caph = cap;
    }
    ev e = {t, s->seq++, kind, to, from, NULL, (uint32_t)len};
    if (len) {
        e.frame = malloc(len);
        if (!e.frame) {
            s->oom++;
            return;
        }
        memcpy(e.frame, frame, len);
    }
    size_t i = s->nh++;
    while (i > 0 && ev_less(&e, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = e;
}

static ev pop(sim *s)
{
    ev top = s->heap[0], last = s->heap[--s->nh];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nh)
            break;
        if (c + 1 < s->nh && ev_less(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!ev_less(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->nh)
        s->heap[i] = last;
    return top;
}

static uint64_t fnv(const char *str)
{
    uint64_t h = 1469598103934665603ull;
    for (; *str; str++)
        h = (h ^ (uint8_t)*str) * 1099511628211ull;
    return h;
}

static int map_find(const sim *s, const char *addr)
{
    for (size_t i = fnv(addr) % s->mapcap;; i = (i + 1) % s->mapcap) {
        int j = s->map[i];
        if (j < 0)
            return -1;
        if (strcmp(s->n[j].addr, addr) == 0)
            return j;
    }
}

static int64_t latency(sim *s) { return 10 + (int64_t)(rnd64(&s->r) % 91); }

static int lost(sim *s)
{
    if (rnd64(&s->r) % 1000000 < s->loss_ppm) {
        s->lost++;
        return 1;
    }
    return 0;
}

static void sim_send(sim *s, int i, const shoal_dht_msg *m)
{
    size_t len;
    if (shoal_wire_encode(&m->header, s->frame, sizeof s->frame, &len) != SHOAL_OK) {
        s->wire_errors++;
        return;
    }
    s->msgs++;
    int to = map_find(s, m->to);
    if (to >= 0 && !lost(s))
        push(s, s->now + latency(s), EV_REQ, to, i, s->frame, len);
}

/* Drain node i, tick it, schedule its next tick. */
static void pump(sim *s, int i)
{
    simnode *n = &s->n[i];
    shoal_dht_msg m;
    int64_t w;
    for (;;) {
        while (shoal_dht_next_outgoing(n->d, &m))
            sim_send(s, i, &m);
        w = shoal_dht_tick(n->d, s->now);
        if (!shoal_dht_next_outgoing(n->d, &m))
            break;
        sim_send(s, i, &m);
    }
    if (w <= s->now)
        w = s->now + 1;
    if (w < n->next_tick) {
        n->next_tick = w;
        push(s, w, EV_TICK, i, -1, NULL, 0);
    }
}

static void deliver(sim *s, ev *e)
{
    simnode *n = &s->n[e->to];
    if (e->kind == EV_TICK) {
        if (e->t != n->next_tick)
            return; /* superseded */
        n->next_tick = INT64_MAX;
        if (n->alive)
            pump(s, e->to);
        return;
    }
    if (!n->alive)
        return; /* vanished: no answer, no error */
    shoal_wire_header h;
    if (shoal_wire_decode(&h, e->frame, e->len) != SHOAL_OK) {
        s->wire_errors++;
        return;
    }
    if (e->kind == EV_REQ) {
        shoal_wire_header rep;
        shoal_dht_receive_request(n->d, &h, s->now, &rep);
        size_t len;
        if (shoal_wire_encode(&rep, s->frame, sizeof s->frame, &len) != SHOAL_OK) {
            s->wire_errors++;
            return;
        }
        s->msgs++;
        if (!lost(s))
            push(s, s->now + latency(s), EV_REP, e->from, e->to, s->frame, len);
    } else {
        shoal_dht_receive_reply(n->d, s->n[e->from].addr, &h, s->now);
    }
    pump(s, e->to);
}

static void step(sim *s)
{
    ev e = pop(s);
    s->now = e.t;
    deliver(s, &e);
    free(e.frame);
}

static void run_until(sim *s, int64_t t)
{
    while (s->nh && s->heap[0].t <= t)
        step(s);
    if (s->now < t)
        s->now = t;
}

/* Run until *count reaches want (or limit_ms pass). */
static void run_for(sim *s, const int *count, int want, int64_t limit_ms)
{
    int64_t end = s->now + limit_ms;
    while (*count < want && s->nh && s->heap[0].t <= end)
        step(s);
}

static int sim_init(sim *s, int N, uint64_t seed)
{
    s->r.s = 88172645463325252ull ^ (seed * 0x9e3779b97f4a7c15ull);
    if (!s->r.s)
        s->r.s = 1;
    s->N = N;
    s->n = calloc((size_t)N, sizeof *s->n);
    s->mapcap = (size_t)N * 4;
    s->map = malloc(s->mapcap * sizeof *s->map);
    if (!s->n || !s->map)
        return SHOAL_ERR_NOMEM;
    for (size_t i = 0; i < s->mapcap; i++)
        s->map[i] = -1;
    s->now = T0;
    s->loss_ppm = 10000; /* 1 % */
    for (int i = 0; i < N; i++) {
        simnode *n = &s->n[i];
        uint8_t sd[32] = {0}, pk[32], sk[64];
        memcpy(sd, &i, sizeof i);
        memcpy(sd + 8, &seed, sizeof seed);
        sd[31] = 0x5e;
        crypto_sign_seed_keypair(pk, sk, sd);
        char hex[65];
        shoal_identity_hex(pk, hex);
        uint32_t host = (uint32_t)i + 1;
        snprintf(n->addr, sizeof n->addr, "shoal://10.%u.%u.%u:4000/%s", (host >> 16) & 255,
                 (host >> 8) & 255, host & 255, hex);
        shoal_identity_peer_id_of(pk, n->id);
        shoal_dht_params p = shoal_dht_params_default();
        memcpy(p.self_id, n->id, 32);
        memcpy(p.self_addr, n->addr, strlen(n->addr) + 1);
        memcpy(p.seed, sd, 32);
        p.seed[30] = 0x11;
        p.validate = bench_validate;
        p.request_timeout_ms = 1000;
        int rc = shoal_dht_new(&p, &n->d);
        if (rc)
            return rc;
        n->alive = 1;
        n->next_tick = INT64_MAX;
        size_t h = fnv(n->addr) % s->mapcap;
        while (s->map[h] >= 0)
            h = (h + 1) % s->mapcap;
        s->map[h] = i;
    }
    return 0;
}

static void sim_free(sim *s)
{
    for (int i = 0; s->n && i < s->N; i++)
        shoal_dht_destroy(&s->n[i].d);
    while (s->nh)
        free(pop(s).frame);
    free(s->heap);
    free(s->map);
    free(s->n);
}

/* The live node closest to target but `except`, by brute force. */
static int true_closest(const sim *s, const uint8_t *target, int except)
{
    int best = -1;
    for (int i = 0; i < s->N; i++)
        if (s->n[i].alive && i != except &&
            (best < 0 || shoal_dht_cmp_distance(target, s->n[i].id, s->n[best].id) < 0))
            best = i;
    return best;
}

static int random_live(sim *s)
{
    int i;
    do
        i = (int)(rnd64(&s->r) % (uint64_t)s->N);
    while (!s->n[i].alive);
    return i;
}

static void boot_cb(void *ctx, int status, const shoal_dht_contact *nodes, size_t n,
                    const shoal_dht_lookup_info *info)
{
    (void)nodes;
    (void)n;
    (void)info;
    simnode *sn = ctx;
    sn->boot_calls++;
    sn->boot_status = status;
}

typedef struct lookup {
    int done, status, from;
    uint8_t target[32];
    uint8_t first[32];
    size_t n;
    shoal_dht_lookup_info info;
    int *counter;
} lookup;

static void lookup_cb(void *ctx, int status, const shoal_dht_contact *nodes, size_t n,
                      const shoal_dht_lookup_info *info)
{
    lookup *l = ctx;
    l->done++;
    l->status = status;
    l->n = n;
    if (n)
        memcpy(l->first, nodes[0].id, 32);
    l->info = *info;
    (*l->counter)++;
}

static void print_hops(const char *what, uint32_t *hops, int n)
{
    qsort(hops, (size_t)n, sizeof *hops, cmp_u32);
    printf("  %s hops: median %u, p95 %u, max %u\n", what, n ? hops[n / 2] : 0,
           n ? hops[(size_t)n * 95 / 100] : 0, n ? hops[n - 1] : 0);
}

/* `count` lookups of random targets from random live nodes, all started at
 * once, checked against brute force. Returns the success rate. */
static double sim_lookups(sim *s, int count, const char *what)
{
    lookup *ls = calloc((size_t)count, sizeof *ls);
    uint32_t *hops = calloc((size_t)count, sizeof *hops);
    if (!ls || !hops) {
        free(ls);
        free(hops);
        return 0;
    }
    int done = 0, started = 0;
    for (int q = 0; q < count; q++) {
        ls[q].from = random_live(s);
        rnd_bytes(&s->r, ls[q].target, 32);
        ls[q].counter = &done;
        if (shoal_dht_find_node(s->n[ls[q].from].d, ls[q].target, s->now, lookup_cb,
                                &ls[q]) == SHOAL_OK) {
            started++;
            pump(s, ls[q].from);
        }
    }
    int64_t t0 = s->now;
    run_for(s, &done, started, 120000);
    int ok = 0;
    double queries = 0, replies = 0, timeouts = 0;
    for (int q = 0; q < count; q++) {
        lookup *l = &ls[q];
        int want = true_closest(s, l->target, l->from);
        ok += l->done == 1 && l->status == SHOAL_OK && l->n > 0 && want >= 0 &&
              memcmp(l->first, s->n[want].id, 32) == 0;
        hops[q] = l->info.hops;
        queries += l->info.queries;
        replies += l->info.replies;
        timeouts += l->info.timeouts;
    }
    double rate = (double)ok / count;
    printf("%s: %d FIND_NODE lookups (%d ended), %d found the true closest live node: "
           "%.2f %%\n",
           what, count, done, ok, 100.0 * rate);
    print_hops("lookup", hops, count);
    printf("  per lookup: %.1f requests, %.1f replies, %.1f timeouts, %.1f messages; "
           "all ended %.1f s after the start\n",
           queries / count, replies / count, timeouts / count, (queries + replies) / count,
           (double)(s->now - t0) / 1000);
    free(ls);
    free(hops);
    return rate;
}

typedef struct op {
    int done, status;
    size_t stored;
    int found;
    uint64_t want_seq;
    uint32_t hops, queries, replies;
    int *counter;
} op;

static void put_cb(void *ctx, int status, size_t stored, const shoal_dht_lookup_info *info)
{
    op *o = ctx;
    o->done++;
    o->status = status;
    o->stored = stored;
    o->hops = info->hops;
    (*o->counter)++;
}

static void get_cb(void *ctx, int status, const shoal_dht_value *v, size_t n,
                   const shoal_dht_lookup_info *info)
{
    op *o = ctx;
    o->done++;
    o->status = status;
    for (size_t i = 0; i < n; i++)
        o->found |= v[i].meta.seq == o->want_seq && v[i].len >= 18 && v[i].data[0] == 'B';
    o->hops = info->hops;
    o->queries = info->queries;
    o->replies = info->replies;
    (*o->counter)++;
}

#define NVALUES 200

typedef struct stored {
    uint8_t key[32];
    uint64_t seq;
} stored;

static size_t make_value(uint8_t *v, uint8_t owner, uint64_t seq, int64_t exp)
{
    v[0] = 'B';
    v[1] = owner;
    memcpy(v + 2, &seq, 8);
    memcpy(v + 10, &exp, 8);
    memset(v + 18, 0xab, 200); /* about a record's size */
    return 218;
}

/* Put NVALUES values under random keys from random nodes. */
static void sim_puts(sim *s, stored *vals)
{
    op *ps = calloc(NVALUES, sizeof *ps);
    if (!ps)
        return;
    int done = 0, started = 0;
    int64_t exp = s->now + 3600 * 1000;
    for (int q = 0; q < NVALUES; q++) {
        uint8_t v[256];
        rnd_bytes(&s->r, vals[q].key, 32);
        vals[q].seq = 1 + (uint64_t)q;
        int from = random_live(s);
        size_t len = make_value(v, (uint8_t)q, vals[q].seq, exp);
        ps[q].counter = &done;
        if (shoal_dht_put(s->n[from].d, vals[q].key, v, len, s->now, put_cb, &ps[q]) == 0) {
            started++;
            pump(s, from);
        }
    }
    run_for(s, &done, started, 120000);
    int ok = 0;
    size_t sum = 0, min = SIZE_MAX;
    for (int q = 0; q < NVALUES; q++) {
        ok += ps[q].done == 1 && ps[q].status == SHOAL_OK;
        sum += ps[q].stored;
        min = ps[q].stored < min ? ps[q].stored : min;
    }
    printf("puts: %d values, %d stored, on %.1f nodes each on average (min %zu)\n", NVALUES,
           ok, (double)sum / NVALUES, min);
    free(ps);
}

static double sim_gets(sim *s, const stored *vals, int count, const char *what)
{
    op *gs = calloc((size_t)count, sizeof *gs);
    uint32_t *hops = calloc((size_t)count, sizeof *hops);
    if (!gs || !hops) {
        free(gs);
        free(hops);
        return 0;
    }
    int done = 0, started = 0;
    for (int q = 0; q < count; q++) {
        const stored *v = &vals[rnd64(&s->r) % NVALUES];
        int from = random_live(s);
        gs[q].counter = &done;
        gs[q].want_seq = v->seq;
        if (shoal_dht_get(s->n[from].d, v->key, s->now, get_cb, &gs[q]) == SHOAL_OK) {
            started++;
            pump(s, from);
        }
    }
    run_for(s, &done, started, 120000);
    int ok = 0;
    double msgs = 0;
    for (int q = 0; q < count; q++) {
        ok += gs[q].done == 1 && gs[q].status == SHOAL_OK && gs[q].found;
        hops[q] = gs[q].hops;
        msgs += gs[q].queries + gs[q].replies;
    }
    double rate = (double)ok / count;
    printf("%s: %d gets of stored values, %d returned the value: %.2f %%\n", what, count, ok,
           100.0 * rate);
    print_hops("get", hops, count);
    printf("  per get: %.1f messages\n", msgs / count);
    free(gs);
    free(hops);
    return rate;
}

static int run_dht(int N, double churn, uint64_t seed, int nlookups)
{
    clock_t c0 = clock();
    sim *s = calloc(1, sizeof *s);
    stored *vals = calloc(NVALUES, sizeof *vals);
    if (!s || !vals) {
        free(s);
        free(vals);
        return 1;
    }
    int rc = sim_init(s, N, seed);
    if (rc) {
        fprintf(stderr, "bench_sim: cannot make %d DHT nodes: %s\n", N, shoal_strerror(rc));
        sim_free(s);
        free(s);
        free(vals);
        return 1;
    }
    printf("== DHT: %d nodes, k %d, alpha %d, 10..100 ms latency, 1 %% loss, seed %llu\n", N,
           SHOAL_DHT_K, SHOAL_DHT_ALPHA, (unsigned long long)seed);
    /* node 0 is up first; every other joins through it and two earlier nodes, 10 ms apart */
    pump(s, 0);
    for (int i = 1; i < N; i++) {
        run_until(s, s->now + 10);
        const char *seeds[3] = {s->n[0].addr, NULL, NULL};
        if (i > 2) {
            seeds[1] = s->n[1 + rnd64(&s->r) % (uint64_t)(i - 1)].addr;
            seeds[2] = s->n[1 + rnd64(&s->r) % (uint64_t)(i - 1)].addr;
        }
        if (shoal_dht_bootstrap(s->n[i].d, seeds, 3, s->now, boot_cb, &s->n[i]) == SHOAL_OK)
            pump(s, i);
    }
    run_until(s, s->now + 120000);
    int booted = 0;
    uint64_t mem = 0, contacts = 0;
    for (int i = 0; i < N; i++) {
        booted += i == 0 || (s->n[i].boot_calls == 1 && s->n[i].boot_status == SHOAL_OK);
        shoal_dht_stats st;
        shoal_dht_stats_get(s->n[i].d, &st);
        mem += st.mem_bytes;
        contacts += st.contacts;
    }
    printf("bootstrap: %d of %d joined; %.1f contacts and %.1f KiB per node; %llu messages "
           "(%llu lost); %.1f s of CPU\n",
           booted, N, (double)contacts / N, (double)mem / N / 1024,
           (unsigned long long)s->msgs, (unsigned long long)s->lost,
           (double)(clock() - c0) / CLOCKS_PER_SEC);
    sim_lookups(s, nlookups, "no churn");
    sim_puts(s, vals);

    int gone = 0, target = (int)(churn * N + 0.5);
    while (gone < target && gone < N - 2) {
        int v = (int)(rnd64(&s->r) % (uint64_t)N);
        if (!s->n[v].alive)
            continue;
        s->n[v].alive = 0;
        gone++;
    }
    printf("churn: %d of %d nodes (%.1f %%) vanished at once\n", gone, N, 100.0 * gone / N);
    double r1 = sim_lookups(s, nlookups, "right after");
    double g1 = sim_gets(s, vals, nlookups, "right after");
    run_until(s, s->now + 120000);
    double r2 = sim_lookups(s, nlookups, "2 min later");
    double g2 = sim_gets(s, vals, nlookups, "2 min later");
    printf("DHT summary: %d nodes, %.0f %% gone: lookups %.2f %% / %.2f %% (right after / 2 min "
           "later), gets %.2f %% / %.2f %%; target >= 99.9 %% lookups: %s\n",
           N, 100.0 * gone / N, 100 * r1, 100 * r2, 100 * g1, 100 * g2,
           r1 >= 0.999 && r2 >= 0.999 ? "met" : "NOT met");
    printf("simulation: %.1f s of CPU, %.0f s simulated, %llu messages, %llu wire errors\n",
           (double)(clock() - c0) / CLOCKS_PER_SEC, (double)(s->now - T0) / 1000,
           (unsigned long long)s->msgs, (unsigned long long)s->wire_errors);
    int bad = s->wire_errors || s->oom;
    sim_free(s);
    free(s);
    free(vals);
    return bad;
}

/* ------------------------------------------------------------------ */
/* Placement                                                            */

#define NBLOCKS 80

typedef struct server {
    uint32_t start, len;
    double t;
} server;

static void block_tput(const server *sv, int n, int except, double *tput)
{
    for (uint32_t b = 0; b < NBLOCKS; b++)
        tput[b] = 0;
    for (int i = 0; i < n; i++)
        if (i != except)
            for (uint32_t b = sv[i].start; b < sv[i].start + sv[i].len; b++)
                tput[b] += sv[i].t;
}

static double bottleneck(const server *sv, int n)
{
    double tput[NBLOCKS];
    block_tput(sv, n, -1, tput);
    return shoal_placement_bottleneck(tput, NBLOCKS);
}

typedef struct placement_result {
    double join, rebalanced, bound;
    int rounds, moves;
} placement_result;

/* Rebalancing rounds over sv[0..M): each server in random order, moving at
 * once when shoal_placement_should_move says so, until a round without a
 * move (at most 50 rounds). */
static void rebalance(server *sv, int M, int *order, rng *r, double margin,
                      placement_result *res)
{
    double tput[NBLOCKS], scratch[2 * NBLOCKS];
    for (int i = 0; i < M; i++)
        order[i] = i;
    for (res->rounds = 0; res->rounds < 50;) {
        for (int i = M - 1; i > 0; i--) {
            int j = (int)(rnd64(r) % (uint64_t)(i + 1)), x = order[i];
            order[i] = order[j];
            order[j] = x;
        }
        int moved = 0;
        for (int k = 0; k < M; k++) {
            server *me = &sv[order[k]];
            uint32_t to;
            block_tput(sv, M, order[k], tput);
            if (shoal_placement_should_move(tput, NBLOCKS, me->start, me->len, me->t, margin,
                                            scratch, &to)) {
                me->start = to;
                moved++;
            }
        }
        res->rounds++;
        res->moves += moved;
        if (!moved)
            break;
    }
}

/* One run: M servers join one by one with Petals' rule; then, when leave
 * > 0, that fraction of them (chosen at random) leave. Bottleneck then
 * (join only), and after rebalancing rounds of the servers left. */
static placement_result run_placement_once(int M, uint64_t seed, double margin, double leave)
{
    placement_result res = {0};
    rng r = {0x243f6a8885a308d3ull ^ (seed * 0x9e3779b97f4a7c15ull)};
    if (!r.s)
        r.s = 1;
    server *sv = calloc((size_t)M, sizeof *sv);
    int *order = calloc((size_t)M, sizeof *order);
    if (!sv || !order) {
        free(sv);
        free(order);
        return res;
    }
    double tput[NBLOCKS];
    for (int i = 0; i < M; i++) {
        sv[i].t = 10.0 * pow(10.0, rnd_unit(&r)); /* log-uniform 10..100 */
        sv[i].len = 4 + (uint32_t)(rnd64(&r) % 13); /* 4..16 blocks */
        block_tput(sv, i, -1, tput); /* the servers before it */
        sv[i].start = shoal_placement_choose(tput, NBLOCKS, sv[i].len);
    }
    int n = M;
    for (int gone = 0, want = (int)(leave * M + 0.5); gone < want && n > 1; gone++) {
        int v = (int)(rnd64(&r) % (uint64_t)n);
        sv[v] = sv[--n]; /* server v leaves */
    }
    double work = 0;
    for (int i = 0; i < n; i++)
        work += sv[i].t * sv[i].len;
    res.bound = work / NBLOCKS;
    res.join = bottleneck(sv, n);
    rebalance(sv, n, order, &r, margin, &res);
    res.rebalanced = bottleneck(sv, n);
    free(sv);
    free(order);
    return res;
}

static int run_placement(int M, uint64_t seed, double margin, double leave)
{
    printf("== Placement: %d servers (10..100 tokens/s log-uniform, spans of 4..16 blocks), "
           "%d-block model, rebalancing margin %.2f",
           M, NBLOCKS, margin);
    if (leave > 0)
        printf(", then %.0f %% of the servers leave", 100 * leave);
    printf("\n");
    printf("%6s %12s %12s %12s %9s %9s %7s %7s\n", "seed", "join only", "rebalanced", "bound",
           "join/bd", "rebal/bd", "rounds", "moves");
    double worst = 1, worst_join = 1;
    int never_worse = 1;
    for (uint64_t k = 0; k < 5; k++) {
        placement_result p = run_placement_once(M, seed + k, margin, leave);
        if (!(p.bound > 0))
            return 1;
        printf("%6llu %12.1f %12.1f %12.1f %8.2f%% %8.2f%% %7d %7d\n",
               (unsigned long long)(seed + k), p.join, p.rebalanced, p.bound,
               100 * p.join / p.bound, 100 * p.rebalanced / p.bound, p.rounds, p.moves);
        worst = p.rebalanced / p.bound < worst ? p.rebalanced / p.bound : worst;
        worst_join = p.join / p.bound < worst_join ? p.join / p.bound : worst_join;
        never_worse &= p.rebalanced >= p.join;
    }
    printf("placement summary: worst run %.2f %% of the bound with rebalancing (%.2f %% join "
           "only); rebalancing never worse than Petals' rule alone: %s; target >= 95 %% of "
           "the optimum: %s\n",
           100 * worst, 100 * worst_join, never_worse ? "yes" : "NO",
           worst >= 0.95 && never_worse ? "met (against the bound, so also the optimum)"
                                        : "NOT met against the bound");
    return 0;
}

/* ------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr, "usage: bench_sim [--dht] [--placement] [--nodes N] [--churn F] "
                    "[--seed S] [--lookups L] [--servers M] [--margin X]\n");
}

int main(int argc, char **argv)
{
    int dht = 0, place = 0, N = 10000, lookups = 1000, M = 1000;
    double churn = 0.20, margin = 0.02;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--dht"))
            dht = 1;
        else if (!strcmp(a, "--placement"))
            place = 1;
        else if (v && !strcmp(a, "--nodes") && (i++, 1))
            N = atoi(v);
        else if (v && !strcmp(a, "--churn") && (i++, 1))
            churn = atof(v);
        else if (v && !strcmp(a, "--seed") && (i++, 1))
            seed = strtoull(v, NULL, 0);
        else if (v && !strcmp(a, "--lookups") && (i++, 1))
            lookups = atoi(v);
        else if (v && !strcmp(a, "--servers") && (i++, 1))
            M = atoi(v);
        else if (v && !strcmp(a, "--margin") && (i++, 1))
            margin = atof(v);
        else {
            usage();
            return 2;
        }
    }
    if (N < 3 || N > 1000000 || !(churn >= 0 && churn < 1) || lookups < 1 || M < 1 ||
        M > 1000000 || !(margin >= 0)) {
        usage();
        return 2;
    }
    if (!dht && !place)
        dht = place = 1;
    if (sodium_init() < 0)
        return 1;
    int rc = 0;
    if (place) {
        rc |= run_placement(M, seed, margin, 0);
        if (churn > 0)
            rc |= run_placement(M, seed, margin, churn);
    }
    if (dht)
        rc |= run_dht(N, churn, seed, lookups);
    return rc;
}
