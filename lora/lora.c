/*
 * LoRA pair storage, initialisation and the wrappers over the kernels'
 * forward and backward (see lora.h). The four tensors are one allocation.
 */
#include "lora/lora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"

struct shoal_lora {
    int in, out, rank;
    float alpha, scale;
    float *a, *b, *da, *db;  /* views into mem */
    float *mem;
};

int shoal_lora_new(int in, int out, int rank, float alpha, shoal_lora **lp)
{
    *lp = NULL;
    if (in < 1 || out < 1 || rank < 1 || rank > SHOAL_LORA_MAX_RANK || rank > in ||
        rank > out || !isfinite(alpha))
        return SHOAL_ERR_ARG;
    size_t na = (size_t)rank * (size_t)in, nb = (size_t)out * (size_t)rank;
    shoal_lora *l = calloc(1, sizeof *l);
    float *mem = calloc(2 * (na + nb), sizeof(float));
    if (!l || !mem) {
        free(l);
        free(mem);
        return SHOAL_ERR_NOMEM;
    }
    l->in = in;
    l->out = out;
    l->rank = rank;
    l->alpha = alpha;
    l->scale = alpha != 0.0f ? alpha / (float)rank : 1.0f;
    l->mem = mem;
    l->a = mem;
    l->b = l->a + na;
    l->da = l->b + nb;
    l->db = l->da + na;
    *lp = l;
    return 0;
}

void shoal_lora_destroy(shoal_lora **lp)
{
    if (!lp || !*lp)
        return;
    free((*lp)->mem);
    free(*lp);
    *lp = NULL;
}

int shoal_lora_in(const shoal_lora *l) { return l->in; }
int shoal_lora_out(const shoal_lora *l) { return l->out; }
int shoal_lora_rank(const shoal_lora *l) { return l->rank; }
float shoal_lora_alpha(const shoal_lora *l) { return l->alpha; }
float shoal_lora_scale(const shoal_lora *l) { return l->scale; }
float *shoal_lora_a(shoal_lora *l) { return l->a; }
float *shoal_lora_b(shoal_lora *l) { return l->b; }
float *shoal_lora_da(shoal_lora *l) { return l->da; }
float *shoal_lora_db(shoal_lora *l) { return l->db; }
const float *shoal_lora_a_const(const shoal_lora *l) { return l->a; }
const float *shoal_lora_b_const(const shoal_lora *l) { return l->b; }

uint64_t shoal_lora_rand_u64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double shoal_lora_rand_normal(uint64_t *state)
{
    /* uniforms in (0, 1]: 53 random bits, +1 so log never sees 0 */
    double u1 = ((double)(shoal_lora_rand_u64(state) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(shoal_lora_rand_u64(state) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t shoal_lora_seed_mix(uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t s = seed;
    uint64_t x = shoal_lora_rand_u64(&s) ^ (a * 0xd6e8feb86659fd93ull);
    x = shoal_lora_rand_u64(&x) ^ (b * 0xa0761d6478bd642full);
    return shoal_lora_rand_u64(&x);
}

void shoal_lora_init(shoal_lora *l, uint64_t seed)
{
    size_t na = (size_t)l->rank * (size_t)l->in, nb = (size_t)l->out * (size_t)l->rank;
    double std = 1.0 / sqrt((double)l->in);
    uint64_t st = seed;
    for (size_t i = 0; i < na; i++)
        l->a[i] = (float)(shoal_lora_rand_normal(&st) * std);
    memset(l->b, 0, nb * sizeof(float));
    shoal_lora_zero_grad(l);
}

void shoal_lora_zero_grad(shoal_lora *l)
{
    size_t na = (size_t)l->rank * (size_t)l->in, nb = (size_t)l->out * (size_t)l->rank;
    memset(l->da, 0, (na + nb) * sizeof(float));
}

shoal_lora_view shoal_lora_view_of(shoal_lora *l)
{
    shoal_lora_view v = {.rank = l->rank, .scale = l->scale, .a = l->a, .b = l->b,
                         .da = l->da, .db = l->db};
    return v;
}

void shoal_lora_forward(const shoal_lora *l, int T, const float *x, float *u, float *y)
{
    shoal_lora_view v = {.rank = l->rank, .scale = l->scale, .a = l->a, .b = l->b};
    shoal_op_lora_forward(&v, T, l->in, l->out, x, u, y);
}

void shoal_lora_backward(shoal_lora *l, int T, const float *x, const float *u, const float *dy,
                         float *du, float *dx)
{
    shoal_lora_view v = shoal_lora_view_of(l);
    shoal_op_lora_backward(&v, T, l->in, l->out, x, u, dy, du, dx);
}
