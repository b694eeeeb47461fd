/*
 * Header frames: encode with msgpack-c's packer into a fixed buffer, decode
 * with our own reader after our own structural check (see wire.h).
 *
 * Decoding runs three passes over at most 64 KiB:
 *   1. shoal_wire_msgpack_check() walks the whole frame with an explicit
 *      stack: every count and length is held against the bytes that remain
 *      (an element needs at least one byte), so nothing later can run past
 *      the end or loop on a huge declared count.
 *   2. a scan of the top-level map for "v" and "id", so that a frame from
 *      another version is reported as SHOAL_ERR_VERSION, and so that the
 *      request id is known for the error reply even when pass 3 fails.
 *   3. the full decode, key by key, with types, ranges and duplicates
 *      checked, then the per-op contract (header_check), which the encoder
 *      applies too: what encodes, decodes to an equal header.
 * The reader re-checks every bound although pass 1 already did: the cost
 * is small and it keeps each function safe on its own.
 */
#include "proto/wire.h"

#include <math.h>
#include <string.h>

#include <msgpack.h>

#include "kernels/err.h"
#include "proto/mpread.h"

/* ------------------------------------------------------------------ */
/* Structural check                                                    */

shoal_wire_limits shoal_wire_limits_default(void)
{
    shoal_wire_limits l = {
        .max_bytes = SHOAL_WIRE_HEADER_MAX,
        .max_depth = 8,
        .max_elems = 2048,
        .max_str = 4096,
        .max_bin = 4096,
    };
    return l;
}

#define CHECK_DEPTH_CAP 64 /* the stack below; limits may ask for less */

