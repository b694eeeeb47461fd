/*
 * Matmul front end: argument checks, activation preparation, the portable
 * reference kernels and the dispatch to the ISA kernels (matmul_avx2.c,
 * matmul_avx512.c).
 *
 * The reference follows the canonical reduction orders of matmul.h one
 * element at a time, with fmaf, so it is the definition the optimized
 * kernels are tested against bit for bit. It is also the kernel used on a
 * CPU without AVX2, so it keeps to the stack: a k-quant row is dequantized
 * one 256-element super-block at a time.
 *
 * Bad shapes (an unsupported type, k not a whole number of blocks, a row
 * range outside [0, n), a missing act) make shoal_matmul do nothing: the
 * shapes come from a model loader that has already validated them, and a
 * kernel must not crash on them either.
 */
#include "kernels/matmul.h"

#include <math.h>
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/types.h"

static int uses_act(int wtype)
{
    return wtype == SHOAL_TYPE_Q8_0 || wtype == SHOAL_TYPE_Q4_0;
}

size_t shoal_act_bytes(int wtype, int64_t k, int ntok)
{
    if (!uses_act(wtype) || k <= 0 || k % SHOAL_QK8_0 != 0 || ntok <= 0)
        return 0;
    size_t q8 = shoal_act_q8_row(k), ext = shoal_act_ext_row(k);
    if (q8 > (SIZE_MAX / 4) / (size_t)ntok || ext > (SIZE_MAX / 4) / (size_t)ntok)
        return 0;
    return shoal_act_ext_off(k, ntok) + (size_t)ntok * ext;
}

/* The extension of one token (layout in matmul.h) from its Q8_0 row. */
static void act_ext_ref(const shoal_block_q8_0 *q, int64_t nb, uint8_t *ext)
{
    for (int64_t p = 0; p < (nb + 1) / 2; p++) {
        uint8_t *xu = ext + p * 128;
        float sc[16];
        for (int h = 0; h < 2; h++) {
            int64_t b = 2 * p + h;
            float d = b < nb ? shoal_fp16_to_fp32(q[b].d) : 0.0f;
            for (int j = 0; j < 32; j++)
                xu[32 * h + j] = b < nb ? (uint8_t)(q[b].qs[j] + 128) : 128;
            for (int j = 0; j < 8; j++)
                sc[8 * h + j] = d;
        }
        memcpy(xu + 64, sc, sizeof(sc));
    }
}

static void act_prepare(int isa, int wtype, const float *x, int64_t k, int ntok, int t0, int t1,
                        void *act)
{
    if (shoal_act_bytes(wtype, k, ntok) == 0 || !x || !act || t0 < 0 || t1 > ntok || t0 >= t1)
        return;
    if (isa > (int)shoal_cpu_level_max())
        isa = (int)shoal_cpu_level_max();
    uint8_t *base = act;
    size_t q8row = shoal_act_q8_row(k), extrow = shoal_act_ext_row(k);
    size_t extoff = shoal_act_ext_off(k, ntok);
    if (t1 == ntok) /* the padding between the parts, so every byte is defined */
        memset(base + (size_t)ntok * q8row, 0, extoff - (size_t)ntok * q8row);
    for (int t = t0; t < t1; t++) {
        uint8_t *q8 = base + (size_t)t * q8row;
        uint8_t *ext = base + extoff + (size_t)t * extrow;
        if (isa >= SHOAL_ISA_AVX512) {
            shoal_act_token_avx512(x + (size_t)t * (size_t)k, k, q8, ext);
        } else {
            shoal_quantize_row(SHOAL_TYPE_Q8_0, x + (size_t)t * (size_t)k, q8, k);
            act_ext_ref((const shoal_block_q8_0 *)q8, k / SHOAL_QK8_0, ext);
        }
    }
}

void shoal_act_prepare_isa(int isa, int wtype, const float *x, int64_t k, int ntok, void *act)
{
    act_prepare(isa, wtype, x, k, ntok, 0, ntok, act);
}

void shoal_act_prepare(int wtype, const float *x, int64_t k, int ntok, void *act)
{
    act_prepare((int)shoal_cpu_level(), wtype, x, k, ntok, 0, ntok, act);
}

void shoal_act_prepare_range(int wtype, const float *x, int64_t k, int ntok, int t0, int t1,
                             void *act)
{
    act_prepare((int)shoal_cpu_level(), wtype, x, k, ntok, t0, t1, act);
}

/* ---- reference ---- */

/* The canonical tree: for s = 8, 4, 2, 1: acc[l] += acc[l + s], l < s. */
static float tree16(float acc[16])
{
    for (int s = 8; s >= 1; s >>= 1)
        for (int l = 0; l < s; l++)
            acc[l] += acc[l + s];
    return acc[0];
}

float shoal_dot_f32_ref(const float *a, const float *b, int64_t n)
{
    float acc[16] = {0};
    for (int64_t i = 0; i < n; i++)
        acc[i & 15] = fmaf(a[i], b[i], acc[i & 15]);
    return tree16(acc);
}

/* Element i of a plain (f32, f16, bf16) row, exactly as f32. */
static float plain_elem(int type, const void *row, int64_t i)
{
    switch (type) {
    case SHOAL_TYPE_F16: return shoal_fp16_to_fp32(((const uint16_t *)row)[i]);
    case SHOAL_TYPE_BF16: return shoal_bf16_to_fp32(((const uint16_t *)row)[i]);
    default: return ((const float *)row)[i];
    }
}

static float ref_plain(int type, const void *row, const float *x, int64_t k)
{
    float acc[16] = {0};
    for (int64_t i = 0; i < k; i++)
        acc[i & 15] = fmaf(plain_elem(type, row, i), x[i], acc[i & 15]);
    return tree16(acc);
}

