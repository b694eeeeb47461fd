/*
 * Fuzz target: shoal:// addresses (and Z85 and hex, which they use). What
 * parses must format back to a string that parses to an equal address and
 * formats the same (the formatted form is canonical), and its key must give
 * a CURVE key. Z85 text that decodes must encode back to itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "proto/addr.h"
#include "proto/identity.h"
#include "proto/z85.h"

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char s[SHOAL_ADDR_MAX + 64];
    size_t n = size < sizeof s - 1 ? size : sizeof s - 1;
    memcpy(s, data, n);
    s[n] = 0;

    shoal_addr a, b;
    int rc = shoal_addr_parse(&a, s);
    REQUIRE(rc == SHOAL_OK || rc == SHOAL_ERR_FORMAT);
    if (rc == SHOAL_OK) {
        char f[SHOAL_ADDR_MAX], g[SHOAL_ADDR_MAX], ep[SHOAL_ADDR_MAX];
        uint8_t curve[32];
        REQUIRE(shoal_addr_format(&a, f, sizeof f) == SHOAL_OK);
        REQUIRE(shoal_addr_parse(&b, f) == SHOAL_OK && shoal_addr_equal(&a, &b));
        REQUIRE(shoal_addr_format(&b, g, sizeof g) == SHOAL_OK && strcmp(f, g) == 0);
        REQUIRE(shoal_addr_endpoint(&a, ep, sizeof ep) == SHOAL_OK);
        REQUIRE(shoal_addr_curve_key(&a, curve) == SHOAL_OK);
        /* only an IPv6 host may be rewritten (to its canonical form) */
        if (!shoal_addr_is_ipv6(&a))
            REQUIRE(strcmp(f, s) == 0);
    }

    size_t zn = n - n % 5;
    uint8_t bin[(sizeof s) / 5 * 4];
    if (shoal_z85_decode(bin, sizeof bin, s, zn) == SHOAL_OK) {
        char z[sizeof s + 1];
        REQUIRE(shoal_z85_encode(z, sizeof z, bin, zn / 5 * 4) == SHOAL_OK);
        REQUIRE(memcmp(z, s, zn) == 0);
    }
    return 0;
}
