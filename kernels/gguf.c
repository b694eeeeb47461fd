/*
 * GGUF reader and writer (see gguf.h).
 *
 * Reader. The file is mapped whole (MAP_PRIVATE, PROT_READ) and the header is
 * decoded from the mapping by a cursor that checks every read against the
 * bytes that remain. Only the header's pages are touched; tensor data stays
 * on disk until a caller reads it through shoal_gguf_tensor_data. Before
 * anything is allocated for a declared count, the count is checked against
 * the remaining bytes times the smallest encoding of one element, so an
 * allocation is always bounded by a small multiple of bytes really present.
 * Strings are copied (NUL-terminated); numeric arrays are copied into
 * aligned memory so callers may index them as C arrays. Arrays of arrays are
 * validated (nesting capped at two levels) but their contents not exposed.
 * Keys and tensor names are kept in sorted index arrays: duplicates are found
 * in O(n log n) and lookups are binary searches.
 *
 * Tensor checks: 1..4 dims, each >= 1, element count and byte size without
 * overflow, a supported type (else SHOAL_ERR_UNSUPPORTED naming the type),
 * a row a whole number of blocks, offset aligned, data inside the file, no
 * two tensors overlapping, names unique.
 *
 * Writer. Metadata and tensor descriptions are held in memory; tensor data
 * either copied at add time or streamed by the caller after begin (one
 * tensor at a time). Output goes to a temporary file in the destination's
 * folder, fsync'ed, then renamed over the destination.
 */
#include "kernels/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/err.h"
#include "kernels/types.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_ALIGNMENT (1u << 16)
#define GGUF_MAX_KEY_LEN (1u << 20)          /* 1 MiB */
#define GGUF_MAX_STR_LEN (64u << 20)         /* 64 MiB per string value */
#define GGUF_MAX_NAME_LEN 256u               /* tensor names (ggml: < 64) */
#define GGUF_MAX_KV ((uint64_t)1 << 20)
#define GGUF_MAX_TENSORS ((uint64_t)1 << 20)
#define GGUF_MAX_NESTING 2                   /* an array of arrays, no deeper */
#define GGUF_N_VTYPES 13

/* ------------------------------------------------------------------------ */
/* Type names                                                                */

static const char *const ggml_type_names[] = {
    [0] = "f32",      [1] = "f16",     [2] = "q4_0",    [3] = "q4_1",
    [6] = "q5_0",     [7] = "q5_1",    [8] = "q8_0",    [9] = "q8_1",
    [10] = "q2_K",    [11] = "q3_K",   [12] = "q4_K",   [13] = "q5_K",
    [14] = "q6_K",    [15] = "q8_K",   [16] = "iq2_xxs", [17] = "iq2_xs",
    [18] = "iq3_xxs", [19] = "iq1_s",  [20] = "iq4_nl", [21] = "iq3_s",
    [22] = "iq2_s",   [23] = "iq4_xs", [24] = "i8",     [25] = "i16",
    [26] = "i32",     [27] = "i64",    [28] = "f64",    [29] = "iq1_m",
    [30] = "bf16",    [34] = "tq1_0",  [35] = "tq2_0",  [39] = "mxfp4",
};

const char *shoal_gguf_ggml_type_name(int type)
{
    if (type < 0 || (size_t)type >= sizeof ggml_type_names / sizeof ggml_type_names[0])
        return NULL;
    return ggml_type_names[type];
}

static const char *const vtype_names[GGUF_N_VTYPES] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
    "u64", "i64", "f64",
};

/* Encoded size of a scalar vtype; 0 for STRING and ARRAY. */
static size_t vtype_size(uint32_t t)
{
    switch (t) {
    case SHOAL_GGUF_U8: case SHOAL_GGUF_I8: case SHOAL_GGUF_BOOL: return 1;
    case SHOAL_GGUF_U16: case SHOAL_GGUF_I16: return 2;
    case SHOAL_GGUF_U32: case SHOAL_GGUF_I32: case SHOAL_GGUF_F32: return 4;
    case SHOAL_GGUF_U64: case SHOAL_GGUF_I64: case SHOAL_GGUF_F64: return 8;
    default: return 0;
    }
}

/* Smallest encoding of one element of vtype t inside an array. */
static uint64_t vtype_min_bytes(uint32_t t)
{
    if (t == SHOAL_GGUF_STRING)
        return 8;
    if (t == SHOAL_GGUF_ARRAY)
        return 12;
    return vtype_size(t);
}

static bool vtype_is_int(uint32_t t)
{
    return t == SHOAL_GGUF_U8 || t == SHOAL_GGUF_I8 || t == SHOAL_GGUF_U16 ||
           t == SHOAL_GGUF_I16 || t == SHOAL_GGUF_U32 || t == SHOAL_GGUF_I32 ||
           t == SHOAL_GGUF_U64 || t == SHOAL_GGUF_I64;
}

static bool vtype_is_signed(uint32_t t)
{
    return t == SHOAL_GGUF_I8 || t == SHOAL_GGUF_I16 || t == SHOAL_GGUF_I32 ||
           t == SHOAL_GGUF_I64;
}

/* ------------------------------------------------------------------------ */
/* Reader                                                                    */

typedef struct gguf_kv {
    char *key;
    uint32_t type;
    union {
        uint64_t u;       /* unsigned ints, bool */
        int64_t i;        /* signed ints */
        double f;         /* f32, f64 */
    } v;
    shoal_gguf_str str;   /* STRING */
    uint32_t arr_type;    /* ARRAY */
    uint64_t arr_len;
    void *arr_data;       /* numeric elements (copy) */
    shoal_gguf_str *arr_strs;
    char *arr_chars;      /* backing store of arr_strs */
} gguf_kv;

typedef struct gguf_name_ix {
    const char *name;
    int64_t ix;
} gguf_name_ix;

struct shoal_gguf {
    const uint8_t *base;  /* mapping or caller's memory */
    uint64_t size;
    bool mapped;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    gguf_kv *kv;
    gguf_name_ix *kv_sorted;
    int64_t n_tensors;
    shoal_gguf_tensor *tensors;
    char **tensor_names;
    gguf_name_ix *tensor_sorted;
};

/* A cursor over untrusted bytes; fail() writes the one-line message. */
typedef struct rd {
    const uint8_t *p;
    uint64_t size;
    uint64_t off;
    const char *name;
    char *err;
    size_t errlen;
    char what[192];       /* what is being read, for messages */
    bool advise;          /* a mapping: read the header ahead in chunks */
    uint64_t ra_end;      /* bytes [0, ra_end) already asked for */
    uint64_t page;
} rd;

/* While the header is parsed the mapping is MADV_RANDOM, so a page fault
 * reads one page instead of the kernel's read-around window (which can be
 * megabytes, all of it tensor data after a small header). The header itself
 * is asked for ahead of the cursor in chunks with MADV_WILLNEED, so parsing
 * is not one synchronous read per page. At most one chunk past the header
 * is read. */
#define GGUF_READAHEAD (256u << 10)

static void rd_ahead(rd *r, uint64_t end)
{
    if (!r->advise || end <= r->ra_end)
        return;
    uint64_t from = r->ra_end & ~(r->page - 1);
    uint64_t to = end > r->size - GGUF_READAHEAD ? r->size : end + GGUF_READAHEAD;
    if (r->size < GGUF_READAHEAD)
        to = r->size;
    madvise((void *)(r->p + from), (size_t)(to - from), MADV_WILLNEED);
    r->ra_end = to;
}

