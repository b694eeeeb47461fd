/*
 * Least-expected-time routing (shoal_route_plan_fast, client/route.h) on
 * made-up candidate lists: the plan's cost equals an exhaustive search's
 * minimum over every chain on 2000 random lists, a fast far node loses to a
 * near slow one when that is cheaper (and the other way round), with
 * nothing known it is the fewest hops, servers without free cache are
 * avoided unless nothing else covers their blocks, a gap gives the
 * same error as the fewest-hops planner, and a narrow link (measured
 * bandwidth) loses to a wide one, by the transfer time of one token's
 * hidden state in the client's codec.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "client/route.h"
#include "kernels/err.h"
#include "proto/codec.h"

#define ALL_CODECS ((1u << SHOAL_CODEC__COUNT) - 1)

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static shoal_route_want want_for(uint32_t nblocks)
{
    shoal_route_want w;
    memset(&w, 0, sizeof w);
    snprintf(w.model.name, sizeof w.model.name, "tiny");
    for (int i = 0; i < SHOAL_WIRE_HASH_BYTES; i++)
        w.model.hash[i] = (uint8_t)(0x10 + i);
    w.nblocks = nblocks;
    w.dim = 64;
    w.max_length = 512;
    w.codec = SHOAL_CODEC_F32;
    return w;
}

static void add(shoal_route_cands *l, const shoal_route_want *w, int port, uint32_t a, uint32_t b,
                uint64_t free_tokens)
{
    shoal_peer_info in;
    memset(&in, 0, sizeof in);
    snprintf(in.model, sizeof in.model, "%s", w->model.name);
    memcpy(in.model_hash, w->model.hash, sizeof in.model_hash);
    in.span_start = a;
    in.span_end = b;
    in.nblocks = w->nblocks;
    in.dim = w->dim;
    in.free_tokens = free_tokens;
    in.max_length = 4096;
    in.codecs = ALL_CODECS;
    in.version = 1;
    char addr[SHOAL_ADDR_MAX];
    snprintf(addr, sizeof addr,
             "shoal://127.0.0.1:%d/"
             "00000000000000000000000000000000000000000000000000000000000000%02x",
             port, port % 256);
    CHECK(shoal_route_cands_add(l, addr, &in) == 0);
}

/* bytes per token of want_for's wants in f32: 64 values each way + overhead */
#define TOKEN_BYTES (2.0 * (64 * 4 + SHOAL_ROUTE_MSG_OVERHEAD))

static double xfer_ms(const shoal_route_cost *c)
{
    return c->bandwidth > 0 ? 1000.0 * TOKEN_BYTES / c->bandwidth : 0;
}

static double hop_cost(const shoal_route_cost *c, const shoal_route_hop *h)
{
    return c[h->cand].rtt_ms + xfer_ms(&c[h->cand]) +
           1000.0 * (double)(h->end - h->start) / c[h->cand].throughput;
}

/* The least cost of a chain over blocks [pos, L) by trying every one. */
static double brute(const shoal_route_cands *l, const shoal_route_cost *c, uint32_t pos,
                    uint32_t L)
{
    if (pos == L)
        return 0;
    double best = INFINITY;
    for (size_t i = 0; i < l->n; i++) {
        const shoal_peer_info *in = &l->v[i].info;
        if (in->span_start > pos || in->span_end <= pos)
            continue;
        for (uint32_t e = pos + 1; e <= in->span_end && e <= L; e++) {
            double x = c[i].rtt_ms + xfer_ms(&c[i]) +
                       1000.0 * (double)(e - pos) / c[i].throughput + brute(l, c, e, L);
            if (x < best)
                best = x;
        }
    }
    return best;
}

static int covers(const shoal_route_cands *l, const shoal_route_hop *h, size_t nh, uint32_t L)
{
    uint32_t pos = 0;
    for (size_t i = 0; i < nh; i++) {
        const shoal_peer_info *in = &l->v[h[i].cand].info;
        if (h[i].cand >= l->n || h[i].start != pos || h[i].end <= h[i].start ||
            h[i].start < in->span_start || h[i].end > in->span_end)
            return 0;
        pos = h[i].end;
    }
    return pos == L;
}

