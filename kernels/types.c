/*
 * Tensor element types: traits, half/bfloat16 conversions and the reference
 * (plain C) quantizers and dequantizers.
 *
 * The quantizers reproduce ggml's reference quantizers (quantize_row_*_ref in
 * ggml-quants.c) operation for operation, so a tensor quantized here has the
 * same bytes as one quantized by llama.cpp (checked byte for byte against
 * ggml-quants.c of llama.cpp c392e50 on 12000 random rows, including all-zero,
 * constant and extreme-scale blocks). That is why the float
 * expressions below keep ggml's evaluation order and its round-to-nearest
 * trick (nearest_int): any reordering, or an FMA the compiler fused (the
 * build uses -ffp-contract=off), changes the last bit of a sum and so,
 * sometimes, a chosen scale. Where ggml converts an out-of-range float to an
 * integer (undefined in C), which only happens for inputs holding NaN or
 * infinities, this file clamps instead: finite inputs give ggml's bytes,
 * non-finite ones give defined garbage rather than undefined behaviour.
 *
 * fp16 conversion is written with integer operations and gives what the
 * F16C instructions give (vcvtps2ph with round to nearest even; vcvtph2ps):
 * NaNs are quieted and keep the top bits of their payload. bfloat16 follows
 * ggml (round to nearest even, NaN quieted by setting the top mantissa bit).
 *
 * shoal_quantize_row / shoal_dequantize_row trust their caller: they do
 * nothing for an unsupported type or an n that shoal_type_row_bytes rejects,
 * and the caller sizes the buffers with shoal_type_row_bytes.
 */
#include "kernels/types.h"

#include <math.h>
#include <string.h>
#include <strings.h>

#define GROUP_MAX_EPS 1e-15f

static const shoal_type_traits traits_f32 = {"f32", 1, sizeof(float)};
static const shoal_type_traits traits_f16 = {"f16", 1, sizeof(uint16_t)};
static const shoal_type_traits traits_bf16 = {"bf16", 1, sizeof(uint16_t)};
static const shoal_type_traits traits_q4_0 = {"q4_0", SHOAL_QK4_0, sizeof(shoal_block_q4_0)};
static const shoal_type_traits traits_q8_0 = {"q8_0", SHOAL_QK8_0, sizeof(shoal_block_q8_0)};
static const shoal_type_traits traits_q4_K = {"q4_K", SHOAL_QK_K, sizeof(shoal_block_q4_K)};
static const shoal_type_traits traits_q6_K = {"q6_K", SHOAL_QK_K, sizeof(shoal_block_q6_K)};

const shoal_type_traits *shoal_type_info(int type)
{
    switch (type) {
    case SHOAL_TYPE_F32: return &traits_f32;
    case SHOAL_TYPE_F16: return &traits_f16;
    case SHOAL_TYPE_Q4_0: return &traits_q4_0;
    case SHOAL_TYPE_Q8_0: return &traits_q8_0;
    case SHOAL_TYPE_Q4_K: return &traits_q4_K;
    case SHOAL_TYPE_Q6_K: return &traits_q6_K;
    case SHOAL_TYPE_BF16: return &traits_bf16;
    default: return NULL;
    }
}

int shoal_type_from_name(const char *name)
{
    static const int all[] = {
        SHOAL_TYPE_F32, SHOAL_TYPE_F16, SHOAL_TYPE_Q4_0, SHOAL_TYPE_Q8_0,
        SHOAL_TYPE_Q4_K, SHOAL_TYPE_Q6_K, SHOAL_TYPE_BF16,
    };
    if (!name)
        return -1;
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcasecmp(name, shoal_type_info(all[i])->name) == 0)
            return all[i];
    }
    return -1;
}

size_t shoal_type_row_bytes(int type, int64_t n)
{
    const shoal_type_traits *t = shoal_type_info(type);
    if (!t || n < 0 || n % t->block_elems != 0)
        return 0;
    uint64_t blocks = (uint64_t)(n / t->block_elems);
    if (blocks > SIZE_MAX / t->block_bytes)
        return 0;
    return (size_t)blocks * t->block_bytes;
}

/* ---- half and bfloat16 ---- */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static inline float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

