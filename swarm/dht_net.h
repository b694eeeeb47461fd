/*
 * The DHT over ZeroMQ: the thin adapter that connects the I/O-free
 * Kademlia core (swarm/dht.h) to sockets, shared by nodes, bootstrap
 * nodes and clients.
 *
 * Requests we send go out on DEALERs (CURVE clients, transport.h), one per
 * peer address, kept in a pool keyed by the exact address string the DHT
 * named (shoal_dht_msg.to), so that a reply read on a DEALER is handed to
 * shoal_dht_receive_reply() with the address it was sent to: CURVE has
 * bound that socket to the key in the address, so the reply is authentic.
 * The pool holds at most max_links sockets: the least recently used one
 * gives way to a new address, and a socket idle for idle_ms is closed.
 * A socket monitor on each DEALER reports a refused connection, a failed
 * handshake or a dropped connection, and the requests still unanswered on
 * it fail at once instead of after the DHT's timeout.
 * A send that the socket cannot take now (queue full, bad address) is
 * reported to the DHT at once as a failed request.
 *
 * Requests we answer arrive on the owner's ROUTER (a node's one port):
 * the owner decodes the header, sees op FIND_NODE, FIND_VALUE or STORE and
 * calls shoal_dht_net_answer(), which rate-limits per routing id (a token
 * bucket per connection; over the limit the answer is ERROR BUSY), lets
 * the DHT build the reply and sends it as [routing id][header] without
 * blocking. Clients (self_addr "") have no ROUTER and answer nothing.
 *
 * Driving it: the owner's poll loop adds the pool's sockets to its own
 * poll set (shoal_dht_net_poll_items), calls shoal_dht_net_on_poll() after
 * zmq_poll, and shoal_dht_net_pump() after every event and whenever the
 * wake-up time it returned has come: pump drains the DHT's outbox, runs
 * its timers and drains again. shoal_dht_net_run() is that loop for an
 * owner with nothing else to poll (clients, tools).
 *
 * Time: Unix milliseconds from CLOCK_REALTIME (shoal_dht_net_now), as the
 * DHT and its records want.
 *
 * Ownership: the adapter owns its DHT (shoal_dht_net_dht() lends it to
 * start operations) and its DEALERs; the ZeroMQ context is the caller's
 * and must outlive the adapter. THREAD SAFETY: an adapter and its DHT
 * belong to one thread at a time (a node's I/O thread); handing it to
 * another thread needs a happens-before (e.g. a thread join).
 */
#ifndef SHOAL_SWARM_DHT_NET_H
#define SHOAL_SWARM_DHT_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "proto/wire.h"
#include "swarm/dht.h"

#define SHOAL_DHT_NET_MAX_LINKS 1024
#define SHOAL_DHT_NET_POLL_PER_LINK 2 /* the DEALER and its monitor */

typedef struct shoal_dht_net shoal_dht_net;

typedef struct shoal_dht_net_params {
    void *zmq_ctx;         /* required: the pool's sockets live in it */
    shoal_dht_params dht;  /* the core's parameters (self id and address,
                              seed, validator, ...) */
    uint32_t max_links;    /* 256 DEALERs at most (<= SHOAL_DHT_NET_MAX_LINKS) */
    int64_t idle_ms;       /* 120 s: a DEALER unused this long is closed */
    int sndhwm;            /* 32 messages queued per DEALER at most */
    double rate;           /* 200 DHT requests per second per routing id ... */
    double burst;          /* ... with bursts of 400 */
} shoal_dht_net_params;

/* The defaults above, with shoal_dht_params_default() and no context. */
shoal_dht_net_params shoal_dht_net_params_default(void);

/* What the adapter did (on top of shoal_dht_stats). */
typedef struct shoal_dht_net_stats {
    uint64_t sent;          /* requests handed to a DEALER */
    uint64_t send_failed;   /* requests reported as failed at once */
    uint64_t replies;       /* replies read on DEALERs */
    uint64_t bad_replies;   /* replies that did not decode */
    uint64_t answered;      /* requests answered on a ROUTER */
    uint64_t rate_limited;  /* requests refused for rate */
    uint32_t links;         /* DEALERs open now */
    uint64_t links_opened, links_evicted, links_idle_closed;
    uint64_t links_failed;  /* connection failures that failed requests at once */
} shoal_dht_net_stats;

