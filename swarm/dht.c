/*
 * The Kademlia core (see dht.h for the protocol and the trust rules).
 *
 * Layout. The routing table is 256 buckets indexed by the common prefix
 * length with our id; a bucket's arrays (k live contacts, least recently
 * seen first, and the replacement cache, newest last) are allocated when
 * the bucket first gets a contact, so a node in a swarm of N holds about
 * k * log2(N) contacts and little else. A contact is one allocation holding
 * its wire form ([tag][address]), so replies point at it directly.
 *
 * Requests live in one array of pending entries in creation order: it is
 * at once the outbox (entries not yet handed out) and the table of
 * requests in flight (matched by request id and address, timed out by
 * deadline). Operations (find, bootstrap, refresh, get, put) own a
 * shortlist of candidates sorted by distance; a pending entry points back
 * at its operation until the operation ends, after which late replies
 * still refresh the routing table but reach no operation.
 *
 * The store is an array of keys sorted by key (binary search), each with a
 * small array of records. Every allocation goes through dht_alloc, which
 * counts bytes, so tests can hold the DHT to its caps.
 *
 * Every count a peer can raise is capped by a parameter; no path asserts
 * on peer data.
 */
#include "swarm/dht.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "proto/identity.h"

#define NBUCKETS 256
#define BAN_SLOTS 64
#define MAX_SEEDS 64
#define REFRESH_PARALLEL 2
#define STARVED_RETRY_MS 100
#define MAX_SLEEP_MS 60000
#define REPLY_RECORDS_MAX 24           /* values in a FIND_VALUE reply */
#define REPLY_BYTES_MAX (56 * 1024)    /* value bytes in any reply */
#define VALUE_OVERHEAD 3               /* msgpack bin header of a value */
#define LOOKUP_TRIES 2                 /* requests to one candidate per lookup */

/* ------------------------------------------------------------------ */
/* Types                                                               */

typedef struct contact {
    uint8_t id[SHOAL_DHT_ID_BYTES];
    int64_t last_seen;
    uint16_t fails;    /* requests in a row that got no answer */
    uint16_t strikes;  /* malformed replies */
    uint16_t wlen;     /* bytes of wire: tag + address, without the NUL */
    uint8_t wire[];    /* [SHOAL_DHT_TAG_CONTACT] address NUL */
} contact;

typedef struct bucket {
    contact **live; /* k slots, [0] least recently seen */
    contact **repl; /* `replacements` slots, [nrepl - 1] newest */
    uint8_t n, nrepl;
    uint8_t pinging; /* an eviction PING to live[0] is in flight */
    int64_t touched; /* last lookup into this bucket's range */
} bucket;

enum { P_LOOKUP, P_STORE, P_PING_EVICT, P_PING_VERIFY };

struct op;

typedef struct pending {
    uint64_t rid;
    int64_t deadline;
    struct op *op; /* NULL once the operation ended (or for pings) */
    uint8_t kind;
    uint8_t sent;
    uint16_t wop;  /* wire op */
    uint8_t id[SHOAL_DHT_ID_BYTES];
    char *to;      /* address, owned */
} pending;

enum { OP_FIND, OP_BOOTSTRAP, OP_REFRESH, OP_GET, OP_PUT };
enum { C_NEW, C_INFLIGHT, C_DONE, C_FAILED };

typedef struct cand {
    uint8_t id[SHOAL_DHT_ID_BYTES];
    char *addr; /* owned */
    uint8_t state;
    uint8_t depth;
    uint8_t tries;  /* requests sent to it */
} cand;

typedef struct gval {
    shoal_dht_meta meta;
    uint8_t *data;
    size_t len;
} gval;

typedef struct op {
    int kind;
    uint8_t target[SHOAL_DHT_ID_BYTES];
    int phase;          /* put: 0 looking up, 1 storing */
    cand *c;            /* shortlist, closest first */
    uint32_t nc, capc;
    uint32_t inflight;
    shoal_dht_lookup_info info;
    shoal_dht_find_cb find_cb;
    shoal_dht_get_cb get_cb;
    shoal_dht_put_cb put_cb;
    void *ctx;
    /* get */
    gval *vals;
    uint32_t nvals, holders;
    /* put */
    uint8_t *value;     /* [SHOAL_DHT_TAG_VALUE] value */
    size_t vlen;
    uint32_t stored, store_pending;
    int first_err;
} op;

typedef struct srec {
    shoal_dht_meta meta;
    uint32_t wlen;
    uint8_t *wire;      /* [SHOAL_DHT_TAG_VALUE] value */
} srec;

typedef struct skey {
    uint8_t key[SHOAL_DHT_ID_BYTES];
    uint32_t n, cap;
    srec *r;
} skey;

typedef struct ban {
    uint8_t id[SHOAL_DHT_ID_BYTES];
    int64_t until;
} ban;

struct shoal_dht {
    shoal_dht_params p;
    int has_addr;
    uint64_t rng[4];
    uint64_t mem;
    bucket b[NBUCKETS];
    ban bans[BAN_SLOTS];
    uint32_t ban_next;

    pending *pend;
    uint32_t npend, cappend;
    uint32_t nverify;
    int starved;        /* an operation waits for a free pending slot */

    op **ops;
    uint32_t nops;
    uint32_t nrefresh;
    int destroying;

    skey **keys;
    uint32_t nkeys, nrecords;
    uint64_t store_bytes;
    int64_t store_next_expiry;

    char *seeds[MAX_SEEDS];
    uint32_t nseeds;
    int64_t boot_next;
    op *boot_op;        /* the running bootstrap lookup */
    int joining;        /* hold refreshes until the bootstrap lookup ends */

    shoal_dht_stats st;
};

/* ------------------------------------------------------------------ */
/* Memory (counted)                                                    */

#define ALLOC_HDR 16
_Static_assert(ALLOC_HDR >= sizeof(size_t) && ALLOC_HDR % alignof(max_align_t) == 0,
               "allocation header keeps alignment");

static void *dht_alloc(shoal_dht *d, size_t n)
{
    if (n > SIZE_MAX - ALLOC_HDR)
        return NULL;
    unsigned char *p = malloc(n + ALLOC_HDR);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof n);
    d->mem += n + ALLOC_HDR;
    return p + ALLOC_HDR;
}

static void *dht_calloc(shoal_dht *d, size_t n)
{
    void *p = dht_alloc(d, n);
    if (p)
        memset(p, 0, n);
    return p;
}

static void dht_free(shoal_dht *d, void *q)
{
    if (!q)
        return;
    unsigned char *p = (unsigned char *)q - ALLOC_HDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    d->mem -= n + ALLOC_HDR;
    free(p);
}

/* Grow-only resize keeping contents; NULL (and q untouched) on failure. */
static void *dht_realloc(shoal_dht *d, void *q, size_t old_n, size_t n)
{
    void *r = dht_alloc(d, n);
    if (!r)
        return NULL;
    if (q)
        memcpy(r, q, old_n < n ? old_n : n);
    dht_free(d, q);
    return r;
}

static char *dht_strndup(shoal_dht *d, const char *s, size_t n)
{
    char *r = dht_alloc(d, n + 1);
    if (r) {
        memcpy(r, s, n);
        r[n] = 0;
    }
    return r;
}

