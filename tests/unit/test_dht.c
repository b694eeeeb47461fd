/*
 * The DHT core, in two parts.
 *
 * Mechanics, on one DHT driven by hand: parameters, the outbox, request
 * and reply matching (forged ids and addresses ignored, replays ignored),
 * strikes and bans, the k-bucket LRU rule (ping the least recently seen
 * before evicting it, replacement cache), the store's rules (sequence
 * numbers per owner, caps and who gives way, expiry), callbacks only from
 * receive/tick, cancellation, junk requests, and memory under a flood.
 *
 * A simulator: SIM_NODES DHT nodes (2000 by default; SHOAL_DHT_SIM_NODES
 * overrides) in one process with a fake clock and a simulated network
 * (every message encoded and decoded with proto/wire, 10..100 ms latency,
 * 1 % loss). It checks that bootstrap converges, that lookups find the k
 * closest live nodes (against brute force) in few hops, that signed
 * records put by servers are read back from any node, that storing nodes
 * refuse forged, stale, expired, misplaced and far-future records, that
 * forged replies do not change a lookup's result, and that lookups and
 * gets survive 10 % of the nodes leaving.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "../check.h"
#include "kernels/err.h"
#include "proto/identity.h"
#include "proto/wire.h"
#include "swarm/dht.h"
#include "swarm/record.h"

#define T0 1700000000000LL /* the fake clock starts here (Unix ms) */

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd64(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void rnd_bytes(uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(rnd64() >> 24);
}

static void hex32(const uint8_t *b, char out[65])
{
    shoal_identity_hex(b, out);
}

/* An address with this key (any 32 bytes: contacts are checked for syntax
 * only) and its id. */
static void make_addr(char *out, const uint8_t pk[32], uint32_t host, uint8_t id[32])
{
    char hex[65];
    hex32(pk, hex);
    snprintf(out, SHOAL_ADDR_MAX, "shoal://10.%u.%u.%u:4000/%s", (host >> 16) & 255,
             (host >> 8) & 255, host & 255, hex);
    if (id)
        shoal_identity_peer_id_of(pk, id);
}

static int cpl(const uint8_t *a, const uint8_t *b)
{
    for (int i = 0; i < 32; i++) {
        uint8_t x = a[i] ^ b[i];
        if (x)
            return i * 8 + __builtin_clz((unsigned)x) - 24;
    }
    return 256;
}

/* ------------------------------------------------------------------ */
/* A toy validator for the mechanics tests: 'T', owner byte, seq (u64
 * LE), expiry (i64 LE), then anything.                                  */

static int toy_validate(void *ctx, const uint8_t key[32], const uint8_t *v, size_t len,
                        int64_t now, shoal_dht_meta *m)
{
    (void)ctx;
    (void)key;
    if (len < 18 || v[0] != 'T')
        return SHOAL_ERR_FORMAT;
    memset(m->owner, v[1], 32);
    memcpy(&m->seq, v + 2, 8);
    memcpy(&m->expires_ms, v + 10, 8);
    return m->expires_ms > now ? SHOAL_OK : SHOAL_ERR_RANGE;
}

static size_t toy_value(uint8_t *v, uint8_t owner, uint64_t seq, int64_t exp, uint8_t fill,
                        size_t pad)
{
    v[0] = 'T';
    v[1] = owner;
    memcpy(v + 2, &seq, 8);
    memcpy(v + 10, &exp, 8);
    memset(v + 18, fill, pad);
    return 18 + pad;
}

/* A DHT with a real address (its key must be a valid point). */
typedef struct node {
    shoal_dht *d;
    char addr[SHOAL_ADDR_MAX];
    uint8_t id[32];
} node;

static void node_make(node *n, const shoal_dht_params *base, uint32_t host, uint32_t seed)
{
    uint8_t sd[32] = {0}, pk[32], sk[64];
    memcpy(sd, &seed, 4);
    sd[31] = 0x77;
    crypto_sign_seed_keypair(pk, sk, sd);
    make_addr(n->addr, pk, host, n->id);
    shoal_dht_params p = base ? *base : shoal_dht_params_default();
    memcpy(p.self_id, n->id, 32);
    memcpy(p.self_addr, n->addr, strlen(n->addr) + 1);
    memcpy(p.seed, sd, 32);
    p.seed[0] ^= 0x55;
    if (!p.validate) {
        p.validate = toy_validate;
        p.validate_ctx = NULL;
    }
    n->d = NULL;
    CHECK(shoal_dht_new(&p, &n->d) == SHOAL_OK);
}

static shoal_dht_stats stats(shoal_dht *d)
{
    shoal_dht_stats s;
    shoal_dht_stats_get(d, &s);
    return s;
}

/* A fake peer in bucket `bucket` of self (or any bucket if -1). */
static void fake_peer(const uint8_t *self, int bucket, char *addr, uint8_t *id)
{
    static uint32_t host = 1;
    for (;;) {
        uint8_t pk[32];
        rnd_bytes(pk, 32);
        make_addr(addr, pk, host++, id);
        if (bucket < 0 || cpl(self, id) == bucket)
            return;
    }
}

/* Make d hear a request from addr, answer the PING it sends to check it:
 * addr enters d's table (or replacement cache). */
static void learn(shoal_dht *d, const char *addr, int64_t now)
{
    shoal_wire_header req, rep;
    shoal_wire_header_init(&req, SHOAL_OP_FIND_NODE, 1 + rnd64() % 1000000);
    req.has = SHOAL_WIRE_HAS_TARGET | SHOAL_WIRE_HAS_ADDR;
    rnd_bytes(req.target, 32);
    snprintf(req.addr, sizeof req.addr, "%s", addr);
    CHECK(shoal_dht_receive_request(d, &req, now, &rep) == SHOAL_OK);
    shoal_dht_msg m;
    int found = 0;
    while (shoal_dht_next_outgoing(d, &m)) {
        if (m.header.op == SHOAL_OP_PING && strcmp(m.to, addr) == 0) {
            shoal_wire_header pong;
            shoal_wire_reply_init(&pong, &m.header);
            CHECK(shoal_dht_receive_reply(d, m.to, &pong, now) == SHOAL_OK);
            found = 1;
            break; /* what it queued next stays in the outbox */
        }
    }
    CHECK(found);
}

static int table_has(shoal_dht *d, const uint8_t *id)
{
    shoal_dht_contact c[32];
    size_t n = shoal_dht_closest(d, id, c, 1);
    return n == 1 && memcmp(c[0].id, id, 32) == 0;
}

/* ------------------------------------------------------------------ */
/* Mechanics                                                           */

static void test_params(void)
{
    node n;
    node_make(&n, NULL, 1, 1);
    shoal_dht_params p = shoal_dht_params_default();
    memcpy(p.self_id, n.id, 32);
    memcpy(p.self_addr, n.addr, sizeof n.addr);
    shoal_dht *d = (shoal_dht *)&p;
    p.k = 0;
    CHECK(shoal_dht_new(&p, &d) == SHOAL_ERR_ARG && d == NULL);
    p.k = 33;
    CHECK(shoal_dht_new(&p, &d) == SHOAL_ERR_ARG);
    p.k = 4;
    p.alpha = 5;
    CHECK(shoal_dht_new(&p, &d) == SHOAL_ERR_ARG);
    p.alpha = 3;
    p.self_id[0] ^= 1; /* not the address's id */
    CHECK(shoal_dht_new(&p, &d) == SHOAL_ERR_ARG);
    p.self_id[0] ^= 1;
    snprintf(p.self_addr, sizeof p.self_addr, "shoal://nope");
    CHECK(shoal_dht_new(&p, &d) == SHOAL_ERR_ARG);
    p.self_addr[0] = 0; /* a client: any id */
    rnd_bytes(p.self_id, 32);
    CHECK(shoal_dht_new(&p, &d) == SHOAL_OK && d);
    /* a client has no address to announce */
    uint8_t target[32] = {1};
    CHECK(shoal_dht_bootstrap(d, (const char *const[]){n.addr}, 1, T0, NULL, NULL) == SHOAL_OK);
    shoal_dht_msg m;
    CHECK(shoal_dht_next_outgoing(d, &m) && !(m.header.has & SHOAL_WIRE_HAS_ADDR));
    CHECK(strcmp(m.to, n.addr) == 0 && m.header.op == SHOAL_OP_FIND_NODE);
    CHECK(!shoal_dht_next_outgoing(d, &m));
    /* get needs a validator */
    CHECK(shoal_dht_get(d, target, T0, NULL, NULL) == SHOAL_ERR_ARG);
    shoal_dht_destroy(&d);
    CHECK(d == NULL);
    shoal_dht_destroy(&d);
    shoal_dht_destroy(NULL);
    shoal_dht_destroy(&n.d);

    /* contact syntax */
    uint8_t id[32];
    char a[SHOAL_ADDR_MAX];
    uint8_t pk[32] = {9};
    make_addr(a, pk, 7, NULL);
    CHECK(shoal_dht_contact_parse((const uint8_t *)a, strlen(a), id) == SHOAL_OK);
    static const char *bad[] = {
        "shoal://10.0.0.1:0/", "shoal://10.0.0.1:65536/", "shoal://:4000/", "http://x:1/",
        "shoal://a b:4000/", "shoal://x:04000/", "shoal://x4000/", "shoal://[::1:4000/",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char s[SHOAL_ADDR_MAX];
        char hex[65];
        hex32(pk, hex);
        snprintf(s, sizeof s, "%s%s", bad[i], hex);
        CHECK_MSG(shoal_dht_contact_parse((const uint8_t *)s, strlen(s), id) != SHOAL_OK, "%s", s);
    }
    char up[SHOAL_ADDR_MAX];
    snprintf(up, sizeof up, "%s", a);
    up[strlen(up) - 1] = 'A'; /* uppercase hex */
    CHECK(shoal_dht_contact_parse((const uint8_t *)up, strlen(up), id) != SHOAL_OK);
    CHECK(shoal_dht_contact_parse((const uint8_t *)a, strlen(a) - 1, id) != SHOAL_OK);
    char v6[SHOAL_ADDR_MAX], hex[65];
    hex32(pk, hex);
    snprintf(v6, sizeof v6, "shoal://[2001:db8::1]:9/%s", hex);
    CHECK(shoal_dht_contact_parse((const uint8_t *)v6, strlen(v6), id) == SHOAL_OK);
}

typedef struct cbrec {
    int calls;
    int status;
    size_t n;
    shoal_dht_contact nodes[32];
    shoal_dht_lookup_info info;
    shoal_dht_value vals[64];
    uint8_t data[64][2048];
} cbrec;

static void find_cb(void *ctx, int status, const shoal_dht_contact *nodes, size_t n,
                    const shoal_dht_lookup_info *info)
{
    cbrec *r = ctx;
    r->calls++;
    r->status = status;
    r->n = n;
    if (n)
        memcpy(r->nodes, nodes, n * sizeof *nodes);
    r->info = *info;
}

static void get_cb(void *ctx, int status, const shoal_dht_value *v, size_t n,
                   const shoal_dht_lookup_info *info)
{
    cbrec *r = ctx;
    r->calls++;
    r->status = status;
    r->n = n;
    for (size_t i = 0; i < n && i < 64; i++) {
        r->vals[i] = v[i];
        memcpy(r->data[i], v[i].data, v[i].len < 2048 ? v[i].len : 2048);
        r->vals[i].data = r->data[i];
    }
    r->info = *info;
}

static void put_cb(void *ctx, int status, size_t stored, const shoal_dht_lookup_info *info)
{
    cbrec *r = ctx;
    r->calls++;
    r->status = status;
    r->n = stored;
    r->info = *info;
}

/* Reply matching: wrong address, unknown id, replayed, malformed. */
static void test_replies(void)
{
    node a;
    node_make(&a, NULL, 1, 11);
    char f[SHOAL_ADDR_MAX], g[SHOAL_ADDR_MAX];
    uint8_t fid[32], gid[32];
    fake_peer(a.id, -1, f, fid);
    fake_peer(a.id, -1, g, gid);
    cbrec cb = {0};
    const char *seeds[] = {f, "shoal://garbage", NULL};
    CHECK(shoal_dht_bootstrap(a.d, seeds, 3, T0, find_cb, &cb) == SHOAL_OK);
    CHECK(cb.calls == 0);
    shoal_dht_msg m;
    CHECK(shoal_dht_next_outgoing(a.d, &m));
    CHECK(strcmp(m.to, f) == 0 && m.header.op == SHOAL_OP_FIND_NODE);
    CHECK(memcmp(m.header.target, a.id, 32) == 0);
    CHECK(strcmp(m.header.addr, a.addr) == 0);
    CHECK(!shoal_dht_next_outgoing(a.d, &m));

    shoal_wire_header rep;
    shoal_wire_reply_init(&rep, &m.header);
    /* the right id from another address */
    CHECK(shoal_dht_receive_reply(a.d, g, &rep, T0 + 5) == SHOAL_ERR_NOTFOUND);
    /* an unknown id from the right address */
    rep.request_id ^= 1;
    CHECK(shoal_dht_receive_reply(a.d, f, &rep, T0 + 5) == SHOAL_ERR_NOTFOUND);
    rep.request_id ^= 1;
    CHECK(stats(a.d).replies_ignored == 2 && stats(a.d).contacts == 0);
    /* the real reply: one contact (g) and nothing else */
    uint8_t gv[SHOAL_ADDR_MAX + 1];
    gv[0] = SHOAL_DHT_TAG_CONTACT;
    memcpy(gv + 1, g, strlen(g));
    rep.has |= SHOAL_WIRE_HAS_VALUES;
    rep.nvalues = 1;
    rep.values[0].ptr = gv;
    rep.values[0].len = (uint32_t)strlen(g) + 1;
    CHECK(shoal_dht_receive_reply(a.d, f, &rep, T0 + 5) == SHOAL_OK);
    CHECK(table_has(a.d, fid));
    /* a replay of it is ignored */
    CHECK(shoal_dht_receive_reply(a.d, f, &rep, T0 + 6) == SHOAL_ERR_NOTFOUND);
    CHECK(cb.calls == 0);
    /* the lookup goes on to g; g answers with a malformed contact */
    CHECK(shoal_dht_next_outgoing(a.d, &m) && strcmp(m.to, g) == 0);
    shoal_wire_reply_init(&rep, &m.header);
    rep.has |= SHOAL_WIRE_HAS_VALUES;
    rep.nvalues = 1;
    rep.values[0].ptr = (const uint8_t *)"\x01shoal://x";
    rep.values[0].len = 10;
    CHECK(shoal_dht_receive_reply(a.d, g, &rep, T0 + 7) == SHOAL_ERR_PROTOCOL);
    CHECK(!table_has(a.d, gid));   /* a sender of junk does not get in */
    CHECK(stats(a.d).malformed_in == 1);
    CHECK(cb.calls == 1 && cb.status == SHOAL_OK && cb.n == 1); /* g's answer was junk */
    CHECK(memcmp(cb.nodes[0].id, fid, 32) == 0);
    CHECK(cb.info.replies == 2 && cb.info.queries == 2 && cb.info.hops == 1);

    /* strikes: f (in the table) answers three lookups with junk */
    for (int round = 0; round < 3; round++) {
        uint8_t t[32];
        rnd_bytes(t, 32);
        cbrec c2 = {0};
        CHECK(shoal_dht_find_node(a.d, t, T0 + 100 + round, find_cb, &c2) == SHOAL_OK);
        CHECK(shoal_dht_next_outgoing(a.d, &m) && strcmp(m.to, f) == 0);
        shoal_wire_reply_init(&rep, &m.header);
        rep.has |= SHOAL_WIRE_HAS_VALUES;
        rep.nvalues = 1;
        rep.values[0].ptr = (const uint8_t *)"\x07junk";
        rep.values[0].len = 5;
        CHECK(shoal_dht_receive_reply(a.d, f, &rep, T0 + 100 + round) == SHOAL_ERR_PROTOCOL);
        CHECK(c2.calls == 1);
    }
    CHECK(!table_has(a.d, fid) && stats(a.d).banned == 1);
    /* banned: its requests do not get it checked again */
    shoal_wire_header req, out;
    shoal_wire_header_init(&req, SHOAL_OP_PING, 99);
    req.has = SHOAL_WIRE_HAS_ADDR;
    snprintf(req.addr, sizeof req.addr, "%s", f);
    CHECK(shoal_dht_receive_request(a.d, &req, T0 + 200, &out) == SHOAL_OK);
    CHECK(out.op == SHOAL_OP_PING && (out.flags & SHOAL_WIRE_FLAG_REPLY) && out.request_id == 99);
    CHECK(!shoal_dht_next_outgoing(a.d, &m));
    /* a reply of the wrong op is a protocol error */
    learn(a.d, g, T0 + 300);
    uint8_t t[32];
    rnd_bytes(t, 32);
    cbrec c3 = {0};
    CHECK(shoal_dht_find_node(a.d, t, T0 + 301, find_cb, &c3) == SHOAL_OK);
    CHECK(shoal_dht_next_outgoing(a.d, &m) && strcmp(m.to, g) == 0);
    shoal_wire_reply_init(&rep, &m.header);
    rep.op = SHOAL_OP_STORE;
    CHECK(shoal_dht_receive_reply(a.d, g, &rep, T0 + 302) == SHOAL_ERR_PROTOCOL);
    /* request_failed resolves at once; a lookup tries a candidate twice */
    CHECK(shoal_dht_find_node(a.d, t, T0 + 303, find_cb, &c3) == SHOAL_OK);
    CHECK(shoal_dht_next_outgoing(a.d, &m));
    shoal_dht_request_failed(a.d, m.header.request_id, T0 + 304);
    CHECK(stats(a.d).pending == 1 && c3.calls == 1);
    CHECK(shoal_dht_next_outgoing(a.d, &m) && strcmp(m.to, g) == 0);
    shoal_dht_request_failed(a.d, m.header.request_id, T0 + 304);
    CHECK(stats(a.d).pending == 0);
    shoal_dht_tick(a.d, T0 + 305);
    CHECK(c3.calls == 2 && c3.status == SHOAL_ERR_NOTFOUND && c3.info.timeouts == 2);
    shoal_dht_request_failed(a.d, 12345, T0 + 306); /* unknown: ignored */
    shoal_dht_destroy(&a.d);
}

/* k-bucket: ping the least recently seen before evicting it. */
static void test_buckets(void)
{
    shoal_dht_params p = shoal_dht_params_default();
    p.k = 4;
    p.alpha = 2;
    p.replacements = 2;
    node a;
    node_make(&a, &p, 1, 21);
    char addr[8][SHOAL_ADDR_MAX];
    uint8_t id[8][32];
    int64_t now = T0;
    for (int i = 0; i < 8; i++)
        fake_peer(a.id, 0, addr[i], id[i]);
    for (int i = 0; i < 4; i++)
        learn(a.d, addr[i], now + i);
    CHECK(stats(a.d).contacts == 4 && stats(a.d).replacements == 0);
    /* a fifth, while the others are fresh: replacement cache, no ping */
    learn(a.d, addr[4], now + 10);
    shoal_dht_msg m;
    CHECK(!shoal_dht_next_outgoing(a.d, &m));
    CHECK(stats(a.d).contacts == 4 && stats(a.d).replacements == 1);
    /* later: a sixth makes it ping the least recently seen (0) */
    now += p.stale_ms + 1000;
    learn(a.d, addr[5], now);
    CHECK(shoal_dht_next_outgoing(a.d, &m));
    CHECK(m.header.op == SHOAL_OP_PING && strcmp(m.to, addr[0]) == 0);
    CHECK(stats(a.d).replacements == 2);
    /* no answer: 0 goes, the newest replacement (5) comes in */
    int64_t wake = shoal_dht_tick(a.d, now + 1);
    CHECK(wake == now + p.request_timeout_ms);
    shoal_dht_tick(a.d, wake);
    CHECK(!table_has(a.d, id[0]) && table_has(a.d, id[5]));
    CHECK(stats(a.d).contacts == 4 && stats(a.d).replacements == 1);
    /* a seventh: ping 1, which answers and stays */
    now = wake + 10;
    learn(a.d, addr[6], now);
    CHECK(shoal_dht_next_outgoing(a.d, &m));
    CHECK(m.header.op == SHOAL_OP_PING && strcmp(m.to, addr[1]) == 0);
    shoal_wire_header pong;
    shoal_wire_reply_init(&pong, &m.header);
    CHECK(shoal_dht_receive_reply(a.d, m.to, &pong, now + 5) == SHOAL_OK);
    CHECK(table_has(a.d, id[1]) && !table_has(a.d, id[6]));
    CHECK(stats(a.d).contacts == 4 && stats(a.d).replacements == 2);
    /* the replacement cache keeps the newest */
    learn(a.d, addr[7], now + 6);
    CHECK(stats(a.d).replacements == 2);
    /* a contact that times out twice (a lookup tries it twice) is replaced
     * from the cache */
    cbrec c = {0};
    CHECK(shoal_dht_find_node(a.d, id[2], now + 10, find_cb, &c) == SHOAL_OK);
    int to2 = 0;
    for (int round = 0; round < 4 && c.calls == 0; round++) {
        while (shoal_dht_next_outgoing(a.d, &m)) {
            if (strcmp(m.to, addr[2]) == 0) {
                to2 += m.header.op == SHOAL_OP_FIND_NODE && !memcmp(m.header.target, id[2], 32);
                continue; /* 2 never answers (nor the PING that 7 caused) */
            }
            shoal_wire_header rep;
            shoal_wire_reply_init(&rep, &m.header);
            shoal_dht_receive_reply(a.d, m.to, &rep, now + 11);
        }
        now += p.request_timeout_ms + 20;
        shoal_dht_tick(a.d, now);
    }
    CHECK_MSG(c.calls == 1 && c.status == SHOAL_OK && to2 == 2 && c.info.timeouts == 2, "%d %d %d %u", c.calls, c.status, to2, c.info.timeouts);
    CHECK(!table_has(a.d, id[2]) && table_has(a.d, id[7]));
    shoal_dht_destroy(&a.d);
}

/* Store rules through STORE requests. */
static int store_req(shoal_dht *d, const uint8_t *key, const uint8_t *v, size_t len,
                     int64_t now, int tag)
{
    uint8_t buf[SHOAL_WIRE_VALUE_MAX];
    buf[0] = (uint8_t)tag;
    memcpy(buf + 1, v, len);
    shoal_wire_header req, rep;
    shoal_wire_header_init(&req, SHOAL_OP_STORE, 1 + rnd64() % 1000);
    req.has = SHOAL_WIRE_HAS_TARGET | SHOAL_WIRE_HAS_VALUES;
    memcpy(req.target, key, 32);
    req.nvalues = 1;
    req.values[0].ptr = buf;
    req.values[0].len = (uint32_t)len + 1;
    if (shoal_dht_receive_request(d, &req, now, &rep) != SHOAL_OK)
        return -1;
    if (rep.op == SHOAL_OP_ERROR)
        return (int)rep.error;
    return rep.op == SHOAL_OP_STORE && (rep.flags & SHOAL_WIRE_FLAG_REPLY) ? 0 : -2;
}

typedef struct seen {
    int n;
    uint64_t seq[128];
    uint8_t owner[128];
} seen;

static void collect(void *ctx, const shoal_dht_value *v)
{
    seen *s = ctx;
    if (s->n < 128) {
        s->seq[s->n] = v->meta.seq;
        s->owner[s->n] = v->meta.owner[0];
        s->n++;
    }
}

static void test_store(void)
{
    shoal_dht_params p = shoal_dht_params_default();
    p.max_records_per_key = 4;
    p.max_keys = 8;
    p.max_value_bytes = 600;
    node a;
    node_make(&a, &p, 1, 31);
    uint8_t key[32], v[700];
    memcpy(key, a.id, 32);
    key[31] ^= 1;
    int64_t now = T0, exp = T0 + 60000;
    size_t n;
    n = toy_value(v, 1, 5, exp, 0, 4);
    CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_VALUE) == 0);
    n = toy_value(v, 1, 4, exp, 0, 4);
    CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_VALUE) == SHOAL_ERR_RANGE); /* older */
    n = toy_value(v, 1, 5, exp, 0, 4);
    CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_VALUE) == 0); /* the same again */
    n = toy_value(v, 1, 5, exp, 1, 4);
    CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_VALUE) == SHOAL_ERR_RANGE); /* same seq, other bytes */
    n = toy_value(v, 1, 6, exp + 1000, 2, 4);
    CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_VALUE) == 0); /* newer replaces */
    seen s = {0};
    CHECK(shoal_dht_local_values(a.d, key, now, collect, &s) == 1 && s.seq[0] == 6);
    /* malformed, expired, too big, wrong tag */
    CHECK(store_req(a.d, key, (const uint8_t *)"Xjunk", 5, now, SHOAL_DHT_TAG_VALUE) == SHOAL_ERR_FORMAT);
    n = toy_value(v, 2, 1, now, 0, 0);
    CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_VALUE) == SHOAL_ERR_RANGE);
    n = toy_value(v, 2, 1, exp, 0, 600);
    CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_VALUE) == SHOAL_ERR_RANGE);
    n = toy_value(v, 2, 1, exp, 0, 4);
    CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_CONTACT) == SHOAL_ERR_FORMAT);
    /* per-key cap: the record expiring first gives way to a later one */
    for (uint8_t o = 2; o <= 4; o++) {
        n = toy_value(v, o, 1, exp + o, 0, 4);
        CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_VALUE) == 0);
    }
    n = toy_value(v, 9, 1, exp - 5, 0, 4); /* expires before all: refused */
    CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_VALUE) == SHOAL_ERR_BUSY);
    n = toy_value(v, 9, 1, exp + 50, 0, 4); /* evicts owner 2 (exp + 2) */
    CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_VALUE) == 0);
    memset(&s, 0, sizeof s);
    CHECK(shoal_dht_local_values(a.d, key, now, collect, &s) == 4);
    int has2 = 0, has9 = 0;
    for (int i = 0; i < s.n; i++) {
        has2 |= s.owner[i] == 2;
        has9 |= s.owner[i] == 9;
    }
    CHECK(!has2 && has9);
    /* key cap: keys at distance 2^(255-b) from us; the farthest gives way
     * to a closer one, a farther one is refused */
    for (int b = 8; b < 15; b++) {
        uint8_t k2[32];
        memcpy(k2, a.id, 32);
        k2[b / 8] ^= (uint8_t)(0x80 >> (b % 8));
        n = toy_value(v, 1, 1, exp, 0, 4);
        CHECK(store_req(a.d, k2, v, n, now, SHOAL_DHT_TAG_VALUE) == 0);
    }
    CHECK(stats(a.d).keys == 8);
    uint8_t far[32], near[32];
    memcpy(far, a.id, 32);
    far[0] ^= 0x80;
    memcpy(near, a.id, 32);
    near[20] ^= 1;
    n = toy_value(v, 1, 1, exp, 0, 4);
    CHECK(store_req(a.d, far, v, n, now, SHOAL_DHT_TAG_VALUE) == SHOAL_ERR_BUSY);
    CHECK(store_req(a.d, near, v, n, now, SHOAL_DHT_TAG_VALUE) == 0);
    CHECK(stats(a.d).keys == 8);
    uint8_t k8[32];
    memcpy(k8, a.id, 32);
    k8[1] ^= 0x80; /* b = 8: the farthest, gone */
    CHECK(shoal_dht_local_values(a.d, k8, now, NULL, NULL) == 0);
    CHECK(shoal_dht_local_values(a.d, near, now, NULL, NULL) == 1);
    /* FIND_VALUE returns values first, then contacts */
    char f[SHOAL_ADDR_MAX];
    uint8_t fid[32];
    fake_peer(a.id, -1, f, fid);
    learn(a.d, f, now);
    shoal_wire_header req, rep;
    shoal_wire_header_init(&req, SHOAL_OP_FIND_VALUE, 5);
    req.has = SHOAL_WIRE_HAS_TARGET;
    memcpy(req.target, key, 32);
    CHECK(shoal_dht_receive_request(a.d, &req, now, &rep) == SHOAL_OK);
    CHECK(rep.nvalues == 5);
    int vals = 0, contacts = 0;
    for (uint32_t i = 0; i < rep.nvalues; i++) {
        vals += rep.values[i].ptr[0] == SHOAL_DHT_TAG_VALUE;
        contacts += rep.values[i].ptr[0] == SHOAL_DHT_TAG_CONTACT && i >= 4;
    }
    CHECK(vals == 4 && contacts == 1);
    uint8_t frame[SHOAL_WIRE_HEADER_MAX];
    size_t flen;
    CHECK(shoal_wire_encode(&rep, frame, sizeof frame, &flen) == SHOAL_OK);
    /* expiry: gone after tick */
    CHECK(stats(a.d).records == 4 + 6 + 1);
    int64_t wake = shoal_dht_tick(a.d, now);
    CHECK(wake <= exp);
    shoal_dht_tick(a.d, exp + 10);
    CHECK(stats(a.d).records == 2); /* owners 9 and 1 expire later */
    shoal_dht_tick(a.d, exp + 2000);
    CHECK(stats(a.d).records == 0 && stats(a.d).keys == 0 && stats(a.d).store_bytes == 0);
    shoal_dht_destroy(&a.d);
}

