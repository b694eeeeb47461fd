/*
 * The forward pass against an independent plain reference: a direct,
 * double-precision transcription of the Llama block (llama2.c's run.c
 * structure) over dequantized weights. Covers every op of the block —
 * RMSNorm, RoPE, grouped-query attention with the causal mask, SwiGLU, the
 * residual stream and the head — on the real stories260K model (GQA 8/4)
 * and a generated F16 model with other head counts.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "client/cmd.h"
#include "kernels/cpu.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "kernels/types.h"

#define NTOK 9

static double *weight(const shoal_gguf *g, const char *name, int64_t *rows, int64_t *cols)
{
    int64_t i = shoal_gguf_find_tensor(g, name);
    if (i < 0)
        return NULL;
    const shoal_gguf_tensor *t = shoal_gguf_tensor_at(g, i);
    int64_t k = t->ne[0], n = t->n_dims > 1 ? t->ne[1] : 1;
    float *row = malloc(sizeof(float) * k);
    double *w = malloc(sizeof(double) * k * n);
    size_t rb = shoal_type_row_bytes(t->type, k);
    for (int64_t r = 0; r < n; r++) {
        shoal_dequantize_row(t->type, (const char *)shoal_gguf_tensor_data(g, i) + r * rb, row, k);
        for (int64_t c = 0; c < k; c++)
            w[r * k + c] = row[c];
    }
    free(row);
    if (rows)
        *rows = n;
    if (cols)
        *cols = k;
    return w;
}

/* y (n) = W (n, k) x (k) */
static void mv(double *y, const double *w, const double *x, int n, int k)
{
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < k; j++)
            s += w[(size_t)i * k + j] * x[j];
        y[i] = s;
    }
}

static void rmsnorm(double *o, const double *x, const double *w, int n, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    ss = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        o[i] = w[i] * x[i] * ss;
}

/* logits (NTOK, vocab) of the plain reference. */
static double *reference_logits(const shoal_gguf *g, const shoal_hparams *hp, const int32_t *tok)
{
    int D = hp->dim, F = hp->ffn, H = hp->n_head, KV = hp->n_head_kv, hd = hp->head_dim;
    int V = hp->n_vocab, L = hp->n_layer;
    double *emb = weight(g, "token_embd.weight", NULL, NULL);
    double *onorm = weight(g, "output_norm.weight", NULL, NULL);
    double *out = shoal_gguf_find_tensor(g, "output.weight") >= 0
                      ? weight(g, "output.weight", NULL, NULL)
                      : weight(g, "token_embd.weight", NULL, NULL);
    double *x = calloc((size_t)NTOK * D, sizeof *x), *xb = malloc(sizeof(double) * D);
    double *q = malloc(sizeof(double) * H * hd), *att = malloc(sizeof(double) * H * hd);
    double *kc = malloc(sizeof(double) * L * NTOK * KV * hd), *vc = malloc(sizeof(double) * L * NTOK * KV * hd);
    double *h1 = malloc(sizeof(double) * F), *h3 = malloc(sizeof(double) * F), *tmp = malloc(sizeof(double) * D);
    double *sc = malloc(sizeof(double) * NTOK);
    double *logits = malloc(sizeof(double) * NTOK * V);
    for (int t = 0; t < NTOK; t++)
        memcpy(x + (size_t)t * D, emb + (size_t)tok[t] * D, sizeof(double) * D);
    for (int l = 0; l < L; l++) {
        char n[96];
#define W(suffix) (snprintf(n, sizeof n, "blk.%d." suffix ".weight", l), weight(g, n, NULL, NULL))
        double *an = W("attn_norm"), *fn = W("ffn_norm"), *wq = W("attn_q"), *wk = W("attn_k"),
               *wv = W("attn_v"), *wo = W("attn_output"), *wg = W("ffn_gate"), *wu = W("ffn_up"),
               *wd = W("ffn_down");
#undef W
        for (int t = 0; t < NTOK; t++) {
            double *xt = x + (size_t)t * D;
            double *k = kc + ((size_t)l * NTOK + t) * KV * hd, *v = vc + ((size_t)l * NTOK + t) * KV * hd;
            rmsnorm(xb, xt, an, D, hp->rms_eps);
            mv(q, wq, xb, H * hd, D);
            mv(k, wk, xb, KV * hd, D);
            mv(v, wv, xb, KV * hd, D);
            for (int h = 0; h < H + KV; h++) {
                double *vec = h < H ? q + h * hd : k + (h - H) * hd;
                for (int i = 0; i < hp->rope_dim / 2; i++) {
                    double freq = pow(hp->rope_theta, -2.0 * i / hp->rope_dim);
                    double a = t * freq, c = cos(a), s = sin(a);
                    double x0 = vec[2 * i], x1 = vec[2 * i + 1];
                    vec[2 * i] = x0 * c - x1 * s;
                    vec[2 * i + 1] = x0 * s + x1 * c;
                }
            }
            for (int h = 0; h < H; h++) {
                int kh = h / (H / KV);
                double mx = -INFINITY, sum = 0;
                for (int p = 0; p <= t; p++) {
                    const double *kp = kc + ((size_t)l * NTOK + p) * KV * hd + kh * hd;
                    double s = 0;
                    for (int d = 0; d < hd; d++)
                        s += q[h * hd + d] * kp[d];
                    sc[p] = s / sqrt((double)hd);
                    mx = sc[p] > mx ? sc[p] : mx;
                }
                for (int p = 0; p <= t; p++)
                    sum += (sc[p] = exp(sc[p] - mx));
                for (int d = 0; d < hd; d++) {
                    double o = 0;
                    for (int p = 0; p <= t; p++)
                        o += sc[p] / sum * vc[((size_t)l * NTOK + p) * KV * hd + kh * hd + d];
                    att[h * hd + d] = o;
                }
            }
            mv(tmp, wo, att, D, H * hd);
            for (int i = 0; i < D; i++)
                xt[i] += tmp[i];
            rmsnorm(xb, xt, fn, D, hp->rms_eps);
            mv(h1, wg, xb, F, D);
            mv(h3, wu, xb, F, D);
            for (int i = 0; i < F; i++)
                h1[i] = h1[i] / (1 + exp(-h1[i])) * h3[i];
            mv(tmp, wd, h1, D, F);
            for (int i = 0; i < D; i++)
                xt[i] += tmp[i];
        }
        free(an), free(fn), free(wq), free(wk), free(wv), free(wo), free(wg), free(wu), free(wd);
    }
    for (int t = 0; t < NTOK; t++) {
        rmsnorm(xb, x + (size_t)t * D, onorm, D, hp->rms_eps);
        mv(logits + (size_t)t * V, out, xb, V, D);
    }
    free(emb), free(onorm), free(out), free(x), free(xb), free(q), free(att), free(kc), free(vc);
    free(h1), free(h3), free(tmp), free(sc);
    return logits;
}

