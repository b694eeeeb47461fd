/*
 * Backward kernels against finite differences, and the training forward
 * against inference.
 *
 * Every op's analytic gradient is compared with central differences of a
 * scalar loss L = sum(dy_fixed * f(x)) evaluated with the shipped f32
 * forward (accumulated in double). The FD estimate uses Richardson
 * extrapolation of steps h and 2h, (4 D(h) - D(2h)) / 3, which removes the
 * h^2 truncation term so that h can be large enough for f32 rounding noise
 * to stay small. Error measure over every checked entry:
 *     rel = ||fd - analytic||_2 / ||analytic||_2
 * and each line of output states it. Shapes are small and random: T = 5,
 * GQA with 4 heads over 2 KV heads, head_dim 8, rope_dim = head_dim (and a
 * partial-rope MHA variant).
 *
 * The transposed product through every weight type is checked against
 * W_dequant^T dy in double; the whole block (LoRA on all seven targets)
 * against finite differences in x, A and B; quantized blocks against
 * their dequantized f32 twins; and the training forward without LoRA
 * against shoal_fwd_blocks bit for bit, on stories260K and on generated
 * models of every weight type.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "client/cmd.h"
#include "kernels/backward.h"
#include "kernels/cpu.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "kernels/pool.h"
#include "kernels/types.h"

#define NT 5
#define TOL 1e-3 /* relative error bound for every FD check in f32 */

/* ---- helpers --------------------------------------------------------------- */

static uint64_t rng_state = 0x5eedULL;

static double urand(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) * 0x1.0p-53;
}

static float randn(void)
{
    return (float)(sqrt(-2.0 * log(urand())) * cos(2.0 * M_PI * urand()));
}

static float *rand_vec(size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = randn() * scale;
    return v;
}

