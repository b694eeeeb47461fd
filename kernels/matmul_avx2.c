/*
 * AVX2 + FMA + F16C matmul kernels, for CPUs without AVX-512. Compiled with
 * those flags and called only after kernels/cpu.c found them.
 *
 * The 16 canonical lanes of kernels/matmul.h are two ymm registers per
 * (row, token): lanes 0..7 and 8..15. Both halves see their terms in
 * increasing k, so handling one half after the other within a step of 16
 * keeps every lane's order. Tiles are small (16 ymm registers): 3 rows x 2
 * tokens for plain weights in prompts, 4 rows for decode.
 *
 * Q8_0 and Q4_0: per block, |w| (u8) times x with w's sign (s8) through
 * vpmaddubsw and vpmaddwd(1) gives the 8 exact quad sums of the block (the
 * u8 x s8 pair sums stay below 2 * 128 * 127, so vpmaddubsw never
 * saturates: x from shoal_act_prepare never holds -128). A block feeds
 * the half of the lanes the canonical order gives it (8 * (b % 2) + q).
 * These kernels read the Q8_0 rows of the prepared activations, not the
 * AVX-512 extension.
 *
 * Q4_K and Q6_K rows are dequantized a chunk at a time into a stack buffer,
 * with the float operations of shoal_dequantize_row in the same order, and
 * go through the f32 tile.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/matmul.h"
#include "kernels/types.h"

#define INLINE static inline __attribute__((always_inline))

/* Full unrolling of the tile loops (their bounds are constants once
 * inlined), which lets the compiler keep every accumulator in a register. */
#if defined(__clang__)
#define UNROLL _Pragma("clang loop unroll(full)")
#else
#define UNROLL _Pragma("GCC unroll 16")
#endif

enum { KF32, KF16, KBF16 };
enum { QQ8, QQ4 };

/* The canonical tree on the two halves of an accumulator. */
INLINE float hsum16(__m256 lo, __m256 hi)
{
    __m256 a = _mm256_add_ps(lo, hi);
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    __m128 d = _mm_add_ss(c, _mm_movehdup_ps(c));
    return _mm_cvtss_f32(d);
}

/* ---- f32, f16, bf16 weights ---- */

INLINE size_t welem(int wt)
{
    return wt == KF32 ? 4 : 2;
}

