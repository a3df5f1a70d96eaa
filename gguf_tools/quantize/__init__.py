"""Block quantizers for the ggml types llama.cpp reads: K-quants, legacy quants and IQ4_NL.

    quantize(w, qtype, imatrix=None, search="default", threads=None) -> (rows, row_bytes) uint8

Searches (the CLI's --search, recorded as gguf_tools.quant.search):
  "default"  our search (gguf_tools/quantize/search.py): minimises the importance-weighted
             squared error sum_j imp_j (w_ij - q_ij)^2 in ggml's own block formats.
  "best"     the same search with wider candidate grids for the 32-weight types (Q4_0..Q8_0):
             several times slower on those types, a little lower error (search.SETTINGS_BEST).
  "ggml"     ggml's quantizer bit for bit (ggml_quantize_chunk): exact tests and provenance.

Both run in C (gguf_tools._kquant, threads across blocks, GIL released) and have a NumPy
reference (`impl="numpy"`) that produces identical bytes; the C path is used when built.
"""
from __future__ import annotations

import gguf
import numpy as np

from ..errors import InputError, UnsupportedError
from ..gguf_file import layout
from ..system import check_threads
from . import ggml_port
from .search import quantize_search

Q = gguf.GGMLQuantizationType

SUPPORTED = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.IQ4_NL)
SEARCHES = ("default", "best", "ggml")
_NATIVE_SEARCH = {"default": 0, "ggml": 1, "best": 2}

try:
    from .. import _kquant
except ImportError:  # not built: the NumPy reference still works, slowly
    _kquant = None

# Weights below this fraction of the mean importance are raised to it, so that a column an
# imatrix never saw still gets a sensible (if unimportant) fit instead of a degenerate one.
_IMPORTANCE_FLOOR = 1e-6

__all__ = ["SEARCHES", "SUPPORTED", "check_finite", "importance_weights", "native_available", "quantize", "row_bytes"]


def native_available() -> bool:
    return _kquant is not None


def row_bytes(qtype: Q, n_per_row: int) -> int:
    """Bytes of one quantized row: a row that does not split into blocks cannot take this type
    (UnsupportedError), where for a file's tensor it is bad input."""
    try:
        if n_per_row <= 0:
            raise InputError(f"row length {n_per_row} is not a positive multiple of {qtype.name}'s block")
        return layout.row_bytes(qtype, n_per_row)
    except InputError as e:
        raise UnsupportedError(str(e)) from None


def check_finite(w: np.ndarray, name: str = "", *, bf16_bits: bool = False) -> None:
    """Raise InputError if w holds NaN or infinity (a corrupt or overflowed checkpoint): every weight written,
    encoded or copied, passes here. ``bf16_bits``: w holds bfloat16 bit patterns (a BF16 tensor copied as it is),
    which are tested by their exponent bits instead of as floats."""
    if bf16_bits:
        bad = (w.view(np.uint16) & 0x7F80) == 0x7F80
        if not bad.any():
            return
    elif not w.size or (np.isfinite(w.min()) and np.isfinite(w.max())):  # two reductions, no temporary array
        return
    else:
        bad = ~np.isfinite(w)
    where = f"tensor {name!r}" if name else "the tensor"
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    raise InputError(f"{where} contains NaN or Inf values (first at index {index})")


def importance_weights(imatrix: np.ndarray | None, n_per_row: int) -> np.ndarray | None:
    """The per-column weights the "default" search optimises: imatrix scaled to mean 1, floored."""
    if imatrix is None:
        return None
    imp = _check_imatrix(imatrix, n_per_row)
    mean = float(imp.astype(np.float64).mean())
    if mean <= 0:
        return None  # no information: plain squared error
    imp = (imp / np.float32(mean)).astype(np.float32)
    return np.maximum(imp, np.float32(_IMPORTANCE_FLOOR))


def _check_imatrix(imatrix: np.ndarray, n_per_row: int) -> np.ndarray:
    imp = np.ascontiguousarray(imatrix, dtype=np.float32)
    if imp.ndim != 1 or imp.shape[0] != n_per_row:
        raise InputError(f"importance matrix has shape {imp.shape}, expected ({n_per_row},)")
    if not np.isfinite(imp).all() or (imp < 0).any():
        raise InputError("importance matrix values must be finite and non-negative")
    return imp


def quantize(w: np.ndarray, qtype: Q, imatrix: np.ndarray | None = None, *, search: str = "default",
             threads: int | None = None, impl: str = "auto") -> np.ndarray:
    """Quantize a (rows, n_per_row) float32 matrix to qtype's blocks: (rows, row_bytes) uint8.

    imatrix: per-column importance (mean squared activation, as llama.cpp's imatrix holds).
    impl: "auto" (C when built), "native" or "numpy" (the readable reference, same bytes).
    """
    if impl not in ("auto", "native", "numpy"):
        raise ValueError(f"impl must be auto, native or numpy, got {impl!r}")
    qtype = Q(qtype)
    if qtype not in SUPPORTED:
        raise UnsupportedError(f"cannot quantize to {qtype.name}; supported: {', '.join(t.name for t in SUPPORTED)}")
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    w = np.asarray(w)
    if w.ndim != 2:
        raise InputError(f"expected a 2-D matrix (rows, n_per_row), got shape {w.shape}")
    rows, n = w.shape
    nbytes = row_bytes(qtype, n)
    w = np.ascontiguousarray(w, dtype=np.float32)
    check_finite(w)
    if search == "ggml":
        weights = None if imatrix is None else _check_imatrix(imatrix, n)
    else:
        weights = importance_weights(imatrix, n)
    use_native = impl == "native" or (impl == "auto" and _kquant is not None)
    if rows == 0:
        return np.zeros((0, nbytes), dtype=np.uint8)
    if use_native:
        if _kquant is None:
            raise UnsupportedError("the native extension gguf_tools._kquant is not built")
        out = np.empty((rows, nbytes), dtype=np.uint8)
        _kquant.quantize(w, out, n, int(qtype), weights, _NATIVE_SEARCH[search], check_threads(threads))
        return out
    if search == "ggml":
        return ggml_port.quantize_ggml(w, qtype, weights)
    return quantize_search(w, qtype, weights, best=search == "best")
