/*
 * `shoal chat`: a conversation with a model, locally or through a chain of
 * nodes.
 *
 * On a terminal the user types at a libedit prompt (line editing, history
 * kept in ~/.shoal_chat_history) and the reply streams token by token, only
 * ever as complete UTF-8 characters. Commands: /help, /clear, /regen,
 * /exit. Ctrl-C stops the reply being written; a Ctrl-C at the prompt right
 * after another one (or after a stopped reply) exits. After each reply a
 * line on standard error gives the prompt and generation speeds.
 *
 * When standard input is not a terminal, every line is one message and
 * every reply is written as one line, so scripts can talk to it: newlines
 * inside a reply are written as the two characters \n and backslashes as
 * \\. The commands work there too (/clear prints nothing, /regen prints
 * the new reply, /exit stops).
 *
 * The conversation lives in the session's KV cache (local or on the
 * nodes): each turn renders the whole conversation with the model's chat
 * template (client/chat.h) and feeds only what follows the prefix already
 * in the cache (shoal_gen_sync), rewinding where the rendering diverges
 * from what was fed. A model without a template gets plain continuation:
 * BOS, then the messages' texts in order, where the assistant's turns are
 * the very tokens it generated, so nothing is ever fed twice. When the
 * conversation outgrows the context, the oldest turns are forgotten (the
 * system prompt stays).
 */
#include <errno.h>
#include <getopt.h>
#include <histedit.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/chat.h"
#include "client/cli.h"
#include "client/cmd.h"
#include "client/gen.h"
#include "kernels/cpu.h"
#include "kernels/err.h"
#include "kernels/pool.h"
#include "proto/codec.h"
#include "swarm/log.h"

#define CHAT_MAX_LINE (1 << 20)   /* bytes of one message */
#define CHAT_HISTORY_SIZE 1000

/* Set by the SIGINT handler; the only state a signal may touch. */
static volatile sig_atomic_t chat_interrupted;

static void chat_on_sigint(int sig)
{
    (void)sig;
    chat_interrupted = 1;
}

/* One message; for an assistant turn also the tokens it generated. */
typedef struct chat_turn {
    int role;
    char *text;
    int32_t *ids; /* plain continuation: the reply's own tokens */
    int n_ids;
} chat_turn;

typedef struct chat {
    shoal_lm *lm;
    shoal_gen *gs;
    const shoal_tokenizer *tok;
    shoal_sampler_params sp;
    int tmpl;
    int32_t end_tok;
    long n_predict;
    int ctx;
    bool tty;
    chat_turn *turns;
    int n_turns, cap_turns;
    int32_t *render;        /* (ctx) the conversation as tokens */
    shoal_chat_msg *msgs;   /* (cap_turns) views for shoal_chat_render */
    int32_t *reply_ids;     /* (ctx) tokens of the reply being written */
    char *reply;            /* the reply's text */
    size_t reply_len, reply_cap;
    shoal_gen_out out;
    char piece[SHOAL_GEN_OUT_CAP];
} chat;

/* ---- the conversation ----------------------------------------------------- */

static void turn_free(chat_turn *t)
{
    free(t->text);
    free(t->ids);
    memset(t, 0, sizeof *t);
}

static int chat_push(chat *c, int role, const char *text, size_t len, const int32_t *ids,
                     int n_ids)
{
    if (c->n_turns == c->cap_turns) {
        int cap = c->cap_turns ? 2 * c->cap_turns : 16;
        chat_turn *t = realloc(c->turns, (size_t)cap * sizeof *t);
        if (!t)
            return SHOAL_ERR_NOMEM;
        c->turns = t;
        shoal_chat_msg *m = realloc(c->msgs, (size_t)cap * sizeof *m);
        if (!m)
            return SHOAL_ERR_NOMEM;
        c->msgs = m;
        c->cap_turns = cap;
    }
    chat_turn *t = &c->turns[c->n_turns];
    memset(t, 0, sizeof *t);
    t->role = role;
    if (!(t->text = malloc(len + 1)))
        return SHOAL_ERR_NOMEM;
    memcpy(t->text, text, len);
    t->text[len] = 0;
    if (n_ids > 0) {
        if (!(t->ids = malloc((size_t)n_ids * sizeof *ids))) {
            turn_free(t);
            return SHOAL_ERR_NOMEM;
        }
        memcpy(t->ids, ids, (size_t)n_ids * sizeof *ids);
        t->n_ids = n_ids;
    }
    c->n_turns++;
    return 0;
}