/* The largest FIND_VALUE reply (largest values, longest addresses) still
 * fits one header frame. */
static void test_reply_size(void)
{
    shoal_dht_params p = shoal_dht_params_default();
    p.max_value_bytes = SHOAL_DHT_VALUE_MAX;
    p.max_store_bytes = 1u << 20;
    node a;
    node_make(&a, &p, 1, 61);
    int64_t now = T0;
    for (int i = 0; i < 40; i++) { /* longest hosts: 253 bytes */
        char host[254], addr[SHOAL_ADDR_MAX], hex[65];
        uint8_t pk[32], id[32];
        memset(host, 'h', 253);
        for (int j = 63; j < 253; j += 64)
            host[j] = '.';
        host[253] = 0;
        rnd_bytes(pk, 32);
        hex32(pk, hex);
        snprintf(addr, sizeof addr, "shoal://%s:65535/%s", host, hex);
        shoal_identity_peer_id_of(pk, id);
        CHECK(strlen(addr) == 332);
        learn(a.d, addr, now);
    }
    CHECK(stats(a.d).contacts >= SHOAL_DHT_K);
    uint8_t key[32], v[SHOAL_DHT_VALUE_MAX];
    rnd_bytes(key, 32);
    for (int o = 0; o < 40; o++) {
        size_t n = toy_value(v, (uint8_t)o, 1, now + 60000, 0xab, SHOAL_DHT_VALUE_MAX - 18);
        CHECK(store_req(a.d, key, v, n, now, SHOAL_DHT_TAG_VALUE) == 0);
    }
    shoal_wire_header req, rep;
    shoal_wire_header_init(&req, SHOAL_OP_FIND_VALUE, 5);
    req.has = SHOAL_WIRE_HAS_TARGET;
    memcpy(req.target, key, 32);
    CHECK(shoal_dht_receive_request(a.d, &req, now, &rep) == SHOAL_OK);
    uint8_t frame[SHOAL_WIRE_HEADER_MAX];
    size_t flen;
    CHECK(shoal_wire_encode(&rep, frame, sizeof frame, &flen) == SHOAL_OK);
    int vals = 0, contacts = 0;
    for (uint32_t i = 0; i < rep.nvalues; i++) {
        vals += rep.values[i].ptr[0] == SHOAL_DHT_TAG_VALUE;
        contacts += rep.values[i].ptr[0] == SHOAL_DHT_TAG_CONTACT;
    }
    printf("largest FIND_VALUE reply: %d values, %d contacts, %zu bytes\n", vals, contacts, flen);
    CHECK(vals >= 10 && contacts >= 8);
    /* and the same for FIND_NODE with k contacts */
    shoal_wire_header_init(&req, SHOAL_OP_FIND_NODE, 6);
    req.has = SHOAL_WIRE_HAS_TARGET;
    CHECK(shoal_dht_receive_request(a.d, &req, now, &rep) == SHOAL_OK);
    CHECK(rep.nvalues == SHOAL_DHT_K);
    CHECK(shoal_wire_encode(&rep, frame, sizeof frame, &flen) == SHOAL_OK);
    shoal_dht_destroy(&a.d);
}

