/*
 * Replays tests/fuzz/corpus/node_hostile/ (format and set-up in its README)
 * against a real `shoal serve` over a CURVE connection. Every message must
 * get an ERROR reply or none; afterwards the node must still be up, the
 * session the corpus attacked must continue exactly like the local pass,
 * and a FORWARD must equal the local pass bit for bit.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "proto/addr.h"
#include "proto/wire.h"
#include "swarm/peer.h"
#include "swarm/transport.h"
#include "test_node_spawn.h"

#define MODEL SHOAL_SHARED "/models/stories260K.gguf"
#define CORPUS SHOAL_TESTS_DIR "/fuzz/corpus/node_hostile"
#define SID 0x5E55105E55105E55ULL
#define SID_MAXLEN 8
#define SID_LEN 4
#define DIM 64
#define MAX_FRAMES 16
#define SILENCE_MS 1500
#define T_MS 20000

static shoal_gguf *g;
static void *sock;
static uint64_t next_id = 1000;
static int n_error, n_silent, n_bad;

/* ---- corpus files -------------------------------------------------------- */

typedef struct corpus_msg {
    int n;
    uint8_t *data[MAX_FRAMES];
    size_t len[MAX_FRAMES];
} corpus_msg;

static void corpus_free(corpus_msg *m)
{
    for (int i = 0; i < m->n; i++)
        free(m->data[i]);
    m->n = 0;
}

static int corpus_read(const char *path, corpus_msg *m)
{
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    char magic[4];
    int rc = -1;
    if (fread(magic, 1, 4, f) != 4 || memcmp(magic, "SHM1", 4))
        goto out;
    for (;;) {
        uint8_t lb[4];
        size_t got = fread(lb, 1, 4, f);
        if (got == 0) {
            rc = m->n > 0 ? 0 : -1;
            break;
        }
        if (got != 4 || m->n == MAX_FRAMES)
            break;
        uint32_t len = (uint32_t)lb[0] | (uint32_t)lb[1] << 8 | (uint32_t)lb[2] << 16 |
                       (uint32_t)lb[3] << 24;
        int fill = (len & 0x80000000u) != 0;
        len &= 0x7fffffffu;
        if (len > (64u << 20))
            break;
        uint8_t *d = malloc(len ? len : 1);
        if (!d)
            break;
        m->data[m->n] = d;
        m->len[m->n++] = len;
        if (fill) {
            int b = fgetc(f);
            if (b == EOF)
                break;
            memset(d, b, len);
        } else if (fread(d, 1, len, f) != len) {
            break;
        }
    }
out:
    fclose(f);
    if (rc)
        corpus_free(m);
    return rc;
}

/* ---- talking to the node ----------------------------------------------- */

/* Send a request header with an optional f32 tensor (n, DIM); wait for the
 * reply with its id into *r and its tensor into out. */
static int call(shoal_wire_header *h, const float *x, int n, float *out)
{
    h->request_id = ++next_id;
    static uint8_t hb[SHOAL_WIRE_HEADER_MAX], tb[64 * DIM * 4];
    shoal_transport_part parts[2];
    if (x) {
        shoal_codec_desc d;
        uint32_t shape[2] = {(uint32_t)n, DIM};
        shoal_codec_desc_init(&d, SHOAL_CODEC_F32, 2, shape);
        shoal_codec_encode(&d, x, tb, sizeof tb);
        shoal_wire_tensor_add(h, &d);
        parts[1] = (shoal_transport_part){tb, d.nbytes};
    }
    size_t hl;
    if (shoal_wire_encode(h, hb, sizeof hb, &hl))
        return -1;
    parts[0] = (shoal_transport_part){hb, hl};
    if (shoal_transport_send(sock, parts, x ? 2 : 1))
        return -1;
    double deadline = node_now_ms() + T_MS;
    while (node_now_ms() < deadline) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) != 1)
            continue;
        shoal_transport_msg m;
        shoal_transport_msg_init(&m);
        if (shoal_transport_recv(sock, &m, 5, 1 << 24, 0))
            continue;
        shoal_wire_header r;
        int ok = shoal_wire_decode(&r, zmq_msg_data(&m.frame[0]), zmq_msg_size(&m.frame[0])) == 0;
        if (ok && r.request_id == h->request_id) {
            int rc = r.op == SHOAL_OP_ERROR ? (int)r.error : 0;
            if (rc)
                fprintf(stderr, "error reply: %s\n", r.message);
            if (!rc && out && (m.nframes != 2 || r.ntensors != 1 ||
                               shoal_codec_decode(&r.tensors[0], zmq_msg_data(&m.frame[1]),
                                                  zmq_msg_size(&m.frame[1]), out,
                                                  (size_t)n * DIM)))
                rc = -1;
            shoal_transport_msg_close(&m);
            return rc;
        }
        shoal_transport_msg_close(&m);
    }
    return -1;
}

static void local_pass(int n, const float *in, float *out)
{
    shoal_model *m = NULL;
    shoal_model_open(g, 0, 5, 0, &m, NULL, 0);
    shoal_fwd *f = shoal_fwd_new(m, 64, 64, 1);
    shoal_kv *kv = shoal_kv_new(m, 64);
    memcpy(out, in, (size_t)n * DIM * sizeof(float));
    shoal_fwd_blocks(f, kv, 0, n, out);
    shoal_kv_destroy(&kv);
    shoal_fwd_destroy(&f);
    shoal_model_destroy(&m);
}

