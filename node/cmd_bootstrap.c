/*
 * `shoal bootstrap`: a DHT node that serves no blocks, for others to join
 * through (--initial-peers). It is a node like any other to the DHT (one
 * ROUTER port, CURVE with its identity's key, records stored for others),
 * without a model: PING is answered, INFO and every block op get ERROR
 * UNSUPPORTED. It may itself join others (--initial-peers), so several
 * bootstrap nodes form one swarm.
 *
 * One thread runs everything: a poll over the ROUTER, the ZAP handler and
 * the DHT's DEALERs (swarm/dht_net.h). It prints its address on standard
 * output (and with --address-file writes it alone to that file, atomically).
 * SIGINT or SIGTERM stops it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "client/cli.h"
#include "client/cmd.h"
#include "client/statusd.h"
#include "kernels/err.h"
#include "node/daemon.h"
#include "proto/addr.h"
#include "proto/identity.h"
#include "proto/wire.h"
#include "swarm/cli.h"
#include "swarm/dht_net.h"
#include "swarm/log.h"
#include "swarm/metrics.h"
#include "swarm/record.h"
#include "swarm/transport.h"

#define BOOT_MAX_PEERS 64
#define BOOT_POLL_MS 200
#define BOOT_BATCH 256

static void bootstrap_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal bootstrap [--port P] [options]\n"
            "\n"
            "Runs a DHT node that serves no blocks: servers and clients join the swarm\n"
            "through it (--initial-peers). Prints its address (shoal://HOST:PORT/KEY).\n"
            "\n"
            "  -p, --port P              TCP port (default 0: any free port)\n"
            "      --host H              interface to listen on (default 0.0.0.0)\n"
            "      --public-host H       host to write in the address (default: --host, or\n"
            "                            this machine's first address for a wildcard)\n"
            "  -i, --identity FILE       node identity (created, mode 0600, if missing;\n"
            "                            default: a new key each run)\n"
            "      --address-file FILE   also write the address alone to FILE\n"
            "      --initial-peers A,... other DHT nodes to join through\n"
            "      --http-port P         also serve HTTP on P (0: any free port): /health\n"
            "                            and /metrics (Prometheus: DHT peers, records held,\n"
            "                            requests by RPC)\n"
            "      --http-host H         interface for --http-port (default 127.0.0.1)\n"
            "  -h, --help                show this help\n");
    shoal_cli_help_common(out, "bootstrap");
}

static int boot_identity(const char *path, shoal_identity **id)
{
    return path ? node_daemon_identity("bootstrap", path, id) : shoal_identity_generate(id);
}

/* ---- --http-port: /health and /metrics (client/statusd.h) --------------- */

typedef struct boot_status {
    shoal_metrics *m;
    shoal_statusd *sd;
    int requests, peers, records;
    int64_t next_tick;
    pthread_mutex_t mu;   /* below: read by the HTTP threads */
    char address[SHOAL_ADDR_MAX];
    uint32_t contacts;
} boot_status;

static int boot_health(void *ctx, json_t **body)
{
    boot_status *bs = ctx;
    pthread_mutex_lock(&bs->mu);
    *body = json_pack("{s:s,s:s,s:s,s:i}", "status", "ok", "role", "bootstrap", "address",
                      bs->address, "dht_peers", (int)bs->contacts);
    pthread_mutex_unlock(&bs->mu);
    return 200; /* it answers DHT requests from the start */
}

