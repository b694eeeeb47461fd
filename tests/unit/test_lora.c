/*
 * LoRA pairs, AdamW, adapter files and the whole model's loss gradient.
 *
 *  - a pair: initialisation (B = 0, A ~ N(0, 1/in), seeded and
 *    reproducible), forward/backward wrappers, argument checks;
 *  - AdamW against a two-step example worked by hand (with and without
 *    weight decay);
 *  - adapters: save -> load round trip, the GGUF keys and tensor shapes
 *    llama.cpp expects, span loading, span-independent initialisation, and
 *    files that must be refused;
 *  - the full model on stories260K: embedding -> 5 blocks with LoRA on all
 *    seven targets of every block -> head -> mean cross-entropy over next
 *    tokens; the analytic gradient of a sample of LoRA parameters against
 *    central differences (Richardson, f32 forward), error stated as
 *    ||fd - analytic|| / ||analytic|| over the sample.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "client/tokenizer.h"
#include "kernels/backward.h"
#include "kernels/cpu.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "kernels/types.h"
#include "lora/adamw.h"
#include "lora/adapter.h"
#include "lora/lora.h"

#define MODEL SHOAL_SHARED "/models/stories260K.gguf"

static char tmpdir[] = "/tmp/shoal-test-lora-XXXXXX";

static uint64_t rng = 12345;

static float randn(void) { return (float)shoal_lora_rand_normal(&rng); }

/* ---- one pair ----------------------------------------------------------------- */

static void test_pair(void)
{
    shoal_lora *l = NULL;
    CHECK(shoal_lora_new(64, 48, 0, 8, &l) == SHOAL_ERR_ARG && !l);
    CHECK(shoal_lora_new(64, 48, 49, 8, &l) == SHOAL_ERR_ARG && !l);
    CHECK(shoal_lora_new(0, 48, 4, 8, &l) == SHOAL_ERR_ARG && !l);
    CHECK(shoal_lora_new(64, 48, 4, NAN, &l) == SHOAL_ERR_ARG && !l);
    CHECK(shoal_lora_new(64, 48, 8, 16, &l) == 0 && l);
    CHECK(shoal_lora_scale(l) == 2.0f);
    shoal_lora_init(l, 7);
    const float *a = shoal_lora_a(l), *b = shoal_lora_b(l);
    double s = 0, ss = 0;
    for (int i = 0; i < 8 * 64; i++) {
        s += a[i];
        ss += (double)a[i] * a[i];
    }
    double mean = s / 512, std = sqrt(ss / 512 - mean * mean);
    printf("  init A: mean %.4f std %.4f (expected 0, %.4f)\n", mean, std, 1 / sqrt(64.0));
    CHECK(fabs(mean) < 0.02 && fabs(std * 8 - 1) < 0.1);
    int bzero = 1;
    for (int i = 0; i < 48 * 8; i++)
        bzero &= b[i] == 0.0f;
    CHECK(bzero);
    /* reproducible from the seed, different for another seed */
    shoal_lora *l2 = NULL;
    CHECK(shoal_lora_new(64, 48, 8, 16, &l2) == 0);
    shoal_lora_init(l2, 7);
    CHECK(memcmp(shoal_lora_a(l2), a, sizeof(float) * 512) == 0);
    shoal_lora_init(l2, 8);
    CHECK(memcmp(shoal_lora_a(l2), a, sizeof(float) * 512) != 0);
    /* a fresh pair changes nothing; its A gets no gradient, its B does */
    const int T = 3;
    float x[3 * 64], y[3 * 48], y0[3 * 48], dy[3 * 48], u[3 * 8], du[3 * 8], dx[3 * 64] = {0};
    for (int i = 0; i < 3 * 64; i++)
        x[i] = randn();
    for (int i = 0; i < 3 * 48; i++) {
        y0[i] = y[i] = randn();
        dy[i] = randn();
    }
    shoal_lora_forward(l, T, x, u, y);
    CHECK(memcmp(y, y0, sizeof y) == 0);
    shoal_lora_backward(l, T, x, u, dy, du, dx);
    double na = 0, nb = 0, nx = 0;
    for (int i = 0; i < 8 * 64; i++)
        na += fabs(shoal_lora_da(l)[i]);
    for (int i = 0; i < 48 * 8; i++)
        nb += fabs(shoal_lora_db(l)[i]);
    for (int i = 0; i < 3 * 64; i++)
        nx += fabs(dx[i]);
    CHECK(na == 0 && nb > 0 && nx == 0);
    /* dB = scale * dy^T u, checked in double */
    double worst = 0;
    for (int o = 0; o < 48; o++)
        for (int r = 0; r < 8; r++) {
            double e = 0;
            for (int t = 0; t < T; t++)
                e += 2.0 * dy[t * 48 + o] * u[t * 8 + r];
            worst = fmax(worst, fabs(e - shoal_lora_db(l)[o * 8 + r]));
        }
    CHECK_MSG(worst < 1e-5, "dB off by %g", worst);
    shoal_lora_zero_grad(l);
    CHECK(shoal_lora_db(l)[0] == 0.0f);
    shoal_lora_destroy(&l);
    shoal_lora_destroy(&l2);
    CHECK(l == NULL);
    shoal_lora_destroy(&l); /* NULL is fine */
}

