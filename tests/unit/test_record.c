/*
 * Signed server records: round trips, golden bytes, every validation rule,
 * hand-made bodies that break the format one way each, and tampering with
 * every byte of a signed record (none may be accepted).
 *
 * Golden values were computed independently in Python: the block key with
 * hashlib.blake2b, the record bytes with a hand-written msgpack encoder and
 * the Ed25519 signature with the `cryptography` package.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <sodium.h>

#include "../check.h"
#include "kernels/err.h"
#include "proto/identity.h"
#include "swarm/record.h"

#define NOW 1700000000000LL /* a fixed "now", Unix ms */

static void unhex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

static void tohex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static shoal_identity *ident(uint8_t fill)
{
    uint8_t seed[32];
    memset(seed, fill, sizeof seed);
    shoal_identity *id = NULL;
    shoal_identity_from_seed(&id, seed);
    return id;
}

/* A valid record of id for block 5 of a 12-block model. */
static void fill(shoal_record *r, const shoal_identity *id)
{
    memset(r, 0, sizeof *r);
    char hex[65];
    shoal_identity_hex(shoal_identity_public_key(id), hex);
    snprintf(r->addr, sizeof r->addr, "shoal://10.0.0.1:4000/%s", hex);
    snprintf(r->model, sizeof r->model, "stories260K");
    for (int i = 0; i < 32; i++)
        r->model_hash[i] = (uint8_t)i;
    r->nblocks = 12;
    r->block = 5;
    r->span_start = 4;
    r->span_end = 8;
    r->state = SHOAL_RECORD_ONLINE;
    r->throughput = 123.5;
    r->free_tokens = 65536;
    r->weight_type = 8;
    snprintf(r->software, sizeof r->software, "shoal 0.1.0");
    r->nadapters = 2;
    snprintf(r->adapters[0], sizeof r->adapters[0], "chat-lora");
    snprintf(r->adapters[1], sizeof r->adapters[1], "code");
    r->seq = 7;
    r->expires_ms = NOW + 5 * 60 * 1000;
}

static int records_equal(const shoal_record *a, const shoal_record *b)
{
    if (a->nadapters != b->nadapters)
        return 0;
    for (uint32_t i = 0; i < a->nadapters; i++)
        if (strcmp(a->adapters[i], b->adapters[i]))
            return 0;
    return !memcmp(a->pubkey, b->pubkey, 32) && !memcmp(a->peer_id, b->peer_id, 32) &&
           !strcmp(a->addr, b->addr) && !strcmp(a->model, b->model) &&
           !memcmp(a->model_hash, b->model_hash, 32) && a->nblocks == b->nblocks &&
           a->block == b->block && a->span_start == b->span_start &&
           a->span_end == b->span_end && a->state == b->state &&
           a->throughput == b->throughput && a->free_tokens == b->free_tokens &&
           a->weight_type == b->weight_type && !strcmp(a->software, b->software) &&
           a->seq == b->seq && a->expires_ms == b->expires_ms && !memcmp(a->sig, b->sig, 64);
}

static void block_key(const shoal_record *r, uint8_t key[32])
{
    shoal_record_block_key(r->model_hash, r->block, key);
}

static void test_block_key(void)
{
    uint8_t h[32], k[32], want[32];
    for (int i = 0; i < 32; i++)
        h[i] = (uint8_t)i;
    shoal_record_block_key(h, 0, k);
    unhex("9ba4cfbcd397430831843821214b071ab337afda90b19c91ccbcebae44607fa5", want, 32);
    CHECK(memcmp(k, want, 32) == 0);
    shoal_record_block_key(h, 7, k);
    unhex("cc8fbcc98613570df9b6f54b96ea8d12650cfb144b5a24a9066d78b59fb10bba", want, 32);
    CHECK(memcmp(k, want, 32) == 0);
    shoal_record_block_key(h, 0x01020304, k);
    unhex("f1567adcad6108a8b38bda5b55e48fd9c194af798a854b272a12424f8ae96e61", want, 32);
    CHECK(memcmp(k, want, 32) == 0);
}

