/*
 * The block's ops forward and backward (see backward.h).
 *
 * Forward ops repeat model.c's arithmetic exactly (the same rmsnorm order,
 * rope table, three-pass softmax with shoal_dot_f32), so that a training
 * forward without LoRA reproduces inference bit for bit. Backward ops are
 * the textbook derivatives:
 *
 *   rmsnorm  y = w x r, r = (mean(x^2) + eps)^-1/2:
 *            dx = r (w dy) - x r^3 / n * sum(w dy x),  dw = sum_t dy x r
 *   rope     the rotation by -theta of each pair
 *   attn     with p = exp(s - lse) recomputed and delta_t = dout_t . out_t
 *            (= sum_j p_tj dp_tj): ds = p (dout . v_j - delta),
 *            dq = scale sum_j ds k_j, dk_j = scale sum_t ds q_t,
 *            dv_j = sum_t p dout_t
 *   swiglu   d silu(g)/dg = sig (1 + g (1 - sig))
 *   linear   dx = dy W, W dequantized by tiles of rows, sgemm per tile
 *   lora     four small sgemms
 *
 * Reductions that feed a gradient sum in double where a long sum would lose
 * digits (rmsnorm's inner product); everything else is f32.
 */
#include "kernels/backward.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "kernels/err.h"
#include "kernels/types.h"

static const char *const proj_names[SHOAL_PROJ__COUNT] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
};
static const char *const proj_short[SHOAL_PROJ__COUNT] = {
    "q", "k", "v", "o", "gate", "up", "down",
};

const char *shoal_proj_name(int proj)
{
    return proj >= 0 && proj < SHOAL_PROJ__COUNT ? proj_names[proj] : NULL;
}

const char *shoal_proj_short(int proj)
{
    return proj >= 0 && proj < SHOAL_PROJ__COUNT ? proj_short[proj] : NULL;
}

int shoal_proj_parse(const char *list, unsigned *mask)
{
    *mask = 0;
    if (!list || !*list)
        return SHOAL_ERR_ARG;
    if (strcmp(list, "all") == 0) {
        *mask = SHOAL_PROJ_ALL;
        return 0;
    }
    const char *p = list;
    unsigned m = 0;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int found = -1;
        for (int i = 0; i < SHOAL_PROJ__COUNT; i++)
            if (strlen(proj_short[i]) == len && memcmp(proj_short[i], p, len) == 0)
                found = i;
        if (found < 0)
            return SHOAL_ERR_ARG;
        m |= 1u << found;
        if (!e)
            break;
        p = e + 1;
    }
    *mask = m;
    return 0;
}

void shoal_proj_dims(const shoal_hparams *hp, int proj, int *in, int *out)
{
    int qdim = hp->n_head * hp->head_dim, kvdim = hp->n_head_kv * hp->head_dim;
    int i = 0, o = 0;
    switch (proj) {
    case SHOAL_PROJ_Q: i = hp->dim; o = qdim; break;
    case SHOAL_PROJ_K:
    case SHOAL_PROJ_V: i = hp->dim; o = kvdim; break;
    case SHOAL_PROJ_O: i = qdim; o = hp->dim; break;
    case SHOAL_PROJ_GATE:
    case SHOAL_PROJ_UP: i = hp->dim; o = hp->ffn; break;
    case SHOAL_PROJ_DOWN: i = hp->ffn; o = hp->dim; break;
    default: break;
    }
    *in = i;
    *out = o;
}

/* ---- rmsnorm ------------------------------------------------------------- */

static float rms_inv(const float *x, int n, float eps)
{
    float ss = shoal_dot_f32(x, x, n);
    ss /= (float)n;
    ss += eps;
    return 1.0f / sqrtf(ss);
}

void shoal_op_rmsnorm_forward(int T, int n, const float *x, const float *w, float eps, float *y)
{
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * n;
        float *yr = y + (size_t)t * n;
        float r = rms_inv(xr, n, eps);
        for (int i = 0; i < n; i++)
            yr[i] = w[i] * (r * xr[i]);
    }
}