static int fail(rd *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(rd *r, int code, const char *fmt, ...)
{
    if (r->err && r->errlen) {
        int n = snprintf(r->err, r->errlen, "%s: ", r->name);
        if (n < 0)
            n = 0;
        if ((size_t)n < r->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
        for (char *c = r->err; *c; c++)   /* one line, whatever the file held */
            if (*c == '\n' || *c == '\r')
                *c = ' ';
    }
    return code;
}

static int truncated(rd *r)
{
    return fail(r, SHOAL_ERR_FORMAT, "truncated at byte %llu of %llu while reading %s",
                (unsigned long long)r->off, (unsigned long long)r->size, r->what);
}

static bool utf8_ok(const char *s, uint64_t len, bool allow_ctl);

/* Copies up to about 64 bytes of untrusted text for a message: control
 * bytes as '?', and every non-ASCII byte as '?' unless the text is UTF-8;
 * a cut never splits a character. */
static void quote(char *dst, size_t dstlen, const char *s, uint64_t len)
{
    bool utf8 = utf8_ok(s, len, true);
    size_t n = 0;
    uint64_t i = 0;
    for (; i < len && n + 8 < dstlen && i < 64; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[n++] = (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) ? '?' : (char)c;
    }
    if (i < len) {
        while (utf8 && n > 0 && i < len && ((unsigned char)s[i] & 0xc0) == 0x80) {
            n--;   /* back off to the start of the cut character */
            i--;
        }
        memcpy(dst + n, "...", 3);
        n += 3;
    }
    dst[n] = '\0';
}

static uint64_t remaining(const rd *r) { return r->size - r->off; }

static int rd_bytes(rd *r, void *dst, uint64_t n)
{
    if (n > remaining(r))
        return truncated(r);
    rd_ahead(r, r->off + n);
    memcpy(dst, r->p + r->off, (size_t)n);
    r->off += n;
    return 0;
}

static int rd_u32(rd *r, uint32_t *v)
{
    uint8_t b[4] = {0};
    int e = rd_bytes(r, b, 4);
    if (e)
        return e;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 0;
}

static int rd_u64(rd *r, uint64_t *v)
{
    uint8_t b[8] = {0};
    int e = rd_bytes(r, b, 8);
    if (e)
        return e;
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = x << 8 | b[i];
    *v = x;
    return 0;
}

static uint64_t le_u(const uint8_t *b, size_t n)
{
    uint64_t x = 0;
    for (size_t i = n; i-- > 0;)
        x = x << 8 | b[i];
    return x;
}

/* A gguf_string: u64 length then bytes. Points into the input. */
static int rd_str(rd *r, uint64_t cap, const char **s, uint64_t *len)
{
    uint64_t n = 0;
    int e = rd_u64(r, &n);
    if (e)
        return e;
    if (n > cap)
        return fail(r, SHOAL_ERR_FORMAT, "string of %llu bytes (cap %llu) while reading %s",
                    (unsigned long long)n, (unsigned long long)cap, r->what);
    if (n > remaining(r))
        return fail(r, SHOAL_ERR_FORMAT,
                    "string of %llu bytes at byte %llu runs past end of file (%llu) while reading %s",
                    (unsigned long long)n, (unsigned long long)r->off,
                    (unsigned long long)r->size, r->what);
    rd_ahead(r, r->off + n);
    *s = (const char *)(r->p + r->off);
    *len = n;
    r->off += n;
    return 0;
}

/* UTF-8 by lead and continuation bytes (overlong 3- and 4-byte forms and
 * surrogates pass), with or without control bytes. */
static bool utf8_ok(const char *s, uint64_t len, bool allow_ctl)
{
    const unsigned char *u = (const unsigned char *)s;
    uint64_t i = 0;
    while (i < len) {
        unsigned char c = u[i];
        if (!allow_ctl && (c < 0x20 || c == 0x7f))
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        int n = (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
        if (n < 0 || c == 0xc0 || c == 0xc1 || c > 0xf4 || (uint64_t)n > len - i - 1)
            return false;
        for (int k = 1; k <= n; k++)
            if ((u[i + k] & 0xc0) != 0x80)
                return false;
        i += (uint64_t)n + 1;
    }
    return true;
}

/* Keys and tensor names: non-empty UTF-8 text without control bytes. */
static bool name_ok(const char *s, uint64_t len)
{
    return len > 0 && utf8_ok(s, len, false);
}

static char *dup_bytes(const char *s, uint64_t len)
{
    char *d = malloc((size_t)len + 1);
    if (!d)
        return NULL;
    memcpy(d, s, (size_t)len);
    d[len] = '\0';
    return d;
}

static int nomem(rd *r)
{
    return fail(r, SHOAL_ERR_NOMEM, "out of memory while reading %s", r->what);
}

/* Checks (and skips) one array body: element type, count, elements.
 * depth is the nesting level of this array (1 = a key's value). */
static int skip_array(rd *r, int depth)
{
    uint32_t et = 0;
    uint64_t n = 0;
    int e = rd_u32(r, &et);
    if (!e)
        e = rd_u64(r, &n);
    if (e)
        return e;
    if (et >= GGUF_N_VTYPES)
        return fail(r, SHOAL_ERR_FORMAT, "array of unknown value type %u in %s", et, r->what);
    if (et == SHOAL_GGUF_ARRAY && depth >= GGUF_MAX_NESTING)
        return fail(r, SHOAL_ERR_FORMAT, "arrays nested deeper than %d levels in %s",
                    GGUF_MAX_NESTING, r->what);
    if (n > remaining(r) / vtype_min_bytes(et))
        return fail(r, SHOAL_ERR_FORMAT,
                    "array of %llu %s elements needs more than the %llu bytes left in %s",
                    (unsigned long long)n, vtype_names[et],
                    (unsigned long long)remaining(r), r->what);
    if (et == SHOAL_GGUF_STRING) {
        for (uint64_t j = 0; j < n; j++) {
            const char *s;
            uint64_t len;
            if ((e = rd_str(r, GGUF_MAX_STR_LEN, &s, &len)))
                return e;
        }
    } else if (et == SHOAL_GGUF_ARRAY) {
        for (uint64_t j = 0; j < n; j++)
            if ((e = skip_array(r, depth + 1)))
                return e;
    } else if (et == SHOAL_GGUF_BOOL) {
        rd_ahead(r, r->off + n);
        for (uint64_t j = 0; j < n; j++)
            if (r->p[r->off + j] > 1)
                return fail(r, SHOAL_ERR_FORMAT, "bool element %llu is %u (not 0 or 1) in %s",
                            (unsigned long long)j, r->p[r->off + j], r->what);
        r->off += n;
    } else {
        rd_ahead(r, r->off + n * vtype_size(et));
        r->off += n * vtype_size(et);
    }
    return 0;
}

/* Reads a top-level array value into kv. */
static int read_array(rd *r, gguf_kv *kv)
{
    uint64_t start = r->off;
    int e = skip_array(r, 1);      /* validates everything first */
    if (e)
        return e;
    rd c = *r;                      /* second pass copies */
    c.off = start;
    uint32_t et = 0;
    uint64_t n = 0;
    rd_u32(&c, &et);
    rd_u64(&c, &n);
    kv->arr_type = et;
    kv->arr_len = n;
    if (et == SHOAL_GGUF_STRING) {
        /* n strings, each at least 8 bytes of input, and the characters
         * themselves: both bounded by the bytes just validated. */
        uint64_t total = 0;
        rd s = c;
        for (uint64_t j = 0; j < n; j++) {
            const char *p;
            uint64_t len;
            rd_str(&s, GGUF_MAX_STR_LEN, &p, &len);
            total += len + 1;
        }
        kv->arr_strs = calloc(n ? (size_t)n : 1, sizeof *kv->arr_strs);
        kv->arr_chars = malloc(total ? (size_t)total : 1);
        if (!kv->arr_strs || !kv->arr_chars)
            return nomem(r);
        char *dst = kv->arr_chars;
        for (uint64_t j = 0; j < n; j++) {
            const char *p;
            uint64_t len;
            rd_str(&c, GGUF_MAX_STR_LEN, &p, &len);
            memcpy(dst, p, (size_t)len);
            dst[len] = '\0';
            kv->arr_strs[j].s = dst;
            kv->arr_strs[j].len = len;
            dst += len + 1;
        }
    } else if (et != SHOAL_GGUF_ARRAY) {
        size_t bytes = (size_t)(n * vtype_size(et));
        kv->arr_data = malloc(bytes ? bytes : 8);
        if (!kv->arr_data)
            return nomem(r);
        memcpy(kv->arr_data, c.p + c.off, bytes);
    }
    return 0;
}

static int read_value(rd *r, gguf_kv *kv)
{
    uint32_t t = kv->type;
    int e;
    if (t == SHOAL_GGUF_STRING) {
        const char *s;
        uint64_t len;
        if ((e = rd_str(r, GGUF_MAX_STR_LEN, &s, &len)))
            return e;
        if (!(kv->str.s = dup_bytes(s, len)))
            return nomem(r);
        kv->str.len = len;
        return 0;
    }
    if (t == SHOAL_GGUF_ARRAY)
        return read_array(r, kv);
    size_t sz = vtype_size(t);
    uint8_t b[8] = {0};
    if ((e = rd_bytes(r, b, sz)))
        return e;
    uint64_t x = le_u(b, sz);
    switch (t) {
    case SHOAL_GGUF_U8: case SHOAL_GGUF_U16: case SHOAL_GGUF_U32: case SHOAL_GGUF_U64:
        kv->v.u = x;
        break;
    case SHOAL_GGUF_I8: kv->v.i = (int8_t)x; break;
    case SHOAL_GGUF_I16: kv->v.i = (int16_t)x; break;
    case SHOAL_GGUF_I32: kv->v.i = (int32_t)x; break;
    case SHOAL_GGUF_I64: kv->v.i = (int64_t)x; break;
    case SHOAL_GGUF_BOOL:
        if (x > 1)
            return fail(r, SHOAL_ERR_FORMAT, "bool value %u (not 0 or 1) in %s",
                        (unsigned)x, r->what);
        kv->v.u = x;
        break;
    case SHOAL_GGUF_F32: {
        uint32_t u = (uint32_t)x;
        float f;
        memcpy(&f, &u, 4);
        kv->v.f = f;
        break;
    }
    case SHOAL_GGUF_F64: {
        double d;
        memcpy(&d, &x, 8);
        kv->v.f = d;
        break;
    }
    default:
        return fail(r, SHOAL_ERR_FORMAT, "unknown value type %u in %s", t, r->what);
    }
    return 0;
}

static int cmp_name_ix(const void *a, const void *b)
{
    return strcmp(((const gguf_name_ix *)a)->name, ((const gguf_name_ix *)b)->name);
}

typedef struct span_ix {
    uint64_t off, size;
    int64_t ix;
} span_ix;

static int cmp_span(const void *a, const void *b)
{
    const span_ix *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off ? 1 : 0;
}

static int64_t name_lookup(const gguf_name_ix *v, int64_t n, const char *name)
{
    if (!v || !name)
        return -1;
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v[mid].name, name);
        if (c == 0)
            return v[mid].ix;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Decodes one tensor info (name, dims, type, offset) into t. */
static int read_tensor_info(rd *r, shoal_gguf *g, int64_t i)
{
    const char *s;
    uint64_t len;
    int e;
    snprintf(r->what, sizeof r->what, "the name of tensor #%lld", (long long)i);
    if ((e = rd_str(r, GGUF_MAX_NAME_LEN, &s, &len)))
        return e;
    char q[80];
    quote(q, sizeof q, s, len);
    if (!name_ok(s, len))
        return fail(r, SHOAL_ERR_FORMAT, "tensor #%lld has an empty or non-text name '%s'",
                    (long long)i, q);
    if (!(g->tensor_names[i] = dup_bytes(s, len)))
        return nomem(r);
    shoal_gguf_tensor *t = &g->tensors[i];
    t->name = g->tensor_names[i];
    snprintf(r->what, sizeof r->what, "the info of tensor '%s'", q);

    uint32_t nd;
    if ((e = rd_u32(r, &nd)))
        return e;
    if (nd < 1 || nd > SHOAL_GGUF_MAX_DIMS)
        return fail(r, SHOAL_ERR_FORMAT, "tensor '%s' has %u dimensions (1..%d allowed)",
                    q, nd, SHOAL_GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t nel = 1;
    for (int d = 0; d < SHOAL_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v;
        if ((e = rd_u64(r, &v)))
            return e;
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return fail(r, SHOAL_ERR_FORMAT, "tensor '%s' has dimension %u = %llu (must be 1..2^63-1)",
                        q, d, (unsigned long long)v);
        if (nel > (uint64_t)INT64_MAX / v)
            return fail(r, SHOAL_ERR_FORMAT, "tensor '%s' has too many elements (product of dims overflows)", q);
        nel *= v;
        t->ne[d] = (int64_t)v;
    }
    uint32_t type;
    if ((e = rd_u32(r, &type)) || (e = rd_u64(r, &t->offset)))
        return e;
    const shoal_type_traits *tr = shoal_type_info((int)type);
    if (!tr) {
        const char *tn = shoal_gguf_ggml_type_name((int)type);
        if (tn)
            return fail(r, SHOAL_ERR_UNSUPPORTED,
                        "tensor '%s' has type %u (%s), which shoal does not support", q, type, tn);
        return fail(r, SHOAL_ERR_UNSUPPORTED, "tensor '%s' has unknown type id %u", q, type);
    }
    t->type = (int)type;
    if (t->ne[0] % tr->block_elems != 0)
        return fail(r, SHOAL_ERR_FORMAT,
                    "tensor '%s': row length %lld is not a multiple of the %s block size %lld",
                    q, (long long)t->ne[0], tr->name, (long long)tr->block_elems);
    uint64_t blocks = nel / (uint64_t)tr->block_elems;
    if (blocks > UINT64_MAX / tr->block_bytes || blocks * tr->block_bytes > (uint64_t)SIZE_MAX)
        return fail(r, SHOAL_ERR_FORMAT, "tensor '%s' is too large (byte size overflows)", q);
    t->size = blocks * tr->block_bytes;
    return 0;
}

static void gguf_free(shoal_gguf *g)
{
    if (!g)
        return;
    for (int64_t i = 0; g->kv && i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        free(kv->key);
        free((char *)kv->str.s);
        free(kv->arr_data);
        free(kv->arr_strs);
        free(kv->arr_chars);
    }
    free(g->kv);
    free(g->kv_sorted);
    for (int64_t i = 0; g->tensor_names && i < g->n_tensors; i++)
        free(g->tensor_names[i]);
    free(g->tensor_names);
    free(g->tensors);
    free(g->tensor_sorted);
    if (g->mapped && g->base)
        munmap((void *)g->base, (size_t)g->size);
    free(g);
}

/* Makes room for `need` elements at *p (capacity *cap, doubling from 16),
 * zeroing the new ones, so memory follows the entries actually decoded and
 * not a declared count. */
static bool grow(void *pp, uint64_t *cap, uint64_t need, size_t elem)
{
    void **p = pp;
    if (need <= *cap)
        return true;
    uint64_t c = *cap ? *cap * 2 : 16;
    if (c < need)
        c = need;
    uint8_t *n = realloc(*p, (size_t)c * elem);
    if (!n)
        return false;
    memset(n + *cap * elem, 0, (size_t)(c - *cap) * elem);
    *p = n;
    *cap = c;
    return true;
}

/* Parses the header of g->base[0..g->size). On failure g is left for
 * gguf_free (counts say how much was allocated). */
static int parse(shoal_gguf *g, rd *r)
{
    int e;
    char magic[4];
    snprintf(r->what, sizeof r->what, "the header");
    if (r->size < 4 || memcmp(r->p, GGUF_MAGIC, 4) != 0) {
        if (r->size < 4)
            return fail(r, SHOAL_ERR_FORMAT, "not a GGUF file (only %llu bytes)",
                        (unsigned long long)r->size);
        return fail(r, SHOAL_ERR_FORMAT, "not a GGUF file (bad magic)");
    }
    rd_bytes(r, magic, 4);
    uint32_t version;
    if ((e = rd_u32(r, &version)))
        return e;
    if (version == 1)
        return fail(r, SHOAL_ERR_UNSUPPORTED, "GGUF version 1 is not supported (convert to v3)");
    if (version != 2 && version != 3) {
        if (version == 0x02000000u || version == 0x03000000u)
            return fail(r, SHOAL_ERR_UNSUPPORTED, "big-endian GGUF is not supported");
        return fail(r, SHOAL_ERR_UNSUPPORTED, "GGUF version %u is not supported (2 and 3 are)",
                    version);
    }
    g->version = version;
    uint64_t n_tensors, n_kv;
    if ((e = rd_u64(r, &n_tensors)) || (e = rd_u64(r, &n_kv)))
        return e;
    /* The smallest tensor info: name (8 + 1), n_dims 4, one dim 8, type 4,
     * offset 8. The smallest kv: key (8 + 1), type 4, a one-byte value. */
    if (n_tensors > GGUF_MAX_TENSORS || n_tensors > remaining(r) / 33)
        return fail(r, SHOAL_ERR_FORMAT, "tensor count %llu is impossible for a file of %llu bytes",
                    (unsigned long long)n_tensors, (unsigned long long)r->size);
    if (n_kv > GGUF_MAX_KV || n_kv > remaining(r) / 14)
        return fail(r, SHOAL_ERR_FORMAT, "metadata count %llu is impossible for a file of %llu bytes",
                    (unsigned long long)n_kv, (unsigned long long)r->size);

    uint64_t cap_kv = 0, cap_kvs = 0;
    for (uint64_t i = 0; i < n_kv; i++) {
        if (!grow(&g->kv, &cap_kv, i + 1, sizeof *g->kv) ||
            !grow(&g->kv_sorted, &cap_kvs, i + 1, sizeof *g->kv_sorted))
            return nomem(r);
        gguf_kv *kv = &g->kv[i];
        g->n_kv = (int64_t)i + 1;
        snprintf(r->what, sizeof r->what, "metadata key #%llu", (unsigned long long)i);
        const char *s;
        uint64_t len;
        if ((e = rd_str(r, GGUF_MAX_KEY_LEN, &s, &len)))
            return e;
        char q[80];
        quote(q, sizeof q, s, len);
        if (!name_ok(s, len))
            return fail(r, SHOAL_ERR_FORMAT, "metadata key #%llu is empty or not text: '%s'",
                        (unsigned long long)i, q);
        if (!(kv->key = dup_bytes(s, len)))
            return nomem(r);
        snprintf(r->what, sizeof r->what, "the value of key '%s'", q);
        if ((e = rd_u32(r, &kv->type)))
            return e;
        if (kv->type >= GGUF_N_VTYPES)
            return fail(r, SHOAL_ERR_FORMAT, "key '%s' has unknown value type %u", q, kv->type);
        if ((e = read_value(r, kv)))
            return e;
        g->kv_sorted[i].name = kv->key;
        g->kv_sorted[i].ix = (int64_t)i;
    }
    if (n_kv > 1)
        qsort(g->kv_sorted, (size_t)n_kv, sizeof *g->kv_sorted, cmp_name_ix);
    for (uint64_t i = 1; i < n_kv; i++)
        if (strcmp(g->kv_sorted[i - 1].name, g->kv_sorted[i].name) == 0) {
            char q[80];
            quote(q, sizeof q, g->kv_sorted[i].name, strlen(g->kv_sorted[i].name));
            return fail(r, SHOAL_ERR_FORMAT, "metadata key '%s' appears twice", q);
        }

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = name_lookup(g->kv_sorted, g->n_kv, "general.alignment");
    if (ai >= 0) {
        const gguf_kv *kv = &g->kv[ai];
        uint64_t a = 0;
        if (vtype_is_int(kv->type))
            a = vtype_is_signed(kv->type) ? (kv->v.i > 0 ? (uint64_t)kv->v.i : 0) : kv->v.u;
        if (a == 0 || (a & (a - 1)) != 0 || a > GGUF_MAX_ALIGNMENT)
            return fail(r, SHOAL_ERR_FORMAT,
                        "general.alignment must be a power of two in 1..%u", GGUF_MAX_ALIGNMENT);
        g->alignment = a;
    }

    uint64_t cap_t = 0, cap_tn = 0, cap_ts = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (!grow(&g->tensors, &cap_t, i + 1, sizeof *g->tensors) ||
            !grow(&g->tensor_names, &cap_tn, i + 1, sizeof *g->tensor_names) ||
            !grow(&g->tensor_sorted, &cap_ts, i + 1, sizeof *g->tensor_sorted))
            return nomem(r);
        g->n_tensors = (int64_t)i + 1;
        if ((e = read_tensor_info(r, g, (int64_t)i)))
            return e;
        g->tensor_sorted[i].name = g->tensor_names[i];
        g->tensor_sorted[i].ix = (int64_t)i;
    }
    if (n_tensors > 1)
        qsort(g->tensor_sorted, (size_t)n_tensors, sizeof *g->tensor_sorted, cmp_name_ix);
    for (uint64_t i = 1; i < n_tensors; i++)
        if (strcmp(g->tensor_sorted[i - 1].name, g->tensor_sorted[i].name) == 0) {
            char q[80];
            quote(q, sizeof q, g->tensor_sorted[i].name, strlen(g->tensor_sorted[i].name));
            return fail(r, SHOAL_ERR_FORMAT, "tensor name '%s' appears twice", q);
        }

    /* The data section starts at the next multiple of the alignment. */
    uint64_t pad = (g->alignment - r->off % g->alignment) % g->alignment;
    g->data_offset = r->off + pad;  /* r->off <= size < 2^64 - 2^16: no overflow */
    uint64_t data_size = g->data_offset <= r->size ? r->size - g->data_offset : 0;
    if (n_tensors > 0 && g->data_offset > r->size)
        return fail(r, SHOAL_ERR_FORMAT, "data section starts at byte %llu, past end of file (%llu)",
                    (unsigned long long)g->data_offset, (unsigned long long)r->size);

    span_ix *spans = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *spans);
    if (!spans)
        return nomem(r);
    for (uint64_t i = 0; i < n_tensors; i++) {
        const shoal_gguf_tensor *t = &g->tensors[i];
        char q[80];
        quote(q, sizeof q, t->name, strlen(t->name));
        if (t->offset % g->alignment != 0) {
            free(spans);
            return fail(r, SHOAL_ERR_FORMAT, "tensor '%s' has offset %llu, not a multiple of the alignment %llu",
                        q, (unsigned long long)t->offset, (unsigned long long)g->alignment);
        }
        if (t->offset > data_size || t->size > data_size - t->offset) {
            free(spans);
            return fail(r, SHOAL_ERR_FORMAT, "tensor '%s' extends past end of file (offset %llu + %llu > %llu)",
                        q, (unsigned long long)(g->data_offset + t->offset),
                        (unsigned long long)t->size, (unsigned long long)r->size);
        }
        spans[i] = (span_ix){t->offset, t->size, (int64_t)i};
    }
    if (n_tensors > 1)
        qsort(spans, (size_t)n_tensors, sizeof *spans, cmp_span);
    for (uint64_t i = 1; i < n_tensors; i++)
        if (spans[i - 1].off + spans[i - 1].size > spans[i].off) {
            char a[80], b[80];
            const char *na = g->tensors[spans[i - 1].ix].name, *nb = g->tensors[spans[i].ix].name;
            quote(a, sizeof a, na, strlen(na));
            quote(b, sizeof b, nb, strlen(nb));
            free(spans);
            return fail(r, SHOAL_ERR_FORMAT, "tensors '%s' and '%s' overlap", a, b);
        }
    free(spans);
    return 0;
}

int shoal_gguf_open_memory(const void *data, size_t size, const char *name,
                           shoal_gguf **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return SHOAL_ERR_ARG;
    *out = NULL;
    rd r = {.p = data, .size = size, .name = name ? name : "gguf", .err = err, .errlen = errlen};
    if (!data && size)
        return fail(&r, SHOAL_ERR_ARG, "no data");
    shoal_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return fail(&r, SHOAL_ERR_NOMEM, "out of memory");
    g->base = data;
    g->size = size;
    int e = parse(g, &r);
    if (e) {
        gguf_free(g);
        return e;
    }
    *out = g;
    return 0;
}

int shoal_gguf_open(const char *path, shoal_gguf **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return SHOAL_ERR_ARG;
    *out = NULL;
    rd r = {.name = path ? path : "(null)", .err = err, .errlen = errlen};
    if (!path)
        return fail(&r, SHOAL_ERR_ARG, "no path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(&r, errno == ENOENT ? SHOAL_ERR_NOTFOUND : SHOAL_ERR_IO, "cannot open: %s",
                    strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int en = errno;
        close(fd);
        return fail(&r, SHOAL_ERR_IO, "cannot stat: %s", strerror(en));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(&r, SHOAL_ERR_IO, "not a regular file");
    }
    if (st.st_size < 4) {
        close(fd);
        return fail(&r, SHOAL_ERR_FORMAT, "not a GGUF file (only %lld bytes)", (long long)st.st_size);
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return fail(&r, SHOAL_ERR_IO, "file too large to map");
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int en = errno;
    close(fd);
    if (m == MAP_FAILED)
        return fail(&r, SHOAL_ERR_IO, "cannot map: %s", strerror(en));
    shoal_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(m, (size_t)st.st_size);
        return fail(&r, SHOAL_ERR_NOMEM, "out of memory");
    }
    g->base = m;
    g->size = (uint64_t)st.st_size;
    g->mapped = true;
    r.p = m;
    r.size = g->size;
    long pg = sysconf(_SC_PAGESIZE);
    r.page = pg > 0 ? (uint64_t)pg : 4096;
    r.advise = madvise(m, (size_t)g->size, MADV_RANDOM) == 0;
    int e = parse(g, &r);
    if (r.advise)
        madvise(m, (size_t)g->size, MADV_NORMAL);
    if (e) {
        gguf_free(g);
        return e;
    }
    *out = g;
    return 0;
}

void shoal_gguf_close(shoal_gguf **g)
{
    if (!g)
        return;
    gguf_free(*g);
    *g = NULL;
}

uint32_t shoal_gguf_version(const shoal_gguf *g) { return g->version; }
uint64_t shoal_gguf_alignment(const shoal_gguf *g) { return g->alignment; }
uint64_t shoal_gguf_data_offset(const shoal_gguf *g) { return g->data_offset; }
uint64_t shoal_gguf_file_size(const shoal_gguf *g) { return g->size; }
int64_t shoal_gguf_n_kv(const shoal_gguf *g) { return g->n_kv; }
int64_t shoal_gguf_n_tensors(const shoal_gguf *g) { return g->n_tensors; }

int64_t shoal_gguf_find_key(const shoal_gguf *g, const char *key)
{
    return name_lookup(g->kv_sorted, g->n_kv, key);
}

static const gguf_kv *kv_at(const shoal_gguf *g, int64_t i)
{
    return (i >= 0 && i < g->n_kv) ? &g->kv[i] : NULL;
}

const char *shoal_gguf_key(const shoal_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv ? kv->key : NULL;
}

int shoal_gguf_kv_type(const shoal_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv ? (int)kv->type : -1;
}

int shoal_gguf_arr_type(const shoal_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv && kv->type == SHOAL_GGUF_ARRAY ? (int)kv->arr_type : -1;
}

uint64_t shoal_gguf_arr_len(const shoal_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv && kv->type == SHOAL_GGUF_ARRAY ? kv->arr_len : 0;
}

const void *shoal_gguf_arr_data(const shoal_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv && kv->type == SHOAL_GGUF_ARRAY ? kv->arr_data : NULL;
}

const shoal_gguf_str *shoal_gguf_arr_str(const shoal_gguf *g, int64_t i, uint64_t j)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv || kv->type != SHOAL_GGUF_ARRAY || kv->arr_type != SHOAL_GGUF_STRING ||
        j >= kv->arr_len)
        return NULL;
    return &kv->arr_strs[j];
}

