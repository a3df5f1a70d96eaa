"""Convert the SmolLM2 checkpoint to f16: gguf-tools vs llama.cpp's convert_hf_to_gguf.py, same run.

Wall time and peak RSS of each (separate processes, median of N runs), and whether the two
outputs hold byte-identical tensors.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import REPO, llama_cpp_source, smollm2_checkpoint

RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def _measure(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one command, measured by a small launcher process."""
    proc = subprocess.run([sys.executable, "-m", "bench.measure", *cmd], env=env, capture_output=True, text=True,
                          cwd=REPO)
    if proc.returncode or not proc.stdout.strip():
        raise RuntimeError(f"{cmd[1]} failed:\n{proc.stderr[-2000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    if r["rc"]:
        raise RuntimeError(f"{cmd[1]} exited {r['rc']}:\n{proc.stderr[-2000:]}")
    return r["wall"], r["rss"]


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
        ref.append(_measure(ref_cmd, ref_env))
        ours.append(_measure(ours_cmd))
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
