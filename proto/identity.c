/*
 * Ed25519 identities, their derived keys, key files and signatures (see
 * identity.h).
 *
 * The public parts sit in the struct; the secret parts (the 64-byte
 * libsodium Ed25519 secret key, seed || public key, then the 32-byte CURVE
 * secret key) sit in one sodium_malloc block that is made read-only once
 * filled and wiped by destroy. Key-file text passes through stack buffers
 * that are wiped before return on every path.
 */
#include "proto/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "kernels/err.h"
#include "proto/z85.h"

#define SEED_BYTES crypto_sign_SEEDBYTES        /* 32 */
#define ED_SK_BYTES crypto_sign_SECRETKEYBYTES  /* 64 */
#define CURVE_SK_OFF ED_SK_BYTES
#define SECRET_BYTES (ED_SK_BYTES + crypto_scalarmult_curve25519_BYTES)

_Static_assert(crypto_sign_PUBLICKEYBYTES == SHOAL_IDENTITY_KEY_BYTES, "key size");
_Static_assert(crypto_sign_BYTES == SHOAL_IDENTITY_SIG_BYTES, "signature size");
_Static_assert(SEED_BYTES == 32, "seed size");

struct shoal_identity {
    uint8_t pk[32];
    uint8_t peer_id[32];
    uint8_t curve_pk[32];
    uint8_t *secret; /* sodium_malloc: ed25519 sk (64), curve sk (32) */
};

static const char file_magic[] = "shoal-identity 1\n";
static const char file_seed[] = "seed ";
static const char file_public[] = "public ";
#define FILE_BYTES (sizeof file_magic - 1 + sizeof file_seed - 1 + 64 + 1 + \
                    sizeof file_public - 1 + 64 + 1)
_Static_assert(FILE_BYTES == 159, "documented in identity.h");

void shoal_identity_destroy(shoal_identity **p)
{
    if (!p || !*p)
        return;
    shoal_identity *id = *p;
    if (id->secret) {
        sodium_mprotect_readwrite(id->secret);
        sodium_memzero(id->secret, SECRET_BYTES);
        sodium_free(id->secret);
    }
    sodium_memzero(id, sizeof *id);
    free(id);
    *p = NULL;
}

int shoal_identity_from_seed(shoal_identity **out, const uint8_t seed[32])
{
    *out = NULL;
    if (sodium_init() < 0)
        return SHOAL_ERR_INTERNAL;
    shoal_identity *id = calloc(1, sizeof *id);
    if (!id)
        return SHOAL_ERR_NOMEM;
    int rc = SHOAL_ERR_NOMEM;
    id->secret = sodium_malloc(SECRET_BYTES);
    if (!id->secret)
        goto err;
    rc = SHOAL_ERR_INTERNAL;
    if (crypto_sign_seed_keypair(id->pk, id->secret, seed) != 0)
        goto err;
    /* a key made from a seed is always a valid point: these cannot fail */
    if (crypto_sign_ed25519_pk_to_curve25519(id->curve_pk, id->pk) != 0 ||
        crypto_sign_ed25519_sk_to_curve25519(id->secret + CURVE_SK_OFF, id->secret) != 0)
        goto err;
    shoal_identity_peer_id_of(id->pk, id->peer_id);
    sodium_mprotect_readonly(id->secret);
    *out = id;
    return SHOAL_OK;
err:
    shoal_identity_destroy(&id);
    return rc;
}

int shoal_identity_generate(shoal_identity **out)
{
    *out = NULL;
    if (sodium_init() < 0)
        return SHOAL_ERR_INTERNAL;
    uint8_t seed[SEED_BYTES];
    randombytes_buf(seed, sizeof seed);
    int rc = shoal_identity_from_seed(out, seed);
    sodium_memzero(seed, sizeof seed);
    return rc;
}

const uint8_t *shoal_identity_public_key(const shoal_identity *id) { return id->pk; }
const uint8_t *shoal_identity_peer_id(const shoal_identity *id) { return id->peer_id; }
const uint8_t *shoal_identity_curve_public(const shoal_identity *id) { return id->curve_pk; }
const uint8_t *shoal_identity_curve_secret(const shoal_identity *id)
{
    return id->secret + CURVE_SK_OFF;
}

int shoal_identity_sign(const shoal_identity *id, const void *msg, size_t len,
                        uint8_t sig[64])
{
    if (!id || !sig || (len && !msg))
        return SHOAL_ERR_ARG;
    static const uint8_t empty[1];
    if (crypto_sign_detached(sig, NULL, len ? msg : empty, len, id->secret) != 0)
        return SHOAL_ERR_INTERNAL;
    return SHOAL_OK;
}

int shoal_identity_verify(const uint8_t pk[32], const void *msg, size_t len,
                          const uint8_t sig[64])
{
    if (!pk || !sig || (len && !msg))
        return SHOAL_ERR_ARG;
    if (sodium_init() < 0)
        return SHOAL_ERR_INTERNAL;
    static const uint8_t empty[1];
    if (crypto_sign_verify_detached(sig, len ? msg : empty, len, pk) != 0)
        return SHOAL_ERR_AUTH;
    return SHOAL_OK;
}

void shoal_identity_peer_id_of(const uint8_t pk[32], uint8_t id[32])
{
    crypto_generichash(id, 32, pk, 32, NULL, 0);
}

