/*
 * `shoal serve`: run a node that serves blocks A:B of a GGUF model.
 *
 * At start it prints the node's address (one line on standard output,
 * "shoal://HOST:PORT/KEY") and, with --address-file, writes it alone to that
 * file (a temporary file renamed into place, so a watcher never reads half
 * an address). Diagnostics go to standard error through swarm/log.h.
 *
 * Signals: SIGINT and SIGTERM are blocked in every thread and taken by the
 * main thread with sigtimedwait(). SIGINT stops the node cleanly (jobs in
 * hand finish, sessions close) and returns 0. SIGTERM is a graceful leave:
 * the node refuses new sessions and tells its clients to move theirs
 * (shoal_node_leave), serves the sessions it has until their clients have
 * closed them or --grace seconds have passed, then stops the same way; a
 * second signal stops it at once. No signal handler, no global flag.
 *
 * The swarm (node/announce.h): with --initial-peers the node joins the DHT
 * and announces its span in signed records (OFFLINE when it leaves or
 * stops). Without --blocks it places itself: it measures its throughput,
 * waits a random moment (so that servers started together spread out),
 * reads the records and takes --num-blocks blocks (or what its memory
 * budget holds) where the swarm is weakest; with --rebalance-period it
 * re-checks, and a move is a graceful leave of the old span followed by
 * the new span opened on the same port (same address).
 *
 * Under a service manager ($NOTIFY_SOCKET, node/notify.h): READY=1 once
 * every block of the span has its ONLINE record in the DHT (at once for a
 * node without --initial-peers), again after a move; STOPPING=1 when a
 * signal begins the leave or the stop.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "client/cmd.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "kernels/pool.h"
#include "node/announce.h"
#include "node/daemon.h"
#include "node/node.h"
#include "node/notify.h"
#include "node/serve_http.h"
#include "proto/addr.h"
#include "proto/identity.h"
#include "swarm/cli.h"
#include "swarm/log.h"
#include "swarm/metrics.h"
#include "swarm/progress.h"
#include "swarm/record.h"

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal serve -m MODEL.gguf (--blocks A:B | --initial-peers ADDR,...) [options]\n"
            "\n"
            "Serves blocks A..B-1 of a model to clients over encrypted ZeroMQ. Prints the\n"
            "node's address (shoal://HOST:PORT/KEY) on standard output.\n"
            "\n"
            "  -m, --model FILE         GGUF model (only the span's tensors are read)\n"
            "  -b, --blocks A:B         blocks to serve, 0 <= A < B <= the model's blocks\n"
            "                           (without it: chosen where the swarm is weakest)\n"
            "      --initial-peers A,...  join the swarm's DHT through these nodes and\n"
            "                           announce the span served (signed records)\n"
            "      --num-blocks N       without --blocks: serve N blocks (default: as many\n"
            "                           as --memory-budget holds); auto: by speed, as many\n"
            "                           as this node runs in the time the swarm's median\n"
            "                           server takes for its span (at most what memory\n"
            "                           holds; all of that in an empty swarm)\n"
            "      --memory-budget MIB  memory for weights and KV cache, for --num-blocks'\n"
            "                           default (default: half of this machine's memory)\n"
            "      --rebalance-period S without --blocks: re-check the placement every S\n"
            "                           seconds and move when the swarm gains (default 60;\n"
            "                           0: never)\n"
            "  -p, --port P             TCP port (default 0: any free port)\n"
            "      --host H             interface to listen on (default 0.0.0.0)\n"
            "      --public-host H      host to write in the address (default: --host, or\n"
            "                           this machine's first address for a wildcard)\n"
            "  -i, --identity FILE      node identity (created, mode 0600, if missing;\n"
            "                           default: a new key each run)\n"
            "      --address-file FILE  also write the address alone to FILE\n"
            "  -t, --threads N          compute threads in all (default: all cores)\n"
            "      --workers N          requests computed at once (default: threads / 4)\n"
            "      --cache-tokens N     KV-cache budget in tokens (default: 2 GiB worth)\n"
            "      --max-sessions N     open sessions at most (default 256)\n"
            "      --max-length N       longest session in tokens (default: the budget)\n"
            "      --max-batch N        tokens per request (default 512)\n"
            "      --session-timeout S  close sessions idle for S seconds (default 300)\n"
            "      --busy-wait MS       how long an open waits for cache space (default 2000)\n"
            "      --grace S            on SIGTERM, serve open sessions at most S more seconds\n"
            "                           while their clients move them (default 5; 0: stop)\n"
            "      --adapter NAME=FILE  serve a LoRA adapter (GGUF, llama.cpp layout) that\n"
            "                           sessions may ask for by NAME (repeatable, 16 at most)\n"
            "      --http-port P        also serve HTTP on P (0: any free port): /health (200\n"
            "                           once the blocks are online), /metrics (Prometheus),\n"
            "                           / (the swarm dashboard) and /api/v1/state (JSON)\n"
            "      --http-host H        interface for --http-port (default 127.0.0.1)\n"
            "  -h, --help               show this help\n");
    shoal_cli_help_common(out, "serve");
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "shoal serve: %s: expected an integer in [%ld, %ld], got '%s'\n",
                shoal_cli_source(opt, s), lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_blocks(const char *s, int *a, int *b)
{
    char *end = NULL;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (end == s || *end != ':' || errno || x < 0 || x > INT_MAX)
        goto bad;
    const char *t = end + 1;
    long y = strtol(t, &end, 10);
    if (end == t || *end || errno || y <= x || y > INT_MAX)
        goto bad;
    *a = (int)x;
    *b = (int)y;
    return 0;
bad:
    fprintf(stderr, "shoal serve: %s: expected A:B with 0 <= A < B, got '%s'\n",
            shoal_cli_source("--blocks", s), s);
    return -1;
}

/* The node's identity: --identity's file (loaded or created), or a fresh
 * in-memory one. */
