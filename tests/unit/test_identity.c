/*
 * Identities, key files, signatures, Z85 and shoal:// addresses. Golden
 * values: RFC 8032 test 1 (Ed25519), ZeroMQ RFC 32 (Z85), and the peer id
 * and CURVE key of the RFC 8032 key computed independently (Python
 * hashlib.blake2b, and u = (1 + y) / (1 - y) mod 2^255 - 19).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "../check.h"
#include "kernels/err.h"
#include "proto/addr.h"
#include "proto/identity.h"
#include "proto/z85.h"

static const char rfc_seed[] = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
static const char rfc_pk[] = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
static const char rfc_sig_empty[] =
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
static const char rfc_peer_id[] = "7849ac3049680be1ef762efe0d36e01733c3464eb0c7c558138acf24bb263bd3";
static const char rfc_curve_z85[] = "/J[*HbcXh96/T24o>C%}6G(dA-D]V]1>W7aKOlan";

static void unhex_any(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

static void test_z85(void)
{
    static const uint8_t hello[8] = {0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B};
    char s[11];
    CHECK(shoal_z85_encode(s, sizeof s, hello, 8) == SHOAL_OK && strcmp(s, "HelloWorld") == 0);
    uint8_t b[8];
    CHECK(shoal_z85_decode(b, sizeof b, "HelloWorld", 10) == SHOAL_OK && memcmp(b, hello, 8) == 0);
    CHECK(shoal_z85_encode(s, 10, hello, 8) == SHOAL_ERR_ARG);   /* no room for NUL */
    CHECK(shoal_z85_encode(s, sizeof s, hello, 7) == SHOAL_ERR_ARG);
    CHECK(shoal_z85_decode(b, sizeof b, "HelloWorl", 9) == SHOAL_ERR_ARG);
    CHECK(shoal_z85_decode(b, 7, "HelloWorld", 10) == SHOAL_ERR_ARG);
    CHECK(shoal_z85_decode(b, sizeof b, "Hello\"orld", 10) == SHOAL_ERR_FORMAT);
    CHECK(shoal_z85_decode(b, sizeof b, "Hello orld", 10) == SHOAL_ERR_FORMAT);
    CHECK(shoal_z85_decode(b, sizeof b, "Hello\x80orld", 10) == SHOAL_ERR_FORMAT);
    CHECK(shoal_z85_decode(b, 4, "#####", 5) == SHOAL_ERR_FORMAT);  /* 85^5 - 1 > 2^32 - 1 */
    CHECK(shoal_z85_decode(b, 4, "%nSc0", 5) == SHOAL_OK && b[0] == 0xff && b[1] == 0xff &&
          b[2] == 0xff && b[3] == 0xff); /* 2^32 - 1 */
    CHECK(shoal_z85_decode(b, 4, "%nSc1", 5) == SHOAL_ERR_FORMAT);  /* 2^32 */
    CHECK(shoal_z85_encode(s, 1, NULL, 0) == SHOAL_OK && s[0] == 0);
    /* every byte value, through a round trip */
    uint8_t all[256], back[256];
    char t[321];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)(i * 37 + 11);
    CHECK(shoal_z85_encode(t, sizeof t, all, 256) == SHOAL_OK && strlen(t) == 320);
    CHECK(shoal_z85_decode(back, sizeof back, t, 320) == SHOAL_OK && memcmp(all, back, 256) == 0);
}

