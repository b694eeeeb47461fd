/*
 * `shoal mkmodel`: writes a random-weight Llama-architecture GGUF of any
 * shape, for benchmarks and tests at real layer sizes (Llama-2-7B, 70B) that
 * cannot be downloaded here. The file carries every key llama.cpp needs for
 * arch "llama" and a usable SentencePiece-style vocabulary, so llama.cpp
 * loads it as well as shoal.
 *
 * Tensors have llama.cpp's names and shapes (ne[0] = input features):
 *   token_embd.weight  (dim, vocab)      output_norm.weight (dim)   f32
 *   output.weight      (dim, vocab)
 *   blk.N.attn_norm.weight (dim) f32     blk.N.ffn_norm.weight (dim) f32
 *   blk.N.attn_q.weight (dim, dim)       blk.N.attn_output.weight (dim, dim)
 *   blk.N.attn_k.weight (dim, kv_dim)    blk.N.attn_v.weight (dim, kv_dim)
 *   blk.N.ffn_gate.weight (dim, ffn)     blk.N.ffn_up.weight (dim, ffn)
 *   blk.N.ffn_down.weight (ffn, dim)
 * with kv_dim = dim / heads * kv_heads. Every weight matrix, embeddings and
 * output included, is stored in the chosen --type; norms are f32 ones.
 *
 * Weights are N(0, std^2) with std = 1/sqrt(fan_in), and for the two
 * projections that write into the residual stream (attn_output, ffn_down)
 * additionally / sqrt(2 * layers), so the residual grows slowly and
 * activations stay finite through many layers; embeddings have std 1 (the
 * first RMSNorm rescales them anyway). The generator is splitmix64 with
 * Box-Muller, seeded per tensor from --seed and the tensor's name, so a
 * tensor's values do not depend on which other tensors the file holds.
 *
 * Memory: tensors are declared first, then streamed to the file a few MiB
 * of rows at a time, so a 70B-shaped file needs no more than that.
 */
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cli.h"
#include "client/cmd.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/types.h"
#include "swarm/progress.h"

#define MK_CHUNK_BYTES ((size_t)8 << 20)   /* f32 staging per write */
#define MK_MAX_VOCAB (1L << 22)

typedef struct mk_params {
    const char *out;
    const char *name;
    long dim, ffn, heads, kv_heads, layers, vocab, ctx;
    uint64_t seed;
    int type;
} mk_params;

static void mk_usage(FILE *f)
{
    fprintf(f,
        "usage: shoal mkmodel -o FILE --dim D --ffn F --heads H --kv-heads K --layers L\n"
        "                     --vocab V --type T [--seed S] [--ctx N] [--name NAME]\n"
        "\n"
        "Writes a random-weight Llama-architecture GGUF that shoal and llama.cpp load.\n"
        "\n"
        "  -o, --output FILE  the file to write (atomically: temporary file, then rename)\n"
        "  --dim D            embedding length (a multiple of the type's block size)\n"
        "  --ffn F            feed-forward length (a multiple of the type's block size)\n"
        "  --heads H          attention heads (divides D; D/H even)\n"
        "  --kv-heads K       key/value heads (divides H; K < H is grouped-query attention)\n"
        "  --layers L         transformer blocks\n"
        "  --vocab V          vocabulary size, at least 260 (3 control + 256 byte tokens + pieces)\n"
        "  --type T           weight type: f32 f16 bf16 q8_0 q4_0 q4_K q6_K (norms are f32)\n"
        "  --seed S           random seed (default 1)\n"
        "  --ctx N            context length recorded in the file (default 4096)\n"
        "  --name NAME        general.name (default \"shoal-random\")\n"
        "\n"
        "Llama-2-7B shapes: --dim 4096 --ffn 11008 --heads 32 --kv-heads 32 --vocab 32000\n"
        "Llama-2-70B shapes: --dim 8192 --ffn 28672 --heads 64 --kv-heads 8 --vocab 32000\n");
    shoal_cli_help_common(f, "mkmodel");
}

