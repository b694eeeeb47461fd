/*
 * Training sessions on real nodes (`shoal serve` on loopback, stories260K
 * as blocks 0:2 and 2:5) through swarm/peer_train.h, against a local
 * training span over 0:5 (lora/train_span.h):
 *
 *   passes      two micro-batches of forward (0:2 then 2:5), backward
 *               (2:5 then 0:2) and optimizer steps give the local outputs,
 *               input gradients and checkpoint state bit for bit; an
 *               evaluation forward (no key) keeps nothing.
 *   checkpoint  pull, push into a fresh session, and both continue alike;
 *               a repeated step number is answered without a second update.
 *   refusals    unknown and other clients' sessions, steps out of order,
 *               unknown keys, too many kept micro-batches, too many tokens,
 *               bad spans and ranks, state offsets past the end, negative
 *               second moments; none changes the session.
 *   budget      an open that does not fit the cache budget gets BUSY; a
 *               close gives the room back.
 *   lifecycle   idle training sessions expire.
 *   adapters    `shoal serve --adapter zib=FILE`: INFO lists it; an inference
 *               session opened with it runs the local pass with the same
 *               LoRA bit for bit (whole span and a sub-span), one without
 *               it the plain pass; an unknown name gets NOTFOUND; bad
 *               --adapter arguments stop the node at start.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "kernels/backward.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "lora/adapter.h"
#include "lora/lora.h"
#include "lora/train_span.h"
#include "swarm/peer.h"
#include "swarm/peer_train.h"
#include "test_node_spawn.h"

#define MODEL SHOAL_SHARED "/models/stories260K.gguf"
#define T_MS 20000
#define NSEQ 2
#define T 12

static shoal_gguf *g;
static shoal_hparams hp;
static shoal_train_w *w;
static uint64_t rng = 4242;

static void randn(float *x, size_t n, float s)
{
    for (size_t i = 0; i < n; i++)
        x[i] = s * (float)shoal_lora_rand_normal(&rng);
}

static shoal_train_span_params span_params(void)
{
    shoal_train_span_params p = shoal_train_span_params_default();
    p.rank = 4;
    p.alpha = 8;
    p.targets = SHOAL_PROJ_ALL;
    p.seed = 11;
    p.opt.lr = 1e-2f;
    p.max_tokens = NSEQ * T;
    p.max_saved = 2;
    p.threads = 1;
    return p;
}

static shoal_peer_train_params wire_params(uint32_t a, uint32_t b)
{
    shoal_train_span_params p = span_params();
    shoal_peer_train_params tp = {a, b, (uint32_t)p.max_tokens, (uint32_t)p.rank, p.alpha,
                                  p.targets, p.seed, p.opt.lr, p.opt.beta1, p.opt.beta2,
                                  p.opt.eps, p.opt.weight_decay};
    return tp;
}

static size_t state_len(int a, int b)
{
    return shoal_train_state_len(&hp, a, b, SHOAL_PROJ_ALL, 4);
}

static void test_passes(shoal_peer *pa, shoal_peer *pb, shoal_peer *other)
{
    const size_t n = (size_t)NSEQ * T * hp.dim, L = (size_t)hp.n_layer;
    shoal_train_span_params p = span_params();
    shoal_train_span *local = NULL;
    CHECK(shoal_train_span_new(w, 0, (int)L, &p, &local) == 0);
    shoal_peer_train_params ta = wire_params(0, 2), tb = wire_params(2, 5);
    const uint64_t sa = 0x1111, sb = 0x2222;
    CHECK(shoal_peer_train_open(pa, sa, &ta, T_MS) == 0);
    CHECK(shoal_peer_train_open(pb, sb, &tb, T_MS) == 0);
    CHECK(shoal_peer_train_open(pa, sa, &ta, T_MS) == 0); /* a retried open */
    CHECK(shoal_peer_train_open(other, sa, &ta, T_MS) == SHOAL_ERR_ARG); /* taken */
    float *x = malloc(n * 4), *y = malloc(n * 4), *g1 = malloc(n * 4), *g2 = malloc(n * 4);
    int same_fwd = 1, same_bwd = 1, ok = 1;
    for (int step = 1; step <= 2; step++) {
        for (int mb = 0; mb < 2; mb++) {
            uint64_t key = (uint64_t)step * 10 + (uint64_t)mb + 1;
            randn(x, n, 1.0f);
            memcpy(y, x, n * 4);
            ok &= shoal_train_span_forward(local, key, NSEQ, T, x) == 0;
            ok &= shoal_peer_train_forward(pa, sa, key, y, NSEQ, T, hp.dim, SHOAL_CODEC_F32,
                                           T_MS) == 0;
            ok &= shoal_peer_train_forward(pb, sb, key, y, NSEQ, T, hp.dim, SHOAL_CODEC_F32,
                                           T_MS) == 0;
            same_fwd &= memcmp(x, y, n * 4) == 0;
            randn(g1, n, 0.02f);
            memcpy(g2, g1, n * 4);
            ok &= shoal_train_span_backward(local, key, NSEQ, T, g1) == 0;
            ok &= shoal_peer_train_backward(pb, sb, key, g2, NSEQ, T, hp.dim, SHOAL_CODEC_F32,
                                            T_MS) == 0;
            ok &= shoal_peer_train_backward(pa, sa, key, g2, NSEQ, T, hp.dim, SHOAL_CODEC_F32,
                                            T_MS) == 0;
            same_bwd &= memcmp(g1, g2, n * 4) == 0;
        }
        ok &= shoal_train_span_step(local, -1) == 0;
        ok &= shoal_peer_train_step(pa, sa, step, NULL, T_MS) == 0;
        ok &= shoal_peer_train_step(pb, sb, step, &tb, T_MS) == 0;
    }
    CHECK(ok);
    CHECK_MSG(same_fwd, "the nodes' forward differs from the local span's");
    CHECK_MSG(same_bwd, "the nodes' input gradient differs from the local span's");

    /* the checkpoint: the nodes' states end to end are the local state */
    size_t len = state_len(0, 5), la = state_len(0, 2);
    float *s1 = malloc(len * 4), *s2 = malloc(len * 4);
    int64_t t1 = -1, t2 = -1;
    CHECK(shoal_train_span_state_get(local, 0, len, s1) == 0);
    CHECK(shoal_peer_train_pull(pa, sa, s2, la, &t1, 1000, T_MS) == 0 && t1 == 2);
    CHECK(shoal_peer_train_pull(pb, sb, s2 + la, len - la, &t2, 777, T_MS) == 0 && t2 == 2);
    CHECK_MSG(memcmp(s1, s2, len * 4) == 0, "the nodes' state differs from the local one");
    CHECK(shoal_peer_train_pull(pa, sa, s2, la - 1, &t1, 1000, T_MS) == SHOAL_ERR_PROTOCOL);

    /* a repeated step is not applied twice; out of order is refused */
    CHECK(shoal_peer_train_step(pa, sa, 2, NULL, T_MS) == 0);
    CHECK(shoal_peer_train_step(pa, sa, 4, NULL, T_MS) == SHOAL_ERR_RANGE);
    CHECK(shoal_peer_train_step(pa, sa, 1, NULL, T_MS) == SHOAL_ERR_RANGE);
    shoal_peer_train_params bad = ta;
    bad.beta1 = 0.5;
    CHECK(shoal_peer_train_step(pa, sa, 3, &bad, T_MS) == SHOAL_ERR_ARG);
    CHECK(shoal_peer_train_pull(pa, sa, s2, la, &t1, 1000, T_MS) == 0 && t1 == 2 &&
          memcmp(s1, s2, la * 4) == 0);

    /* refusals that leave the session as it was */
    CHECK(shoal_peer_train_backward(pa, sa, 99, g2, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) ==
          SHOAL_ERR_NOTFOUND);
    randn(x, n, 1.0f);
    CHECK(shoal_peer_train_forward(pa, sa, 1, x, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) == 0);
    CHECK(shoal_peer_train_forward(pa, sa, 2, x, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) == 0);
    CHECK(shoal_peer_train_forward(pa, sa, 3, x, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) ==
          SHOAL_ERR_BUSY); /* two kept at most */
    CHECK(shoal_peer_train_forward(pa, sa, 0, x, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) == 0);
    float *big = calloc(n * 2, 4);
    CHECK(shoal_peer_train_forward(pa, sa, 0, big, NSEQ, 2 * T, hp.dim, SHOAL_CODEC_F32, T_MS) ==
          SHOAL_ERR_RANGE); /* more tokens than the session was opened for */
    free(big);
    CHECK(shoal_peer_train_forward(other, sa, 0, x, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) ==
          SHOAL_ERR_SESSION); /* another client's */
    CHECK(shoal_peer_train_forward(pa, 0x9999, 0, x, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) ==
          SHOAL_ERR_SESSION);
    CHECK(shoal_peer_train_forward(pa, sa, 0, x, NSEQ, T, hp.dim, SHOAL_CODEC_F16, T_MS) == 0);

    /* restore into a fresh session: it continues as the original does */
    const uint64_t sc = 0x3333;
    CHECK(shoal_peer_train_open(pa, sc, &ta, T_MS) == 0);
    float *neg = malloc(la * 4);
    memcpy(neg, s1, la * 4);
    neg[2 * 4 * hp.dim + 1] = -1.0f; /* v of the first A */
    CHECK(shoal_peer_train_push(pa, sc, neg, la, 2, 1000, T_MS) == SHOAL_ERR_RANGE);
    CHECK(shoal_peer_train_push(pa, sc, s1, la + 1, 2, 1000, T_MS) == SHOAL_ERR_PROTOCOL);
    free(neg);
    CHECK(shoal_peer_train_push(pa, sc, s1, la, 2, 999, T_MS) == 0);
    /* push also dropped the original's kept micro-batches: */
    CHECK(shoal_peer_train_push(pa, sa, s1, la, 2, la, T_MS) == 0);
    CHECK(shoal_peer_train_backward(pa, sa, 1, g2, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) ==
          SHOAL_ERR_NOTFOUND);
    randn(x, n, 1.0f);
    memcpy(y, x, n * 4);
    randn(g1, n, 0.02f);
    memcpy(g2, g1, n * 4);
    ok = shoal_peer_train_forward(pa, sa, 5, x, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) == 0 &&
         shoal_peer_train_forward(pa, sc, 5, y, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) == 0 &&
         shoal_peer_train_backward(pa, sa, 5, g1, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) == 0 &&
         shoal_peer_train_backward(pa, sc, 5, g2, NSEQ, T, hp.dim, SHOAL_CODEC_F32, T_MS) == 0 &&
         shoal_peer_train_step(pa, sa, 3, NULL, T_MS) == 0 &&
         shoal_peer_train_step(pa, sc, 3, NULL, T_MS) == 0;
    CHECK(ok && !memcmp(x, y, n * 4) && !memcmp(g1, g2, n * 4));
    CHECK(shoal_peer_train_pull(pa, sa, s1, la, &t1, 5000, T_MS) == 0 &&
          shoal_peer_train_pull(pa, sc, s2, la, &t2, 5000, T_MS) == 0);
    CHECK(t1 == 3 && t2 == 3 && memcmp(s1, s2, la * 4) == 0);

    /* bad opens */
    shoal_peer_train_params b2 = ta;
    b2.span_end = 3;
    CHECK(shoal_peer_train_open(pa, 0x4444, &b2, T_MS) == SHOAL_ERR_RANGE);
    b2 = ta;
    b2.rank = 10000;
    CHECK(shoal_peer_train_open(pa, 0x4444, &b2, T_MS) == SHOAL_ERR_ARG);
    b2 = ta;
    b2.targets = 0;
    CHECK(shoal_peer_train_open(pa, 0x4444, &b2, T_MS) == SHOAL_ERR_ARG);
    b2 = ta;
    b2.max_tokens = 100000;
    CHECK(shoal_peer_train_open(pa, 0x4444, &b2, T_MS) == SHOAL_ERR_RANGE);
    b2 = ta;
    b2.beta2 = 1.5;
    CHECK(shoal_peer_train_open(pa, 0x4444, &b2, T_MS) == SHOAL_ERR_ARG);

    /* crafted requests the client API would not send */
    shoal_wire_header h;
    shoal_wire_header_init(&h, SHOAL_OP_TRAIN_PULL, 0);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_POSITION | SHOAL_WIRE_HAS_MAX_LENGTH;
    h.session_id = sa;
    h.max_length = 0;
    shoal_peer_tensor any = {s1, 0, {0}, la};
    CHECK(shoal_peer_call(pa, &h, NULL, 0, &any, NULL, T_MS) == SHOAL_ERR_RANGE);
    h.max_length = 10;
    h.position = (uint32_t)la;
    CHECK(shoal_peer_call(pa, &h, NULL, 0, &any, NULL, T_MS) == SHOAL_ERR_RANGE);
    shoal_wire_header_init(&h, SHOAL_OP_TRAIN_PUSH, 0);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION;
    h.session_id = sa;
    h.step_id = 2;
    shoal_peer_tensor two = {s1, 2, {4, 8, 0}, 32};
    CHECK(shoal_peer_call(pa, &h, &two, SHOAL_CODEC_F32, NULL, NULL, T_MS) == SHOAL_ERR_FORMAT);
    shoal_peer_tensor tail = {s1, 1, {8, 0, 0}, 8};
    h.position = (uint32_t)la - 4; /* runs past the end */
    CHECK(shoal_peer_call(pa, &h, &tail, SHOAL_CODEC_F32, NULL, NULL, T_MS) == SHOAL_ERR_RANGE);
    h.position = UINT32_MAX;
    CHECK(shoal_peer_call(pa, &h, &tail, SHOAL_CODEC_F32, NULL, NULL, T_MS) == SHOAL_ERR_RANGE);
    shoal_wire_header_init(&h, SHOAL_OP_TRAIN_FORWARD, 0);
    h.has = SHOAL_WIRE_HAS_SESSION;
    h.session_id = sa;
    shoal_peer_tensor flat = {x, 1, {(uint32_t)hp.dim, 0, 0}, (size_t)hp.dim};
    CHECK(shoal_peer_call(pa, &h, &flat, SHOAL_CODEC_F32, &flat, NULL, T_MS) == SHOAL_ERR_FORMAT);
    shoal_peer_tensor narrow = {x, 2, {4, (uint32_t)hp.dim - 1, 0}, n};
    CHECK(shoal_peer_call(pa, &h, &narrow, SHOAL_CODEC_F32, &narrow, NULL, T_MS) ==
          SHOAL_ERR_FORMAT);
    shoal_wire_header_init(&h, SHOAL_OP_TRAIN_BACKWARD, 0);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP;
    h.session_id = sa;
    h.step_id = 0;
    shoal_peer_tensor one = {x, 2, {4, (uint32_t)hp.dim, 0}, n};
    CHECK(shoal_peer_call(pa, &h, &one, SHOAL_CODEC_F32, &one, NULL, T_MS) == SHOAL_ERR_NOTFOUND);
    shoal_wire_header_init(&h, SHOAL_OP_TRAIN_OPEN, 0);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_SPAN | SHOAL_WIRE_HAS_MAX_LENGTH |
            SHOAL_WIRE_HAS_LORA | SHOAL_WIRE_HAS_OPT;
    h.session_id = 0x6666;
    h.span_end = 2;
    h.max_length = 16;
    h.lora_rank = 4;
    h.lora_targets = 1u << 7; /* no such projection */
    CHECK(shoal_peer_call(pa, &h, NULL, 0, NULL, NULL, T_MS) == SHOAL_ERR_ARG);
    h.lora_targets = 1;
    h.lora_rank = 0;
    CHECK(shoal_peer_call(pa, &h, NULL, 0, NULL, NULL, T_MS) == SHOAL_ERR_ARG);
    h.lora_rank = UINT32_MAX;
    CHECK(shoal_peer_call(pa, &h, NULL, 0, NULL, NULL, T_MS) == SHOAL_ERR_ARG);
    h.lora_rank = 4;
    h.session_id = 0;
    CHECK(shoal_peer_call(pa, &h, NULL, 0, NULL, NULL, T_MS) == SHOAL_ERR_ARG);
    /* the session still works and still holds the state pulled above */
    CHECK(shoal_peer_train_pull(pa, sa, s2, la, &t1, 5000, T_MS) == 0 && t1 == 3 &&
          memcmp(s1, s2, la * 4) == 0);

    /* close */
    CHECK(shoal_peer_train_close(other, sa, T_MS) == SHOAL_ERR_SESSION);
    CHECK(shoal_peer_train_close(pa, sa, T_MS) == 0);
    CHECK(shoal_peer_train_close(pa, sa, T_MS) == SHOAL_ERR_SESSION);
    CHECK(shoal_peer_train_step(pa, sa, 4, NULL, T_MS) == SHOAL_ERR_SESSION);
    CHECK(shoal_peer_train_close(pa, sc, T_MS) == 0);
    CHECK(shoal_peer_train_close(pb, sb, T_MS) == 0);
    free(x);
    free(y);
    free(g1);
    free(g2);
    free(s1);
    free(s2);
    shoal_train_span_destroy(&local);
}