static float *zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static double dot_d(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

typedef double (*loss_fn)(void *ctx);

/* Richardson-extrapolated central difference of loss w.r.t. p[i]. */
static double fd_one(loss_fn loss, void *ctx, float *p, size_t i, double h)
{
    float save = p[i];
    double d[2];
    for (int s = 0; s < 2; s++) {
        double step = h * (s + 1);
        float hi = (float)(save + step), lo = (float)(save - step);
        p[i] = hi;
        double lp = loss(ctx);
        p[i] = lo;
        double lm = loss(ctx);
        p[i] = save;
        d[s] = (lp - lm) / ((double)hi - (double)lo);
    }
    return (4.0 * d[0] - d[1]) / 3.0;
}

typedef struct errstat {
    double num, den;  /* sum (fd - an)^2, sum an^2 */
    int n;
} errstat;

static void err_add(errstat *e, double fd, double an)
{
    e->num += (fd - an) * (fd - an);
    e->den += an * an;
    e->n++;
}

static double err_rel(const errstat *e) { return e->den > 0 ? sqrt(e->num / e->den) : sqrt(e->num); }

/* FD over entries idx[0..n) of p (all of p when idx is NULL), against an.
 * A sample is measured against the larger of its own norm and the norm
 * the whole gradient an (total entries) has per entry, so that a sample
 * of near-zero entries does not turn rounding noise into a large ratio. */
static double fd_check(loss_fn loss, void *ctx, float *p, const float *an, size_t n,
                       const size_t *idx, size_t total, double h)
{
    errstat e = {0};
    for (size_t j = 0; j < n; j++) {
        size_t i = idx ? idx[j] : j;
        err_add(&e, fd_one(loss, ctx, p, i, h), an[i]);
    }
    if (idx) {
        double all = 0;
        for (size_t i = 0; i < total; i++)
            all += (double)an[i] * an[i];
        e.den = fmax(e.den, all / (double)total * (double)n);
    }
    return err_rel(&e);
}

static void report(const char *what, double rel, double tol)
{
    printf("  %-44s rel err %.2e  (bound %.0e)\n", what, rel, tol);
    CHECK_MSG(rel <= tol, "%s: relative error %.3e > %.0e", what, rel, tol);
}

/* ---- rmsnorm ------------------------------------------------------------------ */

typedef struct rms_ctx {
    int T, n;
    float *x, *w, *dy, *y;
} rms_ctx;

static double rms_loss(void *c_)
{
    rms_ctx *c = c_;
    shoal_op_rmsnorm_forward(c->T, c->n, c->x, c->w, 1e-5f, c->y);
    return dot_d(c->dy, c->y, (size_t)c->T * c->n);
}

static void test_rmsnorm(void)
{
    rms_ctx c = {NT, 16, rand_vec(NT * 16, 1), rand_vec(16, 0.3f), rand_vec(NT * 16, 1),
                 zeros(NT * 16)};
    for (int i = 0; i < 16; i++)
        c.w[i] += 1.0f;
    float *dx = zeros(NT * 16), *dw = zeros(16);
    shoal_op_rmsnorm_backward(NT, 16, c.x, c.w, 1e-5f, c.dy, dx, dw);
    report("rmsnorm dx", fd_check(rms_loss, &c, c.x, dx, NT * 16, NULL, 0, 1e-2), TOL);
    report("rmsnorm dweight", fd_check(rms_loss, &c, c.w, dw, 16, NULL, 0, 1e-2), TOL);
    /* backward accumulates */
    float *dx2 = zeros(NT * 16);
    for (int i = 0; i < NT * 16; i++)
        dx2[i] = 1.0f;
    shoal_op_rmsnorm_backward(NT, 16, c.x, c.w, 1e-5f, c.dy, dx2, NULL);
    int acc = 1;
    for (int i = 0; i < NT * 16; i++)
        acc &= fabsf(dx2[i] - 1.0f - dx[i]) <= 1e-6f * (1 + fabsf(dx[i]));
    CHECK(acc);
    free(c.x); free(c.w); free(c.dy); free(c.y); free(dx); free(dw); free(dx2);
}

/* ---- rope ----------------------------------------------------------------------- */

typedef struct rope_ctx {
    int heads, hd, rope_dim;
    const float *cs;
    float *x, *dy, *y;
} rope_ctx;

static double rope_loss(void *c_)
{
    rope_ctx *c = c_;
    size_t n = (size_t)NT * c->heads * c->hd;
    memcpy(c->y, c->x, n * sizeof(float));
    shoal_op_rope_forward(NT, c->heads, c->hd, c->rope_dim, c->cs, c->y);
    return dot_d(c->dy, c->y, n);
}

static void test_rope(int rope_dim)
{
    shoal_hparams hp = {.rope_dim = rope_dim, .rope_theta = 10000.0f, .rope_freq_scale = 1.0f};
    const int heads = 4, hd = 8;
    size_t n = (size_t)NT * heads * hd;
    float *cs = zeros((size_t)NT * rope_dim);
    shoal_op_rope_table(NT, 3, &hp, cs);
    rope_ctx c = {heads, hd, rope_dim, cs, rand_vec(n, 1), rand_vec(n, 1), zeros(n)};
    float *dx = malloc(n * sizeof *dx);
    memcpy(dx, c.dy, n * sizeof *dx);
    shoal_op_rope_backward(NT, heads, hd, rope_dim, cs, dx);
    char what[64];
    snprintf(what, sizeof what, "rope dx (rope_dim %d of %d)", rope_dim, hd);
    report(what, fd_check(rope_loss, &c, c.x, dx, n, NULL, 0, 1e-2), TOL);
    /* forward then backward is the identity (a rotation) */
    float *r = malloc(n * sizeof *r);
    memcpy(r, c.x, n * sizeof *r);
    shoal_op_rope_forward(NT, heads, hd, rope_dim, cs, r);
    shoal_op_rope_backward(NT, heads, hd, rope_dim, cs, r);
    double md = 0;
    for (size_t i = 0; i < n; i++)
        md = fmax(md, fabs(r[i] - c.x[i]));
    CHECK_MSG(md < 1e-5, "rope inverse off by %g", md);
    free(cs); free(c.x); free(c.dy); free(c.y); free(dx); free(r);
}

/* ---- attention --------------------------------------------------------------- */

typedef struct attn_ctx {
    int T, H, Hkv, hd;
    float *q, *k, *v, *dy, *out, *lse, *scores;
} attn_ctx;

static double attn_loss(void *c_)
{
    attn_ctx *c = c_;
    shoal_op_attn_forward(NULL, c->T, c->H, c->Hkv, c->hd, c->q, c->k, c->v, c->out, c->lse,
                          c->scores);
    return dot_d(c->dy, c->out, (size_t)c->T * c->H * c->hd);
}

/* The double-precision reference of the forward. */
static double attn_ref_err(const attn_ctx *c)
{
    int group = c->H / c->Hkv;
    double maxerr = 0;
    for (int t = 0; t < c->T; t++)
        for (int h = 0; h < c->H; h++) {
            const float *q = c->q + ((size_t)t * c->H + h) * c->hd;
            double s[64], m = -INFINITY, sum = 0;
            for (int j = 0; j <= t; j++) {
                const float *k = c->k + ((size_t)j * c->Hkv + h / group) * c->hd;
                s[j] = dot_d(q, k, c->hd) / sqrt(c->hd);
                m = fmax(m, s[j]);
            }
            for (int j = 0; j <= t; j++)
                sum += (s[j] = exp(s[j] - m));
            for (int d = 0; d < c->hd; d++) {
                double o = 0;
                for (int j = 0; j <= t; j++)
                    o += s[j] / sum * c->v[((size_t)j * c->Hkv + h / group) * c->hd + d];
                maxerr = fmax(maxerr, fabs(o - c->out[((size_t)t * c->H + h) * c->hd + d]));
            }
            maxerr = fmax(maxerr, fabs(m + log(sum) - c->lse[(size_t)h * c->T + t]));
        }
    return maxerr;
}

static void test_attention(int H, int Hkv, int hd)
{
    const int T = NT;
    size_t nq = (size_t)T * H * hd, nkv = (size_t)T * Hkv * hd;
    attn_ctx c = {T, H, Hkv, hd, rand_vec(nq, 1), rand_vec(nkv, 1), rand_vec(nkv, 1),
                  rand_vec(nq, 1), zeros(nq), zeros((size_t)H * T), zeros(2 * T)};
    attn_loss(&c);
    double ref = attn_ref_err(&c);
    printf("  attention forward vs double reference: max abs err %.2e\n", ref);
    CHECK(ref < 1e-5);
    float *out = zeros(nq), *lse = zeros((size_t)H * T);
    memcpy(out, c.out, nq * sizeof(float));
    memcpy(lse, c.lse, (size_t)H * T * sizeof(float));
    float *dq = zeros(nq), *dk = zeros(nkv), *dv = zeros(nkv), *delta = zeros((size_t)H * T);
    shoal_op_attn_backward(NULL, T, H, Hkv, hd, c.q, c.k, c.v, out, lse, c.dy, dq, dk, dv,
                           delta);
    char what[64];
    snprintf(what, sizeof what, "attention dq (H %d, Hkv %d, hd %d)", H, Hkv, hd);
    report(what, fd_check(attn_loss, &c, c.q, dq, nq, NULL, 0, 1e-2), TOL);
    snprintf(what, sizeof what, "attention dk (H %d, Hkv %d, hd %d)", H, Hkv, hd);
    report(what, fd_check(attn_loss, &c, c.k, dk, nkv, NULL, 0, 1e-2), TOL);
    snprintf(what, sizeof what, "attention dv (H %d, Hkv %d, hd %d)", H, Hkv, hd);
    report(what, fd_check(attn_loss, &c, c.v, dv, nkv, NULL, 0, 1e-2), TOL);
    /* threads split the work without changing a bit */
    shoal_pool *pool = shoal_pool_new(2);
    float *dq2 = zeros(nq), *dk2 = zeros(nkv), *dv2 = zeros(nkv), *out2 = zeros(nq);
    float *sc2 = zeros(2 * T), *lse2 = zeros((size_t)H * T);
    shoal_op_attn_forward(pool, T, H, Hkv, hd, c.q, c.k, c.v, out2, lse2, sc2);
    shoal_op_attn_backward(pool, T, H, Hkv, hd, c.q, c.k, c.v, out2, lse2, c.dy, dq2, dk2, dv2,
                           delta);
    CHECK(memcmp(out, out2, nq * sizeof(float)) == 0);
    CHECK(memcmp(dq, dq2, nq * sizeof(float)) == 0);
    CHECK(memcmp(dk, dk2, nkv * sizeof(float)) == 0);
    CHECK(memcmp(dv, dv2, nkv * sizeof(float)) == 0);
    shoal_pool_destroy(&pool);
    CHECK(pool == NULL);
    free(c.q); free(c.k); free(c.v); free(c.dy); free(c.out); free(c.lse); free(c.scores);
    free(out); free(lse); free(dq); free(dk); free(dv); free(delta);
    free(dq2); free(dk2); free(dv2); free(out2); free(sc2); free(lse2);
}

/* ---- swiglu ---------------------------------------------------------------------- */

typedef struct swiglu_ctx {
    size_t n;
    float *g, *u, *dh, *h;
} swiglu_ctx;

static double swiglu_loss(void *c_)
{
    swiglu_ctx *c = c_;
    shoal_op_swiglu_forward(c->n, c->g, c->u, c->h);
    return dot_d(c->dh, c->h, c->n);
}

static void test_swiglu(void)
{
    swiglu_ctx c = {40, rand_vec(40, 2), rand_vec(40, 1), rand_vec(40, 1), zeros(40)};
    float *dg = zeros(40), *du = zeros(40);
    shoal_op_swiglu_backward(40, c.g, c.u, c.dh, dg, du);
    report("swiglu d(gate)", fd_check(swiglu_loss, &c, c.g, dg, 40, NULL, 0, 1e-2), TOL);
    report("swiglu d(up)", fd_check(swiglu_loss, &c, c.u, du, 40, NULL, 0, 1e-2), TOL);
    free(c.g); free(c.u); free(c.dh); free(c.h); free(dg); free(du);
}

/* ---- linear through every weight type -------------------------------------------- */

typedef struct linear_ctx {
    shoal_mat w;
    shoal_pool *pool;
    float *x, *dy, *y;
    void *act;
} linear_ctx;

static double linear_loss(void *c_)
{
    linear_ctx *c = c_;
    shoal_op_linear_forward(c->pool, &c->w, NT, c->x, c->act, c->y);
    return dot_d(c->dy, c->y, (size_t)NT * c->w.n);
}

static void test_linear(int type)
{
    const int k = 256, n = 24;
    const char *tn = shoal_type_info(type)->name;
    size_t rb = shoal_type_row_bytes(type, k);
    float *wf = rand_vec((size_t)n * k, 0.1f), *wd = zeros((size_t)n * k);
    char *wq = malloc(rb * n);
    for (int i = 0; i < n; i++) {
        shoal_quantize_row(type, wf + (size_t)i * k, wq + (size_t)i * rb, k);
        shoal_dequantize_row(type, wq + (size_t)i * rb, wd + (size_t)i * k, k);
    }
    linear_ctx c = {{type, k, n, wq}, shoal_pool_new(2), rand_vec((size_t)NT * k, 1),
                    rand_vec((size_t)NT * n, 1), zeros((size_t)NT * n), NULL};
    size_t ab = shoal_act_bytes(type, k, NT);
    c.act = ab ? malloc(ab) : NULL;
    /* forward against double W_dequant x */
    linear_loss(&c);
    errstat ef = {0};
    for (int t = 0; t < NT; t++)
        for (int i = 0; i < n; i++)
            err_add(&ef, c.y[t * n + i], dot_d(wd + (size_t)i * k, c.x + (size_t)t * k, k));
    bool act_q = ab > 0; /* Q8_0/Q4_0 quantize activations to Q8_0 */
    char what[80];
    snprintf(what, sizeof what, "linear %s forward vs W_dequant x", tn);
    report(what, err_rel(&ef), act_q ? 2e-2 : 1e-6);
    /* backward against double W_dequant^T dy, in tiles of 7 rows */
    float *dx = zeros((size_t)NT * k), *tile = zeros((size_t)7 * k);
    for (int i = 0; i < NT * k; i++)
        dx[i] = 0.5f;
    CHECK(shoal_op_linear_backward(c.pool, &c.w, NT, c.dy, dx, tile, (size_t)7 * k) == 0);
    errstat eb = {0};
    for (int t = 0; t < NT; t++)
        for (int j = 0; j < k; j++) {
            double s = 0.5;
            for (int i = 0; i < n; i++)
                s += (double)wd[(size_t)i * k + j] * c.dy[t * n + i];
            err_add(&eb, dx[t * k + j], s);
        }
    snprintf(what, sizeof what, "linear %s dx vs W_dequant^T dy", tn);
    report(what, err_rel(&eb), 1e-6);
    if (type != SHOAL_TYPE_F32)
        CHECK(shoal_op_linear_backward(c.pool, &c.w, NT, c.dy, dx, tile, (size_t)k - 1) ==
              SHOAL_ERR_ARG);
    if (!act_q) { /* the forward is exact in x: finite differences apply */
        memset(dx, 0, (size_t)NT * k * sizeof(float));
        shoal_op_linear_backward(c.pool, &c.w, NT, c.dy, dx, tile, (size_t)7 * k);
        size_t idx[40];
        for (int j = 0; j < 40; j++)
            idx[j] = (size_t)(urand() * NT * k) % ((size_t)NT * k);
        snprintf(what, sizeof what, "linear %s dx vs finite differences", tn);
        report(what, fd_check(linear_loss, &c, c.x, dx, 40, idx, (size_t)NT * k, 1e-2), TOL);
    }
    shoal_pool_destroy(&c.pool);
    free(wf); free(wd); free(wq); free(c.x); free(c.dy); free(c.y); free(c.act);
    free(dx); free(tile);
}

/* ---- lora op ----------------------------------------------------------------------- */

typedef struct lora_ctx {
    shoal_lora_view l;
    int in, out;
    float *x, *dy, *y, *u;
    float *a, *b;
} lora_ctx;

static double lora_loss(void *c_)
{
    lora_ctx *c = c_;
    memset(c->y, 0, (size_t)NT * c->out * sizeof(float));
    shoal_op_lora_forward(&c->l, NT, c->in, c->out, c->x, c->u, c->y);
    return dot_d(c->dy, c->y, (size_t)NT * c->out);
}

static void test_lora_op(void)
{
    const int in = 16, out = 12, r = 4;
    lora_ctx c = {.in = in, .out = out, .x = rand_vec((size_t)NT * in, 1),
                  .dy = rand_vec((size_t)NT * out, 1), .y = zeros((size_t)NT * out),
                  .u = zeros((size_t)NT * r), .a = rand_vec((size_t)r * in, 0.25f),
                  .b = rand_vec((size_t)out * r, 0.5f)};
    float *da = zeros((size_t)r * in), *db = zeros((size_t)out * r), *dx = zeros((size_t)NT * in);
    float *du = zeros((size_t)NT * r);
    c.l = (shoal_lora_view){.rank = r, .scale = 8.0f / r, .a = c.a, .b = c.b, .da = da, .db = db};
    lora_loss(&c);
    shoal_op_lora_backward(&c.l, NT, in, out, c.x, c.u, c.dy, du, dx);
    report("lora op dx", fd_check(lora_loss, &c, c.x, dx, (size_t)NT * in, NULL, 0, 1e-2), TOL);
    report("lora op dA", fd_check(lora_loss, &c, c.a, da, (size_t)r * in, NULL, 0, 1e-2), TOL);
    report("lora op dB", fd_check(lora_loss, &c, c.b, db, (size_t)out * r, NULL, 0, 1e-2), TOL);
    free(c.x); free(c.dy); free(c.y); free(c.u); free(c.a); free(c.b);
    free(da); free(db); free(dx); free(du);
}

/* ---- a whole block ------------------------------------------------------------------- */

typedef struct blk {
    shoal_hparams hp;
    shoal_block_w w;
    float *norms;                       /* (2, dim) */
    float *wf[SHOAL_PROJ__COUNT];       /* f32 weights as drawn */
    void *wq[SHOAL_PROJ__COUNT];        /* weights of `type` */
    float *a[SHOAL_PROJ__COUNT], *b[SHOAL_PROJ__COUNT];
    float *da[SHOAL_PROJ__COUNT], *db[SHOAL_PROJ__COUNT];
    shoal_lora_view lv[SHOAL_PROJ__COUNT];
    int rank;
    shoal_train *tr;
    float *x, *dy, *y;
} blk;

static shoal_hparams small_hp(int dim, int ffn, int H, int Hkv, int rope_dim)
{
    shoal_hparams hp = {.n_vocab = 0, .dim = dim, .ffn = ffn, .n_layer = 1, .n_head = H,
                        .n_head_kv = Hkv, .head_dim = dim / H, .rope_dim = rope_dim,
                        .ctx_train = 64, .rms_eps = 1e-5f, .rope_theta = 10000.0f,
                        .rope_freq_scale = 1.0f};
    return hp;
}

/* Random block of weight type `type` (drawn in f32, then quantized), with
 * LoRA of rank r on every projection (B nonzero so every gradient is). */
static void blk_make(blk *k, shoal_hparams hp, int type, int r, int threads)
{
    memset(k, 0, sizeof *k);
    k->hp = hp;
    k->rank = r;
    k->norms = rand_vec(2 * (size_t)hp.dim, 0.2f);
    for (int i = 0; i < 2 * hp.dim; i++)
        k->norms[i] += 1.0f;
    k->w.attn_norm = k->norms;
    k->w.ffn_norm = k->norms + hp.dim;
    for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
        int in, out;
        shoal_proj_dims(&hp, p, &in, &out);
        k->wf[p] = rand_vec((size_t)in * out, 1.0f / sqrtf((float)in));
        size_t rb = shoal_type_row_bytes(type, in);
        k->wq[p] = malloc(rb * out);
        for (int i = 0; i < out; i++)
            shoal_quantize_row(type, k->wf[p] + (size_t)i * in, (char *)k->wq[p] + i * rb, in);
        k->w.w[p] = (shoal_mat){type, in, out, k->wq[p]};
        k->a[p] = rand_vec((size_t)r * in, 1.0f / sqrtf((float)in));
        k->b[p] = rand_vec((size_t)out * r, 0.2f);
        k->da[p] = zeros((size_t)r * in);
        k->db[p] = zeros((size_t)out * r);
        k->lv[p] = (shoal_lora_view){.rank = r, .scale = 8.0f / r, .a = k->a[p], .b = k->b[p],
                                     .da = k->da[p], .db = k->db[p]};
    }
    k->tr = shoal_train_new(&hp, NT, r, 0, threads);
    size_t n = (size_t)NT * hp.dim;
    k->x = rand_vec(n, 1);
    k->dy = rand_vec(n, 1);
    k->y = zeros(n);
}

