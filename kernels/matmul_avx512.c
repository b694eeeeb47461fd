/*
 * AVX-512 matmul kernels (F, BW, VL, DQ, VNNI). Compiled with those flags
 * and called only after kernels/cpu.c found them.
 *
 * Every (row, token) output owns one zmm accumulator whose 16 lanes are the
 * 16 canonical lanes of kernels/matmul.h, so a register-blocked tile of R
 * rows x T tokens computes R*T outputs with exactly the reference's
 * operations: lane l of a row's accumulator sees its terms in increasing k
 * whatever R, T, the row range or the chunking. The tile reloads each
 * weight vector once for T tokens and each activation vector once for R
 * rows.
 *
 * Prompts (more tokens than one tile holds) walk a row tile of about
 * 256 KiB of weights (kept in L2 while every token passes over it), token
 * blocks of T, and k chunks small enough that a token block's activations
 * stay in L1; the partial 16-lane accumulators of a tile wait in a stack
 * scratch between chunks, which changes nothing in any lane's order. Decode
 * (one token) and small batches stream each row once, whole; decode runs
 * more rows per tile to hide FMA latency. Quantized rows are short (a
 * 4096-wide Q4_0 row is 2.3 KB), so streaming kernels prefetch both ahead
 * in the row and the next row block at the same offset: without the latter
 * every row block starts cold, and decode loses about a third of its speed.
 *
 * Q8_0 and Q4_0 weights: a zmm holds a pair of blocks (64 weights), and
 * vpdpbusd(x + 128 as u8, w as s8) gives per dword the quad sum plus
 * 128 * (sum of the quad's weights); the correction is computed once per row
 * and pair and put in the accumulator register vpdpbusd starts from, so each
 * dword is exactly the canonical integer s of lane 8*(b%2)+q. The
 * activations' u8 bytes and f32 block scales come ready in the extension
 * that shoal_act_prepare writes. Blocks are picked out of the 34- and
 * 18-byte ggml blocks with vpermw, whose word granularity fits both.
 *
 * Q4_K and Q6_K weights are dequantized with the same float operations in
 * the same order as shoal_dequantize_row (so into the values the reference
 * sees): for prompts a chunk at a time into a stack buffer that the f32
 * tile reads, for decode straight into registers feeding the FMAs.
 */
#include <immintrin.h>
#include <math.h>
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

/* The canonical tree on one accumulator: lanes l + 8, then l + 4, 2, 1. */
INLINE float hsum16(__m512 v)
{
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    __m128 d = _mm_add_ss(c, _mm_movehdup_ps(c));
    return _mm_cvtss_f32(d);
}

/* Prefetches base + off, which may lie past the weights (a prefetch never
 * faults); the address is formed as an integer, not a pointer past the end. */
#define prefetch(base, off, hint) \
    _mm_prefetch((const char *)((uintptr_t)(base) + (off)), hint)

/* ---- f32, f16, bf16 weights ---- */

INLINE size_t welem(int wt)
{
    return wt == KF32 ? 4 : 2;
}

