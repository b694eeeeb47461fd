/* The command line every subcommand shares: environment, logging flags,
 * help footer (see cli.h). */
#include "swarm/cli.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "swarm/log.h"

#define CLI_VAR_MAX 80

/* The logging options, handled here for every command. */
enum { LOGOPT_VERBOSE, LOGOPT_QUIET, LOGOPT_LEVEL, LOGOPT_FILE, LOGOPT__COUNT };
static const struct option log_opts[LOGOPT__COUNT] = {
    {"verbose", no_argument, 0, 'v'},
    {"quiet", no_argument, 0, 'q'},
    {"log-level", required_argument, 0, 0},
    {"log-file", required_argument, 0, 0},
};

/* A value taken from the environment: the string handed to the command
 * (compared by address in shoal_cli_source) and its variable. */
typedef struct cli_env_value {
    const char *value;
    char var[CLI_VAR_MAX];
} cli_env_value;

/* A logging option met while scanning: which one, its value, and the
 * variable it came from ("" for the command line). */
typedef struct cli_logopt {
    int which;
    const char *value;
    char var[CLI_VAR_MAX];
} cli_logopt;

/* What the last shoal_cli_prepare() made (cli.h: process-wide, set by the
 * main thread before others start). */
static struct {
    char **argv;            /* the array handed out */
    char **owned;           /* strings allocated for it */
    size_t n_owned;
    cli_env_value *env;
    size_t n_env;
} cli;

void shoal_cli_release(void)
{
    for (size_t i = 0; i < cli.n_owned; i++)
        free(cli.owned[i]);
    free(cli.owned);
    free(cli.argv);
    free(cli.env);
    memset(&cli, 0, sizeof cli);
}

const char *shoal_cli_source(const char *opt, const char *value)
{
    for (size_t i = 0; value && i < cli.n_env; i++)
        if (cli.env[i].value == value)
            return cli.env[i].var;
    return opt;
}

void shoal_cli_env_name(const char *name, char *out, size_t size)
{
    if (!size)
        return;
    size_t n = (size_t)snprintf(out, size, "SHOAL_");
    if (n >= size)
        n = size - 1;
    for (const char *p = name; *p && n + 1 < size; p++)
        out[n++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    out[n] = 0;
}

void shoal_cli_help_common(FILE *out, const char *cmd)
{
    (void)cmd;
    fprintf(out,
            "\n"
            "Logging (every command):\n"
            "  -v, --verbose           log debug lines too\n"
            "  -q, --quiet             log warnings and errors only (and draw no progress bars)\n"
            "      --log-level L       debug, info, warn, error or off (default info)\n"
            "      --log-file FILE     append log lines to FILE instead of standard error\n"
            "\n"
            "Every flag can also be set in the environment as SHOAL_<FLAG>, upper case with\n"
            "'_' for '-' (e.g. SHOAL_INITIAL_PEERS=shoal://..., SHOAL_LOG_LEVEL=debug); the\n"
            "command line wins. Flags without a value take 1/true/yes/on or 0/false/no/off;\n"
            "an empty variable counts as unset.\n");
}

int shoal_cli_bad_option(const char *cmd, int c, char **argv)
{
    const char *arg = argv[optind - 1];
    if (c == ':')
        fprintf(stderr, "shoal %s: option '%s' needs a value (see --help)\n", cmd, arg);
    else if (optopt && arg[0] == '-' && arg[1] != '-')
        fprintf(stderr, "shoal %s: unknown option '-%c' (see --help)\n", cmd, optopt);
    else
        fprintf(stderr, "shoal %s: unknown option '%s' (see --help)\n", cmd, arg);
    return 2;
}

/* ---- building the new argv ---------------------------------------------- */

typedef struct cli_build {
    char **argv;
    int argc, cap;
    bool nomem;
} cli_build;

static void build_push(cli_build *b, char *s)
{
    if (b->nomem)
        return;
    if (b->argc + 1 >= b->cap) {
        int cap = b->cap ? 2 * b->cap : 16;
        char **na = realloc(b->argv, (size_t)cap * sizeof *na);
        if (!na) {
            b->nomem = true;
            return;
        }
        b->argv = na;
        b->cap = cap;
    }
    b->argv[b->argc++] = s;
    b->argv[b->argc] = NULL;
}

/* n + 1 zeroed bytes that belong to the state (freed by shoal_cli_release). */
static char *own_alloc(size_t n)
{
    char **no = realloc(cli.owned, (cli.n_owned + 1) * sizeof *no);
    if (!no)
        return NULL;
    cli.owned = no;
    char *c = calloc(1, n + 1);
    if (c)
        cli.owned[cli.n_owned++] = c;
    return c;
}

/* "<a><b>" in the state's memory (b may be NULL). */
static char *own_cat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    char *c = own_alloc(la + lb);
    if (c) {
        memcpy(c, a, la);
        if (lb)
            memcpy(c + la, b, lb);
    }
    return c;
}

