"""A time-boxed fuzz run over packed files and decode plans, for every CI run.

Mutations of the seed inputs of fuzz/fuzz_unpack.py (small packed files using every field mode,
and random decode plans) go through ``check_input``: whole files through ``unpack_to_memory`` and
``open_for_llama`` (which must agree), files with checksums recomputed so mutations reach the index
checks and the C decoder, and plans through the C decoder and the pure-Python reference (same
error or same bytes). Anything but a clean ``InputError`` or agreement fails, and the input is
saved for tests/pack_corpus/. The sequence of inputs is fixed by the seed; only how far it gets
depends on the time box (GGUF_TOOLS_FUZZ_SECONDS, default 20).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("GGUF_TOOLS_FUZZ_SECONDS", "20"))


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_unpack", REPO / "fuzz" / "fuzz_unpack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mutate(rng: np.random.Generator, data: bytes, other: bytes) -> bytes:
    """One to eight edits of the kinds libFuzzer makes: byte sets, bit flips, interesting values,
    inserts, deletes, copies from another input, truncation. The kind byte (first) is kept."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        if len(b) < 2:
            b += bytes(4)
        at = int(rng.integers(1, len(b)))
        kind = int(rng.integers(0, 7))
        if kind == 0:
            b[at] = int(rng.integers(0, 256))
        elif kind == 1:
            b[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:
            value = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFFFF, 1 << 31][int(rng.integers(0, 8))]
            width = [1, 2, 4, 8][int(rng.integers(0, 4))]
            b[at:at + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, "little")
        elif kind == 3:
            b[at:at] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
        elif kind == 4:
            del b[at:at + int(rng.integers(1, 65))]
        elif kind == 5 and len(other) > 1:
            start = int(rng.integers(1, len(other)))
            b[at:at + 16] = other[start:start + int(rng.integers(1, 33))]
        else:
            b = b[:at]
    return bytes(b)


def test_mutated_packed_files_and_plans_fail_cleanly_or_agree(fuzz, tmp_path):
    seeds_dir = tmp_path / "seeds"
    fuzz._seed_corpus(seeds_dir)
    seeds = [p.read_bytes() for p in sorted(seeds_dir.iterdir())]
    seeds += [p.read_bytes() for p in sorted((REPO / "tests" / "pack_corpus").glob("*.fuzz"))]
    rng = np.random.default_rng(20260501)
    deadline = time.monotonic() + SECONDS
    runs = 0
    kinds = set()
    while time.monotonic() < deadline or runs < 50:
        i, j = rng.integers(0, len(seeds), 2)
        data = mutate(rng, seeds[i], seeds[j])
        try:
            fuzz.check_input(data)
        except Exception as e:  # noqa: BLE001 - any escape is the finding
            saved = tmp_path / f"crash-{hashlib.sha1(data).hexdigest()[:12]}.fuzz"
            saved.write_bytes(data)
            raise AssertionError(f"input {runs} ({saved}) escaped with {type(e).__name__}: {e}") from e
        kinds.add(data[0] % 3)
        runs += 1
    assert kinds == {0, 1, 2}, "every kind of input was exercised"
