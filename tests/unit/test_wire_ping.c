/*
 * Padded PINGs (proto/wire.h, docs/WIRE.md "Timing a link"): golden bytes
 * of a padded request, round trips of request and reply, and hostile
 * sizes: a pad asked back larger than the pad sent, not a multiple of 4,
 * over the cap, in a reply, on another op; pad tensors of another codec,
 * shape or count; "pad" of the wrong type, negative, too wide or twice.
 * And the property that makes a padded PING useless for amplification:
 * whatever request decodes, the reply shoal_wire_ping_reply builds never
 * carries more bytes than the request's own pad.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <msgpack.h>

#include "check.h"
#include "kernels/err.h"
#include "proto/wire.h"

static uint8_t frame[SHOAL_WIRE_HEADER_MAX];

static int roundtrip(const shoal_wire_header *h)
{
    size_t len = 0;
    int rc = shoal_wire_encode(h, frame, sizeof frame, &len);
    if (rc)
        return rc;
    shoal_wire_header back;
    if ((rc = shoal_wire_decode(&back, frame, len)))
        return rc;
    return shoal_wire_header_equal(h, &back) ? SHOAL_OK : -1;
}

static void test_golden(void)
{
    shoal_wire_header h;
    CHECK(shoal_wire_ping_init(&h, 0x0102, 16, 8) == SHOAL_OK);
    CHECK(h.op == SHOAL_OP_PING && (h.has & SHOAL_WIRE_HAS_PAD) && h.pad == 8);
    CHECK(h.ntensors == 1 && h.tensors[0].codec == SHOAL_CODEC_F32 && h.tensors[0].ndim == 1 &&
          h.tensors[0].shape[0] == 4 && h.tensors[0].nbytes == 16);
    size_t len;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_OK);
    static const uint8_t golden[] = {
        0x86,                                     /* map of 6 */
        0xa1, 'v', 0x01,                          /* v 1 */
        0xa2, 'o', 'p', 0x01,                     /* op PING */
        0xa2, 'i', 'd', 0xcd, 0x01, 0x02,         /* id 0x0102 */
        0xa2, 'f', 'l', 0x00,                     /* fl 0 */
        0xa3, 'p', 'a', 'd', 0x08,                /* pad 8: bytes asked back */
        0xa1, 't', 0x91,                          /* t: one tensor, the pad */
        0x83, 0xa1, 'c', 0x00, 0xa1, 's', 0x91, 0x04, 0xa1, 'n', 0x10,
    };
    CHECK_MSG(len == sizeof golden && memcmp(frame, golden, len) == 0, "len %zu", len);
    shoal_wire_header back;
    CHECK(shoal_wire_decode(&back, golden, sizeof golden) == SHOAL_OK);
    CHECK(shoal_wire_header_equal(&h, &back));
    size_t lens[1] = {16};
    CHECK(shoal_wire_frames_check(&back, 1, lens) == SHOAL_OK);
    CHECK(shoal_wire_frames_check(&back, 0, NULL) == SHOAL_ERR_FORMAT);

    /* the reply: 8 bytes back, as a 2-value f32 tensor */
    shoal_wire_header r;
    CHECK(shoal_wire_ping_reply(&r, &back) == SHOAL_OK);
    CHECK((r.flags & SHOAL_WIRE_FLAG_REPLY) && r.request_id == 0x0102 && r.op == SHOAL_OP_PING);
    CHECK(!(r.has & SHOAL_WIRE_HAS_PAD) && r.ntensors == 1 && r.tensors[0].nbytes == 8 &&
          r.tensors[0].shape[0] == 2);
    CHECK(roundtrip(&r) == SHOAL_OK);

    /* a plain PING stays what it was: 4 keys, no tensor, plain reply */
    CHECK(shoal_wire_ping_init(&h, 7, 0, 0) == SHOAL_OK);
    CHECK(h.has == 0 && h.ntensors == 0);
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_OK && frame[0] == 0x84);
    CHECK(shoal_wire_ping_reply(&r, &h) == SHOAL_OK && r.ntensors == 0);
    /* a pad sent, none asked back (an upload timing): reply has none */
    CHECK(shoal_wire_ping_init(&h, 7, 1024, 0) == SHOAL_OK);
    CHECK(roundtrip(&h) == SHOAL_OK);
    CHECK(shoal_wire_ping_reply(&r, &h) == SHOAL_OK && r.ntensors == 0);
    /* the largest */
    CHECK(shoal_wire_ping_init(&h, 7, SHOAL_WIRE_PAD_MAX, SHOAL_WIRE_PAD_MAX) == SHOAL_OK);
    CHECK(roundtrip(&h) == SHOAL_OK);
    CHECK(shoal_wire_ping_reply(&r, &h) == SHOAL_OK && r.tensors[0].nbytes == SHOAL_WIRE_PAD_MAX);
    CHECK(roundtrip(&r) == SHOAL_OK);
}