static uint64_t be_load(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

int shoal_wire_msgpack_check(const uint8_t *buf, size_t len,
                             const shoal_wire_limits *lim)
{
    shoal_wire_limits def = shoal_wire_limits_default();
    if (!lim)
        lim = &def;
    if (!buf || len == 0 || len > lim->max_bytes)
        return SHOAL_ERR_FORMAT;
    uint32_t max_depth = lim->max_depth < CHECK_DEPTH_CAP ? lim->max_depth : CHECK_DEPTH_CAP;
    uint64_t left[CHECK_DEPTH_CAP + 1]; /* items still to read per level */
    uint32_t depth = 0;
    uint64_t elems = 0;
    size_t off = 0;
    left[0] = 1;
    for (;;) {
        while (left[depth] == 0) {
            if (depth == 0)
                return off == len ? SHOAL_OK : SHOAL_ERR_FORMAT;
            depth--;
        }
        left[depth]--;
        if (off >= len)
            return SHOAL_ERR_FORMAT;
        uint8_t tag = buf[off++];
        uint64_t skip = 0;     /* payload bytes that follow the tag/length */
        uint64_t items = 0;    /* sub-elements of a container */
        int is_container = 0, is_str = 0, is_blob = 0, lenbytes = 0;

        if (tag <= 0x7f || tag >= 0xe0 || (tag >= 0xc0 && tag <= 0xc3 && tag != 0xc1)) {
            /* fixint, nil, false, true */
        } else if (tag >= 0x80 && tag <= 0x8f) {
            is_container = 1;
            items = 2u * (tag & 0x0fu);
        } else if (tag >= 0x90 && tag <= 0x9f) {
            is_container = 1;
            items = tag & 0x0fu;
        } else if (tag >= 0xa0 && tag <= 0xbf) {
            is_str = 1;
            skip = tag & 0x1fu;
        } else {
            switch (tag) {
            case 0xc4: is_blob = 1; lenbytes = 1; break;
            case 0xc5: is_blob = 1; lenbytes = 2; break;
            case 0xc6: is_blob = 1; lenbytes = 4; break;
            case 0xc7: is_blob = 2; lenbytes = 1; break; /* ext: + type byte */
            case 0xc8: is_blob = 2; lenbytes = 2; break;
            case 0xc9: is_blob = 2; lenbytes = 4; break;
            case 0xca: skip = 4; break;
            case 0xcb: skip = 8; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break; /* fixext: type byte + data */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xd9: is_str = 1; lenbytes = 1; break;
            case 0xda: is_str = 1; lenbytes = 2; break;
            case 0xdb: is_str = 1; lenbytes = 4; break;
            case 0xdc: is_container = 1; lenbytes = 2; break;
            case 0xdd: is_container = 1; lenbytes = 4; break;
            case 0xde: is_container = 2; lenbytes = 2; break;
            case 0xdf: is_container = 2; lenbytes = 4; break;
            default: return SHOAL_ERR_FORMAT; /* 0xc1: never used */
            }
        }
        if (lenbytes) {
            if ((size_t)lenbytes > len - off)
                return SHOAL_ERR_FORMAT;
            uint64_t n = be_load(buf + off, lenbytes);
            off += (size_t)lenbytes;
            if (is_container)
                items = is_container == 2 ? 2 * n : n;
            else
                skip = n + (is_blob == 2 ? 1 : 0);
        }
        if (is_str && skip > lim->max_str)
            return SHOAL_ERR_FORMAT;
        if (is_blob && skip - (is_blob == 2 ? 1 : 0) > lim->max_bin)
            return SHOAL_ERR_FORMAT;
        if (skip > len - off)
            return SHOAL_ERR_FORMAT;
        off += (size_t)skip;
        if (is_container) {
            /* every item takes at least one byte */
            if (items > len - off)
                return SHOAL_ERR_FORMAT;
            elems += items;
            if (elems > lim->max_elems)
                return SHOAL_ERR_FORMAT;
            if (depth + 1 > max_depth)
                return SHOAL_ERR_FORMAT;
            if (items > 0)
                left[++depth] = items;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Text                                                                */

/* A NUL-terminated text field of `size` bytes is well-formed. */
static int text_ok(const char *field, size_t size)
{
    size_t n = strnlen(field, size);
    return n < size && shoal_mpr_utf8_valid((const uint8_t *)field, n);
}

int shoal_wire_text_set(char *field, size_t field_size, const char *text)
{
    if (!field || field_size == 0)
        return SHOAL_ERR_ARG;
    size_t o = 0;
    int cut = 0;
    if (text) {
        const uint8_t *s = (const uint8_t *)text;
        size_t n = strlen(text);
        size_t i = 0;
        while (i < n) {
            size_t k = shoal_mpr_utf8_seq(s + i, n - i);
            size_t w = k ? k : 1;
            if (w > field_size - 1 - o) {
                cut = 1;
                break;
            }
            if (k)
                memcpy(field + o, s + i, k);
            else
                field[o] = '?';
            o += w;
            i += w;
        }
    }
    memset(field + o, 0, field_size - o);
    return cut ? SHOAL_ERR_RANGE : SHOAL_OK;
}

/* ------------------------------------------------------------------ */
/* Contract                                                            */

/* Fields each op needs, for requests and replies; tensors counted apart. */
typedef struct op_rule {
    uint16_t op;
    uint32_t req_has, rep_has;
    uint8_t req_tensors, rep_tensors;
} op_rule;

static const op_rule op_rules[] = {
    {SHOAL_OP_INFO, 0,
     SHOAL_WIRE_HAS_MODEL | SHOAL_WIRE_HAS_MODEL_HASH | SHOAL_WIRE_HAS_SPAN, 0, 0},
    {SHOAL_OP_ERROR, 0, SHOAL_WIRE_HAS_ERROR, 0, 0},
    {SHOAL_OP_FORWARD, SHOAL_WIRE_HAS_SPAN, 0, 1, 1},
    {SHOAL_OP_SESSION_OPEN,
     SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_SPAN | SHOAL_WIRE_HAS_MAX_LENGTH, 0, 0, 0},
    {SHOAL_OP_SESSION_STEP,
     SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION,
     SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP, 1, 1},
    {SHOAL_OP_SESSION_CLOSE, SHOAL_WIRE_HAS_SESSION, 0, 0, 0},
    {SHOAL_OP_SESSION_PUSH,
     SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION |
         SHOAL_WIRE_HAS_PUSH_TOKEN, 0, 1, 0},
    {SHOAL_OP_FIND_NODE, SHOAL_WIRE_HAS_TARGET, 0, 0, 0},
    {SHOAL_OP_FIND_VALUE, SHOAL_WIRE_HAS_TARGET, 0, 0, 0},
    {SHOAL_OP_STORE, SHOAL_WIRE_HAS_TARGET | SHOAL_WIRE_HAS_VALUES, 0, 0, 0},
    {SHOAL_OP_TRAIN_OPEN,
     SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_SPAN | SHOAL_WIRE_HAS_MAX_LENGTH |
         SHOAL_WIRE_HAS_LORA | SHOAL_WIRE_HAS_OPT, 0, 0, 0},
    {SHOAL_OP_TRAIN_FORWARD, SHOAL_WIRE_HAS_SESSION, 0, 1, 1},
    {SHOAL_OP_TRAIN_BACKWARD, SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP, 0, 1, 1},
    {SHOAL_OP_TRAIN_STEP, SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP, 0, 0, 0},
    {SHOAL_OP_TRAIN_PULL,
     SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_POSITION | SHOAL_WIRE_HAS_MAX_LENGTH,
     SHOAL_WIRE_HAS_STEP, 0, 1},
    {SHOAL_OP_TRAIN_PUSH,
     SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION, 0, 1, 0},
    {SHOAL_OP_TRAIN_CLOSE, SHOAL_WIRE_HAS_SESSION, 0, 0, 0},
};

/* 0, SHOAL_ERR_FORMAT or SHOAL_ERR_UNSUPPORTED (unknown codec). Does not
 * look at the version. */
static int header_check(const shoal_wire_header *h)
{
    if (h->op == 0 || (h->has & ~(uint32_t)SHOAL_WIRE_HAS__ALL))
        return SHOAL_ERR_FORMAT;
    int reply = (h->flags & SHOAL_WIRE_FLAG_REPLY) != 0;
    if (!reply && (h->request_id == 0 || h->op == SHOAL_OP_ERROR))
        return SHOAL_ERR_FORMAT;
    for (size_t i = 0; i < sizeof op_rules / sizeof op_rules[0]; i++) {
        const op_rule *r = &op_rules[i];
        if (r->op != h->op)
            continue;
        uint32_t need = reply ? r->rep_has : r->req_has;
        if ((h->has & need) != need)
            return SHOAL_ERR_FORMAT;
        if (h->ntensors < (reply ? r->rep_tensors : r->req_tensors))
            return SHOAL_ERR_FORMAT;
    }
    if (h->op == SHOAL_OP_ERROR && h->error == 0)
        return SHOAL_ERR_FORMAT;
    if ((h->has & SHOAL_WIRE_HAS_MESSAGE) && !text_ok(h->message, sizeof h->message))
        return SHOAL_ERR_FORMAT;
    if ((h->has & SHOAL_WIRE_HAS_MODEL) && !text_ok(h->model, sizeof h->model))
        return SHOAL_ERR_FORMAT;
    if ((h->has & SHOAL_WIRE_HAS_SOFTWARE) && !text_ok(h->software, sizeof h->software))
        return SHOAL_ERR_FORMAT;
    if ((h->has & SHOAL_WIRE_HAS_ADDR) && !text_ok(h->addr, sizeof h->addr))
        return SHOAL_ERR_FORMAT;
    if ((h->has & SHOAL_WIRE_HAS_ADAPTER) && !text_ok(h->adapter, sizeof h->adapter))
        return SHOAL_ERR_FORMAT;
    if ((h->has & SHOAL_WIRE_HAS_LORA) && !isfinite(h->lora_alpha))
        return SHOAL_ERR_FORMAT;
    if (h->has & SHOAL_WIRE_HAS_OPT) {
        const double o[5] = {h->opt_lr, h->opt_beta1, h->opt_beta2, h->opt_eps, h->opt_wd};
        for (int i = 0; i < 5; i++)
            if (!(isfinite(o[i]) && o[i] >= 0.0))
                return SHOAL_ERR_FORMAT;
    }
    if ((h->has & SHOAL_WIRE_HAS_SPAN) && h->span_start > h->span_end)
        return SHOAL_ERR_FORMAT;
    if (!(h->has & SHOAL_WIRE_HAS_ROUTE) ? h->nroute != 0
                                         : h->nroute < 1 || h->nroute > SHOAL_WIRE_MAX_ROUTE)
        return SHOAL_ERR_FORMAT;
    for (uint32_t i = 0; i < h->nroute; i++) {
        const shoal_wire_bytes *a = &h->route[i].addr;
        if (a->len < 1 || a->len >= SHOAL_WIRE_ADDR_MAX || !a->ptr ||
            memchr(a->ptr, 0, a->len) || !shoal_mpr_utf8_valid(a->ptr, a->len))
            return SHOAL_ERR_FORMAT;
    }
    if ((h->has & SHOAL_WIRE_HAS_THROUGHPUT) &&
        !(isfinite(h->throughput) && h->throughput >= 0.0))
        return SHOAL_ERR_FORMAT;
    if (h->nvalues > SHOAL_WIRE_MAX_VALUES ||
        (h->nvalues && !(h->has & SHOAL_WIRE_HAS_VALUES)))
        return SHOAL_ERR_FORMAT;
    for (uint32_t i = 0; i < h->nvalues; i++)
        if (h->values[i].len > SHOAL_WIRE_VALUE_MAX ||
            (h->values[i].len && !h->values[i].ptr))
            return SHOAL_ERR_FORMAT;
    if (h->ntensors > SHOAL_WIRE_MAX_TENSORS)
        return SHOAL_ERR_FORMAT;
    for (uint32_t i = 0; i < h->ntensors; i++) {
        int rc = shoal_codec_desc_check(&h->tensors[i], NULL);
        if (rc)
            return rc;
    }
    if ((h->has & SHOAL_WIRE_HAS_REPLY_CODEC) && h->reply_codec >= SHOAL_CODEC__COUNT)
        return SHOAL_ERR_UNSUPPORTED;
    if (h->op == SHOAL_OP_PING) {
        /* a pad: one flat F32 tensor, bounded; what a reply may send back
         * is bounded by what its request brought (no amplification) */
        const shoal_codec_desc *d = &h->tensors[0];
        if (h->ntensors > 1 || (h->ntensors == 1 && (d->codec != SHOAL_CODEC_F32 ||
                                                     d->ndim != 1 ||
                                                     d->nbytes > SHOAL_WIRE_PAD_MAX)))
            return SHOAL_ERR_FORMAT;
        if ((h->has & SHOAL_WIRE_HAS_PAD) &&
            (reply || h->pad % 4 != 0 || h->pad > (h->ntensors ? d->nbytes : 0)))
            return SHOAL_ERR_FORMAT;
    } else if (h->has & SHOAL_WIRE_HAS_PAD) {
        return SHOAL_ERR_FORMAT;
    }
    return SHOAL_OK;
}

/* ------------------------------------------------------------------ */
/* Building headers                                                    */

void shoal_wire_header_init(shoal_wire_header *h, uint16_t op, uint64_t request_id)
{
    memset(h, 0, sizeof *h);
    h->version = SHOAL_WIRE_VERSION;
    h->op = op;
    h->request_id = request_id;
}

void shoal_wire_reply_init(shoal_wire_header *h, const shoal_wire_header *req)
{
    shoal_wire_header_init(h, req->op, req->request_id);
    h->flags = SHOAL_WIRE_FLAG_REPLY;
    if (req->has & SHOAL_WIRE_HAS_SESSION) {
        h->has |= SHOAL_WIRE_HAS_SESSION;
        h->session_id = req->session_id;
    }
    if (req->has & SHOAL_WIRE_HAS_STEP) {
        h->has |= SHOAL_WIRE_HAS_STEP;
        h->step_id = req->step_id;
    }
}

void shoal_wire_error_init(shoal_wire_header *h, uint64_t request_id,
                           int error, const char *message)
{
    shoal_wire_header_init(h, SHOAL_OP_ERROR, request_id);
    h->flags = SHOAL_WIRE_FLAG_REPLY;
    h->has = SHOAL_WIRE_HAS_ERROR;
    /* an error reply that says "no error" would confuse the requester */
    h->error = error > 0 ? (uint32_t)error : SHOAL_ERR_INTERNAL;
    if (message && message[0]) {
        shoal_wire_text_set(h->message, sizeof h->message, message);
        h->has |= SHOAL_WIRE_HAS_MESSAGE;
    }
}

int shoal_wire_tensor_add(shoal_wire_header *h, const shoal_codec_desc *d)
{
    if (h->ntensors >= SHOAL_WIRE_MAX_TENSORS)
        return SHOAL_ERR_RANGE;
    if (!d || shoal_codec_desc_check(d, NULL) != SHOAL_OK)
        return SHOAL_ERR_ARG;
    h->tensors[h->ntensors++] = *d;
    return SHOAL_OK;
}

/* ------------------------------------------------------------------ */
/* Encoding                                                            */

typedef struct fixbuf {
    uint8_t *p;
    size_t cap, len;
} fixbuf;

static int fixbuf_write(void *data, const char *buf, size_t n)
{
    fixbuf *b = data;
    if (n == 0)
        return 0;
    if (n > b->cap - b->len)
        return -1;
    memcpy(b->p + b->len, buf, n);
    b->len += n;
    return 0;
}

#define PK(call)            \
    do {                    \
        if ((call) != 0)    \
            goto full;      \
    } while (0)

static int pack_key(msgpack_packer *pk, const char *k)
{
    return msgpack_pack_str_with_body(pk, k, strlen(k));
}

static int pack_text(msgpack_packer *pk, const char *k, const char *v)
{
    if (pack_key(pk, k))
        return -1;
    return msgpack_pack_str_with_body(pk, v, strlen(v));
}

static int pack_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    if (pack_key(pk, k))
        return -1;
    return msgpack_pack_uint64(pk, v);
}

int shoal_wire_encode(const shoal_wire_header *h, uint8_t *out, size_t cap,
                      size_t *len)
{
    if (!h || !out || !len)
        return SHOAL_ERR_ARG;
    *len = 0;
    if (h->version != SHOAL_WIRE_VERSION || header_check(h) != SHOAL_OK)
        return SHOAL_ERR_ARG;
    fixbuf fb = {out, cap < SHOAL_WIRE_HEADER_MAX ? cap : SHOAL_WIRE_HEADER_MAX, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &fb, fixbuf_write);

    size_t nkeys = 4 + (size_t)__builtin_popcount(h->has) + (h->ntensors ? 1 : 0);
    PK(msgpack_pack_map(&pk, nkeys));
    PK(pack_u64(&pk, "v", h->version));
    PK(pack_u64(&pk, "op", h->op));
    PK(pack_u64(&pk, "id", h->request_id));
    PK(pack_u64(&pk, "fl", h->flags));
    uint32_t has = h->has;
    if (has & SHOAL_WIRE_HAS_SESSION)
        PK(pack_u64(&pk, "sid", h->session_id));
    if (has & SHOAL_WIRE_HAS_STEP)
        PK(pack_u64(&pk, "step", h->step_id));
    if (has & SHOAL_WIRE_HAS_POSITION)
        PK(pack_u64(&pk, "pos", h->position));
    if (has & SHOAL_WIRE_HAS_MAX_LENGTH)
        PK(pack_u64(&pk, "maxlen", h->max_length));
    if (has & SHOAL_WIRE_HAS_REPLY_CODEC)
        PK(pack_u64(&pk, "rc", h->reply_codec));
    if (has & SHOAL_WIRE_HAS_SPAN) {
        PK(pack_key(&pk, "span"));
        PK(msgpack_pack_array(&pk, 2));
        PK(msgpack_pack_uint64(&pk, h->span_start));
        PK(msgpack_pack_uint64(&pk, h->span_end));
    }
    if (has & SHOAL_WIRE_HAS_ERROR)
        PK(pack_u64(&pk, "err", h->error));
    if (has & SHOAL_WIRE_HAS_MESSAGE)
        PK(pack_text(&pk, "msg", h->message));
    if (has & SHOAL_WIRE_HAS_MODEL)
        PK(pack_text(&pk, "model", h->model));
    if (has & SHOAL_WIRE_HAS_MODEL_HASH) {
        PK(pack_key(&pk, "mhash"));
        PK(msgpack_pack_bin_with_body(&pk, h->model_hash, sizeof h->model_hash));
    }
    if (has & SHOAL_WIRE_HAS_WEIGHT_TYPE)
        PK(pack_u64(&pk, "wtype", h->weight_type));
    if (has & SHOAL_WIRE_HAS_FREE_TOKENS)
        PK(pack_u64(&pk, "free", h->free_tokens));
    if (has & SHOAL_WIRE_HAS_SOFTWARE)
        PK(pack_text(&pk, "sw", h->software));
    if (has & SHOAL_WIRE_HAS_NBLOCKS)
        PK(pack_u64(&pk, "nblk", h->nblocks));
    if (has & SHOAL_WIRE_HAS_DIM)
        PK(pack_u64(&pk, "dim", h->dim));
    if (has & SHOAL_WIRE_HAS_CODECS)
        PK(pack_u64(&pk, "codecs", h->codecs));
    if (has & SHOAL_WIRE_HAS_THROUGHPUT) {
        PK(pack_key(&pk, "tput"));
        PK(msgpack_pack_double(&pk, h->throughput));
    }
    if (has & SHOAL_WIRE_HAS_TARGET) {
        PK(pack_key(&pk, "target"));
        PK(msgpack_pack_bin_with_body(&pk, h->target, sizeof h->target));
    }
    if (has & SHOAL_WIRE_HAS_ADDR)
        PK(pack_text(&pk, "addr", h->addr));
    if (has & SHOAL_WIRE_HAS_VALUES) {
        PK(pack_key(&pk, "vals"));
        PK(msgpack_pack_array(&pk, h->nvalues));
        for (uint32_t i = 0; i < h->nvalues; i++)
            PK(msgpack_pack_bin_with_body(&pk, h->values[i].ptr, h->values[i].len));
    }
    if (has & SHOAL_WIRE_HAS_LORA) {
        PK(pack_key(&pk, "lora"));
        PK(msgpack_pack_array(&pk, 4));
        PK(msgpack_pack_uint64(&pk, h->lora_rank));
        PK(msgpack_pack_double(&pk, h->lora_alpha));
        PK(msgpack_pack_uint64(&pk, h->lora_targets));
        PK(msgpack_pack_uint64(&pk, h->lora_seed));
    }
    if (has & SHOAL_WIRE_HAS_OPT) {
        PK(pack_key(&pk, "opt"));
        PK(msgpack_pack_array(&pk, 5));
        PK(msgpack_pack_double(&pk, h->opt_lr));
        PK(msgpack_pack_double(&pk, h->opt_beta1));
        PK(msgpack_pack_double(&pk, h->opt_beta2));
        PK(msgpack_pack_double(&pk, h->opt_eps));
        PK(msgpack_pack_double(&pk, h->opt_wd));
    }
    if (has & SHOAL_WIRE_HAS_ADAPTER)
        PK(pack_text(&pk, "adapter", h->adapter));
    if (has & SHOAL_WIRE_HAS_STATE)
        PK(pack_u64(&pk, "state", h->state));
    if (has & SHOAL_WIRE_HAS_PUSH_TOKEN)
        PK(pack_u64(&pk, "ptok", h->push_token));
    if (has & SHOAL_WIRE_HAS_ROUTE) {
        PK(pack_key(&pk, "route"));
        PK(msgpack_pack_array(&pk, h->nroute));
        for (uint32_t i = 0; i < h->nroute; i++) {
            const shoal_wire_hop *hp = &h->route[i];
            PK(msgpack_pack_array(&pk, 3));
            PK(msgpack_pack_str_with_body(&pk, hp->addr.ptr, hp->addr.len));
            PK(msgpack_pack_uint64(&pk, hp->session_id));
            PK(msgpack_pack_uint64(&pk, hp->token));
        }
    }
    if (has & SHOAL_WIRE_HAS_PAD)
        PK(pack_u64(&pk, "pad", h->pad));
    if (h->ntensors) {
        PK(pack_key(&pk, "t"));
        PK(msgpack_pack_array(&pk, h->ntensors));
        for (uint32_t i = 0; i < h->ntensors; i++) {
            const shoal_codec_desc *d = &h->tensors[i];
            PK(msgpack_pack_map(&pk, 3));
            PK(pack_u64(&pk, "c", d->codec));
            PK(pack_key(&pk, "s"));
            PK(msgpack_pack_array(&pk, d->ndim));
            for (uint32_t j = 0; j < d->ndim; j++)
                PK(msgpack_pack_uint64(&pk, d->shape[j]));
            PK(pack_u64(&pk, "n", d->nbytes));
        }
    }
    *len = fb.len;
    return SHOAL_OK;
full:
    return SHOAL_ERR_RANGE;
}

int shoal_wire_encode_error(uint64_t request_id, int error, const char *message,
                            uint8_t *out, size_t cap, size_t *len)
{
    shoal_wire_header h;
    shoal_wire_error_init(&h, request_id, error, message);
    return shoal_wire_encode(&h, out, cap, len);
}

/* ------------------------------------------------------------------ */
/* Decoding                                                            */

enum key_id {
    K_V, K_OP, K_ID, K_FL, K_SID, K_STEP, K_POS, K_MAXLEN, K_RC, K_SPAN,
    K_ERR, K_MSG, K_MODEL, K_MHASH, K_WTYPE, K_FREE, K_SW, K_NBLK, K_DIM,
    K_CODECS, K_TPUT, K_TARGET, K_ADDR, K_VALS, K_T, K_LORA, K_OPT, K_ADAPTER,
    K_STATE, K_PTOK, K_ROUTE, K_PAD,
    K__COUNT
};
_Static_assert(K__COUNT <= 32, "decode tracks seen keys in a uint32_t");

static const char *const key_names[K__COUNT] = {
    [K_V] = "v", [K_OP] = "op", [K_ID] = "id", [K_FL] = "fl",
    [K_SID] = "sid", [K_STEP] = "step", [K_POS] = "pos",
    [K_MAXLEN] = "maxlen", [K_RC] = "rc", [K_SPAN] = "span",
    [K_ERR] = "err", [K_MSG] = "msg", [K_MODEL] = "model",
    [K_MHASH] = "mhash", [K_WTYPE] = "wtype", [K_FREE] = "free",
    [K_SW] = "sw", [K_NBLK] = "nblk", [K_DIM] = "dim",
    [K_CODECS] = "codecs", [K_TPUT] = "tput", [K_TARGET] = "target",
    [K_ADDR] = "addr", [K_VALS] = "vals", [K_T] = "t",
    [K_LORA] = "lora", [K_OPT] = "opt", [K_ADAPTER] = "adapter",
    [K_STATE] = "state", [K_PTOK] = "ptok", [K_ROUTE] = "route",
    [K_PAD] = "pad",
};

static int key_lookup(const uint8_t *k, uint32_t n)
{
    for (int i = 0; i < K__COUNT; i++)
        if (strlen(key_names[i]) == n && memcmp(key_names[i], k, n) == 0)
            return i;
    return -1;
}

static int rd_tensor(shoal_mpr *r, shoal_codec_desc *d)
{
    uint32_t n;
    if (shoal_mpr_count(r, 1, &n))
        return SHOAL_ERR_FORMAT;
    int seen = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        uint32_t kn;
        uint64_t u;
        if (shoal_mpr_raw(r, 0, &k, &kn))
            return SHOAL_ERR_FORMAT;
        int key = kn == 1 ? (k[0] == 'c' ? 0 : k[0] == 's' ? 1 : k[0] == 'n' ? 2 : -1) : -1;
        if (key < 0) {
            if (shoal_mpr_skip(r))
                return SHOAL_ERR_FORMAT;
            continue;
        }
        if (seen & (1 << key))
            return SHOAL_ERR_FORMAT;
        seen |= 1 << key;
        if (key == 0) {
            if (shoal_mpr_u32(r, &d->codec))
                return SHOAL_ERR_FORMAT;
        } else if (key == 1) {
            uint32_t nd;
            if (shoal_mpr_count(r, 0, &nd) || nd < 1 || nd > SHOAL_CODEC_MAX_DIMS)
                return SHOAL_ERR_FORMAT;
            d->ndim = nd;
            for (uint32_t j = 0; j < nd; j++)
                if (shoal_mpr_u32(r, &d->shape[j]))
                    return SHOAL_ERR_FORMAT;
        } else {
            if (shoal_mpr_uint(r, UINT64_MAX, &u))
                return SHOAL_ERR_FORMAT;
            d->nbytes = u;
        }
    }
    return seen == 7 ? SHOAL_OK : SHOAL_ERR_FORMAT;
}

static int rd_field(shoal_mpr *r, int key, shoal_wire_header *h)
{
    uint64_t u;
    uint32_t n;
    switch (key) {
    case K_V: return shoal_mpr_u32(r, &h->version);
    case K_OP:
        if (shoal_mpr_uint(r, UINT16_MAX, &u))
            return SHOAL_ERR_FORMAT;
        h->op = (uint16_t)u;
        return SHOAL_OK;
    case K_ID: return shoal_mpr_uint(r, UINT64_MAX, &h->request_id);
    case K_FL:
        if (shoal_mpr_uint(r, UINT16_MAX, &u))
            return SHOAL_ERR_FORMAT;
        h->flags = (uint16_t)u;
        return SHOAL_OK;
    case K_SID: h->has |= SHOAL_WIRE_HAS_SESSION; return shoal_mpr_uint(r, UINT64_MAX, &h->session_id);
    case K_STEP: h->has |= SHOAL_WIRE_HAS_STEP; return shoal_mpr_uint(r, UINT64_MAX, &h->step_id);
    case K_POS: h->has |= SHOAL_WIRE_HAS_POSITION; return shoal_mpr_u32(r, &h->position);
    case K_MAXLEN: h->has |= SHOAL_WIRE_HAS_MAX_LENGTH; return shoal_mpr_u32(r, &h->max_length);
    case K_RC: h->has |= SHOAL_WIRE_HAS_REPLY_CODEC; return shoal_mpr_u32(r, &h->reply_codec);
    case K_SPAN:
        h->has |= SHOAL_WIRE_HAS_SPAN;
        if (shoal_mpr_count(r, 0, &n) || n != 2)
            return SHOAL_ERR_FORMAT;
        if (shoal_mpr_u32(r, &h->span_start) || shoal_mpr_u32(r, &h->span_end))
            return SHOAL_ERR_FORMAT;
        return SHOAL_OK;
    case K_ERR: h->has |= SHOAL_WIRE_HAS_ERROR; return shoal_mpr_u32(r, &h->error);
    case K_MSG:
        h->has |= SHOAL_WIRE_HAS_MESSAGE;
        return shoal_mpr_text(r, h->message, sizeof h->message);
    case K_MODEL:
        h->has |= SHOAL_WIRE_HAS_MODEL;
        return shoal_mpr_text(r, h->model, sizeof h->model);
    case K_MHASH:
        h->has |= SHOAL_WIRE_HAS_MODEL_HASH;
        return shoal_mpr_bin_exact(r, h->model_hash, sizeof h->model_hash);
    case K_WTYPE: h->has |= SHOAL_WIRE_HAS_WEIGHT_TYPE; return shoal_mpr_u32(r, &h->weight_type);
    case K_FREE: h->has |= SHOAL_WIRE_HAS_FREE_TOKENS; return shoal_mpr_uint(r, UINT64_MAX, &h->free_tokens);
    case K_SW:
        h->has |= SHOAL_WIRE_HAS_SOFTWARE;
        return shoal_mpr_text(r, h->software, sizeof h->software);
    case K_NBLK: h->has |= SHOAL_WIRE_HAS_NBLOCKS; return shoal_mpr_u32(r, &h->nblocks);
    case K_DIM: h->has |= SHOAL_WIRE_HAS_DIM; return shoal_mpr_u32(r, &h->dim);
    case K_CODECS: h->has |= SHOAL_WIRE_HAS_CODECS; return shoal_mpr_u32(r, &h->codecs);
    case K_TPUT: h->has |= SHOAL_WIRE_HAS_THROUGHPUT; return shoal_mpr_double(r, &h->throughput);
    case K_TARGET:
        h->has |= SHOAL_WIRE_HAS_TARGET;
        return shoal_mpr_bin_exact(r, h->target, sizeof h->target);
    case K_ADDR:
        h->has |= SHOAL_WIRE_HAS_ADDR;
        return shoal_mpr_text(r, h->addr, sizeof h->addr);
    case K_VALS:
        h->has |= SHOAL_WIRE_HAS_VALUES;
        if (shoal_mpr_count(r, 0, &n) || n > SHOAL_WIRE_MAX_VALUES)
            return SHOAL_ERR_FORMAT;
        for (uint32_t i = 0; i < n; i++) {
            shoal_wire_bytes *v = &h->values[i];
            if (shoal_mpr_raw(r, 1, &v->ptr, &v->len) || v->len > SHOAL_WIRE_VALUE_MAX)
                return SHOAL_ERR_FORMAT;
            if (v->len == 0)
                v->ptr = NULL;
        }
        h->nvalues = n;
        return SHOAL_OK;
    case K_LORA:
        h->has |= SHOAL_WIRE_HAS_LORA;
        if (shoal_mpr_count(r, 0, &n) || n != 4)
            return SHOAL_ERR_FORMAT;
        if (shoal_mpr_u32(r, &h->lora_rank) || shoal_mpr_double(r, &h->lora_alpha) ||
            shoal_mpr_u32(r, &h->lora_targets) || shoal_mpr_uint(r, UINT64_MAX, &h->lora_seed))
            return SHOAL_ERR_FORMAT;
        return SHOAL_OK;
    case K_OPT:
        h->has |= SHOAL_WIRE_HAS_OPT;
        if (shoal_mpr_count(r, 0, &n) || n != 5)
            return SHOAL_ERR_FORMAT;
        if (shoal_mpr_double(r, &h->opt_lr) || shoal_mpr_double(r, &h->opt_beta1) ||
            shoal_mpr_double(r, &h->opt_beta2) || shoal_mpr_double(r, &h->opt_eps) ||
            shoal_mpr_double(r, &h->opt_wd))
            return SHOAL_ERR_FORMAT;
        return SHOAL_OK;
    case K_ADAPTER:
        h->has |= SHOAL_WIRE_HAS_ADAPTER;
        return shoal_mpr_text(r, h->adapter, sizeof h->adapter);
    case K_STATE: h->has |= SHOAL_WIRE_HAS_STATE; return shoal_mpr_u32(r, &h->state);
    case K_PTOK: h->has |= SHOAL_WIRE_HAS_PUSH_TOKEN; return shoal_mpr_uint(r, UINT64_MAX, &h->push_token);
    case K_ROUTE:
        h->has |= SHOAL_WIRE_HAS_ROUTE;
        if (shoal_mpr_count(r, 0, &n) || n < 1 || n > SHOAL_WIRE_MAX_ROUTE)
            return SHOAL_ERR_FORMAT;
        for (uint32_t i = 0; i < n; i++) {
            shoal_wire_hop *hp = &h->route[i];
            uint32_t m;
            if (shoal_mpr_count(r, 0, &m) || m != 3 || shoal_mpr_raw(r, 0, &hp->addr.ptr, &hp->addr.len) ||
                shoal_mpr_uint(r, UINT64_MAX, &hp->session_id) || shoal_mpr_uint(r, UINT64_MAX, &hp->token))
                return SHOAL_ERR_FORMAT;
        }
        h->nroute = n; /* addresses are checked with the rest of the header */
        return SHOAL_OK;
    case K_PAD: h->has |= SHOAL_WIRE_HAS_PAD; return shoal_mpr_u32(r, &h->pad);
    case K_T:
        if (shoal_mpr_count(r, 0, &n) || n == 0 || n > SHOAL_WIRE_MAX_TENSORS)
            return SHOAL_ERR_FORMAT;
        for (uint32_t i = 0; i < n; i++)
            if (rd_tensor(r, &h->tensors[i]))
                return SHOAL_ERR_FORMAT;
        h->ntensors = n;
        return SHOAL_OK;
    }
    return SHOAL_ERR_FORMAT;
}

/* Pass 2: "v" and "id" from the top-level map, if they are there and well
 * typed. Returns a bitmask: 1 if v was read, 2 if id was. */
static int scan_v_id(const uint8_t *buf, size_t len, uint32_t *v, uint64_t *id)
{
    shoal_mpr r = {buf, len, 0};
    uint32_t n;
    int got = 0;
    if (shoal_mpr_count(&r, 1, &n))
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        uint32_t kn;
        if (shoal_mpr_raw(&r, 0, &k, &kn))
            return got;
        int key = key_lookup(k, kn);
        if (key == K_V && !(got & 1)) {
            if (shoal_mpr_u32(&r, v))
                return got;
            got |= 1;
        } else if (key == K_ID && !(got & 2)) {
            if (shoal_mpr_uint(&r, UINT64_MAX, id))
                return got;
            got |= 2;
        } else if (shoal_mpr_skip(&r)) {
            return got;
        }
    }
    return got;
}

int shoal_wire_decode(shoal_wire_header *h, const uint8_t *buf, size_t len)
{
    if (!h)
        return SHOAL_ERR_ARG;
    memset(h, 0, sizeof *h);
    if (!buf || shoal_wire_msgpack_check(buf, len, NULL) != SHOAL_OK)
        return SHOAL_ERR_FORMAT;

    uint32_t version = 0;
    uint64_t id = 0;
    int got = scan_v_id(buf, len, &version, &id);
    h->request_id = (got & 2) ? id : 0;
    if (!(got & 1))
        return SHOAL_ERR_FORMAT;
    if (version != SHOAL_WIRE_VERSION) {
        h->version = version;
        return SHOAL_ERR_VERSION;
    }

    shoal_mpr r = {buf, len, 0};
    uint32_t n;
    uint32_t seen = 0;
    int rc = SHOAL_ERR_FORMAT;
    if (shoal_mpr_count(&r, 1, &n))
        goto malformed;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        uint32_t kn;
        if (shoal_mpr_raw(&r, 0, &k, &kn))
            goto malformed;
        int key = key_lookup(k, kn);
        if (key < 0) { /* a later version's key: skip it */
            if (shoal_mpr_skip(&r))
                goto malformed;
            continue;
        }
        if (seen & (1u << key))
            goto malformed;
        seen |= 1u << key;
        if (rd_field(&r, key, h))
            goto malformed;
    }
    if (r.off != len)
        goto malformed;
    const uint32_t required = (1u << K_V) | (1u << K_OP) | (1u << K_ID) | (1u << K_FL);
    if ((seen & required) != required)
        goto malformed;
    rc = header_check(h);
    if (rc)
        goto malformed;
    return SHOAL_OK;
malformed:
    memset(h, 0, sizeof *h);
    h->version = version;
    h->request_id = (got & 2) ? id : 0;
    return rc ? rc : SHOAL_ERR_FORMAT;
}

