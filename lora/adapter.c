/*
 * Adapter sets and their GGUF files (see adapter.h).
 *
 * Loading looks each expected pair up by name rather than trusting the
 * file's order, after one pass over every tensor name that refuses what
 * Shoal cannot apply (a LoRA on the embedding or head, an unknown suffix,
 * a block the model does not have): a file that loads is applied whole.
 */
#include "lora/adapter.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "kernels/types.h"

struct shoal_adapter {
    shoal_hparams hp;
    int b0, b1;
    float alpha;
    shoal_lora **pairs;  /* (b1 - b0, SHOAL_PROJ__COUNT), NULL where none */
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

static int adapter_alloc(const shoal_hparams *hp, int b0, int b1, float alpha,
                         shoal_adapter **out)
{
    *out = NULL;
    if (!hp || b0 < 0 || b1 < b0 || b1 > hp->n_layer || !isfinite(alpha))
        return SHOAL_ERR_ARG;
    shoal_adapter *a = calloc(1, sizeof *a);
    if (!a)
        return SHOAL_ERR_NOMEM;
    a->hp = *hp;
    a->b0 = b0;
    a->b1 = b1;
    a->alpha = alpha;
    a->pairs = calloc((size_t)(b1 - b0) * SHOAL_PROJ__COUNT + 1, sizeof *a->pairs);
    if (!a->pairs) {
        free(a);
        return SHOAL_ERR_NOMEM;
    }
    *out = a;
    return 0;
}

static shoal_lora **slot(const shoal_adapter *a, int layer, int proj)
{
    return &a->pairs[(size_t)(layer - a->b0) * SHOAL_PROJ__COUNT + (size_t)proj];
}

int shoal_adapter_new(const shoal_hparams *hp, int b0, int b1, unsigned targets, int rank,
                      float alpha, shoal_adapter **out)
{
    if ((targets & ~SHOAL_PROJ_ALL) != 0 || rank < 1)
        return SHOAL_ERR_ARG;
    int rc = adapter_alloc(hp, b0, b1, alpha, out);
    if (rc)
        return rc;
    shoal_adapter *a = *out;
    for (int l = b0; l < b1; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            if (!(targets & (1u << p)))
                continue;
            int in, o;
            shoal_proj_dims(hp, p, &in, &o);
            if ((rc = shoal_lora_new(in, o, rank, alpha, slot(a, l, p)))) {
                shoal_adapter_destroy(out);
                return rc;
            }
        }
    return 0;
}

void shoal_adapter_destroy(shoal_adapter **ap)
{
    if (!ap || !*ap)
        return;
    shoal_adapter *a = *ap;
    for (size_t i = 0; i < (size_t)(a->b1 - a->b0) * SHOAL_PROJ__COUNT; i++)
        shoal_lora_destroy(&a->pairs[i]);
    free(a->pairs);
    free(a);
    *ap = NULL;
}

void shoal_adapter_init(shoal_adapter *a, uint64_t seed)
{
    for (int l = a->b0; l < a->b1; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++)
            if (*slot(a, l, p))
                shoal_lora_init(*slot(a, l, p),
                                shoal_lora_seed_mix(seed, (uint64_t)l, (uint64_t)p));
}

int shoal_adapter_block_begin(const shoal_adapter *a) { return a->b0; }
int shoal_adapter_block_end(const shoal_adapter *a) { return a->b1; }
float shoal_adapter_alpha(const shoal_adapter *a) { return a->alpha; }

unsigned shoal_adapter_targets(const shoal_adapter *a)
{
    unsigned m = 0;
    for (int l = a->b0; l < a->b1; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++)
            if (*slot(a, l, p))
                m |= 1u << p;
    return m;
}

int shoal_adapter_max_rank(const shoal_adapter *a)
{
    int r = 0;
    for (int l = a->b0; l < a->b1; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++)
            if (*slot(a, l, p) && shoal_lora_rank(*slot(a, l, p)) > r)
                r = shoal_lora_rank(*slot(a, l, p));
    return r;
}

size_t shoal_adapter_n_params(const shoal_adapter *a)
{
    size_t n = 0;
    for (int l = a->b0; l < a->b1; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            const shoal_lora *x = *slot(a, l, p);
            if (x)
                n += (size_t)shoal_lora_rank(x) *
                     ((size_t)shoal_lora_in(x) + (size_t)shoal_lora_out(x));
        }
    return n;
}

int shoal_adapter_n_pairs(const shoal_adapter *a)
{
    int n = 0;
    for (int l = a->b0; l < a->b1; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++)
            n += *slot(a, l, p) != NULL;
    return n;
}

shoal_lora *shoal_adapter_lora(const shoal_adapter *a, int layer, int proj)
{
    if (layer < a->b0 || layer >= a->b1 || proj < 0 || proj >= SHOAL_PROJ__COUNT)
        return NULL;
    return *slot(a, layer, proj);
}

void shoal_adapter_views(const shoal_adapter *a, int layer, shoal_lora_view *views)
{
    for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
        shoal_lora *x = shoal_adapter_lora(a, layer, p);
        if (x)
            views[p] = shoal_lora_view_of(x);
        else
            views[p] = (shoal_lora_view){0};
    }
}

