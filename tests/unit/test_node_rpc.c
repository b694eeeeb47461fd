/*
 * The node daemon end to end: real `shoal serve` processes on loopback
 * (stories260K in spans 0:2 and 2:5) driven through swarm/peer.h, checked
 * against the local forward pass.
 *
 *   INFO        model name and hash (same on every span, equal to the local
 *               file's), span, block count, dim, free cache.
 *   FORWARD     0:2 then 2:5 equals the local 0:5 pass bit for bit (f32);
 *               a sub-span (3:5 of 2:5) too; f16/bf16/int8 stay close.
 *   sessions    prompt + decode steps across both nodes equal the local KV
 *               decode; rewind; a repeated step id returns the cached
 *               answer; positions past the length or past max_length,
 *               unknown sessions, another client's session, close.
 *   budget      a full cache makes an open wait, then BUSY; an open that
 *               waits gets through when space is freed meanwhile.
 *   concurrency four clients decode at once (two workers per node), each
 *               getting the local result.
 *   access      a client with the wrong server key and a plain (non-CURVE)
 *               DEALER get no answer; a client that never reads its replies
 *               does not slow the others.
 *   lifecycle   idle sessions expire; SIGTERM exits 0 promptly.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "proto/identity.h"
#include "proto/wire.h"
#include "swarm/model_id.h"
#include "swarm/peer.h"
#include "swarm/transport.h"
#include "test_node_spawn.h"

#define MODEL SHOAL_SHARED "/models/stories260K.gguf"
#define T_MS 20000 /* generous: sanitizer builds are slow */
#define NTOK 8

static shoal_gguf *g;
static int dim;
static const int32_t tokens[NTOK] = {1, 403, 35, 100, 7, 300, 22, 9};

/* x (n, dim) through local blocks [a, b) as one sequence at position 0. */
static void local_pass(int a, int b, float *x, int n)
{
    shoal_model *m = NULL;
    shoal_model_open(g, a, b, 0, &m, NULL, 0);
    shoal_fwd *f = shoal_fwd_new(m, 64, 64, 1);
    shoal_kv *kv = shoal_kv_new(m, 64);
    shoal_fwd_blocks(f, kv, 0, n, x);
    shoal_kv_destroy(&kv);
    shoal_fwd_destroy(&f);
    shoal_model_destroy(&m);
}

static void embed(float *x, const int32_t *tok, int n)
{
    shoal_model *m = NULL;
    shoal_model_open(g, 0, 0, SHOAL_PART_EMBED, &m, NULL, 0);
    shoal_fwd *f = shoal_fwd_new(m, 64, 64, 1);
    shoal_fwd_embed(f, tok, n, x);
    shoal_fwd_destroy(&f);
    shoal_model_destroy(&m);
}

static int same(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * 4); }

static float max_rel_err(const float *a, const float *ref, size_t n)
{
    float mx = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        mx = fabsf(ref[i]) > mx ? fabsf(ref[i]) : mx;
        e = fabsf(a[i] - ref[i]) > e ? fabsf(a[i] - ref[i]) : e;
    }
    return mx > 0 ? e / mx : e;
}

static void test_info(shoal_peer *pa, shoal_peer *pb)
{
    shoal_model_id local;
    CHECK(shoal_model_id_compute(g, &local) == 0);
    shoal_peer_info ia, ib;
    CHECK_MSG(shoal_peer_get_info(pa, &ia, T_MS) == 0, "%s", shoal_peer_last_error(pa));
    CHECK(shoal_peer_get_info(pb, &ib, T_MS) == 0);
    CHECK(ia.span_start == 0 && ia.span_end == 2);
    CHECK(ib.span_start == 2 && ib.span_end == 5);
    CHECK(ia.nblocks == 5 && ia.dim == 64 && ib.dim == 64);
    CHECK(!memcmp(ia.model_hash, local.hash, 32) && !memcmp(ib.model_hash, local.hash, 32));
    CHECK(!strcmp(ia.model, local.name) && !strcmp(ib.model, local.name));
    CHECK(ia.free_tokens == 4096 && ia.max_length == 4096);
    CHECK(ia.version == SHOAL_WIRE_VERSION && !strncmp(ia.software, "shoal ", 6));
    CHECK(ia.codecs == 0xf);
    CHECK(shoal_peer_ping(pa, T_MS) == 0);
}

