/*
 * The node's half of forwarding and graceful leave, on real `shoal serve`
 * processes (stories260K, spans 0:2 and 2:5) driven through client/link.h
 * with hand-made headers:
 *
 *   push      a step to 0:2 with a route to 2:5 gets two answers on the
 *             client's two links: 0:2's under the request id, 2:5's under
 *             the id plus one, both equal to the local pass; a repeated
 *             step (same id and position) is answered from cache on both
 *             nodes and the output is the same.
 *   refused   a push bearing the wrong token, into an unknown session, into
 *             a session opened without a token, or to an address that is
 *             not one, is refused, and the error reaches the client as an
 *             ERROR under the push's id on its link to the pushing node.
 *   bounded   a client naming 40 different (dead) next hops in a row gets
 *             most of them refused: a node opens new outgoing links from
 *             a token bucket (node/push.h), so a client cannot make it
 *             connect to any number of hosts; the step itself still runs.
 *   leave     after SIGTERM a node with an open session says OFFLINE in
 *             INFO, refuses new sessions ("node is leaving"), still runs
 *             steps and flags their replies LEAVING, and exits 0 as soon
 *             as the session is closed; a node without sessions exits at
 *             once.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "../check.h"
#include "client/link.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "node/push.h"
#include "proto/addr.h"
#include "proto/codec.h"
#include "proto/wire.h"
#include "swarm/transport.h"
#include "test_node_spawn.h"

#define MODEL SHOAL_SHARED "/models/stories260K.gguf"
#define T_MS 20000
#define NTOK 4

static shoal_gguf *g;
static int dim;
static void *zctx;
static uint64_t next_id = 1000;

/* x (n, dim) through local blocks [a, b) at positions 0..n-1. */
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

static void embed(float *x, int n)
{
    shoal_model *m = NULL;
    shoal_model_open(g, 0, 0, SHOAL_PART_EMBED, &m, NULL, 0);
    shoal_fwd *f = shoal_fwd_new(m, 64, 64, 1);
    int32_t toks[NTOK] = {1, 403, 35, 100};
    shoal_fwd_embed(f, toks, n, x);
    shoal_fwd_destroy(&f);
    shoal_model_destroy(&m);
}

/* The next message on l (PING replies skipped) within ms; its header in
 * *h, its frames in *m (closed by the caller). 0 or SHOAL_ERR_TIMEOUT. */
static int recv_on(shoal_link *l, int ms, shoal_wire_header *h, shoal_transport_msg *m)
{
    double end = shoal_link_now() + ms;
    for (;;) {
        int rc = shoal_link_service(l, shoal_link_now(), m, h);
        if (rc == 0)
            return 0;
        double left = end - shoal_link_now();
        if (left <= 0)
            return SHOAL_ERR_TIMEOUT;
        zmq_pollitem_t it[2];
        shoal_link_poll_items(l, it);
        zmq_poll(it, 2, (long)left + 1);
    }
}

/* Send h (with tensor x when given) on l and take the reply with h's id;
 * the reply's op (or 0 when none came), its error code in *err. */
static int call(shoal_link *l, shoal_wire_header *h, const float *x, int n, float *out,
                uint32_t *err, uint16_t *flags)
{
    h->request_id = ++next_id;
    if (shoal_link_send(l, h, x, (uint32_t)n, (uint32_t)dim, SHOAL_CODEC_F32))
        return 0;
    for (;;) {
        shoal_wire_header r;
        shoal_transport_msg m;
        if (recv_on(l, T_MS, &r, &m))
            return 0;
        if (r.request_id != h->request_id) {
            shoal_transport_msg_close(&m);
            continue;
        }
        if (err)
            *err = r.op == SHOAL_OP_ERROR ? r.error : 0;
        if (flags)
            *flags = r.flags;
        if (out && r.op != SHOAL_OP_ERROR &&
            shoal_link_take_tensor(&r, &m, 1, out, (uint32_t)n, (uint32_t)dim))
            r.op = 0;
        shoal_transport_msg_close(&m);
        return r.op;
    }
}

static int open_session(shoal_link *l, uint64_t sid, int a, int b, uint64_t ptok)
{
    shoal_wire_header h;
    shoal_wire_header_init(&h, SHOAL_OP_SESSION_OPEN, 1);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_SPAN | SHOAL_WIRE_HAS_MAX_LENGTH;
    h.session_id = sid;
    h.span_start = (uint32_t)a;
    h.span_end = (uint32_t)b;
    h.max_length = 64;
    if (ptok) {
        h.has |= SHOAL_WIRE_HAS_PUSH_TOKEN;
        h.push_token = ptok;
    }
    uint32_t err = 0;
    int op = call(l, &h, NULL, 0, NULL, &err, NULL);
    return op == SHOAL_OP_SESSION_OPEN ? 0 : err ? (int)err : -1;
}

