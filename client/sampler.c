/*
 * Sampler (see sampler.h for the order of the steps and their semantics).
 *
 * Buffers, all sized once in _new: cand (V ids, the candidate list), w
 * (V weights, exp((logit - max) / temp) of each candidate, so the top one
 * weighs 1 and min-p is a plain threshold on w), mark (V flags that make the
 * repetition penalty hit each distinct token once), and hist (a ring of the
 * last repeat_last_n accepted tokens).
 *
 * Ranking uses one total order, "better": the higher logit, then the lower
 * id. Top-k keeps a heap of the k best seen so far with the worst at the
 * root, then sorts it in place by popping. When top-p needs ranks that
 * top-k did not provide, the min-p survivors become a heap with the best at
 * the root and are popped only until the nucleus is complete.
 */
#include "client/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct shoal_sampler {
    shoal_sampler_params p;
    int n_vocab;
    int32_t *cand;   /* (n_vocab) candidate ids */
    float *w;        /* (n_vocab) weights of cand[i] */
    uint8_t *mark;   /* (n_vocab) zero between calls */
    int32_t *hist;   /* (max(repeat_last_n, 1)) ring of accepted tokens */
    int hist_n;      /* tokens in the ring */
    int hist_pos;    /* where the next one goes */
    uint64_t rng[4]; /* xoshiro256** state */
};

shoal_sampler_params shoal_sampler_params_default(void)
{
    return (shoal_sampler_params){
        .temp = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .seed = 0x5EED,
    };
}

/* ---- generator ---------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double uniform01(uint64_t s[4])
{
    return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53;
}

static void seed_rng(shoal_sampler *s)
{
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
}

/* ---- lifetime ----------------------------------------------------------- */

shoal_sampler *shoal_sampler_new(const shoal_sampler_params *p, int n_vocab)
{
    if (!p || n_vocab <= 0 || isnan(p->temp) || isinf(p->temp) || isnan(p->top_p) ||
        isnan(p->min_p) || !(p->repeat_penalty > 0) || isinf(p->repeat_penalty) ||
        p->repeat_last_n < 0 || p->repeat_last_n > SHOAL_SAMPLER_MAX_HISTORY)
        return NULL;
    shoal_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->w = malloc((size_t)n_vocab * sizeof *s->w);
    s->mark = calloc((size_t)n_vocab, 1);
    s->hist = malloc((size_t)(p->repeat_last_n > 0 ? p->repeat_last_n : 1) * sizeof *s->hist);
    if (!s->cand || !s->w || !s->mark || !s->hist) {
        shoal_sampler_destroy(&s);
        return NULL;
    }
    seed_rng(s);
    return s;
}

void shoal_sampler_destroy(shoal_sampler **sp)
{
    if (!sp || !*sp)
        return;
    shoal_sampler *s = *sp;
    free(s->cand);
    free(s->w);
    free(s->mark);
    free(s->hist);
    free(s);
    *sp = NULL;
}

void shoal_sampler_reset(shoal_sampler *s)
{
    s->hist_n = 0;
    s->hist_pos = 0;
    seed_rng(s);
}

void shoal_sampler_accept(shoal_sampler *s, int32_t tok)
{
    if (tok < 0 || tok >= s->n_vocab || s->p.repeat_last_n == 0)
        return;
    s->hist[s->hist_pos] = tok;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->hist_n < s->p.repeat_last_n)
        s->hist_n++;
}

/* ---- ranking ------------------------------------------------------------ */

