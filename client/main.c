/*
 * The `shoal` binary: a table of subcommands, each a function in client/ or
 * node/ (client/cmd.h). main() is the only place that exits.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "client/cmd.h"

typedef struct subcommand {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} subcommand;

static const subcommand commands[] = {
    {"generate", shoal_cmd_generate, "generate text, locally or through nodes"},
    {"chat", shoal_cmd_chat, "talk with a model, locally or through nodes"},
    {"api", shoal_cmd_api, "serve an OpenAI-compatible HTTP API (and /metrics)"},
    {"bench", shoal_cmd_bench, "measure prompt and decode speed (tokens/s)"},
    {"finetune", shoal_cmd_finetune, "train a LoRA adapter on a text, locally or through nodes"},
    {"mkmodel", shoal_cmd_mkmodel, "write a random-weight Llama GGUF of any shape"},
    {"serve", shoal_cmd_serve, "serve a span of a model's blocks to the swarm"},
    {"keygen", shoal_cmd_keygen, "make a node identity file"},
    {"bootstrap", shoal_cmd_bootstrap, "run a DHT node that serves no blocks (for joining)"},
    {"swarm", shoal_cmd_swarm, "show which servers cover which blocks of a model"},
    {"dht-probe", shoal_cmd_dht_probe, NULL}, /* a test tool: not listed */
};

static void usage(FILE *out)
{
    fprintf(out, "usage: shoal COMMAND [options]   (shoal COMMAND --help for each)\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].help)
            fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "  %-10s %s\n", "version", "print the version");
    fprintf(out, "\nEvery command takes -v, -q, --log-level L and --log-file FILE, and every\n"
                 "flag can also be set as SHOAL_<FLAG> in the environment (e.g.\n"
                 "SHOAL_INITIAL_PEERS); the command line wins.\n");
}

/* Stop signals belong to the main thread. Threads that libraries start
 * before main() (OpenBLAS's pool, from its constructor) do not block SIGINT
 * and SIGTERM, so the kernel may hand a process-wide stop signal to one of
 * them, where the default action would end the process before the
 * command's own clean stop (serve, bootstrap and api take these signals
 * with sigwait in the main thread, which blocks them) ever saw it. This
 * handler passes such a signal on to the main thread: pending there, it
 * reaches sigwait, or, when the main thread does not block it, comes back
 * here and takes the default action. A command may install its own handler
 * (chat does, for Ctrl-C). */
static pthread_t main_thread;

static void forward_stop_signal(int sig)
{
    int saved = errno;
    if (!pthread_equal(pthread_self(), main_thread)) {
        pthread_kill(main_thread, sig);
    } else if (getpid() == 1) {
        _exit(128 + sig); /* a container's init: the kernel ignores a default action */
    } else {
        signal(sig, SIG_DFL);
        raise(sig);
    }
    errno = saved;
}

static void route_stop_signals(void)
{
    main_thread = pthread_self();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int main(int argc, char **argv)
{
    route_stop_signals();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("shoal %s\n", SHOAL_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "shoal: unknown command '%s' (see shoal --help)\n", cmd);
    return 2;
}
