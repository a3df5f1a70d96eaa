"""float32 rows -> the bytes of one GGML type. The single place where weights become blocks.

``encode_tensor`` is the loop both pipelines (convert, requantize) run for every tensor: slices of at most
CHUNK_BYTES of float32, each checked finite and encoded, so that only the encoded tensor is ever held whole.
"""
from __future__ import annotations

from collections.abc import Callable

import gguf
import numpy as np

from . import check_finite
from .blocks import to_bf16_bits

Q = gguf.GGMLQuantizationType

CHUNK_BYTES = 16 * 2**20  # float32 bytes per slice of a large tensor: bounds peak memory


def encode(w: np.ndarray, qtype: Q, importance: np.ndarray | None = None, *, search: str = "default",
           threads: int | None = None) -> np.ndarray:
    """Encode ``w`` (rows, row length; or 1-D) as ``qtype``; ``importance`` weights the error per column.

    ``threads``: worker threads of the block search (default: gguf_tools.system.default_threads()).
    """
    if qtype == Q.F32:
        return np.ascontiguousarray(w, dtype=np.float32)
    if qtype == Q.F16:
        return w.astype(np.float16)
    if qtype == Q.BF16:
        return to_bf16_bits(w)
    from . import quantize

    rows = np.ascontiguousarray(w, dtype=np.float32).reshape(-1, w.shape[-1])
    return quantize(rows, qtype, importance, search=search, threads=threads)


def encode_tensor(read: Callable[[int, int], np.ndarray], shape: tuple[int, ...], qtype: Q, name: str,
                  importance: np.ndarray | None = None, *, search: str = "default",
                  threads: int | None = None) -> np.ndarray:
    """Encode the tensor of numpy-order ``shape`` as ``qtype``, slice by slice; returns its bytes (flat uint8).

    ``read(r0, r1)`` gives rows r0..r1 as floats, shaped (r1 - r0, shape[-1]); a 1-D tensor is one row.
    Non-finite values are an InputError naming ``name``.
    """
    row_len = int(shape[-1])
    n_rows = int(np.prod(shape[:-1], dtype=np.int64))
    step = max(1, CHUNK_BYTES // (4 * max(row_len, 1)))
    out = None
    for r0 in range(0, n_rows, step):
        r1 = min(n_rows, r0 + step)
        part = read(r0, r1)
        check_finite(part, name)
        enc = np.ascontiguousarray(encode(part, qtype, importance, search=search, threads=threads))
        data = enc.reshape(-1).view(np.uint8)
        row_bytes = data.size // (r1 - r0)
        if out is None:
            out = np.empty(n_rows * row_bytes, dtype=np.uint8)
        out[r0 * row_bytes : r1 * row_bytes] = data
    return np.empty(0, dtype=np.uint8) if out is None else out
