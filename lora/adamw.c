/*
 * AdamW over registered tensors (see adamw.h). The bias corrections are
 * computed in double once per step; the per-element update is f32 in a
 * fixed order, so a step is deterministic.
 */
#include "lora/adamw.h"

#include <math.h>
#include <stdlib.h>

#include "kernels/err.h"

#define ADAMW_MAX_TENSORS (1u << 20)

typedef struct adamw_slot {
    float *param;
    const float *grad;
    float *m, *v;  /* one allocation: m then v */
    size_t n;
} adamw_slot;

struct shoal_adamw {
    shoal_adamw_params p;
    int64_t t;
    adamw_slot *slots;
    size_t count, cap;
};

shoal_adamw_params shoal_adamw_params_default(void)
{
    shoal_adamw_params p = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                            .weight_decay = 0.0f};
    return p;
}

void shoal_adamw_update(const shoal_adamw_params *p, int64_t t, float *param, const float *grad,
                        float *m, float *v, size_t n)
{
    const float b1 = p->beta1, b2 = p->beta2;
    const float c1 = (float)(1.0 / (1.0 - pow((double)b1, (double)t)));
    const float c2 = (float)(1.0 / (1.0 - pow((double)b2, (double)t)));
    const float decay = 1.0f - p->lr * p->weight_decay;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        float mhat = m[i] * c1, vhat = v[i] * c2;
        param[i] = param[i] * decay - p->lr * mhat / (sqrtf(vhat) + p->eps);
    }
}

static int params_ok(const shoal_adamw_params *p)
{
    return isfinite(p->lr) && p->lr >= 0 && p->beta1 >= 0 && p->beta1 < 1 && p->beta2 >= 0 &&
           p->beta2 < 1 && isfinite(p->eps) && p->eps >= 0 && isfinite(p->weight_decay) &&
           p->weight_decay >= 0;
}

int shoal_adamw_new(const shoal_adamw_params *p, shoal_adamw **out)
{
    *out = NULL;
    if (!p || !params_ok(p))
        return SHOAL_ERR_ARG;
    shoal_adamw *o = calloc(1, sizeof *o);
    if (!o)
        return SHOAL_ERR_NOMEM;
    o->p = *p;
    *out = o;
    return 0;
}

void shoal_adamw_destroy(shoal_adamw **op)
{
    if (!op || !*op)
        return;
    shoal_adamw *o = *op;
    for (size_t i = 0; i < o->count; i++)
        free(o->slots[i].m);
    free(o->slots);
    free(o);
    *op = NULL;
}

int shoal_adamw_add(shoal_adamw *o, float *param, const float *grad, size_t n, size_t *index)
{
    if (!param || !grad || n == 0 || n > SIZE_MAX / (2 * sizeof(float)))
        return SHOAL_ERR_ARG;
    if (o->count == o->cap) {
        if (o->cap >= ADAMW_MAX_TENSORS)
            return SHOAL_ERR_RANGE;
        size_t cap = o->cap ? 2 * o->cap : 16;
        adamw_slot *s = realloc(o->slots, cap * sizeof *s);
        if (!s)
            return SHOAL_ERR_NOMEM;
        o->slots = s;
        o->cap = cap;
    }
    float *mv = calloc(2 * n, sizeof(float));
    if (!mv)
        return SHOAL_ERR_NOMEM;
    o->slots[o->count] = (adamw_slot){.param = param, .grad = grad, .m = mv, .v = mv + n, .n = n};
    if (index)
        *index = o->count;
    o->count++;
    return 0;
}

void shoal_adamw_step(shoal_adamw *o)
{
    o->t++;
    for (size_t i = 0; i < o->count; i++) {
        adamw_slot *s = &o->slots[i];
        shoal_adamw_update(&o->p, o->t, s->param, s->grad, s->m, s->v, s->n);
    }
}

void shoal_adamw_set_lr(shoal_adamw *o, float lr) { o->p.lr = lr; }
const shoal_adamw_params *shoal_adamw_params_of(const shoal_adamw *o) { return &o->p; }
int64_t shoal_adamw_t(const shoal_adamw *o) { return o->t; }
void shoal_adamw_set_t(shoal_adamw *o, int64_t t) { o->t = t < 0 ? 0 : t; }
size_t shoal_adamw_count(const shoal_adamw *o) { return o->count; }

size_t shoal_adamw_len(const shoal_adamw *o, size_t i)
{
    return i < o->count ? o->slots[i].n : 0;
}

float *shoal_adamw_m(shoal_adamw *o, size_t i) { return i < o->count ? o->slots[i].m : NULL; }
float *shoal_adamw_v(shoal_adamw *o, size_t i) { return i < o->count ? o->slots[i].v : NULL; }