/* ---- AdamW ---------------------------------------------------------------------- */

/* lr 0.1, betas 0.9/0.999, eps 1e-8; p0 = (1, -2, 0.5), g1 = (0.1, -0.2, 0),
 * g2 = (0.3, 0.1, -0.5).
 * Step 1: m = 0.1 g, v = 0.001 g^2, so m^ = g, v^ = g^2 and each element
 *   moves by lr * sign(g) (0 where g = 0): p1 = (0.9, -1.9, 0.5).
 * Step 2, element 0: m = 0.9*0.01 + 0.1*0.3 = 0.039, v = 0.999*1e-5 +
 *   0.001*0.09 = 9.999e-5; m^ = 0.039/0.19 = 0.2052632, v^ = 9.999e-5/0.001999
 *   = 0.0500200, step = 0.1 * 0.2052632 / 0.2236515 = 0.0917781,
 *   p2 = 0.8082219. Likewise p2 = (0.8082219, -1.8733663, 0.5744137).
 * With weight decay 0.01 each step first scales p by 1 - 0.1*0.01:
 *   p1 = (0.899, -1.898, 0.4995), p2 = (0.8063229, -1.8694683, 0.5734142). */
static void test_adamw(void)
{
    const double expect[2][2][3] = {
        {{0.9, -1.9, 0.5}, {0.808221902, -1.873366303, 0.574413680}},
        {{0.899, -1.898, 0.4995}, {0.806322902, -1.869468303, 0.573414180}},
    };
    for (int wd = 0; wd < 2; wd++) {
        shoal_adamw_params p = shoal_adamw_params_default();
        CHECK(p.lr == 1e-3f && p.beta1 == 0.9f && p.beta2 == 0.999f && p.eps == 1e-8f &&
              p.weight_decay == 0.0f);
        p.lr = 0.1f;
        p.weight_decay = wd ? 0.01f : 0.0f;
        shoal_adamw *o = NULL;
        CHECK(shoal_adamw_new(&p, &o) == 0);
        float param[3] = {1.0f, -2.0f, 0.5f}, grad[3] = {0.1f, -0.2f, 0.0f};
        size_t idx = 99;
        CHECK(shoal_adamw_add(o, param, grad, 3, &idx) == 0 && idx == 0);
        double worst = 0;
        shoal_adamw_step(o);
        for (int i = 0; i < 3; i++)
            worst = fmax(worst, fabs(param[i] - expect[wd][0][i]));
        grad[0] = 0.3f;
        grad[1] = 0.1f;
        grad[2] = -0.5f;
        shoal_adamw_step(o);
        for (int i = 0; i < 3; i++)
            worst = fmax(worst, fabs(param[i] - expect[wd][1][i]));
        printf("  AdamW two steps (weight decay %.2f): max abs err %.2e\n", p.weight_decay,
               worst);
        CHECK(worst < 1e-6);
        CHECK(shoal_adamw_t(o) == 2 && shoal_adamw_count(o) == 1 && shoal_adamw_len(o, 0) == 3);
        CHECK(shoal_adamw_m(o, 1) == NULL && shoal_adamw_v(o, 0) != NULL);
        CHECK(fabsf(shoal_adamw_m(o, 0)[0] - 0.039f) < 1e-7f);
        shoal_adamw_destroy(&o);
        CHECK(o == NULL);
    }
    /* the state moves to another optimizer and the run continues identically */
    shoal_adamw_params p = shoal_adamw_params_default();
    shoal_adamw *o1 = NULL, *o2 = NULL;
    float p1[4] = {1, 2, 3, 4}, g[4] = {0.5f, -1, 0.25f, 2};
    CHECK(shoal_adamw_new(&p, &o1) == 0 && shoal_adamw_add(o1, p1, g, 4, NULL) == 0);
    shoal_adamw_step(o1);
    shoal_adamw_step(o1);
    float p2[4];
    memcpy(p2, p1, sizeof p2);
    CHECK(shoal_adamw_new(&p, &o2) == 0 && shoal_adamw_add(o2, p2, g, 4, NULL) == 0);
    memcpy(shoal_adamw_m(o2, 0), shoal_adamw_m(o1, 0), sizeof(float) * 4);
    memcpy(shoal_adamw_v(o2, 0), shoal_adamw_v(o1, 0), sizeof(float) * 4);
    shoal_adamw_set_t(o2, shoal_adamw_t(o1));
    shoal_adamw_step(o1);
    shoal_adamw_step(o2);
    CHECK(memcmp(p1, p2, sizeof p1) == 0);
    shoal_adamw_destroy(&o1);
    shoal_adamw_destroy(&o2);
    shoal_adamw_params bad = shoal_adamw_params_default();
    bad.beta2 = 1.0f;
    CHECK(shoal_adamw_new(&bad, &o1) == SHOAL_ERR_ARG && o1 == NULL);
}

