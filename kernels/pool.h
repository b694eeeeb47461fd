/*
 * A fixed pool of compute threads for data-parallel kernels. The caller of
 * shoal_pool_run is thread 0 and works too; the pool's n-1 workers spin
 * briefly on a generation counter, then sleep, so back-to-back kernels (a
 * forward pass launches dozens per token) do not pay a wake-up each.
 *
 * Work split never changes results: kernels split rows or tokens, and every
 * output element is computed by exactly one thread in the canonical order.
 *
 * THREAD SAFETY: one thread at a time may call shoal_pool_run on a pool.
 */
#ifndef SHOAL_KERNELS_POOL_H
#define SHOAL_KERNELS_POOL_H

typedef struct shoal_pool shoal_pool;

/* fn(ctx, ith, nth): thread ith of nth. */
typedef void (*shoal_pool_fn)(void *ctx, int ith, int nth);

/* n_threads >= 1 (1 means no worker threads). Returns NULL on failure. */
shoal_pool *shoal_pool_new(int n_threads);
void shoal_pool_destroy(shoal_pool **p);
int shoal_pool_size(const shoal_pool *p);

/* Runs fn on every thread of the pool and returns when all have finished.
 * A NULL pool runs fn(ctx, 0, 1) on the caller. */
void shoal_pool_run(shoal_pool *p, shoal_pool_fn fn, void *ctx);

/* Splits [0, n) into nth parts aligned to `align` items; part ith. */
void shoal_pool_split(long n, long align, int ith, int nth, long *begin, long *end);

/* Number of online CPUs (at least 1). */
int shoal_cpu_count(void);

#endif
