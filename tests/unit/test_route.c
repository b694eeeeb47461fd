/*
 * Route planning (client/route.h) on made-up candidate lists: exact cover
 * in order, fewest hops (checked against a brute-force search on random
 * lists), sub-ranges of overlapping spans, deterministic ties, gaps named
 * in the error, and candidates left out for another model, codec or
 * session length.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "client/route.h"
#include "kernels/err.h"
#include "proto/codec.h"

#define ALL_CODECS ((1u << SHOAL_CODEC__COUNT) - 1)

static shoal_route_want want_for(uint32_t nblocks)
{
    shoal_route_want w;
    memset(&w, 0, sizeof w);
    snprintf(w.model.name, sizeof w.model.name, "tiny");
    for (int i = 0; i < SHOAL_WIRE_HASH_BYTES; i++)
        w.model.hash[i] = (uint8_t)(0xa0 + i);
    w.nblocks = nblocks;
    w.dim = 64;
    w.max_length = 512;
    w.codec = SHOAL_CODEC_F32;
    return w;
}

/* A candidate of w's model serving a:b, named by port. */
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
    int rc = shoal_route_cands_add(l, addr, &in);
    CHECK(rc == 0);
}

/* hops cover [0, L) exactly once in order and each lies in its node's span */
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

static int plan(const shoal_route_cands *l, const shoal_route_want *w, shoal_route_hop *h,
                size_t *nh, char *err, size_t errlen)
{
    return shoal_route_plan(l->v, l->n, w, h, 64, nh, err, errlen);
}

static void test_single_and_three(void)
{
    shoal_route_want w = want_for(5);
    shoal_route_cands l;
    shoal_route_hop h[64];
    size_t nh;
    char err[512];

    shoal_route_cands_init(&l);
    add(&l, &w, 4001, 0, 5, 100);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0);
    CHECK(nh == 1 && h[0].cand == 0 && h[0].start == 0 && h[0].end == 5);
    shoal_route_cands_fini(&l);

    /* the layout, listed out of order */
    shoal_route_cands_init(&l);
    add(&l, &w, 4003, 4, 5, 100);
    add(&l, &w, 4001, 0, 2, 100);
    add(&l, &w, 4002, 2, 4, 100);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0);
    CHECK(nh == 3 && covers(&l, h, nh, 5));
    CHECK(h[0].cand == 1 && h[1].cand == 2 && h[2].cand == 0);
    CHECK(h[0].end == 2 && h[1].end == 4 && h[2].end == 5);
    shoal_route_cands_fini(&l);
}

static void test_overlap_and_redundant(void)
{
    shoal_route_want w = want_for(6);
    shoal_route_cands l;
    shoal_route_hop h[64];
    size_t nh;
    char err[512];

    /* overlapping spans: the second hop uses a sub-range of its span */
    shoal_route_cands_init(&l);
    add(&l, &w, 4001, 0, 4, 100);
    add(&l, &w, 4002, 2, 6, 100);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0);
    CHECK(nh == 2 && covers(&l, h, nh, 6));
    CHECK(h[1].cand == 1 && h[1].start == 4 && h[1].end == 6);
    shoal_route_cands_fini(&l);

    /* a peer serving everything beats a chain of small ones */
    shoal_route_cands_init(&l);
    add(&l, &w, 4001, 0, 2, 100);
    add(&l, &w, 4002, 2, 4, 100);
    add(&l, &w, 4003, 4, 6, 100);
    add(&l, &w, 4004, 0, 6, 1);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0);
    CHECK(nh == 1 && h[0].cand == 3);
    shoal_route_cands_fini(&l);

    /* nearest-first would take 3 hops (0:2, 2:3, 3:6); furthest reach 2 */
    shoal_route_cands_init(&l);
    add(&l, &w, 4001, 0, 2, 100);
    add(&l, &w, 4002, 0, 3, 100);
    add(&l, &w, 4003, 2, 3, 100);
    add(&l, &w, 4004, 3, 6, 100);
    add(&l, &w, 4005, 1, 5, 100);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0);
    CHECK(nh == 2 && covers(&l, h, nh, 6));
    CHECK(h[0].cand == 1 && h[1].cand == 3);
    shoal_route_cands_fini(&l);
}

