"""Convert the SmolLM2 checkpoint to f16: gguf-tools vs llama.cpp's convert_hf_to_gguf.py, same run.

Wall time and peak RSS of each (separate processes, median of N runs), and whether the two
outputs hold byte-identical tensors.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import REPO, llama_cpp_source, smollm2_checkpoint
from bench.measure import measure

RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def _tensors(path: Path) -> dict[str, tuple[int, bytes]]:
    import gguf

    r = gguf.GGUFReader(path)
    return {t.name: (int(t.tensor_type), bytes(t.data)) for t in r.tensors}


def run() -> str:
    ckpt = smollm2_checkpoint()
    llama_src = llama_cpp_source()
    tmp = Path(tempfile.mkdtemp(prefix="bench-convert-"))
    ours_out, ref_out = tmp / "ours.gguf", tmp / "ref.gguf"
    ours_cmd = [sys.executable, "-m", "gguf_tools.cli", "convert", str(ckpt), "-o", str(ours_out),
                "--outtype", "f16", "--no-progress"]
    ref_cmd = [sys.executable, str(llama_src / "convert_hf_to_gguf.py"), str(ckpt), "--outfile", str(ref_out),
               "--outtype", "f16"]
    ref_env = {**os.environ, "PYTHONPATH": f"{llama_src / 'gguf-py'}:{REPO}"}
    ours, ref = [], []
    for _ in range(RUNS):
        ref.append(measure(ref_cmd, ref_env))
        ours.append(measure(ours_cmd))
    a, b = _tensors(ours_out), _tensors(ref_out)
    same = set(a) == set(b) and all(a[k] == b[k] for k in a)
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    t_o, t_r = statistics.median(w for w, _ in ours), statistics.median(w for w, _ in ref)
    m_o, m_r = statistics.median(m for _, m in ours), statistics.median(m for _, m in ref)
    for p in (ours_out, ref_out):
        p.unlink(missing_ok=True)
    lines = [
        f"Convert SmolLM2-135M-Instruct (BF16 safetensors) to f16, median of {RUNS} runs",
        "",
        "| tool | wall s | peak RSS MiB |",
        "|---|---:|---:|",
        f"| gguf-tools convert | {t_o:.2f} | {m_o / 2**20:.0f} |",
        f"| llama.cpp convert_hf_to_gguf.py | {t_r:.2f} | {m_r / 2**20:.0f} |",
        f"| ratio (ours / llama.cpp) | {t_o / t_r:.2f}x | {m_o / m_r:.2f}x |",
        "",
        f"Tensors byte-identical: {'yes' if same else 'no'} ({len(a)} tensors"
        + (f"; differing: {', '.join(differing[:5])}" if differing else "") + ")",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
