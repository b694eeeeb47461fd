/*
 * `shoal mkmodel`: runs the subcommand into a temporary folder and reads the
 * file back: metadata llama.cpp needs, the vocabulary, tensor names, shapes
 * and types, weight statistics (std 1/sqrt(fan_in), smaller for the
 * residual projections, norms 1) for every type, determinism from --seed,
 * usage errors (exit 2) and runtime errors (exit 1), and that activations
 * stay finite through a 24-block forward pass.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/cmd.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "kernels/types.h"
#include "tests/check.h"

static char tmpdir[256];

/* Runs mkmodel with a space-separated argument string (no quoting). */
static int run(const char *args)
{
    char buf[2048];
    snprintf(buf, sizeof buf, "mkmodel %s", args);
    char *argv[64];
    int argc = 0;
    for (char *tok = strtok(buf, " "); tok && argc < 63; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    argv[argc] = NULL;
    fflush(stdout);
    return shoal_cmd_mkmodel(argc, argv);
}

static uint32_t u32(const shoal_gguf *g, const char *key)
{
    uint32_t v = 0xffffffffu;
    CHECK_MSG(shoal_gguf_get_u32(g, key, &v) == 0, "%s", key);
    return v;
}

static const shoal_gguf_tensor *tensor(const shoal_gguf *g, const char *name)
{
    const shoal_gguf_tensor *t = shoal_gguf_tensor_at(g, shoal_gguf_find_tensor(g, name));
    CHECK_MSG(t != NULL, "tensor %s", name);
    return t;
}

/* Mean and std of a tensor's values (dequantized). */
static void stats(const shoal_gguf *g, const char *name, double *mean, double *std)
{
    int64_t i = shoal_gguf_find_tensor(g, name);
    const shoal_gguf_tensor *t = shoal_gguf_tensor_at(g, i);
    *mean = *std = NAN;
    if (!t)
        return;
    int64_t k = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
    size_t rb = shoal_type_row_bytes(t->type, k);
    float *row = malloc((size_t)k * sizeof *row);
    const uint8_t *p = shoal_gguf_tensor_data(g, i);
    double s = 0, s2 = 0;
    bool finite = true;
    for (int64_t r = 0; r < rows; r++) {
        shoal_dequantize_row(t->type, p + (size_t)r * rb, row, k);
        for (int64_t j = 0; j < k; j++) {
            finite = finite && isfinite(row[j]);
            s += row[j];
            s2 += (double)row[j] * row[j];
        }
    }
    free(row);
    double n = (double)(k * rows);
    *mean = finite ? s / n : NAN;
    *std = finite ? sqrt(s2 / n - (s / n) * (s / n)) : NAN;
}

static bool near(double x, double want, double rel)
{
    return fabs(x - want) <= rel * fabs(want);
}

static void test_small(void)
{
    char path[512], args[1024];
    snprintf(path, sizeof path, "%s/tiny.gguf", tmpdir);
    snprintf(args, sizeof args,
             "-o %s --dim 64 --ffn 128 --heads 4 --kv-heads 2 --layers 3 --vocab 300 "
             "--type q8_0 --seed 7 --ctx 256 --name tiny",
             path);
    CHECK(run(args) == 0);
    shoal_gguf *g = NULL;
    char err[256];
    int rc = shoal_gguf_open(path, &g, err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
    if (rc)
        return;
    const char *s = NULL;
    CHECK(shoal_gguf_get_str(g, "general.architecture", &s) == 0 && strcmp(s, "llama") == 0);
    CHECK(shoal_gguf_get_str(g, "general.name", &s) == 0 && strcmp(s, "tiny") == 0);
    CHECK(shoal_gguf_get_str(g, "tokenizer.ggml.model", &s) == 0 && strcmp(s, "llama") == 0);
    CHECK(u32(g, "llama.context_length") == 256);
    CHECK(u32(g, "llama.embedding_length") == 64);
    CHECK(u32(g, "llama.feed_forward_length") == 128);
    CHECK(u32(g, "llama.block_count") == 3);
    CHECK(u32(g, "llama.attention.head_count") == 4);
    CHECK(u32(g, "llama.attention.head_count_kv") == 2);
    CHECK(u32(g, "llama.rope.dimension_count") == 16);
    CHECK(u32(g, "general.file_type") == 7);
    CHECK(u32(g, "tokenizer.ggml.unknown_token_id") == 0);
    CHECK(u32(g, "tokenizer.ggml.bos_token_id") == 1);
    CHECK(u32(g, "tokenizer.ggml.eos_token_id") == 2);
    /* llama.cpp reads these keys with exact types */
    const char *u32_keys[] = {"llama.context_length", "llama.embedding_length",
                              "llama.feed_forward_length", "llama.block_count",
                              "llama.attention.head_count", "llama.attention.head_count_kv",
                              "llama.rope.dimension_count", "general.file_type",
                              "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"};
    for (size_t i = 0; i < sizeof u32_keys / sizeof u32_keys[0]; i++)
        CHECK_MSG(shoal_gguf_kv_type(g, shoal_gguf_find_key(g, u32_keys[i])) == SHOAL_GGUF_U32,
                  "%s", u32_keys[i]);
    float f = 0;
    CHECK(shoal_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f) == 0 && f == 1e-5f);
    CHECK(shoal_gguf_get_f32(g, "llama.rope.freq_base", &f) == 0 && f == 10000.0f);
    CHECK(shoal_gguf_kv_type(g, shoal_gguf_find_key(g, "llama.rope.freq_base")) == SHOAL_GGUF_F32);

    /* vocabulary: exactly V tokens, control, bytes, then unique pieces */
    int64_t ti = shoal_gguf_find_key(g, "tokenizer.ggml.tokens");
    int64_t si = shoal_gguf_find_key(g, "tokenizer.ggml.scores");
    int64_t yi = shoal_gguf_find_key(g, "tokenizer.ggml.token_type");
    CHECK(shoal_gguf_arr_type(g, ti) == SHOAL_GGUF_STRING && shoal_gguf_arr_len(g, ti) == 300);
    CHECK(shoal_gguf_arr_type(g, si) == SHOAL_GGUF_F32 && shoal_gguf_arr_len(g, si) == 300);
    CHECK(shoal_gguf_arr_type(g, yi) == SHOAL_GGUF_I32 && shoal_gguf_arr_len(g, yi) == 300);
    const float *scores = shoal_gguf_arr_data(g, si);
    const int32_t *types = shoal_gguf_arr_data(g, yi);
    if (shoal_gguf_arr_len(g, ti) == 300 && scores && types) {
        CHECK(strcmp(shoal_gguf_arr_str(g, ti, 0)->s, "<unk>") == 0 && types[0] == 2);
        CHECK(strcmp(shoal_gguf_arr_str(g, ti, 1)->s, "<s>") == 0 && types[1] == 3);
        CHECK(strcmp(shoal_gguf_arr_str(g, ti, 2)->s, "</s>") == 0 && types[2] == 3);
        bool bytes_ok = true;
        for (int b = 0; b < 256; b++) {
            char want[8];
            snprintf(want, sizeof want, "<0x%02X>", b);
            bytes_ok = bytes_ok && strcmp(shoal_gguf_arr_str(g, ti, 3 + (uint64_t)b)->s, want) == 0 &&
                       types[3 + b] == 6;
        }
        CHECK(bytes_ok);
        CHECK(strcmp(shoal_gguf_arr_str(g, ti, 259)->s, "\xe2\x96\x81") == 0);
        bool normal = true, decreasing = true, unique = true;
        for (uint64_t i = 259; i < 300; i++) {
            normal = normal && types[i] == 1 && shoal_gguf_arr_str(g, ti, i)->len > 0;
            if (i > 259)
                decreasing = decreasing && scores[i] < scores[i - 1];
        }
        for (uint64_t i = 0; i < 300; i++)
            for (uint64_t j = i + 1; j < 300; j++)
                unique = unique && strcmp(shoal_gguf_arr_str(g, ti, i)->s,
                                          shoal_gguf_arr_str(g, ti, j)->s) != 0;
        CHECK(normal && decreasing && unique);
    }

    /* tensors: llama.cpp's names and shapes */
    CHECK(shoal_gguf_n_tensors(g) == 3 + 9 * 3);
    struct { const char *name; int type; int64_t ne0, ne1; } want[] = {
        {"token_embd.weight", SHOAL_TYPE_Q8_0, 64, 300},
        {"output_norm.weight", SHOAL_TYPE_F32, 64, 1},
        {"output.weight", SHOAL_TYPE_Q8_0, 64, 300},
        {"blk.2.attn_norm.weight", SHOAL_TYPE_F32, 64, 1},
        {"blk.2.attn_q.weight", SHOAL_TYPE_Q8_0, 64, 64},
        {"blk.2.attn_k.weight", SHOAL_TYPE_Q8_0, 64, 32},
        {"blk.2.attn_v.weight", SHOAL_TYPE_Q8_0, 64, 32},
        {"blk.2.attn_output.weight", SHOAL_TYPE_Q8_0, 64, 64},
        {"blk.2.ffn_norm.weight", SHOAL_TYPE_F32, 64, 1},
        {"blk.2.ffn_gate.weight", SHOAL_TYPE_Q8_0, 64, 128},
        {"blk.2.ffn_up.weight", SHOAL_TYPE_Q8_0, 64, 128},
        {"blk.2.ffn_down.weight", SHOAL_TYPE_Q8_0, 128, 64},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const shoal_gguf_tensor *t = tensor(g, want[i].name);
        CHECK_MSG(t && t->type == want[i].type && t->ne[0] == want[i].ne0 &&
                      t->ne[1] == want[i].ne1 && t->n_dims == (want[i].ne1 > 1 ? 2 : 1),
                  "%s", want[i].name);
    }
    for (int l = 0; l < 3; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        CHECK(tensor(g, name) != NULL);
    }
    double mean, std;
    stats(g, "blk.0.attn_norm.weight", &mean, &std);
    CHECK(mean == 1.0 && std == 0.0);
    stats(g, "output_norm.weight", &mean, &std);
    CHECK(mean == 1.0 && std == 0.0);
    stats(g, "token_embd.weight", &mean, &std);
    CHECK_MSG(near(std, 1.0, 0.1) && fabs(mean) < 0.05, "embd mean %g std %g", mean, std);
    shoal_gguf_close(&g);
}

/* Every type: weights dequantize to the planned spread. */
static void test_types(void)
{
    const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_K", "q6_K"};
    const int ids[] = {SHOAL_TYPE_F32, SHOAL_TYPE_F16, SHOAL_TYPE_BF16, SHOAL_TYPE_Q8_0,
                       SHOAL_TYPE_Q4_0, SHOAL_TYPE_Q4_K, SHOAL_TYPE_Q6_K};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        char path[512], args[1024], err[256];
        snprintf(path, sizeof path, "%s/t_%s.gguf", tmpdir, types[k]);
        snprintf(args, sizeof args,
                 "-o %s --dim 256 --ffn 512 --heads 8 --kv-heads 8 --layers 2 --vocab 260 --type %s",
                 path, types[k]);
        CHECK_MSG(run(args) == 0, "%s", types[k]);
        shoal_gguf *g = NULL;
        if (shoal_gguf_open(path, &g, err, sizeof err) != 0) {
            CHECK_MSG(0, "%s", err);
            continue;
        }
        CHECK(tensor(g, "blk.1.ffn_up.weight") && tensor(g, "blk.1.ffn_up.weight")->type == ids[k]);
        CHECK(tensor(g, "output.weight") && tensor(g, "output.weight")->type == ids[k]);
        CHECK(tensor(g, "blk.1.ffn_norm.weight") &&
              tensor(g, "blk.1.ffn_norm.weight")->type == SHOAL_TYPE_F32);
        double mean, std;
        stats(g, "blk.1.attn_q.weight", &mean, &std);
        CHECK_MSG(near(std, 1.0 / 16, 0.15), "%s: attn_q std %g", types[k], std);
        stats(g, "blk.1.ffn_down.weight", &mean, &std);   /* 1/sqrt(512) / sqrt(2*2) */
        CHECK_MSG(near(std, 1.0 / sqrt(512.0) / 2.0, 0.15), "%s: ffn_down std %g", types[k], std);
        stats(g, "blk.0.attn_output.weight", &mean, &std);
        CHECK_MSG(near(std, 1.0 / 16 / 2.0, 0.15), "%s: attn_output std %g", types[k], std);
        shoal_gguf_close(&g);
        unlink(path);
    }
}

