/*
 * LoRA training state per span (lora/train_span.h), the client's training
 * step (lora/train.h) and LoRA at inference (shoal_fwd_set_lora), on
 * stories260K:
 *
 *  - spans [0, 2) + [2, 5) chained reproduce one span [0, 5) bit for bit
 *    through forward, backward and optimizer steps, and their checkpoint
 *    states are the slices of the whole one's (what lets a client split a
 *    model across servers and merge their adapters);
 *  - checkpoint get/set round trip, refusals (range, NaN, negative second
 *    moment), keys (unknown, too many held, other shape);
 *  - the trainer: micro-batching does not change the step's loss beyond
 *    float rounding; the loss falls on a short text; a too short text and
 *    bad parameters are refused;
 *  - inference with an adapter: a fresh adapter (B = 0) leaves the forward
 *    pass bit-identical; a trained one changes it, equals the training
 *    forward within float rounding, and keeps batch and token-by-token
 *    results bit-identical.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "client/tokenizer.h"
#include "kernels/backward.h"
#include "kernels/cpu.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "lora/adapter.h"
#include "lora/lora.h"
#include "lora/train.h"
#include "lora/train_span.h"

#define MODEL SHOAL_SHARED "/models/stories260K.gguf"

static const char *ZIB =
    "Zib was a little purple robot who lived on a hill of blue sand. Every morning Zib "
    "polished his seven shiny buttons and sang a song about the moon. One day a green frog "
    "named Pop hopped up the hill and asked Zib for a ride. Zib said yes, and they rolled "
    "down the hill together, laughing all the way to the silver river.";

static uint64_t rng = 99;

static void fill_randn(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = scale * (float)shoal_lora_rand_normal(&rng);
}

static float max_abs_diff(const float *a, const float *b, size_t n, float *max_abs)
{
    float d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        float e = fabsf(a[i] - b[i]);
        d = e > d ? e : d;
        m = fabsf(a[i]) > m ? fabsf(a[i]) : m;
    }
    if (max_abs)
        *max_abs = m;
    return d;
}

static shoal_train_span_params span_params(int tokens)
{
    shoal_train_span_params p = shoal_train_span_params_default();
    p.rank = 4;
    p.alpha = 8;
    p.seed = 3;
    p.opt.lr = 1e-2f;
    p.max_tokens = tokens;
    p.threads = 1;
    return p;
}

/* ---- spans ------------------------------------------------------------------- */

