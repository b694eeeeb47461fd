/*
 * Fuzz target: signed server records. Any bytes go to the record decoder.
 * What decodes must obey every field rule (span order, state, throughput,
 * text), must carry the peer id of its key, must re-encode (the encoder
 * accepts what the decoder accepts), and must validate against its own
 * block key exactly when its expiry is in range. Whatever msgpack the
 * record's outer check passes, msgpack-c must parse as one object.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <msgpack.h>

#include "kernels/err.h"
#include "proto/identity.h"
#include "proto/wire.h"
#include "swarm/record.h"

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

static int terminated(const char *s, size_t size)
{
    return memchr(s, 0, size) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    shoal_wire_limits lim = {
        .max_bytes = SHOAL_RECORD_MAX, .max_depth = 1, .max_elems = 2,
        .max_str = 0, .max_bin = SHOAL_RECORD_MAX,
    };
    if (shoal_wire_msgpack_check(data, size, &lim) == SHOAL_OK) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        REQUIRE(msgpack_unpack_next(&u, (const char *)data, size, &off) ==
                    MSGPACK_UNPACK_SUCCESS && off == size);
        msgpack_unpacked_destroy(&u);
    }

    shoal_record r;
    int rc = shoal_record_decode(&r, data, size);
    if (rc != SHOAL_OK) {
        REQUIRE(rc == SHOAL_ERR_FORMAT || rc == SHOAL_ERR_AUTH || rc == SHOAL_ERR_UNSUPPORTED);
        static const shoal_record zero;
        REQUIRE(memcmp(&r, &zero, sizeof r) == 0);
        return 0;
    }
    REQUIRE(size <= SHOAL_RECORD_MAX);
    REQUIRE(r.span_start <= r.block && r.block < r.span_end && r.span_end <= r.nblocks);
    REQUIRE(shoal_record_state_name(r.state) != NULL);
    REQUIRE(isfinite(r.throughput) && r.throughput >= 0);
    REQUIRE(r.nadapters <= SHOAL_RECORD_MAX_ADAPTERS && r.expires_ms >= 0);
    REQUIRE(terminated(r.addr, sizeof r.addr) && terminated(r.model, sizeof r.model) &&
            terminated(r.software, sizeof r.software));
    uint8_t pid[32];
    shoal_identity_peer_id_of(r.pubkey, pid);
    REQUIRE(memcmp(pid, r.peer_id, 32) == 0);
    uint8_t out[SHOAL_RECORD_MAX];
    size_t len;
    REQUIRE(shoal_record_encode(&r, out, sizeof out, &len) == SHOAL_OK);

    uint8_t key[32];
    shoal_record_block_key(r.model_hash, r.block, key);
    int64_t now = r.expires_ms - 1000;
    REQUIRE(shoal_record_check(&r, key, now, SHOAL_RECORD_MAX_AHEAD_MS) == SHOAL_OK);
    REQUIRE(shoal_record_check(&r, key, r.expires_ms, SHOAL_RECORD_MAX_AHEAD_MS) ==
            SHOAL_ERR_RANGE);
    shoal_dht_meta m;
    REQUIRE(shoal_record_dht_validate(NULL, key, data, size, now, &m) == SHOAL_OK);
    REQUIRE(m.seq == r.seq && m.expires_ms == r.expires_ms && !memcmp(m.owner, r.peer_id, 32));
    key[0] ^= 1;
    REQUIRE(shoal_record_check(&r, key, now, SHOAL_RECORD_MAX_AHEAD_MS) == SHOAL_ERR_FORMAT);
    return 0;
}