static void blk_free(blk *k)
{
    for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
        free(k->wf[p]); free(k->wq[p]); free(k->a[p]); free(k->b[p]); free(k->da[p]);
        free(k->db[p]);
    }
    free(k->norms); free(k->x); free(k->dy); free(k->y);
    shoal_train_destroy(&k->tr);
}

static double blk_loss(void *c_)
{
    blk *k = c_;
    int rc = shoal_train_block_forward(k->tr, &k->w, k->lv, NT, k->x, k->y);
    if (rc)
        return NAN;
    return dot_d(k->dy, k->y, (size_t)NT * k->hp.dim);
}

static void blk_zero_grads(blk *k)
{
    for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
        int in, out;
        shoal_proj_dims(&k->hp, p, &in, &out);
        memset(k->da[p], 0, sizeof(float) * (size_t)k->rank * in);
        memset(k->db[p], 0, sizeof(float) * (size_t)k->rank * out);
    }
}

/* FD of the block in x and every LoRA tensor; `sample` entries per tensor
 * (0: all). Returns the largest relative error. */
static double blk_fd(blk *k, const char *label, int sample, double h, double tol)
{
    size_t n = (size_t)NT * k->hp.dim;
    float *dx = zeros(n);
    blk_zero_grads(k);
    CHECK(shoal_train_block_backward(k->tr, &k->w, k->lv, NT, k->x, k->dy, dx) == 0);
    size_t *idx = malloc(sizeof(size_t) * (sample ? (size_t)sample : 1));
    double worst = 0;
    char what[96];
    {
        size_t total = n;
        if (sample)
            for (int j = 0; j < sample; j++)
                idx[j] = (size_t)(urand() * total) % total;
        double e = fd_check(blk_loss, k, k->x, dx, sample ? (size_t)sample : total,
                            sample ? idx : NULL, total, h);
        snprintf(what, sizeof what, "%s dx", label);
        report(what, e, tol);
        worst = fmax(worst, e);
    }
    for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
        int in, out;
        shoal_proj_dims(&k->hp, p, &in, &out);
        for (int which = 0; which < 2; which++) {
            float *param = which ? k->b[p] : k->a[p];
            float *grad = which ? k->db[p] : k->da[p];
            size_t total = (size_t)k->rank * (which ? out : in);
            if (sample)
                for (int j = 0; j < sample; j++)
                    idx[j] = (size_t)(urand() * total) % total;
            double e = fd_check(blk_loss, k, param, grad, sample ? (size_t)sample : total,
                                sample ? idx : NULL, total, h);
            snprintf(what, sizeof what, "%s d%s %s", label, which ? "B" : "A",
                     shoal_proj_name(p));
            report(what, e, tol);
            worst = fmax(worst, e);
        }
    }
    free(idx);
    free(dx);
    return worst;
}