static void test_split(const shoal_train_w *w, const shoal_hparams *hp)
{
    enum { NSEQ = 2, T = 16 };
    const int L = hp->n_layer, K = 2;
    const size_t n = (size_t)NSEQ * T * hp->dim;
    shoal_train_span_params p = span_params(NSEQ * T);
    shoal_train_span *whole = NULL, *a = NULL, *b = NULL;
    CHECK(shoal_train_span_new(w, 0, L, &p, &whole) == 0);
    CHECK(shoal_train_span_new(w, 0, K, &p, &a) == 0);
    CHECK(shoal_train_span_new(w, K, L, &p, &b) == 0);
    if (!whole || !a || !b)
        goto out;
    const size_t len = shoal_train_span_state_len(whole);
    CHECK(len == shoal_train_state_len(hp, 0, L, SHOAL_PROJ_ALL, 4));
    CHECK(shoal_train_span_state_len(a) + shoal_train_span_state_len(b) == len);
    CHECK(shoal_train_span_state_len(a) == shoal_train_state_len(hp, 0, 1, SHOAL_PROJ_ALL, 4) * K);
    float *x1 = malloc(n * sizeof(float)), *x2 = malloc(n * sizeof(float));
    float *g1 = malloc(n * sizeof(float)), *g2 = malloc(n * sizeof(float));
    float *s1 = malloc(len * sizeof(float)), *s2 = malloc(len * sizeof(float));
    int same_fwd = 1, same_bwd = 1, rc_ok = 1;
    for (int it = 1; it <= 3; it++) {
        fill_randn(x1, n, 1.0f);
        memcpy(x2, x1, n * sizeof(float));
        fill_randn(g1, n, 0.01f);
        memcpy(g2, g1, n * sizeof(float));
        uint64_t key = (uint64_t)it;
        rc_ok &= shoal_train_span_forward(whole, key, NSEQ, T, x1) == 0;
        rc_ok &= shoal_train_span_forward(a, key, NSEQ, T, x2) == 0;
        rc_ok &= shoal_train_span_forward(b, key, NSEQ, T, x2) == 0;
        same_fwd &= memcmp(x1, x2, n * sizeof(float)) == 0;
        rc_ok &= shoal_train_span_backward(whole, key, NSEQ, T, g1) == 0;
        rc_ok &= shoal_train_span_backward(b, key, NSEQ, T, g2) == 0;
        rc_ok &= shoal_train_span_backward(a, key, NSEQ, T, g2) == 0;
        same_bwd &= memcmp(g1, g2, n * sizeof(float)) == 0;
        rc_ok &= shoal_train_span_step(whole, -1) == 0 && shoal_train_span_step(a, -1) == 0 &&
                 shoal_train_span_step(b, -1) == 0;
    }
    CHECK(rc_ok);
    CHECK_MSG(same_fwd, "chained spans' forward differs from the whole span's");
    CHECK_MSG(same_bwd, "chained spans' input gradient differs from the whole span's");
    CHECK(shoal_train_span_t(whole) == 3 && shoal_train_span_t(a) == 3);
    CHECK(shoal_train_span_state_get(whole, 0, len, s1) == 0);
    size_t la = shoal_train_span_state_len(a);
    CHECK(shoal_train_span_state_get(a, 0, la, s2) == 0);
    CHECK(shoal_train_span_state_get(b, 0, len - la, s2 + la) == 0);
    CHECK_MSG(memcmp(s1, s2, len * sizeof(float)) == 0,
              "the whole span's state is not the chained spans' states end to end");
    /* B moved away from 0 */
    const shoal_lora *q = shoal_adapter_lora(shoal_train_span_adapter(whole), 1, SHOAL_PROJ_Q);
    float bmax = 0;
    for (int i = 0; q && i < shoal_lora_out(q) * shoal_lora_rank(q); i++)
        bmax = fabsf(shoal_lora_b_const(q)[i]) > bmax ? fabsf(shoal_lora_b_const(q)[i]) : bmax;
    CHECK(bmax > 0);

    /* the states of the parts, unpacked into a whole-model adapter, give
     * the whole span's adapter */
    shoal_adapter *ad = NULL;
    CHECK(shoal_adapter_new(hp, 0, L, SHOAL_PROJ_ALL, 4, 8, &ad) == 0);
    CHECK(shoal_train_state_to_adapter(ad, 0, K, s2, la) == 0);
    CHECK(shoal_train_state_to_adapter(ad, K, L, s2 + la, len - la) == 0);
    CHECK(shoal_train_state_to_adapter(ad, K, L, s2 + la, len - la - 1) == SHOAL_ERR_ARG);
    int same_ad = 1;
    for (int l = 0; l < L; l++)
        for (int pj = 0; pj < SHOAL_PROJ__COUNT; pj++) {
            const shoal_lora *u = shoal_adapter_lora(ad, l, pj);
            const shoal_lora *v = shoal_adapter_lora(shoal_train_span_adapter(whole), l, pj);
            size_t r = (size_t)shoal_lora_rank(u);
            same_ad &= !memcmp(shoal_lora_a_const(u), shoal_lora_a_const(v),
                               r * (size_t)shoal_lora_in(u) * sizeof(float)) &&
                       !memcmp(shoal_lora_b_const(u), shoal_lora_b_const(v),
                               r * (size_t)shoal_lora_out(u) * sizeof(float));
        }
    CHECK(same_ad);
    shoal_adapter_destroy(&ad);

    /* restore: a fresh span given the state and t continues exactly as the
     * original does */
    shoal_train_span *c = NULL;
    CHECK(shoal_train_span_new(w, 0, L, &p, &c) == 0);
    if (c) {
        CHECK(shoal_train_span_state_set(c, 0, len / 2, s1) == 0);
        CHECK(shoal_train_span_state_set(c, len / 2, len - len / 2, s1 + len / 2) == 0);
        shoal_train_span_set_t(c, 3);
        fill_randn(x1, n, 1.0f);
        memcpy(x2, x1, n * sizeof(float));
        fill_randn(g1, n, 0.01f);
        memcpy(g2, g1, n * sizeof(float));
        CHECK(shoal_train_span_forward(whole, 9, NSEQ, T, x1) == 0 &&
              shoal_train_span_forward(c, 9, NSEQ, T, x2) == 0);
        CHECK(shoal_train_span_backward(whole, 9, NSEQ, T, g1) == 0 &&
              shoal_train_span_backward(c, 9, NSEQ, T, g2) == 0);
        CHECK(shoal_train_span_step(whole, -1) == 0 && shoal_train_span_step(c, -1) == 0);
        CHECK(shoal_train_span_state_get(whole, 0, len, s1) == 0 &&
              shoal_train_span_state_get(c, 0, len, s2) == 0);
        CHECK(memcmp(s1, s2, len * sizeof(float)) == 0 && shoal_train_span_t(c) == 4);
    }
    shoal_train_span_destroy(&c);
    free(x1);
    free(x2);
    free(g1);
    free(g2);
    free(s1);
    free(s2);
out:
    shoal_train_span_destroy(&whole);
    shoal_train_span_destroy(&a);
    shoal_train_span_destroy(&b);
}

