/*
 * Node addresses: one copyable string that says where a node is and who it
 * is, so that a client can connect and authenticate it in one step:
 *
 *   shoal://HOST:PORT/PUBKEY
 *
 *   HOST    a DNS name (labels of letters, digits and '-', 1..63 bytes, no
 *           '-' at either end, at most 253 bytes in all, no trailing dot,
 *           last label not all digits; case kept as written), a dotted IPv4
 *           address (four decimal parts 0..255, no leading zeros), or an
 *           IPv6 address in brackets (no zone id; stored and printed in
 *           the canonical inet_ntop form, so "[0::1]" becomes "[::1]").
 *   PORT    decimal 1..65535, no sign, no leading zero.
 *   PUBKEY  the node's Ed25519 public key: 64 lowercase hex digits. It must
 *           be a valid key (it converts to a CURVE key).
 *
 * Nothing else is accepted: no user info, no path beyond the key, no query,
 * no whitespace. The longest address is SHOAL_ADDR_MAX - 1 bytes. From the
 * address a client derives the peer id and the CURVE server key it must see
 * (identity.h), and the ZeroMQ endpoint to connect to. Resolving a DNS name
 * is the transport's business; nothing here touches the network.
 *
 * THREAD SAFETY: all functions are pure and thread-safe.
 */
#ifndef SHOAL_PROTO_ADDR_H
#define SHOAL_PROTO_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHOAL_ADDR_MAX 336      /* longest address string + NUL */
#define SHOAL_ADDR_HOST_MAX 254 /* longest host (without brackets) + NUL */

typedef struct shoal_addr {
    char host[SHOAL_ADDR_HOST_MAX]; /* DNS name, IPv4, or IPv6 without brackets */
    uint16_t port;
    uint8_t pubkey[32];             /* Ed25519 */
} shoal_addr;

/* Parse a NUL-terminated address (read up to SHOAL_ADDR_MAX bytes).
 * SHOAL_ERR_FORMAT for anything that is not exactly the format above;
 * *a is zeroed then. */
int shoal_addr_parse(shoal_addr *a, const char *s);

/* Build an address from parts, with the same checks as parsing (host
 * without brackets; an IPv6 host is canonicalized). SHOAL_ERR_FORMAT. */
int shoal_addr_init(shoal_addr *a, const char *host, uint16_t port,
                    const uint8_t pubkey[32]);

/* Write the address string; SHOAL_ERR_RANGE if out_size is too small
 * (SHOAL_ADDR_MAX is always enough), SHOAL_ERR_ARG if a is not valid. */
int shoal_addr_format(const shoal_addr *a, char *out, size_t out_size);

/* The ZeroMQ endpoint "tcp://HOST:PORT" ("tcp://[V6]:PORT"). */
int shoal_addr_endpoint(const shoal_addr *a, char *out, size_t out_size);

/* True for an IPv6 host (the socket then needs ZMQ_IPV6). */
bool shoal_addr_is_ipv6(const shoal_addr *a);

/* The CURVE server key the node at a must present (32 bytes), and its peer
 * id. SHOAL_ERR_FORMAT if the key is invalid (never, after parse). */
int shoal_addr_curve_key(const shoal_addr *a, uint8_t curve[32]);
void shoal_addr_peer_id(const shoal_addr *a, uint8_t id[32]);

/* Same host (byte for byte), port and key. */
bool shoal_addr_equal(const shoal_addr *a, const shoal_addr *b);

#endif