/* ---- adapter files ---------------------------------------------------------------- */

static void randomize(shoal_adapter *a, float bscale)
{
    for (int l = shoal_adapter_block_begin(a); l < shoal_adapter_block_end(a); l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            shoal_lora *x = shoal_adapter_lora(a, l, p);
            if (!x)
                continue;
            size_t nb = (size_t)shoal_lora_rank(x) * shoal_lora_out(x);
            for (size_t i = 0; i < nb; i++)
                shoal_lora_b(x)[i] = randn() * bscale;
        }
}

static int same_pairs(const shoal_adapter *a, const shoal_adapter *b, int l0, int l1)
{
    for (int l = l0; l < l1; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            shoal_lora *x = shoal_adapter_lora(a, l, p), *y = shoal_adapter_lora(b, l, p);
            if (!x != !y)
                return 0;
            if (!x)
                continue;
            int r = shoal_lora_rank(x);
            if (r != shoal_lora_rank(y) || shoal_lora_in(x) != shoal_lora_in(y) ||
                shoal_lora_out(x) != shoal_lora_out(y) ||
                memcmp(shoal_lora_a(x), shoal_lora_a(y),
                       sizeof(float) * r * shoal_lora_in(x)) != 0 ||
                memcmp(shoal_lora_b(x), shoal_lora_b(y),
                       sizeof(float) * r * shoal_lora_out(x)) != 0)
                return 0;
        }
    return 1;
}

/* Writes an adapter-like file with the given tweak; returns the load result. */
enum { BAD_TYPE, BAD_ADAPTER_TYPE, BAD_ARCH, HALF_PAIR, BAD_SHAPE, UNKNOWN_TENSOR, NAN_VALUE,
       LAYER_OUT, NORM_OK, LEADING_ZERO };

