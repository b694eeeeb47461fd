/*
 * Sampler tests: greedy and its ties, seeds (same seed same draws, other
 * seeds other draws, reset restarts), each filter on its own (top-k, top-p,
 * min-p, repetition penalty), membership of draws in the allowed set on a
 * 128k vocabulary, and chi-square checks that draw frequencies follow the
 * softmax (fixed seeds: the outcome is deterministic, not flaky).
 */
#include "client/sampler.h"
#include "tests/check.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static shoal_sampler_params plain(float temp)
{
    shoal_sampler_params p = shoal_sampler_params_default();
    p.temp = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    return p;
}

static int32_t sample_copy(shoal_sampler *s, const float *logits, int n)
{
    float tmp[64];
    memcpy(tmp, logits, (size_t)n * sizeof *tmp);
    return shoal_sampler_sample(s, tmp);
}

static uint64_t rs = 88172645463325252ull;
static float rnd_logit(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 11) * 0x1.0p-53) * 10.0f - 5.0f;
}

static void test_defaults_and_params(void)
{
    shoal_sampler_params p = shoal_sampler_params_default();
    CHECK(p.temp == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f &&
          p.repeat_penalty == 1.0f && p.repeat_last_n == 64);
    CHECK(shoal_sampler_new(&p, 0) == NULL);
    CHECK(shoal_sampler_new(NULL, 10) == NULL);
    shoal_sampler_params b = p;
    b.repeat_penalty = 0;
    CHECK(shoal_sampler_new(&b, 10) == NULL);
    b = p;
    b.temp = NAN;
    CHECK(shoal_sampler_new(&b, 10) == NULL);
    b = p;
    b.repeat_last_n = -1;
    CHECK(shoal_sampler_new(&b, 10) == NULL);
    b = p;
    b.top_p = NAN;
    CHECK(shoal_sampler_new(&b, 10) == NULL);
    shoal_sampler *s = shoal_sampler_new(&p, 10);
    CHECK(s != NULL);
    shoal_sampler_destroy(&s);
    CHECK(s == NULL);
    shoal_sampler_destroy(&s);
    shoal_sampler_destroy(NULL);
}

