/*
 * The shared command line (swarm/cli.h): flags from SHOAL_* variables,
 * inserted only when the command line lacks them in every spelling (long,
 * abbreviated, --name=value, short, bundled, attached; nothing after "--"),
 * boolean flags, values that look like options, errors that name the
 * variable, and the logging flags taken out of argv (level, log file).
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "client/cli.h"
#include "swarm/cli.h"
#include "swarm/log.h"

/* A command's options: -m/--model, -p/--prompt, -n/--n-predict, -h/--help
 * (short), --push (flag), --initial-peers, --temp, --opt-arg (optional). */
static const struct option opts[] = {
    {"model", required_argument, 0, 'm'},     {"prompt", required_argument, 0, 'p'},
    {"n-predict", required_argument, 0, 'n'}, {"push", no_argument, 0, 1},
    {"initial-peers", required_argument, 0, 2}, {"temp", required_argument, 0, 3},
    {"opt-arg", optional_argument, 0, 4},     {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0},
};
static const char shortopts[] = ":m:p:n:h";

static const char *const vars[] = {
    "SHOAL_MODEL", "SHOAL_PROMPT", "SHOAL_N_PREDICT", "SHOAL_PUSH", "SHOAL_INITIAL_PEERS",
    "SHOAL_TEMP", "SHOAL_OPT_ARG", "SHOAL_HELP", "SHOAL_VERBOSE", "SHOAL_QUIET",
    "SHOAL_LOG_LEVEL", "SHOAL_LOG_FILE",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    shoal_log_set_level(SHOAL_LOG_INFO);
}

/* Standard error goes to a file while a call runs; err_text() reads it. */
static char err_path[64];
static int saved_fd = -1;
static char err_buf[4096];

static void err_begin(void)
{
    fflush(stderr);
    saved_fd = dup(2);
    int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    close(fd);
}

static const char *err_end(void)
{
    fflush(stderr);
    dup2(saved_fd, 2);
    close(saved_fd);
    FILE *f = fopen(err_path, "r");
    size_t n = f ? fread(err_buf, 1, sizeof err_buf - 1, f) : 0;
    if (f)
        fclose(f);
    err_buf[n] = 0;
    return err_buf;
}

/* Runs shoal_cli_prepare on the words of args (NULL-terminated after the
 * command's name "cmd"); the result joined with '|' in out. */
static int prep(char *out, size_t size, const char *first, ...)
{
    char *argv0[32];
    int argc = 0;
    argv0[argc++] = "cmd";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *))
        argv0[argc++] = (char *)a;
    va_end(ap);
    argv0[argc] = NULL;
    char **argv = argv0;
    err_begin();
    int rc = shoal_cli_prepare("cmd", opts, shortopts, &argc, &argv);
    err_end();
    out[0] = 0;
    if (rc)
        return rc;
    size_t n = 0;
    for (int i = 0; i < argc && n < size; i++)
        n += (size_t)snprintf(out + n, size - n, "%s%s", i ? "|" : "", argv[i]);
    if (argv[argc] != NULL)
        snprintf(out, size, "argv[argc] is not NULL");
    return 0;
}

#define EXPECT(want, ...)                                                             \
    do {                                                                            \
        char got_[1024];                                                            \
        int rc_ = prep(got_, sizeof got_, __VA_ARGS__, (const char *)NULL);         \
        CHECK_MSG(rc_ == 0 && !strcmp(got_, want), "rc %d, got '%s', want '%s' (%s)", rc_, \
                  got_, want, err_buf);                                             \
    } while (0)

static void test_env_insertion(void)
{
    clear_env();
    EXPECT("cmd|-p|hi", "-p", "hi");
    setenv("SHOAL_MODEL", "/m.gguf", 1);
    EXPECT("cmd|--model|/m.gguf|-p|hi", "-p", "hi");
    /* the command line has it: every spelling counts */
    EXPECT("cmd|-m|x", "-m", "x");
    EXPECT("cmd|-mx", "-mx");
    EXPECT("cmd|--model|x", "--model", "x");
    EXPECT("cmd|--model=x", "--model=x");
    EXPECT("cmd|--mod|x", "--mod", "x");       /* a unique prefix, as getopt allows */
    EXPECT("cmd|-hm|x", "-hm", "x");           /* bundled after a flag */
    /* ... but not as another option's value */
    EXPECT("cmd|--model|/m.gguf|-p|-m", "-p", "-m");
    EXPECT("cmd|--model|/m.gguf|--prompt|-mx", "--prompt", "-mx");
    EXPECT("cmd|--model|/m.gguf|-pm", "-pm");  /* attached value "m" */
    EXPECT("cmd|--model|/m.gguf|--|-m|x", "--", "-m", "x"); /* operands after "--" */
    EXPECT("cmd|--model|/m.gguf|file|-p|x", "file", "-p", "x");
    EXPECT("cmd|-m|a|file", "-m", "a", "file");
    /* an empty variable is unset */
    setenv("SHOAL_MODEL", "", 1);
    EXPECT("cmd", NULL);
    unsetenv("SHOAL_MODEL");
    /* several, in option-table order; names upper case with '_' for '-' */
    setenv("SHOAL_INITIAL_PEERS", "shoal://a", 1);
    setenv("SHOAL_N_PREDICT", "7", 1);
    EXPECT("cmd|--n-predict|7|--initial-peers|shoal://a", NULL);
    EXPECT("cmd|--initial-peers|shoal://a|-n8", "-n8");
    EXPECT("cmd|--n-predict|7|--initial=b", "--initial=b");
    unsetenv("SHOAL_INITIAL_PEERS");
    unsetenv("SHOAL_N_PREDICT");
    /* --help is never set from the environment */
    setenv("SHOAL_HELP", "1", 1);
    EXPECT("cmd", NULL);
    unsetenv("SHOAL_HELP");
    /* an optional value can only be attached */
    setenv("SHOAL_OPT_ARG", "v", 1);
    EXPECT("cmd|--opt-arg=v", NULL);
    unsetenv("SHOAL_OPT_ARG");
    /* a value that looks like an option stays a value */
    setenv("SHOAL_PROMPT", "-v --model x", 1);
    EXPECT("cmd|--prompt|-v --model x", NULL);
    unsetenv("SHOAL_PROMPT");
    clear_env();
}

