/*
 * Small helpers shared by the subcommands: strict number parsing with
 * one-line errors, and a monotonic clock for the tok/s lines. The part of
 * the command line that node/'s commands share too (environment, logging
 * flags, help footer, getopt's errors) is swarm/cli.h, included here.
 *
 * THREAD SAFETY: all functions are thread-safe.
 */
#ifndef SHOAL_CLIENT_CLI_H
#define SHOAL_CLIENT_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "swarm/cli.h"

/* Parses all of s as an integer in [lo, hi]; on failure prints
 * "shoal CMD: OPT: ..." to stderr and returns false (with the variable's
 * name for OPT when s came from the environment: shoal_cli_source). */
bool shoal_cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
bool shoal_cli_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);
bool shoal_cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi,
                     double *out);

/* Seconds from an arbitrary start, monotonic. */
double shoal_cli_now(void);

#endif
