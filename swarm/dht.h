/*
 * The Kademlia DHT core: 256-bit ids (a node's peer id, proto/identity.h),
 * XOR distance, k-buckets, iterative lookups, a bounded value store. Like
 * jech/dht it does no I/O and reads no clock: the caller hands it decoded
 * headers and the time, drains the requests it wants sent, and calls
 * shoal_dht_tick() again no later than the time tick returned. That makes
 * it a step function that a simulator can run by the thousand in one
 * process (tests/unit/test_dht.c), and a thin ZeroMQ adapter in the node.
 *
 * Messages (proto/wire.h, ops FIND_NODE 16, FIND_VALUE 17, STORE 18, and
 * PING 1 for liveness). Every entry of a DHT message's "vals" starts with a
 * tag byte:
 *   SHOAL_DHT_TAG_CONTACT  then a shoal:// address (proto/addr.h), no NUL.
 *                          The contact's id is the peer id of the key in
 *                          the address: ids are never sent on their own, so
 *                          nobody can place an address at an id it has not
 *                          the key of.
 *   SHOAL_DHT_TAG_VALUE    then an opaque value (a signed record), checked
 *                          by the caller's validator.
 *   FIND_NODE   req: target, addr?        rep: vals = up to k contacts
 *                                              closest to target
 *   FIND_VALUE  req: target, addr?        rep: vals = values held under
 *                                              target (a random subset when
 *                                              they do not all fit), then
 *                                              contacts in the slots left
 *   STORE       req: target, vals = values, addr?
 *                                         rep: plain reply when every value
 *                                              was kept; ERROR reply with
 *                                              the first refusal otherwise
 *   PING        req: addr?                rep: plain reply
 * "addr" in a request is the sender's own address; clients (nodes without
 * an address) leave it out and never enter anyone's routing table.
 *
 * Trust. Requests arrive on the node's ROUTER from unauthenticated senders
 * (DEALERs use ephemeral CURVE keys), so a request's addr is only a claim:
 * it is never put in the table directly; the DHT PINGs it first (bounded).
 * A reply arrives on the DEALER the request went out on, which CURVE has
 * bound to the key in the address it was sent to: a reply is authentic.
 * The DHT matches every reply by request id AND sender address; anything
 * else is ignored. A contact enters the routing table only when it has
 * answered us. Malformed contacts or values in a reply are dropped, the
 * sender's score is lowered, and after SHOAL_DHT_MAX_STRIKES strikes it is
 * removed and banned for a while. Nothing a peer sends can make a table,
 * queue or store grow beyond its cap (parameters below).
 *
 * Routing table: 256 buckets by common prefix length with our id, k
 * contacts each in least-recently-seen order, plus a bounded replacement
 * cache. A full bucket pings its least-recently-seen contact (unless seen
 * lately) before evicting it; contacts that time out are replaced from the
 * cache, or dropped after repeated failures. Buckets no lookup touched for
 * refresh_ms (and not full of contacts that answered within refresh_ms)
 * are refreshed by a lookup of a random id in their range; after a
 * bootstrap that is every bucket up to our closest neighbour's.
 *
 * Lookups keep a shortlist of the closest candidates seen (3k), query up
 * to alpha at once, each with a timeout (a candidate that does not answer
 * is asked once more, so one lost message does not cost a result its
 * closest node), and end when the k closest live candidates have all
 * answered. get() merges the values of every node that
 * answers, keeping one per owner (the highest sequence number); it stops
 * early once get_quorum nodes have returned values. put() looks up the k
 * closest nodes and STOREs to each (and keeps a copy itself when it is one
 * of them).
 *
 * Value store: key -> records, each validated by the caller's validator
 * (which names the record's owner, sequence number and expiry). Per
 * (key, owner) the store keeps only the highest sequence number: a lower
 * one is refused (SHOAL_ERR_RANGE), an equal one with other bytes too. Caps
 * on keys, records per key, bytes per record and bytes in all; when full,
 * the key farthest from our id gives way to a closer one (we are
 * responsible for keys near us), and within a key the record expiring
 * first gives way to one expiring later. Records leave at their expiry.
 *
 * Time: now_ms is wall-clock Unix time in milliseconds (records carry Unix
 * expiries). It must not go backwards between calls by much; a jump only
 * makes timers fire early or late.
 *
 * Ownership: headers handed in are read during the call only. A reply
 * built by shoal_dht_receive_request() and a message from
 * shoal_dht_next_outgoing() point into the DHT's memory (values, contacts)
 * and are valid until the next call into the DHT: encode them at once.
 * Callbacks receive data valid only during the callback.
 *
 * Callbacks run inside shoal_dht_receive_reply(), shoal_dht_request_failed()
 * and shoal_dht_tick() (never inside the call that started the operation).
 * A callback may start new operations; it must not call receive, tick or
 * destroy. shoal_dht_destroy() calls the callbacks of unfinished operations
 * with SHOAL_ERR_CANCELLED.
 *
 * THREAD SAFETY: a DHT belongs to one thread (the node's I/O thread);
 * distinct DHTs are independent. No global state.
 */
