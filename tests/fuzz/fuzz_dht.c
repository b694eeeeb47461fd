/*
 * Fuzz target: a DHT instance fed arbitrary messages. The input is a
 * sequence of steps, each [kind][len (2 bytes, LE)][len bytes]:
 *   kind % 6 == 0  the bytes are a header frame: decoded (proto/wire) and,
 *                  if they decode, handed in as a request
 *   kind % 6 == 1  a header frame handed in as the reply to the next
 *                  request the DHT sends (its id and address filled in)
 *   kind % 6 == 2  a header frame handed in as a reply from anyone
 *   kind % 6 == 3  a header built straight from the bytes (op, flags,
 *                  target, then values cut from the rest): reaches the
 *                  DHT's own checks without passing msgpack first; a
 *                  request or, with kind & 8, the reply to the next request
 *   kind % 6 == 4  time passes (len * 37 ms), tick
 *   kind % 6 == 5  start an operation (find, get, put, bootstrap)
 * Every reply the DHT builds must encode; caps must hold throughout.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "kernels/err.h"
#include "proto/identity.h"
#include "proto/wire.h"
#include "swarm/dht.h"

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

/* Values 'T', owner, seq (8), expiry (8): cheap to forge on purpose. */
static int toy_validate(void *ctx, const uint8_t key[32], const uint8_t *v, size_t len,
                        int64_t now, shoal_dht_meta *m)
{
    (void)ctx;
    (void)key;
    if (len < 18 || v[0] != 'T')
        return SHOAL_ERR_FORMAT;
    memset(m->owner, v[1], 32);
    memcpy(&m->seq, v + 2, 8);
    memcpy(&m->expires_ms, v + 10, 8);
    return m->expires_ms > now ? SHOAL_OK : SHOAL_ERR_RANGE;
}

static void find_cb(void *ctx, int status, const shoal_dht_contact *nodes, size_t n,
                    const shoal_dht_lookup_info *info)
{
    (void)status;
    (void)info;
    REQUIRE(n <= SHOAL_DHT_MAX_K);
    for (size_t i = 0; i < n; i++)
        REQUIRE(memchr(nodes[i].addr, 0, sizeof nodes[i].addr));
    (*(int *)ctx)++;
}

static void get_cb(void *ctx, int status, const shoal_dht_value *v, size_t n,
                   const shoal_dht_lookup_info *info)
{
    (void)info;
    REQUIRE(status == SHOAL_OK ? n > 0 : n == 0 || status == SHOAL_ERR_CANCELLED);
    for (size_t i = 0; i < n; i++)
        REQUIRE(v[i].len >= 18 && v[i].data[0] == 'T');
    (*(int *)ctx)++;
}

static void put_cb(void *ctx, int status, size_t stored, const shoal_dht_lookup_info *info)
{
    (void)status;
    (void)stored;
    (void)info;
    (*(int *)ctx)++;
}

