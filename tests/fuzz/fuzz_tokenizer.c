/*
 * Fuzz target: the tokenizer on arbitrary bytes, with the real model's
 * vocabulary (stories260K.gguf, loaded once; absent file: nothing to do).
 *
 * For every input: encoding succeeds with room for len + 2 tokens and fails
 * cleanly with SHOAL_ERR_RANGE (same count, nothing written past max) with
 * one token less; every id is in range; decoding gives the input back byte
 * for byte (true of this vocabulary for any bytes, valid UTF-8 or not: byte
 * fallback is lossless and no merge can form a control, unknown or byte
 * token, as none of those is the concatenation of two other pieces); the
 * UTF-8 stream passes the decoded pieces through unchanged in raw mode and
 * yields valid UTF-8 in replace mode. Inputs up to 512 bytes without NUL are
 * also encoded by a transcription of llama2.c's quadratic encoder and must
 * give the same tokens.
 *
 * The same input also goes through three byte-level BPE tokenizers (GPT-2,
 * Llama 3 and Qwen 2 pre-tokenizers) on a small synthetic vocabulary
 * written once to a temporary GGUF file: word ends must increase strictly
 * and end at the input's length, and decoding must give the input back.
 */
#include "client/tokenizer.h"
#include "client/utf8.h"
#include "kernels/err.h"
#include "kernels/gguf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SHOAL_SHARED
#define SHOAL_SHARED "../shared"
#endif

#define REF_MAX 512

typedef struct {
    char *str;
    int id;
} ref_index;

static struct {
    int loaded; /* 0 not tried, 1 ready, -1 unavailable */
    shoal_tokenizer *t;
    shoal_tokenizer *bpe[3];
    int n;
    char **vocab; /* "▁" read as ' ' */
    float *scores;
    ref_index *sorted;
    size_t max_len;
} F;

static int ref_cmp(const void *a, const void *b)
{
    return strcmp(((const ref_index *)a)->str, ((const ref_index *)b)->str);
}

static int ref_lookup(char *s)
{
    ref_index key = {.str = s};
    ref_index *res = bsearch(&key, F.sorted, (size_t)F.n, sizeof key, ref_cmp);
    return res ? res->id : -1;
}

/* 256 byte characters, some merged pieces, and the merges that make them. */
static shoal_tokenizer *build_bpe(const char *pre)
{
    static const char *const pieces[] = {"\xC4\xA0t", "he", "\xC4\xA0the", "in", "ing",
                                         "\xC4\xA0\x61", "an", "and", "\xC4\xA0\x61nd", "er"};
    static const char *const merges[] = {"\xC4\xA0 t", "h e", "\xC4\xA0t he", "i n",
                                         "in g", "\xC4\xA0 a", "a n", "an d",
                                         "\xC4\xA0\x61 nd", "e r", "n d"};
    static char chars[256][5];
    const char *toks[256 + 10];
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int k = shoal_utf8_encode((uint32_t)(self ? b : next++), chars[b]);
        chars[b][k] = '\0';
        toks[b] = chars[b];
    }
    for (int i = 0; i < 10; i++)
        toks[256 + i] = pieces[i];
    char path[128], err[256];
    snprintf(path, sizeof path, "/tmp/shoal_fuzz_tokenizer_%d.gguf", (int)getpid());
    shoal_gguf_writer *w = shoal_gguf_writer_new();
    shoal_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    shoal_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    shoal_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 266);
    shoal_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges,
                                  sizeof merges / sizeof merges[0]);
    int rc = shoal_gguf_writer_write(w, path, err, sizeof err);
    shoal_gguf_writer_destroy(&w);
    shoal_gguf *g = NULL;
    if (rc || shoal_gguf_open(path, &g, err, sizeof err) != 0)
        abort();
    unlink(path);
    shoal_tokenizer *t = shoal_tokenizer_from_gguf(g, err, sizeof err);
    shoal_gguf_close(&g);
    if (!t)
        abort();
    return t;
}

