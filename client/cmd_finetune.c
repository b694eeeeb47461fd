/*
 * `shoal finetune`: train a LoRA adapter on a text file, locally or through
 * servers that hold the blocks.
 *
 * The client always holds the embedding and the head (frozen) and runs the
 * loop of lora/train.h: windows of the text drawn from the seed, forward,
 * next-token cross-entropy, backward, AdamW. Locally the blocks are one
 * span over the whole model (lora/train_span.h); with --peers they are a
 * chain of servers, each holding its span's adapter and optimizer state
 * (client/train_remote.h), and only activations and gradients travel.
 *
 * Failures through servers: every --checkpoint-every steps the client pulls
 * every span's adapter and optimizer state. When a server fails (error or
 * timeout), the client replaces it from the peer list, pushes the last
 * checkpoint to every span of the chain (the healthy ones roll back too)
 * and redoes the steps since that checkpoint. A step's data depends only
 * on the seed and the step number, so the redone steps are the same steps
 * and the run ends where an undisturbed one would (bit for bit at equal
 * thread counts).
 *
 * Output: the adapter (llama.cpp's GGUF LoRA layout, written atomically)
 * and, on standard error, a progress bar with step, loss and tokens/s (one
 * line per step when standard error is not a terminal), the text's loss
 * and perplexity before and after, and a summary.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/cli.h"
#include "client/cmd.h"
#include "client/tokenizer.h"
#include "client/train_remote.h"
#include "kernels/backward.h"
#include "kernels/cpu.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "kernels/pool.h"
#include "lora/adapter.h"
#include "lora/train.h"
#include "lora/train_span.h"

#define FT_MAX_TEXT ((size_t)256 << 20)
#define FT_MAX_PEERS 256
#define FT_MAX_RECOVERIES 16

static void finetune_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal finetune -m MODEL.gguf --data FILE.txt --out ADAPTER.gguf [options]\n"
            "\n"
            "Trains a LoRA adapter on the text of FILE (next-token prediction, AdamW) and\n"
            "writes it in llama.cpp's GGUF LoRA layout. Deterministic for a seed and a\n"
            "thread count.\n"
            "\n"
            "  -m, --model FILE          GGUF model (Llama family)\n"
            "      --data FILE           training text (UTF-8)\n"
            "  -o, --out FILE            adapter to write\n"
            "      --rank R              LoRA rank (default 8)\n"
            "      --alpha A             LoRA alpha; scale = alpha / rank (default 2 * rank)\n"
            "      --targets LIST        projections: q,k,v,o,gate,up,down or all (default all)\n"
            "      --lr LR               AdamW learning rate (default 1e-3)\n"
            "      --weight-decay W      AdamW decoupled weight decay (default 0)\n"
            "      --steps N             optimizer steps (default 100)\n"
            "      --batch B             sequences per step (default 4)\n"
            "      --micro-batch M       sequences per forward/backward pass (default: B)\n"
            "      --seq-len L           tokens per sequence, BOS included (default 64)\n"
            "      --seed S              data order and initial adapter (default 1)\n"
            "      --eval N              measure the text's loss on its first N windows\n"
            "                            before and after training (default 16, 0: no)\n"
            "  -t, --threads N           compute threads (default: all cores)\n"
            "      --peers ADDR,...      train through the nodes at these addresses\n"
            "                            (shoal://HOST:PORT/KEY): they run the blocks and hold\n"
            "                            the adapters; spare nodes in the list replace\n"
            "                            nodes that fail\n"
            "      --checkpoint-every K  with --peers: pull the adapters every K steps\n"
            "                            (default 10); a failure redoes at most K steps\n"
            "      --timeout S           with --peers: seconds to wait for each answer\n"
            "                            (default 30)\n"
            "  -h, --help                show this help\n");
    shoal_cli_help_common(out, "finetune");
}

/* Reads the whole file (at most FT_MAX_TEXT bytes). */
static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            if (cap >= FT_MAX_TEXT) {
                free(buf);
                buf = NULL;
                errno = EFBIG;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                free(buf);
                buf = NULL;
            }
            break;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Split the comma-separated list s (modified in place); returns the count
 * or -1 after a usage error. */
