/*
 * The LM session: what `shoal generate`, `shoal chat` and `shoal api` share
 * to turn tokens into next-token choices, locally or through a chain of
 * nodes.
 *
 * Two objects:
 *   shoal_lm   the model as the client holds it: the GGUF file, the
 *              embedding and head (and, locally, every block), the
 *              tokenizer, an optional local LoRA adapter, and with peers
 *              the list of node addresses (or the DHT nodes to discover
 *              them through) and the model's identity. Opened
 *              once, read-only afterwards, shared by every session.
 *   shoal_gen  one sequence: its own forward scratch (embedding and head
 *              always run in the client), its blocks backend (a local KV
 *              cache, or a remote sequence: client/remote.h, sessions on
 *              every hop of a chain planned over the peers), a sampler, the
 *              tokens fed so far and the logits after the last one.
 *
 * A session is driven by shoal_gen_feed (run tokens, keep the last logits)
 * and shoal_gen_sample; shoal_gen_sync makes the sequence equal a given
 * token list by keeping the common prefix and feeding only the rest, which
 * is how chat keeps a conversation in the cache and how an API slot reuses
 * the prompt prefix of the previous request. Rewinding is cheap both ways:
 * the local cache is truncated, a remote sequence accepts a step at a lower
 * position. With f32 activations on the wire local and remote sessions
 * produce the same bits.
 *
 * Output text: shoal_gen_out turns sampled tokens into printable bytes,
 * holding back incomplete UTF-8 (client/utf8.h), so a terminal or a JSON
 * string never sees half a character.
 *
 * Messages: errors come back as one line in an err buffer or
 * shoal_gen_error(); lines worth telling the user while opening (the chain
 * picked, peers not used) go to the `note` callback of the parameters.
 *
 * Ownership: a shoal_lm must outlive its sessions. THREAD SAFETY: a shoal_lm
 * may be used by any number of threads at once (shoal_gen_new included);
 * a shoal_gen belongs to one thread at a time.
 */
#ifndef SHOAL_CLIENT_GEN_H
#define SHOAL_CLIENT_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/remote.h"
#include "client/sampler.h"
#include "client/tokenizer.h"
#include "client/utf8.h"
#include "kernels/gguf.h"
#include "kernels/model.h"

#define SHOAL_GEN_MAX_PEERS 256
#define SHOAL_GEN_MAX_BATCH 256

typedef struct shoal_lm shoal_lm;
typedef struct shoal_gen shoal_gen;

/* level: SHOAL_LOG_INFO ("chain: 2 hops, ...") or SHOAL_LOG_WARN
 * ("not using peer ..."); line has no newline. */
typedef void (*shoal_gen_note_fn)(void *ctx, int level, const char *line);

typedef struct shoal_lm_params {
    const char *model_path;
    /* node addresses (shoal://HOST:PORT/KEY); n_peers == 0: run locally.
     * The strings are copied. */
    const char *const *peers;
    int n_peers;
    /* or: DHT nodes to join (shoal://...), to discover the model's servers
     * (client/discover.h) and plan the fastest chain; not with peers. The
     * strings are copied. */
    const char *const *initial_peers;
    int n_initial_peers;
    shoal_remote_params remote; /* codec, timeout; max_length is set to ctx */
    long ctx;                   /* context in tokens, 0: the model's */
    int threads;                /* compute threads of each session, >= 1 */
    const char *lora_path;      /* local adapter file, NULL: none (local only) */
    shoal_gen_note_fn note;     /* NULL: silent */
    void *note_ctx;
} shoal_lm_params;

/* No peers, f32 on the wire, ctx 0, threads 1, no adapter, no notes. */
shoal_lm_params shoal_lm_params_default(void);

/* Opens the model. On failure returns an error code, *out is NULL and err
 * holds one line (e.g. "model.gguf: tokenizer has 10 tokens, embedding
 * has 12"). */
int shoal_lm_open(const shoal_lm_params *p, shoal_lm **out, char *err, size_t errlen);
void shoal_lm_close(shoal_lm **lm);

const shoal_tokenizer *shoal_lm_tokenizer(const shoal_lm *lm);
const shoal_hparams *shoal_lm_hparams(const shoal_lm *lm);
const shoal_gguf *shoal_lm_gguf(const shoal_lm *lm);
int shoal_lm_ctx(const shoal_lm *lm);
bool shoal_lm_remote(const shoal_lm *lm);
/* The model's name: its file's base name without .gguf (what the API
 * calls the model's id); lives as long as lm. */
const char *shoal_lm_name(const shoal_lm *lm);

/* That name for a model path, into out (cap bytes). */
void shoal_gen_model_name(const char *path, char *out, size_t cap);

/* The chat template family named by the file's tokenizer.chat_template
 * (client/chat.h); SHOAL_CHAT_NONE when it has none or it is not known. */
int shoal_lm_chat_template(const shoal_lm *lm);

/* With peers: asks them and plans a chain without opening sessions.
 * Returns 0 when the peers that answer cover every block of the model,
 * else an error code and one line in err. Locally: always 0. */
int shoal_lm_check_route(shoal_lm *lm, char *err, size_t errlen);

/* A new session at position 0; with peers it plans a chain and opens a
 * session on every hop. On failure *out is NULL and err holds one line. */
int shoal_gen_new(shoal_lm *lm, const shoal_sampler_params *sp, shoal_gen **out, char *err,
                  size_t errlen);
void shoal_gen_destroy(shoal_gen **g);

/* Feeds toks[0..n) at the current position, in batches, keeping the
 * logits after the last one; each token also enters the sampler's penalty
 * history. n >= 1. SHOAL_ERR_CONTEXT when the context would overflow (then
 * nothing is fed). On another failure the session may have fed part of the
 * tokens; shoal_gen_error() says what happened. */