/* llama.cpp's llama_ftype for a file whose weights are all of `type`. */
static uint32_t mk_file_type(int type)
{
    switch (type) {
    case SHOAL_TYPE_F32: return 0;
    case SHOAL_TYPE_F16: return 1;
    case SHOAL_TYPE_Q4_0: return 2;
    case SHOAL_TYPE_Q8_0: return 7;
    case SHOAL_TYPE_Q4_K: return 15;   /* LLAMA_FTYPE_MOSTLY_Q4_K_M */
    case SHOAL_TYPE_Q6_K: return 18;
    case SHOAL_TYPE_BF16: return 32;
    default: return 0;
    }
}

/* ---- random numbers ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct mk_rng {
    uint64_t s;
    double spare;
    int has_spare;
} mk_rng;

static mk_rng mk_rng_for(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a of the name */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    mk_rng r = {.s = seed};
    r.s = splitmix64(&r.s) ^ h;
    return r;
}

/* Standard normal by Box-Muller. */
static double mk_normal(mk_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1 = (double)((splitmix64(&r->s) >> 11) + 1) * 0x1.0p-53;   /* (0, 1] */
    double u2 = (double)(splitmix64(&r->s) >> 11) * 0x1.0p-53;         /* [0, 1) */
    double m = sqrt(-2.0 * log(u1));
    r->spare = m * sin(2.0 * M_PI * u2);
    r->has_spare = 1;
    return m * cos(2.0 * M_PI * u2);
}

/* ---- vocabulary ---------------------------------------------------------- */

#define SP "\xe2\x96\x81"   /* U+2581, SentencePiece's word boundary */

static const char *const mk_words[] = {
    "the", "and", "a", "to", "was", "he", "she", "it", "of", "in", "they", "her", "his",
    "said", "you", "with", "had", "for", "on", "that", "big", "little", "day", "one",
    "time", "upon", "once", "there", "girl", "boy", "named", "lily", "tom", "ben", "happy",
    "play", "played", "saw", "went", "very", "mom", "dad", "friend", "friends", "is", "not",
    "but", "so", "we", "be", "at", "can", "all", "what", "up", "out", "do", "go", "see",
    "have", "were", "are", "them", "then", "when", "this", "him", "me", "my", "like",
    "wanted", "loved", "park", "ball", "dog", "cat", "bird", "tree", "sun", "sky", "water",
    "fun", "sad", "good", "nice", "new", "toy", "home", "house", "look", "looked", "help",
    "helped", "found", "made", "came", "away", "back", "down", "from", "about", "because",
    "every", "other", "each", "which", "their", "would", "could", "should", "will", "just",
    "how", "more", "some", "no", "yes", "if", "or", "an", "by", "as", "this", "who", "why",
    "where", "little", "many", "than", "into", "over", "after", "before", "again", "also",
    "hello", "world", "model", "run", "ran", "walk", "talk", "red", "blue", "green", "small",
};

typedef struct mk_vocab {
    char **tok;
    float *score;
    int32_t *type;
    long n, cap;
    /* open-addressing set of the pieces added, for uniqueness */
    long *slots;
    long nslots;
} mk_vocab;

static uint64_t mk_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* Adds s unless present or the vocabulary is full. -1 on allocation failure. */
static int mk_vocab_add(mk_vocab *v, const char *s, float score, int32_t type)
{
    if (v->n == v->cap)
        return 0;
    uint64_t i = mk_hash(s) & (uint64_t)(v->nslots - 1);
    while (v->slots[i] >= 0) {
        if (strcmp(v->tok[v->slots[i]], s) == 0)
            return 0;
        i = (i + 1) & (uint64_t)(v->nslots - 1);
    }
    if (!(v->tok[v->n] = strdup(s)))
        return -1;
    v->slots[i] = v->n;
    v->score[v->n] = score;
    v->type[v->n] = type;
    v->n++;
    return 0;
}

static void mk_vocab_free(mk_vocab *v)
{
    for (long i = 0; v->tok && i < v->n; i++)
        free(v->tok[i]);
    free(v->tok);
    free(v->score);
    free(v->type);
    free(v->slots);
}

