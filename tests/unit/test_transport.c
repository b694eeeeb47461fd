/*
 * swarm/transport, swarm/log and swarm/peer in one process:
 *   - CURVE server and client exchange multipart messages both ways; the
 *     ZAP handler tags each message with its client's key (distinct keys
 *     for distinct clients);
 *   - bounded receive drops messages with too many frames or bytes whole
 *     and the next message still arrives; a frame over ZMQ_MAXMSGSIZE never
 *     arrives, and the client's next message does (after a reconnect);
 *   - a client with the wrong server key, or without CURVE, never reaches
 *     the server;
 *   - IPv6 loopback (when the host has it);
 *   - the peer client against a scripted fake server: stale replies are
 *     skipped, ERROR replies give their code and message, replies of the
 *     wrong op or shape are protocol errors, silence is a timeout after
 *     which the next call works;
 *   - the logger: threshold, sink, one line per call.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "kernels/err.h"
#include "proto/addr.h"
#include "proto/identity.h"
#include "proto/wire.h"
#include "kernels/gguf.h"
#include "swarm/log.h"
#include "swarm/model_id.h"
#include "swarm/peer.h"
#include "swarm/transport.h"

static shoal_identity *server_id;

static int poll_in(void *s, int ms)
{
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&it, 1, ms);
}

static void make_addr(shoal_addr *a, const char *host, int port, const shoal_identity *id)
{
    shoal_addr_init(a, host, (uint16_t)port, shoal_identity_public_key(id));
}

static void test_exchange(void *ctx)
{
    void *srv = NULL, *c1 = NULL, *c2 = NULL, *zap = NULL;
    int port = 0;
    char err[256];
    CHECK(shoal_transport_zap_open(ctx, &zap) == 0);
    CHECK(shoal_transport_server_open(ctx, server_id, "127.0.0.1", 0, 4096, &srv, &port, err,
                                      sizeof err) == 0);
    CHECK(port > 0);
    shoal_addr a;
    make_addr(&a, "127.0.0.1", port, server_id);
    CHECK(shoal_transport_client_open(ctx, &a, 4096, &c1) == 0);
    CHECK(shoal_transport_client_open(ctx, &a, 4096, &c2) == 0);

    shoal_transport_part parts[2] = {{"header", 6}, {"tensor", 6}};
    CHECK(shoal_transport_send(c1, parts, 2) == 0);
    CHECK(shoal_transport_send(c2, parts, 1) == 0);
    char user1[41] = "", user2[41] = "";
    for (int got = 0; got < 2;) {
        /* the ZAP handler must run for the handshakes to finish */
        zmq_pollitem_t it[2] = {{srv, 0, ZMQ_POLLIN, 0}, {zap, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 2, 5000) <= 0)
            break;
        if (it[1].revents)
            shoal_transport_zap_serve(zap);
        if (!it[0].revents)
            continue;
        shoal_transport_msg m;
        shoal_transport_msg_init(&m);
        CHECK(shoal_transport_recv(srv, &m, 6, 1 << 20, ZMQ_DONTWAIT) == 0);
        const char *u = shoal_transport_user_id(&m.frame[1]);
        CHECK(u != NULL);
        if (m.nframes == 3) {
            CHECK(zmq_msg_size(&m.frame[2]) == 6 && !memcmp(zmq_msg_data(&m.frame[2]), "tensor", 6));
            snprintf(user1, sizeof user1, "%s", u ? u : "");
            /* answer c1 through its routing id */
            shoal_transport_part r[2] = {{zmq_msg_data(&m.frame[0]), zmq_msg_size(&m.frame[0])},
                                         {"reply", 5}};
            CHECK(shoal_transport_send(srv, r, 2) == 0);
        } else {
            CHECK(m.nframes == 2);
            snprintf(user2, sizeof user2, "%s", u ? u : "");
        }
        shoal_transport_msg_close(&m);
        got++;
    }
    CHECK(strlen(user1) == 40 && strlen(user2) == 40 && strcmp(user1, user2) != 0);
    CHECK(poll_in(c1, 5000) == 1);
    shoal_transport_msg m;
    shoal_transport_msg_init(&m);
    CHECK(shoal_transport_recv(c1, &m, 5, 1 << 20, 0) == 0);
    CHECK(m.nframes == 1 && zmq_msg_size(&m.frame[0]) == 5);
    shoal_transport_msg_close(&m);
    CHECK(shoal_transport_recv(c1, &m, 5, 1 << 20, ZMQ_DONTWAIT) == SHOAL_ERR_TIMEOUT);

    /* too many frames, too many bytes: dropped whole; the next one arrives */
    shoal_transport_part seven[7];
    for (int i = 0; i < 7; i++)
        seven[i] = (shoal_transport_part){"x", 1};
    CHECK(shoal_transport_send(c1, seven, 7) == 0);
    static char kb[3000];
    shoal_transport_part fat[2] = {{kb, sizeof kb}, {kb, sizeof kb}};
    CHECK(shoal_transport_send(c1, fat, 2) == 0);
    CHECK(shoal_transport_send(c1, parts, 1) == 0);
    CHECK(poll_in(srv, 5000) == 1);
    CHECK(shoal_transport_recv(srv, &m, 6, 1 << 20, 0) == SHOAL_ERR_FORMAT && m.nframes == 0);
    CHECK(poll_in(srv, 5000) == 1);
    CHECK(shoal_transport_recv(srv, &m, 6, 5000, 0) == SHOAL_ERR_FORMAT && m.nframes == 0);
    CHECK(poll_in(srv, 5000) == 1);
    CHECK(shoal_transport_recv(srv, &m, 6, 5000, 0) == 0 && m.nframes == 2);
    shoal_transport_msg_close(&m);

    /* a frame over ZMQ_MAXMSGSIZE (4096) never arrives; libzmq drops the
     * connection, the client reconnects and its next message gets through */
    static char big[5000];
    shoal_transport_part over[1] = {{big, sizeof big}};
    CHECK(shoal_transport_send(c1, over, 1) == 0);
    int seen_big = 0, seen_next = 0;
    for (int tries = 0; tries < 50 && !seen_next; tries++) {
        if (tries == 5)
            shoal_transport_send(c1, parts, 1);
        zmq_pollitem_t it[2] = {{srv, 0, ZMQ_POLLIN, 0}, {zap, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 2, 100) <= 0)
            continue;
        if (it[1].revents)
            shoal_transport_zap_serve(zap);
        if (it[0].revents && shoal_transport_recv(srv, &m, 6, 1 << 20, 0) == 0) {
            for (int i = 1; i < m.nframes; i++)
                seen_big |= zmq_msg_size(&m.frame[i]) == sizeof big;
            seen_next = 1;
            shoal_transport_msg_close(&m);
        }
    }
    CHECK(!seen_big && seen_next);

    /* the wrong server key: the handshake never completes */
    shoal_identity *other = NULL;
    shoal_identity_generate(&other);
    shoal_addr wrong;
    make_addr(&wrong, "127.0.0.1", port, other);
    void *bad = NULL;
    CHECK(shoal_transport_client_open(ctx, &wrong, 4096, &bad) == 0);
    CHECK(shoal_transport_send(bad, parts, 1) == 0);
    /* no CURVE at all */
    void *plain = zmq_socket(ctx, ZMQ_DEALER);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    CHECK(zmq_connect(plain, ep) == 0);
    zmq_send(plain, "header", 6, ZMQ_DONTWAIT);
    int leaked = 0;
    for (int tries = 0; tries < 8; tries++) {
        zmq_pollitem_t it[2] = {{srv, 0, ZMQ_POLLIN, 0}, {zap, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 2, 100) > 0) {
            if (it[1].revents)
                shoal_transport_zap_serve(zap);
            if (it[0].revents && shoal_transport_recv(srv, &m, 6, 1 << 20, 0) == 0) {
                leaked = 1;
                shoal_transport_msg_close(&m);
            }
        }
    }
    CHECK(!leaked);
    CHECK(poll_in(bad, 0) == 0 && poll_in(plain, 0) == 0);
    shoal_identity_destroy(&other);
    zmq_close(plain);
    shoal_transport_close(&bad);
    shoal_transport_close(&c1);
    shoal_transport_close(&c2);
    CHECK(c1 == NULL);
    shoal_transport_close(&srv);
    shoal_transport_close(&zap);
    shoal_transport_close(&zap); /* NULL: no-op */
}

