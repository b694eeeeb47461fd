/*
 * The LM session (see gen.h): the generation machinery that used to live in
 * `shoal generate`, so that generate, chat and the API drive one state.
 *
 * The client always embeds tokens and runs the head itself, from its own
 * copy of the model file; a blocks backend runs everything between: the
 * local forward pass over every block with a local KV cache, or a remote
 * sequence over a chain of nodes. With peers the file is opened with the
 * embedding and head only, so no block tensor page is ever touched.
 *
 * Chain opening: ask every peer for INFO, refuse a peer that serves
 * another model (a mistake in the list, not a node that is down), plan the
 * chain with the fewest hops over those that answered, open the sessions.
 * With initial peers instead (the DHT): discover the model's servers
 * (client/discover.h: records, INFO, measured round trips) and plan the
 * chain with the least expected time per token (shoal_route_plan_fast).
 */
#include "client/gen.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/chat.h"
#include "client/discover.h"
#include "client/route.h"
#include "kernels/err.h"
#include "lora/adapter.h"
#include "proto/addr.h"
#include "proto/codec.h"
#include "swarm/cli.h"
#include "swarm/log.h"
#include "swarm/model_id.h"
#include "swarm/progress.h"

#define GEN_ERR_MAX 2048

struct shoal_lm {
    shoal_gguf *g;
    shoal_model *m;           /* embedding and head; every block when local */
    shoal_tokenizer *tok;
    const shoal_hparams *hp;
    int ctx, threads;
    char **peers;             /* (n_peers) owned copies */
    int n_peers;
    char **initial;           /* (n_initial) DHT nodes, owned copies */
    int n_initial;
    shoal_remote_params rp;
    shoal_route_want want;    /* with peers */
    shoal_adapter *lora;
    shoal_fwd_lora *lora_views; /* (n_layer * SHOAL_PROJ__COUNT) */
    shoal_gen_note_fn note;
    void *note_ctx;
    char name[256];
};

struct shoal_gen {
    shoal_lm *lm;
    shoal_fwd *fwd;          /* embedding and head (and the local blocks) */
    shoal_kv *kv;            /* local */
    shoal_remote *chain;     /* remote */
    shoal_sampler *smp;
    shoal_sampler_params sp;
    int dim, n_vocab, max_batch;
    int32_t *tokens;         /* (ctx): every token fed so far */
    int ctx, pos;
    float *x;                /* (max_batch, dim) */
    float *logits;           /* (n_vocab): after the last token fed */
    bool has_logits, broken;
    char err[GEN_ERR_MAX];
};

