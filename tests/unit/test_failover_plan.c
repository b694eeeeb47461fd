/*
 * The pure parts of failover, on made-up data and a made-up clock:
 *
 *   health   a failed peer is banned for ban_ms, doubling on each failure
 *            while it is remembered as failing, capped at ban_max_ms; bans
 *            end on time or when lifted (the count stays); failures are
 *            forgotten forget_ms after the last ban ended; RTT means; a
 *            full table reuses the quietest entry; bad parameters.
 *   ranges   shoal_route_plan_range plans exactly [a, b): hops clipped at
 *            b, other span boundaries than the chain had, skipped
 *            candidates left out, the missing sub-ranges named, leaving
 *            nodes (state OFFLINE) never used, bad ranges refused; and on
 *            random lists the plan for [a, b) has the fewest hops (brute
 *            force) and covers exactly [a, b).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "client/health.h"
#include "client/route.h"
#include "kernels/err.h"
#include "proto/codec.h"

static void test_health(void)
{
    shoal_health *h = NULL;
    shoal_health_params p = {.ban_ms = 100, .ban_max_ms = 350, .forget_ms = 1000};
    CHECK(shoal_health_new(&p, &h) == 0 && h);
    const char *a = "shoal://127.0.0.1:1/aa", *b = "shoal://127.0.0.1:2/bb";
    CHECK(shoal_health_banned_for(h, a, 0) == 0);
    CHECK(shoal_health_failures(h, a, 0) == 0);
    /* 100, 200, then capped at 350 */
    CHECK(shoal_health_ban(h, a, 1000) == 100);
    CHECK(shoal_health_banned_for(h, a, 1050) == 50);
    CHECK(shoal_health_banned_for(h, a, 1100) == 0);
    CHECK(shoal_health_banned_for(h, b, 1050) == 0); /* others untouched */
    CHECK(shoal_health_ban(h, a, 1200) == 200);
    CHECK(shoal_health_failures(h, a, 1200) == 2);
    CHECK(shoal_health_ban(h, a, 1500) == 350);
    CHECK(shoal_health_ban(h, a, 1900) == 350);
    CHECK(shoal_health_banned_for(h, a, 2000) == 250);
    /* lifted: usable at once, but the count stays */
    shoal_health_lift(h, a);
    CHECK(shoal_health_banned_for(h, a, 2000) == 0);
    CHECK(shoal_health_failures(h, a, 2000) == 4);
    CHECK(shoal_health_ban(h, a, 2100) == 350);
    /* forgotten 1000 ms after the ban ended (2450): short again */
    CHECK(shoal_health_failures(h, a, 3400) == 5);
    CHECK(shoal_health_failures(h, a, 3450) == 0);
    CHECK(shoal_health_ban(h, a, 3500) == 100);
    /* a new ban never shortens a longer one */
    CHECK(shoal_health_ban(h, b, 0) == 100);
    CHECK(shoal_health_ban(h, b, 10) == 200);
    CHECK(shoal_health_banned_for(h, b, 10) == 200);
    /* round trips */
    CHECK(shoal_health_rtt(h, "shoal://127.0.0.1:3/cc") < 0);
    shoal_health_rtt_add(h, "shoal://127.0.0.1:3/cc", 8);
    CHECK(shoal_health_rtt(h, "shoal://127.0.0.1:3/cc") == 8);
    shoal_health_rtt_add(h, "shoal://127.0.0.1:3/cc", 16);
    CHECK(shoal_health_rtt(h, "shoal://127.0.0.1:3/cc") == 10);
    shoal_health_rtt_add(h, "shoal://127.0.0.1:3/cc", -1); /* ignored */
    CHECK(shoal_health_rtt(h, "shoal://127.0.0.1:3/cc") == 10);
    shoal_health_destroy(&h);
    CHECK(h == NULL);
    shoal_health_destroy(&h);

    /* a full table: banned entries stay, the quietest is reused */
    CHECK(shoal_health_new(NULL, &h) == 0);
    char addr[64];
    for (int i = 0; i < SHOAL_HEALTH_MAX; i++) {
        snprintf(addr, sizeof addr, "shoal://10.0.0.1:%d/k", i + 1);
        shoal_health_ban(h, addr, i < 10 ? 1e9 - 1e5 : 1e9); /* 10 early bans end first */
    }
    CHECK(shoal_health_ban(h, "shoal://10.0.0.2:1/new", 1e9 + 10) > 0);
    CHECK(shoal_health_banned_for(h, "shoal://10.0.0.2:1/new", 1e9 + 10) > 0);
    CHECK(shoal_health_banned_for(h, "shoal://10.0.0.1:4000/k", 1e9 + 10) > 0);
    int gone = 0;
    for (int i = 0; i < 10; i++) {
        snprintf(addr, sizeof addr, "shoal://10.0.0.1:%d/k", i + 1);
        gone += shoal_health_failures(h, addr, 1e9 + 10) == 0;
    }
    CHECK(gone == 1);
    shoal_health_destroy(&h);

    shoal_health_params bad = {.ban_ms = 0, .ban_max_ms = 10, .forget_ms = 10};
    CHECK(shoal_health_new(&bad, &h) == SHOAL_ERR_ARG && h == NULL);
    bad = (shoal_health_params){.ban_ms = 10, .ban_max_ms = 5, .forget_ms = 10};
    CHECK(shoal_health_new(&bad, &h) == SHOAL_ERR_ARG);
}