/* Normal pieces get scores -1, -2, ... in order of addition. */
static int mk_piece(mk_vocab *v, const char *s)
{
    return mk_vocab_add(v, s, (float)-(v->n - 258), 1);
}

/* All strings of `len` lowercase letters, with and without the boundary. */
static int mk_letters(mk_vocab *v, int len)
{
    char buf[16];
    long total = 1;
    for (int k = 0; k < len; k++)
        total *= 26;
    for (long i = 0; i < total && v->n < v->cap; i++) {
        long x = i;
        for (int k = len - 1; k >= 0; k--) {
            buf[k] = (char)('a' + x % 26);
            x /= 26;
        }
        buf[len] = '\0';
        char sp[32];
        snprintf(sp, sizeof sp, SP "%s", buf);
        if (mk_piece(v, sp) || mk_piece(v, buf))
            return -1;
    }
    return 0;
}

static int mk_vocab_build(mk_vocab *v, long n)
{
    memset(v, 0, sizeof *v);
    if (n < 260 || n > MK_MAX_VOCAB)
        return -1;
    v->cap = n;
    v->nslots = 1;
    while (v->nslots < 2 * n)
        v->nslots *= 2;
    v->tok = calloc((size_t)n, sizeof *v->tok);
    v->score = calloc((size_t)n, sizeof *v->score);
    v->type = calloc((size_t)n, sizeof *v->type);
    v->slots = malloc((size_t)v->nslots * sizeof *v->slots);
    if (!v->tok || !v->score || !v->type || !v->slots)
        return -1;
    for (long i = 0; i < v->nslots; i++)
        v->slots[i] = -1;
    if (mk_vocab_add(v, "<unk>", 0.0f, 2) || mk_vocab_add(v, "<s>", 0.0f, 3) ||
        mk_vocab_add(v, "</s>", 0.0f, 3))
        return -1;
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        if (mk_vocab_add(v, s, 0.0f, 6))
            return -1;
    }
    if (mk_piece(v, SP))
        return -1;
    static const char singles[] =
        "etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,!?'\"-:;()";
    for (const char *c = singles; *c; c++) {
        char s[2] = {*c, 0};
        if (mk_piece(v, s))
            return -1;
    }
    /* each common word with every prefix, so merges can reach it */
    for (size_t w = 0; w < sizeof mk_words / sizeof mk_words[0]; w++) {
        char buf[64];
        size_t len = strlen(mk_words[w]);
        for (size_t k = 1; k <= len; k++) {
            snprintf(buf, sizeof buf, SP "%.*s", (int)k, mk_words[w]);
            if (mk_piece(v, buf))
                return -1;
        }
    }
    for (int len = 1; len <= 5 && v->n < v->cap; len++)
        if (mk_letters(v, len))
            return -1;
    return v->n == n ? 0 : -1;   /* up to 5 letters: 2 * 12.3M pieces, always enough */
}

/* ---- tensors ------------------------------------------------------------- */

typedef struct mk_tensor {
    char name[64];
    int type;
    int64_t ne[2];
    int n_dims;
    double std;   /* 0: all ones */
} mk_tensor;

/* Appends a tensor; ne1 = 0 makes it a vector. std = 0: all ones. */
static void mk_add(mk_tensor *ts, long *n, const char *name, int type, long ne0, long ne1,
                   double std)
{
    mk_tensor *t = &ts[(*n)++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->ne[0] = ne0;
    t->ne[1] = ne1 ? ne1 : 1;
    t->n_dims = ne1 ? 2 : 1;
    t->std = std;
}

static int mk_stream_tensor(shoal_gguf_writer *w, const mk_tensor *t, uint64_t seed,
                            float *xf, void *xq, shoal_progress *bar, char *err, size_t errlen)
{
    mk_rng r = mk_rng_for(seed, t->name);
    int64_t k = t->ne[0], rows = t->n_dims > 1 ? t->ne[1] : 1;
    size_t row_bytes = shoal_type_row_bytes(t->type, k);
    int64_t per = (int64_t)(MK_CHUNK_BYTES / ((size_t)k * sizeof(float)));
    if (per < 1)
        per = 1;
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        int64_t nr = rows - r0 < per ? rows - r0 : per;
        for (int64_t i = 0; i < nr * k; i++)
            xf[i] = t->std > 0 ? (float)(mk_normal(&r) * t->std) : 1.0f;
        for (int64_t i = 0; i < nr; i++)
            shoal_quantize_row(t->type, xf + i * k, (uint8_t *)xq + (size_t)i * row_bytes, k);
        int e = shoal_gguf_writer_put_bytes(w, xq, (size_t)nr * row_bytes, err, errlen);
        if (e)
            return e;
        shoal_progress_set(bar, bar->done + (uint64_t)nr * row_bytes);
    }
    return 0;
}

