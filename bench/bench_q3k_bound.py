"""How close is our Q3_K to the lowest error its block format allows?

    python -m bench.bench_q3k_bound [--imatrix FILE] [--rows 8] [--steps 321] [--span 0.6,1.4]

Given a Q3_K super-block's fp16 scale d and its sixteen 6-bit sub-block codes, the best 3-bit
levels are the nearest ones (the weighted squared error is separable per weight), and given d
each sub-block's best code is found by trying all 64. So the best block the format allows is
found by brute force over d: here `steps` values from span[0] to span[1] times our d, each
rounded to fp16, then every fp16 value within 3 steps of the best one. A block whose best d
lies at an end of the span may have a better one outside it: the table counts those ("at edge").

Per tensor: the importance-weighted squared error (as bench_quant_error measures it) of ours
(default search) and of the bound, relative to ggml's (ggml_quantize_chunk), on the same `rows`
evenly spaced rows; median and worst over the tensors that Q3_K can hold (rows of 256k weights,
tensors with an importance). Settings: the isotropic proxy importance of bench_quant_error on
both models, and SmolLM2 with a real imatrix (--imatrix, or bench_model_quant's calibration
imatrix when it exists). If the bound's median sits above a target, no encoder that writes
standard Q3_K blocks can reach that target on the median tensor.
"""
from __future__ import annotations

import argparse
import time

import gguf
import numpy as np

from bench.bench_quant_error import _rows, model_paths, model_tensors, weighted_error
from gguf_tools.quantize import ggml_lib, quantize

Q = gguf.GGMLQuantizationType
BLOCK_BYTES = 110  # hmask 32, qs 64, scales 12, d 2
CODES = np.arange(-32, 33, dtype=np.float32)  # -32..31 with d > 0; -31..32 is d < 0 (d*c = (-d)*(-c))