static void test_ties(void)
{
    shoal_route_want w = want_for(4);
    shoal_route_cands l;
    shoal_route_hop h[64];
    size_t nh;
    char err[512];

    /* same reach: more free cache wins, whatever the order */
    for (int order = 0; order < 2; order++) {
        shoal_route_cands_init(&l);
        add(&l, &w, order ? 4002 : 4001, 0, 4, order ? 900 : 10);
        add(&l, &w, order ? 4001 : 4002, 0, 4, order ? 10 : 900);
        CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0);
        CHECK(nh == 1 && strstr(l.v[h[0].cand].address, ":4002/") != NULL);
        shoal_route_cands_fini(&l);
    }
    /* same reach and cache: the smaller address wins, whatever the order */
    for (int order = 0; order < 2; order++) {
        shoal_route_cands_init(&l);
        add(&l, &w, order ? 4009 : 4005, 0, 4, 50);
        add(&l, &w, order ? 4005 : 4009, 0, 4, 50);
        CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0);
        CHECK(nh == 1 && strstr(l.v[h[0].cand].address, ":4005/") != NULL);
        shoal_route_cands_fini(&l);
    }
    /* the same record twice: the first */
    shoal_route_cands_init(&l);
    add(&l, &w, 4001, 0, 4, 50);
    add(&l, &w, 4001, 0, 4, 50);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0);
    CHECK(nh == 1 && h[0].cand == 0);
    shoal_route_cands_fini(&l);
}

static void test_gaps(void)
{
    shoal_route_want w = want_for(8);
    shoal_route_cands l;
    shoal_route_hop h[64];
    size_t nh = 99;
    char err[512];

    shoal_route_cands_init(&l);
    add(&l, &w, 4001, 0, 3, 100);
    add(&l, &w, 4002, 5, 8, 100);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == SHOAL_ERR_NOTFOUND);
    CHECK_MSG(!strcmp(err, "no peer serves blocks 3:5"), "%s", err);
    CHECK(nh == 0);
    shoal_route_cands_fini(&l);

    /* every missing range is named, at the start and the end too */
    shoal_route_cands_init(&l);
    add(&l, &w, 4001, 1, 3, 100);
    add(&l, &w, 4002, 4, 6, 100);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == SHOAL_ERR_NOTFOUND);
    CHECK_MSG(!strcmp(err, "no peer serves blocks 0:1, 3:4, 6:8"), "%s", err);
    shoal_route_cands_fini(&l);

    /* no candidates at all */
    shoal_route_cands_init(&l);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == SHOAL_ERR_NOTFOUND);
    CHECK_MSG(!strcmp(err, "no peer serves blocks 0:8"), "%s", err);
    shoal_route_cands_fini(&l);

    /* a short error buffer is cut, never overrun */
    shoal_route_cands_init(&l);
    char small[12];
    memset(small, 'x', sizeof small);
    CHECK(shoal_route_plan(l.v, l.n, &w, h, 64, &nh, small, 10) == SHOAL_ERR_NOTFOUND);
    CHECK(strlen(small) == 9 && small[10] == 'x' && small[11] == 'x');
    shoal_route_cands_fini(&l);

    /* too little room for the plan */
    shoal_route_cands_init(&l);
    add(&l, &w, 4001, 0, 4, 100);
    add(&l, &w, 4002, 4, 8, 100);
    CHECK(shoal_route_plan(l.v, l.n, &w, h, 1, &nh, err, sizeof err) == SHOAL_ERR_ARG);
    CHECK(shoal_route_plan(l.v, l.n, &w, h, 2, &nh, err, sizeof err) == 0 && nh == 2);
    shoal_route_cands_fini(&l);

    w.nblocks = 0;
    CHECK(shoal_route_plan(NULL, 0, &w, h, 64, &nh, err, sizeof err) == SHOAL_ERR_ARG);
}