static void test_keys(void)
{
    uint8_t seed[32], pk[32], sig[64], want[64];
    unhex_any(rfc_seed, seed, 32);
    shoal_identity *id = NULL;
    CHECK(shoal_identity_from_seed(&id, seed) == SHOAL_OK && id);
    if (!id)
        return;
    char hex[65], z[41];
    shoal_identity_hex(shoal_identity_public_key(id), hex);
    CHECK(strcmp(hex, rfc_pk) == 0);
    shoal_identity_hex(shoal_identity_peer_id(id), hex);
    CHECK(strcmp(hex, rfc_peer_id) == 0);
    shoal_identity_z85(shoal_identity_curve_public(id), z);
    CHECK(strcmp(z, rfc_curve_z85) == 0);
    /* the CURVE secret key belongs to the CURVE public key */
    uint8_t derived[32];
    CHECK(crypto_scalarmult_base(derived, shoal_identity_curve_secret(id)) == 0);
    CHECK(memcmp(derived, shoal_identity_curve_public(id), 32) == 0);
    /* and from the public key alone, anyone gets the same peer id and CURVE key */
    CHECK(shoal_identity_unhex(rfc_pk, 64, pk) == SHOAL_OK);
    uint8_t curve[32], pid[32];
    CHECK(shoal_identity_curve_of(pk, curve) == SHOAL_OK &&
          memcmp(curve, shoal_identity_curve_public(id), 32) == 0);
    shoal_identity_peer_id_of(pk, pid);
    CHECK(memcmp(pid, shoal_identity_peer_id(id), 32) == 0);

    /* signatures: the RFC's, then tampering of each kind */
    CHECK(shoal_identity_sign(id, NULL, 0, sig) == SHOAL_OK);
    unhex_any(rfc_sig_empty, want, 64);
    CHECK(memcmp(sig, want, 64) == 0);
    CHECK(shoal_identity_verify(pk, "", 0, sig) == SHOAL_OK);
    const char msg[] = "server record: blocks 0..16, seq 42";
    CHECK(shoal_identity_sign(id, msg, sizeof msg, sig) == SHOAL_OK);
    CHECK(shoal_identity_verify(pk, msg, sizeof msg, sig) == SHOAL_OK);
    int bad = 0;
    for (int i = 0; i < 64 * 8; i += 7) {
        sig[i / 8] ^= (uint8_t)(1 << (i % 8));
        if (shoal_identity_verify(pk, msg, sizeof msg, sig) != SHOAL_ERR_AUTH)
            bad++;
        sig[i / 8] ^= (uint8_t)(1 << (i % 8));
    }
    CHECK_MSG(bad == 0, "%d tampered signatures accepted", bad);
    char msg2[sizeof msg];
    memcpy(msg2, msg, sizeof msg);
    msg2[3] ^= 1;
    CHECK(shoal_identity_verify(pk, msg2, sizeof msg2, sig) == SHOAL_ERR_AUTH);
    CHECK(shoal_identity_verify(pk, msg, sizeof msg - 1, sig) == SHOAL_ERR_AUTH);

    shoal_identity *other = NULL;
    CHECK(shoal_identity_generate(&other) == SHOAL_OK && other);
    CHECK(memcmp(shoal_identity_public_key(other), pk, 32) != 0);
    CHECK(shoal_identity_verify(shoal_identity_public_key(other), msg, sizeof msg, sig) ==
          SHOAL_ERR_AUTH);
    shoal_identity *third = NULL;
    CHECK(shoal_identity_generate(&third) == SHOAL_OK);
    CHECK(memcmp(shoal_identity_public_key(other), shoal_identity_public_key(third), 32) != 0);

    /* hex parsing is strict */
    CHECK(shoal_identity_unhex(rfc_pk, 63, pk) == SHOAL_ERR_FORMAT);
    char upper[65];
    strcpy(upper, rfc_pk);
    upper[0] = 'D';
    CHECK(shoal_identity_unhex(upper, 64, pk) == SHOAL_ERR_FORMAT);
    upper[0] = 'g';
    CHECK(shoal_identity_unhex(upper, 64, pk) == SHOAL_ERR_FORMAT);
    /* a small-order point has no CURVE key */
    uint8_t zero[32] = {0};
    CHECK(shoal_identity_curve_of(zero, curve) == SHOAL_ERR_FORMAT);

    shoal_identity_destroy(&id);
    CHECK(id == NULL);
    shoal_identity_destroy(&id); /* twice is fine */
    shoal_identity_destroy(NULL);
    shoal_identity_destroy(&other);
    shoal_identity_destroy(&third);
}

static void write_file(const char *path, const void *p, size_t n, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0)
        return;
    if (write(fd, p, n) != (ssize_t)n)
        fprintf(stderr, "short write\n");
    fchmod(fd, mode);
    close(fd);
}