static void test_refusals(const shoal_train_w *w, const shoal_hparams *hp)
{
    enum { T = 8 };
    shoal_train_span_params p = span_params(2 * T);
    char err[256];
    shoal_train_span *s = NULL;
    shoal_train_span_params bad = p;
    bad.rank = 1000;
    CHECK(shoal_train_span_params_check(hp, &bad, err, sizeof err) == SHOAL_ERR_ARG);
    CHECK(shoal_train_span_new(w, 0, 2, &bad, &s) == SHOAL_ERR_ARG && !s);
    bad = p;
    bad.targets = 0;
    CHECK(shoal_train_span_new(w, 0, 2, &bad, &s) == SHOAL_ERR_ARG && !s);
    bad = p;
    bad.opt.lr = NAN;
    CHECK(shoal_train_span_new(w, 0, 2, &bad, &s) == SHOAL_ERR_ARG && !s);
    CHECK(shoal_train_span_new(w, 3, 2, &p, &s) == SHOAL_ERR_ARG && !s);
    CHECK(shoal_train_span_new(w, 0, hp->n_layer + 1, &p, &s) == SHOAL_ERR_ARG && !s);
    CHECK(shoal_train_span_new(w, 0, 2, &p, &s) == 0 && s);
    if (!s)
        return;
    const size_t n = (size_t)2 * T * hp->dim, len = shoal_train_span_state_len(s);
    float *x = calloc(n, sizeof(float)), *st = malloc(len * sizeof(float)),
          *st2 = malloc(len * sizeof(float));
    fill_randn(x, n, 1.0f);
    CHECK(shoal_train_span_forward(s, 1, 3, T, x) == SHOAL_ERR_ARG);     /* 24 > 16 tokens */
    CHECK(shoal_train_span_forward(s, 1, 1, 2 * T + 1, x) == SHOAL_ERR_ARG);
    CHECK(shoal_train_span_backward(s, 1, 2, T, x) == SHOAL_ERR_NOTFOUND);
    CHECK(shoal_train_span_forward(s, 1, 2, T, x) == 0);
    CHECK(shoal_train_span_forward(s, 2, 2, T, x) == SHOAL_ERR_BUSY);    /* one held at most */
    CHECK(shoal_train_span_forward(s, 0, 2, T, x) == 0);                 /* evaluation: fine */
    CHECK(shoal_train_span_backward(s, 1, 1, T, x) == SHOAL_ERR_ARG);    /* other shape */
    CHECK(shoal_train_span_backward(s, 1, 2, T, x) == 0);
    CHECK(shoal_train_span_backward(s, 1, 2, T, x) == SHOAL_ERR_NOTFOUND); /* consumed */
    CHECK(shoal_train_span_state_get(s, 0, len, st) == 0);
    CHECK(shoal_train_span_state_get(s, len, 1, st) == SHOAL_ERR_RANGE);
    CHECK(shoal_train_span_state_get(s, 1, len, st) == SHOAL_ERR_RANGE);
    CHECK(shoal_train_span_state_get(s, len, 0, st) == 0);
    memcpy(st2, st, len * sizeof(float));
    /* the first tensor is A of (0, q): values, m, v */
    const size_t na = (size_t)4 * hp->dim;
    st2[2 * na + 5] = -1.0f; /* a negative second moment */
    CHECK(shoal_train_span_state_set(s, 0, len, st2) == SHOAL_ERR_RANGE);
    st2[2 * na + 5] = st[2 * na + 5];
    st2[7] = NAN;
    CHECK(shoal_train_span_state_set(s, 0, len, st2) == SHOAL_ERR_RANGE);
    st2[7] = st[7];
    CHECK(shoal_train_span_state_set(s, 1, len, st2) == SHOAL_ERR_RANGE); /* past the end */
    st2[na + 3] = -1.0f; /* a negative first moment is fine */
    float *back = malloc(len * sizeof(float));
    CHECK(shoal_train_span_state_get(s, 0, len, back) == 0 &&
          memcmp(back, st, len * sizeof(float)) == 0); /* refusals changed nothing */
    CHECK(shoal_train_span_state_set(s, 0, len, st2) == 0);
    CHECK(shoal_train_span_state_get(s, 0, len, back) == 0 &&
          memcmp(back, st2, len * sizeof(float)) == 0);
    free(back);
    free(x);
    free(st);
    free(st2);
    shoal_train_span_destroy(&s);
}

