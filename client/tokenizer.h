/*
 * Tokenizer built from a GGUF file's tokenizer.ggml.* metadata.
 *
 * tokenizer.ggml.model = "llama" (SentencePiece-style, with byte fallback)
 * is encoded exactly as llama2.c's run.c `encode` does it, which is what the
 * pinned reference outputs were made with:
 *   1. a dummy-prefix space token when the text is non-empty (unless the
 *      file sets tokenizer.ggml.add_space_prefix = false);
 *   2. each UTF-8 character (a non-continuation byte plus the continuation
 *      bytes after it, at most 4 bytes; malformed input is grouped the same
 *      way) is looked up as a whole piece; if absent, each of its bytes
 *      becomes its byte token <0xXX> (or the unknown token if the vocabulary
 *      lacks it);
 *   3. repeatedly, the adjacent pair whose concatenated text is a token with
 *      the highest score (> -1e10) is merged, the leftmost pair on ties,
 *      until no pair merges.
 * Pieces are compared with "▁" (U+2581) read as a space, as llama2.c's
 * exported vocabulary has them. Step 3 uses a heap over a linked list, so a
 * text of n bytes takes O(n log n), not llama2.c's O(n^2).
 *
 * tokenizer.ggml.model = "gpt2" (byte-level BPE, tokenizer.ggml.merges) is
 * encoded as llama.cpp does it: the text is split into words by the
 * pre-tokenizer that tokenizer.ggml.pre names, each word's bytes become
 * GPT-2 characters (bytes_to_unicode), and within each word the adjacent
 * pair with the lowest merge rank is merged (leftmost on ties) until none
 * is left; for the Llama 3 family a word that is a token as a whole is
 * taken as it is (ignore_merges). Supported pre-tokenizers: the GPT-2 regex
 * ("gpt-2", "phi-2", "mpt", "olmo", ...), the Llama 3 regex ("llama-bpe",
 * "llama3", "dbrx", "smaug-bpe", ...) and the Qwen 2 regex (one digit per
 * number: "qwen2", "deepseek-r1-qwen", "stablelm2", ...); any other is
 * refused as unsupported, as are other tokenizer models. Character classes
 * are Unicode 14.0's. Differences from llama.cpp: invalid UTF-8 keeps its
 * bytes (llama.cpp replaces it by U+FFFD), and user-defined tokens are not
 * split out of the text before pre-tokenizing (callers that need special
 * tokens insert their ids themselves, see shoal_tokenizer_find).
 *
 * Decoding follows llama2.c's `decode`: "▁" prints as a space, a piece's
 * leading space is dropped right after BOS, <0xXX> prints that raw byte.
 * Control and unused tokens print nothing; the unknown token prints U+2585
 * (as llama.cpp does). BPE tokens print their bytes (GPT-2 characters
 * mapped back; user-defined tokens as spelled), with no space dropping.
 * A piece may be part of a UTF-8 character: print through
 * shoal_utf8_stream (client/utf8.h).
 *
 * Ownership: shoal_tokenizer_from_gguf copies everything it needs; the GGUF
 * file may be closed afterwards. Returned strings live as long as the
 * tokenizer. THREAD SAFETY: a tokenizer is immutable once built; any number
 * of threads may call every function but _destroy at the same time.
 */
#ifndef SHOAL_CLIENT_TOKENIZER_H
#define SHOAL_CLIENT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/gguf.h"

typedef struct shoal_tokenizer shoal_tokenizer;

/* Token types, as tokenizer.ggml.token_type stores them (llama.cpp's). */
enum {
    SHOAL_TOKEN_NORMAL = 1,
    SHOAL_TOKEN_UNKNOWN = 2,
    SHOAL_TOKEN_CONTROL = 3,
    SHOAL_TOKEN_USER_DEFINED = 4,
    SHOAL_TOKEN_UNUSED = 5,
    SHOAL_TOKEN_BYTE = 6,
};

/* Largest vocabulary and longest token text accepted from a file. */
#define SHOAL_TOKENIZER_MAX_VOCAB (1 << 22)
#define SHOAL_TOKENIZER_MAX_PIECE 4096