static void test_greedy(void)
{
    shoal_sampler_params p = shoal_sampler_params_default();
    p.temp = 0;
    shoal_sampler *s = shoal_sampler_new(&p, 4);
    float a[4] = {1, 5, 3, 5};
    CHECK(sample_copy(s, a, 4) == 1); /* tie: the lower id */
    float b[4] = {2, 2, 2, 2};
    CHECK(sample_copy(s, b, 4) == 0);
    float c[4] = {-1, -3, -0.5f, -2};
    CHECK(sample_copy(s, c, 4) == 2);
    float d[4] = {NAN, 1, NAN, 0};
    CHECK(sample_copy(s, d, 4) == 1);
    float e[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    CHECK(sample_copy(s, e, 4) == 0);
    shoal_sampler_destroy(&s);

    /* Temperature sampling with +inf or all -inf logits stays defined. */
    p = plain(1.0f);
    s = shoal_sampler_new(&p, 4);
    float f[4] = {0, INFINITY, 3, INFINITY};
    CHECK(sample_copy(s, f, 4) == 1);
    CHECK(sample_copy(s, e, 4) == 0);
    float g[4] = {NAN, NAN, NAN, NAN};
    CHECK(sample_copy(s, g, 4) == 0);
    shoal_sampler_destroy(&s);

    /* Greedy on a large vocabulary. */
    const int V = 1000;
    float *l = malloc(V * sizeof *l);
    for (int i = 0; i < V; i++)
        l[i] = rnd_logit();
    l[777] = 9;
    l[778] = 9;
    p.temp = 0;
    s = shoal_sampler_new(&p, V);
    CHECK(shoal_sampler_sample(s, l) == 777);
    shoal_sampler_destroy(&s);
    free(l);
}

static void test_seeds(void)
{
    const int V = 50;
    float l[50];
    for (int i = 0; i < V; i++)
        l[i] = rnd_logit() * 0.3f;
    shoal_sampler_params p = shoal_sampler_params_default();
    p.temp = 1.0f;
    p.seed = 42;
    shoal_sampler *a = shoal_sampler_new(&p, V), *b = shoal_sampler_new(&p, V);
    p.seed = 43;
    shoal_sampler *c = shoal_sampler_new(&p, V);
    int32_t seq[300];
    bool same = true, differ = false;
    for (int i = 0; i < 300; i++) {
        seq[i] = sample_copy(a, l, V);
        int32_t y = sample_copy(b, l, V), z = sample_copy(c, l, V);
        same = same && seq[i] == y;
        differ = differ || seq[i] != z;
        CHECK(seq[i] >= 0 && seq[i] < V);
    }
    CHECK_MSG(same, "same seed, same draws");
    CHECK_MSG(differ, "another seed, other draws");
    /* Reset restarts the generator: the same draws again. */
    shoal_sampler_reset(a);
    bool again = true;
    for (int i = 0; i < 300; i++)
        again = again && sample_copy(a, l, V) == seq[i];
    CHECK(again);
    /* Pinned values: the generator is the project's own, not libc's, so
     * these are the same on every machine. */
    shoal_sampler_reset(a);
    int32_t first[5];
    for (int i = 0; i < 5; i++)
        first[i] = sample_copy(a, l, V);
    CHECK_MSG(first[0] == 43 && first[1] == 7 && first[2] == 26 && first[3] == 16 &&
                  first[4] == 23,
              "seed 42 first draws: %d %d %d %d %d", first[0], first[1], first[2], first[3],
              first[4]);
    shoal_sampler_destroy(&a);
    shoal_sampler_destroy(&b);
    shoal_sampler_destroy(&c);
}

static void test_filters(void)
{
    const int V = 40;
    float l[40];
    /* top_k = 1 is greedy. */
    shoal_sampler_params p = plain(1.5f);
    p.top_k = 1;
    shoal_sampler *s = shoal_sampler_new(&p, V);
    bool ok = true;
    for (int iter = 0; iter < 200; iter++) {
        int best = 0;
        for (int i = 0; i < V; i++) {
            l[i] = rnd_logit();
            if (l[i] > l[best])
                best = i;
        }
        ok = ok && sample_copy(s, l, V) == best;
    }
    CHECK_MSG(ok, "top_k = 1 picks the argmax");
    shoal_sampler_destroy(&s);

    /* A tiny top_p keeps only the top token. */
    p = plain(1.0f);
    p.top_p = 0.01f;
    s = shoal_sampler_new(&p, V);
    ok = true;
    for (int iter = 0; iter < 200; iter++) {
        int best = 0;
        for (int i = 0; i < V; i++) {
            l[i] = rnd_logit() * 0.1f; /* nearly flat: the top token has ~3% */
            if (l[i] > l[best])
                best = i;
        }
        ok = ok && sample_copy(s, l, V) == best;
    }
    CHECK_MSG(ok, "top_p = 0.01 picks the argmax");
    shoal_sampler_destroy(&s);

    /* top_k = 3 never leaves the top 3. */
    p = plain(2.0f);
    p.top_k = 3;
    s = shoal_sampler_new(&p, V);
    for (int i = 0; i < V; i++)
        l[i] = (float)i * 0.01f; /* top 3: 39, 38, 37 */
    int hits[40] = {0};
    for (int iter = 0; iter < 3000; iter++)
        hits[sample_copy(s, l, V)]++;
    int outside = 0;
    for (int i = 0; i < 37; i++)
        outside += hits[i];
    CHECK(outside == 0 && hits[37] > 800 && hits[38] > 800 && hits[39] > 800);
    shoal_sampler_destroy(&s);

    /* min_p: probabilities 0.5 0.3 0.15 0.05. */
    const float pr[4] = {0.5f, 0.3f, 0.15f, 0.05f};
    float q[4];
    for (int i = 0; i < 4; i++)
        q[i] = logf(pr[i]);
    const struct {
        float min_p;
        int allowed;
    } mp[] = {{0.2f, 3}, {0.5f, 2}, {0.7f, 1}, {0.05f, 4}};
    for (size_t k = 0; k < sizeof mp / sizeof mp[0]; k++) {
        p = plain(1.0f);
        p.min_p = mp[k].min_p;
        s = shoal_sampler_new(&p, 4);
        int h[4] = {0};
        for (int iter = 0; iter < 4000; iter++)
            h[sample_copy(s, q, 4)]++;
        bool good = true;
        for (int i = 0; i < 4; i++)
            good = good && (i < mp[k].allowed ? h[i] > 0 : h[i] == 0);
        CHECK_MSG(good, "min_p %.2f keeps %d tokens: %d %d %d %d", mp[k].min_p, mp[k].allowed,
                  h[0], h[1], h[2], h[3]);
        shoal_sampler_destroy(&s);
    }
}

static void test_penalty(void)
{
    shoal_sampler_params p = shoal_sampler_params_default();
    p.temp = 0;
    p.repeat_penalty = 1.2f;
    p.repeat_last_n = 3;
    shoal_sampler *s = shoal_sampler_new(&p, 4);
    float a[4] = {2.0f, 1.9f, -1.0f, -1.05f};
    CHECK(sample_copy(s, a, 4) == 0);
    shoal_sampler_accept(s, 0);
    shoal_sampler_accept(s, 0); /* twice in the window: penalised once */
    float t[4];
    memcpy(t, a, sizeof t);
    CHECK(shoal_sampler_sample(s, t) == 1);
    CHECK(fabsf(t[0] - 2.0f / 1.2f) < 1e-6f && t[1] == 1.9f);
    /* Negative logits are multiplied: -1 * 1.2 < -1.05. */
    float b[4] = {-5, -6, -1.0f, -1.05f};
    shoal_sampler_accept(s, 2);
    CHECK(sample_copy(s, b, 4) == 3);
    /* Out of the window (last 3: 2, 1, 1): token 0 is free again. */
    shoal_sampler_accept(s, 1);
    shoal_sampler_accept(s, 1);
    CHECK(sample_copy(s, a, 4) == 0);
    /* Ids out of range are ignored; reset forgets the history. */
    shoal_sampler_accept(s, -1);
    shoal_sampler_accept(s, 99);
    CHECK(sample_copy(s, a, 4) == 0);
    shoal_sampler_accept(s, 0);
    shoal_sampler_accept(s, 3);
    shoal_sampler_accept(s, 3);
    CHECK(sample_copy(s, a, 4) == 1);
    shoal_sampler_reset(s);
    CHECK(sample_copy(s, a, 4) == 0);
    shoal_sampler_destroy(&s);

    /* repeat_penalty 1.0 leaves everything alone. */
    p.repeat_penalty = 1.0f;
    s = shoal_sampler_new(&p, 4);
    shoal_sampler_accept(s, 0);
    memcpy(t, a, sizeof t);
    CHECK(shoal_sampler_sample(s, t) == 0 && t[0] == 2.0f);
    shoal_sampler_destroy(&s);

    /* repeat_last_n = 0: no history at all. */
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 0;
    s = shoal_sampler_new(&p, 4);
    shoal_sampler_accept(s, 0);
    CHECK(sample_copy(s, a, 4) == 0);
    shoal_sampler_destroy(&s);
}

/* Chi-square statistic of observed counts against expected probabilities
 * (only over tokens with expected > 0; those with 0 must never appear). */
static double chi2(const int *obs, const double *prob, int n, int total, bool *impossible)
{
    double x = 0;
    *impossible = false;
    for (int i = 0; i < n; i++) {
        if (prob[i] == 0) {
            if (obs[i] != 0)
                *impossible = true;
            continue;
        }
        double e = prob[i] * total;
        x += (obs[i] - e) * (obs[i] - e) / e;
    }
    return x;
}

static void check_freq(const char *what, shoal_sampler_params p, const float *l,
                       const double *want, int n)
{
    const int N = 100000;
    shoal_sampler *s = shoal_sampler_new(&p, n);
    int h[8] = {0};
    for (int i = 0; i < N; i++)
        h[sample_copy(s, l, n)]++;
    int dof = -1;
    for (int i = 0; i < n; i++)
        dof += want[i] > 0;
    bool impossible;
    double x = chi2(h, want, n, N, &impossible);
    /* 0.999 quantiles of chi-square with 1..3 degrees of freedom. */
    const double crit[4] = {0, 10.83, 13.82, 16.27};
    printf("%s: counts %d %d %d %d, chi2 %.2f (dof %d)\n", what, h[0], h[1], h[2], h[3], x, dof);
    CHECK_MSG(!impossible && dof >= 1 && dof <= 3 && x < crit[dof], "%s: chi2 %.2f", what, x);
    shoal_sampler_destroy(&s);
}

static void test_distribution(void)
{
    const float l[4] = {1.0f, 0.5f, 0.0f, -1.0f};
    double sm[4], z = 0;
    for (int i = 0; i < 4; i++)
        z += sm[i] = exp(l[i]);
    for (int i = 0; i < 4; i++)
        sm[i] /= z;

    shoal_sampler_params p = plain(1.0f);
    p.seed = 1;
    check_freq("softmax", p, l, sm, 4);

    /* Temperature 0.5 sharpens: softmax(l / 0.5). */
    double st[4];
    z = 0;
    for (int i = 0; i < 4; i++)
        z += st[i] = exp(l[i] / 0.5);
    for (int i = 0; i < 4; i++)
        st[i] /= z;
    p = plain(0.5f);
    p.seed = 2;
    check_freq("temp 0.5", p, l, st, 4);

    /* top_k = 2: renormalised over the two best. */
    double k2[4] = {sm[0] / (sm[0] + sm[1]), sm[1] / (sm[0] + sm[1]), 0, 0};
    p = plain(1.0f);
    p.top_k = 2;
    p.seed = 3;
    check_freq("top_k 2", p, l, k2, 4);

    /* top_p: softmax .474 .288 .174 .064, cumulative .474 .762 .936: 0.85
     * needs the first three. */
    double p3[4] = {sm[0], sm[1], sm[2], 0};
    double z3 = sm[0] + sm[1] + sm[2];
    for (int i = 0; i < 3; i++)
        p3[i] /= z3;
    p = plain(1.0f);
    p.top_p = 0.85f;
    p.seed = 4;
    check_freq("top_p 0.85", p, l, p3, 4);

    /* min_p 0.3: exp(-1.5) = 0.22 of the top goes, exp(-1) = 0.37 stays. */
    p = plain(1.0f);
    p.min_p = 0.3f;
    p.seed = 5;
    check_freq("min_p 0.3", p, l, p3, 4);

    /* The defaults (top_k 40 > V is all, top_p 0.95, min_p 0.05) at temp 1:
     * cumulative .936 < .95: top-p keeps all 4; min-p keeps p >= 0.05 *
     * .474: all 4. */
    p = shoal_sampler_params_default();
    p.temp = 1.0f;
    p.seed = 6;
    check_freq("defaults", p, l, sm, 4);
}

/* A 128k vocabulary: top-k by partial selection, top-p by sorting. */
static void test_large(void)
{
    const int V = 128 * 1024;
    float *l = malloc((size_t)V * sizeof *l), *t = malloc((size_t)V * sizeof *t);
    int32_t *order = malloc((size_t)V * sizeof *order);
    for (int i = 0; i < V; i++)
        l[i] = rnd_logit();
    /* Rank by (logit desc, id asc) with a simple counting approach for the
     * few tokens we need: the 40th best logit. */
    float kth;
    {
        memcpy(t, l, (size_t)V * sizeof *t);
        /* Selection by repeated max: 40 passes are fine for a test. */
        for (int r = 0; r < 40; r++) {
            int b = 0;
            for (int i = 1; i < V; i++)
                if (t[i] > t[b])
                    b = i;
            order[r] = b;
            t[b] = -INFINITY;
        }
        kth = l[order[39]];
    }
    shoal_sampler_params p = shoal_sampler_params_default();
    p.temp = 5.0f; /* flat enough that all 40 are likely */
    p.min_p = 0;
    p.top_p = 1.0f;
    shoal_sampler *s = shoal_sampler_new(&p, V);
    bool in_top = true;
    int distinct = 0;
    static uint8_t seen[128 * 1024];
    for (int iter = 0; iter < 2000; iter++) {
        memcpy(t, l, (size_t)V * sizeof *t);
        int32_t x = shoal_sampler_sample(s, t);
        in_top = in_top && x >= 0 && x < V && l[x] >= kth;
        if (x >= 0 && x < V && !seen[x]++)
            distinct++;
    }
    CHECK_MSG(in_top, "top_k 40 draws stay in the top 40");
    CHECK_MSG(distinct > 30 && distinct <= 40, "%d distinct draws", distinct);
    shoal_sampler_destroy(&s);

    /* No top-k, top_p 0.5 at temp 1: logits in [-5, 5) over 128k tokens,
     * the nucleus is the tokens above some threshold; every draw must lie
     * above the threshold found by a plain computation. */
    p = shoal_sampler_params_default();
    p.temp = 1.0f;
    p.top_k = 0;
    p.top_p = 0.5f;
    p.min_p = 0;
    s = shoal_sampler_new(&p, V);
    double z = 0, m = -INFINITY;
    for (int i = 0; i < V; i++)
        m = l[i] > m ? l[i] : m;
    for (int i = 0; i < V; i++)
        z += exp(l[i] - m);
    /* Threshold: walk down in logit steps until the mass above reaches 0.5. */
    double thr = m, step = 0.001;
    for (;;) {
        double mass = 0;
        for (int i = 0; i < V; i++)
            if (l[i] >= thr)
                mass += exp(l[i] - m);
        if (mass / z >= 0.5 + 1e-3)
            break;
        thr -= step * 50;
    }
    bool in_nucleus = true;
    for (int iter = 0; iter < 50; iter++) {
        memcpy(t, l, (size_t)V * sizeof *t);
        int32_t x = shoal_sampler_sample(s, t);
        in_nucleus = in_nucleus && x >= 0 && x < V && l[x] >= thr;
    }
    CHECK_MSG(in_nucleus, "top_p 0.5 draws stay in the nucleus");
    shoal_sampler_destroy(&s);
    free(l);
    free(t);
    free(order);
}

int main(void)
{
    test_defaults_and_params();
    test_greedy();
    test_seeds();
    test_filters();
    test_penalty();
    test_distribution();
    test_large();
    return check_done();
}
