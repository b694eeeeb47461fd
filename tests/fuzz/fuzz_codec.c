/*
 * Fuzz target: tensor frames. Input layout:
 *   byte 0      codec (any value: unknown ones must be refused)
 *   byte 1      ndim in the low 3 bits; bit 7 set: nbytes is computed from
 *               the shape (so that valid frames are easy to reach)
 *   bytes 2..13 three little-endian u32 dims
 *   bytes 14..21 little-endian u64 nbytes (ignored when bit 7 is set)
 *   the rest    the tensor frame
 * Decoding must refuse anything inconsistent before reading the frame.
 * What decodes must be finite; f32/f16/bf16 must re-encode to the same
 * bytes, int8 within the stated bound of the first decode.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "proto/codec.h"

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 22)
        return 0;
    shoal_codec_desc d;
    memset(&d, 0, sizeof d);
    d.codec = data[0];
    d.ndim = data[1] & 7;
    for (int i = 0; i < 3; i++)
        d.shape[i] = (uint32_t)le(data + 2 + 4 * i, 4);
    d.nbytes = le(data + 14, 8);
    const uint8_t *frame = data + 22;
    size_t frame_len = size - 22;
    uint64_t n = 0;
    int dc = shoal_codec_desc_check(&d, &n);
    if (dc == SHOAL_OK && (data[1] & 0x80)) {
        /* nothing to fix: the descriptor is already consistent */
    } else if (data[1] & 0x80) {
        uint64_t m = 1;
        int ok = d.ndim >= 1 && d.ndim <= 3;
        for (uint32_t i = 0; ok && i < d.ndim; i++) {
            m *= d.shape[i] ? d.shape[i] : 1;
            ok = m <= SHOAL_CODEC_MAX_ELEMS;
        }
        if (ok)
            d.nbytes = shoal_codec_size((int)d.codec, m);
        dc = shoal_codec_desc_check(&d, &n);
    }
    float dummy;
    int rc = shoal_codec_decode(&d, frame, frame_len, &dummy, 0);
    if (dc != SHOAL_OK) {
        REQUIRE(rc == dc); /* refused on the descriptor alone */
        return 0;
    }
    if ((uint64_t)frame_len != d.nbytes) {
        REQUIRE(rc == SHOAL_ERR_FORMAT);
        return 0;
    }
    REQUIRE(rc == SHOAL_ERR_ARG); /* no room: refused before reading */
    /* n <= frame_len here: every element takes at least one byte */
    REQUIRE(n <= frame_len);
    float *y = malloc(n * sizeof *y), *y2 = malloc(n * sizeof *y2);
    uint8_t *re = malloc(frame_len);
    REQUIRE(y && y2 && re);
    rc = shoal_codec_decode(&d, frame, frame_len, y, n);
    REQUIRE(rc == SHOAL_OK || rc == SHOAL_ERR_FORMAT);
    if (rc == SHOAL_OK) {
        for (uint64_t i = 0; i < n; i++)
            REQUIRE(isfinite(y[i]));
        REQUIRE(shoal_codec_encode(&d, y, re, frame_len) == SHOAL_OK);
        if (d.codec != SHOAL_CODEC_I8B64) {
            REQUIRE(memcmp(re, frame, frame_len) == 0);
        } else {
            REQUIRE(shoal_codec_decode(&d, re, frame_len, y2, n) == SHOAL_OK);
            for (uint64_t b = 0; b < n; b += SHOAL_CODEC_I8_BLOCK) {
                uint64_t e = b + SHOAL_CODEC_I8_BLOCK < n ? b + SHOAL_CODEC_I8_BLOCK : n;
                float amax = 0;
                for (uint64_t i = b; i < e; i++)
                    amax = fmaxf(amax, fabsf(y[i]));
                for (uint64_t i = b; i < e; i++)
                    REQUIRE(fabsf(y2[i] - y[i]) <= amax / 127.0f * 0.5f + fabsf(y[i]) * 0x1p-22f + 0x1p-140f);
            }
        }
    }
    free(y);
    free(y2);
    free(re);
    return 0;
}
