"""Instructions per weight of one GEMV (batch 1) on arm64, per kernel path, counted under QEMU.

No ARM hardware here, so this is a proxy for speed, not a timing: QEMU runs bench/native/gemv_count.c one
instruction per translation block (`-singlestep -d exec,nochain`, one trace line per executed instruction), and
the count of a run with one GEMV is subtracted from one with two, leaving exactly one GEMV (start-up and the
activation quantization cancel). Paths: the scalar kernels as shipped (-O3, which GCC auto-vectorises with NEON),
the same built with -fno-tree-vectorize (plain C), the NEON kernels (vmull/vpadal) and the SDOT ones, each through
the batch-1 path kernels.c takes (two weight rows per activation load where a type's kernels have it). Counts are
deterministic, so one run each. Wall-clock figures on Apple Silicon are still to be measured on the hardware.

    python -m bench arm        (needs gcc-aarch64-linux-gnu and qemu-user; BENCH_ARM_ROWS, BENCH_ARM_COLS)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import gguf

QT = gguf.GGMLQuantizationType
TYPES = (QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0, QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K)
LEVELS = {"scalar": 0, "neon": 3, "neon_dotprod": 4}  # native/simd.h ids
ROWS = int(os.environ.get("BENCH_ARM_ROWS", "8"))
COLS = int(os.environ.get("BENCH_ARM_COLS", "1024"))
ROOT = Path(__file__).resolve().parent.parent
CFLAGS = ["-O3", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=off", "-Wno-psabi", f"-I{ROOT / 'native'}"]


def _build(out: Path, extra: list[str]) -> Path:
    subprocess.run(["aarch64-linux-gnu-gcc", *CFLAGS, *extra, "-static", str(ROOT / "bench/native/gemv_count.c"),
                    "-o", str(out)], check=True)
    return out


def _count(exe: Path, qt: QT, level: int, reps: int, log: Path) -> int:
    subprocess.run(["qemu-aarch64", "-cpu", "max", "-singlestep", "-d", "exec,nochain", "-D", str(log), str(exe),
                    str(int(qt)), str(level), str(ROWS), str(COLS), str(reps)], check=True, capture_output=True)
    with log.open("rb") as f:
        return sum(1 for line in f if line.startswith(b"Trace"))


def per_weight(exe: Path, qt: QT, level: int, log: Path) -> float:
    return (_count(exe, qt, level, 2, log) - _count(exe, qt, level, 1, log)) / (ROWS * COLS)


def run() -> str:
    missing = [t for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64") if shutil.which(t) is None]
    if missing:
        return f"skipped: {', '.join(missing)} not installed (README, Testing on ARM)"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        shipped = _build(tmp / "gemv", [])
        plain = _build(tmp / "gemv_novec", ["-fno-tree-vectorize"])
        log = tmp / "trace.log"
        lines = [f"GEMV {ROWS} x {COLS}, instructions per weight under `qemu-aarch64 -cpu max` "
                 "(GCC {}, `-O3` as setup.py builds).".format(_gcc_version()), "",
                 "| type | scalar -O3 (auto-vectorised) | scalar, no auto-vectorisation | NEON | NEON SDOT "
                 "| scalar -O3 / SDOT | scalar -O3 / NEON |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for qt in TYPES:
            s = per_weight(shipped, qt, LEVELS["scalar"], log)
            nv = per_weight(plain, qt, LEVELS["scalar"], log)
            ne = per_weight(shipped, qt, LEVELS["neon"], log)
            dp = per_weight(shipped, qt, LEVELS["neon_dotprod"], log)
            lines.append(f"| {qt.name} | {s:.3f} | {nv:.3f} | {ne:.3f} | {dp:.3f} | {s / dp:.2f}x | {s / ne:.2f}x |")
    return "\n".join(lines)


def _gcc_version() -> str:
    out = subprocess.run(["aarch64-linux-gnu-gcc", "-dumpfullversion"], capture_output=True, text=True)
    return out.stdout.strip()