/* ---- recognising options ------------------------------------------------ */

/* The option of a long argument "--name[=v]": index into opts (n of them),
 * exact name first, else a unique prefix as getopt_long allows; -1 when
 * unknown, -2 when ambiguous. */
static int long_match(const struct option *const *opts, int n, const char *name, size_t len)
{
    int found = -1;
    for (int i = 0; i < n; i++)
        if (!strncmp(opts[i]->name, name, len) && opts[i]->name[len] == 0)
            return i;
    for (int i = 0; i < n; i++)
        if (!strncmp(opts[i]->name, name, len)) {
            if (found >= 0)
                return -2;
            found = i;
        }
    return found;
}

/* 0: no such short option; 1: a flag; 2: takes a value; 3: optional value. */
static int short_kind(const char *shortopts, char c)
{
    if (c == ':' || c == '+' || c == '-')
        return 0;
    const char *p = strchr(shortopts, c);
    if (!p)
        return 0;
    if (p[1] != ':')
        return 1;
    return p[2] == ':' ? 3 : 2;
}

static bool is_log_name(const char *name)
{
    for (int i = 0; i < LOGOPT__COUNT; i++)
        if (!strcmp(name, log_opts[i].name))
            return true;
    return false;
}

/* 1 for true, 0 for false, -1 for anything else. */
static int parse_bool(const char *s)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off", ""};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!strcasecmp(s, yes[i]))
            return 1;
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (!strcasecmp(s, no[i]))
            return 0;
    return -1;
}

/* ---- shoal_cli_prepare -------------------------------------------------- */

typedef struct cli_scan {
    const char *cmd;
    const struct option **opts; /* the command's options, then log_opts */
    int n_cmd, n_all;
    const char *shortopts;
    bool *given;                /* per command option: on the command line */
    cli_logopt *logs;           /* in the order met */
    int n_logs, cap_logs;
    bool file_on_line;          /* --log-file was on the command line */
    bool nomem;
} cli_scan;

static void add_log(cli_scan *s, int which, const char *value, const char *var)
{
    if (s->n_logs == s->cap_logs) {
        int cap = s->cap_logs ? 2 * s->cap_logs : 8;
        cli_logopt *nl = realloc(s->logs, (size_t)cap * sizeof *nl);
        if (!nl) {
            s->nomem = true;
            return;
        }
        s->logs = nl;
        s->cap_logs = cap;
    }
    cli_logopt *l = &s->logs[s->n_logs++];
    l->which = which;
    l->value = value;
    snprintf(l->var, sizeof l->var, "%s", var ? var : "");
}

static void mark_short(cli_scan *s, char c)
{
    for (int i = 0; i < s->n_cmd; i++)
        if (s->opts[i]->val == c && !s->opts[i]->flag)
            s->given[i] = true;
}

/* Scans the command line from argv[1]: log options go to s->logs, the rest
 * to out. 0, or 2 after a usage error. */
