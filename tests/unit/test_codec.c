/*
 * Tensor codecs: exact bytes for known values, round trips of every codec
 * within the bounds stated in proto/codec.h, and rejection of every
 * malformed payload and descriptor (checked before the payload is read).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "kernels/err.h"
#include "proto/codec.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* roughly N(0, 1)-sized values in [-4, 4) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((float)(rng >> 40) / (float)(1 << 24) - 0.5f) * 8.0f;
}

static void test_names_sizes(void)
{
    for (int c = 0; c < SHOAL_CODEC__COUNT; c++)
        CHECK(shoal_codec_from_name(shoal_codec_name(c)) == c);
    CHECK(shoal_codec_name(4) == NULL && shoal_codec_name(-1) == NULL);
    CHECK(shoal_codec_from_name("F32") == -1 && shoal_codec_from_name(NULL) == -1);

    CHECK(shoal_codec_size(SHOAL_CODEC_F32, 10) == 40);
    CHECK(shoal_codec_size(SHOAL_CODEC_F16, 10) == 20);
    CHECK(shoal_codec_size(SHOAL_CODEC_BF16, 10) == 20);
    CHECK(shoal_codec_size(SHOAL_CODEC_I8B64, 1) == 5);
    CHECK(shoal_codec_size(SHOAL_CODEC_I8B64, 64) == 68);
    CHECK(shoal_codec_size(SHOAL_CODEC_I8B64, 65) == 73);
    CHECK(shoal_codec_size(SHOAL_CODEC_I8B64, 128) == 136);
    CHECK(shoal_codec_size(SHOAL_CODEC_F32, 0) == 0);
    CHECK(shoal_codec_size(SHOAL_CODEC_F32, SHOAL_CODEC_MAX_ELEMS) == SHOAL_CODEC_MAX_BYTES);
    CHECK(shoal_codec_size(SHOAL_CODEC_F32, SHOAL_CODEC_MAX_ELEMS + 1) == 0);
    CHECK(shoal_codec_size(7, 10) == 0);
}

static void test_desc(void)
{
    shoal_codec_desc d;
    uint32_t s2[2] = {3, 4096};
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_BF16, 2, s2) == SHOAL_OK);
    CHECK(d.nbytes == 3 * 4096 * 2 && d.ndim == 2 && d.shape[2] == 0);
    uint64_t n = 0;
    CHECK(shoal_codec_desc_check(&d, &n) == SHOAL_OK && n == 3 * 4096);

    uint32_t zero[2] = {3, 0};
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F32, 2, zero) == SHOAL_ERR_ARG);
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F32, 0, s2) == SHOAL_ERR_ARG);
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F32, 4, s2) == SHOAL_ERR_ARG);
    CHECK(shoal_codec_desc_init(&d, 4, 2, s2) == SHOAL_ERR_ARG);
    CHECK(shoal_codec_desc_init(&d, -1, 2, s2) == SHOAL_ERR_ARG);
    /* products that wrap 32 and 64 bits, and one just over the cap */
    uint32_t huge[3] = {UINT32_MAX, UINT32_MAX, UINT32_MAX};
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F32, 3, huge) == SHOAL_ERR_ARG);
    uint32_t wrap32[2] = {65536, 65536};
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F32, 2, wrap32) == SHOAL_ERR_ARG);
    uint32_t cap[3] = {1 << 10, 1 << 10, 1 << 8};
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F32, 3, cap) == SHOAL_OK);
    CHECK(d.nbytes == SHOAL_CODEC_MAX_BYTES);
    uint32_t over[3] = {1 << 10, 1 << 10, (1 << 8) + 1};
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F32, 3, over) == SHOAL_ERR_ARG);

    /* peer descriptors */
    shoal_codec_desc p = {SHOAL_CODEC_F16, 2, {2, 8, 0}, 32};
    CHECK(shoal_codec_desc_check(&p, NULL) == SHOAL_OK);
    p.nbytes = 33;
    CHECK(shoal_codec_desc_check(&p, NULL) == SHOAL_ERR_FORMAT);
    p.nbytes = 32;
    p.shape[2] = 1; /* a dim beyond ndim */
    CHECK(shoal_codec_desc_check(&p, NULL) == SHOAL_ERR_FORMAT);
    p.shape[2] = 0;
    p.codec = 9;
    CHECK(shoal_codec_desc_check(&p, NULL) == SHOAL_ERR_UNSUPPORTED);
    shoal_codec_desc h = {SHOAL_CODEC_F32, 3, {UINT32_MAX, UINT32_MAX, UINT32_MAX}, 0};
    CHECK(shoal_codec_desc_check(&h, NULL) == SHOAL_ERR_FORMAT);
    h.nbytes = UINT64_MAX;
    CHECK(shoal_codec_desc_check(&h, NULL) == SHOAL_ERR_FORMAT);
    shoal_codec_desc nd = {SHOAL_CODEC_F32, 0, {0, 0, 0}, 0};
    CHECK(shoal_codec_desc_check(&nd, NULL) == SHOAL_ERR_FORMAT);
    nd.ndim = 4;
    CHECK(shoal_codec_desc_check(&nd, NULL) == SHOAL_ERR_FORMAT);
}

