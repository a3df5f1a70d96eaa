"""Which types a tensor may take, and what each costs in the file, to the byte.

Every type llama.cpp loads for the tensor's row length is a candidate: the K-quants only when the row is a multiple of
256, the 32-weight types (and IQ4_NL, which our quantizer writes) when it is a multiple of 32, F16 always. llama.cpp's
shape fallbacks are then nothing special: a candidate list without the K-quants, each type at its real byte cost.
"""
from __future__ import annotations

import gguf
import numpy as np

from ..gguf_file import layout
from ..plan import TensorSpec, quantizable

Q = gguf.GGMLQuantizationType

CANDIDATES = (Q.Q2_K, Q.Q3_K, Q.Q4_0, Q.Q4_1, Q.IQ4_NL, Q.Q4_K, Q.Q5_0, Q.Q5_1, Q.Q5_K, Q.Q6_K, Q.Q8_0, Q.F16)
ALIGNMENT = gguf.GGUF_DEFAULT_ALIGNMENT  # every tensor's data starts on this boundary: its padding is its cost too


def candidates(spec: TensorSpec, arch: str) -> tuple[Q, ...]:
    """The types ``spec`` may take; a tensor llama.cpp never quantizes keeps its own type."""
    if not quantizable(spec, arch):
        return (spec.dtype,)
    return tuple(t for t in CANDIDATES if spec.ne0 % layout.block(t)[0] == 0)


def cost(spec: TensorSpec, qtype: Q) -> int:
    """Bytes the tensor takes in the file at ``qtype``, its alignment padding included."""
    return int(gguf.GGUFWriter.ggml_pad(layout.tensor_nbytes(spec.shape, qtype), ALIGNMENT))


def dequantize(qtype: Q, raw: np.ndarray, shape: tuple[int, ...], threads: int | None = None) -> np.ndarray:
    """float32 values of ``raw`` blocks (numpy ``shape``): the native kernels (on ``threads``); for the types they do
    not read, the block decoder of the quantizer (IQ4_NL), else gguf's NumPy code."""
    from ..engine import kernels

    if qtype in kernels.SUPPORTED_TYPES:
        return kernels.dequantize(qtype, raw, shape, threads=threads).reshape(shape)
    if qtype == Q.IQ4_NL:   # one table lookup a weight, where gguf's reader gathers per element
        from ..quantize import blocks

        raw = np.asarray(raw).reshape(-1, layout.block(qtype)[1])
        return blocks.decoded(qtype, blocks.unpack(qtype, raw)).reshape(shape)
    return gguf.quants.dequantize(np.asarray(raw).reshape(shape[0], -1), qtype).astype(np.float32).reshape(shape)
