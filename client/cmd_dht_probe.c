/*
 * `shoal dht-probe` (a test tool, not listed in help): measures a live DHT
 * from a client's seat.
 *
 * Lookups: joins through --initial-peers and looks up --lookups random
 * ids (--parallel at once); a lookup succeeds when the closest node it
 * returns is the closest node to the target among all the addresses in
 * --nodes (every live DHT node, one address per line), computed by brute
 * force, or closer still (a live node the list lacks: it answered). Put/get: signs --put-get records with a fresh identity for a
 * random model (one per block), puts them, then a second client joined
 * through another node of --nodes gets every block's key; a get succeeds
 * when it returns that record, verified.
 *
 * Prints one summary line per part and a JSON line with --json; exits 0
 * when every lookup and get succeeded, 1 otherwise.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/cli.h"
#include "client/cmd.h"
#include "kernels/err.h"
#include "proto/addr.h"
#include "proto/identity.h"
#include "swarm/dht_net.h"
#include "swarm/record.h"
#include "swarm/transport.h"

#define PROBE_MAX_NODES 100000

typedef struct probe_state {
    shoal_dht_net *net;
    uint8_t (*ids)[32];      /* every live node's id */
    size_t nids;
    long todo, started, done, ok;
    long parallel, inflight;
    uint32_t hops_hist[64];
    uint32_t max_hops;
    /* put/get */
    uint8_t model_hash[32];
    uint8_t owner[32];
    long puts_ok, gets_ok;
    shoal_identity *id;
    char addr[SHOAL_ADDR_MAX];
    shoal_dht_net *reader;   /* the second client */
} probe_state;

static void closest_of(const probe_state *s, const uint8_t *target, uint8_t *out)
{
    size_t best = 0;
    for (size_t i = 1; i < s->nids; i++)
        if (shoal_dht_cmp_distance(target, s->ids[i], s->ids[best]) < 0)
            best = i;
    memcpy(out, s->ids[best], 32);
}

typedef struct lookup {
    probe_state *s;
    uint8_t target[32];
} lookup;

static void on_found(void *ctx, int status, const shoal_dht_contact *nodes, size_t n,
                     const shoal_dht_lookup_info *info)
{
    lookup *l = ctx;
    probe_state *s = l->s;
    s->inflight--;
    s->done++;
    uint8_t want[32];
    closest_of(s, l->target, want);
    /* a node closer than every listed one is a live node too (it answered) */
    if (status == 0 && n && shoal_dht_cmp_distance(l->target, nodes[0].id, want) <= 0)
        s->ok++;
    uint32_t h = info ? info->hops : 0;
    s->hops_hist[h < 63 ? h : 63]++;
    if (h > s->max_hops)
        s->max_hops = h;
    free(l);
}

static bool lookups_done(void *ctx)
{
    probe_state *s = ctx;
    while (s->started < s->todo && s->inflight < s->parallel) {
        lookup *l = malloc(sizeof *l);
        if (!l)
            return true;
        l->s = s;
        randombytes_buf(l->target, 32);
        if (shoal_dht_find_node(shoal_dht_net_dht(s->net), l->target, shoal_dht_net_now(),
                                on_found, l)) {
            free(l);
            break; /* busy: later */
        }
        s->started++;
        s->inflight++;
    }
    return s->done >= s->todo;
}

static void on_put(void *ctx, int status, size_t stored, const shoal_dht_lookup_info *info)
{
    (void)info;
    probe_state *s = ctx;
    s->inflight--;
    s->done++;
    if (status == 0 && stored)
        s->puts_ok++;
}

typedef struct getq {
    probe_state *s;
    uint32_t block;
} getq;

static void on_get(void *ctx, int status, const shoal_dht_value *v, size_t n,
                   const shoal_dht_lookup_info *info)
{
    (void)info;
    getq *g = ctx;
    probe_state *s = g->s;
    s->inflight--;
    s->done++;
    uint8_t key[32];
    shoal_record_block_key(s->model_hash, g->block, key);
    for (size_t i = 0; status == 0 && i < n; i++) {
        shoal_record r;
        if (!shoal_record_validate(v[i].data, v[i].len, key, shoal_dht_net_now(),
                                   SHOAL_RECORD_MAX_AHEAD_MS, &r) &&
            !memcmp(r.peer_id, s->owner, 32) && r.block == g->block) {
            s->gets_ok++;
            break;
        }
    }
    free(g);
}

