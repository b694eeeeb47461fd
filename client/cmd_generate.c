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
 * The loop is two calls, gen_feed (run tokens, keep the last logits) and
 * gen_sample, so that `shoal chat` can drive the same state turn by turn;
 * when chat lands, this part moves to its own module.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/cli.h"
#include "client/cmd.h"
#include "client/remote.h"
#include "client/route.h"
#include "client/sampler.h"
#include "client/tokenizer.h"
#include "kernels/cpu.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "kernels/pool.h"
#include "lora/adapter.h"
#include "proto/addr.h"
#include "proto/codec.h"
#include "swarm/model_id.h"

#define GEN_MAX_BATCH 256
#define GEN_MAX_PEERS 256
#define GEN_ERR_MAX 2048

/* ---- who runs the blocks ---------------------------------------------- */

typedef struct gen_backend {
    void *self;
    /* like shoal_fwd_blocks: x (n, dim) through every block at pos.. */
    int (*blocks)(void *self, int pos, int n, float *x);
    /* one line about the last failure */
    const char *(*error)(void *self);
} gen_backend;

typedef struct local_blocks {
    shoal_fwd *fwd;
    shoal_kv *kv;
    char err[128];
} local_blocks;

static int local_blocks_run(void *self, int pos, int n, float *x)
{
    local_blocks *lb = self;
    int rc = shoal_fwd_blocks(lb->fwd, lb->kv, pos, n, x);
    if (rc)
        snprintf(lb->err, sizeof lb->err, "forward pass failed: %s", shoal_strerror(rc));
    return rc;
}

static const char *local_blocks_error(void *self) { return ((local_blocks *)self)->err; }

static int remote_blocks_run(void *self, int pos, int n, float *x)
{
    return shoal_remote_blocks(self, pos, n, x);
}

static const char *remote_blocks_error(void *self) { return shoal_remote_last_error(self); }

/* ---- the generation state --------------------------------------------- */

typedef struct gen {
    shoal_fwd *fwd;       /* embedding and head (and the local blocks) */
    gen_backend be;
    shoal_sampler *smp;
    int dim, n_vocab, max_batch;
    int32_t *tokens;      /* (ctx): every token fed so far */
    int ctx, pos;         /* tokens fed */
    float *x;             /* (max_batch, dim) */
    float *logits;        /* (n_vocab): after the last token fed */
    char err[GEN_ERR_MAX];
} gen;

/* Feed toks[0..n) at g->pos, in batches, and keep the logits after the last
 * one. Records each token in the sampler's history. n >= 1. */
static int gen_feed(gen *g, const int32_t *toks, int n)
{
    if (n > g->ctx - g->pos) {
        snprintf(g->err, sizeof g->err, "context of %d tokens is full", g->ctx);
        return SHOAL_ERR_CONTEXT;
    }
    for (int done = 0; done < n;) {
        int k = n - done < g->max_batch ? n - done : g->max_batch;
        int rc = shoal_fwd_embed(g->fwd, toks + done, k, g->x);
        if (rc) {
            snprintf(g->err, sizeof g->err, "forward pass failed: %s", shoal_strerror(rc));
            return rc;
        }
        if ((rc = g->be.blocks(g->be.self, g->pos, k, g->x))) {
            snprintf(g->err, sizeof g->err, "%s", g->be.error(g->be.self));
            return rc;
        }
        memcpy(g->tokens + g->pos, toks + done, (size_t)k * sizeof *toks);
        for (int i = 0; i < k; i++)
            shoal_sampler_accept(g->smp, toks[done + i]);
        g->pos += k;
        done += k;
        if (done == n &&
            (rc = shoal_fwd_head(g->fwd, g->x + (size_t)(k - 1) * g->dim, 1, g->logits))) {
            snprintf(g->err, sizeof g->err, "forward pass failed: %s", shoal_strerror(rc));
            return rc;
        }
    }
    return 0;
}

/* The next token from the logits of the last token fed (not fed yet). */
static int32_t gen_sample(gen *g) { return shoal_sampler_sample(g->smp, g->logits); }

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
            "      --codec C           activations on the wire: f32 (exact, default), f16,\n"
            "                          bf16 or int8\n"
            "      --timeout S         seconds to wait for each answer of a node (default 30)\n"
            "      --lora FILE         apply a LoRA adapter (GGUF, llama.cpp layout) locally\n"
            "  -h, --help              show this help\n");
}

