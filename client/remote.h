/*
 * The remote sequence: a chain of nodes (a plan from client/route.h) that
 * together run every block of the model for one sequence, as the local
 * shoal_fwd_blocks does, and that survives nodes that fail or leave.
 *
 * At creation the client opens one link (client/link.h) and one inference
 * session per hop: a random 64-bit session id, blocks [start, end) of the
 * hop, a maximum length equal to the client's context. shoal_remote_blocks()
 * then sends the hidden states of the new tokens through the hops in order
 * (SESSION_STEP, in the chosen codec); each hop's answer is the next hop's
 * input. Destroying the sequence closes the sessions.
 *
 * History. For every block boundary a hop starts at, the sequence keeps
 * the hidden states that entered that block at every position (the input
 * of block a is what the hop before it returned). Buffers grow by doubling
 * up to max_length positions.
 *
 * Failover. When a hop fails in any way (an error reply, a lost connection,
 * a node silent for liveness_ms while a request is pending: killed, hung
 * or stopped, a node that restarted and lost the session, a step not done
 * within timeout_ms), the sequence
 *   1. bans the node for a while (client/health.h; a lost session on a node
 *      that still answers is not banned: it may serve the range again),
 *   2. plans a chain for exactly that hop's blocks [a, b) over the other
 *      candidates (shoal_route_plan_range: several nodes with other span
 *      boundaries are fine) and opens sessions on them,
 *   3. replays the history of boundary a, positions 0 .. pos - 1, through
 *      them in batches of replay_batch tokens (rebuilding their KV caches
 *      and the history of any new inner boundary), together with the step
 *      that failed, and carries on with the next hop.
 * The forward pass gives the same bits for any batch split and thread
 * count, so the output is identical to a run without the failure; with
 * f32 (or when the range moves to one node) the replayed outputs at
 * boundary b are compared with those kept, and a difference is reported.
 * Each failure gets at most max_retries attempts (a replacement that fails
 * too is banned and the next one tried, after a short backoff). When no
 * candidate serves some blocks of [a, b), the nodes not in use (banned ones,
 * and addresses that never answered) are asked for INFO again, and the
 * swarm is looked up again for servers that came since (params.lookup),
 * twice, a second apart; then the call fails with one line naming the
 * missing blocks. Every step carries a step id and a position; a node applies a
 * repeated (id, position) once and answers it from cache, so a step that
 * is sent twice (a retry) is never applied twice.
 *
 * Graceful leave. A node that is leaving flags its replies
 * (SHOAL_WIRE_FLAG_LEAVING). After such a step, the sequence moves that
 * hop to other nodes (the same replay, positions 0 .. len - 1, outputs
 * checked) before it returns, and closes the session on the leaving node:
 * no error, no replay beyond the moved span. When nobody else serves the
 * span the hop stays where it is until the node goes.
 *
 * Server-to-server forwarding (params.push). Every session is opened with
 * a random push token. A step goes to the first hop with a route: the
 * later hops' addresses, session ids and tokens (at most 16). Each node
 * passes its output to the next as SESSION_PUSH and also returns a copy
 * to the client, on the client's own connection to that node, under the
 * request id the client expects for that hop (the first hop's id plus the
 * hop's index). So a token costs one pass through the chain instead of a
 * round trip per hop, and the client still gets every boundary's hidden
 * states for its history: failover works the same. When a push goes wrong
 * (the next node refused it, and the pushing node relays the error; or the
 * next node stays silent past its usual time), the client sends that hop
 * the step itself (same step id: applied at most once) and goes on from
 * there; a node that failed is replaced as above.
 *
 * Lookup: shoal_remote_lookup() asks a static list of addresses for INFO
 * and fills the candidate list that route planning reads; the DHT will fill
 * the same list.
 *
 * Errors: every failing call leaves one line in shoal_remote_last_error(),
 * e.g. "blocks 2:4: peer shoal://127.0.0.1:4001/... did not answer in 1 s,
 * and no other peer serves blocks 2:4".
 *
 * THREAD SAFETY: a sequence belongs to one thread at a time; callbacks run
 * on that thread. Lookup may be called from any thread.
 */
#ifndef SHOAL_CLIENT_REMOTE_H
#define SHOAL_CLIENT_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "client/health.h"
#include "client/route.h"

typedef struct shoal_remote shoal_remote;

/* One line about a failover or a move (no trailing newline). */
typedef void (*shoal_remote_event_fn)(void *ctx, const char *line);
/* Called at the start of every shoal_remote_blocks call (call counts from
 * 0), before anything is sent: test drivers act on chosen steps here (r
 * may be described, not driven). */
typedef void (*shoal_remote_step_fn)(void *ctx, const shoal_remote *r, int call, int pos,
                                     int n);