/* 16 weights at p, exactly as f32. */
INLINE __m512 ldw(int wt, const uint8_t *p)
{
    if (wt == KF32)
        return _mm512_loadu_ps(p);
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    if (wt == KF16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE __m512 ldw_mask(int wt, const uint8_t *p, __mmask16 m)
{
    if (wt == KF32)
        return _mm512_maskz_loadu_ps(m, p);
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    if (wt == KF16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

#define FR 4      /* rows per prompt tile */
#define FT 6      /* tokens per prompt tile */
#define FRD 8     /* rows per decode tile */
#define FKC 1024  /* k chunk (multiple of 16) */
#define FRT 64    /* most rows per row tile */
#define TILE_BYTES (256 * 1024)

/*
 * One R x T tile over `len` elements of k.
 * w: row 0's weights at the chunk start, rows wrs bytes apart.
 * x: token 0's activations at the chunk start, tokens xs floats apart.
 * acc_s: the tile's scratch, accumulator (ri, ti) at (ri * FT + ti) * 16;
 *   read unless first, written unless last.
 * y: output of row 0, token 0; tokens ldy apart. Written when last.
 */
INLINE void ftile(const int wt, const int R, const int T, const uint8_t *w, size_t wrs,
                  const float *x, size_t xs, int64_t len, float *acc_s, int first, int last,
                  float *y, size_t ldy)
{
    __m512 acc[FRD][FT];
UNROLL
    for (int r = 0; r < R; r++)
UNROLL
        for (int t = 0; t < T; t++)
            acc[r][t] = first ? _mm512_setzero_ps() : _mm512_load_ps(acc_s + (r * FT + t) * 16);

    const size_t es = welem(wt);
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
        __m512 wv[FRD];
UNROLL
        for (int r = 0; r < R; r++)
            wv[r] = ldw(wt, w + r * wrs + (size_t)i * es);
UNROLL
        for (int t = 0; t < T; t++) {
            __m512 xv = _mm512_loadu_ps(x + t * xs + i);
UNROLL
            for (int r = 0; r < R; r++)
                acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    if (i < len) { /* the row's last, partial group of 16: other lanes keep */
        __mmask16 m = (__mmask16)((1u << (len - i)) - 1);
        __m512 wv[FRD];
UNROLL
        for (int r = 0; r < R; r++)
            wv[r] = ldw_mask(wt, w + r * wrs + (size_t)i * es, m);
UNROLL
        for (int t = 0; t < T; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + t * xs + i);
UNROLL
            for (int r = 0; r < R; r++)
                acc[r][t] = _mm512_mask3_fmadd_ps(wv[r], xv, acc[r][t], m);
        }
    }

UNROLL
    for (int r = 0; r < R; r++)
UNROLL
        for (int t = 0; t < T; t++) {
            if (last)
                y[t * ldy + r] = hsum16(acc[r][t]);
            else
                _mm512_store_ps(acc_s + (r * FT + t) * 16, acc[r][t]);
        }
}

/* A tile of R = FR or 1 rows and 1 <= tt <= FT tokens. */
INLINE void ftile_any(const int wt, const int R, int tt, const uint8_t *w, size_t wrs,
                      const float *x, size_t xs, int64_t len, float *acc_s, int first,
                      int last, float *y, size_t ldy)
{
    switch (tt) {
    case 1: ftile(wt, R, 1, w, wrs, x, xs, len, acc_s, first, last, y, ldy); break;
    case 2: ftile(wt, R, 2, w, wrs, x, xs, len, acc_s, first, last, y, ldy); break;
    case 3: ftile(wt, R, 3, w, wrs, x, xs, len, acc_s, first, last, y, ldy); break;
    case 4: ftile(wt, R, 4, w, wrs, x, xs, len, acc_s, first, last, y, ldy); break;
    case 5: ftile(wt, R, 5, w, wrs, x, xs, len, acc_s, first, last, y, ldy); break;
    default: ftile(wt, R, FT, w, wrs, x, xs, len, acc_s, first, last, y, ldy); break;
    }
}

/* Rows per row tile: about TILE_BYTES of weights, a multiple of mult. */
static int64_t tile_rows(size_t row_bytes, int64_t mult)
{
    int64_t n = (int64_t)(TILE_BYTES / (row_bytes ? row_bytes : 1));
    if (n > FRT)
        n = FRT;
    n -= n % mult;
    return n < mult ? mult : n;
}

static void f_decode(const int wt, const uint8_t *W, size_t rb, const float *x, int64_t k,
                     float *y, int64_t r0, int64_t r1)
{
    int64_t r = r0;
    for (; r + FRD <= r1; r += FRD)
        ftile(wt, FRD, 1, W + (size_t)r * rb, rb, x, 0, k, NULL, 1, 1, y + r, 0);
    for (; r < r1; r++)
        ftile(wt, 1, 1, W + (size_t)r * rb, rb, x, 0, k, NULL, 1, 1, y + r, 0);
}

INLINE void fmat(const int wt, const shoal_mat *w, const float *x, int ntok, float *y,
                 size_t ldy, int64_t r0, int64_t r1)
{
    const uint8_t *W = w->data;
    const int64_t k = w->k;
    const size_t es = welem(wt), rb = es * (size_t)k;
    if (ntok == 1) {
        f_decode(wt, W, rb, x, k, y, r0, r1);
        return;
    }
    if (ntok <= FT) { /* a few tokens: stream the rows once, whole */
        int64_t r = r0;
        for (; r + FR <= r1; r += FR)
            ftile_any(wt, FR, ntok, W + (size_t)r * rb, rb, x, (size_t)k, k, NULL, 1, 1, y + r, ldy);
        for (; r < r1; r++)
            ftile_any(wt, 1, ntok, W + (size_t)r * rb, rb, x, (size_t)k, k, NULL, 1, 1, y + r, ldy);
        return;
    }
    _Alignas(64) float scratch[FRT * FT * 16];
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

/* ---- Q4_K, Q6_K: dequantized chunks through the f32 tile ---- */

/* A q4_K block's 16 scales as f32: lanes 0..7 d * sc[j], 8..15 dmin * m[j]
 * (the products dequantize_q4_K forms). The 6-bit fields are unpacked with
 * ggml's word masks. */
INLINE __m512 q4k_scales(const shoal_block_q4_K *b)
{
    uint32_t u[4];
    memcpy(u, b->scales, 12);
    u[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    const uint32_t aux = u[1] & 0x3f3f3f3fu;
    u[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    u[2] = aux;
    u[0] &= 0x3f3f3f3fu;
    __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)u)));
    __m512 dd = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(_cvtsh_ss(b->d)),
                                     _mm512_set1_ps(_cvtsh_ss(b->dmin)));
    return _mm512_mul_ps(dd, f);
}

/* Elements 64j .. 64j+63 of a q4_K block as 4 vectors, with
 * dequantize_q4_K's operations: (d * sc) * q - (dmin * m). */
INLINE void q4k_vecs(const shoal_block_q4_K *b, const float *sc, int j, __m512 out[4])
{
    __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + 32 * j)));
    __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + 32 * j + 16)));
    const __m512i m4 = _mm512_set1_epi32(15);
    __m512 d1 = _mm512_set1_ps(sc[2 * j]), n1 = _mm512_set1_ps(sc[8 + 2 * j]);
    __m512 d2 = _mm512_set1_ps(sc[2 * j + 1]), n2 = _mm512_set1_ps(sc[9 + 2 * j]);
    out[0] = _mm512_sub_ps(_mm512_mul_ps(d1, _mm512_cvtepi32_ps(_mm512_and_si512(v0, m4))), n1);
    out[1] = _mm512_sub_ps(_mm512_mul_ps(d1, _mm512_cvtepi32_ps(_mm512_and_si512(v1, m4))), n1);
    out[2] = _mm512_sub_ps(_mm512_mul_ps(d2, _mm512_cvtepi32_ps(_mm512_srli_epi32(v0, 4))), n2);
    out[3] = _mm512_sub_ps(_mm512_mul_ps(d2, _mm512_cvtepi32_ps(_mm512_srli_epi32(v1, 4))), n2);
}

