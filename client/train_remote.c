/*
 * Training through a chain of servers (see train_remote.h).
 *
 * State: the address list (canonical forms), the banned addresses, the hops
 * (address, peer, session id, blocks, failed flag), and two buffers of the
 * whole model's checkpoint state: the checkpoint itself and a scratch that
 * pulls land in, so that a pull that fails half way leaves the checkpoint
 * whole. A block's state is per_block floats at offset block * per_block.
 *
 * Recovery (shoal_train_remote_recover): up to RECOVER_ATTEMPTS rounds of
 * ban failed -> ask every address -> cover each failed hop's blocks ->
 * open -> push the checkpoint to every hop. A round in which an open or a
 * push fails marks that hop and goes round again.
 */
#include "client/train_remote.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/remote.h"
#include "client/route.h"
#include "kernels/err.h"
#include "proto/addr.h"
#include "swarm/model_id.h"
#include "swarm/peer.h"
#include "swarm/peer_train.h"

#define RECOVER_ATTEMPTS 4
#define CLOSE_TIMEOUT_MS 1000
#define TR_ERR_MAX 1024

typedef struct tr_hop {
    char address[SHOAL_ADDR_MAX];
    shoal_peer *peer;
    uint64_t sid;
    int start, end;      /* blocks [start, end) */
    int failed;
} tr_hop;