static void test_block_fd(void)
{
    blk k;
    /* GQA: 4 heads over 2 KV heads, head_dim 8, full rope; all seven targets */
    blk_make(&k, small_hp(32, 48, 4, 2, 8), SHOAL_TYPE_F32, 4, 1);
    CHECK(k.tr != NULL);
    double w1 = blk_fd(&k, "block gqa4/2", 0, 1e-2, TOL);
    /* backward is deterministic, dx may alias dy, and 2 threads agree closely */
    size_t n = (size_t)NT * k.hp.dim;
    float *dx1 = zeros(n), *dx2 = malloc(n * sizeof(float));
    blk_zero_grads(&k);
    shoal_train_block_backward(k.tr, &k.w, k.lv, NT, k.x, k.dy, dx1);
    float *da1 = malloc(sizeof(float) * 4 * 32);
    memcpy(da1, k.da[SHOAL_PROJ_Q], sizeof(float) * 4 * 32);
    memcpy(dx2, k.dy, n * sizeof(float));
    blk_zero_grads(&k);
    shoal_train_block_backward(k.tr, &k.w, k.lv, NT, k.x, dx2, dx2);
    CHECK(memcmp(dx1, dx2, n * sizeof(float)) == 0);
    CHECK(memcmp(da1, k.da[SHOAL_PROJ_Q], sizeof(float) * 4 * 32) == 0);
    /* gradients accumulate over calls */
    shoal_train_block_backward(k.tr, &k.w, k.lv, NT, k.x, k.dy, dx2);
    double md = 0;
    for (int i = 0; i < 4 * 32; i++)
        md = fmax(md, fabs(k.da[SHOAL_PROJ_Q][i] - 2 * da1[i]));
    CHECK_MSG(md < 1e-5, "accumulated dA off by %g", md);
    /* bad arguments */
    CHECK(shoal_train_block_forward(k.tr, &k.w, k.lv, NT + 1, k.x, k.y) == SHOAL_ERR_ARG);
    CHECK(shoal_train_block_forward(k.tr, &k.w, k.lv, 0, k.x, k.y) == SHOAL_ERR_ARG);
    shoal_lora_view big[SHOAL_PROJ__COUNT];
    memcpy(big, k.lv, sizeof big);
    big[SHOAL_PROJ_UP].rank = 5;
    CHECK(shoal_train_block_forward(k.tr, &k.w, big, NT, k.x, k.y) == SHOAL_ERR_ARG);
    shoal_block_w bad = k.w;
    bad.w[SHOAL_PROJ_K].n = 8;
    CHECK(shoal_train_block_backward(k.tr, &bad, k.lv, NT, k.x, k.dy, dx1) == SHOAL_ERR_ARG);
    free(dx1); free(dx2); free(da1);
    blk_free(&k);

    /* multi-head, partial rope (4 of 16 dims), rank 3, 2 threads */
    blk_make(&k, small_hp(32, 40, 2, 2, 4), SHOAL_TYPE_F32, 3, 2);
    double w2 = blk_fd(&k, "block mha2 rope4/16", 0, 1e-2, TOL);
    blk_free(&k);
    printf("  block worst relative error: %.2e (gqa), %.2e (mha, partial rope)\n", w1, w2);
}