static void test_forward(shoal_peer *pa, shoal_peer *pb)
{
    float ref[NTOK * 64], x[NTOK * 64], in[NTOK * 64];
    embed(in, tokens, NTOK);
    memcpy(ref, in, sizeof ref);
    local_pass(0, 5, ref, NTOK);

    memcpy(x, in, sizeof x);
    int rc = shoal_peer_forward(pa, 0, 2, x, NTOK, dim, SHOAL_CODEC_F32, T_MS);
    CHECK_MSG(rc == 0, "%s", shoal_peer_last_error(pa));
    CHECK(shoal_peer_forward(pb, 2, 5, x, NTOK, dim, SHOAL_CODEC_F32, T_MS) == 0);
    CHECK_MSG(same(x, ref, NTOK * 64), "0:2 + 2:5 differs from the local 0:5");

    /* a sub-span: local 0:3, then 3:5 on the node that serves 2:5 */
    memcpy(x, in, sizeof x);
    local_pass(0, 3, x, NTOK);
    CHECK(shoal_peer_forward(pb, 3, 5, x, NTOK, dim, SHOAL_CODEC_F32, T_MS) == 0);
    CHECK_MSG(same(x, ref, NTOK * 64), "sub-span 3:5 differs");

    /* lossy codecs stay close (a few ulps of the codec per hop) */
    const int codecs[] = {SHOAL_CODEC_F16, SHOAL_CODEC_BF16, SHOAL_CODEC_I8B64};
    const float tol[] = {0.01f, 0.05f, 0.05f};
    for (int c = 0; c < 3; c++) {
        memcpy(x, in, sizeof x);
        CHECK(shoal_peer_forward(pa, 0, 2, x, NTOK, dim, codecs[c], T_MS) == 0);
        CHECK(shoal_peer_forward(pb, 2, 5, x, NTOK, dim, codecs[c], T_MS) == 0);
        float e = max_rel_err(x, ref, NTOK * 64);
        CHECK_MSG(e < tol[c] && e > 0, "codec %d: max relative error %g", codecs[c], e);
    }

    /* refused requests */
    memcpy(x, in, sizeof x);
    CHECK(shoal_peer_forward(pa, 0, 3, x, NTOK, dim, SHOAL_CODEC_F32, T_MS) == SHOAL_ERR_RANGE);
    CHECK(strstr(shoal_peer_last_error(pa), "not inside") != NULL);
    CHECK(shoal_peer_forward(pa, 1, 1, x, NTOK, dim, SHOAL_CODEC_F32, T_MS) == SHOAL_ERR_RANGE);
    CHECK(shoal_peer_forward(pa, 0, 2, x, NTOK, 32, SHOAL_CODEC_F32, T_MS) == SHOAL_ERR_FORMAT);
    static float big[600 * 64];
    CHECK(shoal_peer_forward(pa, 0, 2, big, 600, dim, SHOAL_CODEC_F32, T_MS) == SHOAL_ERR_RANGE);
}

