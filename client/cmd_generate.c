/*
 * `shoal generate`: text generation, locally or through a chain of nodes.
 *
 * Standard output carries exactly the prompt, the generated text and one
 * final newline; every diagnostic goes to standard error. The prompt is
 * processed in batches (the fast path), then one token per step; both give
 * bit-identical results.
 *
 * Local and remote generation differ only in who runs the blocks: the
 * client always embeds tokens and runs the head itself (from its own copy
 * of the model file), and hands the hidden states to a blocks backend,
 * either the local forward pass over every block (shoal_fwd_blocks with a
 * local KV cache) or a remote sequence over the chain that --peers gives
 * (client/remote.h). With f32 activations on the wire both produce the
 * same bits, so the same text. With --peers the file is opened with the
 * embedding and head only: no block tensor page is ever touched.
 *
 * The machinery (model, sessions, chain, sampling, printable output) is
 * client/gen.h, shared with `shoal chat` and `shoal api`.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/cli.h"
#include "client/cmd.h"
#include "client/gen.h"
#include "client/sampler.h"
#include "client/tokenizer.h"
#include "kernels/cpu.h"
#include "kernels/err.h"
#include "kernels/pool.h"
#include "proto/codec.h"
#include "swarm/log.h"

/* ---- options ------------------------------------------------------------ */

static void generate_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal generate -m MODEL.gguf [-p PROMPT] [--peers ADDR,...] [options]\n"
            "\n"
            "Generates text from a GGUF model, locally or through a chain of nodes that\n"
            "serve its blocks. Standard output carries the prompt followed by the generated\n"
            "text and a newline; diagnostics go to standard error.\n"
            "\n"
            "  -m, --model FILE        GGUF model (Llama family); with --peers only its\n"
            "                          tokenizer, embedding and head are read\n"
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
            "      --peers ADDR,...    run the blocks on these nodes (shoal://HOST:PORT/KEY,\n"
            "                          as `shoal serve` prints): the client picks a chain\n"
            "                          that covers every block with the fewest hops\n"
            "      --initial-peers ADDR,...\n"
            "                          or: join the swarm's DHT through these nodes, find\n"
            "                          the model's servers there, measure them and pick the\n"
            "                          chain with the least expected time per token\n"
            "      --codec C           activations on the wire: f32 (exact, default), f16,\n"
            "                          bf16 or int8\n"
            "      --timeout S         seconds to wait for each answer of a node (default 30)\n"
            "      --max-retries N     when a node fails, replacements tried before giving up\n"
            "                          (default 4; 0: fail at once); every --peers node that\n"
            "                          is not on the chain is a spare\n"
            "      --push              nodes pass hidden states straight to the next node\n"
            "                          (one pass through the chain per token)\n"
            "      --lora FILE         apply a LoRA adapter (GGUF, llama.cpp layout) locally\n"
            "      --adapter NAME      with --peers/--initial-peers: use the adapter NAME that\n"
            "                          the nodes serve (shoal serve --adapter NAME=FILE); only\n"
            "                          nodes that serve it are chosen\n"
            "  -h, --help              show this help\n");
    shoal_cli_help_common(out, "generate");
}

/* Notes from opening the model and the chain, as the tests expect them. */
static void generate_note(void *ctx, int level, const char *line)
{
    (void)ctx;
    if (level >= SHOAL_LOG_WARN)
        fprintf(stderr, "shoal generate: warning: %s\n", line);
    else
        fprintf(stderr, "%s\n", line);
}

/* Failover and leave notices of the remote sequence. */
static void generate_event(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "shoal generate: %s\n", line);
}

/* --debug-step-hook N:CMD (hidden, for test drivers): run CMD with the
 * shell, synchronously, before the blocks of call N (0: the prompt, then
 * one call per generated token) are sent, with the chain in the
 * environment as SHOAL_CHAIN ("0:2 shoal://..., 2:5 shoal://..."). */
