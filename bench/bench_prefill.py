"""Prefill speed (one 512-token prompt) of the NumPy engine next to llama.cpp, same run, same threads.

Both evaluate the same 512 tokens of eval.txt from an empty cache: llama-cpp-python's ``eval``
(one batch of 512, logits of the last token) and the engine's ``hidden`` plus the output matrix
for the last token. Runs alternate between the two; each figure is the median of ``BENCH_RUNS``.
Prefill is what imatrix collection and sensitivity measurement spend their time in.

Models: SmolLM2-135M-Instruct as F16 (the reference the imatrix benchmark collects on) and at
Q4_K_M made by gguf-tools.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from bench.bench_decode import TEXT, smollm2_q4_k_m
from bench.bench_model_quant import f16_reference

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
CTX = 512

MODELS = {"SmolLM2-135M F16": f16_reference, "SmolLM2-135M Q4_K_M (gguf-tools)": smollm2_q4_k_m}


def _tokens(path: Path) -> list[int]:
    from gguf_tools.imatrix.collect import tokenize

    tokens, _ = tokenize(path, TEXT.read_text(encoding="utf-8"))
    return tokens[:CTX]


def llama_prefill(llm, tokens: list[int]) -> float:
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    return time.perf_counter() - start


def engine_prefill(engine, tokens: list[int]) -> float:
    out = "output.weight" if "output.weight" in engine.w else "token_embd.weight"
    engine.reset()
    start = time.perf_counter()
    engine.linear(out, engine.hidden(tokens)[-1:])
    return time.perf_counter() - start


def measure(path: Path) -> dict:
    import llama_cpp

    from gguf_tools.engine.transformer import Engine

    tokens = _tokens(path)
    llm = llama_cpp.Llama(str(path), n_ctx=CTX, n_batch=CTX, n_ubatch=CTX, n_threads=THREADS,
                          n_threads_batch=THREADS, verbose=False)
    engine = Engine(path, n_ctx=CTX, threads=THREADS)
    llama_prefill(llm, tokens), engine_prefill(engine, tokens)  # warm up: page in, start thread pools
    t_llama, t_engine = [], []
    for _ in range(RUNS):
        t_llama.append(llama_prefill(llm, tokens))
        t_engine.append(engine_prefill(engine, tokens))
    tl, te = statistics.median(t_llama), statistics.median(t_engine)
    return {"llama": CTX / tl, "engine": CTX / te, "ratio": tl / te,
            "runs": ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(t_engine, t_llama))}


def run() -> str:
    lines = [
        f"{CTX}-token prompt from an empty cache, {THREADS} threads each, median of {RUNS} alternating runs.",
        "",
        "| model | llama.cpp tok/s | engine tok/s | engine / llama.cpp | runs s (engine/llama.cpp) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, make in MODELS.items():
        m = measure(make())
        lines.append(f"| {name} | {m['llama']:.0f} | {m['engine']:.0f} | {m['ratio']:.2f}x | {m['runs']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