static void test_ipv6(void *ctx)
{
    void *srv = NULL, *c = NULL;
    int port = 0;
    char err[256];
    if (shoal_transport_server_open(ctx, server_id, "::1", 0, 4096, &srv, &port, err,
                                    sizeof err)) {
        printf("no IPv6 loopback here (%s): skipped\n", err);
        return;
    }
    shoal_addr a;
    CHECK(shoal_addr_init(&a, "::1", (uint16_t)port, shoal_identity_public_key(server_id)) == 0);
    CHECK(shoal_addr_is_ipv6(&a));
    CHECK(shoal_transport_client_open(ctx, &a, 4096, &c) == 0);
    shoal_transport_part p[1] = {{"v6", 2}};
    CHECK(shoal_transport_send(c, p, 1) == 0);
    CHECK(poll_in(srv, 5000) == 1);
    shoal_transport_msg m;
    shoal_transport_msg_init(&m);
    CHECK(shoal_transport_recv(srv, &m, 6, 1 << 20, 0) == 0 && m.nframes == 2);
    shoal_transport_msg_close(&m);
    shoal_transport_close(&c);
    shoal_transport_close(&srv);
}

/* ---- the peer client against a scripted server ------------------------- */

typedef struct fake {
    void *ctx, *srv;
    int port;
} fake;

