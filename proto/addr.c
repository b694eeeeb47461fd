/*
 * shoal:// addresses (see addr.h). The parser walks the string once, left
 * to right, with every piece bounded before it is copied; hosts are checked
 * by kind (IPv6 in brackets, dotted IPv4, DNS name) and IP forms go through
 * inet_pton/inet_ntop, which are pure string conversions.
 */
#include "proto/addr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "kernels/err.h"
#include "proto/identity.h"
#include "proto/wire.h"

_Static_assert(SHOAL_ADDR_MAX == SHOAL_WIRE_ADDR_MAX, "an address fits the header's addr field");

static const char scheme[] = "shoal://";
#define SCHEME_LEN (sizeof scheme - 1)

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A DNS name or a dotted IPv4 address, n bytes (no NUL inside). */
static int host_name_ok(const char *h, size_t n)
{
    if (n == 0 || n > 253)
        return 0;
    int all_digits_dots = 1;
    for (size_t i = 0; i < n; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || h[i] == '.'))
            all_digits_dots = 0;
    if (all_digits_dots) {
        char buf[16];
        struct in_addr a4;
        if (n >= sizeof buf)
            return 0;
        memcpy(buf, h, n);
        buf[n] = 0;
        /* glibc's inet_pton takes exactly a.b.c.d, each 0..255, and
         * refuses leading zeros */
        return inet_pton(AF_INET, buf, &a4) == 1;
    }
    size_t label = 0, last_start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || h[i] == '.') {
            if (label == 0 || label > 63 || h[i - 1] == '-' || h[i - label] == '-')
                return 0;
            last_start = i - label;
            label = 0;
        } else if (is_alnum(h[i]) || h[i] == '-') {
            label++;
        } else {
            return 0;
        }
    }
    /* a last label of digits would be a mistyped IPv4, not a name */
    for (size_t i = last_start; i < n; i++)
        if (!(h[i] >= '0' && h[i] <= '9'))
            return 1;
    return 0;
}

/* An IPv6 address of n bytes into its canonical form in out. */
static int host_v6_canon(const char *h, size_t n, char *out, size_t out_size)
{
    char buf[INET6_ADDRSTRLEN];
    struct in6_addr a6;
    if (n == 0 || n >= sizeof buf || memchr(h, '%', n))
        return 0;
    memcpy(buf, h, n);
    buf[n] = 0;
    if (inet_pton(AF_INET6, buf, &a6) != 1)
        return 0;
    return inet_ntop(AF_INET6, &a6, out, (socklen_t)out_size) != NULL;
}

/* Set a->host from h[0..n): v6 is 1 for a bracketed host. */
static int set_host(shoal_addr *a, const char *h, size_t n, int v6)
{
    if (v6)
        return host_v6_canon(h, n, a->host, sizeof a->host);
    if (!host_name_ok(h, n))
        return 0;
    memcpy(a->host, h, n);
    a->host[n] = 0;
    return 1;
}

int shoal_addr_parse(shoal_addr *a, const char *s)
{
    if (!a)
        return SHOAL_ERR_ARG;
    memset(a, 0, sizeof *a);
    if (!s)
        return SHOAL_ERR_FORMAT;
    size_t len = strnlen(s, SHOAL_ADDR_MAX);
    if (len >= SHOAL_ADDR_MAX || len < SCHEME_LEN || memcmp(s, scheme, SCHEME_LEN) != 0)
        goto malformed;
    size_t o = SCHEME_LEN;
    const char *host;
    size_t hlen;
    int v6 = 0;
    if (s[o] == '[') {
        const char *close = memchr(s + o, ']', len - o);
        if (!close)
            goto malformed;
        host = s + o + 1;
        hlen = (size_t)(close - host);
        o = (size_t)(close - s) + 1;
        v6 = 1;
    } else {
        host = s + o;
        while (o < len && s[o] != ':' && s[o] != '/')
            o++;
        hlen = (size_t)(s + o - host);
    }
    if (!set_host(a, host, hlen, v6))
        goto malformed;
    if (o >= len || s[o] != ':')
        goto malformed;
    o++;
    /* port: 1..65535, no leading zero */
    if (o >= len || s[o] < '1' || s[o] > '9')
        goto malformed;
    uint32_t port = 0;
    size_t digits = 0;
    while (o < len && s[o] >= '0' && s[o] <= '9' && digits < 6) {
        port = port * 10 + (uint32_t)(s[o] - '0');
        o++;
        digits++;
    }
    if (port == 0 || port > 65535)
        goto malformed;
    a->port = (uint16_t)port;
    if (o >= len || s[o] != '/')
        goto malformed;
    o++;
    if (len - o != 64 || shoal_identity_unhex(s + o, 64, a->pubkey) != SHOAL_OK)
        goto malformed;
    uint8_t curve[32];
    if (shoal_identity_curve_of(a->pubkey, curve) != SHOAL_OK)
        goto malformed;
    return SHOAL_OK;
malformed:
    memset(a, 0, sizeof *a);
    return SHOAL_ERR_FORMAT;
}

