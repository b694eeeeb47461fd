/*
 * ZeroMQ sockets with CURVE and bounded multipart receive (see transport.h).
 *
 * Keys: the server's CURVE secret is handed to libzmq straight from the
 * identity's guarded memory; a client's ephemeral secret lives in a stack
 * buffer only between zmq_curve_keypair() and setsockopt(), then is wiped.
 */
#include "swarm/transport.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_MAX_FRAMES 8
#define HANDSHAKE_MS 10000
#define RECONNECT_MAX_MS 2000 /* a client retries a lost peer at 100 ms, doubling to this */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Volatile stores so the compiler cannot drop the wipe of a dead buffer. */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

void *shoal_transport_ctx_new(void)
{
    void *ctx = zmq_ctx_new();
    if (!ctx)
        return NULL;
    zmq_ctx_set(ctx, ZMQ_IO_THREADS, 1);
    zmq_ctx_set(ctx, ZMQ_BLOCKY, 0); /* terminate without waiting on linger */
    return ctx;
}

static int set_common(void *s, int64_t max_frame)
{
    int zero = 0, one = 1, hs = HANDSHAKE_MS;
    if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(s, ZMQ_IPV6, &one, sizeof one) ||
        zmq_setsockopt(s, ZMQ_HANDSHAKE_IVL, &hs, sizeof hs) ||
        zmq_setsockopt(s, ZMQ_TCP_KEEPALIVE, &one, sizeof one) ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame))
        return SHOAL_ERR_IO;
    return 0;
}

int shoal_transport_server_open(void *zctx, const shoal_identity *id, const char *host,
                                int port, int64_t max_frame, void **sock, int *bound_port,
                                char *err, size_t errlen)
{
    *sock = NULL;
    if (!zmq_has("curve")) {
        set_err(err, errlen, "libzmq was built without CURVE");
        return SHOAL_ERR_UNSUPPORTED;
    }
    if (!host || !*host || port < 0 || port > 65535 || max_frame < 1) {
        set_err(err, errlen, "bad host or port");
        return SHOAL_ERR_ARG;
    }
    void *s = zmq_socket(zctx, ZMQ_ROUTER);
    if (!s) {
        set_err(err, errlen, "zmq_socket: %s", zmq_strerror(errno));
        return SHOAL_ERR_IO;
    }
    int one = 1, zero = 0;
    if (set_common(s, max_frame) ||
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &zero, sizeof zero) ||
        zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, shoal_identity_curve_secret(id), 32) ||
        zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, SHOAL_TRANSPORT_ZAP_DOMAIN,
                       strlen(SHOAL_TRANSPORT_ZAP_DOMAIN))) {
        set_err(err, errlen, "socket options: %s", zmq_strerror(errno));
        goto fail;
    }
    char ep[300], port_s[8];
    if (port)
        snprintf(port_s, sizeof port_s, "%d", port);
    else
        snprintf(port_s, sizeof port_s, "*");
    int v6 = strchr(host, ':') != NULL;
    if ((size_t)snprintf(ep, sizeof ep, v6 ? "tcp://[%s]:%s" : "tcp://%s:%s", host, port_s) >=
        sizeof ep) {
        set_err(err, errlen, "host name too long");
        goto fail;
    }
    if (zmq_bind(s, ep)) {
        set_err(err, errlen, "cannot listen on %s: %s", ep, zmq_strerror(errno));
        goto fail;
    }
    char last[300];
    size_t last_len = sizeof last;
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, last, &last_len)) {
        set_err(err, errlen, "ZMQ_LAST_ENDPOINT: %s", zmq_strerror(errno));
        goto fail;
    }
    last[sizeof last - 1] = 0;
    const char *colon = strrchr(last, ':');
    long p = colon ? strtol(colon + 1, NULL, 10) : 0;
    if (p < 1 || p > 65535) {
        set_err(err, errlen, "cannot read the bound port from %s", last);
        goto fail;
    }
    *bound_port = (int)p;
    *sock = s;
    return 0;
fail:
    zmq_close(s);
    return SHOAL_ERR_IO;
}

int shoal_transport_client_open(void *zctx, const shoal_addr *a, int64_t max_frame,
                                void **sock)
{
    *sock = NULL;
    if (!zmq_has("curve"))
        return SHOAL_ERR_UNSUPPORTED;
    uint8_t server_key[32];
    char ep[SHOAL_ADDR_MAX + 16];
    if (shoal_addr_curve_key(a, server_key) || shoal_addr_endpoint(a, ep, sizeof ep))
        return SHOAL_ERR_FORMAT;
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    if (!s)
        return SHOAL_ERR_IO;
    char pub[41], sec[41];
    int rc = SHOAL_ERR_IO;
    if (zmq_curve_keypair(pub, sec))
        goto out;
    int ivl_max = RECONNECT_MAX_MS;
    if (set_common(s, max_frame) ||
        zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max) ||
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_key, 32) ||
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 40) ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40))
        goto out;
    if (zmq_connect(s, ep))
        goto out;
    rc = 0;
out:
    wipe(sec, sizeof sec);
    if (rc)
        zmq_close(s);
    else
        *sock = s;
    return rc;
}