static void fake_send(fake *f, zmq_msg_t *routing, shoal_wire_header *h, const void *t,
                      size_t tlen)
{
    uint8_t buf[SHOAL_WIRE_HEADER_MAX];
    size_t len;
    if (shoal_wire_encode(h, buf, sizeof buf, &len))
        return;
    shoal_transport_part p[3] = {{zmq_msg_data(routing), zmq_msg_size(routing)},
                                 {buf, len}, {t, tlen}};
    shoal_transport_send(f->srv, p, t ? 3 : 2);
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    for (;;) {
        if (poll_in(f->srv, 10000) != 1)
            return NULL;
        shoal_transport_msg m;
        shoal_transport_msg_init(&m);
        if (shoal_transport_recv(f->srv, &m, 6, 1 << 24, 0))
            continue;
        shoal_wire_header req, r;
        if (m.nframes < 2 ||
            shoal_wire_decode(&req, zmq_msg_data(&m.frame[1]), zmq_msg_size(&m.frame[1]))) {
            shoal_transport_msg_close(&m);
            continue;
        }
        zmq_msg_t *rt = &m.frame[0];
        if (req.op == SHOAL_OP_PING) { /* a stale reply first, then the real one */
            shoal_wire_reply_init(&r, &req);
            r.request_id = req.request_id - 1;
            fake_send(f, rt, &r, NULL, 0);
            r.request_id = req.request_id;
            fake_send(f, rt, &r, NULL, 0);
        } else if (req.op == SHOAL_OP_INFO) {
            shoal_wire_error_init(&r, req.request_id, SHOAL_ERR_BUSY, "try later");
            fake_send(f, rt, &r, NULL, 0);
        } else if (req.op == SHOAL_OP_FORWARD && m.nframes == 3) {
            shoal_wire_reply_init(&r, &req);
            shoal_codec_desc d = req.tensors[0];
            if (req.span_start == 1) { /* the wrong shape */
                uint32_t shape[2] = {d.shape[0] + 1, d.shape[1]};
                shoal_codec_desc_init(&d, (int)d.codec, 2, shape);
                static uint8_t zeros[1 << 16];
                shoal_wire_tensor_add(&r, &d);
                fake_send(f, rt, &r, zeros, d.nbytes);
            } else if (req.span_start == 2) { /* the wrong op */
                r.op = SHOAL_OP_PING;
                fake_send(f, rt, &r, NULL, 0);
            } else if (req.span_start == 0) { /* echo */
                shoal_wire_tensor_add(&r, &d);
                fake_send(f, rt, &r, zmq_msg_data(&m.frame[2]), zmq_msg_size(&m.frame[2]));
            } /* span 3: silence */
        } else if (req.op == SHOAL_OP_SESSION_CLOSE) {
            shoal_wire_reply_init(&r, &req);
            fake_send(f, rt, &r, NULL, 0);
            shoal_transport_msg_close(&m);
            return NULL;
        }
        shoal_transport_msg_close(&m);
    }
}

