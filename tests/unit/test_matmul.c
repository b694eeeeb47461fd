/*
 * Matmul kernels against the reference (kernels/matmul.h).
 *
 * For every weight type and every ISA level this CPU has: the optimized
 * result equals shoal_matmul_ref bit for bit (memcmp) over odd shapes and
 * token counts; a token's outputs do not depend on the batch it came in;
 * any split of the row range gives the same bytes; the reference is within
 * a stated error bound of a double-precision dot of the dequantized values.
 * shoal_act_prepare matches shoal_quantize_row (Q8_0) and is identical at
 * every level; shoal_dot_f32 equals its reference at every level.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/cpu.h"
#include "kernels/matmul.h"
#include "kernels/types.h"
#include "tests/check.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Uniform in [-1, 1). */
static float rndf(void)
{
    return (float)(rnd() & 0xFFFFFF) / 8388608.0f - 1.0f;
}

static void *xalloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0)
        abort();
    return p;
}

static int uses_act(int type)
{
    return type == SHOAL_TYPE_Q8_0 || type == SHOAL_TYPE_Q4_0;
}

/* A random (n, k) matrix of `type`; rows get different magnitudes. */
static void *make_weights(int type, int64_t n, int64_t k)
{
    size_t rb = shoal_type_row_bytes(type, k);
    uint8_t *w = xalloc(rb * (size_t)n);
    float *row = xalloc((size_t)k * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        float mag = (float)(1 + i % 5) * 0.25f;
        for (int64_t j = 0; j < k; j++)
            row[j] = rndf() * mag;
        shoal_quantize_row(type, row, w + (size_t)i * rb, k);
        if (type == SHOAL_TYPE_Q8_0 && i % 3 == 0) {
            /* a crafted file may hold -128, which ggml's quantizer never makes */
            shoal_block_q8_0 *b = (shoal_block_q8_0 *)(w + (size_t)i * rb);
            for (int64_t bi = 0; bi < k / 32; bi++)
                b[bi].qs[(bi * 7) % 32] = -128;
        }
    }
    free(row);
    return w;
}

/* |got - exact| bound for a canonical sum of m lanes' terms: every fma or
 * add rounds once, each term passes through at most m/16 + 4 roundings. */
static double bound(double sum_abs, int64_t terms)
{
    return (double)(terms / 16 + 6) * ldexp(1.0, -23) * sum_abs + 1e-30;
}

/* Checks the reference against a double dot of the dequantized operands. */
static void check_accuracy(int type, const uint8_t *w, int64_t n, int64_t k, const float *x,
                           const void *act, int ntok, const float *yref)
{
    size_t rb = shoal_type_row_bytes(type, k);
    float *wr = xalloc((size_t)k * sizeof(float));
    float *xr = xalloc((size_t)k * sizeof(float));
    int bad = 0;
    for (int t = 0; t < ntok; t++) {
        if (uses_act(type))
            shoal_dequantize_row(SHOAL_TYPE_Q8_0,
                                 (const uint8_t *)act + (size_t)t * shoal_act_q8_row(k), xr, k);
        else
            memcpy(xr, x + (size_t)t * (size_t)k, (size_t)k * sizeof(float));
        for (int64_t i = 0; i < n; i++) {
            shoal_dequantize_row(type, w + (size_t)i * rb, wr, k);
            double s = 0, sa = 0;
            for (int64_t j = 0; j < k; j++) {
                s += (double)wr[j] * (double)xr[j];
                sa += fabs((double)wr[j] * (double)xr[j]);
            }
            /* quantized: 16 lanes of k/64 terms each, in effect k/4 sums */
            int64_t terms = uses_act(type) ? k / 4 : k;
            double got = yref[(size_t)t * (size_t)n + (size_t)i];
            if (!(fabs(got - s) <= bound(sa, terms)) && bad++ < 3)
                fprintf(stderr, "type %d k %lld row %lld tok %d: ref %.9g exact %.9g\n", type,
                        (long long)k, (long long)i, t, got, s);
        }
    }
    CHECK_MSG(bad == 0, "type %d k %lld: %d outputs outside the error bound", type, (long long)k,
              bad);
    free(wr);
    free(xr);
}