struct shoal_train_remote {
    shoal_hparams hp;
    shoal_model_id model;
    shoal_train_remote_params p;
    char (*addrs)[SHOAL_ADDR_MAX];
    size_t n_addrs;
    char (*banned)[SHOAL_ADDR_MAX];
    size_t n_banned;
    tr_hop *hops;          /* at most n_layer */
    size_t n_hops;
    size_t per_block;      /* state floats per block */
    float *ckpt, *scratch; /* (n_layer * per_block) each */
    int64_t ckpt_t;
    size_t chunk;          /* floats per checkpoint message */
    char err[TR_ERR_MAX];
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

shoal_train_remote_params shoal_train_remote_params_default(void)
{
    shoal_train_remote_params p = {
        .span = shoal_train_span_params_default(), .timeout_ms = 30000, .codec = SHOAL_CODEC_F32};
    return p;
}

const char *shoal_train_remote_last_error(const shoal_train_remote *r) { return r->err; }

void shoal_train_remote_describe(const shoal_train_remote *r, char *out, size_t outlen)
{
    if (!outlen)
        return;
    out[0] = 0;
    size_t used = 0;
    for (size_t i = 0; i < r->n_hops && used + 1 < outlen; i++) {
        int k = snprintf(out + used, outlen - used, "%s%d:%d %s", i ? ", " : "",
                         r->hops[i].start, r->hops[i].end, r->hops[i].address);
        if (k < 0)
            break;
        used += (size_t)k;
    }
}

/* ---- hops --------------------------------------------------------------------- */

static shoal_peer_train_params wire_params(const shoal_train_remote *r, const tr_hop *h)
{
    const shoal_train_span_params *s = &r->p.span;
    shoal_peer_train_params tp = {
        (uint32_t)h->start, (uint32_t)h->end, (uint32_t)s->max_tokens, (uint32_t)s->rank,
        s->alpha, s->targets, s->seed, s->opt.lr, s->opt.beta1, s->opt.beta2, s->opt.eps,
        s->opt.weight_decay};
    return tp;
}

static void hop_drop(tr_hop *h, int close)
{
    if (h->peer && close)
        shoal_peer_train_close(h->peer, h->sid, CLOSE_TIMEOUT_MS); /* best effort */
    shoal_peer_destroy(&h->peer);
}

/* Connect and open the hop's session. One line in r->err on failure. */
static int hop_open(shoal_train_remote *r, tr_hop *h)
{
    int rc = shoal_peer_connect(h->address, NULL, &h->peer);
    if (rc) {
        set_err(r->err, sizeof r->err, "%s: cannot connect (%s)", h->address, shoal_strerror(rc));
        return rc;
    }
    do
        randombytes_buf(&h->sid, sizeof h->sid);
    while (h->sid == 0);
    shoal_peer_train_params tp = wire_params(r, h);
    if ((rc = shoal_peer_train_open(h->peer, h->sid, &tp, r->p.timeout_ms))) {
        set_err(r->err, sizeof r->err, "blocks %d:%d: cannot open a training session: %s",
                h->start, h->end, shoal_peer_last_error(h->peer));
        shoal_peer_destroy(&h->peer);
    }
    return rc;
}

/* Marks hop i failed and writes one line about the call that failed. */
static int hop_fail(shoal_train_remote *r, size_t i, int rc)
{
    tr_hop *h = &r->hops[i];
    h->failed = 1;
    const char *why = h->peer ? shoal_peer_last_error(h->peer) : "";
    set_err(r->err, sizeof r->err, "blocks %d:%d: %s%s%s", h->start, h->end,
            *why ? why : h->address, *why ? "" : ": ", *why ? "" : shoal_strerror(rc));
    return rc;
}

static int chain_broken(shoal_train_remote *r)
{
    for (size_t i = 0; i < r->n_hops; i++)
        if (r->hops[i].failed || !r->hops[i].peer)
            return 1;
    return 0;
}

/* ---- the blocks interface -------------------------------------------------------- */

static int rb_forward(void *self, uint64_t key, int n_seq, int T, float *x)
{
    shoal_train_remote *r = self;
    if (chain_broken(r))
        return SHOAL_ERR_SESSION;
    for (size_t i = 0; i < r->n_hops; i++) {
        tr_hop *h = &r->hops[i];
        int rc = shoal_peer_train_forward(h->peer, h->sid, key, x, n_seq, T, r->hp.dim,
                                          r->p.codec, r->p.timeout_ms);
        if (rc)
            return hop_fail(r, i, rc);
    }
    return 0;
}

static int rb_backward(void *self, uint64_t key, int n_seq, int T, float *g)
{
    shoal_train_remote *r = self;
    if (chain_broken(r))
        return SHOAL_ERR_SESSION;
    for (size_t i = r->n_hops; i-- > 0;) {
        tr_hop *h = &r->hops[i];
        int rc = shoal_peer_train_backward(h->peer, h->sid, key, g, n_seq, T, r->hp.dim,
                                           r->p.codec, r->p.timeout_ms);
        if (rc)
            return hop_fail(r, i, rc);
    }
    return 0;
}

static int rb_step(void *self, int64_t t, float lr)
{
    shoal_train_remote *r = self;
    if (chain_broken(r))
        return SHOAL_ERR_SESSION;
    for (size_t i = 0; i < r->n_hops; i++) {
        tr_hop *h = &r->hops[i];
        shoal_peer_train_params tp = wire_params(r, h);
        if (lr >= 0)
            tp.lr = lr;
        int rc = shoal_peer_train_step(h->peer, h->sid, t, &tp, r->p.timeout_ms);
        if (rc)
            return hop_fail(r, i, rc);
    }
    return 0;
}

static const char *rb_error(void *self) { return ((shoal_train_remote *)self)->err; }

shoal_train_blocks shoal_train_remote_blocks(shoal_train_remote *r)
{
    shoal_train_blocks b = {r, rb_forward, rb_backward, rb_step, rb_error};
    return b;
}

/* ---- checkpoints ------------------------------------------------------------------ */

/* Every hop's state into r->scratch; every hop must be at step t (t < 0:
 * any, written back). */
static int pull_all(shoal_train_remote *r, int64_t *t)
{
    if (chain_broken(r)) {
        set_err(r->err, sizeof r->err, "the chain is broken");
        return SHOAL_ERR_SESSION;
    }
    for (size_t i = 0; i < r->n_hops; i++) {
        tr_hop *h = &r->hops[i];
        int64_t ht = -1;
        size_t off = (size_t)h->start * r->per_block;
        size_t n = (size_t)(h->end - h->start) * r->per_block;
        int rc = shoal_peer_train_pull(h->peer, h->sid, r->scratch + off, n, &ht, r->chunk,
                                       r->p.timeout_ms);
        if (rc)
            return hop_fail(r, i, rc);
        if (*t >= 0 && ht != *t) {
            set_err(r->err, sizeof r->err, "blocks %d:%d (%s) is at step %lld, not %lld",
                    h->start, h->end, h->address, (long long)ht, (long long)*t);
            h->failed = 1;
            return SHOAL_ERR_PROTOCOL;
        }
        *t = ht;
    }
    return 0;
}

int shoal_train_remote_checkpoint(shoal_train_remote *r, int64_t step)
{
    int64_t t = step;
    int rc = pull_all(r, &t);
    if (rc)
        return rc;
    float *tmp = r->ckpt;
    r->ckpt = r->scratch;
    r->scratch = tmp;
    r->ckpt_t = step;
    return 0;
}

int shoal_train_remote_adapter(shoal_train_remote *r, shoal_adapter **out, char *err,
                               size_t errlen)
{
    *out = NULL;
    int64_t t = -1;
    int rc = pull_all(r, &t);
    if (rc) {
        set_err(err, errlen, "%s", r->err);
        return rc;
    }
    const shoal_train_span_params *s = &r->p.span;
    const int L = r->hp.n_layer;
    if ((rc = shoal_adapter_new(&r->hp, 0, L, s->targets, s->rank, s->alpha, out)) ||
        (rc = shoal_train_state_to_adapter(*out, 0, L, r->scratch, (size_t)L * r->per_block))) {
        shoal_adapter_destroy(out);
        set_err(err, errlen, "cannot assemble the adapter: %s", shoal_strerror(rc));
    }
    return rc;
}

/* ---- planning --------------------------------------------------------------------- */

static int is_banned(const shoal_train_remote *r, const char *addr)
{
    for (size_t i = 0; i < r->n_banned; i++)
        if (!strcmp(r->banned[i], addr))
            return 1;
    return 0;
}

static int ban(shoal_train_remote *r, const char *addr)
{
    if (is_banned(r, addr))
        return 0;
    void *nb = realloc(r->banned, (r->n_banned + 1) * sizeof *r->banned);
    if (!nb)
        return SHOAL_ERR_NOMEM;
    r->banned = nb;
    snprintf(r->banned[r->n_banned++], SHOAL_ADDR_MAX, "%s", addr);
    return 0;
}

static shoal_route_want want_of(const shoal_train_remote *r)
{
    shoal_route_want w;
    memset(&w, 0, sizeof w);
    w.model = r->model;
    w.nblocks = (uint32_t)r->hp.n_layer;
    w.dim = (uint32_t)r->hp.dim;
    w.max_length = 0;
    w.codec = r->p.codec;
    return w;
}

/* Ask every address for INFO; keep the usable candidates (model, codec). */
static int lookup(shoal_train_remote *r, shoal_route_cands *cands, char *failed, size_t flen)
{
    const char **list = malloc(r->n_addrs * sizeof *list);
    if (!list)
        return SHOAL_ERR_NOMEM;
    for (size_t i = 0; i < r->n_addrs; i++)
        list[i] = r->addrs[i];
    size_t n_failed = 0;
    shoal_route_cands all;
    shoal_route_cands_init(&all);
    int rc = shoal_remote_lookup(list, r->n_addrs, r->p.timeout_ms, &all, &n_failed, failed,
                                 flen);
    free(list);
    shoal_route_want w = want_of(r);
    char why[256];
    for (size_t i = 0; !rc && i < all.n; i++)
        if (shoal_route_check(&all.v[i], &w, why, sizeof why) == 0)
            rc = shoal_route_cands_add(cands, all.v[i].address, &all.v[i].info);
    shoal_route_cands_fini(&all);
    return rc;
}

/* Cover blocks [a, b) with candidates (greedy furthest reach; banned ones
 * only if allow_banned) into hops[*n..]. 0, or SHOAL_ERR_NOTFOUND naming
 * the first block no candidate serves. */
static int cover(shoal_train_remote *r, const shoal_route_cands *c, int a, int b,
                 int allow_banned, tr_hop *hops, size_t *n, size_t cap)
{
    for (int at = a; at < b;) {
        const shoal_route_cand *best = NULL;
        for (size_t i = 0; i < c->n; i++) {
            const shoal_route_cand *x = &c->v[i];
            if ((int)x->info.span_start > at || (int)x->info.span_end <= at ||
                (!allow_banned && is_banned(r, x->address)))
                continue;
            if (!best || x->info.span_end > best->info.span_end ||
                (x->info.span_end == best->info.span_end &&
                 strcmp(x->address, best->address) < 0))
                best = x;
        }
        if (!best || *n == cap) {
            set_err(r->err, sizeof r->err, "no usable node serves block %d", at);
            return SHOAL_ERR_NOTFOUND;
        }
        tr_hop *h = &hops[(*n)++];
        memset(h, 0, sizeof *h);
        snprintf(h->address, sizeof h->address, "%s", best->address);
        h->start = at;
        h->end = (int)best->info.span_end < b ? (int)best->info.span_end : b;
        at = h->end;
    }
    return 0;
}

/* Replace every failed hop by a cover of its blocks; new hops are not open
 * yet (peer NULL). On failure the hops are as they were. */
static int replan(shoal_train_remote *r)
{
    shoal_route_cands c;
    shoal_route_cands_init(&c);
    char failed[TR_ERR_MAX];
    tr_hop *nh = calloc((size_t)r->hp.n_layer, sizeof *nh);
    int rc = nh ? lookup(r, &c, failed, sizeof failed) : SHOAL_ERR_NOMEM;
    size_t n = 0;
    for (size_t i = 0; !rc && i < r->n_hops; i++) {
        tr_hop *h = &r->hops[i];
        if (!h->failed && h->peer) {
            nh[n++] = *h; /* the peer moves over on success */
            continue;
        }
        size_t n0 = n;
        rc = cover(r, &c, h->start, h->end, 0, nh, &n, (size_t)r->hp.n_layer);
        if (rc == SHOAL_ERR_NOTFOUND) {
            n = n0;
            rc = cover(r, &c, h->start, h->end, 1, nh, &n, (size_t)r->hp.n_layer);
        }
    }
    if (!rc) {
        for (size_t i = 0; i < r->n_hops; i++)
            if (r->hops[i].failed || !r->hops[i].peer)
                hop_drop(&r->hops[i], 0);
        free(r->hops);
        r->hops = nh;
        r->n_hops = n;
        nh = NULL;
    }
    free(nh);
    shoal_route_cands_fini(&c);
    return rc;
}

/* Open every hop without a session, then push the checkpoint to all. */
static int restore(shoal_train_remote *r)
{
    for (size_t i = 0; i < r->n_hops; i++) {
        tr_hop *h = &r->hops[i];
        if (!h->peer) {
            int rc = hop_open(r, h);
            if (rc) {
                h->failed = 1;
                return rc;
            }
        }
    }
    for (size_t i = 0; i < r->n_hops; i++) {
        tr_hop *h = &r->hops[i];
        size_t off = (size_t)h->start * r->per_block;
        size_t n = (size_t)(h->end - h->start) * r->per_block;
        int rc = shoal_peer_train_push(h->peer, h->sid, r->ckpt + off, n, r->ckpt_t, r->chunk,
                                       r->p.timeout_ms);
        if (rc)
            return hop_fail(r, i, rc);
    }
    return 0;
}

int shoal_train_remote_recover(shoal_train_remote *r, int64_t *step, char *err, size_t errlen)
{
    int rc = SHOAL_ERR_INTERNAL;
    for (int attempt = 0; attempt < RECOVER_ATTEMPTS; attempt++) {
        for (size_t i = 0; i < r->n_hops; i++)
            if (r->hops[i].failed && (rc = ban(r, r->hops[i].address)))
                goto fail;
        if ((rc = replan(r)))
            goto fail;
        if ((rc = restore(r)) == 0) {
            *step = r->ckpt_t;
            r->err[0] = 0;
            return 0;
        }
    }
fail:
    set_err(err, errlen, "%s", r->err);
    return rc;
}

/* ---- lifecycle --------------------------------------------------------------------- */

void shoal_train_remote_destroy(shoal_train_remote **rp)
{
    if (!rp || !*rp)
        return;
    shoal_train_remote *r = *rp;
    for (size_t i = 0; i < r->n_hops; i++)
        hop_drop(&r->hops[i], !r->hops[i].failed);
    free(r->hops);
    free(r->addrs);
    free(r->banned);
    free(r->ckpt);
    free(r->scratch);
    free(r);
    *rp = NULL;
}

int shoal_train_remote_new(const shoal_gguf *g, const char *const *addrs, size_t n,
                           const shoal_train_remote_params *p, shoal_train_remote **out,
                           char *err, size_t errlen)
{
    *out = NULL;
    if (!p || n == 0 || p->timeout_ms < 1 || p->codec < 0 || p->codec >= SHOAL_CODEC__COUNT) {
        set_err(err, errlen, "bad training chain parameters");
        return SHOAL_ERR_ARG;
    }
    if (sodium_init() < 0) {
        set_err(err, errlen, "libsodium does not start");
        return SHOAL_ERR_INTERNAL;
    }
    shoal_train_remote *r = calloc(1, sizeof *r);
    if (!r) {
        set_err(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    r->p = *p;
    int rc = shoal_hparams_read(g, &r->hp, err, errlen);
    if (rc)
        goto fail;
    if ((rc = shoal_train_span_params_check(&r->hp, &p->span, err, errlen)))
        goto fail;
    if ((rc = shoal_model_id_compute(g, &r->model))) {
        set_err(err, errlen, "cannot compute the model's identity: %s", shoal_strerror(rc));
        goto fail;
    }
    const int L = r->hp.n_layer;
    r->per_block = shoal_train_state_len(&r->hp, 0, 1, p->span.targets, p->span.rank);
    r->chunk = (size_t)p->span.max_tokens * (size_t)r->hp.dim;
    r->addrs = calloc(n, sizeof *r->addrs);
    r->hops = calloc((size_t)L, sizeof *r->hops);
    r->ckpt = malloc((size_t)L * r->per_block * sizeof(float));
    r->scratch = malloc((size_t)L * r->per_block * sizeof(float));
    if (!r->addrs || !r->hops || !r->ckpt || !r->scratch) {
        rc = SHOAL_ERR_NOMEM;
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        shoal_addr a;
        if (shoal_addr_parse(&a, addrs[i]) ||
            shoal_addr_format(&a, r->addrs[i], sizeof r->addrs[i])) {
            rc = SHOAL_ERR_ARG;
            set_err(err, errlen, "'%s' is not a node address (shoal://HOST:PORT/KEY)", addrs[i]);
            goto fail;
        }
    }
    r->n_addrs = n;

    /* the first chain: the fewest hops (client/route.h) */
    shoal_route_cands all, c;
    shoal_route_cands_init(&all);
    shoal_route_cands_init(&c);
    char failed[TR_ERR_MAX];
    size_t n_failed = 0, n_hops = 0;
    shoal_route_want w = want_of(r);
    shoal_route_hop *plan = calloc((size_t)L, sizeof *plan);
    const char **list = malloc(n * sizeof *list);
    rc = plan && list ? 0 : SHOAL_ERR_NOMEM;
    for (size_t i = 0; !rc && i < n; i++)
        list[i] = r->addrs[i];
    if (!rc)
        rc = shoal_remote_lookup(list, n, p->timeout_ms, &all, &n_failed, failed,
                                 sizeof failed);
    for (size_t i = 0; !rc && i < all.n; i++)
        if ((rc = shoal_route_check_model(&all.v[i], &w, err, errlen)) == 0)
            rc = shoal_route_cands_add(&c, all.v[i].address, &all.v[i].info);
    if (!rc)
        rc = shoal_route_plan(c.v, c.n, &w, plan, (size_t)L, &n_hops, err, errlen);
    for (size_t i = 0; !rc && i < n_hops; i++) {
        tr_hop *h = &r->hops[i];
        snprintf(h->address, sizeof h->address, "%s", c.v[plan[i].cand].address);
        h->start = (int)plan[i].start;
        h->end = (int)plan[i].end;
        r->n_hops = i + 1;
        if ((rc = hop_open(r, h)))
            set_err(err, errlen, "%s", r->err);
    }
    if (rc == SHOAL_ERR_NOTFOUND && n_failed) {
        size_t used = strlen(err);
        snprintf(err + used, errlen - used, "; not answering: %s", failed);
    }
    free(plan);
    free(list);
    shoal_route_cands_fini(&all);
    shoal_route_cands_fini(&c);
    if (rc)
        goto fail;
    /* the checkpoint of step 0 */
    int64_t t = 0;
    if ((rc = pull_all(r, &t))) {
        set_err(err, errlen, "%s", r->err);
        goto fail;
    }
    memcpy(r->ckpt, r->scratch, (size_t)L * r->per_block * sizeof(float));
    r->ckpt_t = 0;
    *out = r;
    return 0;
fail:
    shoal_train_remote_destroy(&r);
    return rc;
}