/* A node with a small budget: training sessions take from it, give back. */
static void test_budget_and_expiry(void)
{
    node_proc nc;
    const char *extra[] = {"--cache-tokens", "2000", "--session-timeout", "1", NULL};
    if (node_spawn(&nc, MODEL, "0:5", extra)) {
        CHECK_MSG(0, "cannot start the budget node");
        return;
    }
    shoal_peer *p = NULL;
    CHECK(shoal_peer_connect(nc.addr, NULL, &p) == 0);
    shoal_peer_train_params tp = wire_params(0, 5);
    /* per token of KV cache, 5 blocks x 2 x 32 floats = 1280 bytes; the
     * budget holds 2.4 MB. A large micro-batch does not fit. */
    tp.max_tokens = 512;
    CHECK(p && shoal_peer_train_open(p, 0x5555, &tp, T_MS) == SHOAL_ERR_BUSY);
    tp.max_tokens = 24;
    CHECK(p && shoal_peer_train_open(p, 0x5555, &tp, T_MS) == 0);
    int opened = 1;
    while (opened < 64 && shoal_peer_train_open(p, 0x5555 + (uint64_t)opened, &tp, T_MS) == 0)
        opened++;
    CHECK_MSG(opened > 1 && opened < 64, "%d sessions fit", opened);
    CHECK(shoal_peer_train_open(p, 0x9000, &tp, T_MS) == SHOAL_ERR_BUSY);
    CHECK(shoal_peer_train_close(p, 0x5555, T_MS) == 0);
    CHECK(shoal_peer_train_open(p, 0x9000, &tp, T_MS) == 0); /* its room came back */
    /* idle sessions expire (timeout 1 s, checked every second) */
    node_sleep_ms(2600);
    CHECK(shoal_peer_train_step(p, 0x9000, 1, NULL, T_MS) == SHOAL_ERR_SESSION);
    CHECK(shoal_peer_train_open(p, 0x5555, &tp, T_MS) == 0);
    shoal_peer_destroy(&p);
    CHECK(node_stop(&nc, SIGTERM, 10000) == 0);
}

