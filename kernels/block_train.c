/*
 * The training passes over a block and the head (see backward.h).
 *
 * Block forward, T tokens at positions 0..T-1 (saved tensors starred):
 *   xn1* = rmsnorm(x) * attn_norm
 *   q*, k*, v* = Wq xn1, Wk xn1, Wv xn1 (+ LoRA, u_q* u_k* u_v*); rope(q, k)
 *   o*, lse* = attention(q, k, v)
 *   h* = x + Wo o (+ LoRA, u_o*)
 *   xn2* = rmsnorm(h) * ffn_norm
 *   g*, up* = Wgate xn2, Wup xn2 (+ LoRA, u_gate* u_up*)
 *   s* = silu(g) * up
 *   y = h + Wdown s (+ LoRA, u_down*)
 * Backward runs the forward again from x (so nothing has to survive
 * between the two calls), then walks the same list in reverse. Every
 * buffer lives in shoal_train, sized for max_T tokens at creation.
 *
 * The weight views are a shoal_model's (kernels/model.h).
 */
#include "kernels/backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "kernels/types.h"

/* Floats of scratch for the transposed product of quantized weights. */
#define TILE_FLOATS ((size_t)1 << 21)

/* ---- weights ------------------------------------------------------------- */

/* The weights are a shoal_model's (same checks, same views into the
 * mapping); training only adds the part flags it was opened with. */
struct shoal_train_w {
    shoal_model *m;
    bool has_head, has_embd;
};

int shoal_train_w_open(const shoal_gguf *g, int b0, int b1, unsigned parts,
                       shoal_train_w **out, char *err, size_t errlen)
{
    *out = NULL;
    shoal_train_w *w = calloc(1, sizeof *w);
    if (!w) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    int rc = shoal_model_open(g, b0, b1, parts, &w->m, err, errlen);
    if (rc) {
        free(w);
        return rc;
    }
    w->has_embd = (parts & SHOAL_PART_EMBED) != 0;
    w->has_head = (parts & SHOAL_PART_HEAD) != 0;
    *out = w;
    return 0;
}

void shoal_train_w_destroy(shoal_train_w **wp)
{
    if (!wp || !*wp)
        return;
    shoal_model_destroy(&(*wp)->m);
    free(*wp);
    *wp = NULL;
}

const shoal_hparams *shoal_train_w_hparams(const shoal_train_w *w)
{
    return shoal_model_hparams(w->m);
}

const shoal_block_w *shoal_train_w_block(const shoal_train_w *w, int layer)
{
    return shoal_model_block(w->m, layer);
}

const shoal_head_w *shoal_train_w_head(const shoal_train_w *w)
{
    return w->has_head || w->has_embd ? shoal_model_head(w->m) : NULL;
}

int shoal_train_w_embed(const shoal_train_w *w, const int32_t *tokens, int T, float *x)
{
    if (!w->has_embd || T < 0)
        return SHOAL_ERR_ARG;
    return shoal_model_embed(w->m, tokens, T, x);
}

/* ---- train context -------------------------------------------------------- */

struct shoal_train {
    shoal_hparams hp;
    shoal_pool *pool;
    int max_T, max_rank, n_vocab, nth;
    /* saved by the forward (recomputed by backward) */
    float *xn1;     /* (T, dim) */
    float *q;       /* (T, qdim) roped */
    float *k;       /* (T, kvdim) roped */
    float *v;       /* (T, kvdim) */
    float *o;       /* (T, qdim) */
    float *lse;     /* (H, T) */
    float *h;       /* (T, dim) */
    float *xn2;     /* (T, dim) */
    float *g;       /* (T, ffn) */
    float *up;      /* (T, ffn) */
    float *s;       /* (T, ffn) */
    float *u[SHOAL_PROJ__COUNT]; /* (T, max_rank) LoRA A x */
    /* scratch */
    float *tmp;     /* (T, wide) */
    float *cs;      /* (T, rope_dim) */
    float *scores;  /* (nth, T) */
    void *act;
    size_t act_cap;
    /* backward */
    float *dh;      /* (T, dim) */
    float *dxn;     /* (T, dim) */
    float *ds;      /* (T, ffn) */
    float *dg;      /* (T, ffn) */
    float *dup;     /* (T, ffn) */
    float *dq;      /* (T, qdim) */
    float *dk;      /* (T, kvdim) */
    float *dv;      /* (T, kvdim) */
    float *dout;    /* (T, qdim) */
    float *delta;   /* (H, T) */
    float *du;      /* (T, max_rank) */
    float *tile;
    size_t tile_floats;
    /* head */
    float *logits;  /* (T, n_vocab) */
};