static void test_left_out(void)
{
    shoal_route_want w = want_for(5);
    shoal_route_cands l;
    shoal_route_hop h[64];
    size_t nh;
    char err[512];

    /* another model (other hash) cannot fill the gap, and says so */
    shoal_route_cands_init(&l);
    add(&l, &w, 4001, 0, 2, 100);
    add(&l, &w, 4002, 2, 4, 100);
    add(&l, &w, 4003, 4, 5, 100);
    l.v[2].info.model_hash[0] ^= 1;
    snprintf(l.v[2].info.model, sizeof l.v[2].info.model, "other");
    CHECK(shoal_route_check_model(&l.v[0], &w, err, sizeof err) == 0);
    CHECK(shoal_route_check_model(&l.v[2], &w, err, sizeof err) == SHOAL_ERR_MODEL);
    CHECK_MSG(strstr(err, ":4003/") && strstr(err, "'other'") && strstr(err, "'tiny'"), "%s",
              err);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == SHOAL_ERR_NOTFOUND);
    CHECK_MSG(!strncmp(err, "no peer serves blocks 4:5 (left out: ", 37) &&
                  strstr(err, "serves model 'other'"),
              "%s", err);
    /* a redundant good peer makes it whole again; the bad one is ignored */
    add(&l, &w, 4004, 3, 5, 100);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0);
    CHECK(nh == 3 && covers(&l, h, nh, 5) && h[2].cand == 3 && h[2].start == 4);
    shoal_route_cands_fini(&l);

    /* same hash but another block count or hidden size: not the same model */
    shoal_route_cands_init(&l);
    add(&l, &w, 4001, 0, 5, 100);
    l.v[0].info.nblocks = 6;
    CHECK(shoal_route_check_model(&l.v[0], &w, err, sizeof err) == SHOAL_ERR_MODEL);
    l.v[0].info.nblocks = 5;
    l.v[0].info.dim = 128;
    CHECK(shoal_route_check_model(&l.v[0], &w, err, sizeof err) == SHOAL_ERR_MODEL);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == SHOAL_ERR_NOTFOUND);
    shoal_route_cands_fini(&l);

    /* a codec the peer does not take, a session too long for it, a bad span */
    shoal_route_cands_init(&l);
    add(&l, &w, 4001, 0, 5, 100);
    add(&l, &w, 4002, 0, 5, 100);
    add(&l, &w, 4003, 0, 5, 100);
    l.v[0].info.codecs = 1u << SHOAL_CODEC_F32;
    l.v[1].info.max_length = 100;
    l.v[2].info.span_start = 3;
    l.v[2].info.span_end = 3;
    w.codec = SHOAL_CODEC_I8B64;
    CHECK(shoal_route_check(&l.v[0], &w, err, sizeof err) == SHOAL_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err, "i8b64") != NULL, "%s", err);
    CHECK(shoal_route_check(&l.v[1], &w, err, sizeof err) == SHOAL_ERR_RANGE);
    CHECK_MSG(strstr(err, "at most 100 tokens, 512 needed") != NULL, "%s", err);
    CHECK(shoal_route_check(&l.v[2], &w, err, sizeof err) == SHOAL_ERR_PROTOCOL);
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == SHOAL_ERR_NOTFOUND);
    CHECK_MSG(strstr(err, "no peer serves blocks 0:5 (left out: ") == err &&
                  strstr(err, "; and 1 more)") != NULL,
              "%s", err);
    /* with f32 and a short context, the first two are fine again */
    w.codec = SHOAL_CODEC_F32;
    w.max_length = 64;
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0 && nh == 1 && h[0].cand != 2);
    /* a span past the model's end is refused as well */
    l.v[2].info.span_start = 2;
    l.v[2].info.span_end = 9;
    CHECK(shoal_route_check(&l.v[2], &w, err, sizeof err) == SHOAL_ERR_PROTOCOL);
    shoal_route_cands_fini(&l);
}

