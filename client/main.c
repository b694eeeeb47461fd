/*
 * The `shoal` binary: a table of subcommands, each a function in client/ or
 * node/ (client/cmd.h). main() is the only place that exits.
 */
#include <stdio.h>
#include <string.h>

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
}

int main(int argc, char **argv)
{
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