static float ref_kquant(int type, const uint8_t *row, const float *x, int64_t k)
{
    size_t bb = shoal_type_info(type)->block_bytes;
    float acc[16] = {0};
    float w[SHOAL_QK_K];
    for (int64_t b = 0; b < k / SHOAL_QK_K; b++) {
        shoal_dequantize_row(type, row + (size_t)b * bb, w, SHOAL_QK_K);
        for (int i = 0; i < SHOAL_QK_K; i++) /* 256 keeps lane = i % 16 */
            acc[i & 15] = fmaf(w[i], x[b * SHOAL_QK_K + i], acc[i & 15]);
    }
    return tree16(acc);
}

/* Weight element e (0..31) of a Q8_0 or Q4_0 block. */
static int quant_elem(int type, const void *blk, int e)
{
    if (type == SHOAL_TYPE_Q8_0)
        return ((const shoal_block_q8_0 *)blk)->qs[e];
    const shoal_block_q4_0 *b = blk;
    return (e < 16 ? (b->qs[e] & 15) : (b->qs[e - 16] >> 4)) - 8;
}

static float ref_quant(int type, const uint8_t *row, const shoal_block_q8_0 *xq, int64_t k)
{
    size_t bb = shoal_type_info(type)->block_bytes;
    float acc[16] = {0};
    for (int64_t b = 0; b < k / 32; b++) {
        const void *wb = row + (size_t)b * bb;
        uint16_t dwh;
        memcpy(&dwh, wb, sizeof(dwh)); /* d is the first field of both */
        float d = shoal_fp16_to_fp32(dwh) * shoal_fp16_to_fp32(xq[b].d);
        for (int q = 0; q < 8; q++) {
            int32_t s = 0;
            for (int j = 4 * q; j < 4 * q + 4; j++)
                s += quant_elem(type, wb, j) * xq[b].qs[j];
            int l = 8 * (int)(b & 1) + q;
            acc[l] = fmaf((float)s, d, acc[l]);
        }
    }
    return tree16(acc);
}

void shoal_matmul_ref(const shoal_mat *w, const float *x, const void *act, int ntok,
                      float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    size_t rb = shoal_type_row_bytes(w->type, w->k);
    const uint8_t *data = w->data;
    for (int64_t i = r0; i < r1; i++) {
        const uint8_t *row = data + (size_t)i * rb;
        for (int t = 0; t < ntok; t++) {
            const float *xt = x + (size_t)t * (size_t)w->k;
            float v;
            switch (w->type) {
            case SHOAL_TYPE_Q8_0:
            case SHOAL_TYPE_Q4_0:
                v = ref_quant(w->type, row,
                              (const shoal_block_q8_0 *)((const uint8_t *)act +
                                                         (size_t)t * shoal_act_q8_row(w->k)),
                              w->k);
                break;
            case SHOAL_TYPE_Q4_K:
            case SHOAL_TYPE_Q6_K:
                v = ref_kquant(w->type, row, xt, w->k);
                break;
            default:
                v = ref_plain(w->type, row, xt, w->k);
                break;
            }
            y[(size_t)t * (size_t)ldy + (size_t)i] = v;
        }
    }
}

/* ---- dispatch ---- */

/* Whether the arguments describe a product the kernels can compute. */
static int args_ok(const shoal_mat *w, const float *x, const void *act, int ntok,
                   const float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    if (!w || !y || ntok <= 0 || r0 < 0 || r1 > w->n || r0 >= r1 || (ntok > 1 && ldy < r1))
        return 0;
    const shoal_type_traits *tr = shoal_type_info(w->type);
    if (!tr || w->k < 0 || w->k % tr->block_elems != 0 || !w->data)
        return 0;
    if (uses_act(w->type) ? !act : !x)
        return 0;
    return 1;
}

void shoal_matmul_isa(int isa, const shoal_mat *w, const float *x, const void *act, int ntok,
                      float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    if (!args_ok(w, x, act, ntok, y, ldy, r0, r1))
        return;
    if (w->k == 0) {
        for (int t = 0; t < ntok; t++)
            for (int64_t i = r0; i < r1; i++)
                y[(size_t)t * (size_t)ldy + (size_t)i] = 0.0f;
        return;
    }
    if (isa > (int)shoal_cpu_level_max())
        isa = (int)shoal_cpu_level_max();
    switch (isa) {
    case SHOAL_ISA_AVX512: shoal_matmul_avx512(w, x, act, ntok, y, ldy, r0, r1); break;
    case SHOAL_ISA_AVX2: shoal_matmul_avx2(w, x, act, ntok, y, ldy, r0, r1); break;
    default: shoal_matmul_ref(w, x, act, ntok, y, ldy, r0, r1); break;
    }
}

void shoal_matmul(const shoal_mat *w, const float *x, const void *act, int ntok,
                  float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    shoal_matmul_isa((int)shoal_cpu_level(), w, x, act, ntok, y, ldy, r0, r1);
}

float shoal_dot_f32_isa(int isa, const float *a, const float *b, int64_t n)
{
    if (n <= 0)
        return 0.0f;
    if (isa > (int)shoal_cpu_level_max())
        isa = (int)shoal_cpu_level_max();
    switch (isa) {
    case SHOAL_ISA_AVX512: return shoal_dot_f32_avx512(a, b, n);
    case SHOAL_ISA_AVX2: return shoal_dot_f32_avx2(a, b, n);
    default: return shoal_dot_f32_ref(a, b, n);
    }
}

float shoal_dot_f32(const float *a, const float *b, int64_t n)
{
    return shoal_dot_f32_isa((int)shoal_cpu_level(), a, b, n);
}
