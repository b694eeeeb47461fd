/*
 * `shoal api`: serves a model through the OpenAI-compatible HTTP API
 * (client/api.h), locally or through a chain of nodes.
 *
 * The server listens first and loads the model second, so /health can say
 * "loading" (503) to a supervisor that polls it; with peers it says 503
 * until they cover every block. SIGINT or SIGTERM stops it: it stops
 * listening, lets running requests end at their next token, and exits 0.
 * The signals are blocked in every thread and taken by sigwait() in the
 * main one, so no handler runs inside the libraries.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/api.h"
#include "client/cli.h"
#include "client/cmd.h"
#include "client/gen.h"
#include "client/state.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "swarm/model_id.h"
#include "kernels/cpu.h"
#include "kernels/err.h"
#include "kernels/pool.h"
#include "proto/codec.h"
#include "swarm/log.h"

static void api_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal api -m MODEL.gguf [--peers ADDR,...] [--host H] [--port P] [options]\n"
            "\n"
            "Serves the model over an OpenAI-compatible HTTP API: POST /v1/chat/completions,\n"
            "POST /v1/completions (with \"stream\": true as server-sent events), GET\n"
            "/v1/models, GET /health (503 until the model can be used) and GET /metrics\n"
            "(Prometheus). Generation runs locally or through nodes that serve the blocks.\n"
            "With --initial-peers, GET / is a dashboard of the swarm (every server's span,\n"
            "state, speed, RTT, free cache; which blocks are covered) and GET /api/v1/state\n"
            "the same as JSON; neither needs the key.\n"
            "\n"
            "  -m, --model FILE        GGUF model (Llama family); with --peers only its\n"
            "                          tokenizer, embedding and head are read\n"
            "      --peers ADDR,...    run the blocks on these nodes (shoal://HOST:PORT/KEY,\n"
            "                          as `shoal serve` prints)\n"
            "      --initial-peers ADDR,...\n"
            "                          or: join the swarm's DHT through these nodes and\n"
            "                          use the fastest chain of the model's servers\n"
            "      --host H            address to listen on (default 127.0.0.1; 0.0.0.0 or ::\n"
            "                          for every interface)\n"
            "      --port P            port (default 8080; 0 = any free port)\n"
            "      --api-key KEY       require 'Authorization: Bearer KEY' on the /v1/ routes\n"
            "                          (/health, /metrics and the dashboard stay open;\n"
            "                          default: SHOAL_API_KEY, no key when unset)\n"
            "      --model-name NAME   the model's id in the API (default: the file's name\n"
            "                          without .gguf)\n"
            "  -np, --parallel N       generation slots: requests served at once (default 4);\n"
            "                          each is its own session, with --peers its own sessions\n"
            "                          on the nodes\n"
            "      --queue N           requests that may wait for a slot (default 64); more\n"
            "                          get 429\n"
            "      --queue-timeout S   seconds a request waits for a slot before a 503\n"
            "                          (default 30)\n"
            "  -c, --ctx-size N        context length of each slot (default: the model's)\n"
            "  -t, --threads N         compute threads in all (default: all cores), shared\n"
            "                          among the slots\n"
            "      --codec C           activations on the wire: f32 (default), f16, bf16, int8\n"
            "      --timeout S         seconds to wait for each answer of a node (default 30)\n"
            "      --lora FILE         apply a LoRA adapter (GGUF, llama.cpp layout) locally\n"
            "      --adapter NAME      with peers: use the adapter NAME the nodes serve\n"
            "      --address-file F    write the server's URL (http://HOST:PORT) to F once it\n"
            "                          listens\n"
            "      --health-interval S with --peers: seconds between checks that the peers\n"
            "                          still cover every block (default 5; 1 until they do)\n"
            "  -h, --help              show this help\n");
    shoal_cli_help_common(out, "api");
}

static void api_note(void *ctx, int level, const char *line)
{
    (void)ctx;
    shoal_log(level, "api: %s", line);
}

/* A failover or a move in a slot's chain (client/remote.h). */
static void api_event(void *ctx, const char *line)
{
    (void)ctx;
    shoal_log(SHOAL_LOG_WARN, "api: %s", line);
}

