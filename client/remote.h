/*
 * The remote sequence: a chain of nodes (a plan from client/route.h) that
 * together run every block of the model for one sequence, as the local
 * shoal_fwd_blocks does.
 *
 * At creation the client connects to every hop's node (CURVE, the key taken
 * from the address) and opens one inference session per hop: a random
 * 64-bit session id, blocks [start, end) of the hop, a maximum length equal
 * to the client's context. shoal_remote_blocks() then sends the hidden
 * states of the new tokens through the hops in order (SESSION_STEP, step
 * ids increasing per hop, in the chosen codec); each hop's answer is the
 * next hop's input. Destroying the sequence closes the sessions.
 *
 * History: per hop, the sequence keeps the hidden states it sent into that
 * hop at every position (max_length x dim floats, reserved up front and
 * committed by the OS as positions are written). That is what failover
 * needs: when a node fails, the client finds replacements for exactly that
 * hop's block range and replays the hop's history to rebuild their caches
 * (see the FAILOVER note in remote.c). This version reports the failure.
 *
 * Lookup: shoal_remote_lookup() asks a static list of addresses for INFO
 * and fills the candidate list that route planning reads; the DHT will fill
 * the same list.
 *
 * Errors: every failing call leaves one line in shoal_remote_last_error(),
 * e.g. "peer shoal://127.0.0.1:4001/... (blocks 2:4) did not answer in 5 s".
 *
 * THREAD SAFETY: a sequence belongs to one thread at a time. Lookup may be
 * called from any thread (it runs its own threads internally).
 */
#ifndef SHOAL_CLIENT_REMOTE_H
#define SHOAL_CLIENT_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "client/route.h"

typedef struct shoal_remote shoal_remote;

typedef struct shoal_remote_params {
    int codec;           /* activations on the wire (proto/codec.h) */
    int timeout_ms;      /* deadline of each RPC */
    uint32_t max_length; /* positions the sequence may reach: the context */
} shoal_remote_params;

/* codec f32, timeout 30 s, max_length 0 (the caller must set it). */
shoal_remote_params shoal_remote_params_default(void);

/* Ask every address in addrs[0..n) for INFO, all at once, each within
 * timeout_ms, and append those that answer to out, in the order of addrs.
 * *n_failed counts the addresses that did not answer (or were malformed);
 * failed (may be NULL) gets one line naming them and why, e.g.
 * "shoal://... did not answer in 5 s", or "" when all answered.
 * Returns 0 (even when some failed), SHOAL_ERR_NOMEM or SHOAL_ERR_RANGE
 * (the list is full). */
int shoal_remote_lookup(const char *const *addrs, size_t n, int timeout_ms,
                        shoal_route_cands *out, size_t *n_failed, char *failed,
                        size_t failed_len);

/* Connect to the nodes of plan hops[0..n_hops) (indices into cands) and
 * open a session on each. dim is the hidden size. On failure *out is NULL,
 * every session already opened is closed again, and err holds one line. */
int shoal_remote_new(const shoal_route_cand *cands, const shoal_route_hop *hops, size_t n_hops,
                     uint32_t dim, const shoal_remote_params *params, shoal_remote **out,
                     char *err, size_t errlen);

/* Close every session (best effort, with a short deadline) and free the
 * sequence; accepts NULL, clears *r. */
void shoal_remote_destroy(shoal_remote **r);

/* Like shoal_fwd_blocks: runs every block over n tokens x (n, dim) at
 * positions pos..pos+n-1, in place. pos <= the positions already run (a
 * smaller pos rewinds: later positions are forgotten). SHOAL_ERR_CONTEXT
 * when pos + n > max_length, SHOAL_ERR_ARG for a bad pos or n; a node's
 * failure gives its error code (SHOAL_ERR_TIMEOUT, _BUSY, _SESSION,
 * _PROTOCOL, ...). After a node failed the sequence is broken: every
 * later call fails with the same error. */
int shoal_remote_blocks(shoal_remote *r, int pos, int n, float *x);

/* Positions run so far. */
int shoal_remote_len(const shoal_remote *r);

/* The chain, e.g. "0:2 shoal://...:4001/..., 2:5 shoal://...". */
void shoal_remote_describe(const shoal_remote *r, char *out, size_t outlen);

/* One line about the last failure ("" when none). */
const char *shoal_remote_last_error(const shoal_remote *r);

#endif