static int load_tweaked(const shoal_hparams *hp, int tweak, char *err, size_t errlen)
{
    char path[256];
    snprintf(path, sizeof path, "%s/bad.gguf", tmpdir);
    shoal_gguf_writer *w = shoal_gguf_writer_new();
    shoal_gguf_writer_set_str(w, "general.architecture", tweak == BAD_ARCH ? "gpt2" : "llama");
    shoal_gguf_writer_set_str(w, "general.type", tweak == BAD_TYPE ? "model" : "adapter");
    shoal_gguf_writer_set_str(w, "adapter.type", tweak == BAD_ADAPTER_TYPE ? "ia3" : "lora");
    shoal_gguf_writer_set_f32(w, "adapter.lora.alpha", 4.0f);
    int r = 2, in = hp->dim, out = hp->n_head * hp->head_dim;
    float *a = calloc((size_t)r * in, sizeof(float)), *b = calloc((size_t)r * out, sizeof(float));
    if (tweak == NAN_VALUE)
        b[3] = NAN;
    int64_t ne_a[2] = {in, r}, ne_b[2] = {r, tweak == BAD_SHAPE ? out - 1 : out};
    int layer = tweak == LAYER_OUT ? hp->n_layer : 0;
    char na[96], nb[96];
    snprintf(na, sizeof na, tweak == LEADING_ZERO ? "blk.0%d.attn_q.weight.lora_a"
                                                  : "blk.%d.attn_q.weight.lora_a", layer);
    snprintf(nb, sizeof nb, "blk.%d.attn_q.weight.lora_b", layer);
    shoal_gguf_writer_add_tensor(w, na, SHOAL_TYPE_F32, 2, ne_a, a);
    if (tweak != HALF_PAIR)
        shoal_gguf_writer_add_tensor(w, nb, SHOAL_TYPE_F32, 2, ne_b, b);
    if (tweak == UNKNOWN_TENSOR) {
        int64_t ne[2] = {hp->dim, r};
        shoal_gguf_writer_add_tensor(w, "token_embd.weight.lora_a", SHOAL_TYPE_F32, 2, ne, a);
    }
    if (tweak == NORM_OK) {
        int64_t ne[1] = {hp->dim};
        shoal_gguf_writer_add_tensor(w, "blk.0.attn_norm.weight", SHOAL_TYPE_F32, 1, ne, a);
    }
    int rc = shoal_gguf_writer_write(w, path, err, errlen);
    shoal_gguf_writer_destroy(&w);
    free(a);
    free(b);
    if (rc)
        return -1;
    shoal_adapter *ad = NULL;
    rc = shoal_adapter_load(path, hp, 0, hp->n_layer, &ad, err, errlen);
    CHECK(rc ? ad == NULL : ad != NULL);
    shoal_adapter_destroy(&ad);
    unlink(path);
    return rc;
}

