/*
 * The DHT in the node: joining, announcing, placement and rebalancing.
 *
 * A node started with --initial-peers runs a full DHT node (swarm/dht.h
 * over swarm/dht_net.h) on its one port: DHT requests arriving on the
 * node's ROUTER are answered by the I/O thread, its own requests go out on
 * a pool of DEALERs the I/O thread polls with its other sockets. The
 * announcer object (shoal_announce) owns that DHT, its DEALERs and their
 * ZeroMQ context; it outlives any one shoal_node, so a node that moves to
 * another span (a new shoal_node on the same port) keeps its DHT, its
 * routing table and the records it holds for others.
 *
 * Records: every refresh_ms (jittered) the announcer signs one record per
 * block of the node's span (swarm/record.h: span, state, throughput, free
 * cache tokens, weight type, adapters, version), with sequence number =
 * the Unix time in ms and expiry = now + record_ttl_ms, and stores each
 * under its block's key. States: JOINING for a span being loaded (during
 * a move), ONLINE while serving, OFFLINE once the node leaves (SIGTERM:
 * at once, while it still serves its open sessions) or stops (a last
 * round put by shoal_announce_leave). A node killed without a word is
 * forgotten when its records expire.
 *
 * Placement (node/cmd_serve.c, without --blocks): shoal_announce_choose()
 * joins the DHT as a client, reads the records of every block
 * (swarm/blockmap.h) and applies Petals' rule (swarm/placement.h) to the
 * node's own span length and measured throughput
 * (shoal_announce_measure). Rebalancing: every rebalance_ms (jittered)
 * the announcer of a running node reads the records again and, when
 * moving would raise the swarm's bottleneck by more than the margin and
 * leave no gap (placement.h), asks the main thread to move
 * (shoal_announce_move_wanted); the main thread lets the node leave, stops
 * it, announces JOINING for the new span, opens the new span and
 * attaches the announcer to the new node.
 *
 * Threads: while attached to a started node (shoal_node_set_announce,
 * before shoal_node_start) the announcer belongs to that node's I/O
 * thread, through the node_announce_* hooks below; otherwise (before the
 * start, after shoal_node_stop) to the caller's thread. Only
 * shoal_announce_move_wanted() and shoal_announce_online() may be called
 * from another thread while a node runs.
 */
#ifndef SHOAL_NODE_ANNOUNCE_H
#define SHOAL_NODE_ANNOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "kernels/gguf.h"
#include "node/node.h"
#include "proto/identity.h"
#include "proto/wire.h"
#include "swarm/model_id.h"

#define NODE_ANNOUNCE_POLL_MAX 512 /* DHT sockets polled by the I/O thread (256 links) */

typedef struct shoal_announce shoal_announce;

typedef struct shoal_announce_params {
    const char *const *initial_peers; /* addresses to join through (copied) */
    size_t n_initial;
    int64_t record_ttl_ms;   /* 5 min: records expire this long after signing */
    int64_t refresh_ms;      /* 60 s (at most record_ttl_ms / 3) */
    int64_t rebalance_ms;    /* 0: never re-check placement */
    double rebalance_margin; /* 0.02: move when the bottleneck gains more than
                                2 % of this server's own throughput
                                (swarm/placement.h) */
    double throughput;       /* tokens/s through one block (announced) */
} shoal_announce_params;

/* No peers, 5 min records refreshed each minute, no rebalancing, margin
 * 0.02, throughput 0. */
shoal_announce_params shoal_announce_params_default(void);

/* An announcer for the node at `address` (its shoal:// address, whose key
 * is id's) serving `model` (nblocks blocks). id must outlive it. Starts
 * joining the DHT through the initial peers at once. One line in err on
 * failure: SHOAL_ERR_ARG (no usable initial peer, a bad address),
 * SHOAL_ERR_IO, SHOAL_ERR_NOMEM. */
int shoal_announce_new(const shoal_identity *id, const char *address,
                       const shoal_model_id *model, uint32_t nblocks,
                       const shoal_announce_params *p, shoal_announce **out, char *err,
                       size_t errlen);