static void chat_pop(chat *c)
{
    if (c->n_turns > 0)
        turn_free(&c->turns[--c->n_turns]);
}

/* Forget everything but the system prompt. */
static void chat_clear(chat *c)
{
    int keep = c->n_turns > 0 && c->turns[0].role == SHOAL_ROLE_SYSTEM;
    while (c->n_turns > keep)
        chat_pop(c);
}

/* Forget the oldest exchange after the system prompt: the first user turn
 * and everything up to the next user turn. False when only the last user
 * message is left. */
static bool chat_forget_oldest(chat *c)
{
    int first = c->n_turns > 0 && c->turns[0].role == SHOAL_ROLE_SYSTEM;
    int next = first + 1;
    while (next < c->n_turns && c->turns[next].role != SHOAL_ROLE_USER)
        next++;
    if (next >= c->n_turns)
        return false;
    for (int i = first; i < next; i++)
        turn_free(&c->turns[i]);
    memmove(c->turns + first, c->turns + next, (size_t)(c->n_turns - next) * sizeof *c->turns);
    c->n_turns -= next - first;
    return true;
}

/* Plain continuation: BOS, then each turn's text, the assistant's turns as
 * the tokens it generated. */
static int render_plain(chat *c, int *n_out)
{
    int n = 0, rc;
    int32_t bos = shoal_tokenizer_bos(c->tok);
    if (bos >= 0)
        c->render[n++] = bos;
    for (int i = 0; i < c->n_turns; i++) {
        const chat_turn *t = &c->turns[i];
        if (t->ids) {
            if (t->n_ids > c->ctx - n)
                return SHOAL_ERR_RANGE;
            memcpy(c->render + n, t->ids, (size_t)t->n_ids * sizeof *t->ids);
            n += t->n_ids;
        } else if (*t->text) {
            int got = 0;
            rc = shoal_tokenizer_encode(c->tok, t->text, strlen(t->text), false, c->render + n,
                                        c->ctx - n, &got);
            if (rc)
                return rc;
            n += got;
        }
    }
    *n_out = n;
    return 0;
}

/* The conversation as tokens, ending where the assistant's reply starts,
 * with room for at least one generated token. */
static int chat_render(chat *c, int *n_out)
{
    for (;;) {
        int n = 0, rc;
        if (c->tmpl == SHOAL_CHAT_NONE) {
            rc = render_plain(c, &n);
        } else {
            for (int i = 0; i < c->n_turns; i++)
                c->msgs[i] = (shoal_chat_msg){c->turns[i].role, c->turns[i].text};
            rc = shoal_chat_render(c->tmpl, c->tok, c->msgs, c->n_turns, true, c->render,
                                   c->ctx, &n);
        }
        if (rc == 0 && n >= 1 && n < c->ctx) {
            *n_out = n;
            return 0;
        }
        if (rc && rc != SHOAL_ERR_RANGE)
            return rc;
        if (rc == 0 && n < 1)
            return SHOAL_ERR_ARG;
        if (!chat_forget_oldest(c))
            return SHOAL_ERR_CONTEXT;
        fprintf(stderr, "shoal chat: the context of %d tokens is full: forgetting the oldest "
                        "turn\n", c->ctx);
    }
}

/* ---- writing the reply ----------------------------------------------------- */

static int reply_append(chat *c, const char *s, size_t n)
{
    if (n > c->reply_cap - c->reply_len) {
        size_t cap = c->reply_cap ? c->reply_cap : 4096;
        while (n > cap - c->reply_len)
            cap *= 2;
        char *r = realloc(c->reply, cap);
        if (!r)
            return SHOAL_ERR_NOMEM;
        c->reply = r;
        c->reply_cap = cap;
    }
    memcpy(c->reply + c->reply_len, s, n);
    c->reply_len += n;
    return 0;
}