#define GEN_MAX_HOOKS 16
typedef struct step_hooks {
    int n;
    long at[GEN_MAX_HOOKS];
    const char *cmd[GEN_MAX_HOOKS];
} step_hooks;

static void generate_step_hook(void *ctx, const shoal_remote *r, int call, int pos, int n)
{
    (void)pos;
    (void)n;
    const step_hooks *h = ctx;
    for (int i = 0; i < h->n; i++)
        if (h->at[i] == call) {
            char chain[4096];
            shoal_remote_describe(r, chain, sizeof chain);
            setenv("SHOAL_CHAIN", chain, 1);
            fflush(stdout);
            if (system(h->cmd[i]) != 0)
                fprintf(stderr, "shoal generate: step hook %d failed\n", call);
        }
}

static int parse_step_hook(const char *s, step_hooks *h)
{
    char *end = NULL;
    long at = strtol(s, &end, 10);
    if (end == s || *end != ':' || at < 0 || !end[1] || h->n == GEN_MAX_HOOKS) {
        fprintf(stderr, "shoal generate: --debug-step-hook: expected N:COMMAND (at most %d)\n",
                GEN_MAX_HOOKS);
        return -1;
    }
    h->at[h->n] = at;
    h->cmd[h->n++] = end + 1;
    return 0;
}

/* ---- the command -------------------------------------------------------- */