typedef struct shoal_remote_params {
    int codec;           /* activations on the wire (proto/codec.h) */
    int timeout_ms;      /* deadline of each request (a step, an open) */
    int liveness_ms;     /* a node that answers nothing, not even a ping, this
                            long while a request waits is dead (at most
                            timeout_ms is used) */
    uint32_t max_length; /* positions the sequence may reach: the context */
    int max_retries;     /* replacements tried per failure; 0: no failover */
    int push;            /* server-to-server forwarding */
    int replay_batch;    /* tokens per request when replaying (the nodes take
                            512 unless started with another --max-batch) */
    const char *adapter; /* LoRA adapter the sessions use (NULL: none); every
                            hop must serve it (route want.adapter) */
    shoal_health_params health;
    shoal_remote_event_fn on_event;
    void *event_ctx;
    shoal_remote_step_fn on_step;
    void *step_ctx;
    /* Fresh candidates from the swarm (the DHT, client/discover.h) when no
     * known node can take over a failed range: fills out (an empty list)
     * with the servers found now; 0 or an error. NULL: only the nodes known
     * when the chain opened are asked again. Called on the sequence's
     * thread, at most twice per failure. */
    int (*lookup)(void *ctx, shoal_route_cands *out);
    void *lookup_ctx;
} shoal_remote_params;

/* codec f32, timeout 30 s, liveness 0.7 s, max_length 0 (the caller must set
 * it), 4 retries, no push, replay batches of 512, default health, no
 * callbacks. */
shoal_remote_params shoal_remote_params_default(void);

/* What happened so far (for reports and benchmarks). */
typedef struct shoal_remote_stats {
    int failovers;       /* hops replaced after a failure */
    int moves;           /* hops moved off a leaving node */
    int push_fallbacks;  /* pushed steps the client finished itself */
    uint64_t replayed;   /* positions replayed, summed over new hops */
    /* the last failover: waiting on the failed node until the failure was
     * seen, planning and opening the replacement, replaying the history */
    double detect_ms, reroute_ms, replay_ms;
} shoal_remote_stats;

/* Ask every address in addrs[0..n) for INFO, all at once, each within
 * timeout_ms, and append those that answer to out, in the order of addrs.
 * *n_failed counts the addresses that did not answer (or were malformed);
 * failed (may be NULL) gets one line naming them and why, e.g.
 * "peer shoal://... did not answer in 5 s", or "" when all answered.
 * Returns 0 (even when some failed), SHOAL_ERR_NOMEM or SHOAL_ERR_RANGE
 * (the list is full). */
int shoal_remote_lookup(const char *const *addrs, size_t n, int timeout_ms,
                        shoal_route_cands *out, size_t *n_failed, char *failed,
                        size_t failed_len);

/* Open the chain hops[0..n_hops) (a plan over cands->v for want) and a
 * session on every hop. The sequence keeps a copy of cands (its spares for
 * failover) and of spares[0..n_spares), addresses that did not answer INFO
 * yet and are asked again when a replacement is needed (may be NULL/0).
 * want->dim is the hidden size. A node that fails here is not replaced:
 * the plan was made from answers just received. On failure *out is NULL,
 * every session already opened is closed again, and err holds one line. */
int shoal_remote_new(const shoal_route_cands *cands, const shoal_route_want *want,
                     const char *const *spares, size_t n_spares, const shoal_route_hop *hops,
                     size_t n_hops, const shoal_remote_params *params, shoal_remote **out,
                     char *err, size_t errlen);

/* Close every session (best effort, with a short deadline) and free the
 * sequence; accepts NULL, clears *r. */
void shoal_remote_destroy(shoal_remote **r);

/* Like shoal_fwd_blocks: runs every block over n tokens x (n, dim) at
 * positions pos..pos+n-1, in place. pos <= the positions already run (a
 * smaller pos rewinds: later positions are forgotten). SHOAL_ERR_CONTEXT
 * when pos + n > max_length, SHOAL_ERR_ARG for a bad pos or n; when a
 * failure could not be repaired, the failure's code (SHOAL_ERR_NOTFOUND
 * when nobody else serves the blocks, SHOAL_ERR_TIMEOUT, _BUSY, _SESSION,
 * _PROTOCOL, ...); the sequence is then broken and every later call fails
 * with the same error. */
int shoal_remote_blocks(shoal_remote *r, int pos, int n, float *x);

/* Positions run so far. */
int shoal_remote_len(const shoal_remote *r);

/* The chain, e.g. "0:2 shoal://...:4001/..., 2:5 shoal://...". */
void shoal_remote_describe(const shoal_remote *r, char *out, size_t outlen);

/* One line about the last failure ("" when none). */
const char *shoal_remote_last_error(const shoal_remote *r);

void shoal_remote_stats_get(const shoal_remote *r, shoal_remote_stats *out);

#endif
