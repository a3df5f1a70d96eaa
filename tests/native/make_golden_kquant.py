"""Writes tests/native/golden_kquant.bin, the blocks test_kquant.c checks the C port of ggml's quantizers
against: the NumPy port (gguf_tools.quantize.ggml_port, bit for bit ggml's) on fixed rows, without and with an
importance matrix, for every type it writes.

Little-endian: "GGKQ", rows, cols (u32), x as f32 (rows * cols), imatrix as f32 (cols), count (u32), then per
record type_id, has_imatrix, n_bytes (u32) and the blocks.

    python tests/native/make_golden_kquant.py [OUT]
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import gguf
import numpy as np

from gguf_tools.quantize import quantize

QT = gguf.GGMLQuantizationType
TYPES = [QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0, QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.IQ4_NL]
ROWS, COLS = 3, 512


def rows(rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    x[0, 7] = 25.0  # an outlier
    x[1, :256] = 0.0  # an all-zero super-block
    x[1, 256:] = 0.75
    x[1, 300:310] = 1e-30
    x[2] = x[2] ** 3  # heavy tails
    return x


def main(out: Path) -> None:
    rng = np.random.default_rng(7)
    x = rows(rng)
    imatrix = (rng.random(COLS) ** 2 * 4).astype(np.float32)
    records = []
    for qt in TYPES:
        for im in (None, imatrix):
            blocks = quantize(x, qt, im, search="ggml", impl="numpy")
            records.append(struct.pack("<III", int(qt), im is not None, blocks.nbytes) + blocks.tobytes())
    head = b"GGKQ" + struct.pack("<II", ROWS, COLS) + x.astype("<f4").tobytes() + imatrix.astype("<f4").tobytes()
    out.write_bytes(head + struct.pack("<I", len(records)) + b"".join(records))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("golden_kquant.bin"))