static void run_case(int type, int64_t k, int64_t n, int ntok)
{
    const shoal_type_traits *tr = shoal_type_info(type);
    uint8_t *w = make_weights(type, n, k);
    shoal_mat m = {type, k, n, w};
    float *x = xalloc((size_t)ntok * (size_t)k * sizeof(float));
    for (size_t i = 0; i < (size_t)ntok * (size_t)k; i++)
        x[i] = rndf() * (i % 7 == 0 ? 3.0f : 1.0f);

    size_t ab = shoal_act_bytes(type, k, ntok);
    CHECK(uses_act(type) ? ab > 0 : ab == 0);
    void *act = ab ? xalloc(ab) : NULL;
    if (act) {
        memset(act, 0xAB, ab);
        shoal_act_prepare_isa(SHOAL_ISA_C, type, x, k, ntok, act);
        /* the Q8_0 rows are shoal_quantize_row's */
        size_t q8 = shoal_act_q8_row(k);
        uint8_t *want = xalloc(q8);
        int same = 1;
        for (int t = 0; t < ntok; t++) {
            shoal_quantize_row(SHOAL_TYPE_Q8_0, x + (size_t)t * (size_t)k, want, k);
            same &= memcmp(want, (uint8_t *)act + (size_t)t * q8, q8) == 0;
        }
        CHECK_MSG(same, "act Q8_0 rows differ from shoal_quantize_row (k %lld)", (long long)k);
        free(want);
        /* token ranges prepared apart make the same bytes */
        if (ntok > 2) {
            uint8_t *a3 = xalloc(ab);
            memset(a3, 0x33, ab);
            int cut = 1 + (int)(rnd() % (uint32_t)(ntok - 1));
            shoal_act_prepare_range(type, x, k, ntok, cut, ntok, a3);
            shoal_act_prepare_range(type, x, k, ntok, 0, cut, a3);
            CHECK_MSG(memcmp(a3, act, ab) == 0, "act by ranges differs (k %lld ntok %d cut %d)",
                      (long long)k, ntok, cut);
            free(a3);
        }
        /* every level prepares the same bytes */
        for (int lv = SHOAL_ISA_AVX2; lv <= (int)shoal_cpu_level_max(); lv++) {
            void *a2 = xalloc(ab);
            memset(a2, 0x5C, ab);
            shoal_act_prepare_isa(lv, type, x, k, ntok, a2);
            CHECK_MSG(memcmp(a2, act, ab) == 0, "act at %s differs (k %lld ntok %d)",
                      shoal_cpu_isa_name(lv), (long long)k, ntok);
            free(a2);
        }
    }

    size_t ny = (size_t)ntok * (size_t)n;
    float *yref = xalloc(ny * sizeof(float));
    float *y = xalloc(ny * sizeof(float));
    float *y1 = xalloc((size_t)n * sizeof(float));
    shoal_matmul_ref(&m, x, act, ntok, yref, n, 0, n);
    check_accuracy(type, w, n, k, x, act, ntok, yref);

    for (int lv = SHOAL_ISA_C; lv <= (int)shoal_cpu_level_max(); lv++) {
        const char *isa = shoal_cpu_isa_name(lv);
        memset(y, 0xFF, ny * sizeof(float));
        shoal_matmul_isa(lv, &m, x, act, ntok, y, n, 0, n);
        CHECK_MSG(memcmp(y, yref, ny * sizeof(float)) == 0,
                  "%s %s k %lld n %lld ntok %d: differs from the reference", isa, tr->name,
                  (long long)k, (long long)n, ntok);

        /* row ranges split anywhere give the same bytes */
        memset(y, 0xFF, ny * sizeof(float));
        int64_t a = n > 2 ? 1 + (int64_t)(rnd() % (uint32_t)(n - 2)) : 0;
        int64_t b = a + (n - a > 1 ? (int64_t)(rnd() % (uint32_t)(n - a)) : 0);
        if (a > 0)
            shoal_matmul_isa(lv, &m, x, act, ntok, y, n, 0, a);
        if (b > a)
            shoal_matmul_isa(lv, &m, x, act, ntok, y, n, a, b);
        shoal_matmul_isa(lv, &m, x, act, ntok, y, n, b, n);
        CHECK_MSG(memcmp(y, yref, ny * sizeof(float)) == 0,
                  "%s %s k %lld ntok %d: split [0,%lld) [%lld,%lld) [%lld,%lld) differs", isa,
                  tr->name, (long long)k, ntok, (long long)a, (long long)a, (long long)b,
                  (long long)b, (long long)n);

        /* a token alone (its own prepared activations) gives what the batch gave */
        if (ntok > 1) {
            int ok = 1;
            for (int t = 0; t < ntok; t += (ntok > 8 ? 5 : 1)) {
                const float *xt = x + (size_t)t * (size_t)k;
                size_t ab1 = shoal_act_bytes(type, k, 1);
                void *a1 = ab1 ? xalloc(ab1) : NULL;
                if (a1)
                    shoal_act_prepare_isa(lv, type, xt, k, 1, a1);
                memset(y1, 0xFF, (size_t)n * sizeof(float));
                shoal_matmul_isa(lv, &m, xt, a1, 1, y1, n, 0, n);
                ok &= memcmp(y1, yref + (size_t)t * (size_t)n, (size_t)n * sizeof(float)) == 0;
                free(a1);
            }
            CHECK_MSG(ok, "%s %s k %lld ntok %d: a token alone differs from the batch", isa,
                      tr->name, (long long)k, ntok);
        }
    }
    free(w);
    free(x);
    free(act);
    free(yref);
    free(y);
    free(y1);
}