float shoal_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;

    if (exp == 0x1f) { /* infinity, or NaN made quiet */
        uint32_t quiet = mant ? 0x400000u : 0;
        return f32_from_bits(sign | 0x7f800000u | quiet | (mant << 13));
    }
    if (exp == 0) {
        if (mant == 0)
            return f32_from_bits(sign);
        /* subnormal half: normalize; the value is mant * 2^-24 */
        uint32_t e = 113;
        while (!(mant & 0x400)) {
            mant <<= 1;
            e--;
        }
        return f32_from_bits(sign | (e << 23) | ((mant & 0x3ff) << 13));
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t shoal_fp32_to_fp16(float f)
{
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffffu;

    if (a > 0x7f800000u) /* NaN: quiet, keep the payload's top 9 bits */
        return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
    if (a >= 0x477ff000u) /* 65520 and above round to infinity */
        return (uint16_t)(sign | 0x7c00);
    if (a >= 0x38800000u) { /* normal half: rebias 127 -> 15, round */
        uint32_t r = a - 0x38000000u;
        r += 0xfff + ((r >> 13) & 1);
        return (uint16_t)(sign | (r >> 13));
    }
    /* subnormal half or zero: round |f| / 2^-24 to an integer */
    uint32_t exp = a >> 23;
    if (exp < 102) /* below 2^-25: rounds to zero */
        return (uint16_t)sign;
    uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp; /* 14..24 */
    uint32_t q = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    return (uint16_t)(sign | q);
}

float shoal_bf16_to_fp32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t shoal_fp32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

/* ---- helpers shared by the k-quants, as in ggml ---- */

/* Round to nearest, ties to even, for |f| <= 4194303 (the magic-number
 * trick ggml uses; larger values give a wrapped but defined result). */
static inline int nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof(i));
    return (i & 0x007fffff) - 0x00400000;
}

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* (int)f truncated toward zero, clamped to [lo, hi]; NaN gives lo. */
static inline int trunc_clamp(float f, int lo, int hi)
{
    if (!(f > (float)lo))
        return lo;
    if (f >= (float)hi)
        return hi;
    return (int)f;
}