const shoal_gguf_str *shoal_gguf_get_str_at(const shoal_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv && kv->type == SHOAL_GGUF_STRING ? &kv->str : NULL;
}

int shoal_gguf_get_i64_at(const shoal_gguf *g, int64_t i, int64_t *v)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv)
        return SHOAL_ERR_NOTFOUND;
    if (kv->type == SHOAL_GGUF_BOOL) {
        *v = (int64_t)kv->v.u;
        return 0;
    }
    if (!vtype_is_int(kv->type))
        return SHOAL_ERR_FORMAT;
    if (vtype_is_signed(kv->type)) {
        *v = kv->v.i;
        return 0;
    }
    if (kv->v.u > (uint64_t)INT64_MAX)
        return SHOAL_ERR_RANGE;
    *v = (int64_t)kv->v.u;
    return 0;
}

int shoal_gguf_get_f64_at(const shoal_gguf *g, int64_t i, double *v)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv)
        return SHOAL_ERR_NOTFOUND;
    if (kv->type != SHOAL_GGUF_F32 && kv->type != SHOAL_GGUF_F64)
        return SHOAL_ERR_FORMAT;
    *v = kv->v.f;
    return 0;
}

/* An integer kv as (negative?, magnitude); FORMAT if not an integer. */
static int get_int(const shoal_gguf *g, const char *key, bool *neg, uint64_t *mag, int64_t *sv)
{
    const gguf_kv *kv = kv_at(g, shoal_gguf_find_key(g, key));
    if (!kv)
        return SHOAL_ERR_NOTFOUND;
    if (!vtype_is_int(kv->type))
        return SHOAL_ERR_FORMAT;
    if (vtype_is_signed(kv->type)) {
        *neg = kv->v.i < 0;
        *mag = *neg ? 0 : (uint64_t)kv->v.i;
        *sv = kv->v.i;
    } else {
        *neg = false;
        *mag = kv->v.u;
        *sv = kv->v.u > (uint64_t)INT64_MAX ? -1 : (int64_t)kv->v.u;
    }
    return 0;
}

