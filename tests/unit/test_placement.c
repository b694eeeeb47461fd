/*
 * Block placement (swarm/placement.h): per-block throughput sums, Petals'
 * rule on hand-made cases (an uncovered block always draws the server,
 * ties go to the weaker total then the lower start), the move rule (moves
 * only for a gain above the margin, never leaving a gap, never when the
 * span already is the best), and two swarm-level properties on random
 * cases: servers placed one after another by the rule cover every block
 * as soon as their spans could, and rebalancing rounds never lower the
 * bottleneck and end (no two servers chase each other).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "swarm/placement.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static void test_sums(void)
{
    shoal_placement_span s[] = {{0, 2, 10}, {1, 4, 5}, {3, 9, 1}, {2, 3, NAN}, {0, 1, -3}};
    double t[5];
    shoal_placement_block_tput(s, 5, 5, t);
    CHECK(t[0] == 10 && t[1] == 15 && t[2] == 5 && t[3] == 6 && t[4] == 1);
    CHECK(shoal_placement_bottleneck(t, 5) == 1);
    CHECK(shoal_placement_bottleneck(t, 0) == 0);
}

static void test_choose(void)
{
    double zero[6] = {0};
    CHECK(shoal_placement_choose(zero, 6, 2) == 0); /* all equal: the lowest start */
    double a[5] = {5, 5, 0, 0, 0};
    CHECK(shoal_placement_choose(a, 5, 2) == 2);
    double b[5] = {5, 5, 5, 5, 0};
    CHECK(shoal_placement_choose(b, 5, 2) == 3); /* the uncovered block */
    double c[5] = {1, 100, 2, 2, 50};
    /* windows of 2: [1,100] [2,100] [2,2] [2,50]: the weakest block 1 wins */
    CHECK(shoal_placement_choose(c, 5, 2) == 0);
    double d[6] = {3, 9, 9, 3, 4, 4};
    /* windows of 3, sorted: [3,9,9] [3,9,9] [3,4,9] [3,4,4]: the last */
    CHECK(shoal_placement_choose(d, 6, 3) == 3);
    double f[6] = {3, 9, 9, 3, 4, 9};
    /* [3,9,9] [3,9,9] [3,4,9] [3,4,9]: equal sorted, equal totals: the lower */
    CHECK(shoal_placement_choose(f, 6, 3) == 2);
    double e[4] = {1, 7, 1, 5};
    /* windows of 2: [1,7] [1,7] [1,5]: the third, lexicographically */
    CHECK(shoal_placement_choose(e, 4, 2) == 2);
    CHECK(shoal_placement_choose(e, 4, 4) == 0);
    CHECK(shoal_placement_choose(e, 4, 9) == 0); /* longer than the model */
}

static void test_move(void)
{
    double scratch[16];
    uint32_t to = 99;
    /* others cover 0:3 well, nobody 3:5; we sit on 0:2: move to 3:5 */
    double o1[5] = {10, 10, 10, 0, 0};
    CHECK(shoal_placement_should_move(o1, 5, 0, 2, 4, 0.2, scratch, &to) == 1 && to == 3);
    /* we are the only holder of 0:2: leaving would open a gap */
    double o2[5] = {0, 0, 10, 0, 10};
    CHECK(shoal_placement_should_move(o2, 5, 0, 2, 4, 0.2, scratch, &to) == 0);
    /* a gain below the margin (a share of our own throughput): stay */
    double o3[4] = {10, 10, 9, 9};  /* here at 0:2 mine 2: [12,12,9,9] -> 9 */
    /* at 2:4 the bottleneck is 10: a gain of 1 = 0.5 * mine */
    CHECK(shoal_placement_should_move(o3, 4, 0, 2, 2, 0.6, scratch, &to) == 0);
    CHECK(shoal_placement_should_move(o3, 4, 0, 2, 2, 0.4, scratch, &to) == 1 && to == 2);
    /* already at the best window */
    double o4[5] = {10, 10, 10, 0, 0};
    CHECK(shoal_placement_should_move(o4, 5, 3, 2, 4, 0.0, scratch, &to) == 0);
    /* bad spans */
    CHECK(shoal_placement_should_move(o4, 5, 4, 2, 4, 0.0, scratch, &to) == 0);
    CHECK(shoal_placement_should_move(o4, 5, 0, 0, 4, 0.0, scratch, &to) == 0);
}

/* Servers of random speed and span length join one by one, each by the
 * rule over what is there: once the spans placed so far could cover the
 * model (their lengths add up to it), they do. */
