/*
 * A bounded msgpack reader, shared by the wire header decoder (proto/wire)
 * and the DHT record decoder (swarm/record): both read bytes from peers.
 *
 * The reader never trusts a length: every count and size is held against
 * the bytes that remain before anything is read or skipped, so no input
 * makes it read out of bounds or loop longer than the input is long. Run
 * shoal_wire_msgpack_check (proto/wire.h) on a buffer first to bound its
 * depth and element counts; this reader then walks it field by field.
 * Every function returns SHOAL_OK or SHOAL_ERR_FORMAT; on failure the
 * position is unspecified (stop reading).
 *
 * THREAD SAFETY: a reader belongs to one thread; no global state.
 */
#ifndef SHOAL_PROTO_MPREAD_H
#define SHOAL_PROTO_MPREAD_H

#include <stddef.h>
#include <stdint.h>

typedef struct shoal_mpr {
    const uint8_t *p;
    size_t len, off; /* the bytes, and the position in them */
} shoal_mpr;

/* n raw bytes (*out points into the buffer). */
int shoal_mpr_bytes(shoal_mpr *r, size_t n, const uint8_t **out);
/* An n-byte big-endian unsigned integer (n <= 8). */
int shoal_mpr_be(shoal_mpr *r, int n, uint64_t *v);
/* One type byte. */
int shoal_mpr_tag(shoal_mpr *r, uint8_t *tag);
/* A non-negative integer in any msgpack int encoding, at most max. */
int shoal_mpr_uint(shoal_mpr *r, uint64_t max, uint64_t *v);
int shoal_mpr_u32(shoal_mpr *r, uint32_t *v);
/* A float32 or float64 (any value, NaN included: the caller checks). */
int shoal_mpr_double(shoal_mpr *r, double *v);
/* An array (map = 0) or map (map = 1) header; *n items (pairs for a map),
 * at most what the remaining bytes can hold. */
int shoal_mpr_count(shoal_mpr *r, int map, uint32_t *n);
/* A str (bin = 0) or bin (bin = 1): *s points into the buffer. */
int shoal_mpr_raw(shoal_mpr *r, int bin, const uint8_t **s, uint32_t *n);
/* Skip one object of any kind (iterative). */
int shoal_mpr_skip(shoal_mpr *r);
/* A str into a NUL-terminated text field of size bytes: valid UTF-8
 * without NUL, shorter than size. */
int shoal_mpr_text(shoal_mpr *r, char *field, size_t size);
/* A bin of exactly size bytes into out. */
int shoal_mpr_bin_exact(shoal_mpr *r, uint8_t *out, uint32_t size);

/* The length of the valid UTF-8 sequence at s[0..n) (n >= 1), or 0 when
 * it is not one (NUL counts as invalid: text fields never hold it). */
size_t shoal_mpr_utf8_seq(const uint8_t *s, size_t n);

/* 1 when s[0..n) is valid UTF-8 (shortest forms, no surrogates, at most
 * U+10FFFF) without NUL; else 0. */
int shoal_mpr_utf8_valid(const uint8_t *s, size_t n);

#endif
