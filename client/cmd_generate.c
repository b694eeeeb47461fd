/*
 * `shoal generate`: local text generation. Standard output carries exactly
 * the prompt, the generated text and one final newline; every diagnostic
 * goes to standard error. The prompt is processed in batches (the fast
 * path), then one token per step; both give bit-identical results.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/cli.h"
#include "client/cmd.h"
#include "client/sampler.h"
#include "client/tokenizer.h"
#include "kernels/cpu.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "kernels/pool.h"

#define GEN_MAX_BATCH 256

static void generate_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal generate -m MODEL.gguf [-p PROMPT] [options]\n"
            "\n"
            "Generates text locally from a GGUF model. Standard output carries the prompt\n"
            "followed by the generated text and a newline; diagnostics go to standard error.\n"
            "\n"
            "  -m, --model FILE        GGUF model (Llama family)\n"
            "  -p, --prompt TEXT       prompt (default: empty, start from BOS)\n"
            "  -n, --n-predict N       tokens to generate (default 128); generation also stops\n"
            "                          at the model's end token\n"
            "  -c, --ctx-size N        context length in tokens (default: the model's); may\n"
            "                          exceed the length the file declares\n"
            "      --temp T            temperature, 0 = greedy (default 0.8)\n"
            "      --top-k K           keep the K most likely tokens, 0 = all (default 40)\n"
            "      --top-p P           nucleus sampling threshold (default 0.95)\n"
            "      --min-p P           drop tokens below P * max probability (default 0.05)\n"
            "      --repeat-penalty R  penalty for repeated tokens, 1 = off (default 1)\n"
            "      --repeat-last-n N   tokens the penalty looks back on (default 64)\n"
            "  -s, --seed S            random seed (default: from the clock)\n"
            "  -t, --threads N         compute threads (default: all cores)\n"
            "  -h, --help              show this help\n");
}

int shoal_cmd_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"prompt", required_argument, 0, 'p'},
        {"n-predict", required_argument, 0, 'n'}, {"ctx-size", required_argument, 0, 'c'},
        {"temp", required_argument, 0, 1},      {"top-k", required_argument, 0, 2},
        {"top-p", required_argument, 0, 3},     {"min-p", required_argument, 0, 4},
        {"repeat-penalty", required_argument, 0, 5}, {"repeat-last-n", required_argument, 0, 6},
        {"seed", required_argument, 0, 's'},    {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    const char *model_path = NULL, *prompt = "";
    long n_predict = 128, ctx = 0, threads = shoal_cpu_count(), v;
    double d;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    shoal_sampler_params sp = shoal_sampler_params_default();
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:p:n:c:s:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'p': prompt = optarg; break;
        case 'n': if (!shoal_cli_int("generate", "-n", optarg, 0, 1L << 30, &n_predict)) return 2; break;
        case 'c': if (!shoal_cli_int("generate", "-c", optarg, 1, 1L << 24, &ctx)) return 2; break;
        case 't': if (!shoal_cli_int("generate", "-t", optarg, 1, 1024, &threads)) return 2; break;
        case 's': if (!shoal_cli_u64("generate", "--seed", optarg, &seed)) return 2; break;
        case 1: if (!shoal_cli_float("generate", "--temp", optarg, 0, 100, &d)) return 2; sp.temp = (float)d; break;
        case 2: if (!shoal_cli_int("generate", "--top-k", optarg, 0, 1L << 30, &v)) return 2; sp.top_k = (int)v; break;
        case 3: if (!shoal_cli_float("generate", "--top-p", optarg, 0, 1, &d)) return 2; sp.top_p = (float)d; break;
        case 4: if (!shoal_cli_float("generate", "--min-p", optarg, 0, 1, &d)) return 2; sp.min_p = (float)d; break;
        case 5: if (!shoal_cli_float("generate", "--repeat-penalty", optarg, 0.01, 100, &d)) return 2; sp.repeat_penalty = (float)d; break;
        case 6: if (!shoal_cli_int("generate", "--repeat-last-n", optarg, 0, 1L << 20, &v)) return 2; sp.repeat_last_n = (int)v; break;
        case 'h': generate_usage(stdout); return 0;
        default: return shoal_cli_bad_option("generate", c, argv);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shoal generate: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model_path) {
        fprintf(stderr, "shoal generate: -m MODEL.gguf is required (see --help)\n");
        return 2;
    }
    sp.seed = seed;

    int status = 1;
    char err[512] = "";
    shoal_gguf *g = NULL;
    shoal_model *m = NULL;
    shoal_tokenizer *tok = NULL;
    shoal_sampler *smp = NULL;
    shoal_kv *kv = NULL;
    shoal_fwd *fwd = NULL;
    int32_t *tokens = NULL;
    float *x = NULL, *logits = NULL;

    shoal_cpu_init();
    int rc = shoal_gguf_open(model_path, &g, err, sizeof err);
    if (rc) {
        fprintf(stderr, "shoal generate: %s\n", err);
        goto out;
    }
    const shoal_hparams *hp;
    shoal_hparams hpr;
    if ((rc = shoal_hparams_read(g, &hpr, err, sizeof err)) ||
        (rc = shoal_model_open(g, 0, hpr.n_layer, SHOAL_PART_EMBED | SHOAL_PART_HEAD, &m, err,
                               sizeof err))) {
        fprintf(stderr, "shoal generate: %s: %s\n", model_path, err);
        goto out;
    }
    hp = shoal_model_hparams(m);
    if (!(tok = shoal_tokenizer_from_gguf(g, err, sizeof err))) {
        fprintf(stderr, "shoal generate: %s: %s\n", model_path, err);
        goto out;
    }
    if (shoal_tokenizer_n_vocab(tok) != hp->n_vocab) {
        fprintf(stderr, "shoal generate: %s: tokenizer has %d tokens, embedding has %d\n",
                model_path, shoal_tokenizer_n_vocab(tok), hp->n_vocab);
        goto out;
    }
    if (ctx == 0)
        ctx = hp->ctx_train;
    size_t plen = strlen(prompt);
    int n_prompt = 0;
    tokens = malloc((size_t)ctx * sizeof *tokens);
    if (!tokens)
        goto nomem;
    rc = shoal_tokenizer_encode(tok, prompt, plen, true, tokens, (int)ctx, &n_prompt);
    if (rc == SHOAL_ERR_RANGE || n_prompt >= ctx) {
        fprintf(stderr,
                "shoal generate: the prompt is %d tokens, which does not fit a context of %ld "
                "(raise -c)\n",
                n_prompt, ctx);
        goto out;
    } else if (rc) {
        fprintf(stderr, "shoal generate: cannot tokenize the prompt: %s\n", shoal_strerror(rc));
        goto out;
    }
    int max_batch = (int)(ctx < GEN_MAX_BATCH ? ctx : GEN_MAX_BATCH);
    kv = shoal_kv_new(m, (int)ctx);
    fwd = shoal_fwd_new(m, max_batch, (int)ctx, (int)threads);
    smp = shoal_sampler_new(&sp, hp->n_vocab);
    x = malloc((size_t)max_batch * hp->dim * sizeof *x);
    logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    if (!kv || !fwd || !smp || !x || !logits)
        goto nomem;

    fwrite(prompt, 1, plen, stdout);
    fflush(stdout);
    for (int i = 0; i < n_prompt; i++)
        shoal_sampler_accept(smp, tokens[i]);

    double t0 = shoal_cli_now();
    int pos = 0;
    while (pos < n_prompt) {
        int n = n_prompt - pos < max_batch ? n_prompt - pos : max_batch;
        if ((rc = shoal_fwd_embed(fwd, tokens + pos, n, x)) ||
            (rc = shoal_fwd_blocks(fwd, kv, pos, n, x)))
            goto fail;
        pos += n;
        if (pos == n_prompt &&
            (rc = shoal_fwd_head(fwd, x + (size_t)(n - 1) * hp->dim, 1, logits)))
            goto fail;
    }
    double t1 = shoal_cli_now();
    int n_gen = 0;
    char piece[256];
    while (n_gen < n_predict) {
        int32_t next = shoal_sampler_sample(smp, logits);
        if (shoal_tokenizer_is_eog(tok, next))
            break;
        int len = shoal_tokenizer_piece(tok, tokens[pos - 1], next, piece, sizeof piece);
        if (len > 0) {
            fwrite(piece, 1, (size_t)len, stdout);
            fflush(stdout);
        }
        shoal_sampler_accept(smp, next);
        n_gen++;
        if (n_gen == n_predict)
            break;
        if (pos >= ctx) {
            fprintf(stderr, "shoal generate: context of %ld tokens is full\n", ctx);
            break;
        }
        tokens[pos] = next;
        if ((rc = shoal_fwd_embed(fwd, &next, 1, x)) || (rc = shoal_fwd_blocks(fwd, kv, pos, 1, x)) ||
            (rc = shoal_fwd_head(fwd, x, 1, logits)))
            goto fail;
        pos++;
    }
    double t2 = shoal_cli_now();
    fputc('\n', stdout);
    fflush(stdout);
    fprintf(stderr, "prompt: %d tokens, %.1f tok/s; generated: %d tokens, %.1f tok/s\n",
            n_prompt, n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_gen,
            n_gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    status = 0;
    goto out;
fail:
    fprintf(stderr, "shoal generate: forward pass failed: %s\n", shoal_strerror(rc));
    goto out;
nomem:
    fprintf(stderr, "shoal generate: out of memory (context %ld)\n", ctx);
out:
    free(tokens);
    free(x);
    free(logits);
    shoal_fwd_destroy(&fwd);
    shoal_kv_destroy(&kv);
    shoal_sampler_destroy(&smp);
    shoal_tokenizer_destroy(&tok);
    shoal_model_destroy(&m);
    shoal_gguf_close(&g);
    return status;
}