static bool same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        same = ca == cb;
        if (ca == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

static void test_seed(void)
{
    char a[512], b[512], c[512], args[1024];
    const char *shape = "--dim 64 --ffn 96 --heads 2 --kv-heads 1 --layers 1 --vocab 400 --type f16";
    snprintf(a, sizeof a, "%s/s1.gguf", tmpdir);
    snprintf(b, sizeof b, "%s/s2.gguf", tmpdir);
    snprintf(c, sizeof c, "%s/s3.gguf", tmpdir);
    snprintf(args, sizeof args, "-o %s %s --seed 42", a, shape);
    CHECK(run(args) == 0);
    snprintf(args, sizeof args, "%s --seed 42 -o %s", shape, b);
    CHECK(run(args) == 0);
    snprintf(args, sizeof args, "-o %s %s --seed 43", c, shape);
    CHECK(run(args) == 0);
    CHECK(same_file(a, b));
    CHECK(!same_file(a, c));
    unlink(a);
    unlink(b);
    unlink(c);
}

static void test_errors(void)
{
    char args[1024], path[512];
    snprintf(path, sizeof path, "%s/err.gguf", tmpdir);
    const char *shape = "--ffn 128 --kv-heads 2 --layers 1 --vocab 300";
    struct { const char *extra; int rc; } cases[] = {
        {"--dim 64 --heads 4 --type f32", 0},
        {"--dim 64 --heads 4", 2},                    /* no type */
        {"--dim 64 --heads 4 --type q2_K", 2},        /* unsupported type */
        {"--dim 64 --heads 5 --type f32", 2},         /* heads do not divide dim */
        {"--dim 64 --heads 3 --type f32", 2},
        {"--dim 12 --heads 4 --type f32", 2},         /* odd head size */
        {"--dim 64 --heads 4 --type q4_K", 2},        /* dim not a multiple of 256 */
        {"--dim 64 --heads 4 --type f32 --vocab 259", 2},
        {"--dim 0 --heads 4 --type f32", 2},
        {"--dim -64 --heads 4 --type f32", 2},
        {"--dim 64x --heads 4 --type f32", 2},
        {"--dim 64 --heads 4 --type f32 --layers 0", 2},
        {"--dim 64 --heads 4 --type f32 --bogus 1", 2},
        {"--dim 64 --heads 4 --type f32 stray", 2},
        {"--dim 64 --heads 4 --type f32 --seed -1", 2},
        {"--dim 64 --heads 8 --type f32 --kv-heads 3", 2},  /* kv-heads do not divide heads */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(args, sizeof args, "-o %s %s %s", path, shape, cases[i].extra);
        int rc = run(args);
        CHECK_MSG(rc == cases[i].rc, "'%s': exit %d, want %d", cases[i].extra, rc, cases[i].rc);
    }
    snprintf(args, sizeof args, "%s --dim 64 --heads 4 --type f32", shape);   /* no -o */
    CHECK(run(args) == 2);
    snprintf(args, sizeof args, "-o %s/no/such/dir/x.gguf %s --dim 64 --heads 4 --type f32",
             tmpdir, shape);
    CHECK(run(args) == 1);
    CHECK(run("--help") == 0);
    unlink(path);
}

/* 24 blocks of random weights: the residual stream and the logits stay
 * finite and neither vanish nor blow up. */
static void test_deep_forward(void)
{
    char path[512], args[1024], err[256];
    snprintf(path, sizeof path, "%s/deep.gguf", tmpdir);
    snprintf(args, sizeof args,
             "-o %s --dim 128 --ffn 352 --heads 4 --kv-heads 2 --layers 24 --vocab 512 --type f32",
             path);
    CHECK(run(args) == 0);
    shoal_gguf *g = NULL;
    if (shoal_gguf_open(path, &g, err, sizeof err) != 0) {
        CHECK_MSG(0, "%s", err);
        return;
    }
    shoal_model *m = NULL;
    int rc = shoal_model_open(g, 0, 24, SHOAL_PART_EMBED | SHOAL_PART_HEAD, &m, err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
    if (rc == 0) {
        const int n = 8;
        shoal_kv *kv = shoal_kv_new(m, 64);
        shoal_fwd *f = shoal_fwd_new(m, n, 64, 1);
        float *x = malloc(sizeof(float) * 128 * n), *logits = malloc(sizeof(float) * 512 * n);
        int32_t toks[8] = {1, 300, 301, 302, 400, 450, 500, 511};
        CHECK(kv && f && shoal_fwd_embed(f, toks, n, x) == 0);
        CHECK(shoal_fwd_blocks(f, kv, 0, n, x) == 0);
        double s2 = 0;
        bool finite = true;
        for (int i = 0; i < 128 * n; i++) {
            finite = finite && isfinite(x[i]);
            s2 += (double)x[i] * x[i];
        }
        double rms = sqrt(s2 / (128 * n));
        CHECK(shoal_fwd_head(f, x, n, logits) == 0);
        double l2 = 0;
        for (int i = 0; i < 512 * n; i++) {
            finite = finite && isfinite(logits[i]);
            l2 += (double)logits[i] * logits[i];
        }
        double lrms = sqrt(l2 / (512 * n));
        printf("24 blocks: residual rms %.3f, logits rms %.3f\n", rms, lrms);
        CHECK(finite);
        CHECK_MSG(rms > 0.5 && rms < 10.0, "residual rms %g", rms);
        CHECK_MSG(lrms > 0.1 && lrms < 10.0, "logits rms %g", lrms);
        free(x);
        free(logits);
        shoal_fwd_destroy(&f);
        shoal_kv_destroy(&kv);
        shoal_model_destroy(&m);
    }
    shoal_gguf_close(&g);
    unlink(path);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_mkmodel.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_small();
    test_types();
    test_seed();
    test_errors();
    test_deep_forward();
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.gguf", tmpdir);
    unlink(path);
    rmdir(tmpdir);
    return check_done();
}
