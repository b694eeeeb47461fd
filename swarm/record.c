/*
 * Signed server records (see record.h). Encoding packs with msgpack-c into
 * a fixed buffer; decoding checks each level with shoal_wire_msgpack_check()
 * and reads it with the cursor below, which re-checks every bound itself.
 * Field rules live in one function (fields_check) used by both directions,
 * so whatever encodes also decodes and nothing else does.
 */
#include "swarm/record.h"

#include <math.h>
#include <string.h>

#include <msgpack.h>
#include <sodium.h>

#include "kernels/err.h"
#include "proto/mpread.h"

static const char sign_domain[] = "shoal-record-v1";
#define SIGN_DOMAIN_LEN (sizeof sign_domain - 1)
static const char key_domain[] = "shoal-block";
#define KEY_DOMAIN_LEN (sizeof key_domain - 1)

void shoal_record_block_key(const uint8_t model_hash[32], uint32_t block, uint8_t key[32])
{
    uint8_t msg[KEY_DOMAIN_LEN + 32 + 4];
    memcpy(msg, key_domain, KEY_DOMAIN_LEN);
    memcpy(msg + KEY_DOMAIN_LEN, model_hash, 32);
    msg[KEY_DOMAIN_LEN + 32] = (uint8_t)(block >> 24);
    msg[KEY_DOMAIN_LEN + 33] = (uint8_t)(block >> 16);
    msg[KEY_DOMAIN_LEN + 34] = (uint8_t)(block >> 8);
    msg[KEY_DOMAIN_LEN + 35] = (uint8_t)block;
    crypto_generichash(key, 32, msg, sizeof msg, NULL, 0);
}

