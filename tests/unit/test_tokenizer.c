/*
 * Tokenizer and UTF-8 stream tests.
 *
 * With the real model (stories260K.gguf) and the llama2.c reference runs:
 * every case's prompt encodes to the reference prompt tokens and the
 * reference tokens decode to the reference text byte for byte. A literal
 * transcription of llama2.c's quadratic `encode` (below, ref_encode) is run
 * side by side with the real encoder on prompts, stories, random piece
 * soups, random bytes and Unicode. Then edge cases (empty text, the max
 * limit, byte fallback, a 100 KB text) and malformed vocabularies written
 * with the GGUF writer. Byte-level BPE on a small synthetic vocabulary:
 * pre-tokenizer word boundaries against tables made with the patterns
 * themselves, merges by rank, ignore_merges, pieces, round trips, and
 * malformed BPE vocabularies. Last, the UTF-8 helpers and stream.
 */
#include "client/tokenizer.h"
#include "client/utf8.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "tests/check.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MODEL SHOAL_SHARED "/models/stories260K.gguf"
#define REF SHOAL_SHARED "/reference/"

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

static uint64_t rng_state = 0x1234567887654321ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* ---- llama2.c's encode, transcribed (vocab with "▁" read as ' ') -------- */

typedef struct {
    char *str;
    int id;
} ref_index;

typedef struct {
    int n;
    char **vocab;
    float *scores;
    ref_index *sorted;
    size_t max_len;
} ref_tok;

static int ref_cmp(const void *a, const void *b)
{
    return strcmp(((const ref_index *)a)->str, ((const ref_index *)b)->str);
}

static int ref_lookup(const ref_tok *r, char *s)
{
    ref_index key = {.str = s};
    ref_index *res = bsearch(&key, r->sorted, (size_t)r->n, sizeof key, ref_cmp);
    return res ? res->id : -1;
}

static int ref_init(ref_tok *r, const shoal_gguf *g)
{
    int64_t kt = shoal_gguf_find_key(g, "tokenizer.ggml.tokens");
    int64_t ks = shoal_gguf_find_key(g, "tokenizer.ggml.scores");
    if (kt < 0 || ks < 0)
        return -1;
    r->n = (int)shoal_gguf_arr_len(g, kt);
    r->vocab = calloc((size_t)r->n, sizeof *r->vocab);
    r->scores = malloc((size_t)r->n * sizeof *r->scores);
    r->sorted = malloc((size_t)r->n * sizeof *r->sorted);
    r->max_len = 0;
    const char *sd = shoal_gguf_arr_data(g, ks);
    for (int i = 0; i < r->n; i++) {
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
        r->vocab[i] = c;
        if (o > r->max_len)
            r->max_len = o;
        memcpy(&r->scores[i], sd + 4 * (size_t)i, 4);
        r->sorted[i] = (ref_index){c, i};
    }
    qsort(r->sorted, (size_t)r->n, sizeof *r->sorted, ref_cmp);
    return 0;
}

static void ref_free(ref_tok *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->vocab[i]);
    free(r->vocab);
    free(r->scores);
    free(r->sorted);
}

/* text is NUL-terminated; tokens has room for strlen(text) + 3. */
static void ref_encode(const ref_tok *r, const char *text, int bos, int *tokens, int *n_tokens)
{
    char *str_buffer = malloc(r->max_len * 2 + 1 + 2);
    size_t str_len = 0;
    *n_tokens = 0;
    if (bos)
        tokens[(*n_tokens)++] = 1;
    if (text[0] != '\0')
        tokens[(*n_tokens)++] = ref_lookup(r, " ");
    for (const char *c = text; *c != '\0'; c++) {
        if ((*c & 0xC0) != 0x80)
            str_len = 0;
        str_buffer[str_len++] = *c;
        str_buffer[str_len] = '\0';
        if ((*(c + 1) & 0xC0) == 0x80 && str_len < 4)
            continue;
        int id = ref_lookup(r, str_buffer);
        if (id != -1) {
            tokens[(*n_tokens)++] = id;
        } else {
            for (size_t i = 0; i < str_len; i++)
                tokens[(*n_tokens)++] = (unsigned char)str_buffer[i] + 3;
        }
        str_len = 0;
    }
    for (;;) {
        float best_score = -1e10f;
        int best_id = -1, best_idx = -1;
        for (int i = 0; i < *n_tokens - 1; i++) {
            sprintf(str_buffer, "%s%s", r->vocab[tokens[i]], r->vocab[tokens[i + 1]]);
            int id = ref_lookup(r, str_buffer);
            if (id != -1 && r->scores[id] > best_score) {
                best_score = r->scores[id];
                best_id = id;
                best_idx = i;
            }
        }
        if (best_idx == -1)
            break;
        tokens[best_idx] = best_id;
        for (int i = best_idx + 1; i < *n_tokens - 1; i++)
            tokens[i] = tokens[i + 1];
        (*n_tokens)--;
    }
    free(str_buffer);
}

/* ---- helpers ------------------------------------------------------------ */

/* Decodes toks[from..n) after toks[from-1] into a malloc'd string. */
static char *decode(const shoal_tokenizer *t, const int32_t *toks, int from, int n, size_t *len)
{
    size_t cap = 64, o = 0;
    char *s = malloc(cap);
    for (int i = from; i < n; i++) {
        char piece[64];
        int k = shoal_tokenizer_piece(t, i > 0 ? toks[i - 1] : -1, toks[i], piece, sizeof piece);
        if (k < 0 || (size_t)k > sizeof piece) {
            free(s);
            return NULL;
        }
        if (o + (size_t)k + 1 > cap) {
            cap = 2 * (o + (size_t)k + 1);
            s = realloc(s, cap);
        }
        memcpy(s + o, piece, (size_t)k);
        o += (size_t)k;
    }
    s[o] = '\0';
    *len = o;
    return s;
}

