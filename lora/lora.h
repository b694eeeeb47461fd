/*
 * One LoRA pair on a frozen projection W (out, in):
 *
 *   y = W x + scale * B (A x),   A (rank, in), B (out, rank), f32,
 *   scale = alpha / rank (alpha 0 means scale 1, as llama.cpp reads it).
 *
 * The object owns A, B and their gradients dA, dB. Initialisation follows
 * the LoRA paper: B = 0, so a fresh adapter leaves the model unchanged, and
 * A ~ N(0, 1/in) (Kaiming-like), drawn from a seeded generator so that a
 * given (seed, in, rank) always gives the same A on every machine.
 * Forward and backward are the kernels' shoal_op_lora_* (kernels/backward.h)
 * applied to the object's view.
 *
 * THREAD SAFETY: an object belongs to one thread at a time.
 */
#ifndef SHOAL_LORA_LORA_H
#define SHOAL_LORA_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backward.h"

#define SHOAL_LORA_MAX_RANK 4096

typedef struct shoal_lora shoal_lora;

/* A pair for a projection (out, in) of the given rank (1..min(in, out,
 * SHOAL_LORA_MAX_RANK)); A, B and the gradients start at zero. */
int shoal_lora_new(int in, int out, int rank, float alpha, shoal_lora **l);
void shoal_lora_destroy(shoal_lora **l);

int shoal_lora_in(const shoal_lora *l);
int shoal_lora_out(const shoal_lora *l);
int shoal_lora_rank(const shoal_lora *l);
float shoal_lora_alpha(const shoal_lora *l);
float shoal_lora_scale(const shoal_lora *l);

/* The tensors, owned by the object: A (rank, in), B (out, rank), and the
 * gradients of the same shapes. */
float *shoal_lora_a(shoal_lora *l);
float *shoal_lora_b(shoal_lora *l);
float *shoal_lora_da(shoal_lora *l);
float *shoal_lora_db(shoal_lora *l);
const float *shoal_lora_a_const(const shoal_lora *l);
const float *shoal_lora_b_const(const shoal_lora *l);

/* B = 0, A ~ N(0, 1/in) from `seed`. */
void shoal_lora_init(shoal_lora *l, uint64_t seed);
void shoal_lora_zero_grad(shoal_lora *l);

/* The kernels' view (with gradient pointers). */
shoal_lora_view shoal_lora_view_of(shoal_lora *l);

/* u (T, rank) = x A^T; y (T, out) += scale * u B^T. */
void shoal_lora_forward(const shoal_lora *l, int T, const float *x, float *u, float *y);
/* dB += scale dy^T u; dA += du^T x; dx (T, in) += du A (dx may be NULL);
 * du (T, rank) is scratch. */
void shoal_lora_backward(shoal_lora *l, int T, const float *x, const float *u, const float *dy,
                         float *du, float *dx);

/* ---- deterministic random numbers (also used by the adapter set) ---- */

/* splitmix64: the next value of the stream in *state. */
uint64_t shoal_lora_rand_u64(uint64_t *state);
/* A standard normal (Box-Muller over two uniforms of the stream). */
double shoal_lora_rand_normal(uint64_t *state);
/* A seed for one tensor, mixed from a base seed and two indices. */
uint64_t shoal_lora_seed_mix(uint64_t seed, uint64_t a, uint64_t b);

#endif