static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

static size_t max_act_bytes(const shoal_hparams *hp, int T, int n_vocab)
{
    const int types[] = {SHOAL_TYPE_Q8_0, SHOAL_TYPE_Q4_0};
    size_t need = 0;
    for (int i = 0; i < 2; i++) {
        need = zmax(need, shoal_act_bytes(types[i], hp->dim, T));
        need = zmax(need, shoal_act_bytes(types[i], hp->ffn, T));
        need = zmax(need, shoal_act_bytes(types[i], (int64_t)hp->n_head * hp->head_dim, T));
    }
    (void)n_vocab;
    return need;
}

shoal_train *shoal_train_new(const shoal_hparams *hp, int max_T, int max_rank, int n_vocab,
                             int n_threads)
{
    if (!hp || max_T < 1 || max_rank < 0 || n_vocab < 0 || n_threads < 1 || hp->dim < 1 ||
        hp->n_head < 1 || hp->n_head_kv < 1 || hp->n_head % hp->n_head_kv || hp->ffn < 1 ||
        hp->head_dim < 1 || hp->rope_dim > hp->head_dim)
        return NULL;
    shoal_train *tr = calloc(1, sizeof *tr);
    if (!tr)
        return NULL;
    tr->hp = *hp;
    tr->max_T = max_T;
    tr->max_rank = max_rank;
    tr->n_vocab = n_vocab;
    tr->pool = shoal_pool_new(n_threads);
    tr->nth = n_threads;
    const size_t T = (size_t)max_T, dim = (size_t)hp->dim, ffn = (size_t)hp->ffn;
    const size_t qdim = (size_t)hp->n_head * hp->head_dim;
    const size_t kvdim = (size_t)hp->n_head_kv * hp->head_dim;
    const size_t wide = zmax(zmax(dim, ffn), qdim);
    const size_t R = (size_t)(max_rank > 0 ? max_rank : 1);
    bool ok = tr->pool != NULL;
#define ALLOC(field, count)                                         \
    do {                                                            \
        tr->field = malloc(sizeof(float) * (count));                \
        ok = ok && tr->field;                                       \
    } while (0)
    ALLOC(xn1, T * dim);
    ALLOC(q, T * qdim);
    ALLOC(k, T * kvdim);
    ALLOC(v, T * kvdim);
    ALLOC(o, T * qdim);
    ALLOC(lse, (size_t)hp->n_head * T);
    ALLOC(h, T * dim);
    ALLOC(xn2, T * dim);
    ALLOC(g, T * ffn);
    ALLOC(up, T * ffn);
    ALLOC(s, T * ffn);
    for (int p = 0; p < SHOAL_PROJ__COUNT; p++)
        ALLOC(u[p], T * R);
    ALLOC(tmp, T * wide);
    ALLOC(cs, T * (size_t)hp->rope_dim);
    ALLOC(scores, (size_t)n_threads * T);
    ALLOC(dh, T * dim);
    ALLOC(dxn, T * dim);
    ALLOC(ds, T * ffn);
    ALLOC(dg, T * ffn);
    ALLOC(dup, T * ffn);
    ALLOC(dq, T * qdim);
    ALLOC(dk, T * kvdim);
    ALLOC(dv, T * kvdim);
    ALLOC(dout, T * qdim);
    ALLOC(delta, (size_t)hp->n_head * T);
    ALLOC(du, T * R);
    size_t rows = zmax(wide, (size_t)n_vocab);
    tr->tile_floats = zmax(wide, rows * wide < TILE_FLOATS ? rows * wide : TILE_FLOATS);
    ALLOC(tile, tr->tile_floats);
    if (n_vocab > 0)
        ALLOC(logits, T * (size_t)n_vocab);
#undef ALLOC
    tr->act_cap = max_act_bytes(hp, max_T, n_vocab);
    if (tr->act_cap) {
        tr->act = malloc(tr->act_cap);
        ok = ok && tr->act;
    }
    if (!ok)
        shoal_train_destroy(&tr);
    return tr;
}