const char *shoal_record_state_name(uint32_t state)
{
    switch (state) {
    case SHOAL_RECORD_JOINING: return "joining";
    case SHOAL_RECORD_ONLINE: return "online";
    case SHOAL_RECORD_OFFLINE: return "offline";
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Field rules                                                         */

/* A NUL-terminated field of `size` bytes holds valid text. */
static int text_ok(const char *field, size_t size)
{
    size_t n = strnlen(field, size);
    return n < size && shoal_mpr_utf8_valid((const uint8_t *)field, n);
}

/* Every rule on r's fields except the signature. 0 or SHOAL_ERR_FORMAT. */
static int fields_check(const shoal_record *r)
{
    if (!text_ok(r->addr, sizeof r->addr) || !text_ok(r->model, sizeof r->model) ||
        !text_ok(r->software, sizeof r->software))
        return SHOAL_ERR_FORMAT;
    shoal_addr a;
    char canon[SHOAL_ADDR_MAX];
    if (shoal_addr_parse(&a, r->addr) != SHOAL_OK ||
        shoal_addr_format(&a, canon, sizeof canon) != SHOAL_OK ||
        strcmp(canon, r->addr) != 0 || memcmp(a.pubkey, r->pubkey, 32) != 0)
        return SHOAL_ERR_FORMAT;
    if (r->nblocks == 0 || r->span_start >= r->span_end || r->span_end > r->nblocks ||
        r->block < r->span_start || r->block >= r->span_end)
        return SHOAL_ERR_FORMAT;
    if (!shoal_record_state_name(r->state))
        return SHOAL_ERR_FORMAT;
    if (!isfinite(r->throughput) || !(r->throughput >= 0.0))
        return SHOAL_ERR_FORMAT;
    if (r->nadapters > SHOAL_RECORD_MAX_ADAPTERS)
        return SHOAL_ERR_FORMAT;
    for (uint32_t i = 0; i < r->nadapters; i++)
        if (!text_ok(r->adapters[i], sizeof r->adapters[i]) || r->adapters[i][0] == 0)
            return SHOAL_ERR_FORMAT;
    if (r->expires_ms < 0)
        return SHOAL_ERR_FORMAT;
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

#define PK(call)         \
    do {                 \
        if ((call) != 0) \
            goto full;   \
    } while (0)

static int pack_key(msgpack_packer *pk, const char *k)
{
    return msgpack_pack_str_with_body(pk, k, strlen(k));
}

static int pack_str(msgpack_packer *pk, const char *s)
{
    return msgpack_pack_str_with_body(pk, s, strlen(s));
}

#define BODY_KEYS 16

/* The body map of r into out[0..cap). */
static int body_encode(const shoal_record *r, uint8_t *out, size_t cap, size_t *len)
{
    fixbuf fb = {out, cap, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &fb, fixbuf_write);
    PK(msgpack_pack_map(&pk, BODY_KEYS));
    PK(pack_key(&pk, "v"));
    PK(msgpack_pack_uint32(&pk, SHOAL_RECORD_VERSION));
    PK(pack_key(&pk, "pk"));
    PK(msgpack_pack_bin_with_body(&pk, r->pubkey, 32));
    PK(pack_key(&pk, "addr"));
    PK(pack_str(&pk, r->addr));
    PK(pack_key(&pk, "model"));
    PK(pack_str(&pk, r->model));
    PK(pack_key(&pk, "mhash"));
    PK(msgpack_pack_bin_with_body(&pk, r->model_hash, 32));
    PK(pack_key(&pk, "nblk"));
    PK(msgpack_pack_uint32(&pk, r->nblocks));
    PK(pack_key(&pk, "blk"));
    PK(msgpack_pack_uint32(&pk, r->block));
    PK(pack_key(&pk, "span"));
    PK(msgpack_pack_array(&pk, 2));
    PK(msgpack_pack_uint32(&pk, r->span_start));
    PK(msgpack_pack_uint32(&pk, r->span_end));
    PK(pack_key(&pk, "st"));
    PK(msgpack_pack_uint32(&pk, r->state));
    PK(pack_key(&pk, "tput"));
    PK(msgpack_pack_double(&pk, r->throughput));
    PK(pack_key(&pk, "free"));
    PK(msgpack_pack_uint64(&pk, r->free_tokens));
    PK(pack_key(&pk, "wtype"));
    PK(msgpack_pack_uint32(&pk, r->weight_type));
    PK(pack_key(&pk, "sw"));
    PK(pack_str(&pk, r->software));
    PK(pack_key(&pk, "adp"));
    PK(msgpack_pack_array(&pk, r->nadapters));
    for (uint32_t i = 0; i < r->nadapters; i++)
        PK(pack_str(&pk, r->adapters[i]));
    PK(pack_key(&pk, "seq"));
    PK(msgpack_pack_uint64(&pk, r->seq));
    PK(pack_key(&pk, "exp"));
    PK(msgpack_pack_uint64(&pk, (uint64_t)r->expires_ms));
    *len = fb.len;
    return SHOAL_OK;
full:
    return SHOAL_ERR_RANGE;
}

/* [body, sig] into out. */
static int outer_encode(const uint8_t *body, size_t blen, const uint8_t sig[64], uint8_t *out,
                        size_t cap, size_t *len)
{
    fixbuf fb = {out, cap < SHOAL_RECORD_MAX ? cap : SHOAL_RECORD_MAX, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &fb, fixbuf_write);
    PK(msgpack_pack_array(&pk, 2));
    PK(msgpack_pack_bin_with_body(&pk, body, blen));
    PK(msgpack_pack_bin_with_body(&pk, sig, 64));
    *len = fb.len;
    return SHOAL_OK;
full:
    return SHOAL_ERR_RANGE;
}

int shoal_record_encode(const shoal_record *r, uint8_t *out, size_t cap, size_t *len)
{
    if (!r || !out || !len)
        return SHOAL_ERR_ARG;
    *len = 0;
    if (fields_check(r) != SHOAL_OK)
        return SHOAL_ERR_ARG;
    uint8_t body[SHOAL_RECORD_MAX];
    size_t blen;
    int rc = body_encode(r, body, sizeof body, &blen);
    if (rc)
        return rc;
    return outer_encode(body, blen, r->sig, out, cap, len);
}

int shoal_record_sign(shoal_record *r, const shoal_identity *id, uint8_t *out, size_t cap,
                      size_t *len)
{
    if (!r || !id || !out || !len)
        return SHOAL_ERR_ARG;
    *len = 0;
    memcpy(r->pubkey, shoal_identity_public_key(id), 32);
    memcpy(r->peer_id, shoal_identity_peer_id(id), 32);
    if (fields_check(r) != SHOAL_OK)
        return SHOAL_ERR_ARG;
    uint8_t msg[SIGN_DOMAIN_LEN + SHOAL_RECORD_MAX];
    size_t blen;
    int rc = body_encode(r, msg + SIGN_DOMAIN_LEN, SHOAL_RECORD_MAX, &blen);
    if (rc)
        return rc;
    memcpy(msg, sign_domain, SIGN_DOMAIN_LEN);
    rc = shoal_identity_sign(id, msg, SIGN_DOMAIN_LEN + blen, r->sig);
    if (rc)
        return rc;
    return outer_encode(msg + SIGN_DOMAIN_LEN, blen, r->sig, out, cap, len);
}

/* ------------------------------------------------------------------ */
/* Decoding                                                            */

enum {
    K_V, K_PK, K_ADDR, K_MODEL, K_MHASH, K_NBLK, K_BLK, K_SPAN, K_ST, K_TPUT,
    K_FREE, K_WTYPE, K_SW, K_ADP, K_SEQ, K_EXP, K__COUNT
};
_Static_assert(K__COUNT == BODY_KEYS, "the encoder writes every key");

static const char *const key_names[K__COUNT] = {
    [K_V] = "v", [K_PK] = "pk", [K_ADDR] = "addr", [K_MODEL] = "model",
    [K_MHASH] = "mhash", [K_NBLK] = "nblk", [K_BLK] = "blk", [K_SPAN] = "span",
    [K_ST] = "st", [K_TPUT] = "tput", [K_FREE] = "free", [K_WTYPE] = "wtype",
    [K_SW] = "sw", [K_ADP] = "adp", [K_SEQ] = "seq", [K_EXP] = "exp",
};

static int key_lookup(const uint8_t *k, uint32_t n)
{
    for (int i = 0; i < K__COUNT; i++)
        if (strlen(key_names[i]) == n && memcmp(key_names[i], k, n) == 0)
            return i;
    return -1;
}

static int rd_field(shoal_mpr *r, int key, shoal_record *rec)
{
    uint64_t u;
    uint32_t n;
    switch (key) {
    case K_V:
        if (shoal_mpr_u32(r, &n))
            return SHOAL_ERR_FORMAT;
        return n == SHOAL_RECORD_VERSION ? SHOAL_OK : SHOAL_ERR_UNSUPPORTED;
    case K_PK: return shoal_mpr_bin_exact(r, rec->pubkey, 32);
    case K_ADDR: return shoal_mpr_text(r, rec->addr, sizeof rec->addr);
    case K_MODEL: return shoal_mpr_text(r, rec->model, sizeof rec->model);
    case K_MHASH: return shoal_mpr_bin_exact(r, rec->model_hash, 32);
    case K_NBLK: return shoal_mpr_u32(r, &rec->nblocks);
    case K_BLK: return shoal_mpr_u32(r, &rec->block);
    case K_SPAN:
        if (shoal_mpr_count(r, 0, &n) || n != 2)
            return SHOAL_ERR_FORMAT;
        return shoal_mpr_u32(r, &rec->span_start) || shoal_mpr_u32(r, &rec->span_end) ? SHOAL_ERR_FORMAT
                                                                         : SHOAL_OK;
    case K_ST: return shoal_mpr_u32(r, &rec->state);
    case K_TPUT: return shoal_mpr_double(r, &rec->throughput);
    case K_FREE: return shoal_mpr_uint(r, UINT64_MAX, &rec->free_tokens);
    case K_WTYPE: return shoal_mpr_u32(r, &rec->weight_type);
    case K_SW: return shoal_mpr_text(r, rec->software, sizeof rec->software);
    case K_ADP:
        if (shoal_mpr_count(r, 0, &n) || n > SHOAL_RECORD_MAX_ADAPTERS)
            return SHOAL_ERR_FORMAT;
        for (uint32_t i = 0; i < n; i++)
            if (shoal_mpr_text(r, rec->adapters[i], sizeof rec->adapters[i]))
                return SHOAL_ERR_FORMAT;
        rec->nadapters = n;
        return SHOAL_OK;
    case K_SEQ: return shoal_mpr_uint(r, UINT64_MAX, &rec->seq);
    case K_EXP:
        if (shoal_mpr_uint(r, INT64_MAX, &u))
            return SHOAL_ERR_FORMAT;
        rec->expires_ms = (int64_t)u;
        return SHOAL_OK;
    }
    return SHOAL_ERR_FORMAT;
}

static int body_decode(shoal_record *rec, const uint8_t *body, size_t blen)
{
    shoal_wire_limits lim = {
        .max_bytes = SHOAL_RECORD_MAX, .max_depth = 4, .max_elems = 256,
        .max_str = SHOAL_RECORD_MAX, .max_bin = SHOAL_RECORD_MAX,
    };
    if (shoal_wire_msgpack_check(body, blen, &lim) != SHOAL_OK)
        return SHOAL_ERR_FORMAT;
    shoal_mpr r = {body, blen, 0};
    uint32_t n;
    if (shoal_mpr_count(&r, 1, &n))
        return SHOAL_ERR_FORMAT;
    uint32_t seen = 0;
    int unsupported = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        uint32_t kn;
        if (shoal_mpr_raw(&r, 0, &k, &kn))
            return SHOAL_ERR_FORMAT;
        int key = key_lookup(k, kn);
        if (key < 0) {
            if (shoal_mpr_skip(&r))
                return SHOAL_ERR_FORMAT;
            continue;
        }
        if (seen & (1u << key))
            return SHOAL_ERR_FORMAT;
        seen |= 1u << key;
        int rc = rd_field(&r, key, rec);
        if (rc == SHOAL_ERR_UNSUPPORTED)
            unsupported = 1; /* reported once the bytes are known to be well formed */
        else if (rc)
            return SHOAL_ERR_FORMAT;
    }
    if (r.off != blen)
        return SHOAL_ERR_FORMAT;
    if (unsupported)
        return SHOAL_ERR_UNSUPPORTED;
    if (seen != (1u << K__COUNT) - 1)
        return SHOAL_ERR_FORMAT;
    return fields_check(rec);
}

int shoal_record_decode(shoal_record *rec, const uint8_t *buf, size_t len)
{
    if (!rec)
        return SHOAL_ERR_ARG;
    memset(rec, 0, sizeof *rec);
    if (!buf || len == 0 || len > SHOAL_RECORD_MAX)
        return SHOAL_ERR_FORMAT;
    shoal_wire_limits lim = {
        .max_bytes = SHOAL_RECORD_MAX, .max_depth = 1, .max_elems = 2,
        .max_str = 0, .max_bin = SHOAL_RECORD_MAX,
    };
    int rc = SHOAL_ERR_FORMAT;
    if (shoal_wire_msgpack_check(buf, len, &lim) != SHOAL_OK)
        goto fail;
    shoal_mpr r = {buf, len, 0};
    uint32_t n, blen, slen;
    const uint8_t *body, *sig;
    if (shoal_mpr_count(&r, 0, &n) || n != 2 || shoal_mpr_raw(&r, 1, &body, &blen) ||
        shoal_mpr_raw(&r, 1, &sig, &slen) || slen != 64 || r.off != len)
        goto fail;
    rc = body_decode(rec, body, blen);
    if (rc)
        goto fail;
    memcpy(rec->sig, sig, 64);
    uint8_t msg[SIGN_DOMAIN_LEN + SHOAL_RECORD_MAX];
    memcpy(msg, sign_domain, SIGN_DOMAIN_LEN);
    memcpy(msg + SIGN_DOMAIN_LEN, body, blen);
    if (shoal_identity_verify(rec->pubkey, msg, SIGN_DOMAIN_LEN + blen, rec->sig) != SHOAL_OK) {
        rc = SHOAL_ERR_AUTH;
        goto fail;
    }
    shoal_identity_peer_id_of(rec->pubkey, rec->peer_id);
    return SHOAL_OK;
fail:
    memset(rec, 0, sizeof *rec);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Validation                                                          */

int shoal_record_check(const shoal_record *r, const uint8_t key[32], int64_t now_ms,
                       int64_t max_ahead_ms)
{
    if (!r || !key)
        return SHOAL_ERR_ARG;
    uint8_t want[32];
    shoal_record_block_key(r->model_hash, r->block, want);
    if (memcmp(want, key, 32) != 0)
        return SHOAL_ERR_FORMAT;
    if (r->expires_ms <= now_ms)
        return SHOAL_ERR_RANGE;
    /* r->expires_ms > now_ms here, so the difference cannot overflow
     * unless now_ms is very negative: compare without subtracting then */
    if (now_ms < 0 ? r->expires_ms > max_ahead_ms + now_ms
                   : r->expires_ms - now_ms > max_ahead_ms)
        return SHOAL_ERR_RANGE;
    return SHOAL_OK;
}

int shoal_record_validate(const uint8_t *buf, size_t len, const uint8_t key[32],
                          int64_t now_ms, int64_t max_ahead_ms, shoal_record *out)
{
    shoal_record tmp;
    shoal_record *r = out ? out : &tmp;
    int rc = shoal_record_decode(r, buf, len);
    if (rc)
        return rc;
    rc = shoal_record_check(r, key, now_ms, max_ahead_ms);
    if (rc)
        memset(r, 0, sizeof *r);
    return rc;
}

int shoal_record_dht_validate(void *ctx, const uint8_t key[SHOAL_DHT_ID_BYTES],
                              const uint8_t *value, size_t len, int64_t now_ms,
                              shoal_dht_meta *meta)
{
    int64_t ahead = ctx ? *(const int64_t *)ctx : SHOAL_RECORD_MAX_AHEAD_MS;
    shoal_record r;
    int rc = shoal_record_validate(value, len, key, now_ms, ahead, &r);
    if (rc)
        return rc;
    memcpy(meta->owner, r.peer_id, 32);
    meta->seq = r.seq;
    meta->expires_ms = r.expires_ms;
    return SHOAL_OK;
}
