#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_gguf: tiny valid GGUF files (valid_*) and
malformed ones (every other name), each a few hundred bytes at most.

test_gguf opens every file: valid_* must open, all others must fail with an
error code and a one-line message. Run from anywhere:

    python3 tests/fuzz/make_gguf_corpus.py [OUTDIR]

Python 3 standard library only. The output is deterministic.
"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
              F32: "<f", BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
T_F32, T_F16, T_Q4_0, T_Q8_0 = 0, 1, 2, 8
TYPE_BYTES = {T_F32: (1, 4), T_F16: (1, 2), T_Q4_0: (32, 18), T_Q8_0: (32, 34)}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(vtype, v):
    """Encodes a value of vtype; arrays are (elem_type, [values])."""
    if vtype == STRING:
        return gstr(v)
    if vtype == ARRAY:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        for it in items:
            out += value(et, it)
        return out
    return struct.pack(SCALAR_FMT[vtype], v)


def kv(key, vtype, v):
    return gstr(key) + struct.pack("<I", vtype) + value(vtype, v)


def tinfo(name, dims, ttype, offset):
    return (gstr(name) + struct.pack("<I", len(dims)) +
            b"".join(struct.pack("<Q", d) for d in dims) +
            struct.pack("<IQ", ttype, offset))


def tensor_bytes(dims, ttype):
    n = 1
    for d in dims:
        n *= d
    if ttype not in TYPE_BYTES:
        return 0
    be, bb = TYPE_BYTES[ttype]
    return n // be * bb


