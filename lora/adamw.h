/*
 * AdamW (Loshchilov & Hutter), PyTorch's formulation, over registered f32
 * parameter tensors:
 *
 *   t += 1
 *   p -= lr * weight_decay * p                       (decoupled decay)
 *   m  = beta1 m + (1 - beta1) g
 *   v  = beta2 v + (1 - beta2) g^2
 *   p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
 *
 * The optimizer keeps m and v for each tensor (allocated at registration,
 * zero) and the step count t; it reads gradients from where the caller
 * said they live. State accessors let a training session hand m, v and t
 * to a checkpoint and restore them on another machine.
 *
 * THREAD SAFETY: an optimizer belongs to one thread at a time.
 */
#ifndef SHOAL_LORA_ADAMW_H
#define SHOAL_LORA_ADAMW_H

#include <stddef.h>
#include <stdint.h>

typedef struct shoal_adamw_params {
    float lr;            /* 1e-3 */
    float beta1;         /* 0.9 */
    float beta2;         /* 0.999 */
    float eps;           /* 1e-8 */
    float weight_decay;  /* 0 */
} shoal_adamw_params;

shoal_adamw_params shoal_adamw_params_default(void);

/* One update of n elements at step t (>= 1, already incremented), in place
 * on param, m and v. */
void shoal_adamw_update(const shoal_adamw_params *p, int64_t t, float *param, const float *grad,
                        float *m, float *v, size_t n);

typedef struct shoal_adamw shoal_adamw;

/* SHOAL_ERR_ARG for a non-finite or out-of-range parameter. */
int shoal_adamw_new(const shoal_adamw_params *p, shoal_adamw **out);
void shoal_adamw_destroy(shoal_adamw **o);

/* Registers a tensor: param (n) is updated from grad (n) at each step; both
 * are the caller's and must outlive the optimizer. Returns the tensor's
 * index through *index (may be NULL). */
int shoal_adamw_add(shoal_adamw *o, float *param, const float *grad, size_t n, size_t *index);

/* t += 1 and one update of every registered tensor. */
void shoal_adamw_step(shoal_adamw *o);

void shoal_adamw_set_lr(shoal_adamw *o, float lr);
const shoal_adamw_params *shoal_adamw_params_of(const shoal_adamw *o);

/* State, for checkpoints. */
int64_t shoal_adamw_t(const shoal_adamw *o);
void shoal_adamw_set_t(shoal_adamw *o, int64_t t);
size_t shoal_adamw_count(const shoal_adamw *o);
/* Elements of tensor i, and its moment buffers (NULL when i is out of range). */
size_t shoal_adamw_len(const shoal_adamw *o, size_t i);
float *shoal_adamw_m(shoal_adamw *o, size_t i);
float *shoal_adamw_v(shoal_adamw *o, size_t i);

#endif
