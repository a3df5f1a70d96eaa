"""Packing round trips: every tensor type restored byte for byte, the coding choices, pack_info,
loading for llama.cpp, the real model, and output files that appear whole or not at all."""
from __future__ import annotations

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
from pack_fixtures import T, make_gguf, sha

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
from gguf_tools.packed.header import HEADER_SIZE
from gguf_tools.packed.reference import decode_plan, decode_ref

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


def test_without_memfd_the_model_goes_through_a_temp_file_that_is_removed(small, monkeypatch):
    """macOS and other systems without memfd_create: a temporary file, gone afterwards."""
    src, packed = small
    monkeypatch.delattr(os, "memfd_create", raising=False)
    with open_for_llama(packed, verify=True) as path:
        assert not path.startswith("/proc/")
        assert Path(path).read_bytes() == src.read_bytes()
    assert not Path(path).exists()


def test_the_index_checked_in_c_gives_the_reference_decode_plan(small, rich, smol_packed):
    from gguf_tools.packed.decode import _Packed

    for _, packed in (small, rich, smol_packed):
        with _Packed(packed) as p:
            jobs, words, tables = decode_plan(p.header, p.index)
            want = (jobs.astype("<i8"), words.astype("<i4"), tables.astype(np.uint8))
            assert p.decode_jobs() == tuple(w.tobytes() for w in want)  # int64 rows, int32 words, uint8 tables


# ---------------------------------------------------------------- the real model

def test_real_model_packs_smaller_than_zstd_and_unpacks_identically(smol_packed, tmp_path):
    src, packed = smol_packed
    assert packed.stat().st_size < 0.914 * src.stat().st_size   # zstd -19 keeps 91.4% of this file
    out = tmp_path / "smol.gguf"
    unpack(packed, out, threads=2)
    assert sha(out) == sha(src)
    # the reference decoder agrees with the C decoder on real chunks (a few small ones: it is slow)
    from gguf_tools.packed.decode import _Packed

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