static void embed(int n, float *x)
{
    static const int32_t tok[8] = {1, 403, 35, 100, 7, 300, 22, 9};
    shoal_model *m = NULL;
    shoal_model_open(g, 0, 0, SHOAL_PART_EMBED, &m, NULL, 0);
    shoal_fwd *f = shoal_fwd_new(m, 64, 64, 1);
    shoal_fwd_embed(f, tok, n, x);
    shoal_fwd_destroy(&f);
    shoal_model_destroy(&m);
}

/* Send one corpus message; collect what comes back within SILENCE_MS. */
static void replay(const char *name, const corpus_msg *cm)
{
    shoal_transport_part parts[MAX_FRAMES];
    for (int i = 0; i < cm->n; i++)
        parts[i] = (shoal_transport_part){cm->data[i], cm->len[i]};
    if (shoal_transport_send(sock, parts, cm->n)) {
        CHECK_MSG(0, "%s: cannot send", name);
        return;
    }
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, SILENCE_MS) != 1) {
        n_silent++;
        return;
    }
    shoal_transport_msg m;
    shoal_transport_msg_init(&m);
    if (shoal_transport_recv(sock, &m, 5, 1 << 24, 0)) {
        CHECK_MSG(0, "%s: an oversized reply", name);
        return;
    }
    shoal_wire_header r;
    int rc = shoal_wire_decode(&r, zmq_msg_data(&m.frame[0]), zmq_msg_size(&m.frame[0]));
    if (rc || r.op != SHOAL_OP_ERROR || !(r.flags & SHOAL_WIRE_FLAG_REPLY) || m.nframes != 1) {
        n_bad++;
        CHECK_MSG(0, "%s: answered with op %u (decode %d), not an ERROR", name, r.op, rc);
    } else {
        n_error++;
        if (getenv("SHOAL_TEST_VERBOSE"))
            printf("%-45s %s: %s\n", name, shoal_strerror((int)r.error), r.message);
    }
    shoal_transport_msg_close(&m);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
    char err[256];
    if (shoal_gguf_open(MODEL, &g, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    node_proc np;
    const char *extra[] = {"--max-batch", "8", "--cache-tokens", "64", NULL};
    if (node_spawn(&np, MODEL, "0:5", extra)) {
        fprintf(stderr, "cannot start the node\n");
        return 1;
    }
    void *ctx = shoal_transport_ctx_new();
    shoal_addr a;
    CHECK(shoal_addr_parse(&a, np.addr) == 0);
    CHECK(shoal_transport_client_open(ctx, &a, 1 << 24, &sock) == 0);

    /* the session the corpus attacks */
    float in[8 * DIM], ref[8 * DIM], x[8 * DIM];
    embed(8, in);
    local_pass(8, in, ref);
    shoal_wire_header h;
    shoal_wire_header_init(&h, SHOAL_OP_SESSION_OPEN, 0);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_SPAN | SHOAL_WIRE_HAS_MAX_LENGTH;
    h.session_id = SID;
    h.span_start = 0;
    h.span_end = 5;
    h.max_length = SID_MAXLEN;
    CHECK(call(&h, NULL, 0, NULL) == 0);
    shoal_wire_header_init(&h, SHOAL_OP_SESSION_STEP, 0);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION;
    h.session_id = SID;
    h.step_id = 1;
    h.position = 0;
    CHECK(call(&h, in, SID_LEN, x) == 0);
    CHECK(!memcmp(x, ref, SID_LEN * DIM * sizeof(float)));

    /* the corpus, in name order */
    DIR *d = opendir(CORPUS);
    CHECK(d != NULL);
    char *names[512];
    int nn = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && nn < 512) {
        size_t l = strlen(e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".msg"))
            names[nn++] = strdup(e->d_name);
    }
    if (d)
        closedir(d);
    qsort(names, (size_t)nn, sizeof names[0], cmp_names);
    CHECK_MSG(nn >= 50, "only %d corpus files", nn);
    for (int i = 0; i < nn; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", CORPUS, names[i]);
        corpus_msg cm;
        if (corpus_read(path, &cm)) {
            CHECK_MSG(0, "%s: unreadable", names[i]);
        } else {
            replay(names[i], &cm);
            corpus_free(&cm);
        }
        free(names[i]);
    }
    printf("%d messages: %d ERROR replies, %d dropped, %d wrong\n", nn, n_error, n_silent,
           n_bad);
    CHECK(n_error >= 80);

    /* still up, and still right */
    int st;
    CHECK(waitpid(np.pid, &st, WNOHANG) == 0);
    shoal_wire_header_init(&h, SHOAL_OP_SESSION_STEP, 0);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION;
    h.session_id = SID;
    h.step_id = 2;
    h.position = SID_LEN;
    CHECK(call(&h, in + SID_LEN * DIM, 1, x) == 0);
    CHECK_MSG(!memcmp(x, ref + SID_LEN * DIM, DIM * sizeof(float)),
              "the attacked session drifted");
    shoal_wire_header_init(&h, SHOAL_OP_FORWARD, 0);
    h.has = SHOAL_WIRE_HAS_SPAN;
    h.span_start = 0;
    h.span_end = 5;
    CHECK(call(&h, in, 8, x) == 0);
    CHECK_MSG(!memcmp(x, ref, sizeof x), "FORWARD after the replay differs");
    shoal_peer *p = NULL;
    shoal_peer_info info;
    CHECK(shoal_peer_connect(np.addr, NULL, &p) == 0);
    CHECK(p && shoal_peer_get_info(p, &info, T_MS) == 0 && info.free_tokens == 64 - SID_MAXLEN);
    shoal_peer_destroy(&p);

    shoal_transport_close(&sock);
    zmq_ctx_term(ctx);
    CHECK(node_stop(&np, SIGTERM, 10000) == 0);
    node_reap_all();
    shoal_gguf_close(&g);
    return check_done();
}