void shoal_adapter_zero_grad(shoal_adapter *a)
{
    for (size_t i = 0; i < (size_t)(a->b1 - a->b0) * SHOAL_PROJ__COUNT; i++)
        if (a->pairs[i])
            shoal_lora_zero_grad(a->pairs[i]);
}

int shoal_adapter_add_to_optimizer(shoal_adapter *a, shoal_adamw *opt)
{
    for (size_t i = 0; i < (size_t)(a->b1 - a->b0) * SHOAL_PROJ__COUNT; i++) {
        shoal_lora *x = a->pairs[i];
        if (!x)
            continue;
        size_t r = (size_t)shoal_lora_rank(x);
        int rc = shoal_adamw_add(opt, shoal_lora_a(x), shoal_lora_da(x),
                                 r * (size_t)shoal_lora_in(x), NULL);
        if (!rc)
            rc = shoal_adamw_add(opt, shoal_lora_b(x), shoal_lora_db(x),
                                 r * (size_t)shoal_lora_out(x), NULL);
        if (rc)
            return rc;
    }
    return 0;
}

int shoal_adapter_copy(shoal_adapter *dst, const shoal_adapter *src)
{
    int b0 = dst->b0 > src->b0 ? dst->b0 : src->b0, b1 = dst->b1 < src->b1 ? dst->b1 : src->b1;
    for (int pass = 0; pass < 2; pass++) /* check every shape before copying anything */
        for (int l = b0; l < b1; l++)
            for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
                shoal_lora *d = *slot(dst, l, p), *s = *slot(src, l, p);
                if (!d || !s)
                    continue;
                int r = shoal_lora_rank(s);
                if (r != shoal_lora_rank(d) || shoal_lora_in(s) != shoal_lora_in(d) ||
                    shoal_lora_out(s) != shoal_lora_out(d))
                    return SHOAL_ERR_ARG;
                if (pass == 0)
                    continue;
                memcpy(shoal_lora_a(d), shoal_lora_a_const(s),
                       sizeof(float) * (size_t)r * (size_t)shoal_lora_in(s));
                memcpy(shoal_lora_b(d), shoal_lora_b_const(s),
                       sizeof(float) * (size_t)r * (size_t)shoal_lora_out(s));
            }
    return 0;
}

/* ---- files ----------------------------------------------------------------- */