/* Decode through both nodes with sessions; compare with the local KV pass. */
static void test_sessions(shoal_peer *pa, shoal_peer *pb, shoal_peer *other)
{
    const int P = 5; /* prompt tokens, then NTOK - P single steps */
    float in[NTOK * 64], ref[NTOK * 64], x[NTOK * 64];
    embed(in, tokens, NTOK);
    shoal_model *m = NULL;
    shoal_model_open(g, 0, 5, 0, &m, NULL, 0);
    shoal_fwd *f = shoal_fwd_new(m, 64, 64, 1);
    shoal_kv *kv = shoal_kv_new(m, 64);
    memcpy(ref, in, sizeof ref);
    shoal_fwd_blocks(f, kv, 0, P, ref);
    for (int t = P; t < NTOK; t++)
        shoal_fwd_blocks(f, kv, t, 1, ref + t * 64);

    const uint64_t sid = 0x1234567890abcdefULL;
    CHECK(shoal_peer_session_open(pa, sid, 0, 2, 16, T_MS) == 0);
    CHECK(shoal_peer_session_open(pb, sid, 2, 5, 16, T_MS) == 0);
    shoal_peer_info info;
    CHECK(shoal_peer_get_info(pa, &info, T_MS) == 0 && info.free_tokens == 4096 - 16);
    memcpy(x, in, sizeof x);
    uint64_t step = 1;
    CHECK(shoal_peer_session_step(pa, sid, step, 0, x, P, dim, SHOAL_CODEC_F32, T_MS) == 0);
    CHECK(shoal_peer_session_step(pb, sid, step, 0, x, P, dim, SHOAL_CODEC_F32, T_MS) == 0);
    for (int t = P; t < NTOK; t++) {
        step++;
        CHECK(shoal_peer_session_step(pa, sid, step, t, x + t * 64, 1, dim, 0, T_MS) == 0);
        CHECK(shoal_peer_session_step(pb, sid, step, t, x + t * 64, 1, dim, 0, T_MS) == 0);
    }
    CHECK_MSG(same(x, ref, NTOK * 64), "session decode differs from the local pass");

    /* a repeated step id at the same position returns the cached answer:
     * give it other input, and the answer must still be the first one */
    float y[64];
    for (int i = 0; i < 64; i++)
        y[i] = 0.5f;
    CHECK(shoal_peer_session_step(pa, sid, step, NTOK - 1, y, 1, dim, 0, T_MS) == 0);
    float z[NTOK * 64]; /* node A's outputs for every position */
    memcpy(z, in, sizeof z);
    local_pass(0, 2, z, NTOK);
    CHECK_MSG(same(y, z + (NTOK - 1) * 64, 64), "a repeated step was applied again");

    /* rewind: replay positions 3.. and get the same outputs */
    float r[3 * 64];
    memcpy(r, in + 3 * 64, sizeof r);
    CHECK(shoal_peer_session_step(pa, sid, 100, 3, r, 3, dim, 0, T_MS) == 0);
    CHECK_MSG(same(r, z + 3 * 64, 3 * 64), "rewind to 3 differs");

    /* now the session holds 6 positions: 7 is past its length */
    memcpy(r, in, 64 * 4);
    CHECK(shoal_peer_session_step(pa, sid, 101, 7, r, 1, dim, 0, T_MS) == SHOAL_ERR_RANGE);
    CHECK(strstr(shoal_peer_last_error(pa), "past the session's length") != NULL);
    /* 6 + 11 > max_length 16 */
    static float many[11 * 64];
    for (int i = 0; i < 11 * 64; i++)
        many[i] = 0.1f;
    CHECK(shoal_peer_session_step(pa, sid, 102, 6, many, 11, dim, 0, T_MS) == SHOAL_ERR_RANGE);
    CHECK(shoal_peer_session_step(pa, sid, 103, 6, many, 10, dim, 0, T_MS) == 0);
    /* the same id from another client (another CURVE key) is unknown */
    memcpy(r, in, 64 * 4);
    CHECK(shoal_peer_session_step(other, sid, 104, 0, r, 1, dim, 0, T_MS) == SHOAL_ERR_SESSION);
    CHECK(shoal_peer_session_close(other, sid, T_MS) == SHOAL_ERR_SESSION);
    CHECK(shoal_peer_session_open(other, sid, 0, 2, 16, T_MS) == SHOAL_ERR_ARG);
    /* an open retried with the same parameters succeeds */
    CHECK(shoal_peer_session_open(pa, sid, 0, 2, 16, T_MS) == 0);
    /* unknown sessions */
    CHECK(shoal_peer_session_step(pa, 77, 1, 0, r, 1, dim, 0, T_MS) == SHOAL_ERR_SESSION);
    CHECK(shoal_peer_session_close(pa, 77, T_MS) == SHOAL_ERR_SESSION);
    /* close; then the session is gone */
    CHECK(shoal_peer_session_close(pa, sid, T_MS) == 0);
    CHECK(shoal_peer_session_close(pb, sid, T_MS) == 0);
    CHECK(shoal_peer_session_step(pa, sid, 105, 0, r, 1, dim, 0, T_MS) == SHOAL_ERR_SESSION);
    CHECK(shoal_peer_get_info(pa, &info, T_MS) == 0 && info.free_tokens == 4096);
    /* opens the node refuses outright */
    CHECK(shoal_peer_session_open(pa, 5, 0, 2, 5000, T_MS) == SHOAL_ERR_RANGE);
    CHECK(shoal_peer_session_open(pa, 5, 1, 3, 16, T_MS) == SHOAL_ERR_RANGE);
    CHECK(shoal_peer_session_open(pa, 0, 0, 2, 16, T_MS) == SHOAL_ERR_ARG);
    /* a sub-span session */
    CHECK(shoal_peer_session_open(pb, 6, 3, 5, 16, T_MS) == 0);
    memcpy(r, in, sizeof r);
    local_pass(0, 3, r, 3);
    float rr[3 * 64];
    memcpy(rr, in, sizeof rr);
    local_pass(0, 5, rr, 3);
    CHECK(shoal_peer_session_step(pb, 6, 1, 0, r, 3, dim, 0, T_MS) == 0);
    CHECK_MSG(same(r, rr, 3 * 64), "sub-span session differs");
    CHECK(shoal_peer_session_close(pb, 6, T_MS) == 0);

    shoal_kv_destroy(&kv);
    shoal_fwd_destroy(&f);
    shoal_model_destroy(&m);
}

