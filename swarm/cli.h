/*
 * The part of the command line that every `shoal` subcommand shares, in
 * client/ and node/ alike (so it lives here, below both): flags from the
 * environment, the logging flags, the common help footer and getopt's
 * one-line errors. client/cli.h adds the number parsers.
 *
 * A subcommand calls shoal_cli_prepare() on its argv before its own
 * getopt_long loop, with the same long options and short-option string:
 *
 *   - Environment. For each long option NAME of the command (but --help),
 *     a variable SHOAL_<NAME> (upper case, '-' -> '_': --initial-peers is
 *     SHOAL_INITIAL_PEERS) that is set and not empty is inserted before the
 *     command's own arguments as if typed ("--NAME" "VALUE"), unless the
 *     option is on the command line (long, abbreviated, --NAME=V, or its
 *     short letter alone, bundled or with an attached value; nothing after
 *     "--" counts). A flag without a value is set by 1, true, yes or on and
 *     left unset by 0, false, no or off; anything else is a usage error.
 *     An inserted value goes through the command's own checks like a typed
 *     one; shoal_cli_source() lets their messages name the variable.
 *   - Logging, removed from argv before the command sees it:
 *       -v, --verbose   level debug (-vv is the same)
 *       -q, --quiet     level warn: warnings and errors only, no progress bars
 *       --log-level L   debug, info, warn, error or off
 *       --log-file F    append log lines to F instead of standard error
 *     also from SHOAL_VERBOSE, SHOAL_QUIET, SHOAL_LOG_LEVEL, SHOAL_LOG_FILE.
 *     The last level given wins, the command line after the environment.
 *     A value that belongs to another option ("-p -v") stays a value.
 *
 * Contract for the commands: no option of their own named verbose, quiet,
 * log-level or log-file, and no short -v or -q.
 *
 * Variables that are not flags: SHOAL_ISA (kernels/cpu.c), and the test
 * harness's SHOAL, SHOAL_SHARED, SHOAL_TESTS_DIR, SHOAL_BUILD; no command
 * may have a flag named isa, shared, tests-dir or build. SHOAL_API_KEY is
 * the flag --api-key of `shoal api`.
 *
 * THREAD SAFETY: shoal_cli_prepare() keeps the argv it makes (and which
 * values came from which variable) in process-wide state, like the log
 * settings: call it from the main thread before other threads start. The
 * other functions only read that state and may be called from any thread.
 */
#ifndef SHOAL_SWARM_CLI_H
#define SHOAL_SWARM_CLI_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

/* Applies the environment and the logging flags to *argc and *argv (argv[0] is
 * the subcommand's name; cmd names it in messages). longopts ends with a
 * zero entry; shortopts is getopt's string. On success *argv points at a
 * new array, valid until the next call or shoal_cli_release(), and 0 is
 * returned; on a usage error one line is printed on stderr and 2 returned
 * (a --log-file that cannot be opened included). */
int shoal_cli_prepare(const char *cmd, const struct option *longopts, const char *shortopts,
                      int *argc, char ***argv);

/* Frees what the last shoal_cli_prepare() made and forgets the variables. */
void shoal_cli_release(void);

/* The name to print for an option value: the variable's ("SHOAL_PORT") if
 * value is one that shoal_cli_prepare() took from the environment, else
 * opt. Compares the pointer: pass getopt's optarg itself. */
const char *shoal_cli_source(const char *opt, const char *value);

/* The variable of long option name: "initial-peers" -> "SHOAL_INITIAL_PEERS"
 * (cut to size, always terminated). */
void shoal_cli_env_name(const char *name, char *out, size_t size);

/* The lines every subcommand's --help ends with: the logging flags and the
 * environment. */
void shoal_cli_help_common(FILE *out, const char *cmd);

/* For getopt_long loops run with opterr = 0 and an optstring that starts
 * with ':': prints one line about the option getopt rejected (c is what
 * getopt returned: '?' unknown, ':' missing value) and returns 2. */
int shoal_cli_bad_option(const char *cmd, int c, char **argv);

#endif
