/*
 * Signed server records: what a server announces in the DHT, one record per
 * block it holds, stored under that block's key
 *
 *   key = BLAKE2b-256("shoal-block" || model hash (32) || block (u32 BE))
 *
 * so that a client reading the key of block b learns every server of b,
 * with enough to rank them (span, throughput, free cache, state).
 *
 * Bytes: a msgpack array of two bins, [body, signature], at most
 * SHOAL_RECORD_MAX bytes. The signature is Ed25519 by the record's key over
 * "shoal-record-v1" || body, so the bytes signed are the bytes sent (no
 * re-encoding to agree on). The body is a msgpack map with short keys,
 * written in this order by the encoder:
 *   v     u32        record format, 1
 *   pk    bin 32     the server's Ed25519 public key (peer id = its hash)
 *   addr  str        the server's shoal:// address; its key must be pk
 *   model str        model name (may be empty)
 *   mhash bin 32     model identity (swarm/model_id.h)
 *   nblk  u32        blocks in the whole model
 *   blk   u32        the block this record is for: span_start <= blk < span_end
 *   span  [u32, u32] blocks the server holds, [start, end), end <= nblk
 *   st    u32        state: 1 JOINING, 2 ONLINE, 3 OFFLINE
 *   tput  float      tokens/s, finite, >= 0
 *   free  u64        KV-cache tokens free
 *   wtype u32        shoal_type of the served weights
 *   sw    str        software version, e.g. "shoal 0.1.0"
 *   adp   [str]      LoRA adapters served (at most SHOAL_RECORD_MAX_ADAPTERS)
 *   seq   u64        sequence number: a newer record has a higher one
 *   exp   u64        expiry, Unix ms
 * Every key is required; unknown keys are skipped (they are signed too).
 * Text is UTF-8 without NUL.
 *
 * Decoding never gives bytes to msgpack-c's unpacker: both levels are
 * walked by shoal_wire_msgpack_check() and then read by a bounds-checked
 * cursor. A record is accepted only after its signature verifies.
 *
 * Validation against a DHT key (shoal_record_check): the key is the key of
 * the record's block, the expiry is not past and not more than
 * max_ahead_ms ahead. Sequence numbers are compared by whoever holds
 * records (the DHT store keeps the highest per (key, peer): dht.h).
 *
 * THREAD SAFETY: all functions are pure and thread-safe on distinct
 * records and buffers.
 */
#ifndef SHOAL_SWARM_RECORD_H
#define SHOAL_SWARM_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "proto/addr.h"
#include "proto/identity.h"
#include "proto/wire.h"
#include "swarm/dht.h"

#define SHOAL_RECORD_VERSION 1
#define SHOAL_RECORD_MAX 2048           /* bytes of an encoded record */
#define SHOAL_RECORD_MAX_ADAPTERS 8
#define SHOAL_RECORD_ADAPTER_MAX 64     /* bytes of an adapter name + NUL */
#define SHOAL_RECORD_MAX_AHEAD_MS (10 * 60 * 1000)

typedef enum shoal_record_state {
    SHOAL_RECORD_JOINING = 1,
    SHOAL_RECORD_ONLINE = 2,
    SHOAL_RECORD_OFFLINE = 3,
} shoal_record_state;
_Static_assert(SHOAL_RECORD_JOINING == 1 && SHOAL_RECORD_ONLINE == 2 &&
               SHOAL_RECORD_OFFLINE == 3, "states travel on the wire: never renumber");

typedef struct shoal_record {
    uint8_t pubkey[32];                 /* Ed25519 */
    uint8_t peer_id[32];                /* derived from pubkey (not encoded) */
    char addr[SHOAL_ADDR_MAX];
    char model[SHOAL_WIRE_MODEL_MAX];
    uint8_t model_hash[SHOAL_WIRE_HASH_BYTES];
    uint32_t nblocks;
    uint32_t block;
    uint32_t span_start, span_end;      /* [start, end) */
    uint32_t state;                     /* shoal_record_state */
    double throughput;                  /* tokens/s */
    uint64_t free_tokens;
    uint32_t weight_type;
    char software[SHOAL_WIRE_SOFTWARE_MAX];
    uint32_t nadapters;
    char adapters[SHOAL_RECORD_MAX_ADAPTERS][SHOAL_RECORD_ADAPTER_MAX];
    uint64_t seq;
    int64_t expires_ms;                 /* Unix ms */
    uint8_t sig[64];
} shoal_record;

/* The DHT key of block `block` of the model with this hash. */
void shoal_record_block_key(const uint8_t model_hash[32], uint32_t block, uint8_t key[32]);

/* Sign r with id (sets r->pubkey, r->peer_id and r->sig) and write the
 * record into out[0..cap); *len is its length. SHOAL_ERR_ARG if a field
 * breaks the rules above (including an address whose key is not id's),
 * SHOAL_ERR_RANGE if it does not fit cap or SHOAL_RECORD_MAX. */
int shoal_record_sign(shoal_record *r, const shoal_identity *id, uint8_t *out, size_t cap,
                      size_t *len);

/* Write r with the signature it holds (no signing): what decode reads back
 * encodes to the same bytes. Same errors as sign. */
int shoal_record_encode(const shoal_record *r, uint8_t *out, size_t cap, size_t *len);

/* Read a record from untrusted bytes and verify its signature. Returns 0;
 * SHOAL_ERR_FORMAT for anything malformed (sizes, types, missing or
 * repeated keys, bad text, a field out of range, an address that does not
 * parse or is not pk's); SHOAL_ERR_UNSUPPORTED for another record version;
 * SHOAL_ERR_AUTH when the signature does not verify. *r is zeroed on
 * failure. */
int shoal_record_decode(shoal_record *r, const uint8_t *buf, size_t len);

/* Check a decoded record against the key it was stored under and the time.
 * SHOAL_ERR_FORMAT if key is not the key of r's block, SHOAL_ERR_RANGE if
 * it has expired (expires_ms <= now_ms) or expires more than max_ahead_ms
 * after now_ms. */
int shoal_record_check(const shoal_record *r, const uint8_t key[32], int64_t now_ms,
                       int64_t max_ahead_ms);

/* Decode + check in one call; r may be NULL. */
int shoal_record_validate(const uint8_t *buf, size_t len, const uint8_t key[32],
                          int64_t now_ms, int64_t max_ahead_ms, shoal_record *r);

/* A shoal_dht_validate_fn for records: ctx NULL (max_ahead_ms
 * SHOAL_RECORD_MAX_AHEAD_MS) or a pointer to an int64_t max_ahead_ms. The
 * owner is the record's peer id. */
int shoal_record_dht_validate(void *ctx, const uint8_t key[SHOAL_DHT_ID_BYTES],
                              const uint8_t *value, size_t len, int64_t now_ms,
                              shoal_dht_meta *meta);

/* "joining", "online", "offline", or NULL. */
const char *shoal_record_state_name(uint32_t state);

#endif