/* Exact bytes: the codecs are part of the wire. */
static void test_golden(void)
{
    float x[4] = {127.0f, -63.5f, 0.5f, 1.5f};
    uint8_t out[32];
    shoal_codec_desc d;
    uint32_t s[1] = {4};

    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F32, 1, s) == SHOAL_OK);
    CHECK(shoal_codec_encode(&d, x, out, sizeof out) == SHOAL_OK);
    static const uint8_t f32[16] = {0x00, 0x00, 0xfe, 0x42, 0x00, 0x00, 0x7e, 0xc2,
                                    0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0xc0, 0x3f};
    CHECK(memcmp(out, f32, 16) == 0);

    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F16, 1, s) == SHOAL_OK);
    CHECK(shoal_codec_encode(&d, x, out, sizeof out) == SHOAL_OK);
    static const uint8_t f16[8] = {0xf0, 0x57, 0xf0, 0xd3, 0x00, 0x38, 0x00, 0x3e};
    CHECK(memcmp(out, f16, 8) == 0);

    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_BF16, 1, s) == SHOAL_OK);
    CHECK(shoal_codec_encode(&d, x, out, sizeof out) == SHOAL_OK);
    static const uint8_t bf16[8] = {0xfe, 0x42, 0x7e, 0xc2, 0x00, 0x3f, 0xc0, 0x3f};
    CHECK(memcmp(out, bf16, 8) == 0);

    /* d = 127/127 = 1; -63.5 and 0.5 round to even: -64 and 0; 1.5 -> 2 */
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_I8B64, 1, s) == SHOAL_OK);
    CHECK(d.nbytes == 8);
    CHECK(shoal_codec_encode(&d, x, out, sizeof out) == SHOAL_OK);
    static const uint8_t i8[8] = {0x00, 0x00, 0x80, 0x3f, 0x7f, 0xc0, 0x00, 0x02};
    CHECK(memcmp(out, i8, 8) == 0);
    float y[4];
    CHECK(shoal_codec_decode(&d, i8, 8, y, 4) == SHOAL_OK);
    CHECK(y[0] == 127.0f && y[1] == -64.0f && y[2] == 0.0f && y[3] == 2.0f);
}