/* Independently computed (see the top of this file). */
static const char golden_hex[] =
    "92c5012dde0010a17601a2706bc4202152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e0698"
    "81db12a461646472d95673686f616c3a2f2f31302e302e302e313a343030302f323135326638643139623739"
    "3164323434353332343265313566326561623663623763666661376236613565643330303937393630653036"
    "3938383164623132a56d6f64656cab73746f726965733236304ba56d68617368c42000010203040506070809"
    "0a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa46e626c6b0ca3626c6b05a47370616e920408a27374"
    "02a474707574cb405ee00000000000a466726565ce00010000a5777479706508a27377ab73686f616c20302e"
    "312e30a361647092a9636861742d6c6f7261a4636f6465a373657107a3657870cf0000018bcfe9fbe0c4409b"
    "88d0b7334b4e6a4a90092942f21a9cdaaebbe223fc949a0b04e9785978eb5038852bc9d8ca5dd5a8ad75d5ce"
    "d75bd4f9efc95d6ae39939918fcbdc5e90fa0e";

static void test_round_trip_and_golden(void)
{
    shoal_identity *id = ident(0x42);
    shoal_record r, back;
    fill(&r, id);
    uint8_t buf[SHOAL_RECORD_MAX], buf2[SHOAL_RECORD_MAX];
    size_t len = 0, len2 = 0;
    CHECK(shoal_record_sign(&r, id, buf, sizeof buf, &len) == SHOAL_OK);
    CHECK(len > 0 && len <= SHOAL_RECORD_MAX);
    CHECK(memcmp(r.pubkey, shoal_identity_public_key(id), 32) == 0);
    CHECK(memcmp(r.peer_id, shoal_identity_peer_id(id), 32) == 0);
    CHECK(shoal_record_decode(&back, buf, len) == SHOAL_OK);
    CHECK(records_equal(&r, &back));
    CHECK(shoal_record_encode(&back, buf2, sizeof buf2, &len2) == SHOAL_OK);
    CHECK(len2 == len && memcmp(buf, buf2, len) == 0);

    char *hex = malloc(2 * len + 1);
    tohex(buf, len, hex);
    CHECK_MSG(strcmp(hex, golden_hex) == 0, "record bytes changed:\n%s", hex);
    free(hex);

    /* validation with its key and time */
    uint8_t key[32];
    block_key(&r, key);
    CHECK(shoal_record_validate(buf, len, key, NOW, SHOAL_RECORD_MAX_AHEAD_MS, &back) == 0);
    shoal_dht_meta m;
    CHECK(shoal_record_dht_validate(NULL, key, buf, len, NOW, &m) == SHOAL_OK);
    CHECK(memcmp(m.owner, r.peer_id, 32) == 0 && m.seq == 7 && m.expires_ms == r.expires_ms);

    /* no adapters, empty model name, float throughput 0, large numbers */
    fill(&r, id);
    r.nadapters = 0;
    r.model[0] = 0;
    r.throughput = 0.0;
    r.free_tokens = UINT64_MAX;
    r.seq = UINT64_MAX;
    r.weight_type = UINT32_MAX;
    r.nblocks = UINT32_MAX;
    r.span_start = UINT32_MAX - 2;
    r.span_end = UINT32_MAX;
    r.block = UINT32_MAX - 1;
    r.expires_ms = INT64_MAX;
    CHECK(shoal_record_sign(&r, id, buf, sizeof buf, &len) == SHOAL_OK);
    CHECK(shoal_record_decode(&back, buf, len) == SHOAL_OK && records_equal(&r, &back));

    /* the largest record fits the cap */
    fill(&r, id);
    memset(r.model, 'm', sizeof r.model - 1);
    r.model[sizeof r.model - 1] = 0;
    memset(r.software, 's', sizeof r.software - 1);
    r.software[sizeof r.software - 1] = 0;
    r.nadapters = SHOAL_RECORD_MAX_ADAPTERS;
    for (int i = 0; i < SHOAL_RECORD_MAX_ADAPTERS; i++) {
        memset(r.adapters[i], 'a' + i, SHOAL_RECORD_ADAPTER_MAX - 1);
        r.adapters[i][SHOAL_RECORD_ADAPTER_MAX - 1] = 0;
    }
    char host[254];
    memset(host, 'h', 63);
    host[63] = '.';
    memset(host + 64, 'h', 63);
    host[127] = '.';
    memset(host + 128, 'h', 63);
    host[191] = '.';
    memset(host + 192, 'h', 61);
    host[253] = 0;
    char pkhex[65];
    shoal_identity_hex(shoal_identity_public_key(id), pkhex);
    snprintf(r.addr, sizeof r.addr, "shoal://%s:65535/%s", host, pkhex);
    CHECK(shoal_record_sign(&r, id, buf, sizeof buf, &len) == SHOAL_OK);
    CHECK(shoal_record_decode(&back, buf, len) == SHOAL_OK && records_equal(&r, &back));
    /* too small a buffer */
    CHECK(shoal_record_sign(&r, id, buf, len - 1, &len2) == SHOAL_ERR_RANGE);
    shoal_identity_destroy(&id);
}