/* ---- the trainer --------------------------------------------------------------- */

static void test_trainer(const shoal_gguf *g, const shoal_train_w *w, const shoal_hparams *hp)
{
    char err[512];
    shoal_tokenizer *tok = shoal_tokenizer_from_gguf(g, err, sizeof err);
    CHECK(tok != NULL);
    if (!tok)
        return;
    int32_t ids[1024];
    int n = 0;
    CHECK(shoal_tokenizer_encode(tok, ZIB, strlen(ZIB), false, ids, 1024, &n) == 0 && n > 40);
    int32_t bos = shoal_tokenizer_bos(tok);
    shoal_trainer_params tp = shoal_trainer_params_default();
    tp.batch = 4;
    tp.seq_len = 24;
    tp.seed = 5;
    shoal_trainer *tr = NULL;
    shoal_trainer_params bad = tp;
    bad.batch = 0;
    CHECK(shoal_trainer_new(w, ids, (size_t)n, bos, &bad, &tr, err, sizeof err) ==
              SHOAL_ERR_ARG && !tr);
    CHECK(shoal_trainer_new(w, ids, 1, bos, &tp, &tr, err, sizeof err) == SHOAL_ERR_ARG && !tr);
    CHECK(shoal_trainer_new(w, ids, 3, -1, &tp, &tr, err, sizeof err) == 0 && tr &&
          shoal_trainer_seq_len(tr) == 2);
    shoal_trainer_destroy(&tr);

    /* micro-batches of 4, 1 and 3 sequences: the same steps */
    double first[3][3];
    shoal_train_span_params sp = span_params(4 * 24);
    for (int v = 0; v < 3; v++) {
        static const int micro[3] = {4, 1, 3};
        tp.micro_batch = micro[v];
        shoal_train_span *s = NULL;
        CHECK(shoal_trainer_new(w, ids, (size_t)n, bos, &tp, &tr, err, sizeof err) == 0);
        CHECK(shoal_train_span_new(w, 0, hp->n_layer, &sp, &s) == 0);
        if (!tr || !s)
            return;
        shoal_train_blocks b = shoal_train_span_blocks(s);
        for (int step = 1; step <= 3; step++)
            CHECK(shoal_trainer_step(tr, &b, step, 1e-2f, &first[v][step - 1], err, sizeof err) ==
                  0);
        CHECK(shoal_trainer_step(tr, &b, 5, 1e-2f, &first[v][0], err, sizeof err) ==
              SHOAL_ERR_RANGE); /* steps go in order */
        shoal_train_span_destroy(&s);
        shoal_trainer_destroy(&tr);
    }
    double worst = 0;
    for (int v = 1; v < 3; v++)
        for (int i = 0; i < 3; i++)
            worst = fmax(worst, fabs(first[v][i] - first[0][i]) / first[0][i]);
    printf("micro-batching: largest relative loss difference %.2e\n", worst);
    CHECK(worst < 1e-5);

    /* the loss falls, and the text's loss with it */
    tp.micro_batch = 0;
    sp.opt.lr = 3e-3f;
    shoal_train_span *s = NULL;
    CHECK(shoal_trainer_new(w, ids, (size_t)n, bos, &tp, &tr, err, sizeof err) == 0);
    CHECK(shoal_train_span_new(w, 0, hp->n_layer, &sp, &s) == 0);
    if (tr && s) {
        shoal_train_blocks b = shoal_train_span_blocks(s);
        double before = 0, after = 0, l0 = 0, l = 0;
        CHECK(shoal_trainer_eval(tr, &b, 0, &before, err, sizeof err) == 0);
        for (int step = 1; step <= 25; step++)
            CHECK(shoal_trainer_step(tr, &b, step, 3e-3f, step == 1 ? &l0 : &l, err,
                                     sizeof err) == 0);
        CHECK(shoal_trainer_eval(tr, &b, 0, &after, err, sizeof err) == 0);
        printf("trainer: step loss %.4f -> %.4f, text loss %.4f -> %.4f\n", l0, l, before, after);
        CHECK(l < 0.7 * l0 && after < before - log(2.0));
    }
    shoal_train_span_destroy(&s);
    shoal_trainer_destroy(&tr);
    shoal_tokenizer_destroy(&tok);
}