/* A q6_K block's 16 products d * sc[j]. */
INLINE __m512 q6k_scales(const shoal_block_q6_K *b)
{
    __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->scales)));
    return _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(b->d)), f);
}

/* Elements 128h .. 128h+127 of a q6_K block as 8 vectors, with
 * dequantize_q6_K's operations: (d * sc) * (q - 32). */
INLINE void q6k_vecs(const shoal_block_q6_K *b, const float *sc, int h, __m512 out[8])
{
    __m512i L = _mm512_loadu_si512(b->ql + 64 * h);
    __m512i H = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3), c32 = _mm512_set1_epi8(32);
    /* qh bits 0-1 and 2-3 for groups 0 and 1, 4-5 and 6-7 for groups 2 and 3 */
    const __m512i s01 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i s23 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    __m512i h01 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(H, s01), m3), 4);
    __m512i h23 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(H, s23), m3), 4);
    __m512i g01 = _mm512_sub_epi8(_mm512_or_si512(_mm512_and_si512(L, m4), h01), c32);
    __m512i g23 = _mm512_sub_epi8(
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4), h23), c32);
#define Q6V(v, g, lane)                                                                   \
    out[v] = _mm512_mul_ps(_mm512_set1_ps(sc[8 * h + (v)]),                                \
                           _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(                       \
                               _mm512_extracti32x4_epi32(g, lane))))
    Q6V(0, g01, 0);
    Q6V(1, g01, 1);
    Q6V(2, g01, 2);
    Q6V(3, g01, 3);
    Q6V(4, g23, 0);
    Q6V(5, g23, 1);
    Q6V(6, g23, 2);
    Q6V(7, g23, 3);
