/*
 * `shoal bench`: the counterpart of llama-bench. Measures prompt processing
 * (P tokens in one batch, logits for the last) and decode (N single-token
 * steps from an empty cache, logits each step) over R repetitions, plus the
 * machine's read bandwidth, and reports decode speed as a fraction of the
 * memory-bandwidth bound (bandwidth / weight bytes read per token).
 * A benchmark prints numbers; it never passes or fails on them.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cli.h"
#include "client/cmd.h"
#include "kernels/cpu.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "kernels/pool.h"
#include "kernels/types.h"
#include "swarm/progress.h"

#define BW_BYTES (1u << 30)

typedef struct bw_job {
    const uint64_t *buf;
    size_t n;
    uint64_t sums[1024];
} bw_job;

/* Streams the buffer once; integer xor so the compiler vectorizes the loads
 * (a float sum could not be reordered and would measure the adder, not RAM). */
static void bw_task(void *ctx, int ith, int nth)
{
    bw_job *j = ctx;
    long b, e;
    shoal_pool_split((long)j->n, 64, ith, nth, &b, &e);
    uint64_t acc = 0;
    for (long i = b; i < e; i++)
        acc ^= j->buf[i];
    j->sums[ith] = acc;
}

/* Best-of-5 read bandwidth in bytes/s with the pool's threads. */
static double measure_bandwidth(shoal_pool *pool)
{
    size_t n = BW_BYTES / sizeof(uint64_t);
    uint64_t *buf = malloc(n * sizeof *buf);
    if (!buf)
        return 0;
    for (size_t i = 0; i < n; i++)
        buf[i] = i * 0x9e3779b97f4a7c15ull;
    bw_job *j = calloc(1, sizeof *j);
    if (!j) {
        free(buf);
        return 0;
    }
    j->buf = buf;
    j->n = n;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = shoal_cli_now();
        shoal_pool_run(pool, bw_task, j);
        double dt = shoal_cli_now() - t0;
        double bw = (double)n * sizeof(uint64_t) / dt;
        best = bw > best ? bw : best;
    }
    free(j);
    free(buf);
    return best;
}

static void stats(const double *v, int n, double *mean, double *sd)
{
    double s = 0, q = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++)
        q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

static void bench_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal bench -m MODEL.gguf [-p 128] [-n 32] [-t THREADS] [-r 3] [--json]\n"
            "\n"
            "Measures prompt processing (-p tokens in one batch) and decode (-n tokens one\n"
            "at a time) in tokens/s over -r repetitions, and decode as a fraction of the\n"
            "memory-bandwidth bound (measured read bandwidth / weight bytes per token).\n"
            "\n"
            "  -m, --model FILE     GGUF model (e.g. from shoal mkmodel)\n"
            "  -p, --n-prompt N     prompt tokens (default 128; 0 skips)\n"
            "  -n, --n-gen N        decode tokens (default 32; 0 skips)\n"
            "  -t, --threads N      compute threads (default: all cores)\n"
            "  -r, --repetitions N  repetitions (default 3)\n"
            "      --json           print one JSON object instead of a table\n"
            "  -h, --help           show this help\n");
    shoal_cli_help_common(out, "bench");
}

