/*
 * The remote sequence (see remote.h): one blocking peer per hop, all on one
 * ZeroMQ context owned by the sequence, driven from the caller's thread.
 *
 * A token's trip is strictly sequential (hop k + 1 needs hop k's output),
 * so one thread suffices and there is nothing to overlap within a sequence;
 * the cost per hop is one encrypted round trip plus the codec.
 *
 * Memory: the per-hop history grows by doubling up to max_length positions,
 * so a short generation with a long context does not hold a full
 * (max_length, dim) buffer per hop; a decode step allocates only when the
 * history crosses a power of two.
 */
#include "client/remote.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "kernels/err.h"
#include "proto/codec.h"
#include "swarm/peer.h"
#include "swarm/transport.h"

#define REMOTE_ERR_MAX 1024
#define REMOTE_CLOSE_MS 2000      /* deadline of each close at the end */
#define REMOTE_HIST_FIRST 256     /* positions of history reserved at first */
#define REMOTE_LOOKUP_THREADS 16  /* INFO requests in flight at once */

typedef struct remote_hop {
    shoal_peer *peer;
    char address[SHOAL_ADDR_MAX];
    uint32_t start, end;  /* blocks [start, end) */
    uint64_t session_id;  /* != 0 */
    uint64_t step_id;     /* last step sent */
    int open;             /* the node holds the session */
    float *hist;          /* (hist_cap, dim): inputs sent at each position */
    uint32_t hist_cap;
} remote_hop;

struct shoal_remote {
    void *zctx;
    remote_hop *hops;
    size_t n_hops;
    uint32_t dim;
    shoal_remote_params p;
    int len;    /* positions every hop holds */
    int broken; /* error code of a failure that ended the sequence, or 0 */
    char err[REMOTE_ERR_MAX];
};

shoal_remote_params shoal_remote_params_default(void)
{
    shoal_remote_params p = {.codec = SHOAL_CODEC_F32, .timeout_ms = 30000, .max_length = 0};
    return p;
}

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

/* The peer's last error without its leading address (the caller names the
 * peer itself). */
static const char *peer_reason(const shoal_peer *peer, const char *address)
{
    const char *e = shoal_peer_last_error(peer);
    size_t al = strlen(address);
    if (!strncmp(e, address, al)) {
        e += al;
        while (*e == ':' || *e == ' ')
            e++;
    }
    return *e ? e : "failed";
}

/* One line about call failure rc of the peer at address. */
static void describe_failure(char *out, size_t outlen, const shoal_peer *peer,
                             const char *address, const char *what, int rc, int timeout_ms)
{
    if (rc == SHOAL_ERR_TIMEOUT)
        set_err(out, outlen, "peer %s%s did not answer in %g s", address, what,
                timeout_ms / 1000.0);
    else if (peer)
        set_err(out, outlen, "peer %s%s: %s", address, what, peer_reason(peer, address));
    else
        set_err(out, outlen, "peer %s%s: %s", address, what, shoal_strerror(rc));
}

static void hop_failure(shoal_remote *r, const remote_hop *h, int rc)
{
    char what[48];
    snprintf(what, sizeof what, " (blocks %u:%u)", h->start, h->end);
    describe_failure(r->err, sizeof r->err, h->peer, h->address, what, rc, r->p.timeout_ms);
}

/* ---- lookup ---------------------------------------------------------- */

typedef struct lookup_job {
    const char *address;
    void *zctx;
    int timeout_ms;
    int rc;
    shoal_peer_info info;
    char err[512];
} lookup_job;

static void *lookup_run(void *arg)
{
    lookup_job *j = arg;
    shoal_peer_params pp = shoal_peer_params_default();
    pp.zmq_ctx = j->zctx;
    shoal_peer *peer = NULL;
    j->rc = shoal_peer_connect(j->address, &pp, &peer);
    if (j->rc) {
        set_err(j->err, sizeof j->err, "%s: %s", j->address,
                j->rc == SHOAL_ERR_FORMAT ? "not a node address" : shoal_strerror(j->rc));
        return NULL;
    }
    j->rc = shoal_peer_get_info(peer, &j->info, j->timeout_ms);
    if (j->rc)
        describe_failure(j->err, sizeof j->err, peer, j->address, "", j->rc, j->timeout_ms);
    shoal_peer_destroy(&peer);
    return NULL;
}