int shoal_gguf_get_u32(const shoal_gguf *g, const char *key, uint32_t *v)
{
    bool neg;
    uint64_t m;
    int64_t s;
    int e = get_int(g, key, &neg, &m, &s);
    if (e)
        return e;
    if (neg || m > UINT32_MAX)
        return SHOAL_ERR_FORMAT;
    *v = (uint32_t)m;
    return 0;
}

int shoal_gguf_get_u64(const shoal_gguf *g, const char *key, uint64_t *v)
{
    bool neg;
    uint64_t m;
    int64_t s;
    int e = get_int(g, key, &neg, &m, &s);
    if (e)
        return e;
    if (neg)
        return SHOAL_ERR_FORMAT;
    *v = m;
    return 0;
}

int shoal_gguf_get_i64(const shoal_gguf *g, const char *key, int64_t *v)
{
    bool neg;
    uint64_t m;
    int64_t s;
    int e = get_int(g, key, &neg, &m, &s);
    if (e)
        return e;
    if (!neg && m > (uint64_t)INT64_MAX)
        return SHOAL_ERR_FORMAT;
    *v = s;
    return 0;
}

int shoal_gguf_get_f64(const shoal_gguf *g, const char *key, double *v)
{
    const gguf_kv *kv = kv_at(g, shoal_gguf_find_key(g, key));
    if (!kv)
        return SHOAL_ERR_NOTFOUND;
    if (kv->type != SHOAL_GGUF_F32 && kv->type != SHOAL_GGUF_F64)
        return SHOAL_ERR_FORMAT;
    *v = kv->v.f;
    return 0;
}