void shoal_train_destroy(shoal_train **trp)
{
    if (!trp || !*trp)
        return;
    shoal_train *tr = *trp;
    shoal_pool_destroy(&tr->pool);
    float *bufs[] = {tr->xn1, tr->q,   tr->k,  tr->v,    tr->o,   tr->lse,  tr->h,
                     tr->xn2, tr->g,   tr->up, tr->s,    tr->tmp, tr->cs,   tr->scores,
                     tr->dh,  tr->dxn, tr->ds, tr->dg,   tr->dup, tr->dq,   tr->dk,
                     tr->dv,  tr->dout, tr->delta, tr->du, tr->tile, tr->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    for (int p = 0; p < SHOAL_PROJ__COUNT; p++)
        free(tr->u[p]);
    free(tr->act);
    free(tr);
    *trp = NULL;
}

int shoal_train_max_T(const shoal_train *tr) { return tr->max_T; }

/* Checks a block's weights and LoRA views against the context. */
static int check_block(const shoal_train *tr, const shoal_block_w *w,
                       const shoal_lora_view *lora, int T)
{
    if (!w || T < 1 || T > tr->max_T || !w->attn_norm || !w->ffn_norm)
        return SHOAL_ERR_ARG;
    for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
        int in, out;
        shoal_proj_dims(&tr->hp, p, &in, &out);
        if (w->w[p].k != in || w->w[p].n != out || !w->w[p].data ||
            shoal_type_row_bytes(w->w[p].type, in) == 0)
            return SHOAL_ERR_ARG;
        if (lora && lora[p].rank != 0 && (lora[p].rank < 0 || lora[p].rank > tr->max_rank))
            return SHOAL_ERR_ARG;
    }
    return 0;
}

/* y (T, out) = W x (+ LoRA); x must stay valid, it is the LoRA input. */
static void proj_forward(shoal_train *tr, const shoal_block_w *w, const shoal_lora_view *lora,
                         int p, int T, const float *x, float *y)
{
    shoal_op_linear_forward(tr->pool, &w->w[p], T, x, tr->act, y);
    if (lora && shoal_lora_view_on(&lora[p]))
        shoal_op_lora_forward(&lora[p], T, (int)w->w[p].k, (int)w->w[p].n, x, tr->u[p], y);
}

/* dx (T, in) += W^T dy (+ LoRA, whose gradients accumulate). */
static int proj_backward(shoal_train *tr, const shoal_block_w *w, const shoal_lora_view *lora,
                         int p, int T, const float *x, const float *dy, float *dx)
{
    int rc = shoal_op_linear_backward(tr->pool, &w->w[p], T, dy, dx, tr->tile, tr->tile_floats);
    if (rc)
        return rc;
    if (lora && shoal_lora_view_on(&lora[p]))
        shoal_op_lora_backward(&lora[p], T, (int)w->w[p].k, (int)w->w[p].n, x, tr->u[p], dy,
                               tr->du, dx);
    return 0;
}

