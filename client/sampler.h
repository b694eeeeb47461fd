/*
 * Sampler: picks the next token from a row of logits.
 *
 * temp <= 0 is greedy: the argmax, the lowest id on ties (as llama2.c).
 * Otherwise, in this order:
 *   1. repetition penalty (llama.cpp semantics): every distinct token among
 *      the last repeat_last_n accepted ones has a positive logit divided by
 *      repeat_penalty and a negative one multiplied by it (also in greedy
 *      mode; 1.0 turns it off);
 *   2. top-k: only the k highest logits stay (k <= 0 or >= n_vocab: all);
 *   3. softmax of logit / temp over what stays;
 *   4. top-p: the smallest set of most likely tokens whose probability
 *      sums to at least top_p (top_p >= 1: all);
 *   5. min-p: tokens below min_p times the top probability go (min_p <= 0:
 *      none);
 *   6. a draw from what is left, renormalised, with the sampler's own
 *      xoshiro256** generator seeded from `seed` through splitmix64: a seed
 *      gives the same draws on every machine.
 * Ranking ties are broken by the lower id, so the result never depends on
 * sort stability. Top-k selects with a k-element heap, O(V log k); top-p
 * without top-k pops tokens best first from a heap of the min-p survivors
 * until the nucleus is complete, O(V + m log V) for a nucleus of m; nothing
 * ever sorts the whole vocabulary. NaN logits count as -infinity.
 *
 * Ownership: _new allocates everything the sampler will ever use; _sample
 * and _accept allocate nothing. THREAD SAFETY: a sampler belongs to one
 * thread at a time.
 */
#ifndef SHOAL_CLIENT_SAMPLER_H
#define SHOAL_CLIENT_SAMPLER_H

#include <stdint.h>

typedef struct shoal_sampler shoal_sampler;

typedef struct shoal_sampler_params {
    float temp;           /* <= 0: greedy */
    int top_k;            /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1.0: off */
    int repeat_last_n;    /* tokens of history the penalty looks at, >= 0 */
    uint64_t seed;
} shoal_sampler_params;

#define SHOAL_SAMPLER_MAX_HISTORY (1 << 20)

/* temp 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.0 (off),
 * repeat_last_n 64, seed 0x5EED (fixed: callers that want a fresh seed per
 * run pick one). */
shoal_sampler_params shoal_sampler_params_default(void);

/* Returns NULL on bad parameters (n_vocab <= 0, NaN values, repeat_penalty
 * <= 0, repeat_last_n outside 0..SHOAL_SAMPLER_MAX_HISTORY) or no memory. */
shoal_sampler *shoal_sampler_new(const shoal_sampler_params *p, int n_vocab);
void shoal_sampler_destroy(shoal_sampler **s);

/* Picks a token from logits (n_vocab values), which it may change in place
 * (penalties, temperature). Always returns an id in [0, n_vocab). Does not
 * record the token: call _accept with the token actually used. */
int32_t shoal_sampler_sample(shoal_sampler *s, float *logits);

/* Records a token in the penalty history (ids out of range are ignored). */
void shoal_sampler_accept(shoal_sampler *s, int32_t tok);

/* Forgets the history and restarts the generator from the seed. */
void shoal_sampler_reset(shoal_sampler *s);

#endif