/* Encodes with BOS, decodes, and checks the round trip and llama2.c. */
static void check_text(const shoal_tokenizer *t, const ref_tok *r, const char *text, size_t len)
{
    int max = (int)len + 2;
    int32_t *toks = malloc((size_t)max * sizeof *toks);
    int n = -1;
    int rc = shoal_tokenizer_encode(t, text, len, true, toks, max, &n);
    CHECK_MSG(rc == 0 && n >= 1 && n <= max && toks[0] == 1, "rc %d n %d", rc, n);
    if (rc != 0) {
        free(toks);
        return;
    }
    size_t dl = 0;
    char *d = decode(t, toks, 1, n, &dl);
    CHECK_MSG(d && dl == len && memcmp(d, text, len) == 0, "round trip of %zu bytes", len);
    free(d);
    if (r && !memchr(text, '\0', len)) {
        char *z = malloc(len + 1);
        memcpy(z, text, len);
        z[len] = '\0';
        int *rt = malloc((len + 3) * sizeof *rt);
        int rn = 0;
        ref_encode(r, z, 1, rt, &rn);
        bool same = rn == n;
        for (int i = 0; same && i < n; i++)
            same = rt[i] == toks[i];
        CHECK_MSG(same, "differs from llama2.c on %zu bytes \"%.60s\" (%d vs %d tokens)", len,
                  z, n, rn);
        free(rt);
        free(z);
    }
    free(toks);
}

static int parse_tokens(const char *s, int32_t *out, int max)
{
    int n = 0;
    char *end;
    for (;;) {
        long v = strtol(s, &end, 10);
        if (end == s)
            break;
        if (n < max)
            out[n] = (int32_t)v;
        n++;
        s = end;
    }
    return n;
}

/* ---- tests with the real model ------------------------------------------ */

static void test_reference_cases(const shoal_tokenizer *t, const ref_tok *r)
{
    size_t tsv_len;
    char *tsv = read_file(REF "cases.tsv", &tsv_len);
    CHECK(tsv != NULL);
    if (!tsv)
        return;
    int cases = 0;
    for (char *line = tsv, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *tab1 = strchr(line, '\t');
        char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
        CHECK(tab2 != NULL);
        if (!tab2)
            continue;
        *tab1 = *tab2 = '\0';
        const char *name = line, *prompt = tab2 + 1;
        int n_gen = atoi(tab1 + 1);
        char path[512];
        size_t tl, xl;
        snprintf(path, sizeof path, REF "%s.tokens", name);
        char *tokfile = read_file(path, &tl);
        snprintf(path, sizeof path, REF "%s.txt", name);
        char *txt = read_file(path, &xl);
        CHECK_MSG(tokfile && txt, "%s: reference files", name);
        if (!tokfile || !txt) {
            free(tokfile);
            free(txt);
            continue;
        }
        int32_t ref[2048];
        int n_ref = parse_tokens(tokfile, ref, 2048);
        CHECK(n_ref > 1 && n_ref <= 2048);

        int32_t enc[512];
        int n_enc = -1;
        int rc = shoal_tokenizer_encode(t, prompt, strlen(prompt), true, enc, 512, &n_enc);
        bool prefix = rc == 0 && n_enc >= 1 && n_enc <= n_ref;
        for (int i = 0; prefix && i < n_enc; i++)
            prefix = enc[i] == ref[i];
        CHECK_MSG(prefix, "%s: prompt \"%s\" encodes to the reference's first %d tokens", name,
                  prompt, n_enc);
        CHECK_MSG(n_ref - n_enc <= n_gen, "%s: %d generated tokens for N = %d", name,
                  n_ref - n_enc, n_gen);
        check_text(t, r, prompt, strlen(prompt));

        /* Decode everything after BOS, stopping at a generated end token. */
        int end = n_ref;
        for (int i = n_enc; i < n_ref; i++) {
            if (shoal_tokenizer_is_eog(t, ref[i])) {
                end = i;
                break;
            }
        }
        size_t dl = 0;
        char *d = decode(t, ref, 1, end, &dl);
        CHECK_MSG(d && xl > 0 && txt[xl - 1] == '\n' && dl == xl - 1 && memcmp(d, txt, dl) == 0,
                  "%s: decoded text differs from %s.txt:\n%s", name, name, d ? d : "(null)");
        size_t pl = strlen(prompt);
        size_t dpl = 0;
        char *dp = decode(t, ref, 1, n_enc, &dpl);
        CHECK_MSG(dp && dpl == pl && memcmp(dp, prompt, pl) == 0, "%s: prompt decodes back",
                  name);
        /* The story text itself (no NUL inside) must also match llama2.c. */
        check_text(t, r, txt, xl);
        free(dp);
        free(d);
        free(tokfile);
        free(txt);
        cases++;
    }
    CHECK_MSG(cases >= 10, "%d reference cases", cases);
    free(tsv);
}