/* Accepts NULL; clears *p. The node it was attached to must be stopped. */
void shoal_announce_destroy(shoal_announce **p);

/* Attach to n before shoal_node_start(n): from then until shoal_node_stop
 * the node's I/O thread runs the DHT and announces n's span. The first
 * round goes out at once. a may be NULL (detach). (node/announce.c) */
void shoal_node_set_announce(shoal_node *n, shoal_announce *a);

/* Caller's thread, no node running: sign and put records for blocks
 * [begin, end) in `state` (shoal_record_state) with free_tokens and
 * weight_type, and drive the DHT (answering nobody) until those puts end
 * or wait_ms pass. Returns how many puts were stored somewhere. */
int shoal_announce_publish(shoal_announce *a, uint32_t begin, uint32_t end, uint32_t state,
                           uint64_t free_tokens, uint32_t weight_type, int64_t wait_ms);

/* Caller's thread, after shoal_node_stop: OFFLINE records for the span
 * last announced, driven for at most wait_ms. */
void shoal_announce_leave(shoal_announce *a, int64_t wait_ms);

/* Contacts in the DHT routing table and records held in its store. The
 * thread that pumps the DHT (the node's I/O thread once attached). */
void shoal_announce_dht_counts(const shoal_announce *a, uint32_t *peers, uint32_t *records);

/* Any thread: true once a round of ONLINE records for the node's span
 * has been stored whole (every block's record stored while another DHT
 * node answered, not only in our own store: clients can find the span);
 * false again from a JOINING or OFFLINE
 * round on (a move, a leave). What systemd readiness (node/notify.h)
 * waits for. */
bool shoal_announce_online(shoal_announce *a);

/* Any thread: the span the rebalancer wants, once it decided to move
 * (cleared by the call). */
bool shoal_announce_move_wanted(shoal_announce *a, uint32_t *begin, uint32_t *end);

/* ---- placement before the node exists ------------------------------------ */

/* Tokens/s through one block of g's: a few single-token steps after a
 * short prompt through block `block` (its weight pages are read: measure
 * one the node serves when it knows), on `threads` threads. 0 on failure. */
double shoal_announce_measure(const shoal_gguf *g, int block, int threads);

/* How many blocks fit in budget_bytes, counting each block's weights and
 * its KV cache for cache_tokens tokens; at least 1, at most the model's. */
int shoal_announce_blocks_for_budget(const shoal_gguf *g, uint64_t budget_bytes,
                                     uint64_t cache_tokens);

/* Join the DHT as a client through the initial peers, read every block's
 * records and choose where a span of *len blocks goes (Petals' rule).
 * by_speed > 0 (this server's tokens/s): *len is only the most memory
 * holds, and the length comes from the swarm's speeds first
 * (shoal_placement_length); *len gets it. *start gets the choice;
 * *servers (may be NULL) the number of servers seen. Fails (one line in
 * err) when no initial peer answers within timeout_ms. */
int shoal_announce_choose(const char *const *initial, size_t n_initial,
                          const shoal_model_id *model, uint32_t nblocks, uint32_t *len,
                          double by_speed, int64_t timeout_ms, uint32_t *start, size_t *servers,
                          char *err, size_t errlen);

/* ---- hooks for the node's I/O thread (node/node.c) ----------------------- */

/* The DHT's sockets to poll (POLLIN), at most max; how many. */
size_t node_announce_poll_items(shoal_node *n, zmq_pollitem_t *items, size_t max);
/* The poll timeout: ms, or less when the DHT must run sooner. */
long node_announce_timeout(shoal_node *n, long ms);
/* After every poll: read DHT replies, run timers, announce, rebalance. */
void node_announce_service(shoal_node *n, const zmq_pollitem_t *items, size_t count);
/* A DHT request (FIND_NODE, FIND_VALUE, STORE) from the ROUTER: answered.
 * SHOAL_ERR_UNSUPPORTED when the node runs no DHT (the caller answers). */
int node_announce_request(shoal_node *n, zmq_msg_t *routing, const shoal_wire_header *req);

#endif
