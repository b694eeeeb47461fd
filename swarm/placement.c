/* Block placement (see placement.h). */
#include "swarm/placement.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double clean(double t) { return t > 0 && isfinite(t) ? t : 0; }

void shoal_placement_block_tput(const shoal_placement_span *s, size_t n, uint32_t nblocks,
                                double *tput)
{
    for (uint32_t b = 0; b < nblocks; b++)
        tput[b] = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t end = s[i].end < nblocks ? s[i].end : nblocks;
        for (uint32_t b = s[i].start; b < end; b++)
            tput[b] += clean(s[i].throughput);
    }
}

double shoal_placement_bottleneck(const double *tput, uint32_t nblocks)
{
    if (!nblocks)
        return 0;
    double m = tput[0];
    for (uint32_t b = 1; b < nblocks; b++)
        if (tput[b] < m)
            m = tput[b];
    return m;
}

/* Compare windows a and b of len blocks: <0 when a is weaker (should be
 * taken first). Without allocating: the k-th smallest of each window is
 * found by counting, O(len^2) per comparison, fine for a model's blocks. */
static double kth(const double *w, uint32_t len, uint32_t k)
{
    /* the value v of w such that #(< v) <= k < #(<= v) */
    for (uint32_t i = 0; i < len; i++) {
        uint32_t lt = 0, le = 0;
        for (uint32_t j = 0; j < len; j++) {
            lt += w[j] < w[i];
            le += w[j] <= w[i];
        }
        if (lt <= k && k < le)
            return w[i];
    }
    return w[0];
}

static int window_cmp(const double *tput, uint32_t a, uint32_t b, uint32_t len)
{
    for (uint32_t k = 0; k < len; k++) {
        double x = kth(tput + a, len, k), y = kth(tput + b, len, k);
        if (x != y)
            return x < y ? -1 : 1;
    }
    double sa = 0, sb = 0;
    for (uint32_t k = 0; k < len; k++) {
        sa += tput[a + k];
        sb += tput[b + k];
    }
    if (sa != sb)
        return sa < sb ? -1 : 1;
    return a < b ? -1 : a > b;
}

uint32_t shoal_placement_choose(const double *tput, uint32_t nblocks, uint32_t len)
{
    if (len < 1 || len >= nblocks)
        return 0;
    uint32_t best = 0;
    for (uint32_t s = 1; s + len <= nblocks; s++)
        if (window_cmp(tput, s, best, len) < 0)
            best = s;
    return best;
}

int shoal_placement_should_move(const double *others, uint32_t nblocks, uint32_t cur_start,
                                uint32_t len, double mine, double margin, double *scratch,
                                uint32_t *new_start)
{
    if (len < 1 || len > nblocks || cur_start > nblocks - len)
        return 0;
    mine = clean(mine);
    uint32_t s = shoal_placement_choose(others, nblocks, len);
    if (s == cur_start)
        return 0;
    double *here = scratch, *there = scratch + nblocks;
    memcpy(here, others, nblocks * sizeof *here);
    memcpy(there, others, nblocks * sizeof *there);
    for (uint32_t b = 0; b < len; b++) {
        here[cur_start + b] += mine;
        there[s + b] += mine;
    }
    double now_b = shoal_placement_bottleneck(here, nblocks);
    double then_b = shoal_placement_bottleneck(there, nblocks);
    /* The gain must be a clear part of what this server can add at most
     * (its own throughput), not of the whole bottleneck: in a large swarm
     * one server is a small share of any block, and a rule relative to the
     * bottleneck would never let anyone move to close a weak spot. */
    if (!(then_b > 0) || !(then_b > now_b + margin * mine))
        return 0;
    *new_start = s;
    return 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

uint32_t shoal_placement_length(const shoal_placement_span *s, size_t n, double mine,
                                uint32_t max_len)
{
    if (max_len < 1)
        return 1;
    if (!(mine > 0) || !isfinite(mine))
        return max_len;
    double *t = malloc((n ? n : 1) * sizeof *t);
    if (!t)
        return max_len;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i].end > s[i].start && s[i].throughput > 0 && isfinite(s[i].throughput))
            t[k++] = (double)(s[i].end - s[i].start) / s[i].throughput;
    if (!k) {
        free(t);
        return max_len;
    }
    qsort(t, k, sizeof *t, cmp_double);
    double hop = k % 2 ? t[k / 2] : 0.5 * (t[k / 2 - 1] + t[k / 2]);
    free(t);
    double want = round(hop * mine);
    if (!(want >= 1))
        return 1;
    return want >= (double)max_len ? max_len : (uint32_t)want;
}