/* Builds the tokenizer; on failure returns NULL and err holds one line.
 * A malformed vocabulary (array lengths that differ, ids out of range,
 * token text that contains NUL or is over SHOAL_TOKENIZER_MAX_PIECE bytes,
 * a BYTE token that is not <0xXX>, a type outside 0..6, missing byte
 * tokens without an unknown token, a BPE vocabulary without the 256 byte
 * characters or with a merge that is not "left right") is refused; so is a
 * tokenizer model or BPE pre-tokenizer that is not supported.
 * (Empty token text is accepted; such a token is never produced by
 * encoding.) */
shoal_tokenizer *shoal_tokenizer_from_gguf(const shoal_gguf *g, char *err, size_t errlen);
void shoal_tokenizer_destroy(shoal_tokenizer **t);

/* Encodes text[0..len) (any bytes; NUL is an ordinary byte), preceded by
 * BOS when add_bos and the vocabulary has one. Writes at most max tokens to
 * out and sets *n_out to the number of tokens the text needs. Returns 0, or
 * SHOAL_ERR_RANGE when that number exceeds max (out then holds the first
 * max tokens), SHOAL_ERR_ARG for bad arguments, SHOAL_ERR_NOMEM.
 * At most len + 2 tokens are ever needed. */
int shoal_tokenizer_encode(const shoal_tokenizer *t, const char *text, size_t len,
                           bool add_bos, int32_t *out, int max, int *n_out);

/* The word boundaries the BPE pre-tokenizer finds in text[0..len): ends[i]
 * is the byte offset where word i ends (the last one is len). Writes at most
 * max offsets; *n_out is the number of words. For a SentencePiece tokenizer
 * the whole text is one word. Returns 0, SHOAL_ERR_RANGE (more than max
 * words), SHOAL_ERR_ARG or SHOAL_ERR_NOMEM. For tests and debugging. */
int shoal_tokenizer_pretokenize(const shoal_tokenizer *t, const char *text, size_t len,
                                size_t *ends, size_t max, size_t *n_out);

/* Writes the bytes token `tok` prints when it follows `prev` (pass -1 for
 * none) into buf, at most cap bytes, no NUL added. Returns the piece's full
 * length (more than cap means buf holds a truncated piece, as snprintf), or
 * -1 when tok is out of range. */
int shoal_tokenizer_piece(const shoal_tokenizer *t, int32_t prev, int32_t tok,
                          char *buf, size_t cap);

/* Special tokens; -1 when the vocabulary has none. */
int32_t shoal_tokenizer_bos(const shoal_tokenizer *t);
int32_t shoal_tokenizer_eos(const shoal_tokenizer *t);
int32_t shoal_tokenizer_unk(const shoal_tokenizer *t);
int shoal_tokenizer_n_vocab(const shoal_tokenizer *t);

/* Whether the model asks for BOS in front of a prompt
 * (tokenizer.ggml.add_bos_token; default true for SentencePiece and the
 * Llama 3 BPE family, false for other BPE models, as llama.cpp). */
bool shoal_tokenizer_add_bos(const shoal_tokenizer *t);

/* End of generation: EOS, EOT/EOM when the file names them, control tokens
 * that end a turn in common chat formats (<|eot_id|>, <|im_end|>, ...), and
 * BOS: a generated BOS starts a new document (llama2.c's story models end a
 * story with it). False for ids out of range. */
bool shoal_tokenizer_is_eog(const shoal_tokenizer *t, int32_t tok);

/* The token's text as the file spells it ("▁Once", "<0x0A>"), for
 * debugging; NULL when out of range. */
const char *shoal_tokenizer_token(const shoal_tokenizer *t, int32_t tok);

/* The token's type (SHOAL_TOKEN_*), 0 when out of range. */
int shoal_tokenizer_token_type(const shoal_tokenizer *t, int32_t tok);

/* The id of the token whose text, as the file spells it, is text[0..len)
 * (lowest id if several); -1 if none. Finds special tokens such as
 * "<|im_start|>" for chat templates. */
int32_t shoal_tokenizer_find(const shoal_tokenizer *t, const char *text, size_t len);

#endif
