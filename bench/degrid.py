"""De-gridded F16 references: the shipped models' weights moved off their quantization grid.

Both real models reach us as quantized files (SmolLM2-135M-Instruct as Q4_1; Gemma-3-270M as
llama.cpp's Q4_K_M mix of Q5_0 / Q8_0 / Q4_K / Q6_K tensors). Dequantized to F16 their weights still
sit exactly on those grids, and a candidate type whose grid contains the source's (Q4_1 or Q5_1 for a
Q4_1 block, Q4_K for a Q4_K block) recovers such a tensor almost without error. A planner that
finds those grids looks better than it is, so every quality claim is also made on this reference:

- every weight that came from a quantized tensor gets uniform noise in [-step/2, +step/2], where
  `step` is the source's local quantization step for that weight, read from the source file's own
  blocks: the block scale `d` per 32 weights for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, `d * sc` per 32-weight
  sub-block for Q4_K/Q5_K (the 6-bit sub-block scale under the fp16 super-scale), `d * sc` per
  16-weight sub-block for Q6_K and Q2_K;
- tensors stored as floats in the source (norms, biases) are copied unchanged;
- the noise comes from a generator seeded by (seed, crc32 of the tensor name): the same file every run;
- the result is an F16 GGUF (1-D tensors F32, as `quantize_gguf(..., "F16")` writes the raw reference),
  with the source's metadata, usable by `gguf-tools quantize`, `llama_model_quantize` and evaluation.

Half a step of uniform noise is the error a round-to-nearest quantizer leaves, so the de-gridded
weights are a plausible "unquantized" model that the source file is a good quantization of, and no
candidate type can recover them exactly.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import gguf
import numpy as np

from gguf_tools.gguf_file.layout import numpy_shape
from gguf_tools.gguf_file.reader import GGUFFile
from gguf_tools.gguf_file.writer import OutTensor, write_gguf
from gguf_tools.plan import plan_gguf
from gguf_tools.requantize import copy_metadata

Q = gguf.GGMLQuantizationType
FLOATS = (Q.F32, Q.F16, Q.BF16)
SEED = 17


def _f16(blocks: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[:, at:at + 2]).view(np.float16).astype(np.float32)[:, 0]


def _k4_scales(scales: np.ndarray) -> np.ndarray:
    """The eight 6-bit sub-block scales of a Q4_K/Q5_K super-block (ggml's get_scale_min_k4, scale half)."""
    q = scales.astype(np.uint8)
    low = q[:, 0:4] & 63
    high = (q[:, 8:12] & 0xF) | ((q[:, 0:4] >> 6) << 4)
    return np.concatenate([low, high], axis=1).astype(np.float32)


def local_step(qtype: Q, rows: np.ndarray, n_per_row: int) -> np.ndarray:
    """The quantization step of every weight of a stored tensor: float32 (rows, n_per_row).

    ``rows`` are the tensor's bytes as (rows, row bytes). A block-affine type reconstructs
    w = step * q + offset with integer q, so `step` is the spacing of the grid the weight sits on.
    """
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_rows = rows.shape[0]
    blocks = np.asarray(rows, dtype=np.uint8).reshape(-1, size)
    if qtype in (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0):
        step, per = np.abs(_f16(blocks, 0))[:, None], 32
    elif qtype in (Q.Q4_K, Q.Q5_K):
        step, per = np.abs(_f16(blocks, 0))[:, None] * _k4_scales(blocks[:, 4:16]), 32
    elif qtype == Q.Q6_K:
        scales = blocks[:, 192:208].view(np.int8).astype(np.float32)
        step, per = np.abs(_f16(blocks, 208)[:, None] * scales), 16
    elif qtype == Q.Q2_K:
        step, per = np.abs(_f16(blocks, 80))[:, None] * (blocks[:, 0:16] & 0xF).astype(np.float32), 16
    else:
        raise ValueError(f"no local step for {qtype.name}")
    assert block % per == 0
    return np.repeat(step, per, axis=1).reshape(n_rows, n_per_row)


def degrid_tensor(name: str, qtype: Q, rows: np.ndarray, shape: tuple[int, ...], seed: int = SEED) -> np.ndarray:
    """A quantized tensor's weights (float32, numpy ``shape``) plus uniform noise of +-half its local step."""
    n = shape[-1]
    w = gguf.quants.dequantize(rows, qtype).reshape(-1, n)
    step = local_step(qtype, rows.reshape(w.shape[0], -1), n)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    noise = rng.uniform(-0.5, 0.5, size=w.shape).astype(np.float32) * step
    return (w + noise).reshape(shape)


def degrid(src: Path, dest: Path, seed: int = SEED) -> Path:
    """Write the de-gridded F16 GGUF of the quantized GGUF ``src`` to ``dest`` (see the module docstring)."""
    reader = GGUFFile.open(src)
    plan = plan_gguf(reader, "F16")
    tensors = [OutTensor(t.name, numpy_shape(t.shape), plan[t.name]) for t in reader.tensors]

    def data():
        for t, out in zip(reader.tensors, tensors):
            raw = reader.data(t)
            if t.ggml_type in FLOATS:
                w = np.asarray(raw, dtype=np.float32) if t.ggml_type != Q.BF16 else \
                    gguf.quants.dequantize(raw, Q.BF16).reshape(out.shape)
            else:
                w = degrid_tensor(t.name, t.ggml_type, raw, out.shape, seed)
            yield w.astype(np.float16 if out.qtype == Q.F16 else np.float32)

    def add_metadata(w: gguf.GGUFWriter) -> None:
        copy_metadata(reader, w)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_uint32("gguf_tools.degrid.seed", seed)

    dest.parent.mkdir(parents=True, exist_ok=True)
    write_gguf(dest, reader.architecture, add_metadata, tensors, data())
    return dest
