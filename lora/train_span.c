/*
 * A span's LoRA training state (see train_span.h).
 *
 * Everything is allocated in shoal_train_span_new: the adapter and its
 * gradients, AdamW's moments, the block-pass scratch, and max_saved
 * buffers of (blocks, max_tokens, dim) floats for the held micro-batches.
 * The checkpoint walks a table of (values, m, v, n) per optimizer tensor,
 * built once in the optimizer's order.
 */
#include "lora/train_span.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"

typedef struct span_tensor {
    float *val, *m, *v;  /* (n) each */
    size_t n;
} span_tensor;

typedef struct saved_mb {
    uint64_t key;        /* 0: free */
    int n_seq, T;
    float *x;            /* (blocks, max_tokens, dim): each block's input */
} saved_mb;

struct shoal_train_span {
    shoal_train_span_params p;
    shoal_hparams hp;
    const shoal_train_w *w;
    int b0, b1;
    shoal_adapter *ad;
    shoal_adamw *opt;
    shoal_train *tr;
    shoal_lora_view *views;  /* (blocks, SHOAL_PROJ__COUNT) with gradients */
    span_tensor *tens;
    size_t ntens, state_len;
    saved_mb *saved;         /* max_saved */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

shoal_train_span_params shoal_train_span_params_default(void)
{
    shoal_train_span_params p = {
        .rank = 8, .alpha = 16.0f, .targets = SHOAL_PROJ_ALL, .seed = 0,
        .opt = shoal_adamw_params_default(), .max_tokens = 256, .max_saved = 1, .threads = 1,
    };
    return p;
}

int shoal_train_span_params_check(const shoal_hparams *hp, const shoal_train_span_params *p,
                                  char *err, size_t errlen)
{
    if (!p->targets || (p->targets & ~SHOAL_PROJ_ALL)) {
        set_err(err, errlen, "no projection (or an unknown one) to train");
        return SHOAL_ERR_ARG;
    }
    if (p->rank < 1 || p->rank > SHOAL_LORA_MAX_RANK) {
        set_err(err, errlen, "rank %d is outside 1..%d", p->rank, SHOAL_LORA_MAX_RANK);
        return SHOAL_ERR_ARG;
    }
    for (int q = 0; q < SHOAL_PROJ__COUNT; q++) {
        int in, out;
        shoal_proj_dims(hp, q, &in, &out);
        if ((p->targets & (1u << q)) && (p->rank > in || p->rank > out)) {
            set_err(err, errlen, "rank %d is larger than projection %s (%d -> %d) allows",
                    p->rank, shoal_proj_short(q), in, out);
            return SHOAL_ERR_ARG;
        }
    }
    const shoal_adamw_params *o = &p->opt;
    if (!isfinite(p->alpha) || !(isfinite(o->lr) && o->lr >= 0) || !(o->beta1 >= 0 && o->beta1 < 1) ||
        !(o->beta2 >= 0 && o->beta2 < 1) || !(isfinite(o->eps) && o->eps >= 0) ||
        !(isfinite(o->weight_decay) && o->weight_decay >= 0)) {
        set_err(err, errlen, "alpha or an optimizer parameter is out of range");
        return SHOAL_ERR_ARG;
    }
    if (p->max_tokens < 1 || p->max_tokens > (1 << 20) || p->max_saved < 1 ||
        p->max_saved > 64 || p->threads < 1 || p->threads > 1024) {
        set_err(err, errlen, "bad sizes (tokens %d, saved %d, threads %d)", p->max_tokens,
                p->max_saved, p->threads);
        return SHOAL_ERR_ARG;
    }
    return 0;
}

size_t shoal_train_state_len(const shoal_hparams *hp, int b0, int b1, unsigned targets,
                             int rank)
{
    if (!hp || b0 < 0 || b1 < b0 || b1 > hp->n_layer || rank < 1)
        return 0;
    size_t per_block = 0;
    for (int q = 0; q < SHOAL_PROJ__COUNT; q++)
        if (targets & (1u << q)) {
            int in, out;
            shoal_proj_dims(hp, q, &in, &out);
            per_block += 3 * (size_t)rank * ((size_t)in + (size_t)out);
        }
    return per_block * (size_t)(b1 - b0);
}

uint64_t shoal_train_span_bytes(const shoal_hparams *hp, int b0, int b1,
                                const shoal_train_span_params *p)
{
    const uint64_t f = sizeof(float);
    uint64_t params = shoal_train_state_len(hp, b0, b1, p->targets, p->rank) / 3;
    uint64_t T = (uint64_t)p->max_tokens, dim = (uint64_t)hp->dim, ffn = (uint64_t)hp->ffn;
    uint64_t qdim = (uint64_t)hp->n_head * hp->head_dim;
    uint64_t kvdim = (uint64_t)hp->n_head_kv * hp->head_dim;
    uint64_t wide = dim > ffn ? dim : ffn;
    wide = wide > qdim ? wide : qdim;
    uint64_t tile = wide * wide < ((uint64_t)1 << 21) ? wide * wide : (uint64_t)1 << 21;
    uint64_t scratch = T * (6 * dim + 4 * qdim + 4 * kvdim + 6 * ffn + wide +
                            8 * (uint64_t)p->rank + 2 * (uint64_t)hp->n_head +
                            (uint64_t)hp->rope_dim + (uint64_t)p->threads) +
                       (tile > wide ? tile : wide) + T * wide; /* + quantized activations */
    uint64_t saved = (uint64_t)p->max_saved * (uint64_t)(b1 - b0) * T * dim;
    return f * (6 * params + scratch + saved);
}

void shoal_train_span_destroy(shoal_train_span **sp)
{
    if (!sp || !*sp)
        return;
    shoal_train_span *s = *sp;
    for (int i = 0; s->saved && i < s->p.max_saved; i++)
        free(s->saved[i].x);
    free(s->saved);
    free(s->tens);
    free(s->views);
    shoal_train_destroy(&s->tr);
    shoal_adamw_destroy(&s->opt);
    shoal_adapter_destroy(&s->ad);
    free(s);
    *sp = NULL;
}

int shoal_train_span_new(const shoal_train_w *w, int b0, int b1,
                         const shoal_train_span_params *p, shoal_train_span **out)
{
    *out = NULL;
    const shoal_hparams *hp = w ? shoal_train_w_hparams(w) : NULL;
    if (!hp || !p || b0 < 0 || b1 <= b0 || b1 > hp->n_layer ||
        shoal_train_span_params_check(hp, p, NULL, 0))
        return SHOAL_ERR_ARG;
    for (int l = b0; l < b1; l++)
        if (!shoal_train_w_block(w, l))
            return SHOAL_ERR_ARG;
    shoal_train_span *s = calloc(1, sizeof *s);
    if (!s)
        return SHOAL_ERR_NOMEM;
    s->p = *p;
    s->hp = *hp;
    s->w = w;
    s->b0 = b0;
    s->b1 = b1;
    int rc = shoal_adapter_new(hp, b0, b1, p->targets, p->rank, p->alpha, &s->ad);
    if (rc)
        goto err;
    shoal_adapter_init(s->ad, p->seed);
    if ((rc = shoal_adamw_new(&p->opt, &s->opt)) ||
        (rc = shoal_adapter_add_to_optimizer(s->ad, s->opt)))
        goto err;
    rc = SHOAL_ERR_NOMEM;
    const size_t nblk = (size_t)(b1 - b0);
    s->views = calloc(nblk * SHOAL_PROJ__COUNT, sizeof *s->views);
    s->ntens = shoal_adamw_count(s->opt);
    s->tens = calloc(s->ntens + 1, sizeof *s->tens);
    s->saved = calloc((size_t)p->max_saved, sizeof *s->saved);
    s->tr = shoal_train_new(hp, p->max_tokens, p->rank, 0, p->threads);
    if (!s->views || !s->tens || !s->saved || !s->tr)
        goto err;
    for (int l = b0; l < b1; l++)
        shoal_adapter_views(s->ad, l, s->views + (size_t)(l - b0) * SHOAL_PROJ__COUNT);
    /* optimizer tensor 2i is pair i's A, 2i + 1 its B (adapter.h) */
    size_t i = 0;
    for (int l = b0; l < b1; l++)
        for (int q = 0; q < SHOAL_PROJ__COUNT; q++) {
            shoal_lora *x = shoal_adapter_lora(s->ad, l, q);
            if (!x)
                continue;
            float *vals[2] = {shoal_lora_a(x), shoal_lora_b(x)};
            for (int h = 0; h < 2; h++, i++)
                s->tens[i] = (span_tensor){vals[h], shoal_adamw_m(s->opt, i),
                                           shoal_adamw_v(s->opt, i), shoal_adamw_len(s->opt, i)};
        }
    if (i != s->ntens) {
        rc = SHOAL_ERR_INTERNAL;
        goto err;
    }
    for (i = 0; i < s->ntens; i++)
        s->state_len += 3 * s->tens[i].n;
    const size_t per = nblk * (size_t)p->max_tokens * (size_t)hp->dim;
    for (int k = 0; k < p->max_saved; k++)
        if (!(s->saved[k].x = malloc(per * sizeof(float))))
            goto err;
    *out = s;
    return 0;
err:
    shoal_train_span_destroy(&s);
    return rc;
}

int shoal_train_span_begin(const shoal_train_span *s) { return s->b0; }
int shoal_train_span_end(const shoal_train_span *s) { return s->b1; }
const shoal_train_span_params *shoal_train_span_params_of(const shoal_train_span *s)
{
    return &s->p;
}
int64_t shoal_train_span_t(const shoal_train_span *s) { return shoal_adamw_t(s->opt); }
void shoal_train_span_set_t(shoal_train_span *s, int64_t t) { shoal_adamw_set_t(s->opt, t); }
shoal_adapter *shoal_train_span_adapter(const shoal_train_span *s) { return s->ad; }
size_t shoal_train_span_state_len(const shoal_train_span *s) { return s->state_len; }

static int shape_ok(const shoal_train_span *s, int n_seq, int T)
{
    return n_seq >= 1 && T >= 1 && T <= s->p.max_tokens && n_seq <= s->p.max_tokens / T;
}

static const shoal_lora_view *block_views(const shoal_train_span *s, int l)
{
    return s->views + (size_t)(l - s->b0) * SHOAL_PROJ__COUNT;
}

int shoal_train_span_forward(shoal_train_span *s, uint64_t key, int n_seq, int T, float *x)
{
    if (!shape_ok(s, n_seq, T) || !x)
        return SHOAL_ERR_ARG;
    saved_mb *slot = NULL;
    if (key) {
        for (int k = 0; k < s->p.max_saved && !slot; k++)
            if (s->saved[k].key == key)
                slot = &s->saved[k];
        for (int k = 0; k < s->p.max_saved && !slot; k++)
            if (s->saved[k].key == 0)
                slot = &s->saved[k];
        if (!slot)
            return SHOAL_ERR_BUSY;
        slot->key = 0; /* held only once the forward has run */
    }
    const size_t dim = (size_t)s->hp.dim, seq = (size_t)T * dim;
    const size_t per_block = (size_t)s->p.max_tokens * dim;
    for (int l = s->b0; l < s->b1; l++) {
        const shoal_block_w *bw = shoal_train_w_block(s->w, l);
        if (slot)
            memcpy(slot->x + (size_t)(l - s->b0) * per_block, x, (size_t)n_seq * seq * sizeof *x);
        for (int i = 0; i < n_seq; i++) {
            int rc = shoal_train_block_forward(s->tr, bw, block_views(s, l), T, x + i * seq,
                                               x + i * seq);
            if (rc)
                return rc;
        }
    }
    if (slot) {
        slot->key = key;
        slot->n_seq = n_seq;
        slot->T = T;
    }
    return 0;
}

int shoal_train_span_backward(shoal_train_span *s, uint64_t key, int n_seq, int T, float *g)
{
    saved_mb *slot = NULL;
    for (int k = 0; key && k < s->p.max_saved && !slot; k++)
        if (s->saved[k].key == key)
            slot = &s->saved[k];
    if (!slot)
        return SHOAL_ERR_NOTFOUND;
    if (slot->n_seq != n_seq || slot->T != T || !g)
        return SHOAL_ERR_ARG;
    const size_t dim = (size_t)s->hp.dim, seq = (size_t)T * dim;
    const size_t per_block = (size_t)s->p.max_tokens * dim;
    int rc = 0;
    for (int l = s->b1 - 1; l >= s->b0 && !rc; l--) {
        const shoal_block_w *bw = shoal_train_w_block(s->w, l);
        const float *xin = slot->x + (size_t)(l - s->b0) * per_block;
        for (int i = 0; i < n_seq && !rc; i++)
            rc = shoal_train_block_backward(s->tr, bw, block_views(s, l), T, xin + i * seq,
                                            g + i * seq, g + i * seq);
    }
    slot->key = 0;
    return rc;
}

int shoal_train_span_step(shoal_train_span *s, float lr)
{
    if (lr >= 0 && isfinite(lr))
        shoal_adamw_set_lr(s->opt, lr);
    shoal_adamw_step(s->opt);
    shoal_adapter_zero_grad(s->ad);
    return 0;
}

void shoal_train_span_reset(shoal_train_span *s)
{
    for (int k = 0; k < s->p.max_saved; k++)
        s->saved[k].key = 0;
    shoal_adapter_zero_grad(s->ad);
}

/* Calls fn on every piece of state[off, off + n): part (0 values, 1 m, 2 v)
 * of tensor t, elements [e, e + len), at position pos of the range. */
typedef int (*state_fn)(void *ctx, int part, float *dst, size_t len, size_t pos);

static int state_walk(const shoal_train_span *s, size_t off, size_t n, state_fn fn, void *ctx)
{
    if (off > s->state_len || n > s->state_len - off)
        return SHOAL_ERR_RANGE;
    size_t base = 0, end = off + n;
    for (size_t t = 0; t < s->ntens && base < end; t++) {
        float *parts[3] = {s->tens[t].val, s->tens[t].m, s->tens[t].v};
        for (int part = 0; part < 3; part++, base += s->tens[t].n) {
            size_t lo = off > base ? off : base;
            size_t hi = end < base + s->tens[t].n ? end : base + s->tens[t].n;
            if (lo >= hi)
                continue;
            int rc = fn(ctx, part, parts[part] + (lo - base), hi - lo, lo - off);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int get_fn(void *ctx, int part, float *src, size_t len, size_t pos)
{
    (void)part;
    memcpy((float *)ctx + pos, src, len * sizeof(float));
    return 0;
}

static int check_fn(void *ctx, int part, float *dst, size_t len, size_t pos)
{
    (void)dst;
    const float *in = (const float *)ctx + pos;
    for (size_t i = 0; i < len; i++)
        if (!isfinite(in[i]) || (part == 2 && in[i] < 0))
            return SHOAL_ERR_RANGE;
    return 0;
}

static int set_fn(void *ctx, int part, float *dst, size_t len, size_t pos)
{
    (void)part;
    memcpy(dst, (const float *)ctx + pos, len * sizeof(float));
    return 0;
}

int shoal_train_span_state_get(const shoal_train_span *s, size_t off, size_t n, float *out)
{
    return state_walk(s, off, n, get_fn, out);
}

int shoal_train_span_state_set(shoal_train_span *s, size_t off, size_t n, const float *in)
{
    int rc = state_walk(s, off, n, check_fn, (void *)in);
    if (rc)
        return rc;
    state_walk(s, off, n, set_fn, (void *)in);
    shoal_train_span_reset(s);
    return 0;
}

int shoal_train_state_to_adapter(shoal_adapter *dst, int b0, int b1, const float *state,
                                 size_t n)
{
    if (!dst || b0 < shoal_adapter_block_begin(dst) || b1 > shoal_adapter_block_end(dst) ||
        b1 < b0)
        return SHOAL_ERR_ARG;
    size_t need = 0;
    for (int l = b0; l < b1; l++)
        for (int q = 0; q < SHOAL_PROJ__COUNT; q++) {
            const shoal_lora *x = shoal_adapter_lora(dst, l, q);
            if (x)
                need += 3 * (size_t)shoal_lora_rank(x) *
                        ((size_t)shoal_lora_in(x) + (size_t)shoal_lora_out(x));
        }
    if (need != n || (n && !state))
        return SHOAL_ERR_ARG;
    size_t off = 0;
    for (int l = b0; l < b1; l++)
        for (int q = 0; q < SHOAL_PROJ__COUNT; q++) {
            shoal_lora *x = shoal_adapter_lora(dst, l, q);
            if (!x)
                continue;
            size_t r = (size_t)shoal_lora_rank(x);
            size_t na = r * (size_t)shoal_lora_in(x), nb = r * (size_t)shoal_lora_out(x);
            memcpy(shoal_lora_a(x), state + off, na * sizeof(float));
            off += 3 * na;
            memcpy(shoal_lora_b(x), state + off, nb * sizeof(float));
            off += 3 * nb;
        }
    return 0;
}