/* ------------------------------------------------------------------ */
/* Randomness (xoshiro256**, seeded by the caller)                     */

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rnd(shoal_dht *d)
{
    uint64_t *s = d->rng;
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ------------------------------------------------------------------ */
/* Ids and distance                                                    */

int shoal_dht_cmp_distance(const uint8_t t[SHOAL_DHT_ID_BYTES], const uint8_t a[SHOAL_DHT_ID_BYTES],
                           const uint8_t b[SHOAL_DHT_ID_BYTES])
{
    for (int i = 0; i < SHOAL_DHT_ID_BYTES; i++) {
        uint8_t x = a[i] ^ t[i], y = b[i] ^ t[i];
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

/* Common prefix length in bits, 0..256. */
static int cpl(const uint8_t *a, const uint8_t *b)
{
    for (int i = 0; i < SHOAL_DHT_ID_BYTES; i++) {
        uint8_t x = a[i] ^ b[i];
        if (x)
            return i * 8 + __builtin_clz((unsigned)x) - 24;
    }
    return 256;
}

static int id_eq(const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, SHOAL_DHT_ID_BYTES) == 0;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int shoal_dht_contact_parse(const uint8_t *s, size_t n, uint8_t id[SHOAL_DHT_ID_BYTES])
{
    static const char scheme[] = "shoal://";
    const size_t sl = sizeof scheme - 1;
    if (!s || n >= SHOAL_ADDR_MAX || n < sl + 3 + 1 + 65 || memcmp(s, scheme, sl) != 0)
        return SHOAL_ERR_FORMAT;
    /* key */
    size_t ks = n - 64;
    if (s[ks - 1] != '/')
        return SHOAL_ERR_FORMAT;
    uint8_t pk[32];
    for (int i = 0; i < 32; i++) {
        int hi = hexval(s[ks + 2 * i]), lo = hexval(s[ks + 2 * i + 1]);
        if (hi < 0 || lo < 0)
            return SHOAL_ERR_FORMAT;
        pk[i] = (uint8_t)(hi << 4 | lo);
    }
    /* port: the digits after the last ':' before the key */
    size_t end = ks - 1, colon = end;
    while (colon > sl && s[colon - 1] >= '0' && s[colon - 1] <= '9')
        colon--;
    size_t digits = end - colon;
    if (colon <= sl || s[colon - 1] != ':' || digits == 0 || digits > 5 || s[colon] == '0')
        return SHOAL_ERR_FORMAT;
    uint32_t port = 0;
    for (size_t i = colon; i < end; i++)
        port = port * 10 + (uint32_t)(s[i] - '0');
    if (port > 65535)
        return SHOAL_ERR_FORMAT;
    /* host */
    size_t hs = sl, he = colon - 1;
    if (he <= hs)
        return SHOAL_ERR_FORMAT;
    if (s[hs] == '[') {
        if (s[he - 1] != ']' || he - hs < 4 || he - hs > 47)
            return SHOAL_ERR_FORMAT;
        for (size_t i = hs + 1; i < he - 1; i++) {
            uint8_t c = s[i];
            if (!(hexval(c) >= 0 || (c >= 'A' && c <= 'F') || c == ':' || c == '.'))
                return SHOAL_ERR_FORMAT;
        }
    } else {
        if (he - hs > 253)
            return SHOAL_ERR_FORMAT;
        for (size_t i = hs; i < he; i++) {
            uint8_t c = s[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.'))
                return SHOAL_ERR_FORMAT;
        }
    }
    shoal_identity_peer_id_of(pk, id);
    return SHOAL_OK;
}

/* ------------------------------------------------------------------ */
/* Bans                                                                */

static int banned(shoal_dht *d, const uint8_t *id, int64_t now)
{
    for (int i = 0; i < BAN_SLOTS; i++)
        if (d->bans[i].until > now && id_eq(d->bans[i].id, id))
            return 1;
    return 0;
}

static void ban_add(shoal_dht *d, const uint8_t *id, int64_t now)
{
    ban *b = &d->bans[d->ban_next++ % BAN_SLOTS];
    memcpy(b->id, id, SHOAL_DHT_ID_BYTES);
    b->until = now + d->p.ban_ms;
    d->st.banned++;
}

/* ------------------------------------------------------------------ */
/* Routing table                                                       */

static contact *contact_new(shoal_dht *d, const uint8_t *id, const char *addr, size_t alen,
                            int64_t now)
{
    contact *c = dht_alloc(d, sizeof *c + alen + 2);
    if (!c)
        return NULL;
    memcpy(c->id, id, SHOAL_DHT_ID_BYTES);
    c->last_seen = now;
    c->fails = 0;
    c->strikes = 0;
    c->wlen = (uint16_t)(alen + 1);
    c->wire[0] = SHOAL_DHT_TAG_CONTACT;
    memcpy(c->wire + 1, addr, alen);
    c->wire[alen + 1] = 0;
    return c;
}

static const char *contact_addr(const contact *c)
{
    return (const char *)c->wire + 1;
}

static int bucket_index(const shoal_dht *d, const uint8_t *id)
{
    int i = cpl(d->p.self_id, id);
    return i >= NBUCKETS ? -1 : i;
}

static int bucket_ready(shoal_dht *d, bucket *b)
{
    if (b->live)
        return 1;
    b->live = dht_alloc(d, d->p.k * sizeof *b->live);
    b->repl = d->p.replacements ? dht_alloc(d, d->p.replacements * sizeof *b->repl) : NULL;
    if (!b->live || (d->p.replacements && !b->repl)) {
        dht_free(d, b->live);
        dht_free(d, b->repl);
        b->live = b->repl = NULL;
        return 0;
    }
    return 1;
}

static int find_in(contact **arr, int n, const uint8_t *id)
{
    for (int i = 0; i < n; i++)
        if (id_eq(arr[i]->id, id))
            return i;
    return -1;
}

/* Remove live[i]; the newest replacement takes its place. */
static void live_remove(shoal_dht *d, bucket *b, int i)
{
    dht_free(d, b->live[i]);
    memmove(&b->live[i], &b->live[i + 1], (size_t)(b->n - i - 1) * sizeof *b->live);
    b->n--;
    if (i == 0)
        b->pinging = 0; /* an eviction ping in flight no longer concerns live[0] */
    if (b->nrepl > 0)
        b->live[b->n++] = b->repl[--b->nrepl];
}

static void repl_add(shoal_dht *d, bucket *b, contact *c)
{
    if (!d->p.replacements) {
        dht_free(d, c);
        return;
    }
    if (b->nrepl == d->p.replacements) {
        dht_free(d, b->repl[0]);
        memmove(&b->repl[0], &b->repl[1], (size_t)(b->nrepl - 1) * sizeof *b->repl);
        b->nrepl--;
    }
    b->repl[b->nrepl++] = c;
}

static pending *pend_add(shoal_dht *d, int kind, uint16_t wop, const uint8_t *id,
                         const char *to, op *o, int64_t now);

/* Replace c's address with addr (a node may move); returns the contact to use. */
static contact *contact_readdr(shoal_dht *d, contact *c, const char *addr, int64_t now)
{
    size_t alen = strlen(addr);
    if (strcmp(contact_addr(c), addr) == 0)
        return c;
    contact *n = contact_new(d, c->id, addr, alen, now);
    if (!n)
        return c;
    n->fails = c->fails;
    n->strikes = c->strikes;
    dht_free(d, c);
    return n;
}

/* id answered us from addr (an authentic reply): it belongs in the table. */
static void table_seen(shoal_dht *d, const uint8_t *id, const char *addr, int64_t now)
{
    int bi = bucket_index(d, id);
    if (bi < 0 || banned(d, id, now))
        return;
    bucket *b = &d->b[bi];
    if (!bucket_ready(d, b))
        return;
    int i = find_in(b->live, b->n, id);
    if (i >= 0) {
        contact *c = contact_readdr(d, b->live[i], addr, now);
        c->last_seen = now;
        c->fails = 0;
        memmove(&b->live[i], &b->live[i + 1], (size_t)(b->n - i - 1) * sizeof *b->live);
        b->live[b->n - 1] = c;
        if (i == 0)
            b->pinging = 0;
        return;
    }
    contact *c;
    int r = find_in(b->repl, b->nrepl, id);
    if (r >= 0) {
        c = contact_readdr(d, b->repl[r], addr, now);
        memmove(&b->repl[r], &b->repl[r + 1], (size_t)(b->nrepl - r - 1) * sizeof *b->repl);
        b->nrepl--;
    } else {
        c = contact_new(d, id, addr, strlen(addr), now);
        if (!c)
            return;
    }
    c->last_seen = now;
    c->fails = 0;
    if (b->n < d->p.k) {
        b->live[b->n++] = c;
        return;
    }
    /* full: a contact that failed gives way at once */
    int worst = -1;
    for (int j = 0; j < b->n; j++)
        if (b->live[j]->fails > 0 && (worst < 0 || b->live[j]->fails > b->live[worst]->fails))
            worst = j;
    if (worst >= 0) {
        dht_free(d, b->live[worst]);
        memmove(&b->live[worst], &b->live[worst + 1],
                (size_t)(b->n - worst - 1) * sizeof *b->live);
        if (worst == 0)
            b->pinging = 0;
        b->live[b->n - 1] = c;
        return;
    }
    repl_add(d, b, c);
    /* ask the least recently seen whether it is still there */
    contact *old = b->live[0];
    if (!b->pinging && old->last_seen + d->p.stale_ms <= now &&
        pend_add(d, P_PING_EVICT, SHOAL_OP_PING, old->id, contact_addr(old), NULL, now))
        b->pinging = 1;
}

/* id did not answer in time. */
static void table_failed(shoal_dht *d, const uint8_t *id)
{
    int bi = bucket_index(d, id);
    if (bi < 0 || !d->b[bi].live)
        return;
    bucket *b = &d->b[bi];
    int i = find_in(b->live, b->n, id);
    if (i < 0)
        return;
    contact *c = b->live[i];
    if (c->fails < UINT16_MAX)
        c->fails++;
    if ((c->fails >= 2 && b->nrepl > 0) || c->fails >= 4)
        live_remove(d, b, i);
}

/* id sent us something malformed. */
static void table_strike(shoal_dht *d, const uint8_t *id, int64_t now)
{
    int bi = bucket_index(d, id);
    if (bi < 0 || !d->b[bi].live)
        return;
    bucket *b = &d->b[bi];
    int i = find_in(b->live, b->n, id);
    if (i < 0)
        return;
    if (++b->live[i]->strikes >= SHOAL_DHT_MAX_STRIKES) {
        live_remove(d, b, i);
        ban_add(d, id, now);
    }
}

static contact *table_find(const shoal_dht *d, const uint8_t *id)
{
    int bi = bucket_index(d, id);
    if (bi < 0 || !d->b[bi].live)
        return NULL;
    int i = find_in(d->b[bi].live, d->b[bi].n, id);
    return i >= 0 ? d->b[bi].live[i] : NULL;
}

/* Insert c into out[0..*n) (sorted by distance to target, at most max). */
static void closest_insert(const uint8_t *target, const contact *c, const contact **out,
                           size_t *n, size_t max)
{
    if (*n == max && shoal_dht_cmp_distance(target, c->id, out[*n - 1]->id) >= 0)
        return;
    size_t j = *n < max ? (*n)++ : max - 1;
    while (j > 0 && shoal_dht_cmp_distance(target, c->id, out[j - 1]->id) < 0) {
        out[j] = out[j - 1];
        j--;
    }
    out[j] = c;
}

static void closest_bucket(const bucket *b, const uint8_t *target, const contact **out,
                           size_t *n, size_t max)
{
    for (int i = 0; i < b->n; i++)
        if (b->live[i]->fails < 2)
            closest_insert(target, b->live[i], out, n, max);
}

/* The closest usable contacts to target, closest first. With p the
 * common prefix length of our id and target, the buckets fall into tiers
 * that are strictly ordered by distance to target: bucket p (sharing more
 * than p bits with target), then all buckets deeper than p (exactly p
 * bits), then p - 1, p - 2, ..., 0. Tiers are read in that order until
 * max contacts are found. */
static size_t table_closest(const shoal_dht *d, const uint8_t *target, const contact **out,
                            size_t max)
{
    size_t n = 0;
    if (max == 0)
        return 0;
    int p = cpl(d->p.self_id, target);
    if (p < NBUCKETS)
        closest_bucket(&d->b[p], target, out, &n, max);
    if (n < max)
        for (int bi = p + 1; bi < NBUCKETS; bi++)
            closest_bucket(&d->b[bi], target, out, &n, max);
    for (int bi = (p < NBUCKETS ? p : NBUCKETS) - 1; bi >= 0 && n < max; bi--)
        closest_bucket(&d->b[bi], target, out, &n, max);
    return n;
}

static uint32_t table_size(const shoal_dht *d, uint32_t *repl)
{
    uint32_t n = 0, r = 0;
    for (int bi = 0; bi < NBUCKETS; bi++) {
        n += d->b[bi].n;
        r += d->b[bi].nrepl;
    }
    if (repl)
        *repl = r;
    return n;
}

size_t shoal_dht_closest(const shoal_dht *d, const uint8_t target[SHOAL_DHT_ID_BYTES],
                         shoal_dht_contact *out, size_t max)
{
    if (!d || !target || !out)
        return 0;
    const contact *best[SHOAL_DHT_MAX_K];
    size_t n = table_closest(d, target, best, max < SHOAL_DHT_MAX_K ? max : SHOAL_DHT_MAX_K);
    for (size_t i = 0; i < n; i++) {
        memcpy(out[i].id, best[i]->id, SHOAL_DHT_ID_BYTES);
        memcpy(out[i].addr, contact_addr(best[i]), best[i]->wlen);
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Pending requests (outbox + in flight)                               */

static pending *pend_find(shoal_dht *d, uint64_t rid)
{
    for (uint32_t i = 0; i < d->npend; i++)
        if (d->pend[i].rid == rid)
            return &d->pend[i];
    return NULL;
}

static pending *pend_add(shoal_dht *d, int kind, uint16_t wop, const uint8_t *id,
                         const char *to, op *o, int64_t now)
{
    if (d->npend >= d->p.max_pending)
        return NULL;
    if (d->npend == d->cappend) {
        uint32_t cap = d->cappend ? d->cappend * 2 : 8;
        if (cap > d->p.max_pending)
            cap = d->p.max_pending;
        pending *np = dht_realloc(d, d->pend, d->cappend * sizeof *np, cap * sizeof *np);
        if (!np)
            return NULL;
        d->pend = np;
        d->cappend = cap;
    }
    char *copy = dht_strndup(d, to, strlen(to));
    if (!copy)
        return NULL;
    uint64_t rid;
    do
        rid = rnd(d);
    while (rid == 0 || pend_find(d, rid));
    pending *p = &d->pend[d->npend++];
    memset(p, 0, sizeof *p);
    p->rid = rid;
    p->deadline = now + d->p.request_timeout_ms;
    p->op = o;
    p->kind = (uint8_t)kind;
    p->wop = wop;
    memcpy(p->id, id, SHOAL_DHT_ID_BYTES);
    p->to = copy;
    return p;
}

/* Take pend[i] out (order kept); the caller owns the copy's `to`. */
static pending pend_take(shoal_dht *d, uint32_t i)
{
    pending p = d->pend[i];
    memmove(&d->pend[i], &d->pend[i + 1], (d->npend - i - 1) * sizeof *d->pend);
    d->npend--;
    return p;
}

static int pend_has_to(const shoal_dht *d, const uint8_t *id)
{
    for (uint32_t i = 0; i < d->npend; i++)
        if (id_eq(d->pend[i].id, id))
            return 1;
    return 0;
}

bool shoal_dht_next_outgoing(shoal_dht *d, shoal_dht_msg *msg)
{
    if (!d || !msg)
        return false;
    for (uint32_t i = 0; i < d->npend; i++) {
        pending *p = &d->pend[i];
        if (p->sent)
            continue;
        if (p->kind == P_STORE && !p->op) { /* cannot happen: puts outlive their stores */
            dht_free(d, pend_take(d, i).to);
            i--;
            continue;
        }
        p->sent = 1;
        d->st.sent++;
        size_t tl = strlen(p->to);
        memcpy(msg->to, p->to, tl + 1);
        shoal_wire_header *h = &msg->header;
        shoal_wire_header_init(h, p->wop, p->rid);
        if (d->has_addr) {
            h->has |= SHOAL_WIRE_HAS_ADDR;
            memcpy(h->addr, d->p.self_addr, strlen(d->p.self_addr) + 1);
        }
        if (p->kind == P_LOOKUP || p->kind == P_STORE) {
            h->has |= SHOAL_WIRE_HAS_TARGET;
            memcpy(h->target, p->op ? p->op->target : d->p.self_id, SHOAL_DHT_ID_BYTES);
        }
        if (p->kind == P_STORE) {
            h->has |= SHOAL_WIRE_HAS_VALUES;
            h->nvalues = 1;
            h->values[0].ptr = p->op->value;
            h->values[0].len = (uint32_t)p->op->vlen;
        }
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* Value store                                                         */

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Index of key in the sorted array, or where it would go (*found 0). */
static uint32_t key_search(const shoal_dht *d, const uint8_t *key, int *found)
{
    uint32_t lo = 0, hi = d->nkeys;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = memcmp(d->keys[mid]->key, key, SHOAL_DHT_ID_BYTES);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

static void rec_drop(shoal_dht *d, skey *k, uint32_t i)
{
    d->store_bytes -= k->r[i].wlen;
    d->nrecords--;
    dht_free(d, k->r[i].wire);
    k->r[i] = k->r[--k->n];
}

static void key_drop(shoal_dht *d, uint32_t ki)
{
    skey *k = d->keys[ki];
    while (k->n)
        rec_drop(d, k, k->n - 1);
    dht_free(d, k->r);
    dht_free(d, k);
    memmove(&d->keys[ki], &d->keys[ki + 1], (d->nkeys - ki - 1) * sizeof *d->keys);
    d->nkeys--;
}

/* The key farthest from us, or -1. */
static int key_farthest(const shoal_dht *d)
{
    int far = -1;
    for (uint32_t i = 0; i < d->nkeys; i++)
        if (far < 0 || shoal_dht_cmp_distance(d->p.self_id, d->keys[i]->key,
                                              d->keys[far]->key) > 0)
            far = (int)i;
    return far;
}

/* Make room for `bytes` more value bytes and (new_key) one more key, by
 * dropping keys farther from us than key. SHOAL_ERR_BUSY if it cannot. */
static int store_make_room(shoal_dht *d, const uint8_t *key, uint64_t bytes, int new_key)
{
    while ((new_key && d->nkeys >= d->p.max_keys) ||
           d->store_bytes + bytes > d->p.max_store_bytes) {
        int far = key_farthest(d);
        if (far < 0 || id_eq(d->keys[far]->key, key) ||
            shoal_dht_cmp_distance(d->p.self_id, key, d->keys[far]->key) >= 0)
            return SHOAL_ERR_BUSY;
        key_drop(d, (uint32_t)far);
    }
    return SHOAL_OK;
}

/* Validate and keep value[0..len) under key. */
static int store_put(shoal_dht *d, const uint8_t *key, const uint8_t *value, size_t len,
                     int64_t now)
{
    if (!d->p.validate)
        return SHOAL_ERR_UNSUPPORTED;
    if (len == 0 || len > d->p.max_value_bytes)
        return SHOAL_ERR_RANGE;
    shoal_dht_meta meta;
    memset(&meta, 0, sizeof meta);
    int rc = d->p.validate(d->p.validate_ctx, key, value, len, now, &meta);
    if (rc)
        return rc > 0 ? rc : SHOAL_ERR_FORMAT;
    if (meta.expires_ms <= now)
        return SHOAL_ERR_RANGE;

    int found;
    uint32_t ki = key_search(d, key, &found);
    skey *k = found ? d->keys[ki] : NULL;
    int slot = -1;       /* record of the same owner */
    if (k) {
        for (uint32_t i = 0; i < k->n; i++)
            if (id_eq(k->r[i].meta.owner, meta.owner)) {
                slot = (int)i;
                break;
            }
        if (slot >= 0) {
            srec *o = &k->r[slot];
            if (meta.seq < o->meta.seq)
                return SHOAL_ERR_RANGE;
            if (meta.seq == o->meta.seq)
                return o->wlen == len + 1 && memcmp(o->wire + 1, value, len) == 0
                           ? SHOAL_OK
                           : SHOAL_ERR_RANGE;
        } else if (k->n >= d->p.max_records_per_key) {
            uint32_t first = 0;
            for (uint32_t i = 1; i < k->n; i++)
                if (k->r[i].meta.expires_ms < k->r[first].meta.expires_ms)
                    first = i;
            if (k->r[first].meta.expires_ms >= meta.expires_ms)
                return SHOAL_ERR_BUSY;
            rec_drop(d, k, first);
        }
    }
    uint64_t old = slot >= 0 ? k->r[slot].wlen : 0;
    uint64_t need = len + 1 > old ? len + 1 - old : 0;
    rc = store_make_room(d, key, need, !k);
    if (rc)
        return rc;
    if (k) { /* making room may have moved it */
        ki = key_search(d, key, &found);
        k = found ? d->keys[ki] : NULL;
    }
    uint8_t *wire = dht_alloc(d, len + 1);
    if (!wire)
        return SHOAL_ERR_NOMEM;
    wire[0] = SHOAL_DHT_TAG_VALUE;
    memcpy(wire + 1, value, len);
    if (!k) {
        skey **nk = d->keys;
        if (d->nkeys % 64 == 0) {
            nk = dht_realloc(d, d->keys, d->nkeys * sizeof *nk, (d->nkeys + 64) * sizeof *nk);
            if (!nk)
                goto nomem;
            d->keys = nk;
        }
        k = dht_calloc(d, sizeof *k);
        if (!k)
            goto nomem;
        memcpy(k->key, key, SHOAL_DHT_ID_BYTES);
        ki = key_search(d, key, &found);
        memmove(&d->keys[ki + 1], &d->keys[ki], (d->nkeys - ki) * sizeof *d->keys);
        d->keys[ki] = k;
        d->nkeys++;
    }
    if (slot >= 0) {
        srec *o = &k->r[slot];
        d->store_bytes -= o->wlen;
        dht_free(d, o->wire);
        d->nrecords--;
    } else {
        if (k->n == k->cap) {
            uint32_t cap = k->cap ? k->cap * 2 : 2;
            srec *nr = dht_realloc(d, k->r, k->cap * sizeof *nr, cap * sizeof *nr);
            if (!nr) {
                if (k->n == 0)
                    key_drop(d, ki);
                goto nomem;
            }
            k->r = nr;
            k->cap = cap;
        }
        slot = (int)k->n++;
    }
    srec *s = &k->r[slot];
    s->meta = meta;
    s->wlen = (uint32_t)(len + 1);
    s->wire = wire;
    d->store_bytes += s->wlen;
    d->nrecords++;
    d->store_next_expiry = min64(d->store_next_expiry, meta.expires_ms);
    return SHOAL_OK;
nomem:
    dht_free(d, wire);
    return SHOAL_ERR_NOMEM;
}

static void store_sweep(shoal_dht *d, int64_t now)
{
    int64_t next = INT64_MAX;
    for (uint32_t ki = 0; ki < d->nkeys;) {
        skey *k = d->keys[ki];
        for (uint32_t i = 0; i < k->n;) {
            if (k->r[i].meta.expires_ms <= now) {
                rec_drop(d, k, i);
            } else {
                next = min64(next, k->r[i].meta.expires_ms);
                i++;
            }
        }
        if (k->n == 0)
            key_drop(d, ki);
        else
            ki++;
    }
    d->store_next_expiry = next;
}

static skey *store_get(const shoal_dht *d, const uint8_t *key)
{
    int found;
    uint32_t ki = key_search(d, key, &found);
    return found ? d->keys[ki] : NULL;
}

size_t shoal_dht_local_values(const shoal_dht *d, const uint8_t key[SHOAL_DHT_ID_BYTES],
                              int64_t now_ms, void (*fn)(void *ctx, const shoal_dht_value *v),
                              void *ctx)
{
    if (!d || !key)
        return 0;
    const skey *k = store_get(d, key);
    size_t n = 0;
    for (uint32_t i = 0; k && i < k->n; i++) {
        if (k->r[i].meta.expires_ms <= now_ms)
            continue;
        n++;
        if (fn) {
            shoal_dht_value v = {k->r[i].wire + 1, k->r[i].wlen - 1, k->r[i].meta};
            fn(ctx, &v);
        }
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Operations                                                          */

static op *op_new(shoal_dht *d, int kind, const uint8_t *target, int64_t now)
{
    if (d->destroying || d->nops >= d->p.max_ops)
        return NULL;
    op *o = dht_calloc(d, sizeof *o);
    if (!o)
        return NULL;
    o->kind = kind;
    memcpy(o->target, target, SHOAL_DHT_ID_BYTES);
    o->capc = 3 * d->p.k;
    o->c = dht_calloc(d, o->capc * sizeof *o->c);
    if (!o->c) {
        dht_free(d, o);
        return NULL;
    }
    if (!d->ops) {
        d->ops = dht_alloc(d, d->p.max_ops * sizeof *d->ops);
        if (!d->ops) {
            dht_free(d, o->c);
            dht_free(d, o);
            return NULL;
        }
    }
    d->ops[d->nops++] = o;
    int bi = bucket_index(d, target);
    if (bi >= 0)
        d->b[bi].touched = now;
    return o;
}

static void op_free(shoal_dht *d, op *o)
{
    for (uint32_t i = 0; i < o->nc; i++)
        dht_free(d, o->c[i].addr);
    dht_free(d, o->c);
    for (uint32_t i = 0; i < o->nvals; i++)
        dht_free(d, o->vals[i].data);
    dht_free(d, o->vals);
    dht_free(d, o->value);
    dht_free(d, o);
}

/* Add a candidate to the shortlist (kept sorted, capped). */
static void cand_add(shoal_dht *d, op *o, const uint8_t *id, const char *addr, size_t alen,
                     int depth)
{
    if (id_eq(id, d->p.self_id))
        return;
    uint32_t pos = 0;
    while (pos < o->nc) {
        int c = shoal_dht_cmp_distance(o->target, id, o->c[pos].id);
        if (c == 0) { /* already there */
            if (depth < o->c[pos].depth)
                o->c[pos].depth = (uint8_t)depth;
            return;
        }
        if (c < 0)
            break;
        pos++;
    }
    if (pos >= o->capc)
        return;
    char *a = dht_strndup(d, addr, alen);
    if (!a)
        return;
    if (o->nc == o->capc) {
        dht_free(d, o->c[o->nc - 1].addr);
        o->nc--;
    }
    memmove(&o->c[pos + 1], &o->c[pos], (o->nc - pos) * sizeof *o->c);
    cand *c = &o->c[pos];
    memcpy(c->id, id, SHOAL_DHT_ID_BYTES);
    c->addr = a;
    c->state = C_NEW;
    c->tries = 0;
    c->depth = (uint8_t)(depth > 255 ? 255 : depth);
    o->nc++;
}

static cand *cand_find(op *o, const uint8_t *id)
{
    for (uint32_t i = 0; i < o->nc; i++)
        if (id_eq(o->c[i].id, id))
            return &o->c[i];
    return NULL;
}

static void op_seed(shoal_dht *d, op *o)
{
    const contact *best[SHOAL_DHT_MAX_K];
    size_t n = table_closest(d, o->target, best, d->p.k);
    for (size_t i = 0; i < n; i++)
        cand_add(d, o, best[i]->id, contact_addr(best[i]), best[i]->wlen - 1, 1);
}

/* End of an operation: detach its requests, call back, free. */
static void op_finish(shoal_dht *d, op *o, int status, const shoal_dht_contact *nodes,
                      size_t nn)
{
    for (uint32_t i = 0; i < d->npend;) {
        pending *p = &d->pend[i];
        if (p->op != o) {
            i++;
            continue;
        }
        if (!p->sent) {
            dht_free(d, pend_take(d, i).to);
            continue;
        }
        p->op = NULL;
        i++;
    }
    for (uint32_t i = 0; i < d->nops; i++)
        if (d->ops[i] == o) {
            memmove(&d->ops[i], &d->ops[i + 1], (d->nops - i - 1) * sizeof *d->ops);
            d->nops--;
            break;
        }
    if (o == d->boot_op) {
        d->boot_op = NULL;
        d->joining = 0;
    }
    if (o->kind == OP_REFRESH && d->nrefresh > 0)
        d->nrefresh--;
    switch (o->kind) {
    case OP_FIND:
    case OP_BOOTSTRAP:
    case OP_REFRESH:
        if (o->find_cb)
            o->find_cb(o->ctx, status, nodes, nn, &o->info);
        break;
    case OP_GET:
        if (o->get_cb) {
            shoal_dht_value vs[SHOAL_DHT_MAX_K * 8];
            size_t nv = 0;
            for (uint32_t i = 0; i < o->nvals && nv < sizeof vs / sizeof vs[0]; i++) {
                vs[nv].data = o->vals[i].data;
                vs[nv].len = o->vals[i].len;
                vs[nv].meta = o->vals[i].meta;
                nv++;
            }
            if (status != SHOAL_ERR_CANCELLED)
                status = nv ? SHOAL_OK : SHOAL_ERR_NOTFOUND;
            o->get_cb(o->ctx, status, vs, nv, &o->info);
        }
        break;
    case OP_PUT:
        if (o->put_cb)
            o->put_cb(o->ctx, status, o->stored, &o->info);
        break;
    }
    op_free(d, o);
}

/* Merge a valid value into a get's results: one per owner, highest seq. */
static void get_merge(shoal_dht *d, op *o, const uint8_t *v, size_t len,
                      const shoal_dht_meta *m)
{
    for (uint32_t i = 0; i < o->nvals; i++) {
        gval *g = &o->vals[i];
        if (!id_eq(g->meta.owner, m->owner))
            continue;
        if (m->seq <= g->meta.seq)
            return;
        uint8_t *copy = dht_alloc(d, len);
        if (!copy)
            return;
        memcpy(copy, v, len);
        dht_free(d, g->data);
        g->data = copy;
        g->len = len;
        g->meta = *m;
        return;
    }
    uint32_t cap = d->p.max_records_per_key;
    if (cap > SHOAL_DHT_MAX_K * 8)
        cap = SHOAL_DHT_MAX_K * 8;
    if (o->nvals >= cap)
        return;
    if (!o->vals) {
        o->vals = dht_alloc(d, cap * sizeof *o->vals);
        if (!o->vals)
            return;
    }
    uint8_t *copy = dht_alloc(d, len);
    if (!copy)
        return;
    memcpy(copy, v, len);
    gval *g = &o->vals[o->nvals++];
    g->data = copy;
    g->len = len;
    g->meta = *m;
}

static void local_into_get(void *ctx, const shoal_dht_value *v)
{
    void **pair = ctx;
    get_merge(pair[0], pair[1], v->data, v->len, &v->meta);
}

/* Query candidates; returns 1 when the lookup has nothing left to do. */
static int lookup_step(shoal_dht *d, op *o, int64_t now)
{
    if (o->kind == OP_GET && d->p.get_quorum && o->holders >= d->p.get_quorum)
        return 1;
    uint32_t live = 0;
    int waiting = 0;
    uint16_t wop = o->kind == OP_GET ? SHOAL_OP_FIND_VALUE : SHOAL_OP_FIND_NODE;
    for (uint32_t i = 0; i < o->nc && live < d->p.k; i++) {
        cand *c = &o->c[i];
        if (c->state == C_FAILED)
            continue;
        live++;
        if (c->state != C_NEW)
            continue;
        if (o->inflight >= d->p.alpha) {
            waiting = 1;
            break;
        }
        if (o->info.queries >= d->p.max_lookup_queries)
            break;
        if (!pend_add(d, P_LOOKUP, wop, c->id, c->addr, o, now)) {
            d->starved = 1;
            waiting = 1;
            break;
        }
        c->state = C_INFLIGHT;
        c->tries++;
        o->inflight++;
        o->info.queries++;
    }
    return o->inflight == 0 && !waiting;
}

/* The lookup part is over: report, or (put) start storing. Returns 1 if
 * the operation ended (and is freed). */
static int lookup_done(shoal_dht *d, op *o, int64_t now)
{
    shoal_dht_contact res[SHOAL_DHT_MAX_K];
    size_t n = 0;
    o->info.hops = 0;
    for (uint32_t i = 0; i < o->nc && n < d->p.k; i++) {
        const cand *c = &o->c[i];
        if (c->state != C_DONE)
            continue;
        if (n == 0)
            o->info.hops = c->depth;
        memcpy(res[n].id, c->id, SHOAL_DHT_ID_BYTES);
        size_t al = strlen(c->addr);
        memcpy(res[n].addr, c->addr, al + 1);
        n++;
    }
    if (o->kind != OP_PUT) {
        op_finish(d, o, n ? SHOAL_OK : SHOAL_ERR_NOTFOUND, res, n);
        return 1;
    }
    o->phase = 1;
    for (size_t i = 0; i < n; i++) {
        if (pend_add(d, P_STORE, SHOAL_OP_STORE, res[i].id, res[i].addr, o, now))
            o->store_pending++;
    }
    /* keep a copy ourselves when we are one of the k closest */
    if (d->has_addr &&
        (n < d->p.k || shoal_dht_cmp_distance(o->target, d->p.self_id, res[n - 1].id) < 0)) {
        int rc = store_put(d, o->target, o->value + 1, o->vlen - 1, now);
        if (rc == SHOAL_OK)
            o->stored++;
        else if (!o->first_err)
            o->first_err = rc;
    }
    if (o->store_pending == 0) {
        int status = o->stored ? SHOAL_OK : o->first_err ? o->first_err : SHOAL_ERR_NOTFOUND;
        op_finish(d, o, status, NULL, 0);
        return 1;
    }
    return 0;
}

/* Advance o; returns 1 if it ended. can_finish 0: never end now (the call
 * that started it must not call back). */
static int op_step(shoal_dht *d, op *o, int64_t now, int can_finish)
{
    if (o->kind == OP_PUT && o->phase == 1) {
        if (o->store_pending || !can_finish)
            return 0;
        int status = o->stored ? SHOAL_OK : o->first_err ? o->first_err : SHOAL_ERR_NOTFOUND;
        op_finish(d, o, status, NULL, 0);
        return 1;
    }
    if (!lookup_step(d, o, now) || !can_finish)
        return 0;
    return lookup_done(d, o, now);
}

static int op_running(const shoal_dht *d, const op *o)
{
    for (uint32_t i = 0; i < d->nops; i++)
        if (d->ops[i] == o)
            return 1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Replies                                                             */

/* Read a lookup reply's values. Returns the number of malformed entries. */
static int lookup_reply(shoal_dht *d, op *o, const pending *p, const shoal_wire_header *h,
                        int64_t now)
{
    cand *from = cand_find(o, p->id);
    int depth = from ? from->depth : 1;
    if (from)
        from->state = C_DONE;
    int bad = 0, got = 0;
    uint32_t nv = h->nvalues <= SHOAL_WIRE_MAX_VALUES ? h->nvalues : 0;
    for (uint32_t i = 0; i < nv; i++) {
        const uint8_t *v = h->values[i].ptr;
        uint32_t len = h->values[i].len;
        if (len < 2 || !v) {
            bad++;
            continue;
        }
        if (v[0] == SHOAL_DHT_TAG_CONTACT) {
            uint8_t id[SHOAL_DHT_ID_BYTES];
            if (shoal_dht_contact_parse(v + 1, len - 1, id) != SHOAL_OK) {
                bad++;
                continue;
            }
            if (!banned(d, id, now))
                cand_add(d, o, id, (const char *)v + 1, len - 1, depth + 1);
        } else if (v[0] == SHOAL_DHT_TAG_VALUE && o->kind == OP_GET) {
            if (len - 1 > d->p.max_value_bytes)
                continue;
            shoal_dht_meta m;
            memset(&m, 0, sizeof m);
            int rc = d->p.validate(d->p.validate_ctx, o->target, v + 1, len - 1, now, &m);
            if (rc == SHOAL_OK && m.expires_ms > now) {
                get_merge(d, o, v + 1, len - 1, &m);
                got = 1;
            } else if (rc == SHOAL_ERR_FORMAT || rc == SHOAL_ERR_AUTH || rc < 0) {
                bad++;
            }
        } else {
            bad++;
        }
    }
    if (got)
        o->holders++;
    return bad;
}

static void pend_resolved(shoal_dht *d, pending *p, int answered, int64_t now)
{
    op *o = p->op;
    if (!answered) {
        d->st.timeouts++;
        if (p->kind != P_PING_EVICT)
            table_failed(d, p->id);
    }
    switch (p->kind) {
    case P_LOOKUP:
        if (o) {
            if (o->inflight)
                o->inflight--;
            if (!answered) {
                /* one more try: a lost message should not cost the result
                 * its closest node; a dead node costs one more timeout */
                o->info.timeouts++;
                cand *c = cand_find(o, p->id);
                if (c)
                    c->state = c->tries < LOOKUP_TRIES ? C_NEW : C_FAILED;
            }
        }
        break;
    case P_STORE:
        if (o && o->store_pending)
            o->store_pending--;
        break;
    case P_PING_EVICT: {
        int bi = bucket_index(d, p->id);
        if (bi >= 0 && d->b[bi].live) {
            bucket *b = &d->b[bi];
            int i = find_in(b->live, b->n, p->id);
            if (i == 0)
                b->pinging = 0;
            /* evict it unless something else heard from it since the ping */
            if (!answered && i >= 0 &&
                b->live[i]->last_seen <= p->deadline - d->p.request_timeout_ms)
                live_remove(d, b, i);
        }
        break;
    }
    case P_PING_VERIFY:
        if (d->nverify)
            d->nverify--;
        break;
    }
    (void)now;
}

int shoal_dht_receive_reply(shoal_dht *d, const char *from, const shoal_wire_header *h,
                            int64_t now)
{
    if (!d || !from || !h)
        return SHOAL_ERR_ARG;
    uint32_t i;
    for (i = 0; i < d->npend; i++)
        if (d->pend[i].rid == h->request_id)
            break;
    if (i == d->npend || !d->pend[i].sent ||
        strncmp(d->pend[i].to, from, SHOAL_ADDR_MAX) != 0) {
        d->st.replies_ignored++;
        return SHOAL_ERR_NOTFOUND;
    }
    pending p = pend_take(d, i);
    d->st.replies_in++;
    op *o = p.op;
    if (o && p.kind == P_LOOKUP)
        o->info.replies++;
    int is_err = h->op == SHOAL_OP_ERROR;
    int rc = SHOAL_OK;
    if (!(h->flags & SHOAL_WIRE_FLAG_REPLY) || (!is_err && h->op != p.wop)) {
        d->st.malformed_in++;
        table_strike(d, p.id, now);
        pend_resolved(d, &p, 1, now);
        if (o && p.kind == P_LOOKUP) {
            cand *c = cand_find(o, p.id);
            if (c)
                c->state = C_FAILED;
        }
        rc = SHOAL_ERR_PROTOCOL;
    } else if (is_err) {
        /* alive, but it refused: a STORE refusal is an answer, a lookup
         * refusal means it serves no DHT */
        if (p.kind == P_LOOKUP) {
            if (o) {
                cand *c = cand_find(o, p.id);
                if (c)
                    c->state = C_FAILED;
            }
        } else {
            table_seen(d, p.id, p.to, now);
        }
        if (p.kind == P_STORE && o && !o->first_err)
            o->first_err = h->error > 0 && h->error < SHOAL_ERR__COUNT ? (int)h->error
                                                                        : SHOAL_ERR_PROTOCOL;
        pend_resolved(d, &p, 1, now);
    } else {
        int bad = 0;
        if (p.kind == P_LOOKUP && o) {
            bad = lookup_reply(d, o, &p, h, now);
            cand *c = bad ? cand_find(o, p.id) : NULL;
            if (c) /* what it said may be used, but it is not a result */
                c->state = C_FAILED;
        }
        if (p.kind == P_STORE && o)
            o->stored++;
        if (bad) {
            d->st.malformed_in += (uint64_t)bad;
            table_strike(d, p.id, now);
            rc = SHOAL_ERR_PROTOCOL;
        } else {
            table_seen(d, p.id, p.to, now);
        }
        pend_resolved(d, &p, 1, now);
    }
    dht_free(d, p.to);
    if (o && op_running(d, o))
        op_step(d, o, now, 1);
    return rc;
}

void shoal_dht_request_failed(shoal_dht *d, uint64_t request_id, int64_t now)
{
    if (!d)
        return;
    for (uint32_t i = 0; i < d->npend; i++) {
        if (d->pend[i].rid != request_id)
            continue;
        pending p = pend_take(d, i);
        pend_resolved(d, &p, 0, now);
        dht_free(d, p.to);
        if (p.op && op_running(d, p.op))
            op_step(d, p.op, now, 1);
        return;
    }
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */

/* A requester says it is at addr: check it with a PING before it may
 * enter the table (bounded). */
static void learn_requester(shoal_dht *d, const shoal_wire_header *req, int64_t now)
{
    if (!(req->has & SHOAL_WIRE_HAS_ADDR))
        return;
    size_t n = strnlen(req->addr, sizeof req->addr);
    uint8_t id[SHOAL_DHT_ID_BYTES];
    if (n == sizeof req->addr ||
        shoal_dht_contact_parse((const uint8_t *)req->addr, n, id) != SHOAL_OK) {
        d->st.malformed_in++;
        return;
    }
    int bi = bucket_index(d, id);
    if (bi < 0 || table_find(d, id) || banned(d, id, now) || d->nverify >= d->p.max_verify)
        return;
    const bucket *b = &d->b[bi];
    int room = b->n < d->p.k || d->p.replacements > 0;
    for (int i = 0; !room && i < b->n; i++)
        room = b->live[i]->fails > 0;
    if (!room || find_in(b->repl, b->nrepl, id) >= 0 || pend_has_to(d, id))
        return;
    if (pend_add(d, P_PING_VERIFY, SHOAL_OP_PING, id, req->addr, NULL, now))
        d->nverify++;
}

/* Contacts closest to target into reply values (after those already there). */
static void reply_contacts(shoal_dht *d, const uint8_t *target, shoal_wire_header *rep,
                           size_t *bytes)
{
    const contact *best[SHOAL_DHT_MAX_K];
    size_t n = table_closest(d, target, best, d->p.k);
    for (size_t i = 0; i < n && rep->nvalues < SHOAL_WIRE_MAX_VALUES; i++) {
        if (*bytes + best[i]->wlen + VALUE_OVERHEAD > REPLY_BYTES_MAX)
            break;
        rep->values[rep->nvalues].ptr = best[i]->wire;
        rep->values[rep->nvalues].len = best[i]->wlen;
        rep->nvalues++;
        *bytes += best[i]->wlen + VALUE_OVERHEAD;
    }
    rep->has |= SHOAL_WIRE_HAS_VALUES;
}

static void reply_values(shoal_dht *d, const uint8_t *key, shoal_wire_header *rep,
                         size_t *bytes, int64_t now)
{
    const skey *k = store_get(d, key);
    if (!k || k->n == 0)
        return;
    uint32_t start = (uint32_t)(rnd(d) % k->n);
    for (uint32_t j = 0; j < k->n && rep->nvalues < REPLY_RECORDS_MAX; j++) {
        const srec *s = &k->r[(start + j) % k->n];
        if (s->meta.expires_ms <= now)
            continue;
        if (*bytes + s->wlen + VALUE_OVERHEAD > REPLY_BYTES_MAX - 8 * 1024)
            continue;
        rep->values[rep->nvalues].ptr = s->wire;
        rep->values[rep->nvalues].len = s->wlen;
        rep->nvalues++;
        *bytes += s->wlen + VALUE_OVERHEAD;
    }
    rep->has |= SHOAL_WIRE_HAS_VALUES;
}

int shoal_dht_receive_request(shoal_dht *d, const shoal_wire_header *req, int64_t now,
                              shoal_wire_header *rep)
{
    if (!d || !req || !rep)
        return SHOAL_ERR_ARG;
    if ((req->flags & SHOAL_WIRE_FLAG_REPLY) || req->request_id == 0 ||
        req->nvalues > SHOAL_WIRE_MAX_VALUES) {
        d->st.malformed_in++;
        shoal_wire_error_init(rep, req->request_id, SHOAL_ERR_FORMAT, "not a DHT request");
        return SHOAL_ERR_FORMAT;
    }
    int needs_target = req->op == SHOAL_OP_FIND_NODE || req->op == SHOAL_OP_FIND_VALUE ||
                       req->op == SHOAL_OP_STORE;
    if (!needs_target && req->op != SHOAL_OP_PING) {
        shoal_wire_error_init(rep, req->request_id, SHOAL_ERR_UNSUPPORTED, "not a DHT op");
        return SHOAL_ERR_UNSUPPORTED;
    }
    if (needs_target && !(req->has & SHOAL_WIRE_HAS_TARGET)) {
        d->st.malformed_in++;
        shoal_wire_error_init(rep, req->request_id, SHOAL_ERR_FORMAT, "no target");
        return SHOAL_ERR_FORMAT;
    }
    d->st.requests_in++;
    shoal_wire_reply_init(rep, req);
    size_t bytes = 0;
    switch (req->op) {
    case SHOAL_OP_PING:
        break;
    case SHOAL_OP_FIND_NODE:
        reply_contacts(d, req->target, rep, &bytes);
        break;
    case SHOAL_OP_FIND_VALUE:
        reply_values(d, req->target, rep, &bytes, now);
        reply_contacts(d, req->target, rep, &bytes);
        break;
    case SHOAL_OP_STORE: {
        int first = req->nvalues ? SHOAL_OK : SHOAL_ERR_FORMAT;
        for (uint32_t i = 0; i < req->nvalues; i++) {
            const uint8_t *v = req->values[i].ptr;
            uint32_t len = req->values[i].len;
            int rc;
            if (!v || len < 2 || v[0] != SHOAL_DHT_TAG_VALUE) {
                rc = SHOAL_ERR_FORMAT;
                d->st.malformed_in++;
            } else {
                rc = store_put(d, req->target, v + 1, len - 1, now);
            }
            if (rc) {
                d->st.stores_refused++;
                if (!first)
                    first = rc;
            }
        }
        if (first) {
            shoal_wire_error_init(rep, req->request_id, first, "value refused");
            learn_requester(d, req, now);
            return SHOAL_OK;
        }
        break;
    }
    }
    learn_requester(d, req, now);
    return SHOAL_OK;
}

/* ------------------------------------------------------------------ */
/* Starting operations                                                 */

int shoal_dht_find_node(shoal_dht *d, const uint8_t target[SHOAL_DHT_ID_BYTES], int64_t now,
                        shoal_dht_find_cb cb, void *ctx)
{
    if (!d || !target)
        return SHOAL_ERR_ARG;
    op *o = op_new(d, OP_FIND, target, now);
    if (!o)
        return d->destroying ? SHOAL_ERR_CANCELLED : SHOAL_ERR_BUSY;
    o->find_cb = cb;
    o->ctx = ctx;
    op_seed(d, o);
    op_step(d, o, now, 0);
    return SHOAL_OK;
}

int shoal_dht_get(shoal_dht *d, const uint8_t key[SHOAL_DHT_ID_BYTES], int64_t now,
                  shoal_dht_get_cb cb, void *ctx)
{
    if (!d || !key || !d->p.validate)
        return SHOAL_ERR_ARG;
    op *o = op_new(d, OP_GET, key, now);
    if (!o)
        return d->destroying ? SHOAL_ERR_CANCELLED : SHOAL_ERR_BUSY;
    o->get_cb = cb;
    o->ctx = ctx;
    void *pair[2] = {d, o};
    shoal_dht_local_values(d, key, now, local_into_get, pair);
    op_seed(d, o);
    op_step(d, o, now, 0);
    return SHOAL_OK;
}

int shoal_dht_put(shoal_dht *d, const uint8_t key[SHOAL_DHT_ID_BYTES], const uint8_t *value,
                  size_t len, int64_t now, shoal_dht_put_cb cb, void *ctx)
{
    if (!d || !key || !value || !d->p.validate || len == 0 || len > d->p.max_value_bytes)
        return SHOAL_ERR_ARG;
    shoal_dht_meta m;
    memset(&m, 0, sizeof m);
    if (d->p.validate(d->p.validate_ctx, key, value, len, now, &m) != SHOAL_OK)
        return SHOAL_ERR_ARG;
    op *o = op_new(d, OP_PUT, key, now);
    if (!o)
        return d->destroying ? SHOAL_ERR_CANCELLED : SHOAL_ERR_BUSY;
    o->put_cb = cb;
    o->ctx = ctx;
    o->value = dht_alloc(d, len + 1);
    if (!o->value) {
        d->nops--; /* o is the last op */
        op_free(d, o);
        return SHOAL_ERR_NOMEM;
    }
    o->value[0] = SHOAL_DHT_TAG_VALUE;
    memcpy(o->value + 1, value, len);
    o->vlen = len + 1;
    op_seed(d, o);
    op_step(d, o, now, 0);
    return SHOAL_OK;
}

/* A lookup of our own id seeded with the bootstrap peers. */
static op *boot_start(shoal_dht *d, int64_t now, shoal_dht_find_cb cb, void *ctx)
{
    op *o = op_new(d, OP_BOOTSTRAP, d->p.self_id, now);
    if (!o)
        return NULL;
    o->find_cb = cb;
    o->ctx = ctx;
    for (uint32_t i = 0; i < d->nseeds; i++) {
        uint8_t id[SHOAL_DHT_ID_BYTES];
        size_t n = strlen(d->seeds[i]);
        if (shoal_dht_contact_parse((const uint8_t *)d->seeds[i], n, id) == SHOAL_OK)
            cand_add(d, o, id, d->seeds[i], n, 1);
    }
    op_seed(d, o);
    op_step(d, o, now, 0);
    d->boot_op = o;
    d->joining = 1;
    d->boot_next = now + d->p.bootstrap_retry_ms;
    return o;
}

int shoal_dht_bootstrap(shoal_dht *d, const char *const *addrs, size_t n, int64_t now,
                        shoal_dht_find_cb cb, void *ctx)
{
    if (!d || (n && !addrs))
        return SHOAL_ERR_ARG;
    for (size_t i = 0; i < n && d->nseeds < MAX_SEEDS; i++) {
        if (!addrs[i])
            continue;
        size_t len = strnlen(addrs[i], SHOAL_ADDR_MAX);
        uint8_t id[SHOAL_DHT_ID_BYTES];
        if (len == SHOAL_ADDR_MAX ||
            shoal_dht_contact_parse((const uint8_t *)addrs[i], len, id) != SHOAL_OK ||
            id_eq(id, d->p.self_id))
            continue;
        int dup = 0;
        for (uint32_t j = 0; j < d->nseeds && !dup; j++)
            dup = strcmp(d->seeds[j], addrs[i]) == 0;
        if (dup)
            continue;
        char *s = dht_strndup(d, addrs[i], len);
        if (!s)
            return SHOAL_ERR_NOMEM;
        d->seeds[d->nseeds++] = s;
    }
    if (d->nseeds == 0 && table_size(d, NULL) == 0)
        return SHOAL_ERR_ARG;
    if (d->boot_op) /* a bootstrap runs: this one reports when it ends */
        return SHOAL_ERR_BUSY;
    return boot_start(d, now, cb, ctx) ? SHOAL_OK
                                       : d->destroying ? SHOAL_ERR_CANCELLED : SHOAL_ERR_BUSY;
}

/* ------------------------------------------------------------------ */
/* Timers                                                              */

/* A random id in bucket bi's range: our first bi bits, then the other bit. */
static void random_in_bucket(shoal_dht *d, int bi, uint8_t *id)
{
    for (int i = 0; i < SHOAL_DHT_ID_BYTES; i += 8) {
        uint64_t r = rnd(d);
        memcpy(id + i, &r, 8);
    }
    int byte = bi / 8, bit = 7 - bi % 8;
    memcpy(id, d->p.self_id, (size_t)byte);
    uint8_t keep = (uint8_t)(0xff << (bit + 1)); /* our bits above `bit` */
    uint8_t mine = d->p.self_id[byte];
    id[byte] = (uint8_t)((mine & keep) | (~mine & (1u << bit)) | (id[byte] & ((1u << bit) - 1)));
}

/* A full bucket whose contacts all answered within refresh_ms. */
static int bucket_fresh(const shoal_dht *d, const bucket *b, int64_t now)
{
    if (b->n < d->p.k)
        return 0;
    for (int i = 0; i < b->n; i++)
        if (b->live[i]->last_seen + d->p.refresh_ms <= now || b->live[i]->fails)
            return 0;
    return 1;
}

/* The deepest bucket with a contact (our closest neighbour's), or -1. */
static int deepest_bucket(const shoal_dht *d)
{
    for (int bi = NBUCKETS - 1; bi >= 0; bi--)
        if (d->b[bi].n)
            return bi;
    return -1;
}

int64_t shoal_dht_tick(shoal_dht *d, int64_t now)
{
    if (!d)
        return now + MAX_SLEEP_MS;
    /* timeouts */
    for (uint32_t i = 0; i < d->npend;) {
        if (d->pend[i].deadline > now) {
            i++;
            continue;
        }
        pending p = pend_take(d, i);
        pend_resolved(d, &p, 0, now);
        dht_free(d, p.to);
        /* the operation is stepped below */
    }
    /* operations */
    d->starved = 0;
    for (uint32_t i = 0; i < d->nops;) {
        op *o = d->ops[i];
        if (!op_step(d, o, now, 1))
            i++;
        else if (i < d->nops && d->ops[i] == o)
            i++; /* cannot happen: an ended op leaves the array */
    }
    /* expiry */
    if (now >= d->store_next_expiry)
        store_sweep(d, now);
    /* bootstrap retry */
    uint32_t ncontacts = table_size(d, NULL);
    if (d->nseeds && ncontacts == 0 && !d->boot_op && now >= d->boot_next)
        boot_start(d, now, NULL, NULL);
    /* refresh */
    int deep = deepest_bucket(d);
    int64_t next_refresh = INT64_MAX;
    if (!d->joining && deep >= 0) {
        for (int bi = 0; bi <= deep; bi++) {
            bucket *b = &d->b[bi];
            if (b->touched + d->p.refresh_ms <= now && bucket_fresh(d, b, now))
                b->touched = now; /* full of nodes that answered lately: nothing to learn */
            if (b->touched + d->p.refresh_ms > now) {
                next_refresh = min64(next_refresh, b->touched + d->p.refresh_ms);
                continue;
            }
            if (d->nrefresh >= REFRESH_PARALLEL) {
                next_refresh = now + STARVED_RETRY_MS;
                break;
            }
            uint8_t target[SHOAL_DHT_ID_BYTES];
            random_in_bucket(d, bi, target);
            op *o = op_new(d, OP_REFRESH, target, now);
            b->touched = now; /* also when op_new failed: try again a period later */
            if (!o)
                continue;
            d->nrefresh++;
            op_seed(d, o);
            op_step(d, o, now, 0);
            next_refresh = min64(next_refresh, now + d->p.refresh_ms);
        }
    }
    /* next wake-up */
    int64_t wake = now + MAX_SLEEP_MS;
    for (uint32_t i = 0; i < d->npend; i++)
        wake = min64(wake, d->pend[i].deadline);
    /* every operation was stepped above: one with nothing in flight now
     * waits for a free pending slot */
    for (uint32_t i = 0; i < d->nops; i++)
        if (d->ops[i]->inflight == 0 && !(d->ops[i]->kind == OP_PUT && d->ops[i]->phase == 1))
            d->starved = 1;
    if (d->starved)
        wake = min64(wake, now + STARVED_RETRY_MS);
    wake = min64(wake, d->store_next_expiry);
    wake = min64(wake, next_refresh);
    if (d->nseeds && ncontacts == 0 && !d->boot_op)
        wake = min64(wake, d->boot_next);
    return wake < now ? now : wake;
}

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

shoal_dht_params shoal_dht_params_default(void)
{
    shoal_dht_params p;
    memset(&p, 0, sizeof p);
    p.k = SHOAL_DHT_K;
    p.alpha = SHOAL_DHT_ALPHA;
    p.request_timeout_ms = 2000;
    p.refresh_ms = 15 * 60 * 1000;
    p.stale_ms = 10 * 60 * 1000;
    p.bootstrap_retry_ms = 30 * 1000;
    p.ban_ms = 10 * 60 * 1000;
    p.replacements = 8;
    p.max_pending = 512;
    p.max_ops = 64;
    p.max_lookup_queries = 120;
    p.max_verify = 16;
    p.get_quorum = 5;
    p.max_keys = 4096;
    p.max_records_per_key = 64;
    p.max_value_bytes = 2048;
    p.max_store_bytes = 16u << 20;
    return p;
}

int shoal_dht_new(const shoal_dht_params *params, shoal_dht **out)
{
    if (!out)
        return SHOAL_ERR_ARG;
    *out = NULL;
    if (!params || params->k == 0 || params->k > SHOAL_DHT_MAX_K || params->alpha == 0 ||
        params->alpha > params->k || params->request_timeout_ms <= 0 ||
        params->refresh_ms <= 0 || params->stale_ms < 0 || params->bootstrap_retry_ms <= 0 ||
        params->ban_ms < 0 || params->replacements > 255 || params->max_pending == 0 ||
        params->max_ops == 0 || params->max_lookup_queries == 0 ||
        params->max_value_bytes == 0 || params->max_value_bytes > SHOAL_DHT_VALUE_MAX ||
        params->max_records_per_key == 0 || params->max_keys == 0)
        return SHOAL_ERR_ARG;
    size_t alen = strnlen(params->self_addr, sizeof params->self_addr);
    if (alen == sizeof params->self_addr)
        return SHOAL_ERR_ARG;
    if (alen) {
        shoal_addr a;
        uint8_t id[SHOAL_DHT_ID_BYTES], id2[SHOAL_DHT_ID_BYTES];
        if (shoal_addr_parse(&a, params->self_addr) != SHOAL_OK ||
            shoal_dht_contact_parse((const uint8_t *)params->self_addr, alen, id2) != SHOAL_OK)
            return SHOAL_ERR_ARG;
        shoal_addr_peer_id(&a, id);
        if (!id_eq(id, params->self_id) || !id_eq(id2, id))
            return SHOAL_ERR_ARG;
    }
    shoal_dht tmp;
    memset(&tmp, 0, sizeof tmp);
    shoal_dht *d = dht_alloc(&tmp, sizeof *d);
    if (!d)
        return SHOAL_ERR_NOMEM;
    memset(d, 0, sizeof *d);
    d->mem = tmp.mem;
    d->p = *params;
    d->has_addr = alen > 0;
    uint64_t x = 0;
    for (int i = 0; i < 4; i++) {
        uint64_t s, t;
        memcpy(&s, params->seed + 8 * i, 8);
        memcpy(&t, params->self_id + 8 * i, 8);
        x ^= s ^ t;
        d->rng[i] = splitmix(&x);
    }
    d->store_next_expiry = INT64_MAX;
    *out = d;
    return SHOAL_OK;
}

void shoal_dht_destroy(shoal_dht **pp)
{
    if (!pp || !*pp)
        return;
    shoal_dht *d = *pp;
    d->destroying = 1;
    while (d->nops)
        op_finish(d, d->ops[d->nops - 1], SHOAL_ERR_CANCELLED, NULL, 0);
    for (uint32_t i = 0; i < d->npend; i++)
        dht_free(d, d->pend[i].to);
    dht_free(d, d->pend);
    dht_free(d, d->ops);
    for (int bi = 0; bi < NBUCKETS; bi++) {
        bucket *b = &d->b[bi];
        for (int i = 0; i < b->n; i++)
            dht_free(d, b->live[i]);
        for (int i = 0; i < b->nrepl; i++)
            dht_free(d, b->repl[i]);
        dht_free(d, b->live);
        dht_free(d, b->repl);
    }
    while (d->nkeys)
        key_drop(d, d->nkeys - 1);
    dht_free(d, d->keys);
    for (uint32_t i = 0; i < d->nseeds; i++)
        dht_free(d, d->seeds[i]);
    shoal_dht tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.mem = d->mem;
    dht_free(&tmp, d);
    *pp = NULL;
}

void shoal_dht_stats_get(const shoal_dht *d, shoal_dht_stats *st)
{
    if (!d || !st)
        return;
    *st = d->st;
    st->contacts = table_size(d, &st->replacements);
    st->pending = d->npend;
    st->ops = d->nops;
    st->keys = d->nkeys;
    st->records = d->nrecords;
    st->store_bytes = d->store_bytes;
    st->mem_bytes = d->mem;
}