/* x (n, dim) through local blocks [a, b) at position 0 with adapter ad
 * (NULL: none). */
static void local_infer(int a, int b, const shoal_adapter *ad, float *x, int n)
{
    shoal_model *m = NULL;
    shoal_model_open(g, a, b, 0, &m, NULL, 0);
    shoal_fwd *f = shoal_fwd_new(m, 64, 64, 1);
    shoal_kv *kv = shoal_kv_new(m, 64);
    shoal_fwd_lora *v = calloc((size_t)hp.n_layer * SHOAL_PROJ__COUNT, sizeof *v);
    for (int l = 0; ad && l < hp.n_layer; l++)
        for (int p = 0; p < SHOAL_PROJ__COUNT; p++) {
            const shoal_lora *q = shoal_adapter_lora(ad, l, p);
            if (q)
                v[l * SHOAL_PROJ__COUNT + p] = (shoal_fwd_lora){
                    shoal_lora_rank(q), shoal_lora_scale(q), shoal_lora_a_const(q),
                    shoal_lora_b_const(q)};
        }
    if (ad)
        shoal_fwd_set_lora(f, v, 0, hp.n_layer);
    shoal_fwd_blocks(f, kv, 0, n, x);
    free(v);
    shoal_kv_destroy(&kv);
    shoal_fwd_destroy(&f);
    shoal_model_destroy(&m);
}