static void test_basics(const shoal_tokenizer *t)
{
    CHECK(shoal_tokenizer_n_vocab(t) == 512);
    CHECK(shoal_tokenizer_bos(t) == 1);
    CHECK(shoal_tokenizer_eos(t) == 2);
    CHECK(shoal_tokenizer_unk(t) == 0);
    CHECK(shoal_tokenizer_add_bos(t));
    CHECK(shoal_tokenizer_is_eog(t, 1));
    CHECK(shoal_tokenizer_is_eog(t, 2));
    CHECK(!shoal_tokenizer_is_eog(t, 0));
    CHECK(!shoal_tokenizer_is_eog(t, 410));
    CHECK(!shoal_tokenizer_is_eog(t, -1));
    CHECK(!shoal_tokenizer_is_eog(t, 512));
    CHECK(strcmp(shoal_tokenizer_token(t, 403), "\xE2\x96\x81Once") == 0);
    CHECK(strcmp(shoal_tokenizer_token(t, 13), "<0x0A>") == 0);
    CHECK(shoal_tokenizer_token(t, 512) == NULL);
    CHECK(shoal_tokenizer_token(t, -1) == NULL);
    CHECK(shoal_tokenizer_token_type(t, 0) == SHOAL_TOKEN_UNKNOWN);
    CHECK(shoal_tokenizer_token_type(t, 1) == SHOAL_TOKEN_CONTROL);
    CHECK(shoal_tokenizer_token_type(t, 13) == SHOAL_TOKEN_BYTE);
    CHECK(shoal_tokenizer_token_type(t, 403) == SHOAL_TOKEN_NORMAL);
    CHECK(shoal_tokenizer_token_type(t, 600) == 0);
    CHECK(shoal_tokenizer_find(t, "\xE2\x96\x81Once", 7) == 403);
    CHECK(shoal_tokenizer_find(t, "<s>", 3) == 1);
    CHECK(shoal_tokenizer_find(t, " Once", 5) == -1);
    CHECK(shoal_tokenizer_find(t, "", 0) == -1);

    char buf[16];
    memset(buf, 'x', sizeof buf);
    CHECK(shoal_tokenizer_piece(t, 1, 403, buf, sizeof buf) == 4 && memcmp(buf, "Once", 4) == 0);
    CHECK(shoal_tokenizer_piece(t, 261, 403, buf, sizeof buf) == 5 &&
          memcmp(buf, " Once", 5) == 0);
    CHECK(shoal_tokenizer_piece(t, -1, 403, buf, sizeof buf) == 5);
    CHECK(shoal_tokenizer_piece(t, 403, 13, buf, sizeof buf) == 1 && buf[0] == '\n');
    /* A byte token keeps its byte even after BOS; control tokens print nothing. */
    CHECK(shoal_tokenizer_piece(t, 1, 3 + ' ', buf, sizeof buf) == 1 && buf[0] == ' ');
    CHECK(shoal_tokenizer_piece(t, 1, 3 + 0xE2, buf, sizeof buf) == 1 &&
          (unsigned char)buf[0] == 0xE2);
    CHECK(shoal_tokenizer_piece(t, 5, 1, buf, sizeof buf) == 0);
    CHECK(shoal_tokenizer_piece(t, 5, 2, buf, sizeof buf) == 0);
    CHECK(shoal_tokenizer_piece(t, 5, 0, buf, sizeof buf) == 3 &&
          memcmp(buf, "\xE2\x96\x85", 3) == 0);
    CHECK(shoal_tokenizer_piece(t, 5, 512, buf, sizeof buf) == -1);
    CHECK(shoal_tokenizer_piece(t, 5, -3, buf, sizeof buf) == -1);
    /* Truncation: the full length comes back, only cap bytes are written. */
    memset(buf, 'x', sizeof buf);
    CHECK(shoal_tokenizer_piece(t, 5, 376, buf, 3) == 7); /* "▁little" */
    CHECK(memcmp(buf, " li", 3) == 0 && buf[3] == 'x');
    CHECK(shoal_tokenizer_piece(t, 5, 376, NULL, 0) == 7);
}

static void test_edges(const shoal_tokenizer *t)
{
    int32_t out[16];
    int n = -1;
    CHECK(shoal_tokenizer_encode(t, "", 0, true, out, 16, &n) == 0 && n == 1 && out[0] == 1);
    CHECK(shoal_tokenizer_encode(t, NULL, 0, true, out, 16, &n) == 0 && n == 1);
    CHECK(shoal_tokenizer_encode(t, "", 0, false, out, 16, &n) == 0 && n == 0);
    CHECK(shoal_tokenizer_encode(t, "", 0, false, NULL, 0, &n) == 0 && n == 0);
    CHECK(shoal_tokenizer_encode(t, NULL, 3, true, out, 16, &n) == SHOAL_ERR_ARG);
    CHECK(shoal_tokenizer_encode(t, "a", 1, true, out, -1, &n) == SHOAL_ERR_ARG);
    CHECK(shoal_tokenizer_encode(t, "a", 1, true, NULL, 4, &n) == SHOAL_ERR_ARG);
    CHECK(shoal_tokenizer_encode(t, "a", 1, true, out, 4, NULL) == SHOAL_ERR_ARG);

    /* " Once upon a time" is BOS + 4 tokens: the limit is exact. */
    const char *p = "Once upon a time";
    int32_t full[8];
    CHECK(shoal_tokenizer_encode(t, p, strlen(p), true, full, 8, &n) == 0 && n == 5);
    CHECK(full[1] == 403 && full[2] == 407 && full[3] == 261 && full[4] == 378);
    for (int max = 0; max < 5; max++) {
        int32_t lim[8];
        for (int i = 0; i < 8; i++)
            lim[i] = -7;
        n = -1;
        CHECK_MSG(shoal_tokenizer_encode(t, p, strlen(p), true, lim, max, &n) == SHOAL_ERR_RANGE &&
                      n == 5,
                  "max %d", max);
        bool ok = true;
        for (int i = 0; i < 8; i++)
            ok = ok && (i < max ? lim[i] == full[i] : lim[i] == -7);
        CHECK_MSG(ok, "max %d: writes the first max tokens and nothing past them", max);
    }
    CHECK(shoal_tokenizer_encode(t, p, strlen(p), true, out, 5, &n) == 0 && n == 5);
    CHECK(shoal_tokenizer_encode(t, p, strlen(p), false, out, 4, &n) == 0 && n == 4 &&
          out[0] == 403);

    /* Byte fallback: a lone invalid byte, a NUL, an emoji. */
    CHECK(shoal_tokenizer_encode(t, "\xFF", 1, false, out, 16, &n) == 0 && n == 2 &&
          out[0] == 410 && out[1] == 0xFF + 3);
    CHECK(shoal_tokenizer_encode(t, "a\0b", 3, false, out, 16, &n) == 0 && n == 3 &&
          out[0] == 261 && out[1] == 3 && out[2] == 430);
    CHECK(shoal_tokenizer_encode(t, "\xF0\x9F\x99\x82", 4, false, out, 16, &n) == 0 && n == 5 &&
          out[0] == 410 && out[1] == 0xF0 + 3 && out[2] == 0x9F + 3 && out[3] == 0x99 + 3 &&
          out[4] == 0x82 + 3);
    /* A character in the vocabulary stays whole: "é" is token 485. */
    CHECK(shoal_tokenizer_encode(t, "\xC3\xA9", 2, false, out, 16, &n) == 0 && n == 2 &&
          out[1] == 485);
    /* Literal "▁" in the text is not a space (llama2.c): three byte tokens. */
    CHECK(shoal_tokenizer_encode(t, "\xE2\x96\x81", 3, false, out, 16, &n) == 0 && n == 4 &&
          out[1] == 0xE2 + 3);
}