static int scan_args(cli_scan *s, int argc, char **argv, cli_build *out)
{
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!strcmp(a, "--")) { /* operands only from here on */
            for (; i < argc; i++)
                build_push(out, argv[i]);
            break;
        }
        if (a[0] != '-' || a[1] == 0) { /* an operand; getopt permutes */
            build_push(out, a);
            continue;
        }
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            int k = long_match(s->opts, s->n_all, name, len);
            if (k == -2 && long_match(s->opts, s->n_cmd, name, len) != -2) {
                /* one of the command's and a logging option: getopt cannot tell */
                fprintf(stderr, "shoal %s: option '--%.*s' is ambiguous (see --help)\n", s->cmd,
                        (int)len, name);
                return 2;
            }
            if (k < 0) { /* unknown or ambiguous: getopt will say so */
                build_push(out, a);
                continue;
            }
            int has_arg = s->opts[k]->has_arg;
            if (k >= s->n_cmd) { /* a logging option: taken out */
                const char *value = NULL;
                if (has_arg == required_argument) {
                    if (eq)
                        value = eq + 1;
                    else if (i + 1 < argc)
                        value = argv[++i];
                    else {
                        fprintf(stderr, "shoal %s: option '--%s' needs a value (see --help)\n",
                                s->cmd, s->opts[k]->name);
                        return 2;
                    }
                } else if (eq) {
                    fprintf(stderr, "shoal %s: option '--%s' takes no value (see --help)\n",
                            s->cmd, s->opts[k]->name);
                    return 2;
                }
                add_log(s, k - s->n_cmd, value, NULL);
                continue;
            }
            s->given[k] = true;
            build_push(out, a);
            if (has_arg == required_argument && !eq && i + 1 < argc)
                build_push(out, argv[++i]); /* its value, whatever it looks like */
            continue;
        }
        /* a cluster of short options: -abc, -ovalue, -o value */
        char kept[256];
        size_t nk = 0;
        bool changed = false, value_next = false;
        const char *tail = NULL; /* an attached value, kept as is */
        for (const char *p = a + 1; *p; p++) {
            int kind = short_kind(s->shortopts, *p);
            if (!kind && (*p == 'v' || *p == 'q')) {
                add_log(s, *p == 'v' ? LOGOPT_VERBOSE : LOGOPT_QUIET, NULL, NULL);
                changed = true;
                continue;
            }
            if (nk + 1 < sizeof kept)
                kept[nk++] = *p;
            if (kind)
                mark_short(s, *p);
            if (kind == 2 || kind == 3) {
                if (p[1])
                    tail = p + 1;
                else if (kind == 2)
                    value_next = true;
                break;
            }
        }
        if (!changed) {
            build_push(out, a);
        } else if (nk || tail) {
            kept[nk] = 0;
            char *c = own_cat("-", kept), *t = c && tail ? own_cat(c, tail) : c;
            if (!t) {
                s->nomem = true;
                return 0;
            }
            build_push(out, t);
        }
        if (value_next && i + 1 < argc)
            build_push(out, argv[++i]);
    }
    return 0;
}

/* Remembers that value came from variable var. */
static bool note_env(const char *value, const char *var)
{
    cli_env_value *ne = realloc(cli.env, (cli.n_env + 1) * sizeof *ne);
    if (!ne)
        return false;
    cli.env = ne;
    ne[cli.n_env].value = value;
    snprintf(ne[cli.n_env].var, sizeof ne[cli.n_env].var, "%s", var);
    cli.n_env++;
    return true;
}

/* Inserts the command's options that the environment sets. 0, or 2. */
static int scan_env(cli_scan *s, cli_build *out, char *names, size_t names_size)
{
    size_t nl = 0;
    names[0] = 0;
    for (int k = 0; k < s->n_all; k++) {
        const struct option *o = s->opts[k];
        if (!strcmp(o->name, "help") || (k < s->n_cmd && is_log_name(o->name)) ||
            (k < s->n_cmd && s->given[k]))
            continue;
        char var[CLI_VAR_MAX];
        shoal_cli_env_name(o->name, var, sizeof var);
        const char *v = getenv(var);
        if (!v || !*v)
            continue;
        if (k >= s->n_cmd) { /* logging: the command line's come later and win */
            int which = k - s->n_cmd;
            if (o->has_arg == no_argument) {
                int b = parse_bool(v);
                if (b < 0)
                    goto bad_bool;
                if (b)
                    add_log(s, which, NULL, var);
            } else {
                if (which == LOGOPT_FILE && s->file_on_line)
                    continue;
                char *c = own_cat(v, NULL);
                if (!c)
                    return -1;
                add_log(s, which, c, var);
            }
        } else if (o->has_arg == no_argument) {
            int b = parse_bool(v);
            if (b < 0)
                goto bad_bool;
            if (!b)
                continue;
            char *flag = own_cat("--", o->name);
            if (!flag)
                return -1;
            build_push(out, flag);
        } else {
            char *flag = own_cat("--", o->name);
            if (!flag)
                return -1;
            const char *value;
            if (o->has_arg == optional_argument) { /* only "--name=value" gives it */
                char *eq = own_cat(flag, "="), *full = eq ? own_cat(eq, v) : NULL;
                if (!full)
                    return -1;
                value = full + strlen(eq);
                build_push(out, full);
            } else {
                char *c = own_cat(v, NULL);
                if (!c)
                    return -1;
                build_push(out, flag);
                build_push(out, c);
                value = c;
            }
            if (!note_env(value, var))
                return -1;
        }
        if (nl + strlen(var) + 2 < names_size)
            nl += (size_t)snprintf(names + nl, names_size - nl, "%s%s", nl ? " " : "", var);
        continue;
    bad_bool:
        fprintf(stderr, "shoal %s: %s: expected 1, true, yes, on, 0, false, no or off, got '%s'\n",
                s->cmd, var, v);
        return 2;
    }
    return 0;
}