/* ggml's make_qx_quants with rmse_type 1 and no importance weights (the
 * only form q6_K's reference quantizer uses): symmetric codes in
 * [-nmax, nmax-1] for n values, stored biased by nmax in L; the scale is
 * fitted by least squares weighted by x^2 over 19 trial scales. */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0;
    float amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = imax(-nmax, imin(nmax - 1, l));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ggml's make_qkx2_quants: asymmetric codes in [0, nmax] with a minimum
 * (returned negated in *the_min), fitted by weighted least squares over
 * nstep+1 trial scales; returns the scale. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights,
                              uint8_t *L, float *the_min, uint8_t *Laux,
                              float rmin, float rdelta, int nstep, bool use_mad)
{
    float min = x[0];
    float max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_mad = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        float w = weights[i];
        best_mad += w * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = imax(0, imin(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float mad = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                float w = weights[i];
                mad += w * diff;
            }
            if (mad < best_mad) {
                for (int i = 0; i < n; ++i)
                    L[i] = Laux[i];
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Scale and min of sub-block j (0..7) from a q4_K block's 12 packed bytes. */
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* ---- per-type rows; nb is the number of blocks ---- */

static void quantize_q4_0(const float *x, shoal_block_q4_0 *y, int64_t nb)
{
    const int qk = SHOAL_QK4_0;
    for (int64_t i = 0; i < nb; i++) {
        float amax = 0.0f;
        float max = 0.0f;
        for (int j = 0; j < qk; j++) {
            const float v = x[i * qk + j];
            if (amax < fabsf(v)) {
                amax = fabsf(v);
                max = v;
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = shoal_fp32_to_fp16(d);
        for (int j = 0; j < qk / 2; ++j) {
            const float x0 = x[i * qk + 0 + j] * id;
            const float x1 = x[i * qk + qk / 2 + j] * id;
            const int q0 = trunc_clamp(x0 + 8.5f, 0, 15);
            const int q1 = trunc_clamp(x1 + 8.5f, 0, 15);
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void dequantize_q4_0(const shoal_block_q4_0 *x, float *y, int64_t nb)
{
    const int qk = SHOAL_QK4_0;
    for (int64_t i = 0; i < nb; i++) {
        const float d = shoal_fp16_to_fp32(x[i].d);
        for (int j = 0; j < qk / 2; ++j) {
            const int x0 = (x[i].qs[j] & 0x0F) - 8;
            const int x1 = (x[i].qs[j] >> 4) - 8;
            y[i * qk + j] = x0 * d;
            y[i * qk + j + qk / 2] = x1 * d;
        }
    }
}

static void quantize_q8_0(const float *x, shoal_block_q8_0 *y, int64_t nb)
{
    const int qk = SHOAL_QK8_0;
    for (int64_t i = 0; i < nb; i++) {
        float amax = 0.0f;
        for (int j = 0; j < qk; j++) {
            const float v = fabsf(x[i * qk + j]);
            amax = amax > v ? amax : v;
        }
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = shoal_fp32_to_fp16(d);
        for (int j = 0; j < qk; ++j) {
            const float r = roundf(x[i * qk + j] * id);
            /* finite input keeps |r| <= 127; the clamp is for NaN/inf */
            y[i].qs[j] = (int8_t)(r >= -128.f && r <= 127.f ? (int)r : 0);
        }
    }
}

static void dequantize_q8_0(const shoal_block_q8_0 *x, float *y, int64_t nb)
{
    const int qk = SHOAL_QK8_0;
    for (int64_t i = 0; i < nb; i++) {
        const float d = shoal_fp16_to_fp32(x[i].d);
        for (int j = 0; j < qk; ++j)
            y[i * qk + j] = x[i].qs[j] * d;
    }
}

static void quantize_q4_K(const float *x, shoal_block_q4_K *y, int64_t nb)
{
    uint8_t L[SHOAL_QK_K];
    uint8_t Laux[32];
    float weights[32];
    float mins[SHOAL_QK_K / 32];
    float scales[SHOAL_QK_K / 32];

    for (int64_t i = 0; i < nb; i++) {
        float max_scale = 0; /* the min is subtracted, so scales are >= 0 */
        float max_min = 0;
        for (int j = 0; j < SHOAL_QK_K / 32; ++j) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l)
                sum_x2 += x[32 * j + l] * x[32 * j + l];
            float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; ++l)
                weights[l] = av_x + fabsf(x[32 * j + l]);
            scales[j] = make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j],
                                         Laux, -1.f, 0.1f, 20, false);
            if (scales[j] > max_scale)
                max_scale = scales[j];
            if (mins[j] > max_min)
                max_min = mins[j];
        }

        float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < SHOAL_QK_K / 32; ++j) {
            uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
            uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
            ls = ls < 63 ? ls : 63;
            lm = lm < 63 ? lm : 63;
            if (j < 4) {
                y[i].scales[j] = ls;
                y[i].scales[j + 4] = lm;
            } else {
                y[i].scales[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
                y[i].scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
                y[i].scales[j - 0] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        y[i].d = shoal_fp32_to_fp16(max_scale / 63.f);
        y[i].dmin = shoal_fp32_to_fp16(max_min / 63.f);

        uint8_t sc, m;
        for (int j = 0; j < SHOAL_QK_K / 32; ++j) {
            get_scale_min_k4(j, y[i].scales, &sc, &m);
            const float d = shoal_fp16_to_fp32(y[i].d) * sc;
            if (!d)
                continue;
            const float dm = shoal_fp16_to_fp32(y[i].dmin) * m;
            for (int ii = 0; ii < 32; ++ii) {
                int l = nearest_int((x[32 * j + ii] + dm) / d);
                L[32 * j + ii] = (uint8_t)imax(0, imin(15, l));
            }
        }

        uint8_t *q = y[i].qs;
        for (int j = 0; j < SHOAL_QK_K; j += 64) {
            for (int l = 0; l < 32; ++l)
                q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
            q += 32;
        }
        x += SHOAL_QK_K;
    }
}

static void dequantize_q4_K(const shoal_block_q4_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const float d = shoal_fp16_to_fp32(x[i].d);
        const float min = shoal_fp16_to_fp32(x[i].dmin);
        int is = 0;
        uint8_t sc, m;
        for (int j = 0; j < SHOAL_QK_K; j += 64) {
            get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * (q[l] >> 4) - m2;
            q += 32;
            is += 2;
        }
    }
}

static void quantize_q6_K(const float *x, shoal_block_q6_K *y, int64_t nb)
{
    int8_t L[SHOAL_QK_K];
    float scales[SHOAL_QK_K / 16];

    for (int64_t i = 0; i < nb; i++) {
        float max_scale = 0;
        float max_abs_scale = 0;
        for (int ib = 0; ib < SHOAL_QK_K / 16; ++ib) {
            const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }

        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof(y[i]));
            y[i].d = shoal_fp32_to_fp16(0.f);
            x += SHOAL_QK_K;
            continue;
        }

        float iscale = -128.f / max_scale;
        y[i].d = shoal_fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < SHOAL_QK_K / 16; ++ib)
            y[i].scales[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));

        for (int j = 0; j < SHOAL_QK_K / 16; ++j) {
            float d = shoal_fp16_to_fp32(y[i].d) * y[i].scales[j];
            if (!d)
                continue;
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int(x[16 * j + ii] / d);
                l = imax(-32, imin(31, l));
                L[16 * j + ii] = (int8_t)(l + 32);
            }
        }

        uint8_t *ql = y[i].ql;
        uint8_t *qh = y[i].qh;
        for (int j = 0; j < SHOAL_QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l + 0] & 0xF;
                const uint8_t q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF;
                const uint8_t q4 = L[j + l + 96] & 0xF;
                ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
            }
            ql += 64;
            qh += 32;
        }
        x += SHOAL_QK_K;
    }
}

