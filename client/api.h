/*
 * The OpenAI-compatible HTTP API that `shoal api` serves.
 *
 * Routes:
 *   POST /v1/chat/completions   messages -> reply (template from the model)
 *   POST /v1/completions        prompt -> continuation
 *   GET  /v1/models             the one model served (also /v1/models/ID)
 *   GET  /health                200 once the model can be used, else 503
 *   GET  /metrics               Prometheus text (swarm/metrics.h)
 *   GET  /                      the swarm dashboard (client/state.h)
 *   GET  /api/v1/state          the swarm's state as JSON (client/state.h)
 * Streaming answers are server-sent events, `data: {...}` chunks in
 * OpenAI's shape ending with `data: [DONE]`; plain answers carry `usage`.
 * Errors are OpenAI's {"error": {"message", "type", "param", "code"}}
 * with the matching status: 400 bad JSON or fields, 401 a missing or wrong
 * key, 404 an unknown route or model, 405 a wrong method, 413 a body over
 * the cap, 429 when the queue is full, 503 when the model is not ready or
 * no slot frees in time, 500 when generation fails.
 *
 * Concurrency: libmicrohttpd runs a thread per connection (bounded by
 * max_connections). Generation happens in a fixed pool of slots, each its
 * own LM session (client/gen.h; with peers its own remote sessions). A
 * request takes a free slot, preferring the one whose cached tokens share
 * the longest prefix with its prompt, so a conversation's next turn feeds
 * only its new tokens; when none is free it waits in a bounded queue for
 * at most queue_timeout seconds (429 when the queue is full, 503 on
 * timeout).
 *
 * Readiness: the server listens before the model is loaded (/health
 * answers 503 "loading"); shoal_api_set_lm makes it usable. With peers a
 * thread asks them every few seconds whether they still cover every block
 * and /health follows.
 *
 * Ownership: the server does not own the LM; stop the server before
 * closing it. THREAD SAFETY: _start, _set_lm and _stop from one thread;
 * the server's own threads do the rest.
 */
#ifndef SHOAL_CLIENT_API_H
#define SHOAL_CLIENT_API_H

#include <stddef.h>

#include "client/gen.h"

typedef struct shoal_api shoal_api;

typedef struct shoal_api_params {
    const char *host;       /* address to listen on (numeric or a name) */
    int port;               /* 0: any free port (see shoal_api_port) */
    const char *api_key;    /* NULL or "": no key needed */
    const char *model_name; /* the id clients name (shoal_gen_model_name) */
    int slots;              /* generation sessions at once, >= 1 */
    int queue;              /* requests that may wait for a slot */
    double queue_timeout;   /* seconds a request waits for a slot */
    size_t max_body;        /* bytes of a request body */
    int max_connections;
    double health_interval; /* seconds between route checks (peers) */
    struct shoal_state *state; /* the swarm's state for GET / (the dashboard)
                               and /api/v1/state (client/state.h); NULL:
                               those answer 404. Not owned; must outlive
                               the server. */
} shoal_api_params;

/* host 127.0.0.1, port 8080, no key, 4 slots, queue 64, 30 s, 1 MiB body,
 * 256 connections, route checks every 5 s. */
shoal_api_params shoal_api_params_default(void);

/* Listens and answers (503 until a model is set). On failure returns an
 * error code and one line in err. */
int shoal_api_start(const shoal_api_params *p, shoal_api **out, char *err, size_t errlen);

/* The port it listens on. */
int shoal_api_port(const shoal_api *a);

/* The model is loaded: requests may use it. lm must outlive the server. */
void shoal_api_set_lm(shoal_api *a, shoal_lm *lm);

/* Stops listening, waits for running requests (generation in progress
 * stops at the next token), frees everything; accepts NULL, clears *a. */
void shoal_api_stop(shoal_api **a);

#endif