/* ------------------------------------------------------------------ */
/* Hand-made bodies: a test-side encoder with knobs, signed for real, so
 * that only the format rule under test can refuse them.                */

enum {
    V_NONE, V_PK31, V_MHASH33, V_SPAN3, V_ADP9, V_EXP_NEG, V_TPUT_F32, V_MODEL_NUL,
    V_MODEL_LONG, V_BODY_ARRAY, V_ADP_NOT_STR, V_NEG_BLOCK
};

typedef struct knobs {
    int omit;        /* key index to leave out, -1 none */
    int dup;         /* key index to write twice, -1 none */
    int nil;         /* key index whose value becomes nil, -1 none */
    uint32_t version;
    int extra;       /* an unknown key at the end */
    int variant;     /* V_* */
} knobs;

static knobs plain(void)
{
    knobs k = {-1, -1, -1, SHOAL_RECORD_VERSION, 0, V_NONE};
    return k;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void pack_value(msgpack_packer *pk, int key, const shoal_record *r, const knobs *k)
{
    if (key == k->nil) {
        msgpack_pack_nil(pk);
        return;
    }
    switch (key) {
    case 0: msgpack_pack_uint32(pk, k->version); break;
    case 1: msgpack_pack_bin_with_body(pk, r->pubkey, k->variant == V_PK31 ? 31 : 32); break;
    case 2: pk_str(pk, r->addr); break;
    case 3:
        if (k->variant == V_MODEL_NUL)
            msgpack_pack_str_with_body(pk, "a\0b", 3);
        else if (k->variant == V_MODEL_LONG) {
            char m[SHOAL_WIRE_MODEL_MAX];
            memset(m, 'x', sizeof m);
            msgpack_pack_str_with_body(pk, m, sizeof m);
        } else
            pk_str(pk, r->model);
        break;
    case 4: {
        uint8_t h[33] = {0};
        memcpy(h, r->model_hash, 32);
        msgpack_pack_bin_with_body(pk, h, k->variant == V_MHASH33 ? 33 : 32);
        break;
    }
    case 5: msgpack_pack_uint32(pk, r->nblocks); break;
    case 6:
        if (k->variant == V_NEG_BLOCK)
            msgpack_pack_int32(pk, -1);
        else
            msgpack_pack_uint32(pk, r->block);
        break;
    case 7:
        msgpack_pack_array(pk, k->variant == V_SPAN3 ? 3 : 2);
        msgpack_pack_uint32(pk, r->span_start);
        msgpack_pack_uint32(pk, r->span_end);
        if (k->variant == V_SPAN3)
            msgpack_pack_uint32(pk, r->span_end);
        break;
    case 8: msgpack_pack_uint32(pk, r->state); break;
    case 9:
        if (k->variant == V_TPUT_F32)
            msgpack_pack_float(pk, (float)r->throughput);
        else
            msgpack_pack_double(pk, r->throughput);
        break;
    case 10: msgpack_pack_uint64(pk, r->free_tokens); break;
    case 11: msgpack_pack_uint32(pk, r->weight_type); break;
    case 12: pk_str(pk, r->software); break;
    case 13: {
        uint32_t n = k->variant == V_ADP9 ? 9 : r->nadapters;
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++) {
            if (k->variant == V_ADP_NOT_STR)
                msgpack_pack_uint32(pk, i);
            else
                pk_str(pk, i < r->nadapters ? r->adapters[i] : "more");
        }
        break;
    }
    case 14: msgpack_pack_uint64(pk, r->seq); break;
    case 15:
        if (k->variant == V_EXP_NEG)
            msgpack_pack_int64(pk, -5);
        else
            msgpack_pack_uint64(pk, (uint64_t)r->expires_ms);
        break;
    }
}

