/*
 * The LoRA training state of one span of blocks [b0, b1): the adapter
 * (lora/adapter.h), its gradients, AdamW (lora/adamw.h), a block-pass
 * scratch (kernels/backward.h) and the block inputs of the micro-batches
 * between their forward and their backward. A local run holds one span
 * over every block; a server holds one per training session.
 *
 * A micro-batch is n_seq sequences of T tokens each, every sequence at
 * positions 0..T-1, laid out (n_seq * T, dim). Forward keeps each block's
 * input under the caller's key (nothing else survives: backward recomputes
 * the activations from those inputs, so memory is n_blocks * tokens * dim
 * floats per micro-batch in flight); backward consumes the key, returns
 * the gradient with respect to the span's input and adds the LoRA
 * gradients into the adapter; step applies AdamW and zeroes them.
 * Blocks run block by block over all sequences of the micro-batch, and
 * gradients accumulate in a fixed order (blocks descending, then
 * sequences ascending), so two spans [0, k) and [k, L) reproduce one span
 * [0, L) bit for bit at equal thread counts.
 *
 * Checkpoints: the state is one flat f32 vector. For each LoRA pair in
 * (layer, proj) order, A then B, each as its values, then AdamW's m, then
 * v (3 * shoal_adapter_n_params floats in all), plus the optimizer step
 * count t. Every block of a span holds the same pairs, so the state of
 * blocks [b0, b1) is the slice [(b0 - a) * per_block, (b1 - a) * per_block)
 * of the state of any span [a, b) that contains them
 * (shoal_train_state_len gives per_block with b1 = b0 + 1). That is what
 * lets a client split and merge checkpoints across servers.
 *
 * Ownership: a span keeps views into the weights w it was made from,
 * which must outlive it. THREAD SAFETY: one thread at a time.
 */
#ifndef SHOAL_LORA_TRAIN_SPAN_H
#define SHOAL_LORA_TRAIN_SPAN_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backward.h"
#include "kernels/model.h"
#include "lora/adamw.h"
#include "lora/adapter.h"

typedef struct shoal_train_span_params {
    int rank;               /* LoRA rank of every pair */
    float alpha;            /* scale = alpha / rank */
    unsigned targets;       /* bit (1 << shoal_proj) per projection */
    uint64_t seed;          /* initial A (see shoal_adapter_init) */
    shoal_adamw_params opt; /* learning rate etc. */
    int max_tokens;         /* tokens of one micro-batch, all sequences */
    int max_saved;          /* micro-batches held between forward and backward */
    int threads;            /* compute threads (the caller's is one) */
} shoal_train_span_params;

/* rank 8, alpha 16, every projection, seed 0, AdamW defaults, 256 tokens,
 * 1 saved micro-batch, 1 thread. */
shoal_train_span_params shoal_train_span_params_default(void);

/* SHOAL_ERR_ARG (with one line in err) unless p fits the model hp: rank
 * within what every targeted projection allows, targets non-empty,
 * finite alpha and optimizer parameters, positive sizes. */
int shoal_train_span_params_check(const shoal_hparams *hp, const shoal_train_span_params *p,
                                  char *err, size_t errlen);

/* Floats of the checkpoint state of blocks [b0, b1) (0 for bad input). */
size_t shoal_train_state_len(const shoal_hparams *hp, int b0, int b1, unsigned targets,
                             int rank);

/* Bytes a span would allocate (adapter, gradients, moments, saved inputs,
 * scratch), within a few percent: what a server reserves from its budget. */
uint64_t shoal_train_span_bytes(const shoal_hparams *hp, int b0, int b1,
                                const shoal_train_span_params *p);

typedef struct shoal_train_span shoal_train_span;

/* A span over blocks [b0, b1) of the weights w (opened over at least those
 * blocks), initialised from p->seed. SHOAL_ERR_ARG / _NOMEM. */
int shoal_train_span_new(const shoal_train_w *w, int b0, int b1,
                         const shoal_train_span_params *p, shoal_train_span **out);
void shoal_train_span_destroy(shoal_train_span **s);

int shoal_train_span_begin(const shoal_train_span *s);
int shoal_train_span_end(const shoal_train_span *s);
const shoal_train_span_params *shoal_train_span_params_of(const shoal_train_span *s);

/* x (n_seq * T, dim) through the span's blocks, in place. key != 0 keeps
 * the block inputs for backward under key (replacing what key held);
 * key 0 keeps nothing (evaluation). SHOAL_ERR_ARG for a bad shape (more
 * than max_tokens tokens), SHOAL_ERR_BUSY when max_saved other keys are
 * held. */
int shoal_train_span_forward(shoal_train_span *s, uint64_t key, int n_seq, int T, float *x);

/* g (n_seq * T, dim): the loss gradient with respect to the span's output
 * in, with respect to its input out; the LoRA gradients accumulate. The
 * key is released. SHOAL_ERR_NOTFOUND for a key not held, SHOAL_ERR_ARG
 * for a shape other than its forward's. */
int shoal_train_span_backward(shoal_train_span *s, uint64_t key, int n_seq, int T, float *g);

/* One AdamW step with learning rate lr (lr < 0: keep the current one),
 * then zero the gradients. */
int shoal_train_span_step(shoal_train_span *s, float lr);

/* Optimizer steps taken (AdamW's t). */
int64_t shoal_train_span_t(const shoal_train_span *s);

/* Forget held micro-batches and zero the gradients. */
void shoal_train_span_reset(shoal_train_span *s);

/* Checkpoint state (see the top of this file). */
size_t shoal_train_span_state_len(const shoal_train_span *s);
/* out[0..n) = state[off..off+n); SHOAL_ERR_RANGE past the end. */
int shoal_train_span_state_get(const shoal_train_span *s, size_t off, size_t n, float *out);
/* state[off..off+n) = in[0..n); refuses (changing nothing) a range past the
 * end, a non-finite value or a negative second moment (SHOAL_ERR_RANGE).
 * Also resets the span (held micro-batches, gradients). */
int shoal_train_span_state_set(shoal_train_span *s, size_t off, size_t n, const float *in);
void shoal_train_span_set_t(shoal_train_span *s, int64_t t);

/* The adapter being trained (owned by the span). */
shoal_adapter *shoal_train_span_adapter(const shoal_train_span *s);

/* Copy the A and B values of a checkpoint state of blocks [b0, b1) into
 * dst's pairs of those blocks (dst must have pairs of the same targets and
 * rank over at least [b0, b1)). SHOAL_ERR_ARG when the length or the pairs
 * do not match. */
int shoal_train_state_to_adapter(shoal_adapter *dst, int b0, int b1, const float *state,
                                 size_t n);

#endif