/* Junk requests, callbacks, cancellation. */
static void test_requests_and_callbacks(void)
{
    node a;
    node_make(&a, NULL, 1, 41);
    shoal_wire_header req, rep;
    shoal_wire_header_init(&req, SHOAL_OP_FORWARD, 3);
    CHECK(shoal_dht_receive_request(a.d, &req, T0, &rep) == SHOAL_ERR_UNSUPPORTED);
    CHECK(rep.op == SHOAL_OP_ERROR && rep.error == SHOAL_ERR_UNSUPPORTED && rep.request_id == 3);
    shoal_wire_header_init(&req, SHOAL_OP_FIND_NODE, 4);
    CHECK(shoal_dht_receive_request(a.d, &req, T0, &rep) == SHOAL_ERR_FORMAT); /* no target */
    req.flags = SHOAL_WIRE_FLAG_REPLY;
    CHECK(shoal_dht_receive_request(a.d, &req, T0, &rep) == SHOAL_ERR_FORMAT);
    shoal_wire_header_init(&req, SHOAL_OP_STORE, 5);
    req.has = SHOAL_WIRE_HAS_TARGET;
    CHECK(shoal_dht_receive_request(a.d, &req, T0, &rep) == SHOAL_OK);
    CHECK(rep.op == SHOAL_OP_ERROR && rep.error == SHOAL_ERR_FORMAT);
    /* a requester with a bad address is not pinged */
    shoal_wire_header_init(&req, SHOAL_OP_FIND_NODE, 6);
    req.has = SHOAL_WIRE_HAS_TARGET | SHOAL_WIRE_HAS_ADDR;
    snprintf(req.addr, sizeof req.addr, "shoal://evil:1/xyz");
    CHECK(shoal_dht_receive_request(a.d, &req, T0, &rep) == SHOAL_OK && rep.nvalues == 0);
    shoal_dht_msg m;
    CHECK(!shoal_dht_next_outgoing(a.d, &m));
    /* nobody to ask: the callback comes from tick, not from get */
    cbrec c = {0};
    uint8_t key[32] = {7};
    CHECK(shoal_dht_get(a.d, key, T0, get_cb, &c) == SHOAL_OK && c.calls == 0);
    CHECK(shoal_dht_tick(a.d, T0) == T0 + 100 || c.calls == 1);
    shoal_dht_tick(a.d, T0 + 1);
    CHECK(c.calls == 1 && c.status == SHOAL_ERR_NOTFOUND);
    /* our own value is found without the network */
    uint8_t v[64];
    size_t n = toy_value(v, 3, 1, T0 + 10000, 0, 8);
    cbrec pc = {0};
    CHECK(shoal_dht_put(a.d, key, v, n, T0, put_cb, &pc) == SHOAL_OK && pc.calls == 0);
    shoal_dht_tick(a.d, T0 + 2);
    CHECK(pc.calls == 1 && pc.status == SHOAL_OK && pc.n == 1);
    memset(&c, 0, sizeof c);
    CHECK(shoal_dht_get(a.d, key, T0 + 3, get_cb, &c) == SHOAL_OK);
    shoal_dht_tick(a.d, T0 + 3);
    CHECK(c.calls == 1 && c.status == SHOAL_OK && c.n == 1 && c.vals[0].meta.seq == 1);
    /* put refuses what the validator refuses */
    CHECK(shoal_dht_put(a.d, key, (const uint8_t *)"bad", 3, T0, put_cb, &pc) == SHOAL_ERR_ARG);
    /* max_ops, then destroy cancels what runs */
    char f[SHOAL_ADDR_MAX];
    uint8_t fid[32];
    fake_peer(a.id, -1, f, fid);
    learn(a.d, f, T0);
    cbrec *many = calloc(64, sizeof *many);
    int started = 0;
    for (int i = 0; i < 64; i++)
        started += shoal_dht_find_node(a.d, key, T0 + 4, find_cb, &many[i]) == SHOAL_OK;
    CHECK(started == 64);
    cbrec extra = {0};
    CHECK(shoal_dht_find_node(a.d, key, T0 + 4, find_cb, &extra) == SHOAL_ERR_BUSY);
    shoal_dht_destroy(&a.d);
    int cancelled = 0;
    for (int i = 0; i < 64; i++)
        cancelled += many[i].calls == 1 && many[i].status == SHOAL_ERR_CANCELLED;
    CHECK(cancelled == 64 && extra.calls == 0);
    free(many);
}