/* Split the comma-separated list s (modified in place) into addrs; checks
 * each address. Returns the count, or -1 after printing a usage error. */
static int parse_peers(char *s, char **addrs, int max)
{
    int n = 0;
    for (char *tok = s, *next; tok; tok = next) {
        next = strchr(tok, ',');
        if (next)
            *next++ = 0;
        shoal_addr a;
        if (!*tok || shoal_addr_parse(&a, tok)) {
            fprintf(stderr,
                    "shoal generate: --peers: '%s' is not a node address "
                    "(shoal://HOST:PORT/KEY, as `shoal serve` prints)\n",
                    tok);
            return -1;
        }
        if (n == max) {
            fprintf(stderr, "shoal generate: --peers: more than %d addresses\n", max);
            return -1;
        }
        addrs[n++] = tok;
    }
    return n;
}

static int parse_codec(const char *s)
{
    if (!strcmp(s, "int8"))
        return SHOAL_CODEC_I8B64;
    return shoal_codec_from_name(s);
}

/* ---- the chain ---------------------------------------------------------- */

/* Ask the peers, check their model, plan a chain and open its sessions.
 * Prints one error line and returns nonzero on failure. */
static int open_chain(const shoal_gguf *g, const shoal_hparams *hp, char **addrs, int n_addrs,
                      int codec, int timeout_ms, long ctx, shoal_remote **out)
{
    int rc, status = 1;
    char err[GEN_ERR_MAX], failed[GEN_ERR_MAX];
    shoal_route_cands cands;
    shoal_route_cands_init(&cands);
    shoal_route_hop *hops = NULL;
    shoal_route_want want;
    memset(&want, 0, sizeof want);
    if ((rc = shoal_model_id_compute(g, &want.model))) {
        fprintf(stderr, "shoal generate: cannot compute the model's identity: %s\n",
                shoal_strerror(rc));
        goto out;
    }
    want.nblocks = (uint32_t)hp->n_layer;
    want.dim = (uint32_t)hp->dim;
    want.max_length = (uint32_t)ctx;
    want.codec = codec;

    size_t n_failed = 0;
    rc = shoal_remote_lookup((const char *const *)addrs, (size_t)n_addrs, timeout_ms, &cands,
                             &n_failed, failed, sizeof failed);
    if (rc) {
        fprintf(stderr, "shoal generate: cannot ask the peers: %s\n", shoal_strerror(rc));
        goto out;
    }
    /* a listed peer with another model is a mistake in the list, not a
     * node that happens to be down: stop */
    for (size_t i = 0; i < cands.n; i++)
        if (shoal_route_check_model(&cands.v[i], &want, err, sizeof err)) {
            fprintf(stderr, "shoal generate: %s\n", err);
            goto out;
        }
    size_t n_hops = 0;
    if (!(hops = calloc(want.nblocks, sizeof *hops))) {
        fprintf(stderr, "shoal generate: out of memory\n");
        goto out;
    }
    rc = shoal_route_plan(cands.v, cands.n, &want, hops, want.nblocks, &n_hops, err,
                          sizeof err);
    if (rc) {
        if (n_failed)
            fprintf(stderr, "shoal generate: %s; not answering: %s\n", err, failed);
        else
            fprintf(stderr, "shoal generate: %s\n", err);
        goto out;
    }
    if (n_failed)
        fprintf(stderr, "shoal generate: warning: not using %s\n", failed);
    shoal_remote_params rp = shoal_remote_params_default();
    rp.codec = codec;
    rp.timeout_ms = timeout_ms;
    rp.max_length = (uint32_t)ctx;
    if ((rc = shoal_remote_new(cands.v, hops, n_hops, want.dim, &rp, out, err, sizeof err))) {
        fprintf(stderr, "shoal generate: %s\n", err);
        goto out;
    }
    shoal_remote_describe(*out, err, sizeof err);
    fprintf(stderr, "chain: %zu hop%s, codec %s: %s\n", n_hops, n_hops == 1 ? "" : "s",
            shoal_codec_name(codec), err);
    status = 0;
out:
    free(hops);
    shoal_route_cands_fini(&cands);
    return status;
}

