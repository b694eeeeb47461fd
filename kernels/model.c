/*
 * Llama-family forward pass over a span of blocks (see model.h).
 *
 * Per block, for n tokens at positions pos..pos+n-1 (x is the residual
 * stream, shapes in comments):
 *   xb  = rmsnorm(x) * attn_norm                       (n, dim)
 *   q,k,v = Wq xb, Wk xb, Wv xb                        (n, H*hd), (n, Hkv*hd)
 *   rope(q, k); K/V rows appended to the cache
 *   att = softmax(q k^T / sqrt(hd)) v  per head, causal (n, H*hd)
 *   x  += Wo att
 *   xb  = rmsnorm(x) * ffn_norm
 *   x  += Wdown (silu(Wgate xb) * Wup xb)
 * Matmuls are split by rows across the pool, attention by (token, head).
 * Every op computes each token independently in a fixed order, which is
 * what makes batch and single-token results identical.
 */
#include "kernels/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/err.h"
#include "kernels/matmul.h"
#include "kernels/pool.h"
#include "kernels/types.h"

#define MAX_LAYERS 4096
#define MAX_DIM (1 << 20)
#define MAX_VOCAB (1 << 22)

typedef struct block_weights {
    shoal_block_w v;     /* the public view; norms point at the copies below */
    float *attn_norm;    /* (dim), owned */
    float *ffn_norm;     /* (dim), owned */
} block_weights;

struct shoal_model {
    const shoal_gguf *g;
    shoal_hparams hp;
    int b0, b1;
    unsigned parts;
    block_weights *blocks;  /* b1 - b0 */
    shoal_head_w head;      /* embd (n_vocab, dim) rows, out_norm, out */
    float *out_norm;        /* (dim), owned; head.out_norm points here */
};

struct shoal_kv {
    int n_layers, capacity, len;
    int row;          /* floats per position: Hkv*hd */
    float *k;         /* (layers, capacity, row) */
    float *v;         /* (layers, capacity, row) */
};