static int get_identity(const char *path, shoal_identity **id)
{
    if (path)
        return node_daemon_identity("serve", path, id);
    SHOAL_LOG_W("no --identity: this node gets a new key (and address) each run");
    return shoal_identity_generate(id);
}

/* ---- the swarm: joining, placement, moves (node/announce.h) ------------- */

#define SERVE_MAX_PEERS 64

typedef struct serve_swarm {
    char *peers_arg;
    const char *peers[SERVE_MAX_PEERS];
    size_t npeers;
    int num_blocks;          /* 0: from the memory budget */
    int by_speed;            /* --num-blocks auto: from the swarm's speeds, capped by memory */
    long budget_mib;         /* 0: half of the machine's memory */
    long rebalance_s, ttl_s, refresh_s, delay_ms;
    int placed;              /* the span was chosen here: rebalancing may move it */
    double throughput;       /* tokens/s per block, measured */
    struct shoal_metrics *metrics; /* --http-port: every node's metrics */
} serve_swarm;

static int serve_parse_peers(serve_swarm *sw)
{
    for (char *tok = sw->peers_arg, *next; tok; tok = next) {
        next = strchr(tok, ',');
        if (next)
            *next++ = 0;
        shoal_addr a;
        if (!*tok || shoal_addr_parse(&a, tok) || sw->npeers == SERVE_MAX_PEERS) {
            fprintf(stderr, "shoal serve: %s: '%s' is not a node address "
                            "(shoal://HOST:PORT/KEY), or more than %d\n",
                    shoal_cli_source("--initial-peers", sw->peers_arg), tok, SERVE_MAX_PEERS);
            return -1;
        }
        sw->peers[sw->npeers++] = tok;
    }
    return 0;
}