static void step_header(shoal_wire_header *h, uint64_t sid, uint64_t step, uint32_t pos)
{
    shoal_wire_header_init(h, SHOAL_OP_SESSION_STEP, 1);
    h->has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION;
    h->session_id = sid;
    h->step_id = step;
    h->position = pos;
}

static void set_route(shoal_wire_header *h, const char *addr, uint64_t sid, uint64_t tok)
{
    h->has |= SHOAL_WIRE_HAS_ROUTE;
    h->nroute = 1;
    h->route[0] = (shoal_wire_hop){{(const uint8_t *)addr, (uint32_t)strlen(addr)}, sid, tok};
}

/* Send a step with a route on l1 and collect the answers: l1's (id R) and
 * l2's (id R + 1), or the relayed error (id R + 1 on l1). */
static void pushed_step(shoal_link *l1, shoal_link *l2, shoal_wire_header *h, const float *x,
                        float *out1, float *out2, int *got1, int *got2, uint32_t *relayed)
{
    *got1 = *got2 = 0;
    *relayed = 0;
    h->request_id = ++next_id;
    next_id++; /* R + 1 is the pushed one */
    if (shoal_link_send(l1, h, x, NTOK, (uint32_t)dim, SHOAL_CODEC_F32))
        return;
    double end = shoal_link_now() + 3000;
    while (shoal_link_now() < end && !(*got1 && (*got2 || *relayed))) {
        shoal_link *ls[2] = {l1, l2};
        zmq_pollitem_t it[4];
        shoal_link_poll_items(l1, it);
        shoal_link_poll_items(l2, it + 2);
        zmq_poll(it, 4, 50);
        for (int k = 0; k < 2; k++) {
            shoal_wire_header r;
            shoal_transport_msg m;
            while (shoal_link_service(ls[k], shoal_link_now(), &m, &r) == 0) {
                if (k == 0 && r.request_id == h->request_id && r.op == SHOAL_OP_SESSION_STEP)
                    *got1 = shoal_link_take_tensor(&r, &m, 1, out1, NTOK, (uint32_t)dim) == 0;
                else if (k == 0 && r.request_id == h->request_id + 1 && r.op == SHOAL_OP_ERROR)
                    *relayed = r.error;
                else if (k == 1 && r.request_id == h->request_id + 1 &&
                         r.op == SHOAL_OP_SESSION_STEP && r.step_id == h->step_id)
                    *got2 = shoal_link_take_tensor(&r, &m, 1, out2, NTOK, (uint32_t)dim) == 0;
                shoal_transport_msg_close(&m);
            }
        }
    }
}