static int split_peers(char *s, char **addrs, int max)
{
    int n = 0;
    for (char *tok = s, *next; tok; tok = next) {
        next = strchr(tok, ',');
        if (next)
            *next++ = 0;
        if (!*tok)
            continue;
        if (n == max) {
            fprintf(stderr, "shoal finetune: --peers: more than %d addresses\n", max);
            return -1;
        }
        addrs[n++] = tok;
    }
    if (n == 0) {
        fprintf(stderr, "shoal finetune: --peers: no address\n");
        return -1;
    }
    return n;
}

/* The progress line: a bar on a terminal, one line per step otherwise. */
static void progress(int tty, int64_t step, long steps, double loss, double tok_s)
{
    if (!tty) {
        fprintf(stderr, "step %lld/%ld loss %.6f tok/s %.0f\n", (long long)step, steps, loss,
                tok_s);
        return;
    }
    char bar[31];
    int fill = (int)(30 * step / (steps > 0 ? steps : 1));
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fprintf(stderr, "\r[%s] step %lld/%ld  loss %.4f  %.0f tok/s ", bar, (long long)step, steps,
            loss, tok_s);
    if (step == steps)
        fputc('\n', stderr);
    fflush(stderr);
}

int shoal_cmd_finetune(int argc, char **argv)
{
    enum { O_DATA = 1, O_RANK, O_ALPHA, O_TARGETS, O_LR, O_WD, O_STEPS, O_BATCH, O_MICRO,
           O_SEQ, O_SEED, O_EVAL, O_PEERS, O_CKPT, O_TIMEOUT };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"data", required_argument, 0, O_DATA},
        {"out", required_argument, 0, 'o'},       {"rank", required_argument, 0, O_RANK},
        {"alpha", required_argument, 0, O_ALPHA}, {"targets", required_argument, 0, O_TARGETS},
        {"lr", required_argument, 0, O_LR},       {"weight-decay", required_argument, 0, O_WD},
        {"steps", required_argument, 0, O_STEPS}, {"batch", required_argument, 0, O_BATCH},
        {"micro-batch", required_argument, 0, O_MICRO},
        {"seq-len", required_argument, 0, O_SEQ}, {"seed", required_argument, 0, O_SEED},
        {"eval", required_argument, 0, O_EVAL},   {"threads", required_argument, 0, 't'},
        {"peers", required_argument, 0, O_PEERS},
        {"checkpoint-every", required_argument, 0, O_CKPT},
        {"timeout", required_argument, 0, O_TIMEOUT}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model_path = NULL, *data_path = NULL, *out_path = NULL;
    char *peers_arg = NULL;
    long rank = 8, steps = 100, batch = 4, micro = 0, seq_len = 64, eval = 16;
    long threads = shoal_cpu_count(), ckpt_every = 10;
    double alpha = -1, lr = 1e-3, wd = 0, timeout_s = 30;
    uint64_t seed = 1;
    unsigned targets = SHOAL_PROJ_ALL;
    int c;
    if ((c = shoal_cli_prepare("finetune", opts, ":m:o:t:h", &argc, &argv)))
        return c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:o:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case O_DATA: data_path = optarg; break;
        case 'o': out_path = optarg; break;
        case O_RANK: if (!shoal_cli_int("finetune", "--rank", optarg, 1, SHOAL_LORA_MAX_RANK, &rank)) return 2; break;
        case O_ALPHA: if (!shoal_cli_float("finetune", "--alpha", optarg, 0, 1e6, &alpha)) return 2; break;
        case O_TARGETS:
            if (shoal_proj_parse(optarg, &targets)) {
                fprintf(stderr, "shoal finetune: %s: expected a list of q,k,v,o,gate,up,down "
                                "or all, got '%s'\n",
                        shoal_cli_source("--targets", optarg), optarg);
                return 2;
            }
            break;
        case O_LR: if (!shoal_cli_float("finetune", "--lr", optarg, 0, 10, &lr)) return 2; break;
        case O_WD: if (!shoal_cli_float("finetune", "--weight-decay", optarg, 0, 100, &wd)) return 2; break;
        case O_STEPS: if (!shoal_cli_int("finetune", "--steps", optarg, 0, 1L << 30, &steps)) return 2; break;
        case O_BATCH: if (!shoal_cli_int("finetune", "--batch", optarg, 1, 65536, &batch)) return 2; break;
        case O_MICRO: if (!shoal_cli_int("finetune", "--micro-batch", optarg, 1, 65536, &micro)) return 2; break;
        case O_SEQ: if (!shoal_cli_int("finetune", "--seq-len", optarg, 2, 1L << 20, &seq_len)) return 2; break;
        case O_SEED: if (!shoal_cli_u64("finetune", "--seed", optarg, &seed)) return 2; break;
        case O_EVAL: if (!shoal_cli_int("finetune", "--eval", optarg, 0, 1L << 20, &eval)) return 2; break;
        case 't': if (!shoal_cli_int("finetune", "-t", optarg, 1, 1024, &threads)) return 2; break;
        case O_PEERS: peers_arg = optarg; break;
        case O_CKPT: if (!shoal_cli_int("finetune", "--checkpoint-every", optarg, 1, 1L << 30, &ckpt_every)) return 2; break;
        case O_TIMEOUT: if (!shoal_cli_float("finetune", "--timeout", optarg, 0.001, 86400, &timeout_s)) return 2; break;
        case 'h': finetune_usage(stdout); return 0;
        default: return shoal_cli_bad_option("finetune", c, argv);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shoal finetune: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model_path || !data_path || !out_path) {
        fprintf(stderr, "shoal finetune: -m MODEL.gguf, --data FILE and --out FILE are required "
                        "(see --help)\n");
        return 2;
    }
    char *peer_addrs[FT_MAX_PEERS];
    int n_peers = 0;
    if (peers_arg && (n_peers = split_peers(peers_arg, peer_addrs, FT_MAX_PEERS)) < 0)
        return 2;
    { /* a wrong --out is found now, not after the training */
        char dir[4096];
        const char *slash = strrchr(out_path, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - out_path) + 1 : 1,
                 slash ? out_path : ".");
        if (access(dir, W_OK) != 0) {
            fprintf(stderr, "shoal finetune: --out %s: cannot write in %s: %s\n", out_path, dir,
                    strerror(errno));
            return 1;
        }
    }
    const int remote = peers_arg != NULL;
    if (alpha < 0)
        alpha = 2.0 * (double)rank;

    int status = 1;
    char err[1024] = "";
    shoal_gguf *g = NULL;
    shoal_tokenizer *tok = NULL;
    shoal_train_w *w = NULL;
    shoal_train_span *span = NULL;
    shoal_train_remote *chain = NULL;
    shoal_trainer *tr = NULL;
    shoal_adapter *out_ad = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    double *losses = NULL;

    shoal_cpu_init();
    int rc = shoal_gguf_open(model_path, &g, err, sizeof err);
    if (rc) {
        fprintf(stderr, "shoal finetune: %s\n", err);
        goto out;
    }
    shoal_hparams hp;
    if ((rc = shoal_hparams_read(g, &hp, err, sizeof err)) ||
        (rc = shoal_train_w_open(g, 0, remote ? 0 : hp.n_layer,
                                 SHOAL_PART_EMBED | SHOAL_PART_HEAD, &w, err, sizeof err))) {
        fprintf(stderr, "shoal finetune: %s: %s\n", model_path, err);
        goto out;
    }
    if (!(tok = shoal_tokenizer_from_gguf(g, err, sizeof err))) {
        fprintf(stderr, "shoal finetune: %s: %s\n", model_path, err);
        goto out;
    }
    size_t text_len = 0;
    errno = 0;
    if (!(text = read_text(data_path, &text_len))) {
        if (errno == EFBIG)
            fprintf(stderr, "shoal finetune: --data %s: over %zu MiB; train on a part of it\n",
                    data_path, FT_MAX_TEXT >> 20);
        else
            fprintf(stderr, "shoal finetune: --data %s: cannot read it: %s\n", data_path,
                    strerror(errno ? errno : EIO));
        goto out;
    }
    if (!(ids = malloc((text_len + 2) * sizeof *ids)))
        goto nomem;
    int n_ids = 0;
    if ((rc = shoal_tokenizer_encode(tok, text, text_len, false, ids, (int)(text_len + 2),
                                     &n_ids))) {
        fprintf(stderr, "shoal finetune: cannot tokenize %s: %s\n", data_path,
                shoal_strerror(rc));
        goto out;
    }
    int32_t bos = shoal_tokenizer_add_bos(tok) ? shoal_tokenizer_bos(tok) : -1;

    shoal_trainer_params tp = shoal_trainer_params_default();
    tp.batch = (int)batch;
    tp.micro_batch = (int)micro;
    tp.seq_len = (int)seq_len;
    tp.seed = seed;
    tp.threads = (int)threads;
    if ((rc = shoal_trainer_new(w, ids, (size_t)n_ids, bos, &tp, &tr, err, sizeof err))) {
        fprintf(stderr, "shoal finetune: %s: %s\n", data_path, err);
        goto out;
    }
    if (shoal_trainer_seq_len(tr) < seq_len)
        fprintf(stderr, "shoal finetune: warning: the text is %d tokens; sequences cut to %d\n",
                n_ids, shoal_trainer_seq_len(tr));

    shoal_train_span_params sp = shoal_train_span_params_default();
    sp.rank = (int)rank;
    sp.alpha = (float)alpha;
    sp.targets = targets;
    sp.seed = seed;
    sp.opt.lr = (float)lr;
    sp.opt.weight_decay = (float)wd;
    sp.max_tokens = shoal_trainer_micro_batch(tr) * shoal_trainer_seq_len(tr);
    sp.threads = (int)threads;
    if (shoal_train_span_params_check(&hp, &sp, err, sizeof err)) {
        fprintf(stderr, "shoal finetune: %s\n", err);
        status = 2;
        goto out;
    }
    shoal_train_blocks blocks;
    if (remote) {
        shoal_train_remote_params rp = shoal_train_remote_params_default();
        rp.span = sp;
        rp.timeout_ms = (int)(timeout_s * 1000 + 0.5);
        if ((rc = shoal_train_remote_new(g, (const char *const *)peer_addrs, (size_t)n_peers,
                                         &rp, &chain, err, sizeof err))) {
            fprintf(stderr, "shoal finetune: %s\n", err);
            goto out;
        }
        shoal_train_remote_describe(chain, err, sizeof err);
        fprintf(stderr, "chain: %s\n", err);
        blocks = shoal_train_remote_blocks(chain);
    } else {
        if ((rc = shoal_train_span_new(w, 0, hp.n_layer, &sp, &span))) {
            fprintf(stderr, "shoal finetune: cannot set up training: %s\n", shoal_strerror(rc));
            goto out;
        }
        blocks = shoal_train_span_blocks(span);
    }
    fprintf(stderr,
            "finetune: %d tokens of text, %ld steps of %d x %d tokens, rank %ld, alpha %g, "
            "lr %g, %s\n",
            n_ids, steps, (int)batch, shoal_trainer_seq_len(tr), rank, alpha, lr,
            remote ? "through the chain" : "local");

    double eval_before = NAN, eval_after = NAN;
    if (eval > 0 && (rc = shoal_trainer_eval(tr, &blocks, (int)eval, &eval_before, err,
                                             sizeof err))) {
        fprintf(stderr, "shoal finetune: %s\n", err);
        goto out;
    }
    if (!(losses = calloc((size_t)steps + 1, sizeof *losses)))
        goto nomem;
    const int tty = isatty(2);
    const double tokens_per_step = (double)shoal_trainer_step_tokens(tr);
    double t0 = shoal_cli_now(), t_last = t0;
    int recoveries = 0;
    long done_steps = 0;
    for (int64_t s = 1; s <= steps;) {
        double loss = 0;
        rc = shoal_trainer_step(tr, &blocks, s, (float)lr, &loss, err, sizeof err);
        if (!rc && remote && s % ckpt_every == 0 && s < steps &&
            (rc = shoal_train_remote_checkpoint(chain, s)))
            snprintf(err, sizeof err, "checkpoint at step %lld: %s", (long long)s,
                     shoal_train_remote_last_error(chain));
        if (rc) {
            if (tty)
                fputc('\n', stderr);
            fprintf(stderr, "shoal finetune: step %lld: %s\n", (long long)s, err);
            if (!remote || ++recoveries > FT_MAX_RECOVERIES)
                goto out;
            int64_t back = 0;
            if ((rc = shoal_train_remote_recover(chain, &back, err, sizeof err))) {
                fprintf(stderr, "shoal finetune: cannot recover: %s\n", err);
                goto out;
            }
            shoal_train_remote_describe(chain, err, sizeof err);
            fprintf(stderr, "recovered: back to the checkpoint of step %lld; chain: %s\n",
                    (long long)back, err);
            s = back + 1;
            continue;
        }
        losses[s] = loss;
        done_steps++;
        double now = shoal_cli_now();
        progress(tty, s, steps, loss, tokens_per_step / (now - t_last > 0 ? now - t_last : 1e-9));
        t_last = now;
        s++;
    }
    double elapsed = shoal_cli_now() - t0;
    if (eval > 0 && (rc = shoal_trainer_eval(tr, &blocks, (int)eval, &eval_after, err,
                                             sizeof err))) {
        fprintf(stderr, "shoal finetune: %s\n", err);
        goto out;
    }
    if (remote) {
        if ((rc = shoal_train_remote_adapter(chain, &out_ad, err, sizeof err))) {
            fprintf(stderr, "shoal finetune: cannot fetch the adapters: %s\n", err);
            goto out;
        }
    }
    const shoal_adapter *ad = remote ? out_ad : shoal_train_span_adapter(span);
    if ((rc = shoal_adapter_save(ad, out_path, err, sizeof err))) {
        fprintf(stderr, "shoal finetune: %s\n", err); /* it names the file */
        goto out;
    }
    if (steps > 0)
        fprintf(stderr, "loss: first step %.6f, last step %.6f (%.1f%% lower)\n", losses[1],
                losses[steps], 100.0 * (1.0 - losses[steps] / losses[1]));
    if (eval > 0)
        fprintf(stderr, "text: loss %.6f -> %.6f, perplexity %.3f -> %.3f\n", eval_before,
                eval_after, exp(eval_before), exp(eval_after));
    fprintf(stderr, "trained %ld steps", steps);
    if (done_steps > steps)
        fprintf(stderr, " (%ld redone after %d recover%s)", done_steps - steps, recoveries,
                recoveries == 1 ? "y" : "ies");
    fprintf(stderr, ", %.0f tokens/s over %.1f s; adapter: %s (%zu parameters)\n",
            elapsed > 0 ? tokens_per_step * (double)done_steps / elapsed : 0.0, elapsed, out_path,
            shoal_adapter_n_params(ad));
    status = 0;
    goto out;
nomem:
    fprintf(stderr, "shoal finetune: out of memory\n");
out:
    free(losses);
    free(ids);
    free(text);
    shoal_adapter_destroy(&out_ad);
    shoal_trainer_destroy(&tr);
    shoal_train_span_destroy(&span);
    shoal_train_remote_destroy(&chain);
    shoal_train_w_destroy(&w);
    shoal_tokenizer_destroy(&tok);
    shoal_gguf_close(&g);
    return status;
}
