/*
 * Thread pool: workers wait for a new generation number, run the job, and
 * count themselves done. Waiting spins for a bounded number of iterations
 * (cheap when kernels come back to back) and then sleeps on a condition
 * variable, so an idle pool costs no CPU.
 */
#include "kernels/pool.h"

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define POOL_SPIN 20000     /* worker spins before sleeping */
#define POOL_SPIN_WAIT 2000 /* caller spins before yielding */

struct shoal_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;       /* bumped once per job */
    atomic_int pending;    /* workers still running the current job */
    atomic_int sleepers;   /* workers blocked on cv */
    atomic_bool quit;
    shoal_pool_fn fn;
    void *ctx;
};

typedef struct {
    shoal_pool *p;
    int ith;
} pool_worker_arg;

static void *pool_worker(void *arg_)
{
    pool_worker_arg *arg = arg_;
    shoal_pool *p = arg->p;
    int ith = arg->ith;
    free(arg);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               !atomic_load(&p->quit)) {
            if (++spins < POOL_SPIN) {
                if (spins % 1024 == 0)
                    sched_yield();
                else
                    _mm_pause();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit))
            return NULL;
        seen = g;
        p->fn(p->ctx, ith, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

shoal_pool *shoal_pool_new(int n_threads)
{
    if (n_threads < 1 || n_threads > 1024)
        return NULL;
    shoal_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads)
            goto err;
        for (int i = 1; i < n_threads; i++) {
            pool_worker_arg *a = malloc(sizeof *a);
            if (!a)
                goto err_threads;
            a->p = p;
            a->ith = i;
            if (pthread_create(&p->threads[i - 1], NULL, pool_worker, a) != 0) {
                free(a);
                goto err_threads;
            }
            p->n = i + 1; /* workers started so far, for cleanup */
        }
        p->n = n_threads;
    }
    return p;
err_threads:
    p->n = p->n > 1 ? p->n : 1;
    shoal_pool_destroy(&p);
    return NULL;
err:
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
    return NULL;
}

void shoal_pool_destroy(shoal_pool **pp)
{
    if (!pp || !*pp)
        return;
    shoal_pool *p = *pp;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->threads[i - 1], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
    *pp = NULL;
}

int shoal_pool_size(const shoal_pool *p)
{
    return p ? p->n : 1;
}

void shoal_pool_run(shoal_pool *p, shoal_pool_fn fn, void *ctx)
{
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: pairs with the sleepers check */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(ctx, 0, p->n);
    /* Spin while the workers are likely running; once that takes long,
     * yield so that a descheduled worker (more threads than free cores:
     * several nodes on one machine) can run instead of us spinning. */
    for (int spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; spins++) {
        if (spins < POOL_SPIN_WAIT)
            _mm_pause();
        else
            sched_yield();
    }
}

void shoal_pool_split(long n, long align, int ith, int nth, long *begin, long *end)
{
    if (align < 1)
        align = 1;
    long units = (n + align - 1) / align;
    long per = units / nth, extra = units % nth;
    long b = ith * per + (ith < extra ? ith : extra);
    long e = b + per + (ith < extra ? 1 : 0);
    b *= align;
    e *= align;
    *begin = b < n ? b : n;
    *end = e < n ? e : n;
}

int shoal_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