static int boot_status_start(boot_status *bs, const char *host, int port, const char *address)
{
    static const char *const rpc[] = {"rpc"};
    char err[512];
    pthread_mutex_init(&bs->mu, NULL);
    snprintf(bs->address, sizeof bs->address, "%s", address);
    if (!(bs->m = shoal_metrics_new())) {
        fprintf(stderr, "shoal bootstrap: out of memory\n");
        return -1;
    }
    bs->requests = shoal_metrics_add_family(bs->m, SHOAL_METRIC_COUNTER,
                                            "shoal_bootstrap_requests_total",
                                            "Requests received, by RPC.", rpc, 1, NULL, 0);
    bs->peers = shoal_metrics_add_family(bs->m, SHOAL_METRIC_GAUGE, "shoal_bootstrap_dht_peers",
                                         "Contacts in the DHT routing table.", NULL, 0, NULL,
                                         0);
    bs->records = shoal_metrics_add_family(bs->m, SHOAL_METRIC_GAUGE,
                                           "shoal_bootstrap_dht_records",
                                           "Records held for the swarm's DHT.", NULL, 0, NULL, 0);
    shoal_statusd_params p = {.host = host, .port = port, .metrics = bs->m,
                              .health = boot_health, .ctx = bs};
    if (bs->requests < 0 || bs->peers < 0 || bs->records < 0 ||
        shoal_statusd_start(&p, &bs->sd, err, sizeof err)) {
        fprintf(stderr, "shoal bootstrap: --http-port: %s\n",
                bs->requests < 0 ? "cannot register the metrics" : err);
        return -1;
    }
    static const char *const ops[] = {"find_node", "find_value", "store", "ping"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        shoal_metrics_inc(bs->m, bs->requests, &ops[i], 0);
    SHOAL_LOG_I("status port: http://%s%s%s:%d/ (/health, /metrics)",
                strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
                shoal_statusd_port(bs->sd));
    return 0;
}

static void boot_status_request(boot_status *bs, uint32_t op)
{
    if (!bs->m)
        return;
    const char *name = shoal_wire_op_name(op);
    const char *v[1] = {name ? name : "unknown"};
    shoal_metrics_inc(bs->m, bs->requests, v, 1);
}

/* The gauges, once a second, from the thread that owns the DHT. */
static void boot_status_tick(boot_status *bs, shoal_dht_net *net, int64_t now)
{
    if (!bs->m || now < bs->next_tick)
        return;
    bs->next_tick = now + 1000;
    shoal_dht_stats st;
    shoal_dht_stats_get(shoal_dht_net_dht(net), &st);
    shoal_metrics_set(bs->m, bs->peers, NULL, st.contacts);
    shoal_metrics_set(bs->m, bs->records, NULL, st.records);
    pthread_mutex_lock(&bs->mu);
    bs->contacts = st.contacts;
    pthread_mutex_unlock(&bs->mu);
}

static void boot_status_stop(boot_status *bs)
{
    if (!bs->m)
        return;
    shoal_statusd_stop(&bs->sd);
    shoal_metrics_destroy(&bs->m);
    pthread_mutex_destroy(&bs->mu);
}

/* Answer one message from the ROUTER. */
static void boot_request(shoal_dht_net *net, void *router, shoal_transport_msg *m,
                         uint8_t *buf, boot_status *bs)
{
    if (m->nframes != 2)
        return;
    shoal_wire_header req;
    int rc = shoal_wire_decode(&req, zmq_msg_data(&m->frame[1]), zmq_msg_size(&m->frame[1]));
    size_t len = 0;
    if (!rc && (req.flags & SHOAL_WIRE_FLAG_REPLY))
        return;
    boot_status_request(bs, rc ? 0 : req.op);
    if (!rc && (req.op == SHOAL_OP_FIND_NODE || req.op == SHOAL_OP_FIND_VALUE ||
                req.op == SHOAL_OP_STORE)) {
        shoal_dht_net_answer(net, router, zmq_msg_data(&m->frame[0]),
                             zmq_msg_size(&m->frame[0]), &req, shoal_dht_net_now());
        return;
    }
    if (!rc && req.op == SHOAL_OP_PING) {
        shoal_wire_header rep;
        shoal_wire_reply_init(&rep, &req);
        if (shoal_wire_encode(&rep, buf, SHOAL_WIRE_HEADER_MAX, &len))
            return;
    } else if (shoal_wire_encode_error(req.request_id, rc ? rc : SHOAL_ERR_UNSUPPORTED,
                                       rc ? "malformed header"
                                          : "a bootstrap node serves no blocks",
                                       buf, SHOAL_WIRE_HEADER_MAX, &len)) {
        return;
    }
    shoal_transport_part parts[2] = {{zmq_msg_data(&m->frame[0]), zmq_msg_size(&m->frame[0])},
                                     {buf, len}};
    shoal_transport_send(router, parts, 2);
}

int shoal_cmd_bootstrap(int argc, char **argv)
{
    enum { O_HOST = 1, O_PUBLIC, O_ADDRFILE, O_PEERS, O_HTTPPORT, O_HTTPHOST };
    static const struct option opts[] = {
        {"port", required_argument, 0, 'p'},        {"host", required_argument, 0, O_HOST},
        {"public-host", required_argument, 0, O_PUBLIC},
        {"identity", required_argument, 0, 'i'},    {"address-file", required_argument, 0, O_ADDRFILE},
        {"initial-peers", required_argument, 0, O_PEERS},
        {"http-port", required_argument, 0, O_HTTPPORT},
        {"http-host", required_argument, 0, O_HTTPHOST},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *host = "0.0.0.0", *pub = NULL, *id_path = NULL, *addr_file = NULL;
    char *peers_arg = NULL;
    const char *http_host = "127.0.0.1";
    long port = 0, http_port = -1;
    int c;
    if ((c = shoal_cli_prepare("bootstrap", opts, ":p:i:h", &argc, &argv)))
        return c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":p:i:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': {
            char *end = NULL;
            errno = 0;
            port = strtol(optarg, &end, 10);
            if (!*optarg || *end || errno || port < 0 || port > 65535) {
                fprintf(stderr, "shoal bootstrap: %s: expected 0..65535, got '%s'\n",
                        shoal_cli_source("--port", optarg), optarg);
                return 2;
            }
            break;
        }
        case O_HOST: host = optarg; break;
        case O_PUBLIC: pub = optarg; break;
        case 'i': id_path = optarg; break;
        case O_ADDRFILE: addr_file = optarg; break;
        case O_PEERS: peers_arg = optarg; break;
        case O_HTTPPORT:
            if (!shoal_cli_int("bootstrap", "--http-port", optarg, 0, 65535, &http_port))
                return 2;
            break;
        case O_HTTPHOST: http_host = optarg; break;
        case 'h': bootstrap_usage(stdout); return 0;
        default: return shoal_cli_bad_option("bootstrap", c, argv);
        }
    }
    if (optind != argc) {
        fprintf(stderr, "shoal bootstrap: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    const char *peers[BOOT_MAX_PEERS];
    size_t npeers = 0;
    for (char *tok = peers_arg, *next; tok; tok = next) {
        next = strchr(tok, ',');
        if (next)
            *next++ = 0;
        shoal_addr a;
        if (!*tok || shoal_addr_parse(&a, tok) || npeers == BOOT_MAX_PEERS) {
            fprintf(stderr, "shoal bootstrap: %s: '%s' is not a node address "
                            "(or more than %d)\n",
                    shoal_cli_source("--initial-peers", peers_arg), tok, BOOT_MAX_PEERS);
            return 2;
        }
        peers[npeers++] = tok;
    }

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    char err[512] = "";
    shoal_identity *id = NULL;
    void *zctx = NULL, *zap = NULL, *router = NULL;
    shoal_dht_net *net = NULL;
    boot_status bs = {0};
    uint8_t *buf = malloc(SHOAL_WIRE_HEADER_MAX);
    zmq_pollitem_t *items = malloc((2 + 1024) * sizeof *items);
    if (!buf || !items || sodium_init() < 0) {
        fprintf(stderr, "shoal bootstrap: cannot start\n");
        goto out;
    }
    if (boot_identity(id_path, &id))
        goto out;
    int bound = 0, rc;
    zctx = shoal_transport_ctx_new();
    if (!zctx || shoal_transport_zap_open(zctx, &zap)) {
        fprintf(stderr, "shoal bootstrap: cannot set up ZeroMQ\n");
        goto out;
    }
    if (shoal_transport_server_open(zctx, id, host, (int)port, 2 * SHOAL_WIRE_HEADER_MAX,
                                    &router, &bound, err, sizeof err)) {
        fprintf(stderr, "shoal bootstrap: %s\n", err);
        goto out;
    }
    char hostbuf[SHOAL_ADDR_HOST_MAX], address[SHOAL_ADDR_MAX];
    if (pub)
        snprintf(hostbuf, sizeof hostbuf, "%s", pub);
    else if (node_daemon_is_wildcard(host))
        node_daemon_public_host(host, hostbuf, sizeof hostbuf);
    else
        snprintf(hostbuf, sizeof hostbuf, "%s", host);
    shoal_addr sa;
    if (shoal_addr_init(&sa, hostbuf, (uint16_t)bound, shoal_identity_public_key(id)) ||
        shoal_addr_format(&sa, address, sizeof address)) {
        fprintf(stderr, "shoal bootstrap: '%s' cannot be written in a node address\n", hostbuf);
        status = 2;
        goto out;
    }
    shoal_dht_net_params np = shoal_dht_net_params_default();
    np.zmq_ctx = zctx;
    memcpy(np.dht.self_id, shoal_identity_peer_id(id), 32);
    snprintf(np.dht.self_addr, sizeof np.dht.self_addr, "%s", address);
    randombytes_buf(np.dht.seed, sizeof np.dht.seed);
    np.dht.validate = shoal_record_dht_validate;
    if ((rc = shoal_dht_net_new(&np, &net))) {
        fprintf(stderr, "shoal bootstrap: cannot start the DHT: %s\n", shoal_strerror(rc));
        goto out;
    }
    if (npeers && (rc = shoal_dht_bootstrap(shoal_dht_net_dht(net), peers, npeers,
                                            shoal_dht_net_now(), NULL, NULL))) {
        fprintf(stderr, "shoal bootstrap: --initial-peers: %s\n", shoal_strerror(rc));
        status = 2;
        goto out;
    }
    if (addr_file && node_daemon_write_atomic(addr_file, address)) {
        fprintf(stderr, "shoal bootstrap: cannot write %s: %s\n", addr_file, strerror(errno));
        goto out;
    }
    printf("%s\n", address);
    fflush(stdout);
    SHOAL_LOG_I("bootstrap node on %s", address);
    if (http_port >= 0 && boot_status_start(&bs, http_host, (int)http_port, address))
        goto out;

    size_t max_total = 2 * SHOAL_WIRE_HEADER_MAX + 256;
    int64_t wake = 0;
    struct timespec zero = {0, 0};
    for (;;) {
        int sig = sigtimedwait(&sigs, NULL, &zero);
        if (sig == SIGINT || sig == SIGTERM) {
            SHOAL_LOG_I("%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
            status = 0;
            break;
        }
        int64_t now = shoal_dht_net_now();
        if (now >= wake)
            wake = shoal_dht_net_pump(net, now);
        boot_status_tick(&bs, net, now);
        items[0] = (zmq_pollitem_t){router, 0, ZMQ_POLLIN, 0};
        items[1] = (zmq_pollitem_t){zap, 0, ZMQ_POLLIN, 0};
        size_t k = shoal_dht_net_poll_items(net, items + 2, 1024);
        long t = wake - now < BOOT_POLL_MS ? (long)(wake - now) : BOOT_POLL_MS;
        int r = zmq_poll(items, (int)(2 + k), t < 0 ? 0 : t);
        if (r < 0 && errno != EINTR) {
            SHOAL_LOG_E("poll failed: %s", zmq_strerror(errno));
            break;
        }
        if (r <= 0)
            continue;
        now = shoal_dht_net_now();
        if (items[1].revents & ZMQ_POLLIN)
            while (shoal_transport_zap_serve(zap) == 0) {
            }
        if (shoal_dht_net_on_poll(net, items + 2, k, now))
            wake = now;
        if (items[0].revents & ZMQ_POLLIN) {
            for (int i = 0; i < BOOT_BATCH; i++) {
                shoal_transport_msg m;
                shoal_transport_msg_init(&m);
                rc = shoal_transport_recv(router, &m, 2, max_total, ZMQ_DONTWAIT);
                if (rc == SHOAL_ERR_TIMEOUT || rc == SHOAL_ERR_IO)
                    break;
                if (rc)
                    continue;
                boot_request(net, router, &m, buf, &bs);
                shoal_transport_msg_close(&m);
            }
            wake = now;
        }
    }
out:
    boot_status_stop(&bs);
    shoal_dht_net_destroy(&net);
    shoal_transport_close(&router);
    shoal_transport_close(&zap);
    if (zctx)
        zmq_ctx_term(zctx);
    shoal_identity_destroy(&id);
    free(buf);
    free(items);
    return status;
}
