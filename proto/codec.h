/*
 * Tensor payload codecs: how activations (and their gradients) travel in the
 * raw frames that follow a message's msgpack header.
 *
 * A tensor frame holds exactly one tensor, row-major, in one codec; its
 * descriptor (codec, shape, byte length) travels in the header (wire.h).
 * The sender picks the codec per request: f32 is exact, f16/bf16 halve the
 * bytes, blockwise int8 quarters them. Every multi-byte value is
 * little-endian, whatever the host. Frames need not be aligned.
 *
 *   F32   (id 0)  4 bytes per value, IEEE binary32.
 *   F16   (id 1)  2 bytes per value, IEEE binary16, round to nearest even.
 *   BF16  (id 2)  2 bytes per value, the top half of binary32, round to
 *                 nearest even.
 *   I8B64 (id 3)  the tensor's values, flattened row-major, cut into blocks
 *                 of 64 (the last block holds the n % 64 leftover values when
 *                 n is not a multiple of 64). A block of k values is a
 *                 binary32 scale d followed by k int8 codes q[i] in
 *                 [-127, 127]; value i is d * q[i]. The encoder takes
 *                 d = max|x| / 127 over the block and q[i] = round(x[i] / d)
 *                 (nearest, ties to even), or d = 0 and q = 0 when the block
 *                 is all zeros. d is at most 0x1.020406p+121 (bits
 *                 0x7c010203), the largest d with 127 d finite; the encoder
 *                 clamps to it (only values within 127 ulps of FLT_MAX need
 *                 it). Size: 4 * ceil(n / 64) + n bytes.
 *
 * Error bounds of a round trip f32 -> codec -> f32 (for finite inputs that
 * the codec can represent):
 *   F32   exact.
 *   F16   |e| <= 2^-11 |x| for |x| >= 2^-14 (normal range), |e| <= 2^-25
 *         below it; |x| > 65504 cannot be encoded (SHOAL_ERR_RANGE).
 *   BF16  |e| <= 2^-8 |x| (normal range).
 *   I8B64 |e| <= d / 2 (+ one rounding of d * q), d = max|x| / 127 of x's
 *         block: about 0.4% of the block's largest magnitude.
 *
 * Non-finite values are refused both ways. An encoder given NaN or Inf, or
 * a value that overflows the codec, returns SHOAL_ERR_RANGE: the caller's
 * own activations blew up, and that must not cross the wire silently. A
 * decoder that meets NaN or Inf in a peer's payload (including an int8
 * scale that is negative (or -0), non-finite or above that maximum, or
 * an int8 code of -128) returns SHOAL_ERR_FORMAT: a peer that sends them is
 * broken or hostile, and the receiver treats the message as malformed.
 *
 * Sizes: a descriptor has 1..3 dims, each >= 1; the element count is
 * checked for overflow and capped at SHOAL_CODEC_MAX_ELEMS, and its byte
 * length must equal shoal_codec_size(codec, elements) exactly. Decoders
 * check the frame length against the descriptor before reading a byte.
 *
 * THREAD SAFETY: all functions are pure and thread-safe. None allocates.
 */
#ifndef SHOAL_PROTO_CODEC_H
#define SHOAL_PROTO_CODEC_H

#include <stddef.h>
#include <stdint.h>

typedef enum shoal_codec {
    SHOAL_CODEC_F32 = 0,
    SHOAL_CODEC_F16 = 1,
    SHOAL_CODEC_BF16 = 2,
    SHOAL_CODEC_I8B64 = 3,
    SHOAL_CODEC__COUNT
} shoal_codec;

_Static_assert(SHOAL_CODEC_F32 == 0 && SHOAL_CODEC_F16 == 1 &&
               SHOAL_CODEC_BF16 == 2 && SHOAL_CODEC_I8B64 == 3,
               "codec ids travel on the wire: never renumber");

#define SHOAL_CODEC_I8_BLOCK 64                /* values per int8 block */
#define SHOAL_CODEC_MAX_DIMS 3
#define SHOAL_CODEC_MAX_ELEMS (UINT64_C(1) << 28) /* 1 GiB as f32 */
/* The largest tensor frame any codec produces. */
#define SHOAL_CODEC_MAX_BYTES (SHOAL_CODEC_MAX_ELEMS * 4)

/* A tensor as described in a message header. ndim in 1..3; shape[i] for
 * i >= ndim must be 0. nbytes is the exact length of the tensor frame. */
typedef struct shoal_codec_desc {
    uint32_t codec;                         /* shoal_codec */
    uint32_t ndim;
    uint32_t shape[SHOAL_CODEC_MAX_DIMS];   /* e.g. (ntok, dim) */
    uint64_t nbytes;
} shoal_codec_desc;

/* "f32", "f16", "bf16", "i8b64"; NULL for an unknown id. */
const char *shoal_codec_name(int codec);

/* The codec called `name` (exact, lowercase as above), or -1. */
int shoal_codec_from_name(const char *name);

/* Bytes that n values take in `codec`; 0 for an unknown codec, n == 0 or
 * n > SHOAL_CODEC_MAX_ELEMS. */
size_t shoal_codec_size(int codec, uint64_t n);

/* Fill *d for a tensor of `ndim` dims `shape` in `codec`, computing nbytes.
 * Returns SHOAL_ERR_ARG for an unknown codec or a bad ndim, a zero dim, or
 * more than SHOAL_CODEC_MAX_ELEMS elements (d is zeroed then). */
int shoal_codec_desc_init(shoal_codec_desc *d, int codec, uint32_t ndim,
                          const uint32_t *shape);

/* Check a descriptor that came from a peer: known codec (else
 * SHOAL_ERR_UNSUPPORTED), ndim 1..3, dims >= 1 and unused dims 0, element
 * count within the cap, nbytes equal to the codec's size (else
 * SHOAL_ERR_FORMAT). On success stores the element count in *nelems
 * (nelems may be NULL). */
int shoal_codec_desc_check(const shoal_codec_desc *d, uint64_t *nelems);

/* Encode the tensor x (d->shape, row-major f32) into out, which must hold
 * d->nbytes bytes (out_size >= d->nbytes, else SHOAL_ERR_ARG). Returns
 * SHOAL_ERR_RANGE if a value is not finite or does not fit the codec; out's
 * contents are then unspecified. */
int shoal_codec_encode(const shoal_codec_desc *d, const float *x, void *out,
                       size_t out_size);

/* Decode a peer's tensor frame (frame, frame_len) described by d into
 * out (d's element count of f32, row-major; out_elems is out's capacity).
 * Checks d (see shoal_codec_desc_check), then frame_len == d->nbytes, then
 * out_elems, all before touching frame; then rejects NaN/Inf and bad int8
 * blocks with SHOAL_ERR_FORMAT (out's contents are then unspecified).
 * out_elems too small is SHOAL_ERR_ARG. */
int shoal_codec_decode(const shoal_codec_desc *d, const void *frame,
                       size_t frame_len, float *out, size_t out_elems);

#endif