int shoal_cmd_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"prompt", required_argument, 0, 'p'},
        {"n-predict", required_argument, 0, 'n'}, {"ctx-size", required_argument, 0, 'c'},
        {"temp", required_argument, 0, 1},      {"top-k", required_argument, 0, 2},
        {"top-p", required_argument, 0, 3},     {"min-p", required_argument, 0, 4},
        {"repeat-penalty", required_argument, 0, 5}, {"repeat-last-n", required_argument, 0, 6},
        {"peers", required_argument, 0, 7},     {"codec", required_argument, 0, 8},
        {"timeout", required_argument, 0, 9},   {"lora", required_argument, 0, 10},
        {"seed", required_argument, 0, 's'},    {"threads", required_argument, 0, 't'},
        {"max-retries", required_argument, 0, 11}, {"push", no_argument, 0, 12},
        {"debug-step-hook", required_argument, 0, 13},
        {"initial-peers", required_argument, 0, 14},
        {"adapter", required_argument, 0, 15},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    const char *model_path = NULL, *prompt = "";
    shoal_gen_opts go;
    shoal_gen_opts_init(&go);
    long max_retries = -1;
    int push = 0;
    step_hooks hooks = {0};
    long n_predict = 128, ctx = 0, threads = shoal_cpu_count(), v;
    double d;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    shoal_sampler_params sp = shoal_sampler_params_default();
    int c;
    if ((c = shoal_cli_prepare("generate", opts, ":m:p:n:c:s:t:h", &argc, &argv)))
        return c;
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
        case 7: go.peers_arg = optarg; break;
        case 8: if (!shoal_gen_opts_codec("generate", &go, optarg)) return 2; break;
        case 9: if (!shoal_cli_float("generate", "--timeout", optarg, 0.001, 86400, &go.timeout_s)) return 2; break;
        case 10: go.lora_path = optarg; break;
        case 11: if (!shoal_cli_int("generate", "--max-retries", optarg, 0, 1000, &max_retries)) return 2; break;
        case 12: push = 1; break;
        case 13: if (parse_step_hook(optarg, &hooks)) return 2; break;
        case 14: go.initial_arg = optarg; break;
        case 15: go.adapter = optarg; break;
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
    if (shoal_gen_opts_check("generate", &go))
        return 2;
    if (!shoal_gen_opts_remote(&go) && (max_retries >= 0 || push)) {
        fprintf(stderr, "shoal generate: %s needs --peers\n", push ? "--push" : "--max-retries");
        return 2;
    }
    sp.seed = seed;

    int status = 1;
    char err[2048] = "";
    shoal_lm *lm = NULL;
    shoal_gen *gs = NULL;
    int32_t *ptoks = NULL;
    /* the stream holds back a split UTF-8 character until it completes; with
     * invalid bytes passed through, the bytes written are the pieces' own */
    shoal_gen_out text;
    char piece[SHOAL_GEN_OUT_CAP];
    size_t len;
    shoal_gen_out_init(&text, NULL, -1, false);

    shoal_cpu_init();
    shoal_lm_params lp = shoal_lm_params_default();
    lp.model_path = model_path;
    shoal_gen_opts_apply(&go, &lp);
    if (max_retries >= 0)
        lp.remote.max_retries = (int)max_retries;
    lp.remote.push = push;
    lp.remote.on_event = generate_event;
    if (hooks.n) {
        lp.remote.on_step = generate_step_hook;
        lp.remote.step_ctx = &hooks;
    }
    lp.ctx = ctx;
    lp.threads = (int)threads;
    lp.note = generate_note;
    int rc = shoal_lm_open(&lp, &lm, err, sizeof err);
    if (rc) {
        fprintf(stderr, "shoal generate: %s\n", err);
        goto out;
    }
    const shoal_tokenizer *tok = shoal_lm_tokenizer(lm);
    ctx = shoal_lm_ctx(lm);
    size_t plen = strlen(prompt);
    int n_prompt = 0;
    if (!(ptoks = malloc((size_t)ctx * sizeof *ptoks))) {
        fprintf(stderr, "shoal generate: out of memory (context %ld)\n", ctx);
        goto out;
    }
    rc = shoal_tokenizer_encode(tok, prompt, plen, true, ptoks, (int)ctx, &n_prompt);
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
    if (n_prompt == 0) {
        fprintf(stderr, "shoal generate: the prompt is empty and the model has no BOS token\n");
        goto out;
    }
    if ((rc = shoal_gen_new(lm, &sp, &gs, err, sizeof err))) {
        fprintf(stderr, "shoal generate: %s\n", err);
        goto out;
    }

    fwrite(prompt, 1, plen, stdout);
    fflush(stdout);
    double t0 = shoal_cli_now();
    rc = shoal_gen_feed(gs, ptoks, n_prompt);
    if (rc)
        goto fail;
    double t1 = shoal_cli_now();
    int n_gen = 0;
    shoal_gen_out_init(&text, tok, ptoks[n_prompt - 1], false);
    while (n_gen < n_predict) {
        int32_t next = shoal_gen_sample(gs);
        if (shoal_tokenizer_is_eog(tok, next))
            break;
        if (!shoal_gen_out_push(&text, next, piece, sizeof piece, &len) && len > 0) {
            fwrite(piece, 1, len, stdout);
            fflush(stdout);
        }
        n_gen++;
        if (n_gen == n_predict)
            break;
        if (shoal_gen_pos(gs) >= shoal_gen_ctx(gs)) {
            fprintf(stderr, "shoal generate: context of %ld tokens is full\n", ctx);
            break;
        }
        if ((rc = shoal_gen_feed(gs, &next, 1)))
            goto fail;
    }
    double t2 = shoal_cli_now();
    if (!shoal_gen_out_flush(&text, piece, sizeof piece, &len))
        fwrite(piece, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    fprintf(stderr, "prompt: %d tokens, %.1f tok/s; generated: %d tokens, %.1f tok/s\n",
            n_prompt, n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_gen,
            n_gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    status = 0;
    goto out;
fail:
    if (!shoal_gen_out_flush(&text, piece, sizeof piece, &len))
        fwrite(piece, 1, len, stdout);
    fflush(stdout);
    fprintf(stderr, "shoal generate: %s\n", shoal_gen_error(gs));
out:
    free(ptoks);
    shoal_gen_destroy(&gs);
    shoal_lm_close(&lm);
    return status;
}