static void test_flags(void)
{
    clear_env();
    static const char *const yes[] = {"1", "true", "yes", "on", "TRUE", "On"};
    static const char *const no[] = {"0", "false", "no", "off", "NO"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        setenv("SHOAL_PUSH", yes[i], 1);
        EXPECT("cmd|--push", NULL);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        setenv("SHOAL_PUSH", no[i], 1);
        EXPECT("cmd", NULL);
    }
    setenv("SHOAL_PUSH", "1", 1);
    EXPECT("cmd|--push", "--push"); /* given: not twice */
    setenv("SHOAL_PUSH", "maybe", 1);
    char got[256];
    CHECK(prep(got, sizeof got, "-p", "x", NULL) == 2);
    CHECK_MSG(strstr(err_buf, "shoal cmd: SHOAL_PUSH: expected 1, true") &&
                  strstr(err_buf, "got 'maybe'") && strchr(err_buf, '\n') == strrchr(err_buf, '\n'),
              "%s", err_buf);
    clear_env();
}

/* An inserted value goes through the command's own parser, whose message
 * names the variable. */
static void test_error_names_variable(void)
{
    clear_env();
    setenv("SHOAL_N_PREDICT", "abc", 1);
    char *argv0[] = {"cmd", "-p", "x", NULL};
    char **argv = argv0;
    int argc = 3;
    CHECK(shoal_cli_prepare("cmd", opts, shortopts, &argc, &argv) == 0);
    optind = 1;
    opterr = 0;
    int c, n_seen = 0;
    long v = 0;
    const char *prompt = NULL;
    while ((c = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
        if (c == 'n') {
            n_seen++;
            CHECK(!strcmp(shoal_cli_source("-n", optarg), "SHOAL_N_PREDICT"));
            err_begin();
            CHECK(!shoal_cli_int("cmd", "-n", optarg, 0, 100, &v));
            err_end();
            CHECK_MSG(!strcmp(err_buf, "shoal cmd: SHOAL_N_PREDICT: expected an integer in "
                                       "[0, 100], got 'abc'\n"), "%s", err_buf);
        } else if (c == 'p') {
            prompt = optarg;
            CHECK(!strcmp(shoal_cli_source("-p", optarg), "-p")); /* typed: the option */
        } else {
            CHECK_MSG(0, "getopt returned %d", c);
        }
    }
    CHECK(n_seen == 1 && prompt && !strcmp(prompt, "x"));
    /* a typed value, even an equal string, is the option's */
    CHECK(!strcmp(shoal_cli_source("-n", "abc"), "-n"));
    shoal_cli_release();
    CHECK(!strcmp(shoal_cli_source("-n", optarg), "-n"));
    clear_env();
}

static void test_logging_flags(void)
{
    clear_env();
    EXPECT("cmd|-p|x", "-v", "-p", "x");
    CHECK(shoal_log_get_level() == SHOAL_LOG_DEBUG);
    clear_env();
    EXPECT("cmd|-p|x", "-p", "x", "--quiet");
    CHECK(shoal_log_get_level() == SHOAL_LOG_WARN);
    clear_env();
    EXPECT("cmd", "-vv");
    CHECK(shoal_log_get_level() == SHOAL_LOG_DEBUG);
    clear_env();
    EXPECT("cmd|-h", "-vhq");            /* taken out of a bundle; the last one wins */
    CHECK(shoal_log_get_level() == SHOAL_LOG_WARN);
    clear_env();
    EXPECT("cmd|-p|x", "-vp", "x");
    CHECK(shoal_log_get_level() == SHOAL_LOG_DEBUG);
    clear_env();
    EXPECT("cmd|-p|-v", "-p", "-v");     /* a value, not the flag */
    CHECK(shoal_log_get_level() == SHOAL_LOG_INFO);
    EXPECT("cmd|-p-v", "-p-v");
    EXPECT("cmd|--prompt|-q", "--prompt", "-q");
    EXPECT("cmd|--|-v", "--", "-v");
    CHECK(shoal_log_get_level() == SHOAL_LOG_INFO);
    EXPECT("cmd|-p|x", "--log-level", "error", "-p", "x");
    CHECK(shoal_log_get_level() == SHOAL_LOG_ERROR);
    EXPECT("cmd", "--log-level=off");
    CHECK(shoal_log_get_level() == SHOAL_LOG_OFF);
    EXPECT("cmd", "--verb");             /* a unique prefix */
    CHECK(shoal_log_get_level() == SHOAL_LOG_DEBUG);
    clear_env();
    /* the environment, then the command line */
    setenv("SHOAL_LOG_LEVEL", "debug", 1);
    EXPECT("cmd", NULL);
    CHECK(shoal_log_get_level() == SHOAL_LOG_DEBUG);
    EXPECT("cmd", "-q");
    CHECK(shoal_log_get_level() == SHOAL_LOG_WARN);
    clear_env();
    setenv("SHOAL_VERBOSE", "yes", 1);
    EXPECT("cmd", NULL);
    CHECK(shoal_log_get_level() == SHOAL_LOG_DEBUG);
    clear_env();
    /* errors: one line, exit status 2, naming where the value came from */
    char got[256];
    setenv("SHOAL_LOG_LEVEL", "loud", 1);
    CHECK(prep(got, sizeof got, NULL) == 2);
    CHECK_MSG(!strcmp(err_buf, "shoal cmd: SHOAL_LOG_LEVEL: expected debug, info, warn, error "
                               "or off, got 'loud'\n"), "%s", err_buf);
    clear_env();
    CHECK(prep(got, sizeof got, "--log-level", "loud", NULL) == 2);
    CHECK(strstr(err_buf, "shoal cmd: --log-level: expected") != NULL);
    CHECK(prep(got, sizeof got, "--log-level", NULL) == 2);
    CHECK_MSG(strstr(err_buf, "'--log-level' needs a value") != NULL, "%s", err_buf);
    CHECK(prep(got, sizeof got, "--verbose=1", NULL) == 2);
    /* "--log" could be --log-level or --log-file */
    CHECK(prep(got, sizeof got, "--log", "x", NULL) == 2);
    CHECK_MSG(strstr(err_buf, "'--log' is ambiguous") != NULL, "%s", err_buf);
    /* unknown options are left for getopt to report */
    EXPECT("cmd|--bogus|-z", "--bogus", "-z");
    clear_env();
}

static void test_log_file(void)
{
    clear_env();
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_cli_log.%d", (int)getpid());
    unlink(path);
    EXPECT("cmd", "--log-file", path);
    SHOAL_LOG_I("first line %d", 1);
    SHOAL_LOG_D("not at info");
    EXPECT("cmd", "--log-file=/nonexistent-dir/x", "--log-file", path); /* the last wins */
    SHOAL_LOG_W("second line");
    CHECK(shoal_log_set_file(NULL) == 0);
    FILE *f = fopen(path, "r");
    char buf[1024] = "";
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    CHECK_MSG(strstr(buf, " I: first line 1\n") && strstr(buf, " W: second line\n") &&
                  !strstr(buf, "not at info"), "%s", buf);
    /* the environment's file unless the command line names one */
    unlink(path);
    setenv("SHOAL_LOG_FILE", path, 1);
    EXPECT("cmd", NULL);
    SHOAL_LOG_I("from the environment");
    CHECK(shoal_log_set_file(NULL) == 0);
    CHECK(access(path, F_OK) == 0);
    char got[256];
    CHECK(prep(got, sizeof got, "--log-file", "/nonexistent-dir/x", NULL) == 2);
    CHECK_MSG(strstr(err_buf, "shoal cmd: --log-file /nonexistent-dir/x: cannot open it") &&
                  strchr(err_buf, '\n') == strrchr(err_buf, '\n'), "%s", err_buf);
    setenv("SHOAL_LOG_FILE", "/nonexistent-dir/y", 1);
    CHECK(prep(got, sizeof got, NULL) == 2);
    CHECK_MSG(strstr(err_buf, "shoal cmd: SHOAL_LOG_FILE /nonexistent-dir/y: cannot open") != NULL,
              "%s", err_buf);
    unlink(path);
    clear_env();
}

static void test_env_name(void)
{
    char v[32];
    shoal_cli_env_name("initial-peers", v, sizeof v);
    CHECK(!strcmp(v, "SHOAL_INITIAL_PEERS"));
    shoal_cli_env_name("n-predict", v, sizeof v);
    CHECK(!strcmp(v, "SHOAL_N_PREDICT"));
    shoal_cli_env_name("a-very-long-option-name-indeed", v, 12);
    CHECK(!strcmp(v, "SHOAL_A_VER"));
}

int main(void)
{
    snprintf(err_path, sizeof err_path, "/tmp/test_cli_err.%d", (int)getpid());
    test_env_name();
    test_env_insertion();
    test_flags();
    test_error_names_variable();
    test_logging_flags();
    test_log_file();
    shoal_cli_release();
    unlink(err_path);
    return check_done();
}
