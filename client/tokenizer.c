/*
 * Tokenizers from GGUF metadata (see tokenizer.h for the exact rules):
 * SentencePiece-style ("llama", encoded as llama2.c does) and byte-level
 * BPE ("gpt2", encoded as llama.cpp does for the supported pre-tokenizers).
 *
 * Layout: every token's text is copied twice into two arenas: "orig" as the
 * file spells it, and "conv", the bytes it prints ("▁" read as ' ' for
 * SentencePiece; the GPT-2 byte-to-character mapping undone for BPE).
 * Open-addressing hash tables map text to the lowest id with that text and
 * hash the concatenation of two or three pieces without building it, so a
 * merge candidate costs one hash and a few memcmp, no copy.
 *
 * Merging: llama2.c rescans all n pairs after each of up to n merges. Here
 * the symbols form a doubly linked list over an array (a merge keeps the
 * left symbol, so array order is text order) and every mergeable adjacent
 * pair sits in a binary heap ordered by (priority desc, left position asc):
 * for SentencePiece the priority is the merged token's score (llama2.c:
 * highest score, leftmost on ties), for BPE minus the merge's rank (lowest
 * rank, leftmost on ties). A merge makes the two pairs around it stale and
 * adds two new ones; stale entries are recognised when popped: merged pieces
 * only grow, so (left, right, their ids or lengths at push time, adjacency)
 * identifies a live pair. At most 3n heap entries ever exist.
 *
 * BPE words (the pre-tokenizer's output) are independent: the list is cut
 * at word boundaries and one heap serves all words, which pops each word's
 * pairs in the same order a heap per word would.
 */
#include "client/tokenizer.h"

#include "client/utf8.h"
#include "kernels/err.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MERGE_SCORE_FLOOR (-1e10f) /* llama2.c's initial best_score */
#define MAX_MERGES (1 << 24)       /* ranks stay exact as float priorities */

enum { KIND_SPM = 1, KIND_BPE = 2 };
enum { PRE_NONE = 0, PRE_GPT2, PRE_LLAMA3, PRE_QWEN2 };

typedef struct {
    int32_t *slot; /* -1 empty, else an id */
    uint32_t mask;
} text_index;

struct shoal_tokenizer {
    int kind;
    int pre;
    int32_t n_vocab;
    char *conv;            /* printed bytes, each NUL-terminated */
    size_t *conv_off;      /* (n_vocab) */
    uint32_t *conv_len;    /* (n_vocab) */
    char *orig;            /* texts as the file has them, NUL-terminated */
    size_t *orig_off;      /* (n_vocab) */
    uint32_t *orig_len;    /* (n_vocab) */
    float *score;          /* (n_vocab) */
    uint8_t *type;         /* (n_vocab) SHOAL_TOKEN_* */
    int16_t *byte_val;     /* (n_vocab) the byte of a BYTE token, else -1 */
    uint8_t *eog;          /* (n_vocab) 1 for end-of-generation tokens */
    int32_t byte_tok[256]; /* SPM: the <0xXX> token of each byte, -1 if none */
    text_index conv_ix;    /* SPM: converted text -> id */
    text_index orig_ix;    /* file text -> id */
    int32_t bos, eos, unk;
    bool add_bos;
    bool add_space_prefix; /* SPM */
    bool ignore_merges;    /* BPE: a word that is a token stays whole */