static void test_adapter_files(const shoal_hparams *hp)
{
    const int L = hp->n_layer;
    shoal_adapter *a = NULL;
    CHECK(shoal_adapter_new(hp, 0, L, SHOAL_PROJ_ALL, 4, 8.0f, &a) == 0);
    shoal_adapter_init(a, 42);
    randomize(a, 0.05f);
    CHECK(shoal_adapter_n_pairs(a) == 7 * L);
    CHECK(shoal_adapter_max_rank(a) == 4 && shoal_adapter_targets(a) == SHOAL_PROJ_ALL);
    size_t per_block = 0;
    for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
        int in, out;
        shoal_proj_dims(hp, p, &in, &out);
        per_block += 4 * (size_t)(in + out);
    }
    CHECK(shoal_adapter_n_params(a) == per_block * L);
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/adapter.gguf", tmpdir);
    CHECK(shoal_adapter_save(a, path, err, sizeof err) == 0);

    /* the keys and shapes llama.cpp's llama-adapter.cpp checks */
    shoal_gguf *g = NULL;
    CHECK(shoal_gguf_open(path, &g, err, sizeof err) == 0);
    if (g) {
        const char *s = NULL;
        float alpha = 0;
        CHECK(shoal_gguf_get_str(g, "general.type", &s) == 0 && strcmp(s, "adapter") == 0);
        CHECK(shoal_gguf_get_str(g, "adapter.type", &s) == 0 && strcmp(s, "lora") == 0);
        CHECK(shoal_gguf_get_str(g, "general.architecture", &s) == 0 && strcmp(s, "llama") == 0);
        CHECK(shoal_gguf_get_f32(g, "adapter.lora.alpha", &alpha) == 0 && alpha == 8.0f);
        CHECK(shoal_gguf_n_tensors(g) == 2 * 7 * L);
        int shapes_ok = 1;
        for (int l = 0; l < L; l++)
            for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
                int in, out;
                shoal_proj_dims(hp, p, &in, &out);
                char name[96];
                snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", l, shoal_proj_name(p));
                int64_t i = shoal_gguf_find_tensor(g, name);
                const shoal_gguf_tensor *t = i >= 0 ? shoal_gguf_tensor_at(g, i) : NULL;
                shapes_ok &= t && t->type == SHOAL_TYPE_F32 && t->n_dims == 2 &&
                             t->ne[0] == in && t->ne[1] == 4;
                snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", l, shoal_proj_name(p));
                i = shoal_gguf_find_tensor(g, name);
                t = i >= 0 ? shoal_gguf_tensor_at(g, i) : NULL;
                shapes_ok &= t && t->type == SHOAL_TYPE_F32 && t->n_dims == 2 && t->ne[0] == 4 &&
                             t->ne[1] == out;
                /* lora_a holds A (rank rows of in): row 1 starts at element `in` */
                if (t && p == SHOAL_PROJ_V && l == 1) {
                    const float *b = shoal_gguf_tensor_data(g, i);
                    shapes_ok &= b[4 * 3 + 2] == shoal_lora_b(shoal_adapter_lora(a, 1, p))[4 * 3 + 2];
                }
            }
        CHECK(shapes_ok);
        shoal_gguf_close(&g);
    }

    /* round trip, whole and by span */
    shoal_adapter *b = NULL;
    CHECK(shoal_adapter_load(path, hp, 0, L, &b, err, sizeof err) == 0);
    CHECK(b && same_pairs(a, b, 0, L));
    CHECK(b && shoal_adapter_alpha(b) == 8.0f);
    shoal_adapter_destroy(&b);
    CHECK(shoal_adapter_load(path, hp, 1, 3, &b, err, sizeof err) == 0);
    CHECK(b && shoal_adapter_block_begin(b) == 1 && shoal_adapter_block_end(b) == 3 &&
          shoal_adapter_n_pairs(b) == 14 && same_pairs(a, b, 1, 3));
    CHECK(b && shoal_adapter_lora(b, 0, 0) == NULL && shoal_adapter_lora(b, 3, 0) == NULL);
    /* copy back into a whole-model adapter */
    shoal_adapter *c = NULL;
    CHECK(shoal_adapter_new(hp, 0, L, SHOAL_PROJ_ALL, 4, 8.0f, &c) == 0);
    CHECK(shoal_adapter_copy(c, b) == 0 && same_pairs(a, c, 1, 3) && !same_pairs(a, c, 0, 1));
    shoal_adapter_destroy(&b);
    shoal_adapter_destroy(&c);

    /* a span initialised alone equals that span of the whole adapter */
    shoal_adapter *whole = NULL, *span = NULL;
    CHECK(shoal_adapter_new(hp, 0, L, SHOAL_PROJ_ALL, 4, 8.0f, &whole) == 0);
    CHECK(shoal_adapter_new(hp, 2, 4, SHOAL_PROJ_ALL, 4, 8.0f, &span) == 0);
    shoal_adapter_init(whole, 99);
    shoal_adapter_init(span, 99);
    CHECK(same_pairs(whole, span, 2, 4));
    shoal_adapter_destroy(&whole);
    shoal_adapter_destroy(&span);

    /* targets subset */
    unsigned mask = 0;
    CHECK(shoal_proj_parse("q,v,down", &mask) == 0 &&
          mask == ((1u << SHOAL_PROJ_Q) | (1u << SHOAL_PROJ_V) | (1u << SHOAL_PROJ_DOWN)));
    CHECK(shoal_proj_parse("all", &mask) == 0 && mask == SHOAL_PROJ_ALL);
    CHECK(shoal_proj_parse("q,x", &mask) == SHOAL_ERR_ARG);
    CHECK(shoal_proj_parse("", &mask) == SHOAL_ERR_ARG);
    CHECK(shoal_proj_parse("q,,k", &mask) == SHOAL_ERR_ARG);
    shoal_adapter *sub = NULL;
    CHECK(shoal_adapter_new(hp, 0, L, (1u << SHOAL_PROJ_Q) | (1u << SHOAL_PROJ_V), 2, 0.0f,
                            &sub) == 0);
    shoal_adapter_init(sub, 1);
    CHECK(shoal_adapter_n_pairs(sub) == 2 * L);
    CHECK(shoal_lora_scale(shoal_adapter_lora(sub, 0, SHOAL_PROJ_Q)) == 1.0f); /* alpha 0 */
    shoal_lora_view v[SHOAL_PROJ__COUNT];
    shoal_adapter_views(sub, 0, v);
    CHECK(v[SHOAL_PROJ_Q].rank == 2 && v[SHOAL_PROJ_K].rank == 0 && v[SHOAL_PROJ_V].da);
    CHECK(shoal_adapter_save(sub, path, err, sizeof err) == 0);
    shoal_adapter_destroy(&sub);
    CHECK(shoal_adapter_load(path, hp, 0, L, &sub, err, sizeof err) == 0);
    CHECK(sub && shoal_adapter_targets(sub) == ((1u << SHOAL_PROJ_Q) | (1u << SHOAL_PROJ_V)));
    shoal_adapter_destroy(&sub);
    CHECK(shoal_adapter_new(hp, 0, L + 1, SHOAL_PROJ_ALL, 4, 8, &sub) == SHOAL_ERR_ARG);
    CHECK(shoal_adapter_new(hp, 0, L, 1u << 9, 4, 8, &sub) == SHOAL_ERR_ARG);

    /* files to refuse */
    struct { int tweak, rc; const char *what; } bad[] = {
        {BAD_TYPE, SHOAL_ERR_FORMAT, "general.type model"},
        {BAD_ADAPTER_TYPE, SHOAL_ERR_FORMAT, "adapter.type ia3"},
        {BAD_ARCH, SHOAL_ERR_UNSUPPORTED, "architecture gpt2"},
        {HALF_PAIR, SHOAL_ERR_FORMAT, "lora_b missing"},
        {BAD_SHAPE, SHOAL_ERR_FORMAT, "lora_b of the wrong width"},
        {UNKNOWN_TENSOR, SHOAL_ERR_UNSUPPORTED, "LoRA on token_embd"},
        {NAN_VALUE, SHOAL_ERR_FORMAT, "NaN in B"},
        {LAYER_OUT, SHOAL_ERR_FORMAT, "block beyond the model"},
        {LEADING_ZERO, SHOAL_ERR_UNSUPPORTED, "block number with a leading zero"},
        {NORM_OK, 0, "a norm vector (ignored as llama.cpp does)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        int rc = load_tweaked(hp, bad[i].tweak, err, sizeof err);
        CHECK_MSG(rc == bad[i].rc, "%s: got %d (%s), want %d", bad[i].what, rc, err, bad[i].rc);
    }
    unlink(path);
    shoal_adapter_destroy(&a);
}

