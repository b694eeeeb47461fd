/*
 * SentencePiece-style tokenizer from GGUF metadata (see tokenizer.h for the
 * exact encoding rules, which are llama2.c's).
 *
 * Layout: every token's text is copied twice into two arenas, once as the
 * file spells it and once "converted" ("▁" read as ' ', which is how the
 * encoder compares and how the decoder prints). Two open-addressing hash
 * tables map text to the lowest id with that text; the converted one can
 * hash the concatenation of two pieces without building it, so a merge
 * candidate costs one hash and one or two memcmp, no copy.
 *
 * Merging: llama2.c rescans all n pairs after each of up to n merges. Here
 * the symbols form a doubly linked list over an array (a merge keeps the
 * left symbol, so array order is text order) and every mergeable adjacent
 * pair sits in a binary heap ordered by (score desc, left position asc),
 * which is exactly llama2.c's choice: highest score, leftmost on ties. A
 * merge makes the two pairs around it stale and adds two new ones; stale
 * entries are recognised when popped (a symbol's id changes on every merge
 * and merged pieces only grow, so (left, right, left id, right id,
 * adjacency) identifies a live pair). At most 3n heap entries ever exist.
 */
#include "client/tokenizer.h"

#include "kernels/err.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MERGE_SCORE_FLOOR (-1e10f) /* llama2.c's initial best_score */

typedef struct {
    int32_t *slot; /* -1 empty, else a token id */
    uint32_t mask;
} text_index;

