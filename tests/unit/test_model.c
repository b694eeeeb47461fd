/*
 * The forward pass over block ranges: for every weight type, a span's output
 * hidden states and KV cache must be bit-identical for 1 and 2 threads, and
 * for a prompt processed as one batch versus token by token. Chaining spans
 * [0,a) then [a,L) must equal the whole [0,L). Uses generated models
 * (shoal mkmodel) and the real stories260K.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "client/cmd.h"
#include "kernels/cpu.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "kernels/types.h"

#define NTOK 11

typedef struct run_out {
    float *x;    /* (NTOK, dim) */
    float *kv;   /* K then V of every layer and position */
    size_t kv_floats;
} run_out;

static void run_free(run_out *r)
{
    free(r->x);
    free(r->kv);
}

/* Runs blocks [b0,b1) on NTOK tokens, in chunks of `chunk`, with `threads`. */
static int run_span(const shoal_gguf *g, int b0, int b1, int threads, int chunk,
                    const float *x_in, run_out *out)
{
    char err[256];
    shoal_model *m = NULL;
    if (shoal_model_open(g, b0, b1, 0, &m, err, sizeof err)) {
        fprintf(stderr, "open: %s\n", err);
        return -1;
    }
    const shoal_hparams *hp = shoal_model_hparams(m);
    shoal_kv *kv = shoal_kv_new(m, NTOK);
    shoal_fwd *f = shoal_fwd_new(m, chunk, NTOK, threads);
    out->x = malloc(sizeof(float) * NTOK * hp->dim);
    memcpy(out->x, x_in, sizeof(float) * NTOK * hp->dim);
    int rc = 0;
    for (int pos = 0; pos < NTOK && !rc; pos += chunk) {
        int n = NTOK - pos < chunk ? NTOK - pos : chunk;
        rc = shoal_fwd_blocks(f, kv, pos, n, out->x + (size_t)pos * hp->dim);
    }
    int row = hp->n_head_kv * hp->head_dim, layers = b1 - b0;
    out->kv_floats = (size_t)2 * layers * NTOK * row;
    out->kv = malloc(sizeof(float) * out->kv_floats);
    float *p = out->kv;
    for (int l = 0; l < layers; l++)
        for (int t = 0; t < NTOK; t++) {
            memcpy(p, shoal_kv_k(kv, l, t), sizeof(float) * row);
            p += row;
            memcpy(p, shoal_kv_v(kv, l, t), sizeof(float) * row);
            p += row;
        }
    shoal_fwd_destroy(&f);
    shoal_kv_destroy(&kv);
    shoal_model_destroy(&m);
    return rc;
}

static int same(const run_out *a, const run_out *b, int dim)
{
    return memcmp(a->x, b->x, sizeof(float) * NTOK * dim) == 0 &&
           a->kv_floats == b->kv_floats &&
           memcmp(a->kv, b->kv, sizeof(float) * a->kv_floats) == 0;
}

