/*
 * Small helpers shared by the subcommands: strict number parsing with
 * one-line errors, and a monotonic clock for the tok/s lines.
 *
 * THREAD SAFETY: all functions are thread-safe.
 */
#ifndef SHOAL_CLIENT_CLI_H
#define SHOAL_CLIENT_CLI_H

#include <stdbool.h>
#include <stdint.h>

/* Parses all of s as an integer in [lo, hi]; on failure prints
 * "shoal CMD: OPT: ..." to stderr and returns false. */
bool shoal_cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
bool shoal_cli_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);
bool shoal_cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi,
                     double *out);

/* Seconds from an arbitrary start, monotonic. */
double shoal_cli_now(void);



/* For getopt_long loops run with opterr = 0 and an optstring that starts
 * with ':': prints one line about the option getopt rejected (c is what
 * getopt returned: '?' unknown, ':' missing value) and returns 2. */
int shoal_cli_bad_option(const char *cmd, int c, char **argv);
#endif