static const char *const names[16] = {"v", "pk", "addr", "model", "mhash", "nblk", "blk", "span",
                                      "st", "tput", "free", "wtype", "sw", "adp", "seq", "exp"};

/* Body of r with knobs, signed by id over the domain (domain 0: without
 * it), wrapped as a record into out. Returns the length. */
static size_t craft(const shoal_record *r, const knobs *k, const shoal_identity *id, int domain,
                    uint8_t *out, size_t cap)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    uint32_t n = 16 - (k->omit >= 0) + (k->dup >= 0) + (k->extra != 0);
    if (k->variant == V_BODY_ARRAY)
        msgpack_pack_array(&pk, 2 * n);
    else
        msgpack_pack_map(&pk, n);
    for (int key = 0; key < 16; key++) {
        if (key == k->omit)
            continue;
        for (int t = 0; t < (key == k->dup ? 2 : 1); t++) {
            pk_str(&pk, names[key]);
            pack_value(&pk, key, r, k);
        }
    }
    if (k->extra) {
        pk_str(&pk, "zz-future");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint32(&pk, 1);
        msgpack_pack_map(&pk, 1);
        pk_str(&pk, "x");
        msgpack_pack_bin_with_body(&pk, "yz", 2);
    }
    uint8_t *msg = malloc(sb.size + 32);
    size_t ml = 0;
    if (domain) {
        memcpy(msg, "shoal-record-v1", 15);
        ml = 15;
    }
    memcpy(msg + ml, sb.data, sb.size);
    uint8_t sig[64];
    shoal_identity_sign(id, msg, ml + sb.size, sig);
    free(msg);
    msgpack_sbuffer out_sb;
    msgpack_sbuffer_init(&out_sb);
    msgpack_packer op;
    msgpack_packer_init(&op, &out_sb, msgpack_sbuffer_write);
    msgpack_pack_array(&op, 2);
    msgpack_pack_bin_with_body(&op, sb.data, sb.size);
    msgpack_pack_bin_with_body(&op, sig, 64);
    size_t len = out_sb.size <= cap ? out_sb.size : 0;
    if (len)
        memcpy(out, out_sb.data, len);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&out_sb);
    return len;
}

static int decode_rc(const uint8_t *b, size_t n)
{
    shoal_record r;
    return shoal_record_decode(&r, b, n);
}