/* Writes text to stdout; off a terminal one reply is one line. */
static void emit(chat *c, const char *s, size_t n)
{
    if (c->tty) {
        fwrite(s, 1, n, stdout);
    } else {
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '\n')
                fputs("\\n", stdout);
            else if (s[i] == '\\')
                fputs("\\\\", stdout);
            else if (s[i] == '\r')
                fputs("\\r", stdout);
            else
                fputc(s[i], stdout);
        }
    }
    fflush(stdout);
}

static int emit_piece(chat *c, const char *s, size_t n)
{
    if (!n)
        return 0;
    emit(c, s, n);
    return reply_append(c, s, n);
}

static int chat_reopen(chat *c)
{
    char err[2048];
    shoal_gen_destroy(&c->gs);
    int rc = shoal_gen_new(c->lm, &c->sp, &c->gs, err, sizeof err);
    if (rc)
        fprintf(stderr, "shoal chat: %s\n", err);
    return rc;
}

/* Renders the conversation (its last turn is the user's), feeds what the
 * cache lacks and writes the reply, which joins the conversation. Returns
 * 0 (also when Ctrl-C stopped the reply) or an error after one line on
 * standard error. */
static int chat_reply(chat *c)
{
    int n = 0, n_fed = 0, rc;
    if ((rc = chat_render(c, &n))) {
        if (rc == SHOAL_ERR_CONTEXT)
            fprintf(stderr, "shoal chat: the message does not fit the context of %d tokens "
                            "(raise -c)\n", c->ctx);
        else
            fprintf(stderr, "shoal chat: cannot render the conversation: %s\n",
                    shoal_strerror(rc));
        return rc;
    }
    if (!c->gs && (rc = chat_reopen(c)))
        return rc;
    chat_interrupted = 0;
    double t0 = shoal_cli_now();
    if ((rc = shoal_gen_sync(c->gs, c->render, n, &n_fed))) {
        fprintf(stderr, "shoal chat: %s\n", shoal_gen_error(c->gs));
        if (shoal_gen_broken(c->gs))
            shoal_gen_destroy(&c->gs); /* a new chain next turn */
        return rc;
    }
    double t1 = shoal_cli_now();
    c->reply_len = 0;
    shoal_gen_out_init(&c->out, c->tok, c->render[n - 1], c->tty);
    int n_gen = 0;
    bool stopped = false;
    size_t len;
    while (n_gen < c->n_predict) {
        if (chat_interrupted) {
            stopped = true;
            break;
        }
        int32_t next = shoal_gen_sample(c->gs);
        if (shoal_tokenizer_is_eog(c->tok, next) || next == c->end_tok)
            break;
        c->reply_ids[n_gen++] = next;
        if (!shoal_gen_out_push(&c->out, next, c->piece, sizeof c->piece, &len) &&
            (rc = emit_piece(c, c->piece, len)))
            break;
        if (n_gen == c->n_predict)
            break;
        if (shoal_gen_pos(c->gs) >= c->ctx) {
            fprintf(stderr, "%sshoal chat: the context of %d tokens is full\n",
                    c->tty ? "\n" : "", c->ctx);
            break;
        }
        if ((rc = shoal_gen_feed(c->gs, &next, 1))) {
            if (c->tty)
                fputc('\n', stdout);
            fprintf(stderr, "shoal chat: %s\n", shoal_gen_error(c->gs));
            if (shoal_gen_broken(c->gs))
                shoal_gen_destroy(&c->gs);
            break;
        }
    }
    double t2 = shoal_cli_now();
    if (!shoal_gen_out_flush(&c->out, c->piece, sizeof c->piece, &len) && !rc)
        rc = emit_piece(c, c->piece, len);
    if (stopped && c->tty)
        fputs(" [stopped]", stdout);
    fputc('\n', stdout);
    fflush(stdout);
    if (rc) {
        if (rc == SHOAL_ERR_NOMEM)
            fprintf(stderr, "shoal chat: out of memory\n");
        return rc;
    }
    fprintf(stderr, "prompt: %d tokens, %.1f tok/s; generated: %d tokens, %.1f tok/s\n", n_fed,
            n_fed / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_gen,
            n_gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    rc = chat_push(c, SHOAL_ROLE_ASSISTANT, c->reply ? c->reply : "", c->reply_len,
                   c->tmpl == SHOAL_CHAT_NONE ? c->reply_ids : NULL,
                   c->tmpl == SHOAL_CHAT_NONE ? n_gen : 0);
    if (rc)
        fprintf(stderr, "shoal chat: out of memory\n");
    return rc;
}

/* ---- commands ------------------------------------------------------------- */

static void chat_help(FILE *out)
{
    fprintf(out, "  /help    this list\n"
                 "  /clear   forget the conversation (the system prompt stays)\n"
                 "  /regen   write the last reply again\n"
                 "  /exit    quit (also Ctrl-D, or Ctrl-C twice)\n"
                 "  Ctrl-C stops the reply being written.\n");
}

enum { CMD_NONE, CMD_HELP, CMD_CLEAR, CMD_REGEN, CMD_EXIT, CMD_UNKNOWN };

static int chat_command(const char *line)
{
    if (line[0] != '/')
        return CMD_NONE;
    static const struct { const char *name; int cmd; } cmds[] = {
        {"/help", CMD_HELP}, {"/?", CMD_HELP}, {"/clear", CMD_CLEAR}, {"/regen", CMD_REGEN},
        {"/exit", CMD_EXIT}, {"/quit", CMD_EXIT}, {"/bye", CMD_EXIT},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(line, cmds[i].name))
            return cmds[i].cmd;
    return CMD_UNKNOWN;
}

/* /regen: drop the last reply and write it again with a fresh seed. */
static int chat_regen(chat *c)
{
    if (c->n_turns == 0 || c->turns[c->n_turns - 1].role != SHOAL_ROLE_ASSISTANT) {
        fprintf(stderr, "shoal chat: no reply to write again\n");
        return 0;
    }
    chat_pop(c);
    c->sp.seed = c->sp.seed * 6364136223846793005ULL + 1442695040888963407ULL;
    if (c->gs && shoal_gen_set_sampler(c->gs, &c->sp)) {
        fprintf(stderr, "shoal chat: %s\n", shoal_gen_error(c->gs));
        return SHOAL_ERR_ARG;
    }
    return chat_reply(c);
}

/* One line typed or read: a command or a message. Returns 0 to go on, 1
 * to stop, or an error code. */
static int chat_line(chat *c, const char *line)
{
    switch (chat_command(line)) {
    case CMD_HELP:
        chat_help(c->tty ? stdout : stderr);
        return 0;
    case CMD_CLEAR:
        chat_clear(c);
        if (c->tty)
            printf("(conversation cleared)\n");
        return 0;
    case CMD_REGEN:
        return chat_regen(c);
    case CMD_EXIT:
        return 1;
    case CMD_UNKNOWN:
        fprintf(stderr, "shoal chat: unknown command '%s' (/help lists them)\n", line);
        return 0;
    default:
        break;
    }
    int rc = chat_push(c, SHOAL_ROLE_USER, line, strlen(line), NULL, 0);
    if (rc) {
        fprintf(stderr, "shoal chat: out of memory\n");
        return rc;
    }
    if ((rc = chat_reply(c))) {
        /* the message did not get its reply: it leaves the conversation */
        if (c->n_turns && c->turns[c->n_turns - 1].role == SHOAL_ROLE_USER)
            chat_pop(c);
    }
    return rc;
}

/* ---- the two front ends ------------------------------------------------------ */

/* Off a terminal: a message per line, a reply per line. Any failure ends
 * the run with status 1, so a script does not read a misaligned reply. */
static int chat_pipe(chat *c)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int status = 0;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (n == 0)
            continue;
        if (n > CHAT_MAX_LINE) {
            fprintf(stderr, "shoal chat: a message is over %d bytes\n", CHAT_MAX_LINE);
            status = 1;
            break;
        }
        int rc = chat_line(c, line);
        if (rc == 1)
            break;
        if (rc) {
            status = 1;
            break;
        }
    }
    free(line);
    return status;
}