static void make_addr(char *out, uint8_t b, uint8_t id[32])
{
    uint8_t pk[32];
    memset(pk, b, 32);
    char hex[65];
    shoal_identity_hex(pk, hex);
    snprintf(out, SHOAL_ADDR_MAX, "shoal://10.0.0.%u:4000/%s", b, hex);
    if (id)
        shoal_identity_peer_id_of(pk, id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t frame[SHOAL_WIRE_HEADER_MAX];
    if (sodium_init() < 0)
        return 0;
    /* our own address needs a real key */
    uint8_t seed[32] = {1}, pk[32], sk[64];
    crypto_sign_seed_keypair(pk, sk, seed);
    shoal_dht_params p = shoal_dht_params_default();
    char hex[65];
    shoal_identity_hex(pk, hex);
    snprintf(p.self_addr, sizeof p.self_addr, "shoal://10.9.9.9:4000/%s", hex);
    shoal_identity_peer_id_of(pk, p.self_id);
    p.validate = toy_validate;
    p.k = 4;
    p.alpha = 2;
    p.max_pending = 32;
    p.max_ops = 4;
    p.max_keys = 8;
    p.max_records_per_key = 4;
    p.max_store_bytes = 16 * 1024;
    p.max_verify = 4;
    shoal_dht *d = NULL;
    REQUIRE(shoal_dht_new(&p, &d) == SHOAL_OK);
    int64_t now = 1700000000000LL;
    int calls = 0;
    char seeds[3][SHOAL_ADDR_MAX];
    const char *sp[3];
    for (int i = 0; i < 3; i++) {
        make_addr(seeds[i], (uint8_t)(i + 1), NULL);
        sp[i] = seeds[i];
    }
    REQUIRE(shoal_dht_bootstrap(d, sp, 3, now, find_cb, &calls) == SHOAL_OK);

    size_t off = 0;
    int steps = 0;
    while (size - off >= 3 && steps++ < 256) {
        uint8_t kind = data[off];
        size_t len = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
        off += 3;
        if (len > size - off)
            len = size - off;
        const uint8_t *b = data + off;
        off += len;
        shoal_wire_header h, rep;
        shoal_dht_msg m;
        size_t fl;
        switch (kind % 6) {
        case 0:
            if (shoal_wire_decode(&h, b, len) == SHOAL_OK &&
                !(h.flags & SHOAL_WIRE_FLAG_REPLY)) {
                int rc = shoal_dht_receive_request(d, &h, now, &rep);
                (void)rc;
                REQUIRE(shoal_wire_encode(&rep, frame, sizeof frame, &fl) == SHOAL_OK);
            }
            break;
        case 1:
        case 2:
            if (shoal_wire_decode(&h, b, len) != SHOAL_OK)
                break;
            if (kind % 6 == 1) {
                if (!shoal_dht_next_outgoing(d, &m))
                    break;
                h.request_id = m.header.request_id;
                shoal_dht_receive_reply(d, m.to, &h, now);
            } else {
                shoal_dht_receive_reply(d, seeds[kind % 3], &h, now);
            }
            break;
        case 3: {
            if (len < 35)
                break;
            static const uint16_t ops[] = {SHOAL_OP_PING, SHOAL_OP_FIND_NODE,
                                           SHOAL_OP_FIND_VALUE, SHOAL_OP_STORE,
                                           SHOAL_OP_ERROR, SHOAL_OP_INFO};
            shoal_wire_header_init(&h, ops[b[0] % 6], 1 + b[1]);
            h.flags = b[2] & 1;
            h.has = SHOAL_WIRE_HAS_TARGET | SHOAL_WIRE_HAS_VALUES;
            if (h.op == SHOAL_OP_ERROR) {
                h.has |= SHOAL_WIRE_HAS_ERROR;
                h.error = b[2] >> 1;
            }
            memcpy(h.target, b + 3, 32);
            size_t o = 35;
            while (o < len && h.nvalues < SHOAL_WIRE_MAX_VALUES) {
                size_t vl = b[o++];
                if (vl > len - o)
                    vl = len - o;
                h.values[h.nvalues].ptr = vl ? b + o : NULL;
                h.values[h.nvalues].len = (uint32_t)vl;
                h.nvalues++;
                o += vl;
            }
            if ((kind & 8) && shoal_dht_next_outgoing(d, &m)) {
                h.request_id = m.header.request_id;
                h.flags |= SHOAL_WIRE_FLAG_REPLY;
                shoal_dht_receive_reply(d, m.to, &h, now);
            } else if (!(h.flags & SHOAL_WIRE_FLAG_REPLY)) {
                shoal_dht_receive_request(d, &h, now, &rep);
                REQUIRE(shoal_wire_encode(&rep, frame, sizeof frame, &fl) == SHOAL_OK);
            }
            break;
        }
        case 4:
            now += (int64_t)len * 37;
            shoal_dht_tick(d, now);
            break;
        case 5: {
            uint8_t target[32] = {0};
            memcpy(target, b, len < 32 ? len : 32);
            if (kind & 8)
                shoal_dht_find_node(d, target, now, find_cb, &calls);
            else if (kind & 16)
                shoal_dht_get(d, target, now, get_cb, &calls);
            else if (kind & 32) {
                uint8_t v[40] = {'T', 7};
                uint64_t seq = len;
                int64_t exp = now + 60000;
                memcpy(v + 2, &seq, 8);
                memcpy(v + 10, &exp, 8);
                shoal_dht_put(d, target, v, sizeof v, now, put_cb, &calls);
            } else {
                shoal_dht_bootstrap(d, sp, 3, now, find_cb, &calls);
            }
            shoal_dht_tick(d, now);
            break;
        }
        }
        /* requests go out as valid frames */
        while ((kind & 64) == 0 && shoal_dht_next_outgoing(d, &m))
            REQUIRE(shoal_wire_encode(&m.header, frame, sizeof frame, &fl) == SHOAL_OK);
        shoal_dht_stats st;
        shoal_dht_stats_get(d, &st);
        REQUIRE(st.pending <= p.max_pending && st.ops <= p.max_ops);
        REQUIRE(st.keys <= p.max_keys && st.store_bytes <= p.max_store_bytes);
        REQUIRE(st.contacts <= 256 * p.k && st.mem_bytes < 4u << 20);
    }
    shoal_dht_destroy(&d);
    return 0;
}
