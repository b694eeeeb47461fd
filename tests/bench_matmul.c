/*
 * Matmul benchmark on Llama-2-7B layer shapes: a (n = 11008, k = 4096)
 * weight matrix (the FFN gate/up projection) of each type, decode (1 token:
 * weight bytes streamed per second) and prompt (128 tokens: GFLOP/s, 2*n*k
 * per token), on 1 and 2 threads. Threads are plain pthreads that split the
 * rows in multiples of 16, as a server's pool would. Runs cycle through
 * copies of the weights (256 MiB or more in all), so every run streams them
 * from memory as a model's layers do, not from the L3 cache. The machine is
 * shared, so each figure is the best of several repetitions.
 *
 * usage: bench_matmul [-k K] [-n N] [-p PROMPT_TOKENS] [-j MAX_THREADS]
 *                     [-r SECONDS] [-c] [type...]   (types: f32 f16 q8_0 ...)
 * -c times single-thread runs by the thread's CPU time, which a machine
 * shared with other jobs disturbs less than the wall clock.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu.h"
#include "kernels/matmul.h"
#include "kernels/types.h"

#define MAX_THREADS 16

typedef struct job {
    const shoal_mat *w;
    const float *x;
    const void *act;
    int ntok;
    float *y;
} job;

typedef struct worker {
    pthread_t th;
    int ith;
} worker;

static pthread_barrier_t bar_start, bar_end;
static job cur;
static int nthreads;
static volatile int quit;
static int use_cpu_time; /* -c: time one thread by its CPU time (a busy machine) */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void run_part(int ith)
{
    int64_t n = cur.w->n, blocks = (n + 15) / 16;
    int64_t b0 = blocks * ith / nthreads, b1 = blocks * (ith + 1) / nthreads;
    int64_t r0 = b0 * 16, r1 = b1 * 16 < n ? b1 * 16 : n;
    if (r1 > r0)
        shoal_matmul(cur.w, cur.x, cur.act, cur.ntok, cur.y, n, r0, r1);
}

static void *worker_main(void *arg)
{
    worker *wk = arg;
    for (;;) {
        pthread_barrier_wait(&bar_start);
        if (quit)
            return NULL;
        run_part(wk->ith);
        pthread_barrier_wait(&bar_end);
    }
}

/* Runs the current job on nthreads threads (the caller is thread 0). */
static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double run_once(void)
{
    if (use_cpu_time && nthreads == 1) {
        double c0 = thread_cpu();
        run_part(0);
        return thread_cpu() - c0;
    }
    double t0 = now();
    if (nthreads > 1)
        pthread_barrier_wait(&bar_start);
    run_part(0);
    if (nthreads > 1)
        pthread_barrier_wait(&bar_end);
    return now() - t0;
}

static worker workers[MAX_THREADS];

static void threads_start(int n)
{
    nthreads = n;
    quit = 0;
    if (n <= 1)
        return;
    pthread_barrier_init(&bar_start, NULL, (unsigned)n);
    pthread_barrier_init(&bar_end, NULL, (unsigned)n);
    for (int i = 1; i < n; i++) {
        workers[i].ith = i;
        pthread_create(&workers[i].th, NULL, worker_main, &workers[i]);
    }
}

static void threads_stop(void)
{
    if (nthreads > 1) {
        quit = 1;
        pthread_barrier_wait(&bar_start);
        for (int i = 1; i < nthreads; i++)
            pthread_join(workers[i].th, NULL);
        pthread_barrier_destroy(&bar_start);
        pthread_barrier_destroy(&bar_end);
    }
    nthreads = 1;
}