/* Encode x (shape) in codec, decode, and check the stated bound. */
static void roundtrip(int codec, uint32_t ndim, const uint32_t *shape, const float *x)
{
    shoal_codec_desc d;
    CHECK(shoal_codec_desc_init(&d, codec, ndim, shape) == SHOAL_OK);
    uint64_t n;
    CHECK(shoal_codec_desc_check(&d, &n) == SHOAL_OK);
    /* one spare byte in front: frames need not be aligned */
    uint8_t *buf = malloc(d.nbytes + 1);
    float *y = malloc(n * sizeof *y);
    CHECK(shoal_codec_encode(&d, x, buf + 1, d.nbytes) == SHOAL_OK);
    CHECK(shoal_codec_decode(&d, buf + 1, d.nbytes, y, n) == SHOAL_OK);
    int bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]), e = fabsf(y[i] - x[i]), tol = 0;
        switch (codec) {
        case SHOAL_CODEC_F32: tol = 0; break;
        case SHOAL_CODEC_F16: tol = a >= 0x1p-14f ? a * 0x1p-11f : 0x1p-25f; break;
        case SHOAL_CODEC_BF16: tol = a * 0x1p-8f; break;
        case SHOAL_CODEC_I8B64: {
            uint64_t b0 = i / 64 * 64, b1 = b0 + 64 < n ? b0 + 64 : n;
            float amax = 0;
            for (uint64_t j = b0; j < b1; j++)
                amax = fmaxf(amax, fabsf(x[j]));
            float dd = amax / 127.0f;
            tol = dd * 0.5f + a * 0x1p-23f + FLT_MIN;
            break;
        }
        }
        if (!(e <= tol))
            bad++;
    }
    CHECK_MSG(bad == 0, "%s: %d values off bound", shoal_codec_name(codec), bad);
    /* the frame length must match exactly, both ways */
    CHECK(shoal_codec_decode(&d, buf + 1, d.nbytes - 1, y, n) == SHOAL_ERR_FORMAT);
    CHECK(shoal_codec_decode(&d, buf, d.nbytes + 1, y, n) == SHOAL_ERR_FORMAT);
    CHECK(shoal_codec_decode(&d, buf + 1, d.nbytes, y, n - 1) == SHOAL_ERR_ARG);
    CHECK(shoal_codec_encode(&d, x, buf, d.nbytes - 1) == SHOAL_ERR_ARG);
    free(buf);
    free(y);
}

static void test_roundtrips(void)
{
    const uint32_t shapes[][4] = {
        /* ndim, dims */
        {1, 1}, {2, 3, 7}, {2, 5, 64}, {2, 2, 100}, {3, 2, 3, 130}, {2, 4, 4096},
    };
    float *x = malloc(4 * 4096 * sizeof *x);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        uint64_t n = 1;
        for (uint32_t i = 0; i < shapes[s][0]; i++)
            n *= shapes[s][1 + i];
        for (uint64_t i = 0; i < n; i++) {
            x[i] = frand();
            if (i % 97 == 5)
                x[i] *= 1e-6f; /* small values next to big ones */
            if (i % 101 == 7)
                x[i] = 0.0f;
        }
        for (int c = 0; c < SHOAL_CODEC__COUNT; c++)
            roundtrip(c, shapes[s][0], shapes[s] + 1, x);
    }
    /* a wide dynamic range within f16's normal range, and subnormals */
    for (int i = 0; i < 256; i++)
        x[i] = ldexpf(1.0f + (float)i / 256.0f, i % 40 - 24) * (i & 1 ? -1.0f : 1.0f);
    uint32_t s256[1] = {256};
    for (int c = 0; c < SHOAL_CODEC__COUNT; c++)
        roundtrip(c, 1, s256, x);
    /* int8: an all-zero block, a block with one huge value, and blocks of
     * subnormals (scale underflows) */
    memset(x, 0, 192 * sizeof *x);
    x[70] = 3e38f;
    x[71] = -1.0f;
    for (int i = 128; i < 192; i++)
        x[i] = (i & 1 ? 1 : -1) * 1e-44f * (float)(i - 127);
    uint32_t s192[1] = {192};
    roundtrip(SHOAL_CODEC_I8B64, 1, s192, x);
    free(x);
}