#ifndef SHOAL_SWARM_DHT_H
#define SHOAL_SWARM_DHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/addr.h"
#include "proto/wire.h"

#define SHOAL_DHT_ID_BYTES 32
#define SHOAL_DHT_K 20          /* default bucket size and replication */
#define SHOAL_DHT_ALPHA 3       /* default lookup parallelism */
#define SHOAL_DHT_MAX_K 32      /* k never exceeds the values of one message */
#define SHOAL_DHT_MAX_STRIKES 3 /* malformed replies before a contact is banned */

/* First byte of every "vals" entry of a DHT message. Never renumbered. */
#define SHOAL_DHT_TAG_CONTACT 1
#define SHOAL_DHT_TAG_VALUE 2
_Static_assert(SHOAL_DHT_TAG_CONTACT == 1 && SHOAL_DHT_TAG_VALUE == 2,
               "tags travel on the wire: never renumber");

/* Largest value (after its tag) a DHT message can carry. */
#define SHOAL_DHT_VALUE_MAX (SHOAL_WIRE_VALUE_MAX - 1)

typedef struct shoal_dht shoal_dht;

/* What a validator says about a value it accepts. */
typedef struct shoal_dht_meta {
    uint8_t owner[SHOAL_DHT_ID_BYTES]; /* who may replace it: e.g. the signer's peer id */
    uint64_t seq;                      /* a higher one replaces a lower one of the owner */
    int64_t expires_ms;                /* Unix ms; the store drops it then */
} shoal_dht_meta;

/* Check value[0..len) for key at now_ms. Returns 0 and fills *meta when the
 * value may be stored or returned; else a shoal_err: SHOAL_ERR_FORMAT or
 * SHOAL_ERR_AUTH (the sender is at fault and is penalised), or another code
 * such as SHOAL_ERR_RANGE for an expired value (no penalty: values expire
 * in transit). Called with untrusted bytes; must not call into the DHT. */
typedef int (*shoal_dht_validate_fn)(void *ctx, const uint8_t key[SHOAL_DHT_ID_BYTES],
                                     const uint8_t *value, size_t len, int64_t now_ms,
                                     shoal_dht_meta *meta);

typedef struct shoal_dht_params {
    uint8_t self_id[SHOAL_DHT_ID_BYTES]; /* our id: the peer id of self_addr's key */
    char self_addr[SHOAL_ADDR_MAX];      /* our shoal:// address; "" for a client,
                                            which is never added to tables, and
                                            then self_id may be anything (random) */
    uint8_t seed[32];                    /* randomness for request ids, refresh targets,
                                            sampling: fill with randombytes_buf() */
    shoal_dht_validate_fn validate;      /* required for storing and for get() */
    void *validate_ctx;

    uint32_t k;                    /* 20: bucket size, replication, lookup width (<= 32) */
    uint32_t alpha;                /* 3: requests in flight per lookup (<= k) */
    int64_t request_timeout_ms;    /* 2000 */
    int64_t refresh_ms;            /* 15 min: refresh a bucket no lookup touched */
    int64_t stale_ms;              /* 10 min: a contact not seen for this long is
                                      pinged before a newcomer is turned away */
    int64_t bootstrap_retry_ms;    /* 30 s: retry the bootstrap peers while the table is empty */
    int64_t ban_ms;                /* 10 min */
    uint32_t replacements;         /* 8: replacement cache per bucket */
    uint32_t max_pending;          /* 512: requests in flight or queued, in all */
    uint32_t max_ops;              /* 64: get/put/find/bootstrap operations at once */
    uint32_t max_lookup_queries;   /* 120: requests one lookup may send */
    uint32_t max_verify;           /* 16: pings in flight to check unknown requesters */
    uint32_t get_quorum;           /* 5: a get ends once this many nodes returned
                                      values (0: walk to the k closest always) */
    uint32_t max_keys;             /* 4096 keys in the store */
    uint32_t max_records_per_key;  /* 64 */
    uint32_t max_value_bytes;      /* 2048 bytes of one value (<= SHOAL_DHT_VALUE_MAX) */
    uint64_t max_store_bytes;      /* 16 MiB of values in all */
} shoal_dht_params;

