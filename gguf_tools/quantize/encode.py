"""float32 rows -> the bytes of one GGML type. The single place where weights become blocks."""
from __future__ import annotations

import gguf
import numpy as np

from ..hf.safetensors import to_bf16_bits

Q = gguf.GGMLQuantizationType


def encode(w: np.ndarray, qtype: Q, importance: np.ndarray | None = None, *, mode: str = "default",
           threads: int | None = None) -> np.ndarray:
    """Encode ``w`` (rows, row length; or 1-D) as ``qtype``; ``importance`` weights the error per column.

    ``threads``: worker threads of the block search (default: every CPU).
    """
    if qtype == Q.F32:
        return np.ascontiguousarray(w, dtype=np.float32)
    if qtype == Q.F16:
        return w.astype(np.float16)
    if qtype == Q.BF16:
        return to_bf16_bits(w)
    from . import quantize

    rows = np.ascontiguousarray(w, dtype=np.float32).reshape(-1, w.shape[-1])
    return quantize(rows, qtype, importance, mode=mode, threads=threads)