static void test_builders_refuse(void)
{
    shoal_wire_header h, r;
    CHECK(shoal_wire_ping_init(&h, 1, SHOAL_WIRE_PAD_MAX + 4, 0) == SHOAL_ERR_ARG);
    CHECK(shoal_wire_ping_init(&h, 1, 18, 0) == SHOAL_ERR_ARG);   /* not a multiple of 4 */
    CHECK(shoal_wire_ping_init(&h, 1, 16, 20) == SHOAL_ERR_ARG);  /* more back than sent */
    CHECK(shoal_wire_ping_init(&h, 1, 16, 6) == SHOAL_ERR_ARG);
    CHECK(shoal_wire_ping_init(NULL, 1, 16, 16) == SHOAL_ERR_ARG);
    shoal_wire_header_init(&h, SHOAL_OP_INFO, 1);
    CHECK(shoal_wire_ping_reply(&r, &h) == SHOAL_ERR_ARG);       /* not a PING */
    CHECK(shoal_wire_ping_init(&h, 1, 16, 16) == SHOAL_OK);
    h.flags = SHOAL_WIRE_FLAG_REPLY;
    CHECK(shoal_wire_ping_reply(&r, &h) == SHOAL_ERR_ARG);       /* a reply */

    /* the encoder holds the contract too */
    size_t len;
    CHECK(shoal_wire_ping_init(&h, 1, 16, 16) == SHOAL_OK);
    h.pad = 20;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.pad = 2;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    h.pad = 16;
    h.flags = SHOAL_WIRE_FLAG_REPLY;                              /* pad in a reply */
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    shoal_wire_header_init(&h, SHOAL_OP_INFO, 1);                 /* pad on another op */
    h.has = SHOAL_WIRE_HAS_PAD;
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    shoal_wire_header_init(&h, SHOAL_OP_PING, 1);                 /* two tensors */
    shoal_codec_desc d;
    uint32_t s1[1] = {4}, s2[2] = {2, 2};
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F32, 1, s1) == SHOAL_OK);
    shoal_wire_tensor_add(&h, &d);
    shoal_wire_tensor_add(&h, &d);
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
    shoal_wire_header_init(&h, SHOAL_OP_PING, 1);                 /* another shape */
    CHECK(shoal_codec_desc_init(&d, SHOAL_CODEC_F32, 2, s2) == SHOAL_OK);
    shoal_wire_tensor_add(&h, &d);
    CHECK(shoal_wire_encode(&h, frame, sizeof frame, &len) == SHOAL_ERR_ARG);
}

/* ---- crafted frames: what a hostile peer might send ----------------------- */

typedef struct craft {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} craft;

static void key(craft *c, const char *k) { msgpack_pack_str_with_body(&c->pk, k, strlen(k)); }

/* A PING with the common keys (flags fl), then `extra` more keys that the
 * caller packs. */
static void craft_ping(craft *c, uint32_t extra, uint64_t fl)
{
    msgpack_sbuffer_init(&c->sb);
    msgpack_packer_init(&c->pk, &c->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&c->pk, 4 + extra);
    key(c, "v"); msgpack_pack_uint64(&c->pk, 1);
    key(c, "op"); msgpack_pack_uint64(&c->pk, SHOAL_OP_PING);
    key(c, "id"); msgpack_pack_uint64(&c->pk, 9);
    key(c, "fl"); msgpack_pack_uint64(&c->pk, fl);
}

/* "t": one tensor {c: codec, s: [n0 (, n1)], n: nbytes} */
static void pack_tensor(craft *c, uint32_t codec, uint32_t n0, uint32_t n1, uint64_t nbytes)
{
    key(c, "t");
    msgpack_pack_array(&c->pk, 1);
    msgpack_pack_map(&c->pk, 3);
    key(c, "c"); msgpack_pack_uint64(&c->pk, codec);
    key(c, "s");
    msgpack_pack_array(&c->pk, n1 ? 2 : 1);
    msgpack_pack_uint64(&c->pk, n0);
    if (n1)
        msgpack_pack_uint64(&c->pk, n1);
    key(c, "n"); msgpack_pack_uint64(&c->pk, nbytes);
}