/* 8 weights at p, exactly as f32. */
INLINE __m256 ldw(int wt, const uint8_t *p)
{
    if (wt == KF32)
        return _mm256_loadu_ps((const float *)p);
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (wt == KF16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

#define FR 3
#define FT 2
#define FRD 4
#define FKC 1024
#define FRT 64
#define TILE_BYTES (256 * 1024)

/*
 * One R x T tile over `len` elements (see matmul_avx512.c's ftile: the same
 * arguments; scratch accumulator (ri, ti) at (ri * FT + ti) * 16 floats).
 */
INLINE void ftile(const int wt, const int R, const int T, const uint8_t *w, size_t wrs,
                  const float *x, size_t xs, int64_t len, float *acc_s, int first, int last,
                  float *y, size_t ldy)
{
    __m256 acc[FRD][FT][2];
UNROLL
    for (int r = 0; r < R; r++)
UNROLL
        for (int t = 0; t < T; t++)
UNROLL
            for (int h = 0; h < 2; h++)
                acc[r][t][h] = first ? _mm256_setzero_ps()
                                     : _mm256_load_ps(acc_s + (r * FT + t) * 16 + 8 * h);

    const size_t es = welem(wt);
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
UNROLL
        for (int h = 0; h < 2; h++) {
            __m256 wv[FRD];
UNROLL
            for (int r = 0; r < R; r++)
                wv[r] = ldw(wt, w + r * wrs + (size_t)(i + 8 * h) * es);
UNROLL
            for (int t = 0; t < T; t++) {
                __m256 xv = _mm256_loadu_ps(x + t * xs + i + 8 * h);
UNROLL
                for (int r = 0; r < R; r++)
                    acc[r][t][h] = _mm256_fmadd_ps(wv[r], xv, acc[r][t][h]);
            }
        }
    }
    if (i < len) { /* the row's last, partial group: padded copies, lanes masked */
        const int rem = (int)(len - i);
        _Alignas(32) float xb[FT][16];
        _Alignas(32) float wb[FRD][16];
        _Alignas(32) int32_t lm[16];
        for (int l = 0; l < 16; l++)
            lm[l] = l < rem ? -1 : 0;
        for (int r = 0; r < R; r++) {
            const uint8_t *p = w + r * wrs + (size_t)i * es;
            for (int l = 0; l < 16; l++) {
                float v = 0.0f;
                if (l < rem) {
                    uint16_t hv;
                    if (wt == KF32) {
                        memcpy(&v, p + 4 * l, 4);
                    } else {
                        memcpy(&hv, p + 2 * l, 2);
                        v = wt == KF16 ? _cvtsh_ss(hv) : shoal_bf16_to_fp32(hv);
                    }
                }
                wb[r][l] = v;
            }
        }
        for (int t = 0; t < T; t++)
            for (int l = 0; l < 16; l++)
                xb[t][l] = l < rem ? x[t * xs + i + l] : 0.0f;
UNROLL
        for (int h = 0; h < 2; h++) {
            __m256 m = _mm256_castsi256_ps(_mm256_load_si256((const __m256i *)(lm + 8 * h)));
UNROLL
            for (int t = 0; t < T; t++) {
                __m256 xv = _mm256_load_ps(xb[t] + 8 * h);
UNROLL
                for (int r = 0; r < R; r++) {
                    __m256 f = _mm256_fmadd_ps(_mm256_load_ps(wb[r] + 8 * h), xv, acc[r][t][h]);
                    acc[r][t][h] = _mm256_blendv_ps(acc[r][t][h], f, m);
                }
            }
        }
    }

UNROLL
    for (int r = 0; r < R; r++)
UNROLL
        for (int t = 0; t < T; t++) {
            if (last) {
                y[t * ldy + r] = hsum16(acc[r][t][0], acc[r][t][1]);
            } else {
                _mm256_store_ps(acc_s + (r * FT + t) * 16, acc[r][t][0]);
                _mm256_store_ps(acc_s + (r * FT + t) * 16 + 8, acc[r][t][1]);
            }
        }
}

INLINE void ftile_any(const int wt, const int R, int tt, const uint8_t *w, size_t wrs,
                      const float *x, size_t xs, int64_t len, float *acc_s, int first,
                      int last, float *y, size_t ldy)
{
    switch (tt) {
    case 1: ftile(wt, R, 1, w, wrs, x, xs, len, acc_s, first, last, y, ldy); break;
    case 2: ftile(wt, R, 2, w, wrs, x, xs, len, acc_s, first, last, y, ldy); break;
    default: ftile(wt, R, FT, w, wrs, x, xs, len, acc_s, first, last, y, ldy); break;
    }
}

static int64_t tile_rows(size_t row_bytes, int64_t mult)
{
    int64_t n = (int64_t)(TILE_BYTES / (row_bytes ? row_bytes : 1));
    if (n > FRT)
        n = FRT;
    n -= n % mult;
    return n < mult ? mult : n;
}

INLINE void fmat(const int wt, const shoal_mat *w, const float *x, int ntok, float *y,
                 size_t ldy, int64_t r0, int64_t r1)
{
    const uint8_t *W = w->data;
    const int64_t k = w->k;
    const size_t es = welem(wt), rb = es * (size_t)k;
    if (ntok == 1) {
        int64_t r = r0;
        for (; r + FRD <= r1; r += FRD)
            ftile(wt, FRD, 1, W + (size_t)r * rb, rb, x, 0, k, NULL, 1, 1, y + r, 0);
        for (; r < r1; r++)
            ftile(wt, 1, 1, W + (size_t)r * rb, rb, x, 0, k, NULL, 1, 1, y + r, 0);
        return;
    }
    _Alignas(32) float scratch[FRT * FT * 16];
    const int64_t rt_rows = tile_rows(rb, FR);
    for (int64_t rt = r0; rt < r1; rt += rt_rows) {
        int64_t rte = rt + rt_rows < r1 ? rt + rt_rows : r1;
        for (int t0 = 0; t0 < ntok; t0 += FT) {
            int tt = ntok - t0 < FT ? ntok - t0 : FT;
            const float *xt = x + (size_t)t0 * (size_t)k;
            float *yt = y + (size_t)t0 * ldy;
            for (int64_t kc = 0; kc < k; kc += FKC) {
                int64_t len = k - kc < FKC ? k - kc : FKC;
                int first = kc == 0, last = kc + len == k;
                int64_t r = rt;
                for (; r + FR <= rte; r += FR)
                    ftile_any(wt, FR, tt, W + (size_t)r * rb + (size_t)kc * es, rb, xt + kc,
                              (size_t)k, len, scratch + (r - rt) * FT * 16, first, last, yt + r,
                              ldy);
                for (; r < rte; r++)
                    ftile_any(wt, 1, tt, W + (size_t)r * rb + (size_t)kc * es, rb, xt + kc,
                              (size_t)k, len, scratch + (r - rt) * FT * 16, first, last, yt + r,
                              ldy);
            }
        }
    }
}

/* ---- Q4_K, Q6_K ---- */

/* One q4_K super-block to 256 floats (32-aligned) with dequantize_q4_K's
 * operations: (d * sc) * q - (dmin * m), each rounded in that order. The
 * 6-bit scales and mins are unpacked with ggml's word masks. */
static void deq_q4k(const shoal_block_q4_K *b, float *y)
{
    uint32_t u[4];
    memcpy(u, b->scales, 12);
    u[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    const uint32_t aux = u[1] & 0x3f3f3f3fu;
    u[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    u[2] = aux;
    u[0] &= 0x3f3f3f3fu;
    __m128i scm = _mm_loadu_si128((const __m128i *)u);
    _Alignas(32) float sc[16]; /* d * sc[j], then dmin * m[j] */
    _mm256_store_ps(sc, _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(b->d)),
                                      _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(scm))));
    _mm256_store_ps(sc + 8, _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(b->dmin)),
                                          _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                                              _mm_srli_si128(scm, 8)))));
    const __m256i m4 = _mm256_set1_epi32(15);
    for (int j = 0; j < 4; j++) {
        const __m256 d1 = _mm256_set1_ps(sc[2 * j]), n1 = _mm256_set1_ps(sc[8 + 2 * j]);
        const __m256 d2 = _mm256_set1_ps(sc[2 * j + 1]), n2 = _mm256_set1_ps(sc[9 + 2 * j]);
        for (int i = 0; i < 4; i++) {
            __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + 32 * j + 8 * i)));
            __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(v, m4));
            __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
            _mm256_store_ps(y + 64 * j + 8 * i, _mm256_sub_ps(_mm256_mul_ps(d1, lo), n1));
            _mm256_store_ps(y + 64 * j + 32 + 8 * i, _mm256_sub_ps(_mm256_mul_ps(d2, hi), n2));
        }
    }
}