int shoal_wire_frames_check(const shoal_wire_header *h, size_t nframes,
                            const size_t *lens)
{
    if (!h || (nframes && !lens) || nframes != h->ntensors)
        return SHOAL_ERR_FORMAT;
    for (size_t i = 0; i < nframes; i++)
        if ((uint64_t)lens[i] != h->tensors[i].nbytes)
            return SHOAL_ERR_FORMAT;
    return SHOAL_OK;
}

/* ------------------------------------------------------------------ */
/* Comparison and names                                                */

bool shoal_wire_header_equal(const shoal_wire_header *a, const shoal_wire_header *b)
{
    if (a->version != b->version || a->op != b->op || a->flags != b->flags ||
        a->request_id != b->request_id || a->has != b->has ||
        a->ntensors != b->ntensors || a->ntensors > SHOAL_WIRE_MAX_TENSORS)
        return false;
    uint32_t has = a->has;
#define SAME(bit, cond) if ((has & (bit)) && !(cond)) return false
    SAME(SHOAL_WIRE_HAS_SESSION, a->session_id == b->session_id);
    SAME(SHOAL_WIRE_HAS_STEP, a->step_id == b->step_id);
    SAME(SHOAL_WIRE_HAS_POSITION, a->position == b->position);
    SAME(SHOAL_WIRE_HAS_MAX_LENGTH, a->max_length == b->max_length);
    SAME(SHOAL_WIRE_HAS_REPLY_CODEC, a->reply_codec == b->reply_codec);
    SAME(SHOAL_WIRE_HAS_ERROR, a->error == b->error);
    SAME(SHOAL_WIRE_HAS_MESSAGE, strncmp(a->message, b->message, sizeof a->message) == 0);
    SAME(SHOAL_WIRE_HAS_SPAN, a->span_start == b->span_start && a->span_end == b->span_end);
    SAME(SHOAL_WIRE_HAS_MODEL, strncmp(a->model, b->model, sizeof a->model) == 0);
    SAME(SHOAL_WIRE_HAS_MODEL_HASH, memcmp(a->model_hash, b->model_hash, sizeof a->model_hash) == 0);
    SAME(SHOAL_WIRE_HAS_WEIGHT_TYPE, a->weight_type == b->weight_type);
    SAME(SHOAL_WIRE_HAS_FREE_TOKENS, a->free_tokens == b->free_tokens);
    SAME(SHOAL_WIRE_HAS_SOFTWARE, strncmp(a->software, b->software, sizeof a->software) == 0);
    SAME(SHOAL_WIRE_HAS_NBLOCKS, a->nblocks == b->nblocks);
    SAME(SHOAL_WIRE_HAS_DIM, a->dim == b->dim);
    SAME(SHOAL_WIRE_HAS_CODECS, a->codecs == b->codecs);
    SAME(SHOAL_WIRE_HAS_THROUGHPUT, memcmp(&a->throughput, &b->throughput, sizeof a->throughput) == 0);
    SAME(SHOAL_WIRE_HAS_TARGET, memcmp(a->target, b->target, sizeof a->target) == 0);
    SAME(SHOAL_WIRE_HAS_ADDR, strncmp(a->addr, b->addr, sizeof a->addr) == 0);
    SAME(SHOAL_WIRE_HAS_LORA, a->lora_rank == b->lora_rank && a->lora_targets == b->lora_targets &&
                                  a->lora_seed == b->lora_seed &&
                                  memcmp(&a->lora_alpha, &b->lora_alpha, sizeof a->lora_alpha) == 0);
    SAME(SHOAL_WIRE_HAS_OPT, memcmp(&a->opt_lr, &b->opt_lr, sizeof a->opt_lr) == 0 &&
                                 memcmp(&a->opt_beta1, &b->opt_beta1, sizeof a->opt_beta1) == 0 &&
                                 memcmp(&a->opt_beta2, &b->opt_beta2, sizeof a->opt_beta2) == 0 &&
                                 memcmp(&a->opt_eps, &b->opt_eps, sizeof a->opt_eps) == 0 &&
                                 memcmp(&a->opt_wd, &b->opt_wd, sizeof a->opt_wd) == 0);
    SAME(SHOAL_WIRE_HAS_ADAPTER, strncmp(a->adapter, b->adapter, sizeof a->adapter) == 0);
    SAME(SHOAL_WIRE_HAS_STATE, a->state == b->state);
    SAME(SHOAL_WIRE_HAS_PUSH_TOKEN, a->push_token == b->push_token);
    SAME(SHOAL_WIRE_HAS_PAD, a->pad == b->pad);
#undef SAME
    if (has & SHOAL_WIRE_HAS_ROUTE) {
        if (a->nroute != b->nroute || a->nroute > SHOAL_WIRE_MAX_ROUTE)
            return false;
        for (uint32_t i = 0; i < a->nroute; i++) {
            const shoal_wire_hop *x = &a->route[i], *y = &b->route[i];
            if (x->session_id != y->session_id || x->token != y->token ||
                x->addr.len != y->addr.len ||
                (x->addr.len && memcmp(x->addr.ptr, y->addr.ptr, x->addr.len) != 0))
                return false;
        }
    }
    if (has & SHOAL_WIRE_HAS_VALUES) {
        if (a->nvalues != b->nvalues || a->nvalues > SHOAL_WIRE_MAX_VALUES)
            return false;
        for (uint32_t i = 0; i < a->nvalues; i++) {
            const shoal_wire_bytes *x = &a->values[i], *y = &b->values[i];
            if (x->len != y->len || (x->len && memcmp(x->ptr, y->ptr, x->len) != 0))
                return false;
        }
    }
    for (uint32_t i = 0; i < a->ntensors; i++) {
        const shoal_codec_desc *x = &a->tensors[i], *y = &b->tensors[i];
        if (x->codec != y->codec || x->ndim != y->ndim || x->nbytes != y->nbytes ||
            x->ndim > SHOAL_CODEC_MAX_DIMS)
            return false;
        for (uint32_t j = 0; j < x->ndim; j++)
            if (x->shape[j] != y->shape[j])
                return false;
    }
    return true;
}

