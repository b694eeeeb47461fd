/*
 * A blocking client for one node: one DEALER socket (CURVE, the node's key
 * taken from its address), one request in flight at a time, a deadline per
 * call.
 *
 * Every call sends one request with a fresh request id and waits (zmq_poll)
 * until the reply with that id arrives or timeout_ms passes. Replies with
 * another id (answers to an earlier call that timed out) are discarded.
 * After a timeout the socket is closed and a new one (new ephemeral key)
 * is opened, so a request still queued for a node that was unreachable can
 * never reach it later and be applied twice.
 *
 * Results: each call returns 0 or a shoal_err. SHOAL_ERR_TIMEOUT when no
 * answer came in time (the node may be down, or may not hold the key named
 * in the address), SHOAL_ERR_PROTOCOL when the node's reply is malformed or
 * does not fit the request, or the code of the node's ERROR reply (e.g.
 * SHOAL_ERR_BUSY "cache full", SHOAL_ERR_SESSION, SHOAL_ERR_RANGE). In every
 * case shoal_peer_last_error() holds one line saying what happened (the
 * node's own message for ERROR replies).
 *
 * Tensors: x is (n, dim) row-major f32, sent in `codec` (proto/codec.h) and
 * asked back in the same codec; the reply overwrites x. f32 is exact; the
 * others round (see codec.h). When a call fails, x is unchanged, except
 * after SHOAL_ERR_PROTOCOL (a reply tensor that did not decode), when its
 * contents are unspecified: keep your own copy of inputs you may replay.
 * A node takes at most 512 tokens per request unless it was started with
 * another --max-batch (SHOAL_ERR_RANGE beyond that): split long prompts.
 *
 * THREAD SAFETY: a peer is used by one thread at a time. Peers are
 * independent: a program may drive many peers from many threads.
 */
#ifndef SHOAL_SWARM_PEER_H
#define SHOAL_SWARM_PEER_H

#include <stdint.h>

#include "proto/wire.h"

typedef struct shoal_peer shoal_peer;

typedef struct shoal_peer_params {
    void *zmq_ctx;     /* a context to share (transport.h); NULL: the peer
                          makes and owns one */
    int64_t max_frame; /* largest reply frame accepted, bytes */
} shoal_peer_params;

/* zmq_ctx NULL, max_frame 256 MiB. */
shoal_peer_params shoal_peer_params_default(void);

/* What a node says about itself (INFO). */
typedef struct shoal_peer_info {
    char model[SHOAL_WIRE_MODEL_MAX];          /* model name (may be "") */
    uint8_t model_hash[SHOAL_WIRE_HASH_BYTES]; /* swarm/model_id.h */
    uint32_t span_start, span_end;             /* blocks served: [start, end) */
    uint32_t nblocks;                          /* blocks of the whole model */
    uint32_t dim;                              /* hidden size */
    uint32_t weight_type;                      /* shoal_type of the weights */
    uint64_t free_tokens;                      /* KV-cache tokens free now */
    uint32_t max_length;                       /* longest session accepted */
    uint32_t codecs;                           /* bit (1 << codec) per codec */
    uint32_t version;                          /* the node's protocol version */
    char software[SHOAL_WIRE_SOFTWARE_MAX];    /* e.g. "shoal 0.1.0" */
    char adapters[SHOAL_WIRE_ADAPTER_MAX];     /* LoRA adapters served,
                                                  comma-separated ("" none) */
} shoal_peer_info;

/* Parse address ("shoal://host:port/key", proto/addr.h) and open a socket to
 * it; nothing is sent yet, so this succeeds for a node that is down.
 * params may be NULL (defaults). SHOAL_ERR_FORMAT for a bad address,
 * SHOAL_ERR_NOMEM, SHOAL_ERR_IO. *out is NULL on failure. */
int shoal_peer_connect(const char *address, const shoal_peer_params *params,
                       shoal_peer **out);

/* Close the socket (and the context, if the peer made it); accepts NULL,
 * clears *p. */
void shoal_peer_destroy(shoal_peer **p);

/* The address given to connect (canonical form), owned by the peer. */
const char *shoal_peer_address(const shoal_peer *p);