static void chat_note(void *ctx, int level, const char *line)
{
    (void)ctx;
    if (level >= SHOAL_LOG_WARN)
        fprintf(stderr, "shoal chat: warning: %s\n", line);
    else
        fprintf(stderr, "%s\n", line);
}

/* A failover or a move in the chain (client/remote.h). */
static void chat_event(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "shoal chat: %s\n", line);
}

static const char *chat_prompt(EditLine *el)
{
    (void)el;
    return "> ";
}

static int chat_tty(chat *c)
{
    char hist_path[4096] = "";
    const char *home = getenv("HOME");
    if (home && *home)
        snprintf(hist_path, sizeof hist_path, "%s/.shoal_chat_history", home);
    EditLine *el = el_init("shoal", stdin, stdout, stderr);
    History *hist = history_init();
    if (!el || !hist) {
        if (el)
            el_end(el);
        if (hist)
            history_end(hist);
        fprintf(stderr, "shoal chat: cannot start the line editor\n");
        return 1;
    }
    HistEvent ev;
    history(hist, &ev, H_SETSIZE, CHAT_HISTORY_SIZE);
    history(hist, &ev, H_SETUNIQUE, 1);
    if (*hist_path)
        history(hist, &ev, H_LOAD, hist_path);
    el_set(el, EL_EDITOR, "emacs");
    el_set(el, EL_PROMPT, chat_prompt);
    el_set(el, EL_HIST, history, hist);
    el_source(el, NULL);

    printf("Chatting with %s (%s, template %s). /help lists the commands.\n",
           shoal_lm_name(c->lm), shoal_lm_remote(c->lm) ? "through the swarm" : "locally",
           shoal_chat_template_name(c->tmpl));
    fflush(stdout);
    int status = 0;
    bool last_was_interrupt = false;
    for (;;) {
        int count = 0;
        chat_interrupted = 0;
        errno = 0;
        const char *in = el_gets(el, &count);
        if (chat_interrupted || (!in && count < 0 && errno == EINTR)) {
            chat_interrupted = 0;
            if (last_was_interrupt) {
                fputc('\n', stdout);
                break;
            }
            printf("\n(Ctrl-C again or /exit to quit)\n");
            fflush(stdout);
            last_was_interrupt = true;
            continue;
        }
        if (!in) { /* end of input */
            fputc('\n', stdout);
            break;
        }
        last_was_interrupt = false;
        size_t n = strlen(in);
        while (n > 0 && (in[n - 1] == '\n' || in[n - 1] == '\r'))
            n--;
        if (n == 0)
            continue;
        char *line = strndup(in, n);
        if (!line) {
            fprintf(stderr, "shoal chat: out of memory\n");
            status = 1;
            break;
        }
        history(hist, &ev, H_ENTER, line);
        int rc = chat_line(c, line);
        free(line);
        if (rc == 1)
            break;
        if (rc == SHOAL_ERR_NOMEM) {
            status = 1;
            break;
        }
        if (chat_interrupted) { /* the reply was stopped */
            chat_interrupted = 0;
            last_was_interrupt = true;
        }
    }
    if (*hist_path)
        history(hist, &ev, H_SAVE, hist_path);
    el_end(el);
    history_end(hist);
    return status;
}