static void test_crafted(void)
{
    shoal_identity *id = ident(3), *other = ident(4);
    shoal_record r;
    fill(&r, id);
    memcpy(r.pubkey, shoal_identity_public_key(id), 32);
    uint8_t buf[4096];
    size_t n;
    knobs k = plain();

    /* the test encoder agrees with the real one */
    n = craft(&r, &k, id, 1, buf, sizeof buf);
    CHECK(n > 0 && decode_rc(buf, n) == SHOAL_OK);
    uint8_t real[SHOAL_RECORD_MAX];
    size_t rl;
    shoal_record copy = r;
    CHECK(shoal_record_sign(&copy, id, real, sizeof real, &rl) == SHOAL_OK);
    CHECK(rl == n && memcmp(real, buf, n) == 0);

    /* signed without the domain, or by someone else */
    CHECK(decode_rc(buf, craft(&r, &k, id, 0, buf, sizeof buf)) == SHOAL_ERR_AUTH);
    CHECK(decode_rc(buf, craft(&r, &k, other, 1, buf, sizeof buf)) == SHOAL_ERR_AUTH);
    /* someone else's key and address, signed by id */
    shoal_record r2;
    fill(&r2, other);
    memcpy(r2.pubkey, shoal_identity_public_key(other), 32);
    CHECK(decode_rc(buf, craft(&r2, &k, id, 1, buf, sizeof buf)) == SHOAL_ERR_AUTH);

    /* every key is required, none may repeat, none may be nil */
    for (int key = 0; key < 16; key++) {
        k = plain();
        k.omit = key;
        CHECK_MSG(decode_rc(buf, craft(&r, &k, id, 1, buf, sizeof buf)) == SHOAL_ERR_FORMAT,
                  "omit %s", names[key]);
        k = plain();
        k.dup = key;
        CHECK_MSG(decode_rc(buf, craft(&r, &k, id, 1, buf, sizeof buf)) == SHOAL_ERR_FORMAT,
                  "dup %s", names[key]);
        k = plain();
        k.nil = key;
        CHECK_MSG(decode_rc(buf, craft(&r, &k, id, 1, buf, sizeof buf)) == SHOAL_ERR_FORMAT,
                  "nil %s", names[key]);
    }
    /* unknown keys are skipped (and signed) */
    k = plain();
    k.extra = 1;
    CHECK(decode_rc(buf, craft(&r, &k, id, 1, buf, sizeof buf)) == SHOAL_OK);
    /* another record version */
    k = plain();
    k.version = 2;
    CHECK(decode_rc(buf, craft(&r, &k, id, 1, buf, sizeof buf)) == SHOAL_ERR_UNSUPPORTED);
    /* float32 throughput is a float */
    k = plain();
    k.variant = V_TPUT_F32;
    CHECK(decode_rc(buf, craft(&r, &k, id, 1, buf, sizeof buf)) == SHOAL_OK);
    static const int bad_variants[] = {V_PK31, V_MHASH33, V_SPAN3, V_ADP9, V_EXP_NEG,
                                       V_MODEL_NUL, V_MODEL_LONG, V_BODY_ARRAY, V_ADP_NOT_STR,
                                       V_NEG_BLOCK};
    for (size_t i = 0; i < sizeof bad_variants / sizeof bad_variants[0]; i++) {
        k = plain();
        k.variant = bad_variants[i];
        CHECK_MSG(decode_rc(buf, craft(&r, &k, id, 1, buf, sizeof buf)) == SHOAL_ERR_FORMAT,
                  "variant %d", bad_variants[i]);
    }

    /* outer shapes */
    k = plain();
    n = craft(&r, &k, id, 1, buf, sizeof buf);
    buf[n] = 0xc0; /* trailing byte */
    CHECK(decode_rc(buf, n + 1) == SHOAL_ERR_FORMAT);
    uint8_t t[SHOAL_RECORD_MAX + 8];
    memcpy(t, buf, n);
    t[0] = 0x93; /* three elements, third missing */
    CHECK(decode_rc(t, n) == SHOAL_ERR_FORMAT);
    t[n] = 0xc0;
    CHECK(decode_rc(t, n + 1) == SHOAL_ERR_FORMAT);
    memcpy(t, buf, n);
    t[n - 65] = 63; /* signature bin of 63 bytes (one byte left over) */
    CHECK(decode_rc(t, n) == SHOAL_ERR_FORMAT);
    CHECK(decode_rc(buf, 0) == SHOAL_ERR_FORMAT);
    CHECK(decode_rc(NULL, 10) == SHOAL_ERR_FORMAT);
    /* over the size cap, whatever it holds */
    uint8_t big[SHOAL_RECORD_MAX + 1];
    memset(big, 0xc0, sizeof big);
    CHECK(decode_rc(big, sizeof big) == SHOAL_ERR_FORMAT);

    shoal_identity_destroy(&id);
    shoal_identity_destroy(&other);
}