/* Fewest hops by breadth-first search over block positions. */
static size_t brute_min_hops(const shoal_route_cands *l, uint32_t L)
{
    size_t dist[64];
    for (uint32_t i = 0; i <= L; i++)
        dist[i] = SIZE_MAX;
    dist[0] = 0;
    for (uint32_t p = 0; p < L; p++) {
        if (dist[p] == SIZE_MAX)
            continue;
        for (size_t i = 0; i < l->n; i++) {
            const shoal_peer_info *in = &l->v[i].info;
            if (in->span_start > p || in->span_end <= p)
                continue;
            for (uint32_t e = p + 1; e <= in->span_end; e++)
                if (dist[p] + 1 < dist[e])
                    dist[e] = dist[p] + 1;
        }
    }
    return dist[L];
}

static void test_random_optimal(void)
{
    uint64_t s = 12345;
    int checked = 0, gapped = 0;
    for (int iter = 0; iter < 3000; iter++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t L = 1 + (uint32_t)((s >> 33) % 40);
        shoal_route_want w = want_for(L);
        shoal_route_cands l;
        shoal_route_cands_init(&l);
        int nc = (int)((s >> 20) % 12);
        for (int i = 0; i < nc; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t a = (uint32_t)((s >> 33) % L);
            uint32_t b = a + 1 + (uint32_t)((s >> 45) % (L - a));
            add(&l, &w, 4000 + i, a, b, (s >> 10) % 4);
        }
        shoal_route_hop h[64];
        size_t nh;
        char err[512];
        size_t best = brute_min_hops(&l, L);
        int rc = plan(&l, &w, h, &nh, err, sizeof err);
        if (best == SIZE_MAX) {
            CHECK(rc == SHOAL_ERR_NOTFOUND && !strncmp(err, "no peer serves blocks ", 22));
            gapped++;
        } else {
            CHECK_MSG(rc == 0 && nh == best && covers(&l, h, nh, L),
                      "iter %d: rc %d, %zu hops, best %zu", iter, rc, nh, best);
            checked++;
        }
        shoal_route_cands_fini(&l);
    }
    CHECK(checked > 300 && gapped > 300);
}

static void test_list(void)
{
    shoal_route_want w = want_for(4);
    shoal_route_cands l;
    shoal_route_cands_init(&l);
    shoal_peer_info in;
    memset(&in, 0, sizeof in);
    char addr[SHOAL_ADDR_MAX + 8];
    memset(addr, 'a', sizeof addr - 1);
    addr[sizeof addr - 1] = 0;
    CHECK(shoal_route_cands_add(&l, addr, &in) == SHOAL_ERR_RANGE);
    for (int i = 0; i < 100; i++)
        add(&l, &w, 5000 + i, 0, 4, (uint64_t)i);
    CHECK(l.n == 100 && strstr(l.v[99].address, ":5099/") && l.v[99].info.free_tokens == 99);
    shoal_route_cands_fini(&l);
    CHECK(l.v == NULL && l.n == 0);
    shoal_route_cands_fini(&l);
}

/* With an adapter asked for, only nodes that list it are used. */
static void test_adapter(void)
{
    shoal_route_want w = want_for(4);
    shoal_route_cands l;
    shoal_route_cands_init(&l);
    add(&l, &w, 1, 0, 4, 100);   /* the whole model, no adapters */
    add(&l, &w, 2, 0, 2, 100);
    add(&l, &w, 3, 2, 4, 100);
    snprintf(l.v[1].info.adapters, sizeof l.v[1].info.adapters, "zib,poems");
    snprintf(l.v[2].info.adapters, sizeof l.v[2].info.adapters, "poem,zib");
    shoal_route_hop h[64];
    size_t nh = 0;
    char err[512];
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0 && nh == 1 && h[0].cand == 0);
    w.adapter = "zib";
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0 && nh == 2 && h[0].cand == 1 &&
          h[1].cand == 2);
    w.adapter = "poem"; /* a prefix of "poems" on node 2 does not count */
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) != 0);
    CHECK_MSG(strstr(err, "adapter") != NULL, "error does not name the adapter: %s", err);
    w.adapter = "";
    CHECK(plan(&l, &w, h, &nh, err, sizeof err) == 0 && nh == 1);
    shoal_route_cands_fini(&l);
}

int main(void)
{
    test_adapter();
    test_single_and_three();
    test_overlap_and_redundant();
    test_ties();
    test_gaps();
    test_left_out();
    test_random_optimal();
    test_list();
    return check_done();
}