#undef Q6V
}

/* One super-block to 256 floats (64-aligned). */
static void deq_q4k(const shoal_block_q4_K *b, float *y)
{
    _Alignas(64) float sc[16];
    _mm512_store_ps(sc, q4k_scales(b));
    for (int j = 0; j < 4; j++) {
        __m512 v[4];
        q4k_vecs(b, sc, j, v);
        for (int i = 0; i < 4; i++)
            _mm512_store_ps(y + 64 * j + 16 * i, v[i]);
    }
}

static void deq_q6k(const shoal_block_q6_K *b, float *y)
{
    _Alignas(64) float sc[16];
    _mm512_store_ps(sc, q6k_scales(b));
    for (int h = 0; h < 2; h++) {
        __m512 v[8];
        q6k_vecs(b, sc, h, v);
        for (int i = 0; i < 8; i++)
            _mm512_store_ps(y + 128 * h + 16 * i, v[i]);
    }
}

#define KRD 4 /* rows per k-quant decode tile */
#define KPF 4 /* blocks ahead to prefetch */

/* Decode (one token) straight from the blocks: R rows interleaved, each
 * vector of 16 dequantized weights FMA'd in increasing k. */
INLINE void kdecode_tile(const int type, const int R, const uint8_t *w, size_t rb,
                         const float *x, int64_t nsb, float *y)
{
    __m512 acc[KRD];
UNROLL
    for (int r = 0; r < R; r++)
        acc[r] = _mm512_setzero_ps();
    const size_t bb = type == SHOAL_TYPE_Q4_K ? sizeof(shoal_block_q4_K) : sizeof(shoal_block_q6_K);
    for (int64_t sb = 0; sb < nsb; sb++) {
        const float *xs = x + sb * SHOAL_QK_K;
UNROLL
        for (int r = 0; r < R; r++) { /* this row ahead, the next row block here */
UNROLL
            for (size_t o = 0; o < bb; o += 64) {
                prefetch(w, (r + R) * rb + (size_t)sb * bb + o, _MM_HINT_T1);
                prefetch(w, r * rb + (size_t)(sb + KPF) * bb + o, _MM_HINT_T0);
            }
        }
        if (type == SHOAL_TYPE_Q4_K) {
            _Alignas(64) float sc[KRD][16];
            const shoal_block_q4_K *b[KRD];
UNROLL
            for (int r = 0; r < R; r++) {
                b[r] = (const shoal_block_q4_K *)(w + r * rb) + sb;
                _mm512_store_ps(sc[r], q4k_scales(b[r]));
            }
UNROLL
            for (int j = 0; j < 4; j++) {
UNROLL
                for (int r = 0; r < R; r++) {
                    __m512 v[4];
                    q4k_vecs(b[r], sc[r], j, v);
UNROLL
                    for (int i = 0; i < 4; i++)
                        acc[r] = _mm512_fmadd_ps(v[i], _mm512_loadu_ps(xs + 64 * j + 16 * i), acc[r]);
                }
            }
        } else {
            _Alignas(64) float sc[KRD][16];
            const shoal_block_q6_K *b[KRD];
UNROLL
            for (int r = 0; r < R; r++) {
                b[r] = (const shoal_block_q6_K *)(w + r * rb) + sb;
                _mm512_store_ps(sc[r], q6k_scales(b[r]));
            }
UNROLL
            for (int h = 0; h < 2; h++) {
UNROLL
                for (int r = 0; r < R; r++) {
                    __m512 v[8];
                    q6k_vecs(b[r], sc[r], h, v);
UNROLL
                    for (int i = 0; i < 8; i++)
                        acc[r] = _mm512_fmadd_ps(v[i], _mm512_loadu_ps(xs + 128 * h + 16 * i), acc[r]);
                }
            }
        }
    }
UNROLL
    for (int r = 0; r < R; r++)
        y[r] = hsum16(acc[r]);
}