/* The node's peer id (32 bytes, from its key), owned by the peer. */
const uint8_t *shoal_peer_id(const shoal_peer *p);

/* One line about the last failed call ("" after a success). */
const char *shoal_peer_last_error(const shoal_peer *p);

/* Round trip with no work (PING). */
int shoal_peer_ping(shoal_peer *p, int timeout_ms);

/* Fill info (and *state, the node's SHOAL_WIRE_STATE_*, 0 when absent;
 * state may be NULL) from a decoded INFO reply; SHOAL_ERR_PROTOCOL when it
 * lacks the block count or dim, or its span is impossible. The one place
 * that turns an INFO header into a shoal_peer_info. */
int shoal_peer_info_from_header(const shoal_wire_header *h, shoal_peer_info *info,
                                uint32_t *state);

/* Ask the node what it serves (INFO). */
int shoal_peer_get_info(shoal_peer *p, shoal_peer_info *info, int timeout_ms);

/* Stateless forward: x (n, dim) as one sequence at positions 0..n-1
 * through blocks [span_start, span_end) (inside the node's span); the
 * output replaces x. */
int shoal_peer_forward(shoal_peer *p, uint32_t span_start, uint32_t span_end, float *x, int n,
                       int dim, int codec, int timeout_ms);

/* Open an inference session: session_id is chosen by the client (random,
 * != 0), the node reserves max_length tokens of KV cache for it over
 * blocks [span_start, span_end). SHOAL_ERR_BUSY when the node's cache stays
 * full (it waits briefly first); SHOAL_ERR_RANGE when max_length exceeds
 * what the node accepts at all. */
int shoal_peer_session_open(shoal_peer *p, uint64_t session_id, uint32_t span_start,
                            uint32_t span_end, uint32_t max_length, int timeout_ms);

/* The same, with the node's served LoRA adapter `adapter` (NULL or "":
 * none) applied to the session's steps; SHOAL_ERR_NOTFOUND when the node
 * does not serve it. */
int shoal_peer_session_open_adapter(shoal_peer *p, uint64_t session_id, uint32_t span_start,
                                    uint32_t span_end, uint32_t max_length,
                                    const char *adapter, int timeout_ms);

/* Run n new tokens x (n, dim) at cache positions position..position+n-1 of
 * the session; the output replaces x. position may be below the session's
 * length (the node forgets positions >= position first: a rewind, used to
 * replay after a failure); position + n must not exceed max_length
 * (SHOAL_ERR_RANGE). Sending the same step_id and position again returns
 * the first answer without running the step twice (safe retry). */
int shoal_peer_session_step(shoal_peer *p, uint64_t session_id, uint64_t step_id,
                            uint32_t position, float *x, int n, int dim, int codec,
                            int timeout_ms);

/* Close the session and free its cache on the node. */
int shoal_peer_session_close(shoal_peer *p, uint64_t session_id, int timeout_ms);

/* ---- the generic call, for op-specific clients (swarm/peer_train.h) ---- */

/* An f32 tensor in the caller's memory. */
typedef struct shoal_peer_tensor {
    float *data;                          /* row-major elements */
    uint32_t ndim;                        /* 1..3; for a reply, 0 = any shape */
    uint32_t shape[SHOAL_CODEC_MAX_DIMS];
    size_t cap;                           /* elements data holds (replies) */
} shoal_peer_tensor;

/* Send req (op and fields as the caller set them; the peer assigns the
 * request id, and the tensor descriptor and reply codec from in and codec)
 * with the tensor in (may be NULL) encoded in codec, and wait for the
 * reply. When out is not NULL the reply must carry one tensor: of exactly
 * out's shape, or with out->ndim 0 of any shape of at most out->cap
 * elements (out's shape is then set to it); it is decoded into out->data.
 * rep (may be NULL) gets the reply header (its byte strings, "vals", are
 * not valid after the call). Results as for every call. */
int shoal_peer_call(shoal_peer *p, const shoal_wire_header *req, const shoal_peer_tensor *in,
                    int codec, shoal_peer_tensor *out, shoal_wire_header *rep, int timeout_ms);

#endif
