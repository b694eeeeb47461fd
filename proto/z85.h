/*
 * Z85, ZeroMQ's text encoding of binary keys (ZeroMQ RFC 32): every 4 bytes,
 * read as a big-endian u32, become 5 characters in base 85 from an alphabet
 * that needs no quoting in code or config files. A 32-byte CURVE key is 40
 * characters. Written here so that proto/ does not depend on libzmq.
 *
 * THREAD SAFETY: all functions are pure and thread-safe.
 */
#ifndef SHOAL_PROTO_Z85_H
#define SHOAL_PROTO_Z85_H

#include <stddef.h>
#include <stdint.h>

/* Characters (without the NUL) that n bytes encode to; n % 4 must be 0. */
#define SHOAL_Z85_LEN(n) ((n) / 4 * 5)

/* Encode data[0..n) into out as a NUL-terminated string. n % 4 != 0 or
 * out_size < SHOAL_Z85_LEN(n) + 1 is SHOAL_ERR_ARG. */
int shoal_z85_encode(char *out, size_t out_size, const uint8_t *data, size_t n);

/* Decode the n characters at s (n % 5 == 0) into out, which must hold
 * n / 5 * 4 bytes (out_size). A character outside the alphabet, or a group
 * whose value exceeds 2^32 - 1, is SHOAL_ERR_FORMAT; a bad length or a small
 * out is SHOAL_ERR_ARG. */
int shoal_z85_decode(uint8_t *out, size_t out_size, const char *s, size_t n);

#endif