/* ---- the whole model's loss -------------------------------------------------------- */

#define NTOK 16

typedef struct model_ctx {
    const shoal_train_w *tw;
    const shoal_hparams *hp;
    shoal_train *tr;
    shoal_adapter *ad;
    int32_t tok[NTOK], tgt[NTOK];
    float *xs;   /* (L + 1, NTOK, dim): each block's input, then the head's */
    float *dx;   /* (NTOK, dim) */
} model_ctx;

static double model_loss(void *c_)
{
    model_ctx *c = c_;
    const int L = c->hp->n_layer, D = c->hp->dim;
    size_t n = (size_t)NTOK * D;
    if (shoal_train_w_embed(c->tw, c->tok, NTOK, c->xs))
        return NAN;
    for (int l = 0; l < L; l++) {
        shoal_lora_view v[SHOAL_PROJ__COUNT];
        shoal_adapter_views(c->ad, l, v);
        if (shoal_train_block_forward(c->tr, shoal_train_w_block(c->tw, l), v, NTOK,
                                      c->xs + l * n, c->xs + (l + 1) * n))
            return NAN;
    }
    double sum = 0;
    int cnt = 0;
    if (shoal_train_head_loss(c->tr, shoal_train_w_head(c->tw), NTOK, c->xs + L * n, c->tgt,
                              0.0f, NULL, &sum, &cnt))
        return NAN;
    return sum / cnt;
}