struct shoal_tokenizer {
    int32_t n_vocab;
    char *conv;            /* converted texts, each NUL-terminated */
    size_t *conv_off;      /* (n_vocab) */
    uint32_t *conv_len;    /* (n_vocab) */
    char *orig;            /* texts as the file has them, NUL-terminated */
    size_t *orig_off;      /* (n_vocab) */
    uint32_t *orig_len;    /* (n_vocab) */
    float *score;          /* (n_vocab) */
    uint8_t *type;         /* (n_vocab) SHOAL_TOKEN_* */
    int16_t *byte_val;     /* (n_vocab) the byte of a BYTE token, else -1 */
    uint8_t *eog;          /* (n_vocab) 1 for end-of-generation tokens */
    int32_t byte_tok[256]; /* the BYTE token of each byte, -1 if none */
    text_index conv_ix;
    text_index orig_ix;
    int32_t bos, eos, unk;
    bool add_bos;
    bool add_space_prefix;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- text index --------------------------------------------------------- */

static uint32_t fnv_step(uint32_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static uint32_t hash2(const char *a, size_t na, const char *b, size_t nb)
{
    return fnv_step(fnv_step(2166136261u, a, na), b, nb);
}

static int index_init(text_index *ix, int32_t n)
{
    uint32_t size = 16;
    while (size < (uint32_t)n * 2u)
        size <<= 1;
    ix->slot = malloc((size_t)size * sizeof *ix->slot);
    if (!ix->slot)
        return SHOAL_ERR_NOMEM;
    memset(ix->slot, 0xFF, (size_t)size * sizeof *ix->slot);
    ix->mask = size - 1;
    return 0;
}

/* Finds the id whose text (in arena at off/len) is a[0..na) ++ b[0..nb). */
static int32_t index_find(const text_index *ix, const char *arena, const size_t *off,
                          const uint32_t *len, const char *a, size_t na,
                          const char *b, size_t nb)
{
    uint32_t i = hash2(a, na, b, nb) & ix->mask;
    for (;;) {
        int32_t id = ix->slot[i];
        if (id < 0)
            return -1;
        if (len[id] == na + nb) {
            const char *s = arena + off[id];
            if (memcmp(s, a, na) == 0 && (nb == 0 || memcmp(s + na, b, nb) == 0))
                return id;
        }
        i = (i + 1) & ix->mask;
    }
}

/* Adds id unless a lower id already has the same text. */
static void index_add(text_index *ix, const char *arena, const size_t *off,
                      const uint32_t *len, int32_t id)
{
    const char *s = arena + off[id];
    if (len[id] == 0 || index_find(ix, arena, off, len, s, len[id], NULL, 0) >= 0)
        return;
    uint32_t i = hash2(s, len[id], NULL, 0) & ix->mask;
    while (ix->slot[i] >= 0)
        i = (i + 1) & ix->mask;
    ix->slot[i] = id;
}

/* ---- loading ------------------------------------------------------------ */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The byte of "<0xXX>", or -1. */
static int parse_byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int hi = hexval((unsigned char)s[3]), lo = hexval((unsigned char)s[4]);
    return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

static bool vtype_is_int(int vt)
{
    switch (vt) {
    case SHOAL_GGUF_U8: case SHOAL_GGUF_I8: case SHOAL_GGUF_U16: case SHOAL_GGUF_I16:
    case SHOAL_GGUF_U32: case SHOAL_GGUF_I32: case SHOAL_GGUF_U64: case SHOAL_GGUF_I64:
        return true;
    default:
        return false;
    }
}

/* Element j of an integer array, as int64 (values above INT64_MAX clamp). */
static int64_t arr_int(const void *data, int vt, uint64_t j)
{
    const unsigned char *p = data;
    switch (vt) {
    case SHOAL_GGUF_U8: return p[j];
    case SHOAL_GGUF_I8: return (int8_t)p[j];
    case SHOAL_GGUF_U16: { uint16_t v; memcpy(&v, p + 2 * j, 2); return v; }
    case SHOAL_GGUF_I16: { int16_t v; memcpy(&v, p + 2 * j, 2); return v; }
    case SHOAL_GGUF_U32: { uint32_t v; memcpy(&v, p + 4 * j, 4); return v; }
    case SHOAL_GGUF_I32: { int32_t v; memcpy(&v, p + 4 * j, 4); return v; }
    case SHOAL_GGUF_U64: {
        uint64_t v;
        memcpy(&v, p + 8 * j, 8);
        return v > INT64_MAX ? INT64_MAX : (int64_t)v;
    }
    default: { int64_t v; memcpy(&v, p + 8 * j, 8); return v; }
    }
}

/* Reads a token id key: *id = dflt when absent, -1 when the file says
 * "none" (0xFFFFFFFF or a negative value); error when out of range. */
static int read_id(const shoal_gguf *g, const char *key, int32_t n_vocab, int32_t dflt,
                   int32_t *id, char *err, size_t errlen)
{
    uint32_t v;
    int rc = shoal_gguf_get_u32(g, key, &v);
    if (rc == SHOAL_ERR_NOTFOUND) {
        *id = dflt < n_vocab ? dflt : -1;
        return 0;
    }
    if (rc != 0) {
        int64_t k = shoal_gguf_find_key(g, key);
        int vt = k >= 0 ? shoal_gguf_kv_type(g, k) : -1;
        if (vt == SHOAL_GGUF_I8 || vt == SHOAL_GGUF_I16 || vt == SHOAL_GGUF_I32 ||
            vt == SHOAL_GGUF_I64) {
            *id = -1; /* a signed value that is not a u32: negative */
            return 0;
        }
        set_err(err, errlen, "tokenizer: %s is not an integer token id", key);
        return SHOAL_ERR_FORMAT;
    }
    if (v == UINT32_MAX) {
        *id = -1;
        return 0;
    }
    if (v >= (uint32_t)n_vocab) {
        set_err(err, errlen, "tokenizer: %s = %u is outside the vocabulary (%d tokens)",
                key, v, n_vocab);
        return SHOAL_ERR_FORMAT;
    }
    *id = (int32_t)v;
    return 0;
}

/* Control tokens that end a turn in common chat formats. */
static const char *const eog_names[] = {
    "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
    "<|endoftext|>", "<|end_of_text|>", "<|return|>", "<|call|>",
};

void shoal_tokenizer_destroy(shoal_tokenizer **tp)
{
    if (!tp || !*tp)
        return;
    shoal_tokenizer *t = *tp;
    free(t->conv);
    free(t->conv_off);
    free(t->conv_len);
    free(t->orig);
    free(t->orig_off);
    free(t->orig_len);
    free(t->score);
    free(t->type);
    free(t->byte_val);
    free(t->eog);
    free(t->conv_ix.slot);
    free(t->orig_ix.slot);
    free(t);
    *tp = NULL;
}

shoal_tokenizer *shoal_tokenizer_from_gguf(const shoal_gguf *g, char *err, size_t errlen)
{
    static const char space_mark[] = "\xE2\x96\x81"; /* U+2581 */
    shoal_tokenizer *t = NULL;
    int rc;
    set_err(err, errlen, "%s", "");
    if (!g) {
        set_err(err, errlen, "tokenizer: no GGUF file");
        return NULL;
    }

    const char *model = NULL;
    rc = shoal_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc == SHOAL_ERR_NOTFOUND) {
        set_err(err, errlen, "tokenizer: the file has no tokenizer.ggml.model");
        return NULL;
    }
    if (rc != 0 || !model) {
        set_err(err, errlen, "tokenizer: tokenizer.ggml.model is not a string");
        return NULL;
    }
    if (strcmp(model, "llama") != 0) {
        set_err(err, errlen, "tokenizer: tokenizer.ggml.model \"%.40s\" is not supported "
                "(only \"llama\", SentencePiece-style)", model);
        return NULL;
    }

    int64_t k_tok = shoal_gguf_find_key(g, "tokenizer.ggml.tokens");
    if (k_tok < 0 || shoal_gguf_kv_type(g, k_tok) != SHOAL_GGUF_ARRAY ||
        shoal_gguf_arr_type(g, k_tok) != SHOAL_GGUF_STRING) {
        set_err(err, errlen, "tokenizer: tokenizer.ggml.tokens is missing or not an array of strings");
        return NULL;
    }
    uint64_t n64 = shoal_gguf_arr_len(g, k_tok);
    if (n64 == 0 || n64 > SHOAL_TOKENIZER_MAX_VOCAB) {
        set_err(err, errlen, "tokenizer: vocabulary of %llu tokens (allowed 1..%d)",
                (unsigned long long)n64, SHOAL_TOKENIZER_MAX_VOCAB);
        return NULL;
    }
    int32_t n = (int32_t)n64;

    int64_t k_score = shoal_gguf_find_key(g, "tokenizer.ggml.scores");
    const void *scores = NULL;
    if (k_score >= 0) {
        if (shoal_gguf_kv_type(g, k_score) != SHOAL_GGUF_ARRAY ||
            shoal_gguf_arr_type(g, k_score) != SHOAL_GGUF_F32 ||
            shoal_gguf_arr_len(g, k_score) != n64 ||
            !(scores = shoal_gguf_arr_data(g, k_score))) {
            set_err(err, errlen, "tokenizer: tokenizer.ggml.scores is not %d f32 values", n);
            return NULL;
        }
    }
    int64_t k_type = shoal_gguf_find_key(g, "tokenizer.ggml.token_type");
    const void *types = NULL;
    int types_vt = 0;
    if (k_type >= 0) {
        types_vt = shoal_gguf_arr_type(g, k_type);
        if (shoal_gguf_kv_type(g, k_type) != SHOAL_GGUF_ARRAY || !vtype_is_int(types_vt) ||
            shoal_gguf_arr_len(g, k_type) != n64 ||
            !(types = shoal_gguf_arr_data(g, k_type))) {
            set_err(err, errlen, "tokenizer: tokenizer.ggml.token_type is not %d integers", n);
            return NULL;
        }
    }

    /* Sizes first: every string is checked before anything is allocated. */
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        const shoal_gguf_str *s = shoal_gguf_arr_str(g, k_tok, (uint64_t)i);
        if (!s || !s->s) {
            set_err(err, errlen, "tokenizer: token %d is unreadable", i);
            return NULL;
        }
        if (s->len > SHOAL_TOKENIZER_MAX_PIECE) {
            set_err(err, errlen, "tokenizer: token %d is %llu bytes long (max %d)", i,
                    (unsigned long long)s->len, SHOAL_TOKENIZER_MAX_PIECE);
            return NULL;
        }
        if (memchr(s->s, '\0', (size_t)s->len)) {
            set_err(err, errlen, "tokenizer: token %d contains a NUL byte", i);
            return NULL;
        }
        total += (size_t)s->len + 1;
    }