/* Start the puts that fit (one signed record per block), then wait. */
static bool puts_done(void *ctx)
{
    probe_state *s = ctx;
    while (s->started < s->todo && s->inflight < s->parallel) {
        long i = s->started;
        shoal_record r;
        memset(&r, 0, sizeof r);
        snprintf(r.addr, sizeof r.addr, "%s", s->addr);
        snprintf(r.model, sizeof r.model, "dht-probe");
        memcpy(r.model_hash, s->model_hash, 32);
        r.nblocks = (uint32_t)s->todo;
        r.block = (uint32_t)i;
        r.span_start = (uint32_t)i;
        r.span_end = (uint32_t)i + 1;
        r.state = SHOAL_RECORD_ONLINE;
        r.throughput = 1;
        snprintf(r.software, sizeof r.software, "shoal %s", SHOAL_VERSION);
        int64_t now = shoal_dht_net_now();
        r.seq = (uint64_t)now;
        r.expires_ms = now + 5 * 60 * 1000;
        uint8_t buf[SHOAL_RECORD_MAX], key[32];
        size_t len;
        shoal_record_block_key(s->model_hash, (uint32_t)i, key);
        if (shoal_record_sign(&r, s->id, buf, sizeof buf, &len))
            return true;
        if (shoal_dht_put(shoal_dht_net_dht(s->net), key, buf, len, now, on_put, s))
            break; /* busy: later */
        s->started++;
        s->inflight++;
    }
    return s->done >= s->todo;
}

/* Start the gets that fit on the second client, then wait. */
static bool gets_done(void *ctx)
{
    probe_state *s = ctx;
    while (s->started < s->todo && s->inflight < s->parallel) {
        getq *g = malloc(sizeof *g);
        uint8_t key[32];
        if (!g)
            return true;
        g->s = s;
        g->block = (uint32_t)s->started;
        shoal_record_block_key(s->model_hash, g->block, key);
        if (shoal_dht_get(shoal_dht_net_dht(s->reader), key, shoal_dht_net_now(), on_get, g)) {
            free(g);
            break;
        }
        s->started++;
        s->inflight++;
    }
    return s->done >= s->todo;
}

static int join(void *zctx, const char *const *addrs, size_t n, double timeout_s,
                shoal_dht_net **out)
{
    shoal_dht_net_params np;
    int rc = shoal_dht_net_params_client(&np, zctx);
    if (!rc)
        rc = shoal_dht_net_new(&np, out);
    if (!rc)
        rc = shoal_dht_net_join(*out, addrs, n,
                                shoal_dht_net_now() + (int64_t)(timeout_s * 1000), NULL);
    return rc;
}