int shoal_identity_curve_of(const uint8_t pk[32], uint8_t curve[32])
{
    if (sodium_init() < 0)
        return SHOAL_ERR_INTERNAL;
    if (crypto_sign_ed25519_pk_to_curve25519(curve, pk) != 0) {
        memset(curve, 0, 32);
        return SHOAL_ERR_FORMAT;
    }
    return SHOAL_OK;
}

void shoal_identity_hex(const uint8_t key[32], char out[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[key[i] >> 4];
        out[2 * i + 1] = digits[key[i] & 15];
    }
    out[64] = 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int shoal_identity_unhex(const char *s, size_t n, uint8_t key[32])
{
    if (!s || n != 64)
        return SHOAL_ERR_FORMAT;
    /* no early exit on content: this also parses secret seeds */
    int bad = 0;
    for (int i = 0; i < 32; i++) {
        int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
        bad |= (hi | lo) < 0;
        key[i] = (uint8_t)(((hi & 15) << 4) | (lo & 15));
    }
    if (bad) {
        sodium_memzero(key, 32);
        return SHOAL_ERR_FORMAT;
    }
    return SHOAL_OK;
}

void shoal_identity_z85(const uint8_t key[32], char out[41])
{
    shoal_z85_encode(out, 41, key, 32);
}

/* ------------------------------------------------------------------ */
/* Key files                                                           */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int shoal_identity_save(const shoal_identity *id, const char *path)
{
    if (!id || !path)
        return SHOAL_ERR_ARG;
    char text[FILE_BYTES + 1];
    char hex[SHOAL_IDENTITY_HEX_SIZE];
    size_t o = 0;
    memcpy(text + o, file_magic, sizeof file_magic - 1);
    o += sizeof file_magic - 1;
    memcpy(text + o, file_seed, sizeof file_seed - 1);
    o += sizeof file_seed - 1;
    shoal_identity_hex(id->secret, hex); /* the seed: first half of the sk */
    memcpy(text + o, hex, 64);
    o += 64;
    text[o++] = '\n';
    memcpy(text + o, file_public, sizeof file_public - 1);
    o += sizeof file_public - 1;
    shoal_identity_hex(id->pk, hex);
    memcpy(text + o, hex, 64);
    o += 64;
    text[o++] = '\n';

    int rc = SHOAL_ERR_IO, saved_errno = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        saved_errno = errno;
        goto out;
    }
    /* umask can only have removed bits; this makes sure the owner can read */
    if (fchmod(fd, 0600) != 0 || write_all(fd, text, o) != 0 || fsync(fd) != 0) {
        saved_errno = errno;
        close(fd);
        unlink(path);
        goto out;
    }
    if (close(fd) != 0) {
        saved_errno = errno;
        unlink(path);
        goto out;
    }
    rc = SHOAL_OK;
out:
    sodium_memzero(text, sizeof text);
    sodium_memzero(hex, sizeof hex);
    errno = saved_errno;
    return rc;
}

/* Parse the exact file text; seed receives the secret seed. */
static int parse_file(const char *t, size_t n, uint8_t seed[32], uint8_t pk[32])
{
    if (n != FILE_BYTES)
        return SHOAL_ERR_FORMAT;
    size_t o = 0;
    if (memcmp(t + o, file_magic, sizeof file_magic - 1) != 0)
        return SHOAL_ERR_FORMAT;
    o += sizeof file_magic - 1;
    if (memcmp(t + o, file_seed, sizeof file_seed - 1) != 0)
        return SHOAL_ERR_FORMAT;
    o += sizeof file_seed - 1;
    if (shoal_identity_unhex(t + o, 64, seed) != SHOAL_OK || t[o + 64] != '\n')
        return SHOAL_ERR_FORMAT;
    o += 65;
    if (memcmp(t + o, file_public, sizeof file_public - 1) != 0)
        return SHOAL_ERR_FORMAT;
    o += sizeof file_public - 1;
    if (shoal_identity_unhex(t + o, 64, pk) != SHOAL_OK || t[o + 64] != '\n')
        return SHOAL_ERR_FORMAT;
    return SHOAL_OK;
}

int shoal_identity_load(shoal_identity **out, const char *path)
{
    if (!out)
        return SHOAL_ERR_ARG;
    *out = NULL;
    if (!path)
        return SHOAL_ERR_ARG;
    char text[FILE_BYTES + 1]; /* one more, to see a file that is too long */
    uint8_t seed[SEED_BYTES], pk[32];
    int rc = SHOAL_ERR_IO, saved_errno = 0;
    size_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        saved_errno = errno;
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        saved_errno = errno;
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = SHOAL_ERR_FORMAT;
        goto out_close;
    }
    if (st.st_mode & 077) {
        rc = SHOAL_ERR_AUTH;
        goto out_close;
    }
    while (n < sizeof text) {
        ssize_t r = read(fd, text + n, sizeof text - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            saved_errno = errno;
            goto out_close;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    rc = parse_file(text, n, seed, pk);
    if (rc == SHOAL_OK) {
        rc = shoal_identity_from_seed(out, seed);
        if (rc == SHOAL_OK && sodium_memcmp((*out)->pk, pk, 32) != 0) {
            shoal_identity_destroy(out);
            rc = SHOAL_ERR_FORMAT;
        }
    }
out_close:
    close(fd);
out:
    sodium_memzero(text, sizeof text);
    sodium_memzero(seed, sizeof seed);
    errno = saved_errno;
    return rc;
}
