/*
 * The status port of a node (`shoal serve --http-port`): a small HTTP
 * server for people and monitoring, separate from the encrypted P2P port.
 *
 *   GET /               the swarm dashboard (client/state.h)
 *   GET /api/v1/state   the swarm's state as JSON, with "self" from the
 *                       caller (client/state.h)
 *   GET /metrics        Prometheus text of the registry (swarm/metrics.h)
 *   GET /health         the caller's readiness: 200 or 503 and a JSON body
 * Anything else is 404, a method other than GET or HEAD 405. Bodies of
 * requests are ignored (nothing here takes input beyond the URL).
 *
 * THREAD SAFETY: the callbacks run on libmicrohttpd's connection threads,
 * possibly at once; start and stop from one thread.
 */
#ifndef SHOAL_CLIENT_STATUSD_H
#define SHOAL_CLIENT_STATUSD_H

#include <jansson.h>
#include <stddef.h>

struct shoal_metrics;
struct shoal_state;

typedef struct shoal_statusd shoal_statusd;

typedef struct shoal_statusd_params {
    const char *host;               /* interface to listen on */
    int port;                       /* 0: any free port */
    struct shoal_metrics *metrics;  /* NULL: /metrics answers 404 */
    struct shoal_state *state;      /* NULL: / and /api/v1/state answer 404 */
    /* Readiness: returns 200 or 503 and a new JSON object in *body. */
    int (*health)(void *ctx, json_t **body);
    /* What the process says of itself in /api/v1/state (a new object). */
    json_t *(*self)(void *ctx);
    /* Called before /metrics is rendered (refresh gauges); may be NULL. */
    void (*collect)(void *ctx);
    void *ctx;
} shoal_statusd_params;

/* One line in err when the host does not resolve or the port is taken. */
int shoal_statusd_start(const shoal_statusd_params *p, shoal_statusd **out, char *err,
                        size_t errlen);
int shoal_statusd_port(const shoal_statusd *s);
/* Accepts NULL; clears *s. */
void shoal_statusd_stop(shoal_statusd **s);

#endif