struct shoal_fwd {
    const shoal_model *m;
    shoal_pool *pool;
    int max_batch, max_ctx;
    float *xb;        /* (B, dim) */
    float *q;         /* (B, H*hd) */
    float *k;         /* (B, Hkv*hd) */
    float *v;         /* (B, Hkv*hd) */
    float *att;       /* (B, H*hd) */
    float *hb;        /* (B, ffn) */
    float *hb2;       /* (B, ffn) */
    float *tmp;       /* (B, max(dim, ffn)) matmul outputs before residual add */
    float *rope;      /* (B, rope_dim/2, 2) cos, sin */
    float *scores;    /* (threads, max_ctx) */
    void *act;        /* prepared activations, act_cap bytes */
    size_t act_cap;
    /* LoRA pairs (shoal_fwd_set_lora): lora[(l - lora_b0) * 7 + proj] */
    const shoal_fwd_lora *lora;
    int lora_b0;
    float *lora_u;    /* (lora_rank) A x of one token */
    int lora_rank;
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

static int get_u32_arch(const shoal_gguf *g, const char *arch, const char *key, uint32_t *v,
                        bool required, char *err, size_t errlen)
{
    char full[256];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = shoal_gguf_get_u32(g, full, v);
    if (rc == SHOAL_ERR_NOTFOUND && !required)
        return 0;
    if (rc)
        set_err(err, errlen, "%s: %s", full, rc == SHOAL_ERR_NOTFOUND ? "missing" : "bad value");
    return rc;
}

static int get_f32_arch(const shoal_gguf *g, const char *arch, const char *key, float *v,
                        char *err, size_t errlen)
{
    char full[256];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = shoal_gguf_get_f32(g, full, v);
    if (rc == SHOAL_ERR_NOTFOUND)
        return 0;
    if (rc)
        set_err(err, errlen, "%s: bad value", full);
    return rc;
}

int shoal_hparams_read(const shoal_gguf *g, shoal_hparams *hp, char *err, size_t errlen)
{
    const char *arch = NULL;
    if (shoal_gguf_get_str(g, "general.architecture", &arch) != 0) {
        set_err(err, errlen, "general.architecture missing");
        return SHOAL_ERR_FORMAT;
    }
    if (strcmp(arch, "llama") != 0) {
        set_err(err, errlen, "architecture '%.64s' is not supported (only llama)", arch);
        return SHOAL_ERR_UNSUPPORTED;
    }
    uint32_t dim = 0, ffn = 0, n_layer = 0, n_head = 0, n_head_kv = 0, rope_dim = 0, ctx = 0;
    int rc;
    if ((rc = get_u32_arch(g, arch, "embedding_length", &dim, true, err, errlen)) ||
        (rc = get_u32_arch(g, arch, "feed_forward_length", &ffn, true, err, errlen)) ||
        (rc = get_u32_arch(g, arch, "block_count", &n_layer, true, err, errlen)) ||
        (rc = get_u32_arch(g, arch, "attention.head_count", &n_head, true, err, errlen)) ||
        (rc = get_u32_arch(g, arch, "context_length", &ctx, true, err, errlen)))
        return rc;
    n_head_kv = n_head;
    if ((rc = get_u32_arch(g, arch, "attention.head_count_kv", &n_head_kv, false, err, errlen)))
        return rc;
    if (dim < 1 || dim > MAX_DIM || ffn < 1 || ffn > 4 * MAX_DIM || n_layer < 1 ||
        n_layer > MAX_LAYERS || n_head < 1 || n_head > dim || dim % n_head ||
        n_head_kv < 1 || n_head % n_head_kv || ctx < 1) {
        set_err(err, errlen,
                "inconsistent hyper-parameters (dim %u, ffn %u, blocks %u, heads %u/%u, ctx %u)",
                dim, ffn, n_layer, n_head, n_head_kv, ctx);
        return SHOAL_ERR_FORMAT;
    }
    uint32_t head_dim = dim / n_head;
    rope_dim = head_dim;
    if ((rc = get_u32_arch(g, arch, "rope.dimension_count", &rope_dim, false, err, errlen)))
        return rc;
    if (rope_dim < 2 || rope_dim > head_dim || rope_dim % 2) {
        set_err(err, errlen, "rope.dimension_count %u does not fit head size %u", rope_dim,
                head_dim);
        return SHOAL_ERR_FORMAT;
    }
    float eps = 1e-5f, theta = 10000.0f, scale = 1.0f;
    if ((rc = get_f32_arch(g, arch, "attention.layer_norm_rms_epsilon", &eps, err, errlen)) ||
        (rc = get_f32_arch(g, arch, "rope.freq_base", &theta, err, errlen)) ||
        (rc = get_f32_arch(g, arch, "rope.scaling.factor", &scale, err, errlen)))
        return rc;
    if (!(eps > 0 && eps < 1) || !(theta > 1) || !(scale >= 1 && scale < 1e6f))
        scale = scale == 0 ? 1 : scale; /* 0 means "none" in some converters */
    if (!(eps > 0 && eps < 1) || !(theta > 1) || !(scale >= 1 && scale < 1e6f)) {
        set_err(err, errlen, "bad rms epsilon, rope base or rope scaling");
        return SHOAL_ERR_FORMAT;
    }
    const char *stype = NULL;
    char full[256];
    snprintf(full, sizeof full, "%s.rope.scaling.type", arch);
    if (shoal_gguf_get_str(g, full, &stype) == 0 && strcmp(stype, "none") != 0 &&
        strcmp(stype, "linear") != 0) {
        set_err(err, errlen, "rope scaling '%.32s' is not supported", stype);
        return SHOAL_ERR_UNSUPPORTED;
    }
    int64_t embd = shoal_gguf_find_tensor(g, "token_embd.weight");
    if (embd < 0) {
        set_err(err, errlen, "tensor token_embd.weight missing");
        return SHOAL_ERR_FORMAT;
    }
    const shoal_gguf_tensor *te = shoal_gguf_tensor_at(g, embd);
    if (te->n_dims != 2 || te->ne[0] != dim || te->ne[1] < 1 || te->ne[1] > MAX_VOCAB) {
        set_err(err, errlen, "token_embd.weight has the wrong shape");
        return SHOAL_ERR_FORMAT;
    }
    memset(hp, 0, sizeof *hp);
    hp->n_vocab = (int)te->ne[1];
    hp->dim = (int)dim;
    hp->ffn = (int)ffn;
    hp->n_layer = (int)n_layer;
    hp->n_head = (int)n_head;
    hp->n_head_kv = (int)n_head_kv;
    hp->head_dim = (int)head_dim;
    hp->rope_dim = (int)rope_dim;
    hp->ctx_train = (int)ctx;
    hp->rms_eps = eps;
    hp->rope_theta = theta;
    hp->rope_freq_scale = 1.0f / scale;
    return 0;
}

/* Finds a 2-D weight with ne = {k, n} and fills m. */
static int load_mat(const shoal_gguf *g, const char *name, int64_t k, int64_t n, shoal_mat *m,
                    char *err, size_t errlen)
{
    int64_t i = shoal_gguf_find_tensor(g, name);
    if (i < 0) {
        set_err(err, errlen, "tensor %s missing", name);
        return SHOAL_ERR_FORMAT;
    }
    const shoal_gguf_tensor *t = shoal_gguf_tensor_at(g, i);
    if (t->n_dims != 2 || t->ne[0] != k || t->ne[1] != n) {
        set_err(err, errlen, "tensor %s has shape [%lld, %lld], expected [%lld, %lld]", name,
                (long long)t->ne[0], (long long)t->ne[1], (long long)k, (long long)n);
        return SHOAL_ERR_FORMAT;
    }
    m->type = t->type;
    m->k = k;
    m->n = n;
    m->data = shoal_gguf_tensor_data(g, i);
    return 0;
}

/* Copies a 1-D weight of length n as f32. */
static int load_vec(const shoal_gguf *g, const char *name, int64_t n, float **out, char *err,
                    size_t errlen)
{
    int64_t i = shoal_gguf_find_tensor(g, name);
    if (i < 0) {
        set_err(err, errlen, "tensor %s missing", name);
        return SHOAL_ERR_FORMAT;
    }
    const shoal_gguf_tensor *t = shoal_gguf_tensor_at(g, i);
    if (t->n_dims != 1 || t->ne[0] != n || shoal_type_row_bytes(t->type, n) == 0) {
        set_err(err, errlen, "tensor %s has the wrong shape or type", name);
        return SHOAL_ERR_FORMAT;
    }
    float *v = malloc((size_t)n * sizeof *v);
    if (!v) {
        set_err(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    shoal_dequantize_row(t->type, shoal_gguf_tensor_data(g, i), v, n);
    *out = v;
    return 0;
}

int shoal_model_open(const shoal_gguf *g, int block_begin, int block_end, unsigned parts,
                     shoal_model **out, char *err, size_t errlen)
{
    *out = NULL;
    shoal_model *m = calloc(1, sizeof *m);
    if (!m) {
        set_err(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    int rc = shoal_hparams_read(g, &m->hp, err, errlen);
    if (rc)
        goto err;
    const shoal_hparams *hp = &m->hp;
    if (block_begin < 0 || block_end < block_begin || block_end > hp->n_layer) {
        set_err(err, errlen, "blocks %d:%d are outside the model's 0:%d", block_begin,
                block_end, hp->n_layer);
        rc = SHOAL_ERR_RANGE;
        goto err;
    }
    m->g = g;
    m->b0 = block_begin;
    m->b1 = block_end;
    m->parts = parts;
    int64_t dim = hp->dim, qdim = (int64_t)hp->n_head * hp->head_dim,
            kvdim = (int64_t)hp->n_head_kv * hp->head_dim;
    if (block_end > block_begin) {
        m->blocks = calloc((size_t)(block_end - block_begin), sizeof *m->blocks);
        if (!m->blocks) {
            rc = SHOAL_ERR_NOMEM;
            set_err(err, errlen, "out of memory");
            goto err;
        }
    }
    for (int l = block_begin; l < block_end; l++) {
        block_weights *b = &m->blocks[l - block_begin];
        char name[96];
        static const char *const proj_names[SHOAL_PROJ__COUNT] = {
            "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
        const int64_t ins[SHOAL_PROJ__COUNT] = {dim, dim, dim, qdim, dim, dim, hp->ffn};
        const int64_t outs[SHOAL_PROJ__COUNT] = {qdim, kvdim, kvdim, dim, hp->ffn, hp->ffn, dim};
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, proj_names[p]);
            if ((rc = load_mat(g, name, ins[p], outs[p], &b->v.w[p], err, errlen)))
                goto err;
        }
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        if ((rc = load_vec(g, name, dim, &b->attn_norm, err, errlen)))
            goto err;
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        if ((rc = load_vec(g, name, dim, &b->ffn_norm, err, errlen)))
            goto err;
        b->v.attn_norm = b->attn_norm;
        b->v.ffn_norm = b->ffn_norm;
    }
    if ((parts & SHOAL_PART_EMBED) &&
        (rc = load_mat(g, "token_embd.weight", dim, hp->n_vocab, &m->head.embd, err, errlen)))
        goto err;
    if (parts & SHOAL_PART_HEAD) {
        if ((rc = load_vec(g, "output_norm.weight", dim, &m->out_norm, err, errlen)))
            goto err;
        const char *head = shoal_gguf_find_tensor(g, "output.weight") >= 0 ? "output.weight"
                                                                          : "token_embd.weight";
        if ((rc = load_mat(g, head, dim, hp->n_vocab, &m->head.out, err, errlen)))
            goto err;
        m->head.out_norm = m->out_norm;
    }
    *out = m;
    return 0;
err:
    shoal_model_destroy(&m);
    return rc;
}

void shoal_model_destroy(shoal_model **mp)
{
    if (!mp || !*mp)
        return;
    shoal_model *m = *mp;
    if (m->blocks) {
        for (int l = 0; l < m->b1 - m->b0; l++) {
            free(m->blocks[l].attn_norm);
            free(m->blocks[l].ffn_norm);
        }
        free(m->blocks);
    }
    free(m->out_norm);
    free(m);
    *mp = NULL;
}

const shoal_hparams *shoal_model_hparams(const shoal_model *m) { return &m->hp; }
int shoal_model_block_begin(const shoal_model *m) { return m->b0; }

const shoal_block_w *shoal_model_block(const shoal_model *m, int layer)
{
    if (layer < m->b0 || layer >= m->b1)
        return NULL;
    return &m->blocks[layer - m->b0].v;
}

const shoal_head_w *shoal_model_head(const shoal_model *m) { return &m->head; }
int shoal_model_block_end(const shoal_model *m) { return m->b1; }

static uint64_t mat_bytes(const shoal_mat *w)
{
    return w->data ? (uint64_t)shoal_type_row_bytes(w->type, w->k) * (uint64_t)w->n : 0;
}

int shoal_model_weight_type(const shoal_model *m)
{
    if (m->b1 > m->b0)
        return m->blocks[0].v.w[SHOAL_PROJ_GATE].type;
    if (m->head.out.data)
        return m->head.out.type;
    return m->head.embd.data ? m->head.embd.type : SHOAL_TYPE_F32;
}

uint64_t shoal_model_weight_bytes(const shoal_model *m)
{
    uint64_t sum = 0;
    for (int l = 0; l < m->b1 - m->b0; l++) {
        const block_weights *b = &m->blocks[l];
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++)
            sum += mat_bytes(&b->v.w[p]);
    }
    return sum + mat_bytes(&m->head.out);
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif
#define PREFAULT_CHUNK ((size_t)16 << 20)

/* Brings [p, p + n) into memory: one call that fills the page tables where
 * the kernel can, else read-ahead and one read per page. */
static void prefault_range(const uint8_t *p, size_t n, size_t page)
{
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(page - 1);
    size_t len = (size_t)((uintptr_t)p + n - a);
    if (madvise((void *)a, len, MADV_POPULATE_READ) == 0)
        return;
    madvise((void *)a, len, MADV_WILLNEED);
    volatile uint8_t sink = 0;
    for (size_t off = 0; off < n; off += page)
        sink ^= p[off];
    sink ^= p[n - 1];
    (void)sink;
}

void shoal_model_prefault(const shoal_model *m, shoal_progress_fn progress, void *ctx)
{
    long ps = sysconf(_SC_PAGESIZE);
    size_t page = ps > 0 ? (size_t)ps : 4096;
    uint64_t total = shoal_model_weight_bytes(m), done = 0;
    int nmat = (m->b1 - m->b0) * SHOAL_PROJ__COUNT + 1;
    for (int i = 0; i < nmat; i++) {
        const shoal_mat *w = i < nmat - 1
                                 ? &m->blocks[i / SHOAL_PROJ__COUNT].v.w[i % SHOAL_PROJ__COUNT]
                                 : &m->head.out;
        uint64_t n = mat_bytes(w);
        for (uint64_t off = 0; off < n; off += PREFAULT_CHUNK) {
            size_t len = n - off < PREFAULT_CHUNK ? (size_t)(n - off) : PREFAULT_CHUNK;
            prefault_range((const uint8_t *)w->data + off, len, page);
            done += len;
            if (progress)
                progress(ctx, done, total);
        }
    }
}

/* ---- KV cache ---------------------------------------------------------- */

size_t shoal_kv_bytes_per_token(const shoal_model *m)
{
    return (size_t)(m->b1 - m->b0) * 2 * (size_t)m->hp.n_head_kv * (size_t)m->hp.head_dim *
           sizeof(float);
}

shoal_kv *shoal_kv_new(const shoal_model *m, int capacity)
{
    if (capacity < 1)
        return NULL;
    shoal_kv *kv = calloc(1, sizeof *kv);
    if (!kv)
        return NULL;
    kv->n_layers = m->b1 - m->b0;
    kv->capacity = capacity;
    kv->row = m->hp.n_head_kv * m->hp.head_dim;
    size_t n = (size_t)kv->n_layers * (size_t)capacity * (size_t)kv->row;
    if (n) {
        kv->k = malloc(n * sizeof(float));
        kv->v = malloc(n * sizeof(float));
        if (!kv->k || !kv->v) {
            shoal_kv_destroy(&kv);
            return NULL;
        }
    }
    return kv;
}

void shoal_kv_destroy(shoal_kv **kvp)
{
    if (!kvp || !*kvp)
        return;
    free((*kvp)->k);
    free((*kvp)->v);
    free(*kvp);
    *kvp = NULL;
}

int shoal_kv_len(const shoal_kv *kv) { return kv->len; }
int shoal_kv_capacity(const shoal_kv *kv) { return kv->capacity; }

void shoal_kv_truncate(shoal_kv *kv, int n)
{
    if (n >= 0 && n < kv->len)
        kv->len = n;
}

static float *kv_at(float *base, const shoal_kv *kv, int l, int p)
{
    return base + ((size_t)l * (size_t)kv->capacity + (size_t)p) * (size_t)kv->row;
}

const float *shoal_kv_k(const shoal_kv *kv, int l, int p) { return kv_at(kv->k, kv, l, p); }
const float *shoal_kv_v(const shoal_kv *kv, int l, int p) { return kv_at(kv->v, kv, l, p); }

/* ---- forward ----------------------------------------------------------- */

static size_t act_need(const shoal_model *m, int max_batch)
{
    size_t need = 0;
    for (int l = 0; l < m->b1 - m->b0; l++) {
        const block_weights *b = &m->blocks[l];
        for (int i = 0; i < SHOAL_PROJ__COUNT; i++) {
            size_t s = shoal_act_bytes(b->v.w[i].type, b->v.w[i].k, max_batch);
            need = s > need ? s : need;
        }
    }
    if (m->head.out.data) {
        size_t s = shoal_act_bytes(m->head.out.type, m->head.out.k, max_batch);
        need = s > need ? s : need;
    }
    return need;
}

shoal_fwd *shoal_fwd_new(const shoal_model *m, int max_batch, int max_ctx, int n_threads)
{
    if (max_batch < 1 || max_ctx < 1 || n_threads < 1)
        return NULL;
    shoal_fwd *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    const shoal_hparams *hp = &m->hp;
    size_t B = (size_t)max_batch;
    size_t qdim = (size_t)hp->n_head * hp->head_dim, kvdim = (size_t)hp->n_head_kv * hp->head_dim;
    size_t wide = (size_t)(hp->ffn > hp->dim ? hp->ffn : hp->dim);
    f->m = m;
    f->max_batch = max_batch;
    f->max_ctx = max_ctx;
    f->pool = shoal_pool_new(n_threads);
    f->xb = malloc(B * hp->dim * sizeof(float));
    f->q = malloc(B * qdim * sizeof(float));
    f->k = malloc(B * kvdim * sizeof(float));
    f->v = malloc(B * kvdim * sizeof(float));
    f->att = malloc(B * qdim * sizeof(float));
    f->hb = malloc(B * hp->ffn * sizeof(float));
    f->hb2 = malloc(B * hp->ffn * sizeof(float));
    f->tmp = malloc(B * wide * sizeof(float));
    f->rope = malloc(B * (size_t)hp->rope_dim * sizeof(float));
    f->scores = malloc((size_t)n_threads * (size_t)max_ctx * sizeof(float));
    f->act_cap = act_need(m, max_batch);
    f->act = f->act_cap ? malloc(f->act_cap) : NULL;
    if (!f->pool || !f->xb || !f->q || !f->k || !f->v || !f->att || !f->hb || !f->hb2 ||
        !f->tmp || !f->rope || !f->scores || (f->act_cap && !f->act)) {
        shoal_fwd_destroy(&f);
        return NULL;
    }
    return f;
}

void shoal_fwd_destroy(shoal_fwd **fp)
{
    if (!fp || !*fp)
        return;
    shoal_fwd *f = *fp;
    shoal_pool_destroy(&f->pool);
    free(f->xb);
    free(f->q);
    free(f->k);
    free(f->v);
    free(f->att);
    free(f->hb);
    free(f->hb2);
    free(f->tmp);
    free(f->rope);
    free(f->scores);
    free(f->act);
    free(f->lora_u);
    free(f);
    *fp = NULL;
}

int shoal_fwd_max_batch(const shoal_fwd *f) { return f->max_batch; }

int shoal_fwd_embed(shoal_fwd *f, const int32_t *tokens, int n, float *x)
{
    return shoal_model_embed(f->m, tokens, n, x);
}

int shoal_model_embed(const shoal_model *m, const int32_t *tokens, int n, float *x)
{
    if (!m->head.embd.data)
        return SHOAL_ERR_ARG;
    size_t row = shoal_type_row_bytes(m->head.embd.type, m->head.embd.k);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= m->hp.n_vocab)
            return SHOAL_ERR_RANGE;
    for (int t = 0; t < n; t++)
        shoal_dequantize_row(m->head.embd.type, (const char *)m->head.embd.data + (size_t)tokens[t] * row,
                             x + (size_t)t * m->hp.dim, m->hp.dim);
    return 0;
}

/* o = w * (x / rms(x)), llama2.c's order of operations. */
static void rmsnorm(float *o, const float *x, const float *w, int n, float eps)
{
    float ss = shoal_dot_f32(x, x, n);
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int i = 0; i < n; i++)
        o[i] = w[i] * (ss * x[i]);
}

typedef struct matmul_job {
    const shoal_mat *w;
    const float *x;
    const void *act;
    int ntok;
    float *y;
} matmul_job;

static void matmul_task(void *ctx, int ith, int nth)
{
    matmul_job *j = ctx;
    long r0, r1;
    shoal_pool_split(j->w->n, 32, ith, nth, &r0, &r1);
    if (r1 > r0)
        shoal_matmul(j->w, j->x, j->act, j->ntok, j->y, j->w->n, r0, r1);
}

typedef struct prep_job {
    int type;
    const float *x;
    int64_t k;
    int ntok;
    void *act;
} prep_job;

static void prep_task(void *ctx, int ith, int nth)
{
    prep_job *j = ctx;
    long t0, t1;
    shoal_pool_split(j->ntok, 1, ith, nth, &t0, &t1);
    if (t1 > t0)
        shoal_act_prepare_range(j->type, j->x, j->k, j->ntok, (int)t0, (int)t1, j->act);
}

/* y (n, w->n) = W x (n, w->k), threaded. `prepared` tracks which input the
 * activation scratch holds so that q, k and v share one quantization. */
static void fwd_matmul(shoal_fwd *f, const shoal_mat *w, const float *x, int n, float *y,
                       const float **prepared, int *prepared_type)
{
    const void *act = NULL;
    if (shoal_act_bytes(w->type, w->k, n) > 0) {
        if (*prepared != x || *prepared_type != w->type ||
            shoal_act_bytes(*prepared_type, w->k, n) != shoal_act_bytes(w->type, w->k, n)) {
            if (n >= 4 && shoal_pool_size(f->pool) > 1) {
                prep_job pj = {w->type, x, w->k, n, f->act};
                shoal_pool_run(f->pool, prep_task, &pj);
            } else {
                shoal_act_prepare(w->type, x, w->k, n, f->act);
            }
            *prepared = x;
            *prepared_type = w->type;
        }
        act = f->act;
    }
    matmul_job j = {w, x, act, n, y};
    shoal_pool_run(f->pool, matmul_task, &j);
}

static void rope_tables(shoal_fwd *f, int pos, int n)
{
    const shoal_hparams *hp = &f->m->hp;
    int half = hp->rope_dim / 2;
    for (int t = 0; t < n; t++) {
        float *cs = f->rope + (size_t)t * hp->rope_dim;
        for (int i = 0; i < half; i++) {
            float freq = 1.0f / powf(hp->rope_theta, (float)(2 * i) / (float)hp->rope_dim);
            float val = (float)(pos + t) * hp->rope_freq_scale * freq;
            cs[2 * i] = cosf(val);
            cs[2 * i + 1] = sinf(val);
        }
    }
}

/* Rotates adjacent pairs of the first rope_dim dims of each head. */
static void rope_apply(const shoal_fwd *f, float *v, int n_heads, int t)
{
    const shoal_hparams *hp = &f->m->hp;
    const float *cs = f->rope + (size_t)t * hp->rope_dim;
    for (int h = 0; h < n_heads; h++) {
        float *x = v + (size_t)h * hp->head_dim;
        for (int i = 0; i < hp->rope_dim / 2; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1];
            float a = x[2 * i], b = x[2 * i + 1];
            x[2 * i] = a * c - b * s;
            x[2 * i + 1] = a * s + b * c;
        }
    }
}

typedef struct attn_job {
    shoal_fwd *f;
    const shoal_kv *kv;
    int layer, pos, n;
} attn_job;

static void attn_task(void *ctx, int ith, int nth)
{
    attn_job *j = ctx;
    shoal_fwd *f = j->f;
    const shoal_hparams *hp = &f->m->hp;
    const int H = hp->n_head, hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    float *scores = f->scores + (size_t)ith * f->max_ctx;
    long b, e;
    shoal_pool_split((long)j->n * H, 1, ith, nth, &b, &e);
    for (long it = b; it < e; it++) {
        int t = (int)(it / H), h = (int)(it % H), kvh = h / group;
        int last = j->pos + t;
        const float *q = f->q + ((size_t)t * H + h) * hd;
        float max = -INFINITY;
        for (int p = 0; p <= last; p++) {
            const float *k = shoal_kv_k(j->kv, j->layer, p) + (size_t)kvh * hd;
            float s = shoal_dot_f32(q, k, hd) * scale;
            scores[p] = s;
            max = s > max ? s : max;
        }
        float sum = 0;
        for (int p = 0; p <= last; p++) {
            scores[p] = expf(scores[p] - max);
            sum += scores[p];
        }
        for (int p = 0; p <= last; p++)
            scores[p] /= sum;
        float *o = f->att + ((size_t)t * H + h) * hd;
        memset(o, 0, (size_t)hd * sizeof *o);
        for (int p = 0; p <= last; p++) {
            const float *v = shoal_kv_v(j->kv, j->layer, p) + (size_t)kvh * hd;
            float a = scores[p];
            for (int d = 0; d < hd; d++)
                o[d] += a * v[d];
        }
    }
}

/* ---- LoRA at inference -------------------------------------------------- */


int shoal_fwd_set_lora(shoal_fwd *f, const shoal_fwd_lora *lora, int b0, int b1)
{
    const shoal_model *m = f->m;
    if (!lora) {
        f->lora = NULL;
        return 0;
    }
    if (b0 < 0 || b0 > m->b0 || b1 < m->b1 || b1 > m->hp.n_layer)
        return SHOAL_ERR_ARG;
    int max_rank = 0;
    for (int l = m->b0; l < m->b1; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            const shoal_fwd_lora *x = &lora[(size_t)(l - b0) * SHOAL_PROJ__COUNT + (size_t)p];
            if (x->rank < 0 || x->rank > MAX_DIM || (x->rank > 0 && (!x->a || !x->b)))
                return SHOAL_ERR_ARG;
            max_rank = x->rank > max_rank ? x->rank : max_rank;
        }
    if (max_rank > f->lora_rank) {
        float *u = realloc(f->lora_u, (size_t)max_rank * sizeof *u);
        if (!u)
            return SHOAL_ERR_NOMEM;
        f->lora_u = u;
        f->lora_rank = max_rank;
    }
    f->lora = lora;
    f->lora_b0 = b0;
    return 0;
}

/* y (n, out) += scale * B (A x (n, in)) for projection p of span block l. */
static void fwd_lora(shoal_fwd *f, int l, int p, const float *x, int in, int n, float *y,
                     int out)
{
    if (!f->lora)
        return;
    const shoal_fwd_lora *lo =
        &f->lora[(size_t)(f->m->b0 + l - f->lora_b0) * SHOAL_PROJ__COUNT + (size_t)p];
    const int r = lo->rank;
    if (r == 0)
        return;
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * in;
        float *yt = y + (size_t)t * out;
        for (int i = 0; i < r; i++)
            f->lora_u[i] = shoal_dot_f32(lo->a + (size_t)i * in, xt, in);
        for (int o = 0; o < out; o++)
            yt[o] += lo->scale * shoal_dot_f32(lo->b + (size_t)o * r, f->lora_u, r);
    }
}