static int decode_craft(craft *c, shoal_wire_header *h)
{
    int rc = shoal_wire_decode(h, (const uint8_t *)c->sb.data, c->sb.size);
    msgpack_sbuffer_destroy(&c->sb);
    return rc;
}

/* A PING request with "pad" = pad (packed as an unsigned int) and a flat
 * f32 pad tensor of `sent` bytes (0: none). */
static int decode_pad(uint64_t pad, uint32_t sent, uint64_t fl, shoal_wire_header *h)
{
    craft c;
    craft_ping(&c, sent ? 2 : 1, fl);
    key(&c, "pad");
    msgpack_pack_uint64(&c.pk, pad);
    if (sent)
        pack_tensor(&c, SHOAL_CODEC_F32, sent / 4, 0, sent);
    return decode_craft(&c, h);
}

static void test_hostile(void)
{
    shoal_wire_header h;
    CHECK(decode_pad(64, 64, 0, &h) == SHOAL_OK && h.pad == 64);
    CHECK(decode_pad(0, 0, 0, &h) == SHOAL_OK && h.pad == 0);  /* nothing asked */
    CHECK(decode_pad(4, 0, 0, &h) == SHOAL_ERR_FORMAT);        /* asks back what it never sent */
    CHECK(decode_pad(68, 64, 0, &h) == SHOAL_ERR_FORMAT);      /* more back than sent */
    CHECK(decode_pad(62, 64, 0, &h) == SHOAL_ERR_FORMAT);      /* not a multiple of 4 */
    CHECK(decode_pad(UINT32_MAX, SHOAL_WIRE_PAD_MAX, 0, &h) == SHOAL_ERR_FORMAT);
    CHECK(decode_pad(UINT64_MAX, SHOAL_WIRE_PAD_MAX, 0, &h) == SHOAL_ERR_FORMAT); /* > u32 */
    CHECK(decode_pad(1ull << 32, SHOAL_WIRE_PAD_MAX, 0, &h) == SHOAL_ERR_FORMAT);
    CHECK(decode_pad(SHOAL_WIRE_PAD_MAX, SHOAL_WIRE_PAD_MAX, 0, &h) == SHOAL_OK);
    CHECK(decode_pad(SHOAL_WIRE_PAD_MAX, SHOAL_WIRE_PAD_MAX + 4, 0, &h) == SHOAL_ERR_FORMAT);
    CHECK(decode_pad(4, SHOAL_WIRE_PAD_MAX + 4, 0, &h) == SHOAL_ERR_FORMAT); /* pad too big */
    CHECK(decode_pad(16, 16, SHOAL_WIRE_FLAG_REPLY, &h) == SHOAL_ERR_FORMAT); /* in a reply */
    CHECK(h.request_id == 9);                                  /* still known for the error */

    craft c;
    /* a reply's pad tensor is bounded like a request's */
    craft_ping(&c, 1, SHOAL_WIRE_FLAG_REPLY);
    pack_tensor(&c, SHOAL_CODEC_F32, SHOAL_WIRE_PAD_MAX / 4, 0, SHOAL_WIRE_PAD_MAX);
    CHECK(decode_craft(&c, &h) == SHOAL_OK);
    craft_ping(&c, 1, SHOAL_WIRE_FLAG_REPLY);
    pack_tensor(&c, SHOAL_CODEC_F32, SHOAL_WIRE_PAD_MAX / 4 + 1, 0, SHOAL_WIRE_PAD_MAX + 4);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    /* another codec, another shape */
    craft_ping(&c, 1, 0);
    pack_tensor(&c, SHOAL_CODEC_F16, 8, 0, 16);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    craft_ping(&c, 1, 0);
    pack_tensor(&c, SHOAL_CODEC_F32, 2, 2, 16);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    /* a descriptor whose byte count lies */
    craft_ping(&c, 1, 0);
    pack_tensor(&c, SHOAL_CODEC_F32, 4, 0, 1u << 20);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    /* two pad tensors */
    craft_ping(&c, 1, 0);
    key(&c, "t");
    msgpack_pack_array(&c.pk, 2);
    for (int i = 0; i < 2; i++) {
        msgpack_pack_map(&c.pk, 3);
        key(&c, "c"); msgpack_pack_uint64(&c.pk, SHOAL_CODEC_F32);
        key(&c, "s"); msgpack_pack_array(&c.pk, 1); msgpack_pack_uint64(&c.pk, 4);
        key(&c, "n"); msgpack_pack_uint64(&c.pk, 16);
    }
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    /* "pad" of the wrong type, negative, twice */
    craft_ping(&c, 1, 0);
    key(&c, "pad"); msgpack_pack_str_with_body(&c.pk, "16", 2);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    craft_ping(&c, 1, 0);
    key(&c, "pad"); msgpack_pack_int64(&c.pk, -4);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    craft_ping(&c, 1, 0);
    key(&c, "pad"); msgpack_pack_double(&c.pk, 16.0);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    craft_ping(&c, 3, 0);
    key(&c, "pad"); msgpack_pack_uint64(&c.pk, 4);
    key(&c, "pad"); msgpack_pack_uint64(&c.pk, 4);
    pack_tensor(&c, SHOAL_CODEC_F32, 1, 0, 4);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
    /* on another op */
    msgpack_sbuffer_init(&c.sb);
    msgpack_packer_init(&c.pk, &c.sb, msgpack_sbuffer_write);
    msgpack_pack_map(&c.pk, 5);
    key(&c, "v"); msgpack_pack_uint64(&c.pk, 1);
    key(&c, "op"); msgpack_pack_uint64(&c.pk, SHOAL_OP_SESSION_CLOSE);
    key(&c, "id"); msgpack_pack_uint64(&c.pk, 9);
    key(&c, "fl"); msgpack_pack_uint64(&c.pk, 0);
    key(&c, "sid"); msgpack_pack_uint64(&c.pk, 5);
    CHECK(decode_craft(&c, &h) == SHOAL_OK);
    msgpack_sbuffer_init(&c.sb);
    msgpack_packer_init(&c.pk, &c.sb, msgpack_sbuffer_write);
    msgpack_pack_map(&c.pk, 6);
    key(&c, "v"); msgpack_pack_uint64(&c.pk, 1);
    key(&c, "op"); msgpack_pack_uint64(&c.pk, SHOAL_OP_SESSION_CLOSE);
    key(&c, "id"); msgpack_pack_uint64(&c.pk, 9);
    key(&c, "fl"); msgpack_pack_uint64(&c.pk, 0);
    key(&c, "sid"); msgpack_pack_uint64(&c.pk, 5);
    key(&c, "pad"); msgpack_pack_uint64(&c.pk, 0);
    CHECK(decode_craft(&c, &h) == SHOAL_ERR_FORMAT);
}