/* Four clients decode at once through both nodes (two workers each). */
typedef struct client_arg {
    const char *a, *b;
    uint64_t sid;
    const float *in, *ref;
    int ok;
} client_arg;

static void *client_main(void *p)
{
    client_arg *c = p;
    shoal_peer *pa = NULL, *pb = NULL;
    float x[NTOK * 64];
    memcpy(x, c->in, sizeof x);
    c->ok = shoal_peer_connect(c->a, NULL, &pa) == 0 && shoal_peer_connect(c->b, NULL, &pb) == 0 &&
            shoal_peer_session_open(pa, c->sid, 0, 2, NTOK, T_MS) == 0 &&
            shoal_peer_session_open(pb, c->sid, 2, 5, NTOK, T_MS) == 0;
    for (int round = 0; c->ok && round < 3; round++) /* rewinds to 0 each round */
        for (int t = 0; c->ok && t < NTOK; t++) {
            memcpy(x + t * 64, c->in + t * 64, 64 * sizeof(float));
            uint64_t step = (uint64_t)round * 100 + (uint64_t)t + 1;
            c->ok = shoal_peer_session_step(pa, c->sid, step, t, x + t * 64, 1, 64, 0, T_MS) == 0 &&
                    shoal_peer_session_step(pb, c->sid, step, t, x + t * 64, 1, 64, 0, T_MS) == 0 &&
                    same(x + t * 64, c->ref + t * 64, 64);
        }
    if (c->ok)
        c->ok = shoal_peer_session_close(pa, c->sid, T_MS) == 0 &&
                shoal_peer_session_close(pb, c->sid, T_MS) == 0;
    shoal_peer_destroy(&pa);
    shoal_peer_destroy(&pb);
    return NULL;
}