static void test_encode_range(void)
{
    uint32_t s[1] = {3};
    shoal_codec_desc d;
    uint8_t out[64];
    for (int c = 0; c < SHOAL_CODEC__COUNT; c++) {
        CHECK(shoal_codec_desc_init(&d, c, 1, s) == SHOAL_OK);
        float nan[3] = {1.0f, NAN, 2.0f}, inf[3] = {-INFINITY, 0, 0};
        CHECK(shoal_codec_encode(&d, nan, out, sizeof out) == SHOAL_ERR_RANGE);
        CHECK(shoal_codec_encode(&d, inf, out, sizeof out) == SHOAL_ERR_RANGE);
    }
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F16, 1, s) == SHOAL_OK);
    float ok[3] = {65504.0f, -65504.0f, 65519.0f}; /* 65519 rounds down */
    CHECK(shoal_codec_encode(&d, ok, out, sizeof out) == SHOAL_OK);
    float big[3] = {0, 65520.0f, 0};                /* rounds to Inf */
    CHECK(shoal_codec_encode(&d, big, out, sizeof out) == SHOAL_ERR_RANGE);
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_BF16, 1, s) == SHOAL_OK);
    float bmax[3] = {0, FLT_MAX, 0};                 /* rounds to Inf in bf16 */
    CHECK(shoal_codec_encode(&d, bmax, out, sizeof out) == SHOAL_ERR_RANGE);
    float b_ok[3] = {3.3e38f, 1e-38f, -2.0f};
    CHECK(shoal_codec_encode(&d, b_ok, out, sizeof out) == SHOAL_OK);
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_I8B64, 1, s) == SHOAL_OK);
    float imax[3] = {FLT_MAX, -FLT_MAX, 1.0f};
    CHECK(shoal_codec_encode(&d, imax, out, sizeof out) == SHOAL_OK);
    float back[3];
    CHECK(shoal_codec_decode(&d, out, d.nbytes, back, 3) == SHOAL_OK);
    CHECK(isfinite(back[0]) && back[0] > 3.4e38f && back[1] == -back[0]);
    CHECK(out[0] == 0x03 && out[1] == 0x02 && out[2] == 0x01 && out[3] == 0x7c);
    shoal_codec_desc bad = {7, 1, {3, 0, 0}, 12};
    CHECK(shoal_codec_encode(&bad, imax, out, sizeof out) == SHOAL_ERR_ARG);
}

static void put_f32(uint8_t *p, uint32_t bits)
{
    p[0] = (uint8_t)bits;
    p[1] = (uint8_t)(bits >> 8);
    p[2] = (uint8_t)(bits >> 16);
    p[3] = (uint8_t)(bits >> 24);
}