def gguf(kvs=(), tensors=(), version=3, alignment=32, n_kv=None, n_tensors=None,
         data=None, magic=b"GGUF", pad_end=True):
    """kvs: encoded kv byte strings. tensors: (name, dims, type) laid out in
    order with aligned offsets, or (name, dims, type, offset) placed as given.
    Data bytes are a counting pattern unless `data` is given."""
    infos, offset, end = [], 0, 0
    for t in tensors:
        if len(t) == 4:
            name, dims, ttype, off = t
        else:
            name, dims, ttype = t
            off = (offset + alignment - 1) // alignment * alignment
        infos.append(tinfo(name, dims, ttype, off))
        offset = off + tensor_bytes(dims, ttype)
        end = max(end, offset)
    head = magic + struct.pack("<IQQ", version,
                               len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(infos)
    if tensors:
        head += b"\0" * ((alignment - len(head) % alignment) % alignment)
        if data is None:  # the data, padded at the end as ggml writes it
            if pad_end:
                end = (end + alignment - 1) // alignment * alignment
            data = bytes(i % 251 for i in range(end))
        head += data
    return head


def corpus():
    files = {}
    arch = kv("general.architecture", STRING, "llama")
    small_kvs = [
        arch,
        kv("general.name", STRING, "corpus"),
        kv("llama.block_count", U32, 1),
        kv("t.i8", I8, -3), kv("t.u16", U16, 7), kv("t.i64", I64, -9),
        kv("t.f64", F64, 0.25), kv("t.bool", BOOL, 1),
        kv("tokenizer.ggml.tokens", ARRAY, (STRING, ["<unk>", "<s>", "</s>"])),
        kv("tokenizer.ggml.scores", ARRAY, (F32, [0.0, -1.0, -2.0])),
    ]
    small_tensors = [("token_embd.weight", [4, 3], T_F32),
                     ("blk.0.attn_q.weight", [32, 2], T_Q8_0)]
    small = gguf(small_kvs, small_tensors)
    unpadded = gguf(small_kvs, small_tensors, pad_end=False)  # ends with the last tensor

    files["valid_minimal.gguf"] = gguf()
    files["valid_small.gguf"] = small
    files["valid_v2.gguf"] = gguf(small_kvs, small_tensors, version=2)
    files["valid_align64.gguf"] = gguf(
        [kv("general.alignment", U32, 64)] + small_kvs, small_tensors, alignment=64)
    files["valid_nested_array.gguf"] = gguf(
        [kv("t.nested", ARRAY, (ARRAY, [(U8, [1, 2]), (STRING, ["a"]), (U32, [])]))],
        [("w", [8], T_F16)])
    files["valid_q4_0_3d.gguf"] = gguf([arch], [("w", [64, 2, 2], T_Q4_0),
                                                ("v", [1], T_F32)])

    files["bad_magic.gguf"] = b"GGUG" + small[4:]
    files["bad_empty.gguf"] = b""
    files["bad_three_bytes.gguf"] = b"GGU"
    # truncated at many points: inside the header, a key, a value, an array,
    # a tensor info, the padding, and the data
    for cut in (6, 12, 20, 27, 40, 70, 150, 230, 290, 330, len(unpadded) - 1):
        files["bad_truncated_%d.gguf" % cut] = unpadded[:cut]
    kv_only = gguf(small_kvs)
    for cut in (30, 60, 100, 160, 200, 250, 300, len(kv_only) - 1):
        files["bad_truncated_kv_%d.gguf" % cut] = kv_only[:cut]
    files["bad_version1.gguf"] = gguf(small_kvs, small_tensors, version=1)
    files["bad_version99.gguf"] = gguf(small_kvs, small_tensors, version=99)
    files["bad_version_bigendian.gguf"] = gguf(small_kvs, small_tensors, version=3 << 24)
    files["bad_tensor_past_end.gguf"] = gguf(
        [arch], [("w", [4], T_F32, 0), ("x", [8], T_F32, 4096)], data=b"\0" * 64)
    files["bad_tensor_cut_short.gguf"] = unpadded[:-4]
    files["bad_type_unknown.gguf"] = gguf([arch], [("w", [256], 77, 0)], data=b"\0" * 256)
    files["bad_type_q2_K.gguf"] = gguf([arch], [("w", [256], 10, 0)], data=b"\0" * 256)
    huge = 1 << 62
    files["bad_n_kv_huge.gguf"] = gguf(small_kvs, small_tensors, n_kv=huge)
    files["bad_n_tensors_huge.gguf"] = gguf(small_kvs, small_tensors, n_tensors=huge)
    files["bad_n_kv_off_by_one.gguf"] = gguf(small_kvs, small_tensors, n_kv=len(small_kvs) + 1)
    files["bad_key_len_huge.gguf"] = gguf([struct.pack("<Q", huge) + b"general.name"])
    files["bad_str_len_huge.gguf"] = gguf(
        [gstr("general.name") + struct.pack("<IQ", STRING, huge) + b"abc"])
    files["bad_str_len_past_end.gguf"] = gguf(
        [gstr("general.name") + struct.pack("<IQ", STRING, 100) + b"abc"])
    files["bad_array_count_huge.gguf"] = gguf(
        [gstr("a") + struct.pack("<IIQ", ARRAY, U32, huge) + b"\0" * 16])
    files["bad_array_str_count_huge.gguf"] = gguf(
        [gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING, huge) + gstr("x")])
    files["bad_array_elem_str_huge.gguf"] = gguf(
        [gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING, 2) + gstr("x") +
         struct.pack("<Q", huge)])
    files["bad_array_nested_3.gguf"] = gguf(
        [kv("t.deep", ARRAY, (ARRAY, [(ARRAY, [(U8, [1])])]))])
    files["bad_array_elem_type.gguf"] = gguf([gstr("a") + struct.pack("<IIQ", ARRAY, 13, 1) + b"\0" * 8])
    files["bad_value_type.gguf"] = gguf([gstr("a") + struct.pack("<I", 13) + b"\0" * 8])
    files["bad_bool_2.gguf"] = gguf([gstr("t.bool") + struct.pack("<IB", BOOL, 2)])
    files["bad_bool_array.gguf"] = gguf(
        [gstr("t.bools") + struct.pack("<IIQBBB", ARRAY, BOOL, 3, 0, 1, 255)])
    files["bad_key_empty.gguf"] = gguf([kv("", U32, 1)])
    files["bad_key_control.gguf"] = gguf([kv(b"general.\x01name", U32, 1)])
    files["bad_key_not_utf8.gguf"] = gguf([kv(b"general.\xff\xfename", U32, 1)])
    files["bad_key_duplicate.gguf"] = gguf([arch, kv("general.architecture", STRING, "gpt2")])
    files["bad_dim_zero.gguf"] = gguf([arch], [("w", [4, 0], T_F32, 0)], data=b"\0" * 64)
    files["bad_dim_negative.gguf"] = gguf([arch], [("w", [4, (1 << 64) - 4], T_F32, 0)], data=b"\0" * 64)
    files["bad_n_dims_0.gguf"] = gguf([arch], [("w", [], T_F32, 0)], data=b"\0" * 64)
    files["bad_n_dims_5.gguf"] = gguf([arch], [("w", [1, 1, 1, 1, 1], T_F32, 0)], data=b"\0" * 64)
    files["bad_dim_product_overflow.gguf"] = gguf(
        [arch], [("w", [1 << 32, 1 << 32], T_F32, 0)], data=b"\0" * 64)
    files["bad_size_overflow.gguf"] = gguf(
        [arch], [("w", [1 << 31, 1 << 31], T_F32, 0)], data=b"\0" * 64)
    files["bad_tensor_name_duplicate.gguf"] = gguf([arch], [("w", [4], T_F32), ("w", [4], T_F32)])
    files["bad_tensor_name_empty.gguf"] = gguf([arch], [("", [4], T_F32)])
    files["bad_tensor_name_long.gguf"] = gguf([arch], [("w" * 300, [4], T_F32)])
    files["bad_tensor_overlap.gguf"] = gguf([arch], [("w", [16], T_F32, 0), ("x", [16], T_F32, 32)])
    files["bad_offset_misaligned.gguf"] = gguf([arch], [("w", [4], T_F32, 4)], data=b"\0" * 64)
    files["bad_row_not_blocks.gguf"] = gguf([arch], [("w", [33], T_Q8_0, 0)], data=b"\0" * 64)
    files["bad_alignment_zero.gguf"] = gguf([kv("general.alignment", U32, 0)], [("w", [4], T_F32)])
    files["bad_alignment_3.gguf"] = gguf([kv("general.alignment", U32, 3)], [("w", [4], T_F32)])
    files["bad_alignment_huge.gguf"] = gguf([kv("general.alignment", U32, 1 << 31)], [("w", [4], T_F32)])
    files["bad_alignment_string.gguf"] = gguf([kv("general.alignment", STRING, "32")], [("w", [4], T_F32)])
    files["bad_data_offset_past_end.gguf"] = gguf([arch], [("w", [4], T_F32)], pad_end=False)[:-16]
    return files


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_gguf")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(corpus().items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("%d files in %s" % (len(corpus()), out))


if __name__ == "__main__":
    main()