/* One q6_K super-block to 256 floats (32-aligned) with dequantize_q6_K's
 * operations: (d * sc) * (q - 32), each rounded in that order. */
static void deq_q6k(const shoal_block_q6_K *b, float *y)
{
    const uint8_t *ql = b->ql, *qh = b->qh;
    const float d = _cvtsh_ss(b->d);
    _Alignas(32) float sc[16]; /* d * sc[j] */
    __m128i s8 = _mm_loadu_si128((const __m128i *)b->scales);
    _mm256_store_ps(sc, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s8))));
    _mm256_store_ps(sc + 8, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(
                                              _mm256_cvtepi8_epi32(_mm_srli_si128(s8, 8)))));
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    const __m256i c32 = _mm256_set1_epi8(32);
    for (int h = 0; h < 2; h++) {
        __m256i l0 = _mm256_loadu_si256((const __m256i *)(ql + 64 * h));
        __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 64 * h + 32));
        __m256i hb = _mm256_loadu_si256((const __m256i *)(qh + 32 * h));
        __m256i g[4];
        g[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                               _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
        g[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4));
        g[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4));
        g[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4));
        for (int gi = 0; gi < 4; gi++) {
            _Alignas(32) int8_t q[32];
            _mm256_store_si256((__m256i *)q, _mm256_sub_epi8(g[gi], c32));
            for (int e = 0; e < 4; e++) { /* 8 elements; scale of their 16 */
                __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8 * e))));
                __m256 ds = _mm256_set1_ps(sc[8 * h + 2 * gi + e / 2]);
                _mm256_store_ps(y + 128 * h + 32 * gi + 8 * e, _mm256_mul_ps(ds, v));
            }
        }
    }
}

/* len elements (a multiple of 256) of a k-quant row into y (32-aligned). */
static void deq_kquant(int type, const uint8_t *row, float *y, int64_t len)
{
    for (int64_t i = 0; i < len / SHOAL_QK_K; i++) {
        if (type == SHOAL_TYPE_Q4_K)
            deq_q4k((const shoal_block_q4_K *)row + i, y + i * SHOAL_QK_K);
        else
            deq_q6k((const shoal_block_q6_K *)row + i, y + i * SHOAL_QK_K);
    }
}

#define KKC 1024
#define KTG 48 /* a multiple of FT */