/* Choose the span (no --blocks): 0, or an exit status. */
static int serve_place(serve_swarm *sw, const shoal_gguf *g, shoal_node_params *np)
{
    char err[512];
    shoal_hparams hp;
    shoal_model_id mid;
    if (shoal_hparams_read(g, &hp, err, sizeof err) || shoal_model_id_compute(g, &mid)) {
        fprintf(stderr, "shoal serve: %s\n", err);
        return 1;
    }
    int len = sw->num_blocks;
    if (!len) {
        uint64_t budget = (uint64_t)sw->budget_mib << 20;
        if (!budget) {
            long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
            budget = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / 2 : 1ull << 30;
        }
        len = shoal_announce_blocks_for_budget(g, budget, np->cache_tokens ? np->cache_tokens
                                                                           : 4096);
    }
    if (len > hp.n_layer)
        len = hp.n_layer;
    sw->throughput = shoal_announce_measure(g, 0, np->threads);
    /* a random moment, so that servers started together see each other */
    uint32_t r;
    randombytes_buf(&r, sizeof r);
    long delay = sw->delay_ms ? (long)(r % (uint32_t)(sw->delay_ms + 1)) : 0;
    struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    uint32_t start = 0;
    size_t seen = 0;
    uint32_t ulen = (uint32_t)len;
    int rc = shoal_announce_choose(sw->peers, sw->npeers, &mid, (uint32_t)hp.n_layer, &ulen,
                                   sw->by_speed ? sw->throughput : 0, 30000, &start, &seen, err,
                                   sizeof err);
    if (rc) {
        fprintf(stderr, "shoal serve: %s\n", err);
        return 1;
    }
    len = (int)ulen;
    np->block_begin = (int)start;
    np->block_end = (int)start + len;
    sw->placed = 1;
    SHOAL_LOG_I("placement: blocks %d:%d of %d (%zu servers seen, %.0f tokens/s per block "
                "here, after %ld ms)", np->block_begin, np->block_end, hp.n_layer, seen,
                sw->throughput, delay);
    return 0;
}

/* Make the node for np's span and load its adapters. 0, or an error with
 * *status set. */
/* Loads the pages of blocks [b0, b1) (g's mapping keeps them), with a bar
 * on a terminal, so that the first session does not wait for the disk. */
static void serve_load(const shoal_gguf *g, int b0, int b1)
{
    shoal_model *m = NULL;
    char err[256], label[32];
    if (shoal_model_open(g, b0, b1, 0, &m, err, sizeof err))
        return; /* shoal_node_new has said what is wrong */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    snprintf(label, sizeof label, "loading blocks %d:%d", b0, b1);
    shoal_progress bar;
    shoal_progress_init(&bar, label, shoal_model_weight_bytes(m), SHOAL_PROGRESS_BYTES);
    shoal_model_prefault(m, shoal_progress_cb, &bar);
    shoal_progress_fini(&bar, true);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    shoal_log(s >= 1 ? SHOAL_LOG_INFO : SHOAL_LOG_DEBUG, "loaded blocks %d:%d (%.0f MiB) in %.1f s",
              b0, b1, (double)shoal_model_weight_bytes(m) / (1 << 20), s);
    shoal_model_destroy(&m);
}

static int serve_open_node(const shoal_gguf *g, const shoal_identity *id,
                           const shoal_node_params *np, char **adapters, int n_adapters,
                           shoal_node **node, int *status)
{
    char err[512];
    int rc = shoal_node_new(g, id, np, node, err, sizeof err);
    if (rc) {
        fprintf(stderr, "shoal serve: %s\n", err);
        *status = rc == SHOAL_ERR_ARG || rc == SHOAL_ERR_RANGE ? 2 : 1;
        return rc;
    }
    serve_load(g, np->block_begin, np->block_end);
    for (int i = 0; i < n_adapters; i++) {
        const char *path = adapters[i] + strlen(adapters[i]) + 1; /* after NAME's NUL */
        if ((rc = shoal_node_add_adapter(*node, adapters[i], path, err, sizeof err))) {
            fprintf(stderr, "shoal serve: %s\n", err);
            *status = rc == SHOAL_ERR_ARG ? 2 : 1;
            shoal_node_destroy(node);
            return rc;
        }
    }
    return 0;
}

