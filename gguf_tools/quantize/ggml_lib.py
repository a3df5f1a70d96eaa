"""ctypes access to ggml's own quantizer and dequantizers (libggml-base from llama-cpp-python).

The yardstick: tests demand our "ggml" mode is byte-identical to `ggml_quantize_chunk`, that
llama.cpp decodes our blocks to the values we meant, and the benchmark compares errors and
speed against it. Optional: everything here raises UnsupportedError when llama_cpp is absent.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
from pathlib import Path

import gguf
import numpy as np

from ..errors import UnsupportedError

Q = gguf.GGMLQuantizationType


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise UnsupportedError("llama-cpp-python is not installed: ggml's reference quantizer is unavailable")
    libdir = Path(spec.origin).parent / "lib"
    found = sorted(libdir.glob("libggml-base.so*")) + sorted(libdir.glob("libggml-base*.dylib")) \
        + sorted(libdir.glob("ggml-base.dll"))
    if not found:
        raise UnsupportedError(f"no libggml-base library under {libdir}")
    lib = ctypes.CDLL(str(found[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def available() -> bool:
    try:
        _lib()
    except (UnsupportedError, OSError):
        return False
    return True


def quantize_chunk(w: np.ndarray, qtype: Q, imatrix: np.ndarray | None = None) -> np.ndarray:
    """ggml_quantize_chunk over all rows of w: (rows, row_bytes) uint8. Releases the GIL (ctypes)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    rows, n = w.shape
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if n % block:
        raise UnsupportedError(f"{qtype.name} needs rows divisible by {block}, got {n}")
    out = np.empty((rows, n // block * size), dtype=np.uint8)
    imp = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    if imp is not None and imp.shape != (n,):
        raise ValueError("imatrix must have one value per column")
    _lib().ggml_quantize_chunk(int(qtype), w.ctypes.data, out.ctypes.data, 0, rows, n,
                               None if imp is None else imp.ctypes.data)
    return out


def dequantize(raw: np.ndarray, qtype: Q, n_per_row: int) -> np.ndarray:
    """ggml's dequantize_row_<type> over every row: (rows, n_per_row) float32."""
    name = qtype.name.lower()
    name = name[:-2] + "_K" if name.endswith("_k") else name
    fn = getattr(_lib(), f"dequantize_row_{name}", None)
    if fn is None:
        raise UnsupportedError(f"libggml-base has no dequantizer for {qtype.name}")
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    rows = raw.shape[0]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if raw.shape[1] != n_per_row // block * size:
        raise ValueError("row bytes do not match the row length")
    out = np.empty((rows, n_per_row), dtype=np.float32)
    fn(raw.ctypes.data, out.ctypes.data, rows * n_per_row)
    return out
