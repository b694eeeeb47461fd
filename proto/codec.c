/*
 * Tensor payload codecs (see codec.h for the formats and error bounds).
 *
 * Every peer-supplied length is checked against the descriptor before the
 * payload is read, and the descriptor itself is checked first: the element
 * count is a product of three u32 dims, computed in u64 with a cap after
 * each factor so it can never wrap. Values are read and written through
 * memcpy as little-endian, so frames may sit at any address and the code is
 * right on either byte order. The loops allocate nothing.
 */
#include "proto/codec.h"

#include <math.h>
#include <string.h>

#include "kernels/err.h"
#include "kernels/types.h"

static const char *const codec_names[SHOAL_CODEC__COUNT] = {
    [SHOAL_CODEC_F32] = "f32",
    [SHOAL_CODEC_F16] = "f16",
    [SHOAL_CODEC_BF16] = "bf16",
    [SHOAL_CODEC_I8B64] = "i8b64",
};

/* The largest int8 scale d whose 127 d stays finite (bits 0x7c010203);
 * FLT_MAX / 127 rounds one ulp above it. */
#define I8_SCALE_MAX 0x1.020406p+121f

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define CODEC_BIG_ENDIAN 1
#else
#define CODEC_BIG_ENDIAN 0
#endif

static inline uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if CODEC_BIG_ENDIAN
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline void store_u32(uint8_t *p, uint32_t v)
{
#if CODEC_BIG_ENDIAN
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, 4);
}

static inline uint16_t load_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
#if CODEC_BIG_ENDIAN
    v = __builtin_bswap16(v);
#endif
    return v;
}

static inline void store_u16(uint8_t *p, uint16_t v)
{
#if CODEC_BIG_ENDIAN
    v = __builtin_bswap16(v);
#endif
    memcpy(p, &v, 2);
}

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

const char *shoal_codec_name(int codec)
{
    if (codec < 0 || codec >= SHOAL_CODEC__COUNT)
        return NULL;
    return codec_names[codec];
}

int shoal_codec_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int c = 0; c < SHOAL_CODEC__COUNT; c++)
        if (strcmp(name, codec_names[c]) == 0)
            return c;
    return -1;
}

size_t shoal_codec_size(int codec, uint64_t n)
{
    if (n == 0 || n > SHOAL_CODEC_MAX_ELEMS)
        return 0;
    switch (codec) {
    case SHOAL_CODEC_F32: return (size_t)(n * 4);
    case SHOAL_CODEC_F16:
    case SHOAL_CODEC_BF16: return (size_t)(n * 2);
    case SHOAL_CODEC_I8B64:
        return (size_t)(4 * ((n + SHOAL_CODEC_I8_BLOCK - 1) / SHOAL_CODEC_I8_BLOCK) + n);
    default: return 0;
    }
}

/* Element count of ndim dims, 0 if ndim is bad, a dim is 0, an unused dim is
 * not 0, or the product exceeds the cap. */
static uint64_t shape_elems(uint32_t ndim, const uint32_t *shape)
{
    if (ndim < 1 || ndim > SHOAL_CODEC_MAX_DIMS)
        return 0;
    uint64_t n = 1;
    for (uint32_t i = 0; i < ndim; i++) {
        if (shape[i] == 0)
            return 0;
        n *= shape[i]; /* n <= 2^28 and shape[i] < 2^32: no wrap in u64 */
        if (n > SHOAL_CODEC_MAX_ELEMS)
            return 0;
    }
    return n;
}

int shoal_codec_desc_init(shoal_codec_desc *d, int codec, uint32_t ndim,
                          const uint32_t *shape)
{
    memset(d, 0, sizeof *d);
    if (!shape || codec < 0 || codec >= SHOAL_CODEC__COUNT)
        return SHOAL_ERR_ARG;
    uint64_t n = shape_elems(ndim, shape);
    if (n == 0)
        return SHOAL_ERR_ARG;
    d->codec = (uint32_t)codec;
    d->ndim = ndim;
    for (uint32_t i = 0; i < ndim; i++)
        d->shape[i] = shape[i];
    d->nbytes = shoal_codec_size(codec, n);
    return SHOAL_OK;
}

int shoal_codec_desc_check(const shoal_codec_desc *d, uint64_t *nelems)
{
    if (d->codec >= SHOAL_CODEC__COUNT)
        return SHOAL_ERR_UNSUPPORTED;
    uint64_t n = shape_elems(d->ndim, d->shape);
    if (n == 0)
        return SHOAL_ERR_FORMAT;
    for (uint32_t i = d->ndim; i < SHOAL_CODEC_MAX_DIMS; i++)
        if (d->shape[i] != 0)
            return SHOAL_ERR_FORMAT;
    if (d->nbytes != (uint64_t)shoal_codec_size((int)d->codec, n))
        return SHOAL_ERR_FORMAT;
    if (nelems)
        *nelems = n;
    return SHOAL_OK;
}

