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

#include "client/cmd.h"
#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/pool.h"
#include "node/node.h"
#include "proto/identity.h"
#include "swarm/log.h"

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal serve -m MODEL.gguf --blocks A:B [options]\n"
            "\n"
            "Serves blocks A..B-1 of a model to clients over encrypted ZeroMQ. Prints the\n"
            "node's address (shoal://HOST:PORT/KEY) on standard output.\n"
            "\n"
            "  -m, --model FILE         GGUF model (only the span's tensors are read)\n"
            "  -b, --blocks A:B         blocks to serve, 0 <= A < B <= the model's blocks\n"
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
            "      --log-level L        debug, info, warn or error (default info)\n"
            "  -h, --help               show this help\n");
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "shoal serve: %s: expected an integer in [%ld, %ld], got '%s'\n", opt,
                lo, hi, s);
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
    fprintf(stderr, "shoal serve: --blocks: expected A:B with 0 <= A < B, got '%s'\n", s);
    return -1;
}

/* Load the identity at path, or create it there when the file is missing;
 * a fresh in-memory identity when path is NULL. */
static int get_identity(const char *path, shoal_identity **id)
{
    if (!path) {
        SHOAL_LOG_W("no --identity: this node gets a new key (and address) each run");
        return shoal_identity_generate(id);
    }
    int rc = shoal_identity_load(id, path);
    if (rc == SHOAL_ERR_IO && errno == ENOENT) {
        if ((rc = shoal_identity_generate(id)))
            return rc;
        if ((rc = shoal_identity_save(*id, path))) {
            fprintf(stderr, "shoal serve: cannot create %s: %s\n", path, strerror(errno));
            shoal_identity_destroy(id);
            return rc;
        }
        SHOAL_LOG_I("created identity %s", path);
        return 0;
    }
    if (rc == SHOAL_ERR_AUTH)
        fprintf(stderr, "shoal serve: %s may be read by others: treat it as leaked, or "
                        "chmod 600 it\n", path);
    else if (rc == SHOAL_ERR_IO)
        fprintf(stderr, "shoal serve: cannot read %s: %s\n", path, strerror(errno));
    else if (rc)
        fprintf(stderr, "shoal serve: %s is not a shoal identity file\n", path);
    return rc;
}

/* Write text + "\n" to path atomically (temporary file, then rename). */
static int write_atomic(const char *path, const char *text)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= sizeof tmp)
        return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    int ok = write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int shoal_cmd_serve(int argc, char **argv)
{
    enum { O_HOST = 1, O_PUBLIC, O_ADDRFILE, O_WORKERS, O_CACHE, O_MAXSESS, O_MAXLEN,
           O_MAXBATCH, O_TIMEOUT, O_BUSY, O_LOG, O_ADAPTER, O_GRACE };
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
        {"log-level", required_argument, 0, O_LOG}, {"help", no_argument, 0, 'h'},
        {"adapter", required_argument, 0, O_ADAPTER},
        {"grace", required_argument, 0, O_GRACE},
        {0, 0, 0, 0},
    };
    shoal_node_params np = shoal_node_params_default();
    np.threads = shoal_cpu_count();
    const char *model_path = NULL, *id_path = NULL, *addr_file = NULL;
    int have_blocks = 0;
    long grace_s = 5;
    char *adapters[16]; /* "NAME=FILE" (split at '=' below) */
    int n_adapters = 0;
    long v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:b:p:i:t:h", opts, NULL)) != -1) {
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
        case O_LOG:
            if (shoal_log_level_from_name(optarg) < 0) {
                fprintf(stderr, "shoal serve: --log-level: debug, info, warn, error or off\n");
                return 2;
            }
            shoal_log_set_level(shoal_log_level_from_name(optarg));
            break;
        case O_ADAPTER:
            if (!strchr(optarg, '=') || optarg[0] == '=' || n_adapters == 16) {
                fprintf(stderr, "shoal serve: --adapter: expected NAME=FILE (16 at most), "
                                "got '%s'\n", optarg);
                return 2;
            }
            adapters[n_adapters++] = optarg;
            break;
        case O_GRACE: if (parse_long("--grace", optarg, 0, 3600, &v)) return 2; grace_s = v; break;
        case 'h': serve_usage(stdout); return 0;
        default: return 2; /* getopt has said what is wrong */
        }
    }
    if (!model_path || !have_blocks || optind != argc) {
        fprintf(stderr, "shoal serve: -m MODEL and --blocks A:B are required (see --help)\n");
        return 2;
    }

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
    int rc = shoal_gguf_open(model_path, &g, err, sizeof err);
    if (rc) {
        fprintf(stderr, "shoal serve: %s\n", err);
        goto out;
    }
    if (get_identity(id_path, &id))
        goto out;
    if ((rc = shoal_node_new(g, id, &np, &node, err, sizeof err))) {
        fprintf(stderr, "shoal serve: %s\n", err);
        status = rc == SHOAL_ERR_ARG || rc == SHOAL_ERR_RANGE ? 2 : 1;
        goto out;
    }
    for (int i = 0; i < n_adapters; i++) {
        char *eq = strchr(adapters[i], '=');
        *eq = 0;
        if ((rc = shoal_node_add_adapter(node, adapters[i], eq + 1, err, sizeof err))) {
            fprintf(stderr, "shoal serve: %s\n", err);
            status = rc == SHOAL_ERR_ARG ? 2 : 1;
            goto out;
        }
    }
    if (addr_file && write_atomic(addr_file, shoal_node_address(node))) {
        fprintf(stderr, "shoal serve: cannot write %s: %s\n", addr_file, strerror(errno));
        goto out;
    }
    if ((rc = shoal_node_start(node, err, sizeof err))) {
        fprintf(stderr, "shoal serve: %s\n", err);
        goto out;
    }
    printf("%s\n", shoal_node_address(node));
    fflush(stdout);

    struct timespec tick = {0, 200 * 1000 * 1000};
    struct timespec leave_tick = {0, 50 * 1000 * 1000};
    struct timespec t_leave = {0, 0};
    for (;;) {
        int leaving = shoal_node_leaving(node);
        int sig = sigtimedwait(&sigs, NULL, leaving ? &leave_tick : &tick);
        if (sig == SIGTERM && !leaving && grace_s > 0) {
            SHOAL_LOG_I("SIGTERM: leaving (at most %ld s for %d open sessions to move)", grace_s,
                        shoal_node_sessions(node));
            shoal_node_leave(node);
            clock_gettime(CLOCK_MONOTONIC, &t_leave);
            continue;
        }
        if (sig == SIGINT || sig == SIGTERM) {
            SHOAL_LOG_I("%s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
            status = 0;
            break;
        }
        if (!shoal_node_running(node)) {
            SHOAL_LOG_E("the node stopped on its own");
            break;
        }
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
    SHOAL_LOG_I("stopped");
out:
    shoal_node_destroy(&node);
    shoal_identity_destroy(&id);
    shoal_gguf_close(&g);
    return status;
}