/* ---- sub-range planning ------------------------------------------------- */

static shoal_route_want want_for(uint32_t nblocks)
{
    shoal_route_want w;
    memset(&w, 0, sizeof w);
    snprintf(w.model.name, sizeof w.model.name, "tiny");
    for (int i = 0; i < SHOAL_WIRE_HASH_BYTES; i++)
        w.model.hash[i] = (uint8_t)(0x50 + i);
    w.nblocks = nblocks;
    w.dim = 64;
    w.max_length = 512;
    w.codec = SHOAL_CODEC_F32;
    return w;
}

static void add(shoal_route_cands *l, const shoal_route_want *w, int port, uint32_t a,
                uint32_t b, uint32_t state)
{
    shoal_peer_info in;
    memset(&in, 0, sizeof in);
    memcpy(in.model_hash, w->model.hash, sizeof in.model_hash);
    in.span_start = a;
    in.span_end = b;
    in.nblocks = w->nblocks;
    in.dim = w->dim;
    in.free_tokens = 1000;
    in.max_length = 4096;
    in.codecs = (1u << SHOAL_CODEC__COUNT) - 1;
    char addr[SHOAL_ADDR_MAX];
    snprintf(addr, sizeof addr, "shoal://127.0.0.1:%d/%064x", port, port);
    CHECK(shoal_route_cands_add(l, addr, &in) == 0);
    l->v[l->n - 1].state = state;
}

/* hops cover exactly [a, b) in order, each inside its candidate's span and
 * none on a skipped candidate */
static int covers(const shoal_route_cands *l, const uint8_t *skip, const shoal_route_hop *h,
                  size_t nh, uint32_t a, uint32_t b)
{
    uint32_t pos = a;
    for (size_t i = 0; i < nh; i++) {
        if (h[i].cand >= l->n || (skip && skip[h[i].cand]))
            return 0;
        const shoal_peer_info *in = &l->v[h[i].cand].info;
        if (h[i].start != pos || h[i].end <= h[i].start || h[i].start < in->span_start ||
            h[i].end > in->span_end)
            return 0;
        pos = h[i].end;
    }
    return pos == b;
}

static void test_ranges(void)
{
    shoal_route_want w = want_for(5);
    shoal_route_cands l;
    shoal_route_cands_init(&l);
    /* the chaos swarm: A 0:2, B 2:5, C 0:3, D 3:5, E 0:1, F 1:5 */
    add(&l, &w, 1, 0, 2, 0);
    add(&l, &w, 2, 2, 5, 0);
    add(&l, &w, 3, 0, 3, 0);
    add(&l, &w, 4, 3, 5, 0);
    add(&l, &w, 5, 0, 1, 0);
    add(&l, &w, 6, 1, 5, 0);
    shoal_route_hop h[8];
    size_t nh = 0;
    char err[1024];
    uint8_t skip[6] = {0};
    /* C (0:3) fails: 0:3 again without it is two hops, 0:2 on A and 2:3
     * clipped out of B or F (F reaches further: same reach after the clip,
     * so the tie goes to the smaller address, B) */
    skip[2] = 1;
    CHECK(shoal_route_plan_range(l.v, l.n, skip, &w, 0, 3, h, 8, &nh, err, sizeof err) == 0);
    CHECK(nh == 2 && covers(&l, skip, h, nh, 0, 3));
    CHECK(h[0].cand == 0 && h[1].start == 2 && h[1].end == 3 && h[1].cand == 1);
    /* 3:5 without D, B and F: nobody; the gap named */
    memset(skip, 0, sizeof skip);
    skip[1] = skip[3] = skip[5] = 1;
    CHECK(shoal_route_plan_range(l.v, l.n, skip, &w, 3, 5, h, 8, &nh, err, sizeof err) ==
          SHOAL_ERR_NOTFOUND);
    CHECK_MSG(!strcmp(err, "no peer serves blocks 3:5"), "%s", err);
    /* 1:5 without B, D, F: 1:3 on C, then 3:5 missing */
    CHECK(shoal_route_plan_range(l.v, l.n, skip, &w, 1, 5, h, 8, &nh, err, sizeof err) ==
          SHOAL_ERR_NOTFOUND);
    CHECK_MSG(!strcmp(err, "no peer serves blocks 3:5"), "%s", err);
    /* a sub-range inside one span: one hop, clipped at both ends */
    CHECK(shoal_route_plan_range(l.v, l.n, NULL, &w, 1, 2, h, 8, &nh, err, sizeof err) == 0);
    CHECK(nh == 1 && h[0].start == 1 && h[0].end == 2);
    /* leaving nodes are never used, and say so */
    shoal_route_cands m;
    shoal_route_cands_init(&m);
    add(&m, &w, 7, 0, 5, SHOAL_WIRE_STATE_OFFLINE);
    add(&m, &w, 8, 0, 2, SHOAL_WIRE_STATE_ONLINE);
    CHECK(shoal_route_plan_range(m.v, m.n, NULL, &w, 0, 5, h, 8, &nh, err, sizeof err) ==
          SHOAL_ERR_NOTFOUND);
    CHECK_MSG(strstr(err, "no peer serves blocks 2:5") && strstr(err, "is leaving"), "%s", err);
    CHECK(shoal_route_check(&m.v[0], &w, err, sizeof err) == SHOAL_ERR_BUSY);
    CHECK(shoal_route_plan(m.v, m.n, &w, h, 8, &nh, err, sizeof err) == SHOAL_ERR_NOTFOUND);
    shoal_route_cands_fini(&m);
    /* bad ranges */
    CHECK(shoal_route_plan_range(l.v, l.n, NULL, &w, 3, 3, h, 8, &nh, err, sizeof err) ==
          SHOAL_ERR_ARG);
    CHECK(shoal_route_plan_range(l.v, l.n, NULL, &w, 4, 6, h, 8, &nh, err, sizeof err) ==
          SHOAL_ERR_ARG);
    /* too few hops of room */
    memset(skip, 0, sizeof skip);
    skip[1] = skip[2] = skip[5] = 1; /* 0:2 A, 2:3 nobody... */
    CHECK(shoal_route_plan_range(l.v, l.n, skip, &w, 0, 2, h, 0, &nh, err, sizeof err) ==
          SHOAL_ERR_ARG);
    shoal_route_cands_fini(&l);
}