/* Join the DHT and attach the announcer to node (before its start). */
static int serve_announce(serve_swarm *sw, const shoal_gguf *g, const shoal_identity *id,
                          const shoal_node_params *np, shoal_node *node, shoal_announce **ann)
{
    char err[512];
    shoal_hparams hp;
    if (shoal_hparams_read(g, &hp, err, sizeof err)) {
        fprintf(stderr, "shoal serve: %s\n", err);
        return SHOAL_ERR_FORMAT;
    }
    if (!sw->throughput) /* --blocks given: measure a block the node serves */
        sw->throughput = shoal_announce_measure(g, np->block_begin, np->threads);
    shoal_announce_params ap = shoal_announce_params_default();
    ap.initial_peers = sw->peers;
    ap.n_initial = sw->npeers;
    ap.record_ttl_ms = sw->ttl_s * 1000;
    ap.refresh_ms = sw->refresh_s * 1000;
    ap.rebalance_ms = sw->placed ? sw->rebalance_s * 1000 : 0;
    ap.throughput = sw->throughput;
    int rc = shoal_announce_new(id, shoal_node_address(node), shoal_node_model_id(node),
                                (uint32_t)hp.n_layer, &ap, ann, err, sizeof err);
    if (rc) {
        fprintf(stderr, "shoal serve: %s\n", err);
        return rc;
    }
    shoal_node_set_announce(node, *ann);
    return 0;
}

/* --http-port: the status port (node/serve_http.h), with the swarm's state
 * read through the node itself and its initial peers. */
static int serve_http_begin(const serve_swarm *sw, const shoal_gguf *g, shoal_node *node,
                            const char *host, int port, const char *model_path,
                            serve_http **out)
{
    char err[512];
    shoal_hparams hp;
    if (shoal_hparams_read(g, &hp, err, sizeof err)) {
        fprintf(stderr, "shoal serve: %s\n", err);
        return -1;
    }
    const char *initial[SERVE_MAX_PEERS + 1];
    size_t n = 0;
    if (sw->peers_arg) {
        initial[n++] = shoal_node_address(node);
        for (size_t i = 0; i < sw->npeers; i++)
            initial[n++] = sw->peers[i];
    }
    serve_http_params hp2 = {.host = host,
                             .port = port,
                             .metrics = sw->metrics,
                             .initial = initial,
                             .n_initial = n,
                             .id = *shoal_node_model_id(node),
                             .nblocks = (uint32_t)hp.n_layer,
                             .model_path = model_path};
    if (serve_http_start(&hp2, out, err, sizeof err)) {
        fprintf(stderr, "shoal serve: --http-port: %s\n", err);
        return -1;
    }
    SHOAL_LOG_I("status port: http://%s%s%s:%d/ (/health, /metrics, /api/v1/state)",
                strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
                serve_http_port(*out));
    return 0;
}

/* Move to blocks [b0, b1): leave the old span (its sessions move away, up
 * to grace_s), stop, announce JOINING, open the new span on the same port,
 * attach and start. 1: moved; 0: a signal came meanwhile (stop cleanly);
 * -1: the new node failed. */
static int serve_move(serve_swarm *sw, const shoal_gguf *g, const shoal_identity *id,
                      shoal_node_params *np, char **adapters, int n_adapters, long grace_s,
                      const sigset_t *sigs, shoal_announce *ann, shoal_node **node,
                      uint32_t b0, uint32_t b1)
{
    SHOAL_LOG_I("moving from blocks %d:%d to %u:%u", np->block_begin, np->block_end, b0, b1);
    shoal_node_leave(*node);
    struct timespec t0, now, tick = {0, 50 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int sig = sigtimedwait(sigs, NULL, &tick);
        if (sig == SIGINT || sig == SIGTERM)
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double t = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) * 1e-9;
        if (shoal_node_sessions(*node) == 0 || t >= (double)grace_s)
            break;
    }
    shoal_node_stop(*node);
    np->port = shoal_node_port(*node); /* the same address */
    uint64_t cache = shoal_node_cache_tokens(*node);
    shoal_node_destroy(node);
    shoal_announce_publish(ann, b0, b1, SHOAL_RECORD_JOINING, cache, 0, 1000);
    np->block_begin = (int)b0;
    np->block_end = (int)b1;
    int status = 1;
    char err[512];
    if (serve_open_node(g, id, np, adapters, n_adapters, node, &status))
        return -1;
    if (sw->metrics && shoal_node_set_metrics(*node, sw->metrics))
        return -1;
    shoal_node_set_announce(*node, ann);
    if (shoal_node_start(*node, err, sizeof err)) {
        fprintf(stderr, "shoal serve: %s\n", err);
        return -1;
    }
    SHOAL_LOG_I("now serving blocks %u:%u", b0, b1);
    return 1;
}

