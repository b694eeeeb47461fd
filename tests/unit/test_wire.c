/*
 * Header frames: round trips of every op and every field, golden bytes for
 * one header, and rejection of malformed frames: truncation at every
 * offset, corrupted bytes, huge declared counts, deep nesting, oversized
 * strings, wrong types, wrong version, broken per-op contracts. Frames are
 * crafted with msgpack-c's packer so that the decoder is tested against an
 * independent encoder too.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "../check.h"
#include "kernels/err.h"
#include "proto/wire.h"

static uint8_t frame[SHOAL_WIRE_HEADER_MAX];

/* Encode h, decode it back, and check the two are equal. */
static int roundtrip(const shoal_wire_header *h)
{
    size_t len = 0;
    int rc = shoal_wire_encode(h, frame, sizeof frame, &len);
    if (rc != SHOAL_OK)
        return rc;
    shoal_wire_header back;
    rc = shoal_wire_decode(&back, frame, len);
    if (rc != SHOAL_OK)
        return rc;
    if (!shoal_wire_header_equal(h, &back))
        return -1;
    /* msgpack-c must read what we wrote as exactly one object */
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int ok = msgpack_unpack_next(&u, (const char *)frame, len, &off) == MSGPACK_UNPACK_SUCCESS &&
             off == len && u.data.type == MSGPACK_OBJECT_MAP;
    msgpack_unpacked_destroy(&u);
    return ok ? SHOAL_OK : -2;
}

static shoal_codec_desc desc(int codec, uint32_t a, uint32_t b)
{
    shoal_codec_desc d;
    uint32_t s[2] = {a, b};
    shoal_codec_desc_init(&d, codec, b ? 2 : 1, s);
    return d;
}

static const uint8_t value_bytes[SHOAL_WIRE_VALUE_MAX] = {1, 2, 3};
static char route_addr[SHOAL_WIRE_ADDR_MAX]; /* 335 x 'r' (set in main) */