static void test_differential(const shoal_tokenizer *t, const ref_tok *r)
{
    static const char *const samples[] = {
        "Hello world",
        " leading space",
        "  two leading spaces",
        "trailing space ",
        "Lily and Tom went to the park.\nThey saw a big, red ball!",
        "caf\xC3\xA9 na\xC3\xAFve \xE2\x80\x9Cquoted\xE2\x80\x9D \xE2\x80\x94 dash",
        "\xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x99\x82\xF0\x9F\x8E\x89 emoji",
        "\xE2\x96\x81Once \xE2\x96\x81\xE2\x96\x81",
        "<s> </s> <unk> <0x41> tokens as text",
        "\x80\x80\x80\x80\x80\x80 stray continuations \xC3 \xE2\x82 \xF0\x9F\x99",
        "\xC3\xA9\x80\x80\x80\x80 overlong tail",
        "a\xCC\x81\xCC\x81\xCC\x81\xCC\x81 combining",
        "\t\ttabs\r\nand CRLF\n\n\n",
        "1234567890 !@#$%^&*()_+-=[]{};':\",./<>?`~\\|",
        "x",
        " ",
        "\n",
    };
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++)
        check_text(t, r, samples[i], strlen(samples[i]));

    /* Soups of vocabulary pieces: the merges get exercised hard. */
    char buf[2048];
    for (int iter = 0; iter < 300; iter++) {
        size_t o = 0;
        int pieces = 1 + (int)(rnd() % 40);
        for (int k = 0; k < pieces; k++) {
            int id = 259 + (int)(rnd() % 253);
            const char *s = shoal_tokenizer_token(t, id);
            for (size_t j = 0; s[j] && o + 4 < sizeof buf;) {
                if (strncmp(s + j, "\xE2\x96\x81", 3) == 0) {
                    buf[o++] = ' ';
                    j += 3;
                } else {
                    buf[o++] = s[j++];
                }
            }
            if (rnd() % 5 == 0 && o + 1 < sizeof buf)
                buf[o++] = ' ';
        }
        check_text(t, r, buf, o);
    }
    /* Random bytes (no NUL: llama2.c stops at one). */
    for (int iter = 0; iter < 300; iter++) {
        size_t n = 1 + rnd() % 40;
        for (size_t j = 0; j < n; j++) {
            uint32_t v = rnd();
            buf[j] = (char)(v % 4 == 0 ? 0x80 + (v >> 8) % 64 : 1 + (v >> 8) % 255);
        }
        check_text(t, r, buf, n);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_long(const shoal_tokenizer *t, const ref_tok *r)
{
    size_t sl;
    char *story = read_file(REF "zoo-256.txt", &sl);
    CHECK(story != NULL);
    if (!story)
        return;
    /* A 2 KB text against llama2.c (quadratic, so not much longer). */
    check_text(t, r, story, sl);
    size_t big_len = 100 * 1024;
    char *big = malloc(big_len);
    for (size_t o = 0; o < big_len; o++)
        big[o] = story[o % sl];
    /* Some Unicode and invalid bytes scattered through it. */
    for (size_t o = 1000; o + 4 < big_len; o += 7919)
        memcpy(big + o, (o / 7919) % 2 ? "\xF0\x9F\x99\x82" : "\xC3\xA9\xFF\x80", 4);
    int max = (int)big_len + 2;
    int32_t *toks = malloc((size_t)max * sizeof *toks);
    int n = 0;
    double t0 = now_s();
    int rc = shoal_tokenizer_encode(t, big, big_len, true, toks, max, &n);
    double dt = now_s() - t0;
    printf("encoded %zu bytes into %d tokens in %.1f ms\n", big_len, n, dt * 1e3);
    CHECK(rc == 0 && n > 10000 && n < (int)big_len / 2);
    /* Quadratic merging would take minutes here; this bound catches it
     * without being a benchmark. */
    CHECK_MSG(dt < 5.0, "100 KB took %.2f s", dt);
    size_t dl = 0;
    char *d = decode(t, toks, 1, n, &dl);
    CHECK(d && dl == big_len && memcmp(d, big, big_len) == 0);
    free(d);
    free(toks);
    free(big);
    free(story);
}

/* ---- malformed and synthetic vocabularies ------------------------------- */

typedef struct {
    const char *model;    /* NULL: key absent */
    int n_tokens;         /* tokens written */
    int n_scores;         /* -1: key absent */
    int n_types;          /* -1: key absent */
    uint32_t bos;         /* written as is */
    const char *byte_name;/* replaces "<0x41>" when set */
    int32_t bad_type;     /* if nonzero, token 5's type */
    bool tokens_as_u32;
    bool drop_bytes;      /* no byte tokens at all */
    uint32_t unk;
} vocab_spec;

static const char *tmp_path(void)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/shoal_test_tokenizer_%d.gguf", (int)getpid());
    return path;
}

/* Vocabulary: <unk> <s> </s> <0x00>..<0xFF> ▁a b ▁ab ▁ a ▁b ab. */
static shoal_tokenizer *build_vocab(const vocab_spec *v, char *err, size_t errlen)
{
    const char *extra[] = {"\xE2\x96\x81" "a", "b", "\xE2\x96\x81" "ab", "\xE2\x96\x81", "a",
                           "\xE2\x96\x81" "b", "ab"};
    float extra_score[] = {-1, -2, -0.5f, -3, -4, -5, -6};
    const int n_extra = 7;
    char names[256][8];
    const char *toks[3 + 256 + 7];
    float scores[3 + 256 + 7];
    int32_t types[3 + 256 + 7];
    int n = 0;
    toks[n] = "<unk>"; types[n] = 2; scores[n++] = 0;
    toks[n] = "<s>"; types[n] = 3; scores[n++] = 0;
    toks[n] = "</s>"; types[n] = 3; scores[n++] = 0;
    if (!v->drop_bytes) {
        for (int b = 0; b < 256; b++) {
            snprintf(names[b], sizeof names[b], "<0x%02X>", b);
            toks[n] = (b == 0x41 && v->byte_name) ? v->byte_name : names[b];
            types[n] = 6;
            scores[n++] = 0;
        }
    }
    for (int i = 0; i < n_extra; i++) {
        toks[n] = extra[i];
        types[n] = 1;
        scores[n++] = extra_score[i];
    }
    if (v->bad_type)
        types[5] = v->bad_type;

    shoal_gguf_writer *w = shoal_gguf_writer_new();
    if (v->model)
        shoal_gguf_writer_set_str(w, "tokenizer.ggml.model", v->model);
    int nt = v->n_tokens ? v->n_tokens : n;
    if (v->tokens_as_u32) {
        uint32_t *u = calloc((size_t)nt, sizeof *u);
        shoal_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", SHOAL_GGUF_U32, u, (uint64_t)nt);
        free(u);
    } else {
        shoal_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)nt);
    }
    if (v->n_scores >= 0)
        shoal_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SHOAL_GGUF_F32, scores,
                                  (uint64_t)(v->n_scores ? v->n_scores : n));
    if (v->n_types >= 0)
        shoal_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SHOAL_GGUF_I32, types,
                                  (uint64_t)(v->n_types ? v->n_types : n));
    shoal_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", v->bos);
    shoal_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    shoal_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", v->unk);
    int rc = shoal_gguf_writer_write(w, tmp_path(), err, errlen);
    shoal_gguf_writer_destroy(&w);
    if (rc) {
        fprintf(stderr, "cannot write test GGUF: %s\n", err);
        return NULL;
    }
    shoal_gguf *g = NULL;
    rc = shoal_gguf_open(tmp_path(), &g, err, errlen);
    if (rc) {
        fprintf(stderr, "cannot open test GGUF: %s\n", err);
        unlink(tmp_path());
        return NULL;
    }
    shoal_tokenizer *t = shoal_tokenizer_from_gguf(g, err, errlen);
    shoal_gguf_close(&g);
    unlink(tmp_path());
    return t;
}

