/* Model identity: BLAKE2b over GGUF metadata and tensor layout (see model_id.h). */
#include "swarm/model_id.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "kernels/err.h"

static void put_u64(crypto_generichash_state *st, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    crypto_generichash_update(st, b, 8);
}

static void put_bytes(crypto_generichash_state *st, const void *p, uint64_t n)
{
    put_u64(st, n);
    if (n)
        crypto_generichash_update(st, p, (unsigned long long)n);
}

static int elem_size(int vtype)
{
    switch (vtype) {
    case SHOAL_GGUF_U8: case SHOAL_GGUF_I8: case SHOAL_GGUF_BOOL: return 1;
    case SHOAL_GGUF_U16: case SHOAL_GGUF_I16: return 2;
    case SHOAL_GGUF_U32: case SHOAL_GGUF_I32: case SHOAL_GGUF_F32: return 4;
    case SHOAL_GGUF_U64: case SHOAL_GGUF_I64: case SHOAL_GGUF_F64: return 8;
    default: return 0;
    }
}

static void put_value(crypto_generichash_state *st, const shoal_gguf *g, int64_t i)
{
    int t = shoal_gguf_kv_type(g, i);
    put_u64(st, (uint64_t)t);
    if (t == SHOAL_GGUF_STRING) {
        const shoal_gguf_str *s = shoal_gguf_get_str_at(g, i);
        put_bytes(st, s ? s->s : "", s ? s->len : 0);
    } else if (t == SHOAL_GGUF_ARRAY) {
        int at = shoal_gguf_arr_type(g, i);
        uint64_t n = shoal_gguf_arr_len(g, i);
        put_u64(st, (uint64_t)at);
        put_u64(st, n);
        if (at == SHOAL_GGUF_STRING) {
            for (uint64_t j = 0; j < n; j++) {
                const shoal_gguf_str *s = shoal_gguf_arr_str(g, i, j);
                put_bytes(st, s ? s->s : "", s ? s->len : 0);
            }
        } else {
            const void *d = shoal_gguf_arr_data(g, i);
            int es = elem_size(at);
            if (d && es) /* the reader checked n * es against the file */
                put_bytes(st, d, n * (uint64_t)es);
        }
    } else if (t == SHOAL_GGUF_F32 || t == SHOAL_GGUF_F64) {
        double v = 0;
        uint64_t bits;
        shoal_gguf_get_f64_at(g, i, &v);
        memcpy(&bits, &v, 8);
        put_u64(st, bits);
    } else {
        int64_t v = 0;
        if (shoal_gguf_get_i64_at(g, i, &v) == SHOAL_ERR_RANGE) {
            uint64_t u = 0; /* a u64 above INT64_MAX */
            shoal_gguf_get_u64(g, shoal_gguf_key(g, i), &u);
            put_u64(st, u);
        } else {
            put_u64(st, (uint64_t)v);
        }
    }
}

int shoal_model_id_compute(const shoal_gguf *g, shoal_model_id *out)
{
    memset(out, 0, sizeof *out);
    if (sodium_init() < 0)
        return SHOAL_ERR_INTERNAL;
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof out->hash);
    static const char tag[] = "shoal-model-id 1";
    crypto_generichash_update(&st, (const uint8_t *)tag, sizeof tag);
    int64_t nkv = shoal_gguf_n_kv(g);
    put_u64(&st, (uint64_t)nkv);
    for (int64_t i = 0; i < nkv; i++) {
        const char *k = shoal_gguf_key(g, i);
        put_bytes(&st, k, strlen(k));
        put_value(&st, g, i);
    }
    int64_t nt = shoal_gguf_n_tensors(g);
    put_u64(&st, (uint64_t)nt);
    for (int64_t i = 0; i < nt; i++) {
        const shoal_gguf_tensor *t = shoal_gguf_tensor_at(g, i);
        put_bytes(&st, t->name, strlen(t->name));
        put_u64(&st, (uint64_t)t->type);
        put_u64(&st, (uint64_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            put_u64(&st, (uint64_t)t->ne[d]);
    }
    crypto_generichash_final(&st, out->hash, sizeof out->hash);
    const char *name = NULL;
    if (shoal_gguf_get_str(g, "general.name", &name) == 0 && name)
        shoal_wire_text_set(out->name, sizeof out->name, name);
    return 0;
}

bool shoal_model_id_equal(const shoal_model_id *a, const shoal_model_id *b)
{
    return !strcmp(a->name, b->name) && !memcmp(a->hash, b->hash, sizeof a->hash);
}

void shoal_model_id_short(const shoal_model_id *id, char out[17])
{
    for (int i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", id->hash[i]);
}