static void check_bpe(const shoal_tokenizer *t, const uint8_t *data, size_t size)
{
    size_t *ends = malloc((size + 1) * sizeof *ends), nw = 0;
    int32_t *toks = malloc((size + 1) * sizeof *toks);
    char *dec = malloc(size + 1);
    if (!ends || !toks || !dec)
        abort();
    if (shoal_tokenizer_pretokenize(t, (const char *)data, size, ends, size + 1, &nw) != 0 ||
        nw > size || (size > 0 && (nw == 0 || ends[nw - 1] != size)))
        abort();
    for (size_t i = 1; i < nw; i++)
        if (ends[i] <= ends[i - 1])
            abort();
    int n = 0;
    if (shoal_tokenizer_encode(t, (const char *)data, size, false, toks, (int)size + 1, &n) != 0 ||
        n < 0 || (size_t)n > size)
        abort();
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        char piece[64];
        int k = shoal_tokenizer_piece(t, i ? toks[i - 1] : -1, toks[i], piece, sizeof piece);
        if (k < 0 || (size_t)k > sizeof piece || (size_t)k > size - o)
            abort();
        memcpy(dec + o, piece, (size_t)k);
        o += (size_t)k;
    }
    if (o != size || memcmp(dec, data, size) != 0)
        abort();
    free(dec);
    free(toks);
    free(ends);
}

static void load(void)
{
    F.loaded = -1;
    shoal_gguf *g = NULL;
    char err[256];
    if (shoal_gguf_open(SHOAL_SHARED "/models/stories260K.gguf", &g, err, sizeof err) != 0)
        return;
    F.t = shoal_tokenizer_from_gguf(g, err, sizeof err);
    int64_t kt = shoal_gguf_find_key(g, "tokenizer.ggml.tokens");
    int64_t ks = shoal_gguf_find_key(g, "tokenizer.ggml.scores");
    if (!F.t || kt < 0 || ks < 0)
        abort(); /* the shipped model must load */
    F.n = (int)shoal_gguf_arr_len(g, kt);
    F.vocab = calloc((size_t)F.n, sizeof *F.vocab);
    F.scores = malloc((size_t)F.n * sizeof *F.scores);
    F.sorted = malloc((size_t)F.n * sizeof *F.sorted);
    const char *sd = shoal_gguf_arr_data(g, ks);
    for (int i = 0; i < F.n; i++) {
        const shoal_gguf_str *s = shoal_gguf_arr_str(g, kt, (uint64_t)i);
        char *c = malloc(s->len + 1);
        size_t o = 0;
        for (size_t j = 0; j < s->len;) {
            if (s->len - j >= 3 && memcmp(s->s + j, "\xE2\x96\x81", 3) == 0) {
                c[o++] = ' ';
                j += 3;
            } else {
                c[o++] = s->s[j++];
            }
        }
        c[o] = '\0';
        F.vocab[i] = c;
        F.max_len = o > F.max_len ? o : F.max_len;
        memcpy(&F.scores[i], sd + 4 * (size_t)i, 4);
        F.sorted[i] = (ref_index){c, i};
    }
    qsort(F.sorted, (size_t)F.n, sizeof *F.sorted, ref_cmp);
    shoal_gguf_close(&g);
    F.bpe[0] = build_bpe("gpt-2");
    F.bpe[1] = build_bpe("llama-bpe");
    F.bpe[2] = build_bpe("qwen2");
    F.loaded = 1;
}