/* -0 results: products that underflow to -0 must stay -0 in every lane,
 * which a kernel that pads a partial group with zeros would turn into +0. */
static void test_negative_zero(void)
{
    const int64_t k = 20, n = 3;
    float *w = xalloc((size_t)(k * n) * sizeof(float));
    float *x = xalloc((size_t)k * sizeof(float));
    for (int64_t i = 0; i < k * n; i++)
        w[i] = -1e-30f;
    for (int64_t i = 0; i < k; i++)
        x[i] = 1e-30f;
    shoal_mat m = {SHOAL_TYPE_F32, k, n, w};
    float yref[3], y[3];
    shoal_matmul_ref(&m, x, NULL, 1, yref, n, 0, n);
    CHECK(yref[0] == 0.0f && signbit(yref[0]));
    for (int lv = SHOAL_ISA_C; lv <= (int)shoal_cpu_level_max(); lv++) {
        shoal_matmul_isa(lv, &m, x, NULL, 1, y, n, 0, n);
        CHECK_MSG(memcmp(y, yref, sizeof(y)) == 0, "%s: -0 lost", shoal_cpu_isa_name(lv));
        float d = shoal_dot_f32_isa(lv, w, x, k);
        CHECK_MSG(d == 0.0f && signbit(d), "%s: dot -0 lost", shoal_cpu_isa_name(lv));
    }
    free(w);
    free(x);
}

static void test_dot(void)
{
    float *a = xalloc(1100 * sizeof(float)), *b = xalloc(1100 * sizeof(float));
    for (int i = 0; i < 1100; i++) {
        a[i] = rndf();
        b[i] = rndf() * 10.0f;
    }
    int ok = 1;
    for (int64_t n = 0; n <= 1100; n += (n < 70 ? 1 : 97)) {
        float want = shoal_dot_f32_ref(a, b, n);
        for (int lv = SHOAL_ISA_C; lv <= (int)shoal_cpu_level_max(); lv++) {
            float got = shoal_dot_f32_isa(lv, a, b, n);
            ok &= memcmp(&got, &want, sizeof(got)) == 0;
        }
        ok &= memcmp(&want, &(float){shoal_dot_f32(a, b, n)}, sizeof(want)) == 0;
    }
    CHECK_MSG(ok, "shoal_dot_f32 differs from its reference");
    free(a);
    free(b);
}