/* A flood of junk and of valid but unwanted records: memory stays capped. */
static void test_flood(void)
{
    shoal_dht_params p = shoal_dht_params_default();
    p.validate = shoal_record_dht_validate;
    p.max_keys = 64;
    p.max_records_per_key = 16;
    p.max_store_bytes = 256 * 1024;
    node a;
    node_make(&a, &p, 1, 51);
    int64_t now = T0;
    uint8_t junk[SHOAL_WIRE_VALUE_MAX];
    uint64_t mem_mid = 0;
    for (int i = 0; i < 40000; i++) {
        shoal_wire_header req, rep;
        static const uint16_t ops[] = {SHOAL_OP_PING, SHOAL_OP_FIND_NODE, SHOAL_OP_FIND_VALUE,
                                       SHOAL_OP_STORE, SHOAL_OP_INFO, 999};
        shoal_wire_header_init(&req, ops[rnd64() % 6], 1 + rnd64());
        req.has = SHOAL_WIRE_HAS_TARGET;
        rnd_bytes(req.target, 32);
        if (rnd64() % 2) { /* a fresh, well-formed address every time */
            char addr[SHOAL_ADDR_MAX];
            uint8_t pk[32];
            rnd_bytes(pk, 32);
            make_addr(addr, pk, (uint32_t)i, NULL);
            req.has |= SHOAL_WIRE_HAS_ADDR;
            snprintf(req.addr, sizeof req.addr, "%s", addr);
        }
        req.nvalues = (uint32_t)(rnd64() % 4);
        if (req.nvalues)
            req.has |= SHOAL_WIRE_HAS_VALUES;
        for (uint32_t j = 0; j < req.nvalues; j++) {
            uint32_t len = (uint32_t)(rnd64() % sizeof junk);
            rnd_bytes(junk, len);
            if (len)
                junk[0] = SHOAL_DHT_TAG_VALUE;
            req.values[j].ptr = junk;
            req.values[j].len = len;
        }
        shoal_dht_receive_request(a.d, &req, now, &rep);
        /* and replies nobody asked for */
        shoal_wire_reply_init(&rep, &req);
        shoal_dht_receive_reply(a.d, req.addr, &rep, now);
        shoal_dht_msg m;
        while (shoal_dht_next_outgoing(a.d, &m))
            ; /* pings to the fake requesters: never answered */
        if (i % 100 == 0) {
            now += 50;
            shoal_dht_tick(a.d, now);
        }
        if (i == 20000)
            mem_mid = stats(a.d).mem_bytes;
    }
    shoal_dht_stats s = stats(a.d);
    CHECK(s.pending <= p.max_verify && s.contacts == 0 && s.records == 0);
    CHECK_MSG(s.mem_bytes < 64 * 1024, "%llu bytes after junk", (unsigned long long)s.mem_bytes);
    CHECK(s.mem_bytes <= mem_mid + 8 * 1024);

    /* valid records: 400 models (keys), 40 servers on one key */
    shoal_identity *ids[40];
    for (int i = 0; i < 40; i++) {
        uint8_t seed[32] = {0};
        seed[0] = (uint8_t)i;
        seed[1] = 0xf1;
        CHECK(shoal_identity_from_seed(&ids[i], seed) == SHOAL_OK);
    }
    int stored = 0;
    for (int i = 0; i < 440; i++) {
        shoal_identity *id = ids[i % 40];
        shoal_record r;
        memset(&r, 0, sizeof r);
        char hex[65];
        shoal_identity_hex(shoal_identity_public_key(id), hex);
        snprintf(r.addr, sizeof r.addr, "shoal://10.1.0.%d:4000/%s", i % 40, hex);
        if (i < 400) { /* 400 models */
            memset(r.model_hash, 0, 32);
            memcpy(r.model_hash, &i, sizeof i);
        } else {
            memset(r.model_hash, 0xee, 32);
        }
        r.nblocks = 4;
        r.span_end = 4;
        r.state = SHOAL_RECORD_ONLINE;
        snprintf(r.software, sizeof r.software, "shoal");
        r.nadapters = 8;
        for (int j = 0; j < 8; j++)
            memset(r.adapters[j], 'a' + j, 60);
        r.seq = 1;
        r.expires_ms = now + 300000;
        uint8_t buf[SHOAL_RECORD_MAX], key[32];
        size_t len;
        CHECK(shoal_record_sign(&r, id, buf, sizeof buf, &len) == SHOAL_OK);
        shoal_record_block_key(r.model_hash, 0, key);
        stored += store_req(a.d, key, buf, len, now, SHOAL_DHT_TAG_VALUE) == 0;
    }
    s = stats(a.d);
    CHECK(s.keys <= 64 && s.store_bytes <= 256 * 1024 && stored > 64);
    CHECK_MSG(s.mem_bytes < 512 * 1024, "%llu bytes after records", (unsigned long long)s.mem_bytes);
    uint8_t key[32], mh[32];
    memset(mh, 0xee, 32);
    shoal_record_block_key(mh, 0, key);
    CHECK(shoal_dht_local_values(a.d, key, now, NULL, NULL) <= 16);
    printf("flood: %llu bytes held after junk and %d records (%u keys, %u records)\n",
           (unsigned long long)s.mem_bytes, 440, s.keys, s.records);
    for (int i = 0; i < 40; i++)
        shoal_identity_destroy(&ids[i]);
    shoal_dht_destroy(&a.d);
}

