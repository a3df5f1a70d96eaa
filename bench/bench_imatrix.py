"""Our importance matrix against llama.cpp's own `llama-imatrix`, on SmolLM2-135M-Instruct.

    python -m bench imatrix

Both collect on the same calibration text, the same chunks (ctx 512) of the same F16 model:
ours with the NumPy engine (`gguf-tools imatrix`), llama.cpp's with `llama-imatrix`, built once
from the llama.cpp sources inside the llama-cpp-python sdist (the same portable AVX2 flags as the
library). Each imatrix then drives `llama_model_quantize` to Q4_K_M, and the files are scored
against the F16 model on eval.txt (mean KLD, top-1). The columns also compare the two matrices
directly: the median over entries of the relative difference of the per-column mean squares.
The two collections alternate ``BENCH_RUNS`` times and the times are medians, so the load of a
shared machine falls on both alike; ``BENCH_IMATRIX_ONLY=1`` stops after the timing (no quantize
and scoring).
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from statistics import median

import numpy as np

from bench.bench_model_quant import DATA, THREADS, WORK, evaluate_many, f16_reference, llama_quantize, our_quantize
from bench.common import CACHE, llama_cpp_source

CHUNKS = int(os.environ.get("BENCH_IMATRIX_CHUNKS", "16"))
EVAL_CHUNKS = int(os.environ.get("BENCH_EVAL_CHUNKS", "16"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
FLAGS = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON"]


def llama_imatrix_tool() -> Path:
    """`llama-imatrix`, built from the sdist's llama.cpp on first use (a few minutes on 2 cores)."""
    build = CACHE / "llama-tools" / "build"
    tool = build / "bin" / "llama-imatrix"
    if not tool.exists():
        subprocess.run(["cmake", "-S", str(llama_cpp_source()), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        *FLAGS, "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF",
                        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"],
                       check=True, capture_output=True)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-imatrix", f"-j{os.cpu_count()}"],
                       check=True, capture_output=True)
    return tool


def collect_both(f16: Path) -> tuple[Path, list[float], Path, list[float]]:
    """Both collections RUNS times, alternating (the load of a shared machine falls on both); seconds each."""
    from gguf_tools.imatrix.collect import collect_imatrix

    calibration = DATA / "calibration.txt"
    ours, theirs = WORK / f"imatrix-ours-{CHUNKS}.gguf", WORK / f"imatrix-llama-{CHUNKS}.gguf"
    tool = llama_imatrix_tool()
    t_ours, t_theirs = [], []
    for _ in range(RUNS):
        start = time.perf_counter()
        collect_imatrix(f16, calibration.read_text(encoding="utf-8"), ours, ctx=512, chunks=CHUNKS, threads=THREADS)
        t_ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([str(tool), "-m", str(f16), "-f", str(calibration), "-o", str(theirs),
                        "-c", "512", "--chunks", str(CHUNKS), "-t", str(THREADS), "-b", "512"],
                       check=True, capture_output=True)
        t_theirs.append(time.perf_counter() - start)
    return ours, t_ours, theirs, t_theirs


def difference(a: Path, b: Path) -> tuple[int, int, float, float]:
    """Entries in each, and the median / 90th percentile over shared entries of |a - b| / mean(a, b)."""
    from gguf_tools.imatrix.file import load_imatrix

    ma, mb = load_imatrix(a), load_imatrix(b)
    rel = []
    for name in sorted(ma.keys() & mb.keys()):
        x, y = ma[name].astype(np.float64), mb[name].astype(np.float64)
        rel.append(np.median(np.abs(x - y) / np.maximum((x + y) / 2, 1e-30)))
    return len(ma), len(mb), float(np.median(rel)), float(np.percentile(rel, 90))


def run() -> str:
    f16 = f16_reference()
    ours, t_ours, theirs, t_theirs = collect_both(f16)
    n_ours, n_theirs, med, p90 = difference(ours, theirs)
    timing = (f"Calibration: calibration.txt, {CHUNKS} chunks of 512 tokens, {THREADS} threads. Collection time,"
              f" median of {RUNS} alternating runs: gguf-tools imatrix {median(t_ours):.1f} s, llama-imatrix"
              f" {median(t_theirs):.1f} s; speed ours / llama-imatrix = {median(t_theirs) / median(t_ours):.2f}x"
              f" (runs: {', '.join(f'{t:.1f}' for t in t_ours)} / {', '.join(f'{t:.1f}' for t in t_theirs)}).")
    if os.environ.get("BENCH_IMATRIX_ONLY"):
        return timing + f" Entries: {n_ours} (ours), {n_theirs} (llama-imatrix); median difference {100 * med:.2f}%."
    made = []
    for tool, quantize in (("llama_model_quantize", llama_quantize), ("gguf-tools", our_quantize)):
        for label, imat in (("none", None), ("llama-imatrix", theirs), ("gguf-tools imatrix", ours)):
            dst = WORK / f"imatrix-{tool}-{label.replace(' ', '-')}-Q4_K_M.gguf"
            quantize(f16, dst, "Q4_K_M", imat)
            made.append((tool, label, dst))
    scores = evaluate_many([m[2] for m in made], f16, (DATA / "eval.txt").read_text(encoding="utf-8"),
                           max_chunks=EVAL_CHUNKS)
    lines = [
        timing +
        f" Entries: {n_ours} (ours),"
        f" {n_theirs} (llama-imatrix); per-column mean squares differ by a median of {100 * med:.2f}%"
        f" (90th percentile over matrices {100 * p90:.2f}%).",
        "",
        f"SmolLM2 Q4_K_M scored against F16 on eval.txt ({scores[0].positions} positions):",
        "",
        "| quantizer | imatrix | mean KLD | p99 KLD | top-1 |",
        "|---|---|---:|---:|---:|",
    ]
    for (tool, label, _), s in zip(made, scores):
        lines.append(f"| {tool} | {label} | {s.mean_kld:.5f} | {s.p99_kld:.4f} | {100 * s.top1:.2f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
