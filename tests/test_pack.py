"""Huffman-packed GGUF files: lossless, inspectable, fast to decode, and safe on hostile input."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import smollm2_gguf

from gguf_tools import _huffman
from gguf_tools.errors import InputError, OutputError
from gguf_tools.packed import (
    is_packed,
    open_for_llama,
    pack,
    pack_info,
    read_packed_header,
    unpack,
    unpack_to_memory,
)
from gguf_tools.packed.codes import (
    DecodeError,
    code_lengths,
    coded_bits,
    crc32c_ref,
    decode_ref,
    decode_stream_ref,
)
from gguf_tools.packed.format import (
    HEADER_SIZE,
    MAX_BITS,
    MAX_CHUNK,
    MAX_RUNS,
    MODE_CTX,
    MODE_HUFF,
    MODE_PALETTE,
    MODE_RAW,
    FieldCoding,
    decode_plan,
    encode_header,
    encode_index,
    layout_words,
    parse_header,
    parse_index,
)

CORPUS = Path(__file__).parent / "pack_corpus"
T = gguf.GGMLQuantizationType


# ---------------------------------------------------------------- synthetic GGUF files

def grid_weights(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Weights that already sit on a 4-bit grid per 32 (as if dequantized from Q4_1): requantized to
    Q8_0, each block holds at most 16 distinct values, the case block palettes are for."""
    q = rng.integers(0, 16, size=(rows, cols // 32, 32))
    scale = rng.uniform(0.001, 0.01, size=(rows, cols // 32, 1))
    low = rng.uniform(-0.1, 0.0, size=(rows, cols // 32, 1))
    return (low + scale * q).reshape(rows, cols).astype(np.float32)


def random_blocks(rng: np.random.Generator, qtype: T, rows: int, cols: int) -> np.ndarray:
    """Bytes for a type the gguf package cannot quantize: small positive f16 scales where a block
    has them, quants drawn from a skewed distribution so that coding has something to gain."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = rows * cols // block
    data = np.minimum(rng.geometric(0.08, size=(n, size)), 255).astype(np.uint8)
    scales = rng.uniform(1e-4, 1e-2, size=n).astype(np.float16).view(np.uint8).reshape(n, 2)
    at = {T.Q4_K: 0, T.Q5_K: 0, T.Q6_K: size - 2, T.Q2_K: size - 4, T.Q3_K: size - 2, T.IQ4_NL: 0}.get(qtype)
    if at is not None:
        data[:, at:at + 2] = scales
    return data.reshape(rows, cols // block * size)


def make_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, T]], *, alignment: int | None = None) -> Path:
    w = gguf.GGUFWriter(path, "llama")
    w.add_string("general.name", "pack test")
    w.add_uint32("llama.context_length", 128)
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "<s>"])
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for name, (data, qtype) in tensors.items():
        if data.dtype == np.uint8 and qtype not in (T.I8,):
            w.add_tensor(name, data, raw_dtype=qtype)
        else:
            w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def mixed_tensors(rng: np.random.Generator, scale: int = 1) -> dict[str, tuple[np.ndarray, T]]:
    x = rng.standard_normal((64, 256 * scale)).astype(np.float32)
    out: dict[str, tuple[np.ndarray, T]] = {
        "norm.weight": (rng.standard_normal(96).astype(np.float32), T.F32),
        "zeros.weight": (np.zeros((8, 64), np.float32), T.F32),
        "half.weight": (x[:8].astype(np.float16), T.F16),
        "bf16.weight": (gguf.quants.quantize(x[:8], T.BF16), T.BF16),
    }
    for qt in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        out[f"{qt.name.lower()}.weight"] = (gguf.quants.quantize(x, qt), qt)
    for qt in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL):
        out[f"{qt.name.lower()}.weight"] = (random_blocks(rng, qt, 16, 256 * scale), qt)
    return out


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def small(tmp_path_factory, rng) -> tuple[Path, Path]:
    """A small GGUF with every common tensor type, and its packed form."""
    d = tmp_path_factory.mktemp("small")
    src = make_gguf(d / "small.gguf", mixed_tensors(rng))
    dst = d / "small.ggpk"
    pack(src, dst, threads=2)
    return src, dst


@pytest.fixture(scope="module")
def rich(tmp_path_factory, rng) -> tuple[Path, Path]:
    """Tensors big enough for context tables and block palettes to pay off."""
    d = tmp_path_factory.mktemp("rich")
    real = rng.standard_normal((256, 64, 32)).astype(np.float32)
    real[rng.random((256, 64)) < 0.3, 0] *= 12     # outliers: their blocks' other quants crowd near 0
    real = real.reshape(256, 2048)
    tensors = {
        "grid.weight": (gguf.quants.quantize(grid_weights(rng, 128, 2048), T.Q8_0), T.Q8_0),
        "real.weight": (gguf.quants.quantize(real.astype(np.float32), T.Q8_0), T.Q8_0),
        "norm.weight": (np.ones(2048, np.float32), T.F32),
    }
    src = make_gguf(d / "rich.gguf", tensors)
    dst = d / "rich.ggpk"
    pack(src, dst, threads=2, chunk_size=128 * 1024)
    return src, dst


@pytest.fixture(scope="module")
def smol_packed(tmp_path_factory) -> tuple[Path, Path]:
    """The real SmolLM2-135M Q4_1 file and its packed form."""
    src = smollm2_gguf()
    packed = tmp_path_factory.mktemp("smol") / "smol.ggpk"
    pack(src, packed, threads=2)
    return src, packed


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- round trips

def test_unpack_restores_every_tensor_type_byte_for_byte(small, tmp_path):
    src, packed = small
    out = tmp_path / "out.gguf"
    unpack(packed, out)
    assert out.read_bytes() == src.read_bytes()
    assert bytes(unpack_to_memory(packed)) == src.read_bytes()


def test_packing_is_deterministic_and_independent_of_thread_count(small, tmp_path):
    src, packed = small
    again = tmp_path / "again.ggpk"
    pack(src, again, threads=1)
    assert again.read_bytes() == packed.read_bytes()


def test_packed_file_is_smaller_and_fields_without_gain_are_stored_raw(small):
    src, packed = small
    assert packed.stat().st_size < src.stat().st_size
    info = pack_info(packed)
    modes = {(t.name, f.name): f.mode for t in info.tensors for f in t.fields}
    # f16 low bytes of random scales are incompressible, their high bytes are not
    assert modes[("q8_0.weight", "d.lo")] == "raw"
    assert modes[("q8_0.weight", "d.hi")] != "raw"
    for t in info.tensors:
        for f in t.fields:
            if f.mode == "raw":
                assert f.packed_bytes == f.raw_bytes
            else:
                assert f.packed_bytes < f.raw_bytes


def test_context_tables_and_block_palettes_are_chosen_where_they_pay(rich, tmp_path):
    src, packed = rich
    info = {t.name: t for t in pack_info(packed).tensors}
    grid_qs = next(f for f in info["grid.weight"].fields if f.name == "qs")
    real_qs = next(f for f in info["real.weight"].fields if f.name == "qs")
    assert grid_qs.mode == "palette" and grid_qs.packed_bytes < 0.75 * grid_qs.raw_bytes
    assert real_qs.mode == "huffman+context"
    assert bytes(unpack_to_memory(packed)) == src.read_bytes()


def test_min_saving_stores_low_gain_fields_raw_and_still_round_trips(small, tmp_path):
    src, packed = small
    fast = tmp_path / "fast.ggpk"
    pack(src, fast, min_saving=0.5)
    coded = [f for t in pack_info(fast).tensors for f in t.fields if f.mode != "raw"]
    assert all(f.packed_bytes <= 0.5 * f.raw_bytes + 256 for f in coded)
    assert fast.stat().st_size > packed.stat().st_size
    assert bytes(unpack_to_memory(fast)) == src.read_bytes()


def test_pack_info_accounts_for_every_byte_of_tensor_data(small):
    src, packed = small
    info = pack_info(packed)
    reader = gguf.GGUFReader(src)
    by_name = {t.name: t for t in info.tensors}
    for t in reader.tensors:
        assert by_name[t.name].raw_bytes == t.n_bytes
        assert sum(f.raw_bytes for f in by_name[t.name].fields) == t.n_bytes
    header = info.header
    assert sum(t.raw_bytes for t in info.tensors) == header.original_size - len(header.gguf_header)
    chunk_bytes = sum(t.packed_bytes for t in info.tensors)
    assert HEADER_SIZE + len(header.gguf_header) + chunk_bytes + info.index_bytes == packed.stat().st_size


def test_packed_header_shows_metadata_and_tensors_without_unpacking(small):
    src, packed = small
    h = read_packed_header(packed)
    reader = gguf.GGUFReader(src)
    assert h.gguf_header == src.read_bytes()[:reader.data_offset]
    assert h.gguf.get("general.name") == "pack test"
    assert h.gguf.get("tokenizer.ggml.tokens") == ["a", "b", "<s>"]
    assert [t.name for t in h.gguf.tensors] == [t.name for t in reader.tensors]
    assert [t.type_name for t in h.gguf.tensors] == [t.tensor_type.name for t in reader.tensors]
    assert h.sha256 == sha(src)
    assert h.original_size == src.stat().st_size


def test_the_header_a_packed_file_keeps_reads_as_the_gguf_it_came_from(small):
    from gguf_tools.gguf_file.reader import GGUFFile

    src, packed = small
    kept = GGUFFile.from_header(read_packed_header(packed).gguf_header, what=str(packed), values="scalars")
    plain = GGUFFile.open(src)
    assert {k: kept.get(k) for k in kept.fields} == {k: plain.get(k) for k in plain.fields}
    assert kept.tensors == plain.tensors and kept.data_offset == plain.data_offset
    assert kept.get("general.name") == "pack test"


def test_is_packed_tells_packed_files_from_gguf_and_missing_files(small, tmp_path):
    src, packed = small
    assert is_packed(packed)
    assert not is_packed(src)
    assert not is_packed(tmp_path / "missing")


def test_bytes_between_and_after_tensors_survive_even_when_not_zero(tmp_path, rng):
    src = make_gguf(tmp_path / "pad.gguf", {
        "a": (rng.standard_normal(7).astype(np.float32), T.F32),
        "b": (rng.standard_normal(5).astype(np.float32), T.F32),
    }, alignment=64)
    data = bytearray(src.read_bytes())
    reader = gguf.GGUFReader(src)
    a = reader.tensors[0]
    pad_at = a.data_offset + a.n_bytes
    data[pad_at:pad_at + 4] = b"\xde\xad\xbe\xef"   # padding a writer need not zero
    data += b"trailing bytes after the last tensor"
    src.write_bytes(bytes(data))
    packed = tmp_path / "pad.ggpk"
    pack(src, packed)
    assert bytes(unpack_to_memory(packed)) == bytes(data)


def test_tensors_of_unknown_types_are_refused_as_llama_cpp_refuses_them(tmp_path, rng):
    src = make_gguf(tmp_path / "odd.gguf", {
        "known": (rng.standard_normal(64).astype(np.float32), T.F32),
        "odd": (rng.standard_normal(64).astype(np.float32), T.F32),
    })
    data = bytearray(src.read_bytes())
    name = b"odd"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)   # the tensor info of "odd"
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, 200)              # a type id nobody knows yet
    src.write_bytes(bytes(data))
    packed = tmp_path / "odd.ggpk"
    with pytest.raises(InputError, match="unknown tensor type 200"):
        pack(src, packed)
    assert not packed.exists()


def test_a_gguf_without_tensors_round_trips(tmp_path):
    src = make_gguf(tmp_path / "empty.gguf", {})
    packed = tmp_path / "empty.ggpk"
    stats = pack(src, packed)
    assert stats.n_chunks == 0
    assert bytes(unpack_to_memory(packed)) == src.read_bytes()


def test_open_for_llama_gives_a_path_holding_the_original_bytes(small):
    src, packed = small
    with open_for_llama(packed, verify=True) as path:
        assert Path(path).read_bytes() == src.read_bytes()
        if sys.platform.startswith("linux"):
            assert path.startswith("/proc/self/fd/")   # no copy on disk
    if sys.platform.startswith("linux"):
        with pytest.raises(OSError):
            os.stat(path)


def test_the_index_checked_in_c_gives_the_reference_decode_plan(small, rich, smol_packed):
    from gguf_tools.packed import _Packed

    for _, packed in (small, rich, smol_packed):
        with _Packed(packed) as p:
            for got, want in zip(p.plan(), decode_plan(p.header, p.index)):
                assert got.dtype == want.dtype and np.array_equal(got, want)


# ---------------------------------------------------------------- the real model

def test_real_model_packs_smaller_than_zstd_and_unpacks_identically(smol_packed, tmp_path):
    src, packed = smol_packed
    assert packed.stat().st_size < 0.914 * src.stat().st_size   # zstd -19 keeps 91.4% of this file
    out = tmp_path / "smol.gguf"
    unpack(packed, out, threads=2)
    assert sha(out) == sha(src)
    # the reference decoder agrees with the C decoder on real chunks (a few small ones: it is slow)
    from gguf_tools.packed import _Packed

    with _Packed(packed) as p:
        jobs, words, tables = decode_plan(p.header, p.index)
        original = src.read_bytes()
        picked = np.argsort(jobs[:, 3])[:3].tolist() + [int(np.argmax(jobs[:, 3] == jobs[:, 3].max()))]
        for j in picked:
            dst = bytearray(p.header.original_size)
            decode_ref(p.mm[:], dst, jobs[j:j + 1], words, tables)
            a, n = int(jobs[j, 2]), int(jobs[j, 3])
            assert dst[a:a + n] == original[a:a + n]


def test_llama_cpp_runs_the_packed_model_like_the_original(smol_packed):
    llama_cpp = pytest.importorskip("llama_cpp")
    src, packed = smol_packed

    def first_tokens(path: str) -> list[int]:
        llm = llama_cpp.Llama(path, n_ctx=64, n_threads=2, verbose=False)
        try:
            tokens = llm.tokenize(b"The capital of France is")
            out = []
            for tok in llm.generate(tokens, temp=0.0, top_k=1):
                out.append(tok)
                if len(out) == 4:
                    break
            return out
        finally:
            llm.close()

    with open_for_llama(packed) as path:
        assert first_tokens(path) == first_tokens(str(src))


# ---------------------------------------------------------------- code construction

def test_code_lengths_respect_the_limit_and_form_a_complete_code(rng):
    for _ in range(50):
        n = int(rng.integers(2, 257))
        hist = np.zeros(256, np.int64)
        hist[rng.choice(256, n, replace=False)] = np.maximum(1, (rng.pareto(0.7, n) * 10).astype(np.int64))
        lengths = code_lengths(hist)
        used = lengths[hist > 0].astype(int)
        assert (lengths[hist == 0] == 0).all()
        assert used.max() <= MAX_BITS
        assert sum(2.0 ** -used) == 1.0
        # within a bit per symbol of the entropy: never worse than a flat code
        p = hist[hist > 0] / hist.sum()
        assert coded_bits(hist, lengths) / hist.sum() < -(p * np.log2(p)).sum() + 1


def test_a_lone_symbol_gets_a_one_bit_code():
    hist = np.zeros(256, np.int64)
    hist[7] = 1000
    lengths = code_lengths(hist)
    assert lengths[7] == 1 and lengths.sum() == 1


def test_native_crc32c_matches_the_reference_and_the_standard_check_value(rng):
    assert _huffman.crc32c(b"123456789") == 0xE3069283
    for n in (0, 1, 7, 8, 9, 4095, 12288, 12289, 50001):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert _huffman.crc32c(data) == crc32c_ref(data)


def test_native_limits_match_the_format_module():
    from gguf_tools.packed import format as f

    names = ("MAX_BITS", "MAX_BLOCK", "MAX_FIELDS", "MAX_RUNS", "MAX_FIELD_TABLES", "MAX_CHUNK", "N_STREAMS",
             "HEADER_SIZE", "MAX_TABLES", "MAX_SECTIONS", "MAX_RATIO", "RATIO_SLACK")
    assert [getattr(_huffman, n) for n in names] == [getattr(f, n) for n in names]


# ---------------------------------------------------------------- C decoder == reference decoder

def random_layout(rng: np.random.Generator) -> tuple[int, list[tuple[int, list[tuple[int, int]]]]]:
    """A block of random size cut into fields of random runs (some scattered), in random order."""
    bs = int(rng.integers(1, 48))
    perm = rng.permutation(bs)
    cuts = sorted(set(rng.integers(1, bs, size=int(rng.integers(0, min(bs, 6)))).tolist())) if bs > 1 else []
    fields = []
    for part in np.split(perm, cuts):
        part = sorted(part.tolist())
        runs: list[tuple[int, int]] = []
        for x in part:
            if runs and runs[-1][0] + runs[-1][1] == x:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((x, 1))
        fields.append(runs[:MAX_RUNS])
    fields = [f for f in fields if sum(n for _, n in f) == len({x for a, n in f for x in range(a, a + n)})]
    covered = {x for f in fields for a, n in f for x in range(a, a + n)}
    fields += [[(x, 1)] for x in range(bs) if x not in covered]
    return bs, [(i, f) for i, f in enumerate(fields)]


def skewed_blocks(rng: np.random.Generator, nblocks: int, bs: int) -> np.ndarray:
    kind = rng.integers(0, 3)
    if kind == 0:   # few distinct values per block
        pal = rng.integers(0, 256, size=(nblocks, 4))
        return np.take_along_axis(pal, rng.integers(0, 4, size=(nblocks, bs)), axis=1).astype(np.uint8)
    if kind == 1:   # geometric
        return np.minimum(rng.geometric(0.3, size=(nblocks, bs)), 255).astype(np.uint8)
    return rng.integers(0, 256, size=(nblocks, bs), dtype=np.uint8)


def random_case(rng: np.random.Generator):
    """Random data, a random layout with random modes, tables fitted to the data, C-encoded."""
    bs, fields = random_layout(rng)
    nblocks = int(rng.integers(1, 120))
    data = skewed_blocks(rng, nblocks, bs)
    src = data.tobytes()
    raw_fields = [FieldCoding(MODE_RAW, tuple(runs)) for _, runs in fields]
    raw_words = np.asarray(layout_words(bs, raw_fields), np.int32)
    hist = np.frombuffer(_huffman.histogram(src, 0, len(src), raw_words, 0), np.uint64).reshape(-1, 256)
    tables: list[np.ndarray] = []

    def table(h: np.ndarray) -> int:
        h = h if h.sum() else np.ones(256, np.uint64)
        tables.append(code_lengths(h))
        return len(tables) - 1

    coded = []
    for fi, (_, runs) in enumerate(fields):
        width = sum(n for _, n in runs)
        ctx_candidates = [ci for ci in range(fi) if raw_fields[ci].width == 1]
        mode = int(rng.choice([MODE_RAW, MODE_HUFF, MODE_CTX, MODE_PALETTE]))
        if mode == MODE_CTX and not ctx_candidates:
            mode = MODE_HUFF
        if mode == MODE_RAW:
            coded.append(FieldCoding(MODE_RAW, tuple(runs)))
        elif mode == MODE_HUFF:
            coded.append(FieldCoding(MODE_HUFF, tuple(runs), (table(hist[fi]),)))
        elif mode == MODE_CTX:
            ci = int(rng.choice(ctx_candidates))
            joint = np.frombuffer(_huffman.joint_histogram(src, 0, len(src), raw_words, 0, fi, ci),
                                  np.uint64).reshape(256, 256)
            n_groups = int(rng.integers(1, 5))
            ctx_map = rng.integers(0, n_groups, 256).astype(np.uint8)
            tabs = tuple(table(joint[ctx_map == g].sum(axis=0)) for g in range(n_groups))
            coded.append(FieldCoding(MODE_CTX, tuple(runs), tabs, ci, ctx_map.tobytes()))
        else:
            bias = int(rng.choice([0, 128]))
            h4 = np.frombuffer(_huffman.palette_histogram(src, 0, len(src), raw_words, 0, fi, bias),
                               np.uint64).reshape(4, 256)
            coded.append(FieldCoding(MODE_PALETTE, tuple(runs), tuple(table(h) for h in h4), bias))
        assert width >= 1
    words = np.asarray(layout_words(bs, coded), np.int32)
    tab = np.stack(tables) if tables else np.zeros((0, 256), np.uint8)
    payload, crc = _huffman.encode_chunk(src, 0, len(src), words, 0, tab)
    job = np.array([[0, len(payload), 0, len(src), crc, 0]], np.int64)
    return src, payload, job, words, tab


def both_decoders(payload: bytes, job, words, tab, n: int, verify_crc: bool):
    c_out, py_out = bytearray(n), bytearray(n)
    c_err = py_err = None
    try:
        _huffman.decode(payload, c_out, job, words, tab, threads=1, verify_crc=verify_crc)
    except ValueError as e:
        c_err = str(e)
    try:
        decode_ref(payload, py_out, job, words, tab, verify_crc=verify_crc)
    except DecodeError as e:
        py_err = str(e)
    return c_out, c_err, py_out, py_err


def test_c_and_reference_decoders_agree_on_random_streams_in_every_mode(rng):
    for _ in range(40):
        src, payload, job, words, tab = random_case(rng)
        c_out, c_err, py_out, py_err = both_decoders(payload, job, words, tab, len(src), True)
        assert c_err is None and py_err is None
        assert bytes(c_out) == bytes(py_out) == src


def test_c_and_reference_decoders_agree_on_corrupted_streams(rng):
    disagreements = []
    for _ in range(40):
        src, payload, job, words, tab = random_case(rng)
        for _ in range(5):
            bad = bytearray(payload)
            for _ in range(int(rng.integers(1, 4))):
                bad[int(rng.integers(0, len(bad)))] ^= 1 << int(rng.integers(0, 8))
            c_out, c_err, py_out, py_err = both_decoders(bytes(bad), job, words, tab, len(src), False)
            if (c_err is None) != (py_err is None) or (c_err is None and c_out != py_out):
                disagreements.append((c_err, py_err))
            if c_err is not None:
                assert c_err == py_err   # same check, same order, same words
    assert not disagreements


def test_c_decoder_spreads_chunks_over_threads_with_the_same_result(rich):
    from gguf_tools.packed import _Packed

    with _Packed(rich[1]) as p:
        jobs, words, tables = decode_plan(p.header, p.index)
        outs = []
        for threads in (1, 2, 5):
            dst = bytearray(p.header.original_size)
            _huffman.decode(p.mm, dst, jobs, words, tables, threads=threads)
            outs.append(bytes(dst[p.header.prefix_size:]))
        assert outs[0] == outs[1] == outs[2]


# ---------------------------------------------------------------- hostile input: the decoder

def plain_case():
    data = bytes(range(64)) * 16
    lengths = np.full(256, 8, np.uint8)
    words = np.asarray(layout_words(16, [FieldCoding(MODE_HUFF, ((0, 16),), (0,))]), np.int32)
    payload, crc = _huffman.encode_chunk(data, 0, len(data), words, 0, lengths[None])
    job = np.array([[0, len(payload), 0, len(data), crc, 0]], np.int64)
    return data, payload, job, words, lengths[None].copy()


@pytest.mark.parametrize("change, message", [
    (lambda lengths: lengths.__setitem__(0, 7), "over-subscribed"),
    (lambda lengths: lengths.__setitem__(0, 9), "incomplete"),
    (lambda lengths: lengths.__setitem__(slice(0, 256), 0), "empty"),
    (lambda lengths: lengths.__setitem__(slice(0, 256), np.r_[13, 13, np.zeros(254, np.uint8)]), "past the limit"),
    (lambda lengths: lengths.__setitem__(slice(1, 256), 0), "single-symbol"),
])
def test_decoder_rejects_bad_code_tables(change, message):
    data, payload, job, words, tables = plain_case()
    change(tables[0])
    for decoder in ("c", "ref"):
        with pytest.raises(ValueError, match=message):
            if decoder == "c":
                _huffman.decode(payload, bytearray(len(data)), job, words, tables)
            else:
                decode_ref(payload, bytearray(len(data)), job, words, tables)


@pytest.mark.parametrize("column, value, message", [
    (0, 5, "outside the packed file"),
    (1, 10 ** 9, "outside the packed file"),
    (2, 1, "outside the output"),
    (3, 10 ** 9, "outside the output"),
    (3, "ratio", "implausible compression ratio"),
    (3, 1001, "whole number of blocks"),
    (4, 12345, "checksum mismatch"),
    (5, 100, "layout offset out of range"),
])
def test_decoder_rejects_jobs_that_do_not_fit(column, value, message):
    data, payload, job, words, tables = plain_case()
    n = len(data)
    if value == "ratio":   # more output than 8 bits per coded bit could ever give
        value = n = -(-(8 * len(payload) + 65) // 16) * 16
    job[0, column] = value
    for decode in (_huffman.decode, decode_ref):
        with pytest.raises(ValueError, match=message):
            decode(payload, bytearray(n), job, words, tables)


def test_decoder_rejects_truncated_and_padded_streams():
    data, payload, job, words, tables = plain_case()
    short = job.copy()
    short[0, 1] -= 1
    with pytest.raises(ValueError):
        _huffman.decode(payload[:-1], bytearray(len(data)), short, words, tables)
    longer = job.copy()
    longer[0, 1] += 1
    with pytest.raises(ValueError, match="trailing"):
        _huffman.decode(payload + b"\0", bytearray(len(data)), longer, words, tables)


def test_stream_decoder_rejects_overrun_and_unused_bytes():
    lengths = np.full(256, 8, np.uint8)
    assert decode_stream_ref(b"\x00\x01", 2, lengths) == bytes([0, 128])
    with pytest.raises(DecodeError, match="overrun"):
        decode_stream_ref(b"\x00", 2, lengths)
    with pytest.raises(DecodeError, match="trailing"):
        decode_stream_ref(b"\x00\x00\x00", 2, lengths)
    with pytest.raises(DecodeError, match="more symbols"):
        decode_stream_ref(b"\x00", 9, lengths)


# ---------------------------------------------------------------- hostile input: whole files

def rewrite(packed: Path, out: Path, *, header=None, index=None, tables=None, sections=None, chunks=None,
            data: bytes | None = None) -> Path:
    """A copy of a packed file with parts of its header or index replaced, checksums kept valid,
    so that the check under test (not a checksum) is what rejects it."""
    raw = packed.read_bytes()
    h = parse_header(raw[:HEADER_SIZE], len(raw), "t")
    idx = parse_index(raw[h.index_offset:], h, "t")
    tables = idx.tables if tables is None else tables
    sections = idx.sections if sections is None else sections
    chunks = idx.chunks.copy() if chunks is None else chunks
    body = raw[HEADER_SIZE:h.index_offset] if data is None else data
    new_index = encode_index(tables, sections, chunks) if index is None else index
    from gguf_tools.packed.format import crc32c

    h = dataclasses.replace(h, index_offset=HEADER_SIZE + len(body), index_size=len(new_index),
                            index_crc=crc32c(new_index))
    if header is not None:
        h = header(h)
    out.write_bytes(encode_header(h) + body + new_index)
    return out


def index_of(packed: Path):
    raw = packed.read_bytes()
    h = parse_header(raw[:HEADER_SIZE], len(raw), "t")
    return h, parse_index(raw[h.index_offset:], h, "t")


def read_for_llama(path: Path) -> bytes:
    with open_for_llama(path, threads=2) as p, open(p, "rb") as fh:
        return fh.read()


# Both ways out of a packed file check it: into memory (the index parsed in Python), and for
# llama.cpp (the index checked in C, straight into a decode plan).
READERS = {"memory": unpack_to_memory, "llama": read_for_llama}


@pytest.fixture(params=sorted(READERS))
def read_packed(request):
    return READERS[request.param]


def test_rewrite_helper_alone_keeps_the_file_valid(small, tmp_path):
    src, packed = small
    same = rewrite(packed, tmp_path / "same.ggpk")
    assert bytes(unpack_to_memory(same)) == src.read_bytes()


def test_truncated_packed_files_are_rejected(read_packed, small, tmp_path):
    _, packed = small
    raw = packed.read_bytes()
    for n in (0, 4, 8, 50, HEADER_SIZE, HEADER_SIZE + 100, len(raw) // 2, len(raw) - 1):
        bad = tmp_path / f"trunc{n}.ggpk"
        bad.write_bytes(raw[:n])
        with pytest.raises(InputError):
            read_packed(bad)


@pytest.mark.parametrize("where", ["header", "gguf header", "chunk", "index"])
def test_a_flipped_bit_anywhere_is_caught(read_packed, small, tmp_path, where):
    _, packed = small
    raw = bytearray(packed.read_bytes())
    h, idx = index_of(packed)
    at = {"header": 20, "gguf header": HEADER_SIZE + 30,
          "chunk": int(idx.chunks["packed_offset"][len(idx.chunks) // 2]) + 40,
          "index": h.index_offset + 20}[where]
    raw[at] ^= 0x10
    bad = tmp_path / "flip.ggpk"
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="checksum|corrupt"):
        read_packed(bad)


def test_a_wrong_sha256_fails_unpack_and_leaves_nothing_behind(small, tmp_path):
    _, packed = small
    bad = rewrite(packed, tmp_path / "sha.ggpk", header=lambda h: dataclasses.replace(h, sha256=b"\0" * 32))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InputError, match="sha256"):
        unpack(bad, out_dir / "x.gguf")
    assert list(out_dir.iterdir()) == []
    with pytest.raises(InputError, match="sha256"):
        unpack_to_memory(bad)


def test_bad_code_tables_in_a_file_are_rejected(read_packed, small, tmp_path):
    _, packed = small
    _, idx = index_of(packed)
    k = int(np.argmax((idx.tables > 0).sum(axis=1)))     # the table with the most symbols
    used = np.flatnonzero(idx.tables[k])
    assert used.size > 3

    def over(t): t[used[:3]] = 1
    def incomplete(t): t[used[0]] = 0
    def too_long(t): t[used[0]] = 15

    for message, change in (("over-subscribed", over), ("incomplete", incomplete), ("12-bit limit", too_long)):
        t = idx.tables.copy()
        change(t[k])
        with pytest.raises(InputError, match=message):
            read_packed(rewrite(packed, tmp_path / "tab.ggpk", tables=t))


def test_chunk_offsets_out_of_range_or_overlapping_are_rejected(read_packed, small, tmp_path):
    _, packed = small
    _, idx = index_of(packed)
    for shift in (-1, 1, 10 ** 9):
        c = idx.chunks.copy()
        c["packed_offset"][1] = int(c["packed_offset"][1]) + shift
        with pytest.raises(InputError, match="chunk offsets"):
            read_packed(rewrite(packed, tmp_path / "off.ggpk", chunks=c))


def test_sections_that_disagree_with_the_tensor_infos_are_rejected(read_packed, small, tmp_path):
    _, packed = small
    _, idx = index_of(packed)
    tensor_sections = [i for i, s in enumerate(idx.sections) if s.tensor >= 0]
    a, b = tensor_sections[1], tensor_sections[2]
    sections = list(idx.sections)
    sections[a] = dataclasses.replace(sections[a], tensor=idx.sections[b].tensor)
    with pytest.raises(InputError, match="disagrees with tensor"):
        read_packed(rewrite(packed, tmp_path / "sec.ggpk", sections=sections))
    sections = list(idx.sections)
    sections[a] = dataclasses.replace(sections[a], tensor=10 ** 6)
    with pytest.raises(InputError, match="not in the GGUF header"):
        read_packed(rewrite(packed, tmp_path / "sec2.ggpk", sections=sections))


def test_implausible_sizes_are_rejected_before_any_allocation(read_packed, small, tmp_path):
    _, packed = small
    huge = rewrite(packed, tmp_path / "huge.ggpk", header=lambda h: dataclasses.replace(h, original_size=1 << 50))
    with pytest.raises(InputError, match="implausible"):
        read_packed(huge)
    _, idx = index_of(packed)
    c = idx.chunks.copy()
    c["orig_size"][0] = MAX_CHUNK * 2
    with pytest.raises(InputError):
        read_packed(rewrite(packed, tmp_path / "big.ggpk", chunks=c))


def test_a_plain_gguf_is_not_mistaken_for_a_packed_file(small):
    src, _ = small
    with pytest.raises(InputError, match="not a packed GGUF"):
        unpack_to_memory(src)
    with pytest.raises(InputError, match="already packed"):
        pack(small[1], small[1].with_suffix(".again"))


def test_random_corruption_never_escapes_as_anything_but_input_error(read_packed, small, tmp_path, rng):
    _, packed = small
    raw = packed.read_bytes()
    bad = tmp_path / "fuzz.ggpk"
    for i in range(150):
        mutated = bytearray(raw)
        for _ in range(int(rng.integers(1, 6))):
            mutated[int(rng.integers(0, len(mutated)))] = int(rng.integers(0, 256))
        if i % 3 == 0:
            mutated = mutated[:int(rng.integers(0, len(mutated)))]
        bad.write_bytes(bytes(mutated))
        try:
            read_packed(bad)
        except InputError:
            pass


def test_fuzz_regression_corpus_replays_cleanly():
    """Every input kept from fuzzing (fuzz/fuzz_unpack.py) is rejected with InputError, or decoded
    the same by the C and reference decoders; none crashes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fuzz_unpack", Path(__file__).parents[1] / "fuzz" / "fuzz_unpack.py")
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    files = sorted(p for p in CORPUS.iterdir() if p.suffix == ".fuzz")
    assert files, "the regression corpus is missing"
    for path in files:
        fuzz.check_input(path.read_bytes())


# ---------------------------------------------------------------- atomic output

def test_pack_refuses_a_missing_output_directory(small, tmp_path):
    src, _ = small
    with pytest.raises(OutputError):
        pack(src, tmp_path / "no" / "such" / "dir.ggpk")


def test_ctrl_c_during_pack_leaves_no_partial_output(tmp_path):
    src = smollm2_gguf()
    out = tmp_path / "out"
    out.mkdir()
    code = f"from gguf_tools.packed import pack; pack({str(src)!r}, {str(out / 'x.ggpk')!r}, threads=1)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".partial") for p in out.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "pack ended before it could be interrupted"
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and b"KeyboardInterrupt" in err
    assert list(out.iterdir()) == []


def test_layout_words_match_the_index_encoding(small):
    _, packed = small
    _, idx = index_of(packed)
    for s in idx.sections:
        words = layout_words(s.block_size, s.fields)
        assert words[0] == s.block_size and words[1] == len(s.fields)
        n = 2
        for f in s.fields:
            assert words[n] == f.mode
            n += 3 + len(f.tables) + len(f.ctx_map) + 1 + 2 * len(f.runs)
        assert n == len(words)
    assert {MODE_RAW, MODE_HUFF} <= {f.mode for s in idx.sections for f in s.fields}
    assert struct.calcsize("<8sIIQQQQ32sIII") + 4 == HEADER_SIZE