static void kmat(const shoal_mat *w, const float *x, int ntok, float *y, size_t ldy,
                 int64_t r0, int64_t r1)
{
    const uint8_t *W = w->data;
    const int64_t k = w->k;
    const size_t rb = shoal_type_row_bytes(w->type, k);
    const size_t bb = shoal_type_info(w->type)->block_bytes;
    _Alignas(32) float buf[FR * KKC];
    _Alignas(32) float scratch[(KTG / FT) * FR * FT * 16];
    for (int64_t r = r0; r < r1; r += FR) {
        int rr = r1 - r < FR ? (int)(r1 - r) : FR;
        for (int tg = 0; tg < ntok; tg += KTG) {
            int tge = ntok - tg < KTG ? ntok : tg + KTG;
            for (int64_t kc = 0; kc < k; kc += KKC) {
                int64_t len = k - kc < KKC ? k - kc : KKC;
                int first = kc == 0, last = kc + len == k;
                for (int ri = 0; ri < rr; ri++)
                    deq_kquant(w->type, W + (size_t)(r + ri) * rb + (size_t)(kc / SHOAL_QK_K) * bb,
                               buf + ri * KKC, len);
                for (int t0 = tg; t0 < tge; t0 += FT) {
                    int tt = tge - t0 < FT ? tge - t0 : FT;
                    const float *xt = x + (size_t)t0 * (size_t)k + kc;
                    float *yt = y + (size_t)t0 * ldy + r;
                    float *sc = scratch + ((t0 - tg) / FT) * FR * FT * 16;
                    if (rr == FR) {
                        ftile_any(KF32, FR, tt, (const uint8_t *)buf, KKC * sizeof(float), xt,
                                  (size_t)k, len, sc, first, last, yt, ldy);
                    } else {
                        for (int ri = 0; ri < rr; ri++)
                            ftile_any(KF32, 1, tt, (const uint8_t *)(buf + ri * KKC),
                                      KKC * sizeof(float), xt, (size_t)k, len,
                                      sc + ri * FT * 16, first, last, yt + ri, ldy);
                    }
                }
            }
        }
    }
}

/* ---- Q8_0, Q4_0 ---- */

#define QR 2
#define QT 2
#define QRD 4
#define QPF 32 /* decode: blocks to prefetch ahead */

/* Prefetches base + off, which may lie past the weights (a prefetch never
 * faults); the address is formed as an integer, not a pointer past the end. */
#define prefetch(base, off, hint) \
    _mm_prefetch((const char *)((uintptr_t)(base) + (off)), hint)

/* A block's 32 weights as s8, in element order. */
INLINE __m256i qload(const int qt, const uint8_t *blk)
{
    if (qt == QQ8)
        return _mm256_loadu_si256((const __m256i *)(blk + 2));
    __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2));
    __m128i m = _mm_set1_epi8(0x0F);
    __m256i n = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
    return _mm256_sub_epi8(n, _mm256_set1_epi8(8));
}

INLINE float half_at(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof(h));
    return _cvtsh_ss(h);
}

/* One R x T tile over all nb blocks of the rows (no k chunks: the Q8_0
 * activations of a few tokens are small). w: row 0, rows wrs bytes apart;
 * xq: token 0's Q8_0 row, tokens xrs bytes apart. */
INLINE void qtile(const int qt, const int R, const int T, const uint8_t *w, size_t wrs,
                  const uint8_t *xq, size_t xrs, int64_t nb, float *y, size_t ldy)
{
    const size_t bb = qt == QQ8 ? sizeof(shoal_block_q8_0) : sizeof(shoal_block_q4_0);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[QRD][QT][2];
UNROLL
    for (int r = 0; r < R; r++)
UNROLL
        for (int t = 0; t < T; t++)
            acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();

    for (int64_t b = 0; b < nb; b++) {
        const int h = (int)(b & 1);
        __m256i wa[QRD], wsg[QRD];
        float dw[QRD];
        if (T == 1) /* decode: this row ahead, the next row block here */
UNROLL
            for (int r = 0; r < R; r++) {
                prefetch(w, (r + R) * wrs + (size_t)b * bb, _MM_HINT_T1);
                prefetch(w, r * wrs + (size_t)(b + QPF) * bb, _MM_HINT_T0);
            }
UNROLL
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * wrs + (size_t)b * bb;
            wsg[r] = qload(qt, blk);
            wa[r] = _mm256_abs_epi8(wsg[r]);
            dw[r] = half_at(blk);
        }
UNROLL
        for (int t = 0; t < T; t++) {
            const uint8_t *xb = xq + t * xrs + (size_t)b * sizeof(shoal_block_q8_0);
            __m256i xv = _mm256_loadu_si256((const __m256i *)(xb + 2));
            float dx = half_at(xb);
UNROLL
            for (int r = 0; r < R; r++) {
                __m256i p = _mm256_maddubs_epi16(wa[r], _mm256_sign_epi8(xv, wsg[r]));
                __m256 s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                __m256 d = _mm256_set1_ps(dw[r] * dx);
                if (h)
                    acc[r][t][1] = _mm256_fmadd_ps(s, d, acc[r][t][1]);
                else
                    acc[r][t][0] = _mm256_fmadd_ps(s, d, acc[r][t][0]);
            }
        }
    }
