/*
 * Pieces every long-running node command shares (`shoal serve` and
 * `shoal bootstrap`, node/node.c for its address): the host to write in an
 * address, an identity file loaded or created, an address file written
 * atomically.
 *
 * THREAD SAFETY: thread-safe (no shared state).
 */
#ifndef SHOAL_NODE_DAEMON_H
#define SHOAL_NODE_DAEMON_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/identity.h"

/* "0.0.0.0", "*", "::" or "[::]". */
bool node_daemon_is_wildcard(const char *host);

/* The host to write in the address when listening on the wildcard listen:
 * the first non-loopback, non-link-local address of an interface that is
 * up (the listen family first), else loopback. */
void node_daemon_public_host(const char *listen, char *out, size_t size);

/* Load the identity at path, or create it there (mode 0600) when the file
 * is missing. On failure one line "shoal CMD: ..." on stderr. path must not
 * be NULL. */
int node_daemon_identity(const char *cmd, const char *path, shoal_identity **id);

/* Write text + "\n" to path atomically (a temporary file, fsync, rename).
 * 0 or -1 with errno set. */
int node_daemon_write_atomic(const char *path, const char *text);

#endif