void shoal_transport_close(void **sock)
{
    if (!sock || !*sock)
        return;
    int zero = 0;
    zmq_setsockopt(*sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(*sock);
    *sock = NULL;
}

void shoal_transport_msg_init(shoal_transport_msg *m) { m->nframes = 0; }

void shoal_transport_msg_close(shoal_transport_msg *m)
{
    for (int i = 0; i < m->nframes; i++)
        zmq_msg_close(&m->frame[i]);
    m->nframes = 0;
}

/* Read and discard the rest of a multipart message. */
static void drain(void *sock)
{
    int more = 1;
    while (more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        int r = zmq_msg_recv(&f, sock, 0);
        more = r >= 0 && zmq_msg_more(&f);
        zmq_msg_close(&f);
    }
}

int shoal_transport_recv(void *sock, shoal_transport_msg *m, int max_frames, size_t max_total,
                         int flags)
{
    m->nframes = 0;
    if (max_frames > SHOAL_TRANSPORT_MAX_FRAMES)
        max_frames = SHOAL_TRANSPORT_MAX_FRAMES;
    size_t total = 0;
    for (;;) {
        zmq_msg_t *f = &m->frame[m->nframes];
        zmq_msg_init(f);
        /* Only the first frame may be absent: the rest of a multipart
         * message arrives with it, so later reads never wait. */
        int r = zmq_msg_recv(f, sock, m->nframes ? 0 : flags);
        if (r < 0) {
            int e = errno;
            zmq_msg_close(f);
            if (m->nframes == 0 && e == EAGAIN)
                return SHOAL_ERR_TIMEOUT;
            shoal_transport_msg_close(m);
            return SHOAL_ERR_IO;
        }
        m->nframes++;
        size_t len = zmq_msg_size(f);
        int more = zmq_msg_more(f);
        if (len > max_total - total || (more && m->nframes >= max_frames)) {
            shoal_transport_msg_close(m);
            if (more)
                drain(sock);
            return SHOAL_ERR_FORMAT;
        }
        total += len;
        if (!more)
            return 0;
    }
}

static int send_error(void)
{
    return errno == EAGAIN ? SHOAL_ERR_BUSY : SHOAL_ERR_IO;
}

int shoal_transport_send(void *sock, const shoal_transport_part *parts, int n)
{
    for (int i = 0; i < n; i++) {
        int fl = ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0);
        if (zmq_send(sock, parts[i].len ? parts[i].data : "", parts[i].len, fl) < 0)
            return send_error();
    }
    return 0;
}

int shoal_transport_send_msg(void *sock, shoal_transport_msg *m, int flags)
{
    int rc = 0;
    int i = 0;
    for (; i < m->nframes; i++) {
        int fl = flags | (i + 1 < m->nframes ? ZMQ_SNDMORE : 0);
        if (zmq_msg_send(&m->frame[i], sock, fl) < 0) {
            rc = send_error();
            break;
        }
        /* a sent frame is empty now; closing it again is harmless */
    }
    shoal_transport_msg_close(m);
    return rc;
}

const char *shoal_transport_user_id(zmq_msg_t *frame)
{
    const char *u = zmq_msg_gets(frame, "User-Id");
    return u && strlen(u) == 40 ? u : NULL;
}

int shoal_transport_zap_open(void *zctx, void **sock)
{
    *sock = NULL;
    void *s = zmq_socket(zctx, ZMQ_REP);
    if (!s)
        return SHOAL_ERR_IO;
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(s, ZAP_ENDPOINT)) {
        zmq_close(s);
        return SHOAL_ERR_IO;
    }
    *sock = s;
    return 0;
}

int shoal_transport_zap_serve(void *zap)
{
    zmq_msg_t f[ZAP_MAX_FRAMES];
    int n = 0, more = 1, overflow = 0;
    while (more) {
        zmq_msg_t tmp;
        zmq_msg_init(&tmp);
        if (zmq_msg_recv(&tmp, zap, n || overflow ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&tmp);
            for (int i = 0; i < n; i++)
                zmq_msg_close(&f[i]);
            return n || overflow ? SHOAL_ERR_IO : SHOAL_ERR_TIMEOUT;
        }
        more = zmq_msg_more(&tmp);
        if (n < ZAP_MAX_FRAMES) {
            zmq_msg_init(&f[n]);
            zmq_msg_move(&f[n++], &tmp);
        } else {
            overflow = 1;
        }
        zmq_msg_close(&tmp);
    }
    /* version, request id, domain, address, routing id, mechanism, creds */
    const char *status = "400", *text = "refused";
    char user[41] = "";
    if (!overflow && n >= 6 && zmq_msg_size(&f[0]) == 3 && !memcmp(zmq_msg_data(&f[0]), "1.0", 3) &&
        zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) && n == 7 &&
        zmq_msg_size(&f[6]) == 32) {
        zmq_z85_encode(user, zmq_msg_data(&f[6]), 32);
        status = "200";
        text = "OK";
    }
    const void *reqid = n >= 2 ? zmq_msg_data(&f[1]) : "";
    size_t reqid_len = n >= 2 ? zmq_msg_size(&f[1]) : 0;
    int rc = 0;
    if (zmq_send(zap, "1.0", 3, ZMQ_SNDMORE) < 0 ||
        zmq_send(zap, reqid_len ? reqid : "", reqid_len, ZMQ_SNDMORE) < 0 ||
        zmq_send(zap, status, 3, ZMQ_SNDMORE) < 0 ||
        zmq_send(zap, text, strlen(text), ZMQ_SNDMORE) < 0 ||
        zmq_send(zap, user, strlen(user), ZMQ_SNDMORE) < 0 || zmq_send(zap, "", 0, 0) < 0)
        rc = SHOAL_ERR_IO;
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
    return rc;
}