static void compare(const char *path, const char *label, double tol)
{
    char err[256];
    shoal_gguf *g = NULL;
    shoal_model *m = NULL;
    shoal_hparams hp;
    if (shoal_gguf_open(path, &g, err, sizeof err) || shoal_hparams_read(g, &hp, err, sizeof err) ||
        shoal_model_open(g, 0, hp.n_layer, SHOAL_PART_EMBED | SHOAL_PART_HEAD, &m, err, sizeof err)) {
        CHECK_MSG(0, "%s: %s", label, err);
        shoal_gguf_close(&g);
        return;
    }
    int32_t tok[NTOK];
    for (int i = 0; i < NTOK; i++)
        tok[i] = (int32_t)((i * 37 + 1) % hp.n_vocab);
    shoal_kv *kv = shoal_kv_new(m, NTOK);
    shoal_fwd *f = shoal_fwd_new(m, NTOK, NTOK, 2);
    float *x = malloc(sizeof(float) * NTOK * hp.dim);
    float *lg = malloc(sizeof(float) * NTOK * hp.n_vocab);
    CHECK(shoal_fwd_embed(f, tok, NTOK, x) == 0);
    CHECK(shoal_fwd_blocks(f, kv, 0, NTOK, x) == 0);
    CHECK(shoal_fwd_head(f, x, NTOK, lg) == 0);
    double *ref = reference_logits(g, &hp, tok);
    double maxerr = 0, maxref = 0;
    for (size_t i = 0; i < (size_t)NTOK * hp.n_vocab; i++) {
        double e = fabs(lg[i] - ref[i]);
        maxerr = e > maxerr ? e : maxerr;
        maxref = fabs(ref[i]) > maxref ? fabs(ref[i]) : maxref;
    }
    CHECK_MSG(maxerr <= tol * (maxref > 1 ? maxref : 1), "%s: max |logit error| %.3g (max |logit| %.3g)",
              label, maxerr, maxref);
    printf("%s: max |logit error| %.3g relative to max |logit| %.3g\n", label, maxerr, maxref);
    free(ref);
    free(x);
    free(lg);
    shoal_fwd_destroy(&f);
    shoal_kv_destroy(&kv);
    shoal_model_destroy(&m);
    shoal_gguf_close(&g);
}

int main(void)
{
    shoal_cpu_init();
    compare(SHOAL_SHARED "/models/stories260K.gguf", "stories260K f32", 1e-4);
    char dir[] = "/tmp/shoal-test-fwdref-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char path[256];
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    char *argv[] = {"mkmodel", "-o", path, "--dim", "192", "--ffn", "320", "--heads", "6",
                    "--kv-heads", "2", "--layers", "2", "--vocab", "300", "--type", "f16", NULL};
    CHECK(shoal_cmd_mkmodel(17, argv) == 0);
    compare(path, "generated f16 (6 heads / 2 kv)", 1e-4);
    unlink(path);
    rmdir(dir);
    return check_done();
}
