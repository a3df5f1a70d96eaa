"""Speed: SmolLM2-135M F16 GGUF -> Q4_K_M, our quantize_gguf against llama_model_quantize.

    python -m bench.bench_quant_speed [--repeats 3] [--threads 2] [--presets Q4_K_M]

Both read the same F16 file (bench_model_quant.f16_reference) and write a whole GGUF with the
same per-tensor types, with the same thread count; the figure is the median wall time of
`repeats` runs, alternating the tools so that all see the same machine load. Rows: llama.cpp,
our default search, our wider search (`--search best`), ggml's blocks reproduced bit for bit
(`--search ggml`).
"""
from __future__ import annotations

import argparse
import statistics

from bench.bench_model_quant import WORK, f16_reference, llama_quantize, our_quantize
from bench.common import machine


def run(*, presets: tuple[str, ...] = ("Q4_K_M",), repeats: int = 3, threads: int = 2) -> str:
    f16 = f16_reference()
    mb = f16.stat().st_size / 1e6
    lines = [
        f"Machine: {machine()}. Input `{f16.name}` ({mb:.1f} MB), {threads} threads for every tool,"
        f" median of {repeats} runs (all runs in brackets).",
        "",
        "| preset | tool | median s | MB/s of F16 input | runs s |",
        "|---|---|---|---|---|",
    ]
    for preset in presets:
        out = WORK / f"speed-{preset}.gguf"
        tools = {
            "llama.cpp (llama_model_quantize)": lambda out=out, preset=preset: llama_quantize(f16, out, preset, None, threads),
            "ours, default search": lambda out=out, preset=preset: our_quantize(f16, out, preset, None, threads),
            "ours, --search best": lambda out=out, preset=preset: our_quantize(f16, out, preset, None, threads, search="best"),
            "ours, --search ggml": lambda out=out, preset=preset: our_quantize(f16, out, preset, None, threads, search="ggml"),
        }
        times: dict[str, list[float]] = {name: [] for name in tools}
        for _ in range(repeats):
            for name, fn in tools.items():
                times[name].append(fn())
        for name, ts in times.items():
            med = statistics.median(ts)
            lines.append(f"| {preset} | {name} | {med:.2f} | {mb / med:.1f} | {', '.join(f'{t:.2f}' for t in ts)} |")
        out.unlink(missing_ok=True)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="Q4_K_M")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(run(presets=tuple(p.strip() for p in a.presets.split(",")), repeats=a.repeats, threads=a.threads))


if __name__ == "__main__":
    main()
