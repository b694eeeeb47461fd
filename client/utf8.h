/*
 * UTF-8 helpers for text that leaves the process: validation, and a stream
 * that turns token pieces into printable text.
 *
 * A token's piece is not always whole characters: byte-fallback tokens carry
 * one byte of a multi-byte character, and byte-level BPE pieces may split a
 * character anywhere. shoal_utf8_stream holds back the incomplete tail of
 * what it was given (at most 3 bytes) and hands out only complete
 * characters, so a terminal or a JSON string never sees half a character.
 * Bytes that can never form a character (a stray continuation byte, an
 * overlong form, a surrogate, a truncated sequence) pass through as they are
 * or, with replace_invalid, become U+FFFD, one per maximal invalid subpart
 * (Unicode's "substitution of maximal subparts").
 *
 * Validity is strict RFC 3629: no overlongs, no surrogates, nothing above
 * U+10FFFF.
 *
 * Ownership: the stream is a plain struct the caller embeds; it holds no
 * memory, so there is nothing to free. THREAD SAFETY: a stream belongs to
 * one thread at a time; the other functions are pure.
 */
#ifndef SHOAL_CLIENT_UTF8_H
#define SHOAL_CLIENT_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the longest prefix of s[0..n) that is valid UTF-8 made of
 * complete characters. */
size_t shoal_utf8_valid_prefix(const void *s, size_t n);
static inline bool shoal_utf8_valid(const void *s, size_t n)
{
    return shoal_utf8_valid_prefix(s, n) == n;
}

/* Decodes one character at s[0..n): returns its byte length (1..4) and its
 * code point in *cp, or 0 when s does not start with a valid complete
 * character (or n == 0). */
int shoal_utf8_decode(const void *s, size_t n, uint32_t *cp);

/* Encodes cp (<= 0x10FFFF, not a surrogate) into out[0..4): returns the
 * byte length, or 0 for a value that is not a Unicode scalar value. */
int shoal_utf8_encode(uint32_t cp, char out[4]);

/* Unicode classes that byte-level BPE pre-tokenizers use, from the Unicode
 * 14.0 character database: \p{L} (general category L*), \p{N} (N*), and
 * the White_Space property (what \s means in those patterns). */
bool shoal_utf8_is_letter(uint32_t cp);
bool shoal_utf8_is_number(uint32_t cp);
bool shoal_utf8_is_space(uint32_t cp);

typedef struct shoal_utf8_stream {
    unsigned char pend[4]; /* a valid prefix of one character */
    uint8_t n_pend;        /* bytes in pend, 0..3 */
    uint8_t need;          /* the character's full length when n_pend > 0 */
    bool replace_invalid;
} shoal_utf8_stream;

/* The output room one push of n bytes (or a flush, n = 0) may need. */
#define SHOAL_UTF8_STREAM_BOUND(n) (3 * (size_t)(n) + 3)

void shoal_utf8_stream_init(shoal_utf8_stream *s, bool replace_invalid);

/* Feeds n bytes; writes to out the bytes that are now printable (complete
 * characters and, per replace_invalid, invalid bytes) and sets *out_len.
 * Needs cap >= SHOAL_UTF8_STREAM_BOUND(n); with less it consumes nothing and
 * returns SHOAL_ERR_RANGE. Returns 0 on success. */
int shoal_utf8_stream_push(shoal_utf8_stream *s, const void *in, size_t n,
                           char *out, size_t cap, size_t *out_len);

/* End of text: the held-back tail can no longer complete; it is written out
 * as invalid bytes (at most 3 bytes of out). Leaves the stream empty. */
int shoal_utf8_stream_flush(shoal_utf8_stream *s, char *out, size_t cap,
                            size_t *out_len);

/* Bytes held back, waiting for the rest of their character. */
static inline size_t shoal_utf8_stream_pending(const shoal_utf8_stream *s)
{
    return s->n_pend;
}

#endif