static void note(const shoal_lm *lm, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(const shoal_lm *lm, int level, const char *fmt, ...)
{
    if (!lm->note)
        return;
    char line[GEN_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    lm->note(lm->note_ctx, level, line);
}

/* ---- the model ------------------------------------------------------------ */

shoal_lm_params shoal_lm_params_default(void)
{
    shoal_lm_params p;
    memset(&p, 0, sizeof p);
    p.remote = shoal_remote_params_default();
    p.threads = 1;
    return p;
}

/* Load the adapter for every block; its views are applied to each
 * session's forward pass. */
static int lm_load_lora(shoal_lm *lm, const char *path, char *err, size_t errlen)
{
    char e[512];
    const shoal_hparams *hp = lm->hp;
    int rc = shoal_adapter_load(path, hp, 0, hp->n_layer, &lm->lora, e, sizeof e);
    if (rc) {
        snprintf(err, errlen, "--lora %s: %s", path, e);
        return rc;
    }
    lm->lora_views = calloc((size_t)hp->n_layer * SHOAL_PROJ__COUNT, sizeof *lm->lora_views);
    if (!lm->lora_views) {
        snprintf(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    for (int l = 0; l < hp->n_layer; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            const shoal_lora *x = shoal_adapter_lora(lm->lora, l, p);
            if (x)
                lm->lora_views[l * SHOAL_PROJ__COUNT + p] = (shoal_fwd_lora){
                    shoal_lora_rank(x), shoal_lora_scale(x), shoal_lora_a_const(x),
                    shoal_lora_b_const(x)};
        }
    return 0;
}

static int lm_lookup(void *ctx, shoal_route_cands *out);

int shoal_lm_open(const shoal_lm_params *p, shoal_lm **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!p->model_path || p->threads < 1 || p->ctx < 0 || p->n_peers < 0 ||
        p->n_peers > SHOAL_GEN_MAX_PEERS || p->n_initial_peers < 0 ||
        p->n_initial_peers > SHOAL_GEN_MAX_PEERS || (p->n_peers && p->n_initial_peers) ||
        ((p->n_peers || p->n_initial_peers) && p->lora_path)) {
        snprintf(err, errlen, "bad LM parameters");
        return SHOAL_ERR_ARG;
    }
    if (p->remote.adapter && *p->remote.adapter && !p->n_peers && !p->n_initial_peers) {
        snprintf(err, errlen,
                 "--adapter NAME chooses an adapter the nodes serve: it needs --peers or "
                 "--initial-peers (use --lora FILE locally)");
        return SHOAL_ERR_ARG;
    }
    shoal_lm *lm = calloc(1, sizeof *lm);
    if (!lm) {
        snprintf(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    lm->threads = p->threads;
    lm->rp = p->remote;
    lm->note = p->note;
    lm->note_ctx = p->note_ctx;
    const bool remote = p->n_peers > 0 || p->n_initial_peers > 0;
    char e[512] = "";
    int rc = shoal_gguf_open(p->model_path, &lm->g, e, sizeof e);
    if (rc) {
        snprintf(err, errlen, "%s", e);
        goto fail;
    }
    shoal_hparams hpr;
    /* remote: the embedding and head only, no block is opened */
    if ((rc = shoal_hparams_read(lm->g, &hpr, e, sizeof e)) ||
        (rc = shoal_model_open(lm->g, 0, remote ? 0 : hpr.n_layer,
                               SHOAL_PART_EMBED | SHOAL_PART_HEAD, &lm->m, e, sizeof e))) {
        snprintf(err, errlen, "%s: %s", p->model_path, e);
        goto fail;
    }
    lm->hp = shoal_model_hparams(lm->m);
    if (!(lm->tok = shoal_tokenizer_from_gguf(lm->g, e, sizeof e))) {
        snprintf(err, errlen, "%s: %s", p->model_path, e);
        rc = SHOAL_ERR_FORMAT;
        goto fail;
    }
    if (shoal_tokenizer_n_vocab(lm->tok) != lm->hp->n_vocab) {
        snprintf(err, errlen, "%s: tokenizer has %d tokens, embedding has %d", p->model_path,
                 shoal_tokenizer_n_vocab(lm->tok), lm->hp->n_vocab);
        rc = SHOAL_ERR_FORMAT;
        goto fail;
    }
    lm->ctx = (int)(p->ctx ? p->ctx : lm->hp->ctx_train);
    if (lm->ctx < 1) {
        snprintf(err, errlen, "%s: the model declares no context length (set one)",
                 p->model_path);
        rc = SHOAL_ERR_ARG;
        goto fail;
    }
    lm->rp.max_length = (uint32_t)lm->ctx;
    shoal_gen_model_name(p->model_path, lm->name, sizeof lm->name);
    /* the pages the first pass would wait for, with a bar on a terminal */
    shoal_progress bar;
    shoal_progress_init(&bar, remote ? "loading the head" : "loading the model",
                        shoal_model_weight_bytes(lm->m), SHOAL_PROGRESS_BYTES);
    shoal_model_prefault(lm->m, shoal_progress_cb, &bar);
    shoal_progress_fini(&bar, true);
    if (remote) {
        if ((rc = shoal_model_id_compute(lm->g, &lm->want.model))) {
            snprintf(err, errlen, "cannot compute the model's identity: %s", shoal_strerror(rc));
            goto fail;
        }
        lm->want.nblocks = (uint32_t)lm->hp->n_layer;
        lm->want.dim = (uint32_t)lm->hp->dim;
        lm->want.max_length = (uint32_t)lm->ctx;
        lm->want.codec = lm->rp.codec;
        lm->want.adapter = lm->rp.adapter;
        if (!(lm->peers = calloc((size_t)p->n_peers, sizeof *lm->peers)))
            goto nomem;
        for (int i = 0; i < p->n_peers; i++, lm->n_peers++)
            if (!(lm->peers[i] = strdup(p->peers[i])))
                goto nomem;
        if (p->n_initial_peers &&
            !(lm->initial = calloc((size_t)p->n_initial_peers, sizeof *lm->initial)))
            goto nomem;
        for (int i = 0; i < p->n_initial_peers; i++, lm->n_initial++)
            if (!(lm->initial[i] = strdup(p->initial_peers[i])))
                goto nomem;
        if (lm->n_initial && !lm->rp.lookup) { /* failover asks the DHT again */
            lm->rp.lookup = lm_lookup;
            lm->rp.lookup_ctx = lm;
        }
    }
    if (p->lora_path && (rc = lm_load_lora(lm, p->lora_path, err, errlen)))
        goto fail;
    *out = lm;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    rc = SHOAL_ERR_NOMEM;
fail:
    shoal_lm_close(&lm);
    return rc;
}

void shoal_lm_close(shoal_lm **p)
{
    shoal_lm *lm = p ? *p : NULL;
    if (!lm)
        return;
    for (int i = 0; i < lm->n_peers; i++)
        free(lm->peers[i]);
    free(lm->peers);
    for (int i = 0; i < lm->n_initial; i++)
        free(lm->initial[i]);
    free(lm->initial);
    free(lm->lora_views);
    shoal_adapter_destroy(&lm->lora);
    shoal_tokenizer_destroy(&lm->tok);
    shoal_model_destroy(&lm->m);
    shoal_gguf_close(&lm->g);
    free(lm);
    *p = NULL;
}

const shoal_tokenizer *shoal_lm_tokenizer(const shoal_lm *lm) { return lm->tok; }
const shoal_hparams *shoal_lm_hparams(const shoal_lm *lm) { return lm->hp; }
const shoal_gguf *shoal_lm_gguf(const shoal_lm *lm) { return lm->g; }
int shoal_lm_ctx(const shoal_lm *lm) { return lm->ctx; }
bool shoal_lm_remote(const shoal_lm *lm) { return lm->n_peers > 0 || lm->n_initial > 0; }
const char *shoal_lm_name(const shoal_lm *lm) { return lm->name; }

void shoal_gen_model_name(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf"))
        n -= 5;
    snprintf(out, cap, "%.*s", (int)(n < 255 ? n : 255), base);
}

int shoal_lm_chat_template(const shoal_lm *lm)
{
    const char *j = NULL;
    if (shoal_gguf_get_str(lm->g, "tokenizer.chat_template", &j))
        return SHOAL_CHAT_NONE;
    return shoal_chat_template_detect(j);
}

/* ---- the chain ------------------------------------------------------------ */

/* Ask the peers and plan a chain into cands/hops (room for nblocks).
 * warn: tell the note callback about peers left out. */
/* The DHT's way: discover the servers, plan the fastest chain. */
static int lm_plan_dht(shoal_lm *lm, shoal_route_cands *cands, shoal_route_hop *hops,
                       size_t *n_hops, bool warn, char *err, size_t errlen)
{
    char e[GEN_ERR_MAX], line[GEN_ERR_MAX];
    shoal_route_cost *costs = NULL;
    shoal_discover_params dp = shoal_discover_params_default();
    if (lm->rp.timeout_ms < dp.timeout_ms)
        dp.timeout_ms = lm->rp.timeout_ms > 2000 ? lm->rp.timeout_ms : 2000;
    int rc = shoal_discover((const char *const *)lm->initial, (size_t)lm->n_initial, &lm->want,
                            &dp, cands, &costs, line, sizeof line, err, errlen);
    if (rc)
        return rc;
    if (warn)
        note(lm, SHOAL_LOG_INFO, "%s", line);
    double est = 0;
    rc = shoal_route_plan_fast(cands->v, costs, cands->n, &lm->want, hops, lm->want.nblocks,
                               n_hops, &est, e, sizeof e);
    free(costs);
    if (rc) {
        snprintf(err, errlen, "%s (%s)", e, line);
        return rc;
    }
    if (warn)
        note(lm, SHOAL_LOG_INFO, "route: %zu hop%s, expected %.2f ms per token", *n_hops,
             *n_hops == 1 ? "" : "s", est);
    return 0;
}

/* Failover's fresh lookup (shoal_remote_params.lookup): the servers the
 * DHT names now. Reads only what the lm never changes, so chains on any
 * thread may call it at once. */
static int lm_lookup(void *ctx, shoal_route_cands *out)
{
    shoal_lm *lm = ctx;
    char note_line[GEN_ERR_MAX], err[GEN_ERR_MAX];
    shoal_route_cost *costs = NULL;
    shoal_discover_params dp = shoal_discover_params_default();
    dp.timeout_ms = 2000;
    dp.probe_timeout_ms = 1000;
    dp.pad_max = 0; /* failover plans over blocks, not costs: no link timing */
    int rc = shoal_discover((const char *const *)lm->initial, (size_t)lm->n_initial, &lm->want,
                            &dp, out, &costs, note_line, sizeof note_line, err, sizeof err);
    free(costs);
    return rc;
}

static int lm_plan(shoal_lm *lm, shoal_route_cands *cands, shoal_route_hop *hops,
                   size_t *n_hops, bool warn, char *err, size_t errlen)
{
    if (lm->n_initial)
        return lm_plan_dht(lm, cands, hops, n_hops, warn, err, errlen);
    char e[GEN_ERR_MAX], failed[GEN_ERR_MAX];
    size_t n_failed = 0;
    int rc = shoal_remote_lookup((const char *const *)lm->peers, (size_t)lm->n_peers,
                                 lm->rp.timeout_ms, cands, &n_failed, failed, sizeof failed);
    if (rc) {
        snprintf(err, errlen, "cannot ask the peers: %s", shoal_strerror(rc));
        return rc;
    }
    /* a listed peer with another model is a mistake in the list, not a
     * node that happens to be down: stop */
    for (size_t i = 0; i < cands->n; i++)
        if ((rc = shoal_route_check_model(&cands->v[i], &lm->want, err, errlen)))
            return rc;
    rc = shoal_route_plan(cands->v, cands->n, &lm->want, hops, lm->want.nblocks, n_hops, e,
                          sizeof e);
    if (rc) {
        if (n_failed)
            snprintf(err, errlen, "%s; not answering: %s", e, failed);
        else
            snprintf(err, errlen, "%s", e);
        return rc;
    }
    if (n_failed && warn)
        note(lm, SHOAL_LOG_WARN, "not using %s", failed);
    return 0;
}

int shoal_lm_check_route(shoal_lm *lm, char *err, size_t errlen)
{
    if (!shoal_lm_remote(lm))
        return 0;
    shoal_route_cands cands;
    shoal_route_cands_init(&cands);
    size_t n_hops = 0;
    shoal_route_hop *hops = calloc(lm->want.nblocks, sizeof *hops);
    int rc = SHOAL_ERR_NOMEM;
    if (!hops)
        snprintf(err, errlen, "out of memory");
    else
        rc = lm_plan(lm, &cands, hops, &n_hops, false, err, errlen);
    free(hops);
    shoal_route_cands_fini(&cands);
    return rc;
}

static int gen_open_chain(shoal_gen *gs, char *err, size_t errlen)
{
    shoal_lm *lm = gs->lm;
    shoal_route_cands cands;
    shoal_route_cands_init(&cands);
    size_t n_hops = 0;
    int rc;
    shoal_route_hop *hops = calloc(lm->want.nblocks, sizeof *hops);
    if (!hops) {
        snprintf(err, errlen, "out of memory");
        rc = SHOAL_ERR_NOMEM;
        goto out;
    }
    if ((rc = lm_plan(lm, &cands, hops, &n_hops, true, err, errlen)))
        goto out;
    /* peers that did not answer: asked again when failover needs them */
    const char *spares[SHOAL_GEN_MAX_PEERS];
    size_t n_spares = 0;
    for (int i = 0; i < lm->n_peers; i++) {
        size_t j = 0;
        while (j < cands.n && strcmp(cands.v[j].address, lm->peers[i]))
            j++;
        if (j == cands.n)
            spares[n_spares++] = lm->peers[i];
    }
    rc = shoal_remote_new(&cands, &lm->want, spares, n_spares, hops, n_hops, &lm->rp,
                          &gs->chain, err, errlen);
    /* through the DHT the swarm moves under us (a server leaving or moving
     * between our read and our open): look again, twice, before failing */
    for (int again = 0; rc && lm->n_initial && again < 2; again++) {
        note(lm, SHOAL_LOG_WARN, "%s; looking the swarm up again", err);
        struct timespec pause = {0, 300 * 1000 * 1000};
        nanosleep(&pause, NULL);
        shoal_route_cands_fini(&cands);
        shoal_route_cands_init(&cands);
        if ((rc = lm_plan(lm, &cands, hops, &n_hops, true, err, errlen)))
            continue;
        rc = shoal_remote_new(&cands, &lm->want, NULL, 0, hops, n_hops, &lm->rp, &gs->chain,
                              err, errlen);
    }
    if (rc)
        goto out;
    char desc[GEN_ERR_MAX];
    shoal_remote_describe(gs->chain, desc, sizeof desc);
    note(lm, SHOAL_LOG_INFO, "chain: %zu hop%s, codec %s: %s", n_hops, n_hops == 1 ? "" : "s",
         shoal_codec_name(lm->rp.codec), desc);
out:
    free(hops);
    shoal_route_cands_fini(&cands);
    return rc;
}

/* ---- a session ------------------------------------------------------------ */

int shoal_gen_new(shoal_lm *lm, const shoal_sampler_params *sp, shoal_gen **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    shoal_gen *gs = calloc(1, sizeof *gs);
    if (!gs) {
        snprintf(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    gs->lm = lm;
    gs->sp = *sp;
    gs->ctx = lm->ctx;
    gs->dim = lm->hp->dim;
    gs->n_vocab = lm->hp->n_vocab;
    gs->max_batch = gs->ctx < SHOAL_GEN_MAX_BATCH ? gs->ctx : SHOAL_GEN_MAX_BATCH;
    int rc;
    if (shoal_lm_remote(lm) && (rc = gen_open_chain(gs, err, errlen)))
        goto fail;
    gs->tokens = malloc((size_t)gs->ctx * sizeof *gs->tokens);
    gs->fwd = shoal_fwd_new(lm->m, gs->max_batch, gs->ctx, lm->threads);
    gs->x = malloc((size_t)gs->max_batch * gs->dim * sizeof *gs->x);
    gs->logits = malloc((size_t)gs->n_vocab * sizeof *gs->logits);
    if (!shoal_lm_remote(lm))
        gs->kv = shoal_kv_new(lm->m, gs->ctx);
    if (!gs->tokens || !gs->fwd || !gs->x || !gs->logits || (!shoal_lm_remote(lm) && !gs->kv)) {
        snprintf(err, errlen, "out of memory (context %d)", gs->ctx);
        rc = SHOAL_ERR_NOMEM;
        goto fail;
    }
    if (!(gs->smp = shoal_sampler_new(sp, gs->n_vocab))) {
        snprintf(err, errlen, "bad sampling parameters");
        rc = SHOAL_ERR_ARG;
        goto fail;
    }
    if (lm->lora_views &&
        (rc = shoal_fwd_set_lora(gs->fwd, lm->lora_views, 0, lm->hp->n_layer))) {
        snprintf(err, errlen, "--lora: %s", shoal_strerror(rc));
        goto fail;
    }
    *out = gs;
    return 0;
fail:
    shoal_gen_destroy(&gs);
    return rc;
}

void shoal_gen_destroy(shoal_gen **p)
{
    shoal_gen *gs = p ? *p : NULL;
    if (!gs)
        return;
    free(gs->tokens);
    free(gs->x);
    free(gs->logits);
    shoal_fwd_destroy(&gs->fwd);
    shoal_kv_destroy(&gs->kv);
    shoal_remote_destroy(&gs->chain);
    shoal_sampler_destroy(&gs->smp);
    free(gs);
    *p = NULL;
}

static int gen_blocks(shoal_gen *gs, int n)
{
    int rc;
    if (gs->chain) {
        if ((rc = shoal_remote_blocks(gs->chain, gs->pos, n, gs->x))) {
            snprintf(gs->err, sizeof gs->err, "%s", shoal_remote_last_error(gs->chain));
            gs->broken = true;
        }
    } else if ((rc = shoal_fwd_blocks(gs->fwd, gs->kv, gs->pos, n, gs->x))) {
        snprintf(gs->err, sizeof gs->err, "forward pass failed: %s", shoal_strerror(rc));
    }
    return rc;
}

int shoal_gen_feed(shoal_gen *gs, const int32_t *toks, int n)
{
    if (n < 1) {
        snprintf(gs->err, sizeof gs->err, "nothing to feed");
        return SHOAL_ERR_ARG;
    }
    if (n > gs->ctx - gs->pos) {
        snprintf(gs->err, sizeof gs->err, "context of %d tokens is full", gs->ctx);
        return SHOAL_ERR_CONTEXT;
    }
    if (gs->broken)
        return SHOAL_ERR_SESSION;
    gs->has_logits = false;
    for (int done = 0; done < n;) {
        int k = n - done < gs->max_batch ? n - done : gs->max_batch;
        int rc = shoal_fwd_embed(gs->fwd, toks + done, k, gs->x);
        if (rc) {
            snprintf(gs->err, sizeof gs->err, "forward pass failed: %s", shoal_strerror(rc));
            return rc;
        }
        if ((rc = gen_blocks(gs, k)))
            return rc;
        memcpy(gs->tokens + gs->pos, toks + done, (size_t)k * sizeof *toks);
        for (int i = 0; i < k; i++)
            shoal_sampler_accept(gs->smp, toks[done + i]);
        gs->pos += k;
        done += k;
        if (done == n &&
            (rc = shoal_fwd_head(gs->fwd, gs->x + (size_t)(k - 1) * gs->dim, 1, gs->logits))) {
            snprintf(gs->err, sizeof gs->err, "forward pass failed: %s", shoal_strerror(rc));
            return rc;
        }
    }
    gs->has_logits = true;
    return 0;
}

int32_t shoal_gen_sample(shoal_gen *gs)
{
    return shoal_sampler_sample(gs->smp, gs->logits);
}

bool shoal_gen_has_logits(const shoal_gen *gs) { return gs->has_logits; }

static void gen_rebuild_history(shoal_gen *gs)
{
    shoal_sampler_reset(gs->smp);
    int n = gs->sp.repeat_last_n;
    int from = gs->pos > n ? gs->pos - n : 0;
    for (int i = from; i < gs->pos; i++)
        shoal_sampler_accept(gs->smp, gs->tokens[i]);
}

int shoal_gen_rewind(shoal_gen *gs, int pos)
{
    if (pos < 0 || pos > gs->pos) {
        snprintf(gs->err, sizeof gs->err, "cannot rewind to %d from %d", pos, gs->pos);
        return SHOAL_ERR_ARG;
    }
    gs->pos = pos;
    if (gs->kv)
        shoal_kv_truncate(gs->kv, pos);
    gs->has_logits = false;
    gen_rebuild_history(gs);
    return 0;
}

int shoal_gen_sync(shoal_gen *gs, const int32_t *toks, int n, int *n_fed)
{
    if (n_fed)
        *n_fed = 0;
    if (n < 1) {
        snprintf(gs->err, sizeof gs->err, "nothing to feed");
        return SHOAL_ERR_ARG;
    }
    if (n > gs->ctx) {
        snprintf(gs->err, sizeof gs->err, "context of %d tokens is full", gs->ctx);
        return SHOAL_ERR_CONTEXT;
    }
    int keep = 0, lim = n - 1 < gs->pos ? n - 1 : gs->pos;
    while (keep < lim && gs->tokens[keep] == toks[keep])
        keep++;
    int rc;
    if (keep < gs->pos && (rc = shoal_gen_rewind(gs, keep)))
        return rc;
    if (n_fed)
        *n_fed = n - keep;
    return shoal_gen_feed(gs, toks + keep, n - keep);
}

int shoal_gen_set_sampler(shoal_gen *gs, const shoal_sampler_params *sp)
{
    shoal_sampler *s = shoal_sampler_new(sp, gs->n_vocab);
    if (!s) {
        snprintf(gs->err, sizeof gs->err, "bad sampling parameters");
        return SHOAL_ERR_ARG;
    }
    shoal_sampler_destroy(&gs->smp);
    gs->smp = s;
    gs->sp = *sp;
    gen_rebuild_history(gs);
    return 0;
}

int shoal_gen_pos(const shoal_gen *gs) { return gs->pos; }
int shoal_gen_ctx(const shoal_gen *gs) { return gs->ctx; }
const int32_t *shoal_gen_tokens(const shoal_gen *gs) { return gs->tokens; }
const shoal_lm *shoal_gen_lm(const shoal_gen *gs) { return gs->lm; }
bool shoal_gen_broken(const shoal_gen *gs) { return gs->broken; }
const char *shoal_gen_error(const shoal_gen *gs) { return gs->err; }

/* ---- command-line helpers -------------------------------------------------- */

int shoal_gen_parse_peers(const char *cmd, const char *opt, char *s, char **addrs, int max)
{
    int n = 0;
    opt = shoal_cli_source(opt, s); /* the variable's name when s came from one */
    for (char *tok = s, *next; tok; tok = next) {
        next = strchr(tok, ',');
        if (next)
            *next++ = 0;
        shoal_addr a;
        if (!*tok || shoal_addr_parse(&a, tok)) {
            fprintf(stderr,
                    "shoal %s: %s: '%s' is not a node address "
                    "(shoal://HOST:PORT/KEY, as `shoal serve` prints)\n",
                    cmd, opt, tok);
            return -1;
        }
        if (n == max) {
            fprintf(stderr, "shoal %s: %s: more than %d addresses\n", cmd, opt, max);
            return -1;
        }
        addrs[n++] = tok;
    }
    return n;
}

int shoal_gen_parse_codec(const char *s)
{
    if (!strcmp(s, "int8"))
        return SHOAL_CODEC_I8B64;
    return shoal_codec_from_name(s);
}

/* ---- printable output ----------------------------------------------------- */

void shoal_gen_out_init(shoal_gen_out *o, const shoal_tokenizer *tok, int32_t prev,
                        bool replace_invalid)
{
    o->tok = tok;
    o->prev = prev;
    shoal_utf8_stream_init(&o->u, replace_invalid);
}

int shoal_gen_out_push(shoal_gen_out *o, int32_t tok, char *out, size_t cap, size_t *len)
{
    *len = 0;
    int n = shoal_tokenizer_piece(o->tok, o->prev, tok, o->piece, sizeof o->piece);
    if (n < 0 || (size_t)n > sizeof o->piece || cap < SHOAL_GEN_OUT_CAP)
        return SHOAL_ERR_ARG;
    o->prev = tok;
    return shoal_utf8_stream_push(&o->u, o->piece, (size_t)n, out, cap, len);
}

int shoal_gen_out_flush(shoal_gen_out *o, char *out, size_t cap, size_t *len)
{
    return shoal_utf8_stream_flush(&o->u, out, cap, len);
}

void shoal_gen_opts_init(shoal_gen_opts *o)
{
    memset(o, 0, sizeof *o);
    o->codec = -1;
    o->timeout_s = 30;
}

bool shoal_gen_opts_codec(const char *cmd, shoal_gen_opts *o, const char *value)
{
    if ((o->codec = shoal_gen_parse_codec(value)) < 0) {
        fprintf(stderr, "shoal %s: %s: expected f32, f16, bf16 or int8, got '%s'\n", cmd,
                shoal_cli_source("--codec", value), value);
        return false;
    }
    return true;
}

bool shoal_gen_opts_remote(const shoal_gen_opts *o) { return o->peers_arg || o->initial_arg; }

int shoal_gen_opts_check(const char *cmd, shoal_gen_opts *o)
{
    if (o->peers_arg && o->initial_arg) {
        fprintf(stderr, "shoal %s: --peers or --initial-peers, not both\n", cmd);
        return 2;
    }
    if (o->peers_arg && (o->n_peers = shoal_gen_parse_peers(cmd, "--peers", o->peers_arg,
                                                           o->peers, SHOAL_GEN_MAX_PEERS)) < 0)
        return 2;
    if (o->initial_arg &&
        (o->n_initial = shoal_gen_parse_peers(cmd, "--initial-peers", o->initial_arg, o->initial,
                                              SHOAL_GEN_MAX_PEERS)) < 0)
        return 2;
    bool remote = shoal_gen_opts_remote(o);
    if (!remote && o->codec >= 0) {
        fprintf(stderr, "shoal %s: --codec needs --peers or --initial-peers (it sets what "
                        "crosses the wire)\n", cmd);
        return 2;
    }
    if (remote && o->lora_path) {
        fprintf(stderr, "shoal %s: --lora applies an adapter locally; with nodes, name one "
                        "they serve with --adapter NAME\n", cmd);
        return 2;
    }
    if (!remote && o->adapter) {
        fprintf(stderr, "shoal %s: --adapter NAME chooses an adapter the nodes serve; it needs "
                        "--peers or --initial-peers (use --lora FILE locally)\n", cmd);
        return 2;
    }
    return 0;
}

void shoal_gen_opts_apply(const shoal_gen_opts *o, shoal_lm_params *lp)
{
    lp->peers = (const char *const *)o->peers;
    lp->n_peers = o->n_peers;
    lp->initial_peers = (const char *const *)o->initial;
    lp->n_initial_peers = o->n_initial;
    lp->remote.codec = o->codec < 0 ? SHOAL_CODEC_F32 : o->codec;
    int ms = (int)(o->timeout_s * 1000 + 0.5);
    lp->remote.timeout_ms = ms < 1 ? 1 : ms;
    lp->lora_path = o->lora_path;
    lp->remote.adapter = o->adapter;
}
