/*
 * The node daemon's engine: serves one span of a model's blocks over the
 * ZeroMQ transport (swarm/transport.h) to any number of clients.
 *
 * RPCs (proto/wire.h):
 *   PING           echo.
 *   INFO           model name and hash (swarm/model_id.h), span, block
 *                  count, dim, weight type, free cache tokens, longest
 *                  session, codecs, software version.
 *   FORWARD        stateless: hidden states (n, dim) (one sequence at
 *                  positions 0..n-1) or (b, s, dim) (b sequences) through
 *                  blocks [a, b) inside the served span.
 *   SESSION_OPEN   reserve max_length tokens of KV cache under a session id
 *                  the client chose; when the cache budget is full the
 *                  request waits up to busy_wait_ms for space, then gets
 *                  SHOAL_ERR_BUSY "cache full".
 *   SESSION_STEP   n new tokens at a position <= the session's length (a
 *                  lower position rewinds) with position + n <= max_length,
 *                  else SHOAL_ERR_RANGE. A repeated step (same step id and
 *                  position as the last one applied) returns the cached
 *                  answer instead of running twice.
 *   SESSION_CLOSE  free the session. Idle sessions expire after
 *                  session_timeout_s.
 *   SESSION_PUSH   a step passed on by the previous node of a client's
 *                  chain (server-to-server forwarding, node/push.h); a
 *                  SESSION_STEP that carries a route is passed on likewise.
 * Graceful leave: after shoal_node_leave() the node refuses new sessions
 * (SHOAL_ERR_BUSY "node is leaving"), says OFFLINE in INFO and flags every
 * reply SHOAL_WIRE_FLAG_LEAVING, while it keeps serving the sessions it
 * has, so that their clients move them elsewhere.
 * Sessions are bound to the CURVE key of the client that opened them (via
 * the node's ZAP handler): another client naming the same id gets
 * SHOAL_ERR_SESSION, as for an unknown id.
 *
 * Threads: one I/O thread owns the ROUTER socket, answers PING, INFO and
 * every malformed request itself, and queues the rest; `workers` compute
 * threads take jobs from the queue (steps of one session run one at a
 * time, in arrival order) and each owns a forward-pass scratch with
 * threads / workers compute threads. Replies never block the I/O thread: a
 * client that stops reading loses its replies, nobody else waits.
 *
 * Every byte from the wire is checked (header by proto/wire, tensors by
 * proto/codec: shape, dim, token cap, NaN/Inf) and bad input gets an ERROR
 * reply, or is dropped when it is not even a header.
 *
 * THREAD SAFETY: new/start/stop/destroy from one thread (main); the
 * getters from any thread.
 */
#ifndef SHOAL_NODE_NODE_H
#define SHOAL_NODE_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/gguf.h"
#include "proto/identity.h"
#include "swarm/model_id.h"

typedef struct shoal_node shoal_node;

typedef struct shoal_node_params {
    int block_begin, block_end;  /* the span served: blocks [begin, end) */
    const char *host;            /* interface to listen on ("0.0.0.0", "::1") */
    int port;                    /* 0: any free port */
    const char *public_host;     /* host written in the address; NULL: host,
                                    or a local address when host is a wildcard */
    int threads;                 /* compute threads in all (>= 1) */
    int workers;                 /* compute jobs at once; 0: automatic */
    int max_batch;               /* tokens per request */
    uint64_t cache_tokens;       /* KV-cache budget; 0: automatic (2 GiB) */
    int max_sessions;
    uint32_t max_length;         /* longest session; 0: the cache budget */
    double session_timeout_s;    /* idle sessions are closed after this */
    int busy_wait_ms;            /* how long a SESSION_OPEN waits for space */
} shoal_node_params;

/* 0:0 on 0.0.0.0, port 0, 1 thread, automatic workers, 512 tokens per
 * request, automatic cache, 256 sessions, 300 s timeout, 2000 ms wait. */
shoal_node_params shoal_node_params_default(void);

/* Open the span of g (which must outlive the node) and bind the socket.
 * On failure returns an error and writes one line into err. */
int shoal_node_new(const shoal_gguf *g, const shoal_identity *id, const shoal_node_params *p,
                   shoal_node **out, char *err, size_t errlen);

/* Serve the LoRA adapter in the GGUF file at path (llama.cpp's layout,
 * lora/adapter.h) under `name` (1..63 bytes of A-Z a-z 0-9 . _ -): its
 * pairs for the served blocks are loaded now, and inference sessions that
 * name it at SESSION_OPEN apply it. Call before shoal_node_start, at most
 * 16 times. SHOAL_ERR_ARG for a bad or repeated name, else the file's
 * error; one line in err. (node/train.c) */
int shoal_node_add_adapter(shoal_node *n, const char *name, const char *path, char *err,
                           size_t errlen);

/* Keep Prometheus metrics (families shoal_node_*, listed in
 * node/node_metrics.c) in m, which must outlive the node; call before
 * shoal_node_start. A registry may be handed to successive nodes (a node
 * made anew after moving its span): the families and counters carry on.
 * SHOAL_ERR_ARG when m's names clash with other families. */
struct shoal_metrics;
int shoal_node_set_metrics(shoal_node *n, struct shoal_metrics *m);

/* Start the I/O and compute threads. */
int shoal_node_start(shoal_node *n, char *err, size_t errlen);

/* Stop accepting requests, finish the jobs already taken, send their
 * replies, close every session and join the threads. Idempotent. */
void shoal_node_stop(shoal_node *n);

/* Start leaving (see above); idempotent. Any thread. */
void shoal_node_leave(shoal_node *n);
bool shoal_node_leaving(const shoal_node *n);

/* Inference sessions open now. Any thread. */
int shoal_node_sessions(shoal_node *n);

/* Stops first if needed; accepts NULL, clears *p. */
void shoal_node_destroy(shoal_node **p);

/* False once the I/O thread has stopped (after stop, or a fatal error). */
bool shoal_node_running(const shoal_node *n);

/* "shoal://HOST:PORT/KEY", owned by the node. */
const char *shoal_node_address(const shoal_node *n);
int shoal_node_port(const shoal_node *n);
const shoal_model_id *shoal_node_model_id(const shoal_node *n);
uint64_t shoal_node_cache_tokens(const shoal_node *n);
int shoal_node_workers(const shoal_node *n);

#endif