static int mk_write(const mk_params *p)
{
    char err[512];
    int rc = 1;
    long head_dim = p->dim / p->heads, kv_dim = head_dim * p->kv_heads;
    shoal_gguf_writer *w = shoal_gguf_writer_new();
    mk_vocab voc = {0};
    mk_tensor *ts = NULL;
    float *xf = NULL;
    void *xq = NULL;
    if (!w || mk_vocab_build(&voc, p->vocab)) {
        fprintf(stderr, "shoal mkmodel: out of memory building the vocabulary\n");
        goto out;
    }

    int e = 0;
    e |= shoal_gguf_writer_set_str(w, "general.architecture", "llama");
    e |= shoal_gguf_writer_set_str(w, "general.name", p->name);
    e |= shoal_gguf_writer_set_u32(w, "general.file_type", mk_file_type(p->type));
    e |= shoal_gguf_writer_set_u32(w, "general.quantization_version", 2);
    e |= shoal_gguf_writer_set_u32(w, "llama.context_length", (uint32_t)p->ctx);
    e |= shoal_gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)p->dim);
    e |= shoal_gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)p->ffn);
    e |= shoal_gguf_writer_set_u32(w, "llama.block_count", (uint32_t)p->layers);
    e |= shoal_gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)p->heads);
    e |= shoal_gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)p->kv_heads);
    e |= shoal_gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)head_dim);
    e |= shoal_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    e |= shoal_gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f);
    e |= shoal_gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)p->vocab);
    e |= shoal_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    e |= shoal_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)voc.tok,
                                       (uint64_t)voc.n);
    e |= shoal_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SHOAL_GGUF_F32, voc.score,
                                   (uint64_t)voc.n);
    e |= shoal_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SHOAL_GGUF_I32, voc.type,
                                   (uint64_t)voc.n);
    e |= shoal_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    e |= shoal_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    e |= shoal_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    e |= shoal_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    e |= shoal_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false);
    if (e) {
        fprintf(stderr, "shoal mkmodel: cannot set metadata (out of memory)\n");
        goto out;
    }

    long n_t = 3 + 9 * p->layers;
    ts = calloc((size_t)n_t, sizeof *ts);
    if (!ts) {
        fprintf(stderr, "shoal mkmodel: out of memory\n");
        goto out;
    }
    double res_scale = 1.0 / sqrt(2.0 * (double)p->layers);
    double s_dim = 1.0 / sqrt((double)p->dim), s_ffn = 1.0 / sqrt((double)p->ffn);
    long n = 0;
    mk_add(ts, &n, "token_embd.weight", p->type, p->dim, p->vocab, 1.0);
    for (long l = 0; l < p->layers; l++) {
        char nm[64];
#define MK_BLK(part, ty, ne0, ne1, sd)                                        \
        snprintf(nm, sizeof nm, "blk.%ld." part ".weight", l);                 \
        mk_add(ts, &n, nm, ty, ne0, ne1, sd)
        MK_BLK("attn_norm", SHOAL_TYPE_F32, p->dim, 0, 0.0);
        MK_BLK("attn_q", p->type, p->dim, p->dim, s_dim);
        MK_BLK("attn_k", p->type, p->dim, kv_dim, s_dim);
        MK_BLK("attn_v", p->type, p->dim, kv_dim, s_dim);
        MK_BLK("attn_output", p->type, p->dim, p->dim, s_dim * res_scale);
        MK_BLK("ffn_norm", SHOAL_TYPE_F32, p->dim, 0, 0.0);
        MK_BLK("ffn_gate", p->type, p->dim, p->ffn, s_dim);
        MK_BLK("ffn_up", p->type, p->dim, p->ffn, s_dim);
        MK_BLK("ffn_down", p->type, p->ffn, p->dim, s_ffn * res_scale);
#undef MK_BLK
    }
    mk_add(ts, &n, "output_norm.weight", SHOAL_TYPE_F32, p->dim, 0, 0.0);
    mk_add(ts, &n, "output.weight", p->type, p->dim, p->vocab, s_dim);

    size_t max_row = 0;
    long max_k = 0;
    for (long i = 0; i < n; i++) {
        int rc2 = shoal_gguf_writer_declare_tensor(w, ts[i].name, ts[i].type, ts[i].n_dims,
                                                   ts[i].ne);
        if (rc2) {
            fprintf(stderr, "shoal mkmodel: cannot declare tensor '%s': %s\n", ts[i].name,
                    shoal_strerror(rc2));
            goto out;
        }
        size_t rb = shoal_type_row_bytes(ts[i].type, ts[i].ne[0]);
        if (rb > max_row)
            max_row = rb;
        if (ts[i].ne[0] > max_k)
            max_k = (long)ts[i].ne[0];
    }
    /* staging: at least one row, else MK_CHUNK_BYTES of f32 */
    size_t rows_max = MK_CHUNK_BYTES / ((size_t)max_k * sizeof(float));
    if (rows_max < 1)
        rows_max = 1;
    size_t fbytes = MK_CHUNK_BYTES > (size_t)max_k * sizeof(float) ? MK_CHUNK_BYTES
                                                                   : (size_t)max_k * sizeof(float);
    xf = malloc(fbytes);
    xq = malloc(fbytes > max_row * rows_max ? fbytes : max_row * rows_max);
    if (!xf || !xq) {
        fprintf(stderr, "shoal mkmodel: out of memory\n");
        goto out;
    }

    if ((e = shoal_gguf_writer_begin(w, p->out, err, sizeof err))) {
        fprintf(stderr, "shoal mkmodel: %s\n", err);
        goto out;
    }
    uint64_t total = 0, params = 0, all = 0;
    for (long i = 0; i < n; i++)
        all += shoal_gguf_writer_tensor_bytes(w, i);
    shoal_progress bar;
    shoal_progress_init(&bar, "writing", all, SHOAL_PROGRESS_BYTES);
    for (long i = 0; i < n; i++) {
        if ((e = mk_stream_tensor(w, &ts[i], p->seed, xf, xq, &bar, err, sizeof err))) {
            shoal_progress_fini(&bar, false);
            fprintf(stderr, "shoal mkmodel: %s\n", err);
            goto out;
        }
        total += shoal_gguf_writer_tensor_bytes(w, i);
        params += (uint64_t)(ts[i].ne[0] * (ts[i].n_dims > 1 ? ts[i].ne[1] : 1));
    }
    e = shoal_gguf_writer_finish(w, err, sizeof err);
    shoal_progress_fini(&bar, e == 0);
    if (e) {
        fprintf(stderr, "shoal mkmodel: %s\n", err);
        goto out;
    }
    bool billions = params >= 1000000000u;
    printf("wrote %s: llama, %ld layers, dim %ld, ffn %ld, heads %ld/%ld, vocab %ld, %s, "
           "%.2f%s params, %.1f MiB of tensors\n",
           p->out, p->layers, p->dim, p->ffn, p->heads, p->kv_heads, p->vocab,
           shoal_type_info(p->type)->name, (double)params * (billions ? 1e-9 : 1e-6),
           billions ? "B" : "M", (double)total / (1 << 20));
    rc = 0;