int shoal_remote_lookup(const char *const *addrs, size_t n, int timeout_ms,
                        shoal_route_cands *out, size_t *n_failed, char *failed,
                        size_t failed_len)
{
    *n_failed = 0;
    if (failed && failed_len)
        failed[0] = 0;
    if (n == 0)
        return 0;
    if (sodium_init() < 0)
        return SHOAL_ERR_INTERNAL;
    lookup_job *jobs = calloc(n, sizeof *jobs);
    void *zctx = shoal_transport_ctx_new();
    int rc = 0;
    if (!jobs || !zctx) {
        rc = jobs ? SHOAL_ERR_IO : SHOAL_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        jobs[i].address = addrs[i];
        jobs[i].zctx = zctx;
        jobs[i].timeout_ms = timeout_ms;
    }
    for (size_t first = 0; first < n; first += REMOTE_LOOKUP_THREADS) {
        size_t k = n - first < REMOTE_LOOKUP_THREADS ? n - first : REMOTE_LOOKUP_THREADS;
        pthread_t th[REMOTE_LOOKUP_THREADS];
        int started[REMOTE_LOOKUP_THREADS];
        for (size_t i = 0; i < k; i++) {
            started[i] = pthread_create(&th[i], NULL, lookup_run, &jobs[first + i]) == 0;
            if (!started[i])
                lookup_run(&jobs[first + i]); /* no thread: ask it here */
        }
        for (size_t i = 0; i < k; i++)
            if (started[i])
                pthread_join(th[i], NULL);
    }
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].rc) {
            if (failed && failed_len) {
                size_t used = strlen(failed);
                if (used + 1 < failed_len)
                    snprintf(failed + used, failed_len - used, "%s%s", used ? "; " : "",
                             jobs[i].err);
            }
            (*n_failed)++;
            continue;
        }
        if ((rc = shoal_route_cands_add(out, addrs[i], &jobs[i].info)))
            goto out;
    }
out:
    if (zctx)
        zmq_ctx_term(zctx);
    free(jobs);
    return rc;
}

/* ---- the sequence ---------------------------------------------------- */

int shoal_remote_new(const shoal_route_cand *cands, const shoal_route_hop *hops, size_t n_hops,
                     uint32_t dim, const shoal_remote_params *params, shoal_remote **out,
                     char *err, size_t errlen)
{
    *out = NULL;
    if (!params || params->max_length == 0 || dim == 0 || n_hops == 0 ||
        params->codec < 0 || params->codec >= SHOAL_CODEC__COUNT) {
        set_err(err, errlen, "bad remote sequence parameters");
        return SHOAL_ERR_ARG;
    }
    if (sodium_init() < 0) {
        set_err(err, errlen, "libsodium does not start");
        return SHOAL_ERR_INTERNAL;
    }
    int rc = SHOAL_ERR_NOMEM;
    shoal_remote *r = calloc(1, sizeof *r);
    if (!r || !(r->hops = calloc(n_hops, sizeof *r->hops))) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    r->n_hops = n_hops;
    r->dim = dim;
    r->p = *params;
    if (!(r->zctx = shoal_transport_ctx_new())) {
        rc = SHOAL_ERR_IO;
        set_err(err, errlen, "cannot start ZeroMQ");
        goto fail;
    }
    shoal_peer_params pp = shoal_peer_params_default();
    pp.zmq_ctx = r->zctx;
    for (size_t i = 0; i < n_hops; i++) {
        remote_hop *h = &r->hops[i];
        const shoal_route_cand *c = &cands[hops[i].cand];
        snprintf(h->address, sizeof h->address, "%s", c->address);
        h->start = hops[i].start;
        h->end = hops[i].end;
        h->hist_cap = params->max_length < REMOTE_HIST_FIRST ? params->max_length
                                                              : REMOTE_HIST_FIRST;
        if (!(h->hist = malloc((size_t)h->hist_cap * dim * sizeof *h->hist))) {
            rc = SHOAL_ERR_NOMEM;
            set_err(err, errlen, "out of memory");
            goto fail;
        }
        if ((rc = shoal_peer_connect(h->address, &pp, &h->peer))) {
            set_err(err, errlen, "peer %s: cannot connect (%s)", h->address,
                    shoal_strerror(rc));
            goto fail;
        }
        do
            randombytes_buf(&h->session_id, sizeof h->session_id);
        while (h->session_id == 0);
        rc = shoal_peer_session_open(h->peer, h->session_id, h->start, h->end,
                                     params->max_length, params->timeout_ms);
        if (rc) {
            hop_failure(r, h, rc);
            set_err(err, errlen, "%s", r->err);
            goto fail;
        }
        h->open = 1;
    }
    *out = r;
    return 0;
fail:
    shoal_remote_destroy(&r);
    return rc;
}