void shoal_op_rmsnorm_backward(int T, int n, const float *x, const float *w, float eps,
                               const float *dy, float *dx, float *dw)
{
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * n, *dyr = dy + (size_t)t * n;
        float *dxr = dx + (size_t)t * n;
        float r = rms_inv(xr, n, eps);
        double dot = 0;
        for (int i = 0; i < n; i++)
            dot += (double)w[i] * dyr[i] * xr[i];
        float c = (float)(dot * r * r * r / n);
        for (int i = 0; i < n; i++)
            dxr[i] += r * w[i] * dyr[i] - c * xr[i];
        if (dw)
            for (int i = 0; i < n; i++)
                dw[i] += dyr[i] * xr[i] * r;
    }
}

/* ---- rope ---------------------------------------------------------------- */

void shoal_op_rope_table(int T, int pos, const shoal_hparams *hp, float *cs)
{
    int half = hp->rope_dim / 2;
    for (int t = 0; t < T; t++) {
        float *c = cs + (size_t)t * hp->rope_dim;
        for (int i = 0; i < half; i++) {
            float freq = 1.0f / powf(hp->rope_theta, (float)(2 * i) / (float)hp->rope_dim);
            float val = (float)(pos + t) * hp->rope_freq_scale * freq;
            c[2 * i] = cosf(val);
            c[2 * i + 1] = sinf(val);
        }
    }
}

static void rope_rotate(int T, int n_heads, int head_dim, int rope_dim, const float *cs,
                        float *x, float sign)
{
    for (int t = 0; t < T; t++) {
        const float *c = cs + (size_t)t * rope_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < rope_dim / 2; i++) {
                float co = c[2 * i], si = sign * c[2 * i + 1];
                float a = v[2 * i], b = v[2 * i + 1];
                v[2 * i] = a * co - b * si;
                v[2 * i + 1] = a * si + b * co;
            }
        }
    }
}

void shoal_op_rope_forward(int T, int n_heads, int head_dim, int rope_dim, const float *cs,
                           float *x)
{
    rope_rotate(T, n_heads, head_dim, rope_dim, cs, x, 1.0f);
}

void shoal_op_rope_backward(int T, int n_heads, int head_dim, int rope_dim, const float *cs,
                            float *dx)
{
    rope_rotate(T, n_heads, head_dim, rope_dim, cs, dx, -1.0f);
}

/* ---- attention ----------------------------------------------------------- */

typedef struct attn_args {
    int T, H, Hkv, hd;
    const float *q, *k, *v, *out, *lse, *dout;
    float *o, *lse_out, *dq, *dk, *dv, *delta, *scores;
} attn_args;

static void attn_fwd_task(void *ctx, int ith, int nth)
{
    const attn_args *a = ctx;
    const int H = a->H, hd = a->hd, group = a->H / a->Hkv, kvd = a->Hkv * a->hd;
    const float scale = 1.0f / sqrtf((float)hd);
    float *scores = a->scores + (size_t)ith * a->T;
    long b, e;
    shoal_pool_split((long)a->T * H, 1, ith, nth, &b, &e);
    for (long it = b; it < e; it++) {
        int t = (int)(it / H), h = (int)(it % H), kvh = h / group;
        const float *q = a->q + ((size_t)t * H + h) * hd;
        float max = -INFINITY;
        for (int p = 0; p <= t; p++) {
            float s = shoal_dot_f32(q, a->k + (size_t)p * kvd + (size_t)kvh * hd, hd) * scale;
            scores[p] = s;
            max = s > max ? s : max;
        }
        float sum = 0;
        for (int p = 0; p <= t; p++) {
            scores[p] = expf(scores[p] - max);
            sum += scores[p];
        }
        for (int p = 0; p <= t; p++)
            scores[p] /= sum;
        a->lse_out[(size_t)h * a->T + t] = max + logf(sum);
        float *o = a->o + ((size_t)t * H + h) * hd;
        memset(o, 0, (size_t)hd * sizeof *o);
        for (int p = 0; p <= t; p++) {
            const float *v = a->v + (size_t)p * kvd + (size_t)kvh * hd;
            float w = scores[p];
            for (int d = 0; d < hd; d++)
                o[d] += w * v[d];
        }
    }
}

void shoal_op_attn_forward(shoal_pool *pool, int T, int H, int Hkv, int hd, const float *q,
                           const float *k, const float *v, float *out, float *lse,
                           float *scores)
{
    attn_args a = {.T = T, .H = H, .Hkv = Hkv, .hd = hd, .q = q, .k = k, .v = v,
                   .o = out, .lse_out = lse, .scores = scores};
    shoal_pool_run(pool, attn_fwd_task, &a);
}