out:
    free(xf);
    free(xq);
    free(ts);
    mk_vocab_free(&voc);
    shoal_gguf_writer_destroy(&w);   /* removes the temporary file on failure */
    return rc;
}

static int mk_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A usage error: one line on stderr, exit status 2. */
static int mk_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "shoal mkmodel: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see shoal mkmodel --help)\n");
    va_end(ap);
    return 2;
}

int shoal_cmd_mkmodel(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'},   {"dim", required_argument, 0, 'd'},
        {"ffn", required_argument, 0, 'f'},      {"heads", required_argument, 0, 'H'},
        {"kv-heads", required_argument, 0, 'K'}, {"layers", required_argument, 0, 'L'},
        {"vocab", required_argument, 0, 'V'},    {"type", required_argument, 0, 'T'},
        {"seed", required_argument, 0, 'S'},     {"ctx", required_argument, 0, 'C'},
        {"name", required_argument, 0, 'N'},     {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    mk_params p = {.name = "shoal-random", .ctx = 4096, .seed = 1, .type = -1};
    const char *type_name = NULL;
    int c;
    if ((c = shoal_cli_prepare("mkmodel", opts, ":o:h", &argc, &argv)))
        return c;
    optind = 0;   /* glibc: a full re-initialisation, so the command can run twice */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': p.out = optarg; break;
        case 'd': if (!shoal_cli_int("mkmodel", "--dim", optarg, 1, 1 << 20, &p.dim)) return 2; break;
        case 'f': if (!shoal_cli_int("mkmodel", "--ffn", optarg, 1, 1 << 20, &p.ffn)) return 2; break;
        case 'H': if (!shoal_cli_int("mkmodel", "--heads", optarg, 1, 1 << 14, &p.heads)) return 2; break;
        case 'K': if (!shoal_cli_int("mkmodel", "--kv-heads", optarg, 1, 1 << 14, &p.kv_heads)) return 2; break;
        case 'L': if (!shoal_cli_int("mkmodel", "--layers", optarg, 1, 4096, &p.layers)) return 2; break;
        case 'V': if (!shoal_cli_int("mkmodel", "--vocab", optarg, 260, MK_MAX_VOCAB, &p.vocab)) return 2; break;
        case 'C': if (!shoal_cli_int("mkmodel", "--ctx", optarg, 1, 1 << 24, &p.ctx)) return 2; break;
        case 'S': if (!shoal_cli_u64("mkmodel", "--seed", optarg, &p.seed)) return 2; break;
        case 'T': type_name = optarg; break;
        case 'N': p.name = optarg; break;
        case 'h': mk_usage(stdout); return 0;
        case ':': return mk_fail("option '%s' needs a value", argv[optind - 1]);
        default: return mk_fail("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return mk_fail("unexpected argument '%s'", argv[optind]);
    if (!p.out || !*p.out)
        return mk_fail("-o FILE is required");
    static const struct { const char *opt; size_t off; } req[] = {
        {"--dim", offsetof(mk_params, dim)},     {"--ffn", offsetof(mk_params, ffn)},
        {"--heads", offsetof(mk_params, heads)}, {"--kv-heads", offsetof(mk_params, kv_heads)},
        {"--layers", offsetof(mk_params, layers)}, {"--vocab", offsetof(mk_params, vocab)},
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if (*(const long *)((const char *)&p + req[i].off) == 0)
            return mk_fail("%s is required", req[i].opt);
    if (!type_name)
        return mk_fail("--type is required");
    if ((p.type = shoal_type_from_name(type_name)) < 0)
        return mk_fail("unknown %s '%s' (f32 f16 bf16 q8_0 q4_0 q4_K q6_K)",
                       shoal_cli_source("--type", type_name), type_name);
    if (p.dim % p.heads)
        return mk_fail("--heads %ld does not divide --dim %ld", p.heads, p.dim);
    if ((p.dim / p.heads) % 2)
        return mk_fail("the head size --dim / --heads = %ld must be even", p.dim / p.heads);
    if (p.heads % p.kv_heads)
        return mk_fail("--kv-heads %ld does not divide --heads %ld", p.kv_heads, p.heads);
    long be = (long)shoal_type_info(p.type)->block_elems;
    if (p.dim % be || p.ffn % be)
        return mk_fail("--dim %ld and --ffn %ld must be multiples of the %s block size %ld",
                       p.dim, p.ffn, shoal_type_info(p.type)->name, be);
    if (!*p.name || strlen(p.name) > 4096)
        return mk_fail("--name must be 1..4096 bytes");
    return mk_write(&p);
}