static void test_concurrent(const char *a, const char *b)
{
    float in[NTOK * 64], ref[NTOK * 64];
    embed(in, tokens, NTOK);
    memcpy(ref, in, sizeof ref);
    local_pass(0, 5, ref, NTOK);
    client_arg c[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (client_arg){a, b, 500 + (uint64_t)i, in, ref, 0};
        pthread_create(&th[i], NULL, client_main, &c[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_MSG(c[i].ok, "concurrent client %d", i);
    }
}

typedef struct closer_arg {
    const char *addr;
    uint64_t sid;
    int delay_ms, rc;
} closer_arg;

static void *closer(void *p)
{
    closer_arg *c = p;
    /* the session belongs to the main thread's peer: close through it is
     * not possible from here, so this thread owns its own session */
    shoal_peer *q = NULL;
    c->rc = shoal_peer_connect(c->addr, NULL, &q);
    if (c->rc)
        return NULL;
    c->rc = shoal_peer_session_open(q, c->sid, 0, 5, 48, T_MS);
    if (c->rc == 0) {
        node_sleep_ms(c->delay_ms);
        c->rc = shoal_peer_session_close(q, c->sid, T_MS);
    }
    shoal_peer_destroy(&q);
    return NULL;
}

static void test_budget(void)
{
    node_proc n;
    const char *extra[] = {"--cache-tokens", "64", "--busy-wait", "400", NULL};
    if (node_spawn(&n, MODEL, "0:5", extra)) {
        CHECK(0);
        return;
    }
    shoal_peer *p = NULL;
    CHECK(shoal_peer_connect(n.addr, NULL, &p) == 0);
    CHECK(shoal_peer_session_open(p, 1, 0, 5, 100, T_MS) == SHOAL_ERR_RANGE);
    CHECK(shoal_peer_session_open(p, 1, 0, 5, 60, T_MS) == 0);
    double t0 = node_now_ms();
    CHECK(shoal_peer_session_open(p, 2, 0, 5, 10, T_MS) == SHOAL_ERR_BUSY);
    double waited = node_now_ms() - t0;
    CHECK_MSG(waited >= 350 && waited < 5000, "waited %.0f ms", waited);
    CHECK(strstr(shoal_peer_last_error(p), "cache full") != NULL);
    CHECK(shoal_peer_session_close(p, 1, T_MS) == 0);
    CHECK(shoal_peer_session_open(p, 2, 0, 5, 10, T_MS) == 0);
    CHECK(shoal_peer_session_close(p, 2, T_MS) == 0);

    /* another client holds 48 of 64 tokens and frees them after 150 ms:
     * an open of 32 waits for it and gets through */
    closer_arg c = {n.addr, 9, 150, -1};
    pthread_t th;
    pthread_create(&th, NULL, closer, &c);
    shoal_peer_info info;
    double until = node_now_ms() + T_MS;
    do { /* wait until the other client's session is open */
        CHECK(shoal_peer_get_info(p, &info, T_MS) == 0);
    } while (info.free_tokens == 64 && node_now_ms() < until);
    CHECK(shoal_peer_session_open(p, 3, 0, 5, 32, T_MS) == 0);
    pthread_join(th, NULL);
    CHECK(c.rc == 0);
    shoal_peer_destroy(&p);
    CHECK(node_stop(&n, SIGTERM, 10000) == 0);
}

static void test_access(const char *addr, shoal_peer *good)
{
    /* the right host and port, but another node's key */
    shoal_identity *other = NULL;
    shoal_identity_generate(&other);
    shoal_addr a;
    CHECK(shoal_addr_parse(&a, addr) == 0);
    memcpy(a.pubkey, shoal_identity_public_key(other), 32);
    char wrong[SHOAL_ADDR_MAX];
    shoal_addr_format(&a, wrong, sizeof wrong);
    shoal_peer *p = NULL;
    CHECK(shoal_peer_connect(wrong, NULL, &p) == 0);
    shoal_peer_info info;
    CHECK(shoal_peer_get_info(p, &info, 700) == SHOAL_ERR_TIMEOUT);
    shoal_peer_destroy(&p);
    shoal_identity_destroy(&other);

    /* a plain DEALER with no CURVE at all */
    void *ctx = shoal_transport_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    char ep[SHOAL_ADDR_MAX + 16];
    shoal_addr_endpoint(&a, ep, sizeof ep);
    CHECK(zmq_connect(s, ep) == 0);
    shoal_wire_header h;
    shoal_wire_header_init(&h, SHOAL_OP_INFO, 42);
    uint8_t buf[256];
    size_t len;
    CHECK(shoal_wire_encode(&h, buf, sizeof buf, &len) == 0);
    zmq_send(s, buf, len, ZMQ_DONTWAIT);
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    CHECK(zmq_poll(&it, 1, 700) == 0);

    /* a client that floods requests and never reads the replies does not
     * hold up a good client */
    void *flood = NULL;
    CHECK(shoal_transport_client_open(ctx, &(shoal_addr){0}, 1 << 20, &flood) != 0);
    shoal_addr real;
    shoal_addr_parse(&real, addr);
    CHECK(shoal_transport_client_open(ctx, &real, 1 << 20, &flood) == 0);
    for (int i = 0; i < 200; i++) {
        shoal_wire_header_init(&h, SHOAL_OP_INFO, (uint64_t)i + 1);
        shoal_wire_encode(&h, buf, sizeof buf, &len);
        zmq_send(flood, buf, len, ZMQ_DONTWAIT);
    }
    double t0 = node_now_ms();
    CHECK(shoal_peer_get_info(good, &info, T_MS) == 0);
    CHECK_MSG(node_now_ms() - t0 < 2000, "a flooding client delayed others");
    shoal_transport_close(&flood);
    shoal_transport_close(&s);
    zmq_ctx_term(ctx);
}

static void test_expiry(void)
{
    node_proc n;
    const char *extra[] = {"--session-timeout", "1", NULL};
    if (node_spawn(&n, MODEL, "0:5", extra)) {
        CHECK(0);
        return;
    }
    shoal_peer *p = NULL;
    CHECK(shoal_peer_connect(n.addr, NULL, &p) == 0);
    CHECK(shoal_peer_session_open(p, 11, 0, 5, 8, T_MS) == 0);
    node_sleep_ms(2600);
    float x[64] = {0};
    x[0] = 1;
    CHECK(shoal_peer_session_step(p, 11, 1, 0, x, 1, dim, 0, T_MS) == SHOAL_ERR_SESSION);
    shoal_peer_destroy(&p);
    double t0 = node_now_ms();
    int st = node_stop(&n, SIGINT, 10000);
    CHECK_MSG(st == 0, "SIGINT: wait status %d", st);
    CHECK(node_now_ms() - t0 < 3000);
}

int main(void)
{
    char err[256];
    if (shoal_gguf_open(MODEL, &g, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    shoal_hparams hp;
    shoal_hparams_read(g, &hp, NULL, 0);
    dim = hp.dim;
    node_proc na, nb;
    const char *extra[] = {"--cache-tokens", "4096", "-t", "2", "--workers", "2", NULL};
    if (node_spawn(&na, MODEL, "0:2", extra) || node_spawn(&nb, MODEL, "2:5", extra)) {
        node_reap_all();
        fprintf(stderr, "cannot start the nodes\n");
        return 1;
    }
    CHECK(strncmp(na.addr, "shoal://127.0.0.1:", 18) == 0);
    shoal_peer *pa = NULL, *pb = NULL, *other = NULL;
    CHECK(shoal_peer_connect(na.addr, NULL, &pa) == 0);
    CHECK(shoal_peer_connect(nb.addr, NULL, &pb) == 0);
    CHECK(shoal_peer_connect(na.addr, NULL, &other) == 0);
    if (pa && pb && other) {
        test_info(pa, pb);
        test_forward(pa, pb);
        test_sessions(pa, pb, other);
        test_access(na.addr, pa);
        test_concurrent(na.addr, nb.addr);
    }
    shoal_peer_destroy(&pa);
    shoal_peer_destroy(&pb);
    shoal_peer_destroy(&other);
    double t0 = node_now_ms();
    int st = node_stop(&na, SIGTERM, 10000);
    CHECK_MSG(st == 0, "SIGTERM: wait status %d", st);
    CHECK_MSG(node_now_ms() - t0 < 3000, "SIGTERM took %.0f ms", node_now_ms() - t0);
    CHECK(node_stop(&nb, SIGTERM, 10000) == 0);
    test_budget();
    test_expiry();
    node_reap_all();
    shoal_gguf_close(&g);
    return check_done();
}