/* delta[h][t] = dout_t,h . out_t,h */
static void attn_delta_task(void *ctx, int ith, int nth)
{
    const attn_args *a = ctx;
    long b, e;
    shoal_pool_split((long)a->T * a->H, 1, ith, nth, &b, &e);
    for (long it = b; it < e; it++) {
        int t = (int)(it / a->H), h = (int)(it % a->H);
        size_t off = ((size_t)t * a->H + h) * a->hd;
        a->delta[(size_t)h * a->T + t] = shoal_dot_f32(a->dout + off, a->out + off, a->hd);
    }
}

/* dq for rows (t, h). */
static void attn_dq_task(void *ctx, int ith, int nth)
{
    const attn_args *a = ctx;
    const int H = a->H, hd = a->hd, group = a->H / a->Hkv, kvd = a->Hkv * a->hd;
    const float scale = 1.0f / sqrtf((float)hd);
    long b, e;
    shoal_pool_split((long)a->T * H, 1, ith, nth, &b, &e);
    for (long it = b; it < e; it++) {
        int t = (int)(it / H), h = (int)(it % H), kvh = h / group;
        size_t off = ((size_t)t * H + h) * hd;
        const float *q = a->q + off, *dout = a->dout + off;
        float *dq = a->dq + off;
        float lse = a->lse[(size_t)h * a->T + t], delta = a->delta[(size_t)h * a->T + t];
        for (int j = 0; j <= t; j++) {
            const float *k = a->k + (size_t)j * kvd + (size_t)kvh * hd;
            const float *v = a->v + (size_t)j * kvd + (size_t)kvh * hd;
            float p = expf(shoal_dot_f32(q, k, hd) * scale - lse);
            float ds = p * (shoal_dot_f32(dout, v, hd) - delta) * scale;
            for (int d = 0; d < hd; d++)
                dq[d] += ds * k[d];
        }
    }
}

/* dk, dv for key positions (j, kvh), summed over the group's heads. */
static void attn_dkv_task(void *ctx, int ith, int nth)
{
    const attn_args *a = ctx;
    const int H = a->H, hd = a->hd, group = a->H / a->Hkv, kvd = a->Hkv * a->hd;
    const float scale = 1.0f / sqrtf((float)hd);
    long b, e;
    shoal_pool_split((long)a->T * a->Hkv, 1, ith, nth, &b, &e);
    for (long it = b; it < e; it++) {
        int j = (int)(it / a->Hkv), kvh = (int)(it % a->Hkv);
        size_t koff = (size_t)j * kvd + (size_t)kvh * hd;
        const float *k = a->k + koff, *v = a->v + koff;
        float *dk = a->dk + koff, *dv = a->dv + koff;
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            for (int t = j; t < a->T; t++) {
                size_t off = ((size_t)t * H + h) * hd;
                const float *q = a->q + off, *dout = a->dout + off;
                float p = expf(shoal_dot_f32(q, k, hd) * scale - a->lse[(size_t)h * a->T + t]);
                float ds = p * (shoal_dot_f32(dout, v, hd) - a->delta[(size_t)h * a->T + t]) *
                           scale;
                for (int d = 0; d < hd; d++) {
                    dk[d] += ds * q[d];
                    dv[d] += p * dout[d];
                }
            }
        }
    }
}

void shoal_op_attn_backward(shoal_pool *pool, int T, int H, int Hkv, int hd, const float *q,
                            const float *k, const float *v, const float *out,
                            const float *lse, const float *dout, float *dq, float *dk,
                            float *dv, float *delta)
{
    attn_args a = {.T = T, .H = H, .Hkv = Hkv, .hd = hd, .q = q, .k = k, .v = v, .out = out,
                   .lse = lse, .dout = dout, .dq = dq, .dk = dk, .dv = dv, .delta = delta};
    shoal_pool_run(pool, attn_delta_task, &a);
    shoal_pool_run(pool, attn_dq_task, &a);
    shoal_pool_run(pool, attn_dkv_task, &a);
}

/* ---- swiglu -------------------------------------------------------------- */

void shoal_op_swiglu_forward(size_t n, const float *g, const float *u, float *h)
{
    for (size_t i = 0; i < n; i++) {
        float x = g[i];
        x *= 1.0f / (1.0f + expf(-x));
        h[i] = x * u[i];
    }
}