int shoal_gguf_get_f32(const shoal_gguf *g, const char *key, float *v)
{
    double d;
    int e = shoal_gguf_get_f64(g, key, &d);
    if (e)
        return e;
    if (isfinite(d) && fabs(d) > FLT_MAX)
        return SHOAL_ERR_FORMAT;
    *v = (float)d;
    return 0;
}

int shoal_gguf_get_bool(const shoal_gguf *g, const char *key, bool *v)
{
    const gguf_kv *kv = kv_at(g, shoal_gguf_find_key(g, key));
    if (!kv)
        return SHOAL_ERR_NOTFOUND;
    if (kv->type != SHOAL_GGUF_BOOL)
        return SHOAL_ERR_FORMAT;
    *v = kv->v.u != 0;
    return 0;
}

int shoal_gguf_get_str(const shoal_gguf *g, const char *key, const char **v)
{
    const gguf_kv *kv = kv_at(g, shoal_gguf_find_key(g, key));
    if (!kv)
        return SHOAL_ERR_NOTFOUND;
    if (kv->type != SHOAL_GGUF_STRING)
        return SHOAL_ERR_FORMAT;
    *v = kv->str.s;
    return 0;
}

int64_t shoal_gguf_find_tensor(const shoal_gguf *g, const char *name)
{
    return name_lookup(g->tensor_sorted, g->n_tensors, name);
}