/* Quantized blocks: exact-f32 types by FD on a sample; every type against
 * its dequantized f32 twin (activation quantization of Q8_0/Q4_0 makes the
 * forward piecewise constant in x, so FD does not apply there). */
static void test_block_types(void)
{
    const int types[] = {SHOAL_TYPE_F16, SHOAL_TYPE_BF16, SHOAL_TYPE_Q8_0, SHOAL_TYPE_Q4_0,
                         SHOAL_TYPE_Q4_K, SHOAL_TYPE_Q6_K};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        int type = types[ti];
        const char *tn = shoal_type_info(type)->name;
        shoal_hparams hp = small_hp(256, 256, 4, 2, 64);
        blk q, f;
        uint64_t seed = rng_state;
        blk_make(&q, hp, type, 2, 2);
        rng_state = seed;
        blk_make(&f, hp, SHOAL_TYPE_F32, 2, 2);
        /* f gets q's dequantized weights */
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            size_t rb = shoal_type_row_bytes(type, q.w.w[p].k);
            for (int64_t i = 0; i < q.w.w[p].n; i++)
                shoal_dequantize_row(type, (char *)q.wq[p] + i * rb,
                                     (float *)f.wq[p] + i * q.w.w[p].k, q.w.w[p].k);
        }
        size_t n = (size_t)NT * hp.dim;
        float *dxq = zeros(n), *dxf = zeros(n);
        blk_zero_grads(&q);
        blk_zero_grads(&f);
        CHECK(shoal_train_block_backward(q.tr, &q.w, q.lv, NT, q.x, q.dy, dxq) == 0);
        CHECK(shoal_train_block_backward(f.tr, &f.w, f.lv, NT, f.x, f.dy, dxf) == 0);
        bool act_q = shoal_act_bytes(type, 256, 1) > 0;
        double tol = act_q ? 3e-2 : 1e-5;
        errstat e = {0};
        for (size_t i = 0; i < n; i++)
            err_add(&e, dxq[i], dxf[i]);
        char what[96];
        snprintf(what, sizeof what, "block %s dx vs f32 twin", tn);
        report(what, err_rel(&e), tol);
        errstat ea = {0};
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            for (int i = 0; i < 2 * (int)q.w.w[p].k; i++)
                err_add(&ea, q.da[p][i], f.da[p][i]);
            for (int i = 0; i < 2 * (int)q.w.w[p].n; i++)
                err_add(&ea, q.db[p][i], f.db[p][i]);
        }
        snprintf(what, sizeof what, "block %s LoRA grads vs f32 twin", tn);
        report(what, err_rel(&ea), tol);
        if (!act_q) {
            char label[64];
            snprintf(label, sizeof label, "block %s", tn);
            blk_fd(&q, label, 12, 2e-2, TOL);
        }
        free(dxq);
        free(dxf);
        blk_free(&q);
        blk_free(&f);
    }
}

