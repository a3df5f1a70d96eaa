"""Native block kernels: dequantize ggml blocks and multiply by them without a float copy of W.

``matmul`` is the decode hot path of the NumPy reference engine, so it reads the quantized
blocks once, in place. For quantized weight types the activations are rounded to int8 per block
(32 values for Q4_0..Q8_0, 256 for K-quants, scale = max|x| / 127, like ggml's Q8_0 / Q8_K), and
the products are summed in integers; float weight types (F32, F16, BF16) use float FMA throughout.

The SIMD path is chosen at run time (AVX-512, AVX2, NEON, scalar). ``GGUF_TOOLS_SIMD`` or the
``simd`` argument forces one; a path this CPU lacks falls back to the best one, with a warning.
"""
from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Sequence

import gguf
import numpy as np

from .. import _kernels
from ..errors import InputError, ResourceError, UnsupportedError
from ..gguf_file import layout
from ..system import check_threads

QT = gguf.GGMLQuantizationType

SUPPORTED_TYPES: frozenset[QT] = frozenset(
    {
        QT.F32, QT.F16, QT.BF16,
        QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0,
        QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K,
    }
)

SIMD_ENV = "GGUF_TOOLS_SIMD"

_LEVEL_NAMES: tuple[str, ...] = _kernels.level_names()
_SUPPORTED_LEVELS: tuple[str, ...] = _kernels.supported_levels()
_BEST_LEVEL: str = _kernels.best_level()


def available_levels() -> tuple[str, ...]:
    """SIMD paths this CPU can run, slowest first (``scalar`` is always there)."""
    return _SUPPORTED_LEVELS


def simd_level(simd: str | None = None) -> str:
    """The SIMD path the kernels use: ``simd`` if given, else ``$GGUF_TOOLS_SIMD``, else the best."""
    return _LEVEL_NAMES[_level_id(simd)]


def _level_id(simd: str | None) -> int:
    if simd is not None:
        return _resolve_level(simd.strip().lower(), explicit=True)
    return _resolve_level(os.environ.get(SIMD_ENV, "").strip().lower(), explicit=False)


def _resolve_level(name: str, explicit: bool) -> int:
    if name in ("", "auto", "best"):
        return _LEVEL_NAMES.index(_BEST_LEVEL)
    if name not in _LEVEL_NAMES:
        if explicit:
            raise InputError(f"unknown SIMD level {name!r}; expected one of {', '.join(_LEVEL_NAMES)}")
        warnings.warn(
            f"{SIMD_ENV}={name!r} is not a SIMD level ({', '.join(_LEVEL_NAMES)}); using {_BEST_LEVEL}",
            RuntimeWarning,
            stacklevel=3,
        )
        return _LEVEL_NAMES.index(_BEST_LEVEL)
    if name not in _SUPPORTED_LEVELS:
        warnings.warn(
            f"SIMD level {name!r} is not supported by this CPU; using {_BEST_LEVEL}",
            RuntimeWarning,
            stacklevel=3,
        )
        return _LEVEL_NAMES.index(_BEST_LEVEL)
    return _LEVEL_NAMES.index(name)


# type id -> type, for the types the kernels handle; IntEnum members hash like their ints
_TYPES: dict[int, QT] = {int(qt): qt for qt in SUPPORTED_TYPES}


def _kernel_type(qtype: QT | int) -> QT:
    qt = _TYPES.get(qtype) if isinstance(qtype, int) and not isinstance(qtype, bool) else None
    if qt is not None:
        return qt
    try:
        qt = QT(int(qtype))
    except (ValueError, TypeError):
        raise UnsupportedError(f"unknown ggml type {qtype!r}") from None
    raise UnsupportedError(f"the native kernels do not handle {qt.name}")


def _dims(shape: Sequence[int], what: str) -> tuple[int, ...]:
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise InputError(f"{what} must be a sequence of integers, got {shape!r}") from None
    if not dims:
        raise InputError(f"{what} must have at least one dimension")
    if min(dims) < 0:
        raise InputError(f"{what} has a negative dimension: {dims}")
    return dims


def row_bytes(qtype: QT | int, n_cols: int) -> int:
    """Bytes one row of ``n_cols`` values takes in ``qtype``, a type the kernels handle."""
    return layout.row_bytes(_kernel_type(qtype), operator.index(n_cols))


