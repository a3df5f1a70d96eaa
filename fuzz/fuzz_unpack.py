"""Fuzz the packed-GGUF reader and the Huffman decoder with atheris (libFuzzer).

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_unpack.py -max_total_time=60 [corpus_dir ...]

The first byte of an input picks what the rest is:
  0  a whole packed file, read as is;
  1  a packed file whose checksums are recomputed first, so mutations get past them to the index
     checks and into the decoder;
  2  a decode plan (layout, code tables, chunk) run through the C decoder and the pure-Python
     reference, which must agree: both fail with the same message, or both give the same bytes.
Anything else than InputError (or agreement) is a crash. Crashers go to tests/pack_corpus/ as
`*.fuzz`; test_pack.py replays every file there through `check_input`.
"""
from __future__ import annotations

import importlib.util
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("gguf_tools") is None:   # else installed, or on PYTHONPATH (a build with ASan)
    sys.path.insert(0, str(REPO))

if __name__ == "__main__":   # coverage of our Python code only (instrumenting numpy slows it down)
    import atheris

    _instrumented = atheris.instrument_imports(include=["gguf_tools"])
else:
    import contextlib

    _instrumented = contextlib.nullcontext()

with _instrumented:
    from gguf_tools import _huffman
    from gguf_tools import packed as pack_mod
    from gguf_tools.errors import InputError, ResourceError
    from gguf_tools.packed import encode as encode_mod
    from gguf_tools.packed.codes import code_lengths
    from gguf_tools.packed.format import MODE_CTX, MODE_HUFF, MODE_PALETTE, MODE_RAW, FieldCoding, layout_words
    from gguf_tools.packed.header import _HEADER, HEADER_SIZE, crc32c
    from gguf_tools.packed.reference import DecodeError, decode_ref

