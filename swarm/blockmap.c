/*
 * Reading a model's block records from the DHT (see blockmap.h).
 *
 * One get context per block, allocated with the map, so a callback knows
 * its block without any lookup. Servers are kept in a growable array in
 * the order found, searched linearly by peer id (a model's swarm is
 * hundreds of servers, and each is matched once per block it serves).
 */
#include "swarm/blockmap.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"

typedef struct get_ctx {
    struct shoal_blockmap *m;
    uint32_t block;
} get_ctx;

struct shoal_blockmap {
    shoal_blockmap_params p;
    get_ctx *ctx;          /* (nblocks) */
    uint32_t next;         /* the next block to start */
    uint32_t inflight;
    int64_t now;
    bool orphan;           /* destroyed by its owner: free at the last callback */
    shoal_record *srv;
    size_t nsrv, capsrv;
    shoal_blockmap_stats st;
};

shoal_blockmap_params shoal_blockmap_params_default(void)
{
    shoal_blockmap_params p;
    memset(&p, 0, sizeof p);
    p.parallel = 8;
    p.max_ahead_ms = SHOAL_RECORD_MAX_AHEAD_MS;
    return p;
}

int shoal_blockmap_new(const shoal_blockmap_params *p, shoal_blockmap **out)
{
    *out = NULL;
    if (!p || p->nblocks < 1 || p->nblocks > SHOAL_BLOCKMAP_MAX_BLOCKS || p->parallel < 1 ||
        p->max_ahead_ms < 0)
        return SHOAL_ERR_ARG;
    shoal_blockmap *m = calloc(1, sizeof *m);
    if (!m)
        return SHOAL_ERR_NOMEM;
    m->p = *p;
    if (!(m->ctx = calloc(p->nblocks, sizeof *m->ctx))) {
        free(m);
        return SHOAL_ERR_NOMEM;
    }
    for (uint32_t b = 0; b < p->nblocks; b++)
        m->ctx[b] = (get_ctx){m, b};
    *out = m;
    return 0;
}

static void map_free(shoal_blockmap *m)
{
    free(m->ctx);
    free(m->srv);
    free(m);
}

void shoal_blockmap_destroy(shoal_blockmap **pp)
{
    if (!pp || !*pp)
        return;
    shoal_blockmap *m = *pp;
    *pp = NULL;
    if (m->inflight)
        m->orphan = true;
    else
        map_free(m);
}

/* Keep r if it is the first or the newest record of its server. */
static void keep(shoal_blockmap *m, const shoal_record *r)
{
    for (size_t i = 0; i < m->nsrv; i++)
        if (!memcmp(m->srv[i].peer_id, r->peer_id, sizeof r->peer_id)) {
            if (r->seq > m->srv[i].seq)
                m->srv[i] = *r;
            return;
        }
    if (m->nsrv == SHOAL_BLOCKMAP_MAX_SERVERS) {
        m->st.dropped++;
        return;
    }
    if (m->nsrv == m->capsrv) {
        size_t cap = m->capsrv ? m->capsrv * 2 : 16;
        shoal_record *v = realloc(m->srv, cap * sizeof *v);
        if (!v) {
            m->st.dropped++;
            return;
        }
        m->srv = v;
        m->capsrv = cap;
    }
    m->srv[m->nsrv++] = *r;
}

static void on_get(void *vctx, int status, const shoal_dht_value *values, size_t n,
                   const shoal_dht_lookup_info *info)
{
    get_ctx *c = vctx;
    shoal_blockmap *m = c->m;
    m->inflight--;
    if (m->orphan) {
        if (!m->inflight)
            map_free(m);
        return;
    }
    m->st.gets_done++;
    if (info && info->hops > m->st.max_hops)
        m->st.max_hops = info->hops;
    if (status == SHOAL_ERR_NOTFOUND) {
        m->st.gets_empty++;
        return;
    }
    if (status) {
        m->st.gets_failed++;
        return;
    }
    uint8_t key[32];
    shoal_record_block_key(m->p.model_hash, c->block, key);
    for (size_t i = 0; i < n; i++) {
        m->st.values++;
        shoal_record r;
        if (shoal_record_validate(values[i].data, values[i].len, key, m->now,
                                  m->p.max_ahead_ms, &r) ||
            memcmp(r.model_hash, m->p.model_hash, sizeof r.model_hash) ||
            r.nblocks != m->p.nblocks) {
            m->st.rejected++;
            continue;
        }
        keep(m, &r);
    }
}

int shoal_blockmap_step(shoal_blockmap *m, shoal_dht *d, int64_t now)
{
    m->now = now;
    while (m->next < m->p.nblocks && m->inflight < m->p.parallel) {
        uint8_t key[32];
        shoal_record_block_key(m->p.model_hash, m->next, key);
        int rc = shoal_dht_get(d, key, now, on_get, &m->ctx[m->next]);
        if (rc == SHOAL_ERR_BUSY)
            return 0; /* the DHT runs too many operations: next step */
        if (rc)
            return rc;
        m->inflight++;
        m->next++;
    }
    return 0;
}

bool shoal_blockmap_done(const shoal_blockmap *m)
{
    return m->next == m->p.nblocks && m->inflight == 0;
}

size_t shoal_blockmap_count(const shoal_blockmap *m) { return m->nsrv; }

const shoal_record *shoal_blockmap_server(const shoal_blockmap *m, size_t i)
{
    return i < m->nsrv ? &m->srv[i] : NULL;
}

void shoal_blockmap_stats_get(const shoal_blockmap *m, shoal_blockmap_stats *st)
{
    *st = m->st;
}

typedef struct run_ctx {
    shoal_blockmap *m;
    shoal_dht_net *net;
    int rc;
} run_ctx;

static bool run_step(void *vctx)
{
    run_ctx *c = vctx;
    if (!c->rc)
        c->rc = shoal_blockmap_step(c->m, shoal_dht_net_dht(c->net), shoal_dht_net_now());
    return c->rc || shoal_blockmap_done(c->m);
}

int shoal_blockmap_run(shoal_blockmap *m, shoal_dht_net *net, int64_t until_ms)
{
    run_ctx c = {m, net, 0};
    int rc = shoal_dht_net_run(net, until_ms, run_step, &c);
    return c.rc ? c.rc : rc;
}
