/* Strict argument parsing and a clock for the subcommands (see cli.h). */
#include "client/cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

bool shoal_cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = s && *s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "shoal %s: %s: expected an integer in [%ld, %ld], got '%s'\n", cmd,
                shoal_cli_source(opt, s), lo, hi, s ? s : "");
        return false;
    }
    *out = v;
    return true;
}

bool shoal_cli_u64(const char *cmd, const char *opt, const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = s && *s && *s != '-' ? strtoull(s, &end, 10) : 0;
    if (!s || !*s || *s == '-' || *end || errno) {
        fprintf(stderr, "shoal %s: %s: expected a non-negative integer, got '%s'\n", cmd,
                shoal_cli_source(opt, s), s ? s : "");
        return false;
    }
    *out = v;
    return true;
}

bool shoal_cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi,
                     double *out)
{
    char *end = NULL;
    errno = 0;
    double v = s && *s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "shoal %s: %s: expected a number in [%g, %g], got '%s'\n", cmd,
                shoal_cli_source(opt, s), lo, hi, s ? s : "");
        return false;
    }
    *out = v;
    return true;
}

double shoal_cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