static void test_synthetic(void)
{
    char err[256];
    const vocab_spec good = {.model = "llama", .bos = 1, .unk = 0};
    shoal_tokenizer *t = build_vocab(&good, err, sizeof err);
    CHECK_MSG(t != NULL, "valid synthetic vocabulary: %s", err);
    if (t) {
        int32_t out[8];
        int n = 0;
        /* " ab": ▁ab (-0.5) wins over ▁a (-1) and ab (-6). */
        CHECK(shoal_tokenizer_encode(t, "ab", 2, false, out, 8, &n) == 0 && n == 1 &&
              out[0] == 3 + 256 + 2);
        /* "ba": " b" then "a": ▁b (-5) is the only merge. */
        CHECK(shoal_tokenizer_encode(t, "ba", 2, false, out, 8, &n) == 0 && n == 2 &&
              out[0] == 3 + 256 + 5 && out[1] == 3 + 256 + 4);
        CHECK(shoal_tokenizer_encode(t, "c", 1, false, out, 8, &n) == 0 && n == 2 &&
              out[0] == 3 + 256 + 3 && out[1] == 3 + 'c');
        shoal_tokenizer_destroy(&t);
        CHECK(t == NULL);
        shoal_tokenizer_destroy(&t);
        shoal_tokenizer_destroy(NULL);
    }
    /* No scores, no types: byte tokens found by name, all scores 0. */
    vocab_spec bare = good;
    bare.n_scores = -1;
    bare.n_types = -1;
    t = build_vocab(&bare, err, sizeof err);
    CHECK_MSG(t != NULL, "vocabulary without scores and types: %s", err);
    if (t) {
        CHECK(shoal_tokenizer_token_type(t, 3 + 0x41) == SHOAL_TOKEN_BYTE);
        char c;
        CHECK(shoal_tokenizer_piece(t, 5, 3 + 0x41, &c, 1) == 1 && c == 'A');
        shoal_tokenizer_destroy(&t);
    }
    /* No byte tokens, but an unknown token: unknown characters become it. */
    vocab_spec nobytes = good;
    nobytes.drop_bytes = true;
    t = build_vocab(&nobytes, err, sizeof err);
    CHECK_MSG(t != NULL, "vocabulary without byte tokens: %s", err);
    if (t) {
        int32_t out[8];
        int n = 0;
        CHECK(shoal_tokenizer_encode(t, "\xC3\xA9", 2, false, out, 8, &n) == 0 && n == 3 &&
              out[1] == 0 && out[2] == 0);
        shoal_tokenizer_destroy(&t);
    }

    struct {
        vocab_spec v;
        const char *what;
        const char *needle;
    } bad[] = {
        {{.model = "gpt2", .bos = 1}, "gpt2 without a pre-tokenizer", "not supported"},
        {{.model = "bert", .bos = 1}, "unknown model", "not supported"},
        {{.model = NULL, .bos = 1}, "no model key", "tokenizer.ggml.model"},
        {{.model = "llama", .bos = 1, .n_scores = 10}, "short scores", "scores"},
        {{.model = "llama", .bos = 1, .n_types = 10}, "short types", "token_type"},
        {{.model = "llama", .bos = 9999}, "bos out of range", "bos_token_id"},
        {{.model = "llama", .bos = 1, .unk = 4000}, "unk out of range", "unknown_token_id"},
        {{.model = "llama", .bos = 1, .byte_name = "<0xZZ>"}, "bad byte token", "<0xXX>"},
        {{.model = "llama", .bos = 1, .byte_name = "<0x041>"}, "long byte token", "<0xXX>"},
        {{.model = "llama", .bos = 1, .bad_type = 9}, "bad type", "type"},
        {{.model = "llama", .bos = 1, .bad_type = -1}, "negative type", "type"},
        {{.model = "llama", .bos = 1, .tokens_as_u32 = true}, "tokens not strings", "tokens"},
        {{.model = "llama", .bos = 1, .drop_bytes = true, .unk = UINT32_MAX},
         "no byte tokens, no unk", "byte token"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        t = build_vocab(&bad[i].v, err, sizeof err);
        CHECK_MSG(t == NULL && strstr(err, bad[i].needle) != NULL, "%s: refused (\"%s\")",
                  bad[i].what, err);
        shoal_tokenizer_destroy(&t);
    }
    CHECK(shoal_tokenizer_from_gguf(NULL, err, sizeof err) == NULL);
}

/* ---- byte-level BPE ----------------------------------------------------- */

/* GPT-2's bytes_to_unicode character of byte b, as UTF-8. */
static void gpt2_char(int b, char out[4])
{
    int cp = b;
    if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
        cp = 256;
        for (int x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE))
                cp++;
    }
    int k = shoal_utf8_encode((uint32_t)cp, out);
    out[k] = '\0';
}