    t = calloc(1, sizeof *t);
    if (!t)
        goto nomem;
    t->n_vocab = n;
    t->conv = malloc(total);
    t->orig = malloc(total);
    t->conv_off = malloc((size_t)n * sizeof *t->conv_off);
    t->orig_off = malloc((size_t)n * sizeof *t->orig_off);
    t->conv_len = malloc((size_t)n * sizeof *t->conv_len);
    t->orig_len = malloc((size_t)n * sizeof *t->orig_len);
    t->score = malloc((size_t)n * sizeof *t->score);
    t->type = malloc((size_t)n);
    t->byte_val = malloc((size_t)n * sizeof *t->byte_val);
    t->eog = calloc((size_t)n, 1);
    if (!t->conv || !t->orig || !t->conv_off || !t->orig_off || !t->conv_len ||
        !t->orig_len || !t->score || !t->type || !t->byte_val || !t->eog)
        goto nomem;
    for (int b = 0; b < 256; b++)
        t->byte_tok[b] = -1;

    size_t co = 0, oo = 0;
    for (int32_t i = 0; i < n; i++) {
        const shoal_gguf_str *s = shoal_gguf_arr_str(g, k_tok, (uint64_t)i);
        size_t len = (size_t)s->len;
        memcpy(t->orig + oo, s->s, len);
        t->orig[oo + len] = '\0';
        t->orig_off[i] = oo;
        t->orig_len[i] = (uint32_t)len;
        oo += len + 1;

        size_t cl = 0;
        char *c = t->conv + co;
        for (size_t j = 0; j < len;) {
            if (len - j >= 3 && memcmp(s->s + j, space_mark, 3) == 0) {
                c[cl++] = ' ';
                j += 3;
            } else {
                c[cl++] = s->s[j++];
            }
        }
        c[cl] = '\0';
        t->conv_off[i] = co;
        t->conv_len[i] = (uint32_t)cl;
        co += cl + 1;

        if (scores) {
            memcpy(&t->score[i], (const char *)scores + 4 * (size_t)i, 4);
        } else {
            t->score[i] = 0.0f;
        }

        int bv = parse_byte_token(s->s, len);
        int ty;
        if (types) {
            int64_t v = arr_int(types, types_vt, (uint64_t)i);
            if (v < 0 || v > SHOAL_TOKEN_BYTE) {
                set_err(err, errlen, "tokenizer: token %d has type %lld (allowed 0..6)", i,
                        (long long)v);
                goto fail;
            }
            ty = v == 0 ? SHOAL_TOKEN_NORMAL : (int)v;
        } else {
            ty = bv >= 0 ? SHOAL_TOKEN_BYTE : SHOAL_TOKEN_NORMAL;
        }
        if (ty == SHOAL_TOKEN_BYTE && bv < 0) {
            set_err(err, errlen, "tokenizer: byte token %d is not of the form <0xXX>", i);
            goto fail;
        }
        t->type[i] = (uint8_t)ty;
        t->byte_val[i] = (int16_t)(ty == SHOAL_TOKEN_BYTE ? bv : -1);
        if (ty == SHOAL_TOKEN_BYTE && t->byte_tok[bv] < 0)
            t->byte_tok[bv] = i;
    }