static void test_files(void)
{
    char dir[] = "/tmp/shoal-test-identity-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], bad[256];
    snprintf(path, sizeof path, "%s/node.key", dir);
    snprintf(bad, sizeof bad, "%s/bad.key", dir);

    shoal_identity *id = NULL, *back = NULL;
    CHECK(shoal_identity_generate(&id) == SHOAL_OK);
    mode_t old = umask(0);  /* a permissive umask must not matter */
    CHECK(shoal_identity_save(id, path) == SHOAL_OK);
    umask(old);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_size == 159);
    CHECK(shoal_identity_load(&back, path) == SHOAL_OK && back);
    if (back) {
        CHECK(memcmp(shoal_identity_public_key(id), shoal_identity_public_key(back), 32) == 0);
        CHECK(memcmp(shoal_identity_curve_secret(id), shoal_identity_curve_secret(back), 32) == 0);
        uint8_t sig[64];
        CHECK(shoal_identity_sign(back, "x", 1, sig) == SHOAL_OK);
        CHECK(shoal_identity_verify(shoal_identity_public_key(id), "x", 1, sig) == SHOAL_OK);
    }
    shoal_identity_destroy(&back);

    /* never overwritten */
    errno = 0;
    CHECK(shoal_identity_save(id, path) == SHOAL_ERR_IO && errno == EEXIST);
    CHECK(shoal_identity_load(&back, path) == SHOAL_OK);
    shoal_identity_destroy(&back);

    /* open modes are refused */
    CHECK(chmod(path, 0640) == 0);
    CHECK(shoal_identity_load(&back, path) == SHOAL_ERR_AUTH && back == NULL);
    CHECK(chmod(path, 0604) == 0);
    CHECK(shoal_identity_load(&back, path) == SHOAL_ERR_AUTH);
    CHECK(chmod(path, 0400) == 0);
    CHECK(shoal_identity_load(&back, path) == SHOAL_OK);
    shoal_identity_destroy(&back);

    /* missing file, directory */
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none", dir);
    errno = 0;
    CHECK(shoal_identity_load(&back, missing) == SHOAL_ERR_IO && errno == ENOENT);
    CHECK(shoal_identity_load(&back, dir) == SHOAL_ERR_FORMAT || /* 0700 dir */
          shoal_identity_load(&back, dir) == SHOAL_ERR_AUTH);

    /* corrupt files: every truncation, every single-byte change, extra bytes */
    char good[160];
    uint8_t seed[32];
    unhex_any(rfc_seed, seed, 32);
    shoal_identity *rfc = NULL;
    CHECK(shoal_identity_from_seed(&rfc, seed) == SHOAL_OK);
    snprintf(good, sizeof good, "shoal-identity 1\nseed %s\npublic %s\n", rfc_seed, rfc_pk);
    CHECK(strlen(good) == 159);
    write_file(bad, good, 159, 0600);
    CHECK(shoal_identity_load(&back, bad) == SHOAL_OK && back &&
          memcmp(shoal_identity_public_key(back), shoal_identity_public_key(rfc), 32) == 0);
    shoal_identity_destroy(&back);
    int wrong = 0;
    for (size_t n = 0; n < 159; n += 1) {
        write_file(bad, good, n, 0600);
        if (shoal_identity_load(&back, bad) != SHOAL_ERR_FORMAT || back)
            wrong++;
    }
    char longer[200];
    memcpy(longer, good, 159);
    longer[159] = '\n';
    write_file(bad, longer, 160, 0600);
    if (shoal_identity_load(&back, bad) != SHOAL_ERR_FORMAT)
        wrong++;
    for (size_t off = 0; off < 159; off++) {
        char c[159];
        memcpy(c, good, 159);
        c[off] = c[off] == '0' ? '1' : c[off] == 'a' ? 'A' : '0'; /* also case */
        write_file(bad, c, 159, 0600);
        if (shoal_identity_load(&back, bad) != SHOAL_ERR_FORMAT || back)
            wrong++;
    }
    CHECK_MSG(wrong == 0, "%d corrupt key files accepted", wrong);
    shoal_identity_destroy(&rfc);

    unlink(bad);
    unlink(path);
    rmdir(dir);
    shoal_identity_destroy(&id);
}

