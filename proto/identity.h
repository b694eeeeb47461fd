/*
 * A node's long-term identity: an Ed25519 key pair (libsodium crypto_sign).
 * Everything else is derived from it:
 *   peer id      BLAKE2b-256 (crypto_generichash, no key) of the 32-byte
 *                Ed25519 public key; shown as 64 lowercase hex digits.
 *   CURVE keys   crypto_sign_ed25519_{pk,sk}_to_curve25519: the ZeroMQ
 *                CURVE transport key is bound to the Ed25519 key, so a
 *                client that knows a node's Ed25519 key (from its address or
 *                its signed DHT record) knows the server key it must see.
 * Secret keys live in sodium_malloc memory (guard pages, read-only once
 * built) and are wiped when the identity is destroyed.
 *
 * Key file: text, exactly three LF-terminated lines (159 bytes):
 *   shoal-identity 1
 *   seed <64 lowercase hex: the 32-byte Ed25519 seed>
 *   public <64 lowercase hex: the Ed25519 public key>
 * Load checks every byte, and that the public key is the seed's.
 * Save creates the file with O_CREAT|O_EXCL and mode 0600 and never
 * overwrites one. Load refuses (SHOAL_ERR_AUTH) a file that its group or
 * others may read, write or execute (mode & 077), as ssh does: a key that
 * others could read must be treated as leaked, and silently using it would
 * hide that. Fix with chmod 600.
 *
 * Signatures are detached Ed25519 signatures (64 bytes) over byte strings.
 *
 * THREAD SAFETY: an identity is immutable after it is built: any thread may
 * use it at once; destroy it when no thread does. Other functions are pure.
 */
#ifndef SHOAL_PROTO_IDENTITY_H
#define SHOAL_PROTO_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define SHOAL_IDENTITY_KEY_BYTES 32   /* public keys, seeds, peer ids */
#define SHOAL_IDENTITY_SIG_BYTES 64
#define SHOAL_IDENTITY_HEX_SIZE 65    /* 64 hex digits + NUL */
#define SHOAL_IDENTITY_Z85_SIZE 41    /* 40 Z85 characters + NUL */

typedef struct shoal_identity shoal_identity;

/* A new random identity. SHOAL_ERR_NOMEM, or SHOAL_ERR_INTERNAL if
 * libsodium cannot start. */
int shoal_identity_generate(shoal_identity **out);

/* The identity of a 32-byte seed (deterministic: tests, simulations). */
int shoal_identity_from_seed(shoal_identity **out, const uint8_t seed[32]);

/* Wipe and free *p; accepts NULL and *p == NULL; sets *p to NULL. */
void shoal_identity_destroy(shoal_identity **p);

/* Write the key file (format above). SHOAL_ERR_IO with errno set on failure
 * (EEXIST when path exists: an identity is never overwritten); a partial
 * file is removed. */
int shoal_identity_save(const shoal_identity *id, const char *path);

/* Read a key file. SHOAL_ERR_IO (errno set) if it cannot be read,
 * SHOAL_ERR_AUTH if its mode lets others in (see above), SHOAL_ERR_FORMAT
 * for anything but the exact format or a public key that does not match. */
int shoal_identity_load(shoal_identity **out, const char *path);

/* Keys of the identity, owned by it, valid until it is destroyed. */
const uint8_t *shoal_identity_public_key(const shoal_identity *id);   /* Ed25519, 32 */
const uint8_t *shoal_identity_peer_id(const shoal_identity *id);      /* 32 */
const uint8_t *shoal_identity_curve_public(const shoal_identity *id); /* X25519, 32 */
/* The CURVE secret key (32 bytes, read-only guarded memory), for
 * zmq_setsockopt(ZMQ_CURVE_SECRETKEY, key, 32). Never copy it around. */
const uint8_t *shoal_identity_curve_secret(const shoal_identity *id);

/* Sign msg[0..len) into sig (64 bytes). */
int shoal_identity_sign(const shoal_identity *id, const void *msg, size_t len,
                        uint8_t sig[64]);

/* 0 if sig is pk's signature of msg[0..len), else SHOAL_ERR_AUTH. */
int shoal_identity_verify(const uint8_t pk[32], const void *msg, size_t len,
                          const uint8_t sig[64]);

/* Peer id of an Ed25519 public key. */
void shoal_identity_peer_id_of(const uint8_t pk[32], uint8_t id[32]);

/* CURVE (X25519) public key of an Ed25519 public key; SHOAL_ERR_FORMAT if
 * pk is not a valid Ed25519 point of the main subgroup. */
int shoal_identity_curve_of(const uint8_t pk[32], uint8_t curve[32]);

/* 32 bytes as 64 lowercase hex digits + NUL (out has 65 bytes). */
void shoal_identity_hex(const uint8_t key[32], char out[65]);

/* Exactly 64 hex digits (lowercase only) at s[0..n) into key; else
 * SHOAL_ERR_FORMAT. */
int shoal_identity_unhex(const char *s, size_t n, uint8_t key[32]);

/* 32 bytes as 40 Z85 characters + NUL (out has 41 bytes), e.g. the CURVE
 * public key for zmq_setsockopt(ZMQ_CURVE_SERVERKEY, out, 41). */
void shoal_identity_z85(const uint8_t key[32], char out[41]);

#endif
