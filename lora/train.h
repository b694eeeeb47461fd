/*
 * The client's side of LoRA fine-tuning: the training text, the frozen
 * embedding and head, and one optimizer step as a loop of micro-batches
 * through "the blocks", wherever they run.
 *
 * The blocks are an interface (shoal_train_blocks): a local span over
 * every block (shoal_train_span_blocks, lora/train_span.h) or a chain of
 * servers (client/train_remote.h). The trainer never sees which.
 *
 * Data: the text is tokenized once (without BOS). Step t (1-based) draws
 * `batch` windows: window i starts at an offset drawn from
 * shoal_lora_seed_mix(seed, t, i), so a step's data depends only on the
 * seed and t, never on what ran before (a run that rewinds to a
 * checkpoint and redoes step t sees the same batch). A sequence is BOS
 * (when the model has one) followed by text; its targets are the next
 * tokens, so every position predicts the next token of the text, and
 * inference from BOS + the text's first words sees what training saw.
 * If the text is shorter than a sequence, sequences are cut to fit.
 *
 * Loss: the mean next-token cross-entropy over every target of the step
 * (batch * seq_len tokens); each micro-batch's head gradient is scaled by
 * 1 / (batch * seq_len), so micro-batching does not change the gradient
 * (only the order of float sums).
 *
 * THREAD SAFETY: a trainer belongs to one thread at a time.
 */
#ifndef SHOAL_LORA_TRAIN_H
#define SHOAL_LORA_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backward.h"
#include "lora/train_span.h"

/* Who runs the blocks. x and g are (n_seq * T, dim), n_seq sequences of T
 * tokens at positions 0..T-1. Calls return 0 or a shoal_err and leave one
 * line in error(). */
typedef struct shoal_train_blocks {
    void *self;
    /* x through every block in place; key != 0 keeps what backward needs */
    int (*forward)(void *self, uint64_t key, int n_seq, int T, float *x);
    /* g: gradient w.r.t. the output in, w.r.t. the input of block 0 out */
    int (*backward)(void *self, uint64_t key, int n_seq, int T, float *g);
    /* AdamW step number t (1-based) at learning rate lr; zeroes gradients */
    int (*step)(void *self, int64_t t, float lr);
    const char *(*error)(void *self);
} shoal_train_blocks;

/* The blocks of a local span (which must cover the whole model). */
shoal_train_blocks shoal_train_span_blocks(shoal_train_span *s);

typedef struct shoal_trainer_params {
    int batch;        /* sequences per optimizer step */
    int seq_len;      /* tokens per sequence, BOS included */
    int micro_batch;  /* sequences per forward/backward (0: all of the batch) */
    uint64_t seed;    /* data order */
    int threads;      /* for the head */
} shoal_trainer_params;

/* batch 4, seq_len 64, micro_batch 0, seed 0, 1 thread. */
shoal_trainer_params shoal_trainer_params_default(void);

typedef struct shoal_trainer shoal_trainer;

/* A trainer over the tokens text[0..n) (copied) with the embedding and
 * head of hw (opened with SHOAL_PART_EMBED | SHOAL_PART_HEAD; it must
 * outlive the trainer); bos < 0 when the model has none. seq_len is cut
 * to what the text allows. SHOAL_ERR_ARG with one line in err for a text
 * too short to train on (fewer than 2 targets) or bad parameters. */
int shoal_trainer_new(const shoal_train_w *hw, const int32_t *text, size_t n, int32_t bos,
                      const shoal_trainer_params *p, shoal_trainer **out, char *err,
                      size_t errlen);
void shoal_trainer_destroy(shoal_trainer **t);

/* The sequence length in use (after cutting) and the sequences per
 * micro-batch: a blocks backend must take micro_batch * seq_len tokens. */
int shoal_trainer_seq_len(const shoal_trainer *t);
int shoal_trainer_micro_batch(const shoal_trainer *t);
/* Tokens per optimizer step (batch * seq_len). */
int shoal_trainer_step_tokens(const shoal_trainer *t);

/* Optimizer step number `step` (>= 1): forward, loss and backward of each
 * micro-batch, then blocks->step(step, lr). *loss = the step's mean
 * cross-entropy (before the update). A failure of the blocks returns
 * their code; err gets their line. */
int shoal_trainer_step(shoal_trainer *t, const shoal_train_blocks *b, int64_t step, float lr,
                       double *loss, char *err, size_t errlen);

/* Mean cross-entropy of the text in consecutive windows of seq_len (the
 * first max_windows of them; 0: all), forward only: the text's
 * perplexity is exp(*loss). */
int shoal_trainer_eval(shoal_trainer *t, const shoal_train_blocks *b, int max_windows,
                       double *loss, char *err, size_t errlen);

#endif