    /* BPE */
    int32_t n_merges;
    char *merge;           /* "left right" strings, NUL-terminated */
    size_t *merge_off;     /* (n_merges) */
    uint32_t *merge_len;   /* (n_merges) */
    text_index merge_ix;   /* merge string -> rank (lowest) */
    char byte_char[256][2];    /* GPT-2 character of each byte, UTF-8 */
    uint8_t byte_char_len[256];
    int16_t char_byte[324];    /* the byte of code points 0..323, -1 if none */
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

/* Up to three segments of one key, hashed and compared as their
 * concatenation. */
typedef struct {
    const char *p[3];
    size_t n[3];
} key3;

static uint32_t key_hash(const key3 *k)
{
    uint32_t h = 2166136261u;
    for (int s = 0; s < 3; s++) {
        for (size_t i = 0; i < k->n[s]; i++) {
            h ^= (unsigned char)k->p[s][i];
            h *= 16777619u;
        }
    }
    return h;
}

static bool key_equal(const key3 *k, const char *s, size_t len)
{
    if (len != k->n[0] + k->n[1] + k->n[2])
        return false;
    for (int i = 0; i < 3; i++) {
        if (k->n[i] && memcmp(s, k->p[i], k->n[i]) != 0)
            return false;
        s += k->n[i];
    }
    return true;
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

static int32_t index_find(const text_index *ix, const char *arena, const size_t *off,
                          const uint32_t *len, const key3 *k)
{
    uint32_t i = key_hash(k) & ix->mask;
    for (;;) {
        int32_t id = ix->slot[i];
        if (id < 0)
            return -1;
        if (key_equal(k, arena + off[id], len[id]))
            return id;
        i = (i + 1) & ix->mask;
    }
}

static int32_t index_find2(const text_index *ix, const char *arena, const size_t *off,
                           const uint32_t *len, const char *a, size_t na, const char *b,
                           size_t nb)
{
    key3 k = {{a, b, NULL}, {na, nb, 0}};
    return index_find(ix, arena, off, len, &k);
}

/* Adds id unless a lower id already has the same text (or it is empty). */
static void index_add(text_index *ix, const char *arena, const size_t *off,
                      const uint32_t *len, int32_t id)
{
    key3 k = {{arena + off[id], NULL, NULL}, {len[id], 0, 0}};
    if (len[id] == 0 || index_find(ix, arena, off, len, &k) >= 0)
        return;
    uint32_t i = key_hash(&k) & ix->mask;
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

static int read_flag(const shoal_gguf *g, const char *key, bool *v, char *err, size_t errlen)
{
    bool f;
    int rc = shoal_gguf_get_bool(g, key, &f);
    if (rc == 0)
        *v = f;
    else if (rc != SHOAL_ERR_NOTFOUND) {
        set_err(err, errlen, "tokenizer: %s is not a bool", key);
        return SHOAL_ERR_FORMAT;
    }
    return 0;
}

/* Control tokens that end a turn in common chat formats. */
static const char *const eog_names[] = {
    "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
    "<|endoftext|>", "<|end_of_text|>", "<|return|>", "<|call|>",
};

/* tokenizer.ggml.pre values (llama.cpp's names) whose pre-tokenizer is
 * implemented here. ignore_merges and add_bos are llama.cpp's defaults. */
static const struct {
    const char *name;
    int pre;
    bool ignore_merges;
    bool add_bos;
} pre_names[] = {
    {"gpt-2", PRE_GPT2, false, false},      {"phi-2", PRE_GPT2, false, false},
    {"mpt", PRE_GPT2, false, false},        {"olmo", PRE_GPT2, false, false},
    {"jais", PRE_GPT2, false, false},       {"roberta-bpe", PRE_GPT2, false, false},
    {"exaone4", PRE_GPT2, false, false},    {"trillion", PRE_GPT2, false, false},
    {"granite-docling", PRE_GPT2, false, false},
    {"llama3", PRE_LLAMA3, true, true},     {"llama-v3", PRE_LLAMA3, true, true},
    {"llama-bpe", PRE_LLAMA3, true, true},  {"falcon3", PRE_LLAMA3, true, true},
    {"falcon-h1", PRE_LLAMA3, true, true},  {"pixtral", PRE_LLAMA3, true, true},
    {"midm-2.0", PRE_LLAMA3, true, true},   {"lfm2", PRE_LLAMA3, true, true},
    {"dbrx", PRE_LLAMA3, false, false},     {"smaug-bpe", PRE_LLAMA3, false, false},
    {"qwen2", PRE_QWEN2, false, false},     {"deepseek-r1-qwen", PRE_QWEN2, false, false},
    {"megrez", PRE_QWEN2, false, false},    {"stablelm2", PRE_QWEN2, false, false},
    {"hunyuan", PRE_QWEN2, false, false},   {"grok-2", PRE_QWEN2, false, false},
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
    free(t->merge);
    free(t->merge_off);
    free(t->merge_len);
    free(t->merge_ix.slot);
    free(t);
    *tp = NULL;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes map to U+0100.. in byte order. */
static void bpe_byte_map(shoal_tokenizer *t)
{
    int next = 256;
    for (int cp = 0; cp < 324; cp++)
        t->char_byte[cp] = -1;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int cp = self ? b : next++;
        t->byte_char_len[b] = (uint8_t)shoal_utf8_encode((uint32_t)cp, t->byte_char[b]);
        t->char_byte[cp] = (int16_t)b;
    }
}

/* BPE token text to printed bytes: each GPT-2 character becomes its byte;
 * anything else (not expected in a sane vocabulary) is copied as it is. */
static size_t bpe_unmap(const shoal_tokenizer *t, const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = shoal_utf8_decode(s + i, n - i, &cp);
        if (k > 0 && cp < 324 && t->char_byte[cp] >= 0) {
            out[o++] = (char)t->char_byte[cp];
            i += (size_t)k;
        } else {
            size_t m = k > 0 ? (size_t)k : 1;
            memcpy(out + o, s + i, m);
            o += m;
            i += m;
        }
    }
    return o;
}

static int load_merges(shoal_tokenizer *t, const shoal_gguf *g, char *err, size_t errlen)
{
    int64_t k = shoal_gguf_find_key(g, "tokenizer.ggml.merges");
    if (k < 0 || shoal_gguf_kv_type(g, k) != SHOAL_GGUF_ARRAY ||
        shoal_gguf_arr_type(g, k) != SHOAL_GGUF_STRING) {
        set_err(err, errlen, "tokenizer: tokenizer.ggml.merges is missing or not an array of strings");
        return SHOAL_ERR_FORMAT;
    }
    uint64_t n = shoal_gguf_arr_len(g, k);
    if (n > MAX_MERGES) {
        set_err(err, errlen, "tokenizer: %llu merges (max %d)", (unsigned long long)n,
                MAX_MERGES);
        return SHOAL_ERR_FORMAT;
    }
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        const shoal_gguf_str *s = shoal_gguf_arr_str(g, k, i);
        const char *sp = s && s->s && s->len > 1 ? memchr(s->s + 1, ' ', (size_t)s->len - 1)
                                                  : NULL;
        if (!sp || s->len > 2 * SHOAL_TOKENIZER_MAX_PIECE + 1 ||
            memchr(s->s, '\0', (size_t)s->len)) {
            set_err(err, errlen, "tokenizer: merge %llu is not \"left right\"",
                    (unsigned long long)i);
            return SHOAL_ERR_FORMAT;
        }
        total += (size_t)s->len + 1;
    }
    t->n_merges = (int32_t)n;
    t->merge = malloc(total ? total : 1);
    t->merge_off = malloc((n ? n : 1) * sizeof *t->merge_off);
    t->merge_len = malloc((n ? n : 1) * sizeof *t->merge_len);
    if (!t->merge || !t->merge_off || !t->merge_len || index_init(&t->merge_ix, (int32_t)n)) {
        set_err(err, errlen, "tokenizer: out of memory for %llu merges", (unsigned long long)n);
        return SHOAL_ERR_NOMEM;
    }
    size_t o = 0;
    for (uint64_t i = 0; i < n; i++) {
        const shoal_gguf_str *s = shoal_gguf_arr_str(g, k, i);
        memcpy(t->merge + o, s->s, (size_t)s->len + 1);
        t->merge_off[i] = o;
        t->merge_len[i] = (uint32_t)s->len;
        o += (size_t)s->len + 1;
        index_add(&t->merge_ix, t->merge, t->merge_off, t->merge_len, (int32_t)i);
    }
    return 0;
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
    int kind, pre = PRE_NONE;
    bool ignore_merges = false, add_bos_default = true;
    if (strcmp(model, "llama") == 0) {
        kind = KIND_SPM;
    } else if (strcmp(model, "gpt2") == 0) {
        kind = KIND_BPE;
        const char *pre_name = NULL;
        rc = shoal_gguf_get_str(g, "tokenizer.ggml.pre", &pre_name);
        if (rc != 0 || !pre_name)
            pre_name = "default";
        for (size_t i = 0; i < sizeof pre_names / sizeof pre_names[0]; i++) {
            if (strcmp(pre_name, pre_names[i].name) == 0) {
                pre = pre_names[i].pre;
                ignore_merges = pre_names[i].ignore_merges;
                add_bos_default = pre_names[i].add_bos;
            }
        }
        if (pre == PRE_NONE) {
            set_err(err, errlen, "tokenizer: byte-level BPE pre-tokenizer \"%.40s\" is not "
                    "supported (supported: GPT-2, Llama 3 and Qwen 2 families)", pre_name);
            return NULL;
        }
    } else {
        set_err(err, errlen, "tokenizer: tokenizer.ggml.model \"%.40s\" is not supported "
                "(only \"llama\" and \"gpt2\")", model);
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
    t->kind = kind;
    t->pre = pre;
    t->ignore_merges = ignore_merges;
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
    if (kind == KIND_BPE)
        bpe_byte_map(t);

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
        if (kind == KIND_BPE) {
            cl = bpe_unmap(t, s->s, len, c);
        } else {
            for (size_t j = 0; j < len;) {
                if (len - j >= 3 && memcmp(s->s + j, space_mark, 3) == 0) {
                    c[cl++] = ' ';
                    j += 3;
                } else {
                    c[cl++] = s->s[j++];
                }
            }
        }
        c[cl] = '\0';
        t->conv_off[i] = co;
        t->conv_len[i] = (uint32_t)cl;
        co += cl + 1;

        if (scores)
            memcpy(&t->score[i], (const char *)scores + 4 * (size_t)i, 4);
        else
            t->score[i] = 0.0f;

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
            ty = (kind == KIND_SPM && bv >= 0) ? SHOAL_TOKEN_BYTE : SHOAL_TOKEN_NORMAL;
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

    int32_t dflt_bos = kind == KIND_SPM ? 1 : -1, dflt_eos = kind == KIND_SPM ? 2 : -1;
    int32_t dflt_unk = kind == KIND_SPM ? 0 : -1;
    if ((rc = read_id(g, "tokenizer.ggml.bos_token_id", n, dflt_bos, &t->bos, err, errlen)) ||
        (rc = read_id(g, "tokenizer.ggml.eos_token_id", n, dflt_eos, &t->eos, err, errlen)) ||
        (rc = read_id(g, "tokenizer.ggml.unknown_token_id", n, dflt_unk, &t->unk, err, errlen)))
        goto fail;
    int32_t eot = -1, eom = -1;
    if ((rc = read_id(g, "tokenizer.ggml.eot_token_id", n, -1, &eot, err, errlen)) ||
        (rc = read_id(g, "tokenizer.ggml.eom_token_id", n, -1, &eom, err, errlen)))
        goto fail;

    t->add_bos = add_bos_default;
    t->add_space_prefix = kind == KIND_SPM;
    if (read_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err, errlen) ||
        (kind == KIND_SPM &&
         read_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err, errlen)))
        goto fail;

