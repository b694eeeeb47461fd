/*
 * Training kernels: the Llama block's ops forward and backward, LoRA on any
 * of its seven projections, and a block pass that recomputes what backward
 * needs from the block's input alone.
 *
 * Training runs whole sequences: a call covers T tokens of one sequence at
 * positions 0..T-1 (causal attention among them, no KV cache).
 *
 * Two layers:
 *
 *   shoal_op_*     one op, forward and backward, over caller-owned buffers.
 *                  Backward functions ADD their gradients into the d*
 *                  outputs (the caller zeroes them first), except the RoPE
 *                  backward, which rotates a gradient back in place.
 *
 *   shoal_train    scratch and a thread pool for a block pass over up to
 *                  max_T tokens: shoal_train_block_forward (y = block(x),
 *                  with LoRA) and shoal_train_block_backward (dx and LoRA
 *                  gradients from x and dy; it recomputes the block's
 *                  activations from x, so a server keeps only each block's
 *                  input per step), plus the head's cross-entropy loss and
 *                  its gradient. All allocation happens in shoal_train_new.
 *
 * Frozen weights of every supported type: the forward product is
 * shoal_matmul (bit-identical to inference: without LoRA,
 * shoal_train_block_forward equals shoal_fwd_blocks at position 0; with
 * Q8_0/Q4_0 weights the activations are quantized as inference does, and
 * backward treats that rounding as the identity). The transposed product
 * dx = W^T dy dequantizes tiles of rows into a scratch and calls OpenBLAS
 * sgemm. Results are deterministic for a fixed thread count (the pool's
 * and OpenBLAS's); unlike inference they are not bit-identical across
 * thread counts.
 *
 * Shapes follow the forward pass (kernels/model.c): q (T, H*hd),
 * k and v (T, Hkv*hd), a LoRA pair on a projection W (out, in) has
 * A (rank, in) and B (out, rank) and adds scale * B (A x), scale = alpha/rank.
 *
 * THREAD SAFETY: shoal_op_* are pure functions of their buffers (those
 * taking a pool use it; one thread at a time per pool). A shoal_train
 * belongs to one thread at a time. shoal_train_w is immutable once open.
 */
#ifndef SHOAL_KERNELS_BACKWARD_H
#define SHOAL_KERNELS_BACKWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/gguf.h"
#include "kernels/matmul.h"
#include "kernels/model.h"
#include "kernels/pool.h"

/* The seven projections of a block, in GGUF order. */

#define SHOAL_PROJ_ALL ((1u << SHOAL_PROJ__COUNT) - 1)

/* GGUF tensor stem of a projection ("attn_q", ..., "ffn_down"), NULL if out of range. */
const char *shoal_proj_name(int proj);
/* Short name used on command lines ("q", "k", "v", "o", "gate", "up", "down"). */
const char *shoal_proj_short(int proj);
/* Parses "q,k,v,o,gate,up,down" (any subset, or "all") into a bit mask
 * of (1 << proj). SHOAL_ERR_ARG for an unknown or empty list. */
int shoal_proj_parse(const char *list, unsigned *mask);
/* Input and output widths of projection `proj` under hp. */
void shoal_proj_dims(const shoal_hparams *hp, int proj, int *in, int *out);

/* ---- ops ---------------------------------------------------------------- */

/* y (T, n) = w * x / sqrt(mean(x^2) + eps), per row, in model.c's order. */
void shoal_op_rmsnorm_forward(int T, int n, const float *x, const float *w, float eps, float *y);
/* dx (T, n) += d/dx, dw (n) += d/dw (dw may be NULL), given dy (T, n). */
void shoal_op_rmsnorm_backward(int T, int n, const float *x, const float *w, float eps,
                               const float *dy, float *dx, float *dw);

/* cs (T, rope_dim): (cos, sin) of each rotated pair at positions pos..pos+T-1,
 * the formula of model.c. */
void shoal_op_rope_table(int T, int pos, const shoal_hparams *hp, float *cs);
/* Rotates adjacent pairs of the first rope_dim dims of each head of
 * x (T, n_heads*head_dim) in place. */
void shoal_op_rope_forward(int T, int n_heads, int head_dim, int rope_dim, const float *cs,
                           float *x);
/* The inverse rotation, applied in place to a gradient dx (T, n_heads*head_dim). */
void shoal_op_rope_backward(int T, int n_heads, int head_dim, int rope_dim, const float *cs,
                            float *dx);

/* Causal attention of T tokens at positions 0..T-1 with H query heads
 * sharing Hkv key/value heads (H % Hkv == 0):
 *   out (T, H*hd) = softmax(q k^T / sqrt(hd)) v, per head;
 *   lse (H, T) = log-sum-exp of each row's scaled scores (for backward).
 * scores: (shoal_pool_size(pool), T) floats of scratch (1 row for a NULL pool).
 * Arithmetic is model.c's, so out equals the inference kernel's. */
void shoal_op_attn_forward(shoal_pool *pool, int T, int H, int Hkv, int hd, const float *q,
                           const float *k, const float *v, float *out, float *lse,
                           float *scores);
/* dq (T, H*hd), dk, dv (T, Hkv*hd) += gradients given dout (T, H*hd) and
 * the forward's out and lse; delta (H, T) is scratch. The softmax is
 * recomputed from lse. Threads split rows for dq and key positions for
 * dk/dv, so no two threads write one element. */
void shoal_op_attn_backward(shoal_pool *pool, int T, int H, int Hkv, int hd, const float *q,
                            const float *k, const float *v, const float *out,
                            const float *lse, const float *dout, float *dq, float *dk,
                            float *dv, float *delta);