static void check_model(const char *path, const char *label)
{
    char err[256];
    shoal_gguf *g = NULL;
    shoal_hparams hp;
    if (shoal_gguf_open(path, &g, err, sizeof err) || shoal_hparams_read(g, &hp, err, sizeof err)) {
        CHECK_MSG(0, "%s: %s", label, err);
        shoal_gguf_close(&g);
        return;
    }
    /* Inputs: real embeddings of a token sequence. */
    shoal_model *emb = NULL;
    CHECK(shoal_model_open(g, 0, 0, SHOAL_PART_EMBED, &emb, err, sizeof err) == 0);
    shoal_fwd *ef = shoal_fwd_new(emb, NTOK, NTOK, 1);
    int32_t toks[NTOK];
    for (int i = 0; i < NTOK; i++)
        toks[i] = (int32_t)((i * 7919 + 3) % hp.n_vocab);
    float *x = malloc(sizeof(float) * NTOK * hp.dim);
    CHECK(shoal_fwd_embed(ef, toks, NTOK, x) == 0);
    shoal_fwd_destroy(&ef);
    shoal_model_destroy(&emb);

    int L = hp.n_layer;
    run_out base = {0}, t2 = {0}, single = {0}, chunked = {0}, head = {0};
    CHECK(run_span(g, 0, L, 1, NTOK, x, &base) == 0);
    CHECK(run_span(g, 0, L, 2, NTOK, x, &t2) == 0);
    CHECK(run_span(g, 0, L, 1, 1, x, &single) == 0);
    CHECK(run_span(g, 0, L, 2, 4, x, &chunked) == 0);
    CHECK_MSG(same(&base, &t2, hp.dim), "%s: 1 vs 2 threads differ", label);
    CHECK_MSG(same(&base, &single, hp.dim), "%s: batch vs token-by-token differ", label);
    CHECK_MSG(same(&base, &chunked, hp.dim), "%s: batch vs chunks of 4 (2 threads) differ", label);
    int finite = 1;
    for (size_t i = 0; i < (size_t)NTOK * hp.dim; i++)
        finite &= base.x[i] == base.x[i] && base.x[i] - base.x[i] == 0;
    CHECK_MSG(finite, "%s: non-finite hidden states", label);
    /* Chaining two spans equals the whole. */
    if (L >= 2) {
        int a = L / 2;
        run_out first = {0}, second = {0};
        CHECK(run_span(g, 0, a, 2, NTOK, x, &first) == 0);
        CHECK(run_span(g, a, L, 1, 3, first.x, &second) == 0);
        CHECK_MSG(memcmp(second.x, base.x, sizeof(float) * NTOK * hp.dim) == 0,
                  "%s: span [0,%d)+[%d,%d) differs from [0,%d)", label, a, a, L, L);
        run_free(&first);
        run_free(&second);
    }
    /* The head: logits of a token alone equal its row in a batch. */
    shoal_model *hm = NULL;
    CHECK(shoal_model_open(g, 0, 0, SHOAL_PART_HEAD, &hm, err, sizeof err) == 0);
    if (hm) {
        shoal_fwd *h1 = shoal_fwd_new(hm, NTOK, NTOK, 2);
        float *lb = malloc(sizeof(float) * NTOK * hp.n_vocab);
        float *l1 = malloc(sizeof(float) * hp.n_vocab);
        CHECK(shoal_fwd_head(h1, base.x, NTOK, lb) == 0);
        CHECK(shoal_fwd_head(h1, base.x + (size_t)5 * hp.dim, 1, l1) == 0);
        CHECK_MSG(memcmp(l1, lb + (size_t)5 * hp.n_vocab, sizeof(float) * hp.n_vocab) == 0,
                  "%s: head logits differ alone vs batch", label);
        free(lb);
        free(l1);
        shoal_fwd_destroy(&h1);
        shoal_model_destroy(&hm);
    }
    /* Bad arguments are refused, not crashed on. */
    shoal_model *bm = NULL;
    CHECK(shoal_model_open(g, 0, L + 1, 0, &bm, err, sizeof err) == SHOAL_ERR_RANGE);
    CHECK(shoal_model_open(g, 2, 1, 0, &bm, err, sizeof err) == SHOAL_ERR_RANGE);
    run_free(&base);
    run_free(&t2);
    run_free(&single);
    run_free(&chunked);
    run_free(&head);
    free(x);
    shoal_gguf_close(&g);
}

int main(void)
{
    shoal_cpu_init();
    check_model(SHOAL_SHARED "/models/stories260K.gguf", "stories260K");

    char dir[] = "/tmp/shoal-test-model-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    static const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_K", "q6_K"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s.gguf", dir, types[i]);
        char *argv[] = {"mkmodel", "-o", path, "--dim", "256", "--ffn", "512", "--heads", "4",
                        "--kv-heads", "2", "--layers", "3", "--vocab", "300", "--type",
                        (char *)types[i], "--seed", "5", NULL};
        int rc = shoal_cmd_mkmodel(19, argv);
        CHECK_MSG(rc == 0, "mkmodel %s failed", types[i]);
        if (rc == 0)
            check_model(path, types[i]);
        unlink(path);
    }
    rmdir(dir);
    return check_done();
}