static void test_peer(void *ctx)
{
    fake f = {ctx, NULL, 0};
    char err[256];
    CHECK(shoal_transport_server_open(ctx, server_id, "127.0.0.1", 0, 1 << 20, &f.srv, &f.port,
                                      err, sizeof err) == 0);
    pthread_t th;
    pthread_create(&th, NULL, fake_main, &f);
    shoal_addr a;
    make_addr(&a, "127.0.0.1", f.port, server_id);
    char addr[SHOAL_ADDR_MAX];
    shoal_addr_format(&a, addr, sizeof addr);

    shoal_peer *p = NULL;
    CHECK(shoal_peer_connect("shoal://nonsense", NULL, &p) == SHOAL_ERR_FORMAT && !p);
    shoal_peer_params pp = shoal_peer_params_default();
    pp.zmq_ctx = ctx;
    CHECK(shoal_peer_connect(addr, &pp, &p) == 0);
    CHECK(!strcmp(shoal_peer_address(p), addr));
    CHECK(!memcmp(shoal_peer_id(p), shoal_identity_peer_id(server_id), 32));
    CHECK(shoal_peer_ping(p, 5000) == 0);
    CHECK(shoal_peer_last_error(p)[0] == 0);
    shoal_peer_info info;
    CHECK(shoal_peer_get_info(p, &info, 5000) == SHOAL_ERR_BUSY);
    CHECK(strstr(shoal_peer_last_error(p), "try later") != NULL);

    float x[3 * 8], y[3 * 8];
    for (int i = 0; i < 24; i++)
        x[i] = y[i] = (float)i * 0.25f - 2.0f;
    CHECK(shoal_peer_forward(p, 0, 1, x, 3, 8, SHOAL_CODEC_F32, 5000) == 0);
    CHECK(!memcmp(x, y, sizeof x));
    CHECK(shoal_peer_forward(p, 0, 1, x, 3, 8, SHOAL_CODEC_BF16, 5000) == 0);
    CHECK(!memcmp(x, y, sizeof x)); /* these values are exact in bf16 */
    CHECK(shoal_peer_forward(p, 1, 2, x, 3, 8, SHOAL_CODEC_F32, 5000) == SHOAL_ERR_PROTOCOL);
    CHECK(strstr(shoal_peer_last_error(p), "shape") != NULL);
    CHECK(shoal_peer_forward(p, 2, 3, x, 3, 8, SHOAL_CODEC_F32, 5000) == SHOAL_ERR_PROTOCOL);
    CHECK(shoal_peer_forward(p, 3, 4, x, 3, 8, SHOAL_CODEC_F32, 300) == SHOAL_ERR_TIMEOUT);
    CHECK(strstr(shoal_peer_last_error(p), "no answer") != NULL);
    /* after a timeout the peer reconnects and goes on */
    CHECK(shoal_peer_forward(p, 0, 1, x, 3, 8, SHOAL_CODEC_F32, 5000) == 0);
    x[5] = 1.0f / 0.0f;
    CHECK(shoal_peer_forward(p, 0, 1, x, 3, 8, SHOAL_CODEC_F16, 5000) == SHOAL_ERR_RANGE);
    CHECK(shoal_peer_forward(p, 0, 1, x, 0, 8, SHOAL_CODEC_F32, 5000) == SHOAL_ERR_ARG);
    CHECK(shoal_peer_forward(p, 0, 1, x, 3, 8, 9, 5000) == SHOAL_ERR_ARG);
    CHECK(shoal_peer_session_close(p, 1, 5000) == 0);
    pthread_join(th, NULL);
    shoal_peer_destroy(&p);
    shoal_peer_destroy(&p);
    CHECK(p == NULL);
    shoal_transport_close(&f.srv);
}