/* The defaults above, with an empty address, a zero id and seed, and no
 * validator. */
shoal_dht_params shoal_dht_params_default(void);

/* A node as lookups report it. */
typedef struct shoal_dht_contact {
    uint8_t id[SHOAL_DHT_ID_BYTES];
    char addr[SHOAL_ADDR_MAX];
} shoal_dht_contact;

/* A value as get() reports it: the bytes without the tag, and what the
 * validator said about them. */
typedef struct shoal_dht_value {
    const uint8_t *data;
    size_t len;
    shoal_dht_meta meta;
} shoal_dht_value;

/* How a lookup went. hops: the number of request rounds on the path to the
 * closest node that answered (1: a contact we already knew). */
typedef struct shoal_dht_lookup_info {
    uint32_t queries;  /* requests sent */
    uint32_t replies;  /* answers (including ERROR replies) */
    uint32_t timeouts; /* requests that got no answer in time */
    uint32_t hops;
} shoal_dht_lookup_info;

/* find_node and bootstrap: status 0 and the closest nodes that answered,
 * closest first (n <= k); SHOAL_ERR_NOTFOUND when nobody answered. */
typedef void (*shoal_dht_find_cb)(void *ctx, int status, const shoal_dht_contact *nodes,
                                  size_t n, const shoal_dht_lookup_info *info);
/* get: status 0 with n >= 1 valid values (one per owner, the highest
 * sequence), SHOAL_ERR_NOTFOUND when none was found. */
typedef void (*shoal_dht_get_cb)(void *ctx, int status, const shoal_dht_value *values,
                                 size_t n, const shoal_dht_lookup_info *info);
/* put: `stored` nodes kept the value (ourselves included). status 0 when
 * stored >= 1; otherwise the first refusal a node sent (e.g.
 * SHOAL_ERR_RANGE: an older sequence number than one held) or
 * SHOAL_ERR_NOTFOUND when nobody answered. */
typedef void (*shoal_dht_put_cb)(void *ctx, int status, size_t stored,
                                 const shoal_dht_lookup_info *info);

/* A request to send: encode `header` (shoal_wire_encode) and send it on a
 * DEALER connected to `to`; hand the reply to shoal_dht_receive_reply()
 * with from = `to`, byte for byte. */
typedef struct shoal_dht_msg {
    char to[SHOAL_ADDR_MAX];
    shoal_wire_header header;
} shoal_dht_msg;

typedef struct shoal_dht_stats {
    uint32_t contacts;       /* in the buckets */
    uint32_t replacements;   /* in the replacement caches */
    uint32_t pending;        /* requests queued or in flight */
    uint32_t ops;            /* operations running */
    uint32_t keys, records;  /* in the store */
    uint64_t store_bytes;    /* value bytes in the store */
    uint64_t mem_bytes;      /* all memory the DHT holds */
    uint64_t requests_in;    /* requests answered */
    uint64_t replies_in;     /* replies matched to a request */
    uint64_t replies_ignored;/* replies with an unknown id or from the wrong address */
    uint64_t malformed_in;   /* malformed requests, contacts or values */
    uint64_t timeouts;
    uint64_t sent;           /* requests handed out by next_outgoing */
    uint64_t stores_refused; /* values a STORE brought that we refused */
    uint64_t banned;         /* contacts removed for misbehaving */
} shoal_dht_stats;

/* Make a DHT. SHOAL_ERR_ARG for bad parameters (k or alpha out of range, an
 * address that does not parse or whose key's peer id is not self_id),
 * SHOAL_ERR_NOMEM. */
int shoal_dht_new(const shoal_dht_params *params, shoal_dht **out);

/* Free everything; unfinished operations get their callback with
 * SHOAL_ERR_CANCELLED first. Accepts NULL and *p == NULL; clears *p. */
void shoal_dht_destroy(shoal_dht **p);

/* Answer a request (a decoded header without the REPLY flag) that came in
 * on the node's ROUTER. Fills *reply (a reply or an ERROR reply) and
 * returns 0: send it back on the same route. SHOAL_ERR_UNSUPPORTED for an
 * op that is not the DHT's (reply holds an ERROR reply anyway) and
 * SHOAL_ERR_FORMAT for a reply or a malformed request (reply holds an ERROR
 * reply). The reply's values point into the DHT (see Ownership). */