    if ((rc = read_id(g, "tokenizer.ggml.bos_token_id", n, 1, &t->bos, err, errlen)) ||
        (rc = read_id(g, "tokenizer.ggml.eos_token_id", n, 2, &t->eos, err, errlen)) ||
        (rc = read_id(g, "tokenizer.ggml.unknown_token_id", n, 0, &t->unk, err, errlen)))
        goto fail;
    int32_t eot = -1, eom = -1;
    if ((rc = read_id(g, "tokenizer.ggml.eot_token_id", n, -1, &eot, err, errlen)) ||
        (rc = read_id(g, "tokenizer.ggml.eom_token_id", n, -1, &eom, err, errlen)))
        goto fail;

    bool flag;
    t->add_bos = true;
    rc = shoal_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &flag);
    if (rc == 0)
        t->add_bos = flag;
    else if (rc != SHOAL_ERR_NOTFOUND) {
        set_err(err, errlen, "tokenizer: tokenizer.ggml.add_bos_token is not a bool");
        goto fail;
    }
    t->add_space_prefix = true;
    rc = shoal_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &flag);
    if (rc == 0)
        t->add_space_prefix = flag;
    else if (rc != SHOAL_ERR_NOTFOUND) {
        set_err(err, errlen, "tokenizer: tokenizer.ggml.add_space_prefix is not a bool");
        goto fail;
    }

    for (int b = 0; b < 256; b++) {
        if (t->byte_tok[b] < 0 && t->unk < 0) {
            set_err(err, errlen, "tokenizer: no byte token <0x%02X> and no unknown token", b);
            goto fail;
        }
    }

    if (index_init(&t->conv_ix, n) || index_init(&t->orig_ix, n))
        goto nomem;
    for (int32_t i = 0; i < n; i++) {
        index_add(&t->conv_ix, t->conv, t->conv_off, t->conv_len, i);
        index_add(&t->orig_ix, t->orig, t->orig_off, t->orig_len, i);
    }

    if (t->bos >= 0)
        t->eog[t->bos] = 1;
    if (t->eos >= 0)
        t->eog[t->eos] = 1;
    if (eot >= 0)
        t->eog[eot] = 1;
    if (eom >= 0)
        t->eog[eom] = 1;
    for (size_t j = 0; j < sizeof eog_names / sizeof eog_names[0]; j++) {
        int32_t id = shoal_tokenizer_find(t, eog_names[j], strlen(eog_names[j]));
        if (id >= 0 && t->type[id] == SHOAL_TOKEN_CONTROL)
            t->eog[id] = 1;
    }
    return t;

