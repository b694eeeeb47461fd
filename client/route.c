/* Route planning over a list of candidates (see route.h). */
#include "client/route.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "proto/codec.h"

void shoal_route_cands_init(shoal_route_cands *l) { memset(l, 0, sizeof *l); }

void shoal_route_cands_fini(shoal_route_cands *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

int shoal_route_cands_add(shoal_route_cands *l, const char *address, const shoal_peer_info *info)
{
    size_t alen = strnlen(address, SHOAL_ADDR_MAX);
    if (alen >= SHOAL_ADDR_MAX || l->n >= SHOAL_ROUTE_MAX_CANDS)
        return SHOAL_ERR_RANGE;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        if (cap > SHOAL_ROUTE_MAX_CANDS)
            cap = SHOAL_ROUTE_MAX_CANDS;
        shoal_route_cand *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return SHOAL_ERR_NOMEM;
        l->v = v;
        l->cap = cap;
    }
    shoal_route_cand *c = &l->v[l->n++];
    memset(c, 0, sizeof *c);
    memcpy(c->address, address, alen);
    c->info = *info;
    c->info.model[sizeof c->info.model - 1] = 0;
    c->info.software[sizeof c->info.software - 1] = 0;
    return 0;
}

/* Append to a NUL-terminated line in err (cut at errlen). */
static void err_add(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void err_add(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    size_t used = strnlen(err, errlen);
    if (used >= errlen - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
}

static void hex8(const uint8_t *h, char out[17])
{
    for (int i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* A model name fit for a one-line message: printable ASCII only. */
static void clean_name(const char *in, char *out, size_t outlen)
{
    size_t j = 0;
    for (size_t i = 0; in[i] && i < SHOAL_WIRE_MODEL_MAX && j + 1 < outlen; i++) {
        unsigned char ch = (unsigned char)in[i];
        out[j++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[j] = 0;
}

int shoal_route_check_model(const shoal_route_cand *c, const shoal_route_want *w, char *err,
                            size_t errlen)
{
    const shoal_peer_info *in = &c->info;
    if (!memcmp(in->model_hash, w->model.hash, sizeof in->model_hash) &&
        in->nblocks == w->nblocks && in->dim == w->dim)
        return 0;
    char theirs[SHOAL_WIRE_MODEL_MAX], ours[SHOAL_WIRE_MODEL_MAX], th[17], oh[17];
    clean_name(in->model, theirs, sizeof theirs);
    clean_name(w->model.name, ours, sizeof ours);
    hex8(in->model_hash, th);
    hex8(w->model.hash, oh);
    if (err && errlen)
        err[0] = 0;
    err_add(err, errlen,
            "%s serves model '%s' (%s, %u blocks of dim %u), not '%s' (%s, %u blocks of dim %u)",
            c->address, theirs, th, in->nblocks, in->dim, ours, oh, w->nblocks, w->dim);
    return SHOAL_ERR_MODEL;
}

/* Is `name` one of the comma-separated names in `list`? */
static bool serves_adapter(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !memcmp(p, name, n))
            return true;
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

int shoal_route_check(const shoal_route_cand *c, const shoal_route_want *w, char *err,
                      size_t errlen)
{
    int rc = shoal_route_check_model(c, w, err, errlen);
    if (rc)
        return rc;
    const shoal_peer_info *in = &c->info;
    if (err && errlen)
        err[0] = 0;
    if (in->span_start >= in->span_end || in->span_end > in->nblocks) {
        err_add(err, errlen, "%s claims an empty or impossible span %u:%u", c->address,
                in->span_start, in->span_end);
        return SHOAL_ERR_PROTOCOL;
    }
    if (w->codec < 0 || w->codec >= 32 || !(in->codecs & (1u << w->codec))) {
        const char *name = shoal_codec_name(w->codec);
        err_add(err, errlen, "%s does not take the %s codec", c->address, name ? name : "?");
        return SHOAL_ERR_UNSUPPORTED;
    }
    if (w->max_length && in->max_length && in->max_length < w->max_length) {
        err_add(err, errlen, "%s takes sessions of at most %u tokens, %u needed (lower -c)",
                c->address, in->max_length, w->max_length);
        return SHOAL_ERR_RANGE;
    }
    if (c->state == SHOAL_WIRE_STATE_OFFLINE) {
        err_add(err, errlen, "%s is leaving", c->address);
        return SHOAL_ERR_BUSY;
    }
    if (w->adapter && *w->adapter && !serves_adapter(in->adapters, w->adapter)) {
        err_add(err, errlen, "%s does not serve adapter '%s'", c->address, w->adapter);
        return SHOAL_ERR_NOTFOUND;
    }
    return 0;
}

static int usable(const shoal_route_cand *c, const shoal_route_want *w)
{
    char scratch[8];
    return shoal_route_check(c, w, scratch, sizeof scratch) == 0;
}

/* Is a strictly better than b to carry the chain from `pos` on? Both usable
 * and containing pos. */
static int better(const shoal_route_cand *a, size_t ia, const shoal_route_cand *b, size_t ib)
{
    if (a->info.span_end != b->info.span_end)
        return a->info.span_end > b->info.span_end;
    if (a->info.free_tokens != b->info.free_tokens)
        return a->info.free_tokens > b->info.free_tokens;
    int s = strcmp(a->address, b->address);
    if (s)
        return s < 0;
    return ia < ib;
}

int shoal_route_plan(const shoal_route_cand *cands, size_t n, const shoal_route_want *w,
                     shoal_route_hop *hops, size_t max_hops, size_t *n_hops, char *err,
                     size_t errlen)
{
    if (w->nblocks == 0) {
        *n_hops = 0;
        if (err && errlen)
            err[0] = 0;
        err_add(err, errlen, "the model has no blocks");
        return SHOAL_ERR_ARG;
    }
    return shoal_route_plan_range(cands, n, NULL, w, 0, w->nblocks, hops, max_hops, n_hops, err,
                                  errlen);
}

int shoal_route_plan_range(const shoal_route_cand *cands, size_t n, const uint8_t *skip,
                           const shoal_route_want *w, uint32_t a, uint32_t b,
                           shoal_route_hop *hops, size_t max_hops, size_t *n_hops, char *err,
                           size_t errlen)
{
    *n_hops = 0;
    if (err && errlen)
        err[0] = 0;
    if (a >= b || b > w->nblocks) {
        err_add(err, errlen, "blocks %u:%u are not a range of the model's 0:%u", a, b,
                w->nblocks);
        return SHOAL_ERR_ARG;
    }
    size_t nh = 0;
    int gaps = 0;
    uint32_t pos = a;
    while (pos < b) {
        size_t best = n;
        for (size_t i = 0; i < n; i++) {
            const shoal_route_cand *c = &cands[i];
            if ((skip && skip[i]) || c->info.span_start > pos || c->info.span_end <= pos ||
                !usable(c, w))
                continue;
            if (best == n || better(c, i, &cands[best], best))
                best = i;
        }
        if (best < n) {
            uint32_t reach = cands[best].info.span_end < b ? cands[best].info.span_end : b;
            if (!gaps) {
                if (nh == max_hops) {
                    err_add(err, errlen, "a plan needs more than %zu hops", max_hops);
                    return SHOAL_ERR_ARG;
                }
                hops[nh].cand = best;
                hops[nh].start = pos;
                hops[nh].end = reach;
                nh++;
            }
            pos = reach;
            continue;
        }
        /* a gap from pos to the next usable start (or the end) */
        uint32_t end = b;
        for (size_t i = 0; i < n; i++)
            if (!(skip && skip[i]) && cands[i].info.span_start > pos &&
                cands[i].info.span_start < end && usable(&cands[i], w))
                end = cands[i].info.span_start;
        err_add(err, errlen, "%s%u:%u", gaps ? ", " : "no peer serves blocks ", pos, end);
        gaps++;
        pos = end;
    }
    if (!gaps) {
        *n_hops = nh;
        return 0;
    }
    /* say why candidates that would cover a missing block were left out
     * (skipped ones are the caller's business: it knows why) */
    char why[512];
    size_t said = 0, left_out = 0;
    for (size_t i = 0; i < n; i++) {
        if ((skip && skip[i]) || cands[i].info.span_end <= a || cands[i].info.span_start >= b ||
            shoal_route_check(&cands[i], w, why, sizeof why) == 0)
            continue;
        if (said < 2) {
            err_add(err, errlen, "%s%s", said ? "; " : " (left out: ", why);
            said++;
        }
        left_out++;
    }
    if (left_out > said)
        err_add(err, errlen, "; and %zu more", left_out - said);
    if (said)
        err_add(err, errlen, ")");
    return SHOAL_ERR_NOTFOUND;
}

/* ---- least expected time per token (see route.h) ------------------------ */

uint64_t shoal_route_token_bytes(const shoal_route_want *w)
{
    return 2 * ((uint64_t)shoal_codec_size(w->codec, w->dim) + SHOAL_ROUTE_MSG_OVERHEAD);
}

/* What an unknown cost is priced at (the worst known values). */
typedef struct unknowns {
    double rtt, tput, bw; /* bw 0: no transfer cost */
} unknowns;

static int plan_fast_pass(const shoal_route_cand *cands, const shoal_route_cost *costs,
                          size_t n, const shoal_route_want *w, int allow_full,
                          const unknowns *unk, shoal_route_hop *hops, size_t max_hops,
                          size_t *n_hops, double *est_ms)
{
    uint32_t L = w->nblocks;
    double *dist = malloc((L + 1) * sizeof *dist);
    size_t *from_cand = malloc((L + 1) * sizeof *from_cand);
    uint32_t *from_pos = malloc((L + 1) * sizeof *from_pos);
    uint8_t *ok = malloc(n ? n : 1);
    int rc = SHOAL_ERR_NOMEM;
    if (!dist || !from_cand || !from_pos || !ok)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const shoal_route_cand *c = &cands[i];
        ok[i] = usable(c, w) &&
                (allow_full || !w->max_length || c->info.free_tokens >= w->max_length);
    }
    for (uint32_t b = 0; b <= L; b++)
        dist[b] = -1; /* unreached */
    dist[0] = 0;
    double token_bytes = (double)shoal_route_token_bytes(w);
    for (uint32_t b = 0; b < L; b++) {
        if (dist[b] < 0)
            continue;
        for (size_t i = 0; i < n; i++) {
            const shoal_peer_info *in = &cands[i].info;
            if (!ok[i] || in->span_start > b || in->span_end <= b)
                continue;
            double rtt = costs && costs[i].rtt_ms > 0 ? costs[i].rtt_ms : unk->rtt;
            double tput = costs && costs[i].throughput > 0 ? costs[i].throughput : unk->tput;
            double bw = costs && costs[i].bandwidth > 0 ? costs[i].bandwidth : unk->bw;
            double xfer = bw > 0 ? 1000.0 * token_bytes / bw : 0;
            uint32_t end = in->span_end < L ? in->span_end : L;
            for (uint32_t e = b + 1; e <= end; e++) {
                double d = dist[b] + rtt + xfer + 1000.0 * (double)(e - b) / tput;
                if (dist[e] < 0 || d < dist[e] - 1e-9) {
                    dist[e] = d;
                    from_cand[e] = i;
                    from_pos[e] = b;
                }
            }
        }
    }
    rc = SHOAL_ERR_NOTFOUND;
    if (dist[L] < 0)
        goto out;
    size_t nh = 0;
    for (uint32_t e = L; e > 0; e = from_pos[e])
        nh++;
    rc = SHOAL_ERR_ARG;
    if (nh > max_hops)
        goto out;
    size_t k = nh;
    for (uint32_t e = L; e > 0; e = from_pos[e]) {
        k--;
        hops[k].cand = from_cand[e];
        hops[k].start = from_pos[e];
        hops[k].end = e;
    }
    *n_hops = nh;
    if (est_ms)
        *est_ms = dist[L];
    rc = 0;
out:
    free(dist);
    free(from_cand);
    free(from_pos);
    free(ok);
    return rc;
}

int shoal_route_plan_fast(const shoal_route_cand *cands, const shoal_route_cost *costs,
                          size_t n, const shoal_route_want *w, shoal_route_hop *hops,
                          size_t max_hops, size_t *n_hops, double *est_ms, char *err,
                          size_t errlen)
{
    *n_hops = 0;
    if (err && errlen)
        err[0] = 0;
    if (w->nblocks == 0) {
        err_add(err, errlen, "the model has no blocks");
        return SHOAL_ERR_ARG;
    }
    /* unknowns are the worst known values */
    unknowns unk = {0, 0, 0};
    for (size_t i = 0; costs && i < n; i++) {
        if (costs[i].rtt_ms > unk.rtt)
            unk.rtt = costs[i].rtt_ms;
        if (costs[i].throughput > 0 && (unk.tput == 0 || costs[i].throughput < unk.tput))
            unk.tput = costs[i].throughput;
        if (costs[i].bandwidth > 0 && (unk.bw == 0 || costs[i].bandwidth < unk.bw))
            unk.bw = costs[i].bandwidth;
    }
    if (!(unk.rtt > 0))
        unk.rtt = 100;
    if (!(unk.tput > 0))
        unk.tput = 1000;
    if (!(unk.bw > 0) || !isfinite(unk.bw))
        unk.bw = 0;
    int rc = plan_fast_pass(cands, costs, n, w, 0, &unk, hops, max_hops, n_hops, est_ms);
    if (rc == SHOAL_ERR_NOTFOUND) /* only with servers whose cache is full, then */
        rc = plan_fast_pass(cands, costs, n, w, 1, &unk, hops, max_hops, n_hops, est_ms);
    if (rc == SHOAL_ERR_NOTFOUND || rc == SHOAL_ERR_ARG) {
        /* the same words as the fewest-hops planner for the same failure */
        size_t nh2 = 0;
        shoal_route_hop *tmp = malloc(w->nblocks * sizeof *tmp);
        int rc2 = tmp ? shoal_route_plan(cands, n, w, tmp, w->nblocks, &nh2, err, errlen)
                      : SHOAL_ERR_NOMEM;
        free(tmp);
        if (rc == SHOAL_ERR_ARG && rc2 == 0) {
            if (err && errlen)
                err[0] = 0;
            err_add(err, errlen, "a plan needs more than %zu hops", max_hops);
        }
    } else if (rc == SHOAL_ERR_NOMEM) {
        err_add(err, errlen, "out of memory");
    }
    return rc;
}