const shoal_gguf_tensor *shoal_gguf_tensor_at(const shoal_gguf *g, int64_t i)
{
    return (i >= 0 && i < g->n_tensors) ? &g->tensors[i] : NULL;
}

const void *shoal_gguf_tensor_data(const shoal_gguf *g, int64_t i)
{
    if (i < 0 || i >= g->n_tensors)
        return NULL;
    return g->base + g->data_offset + g->tensors[i].offset;
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

typedef struct wkv {
    char *key;
    uint32_t type;
    uint8_t scalar[8];     /* little-endian encoding */
    char *str;             /* STRING */
    uint64_t str_len;
    uint32_t arr_type;     /* ARRAY */
    uint64_t arr_len;
    uint8_t *arr_data;     /* numeric: little-endian encoding */
    char **arr_strs;
} wkv;

typedef struct wtensor {
    char *name;
    int type;
    int n_dims;
    int64_t ne[SHOAL_GGUF_MAX_DIMS];
    uint64_t size;
    uint64_t offset;
    void *data;            /* NULL: streamed by put_tensor */
} wtensor;

struct shoal_gguf_writer {
    wkv *kv;
    int64_t n_kv, cap_kv;
    wtensor *t;
    int64_t n_t, cap_t;
    uint32_t alignment;
    bool alignment_set;
    /* streaming state */
    int fd;                /* -1 unless between begin and finish */
    char *path, *tmp_path;
    int64_t next;          /* next tensor to write */
    uint64_t partial;      /* bytes of tensor `next` already written */
    uint64_t pos;          /* bytes written into the data section */
    uint64_t data_offset;
};

shoal_gguf_writer *shoal_gguf_writer_new(void)
{
    shoal_gguf_writer *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    w->fd = -1;
    return w;
}

static void wkv_free(wkv *kv)
{
    free(kv->key);
    free(kv->str);
    free(kv->arr_data);
    for (uint64_t j = 0; kv->arr_strs && j < kv->arr_len; j++)
        free(kv->arr_strs[j]);
    free(kv->arr_strs);
    memset(kv, 0, sizeof *kv);
}

static void writer_abort_file(shoal_gguf_writer *w)
{
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
        if (w->tmp_path)
            unlink(w->tmp_path);
    }
    free(w->path);
    free(w->tmp_path);
    w->path = w->tmp_path = NULL;
}

void shoal_gguf_writer_destroy(shoal_gguf_writer **pw)
{
    if (!pw || !*pw)
        return;
    shoal_gguf_writer *w = *pw;
    writer_abort_file(w);
    for (int64_t i = 0; i < w->n_kv; i++)
        wkv_free(&w->kv[i]);
    free(w->kv);
    for (int64_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w);
    *pw = NULL;
}

static bool writer_open(const shoal_gguf_writer *w) { return w->fd >= 0 || w->path; }

/* The kv slot for key: an existing one (cleared) or a new one. */
static wkv *writer_slot(shoal_gguf_writer *w, const char *key)
{
    if (!w || !key || writer_open(w) || !name_ok(key, strlen(key)) ||
        strlen(key) > GGUF_MAX_KEY_LEN)
        return NULL;
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            char *k = w->kv[i].key;
            w->kv[i].key = NULL;
            wkv_free(&w->kv[i]);
            w->kv[i].key = k;
            return &w->kv[i];
        }
    if (w->n_kv == w->cap_kv) {
        int64_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *n = realloc(w->kv, (size_t)cap * sizeof *n);
        if (!n)
            return NULL;
        w->kv = n;
        w->cap_kv = cap;
    }
    wkv *kv = &w->kv[w->n_kv];
    memset(kv, 0, sizeof *kv);
    if (!(kv->key = strdup(key)))
        return NULL;
    w->n_kv++;
    return kv;
}

/* Removes a slot that could not be filled (the last one, or a replaced one). */
static void writer_drop(shoal_gguf_writer *w, wkv *kv)
{
    int64_t i = kv - w->kv;
    wkv_free(kv);
    memmove(&w->kv[i], &w->kv[i + 1], (size_t)(w->n_kv - i - 1) * sizeof *kv);
    w->n_kv--;
}

static void put_le(uint8_t *b, uint64_t x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(x >> (8 * i));
}

/* Host value of a scalar vtype -> little-endian bytes. */
static int encode_scalar(uint32_t t, const void *v, uint8_t *out)
{
    uint64_t x;
    switch (t) {
    case SHOAL_GGUF_U8: x = *(const uint8_t *)v; break;
    case SHOAL_GGUF_I8: x = (uint8_t)*(const int8_t *)v; break;
    case SHOAL_GGUF_U16: x = *(const uint16_t *)v; break;
    case SHOAL_GGUF_I16: x = (uint16_t)*(const int16_t *)v; break;
    case SHOAL_GGUF_U32: x = *(const uint32_t *)v; break;
    case SHOAL_GGUF_I32: x = (uint32_t)*(const int32_t *)v; break;
    case SHOAL_GGUF_U64: x = *(const uint64_t *)v; break;
    case SHOAL_GGUF_I64: x = (uint64_t)*(const int64_t *)v; break;
    case SHOAL_GGUF_BOOL: x = *(const bool *)v ? 1 : 0; break;
    case SHOAL_GGUF_F32: { uint32_t u; memcpy(&u, v, 4); x = u; break; }
    case SHOAL_GGUF_F64: memcpy(&x, v, 8); break;
    default: return SHOAL_ERR_ARG;
    }
    put_le(out, x, vtype_size(t));
    return 0;
}

int shoal_gguf_writer_set_scalar(shoal_gguf_writer *w, const char *key, int vtype,
                                 const void *v)
{
    if (!v || vtype < 0 || vtype >= GGUF_N_VTYPES || vtype == SHOAL_GGUF_STRING ||
        vtype == SHOAL_GGUF_ARRAY)
        return SHOAL_ERR_ARG;
    wkv *kv = writer_slot(w, key);
    if (!kv)
        return w && key && !writer_open(w) && name_ok(key, strlen(key)) ? SHOAL_ERR_NOMEM
                                                                        : SHOAL_ERR_ARG;
    kv->type = (uint32_t)vtype;
    return encode_scalar((uint32_t)vtype, v, kv->scalar);
}

int shoal_gguf_writer_set_u32(shoal_gguf_writer *w, const char *key, uint32_t v)
{
    return shoal_gguf_writer_set_scalar(w, key, SHOAL_GGUF_U32, &v);
}

int shoal_gguf_writer_set_i32(shoal_gguf_writer *w, const char *key, int32_t v)
{
    return shoal_gguf_writer_set_scalar(w, key, SHOAL_GGUF_I32, &v);
}

int shoal_gguf_writer_set_u64(shoal_gguf_writer *w, const char *key, uint64_t v)
{
    return shoal_gguf_writer_set_scalar(w, key, SHOAL_GGUF_U64, &v);
}

int shoal_gguf_writer_set_f32(shoal_gguf_writer *w, const char *key, float v)
{
    return shoal_gguf_writer_set_scalar(w, key, SHOAL_GGUF_F32, &v);
}

int shoal_gguf_writer_set_bool(shoal_gguf_writer *w, const char *key, bool v)
{
    return shoal_gguf_writer_set_scalar(w, key, SHOAL_GGUF_BOOL, &v);
}

static int slot_err(const shoal_gguf_writer *w, const char *key)
{
    return w && key && !writer_open(w) && name_ok(key, strlen(key)) ? SHOAL_ERR_NOMEM
                                                                    : SHOAL_ERR_ARG;
}

int shoal_gguf_writer_set_str(shoal_gguf_writer *w, const char *key, const char *v)
{
    if (!v || strlen(v) > GGUF_MAX_STR_LEN)
        return SHOAL_ERR_ARG;
    wkv *kv = writer_slot(w, key);
    if (!kv)
        return slot_err(w, key);
    kv->type = SHOAL_GGUF_STRING;
    kv->str_len = strlen(v);
    if (!(kv->str = strdup(v))) {
        writer_drop(w, kv);
        return SHOAL_ERR_NOMEM;
    }
    return 0;
}