/* ------------------------------------------------------------------ */
/* The simulator                                                       */

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
    uint8_t seed[32];
    int alive;
    int boot_calls, boot_status;
    int64_t next_tick;
} simnode;

typedef struct sim {
    simnode *n;
    int N;
    ev *heap;
    size_t nh, caph;
    uint64_t seq;
    int64_t now;
    int *map;          /* address hash table: node index or -1 */
    size_t mapcap;
    uint32_t loss_ppm;
    uint64_t msgs, lost, undeliverable;
    uint64_t wire_errors; /* messages that failed to encode or decode: none may */
    /* forged replies: injected for requests from forge_node */
    int forge_node;
    uint64_t forged;
    char bogus[8][SHOAL_ADDR_MAX];
    int nbogus;
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
        s->caph = s->caph ? 2 * s->caph : 4096;
        s->heap = realloc(s->heap, s->caph * sizeof *s->heap);
    }
    ev e = {t, s->seq++, kind, to, from, NULL, (uint32_t)len};
    if (len) {
        e.frame = malloc(len);
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

static int64_t latency(void)
{
    return 10 + (int64_t)(rnd64() % 91);
}

static int lost(sim *s)
{
    if (rnd64() % 1000000 < s->loss_ppm) {
        s->lost++;
        return 1;
    }
    return 0;
}

static void forge(sim *s, int from, const shoal_dht_msg *m);

/* Hand node i's requests to the network. */
static void sim_send(sim *s, int i, const shoal_dht_msg *m)
{
    size_t len;
    if (shoal_wire_encode(&m->header, s->frame, sizeof s->frame, &len) != SHOAL_OK) {
        s->wire_errors++;
        return;
    }
    s->msgs++;
    int to = map_find(s, m->to);
    if (to < 0)
        s->undeliverable++; /* a forged address: CURVE would fail */
    else if (!lost(s))
        push(s, s->now + latency(), EV_REQ, to, i, s->frame, len);
    if (i == s->forge_node)
        forge(s, i, m); /* (reuses s->frame) */
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
        return;
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
            push(s, s->now + latency(), EV_REP, e->from, e->to, s->frame, len);
    } else {
        const char *from = e->from >= 0 ? s->n[e->from].addr : s->bogus[0];
        shoal_dht_receive_reply(n->d, from, &h, s->now);
    }
    pump(s, e->to);
}

static void run_until(sim *s, int64_t t)
{
    while (s->nh && s->heap[0].t <= t) {
        ev e = pop(s);
        s->now = e.t;
        deliver(s, &e);
        free(e.frame);
    }
    if (s->now < t)
        s->now = t;
}