UNROLL
    for (int r = 0; r < R; r++)
UNROLL
        for (int t = 0; t < T; t++)
            y[t * ldy + r] = hsum16(acc[r][t][0], acc[r][t][1]);
}

INLINE void qmat(const int qt, const shoal_mat *w, const void *act, int ntok, float *y,
                 size_t ldy, int64_t r0, int64_t r1)
{
    const uint8_t *W = w->data;
    const int64_t k = w->k, nb = k / 32;
    const size_t bb = qt == QQ8 ? sizeof(shoal_block_q8_0) : sizeof(shoal_block_q4_0);
    const size_t rb = (size_t)nb * bb;
    const uint8_t *xq = act;
    const size_t xrs = shoal_act_q8_row(k);
    if (ntok == 1) {
        int64_t r = r0;
        for (; r + QRD <= r1; r += QRD)
            qtile(qt, QRD, 1, W + (size_t)r * rb, rb, xq, 0, nb, y + r, 0);
        for (; r < r1; r++)
            qtile(qt, 1, 1, W + (size_t)r * rb, rb, xq, 0, nb, y + r, 0);
        return;
    }
    const int64_t rt_rows = tile_rows(rb, QR);
    for (int64_t rt = r0; rt < r1; rt += rt_rows) {
        int64_t rte = rt + rt_rows < r1 ? rt + rt_rows : r1;
        for (int t0 = 0; t0 < ntok; t0 += QT) {
            const uint8_t *xt = xq + (size_t)t0 * xrs;
            float *yt = y + (size_t)t0 * ldy;
            int64_t r = rt;
            if (ntok - t0 >= QT) {
                for (; r + QR <= rte; r += QR)
                    qtile(qt, QR, QT, W + (size_t)r * rb, rb, xt, xrs, nb, yt + r, ldy);
                for (; r < rte; r++)
                    qtile(qt, 1, QT, W + (size_t)r * rb, rb, xt, xrs, nb, yt + r, ldy);
            } else {
                for (; r + QR <= rte; r += QR)
                    qtile(qt, QR, 1, W + (size_t)r * rb, rb, xt, xrs, nb, yt + r, ldy);
                for (; r < rte; r++)
                    qtile(qt, 1, 1, W + (size_t)r * rb, rb, xt, xrs, nb, yt + r, ldy);
            }
        }
    }
}

void shoal_matmul_avx2(const shoal_mat *w, const float *x, const void *act, int ntok,
                       float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    switch (w->type) {
    case SHOAL_TYPE_F32: fmat(KF32, w, x, ntok, y, (size_t)ldy, r0, r1); break;
    case SHOAL_TYPE_F16: fmat(KF16, w, x, ntok, y, (size_t)ldy, r0, r1); break;
    case SHOAL_TYPE_BF16: fmat(KBF16, w, x, ntok, y, (size_t)ldy, r0, r1); break;
    case SHOAL_TYPE_Q8_0: qmat(QQ8, w, act, ntok, y, (size_t)ldy, r0, r1); break;
    case SHOAL_TYPE_Q4_0: qmat(QQ4, w, act, ntok, y, (size_t)ldy, r0, r1); break;
    case SHOAL_TYPE_Q4_K:
    case SHOAL_TYPE_Q6_K: kmat(w, x, ntok, y, (size_t)ldy, r0, r1); break;
    default: break;
    }
}

float shoal_dot_f32_avx2(const float *a, const float *b, int64_t n)
{
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), hi);
    }
    if (i < n) {
        _Alignas(32) float acc[16];
        _mm256_store_ps(acc, lo);
        _mm256_store_ps(acc + 8, hi);
        for (int l = 0; i + l < n; l++)
            acc[l] = __builtin_fmaf(a[i + l], b[i + l], acc[l]);
        lo = _mm256_load_ps(acc);
        hi = _mm256_load_ps(acc + 8);
    }
    return hsum16(lo, hi);
}