/* ---- training forward == inference ------------------------------------------------ */

static void check_forward_equal(const char *path, const char *label)
{
    char err[256];
    shoal_gguf *g = NULL;
    if (shoal_gguf_open(path, &g, err, sizeof err)) {
        CHECK_MSG(0, "open %s: %s", path, err);
        return;
    }
    shoal_model *m = NULL;
    shoal_train_w *tw = NULL;
    CHECK(shoal_model_open(g, 0, 2, 0, &m, err, sizeof err) == 0);
    CHECK(shoal_train_w_open(g, 0, 2, SHOAL_PART_EMBED | SHOAL_PART_HEAD, &tw, err,
                             sizeof err) == 0);
    if (!m || !tw)
        goto out;
    const shoal_hparams *hp = shoal_model_hparams(m);
    const int T = 7;
    size_t n = (size_t)T * hp->dim;
    float *xa = rand_vec(n, 1), *xb = malloc(n * sizeof(float));
    memcpy(xb, xa, n * sizeof(float));
    shoal_kv *kv = shoal_kv_new(m, T);
    shoal_fwd *f = shoal_fwd_new(m, T, T, 2);
    CHECK(shoal_fwd_blocks(f, kv, 0, T, xa) == 0);
    shoal_train *tr = shoal_train_new(hp, T, 0, 0, 2);
    for (int l = 0; l < 2; l++)
        CHECK(shoal_train_block_forward(tr, shoal_train_w_block(tw, l), NULL, T, xb, xb) == 0);
    CHECK_MSG(memcmp(xa, xb, n * sizeof(float)) == 0,
              "%s: training forward differs from inference", label);
    printf("  %s: training forward == inference forward (bitwise): %s\n", label,
           memcmp(xa, xb, n * sizeof(float)) == 0 ? "yes" : "NO");
    CHECK(shoal_train_w_block(tw, 2) == NULL);
    shoal_train_destroy(&tr);
    shoal_fwd_destroy(&f);
    shoal_kv_destroy(&kv);
    free(xa);
    free(xb);
out:
    shoal_train_w_destroy(&tw);
    CHECK(tw == NULL);
    shoal_model_destroy(&m);
    shoal_gguf_close(&g);
}