/* Run until *count reaches want (or the time limit). */
static void run_for(sim *s, const int *count, int want, int64_t limit_ms)
{
    int64_t end = s->now + limit_ms;
    while (*count < want && s->nh && s->heap[0].t <= end) {
        ev e = pop(s);
        s->now = e.t;
        deliver(s, &e);
        free(e.frame);
    }
}

static void sim_init(sim *s, int N)
{
    memset(s, 0, sizeof *s);
    s->N = N;
    s->n = calloc((size_t)N, sizeof *s->n);
    s->mapcap = (size_t)N * 4;
    s->map = malloc(s->mapcap * sizeof *s->map);
    for (size_t i = 0; i < s->mapcap; i++)
        s->map[i] = -1;
    s->now = T0;
    s->loss_ppm = 10000; /* 1 % */
    s->forge_node = -1;
    for (int i = 0; i < N; i++) {
        simnode *n = &s->n[i];
        uint8_t pk[32], sk[64];
        memset(n->seed, 0, 32);
        memcpy(n->seed, &i, sizeof i);
        n->seed[31] = 0x5e;
        crypto_sign_seed_keypair(pk, sk, n->seed);
        make_addr(n->addr, pk, (uint32_t)i + 1, n->id);
        shoal_dht_params p = shoal_dht_params_default();
        memcpy(p.self_id, n->id, 32);
        memcpy(p.self_addr, n->addr, strlen(n->addr) + 1);
        memcpy(p.seed, n->seed, 32);
        p.seed[30] = 0x11;
        p.validate = shoal_record_dht_validate;
        p.request_timeout_ms = 1000;
        n->d = NULL;
        CHECK(shoal_dht_new(&p, &n->d) == SHOAL_OK);
        n->alive = 1;
        n->next_tick = INT64_MAX;
        size_t h = fnv(n->addr) % s->mapcap;
        while (s->map[h] >= 0)
            h = (h + 1) % s->mapcap;
        s->map[h] = i;
    }
}

static void sim_free(sim *s)
{
    for (int i = 0; i < s->N; i++)
        shoal_dht_destroy(&s->n[i].d);
    while (s->nh)
        free(pop(s).frame);
    free(s->heap);
    free(s->map);
    free(s->n);
}

/* The k live nodes closest to target but `except` (a lookup never
 * returns the node that runs it), by brute force. */
static int true_closest(const sim *s, const uint8_t *target, int k, int except, int *out)
{
    int n = 0;
    for (int i = 0; i < s->N; i++) {
        if (!s->n[i].alive || i == except)
            continue;
        if (n == k && shoal_dht_cmp_distance(target, s->n[i].id, s->n[out[n - 1]].id) >= 0)
            continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && shoal_dht_cmp_distance(target, s->n[i].id, s->n[out[j - 1]].id) < 0) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = i;
    }
    return n;
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
    int done, status;
    uint8_t target[32];
    size_t n;
    uint8_t ids[32][32];
    shoal_dht_lookup_info info;
    int from;
    int *counter;
} lookup;

