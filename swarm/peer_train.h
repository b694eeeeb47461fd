/*
 * Training-session calls on one node (docs/WIRE.md, "Training sessions"),
 * over a blocking peer (swarm/peer.h): open a session holding the LoRA
 * state of a span, run micro-batches forward and backward through it,
 * take optimizer steps, and move its checkpoint state in and out.
 *
 * Tensors: x and g are (n_seq, T, dim) row-major f32, sent in `codec` and
 * asked back in it; the reply replaces them. Checkpoint state moves as f32
 * in chunks of at most `chunk` floats per message (a node takes tensors of
 * up to its max_batch * dim floats; the micro-batch size the session was
 * opened with always fits).
 *
 * Results and errors as in peer.h: 0 or a shoal_err, one line in
 * shoal_peer_last_error().
 *
 * THREAD SAFETY: as the peer: one thread at a time.
 */
#ifndef SHOAL_SWARM_PEER_TRAIN_H
#define SHOAL_SWARM_PEER_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "swarm/peer.h"

/* What TRAIN_OPEN asks for. */
typedef struct shoal_peer_train_params {
    uint32_t span_start, span_end;   /* blocks [start, end) of the node's span */
    uint32_t max_tokens;             /* tokens of one micro-batch at most */
    uint32_t rank;                   /* LoRA rank of every pair */
    double alpha;                    /* scale = alpha / rank */
    uint32_t targets;                /* bit (1 << p), p in GGUF order q k v o gate up down */
    uint64_t seed;                   /* initial A */
    double lr, beta1, beta2, eps, weight_decay; /* AdamW */
} shoal_peer_train_params;

/* Open training session session_id (random, != 0) on the node. BUSY when
 * its memory does not fit the node's budget, RANGE / ARG for parameters
 * the node refuses. */
int shoal_peer_train_open(shoal_peer *p, uint64_t session_id, const shoal_peer_train_params *tp,
                          int timeout_ms);

/* x (n_seq, T, dim) through the session's span, in place. key != 0: the
 * node keeps what backward needs under key; key 0: evaluation. */
int shoal_peer_train_forward(shoal_peer *p, uint64_t session_id, uint64_t key, float *x,
                             int n_seq, int T, int dim, int codec, int timeout_ms);

/* g (n_seq, T, dim): gradient w.r.t. the span's output of micro-batch key
 * in, w.r.t. its input out; the node accumulates the LoRA gradients. */
int shoal_peer_train_backward(shoal_peer *p, uint64_t session_id, uint64_t key, float *g,
                              int n_seq, int T, int dim, int codec, int timeout_ms);

/* One optimizer step, after which the node's step count is t (a repeat of
 * the last t is answered without a second update). tp (may be NULL)
 * replaces the optimizer parameters (lr, betas, eps, weight decay) first. */
int shoal_peer_train_step(shoal_peer *p, uint64_t session_id, int64_t t,
                          const shoal_peer_train_params *tp, int timeout_ms);

/* state[0..n) <- the session's checkpoint state (all of it: n must be its
 * length), *t <- its step count. */
int shoal_peer_train_pull(shoal_peer *p, uint64_t session_id, float *state, size_t n,
                          int64_t *t, size_t chunk, int timeout_ms);

/* The session's checkpoint state <- state[0..n) (its whole length) and its
 * step count <- t; the node also forgets kept micro-batches and
 * gradients. */
int shoal_peer_train_push(shoal_peer *p, uint64_t session_id, const float *state, size_t n,
                          int64_t t, size_t chunk, int timeout_ms);

/* Free the session on the node. */
int shoal_peer_train_close(shoal_peer *p, uint64_t session_id, int timeout_ms);

#endif