/* Non-finite activations: every level quantizes them as the reference. */
static void test_act_nonfinite(void)
{
    const int64_t k = 256;
    float x[256];
    for (int i = 0; i < 256; i++)
        x[i] = rndf();
    x[3] = NAN;
    x[40] = INFINITY;
    x[77] = -INFINITY;
    x[100] = NAN;
    x[101] = 1e30f;
    size_t ab = shoal_act_bytes(SHOAL_TYPE_Q8_0, k, 1);
    uint8_t *a0 = xalloc(ab), *a1 = xalloc(ab);
    shoal_act_prepare_isa(SHOAL_ISA_C, SHOAL_TYPE_Q8_0, x, k, 1, a0);
    for (int lv = SHOAL_ISA_AVX2; lv <= (int)shoal_cpu_level_max(); lv++) {
        memset(a1, 0, ab);
        shoal_act_prepare_isa(lv, SHOAL_TYPE_Q8_0, x, k, 1, a1);
        CHECK_MSG(memcmp(a0, a1, ab) == 0, "%s: non-finite act differs", shoal_cpu_isa_name(lv));
    }
    free(a0);
    free(a1);
}

/* Values at the rounding edges of Q8_0 activation quantization. */
static void test_act_edges(void)
{
    const int64_t k = 4096;
    float *x = xalloc((size_t)k * sizeof(float));
    for (int64_t i = 0; i < k; i++) {
        int blk = (int)(i / 32);
        float amax = (float)(1 + blk % 9) * 0.37f;
        /* many exact halves after scaling: (j + 0.5) * d */
        float d = amax / 127.0f;
        x[i] = (i % 32 == 0) ? amax : ((float)((int)(rnd() % 255) - 127) + 0.5f) * d;
        if (blk % 11 == 0)
            x[i] = 0.0f;
    }
    size_t ab = shoal_act_bytes(SHOAL_TYPE_Q4_0, k, 1);
    uint8_t *a0 = xalloc(ab), *a1 = xalloc(ab);
    shoal_act_prepare_isa(SHOAL_ISA_C, SHOAL_TYPE_Q4_0, x, k, 1, a0);
    uint8_t *want = xalloc(shoal_act_q8_row(k));
    shoal_quantize_row(SHOAL_TYPE_Q8_0, x, want, k);
    CHECK(memcmp(want, a0, shoal_act_q8_row(k)) == 0);
    for (int lv = SHOAL_ISA_AVX2; lv <= (int)shoal_cpu_level_max(); lv++) {
        memset(a1, 0, ab);
        shoal_act_prepare_isa(lv, SHOAL_TYPE_Q4_0, x, k, 1, a1);
        CHECK_MSG(memcmp(a0, a1, ab) == 0, "%s: edge act differs", shoal_cpu_isa_name(lv));
    }
    free(x);
    free(a0);
    free(a1);
    free(want);
}

/* Bad arguments do nothing (and do not crash). */
static void test_bad_args(void)
{
    float w[64] = {0}, x[64] = {0}, y[4] = {1, 2, 3, 4};
    shoal_mat bad_type = {99, 16, 4, w};
    shoal_matmul(&bad_type, x, NULL, 1, y, 4, 0, 4);
    shoal_mat q = {SHOAL_TYPE_Q8_0, 48, 1, w}; /* k not a multiple of 32 */
    shoal_matmul(&q, x, x, 1, y, 4, 0, 1);
    shoal_mat f = {SHOAL_TYPE_F32, 16, 4, w};
    shoal_matmul(&f, x, NULL, 1, y, 4, 2, 9);  /* past n */
    shoal_matmul(&f, x, NULL, 1, y, 4, -1, 2); /* negative */
    shoal_matmul(&f, x, NULL, 0, y, 4, 0, 4);  /* no tokens */
    shoal_mat q2 = {SHOAL_TYPE_Q8_0, 32, 1, w};
    shoal_matmul(&q2, x, NULL, 1, y, 4, 0, 1); /* act missing */
    CHECK(y[0] == 1 && y[1] == 2 && y[2] == 3 && y[3] == 4);
    CHECK(shoal_act_bytes(SHOAL_TYPE_F16, 64, 3) == 0);
    CHECK(shoal_act_bytes(SHOAL_TYPE_Q8_0, 48, 3) == 0);
    CHECK(shoal_act_bytes(SHOAL_TYPE_Q8_0, 64, 0) == 0);
}