int shoal_gguf_writer_set_arr(shoal_gguf_writer *w, const char *key, int vtype,
                              const void *data, uint64_t n)
{
    if (vtype < 0 || vtype >= GGUF_N_VTYPES || vtype == SHOAL_GGUF_STRING ||
        vtype == SHOAL_GGUF_ARRAY || (!data && n) || n > ((uint64_t)1 << 40))
        return SHOAL_ERR_ARG;
    size_t es = vtype_size((uint32_t)vtype);
    size_t hs = vtype == SHOAL_GGUF_BOOL ? sizeof(bool) : es;  /* host size */
    if (vtype == SHOAL_GGUF_BOOL)
        for (uint64_t j = 0; j < n; j++) {
            uint8_t b;
            memcpy(&b, (const uint8_t *)data + j, 1);
            if (b > 1)
                return SHOAL_ERR_ARG;
        }
    wkv *kv = writer_slot(w, key);
    if (!kv)
        return slot_err(w, key);
    kv->type = SHOAL_GGUF_ARRAY;
    kv->arr_type = (uint32_t)vtype;
    kv->arr_len = n;
    kv->arr_data = malloc(n ? (size_t)n * es : 1);
    if (!kv->arr_data) {
        writer_drop(w, kv);
        return SHOAL_ERR_NOMEM;
    }
    for (uint64_t j = 0; j < n; j++)
        encode_scalar((uint32_t)vtype, (const uint8_t *)data + j * hs, kv->arr_data + j * es);
    return 0;
}

int shoal_gguf_writer_set_arr_str(shoal_gguf_writer *w, const char *key,
                                  const char *const *strs, uint64_t n)
{
    if ((!strs && n) || n > ((uint64_t)1 << 32))
        return SHOAL_ERR_ARG;
    for (uint64_t j = 0; j < n; j++)
        if (!strs[j] || strlen(strs[j]) > GGUF_MAX_STR_LEN)
            return SHOAL_ERR_ARG;
    wkv *kv = writer_slot(w, key);
    if (!kv)
        return slot_err(w, key);
    kv->type = SHOAL_GGUF_ARRAY;
    kv->arr_type = SHOAL_GGUF_STRING;
    kv->arr_strs = calloc(n ? (size_t)n : 1, sizeof *kv->arr_strs);
    if (!kv->arr_strs) {
        writer_drop(w, kv);
        return SHOAL_ERR_NOMEM;
    }
    for (uint64_t j = 0; j < n; j++) {
        kv->arr_len = j;
        if (!(kv->arr_strs[j] = strdup(strs[j]))) {
            writer_drop(w, kv);
            return SHOAL_ERR_NOMEM;
        }
    }
    kv->arr_len = n;
    return 0;
}

int shoal_gguf_writer_set_alignment(shoal_gguf_writer *w, uint32_t alignment)
{
    if (!w || writer_open(w) || alignment == 0 || (alignment & (alignment - 1)) ||
        alignment > GGUF_MAX_ALIGNMENT)
        return SHOAL_ERR_ARG;
    w->alignment = alignment;
    w->alignment_set = alignment != GGUF_DEFAULT_ALIGNMENT;
    return 0;
}

static int writer_tensor(shoal_gguf_writer *w, const char *name, int type, int n_dims,
                         const int64_t *ne, const void *data)
{
    if (!w || !name || !ne || writer_open(w) || !name_ok(name, strlen(name)) ||
        strlen(name) > GGUF_MAX_NAME_LEN || n_dims < 1 || n_dims > SHOAL_GGUF_MAX_DIMS)
        return SHOAL_ERR_ARG;
    const shoal_type_traits *tr = shoal_type_info(type);
    if (!tr)
        return SHOAL_ERR_UNSUPPORTED;
    uint64_t nel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || nel > (uint64_t)INT64_MAX / (uint64_t)ne[d])
            return SHOAL_ERR_ARG;
        nel *= (uint64_t)ne[d];
    }
    if (ne[0] % tr->block_elems != 0)
        return SHOAL_ERR_ARG;
    uint64_t blocks = nel / (uint64_t)tr->block_elems;
    if (blocks > (uint64_t)SIZE_MAX / tr->block_bytes)
        return SHOAL_ERR_ARG;
    for (int64_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return SHOAL_ERR_ARG;
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *n = realloc(w->t, (size_t)cap * sizeof *n);
        if (!n)
            return SHOAL_ERR_NOMEM;
        w->t = n;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < SHOAL_GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->size = blocks * tr->block_bytes;
    if (!(t->name = strdup(name)))
        return SHOAL_ERR_NOMEM;
    if (data) {
        if (!(t->data = malloc((size_t)t->size ? (size_t)t->size : 1))) {
            free(t->name);
            return SHOAL_ERR_NOMEM;
        }
        memcpy(t->data, data, (size_t)t->size);
    }
    w->n_t++;
    return 0;
}

int shoal_gguf_writer_add_tensor(shoal_gguf_writer *w, const char *name, int type,
                                 int n_dims, const int64_t *ne, const void *data)
{
    if (!data)
        return SHOAL_ERR_ARG;
    return writer_tensor(w, name, type, n_dims, ne, data);
}

int shoal_gguf_writer_declare_tensor(shoal_gguf_writer *w, const char *name, int type,
                                     int n_dims, const int64_t *ne)
{
    return writer_tensor(w, name, type, n_dims, ne, NULL);
}

/* A growable byte buffer for the header. */
typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} wbuf;