/* Each broken field: sign refuses it (ARG); signed anyway by the test
 * encoder, decode refuses it (FORMAT). */
static void test_field_rules(void)
{
    shoal_identity *id = ident(5), *other = ident(6);
    char opk[65], ipk[65];
    shoal_identity_hex(shoal_identity_public_key(other), opk);
    shoal_identity_hex(shoal_identity_public_key(id), ipk);
    const int nrules = 21;
    for (int rule = 0; rule < nrules; rule++) {
        shoal_record r;
        fill(&r, id);
        switch (rule) {
        case 0: snprintf(r.addr, sizeof r.addr, "shoal://10.0.0.1:4000/%s", opk); break;
        case 1: snprintf(r.addr, sizeof r.addr, "shoal://bad"); break;
        case 2: snprintf(r.addr, sizeof r.addr, "shoal://[0::1]:4000/%s", ipk); break;
        case 3: r.nblocks = 0; r.span_start = 0; r.span_end = 0; r.block = 0; break;
        case 4: r.span_start = r.span_end = 5; break;
        case 5: r.span_end = 13; break;
        case 6: r.block = 3; break;
        case 7: r.block = 8; break;
        case 8: r.state = 0; break;
        case 9: r.state = 4; break;
        case 10: r.throughput = NAN; break;
        case 11: r.throughput = INFINITY; break;
        case 12: r.throughput = -1.0; break;
        case 13: r.adapters[1][0] = 0; break;
        case 14: r.model[0] = (char)0xff; break;
        case 15: r.software[2] = (char)0xc3; r.software[3] = 0x28; break; /* bad continuation */
        case 16: r.adapters[0][0] = (char)0xed; r.adapters[0][1] = (char)0xa0;
                 r.adapters[0][2] = (char)0x80; break; /* a surrogate */
        case 17: r.expires_ms = -1; break;
        case 18: r.nadapters = SHOAL_RECORD_MAX_ADAPTERS + 1; break;
        case 19: snprintf(r.addr, sizeof r.addr, "shoal://10.0.0.1:4000/%s ", ipk); break;
        case 20: r.span_start = 9; r.span_end = 8; r.block = 8; break;
        }
        uint8_t buf[4096];
        size_t len;
        shoal_record s = r;
        CHECK_MSG(shoal_record_sign(&s, id, buf, sizeof buf, &len) == SHOAL_ERR_ARG, "rule %d", rule);
        CHECK(len == 0);
        if (rule == 17 || rule == 18)
            continue; /* not representable on the wire: covered by V_EXP_NEG, V_ADP9 */
        memcpy(r.pubkey, shoal_identity_public_key(id), 32);
        knobs k = plain();
        size_t n = craft(&r, &k, id, 1, buf, sizeof buf);
        CHECK_MSG(n > 0 && decode_rc(buf, n) == SHOAL_ERR_FORMAT, "rule %d decodes", rule);
    }
    shoal_identity_destroy(&id);
    shoal_identity_destroy(&other);
}