int shoal_dht_receive_request(shoal_dht *d, const shoal_wire_header *req, int64_t now_ms,
                              shoal_wire_header *reply);

/* Feed a reply (REPLY flag set, or an ERROR reply) that came in on the
 * DEALER connected to `from`. Returns 0 when it answered one of our
 * requests; SHOAL_ERR_NOTFOUND when it matched none (unknown id, already
 * timed out, or not from the address asked): it is then ignored;
 * SHOAL_ERR_PROTOCOL when it matched but was malformed (the sender is
 * penalised). */
int shoal_dht_receive_reply(shoal_dht *d, const char *from, const shoal_wire_header *rep,
                            int64_t now_ms);

/* The transport could not send request `request_id` (address it cannot
 * connect to, queue full): handled as a timeout now. Unknown ids are
 * ignored. */
void shoal_dht_request_failed(shoal_dht *d, uint64_t request_id, int64_t now_ms);

/* Run timers (timeouts, refresh, expiry, retries), advance operations.
 * Returns the time (Unix ms) by which tick must be called again; earlier
 * calls are harmless. After any call into the DHT, drain the outbox and
 * recompute the wake-up time. */
int64_t shoal_dht_tick(shoal_dht *d, int64_t now_ms);

/* Take the next request to send; false when there is none. */
bool shoal_dht_next_outgoing(shoal_dht *d, shoal_dht_msg *msg);

/* Join through these addresses: a lookup of our own id seeded with them,
 * then a refresh of every bucket up to our closest neighbour's. While the
 * table stays empty the addresses are retried every bootstrap_retry_ms.
 * Bad addresses (and our own) are skipped; SHOAL_ERR_ARG when none is
 * usable and the table is empty; SHOAL_ERR_BUSY when a bootstrap is
 * already running (the addresses are kept). cb may be NULL. At most 64
 * addresses are kept. */
int shoal_dht_bootstrap(shoal_dht *d, const char *const *addrs, size_t n, int64_t now_ms,
                        shoal_dht_find_cb cb, void *ctx);

/* Find the k nodes closest to target. SHOAL_ERR_BUSY when max_ops
 * operations are running. */
int shoal_dht_find_node(shoal_dht *d, const uint8_t target[SHOAL_DHT_ID_BYTES],
                        int64_t now_ms, shoal_dht_find_cb cb, void *ctx);

/* Read the values under key (ours included). SHOAL_ERR_ARG without a
 * validator, SHOAL_ERR_BUSY. */
int shoal_dht_get(shoal_dht *d, const uint8_t key[SHOAL_DHT_ID_BYTES], int64_t now_ms,
                  shoal_dht_get_cb cb, void *ctx);

/* Store value[0..len) (copied) under key at the k closest nodes.
 * SHOAL_ERR_ARG if the validator refuses it now or it exceeds
 * max_value_bytes, SHOAL_ERR_BUSY, SHOAL_ERR_NOMEM. */
int shoal_dht_put(shoal_dht *d, const uint8_t key[SHOAL_DHT_ID_BYTES], const uint8_t *value,
                  size_t len, int64_t now_ms, shoal_dht_put_cb cb, void *ctx);

/* Up to max contacts of our table closest to target, closest first (no
 * network). Returns how many. */
size_t shoal_dht_closest(const shoal_dht *d, const uint8_t target[SHOAL_DHT_ID_BYTES],
                         shoal_dht_contact *out, size_t max);

/* Values our own store holds under key (no network): calls fn for each
 * live one; returns how many. */
size_t shoal_dht_local_values(const shoal_dht *d, const uint8_t key[SHOAL_DHT_ID_BYTES],
                              int64_t now_ms,
                              void (*fn)(void *ctx, const shoal_dht_value *v), void *ctx);

void shoal_dht_stats_get(const shoal_dht *d, shoal_dht_stats *st);

/* XOR distance order: <0 if a is closer to target than b, 0 if equal, >0. */
int shoal_dht_cmp_distance(const uint8_t target[SHOAL_DHT_ID_BYTES],
                           const uint8_t a[SHOAL_DHT_ID_BYTES],
                           const uint8_t b[SHOAL_DHT_ID_BYTES]);

/* Check a contact entry's address text s[0..n) cheaply (syntax: scheme,
 * host characters, port, 64 hex digits of key; not the key's curve point,
 * which the transport checks when it connects) and give its peer id.
 * 0 or SHOAL_ERR_FORMAT. */
int shoal_dht_contact_parse(const uint8_t *s, size_t n, uint8_t id[SHOAL_DHT_ID_BYTES]);

#endif