int shoal_adapter_save(const shoal_adapter *a, const char *path, char *err, size_t errlen)
{
    shoal_gguf_writer *w = shoal_gguf_writer_new();
    if (!w) {
        set_err(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    int rc = 0;
    if ((rc = shoal_gguf_writer_set_str(w, "general.architecture", "llama")) ||
        (rc = shoal_gguf_writer_set_str(w, "general.type", "adapter")) ||
        (rc = shoal_gguf_writer_set_str(w, "adapter.type", "lora")) ||
        (rc = shoal_gguf_writer_set_f32(w, "adapter.lora.alpha", a->alpha))) {
        set_err(err, errlen, "cannot set adapter metadata: %s", shoal_strerror(rc));
        goto out;
    }
    for (int l = a->b0; l < a->b1; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            const shoal_lora *x = *slot(a, l, p);
            if (!x)
                continue;
            char name[96];
            int64_t ne_a[2] = {shoal_lora_in(x), shoal_lora_rank(x)};
            int64_t ne_b[2] = {shoal_lora_rank(x), shoal_lora_out(x)};
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", l, shoal_proj_name(p));
            if ((rc = shoal_gguf_writer_add_tensor(w, name, SHOAL_TYPE_F32, 2, ne_a,
                                                   shoal_lora_a_const(x))))
                goto tensor_err;
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", l, shoal_proj_name(p));
            if ((rc = shoal_gguf_writer_add_tensor(w, name, SHOAL_TYPE_F32, 2, ne_b,
                                                   shoal_lora_b_const(x))))
                goto tensor_err;
        }
    rc = shoal_gguf_writer_write(w, path, err, errlen);
    goto out;
tensor_err:
    set_err(err, errlen, "cannot add adapter tensor: %s", shoal_strerror(rc));
out:
    shoal_gguf_writer_destroy(&w);
    return rc;
}

/* Parses "blk.N.<proj>.weight.lora_a|b": 1 and fills layer/proj/is_b when
 * it is such a name, 0 otherwise. */
static int parse_name(const char *name, int *layer, int *proj, int *is_b)
{
    if (strncmp(name, "blk.", 4) != 0)
        return 0;
    const char *p = name + 4;
    long n = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 9) {
        n = n * 10 + (*p - '0');
        p++;
        digits++;
    }
    if (digits == 0 || *p != '.' || (digits > 1 && name[4] == '0'))
        return 0;
    p++;
    for (int i = 0; i < SHOAL_PROJ__COUNT; i++) {
        size_t len = strlen(shoal_proj_name(i));
        if (strncmp(p, shoal_proj_name(i), len) != 0)
            continue;
        const char *rest = p + len;
        if (strcmp(rest, ".weight.lora_a") == 0 || strcmp(rest, ".weight.lora_b") == 0) {
            *layer = (int)n;
            *proj = i;
            *is_b = rest[13] == 'b';
            return 1;
        }
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Reads tensor i (rows of ne[0] elements, ne[1] rows) into dst as f32. */
static int read_tensor(const shoal_gguf *g, int64_t i, float *dst, char *err, size_t errlen)
{
    const shoal_gguf_tensor *t = shoal_gguf_tensor_at(g, i);
    size_t rb = shoal_type_row_bytes(t->type, t->ne[0]);
    if (rb == 0 || t->size != rb * (uint64_t)t->ne[1]) {
        set_err(err, errlen, "tensor %s: bad size", t->name);
        return SHOAL_ERR_FORMAT;
    }
    const char *src = shoal_gguf_tensor_data(g, i);
    for (int64_t r = 0; r < t->ne[1]; r++)
        shoal_dequantize_row(t->type, src + (size_t)r * rb, dst + (size_t)r * (size_t)t->ne[0],
                             t->ne[0]);
    size_t n = (size_t)t->ne[0] * (size_t)t->ne[1];
    for (size_t j = 0; j < n; j++)
        if (!isfinite(dst[j])) {
            set_err(err, errlen, "tensor %s holds a non-finite value", t->name);
            return SHOAL_ERR_FORMAT;
        }
    return 0;
}

int shoal_adapter_load_gguf(const shoal_gguf *g, const shoal_hparams *hp, int b0, int b1,
                            shoal_adapter **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *s = NULL;
    if (shoal_gguf_get_str(g, "general.type", &s) != 0 || strcmp(s, "adapter") != 0) {
        set_err(err, errlen, "general.type is not 'adapter'");
        return SHOAL_ERR_FORMAT;
    }
    if (shoal_gguf_get_str(g, "adapter.type", &s) != 0 || strcmp(s, "lora") != 0) {
        set_err(err, errlen, "adapter.type is not 'lora'");
        return SHOAL_ERR_FORMAT;
    }
    if (shoal_gguf_get_str(g, "general.architecture", &s) != 0) {
        set_err(err, errlen, "general.architecture missing");
        return SHOAL_ERR_FORMAT;
    }
    if (strcmp(s, "llama") != 0) {
        set_err(err, errlen, "adapter architecture '%.64s' is not supported (only llama)", s);
        return SHOAL_ERR_UNSUPPORTED;
    }
    float alpha = 0.0f;
    int rc = shoal_gguf_get_f32(g, "adapter.lora.alpha", &alpha);
    if (rc == SHOAL_ERR_NOTFOUND)
        alpha = 0.0f;
    else if (rc || !isfinite(alpha)) {
        set_err(err, errlen, "adapter.lora.alpha: bad value");
        return SHOAL_ERR_FORMAT;
    }
    /* every tensor must be something we apply (or a norm vector we skip) */
    int pairs = 0;
    for (int64_t i = 0; i < shoal_gguf_n_tensors(g); i++) {
        const char *name = shoal_gguf_tensor_at(g, i)->name;
        int layer, proj, is_b;
        if (parse_name(name, &layer, &proj, &is_b)) {
            if (layer >= hp->n_layer) {
                set_err(err, errlen, "tensor %s: the model has %d blocks", name, hp->n_layer);
                return SHOAL_ERR_FORMAT;
            }
            pairs += !is_b;
            continue;
        }
        if (ends_with(name, "_norm.weight"))
            continue;
        set_err(err, errlen, "tensor %.128s: not a LoRA tensor Shoal can apply", name);
        return SHOAL_ERR_UNSUPPORTED;
    }
    if (pairs == 0) {
        set_err(err, errlen, "no LoRA tensors");
        return SHOAL_ERR_FORMAT;
    }
    if ((rc = adapter_alloc(hp, b0, b1, alpha, out))) {
        set_err(err, errlen, "cannot create adapter: %s", shoal_strerror(rc));
        return rc;
    }
    shoal_adapter *a = *out;
    /* a pair on a block outside the span is checked for completeness too */
    for (int l = 0; l < hp->n_layer; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            char na[96], nb[96];
            snprintf(na, sizeof na, "blk.%d.%s.weight.lora_a", l, shoal_proj_name(p));
            snprintf(nb, sizeof nb, "blk.%d.%s.weight.lora_b", l, shoal_proj_name(p));
            int64_t ia = shoal_gguf_find_tensor(g, na), ib = shoal_gguf_find_tensor(g, nb);
            if (ia < 0 && ib < 0)
                continue;
            if (ia < 0 || ib < 0) {
                set_err(err, errlen, "%s: half of a LoRA pair is missing", ia < 0 ? nb : na);
                rc = SHOAL_ERR_FORMAT;
                goto err;
            }
            const shoal_gguf_tensor *ta = shoal_gguf_tensor_at(g, ia);
            const shoal_gguf_tensor *tb = shoal_gguf_tensor_at(g, ib);
            int in, o;
            shoal_proj_dims(hp, p, &in, &o);
            int64_t r = ta->ne[1];
            if (ta->n_dims != 2 || tb->n_dims != 2 || ta->ne[0] != in || tb->ne[1] != o ||
                tb->ne[0] != r || r < 1 || r > SHOAL_LORA_MAX_RANK || r > in || r > o) {
                set_err(err, errlen,
                        "%s: shapes [%lld, %lld] and [%lld, %lld] do not fit a projection "
                        "(%d -> %d)",
                        na, (long long)ta->ne[0], (long long)ta->ne[1], (long long)tb->ne[0],
                        (long long)tb->ne[1], in, o);
                rc = SHOAL_ERR_FORMAT;
                goto err;
            }
            if (l < b0 || l >= b1)
                continue;
            if ((rc = shoal_lora_new(in, o, (int)r, alpha, slot(a, l, p)))) {
                set_err(err, errlen, "cannot create LoRA pair: %s", shoal_strerror(rc));
                goto err;
            }
            shoal_lora *x = *slot(a, l, p);
            if ((rc = read_tensor(g, ia, shoal_lora_a(x), err, errlen)) ||
                (rc = read_tensor(g, ib, shoal_lora_b(x), err, errlen)))
                goto err;
        }
    return 0;
err:
    shoal_adapter_destroy(out);
    return rc;
}

int shoal_adapter_load(const char *path, const shoal_hparams *hp, int b0, int b1,
                       shoal_adapter **out, char *err, size_t errlen)
{
    *out = NULL;
    shoal_gguf *g = NULL;
    int rc = shoal_gguf_open(path, &g, err, errlen);
    if (rc)
        return rc;
    rc = shoal_adapter_load_gguf(g, hp, b0, b1, out, err, errlen);
    shoal_gguf_close(&g);
    return rc;
}