INLINE void kdecode(const int type, const shoal_mat *w, const float *x, float *y, int64_t r0,
                    int64_t r1)
{
    const uint8_t *W = w->data;
    const size_t rb = shoal_type_row_bytes(w->type, w->k);
    const int64_t nsb = w->k / SHOAL_QK_K;
    int64_t r = r0;
    for (; r + KRD <= r1; r += KRD)
        kdecode_tile(type, KRD, W + (size_t)r * rb, rb, x, nsb, y + r);
    for (; r < r1; r++)
        kdecode_tile(type, 1, W + (size_t)r * rb, rb, x, nsb, y + r);
}

/* len elements (a multiple of 256) of a k-quant row into y (64-aligned). */
static void deq_kquant(int type, const uint8_t *row, float *y, int64_t len)
{
    for (int64_t i = 0; i < len / SHOAL_QK_K; i++) {
        if (type == SHOAL_TYPE_Q4_K)
            deq_q4k((const shoal_block_q4_K *)row + i, y + i * SHOAL_QK_K);
        else
            deq_q6k((const shoal_block_q6_K *)row + i, y + i * SHOAL_QK_K);
    }
}

#define KKC 1024 /* k chunk, a multiple of 256 */
#define KTG 96   /* tokens per group (a multiple of FT) */

static void kmat(const shoal_mat *w, const float *x, int ntok, float *y, size_t ldy,
                 int64_t r0, int64_t r1)
{
    const uint8_t *W = w->data;
    const int64_t k = w->k;
    const size_t rb = shoal_type_row_bytes(w->type, k);
    const size_t bb = shoal_type_info(w->type)->block_bytes;
    if (ntok == 1) {
        if (w->type == SHOAL_TYPE_Q4_K)
            kdecode(SHOAL_TYPE_Q4_K, w, x, y, r0, r1);
        else
            kdecode(SHOAL_TYPE_Q6_K, w, x, y, r0, r1);
        return;
    }
    _Alignas(64) float buf[FR * KKC];
    _Alignas(64) float scratch[(KTG / FT) * FR * FT * 16];
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

/* ---- Q8_0, Q4_0 weights ---- */

#define QR 4      /* rows per prompt tile */
#define QT 4      /* tokens per prompt tile */
#define QRD 8     /* rows per decode tile, at most (Q8_0: 8, Q4_0: 6) */
#define QKC 32    /* pairs of blocks per k chunk */
#define QPF 16    /* decode: pairs of blocks to prefetch ahead */

/* One row's pair of blocks at blk: w as s8 (64 weights), the correction
 * -128 * (sum of each quad's weights), and the 16 block scales as f32.
 * half: only the first block exists (its lanes 8..15 are then unused). */
INLINE void qprep(const int qt, const uint8_t *blk, int half, __m512i *wq, __m512i *corr,
                  __m512 *ws)
{
    if (qt == QQ8) {
        /* words: 0 d0, 1..16 qs0, 17 d1, 18..33 qs1 */
        const __m512i qidx = _mm512_set_epi16(
            63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48,
            16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
        const __m512i sidx = _mm512_set_epi16(
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            17, 17, 17, 17, 17, 17, 17, 17, 0, 0, 0, 0, 0, 0, 0, 0);
        __m512i z0, z1;
        if (!half) {
            z0 = _mm512_loadu_si512(blk);
            z1 = _mm512_loadu_si512(blk + 4);
        } else {
            z0 = _mm512_maskz_loadu_epi16(0x1FFFF, blk);
            z1 = _mm512_setzero_si512();
        }
        __m512i q = _mm512_permutex2var_epi16(z0, qidx, z1);
        __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)128), q);
        *wq = q;
        *corr = _mm512_sub_epi32(_mm512_setzero_si512(), s);
        *ws = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(sidx, z0)));
    } else {
        /* words: 0 d0, 1..8 qs0, 9 d1, 10..17 qs1; lanes: lo0 hi0 lo1 hi1 */
        const __m512i qidx = _mm512_set_epi16(
            17, 16, 15, 14, 13, 12, 11, 10, 17, 16, 15, 14, 13, 12, 11, 10,
            8, 7, 6, 5, 4, 3, 2, 1, 8, 7, 6, 5, 4, 3, 2, 1);
        const __m512i sidx = _mm512_set_epi16(
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0);
        __m512i z = _mm512_maskz_loadu_epi16(half ? 0x1FF : 0x3FFFF, blk);
        __m512i p = _mm512_permutexvar_epi16(qidx, z);
        p = _mm512_mask_srli_epi16(p, 0xFF00FF00u, p, 4);
        __m512i n = _mm512_and_si512(p, _mm512_set1_epi8(0x0F));
        /* -128 * sum(n - 8) = 4096 - 128 * sum(n), with n on the u8 side */
        *corr = _mm512_dpbusd_epi32(_mm512_set1_epi32(4096), n, _mm512_set1_epi8(-128));
        *wq = _mm512_sub_epi8(n, _mm512_set1_epi8(8));
        *ws = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(sidx, z)));
    }
}