/* ---- options --------------------------------------------------------------- */

static void chat_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal chat -m MODEL.gguf [--peers ADDR,...] [-sys SYSTEM] [options]\n"
            "\n"
            "Talks with a model, locally or through nodes that serve its blocks. On a\n"
            "terminal: line editing and history, replies streamed as they are written,\n"
            "/help for the commands, Ctrl-C stops a reply. Otherwise every line of\n"
            "standard input is one message and every reply is one line of standard output\n"
            "(newlines in it written as \\n, backslashes as \\\\).\n"
            "\n"
            "  -m, --model FILE        GGUF model (Llama family); with --peers only its\n"
            "                          tokenizer, embedding and head are read\n"
            "      --peers ADDR,...    run the blocks on these nodes (shoal://HOST:PORT/KEY,\n"
            "                          as `shoal serve` prints)\n"
            "      --initial-peers ADDR,...\n"
            "                          or: join the swarm's DHT through these nodes and\n"
            "                          use the fastest chain of the model's servers\n"
            "  -sys, --system TEXT     system prompt\n"
            "      --chat-template NAME  none, llama2, llama3, chatml (qwen), mistral, gemma\n"
            "                          or phi3 (default: from the model's\n"
            "                          tokenizer.chat_template; none = plain continuation)\n"
            "  -n, --n-predict N       most tokens per reply (default 512)\n"
            "  -c, --ctx-size N        context length in tokens (default: the model's)\n"
            "      --temp T            temperature, 0 = greedy (default 0.8)\n"
            "      --top-k K           keep the K most likely tokens, 0 = all (default 40)\n"
            "      --top-p P           nucleus sampling threshold (default 0.95)\n"
            "      --min-p P           drop tokens below P * max probability (default 0.05)\n"
            "      --repeat-penalty R  penalty for repeated tokens, 1 = off (default 1)\n"
            "  -s, --seed S            random seed (default: from the clock)\n"
            "  -t, --threads N         compute threads (default: all cores)\n"
            "      --codec C           activations on the wire: f32 (default), f16, bf16, int8\n"
            "      --timeout S         seconds to wait for each answer of a node (default 30)\n"
            "      --lora FILE         apply a LoRA adapter (GGUF, llama.cpp layout) locally\n"
            "      --adapter NAME      with peers: use the adapter NAME the nodes serve\n"
            "  -h, --help              show this help\n");
    shoal_cli_help_common(out, "chat");
}

