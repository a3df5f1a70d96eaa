"""How close is our Q3_K to the lowest error its block format allows?

    python -m bench.bench_q3k_bound [--imatrix FILE] [--rows 8]

Given a Q3_K super-block's fp16 scale d and its sixteen 6-bit sub-block codes, the best 3-bit
levels are the nearest ones (the weighted squared error is separable per weight). So the best
block the format allows is found by brute force over d and the codes: here d is scanned over
161 fp16 values from 0.75x to 1.25x our d, and every sub-block takes the best of all 64 codes
for each d. The table gives total importance-weighted squared error relative to ggml's
(ggml_quantize_chunk), on rows of SmolLM2-135M's ffn_down (the only K-quantizable matrices of
that model): if the bound sits only a few percent below ggml, no search in this format can do
much better.
"""
from __future__ import annotations

import argparse

import gguf
import numpy as np

from bench.bench_quant_error import load_model, model_paths, proxy_imatrix
from gguf_tools.quantize import ggml_lib, quantize

Q = gguf.GGMLQuantizationType
BLOCK_BYTES = 110  # hmask 32, qs 64, scales 12, d 2


def _error(w: np.ndarray, raw: np.ndarray, imp: np.ndarray) -> float:
    d = ggml_lib.dequantize(raw, Q.Q3_K, w.shape[1]).astype(np.float64) - w
    return float(((d * d) * imp).sum())


def _bound(w: np.ndarray, imp: np.ndarray, ours: np.ndarray) -> float:
    X = w.reshape(-1, 16, 16).astype(np.float64)
    W = np.broadcast_to(imp.reshape(1, -1), w.shape).reshape(-1, 16, 16).astype(np.float64)
    d0 = ours.reshape(-1, BLOCK_BYTES)[:, 108:110].copy().view(np.float16).astype(np.float64).reshape(-1)
    codes = np.arange(-32, 32, dtype=np.float64)
    best = np.full(X.shape[0], np.inf)
    for f in np.linspace(0.75, 1.25, 161):
        s = np.float16(d0 * f).astype(np.float64)[:, None] * codes[None, :]
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s != 0)
        L = np.clip(np.rint(X[:, :, None, :] * inv[:, None, :, None]), -4, 3)
        e = ((s[:, None, :, None] * L - X[:, :, None, :]) ** 2 * W[:, :, None, :]).sum(-1)
        best = np.minimum(best, e.min(-1).sum(-1))
    return float(best.sum())


def run(*, imatrix_path: str | None = None, rows: int = 8) -> str:
    label, path = model_paths()[0]
    tensors = [t for t in load_model(path, 8192) if t.name.endswith("ffn_down.weight")]
    if imatrix_path:
        from gguf_tools.imatrix import load_imatrix

        real = load_imatrix(imatrix_path)
        for t in tensors:
            t.imp = real.get(t.name)
    else:
        reader = gguf.GGUFReader(path)
        norms = {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
                 for t in reader.tensors if t.name.endswith("norm.weight")}
        everything = load_model(path, 8192)
        proxy_imatrix(everything, norms, 9, 3)
        proxy = {t.name: t.imp for t in everything}
        for t in tensors:
            t.imp = proxy.get(t.name)
    ggml = ours = bound = 0.0
    for t in tensors:
        if t.imp is None:
            continue
        w = np.ascontiguousarray(t.w[np.linspace(0, t.w.shape[0] - 1, rows).astype(np.int64)])
        mine = quantize(w, Q.Q3_K, t.imp)
        ggml += _error(w, ggml_lib.quantize_chunk(w, Q.Q3_K, t.imp), t.imp)
        ours += _error(w, mine, t.imp)
        bound += _bound(w, t.imp, mine)
    return "\n".join([
        f"{label} ffn_down, {len(tensors)} tensors x {rows} rows; importance: "
        + (f"`{imatrix_path}`" if imatrix_path else "isotropic proxy (bench_quant_error)") + ".",
        "",
        "| Q3_K | total weighted error / ggml's |",
        "|---|---|",
        "| ggml_quantize_chunk | 1.000 |",
        f"| ours (default search) | {ours / ggml:.3f} |",
        f"| brute-force bound (d scan x every code) | {bound / ggml:.3f} |",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imatrix")
    ap.add_argument("--rows", type=int, default=8)
    a = ap.parse_args()
    print(run(imatrix_path=a.imatrix, rows=a.rows))


if __name__ == "__main__":
    main()
