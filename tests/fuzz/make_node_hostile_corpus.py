#!/usr/bin/env python3
"""Write tests/fuzz/corpus/node_hostile/: malformed and hostile requests for a
running node, replayed by tests/unit/test_node_hostile.c (see the README in
that folder for the file format and the replayer's set-up).

Every message here must be refused: the node may answer with an ERROR reply
or say nothing, never anything else. Run from anywhere:
    python3 tests/fuzz/make_node_hostile_corpus.py
The output is deterministic; the files are committed.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "node_hostile")

# What the replayer sets up (keep in step with test_node_hostile.c):
SID = 0x5E55105E55105E55   # a session it opened: blocks 0:5, max_length 8,
SID_LEN = 4                # and filled with 4 tokens
DIM = 64                   # stories260K
MAX_BATCH = 8              # the node runs with --max-batch 8

PING, INFO, ERROR, FORWARD, OPEN, STEP, CLOSE = 1, 2, 3, 4, 5, 6, 7
FIND_NODE, BACKWARD = 16, 32
F32, F16, BF16, I8 = 0, 1, 2, 3


class Raw:
    """Bytes spliced into a msgpack stream as they are."""
    def __init__(self, b):
        self.b = b


def mp(o):
    """A small msgpack encoder: enough for headers, and for breaking them."""
    if isinstance(o, Raw):
        return o.b
    if o is None:
        return b"\xc0"
    if o is True:
        return b"\xc3"
    if o is False:
        return b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128:
            return bytes([o])
        if -32 <= o < 0:
            return struct.pack("b", o)
        if 0 <= o < 1 << 8:
            return b"\xcc" + struct.pack(">B", o)
        if 0 <= o < 1 << 16:
            return b"\xcd" + struct.pack(">H", o)
        if 0 <= o < 1 << 32:
            return b"\xce" + struct.pack(">I", o)
        if 0 <= o < 1 << 64:
            return b"\xcf" + struct.pack(">Q", o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, float):
        return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, str):
        b = o.encode("utf-8", "surrogateescape")
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        if len(b) < 1 << 8:
            return b"\xd9" + bytes([len(b)]) + b
        if len(b) < 1 << 16:
            return b"\xda" + struct.pack(">H", len(b)) + b
        return b"\xdb" + struct.pack(">I", len(b)) + b
    if isinstance(o, bytes):
        if len(o) < 1 << 8:
            return b"\xc4" + bytes([len(o)]) + o
        return b"\xc6" + struct.pack(">I", len(o)) + o
    if isinstance(o, list):
        head = bytes([0x90 | len(o)]) if len(o) < 16 else b"\xdc" + struct.pack(">H", len(o))
        return head + b"".join(mp(x) for x in o)
    if isinstance(o, dict):
        head = bytes([0x80 | len(o)]) if len(o) < 16 else b"\xde" + struct.pack(">H", len(o))
        return head + b"".join(mp(k) + mp(v) for k, v in o.items())
    raise TypeError(o)


def pairs(*kv):
    """A map from (key, value) pairs, so keys may repeat or be non-strings."""
    return Raw(bytes([0x80 | len(kv)]) + b"".join(mp(k) + mp(v) for k, v in kv))


def hdr(op, rid=7, fl=0, **kw):
    h = {"v": 1, "op": op, "id": rid, "fl": fl}
    h.update(kw)
    return h


def desc(codec, shape, nbytes=None):
    if nbytes is None:
        n = 1
        for s in shape:
            n *= s
        nbytes = {F32: 4 * n, F16: 2 * n, BF16: 2 * n, I8: 4 * ((n + 63) // 64) + n}[codec]
    return {"c": codec, "s": shape, "n": nbytes}


def f32s(vals):
    return struct.pack("<%df" % len(vals), *vals)


def ones(n):
    return f32s([0.5] * n)


def fwd(t, frames, span=(0, 5), **kw):
    return [mp(hdr(FORWARD, span=list(span), t=t, **kw))] + frames


def step(t, frames, sid=SID, pos=SID_LEN, stepid=9, **kw):
    return [mp(hdr(STEP, sid=sid, step=stepid, pos=pos, t=t, **kw))] + frames


class Fill:
    """A frame of n copies of one byte (stored compactly, see README)."""
    def __init__(self, n, byte):
        self.n, self.byte = n, byte


cases = []


def case(name, frames):
    cases.append((name, frames))


good_t = [desc(F32, [1, DIM])]
good_f = [ones(DIM)]

# -- not msgpack, or msgpack that lies about its size ---------------------
case("empty-header", [b""])
case("never-used-byte", [b"\xc1"])
case("fixmap-truncated", [b"\x8f"])
case("array32-count-past-frame", [b"\xdd\xff\xff\xff\xff"])
case("map32-count-past-frame", [b"\xdf\xff\xff\xff\xff"])
case("str32-length-past-frame", [b"\xdb\xff\xff\xff\xff" + b"abc"])
case("bin32-length-past-frame", [b"\xc6\x7f\xff\xff\xff" + b"abc"])
case("ext32-length-past-frame", [b"\xc9\xff\xff\xff\xf0\x01"])
case("array16-count-past-frame", [b"\xdc\xff\xff" + b"\x00" * 10])
case("deep-nesting", [b"\x91" * 200 + b"\x00"])
case("map-in-map-nesting", [b"\x81\xa1a" * 40 + b"\x00"])
case("trailing-bytes", [mp(hdr(PING)) + b"\x00"])
case("two-objects", [mp(hdr(PING)) + mp(hdr(PING))])
case("header-is-array", [mp([1, PING, 7, 0])])
case("header-is-int", [mp(42)])
case("header-is-string", [mp("hello")])
# a 2100-element array: within the byte cap, past the element cap (2048)
case("too-many-elements", [b"\xdc\x08\x34" + b"\x00" * 2100])

# -- the common keys -------------------------------------------------------
case("missing-version", [mp({"op": PING, "id": 7, "fl": 0})])
case("version-99", [mp(hdr(PING) | {"v": 99})])
case("missing-op", [mp({"v": 1, "id": 7, "fl": 0})])
case("op-zero", [mp(hdr(0))])
case("request-id-zero", [mp(hdr(PING, rid=0))])
case("missing-flags", [mp({"v": 1, "op": PING, "id": 7})])
case("op-negative", [mp(hdr(-1))])
case("op-float", [mp(hdr(1.5))])
case("op-too-big", [mp(hdr(70000))])
case("op-string", [mp(hdr("ping"))])
case("id-negative", [mp(hdr(PING, rid=-5))])
case("duplicate-key", [mp(pairs(("v", 1), ("op", PING), ("id", 7), ("fl", 0), ("op", INFO)))])
case("integer-key", [mp(pairs(("v", 1), ("op", PING), ("id", 7), ("fl", 0), (3, 1)))])
case("nil-key", [mp(pairs(("v", 1), ("op", PING), ("id", 7), ("fl", 0), (None, 1)))])
case("unknown-op", [mp(hdr(999))])
case("error-as-request", [mp(hdr(ERROR, err=5))])
case("find-node-unserved", [mp(hdr(FIND_NODE, target=b"\x01" * 32))])
case("backward-unserved", [mp(hdr(BACKWARD, span=[0, 5], t=good_t))] + good_f)
case("info-reply-to-a-server", [mp(hdr(INFO, fl=1))])
case("error-reply-to-a-server", [mp(hdr(ERROR, fl=1, err=5, msg="x"))])
case("message-bad-utf8", [mp(hdr(PING, msg=Raw(b"\xa2\xff\xfe")))])
case("model-with-nul", [mp(hdr(PING, model="a\x00b"))])
case("message-too-long", [mp(hdr(PING, msg="m" * 300))])
case("span-of-three", [mp(hdr(FORWARD, span=[0, 1, 2], t=good_t))] + good_f)
case("span-reversed", fwd(good_t, good_f, span=(4, 1)))
case("reply-codec-unknown", fwd(good_t, good_f, rc=9))
case("flags-too-big", [mp(hdr(PING, fl=1 << 20))])
case("ping-with-stray-frame", [mp(hdr(PING)), b"stray"])

# -- tensors -----------------------------------------------------------------
case("forward-no-span", [mp(hdr(FORWARD, t=good_t))] + good_f)
case("forward-no-tensor", [mp(hdr(FORWARD, span=[0, 5]))])
case("forward-descriptor-without-frame", fwd(good_t, []))
case("forward-frame-without-descriptor", [mp(hdr(FORWARD, span=[0, 5])), ones(DIM)])
case("forward-two-frames-one-descriptor", fwd(good_t, good_f + good_f))
case("forward-nbytes-lies", fwd([desc(F32, [1, DIM], nbytes=100)], [ones(25)]))
case("forward-frame-short", fwd(good_t, [ones(DIM - 1)]))
case("forward-frame-long", fwd(good_t, [ones(DIM + 1)]))
case("forward-huge-shape", fwd([desc(F32, [65536, 65536])], [ones(4)]))
case("forward-max-u32-shape", fwd([desc(F32, [0xFFFFFFFF, DIM])], [ones(4)]))
case("forward-zero-dim", fwd([desc(F32, [0, DIM], nbytes=0)], [b""]))
case("forward-four-dims", fwd([{"c": F32, "s": [1, 1, 1, DIM], "n": 4 * DIM}], good_f))
case("forward-no-dims", fwd([{"c": F32, "s": [], "n": 0}], [b""]))
case("forward-unknown-codec", fwd([desc(F32, [1, DIM]) | {"c": 7}], good_f))
case("forward-descriptor-missing-n", fwd([{"c": F32, "s": [1, DIM]}], good_f))
case("forward-descriptor-not-a-map", fwd([[F32, [1, DIM], 4 * DIM]], good_f))
case("forward-five-tensors", fwd([desc(F32, [1, DIM])] * 5, good_f * 5))
case("forward-wrong-dim", fwd([desc(F32, [1, DIM - 1])], [ones(DIM - 1)]))
case("forward-one-dim", fwd([desc(F32, [DIM])], [ones(DIM)]))
case("forward-too-many-tokens", fwd([desc(F32, [MAX_BATCH + 1, DIM])],
                                    [ones((MAX_BATCH + 1) * DIM)]))
case("forward-batch-too-many-tokens", fwd([desc(F32, [3, 3, DIM])], [ones(9 * DIM)]))
case("forward-nan-f32", fwd(good_t, [Fill(4 * DIM, 0xFF)]))
case("forward-inf-f32", fwd(good_t, [f32s([0.5] * (DIM - 1) + [float("inf")])]))
case("forward-nan-f16", fwd([desc(F16, [1, DIM])], [Fill(2 * DIM, 0xFF)]))
case("forward-inf-f16", fwd([desc(F16, [1, DIM])], [b"\x00\x3c" * (DIM - 1) + b"\x00\x7c"]))
case("forward-nan-bf16", fwd([desc(BF16, [1, DIM])], [b"\x00\x3f" * (DIM - 1) + b"\xc0\x7f"]))
case("forward-int8-negative-scale", fwd([desc(I8, [1, DIM])],
                                        [f32s([-1.0]) + b"\x01" * DIM]))
case("forward-int8-nan-scale", fwd([desc(I8, [1, DIM])], [b"\xff" * 4 + b"\x01" * DIM]))
case("forward-int8-huge-scale", fwd([desc(I8, [1, DIM])], [f32s([3e38]) + b"\x7f" * DIM]))
case("forward-int8-code-minus-128", fwd([desc(I8, [1, DIM])], [f32s([0.01]) + b"\x80" * DIM]))
case("forward-span-outside", fwd(good_t, good_f, span=(0, 99)))
case("forward-span-empty", fwd(good_t, good_f, span=(2, 2)))
case("forward-span-u32-max", fwd(good_t, good_f, span=(0xFFFFFFFE, 0xFFFFFFFF)))
case("forward-frame-over-cap", fwd(good_t, [Fill(2 << 20, 0)]))
case("header-over-cap", [mp(hdr(PING, pad="p" * 66000))])
case("too-many-frames", [mp(hdr(PING))] + [b"x"] * 9)

# -- sessions ----------------------------------------------------------------
case("open-no-max-length", [mp(hdr(OPEN, sid=3, span=[0, 5]))])
case("open-max-length-zero", [mp(hdr(OPEN, sid=3, span=[0, 5], maxlen=0))])
case("open-max-length-huge", [mp(hdr(OPEN, sid=3, span=[0, 5], maxlen=0xFFFFFFFF))])
case("open-session-zero", [mp(hdr(OPEN, sid=0, span=[0, 5], maxlen=8))])
case("open-span-outside", [mp(hdr(OPEN, sid=3, span=[3, 9], maxlen=8))])
case("open-span-empty", [mp(hdr(OPEN, sid=3, span=[2, 2], maxlen=8))])
case("open-taken-session-other-length", [mp(hdr(OPEN, sid=SID, span=[0, 5], maxlen=7))])
case("open-no-session", [mp(hdr(OPEN, span=[0, 5], maxlen=8))])
case("step-unknown-session", step(good_t, good_f, sid=0x0BADC0DE))
case("step-position-past-length", step(good_t, good_f, pos=SID_LEN + 1))
case("step-position-far-past-length", step(good_t, good_f, pos=1000))
case("step-position-u32-max", step(good_t, good_f, pos=0xFFFFFFFF))
case("step-past-max-length", step([desc(F32, [5, DIM])], [ones(5 * DIM)]))
case("step-no-step-id", [mp(hdr(STEP, sid=SID, pos=SID_LEN, t=good_t))] + good_f)
case("step-no-position", [mp(hdr(STEP, sid=SID, step=9, t=good_t))] + good_f)
case("step-no-session", [mp(hdr(STEP, step=9, pos=SID_LEN, t=good_t))] + good_f)
case("step-no-tensor", [mp(hdr(STEP, sid=SID, step=9, pos=SID_LEN))])
case("step-wrong-dim", step([desc(F32, [1, 32])], [ones(32)]))
case("step-batch-tensor", step([desc(F32, [1, 1, DIM])], [ones(DIM)]))
case("step-nan", step(good_t, [Fill(4 * DIM, 0xFF)]))
case("step-wrong-span", step(good_t, good_f, span=[0, 2]))
case("step-too-many-tokens", step([desc(F32, [MAX_BATCH + 1, DIM])],
                                  [ones((MAX_BATCH + 1) * DIM)], pos=0))
case("close-unknown-session", [mp(hdr(CLOSE, sid=0x0BADC0DE))])
case("close-no-session", [mp(hdr(CLOSE))])
case("close-session-string", [mp(hdr(CLOSE, sid="x"))])


def write_frame(out, f):
    if isinstance(f, Fill):
        out.write(struct.pack("<I", 0x80000000 | f.n))
        out.write(bytes([f.byte]))
    else:
        out.write(struct.pack("<I", len(f)))
        out.write(f)


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.endswith(".msg"):
            os.remove(os.path.join(OUT, old))
    names = set()
    for i, (name, frames) in enumerate(cases):
        assert name not in names, name
        names.add(name)
        assert 1 <= len(frames) <= 16, name
        with open(os.path.join(OUT, "%03d-%s.msg" % (i, name)), "wb") as out:
            out.write(b"SHM1")
            for f in frames:
                write_frame(out, f)
    print("wrote %d messages to %s" % (len(cases), OUT))


if __name__ == "__main__":
    main()