/* Non-finite or ill-formed payloads from a peer are malformed. */
static void test_decode_reject(void)
{
    float y[70];
    shoal_codec_desc d32 = {SHOAL_CODEC_F32, 1, {2, 0, 0}, 8};
    uint8_t b[8] = {0};
    CHECK(shoal_codec_decode(&d32, b, 8, y, 2) == SHOAL_OK);
    const uint32_t bad32[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad32 / sizeof bad32[0]; i++) {
        put_f32(b + 4, bad32[i]);
        CHECK(shoal_codec_decode(&d32, b, 8, y, 2) == SHOAL_ERR_FORMAT);
    }
    put_f32(b + 4, 0x7f7fffffu); /* FLT_MAX is fine */
    CHECK(shoal_codec_decode(&d32, b, 8, y, 2) == SHOAL_OK && y[1] == FLT_MAX);

    shoal_codec_desc d16 = {SHOAL_CODEC_F16, 1, {2, 0, 0}, 4};
    uint8_t h[4] = {0x00, 0x3c, 0x00, 0x7c}; /* 1.0, +Inf */
    CHECK(shoal_codec_decode(&d16, h, 4, y, 2) == SHOAL_ERR_FORMAT);
    h[3] = 0xfe; /* NaN */
    CHECK(shoal_codec_decode(&d16, h, 4, y, 2) == SHOAL_ERR_FORMAT);
    h[2] = 0xff; h[3] = 0x7b; /* 65504 */
    CHECK(shoal_codec_decode(&d16, h, 4, y, 2) == SHOAL_OK && y[0] == 1.0f && y[1] == 65504.0f);
    h[2] = 0x01; h[3] = 0x00; /* smallest subnormal */
    CHECK(shoal_codec_decode(&d16, h, 4, y, 2) == SHOAL_OK && y[1] == 0x1p-24f);

    shoal_codec_desc db = {SHOAL_CODEC_BF16, 1, {1, 0, 0}, 2};
    uint8_t bb[2] = {0x80, 0x7f}; /* +Inf */
    CHECK(shoal_codec_decode(&db, bb, 2, y, 1) == SHOAL_ERR_FORMAT);
    bb[0] = 0xc1; /* NaN */
    CHECK(shoal_codec_decode(&db, bb, 2, y, 1) == SHOAL_ERR_FORMAT);
    bb[0] = 0x80; bb[1] = 0xbf; /* -1 */
    CHECK(shoal_codec_decode(&db, bb, 2, y, 1) == SHOAL_OK && y[0] == -1.0f);

    /* int8: 65 values = a full block then a block of one */
    shoal_codec_desc di = {SHOAL_CODEC_I8B64, 1, {65, 0, 0}, 73};
    uint8_t q[73];
    memset(q, 1, sizeof q);
    put_f32(q, 0x3f800000u);      /* 1.0 */
    put_f32(q + 68, 0x40000000u); /* 2.0 */
    CHECK(shoal_codec_decode(&di, q, 73, y, 65) == SHOAL_OK && y[0] == 1.0f && y[64] == 2.0f);
    const uint32_t bad_scales[] = {
        0xbf800000u, /* negative */
        0x80000000u, /* -0 */
        0x7f800000u, /* Inf */
        0x7fc00000u, /* NaN */
        0x7f7fffffu, /* FLT_MAX: 127 d overflows */
    };
    for (size_t i = 0; i < sizeof bad_scales / sizeof bad_scales[0]; i++) {
        put_f32(q + 68, bad_scales[i]);
        CHECK(shoal_codec_decode(&di, q, 73, y, 65) == SHOAL_ERR_FORMAT);
    }
    put_f32(q + 68, 0x7c010204u); /* FLT_MAX / 127 rounded: 127 d overflows */
    CHECK(shoal_codec_decode(&di, q, 73, y, 65) == SHOAL_ERR_FORMAT);
    put_f32(q + 68, 0x7c010203u); /* the largest scale allowed */
    q[72] = 0x81;                 /* -127 */
    CHECK(shoal_codec_decode(&di, q, 73, y, 65) == SHOAL_OK && isfinite(y[64]));
    q[72] = 0x80;                 /* -128 is not a code */
    CHECK(shoal_codec_decode(&di, q, 73, y, 65) == SHOAL_ERR_FORMAT);
    put_f32(q + 68, 0);           /* d = 0 */
    q[72] = 5;
    CHECK(shoal_codec_decode(&di, q, 73, y, 65) == SHOAL_OK && y[64] == 0.0f);

    /* descriptor problems are found before the frame is read: NULL frame */
    shoal_codec_desc h3 = {SHOAL_CODEC_F32, 3, {UINT32_MAX, UINT32_MAX, 2}, 8};
    CHECK(shoal_codec_decode(&h3, NULL, 8, y, 2) == SHOAL_ERR_FORMAT);
    shoal_codec_desc unk = {200, 1, {2, 0, 0}, 8};
    CHECK(shoal_codec_decode(&unk, NULL, 8, y, 2) == SHOAL_ERR_UNSUPPORTED);
    CHECK(shoal_codec_decode(&d32, NULL, 7, y, 2) == SHOAL_ERR_FORMAT);
    CHECK(shoal_codec_decode(&d32, NULL, 8, y, 2) == SHOAL_ERR_ARG);
    CHECK(shoal_codec_decode(NULL, b, 8, y, 2) == SHOAL_ERR_ARG);
    /* a frame that claims the cap but is short is refused without reading */
    uint32_t cap[2] = {1 << 14, 1 << 14};
    shoal_codec_desc big;
    CHECK(shoal_codec_desc_init(&big, SHOAL_CODEC_F32, 2, cap) == SHOAL_OK);
    CHECK(shoal_codec_decode(&big, b, 8, y, 70) == SHOAL_ERR_FORMAT);
}

int main(void)
{
    test_names_sizes();
    test_desc();
    test_golden();
    test_roundtrips();
    test_encode_range();
    test_decode_reject();
    return check_done();
}