typedef struct {
    const char *pre;      /* NULL: key absent */
    bool no_merges;       /* key absent */
    const char *bad_merge;/* replaces the first merge */
    bool drop_byte;       /* leave byte 'q' out of the vocabulary */
} bpe_spec;

/* Tokens: the 256 byte characters (id = byte), then 256 "Ġt", 257 "he",
 * 258 "Ġthe", 259 "ll", 260 "hell", 261 "Ġhello", 262 "<|endoftext|>"
 * (control, BOS and EOS). Merges by rank: "h e", "Ġ t", "Ġt he", "l l",
 * "he ll". */
static shoal_tokenizer *build_bpe(const bpe_spec *v, char *err, size_t errlen)
{
    static char chars[256][5];
    const char *toks[263];
    int32_t types[263];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        gpt2_char(b, chars[b]);
        types[n] = 1;
        toks[n++] = (v->drop_byte && b == 'q') ? "qq" : chars[b];
    }
    const char *extra[] = {"\xC4\xA0t", "he", "\xC4\xA0the", "ll", "hell", "\xC4\xA0hello",
                           "<|endoftext|>"};
    for (int i = 0; i < 7; i++) {
        types[n] = i == 6 ? 3 : 1;
        toks[n++] = extra[i];
    }
    const char *merges[] = {"h e", "\xC4\xA0 t", "\xC4\xA0t he", "l l", "he ll"};
    if (v->bad_merge)
        merges[0] = v->bad_merge;
    shoal_gguf_writer *w = shoal_gguf_writer_new();
    shoal_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    if (v->pre)
        shoal_gguf_writer_set_str(w, "tokenizer.ggml.pre", v->pre);
    shoal_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    shoal_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SHOAL_GGUF_I32, types,
                              (uint64_t)n);
    if (!v->no_merges)
        shoal_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 5);
    shoal_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 262);
    shoal_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 262);
    int rc = shoal_gguf_writer_write(w, tmp_path(), err, errlen);
    shoal_gguf_writer_destroy(&w);
    if (rc)
        return NULL;
    shoal_gguf *g = NULL;
    rc = shoal_gguf_open(tmp_path(), &g, err, errlen);
    unlink(tmp_path());
    if (rc)
        return NULL;
    shoal_tokenizer *t = shoal_tokenizer_from_gguf(g, err, errlen);
    shoal_gguf_close(&g);
    return t;
}

static bool encode_is(const shoal_tokenizer *t, const char *text, const int32_t *want, int n_want)
{
    int32_t out[64];
    int n = -1;
    if (shoal_tokenizer_encode(t, text, strlen(text), false, out, 64, &n) != 0 || n != n_want)
        return false;
    for (int i = 0; i < n; i++)
        if (out[i] != want[i])
            return false;
    return true;
}

/* Word ends from the pre-tokenizer patterns themselves (Python's re, with
 * \p{L}, \p{N} and \s spelled out as Unicode 14.0 classes): GPT-2,
 * Llama 3, Qwen 2; each list ends with 0. */
static const struct {
    const char *text;
    size_t ends[3][16];
} split_cases[] = {
    {"Hello world's 12345  \x0a""\x0a""foo", {{5, 11, 13, 19, 22, 23, 26, 0}, {5, 11, 13, 14, 17, 19, 23, 26, 0}, {5, 11, 13, 14, 15, 16, 17, 18, 19, 23, 26, 0}}},
    {"I'LL don't 'Re x'VE", {{1, 2, 4, 8, 10, 12, 14, 16, 17, 19, 0}, {1, 4, 8, 10, 12, 14, 16, 19, 0}, {1, 4, 8, 10, 12, 14, 16, 19, 0}}},
    {"  two\x09""spaces  \x0d""\x0a""\x0d""\x0a""  end  ", {{1, 5, 6, 12, 19, 23, 25, 0}, {1, 5, 12, 18, 19, 23, 25, 0}, {1, 5, 12, 18, 19, 23, 25, 0}}},
    {"caf\xc3""\xa9"" \xe4""\xb8""\x96""\xe7""\x95""\x8c""\xf0""\x9f""\x99""\x82""!! 1\xc2""\xb2""\xd9""\xa3""", {{5, 12, 18, 24, 0}, {5, 12, 18, 19, 24, 0}, {5, 12, 18, 19, 20, 22, 24, 0}}},
    {"a\xc2""\xa0""b\xe3""\x80""\x80""c\xe2""\x80""\x83"" d", {{1, 3, 4, 7, 8, 11, 13, 0}, {1, 4, 8, 11, 13, 0}, {1, 4, 8, 11, 13, 0}}},
    {"(x)=[y]; \"q\" ?\x0a""\x0a""done", {{1, 2, 5, 6, 8, 10, 11, 12, 14, 15, 16, 20, 0}, {2, 5, 6, 8, 10, 11, 12, 16, 20, 0}, {2, 5, 6, 8, 10, 11, 12, 16, 20, 0}}},
    {"\x0a""", {{1, 0}, {1, 0}, {1, 0}}},
    {" ", {{1, 0}, {1, 0}, {1, 0}}},
    {"'", {{1, 0}, {1, 0}, {1, 0}}},
    {"1234567", {{7, 0}, {3, 6, 7, 0}, {1, 2, 3, 4, 5, 6, 7, 0}}},
    {" 42 apples", {{3, 10, 0}, {1, 3, 10, 0}, {1, 2, 3, 10, 0}}},
    {"tab\x09""and\xcc""\x81""combining", {{3, 4, 7, 9, 18, 0}, {3, 7, 18, 0}, {3, 7, 18, 0}}},
};

