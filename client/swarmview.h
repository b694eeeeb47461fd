/*
 * A view of the swarm: what it serves of one model, as a client sees it
 * now. Read by `shoal swarm`, and by the state poller behind the dashboard
 * and /api/v1/state (client/state.h).
 *
 * Reading joins the DHT through the initial peers, reads the records of
 * every block (verified, newest per server, OFFLINE servers kept) and
 * probes every server (client/discover.h). A server serves block b now
 * when it answered, its record says ONLINE, its INFO does not say OFFLINE
 * and INFO's live span holds b; per block the view keeps how many servers
 * serve it and their summed throughput, and whether every block is served.
 *
 * Everything in a view comes from peers: records are signed and checked,
 * but their strings (software, adapters, addresses) are still a peer's
 * words — the JSON escapes them, and the dashboard puts them in the page
 * as text only.
 *
 * JSON (shoal_swarm_view_json), one object per model:
 *   {"file", "name", "hash", "nblocks", "complete",
 *    "servers": [{"address", "peer_id", "span": [a, b], "state", "throughput",
 *                 "free_tokens", "software", "adapters": [...], "answered",
 *                 "seq", "expires_ms", and when answered "rtt_ms",
 *                 "live_span", "live_free_tokens", "bandwidth" (bytes/s
 *                 both ways, 0: not measured) and "bandwidth_bound" (the
 *                 link is slower than that); else "error"}],
 *    "blocks": [{"block", "servers", "throughput", "addresses": [...]}],
 *    "dht": {"contacts", "records", "rejected", "max_hops", "join_ms",
 *            "read_ms", "probe_ms"}}
 *
 * THREAD SAFETY: a view belongs to one thread; reads are independent.
 */
#ifndef SHOAL_CLIENT_SWARMVIEW_H
#define SHOAL_CLIENT_SWARMVIEW_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "client/discover.h"
#include "swarm/model_id.h"

typedef struct shoal_swarm_view {
    const char *path;          /* the model file, for the JSON (not owned) */
    shoal_model_id id;
    uint32_t nblocks;
    shoal_discover_server *sv; /* (nsv) in the order found */
    size_t nsv;
    shoal_discover_stats st;
    uint32_t *served;          /* (nblocks) servers serving b now */
    double *tput;              /* (nblocks) their summed throughput */
    int complete;              /* every block is served */
} shoal_swarm_view;

/* Read the swarm's view of the model with identity id and nblocks blocks
 * into v (v->path may be set first). timeout_ms bounds joining and reading
 * (probing has its own bound, client/discover.h). bandwidth: also time
 * every link with padded PINGs (up to 336 KiB each way per server; the
 * dashboard's poller does not). 0, or an error with one
 * line in err (no initial peer answered, no memory); finding no server is
 * not an error. Free with shoal_swarm_view_free (also after a failure). */
int shoal_swarm_view_read(shoal_swarm_view *v, const char *const *initial, size_t n_initial,
                          const shoal_model_id *id, uint32_t nblocks, int timeout_ms,
                          int bandwidth, char *err, size_t errlen);

/* 1 when server s serves block b now (see above). */
int shoal_swarm_view_serves(const shoal_discover_server *s, uint32_t b);

/* The model's object (schema above); NULL for no memory. */
json_t *shoal_swarm_view_json(const shoal_swarm_view *v);

/* Frees what a read allocated; keeps path. */
void shoal_swarm_view_free(shoal_swarm_view *v);

#endif