/* Gradient of the mean loss into the adapter's da/db. */
static int model_grad(model_ctx *c, double *loss)
{
    const int L = c->hp->n_layer, D = c->hp->dim;
    size_t n = (size_t)NTOK * D;
    *loss = model_loss(c);
    shoal_adapter_zero_grad(c->ad);
    double sum;
    int cnt;
    int rc = shoal_train_head_loss(c->tr, shoal_train_w_head(c->tw), NTOK, c->xs + L * n,
                                   c->tgt, 1.0f / (NTOK - 1), c->dx, &sum, &cnt);
    for (int l = L - 1; l >= 0 && !rc; l--) {
        shoal_lora_view v[SHOAL_PROJ__COUNT];
        shoal_adapter_views(c->ad, l, v);
        rc = shoal_train_block_backward(c->tr, shoal_train_w_block(c->tw, l), v, NTOK,
                                        c->xs + l * n, c->dx, c->dx);
    }
    return rc;
}

static double fd_one(model_ctx *c, float *p, double h)
{
    float save = *p;
    double d[2];
    for (int s = 0; s < 2; s++) {
        float hi = (float)(save + h * (s + 1)), lo = (float)(save - h * (s + 1));
        *p = hi;
        double lp = model_loss(c);
        *p = lo;
        double lm = model_loss(c);
        *p = save;
        d[s] = (lp - lm) / ((double)hi - (double)lo);
    }
    return (4 * d[0] - d[1]) / 3;
}