static uint64_t rs = 88172645463325252ull;
static float rndf(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

static void *xalloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* Copies of the weights that runs cycle through, so that each run reads
 * them from memory as a model's layers would, not from the L3 cache. */
#define MAX_COPIES 64
#define COPY_BYTES ((size_t)256 << 20)
static shoal_mat copies[MAX_COPIES];
static int ncopies;

/* Best time of repeated runs: at least `reps` runs and `secs` seconds. */
static double best_time(int reps, double secs)
{
    double best = 1e30, start = now();
    for (int i = 0; i < reps || now() - start < secs; i++) {
        cur.w = &copies[i % ncopies];
        double t = run_once();
        if (t < best)
            best = t;
        if (i > 1000)
            break;
    }
    return best;
}

int main(int argc, char **argv)
{
    int64_t k = 4096, n = 11008;
    int ptok = 128, maxj = 2;
    double secs = 1.0;
    int types[16], ntypes = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-k") == 0 && i + 1 < argc) {
            k = atoll(argv[++i]);
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            n = atoll(argv[++i]);
        } else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
            ptok = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-j") == 0 && i + 1 < argc) {
            maxj = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-c") == 0) {
            use_cpu_time = 1;
        } else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc) {
            secs = atof(argv[++i]);
        } else if (shoal_type_from_name(argv[i]) >= 0 && ntypes < 16) {
            types[ntypes++] = shoal_type_from_name(argv[i]);
        } else {
            fprintf(stderr, "usage: %s [-k K] [-n N] [-p TOKENS] [-j THREADS] [-r SECONDS] "
                            "[-c] [type...]\n", argv[0]);
            return 2;
        }
    }
    if (maxj < 1 || maxj > MAX_THREADS || ptok < 1 || k <= 0 || n <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    if (ntypes == 0) {
        static const int def[] = {SHOAL_TYPE_F32, SHOAL_TYPE_F16, SHOAL_TYPE_BF16,
                                  SHOAL_TYPE_Q8_0, SHOAL_TYPE_Q4_0, SHOAL_TYPE_Q4_K,
                                  SHOAL_TYPE_Q6_K};
        ntypes = (int)(sizeof(def) / sizeof(def[0]));
        memcpy(types, def, sizeof(def));
    }
    shoal_cpu_init();
    printf("isa %s, k %lld, n %lld, prompt %d tokens\n", shoal_cpu_isa(), (long long)k,
           (long long)n, ptok);
    printf("%-5s %3s %10s %10s %12s %10s %10s\n", "type", "thr", "decode ms", "GB/s",
           "prompt ms", "GFLOP/s", "prep ms");

    float *x = xalloc((size_t)ptok * (size_t)k * sizeof(float));
    for (size_t i = 0; i < (size_t)ptok * (size_t)k; i++)
        x[i] = rndf();
    float *y = xalloc((size_t)ptok * (size_t)n * sizeof(float));

    for (int ti = 0; ti < ntypes; ti++) {
        int type = types[ti];
        size_t rb = shoal_type_row_bytes(type, k);
        if (rb == 0) {
            printf("%-5s k %lld is not a whole number of blocks\n", shoal_type_info(type)->name,
                   (long long)k);
            continue;
        }
        /* 64 distinct quantized rows, repeated: the speed does not depend on values */
        uint8_t *w = xalloc(rb * (size_t)n);
        float *row = xalloc((size_t)k * sizeof(float));
        for (int64_t i = 0; i < n && i < 64; i++) {
            for (int64_t j = 0; j < k; j++)
                row[j] = rndf();
            shoal_quantize_row(type, row, w + (size_t)i * rb, k);
        }
        for (int64_t i = 64; i < n; i++)
            memcpy(w + (size_t)i * rb, w + (size_t)(i % 64) * rb, rb);
        free(row);
        shoal_mat m = {type, k, n, w};
        size_t wbytes = rb * (size_t)n;
        ncopies = (int)(COPY_BYTES / wbytes) + 1;
        if (ncopies > MAX_COPIES)
            ncopies = MAX_COPIES;
        copies[0] = m;
        for (int c = 1; c < ncopies; c++) {
            void *wc = xalloc(wbytes);
            memcpy(wc, w, wbytes);
            copies[c] = (shoal_mat){type, k, n, wc};
        }
        size_t ab = shoal_act_bytes(type, k, ptok);
        void *act = ab ? xalloc(ab) : NULL;

        for (int j = 1; j <= maxj; j *= 2) {
            threads_start(j);
            /* decode */
            if (act)
                shoal_act_prepare(type, x, k, 1, act);
            cur = (job){&m, x, act, 1, y};
            run_once();
            double td = best_time(10, secs);
            /* prompt */
            double tp0 = now();
            if (act)
                shoal_act_prepare(type, x, k, ptok, act);
            double tprep = now() - tp0;
            cur = (job){&m, x, act, ptok, y};
            double tp = best_time(3, secs);
            threads_stop();
            printf("%-5s %3d %10.3f %10.1f %12.2f %10.1f %10.3f\n", shoal_type_info(type)->name,
                   j, td * 1e3, (double)rb * (double)n / td * 1e-9, tp * 1e3,
                   2.0 * (double)n * (double)k * ptok / tp * 1e-9, tprep * 1e3);
            fflush(stdout);
        }
        for (int c = 1; c < ncopies; c++)
            free((void *)copies[c].data);
        free(w);
        free(act);
    }
    free(x);
    free(y);
    return 0;
}