int shoal_cmd_dht_probe(int argc, char **argv)
{
    static const struct option opts[] = {
        {"initial-peers", required_argument, 0, 1}, {"nodes", required_argument, 0, 2},
        {"lookups", required_argument, 0, 3},       {"put-get", required_argument, 0, 4},
        {"parallel", required_argument, 0, 5},      {"timeout", required_argument, 0, 6},
        {"json", no_argument, 0, 7},                {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    char *peers_arg = NULL;
    const char *nodes_path = NULL;
    long lookups = 100, putget = 0, parallel = 8;
    double timeout_s = 60;
    int json = 0, c;
    if ((c = shoal_cli_prepare("dht-probe", opts, ":h", &argc, &argv)))
        return c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 1: peers_arg = optarg; break;
        case 2: nodes_path = optarg; break;
        case 3: if (!shoal_cli_int("dht-probe", "--lookups", optarg, 0, 1000000, &lookups)) return 2; break;
        case 4: if (!shoal_cli_int("dht-probe", "--put-get", optarg, 0, 4096, &putget)) return 2; break;
        case 5: if (!shoal_cli_int("dht-probe", "--parallel", optarg, 1, 60, &parallel)) return 2; break;
        case 6: if (!shoal_cli_float("dht-probe", "--timeout", optarg, 0.1, 86400, &timeout_s)) return 2; break;
        case 7: json = 1; break;
        case 'h':
            printf("usage: shoal dht-probe --initial-peers A,... --nodes FILE [--lookups N]\n"
                   "                        [--put-get N] [--parallel P] [--timeout S] [--json]\n");
            shoal_cli_help_common(stdout, "dht-probe");
            return 0;
        default: return shoal_cli_bad_option("dht-probe", c, argv);
        }
    }
    if (optind < argc || !peers_arg || !nodes_path) {
        fprintf(stderr, "shoal dht-probe: --initial-peers and --nodes are required\n");
        return 2;
    }
    if (sodium_init() < 0)
        return 1;
    const char *peers[64];
    size_t np = 0;
    for (char *tok = peers_arg, *next; tok && np < 64; tok = next) {
        next = strchr(tok, ',');
        if (next)
            *next++ = 0;
        peers[np++] = tok;
    }
    probe_state s;
    memset(&s, 0, sizeof s);
    char **lines = calloc(PROBE_MAX_NODES, sizeof *lines);
    s.ids = calloc(PROBE_MAX_NODES, sizeof *s.ids);
    FILE *f = fopen(nodes_path, "r");
    if (!lines || !s.ids || !f) {
        fprintf(stderr, "shoal dht-probe: cannot read %s\n", nodes_path);
        return 1;
    }
    char line[SHOAL_ADDR_MAX + 8];
    while (fgets(line, sizeof line, f) && s.nids < PROBE_MAX_NODES) {
        line[strcspn(line, "\r\n")] = 0;
        shoal_addr a;
        if (!line[0] || shoal_addr_parse(&a, line))
            continue;
        shoal_addr_peer_id(&a, s.ids[s.nids]);
        lines[s.nids++] = strdup(line);
    }
    fclose(f);
    int status = 1;
    void *zctx = shoal_transport_ctx_new();
    shoal_dht_net *b = NULL;
    double t0 = shoal_cli_now();
    int rc = join(zctx, peers, np, timeout_s, &s.net);
    if (rc || !s.nids) {
        fprintf(stderr, "shoal dht-probe: cannot join: %s\n", shoal_strerror(rc));
        goto out;
    }
    double t_join = shoal_cli_now() - t0;
    int64_t until = shoal_dht_net_now() + (int64_t)(timeout_s * 1000);

    s.todo = lookups;
    s.parallel = parallel;
    t0 = shoal_cli_now();
    shoal_dht_net_run(s.net, until, lookups_done, &s);
    double t_look = shoal_cli_now() - t0;
    uint32_t median = 0, seen = 0;
    for (uint32_t h = 0; h < 64; h++) {
        seen += s.hops_hist[h];
        if (seen * 2 >= (uint32_t)s.done && s.done) {
            median = h;
            break;
        }
    }
    printf("lookups: %ld/%ld found the closest of %zu nodes; hops median %u, max %u; "
           "%.1f ms per lookup (%ld at once); joined in %.0f ms\n",
           s.ok, lookups, s.nids, median, s.max_hops, s.done ? t_look * 1e3 / (double)s.done : 0,
           parallel, t_join * 1e3);
    long look_ok = s.ok;
    if (json) {
        shoal_dht_stats ds;
        shoal_dht_net_stats ns;
        shoal_dht_stats_get(shoal_dht_net_dht(s.net), &ds);
        shoal_dht_net_stats_get(s.net, &ns);
        printf("{\"client\":{\"contacts\":%u,\"timeouts\":%llu,\"replies\":%llu,"
               "\"ignored\":%llu,\"malformed\":%llu,\"sent\":%llu,\"send_failed\":%llu,"
               "\"links\":%u,\"links_failed\":%llu}}\n",
               ds.contacts, (unsigned long long)ds.timeouts, (unsigned long long)ds.replies_in,
               (unsigned long long)ds.replies_ignored, (unsigned long long)ds.malformed_in,
               (unsigned long long)ns.sent, (unsigned long long)ns.send_failed, ns.links,
               (unsigned long long)ns.links_failed);
    }

    double t_put = 0, t_get = 0;
    if (putget) {
        if (shoal_identity_generate(&s.id))
            goto out;
        memcpy(s.owner, shoal_identity_peer_id(s.id), 32);
        randombytes_buf(s.model_hash, 32);
        shoal_addr a;
        shoal_addr_init(&a, "127.0.0.1", 1, shoal_identity_public_key(s.id));
        shoal_addr_format(&a, s.addr, sizeof s.addr);
        s.todo = putget;
        s.started = s.done = s.inflight = 0;
        t0 = shoal_cli_now();
        shoal_dht_net_run(s.net, until, puts_done, &s);
        t_put = shoal_cli_now() - t0;
        /* a second client, through another node */
        uint32_t pick;
        randombytes_buf(&pick, sizeof pick);
        const char *via = lines[pick % s.nids];
        if ((rc = join(zctx, &via, 1, timeout_s, &b))) {
            fprintf(stderr, "shoal dht-probe: the second client cannot join: %s\n",
                    shoal_strerror(rc));
            goto out;
        }
        s.reader = b;
        s.started = s.done = s.inflight = 0;
        t0 = shoal_cli_now();
        shoal_dht_net_run(b, until, gets_done, &s);
        t_get = shoal_cli_now() - t0;
        printf("put/get: %ld/%ld records stored, %ld/%ld read back through another node "
               "(put %.0f ms, get %.0f ms in all)\n",
               s.puts_ok, putget, s.gets_ok, putget, t_put * 1e3, t_get * 1e3);
    }
    if (json)
        printf("{\"nodes\":%zu,\"lookups\":%ld,\"lookups_ok\":%ld,\"hops_median\":%u,"
               "\"hops_max\":%u,\"lookup_ms\":%.3f,\"join_ms\":%.1f,\"putget\":%ld,"
               "\"puts_ok\":%ld,\"gets_ok\":%ld,\"put_ms\":%.1f,\"get_ms\":%.1f}\n",
               s.nids, lookups, look_ok, median, s.max_hops,
               lookups ? t_look * 1e3 / (double)lookups : 0, t_join * 1e3, putget, s.puts_ok,
               s.gets_ok, t_put * 1e3, t_get * 1e3);
    status = look_ok == lookups && s.puts_ok == putget && s.gets_ok == putget ? 0 : 1;
out:
    shoal_identity_destroy(&s.id);
    shoal_dht_net_destroy(&b);
    shoal_dht_net_destroy(&s.net);
    if (zctx)
        zmq_ctx_term(zctx);
    for (size_t i = 0; i < s.nids; i++)
        free(lines[i]);
    free(lines);
    free(s.ids);
    return status;
}