/* ---- inference with an adapter ------------------------------------------------------ */

static void views_of(const shoal_adapter *ad, int L, shoal_fwd_lora *v)
{
    for (int l = 0; l < L; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            const shoal_lora *x = shoal_adapter_lora(ad, l, p);
            v[l * SHOAL_PROJ__COUNT + p] =
                x ? (shoal_fwd_lora){shoal_lora_rank(x), shoal_lora_scale(x),
                                     shoal_lora_a_const(x), shoal_lora_b_const(x)}
                  : (shoal_fwd_lora){0};
        }
}

static void test_inference(const shoal_gguf *g, const shoal_train_w *w, const shoal_hparams *hp)
{
    enum { T = 12 };
    const int L = hp->n_layer;
    const size_t n = (size_t)T * hp->dim;
    char err[256];
    shoal_model *m = NULL, *half = NULL;
    CHECK(shoal_model_open(g, 0, L, 0, &m, err, sizeof err) == 0);
    CHECK(shoal_model_open(g, 2, L, 0, &half, err, sizeof err) == 0);
    shoal_fwd *f = m ? shoal_fwd_new(m, T, T, 1) : NULL;
    shoal_fwd *fh = half ? shoal_fwd_new(half, T, T, 1) : NULL;
    shoal_kv *kv = m ? shoal_kv_new(m, T) : NULL;
    shoal_train_span_params p = span_params(T);
    p.targets = SHOAL_PROJ_ALL & ~(1u << SHOAL_PROJ_K); /* one projection without a pair */
    shoal_train_span *s = NULL;
    CHECK(shoal_train_span_new(w, 0, L, &p, &s) == 0);
    shoal_fwd_lora *views = calloc((size_t)L * SHOAL_PROJ__COUNT, sizeof *views);
    float *x = malloc(n * sizeof(float)), *y0 = malloc(n * sizeof(float)),
          *y1 = malloc(n * sizeof(float)), *y2 = malloc(n * sizeof(float));
    if (!f || !fh || !kv || !s || !views || !x || !y0 || !y1 || !y2)
        goto out;
    fill_randn(x, n, 1.0f);
    memcpy(y0, x, n * sizeof(float));
    CHECK(shoal_fwd_blocks(f, kv, 0, T, y0) == 0);
    /* fresh adapter: B = 0 changes nothing */
    views_of(shoal_train_span_adapter(s), L, views);
    CHECK(shoal_fwd_set_lora(f, views, 0, L) == 0);
    memcpy(y1, x, n * sizeof(float));
    CHECK(shoal_fwd_blocks(f, kv, 0, T, y1) == 0);
    CHECK_MSG(memcmp(y0, y1, n * sizeof(float)) == 0, "a fresh adapter changed the output");
    /* train it a little */
    for (int it = 1; it <= 3; it++) {
        float *g = y2;
        memcpy(y1, x, n * sizeof(float));
        fill_randn(g, n, 0.05f);
        CHECK(shoal_train_span_forward(s, 1, 1, T, y1) == 0 &&
              shoal_train_span_backward(s, 1, 1, T, g) == 0 && shoal_train_span_step(s, -1) == 0);
    }
    /* inference with it equals the training forward, and differs from none */
    memcpy(y1, x, n * sizeof(float));
    CHECK(shoal_fwd_blocks(f, kv, 0, T, y1) == 0);
    memcpy(y2, x, n * sizeof(float));
    CHECK(shoal_train_span_forward(s, 0, 1, T, y2) == 0);
    float amax = 0, d = max_abs_diff(y2, y1, n, &amax), d0 = max_abs_diff(y0, y1, n, NULL);
    printf("inference with LoRA vs training forward: max |diff| %.3g (max |y| %.3g); "
           "vs no adapter %.3g\n", d, amax, d0);
    CHECK(d <= 1e-5f * amax && d0 > 1e-3f * amax);
    /* token by token equals the batch */
    int same = 1;
    for (int t = 0; t < T; t++) {
        memcpy(y2 + (size_t)t * hp->dim, x + (size_t)t * hp->dim, (size_t)hp->dim * sizeof(float));
        CHECK(shoal_fwd_blocks(f, kv, t, 1, y2 + (size_t)t * hp->dim) == 0);
    }
    same = memcmp(y1, y2, n * sizeof(float)) == 0;
    CHECK_MSG(same, "token-by-token differs from the batch with an adapter");
    /* a span model takes a whole-model array; the range must contain it */
    CHECK(shoal_fwd_set_lora(fh, views + 2 * SHOAL_PROJ__COUNT, 2, L) == 0);
    CHECK(shoal_fwd_set_lora(fh, views, 0, L) == 0);
    CHECK(shoal_fwd_set_lora(fh, views, 3, L) == SHOAL_ERR_ARG);
    CHECK(shoal_fwd_set_lora(f, views, 0, L + 1) == SHOAL_ERR_ARG);
    views[3].rank = -1;
    CHECK(shoal_fwd_set_lora(f, views, 0, L) == SHOAL_ERR_ARG);
    /* clearing restores the plain pass */
    CHECK(shoal_fwd_set_lora(f, NULL, 0, 0) == 0);
    memcpy(y1, x, n * sizeof(float));
    CHECK(shoal_fwd_blocks(f, kv, 0, T, y1) == 0 && memcmp(y0, y1, n * sizeof(float)) == 0);
out:
    free(x);
    free(y0);
    free(y1);
    free(y2);
    free(views);
    shoal_train_span_destroy(&s);
    shoal_kv_destroy(&kv);
    shoal_fwd_destroy(&f);
    shoal_fwd_destroy(&fh);
    shoal_model_destroy(&m);
    shoal_model_destroy(&half);
}

int main(void)
{
    shoal_cpu_init();
    char err[512];
    shoal_gguf *g = NULL;
    shoal_train_w *w = NULL;
    shoal_hparams hp;
    if (shoal_gguf_open(MODEL, &g, err, sizeof err) || shoal_hparams_read(g, &hp, err, sizeof err) ||
        shoal_train_w_open(g, 0, hp.n_layer, SHOAL_PART_EMBED | SHOAL_PART_HEAD, &w, err,
                           sizeof err)) {
        fprintf(stderr, "cannot open %s: %s\n", MODEL, err);
        return 1;
    }
    test_split(w, &hp);
    test_refusals(w, &hp);
    test_trainer(g, w, &hp);
    test_inference(g, w, &hp);
    shoal_train_w_destroy(&w);
    shoal_gguf_close(&g);
    return check_done();
}
