/*
 * What the DHT says about one model: the signed server records under the
 * key of every block (swarm/record.h), collapsed to one record per server.
 *
 * A blockmap runs DHT gets for blocks [0, nblocks) of a model, `parallel`
 * at a time, on a DHT its owner drives (swarm/dht_net.h). Every value a get
 * returns is verified again here (shoal_record_validate: signature, the
 * block's key, expiry, not too far ahead), whatever the DHT nodes said;
 * records that fail are counted and dropped. Per server (peer id) the
 * record with the highest sequence number is kept: a server's records of
 * one announcement share a sequence number and a span, so the newest one
 * says what the server serves now and in which state.
 *
 * Use: new, then step(dht, now) after every pump of the DHT until done();
 * read the servers. The owner calls the DHT; the blockmap only starts
 * operations on it and receives their callbacks.
 *
 * Ownership and life: the blockmap is the context of its DHT gets, so it
 * must not go away under them: shoal_blockmap_destroy() of a blockmap
 * with gets in flight only marks it, and the last callback frees it (the
 * DHT calls every callback, at the latest when it is destroyed).
 *
 * THREAD SAFETY: a blockmap belongs to its DHT's thread.
 */
#ifndef SHOAL_SWARM_BLOCKMAP_H
#define SHOAL_SWARM_BLOCKMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "swarm/dht.h"
#include "swarm/dht_net.h"
#include "swarm/record.h"

#define SHOAL_BLOCKMAP_MAX_BLOCKS 4096
#define SHOAL_BLOCKMAP_MAX_SERVERS 4096

typedef struct shoal_blockmap shoal_blockmap;

typedef struct shoal_blockmap_params {
    uint8_t model_hash[32];
    uint32_t nblocks;      /* blocks [0, nblocks) are read (1..SHOAL_BLOCKMAP_MAX_BLOCKS) */
    uint32_t parallel;     /* gets at once (default 8) */
    int64_t max_ahead_ms;  /* records expiring later than this are refused
                              (default SHOAL_RECORD_MAX_AHEAD_MS) */
} shoal_blockmap_params;

/* Zero hash and blocks, parallel 8, the default max_ahead_ms. */
shoal_blockmap_params shoal_blockmap_params_default(void);

/* SHOAL_ERR_ARG for bad parameters, SHOAL_ERR_NOMEM. */
int shoal_blockmap_new(const shoal_blockmap_params *p, shoal_blockmap **out);

/* See "Ownership and life". Accepts NULL; clears *p. */
void shoal_blockmap_destroy(shoal_blockmap **p);

/* Start the gets that may start now (records are validated at now_ms).
 * Returns 0, or the DHT's error when a get cannot start for another
 * reason than a busy DHT (retried at the next step). */
int shoal_blockmap_step(shoal_blockmap *m, shoal_dht *d, int64_t now_ms);

/* Every block's get has ended. */
bool shoal_blockmap_done(const shoal_blockmap *m);

/* Servers found (one record each, the newest), in the order found. */
size_t shoal_blockmap_count(const shoal_blockmap *m);
const shoal_record *shoal_blockmap_server(const shoal_blockmap *m, size_t i);

typedef struct shoal_blockmap_stats {
    uint32_t gets_done;     /* blocks whose get ended */
    uint32_t gets_empty;    /* ... with no value (SHOAL_ERR_NOTFOUND) */
    uint32_t gets_failed;   /* ... with another error */
    uint32_t values;        /* values the gets returned */
    uint32_t rejected;      /* values that failed validation here */
    uint32_t dropped;       /* valid records beyond SHOAL_BLOCKMAP_MAX_SERVERS */
    uint32_t max_hops;      /* the deepest lookup */
} shoal_blockmap_stats;

void shoal_blockmap_stats_get(const shoal_blockmap *m, shoal_blockmap_stats *st);

/* The blocking way, for a thread with nothing else to do: step m and
 * drive net (shoal_dht_net_run) until m is done or the Unix time until_ms.
 * 0, SHOAL_ERR_TIMEOUT, or a DHT error. */
int shoal_blockmap_run(shoal_blockmap *m, shoal_dht_net *net, int64_t until_ms);

#endif