def _block_errors(X: np.ndarray, W: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Per block, the error with super-scale +-d (d > 0, fp16), best code per sub-block, nearest levels."""
    s = d[:, None] * CODES[None, :]  # (blocks, 65) sub-block scales
    inv = np.divide(1, s, out=np.zeros_like(s), where=s != 0)
    e = np.clip(np.rint(X[:, :, None, :] * inv[:, None, :, None]), -4, 3)  # levels (blocks, 16, 65, 16)
    e *= s[:, None, :, None]
    e -= X[:, :, None, :]
    e *= e
    e *= W[:, :, None, :]
    e = e.sum(-1, dtype=np.float64)  # (blocks, 16, 65)
    return np.minimum(e[:, :, :-1].min(-1).sum(-1), e[:, :, 1:].min(-1).sum(-1))


def _h(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16).astype(np.float32)


def _fp16_step(d: np.ndarray, k: int) -> np.ndarray:
    bits = d.astype(np.float16).view(np.uint16).astype(np.int32)
    return np.clip(bits + k, 1, 0x7BFF).astype(np.uint16).view(np.float16).astype(np.float32)


def bound(w: np.ndarray, imp: np.ndarray, ours: np.ndarray, steps: int, span: tuple[float, float],
          chunk: int = 48) -> tuple[float, int]:
    """Lowest Q3_K error of w's blocks found by the scan, and how many blocks had their best d at an end."""
    X = w.reshape(-1, 16, 16).astype(np.float32)
    W = np.broadcast_to(imp.astype(np.float32).reshape(1, -1), w.shape).reshape(-1, 16, 16)
    d0 = np.abs(ours.reshape(-1, BLOCK_BYTES)[:, 108:110].copy().view(np.float16).astype(np.float32).reshape(-1))
    d0 = np.where(d0 > 0, d0, np.abs(X).max(axis=(1, 2)) / 128 + np.float32(1e-30))
    factors = np.linspace(span[0], span[1], steps, dtype=np.float32)
    total, edge = 0.0, 0
    for a in range(0, X.shape[0], chunk):
        x, wt, base = X[a:a + chunk], W[a:a + chunk], d0[a:a + chunk]
        errs = np.stack([_block_errors(x, wt, _h(base * f)) for f in factors])  # (steps, blocks)
        i = errs.argmin(0)
        edge += int(((i == 0) | (i == steps - 1)).sum())
        best_d = _h(base * factors[i])
        best = errs.min(0)
        for k in range(-3, 4):  # every fp16 value near the best
            best = np.minimum(best, _block_errors(x, wt, _fp16_step(best_d, k)))
        total += float(best.sum())
    return total, edge


def default_imatrix() -> str | None:
    """bench_model_quant's calibration imatrix of SmolLM2-135M, if it has been made."""
    from bench.bench_model_quant import CALIBRATION_CHUNKS, WORK

    path = WORK / f"smollm2-135m-calibration-{CALIBRATION_CHUNKS}.imatrix.gguf"
    return str(path) if path.exists() else None


def settings(imatrix_path: str | None) -> list[tuple[str, str, list]]:
    out = [(label, "proxy", model_tensors(path)) for label, path in model_paths()]
    if imatrix_path:
        from gguf_tools.imatrix.file import load_imatrix

        label, path = model_paths()[0]
        out.append((label, "imatrix", model_tensors(path, load_imatrix(imatrix_path))))
    return out


def run(*, imatrix_path: str | None = None, rows: int = 8, steps: int = 321, span: tuple[float, float] = (0.6, 1.4),
        verbose: bool = False) -> str:
    imatrix_path = imatrix_path or default_imatrix()
    results: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
    blocks = edges = 0
    t0 = time.perf_counter()
    for label, kind, tensors in settings(imatrix_path):
        res = results.setdefault((label, kind), [])
        for t in tensors:
            if t.imp is None or t.w.shape[1] % 256 or t.origin == Q.Q3_K:
                continue
            w = np.ascontiguousarray(t.w[_rows(t.w.shape[0], rows)])
            ref = weighted_error(w, ggml_lib.quantize_chunk(w, Q.Q3_K, t.imp), Q.Q3_K, t.imp)
            mine = quantize(w, Q.Q3_K, t.imp, threads=1)
            b, e = bound(w, t.imp, mine, steps, span)
            blocks += w.size // 256
            edges += e
            res.append((t.name, weighted_error(w, mine, Q.Q3_K, t.imp) / ref, b / ref))
            if verbose:
                print(f"{label} {kind} {t.name}: ours {res[-1][1]:.3f} bound {res[-1][2]:.3f}", flush=True)
    proxies = [v for (_, kind), v in results.items() if kind == "proxy"]
    if len(proxies) > 1:
        results[("both models", "proxy")] = [r for v in proxies for r in v]

    def cells(v: list[tuple[str, float, float]], col: int) -> str:
        worst = max(v, key=lambda r: r[col])
        return f"{np.median([r[col] for r in v]):.3f} | {worst[col]:.3f} ({worst[0]})"

    lines = [
        f"Q3_K with importance; {rows} evenly spaced rows per tensor, the same rows for ggml, ours and the bound; "
        f"d scanned over {steps} fp16 values from {span[0]}x to {span[1]}x our d, then every fp16 value within "
        f"3 steps of the best; best d at an end of the scan in {edges} of {blocks} blocks; "
        f"{time.perf_counter() - t0:.0f} s." + (f" Imatrix: `{imatrix_path}`." if imatrix_path else ""),
        "",
        "Ratio = importance-weighted squared error / ggml's (ggml_quantize_chunk), per tensor; < 1 is better.",
        "",
        "| model | importance | tensors | ours median | ours worst (tensor) | bound median | bound worst (tensor) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (label, kind), v in results.items():
        if v:
            lines.append(f"| {label} | {kind} | {len(v)} | {cells(v, 1)} | {cells(v, 2)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imatrix", help="a real imatrix of SmolLM2-135M (default: bench_model_quant's, if made)")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--steps", type=int, default=321)
    ap.add_argument("--span", default="0.6,1.4", help="d scan range, as factors of our d")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every tensor")
    a = ap.parse_args()
    lo, hi = (float(x) for x in a.span.split(","))
    print(run(imatrix_path=a.imatrix, rows=a.rows, steps=a.steps, span=(lo, hi), verbose=a.verbose))


if __name__ == "__main__":
    main()