static void test_push(const node_proc *na, const node_proc *nb)
{
    shoal_link *l1 = NULL, *l2 = NULL;
    CHECK(shoal_link_open(zctx, na->addr, &l1) == 0);
    CHECK(shoal_link_open(zctx, nb->addr, &l2) == 0);
    if (!l1 || !l2)
        goto out;
    float x[NTOK * 64], want1[NTOK * 64], want2[NTOK * 64], o1[NTOK * 64], o2[NTOK * 64];
    embed(x, NTOK);
    memcpy(want1, x, sizeof x);
    local_pass(0, 2, want1, NTOK);
    memcpy(want2, want1, sizeof x);
    local_pass(2, 5, want2, NTOK);

    CHECK(open_session(l1, 11, 0, 2, 0x1111) == 0);
    CHECK(open_session(l2, 12, 2, 5, 0x2222) == 0);
    shoal_wire_header h;
    int got1, got2;
    uint32_t relayed;
    step_header(&h, 11, 1, 0);
    set_route(&h, nb->addr, 12, 0x2222);
    pushed_step(l1, l2, &h, x, o1, o2, &got1, &got2, &relayed);
    CHECK(got1 && got2 && relayed == 0);
    CHECK(memcmp(o1, want1, sizeof o1) == 0);
    CHECK(memcmp(o2, want2, sizeof o2) == 0);
    /* the same step again: both answer from cache, the same bits */
    memset(o1, 0, sizeof o1);
    memset(o2, 0, sizeof o2);
    pushed_step(l1, l2, &h, x, o1, o2, &got1, &got2, &relayed);
    CHECK(got1 && got2 && memcmp(o2, want2, sizeof o2) == 0);

    /* refused pushes: the error comes back through the first node */
    step_header(&h, 11, 2, 0);
    set_route(&h, nb->addr, 12, 0x2223); /* wrong token */
    pushed_step(l1, l2, &h, x, o1, o2, &got1, &got2, &relayed);
    CHECK(got1 && !got2);
    CHECK_MSG(relayed == SHOAL_ERR_AUTH, "relayed %u", relayed);
    step_header(&h, 11, 3, 0);
    set_route(&h, nb->addr, 999, 0x2222); /* no such session */
    pushed_step(l1, l2, &h, x, o1, o2, &got1, &got2, &relayed);
    CHECK(got1 && !got2 && relayed == SHOAL_ERR_SESSION);
    CHECK(open_session(l2, 13, 2, 5, 0) == 0); /* a session that takes no pushes */
    step_header(&h, 11, 4, 0);
    set_route(&h, nb->addr, 13, 0);
    pushed_step(l1, l2, &h, x, o1, o2, &got1, &got2, &relayed);
    CHECK(got1 && !got2 && relayed == SHOAL_ERR_AUTH);
    step_header(&h, 11, 5, 0);
    set_route(&h, "not an address", 12, 0x2222);
    pushed_step(l1, l2, &h, x, o1, o2, &got1, &got2, &relayed);
    CHECK(got1 && !got2 && relayed == SHOAL_ERR_IO);
    /* and the session the refused pushes were aimed at is intact */
    step_header(&h, 11, 6, 0);
    set_route(&h, nb->addr, 12, 0x2222);
    pushed_step(l1, l2, &h, x, o1, o2, &got1, &got2, &relayed);
    CHECK(got1 && got2 && memcmp(o2, want2, sizeof o2) == 0);
    /* a push from a stranger straight to the node: refused to its face */
    shoal_wire_header p;
    shoal_wire_header_init(&p, SHOAL_OP_SESSION_PUSH, 1);
    p.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION |
            SHOAL_WIRE_HAS_PUSH_TOKEN;
    p.session_id = 12;
    p.step_id = 99;
    p.push_token = 1;
    shoal_link *stranger = NULL;
    CHECK(shoal_link_open(zctx, nb->addr, &stranger) == 0);
    uint32_t err = 0;
    CHECK(stranger && call(stranger, &p, want1, NTOK, NULL, &err, NULL) == SHOAL_OP_ERROR &&
          err == SHOAL_ERR_AUTH);
    shoal_link_destroy(&stranger);
out:
    shoal_link_destroy(&l1);
    shoal_link_destroy(&l2);
}

/* Steps on na with routes to n different addresses nobody listens on. */
static void test_push_bound(const node_proc *na)
{
    enum { N = 40 };
    shoal_link *l1 = NULL;
    CHECK(shoal_link_open(zctx, na->addr, &l1) == 0);
    if (!l1)
        return;
    float x[NTOK * 64];
    embed(x, NTOK);
    CHECK(open_session(l1, 21, 0, 2, 0x2121) == 0);
    uint64_t first = next_id + 1;
    char addrs[N][SHOAL_ADDR_MAX];
    for (int i = 0; i < N; i++) {
        uint8_t sk[crypto_sign_SECRETKEYBYTES];
        shoal_addr a;
        memset(&a, 0, sizeof a);
        crypto_sign_keypair(a.pubkey, sk); /* a real key: the link is opened */
        snprintf(a.host, sizeof a.host, "127.0.0.1");
        a.port = 9; /* discard: closed on loopback */
        CHECK(shoal_addr_format(&a, addrs[i], sizeof addrs[i]) == 0);
        shoal_wire_header h;
        step_header(&h, 21, 100 + (uint64_t)i, 0);
        set_route(&h, addrs[i], 1, 1);
        h.request_id = ++next_id;
        next_id++;
        CHECK(shoal_link_send(l1, &h, x, NTOK, (uint32_t)dim, SHOAL_CODEC_F32) == 0);
    }
    int answered = 0, refused = 0;
    double end = shoal_link_now() + 5000;
    while (shoal_link_now() < end && answered < N) {
        zmq_pollitem_t it[2];
        shoal_link_poll_items(l1, it);
        zmq_poll(it, 2, 50);
        shoal_wire_header r;
        shoal_transport_msg m;
        while (shoal_link_service(l1, shoal_link_now(), &m, &r) == 0) {
            if (r.request_id >= first && r.op == SHOAL_OP_SESSION_STEP)
                answered++;
            else if (r.request_id >= first && r.op == SHOAL_OP_ERROR && r.error == SHOAL_ERR_IO)
                refused++;
            shoal_transport_msg_close(&m);
        }
    }
    /* wait a little more for the last relays */
    end = shoal_link_now() + 500;
    while (shoal_link_now() < end) {
        zmq_pollitem_t it[2];
        shoal_link_poll_items(l1, it);
        zmq_poll(it, 2, 50);
        shoal_wire_header r;
        shoal_transport_msg m;
        while (shoal_link_service(l1, shoal_link_now(), &m, &r) == 0) {
            if (r.request_id >= first && r.op == SHOAL_OP_ERROR && r.error == SHOAL_ERR_IO)
                refused++;
            shoal_transport_msg_close(&m);
        }
    }
    printf("bounded pushes: %d of %d steps answered, %d next hops refused (burst %d)\n",
           answered, N, refused, NODE_PUSH_NEW_BURST);
    CHECK(answered == N); /* the steps themselves run */
    /* at most the burst (plus a token or two refilled meanwhile) were opened */
    CHECK_MSG(refused >= N - NODE_PUSH_NEW_BURST - 2, "only %d refused", refused);
    CHECK_MSG(refused <= N - 8, "%d refused: the first links should open", refused);
    shoal_link_destroy(&l1);
}