int shoal_wire_ping_init(shoal_wire_header *h, uint64_t request_id, uint32_t send,
                         uint32_t back)
{
    if (!h || send > SHOAL_WIRE_PAD_MAX || send % 4 != 0 || back > send || back % 4 != 0)
        return SHOAL_ERR_ARG;
    shoal_wire_header_init(h, SHOAL_OP_PING, request_id);
    if (back) {
        h->has |= SHOAL_WIRE_HAS_PAD;
        h->pad = back;
    }
    if (send) {
        uint32_t shape[1] = {send / 4};
        if (shoal_codec_desc_init(&h->tensors[0], SHOAL_CODEC_F32, 1, shape))
            return SHOAL_ERR_ARG;
        h->ntensors = 1;
    }
    return SHOAL_OK;
}

int shoal_wire_ping_reply(shoal_wire_header *r, const shoal_wire_header *req)
{
    if (!r || !req || req->op != SHOAL_OP_PING || (req->flags & SHOAL_WIRE_FLAG_REPLY))
        return SHOAL_ERR_ARG;
    shoal_wire_reply_init(r, req);
    if ((req->has & SHOAL_WIRE_HAS_PAD) && req->pad > 0) {
        /* header_check held pad <= the request's pad tensor <= the maximum */
        uint32_t shape[1] = {req->pad / 4};
        if (req->ntensors != 1 || req->pad > req->tensors[0].nbytes ||
            shoal_codec_desc_init(&r->tensors[0], SHOAL_CODEC_F32, 1, shape))
            return SHOAL_ERR_ARG;
        r->ntensors = 1;
    }
    return SHOAL_OK;
}