/* Make the adapter and its DHT. SHOAL_ERR_ARG for bad parameters (as
 * shoal_dht_new, or no context), SHOAL_ERR_NOMEM. */
int shoal_dht_net_new(const shoal_dht_net_params *p, shoal_dht_net **out);

/* Close the DEALERs, destroy the DHT (its unfinished operations get their
 * callbacks with SHOAL_ERR_CANCELLED). Accepts NULL; clears *p. */
void shoal_dht_net_destroy(shoal_dht_net **p);

/* The DHT, to start operations (bootstrap, get, put, ...). After starting
 * one, call shoal_dht_net_pump(). */
shoal_dht *shoal_dht_net_dht(shoal_dht_net *n);

/* Unix time in milliseconds (CLOCK_REALTIME). */
int64_t shoal_dht_net_now(void);

/* Fill items[0..max) with the pool's sockets (ZMQ_POLLIN): each DEALER and
 * its monitor, so max should be SHOAL_DHT_NET_POLL_PER_LINK * max_links (a
 * link that does not fit is not read in this poll); returns how many.
 * Hand the same items, after zmq_poll, to shoal_dht_net_on_poll. */
size_t shoal_dht_net_poll_items(shoal_dht_net *n, zmq_pollitem_t *items, size_t max);

/* Read every reply waiting on the readable sockets among items[0..count)
 * and feed it to the DHT. Returns how many messages were read. */
size_t shoal_dht_net_on_poll(shoal_dht_net *n, const zmq_pollitem_t *items, size_t count,
                             int64_t now_ms);

/* Drain the outbox onto DEALERs, run the DHT's timers, drain again, close
 * idle DEALERs. Returns the time (Unix ms) by which pump must run again. */
int64_t shoal_dht_net_pump(shoal_dht_net *n, int64_t now_ms);

/* Answer a DHT request (decoded header req, whose values point into the
 * received frame) that came in on ROUTER `router` with routing id
 * rid[0..rid_len): the reply, or ERROR BUSY when this routing id sends too
 * fast, is sent without blocking. Returns 0 when a reply was sent (or
 * dropped by a full socket), else the DHT's error (a reply went anyway). */
int shoal_dht_net_answer(shoal_dht_net *n, void *router, const void *rid, size_t rid_len,
                         const shoal_wire_header *req, int64_t now_ms);

/* Poll only the pool and pump until done(ctx) returns true (checked after
 * every event and before every pump, so it may start operations; done may
 * be NULL) or until the Unix time until_ms. Returns
 * 0 when done, SHOAL_ERR_TIMEOUT at until_ms, SHOAL_ERR_IO if polling
 * fails. */
int shoal_dht_net_run(shoal_dht_net *n, int64_t until_ms, bool (*done)(void *ctx), void *ctx);

void shoal_dht_net_stats_get(const shoal_dht_net *n, shoal_dht_net_stats *st);

/* ---- clients ---------------------------------------------------------------- */

/* Parameters for a client's DHT (no address, so it answers nobody and
 * enters no table) in zmq_ctx: the defaults, a random id and seed, and
 * signed server records as values (shoal_record_dht_validate). SHOAL_ERR_
 * INTERNAL when libsodium cannot start, else 0. */
int shoal_dht_net_params_client(shoal_dht_net_params *p, void *zmq_ctx);

/* Bootstrap through addrs[0..n) and drive the DHT until the bootstrap
 * lookup ends or until the Unix time until_ms. 0 when some node answered;
 * SHOAL_ERR_NOTFOUND when none did; SHOAL_ERR_ARG when no address is
 * usable; SHOAL_ERR_TIMEOUT. *contacts (may be NULL): the routing table's
 * size afterwards. */
int shoal_dht_net_join(shoal_dht_net *n, const char *const *addrs, size_t count,
                       int64_t until_ms, size_t *contacts);

#endif