static void test_check_rules(void)
{
    shoal_identity *id = ident(7);
    shoal_record r, d;
    fill(&r, id);
    uint8_t buf[SHOAL_RECORD_MAX], key[32], k2[32];
    size_t len;
    CHECK(shoal_record_sign(&r, id, buf, sizeof buf, &len) == SHOAL_OK);
    CHECK(shoal_record_decode(&d, buf, len) == SHOAL_OK);
    block_key(&r, key);
    const int64_t ahead = SHOAL_RECORD_MAX_AHEAD_MS;
    CHECK(shoal_record_check(&d, key, NOW, ahead) == SHOAL_OK);
    /* the key of another block of the span, of another model */
    shoal_record_block_key(r.model_hash, 6, k2);
    CHECK(shoal_record_check(&d, k2, NOW, ahead) == SHOAL_ERR_FORMAT);
    uint8_t h2[32];
    memcpy(h2, r.model_hash, 32);
    h2[31] ^= 1;
    shoal_record_block_key(h2, 5, k2);
    CHECK(shoal_record_check(&d, k2, NOW, ahead) == SHOAL_ERR_FORMAT);
    /* expiry: past, now, just ahead, at the limit, beyond it */
    CHECK(shoal_record_check(&d, key, d.expires_ms + 1, ahead) == SHOAL_ERR_RANGE);
    CHECK(shoal_record_check(&d, key, d.expires_ms, ahead) == SHOAL_ERR_RANGE);
    CHECK(shoal_record_check(&d, key, d.expires_ms - 1, ahead) == SHOAL_OK);
    CHECK(shoal_record_check(&d, key, d.expires_ms - ahead, ahead) == SHOAL_OK);
    CHECK(shoal_record_check(&d, key, d.expires_ms - ahead - 1, ahead) == SHOAL_ERR_RANGE);
    CHECK(shoal_record_check(&d, key, INT64_MIN, ahead) == SHOAL_ERR_RANGE);
    /* validate = decode + check, and the DHT validator with its own limit */
    CHECK(shoal_record_validate(buf, len, key, NOW, ahead, NULL) == SHOAL_OK);
    CHECK(shoal_record_validate(buf, len, k2, NOW, ahead, &d) == SHOAL_ERR_FORMAT);
    shoal_dht_meta m;
    int64_t short_ahead = 60 * 1000;
    CHECK(shoal_record_dht_validate(&short_ahead, key, buf, len, NOW, &m) == SHOAL_ERR_RANGE);
    CHECK(shoal_record_dht_validate(NULL, key, buf, len, NOW, &m) == SHOAL_OK);
    CHECK(shoal_record_dht_validate(NULL, key, buf, len, r.expires_ms, &m) == SHOAL_ERR_RANGE);
    /* state names */
    CHECK(strcmp(shoal_record_state_name(SHOAL_RECORD_OFFLINE), "offline") == 0);
    CHECK(shoal_record_state_name(0) == NULL);
    shoal_identity_destroy(&id);
}

/* Flip bits in every byte, cut at every length, and scramble at random:
 * no mutated record may decode. */
static void test_tamper(void)
{
    shoal_identity *id = ident(8);
    shoal_record r;
    fill(&r, id);
    uint8_t buf[SHOAL_RECORD_MAX], t[SHOAL_RECORD_MAX];
    size_t len;
    CHECK(shoal_record_sign(&r, id, buf, sizeof buf, &len) == SHOAL_OK);
    static const uint8_t masks[] = {0x01, 0x02, 0x10, 0x80, 0xff};
    int tried = 0, accepted = 0;
    for (size_t i = 0; i < len; i++)
        for (size_t m = 0; m < sizeof masks; m++) {
            memcpy(t, buf, len);
            t[i] ^= masks[m];
            tried++;
            if (decode_rc(t, len) == SHOAL_OK) {
                accepted++;
                fprintf(stderr, "accepted: byte %zu ^ %02x\n", i, masks[m]);
            }
        }
    for (size_t n = 0; n < len; n++) {
        tried++;
        accepted += decode_rc(buf, n) == SHOAL_OK;
    }
    uint64_t x = 12345;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(t, buf, len);
        int flips = 1 + iter % 6;
        for (int f = 0; f < flips; f++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(x >> 33) % len;
            uint8_t v = (uint8_t)(x >> 13);
            if (v == t[pos])
                v ^= 0x5a;
            t[pos] = v;
        }
        tried++;
        accepted += decode_rc(t, len) == SHOAL_OK;
    }
    CHECK(tried >= 1000);
    CHECK_MSG(accepted == 0, "%d of %d mutated records accepted", accepted, tried);
    printf("tamper: %d mutated records, %d accepted\n", tried, accepted);
    shoal_identity_destroy(&id);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    test_block_key();
    test_round_trip_and_golden();
    test_crafted();
    test_field_rules();
    test_check_rules();
    test_tamper();
    return check_done();
}
