/*
 * A bounded msgpack reader (see mpread.h).
 */
#include "proto/mpread.h"

#include <string.h>

#include "kernels/err.h"

static uint64_t be_load(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------ */
/* Reader over checked bytes                                           */

int shoal_mpr_bytes(shoal_mpr *r, size_t n, const uint8_t **out)
{
    if (n > r->len - r->off)
        return SHOAL_ERR_FORMAT;
    *out = r->p + r->off;
    r->off += n;
    return SHOAL_OK;
}

int shoal_mpr_be(shoal_mpr *r, int n, uint64_t *v)
{
    const uint8_t *b;
    if (shoal_mpr_bytes(r, (size_t)n, &b))
        return SHOAL_ERR_FORMAT;
    *v = be_load(b, n);
    return SHOAL_OK;
}

int shoal_mpr_tag(shoal_mpr *r, uint8_t *tag)
{
    if (r->off >= r->len)
        return SHOAL_ERR_FORMAT;
    *tag = r->p[r->off++];
    return SHOAL_OK;
}

/* A non-negative integer in any msgpack int encoding, at most max. */
int shoal_mpr_uint(shoal_mpr *r, uint64_t max, uint64_t *v)
{
    uint8_t t;
    uint64_t u;
    if (shoal_mpr_tag(r, &t))
        return SHOAL_ERR_FORMAT;
    if (t <= 0x7f) {
        u = t;
    } else if (t >= 0xcc && t <= 0xcf) {
        if (shoal_mpr_be(r, 1 << (t - 0xcc), &u))
            return SHOAL_ERR_FORMAT;
    } else if (t >= 0xd0 && t <= 0xd3) {
        int n = 1 << (t - 0xd0);
        if (shoal_mpr_be(r, n, &u))
            return SHOAL_ERR_FORMAT;
        if (u >> (8 * n - 1) & 1) /* negative */
            return SHOAL_ERR_FORMAT;
    } else {
        return SHOAL_ERR_FORMAT;
    }
    if (u > max)
        return SHOAL_ERR_FORMAT;
    *v = u;
    return SHOAL_OK;
}

int shoal_mpr_u32(shoal_mpr *r, uint32_t *v)
{
    uint64_t u;
    if (shoal_mpr_uint(r, UINT32_MAX, &u))
        return SHOAL_ERR_FORMAT;
    *v = (uint32_t)u;
    return SHOAL_OK;
}

int shoal_mpr_double(shoal_mpr *r, double *v)
{
    uint8_t t;
    uint64_t u;
    if (shoal_mpr_tag(r, &t))
        return SHOAL_ERR_FORMAT;
    if (t == 0xca) {
        if (shoal_mpr_be(r, 4, &u))
            return SHOAL_ERR_FORMAT;
        uint32_t b = (uint32_t)u;
        float f;
        memcpy(&f, &b, 4);
        *v = f;
    } else if (t == 0xcb) {
        if (shoal_mpr_be(r, 8, &u))
            return SHOAL_ERR_FORMAT;
        memcpy(v, &u, 8);
    } else {
        return SHOAL_ERR_FORMAT;
    }
    return SHOAL_OK;
}

/* A container header: kind 0 array, 1 map. */
int shoal_mpr_count(shoal_mpr *r, int map, uint32_t *n)
{
    uint8_t t;
    uint64_t u;
    if (shoal_mpr_tag(r, &t))
        return SHOAL_ERR_FORMAT;
    if (!map && t >= 0x90 && t <= 0x9f)
        u = t & 0x0f;
    else if (map && t >= 0x80 && t <= 0x8f)
        u = t & 0x0f;
    else if (t == (map ? 0xde : 0xdc)) {
        if (shoal_mpr_be(r, 2, &u))
            return SHOAL_ERR_FORMAT;
    } else if (t == (map ? 0xdf : 0xdd)) {
        if (shoal_mpr_be(r, 4, &u))
            return SHOAL_ERR_FORMAT;
    } else {
        return SHOAL_ERR_FORMAT;
    }
    /* each item (each key and value of a map) needs one byte at least */
    if (u > (r->len - r->off) / (map ? 2 : 1))
        return SHOAL_ERR_FORMAT;
    *n = (uint32_t)u;
    return SHOAL_OK;
}

/* str (bin = 0) or bin (bin = 1) */
int shoal_mpr_raw(shoal_mpr *r, int bin, const uint8_t **s, uint32_t *n)
{
    uint8_t t;
    uint64_t u;
    if (shoal_mpr_tag(r, &t))
        return SHOAL_ERR_FORMAT;
    if (!bin && t >= 0xa0 && t <= 0xbf)
        u = t & 0x1f;
    else if (t == (bin ? 0xc4 : 0xd9)) {
        if (shoal_mpr_be(r, 1, &u))
            return SHOAL_ERR_FORMAT;
    } else if (t == (bin ? 0xc5 : 0xda)) {
        if (shoal_mpr_be(r, 2, &u))
            return SHOAL_ERR_FORMAT;
    } else if (t == (bin ? 0xc6 : 0xdb)) {
        if (shoal_mpr_be(r, 4, &u))
            return SHOAL_ERR_FORMAT;
    } else {
        return SHOAL_ERR_FORMAT;
    }
    if (u > r->len - r->off)
        return SHOAL_ERR_FORMAT;
    *n = (uint32_t)u;
    return shoal_mpr_bytes(r, (size_t)u, s);
}

/* Skip one object. Iterative: `need` counts objects still to skip; the
 * structural check bounded every count by the frame length. */
int shoal_mpr_skip(shoal_mpr *r)
{
    uint64_t need = 1;
    while (need > 0) {
        need--;
        uint8_t t;
        uint64_t n = 0;
        if (shoal_mpr_tag(r, &t))
            return SHOAL_ERR_FORMAT;
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
            continue;
        if (t >= 0x80 && t <= 0x8f) {
            need += 2u * (t & 0x0fu);
        } else if (t >= 0x90 && t <= 0x9f) {
            need += t & 0x0fu;
        } else if (t >= 0xa0 && t <= 0xbf) {
            n = t & 0x1fu;
        } else {
            int lb = 0, mult = 0;
            uint64_t extra = 0;
            switch (t) {
            case 0xc4: case 0xd9: lb = 1; break;
            case 0xc5: case 0xda: lb = 2; break;
            case 0xc6: case 0xdb: lb = 4; break;
            case 0xc7: lb = 1; extra = 1; break;
            case 0xc8: lb = 2; extra = 1; break;
            case 0xc9: lb = 4; extra = 1; break;
            case 0xca: n = 4; break;
            case 0xcb: n = 8; break;
            case 0xcc: case 0xd0: n = 1; break;
            case 0xcd: case 0xd1: n = 2; break;
            case 0xce: case 0xd2: n = 4; break;
            case 0xcf: case 0xd3: n = 8; break;
            case 0xd4: n = 2; break;
            case 0xd5: n = 3; break;
            case 0xd6: n = 5; break;
            case 0xd7: n = 9; break;
            case 0xd8: n = 17; break;
            case 0xdc: lb = 2; mult = 1; break;
            case 0xdd: lb = 4; mult = 1; break;
            case 0xde: lb = 2; mult = 2; break;
            case 0xdf: lb = 4; mult = 2; break;
            default: return SHOAL_ERR_FORMAT;
            }
            if (lb) {
                uint64_t c;
                if (shoal_mpr_be(r, lb, &c))
                    return SHOAL_ERR_FORMAT;
                if (mult) {
                    if (c > r->len - r->off)
                        return SHOAL_ERR_FORMAT;
                    need += mult * c;
                } else {
                    n = c + extra;
                }
            }
        }
        if (need > r->len - r->off)
            return SHOAL_ERR_FORMAT;
        if (n > r->len - r->off)
            return SHOAL_ERR_FORMAT;
        r->off += (size_t)n;
    }
    return SHOAL_OK;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid (NUL
 * counts as invalid: text fields never hold it). */
size_t shoal_mpr_utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c == 0)
        return 0;
    if (c < 0x80)
        return 1;
    size_t k;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf) {
        k = 2; cp = c & 0x1f; min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        k = 3; cp = c & 0x0f; min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4; cp = c & 0x07; min = 0x10000;
    } else {
        return 0;
    }
    if (k > n)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k;
}

int shoal_mpr_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t k = shoal_mpr_utf8_seq(s + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

/* A str into a NUL-terminated text field of `size` bytes. */
int shoal_mpr_text(shoal_mpr *r, char *field, size_t size)
{
    const uint8_t *s;
    uint32_t n;
    if (shoal_mpr_raw(r, 0, &s, &n) || n >= size || !shoal_mpr_utf8_valid(s, n))
        return SHOAL_ERR_FORMAT;
    memcpy(field, s, n);
    field[n] = 0;
    return SHOAL_OK;
}

int shoal_mpr_bin_exact(shoal_mpr *r, uint8_t *out, uint32_t size)
{
    const uint8_t *s;
    uint32_t n;
    if (shoal_mpr_raw(r, 1, &s, &n) || n != size)
        return SHOAL_ERR_FORMAT;
    memcpy(out, s, n);
    return SHOAL_OK;
}