/*
 * One R x T tile over np pairs of blocks (the last one a single block when
 * half_last). w: row 0's first block, rows wrs bytes apart. ext: token 0's
 * extension at the first pair, tokens extrow bytes apart. Scratch and y as
 * in ftile (scratch stride QT).
 */
INLINE void qtile(const int qt, const int R, const int T, const uint8_t *w, size_t wrs,
                  const uint8_t *ext, size_t extrow, int64_t np, int half_last, float *acc_s,
                  int first, int last, float *y, size_t ldy, const int stream)
{
    const size_t pb = qt == QQ8 ? 2 * sizeof(shoal_block_q8_0) : 2 * sizeof(shoal_block_q4_0);
    __m512 acc[QRD][QT];
UNROLL
    for (int r = 0; r < R; r++)
UNROLL
        for (int t = 0; t < T; t++)
            acc[r][t] = first ? _mm512_setzero_ps() : _mm512_load_ps(acc_s + (r * QT + t) * 16);

    const int64_t nfull = np - half_last;
    for (int64_t p = 0; p < nfull; p++) {
        __m512i wq[QRD], corr[QRD];
        __m512 ws[QRD];
        if (stream && (T <= 2 || p % 2 == 0)) {
            /* the weights stream through once: fetch this row ahead and the
             * next row block at this position (rows are short, and a cold
             * start per row block costs more than the prefetches) */
UNROLL
            for (int r = 0; r < R; r++) {
                prefetch(w, (r + R) * wrs + (size_t)p * pb, _MM_HINT_T1);
                prefetch(w, r * wrs + (size_t)(p + QPF) * pb, _MM_HINT_T0);
            }
        }
UNROLL
        for (int r = 0; r < R; r++)
            qprep(qt, w + r * wrs + (size_t)p * pb, 0, &wq[r], &corr[r], &ws[r]);
UNROLL
        for (int t = 0; t < T; t++) {
            const uint8_t *e = ext + t * extrow + (size_t)p * 128;
            __m512i xu = _mm512_loadu_si512(e);
            __m512 xs = _mm512_loadu_ps(e + 64);
UNROLL
            for (int r = 0; r < R; r++) {
                __m512i s = _mm512_dpbusd_epi32(corr[r], xu, wq[r]);
                __m512 d = _mm512_mul_ps(ws[r], xs);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc[r][t]);
            }
        }
    }
    if (half_last) {
        const int64_t p = nfull;
        __m512i wq[QRD], corr[QRD];
        __m512 ws[QRD];
UNROLL
        for (int r = 0; r < R; r++)
            qprep(qt, w + r * wrs + (size_t)p * pb, 1, &wq[r], &corr[r], &ws[r]);
UNROLL
        for (int t = 0; t < T; t++) {
            const uint8_t *e = ext + t * extrow + (size_t)p * 128;
            __m512i xu = _mm512_loadu_si512(e);
            __m512 xs = _mm512_loadu_ps(e + 64);
UNROLL
            for (int r = 0; r < R; r++) {
                __m512i s = _mm512_dpbusd_epi32(corr[r], xu, wq[r]);
                __m512 d = _mm512_mul_ps(ws[r], xs);
                acc[r][t] = _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc[r][t], 0x00FF);
            }
        }
    }

