/*
 * The client's training step (see train.h): windows of the text, the
 * frozen embedding and head, micro-batches through the blocks interface.
 * Buffers for one micro-batch are allocated in shoal_trainer_new; a step
 * allocates nothing.
 */
#include "lora/train.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "lora/lora.h"

#define TRAINER_MAX_BATCH 65536
#define TRAINER_MAX_SEQ (1 << 20)

struct shoal_trainer {
    const shoal_train_w *hw;
    shoal_hparams hp;
    shoal_trainer_params p;  /* seq_len cut to the text, micro_batch set */
    int32_t *text;
    size_t n;
    int32_t bos;             /* < 0: none */
    shoal_train *tr;         /* the head's scratch: seq_len tokens, n_vocab */
    int32_t *tok, *tgt;      /* (micro_batch, seq_len) */
    float *x, *g;            /* (micro_batch * seq_len, dim) */
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

/* ---- the blocks of a local span ---------------------------------------- */

static int span_forward(void *self, uint64_t key, int n_seq, int T, float *x)
{
    return shoal_train_span_forward(self, key, n_seq, T, x);
}

static int span_backward(void *self, uint64_t key, int n_seq, int T, float *g)
{
    return shoal_train_span_backward(self, key, n_seq, T, g);
}

static int span_step(void *self, int64_t t, float lr)
{
    if (shoal_train_span_t(self) != t - 1)
        return SHOAL_ERR_RANGE;
    return shoal_train_span_step(self, lr);
}

static const char *span_error(void *self)
{
    (void)self;
    return "local training pass";
}

shoal_train_blocks shoal_train_span_blocks(shoal_train_span *s)
{
    shoal_train_blocks b = {s, span_forward, span_backward, span_step, span_error};
    return b;
}

/* ---- the trainer ---------------------------------------------------------- */

shoal_trainer_params shoal_trainer_params_default(void)
{
    shoal_trainer_params p = {.batch = 4, .seq_len = 64, .micro_batch = 0, .seed = 0,
                              .threads = 1};
    return p;
}

void shoal_trainer_destroy(shoal_trainer **tp)
{
    if (!tp || !*tp)
        return;
    shoal_trainer *t = *tp;
    shoal_train_destroy(&t->tr);
    free(t->text);
    free(t->tok);
    free(t->tgt);
    free(t->x);
    free(t->g);
    free(t);
    *tp = NULL;
}

int shoal_trainer_new(const shoal_train_w *hw, const int32_t *text, size_t n, int32_t bos,
                      const shoal_trainer_params *p, shoal_trainer **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    const shoal_head_w *head = hw ? shoal_train_w_head(hw) : NULL;
    if (!head || !head->out_norm || !head->embd.data || !p) {
        set_err(err, errlen, "the trainer needs the model's embedding and head");
        return SHOAL_ERR_ARG;
    }
    if (p->batch < 1 || p->batch > TRAINER_MAX_BATCH || p->seq_len < 2 ||
        p->seq_len > TRAINER_MAX_SEQ || p->micro_batch < 0 || p->threads < 1) {
        set_err(err, errlen, "bad batch (%d), sequence length (%d) or micro-batch (%d)",
                p->batch, p->seq_len, p->micro_batch);
        return SHOAL_ERR_ARG;
    }
    const shoal_hparams *hp = shoal_train_w_hparams(hw);
    for (size_t i = 0; i < n; i++)
        if (text[i] < 0 || text[i] >= hp->n_vocab) {
            set_err(err, errlen, "token %zu (%d) is outside the vocabulary", i, (int)text[i]);
            return SHOAL_ERR_RANGE;
        }
    /* a sequence of T tokens needs T text tokens after BOS, T + 1 without */
    const size_t extra = bos >= 0 ? 0 : 1;
    size_t T = (size_t)p->seq_len;
    if (n < T + extra)
        T = n > extra ? n - extra : 0;
    if (T < 2) {
        set_err(err, errlen, "the text is %zu tokens: too short to train on", n);
        return SHOAL_ERR_ARG;
    }
    shoal_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    t->hw = hw;
    t->hp = *hp;
    t->p = *p;
    t->p.seq_len = (int)T;
    if (t->p.micro_batch == 0 || t->p.micro_batch > t->p.batch)
        t->p.micro_batch = t->p.batch;
    t->bos = bos;
    t->n = n;
    const size_t tokens = (size_t)t->p.micro_batch * T;
    t->text = malloc(n * sizeof *t->text);
    t->tok = malloc(tokens * sizeof *t->tok);
    t->tgt = malloc(tokens * sizeof *t->tgt);
    t->x = malloc(tokens * (size_t)hp->dim * sizeof *t->x);
    t->g = malloc(tokens * (size_t)hp->dim * sizeof *t->g);
    t->tr = shoal_train_new(hp, (int)T, 0, hp->n_vocab, p->threads);
    if (!t->text || !t->tok || !t->tgt || !t->x || !t->g || !t->tr) {
        shoal_trainer_destroy(&t);
        set_err(err, errlen, "out of memory (%zu tokens per micro-batch)", tokens);
        return SHOAL_ERR_NOMEM;
    }
    memcpy(t->text, text, n * sizeof *text);
    *out = t;
    return 0;
}

int shoal_trainer_seq_len(const shoal_trainer *t) { return t->p.seq_len; }
int shoal_trainer_micro_batch(const shoal_trainer *t) { return t->p.micro_batch; }
int shoal_trainer_step_tokens(const shoal_trainer *t) { return t->p.batch * t->p.seq_len; }

/* Sequence i of the micro-batch from text offset o. */
static void fill_seq(shoal_trainer *t, int i, size_t o)
{
    const int T = t->p.seq_len;
    int32_t *tok = t->tok + (size_t)i * T, *tgt = t->tgt + (size_t)i * T;
    const int32_t *w = t->text + o;
    if (t->bos >= 0) {
        tok[0] = t->bos;
        memcpy(tok + 1, w, (size_t)(T - 1) * sizeof *tok);
        memcpy(tgt, w, (size_t)T * sizeof *tgt);
    } else {
        memcpy(tok, w, (size_t)T * sizeof *tok);
        memcpy(tgt, w + 1, (size_t)T * sizeof *tgt);
    }
}

/* Forward (and with key != 0, backward) of the m sequences already filled.
 * Adds the loss sum and the counted targets. */
static int run_micro(shoal_trainer *t, const shoal_train_blocks *b, uint64_t key, int m,
                     float grad_scale, double *loss_sum, long *count, char *err, size_t errlen)
{
    const int T = t->p.seq_len, dim = t->hp.dim;
    const size_t seq = (size_t)T * dim;
    const shoal_head_w *head = shoal_train_w_head(t->hw);
    int rc = shoal_train_w_embed(t->hw, t->tok, m * T, t->x);
    if (rc) {
        set_err(err, errlen, "embedding failed: %s", shoal_strerror(rc));
        return rc;
    }
    if ((rc = b->forward(b->self, key, m, T, t->x))) {
        set_err(err, errlen, "forward failed: %s (%s)", b->error(b->self), shoal_strerror(rc));
        return rc;
    }
    for (int i = 0; i < m; i++) {
        double sum = 0;
        int cnt = 0;
        rc = shoal_train_head_loss(t->tr, head, T, t->x + i * seq, t->tgt + (size_t)i * T,
                                   grad_scale, key ? t->g + i * seq : NULL, &sum, &cnt);
        if (rc) {
            set_err(err, errlen, "head loss failed: %s", shoal_strerror(rc));
            return rc;
        }
        *loss_sum += sum;
        *count += cnt;
    }
    if (key && (rc = b->backward(b->self, key, m, T, t->g))) {
        set_err(err, errlen, "backward failed: %s (%s)", b->error(b->self), shoal_strerror(rc));
        return rc;
    }
    return 0;
}

int shoal_trainer_step(shoal_trainer *t, const shoal_train_blocks *b, int64_t step, float lr,
                       double *loss, char *err, size_t errlen)
{
    if (step < 1) {
        set_err(err, errlen, "step %lld: steps count from 1", (long long)step);
        return SHOAL_ERR_ARG;
    }
    const int T = t->p.seq_len;
    const size_t W = (size_t)T + (t->bos >= 0 ? 0 : 1);
    const size_t range = t->n - W + 1;
    const int total = t->p.batch * T;
    double sum = 0;
    long count = 0;
    for (int done = 0, mb = 0; done < t->p.batch; mb++) {
        int m = t->p.batch - done < t->p.micro_batch ? t->p.batch - done : t->p.micro_batch;
        for (int i = 0; i < m; i++) {
            uint64_t r = shoal_lora_seed_mix(t->p.seed, (uint64_t)step, (uint64_t)(done + i));
            fill_seq(t, i, (size_t)(shoal_lora_rand_u64(&r) % range));
        }
        uint64_t key = ((uint64_t)step << 20) | (uint64_t)(mb + 1);
        int rc = run_micro(t, b, key, m, 1.0f / (float)total, &sum, &count, err, errlen);
        if (rc)
            return rc;
        done += m;
    }
    int rc = b->step(b->self, step, lr);
    if (rc) {
        set_err(err, errlen, "optimizer step failed: %s (%s)", b->error(b->self),
                shoal_strerror(rc));
        return rc;
    }
    *loss = count ? sum / (double)count : 0.0;
    return 0;
}

int shoal_trainer_eval(shoal_trainer *t, const shoal_train_blocks *b, int max_windows,
                       double *loss, char *err, size_t errlen)
{
    const int T = t->p.seq_len;
    const size_t W = (size_t)T + (t->bos >= 0 ? 0 : 1);
    size_t windows = (t->n - W) / (size_t)T + 1;
    if (max_windows > 0 && windows > (size_t)max_windows)
        windows = (size_t)max_windows;
    double sum = 0;
    long count = 0;
    for (size_t done = 0; done < windows;) {
        int m = windows - done < (size_t)t->p.micro_batch ? (int)(windows - done)
                                                           : t->p.micro_batch;
        for (int i = 0; i < m; i++)
            fill_seq(t, i, (done + (size_t)i) * (size_t)T);
        int rc = run_micro(t, b, 0, m, 1.0f, &sum, &count, err, errlen);
        if (rc)
            return rc;
        done += (size_t)m;
    }
    *loss = count ? sum / (double)count : 0.0;
    return 0;
}