int shoal_fwd_blocks(shoal_fwd *f, shoal_kv *kv, int pos, int n, float *x)
{
    const shoal_model *m = f->m;
    const shoal_hparams *hp = &m->hp;
    if (n < 1 || n > f->max_batch || pos < 0 || pos > kv->len)
        return SHOAL_ERR_ARG;
    if (pos + n > kv->capacity || pos + n > f->max_ctx)
        return SHOAL_ERR_CONTEXT;
    if (kv->n_layers != m->b1 - m->b0)
        return SHOAL_ERR_ARG;
    const int dim = hp->dim, ffn = hp->ffn;
    const int qdim = hp->n_head * hp->head_dim, kvdim = hp->n_head_kv * hp->head_dim;
    rope_tables(f, pos, n);
    for (int l = 0; l < m->b1 - m->b0; l++) {
        const block_weights *b = &m->blocks[l];
        const float *prepared = NULL;
        int prepared_type = -1;
        for (int t = 0; t < n; t++)
            rmsnorm(f->xb + (size_t)t * dim, x + (size_t)t * dim, b->attn_norm, dim, hp->rms_eps);
        fwd_matmul(f, &b->v.w[SHOAL_PROJ_Q], f->xb, n, f->q, &prepared, &prepared_type);
        fwd_matmul(f, &b->v.w[SHOAL_PROJ_K], f->xb, n, f->k, &prepared, &prepared_type);
        fwd_matmul(f, &b->v.w[SHOAL_PROJ_V], f->xb, n, f->v, &prepared, &prepared_type);
        fwd_lora(f, l, SHOAL_PROJ_Q, f->xb, dim, n, f->q, qdim);
        fwd_lora(f, l, SHOAL_PROJ_K, f->xb, dim, n, f->k, kvdim);
        fwd_lora(f, l, SHOAL_PROJ_V, f->xb, dim, n, f->v, kvdim);
        for (int t = 0; t < n; t++) {
            rope_apply(f, f->q + (size_t)t * qdim, hp->n_head, t);
            rope_apply(f, f->k + (size_t)t * kvdim, hp->n_head_kv, t);
            memcpy(kv_at(kv->k, kv, l, pos + t), f->k + (size_t)t * kvdim, kvdim * sizeof(float));
            memcpy(kv_at(kv->v, kv, l, pos + t), f->v + (size_t)t * kvdim, kvdim * sizeof(float));
        }
        attn_job aj = {f, kv, l, pos, n};
        shoal_pool_run(f->pool, attn_task, &aj);
        fwd_matmul(f, &b->v.w[SHOAL_PROJ_O], f->att, n, f->tmp, &prepared, &prepared_type);
        fwd_lora(f, l, SHOAL_PROJ_O, f->att, qdim, n, f->tmp, dim);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            x[i] += f->tmp[i];
        for (int t = 0; t < n; t++)
            rmsnorm(f->xb + (size_t)t * dim, x + (size_t)t * dim, b->ffn_norm, dim, hp->rms_eps);
        prepared = NULL; /* xb was rewritten */
        fwd_matmul(f, &b->v.w[SHOAL_PROJ_GATE], f->xb, n, f->hb, &prepared, &prepared_type);
        fwd_matmul(f, &b->v.w[SHOAL_PROJ_UP], f->xb, n, f->hb2, &prepared, &prepared_type);
        fwd_lora(f, l, SHOAL_PROJ_GATE, f->xb, dim, n, f->hb, ffn);
        fwd_lora(f, l, SHOAL_PROJ_UP, f->xb, dim, n, f->hb2, ffn);
        for (size_t i = 0; i < (size_t)n * ffn; i++) {
            float g = f->hb[i];
            g *= 1.0f / (1.0f + expf(-g));
            f->hb[i] = g * f->hb2[i];
        }
        fwd_matmul(f, &b->v.w[SHOAL_PROJ_DOWN], f->hb, n, f->tmp, &prepared, &prepared_type);
        fwd_lora(f, l, SHOAL_PROJ_DOWN, f->hb, ffn, n, f->tmp, dim);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            x[i] += f->tmp[i];
    }
    kv->len = pos + n;
    return 0;
}

int shoal_fwd_head(shoal_fwd *f, const float *x, int n, float *logits)
{
    const shoal_model *m = f->m;
    if (!m->head.out.data)
        return SHOAL_ERR_ARG;
    if (n < 1 || n > f->max_batch)
        return SHOAL_ERR_ARG;
    const int dim = m->hp.dim;
    for (int t = 0; t < n; t++)
        rmsnorm(f->xb + (size_t)t * dim, x + (size_t)t * dim, m->out_norm, dim, m->hp.rms_eps);
    const float *prepared = NULL;
    int prepared_type = -1;
    fwd_matmul(f, &m->head.out, f->xb, n, logits, &prepared, &prepared_type);
    return 0;
}