/* Runs the block on x and leaves every saved tensor in tr; y may be NULL. */
static void block_forward(shoal_train *tr, const shoal_block_w *w, const shoal_lora_view *lora,
                          int T, const float *x, float *y)
{
    const shoal_hparams *hp = &tr->hp;
    const int dim = hp->dim, H = hp->n_head, Hkv = hp->n_head_kv, hd = hp->head_dim;
    const size_t n = (size_t)T * dim, nf = (size_t)T * hp->ffn;
    shoal_op_rope_table(T, 0, hp, tr->cs);
    shoal_op_rmsnorm_forward(T, dim, x, w->attn_norm, hp->rms_eps, tr->xn1);
    proj_forward(tr, w, lora, SHOAL_PROJ_Q, T, tr->xn1, tr->q);
    proj_forward(tr, w, lora, SHOAL_PROJ_K, T, tr->xn1, tr->k);
    proj_forward(tr, w, lora, SHOAL_PROJ_V, T, tr->xn1, tr->v);
    shoal_op_rope_forward(T, H, hd, hp->rope_dim, tr->cs, tr->q);
    shoal_op_rope_forward(T, Hkv, hd, hp->rope_dim, tr->cs, tr->k);
    shoal_op_attn_forward(tr->pool, T, H, Hkv, hd, tr->q, tr->k, tr->v, tr->o, tr->lse,
                          tr->scores);
    proj_forward(tr, w, lora, SHOAL_PROJ_O, T, tr->o, tr->tmp);
    for (size_t i = 0; i < n; i++)
        tr->h[i] = x[i] + tr->tmp[i];
    shoal_op_rmsnorm_forward(T, dim, tr->h, w->ffn_norm, hp->rms_eps, tr->xn2);
    proj_forward(tr, w, lora, SHOAL_PROJ_GATE, T, tr->xn2, tr->g);
    proj_forward(tr, w, lora, SHOAL_PROJ_UP, T, tr->xn2, tr->up);
    shoal_op_swiglu_forward(nf, tr->g, tr->up, tr->s);
    if (!y) { /* backward needs only down's LoRA input u = A s, not its output */
        if (lora && shoal_lora_view_on(&lora[SHOAL_PROJ_DOWN]))
            shoal_op_lora_forward(&lora[SHOAL_PROJ_DOWN], T, hp->ffn, dim, tr->s,
                                  tr->u[SHOAL_PROJ_DOWN], tr->tmp);
        return;
    }
    proj_forward(tr, w, lora, SHOAL_PROJ_DOWN, T, tr->s, tr->tmp);
    for (size_t i = 0; i < n; i++)
        y[i] = tr->h[i] + tr->tmp[i];
}

int shoal_train_block_forward(shoal_train *tr, const shoal_block_w *w,
                              const shoal_lora_view *lora, int T, const float *x, float *y)
{
    int rc = check_block(tr, w, lora, T);
    if (rc)
        return rc;
    block_forward(tr, w, lora, T, x, y);
    return 0;
}

int shoal_train_block_backward(shoal_train *tr, const shoal_block_w *w,
                               const shoal_lora_view *lora, int T, const float *x,
                               const float *dy, float *dx)
{
    int rc = check_block(tr, w, lora, T);
    if (rc)
        return rc;
    const shoal_hparams *hp = &tr->hp;
    const int dim = hp->dim, H = hp->n_head, Hkv = hp->n_head_kv, hd = hp->head_dim;
    const size_t n = (size_t)T * dim, nf = (size_t)T * hp->ffn;
    const size_t nq = (size_t)T * H * hd, nkv = (size_t)T * Hkv * hd;
    block_forward(tr, w, lora, T, x, NULL);

    /* y = h + down(s) */
    memset(tr->ds, 0, nf * sizeof(float));
    if ((rc = proj_backward(tr, w, lora, SHOAL_PROJ_DOWN, T, tr->s, dy, tr->ds)))
        return rc;
    memcpy(tr->dh, dy, n * sizeof(float)); /* dy is not read after this */
    /* s = silu(g) * up */
    memset(tr->dg, 0, nf * sizeof(float));
    memset(tr->dup, 0, nf * sizeof(float));
    shoal_op_swiglu_backward(nf, tr->g, tr->up, tr->ds, tr->dg, tr->dup);
    /* g, up = gate(xn2), up(xn2) */
    memset(tr->dxn, 0, n * sizeof(float));
    if ((rc = proj_backward(tr, w, lora, SHOAL_PROJ_GATE, T, tr->xn2, tr->dg, tr->dxn)) ||
        (rc = proj_backward(tr, w, lora, SHOAL_PROJ_UP, T, tr->xn2, tr->dup, tr->dxn)))
        return rc;
    /* xn2 = rmsnorm(h) */
    shoal_op_rmsnorm_backward(T, dim, tr->h, w->ffn_norm, hp->rms_eps, tr->dxn, tr->dh, NULL);
    /* h = x + o_proj(o) */
    memset(tr->dout, 0, nq * sizeof(float));
    if ((rc = proj_backward(tr, w, lora, SHOAL_PROJ_O, T, tr->o, tr->dh, tr->dout)))
        return rc;
    /* o = attention(q, k, v) */
    memset(tr->dq, 0, nq * sizeof(float));
    memset(tr->dk, 0, nkv * sizeof(float));
    memset(tr->dv, 0, nkv * sizeof(float));
    shoal_op_attn_backward(tr->pool, T, H, Hkv, hd, tr->q, tr->k, tr->v, tr->o, tr->lse,
                           tr->dout, tr->dq, tr->dk, tr->dv, tr->delta);
    shoal_op_rope_backward(T, H, hd, hp->rope_dim, tr->cs, tr->dq);
    shoal_op_rope_backward(T, Hkv, hd, hp->rope_dim, tr->cs, tr->dk);
    /* q, k, v = proj(xn1) */
    memset(tr->dxn, 0, n * sizeof(float));
    if ((rc = proj_backward(tr, w, lora, SHOAL_PROJ_Q, T, tr->xn1, tr->dq, tr->dxn)) ||
        (rc = proj_backward(tr, w, lora, SHOAL_PROJ_K, T, tr->xn1, tr->dk, tr->dxn)) ||
        (rc = proj_backward(tr, w, lora, SHOAL_PROJ_V, T, tr->xn1, tr->dv, tr->dxn)))
        return rc;
    /* xn1 = rmsnorm(x); dx = dh + that path */
    shoal_op_rmsnorm_backward(T, dim, x, w->attn_norm, hp->rms_eps, tr->dxn, tr->dh, NULL);
    memcpy(dx, tr->dh, n * sizeof(float));
    return 0;
}