nomem:
    set_err(err, errlen, "tokenizer: out of memory for %d tokens", n);
fail:
    shoal_tokenizer_destroy(&t);
    return NULL;
}

/* ---- encoding ----------------------------------------------------------- */

typedef struct {
    int32_t id;   /* -1 once merged into its left neighbour */
    int32_t prev; /* -1 at the start */
    int32_t next; /* -1 at the end */
} sym;

typedef struct {
    float score;
    int32_t left, right; /* symbol indices */
    int32_t lid, rid;    /* their ids when the pair was made */
    int32_t mid;         /* the merged token */
} cand;

typedef struct {
    const shoal_tokenizer *t;
    sym *s;
    int32_t n_sym;
    cand *h;
    size_t n_h;
} enc_state;

/* Whether a goes before b: higher score, then the leftmost pair. */
static bool cand_before(const cand *a, const cand *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(enc_state *e, cand c)
{
    size_t i = e->n_h++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &e->h[p]))
            break;
        e->h[i] = e->h[p];
        i = p;
    }
    e->h[i] = c;
}

static cand heap_pop(enc_state *e)
{
    cand top = e->h[0];
    cand last = e->h[--e->n_h];
    size_t n = e->n_h, i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n)
            break;
        size_t m = (l + 1 < n && cand_before(&e->h[l + 1], &e->h[l])) ? l + 1 : l;
        if (!cand_before(&e->h[m], &last))
            break;
        e->h[i] = e->h[m];
        i = m;
    }
    if (n > 0)
        e->h[i] = last;
    return top;
}

static void try_pair(enc_state *e, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return;
    const shoal_tokenizer *t = e->t;
    int32_t a = e->s[left].id, b = e->s[right].id;
    int32_t id = index_find(&t->conv_ix, t->conv, t->conv_off, t->conv_len,
                            t->conv + t->conv_off[a], t->conv_len[a],
                            t->conv + t->conv_off[b], t->conv_len[b]);
    if (id < 0 || !(t->score[id] > MERGE_SCORE_FLOOR))
        return;
    heap_push(e, (cand){t->score[id], left, right, a, b, id});
}

static void add_sym(enc_state *e, int32_t id)
{
    int32_t i = e->n_sym++;
    e->s[i] = (sym){id, i - 1, -1};
    if (i > 0)
        e->s[i - 1].next = i;
}

/* One character (or malformed group) of 1..4 bytes. */
static void add_group(enc_state *e, const char *p, size_t n)
{
    const shoal_tokenizer *t = e->t;
    int32_t id = index_find(&t->conv_ix, t->conv, t->conv_off, t->conv_len, p, n, NULL, 0);
    if (id >= 0) {
        add_sym(e, id);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t b = t->byte_tok[(unsigned char)p[i]];
        add_sym(e, b >= 0 ? b : t->unk);
    }
}