    if (index_init(&t->orig_ix, n))
        goto nomem;
    for (int32_t i = 0; i < n; i++)
        index_add(&t->orig_ix, t->orig, t->orig_off, t->orig_len, i);

    if (kind == KIND_SPM) {
        for (int b = 0; b < 256; b++) {
            if (t->byte_tok[b] < 0 && t->unk < 0) {
                set_err(err, errlen, "tokenizer: no byte token <0x%02X> and no unknown token", b);
                goto fail;
            }
        }
        if (index_init(&t->conv_ix, n))
            goto nomem;
        for (int32_t i = 0; i < n; i++)
            index_add(&t->conv_ix, t->conv, t->conv_off, t->conv_len, i);
    } else {
        for (int b = 0; b < 256; b++) {
            if (index_find2(&t->orig_ix, t->orig, t->orig_off, t->orig_len, t->byte_char[b],
                            t->byte_char_len[b], NULL, 0) < 0) {
                set_err(err, errlen, "tokenizer: byte-level BPE vocabulary lacks the "
                        "character of byte 0x%02X", b);
                goto fail;
            }
        }
        if ((rc = load_merges(t, g, err, errlen)))
            goto fail;
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

/* ---- merging ------------------------------------------------------------ */

typedef struct {
    int32_t a;    /* SPM: token id; BPE: start in the mapped text; -1 once merged away */
    int32_t n;    /* BPE: length in the mapped text */
    int32_t prev; /* -1 at the start of the text (SPM) or word (BPE) */
    int32_t next;
} sym;

typedef struct {
    float prio;          /* SPM: merged token's score; BPE: -rank */
    int32_t left, right; /* symbol indices */
    int32_t lk, rk;      /* SPM: their ids, BPE: their lengths, when pushed */
    int32_t mid;         /* SPM: the merged token */
} cand;

typedef struct {
    const shoal_tokenizer *t;
    sym *s;
    int32_t n_sym;
    cand *h;
    size_t n_h;
    char *mapped;       /* BPE: the text in GPT-2 characters (owned) */
} enc_state;

static bool cand_before(const cand *a, const cand *b)
{
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
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
    const sym *l = &e->s[left], *r = &e->s[right];
    if (t->kind == KIND_SPM) {
        int32_t id = index_find2(&t->conv_ix, t->conv, t->conv_off, t->conv_len,
                                 t->conv + t->conv_off[l->a], t->conv_len[l->a],
                                 t->conv + t->conv_off[r->a], t->conv_len[r->a]);
        if (id < 0 || !(t->score[id] > MERGE_SCORE_FLOOR))
            return;
        heap_push(e, (cand){t->score[id], left, right, l->a, r->a, id});
    } else {
        key3 k = {{e->mapped + l->a, " ", e->mapped + r->a}, {(size_t)l->n, 1, (size_t)r->n}};
        int32_t rank = index_find(&t->merge_ix, t->merge, t->merge_off, t->merge_len, &k);
        if (rank < 0)
            return;
        heap_push(e, (cand){-(float)rank, left, right, l->n, r->n, -1});
    }
}

static void merge_all(enc_state *e)
{
    const bool spm = e->t->kind == KIND_SPM;
    while (e->n_h > 0) {
        cand c = heap_pop(e);
        sym *l = &e->s[c.left], *r = &e->s[c.right];
        if (l->a < 0 || r->a < 0 || l->next != c.right)
            continue; /* stale: a side was merged away, or they are no longer adjacent */
        if (spm ? (l->a != c.lk || r->a != c.rk) : (l->n != c.lk || r->n != c.rk))
            continue;
        if (spm)
            l->a = c.mid;
        else
            l->n += r->n;
        l->next = r->next;
        if (r->next >= 0)
            e->s[r->next].prev = c.left;
        r->a = -1;
        try_pair(e, l->prev, c.left);
        try_pair(e, c.left, l->next);
    }
}

static void add_sym(enc_state *e, int32_t a, int32_t n, bool link)
{
    int32_t i = e->n_sym++;
    e->s[i] = (sym){a, n, link ? i - 1 : -1, -1};
    if (link && i > 0)
        e->s[i - 1].next = i;
}

/* ---- SentencePiece-style encoding (llama2.c) ---------------------------- */

/* One character (or malformed group) of 1..4 bytes. */
static void spm_add_group(enc_state *e, const char *p, size_t n)
{
    const shoal_tokenizer *t = e->t;
    int32_t id = index_find2(&t->conv_ix, t->conv, t->conv_off, t->conv_len, p, n, NULL, 0);
    if (id >= 0) {
        add_sym(e, id, 0, true);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t b = t->byte_tok[(unsigned char)p[i]];
        add_sym(e, b >= 0 ? b : t->unk, 0, true);
    }
}

static void spm_encode(enc_state *e, const char *text, size_t len)
{
    if (len > 0 && e->t->add_space_prefix)
        spm_add_group(e, " ", 1);
    for (size_t i = 0; i < len;) {
        size_t j = i + 1;
        while (j < len && ((unsigned char)text[j] & 0xC0) == 0x80 && j - i < 4)
            j++;
        spm_add_group(e, text + i, j - i);
        i = j;
    }
    for (int32_t i = 0; i + 1 < e->n_sym; i++)
        try_pair(e, i, i + 1);
    merge_all(e);
}

/* ---- byte-level BPE: pre-tokenizers ------------------------------------- */

enum { F_L = 1, F_N = 2, F_WS = 4, F_IN = 8 };
#define CP_INVALID 0xFFFFFFFEu /* a byte that is not part of a valid character */
#define CP_END 0xFFFFFFFFu

typedef struct {
    uint32_t cp;
    uint32_t start; /* byte offset */
    uint8_t fl;
} unit;

/* Splits text into units: valid characters, and single invalid bytes
 * (which classify as "other": not letter, number or space). */
static int32_t make_units(const char *text, size_t len, unit *u)
{
    int32_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = shoal_utf8_decode(text + i, len - i, &cp);
        uint8_t fl = F_IN;
        if (k == 0) {
            cp = CP_INVALID;
            k = 1;
        } else if (shoal_utf8_is_letter(cp)) {
            fl |= F_L;
        } else if (shoal_utf8_is_number(cp)) {
            fl |= F_N;
        } else if (shoal_utf8_is_space(cp)) {
            fl |= F_WS;
        }
        u[n++] = (unit){cp, (uint32_t)i, fl};
        i += (size_t)k;
    }
    return n;
}

typedef struct {
    const unit *u;
    int32_t n;
    int32_t *ends; /* word ends, in units */
    int32_t n_words;
    int32_t prev_end;
} splitter;

static uint8_t fl_at(const splitter *sp, int32_t i)
{
    return i < sp->n ? sp->u[i].fl : 0;
}

static uint32_t cp_at(const splitter *sp, int32_t i)
{
    return i < sp->n ? sp->u[i].cp : CP_END;
}

static bool is_other(uint8_t fl)
{
    return (fl & F_IN) && !(fl & (F_L | F_N | F_WS));
}

static void emit_word(splitter *sp, int32_t end)
{
    if (end > sp->prev_end)
        sp->ends[sp->n_words++] = end;
    sp->prev_end = end;
}

static uint32_t ascii_lower(uint32_t c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* 's|'t|'re|'ve|'m|'ll|'d (case-insensitive when ci): the match length. */
static int contraction(const splitter *sp, int32_t pos, bool ci)
{
    if (cp_at(sp, pos) != '\'' || pos + 1 >= sp->n)
        return 0;
    uint32_t a = cp_at(sp, pos + 1), b = pos + 2 < sp->n ? cp_at(sp, pos + 2) : CP_END;
    if (ci) {
        a = ascii_lower(a);
        b = ascii_lower(b);
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* The whitespace tail shared by all patterns:
 * [\s*[\r\n]+ (with_newlines)] | \s+(?!\S) | \s+ | a lone unit. */
static int32_t split_space(splitter *sp, int32_t pos, bool with_newlines)
{
    int32_t k = 0, last_nl = -1;
    while (fl_at(sp, pos + k) & F_WS) {
        uint32_t c = cp_at(sp, pos + k);
        if (c == '\r' || c == '\n')
            last_nl = pos + k + 1;
        k++;
    }
    if (with_newlines && last_nl >= 0)
        return last_nl;
    if (k > 1 && pos + k < sp->n)
        return pos + k - 1;
    if (k > 0)
        return pos + k;
    return pos + 1;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static void split_gpt2(splitter *sp)
{
    for (int32_t pos = 0; pos < sp->n;) {
        int c = contraction(sp, pos, false);
        if (c) {
            pos += c;
            emit_word(sp, pos);
            continue;
        }
        uint32_t cp = cp_at(sp, pos);
        int32_t p = pos + (cp == ' ');
        uint8_t f2 = fl_at(sp, p);
        if (f2 & (F_L | F_N)) {
            uint8_t cls = f2 & (F_L | F_N);
            while (fl_at(sp, p) & cls)
                p++;
            pos = p;
        } else if (is_other(f2)) {
            while (is_other(fl_at(sp, p)))
                p++;
            pos = p;
        } else {
            pos = split_space(sp, pos, false);
        }
        emit_word(sp, pos);
    }
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static void split_llama3(splitter *sp, int max_digits)
{
    for (int32_t pos = 0; pos < sp->n;) {
        int c = contraction(sp, pos, true);
        if (c) {
            pos += c;
            emit_word(sp, pos);
            continue;
        }
        uint32_t cp = cp_at(sp, pos);
        uint8_t f = fl_at(sp, pos);
        if (!(cp == '\r' || cp == '\n' || (f & F_N)) &&
            ((f & F_L) || (fl_at(sp, pos + 1) & F_L))) {
            pos++;
            while (fl_at(sp, pos) & F_L)
                pos++;
            emit_word(sp, pos);
            continue;
        }
        if (f & F_N) {
            int32_t ini = pos;
            while (fl_at(sp, pos) & F_N) {
                if (++pos - ini >= max_digits) {
                    emit_word(sp, pos);
                    ini = pos;
                }
            }
            emit_word(sp, pos);
            continue;
        }
        uint8_t f2 = cp == ' ' ? fl_at(sp, pos + 1) : f;
        if (!(f2 & (F_WS | F_L | F_N)) && (f & F_IN)) {
            pos += (cp == ' ');
            while (is_other(fl_at(sp, pos)))
                pos++;
            while (cp_at(sp, pos) == '\r' || cp_at(sp, pos) == '\n')
                pos++;
            emit_word(sp, pos);
            continue;
        }
        pos = split_space(sp, pos, true);
        emit_word(sp, pos);
    }
}

static int32_t bpe_split(const shoal_tokenizer *t, const unit *u, int32_t n, int32_t *ends)
{
    splitter sp = {u, n, ends, 0, 0};
    switch (t->pre) {
    case PRE_GPT2: split_gpt2(&sp); break;
    case PRE_LLAMA3: split_llama3(&sp, 3); break;
    default: split_llama3(&sp, 1); break;
    }
    return sp.n_words;
}

/* ---- byte-level BPE: encoding ------------------------------------------- */

static int bpe_encode(enc_state *e, const char *text, size_t len)
{
    const shoal_tokenizer *t = e->t;
    unit *u = malloc((len + 1) * sizeof *u);
    int32_t *ends = malloc((len + 1) * sizeof *ends);
    char *mapped = malloc(2 * len + 1);
    int32_t *moff = malloc((len + 1) * sizeof *moff); /* byte -> mapped offset */
    if (!u || !ends || !mapped || !moff) {
        free(u);
        free(ends);
        free(mapped);
        free(moff);
        return SHOAL_ERR_NOMEM;
    }
    int32_t m = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)text[i];
        moff[i] = m;
        memcpy(mapped + m, t->byte_char[b], t->byte_char_len[b]);
        m += t->byte_char_len[b];
    }
    moff[len] = m;
    e->mapped = mapped;

    int32_t nu = make_units(text, len, u);
    int32_t nw = bpe_split(t, u, nu, ends);
    int32_t ustart = 0;
    for (int32_t w = 0; w < nw; w++) {
        uint32_t b0 = u[ustart].start;
        uint32_t b1 = ends[w] < nu ? u[ends[w]].start : (uint32_t)len;
        ustart = ends[w];
        if (t->ignore_merges &&
            index_find2(&t->orig_ix, t->orig, t->orig_off, t->orig_len, mapped + moff[b0],
                        (size_t)(moff[b1] - moff[b0]), NULL, 0) >= 0) {
            add_sym(e, moff[b0], moff[b1] - moff[b0], false);
            continue;
        }
        int32_t first = e->n_sym;
        for (uint32_t b = b0; b < b1; b++)
            add_sym(e, moff[b], moff[b + 1] - moff[b], b > b0);
        for (int32_t i = first; i + 1 < e->n_sym; i++)
            try_pair(e, i, i + 1);
    }
    merge_all(e);
    free(u);
    free(ends);
    free(moff);
    return 0;
}

/* The token of a final BPE symbol, or its characters one by one. */
static int bpe_emit(const enc_state *e, const sym *s, int32_t *out, int max, int n)
{
    const shoal_tokenizer *t = e->t;
    int32_t id = index_find2(&t->orig_ix, t->orig, t->orig_off, t->orig_len, e->mapped + s->a,
                             (size_t)s->n, NULL, 0);
    if (id >= 0) {
        if (n < max)
            out[n] = id;
        return n + 1;
    }
    for (int32_t i = 0; i < s->n;) {
        uint32_t cp;
        int k = shoal_utf8_decode(e->mapped + s->a + i, (size_t)(s->n - i), &cp);
        if (k <= 0)
            k = 1;
        id = index_find2(&t->orig_ix, t->orig, t->orig_off, t->orig_len, e->mapped + s->a + i,
                         (size_t)k, NULL, 0);
        if (id >= 0) { /* always, for a validated vocabulary */
            if (n < max)
                out[n] = id;
            n++;
        }
        i += k;
    }
    return n;
}

/* ---- encoding ----------------------------------------------------------- */

int shoal_tokenizer_encode(const shoal_tokenizer *t, const char *text, size_t len,
                           bool add_bos, int32_t *out, int max, int *n_out)
{
    if (n_out)
        *n_out = 0;
    if (!t || !n_out || (!text && len > 0) || max < 0 || (!out && max > 0))
        return SHOAL_ERR_ARG;
    /* Symbols <= len + 1; heap entries < 3 * symbols; mapped text <= 2 len;
     * all fit an int32. */
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
    int rc = 0;
    if (t->kind == KIND_SPM)
        spm_encode(&e, text, len);
    else
        rc = bpe_encode(&e, text, len);

    int n = 0;
    if (rc == 0) {
        if (add_bos && t->bos >= 0) {
            if (n < max)
                out[n] = t->bos;
            n++;
        }
        for (int32_t i = 0; i < e.n_sym; i++) {
            if (e.s[i].a < 0)
                continue;
            if (t->kind == KIND_SPM) {
                if (n < max)
                    out[n] = e.s[i].a;
                n++;
            } else {
                n = bpe_emit(&e, &e.s[i], out, max, n);
            }
        }
    }
    free(e.mapped);
    free(e.s);
    free(e.h);
    if (rc)
        return rc;
    *n_out = n;
    return n > max ? SHOAL_ERR_RANGE : 0;
}

int shoal_tokenizer_pretokenize(const shoal_tokenizer *t, const char *text, size_t len,
                                size_t *ends, size_t max, size_t *n_out)
{
    if (n_out)
        *n_out = 0;
    if (!t || !n_out || (!text && len > 0) || (!ends && max > 0))
        return SHOAL_ERR_ARG;
    if (len > (size_t)(INT_MAX / 4) - 4)
        return SHOAL_ERR_RANGE;
    if (t->kind == KIND_SPM) {
        if (len > 0 && max > 0)
            ends[0] = len;
        *n_out = len > 0;
        return *n_out > max ? SHOAL_ERR_RANGE : 0;
    }
    unit *u = malloc((len + 1) * sizeof *u);
    int32_t *w = malloc((len + 1) * sizeof *w);
    if (!u || !w) {
        free(u);
        free(w);
        return SHOAL_ERR_NOMEM;
    }
    int32_t nu = make_units(text, len, u);
    int32_t nw = bpe_split(t, u, nu, w);
    for (int32_t i = 0; i < nw && (size_t)i < max; i++)
        ends[i] = w[i] < nu ? u[w[i]].start : len;
    free(u);
    free(w);
    *n_out = (size_t)nw;
    return (size_t)nw > max ? SHOAL_ERR_RANGE : 0;
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
    case SHOAL_TOKEN_USER_DEFINED:
        if (t->kind == KIND_BPE) { /* printed as spelled (llama.cpp) */
            s = t->orig + t->orig_off[tok];
            n = t->orig_len[tok];
            break;
        }
        /* fall through */
    default:
        s = t->conv + t->conv_off[tok];
        n = t->conv_len[tok];
        if (t->kind == KIND_SPM && prev >= 0 && prev == t->bos && n > 0 && s[0] == ' ') {
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
    return index_find2(&t->orig_ix, t->orig, t->orig_off, t->orig_len, text, len, NULL, 0);
}