void shoal_op_swiglu_backward(size_t n, const float *g, const float *u, const float *dh,
                              float *dg, float *du)
{
    for (size_t i = 0; i < n; i++) {
        float x = g[i];
        float sig = 1.0f / (1.0f + expf(-x));
        float silu = x * sig;
        dg[i] += dh[i] * u[i] * sig * (1.0f + x * (1.0f - sig));
        du[i] += dh[i] * silu;
    }
}

/* ---- linear -------------------------------------------------------------- */

typedef struct linear_job {
    const shoal_mat *w;
    const float *x;
    const void *act;
    int T;
    float *y;
    int64_t r0;     /* backward: first row of the tile */
    int64_t rows;   /* backward: rows in the tile */
    float *tile;
} linear_job;

static void linear_fwd_task(void *ctx, int ith, int nth)
{
    linear_job *j = ctx;
    long r0, r1;
    shoal_pool_split((long)j->w->n, 32, ith, nth, &r0, &r1);
    if (r1 > r0)
        shoal_matmul(j->w, j->x, j->act, j->T, j->y, j->w->n, r0, r1);
}

void shoal_op_linear_forward(shoal_pool *pool, const shoal_mat *w, int T, const float *x,
                             void *act, float *y)
{
    const void *a = NULL;
    if (shoal_act_bytes(w->type, w->k, T) > 0) {
        shoal_act_prepare(w->type, x, w->k, T, act);
        a = act;
    }
    linear_job j = {.w = w, .x = x, .act = a, .T = T, .y = y};
    shoal_pool_run(pool, linear_fwd_task, &j);
}

static void dequant_task(void *ctx, int ith, int nth)
{
    linear_job *j = ctx;
    size_t rb = shoal_type_row_bytes(j->w->type, j->w->k);
    long b, e;
    shoal_pool_split((long)j->rows, 1, ith, nth, &b, &e);
    for (long i = b; i < e; i++)
        shoal_dequantize_row(j->w->type, (const char *)j->w->data + (size_t)(j->r0 + i) * rb,
                             j->tile + (size_t)i * (size_t)j->w->k, j->w->k);
}

int shoal_op_linear_backward(shoal_pool *pool, const shoal_mat *w, int T, const float *dy,
                             float *dx, float *tile, size_t tile_floats)
{
    if (T < 1 || w->k < 1 || w->n < 1 || w->k > INT32_MAX || w->n > INT32_MAX || !w->data ||
        shoal_type_row_bytes(w->type, w->k) == 0)
        return SHOAL_ERR_ARG;
    const int k = (int)w->k, n = (int)w->n;
    if (w->type == SHOAL_TYPE_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, k, n, 1.0f, dy, n,
                    (const float *)w->data, k, 1.0f, dx, k);
        return 0;
    }
    if (!tile || tile_floats < (size_t)k)
        return SHOAL_ERR_ARG;
    int64_t per = (int64_t)(tile_floats / (size_t)k);
    for (int64_t r0 = 0; r0 < n; r0 += per) {
        int64_t rows = n - r0 < per ? n - r0 : per;
        linear_job j = {.w = w, .r0 = r0, .rows = rows, .tile = tile};
        shoal_pool_run(pool, dequant_task, &j);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, k, (int)rows, 1.0f, dy + r0,
                    n, tile, k, 1.0f, dx, k);
    }
    return 0;
}

/* ---- lora ---------------------------------------------------------------- */

void shoal_op_lora_forward(const shoal_lora_view *l, int T, int in, int out, const float *x,
                           float *u, float *y)
{
    const int r = l->rank;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, r, in, 1.0f, x, in, l->a, in, 0.0f,
                u, r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, r, l->scale, u, r, l->b, r,
                1.0f, y, out);
}

void shoal_op_lora_backward(const shoal_lora_view *l, int T, int in, int out, const float *x,
                            const float *u, const float *dy, float *du, float *dx)
{
    const int r = l->rank;
    if (l->db)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, T, l->scale, dy, out, u, r,
                    1.0f, l->db, r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, r, out, l->scale, dy, out, l->b,
                r, 0.0f, du, r);
    if (l->da)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, T, 1.0f, du, r, x, in, 1.0f,
                    l->da, in);
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, in, r, 1.0f, du, r, l->a, in,
                    1.0f, dx, in);
}