static void test_exhaustive(void)
{
    int wrong = 0, found = 0;
    for (int trial = 0; trial < 2000; trial++) {
        uint32_t L = 1 + rnd(7);
        shoal_route_want w = want_for(L);
        shoal_route_cands l;
        shoal_route_cands_init(&l);
        size_t n = 1 + rnd(7);
        shoal_route_cost c[8];
        for (size_t i = 0; i < n; i++) {
            uint32_t a = rnd(L), b = a + 1 + rnd(L - a);
            add(&l, &w, 4000 + (int)i, a, b, 100000);
            c[i].rtt_ms = 0.1 + rnd(1000) / 10.0;
            c[i].throughput = 1 + rnd(10000);
            c[i].bandwidth = 1e3 * (1 + rnd(100000)); /* 1 kB/s .. 100 MB/s */
        }
        shoal_route_hop h[16];
        size_t nh = 0;
        double est = -1;
        char err[256];
        int rc = shoal_route_plan_fast(l.v, c, l.n, &w, h, 16, &nh, &est, err, sizeof err);
        double best = brute(&l, c, 0, L);
        if (isinf(best)) {
            wrong += rc != SHOAL_ERR_NOTFOUND;
        } else {
            found++;
            double sum = 0;
            for (size_t k = 0; k < nh; k++)
                sum += hop_cost(c, &h[k]);
            wrong += rc != 0 || !covers(&l, h, nh, L) || fabs(est - best) > 1e-6 * best ||
                     fabs(sum - est) > 1e-6 * best;
        }
        shoal_route_cands_fini(&l);
    }
    CHECK_MSG(wrong == 0, "%d of 2000 plans were not the cheapest", wrong);
    CHECK(found > 500);
}

static void test_tradeoffs(void)
{
    shoal_route_want w = want_for(4);
    shoal_route_cands l;
    shoal_route_cands_init(&l);
    add(&l, &w, 1, 0, 4, 100000);   /* one hop, but slow */
    add(&l, &w, 2, 0, 2, 100000);   /* two fast hops */
    add(&l, &w, 3, 2, 4, 100000);
    shoal_route_cost c[3] = {{1, 100, 0}, {1, 10000, 0}, {1, 10000, 0}};
    shoal_route_hop h[8];
    size_t nh;
    double est;
    char err[256];
    /* slow: 1 + 4 * 10 = 41 ms; fast pair: 2 * (1 + 0.2) = 2.4 ms */
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK(nh == 2 && h[0].cand == 1 && h[1].cand == 2 && fabs(est - 2.4) < 1e-9);
    /* far fast pair: 2 * (50 + 0.2) = 100.4 ms against 41 ms */
    c[1].rtt_ms = c[2].rtt_ms = 50;
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK(nh == 1 && h[0].cand == 0 && fabs(est - 41) < 1e-9);
    /* nothing known: the fewest hops */
    CHECK(shoal_route_plan_fast(l.v, NULL, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK(nh == 1 && h[0].cand == 0);
    /* unknown values are the worst known (1 ms, 100 tokens/s): the unknown
     * one-hop node is priced at 1 + 40 = 41 ms, the known pair costs
     * (1 + 10) + (1 + 20) = 32 ms */
    shoal_route_cost u[3] = {{0, 0, 0}, {1, 200, 0}, {1, 100, 0}};
    CHECK(shoal_route_plan_fast(l.v, u, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK(nh == 2 && h[0].cand == 1);
    /* too few hops allowed */
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 0, &nh, &est, err, sizeof err) ==
          SHOAL_ERR_ARG);
    shoal_route_cands_fini(&l);
}

static void test_free_cache(void)
{
    shoal_route_want w = want_for(4);
    shoal_route_cands l;
    shoal_route_cands_init(&l);
    add(&l, &w, 1, 0, 4, 100);      /* fastest, but no room for 512 tokens */
    add(&l, &w, 2, 0, 4, 100000);
    shoal_route_cost c[2] = {{0.1, 100000, 0}, {5, 1000, 0}};
    shoal_route_hop h[8];
    size_t nh;
    double est;
    char err[256];
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK(nh == 1 && h[0].cand == 1);
    /* nobody else covers block 3: the full one is used after all */
    l.v[1].info.span_end = 3;
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK(covers(&l, h, nh, 4));
    shoal_route_cands_fini(&l);
}

static void test_gap(void)
{
    shoal_route_want w = want_for(6);
    shoal_route_cands l;
    shoal_route_cands_init(&l);
    add(&l, &w, 1, 0, 2, 100000);
    add(&l, &w, 2, 4, 6, 100000);
    shoal_route_cost c[2] = {{1, 10, 0}, {1, 10, 0}};
    shoal_route_hop h[8];
    size_t nh = 7, nh2;
    char err[256], err2[256];
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 8, &nh, NULL, err, sizeof err) ==
          SHOAL_ERR_NOTFOUND);
    CHECK(nh == 0);
    CHECK(shoal_route_plan(l.v, l.n, &w, h, 8, &nh2, err2, sizeof err2) == SHOAL_ERR_NOTFOUND);
    CHECK_MSG(!strcmp(err, err2), "'%s' vs '%s'", err, err2);
    CHECK(strstr(err, "2:4") != NULL);
    shoal_route_cands_fini(&l);
}