UNROLL
    for (int r = 0; r < R; r++)
UNROLL
        for (int t = 0; t < T; t++) {
            if (last)
                y[t * ldy + r] = hsum16(acc[r][t]);
            else
                _mm512_store_ps(acc_s + (r * QT + t) * 16, acc[r][t]);
        }
}

INLINE void qtile_any(const int qt, const int R, int tt, const uint8_t *w, size_t wrs,
                      const uint8_t *ext, size_t extrow, int64_t np, int half_last,
                      float *acc_s, int first, int last, float *y, size_t ldy, const int stream)
{
    switch (tt) {
    case 1: qtile(qt, R, 1, w, wrs, ext, extrow, np, half_last, acc_s, first, last, y, ldy, stream); break;
    case 2: qtile(qt, R, 2, w, wrs, ext, extrow, np, half_last, acc_s, first, last, y, ldy, stream); break;
    case 3: qtile(qt, R, 3, w, wrs, ext, extrow, np, half_last, acc_s, first, last, y, ldy, stream); break;
    default: qtile(qt, R, QT, w, wrs, ext, extrow, np, half_last, acc_s, first, last, y, ldy, stream); break;
    }
}

INLINE void qmat(const int qt, const shoal_mat *w, const void *act, int ntok, float *y,
                 size_t ldy, int64_t r0, int64_t r1)
{
    const uint8_t *W = w->data;
    const int64_t k = w->k, nb = k / 32, np = (nb + 1) / 2;
    const size_t bb = qt == QQ8 ? sizeof(shoal_block_q8_0) : sizeof(shoal_block_q4_0);
    const size_t rb = (size_t)nb * bb;
    const uint8_t *ext = (const uint8_t *)act + shoal_act_ext_off(k, ntok);
    const size_t extrow = shoal_act_ext_row(k);
    const int odd = (int)(nb & 1);
    if (ntok == 1) {
        const int rd = qt == QQ8 ? 8 : 6;
        int64_t r = r0;
        for (; r + rd <= r1; r += rd)
            qtile(qt, rd, 1, W + (size_t)r * rb, rb, ext, 0, np, odd, NULL, 1, 1, y + r, 0, 1);
        for (; r < r1; r++)
            qtile(qt, 1, 1, W + (size_t)r * rb, rb, ext, 0, np, odd, NULL, 1, 1, y + r, 0, 1);
        return;
    }
    if (ntok <= QT) { /* a few tokens: stream the rows once, whole */
        int64_t r = r0;
        for (; r + QR <= r1; r += QR)
            qtile_any(qt, QR, ntok, W + (size_t)r * rb, rb, ext, extrow, np, odd, NULL, 1, 1,
                      y + r, ldy, 1);
        for (; r < r1; r++)
            qtile_any(qt, 1, ntok, W + (size_t)r * rb, rb, ext, extrow, np, odd, NULL, 1, 1,
                      y + r, ldy, 1);
        return;
    }
    _Alignas(64) float scratch[FRT * QT * 16];
    const int64_t rt_rows = tile_rows(rb, QR);
    for (int64_t rt = r0; rt < r1; rt += rt_rows) {
        int64_t rte = rt + rt_rows < r1 ? rt + rt_rows : r1;
        for (int t0 = 0; t0 < ntok; t0 += QT) {
            int tt = ntok - t0 < QT ? ntok - t0 : QT;
            const uint8_t *et = ext + (size_t)t0 * extrow;
            float *yt = y + (size_t)t0 * ldy;
            for (int64_t pc = 0; pc < np; pc += QKC) {
                int64_t len = np - pc < QKC ? np - pc : QKC;
                int first = pc == 0, last = pc + len == np;
                int hl = last && odd;
                const uint8_t *ec = et + (size_t)pc * 128;
                size_t wo = (size_t)pc * 2 * bb;
                int64_t r = rt;
                for (; r + QR <= rte; r += QR)
                    qtile_any(qt, QR, tt, W + (size_t)r * rb + wo, rb, ec, extrow, len, hl,
                              scratch + (r - rt) * QT * 16, first, last, yt + r, ldy, 0);
                for (; r < rte; r++)
                    qtile_any(qt, 1, tt, W + (size_t)r * rb + wo, rb, ec, extrow, len, hl,
                              scratch + (r - rt) * QT * 16, first, last, yt + r, ldy, 0);
            }
        }
    }
}