static void dequantize_q6_K(const shoal_block_q6_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = shoal_fp16_to_fp32(x[i].d);
        const uint8_t *ql = x[i].ql;
        const uint8_t *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < SHOAL_QK_K; n += 128) {
            for (int l = 0; l < 32; ++l) {
                int is = l / 16;
                const int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

/* Number of blocks in n elements of type, or -1 if n is not valid for it. */
static int64_t row_blocks(int type, int64_t n)
{
    const shoal_type_traits *t = shoal_type_info(type);
    if (!t || n < 0 || n % t->block_elems != 0)
        return -1;
    return n / t->block_elems;
}

void shoal_quantize_row(int type, const float *x, void *y, int64_t n)
{
    int64_t nb = row_blocks(type, n);
    if (nb <= 0)
        return;
    switch (type) {
    case SHOAL_TYPE_F32:
        memmove(y, x, (size_t)n * sizeof(float));
        break;
    case SHOAL_TYPE_F16: {
        uint16_t *h = y;
        for (int64_t i = 0; i < n; i++)
            h[i] = shoal_fp32_to_fp16(x[i]);
        break;
    }
    case SHOAL_TYPE_BF16: {
        uint16_t *h = y;
        for (int64_t i = 0; i < n; i++)
            h[i] = shoal_fp32_to_bf16(x[i]);
        break;
    }
    case SHOAL_TYPE_Q4_0: quantize_q4_0(x, y, nb); break;
    case SHOAL_TYPE_Q8_0: quantize_q8_0(x, y, nb); break;
    case SHOAL_TYPE_Q4_K: quantize_q4_K(x, y, nb); break;
    case SHOAL_TYPE_Q6_K: quantize_q6_K(x, y, nb); break;
    default: break;
    }
}

void shoal_dequantize_row(int type, const void *x, float *y, int64_t n)
{
    int64_t nb = row_blocks(type, n);
    if (nb <= 0)
        return;
    switch (type) {
    case SHOAL_TYPE_F32:
        memmove(y, x, (size_t)n * sizeof(float));
        break;
    case SHOAL_TYPE_F16: {
        const uint16_t *h = x;
        for (int64_t i = 0; i < n; i++)
            y[i] = shoal_fp16_to_fp32(h[i]);
        break;
    }
    case SHOAL_TYPE_BF16: {
        const uint16_t *h = x;
        for (int64_t i = 0; i < n; i++)
            y[i] = shoal_bf16_to_fp32(h[i]);
        break;
    }
    case SHOAL_TYPE_Q4_0: dequantize_q4_0(x, y, nb); break;
    case SHOAL_TYPE_Q8_0: dequantize_q8_0(x, y, nb); break;
    case SHOAL_TYPE_Q4_K: dequantize_q4_K(x, y, nb); break;
    case SHOAL_TYPE_Q6_K: dequantize_q6_K(x, y, nb); break;
    default: break;
    }
}
