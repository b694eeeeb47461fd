/*
 * Discovery: the servers of a model as the swarm's DHT names them, checked
 * and measured by the client itself.
 *
 * 1. Join the DHT as a client (no address: it answers nobody and enters no
 *    routing table) through --initial-peers (swarm/dht_net.h).
 * 2. Read the records under the key of every block of the model
 *    (swarm/blockmap.h): every value is verified here again (signature,
 *    the block's key, expiry, the model), one record per server is kept,
 *    the newest. OFFLINE servers are dropped.
 * 3. Probe every other server at once: INFO (what it serves now, free
 *    cache, codecs, session length: the same answer --peers gets), then a
 *    few PINGs; the round trip is the least of the PINGs (the first
 *    exchange also pays for the TCP and CURVE handshakes). The connection
 *    is CURVE-bound to the key in the record's address, so the answer comes
 *    from the server the record names. A server that does not answer in
 *    probe_timeout_ms is left out.
 * 4. Time the link (pad_max > 0): PINGs that carry a pad of N bytes and ask
 *    for it back (proto/wire.h), N = 16 KiB first, four times more each
 *    time (at most pad_max), until a padded round trip takes 2 ms more than
 *    the plain RTT or N reaches pad_max. The bandwidth is 2 N over that
 *    extra time: bytes per second over the link, both ways together, with
 *    the encryption on the way, as activations will see it. At most 336 KiB
 *    each way per server. A padded PING not back within 250 ms (or when the
 *    probe's time is up) ends the timing with an upper bound (the link is
 *    slower than that), so a slow link delays discovery by 250 ms at most;
 *    a server that answers without the pad (an older one) gives none. The
 *    servers are timed at once, so a bottleneck at the client's own link is
 *    shared among them.
 *
 * shoal_discover() turns that into what route planning reads
 * (client/route.h): a candidate per server that answered, and its costs
 * (the RTT and bandwidth measured, the throughput from its record) for
 * shoal_route_plan_fast.
 *
 * THREAD SAFETY: every call makes its own sockets and DHT; calls are
 * independent and may run on any thread.
 */
#ifndef SHOAL_CLIENT_DISCOVER_H
#define SHOAL_CLIENT_DISCOVER_H

#include <stddef.h>
#include <stdint.h>

#include "client/route.h"
#include "swarm/record.h"

typedef struct shoal_discover_params {
    int timeout_ms;       /* joining and reading the records: 10 s */
    int probe_timeout_ms; /* INFO and pings of all servers: 3 s */
    int pings;            /* round trips measured after INFO: 3 */
    int include_offline;  /* also report (not probe) OFFLINE servers: 0 */
    uint32_t pad_max;     /* largest pad timing the link, bytes (a multiple of
                             4, <= SHOAL_WIRE_PAD_MAX): SHOAL_WIRE_PAD_MAX;
                             0: no bandwidth measured */
} shoal_discover_params;

shoal_discover_params shoal_discover_params_default(void);

/* One server of the model. */
typedef struct shoal_discover_server {
    shoal_record rec;      /* its newest record */
    int answered;          /* INFO answered: cand is valid */
    shoal_route_cand cand; /* address and INFO */
    double rtt_ms;         /* least round trip (0 when not measured) */
    double bandwidth;      /* bytes/s over the link, both ways together (0
                              when not measured) */
    int bandwidth_bound;   /* 1: the padded PING was not back in time, so
                              the link is slower than `bandwidth` */
    char why[128];         /* when it did not answer */
} shoal_discover_server;

typedef struct shoal_discover_stats {
    size_t contacts;       /* the client's routing table after joining */
    uint32_t records;      /* values read, in all blocks */
    uint32_t rejected;     /* values that failed verification here */
    uint32_t max_hops;     /* the deepest get */
    double join_ms, read_ms, probe_ms;
} shoal_discover_stats;

/* Steps 1-3 for the model with this hash and block count. *out (free())
 * gets *count servers, in the order found. st may be NULL. Fails with one
 * line in err when no initial peer answers or the records cannot be read;
 * finding no server is not a failure (count 0). */
int shoal_discover_servers(const char *const *initial, size_t n_initial,
                           const uint8_t model_hash[32], uint32_t nblocks,
                           const shoal_discover_params *p, shoal_discover_server **out,
                           size_t *count, shoal_discover_stats *st, char *err, size_t errlen);

/* Probe addrs[0..n) (INFO, then pings, then padded pings up to pad_max
 * bytes) all at once within timeout_ms: servers[i].cand, .answered,
 * .rtt_ms, .bandwidth and .why are filled; .rec is left as it is. */
int shoal_discover_probe(shoal_discover_server *servers, size_t n, int timeout_ms, int pings,
                         uint32_t pad_max);

/* For route planning: the servers of want's model that answered, put in
 * out (which must be empty), with costs (*costs: malloc'd, parallel to out->v, the caller
 * frees). note (may be NULL) gets one line for the user, e.g. "DHT: 5
 * servers, 5 answered (RTT 0.2-0.4 ms, 0.3-812 MB/s)", naming the servers
 * that did not answer, and with 8 servers or fewer each one's link:
 * "links: 10.0.0.5:4001 0.21 ms 0.25 MB/s, ...". */
int shoal_discover(const char *const *initial, size_t n_initial, const shoal_route_want *want,
                   const shoal_discover_params *p, shoal_route_cands *out,
                   shoal_route_cost **costs, char *note, size_t notelen, char *err,
                   size_t errlen);

#endif
