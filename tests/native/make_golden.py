"""Writes tests/native/golden_kernels.bin, the expected outputs test_kernels.c checks every dot kernel against.

Per type (the kernel table's order): 2 rows of random blocks with edge-case fp16 scales mixed in, 2 activation
rows on the int8 grid (integers in [-127, 127] times 2^-6, a +-127 in every 32 values, so the kernels'
activation quantization is exact), and y = dequantize(W) @ x in float64 (gguf.quants' dequantizers, independent
of ours), stored as float32. Little-endian: "GGKG", count, then per record type_id, rows, cols, batch (u32),
the raw weight bytes, the x scale (f32), x as int8, y as f32 (batch-major).

    python tests/native/make_golden.py [OUT]
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import gguf
import numpy as np

QT = gguf.GGMLQuantizationType
TYPES = [QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0,
         QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K]
SCALE_OFFSETS = {QT.Q4_0: (0,), QT.Q4_1: (0, 2), QT.Q5_0: (0,), QT.Q5_1: (0, 2), QT.Q8_0: (0,),
                 QT.Q2_K: (80, 82), QT.Q3_K: (108,), QT.Q4_K: (0, 2), QT.Q5_K: (0, 2), QT.Q6_K: (208,)}
# zero, negative zero, smallest and largest subnormal, smallest normal, largest finite
EDGE_SCALES = np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x7BFF], dtype=np.uint16)
ROWS, BATCH, XSCALE = 2, 2, 2.0 ** -6


def weights(qt: QT, cols: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Raw rows and their float32 values."""
    if qt in (QT.F32, QT.F16, QT.BF16):
        v = rng.standard_normal((ROWS, cols)).astype(np.float32)
        if qt == QT.F16:
            h = v.astype(np.float16)
            return h.view(np.uint8), h.astype(np.float32)
        if qt == QT.BF16:
            b = (v.view(np.uint32) >> 16).astype(np.uint16)
            return b.view(np.uint8), (b.astype(np.uint32) << 16).view(np.float32)
        return v.view(np.uint8), v
    block, size = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, size=(ROWS, cols // block, size), dtype=np.uint8)
    raw[0, 0, :] = 0xFF
    raw[1, 0, :] = 0x00
    for off in SCALE_OFFSETS[qt]:
        s = (rng.standard_normal(raw.shape[:2]) * 0.01).astype(np.float16).view(np.uint16)
        pick = rng.random(s.shape) < 0.25
        s[pick] = rng.choice(EDGE_SCALES, size=int(pick.sum()))
        raw[:, :, off:off + 2] = s.view(np.uint8).reshape(*s.shape, 2)
    raw = raw.reshape(ROWS, -1)
    return raw, gguf.quants.dequantize(raw, qt).reshape(ROWS, cols).astype(np.float32)


def activations(cols: int, rng: np.random.Generator) -> np.ndarray:
    q = rng.integers(-127, 128, size=(BATCH, cols)).astype(np.int8)
    q[:, ::32] = np.where(rng.random((BATCH, cols // 32)) < 0.5, 127, -127)
    return q


def main(out: Path) -> None:
    rng = np.random.default_rng(20)
    parts = [b"GGKG", struct.pack("<I", len(TYPES))]
    for qt in TYPES:
        cols = 43 if qt in (QT.F32, QT.F16, QT.BF16) else 288 if gguf.GGML_QUANT_SIZES[qt][0] == 32 else 768
        raw, w = weights(qt, cols, rng)
        q = activations(cols, rng)
        x = q.astype(np.float64) * XSCALE
        y = (x @ w.astype(np.float64).T).astype(np.float32)  # (batch, rows)
        parts += [struct.pack("<IIII", int(qt), ROWS, cols, BATCH), np.ascontiguousarray(raw).tobytes(),
                  struct.pack("<f", XSCALE), q.tobytes(), y.astype("<f4").tobytes()]
    out.write_bytes(b"".join(parts))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("golden_kernels.bin"))
