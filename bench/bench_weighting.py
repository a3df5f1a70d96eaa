"""Without an imatrix, what should the search weight? Plain squared error against per-weight |x| and x^2.

    python -m bench.bench_weighting [--models smollm2,gemma] [--presets Q2_K] [--chunks N] [--split [ROLES]]

Without an imatrix our search minimises the plain squared error of each block, where llama.cpp's reference
quantizers weight each weight by its own magnitude (|x| for Q2_K's scales, x^2 elsewhere). On the de-gridded
references of the planning bench our Q2_K and Q3_K_S presets score above llama.cpp's on all of eval.txt. This bench
tests the weighting as the cause: the same preset plan, every quantized tensor encoded by our search (the NumPy
reference, ``gguf_tools.quantize.search``) with per-weight weights |x| or x^2, against our preset as shipped and
llama.cpp's, all scored like the planning bench (llama.cpp logits on eval.txt, ctx 512, second half of each chunk).
With ``--split``, where the gap between our preset and llama.cpp's lies: our file with one group of tensor roles
taken byte for byte from llama.cpp's file, per group. An experiment, not a change: the weighted files go under
$GGUF_TOOLS_CACHE/bench-plan/weighting, the spliced ones beside the planning bench's files.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import gguf
import numpy as np

from bench.bench_plan import (
    ATTENTION,
    DATA,
    MLP,
    SOURCES,
    THREADS,
    WORK,
    _role,
    _stem,
    llama_file,
    log,
    ours_file,
    reference,
    spliced_file,
    write_like,
)
from gguf_tools.plan import Q

WEIGHTINGS = ("abs", "x2")
GROUPS = {"attention": ATTENTION, "ffn_gate, ffn_up": ("ffn_gate", "ffn_up"), "ffn_down": ("ffn_down",),
          "token_embd": ("token_embd",)}
assert {r for g in GROUPS.values() for r in g} == {*ATTENTION, *MLP, "token_embd"}


def _encode(w: np.ndarray, qtype: Q, weighting: str) -> np.ndarray:
    """Our search over (rows, n) float32 ``w`` with per-weight importance |x| or x^2 instead of 1."""
    from gguf_tools.quantize import search

    rows, n = w.shape
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    X = np.ascontiguousarray(w, dtype=np.float32).reshape(-1, block)
    Wt = np.abs(X) if weighting == "abs" else X * X
    Wt = Wt + np.float32(1e-12)   # an all-zero block keeps a defined fit
    with np.errstate(over="ignore", invalid="ignore"):
        return search.pack(qtype, search.block_params(X, Wt, qtype)).reshape(rows, n // block * size)


def weighted_file(ref: Path, preset: str, weighting: str) -> Path:
    """``ref`` at our ``preset`` plan, no imatrix, every re-encoded tensor searched with ``weighting``."""
    from gguf_tools.engine.kernels import dequantize
    from gguf_tools.gguf_file.layout import numpy_shape
    from gguf_tools.gguf_file.reader import GGUFFile
    from gguf_tools.gguf_file.writer import OutTensor
    from gguf_tools.plan import plan_gguf
    from gguf_tools.requantize import produce

    dest = WORK / "weighting" / f"{_stem(ref)}-{preset}-{weighting}.gguf"
    if dest.exists():
        return dest
    dest.parent.mkdir(exist_ok=True)
    log(f"writing {dest.name}")
    reader = GGUFFile.open(ref)
    plan = plan_gguf(reader, preset)
    tensors = [OutTensor(t.name, numpy_shape(t.shape), plan[t.name]) for t in reader.tensors]
    weighted = {}   # produce()'s already-encoded tensors: it copies and converts the rest as for our preset
    for src, out in zip(reader.tensors, tensors):
        if src.ggml_type != out.qtype and out.qtype not in (Q.F16, Q.F32, Q.BF16):
            rows = reader.data(src).reshape(int(np.prod(out.shape[:-1])), -1)
            w = dequantize(src.ggml_type, rows, (rows.shape[0], out.shape[-1]))
            weighted[src.name, out.qtype] = _encode(w, out.qtype, weighting)
    write_like(dest, reader, tensors, produce(reader, tensors, {}, "default", THREADS, known=weighted), preset)
    return dest


def run(*, models: tuple[str, ...] = ("smollm2", "gemma"), presets: tuple[str, ...] = ("Q2_K",),
        chunks: int | None = None) -> str:
    from gguf_runtime.evaluate import evaluate_many

    out = ["| model | preset | file | bytes | mean KLD | p99 KLD | top-1 | vs llama.cpp | vs ours |",
           "|---|---|---|---|---|---|---|---|---|"]
    text = (DATA / "eval.txt").read_text(encoding="utf-8")
    for m in models:
        ref = reference(SOURCES[m], "degrid")
        for preset in presets:
            files = {"llama.cpp": llama_file(ref, preset, None), "ours (plain squared error)": ours_file(ref, preset, None)}
            files |= {f"ours, weights {w}": weighted_file(ref, preset, w) for w in WEIGHTINGS}
            log(f"evaluating {len(files)} against {ref.name}")
            got = dict(zip(files, evaluate_many(list(files.values()), ref, text, max_chunks=chunks, threads=THREADS)))
            base, ours = got["llama.cpp"].mean_kld, got["ours (plain squared error)"].mean_kld
            for name, r in got.items():
                out.append(f"| {SOURCES[m].title} | {preset} | {name} | {files[name].stat().st_size} | {r.mean_kld:.5f}"
                           f" | {r.p99_kld:.4f} | {100 * r.top1_agreement:.2f}% | {100 * (r.mean_kld / base - 1):+.1f}%"
                           f" | {100 * (r.mean_kld / ours - 1):+.1f}% |")
    return "\n".join(out)


def split(*, models: tuple[str, ...] = ("gemma",), presets: tuple[str, ...] = ("Q2_K",), chunks: int | None = None,
          groups: dict[str, tuple[str, ...]] = GROUPS) -> str:
    """Our preset file (no imatrix) with each group of roles from llama.cpp's: how much of the gap each group holds."""
    from gguf_runtime.evaluate import evaluate_many

    out = ["| model | preset | ours, with llama.cpp's | mean KLD | p99 KLD | top-1 |", "|---|---|---|---|---|---|"]
    text = (DATA / "eval.txt").read_text(encoding="utf-8")
    for m in models:
        ref = reference(SOURCES[m], "degrid")
        for preset in presets:
            ours, theirs = ours_file(ref, preset, None), llama_file(ref, preset, None)
            files = {g: spliced_file(ours, theirs, f"with-llama-{g.replace(', ', '-')}",
                                     lambda n, roles=roles: _role(n) in roles) for g, roles in groups.items()}
            log(f"evaluating {len(files)} against {ref.name}")
            for g, r in zip(files, evaluate_many(list(files.values()), ref, text, max_chunks=chunks, threads=THREADS)):
                out.append(f"| {SOURCES[m].title} | {preset} | {g} | {r.mean_kld:.5f} | {r.p99_kld:.4f}"
                           f" | {100 * r.top1_agreement:.2f}% |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,gemma")
    ap.add_argument("--presets", default="Q2_K")
    ap.add_argument("--chunks", type=int, default=None)
    ap.add_argument("--split", nargs="?", const="groups", default=None, metavar="ROLES",
                    help="split our preset's gap to llama.cpp's by tensor role: the role groups, or each of ROLES")
    a = ap.parse_args()
    models, presets = tuple(a.models.split(",")), tuple(a.presets.split(","))
    if a.split is None:
        print(run(models=models, presets=presets, chunks=a.chunks))
    else:
        groups = GROUPS if a.split == "groups" else {r: (r,) for r in a.split.split(",")}
        print(split(models=models, presets=presets, chunks=a.chunks, groups=groups))


if __name__ == "__main__":
    main()