static void test_adapters(void)
{
    /* an adapter with B != 0: a few steps on random gradients */
    shoal_train_span_params p = span_params();
    p.targets = (1u << SHOAL_PROJ_Q) | (1u << SHOAL_PROJ_V) | (1u << SHOAL_PROJ_DOWN);
    shoal_train_span *s = NULL;
    CHECK(shoal_train_span_new(w, 0, hp.n_layer, &p, &s) == 0);
    if (!s)
        return;
    const size_t n = (size_t)T * hp.dim;
    float *x = malloc(n * 4), *y = malloc(n * 4), *z = malloc(n * 4);
    for (int it = 0; it < 3; it++) {
        randn(x, n, 1.0f);
        randn(y, n, 0.05f);
        CHECK(shoal_train_span_forward(s, 1, 1, T, x) == 0 &&
              shoal_train_span_backward(s, 1, 1, T, y) == 0 && shoal_train_span_step(s, -1) == 0);
    }
    char path[128], arg[160], err[256];
    snprintf(path, sizeof path, "/tmp/shoal-test-%d-zib.gguf", (int)getpid());
    CHECK(shoal_adapter_save(shoal_train_span_adapter(s), path, err, sizeof err) == 0);
    snprintf(arg, sizeof arg, "zib=%s", path);
    node_proc nd;
    const char *extra[] = {"--adapter", arg, "--adapter", "plain.v1=" MODEL "", NULL};
    /* a model file is not an adapter: the node refuses to start */
    CHECK(node_spawn(&nd, MODEL, "0:5", extra) != 0);
    const char *bad_name[] = {"--adapter", "no/slash=x", NULL};
    CHECK(node_spawn(&nd, MODEL, "0:5", bad_name) != 0);
    const char *good[] = {"--adapter", arg, NULL};
    if (node_spawn(&nd, MODEL, "0:5", good)) {
        CHECK_MSG(0, "cannot start the adapter node");
        goto out;
    }
    shoal_peer *pr = NULL;
    CHECK(shoal_peer_connect(nd.addr, NULL, &pr) == 0);
    shoal_peer_info info;
    CHECK(pr && shoal_peer_get_info(pr, &info, T_MS) == 0 && strcmp(info.adapters, "zib") == 0);
    randn(x, n, 1.0f);
    CHECK(shoal_peer_session_open_adapter(pr, 0x71, 0, 5, 64, "zib", T_MS) == 0);
    CHECK(shoal_peer_session_open_adapter(pr, 0x72, 0, 5, 64, NULL, T_MS) == 0);
    CHECK(shoal_peer_session_open_adapter(pr, 0x73, 2, 5, 64, "zib", T_MS) == 0);
    CHECK(shoal_peer_session_open_adapter(pr, 0x74, 0, 5, 64, "nope", T_MS) == SHOAL_ERR_NOTFOUND);
    /* with: the local pass with the adapter; without: the plain one */
    memcpy(y, x, n * 4);
    memcpy(z, x, n * 4);
    CHECK(shoal_peer_session_step(pr, 0x71, 1, 0, y, T, hp.dim, SHOAL_CODEC_F32, T_MS) == 0);
    local_infer(0, 5, shoal_train_span_adapter(s), z, T);
    CHECK_MSG(memcmp(y, z, n * 4) == 0, "a session with the adapter differs from local --lora");
    memcpy(y, x, n * 4);
    memcpy(z, x, n * 4);
    CHECK(shoal_peer_session_step(pr, 0x72, 1, 0, y, T, hp.dim, SHOAL_CODEC_F32, T_MS) == 0);
    local_infer(0, 5, NULL, z, T);
    CHECK_MSG(memcmp(y, z, n * 4) == 0, "a session without an adapter differs from plain");
    float *plain = malloc(n * 4);
    memcpy(plain, z, n * 4);
    /* a sub-span with the adapter, after the plain session (no leftover) */
    memcpy(y, x, n * 4);
    memcpy(z, x, n * 4);
    CHECK(shoal_peer_session_step(pr, 0x73, 1, 0, y, T, hp.dim, SHOAL_CODEC_F32, T_MS) == 0);
    local_infer(2, 5, shoal_train_span_adapter(s), z, T);
    CHECK(memcmp(y, z, n * 4) == 0);
    /* and the stateless forward never applies one */
    memcpy(y, x, n * 4);
    CHECK(shoal_peer_forward(pr, 0, 5, y, T, hp.dim, SHOAL_CODEC_F32, T_MS) == 0 &&
          memcmp(y, plain, n * 4) == 0);
    free(plain);
    shoal_peer_destroy(&pr);
    CHECK(node_stop(&nd, SIGTERM, 10000) == 0);
out:
    unlink(path);
    free(x);
    free(y);
    free(z);
    shoal_train_span_destroy(&s);
}

