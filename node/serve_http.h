/*
 * `shoal serve --http-port`: the node's status port (client/statusd.h)
 * with what the serve loop knows of the node: /health answers 200 once the
 * node's blocks are online (ONLINE records in the DHT; at once for a node
 * without one) and 503 while it joins, moves or leaves; /metrics shows the
 * node's registry; / and /api/v1/state show the swarm as the node sees it
 * (it reads the DHT through itself and its initial peers).
 *
 * THREAD SAFETY: serve_http_update from the serve loop; the HTTP threads
 * read what it stored under a mutex and never touch the node itself (it is
 * replaced when the span moves).
 */
#ifndef SHOAL_NODE_SERVE_HTTP_H
#define SHOAL_NODE_SERVE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "swarm/model_id.h"

struct shoal_metrics;
typedef struct serve_http serve_http;

typedef struct serve_http_params {
    const char *host;
    int port;
    struct shoal_metrics *metrics;  /* the node's registry (not owned) */
    const char *const *initial;     /* DHT nodes for the swarm's state (the
                                       node itself first); 0: no dashboard */
    size_t n_initial;
    shoal_model_id id;
    uint32_t nblocks;
    const char *model_path;
} serve_http_params;

/* One line in err on failure (port taken, bad host). */
int serve_http_start(const serve_http_params *p, serve_http **out, char *err, size_t errlen);
int serve_http_port(const serve_http *h);

/* What the node is now: its address, span, state ("joining", "online",
 * "moving", "leaving"), open sessions, measured throughput. ready: /health
 * answers 200. */
void serve_http_update(serve_http *h, const char *address, int begin, int end,
                       const char *state, bool ready, int sessions, double throughput);

/* Accepts NULL; clears *h. */
void serve_http_stop(serve_http **h);

#endif