static void test_bpe(void)
{
    char err[256];
    const char *pres[3] = {"gpt-2", "llama-bpe", "qwen2"};
    shoal_tokenizer *tk[3];
    for (int p = 0; p < 3; p++) {
        bpe_spec v = {.pre = pres[p]};
        tk[p] = build_bpe(&v, err, sizeof err);
        CHECK_MSG(tk[p] != NULL, "BPE vocabulary with pre %s: %s", pres[p], err);
        if (!tk[p])
            return;
    }
    for (size_t c = 0; c < sizeof split_cases / sizeof split_cases[0]; c++) {
        for (int p = 0; p < 3; p++) {
            size_t ends[64], n = 0, want = 0;
            const char *text = split_cases[c].text;
            int rc = shoal_tokenizer_pretokenize(tk[p], text, strlen(text), ends, 64, &n);
            while (split_cases[c].ends[p][want])
                want++;
            bool same = rc == 0 && n == want;
            for (size_t i = 0; same && i < n; i++)
                same = ends[i] == split_cases[c].ends[p][i];
            CHECK_MSG(same, "%s splits case %zu as expected (%zu words, want %zu)", pres[p], c,
                      n, want);
        }
    }
    /* Too many words for max: SHOAL_ERR_RANGE and the count. */
    size_t ends[2], n = 0;
    CHECK(shoal_tokenizer_pretokenize(tk[0], "a b c", 5, ends, 2, &n) == SHOAL_ERR_RANGE &&
          n == 3 && ends[0] == 1 && ends[1] == 3);

    /* Merges by rank inside words, never across them. */
    const int32_t the_hello[] = {258, ' ', 260, 'o'};
    CHECK(encode_is(tk[0], " the hello", the_hello, 4));
    /* Llama 3 keeps a word that is a token as it is (ignore_merges). */
    const int32_t the_hello3[] = {258, 261};
    CHECK(encode_is(tk[1], " the hello", the_hello3, 2));
    const int32_t lll[] = {259, 'l'}; /* leftmost first */
    CHECK(encode_is(tk[0], "lll", lll, 2));
    /* "hethe": one word; "h e" merges twice, "Ġt he" cannot (no Ġ). */
    const int32_t hethe[] = {257, 't', 257};
    CHECK(encode_is(tk[0], "hethe", hethe, 3));
    const int32_t empty[] = {0};
    CHECK(encode_is(tk[0], "", empty, 0));

    int32_t out[64];
    int m = 0;
    CHECK(shoal_tokenizer_encode(tk[1], "hi", 2, true, out, 64, &m) == 0 && m == 3 &&
          out[0] == 262);
    CHECK(shoal_tokenizer_add_bos(tk[1]) && !shoal_tokenizer_add_bos(tk[0]));
    CHECK(shoal_tokenizer_is_eog(tk[0], 262) && !shoal_tokenizer_is_eog(tk[0], 258));

    /* Pieces: GPT-2 characters back to bytes; no space dropped after BOS;
     * control tokens print nothing. */
    char buf[16];
    CHECK(shoal_tokenizer_piece(tk[0], 262, 258, buf, sizeof buf) == 4 &&
          memcmp(buf, " the", 4) == 0);
    CHECK(shoal_tokenizer_piece(tk[0], 5, 0xE9, buf, sizeof buf) == 1 &&
          (unsigned char)buf[0] == 0xE9);
    CHECK(shoal_tokenizer_piece(tk[0], 5, '\n', buf, sizeof buf) == 1 && buf[0] == '\n');
    CHECK(shoal_tokenizer_piece(tk[0], 5, 262, buf, sizeof buf) == 0);
    CHECK(shoal_tokenizer_find(tk[0], "<|endoftext|>", 13) == 262);

    /* Round trips of anything, invalid UTF-8 included. */
    for (int p = 0; p < 3; p++) {
        const char *texts[] = {"Hello world's 12345  \n\nfoo", "caf\xC3\xA9 \xF0\x9F\x99\x82",
                               "\xFF\xFE\x80 bad \xC3", "a\0b", " the hell hello the"};
        size_t lens[] = {26, 10, 9, 3, 19};
        for (int i = 0; i < 5; i++) {
            int32_t toks[64];
            int nt = 0;
            CHECK(shoal_tokenizer_encode(tk[p], texts[i], lens[i], false, toks, 64, &nt) == 0);
            size_t dl = 0;
            char *d = decode(tk[p], toks, 0, nt, &dl);
            CHECK_MSG(d && dl == lens[i] && memcmp(d, texts[i], lens[i]) == 0,
                      "%s round trip %d", pres[p], i);
            free(d);
        }
    }
    for (int p = 0; p < 3; p++)
        shoal_tokenizer_destroy(&tk[p]);

    struct {
        bpe_spec v;
        const char *needle;
    } bad[] = {
        {{.pre = NULL}, "not supported"},
        {{.pre = "falcon"}, "not supported"},
        {{.pre = "gpt-2", .no_merges = true}, "merges"},
        {{.pre = "gpt-2", .bad_merge = "he"}, "merge 0"},
        {{.pre = "gpt-2", .bad_merge = " he"}, "merge 0"},
        {{.pre = "gpt-2", .drop_byte = true}, "byte 0x71"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        shoal_tokenizer *t = build_bpe(&bad[i].v, err, sizeof err);
        CHECK_MSG(t == NULL && strstr(err, bad[i].needle), "bad BPE vocabulary %zu refused: %s",
                  i, err);
        shoal_tokenizer_destroy(&t);
    }
}

/* ---- UTF-8 -------------------------------------------------------------- */

static size_t stream_all(shoal_utf8_stream *s, const char *in, size_t n, size_t chunk,
                         char *out)
{
    size_t o = 0;
    char tmp[SHOAL_UTF8_STREAM_BOUND(64)];
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk, w = 0;
        if (shoal_utf8_stream_push(s, in + i, k, tmp, sizeof tmp, &w) != 0)
            return (size_t)-1;
        memcpy(out + o, tmp, w);
        o += w;
    }
    size_t w = 0;
    shoal_utf8_stream_flush(s, tmp, sizeof tmp, &w);
    memcpy(out + o, tmp, w);
    return o + w;
}