int main(void)
{
    char err[256];
    if (shoal_gguf_open(MODEL, &g, err, sizeof err) || shoal_hparams_read(g, &hp, err, sizeof err) ||
        shoal_train_w_open(g, 0, hp.n_layer, 0, &w, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    node_proc na, nb;
    const char *extra[] = {"--workers", "2", "-t", "2", NULL};
    if (node_spawn(&na, MODEL, "0:2", extra) || node_spawn(&nb, MODEL, "2:5", extra)) {
        node_reap_all();
        fprintf(stderr, "cannot start the nodes\n");
        return 1;
    }
    shoal_peer *pa = NULL, *pb = NULL, *other = NULL;
    CHECK(shoal_peer_connect(na.addr, NULL, &pa) == 0);
    CHECK(shoal_peer_connect(nb.addr, NULL, &pb) == 0);
    CHECK(shoal_peer_connect(na.addr, NULL, &other) == 0);
    if (pa && pb && other)
        test_passes(pa, pb, other);
    shoal_peer_destroy(&pa);
    shoal_peer_destroy(&pb);
    shoal_peer_destroy(&other);
    CHECK(node_stop(&na, SIGTERM, 10000) == 0);
    CHECK(node_stop(&nb, SIGTERM, 10000) == 0);
    test_budget_and_expiry();
    test_adapters();
    node_reap_all();
    shoal_train_w_destroy(&w);
    shoal_gguf_close(&g);
    return check_done();
}