int shoal_tokenizer_encode(const shoal_tokenizer *t, const char *text, size_t len,
                           bool add_bos, int32_t *out, int max, int *n_out)
{
    if (n_out)
        *n_out = 0;
    if (!t || !n_out || (!text && len > 0) || max < 0 || (!out && max > 0))
        return SHOAL_ERR_ARG;
    /* Symbols <= len + 1; heap entries < 3 * symbols; ids fit an int. */
    if (len > (size_t)(INT_MAX / 4) - 4)
        return SHOAL_ERR_RANGE;

    size_t cap_sym = len + 1;
    enc_state e = {.t = t};
    e.s = malloc(cap_sym * sizeof *e.s);
    e.h = malloc(3 * cap_sym * sizeof *e.h);
    if (!e.s || !e.h) {
        free(e.s);
        free(e.h);
        return SHOAL_ERR_NOMEM;
    }

    if (len > 0 && t->add_space_prefix)
        add_group(&e, " ", 1);
    for (size_t i = 0; i < len;) {
        size_t j = i + 1;
        while (j < len && ((unsigned char)text[j] & 0xC0) == 0x80 && j - i < 4)
            j++;
        add_group(&e, text + i, j - i);
        i = j;
    }

    for (int32_t i = 0; i + 1 < e.n_sym; i++)
        try_pair(&e, i, i + 1);
    while (e.n_h > 0) {
        cand c = heap_pop(&e);
        sym *l = &e.s[c.left], *r = &e.s[c.right];
        if (l->id != c.lid || r->id != c.rid || l->next != c.right)
            continue; /* stale */
        l->id = c.mid;
        l->next = r->next;
        if (r->next >= 0)
            e.s[r->next].prev = c.left;
        r->id = -1;
        try_pair(&e, l->prev, c.left);
        try_pair(&e, c.left, l->next);
    }

    int n = 0;
    if (add_bos && t->bos >= 0) {
        if (n < max)
            out[n] = t->bos;
        n++;
    }
    for (int32_t i = e.n_sym > 0 ? 0 : -1; i >= 0; i = e.s[i].next) {
        if (n < max)
            out[n] = e.s[i].id;
        n++;
    }
    free(e.s);
    free(e.h);
    *n_out = n;
    return n > max ? SHOAL_ERR_RANGE : 0;
}

/* ---- decoding and queries ----------------------------------------------- */

int shoal_tokenizer_piece(const shoal_tokenizer *t, int32_t prev, int32_t tok,
                          char *buf, size_t cap)
{
    if (!t || tok < 0 || tok >= t->n_vocab)
        return -1;
    const char *s;
    size_t n;
    char byte;
    switch (t->type[tok]) {
    case SHOAL_TOKEN_BYTE:
        byte = (char)t->byte_val[tok];
        s = &byte;
        n = 1;
        break;
    case SHOAL_TOKEN_CONTROL:
    case SHOAL_TOKEN_UNUSED:
        return 0;
    case SHOAL_TOKEN_UNKNOWN:
        s = "\xE2\x96\x85"; /* U+2585, as llama.cpp prints it */
        n = 3;
        break;
    default:
        s = t->conv + t->conv_off[tok];
        n = t->conv_len[tok];
        if (prev >= 0 && prev == t->bos && n > 0 && s[0] == ' ') {
            s++;
            n--;
        }
        break;
    }
    if (buf && cap > 0)
        memcpy(buf, s, n < cap ? n : cap);
    return (int)n;
}

int32_t shoal_tokenizer_bos(const shoal_tokenizer *t) { return t->bos; }
int32_t shoal_tokenizer_eos(const shoal_tokenizer *t) { return t->eos; }
int32_t shoal_tokenizer_unk(const shoal_tokenizer *t) { return t->unk; }
int shoal_tokenizer_n_vocab(const shoal_tokenizer *t) { return t->n_vocab; }
bool shoal_tokenizer_add_bos(const shoal_tokenizer *t) { return t->add_bos; }

bool shoal_tokenizer_is_eog(const shoal_tokenizer *t, int32_t tok)
{
    return tok >= 0 && tok < t->n_vocab && t->eog[tok];
}

const char *shoal_tokenizer_token(const shoal_tokenizer *t, int32_t tok)
{
    if (!t || tok < 0 || tok >= t->n_vocab)
        return NULL;
    return t->orig + t->orig_off[tok];
}

int shoal_tokenizer_token_type(const shoal_tokenizer *t, int32_t tok)
{
    if (!t || tok < 0 || tok >= t->n_vocab)
        return 0;
    return t->type[tok];
}

int32_t shoal_tokenizer_find(const shoal_tokenizer *t, const char *text, size_t len)
{
    if (!t || !text || len == 0 || len > SHOAL_TOKENIZER_MAX_PIECE)
        return -1;
    return index_find(&t->orig_ix, t->orig, t->orig_off, t->orig_len, text, len, NULL, 0);
}