int shoal_cmd_chat(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},    {"n-predict", required_argument, 0, 'n'},
        {"ctx-size", required_argument, 0, 'c'}, {"temp", required_argument, 0, 1},
        {"top-k", required_argument, 0, 2},      {"top-p", required_argument, 0, 3},
        {"min-p", required_argument, 0, 4},      {"repeat-penalty", required_argument, 0, 5},
        {"peers", required_argument, 0, 7},      {"initial-peers", required_argument, 0, 40},
        {"codec", required_argument, 0, 8},      {"timeout", required_argument, 0, 9},
        {"lora", required_argument, 0, 10},      {"system", required_argument, 0, 11},
        {"chat-template", required_argument, 0, 12},
        {"adapter", required_argument, 0, 41},
        {"seed", required_argument, 0, 's'},     {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0},
    };
    /* -sys is llama.cpp's spelling; getopt would read it as -s ys */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "-sys"))
            argv[i] = "--system";
    }
    const char *model_path = NULL, *system = NULL;
    shoal_gen_opts go;
    shoal_gen_opts_init(&go);
    int tmpl = -1;
    double d;
    long n_predict = 512, ctx = 0, threads = shoal_cpu_count(), v;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    shoal_sampler_params sp = shoal_sampler_params_default();
    int ch;
    if ((ch = shoal_cli_prepare("chat", opts, ":m:n:c:s:t:h", &argc, &argv)))
        return ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":m:n:c:s:t:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model_path = optarg; break;
        case 'n': if (!shoal_cli_int("chat", "-n", optarg, 1, 1L << 30, &n_predict)) return 2; break;
        case 'c': if (!shoal_cli_int("chat", "-c", optarg, 1, 1L << 24, &ctx)) return 2; break;
        case 't': if (!shoal_cli_int("chat", "-t", optarg, 1, 1024, &threads)) return 2; break;
        case 's': if (!shoal_cli_u64("chat", "--seed", optarg, &seed)) return 2; break;
        case 1: if (!shoal_cli_float("chat", "--temp", optarg, 0, 100, &d)) return 2; sp.temp = (float)d; break;
        case 2: if (!shoal_cli_int("chat", "--top-k", optarg, 0, 1L << 30, &v)) return 2; sp.top_k = (int)v; break;
        case 3: if (!shoal_cli_float("chat", "--top-p", optarg, 0, 1, &d)) return 2; sp.top_p = (float)d; break;
        case 4: if (!shoal_cli_float("chat", "--min-p", optarg, 0, 1, &d)) return 2; sp.min_p = (float)d; break;
        case 5: if (!shoal_cli_float("chat", "--repeat-penalty", optarg, 0.01, 100, &d)) return 2; sp.repeat_penalty = (float)d; break;
        case 7: go.peers_arg = optarg; break;
        case 40: go.initial_arg = optarg; break;
        case 8: if (!shoal_gen_opts_codec("chat", &go, optarg)) return 2; break;
        case 9: if (!shoal_cli_float("chat", "--timeout", optarg, 0.001, 86400, &go.timeout_s)) return 2; break;
        case 10: go.lora_path = optarg; break;
        case 41: go.adapter = optarg; break;
        case 11: system = optarg; break;
        case 12:
            if ((tmpl = shoal_chat_template_from_name(optarg)) < 0) {
                fprintf(stderr, "shoal chat: %s: expected none, llama2, llama3, chatml, "
                                "mistral, gemma or phi3, got '%s'\n",
                        shoal_cli_source("--chat-template", optarg), optarg);
                return 2;
            }
            break;
        case 'h': chat_usage(stdout); return 0;
        default: return shoal_cli_bad_option("chat", ch, argv);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shoal chat: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model_path) {
        fprintf(stderr, "shoal chat: -m MODEL.gguf is required (see --help)\n");
        return 2;
    }
    if (shoal_gen_opts_check("chat", &go))
        return 2;
    sp.seed = seed;

    chat c;
    memset(&c, 0, sizeof c);
    c.sp = sp;
    c.n_predict = n_predict;
    c.tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    int status = 1;
    char err[2048];
    shoal_cpu_init();
    shoal_lm_params lp = shoal_lm_params_default();
    lp.model_path = model_path;
    shoal_gen_opts_apply(&go, &lp);
    lp.ctx = ctx;
    lp.threads = (int)threads;
    lp.note = chat_note;
    lp.remote.on_event = chat_event;
    int rc = shoal_lm_open(&lp, &c.lm, err, sizeof err);
    if (rc) {
        fprintf(stderr, "shoal chat: %s\n", err);
        goto out;
    }
    c.tok = shoal_lm_tokenizer(c.lm);
    c.ctx = shoal_lm_ctx(c.lm);
    c.tmpl = tmpl >= 0 ? tmpl : shoal_lm_chat_template(c.lm);
    c.end_tok = shoal_chat_end_token(c.tmpl, c.tok);
    c.render = malloc((size_t)c.ctx * sizeof *c.render);
    c.reply_ids = malloc((size_t)c.ctx * sizeof *c.reply_ids);
    if (!c.render || !c.reply_ids) {
        fprintf(stderr, "shoal chat: out of memory (context %d)\n", c.ctx);
        goto out;
    }
    if (c.n_predict > c.ctx)
        c.n_predict = c.ctx;
    if (system && *system &&
        chat_push(&c, SHOAL_ROLE_SYSTEM, system, strlen(system), NULL, 0)) {
        fprintf(stderr, "shoal chat: out of memory\n");
        goto out;
    }
    if ((rc = shoal_gen_new(c.lm, &c.sp, &c.gs, err, sizeof err))) {
        fprintf(stderr, "shoal chat: %s\n", err);
        goto out;
    }
    if (c.tty) {
        /* no SA_RESTART: a Ctrl-C at the prompt interrupts the read. Off a
         * terminal Ctrl-C keeps its default: it ends the process. */
        struct sigaction sa, old_sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = chat_on_sigint;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_sa);
        status = chat_tty(&c);
        sigaction(SIGINT, &old_sa, NULL);
    } else {
        status = chat_pipe(&c);
    }
out:
    for (int i = 0; i < c.n_turns; i++)
        turn_free(&c.turns[i]);
    free(c.turns);
    free(c.msgs);
    free(c.render);
    free(c.reply_ids);
    free(c.reply);
    shoal_gen_destroy(&c.gs);
    shoal_lm_close(&c.lm);
    return status;
}