static void lookup_cb(void *ctx, int status, const shoal_dht_contact *nodes, size_t n,
                      const shoal_dht_lookup_info *info)
{
    lookup *l = ctx;
    l->done++;
    l->status = status;
    l->n = n;
    for (size_t i = 0; i < n; i++)
        memcpy(l->ids[i], nodes[i].id, 32);
    l->info = *info;
    (*l->counter)++;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Start `count` lookups of random targets from random live nodes at once;
 * check them against brute force. */
static void sim_lookups(sim *s, int count, const char *what, double min_overlap,
                        double min_closest, int max_hops)
{
    lookup *ls = calloc((size_t)count, sizeof *ls);
    uint32_t *hops = calloc((size_t)count, sizeof *hops);
    int done = 0;
    for (int q = 0; q < count; q++) {
        int from;
        do
            from = (int)(rnd64() % (uint64_t)s->N);
        while (!s->n[from].alive);
        rnd_bytes(ls[q].target, 32);
        ls[q].counter = &done;
        ls[q].from = from;
        CHECK(shoal_dht_find_node(s->n[from].d, ls[q].target, s->now, lookup_cb, &ls[q]) == 0);
        pump(s, from);
    }
    run_for(s, &done, count, 60000);
    CHECK_MSG(done == count, "%s: %d of %d lookups ended", what, done, count);
    double overlap = 0, queries = 0;
    int closest = 0, ok = 0;
    uint32_t maxh = 0;
    for (int q = 0; q < count; q++) {
        lookup *l = &ls[q];
        int want[SHOAL_DHT_K];
        int nw = true_closest(s, l->target, SHOAL_DHT_K, l->from, want);
        int hit = 0;
        for (int a = 0; a < nw; a++)
            for (size_t b = 0; b < l->n; b++)
                if (memcmp(s->n[want[a]].id, l->ids[b], 32) == 0) {
                    hit++;
                    break;
                }
        overlap += (double)hit / nw;
        closest += l->n > 0 && memcmp(l->ids[0], s->n[want[0]].id, 32) == 0;
        ok += l->done == 1 && l->status == SHOAL_OK;
        hops[q] = l->info.hops;
        maxh = l->info.hops > maxh ? l->info.hops : maxh;
        queries += l->info.queries;
    }
    qsort(hops, (size_t)count, sizeof *hops, cmp_u32);
    overlap /= count;
    printf("%s: %d lookups, %d ok, k-closest overlap %.4f, closest found %.4f, hops median %u "
           "max %u, %.1f requests per lookup\n",
           what, count, ok, overlap, (double)closest / count, hops[count / 2], maxh,
           queries / count);
    CHECK(ok == count);
    CHECK_MSG(overlap >= min_overlap, "%s: overlap %.4f", what, overlap);
    CHECK_MSG((double)closest / count >= min_closest, "%s: closest %.4f", what,
              (double)closest / count);
    CHECK_MSG((int)maxh <= max_hops, "%s: %u hops", what, maxh);
    CHECK(queries / count <= 80);
    free(ls);
    free(hops);
}

/* Forged replies for every FIND_NODE node forge_node sends: one with the
 * right request id from another address, pointing at bogus nodes, and
 * one from the right address with a wrong id. Both arrive first. */
static void forge(sim *s, int from, const shoal_dht_msg *m)
{
    if (m->header.op != SHOAL_OP_FIND_NODE)
        return;
    shoal_wire_header rep;
    shoal_wire_reply_init(&rep, &m->header);
    uint8_t vals[8][SHOAL_ADDR_MAX + 1];
    rep.has |= SHOAL_WIRE_HAS_VALUES;
    for (int i = 0; i < s->nbogus; i++) {
        vals[i][0] = SHOAL_DHT_TAG_CONTACT;
        memcpy(vals[i] + 1, s->bogus[i], strlen(s->bogus[i]));
        rep.values[i].ptr = vals[i];
        rep.values[i].len = (uint32_t)strlen(s->bogus[i]) + 1;
    }
    rep.nvalues = (uint32_t)s->nbogus;
    size_t len;
    CHECK(shoal_wire_encode(&rep, s->frame, sizeof s->frame, &len) == SHOAL_OK);
    int other = (from + 1) % s->N; /* a real node, but not the one asked */
    push(s, s->now + 1, EV_REP, from, other, s->frame, len);
    rep.request_id += 1;
    int to = map_find(s, m->to);
    if (to >= 0) {
        CHECK(shoal_wire_encode(&rep, s->frame, sizeof s->frame, &len) == SHOAL_OK);
        push(s, s->now + 1, EV_REP, from, to, s->frame, len);
        s->forged++;
    }
    s->forged++;
}

static void sim_forged(sim *s)
{
    int a;
    do
        a = (int)(rnd64() % (uint64_t)s->N);
    while (!s->n[a].alive);
    const int count = 20;
    lookup ls[20];
    memset(ls, 0, sizeof ls);
    int done = 0;
    shoal_dht_stats before = stats(s->n[a].d);
    s->forge_node = a;
    s->forged = 0;
    for (int q = 0; q < count; q++) {
        rnd_bytes(ls[q].target, 32);
        /* bogus contacts that look closer than anything real */
        s->nbogus = 8;
        for (int b = 0; b < 8; b++) {
            uint8_t id[32];
            do {
                uint8_t pk[32];
                rnd_bytes(pk, 32);
                make_addr(s->bogus[b], pk, 0xfffff0u + (uint32_t)b, id);
            } while (cpl(id, ls[q].target) < 12);
        }
        ls[q].counter = &done;
        CHECK(shoal_dht_find_node(s->n[a].d, ls[q].target, s->now, lookup_cb, &ls[q]) == 0);
        pump(s, a);
        run_for(s, &done, q + 1, 60000);
    }
    s->forge_node = -1;
    shoal_dht_stats after = stats(s->n[a].d);
    CHECK(done == count);
    CHECK_MSG(after.replies_ignored - before.replies_ignored == s->forged,
              "%llu ignored, %llu forged",
              (unsigned long long)(after.replies_ignored - before.replies_ignored),
              (unsigned long long)s->forged);
    double overlap = 0;
    int bogus_seen = 0;
    for (int q = 0; q < count; q++) {
        int want[SHOAL_DHT_K];
        int nw = true_closest(s, ls[q].target, SHOAL_DHT_K, a, want);
        int hit = 0;
        for (size_t b = 0; b < ls[q].n; b++) {
            int real = 0;
            for (int w = 0; w < nw; w++)
                if (memcmp(s->n[want[w]].id, ls[q].ids[b], 32) == 0) {
                    hit++;
                    real = 1;
                }
            if (!real) { /* not among the true closest: is it a node at all? */
                int any = 0;
                for (int i = 0; i < s->N && !any; i++)
                    any = memcmp(s->n[i].id, ls[q].ids[b], 32) == 0;
                bogus_seen += !any;
            }
        }
        overlap += (double)hit / nw;
    }
    overlap /= count;
    printf("forged: %llu forged replies to %d lookups, all ignored; overlap %.4f\n",
           (unsigned long long)s->forged, count, overlap);
    CHECK(bogus_seen == 0);
    CHECK(overlap >= 0.95);
}

/* ---- records through the swarm ---- */

#define SIM_BLOCKS 12
#define SIM_SERVERS 24

typedef struct putres {
    int done, status;
    size_t stored;
    int *counter;
} putres;

static void sim_put_cb(void *ctx, int status, size_t stored, const shoal_dht_lookup_info *info)
{
    (void)info;
    putres *r = ctx;
    r->done++;
    r->status = status;
    r->stored = stored;
    (*r->counter)++;
}

typedef struct getres {
    int done, status;
    int nowners;
    uint8_t owners[64][32];
    uint64_t seq[64];
    uint32_t state[64];
    int bad;
    int *counter;
} getres;

static void sim_get_cb(void *ctx, int status, const shoal_dht_value *v, size_t n,
                       const shoal_dht_lookup_info *info)
{
    (void)info;
    getres *g = ctx;
    g->done++;
    g->status = status;
    g->nowners = 0;
    for (size_t i = 0; i < n && i < 64; i++) {
        shoal_record r;
        if (shoal_record_decode(&r, v[i].data, v[i].len) != SHOAL_OK ||
            memcmp(r.peer_id, v[i].meta.owner, 32) != 0) {
            g->bad++;
            continue;
        }
        memcpy(g->owners[g->nowners], r.peer_id, 32);
        g->seq[g->nowners] = r.seq;
        g->state[g->nowners] = r.state;
        g->nowners++;
    }
    (*g->counter)++;
}

static uint8_t model_hash[32];

static void server_span(int s, uint32_t *start, uint32_t *end)
{
    *start = (uint32_t)((s * 5) % (SIM_BLOCKS - 3));
    *end = *start + 4;
}

static int server_node(int s)
{
    return 1 + s; /* servers are nodes 1..SIM_SERVERS */
}

static size_t make_record(sim *s, int srv, uint32_t block, uint64_t seq, uint32_t state,
                          int64_t exp, uint8_t *out)
{
    simnode *n = &s->n[server_node(srv)];
    shoal_identity *id = NULL;
    CHECK(shoal_identity_from_seed(&id, n->seed) == SHOAL_OK);
    shoal_record r;
    memset(&r, 0, sizeof r);
    snprintf(r.addr, sizeof r.addr, "%s", n->addr);
    snprintf(r.model, sizeof r.model, "sim");
    memcpy(r.model_hash, model_hash, 32);
    r.nblocks = SIM_BLOCKS;
    server_span(srv, &r.span_start, &r.span_end);
    r.block = block;
    r.state = state;
    r.throughput = 10.0 + srv;
    r.free_tokens = 4096;
    snprintf(r.software, sizeof r.software, "shoal 0.1.0");
    r.seq = seq;
    r.expires_ms = exp;
    size_t len = 0;
    CHECK(shoal_record_sign(&r, id, out, SHOAL_RECORD_MAX, &len) == SHOAL_OK);
    shoal_identity_destroy(&id);
    return len;
}

/* Does get result g hold exactly the servers of block b (alive ones)? */
static int get_matches(const sim *s, const getres *g, uint32_t b)
{
    int want = 0, found = 0;
    for (int srv = 0; srv < SIM_SERVERS; srv++) {
        uint32_t st, en;
        server_span(srv, &st, &en);
        if (b < st || b >= en)
            continue;
        want++;
        for (int i = 0; i < g->nowners; i++)
            if (memcmp(g->owners[i], s->n[server_node(srv)].id, 32) == 0)
                found++;
    }
    return g->status == SHOAL_OK && g->bad == 0 && found == want && g->nowners == want;
}

static double sim_gets(sim *s, int count, const char *what)
{
    getres *gs = calloc((size_t)count, sizeof *gs);
    uint32_t *blk = calloc((size_t)count, sizeof *blk);
    int done = 0;
    for (int q = 0; q < count; q++) {
        int from;
        do
            from = (int)(rnd64() % (uint64_t)s->N);
        while (!s->n[from].alive);
        blk[q] = (uint32_t)(rnd64() % SIM_BLOCKS);
        uint8_t key[32];
        shoal_record_block_key(model_hash, blk[q], key);
        gs[q].counter = &done;
        CHECK(shoal_dht_get(s->n[from].d, key, s->now, sim_get_cb, &gs[q]) == SHOAL_OK);
        pump(s, from);
    }
    run_for(s, &done, count, 60000);
    int good = 0;
    for (int q = 0; q < count; q++)
        good += gs[q].done == 1 && get_matches(s, &gs[q], blk[q]);
    printf("%s: %d of %d gets returned exactly the block's servers\n", what, good, count);
    free(gs);
    free(blk);
    return (double)good / count;
}

typedef struct held {
    const uint8_t *owner;
    uint64_t seq;
} held;

static void held_fn(void *ctx, const shoal_dht_value *v)
{
    held *h = ctx;
    if (memcmp(v->meta.owner, h->owner, 32) == 0)
        h->seq = v->meta.seq;
}

/* The sequence number d holds for owner under key (0: none). */
static uint64_t held_seq(shoal_dht *d, const uint8_t *key, const uint8_t *owner, int64_t now)
{
    held h = {owner, 0};
    shoal_dht_local_values(d, key, now, held_fn, &h);
    return h.seq;
}

static void sim_records(sim *s)
{
    rnd_bytes(model_hash, 32);
    int64_t exp = s->now + 5 * 60 * 1000;
    putres pr[SIM_SERVERS * 4];
    memset(pr, 0, sizeof pr);
    int done = 0, nput = 0;
    for (int srv = 0; srv < SIM_SERVERS; srv++) {
        uint32_t st, en;
        server_span(srv, &st, &en);
        for (uint32_t b = st; b < en; b++) {
            uint8_t rec[SHOAL_RECORD_MAX], key[32];
            size_t len = make_record(s, srv, b, 1, SHOAL_RECORD_ONLINE, exp, rec);
            shoal_record_block_key(model_hash, b, key);
            pr[nput].counter = &done;
            int node = server_node(srv);
            CHECK(shoal_dht_put(s->n[node].d, key, rec, len, s->now, sim_put_cb, &pr[nput]) == 0);
            pump(s, node);
            nput++;
        }
    }
    run_for(s, &done, nput, 60000);
    int ok = 0;
    size_t minstored = 100, sum = 0;
    for (int i = 0; i < nput; i++) {
        ok += pr[i].done == 1 && pr[i].status == SHOAL_OK;
        minstored = pr[i].stored < minstored ? pr[i].stored : minstored;
        sum += pr[i].stored;
    }
    printf("records: %d puts, %d ok, stored on %.1f nodes on average (min %zu)\n", nput, ok,
           (double)sum / nput, minstored);
    CHECK(ok == nput && minstored >= 10);
    CHECK(sim_gets(s, 100, "records") >= 0.98);

    /* server 0 goes OFFLINE with seq 2 for its first block: readers see it */
    uint32_t b0, e0;
    server_span(0, &b0, &e0);
    uint8_t rec[SHOAL_RECORD_MAX], key[32];
    shoal_record_block_key(model_hash, b0, key);
    size_t len = make_record(s, 0, b0, 2, SHOAL_RECORD_OFFLINE, exp, rec);
    putres p2 = {0};
    done = 0;
    p2.counter = &done;
    int node0 = server_node(0);
    CHECK(shoal_dht_put(s->n[node0].d, key, rec, len, s->now, sim_put_cb, &p2) == SHOAL_OK);
    pump(s, node0);
    run_for(s, &done, 1, 60000);
    CHECK(p2.status == SHOAL_OK && p2.stored >= 10);
    getres g = {0};
    done = 0;
    g.counter = &done;
    int reader = s->N - 1;
    CHECK(shoal_dht_get(s->n[reader].d, key, s->now, sim_get_cb, &g) == SHOAL_OK);
    pump(s, reader);
    run_for(s, &done, 1, 60000);
    int seen2 = 0;
    for (int i = 0; i < g.nowners; i++)
        if (memcmp(g.owners[i], s->n[node0].id, 32) == 0)
            seen2 = g.seq[i] == 2 && g.state[i] == SHOAL_RECORD_OFFLINE;
    CHECK(seen2 && get_matches(s, &g, b0));

    /* replaying the older record: every storing node refuses it */
    len = make_record(s, 0, b0, 1, SHOAL_RECORD_ONLINE, exp, rec);
    putres p3 = {0};
    done = 0;
    p3.counter = &done;
    CHECK(shoal_dht_put(s->n[node0].d, key, rec, len, s->now, sim_put_cb, &p3) == SHOAL_OK);
    pump(s, node0);
    run_for(s, &done, 1, 60000);
    /* (a holder that lost the newer STORE may take it) */
    CHECK_MSG(p3.stored <= SHOAL_DHT_K - p2.stored &&
              (p3.stored > 0 || p3.status == SHOAL_ERR_RANGE),
              "stale put: %d, %zu stored", p3.status, p3.stored);
    /* and readers still see the newer one */
    memset(&g, 0, sizeof g);
    done = 0;
    g.counter = &done;
    CHECK(shoal_dht_get(s->n[reader].d, key, s->now, sim_get_cb, &g) == SHOAL_OK);
    pump(s, reader);
    run_for(s, &done, 1, 60000);
    seen2 = 0;
    for (int i = 0; i < g.nowners; i++)
        if (memcmp(g.owners[i], s->n[node0].id, 32) == 0)
            seen2 = g.seq[i] == 2;
    CHECK(seen2);

    /* forged, far-future, expired and misplaced records sent straight to
     * the nodes that hold the key */
    int holders[SHOAL_DHT_K];
    int nh = true_closest(s, key, SHOAL_DHT_K, -1, holders);
    int x = 1; /* another server of block b0 */
    for (;; x++) {
        uint32_t st, en;
        server_span(x, &st, &en);
        if (st <= b0 && b0 + 1 < en)
            break;
    }
    uint8_t bad[5][SHOAL_RECORD_MAX];
    size_t blen[5];
    blen[0] = make_record(s, x, b0, 9, SHOAL_RECORD_ONLINE, exp, bad[0]);
    bad[0][blen[0] - 1] ^= 1;                                          /* signature */
    blen[1] = make_record(s, x, b0, 9, SHOAL_RECORD_ONLINE, s->now + 3600 * 1000, bad[1]);
    blen[2] = make_record(s, x, b0, 9, SHOAL_RECORD_ONLINE, s->now - 1, bad[2]);
    blen[3] = make_record(s, x, b0 + 1, 9, SHOAL_RECORD_ONLINE, exp, bad[3]); /* misplaced */
    blen[4] = make_record(s, 0, b0, 1, SHOAL_RECORD_ONLINE, exp, bad[4]);     /* stale */
    static const int want_err[5] = {SHOAL_ERR_AUTH, SHOAL_ERR_RANGE, SHOAL_ERR_RANGE,
                                    SHOAL_ERR_FORMAT, SHOAL_ERR_RANGE};
    int refused = 0, tried = 0;
    for (int h = 0; h < nh; h++) {
        shoal_dht *d = s->n[holders[h]].d;
        size_t before = shoal_dht_local_values(d, key, s->now, NULL, NULL);
        for (int v = 0; v < 5; v++) {
            uint8_t val[SHOAL_RECORD_MAX + 1];
            val[0] = SHOAL_DHT_TAG_VALUE;
            memcpy(val + 1, bad[v], blen[v]);
            shoal_wire_header req, rep;
            shoal_wire_header_init(&req, SHOAL_OP_STORE, 1000 + (uint64_t)v);
            req.has = SHOAL_WIRE_HAS_TARGET | SHOAL_WIRE_HAS_VALUES;
            memcpy(req.target, key, 32);
            req.nvalues = 1;
            req.values[0].ptr = val;
            req.values[0].len = (uint32_t)blen[v] + 1;
            if (v == 4 && held_seq(d, key, s->n[node0].id, s->now) < 2)
                continue; /* it missed the newer STORE: nothing to be stale against */
            tried++;
            if (shoal_dht_receive_request(d, &req, s->now, &rep) == SHOAL_OK &&
                rep.op == SHOAL_OP_ERROR && (int)rep.error == want_err[v])
                refused++;
        }
        CHECK(shoal_dht_local_values(d, key, s->now, NULL, NULL) == before);
    }
    printf("records: %d bad records sent to the key's %d holders, %d refused\n", tried, nh,
           refused);
    CHECK(refused == tried && tried >= 4 * nh);
}

static void sim_churn(sim *s)
{
    int killed = 0;
    while (killed < s->N / 10) {
        int v = (int)(rnd64() % (uint64_t)s->N);
        if (v == 0 || v <= SIM_SERVERS || v == s->N - 1 || !s->n[v].alive)
            continue;
        s->n[v].alive = 0;
        killed++;
    }
    sim_lookups(s, 300, "churn (10 % gone, at once)", 0.90, 0.95, 10);
    CHECK(sim_gets(s, 100, "churn gets") >= 0.95);
    run_until(s, s->now + 120000);
    sim_lookups(s, 300, "churn (after 2 min)", 0.93, 0.97, 10);
}

static void test_sim(void)
{
    int N = 2000;
    const char *env = getenv("SHOAL_DHT_SIM_NODES");
    if (env && atoi(env) >= 100)
        N = atoi(env);
    clock_t c0 = clock();
    sim *s = calloc(1, sizeof *s);
    sim_init(s, N);
    /* node 0 is up first; every other joins through it and two earlier nodes */
    pump(s, 0);
    for (int i = 1; i < N; i++) {
        run_until(s, s->now + 10);
        const char *seeds[3] = {s->n[0].addr, NULL, NULL};
        if (i > 2) {
            seeds[1] = s->n[1 + rnd64() % (uint64_t)(i - 1)].addr;
            seeds[2] = s->n[1 + rnd64() % (uint64_t)(i - 1)].addr;
        }
        CHECK(shoal_dht_bootstrap(s->n[i].d, seeds, 3, s->now, boot_cb, &s->n[i]) == SHOAL_OK);
        pump(s, i);
    }
    run_until(s, s->now + 120000);
    int booted = 0, neighbour = 0;
    uint64_t mem = 0, contacts = 0;
    int empty = 0;
    for (int i = 1; i < N; i++) {
        booted += s->n[i].boot_calls == 1 && s->n[i].boot_status == SHOAL_OK;
        if (s->n[i].boot_calls != 1 || s->n[i].boot_status != SHOAL_OK)
            printf("node %d: bootstrap %d calls, status %d, %u contacts\n", i, s->n[i].boot_calls,
                   s->n[i].boot_status, stats(s->n[i].d).contacts);
        empty += stats(s->n[i].d).contacts == 0;
    }
    CHECK(empty == 0);
    for (int i = 0; i < N; i++) {
        /* the node's true nearest neighbour is in its table */
        int best = -1;
        for (int j = 0; j < N; j++)
            if (j != i && (best < 0 || shoal_dht_cmp_distance(s->n[i].id, s->n[j].id,
                                                              s->n[best].id) < 0))
                best = j;
        neighbour += table_has(s->n[i].d, s->n[best].id);
        shoal_dht_stats st = stats(s->n[i].d);
        mem += st.mem_bytes;
        contacts += st.contacts;
    }
    printf("bootstrap: %d nodes, %d of %d joined, %d know their nearest neighbour; "
           "%.1f contacts and %.1f KiB per node; %llu messages (%llu lost)\n",
           N, booted, N - 1, neighbour, (double)contacts / N, (double)mem / N / 1024,
           (unsigned long long)s->msgs, (unsigned long long)s->lost);
    printf("bootstrap: %.1f s of CPU\n", (double)(clock() - c0) / CLOCKS_PER_SEC);
    CHECK(booted == N - 1);
    CHECK(neighbour >= N * 99 / 100);
    sim_lookups(s, 300, "lookups", 0.97, 0.98, 8);
    sim_forged(s);
    sim_records(s);
    sim_churn(s);
    CHECK(s->wire_errors == 0);
    printf("simulation: %.1f s of CPU, %.0f s simulated, %llu messages\n",
           (double)(clock() - c0) / CLOCKS_PER_SEC, (double)(s->now - T0) / 1000,
           (unsigned long long)s->msgs);
    sim_free(s);
    free(s);
}


int main(void)
{
    if (sodium_init() < 0)
        return 1;
    if (getenv("SHOAL_DHT_SIM_SEED")) /* to explore other runs; the test pins one */
        rng_state ^= strtoull(getenv("SHOAL_DHT_SIM_SEED"), NULL, 0) * 0x9e3779b97f4a7c15ull;
    test_params();
    test_replies();
    test_buckets();
    test_store();
    test_reply_size();
    test_requests_and_callbacks();
    test_flood();
    test_sim();
    return check_done();
}