int shoal_gen_feed(shoal_gen *g, const int32_t *toks, int n);

/* The next token from the logits after the last token fed (it is not fed:
 * feed it to continue). Needs logits: after a successful feed, and not
 * after a rewind. */
int32_t shoal_gen_sample(shoal_gen *g);
bool shoal_gen_has_logits(const shoal_gen *g);

/* Forgets every position >= pos (0 <= pos <= position). The logits are
 * gone; the sampler restarts (penalty history rebuilt from the tokens
 * kept, generator reseeded from its seed). */
int shoal_gen_rewind(shoal_gen *g, int pos);

/* Makes the sequence toks[0..n) (n >= 1) with logits after it: keeps the
 * longest common prefix with what was fed (at most n - 1 tokens, so the
 * last one runs again for its logits), rewinds to it and feeds the rest.
 * *n_fed (may be NULL) gets the count of tokens actually run. */
int shoal_gen_sync(shoal_gen *g, const int32_t *toks, int n, int *n_fed);

/* Replaces the sampler's parameters (a fresh generator from sp->seed); the
 * penalty history is rebuilt from the tokens fed. */
int shoal_gen_set_sampler(shoal_gen *g, const shoal_sampler_params *sp);

int shoal_gen_pos(const shoal_gen *g);
int shoal_gen_ctx(const shoal_gen *g);
const int32_t *shoal_gen_tokens(const shoal_gen *g); /* pos tokens */
const shoal_lm *shoal_gen_lm(const shoal_gen *g);

/* After a remote failure the chain is broken: every later feed fails; the
 * owner should destroy the session and open a new one. */
bool shoal_gen_broken(const shoal_gen *g);

/* One line about the last failure ("" when none). */
const char *shoal_gen_error(const shoal_gen *g);

/* ---- command-line helpers ------------------------------------------------- */

/* Splits the comma-separated list s (modified in place) into addrs[0..max)
 * and checks each address. Returns the count, or -1 after printing
 * "shoal CMD: OPT: ..." to standard error. */
int shoal_gen_parse_peers(const char *cmd, const char *opt, char *s, char **addrs, int max);

/* "f32", "f16", "bf16", "int8" (also the codec's own names) -> codec, or -1. */
int shoal_gen_parse_codec(const char *s);

/* Where a command's blocks run: the options generate, chat and api share
 * (--peers, --initial-peers, --codec, --timeout, --lora, --adapter). Fill
 * the raw fields from getopt (shoal_gen_opts_codec for --codec), then
 * shoal_gen_opts_check once, then shoal_gen_opts_apply to the LM's
 * parameters. The address lists point into the option strings, which are
 * split in place. */
typedef struct shoal_gen_opts {
    char *peers_arg, *initial_arg; /* comma-separated lists, or NULL */
    int codec;                     /* -1: not given (f32) */
    double timeout_s;              /* --timeout: 30 */
    const char *lora_path;         /* --lora FILE: a local adapter */
    const char *adapter;           /* --adapter NAME: one the nodes serve */
    char *peers[SHOAL_GEN_MAX_PEERS];
    int n_peers;
    char *initial[SHOAL_GEN_MAX_PEERS];
    int n_initial;
} shoal_gen_opts;

void shoal_gen_opts_init(shoal_gen_opts *o);
/* --codec's value; false after printing "shoal CMD: --codec: ..." */
bool shoal_gen_opts_codec(const char *cmd, shoal_gen_opts *o, const char *value);
/* Splits and checks the address lists and the options' combinations:
 * --peers or --initial-peers (not both), --codec only with one of them,
 * --lora only without, --adapter only with. 0, or 2 after printing one
 * line. */
int shoal_gen_opts_check(const char *cmd, shoal_gen_opts *o);
/* 1 when the blocks run on nodes. */
bool shoal_gen_opts_remote(const shoal_gen_opts *o);
/* Sets lp's peers, initial peers, codec, timeout, lora path and adapter. */
void shoal_gen_opts_apply(const shoal_gen_opts *o, shoal_lm_params *lp);

/* ---- printable output ---------------------------------------------------- */

/* Room one shoal_gen_out_push / _flush may need. */
#define SHOAL_GEN_OUT_CAP SHOAL_UTF8_STREAM_BOUND(SHOAL_TOKENIZER_MAX_PIECE)

typedef struct shoal_gen_out {
    const shoal_tokenizer *tok;
    int32_t prev;          /* the token before the next one pushed, -1: none */
    shoal_utf8_stream u;
    char piece[SHOAL_TOKENIZER_MAX_PIECE];
} shoal_gen_out;

/* prev: the last token before the output starts (a piece's leading space
 * is dropped right after BOS), -1 for none. replace_invalid: bytes that
 * can never be UTF-8 become U+FFFD (for JSON) instead of passing through. */
void shoal_gen_out_init(shoal_gen_out *o, const shoal_tokenizer *tok, int32_t prev,
                        bool replace_invalid);

/* Appends token tok's piece; writes the bytes now printable to out (cap >=
 * SHOAL_GEN_OUT_CAP) and sets *len. Returns 0 or SHOAL_ERR_ARG (bad id or
 * too small a buffer). */
int shoal_gen_out_push(shoal_gen_out *o, int32_t tok, char *out, size_t cap, size_t *len);

/* End of text: writes what is held back (at most 3 bytes, or U+FFFDs). */
int shoal_gen_out_flush(shoal_gen_out *o, char *out, size_t cap, size_t *len);

#endif
