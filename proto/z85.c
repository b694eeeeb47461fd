/*
 * Z85 encode/decode (ZeroMQ RFC 32). The decoder maps characters through a
 * full 256-entry table, so any byte is looked up safely, and accumulates in
 * 64 bits so that a group above 2^32 - 1 is caught, not wrapped.
 */
#include "proto/z85.h"

#include "kernels/err.h"

static const char z85_chars[86] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/* value + 1 of each character, 0 for bytes outside the alphabet */
static const uint8_t z85_values[256] = {
#define V(c, v) [(unsigned char)(c)] = (v) + 1
    V('0', 0), V('1', 1), V('2', 2), V('3', 3), V('4', 4), V('5', 5), V('6', 6),
    V('7', 7), V('8', 8), V('9', 9), V('a', 10), V('b', 11), V('c', 12),
    V('d', 13), V('e', 14), V('f', 15), V('g', 16), V('h', 17), V('i', 18),
    V('j', 19), V('k', 20), V('l', 21), V('m', 22), V('n', 23), V('o', 24),
    V('p', 25), V('q', 26), V('r', 27), V('s', 28), V('t', 29), V('u', 30),
    V('v', 31), V('w', 32), V('x', 33), V('y', 34), V('z', 35), V('A', 36),
    V('B', 37), V('C', 38), V('D', 39), V('E', 40), V('F', 41), V('G', 42),
    V('H', 43), V('I', 44), V('J', 45), V('K', 46), V('L', 47), V('M', 48),
    V('N', 49), V('O', 50), V('P', 51), V('Q', 52), V('R', 53), V('S', 54),
    V('T', 55), V('U', 56), V('V', 57), V('W', 58), V('X', 59), V('Y', 60),
    V('Z', 61), V('.', 62), V('-', 63), V(':', 64), V('+', 65), V('=', 66),
    V('^', 67), V('!', 68), V('/', 69), V('*', 70), V('?', 71), V('&', 72),
    V('<', 73), V('>', 74), V('(', 75), V(')', 76), V('[', 77), V(']', 78),
    V('{', 79), V('}', 80), V('@', 81), V('%', 82), V('$', 83), V('#', 84),
#undef V
};

int shoal_z85_encode(char *out, size_t out_size, const uint8_t *data, size_t n)
{
    if (!out || (n && !data) || n % 4 != 0 || out_size < n / 4 * 5 + 1)
        return SHOAL_ERR_ARG;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = (uint32_t)data[i] << 24 | (uint32_t)data[i + 1] << 16 |
                     (uint32_t)data[i + 2] << 8 | data[i + 3];
        for (int j = 4; j >= 0; j--) {
            out[o + (size_t)j] = z85_chars[v % 85];
            v /= 85;
        }
        o += 5;
    }
    out[o] = 0;
    return SHOAL_OK;
}

int shoal_z85_decode(uint8_t *out, size_t out_size, const char *s, size_t n)
{
    if (!out || (n && !s) || n % 5 != 0 || out_size < n / 5 * 4)
        return SHOAL_ERR_ARG;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 5) {
        uint64_t v = 0;
        for (int j = 0; j < 5; j++) {
            uint8_t d = z85_values[(unsigned char)s[i + (size_t)j]];
            if (d == 0)
                return SHOAL_ERR_FORMAT;
            v = v * 85 + (d - 1u);
        }
        if (v > UINT32_MAX)
            return SHOAL_ERR_FORMAT;
        out[o++] = (uint8_t)(v >> 24);
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    return SHOAL_OK;
}