void shoal_matmul_avx512(const shoal_mat *w, const float *x, const void *act, int ntok,
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

float shoal_dot_f32_avx512(const float *a, const float *b, int64_t n)
{
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        acc = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i),
                                    _mm512_maskz_loadu_ps(m, b + i), acc, m);
    }
    return hsum16(acc);
}

/* ---- activation quantization (Q8_0, as quantize_row_q8_0_ref) ---- */

/* roundf(v): round half away from zero, for |v| < 2^23. */
INLINE __m512 round_away(__m512 v)
{
    __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_abs_ps(_mm512_sub_ps(v, t));
    __mmask16 up = _mm512_cmp_ps_mask(f, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __m512 one = _mm512_or_ps(_mm512_set1_ps(1.0f),
                              _mm512_and_ps(v, _mm512_castsi512_ps(_mm512_set1_epi32(INT32_MIN))));
    return _mm512_mask_add_ps(t, up, t, one);
}

/* The extension's half pair for block b: u8 bytes and 8 scales. */
static void ext_block(uint8_t *ext, int64_t b, const shoal_block_q8_0 *q)
{
    uint8_t *e = ext + (b / 2) * 128;
    __m256i qs = _mm256_loadu_si256((const __m256i *)q->qs);
    _mm256_storeu_si256((__m256i *)(e + (b & 1) * 32), _mm256_xor_si256(qs, _mm256_set1_epi8((char)0x80)));
    _mm256_storeu_ps((float *)(e + 64) + (b & 1) * 8, _mm256_set1_ps(_cvtsh_ss(q->d)));
}

void shoal_act_token_avx512(const float *x, int64_t k, void *q8, void *ext)
{
    const int64_t nb = k / 32;
    shoal_block_q8_0 *q = q8;
    for (int64_t b = 0; b < nb; b++) {
        __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
        __m512 a = _mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1));
        /* NaN or infinity: the reference's own (order-dependent) answer */
        if (_mm512_cmp_ps_mask(a, _mm512_set1_ps(INFINITY), _CMP_NLT_UQ)) {
            shoal_quantize_row(SHOAL_TYPE_Q8_0, x + 32 * b, &q[b], 32);
        } else {
            float amax = _mm512_reduce_max_ps(a);
            const float d = amax / ((1 << 7) - 1);
            const float id = d ? 1.0f / d : 0.0f;
            q[b].d = shoal_fp32_to_fp16(d);
            __m512 vid = _mm512_set1_ps(id);
            __m512i i0 = _mm512_cvtps_epi32(round_away(_mm512_mul_ps(v0, vid)));
            __m512i i1 = _mm512_cvtps_epi32(round_away(_mm512_mul_ps(v1, vid)));
            _mm_storeu_si128((__m128i *)q[b].qs, _mm512_cvtepi32_epi8(i0));
            _mm_storeu_si128((__m128i *)(q[b].qs + 16), _mm512_cvtepi32_epi8(i1));
        }
        if (ext)
            ext_block(ext, b, &q[b]);
    }
    if (ext && (nb & 1)) { /* the missing second block of the last pair */
        uint8_t *e = (uint8_t *)ext + (nb / 2) * 128;
        memset(e + 32, 128, 32);
        memset(e + 64 + 32, 0, 32);
    }
}