int shoal_addr_init(shoal_addr *a, const char *host, uint16_t port,
                    const uint8_t pubkey[32])
{
    if (!a)
        return SHOAL_ERR_ARG;
    memset(a, 0, sizeof *a);
    if (!host || !pubkey || port == 0)
        return SHOAL_ERR_FORMAT;
    size_t n = strnlen(host, SHOAL_ADDR_HOST_MAX);
    int v6 = memchr(host, ':', n) != NULL;
    uint8_t curve[32];
    if (n >= SHOAL_ADDR_HOST_MAX || !set_host(a, host, n, v6) ||
        shoal_identity_curve_of(pubkey, curve) != SHOAL_OK) {
        memset(a, 0, sizeof *a);
        return SHOAL_ERR_FORMAT;
    }
    a->port = port;
    memcpy(a->pubkey, pubkey, 32);
    return SHOAL_OK;
}

bool shoal_addr_is_ipv6(const shoal_addr *a)
{
    return memchr(a->host, ':', strnlen(a->host, sizeof a->host)) != NULL;
}

static int host_valid(const shoal_addr *a)
{
    size_t n = strnlen(a->host, sizeof a->host);
    if (n >= sizeof a->host || a->port == 0)
        return 0;
    if (shoal_addr_is_ipv6(a)) {
        char canon[INET6_ADDRSTRLEN];
        return host_v6_canon(a->host, n, canon, sizeof canon) && strcmp(canon, a->host) == 0;
    }
    return host_name_ok(a->host, n);
}

static int print_host_port(const shoal_addr *a, const char *prefix, char *out,
                           size_t out_size, const char *suffix)
{
    if (!a || !out || !host_valid(a))
        return SHOAL_ERR_ARG;
    int v6 = shoal_addr_is_ipv6(a);
    int w = snprintf(out, out_size, "%s%s%s%s:%u%s", prefix, v6 ? "[" : "", a->host,
                     v6 ? "]" : "", (unsigned)a->port, suffix);
    if (w < 0 || (size_t)w >= out_size) {
        if (out_size)
            out[0] = 0;
        return SHOAL_ERR_RANGE;
    }
    return SHOAL_OK;
}

int shoal_addr_format(const shoal_addr *a, char *out, size_t out_size)
{
    char hex[SHOAL_IDENTITY_HEX_SIZE + 1];
    if (!a)
        return SHOAL_ERR_ARG;
    hex[0] = '/';
    shoal_identity_hex(a->pubkey, hex + 1);
    return print_host_port(a, scheme, out, out_size, hex);
}

int shoal_addr_endpoint(const shoal_addr *a, char *out, size_t out_size)
{
    return print_host_port(a, "tcp://", out, out_size, "");
}

int shoal_addr_curve_key(const shoal_addr *a, uint8_t curve[32])
{
    return shoal_identity_curve_of(a->pubkey, curve);
}

void shoal_addr_peer_id(const shoal_addr *a, uint8_t id[32])
{
    shoal_identity_peer_id_of(a->pubkey, id);
}

bool shoal_addr_equal(const shoal_addr *a, const shoal_addr *b)
{
    return a->port == b->port && memcmp(a->pubkey, b->pubkey, 32) == 0 &&
           strncmp(a->host, b->host, sizeof a->host) == 0;
}