static void test_forward_matches_inference(void)
{
    check_forward_equal(SHOAL_SHARED "/models/stories260K.gguf", "stories260K");
    char dir[] = "/tmp/shoal-test-backward-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_K", "q6_K"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/m-%s.gguf", dir, types[i]);
        char *argv[] = {"mkmodel", "-o", path, "--dim", "256", "--ffn", "512", "--heads", "4",
                        "--kv-heads", "2", "--layers", "2", "--vocab", "300", "--type",
                        (char *)types[i], "--seed", "9", NULL};
        int rc = shoal_cmd_mkmodel(19, argv);
        CHECK_MSG(rc == 0, "mkmodel %s failed", types[i]);
        if (rc == 0)
            check_forward_equal(path, types[i]);
        unlink(path);
    }
    rmdir(dir);
}

int main(void)
{
    shoal_cpu_init();
    printf("ops (central differences, Richardson h=1e-2/2e-2, f32 forward):\n");
    test_rmsnorm();
    test_rope(8);
    test_rope(4);
    test_attention(4, 2, 8);
    test_attention(2, 2, 8);
    test_swiglu();
    test_lora_op();
    printf("matmul through every weight type (T=%d, 24x256, tiles of 7 rows):\n", NT);
    const int types[] = {SHOAL_TYPE_F32, SHOAL_TYPE_F16, SHOAL_TYPE_BF16, SHOAL_TYPE_Q8_0,
                         SHOAL_TYPE_Q4_0, SHOAL_TYPE_Q4_K, SHOAL_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        test_linear(types[i]);
    printf("block with LoRA on all seven targets:\n");
    test_block_fd();
    printf("quantized blocks (dim 256, ffn 256, GQA 4/2, rank 2; FD on 12 sampled entries "
           "per tensor, h=2e-2/4e-2):\n");
    test_block_types();
    printf("training forward vs inference:\n");
    test_forward_matches_inference();
    return check_done();
}