static void test_joins_cover(void)
{
    int bad = 0;
    for (int trial = 0; trial < 500; trial++) {
        uint32_t L = 2 + rnd(40);
        uint32_t len = 1 + rnd(L);
        shoal_placement_span s[64];
        double t[64];
        size_t n = 0;
        uint32_t total = 0;
        while (n < 64 && total < L) {
            shoal_placement_block_tput(s, n, L, t);
            uint32_t st = shoal_placement_choose(t, L, len);
            s[n++] = (shoal_placement_span){st, st + len, 1 + rnd(100)};
            total += len;
        }
        shoal_placement_block_tput(s, n, L, t);
        if (!(shoal_placement_bottleneck(t, L) > 0))
            bad++;
    }
    CHECK_MSG(bad == 0, "%d of 500 swarms left a block uncovered", bad);
}

/* Rebalancing rounds from random placements: every move raises the
 * bottleneck by more than the margin and leaves no gap, so rounds end. */
static void test_rebalance_rounds(void)
{
    int never_settled = 0, lowered = 0, moves = 0;
    for (int trial = 0; trial < 300; trial++) {
        uint32_t L = 4 + rnd(30);
        uint32_t len = 1 + rnd(L / 2);
        size_t n = (L + len - 1) / len + rnd(6);
        if (n > 64)
            n = 64;
        shoal_placement_span s[64];
        for (size_t i = 0; i < n; i++) {
            uint32_t st = rnd(L - len + 1);
            s[i] = (shoal_placement_span){st, st + len, 1 + rnd(50)};
        }
        double t[64], others[64], scratch[128];
        int settled = 0;
        for (int round = 0; round < 200 && !settled; round++) {
            settled = 1;
            for (size_t i = 0; i < n; i++) {
                shoal_placement_block_tput(s, n, L, t);
                double before = shoal_placement_bottleneck(t, L);
                for (uint32_t b = 0; b < L; b++)
                    others[b] = t[b] - (b >= s[i].start && b < s[i].end ? s[i].throughput : 0);
                uint32_t to;
                if (shoal_placement_should_move(others, L, s[i].start, len, s[i].throughput,
                                                0.2, scratch, &to)) {
                    s[i].start = to;
                    s[i].end = to + len;
                    settled = 0;
                    moves++;
                    shoal_placement_block_tput(s, n, L, t);
                    double after = shoal_placement_bottleneck(t, L);
                    if (!(after > before + 0.2 * s[i].throughput) || !(after > 0))
                        lowered++;
                }
            }
        }
        never_settled += !settled;
    }
    CHECK_MSG(lowered == 0, "%d moves did not raise the bottleneck by the margin", lowered);
    CHECK_MSG(never_settled == 0, "%d swarms kept moving", never_settled);
    CHECK(moves > 0); /* random placements do get improved */
    printf("rebalancing: %d moves over 300 random swarms, all settled\n", moves);
}

/* --num-blocks auto: lengths by speed, capped by memory. */
static void test_length(void)
{
    /* an empty swarm, or one whose records say nothing of speed: what
     * memory holds */
    CHECK(shoal_placement_length(NULL, 0, 100, 7) == 7);
    shoal_placement_span z[2] = {{0, 2, 0}, {2, 4, NAN}};
    CHECK(shoal_placement_length(z, 2, 100, 7) == 7);
    /* three servers of 2 blocks at 100 tokens/s: a hop takes 0.02 s */
    shoal_placement_span s[3] = {{0, 2, 100}, {2, 4, 100}, {4, 6, 100}};
    CHECK(shoal_placement_length(s, 3, 100, 8) == 2); /* as fast: the same span */
    CHECK(shoal_placement_length(s, 3, 200, 8) == 4); /* twice as fast: twice the span */
    CHECK(shoal_placement_length(s, 3, 1000, 8) == 8); /* capped by memory */
    CHECK(shoal_placement_length(s, 3, 10, 8) == 1);   /* slow: one block at least */
    CHECK(shoal_placement_length(s, 3, 0, 8) == 8);    /* unknown speed: memory */
    CHECK(shoal_placement_length(s, 3, 100, 0) == 1);
    /* the median, not the mean: one odd record does not move it */
    shoal_placement_span m[4] = {{0, 2, 100}, {2, 4, 100}, {4, 6, 100}, {0, 1, 1e-6}};
    CHECK(shoal_placement_length(m, 4, 150, 8) == 3);
    /* faster servers never get fewer blocks */
    uint32_t last = 0;
    for (double t = 1; t < 2000; t *= 1.3) {
        uint32_t k = shoal_placement_length(s, 3, t, 16);
        CHECK(k >= last && k >= 1 && k <= 16);
        last = k;
    }
}

int main(void)
{
    test_length();
    test_sums();
    test_choose();
    test_move();
    test_joins_cover();
    test_rebalance_rounds();
    return check_done();
}
