/*
 * Training through servers: the blocks of lora/train.h run as a chain of
 * training sessions, one per hop, each holding its span's LoRA adapter and
 * AdamW state on the node (swarm/peer_train.h). Only activations and their
 * gradients travel per step.
 *
 * The chain: the client asks every address of its list for INFO
 * (client/remote.h), keeps the nodes that serve its model, and plans the
 * fewest hops that cover every block (client/route.h). Each hop opens a
 * training session with the same LoRA parameters and seed, so the chain
 * starts from exactly the adapter a local run starts from.
 *
 * Checkpoints: the client keeps one checkpoint of the whole model's state
 * (the flat layout of lora/train_span.h, which is the concatenation of its
 * blocks' states) and its step number. It is taken when the chain opens
 * (step 0) and by shoal_train_remote_checkpoint, which pulls every hop; a
 * checkpoint replaces the last one only once every hop has answered.
 *
 * Failures: a call that fails marks its hop as failed and returns the
 * node's error; the chain is then unusable until shoal_train_remote_recover.
 * Recovery bans the failed nodes, asks the address list again, covers each
 * failed hop's blocks with the nodes that now serve them (several hops if
 * need be; a banned node only when no other can), opens sessions there,
 * and pushes the checkpoint to every hop of the chain, the healthy ones
 * included: the whole chain returns to the checkpoint's step, and the
 * caller redoes the steps after it (RESTART FROM THE CHECKPOINT: nothing is
 * replayed per hop; a step's data depends only on its number, so the
 * redone steps are the same steps).
 *
 * Errors: every failing call leaves one line in
 * shoal_train_remote_last_error().
 *
 * THREAD SAFETY: a chain belongs to one thread at a time.
 */
#ifndef SHOAL_CLIENT_TRAIN_REMOTE_H
#define SHOAL_CLIENT_TRAIN_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/gguf.h"
#include "lora/adapter.h"
#include "lora/train.h"
#include "lora/train_span.h"

typedef struct shoal_train_remote shoal_train_remote;

typedef struct shoal_train_remote_params {
    shoal_train_span_params span; /* LoRA, optimizer and micro-batch size
                                     (max_tokens); threads are the nodes' */
    int timeout_ms;               /* deadline of each RPC */
    int codec;                    /* activations and gradients on the wire */
} shoal_train_remote_params;

/* The span defaults, 30 s, f32. */
shoal_train_remote_params shoal_train_remote_params_default(void);

/* Plan a chain over the nodes at addrs[0..n) (copied) for the model in g
 * and open a training session on each hop. On failure *out is NULL and err
 * has one line. */
int shoal_train_remote_new(const shoal_gguf *g, const char *const *addrs, size_t n,
                           const shoal_train_remote_params *p, shoal_train_remote **out,
                           char *err, size_t errlen);

/* Close every session (best effort, short deadline); accepts NULL. */
void shoal_train_remote_destroy(shoal_train_remote **r);

/* The blocks interface for lora/train.h (self is r). */
shoal_train_blocks shoal_train_remote_blocks(shoal_train_remote *r);

/* Pull every hop's state as the checkpoint of step `step` (the step the
 * chain has just completed). On failure the previous checkpoint stays. */
int shoal_train_remote_checkpoint(shoal_train_remote *r, int64_t step);

/* Rebuild the chain after a failure and return it to the last checkpoint;
 * *step is that checkpoint's step. */
int shoal_train_remote_recover(shoal_train_remote *r, int64_t *step, char *err, size_t errlen);

/* Pull every hop's state and assemble one adapter over the whole model
 * (caller owns it). */
int shoal_train_remote_adapter(shoal_train_remote *r, shoal_adapter **out, char *err,
                               size_t errlen);

/* "0:2 shoal://..., 2:5 shoal://..." */
void shoal_train_remote_describe(const shoal_train_remote *r, char *out, size_t outlen);

/* One line about the last failure ("" when none). */
const char *shoal_train_remote_last_error(const shoal_train_remote *r);

#endif