_DIR = tempfile.mkdtemp(prefix="fuzz_unpack_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
_PATH = os.path.join(_DIR, "input.ggpk")


class _Bytes:
    """Reads choices from the input, front to back; zeros once it runs out (deterministic replay)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def byte(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b

    def int(self, lo: int, hi: int) -> int:
        v = self.byte() | self.byte() << 8
        return lo + v % (hi - lo + 1)

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


def _whole_file(data: bytes) -> None:
    """Both ways out of a packed file (into memory, into a file) accept and reject the same inputs."""
    with open(_PATH, "wb") as fh:
        fh.write(data)
    verdicts = []
    try:
        memory = bytes(pack_mod.unpack_to_memory(_PATH, threads=2))
        verdicts.append(True)
    except (InputError, ResourceError):
        verdicts.append(False)
    try:
        with pack_mod.open_for_llama(_PATH, threads=2, verify=True) as path, open(path, "rb") as fh:
            assert fh.read() == memory, "unpacking to a file and to memory differ"
        verdicts.append(True)
    except (InputError, ResourceError):
        verdicts.append(False)
    assert verdicts[0] == verdicts[1], f"unpack_to_memory {verdicts[0]}, open_for_llama {verdicts[1]}"


def _fixed_up(data: bytes) -> None:
    """Recompute the header, GGUF-header and index checksums of a mutated file, where in range."""
    b = bytearray(data)
    if len(b) >= HEADER_SIZE:
        f = list(_HEADER.unpack_from(b))
        prefix_size, index_offset = f[4], f[5]
        if HEADER_SIZE + prefix_size <= len(b):
            f[9] = crc32c(bytes(b[HEADER_SIZE:HEADER_SIZE + prefix_size]))
        if HEADER_SIZE <= index_offset <= len(b):
            f[6] = len(b) - index_offset
            f[8] = crc32c(bytes(b[index_offset:]))
        body = _HEADER.pack(*f)
        b[:HEADER_SIZE] = body + struct.pack("<I", crc32c(body))
    _whole_file(bytes(b))


def _plan(data: bytes) -> None:
    """A random layout, tables and chunk; the C and reference decoders must agree on it."""
    r = _Bytes(data)
    bs = r.int(1, 32)          # so fields and runs stay within their limits
    order = list(range(bs))
    for i in range(bs - 1, 0, -1):      # a shuffle of the block's bytes, cut into fields
        j = r.int(0, i)
        order[i], order[j] = order[j], order[i]
    fields: list[list[tuple[int, int]]] = []
    at = 0
    while at < bs:
        n = min(r.int(1, 8), bs - at, 32)
        fields.append([(x, 1) for x in sorted(order[at:at + n])])
        at += n
    nblocks = r.int(1, 24)
    pool = r.take(r.int(1, 64)) or b"\0"
    src = (pool * (nblocks * bs // len(pool) + 1))[:nblocks * bs]
    raw = [FieldCoding(MODE_RAW, tuple(f)) for f in fields]
    raw_words = np.asarray(layout_words(bs, raw), np.int32)
    hist = np.frombuffer(_huffman.histogram(src, 0, len(src), raw_words, 0), np.uint64).reshape(-1, 256)
    fitted = r.byte() & 1
    tables: list[np.ndarray] = []

    def table(h: np.ndarray) -> int:
        if fitted:
            tables.append(code_lengths(h if h.sum() else np.ones(256, np.uint64)))
        else:
            tables.append(np.frombuffer(r.take(256).ljust(256, b"\0"), np.uint8) % 16)
        return len(tables) - 1

    coded = []
    for fi, runs in enumerate(fields):
        mode = r.byte() % 4
        ctx = [ci for ci in range(fi) if raw[ci].width == 1]
        if mode == MODE_CTX and not ctx:
            mode = MODE_HUFF
        if mode == MODE_RAW:
            coded.append(raw[fi])
        elif mode == MODE_HUFF:
            coded.append(FieldCoding(MODE_HUFF, tuple(runs), (table(hist[fi]),)))
        elif mode == MODE_CTX:
            ci = ctx[r.int(0, len(ctx) - 1)]
            groups = r.int(1, 4)
            ctx_map = np.frombuffer(r.take(256).ljust(256, b"\0"), np.uint8) % groups
            joint = np.frombuffer(_huffman.joint_histogram(src, 0, len(src), raw_words, 0, fi, ci),
                                  np.uint64).reshape(256, 256)
            tabs = tuple(table(joint[ctx_map == g].sum(axis=0)) for g in range(groups))
            coded.append(FieldCoding(MODE_CTX, tuple(runs), tabs, ci, ctx_map.tobytes()))
        else:
            bias = 128 * (r.byte() & 1)
            h4 = np.frombuffer(_huffman.palette_histogram(src, 0, len(src), raw_words, 0, fi, bias),
                               np.uint64).reshape(4, 256)
            coded.append(FieldCoding(MODE_PALETTE, tuple(runs), tuple(table(h) for h in h4), bias))
    words = np.asarray(layout_words(bs, coded), np.int32)
    tab = np.stack(tables) if tables else np.zeros((0, 256), np.uint8)
    crc = 0
    try:
        payload, crc = _huffman.encode_chunk(src, 0, len(src), words, 0, tab)
    except ValueError:      # tables not fitted to the data: the chunk is whatever the input says
        payload = r.take(r.int(0, 2 * len(src) + 64))
    payload = bytearray(payload)
    for _ in range(r.int(0, 3) if payload else 0):
        payload[r.int(0, len(payload) - 1)] ^= r.byte()
    job = np.array([[0, len(payload), 0, len(src), crc, 0]], np.int64)
    if r.byte() == 255:     # now and then, a job that does not fit
        job[0, r.int(0, 5)] += r.int(0, 200) - 100
    verify = bool(r.byte() & 1)
    c_out, py_out = bytearray(len(src)), bytearray(len(src))
    c_err = py_err = None
    try:
        _huffman.decode(bytes(payload), c_out, job, words, tab, threads=1, verify_crc=verify)
    except ValueError as e:
        c_err = str(e)
    try:
        decode_ref(bytes(payload), py_out, job, words, tab, verify_crc=verify)
    except DecodeError as e:
        py_err = str(e)
    assert c_err == py_err, f"C says {c_err!r}, the reference {py_err!r}"
    if c_err is None:
        assert c_out == py_out, "C and reference decoders wrote different bytes"
        if crc and verify:
            assert bytes(c_out) == src


def check_input(data: bytes) -> None:
    """One fuzz input: raises (AssertionError or anything unexpected) only on a real bug."""
    if not data:
        return
    kind, rest = data[0] % 3, data[1:]
    if kind == 0:
        _whole_file(rest)
    elif kind == 1:
        _fixed_up(rest)
    else:
        _plan(rest)


def _seed_corpus(directory: Path) -> None:
    """Small packed files that use every field mode, so mutations start from deep inside."""
    import gguf

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    grid = (rng.uniform(-0.1, 0, (8, 4, 1)) + rng.uniform(1e-3, 1e-2, (8, 4, 1)) * rng.integers(0, 16, (8, 4, 32)))
    real = rng.standard_normal((8, 4, 32))
    real[rng.random((8, 4)) < 0.3, 0] *= 12
    src = Path(_DIR) / "seed.gguf"
    w = gguf.GGUFWriter(src, "llama")
    w.add_string("general.name", "fuzz seed")
    w.add_tensor("norm", rng.standard_normal(16).astype(np.float32))
    w.add_tensor("grid", gguf.quants.quantize(grid.reshape(8, 128).astype(np.float32), gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("real", gguf.quants.quantize(real.reshape(8, 128).astype(np.float32), gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q4", gguf.quants.quantize(real.reshape(8, 128).astype(np.float32), gguf.GGMLQuantizationType.Q4_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    saved = encode_mod.RICH_FIELD_MIN, encode_mod.CTX_GROUP_MIN
    encode_mod.RICH_FIELD_MIN, encode_mod.CTX_GROUP_MIN = 64, 16   # context and palette even on tiny tensors
    try:
        dst = Path(_DIR) / "seed.ggpk"
        pack_mod.pack(src, dst, chunk_size=340)
    finally:
        encode_mod.RICH_FIELD_MIN, encode_mod.CTX_GROUP_MIN = saved
    raw = dst.read_bytes()
    (directory / "seed_file").write_bytes(b"\0" + raw)
    (directory / "seed_fixup").write_bytes(b"\1" + raw)
    for i in range(8):
        (directory / f"seed_plan{i}").write_bytes(b"\2" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes())


def main() -> None:
    import atheris

    args = list(sys.argv)
    dirs = [a for a in args[1:] if not a.startswith("-")]
    if not dirs:
        work = Path(_DIR) / "corpus"
        _seed_corpus(work)
        corpus = Path(__file__).resolve().parents[1] / "tests" / "pack_corpus"
        args += [str(work)] + ([str(corpus)] if corpus.is_dir() else [])
    if not any(a.startswith("-artifact_prefix") for a in args):
        args.append(f"-artifact_prefix={_DIR}/")
        print(f"crashers, if any, go to {_DIR}/crash-*", file=sys.stderr)
    atheris.Setup(args, check_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