static void test_leave(void)
{
    const char *extra[] = {"--grace", "30", NULL};
    node_proc nl;
    if (node_spawn(&nl, MODEL, "2:5", extra)) {
        CHECK(0);
        return;
    }
    shoal_link *l = NULL;
    CHECK(shoal_link_open(zctx, nl.addr, &l) == 0);
    if (!l)
        return;
    CHECK(open_session(l, 21, 2, 5, 0) == 0);
    kill(nl.pid, SIGTERM);
    node_sleep_ms(300);
    shoal_wire_header h;
    shoal_wire_header_init(&h, SHOAL_OP_INFO, 1);
    h.request_id = ++next_id;
    shoal_wire_header r;
    shoal_transport_msg m;
    int info_ok = 0;
    if (shoal_link_send(l, &h, NULL, 0, 0, 0) == 0) {
        while (recv_on(l, T_MS, &r, &m) == 0) {
            int mine = r.request_id == h.request_id;
            if (mine)
                info_ok = r.op == SHOAL_OP_INFO && (r.has & SHOAL_WIRE_HAS_STATE) &&
                          r.state == SHOAL_WIRE_STATE_OFFLINE &&
                          (r.flags & SHOAL_WIRE_FLAG_LEAVING);
            shoal_transport_msg_close(&m);
            if (mine)
                break;
        }
    }
    CHECK(info_ok);
    CHECK(open_session(l, 22, 2, 5, 0) == SHOAL_ERR_BUSY);
    float x[NTOK * 64], want[NTOK * 64], out[NTOK * 64];
    embed(x, NTOK);
    memcpy(want, x, sizeof x);
    local_pass(2, 5, want, NTOK);
    step_header(&h, 21, 1, 0);
    uint16_t flags = 0;
    uint32_t err = 0;
    CHECK(call(l, &h, x, NTOK, out, &err, &flags) == SHOAL_OP_SESSION_STEP);
    CHECK((flags & SHOAL_WIRE_FLAG_LEAVING) && memcmp(out, want, sizeof out) == 0);
    /* the session goes: the node leaves at once, well before its grace */
    shoal_wire_header_init(&h, SHOAL_OP_SESSION_CLOSE, 1);
    h.has = SHOAL_WIRE_HAS_SESSION;
    h.session_id = 21;
    double t0 = node_now_ms();
    CHECK(call(l, &h, NULL, 0, NULL, &err, NULL) == SHOAL_OP_SESSION_CLOSE);
    int st = node_stop(&nl, 0, 5000); /* signal 0: just wait */
    CHECK_MSG(st == 0, "leaving node: wait status %d", st);
    CHECK_MSG(node_now_ms() - t0 < 3000, "left %.0f ms after the close", node_now_ms() - t0);
    shoal_link_destroy(&l);

    /* without sessions SIGTERM stops at once */
    node_proc ne;
    if (node_spawn(&ne, MODEL, "0:2", extra) == 0) {
        t0 = node_now_ms();
        CHECK(node_stop(&ne, SIGTERM, 10000) == 0);
        CHECK(node_now_ms() - t0 < 3000);
    }
}

int main(void)
{
    char err[256];
    if (sodium_init() < 0 || shoal_gguf_open(MODEL, &g, err, sizeof err)) {
        fprintf(stderr, "cannot start: %s\n", err);
        return 1;
    }
    shoal_hparams hp;
    shoal_hparams_read(g, &hp, NULL, 0);
    dim = hp.dim;
    zctx = shoal_transport_ctx_new();
    node_proc na, nb;
    if (node_spawn(&na, MODEL, "0:2", NULL) || node_spawn(&nb, MODEL, "2:5", NULL)) {
        node_reap_all();
        fprintf(stderr, "cannot start the nodes\n");
        return 1;
    }
    test_push(&na, &nb);
    test_push_bound(&na);
    CHECK(node_stop(&na, SIGINT, 10000) == 0);
    CHECK(node_stop(&nb, SIGINT, 10000) == 0);
    test_leave();
    node_reap_all();
    zmq_ctx_term(zctx);
    shoal_gguf_close(&g);
    return check_done();
}