/* Applies the logging options in order (environment first). 0, or 2. */
static int apply_logs(const cli_scan *s)
{
    int level = shoal_log_get_level();
    const cli_logopt *file = NULL;
    for (int i = 0; i < s->n_logs; i++) {
        const cli_logopt *l = &s->logs[i];
        switch (l->which) {
        case LOGOPT_VERBOSE: level = SHOAL_LOG_DEBUG; break;
        case LOGOPT_QUIET: level = SHOAL_LOG_WARN; break;
        case LOGOPT_LEVEL:
            if ((level = shoal_log_level_from_name(l->value)) < 0) {
                fprintf(stderr, "shoal %s: %s: expected debug, info, warn, error or off, got "
                                "'%s'\n", s->cmd, *l->var ? l->var : "--log-level", l->value);
                return 2;
            }
            break;
        case LOGOPT_FILE: file = l; break;
        }
    }
    if (file && (!*file->value || shoal_log_set_file(file->value))) {
        fprintf(stderr, "shoal %s: %s %s: cannot open it for appending: %s\n", s->cmd,
                *file->var ? file->var : "--log-file", file->value,
                *file->value ? strerror(errno) : "empty name");
        return 2;
    }
    shoal_log_set_level(level);
    return 0;
}

int shoal_cli_prepare(const char *cmd, const struct option *longopts, const char *shortopts,
                      int *argc, char ***argv)
{
    shoal_cli_release();
    assert(!strchr(shortopts, 'v') && !strchr(shortopts, 'q'));
    int n_cmd = 0;
    while (longopts[n_cmd].name)
        n_cmd++;
    int status = 2, rc;
    char names[1024];
    cli_build line = {0}, out = {0};
    cli_logopt *line_logs = NULL;
    int n_line_logs = 0;
    cli_scan s = {.cmd = cmd, .n_cmd = n_cmd, .n_all = n_cmd + LOGOPT__COUNT,
                  .shortopts = shortopts};
    s.opts = malloc((size_t)s.n_all * sizeof *s.opts);
    s.given = calloc((size_t)n_cmd + 1, sizeof *s.given);
    if (!s.opts || !s.given)
        goto nomem;
    for (int i = 0; i < n_cmd; i++)
        s.opts[i] = &longopts[i];
    for (int i = 0; i < LOGOPT__COUNT; i++)
        s.opts[n_cmd + i] = &log_opts[i];

    /* the command line: its logging options are applied last, so they win */
    if ((rc = scan_args(&s, *argc, *argv, &line)))
        goto out;
    if (s.nomem || line.nomem)
        goto nomem;
    line_logs = s.logs;
    n_line_logs = s.n_logs;
    for (int j = 0; j < n_line_logs; j++)
        s.file_on_line |= line_logs[j].which == LOGOPT_FILE;
    s.logs = NULL;
    s.n_logs = s.cap_logs = 0;

    build_push(&out, (*argv)[0]);
    if ((rc = scan_env(&s, &out, names, sizeof names)) > 0)
        goto out;
    if (rc < 0)
        goto nomem;
    for (int j = 0; j < n_line_logs; j++)
        add_log(&s, line_logs[j].which, line_logs[j].value, NULL);
    for (int j = 0; j < line.argc; j++)
        build_push(&out, line.argv[j]);
    if (out.nomem || s.nomem)
        goto nomem;
    if ((rc = apply_logs(&s)))
        goto out;
    if (*names)
        SHOAL_LOG_D("%s: from the environment: %s", cmd, names);
    cli.argv = out.argv;
    out.argv = NULL;
    *argc = out.argc;
    *argv = cli.argv;
    status = 0;
    goto out;
nomem:
    fprintf(stderr, "shoal %s: out of memory\n", cmd);
    status = 1;
out:
    free(line.argv);
    free(line_logs);
    free(out.argv);
    free(s.opts);
    free(s.given);
    free(s.logs);
    if (status)
        shoal_cli_release();
    return status;
}
