/*
 * Route planning: which peers, in which order, carry a token's hidden state
 * through every block of the model.
 *
 * Peer lookup is one interface: a list of candidate records, each an address
 * and what that node said about itself (INFO). Today the client fills the
 * list by asking every address given with --peers (client/remote.h); the
 * DHT will fill the same list from its server records. Planning itself is
 * pure: no sockets, no clocks, so it is tested on made-up lists.
 *
 * A candidate is usable when it serves the client's model (same model hash,
 * block count and hidden size as the client's own GGUF, swarm/model_id.h),
 * speaks the codec the client will send, and accepts sessions as long as
 * the client's context. The plan covers blocks [0, L) exactly once, in
 * order, with the fewest hops: spans may overlap, and a hop may use a
 * sub-range [start, end) of its node's span (the node runs just those
 * blocks). The greedy "furthest reach" rule gives the fewest hops for
 * interval covering: from the first block not yet covered, take the usable
 * candidate whose span contains it and reaches furthest. Ties go to the one
 * with more free cache tokens, then to the smaller address (strcmp), then
 * to the earlier record, so the same list always gives the same chain.
 *
 * Failover (client/remote.h) plans again for one block range [a, b) of a
 * chain that broke, leaving out the peers it has banned:
 * shoal_route_plan_range() is the same rule over [a, b), with a mask of
 * candidates to skip. A candidate whose node said it is leaving (state
 * OFFLINE) is never usable.
 *
 * Ownership: a candidate list owns its records; plans are arrays the caller
 * passes in. THREAD SAFETY: pure functions; a list belongs to one thread.
 */
#ifndef SHOAL_CLIENT_ROUTE_H
#define SHOAL_CLIENT_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/addr.h"
#include "swarm/model_id.h"
#include "swarm/peer.h"

#define SHOAL_ROUTE_MAX_CANDS 4096 /* records a list holds at most */

/* One node that might serve part of the chain. */
typedef struct shoal_route_cand {
    char address[SHOAL_ADDR_MAX]; /* "shoal://host:port/key" */
    shoal_peer_info info;         /* its INFO answer */
    uint32_t state;               /* SHOAL_WIRE_STATE_* from INFO; 0: not said
                                     (online) */
} shoal_route_cand;

/* A growable list of candidates (embedded: init/fini). */
typedef struct shoal_route_cands {
    shoal_route_cand *v;
    size_t n, cap;
} shoal_route_cands;

void shoal_route_cands_init(shoal_route_cands *l);
void shoal_route_cands_fini(shoal_route_cands *l);
/* Append a copy of (address, info). SHOAL_ERR_RANGE for an address longer
 * than SHOAL_ADDR_MAX - 1 or a full list, SHOAL_ERR_NOMEM. */
int shoal_route_cands_add(shoal_route_cands *l, const char *address,
                          const shoal_peer_info *info);

/* What the client needs from a chain. */
typedef struct shoal_route_want {
    shoal_model_id model;  /* the client's model (name for messages, hash) */
    uint32_t nblocks;      /* blocks of the model: the chain covers [0, nblocks) */
    uint32_t dim;          /* hidden size */
    uint32_t max_length;   /* session length needed (0: any) */
    int codec;             /* codec the client sends (proto/codec.h) */
    const char *adapter;   /* LoRA adapter every hop must serve (NULL or "": none) */
} shoal_route_want;

/* One hop: blocks [start, end) on candidate `cand` (an index into the
 * list the plan was made from). */
typedef struct shoal_route_hop {
    size_t cand;
    uint32_t start, end;
} shoal_route_hop;

/* 0 when c serves w's model (hash, block count and hidden size); else
 * SHOAL_ERR_MODEL with one line in err naming both models. */
int shoal_route_check_model(const shoal_route_cand *c, const shoal_route_want *w, char *err,
                            size_t errlen);

/* 0 when c is usable for w (model, a sane span, codec, session length, not
 * leaving); else SHOAL_ERR_MODEL, _PROTOCOL, _UNSUPPORTED, _RANGE or _BUSY
 * (leaving) with one line in err saying why. */