/* ---- head ------------------------------------------------------------------ */

static int check_head(const shoal_train *tr, const shoal_head_w *h, int T)
{
    if (!h || !h->out_norm || !h->out.data || T < 1 || T > tr->max_T ||
        h->out.k != tr->hp.dim || h->out.n != tr->n_vocab || tr->n_vocab < 1 ||
        shoal_type_row_bytes(h->out.type, h->out.k) == 0)
        return SHOAL_ERR_ARG;
    return 0;
}

int shoal_train_head_logits(shoal_train *tr, const shoal_head_w *h, int T, const float *x,
                            float *logits)
{
    int rc = check_head(tr, h, T);
    if (rc)
        return rc;
    shoal_op_rmsnorm_forward(T, tr->hp.dim, x, h->out_norm, tr->hp.rms_eps, tr->xn1);
    shoal_op_linear_forward(tr->pool, &h->out, T, tr->xn1, tr->act, logits);
    return 0;
}

int shoal_train_head_loss(shoal_train *tr, const shoal_head_w *h, int T, const float *x,
                          const int32_t *targets, float grad_scale, float *dx,
                          double *loss_sum, int *n_counted)
{
    int rc = check_head(tr, h, T);
    if (rc)
        return rc;
    const int V = tr->n_vocab, dim = tr->hp.dim;
    for (int t = 0; t < T; t++)
        if (targets[t] >= V)
            return SHOAL_ERR_RANGE;
    if ((rc = shoal_train_head_logits(tr, h, T, x, tr->logits)))
        return rc;
    double sum = 0;
    int count = 0;
    for (int t = 0; t < T; t++) {
        float *z = tr->logits + (size_t)t * V;
        if (targets[t] < 0) {
            memset(z, 0, (size_t)V * sizeof *z); /* no gradient from this row */
            continue;
        }
        float max = z[0];
        for (int i = 1; i < V; i++)
            max = z[i] > max ? z[i] : max;
        double se = 0;
        for (int i = 0; i < V; i++)
            se += exp((double)z[i] - max);
        double lse = max + log(se);
        sum += lse - z[targets[t]];
        count++;
        /* z <- grad_scale * (softmax(z) - onehot) */
        for (int i = 0; i < V; i++)
            z[i] = (float)(exp((double)z[i] - lse) * grad_scale);
        z[targets[t]] -= grad_scale;
    }
    *loss_sum = sum;
    *n_counted = count;
    if (!dx)
        return 0;
    memset(tr->dxn, 0, (size_t)T * dim * sizeof(float));
    if ((rc = shoal_op_linear_backward(tr->pool, &h->out, T, tr->logits, tr->dxn, tr->tile,
                                       tr->tile_floats)))
        return rc;
    memset(tr->dh, 0, (size_t)T * dim * sizeof(float));
    shoal_op_rmsnorm_backward(T, dim, x, h->out_norm, tr->hp.rms_eps, tr->dxn, tr->dh, NULL);
    memcpy(dx, tr->dh, (size_t)T * dim * sizeof(float));
    return 0;
}