int shoal_cmd_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"n-prompt", required_argument, 0, 'p'},
        {"n-gen", required_argument, 0, 'n'},   {"threads", required_argument, 0, 't'},
        {"repetitions", required_argument, 0, 'r'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    const char *model_path = NULL;
    long n_prompt = 128, n_gen = 32, threads = shoal_cpu_count(), reps = 3;
    int json = 0, c;
    if ((c = shoal_cli_prepare("bench", opts, ":m:p:n:t:r:h", &argc, &argv)))
        return c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:p:n:t:r:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'p': if (!shoal_cli_int("bench", "-p", optarg, 0, 1 << 16, &n_prompt)) return 2; break;
        case 'n': if (!shoal_cli_int("bench", "-n", optarg, 0, 1 << 16, &n_gen)) return 2; break;
        case 't': if (!shoal_cli_int("bench", "-t", optarg, 1, 1024, &threads)) return 2; break;
        case 'r': if (!shoal_cli_int("bench", "-r", optarg, 1, 1000, &reps)) return 2; break;
        case 'j': json = 1; break;
        case 'h': bench_usage(stdout); return 0;
        default: return shoal_cli_bad_option("bench", c, argv);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shoal bench: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model_path) {
        fprintf(stderr, "shoal bench: -m MODEL.gguf is required (see --help)\n");
        return 2;
    }
    int status = 1;
    char err[512] = "";
    shoal_gguf *g = NULL;
    shoal_model *m = NULL;
    shoal_kv *kv = NULL;
    shoal_fwd *fwd = NULL;
    shoal_pool *bwpool = NULL;
    int32_t *tokens = NULL;
    float *x = NULL, *logits = NULL;
    double *pp = NULL, *tg = NULL;
    shoal_hparams hpr;

    shoal_cpu_init();
    int rc = shoal_gguf_open(model_path, &g, err, sizeof err);
    if (rc || (rc = shoal_hparams_read(g, &hpr, err, sizeof err)) ||
        (rc = shoal_model_open(g, 0, hpr.n_layer, SHOAL_PART_EMBED | SHOAL_PART_HEAD, &m, err,
                               sizeof err))) {
        fprintf(stderr, "shoal bench: %s\n", err);
        goto out;
    }
    const shoal_hparams *hp = shoal_model_hparams(m);
    int ctx = (int)(n_prompt + n_gen + 1);
    int batch = n_prompt > 0 ? (int)n_prompt : 1;
    kv = shoal_kv_new(m, ctx);
    fwd = shoal_fwd_new(m, batch, ctx, (int)threads);
    tokens = malloc((size_t)ctx * sizeof *tokens);
    x = malloc((size_t)batch * hp->dim * sizeof *x);
    logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    pp = calloc((size_t)reps, sizeof *pp);
    tg = calloc((size_t)reps, sizeof *tg);
    bwpool = shoal_pool_new((int)threads);
    if (!kv || !fwd || !tokens || !x || !logits || !pp || !tg || !bwpool) {
        fprintf(stderr, "shoal bench: out of memory\n");
        goto out;
    }
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < ctx; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        tokens[i] = (int32_t)(rng % (uint64_t)hp->n_vocab);
    }
    /* Warm-up: fault in every weight page and the caches once. */
    shoal_progress bar;
    shoal_progress_init(&bar, "loading the model", 0, SHOAL_PROGRESS_BYTES);
    shoal_model_prefault(m, shoal_progress_cb, &bar);
    shoal_progress_fini(&bar, true);
    if ((rc = shoal_fwd_embed(fwd, tokens, 1, x)) || (rc = shoal_fwd_blocks(fwd, kv, 0, 1, x)) ||
        (rc = shoal_fwd_head(fwd, x, 1, logits)))
        goto fail;
    /* the bar counts tokens (the bandwidth measurement after them is short) */
    shoal_progress_init(&bar, "benchmark", (uint64_t)(reps * (n_prompt + n_gen)),
                        SHOAL_PROGRESS_ITEMS);
    for (int r = 0; r < reps; r++) {
        if (n_prompt > 0) {
            double t0 = shoal_cli_now();
            if ((rc = shoal_fwd_embed(fwd, tokens, (int)n_prompt, x)) ||
                (rc = shoal_fwd_blocks(fwd, kv, 0, (int)n_prompt, x)) ||
                (rc = shoal_fwd_head(fwd, x + (size_t)(n_prompt - 1) * hp->dim, 1, logits)))
                goto fail;
            pp[r] = (double)n_prompt / (shoal_cli_now() - t0);
            shoal_progress_set(&bar, bar.done + (uint64_t)n_prompt);
        }
        if (n_gen > 0) {
            double t0 = shoal_cli_now();
            for (int i = 0; i < n_gen; i++) {
                if ((rc = shoal_fwd_embed(fwd, tokens + i, 1, x)) ||
                    (rc = shoal_fwd_blocks(fwd, kv, i, 1, x)) ||
                    (rc = shoal_fwd_head(fwd, x, 1, logits)))
                    goto fail;
                shoal_progress_set(&bar, bar.done + 1);
            }
            tg[r] = (double)n_gen / (shoal_cli_now() - t0);
        }
    }
    shoal_progress_fini(&bar, true);
    double bw = measure_bandwidth(bwpool);
    double wbytes = (double)shoal_model_weight_bytes(m);
    double pp_mean, pp_sd, tg_mean, tg_sd;
    stats(pp, (int)reps, &pp_mean, &pp_sd);
    stats(tg, (int)reps, &tg_mean, &tg_sd);
    double bound = bw > 0 ? bw / wbytes : 0;
    const char *type = shoal_type_info(shoal_model_weight_type(m))->name;
    if (json) {
        printf("{\"model\": \"%s\", \"type\": \"%s\", \"isa\": \"%s\", \"threads\": %ld, "
               "\"n_prompt\": %ld, \"n_gen\": %ld, \"repetitions\": %ld, "
               "\"prompt_tps\": %.3f, \"prompt_tps_sd\": %.3f, \"decode_tps\": %.3f, "
               "\"decode_tps_sd\": %.3f, \"weight_bytes_per_token\": %.0f, "
               "\"bandwidth_gbps\": %.3f, \"decode_bound_tps\": %.3f, "
               "\"decode_fraction_of_bound\": %.4f}\n",
               model_path, type, shoal_cpu_isa(), threads, n_prompt, n_gen, reps,
               n_prompt ? pp_mean : 0, pp_sd, n_gen ? tg_mean : 0, tg_sd, wbytes, bw / 1e9,
               bound, n_gen && bound > 0 ? tg_mean / bound : 0);
    } else {
        printf("model %s: %s, %d blocks, dim %d, ffn %d, %.1f MB weights/token; isa %s, "
               "%ld threads\n",
               model_path, type, hp->n_layer, hp->dim, hp->ffn, wbytes / 1e6, shoal_cpu_isa(),
               threads);
        if (n_prompt)
            printf("prompt  pp%-5ld %9.2f ± %.2f tok/s\n", n_prompt, pp_mean, pp_sd);
        if (n_gen)
            printf("decode  tg%-5ld %9.2f ± %.2f tok/s   bound %.2f tok/s at %.1f GB/s "
                   "-> %.0f%% of bound\n",
                   n_gen, tg_mean, tg_sd, bound, bw / 1e9, 100 * tg_mean / bound);
    }
    status = 0;
    goto out;
fail:
    shoal_progress_fini(&bar, false);
    fprintf(stderr, "shoal bench: forward pass failed: %s\n", shoal_strerror(rc));
out:
    free(pp);
    free(tg);
    free(tokens);
    free(x);
    free(logits);
    shoal_pool_destroy(&bwpool);
    shoal_fwd_destroy(&fwd);
    shoal_kv_destroy(&kv);
    shoal_model_destroy(&m);
    shoal_gguf_close(&g);
    return status;
}