int shoal_route_check(const shoal_route_cand *c, const shoal_route_want *w, char *err,
                      size_t errlen);

/* Plan a chain over cands[0..n) for w into hops (room for max_hops; a plan
 * never needs more than w->nblocks). On success *n_hops hops cover
 * [0, w->nblocks) in order. Errors, each with one line in err:
 *   SHOAL_ERR_NOTFOUND  some blocks have no usable candidate: "no peer
 *                       serves blocks 3:5" (every missing range listed),
 *                       followed by why the candidates that do cover them
 *                       were left out, if any were;
 *   SHOAL_ERR_ARG       w->nblocks is 0 or max_hops too small. */
int shoal_route_plan(const shoal_route_cand *cands, size_t n, const shoal_route_want *w,
                     shoal_route_hop *hops, size_t max_hops, size_t *n_hops, char *err,
                     size_t errlen);

/* The same for blocks [a, b) only (0 <= a < b <= w->nblocks), leaving out
 * every candidate i with skip[i] != 0 (skip may be NULL). Hops end at b at
 * the latest. SHOAL_ERR_NOTFOUND names the blocks of [a, b) nobody usable
 * serves ("no peer serves blocks 3:4"); SHOAL_ERR_ARG for a bad range. */
int shoal_route_plan_range(const shoal_route_cand *cands, size_t n, const uint8_t *skip,
                           const shoal_route_want *w, uint32_t a, uint32_t b,
                           shoal_route_hop *hops, size_t max_hops, size_t *n_hops, char *err,
                           size_t errlen);

/* ---- least expected time per token (candidates from the DHT) ----------
 * (added with discovery, client/discover.h)
 *
 * When the client knows how fast candidates are (their records' measured
 * throughput, tokens/s through one block) and how far (round trips and
 * link bandwidths it measured itself), the chain with the least expected
 * time per token is a shortest path over (server, block): a hop on
 * candidate i over blocks [s, e) costs
 *     rtt_i + (e - s) / throughput_i + shoal_route_token_bytes(w) / bandwidth_i
 * (the last term: one token's hidden state to the node and back, at the
 * link's measured rate), and the path runs from block 0 to block L. A
 * dynamic program over block boundaries finds it exactly (a hop never
 * gains by being split on the same server: that costs one more round trip
 * and transfer). Unknown values are taken as the worst known one (the
 * slowest throughput, the longest round trip, the narrowest link; 1000
 * tokens/s, 100 ms and no transfer cost when none is known), so with
 * nothing known it is the fewest hops again. The bandwidth is the client's
 * link to each node: exact for chains the client drives; with --push the
 * hidden states go from node to node over links nobody measured, and the
 * client's link to each node stands in for them.
 * Candidates whose free cache cannot hold a session of w->max_length
 * tokens are avoided: used only when the chain cannot be made without
 * them. Ties go to the earlier candidate, so a list always gives the same
 * chain. */
typedef struct shoal_route_cost {
    double rtt_ms;     /* measured round trip; <= 0: unknown */
    double throughput; /* tokens/s through one block; <= 0: unknown */
    double bandwidth;  /* bytes/s over the link, both ways together
                          (client/discover.h); <= 0: unknown */
} shoal_route_cost;

/* Bytes that cross a hop's link per token, both ways: w->dim values in
 * w->codec each way, plus SHOAL_ROUTE_MSG_OVERHEAD per message (header,
 * framing, encryption). */
#define SHOAL_ROUTE_MSG_OVERHEAD 128
uint64_t shoal_route_token_bytes(const shoal_route_want *w);

/* Plan over cands[0..n) with costs[0..n) (parallel arrays). *est_ms (may be
 * NULL) gets the plan's expected time per token. Errors as
 * shoal_route_plan (same messages). */
int shoal_route_plan_fast(const shoal_route_cand *cands, const shoal_route_cost *costs,
                          size_t n, const shoal_route_want *w, shoal_route_hop *hops,
                          size_t max_hops, size_t *n_hops, double *est_ms, char *err,
                          size_t errlen);

#endif