/* ---- logging ------------------------------------------------------------ */

typedef struct captured {
    int n, level;
    char line[256];
} captured;

static void capture(void *ctx, int level, const char *line)
{
    captured *c = ctx;
    c->n++;
    c->level = level;
    snprintf(c->line, sizeof c->line, "%s", line);
}

static void test_log(void)
{
    captured c = {0};
    shoal_log_set_sink(capture, &c);
    shoal_log_set_level(SHOAL_LOG_WARN);
    CHECK(shoal_log_get_level() == SHOAL_LOG_WARN);
    CHECK(!shoal_log_enabled(SHOAL_LOG_INFO) && shoal_log_enabled(SHOAL_LOG_ERROR));
    SHOAL_LOG_I("dropped %d", 1);
    CHECK(c.n == 0);
    SHOAL_LOG_W("kept %d\nforged line", 2);
    CHECK(c.n == 1 && c.level == SHOAL_LOG_WARN && !strcmp(c.line, "kept 2 forged line"));
    shoal_log_set_level(SHOAL_LOG_OFF);
    SHOAL_LOG_E("off");
    CHECK(c.n == 1);
    CHECK(shoal_log_level_from_name("debug") == SHOAL_LOG_DEBUG);
    CHECK(shoal_log_level_from_name("loud") == -1 && shoal_log_level_from_name(NULL) == -1);
    shoal_log_set_sink(NULL, NULL);
    shoal_log_set_level(SHOAL_LOG_INFO);
}

/* The model hash covers metadata and layout, not tensor data. */
static void test_model_id(void)
{
    FILE *f = fopen(SHOAL_SHARED "/models/stories260K.gguf", "rb");
    CHECK(f != NULL);
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    uint8_t *buf = malloc((size_t)size);
    CHECK(fread(buf, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    shoal_gguf *g = NULL;
    shoal_model_id a, b, c;
    CHECK(shoal_gguf_open_memory(buf, (size_t)size, "a", &g, NULL, 0) == 0);
    CHECK(shoal_model_id_compute(g, &a) == 0);
    const char *name = NULL;
    shoal_gguf_get_str(g, "general.name", &name);
    CHECK(name && !strcmp(a.name, name));
    uint64_t data_off = shoal_gguf_data_offset(g);
    shoal_gguf_close(&g);
    char hex[17];
    shoal_model_id_short(&a, hex);
    CHECK(strlen(hex) == 16);

    buf[size - 1] ^= 0x55; /* tensor data: the same identity */
    CHECK(shoal_gguf_open_memory(buf, (size_t)size, "b", &g, NULL, 0) == 0);
    CHECK(shoal_model_id_compute(g, &b) == 0 && shoal_model_id_equal(&a, &b));
    shoal_gguf_close(&g);

    /* one metadata byte (the first occurrence of the name): another identity */
    size_t nl = strlen(a.name);
    for (uint64_t i = 0; nl && i + nl < data_off; i++) {
        if (!memcmp(buf + i, a.name, nl)) {
            buf[i] ^= 0x01;
            break;
        }
    }
    CHECK(shoal_gguf_open_memory(buf, (size_t)size, "c", &g, NULL, 0) == 0);
    CHECK(shoal_model_id_compute(g, &c) == 0);
    CHECK(!shoal_model_id_equal(&a, &c) && memcmp(a.hash, c.hash, 32) != 0);
    shoal_gguf_close(&g);
    free(buf);
}

int main(void)
{
    uint8_t seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(i * 7 + 1);
    if (shoal_identity_from_seed(&server_id, seed)) {
        fprintf(stderr, "cannot make an identity\n");
        return 1;
    }
    void *ctx = shoal_transport_ctx_new();
    CHECK(ctx != NULL);
    test_log();
    test_model_id();
    void *zctx = shoal_transport_ctx_new(); /* its own: it holds the ZAP handler */
    test_exchange(zctx);
    zmq_ctx_term(zctx);
    test_ipv6(ctx);
    test_peer(ctx);
    zmq_ctx_term(ctx);
    shoal_identity_destroy(&server_id);
    return check_done();
}
