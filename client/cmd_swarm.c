/*
 * `shoal swarm`: what the swarm serves of a model, as a client sees it.
 *
 * Joins the DHT through --initial-peers, reads the records of every block
 * of each model given with -m (the DHT keys records by the model's
 * identity, so the command needs the model's GGUF file to compute it, as
 * every client has; only its metadata and tensor layout are read), probes
 * every server (INFO and round trips, client/discover.h) and prints, per
 * model: every server with its span, state, throughput, RTT and free cache;
 * per block the servers that answered and serve it now and their summed
 * throughput; and whether every block is served. --json prints one JSON
 * object instead (schema in docs/ARCHITECTURE.md, "DHT and discovery").
 *
 * Exit status: 0 when every block of every model is served, 1 when some
 * block is not (or the swarm cannot be read), 2 for usage errors.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client/cli.h"
#include "client/cmd.h"
#include "client/discover.h"
#include "client/swarmview.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "proto/addr.h"
#include "swarm/model_id.h"
#include "swarm/record.h"

#define SWARM_MAX_MODELS 16
#define SWARM_MAX_PEERS 64

static void swarm_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal swarm --initial-peers ADDR,... -m MODEL.gguf [-m ...] [--json]\n"
            "\n"
            "Shows which servers of the swarm cover which blocks of a model: their state,\n"
            "throughput, round-trip time (measured now) and free cache, and whether every\n"
            "block is served. Exits 0 when every block is served, else 1.\n"
            "\n"
            "  -m, --model FILE          GGUF model to look up (its identity keys the\n"
            "                            records; only metadata is read); repeatable\n"
            "      --initial-peers A,... DHT nodes to join through\n"
            "      --json                one JSON object on standard output\n"
            "      --timeout S           seconds for joining and reading (default 10)\n"
            "  -h, --help                show this help\n");
    shoal_cli_help_common(out, "swarm");
}

typedef shoal_swarm_view swarm_model;

static void print_text(const swarm_model *m)
{
    char h[17];
    shoal_model_id_short(&m->id, h);
    printf("model %s (%s, %u blocks): %s\n", m->id.name[0] ? m->id.name : "?", h, m->nblocks,
           m->complete ? "every block is served" : "NOT every block is served");
    printf("  %zu server%s in the DHT (%u records read, %u rejected; joined in %.0f ms, read "
           "in %.0f ms, probed in %.0f ms)\n",
           m->nsv, m->nsv == 1 ? "" : "s", m->st.records, m->st.rejected, m->st.join_ms,
           m->st.read_ms, m->st.probe_ms);
    for (size_t i = 0; i < m->nsv; i++) {
        const shoal_discover_server *s = &m->sv[i];
        const char *state = shoal_record_state_name(s->rec.state);
        printf("  %u:%u %-7s %10.0f tok/s", s->rec.span_start, s->rec.span_end,
               state ? state : "?", s->rec.throughput);
        if (s->answered) {
            printf("  rtt %7.2f ms  free %8llu tokens", s->rtt_ms,
                   (unsigned long long)s->cand.info.free_tokens);
            if (s->bandwidth > 0)
                printf("  link %s%.0f kB/s", s->bandwidth_bound ? "<" : "", s->bandwidth / 1e3);
        }
        else
            printf("  (%s)", s->why);
        printf("  %s\n", s->rec.addr);
    }
    for (uint32_t b = 0; b < m->nblocks; b++)
        printf("  block %3u: %u server%s, %.0f tok/s%s\n", b, m->served[b],
               m->served[b] == 1 ? "" : "s", m->tput[b], m->served[b] ? "" : "  <- NOT SERVED");
}

int shoal_cmd_swarm(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"initial-peers", required_argument, 0, 1},
        {"json", no_argument, 0, 2},            {"timeout", required_argument, 0, 3},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    swarm_model models[SWARM_MAX_MODELS];
    memset(models, 0, sizeof models);
    int nm = 0, json = 0;
    char *peers_arg = NULL;
    double timeout_s = 10;
    int c;
    if ((c = shoal_cli_prepare("swarm", opts, ":m:h", &argc, &argv)))
        return c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (nm == SWARM_MAX_MODELS) {
                fprintf(stderr, "shoal swarm: at most %d models\n", SWARM_MAX_MODELS);
                return 2;
            }
            models[nm++].path = optarg;
            break;
        case 1: peers_arg = optarg; break;
        case 2: json = 1; break;
        case 3: if (!shoal_cli_float("swarm", "--timeout", optarg, 0.1, 3600, &timeout_s)) return 2; break;
        case 'h': swarm_usage(stdout); return 0;
        default: return shoal_cli_bad_option("swarm", c, argv);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shoal swarm: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!peers_arg || !nm) {
        fprintf(stderr, "shoal swarm: --initial-peers and -m MODEL are required (see --help)\n");
        return 2;
    }
    const char *peers[SWARM_MAX_PEERS];
    size_t np = 0;
    for (char *tok = peers_arg, *next; tok; tok = next) {
        next = strchr(tok, ',');
        if (next)
            *next++ = 0;
        shoal_addr a;
        if (!*tok || shoal_addr_parse(&a, tok) || np == SWARM_MAX_PEERS) {
            fprintf(stderr, "shoal swarm: %s: '%s' is not a node address "
                            "(shoal://HOST:PORT/KEY, as `shoal bootstrap` prints)\n",
                    shoal_cli_source("--initial-peers", peers_arg), tok);
            return 2;
        }
        peers[np++] = tok;
    }
    int status = 0;
    char err[1024];
    for (int i = 0; i < nm; i++) {
        swarm_model *m = &models[i];
        shoal_gguf *g = NULL;
        shoal_hparams hp;
        if (shoal_gguf_open(m->path, &g, err, sizeof err) ||
            shoal_hparams_read(g, &hp, err, sizeof err) || shoal_model_id_compute(g, &m->id)) {
            fprintf(stderr, "shoal swarm: %s: %s\n", m->path, err);
            shoal_gguf_close(&g);
            status = 1;
            goto out;
        }
        shoal_gguf_close(&g);
        if (shoal_swarm_view_read(m, peers, np, &m->id, (uint32_t)hp.n_layer,
                                  (int)(timeout_s * 1000), 1, err, sizeof err)) {
            fprintf(stderr, "shoal swarm: %s\n", err);
            status = 1;
            goto out;
        }
        if (!m->complete)
            status = 1;
    }
    if (json) {
        json_t *arr = json_array();
        for (int i = 0; i < nm; i++)
            json_array_append_new(arr, shoal_swarm_view_json(&models[i]));
        json_t *root = json_pack("{s:o}", "models", arr);
        char *s = root ? json_dumps(root, JSON_INDENT(1)) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(root);
    } else {
        for (int i = 0; i < nm; i++)
            print_text(&models[i]);
    }
out:
    for (int i = 0; i < nm; i++)
        shoal_swarm_view_free(&models[i]);
    return status;
}
