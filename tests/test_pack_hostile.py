"""Hostile packed files: truncation, flipped bits, wrong checksums, bad tables, sections and sizes,
and random corruption all end as one InputError, whichever way the file is read."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from pack_fixtures import index_of

from gguf_tools.errors import InputError
from gguf_tools.packed import (
    open_for_llama,
    pack,
    unpack,
    unpack_to_memory,
)
from gguf_tools.packed.format import MAX_CHUNK, encode_index, parse_index
from gguf_tools.packed.header import HEADER_SIZE, encode_header, parse_header

CORPUS = Path(__file__).parent / "pack_corpus"


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
    from gguf_tools.packed.header import crc32c

    h = h._replace(index_offset=HEADER_SIZE + len(body), index_size=len(new_index),
               index_crc=crc32c(new_index))
    if header is not None:
        h = header(h)
    out.write_bytes(encode_header(h) + body + new_index)
    return out


def read_for_llama(path: Path) -> bytes:
    with open_for_llama(path, threads=2) as p, open(p, "rb") as fh:
        return fh.read()


# Both ways out of a packed file check it: into memory (the index parsed in Python), and for
# llama.cpp (the index checked in C, straight into the decoder's jobs).
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
    bad = rewrite(packed, tmp_path / "sha.ggpk", header=lambda h: h._replace(sha256=b"\0" * 32))
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
    huge = rewrite(packed, tmp_path / "huge.ggpk", header=lambda h: h._replace(original_size=1 << 50))
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
