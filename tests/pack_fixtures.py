"""Packed-file test data: small synthetic GGUF files of every common tensor type, the real SmolLM2
model, and their packed forms (pytest fixtures, module-scoped), for the tests/test_pack_*.py files."""
from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import smollm2_gguf

from gguf_tools.packed import pack
from gguf_tools.packed.format import parse_index
from gguf_tools.packed.header import HEADER_SIZE, parse_header

T = gguf.GGMLQuantizationType


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


def index_of(packed: Path):
    raw = packed.read_bytes()
    h = parse_header(raw[:HEADER_SIZE], len(raw), "t")
    return h, parse_index(raw[h.index_offset:], h, "t")
