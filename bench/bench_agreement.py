"""How closely the NumPy engine reproduces llama.cpp's next-token distributions, and why not closer.

Over the first 512 tokens of the eval text, every position scored: mean KL divergence and top-1
agreement between llama.cpp (F32 KV cache, no flash attention), the engine (int8 activations, as
llama.cpp rounds them), and the engine with ``exact=True`` (dequantized weights, float activations:
the quantized model's own arithmetic). On quantized weights both runtimes round every activation
block to int8, and that rounding is chaotic (one ulp of input difference can flip a step), so the
floor for two implementations that are not bit-identical is the size of the rounding noise itself:
the "llama.cpp vs exact" column.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.bench_decode import TEXT, gemma3_q4_k_m
from bench.common import CACHE, smollm2_gguf

POSITIONS = 512
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
WORK = CACHE / "bench" / "agreement"


def _made(name: str, src: Path, preset: str) -> Path:
    from gguf_tools.requantize import quantize_gguf

    path = WORK / f"{name}-{preset}.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        quantize_gguf(src, path, preset, allow_requantize=preset == "F16")
    return path


def models() -> dict[str, Path]:
    sm, ge = smollm2_gguf(), gemma3_q4_k_m()
    sm16, ge16 = _made("smollm2", sm, "F16"), _made("gemma3", ge, "F16")
    return {
        "SmolLM2-135M F16": sm16,
        "Gemma-3-270M F16": ge16,
        "SmolLM2-135M Q4_1 (published)": sm,
        "Gemma-3-270M Q4_K_M (published)": ge,
        "SmolLM2-135M Q4_K_M (gguf-tools)": _made("smollm2", sm16, "Q4_K_M"),
        "SmolLM2-135M Q8_0 (gguf-tools)": _made("smollm2", sm16, "Q8_0"),
    }


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def _kld(lp: np.ndarray, lq: np.ndarray) -> float:
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


def _top1(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def _llama_logits(path: Path, tokens: list[int], n_batch: int = POSITIONS) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=POSITIONS, n_batch=n_batch, n_ubatch=n_batch, n_threads=THREADS,
                          logits_all=True,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, flash_attn=False,
                          verbose=False)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def measure(path: Path) -> dict:
    from gguf_tools.engine.transformer import Engine
    from gguf_tools.imatrix.collect import tokenize

    tokens = tokenize(path, TEXT.read_text(encoding="utf-8")[:20000])[0][:POSITIONS]
    llama = _log_softmax(_llama_logits(path, tokens))
    # the same tokens through llama.cpp in batches of 32: other kernels, other summation order
    llama32 = _log_softmax(_llama_logits(path, tokens, n_batch=32))
    engine = Engine(path, n_ctx=POSITIONS, threads=THREADS)
    rounded = _log_softmax(engine.logits(tokens))
    linear = engine.linear  # the same engine with every matmul input moved up by one float ulp
    engine.linear = lambda name, x: linear(name, np.nextafter(x, np.float32(np.inf)))
    nudged = _log_softmax(engine.logits(tokens))
    engine.linear = linear
    engine.exact = True
    exact = _log_softmax(engine.logits(tokens))
    return {"llama_exact": _kld(exact, llama), "engine_exact": _kld(exact, rounded),
            "engine_llama": _kld(llama, rounded), "nudged": _kld(rounded, nudged), "top1": _top1(llama, rounded),
            "llama_self": _kld(llama, llama32), "llama_self_top1": _top1(llama, llama32)}


def run() -> str:
    if not TEXT.exists():
        raise SystemExit(f"{TEXT} missing")
    lines = [
        (f"Mean KLD over {POSITIONS} positions of eval.txt (first argument the reference); top-1 = engine vs"
         " llama.cpp. Exact = the engine on dequantized weights with float activations; 1 ulp = the engine"
         " against itself with every matmul input moved by one float ulp; llama.cpp batch 32 = llama.cpp"
         " against itself, the same tokens evaluated 32 at a time instead of 512."),
        "",
        ("| model | llama.cpp vs exact | engine vs exact | engine vs llama.cpp | engine vs engine 1 ulp off |"
         " top-1 engine = llama.cpp | llama.cpp vs llama.cpp batch 32 | top-1 llama.cpp = batch 32 |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, path in models().items():
        m = measure(path)
        lines.append(f"| {name} | {m['llama_exact']:.2e} | {m['engine_exact']:.2e} | {m['engine_llama']:.2e} |"
                     f" {m['nudged']:.2e} | {100 * m['top1']:.1f}% | {m['llama_self']:.2e} |"
                     f" {100 * m['llama_self_top1']:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    print(run())


if __name__ == "__main__":
    main()
