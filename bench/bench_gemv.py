"""GEMV (batch 1) throughput of the native kernels, in GB/s of weight data, next to this machine's
read bandwidth over the same bytes.

Decode is memory-bound: each token streams every weight once, so the yardstick is how close a
GEMV gets to a plain read of the same buffer (``kernels.read_sum``, a SIMD load-and-add loop).
The matrix is several times the last-level cache, so every pass comes from DRAM. Reads and GEMVs
alternate, each figure is the median of ``BENCH_REPS`` runs, and the ratio is the median of the
per-pair ratios, so load from other processes hits both sides alike.
"""
from __future__ import annotations

import os
import statistics
import time

import gguf
import numpy as np

from gguf_tools.engine import kernels
from gguf_tools.system import default_threads

QT = gguf.GGMLQuantizationType
TYPES = (QT.Q4_K, QT.Q6_K, QT.Q8_0)
N_OUT = int(os.environ.get("BENCH_GEMV_ROWS", "16384"))
N_IN = int(os.environ.get("BENCH_GEMV_COLS", "8192"))
REPS = int(os.environ.get("BENCH_REPS", "15"))
# f16 scale offsets inside a block: set to a sane value so no NaN/inf slows anything down
SCALE_OFFSETS = {QT.Q4_K: (0, 2), QT.Q6_K: (208,), QT.Q8_0: (0,)}


def _weights(qt: QT, rng: np.random.Generator) -> np.ndarray:
    _, size = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, size=(N_OUT, kernels.row_bytes(qt, N_IN)), dtype=np.uint8)
    blocks = raw.reshape(N_OUT, -1, size)
    for off in SCALE_OFFSETS[qt]:
        blocks[:, :, off : off + 2] = np.full(blocks.shape[:2], 0.01, np.float16).view(np.uint8).reshape(
            *blocks.shape[:2], 2
        )
    return raw


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(qt: QT, w: np.ndarray, threads: int, simd: str, rng: np.random.Generator) -> dict:
    x = rng.standard_normal((1, N_IN)).astype(np.float32)
    gemv = lambda: kernels.matmul(qt, w, (N_OUT, N_IN), x, threads=threads, simd=simd)
    read = lambda: kernels.read_sum(w, threads=threads)
    gemv(), read()  # warm up: page in, start the pool
    t_gemv, t_read = [], []
    for _ in range(REPS):
        t_gemv.append(_seconds(gemv))
        t_read.append(_seconds(read))
    g, r = statistics.median(t_gemv), statistics.median(t_read)
    return {
        "type": qt.name,
        "simd": simd,
        "threads": threads,
        "mib": w.nbytes / 2**20,
        "ms": g * 1e3,
        "gemv_gbs": w.nbytes / g / 1e9,
        "read_gbs": w.nbytes / r / 1e9,
        # each GEMV is paired with the read right after it: the median of those ratios is steadier
        # than a ratio of medians when other processes come and go
        "ratio": statistics.median(tr / tg for tg, tr in zip(t_gemv, t_read)),
    }


def run() -> str:
    rng = np.random.default_rng(0)
    thread_counts = sorted({1, min(2, default_threads()), default_threads()})
    # the best path, and AVX2 too where AVX-512 is best: most laptops only have AVX2
    paths = [kernels.simd_level()]
    if paths[0] == "avx512":
        paths.append("avx2")
    lines = [
        f"GEMV {N_OUT} x {N_IN} (batch 1), median of {REPS} runs; read = `kernels.read_sum` over the same bytes.",
        "",
        "| type | SIMD | threads | weights MiB | ms / GEMV | GEMV GB/s | read GB/s | GEMV / read |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for qt in TYPES:
        w = _weights(qt, rng)
        for simd in paths:
            for threads in thread_counts:
                m = measure(qt, w, threads, simd, rng)
                lines.append(
                    f"| {m['type']} | {m['simd']} | {m['threads']} | {m['mib']:.0f} | {m['ms']:.2f} | "
                    f"{m['gemv_gbs']:.1f} | {m['read_gbs']:.1f} | {m['ratio']:.0%} |"
                )
        del w
    return "\n".join(lines)


def main() -> None:
    print(run())


if __name__ == "__main__":
    main()