int shoal_cmd_serve(int argc, char **argv)
{
    enum { O_HOST = 1, O_PUBLIC, O_ADDRFILE, O_WORKERS, O_CACHE, O_MAXSESS, O_MAXLEN,
           O_MAXBATCH, O_TIMEOUT, O_BUSY, O_ADAPTER, O_GRACE,
           O_PEERS, O_NUMBLK, O_BUDGET, O_REBAL, O_TTL, O_REFRESH, O_PDELAY,
           O_HTTPPORT, O_HTTPHOST };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},    {"blocks", required_argument, 0, 'b'},
        {"port", required_argument, 0, 'p'},     {"host", required_argument, 0, O_HOST},
        {"public-host", required_argument, 0, O_PUBLIC},
        {"identity", required_argument, 0, 'i'}, {"address-file", required_argument, 0, O_ADDRFILE},
        {"threads", required_argument, 0, 't'},  {"workers", required_argument, 0, O_WORKERS},
        {"cache-tokens", required_argument, 0, O_CACHE},
        {"max-sessions", required_argument, 0, O_MAXSESS},
        {"max-length", required_argument, 0, O_MAXLEN},
        {"max-batch", required_argument, 0, O_MAXBATCH},
        {"session-timeout", required_argument, 0, O_TIMEOUT},
        {"busy-wait", required_argument, 0, O_BUSY},
        {"help", no_argument, 0, 'h'},
        {"adapter", required_argument, 0, O_ADAPTER},
        {"grace", required_argument, 0, O_GRACE},
        /* the swarm (node/announce.h) */
        {"initial-peers", required_argument, 0, O_PEERS},
        {"num-blocks", required_argument, 0, O_NUMBLK},
        {"memory-budget", required_argument, 0, O_BUDGET},
        {"rebalance-period", required_argument, 0, O_REBAL},
        {"record-ttl", required_argument, 0, O_TTL},          /* hidden: tests */
        {"refresh-period", required_argument, 0, O_REFRESH},  /* hidden: tests */
        {"placement-delay", required_argument, 0, O_PDELAY},  /* hidden: ms, tests */
        {"http-port", required_argument, 0, O_HTTPPORT},
        {"http-host", required_argument, 0, O_HTTPHOST},
        {0, 0, 0, 0},
    };
    shoal_node_params np = shoal_node_params_default();
    np.threads = shoal_cpu_count();
    const char *model_path = NULL, *id_path = NULL, *addr_file = NULL;
    const char *http_host = "127.0.0.1";
    int http_port = -1; /* -1: no status port */
    int have_blocks = 0;
    long grace_s = 5;
    char *adapters[16]; /* "NAME=FILE" (split at '=' below) */
    int n_adapters = 0;
    serve_swarm sw = {.rebalance_s = 60, .ttl_s = 300, .refresh_s = 60, .delay_ms = 2000};
    long v;
    int c;
    if ((c = shoal_cli_prepare("serve", opts, ":m:b:p:i:t:h", &argc, &argv)))
        return c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:b:p:i:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'b':
            if (parse_blocks(optarg, &np.block_begin, &np.block_end))
                return 2;
            have_blocks = 1;
            break;
        case 'p': if (parse_long("--port", optarg, 0, 65535, &v)) return 2; np.port = (int)v; break;
        case O_HOST: np.host = optarg; break;
        case O_PUBLIC: np.public_host = optarg; break;
        case 'i': id_path = optarg; break;
        case O_ADDRFILE: addr_file = optarg; break;
        case 't': if (parse_long("--threads", optarg, 1, 1024, &v)) return 2; np.threads = (int)v; break;
        case O_WORKERS: if (parse_long("--workers", optarg, 1, 64, &v)) return 2; np.workers = (int)v; break;
        case O_CACHE: if (parse_long("--cache-tokens", optarg, 1, 1L << 30, &v)) return 2; np.cache_tokens = (uint64_t)v; break;
        case O_MAXSESS: if (parse_long("--max-sessions", optarg, 1, 65536, &v)) return 2; np.max_sessions = (int)v; break;
        case O_MAXLEN: if (parse_long("--max-length", optarg, 1, 1L << 24, &v)) return 2; np.max_length = (uint32_t)v; break;
        case O_MAXBATCH: if (parse_long("--max-batch", optarg, 1, 65536, &v)) return 2; np.max_batch = (int)v; break;
        case O_TIMEOUT: if (parse_long("--session-timeout", optarg, 1, 1L << 24, &v)) return 2; np.session_timeout_s = (double)v; break;
        case O_BUSY: if (parse_long("--busy-wait", optarg, 0, 600000, &v)) return 2; np.busy_wait_ms = (int)v; break;
        case O_ADAPTER:
            if (!strchr(optarg, '=') || optarg[0] == '=' || n_adapters == 16) {
                fprintf(stderr, "shoal serve: %s: expected NAME=FILE (16 at most), got '%s'\n",
                        shoal_cli_source("--adapter", optarg), optarg);
                return 2;
            }
            adapters[n_adapters++] = optarg;
            break;
        case O_GRACE: if (parse_long("--grace", optarg, 0, 3600, &v)) return 2; grace_s = v; break;
        case O_PEERS: sw.peers_arg = optarg; break;
        case O_NUMBLK:
            if (!strcmp(optarg, "auto")) {
                sw.by_speed = 1;
                break;
            }
            if (parse_long("--num-blocks", optarg, 1, 1L << 20, &v)) return 2;
            sw.num_blocks = (int)v;
            break;
        case O_BUDGET: if (parse_long("--memory-budget", optarg, 1, 1L << 40, &v)) return 2; sw.budget_mib = v; break;
        case O_REBAL: if (parse_long("--rebalance-period", optarg, 0, 1L << 20, &v)) return 2; sw.rebalance_s = v; break;
        case O_TTL: if (parse_long("--record-ttl", optarg, 3, 540, &v)) return 2; sw.ttl_s = v; break;
        case O_REFRESH: if (parse_long("--refresh-period", optarg, 1, 3600, &v)) return 2; sw.refresh_s = v; break;
        case O_PDELAY: if (parse_long("--placement-delay", optarg, 0, 600000, &v)) return 2; sw.delay_ms = v; break;
        case O_HTTPPORT: if (parse_long("--http-port", optarg, 0, 65535, &v)) return 2; http_port = (int)v; break;
        case O_HTTPHOST: http_host = optarg; break;
        case 'h': serve_usage(stdout); return 0;
        default: return shoal_cli_bad_option("serve", c, argv);
        }
    }
    if (!model_path || (!have_blocks && !sw.peers_arg) || optind != argc) {
        fprintf(stderr, "shoal serve: -m MODEL and --blocks A:B (or --initial-peers, to "
                        "choose the blocks) are required (see --help)\n");
        return 2;
    }
    if (have_blocks && (sw.num_blocks || sw.by_speed || sw.budget_mib)) {
        fprintf(stderr, "shoal serve: --num-blocks and --memory-budget are for a node "
                        "without --blocks\n");
        return 2;
    }
    if (sw.peers_arg && serve_parse_peers(&sw))
        return 2;
    for (int i = 0; i < n_adapters; i++) /* NAME=FILE -> NAME, FILE */
        *strchr(adapters[i], '=') = 0;

    /* Before any thread exists (ZeroMQ starts some): every thread inherits
     * the mask, so only sigtimedwait() below ever takes these signals. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    char err[512];
    shoal_gguf *g = NULL;
    shoal_identity *id = NULL;
    shoal_node *node = NULL;
    shoal_announce *ann = NULL;
    serve_http *http = NULL;
    int rc = shoal_gguf_open(model_path, &g, err, sizeof err);
    if (rc) {
        fprintf(stderr, "shoal serve: %s\n", err);
        goto out;
    }
    if (get_identity(id_path, &id))
        goto out;
    if (sw.peers_arg && !have_blocks && (status = serve_place(&sw, g, &np)) != 0)
        goto out;
    status = 1;
    if ((rc = serve_open_node(g, id, &np, adapters, n_adapters, &node, &status)))
        goto out;
    if (sw.peers_arg && (rc = serve_announce(&sw, g, id, &np, node, &ann)))
        goto out;
    if (addr_file && node_daemon_write_atomic(addr_file, shoal_node_address(node))) {
        fprintf(stderr, "shoal serve: cannot write %s: %s\n", addr_file, strerror(errno));
        goto out;
    }
    if (http_port >= 0 && !(sw.metrics = shoal_metrics_new())) {
        fprintf(stderr, "shoal serve: out of memory\n");
        goto out;
    }
    if (sw.metrics && shoal_node_set_metrics(node, sw.metrics)) {
        fprintf(stderr, "shoal serve: cannot register the node's metrics\n");
        goto out;
    }
    if ((rc = shoal_node_start(node, err, sizeof err))) {
        fprintf(stderr, "shoal serve: %s\n", err);
        goto out;
    }
    printf("%s\n", shoal_node_address(node));
    fflush(stdout);
    if (http_port >= 0 && serve_http_begin(&sw, g, node, http_host, http_port, model_path, &http))
        goto out;

    struct timespec tick = {0, 200 * 1000 * 1000};
    struct timespec leave_tick = {0, 50 * 1000 * 1000};
    struct timespec t_leave = {0, 0};
    int ready_begin = -1, ready_end = -1; /* the span systemd was told about */
    for (;;) {
        int leaving = shoal_node_leaving(node);
        int online = !ann || shoal_announce_online(ann);
        serve_http_update(http, shoal_node_address(node), np.block_begin, np.block_end,
                          leaving ? "leaving" : online ? "online" : "joining",
                          online && !leaving, shoal_node_sessions(node), sw.throughput);
        /* systemd (node/notify.h): ready once the span is online in the DHT,
         * or at once without one; again after a move */
        if (!leaving && (ready_begin != np.block_begin || ready_end != np.block_end) &&
            (!ann || shoal_announce_online(ann))) {
            shoal_notify_sendf("READY=1\nSTATUS=serving blocks %d:%d as %s", np.block_begin,
                               np.block_end, shoal_node_address(node));
            ready_begin = np.block_begin;
            ready_end = np.block_end;
        }
        int sig = sigtimedwait(&sigs, NULL, leaving ? &leave_tick : &tick);
        if (sig == SIGTERM && !leaving && grace_s > 0) {
            SHOAL_LOG_I("SIGTERM: leaving (at most %ld s for %d open sessions to move)", grace_s,
                        shoal_node_sessions(node));
            shoal_notify_send("STOPPING=1\nSTATUS=leaving: sessions move elsewhere");
            shoal_node_leave(node);
            clock_gettime(CLOCK_MONOTONIC, &t_leave);
            continue;
        }
        if (sig == SIGINT || sig == SIGTERM) {
            SHOAL_LOG_I("%s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
            shoal_notify_send("STOPPING=1\nSTATUS=stopping");
            status = 0;
            break;
        }
        if (!shoal_node_running(node)) {
            SHOAL_LOG_E("the node stopped on its own");
            break;
        }
        uint32_t mb, me; /* >>> rebalancing: node/announce.h */
        if (ann && !leaving && shoal_announce_move_wanted(ann, &mb, &me)) {
            serve_http_update(http, shoal_node_address(node), np.block_begin, np.block_end,
                              "moving", false, shoal_node_sessions(node), sw.throughput);
            int r = serve_move(&sw, g, id, &np, adapters, n_adapters, grace_s, &sigs, ann,
                               &node, mb, me);
            if (r == 1)
                continue;
            status = r == 0 ? 0 : 1;
            break;
        } /* <<< rebalancing */
        if (leaving) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double left = (double)grace_s - (double)(now.tv_sec - t_leave.tv_sec) -
                          (double)(now.tv_nsec - t_leave.tv_nsec) * 1e-9;
            int open = shoal_node_sessions(node);
            if (open == 0 || left <= 0) {
                SHOAL_LOG_I("left: %d sessions still open", open);
                status = 0;
                break;
            }
        }
    }
    shoal_node_stop(node);
    if (ann)
        shoal_announce_leave(ann, 2000); /* OFFLINE records for our span */
    SHOAL_LOG_I("stopped");
out:
    serve_http_stop(&http);
    shoal_node_destroy(&node);
    shoal_announce_destroy(&ann);
    shoal_metrics_destroy(&sw.metrics);
    shoal_identity_destroy(&id);
    shoal_gguf_close(&g);
    return status;
}