static void test_model_loss(void)
{
    char err[256];
    shoal_gguf *g = NULL;
    if (shoal_gguf_open(MODEL, &g, err, sizeof err)) {
        CHECK_MSG(0, "open %s: %s", MODEL, err);
        return;
    }
    shoal_train_w *tw = NULL;
    CHECK(shoal_train_w_open(g, 0, 5, SHOAL_PART_EMBED | SHOAL_PART_HEAD, &tw, err,
                             sizeof err) == 0);
    if (!tw) {
        shoal_gguf_close(&g);
        return;
    }
    const shoal_hparams *hp = shoal_train_w_hparams(tw);
    CHECK(hp->n_layer == 5 && hp->n_head == 8 && hp->n_head_kv == 4);
    test_adapter_files(hp);

    model_ctx c = {.tw = tw, .hp = hp};
    c.tr = shoal_train_new(hp, NTOK, 4, hp->n_vocab, 2);
    CHECK(c.tr != NULL);
    CHECK(shoal_adapter_new(hp, 0, hp->n_layer, SHOAL_PROJ_ALL, 4, 8.0f, &c.ad) == 0);
    shoal_adapter_init(c.ad, 2024);
    /* a sentence of the kind the model was trained on */
    shoal_tokenizer *tk = shoal_tokenizer_from_gguf(g, err, sizeof err);
    CHECK(tk != NULL);
    const char *text = "Once upon a time, there was a little girl named Lily. She loved to play.";
    int32_t ids[128];
    int nid = 0;
    CHECK(tk && shoal_tokenizer_encode(tk, text, strlen(text), true, ids, 128, &nid) == 0);
    CHECK(nid >= NTOK);
    shoal_tokenizer_destroy(&tk);
    for (int t = 0; t < NTOK; t++) {
        c.tok[t] = t < nid ? ids[t] : 0;
        c.tgt[t] = t + 1 < NTOK && t + 1 < nid ? ids[t + 1] : -1;
    }
    c.xs = calloc((size_t)(hp->n_layer + 1) * NTOK * hp->dim, sizeof(float));
    c.dx = calloc((size_t)NTOK * hp->dim, sizeof(float));

    /* with B = 0 the loss is the model's own, computed by inference */
    double loss0 = model_loss(&c);
    {
        shoal_model *m = NULL;
        CHECK(shoal_model_open(g, 0, 5, SHOAL_PART_EMBED | SHOAL_PART_HEAD, &m, err,
                               sizeof err) == 0);
        shoal_kv *kv = shoal_kv_new(m, NTOK);
        shoal_fwd *f = shoal_fwd_new(m, NTOK, NTOK, 1);
        float *x = calloc((size_t)NTOK * hp->dim, sizeof(float));
        float *logits = calloc((size_t)NTOK * hp->n_vocab, sizeof(float));
        CHECK(shoal_fwd_embed(f, c.tok, NTOK, x) == 0 && shoal_fwd_blocks(f, kv, 0, NTOK, x) == 0 &&
              shoal_fwd_head(f, x, NTOK, logits) == 0);
        double ref = 0;
        for (int t = 0; t + 1 < NTOK; t++) {
            const float *z = logits + (size_t)t * hp->n_vocab;
            double mx = z[0], se = 0;
            for (int i = 1; i < hp->n_vocab; i++)
                mx = fmax(mx, z[i]);
            for (int i = 0; i < hp->n_vocab; i++)
                se += exp(z[i] - mx);
            ref += mx + log(se) - z[c.tgt[t]];
        }
        ref /= NTOK - 1;
        printf("  stories260K mean CE over %d next tokens: %.6f (inference: %.6f)\n", NTOK - 1,
               loss0, ref);
        CHECK(fabs(loss0 - ref) < 1e-6);
        free(x);
        free(logits);
        shoal_fwd_destroy(&f);
        shoal_kv_destroy(&kv);
        shoal_model_destroy(&m);
    }

    /* B nonzero so that every LoRA parameter has a gradient */
    randomize(c.ad, 0.05f);
    double loss = 0;
    CHECK(model_grad(&c, &loss) == 0);
    printf("  with LoRA (rank 4, alpha 8, all targets, all 5 blocks): loss %.6f\n", loss);
    double num_a = 0, den_a = 0, num_b = 0, den_b = 0, worst = 0;
    int nsample = 0;
    for (int l = 0; l < hp->n_layer; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            shoal_lora *x = shoal_adapter_lora(c.ad, l, p);
            for (int which = 0; which < 2; which++) {
                float *param = which ? shoal_lora_b(x) : shoal_lora_a(x);
                const float *grad = which ? shoal_lora_db(x) : shoal_lora_da(x);
                size_t total = (size_t)shoal_lora_rank(x) *
                               (which ? shoal_lora_out(x) : shoal_lora_in(x));
                /* the entry with the largest gradient, and two random ones */
                size_t pick[3] = {0, 0, 0};
                for (size_t i = 1; i < total; i++)
                    if (fabsf(grad[i]) > fabsf(grad[pick[0]]))
                        pick[0] = i;
                pick[1] = shoal_lora_rand_u64(&rng) % total;
                pick[2] = shoal_lora_rand_u64(&rng) % total;
                for (int s = 0; s < 3; s++) {
                    double fd = fd_one(&c, &param[pick[s]], 5e-3), an = grad[pick[s]];
                    double *num = which ? &num_b : &num_a, *den = which ? &den_b : &den_a;
                    *num += (fd - an) * (fd - an);
                    *den += an * an;
                    if (s == 0)
                        worst = fmax(worst, fabs(fd - an) / fabs(an));
                    nsample++;
                }
            }
        }
    double ea = sqrt(num_a / den_a), eb = sqrt(num_b / den_b);
    printf("  model loss FD vs analytic over %d LoRA parameters: rel err A %.2e, B %.2e; "
           "largest-gradient entries: worst %.2e (bounds 1e-3, 1e-3, 3e-3)\n",
           nsample, ea, eb, worst);
    CHECK_MSG(ea <= 1e-3, "A: relative error %.3e", ea);
    CHECK_MSG(eb <= 1e-3, "B: relative error %.3e", eb);
    /* one entry alone carries the forward's f32 rounding noise (about 1e-4
     * absolute in a difference quotient here), hence the looser bound */
    CHECK_MSG(worst <= 3e-3, "largest-gradient entries: relative error %.3e", worst);

    /* a bad target id is refused */
    c.tgt[2] = hp->n_vocab;
    double s;
    int cnt;
    CHECK(shoal_train_head_loss(c.tr, shoal_train_w_head(tw), NTOK, c.xs, c.tgt, 1, c.dx, &s,
                                &cnt) == SHOAL_ERR_RANGE);

    free(c.xs);
    free(c.dx);
    shoal_adapter_destroy(&c.ad);
    shoal_train_destroy(&c.tr);
    shoal_train_w_destroy(&tw);
    shoal_gguf_close(&g);
}

int main(void)
{
    shoal_cpu_init();
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    printf("LoRA pair:\n");
    test_pair();
    printf("AdamW:\n");
    test_adamw();
    printf("adapters and the full model (stories260K):\n");
    test_model_loss();
    rmdir(tmpdir);
    return check_done();
}
