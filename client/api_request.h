/*
 * The body of an OpenAI completion request (POST /v1/chat/completions or
 * /v1/completions) -> a generation job, for the API server (client/api.h).
 *
 * Every byte is a client's: the body is parsed by jansson (duplicate keys
 * rejected), every field's type and range is checked, messages are
 * rendered through the model's chat template and prompts tokenized with
 * the model's tokenizer, and the prompt must leave room in the context.
 * Failures come back as OpenAI's error fields: the HTTP status, the
 * parameter at fault, a code and a message.
 *
 * Accepted: model (must be the served one), messages (chat: roles system,
 * developer, user, assistant; content a string or text parts) or prompt (a
 * string, an array of one string, or token ids), max_tokens /
 * max_completion_tokens, temperature [0, 2], top_p [0, 1], seed, stop (a
 * string or up to 4), stream, stream_options.include_usage, n (1 only).
 * Refused: logprobs, echo.
 *
 * THREAD SAFETY: pure functions of their arguments (the model is only
 * read).
 */
#ifndef SHOAL_CLIENT_API_REQUEST_H
#define SHOAL_CLIENT_API_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/gen.h"
#include "client/sampler.h"

#define SHOAL_API_MAX_STOPS 4
#define SHOAL_API_MAX_STOP_LEN 1024
#define SHOAL_API_MAX_MESSAGES 4096
#define SHOAL_API_COMPLETIONS_DEFAULT_MAX 16 /* OpenAI's default for /v1/completions */

typedef struct shoal_api_job {
    bool chat, stream, include_usage;
    int32_t *prompt;           /* (n_prompt) tokens */
    int n_prompt, max_tokens;  /* max_tokens: cut to the room left in the context */
    shoal_sampler_params sp;
    char *stops[SHOAL_API_MAX_STOPS];
    size_t stop_len[SHOAL_API_MAX_STOPS];
    int n_stops;
    int32_t end_tok;           /* the template's end-of-turn token, or -1 */
} shoal_api_job;

typedef struct shoal_api_error {
    int status;                /* HTTP status */
    const char *param, *code;  /* static strings or NULL */
    char msg[1024];
} shoal_api_error;

typedef struct shoal_api_parse_ctx {
    shoal_lm *lm;              /* tokenizer, template, context length */
    const char *model_name;    /* the one model served */
    uint64_t seed;             /* used when the request names no seed */
} shoal_api_parse_ctx;

/* body[0..len) -> *job (chat: a chat completion, else a completion).
 * 0, or the HTTP status with *e filled. *job is set either way: free it
 * with shoal_api_job_free. */
int shoal_api_parse(const shoal_api_parse_ctx *ctx, const char *body, size_t len, bool chat,
                    shoal_api_job *job, shoal_api_error *e);

void shoal_api_job_free(shoal_api_job *job);

#endif