static void test_utf8(void)
{
    uint32_t cp;
    CHECK(shoal_utf8_decode("A", 1, &cp) == 1 && cp == 'A');
    CHECK(shoal_utf8_decode("\xC3\xA9", 2, &cp) == 2 && cp == 0xE9);
    CHECK(shoal_utf8_decode("\xE2\x96\x81", 3, &cp) == 3 && cp == 0x2581);
    CHECK(shoal_utf8_decode("\xF0\x9F\x99\x82", 4, &cp) == 4 && cp == 0x1F642);
    CHECK(shoal_utf8_decode("\xF0\x9F\x99", 3, &cp) == 0);
    CHECK(shoal_utf8_decode("\xC0\x80", 2, &cp) == 0);         /* overlong */
    CHECK(shoal_utf8_decode("\xE0\x80\x80", 3, &cp) == 0);     /* overlong */
    CHECK(shoal_utf8_decode("\xED\xA0\x80", 3, &cp) == 0);     /* surrogate */
    CHECK(shoal_utf8_decode("\xF4\x90\x80\x80", 4, &cp) == 0); /* > U+10FFFF */
    CHECK(shoal_utf8_decode("\x80", 1, &cp) == 0);
    CHECK(shoal_utf8_decode("", 0, &cp) == 0);
    char e[4];
    CHECK(shoal_utf8_encode(0x1F642, e) == 4 && memcmp(e, "\xF0\x9F\x99\x82", 4) == 0);
    CHECK(shoal_utf8_encode(0xD800, e) == 0);
    CHECK(shoal_utf8_encode(0x110000, e) == 0);
    /* Every scalar value encodes and decodes back. */
    bool all = true;
    for (uint32_t c = 0; c <= 0x10FFFF; c++) {
        if (c >= 0xD800 && c <= 0xDFFF)
            continue;
        int k = shoal_utf8_encode(c, e);
        all = all && k > 0 && shoal_utf8_decode(e, (size_t)k, &cp) == k && cp == c;
    }
    CHECK(all);
    CHECK(shoal_utf8_valid("h\xC3\xA9llo", 6));
    CHECK(!shoal_utf8_valid("h\xC3", 2));
    CHECK(shoal_utf8_valid_prefix("ab\xC3\xA9\xFF" "cd", 7) == 4);

    shoal_utf8_stream s;
    char out[64];
    size_t w;
    /* An emoji arriving one byte at a time comes out whole, once. */
    shoal_utf8_stream_init(&s, false);
    const char *emoji = "\xF0\x9F\x99\x82";
    for (int i = 0; i < 3; i++) {
        CHECK(shoal_utf8_stream_push(&s, emoji + i, 1, out, sizeof out, &w) == 0 && w == 0);
        CHECK(shoal_utf8_stream_pending(&s) == (size_t)i + 1);
    }
    CHECK(shoal_utf8_stream_push(&s, emoji + 3, 1, out, sizeof out, &w) == 0 && w == 4 &&
          memcmp(out, emoji, 4) == 0);
    CHECK(shoal_utf8_stream_pending(&s) == 0);
    /* Too little room: nothing consumed. */
    CHECK(shoal_utf8_stream_push(&s, "abc", 3, out, 5, &w) == SHOAL_ERR_RANGE && w == 0);
    CHECK(shoal_utf8_stream_push(&s, "\xC3", 1, out, sizeof out, &w) == 0 && w == 0);
    CHECK(shoal_utf8_stream_flush(&s, out, sizeof out, &w) == 0 && w == 1 &&
          (unsigned char)out[0] == 0xC3);
    CHECK(shoal_utf8_stream_pending(&s) == 0);

    /* Replacement: maximal subparts become one U+FFFD each. */
    shoal_utf8_stream_init(&s, true);
    CHECK(shoal_utf8_stream_push(&s, "\xE2\x82" "A", 3, out, sizeof out, &w) == 0 && w == 4 &&
          memcmp(out, "\xEF\xBF\xBD" "A", 4) == 0);
    CHECK(shoal_utf8_stream_push(&s, "\xED\xA0\x80", 3, out, sizeof out, &w) == 0 && w == 9 &&
          memcmp(out, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", 9) == 0);
    CHECK(shoal_utf8_stream_push(&s, "\xC0\xAF", 2, out, sizeof out, &w) == 0 && w == 6);
    CHECK(shoal_utf8_stream_push(&s, "\xF0\x9F", 2, out, sizeof out, &w) == 0 && w == 0);
    CHECK(shoal_utf8_stream_flush(&s, out, sizeof out, &w) == 0 && w == 3 &&
          memcmp(out, "\xEF\xBF\xBD", 3) == 0);

    /* Random bytes in random chunks: raw mode gives the input back exactly;
     * replace mode gives valid UTF-8, equal to the input when it was valid. */
    static char in[4096], res[3 * 4096 + 16];
    for (int iter = 0; iter < 200; iter++) {
        size_t n = rnd() % sizeof in;
        bool text_like = iter % 2;
        for (size_t i = 0; i < n; i++) {
            if (text_like) {
                uint32_t c = rnd() % 5 == 0 ? rnd() % 0x110000 : 'a' + rnd() % 26;
                int k = shoal_utf8_encode(c, e);
                if (k == 0 || i + (size_t)k > n) {
                    in[i] = 'z';
                } else {
                    memcpy(in + i, e, (size_t)k);
                    i += (size_t)k - 1;
                }
            } else {
                in[i] = (char)rnd();
            }
        }
        size_t chunk = 1 + rnd() % 64;
        shoal_utf8_stream_init(&s, false);
        size_t m = stream_all(&s, in, n, chunk, res);
        CHECK(m == n && memcmp(res, in, n) == 0);
        shoal_utf8_stream_init(&s, true);
        m = stream_all(&s, in, n, chunk, res);
        CHECK(m != (size_t)-1 && shoal_utf8_valid(res, m));
        if (shoal_utf8_valid(in, n))
            CHECK(m == n && memcmp(res, in, n) == 0);
    }
}

int main(void)
{
    test_utf8();
    test_synthetic();
    test_bpe();

    shoal_gguf *g = NULL;
    char err[256];
    int rc = shoal_gguf_open(MODEL, &g, err, sizeof err);
    CHECK_MSG(rc == 0, "open %s: %s", MODEL, err);
    if (rc)
        return check_done();
    shoal_tokenizer *t = shoal_tokenizer_from_gguf(g, err, sizeof err);
    CHECK_MSG(t != NULL, "tokenizer: %s", err);
    ref_tok r;
    CHECK(ref_init(&r, g) == 0);
    shoal_gguf_close(&g);
    if (t) {
        test_basics(t);
        test_edges(t);
        test_reference_cases(t, &r);
        test_differential(t, &r);
        test_long(t, &r);
    }
    ref_free(&r);
    shoal_tokenizer_destroy(&t);
    return check_done();
}
