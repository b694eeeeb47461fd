/*
 * Matrix-vector and matrix-matrix products through weights of any supported
 * type: y[t][i] = dot(W[i,:], x[t,:]) for rows i in [r0, r1), tokens t.
 *
 * Determinism contract (failover depends on it): every output element is
 * reduced in one canonical order that does not depend on the ISA (portable
 * C, AVX2, AVX-512), the number of tokens in the call, the row range, or the
 * thread count. The canonical orders:
 *
 *   F32, F16, BF16, Q4_K, Q6_K weights, f32 activations: the weight row is
 *   converted to f32 exactly (dequantized for Q4_K/Q6_K), then 16 lane
 *   accumulators start at +0 and lane l takes acc[l] = fmaf(w[k], x[k],
 *   acc[l]) for k = l, l+16, l+32, ... in increasing k (a row shorter than a
 *   multiple of 16 simply has fewer terms in the last lanes). The lanes are
 *   then summed as a tree: for s = 8, 4, 2, 1: acc[l] += acc[l+s], l < s.
 *
 *   Q8_0 and Q4_0 weights: the activations are first quantized to Q8_0 per
 *   token (shoal_act_prepare, ggml's reference rounding). For block b and
 *   quad q (elements 4q..4q+3 of the block, q in 0..7) the exact integer
 *   s = sum of the 4 products w*x is formed; lane l = 8*(b%2) + q takes
 *   acc[l] = fmaf((float)s, d_w[b]*d_x[b], acc[l]) with blocks in
 *   increasing b (d_w*d_x rounded to f32 first). Same tree at the end.
 *
 * A row length must be a multiple of the weight type's block size, and a
 * multiple of 16 for f32/f16/bf16 rows is not required.
 *
 * THREAD SAFETY: pure functions over caller-owned buffers; callers split rows
 * between threads. No allocation, no globals except the CPU-feature choice
 * made once by shoal_cpu_init() (kernels/cpu.h).
 */
#ifndef SHOAL_KERNELS_MATMUL_H
#define SHOAL_KERNELS_MATMUL_H

#include <stddef.h>
#include <stdint.h>

typedef struct shoal_mat {
    int type;           /* shoal_type of the weights */
    int64_t k;          /* elements per row (input features) */
    int64_t n;          /* rows (output features) */
    const void *data;   /* n rows of shoal_type_row_bytes(type, k) bytes */
} shoal_mat;

/* Bytes of scratch that shoal_act_prepare needs for ntok tokens of k
 * features against weights of type wtype (0 when f32 is used as is). */
size_t shoal_act_bytes(int wtype, int64_t k, int ntok);

/* Prepares activations x (ntok, k) for weights of type wtype into act
 * (shoal_act_bytes bytes): quantizes to Q8_0 for Q8_0/Q4_0, nothing
 * otherwise. Deterministic and per token: a token's prepared bytes do not
 * depend on the other tokens. */
void shoal_act_prepare(int wtype, const float *x, int64_t k, int ntok, void *act);

/* y (ntok, ldy): y[t*ldy + i] for i in [r0, r1), t in [0, ntok).
 * x (ntok, k) is the f32 input; act is what shoal_act_prepare made from it
 * (may be NULL when shoal_act_bytes is 0). Dispatches to the best kernel
 * for this CPU. */
void shoal_matmul(const shoal_mat *w, const float *x, const void *act, int ntok,
                  float *y, int64_t ldy, int64_t r0, int64_t r1);

/* The same contract in plain C, one element at a time: the reference the
 * optimized kernels are tested against (bit for bit). */
void shoal_matmul_ref(const shoal_mat *w, const float *x, const void *act, int ntok,
                      float *y, int64_t ldy, int64_t r0, int64_t r1);

/* The canonical f32 dot product of n elements (the first order above). */
float shoal_dot_f32(const float *a, const float *b, int64_t n);

/* ---- Additions: ISA selection for tests and benchmarks, layout notes ----
 *
 * Prepared activations for Q8_0 / Q4_0 weights (shoal_act_prepare) are laid
 * out as: first the ntok Q8_0 rows back to back (exactly what
 * shoal_quantize_row(SHOAL_TYPE_Q8_0, ...) makes of each token), then, at
 * the next multiple of 64 bytes, per token and per pair of blocks, 64 bytes
 * of x + 128 as unsigned bytes and 16 floats of block scales (8 copies of
 * each block's d), the form the AVX-512 kernels read directly. Q8_0 and
 * Q4_0 weights take the same prepared bytes. Best speed wants act 64-byte
 * aligned (malloc'd buffers of this size usually are; aligned_alloc is sure).
 */

/* Byte offsets inside a prepared buffer for k features (k % 32 == 0) and
 * ntok tokens: token t's Q8_0 row at t * shoal_act_q8_row(k), its
 * extension at shoal_act_ext_off(k, ntok) + t * shoal_act_ext_row(k). */
static inline size_t shoal_act_q8_row(int64_t k) { return (size_t)(k / 32) * 34; }
static inline size_t shoal_act_ext_row(int64_t k) { return (size_t)((k / 32 + 1) / 2) * 128; }
static inline size_t shoal_act_ext_off(int64_t k, int ntok)
{
    return ((size_t)ntok * shoal_act_q8_row(k) + 63) & ~(size_t)63;
}

/* shoal_act_prepare for tokens [t0, t1) of an ntok-token buffer only (x is
 * still the whole (ntok, k) input), so threads can share the work; the
 * calls covering [0, ntok) together make the same bytes as one call. */
void shoal_act_prepare_range(int wtype, const float *x, int64_t k, int ntok, int t0, int t1,
                             void *act);

/* shoal_matmul at ISA level `isa` (kernels/cpu.h): a level the CPU lacks is
 * lowered to the best it has. Results are identical at every level. */
void shoal_matmul_isa(int isa, const shoal_mat *w, const float *x, const void *act, int ntok,
                      float *y, int64_t ldy, int64_t r0, int64_t r1);

/* shoal_act_prepare / shoal_dot_f32 at a given ISA level (same results). */
void shoal_act_prepare_isa(int isa, int wtype, const float *x, int64_t k, int ntok, void *act);
float shoal_dot_f32_isa(int isa, const float *a, const float *b, int64_t n);
float shoal_dot_f32_ref(const float *a, const float *b, int64_t n);

/* ISA kernels behind the dispatch (matmul_avx2.c, matmul_avx512.c). Call
 * them only at a level the CPU supports; arguments are already checked. */
void shoal_matmul_avx2(const shoal_mat *w, const float *x, const void *act, int ntok,
                       float *y, int64_t ldy, int64_t r0, int64_t r1);
void shoal_matmul_avx512(const shoal_mat *w, const float *x, const void *act, int ntok,
                         float *y, int64_t ldy, int64_t r0, int64_t r1);
float shoal_dot_f32_avx2(const float *a, const float *b, int64_t n);
float shoal_dot_f32_avx512(const float *a, const float *b, int64_t n);
/* Quantizes one token to Q8_0 (as shoal_quantize_row) and writes its
 * extension (see the layout above); ext may be NULL. */
void shoal_act_token_avx512(const float *x, int64_t k, void *q8, void *ext);

#endif