const char *shoal_wire_op_name(int op)
{
    switch (op) {
    case SHOAL_OP_PING: return "ping";
    case SHOAL_OP_INFO: return "info";
    case SHOAL_OP_ERROR: return "error";
    case SHOAL_OP_FORWARD: return "forward";
    case SHOAL_OP_SESSION_OPEN: return "session_open";
    case SHOAL_OP_SESSION_STEP: return "session_step";
    case SHOAL_OP_SESSION_CLOSE: return "session_close";
    case SHOAL_OP_SESSION_PUSH: return "session_push";
    case SHOAL_OP_FIND_NODE: return "find_node";
    case SHOAL_OP_FIND_VALUE: return "find_value";
    case SHOAL_OP_STORE: return "store";
    case SHOAL_OP_BACKWARD: return "backward";
    case SHOAL_OP_TRAIN_OPEN: return "train_open";
    case SHOAL_OP_TRAIN_FORWARD: return "train_forward";
    case SHOAL_OP_TRAIN_BACKWARD: return "train_backward";
    case SHOAL_OP_TRAIN_STEP: return "train_step";
    case SHOAL_OP_TRAIN_PULL: return "train_pull";
    case SHOAL_OP_TRAIN_PUSH: return "train_push";
    case SHOAL_OP_TRAIN_CLOSE: return "train_close";
    }
    return NULL;
}