static int encode_i8b64(const float *x, size_t n, uint8_t *o)
{
    for (size_t b = 0; b < n; b += SHOAL_CODEC_I8_BLOCK) {
        size_t k = n - b < SHOAL_CODEC_I8_BLOCK ? n - b : SHOAL_CODEC_I8_BLOCK;
        const float *xb = x + b;
        float amax = 0.0f;
        for (size_t i = 0; i < k; i++) {
            if (!isfinite(xb[i]))
                return SHOAL_ERR_RANGE;
            float a = fabsf(xb[i]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f;
        if (d > I8_SCALE_MAX) /* only for |x| within 127 ulps of FLT_MAX */
            d = I8_SCALE_MAX;
        store_u32(o, f32_bits(d));
        int8_t *q = (int8_t *)(o + 4);
        for (size_t i = 0; i < k; i++) {
            /* |xb[i] / d| <= 127 up to rounding; the clamp settles it. A
             * division (not a reciprocal) stays finite for subnormal d. */
            long v = d > 0.0f ? lrintf(xb[i] / d) : 0;
            v = v > 127 ? 127 : v < -127 ? -127 : v;
            q[i] = (int8_t)v;
        }
        o += 4 + k;
    }
    return SHOAL_OK;
}

int shoal_codec_encode(const shoal_codec_desc *d, const float *x, void *out,
                       size_t out_size)
{
    uint64_t n64;
    if (!d || !x || !out || shoal_codec_desc_check(d, &n64) != SHOAL_OK)
        return SHOAL_ERR_ARG;
    if (out_size < d->nbytes)
        return SHOAL_ERR_ARG;
    size_t n = (size_t)n64;
    uint8_t *o = out;
    switch (d->codec) {
    case SHOAL_CODEC_F32:
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(x[i]))
                return SHOAL_ERR_RANGE;
            store_u32(o + 4 * i, f32_bits(x[i]));
        }
        return SHOAL_OK;
    case SHOAL_CODEC_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = shoal_fp32_to_fp16(x[i]);
            if ((h & 0x7c00u) == 0x7c00u) /* NaN in, or Inf in or by overflow */
                return SHOAL_ERR_RANGE;
            store_u16(o + 2 * i, h);
        }
        return SHOAL_OK;
    case SHOAL_CODEC_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = shoal_fp32_to_bf16(x[i]);
            if ((h & 0x7f80u) == 0x7f80u)
                return SHOAL_ERR_RANGE;
            store_u16(o + 2 * i, h);
        }
        return SHOAL_OK;
    case SHOAL_CODEC_I8B64:
        return encode_i8b64(x, n, o);
    }
    return SHOAL_ERR_ARG;
}

static int decode_i8b64(const uint8_t *p, size_t n, float *y)
{
    for (size_t b = 0; b < n; b += SHOAL_CODEC_I8_BLOCK) {
        size_t k = n - b < SHOAL_CODEC_I8_BLOCK ? n - b : SHOAL_CODEC_I8_BLOCK;
        uint32_t bits = load_u32(p);
        float d = bits_f32(bits);
        /* sign bit clear, finite, small enough that 127 d is finite */
        if ((bits & 0x80000000u) || !(d <= I8_SCALE_MAX))
            goto malformed;
        const int8_t *q = (const int8_t *)(p + 4);
        for (size_t i = 0; i < k; i++) {
            if (q[i] == -128)
                goto malformed;
            y[b + i] = d * (float)q[i];
        }
        p += 4 + k;
    }
    return SHOAL_OK;
malformed:
    return SHOAL_ERR_FORMAT;
}

int shoal_codec_decode(const shoal_codec_desc *d, const void *frame,
                       size_t frame_len, float *out, size_t out_elems)
{
    if (!d)
        return SHOAL_ERR_ARG;
    uint64_t n64;
    int rc = shoal_codec_desc_check(d, &n64);
    if (rc != SHOAL_OK)
        return rc;
    if ((uint64_t)frame_len != d->nbytes)
        return SHOAL_ERR_FORMAT;
    if (!frame || !out || (uint64_t)out_elems < n64)
        return SHOAL_ERR_ARG;
    size_t n = (size_t)n64;
    const uint8_t *p = frame;
    switch (d->codec) {
    case SHOAL_CODEC_F32:
        for (size_t i = 0; i < n; i++) {
            uint32_t u = load_u32(p + 4 * i);
            if ((u & 0x7f800000u) == 0x7f800000u)
                return SHOAL_ERR_FORMAT;
            out[i] = bits_f32(u);
        }
        return SHOAL_OK;
    case SHOAL_CODEC_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = load_u16(p + 2 * i);
            if ((h & 0x7c00u) == 0x7c00u)
                return SHOAL_ERR_FORMAT;
            out[i] = shoal_fp16_to_fp32(h);
        }
        return SHOAL_OK;
    case SHOAL_CODEC_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = load_u16(p + 2 * i);
            if ((h & 0x7f80u) == 0x7f80u)
                return SHOAL_ERR_FORMAT;
            out[i] = bits_f32((uint32_t)h << 16);
        }
        return SHOAL_OK;
    case SHOAL_CODEC_I8B64:
        return decode_i8b64(p, n, out);
    }
    return SHOAL_ERR_UNSUPPORTED;
}