static void test_bandwidth(void)
{
    shoal_route_want w = want_for(4);
    shoal_route_cands l;
    shoal_route_cands_init(&l);
    add(&l, &w, 1, 0, 4, 100000);   /* one hop, behind a narrow link */
    add(&l, &w, 2, 0, 2, 100000);   /* two hops on wide links */
    add(&l, &w, 3, 2, 4, 100000);
    shoal_route_hop h[8];
    size_t nh;
    double est;
    char err[256];
    /* f32, dim 64: 2 * (256 + 128) = 768 bytes a token */
    CHECK(shoal_route_token_bytes(&w) == 768);
    /* without bandwidths: one hop (0.1 + 0.04) beats two (2 * (0.1 + 0.02)) */
    shoal_route_cost c[3] = {{0.1, 100000, 0}, {0.1, 100000, 0}, {0.1, 100000, 0}};
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK(nh == 1 && h[0].cand == 0);
    /* 250 kB/s (2 Mbit/s) against 100 MB/s: 3.072 ms against 2 * 0.00768 ms */
    c[0].bandwidth = 250e3;
    c[1].bandwidth = c[2].bandwidth = 100e6;
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK(nh == 2 && h[0].cand == 1 && h[1].cand == 2);
    CHECK_MSG(fabs(est - (2 * (0.1 + 0.02) + 2 * 768 * 1000.0 / 100e6)) < 1e-9, "est %g", est);
    /* int8 shrinks the hidden state: 2 * (68 + 128) = 392 bytes, 1.568 ms:
     * still more than the second hop's 0.1 ms round trip */
    w.codec = SHOAL_CODEC_I8B64;
    CHECK(shoal_route_token_bytes(&w) == 392);
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK(nh == 2);
    /* a narrow link that costs less than a round trip keeps the one hop */
    c[0].bandwidth = 50e6;
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK(nh == 1 && h[0].cand == 0);
    /* an unknown bandwidth is the narrowest known: the one-hop node is
     * priced at 250 kB/s when the others are measured so */
    w.codec = SHOAL_CODEC_F32;
    c[0].bandwidth = 0;
    c[1].bandwidth = 100e6;
    c[2].bandwidth = 250e3;
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK_MSG(nh == 1 && h[0].cand == 0 &&
              fabs(est - (0.1 + 0.04 + 768 * 1000.0 / 250e3)) < 1e-9, "nh %zu est %g", nh, est);
    /* hostile numbers do not break the plan: NaN is unknown, infinity free */
    c[0].bandwidth = NAN;
    c[1].bandwidth = INFINITY;
    c[2].bandwidth = -5;
    CHECK(shoal_route_plan_fast(l.v, c, l.n, &w, h, 8, &nh, &est, err, sizeof err) == 0);
    CHECK(covers(&l, h, nh, 4) && isfinite(est));
    shoal_route_cands_fini(&l);
}

int main(void)
{
    test_exhaustive();
    test_tradeoffs();
    test_free_cache();
    test_gap();
    test_bandwidth();
    return check_done();
}