/* ---- a local adapter ----------------------------------------------------- */

/* Load the adapter at path for every block and apply it in f's passes; the
 * adapter and its views must outlive f's use. Prints one line on failure. */
static int apply_lora(const char *path, const shoal_hparams *hp, shoal_fwd *f,
                      shoal_adapter **ad, shoal_fwd_lora **views)
{
    char err[512];
    int rc = shoal_adapter_load(path, hp, 0, hp->n_layer, ad, err, sizeof err);
    if (rc) {
        fprintf(stderr, "shoal generate: --lora %s: %s\n", path, err);
        return rc;
    }
    if (!(*views = calloc((size_t)hp->n_layer * SHOAL_PROJ__COUNT, sizeof **views))) {
        fprintf(stderr, "shoal generate: out of memory\n");
        return SHOAL_ERR_NOMEM;
    }
    for (int l = 0; l < hp->n_layer; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            const shoal_lora *x = shoal_adapter_lora(*ad, l, p);
            if (x)
                (*views)[l * SHOAL_PROJ__COUNT + p] = (shoal_fwd_lora){
                    shoal_lora_rank(x), shoal_lora_scale(x), shoal_lora_a_const(x),
                    shoal_lora_b_const(x)};
        }
    if ((rc = shoal_fwd_set_lora(f, *views, 0, hp->n_layer)))
        fprintf(stderr, "shoal generate: --lora %s: %s\n", path, shoal_strerror(rc));
    return rc;
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
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    const char *model_path = NULL, *prompt = "";
    char *peers_arg = NULL;
    const char *lora_path = NULL;
    int codec = -1;
    double timeout_s = 30;
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
        case 7: peers_arg = optarg; break;
        case 8:
            if ((codec = parse_codec(optarg)) < 0) {
                fprintf(stderr, "shoal generate: --codec: expected f32, f16, bf16 or int8, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 9: if (!shoal_cli_float("generate", "--timeout", optarg, 0.001, 86400, &timeout_s)) return 2; break;
        case 10: lora_path = optarg; break;
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
    char *peer_addrs[GEN_MAX_PEERS];
    int n_peers = 0;
    if (peers_arg && (n_peers = parse_peers(peers_arg, peer_addrs, GEN_MAX_PEERS)) < 0)
        return 2;
    if (!peers_arg && codec >= 0) {
        fprintf(stderr, "shoal generate: --codec needs --peers\n");
        return 2;
    }
    if (peers_arg && lora_path) {
        fprintf(stderr, "shoal generate: --lora applies an adapter locally; not with --peers\n");
        return 2;
    }
    if (codec < 0)
        codec = SHOAL_CODEC_F32;
    int timeout_ms = (int)(timeout_s * 1000 + 0.5);
    if (timeout_ms < 1)
        timeout_ms = 1;
    sp.seed = seed;
    const int remote = peers_arg != NULL;

    int status = 1;
    char err[512] = "";
    shoal_gguf *g = NULL;
    shoal_model *m = NULL;
    shoal_tokenizer *tok = NULL;
    shoal_remote *chain = NULL;
    local_blocks lb = {0};
    shoal_adapter *lora = NULL;
    shoal_fwd_lora *lora_views = NULL;
    gen gs;
    memset(&gs, 0, sizeof gs);

    shoal_cpu_init();
    int rc = shoal_gguf_open(model_path, &g, err, sizeof err);
    if (rc) {
        fprintf(stderr, "shoal generate: %s\n", err);
        goto out;
    }
    const shoal_hparams *hp;
    shoal_hparams hpr;
    /* remote: the embedding and head only, no block is opened */
    if ((rc = shoal_hparams_read(g, &hpr, err, sizeof err)) ||
        (rc = shoal_model_open(g, 0, remote ? 0 : hpr.n_layer, SHOAL_PART_EMBED | SHOAL_PART_HEAD,
                               &m, err, sizeof err))) {
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
    gs.ctx = (int)ctx;
    gs.tokens = malloc((size_t)ctx * sizeof *gs.tokens);
    int32_t *ptoks = malloc((size_t)ctx * sizeof *ptoks);
    if (!gs.tokens || !ptoks) {
        free(ptoks);
        goto nomem;
    }
    rc = shoal_tokenizer_encode(tok, prompt, plen, true, ptoks, (int)ctx, &n_prompt);
    if (rc == SHOAL_ERR_RANGE || n_prompt >= ctx) {
        fprintf(stderr,
                "shoal generate: the prompt is %d tokens, which does not fit a context of %ld "
                "(raise -c)\n",
                n_prompt, ctx);
        free(ptoks);
        goto out;
    } else if (rc) {
        fprintf(stderr, "shoal generate: cannot tokenize the prompt: %s\n", shoal_strerror(rc));
        free(ptoks);
        goto out;
    }
    if (n_prompt == 0) {
        fprintf(stderr, "shoal generate: the prompt is empty and the model has no BOS token\n");
        free(ptoks);
        goto out;
    }
    if (remote && open_chain(g, hp, peer_addrs, n_peers, codec, timeout_ms, ctx, &chain)) {
        free(ptoks);
        goto out;
    }
    gs.dim = hp->dim;
    gs.n_vocab = hp->n_vocab;
    gs.max_batch = (int)(ctx < GEN_MAX_BATCH ? ctx : GEN_MAX_BATCH);
    gs.fwd = shoal_fwd_new(m, gs.max_batch, (int)ctx, (int)threads);
    gs.smp = shoal_sampler_new(&sp, hp->n_vocab);
    gs.x = malloc((size_t)gs.max_batch * hp->dim * sizeof *gs.x);
    gs.logits = malloc((size_t)hp->n_vocab * sizeof *gs.logits);
    if (remote) {
        gs.be = (gen_backend){chain, remote_blocks_run, remote_blocks_error};
    } else {
        lb.fwd = gs.fwd;
        lb.kv = shoal_kv_new(m, (int)ctx);
        gs.be = (gen_backend){&lb, local_blocks_run, local_blocks_error};
    }
    if (!gs.fwd || !gs.smp || !gs.x || !gs.logits || (!remote && !lb.kv)) {
        free(ptoks);
        goto nomem;
    }
    if (lora_path && apply_lora(lora_path, hp, gs.fwd, &lora, &lora_views)) {
        free(ptoks);
        goto out;
    }

    fwrite(prompt, 1, plen, stdout);
    fflush(stdout);
    double t0 = shoal_cli_now();
    rc = gen_feed(&gs, ptoks, n_prompt);
    free(ptoks);
    if (rc)
        goto fail;
    double t1 = shoal_cli_now();
    int n_gen = 0;
    char piece[256];
    while (n_gen < n_predict) {
        int32_t next = gen_sample(&gs);
        if (shoal_tokenizer_is_eog(tok, next))
            break;
        int len = shoal_tokenizer_piece(tok, gs.tokens[gs.pos - 1], next, piece, sizeof piece);
        if (len > 0) {
            fwrite(piece, 1, (size_t)len, stdout);
            fflush(stdout);
        }
        n_gen++;
        if (n_gen == n_predict)
            break;
        if (gs.pos >= gs.ctx) {
            fprintf(stderr, "shoal generate: context of %ld tokens is full\n", ctx);
            break;
        }
        if ((rc = gen_feed(&gs, &next, 1)))
            goto fail;
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
    fflush(stdout);
    fprintf(stderr, "shoal generate: %s\n", gs.err);
    goto out;
nomem:
    fprintf(stderr, "shoal generate: out of memory (context %ld)\n", ctx);
out:
    free(gs.tokens);
    free(gs.x);
    free(gs.logits);
    shoal_fwd_destroy(&gs.fwd);
    free(lora_views);
    shoal_adapter_destroy(&lora);
    shoal_kv_destroy(&lb.kv);
    shoal_sampler_destroy(&gs.smp);
    shoal_remote_destroy(&chain);
    shoal_tokenizer_destroy(&tok);
    shoal_model_destroy(&m);
    shoal_gguf_close(&g);
    return status;
}