void shoal_remote_destroy(shoal_remote **rp)
{
    if (!rp || !*rp)
        return;
    shoal_remote *r = *rp;
    int close_ms = r->p.timeout_ms < REMOTE_CLOSE_MS ? r->p.timeout_ms : REMOTE_CLOSE_MS;
    for (size_t i = 0; r->hops && i < r->n_hops; i++) {
        remote_hop *h = &r->hops[i];
        if (h->open)
            shoal_peer_session_close(h->peer, h->session_id, close_ms); /* best effort */
        shoal_peer_destroy(&h->peer);
        free(h->hist);
    }
    free(r->hops);
    if (r->zctx)
        zmq_ctx_term(r->zctx);
    free(r);
    *rp = NULL;
}

/* Room in h's history for positions [0, need). */
static int hist_reserve(shoal_remote *r, remote_hop *h, uint32_t need)
{
    if (need <= h->hist_cap)
        return 0;
    uint32_t cap = h->hist_cap ? h->hist_cap : 1;
    while (cap < need)
        cap = cap > r->p.max_length / 2 ? r->p.max_length : cap * 2;
    float *nh = realloc(h->hist, (size_t)cap * r->dim * sizeof *nh);
    if (!nh)
        return SHOAL_ERR_NOMEM;
    h->hist = nh;
    h->hist_cap = cap;
    return 0;
}

int shoal_remote_blocks(shoal_remote *r, int pos, int n, float *x)
{
    if (r->broken)
        return r->broken;
    r->err[0] = 0;
    if (n < 1 || pos < 0 || pos > r->len) {
        set_err(r->err, sizeof r->err, "bad step: %d tokens at position %d of %d", n, pos,
                r->len);
        return SHOAL_ERR_ARG;
    }
    if ((uint32_t)n > r->p.max_length - (uint32_t)pos) {
        set_err(r->err, sizeof r->err, "the sessions hold %u positions", r->p.max_length);
        return SHOAL_ERR_CONTEXT;
    }
    const size_t row = r->dim;
    for (size_t i = 0; i < r->n_hops; i++) {
        remote_hop *h = &r->hops[i];
        int rc = hist_reserve(r, h, (uint32_t)(pos + n));
        if (rc) {
            set_err(r->err, sizeof r->err, "out of memory for the history of blocks %u:%u",
                    h->start, h->end);
            return rc;
        }
        memcpy(h->hist + (size_t)pos * row, x, (size_t)n * row * sizeof *x);
        rc = shoal_peer_session_step(h->peer, h->session_id, ++h->step_id, (uint32_t)pos, x, n,
                                     (int)r->dim, r->p.codec, r->p.timeout_ms);
        if (rc) {
            /* FAILOVER (next issue) goes here: ban h's node for a while,
             * plan replacements for exactly blocks [h->start, h->end) from
             * fresh candidates (route.h, the node excluded), open sessions on
             * them, replay h->hist[0 .. pos + n) through them (positions
             * 0..pos-1 rebuild their caches; pos..pos+n-1 yields x again from
             * the history, since x may hold a partial answer), splice them
             * into r->hops in place of h and carry on with hop i + 1. */
            hop_failure(r, h, rc);
            if (rc == SHOAL_ERR_TIMEOUT)
                h->open = 0; /* the node may be gone: do not wait on it to close */
            r->broken = rc;
            return rc;
        }
    }
    r->len = pos + n;
    return 0;
}

int shoal_remote_len(const shoal_remote *r) { return r->len; }

void shoal_remote_describe(const shoal_remote *r, char *out, size_t outlen)
{
    if (!out || !outlen)
        return;
    out[0] = 0;
    size_t used = 0;
    for (size_t i = 0; i < r->n_hops && used + 1 < outlen; i++) {
        int k = snprintf(out + used, outlen - used, "%s%u:%u %s", i ? ", " : "",
                         r->hops[i].start, r->hops[i].end, r->hops[i].address);
        if (k < 0)
            break;
        used += (size_t)k;
    }
}

const char *shoal_remote_last_error(const shoal_remote *r) { return r->err; }
