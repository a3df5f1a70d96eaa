"""Block geometry of GGUF tensors: the one place that turns a shape and a type into bytes.

GGUF order is the file's: ``shape[0]`` is the row length (ggml's ne0), the fastest-moving axis.
numpy order is the reverse. Every size in the project comes from ``gguf.GGML_QUANT_SIZES`` here,
and every conversion between the two orders goes through ``gguf_shape`` / ``numpy_shape``.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import InputError
from .constants import GGML_QUANT_SIZES, GGMLQuantizationType

Q = GGMLQuantizationType
GGUFShape = tuple[int, ...]  # row length first


def gguf_shape(numpy_shape: Sequence[int]) -> GGUFShape:
    """(..., rows, row length) -> (row length, rows, ...)."""
    return tuple(int(d) for d in reversed(numpy_shape))


def numpy_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """(row length, rows, ...) -> (..., rows, row length). The same reversal, named for the reader."""
    return tuple(int(d) for d in reversed(shape))


def block(qtype: Q) -> tuple[int, int]:
    """(values per block, bytes per block) of ``qtype``."""
    return GGML_QUANT_SIZES[qtype]


def row_bytes(qtype: Q, n_per_row: int) -> int:
    """Bytes of one row of ``n_per_row`` values; the row must be whole blocks."""
    n_block, size = GGML_QUANT_SIZES[qtype]
    if n_per_row < 0 or n_per_row % n_block:
        raise InputError(f"row length {n_per_row} is not a multiple of {Q(qtype).name}'s block of {n_block}")
    return n_per_row // n_block * size


def n_elements(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def tensor_nbytes(shape: GGUFShape, qtype: Q) -> int:
    """Bytes of a tensor's data (GGUF order: ``shape[0]`` is the row and must be whole blocks)."""
    if not shape:
        raise InputError("a tensor needs at least one dimension")
    return row_bytes(qtype, int(shape[0])) * n_elements(shape[1:])


def bits_per_weight(qtype: Q) -> float:
    """Storage bits per value of ``qtype`` (4.5 for Q4_K: 144 bytes per 256 values)."""
    n_block, size = GGML_QUANT_SIZES[qtype]
    return 8.0 * size / n_block