/* Whatever PING request decodes, its reply carries at most the bytes its
 * own pad brought, and never more than the cap. */
static void test_no_amplification(void)
{
    static const uint64_t pads[] = {0, 4, 8, 60, 64, 1024, 65536, SHOAL_WIRE_PAD_MAX - 4,
                                    SHOAL_WIRE_PAD_MAX, SHOAL_WIRE_PAD_MAX + 4, UINT32_MAX};
    static const uint32_t sents[] = {0, 4, 64, 1024, 65536, SHOAL_WIRE_PAD_MAX};
    int decoded = 0, bad = 0;
    for (size_t i = 0; i < sizeof pads / sizeof pads[0]; i++) {
        for (size_t j = 0; j < sizeof sents / sizeof sents[0]; j++) {
            shoal_wire_header h, r;
            if (decode_pad(pads[i], sents[j], 0, &h) != SHOAL_OK)
                continue;
            decoded++;
            if (shoal_wire_ping_reply(&r, &h) != SHOAL_OK) {
                bad++;
                continue;
            }
            uint64_t back = r.ntensors ? r.tensors[0].nbytes : 0;
            bad += back > sents[j] || back > SHOAL_WIRE_PAD_MAX || back != pads[i] ||
                   roundtrip(&r) != SHOAL_OK;
        }
    }
    CHECK_MSG(bad == 0, "%d replies out of bounds", bad);
    /* those with pad <= sent, per pad: 6 + 5 + 4 + 4 + 4 + 3 + 2 + 1 + 1 + 0 + 0 */
    CHECK_MSG(decoded == 30, "%d decoded", decoded);
}

int main(void)
{
    test_golden();
    test_builders_refuse();
    test_hostile();
    test_no_amplification();
    return check_done();
}
