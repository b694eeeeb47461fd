/*
 * Fuzz target: header frames. Any bytes go to the structural check and the
 * decoder. What the check passes, msgpack-c must parse as exactly one
 * object (the check is a sound gate for the C unpacker). What decodes must
 * re-encode, decode to an equal header, and re-encode to the same bytes.
 * A failed decode must leave only request_id and version set. Tensor frame
 * lengths taken from the input go through shoal_wire_frames_check.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "kernels/err.h"
#include "proto/wire.h"

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t out[SHOAL_WIRE_HEADER_MAX], out2[SHOAL_WIRE_HEADER_MAX];
    int chk = shoal_wire_msgpack_check(data, size, NULL);
    REQUIRE(chk == SHOAL_OK || chk == SHOAL_ERR_FORMAT);
    if (chk == SHOAL_OK) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *)data, size, &off);
        REQUIRE(r == MSGPACK_UNPACK_SUCCESS && off == size);
        msgpack_unpacked_destroy(&u);
    }

    shoal_wire_header h, h2;
    int rc = shoal_wire_decode(&h, data, size);
    if (rc != SHOAL_OK) {
        REQUIRE(rc == SHOAL_ERR_FORMAT || rc == SHOAL_ERR_VERSION ||
                rc == SHOAL_ERR_UNSUPPORTED);
        REQUIRE(h.op == 0 && h.has == 0 && h.ntensors == 0 && h.nvalues == 0);
        /* the error reply for it always encodes */
        size_t el;
        REQUIRE(shoal_wire_encode_error(h.request_id, rc, "malformed", out, sizeof out, &el) ==
                SHOAL_OK);
        return 0;
    }
    REQUIRE(chk == SHOAL_OK && h.version == SHOAL_WIRE_VERSION);
    size_t len = 0, len2 = 0;
    REQUIRE(shoal_wire_encode(&h, out, sizeof out, &len) == SHOAL_OK);
    REQUIRE(shoal_wire_decode(&h2, out, len) == SHOAL_OK);
    REQUIRE(shoal_wire_header_equal(&h, &h2));
    REQUIRE(shoal_wire_encode(&h2, out2, sizeof out2, &len2) == SHOAL_OK);
    REQUIRE(len == len2 && memcmp(out, out2, len) == 0);

    size_t lens[SHOAL_WIRE_MAX_TENSORS];
    for (uint32_t i = 0; i < h.ntensors; i++)
        lens[i] = (size_t)h.tensors[i].nbytes;
    REQUIRE(shoal_wire_frames_check(&h, h.ntensors, lens) == SHOAL_OK);
    if (h.ntensors) {
        lens[0]++;
        REQUIRE(shoal_wire_frames_check(&h, h.ntensors, lens) == SHOAL_ERR_FORMAT);
    }
    return 0;
}