/* llama2.c run.c encode(), with BOS. */
static int ref_encode(const char *text, int *tokens)
{
    char str_buffer[2 * 64 + 3 + 2 * REF_MAX];
    size_t str_len = 0;
    int n = 0;
    tokens[n++] = 1;
    if (text[0] != '\0')
        tokens[n++] = ref_lookup(" ");
    for (const char *c = text; *c != '\0'; c++) {
        if ((*c & 0xC0) != 0x80)
            str_len = 0;
        str_buffer[str_len++] = *c;
        str_buffer[str_len] = '\0';
        if ((*(c + 1) & 0xC0) == 0x80 && str_len < 4)
            continue;
        int id = ref_lookup(str_buffer);
        if (id != -1) {
            tokens[n++] = id;
        } else {
            for (size_t i = 0; i < str_len; i++)
                tokens[n++] = (unsigned char)str_buffer[i] + 3;
        }
        str_len = 0;
    }
    for (;;) {
        float best_score = -1e10f;
        int best_id = -1, best_idx = -1;
        for (int i = 0; i < n - 1; i++) {
            size_t a = strlen(F.vocab[tokens[i]]), b = strlen(F.vocab[tokens[i + 1]]);
            if (a + b + 1 > sizeof str_buffer)
                continue;
            memcpy(str_buffer, F.vocab[tokens[i]], a);
            memcpy(str_buffer + a, F.vocab[tokens[i + 1]], b + 1);
            int id = ref_lookup(str_buffer);
            if (id != -1 && F.scores[id] > best_score) {
                best_score = F.scores[id];
                best_id = id;
                best_idx = i;
            }
        }
        if (best_idx == -1)
            break;
        tokens[best_idx] = best_id;
        for (int i = best_idx + 1; i < n - 1; i++)
            tokens[i] = tokens[i + 1];
        n--;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (F.loaded == 0)
        load();
    if (F.loaded < 0 || size > (1 << 20))
        return 0;
    const shoal_tokenizer *t = F.t;
    const char *text = (const char *)data;
    int max = (int)size + 2;
    int32_t *toks = malloc((size_t)(max + 1) * sizeof *toks);
    char *dec = malloc(size + 1);
    char *sout = malloc(SHOAL_UTF8_STREAM_BOUND(64) + 3 * size + 16);
    if (!toks || !dec || !sout)
        abort();

    int n = -1;
    if (shoal_tokenizer_encode(t, text, size, true, toks, max, &n) != 0 || n < 1 || n > max ||
        toks[0] != shoal_tokenizer_bos(t))
        abort();
    if (n > 1) {
        int m = -1;
        int32_t keep = toks[n - 1];
        toks[n - 1] = -12345; /* just past the smaller max: must stay */
        if (shoal_tokenizer_encode(t, text, size, true, toks, n - 1, &m) != SHOAL_ERR_RANGE ||
            m != n || toks[n - 1] != -12345)
            abort();
        toks[n - 1] = keep;
    }

    size_t o = 0, so = 0;
    shoal_utf8_stream raw, rep;
    shoal_utf8_stream_init(&raw, false);
    shoal_utf8_stream_init(&rep, true);
    char *rep_out = malloc(3 * size + 16);
    size_t ro = 0;
    if (!rep_out)
        abort();
    for (int i = 1; i < n; i++) {
        if (toks[i] < 0 || toks[i] >= shoal_tokenizer_n_vocab(t))
            abort();
        char piece[64];
        int k = shoal_tokenizer_piece(t, toks[i - 1], toks[i], piece, sizeof piece);
        if (k < 0 || (size_t)k > sizeof piece || (size_t)k > size - o)
            abort();
        memcpy(dec + o, piece, (size_t)k);
        o += (size_t)k;
        size_t w;
        if (shoal_utf8_stream_push(&raw, piece, (size_t)k, sout + so,
                                   SHOAL_UTF8_STREAM_BOUND(k), &w) != 0)
            abort();
        so += w;
        if (shoal_utf8_stream_push(&rep, piece, (size_t)k, rep_out + ro,
                                   SHOAL_UTF8_STREAM_BOUND(k), &w) != 0)
            abort();
        ro += w;
    }
    size_t w;
    shoal_utf8_stream_flush(&raw, sout + so, SHOAL_UTF8_STREAM_BOUND(0), &w);
    so += w;
    shoal_utf8_stream_flush(&rep, rep_out + ro, SHOAL_UTF8_STREAM_BOUND(0), &w);
    ro += w;
    if (o != size || memcmp(dec, data, size) != 0)
        abort();
    if (so != size || memcmp(sout, data, size) != 0)
        abort();
    if (!shoal_utf8_valid(rep_out, ro))
        abort();
    if (shoal_utf8_valid(data, size) && (ro != size || memcmp(rep_out, data, size) != 0))
        abort();

    if (size <= REF_MAX && !memchr(data, '\0', size)) {
        char z[REF_MAX + 1];
        memcpy(z, data, size);
        z[size] = '\0';
        int ref[REF_MAX + 3];
        int rn = ref_encode(z, ref);
        if (rn != n)
            abort();
        for (int i = 0; i < n; i++)
            if (ref[i] != toks[i])
                abort();
    }
    for (int i = 0; i < 3; i++)
        check_bpe(F.bpe[i], data, size);
    free(rep_out);
    free(sout);
    free(dec);
    free(toks);
    return 0;
}