/* SHOAL_ISA lowers the level and never raises it (each case in a child
 * process: the level is chosen once per process). */
static void test_isa_override(void)
{
    static const char *names[] = {"c", "avx2", "avx512", "bogus", ""};
    static const int levels[] = {SHOAL_ISA_C, SHOAL_ISA_AVX2, SHOAL_ISA_AVX512, 99, 99};
    for (int i = 0; i < 5; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            setenv("SHOAL_ISA", names[i], 1);
            shoal_cpu_init();
            int max = (int)shoal_cpu_level_max();
            int want = levels[i] < max ? levels[i] : max;
            int ok = (int)shoal_cpu_level() == want &&
                     strcmp(shoal_cpu_isa(), shoal_cpu_isa_name(want)) == 0;
            _exit(ok ? 0 : 1);
        }
        int st = 0;
        CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SHOAL_ISA=%s", names[i]);
    }
}

int main(void)
{
    test_isa_override(); /* before this process chooses its own level */
    shoal_cpu_init();
    printf("cpu: best %s, chosen %s\n", shoal_cpu_isa_name(shoal_cpu_level_max()),
           shoal_cpu_isa());
    CHECK(shoal_cpu_level() <= shoal_cpu_level_max());

    static const int ntoks[] = {1, 2, 3, 5, 7, 16, 33};
    static const int64_t kf[] = {5, 16, 64, 172, 1100, 4096};
    static const int64_t kq[] = {32, 96, 256, 512, 2080, 4096};
    static const int64_t kk[] = {256, 512, 1280, 4096};
    static const int ftypes[] = {SHOAL_TYPE_F32, SHOAL_TYPE_F16, SHOAL_TYPE_BF16};
    static const int qtypes[] = {SHOAL_TYPE_Q8_0, SHOAL_TYPE_Q4_0};
    static const int ktypes[] = {SHOAL_TYPE_Q4_K, SHOAL_TYPE_Q6_K};

    for (int ti = 0; ti < 3; ti++)
        for (int ki = 0; ki < 6; ki++)
            for (int ni = 0; ni < 7; ni++)
                run_case(ftypes[ti], kf[ki], kf[ki] >= 4096 ? 13 : 37, ntoks[ni]);
    for (int ti = 0; ti < 2; ti++)
        for (int ki = 0; ki < 6; ki++)
            for (int ni = 0; ni < 7; ni++)
                run_case(qtypes[ti], kq[ki], kq[ki] >= 4096 ? 13 : 37, ntoks[ni]);
    for (int ti = 0; ti < 2; ti++)
        for (int ki = 0; ki < 4; ki++)
            for (int ni = 0; ni < 7; ni += 2)
                run_case(ktypes[ti], kk[ki], kk[ki] >= 4096 ? 9 : 21, ntoks[ni]);
    /* tall enough for several row tiles and a remainder */
    run_case(SHOAL_TYPE_F16, 64, 203, 9);
    run_case(SHOAL_TYPE_Q4_0, 64, 1031, 6);
    run_case(SHOAL_TYPE_Q8_0, 2048, 71, 5);

    test_negative_zero();
    test_dot();
    test_act_nonfinite();
    test_act_edges();
    test_bad_args();
    return check_done();
}