static bool better(const float *logits, int32_t a, int32_t b)
{
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

/* Restores the worst-at-root heap below position i of h[0..n). */
static void sift_down(const float *logits, int32_t *h, int n, int i)
{
    int32_t x = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && better(logits, h[c], h[c + 1]))
            c++; /* the worse child */
        if (!better(logits, x, h[c]))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static void sift_up(const float *logits, int32_t *h, int i)
{
    int32_t x = h[i];
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!better(logits, h[p], x))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

/* Sorts a worst-at-root heap h[0..n) best first. */
static void heap_sort_desc(const float *logits, int32_t *h, int n)
{
    for (int end = n - 1; end > 0; end--) {
        int32_t t = h[0];
        h[0] = h[end];
        h[end] = t;
        sift_down(logits, h, end, 0);
    }
}

/* The k best tokens of all n_vocab into cand[0..k), best first. */
static void top_k_select(shoal_sampler *s, const float *logits, int k)
{
    int32_t *h = s->cand;
    for (int i = 0; i < k; i++) {
        h[i] = i;
        sift_up(logits, h, i);
    }
    for (int i = k; i < s->n_vocab; i++) {
        if (better(logits, i, h[0])) {
            h[0] = i;
            sift_down(logits, h, k, 0);
        }
    }
    heap_sort_desc(logits, h, k);
}

/* Restores the best-at-root heap below position i of h[0..n). */
static void sift_down_best(const float *logits, int32_t *h, int n, int i)
{
    int32_t x = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && better(logits, h[c + 1], h[c]))
            c++; /* the better child */
        if (!better(logits, h[c], x))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Top-p over the unranked candidates cand[0..n): pops them best first from
 * a heap until their weights reach target, so only the nucleus is ever
 * ordered: O(n + m log n) for a nucleus of m. Leaves the nucleus in
 * cand[0..m), best first, with its weights in w, and returns m. */
static int top_p_select(shoal_sampler *s, const float *logits, int n, float m, float temp,
                        double target)
{
    int32_t *h = s->cand;
    for (int i = n / 2 - 1; i >= 0; i--)
        sift_down_best(logits, h, n, i);
    int end = n;
    double cum = 0;
    while (end > 0) {
        int32_t top = h[0];
        h[0] = h[end - 1];
        end--;
        sift_down_best(logits, h, end, 0);
        h[end] = top; /* the popped tokens fill the tail, best last */
        s->w[end] = expf((logits[top] - m) / temp);
        cum += s->w[end];
        if (cum >= target)
            break;
    }
    /* (If rounding kept cum short of target, everything was popped: end 0.)
     * Reverse the tail to best first and move it to the front. */
    int k = n - end;
    for (int i = end, j = n - 1; i < j; i++, j--) {
        int32_t ti = h[i];
        h[i] = h[j];
        h[j] = ti;
        float tw = s->w[i];
        s->w[i] = s->w[j];
        s->w[j] = tw;
    }
    memmove(h, h + end, (size_t)k * sizeof *h);
    memmove(s->w, s->w + end, (size_t)k * sizeof *s->w);
    return k;
}

/* ---- sampling ----------------------------------------------------------- */

static void apply_penalty(shoal_sampler *s, float *logits)
{
    float pen = s->p.repeat_penalty;
    if (pen == 1.0f || s->hist_n == 0)
        return;
    for (int i = 0; i < s->hist_n; i++) {
        int32_t t = s->hist[i];
        if (s->mark[t])
            continue;
        s->mark[t] = 1;
        logits[t] = logits[t] > 0 ? logits[t] / pen : logits[t] * pen;
    }
    for (int i = 0; i < s->hist_n; i++)
        s->mark[s->hist[i]] = 0;
}

int32_t shoal_sampler_sample(shoal_sampler *s, float *logits)
{
    const int V = s->n_vocab;
    apply_penalty(s, logits); /* NaN stays NaN */
    int32_t best = 0;
    float top = -INFINITY;
    for (int i = 0; i < V; i++) {
        float v = logits[i];
        if (isnan(v))
            logits[i] = v = -INFINITY;
        if (v > top) {
            top = v;
            best = i;
        }
    }
    const float temp = s->p.temp;
    if (!(temp > 0) || !isfinite(logits[best]))
        return best; /* greedy, or all -inf, or +inf present: the first max */

    int n;
    bool sorted;
    if (s->p.top_k > 0 && s->p.top_k < V) {
        n = s->p.top_k;
        top_k_select(s, logits, n);
        sorted = true;
    } else {
        n = V;
        for (int i = 0; i < V; i++)
            s->cand[i] = i;
        sorted = false;
    }

    /* Softmax numerators; the best token weighs exactly 1. */
    const float m = logits[best];
    double z = 0;
    for (int i = 0; i < n; i++) {
        float w = expf((logits[s->cand[i]] - m) / temp);
        s->w[i] = w;
        z += w;
    }

    if (s->p.min_p > 0) {
        int j = 0;
        for (int i = 0; i < n; i++) {
            if (s->w[i] >= s->p.min_p || s->cand[i] == best) {
                s->cand[j] = s->cand[i];
                s->w[j] = s->w[i];
                j++;
            }
        }
        n = j;
    }

    if (s->p.top_p < 1.0f && n > 1) {
        double target = (double)s->p.top_p * z;
        if (sorted) {
            double cum = 0;
            for (int i = 0; i < n; i++) {
                cum += s->w[i];
                if (cum >= target) {
                    n = i + 1;
                    break;
                }
            }
        } else {
            n = top_p_select(s, logits, n, m, temp, target);
        }
    }

    double total = 0;
    for (int i = 0; i < n; i++)
        total += s->w[i];
    double r = uniform01(s->rng) * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->w[i];
        if (r < acc)
            return s->cand[i];
    }
    return s->cand[n - 1];
}