/* Every field set, 4 tensors and 32 values: the largest header. */
static void kitchen_sink(shoal_wire_header *h)
{
    shoal_wire_header_init(h, SHOAL_OP_INFO, UINT64_MAX);
    h->flags = SHOAL_WIRE_FLAG_REPLY | 0x8000; /* an unknown flag is carried */
    h->has = SHOAL_WIRE_HAS__ALL & ~(uint32_t)SHOAL_WIRE_HAS_PAD; /* PING only: test_wire_ping */
    h->session_id = 0x1122334455667788ull;
    h->step_id = 1ull << 40;
    h->position = UINT32_MAX;
    h->max_length = 4096;
    h->reply_codec = SHOAL_CODEC_I8B64;
    h->error = SHOAL_ERR_BUSY;
    shoal_wire_text_set(h->message, sizeof h->message, "cache full: \xc3\xa9t\xc3\xa9 \xf0\x9f\x90\x9f");
    h->span_start = 3;
    h->span_end = 80;
    memset(h->model, 'm', sizeof h->model - 1); /* the longest model name */
    for (int i = 0; i < 32; i++)
        h->model_hash[i] = (uint8_t)(i * 7 + 1);
    h->weight_type = 8;
    h->free_tokens = 123456789012ull;
    shoal_wire_text_set(h->software, sizeof h->software, "shoal 0.1.0");
    h->nblocks = 80;
    h->dim = 8192;
    h->codecs = 0xf;
    h->throughput = 1234.5;
    for (int i = 0; i < 32; i++)
        h->target[i] = (uint8_t)(255 - i);
    shoal_wire_text_set(h->addr, sizeof h->addr,
                        "shoal://[2001:db8::1]:7000/"
                        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    h->nvalues = SHOAL_WIRE_MAX_VALUES;
    for (uint32_t i = 0; i < h->nvalues; i++) {
        h->values[i].ptr = value_bytes;
        h->values[i].len = i == 0 ? SHOAL_WIRE_VALUE_MAX : i * 13;
    }
    h->values[5].ptr = NULL;
    h->values[5].len = 0;
    h->lora_rank = 16;
    h->lora_alpha = 32.5;
    h->lora_targets = 0x7f;
    h->lora_seed = UINT64_MAX;
    h->opt_lr = 1e-3;
    h->opt_beta1 = 0.9;
    h->opt_beta2 = 0.999;
    h->opt_eps = 1e-8;
    h->opt_wd = 0.01;
    shoal_wire_text_set(h->adapter, sizeof h->adapter, "zib,chat-v2,\xc3\xa9t\xc3\xa9");
    h->state = SHOAL_WIRE_STATE_OFFLINE;
    h->push_token = 0xfedcba9876543210ull;
    h->nroute = SHOAL_WIRE_MAX_ROUTE; /* the longest route, longest addresses */
    for (uint32_t i = 0; i < h->nroute; i++) {
        h->route[i].addr.ptr = (const uint8_t *)route_addr;
        h->route[i].addr.len = i == 0 ? SHOAL_WIRE_ADDR_MAX - 1 : 90 + i;
        h->route[i].session_id = UINT64_MAX - i;
        h->route[i].token = i;
    }
    shoal_codec_desc d[4] = {desc(SHOAL_CODEC_F32, 7, 4096), desc(SHOAL_CODEC_F16, 1, 0),
                             desc(SHOAL_CODEC_BF16, 3, 5), desc(SHOAL_CODEC_I8B64, 2, 100)};
    uint32_t s3[3] = {2, 3, 4};
    shoal_codec_desc_init(&d[1], SHOAL_CODEC_F16, 3, s3);
    for (int i = 0; i < 4; i++)
        shoal_wire_tensor_add(h, &d[i]);
}

static void test_every_op(void)
{
    static const uint16_t ops[] = {
        SHOAL_OP_PING, SHOAL_OP_INFO, SHOAL_OP_ERROR, SHOAL_OP_FORWARD,
        SHOAL_OP_SESSION_OPEN, SHOAL_OP_SESSION_STEP, SHOAL_OP_SESSION_CLOSE,
        SHOAL_OP_SESSION_PUSH, SHOAL_OP_FIND_NODE, SHOAL_OP_FIND_VALUE,
        SHOAL_OP_STORE, SHOAL_OP_BACKWARD, SHOAL_OP_TRAIN_OPEN,
        SHOAL_OP_TRAIN_FORWARD, SHOAL_OP_TRAIN_BACKWARD, SHOAL_OP_TRAIN_STEP,
        SHOAL_OP_TRAIN_PULL, SHOAL_OP_TRAIN_PUSH, SHOAL_OP_TRAIN_CLOSE,
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        CHECK(shoal_wire_op_name(ops[i]) != NULL);
        for (int reply = 0; reply < 2; reply++) {
            if (ops[i] == SHOAL_OP_ERROR && !reply)
                continue;
            /* the fullest header of this op, and the barest one allowed */
            shoal_wire_header h;
            kitchen_sink(&h);
            h.op = ops[i];
            h.flags = reply ? SHOAL_WIRE_FLAG_REPLY : 0;
            if (ops[i] == SHOAL_OP_PING) { /* a PING's one tensor is its pad */
                h.ntensors = 1;
                h.tensors[0] = desc(SHOAL_CODEC_F32, 1024, 0);
                h.has |= reply ? 0 : SHOAL_WIRE_HAS_PAD;
                h.pad = reply ? 0 : 4096;
            }
            CHECK_MSG(roundtrip(&h) == SHOAL_OK, "op %u reply %d full", ops[i], reply);

            shoal_wire_header b;
            shoal_wire_header_init(&b, ops[i], 1000 + i);
            b.flags = reply ? SHOAL_WIRE_FLAG_REPLY : 0;
            /* add what the contract asks for, one field at a time */
            shoal_codec_desc d = desc(SHOAL_CODEC_F16, 2, 64);
            int guard = 0;
            while (roundtrip(&b) != SHOAL_OK && guard++ < 8) {
                size_t len;
                CHECK(shoal_wire_encode(&b, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
                if (ops[i] == SHOAL_OP_ERROR && !(b.has & SHOAL_WIRE_HAS_ERROR)) {
                    b.has |= SHOAL_WIRE_HAS_ERROR;
                    b.error = SHOAL_ERR_SESSION;
                } else if (ops[i] == SHOAL_OP_INFO && !(b.has & SHOAL_WIRE_HAS_MODEL)) {
                    b.has |= SHOAL_WIRE_HAS_MODEL | SHOAL_WIRE_HAS_MODEL_HASH | SHOAL_WIRE_HAS_SPAN;
                    strcpy(b.model, "stories260K");
                    b.span_end = 5;
                } else if (b.ntensors == 0 &&
                           (ops[i] == SHOAL_OP_FORWARD || ops[i] == SHOAL_OP_SESSION_STEP ||
                            (ops[i] == SHOAL_OP_SESSION_PUSH && !reply) ||
                            ops[i] == SHOAL_OP_TRAIN_FORWARD || ops[i] == SHOAL_OP_TRAIN_BACKWARD ||
                            ops[i] == SHOAL_OP_TRAIN_PULL || ops[i] == SHOAL_OP_TRAIN_PUSH)) {
                    shoal_wire_tensor_add(&b, &d);
                } else if (!(b.has & SHOAL_WIRE_HAS_SPAN) && !reply) {
                    b.has |= SHOAL_WIRE_HAS_SPAN;
                    b.span_start = b.span_end = 2;
                } else if (!(b.has & SHOAL_WIRE_HAS_SESSION)) {
                    b.has |= SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP |
                             SHOAL_WIRE_HAS_POSITION | SHOAL_WIRE_HAS_MAX_LENGTH;
                    b.session_id = 9;
                } else if (ops[i] == SHOAL_OP_SESSION_PUSH &&
                           !(b.has & SHOAL_WIRE_HAS_PUSH_TOKEN)) {
                    b.has |= SHOAL_WIRE_HAS_PUSH_TOKEN;
                    b.push_token = 77;
                } else if (ops[i] == SHOAL_OP_TRAIN_OPEN && !(b.has & SHOAL_WIRE_HAS_LORA)) {
                    b.has |= SHOAL_WIRE_HAS_LORA | SHOAL_WIRE_HAS_OPT;
                    b.lora_rank = 8;
                    b.lora_alpha = 16;
                    b.opt_lr = 1e-3;
                } else if (!(b.has & SHOAL_WIRE_HAS_TARGET)) {
                    b.has |= SHOAL_WIRE_HAS_TARGET | SHOAL_WIRE_HAS_VALUES;
                    b.nvalues = 1;
                    b.values[0].ptr = value_bytes;
                    b.values[0].len = 3;
                }
            }
            CHECK_MSG(roundtrip(&b) == SHOAL_OK, "op %u reply %d bare", ops[i], reply);
        }
    }
    CHECK(shoal_wire_op_name(0) == NULL && shoal_wire_op_name(9) == NULL &&
          shoal_wire_op_name(40) == NULL);
    /* an op this version does not know still decodes: the node answers it */
    shoal_wire_header u;
    shoal_wire_header_init(&u, 777, 5);
    CHECK(roundtrip(&u) == SHOAL_OK);
    shoal_wire_header_init(&u, 0xffff, 5);
    CHECK(roundtrip(&u) == SHOAL_OK);
}

/* One header pinned byte by byte: any change to the wire fails here. The
 * bytes were written from docs/WIRE.md, not produced by the encoder. */
static void test_golden(void)
{
    shoal_wire_header h;
    shoal_wire_header_init(&h, SHOAL_OP_SESSION_STEP, 0x0102030405060708ull);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION;
    h.session_id = 42;
    h.step_id = 7;
    h.position = 300;
    shoal_codec_desc d = desc(SHOAL_CODEC_F16, 2, 8);
    CHECK(shoal_wire_tensor_add(&h, &d) == SHOAL_OK);
    static const uint8_t golden[] = {
        0x88,                                     /* map of 8 */
        0xa1, 'v', 0x01,                          /* v: 1 */
        0xa2, 'o', 'p', 0x06,                     /* op: SESSION_STEP */
        0xa2, 'i', 'd', 0xcf, 1, 2, 3, 4, 5, 6, 7, 8,
        0xa2, 'f', 'l', 0x00,
        0xa3, 's', 'i', 'd', 0x2a,
        0xa4, 's', 't', 'e', 'p', 0x07,
        0xa3, 'p', 'o', 's', 0xcd, 0x01, 0x2c,
        0xa1, 't', 0x91,                          /* t: [ */
        0x83, 0xa1, 'c', 0x01,                    /*   {c: F16, */
        0xa1, 's', 0x92, 0x02, 0x08,              /*    s: [2, 8], */
        0xa1, 'n', 0x20,                          /*    n: 32} ] */
    };
    size_t len = 0;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_OK);
    CHECK(len == sizeof golden && memcmp(frame, golden, sizeof golden) == 0);
    shoal_wire_header back;
    CHECK(shoal_wire_decode(&back, golden, sizeof golden) == SHOAL_OK);
    CHECK(shoal_wire_header_equal(&h, &back));
    CHECK(back.tensors[0].nbytes == 32 && back.position == 300);

    /* an ERROR reply, as built by the one-call helper */
    static const uint8_t golden_err[] = {
        0x86, 0xa1, 'v', 0x01, 0xa2, 'o', 'p', 0x03, 0xa2, 'i', 'd', 0x05,
        0xa2, 'f', 'l', 0x01, 0xa3, 'e', 'r', 'r', 0x0f,
        0xa3, 'm', 's', 'g', 0xa2, 'n', 'o',
    };
    CHECK(shoal_wire_encode_error(5, SHOAL_ERR_SESSION, "no", frame, sizeof frame, &len) == SHOAL_OK);
    CHECK(len == sizeof golden_err && memcmp(frame, golden_err, len) == 0);
}

static void test_builders(void)
{
    shoal_wire_header req, rep;
    shoal_wire_header_init(&req, SHOAL_OP_SESSION_STEP, 77);
    req.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION;
    req.session_id = 5;
    req.step_id = 6;
    shoal_wire_reply_init(&rep, &req);
    CHECK(rep.op == SHOAL_OP_SESSION_STEP && rep.request_id == 77 &&
          rep.flags == SHOAL_WIRE_FLAG_REPLY && rep.session_id == 5 && rep.step_id == 6 &&
          rep.has == (SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP));
    size_t len;
    CHECK(shoal_wire_encode(&rep, frame, sizeof frame, &len) == SHOAL_ERR_ARG); /* no tensor */
    shoal_codec_desc d = desc(SHOAL_CODEC_BF16, 1, 288);
    CHECK(shoal_wire_tensor_add(&rep, &d) == SHOAL_OK);
    CHECK(roundtrip(&rep) == SHOAL_OK);
    for (int i = 1; i < SHOAL_WIRE_MAX_TENSORS; i++)
        CHECK(shoal_wire_tensor_add(&rep, &d) == SHOAL_OK);
    CHECK(shoal_wire_tensor_add(&rep, &d) == SHOAL_ERR_RANGE);
    shoal_codec_desc bad = d;
    bad.nbytes++;
    rep.ntensors = 0;
    CHECK(shoal_wire_tensor_add(&rep, &bad) == SHOAL_ERR_ARG);

    /* error replies: code kept, message cut at a UTF-8 boundary, invalid
     * bytes replaced, code 0 turned into INTERNAL */
    shoal_wire_header e;
    shoal_wire_error_init(&e, 0, SHOAL_ERR_FORMAT, "bad \xff frame");
    CHECK(e.op == SHOAL_OP_ERROR && e.request_id == 0 && e.error == SHOAL_ERR_FORMAT &&
          strcmp(e.message, "bad ? frame") == 0);
    CHECK(roundtrip(&e) == SHOAL_OK);
    char longmsg[600];
    memset(longmsg, 'a', sizeof longmsg);
    strcpy(longmsg + 254, "\xc3\xa9 and more"); /* 'é' straddles the limit */
    shoal_wire_error_init(&e, 1, SHOAL_ERR_IO, longmsg);
    CHECK(strlen(e.message) == 254 && roundtrip(&e) == SHOAL_OK);
    shoal_wire_error_init(&e, 1, 0, NULL);
    CHECK(e.error == SHOAL_ERR_INTERNAL && !(e.has & SHOAL_WIRE_HAS_MESSAGE));
    CHECK(roundtrip(&e) == SHOAL_OK);
    char f[4];
    CHECK(shoal_wire_text_set(f, sizeof f, "abc") == SHOAL_OK && strcmp(f, "abc") == 0);
    CHECK(shoal_wire_text_set(f, sizeof f, "abcd") == SHOAL_ERR_RANGE && strcmp(f, "abc") == 0);
    CHECK(shoal_wire_text_set(f, sizeof f, "a\xe2\x82\xac") == SHOAL_ERR_RANGE && strcmp(f, "a") == 0);
    CHECK(shoal_wire_text_set(f, sizeof f, "\xed\xa0\x80") == SHOAL_OK && strcmp(f, "???") == 0);
    CHECK(shoal_wire_text_set(f, sizeof f, NULL) == SHOAL_OK && f[0] == 0);

    /* the encoder refuses headers that break the contract */
    shoal_wire_header h;
    shoal_wire_header_init(&h, SHOAL_OP_PING, 0); /* request id 0 */
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    shoal_wire_header_init(&h, SHOAL_OP_PING, 1);
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_OK);
    h.version = 2;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    shoal_wire_header_init(&h, 0, 1);
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    shoal_wire_header_init(&h, SHOAL_OP_PING, 1);
    h.has = 1u << 30;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.has = SHOAL_WIRE_HAS_MODEL;
    memset(h.model, 'x', sizeof h.model); /* no NUL */
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    strcpy(h.model, "\xc0\x80"); /* overlong NUL */
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.has = SHOAL_WIRE_HAS_SPAN;
    h.span_start = 5;
    h.span_end = 4;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.has = SHOAL_WIRE_HAS_THROUGHPUT;
    h.throughput = NAN;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.throughput = -1;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.has = SHOAL_WIRE_HAS_REPLY_CODEC;
    h.reply_codec = 4;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.has = 0;
    h.nvalues = 1; /* values without the bit */
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.nvalues = 0;
    h.has = SHOAL_WIRE_HAS_LORA;
    h.lora_alpha = INFINITY;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.lora_alpha = -2; /* negative alpha is a value like any other */
    CHECK(roundtrip(&h) == SHOAL_OK);
    h.has = SHOAL_WIRE_HAS_OPT;
    h.opt_beta2 = -0.5;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.opt_beta2 = NAN;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.opt_beta2 = 0.999;
    CHECK(roundtrip(&h) == SHOAL_OK);
    h.has = SHOAL_WIRE_HAS_ADAPTER;
    memset(h.adapter, 'a', sizeof h.adapter); /* no NUL */
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.adapter[sizeof h.adapter - 1] = 0; /* the longest name */
    CHECK(roundtrip(&h) == SHOAL_OK);
    /* a training request without its LoRA parameters */
    shoal_wire_header_init(&h, SHOAL_OP_TRAIN_OPEN, 1);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_SPAN | SHOAL_WIRE_HAS_MAX_LENGTH |
            SHOAL_WIRE_HAS_OPT;
    h.session_id = 3;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.has |= SHOAL_WIRE_HAS_LORA;
    CHECK(roundtrip(&h) == SHOAL_OK);

    /* every buffer too small by any amount is refused, never overrun */
    shoal_wire_header k;
    kitchen_sink(&k);
    size_t full;
    CHECK(shoal_wire_encode(&k, frame, sizeof frame, &full) == SHOAL_OK);
    CHECK(full > 1000 && full < SHOAL_WIRE_HEADER_MAX);
    uint8_t *small = malloc(full);
    int bad_cap = 0;
    for (size_t cap = 0; cap < full; cap++) {
        size_t l = 99;
        if (shoal_wire_encode(&k, small, cap, &l) != SHOAL_ERR_RANGE || l != 0)
            bad_cap++;
    }
    CHECK(bad_cap == 0);
    CHECK(shoal_wire_encode(&k, small, full, &len) == SHOAL_OK && len == full &&
          memcmp(small, frame, full) == 0);
    free(small);

    /* tensor frames that come with a header */
    size_t lens[4] = {k.tensors[0].nbytes, k.tensors[1].nbytes, k.tensors[2].nbytes,
                      k.tensors[3].nbytes};
    CHECK(shoal_wire_frames_check(&k, 4, lens) == SHOAL_OK);
    CHECK(shoal_wire_frames_check(&k, 3, lens) == SHOAL_ERR_FORMAT);
    lens[2]++;
    CHECK(shoal_wire_frames_check(&k, 4, lens) == SHOAL_ERR_FORMAT);
    shoal_wire_header_init(&h, SHOAL_OP_PING, 1);
    CHECK(shoal_wire_frames_check(&h, 0, NULL) == SHOAL_OK);
    CHECK(shoal_wire_frames_check(&h, 1, lens) == SHOAL_ERR_FORMAT);
}

/* ---- crafted frames -------------------------------------------------- */

typedef struct craft {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} craft;

static void craft_begin(craft *c, size_t nkeys)
{
    msgpack_sbuffer_init(&c->sb);
    msgpack_packer_init(&c->pk, &c->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&c->pk, nkeys);
}

static void key(craft *c, const char *k) { msgpack_pack_str_with_body(&c->pk, k, strlen(k)); }
static void kv_u(craft *c, const char *k, uint64_t v) { key(c, k); msgpack_pack_uint64(&c->pk, v); }

/* The four common keys of a valid PING request with id 9. */
static void common(craft *c, uint64_t version)
{
    kv_u(c, "v", version);
    kv_u(c, "op", SHOAL_OP_PING);
    kv_u(c, "id", 9);
    kv_u(c, "fl", 0);
}

static int decode_craft(craft *c, shoal_wire_header *h)
{
    int rc = shoal_wire_decode(h, (const uint8_t *)c->sb.data, c->sb.size);
    msgpack_sbuffer_destroy(&c->sb);
    return rc;
}

static int decode_bytes(const void *p, size_t n)
{
    shoal_wire_header h;
    return shoal_wire_decode(&h, p, n);
}

static void test_decode_types(void)
{
    shoal_wire_header h;
    craft c;

    craft_begin(&c, 4);
    common(&c, 1);
    CHECK(decode_craft(&c, &h) == SHOAL_OK && h.op == SHOAL_OP_PING && h.request_id == 9);

    /* integers in any non-negative encoding are accepted */
    craft_begin(&c, 4);
    key(&c, "v"); msgpack_pack_fix_int64(&c.pk, 1);
    key(&c, "op"); msgpack_pack_fix_uint32(&c.pk, SHOAL_OP_PING);
    key(&c, "id"); msgpack_pack_fix_int8(&c.pk, 9);
    key(&c, "fl"); msgpack_pack_fix_uint64(&c.pk, 0);
    CHECK(decode_craft(&c, &h) == SHOAL_OK && h.request_id == 9);

    /* version */
    craft_begin(&c, 4);
    common(&c, 2);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_VERSION && h.version == 2 && h.request_id == 9);
    craft_begin(&c, 4);
    common(&c, 0);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_VERSION);
    /* another version's frame may have keys we would call malformed */
    craft_begin(&c, 5);
    common(&c, 7);
    kv_u(&c, "span", 3);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_VERSION && h.request_id == 9);
    craft_begin(&c, 3); /* no version */
    kv_u(&c, "op", 1); kv_u(&c, "id", 9); kv_u(&c, "fl", 0);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT && h.request_id == 9);
    craft_begin(&c, 3); /* no op: id still reported for the error reply */
    kv_u(&c, "v", 1); kv_u(&c, "id", 9); kv_u(&c, "fl", 0);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT && h.request_id == 9 && h.op == 0);
    craft_begin(&c, 3); /* no flags */
    kv_u(&c, "v", 1); kv_u(&c, "op", 1); kv_u(&c, "id", 9);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);

    /* wrong types and ranges, one key at a time */
    struct { const char *k; int kind; } wrong[] = {
        {"v", 0}, {"op", 1}, {"op", 2}, {"id", 3}, {"fl", 1}, {"sid", 0}, {"pos", 4},
        {"span", 5}, {"span", 6}, {"mhash", 7}, {"target", 7}, {"tput", 8},
        {"tput", 9}, {"tput", 10}, {"msg", 11}, {"msg", 12}, {"msg", 13},
        {"model", 14}, {"vals", 15}, {"vals", 16}, {"t", 17}, {"t", 18},
        {"t", 19}, {"t", 20}, {"t", 21}, {"t", 22}, {"rc", 23}, {"err", 24},
        {"t", 25}, {"sw", 26}, {"addr", 27}, {"lora", 5}, {"lora", 28}, {"lora", 29},
        {"opt", 30}, {"opt", 31}, {"opt", 8}, {"adapter", 13}, {"adapter", 12},
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        const char *k = wrong[i].k;
        int replace = !strcmp(k, "v") || !strcmp(k, "op") || !strcmp(k, "id") || !strcmp(k, "fl");
        craft_begin(&c, replace ? 4 : 5);
        if (strcmp(k, "v")) kv_u(&c, "v", 1);
        if (strcmp(k, "op")) kv_u(&c, "op", SHOAL_OP_PING);
        if (strcmp(k, "id")) kv_u(&c, "id", 9);
        if (strcmp(k, "fl")) kv_u(&c, "fl", 0);
        key(&c, k);
        msgpack_packer *p = &c.pk;
        char big[300];
        memset(big, 'x', sizeof big);
        switch (wrong[i].kind) {
        case 0: msgpack_pack_str_with_body(p, "1", 1); break;
        case 1: msgpack_pack_uint64(p, 65536); break;
        case 2: msgpack_pack_double(p, 1.0); break;
        case 3: msgpack_pack_int64(p, -1); break;
        case 4: msgpack_pack_uint64(p, 1ull << 32); break;
        case 5: msgpack_pack_array(p, 3); for (int j = 0; j < 3; j++) msgpack_pack_uint8(p, 1); break;
        case 6: msgpack_pack_array(p, 2); msgpack_pack_uint8(p, 1); msgpack_pack_nil(p); break;
        case 7: msgpack_pack_bin_with_body(p, big, 31); break;
        case 8: msgpack_pack_uint8(p, 3); break;
        case 9: msgpack_pack_double(p, NAN); break;
        case 10: msgpack_pack_float(p, -2.0f); break;
        case 11: msgpack_pack_bin_with_body(p, "abc", 3); break;
        case 12: msgpack_pack_str_with_body(p, "a\0b", 3); break;
        case 13: msgpack_pack_str_with_body(p, big, SHOAL_WIRE_MESSAGE_MAX); break;
        case 14: msgpack_pack_str_with_body(p, "\xe0\x80\x80", 3); break; /* overlong */
        case 15: msgpack_pack_array(p, SHOAL_WIRE_MAX_VALUES + 1);
                 for (int j = 0; j < SHOAL_WIRE_MAX_VALUES + 1; j++) msgpack_pack_bin_with_body(p, "a", 1);
                 break;
        case 16: msgpack_pack_array(p, 1); msgpack_pack_str_with_body(p, "a", 1); break;
        case 17: msgpack_pack_array(p, 0); break;
        case 18: msgpack_pack_array(p, 5);
                 for (int j = 0; j < 5; j++) {
                     msgpack_pack_map(p, 3); key(&c, "c"); msgpack_pack_uint8(p, 0);
                     key(&c, "s"); msgpack_pack_array(p, 1); msgpack_pack_uint8(p, 1);
                     key(&c, "n"); msgpack_pack_uint8(p, 4);
                 }
                 break;
        case 19: /* a tensor without "n" */
                 msgpack_pack_array(p, 1); msgpack_pack_map(p, 2);
                 key(&c, "c"); msgpack_pack_uint8(p, 0);
                 key(&c, "s"); msgpack_pack_array(p, 1); msgpack_pack_uint8(p, 1);
                 break;
        case 20: /* nbytes that does not match the shape */
                 msgpack_pack_array(p, 1); msgpack_pack_map(p, 3);
                 key(&c, "c"); msgpack_pack_uint8(p, 0);
                 key(&c, "s"); msgpack_pack_array(p, 2); msgpack_pack_uint8(p, 2); msgpack_pack_uint8(p, 3);
                 key(&c, "n"); msgpack_pack_uint8(p, 25);
                 break;
        case 21: /* four dims */
                 msgpack_pack_array(p, 1); msgpack_pack_map(p, 3);
                 key(&c, "c"); msgpack_pack_uint8(p, 0);
                 key(&c, "s"); msgpack_pack_array(p, 4); for (int j = 0; j < 4; j++) msgpack_pack_uint8(p, 1);
                 key(&c, "n"); msgpack_pack_uint8(p, 4);
                 break;
        case 22: /* a shape whose product overflows 64 bits */
                 msgpack_pack_array(p, 1); msgpack_pack_map(p, 3);
                 key(&c, "c"); msgpack_pack_uint8(p, 0);
                 key(&c, "s"); msgpack_pack_array(p, 3); for (int j = 0; j < 3; j++) msgpack_pack_uint32(p, UINT32_MAX);
                 key(&c, "n"); msgpack_pack_uint64(p, 0);
                 break;
        case 23: msgpack_pack_int8(p, -3); break;
        case 24: msgpack_pack_true(p); break;
        case 25: /* duplicate key inside a tensor */
                 msgpack_pack_array(p, 1); msgpack_pack_map(p, 4);
                 key(&c, "c"); msgpack_pack_uint8(p, 0);
                 key(&c, "c"); msgpack_pack_uint8(p, 0);
                 key(&c, "s"); msgpack_pack_array(p, 1); msgpack_pack_uint8(p, 1);
                 key(&c, "n"); msgpack_pack_uint8(p, 4);
                 break;
        case 26: msgpack_pack_str_with_body(p, big, SHOAL_WIRE_SOFTWARE_MAX); break;
        case 27: msgpack_pack_nil(p); break;
        case 28: /* alpha NaN */
                 msgpack_pack_array(p, 4); msgpack_pack_uint8(p, 8); msgpack_pack_double(p, NAN);
                 msgpack_pack_uint8(p, 1); msgpack_pack_uint8(p, 0);
                 break;
        case 29: /* rank as a float */
                 msgpack_pack_array(p, 4); msgpack_pack_double(p, 8); msgpack_pack_double(p, 16);
                 msgpack_pack_uint8(p, 1); msgpack_pack_uint8(p, 0);
                 break;
        case 30: /* a negative learning rate */
                 msgpack_pack_array(p, 5); msgpack_pack_double(p, -1e-3);
                 for (int j = 0; j < 4; j++) msgpack_pack_double(p, 0.5);
                 break;
        case 31: /* four values */
                 msgpack_pack_array(p, 4); for (int j = 0; j < 4; j++) msgpack_pack_double(p, 0.5);
                 break;
        }
        int rc = decode_craft(&c, &h);
        CHECK_MSG(rc == SHOAL_ERR_FORMAT, "key %s kind %d: rc %d", k, wrong[i].kind, rc);
        if (!replace || strcmp(k, "id"))
            CHECK_MSG(h.request_id == 9, "key %s kind %d lost the id", k, wrong[i].kind);
        CHECK(h.op == 0 && h.has == 0);
    }

    /* an unknown codec is unsupported, not malformed */
    craft_begin(&c, 5);
    common(&c, 1);
    key(&c, "t");
    msgpack_pack_array(&c.pk, 1); msgpack_pack_map(&c.pk, 3);
    key(&c, "c"); msgpack_pack_uint8(&c.pk, 9);
    key(&c, "s"); msgpack_pack_array(&c.pk, 1); msgpack_pack_uint8(&c.pk, 1);
    key(&c, "n"); msgpack_pack_uint8(&c.pk, 4);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_UNSUPPORTED && h.request_id == 9);
    craft_begin(&c, 5);
    common(&c, 1);
    kv_u(&c, "rc", 4);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_UNSUPPORTED && h.request_id == 9);

    /* unknown keys (of any type, nested) are skipped; unknown tensor keys too */
    craft_begin(&c, 8);
    common(&c, 1);
    key(&c, "future"); msgpack_pack_map(&c.pk, 1); key(&c, "x");
    msgpack_pack_array(&c.pk, 3); msgpack_pack_nil(&c.pk); msgpack_pack_double(&c.pk, 2.5);
    msgpack_pack_ext_with_body(&c.pk, "abcd", 4, 5);
    key(&c, "later"); msgpack_pack_bin_with_body(&c.pk, "zz", 2);
    key(&c, "t");
    msgpack_pack_array(&c.pk, 1); msgpack_pack_map(&c.pk, 4);
    key(&c, "c"); msgpack_pack_uint8(&c.pk, 0);
    key(&c, "q"); msgpack_pack_str_with_body(&c.pk, "new", 3);
    key(&c, "s"); msgpack_pack_array(&c.pk, 1); msgpack_pack_uint8(&c.pk, 1);
    key(&c, "n"); msgpack_pack_uint8(&c.pk, 4);
    key(&c, "zzz"); msgpack_pack_int64(&c.pk, -5);
    CHECK(decode_craft(&c, &h) == SHOAL_OK && h.ntensors == 1 && h.tensors[0].nbytes == 4);

    /* duplicate keys, non-string keys */
    craft_begin(&c, 5);
    common(&c, 1);
    kv_u(&c, "id", 9);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    craft_begin(&c, 6);
    common(&c, 1);
    kv_u(&c, "sid", 1);
    kv_u(&c, "sid", 1);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    craft_begin(&c, 5);
    common(&c, 1);
    msgpack_pack_uint8(&c.pk, 1); msgpack_pack_uint8(&c.pk, 1);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);

    /* contract: request id 0, ERROR as a request or with code 0, missing
     * per-op fields */
    craft_begin(&c, 4);
    kv_u(&c, "v", 1); kv_u(&c, "op", SHOAL_OP_PING); kv_u(&c, "id", 0); kv_u(&c, "fl", 0);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    craft_begin(&c, 4);
    kv_u(&c, "v", 1); kv_u(&c, "op", SHOAL_OP_PING); kv_u(&c, "id", 0); kv_u(&c, "fl", 1);
    CHECK(decode_craft(&c, &h) == SHOAL_OK); /* a reply may carry id 0 */
    craft_begin(&c, 5);
    kv_u(&c, "v", 1); kv_u(&c, "op", SHOAL_OP_ERROR); kv_u(&c, "id", 3); kv_u(&c, "fl", 0);
    kv_u(&c, "err", 3);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    craft_begin(&c, 5);
    kv_u(&c, "v", 1); kv_u(&c, "op", SHOAL_OP_ERROR); kv_u(&c, "id", 3); kv_u(&c, "fl", 1);
    kv_u(&c, "err", 0);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    craft_begin(&c, 5);
    kv_u(&c, "v", 1); kv_u(&c, "op", SHOAL_OP_ERROR); kv_u(&c, "id", 3); kv_u(&c, "fl", 1);
    kv_u(&c, "err", 1000); /* a code from a later version is kept */
    CHECK(decode_craft(&c, &h) == SHOAL_OK && h.error == 1000);
    craft_begin(&c, 6);
    kv_u(&c, "v", 1); kv_u(&c, "op", SHOAL_OP_SESSION_STEP); kv_u(&c, "id", 3); kv_u(&c, "fl", 0);
    kv_u(&c, "sid", 1); kv_u(&c, "step", 1); /* no pos, no tensor */
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT && h.request_id == 3);
    craft_begin(&c, 4);
    kv_u(&c, "v", 1); kv_u(&c, "op", 0); kv_u(&c, "id", 3); kv_u(&c, "fl", 0);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
}