def _raw_bytes(data: object, what: str) -> np.ndarray:
    """``data`` as a C-contiguous array whose buffer is the raw bytes (copied only if strided)."""
    if isinstance(data, np.ndarray):
        return data if data.flags.c_contiguous else np.ascontiguousarray(data)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a numpy array or a bytes-like object, got {type(data).__name__}") from None


def _empty(shape: tuple[int, ...]) -> np.ndarray:
    try:
        return np.empty(shape, dtype=np.float32)
    except (MemoryError, ValueError) as exc:
        raise ResourceError(f"cannot allocate a float32 array of shape {shape}: {exc}") from None


def dequantize(
    qtype: QT | int,
    data: np.ndarray | bytes | bytearray | memoryview,
    shape: Sequence[int],
    *,
    threads: int | None = None,
    simd: str | None = None,
) -> np.ndarray:
    """Blocks of ``qtype`` -> float32 array of ``shape`` (its last dimension is the row length).

    Bit-identical to ``gguf.quants.dequantize`` for every supported type.
    """
    qt = _kernel_type(qtype)
    dims = _dims(shape, "shape")
    n_cols = dims[-1]
    n_rows = 1
    for d in dims[:-1]:
        n_rows *= d
    rb = layout.row_bytes(qt, n_cols)
    raw = _raw_bytes(data, "data")
    if raw.nbytes != n_rows * rb:
        raise InputError(f"{qt.name} tensor of shape {dims} needs {n_rows * rb} bytes, got {raw.nbytes}")
    out = _empty(dims)
    if out.size:
        _kernels.dequantize(int(qt), raw, n_rows, n_cols, out, _level_id(simd), check_threads(threads))
    return out


def matmul(
    qtype: QT | int,
    weights: np.ndarray | bytes | bytearray | memoryview,
    shape: Sequence[int],
    x: np.ndarray,
    *,
    threads: int | None = None,
    simd: str | None = None,
) -> np.ndarray:
    """``x @ W.T`` with W (``shape`` = (n_out, n_in)) read straight from its ``qtype`` blocks.

    ``x`` is (batch, n_in) or (n_in,); the result is float32 (batch, n_out) or (n_out,).
    Each output is computed by one thread start to finish, so results do not depend on ``threads``.
    """
    qt = _kernel_type(qtype)
    try:
        n_out, n_in = (operator.index(d) for d in shape)
    except (TypeError, ValueError):
        raise InputError(f"weight shape must be two integers (n_out, n_in), got {shape!r}") from None
    if n_out < 0 or n_in <= 0:
        raise InputError(f"weight shape must have n_out >= 0 and n_in > 0, got {(n_out, n_in)}")
    rb = layout.row_bytes(qt, n_in)
    raw = _raw_bytes(weights, "weights")
    if raw.nbytes != n_out * rb:
        raise InputError(f"{qt.name} weights of shape {(n_out, n_in)} need {n_out * rb} bytes, got {raw.nbytes}")
    xa = x if isinstance(x, np.ndarray) else np.asarray(x)
    if xa.ndim not in (1, 2):
        raise InputError(f"x must be (batch, n_in) or (n_in,), got shape {xa.shape}")
    if xa.shape[-1] != n_in:
        raise InputError(f"x has {xa.shape[-1]} columns, weights have n_in = {n_in}")
    if xa.dtype != np.float32 or not xa.flags.c_contiguous:
        if xa.dtype.kind not in "fiu":
            raise InputError(f"x must be a real numeric array, got dtype {xa.dtype}")
        xa = np.ascontiguousarray(xa, dtype=np.float32)
    batch = xa.shape[0] if xa.ndim == 2 else 1
    out = _empty((batch, n_out))
    if out.size:
        _kernels.matmul(int(qt), raw, n_out, n_in, xa, batch, out, _level_id(simd), check_threads(threads))
    return out[0] if xa.ndim == 1 else out


def read_sum(data: np.ndarray | bytes | bytearray | memoryview, *, threads: int | None = None) -> int:
    """Read every byte of ``data`` once (sum of its 64-bit words): the memory-bandwidth yardstick
    that the GEMV benchmark compares itself with."""
    raw = _raw_bytes(data, "data")
    return int(_kernels.read_sum(raw, _level_id(None), check_threads(threads)))