/* fewest hops over [a, b) by breadth-first search over block positions */
static int brute(const shoal_route_cands *l, const uint8_t *skip, uint32_t a, uint32_t b)
{
    int dist[64];
    for (uint32_t i = 0; i <= b; i++)
        dist[i] = -1;
    dist[a] = 0;
    for (uint32_t pos = a; pos < b; pos++) {
        if (dist[pos] < 0)
            continue;
        for (size_t i = 0; i < l->n; i++) {
            const shoal_peer_info *in = &l->v[i].info;
            if (skip[i] || in->span_start > pos || in->span_end <= pos)
                continue;
            for (uint32_t e = pos + 1; e <= in->span_end && e <= b; e++)
                if (dist[e] < 0 || dist[e] > dist[pos] + 1)
                    dist[e] = dist[pos] + 1;
        }
    }
    return dist[b];
}

static void test_random(void)
{
    uint64_t s = 12345;
    int bad = 0, planned = 0;
    for (int t = 0; t < 3000; t++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t L = 2 + (uint32_t)(s >> 59); /* 2..33 */
        shoal_route_want w = want_for(L);
        shoal_route_cands l;
        shoal_route_cands_init(&l);
        int n = 1 + (int)((s >> 40) % 12);
        uint8_t skip[16];
        for (int i = 0; i < n; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t a = (uint32_t)((s >> 33) % L);
            uint32_t b = a + 1 + (uint32_t)((s >> 45) % (L - a));
            add(&l, &w, 100 + i, a, b, (s >> 20) % 7 == 0 ? SHOAL_WIRE_STATE_OFFLINE : 0);
            skip[i] = (s >> 25) % 5 == 0;
            if (l.v[i].state == SHOAL_WIRE_STATE_OFFLINE)
                skip[i] = 1; /* for the brute force: never usable */
        }
        uint32_t a = (uint32_t)((s >> 7) % L);
        uint32_t b = a + 1 + (uint32_t)((s >> 13) % (L - a));
        uint8_t skip_given[16];
        memcpy(skip_given, skip, sizeof skip);
        for (int i = 0; i < n; i++)
            if (l.v[i].state == SHOAL_WIRE_STATE_OFFLINE)
                skip_given[i] = (s >> 3) & 1; /* the planner must leave it out anyway */
        shoal_route_hop h[40];
        size_t nh = 0;
        char err[512];
        int rc = shoal_route_plan_range(l.v, l.n, skip_given, &w, a, b, h, 40, &nh, err,
                                        sizeof err);
        int best = brute(&l, skip, a, b);
        if (best < 0) {
            bad += rc != SHOAL_ERR_NOTFOUND || !strstr(err, "no peer serves blocks ");
        } else {
            planned++;
            bad += rc != 0 || (int)nh != best || !covers(&l, skip, h, nh, a, b);
        }
        shoal_route_cands_fini(&l);
    }
    CHECK_MSG(bad == 0, "%d random plans wrong", bad);
    CHECK(planned > 500);
}

int main(void)
{
    test_health();
    test_ranges();
    test_random();
    return check_done();
}