static void test_malicious(void)
{
    /* 5-byte frames declaring 2^32 - 1 entries */
    static const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t arr32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t str32[] = {0xdb, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t bin32[] = {0xc6, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t ext32[] = {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const uint8_t map16[] = {0xde, 0xff, 0xff, 0xa1, 'v', 0x01};
    const struct { const uint8_t *p; size_t n; } tiny[] = {
        {map32, 5}, {arr32, 5}, {str32, 5}, {bin32, 5}, {ext32, 6}, {map16, 6},
    };
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++) {
        CHECK(shoal_wire_msgpack_check(tiny[i].p, tiny[i].n, NULL) == SHOAL_ERR_FORMAT);
        CHECK(decode_bytes(tiny[i].p, tiny[i].n) == SHOAL_ERR_FORMAT);
    }
    /* a nested huge count inside a valid-looking header */
    uint8_t nested[64];
    size_t n = 0;
    nested[n++] = 0x85;
    const uint8_t head[] = {0xa1, 'v', 1, 0xa2, 'o', 'p', 1, 0xa2, 'i', 'd', 9, 0xa2, 'f', 'l', 0};
    memcpy(nested + n, head, sizeof head);
    n += sizeof head;
    nested[n++] = 0xa1; nested[n++] = 'x';
    const uint8_t huge_arr[] = {0xdd, 0x7f, 0xff, 0xff, 0xff, 0x01, 0x02};
    memcpy(nested + n, huge_arr, sizeof huge_arr);
    CHECK(decode_bytes(nested, n + sizeof huge_arr) == SHOAL_ERR_FORMAT);
    /* and the same header with a nil in place of the array is fine */
    nested[n] = 0xc0;
    CHECK(decode_bytes(nested, n + 1) == SHOAL_OK);

    /* simple bad frames */
    static const uint8_t empty[1] = {0};
    static const uint8_t never[] = {0xc1};
    static const uint8_t notmap[] = {0x91, 0x01};
    static const uint8_t emptymap[] = {0x80};
    CHECK(decode_bytes(empty, 0) == SHOAL_ERR_FORMAT);
    CHECK(decode_bytes(NULL, 0) == SHOAL_ERR_FORMAT);
    CHECK(decode_bytes(never, 1) == SHOAL_ERR_FORMAT);
    CHECK(decode_bytes(notmap, 2) == SHOAL_ERR_FORMAT);
    CHECK(decode_bytes(emptymap, 1) == SHOAL_ERR_FORMAT);
    CHECK(shoal_wire_msgpack_check(never, 1, NULL) == SHOAL_ERR_FORMAT);
    CHECK(shoal_wire_msgpack_check(notmap, 2, NULL) == SHOAL_OK);

    /* caller-given limits are honoured */
    shoal_wire_limits lim = shoal_wire_limits_default();
    CHECK(lim.max_bytes == SHOAL_WIRE_HEADER_MAX && lim.max_depth == 8 &&
          lim.max_elems == 2048 && lim.max_str == 4096 && lim.max_bin == 4096);
    {
        static const uint8_t arr[] = {0x92, 0x91, 0xa3, 'a', 'b', 'c', 0xc4, 0x02, 1, 2, 0x01};
        shoal_wire_limits l = lim;
        CHECK(shoal_wire_msgpack_check(arr, sizeof arr, &l) == SHOAL_ERR_FORMAT); /* trailing */
        static const uint8_t ok[] = {0x92, 0x91, 0xa3, 'a', 'b', 'c', 0xc4, 0x02, 1, 2};
        CHECK(shoal_wire_msgpack_check(ok, sizeof ok, &l) == SHOAL_OK);
        l.max_bytes = sizeof ok - 1;
        CHECK(shoal_wire_msgpack_check(ok, sizeof ok, &l) == SHOAL_ERR_FORMAT);
        l = lim; l.max_depth = 1;
        CHECK(shoal_wire_msgpack_check(ok, sizeof ok, &l) == SHOAL_ERR_FORMAT);
        l = lim; l.max_elems = 2;
        CHECK(shoal_wire_msgpack_check(ok, sizeof ok, &l) == SHOAL_ERR_FORMAT);
        l.max_elems = 3;
        CHECK(shoal_wire_msgpack_check(ok, sizeof ok, &l) == SHOAL_OK);
        l = lim; l.max_str = 2;
        CHECK(shoal_wire_msgpack_check(ok, sizeof ok, &l) == SHOAL_ERR_FORMAT);
        l = lim; l.max_bin = 1;
        CHECK(shoal_wire_msgpack_check(ok, sizeof ok, &l) == SHOAL_ERR_FORMAT);
    }

    /* nesting: depth 8 passes the check, depth 9 does not */
    for (int depth = 1; depth <= 10; depth++) {
        craft c;
        craft_begin(&c, 5);
        common(&c, 1);
        key(&c, "deep");
        for (int d = 1; d < depth; d++) /* the header map is level 1 */
            msgpack_pack_array(&c.pk, 1);
        msgpack_pack_nil(&c.pk);
        int want = depth <= (int)lim.max_depth ? SHOAL_OK : SHOAL_ERR_FORMAT;
        CHECK(shoal_wire_msgpack_check((const uint8_t *)c.sb.data, c.sb.size, NULL) == want);
        shoal_wire_header h;
        CHECK_MSG(decode_craft(&c, &h) == want, "depth %d", depth);
    }
    /* empty containers count as levels too */
    {
        craft c;
        craft_begin(&c, 5);
        common(&c, 1);
        key(&c, "deep");
        for (int d = 1; d < 8; d++)
            msgpack_pack_array(&c.pk, 1);
        msgpack_pack_map(&c.pk, 0);
        shoal_wire_header h;
        CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    }
    /* a very deep frame: 60000 nested arrays */
    {
        uint8_t *deep = malloc(60001);
        memset(deep, 0x91, 60000);
        deep[60000] = 0xc0;
        CHECK(decode_bytes(deep, 60001) == SHOAL_ERR_FORMAT);
        free(deep);
    }
    /* strings and bins: 4096 bytes pass the check, 4097 do not */
    for (int extra = 0; extra < 2; extra++) {
        static char big[5000];
        memset(big, 'x', sizeof big);
        for (int kind = 0; kind < 3; kind++) {
            craft c;
            craft_begin(&c, 5);
            common(&c, 1);
            key(&c, "blob");
            size_t len = 4096 + (size_t)extra;
            if (kind == 0)
                msgpack_pack_str_with_body(&c.pk, big, len);
            else if (kind == 1)
                msgpack_pack_bin_with_body(&c.pk, big, len);
            else
                msgpack_pack_ext_with_body(&c.pk, big, len, 1);
            shoal_wire_header h;
            CHECK(decode_craft(&c, &h) == (extra ? SHOAL_ERR_FORMAT : SHOAL_OK));
        }
    }
    /* too many elements in all (each count small), and too many bytes */
    {
        craft c;
        craft_begin(&c, 5);
        common(&c, 1);
        key(&c, "many");
        msgpack_pack_array(&c.pk, 2100);
        for (int i = 0; i < 2100; i++)
            msgpack_pack_nil(&c.pk);
        shoal_wire_header h;
        CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
        craft_begin(&c, 5);
        common(&c, 1);
        key(&c, "many");
        msgpack_pack_array(&c.pk, 20);
        for (int i = 0; i < 20; i++)
            msgpack_pack_bin_with_body(&c.pk, frame, 4000); /* 80 KB in all */
        CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    }
    /* trailing bytes, two objects */
    {
        craft c;
        craft_begin(&c, 4);
        common(&c, 1);
        msgpack_pack_nil(&c.pk);
        shoal_wire_header h;
        CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    }
}

/* Truncations and byte corruptions of the largest header: never a crash;
 * anything that still decodes must re-encode to an equal header. */
static void test_corruption(void)
{
    shoal_wire_header k;
    kitchen_sink(&k);
    size_t len;
    CHECK(shoal_wire_encode(&k, frame, sizeof frame, &len) == SHOAL_OK);
    uint8_t *buf = malloc(len);
    int bad = 0, decoded = 0;
    for (size_t cut = 0; cut < len; cut++) {
        memcpy(buf, frame, cut);
        shoal_wire_header h;
        if (shoal_wire_decode(&h, buf, cut) != SHOAL_ERR_FORMAT)
            bad++;
        if (shoal_wire_msgpack_check(buf, cut, NULL) != SHOAL_ERR_FORMAT)
            bad++;
    }
    CHECK_MSG(bad == 0, "%d truncations not refused", bad);
    static const uint8_t flips[] = {0xff, 0x01, 0x80, 0x10};
    uint8_t re[SHOAL_WIRE_HEADER_MAX];
    bad = 0;
    for (size_t off = 0; off < len; off++) {
        for (size_t f = 0; f < sizeof flips; f++) {
            memcpy(buf, frame, len);
            buf[off] ^= flips[f];
            shoal_wire_header h, h2;
            if (shoal_wire_decode(&h, buf, len) != SHOAL_OK)
                continue;
            decoded++;
            size_t rl;
            if (shoal_wire_encode(&h, re, sizeof re, &rl) != SHOAL_OK ||
                shoal_wire_decode(&h2, re, rl) != SHOAL_OK || !shoal_wire_header_equal(&h, &h2))
                bad++;
        }
    }
    CHECK_MSG(bad == 0, "%d corrupted frames decoded but did not round-trip", bad);
    CHECK(decoded > 0); /* e.g. flipped bits inside the model name */
    free(buf);
}

/* The keys of graceful leave and forwarding: state, ptok, route and the
 * LEAVING flag. */
static void test_leave_push(void)
{
    static const char *a1 = "shoal://127.0.0.1:4001/"
                            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    shoal_wire_header h, back;
    size_t len;
    /* an INFO reply of a leaving node */
    shoal_wire_header_init(&h, SHOAL_OP_INFO, 3);
    h.flags = SHOAL_WIRE_FLAG_REPLY | SHOAL_WIRE_FLAG_LEAVING;
    h.has = SHOAL_WIRE_HAS_MODEL | SHOAL_WIRE_HAS_MODEL_HASH | SHOAL_WIRE_HAS_SPAN |
            SHOAL_WIRE_HAS_STATE;
    h.span_end = 2;
    h.state = SHOAL_WIRE_STATE_OFFLINE;
    CHECK(roundtrip(&h) == SHOAL_OK);
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_OK &&
          shoal_wire_decode(&back, frame, len) == SHOAL_OK &&
          back.state == SHOAL_WIRE_STATE_OFFLINE && (back.flags & SHOAL_WIRE_FLAG_LEAVING));

    /* a step with a two-hop route: addresses point into the frame */
    shoal_wire_header_init(&h, SHOAL_OP_SESSION_STEP, 10);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION |
            SHOAL_WIRE_HAS_ROUTE;
    h.session_id = 1;
    h.step_id = 2;
    shoal_codec_desc d = desc(SHOAL_CODEC_F32, 1, 64);
    shoal_wire_tensor_add(&h, &d);
    h.nroute = 2;
    h.route[0] = (shoal_wire_hop){{(const uint8_t *)a1, (uint32_t)strlen(a1)}, 5, 6};
    h.route[1] = (shoal_wire_hop){{(const uint8_t *)"x", 1}, 7, 0};
    CHECK(roundtrip(&h) == SHOAL_OK);
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_OK &&
          shoal_wire_decode(&back, frame, len) == SHOAL_OK && back.nroute == 2 &&
          back.route[0].addr.len == strlen(a1) &&
          memcmp(back.route[0].addr.ptr, a1, strlen(a1)) == 0 &&
          back.route[0].addr.ptr >= frame && back.route[0].addr.ptr < frame + len &&
          back.route[0].session_id == 5 && back.route[0].token == 6 &&
          back.route[1].session_id == 7);
    /* the route's contract: 1..16 hops, each a non-empty UTF-8 address
     * without NUL, shorter than SHOAL_WIRE_ADDR_MAX; no hops without the bit */
    h.nroute = 0;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.nroute = SHOAL_WIRE_MAX_ROUTE + 1;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.nroute = 1;
    h.route[0].addr.len = 0;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.route[0].addr = (shoal_wire_bytes){(const uint8_t *)"a\0b", 3};
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.route[0].addr = (shoal_wire_bytes){(const uint8_t *)"\xff", 1};
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.route[0].addr = (shoal_wire_bytes){(const uint8_t *)route_addr, SHOAL_WIRE_ADDR_MAX};
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.route[0].addr.len = SHOAL_WIRE_ADDR_MAX - 1;
    CHECK(roundtrip(&h) == SHOAL_OK);
    h.has &= ~(uint32_t)SHOAL_WIRE_HAS_ROUTE;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);

    /* a push needs its token */
    shoal_wire_header_init(&h, SHOAL_OP_SESSION_PUSH, 11);
    h.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION;
    shoal_wire_tensor_add(&h, &d);
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.has |= SHOAL_WIRE_HAS_PUSH_TOKEN;
    h.push_token = 0;
    CHECK(roundtrip(&h) == SHOAL_OK);

    /* crafted routes: a hop that is not a 3-array, an address that is bin,
     * a route of 17 hops */
    craft c;
    for (int k = 0; k < 3; k++) {
        craft_begin(&c, 5);
        common(&c, 1);
        key(&c, "route");
        msgpack_pack_array(&c.pk, k == 2 ? 17 : 1);
        for (int i = 0; i < (k == 2 ? 17 : 1); i++) {
            msgpack_pack_array(&c.pk, k == 0 ? 2 : 3);
            if (k == 1)
                msgpack_pack_bin_with_body(&c.pk, "ab", 2);
            else
                msgpack_pack_str_with_body(&c.pk, "ab", 2);
            msgpack_pack_uint64(&c.pk, 1);
            if (k != 0)
                msgpack_pack_uint64(&c.pk, 2);
        }
        CHECK_MSG(decode_craft(&c, &h) == SHOAL_ERR_FORMAT, "crafted route %d", k);
    }
    craft_begin(&c, 5);
    common(&c, 1);
    key(&c, "route");
    msgpack_pack_array(&c.pk, 1);
    msgpack_pack_array(&c.pk, 3);
    msgpack_pack_str_with_body(&c.pk, "ab", 2);
    msgpack_pack_uint64(&c.pk, 1);
    msgpack_pack_uint64(&c.pk, 2);
    CHECK(decode_craft(&c, &h) == SHOAL_OK && h.nroute == 1 && h.route[0].token == 2);
}

int main(void)
{
    memset(route_addr, 'r', sizeof route_addr - 1);
    test_every_op();
    test_leave_push();
    test_golden();
    test_builders();
    test_decode_types();
    test_malicious();
    test_corruption();
    return check_done();
}
