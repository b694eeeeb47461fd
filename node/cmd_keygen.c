/*
 * `shoal keygen -o FILE`: make a node identity (an Ed25519 key pair, see
 * proto/identity.h) in a new file of mode 0600. An existing file is never
 * overwritten. Standard output gets the public key (64 hex digits), which
 * is the last part of the node's address; the peer id goes to stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "client/cmd.h"
#include "kernels/err.h"
#include "proto/identity.h"
#include "swarm/cli.h"

static void keygen_usage(FILE *out)
{
    fprintf(out, "usage: shoal keygen -o FILE\n"
                 "\n"
                 "Creates a node identity (Ed25519) in FILE, mode 0600. Refuses to overwrite an\n"
                 "existing file. Prints the public key on standard output.\n"
                 "\n"
                 "  -o, --output FILE  the identity file to create\n"
                 "  -h, --help         show this help\n");
    shoal_cli_help_common(out, "keygen");
}

int shoal_cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *path = NULL;
    int c;
    if ((c = shoal_cli_prepare("keygen", opts, ":o:h", &argc, &argv)))
        return c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': path = optarg; break;
        case 'h': keygen_usage(stdout); return 0;
        default: return shoal_cli_bad_option("keygen", c, argv);
        }
    }
    if (optind != argc) {
        fprintf(stderr, "shoal keygen: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!path) {
        fprintf(stderr, "shoal keygen: -o FILE is required (see --help)\n");
        return 2;
    }
    shoal_identity *id = NULL;
    int rc = shoal_identity_generate(&id);
    if (rc) {
        fprintf(stderr, "shoal keygen: cannot make a key: %s\n", shoal_strerror(rc));
        return 1;
    }
    rc = shoal_identity_save(id, path);
    if (rc) {
        int e = errno;
        if (e == EEXIST)
            fprintf(stderr, "shoal keygen: %s exists; an identity is never overwritten\n", path);
        else
            fprintf(stderr, "shoal keygen: cannot write %s: %s\n", path, strerror(e));
        shoal_identity_destroy(&id);
        return 1;
    }
    char pk[SHOAL_IDENTITY_HEX_SIZE], pid[SHOAL_IDENTITY_HEX_SIZE];
    shoal_identity_hex(shoal_identity_public_key(id), pk);
    shoal_identity_hex(shoal_identity_peer_id(id), pid);
    printf("%s\n", pk);
    fprintf(stderr, "shoal keygen: wrote %s (peer id %s)\n", path, pid);
    shoal_identity_destroy(&id);
    return 0;
}