/* The swarm's state for the dashboard: the model's identity (its GGUF
 * header only) and the DHT's initial peers. */
static int api_state_start(const char *model_path, const char *const *initial, size_t n,
                           shoal_state **out, char *err, size_t errlen)
{
    shoal_gguf *g = NULL;
    shoal_hparams hp;
    shoal_state_params sp = shoal_state_params_default();
    char why[1024];
    int rc = shoal_gguf_open(model_path, &g, why, sizeof why);
    if (!rc)
        rc = shoal_hparams_read(g, &hp, why, sizeof why);
    if (!rc && (rc = shoal_model_id_compute(g, &sp.id)))
        snprintf(why, sizeof why, "cannot compute the model's identity");
    shoal_gguf_close(&g);
    if (rc) {
        snprintf(err, errlen, "%s: %s", model_path, why);
        return rc;
    }
    sp.initial = initial;
    sp.n_initial = n;
    sp.nblocks = (uint32_t)hp.n_layer;
    sp.model_path = model_path;
    return shoal_state_start(&sp, out, err, errlen);
}

int shoal_cmd_api(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"ctx-size", required_argument, 0, 'c'},
        {"threads", required_argument, 0, 't'},   {"peers", required_argument, 0, 1},
        {"initial-peers", required_argument, 0, 40}, {"host", required_argument, 0, 2},
        {"port", required_argument, 0, 3},        {"api-key", required_argument, 0, 4},
        {"model-name", required_argument, 0, 5},  {"parallel", required_argument, 0, 6},
        {"queue", required_argument, 0, 7},       {"queue-timeout", required_argument, 0, 8},
        {"codec", required_argument, 0, 9},       {"timeout", required_argument, 0, 10},
        {"lora", required_argument, 0, 11},       {"address-file", required_argument, 0, 12},
        {"health-interval", required_argument, 0, 13},
        {"adapter", required_argument, 0, 41},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    /* -np is llama.cpp's spelling; getopt would read it as -n p */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "-np"))
            argv[i] = "--parallel";
    }
    const char *model_path = NULL, *address_file = NULL;
    const char *api_key = NULL; /* SHOAL_API_KEY through shoal_cli_prepare */
    shoal_gen_opts go;
    shoal_gen_opts_init(&go);
    char model_name[256] = "";
    long ctx = 0, threads = shoal_cpu_count(), v;
    shoal_api_params ap = shoal_api_params_default();
    int ch;
    if ((ch = shoal_cli_prepare("api", opts, ":m:c:t:h", &argc, &argv)))
        return ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":m:c:t:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model_path = optarg; break;
        case 'c': if (!shoal_cli_int("api", "-c", optarg, 1, 1L << 24, &ctx)) return 2; break;
        case 't': if (!shoal_cli_int("api", "-t", optarg, 1, 1024, &threads)) return 2; break;
        case 1: go.peers_arg = optarg; break;
        case 40: go.initial_arg = optarg; break;
        case 2: ap.host = optarg; break;
        case 3: if (!shoal_cli_int("api", "--port", optarg, 0, 65535, &v)) return 2; ap.port = (int)v; break;
        case 4: api_key = optarg; break;
        case 5:
            if (!*optarg || strlen(optarg) >= sizeof model_name) {
                fprintf(stderr, "shoal api: --model-name: 1 to %zu bytes\n", sizeof model_name - 1);
                return 2;
            }
            snprintf(model_name, sizeof model_name, "%s", optarg);
            break;
        case 6: if (!shoal_cli_int("api", "--parallel", optarg, 1, 1024, &v)) return 2; ap.slots = (int)v; break;
        case 7: if (!shoal_cli_int("api", "--queue", optarg, 0, 1L << 20, &v)) return 2; ap.queue = (int)v; break;
        case 8: if (!shoal_cli_float("api", "--queue-timeout", optarg, 0, 86400, &ap.queue_timeout)) return 2; break;
        case 9: if (!shoal_gen_opts_codec("api", &go, optarg)) return 2; break;
        case 10: if (!shoal_cli_float("api", "--timeout", optarg, 0.001, 86400, &go.timeout_s)) return 2; break;
        case 11: go.lora_path = optarg; break;
        case 41: go.adapter = optarg; break;
        case 12: address_file = optarg; break;
        case 13: if (!shoal_cli_float("api", "--health-interval", optarg, 0.1, 86400, &ap.health_interval)) return 2; break;
        case 'h': api_usage(stdout); return 0;
        default: return shoal_cli_bad_option("api", ch, argv);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shoal api: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model_path) {
        fprintf(stderr, "shoal api: -m MODEL.gguf is required (see --help)\n");
        return 2;
    }
    if (shoal_gen_opts_check("api", &go))
        return 2;
    if (!*model_name)
        shoal_gen_model_name(model_path, model_name, sizeof model_name);
    ap.model_name = model_name;
    ap.api_key = api_key;
    if (access(model_path, R_OK) != 0) { /* before listening: a wrong path is not "loading" */
        fprintf(stderr, "shoal api: %s: cannot open: %s\n", model_path, strerror(errno));
        return 1;
    }

    /* every thread started from here on inherits the blocked signals */
    sigset_t sigs, old_sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, &old_sigs);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    char err[2048];
    shoal_api *api = NULL;
    shoal_lm *lm = NULL;
    shoal_state *state = NULL;
    shoal_cpu_init();
    int rc;
    if (go.n_initial && (rc = api_state_start(model_path, (const char *const *)go.initial,
                                              (size_t)go.n_initial, &state, err, sizeof err))) {
        fprintf(stderr, "shoal api: %s\n", err);
        goto out;
    }
    ap.state = state;
    rc = shoal_api_start(&ap, &api, err, sizeof err);
    if (rc) {
        fprintf(stderr, "shoal api: %s\n", err);
        goto out;
    }
    char url[512];
    const char *h = ap.host;
    bool v6 = strchr(h, ':') != NULL;
    snprintf(url, sizeof url, "http://%s%s%s:%d", v6 ? "[" : "", h, v6 ? "]" : "",
             shoal_api_port(api));
    if (address_file) {
        FILE *f = fopen(address_file, "w");
        if (!f || fprintf(f, "%s\n", url) < 0 || fclose(f)) {
            fprintf(stderr, "shoal api: --address-file %s: cannot write it\n", address_file);
            goto out;
        }
    }
    fprintf(stderr, "shoal api: listening on %s (model '%s'%s)\n", url, model_name,
            ap.api_key && *ap.api_key ? ", key required" : "");

    shoal_lm_params lp = shoal_lm_params_default();
    lp.model_path = model_path;
    shoal_gen_opts_apply(&go, &lp);
    lp.ctx = ctx;
    lp.threads = (int)(threads / ap.slots > 0 ? threads / ap.slots : 1);
    lp.note = api_note;
    lp.remote.on_event = api_event;
    if ((rc = shoal_lm_open(&lp, &lm, err, sizeof err))) {
        fprintf(stderr, "shoal api: %s\n", err);
        goto out;
    }
    shoal_api_set_lm(api, lm);
    fprintf(stderr, "shoal api: model loaded (%s, context %d, %d slot%s)\n",
            shoal_gen_opts_remote(&go) ? "blocks on the peers" : "local", shoal_lm_ctx(lm), ap.slots,
            ap.slots == 1 ? "" : "s");
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "shoal api: stopping (%s)\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    status = 0;
out:
    shoal_api_stop(&api);
    shoal_state_stop(&state);
    shoal_lm_close(&lm);
    pthread_sigmask(SIG_SETMASK, &old_sigs, NULL);
    return status;
}