static void wb_put(wbuf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (n > cap - b->len) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void wb_u32(wbuf *b, uint32_t x)
{
    uint8_t t[4];
    put_le(t, x, 4);
    wb_put(b, t, 4);
}

static void wb_u64(wbuf *b, uint64_t x)
{
    uint8_t t[8];
    put_le(t, x, 8);
    wb_put(b, t, 8);
}

static void wb_str(wbuf *b, const char *s, uint64_t len)
{
    wb_u64(b, len);
    wb_put(b, s, (size_t)len);
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *c = p;
    while (n > 0) {
        ssize_t k = write(fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

static int write_zeros(int fd, uint64_t n)
{
    static const uint8_t zeros[4096];
    while (n > 0) {
        size_t k = n > sizeof zeros ? sizeof zeros : (size_t)n;
        if (write_all(fd, zeros, k) != 0)
            return -1;
        n -= k;
    }
    return 0;
}

static int werr(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int werr(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

int shoal_gguf_writer_begin(shoal_gguf_writer *w, const char *path, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!w || !path || !*path)
        return werr(err, errlen, SHOAL_ERR_ARG, "gguf writer: no path");
    if (writer_open(w))
        return werr(err, errlen, SHOAL_ERR_ARG, "%s: writer already started", path);

    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, "general.alignment") == 0 &&
            (w->kv[i].type != SHOAL_GGUF_U32 || le_u(w->kv[i].scalar, 4) != w->alignment))
            return werr(err, errlen, SHOAL_ERR_ARG,
                        "%s: general.alignment set as metadata differs from the writer's "
                        "alignment (use shoal_gguf_writer_set_alignment)", path);
    if (w->alignment_set &&
        shoal_gguf_writer_set_u32(w, "general.alignment", w->alignment) != 0)
        return werr(err, errlen, SHOAL_ERR_NOMEM, "%s: out of memory", path);

    wbuf b = {0};
    wb_put(&b, GGUF_MAGIC, 4);
    wb_u32(&b, 3);
    wb_u64(&b, (uint64_t)w->n_t);
    wb_u64(&b, (uint64_t)w->n_kv);
    for (int64_t i = 0; i < w->n_kv; i++) {
        const wkv *kv = &w->kv[i];
        wb_str(&b, kv->key, strlen(kv->key));
        wb_u32(&b, kv->type);
        if (kv->type == SHOAL_GGUF_STRING) {
            wb_str(&b, kv->str, kv->str_len);
        } else if (kv->type == SHOAL_GGUF_ARRAY) {
            wb_u32(&b, kv->arr_type);
            wb_u64(&b, kv->arr_len);
            if (kv->arr_type == SHOAL_GGUF_STRING)
                for (uint64_t j = 0; j < kv->arr_len; j++)
                    wb_str(&b, kv->arr_strs[j], strlen(kv->arr_strs[j]));
            else
                wb_put(&b, kv->arr_data, (size_t)kv->arr_len * vtype_size(kv->arr_type));
        } else {
            wb_put(&b, kv->scalar, vtype_size(kv->type));
        }
    }
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        wb_str(&b, t->name, strlen(t->name));
        wb_u32(&b, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            wb_u64(&b, (uint64_t)t->ne[d]);
        wb_u32(&b, (uint32_t)t->type);
        off = (off + w->alignment - 1) / w->alignment * w->alignment;
        t->offset = off;
        wb_u64(&b, off);
        off += t->size;
    }
    size_t pad = (w->alignment - b.len % w->alignment) % w->alignment;
    for (size_t k = 0; k < pad; k++)
        wb_put(&b, "", 1);
    if (b.oom) {
        free(b.p);
        return werr(err, errlen, SHOAL_ERR_NOMEM, "%s: out of memory building the header", path);
    }
    w->data_offset = b.len;

    size_t pl = strlen(path);
    w->path = strdup(path);
    w->tmp_path = malloc(pl + 16);
    if (!w->path || !w->tmp_path) {
        free(b.p);
        writer_abort_file(w);
        return werr(err, errlen, SHOAL_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(w->tmp_path, path, pl);
    memcpy(w->tmp_path + pl, ".tmp.XXXXXX", 12);
    w->fd = mkostemp(w->tmp_path, O_CLOEXEC);
    if (w->fd < 0) {
        int en = errno;
        free(b.p);
        writer_abort_file(w);
        return werr(err, errlen, SHOAL_ERR_IO, "%s: cannot create temporary file: %s", path,
                    strerror(en));
    }
    fchmod(w->fd, 0644);
    int rc = write_all(w->fd, b.p, b.len);
    int en = errno;
    free(b.p);
    if (rc != 0) {
        writer_abort_file(w);
        return werr(err, errlen, SHOAL_ERR_IO, "%s: write failed: %s", path, strerror(en));
    }
    w->next = 0;
    w->pos = 0;
    w->partial = 0;
    return 0;
}

int64_t shoal_gguf_writer_next_tensor(const shoal_gguf_writer *w)
{
    if (!w || w->fd < 0)
        return -1;
    int64_t i = w->next;
    while (w->partial == 0 && i < w->n_t && w->t[i].data)
        i++;
    return i < w->n_t ? i : -1;
}

uint64_t shoal_gguf_writer_tensor_bytes(const shoal_gguf_writer *w, int64_t i)
{
    return (w && i >= 0 && i < w->n_t) ? w->t[i].size : 0;
}

/* Writes the next n bytes of tensor w->next (with the padding before it
 * when it starts); moves to the next tensor when it is complete. */
static int write_piece(shoal_gguf_writer *w, const void *data, uint64_t n, char *err,
                       size_t errlen)
{
    wtensor *t = &w->t[w->next];
    if ((w->partial == 0 && write_zeros(w->fd, t->offset - w->pos) != 0) ||
        write_all(w->fd, data, (size_t)n) != 0) {
        int en = errno;
        char *p = w->path;
        w->path = NULL;
        writer_abort_file(w);
        werr(err, errlen, SHOAL_ERR_IO, "%s: write failed: %s", p, strerror(en));
        free(p);
        return SHOAL_ERR_IO;
    }
    w->partial += n;
    w->pos = t->offset + w->partial;
    if (w->partial == t->size) {
        w->partial = 0;
        w->next++;
    }
    return 0;
}

static int write_next(shoal_gguf_writer *w, const void *data, char *err, size_t errlen)
{
    return write_piece(w, data, w->t[w->next].size, err, errlen);
}

static int write_stored(shoal_gguf_writer *w, char *err, size_t errlen)
{
    while (w->partial == 0 && w->next < w->n_t && w->t[w->next].data) {
        int e = write_next(w, w->t[w->next].data, err, errlen);
        if (e)
            return e;
    }
    return 0;
}

int shoal_gguf_writer_put_tensor(shoal_gguf_writer *w, const void *data, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!w || w->fd < 0)
        return werr(err, errlen, SHOAL_ERR_ARG, "gguf writer: not started");
    if (!data)
        return werr(err, errlen, SHOAL_ERR_ARG, "%s: no tensor data", w->path);
    int e = write_stored(w, err, errlen);
    if (e)
        return e;
    if (w->next >= w->n_t)
        return werr(err, errlen, SHOAL_ERR_ARG, "%s: all tensors already written", w->path);
    if (w->partial)
        return werr(err, errlen, SHOAL_ERR_ARG, "%s: tensor '%s' is partly written", w->path,
                    w->t[w->next].name);
    return write_next(w, data, err, errlen);
}

int shoal_gguf_writer_put_bytes(shoal_gguf_writer *w, const void *data, size_t n, char *err,
                                size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!w || w->fd < 0)
        return werr(err, errlen, SHOAL_ERR_ARG, "gguf writer: not started");
    if (!data && n)
        return werr(err, errlen, SHOAL_ERR_ARG, "%s: no tensor data", w->path);
    int e = write_stored(w, err, errlen);
    if (e)
        return e;
    if (w->next >= w->n_t)
        return werr(err, errlen, SHOAL_ERR_ARG, "%s: all tensors already written", w->path);
    const wtensor *t = &w->t[w->next];
    if (n > t->size - w->partial)
        return werr(err, errlen, SHOAL_ERR_ARG, "%s: %zu bytes pass the end of tensor '%s'",
                    w->path, n, t->name);
    if (n == 0)
        return 0;
    return write_piece(w, data, n, err, errlen);
}

int shoal_gguf_writer_finish(shoal_gguf_writer *w, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!w || w->fd < 0)
        return werr(err, errlen, SHOAL_ERR_ARG, "gguf writer: not started");
    int e = write_stored(w, err, errlen);
    if (e)
        return e;
    /* ggml pads the last tensor too, and its reader (when it loads the data
     * rather than mapping it) reads the padded size. */
    uint64_t tail = (w->alignment - w->pos % w->alignment) % w->alignment;
    if (w->next >= w->n_t && w->n_t > 0 && write_zeros(w->fd, tail) != 0) {
        werr(err, errlen, SHOAL_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
        writer_abort_file(w);
        return SHOAL_ERR_IO;
    }
    if (w->next < w->n_t) {
        werr(err, errlen, SHOAL_ERR_ARG, "%s: tensor '%s' has %s data", w->path,
             w->t[w->next].name, w->partial ? "only part of its" : "no");
        writer_abort_file(w);
        return SHOAL_ERR_ARG;
    }
    if (fsync(w->fd) != 0 || close(w->fd) != 0) {
        int en = errno;
        w->fd = -1;
        werr(err, errlen, SHOAL_ERR_IO, "%s: cannot sync: %s", w->path, strerror(en));
        unlink(w->tmp_path);
        writer_abort_file(w);
        return SHOAL_ERR_IO;
    }
    w->fd = -1;
    if (rename(w->tmp_path, w->path) != 0) {
        int en = errno;
        werr(err, errlen, SHOAL_ERR_IO, "%s: cannot rename temporary file: %s", w->path,
             strerror(en));
        unlink(w->tmp_path);
        writer_abort_file(w);
        return SHOAL_ERR_IO;
    }
    free(w->path);
    free(w->tmp_path);
    w->path = w->tmp_path = NULL;
    return 0;
}

int shoal_gguf_writer_write(shoal_gguf_writer *w, const char *path, char *err, size_t errlen)
{
    if (w)
        for (int64_t i = 0; i < w->n_t; i++)
            if (!w->t[i].data)
                return werr(err, errlen, SHOAL_ERR_ARG, "%s: tensor '%s' has no data",
                            path ? path : "gguf writer", w->t[i].name);
    int e = shoal_gguf_writer_begin(w, path, err, errlen);
    if (e)
        return e;
    return shoal_gguf_writer_finish(w, err, errlen);
}