static void test_addr(void)
{
    shoal_addr a;
    char out[SHOAL_ADDR_MAX];
    uint8_t pk[32];
    shoal_identity_unhex(rfc_pk, 64, pk);

    const char *good[][2] = {
        {"shoal://example.com:7000/", NULL},
        {"shoal://10.0.0.1:1/", NULL},
        {"shoal://255.255.255.255:65535/", NULL},
        {"shoal://[::1]:65535/", NULL},
        {"shoal://[2001:db8::1]:443/", NULL},
        {"shoal://[0:0:0:0:0:0:0:1]:9/", "shoal://[::1]:9/"},
        {"shoal://[2001:DB8::A]:9/", "shoal://[2001:db8::a]:9/"},
        {"shoal://[::ffff:10.1.2.3]:9/", NULL},
        {"shoal://Node-1.Shoal.example:80/", NULL},
        {"shoal://localhost:5555/", NULL},
        {"shoal://a1:2/", NULL},
        {"shoal://1a.2b:2/", NULL},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char in[SHOAL_ADDR_MAX], want[SHOAL_ADDR_MAX];
        snprintf(in, sizeof in, "%s%s", good[i][0], rfc_pk);
        snprintf(want, sizeof want, "%s%s", good[i][1] ? good[i][1] : good[i][0], rfc_pk);
        int rc = shoal_addr_parse(&a, in);
        CHECK_MSG(rc == SHOAL_OK, "%s", in);
        CHECK_MSG(shoal_addr_format(&a, out, sizeof out) == SHOAL_OK && strcmp(out, want) == 0,
                  "%s -> %s", in, out);
        CHECK(memcmp(a.pubkey, pk, 32) == 0);
        shoal_addr b;
        CHECK(shoal_addr_parse(&b, out) == SHOAL_OK && shoal_addr_equal(&a, &b));
    }

    /* a long DNS name: 253 bytes is the limit */
    char host[300], in[400];
    memset(host, 0, sizeof host);
    for (int i = 0; i < 253; i++)
        host[i] = (i % 62 == 61) ? '.' : 'a';
    snprintf(in, sizeof in, "shoal://%s:1/%s", host, rfc_pk);
    CHECK(strlen(in) < SHOAL_ADDR_MAX);
    CHECK(shoal_addr_parse(&a, in) == SHOAL_OK && strlen(a.host) == 253);
    CHECK(shoal_addr_format(&a, out, sizeof out) == SHOAL_OK && strcmp(out, in) == 0);
    CHECK(shoal_addr_format(&a, out, strlen(in)) == SHOAL_ERR_RANGE);
    host[253] = 'a';
    snprintf(in, sizeof in, "shoal://%s:1/%s", host, rfc_pk);
    CHECK(shoal_addr_parse(&a, in) == SHOAL_ERR_FORMAT);

    const char *bad[] = {
        "", "shoal://", "SHOAL://example.com:1/", "shoal:/example.com:1/",
        "http://example.com:1/", "shoal://example.com/", "shoal://example.com:/",
        "shoal://example.com:0/", "shoal://example.com:65536/", "shoal://example.com:08/",
        "shoal://example.com:+80/", "shoal://example.com:-1/", "shoal://example.com:99999999999/",
        "shoal://:80/", "shoal://exa_mple.com:1/", "shoal://-a.com:1/", "shoal://a-.com:1/",
        "shoal://a..b:1/", "shoal://a.b.:1/", "shoal://.a:1/", "shoal://1.2.3.256:1/",
        "shoal://1.2.3:1/", "shoal://01.2.3.4:1/", "shoal://1.2.3.4.5:1/", "shoal://a.123:1/",
        "shoal://[::1:1/", "shoal://[::1%eth0]:1/", "shoal://[1.2.3.4]:1/", "shoal://[]:1/",
        "shoal://::1:1/", "shoal://[::1]/", "shoal://[::1]x:1/", "shoal://[g::1]:1/",
        "shoal://ex ample.com:1/", "shoal://user@example.com:1/", "shoal://example.com:1//",
        " shoal://example.com:1/", "shoal://example.com:1 /", "shoal://\xc3\xa9.com:1/",
        "shoal://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com:1/",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(in, sizeof in, "%s%s", bad[i], rfc_pk);
        CHECK_MSG(shoal_addr_parse(&a, in) == SHOAL_ERR_FORMAT, "accepted: %s", in);
        CHECK(a.port == 0 && a.host[0] == 0);
    }
    /* key problems */
    const char *bad_keys[] = {
        "D75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",  /* uppercase */
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511",   /* short */
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a0", /* long */
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a/",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a?x=1",
        "0000000000000000000000000000000000000000000000000000000000000000",  /* small order */
        "",
    };
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
        snprintf(in, sizeof in, "shoal://example.com:1/%s", bad_keys[i]);
        CHECK_MSG(shoal_addr_parse(&a, in) == SHOAL_ERR_FORMAT, "accepted: %s", in);
    }
    CHECK(shoal_addr_parse(&a, NULL) == SHOAL_ERR_FORMAT);
    /* no NUL within the limit */
    char unterminated[SHOAL_ADDR_MAX + 8];
    memset(unterminated, 'a', sizeof unterminated);
    memcpy(unterminated, "shoal://", 8);
    unterminated[sizeof unterminated - 1] = 0;
    CHECK(shoal_addr_parse(&a, unterminated) == SHOAL_ERR_FORMAT);

    /* endpoints, keys, built addresses */
    snprintf(in, sizeof in, "shoal://[2001:db8::1]:7000/%s", rfc_pk);
    CHECK(shoal_addr_parse(&a, in) == SHOAL_OK && shoal_addr_is_ipv6(&a));
    CHECK(shoal_addr_endpoint(&a, out, sizeof out) == SHOAL_OK &&
          strcmp(out, "tcp://[2001:db8::1]:7000") == 0);
    uint8_t curve[32], id[32];
    char z[41], hex[65];
    CHECK(shoal_addr_curve_key(&a, curve) == SHOAL_OK);
    shoal_identity_z85(curve, z);
    CHECK(strcmp(z, rfc_curve_z85) == 0);
    shoal_addr_peer_id(&a, id);
    shoal_identity_hex(id, hex);
    CHECK(strcmp(hex, rfc_peer_id) == 0);

    shoal_addr b;
    CHECK(shoal_addr_init(&b, "2001:db8:0::1", 7000, pk) == SHOAL_OK && shoal_addr_equal(&a, &b));
    CHECK(shoal_addr_init(&b, "node.example", 80, pk) == SHOAL_OK && !shoal_addr_is_ipv6(&b));
    CHECK(shoal_addr_endpoint(&b, out, sizeof out) == SHOAL_OK &&
          strcmp(out, "tcp://node.example:80") == 0);
    CHECK(shoal_addr_endpoint(&b, out, 10) == SHOAL_ERR_RANGE && out[0] == 0);
    CHECK(shoal_addr_init(&b, "node.example", 0, pk) == SHOAL_ERR_FORMAT);
    CHECK(shoal_addr_init(&b, "[::1]", 80, pk) == SHOAL_ERR_FORMAT);
    CHECK(shoal_addr_init(&b, "bad host", 80, pk) == SHOAL_ERR_FORMAT);
    uint8_t zero[32] = {0};
    CHECK(shoal_addr_init(&b, "node.example", 80, zero) == SHOAL_ERR_FORMAT);
    /* a struct filled by hand with junk is not printed */
    shoal_addr junk;
    memset(&junk, 'x', sizeof junk);
    CHECK(shoal_addr_format(&junk, out, sizeof out) == SHOAL_ERR_ARG);
    shoal_addr_init(&b, "node.example", 80, pk);
    strcpy(b.host, "0:0::1"); /* not canonical */
    CHECK(shoal_addr_format(&b, out, sizeof out) == SHOAL_ERR_ARG);

    /* an identity's own address gives back its keys */
    shoal_identity *me = NULL;
    CHECK(shoal_identity_generate(&me) == SHOAL_OK);
    CHECK(shoal_addr_init(&b, "127.0.0.1", 31337, shoal_identity_public_key(me)) == SHOAL_OK);
    CHECK(shoal_addr_format(&b, out, sizeof out) == SHOAL_OK);
    CHECK(shoal_addr_parse(&a, out) == SHOAL_OK);
    CHECK(shoal_addr_curve_key(&a, curve) == SHOAL_OK &&
          memcmp(curve, shoal_identity_curve_public(me), 32) == 0);
    shoal_addr_peer_id(&a, id);
    CHECK(memcmp(id, shoal_identity_peer_id(me), 32) == 0);
    shoal_identity_destroy(&me);
}

int main(void)
{
    test_z85();
    test_keys();
    test_files();
    test_addr();
    return check_done();
}