/* h (n) = silu(g) * u. */
void shoal_op_swiglu_forward(size_t n, const float *g, const float *u, float *h);
/* dg, du (n) += gradients given dh (n). */
void shoal_op_swiglu_backward(size_t n, const float *g, const float *u, const float *dh,
                              float *dg, float *du);

/* y (T, w->n) = x (T, w->k) W^T through shoal_matmul; act is scratch of
 * shoal_act_bytes(w->type, w->k, T) bytes (may be NULL when that is 0). */
void shoal_op_linear_forward(shoal_pool *pool, const shoal_mat *w, int T, const float *x,
                             void *act, float *y);
/* dx (T, w->k) += dy (T, w->n) W, W dequantized tile by tile into `tile`
 * (tile_floats >= w->k unless w is F32, which needs no tile).
 * SHOAL_ERR_ARG for a bad shape or a too small tile. */
int shoal_op_linear_backward(shoal_pool *pool, const shoal_mat *w, int T, const float *dy,
                             float *dx, float *tile, size_t tile_floats);

/* A LoRA pair attached to a projection, as the kernels see it (storage and
 * initialisation live in lora/). rank 0 (or a NULL a) means none. */
typedef struct shoal_lora_view {
    int rank;
    float scale;      /* alpha / rank (llama.cpp: 1 when alpha is 0) */
    const float *a;   /* (rank, in) */
    const float *b;   /* (out, rank) */
    float *da;        /* (rank, in) gradient, accumulated; NULL for forward only */
    float *db;        /* (out, rank) gradient, accumulated */
} shoal_lora_view;

static inline bool shoal_lora_view_on(const shoal_lora_view *l)
{
    return l && l->rank > 0 && l->a && l->b;
}

/* u (T, rank) = x A^T; y (T, out) += scale * u B^T. */
void shoal_op_lora_forward(const shoal_lora_view *l, int T, int in, int out, const float *x,
                           float *u, float *y);
/* Given the forward's x and u and dy (T, out): db += scale dy^T u,
 * du (T, rank) = scale dy B (scratch, overwritten), da += du^T x, and
 * dx (T, in) += du A (dx may be NULL). da/db may be NULL to skip them. */
void shoal_op_lora_backward(const shoal_lora_view *l, int T, int in, int out, const float *x,
                            const float *u, const float *dy, float *du, float *dx);

/* ---- weights of a span for training -------------------------------------- */

typedef struct shoal_train_w shoal_train_w;

/* Loads views of blocks [b0, b1) and, with SHOAL_PART_EMBED / _HEAD, the
 * embedding and head from g (which must outlive the object), with the same
 * checks as shoal_model_open. */
int shoal_train_w_open(const shoal_gguf *g, int b0, int b1, unsigned parts,
                       shoal_train_w **out, char *err, size_t errlen);
void shoal_train_w_destroy(shoal_train_w **w);
const shoal_hparams *shoal_train_w_hparams(const shoal_train_w *w);
/* Block `layer` (absolute index in [b0, b1)), or NULL outside the span. */
const shoal_block_w *shoal_train_w_block(const shoal_train_w *w, int layer);
/* NULL unless opened with SHOAL_PART_HEAD (out) / SHOAL_PART_EMBED (embd set). */
const shoal_head_w *shoal_train_w_head(const shoal_train_w *w);
/* x (T, dim) <- embedding rows; SHOAL_ERR_RANGE for a bad token id. */
int shoal_train_w_embed(const shoal_train_w *w, const int32_t *tokens, int T, float *x);

/* ---- block and head passes ---------------------------------------------- */

typedef struct shoal_train shoal_train;

/* Scratch for sequences of up to max_T tokens, LoRA ranks up to max_rank,
 * a head of n_vocab rows (0: no head), and n_threads compute threads
 * (the caller's thread is one). NULL on a bad argument or no memory. */
shoal_train *shoal_train_new(const shoal_hparams *hp, int max_T, int max_rank, int n_vocab,
                             int n_threads);
void shoal_train_destroy(shoal_train **tr);
int shoal_train_max_T(const shoal_train *tr);

/* y (T, dim) = block(x (T, dim)) at positions 0..T-1, with LoRA where
 * lora[proj] is on (lora may be NULL). y may equal x. */
int shoal_train_block_forward(shoal_train *tr, const shoal_block_w *w,
                              const shoal_lora_view *lora, int T, const float *x, float *y);

/* Recomputes the block from x (T, dim) and back-propagates dy (T, dim):
 * dx (T, dim) = dL/dx (written, may equal dy) and every enabled LoRA
 * view's da/db += its gradient. */
int shoal_train_block_backward(shoal_train *tr, const shoal_block_w *w,
                               const shoal_lora_view *lora, int T, const float *x,
                               const float *dy, float *dx);

/* Cross-entropy of the head over x (T, dim): for each t with
 * targets[t] >= 0, loss_t = logsumexp(logits_t) - logits_t[targets[t]].
 * *loss_sum = sum of loss_t (double), *n_counted = how many. With dx
 * non-NULL, dx (T, dim) = grad_scale * d(sum loss_t)/dx (written), so
 * grad_scale = 1/N gives the gradient of a mean over N tokens.
 * SHOAL_ERR_RANGE for a target outside the vocabulary. */
int shoal_train_head_loss(shoal_train *tr, const shoal_head_w *h, int T, const float *x,
                          const int32_t *targets, float grad_scale, float *dx,
                          double *loss_sum, int *n_counted);

/* logits (T, n_vocab) of the head (no loss). */
int shoal_train_head_logits(shoal_train *tr, const shoal_head_w *h, int T, const float *x,
                            float *logits);

#endif
